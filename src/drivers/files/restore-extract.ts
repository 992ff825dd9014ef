/**
 * The files driver's restore, step 2 of 3: the archive's entries, extracted into the staging
 * trees (restore-staging.ts) as they stream in.
 *
 * Every operation is relative to held directory descriptors: a parent is opened with
 * openat2(staging, "a/b", RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS), files
 * are created O_CREAT|O_EXCL|O_NOFOLLOW, links with symlinkat/linkat (never following).
 *
 * What the archive may say is checked entry by entry (src/core/archive/paths.ts): no absolute or
 * `..` paths, no control characters, nothing outside `data/<declared index>/`, parents
 * must be earlier directories of the same archive (so nothing can be placed below a
 * symlink), each path at most once, hardlinks only to earlier regular files of the same
 * root, no device nodes or FIFOs, limits on entries, depth and name length. Owners are
 * mapped: everything becomes the application's configured owner and group. Set-uid and
 * set-gid bits are cleared. Directory modes and times wait for the commit
 * (restore-commit.ts), so a directory's final mode cannot keep the restore out of it.
 */
import { closeSync, fchmodSync, fchownSync, writeSync } from "node:fs";
import { dirname } from "node:path";
import {
  checkLinkTarget,
  parseArchivePath,
  type RestoreLimits,
  unsafe,
} from "../../core/archive/paths.js";
import type { TarHeader } from "../../core/archive/tar.js";
import { FerryError } from "../../core/errors.js";
import { failpoint } from "../../core/failpoint.js";
import { errnoOf, fsCodeOf, fsFailure } from "../../core/fs-errors.js";
import { explain, openBeneath, RESOLVE_STRICT } from "../../core/safe-fs.js";
import {
  lchownAt,
  linkAt,
  mkdirAt,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  O_NOFOLLOW,
  O_RDONLY,
  O_WRONLY,
  openat2,
  S_IFMT,
  S_IFREG,
  SysError,
  setTimesAt,
  setTimesFd,
  statAt,
  symlinkAt,
} from "../../core/sys.js";
import { DirTable } from "./restore-commit.js";
import type { StagedRoot } from "./restore-staging.js";

/** Mode bits an archive may set: permissions and sticky, never set-uid or set-gid. */
export function sanitizeMode(mode: number): number {
  return mode & 0o1777;
}

interface OpenFile {
  fd: number;
  pos: number;
  /** Its archive path and the directory its staging tree is in, for messages. */
  path: string;
  dir: string;
}

/** Extracts the payload entries of one archive into the staging trees. */
export class Extractor {
  /** Per root, the directories made and their final modes and times. */
  readonly dirs: DirTable[];
  entries = 0;
  bytes = 0;
  private current: OpenFile | undefined;
  private cachedParent: { root: number; rel: string; fd: number } | undefined;

  constructor(
    private readonly roots: StagedRoot[],
    private readonly owner: { uid: number; gid: number },
    private readonly limits: RestoreLimits,
    private readonly signal: AbortSignal,
  ) {
    this.dirs = roots.map(() => new DirTable());
  }

