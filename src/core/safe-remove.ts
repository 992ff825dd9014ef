/**
 * Removing a directory tree that its owner may be changing under us (the application's
 * old data after a restore swap, or staging left by a crash), without ever following a
 * symlink: every directory is entered with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)
 * from its parent's descriptor and every name is unlinked relative to a held descriptor.
 * A name that turns out to be a symlink (or anything else) is unlinked itself, never its
 * target. Depth is bounded by an explicit stack, not recursion.
 *
 * Names are handled as the bytes `getdents64` returned, never decoded: a name with a
 * byte-order mark or bytes that are not UTF-8 is removed like any other (a decoded name
 * may differ from the one on disk, and then the directory could never be emptied).
 *
 * A directory inside the tree whose mode keeps its own owner out (an archive may restore
 * 0500 or 0000 directories) is made 0700 first when ferryd may do so (it owns it, or holds
 * CAP_FOWNER): without CAP_DAC_OVERRIDE (user mode) it could not be emptied otherwise.
 * The mode is changed on the directory's own descriptor, never through a path, and never
 * on `parentFd` itself (the directory the tree is in is not the tree's).
 */
import { chmodSync, closeSync, fchmodSync } from "node:fs";
import { openDirBeneath, RESOLVE_STRICT } from "./safe-fs.js";
import {
  closeFd,
  type Name,
  O_CLOEXEC,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_PATH,
  O_RDONLY,
  openat2,
  readDir,
  SysError,
  statAt,
  statFd,
  unlinkAt,
} from "./sys.js";

const isAccess = (err: unknown): boolean =>
  err instanceof SysError && (err.errnoName === "EACCES" || err.errnoName === "EPERM");

/** Makes the directory `n` in `pfd` 0700 through an O_PATH descriptor of it (no symlink). */
function openUp(pfd: number, n: Name): void {
  const fd = openat2(pfd, n, O_PATH | O_DIRECTORY | O_CLOEXEC, 0, RESOLVE_STRICT);
  try {
    // fchmod does not take O_PATH descriptors; their /proc link names exactly this inode.
    chmodSync(`/proc/self/fd/${fd}`, 0o700);
  } finally {
    closeFd(fd);
  }
}

/** Runs `op`; if the directory held by `dirFd` keeps us out, makes it 0700 and retries once. */
function withAccess(dirFd: number | undefined, op: () => void): void {
  try {
    op();
  } catch (err) {
    if (dirFd === undefined || !isAccess(err)) throw err;
    try {
      fchmodSync(dirFd, 0o700);
    } catch {
      throw err; // not ours to open up: the original error says more
    }
    op();
  }
}

/** Removes `name` (a directory or anything else) inside the directory held by `parentFd`. */
export function removeTreeAt(parentFd: number, name: Name): void {
  try {
    unlinkAt(parentFd, name, false);
    return; // not a directory: gone
  } catch (err) {
    if (!(err instanceof SysError)) throw err;
    if (err.errnoName === "ENOENT") return;
    if (err.errnoName !== "EISDIR" && err.errnoName !== "EPERM") throw err;
  }
  interface Frame {
    fd: number;
    parentFd: number;
    name: Name;
  }
  const stack: Frame[] = [];
  const push = (pfd: number, n: Name): boolean => {
    let fd: number;
    try {
      try {
        fd = openDirBeneath(pfd, n);
      } catch (err) {
        if (!isAccess(err)) throw err;
        try {
          openUp(pfd, n);
        } catch {
          throw err;
        }
        fd = openDirBeneath(pfd, n);
      }
    } catch (err) {
      if (err instanceof SysError && (err.errnoName === "ENOTDIR" || err.errnoName === "ELOOP")) {
        unlinkAt(pfd, n, false); // replaced by a non-directory meanwhile: remove the link itself
        return false;
      }
      if (err instanceof SysError && err.errnoName === "ENOENT") return false;
      throw err;
    }
    stack.push({ fd, parentFd: pfd, name: n });
    return true;
  };
  push(parentFd, name);
  try {
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as Frame;
      let descended = false;
      for (const d of readDir(top.fd)) {
        try {
          withAccess(top.fd, () => unlinkAt(top.fd, d.name, false));
        } catch (err) {
          if (!(err instanceof SysError)) throw err;
          if (err.errnoName === "ENOENT") continue;
          if (err.errnoName !== "EISDIR" && err.errnoName !== "EPERM") throw err;
          if (push(top.fd, d.name)) {
            descended = true;
            break;
          }
        }
      }
      if (descended) continue;
      stack.pop();
      closeSync(top.fd);
      try {
        // The parent is opened up only when it is part of the tree (a frame below).
        const parentInTree = top.parentFd === parentFd ? undefined : top.parentFd;
        withAccess(parentInTree, () => unlinkAt(top.parentFd, top.name, true));
      } catch (err) {
        if (!(err instanceof SysError) || err.errnoName !== "ENOENT") throw err;
      }
    }
  } finally {
    for (const f of stack) closeSync(f.fd);
  }
}

