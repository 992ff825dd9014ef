/**
 * Walks one application root with held directory descriptors.
 *
 * For every name in a directory: statx it (no follow), then open it with
 * openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) from the parent's descriptor and fstat what
 * was opened. The fstat result is authoritative: if the application's user swapped the
 * name for a symlink between the two calls the open fails (ELOOP) and the entry is skipped
 * with a warning; if it swapped in another directory or file, that object is what gets
 * read — it is, by construction, inside the root. Nothing outside the root is ever opened.
 *
 * Output order is deterministic: depth-first, names sorted bytewise.
 */
import { closeSync } from "node:fs";
import type { TarHeader } from "../../core/archive/tar.js";
import { explain, openDirBeneath, openFileBeneath } from "../../core/safe-fs.js";
import {
  DT_REG,
  readDir,
  readLinkAt,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  type Stat,
  statAt,
  statFd,
} from "../../core/sys.js";
import { groupName, userName } from "../../core/users.js";

/** An entry to write: a header, and for regular files an open descriptor to read. */
export interface PlannedEntry {
  header: TarHeader;
  fd?: number;
  /**
   * For regular files: the stat the header was made from (since-index.ts): the fstat of
   * `fd`, or the statx of the name of a file planned without reading it (`Unread`).
   */
  stat?: Stat;
}

// ignoreBOM: a leading U+FEFF is part of a name, not a byte-order mark to strip.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function header(path: string, st: Stat, type: TarHeader["type"], linkpath = ""): TarHeader {
  return {
    path,
    type,
    mode: st.mode & 0o7777,
    uid: st.uid,
    gid: st.gid,
    uname: userName(st.uid),
    gname: groupName(st.gid),
    size: type === "file" ? st.size : 0,
    mtimeSec: st.mtimeSec,
    mtimeNsec: st.mtimeNsec,
    linkpath,
  };
}

interface Name {
  name: string;
  type: number; // DT_* from getdents64: a hint, never trusted (see the walk)
}

interface Frame {
  fd: number;
  path: string; // archive path of this directory, ending in "/"
  names: Name[];
  next: number;
}

/**
 * Yields the root directory itself, then everything below it. `links` maps dev:ino of
 * multiply-linked files to the archive path of their first occurrence (shared across
 * roots so hardlinks between declared paths are kept too). Descriptors of directories are
 * closed as the walk leaves them, also when the consumer stops early.
 */
export function* walkRoot(
  rootFd: number,
  prefix: string,
  warnings: string[],
  links: Map<string, string>,
  unread?: Unread,
): Generator<PlannedEntry> {
  const rootStat = statFd(rootFd);
  yield { header: header(prefix, rootStat, "dir") };
  const stack: Frame[] = [
    { fd: rootFd, path: prefix, names: listNames(rootFd, prefix, warnings), next: 0 },
  ];
  try {
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as Frame;
      if (top.next >= top.names.length) {
        stack.pop();
        if (top.fd !== rootFd) closeSync(top.fd);
        continue;
      }
      const { name, type } = top.names[top.next++] as Name;
      const path = top.path + name;
      // One statx per file: getdents64 already says what a name is, so a regular file is
      // opened straight away and the fstat of what was opened decides (the type is only
      // a hint: if the name was swapped meanwhile, the opened object's own type is what
      // counts, and a symlink cannot be opened at all). Anything else is statx'd by name.
      if (type === DT_REG && unread === undefined) {
        const planned = openPlannedFile(top.fd, name, path, warnings, links);
        if (planned !== undefined) yield planned;
        continue;
      }
      let st: Stat;
      try {
        st = statAt(top.fd, name);
      } catch (err) {
        warnings.push(`${path}: skipped, ${explain(err)}`);
        continue;
      }
      switch (st.mode & S_IFMT) {
        case S_IFDIR: {
          let fd: number;
          try {
            fd = openDirBeneath(top.fd, name);
          } catch (err) {
            warnings.push(`${path}/: skipped, it changed while being read (${explain(err)})`);
            continue;
          }
          const opened = statFd(fd);
          yield { header: header(`${path}/`, opened, "dir") };
          stack.push({ fd, path: `${path}/`, names: listNames(fd, `${path}/`, warnings), next: 0 });
          break;
        }
        case S_IFREG: {
          const planned = unread?.(path, st)
            ? planUnread(path, st, links)
            : openPlannedFile(top.fd, name, path, warnings, links);
          if (planned !== undefined) yield planned;
          break;
        }
        case S_IFLNK: {
          let target: string;
          try {
            target = utf8.decode(readLinkAt(top.fd, name));
          } catch (err) {
            warnings.push(`${path}: skipped symlink (${explain(err)})`);
            continue;
          }
          yield { header: header(path, st, "symlink", target) };
          break;
        }
        case S_IFSOCK:
        case S_IFIFO:
        case S_IFCHR:
        case S_IFBLK:
          warnings.push(`${path}: skipped, ${describeSpecial(st.mode)} are not backed up`);
          break;
        default:
          warnings.push(`${path}: skipped, unknown file type`);
      }
    }
  } finally {
    for (const f of stack) if (f.fd !== rootFd) closeSync(f.fd);
  }
}

