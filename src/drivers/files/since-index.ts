/**
 * ferryd's memory of what it sent, for incremental backups (`POST /v1/apps/{app}/backup
 * ?since=TOKEN`, docs/api.yaml; the rules in docs/security.md, "Backup indexes").
 *
 * After a complete backup of a files app, ferryd keeps an **index** of the regular files
 * the archive holds: path, size, mtime and ctime to the nanosecond, inode, device, and the
 * entry's position in the archive. It is named by a random 128-bit token, which the end
 * record carries. A later backup that names the token compares each regular file's fstat
 * with the index and, when all six fields are equal, sends the entry's header marked
 * unchanged (tar.ts, `FERRY.unchanged`) instead of reading the file: ferryd never reads
 * an unchanged file's content.
 *
 * Why ctime: the application's owner can set mtime to anything (`touch -d`), but every
 * write, chmod, chown, link count change or rename sets ctime to the kernel's clock, and
 * nobody but the clock's owner can set it back. Inode and device catch a file replaced by
 * another one. A file whose ctime is within RACY_SECONDS of ferryd's clock when it was
 * opened is read in full next time again (not indexed): a write in the same clock tick
 * after the fstat could otherwise leave ctime as it was (git's "racy clean" problem).
 *
 * Where and how (the ownership rule of docs/security.md):
 * - `<state_dir>/since/<app>/<token>`: `since/` and each app's directory are made with
 *   mkdirat from the held state directory and handed on their descriptor to root, mode
 *   0700 (`makePrivateDir`, which refuses an existing one owned or writable by anyone
 *   else); the backup user cannot enter them, let alone write an index.
 * - An index is written to `.tmp-<token>` made O_CREAT|O_EXCL|O_NOFOLLOW from the held
 *   app directory and handed to root (fchown on the descriptor), fsynced, renamed to its
 *   token (RENAME_NOREPLACE) and the directory fsynced — before the end record naming it
 *   is sent. A ferryd killed at any point leaves a `.tmp-` file (removed at the next
 *   start) or a complete index; a token whose index is gone gives a full backup.
 * - It is read with O_NOFOLLOW from the held app directory, only if it is a regular file
 *   with one link, owned by root (in user mode: ferryd's uid) and writable by nobody
 *   else, at most MAX_INDEX_BYTES; its SHA-256 trailer must verify, and its header must
 *   name this app, this token and exactly the app's declared paths in order. Anything else
 *   is logged, removed, and the backup is full. A token is only ever looked up in the
 *   requesting app's own directory, and must be 32 lowercase hex digits (the daemon
 *   refuses anything else before a name is formed from it).
 *
 * Bounds, per app: at most MAX_INDEXES_PER_APP (8) indexes and MAX_APP_INDEX_BYTES
 * (256 MiB) together, the newest kept (older ones are removed when a new one is kept);
 * each at most MAX_INDEX_BYTES (64 MiB: 54 bytes + the path's length per file, so about
 * 500,000 files at typical path lengths). A backup whose index would be larger keeps
 * none, says so in a warning, and the next backup is full. Every complete backup keeps
 * an index, `ferry export` included, so a repository's next backup is a delta as long as
 * fewer than 8 other backups of the app were made in between. A backup compares with
 * one index held in memory (its bytes plus 4 bytes per slot of an open-addressing table,
 * 2 slots per file).
 *
 * Format (little-endian): "FERRYSI1", u32 header length, header JSON {version, app, token,
 * paths, created}; per file: u16 path length, path (UTF-8), u64 size, i64 mtime seconds,
 * u32 mtime ns, i64 ctime seconds, u32 ctime ns, u64 inode, u32 device major, u32 device
 * minor, u32 position; trailer: "FSIE", u32 file count, SHA-256 of every byte before it.
 *
 * Longer than 300 lines on purpose: the index's byte format, its root-owned storage and
 * every check made before one is trusted sit together, so that what is written and what
 * is verified are read side by side.
 */
