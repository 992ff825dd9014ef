/**
 * A Ferry repository (docs/repository.md): config, keys, packs of blobs, index files,
 * snapshots and locks on a Backend. This module opens and creates repositories, stores
 * and loads blobs (deduplicated, compressed, sealed, packed), reads and writes the
 * index, snapshots and locks. What a snapshot's blobs mean is archive.ts's business.
 */
import { randomBytes, webcrypto } from "node:crypto";
import { hostname, userInfo } from "node:os";
import { FerryError } from "../core/errors.js";
import { failpoint } from "../core/failpoint.js";
import { VERSION } from "../core/version.js";
import type { Backend, ObjectKind } from "./backend.js";
import { compress, compressSync, decompress, decompressSync } from "./compress.js";
import {
  AeadCrypto,
  type Crypto,
  type KeyFile,
  makeKeyFile,
  newMasterKeys,
  openKeyFile,
  PlainCrypto,
  type ScryptParams,
  sha256,
} from "./crypto.js";
import { type ChunkerParams, CONTENT_PARAMS, gearTable, META_PARAMS } from "./fastcdc.js";

/** The repository format this code writes and reads. */
export const FORMAT_VERSION = 1;

export interface RepoConfig {
  ferry_repository: typeof FORMAT_VERSION;
  id: string;
  created: string;
  encrypted: boolean;
  compression: "zstd";
  chunker: { content: ChunkerParams; meta: ChunkerParams };
  inline_max: number;
}

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

/** A blob reference in a tree: id and plaintext length. */
export interface BlobRef {
  id: Buffer;
  length: number;
}

export interface Snapshot {
  version: 1;
  time: string;
  host: string;
  user: string;
  app: string;
  driver: string;
  tags: string[];
  manifest: Record<string, unknown>;
  end: Record<string, unknown>;
  archive: { bytes: number; sha256: string; entries: number };
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

export interface LoadedSnapshot extends Snapshot {
  id: string;
}

/** Blobs smaller than this are compressed on the calling thread. */
const SYNC_COMPRESS_MAX = 32 * 1024;

/** Target size of a pack file. */
export const PACK_TARGET = 4 * 1024 * 1024;
/** Packs per index file written by a backup. */
const PACKS_PER_INDEX = 64;
const PACK_MAGIC = Buffer.from("FRP1");
const INDEX_MAGIC = Buffer.from("FRI1");
const PACK_ENTRY = 42; // type, flags, id(32), stored length u32, raw length u32
const INDEX_ENTRY = 46; // type, flags, id(32), offset u32, stored u32, raw u32

export function hex(b: Buffer): string {
  return b.toString("hex");
}

function parseConfig(raw: Buffer, where: string): RepoConfig {
  let c: RepoConfig;
  try {
    c = JSON.parse(raw.toString("utf8")) as RepoConfig;
  } catch {
    throw new FerryError("REPO_CORRUPT", `${where}/config is not JSON`);
  }
  if (typeof c.ferry_repository !== "number") {
    throw new FerryError(
      "REPO_NOT_FOUND",
      `${where} is not a Ferry repository (no format in its config)`,
    );
  }
  if (c.ferry_repository > FORMAT_VERSION) {
    throw new FerryError(
      "REPO_FORMAT_UNSUPPORTED",
      `${where} has repository format ${c.ferry_repository}; this ferry (${VERSION}) reads format ${FORMAT_VERSION}: upgrade ferry`,
    );
  }
  if (c.ferry_repository !== FORMAT_VERSION || !/^[0-9a-f]{64}$/.test(c.id)) {
    throw new FerryError("REPO_FORMAT_UNSUPPORTED", `${where} has an unknown repository format`);
  }
  return c;
}

export interface OpenOptions {
  /** The password, or undefined for a repository made with --insecure-no-password. */
  password: string | undefined;
}

interface PackBuilder {
  parts: Buffer[];
  size: number;
  entries: { type: number; flags: number; id: Buffer; length: number; rawLength: number }[];
}

export class Repository {
  readonly index = new Map<string, IndexEntry>();
  /** Index files loaded into `index`. */
  readonly indexFiles = new Set<string>();
  /** Further copies of indexed blobs in other packs (after an interrupted prune, concurrent backups). */
  readonly duplicates: (IndexEntry & { id: string })[] = [];
  private readonly inFlight = new Set<string>();
  private readonly packers: Record<"data" | "meta", PackBuilder | undefined> = {
    data: undefined,
    meta: undefined,
  };
  private readonly packWrites = new Set<Promise<void>>();
  /** Packs written by this session and not yet in an index file. */
  private unindexed: { pack: string; entries: (IndexEntry & { id: Buffer })[] }[] = [];
  readonly gear: Uint32Array;
  stats = { newBlobs: 0, newRaw: 0, newStored: 0, packs: 0 };

