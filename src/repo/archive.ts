/**
 * Archives in and out of a repository (docs/repository.md, "Archives").
 *
 * In: `ArchiveStore` takes the stream ferryd sends, checks it with the archive reader
 * (headers, end record, SHA-256), cuts it with TarSplitter into the metadata and content
 * streams, chunks both with FastCDC, stores the chunks as blobs and their order as tree
 * blobs, and finally writes the snapshot — last, after its packs and index are durable.
 * Memory is bounded: one chunk per stream being cut, a few blobs being compressed, two
 * packs being written, one tree of references per stream.
 *
 * Out: `rebuildArchive` walks the metadata stream again with the same TarWalker and puts
 * each large file's content back after its header; the bytes and their SHA-256 are those
 * stored. `listEntries` reads the metadata stream only.
 *
 * Longer than 300 lines on purpose: storing an archive and rebuilding it byte for byte
 * walk the same metadata stream with the same TarWalker; keeping In and Out together
 * keeps them exact inverses.
 */
import { createHash } from "node:crypto";
import { hostname, userInfo } from "node:os";
import type { EndRecord } from "../api/types.js";
import { ArchiveParser, DEFAULT_LIMITS } from "../core/archive/reader.js";
import { decodeBlock, parsePax, resolveHeader, type TarHeader } from "../core/archive/tar.js";
import { FerryError } from "../core/errors.js";
import { failpoint } from "../core/failpoint.js";
import { VERSION } from "../core/version.js";
import { DeltaResolver, endRecordBytes, MetaOut, PreviousArchive } from "./delta.js";
import { FastCDC } from "./fastcdc.js";
import {
  type BlobRef,
  BlobType,
  encodeTree,
  hex,
  type LoadedSnapshot,
  REFS_PER_TREE,
  type Snapshot,
} from "./format.js";
import type { Repository } from "./repository.js";
import { BLOCK, TarSplitter, TarWalker } from "./tarsplit.js";

/** A tree blob is cut after a ref whose id's first byte has these bits clear (1 in 32). */
const TREE_CUT_MASK = 31;
const TREE_MIN_REFS = 8;

/** Blobs being compressed and sealed at once. */
const IN_FLIGHT = 6;

class RefList {
  private refs: BlobRef[] = [];
  readonly trees: string[] = [];
  count = 0;
  constructor(private readonly repo: Repository) {}
  async add(r: BlobRef): Promise<void> {
    this.refs.push(r);
    this.count++;
    // Content-defined cuts of the list itself (on the ids, which are uniformly random):
    // an unchanged run of blobs gives the same tree blobs, so a backup that changed a few
    // files rewrites only the few small trees around them.
    const n = this.refs.length;
    if (n >= REFS_PER_TREE || (n >= TREE_MIN_REFS && ((r.id[0] as number) & TREE_CUT_MASK) === 0)) {
      await this.cut();
    }
  }
  private async cut(): Promise<void> {
    const refs = this.refs;
    this.refs = [];
    const { id } = await this.repo.saveBlob(BlobType.tree, encodeTree(refs));
    this.trees.push(hex(id));
  }
  async finish(): Promise<void> {
    if (this.refs.length > 0) await this.cut();
  }
}

export interface StoreInfo {
  app: string;
  tags: string[];
  time?: Date;
  /**
   * The snapshot whose end record's `token` the request named as `since`: a delta ferryd
   * sends against it is completed from it (delta.ts).
   */
  previous?: LoadedSnapshot;
}

/** A blob to store, or (`ref`) one the repository holds, next in its stream. */
type Queued = { type: BlobType; data: Buffer; ref?: undefined } | { type: BlobType; ref: BlobRef };

export class ArchiveStore {
  readonly parser: ArchiveParser;
  private readonly splitter: TarSplitter;
  private readonly metaCdc: FastCDC;
  private readonly dataCdc: FastCDC;
  private readonly metaRefs: RefList;
  private readonly dataRefs: RefList;
  private readonly resolver: DeltaResolver | undefined;
  private readonly previous: PreviousArchive | undefined;
  private readonly metaOut: MetaOut | undefined;
  /** The archive's bytes until the manifest says whether it is a delta, and its first block. */
  private early: Buffer[] | undefined = [];
  private first = Buffer.alloc(0);
  private queue: Queued[] = [];
  private readonly running = new Set<Promise<unknown>>();
  private failure: unknown;
  private readonly hash = createHash("sha256");
  bytes = 0;
  blobs = 0;
  private readonly started = Date.now();

