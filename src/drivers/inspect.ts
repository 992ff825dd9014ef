/**
 * Checks of the machine against a validated application config, for `ferryd
 * --check-config`: do the declared paths exist with the right type and owner, are the
 * helper programs and hook programs installed, and safe to run as the application's user?
 * A config can be well-formed and still fail at 3 a.m. because `/srv/wiki/data` was
 * misspelt or sqlite3 was never installed; these catch that when the admin edits it.
 *
 * Read-only: nothing is created, changed or run. Declared paths are opened the way a
 * backup opens them (src/core/safe-fs.ts: no symlink anywhere on the way); programs are
 * found the way a helper is started (`findProgram`, the fixed SAFE_PATH) and judged by
 * their real file.
 */
import { closeSync, fstatSync, lstatSync, realpathSync, statSync } from "node:fs";
import { basename, dirname } from "node:path";
import { FerryError } from "../core/errors.js";
import { explain, openRoot } from "../core/safe-fs.js";
import { findSetpriv } from "../core/setpriv.js";
import { findProgram, type HelperUser, SAFE_PATH } from "../core/spawn.js";
import { S_IFDIR, S_IFMT, S_IFREG, S_IFSOCK, SysError, statAt } from "../core/sys.js";
import { groupName, userName } from "../core/users.js";
import type { ResolvedHooks } from "./common.js";

/** One finding, about a key of the application's table (relative to `[apps.NAME]`). */
export interface Finding {
  key: (string | number)[];
  message: string;
  /** Worth knowing, but the config is usable: it does not make the check fail. */
  warning?: boolean;
}

/** Who will use the config: ferryd's uid, and whether it holds capabilities. */
export interface InspectEnv {
  uid: number;
  privileged: boolean;
}

/** The Debian package that provides each helper program, named in the fix. */
const PACKAGES: Readonly<Record<string, string>> = {
  sqlite3: "sqlite3",
  pg_dump: "postgresql-client",
  pg_dumpall: "postgresql-client",
  pg_restore: "postgresql-client",
  psql: "postgresql-client",
  mariadb: "mariadb-client",
  "mariadb-dump": "mariadb-client",
  "redis-cli": "redis-tools",
  setpriv: "util-linux",
};

/** "install it (apt install PKG)" for a known helper program, else a generic hint. */
export function installHint(program: string): string {
  const pkg = PACKAGES[basename(program)];
  return pkg === undefined
    ? "install it, or give its absolute path"
    : `install it: apt install ${pkg}`;
}

function who(uid: number): string {
  const name = userName(uid);
  return name === String(uid) ? `uid ${uid}` : `${name} (uid ${uid})`;
}

function mode(m: number): string {
  return (m & 0o7777).toString(8).padStart(4, "0");
}

/**
 * A program a helper or hook runs, as `runAs`: installed (in SAFE_PATH, or the absolute
 * path given), a regular executable file, and changeable only by root or `runAs` itself —
 * whoever else could change it would run code as `runAs` at the next backup.
 */
export function inspectProgram(
  program: string,
  key: (string | number)[],
  runAs: HelperUser | undefined,
): Finding[] {
  let path: string;
  try {
    path = findProgram(program);
  } catch {
    return [
      {
        key,
        message: `${program} is not installed (searched ${SAFE_PATH}): ${installHint(program)}`,
      },
    ];
  }
  let real: string;
  let st: ReturnType<typeof statSync>;
  try {
    real = realpathSync(path);
    st = statSync(real);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    return [
      {
        key,
        message:
          code === "ENOENT"
            ? `${path} does not exist: ${program.startsWith("/") ? "install it or correct the path" : installHint(program)}`
            : `${path}: ${code ?? String(err)}`,
      },
    ];
  }
  const shown = real === path ? path : `${path} (${real})`;
  if (!st.isFile()) return [{ key, message: `${shown} is not a regular file` }];
  const out: Finding[] = [];
  if ((st.mode & 0o111) === 0) {
    out.push({ key, message: `${shown} is not executable (mode ${mode(st.mode)}): chmod +x it` });
  }
  const as = runAs === undefined ? "the application's user" : runAs.name;
  if (st.uid !== 0 && st.uid !== runAs?.uid) {
    out.push({
      key,
      message: `${shown} is owned by ${who(st.uid)}, who could change what runs as ${as}: make it root's (chown root: ${real})`,
    });
  }
  if ((st.mode & 0o022) !== 0) {
    out.push({
      key,
      message: `${shown} is writable by its group or others (mode ${mode(st.mode)}): anyone who can change it runs code as ${as} (chmod go-w ${real})`,
    });
  }
  return out;
}

/** The hook programs of an application, each judged as the user it runs as. */
export function inspectHooks(hooks: ResolvedHooks | undefined): Finding[] {
  if (hooks === undefined) return [];
  const out: Finding[] = [];
  for (const name of ["pre_backup", "post_backup", "pre_restore", "post_restore"] as const) {
    const argv = hooks[name];
    if (argv === undefined) continue;
    out.push(...inspectProgram(argv[0] as string, ["hooks", name], hooks.user));
  }
  return out;
}

/** setpriv, which every helper and hook starts through when ferryd holds capabilities. */
export function inspectSetpriv(env: InspectEnv): Finding[] {
  if (!env.privileged) return [];
  try {
    findSetpriv();
    return [];
  } catch {
    return [{ key: [], message: `setpriv is not installed: ${installHint("setpriv")}` }];
  }
}

