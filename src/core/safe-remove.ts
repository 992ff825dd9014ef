/**
 * Removing a directory tree that its owner may be changing under us (the application's
 * old data after a restore swap, or staging left by a crash), without ever following a
 * symlink: every directory is entered with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS)
 * from its parent's descriptor and every name is unlinked relative to a held descriptor.
 * A name that turns out to be a symlink (or anything else) is unlinked itself, never its
 * target. Depth is bounded by an explicit stack, not recursion.
 */
import { closeSync } from "node:fs";
import { openDirBeneath } from "./safe-fs.js";
import { readDir, SysError, statAt, statFd, unlinkAt } from "./sys.js";

const decoder = new TextDecoder("utf-8", { fatal: false });

/** Removes `name` (a directory or anything else) inside the directory held by `parentFd`. */
export function removeTreeAt(parentFd: number, name: string): void {
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
    name: string;
  }
  const stack: Frame[] = [];
  const push = (pfd: number, n: string): boolean => {
    let fd: number;
    try {
      fd = openDirBeneath(pfd, n);
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
        // Raw bytes may not be UTF-8; koffi needs a string, so decode losslessly where we
        // can and skip (leave) names we cannot express.
        const n = decoder.decode(d.name);
        if (!Buffer.from(n).equals(d.name)) continue;
        try {
          unlinkAt(top.fd, n, false);
        } catch (err) {
          if (!(err instanceof SysError)) throw err;
          if (err.errnoName === "ENOENT") continue;
          if (err.errnoName !== "EISDIR" && err.errnoName !== "EPERM") throw err;
          if (push(top.fd, n)) {
            descended = true;
            break;
          }
        }
      }
      if (descended) continue;
      stack.pop();
      closeSync(top.fd);
      try {
        unlinkAt(top.parentFd, top.name, true);
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
  name: string,
  expectedId: string,
): "removed" | "absent" | "foreign" {
  let fd: number;
  try {
    fd = openDirBeneath(parentFd, name);
  } catch (err) {
    if (err instanceof SysError && err.errnoName === "ENOENT") return "absent";
    if (err instanceof SysError && (err.errnoName === "ENOTDIR" || err.errnoName === "ELOOP")) {
      return "foreign";
    }
    throw err;
  }
  try {
    if (idOf(fd) !== expectedId) return "foreign";
    removeChildren(fd);
  } finally {
    closeSync(fd);
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
    for (const d of entries) {
      const n = decoder.decode(d.name);
      if (!Buffer.from(n).equals(d.name)) continue;
      removeTreeAt(fd, n);
    }
  }
  if (readDir(fd).length > 0) {
    throw new SysError("unlinkat", 39, "ENOTEMPTY", "(entries that could not be removed)");
  }
}
