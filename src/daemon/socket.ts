/**
 * Preparing the listening socket's path: a path socket (never abstract) in a directory of
 * mode 0700 owned by ferryd's uid, the socket itself 0600. A stale socket is removed only
 * if it is a socket owned by that uid; anything else at the path is an error, so ferryd
 * can never be tricked into unlinking someone else's file.
 *
 * The socket's directory is the backup user's own by design, so it is only ever handled
 * through descriptors: its parent is opened without following any symlink, the directory
 * is created or opened from that descriptor (O_NOFOLLOW) and checked on it, the stale
 * socket is looked at and unlinked relative to it, and ferryd binds through
 * `/proc/self/fd/N/NAME`, the held directory itself: swapping the directory for a symlink
 * after the checks changes nothing of what ferryd touches.
 */
import { closeSync, fchmodSync } from "node:fs";
import { basename, dirname } from "node:path";
import { FerryError } from "../core/errors.js";
import { explain, openBeneath, openRoot } from "../core/safe-fs.js";
import {
  mkdirAt,
  O_DIRECTORY,
  O_RDONLY,
  S_IFDIR,
  S_IFMT,
  S_IFSOCK,
  type Stat,
  SysError,
  statAt,
  statFd,
  unlinkAt,
} from "../core/sys.js";

export interface PreparedSocket {
  /** What to pass to listen(): the socket's name under the held directory. */
  bindPath: string;
  /** The held directory descriptor (kept open for ferryd's life). */
  dirFd: number;
}

export function prepareSocketPath(path: string, uid: number): PreparedSocket {
  const dir = dirname(path);
  const name = basename(path);
  let parentFd: number;
  try {
    parentFd = openRoot(dirname(dir));
  } catch (err) {
    throw unsafe(dirname(dir), `cannot be opened without following symlinks: ${explain(err)}`);
  }
  let dirFd: number;
  try {
    try {
      dirFd = openBeneath(parentFd, basename(dir), O_RDONLY | O_DIRECTORY);
    } catch (err) {
      if (!(err instanceof SysError) || err.errnoName !== "ENOENT") {
        throw unsafe(dir, `is not a directory (or is a symlink): ${explain(err)}`);
      }
      try {
        mkdirAt(parentFd, basename(dir), 0o700);
        dirFd = openBeneath(parentFd, basename(dir), O_RDONLY | O_DIRECTORY);
      } catch (e) {
        throw unsafe(dir, `cannot create it: ${explain(e)}`);
      }
    }
  } finally {
    closeSync(parentFd);
  }
  try {
    const st = statFd(dirFd);
    if ((st.mode & S_IFMT) !== S_IFDIR) throw unsafe(dir, "is not a directory");
    if (st.uid !== uid) throw unsafe(dir, `is owned by uid ${st.uid}, not ferryd's uid ${uid}`);
    if ((st.mode & 0o777) !== 0o700) fchmodSync(dirFd, 0o700);

    let sock: Stat | undefined;
    try {
      sock = statAt(dirFd, name);
    } catch (err) {
      if (!(err instanceof SysError) || err.errnoName !== "ENOENT") {
        throw unsafe(path, explain(err));
      }
    }
    if (sock !== undefined) {
      if ((sock.mode & S_IFMT) !== S_IFSOCK) {
        throw unsafe(path, "exists and is not a socket; refusing to remove it");
      }
      if (sock.uid !== uid) {
        throw unsafe(path, `is a socket owned by uid ${sock.uid}; refusing to remove it`);
      }
      unlinkAt(dirFd, name, false);
    }
  } catch (err) {
    closeSync(dirFd);
    throw err;
  }
  return { bindPath: `/proc/self/fd/${dirFd}/${name}`, dirFd };
}

function unsafe(path: string, why: string): FerryError {
  return new FerryError("SOCKET_UNSAFE", `socket location ${path} ${why}`);
}
