/**
 * A Ferry repository (docs/repository.md): config, keys, packs of blobs, index files,
 * snapshots and locks on a Backend. This module opens and creates repositories (through
 * config.ts), stores blobs (through packs.ts) and loads them (deduplicated, compressed,
 * sealed, packed), reads and writes the index, snapshots and small files. The byte formats
 * are format.ts's; what a snapshot's blobs mean is archive.ts's business.
 */
import { FerryError } from "../core/errors.js";
import type { Backend, ObjectKind } from "./backend.js";
import { decompress, decompressSync } from "./compress.js";
import { createRepo, type OpenOptions, openRepo, type RepoConfig } from "./config.js";
import { type Crypto, type ScryptParams, sha256 } from "./crypto.js";
import { gearTable } from "./fastcdc.js";
import {
  type BlobRef,
  type BlobType,
  blobAad,
  blobTypeName,
  decodeIndex,
  decodePackHeader,
  decodePackTrailer,
  decodeTree,
  encodeIndex,
  FLAG_ZSTD,
  hex,
  type IndexEntry,
  indexEntry,
  type LoadedSnapshot,
  type PackEntry,
  type PackedBlob,
  type Snapshot,
} from "./format.js";
import { PackWriter } from "./packs.js";

/**
 * Blobs larger than this are decompressed on the thread pool when reading asynchronously;
 * metadata blobs (at most 32 KiB) and trees of up to ~1,800 references are not.
 */
const SYNC_DECOMPRESS_MIN = 64 * 1024;

export class Repository {
  readonly index = new Map<string, IndexEntry>();
  /** Index files loaded into `index`. */
  readonly indexFiles = new Set<string>();
  /** Further copies of indexed blobs in other packs (after an interrupted prune, concurrent backups). */
  readonly duplicates: (IndexEntry & { id: string })[] = [];
  readonly gear: Uint32Array;
  private readonly packs: PackWriter;

  private constructor(
    readonly backend: Backend,
    readonly config: RepoConfig,
    readonly crypto: Crypto,
  ) {
    this.gear = gearTable(crypto.chunkerSeed);
    this.packs = new PackWriter(this);
  }

  get encrypted(): boolean {
    return this.crypto.encrypted;
  }

  /** What this session wrote: new blobs, their plaintext and stored bytes, packs. */
  get stats(): PackWriter["stats"] {
    return this.packs.stats;
  }

  static async init(
    backend: Backend & { create?(): Promise<void> },
    password: string | undefined,
    scrypt?: ScryptParams,
  ): Promise<Repository> {
    const { config, crypto } = await createRepo(backend, password, scrypt);
    return new Repository(backend, config, crypto);
  }

  static async open(backend: Backend, opts: OpenOptions): Promise<Repository> {
    const { config, crypto } = await openRepo(backend, opts);
    return new Repository(backend, config, crypto);
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
        const entry = indexEntry(pack, e);
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
  async writeIndex(packs: { pack: string; entries: PackedBlob[] }[]): Promise<string> {
    return this.writeFile("index", encodeIndex(packs));
  }

  // ---- blobs ----

  /**
   * Stores a blob unless the repository (or this session) already has it; see
   * PackWriter.save (packs.ts).
   */
  saveBlob(
    type: BlobType,
    data: Buffer,
    knownId?: Buffer,
  ): Promise<{ id: Buffer; isNew: boolean }> {
    return this.packs.save(type, data, knownId);
  }

  /** Writes every pending pack and an index for them; after it, every saved blob is durable and indexed. */
  flush(): Promise<void> {
    return this.packs.flush();
  }

  /** Writes sealed blobs as one pack (header and trailer appended); returns its index entries. */
  writeRawPack(
    parts: Buffer[],
    list: PackEntry[],
  ): Promise<{ pack: string; entries: PackedBlob[] }> {
    return this.packs.writeRawPack(parts, list);
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
      // Small blobs (metadata, trees) are cheaper to decompress here than on the thread pool.
      data =
        async && e.rawLength >= SYNC_DECOMPRESS_MIN
          ? await decompress(stored, e.rawLength, what)
          : decompressSync(stored, e.rawLength, what);
    }
    if (!this.crypto.blobId(data).equals(id)) {
      throw new FerryError("REPO_CORRUPT", `${what} does not hash to its id (damaged)`);
    }
    return data;
  }

  /** Reads a pack's header: its entries with offsets. */
  async readPackHeader(name: string, size: number): Promise<PackedBlob[]> {
    if (size < 8) throw new FerryError("REPO_CORRUPT", `pack ${name} is too short`);
    const trailer = await this.backend.read("packs", name, size - 8, 8);
    const hlen = decodePackTrailer(trailer, name, size);
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
    if (s.version !== 1 && s.version !== 2)
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