/** dev:ino of an open descriptor, as statx reports it ("major:minor:ino"). */
export function idOf(fd: number): string {
  const st = statFd(fd);
  return `${st.dev}:${st.ino}`;
}

/**
 * Removes the directory `name` in `parentFd` only while it is still the directory
 * `expectedId` (dev:ino): it is opened without following anything and compared, emptied
 * through that descriptor (so a swap of the name meanwhile changes nothing of what is
 * removed), then unlinked by name only if the name still holds that directory — and
 * `rmdir` itself refuses anything swapped in at the last instant that is not empty.
 *
 * This is how ferryd removes its own staging directories and the old tree a restore
 * replaced: an application owner who can write the parent directory could otherwise put
 * one of root's directories under that name and have ferryd delete it.
 */
export function removeDirIfSame(
  parentFd: number,
  name: Name,
  expectedId: string,
): "removed" | "absent" | "foreign" {
  let pathFd: number;
  try {
    pathFd = openat2(
      parentFd,
      name,
      O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
      0,
      RESOLVE_STRICT,
    );
  } catch (err) {
    if (err instanceof SysError && err.errnoName === "ENOENT") return "absent";
    if (err instanceof SysError && (err.errnoName === "ENOTDIR" || err.errnoName === "ELOOP")) {
      return "foreign";
    }
    throw err;
  }
  try {
    if (idOf(pathFd) !== expectedId) return "foreign";
    // The directory itself, reopened through the descriptor just checked; a mode that keeps
    // even its owner out (0000, 0500: an archive may say so) is opened up on that inode.
    const open = () => openat2(pathFd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, RESOLVE_STRICT);
    let fd: number;
    try {
      fd = open();
    } catch (err) {
      if (!isAccess(err)) throw err;
      chmodSync(`/proc/self/fd/${pathFd}`, 0o700);
      fd = open();
    }
    try {
      withAccess(fd, () => removeChildren(fd));
    } finally {
      closeSync(fd);
    }
  } finally {
    closeFd(pathFd);
  }
  try {
    const st = statAt(parentFd, name);
    if (`${st.dev}:${st.ino}` !== expectedId) return "foreign";
  } catch {
    return "foreign";
  }
  try {
    unlinkAt(parentFd, name, true);
  } catch (err) {
    if (err instanceof SysError && err.errnoName === "ENOENT") return "absent";
    if (err instanceof SysError && err.errnoName === "ENOTEMPTY") return "foreign";
    throw err;
  }
  return "removed";
}

/**
 * Everything inside the directory held by `fd` (symlink-safe, like removeTreeAt). A few
 * passes at most: names its owner keeps adding meanwhile are not chased for ever.
 */
export function removeChildren(fd: number): void {
  for (let pass = 0; pass < 3; pass++) {
    const entries = readDir(fd);
    if (entries.length === 0) return;
    for (const d of entries) removeTreeAt(fd, d.name); // names as bytes
  }
  if (readDir(fd).length > 0) {
    throw new SysError("unlinkat", 39, "ENOTEMPTY", "(entries that could not be removed)");
  }
}