import { createHash, randomBytes } from "node:crypto";
import { closeSync, fchownSync, fsyncSync, readSync, writeSync } from "node:fs";
import { isDeepStrictEqual } from "node:util";
import { SINCE_TOKEN } from "../../api/types.js";
import { FerryError } from "../../core/errors.js";
import type { Logger } from "../../core/log.js";
import { explain, openBeneath } from "../../core/safe-fs.js";
import { removeTreeAt } from "../../core/safe-remove.js";
import { makePrivateDir, type StateDir } from "../../core/state-dir.js";
import {
  O_CREAT,
  O_EXCL,
  O_NONBLOCK,
  O_RDONLY,
  O_WRONLY,
  RENAME_NOREPLACE,
  readDir,
  renameAt2,
  S_IFMT,
  S_IFREG,
  type Stat,
  SysError,
  statAt,
  statFd,
  unlinkAt,
} from "../../core/sys.js";
import type { DeclaredApp, SinceIndex } from "../types.js";
import type { PlannedEntry, Unread } from "./walk.js";

/** The subdirectory of the state directory that holds every app's indexes. */
export const SINCE_DIR = "since";
/** Indexes kept per app (the newest). */
export const MAX_INDEXES_PER_APP = 8;
/** Largest index kept or read. */
export const MAX_INDEX_BYTES = 64 * 1024 * 1024;
/** Bytes of indexes kept per app (the newest first; the one just made always). */
export const MAX_APP_INDEX_BYTES = 256 * 1024 * 1024;
/** A file whose ctime is this close to ferryd's clock when it was opened is not indexed. */
export const RACY_SECONDS = 2;

const MAGIC = Buffer.from("FERRYSI1");
const END_MAGIC = Buffer.from("FSIE");
/** Bytes of a record after its path. */
const FIXED = 52;
const TRAILER = 4 + 4 + 32;
const TMP_PREFIX = ".tmp-";
const WRITE_BUFFER = 256 * 1024;
const APP_DIR_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

interface IndexHeader {
  version: 1;
  app: string;
  token: string;
  paths: string[];
  created: string;
}

/** The held descriptor of `<state_dir>/since/<app>` (root-owned 0700), created on first use. */
function openAppDir(state: StateDir, app: string): number {
  if (!APP_DIR_NAME.test(app)) throw new FerryError("INTERNAL", `bad application name ${app}`);
  const root = state.sub(SINCE_DIR);
  return makePrivateDir(root, app, state.options, { existing: "check" }, state.describe(SINCE_DIR));
}

function devParts(dev: string): [number, number] {
  const i = dev.indexOf(":");
  return [Number(dev.slice(0, i)), Number(dev.slice(i + 1))];
}

