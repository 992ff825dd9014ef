/**
 * ferryd's state directory: restore journals and spools, everything ferryd trusts later.
 *
 * ferryd runs with the backup user's uid (B), so whatever it creates is B's unless it hands
 * it away at once, and B could then forge a journal or race a spool (docs/security.md,
 * "Nothing ferryd trusts later is writable by B"). So, when ferryd holds capabilities:
 *
 * - the state directory is owned by root, writable by nobody else, and so is every
 *   directory above it (a sticky directory such as /tmp is tolerated above a root-owned
 *   entry): neither B nor an application's owner can replace it. ferryd creates it that
 *   way (mkdirat, then fchown/fchmod on the descriptor it opened) and refuses to start
 *   otherwise. Its mode is 0711, not 0700: a helper running as an application's user must
 *   pass through it to the spool it writes into (SQLite resolves the real path of its
 *   target, so handing it a descriptor does not work); nobody but root can list or change
 *   it, `journal/` is 0700, and each spool is a 0700 directory of its writer under a random
 *   name;
 * - it is held open as a descriptor for ferryd's whole life, and every name inside is
 *   reached with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS) from a
 *   held descriptor, never by re-resolving a path string;
 * - every directory ferryd makes inside it is created with mkdirat and handed, on the
 *   opened descriptor, to root or, for a spool a helper must write into, to that helper's
 *   user.
 *
 * In user mode (no capabilities) there is no privilege to protect: the directory is the
 * user's own, mode 0700.
 *
 * Longer than 300 lines on purpose: every rule about the root-owned state directory
 * (creation, ownership, the held descriptor, private subdirectories) is in this one file,
 * which docs/security.md points to.
 */
import { closeSync, fchmodSync, fchownSync } from "node:fs";
import { FerryError } from "./errors.js";
import { explain, openBeneath, RESOLVE_STRICT } from "./safe-fs.js";
import { idOf, removeDirIfSame } from "./safe-remove.js";
import {
  AT_FDCWD,
  mkdirAt,
  O_CLOEXEC,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_RDONLY,
  openat2,
  RESOLVE_NO_MAGICLINKS,
  RESOLVE_NO_SYMLINKS,
  readDir,
  S_IFDIR,
  S_IFMT,
  type Stat,
  SysError,
  statFd,
} from "./sys.js";

export interface StateDirOptions {
  /** ferryd holds capabilities: enforce root ownership. */
  privileged: boolean;
  /** ferryd's own uid (B). */
  uid: number;
}

function unsafe(path: string, why: string): FerryError {
  return new FerryError(
    "STATE_DIR_UNSAFE",
    `${path}: ${why}. ferryd keeps restore journals and spools there, so it must not be writable by the backup user: make it (and every directory above it) root-owned, e.g. 'install -d -o root -g root -m 0700 ${path}', and do not use StateDirectory= together with User= in the unit (see docs/ops.md)`,
  );
}

/** Root-owned and writable by root alone; then set to exactly 0711 (see the top). */
function checkFinal(at: string, st: Stat, fd: number): void {
  if (st.uid !== 0) throw unsafe(at, `it is owned by uid ${st.uid}, not root`);
  if ((st.mode & 0o022) !== 0) {
    throw unsafe(at, `its mode ${(st.mode & 0o7777).toString(8)} lets others write it`);
  }
  if ((st.mode & 0o7777) !== 0o711) fchmodSync(fd, 0o711);
}

export class StateDir {
  private readonly subdirs = new Map<string, number>();
  private closed = false;

  private constructor(
    /** Absolute path, for messages only: nothing is resolved through it after opening. */
    readonly path: string,
    /** Held descriptor of the state directory. */
    readonly fd: number,
    readonly options: StateDirOptions,
  ) {}

