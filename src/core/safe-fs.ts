/**
 * Descriptor-relative filesystem access for application data.
 *
 * The application's own user can rename, replace or swap any part of its tree while
 * ferryd works, so nothing here re-resolves a path string after a check. A tree is entered
 * once through its declared root (no symlinks allowed on the way), and every step below is
 * `openat2(dirfd, name, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`
 * from a held directory descriptor, followed by an fstat of what was actually opened.
 */
import { FerryError } from "./errors.js";
import {
  AT_FDCWD,
  type Name,
  O_CLOEXEC,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_NONBLOCK,
  O_RDONLY,
  openat2,
  RESOLVE_BENEATH,
  RESOLVE_NO_MAGICLINKS,
  RESOLVE_NO_SYMLINKS,
  S_IFDIR,
  S_IFMT,
  SysError,
} from "./sys.js";

export const RESOLVE_STRICT = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

/**
 * Opens a declared application root. The whole path is resolved without following any
 * symlink, so an application user who controls a parent directory cannot redirect it.
 */
export function openRoot(path: string): number {
  if (!path.startsWith("/")) throw new FerryError("SOURCE_UNREADABLE", `${path}: not absolute`);
  try {
    return openat2(
      AT_FDCWD,
      path,
      O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
      0,
      RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    );
  } catch (err) {
    throw new FerryError("SOURCE_UNREADABLE", `cannot open ${path}: ${explain(err)}`, {
      cause: err,
    });
  }
}

/** Opens a single name below a held directory descriptor, never following a symlink. */
export function openBeneath(dirfd: number, name: Name, flags: number, mode = 0): number {
  return openat2(dirfd, name, flags | O_NOFOLLOW | O_CLOEXEC, mode, RESOLVE_STRICT);
}

/** Opens a subdirectory; a symlink or a non-directory in its place fails (ELOOP, ENOTDIR). */
export function openDirBeneath(dirfd: number, name: Name): number {
  return openBeneath(dirfd, name, O_RDONLY | O_DIRECTORY);
}

/** Opens a file for reading; O_NONBLOCK so a FIFO swapped in cannot block the open. */
export function openFileBeneath(dirfd: number, name: Name): number {
  return openBeneath(dirfd, name, O_RDONLY | O_NONBLOCK);
}

export function isDirMode(mode: number): boolean {
  return (mode & S_IFMT) === S_IFDIR;
}

/** A short human explanation of a system error. */
export function explain(err: unknown): string {
  if (err instanceof SysError) {
    switch (err.errnoName) {
      case "ELOOP":
        return "a symlink is in the way (ferryd never follows symlinks in application paths)";
      case "ENOENT":
        return "no such file or directory";
      case "EACCES":
      case "EPERM":
        return "permission denied";
      case "ENOTDIR":
        return "not a directory";
      case "EXDEV":
        return "the path escapes the application's root";
      default:
        return err.message;
    }
  }
  return err instanceof Error ? err.message : String(err);
}