/** FNV-1a over a byte range. */
function fnv(b: Buffer, start: number, end: number): number {
  let h = 0x811c9dc5;
  for (let i = start; i < end; i++) {
    h ^= b[i] as number;
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

// ------------------------------------------------------------------------------ reading

/** An index loaded for lookups: its bytes and an open-addressing table of record offsets. */
class LoadedIndex {
  private readonly table: Uint32Array;
  private readonly mask: number;

  constructor(
    private readonly buf: Buffer,
    offsets: number[],
  ) {
    let cap = 16;
    while (cap < offsets.length * 2) cap *= 2;
    this.table = new Uint32Array(cap);
    this.mask = cap - 1;
    for (const off of offsets) {
      const len = buf.readUInt16LE(off);
      let slot = fnv(buf, off + 2, off + 2 + len) & this.mask;
      while (this.table[slot] !== 0) slot = (slot + 1) & this.mask;
      this.table[slot] = off + 1;
    }
  }

  lookup(path: string, st: Stat): number | undefined {
    if (Buffer.byteLength(path) > KEY.length) return undefined;
    const n = KEY.write(path, 0, "utf8");
    const buf = this.buf;
    let slot = fnv(KEY, 0, n) & this.mask;
    for (;;) {
      const v = this.table[slot] as number;
      if (v === 0) return undefined;
      const off = v - 1;
      const len = buf.readUInt16LE(off);
      if (len === n && buf.compare(KEY, 0, n, off + 2, off + 2 + len) === 0) {
        return same(buf, off + 2 + len, st);
      }
      slot = (slot + 1) & this.mask;
    }
  }
}

/** Scratch space for a looked-up path's bytes (archive paths are at most 4 KiB). */
const KEY = Buffer.alloc(0xffff);

/** A u64 or i64 stored as two 32-bit halves, as a Number (exact below 2^53). */
function u64(b: Buffer, o: number): number {
  return b.readUInt32LE(o) + b.readUInt32LE(o + 4) * 0x1_0000_0000;
}
function i64(b: Buffer, o: number): number {
  return b.readUInt32LE(o) + b.readInt32LE(o + 4) * 0x1_0000_0000;
}
function put64(b: Buffer, o: number, v: number): void {
  const hi = Math.floor(v / 0x1_0000_0000);
  b.writeUInt32LE(v - hi * 0x1_0000_0000, o);
  b.writeInt32LE(hi, o + 4);
}

let lastDev = "";
let lastDevParts: [number, number] = [0, 0];
function devOf(dev: string): [number, number] {
  if (dev !== lastDev) {
    lastDev = dev;
    lastDevParts = devParts(dev);
  }
  return lastDevParts;
}

/** The record's position when all six fields equal the file's stat. */
function same(b: Buffer, o: number, st: Stat): number | undefined {
  const [major, minor] = devOf(st.dev);
  if (
    u64(b, o) === st.size &&
    i64(b, o + 8) === st.mtimeSec &&
    b.readUInt32LE(o + 16) === st.mtimeNsec &&
    i64(b, o + 20) === st.ctimeSec &&
    b.readUInt32LE(o + 28) === st.ctimeNsec &&
    b.readBigUInt64LE(o + 32) === st.ino &&
    b.readUInt32LE(o + 40) === major &&
    b.readUInt32LE(o + 44) === minor
  ) {
    return b.readUInt32LE(o + 48);
  }
  return undefined;
}

class Refused extends Error {}

/**
 * The index `token` of `app` from its held directory, or why it is refused. Returns
 * undefined when there is no such index (unknown or expired token).
 */
function loadIndex(
  dir: number,
  expect: { app: string; token: string; paths: readonly string[]; owner: number },
): LoadedIndex | undefined {
  let fd: number;
  try {
    fd = openBeneath(dir, expect.token, O_RDONLY | O_NONBLOCK);
  } catch (err) {
    if (err instanceof SysError && err.errnoName === "ENOENT") return undefined;
    throw new Refused(`cannot open it without following links (${explain(err)})`);
  }
  try {
    const st = statFd(fd);
    if ((st.mode & S_IFMT) !== S_IFREG) throw new Refused("not a regular file");
    if (st.nlink !== 1) throw new Refused(`it has ${st.nlink} links`);
    if (st.uid !== expect.owner) throw new Refused(`owned by uid ${st.uid}, not ${expect.owner}`);
    if ((st.mode & 0o022) !== 0) throw new Refused("writable by others");
    if (st.size > MAX_INDEX_BYTES) throw new Refused(`${st.size} bytes, over the bound`);
    if (st.size < MAGIC.length + 4 + TRAILER) throw new Refused("too short");
    const buf = Buffer.allocUnsafe(st.size);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) throw new Refused("shorter than its size");
      got += n;
    }
    return parseIndex(buf, expect);
  } finally {
    closeSync(fd);
  }
}

function parseIndex(
  buf: Buffer,
  expect: { app: string; token: string; paths: readonly string[] },
): LoadedIndex {
  const end = buf.length - TRAILER;
  if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) throw new Refused("not a ferryd index");
  if (!buf.subarray(end, end + 4).equals(END_MAGIC)) throw new Refused("no trailer");
  const sum = createHash("sha256")
    .update(buf.subarray(0, buf.length - 32))
    .digest();
  if (!sum.equals(buf.subarray(buf.length - 32))) throw new Refused("its checksum does not match");
  const count = buf.readUInt32LE(end + 4);
  const hlen = buf.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4 + hlen;
  if (start > end) throw new Refused("malformed header");
  let header: IndexHeader;
  try {
    header = JSON.parse(buf.toString("utf8", MAGIC.length + 4, start)) as IndexHeader;
  } catch {
    throw new Refused("its header is not JSON");
  }
  if (header.version !== 1) throw new Refused("unknown version");
  if (header.app !== expect.app) throw new Refused(`it is the index of app ${header.app}`);
  if (header.token !== expect.token) throw new Refused("it names another token");
  if (!isDeepStrictEqual(header.paths, expect.paths)) {
    throw new Refused("the app's declared paths changed since");
  }
  const offsets: number[] = [];
  let off = start;
  while (off < end) {
    if (off + 2 > end) throw new Refused("truncated record");
    const len = buf.readUInt16LE(off);
    if (off + 2 + len + FIXED > end) throw new Refused("truncated record");
    offsets.push(off);
    off += 2 + len + FIXED;
  }
  if (offsets.length !== count) throw new Refused("its file count does not match");
  return new LoadedIndex(buf, offsets);
}