  constructor(
    private readonly repo: Repository,
    private readonly info: StoreInfo,
  ) {
    this.metaCdc = new FastCDC(repo.gear, repo.config.chunker.meta);
    this.dataCdc = new FastCDC(repo.gear, repo.config.chunker.content);
    this.metaRefs = new RefList(repo);
    this.dataRefs = new RefList(repo);
    const meta = (b: Buffer) => this.queue.push({ type: BlobType.meta, data: b });
    const data = (b: Buffer) => this.queue.push({ type: BlobType.data, data: b });
    this.splitter = new TarSplitter({
      meta: (b) => this.metaCdc.push(b, meta),
      contentStart: () => {},
      content: (b) => this.dataCdc.push(b, data),
      contentEnd: () => this.dataCdc.flush(data),
    });
    const since = info.previous?.end.token;
    if (info.previous !== undefined && typeof since === "string") {
      this.previous = new PreviousArchive(repo, info.previous);
      this.metaOut = new MetaOut(this.metaCdc, this.previous, meta, (r) =>
        this.queue.push({ type: BlobType.meta, ref: r }),
      );
      this.resolver = new DeltaResolver(
        {
          meta: this.metaOut,
          content: (b) => this.dataCdc.push(b, data),
          contentEnd: () => this.dataCdc.flush(data),
          storedRef: (r) => this.queue.push({ type: BlobType.data, ref: r }),
          drain: () => this.drain(),
        },
        this.previous,
        since,
        () => this.first,
      );
      this.parser = new ArchiveParser(this.resolver, DEFAULT_LIMITS, true);
    } else {
      this.parser = new ArchiveParser();
      this.early = undefined;
    }
  }

  /** What the archive was: "delta" when ferryd sent one (completed from `previous`). */
  get kind(): "full" | "delta" | undefined {
    return this.resolver === undefined ? "full" : this.resolver.kind;
  }

  /** Unchanged files (and bytes) a completed delta took from the previous snapshot. */
  get unchanged(): { files: number; bytes: number } {
    return { files: this.resolver?.unchanged ?? 0, bytes: this.resolver?.unchangedBytes ?? 0 };
  }

  /** Takes the next bytes of the archive; resolves when it is ready for more. */
  async write(chunk: Buffer): Promise<void> {
    if (this.first.length < BLOCK) {
      this.first = Buffer.concat([this.first, chunk.subarray(0, BLOCK - this.first.length)]);
    }
    await this.parser.write(chunk);
    this.hash.update(chunk);
    this.bytes += chunk.length;
    if (this.early !== undefined) {
      // A delta is written by the resolver as the reader goes; a full archive as it came,
      // which is known once the manifest was read.
      this.early.push(chunk);
      const kind = this.resolver?.kind;
      if (kind === undefined) return;
      if (kind === "full") for (const b of this.early) this.splitter.push(b);
      this.early = undefined;
    } else if (this.resolver?.kind !== "delta") {
      this.splitter.push(chunk);
    }
    await this.drain();
  }

  private async drain(): Promise<void> {
    const q = this.queue;
    this.queue = [];
    for (const b of q) {
      if (this.failure !== undefined) throw this.failure;
      this.blobs++;
      if (b.ref !== undefined) {
        // A completed delta's unchanged content or metadata: the previous snapshot's blob.
        if (!this.repo.index.has(hex(b.ref.id))) {
          throw new FerryError(
            "REPO_DELTA_UNRESOLVED",
            `blob ${hex(b.ref.id)} of the previous snapshot is in no index: the delta cannot be completed, so nothing was stored (run 'ferry check', then 'ferry backup --force-full')`,
          );
        }
        await (b.type === BlobType.data ? this.dataRefs : this.metaRefs).add(b.ref);
        continue;
      }
      const id = this.repo.crypto.blobId(b.data);
      await (b.type === BlobType.data ? this.dataRefs : this.metaRefs).add({
        id,
        length: b.data.length,
      });
      while (this.running.size >= IN_FLIGHT) await Promise.race(this.running);
      const p = this.repo.saveBlob(b.type, b.data, id).then(
        () => {},
        (err) => {
          this.failure ??= err;
        },
      );
      const t = p.finally(() => this.running.delete(t));
      this.running.add(t);
    }
    if (this.failure !== undefined) throw this.failure;
  }