/**
 * Asked, in an incremental backup (since-index.ts), before a regular file is opened: given
 * the statx of its name, true when its content need not be read. Its entry is then planned
 * from that statx, without opening it (one system call instead of three).
 */
export type Unread = (path: string, st: Stat) => boolean;

/** The entry of a regular file that is not read: from its statx, without a descriptor. */
function planUnread(path: string, st: Stat, links: Map<string, string>): PlannedEntry {
  if (st.nlink > 1) {
    const key = `${st.dev}:${st.ino}`;
    const first = links.get(key);
    if (first !== undefined) return { header: header(path, st, "hardlink", first) };
    links.set(key, path);
  }
  return { header: header(path, st, "file"), stat: st };
}

/**
 * Opens the regular file `name` (no symlinks, beneath `dirFd`) and plans its entry from
 * the fstat of what was opened; undefined (with a warning) when it is gone or no longer a
 * regular file. A second link to an inode seen before becomes a hardlink entry.
 */
function openPlannedFile(
  dirFd: number,
  name: string,
  path: string,
  warnings: string[],
  links: Map<string, string>,
): PlannedEntry | undefined {
  let fd: number;
  try {
    fd = openFileBeneath(dirFd, name);
  } catch (err) {
    warnings.push(`${path}: skipped, it changed while being read (${explain(err)})`);
    return undefined;
  }
  let opened: Stat;
  try {
    opened = statFd(fd);
  } catch (err) {
    closeSync(fd);
    throw err;
  }
  if ((opened.mode & S_IFMT) !== S_IFREG) {
    closeSync(fd);
    warnings.push(`${path}: skipped, it was replaced by a non-file while being read`);
    return undefined;
  }
  if (opened.nlink > 1) {
    const key = `${opened.dev}:${opened.ino}`;
    const first = links.get(key);
    if (first !== undefined) {
      closeSync(fd);
      return { header: header(path, opened, "hardlink", first) };
    }
    links.set(key, path);
  }
  return { header: header(path, opened, "file"), fd, stat: opened };
}

function describeSpecial(mode: number): string {
  switch (mode & S_IFMT) {
    case S_IFSOCK:
      return "sockets";
    case S_IFIFO:
      return "FIFOs";
    default:
      return "device nodes";
  }
}

/** Names of a directory, sorted bytewise; names that are not UTF-8 are skipped with a warning. */
function listNames(fd: number, path: string, warnings: string[]): Name[] {
  const raw = readDir(fd);
  raw.sort((a, b) => Buffer.compare(a.name, b.name));
  const names: Name[] = [];
  for (const d of raw) {
    try {
      names.push({ name: utf8.decode(d.name), type: d.type });
    } catch {
      warnings.push(`${path}${d.name.toString("latin1")}: skipped, its name is not valid UTF-8`);
    }
  }
  return names;
}