  /**
   * Opens (creating the last component if needed) and checks the state directory. Every
   * directory from `/` down is opened from its parent's descriptor without following
   * symlinks and checked on that descriptor.
   */
  static open(path: string, options: StateDirOptions): StateDir {
    if (!path.startsWith("/") || path.includes("\0")) {
      throw new FerryError("CONFIG_INVALID", `state_dir ${path}: must be an absolute path`);
    }
    const parts = path.split("/").filter((p) => p !== "" && p !== ".");
    if (parts.includes("..")) throw unsafe(path, "contains '..'");
    if (parts.length === 0) throw unsafe(path, "the root directory cannot be the state directory");
    const { privileged } = options;
    let fd = openat2(
      AT_FDCWD,
      "/",
      O_RDONLY | O_DIRECTORY | O_CLOEXEC,
      0,
      RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    );
    let at = "/";
    try {
      for (const [i, part] of parts.entries()) {
        const last = i === parts.length - 1;
        const next = `${at === "/" ? "" : at}/${part}`;
        let created = false;
        let sub: number;
        try {
          sub = openBeneath(fd, part, O_RDONLY | O_DIRECTORY);
        } catch (err) {
          if (!(err instanceof SysError) || err.errnoName !== "ENOENT" || !last) {
            throw unsafe(next, `cannot open it without following symlinks (${explain(err)})`);
          }
          try {
            mkdirAt(fd, part, 0o700);
          } catch (e) {
            throw new FerryError("STATE_DIR_UNSAFE", `cannot create ${next}: ${explain(e)}`, {
              cause: e,
            });
          }
          sub = openBeneath(fd, part, O_RDONLY | O_DIRECTORY);
          created = true;
        }
        const parent = statFd(fd);
        closeSync(fd);
        fd = sub;
        at = next;
        if (created) {
          // B's for an instant; nobody else can have reached it, since its parent is not
          // writable by B (checked just below, before anything inside is trusted).
          if (privileged) fchownSync(fd, 0, 0);
          fchmodSync(fd, 0o700);
        }
        const st = statFd(fd);
        if (!privileged) continue;
        // Every directory above is root's alone: not only the backup user but also an
        // application's owner must be unable to swap the state directory for their own.
        // A sticky directory (like /tmp) protects a root-owned entry from the others.
        const sticky = (parent.mode & 0o1000) !== 0;
        if (parent.uid !== 0 || ((parent.mode & 0o022) !== 0 && !(sticky && st.uid === 0))) {
          throw unsafe(at, "a directory above it is owned or writable by a user other than root");
        }
        if (last) checkFinal(at, st, fd);
      }
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    return new StateDir(path, fd, options);
  }

  /**
   * The held descriptor of the subdirectory `name` (a single component), created on first
   * use: root-owned (when privileged) with `mode`. An existing one must be a real
   * directory with that owner.
   */
  sub(name: string, mode = 0o700): number {
    const known = this.subdirs.get(name);
    if (known !== undefined) return known;
    const fd = makePrivateDir(this.fd, name, this.options, { existing: "check", mode }, this.path);
    this.subdirs.set(name, fd);
    return fd;
  }

  /** `path/name`, for messages. */
  describe(...names: string[]): string {
    return [this.path, ...names].join("/");
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const fd of this.subdirs.values()) closeSync(fd);
    this.subdirs.clear();
    closeSync(this.fd);
  }
}

/**
 * What `StateDir.open` would say about `path`, without creating or changing anything (for
 * `ferryd --check-config`): the problems that would stop ferryd from starting, and a note
 * when the directory does not exist yet (ferryd creates it; under systemd, tmpfiles does).
 */
