/**
 * Opening a file that ferryd will trust: its config, and any file its config names (a
 * password file). One walk, used for all of them:
 *
 * 1. From `/`, every component of the path is looked at from the held descriptor of the
 *    directory above it (statx without following, then `openat2` with RESOLVE_NO_SYMLINKS
 *    | RESOLVE_NO_MAGICLINKS, O_PATH | O_DIRECTORY), and each directory is judged (fstat)
 *    before anything in it is opened or followed.
 * 2. A symlink in the administrator's path is followed by ferryd itself (readlinkat, then
 *    the walk goes on at the target), so `/etc/ferry/ferry.toml -> /srv/conf/ferry.toml`
 *    is judged by the directory holding the link AND by every directory the file really
 *    lives in: whoever can write either could change what ferryd reads. A name swapped
 *    after it was judged fails the open (ELOOP) or the inode comparison; nothing is ever
 *    resolved again by path.
 * 3. The file is opened O_RDONLY | O_NOFOLLOW | O_NONBLOCK from its held parent, checked
 *    with fstat (a regular file, the inode that was judged), and returned as a
 *    descriptor: callers read that descriptor, never the path.
 *
 * What counts as "writable by someone untrusted" is the policy:
 * - `{ kind: "not-uid", uid, gids }` (the config): nothing may be owned by `uid`, or
 *   writable by it through its owner, group or other bits.
 * - `{ kind: "root-only", owners }` (secrets): everything must be owned by one of `owners`
 *   (root; in user mode also ferryd's own uid) and writable by no group and no other; the
 *   file must also have a single link, so that it cannot be a second name of a file that
 *   lives somewhere else.
 * - `{ kind: "any" }` (user mode config): the same walk, no ownership rule.
 *
 * Files the config names are opened with `followLinks: false`: a symlink anywhere on
 * their path is refused.
 *
 * A sticky directory (like /tmp) that the untrusted side may write is fine when the entry
 * below it is not owned by the untrusted side: others may create names there but cannot
 * rename or remove ours. POSIX ACLs are not consulted; keep these directories free of
 * ACLs that grant write access.
 */
import { FerryError } from "./errors.js";
import {
  AT_FDCWD,
  closeFd,
  O_CLOEXEC,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_NONBLOCK,
  O_PATH,
  O_RDONLY,
  openat2,
  RESOLVE_NO_MAGICLINKS,
  RESOLVE_NO_SYMLINKS,
  readLinkAt,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  type Stat,
  SysError,
  statAt,
  statFd,
} from "./sys.js";

export type TrustPolicy =
  | { kind: "not-uid"; uid: number; gids: readonly number[] }
  | { kind: "root-only"; owners: readonly number[] }
  | { kind: "any" };

export interface TrustedFileOptions {
  policy: TrustPolicy;
  /** What the file is, for messages: "config", "password_file of app cache", … */
  purpose: string;
  /** Error code when the file or a directory is not trustworthy. */
  unsafeCode: "CONFIG_UNSAFE";
  /** Error code when the file cannot be found or opened. */
  unreadableCode: "CONFIG_INVALID";
  /** How to fix an unsafe file (appended to the message). */
  advice: string;
  /**
   * Follow symlinks in the path (default true; their directories are judged like the
   * rest). false: any symlink on the way is refused (files the config names).
   */
  followLinks?: boolean;
}

export interface TrustedFile {
  /** The open descriptor (O_RDONLY, close-on-exec); the caller closes it. */
  fd: number;
  /** fstat of `fd`. */
  stat: Stat;
  /** The real path that was walked (symlinks of the given path resolved). */
  realPath: string;
}

const WALK = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

function describeOwner(policy: TrustPolicy): string {
  switch (policy.kind) {
    case "not-uid":
      return `ferryd's own uid ${policy.uid}`;
    case "root-only":
      return policy.owners.length === 1 && policy.owners[0] === 0
        ? "a user other than root"
        : `a user other than ${policy.owners.map((o) => (o === 0 ? "root" : `uid ${o}`)).join(" or ")}`;
    case "any":
      return "";
  }
}

/**
 * Why `st` (the file, or a directory above it) is untrustworthy under `policy`, or
 * undefined when it is fine. `childOwner` is the owner of the entry below a directory.
 */
export function untrustedReason(
  policy: TrustPolicy,
  st: Stat,
  isFile: boolean,
  childOwner?: number,
): string | undefined {
  if (policy.kind === "any") return undefined;
  const isDir = (st.mode & S_IFMT) === S_IFDIR;
  const sticky = isDir && (st.mode & 0o1000) !== 0;
  const who = describeOwner(policy);
  if (policy.kind === "not-uid") {
    if (st.uid === policy.uid) return `owned by ${who}`;
    const writable =
      (policy.gids.includes(st.gid) && (st.mode & 0o020) !== 0) || (st.mode & 0o002) !== 0;
    if (writable && !(sticky && childOwner !== undefined && childOwner !== policy.uid)) {
      return `writable by ${who}`;
    }
    return undefined;
  }
  if (!policy.owners.includes(st.uid)) return `owned by uid ${st.uid}, ${who}`;
  if ((st.mode & 0o022) !== 0) {
    const shielded = sticky && childOwner !== undefined && policy.owners.includes(childOwner);
    if (!shielded) return `writable by its group or by everyone (mode ${octal(st.mode)})`;
  }
  if (isFile && st.nlink !== 1) {
    return `a file with ${st.nlink} hard links (it may be a second name of a file kept elsewhere)`;
  }
  return undefined;
}

function octal(mode: number): string {
  return (mode & 0o7777).toString(8).padStart(4, "0");
}

