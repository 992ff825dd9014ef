/**
 * `-o` and `-i` paths, checked before anything is asked of ferryd: a backup that cannot
 * be written must fail before ferryd runs the application's pre-backup hook and streams
 * its data (and an import that cannot be read before the pre-restore hook), with a stable
 * code (OUTPUT_NOT_WRITABLE, INPUT_NOT_READABLE) instead of a bare `EACCES … lstat`.
 *
 * The checks ask the kernel as the user running ferry (access(2): read-only filesystems
 * included), so they say what the write or read would meet.
 */
import {
  accessSync,
  closeSync,
  constants,
  fstatSync,
  lstatSync,
  openSync,
  statSync,
} from "node:fs";
import { dirname, resolve } from "node:path";
import { FerryError } from "../core/errors.js";

function why(err: unknown): string {
  switch ((err as NodeJS.ErrnoException).code) {
    case "EROFS":
      return "it is on a read-only filesystem";
    case "EACCES":
    case "EPERM":
      return "permission denied";
    case "ENOENT":
      return "it does not exist";
    case "ENOTDIR":
      return "a component of it is not a directory";
    default:
      return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
  }
}

function owner(path: string): string {
  try {
    const st = statSync(path);
    return ` (owner uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, "0")}; you are uid ${process.getuid?.()})`;
  } catch {
    return "";
  }
}

function unwritable(flag: string, path: string, problem: string): FerryError {
  return new FerryError("OUTPUT_NOT_WRITABLE", `${flag} ${path}: ${problem}; nothing was exported`);
}

/** A directory the user can create files in (`-o DIR` of a multi-app export, or a file's). */
export function checkWritableDir(dir: string, flag = "-o", forFile?: string): void {
  const shown = forFile ?? dir;
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(dir);
  } catch (err) {
    throw unwritable(flag, shown, `the directory ${dir}: ${why(err)}`);
  }
  if (!st.isDirectory()) throw unwritable(flag, shown, `${dir} is not a directory`);
  try {
    accessSync(dir, constants.W_OK | constants.X_OK);
  } catch (err) {
    const reason = why(err);
    throw unwritable(
      flag,
      shown,
      `cannot create files in ${dir}: ${reason}${reason === "permission denied" ? owner(dir) : ""}; choose a directory you can write`,
    );
  }
}

/**
 * `-o FILE` of a one-app export: a new or regular file is written beside and renamed into
 * place, so its directory must be writable; anything else that exists there (/dev/null, a
 * FIFO) is written directly, so it must be writable itself. A directory is refused.
 */
export function checkOutputFile(path: string): void {
  let existing: ReturnType<typeof lstatSync> | undefined;
  try {
    existing = lstatSync(path);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== "ENOENT") {
      // ENOTDIR, EACCES on the way: the directory check below says which.
      checkWritableDir(dirname(resolve(path)), "-o", path);
      throw unwritable("-o", path, why(err));
    }
  }
  if (existing?.isDirectory()) {
    throw unwritable(
      "-o",
      path,
      "is a directory; give a file name (or export several applications into it)",
    );
  }
  if (existing === undefined || existing.isFile()) {
    checkWritableDir(dirname(resolve(path)), "-o", path);
    return;
  }
  try {
    accessSync(path, constants.W_OK);
  } catch (err) {
    throw unwritable("-o", path, why(err));
  }
}

/**
 * `-i FILE`: a regular file the user can read, opened now (the descriptor is what is sent,
 * so what was checked is what is read).
 */
export function openInputFile(path: string): number {
  const fail = (problem: string) =>
    new FerryError("INPUT_NOT_READABLE", `-i ${path}: ${problem}; nothing was sent to ferryd`);
  let st: ReturnType<typeof statSync>;
  try {
    st = statSync(path);
  } catch (err) {
    throw fail(why(err));
  }
  if (!st.isFile()) throw fail("not a regular file");
  let fd: number;
  try {
    // O_NONBLOCK: a FIFO put there since the stat must not hang the open.
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    const reason = why(err);
    throw fail(`cannot read it: ${reason}${reason === "permission denied" ? owner(path) : ""}`);
  }
  if (!fstatSync(fd).isFile()) {
    closeSync(fd);
    throw fail("not a regular file");
  }
  return fd;
}

/**
 * A second descriptor of the file open at `fd` (the same inode, not the path again, which
 * may name another file by now), with its own offset from 0: `ferry import` reads the file
 * once for the dry run and once for the restore.
 */
export function reopenInputFile(fd: number, path: string): number {
  const before = fstatSync(fd);
  let again: number;
  try {
    again = openSync(`/proc/self/fd/${fd}`, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (err) {
    throw new FerryError(
      "INPUT_NOT_READABLE",
      `-i ${path}: cannot open it again for the restore: ${why(err)}; nothing was sent to ferryd`,
    );
  }
  const after = fstatSync(again);
  if (after.dev !== before.dev || after.ino !== before.ino) {
    closeSync(again);
    throw new FerryError(
      "INPUT_NOT_READABLE",
      `-i ${path}: changed while open; nothing was sent to ferryd`,
    );
  }
  return again;
}
