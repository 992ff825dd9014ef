/**
 * The Linux system calls Node does not expose, bound with koffi.
 *
 * Everything here is synchronous and cheap (metadata calls); bulk I/O goes through Node's
 * own `fs` functions on the descriptors these calls return. Every call returns plain
 * values or throws a `SysError` carrying errno, so callers never see -1.
 *
 * Only Linux is supported: openat2 (5.6+) is the foundation of every filesystem rule in
 * docs/security.md, and there is no safe fallback for kernels without it.
 *
 * Longer than 300 lines on purpose: every binding of libc lives here, with its constants,
 * so that the one errno convention (SysError) and the one place that decodes kernel
 * structures (statx, dirents, ucred) are checked together; each binding is a few lines.
 */
import koffi from "koffi";
import { libc } from "./libc.js";

export class SysError extends Error {
  constructor(
    readonly syscall: string,
    readonly errno: number,
    readonly errnoName: string,
    readonly target?: string,
  ) {
    super(`${syscall}${target === undefined ? "" : ` ${JSON.stringify(target)}`}: ${errnoName}`);
    this.name = "SysError";
  }
}

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(koffi.os.errno)) {
  if (!errnoNames.has(value)) errnoNames.set(value, name);
}

export const E = koffi.os.errno as Record<string, number>;

function fail(syscall: string, target?: Name): never {
  const errno = koffi.errno();
  throw new SysError(
    syscall,
    errno,
    errnoNames.get(errno) ?? `errno ${errno}`,
    target === undefined ? undefined : nameText(target),
  );
}

/**
 * A name or path as the kernel sees it. Linux names are bytes and need not be UTF-8, so
 * every call that takes one accepts a Buffer (the exact bytes, e.g. from `readDir`) as
 * well as a string (encoded as UTF-8). Text is only for messages; bytes decide what is
 * touched.
 */
export type Name = string | Buffer;

const NUL = Buffer.alloc(1);

/** The NUL-terminated bytes koffi hands to a `const char *` parameter. */
function cstr(n: Name): string | Buffer {
  if (typeof n === "string") return n;
  if (n.includes(0)) throw new SysError("name", E.EINVAL ?? 22, "EINVAL", nameText(n));
  return Buffer.concat([n, NUL]);
}

/** A name for messages only: UTF-8 where it is, with invalid bytes shown as \xNN. */
export function nameText(n: Name): string {
  if (typeof n === "string") return n;
  const text = n.toString("utf8");
  if (Buffer.from(text).equals(n) && !text.startsWith("\ufeff")) return text;
  let out = "";
  for (const b of n)
    out +=
      b >= 0x20 && b < 0x7f && b !== 0x5c
        ? String.fromCharCode(b)
        : `\\x${b.toString(16).padStart(2, "0")}`;
  return out;
}

// --- constants (Linux, identical on x86_64 and aarch64) ---------------------------------

export const O_RDONLY = 0;
export const O_WRONLY = 0o1;
export const O_RDWR = 0o2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_NOCTTY = 0o400;
export const O_TRUNC = 0o1000;
export const O_NONBLOCK = 0o4000;
export const O_DIRECTORY = 0o200000;
export const O_NOFOLLOW = 0o400000;
export const O_CLOEXEC = 0o2000000;
export const O_PATH = 0o10000000;

export const RESOLVE_NO_XDEV = 0x01;
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_NO_SYMLINKS = 0x04;
export const RESOLVE_BENEATH = 0x08;

export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_EMPTY_PATH = 0x1000;

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

const SOL_SOCKET = 1;
const SO_PEERCRED = 17;
const SYS_openat2 = 437;
const STATX_BASIC_STATS = 0x7ff;

// --- bindings ----------------------------------------------------------------------------

const c = {
  syscall: libc.func("long syscall(long number, ...)"),
  getsockopt: libc.func("int getsockopt(int, int, int, _Inout_ void *, _Inout_ uint32_t *)"),
  // A plain `void *`: koffi passes the Buffer's memory, which statx fills. `_Inout_` would
  // do the same at twice the cost per call, and this is called once per file in a walk.
  statx: libc.func("int statx(int, const char *, int, uint32_t, void *)"),
  getdents64: libc.func("intptr_t getdents64(int, _Inout_ void *, size_t)"),
  readlinkat: libc.func("intptr_t readlinkat(int, const char *, _Inout_ void *, size_t)"),
  mkdirat: libc.func("int mkdirat(int, const char *, uint32_t)"),
  symlinkat: libc.func("int symlinkat(const char *, int, const char *)"),
  linkat: libc.func("int linkat(int, const char *, int, const char *, int)"),
  unlinkat: libc.func("int unlinkat(int, const char *, int)"),
  renameat2: libc.func("int renameat2(int, const char *, int, const char *, uint32_t)"),
  fchownat: libc.func("int fchownat(int, const char *, uint32_t, uint32_t, int)"),
  socketpair: libc.func("int socketpair(int, int, int, _Out_ int *sv)"),
  utimensat: libc.func("int utimensat(int, const char *, _In_ void *, int)"),
  syncfs: libc.func("int syncfs(int)"),
  futimens: libc.func("int futimens(int, _In_ void *)"),
  lseek: libc.func("int64_t lseek(int, int64_t, int)"),
  preadv2: libc.func("intptr_t preadv2(int, const void *, int, int64_t, int)"),
  // memset with a length of 0 writes nothing and returns its first argument: the address of
  // the memory koffi passes for a Buffer (a plain `void *` passes the Buffer's own memory).
  addressOf: libc.func("uintptr_t memset(void *, int, size_t)"),
  close: libc.func("int close(int)"),
};