  /** The archive is complete: verify it, make everything durable, write the snapshot. */
  async finish(): Promise<{ id: string; snapshot: Snapshot; end: EndRecord }> {
    const end = this.parser.finish();
    await this.previous?.close();
    if (this.resolver?.kind === "delta") {
      this.metaOut?.finish();
    } else {
      this.splitter.finish();
      this.metaCdc.flush((b) => this.queue.push({ type: BlobType.meta, data: b }));
    }
    await this.drain();
    await Promise.all([...this.running]);
    if (this.failure !== undefined) throw this.failure;
    await this.metaRefs.finish();
    await this.dataRefs.finish();
    await this.repo.flush();
    failpoint("repo-backup-before-snapshot");
    const received = this.parser.manifest as unknown as Record<string, unknown>;
    const sha256 = this.hash.digest("hex");
    const who = whoami();
    const snapshot: Snapshot = {
      version: 1,
      time: (this.info.time ?? new Date()).toISOString(),
      host: who.host,
      user: who.user,
      app: this.info.app,
      driver: String(received.driver ?? ""),
      tags: this.info.tags,
      manifest: received,
      end: end as unknown as Record<string, unknown>,
      archive: { bytes: this.bytes, sha256, entries: end.entries },
      meta_tree: this.metaRefs.trees,
      data_tree: this.dataRefs.trees,
      warnings: end.warnings ?? [],
      stats: {
        blobs: this.blobs,
        new_blobs: this.repo.stats.newBlobs,
        new_bytes_raw: this.repo.stats.newRaw,
        new_bytes_stored: this.repo.stats.newStored,
        seconds: (Date.now() - this.started) / 1000,
      },
      ferry_version: VERSION,
    };
    const r = this.resolver;
    if (r?.kind === "delta" && this.info.previous !== undefined) {
      // The stored streams are the complete archive up to its end record; `dump` makes the
      // end record over what it rebuilds (rebuildArchive).
      const fields: Record<string, unknown> = {
        entries: end.entries,
        payload_bytes: r.out - r.manifestBytes,
      };
      if (end.warnings !== undefined) fields.warnings = end.warnings;
      if (end.token !== undefined) fields.token = end.token;
      const endBytes = endRecordBytes(fields, "0".repeat(64), r.mtime).length;
      snapshot.version = 2;
      snapshot.manifest = r.storedManifest as Record<string, unknown>;
      snapshot.end = fields;
      snapshot.archive = {
        bytes: r.out + endBytes,
        sha256: null,
        entries: end.entries,
        manifest_bytes: r.manifestBytes,
        payload_bytes: r.out - r.manifestBytes,
        end_mtime: r.mtime,
      };
      snapshot.delta = {
        since: String(this.info.previous.end.token),
        previous: this.info.previous.id,
        unchanged: r.unchanged,
        unchanged_bytes: r.unchangedBytes,
        received: {
          bytes: this.bytes,
          sha256,
          end: end as unknown as Record<string, unknown>,
        },
      };
    }
    // Written last: only now is every blob it names durable and indexed.
    const id = await this.repo.saveSnapshot(snapshot);
    return { id, snapshot, end };
  }
}

/** Loads blobs in order with a few reads ahead. */
async function* blobsOf(
  repo: Repository,
  refs: AsyncGenerator<BlobRef>,
  ahead = 4,
): AsyncGenerator<Buffer> {
  const q: Promise<Buffer>[] = [];
  for await (const r of refs) {
    const p = repo.loadBlob(r.id, r.length);
    p.catch(() => {});
    q.push(p);
    if (q.length >= ahead) yield await (q.shift() as Promise<Buffer>);
  }
  while (q.length > 0) yield await (q.shift() as Promise<Buffer>);
}

