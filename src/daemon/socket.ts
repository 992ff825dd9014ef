/**
 * Preparing the listening socket's path: a path socket (never abstract) in a directory of
 * mode 0700 owned by ferryd's uid, the socket itself 0600. A stale socket is removed only
 * if it is a socket owned by that uid; anything else at the path is an error, so ferryd
 * can never be tricked into unlinking someone else's file.
 */
import { chmodSync, lstatSync, mkdirSync, unlinkSync } from "node:fs";
import { dirname } from "node:path";
import { FerryError } from "../core/errors.js";

export function prepareSocketPath(path: string, uid: number): void {
  const dir = dirname(path);
  let st: ReturnType<typeof lstatSync>;
  try {
    st = lstatSync(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw unsafe(dir, (err as Error).message);
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (e) {
      throw unsafe(dir, `cannot create it: ${(e as Error).message}`);
    }
    st = lstatSync(dir);
  }
  if (!st.isDirectory()) throw unsafe(dir, "is not a directory (or is a symlink)");
  if (st.uid !== uid) throw unsafe(dir, `is owned by uid ${st.uid}, not ferryd's uid ${uid}`);
  if ((st.mode & 0o777) !== 0o700) chmodSync(dir, 0o700);

  let sock: ReturnType<typeof lstatSync> | undefined;
  try {
    sock = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT")
      throw unsafe(path, (err as Error).message);
  }
  if (sock !== undefined) {
    if (!sock.isSocket()) throw unsafe(path, "exists and is not a socket; refusing to remove it");
    if (sock.uid !== uid)
      throw unsafe(path, `is a socket owned by uid ${sock.uid}; refusing to remove it`);
    unlinkSync(path);
  }
}

function unsafe(path: string, why: string): FerryError {
  return new FerryError("SOCKET_UNSAFE", `socket location ${path} ${why}`);
}
