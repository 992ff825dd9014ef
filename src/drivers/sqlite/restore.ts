/**
 * Restoring an SQLite database in place.
 *
 * Staging: the archive's `data/database.sqlite` is written to `.NAME.ferry-restore-ID`
 * beside the live file, created O_EXCL through the held directory descriptor (openat2,
 * no symlinks: the owner can swap directories while ferryd works), fsynced, given the live
 * file's group and mode (set-id bits cleared) and the owner's uid, then checked with
 * `PRAGMA integrity_check` by sqlite3 running as the owner, opened `immutable=1` so the
 * check creates no -wal/-shm/-journal. Nothing live has been touched; `abort` only unlinks
 * the staged file.
 *
 * Commit (the application must not hold the database open: stop it in `pre_restore`;
 * SQLite has no way to swap a file under open connections):
 * 1. move the live `-wal`, `-shm` and `-journal` aside (`.NAME.ferry-old-ID-wal` …): a
 *    stale WAL or hot journal would otherwise be replayed into the new file and corrupt
 *    it;
 * 2. `renameat2(staged, NAME, RENAME_EXCHANGE)`: one atomic step makes the new database
 *    live and keeps the old one under the staged name (RENAME_NOREPLACE when there was
 *    none);
 * 3. fsync the directory, then remove the old file and the side files.
 * If step 1 or 2 fails, the side files are moved back and the live database is as it was.
 */
import { randomBytes } from "node:crypto";
import { closeSync, fchmodSync, fchownSync, fstatSync, fsyncSync, readSync } from "node:fs";
import { basename, dirname } from "node:path";
import type { TarHeader } from "../../core/archive/tar.js";
import { FerryError } from "../../core/errors.js";
import { fsFailure } from "../../core/fs-errors.js";
import { openBeneath, openRoot } from "../../core/safe-fs.js";
import { runHelper } from "../../core/spawn.js";
import {
  O_CREAT,
  O_EXCL,
  O_NONBLOCK,
  O_RDONLY,
  O_WRONLY,
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  renameAt2,
  S_IFMT,
  S_IFREG,
  type Stat,
  SysError,
  statAt,
  unlinkAt,
} from "../../core/sys.js";
import { timeoutMs } from "../common.js";
import { archiveInvalid } from "../db/restore.js";
import { writeAll } from "../dump-io.js";
import type { RestoreContext, RestoreSession } from "../types.js";
import { setWal } from "./backup.js";
import type { SqliteConfig } from "./config.js";
import { SQLITE_ENTRY, sqliteUri } from "./sql.js";

const SIDE_FILES = ["-wal", "-shm", "-journal"] as const;

function statOrUndefined(dirfd: number, name: string): Stat | undefined {
  try {
    return statAt(dirfd, name);
  } catch (err) {
    if (err instanceof SysError && err.errnoName === "ENOENT") return undefined;
    throw err;
  }
}

function unlinkQuiet(dirfd: number, name: string): void {
  try {
    unlinkAt(dirfd, name, false);
  } catch (err) {
    if (!(err instanceof SysError && err.errnoName === "ENOENT")) throw err;
  }
}

/**
 * Whether the SQLite database file `name` is in WAL mode: bytes 18 and 19 of its header
 * (the file format write and read versions) are 2, rather than 1 for a rollback journal.
 * Undefined when it is missing, not a regular file, or not an SQLite database.
 */
export function walFlag(dirfd: number, name: string): boolean | undefined {
  let fd: number;
  try {
    fd = openBeneath(dirfd, name, O_RDONLY | O_NONBLOCK);
  } catch {
    return undefined;
  }
  try {
    if ((fstatSync(fd).mode & S_IFMT) !== S_IFREG) return undefined;
    const head = Buffer.alloc(20);
    if (readSync(fd, head, 0, 20, 0) < 20) return undefined;
    if (!head.subarray(0, 16).equals(SQLITE_MAGIC)) return undefined;
    return head[18] === 2 && head[19] === 2;
  } finally {
    closeSync(fd);
  }
}

const SQLITE_MAGIC = Buffer.from("SQLite format 3\0", "latin1");