function lstatOrUndefined(path: string): ReturnType<typeof lstatSync> | undefined {
  try {
    return lstatSync(path);
  } catch {
    return undefined;
  }
}

/** What `openRoot(path)` failing means, in words with the fix. */
function openProblem(path: string, err: unknown, what: string): string {
  const cause = err instanceof FerryError ? err.cause : err;
  if (cause instanceof SysError) {
    switch (cause.errnoName) {
      case "ENOENT":
        return `${path} does not exist: ${what === "" ? "" : `create it (${what}) or `}correct the path`;
      case "ELOOP":
        return `${path}: a symlink is on the way, and ferryd never follows symlinks in declared paths: declare the real path`;
      case "ENOTDIR": {
        // For the message only: what is at the path itself (O_NOFOLLOW|O_DIRECTORY says
        // ENOTDIR for a symlink and for a file alike).
        const at = lstatOrUndefined(path);
        if (at?.isSymbolicLink())
          return openProblem(path, new SysError("openat2", 40, "ELOOP"), what);
        if (at !== undefined) return `${path} is not a directory`;
        return `${path}: a component of it is not a directory`;
      }
    }
  }
  return `${path}: ${explain(cause)}`;
}

/**
 * A declared directory (a files application's root): it exists, without a symlink on the
 * way, is a directory, and belongs to the application's owner, which is what a restore
 * makes it. Its parent, where a restore stages, should be root's (docs/security.md, "What
 * Ferry does not defend against").
 */
export function inspectDirectory(
  path: string,
  key: (string | number)[],
  owner: { uid: number; gid: number; name: string },
): Finding[] {
  let fd: number;
  try {
    fd = openRoot(path);
  } catch (err) {
    return [
      {
        key,
        message: openProblem(path, err, `install -d -o ${owner.name} -g ${groupName(owner.gid)}`),
      },
    ];
  }
  const out: Finding[] = [];
  try {
    const st = fstatSync(fd);
    if ((st.mode & S_IFMT) !== S_IFDIR) return [{ key, message: `${path} is not a directory` }];
    if (st.uid !== owner.uid) {
      out.push({
        key,
        message: `${path} is owned by ${who(st.uid)}, not by the application's owner ${owner.name}: a restore gives everything to ${owner.name}; set owner to the user that owns the data`,
      });
    }
  } finally {
    closeSync(fd);
  }
  out.push(...inspectParent(dirname(path), key));
  return out;
}

/** A parent directory that someone other than root can write lets them rename the data. */
function inspectParent(parent: string, key: (string | number)[]): Finding[] {
  try {
    const st = statSync(parent);
    if (st.uid !== 0 || (st.mode & 0o022) !== 0) {
      return [
        {
          key,
          warning: true,
          message: `${parent} (where restores stage) is ${st.uid !== 0 ? `owned by ${who(st.uid)}` : `writable by others (mode ${mode(st.mode)})`}: whoever can write it can rename the application's data under ferryd; prefer a root-owned parent (docs/security.md)`,
        },
      ];
    }
  } catch {}
  return [];
}

/**
 * A declared regular file (an sqlite database): its directory opens without a symlink on
 * the way, and the file is a regular file of `owner`, the user sqlite3 runs as.
 */
export function inspectFile(
  path: string,
  key: (string | number)[],
  owner: { uid: number; name: string },
): Finding[] {
  let dirfd: number;
  try {
    dirfd = openRoot(dirname(path));
  } catch (err) {
    return [{ key, message: `the directory of ${path}: ${openProblem(dirname(path), err, "")}` }];
  }
  try {
    const st = statAt(dirfd, basename(path));
    if ((st.mode & S_IFMT) !== S_IFREG) {
      return [{ key, message: `${path} is not a regular file (a symlink or something else)` }];
    }
    const out: Finding[] = [];
    if (st.uid !== owner.uid) {
      out.push({
        key,
        message: `${path} is owned by ${who(st.uid)}, not ${owner.name}, the user the backup runs as: set owner to the database's owner`,
      });
    }
    if ((st.mode & 0o600) !== 0o600 && st.uid === owner.uid) {
      out.push({
        key,
        message: `${path} has mode ${mode(st.mode)}: its owner ${owner.name}, as whom the backup runs, cannot read and write it (chmod u+rw)`,
      });
    }
    out.push(...inspectParent(dirname(path), key));
    return out;
  } catch (err) {
    if (err instanceof SysError && err.errnoName === "ENOENT") {
      return [{ key, message: `${path} does not exist: correct the path, or create the database` }];
    }
    return [{ key, message: `${path}: ${explain(err)}` }];
  } finally {
    closeSync(dirfd);
  }
}

/** A Unix socket a server or agent listens on; absent is a warning (it may be down). */
export function inspectSocket(path: string, key: (string | number)[], what: string): Finding[] {
  try {
    const st = statSync(path);
    if ((st.mode & S_IFMT) !== S_IFSOCK) return [{ key, message: `${path} is not a socket` }];
    return [];
  } catch (err) {
    return [
      {
        key,
        warning: true,
        message: `${path}: ${(err as NodeJS.ErrnoException).code ?? String(err)} — is ${what} running?`,
      },
    ];
  }
}
