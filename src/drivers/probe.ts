/**
 * `ferry doctor`'s probes: do, where a restore or a backup will do it and with the same
 * rules, the one step that fails when a directory is read-only (a path missing from
 * ReadWritePaths=), not writable by ferryd, or full — then undo it.
 *
 * The probe runs with ferryd's capabilities in a directory an application's owner may be
 * able to write (a restore's staging parent), so it follows the restore's rules exactly
 * (docs/security.md): the parent is opened with `openRoot` (no symlink on the way) and
 * held; the probe is made with `mkdirat` (a directory, via `makePrivateDir`: handed to
 * root at once, mode 0700, refused if something was planted in it) or `O_CREAT|O_EXCL|
 * O_NOFOLLOW` (a file) relative to that descriptor, so a symlink planted at the probe's
 * name is never followed (EEXIST) and nothing is created outside; it is removed only while
 * the name still holds what the probe made (same dev:ino), with `rmdir` (which removes
 * nothing but an empty directory) or `unlinkat` of that name alone.
 *
 * Probe names are fixed (`.NAME.ferry-probe`), so one left by a ferryd killed mid-probe is
 * recognised and removed by the next probe: an empty directory of the staging owner, mode
 * 0700, or an empty regular file of the application's owner, mode 0600. Anything else at
 * the name is left alone and reported. ferryd runs one probe at a time.
 */
import { closeSync, fchownSync, statfsSync } from "node:fs";
import { basename, dirname } from "node:path";
import type { DoctorCheck } from "../api/types.js";
import { errnoOf, fsCodeOf, fsFix } from "../core/fs-errors.js";
import { explain, openBeneath, openRoot } from "../core/safe-fs.js";
import { idOf } from "../core/safe-remove.js";
import { makePrivateDir, type StateDir } from "../core/state-dir.js";
import {
  O_CREAT,
  O_EXCL,
  O_WRONLY,
  S_IFDIR,
  S_IFMT,
  S_IFREG,
  type Stat,
  SysError,
  statAt,
  unlinkAt,
} from "../core/sys.js";

/** The probe's name beside `path` (a declared directory, or an sqlite file). */
export function probeName(path: string): string {
  return `.${basename(path)}.ferry-probe`;
}

function statOrUndefined(dirfd: number, name: string): Stat | undefined {
  try {
    return statAt(dirfd, name);
  } catch (err) {
    if (err instanceof SysError && err.errnoName === "ENOENT") return undefined;
    throw err;
  }
}

/** A failure of `action` in `dir`, with the fix (ReadWritePaths=, modes, space). */
export function failureCheck(err: unknown, action: string, dir: string): DoctorCheck {
  const errno = errnoOf(err);
  const code = fsCodeOf(errno);
  if (code !== undefined) {
    return { level: "fail", message: `${action} in ${dir} fails: ${errno}`, fix: fsFix(code, dir) };
  }
  return { level: "fail", message: `${action} in ${dir} fails: ${explain(err)}` };
}

function occupied(dir: string, name: string, st: Stat): DoctorCheck {
  const what =
    (st.mode & S_IFMT) === S_IFDIR
      ? "a directory"
      : (st.mode & S_IFMT) === S_IFREG
        ? "a file"
        : "a symlink or special file";
  return {
    level: "fail",
    message: `cannot probe ${dir}: ${dir}/${name} is ${what} of uid ${st.uid} that ferryd did not make; it is neither followed nor removed`,
    fix: `remove ${dir}/${name} (nothing of Ferry's uses it), and make sure nobody but root can write ${dir}`,
  };
}

/**
 * Makes and removes the probe directory beside `path`, as a files restore makes its
 * staging directory there (`makePrivateDir` through the held parent).
 */