// --- reads that never wait --------------------------------------------------------------

const RWF_NOWAIT = 0x8;
const iov = Buffer.alloc(16);

/**
 * pread(2) of what is already in the page cache, with preadv2(RWF_NOWAIT): the bytes read
 * (possibly fewer than asked, 0 at end of file), or -1 when the read would have to wait
 * for a disk or a network, or the file system cannot say (EAGAIN, EOPNOTSUPP; FUSE and
 * some network file systems answer so at once) — then the caller reads on the thread pool,
 * where a read that never returns holds only that read. `buf` must be memory V8 does not
 * move (any Buffer of 64 bytes or more lives outside the heap).
 */
export function preadCached(
  fd: number,
  buf: Buffer,
  off: number,
  len: number,
  pos: number,
): number {
  if (buf.byteLength < 64 || len === 0) return -1;
  const base = Number(c.addressOf(buf, 0, 0));
  iov.writeBigUInt64LE(BigInt(base + off), 0);
  iov.writeBigUInt64LE(BigInt(len), 8);
  const n = Number(c.preadv2(fd, iov, 1, pos, RWF_NOWAIT));
  return n >= 0 ? n : -1;
}

// --- peer credentials -------------------------------------------------------------------

export interface PeerCred {
  pid: number;
  uid: number;
  gid: number;
}

/** getsockopt(SO_PEERCRED) on a connected Unix socket. Throws on any failure. */
export function getPeerCred(fd: number): PeerCred {
  if (!Number.isInteger(fd) || fd < 0) throw new SysError("getsockopt", E.EBADF ?? 9, "EBADF");
  const buf = Buffer.alloc(12);
  const len = [12];
  if (c.getsockopt(fd, SOL_SOCKET, SO_PEERCRED, buf, len) !== 0) fail("getsockopt");
  if (len[0] !== 12) throw new SysError("getsockopt", E.EINVAL ?? 22, "EINVAL");
  return { pid: buf.readInt32LE(0), uid: buf.readUInt32LE(4), gid: buf.readUInt32LE(8) };
}

// --- openat2 ----------------------------------------------------------------------------

/** openat2(2): resolve `path` relative to `dirfd` under the given RESOLVE_* rules. */
export function openat2(
  dirfd: number,
  path: Name,
  flags: number,
  mode: number,
  resolve: number,
): number {
  const p = cstr(path);
  const pType = typeof p === "string" ? "str" : "void *";
  const how = Buffer.alloc(24);
  how.writeBigUInt64LE(BigInt(flags), 0);
  how.writeBigUInt64LE(BigInt(mode), 8);
  how.writeBigUInt64LE(BigInt(resolve), 16);
  for (;;) {
    const fd = Number(c.syscall(SYS_openat2, "int", dirfd, pType, p, "void *", how, "size_t", 24));
    if (fd >= 0) return fd;
    // EAGAIN: the kernel saw a concurrent rename and refuses to guess; asking again is safe.
    if (koffi.errno() === E.EAGAIN) continue;
    fail("openat2", path);
  }
}

// --- statx ------------------------------------------------------------------------------

export interface Stat {
  mode: number; // type and permission bits
  uid: number;
  gid: number;
  nlink: number;
  ino: bigint;
  dev: string; // "major:minor"
  size: number;
  mtimeSec: number;
  mtimeNsec: number;
  /** Inode change time: set by the kernel on every write, chmod, chown, link or rename; nobody can set it back. */
  ctimeSec: number;
  ctimeNsec: number;
  rdevMajor: number;
  rdevMinor: number;
}

