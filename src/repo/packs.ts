/**
 * Writing blobs into packs (docs/repository.md, "Packs" and "Index"): a blob the repository
 * does not have yet is compressed when that pays, sealed, and gathered with others of its
 * kind (data or metadata) until a pack is PACK_TARGET bytes; packs are written in the
 * background, at most two at a time, and listed in an index file every PACKS_PER_INDEX packs
 * and at `flush`.
 */
import { webcrypto } from "node:crypto";
import { failpoint } from "../core/failpoint.js";
import type { Backend } from "./backend.js";
import { compress, compressBound, compressSync } from "./compress.js";
import type { Crypto } from "./crypto.js";
import {
  BlobType,
  blobAad,
  encodePackHeader,
  encodePackTrailer,
  FLAG_ZSTD,
  hex,
  type IndexEntry,
  indexEntry,
  type PackEntry,
  type PackedBlob,
} from "./format.js";

/** Target size of a pack file. */
export const PACK_TARGET = 4 * 1024 * 1024;
/** Packs per index file written by a backup. */
const PACKS_PER_INDEX = 64;
/** Blobs smaller than this are compressed on the calling thread. */
const SYNC_COMPRESS_MAX = 32 * 1024;

/**
 * A pack being gathered: sealed blobs are written straight into `buf` (one of the
 * writer's recycled pack buffers), so a pack costs no allocation per blob and no
 * concatenation. Every allocation of a megabyte counts towards V8's external-memory
 * budget, and each 64 MiB of it forced a full garbage collection: the profile of a 1 GB
 * backup showed 251 of them before the buffers were recycled.
 */
interface PackBuilder {
  buf: Buffer;
  size: number;
  entries: PackEntry[];
}

/** A pack buffer: a full pack, the largest blob on top, and room for the header. */
const PACK_BUFFER = PACK_TARGET + 2 * 1024 * 1024;
/** Pack buffers kept for reuse: two builders and two packs being written. */
const PACK_BUFFERS_KEPT = 4;
/** Scratch buffers for compression kept for reuse (one per blob compressed at once). */
const SCRATCH_KEPT = 8;
/** The size of a kept scratch buffer: zstd's bound for the largest content chunk. */
const SCRATCH_BYTES = compressBound(1024 * 1024);

/** What the pack writer needs of its repository: where to write and the index to keep. */
export interface PackTarget {
  readonly backend: Backend;
  readonly crypto: Crypto;
  readonly index: Map<string, IndexEntry>;
  readonly indexFiles: Set<string>;
  writeIndex(packs: { pack: string; entries: PackedBlob[] }[]): Promise<string>;
}

/** One session's blob writing. */
export class PackWriter {
  private readonly inFlight = new Set<string>();
  private readonly builders: Record<"data" | "meta", PackBuilder | undefined> = {
    data: undefined,
    meta: undefined,
  };
  private readonly writes = new Set<Promise<void>>();
  /** Packs written by this session and not yet in an index file. */
  private unindexed: { pack: string; entries: PackedBlob[] }[] = [];
  readonly stats = { newBlobs: 0, newRaw: 0, newStored: 0, packs: 0 };

  private readonly scratch: Buffer[] = [];
  private readonly syncScratch = Buffer.allocUnsafe(compressBound(SYNC_COMPRESS_MAX));
  private readonly packBuffers: Buffer[] = [];

  constructor(private readonly repo: PackTarget) {}

  /** A recycled pack buffer, or a new one (of the blob's size when that is larger). */
  private packBuffer(atLeast: number): Buffer {
    if (atLeast > PACK_BUFFER) return Buffer.allocUnsafe(atLeast);
    return this.packBuffers.pop() ?? Buffer.allocUnsafe(PACK_BUFFER);
  }

  private recycle(buf: Buffer): void {
    if (buf.length === PACK_BUFFER && this.packBuffers.length < PACK_BUFFERS_KEPT) {
      this.packBuffers.push(buf);
    }
  }

