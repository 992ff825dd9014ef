/**
 * `ferry doctor`: checks, as the user running it, everything between this user and the
 * applications: the socket, the peer check, ferryd's identity and capabilities; then asks
 * ferryd to check each application the way its backup and restore will use it
 * (`POST /v1/apps/{app}/doctor`: the health check as the app's user, hook programs, a
 * staging directory made and removed where a restore stages, free space). One line per
 * check, OK / WARN / FAIL, with a `fix:` line for each problem; exit status 1 if anything
 * failed.
 */
import { lstatSync } from "node:fs";
import type { AppSummary, DoctorCheck, DoctorReport, VersionInfo } from "../../api/types.js";
import { SERVICE_CAPS } from "../../core/caps.js";
import { FerryError } from "../../core/errors.js";
import type { FerryClient } from "../client.js";
import { EXIT } from "../exit-codes.js";

type Level = "OK" | "WARN" | "FAIL";
const LEVEL: Record<DoctorCheck["level"], Level> = { ok: "OK", warn: "WARN", fail: "FAIL" };

export async function doctorCommand(
  client: FerryClient,
  socket: string | undefined,
): Promise<number> {
  let failed = false;
  const line = (level: Level, text: string) => {
    if (level === "FAIL") failed = true;
    process.stdout.write(`${level.padEnd(5)}${text}\n`);
  };
  const me = process.getuid?.() ?? -1;

  if (socket !== undefined) {
    try {
      const st = lstatSync(socket);
      if (!st.isSocket()) line("FAIL", `${socket} exists but is not a socket — is the path right?`);
      else
        line("OK", `socket ${socket} (owner uid ${st.uid}, mode ${(st.mode & 0o777).toString(8)})`);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      line(
        "FAIL",
        code === "EACCES"
          ? `cannot see ${socket}: its directory is not yours — run as ferryd's user`
          : `no socket at ${socket} — start ferryd (systemctl start ferry.socket) or set --socket/FERRY_SOCKET`,
      );
      return EXIT.FAILURE;
    }
  } else {
    line("OK", `using the connection inherited from 'ferryd run' (${client.where})`);
  }

  let version: VersionInfo;
  try {
    version = await client.json<VersionInfo>("GET", "/v1/version");
  } catch (err) {
    const fe = err instanceof FerryError ? err : undefined;
    if (fe?.code === "PEER_REJECTED" || fe?.code === "SOCKET_ACCESS_DENIED") {
      line(
        "FAIL",
        `ferryd refuses uid ${me}: run as ferryd's user, or add ${me} to 'clients' in its config`,
      );
    } else {
      line("FAIL", `ferryd does not answer: ${(err as Error).message}`);
    }
    return EXIT.FAILURE;
  }
  line("OK", `ferryd ${version.version} answers and accepts uid ${me} (peer check)`);
  if (version.uid === 0)
    line("WARN", "ferryd runs as root (--allow-root): run it as the backup user with --user");
  else line("OK", `ferryd runs as ${version.user} (uid ${version.uid})`);
  const missing = SERVICE_CAPS.filter((c) => !version.capabilities.includes(c));
  const extra = version.capabilities.filter(
    (c) => !(SERVICE_CAPS as readonly string[]).includes(c),
  );
  if (version.capabilities.length === 0) {
    line(
      "WARN",
      "ferryd holds no capabilities (user mode): it serves only what its own user can read",
    );
  } else if (missing.length > 0) {
    line(
      "WARN",
      `ferryd lacks ${missing.join(", ")}: some backups or restores will fail (see deploy/ferryd.service)`,
    );
  } else {
    line("OK", `capabilities: ${version.capabilities.join(", ")}`);
  }
  if (extra.length > 0 && version.uid !== 0) {
    line(
      "WARN",
      `ferryd holds more than it needs: ${extra.join(", ")} — set CapabilityBoundingSet`,
    );
  }

  const { apps } = await client.json<{ apps: AppSummary[] }>("GET", "/v1/apps");
  if (apps.length === 0) line("WARN", "no applications are declared in ferryd's config");
  for (const a of apps) {
    // ferryd checks each application as its backup and restore will use it (as the app's
    // user, staging probed where a restore stages), and names the fix.
    const report = await client.json<DoctorReport>(
      "POST",
      `/v1/apps/${encodeURIComponent(a.name)}/doctor`,
    );
    for (const c of report.checks) {
      line(LEVEL[c.level], `app ${a.name} (${a.driver}): ${c.message}`);
      if (c.fix !== undefined && c.level !== "ok") process.stdout.write(`     fix: ${c.fix}\n`);
    }
  }
  return failed ? EXIT.FAILURE : EXIT.OK;
}
