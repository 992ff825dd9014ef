/**
 * The byte formats of a Ferry repository's files (docs/repository.md, "Layout"): blob
 * types and references, tree blobs, pack headers and trailers, index files and snapshots.
 * Pure encoding and decoding, with every length checked on the way in; reading, writing
 * and sealing are repository.ts's and packs.ts's business.
 */
import { FerryError } from "../core/errors.js";

export const BlobType = { data: 0, meta: 1, tree: 2 } as const;
export type BlobType = (typeof BlobType)[keyof typeof BlobType];
const TYPE_NAMES = ["data", "meta", "tree"] as const;
export function blobTypeName(t: number): string {
  return TYPE_NAMES[t] ?? `type ${t}`;
}

export const FLAG_ZSTD = 1;

export interface IndexEntry {
  pack: string;
  type: number;
  flags: number;
  offset: number;
  length: number;
  rawLength: number;
}

/** The index entry of a blob stored in `pack` (what `e` says of it, without its id). */
export function indexEntry(pack: string, e: Omit<IndexEntry, "pack">): IndexEntry {
  return {
    pack,
    type: e.type,
    flags: e.flags,
    offset: e.offset,
    length: e.length,
    rawLength: e.rawLength,
  };
}

/** An index entry with its blob's id: what packs and index files list. */
export type PackedBlob = IndexEntry & { id: Buffer };

/** A blob about to be packed: its sealed length and its plaintext length. */
export interface PackEntry {
  type: number;
  flags: number;
  id: Buffer;
  length: number;
  rawLength: number;
}

/** A blob reference in a tree: id and plaintext length. */
export interface BlobRef {
  id: Buffer;
  length: number;
}

export interface Snapshot {
  /**
   * 1: the archive as ferryd sent it, byte for byte. 2: a delta ferryd sent, completed
   * from an earlier snapshot (docs/repository.md, "Incremental backups"): the streams hold
   * the complete archive up to its end record, which `dump` computes.
   */
  version: 1 | 2;
  time: string;
  host: string;
  user: string;
  app: string;
  driver: string;
  tags: string[];
  manifest: Record<string, unknown>;
  /** v1: the archive's end record. v2: the end record `dump` makes, less its `sha256`. */
  end: Record<string, unknown>;
  archive: {
    bytes: number;
    /** v1: SHA-256 of the stored archive. v2: null (computed by `dump`). */
    sha256: string | null;
    entries: number;
    /** v2: the bytes of the manifest entry, where the payload starts. */
    manifest_bytes?: number;
    /** v2: the payload's length (the end record's `payload_bytes`). */
    payload_bytes?: number;
    /** v2: the end record header's mtime. */
    end_mtime?: number;
  };
  /** v2: how the delta was completed. */
  delta?: SnapshotDelta;
  /** Tree blobs listing the metadata stream's blobs, in order. */
  meta_tree: string[];
  /** Tree blobs listing the content stream's blobs, in order. */
  data_tree: string[];
  warnings: string[];
  stats: {
    blobs: number;
    new_blobs: number;
    new_bytes_raw: number;
    new_bytes_stored: number;
    seconds: number;
  };
  ferry_version: string;
}

/** What a version 2 snapshot records of the delta it was completed from. */
export interface SnapshotDelta {
  /** The token the delta was relative to (the earlier snapshot's end record's `token`). */
  since: string;
  /** The snapshot whose blobs filled the unchanged files. */
  previous: string;
  /** Unchanged files, and their bytes, filled from it. */
  unchanged: number;
  unchanged_bytes: number;
  /** What ferryd actually sent: its length, SHA-256 and end record. */
  received: { bytes: number; sha256: string; end: Record<string, unknown> };
}

export interface LoadedSnapshot extends Snapshot {
  id: string;
}

const PACK_MAGIC = Buffer.from("FRP1");
const INDEX_MAGIC = Buffer.from("FRI1");
const PACK_ENTRY = 42; // type, flags, id(32), stored length u32, raw length u32
const INDEX_ENTRY = 46; // type, flags, id(32), offset u32, stored u32, raw u32

export function hex(b: Buffer): string {
  return b.toString("hex");
}

/** The additional authenticated data of a sealed blob: its id and type. */
export function blobAad(id: Buffer, type: number): Buffer {
  const b = Buffer.alloc(33);
  id.copy(b);
  b[32] = type;
  return b;
}

export const TREE_ENTRY = 36;
export const REFS_PER_TREE = 4096;

export function encodeTree(refs: BlobRef[]): Buffer {
  const b = Buffer.alloc(refs.length * TREE_ENTRY);
  refs.forEach((r, i) => {
    r.id.copy(b, i * TREE_ENTRY);
    b.writeUInt32LE(r.length, i * TREE_ENTRY + 32);
  });
  return b;
}

