/**
 * Filesystem failures an admin can fix, as catalogued errors that name the directory and
 * the fix: a read-only filesystem (under systemd, usually a path missing from
 * `ReadWritePaths=`), a permission problem, a full disk. ferryd uses them where a restore,
 * a journal or a spool writes; `ferry doctor` shows the same text for its probes; `ferry`
 * uses the reasons for its own -o/-i checks.
 *
 * Anything else is left to the caller (undefined).
 */
import { statfsSync, statSync } from "node:fs";
import type { ErrorCode } from "../api/errors.js";
import { FerryError } from "./errors.js";
import { SysError } from "./sys.js";

/** The errno name of a SysError or a Node.js system error. */
export function errnoOf(err: unknown): string | undefined {
  if (err instanceof SysError) return err.errnoName;
  if (err instanceof FerryError) return errnoOf(err.cause);
  const code = (err as NodeJS.ErrnoException | undefined)?.code;
  return typeof code === "string" && /^E[A-Z0-9]+$/.test(code) ? code : undefined;
}

export type FsCode = Extract<ErrorCode, "READ_ONLY_FILESYSTEM" | "PERMISSION_DENIED" | "DISK_FULL">;

/** Which of the three an errno is, if any. */
export function fsCodeOf(errno: string | undefined): FsCode | undefined {
  switch (errno) {
    case "EROFS":
      return "READ_ONLY_FILESYSTEM";
    case "EACCES":
    case "EPERM":
      return "PERMISSION_DENIED";
    case "ENOSPC":
    case "EDQUOT":
      return "DISK_FULL";
    default:
      return undefined;
  }
}

function describeDir(dir: string): string {
  try {
    const st = statSync(dir);
    return ` (owner uid ${st.uid}, mode ${(st.mode & 0o7777).toString(8).padStart(4, "0")})`;
  } catch {
    return "";
  }
}

function freeText(dir: string): string {
  try {
    const st = statfsSync(dir);
    const mib = (Number(st.bavail) * Number(st.bsize)) / 1024 ** 2;
    return `, ${mib < 10 ? mib.toFixed(1) : Math.round(mib)} MiB free`;
  } catch {
    return "";
  }
}

/**
 * What to do about a failure of class `code` in `dir`, for ferryd (which writes through
 * its capabilities, under its systemd sandbox).
 */
export function fsFix(code: FsCode, dir: string): string {
  switch (code) {
    case "READ_ONLY_FILESYSTEM":
      return `${dir} is read-only for ferryd. Under systemd (ProtectSystem=strict) add it to ReadWritePaths= in a drop-in for ferryd.service (systemctl edit ferryd; see deploy/ferryd.service.d/restore-paths.conf), then systemctl restart ferryd; otherwise remount it read-write`;
    case "PERMISSION_DENIED":
      return `ferryd may not write in ${dir}${describeDir(dir)}: it needs CAP_DAC_OVERRIDE (ferry doctor lists its capabilities; without capabilities it can only write where its own user may), and no immutable attribute on the directory (lsattr -d ${dir})`;
    case "DISK_FULL":
      return `the filesystem of ${dir} is full${freeText(dir)} (or a quota is reached): free space there; a files restore stages a full copy of the data beside it, an sqlite restore a copy of the database`;
  }
}

/**
 * The catalogued error for a filesystem call that failed while doing `action` in `dir`
 * (e.g. `mkdirat ".data.ferry-restore-…"` during a restore), or undefined when the
 * failure is none of the three.
 */
export function fsFailure(err: unknown, action: string, dir: string): FerryError | undefined {
  const errno = errnoOf(err);
  const code = fsCodeOf(errno);
  if (code === undefined) return undefined;
  return new FerryError(code, `${action} in ${dir} failed (${errno}): ${fsFix(code, dir)}`, {
    cause: err,
  });
}