function decodeStatx(b: Buffer): Stat {
  return {
    nlink: b.readUInt32LE(16),
    uid: b.readUInt32LE(20),
    gid: b.readUInt32LE(24),
    mode: b.readUInt16LE(28),
    ino: b.readBigUInt64LE(32),
    size: Number(b.readBigUInt64LE(40)),
    mtimeSec: Number(b.readBigInt64LE(112)),
    mtimeNsec: b.readUInt32LE(120),
    ctimeSec: Number(b.readBigInt64LE(96)),
    ctimeNsec: b.readUInt32LE(104),
    rdevMajor: b.readUInt32LE(128),
    rdevMinor: b.readUInt32LE(132),
    dev: `${b.readUInt32LE(136)}:${b.readUInt32LE(140)}`,
  };
}

/**
 * The statx result buffer, reused: it is decoded before the call returns, and a fresh
 * 256-byte buffer per call was a malloc per file that glibc kept as resident memory.
 */
const statxBuf = Buffer.alloc(256);

/** fstatat without following a final symlink; `name` must be a single component. */
export function statAt(dirfd: number, name: Name): Stat {
  const b = statxBuf;
  if (c.statx(dirfd, cstr(name), AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, b) !== 0)
    fail("statx", name);
  return decodeStatx(b);
}

/** fstat of an open descriptor (also works for O_PATH descriptors). */
export function statFd(fd: number): Stat {
  const b = statxBuf;
  if (c.statx(fd, "", AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_STATS, b) !== 0) {
    fail("statx");
  }
  return decodeStatx(b);
}

// --- directory listing ------------------------------------------------------------------

export interface Dirent {
  name: Buffer; // raw bytes: Linux names need not be UTF-8
  type: number; // DT_* (0 = unknown)
}

export const DT_DIR = 4;
export const DT_REG = 8;
export const DT_LNK = 10;

/**
 * All entries of the directory open at `fd` except `.` and `..`, via getdents64. Reads
 * from the start every time (rewinds the descriptor), so it can be called again after
 * entries were removed.
 */
export function readDir(fd: number): Dirent[] {
  rewindDir(fd);
  const out: Dirent[] = [];
  const buf = Buffer.alloc(64 * 1024);
  for (;;) {
    const batch = readDirBatch(fd, buf);
    if (batch.length === 0) return out;
    for (const d of batch) out.push(d);
  }
}
const DOTDOT = Buffer.from("..");

/** Rewinds a directory descriptor, so the next readDirBatch starts from its first entry. */
export function rewindDir(fd: number): void {
  if (Number(c.lseek(fd, 0, 0)) < 0) fail("lseek");
}

/**
 * One getdents64 call from the descriptor's current position into `buf`: the next batch
 * of entries (without `.` and `..`), or [] at the end. For walking huge directories
 * without listing them into memory at once.
 */
export function readDirBatch(fd: number, buf: Buffer): Dirent[] {
  const out: Dirent[] = [];
  for (;;) {
    const n = Number(c.getdents64(fd, buf, buf.length));
    if (n < 0) fail("getdents64");
    if (n === 0) return out;
    let off = 0;
    while (off < n) {
      const reclen = buf.readUInt16LE(off + 16);
      const type = buf.readUInt8(off + 18);
      const nameStart = off + 19;
      let nameEnd = nameStart;
      while (nameEnd < off + reclen && buf[nameEnd] !== 0) nameEnd++;
      const name = Buffer.from(buf.subarray(nameStart, nameEnd));
      off += reclen;
      if ((name.length === 1 && name[0] === 0x2e) || (name.length === 2 && name.equals(DOTDOT))) {
        continue;
      }
      out.push({ name, type });
    }
    if (out.length > 0) return out;
  }
}

// --- links, directories, renames, owners ------------------------------------------------

/** readlinkat: the target text of the symlink `name` in `dirfd`, as raw bytes. */
export function readLinkAt(dirfd: number, name: Name): Buffer {
  const buf = Buffer.alloc(4097);
  const n = Number(c.readlinkat(dirfd, cstr(name), buf, buf.length));
  if (n < 0) fail("readlinkat", name);
  if (n >= buf.length)
    throw new SysError("readlinkat", E.ENAMETOOLONG ?? 36, "ENAMETOOLONG", nameText(name));
  return Buffer.from(buf.subarray(0, n));
}

export function mkdirAt(dirfd: number, name: Name, mode: number): void {
  if (c.mkdirat(dirfd, cstr(name), mode) !== 0) fail("mkdirat", name);
}

export function symlinkAt(target: Name, dirfd: number, name: Name): void {
  if (c.symlinkat(cstr(target), dirfd, cstr(name)) !== 0) fail("symlinkat", name);
}

/** linkat without AT_SYMLINK_FOLLOW: links exactly the inode named, never a link's target. */
export function linkAt(oldDirfd: number, oldName: Name, newDirfd: number, newName: Name): void {
  if (c.linkat(oldDirfd, cstr(oldName), newDirfd, cstr(newName), 0) !== 0) fail("linkat", newName);
}