export function inspectStateDir(
  path: string,
  privileged: boolean,
): { message: string; warning?: boolean }[] {
  const parts = path.split("/").filter((p) => p !== "" && p !== ".");
  if (!path.startsWith("/") || parts.length === 0 || parts.includes("..")) {
    return [{ message: `${path}: must be an absolute path below / without '..'` }];
  }
  let fd = openat2(
    AT_FDCWD,
    "/",
    O_RDONLY | O_DIRECTORY | O_CLOEXEC,
    0,
    RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
  );
  let at = "";
  try {
    for (const [i, part] of parts.entries()) {
      const last = i === parts.length - 1;
      at = `${at}/${part}`;
      let sub: number;
      try {
        sub = openBeneath(fd, part, O_RDONLY | O_DIRECTORY);
      } catch (err) {
        if (err instanceof SysError && err.errnoName === "ENOENT" && last) {
          return [
            {
              warning: true,
              message: `${path} does not exist yet: ferryd creates it at start${privileged ? " (root-owned; with ProtectSystem=strict only if it is in ReadWritePaths=, so create it with tmpfiles: deploy/ferry.tmpfiles)" : ""}`,
            },
          ];
        }
        return [
          { message: `${at}: cannot be opened without following symlinks (${explain(err)})` },
        ];
      }
      const parent = statFd(fd);
      closeSync(fd);
      fd = sub;
      if (!privileged) continue;
      const st = statFd(fd);
      const sticky = (parent.mode & 0o1000) !== 0;
      if (parent.uid !== 0 || ((parent.mode & 0o022) !== 0 && !(sticky && st.uid === 0))) {
        return [
          {
            message: unsafe(
              at,
              "a directory above it is owned or writable by a user other than root",
            ).message,
          },
        ];
      }
      if (last && st.uid !== 0) {
        return [{ message: unsafe(at, `it is owned by uid ${st.uid}, not root`).message }];
      }
      if (last && (st.mode & 0o022) !== 0) {
        return [
          {
            message: unsafe(at, `its mode ${(st.mode & 0o7777).toString(8)} lets others write it`)
              .message,
          },
        ];
      }
    }
  } finally {
    closeSync(fd);
  }
  return [];
}

/**
 * mkdirat(parentFd, name, 0700), then open it without following anything and hand it on
 * that descriptor to `owner` (default: root when privileged, ferryd itself otherwise) with
 * `mode` (default 0700). With `existing: "check"` an existing directory is accepted if its
 * owner is right and nobody else can write it (its mode is then set to `mode`); with
 * `"fail"` it is an error (EEXIST), for names that must be new.
 */
export function makePrivateDir(
  parentFd: number,
  name: string,
  options: Pick<StateDirOptions, "privileged" | "uid">,
  how: { existing: "check" | "fail"; owner?: { uid: number; gid: number }; mode?: number },
  where = "",
): number {
  let created = false;
  try {
    mkdirAt(parentFd, name, 0o700);
    created = true;
  } catch (err) {
    if (!(err instanceof SysError) || err.errnoName !== "EEXIST" || how.existing === "fail") {
      throw err;
    }
  }
  const fd = openat2(
    parentFd,
    name,
    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
    0,
    RESOLVE_STRICT | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
  );
  try {
    const want = how.owner ?? { uid: options.privileged ? 0 : options.uid, gid: 0 };
    const mode = how.mode ?? 0o700;
    let planted = false;
    const st = statFd(fd);
    if ((st.mode & S_IFMT) !== S_IFDIR) throw new Error("not a directory");
    if (created) {
      // Made by us an instant ago, so ours (the backup user's) until the fchown: in a
      // directory the backup user can watch (a restore's staging beside an app's data), it
      // could have entered it and planted names in that instant. After the fchown it can
      // no longer add any (a descriptor it opened before is checked again at every use),
      // so an empty directory now is ours alone; one that is not is refused and removed.
      if (st.uid !== options.uid) {
        throw new FerryError("STATE_DIR_UNSAFE", `${where}/${name} changed hands as it was made`);
      }
      if (want.uid !== st.uid || (options.privileged && want.gid !== st.gid)) {
        fchownSync(fd, want.uid, options.privileged ? want.gid : st.gid);
      }
      fchmodSync(fd, mode);
      planted = readDir(fd).length > 0;
    } else if (st.uid !== want.uid || (st.mode & 0o022) !== 0) {
      throw new FerryError(
        "STATE_DIR_UNSAFE",
        `${where}/${name} is owned by uid ${st.uid} with mode ${(st.mode & 0o7777).toString(8)}; expected uid ${want.uid}, writable by nobody else. Remove it (ferryd makes it again)`,
      );
    } else if ((st.mode & 0o7777) !== mode) {
      fchmodSync(fd, mode);
    }
    if (!planted) return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  // Only a new directory that was not empty gets here.
  const id = idOf(fd);
  closeSync(fd);
  removeDirIfSame(parentFd, name, id);
  throw new FerryError(
    "STATE_DIR_UNSAFE",
    `${where}/${name}: something was put into this new directory before ferryd handed it to root; refused and removed`,
  );
}