// ------------------------------------------------------------------------------ writing

/** This backup's index, written as the archive goes, kept by `finish`. */
class IndexWriter {
  readonly tmp: string;
  private readonly fd: number;
  private readonly hash = createHash("sha256");
  private buf = Buffer.allocUnsafe(WRITE_BUFFER);
  private used = 0;
  bytes = 0;
  count = 0;

  constructor(
    private readonly dir: number,
    readonly token: string,
    header: IndexHeader,
    privileged: boolean,
  ) {
    this.tmp = `${TMP_PREFIX}${token}`;
    this.fd = openBeneath(dir, this.tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600);
    try {
      // Made by ferryd (uid B) in root's 0700 directory: root's at once, like every file
      // ferryd trusts later.
      if (privileged) fchownSync(this.fd, 0, 0);
      const json = Buffer.from(JSON.stringify(header));
      this.put(MAGIC);
      const len = Buffer.alloc(4);
      len.writeUInt32LE(json.length);
      this.put(len);
      this.put(json);
    } catch (err) {
      this.discard();
      throw err;
    }
  }

  private room(n: number): void {
    if (this.used + n > this.buf.length) {
      this.flush();
      if (n > this.buf.length) this.buf = Buffer.allocUnsafe(n);
    }
  }

  private put(b: Buffer): void {
    this.room(b.length);
    b.copy(this.buf, this.used);
    this.used += b.length;
    this.bytes += b.length;
  }

  private flush(): void {
    const part = this.buf.subarray(0, this.used);
    this.hash.update(part);
    let off = 0;
    while (off < part.length) off += writeSync(this.fd, part, off, part.length - off);
    this.used = 0;
  }

  /** Adds one file; false when the index would pass MAX_INDEX_BYTES. */
  add(path: string, st: Stat, position: number): boolean {
    const plen = Buffer.byteLength(path);
    if (plen > 0xffff) return true; // cannot be: archive paths are at most 4 KiB
    const n = 2 + plen + FIXED;
    if (this.bytes + n + TRAILER > MAX_INDEX_BYTES) return false;
    this.room(n);
    const b = this.buf;
    let o = this.used;
    b.writeUInt16LE(plen, o);
    b.write(path, o + 2, plen, "utf8");
    o += 2 + plen;
    const [major, minor] = devOf(st.dev);
    put64(b, o, st.size);
    put64(b, o + 8, st.mtimeSec);
    b.writeUInt32LE(st.mtimeNsec, o + 16);
    put64(b, o + 20, st.ctimeSec);
    b.writeUInt32LE(st.ctimeNsec, o + 28);
    b.writeBigUInt64LE(st.ino, o + 32);
    b.writeUInt32LE(major, o + 40);
    b.writeUInt32LE(minor, o + 44);
    b.writeUInt32LE(position, o + 48);
    this.used += n;
    this.bytes += n;
    this.count++;
    return true;
  }

  /** Trailer, fsync, rename to the token, fsync of the directory. */
  finish(): void {
    const t = Buffer.alloc(8);
    END_MAGIC.copy(t, 0);
    t.writeUInt32LE(this.count, 4);
    this.put(t);
    this.flush();
    const sum = this.hash.digest();
    let off = 0;
    while (off < sum.length) off += writeSync(this.fd, sum, off, sum.length - off);
    fsyncSync(this.fd);
    closeSync(this.fd);
    renameAt2(this.dir, this.tmp, this.dir, this.token, RENAME_NOREPLACE);
    fsyncSync(this.dir);
  }