export function unlinkAt(dirfd: number, name: Name, removeDir: boolean): void {
  if (c.unlinkat(dirfd, cstr(name), removeDir ? AT_REMOVEDIR : 0) !== 0) fail("unlinkat", name);
}

export function renameAt2(
  oldDirfd: number,
  oldName: Name,
  newDirfd: number,
  newName: Name,
  flags: number,
): void {
  if (c.renameat2(oldDirfd, cstr(oldName), newDirfd, cstr(newName), flags) !== 0)
    fail("renameat2", newName);
}

/** lchown relative to a directory descriptor (never follows a symlink). */
export function lchownAt(dirfd: number, name: Name, uid: number, gid: number): void {
  if (c.fchownat(dirfd, cstr(name), uid, gid, AT_SYMLINK_NOFOLLOW) !== 0) fail("fchownat", name);
}

/**
 * utimensat on `name` in `dirfd` without following a symlink; `name` "" with AT_EMPTY_PATH
 * is not supported by utimensat, so pass the entry's own name.
 */
export function setTimesAt(dirfd: number, name: Name, sec: number, nsec: number): void {
  const ts = Buffer.alloc(32);
  // atime = mtime: Ferry archives carry only the modification time.
  for (const off of [0, 16]) {
    ts.writeBigInt64LE(BigInt(sec), off);
    ts.writeBigInt64LE(BigInt(nsec), off + 8);
  }
  if (c.utimensat(dirfd, cstr(name), ts, AT_SYMLINK_NOFOLLOW) !== 0) fail("utimensat", name);
}

/** futimens: set atime and mtime (= mtime) of an open descriptor, to the nanosecond. */
export function setTimesFd(fd: number, sec: number, nsec: number): void {
  const ts = Buffer.alloc(32);
  for (const off of [0, 16]) {
    ts.writeBigInt64LE(BigInt(sec), off);
    ts.writeBigInt64LE(BigInt(nsec), off + 8);
  }
  if (c.futimens(fd, ts) !== 0) fail("futimens");
}

/** syncfs: flush the whole filesystem holding `fd` (one call instead of one fsync per file). */
export function syncFs(fd: number): void {
  if (c.syncfs(fd) !== 0) fail("syncfs");
}

export function closeFd(fd: number): void {
  c.close(fd);
}

/** socketpair(AF_UNIX, SOCK_STREAM|SOCK_CLOEXEC): two connected descriptors. */
export function socketPair(): [number, number] {
  const sv = [0, 0];
  const AF_UNIX = 1;
  const SOCK_STREAM = 1;
  const SOCK_CLOEXEC = 0o2000000;
  if (c.socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) !== 0) fail("socketpair");
  return [sv[0] as number, sv[1] as number];
}

// --- inherited descriptors --------------------------------------------------------------

const SYS_close_range = 436; // the same number on every Linux architecture (5.9+)
const CLOSE_RANGE_CLOEXEC = 4; // 5.11+
const F_GETFD = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
const fcntlInt = libc.func("int fcntl(int, int, int)");

/**
 * Marks every open descriptor from `first` up close-on-exec, so none reaches a program
 * ferryd starts: close_range(first, ~0U, CLOSE_RANGE_CLOEXEC). On a kernel without the
 * flag (before 5.11) each descriptor listed in /proc/self/fd is marked with fcntl instead.
 * Returns how the marking was done (for the start-up log).
 */
export function closeRangeCloexec(first: number): "close_range" | "fcntl" {
  if (!Number.isInteger(first) || first < 0) throw new RangeError(`bad descriptor ${first}`);
  const r = Number(
    c.syscall(
      SYS_close_range,
      "unsigned int",
      first,
      "unsigned int",
      0xffffffff,
      "unsigned int",
      CLOSE_RANGE_CLOEXEC,
    ),
  );
  if (r === 0) return "close_range";
  const errno = koffi.errno();
  if (errno !== E.ENOSYS && errno !== E.EINVAL) fail("close_range");
  const dir = openat2(AT_FDCWD, "/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, 0);
  try {
    for (const e of readDir(dir)) {
      const fd = Number(e.name.toString());
      if (!Number.isInteger(fd) || fd < first || fd === dir) continue;
      const flags = fcntlInt(fd, F_GETFD, 0) as number;
      if (flags >= 0) fcntlInt(fd, F_SETFD, flags | FD_CLOEXEC);
    }
  } finally {
    c.close(dir);
  }
  return "fcntl";
}

/** Whether descriptor `fd` is open and marked close-on-exec (undefined when not open). */
export function isCloexec(fd: number): boolean | undefined {
  const flags = fcntlInt(fd, F_GETFD, 0) as number;
  return flags < 0 ? undefined : (flags & FD_CLOEXEC) !== 0;
}