export async function openRestore(
  config: SqliteConfig,
  ctx: RestoreContext,
): Promise<RestoreSession> {
  const dir = dirname(config.path);
  const base = basename(config.path);
  const dirfd = openRoot(dir);
  const id = randomBytes(6).toString("hex");
  const staged = `.${base}.ferry-restore-${id}`;
  const aside = `.${base}.ferry-old-${id}`;
  let fd: number | undefined;
  let seen = false;
  let complete = false;
  let bytes = 0;
  let closed = false;

  const closeStaged = () => {
    if (fd !== undefined) closeSync(fd);
    fd = undefined;
  };
  const finish = () => {
    if (closed) return;
    closed = true;
    closeStaged();
    closeSync(dirfd);
  };

  const checkIntegrity = async () => {
    const h = runHelper({
      argv: [
        "sqlite3",
        "-bail",
        "-batch",
        "-readonly",
        sqliteUri(`${dir}/${staged}`, "immutable=1"),
        "PRAGMA integrity_check",
      ],
      user: config.user,
      timeoutMs: timeoutMs(config),
      signal: ctx.signal,
      label: `integrity check of the restored ${config.path}`,
    });
    const out: Buffer[] = [];
    h.stdout?.on("data", (b: Buffer) => out.push(b));
    try {
      await h.done;
    } catch (err) {
      throw new FerryError(
        "ARCHIVE_INVALID",
        `the archived database is not usable: ${(err as Error).message}`,
        { cause: err },
      );
    }
    const text = Buffer.concat(out).toString("utf8").trim();
    if (text !== "ok") {
      throw new FerryError(
        "ARCHIVE_INVALID",
        `the archived database fails PRAGMA integrity_check: ${text.slice(0, 500)}`,
      );
    }
  };

  return {
    async entry(h: TarHeader) {
      if (h.path !== SQLITE_ENTRY || h.type !== "file") {
        throw archiveInvalid(`unexpected entry ${JSON.stringify(h.path)} in an sqlite archive`);
      }
      if (seen) throw archiveInvalid(`${SQLITE_ENTRY} appears twice`);
      seen = true;
      try {
        fd = openBeneath(dirfd, staged, O_WRONLY | O_CREAT | O_EXCL, 0o600);
      } catch (err) {
        // A read-only directory (not in ReadWritePaths=) or a full disk: said with the fix.
        throw fsFailure(err, `creating ${staged}`, dir) ?? err;
      }
    },
    async data(chunk: Buffer) {
      if (fd === undefined) throw archiveInvalid("data outside an entry");
      try {
        await writeAll(fd, chunk);
      } catch (err) {
        throw fsFailure(err, `writing ${staged}`, dir) ?? err;
      }
      bytes += chunk.length;
    },
    async entryEnd() {
      if (fd === undefined) throw archiveInvalid("entry end outside an entry");
      // Group and mode follow the live file, if it is one (not a symlink the owner put there).
      const found = statOrUndefined(dirfd, base);
      const live = found !== undefined && (found.mode & S_IFMT) === S_IFREG ? found : undefined;
      try {
        fsyncSync(fd);
      } catch (err) {
        throw fsFailure(err, `writing ${staged}`, dir) ?? err;
      }
      fchownSync(fd, config.user.uid, live?.gid ?? config.user.gid);
      fchmodSync(fd, live === undefined ? 0o600 : live.mode & 0o777);
      closeStaged();
      complete = true;
    },
    async commit() {
      let swapped = false;
      try {
        if (!complete) throw archiveInvalid(`the archive holds no ${SQLITE_ENTRY}`);
        // Checked only now, on bytes whose end record verified: a damaged transfer is
        // reported as such by the archive reader, not as a damaged database.
        await checkIntegrity();
        if (walFlag(dirfd, base) === true && walFlag(dirfd, staged) === false) {
          await setWal(config, ctx, `${dir}/${staged}`, `WAL mode for the restored ${config.path}`);
        }
        const moved: string[] = [];
        try {
          for (const s of SIDE_FILES) {
            try {
              renameAt2(dirfd, base + s, dirfd, aside + s, RENAME_NOREPLACE);
              moved.push(s);
            } catch (err) {
              if (!(err instanceof SysError && err.errnoName === "ENOENT")) throw err;
            }
          }
          const hadLive = statOrUndefined(dirfd, base) !== undefined;
          renameAt2(dirfd, staged, dirfd, base, hadLive ? RENAME_EXCHANGE : RENAME_NOREPLACE);
          swapped = true;
        } catch (err) {
          for (const s of moved) renameAt2(dirfd, aside + s, dirfd, base + s, RENAME_NOREPLACE);
          throw new FerryError(
            "INTERNAL",
            `could not swap the restored database into ${config.path}; the original is unchanged`,
            { cause: err },
          );
        }
        fsyncSync(dirfd);
        // The old database now has the staged name; it and the old side files go.
        unlinkQuiet(dirfd, staged);
        for (const s of moved) unlinkQuiet(dirfd, aside + s);
        return { entries: 1, bytes };
      } finally {
        // A commit that failed before the swap is not followed by abort: drop the staging.
        if (!swapped && seen) unlinkQuiet(dirfd, staged);
        finish();
      }
    },
    async abort() {
      try {
        closeStaged();
        if (seen) unlinkQuiet(dirfd, staged);
      } finally {
        finish();
      }
    },
  };
}