  private constructor(
    readonly backend: Backend,
    readonly config: RepoConfig,
    readonly crypto: Crypto,
  ) {
    this.gear = gearTable(crypto.chunkerSeed);
  }

  get encrypted(): boolean {
    return this.crypto.encrypted;
  }

  static async init(
    backend: Backend & { create?(): Promise<void> },
    password: string | undefined,
    scrypt?: ScryptParams,
  ): Promise<Repository> {
    if (await backend.exists("config", "config")) {
      throw new FerryError("REPO_EXISTS", `${backend.location} already holds a repository`);
    }
    await backend.create?.();
    const repoId = hex(randomBytes(32));
    const config: RepoConfig = {
      ferry_repository: FORMAT_VERSION,
      id: repoId,
      created: new Date().toISOString(),
      encrypted: password !== undefined,
      compression: "zstd",
      chunker: { content: CONTENT_PARAMS, meta: META_PARAMS },
      inline_max: 4096,
    };
    let crypto: Crypto = new PlainCrypto();
    if (password !== undefined) {
      const keys = newMasterKeys();
      const kf = makeKeyFile(password, keys, repoId, hostname(), scrypt);
      const raw = Buffer.from(`${JSON.stringify(kf, null, 2)}\n`);
      await backend.write("keys", hex(sha256(raw)), raw);
      crypto = new AeadCrypto(keys);
    }
    // The config is written last: a crash before leaves no repository, just files.
    await backend.write("config", "config", Buffer.from(`${JSON.stringify(config, null, 2)}\n`));
    return new Repository(backend, config, crypto);
  }

  static async open(backend: Backend, opts: OpenOptions): Promise<Repository> {
    let raw: Buffer;
    try {
      raw = await backend.read("config", "config");
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") {
        throw new FerryError(
          "REPO_NOT_FOUND",
          `no repository at ${backend.location} (create one with 'ferry init')`,
        );
      }
      throw err;
    }
    const config = parseConfig(raw, backend.location);
    const keys = await backend.list("keys");
    if (!config.encrypted) {
      // Downgrade defence: an attacker who can write the repository must not be able to
      // turn an encrypted repository into a plaintext one by rewriting its config.
      if (keys.length > 0) {
        throw new FerryError(
          "REPO_CORRUPT",
          `${backend.location}/config says the repository is unencrypted but it has key files: refusing (the config may have been tampered with)`,
        );
      }
      if (opts.password !== undefined) {
        throw new FerryError(
          "REPO_UNENCRYPTED",
          `${backend.location} is an unencrypted repository (made with --insecure-no-password) but a password was given: refusing, so backups meant to be encrypted are not stored in plaintext`,
        );
      }
      return new Repository(backend, config, new PlainCrypto());
    }
    if (opts.password === undefined) {
      throw new FerryError(
        "PASSWORD_REQUIRED",
        `${backend.location} is encrypted: give its password in FERRY_PASSWORD, --password-file or --password-command`,
      );
    }
    if (keys.length === 0)
      throw new FerryError("REPO_CORRUPT", `${backend.location} has no key files`);
    for (const k of keys) {
      const text = await backend.read("keys", k.name);
      let kf: KeyFile;
      try {
        kf = JSON.parse(text.toString("utf8")) as KeyFile;
      } catch {
        continue;
      }
      const master = openKeyFile(kf, opts.password, config.id);
      if (master !== undefined) return new Repository(backend, config, new AeadCrypto(master));
    }
    throw new FerryError(
      "REPO_WRONG_PASSWORD",
      `wrong password for ${backend.location}: no key file opens with it`,
    );
  }