export function decodeTree(b: Buffer, name: string): BlobRef[] {
  if (b.length % TREE_ENTRY !== 0)
    throw new FerryError("REPO_CORRUPT", `tree blob ${name} is malformed`);
  const out: BlobRef[] = [];
  for (let o = 0; o < b.length; o += TREE_ENTRY) {
    out.push({ id: Buffer.from(b.subarray(o, o + 32)), length: b.readUInt32LE(o + 32) });
  }
  return out;
}

/** A pack's header (sealed by the caller): a version byte, then one record per blob. */
export function encodePackHeader(list: PackEntry[]): Buffer {
  const header = Buffer.alloc(1 + list.length * PACK_ENTRY);
  header[0] = 1;
  let o = 1;
  for (const e of list) {
    header[o] = e.type;
    header[o + 1] = e.flags;
    e.id.copy(header, o + 2);
    header.writeUInt32LE(e.length, o + 34);
    header.writeUInt32LE(e.rawLength, o + 38);
    o += PACK_ENTRY;
  }
  return header;
}

/** A pack's last 8 bytes: the sealed header's length and the magic. */
export function encodePackTrailer(sealedHeaderLength: number): Buffer {
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(sealedHeaderLength, 0);
  PACK_MAGIC.copy(trailer, 4);
  return trailer;
}

/** The sealed header's length, from a pack's trailer, checked against the pack's size. */
export function decodePackTrailer(trailer: Buffer, name: string, size: number): number {
  if (!trailer.subarray(4).equals(PACK_MAGIC))
    throw new FerryError("REPO_CORRUPT", `pack ${name} has no pack trailer`);
  const hlen = trailer.readUInt32LE(0);
  if (hlen + 8 > size) throw new FerryError("REPO_CORRUPT", `pack ${name} has a bad header length`);
  return hlen;
}

/** The index entries a pack's (opened) header lists; they must cover `dataEnd` bytes exactly. */
export function decodePackHeader(h: Buffer, name: string, dataEnd: number): PackedBlob[] {
  if (h[0] !== 1 || (h.length - 1) % PACK_ENTRY !== 0)
    throw new FerryError("REPO_CORRUPT", `pack ${name} has a malformed header`);
  const out: PackedBlob[] = [];
  let offset = 0;
  for (let o = 1; o < h.length; o += PACK_ENTRY) {
    const length = h.readUInt32LE(o + 34);
    out.push({
      pack: name,
      type: h[o] as number,
      flags: h[o + 1] as number,
      id: Buffer.from(h.subarray(o + 2, o + 34)),
      offset,
      length,
      rawLength: h.readUInt32LE(o + 38),
    });
    offset += length;
  }
  if (offset !== dataEnd)
    throw new FerryError("REPO_CORRUPT", `pack ${name}: its header does not account for its bytes`);
  return out;
}

export function encodeIndex(packs: { pack: string; entries: PackedBlob[] }[]): Buffer {
  let size = 4;
  for (const p of packs) size += 36 + p.entries.length * INDEX_ENTRY;
  const b = Buffer.alloc(size);
  INDEX_MAGIC.copy(b, 0);
  let o = 4;
  for (const p of packs) {
    Buffer.from(p.pack, "hex").copy(b, o);
    b.writeUInt32LE(p.entries.length, o + 32);
    o += 36;
    for (const e of p.entries) {
      b[o] = e.type;
      b[o + 1] = e.flags;
      e.id.copy(b, o + 2);
      b.writeUInt32LE(e.offset, o + 34);
      b.writeUInt32LE(e.length, o + 38);
      b.writeUInt32LE(e.rawLength, o + 42);
      o += INDEX_ENTRY;
    }
  }
  return b;
}

export function decodeIndex(
  b: Buffer,
  name: string,
): Map<string, (Omit<IndexEntry, "pack"> & { id: Buffer })[]> {
  const bad = () => new FerryError("REPO_CORRUPT", `index/${name} is malformed`);
  if (b.length < 4 || !b.subarray(0, 4).equals(INDEX_MAGIC)) throw bad();
  const out = new Map<string, (Omit<IndexEntry, "pack"> & { id: Buffer })[]>();
  let o = 4;
  while (o < b.length) {
    if (o + 36 > b.length) throw bad();
    const pack = b.toString("hex", o, o + 32);
    const n = b.readUInt32LE(o + 32);
    o += 36;
    if (o + n * INDEX_ENTRY > b.length) throw bad();
    const list = out.get(pack) ?? [];
    for (let i = 0; i < n; i++, o += INDEX_ENTRY) {
      list.push({
        type: b[o] as number,
        flags: b[o + 1] as number,
        id: Buffer.from(b.subarray(o + 2, o + 34)),
        offset: b.readUInt32LE(o + 34),
        length: b.readUInt32LE(o + 38),
        rawLength: b.readUInt32LE(o + 42),
      });
    }
    out.set(pack, list);
  }
  return out;
}