  async entry(h: TarHeader): Promise<void> {
    const { roots, limits } = this;
    this.signal.throwIfAborted();
    this.entries++;
    if (this.entries > limits.maxEntries)
      throw unsafe(`the archive has more than ${limits.maxEntries} entries`);
    if (this.entries === 500) failpoint("restore-extracting");
    const p = parseArchivePath(h.path, roots.length, limits);
    const root = roots[p.root] as StagedRoot;
    if (p.parts.length === 0) {
      if (root.meta !== undefined) throw unsafe(`entry ${JSON.stringify(h.path)} appears twice`);
      if (h.type !== "dir") throw unsafe(`entry ${JSON.stringify(h.path)} must be a directory`);
      root.meta = { mode: sanitizeMode(h.mode), sec: h.mtimeSec, nsec: h.mtimeNsec };
      return;
    }
    if (root.meta === undefined)
      throw unsafe(`entry ${JSON.stringify(h.path)} comes before its root directory`);
    const parentRel = p.parts.slice(0, -1).join("/");
    const name = p.parts[p.parts.length - 1] as string;
    // Duplicates need no bookkeeping either: every creation below is exclusive
    // (mkdirat, O_EXCL, symlinkat, linkat), so a name made earlier fails with EEXIST.
    let pfd: number;
    try {
      pfd = this.parentFd(p.root, parentRel);
    } catch (err) {
      if (!(err instanceof FerryError)) throw err;
      throw unsafe(`entry ${JSON.stringify(h.path)}: ${err.message}`);
    }
    const { uid, gid } = this.owner;
    try {
      switch (h.type) {
        case "dir":
          mkdirAt(pfd, name, 0o700);
          lchownAt(pfd, name, uid, gid);
          (this.dirs[p.root] as DirTable).add(
            statAt(pfd, name).ino,
            sanitizeMode(h.mode),
            h.mtimeSec,
            h.mtimeNsec,
          );
          return;
        case "file": {
          const fd = openBeneath(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
          this.current = {
            fd,
            pos: 0,
            path: h.path,
            dir: dirname(root.path),
          };
          return;
        }
        case "symlink":
          checkLinkTarget(h.path, h.linkpath, limits);
          symlinkAt(h.linkpath, pfd, name);
          lchownAt(pfd, name, uid, gid);
          setTimesAt(pfd, name, h.mtimeSec, h.mtimeNsec);
          return;
        case "hardlink":
          this.hardlink(h, p.root, pfd, name);
          return;
        default:
          throw unsafe(
            `entry ${JSON.stringify(h.path)} is a ${h.type === "fifo" ? "FIFO" : "device node"}; Ferry does not restore those`,
          );
      }
    } catch (err) {
      if (err instanceof SysError && err.errnoName === "EEXIST")
        throw unsafe(`entry ${JSON.stringify(h.path)} appears twice`);
      // No space or no inodes left is the disk's doing, not the archive's.
      if (fsCodeOf(errnoOf(err)) === "DISK_FULL") {
        throw fsFailure(err, `creating ${h.path} in the staging tree`, dirname(root.path)) ?? err;
      }
      if (err instanceof SysError) {
        throw unsafe(
          `cannot create ${JSON.stringify(h.path)} (${explain(err)}): the archive is inconsistent`,
        );
      }
      throw err;
    }
  }

  data(chunk: Buffer): void {
    this.signal.throwIfAborted();
    const current = this.current;
    if (current === undefined) return;
    // Written as it arrives, synchronously: into the page cache this is a copy, cheaper
    // than a thread-pool round trip or gathering chunks into batches (bench/README.md,
    // "import"). Durability comes from the one syncfs before the swap (restore-commit.ts).
    let off = 0;
    try {
      while (off < chunk.length) {
        const n = writeSync(current.fd, chunk, off, chunk.length - off, current.pos);
        off += n;
        current.pos += n;
      }
    } catch (err) {
      // A full disk (or quota), a read-only or forbidden directory: the directory and the
      // fix (DISK_FULL, READ_ONLY_FILESYSTEM, PERMISSION_DENIED), not a bare errno.
      throw fsFailure(err, `writing ${current.path} into the staging tree`, current.dir) ?? err;
    }
    this.bytes += chunk.length;
  }

  entryEnd(h: TarHeader): void {
    const current = this.current;
    if (current === undefined || h.type !== "file") return;
    const fd = current.fd;
    // chown first (it clears set-id bits anyway), then the sanitised mode, then times.
    fchownSync(fd, this.owner.uid, this.owner.gid);
    fchmodSync(fd, sanitizeMode(h.mode));
    setTimesFd(fd, h.mtimeSec, h.mtimeNsec);
    this.closeCurrent();
  }

  /** Closes what extraction holds open (the current file, the cached parent). */
  close(): void {
    this.closeCurrent();
    if (this.cachedParent !== undefined) closeSync(this.cachedParent.fd);
    this.cachedParent = undefined;
  }

  private closeCurrent(): void {
    if (this.current !== undefined) closeSync(this.current.fd);
    this.current = undefined;
  }

  /** A hardlink may only point to an earlier regular file of the same root. */
  private hardlink(h: TarHeader, rootIndex: number, pfd: number, name: string): void {
    const root = this.roots[rootIndex] as StagedRoot;
    const notEarlier = () =>
      unsafe(
        `hardlink ${JSON.stringify(h.path)} does not point to an earlier regular file of this archive`,
      );
    let target: ReturnType<typeof parseArchivePath>;
    try {
      target = parseArchivePath(h.linkpath, this.roots.length, this.limits);
    } catch {
      throw notEarlier();
    }
    if (target.root !== rootIndex)
      throw unsafe(`hardlink ${JSON.stringify(h.path)} crosses declared paths`);
    if (target.parts.length === 0) throw notEarlier();
    const targetParent = target.parts.slice(0, -1).join("/");
    const targetName = target.parts[target.parts.length - 1] as string;
    let srcFd = root.stagingFd;
    try {
      if (targetParent !== "") srcFd = this.openStaged(rootIndex, targetParent);
    } catch {
      throw notEarlier();
    }
    try {
      // In the staging tree, a regular file can only be one the archive made.
      let st: ReturnType<typeof statAt>;
      try {
        st = statAt(srcFd, targetName);
      } catch {
        throw notEarlier();
      }
      if ((st.mode & S_IFMT) !== S_IFREG) throw notEarlier();
      linkAt(srcFd, targetName, pfd, name);
    } finally {
      if (srcFd !== root.stagingFd) closeSync(srcFd);
    }
  }

  /** The parent directory `rel` of root's staging tree; the last one stays open. */
  private parentFd(root: number, rel: string): number {
    if (rel === "") return (this.roots[root] as StagedRoot).stagingFd;
    const cached = this.cachedParent;
    if (cached !== undefined && cached.root === root && cached.rel === rel) return cached.fd;
    if (cached !== undefined) closeSync(cached.fd);
    this.cachedParent = undefined;
    const fd = this.openStaged(root, rel);
    this.cachedParent = { root, rel, fd };
    return fd;
  }

  /**
   * Opens `rel` in root's staging tree. Only this restore creates anything there, so the
   * staging tree itself says whether an earlier entry of the archive made `rel` a
   * directory: missing, a file or a symlink in the way all fail here.
   */
  private openStaged(root: number, rel: string, what = "the parent directory"): number {
    try {
      return openat2(
        (this.roots[root] as StagedRoot).stagingFd,
        rel,
        O_RDONLY | O_DIRECTORY | O_CLOEXEC,
        0,
        RESOLVE_STRICT,
      );
    } catch (err) {
      if (err instanceof SysError && err.errnoName === "ENOENT")
        throw unsafe(`${what} ${JSON.stringify(rel)} is not an earlier directory of the archive`);
      if (err instanceof SysError && (err.errnoName === "ENOTDIR" || err.errnoName === "ELOOP"))
        throw unsafe(`${what} ${JSON.stringify(rel)} is a file or a link, not a directory`);
      throw unsafe(
        `cannot open ${rel} inside the staging tree (${explain(err)}): the archive is inconsistent`,
      );
    }
  }
}
