/**
 * Private spool directories for helper output.
 *
 * A tar header carries the entry's size before its body, so a dump whose length is known
 * only at its end (sqlite3's VACUUM INTO, redis-cli --rdb, a user command, the redis key
 * stream) is written to a temporary file first and streamed from there: never held whole
 * in memory.
 *
 * Spools live in `<state_dir>/spool/`, never in a world-writable directory such as /tmp,
 * where the backup user (ferryd's own uid) could race the name between mkdtemp and a
 * chown by path. Each spool is made with mkdirat from the held, root-owned spool
 * directory (mode 0711: a helper may pass through it to its own spool, but nobody can list
 * it) and handed on its descriptor (fchown) to root, or to the helper's user when a helper
 * must write into it, mode 0700 either way, under a random 64-bit name. A helper writes
 * through a plain path (SQLite resolves the real path of its target, so a descriptor
 * would not do): every directory on it is root's, except the spool itself, which is the
 * helper's own.
 *
 * A directory the application's user owns is theirs to play with while the helper runs:
 * they could swap the dump for a symlink to /etc/shadow, or a subdirectory for a symlink to
 * /. So everything inside is opened and removed relative to the held directory descriptor
 * with RESOLVE_BENEATH|NO_SYMLINKS, a spooled file must be a regular file with one link
 * (and owned by the helper's user where one wrote it), and removal walks descriptors, never
 * path strings. `remove` is idempotent and is called in every `finally`.
 */
