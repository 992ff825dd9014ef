/**
 * The `sqlite` driver: one SQLite database file, backed up with `VACUUM INTO` run by
 * sqlite3 as the database's owner (backup.ts), restored by a staged copy swapped in
 * (restore.ts).
 *
 * The health check runs as the owner too, the way the backup will: a database its owner
 * cannot open (mode 000, a directory it cannot search) is unhealthy, whatever ferryd's own
 * capabilities could read.
 */
import { closeSync } from "node:fs";
import { basename, dirname } from "node:path";
import type { DoctorCheck } from "../../api/types.js";
import { FerryError } from "../../core/errors.js";
import { explain, openRoot } from "../../core/safe-fs.js";
import { runHelper } from "../../core/spawn.js";
import { S_IFMT, S_IFREG, statAt } from "../../core/sys.js";
import { groupName } from "../../core/users.js";
import { inspectFile, inspectProgram, installHint } from "../inspect.js";
import { probeStagingFile } from "../probe.js";
import { Spool } from "../spool.js";
import type { Driver, Health } from "../types.js";
import { backup, sqliteVersion } from "./backup.js";
import { type SqliteConfig, sqliteSchema } from "./config.js";
import { openRestore } from "./restore.js";
import { SPOOL_NAME, SQLITE_ENTRY, sqliteUri, sqlString } from "./sql.js";

const CHECK_TIMEOUT_MS = 10_000;

/** Runs sqlite3 as the owner with `args`; resolves with its stdout. */
async function asOwner(
  config: SqliteConfig,
  args: string[],
  label: string,
  signal?: AbortSignal,
): Promise<string> {
  const h = runHelper({
    argv: ["sqlite3", "-bail", "-batch", ...args],
    user: config.user,
    timeoutMs: CHECK_TIMEOUT_MS,
    signal,
    label,
  });
  const out: Buffer[] = [];
  h.stdout?.on("data", (b: Buffer) => out.push(b));
  await h.done;
  return Buffer.concat(out).toString("utf8").trim();
}

/** The fix for sqlite3 failing as the owner: the tool, or the file's owner and modes. */
function fixFor(config: SqliteConfig, err: unknown): string {
  const text = (err as Error).message;
  if (/is not installed/.test(text)) return `sqlite3: ${installHint("sqlite3")}`;
  if (/without capabilities/.test(text)) {
    return `ferryd runs without capabilities, so it can run sqlite3 only as its own user: run it as the service (deploy/ferryd.service) or set owner to ferryd's user`;
  }
  return `the backup runs sqlite3 as ${config.owner}: make ${config.path} readable and writable by ${config.owner} (chown ${config.owner}:${groupName(config.user.gid)} ${config.path}; chmod u+rw ${config.path}) and every directory above it searchable by ${config.owner}`;
}

export const sqliteDriver: Driver<SqliteConfig> = {
  name: "sqlite",
  type: "sqlite.v1",
  version: 1,
  schema: sqliteSchema,

  async describe(config) {
    return { path: config.path, owner: config.owner, entry: SQLITE_ENTRY };
  },

  async health(config): Promise<Health> {
    let size: number;
    try {
      const dirfd = openRoot(dirname(config.path));
      try {
        const st = statAt(dirfd, basename(config.path));
        if ((st.mode & S_IFMT) !== S_IFREG) {
          return { ok: false, message: `${config.path} is not a regular file` };
        }
        size = st.size;
      } finally {
        closeSync(dirfd);
      }
    } catch (err) {
      return { ok: false, message: `${config.path}: ${explain(err)}` };
    }
    // As the owner, like the backup; immutable=1: read-only, no -wal/-shm made, no lock.
    try {
      await asOwner(
        config,
        ["-readonly", sqliteUri(config.path, "immutable=1"), "SELECT count(*) FROM sqlite_schema"],
        `sqlite3 as ${config.owner} on ${config.path}`,
      );
    } catch (err) {
      return {
        ok: false,
        message: `${config.path}: ${err instanceof FerryError ? err.message : String(err)}`,
        fix: fixFor(config, err),
      };
    }
    return { ok: true, message: `${config.path}: ${size} bytes` };
  },

  async doctor(config, ctx) {
    const checks: DoctorCheck[] = [];
    // The backup's own path: sqlite3, as the owner, writes a database into a spool.
    let spool: Spool | undefined;
    try {
      spool = Spool.create(ctx.state, "sqlite-doctor", config.user);
      await asOwner(
        config,
        [":memory:", `VACUUM INTO ${sqlString(spool.pathOf(SPOOL_NAME))}`],
        `sqlite3 as ${config.owner} writing a spool`,
        ctx.signal,
      );
      checks.push({
        level: "ok",
        message: `sqlite3 as ${config.owner} can write the backup's copy in ${ctx.state.describe("spool")}`,
      });
    } catch (err) {
      const text = (err as Error).message;
      checks.push({
        level: "fail",
        message: `a backup's copy cannot be written in ${ctx.state.describe("spool")}: ${text}`,
        fix: /is not installed/.test(text)
          ? `sqlite3: ${installHint("sqlite3")}`
          : err instanceof FerryError && err.code !== "HELPER_FAILED"
            ? undefined // the message says what to do (READ_ONLY_FILESYSTEM, DISK_FULL…)
            : `${config.owner} must be able to pass through ${ctx.state.path} (root's, mode 0711, as ferryd sets it) to its spool`,
      });
    } finally {
      spool?.remove();
    }
    if (ctx.restore) {
      checks.push(probeStagingFile(config.path, { uid: config.user.uid, gid: config.user.gid }));
    }
    return checks;
  },

  manifest(config) {
    return { path: config.path, owner: config.owner, sqlite_version: sqliteVersion(config) };
  },

  backup,

  restore: openRestore,

  inspect(config) {
    return [
      ...inspectProgram("sqlite3", ["driver"], config.user),
      ...inspectFile(config.path, ["path"], { uid: config.user.uid, name: config.owner }),
    ];
  },
};
