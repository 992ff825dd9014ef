/**
 * `ferry doctor`: checks, as the user running it, everything between this user and the
 * applications: the socket, the peer check, ferryd's identity and capabilities, each
 * application's health and the free space restores need. One line per check, OK / WARN /
 * FAIL with what to do; exit status 1 if anything failed.
 */
import { lstatSync } from "node:fs";
import type { AppDetail, AppSummary, VersionInfo } from "../../api/types.js";
import { SERVICE_CAPS } from "../../core/caps.js";
import { FerryError } from "../../core/errors.js";
import type { FerryClient } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { formatBytes } from "../progress.js";

type Level = "OK" | "WARN" | "FAIL";

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
    if (!a.health.ok) {
      line("FAIL", `app ${a.name} (${a.driver}): ${a.health.message}`);
      continue;
    }
    line("OK", `app ${a.name} (${a.driver}): ${a.health.message}`);
    if (!a.restore) continue;
    const detail = await client.json<AppDetail>("GET", `/v1/apps/${encodeURIComponent(a.name)}`);
    const paths = (detail.description.paths ?? []) as {
      path: string;
      free_bytes?: number | null;
    }[];
    for (const p of paths) {
      if (typeof p.free_bytes !== "number") continue;
      const level: Level = p.free_bytes < 1024 ** 3 ? "WARN" : "OK";
      line(
        level,
        `app ${a.name}: ${formatBytes(p.free_bytes)} free beside ${p.path} for restores (a restore stages a full copy there)`,
      );
    }
  }
  return failed ? EXIT.FAILURE : EXIT.OK;
}