export function probeStagingDir(path: string, state: StateDir): DoctorCheck {
  const dir = dirname(path);
  const name = probeName(path);
  const stagingOwner = state.options.privileged ? 0 : state.options.uid;
  let parentFd: number;
  try {
    parentFd = openRoot(dir);
  } catch (err) {
    return failureCheck(err, "opening the directory a restore stages in", dir);
  }
  try {
    // A leftover of a probe ferryd did not finish (killed before the rmdir, or between
    // the mkdirat and the fchown): a directory of the staging owner or of ferryd's own
    // uid, removed only if empty (rmdir), never followed.
    const leftover = (st: Stat | undefined) =>
      st !== undefined &&
      (st.mode & S_IFMT) === S_IFDIR &&
      (st.uid === stagingOwner || st.uid === state.options.uid);
    const left = statOrUndefined(parentFd, name);
    if (left !== undefined) {
      if (!leftover(left)) return occupied(dir, name, left);
      try {
        unlinkAt(parentFd, name, true);
      } catch {
        return occupied(dir, name, left);
      }
    }
    let fd: number;
    try {
      fd = makePrivateDir(parentFd, name, state.options, { existing: "fail" }, dir);
    } catch (err) {
      const now = statOrUndefined(parentFd, name);
      if (errnoOf(err) === "EEXIST") {
        if (now !== undefined) return occupied(dir, name, now);
      } else if (leftover(now)) {
        // Made, then refused (a failed fchown, something planted): not left behind.
        try {
          unlinkAt(parentFd, name, true);
        } catch {}
      }
      return failureCheck(err, `creating a staging directory (mkdirat ${name})`, dir);
    }
    const id = idOf(fd);
    closeSync(fd);
    const now = statOrUndefined(parentFd, name);
    if (now !== undefined && `${now.dev}:${now.ino}` === id) unlinkAt(parentFd, name, true);
    return {
      level: "ok",
      message: `a restore can stage beside ${path} (made and removed ${dir}/${name})${freeText(dir)}`,
    };
  } catch (err) {
    return failureCheck(err, "probing", dir);
  } finally {
    closeSync(parentFd);
  }
}

/**
 * Makes and removes the probe file beside the file `path`, as an sqlite restore makes its
 * staged copy there (O_CREAT|O_EXCL|O_NOFOLLOW through the held directory, handed to the
 * owner).
 */
export function probeStagingFile(path: string, owner: { uid: number; gid: number }): DoctorCheck {
  const dir = dirname(path);
  const name = probeName(path);
  let dirfd: number;
  try {
    dirfd = openRoot(dir);
  } catch (err) {
    return failureCheck(err, "opening the directory a restore stages in", dir);
  }
  try {
    const left = statOrUndefined(dirfd, name);
    if (left !== undefined) {
      const ours =
        (left.mode & S_IFMT) === S_IFREG &&
        left.uid === owner.uid &&
        left.size === 0 &&
        left.nlink === 1 &&
        (left.mode & 0o7777) === 0o600;
      if (!ours) return occupied(dir, name, left);
      unlinkAt(dirfd, name, false);
    }
    let fd: number;
    try {
      fd = openBeneath(dirfd, name, O_WRONLY | O_CREAT | O_EXCL, 0o600);
    } catch (err) {
      if (errnoOf(err) === "EEXIST") {
        const now = statOrUndefined(dirfd, name);
        if (now !== undefined) return occupied(dir, name, now);
      }
      return failureCheck(err, `creating a staged copy (openat ${name})`, dir);
    }
    const id = idOf(fd);
    try {
      // As the restore hands its staged copy to the owner.
      fchownSync(fd, owner.uid, owner.gid);
    } catch (err) {
      return failureCheck(err, `handing a staged copy to uid ${owner.uid} (fchown)`, dir);
    } finally {
      closeSync(fd);
      const now = statOrUndefined(dirfd, name);
      if (now !== undefined && `${now.dev}:${now.ino}` === id) unlinkAt(dirfd, name, false);
    }
    return {
      level: "ok",
      message: `a restore can stage beside ${path} (made and removed ${dir}/${name})${freeText(dir)}`,
    };
  } catch (err) {
    return failureCheck(err, "probing", dir);
  } finally {
    closeSync(dirfd);
  }
}

const JOURNAL_PROBE = "doctor-probe";

/**
 * Writes and removes a file in `<state_dir>/journal`, as a files restore writes its
 * journal (a name recovery never reads).
 */
export function probeJournal(state: StateDir): DoctorCheck {
  const where = state.describe("journal");
  try {
    const dirfd = state.sub("journal");
    try {
      unlinkAt(dirfd, JOURNAL_PROBE, false);
    } catch {}
    const fd = openBeneath(dirfd, JOURNAL_PROBE, O_WRONLY | O_CREAT | O_EXCL, 0o600);
    closeSync(fd);
    unlinkAt(dirfd, JOURNAL_PROBE, false);
    return { level: "ok", message: `the restore journal can be written in ${where}` };
  } catch (err) {
    return failureCheck(err, "writing the restore journal", where);
  }
}

/** ", 12.3 GiB free" for `dir`, or "". */
function freeText(dir: string): string {
  try {
    const st = statfsSync(dir);
    const gib = (Number(st.bavail) * Number(st.bsize)) / 1024 ** 3;
    return `, ${gib.toFixed(1)} GiB free there`;
  } catch {
    return "";
  }
}