/**
 * The stored archive, byte for byte. Throws REPO_CORRUPT (after the last byte) if what
 * was rebuilt does not have the length and SHA-256 recorded in the snapshot.
 *
 * A completed delta (version 2) is stored up to its end record: the end record is made
 * here over the payload just rebuilt (every blob of which was authenticated and checked
 * against its id on the way), after checking its entry count and length against the
 * snapshot, so the archive verifies like any other.
 */
export async function* rebuildArchive(repo: Repository, snap: Snapshot): AsyncGenerator<Buffer> {
  const completed = snap.version === 2;
  let headers = 0;
  const walker = new TarWalker(completed ? () => void headers++ : undefined);
  const content = blobsOf(repo, repo.refs(snap.data_tree));
  const hash = createHash("sha256");
  /** Where the hashed range starts: everything for v1, the payload for v2. */
  const from = completed ? (snap.archive.manifest_bytes ?? 0) : 0;
  let bytes = 0;
  const out = (b: Buffer) => {
    if (bytes + b.length > from) hash.update(bytes >= from ? b : b.subarray(from - bytes));
    bytes += b.length;
    return b;
  };
  for await (const blob of blobsOf(repo, repo.refs(snap.meta_tree))) {
    let off = 0;
    while (off < blob.length) {
      const n = walker.take(blob.subarray(off));
      if (n > 0) yield out(blob.subarray(off, off + n));
      off += n;
      if (walker.mode === "content") {
        let need = walker.need;
        while (need > 0) {
          const r = await content.next();
          if (r.done === true || r.value.length > need) {
            throw new FerryError(
              "REPO_CORRUPT",
              "a snapshot's content blobs do not line up with its file headers",
            );
          }
          need -= r.value.length;
          yield out(r.value);
        }
        walker.contentDone();
      }
    }
  }
  if ((await content.next()).done !== true) {
    throw new FerryError("REPO_CORRUPT", "a snapshot has more content blobs than its headers use");
  }
  const sha = hash.digest("hex");
  if (completed) {
    const payload = bytes - from;
    if (
      !walker.atBoundary ||
      headers - 1 !== snap.archive.entries ||
      payload !== snap.archive.payload_bytes
    ) {
      throw new FerryError(
        "REPO_CORRUPT",
        `the rebuilt archive (${headers - 1} entries, ${payload} payload bytes) differs from the one stored (${snap.archive.entries} entries, ${snap.archive.payload_bytes} payload bytes)`,
      );
    }
    const end = endRecordBytes(snap.end, sha, snap.archive.end_mtime ?? 0);
    bytes += end.length;
    if (bytes !== snap.archive.bytes) {
      throw new FerryError(
        "REPO_CORRUPT",
        `the rebuilt archive has ${bytes} bytes, the snapshot says ${snap.archive.bytes}`,
      );
    }
    yield end;
    return;
  }
  if (bytes !== snap.archive.bytes || sha !== snap.archive.sha256) {
    throw new FerryError(
      "REPO_CORRUPT",
      `the rebuilt archive (${bytes} bytes, sha256 ${sha.slice(0, 16)}…) differs from the one stored (${snap.archive.bytes} bytes, ${String(snap.archive.sha256).slice(0, 16)}…)`,
    );
  }
}

/** Every entry's header (pax records applied), reading only the metadata stream. */
export async function* listEntries(
  repo: Repository,
  snap: LoadedSnapshot,
): AsyncGenerator<TarHeader> {
  const headers: TarHeader[] = [];
  const walker = new TarWalker((e) => {
    const raw = decodeBlock(e.block);
    headers.push(resolveHeader(raw, e.pax === undefined ? undefined : parsePax(e.pax)));
  });
  for await (const blob of blobsOf(repo, repo.refs(snap.meta_tree))) {
    let off = 0;
    while (off < blob.length) {
      off += walker.take(blob.subarray(off));
      if (walker.mode === "content") walker.contentDone();
      for (const h of headers) yield h;
      headers.length = 0;
    }
  }
}

/** Who makes a snapshot: this host and the user running ferry. */
function whoami(): { host: string; user: string } {
  let user = String(process.getuid?.() ?? "");
  try {
    user = userInfo().username;
  } catch {}
  return { host: hostname(), user };
}
