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
import { compress, compressSync } from "./compress.js";
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

interface PackBuilder {
  parts: Buffer[];
  size: number;
  entries: PackEntry[];
}

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

  constructor(private readonly repo: PackTarget) {}

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
    if (data.length > 64) {
      // Small blobs are cheaper to compress here than to hand to the thread pool.
      const z = data.length < SYNC_COMPRESS_MAX ? compressSync(data) : await compress(data);
      if (z.length < data.length) {
        stored = z;
        flags = FLAG_ZSTD;
      }
    }
    const sealed = crypto.seal(stored, blobAad(id, type));
    const which = type === BlobType.data ? "data" : "meta";
    let p = this.builders[which];
    if (p === undefined) {
      p = { parts: [], size: 0, entries: [] };
      this.builders[which] = p;
    }
    p.parts.push(sealed);
    p.size += sealed.length;
    p.entries.push({ type, flags, id, length: sealed.length, rawLength: data.length });
    this.stats.newBlobs++;
    this.stats.newRaw += data.length;
    this.stats.newStored += sealed.length;
    if (p.size >= PACK_TARGET) {
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
  async writeRawPack(
    parts: Buffer[],
    list: PackEntry[],
  ): Promise<{ pack: string; entries: PackedBlob[] }> {
    const sealedHeader = this.repo.crypto.seal(encodePackHeader(list), "ferry-pack-header");
    const all = [...parts, sealedHeader, encodePackTrailer(sealedHeader.length)];
    // Hashed on the thread pool (WebCrypto), not the main thread that chunks and hashes
    // the incoming archive.
    const pack = Buffer.from(await webcrypto.subtle.digest("SHA-256", Buffer.concat(all))).toString(
      "hex",
    );
    await this.repo.backend.write("packs", pack, all);
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
    const { pack, entries } = await this.writeRawPack(p.parts, p.entries);
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
