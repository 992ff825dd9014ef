/**
 * The storage behind a repository: a small interface (list, read a range, write once,
 * delete) so that an object-store backend can be added without touching the format
 * (docs/repository.md, "Storage"). Names are `KIND/NAME` where KIND is one of the
 * repository's directories; the backend never interprets the bytes.
 *
 * Longer than 300 lines on purpose: the interface and its one local-directory
 * implementation, with the write-once and fsync rules every object follows.
 */
import { constants, promises as fsp, fstatSync, readSync } from "node:fs";
import { dirname, join } from "node:path";
import { FerryError } from "../core/errors.js";

export type ObjectKind = "config" | "keys" | "packs" | "index" | "snapshots" | "locks";

export const KINDS: readonly ObjectKind[] = ["keys", "packs", "index", "snapshots", "locks"];

export interface ObjectInfo {
  name: string;
  size: number;
}

export interface Backend {
  /** A description for messages (a path or URL). */
  readonly location: string;
  /** Every object of a kind (for packs, across its fan-out directories). */
  list(kind: ObjectKind): Promise<ObjectInfo[]>;
  /** Bytes [offset, offset+length) of an object; the whole object without a length. */
  read(kind: ObjectKind, name: string, offset?: number, length?: number): Promise<Buffer>;
  /** Creates an object; fails if it exists. Durable when the promise resolves. */
  write(kind: ObjectKind, name: string, data: Buffer | Buffer[]): Promise<void>;
  remove(kind: ObjectKind, name: string): Promise<void>;
  exists(kind: ObjectKind, name: string): Promise<boolean>;
}

const NAME = /^[0-9a-f]{64}$/;
/** A pack file held open for reads; closed once dropped from the cache and unused. */
interface HeldPack {
  fh: fsp.FileHandle;
  users: number;
  dropped: boolean;
  size: number;
  /** The last window read: small blobs are read in order, several from one pread. */
  window?: { start: number; buf: Buffer };
}

/** Bytes read at once for small ranges of a held pack. */
const WINDOW = 256 * 1024;

/** Ranges of packs up to this size are read synchronously. */
const SYNC_READ_MAX = 64 * 1024;

/** Pack files a LocalBackend keeps open for reading. */
const MAX_OPEN_PACKS = 32;

/**
 * A small range of a held pack, from its window (read anew when the range is outside it);
 * undefined when the range passes the end of the pack (the caller reports it).
 */
function windowed(
  h: HeldPack,
  kind: string,
  name: string,
  offset: number,
  len: number,
): Buffer | undefined {
  const w = h.window;
  if (w !== undefined && offset >= w.start && offset + len <= w.start + w.buf.length) {
    return w.buf.subarray(offset - w.start, offset - w.start + len);
  }
  if (offset + len > h.size) return undefined;
  const size = Math.min(Math.max(WINDOW, len), h.size - offset);
  const buf = Buffer.allocUnsafe(size);
  let got = 0;
  while (got < size) {
    const n = readSync(h.fh.fd, buf, got, size - got, offset + got);
    if (n === 0) throw new FerryError("REPO_CORRUPT", `${kind}/${name} is shorter than its size`);
    got += n;
  }
  h.window = { start: offset, buf };
  return buf.subarray(0, len);
}

/**
 * A local directory. Every object is written to a temporary name in its directory,
 * fsynced, linked to its final name (link(2) fails if the name exists: write-once), and
 * the directory fsynced; a crash leaves at most a `.tmp-*` file, which `prune` removes.
 */
export class LocalBackend implements Backend {
  /**
   * Open pack files, most recently used last: reading a snapshot's small metadata blobs
   * one by one would otherwise open and close the same few packs thousands of times.
   * Packs are never modified, so a held descriptor always reads what the name holds; one
   * is closed before its pack is removed.
   */
  private readonly handles = new Map<string, HeldPack>();

  constructor(readonly location: string) {}

  private async openPack(p: string): Promise<HeldPack> {
    let h = this.handles.get(p);
    if (h !== undefined) {
      this.handles.delete(p);
      this.handles.set(p, h);
    } else {
      const fh = await fsp.open(p, constants.O_RDONLY);
      h = { fh, users: 0, dropped: false, size: fstatSync(fh.fd).size };
      const raced = this.handles.get(p);
      if (raced !== undefined) {
        await h.fh.close();
        h = raced;
      } else {
        this.handles.set(p, h);
      }
    }
    h.users++;
    if (this.handles.size > MAX_OPEN_PACKS) {
      for (const [k, v] of this.handles) {
        if (this.handles.size <= MAX_OPEN_PACKS) break;
        if (v.users > 0) continue;
        this.handles.delete(k);
        v.dropped = true;
        await v.fh.close();
      }
    }
    return h;
  }

  private path(kind: ObjectKind, name: string): string {
    if (kind === "config") return join(this.location, "config");
    if (!NAME.test(name)) throw new FerryError("REPO_CORRUPT", `bad object name ${name}`);
    if (kind === "packs") return join(this.location, "packs", name.slice(0, 2), name);
    return join(this.location, kind, name);
  }