  // ---- files (index, snapshots, locks) ----

  /** Seals and writes a small file under its content hash; returns the name. */
  async writeFile(kind: ObjectKind, plain: Buffer): Promise<string> {
    const body = this.crypto.seal(plain, `ferry-${kind}`);
    const name = hex(sha256(body));
    await this.backend.write(kind, name, body);
    return name;
  }

  async readFile(kind: ObjectKind, name: string): Promise<Buffer> {
    const body = await this.backend.read(kind, name);
    if (hex(sha256(body)) !== name) {
      throw new FerryError("REPO_CORRUPT", `${kind}/${name} does not match its name (damaged)`);
    }
    return this.crypto.open(body, `ferry-${kind}`, `${kind}/${name}`);
  }

  // ---- index ----

  async loadIndex(): Promise<void> {
    for (const f of await this.backend.list("index")) await this.loadIndexFile(f.name);
  }

  async loadIndexFile(name: string): Promise<void> {
    if (this.indexFiles.has(name)) return;
    const plain = await this.readFile("index", name);
    for (const [pack, entries] of decodeIndex(plain, name)) {
      for (const e of entries) {
        const k = hex(e.id);
        const entry: IndexEntry = {
          pack,
          type: e.type,
          flags: e.flags,
          offset: e.offset,
          length: e.length,
          rawLength: e.rawLength,
        };
        const have = this.index.get(k);
        if (have === undefined) this.index.set(k, entry);
        else if (have.pack !== pack) this.duplicates.push({ ...entry, id: k });
      }
    }
    this.indexFiles.add(name);
  }

  /** Every indexed copy of every blob (a blob may sit in several packs). */
  *allEntries(): Generator<[string, IndexEntry]> {
    yield* this.index;
    for (const d of this.duplicates) yield [d.id, d];
  }

  /** Writes an index file for packs; returns its name. */
  async writeIndex(
    packs: { pack: string; entries: (IndexEntry & { id: Buffer })[] }[],
  ): Promise<string> {
    return this.writeFile("index", encodeIndex(packs));
  }

  // ---- blobs ----

  /**
   * Stores a blob unless the repository (or this session) already has it. Returns its id
   * and whether it was new. Resolves once the blob is in a pack builder; packs are
   * written in the background (see flush).
   */
  async saveBlob(
    type: BlobType,
    data: Buffer,
    knownId?: Buffer,
  ): Promise<{ id: Buffer; isNew: boolean }> {
    const id = knownId ?? this.crypto.blobId(data);
    const k = hex(id);
    if (this.index.has(k) || this.inFlight.has(k)) return { id, isNew: false };
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
    const sealed = this.crypto.seal(stored, blobAad(id, type));
    const which = type === BlobType.data ? "data" : "meta";
    let p = this.packers[which];
    if (p === undefined) {
      p = { parts: [], size: 0, entries: [] };
      this.packers[which] = p;
    }
    p.parts.push(sealed);
    p.size += sealed.length;
    p.entries.push({ type, flags, id, length: sealed.length, rawLength: data.length });
    this.stats.newBlobs++;
    this.stats.newRaw += data.length;
    this.stats.newStored += sealed.length;
    if (p.size >= PACK_TARGET) {
      this.packers[which] = undefined;
      await this.startPackWrite(p);
    }
    return { id, isNew: true };
  }

  private async startPackWrite(p: PackBuilder): Promise<void> {
    // At most two packs in flight: bounded memory, and the disk stays busy.
    while (this.packWrites.size >= 2) await Promise.race(this.packWrites);
    const w = this.writePack(p).finally(() => this.packWrites.delete(w));
    this.packWrites.add(w);
    // Surface errors to flush() while not crashing on an unhandled rejection meanwhile.
    w.catch(() => {});
  }