  /**
   * Stores a blob unless the repository (or this session) already has it. Returns its id
   * and whether it was new. Resolves once the blob is in a pack builder; packs are
   * written in the background (see flush).
   */
  async save(
    type: BlobType,
    data: Buffer,
    knownId?: Buffer,
  ): Promise<{ id: Buffer; isNew: boolean }> {
    const { crypto, index } = this.repo;
    const id = knownId ?? crypto.blobId(data);
    const k = hex(id);
    if (index.has(k) || this.inFlight.has(k)) return { id, isNew: false };
    this.inFlight.add(k);
    let stored = data;
    let flags = 0;
    let scratch: Buffer | undefined;
    let z: Buffer | undefined;
    if (data.length >= SYNC_COMPRESS_MAX) {
      const need = compressBound(data.length);
      scratch =
        (need <= SCRATCH_BYTES ? this.scratch.pop() : undefined) ??
        Buffer.allocUnsafe(Math.max(need, SCRATCH_BYTES));
      z = await compress(data, scratch);
    } else if (data.length > 64) {
      // Small blobs are cheaper to compress here than to hand to the thread pool; the
      // shared scratch is sealed from before the next await.
      z = compressSync(data, this.syncScratch);
    }
    if (z !== undefined && z.length < data.length) {
      stored = z;
      flags = FLAG_ZSTD;
    }
    const which = type === BlobType.data ? "data" : "meta";
    const length = crypto.sealedLength(stored.length);
    let p = this.builders[which];
    let full: PackBuilder | undefined;
    if (p !== undefined && p.size + length > p.buf.length) {
      // It does not fit: this pack is done.
      full = p;
      p = undefined;
    }
    if (p === undefined) {
      p = { buf: this.packBuffer(length), size: 0, entries: [] };
      this.builders[which] = p;
    }
    p.size += crypto.sealInto(stored, blobAad(id, type), p.buf, p.size);
    if (scratch?.length === SCRATCH_BYTES && this.scratch.length < SCRATCH_KEPT) {
      this.scratch.push(scratch);
    }
    p.entries.push({ type, flags, id, length, rawLength: data.length });
    this.stats.newBlobs++;
    this.stats.newRaw += data.length;
    this.stats.newStored += length;
    if (full !== undefined) await this.startPackWrite(full);
    if (p.size >= PACK_TARGET && this.builders[which] === p) {
      this.builders[which] = undefined;
      await this.startPackWrite(p);
    }
    return { id, isNew: true };
  }

  /** Writes every pending pack and an index for them; after it, every saved blob is durable and indexed. */
  async flush(): Promise<void> {
    for (const which of ["data", "meta"] as const) {
      const p = this.builders[which];
      this.builders[which] = undefined;
      if (p !== undefined && p.entries.length > 0) await this.startPackWrite(p);
    }
    while (this.writes.size > 0) {
      // Rejections propagate here.
      await Promise.all([...this.writes]);
    }
    if (this.unindexed.length > 0) {
      const batch = this.unindexed;
      this.unindexed = [];
      this.repo.indexFiles.add(await this.repo.writeIndex(batch));
    }
  }

  /** Writes sealed blobs as one pack (header and trailer appended); returns its index entries. */
  writeRawPack(
    parts: Buffer[],
    list: PackEntry[],
  ): Promise<{ pack: string; entries: PackedBlob[] }> {
    const size = parts.reduce((n, b) => n + b.length, 0);
    const buf = Buffer.allocUnsafe(size);
    let o = 0;
    for (const b of parts) o += b.copy(buf, o);
    return this.writePackBuffer(buf, size, list);
  }

  /**
   * Writes the pack whose sealed blobs are the first `size` bytes of `buf`, appending the
   * sealed header and the trailer (in `buf` when they fit). The pack's name is the
   * SHA-256 of its bytes, hashed on the thread pool (WebCrypto), not on the main thread
   * that chunks and hashes the incoming archive.
   */
  private async writePackBuffer(
    buf: Buffer,
    size: number,
    list: PackEntry[],
  ): Promise<{ pack: string; entries: PackedBlob[] }> {
    const header = encodePackHeader(list);
    const hlen = this.repo.crypto.sealedLength(header.length);
    let out = buf;
    if (size + hlen + 8 > buf.length) {
      out = Buffer.allocUnsafe(size + hlen + 8);
      buf.copy(out, 0, 0, size);
    }
    let o = size + this.repo.crypto.sealInto(header, "ferry-pack-header", out, size);
    o += encodePackTrailer(hlen).copy(out, o);
    const bytes = out.subarray(0, o);
    const pack = Buffer.from(await webcrypto.subtle.digest("SHA-256", bytes)).toString("hex");
    await this.repo.backend.write("packs", pack, bytes);
    failpoint("repo-after-pack");
    let offset = 0;
    const entries: PackedBlob[] = [];
    for (const e of list) {
      entries.push({
        pack,
        type: e.type,
        flags: e.flags,
        offset,
        length: e.length,
        rawLength: e.rawLength,
        id: e.id,
      });
      offset += e.length;
    }
    return { pack, entries };
  }

  private async startPackWrite(p: PackBuilder): Promise<void> {
    // At most two packs in flight: bounded memory, and the disk stays busy.
    while (this.writes.size >= 2) await Promise.race(this.writes);
    const w = this.writePack(p).finally(() => this.writes.delete(w));
    this.writes.add(w);
    // Surface errors to flush() while not crashing on an unhandled rejection meanwhile.
    w.catch(() => {});
  }

  private async writePack(p: PackBuilder): Promise<void> {
    let written: { pack: string; entries: PackedBlob[] };
    try {
      written = await this.writePackBuffer(p.buf, p.size, p.entries);
    } finally {
      // The backend's write has finished with the bytes (or failed): the buffer is free.
      this.recycle(p.buf);
    }
    const { pack, entries } = written;
    for (const e of entries) {
      const k = hex(e.id);
      this.repo.index.set(k, indexEntry(pack, e));
      this.inFlight.delete(k);
    }
    this.stats.packs++;
    this.unindexed.push({ pack, entries });
    if (this.unindexed.length >= PACKS_PER_INDEX) {
      const batch = this.unindexed;
      this.unindexed = [];
      this.repo.indexFiles.add(await this.repo.writeIndex(batch));
    }
  }
}
