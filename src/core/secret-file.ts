/**
 * Reading a secret that ferryd's config names (a password file) through the trusted walk
 * of trusted-file.ts, under the secret policy of this process: read from the descriptor
 * that was checked, never by path again.
 */
import { readFileSync } from "node:fs";
import { readCaps } from "./caps.js";
import { FerryError } from "./errors.js";
import { closeFd } from "./sys.js";
import { openTrustedFile, SECRET_ADVICE, secretPolicy, type TrustPolicy } from "./trusted-file.js";

let processPolicy: TrustPolicy | undefined;

/** secretPolicy for this process (uid and effective capabilities read once). */
export function processSecretPolicy(): TrustPolicy {
  if (processPolicy === undefined) {
    const uid = process.getuid?.() ?? -1;
    processPolicy = secretPolicy(uid, readCaps().effective.length > 0);
  }
  return processPolicy;
}

/**
 * Reads a file the config names (a secret) through the trusted walk, under `policy`
 * (default: this process's). The text is read from the descriptor that was checked.
 */
export function readTrustedText(
  path: string,
  purpose: string,
  policy: TrustPolicy = processSecretPolicy(),
): string {
  const f = openTrustedFile(path, {
    policy,
    purpose,
    unsafeCode: "CONFIG_UNSAFE",
    unreadableCode: "CONFIG_INVALID",
    advice: SECRET_ADVICE,
    followLinks: false,
  });
  try {
    if (f.stat.size > 1 << 20) {
      throw new FerryError("CONFIG_INVALID", `${purpose} ${path}: larger than 1 MiB`);
    }
    return readFileSync(f.fd, "utf8");
  } finally {
    closeFd(f.fd);
  }
}