  private async writePack(p: PackBuilder): Promise<void> {
    const { pack, entries } = await this.writeRawPack(p.parts, p.entries);
    for (const e of entries) {
      const k = hex(e.id);
      this.index.set(k, {
        pack,
        type: e.type,
        flags: e.flags,
        offset: e.offset,
        length: e.length,
        rawLength: e.rawLength,
      });
      this.inFlight.delete(k);
    }
    this.stats.packs++;
    const name = pack;
    this.unindexed.push({ pack: name, entries });
    if (this.unindexed.length >= PACKS_PER_INDEX) {
      const batch = this.unindexed;
      this.unindexed = [];
      this.indexFiles.add(await this.writeIndex(batch));
    }
  }

  /** Writes sealed blobs as one pack (header and trailer appended); returns its index entries. */
  async writeRawPack(
    parts: Buffer[],
    list: { type: number; flags: number; id: Buffer; length: number; rawLength: number }[],
  ): Promise<{ pack: string; entries: (IndexEntry & { id: Buffer })[] }> {
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
    const sealedHeader = this.crypto.seal(header, "ferry-pack-header");
    const trailer = Buffer.alloc(8);
    trailer.writeUInt32LE(sealedHeader.length, 0);
    PACK_MAGIC.copy(trailer, 4);
    const all = [...parts, sealedHeader, trailer];
    // Hashed on the thread pool (WebCrypto), not the main thread that chunks and hashes
    // the incoming archive.
    const pack = Buffer.from(await webcrypto.subtle.digest("SHA-256", Buffer.concat(all))).toString(
      "hex",
    );
    await this.backend.write("packs", pack, all);
    failpoint("repo-after-pack");
    let offset = 0;
    const entries: (IndexEntry & { id: Buffer })[] = [];
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

  /** Writes every pending pack and an index for them; after it, every saved blob is durable and indexed. */
  async flush(): Promise<void> {
    for (const which of ["data", "meta"] as const) {
      const p = this.packers[which];
      this.packers[which] = undefined;
      if (p !== undefined && p.entries.length > 0) await this.startPackWrite(p);
    }
    while (this.packWrites.size > 0) {
      // Rejections propagate here.
      await Promise.all([...this.packWrites]);
    }
    if (this.unindexed.length > 0) {
      const batch = this.unindexed;
      this.unindexed = [];
      this.indexFiles.add(await this.writeIndex(batch));
    }
  }

  /** Loads a blob's plaintext, checking its id. */
  async loadBlob(id: Buffer, expectLength?: number): Promise<Buffer> {
    const k = hex(id);
    const e = this.index.get(k);
    if (e === undefined) {
      throw new FerryError(
        "REPO_CORRUPT",
        `blob ${k} is in no index: the repository is incomplete (run 'ferry check')`,
      );
    }
    const sealed = await this.backend.read("packs", e.pack, e.offset, e.length);
    const data = await this.openBlob(id, e, sealed, true);
    if (expectLength !== undefined && data.length !== expectLength) {
      throw new FerryError(
        "REPO_CORRUPT",
        `blob ${k} has ${data.length} bytes, its tree says ${expectLength}`,
      );
    }
    return data;
  }

  /** Opens, decompresses and checks one stored blob. */
  async openBlob(
    id: Buffer,
    e: { type: number; flags: number; rawLength: number; pack: string },
    sealed: Buffer,
    async = false,
  ): Promise<Buffer> {
    const what = `${blobTypeName(e.type)} blob ${hex(id)} in pack ${e.pack}`;
    const stored = this.crypto.open(sealed, blobAad(id, e.type), what);
    let data = stored;
    if (e.flags & FLAG_ZSTD) {
      data = async
        ? await decompress(stored, e.rawLength, what)
        : decompressSync(stored, e.rawLength, what);
    }
    if (!this.crypto.blobId(data).equals(id)) {
      throw new FerryError("REPO_CORRUPT", `${what} does not hash to its id (damaged)`);
    }
    return data;
  }

  /** Reads a pack's header: its entries with offsets. */
  async readPackHeader(name: string, size: number): Promise<(IndexEntry & { id: Buffer })[]> {
    if (size < 8) throw new FerryError("REPO_CORRUPT", `pack ${name} is too short`);
    const trailer = await this.backend.read("packs", name, size - 8, 8);
    if (!trailer.subarray(4).equals(PACK_MAGIC))
      throw new FerryError("REPO_CORRUPT", `pack ${name} has no pack trailer`);
    const hlen = trailer.readUInt32LE(0);
    if (hlen + 8 > size)
      throw new FerryError("REPO_CORRUPT", `pack ${name} has a bad header length`);
    const sealed = await this.backend.read("packs", name, size - 8 - hlen, hlen);
    const h = this.crypto.open(sealed, "ferry-pack-header", `the header of pack ${name}`);
    return decodePackHeader(h, name, size - 8 - hlen);
  }

  // ---- snapshots ----

  async saveSnapshot(s: Snapshot): Promise<string> {
    return this.writeFile("snapshots", Buffer.from(JSON.stringify(s)));
  }

  async loadSnapshot(name: string): Promise<LoadedSnapshot> {
    const plain = await this.readFile("snapshots", name);
    const s = JSON.parse(plain.toString("utf8")) as Snapshot;
    if (s.version !== 1)
      throw new FerryError("REPO_FORMAT_UNSUPPORTED", `snapshot ${name} has an unknown version`);
    return { ...s, id: name };
  }

  /** Every snapshot, oldest first. */
  async listSnapshots(): Promise<LoadedSnapshot[]> {
    const out: LoadedSnapshot[] = [];
    for (const f of await this.backend.list("snapshots")) out.push(await this.loadSnapshot(f.name));
    out.sort((a, b) => (a.time < b.time ? -1 : a.time > b.time ? 1 : a.id < b.id ? -1 : 1));
    return out;
  }

  /** Finds a snapshot by id or unique id prefix, or "latest" (optionally for an app). */
  async findSnapshot(ref: string, app?: string): Promise<LoadedSnapshot> {
    if (ref === "latest") {
      const all = (await this.listSnapshots()).filter((s) => app === undefined || s.app === app);
      const last = all[all.length - 1];
      if (last === undefined)
        throw new FerryError(
          "SNAPSHOT_NOT_FOUND",
          `no snapshot${app ? ` of ${app}` : ""} in the repository`,
        );
      return last;
    }
    if (!/^[0-9a-f]{4,64}$/.test(ref)) {
      throw new FerryError(
        "SNAPSHOT_NOT_FOUND",
        `${JSON.stringify(ref)} is not a snapshot id (hex, at least 4 digits) nor 'latest'`,
      );
    }
    const names = (await this.backend.list("snapshots"))
      .map((f) => f.name)
      .filter((n) => n.startsWith(ref));
    if (names.length === 0) throw new FerryError("SNAPSHOT_NOT_FOUND", `no snapshot ${ref}`);
    if (names.length > 1)
      throw new FerryError(
        "SNAPSHOT_NOT_FOUND",
        `${ref} is ambiguous: ${names.length} snapshots start with it`,
      );
    return this.loadSnapshot(names[0] as string);
  }

  // ---- trees ----

  /** Every blob reference listed by tree blobs, in order, loading one tree at a time. */
  async *refs(trees: string[]): AsyncGenerator<BlobRef> {
    for (const t of trees) {
      const data = await this.loadBlob(Buffer.from(t, "hex"));
      yield* decodeTree(data, t);
    }
  }
}

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

function decodePackHeader(
  h: Buffer,
  name: string,
  dataEnd: number,
): (IndexEntry & { id: Buffer })[] {
  if (h[0] !== 1 || (h.length - 1) % PACK_ENTRY !== 0)
    throw new FerryError("REPO_CORRUPT", `pack ${name} has a malformed header`);
  const out: (IndexEntry & { id: Buffer })[] = [];
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

export function encodeIndex(
  packs: { pack: string; entries: (IndexEntry & { id: Buffer })[] }[],
): Buffer {
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

export function whoami(): { host: string; user: string } {
  let user = String(process.getuid?.() ?? "");
  try {
    user = userInfo().username;
  } catch {}
  return { host: hostname(), user };
}