  async list(kind: ObjectKind): Promise<ObjectInfo[]> {
    const out: ObjectInfo[] = [];
    const scan = async (dir: string) => {
      let names: string[];
      try {
        names = await fsp.readdir(dir);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return;
        throw err;
      }
      for (const n of names) {
        if (!NAME.test(n)) continue;
        try {
          const st = await fsp.stat(join(dir, n));
          out.push({ name: n, size: st.size });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
        }
      }
    };
    if (kind === "packs") {
      let subs: string[] = [];
      try {
        subs = await fsp.readdir(join(this.location, "packs"));
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
      }
      for (const s of subs)
        if (/^[0-9a-f]{2}$/.test(s)) await scan(join(this.location, "packs", s));
    } else {
      await scan(join(this.location, kind));
    }
    return out;
  }

  async read(kind: ObjectKind, name: string, offset = 0, length?: number): Promise<Buffer> {
    const p = this.path(kind, name);
    if (length === undefined && offset === 0) return fsp.readFile(p);
    const held = kind === "packs" ? await this.openPack(p) : undefined;
    const fh = held?.fh ?? (await fsp.open(p, constants.O_RDONLY));
    try {
      const len = length ?? (await fh.stat()).size - offset;
      if (held !== undefined && len <= SYNC_READ_MAX) {
        const got = windowed(held, kind, name, offset, len);
        if (got !== undefined) return got;
      }
      const buf = Buffer.allocUnsafe(len);
      let got = 0;
      // A small range of a held pack (a metadata blob, a tree) is read at once: from the
      // page cache a pread is cheaper than the thread-pool hop of an asynchronous read.
      const now = held !== undefined && len <= SYNC_READ_MAX;
      while (got < len) {
        const n = now
          ? readSync(fh.fd, buf, got, len - got, offset + got)
          : (await fh.read(buf, got, len - got, offset + got)).bytesRead;
        if (n === 0) break;
        got += n;
      }
      if (got !== len) {
        throw new FerryError(
          "REPO_CORRUPT",
          `${kind}/${name} is shorter than expected (${offset + got} bytes)`,
        );
      }
      return buf;
    } finally {
      if (held === undefined) await fh.close();
      else if (--held.users === 0 && held.dropped) await fh.close();
    }
  }

  async write(kind: ObjectKind, name: string, data: Buffer | Buffer[]): Promise<void> {
    const final = this.path(kind, name);
    const dir = dirname(final);
    if (kind === "packs") await fsp.mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(
      dir,
      `.tmp-${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`,
    );
    const fh = await fsp.open(tmp, "wx", 0o600);
    try {
      const parts = Array.isArray(data) ? data : [data];
      await fh.writev(parts);
      await fh.sync();
    } catch (err) {
      await fh.close();
      await fsp.unlink(tmp).catch(() => {});
      throw err;
    }
    await fh.close();
    try {
      // link(2) rather than rename(2): it refuses an existing name, so an object is
      // never replaced; the temporary name is unlinked after.
      await fsp.link(tmp, final);
    } catch (err) {
      await fsp.unlink(tmp).catch(() => {});
      if ((err as NodeJS.ErrnoException).code === "EEXIST") {
        // Content-addressed: the same name means the same bytes (checked by `check`).
        if (kind !== "config") return;
        throw new FerryError("REPO_EXISTS", `${this.location} already holds a repository`);
      }
      throw err;
    }
    await fsp.unlink(tmp);
    await syncDir(dir);
  }

  async remove(kind: ObjectKind, name: string): Promise<void> {
    const p = this.path(kind, name);
    const held = this.handles.get(p);
    if (held !== undefined) {
      this.handles.delete(p);
      held.dropped = true;
      if (held.users === 0) await held.fh.close();
    }
    try {
      await fsp.unlink(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
    }
    await syncDir(dirname(p));
  }

  async exists(kind: ObjectKind, name: string): Promise<boolean> {
    try {
      await fsp.stat(this.path(kind, name));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
      throw err;
    }
  }

  /** Creates the directory layout (init only). */
  async create(): Promise<void> {
    await fsp.mkdir(this.location, { recursive: true, mode: 0o700 });
    for (const k of KINDS)
      await fsp.mkdir(join(this.location, k), { recursive: true, mode: 0o700 });
    await syncDir(this.location);
  }

  /** Removes temporary files older than `olderThanMs` left by crashed writers. */
  async removeTemporaries(olderThanMs: number): Promise<number> {
    let n = 0;
    const dirs = KINDS.filter((k) => k !== "packs").map((k) => join(this.location, k));
    try {
      for (const s of await fsp.readdir(join(this.location, "packs")))
        dirs.push(join(this.location, "packs", s));
    } catch {}
    const now = Date.now();
    for (const d of dirs) {
      let names: string[] = [];
      try {
        names = await fsp.readdir(d);
      } catch {
        continue;
      }
      for (const name of names) {
        if (!name.startsWith(".tmp-")) continue;
        try {
          const st = await fsp.stat(join(d, name));
          if (now - st.mtimeMs < olderThanMs) continue;
          await fsp.unlink(join(d, name));
          n++;
        } catch {}
      }
    }
    return n;
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await fsp.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