import { randomBytes } from "node:crypto";
import {
  closeSync,
  createWriteStream,
  fchmodSync,
  fchownSync,
  fstatSync,
  fsyncSync,
  read,
} from "node:fs";
import type { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { fileEntryHeader } from "../core/archive/tar.js";
import type { ArchiveEntry } from "../core/archive/writer.js";
import { FerryError } from "../core/errors.js";
import { fsFailure } from "../core/fs-errors.js";
import type { Logger } from "../core/log.js";
import { explain, openBeneath } from "../core/safe-fs.js";
import { removeTreeAt } from "../core/safe-remove.js";
import type { HelperUser } from "../core/spawn.js";
import { makePrivateDir, type StateDir } from "../core/state-dir.js";
import {
  nameText,
  O_CREAT,
  O_EXCL,
  O_NONBLOCK,
  O_RDONLY,
  O_WRONLY,
  readDir,
  S_IFMT,
  S_IFREG,
  SysError,
} from "../core/sys.js";
import { groupName, userName } from "../core/users.js";

const CHUNK = 1024 * 1024;
/** The subdirectory of the state directory that holds every spool. */
export const SPOOL_DIR = "spool";

/** The held descriptor of `<state_dir>/spool` (root-owned 0711: see the top). */
export function spoolRoot(state: StateDir): number {
  return state.sub(SPOOL_DIR, 0o711);
}

export interface SpooledFile {
  fd: number;
  size: number;
  uid: number;
  gid: number;
}

export class Spool {
  private readonly open = new Set<number>();
  private removed = false;

  private constructor(
    /** The held descriptor of `<state_dir>/spool`. */
    private readonly parentFd: number,
    /** Its path, for helpers. */
    private readonly parentPath: string,
    /** This spool's name in it. */
    readonly name: string,
    /** Held descriptor of the spool directory. */
    readonly fd: number,
    /** The helper's uid it was handed to (privileged only). */
    private readonly handedTo?: number,
  ) {}

  /**
   * A new private directory `<state_dir>/spool/LABEL-RANDOM`. With `writer`, it is handed
   * to that user so that a helper running as them can create its output there.
   */
  static create(state: StateDir, label: string, writer?: HelperUser): Spool {
    const parentFd = spoolRoot(state);
    const name = `${label.replace(/[^a-z0-9-]/gi, "_")}-${randomBytes(8).toString("hex")}`;
    const owner = writer === undefined ? undefined : { uid: writer.uid, gid: writer.gid };
    let fd: number;
    try {
      fd = makePrivateDir(
        parentFd,
        name,
        state.options,
        { existing: "fail", owner },
        state.describe(SPOOL_DIR),
      );
    } catch (err) {
      throw fsFailure(err, `creating a spool (mkdirat ${name})`, state.describe(SPOOL_DIR)) ?? err;
    }
    const handedTo = state.options.privileged && owner !== undefined ? owner.uid : undefined;
    return new Spool(parentFd, state.describe(SPOOL_DIR), name, fd, handedTo);
  }

  /** Path of `name` inside the spool, for a helper's argument. */
  pathOf(name: string): string {
    return `${this.parentPath}/${this.name}/${name}`;
  }

  /** Creates the new file `name` for writing (closed by `closeFd` or `remove`). */
  createFile(name: string): number {
    const fd = openBeneath(this.fd, name, O_WRONLY | O_CREAT | O_EXCL, 0o600);
    this.open.add(fd);
    return fd;
  }

  /** Closes a descriptor this spool handed out, once. */
  closeFd(fd: number): void {
    if (this.open.delete(fd)) closeSync(fd);
  }

  /** Writes a stream to a new file `name`; resolves with its length. */
  async write(name: string, src: Readable | AsyncIterable<Buffer>): Promise<number> {
    const fd = openBeneath(this.fd, name, O_WRONLY | O_CREAT | O_EXCL, 0o600);
    this.open.add(fd);
    try {
      await pipeline(src, createWriteStream("", { fd, autoClose: false, highWaterMark: CHUNK }));
      fsyncSync(fd);
      return fstatSync(fd).size;
    } catch (err) {
      throw fsFailure(err, `spooling ${name}`, `${this.parentPath}/${this.name}`) ?? err;
    } finally {
      if (this.open.delete(fd)) closeSync(fd);
    }
  }

  /**
   * Opens a spooled file for reading. It must be a regular file with a single link and,
   * with `owner`, owned by that uid (so a helper's user cannot substitute another file).
   */
  openFile(name: string, owner?: number): SpooledFile {
    let fd: number;
    try {
      fd = openBeneath(this.fd, name, O_RDONLY | O_NONBLOCK);
    } catch (err) {
      if (err instanceof SysError && err.errnoName === "ENOENT") {
        throw new FerryError("HELPER_FAILED", `the helper produced no output file ${name}`);
      }
      throw new FerryError(
        "SOURCE_CHANGED",
        `the helper's output ${name} is not a plain file: ${(err as Error).message}`,
        { cause: err },
      );
    }
    const st = fstatSync(fd);
    if (
      (st.mode & S_IFMT) !== S_IFREG ||
      st.nlink !== 1 ||
      (owner !== undefined && st.uid !== owner)
    ) {
      closeSync(fd);
      throw new FerryError(
        "SOURCE_CHANGED",
        `the helper's output ${name} is not a plain file of its own (mode ${st.mode.toString(8)}, ` +
          `${st.nlink} links, uid ${st.uid}); refusing to read it`,
      );
    }
    this.open.add(fd);
    return { fd, size: st.size, uid: st.uid, gid: st.gid };
  }

  /** Reads exactly `size` bytes of an opened spool file in 1 MiB chunks, then closes it. */
  async *read(file: SpooledFile): AsyncGenerator<Buffer> {
    try {
      let pos = 0;
      while (pos < file.size) {
        const want = Math.min(CHUNK, file.size - pos);
        const buf = Buffer.allocUnsafe(want);
        const n = await new Promise<number>((resolve, reject) =>
          read(file.fd, buf, 0, want, pos, (err, got) => (err ? reject(err) : resolve(got))),
        );
        if (n === 0) {
          throw new FerryError("SOURCE_CHANGED", "a spooled dump shrank while it was being read");
        }
        pos += n;
        yield n === want ? buf : buf.subarray(0, n);
      }
    } finally {
      this.closeFile(file);
    }
  }

  closeFile(file: SpooledFile): void {
    this.closeFd(file.fd);
  }

  /** An archive entry whose body is the spooled file `name`. */
  entry(
    archivePath: string,
    name: string,
    meta: { owner?: number; mode?: number } = {},
  ): ArchiveEntry {
    const f = this.openFile(name, meta.owner);
    const header = fileEntryHeader(archivePath, f.size, {
      mode: meta.mode ?? 0o600,
      uid: f.uid,
      gid: f.gid,
      uname: userName(f.uid),
      gname: groupName(f.gid),
    });
    return { header, body: this.read(f) };
  }

  /** Removes the directory and all it holds, through descriptors. Idempotent. */
  remove(): void {
    if (this.removed) return;
    this.removed = true;
    for (const fd of this.open) closeSync(fd);
    this.open.clear();
    if (this.handedTo !== undefined) {
      // Take it back from the helper's user first: whatever of theirs still runs can no
      // longer add names to it while it is removed.
      try {
        fchownSync(this.fd, 0, 0);
        fchmodSync(this.fd, 0o700);
      } catch {}
    }
    closeSync(this.fd);
    // Nobody but ferryd can rename in the root-owned spool directory, so the name is still
    // this spool; inside, the helper's user may have built anything: removeTreeAt walks it
    // through descriptors, never following a symlink, with an explicit stack. A spool
    // that cannot be removed now (names its owner keeps adding in a subdirectory, say)
    // never fails the backup: it is removed at ferryd's next start (removeStaleSpools).
    try {
      removeTreeAt(this.parentFd, this.name);
    } catch {}
  }
}

/**
 * Removes every spool a previous ferryd left behind (killed in the middle of a backup).
 * Called once at start-up, before anything is served; a spool that cannot be removed is
 * logged and left, and does not stop ferryd.
 */
export function removeStaleSpools(state: StateDir, log: Logger): void {
  const parentFd = spoolRoot(state);
  for (const d of readDir(parentFd)) {
    const name = d.name; // the exact bytes: names need not be UTF-8 (or latin1)
    const shown = nameText(name);
    try {
      removeTreeAt(parentFd, name);
      log.info({ spool: state.describe(SPOOL_DIR, shown) }, "removed a stale spool");
    } catch (err) {
      log.error(
        { spool: state.describe(SPOOL_DIR, shown), err: explain(err) },
        "could not remove a stale spool; left in place",
      );
    }
  }
}