function why(err: unknown): string {
  if (err instanceof SysError) {
    if (err.errnoName === "ELOOP") return "too many symlinks, or one appeared while it was checked";
    if (err.errnoName === "ENOENT") return "no such file or directory";
    if (err.errnoName === "EACCES" || err.errnoName === "EPERM") return "permission denied";
    if (err.errnoName === "ENOTDIR") return "not a directory";
    return err.message;
  }
  return (err as NodeJS.ErrnoException).code ?? (err as Error).message;
}

/**
 * Opens `path` for reading after checking, under `opts.policy`, the file and every
 * directory the walk passes (those holding a symlink on the way, and those above the file's
 * real location). Throws `opts.unsafeCode` naming the first offending path,
 * or `opts.unreadableCode` when the file is missing or unreadable.
 */
export function openTrustedFile(path: string, opts: TrustedFileOptions): TrustedFile {
  if (!path.startsWith("/") || path.includes("\0")) {
    throw new FerryError(opts.unreadableCode, `${opts.purpose} ${path}: must be an absolute path`);
  }
  let shown = path;
  const unsafe = (at: string, reason: string) =>
    new FerryError(opts.unsafeCode, `${opts.purpose} ${shown}: ${at} is ${reason}. ${opts.advice}`);
  const stack: { fd: number; path: string }[] = [];
  let fileFd = -1;
  try {
    const rootFd = openat2(AT_FDCWD, "/", O_PATH | O_DIRECTORY | O_CLOEXEC, 0, WALK);
    stack.push({ fd: rootFd, path: "/" });
    const stats = [statFd(rootFd)];
    const queue = path.split("/");
    let links = 0;
    while (queue.length > 0) {
      const name = queue.shift() as string;
      if (name === "" || name === ".") continue;
      if (name === "..") {
        if (stack.length > 1) {
          closeFd((stack.pop() as { fd: number }).fd);
          stats.pop();
        }
        continue;
      }
      const top = stack[stack.length - 1] as { fd: number; path: string };
      const topStat = stats[stats.length - 1] as Stat;
      const childPath = top.path === "/" ? `/${name}` : `${top.path}/${name}`;
      // The directory is judged before anything in it is opened or followed: whoever can
      // write it decides what its names mean (including where a symlink in it points).
      const entry = statAt(top.fd, name);
      const dirWhy = untrustedReason(opts.policy, topStat, false, entry.uid);
      if (dirWhy !== undefined) throw unsafe(`directory ${top.path}`, dirWhy);
      const type = entry.mode & S_IFMT;
      if (type === S_IFLNK) {
        if (opts.followLinks === false) {
          throw unsafe(
            childPath,
            "a symlink; ferryd does not follow symlinks to files its config names: name the file itself",
          );
        }
        if (++links > 40) throw new SysError("openat2", 40, "ELOOP", path);
        const target = readLinkAt(top.fd, name).toString();
        if (target.startsWith("/")) {
          while (stack.length > 1) closeFd((stack.pop() as { fd: number }).fd);
          stats.length = 1;
        }
        queue.unshift(...target.split("/"));
        continue;
      }
      const last = !queue.some((n) => n !== "" && n !== ".");
      if (!last) {
        if (type !== S_IFDIR) throw new SysError("openat2", 20, "ENOTDIR", childPath);
        const fd = openat2(top.fd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC, 0, WALK);
        stack.push({ fd, path: childPath });
        const st = statFd(fd);
        stats.push(st);
        if (st.ino !== entry.ino || st.dev !== entry.dev) {
          throw unsafeOrInvalid(opts, path, `was changed while it was checked (${childPath})`);
        }
        continue;
      }
      if (childPath !== path) shown = `${path} (really ${childPath})`;
      if (type !== S_IFREG) throw unsafeOrInvalid(opts, shown, "is not a regular file");
      fileFd = openat2(top.fd, name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0, WALK);
      const st = statFd(fileFd);
      if ((st.mode & S_IFMT) !== S_IFREG || st.ino !== entry.ino || st.dev !== entry.dev) {
        throw unsafeOrInvalid(opts, shown, "was replaced while it was checked");
      }
      const fileWhy = untrustedReason(opts.policy, st, true);
      if (fileWhy !== undefined) throw unsafe("the file", fileWhy);
      const out = { fd: fileFd, stat: st, realPath: childPath };
      fileFd = -1;
      return out;
    }
    throw unsafeOrInvalid(opts, path, "is a directory");
  } catch (err) {
    if (err instanceof FerryError) throw err;
    throw new FerryError(opts.unreadableCode, `cannot read ${opts.purpose} ${shown}: ${why(err)}`, {
      cause: err,
    });
  } finally {
    for (const d of stack) closeFd(d.fd);
    if (fileFd >= 0) closeFd(fileFd);
  }
}

function unsafeOrInvalid(opts: TrustedFileOptions, shown: string, what: string): FerryError {
  return new FerryError(opts.unreadableCode, `${opts.purpose} ${shown} ${what}`);
}

/**
 * The policy for files that the config names and ferryd reads (secrets). With privilege
 * (uid 0, or any effective capability) only root may own or write them; in user mode
 * ferryd reads with its own rights only, so a file of its own uid is fine too.
 */
export function secretPolicy(uid: number, privileged: boolean): TrustPolicy {
  return { kind: "root-only", owners: privileged || uid === 0 ? [0] : [0, uid] };
}

export const SECRET_ADVICE =
  "A file that ferryd reads because its config names it must be a regular file owned by root, " +
  "with one link and mode 0600 or 0400, in directories only root can write " +
  "(for example /etc/ferry/secrets, root:root 0700); see docs/security.md.";