  /** Closes and removes the temporary file (a failed, cancelled or oversized backup). */
  discard(): void {
    try {
      closeSync(this.fd);
    } catch {}
    try {
      unlinkAt(this.dir, this.tmp, false);
    } catch {}
  }
}

/**
 * Keeps the newest indexes of the app directory, at most MAX_INDEXES_PER_APP of them and
 * MAX_APP_INDEX_BYTES together; `keep` (the one just made) always stays.
 */
export function pruneIndexes(dir: number, keep: string): void {
  const found: { name: string; t: number; ns: number; size: number }[] = [];
  for (const d of readDir(dir)) {
    const name = d.name.toString("latin1");
    if (!SINCE_TOKEN.test(name)) continue;
    try {
      const st = statAt(dir, name);
      found.push({ name, t: st.mtimeSec, ns: st.mtimeNsec, size: st.size });
    } catch {}
  }
  found.sort((a, b) =>
    a.name === keep
      ? -1
      : b.name === keep
        ? 1
        : b.t - a.t || b.ns - a.ns || (a.name < b.name ? -1 : 1),
  );
  let count = 0;
  let bytes = 0;
  for (const f of found) {
    count++;
    bytes += f.size;
    if (f.name === keep || (count <= MAX_INDEXES_PER_APP && bytes <= MAX_APP_INDEX_BYTES)) continue;
    try {
      unlinkAt(dir, f.name, false);
    } catch {}
  }
}

// ------------------------------------------------------------------------------ session

export interface SinceOptions {
  state: StateDir;
  app: string;
  paths: readonly string[];
  log: Logger;
  warnings: string[];
}

/** The SinceIndex of one files backup (see the top). */
class FilesSinceIndex implements SinceIndex {
  readonly since: string | undefined;
  private readonly dir: number;
  private readonly previous: LoadedIndex | undefined;
  private writer: IndexWriter | undefined;
  private gaveUp = false;
  private kept: string | undefined;
  private closed = false;

  constructor(
    private readonly o: SinceOptions,
    token: string | undefined,
  ) {
    if (token !== undefined && !SINCE_TOKEN.test(token)) {
      // The daemon refuses such a request first; the name is never formed from it.
      throw new FerryError("BAD_REQUEST", "'since' must be 32 lowercase hex digits");
    }
    this.dir = openAppDir(o.state, o.app);
    if (token === undefined) return;
    const owner = o.state.options.privileged ? 0 : o.state.options.uid;
    try {
      this.previous = loadIndex(this.dir, { app: o.app, token, paths: o.paths, owner });
      if (this.previous === undefined) {
        o.log.info(
          { app: o.app, since: token },
          "no index of that backup (unknown or expired token): full backup",
        );
      }
    } catch (err) {
      if (!(err instanceof Refused)) {
        closeSync(this.dir);
        throw err;
      }
      o.log.error(
        { app: o.app, since: token, reason: err.message },
        "backup index refused and removed: full backup",
      );
      try {
        unlinkAt(this.dir, token, false);
      } catch {}
    }
    if (this.previous !== undefined) this.since = token;
  }

  lookup(path: string, st: Stat): number | undefined {
    return this.previous?.lookup(path, st);
  }

  record(path: string, st: Stat, position: number): void {
    if (this.gaveUp || this.closed) return;
    // Racy: a write in the same clock tick after this file's fstat could leave ctime as it
    // is; such a file is simply read again next time.
    if (st.ctimeSec + st.ctimeNsec / 1e9 >= Date.now() / 1000 - RACY_SECONDS) return;
    this.writer ??= this.newWriter();
    if (!this.writer.add(path, st, position)) {
      this.gaveUp = true;
      this.writer.discard();
      this.writer = undefined;
      this.o.warnings.push(
        `no index of this backup was kept (it would pass ${MAX_INDEX_BYTES / 1024 / 1024} MiB): the next backup of this app is full`,
      );
    }
  }

  complete(): string | undefined {
    if (this.closed || this.gaveUp) return undefined;
    // No regular file old enough to index: an empty index still names this backup.
    this.writer ??= this.newWriter();
    return this.keep(this.writer);
  }

