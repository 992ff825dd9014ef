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
 */
import { closeSync } from "node:fs";
import { openDirBeneath } from "./safe-fs.js";
import { type Name, readDir, SysError, unlinkAt } from "./sys.js";

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
        try {
          unlinkAt(top.fd, d.name, false);
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
        unlinkAt(top.parentFd, top.name, true);
      } catch (err) {
        if (!(err instanceof SysError) || err.errnoName !== "ENOENT") throw err;
      }
    }
  } finally {
    for (const f of stack) closeSync(f.fd);
  }
}
