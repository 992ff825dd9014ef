/**
 * The `sqlite` driver: one SQLite database file, backed up online and restored in place.
 *
 * Backup: `sqlite3 … "VACUUM INTO '<spool>/database.sqlite'"` run as the database's owner
 * (no capabilities). VACUUM INTO reads the whole database inside one read transaction, so
 * the copy is a consistent snapshot while writers keep committing (in WAL mode they are
 * not even blocked; in rollback-journal mode they wait up to their busy timeout). The
 * backup API behind `.backup` restarts whenever another connection writes between its
 * steps and can starve under a steady writer; VACUUM INTO cannot. The database is opened
 * as `file:…?mode=rw` (never created when missing) with `-nofollow` (no symlinked file).
 * The result is spooled into a private directory owned by the owner (the helper writes
 * it) and read back through a held descriptor, refusing anything but a plain file of the
 * owner's. Payload: the single entry `data/database.sqlite`.
 *
 * Restore: see restore.ts.
 */
import { spawnSync } from "node:child_process";
import { closeSync } from "node:fs";
import { basename, dirname } from "node:path";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { explain, openRoot } from "../../core/safe-fs.js";
import { dropArgv, findProgram, runHelper } from "../../core/spawn.js";
import { S_IFMT, S_IFREG, statAt } from "../../core/sys.js";
import { timeoutMs } from "../common.js";
import { noData, Spool } from "../spool.js";
import type { Driver, DriverContext } from "../types.js";
import { type SqliteConfig, sqliteSchema } from "./config.js";
import { openSqliteRestore } from "./restore.js";
import { SPOOL_NAME, SQLITE_ENTRY, sqliteUri, sqlString } from "./sql.js";

let toolVersion: string | undefined;

/** `sqlite3 --version`, run once (as the owner, without capabilities) and cached. */
function sqliteVersion(config: SqliteConfig): string {
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

async function* backupSqlite(
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

export const sqliteDriver: Driver<SqliteConfig> = {
  name: "sqlite",
  type: "sqlite.v1",
  version: 1,
  schema: sqliteSchema,

  async describe(config) {
    return { path: config.path, owner: config.owner, entry: SQLITE_ENTRY };
  },

  async health(config) {
    try {
      const dirfd = openRoot(dirname(config.path));
      try {
        const st = statAt(dirfd, basename(config.path));
        if ((st.mode & S_IFMT) !== S_IFREG) {
          return { ok: false, message: `${config.path} is not a regular file` };
        }
        return { ok: true, message: `${config.path}: ${st.size} bytes` };
      } finally {
        closeSync(dirfd);
      }
    } catch (err) {
      return { ok: false, message: `${config.path}: ${explain(err)}` };
    }
  },

  manifest(config) {
    return { path: config.path, owner: config.owner, sqlite_version: sqliteVersion(config) };
  },

  backup: backupSqlite,

  restore: openSqliteRestore,
};