  private newWriter(): IndexWriter {
    const header: IndexHeader = {
      version: 1,
      app: this.o.app,
      token: randomBytes(16).toString("hex"),
      paths: [...this.o.paths],
      created: new Date().toISOString(),
    };
    return new IndexWriter(this.dir, header.token, header, this.o.state.options.privileged);
  }

  private keep(w: IndexWriter): string | undefined {
    try {
      w.finish();
    } catch (err) {
      w.discard();
      this.writer = undefined;
      this.o.log.error({ app: this.o.app, err: explain(err) }, "could not keep the backup index");
      return undefined;
    }
    this.writer = undefined;
    this.kept = w.token;
    try {
      pruneIndexes(this.dir, w.token);
    } catch (err) {
      this.o.log.warn({ app: this.o.app, err: explain(err) }, "could not prune old backup indexes");
    }
    return this.kept;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.writer?.discard();
    this.writer = undefined;
    closeSync(this.dir);
  }
}

/** Opens the index session of one backup of a files app (`token`: the request's `since`). */
export function openSinceIndex(o: SinceOptions, token: string | undefined): SinceIndex {
  return new FilesSinceIndex(o, token);
}

// ------------------------------------------------------------------------------ the walk

/**
 * The files backup's hooks (backup.ts). `unread` is asked by the walk before it opens a
 * regular file: true when the file is unchanged since the `since` archive, so the walk
 * plans it from its statx and never opens it. `mark` then sees every planned entry once,
 * in archive order (so its position is the count so far): it turns an unread file into
 * an entry without data that names its earlier entry, and records every regular file in
 * this backup's index.
 */
export function sinceMarker(since: SinceIndex | undefined): {
  unread: Unread | undefined;
  mark: (p: PlannedEntry) => PlannedEntry;
} {
  if (since === undefined) return { unread: undefined, mark: (p) => p };
  const token = since.since;
  let position = 0;
  /** The earlier position of the file `unread` said yes to last (the walk plans it next). */
  let pending: { path: string; position: number } | undefined;
  return {
    unread:
      token === undefined
        ? undefined
        : (path, st) => {
            const before = since.lookup(path, st);
            pending = before === undefined ? undefined : { path, position: before };
            return before !== undefined;
          },
    mark: (p) => {
      const at = position++;
      const earlier = pending?.path === p.header.path ? pending : undefined;
      pending = undefined;
      const st = p.stat;
      if (st === undefined || p.header.type !== "file") return p;
      since.record(p.header.path, st, at);
      if (p.fd !== undefined) return p;
      if (token === undefined || earlier === undefined) {
        throw new FerryError("INTERNAL", `${p.header.path}: planned unread, but not unchanged`);
      }
      const unchanged = { since: token, size: p.header.size, position: earlier.position };
      return { header: { ...p.header, size: 0, unchanged } };
    },
  };
}

// ------------------------------------------------------------------------------ start-up

/**
 * At ferryd's start: removes the `.tmp-` files a killed ferryd left, and the indexes of
 * apps that are no longer declared as files apps. Never throws: a problem is logged.
 */
export function cleanSinceIndexes(
  state: StateDir,
  apps: ReadonlyMap<string, DeclaredApp>,
  log: Logger,
): void {
  let root: number;
  try {
    root = state.sub(SINCE_DIR);
  } catch (err) {
    log.error({ err: explain(err) }, "backup indexes: cannot open their directory");
    return;
  }
  for (const d of readDir(root)) {
    const name = d.name.toString("latin1");
    try {
      const declared = apps.get(name);
      if (declared === undefined || declared.driver !== "files" || !APP_DIR_NAME.test(name)) {
        removeTreeAt(root, d.name);
        log.info({ app: name }, "removed the backup indexes of an application no longer declared");
        continue;
      }
      const dir = openAppDir(state, name);
      try {
        for (const e of readDir(dir)) {
          const n = e.name.toString("latin1");
          if (!SINCE_TOKEN.test(n)) removeTreeAt(dir, e.name);
        }
      } finally {
        closeSync(dir);
      }
    } catch (err) {
      log.error({ app: name, err: explain(err) }, "backup indexes: cleanup failed");
    }
  }
}
