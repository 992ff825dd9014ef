/**
 * The sqlite driver's backup (see index.ts for how it works and why VACUUM INTO).
 */
import { spawnSync } from "node:child_process";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { FerryError } from "../../core/errors.js";
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
    // so it can never be taken for an option. `PRAGMA journal_mode` (a query here, it
    // changes nothing) prints the live mode first: VACUUM INTO writes a rollback-journal
    // copy, and a WAL database must come back as one (below).
    const helper = runHelper({
      argv: [
        "sqlite3",
        "-bail",
        "-batch",
        "-nofollow",
        "-cmd",
        ".timeout 30000",
        sqliteUri(config.path, "mode=rw"),
        `PRAGMA journal_mode; VACUUM INTO ${sqlString(spool.pathOf(SPOOL_NAME))}`,
      ],
      user: config.user,
      timeoutMs: timeoutMs(config),
      signal: ctx.signal,
      label,
    });
    const out: Buffer[] = [];
    helper.stdout?.on("data", (b: Buffer) => out.push(b));
    await helper.done;
    const mode = Buffer.concat(out).toString("utf8").trim().toLowerCase();
    // Page size, auto_vacuum, user_version and application_id are in the header VACUUM
    // INTO copies; WAL mode is the one persistent setting it drops.
    if (mode === "wal") await setWal(config, ctx, spool.pathOf(SPOOL_NAME), `${label} (WAL mode)`);
    const entry = spool.entry(SQLITE_ENTRY, SPOOL_NAME, { owner: config.user.uid, mode: 0o600 });
    if (entry.header.size === 0) throw noData(label, helper.stderrText());
    yield entry;
  } finally {
    spool.remove();
  }
}

/**
 * Puts the database file at `path` in WAL mode (persistent: bytes 18-19 of its header),
 * with sqlite3 running as the owner. Its -wal and -shm exist only while it runs: closing
 * the last connection checkpoints and removes them.
 */
export async function setWal(
  config: SqliteConfig,
  ctx: { signal: AbortSignal },
  path: string,
  label: string,
): Promise<void> {
  const helper = runHelper({
    argv: [
      "sqlite3",
      "-bail",
      "-batch",
      "-nofollow",
      sqliteUri(path, "mode=rw"),
      "PRAGMA journal_mode=WAL",
    ],
    user: config.user,
    timeoutMs: timeoutMs(config),
    signal: ctx.signal,
    label,
  });
  const out: Buffer[] = [];
  helper.stdout?.on("data", (b: Buffer) => out.push(b));
  await helper.done;
  const now = Buffer.concat(out).toString("utf8").trim().toLowerCase();
  if (now !== "wal") {
    throw new FerryError("HELPER_FAILED", `${label}: sqlite3 left the database in ${now} mode`);
  }
}
