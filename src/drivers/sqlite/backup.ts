/**
 * The sqlite driver's backup (see index.ts for how it works and why VACUUM INTO).
 */
import { spawnSync } from "node:child_process";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { dropArgv, findProgram, runHelper } from "../../core/spawn.js";
import { timeoutMs } from "../common.js";
import { noData } from "../dump-io.js";
import { Spool } from "../spool.js";
import type { DriverContext } from "../types.js";
import type { SqliteConfig } from "./config.js";
import { SPOOL_NAME, SQLITE_ENTRY, sqliteUri, sqlString } from "./sql.js";

let toolVersion: string | undefined;

/** `sqlite3 --version`, run once (as the owner, without capabilities) and cached. */
export function sqliteVersion(config: SqliteConfig): string {
  if (toolVersion !== undefined) return toolVersion;
  try {
    const argv = dropArgv([findProgram("sqlite3"), "--version"], config.user);
    const r = spawnSync(argv[0] as string, argv.slice(1), {
      env: { PATH: "/usr/bin:/bin" },
      timeout: 5000,
      encoding: "utf8",
    });
    toolVersion = r.status === 0 ? (r.stdout.split(" ")[0] ?? "unknown") : "unknown";
  } catch {
    toolVersion = "unknown";
  }
  return toolVersion;
}

export async function* backup(
  config: SqliteConfig,
  ctx: DriverContext,
): AsyncGenerator<ArchiveEntry> {
  const spool = Spool.create(ctx.state, "sqlite", config.user);
  try {
    const label = `sqlite3 backup of ${config.path}`;
    // sqlite3 has no `--`; the database argument is an absolute path inside a file: URI,
    // so it can never be taken for an option.
    const helper = runHelper({
      argv: [
        "sqlite3",
        "-bail",
        "-batch",
        "-nofollow",
        "-cmd",
        ".timeout 30000",
        sqliteUri(config.path, "mode=rw"),
        `VACUUM INTO ${sqlString(spool.pathOf(SPOOL_NAME))}`,
      ],
      user: config.user,
      timeoutMs: timeoutMs(config),
      signal: ctx.signal,
      label,
    });
    helper.stdout?.resume();
    await helper.done;
    const entry = spool.entry(SQLITE_ENTRY, SPOOL_NAME, { owner: config.user.uid, mode: 0o600 });
    if (entry.header.size === 0) throw noData(label, helper.stderrText());
    yield entry;
  } finally {
    spool.remove();
  }
}
