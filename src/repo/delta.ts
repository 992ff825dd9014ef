/**
 * Completing a delta (docs/repository.md, "Incremental backups").
 *
 * `ferry backup` asks ferryd for a delta against the app's latest snapshot (its end
 * record's `token`). In the delta, each regular file that is unchanged since that archive
 * is a header without data, marked `FERRY.unchanged` with the file's real size and its
 * entry's position in that archive (src/core/archive/tar.ts). `DeltaResolver`, driven by
 * the strict reader's events (so every byte it sees was already accepted), turns the
 * delta back into the complete archive on its way into the repository:
 *
 * - every entry that is not unchanged passes as it came (its header bytes, its body);
 * - an unchanged entry is looked up at its position in the previous snapshot
 *   (`PreviousArchive`, which walks that snapshot's streams forward, so memory stays
 *   bounded), and must be a regular file there with the same path, size and mtime to the
 *   nanosecond. Its header is what a full archive has (the delta's header with the size
 *   put back and without the FERRY records): when every other field is equal too, that
 *   is byte for byte the previous snapshot's header, which is copied; otherwise it is
 *   encoded afresh. Its body comes from the previous snapshot: a small file's bytes from
 *   its metadata stream, a large file's content as the previous snapshot's blob
 *   references, without reading or hashing the content again;
 * - the manifest says `"kind": "full"` (and no `since`), and the end record is left out:
 *   the stored streams are the complete archive up to its end record, which `dump`
 *   computes over the bytes it rebuilds (archive.ts).
 *
 * The metadata stream it writes is mostly a copy of the previous one. `MetaOut` chunks
 * it like any other, except that whenever the chunker stands at a chunk boundary and the
 * next bytes are a whole blob of the previous snapshot's metadata stream, copied, that
 * blob is referenced as it is instead of being chunked and hashed again: the rebuilt
 * stream is the same bytes either way, and an unchanged tree costs no chunking.
 *
 * Anything that does not resolve refuses the whole snapshot (REPO_DELTA_UNRESOLVED): no
 * snapshot is written, and `ferry backup --force-full` asks for a full archive.
 *
 * Longer than 300 lines on purpose: resolving a delta's unchanged entries and writing the
 * completed metadata stream are one pass over the strict reader's events; split, each
 * half would need the other's state.
 */
import type { Manifest } from "../api/types.js";
import { END_PATH, MANIFEST_PATH } from "../api/types.js";
import type { ParseHandler } from "../core/archive/reader.js";
import {
  BLOCK,
  decodeBlock,
  encodeHeader,
  isZeroBlock,
  padding,
  parsePax,
  resolveHeader,
  type TarHeader,
} from "../core/archive/tar.js";
import { FerryError } from "../core/errors.js";
import type { FastCDC } from "./fastcdc.js";
import type { BlobRef, LoadedSnapshot } from "./format.js";
import type { Repository } from "./repository.js";
import { INLINE_MAX } from "./tarsplit.js";

const ZEROS = Buffer.alloc(BLOCK);

function unresolved(why: string): FerryError {
  return new FerryError(
    "REPO_DELTA_UNRESOLVED",
    `${why}: the delta cannot be completed from the previous snapshot, so nothing was stored (run 'ferry backup --force-full')`,
  );
}

/** Whether an entry's body goes to the content stream (tarsplit.ts's rule). */
function isContent(h: TarHeader): boolean {
  return h.type === "file" && h.size >= INLINE_MAX;
}

// ------------------------------------------------------------------ the previous snapshot

/** A blob of the previous snapshot's metadata stream and where it starts in that stream. */
export interface MetaBlob {
  start: number;
  ref: BlobRef;
}

/** Exact reads from a snapshot's metadata stream, with each blob's place in it. */
class MetaReader {
  /** Blobs fetched and not yet behind every reader, oldest first. */
  readonly blobs: MetaBlob[] = [];
  private ahead: { ref: BlobRef; data: Promise<Buffer> }[] = [];
  private buf: Buffer = Buffer.alloc(0);
  private off = 0;
  /** Offset in the stream of `buf[0]`. */
  private base = 0;
  private next = 0; // stream offset of the next blob to fetch
  private done = false;

  constructor(
    private readonly repo: Repository,
    private readonly refs: AsyncGenerator<BlobRef>,
  ) {}

  /** Offset of the next byte `read` returns. */
  get pos(): number {
    return this.base + this.off;
  }

  private async fill(): Promise<boolean> {
    while (!this.done && this.ahead.length < 4) {
      const r = await this.refs.next();
      if (r.done === true) {
        this.done = true;
        break;
      }
      const data = this.repo.loadBlob(r.value.id, r.value.length);
      data.catch(() => {});
      this.ahead.push({ ref: r.value, data });
    }
    const first = this.ahead.shift();
    if (first === undefined) return false;
    const data = await first.data;
    this.blobs.push({ start: this.next, ref: first.ref });
    this.next += data.length;
    const rest = this.buf.subarray(this.off);
    this.base += this.off;
    this.buf = rest.length === 0 ? data : Buffer.concat([rest, data]);
    this.off = 0;
    return true;
  }

  /** The next `n` bytes; undefined at a clean end of the stream (nothing left). */
  async read(n: number): Promise<Buffer | undefined> {
    while (this.buf.length - this.off < n) {
      if (!(await this.fill())) {
        if (this.buf.length - this.off === 0) return undefined;
        throw new FerryError("REPO_CORRUPT", "a snapshot's metadata stream ends inside an entry");
      }
    }
    const out = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return out;
  }

  /**
   * The bytes [from, pos) just read, as one view when they are still in the buffer
   * (buffers are replaced, never written to, so views stay valid); undefined otherwise.
   */
  since(from: number): Buffer | undefined {
    if (from < this.base) return undefined;
    return this.buf.subarray(from - this.base, this.off);
  }

  async exact(n: number): Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0);
    const b = await this.read(n);
    if (b === undefined) {
      throw new FerryError("REPO_CORRUPT", "a snapshot's metadata stream ends inside an entry");
    }
    return b;
  }

  /** Forgets the blobs that end at or before `offset`. */
  trim(offset: number): void {
    while (this.blobs.length > 0) {
      const b = this.blobs[0] as MetaBlob;
      if (b.start + b.ref.length > offset) break;
      this.blobs.shift();
    }
  }

  async close(): Promise<void> {
    for (const a of this.ahead) await a.data.catch(() => {});
    this.ahead = [];
    await this.refs.return(undefined);
  }
}

/** An entry of the previous snapshot. */
export interface PreviousEntry {
  position: number;
  header: TarHeader;
  /** Where its bytes start in the metadata stream. */
  offset: number;
  /**
   * Its bytes in the metadata stream: the header (pax and ustar blocks), and for a small
   * file its body and padding too. A large file's content and padding come with
   * `takeContent`.
   */
  raw: Buffer;
  /** Whether its body is in the content stream. */
  content: boolean;
}

/**
 * The payload entries of a stored snapshot, by position (0-based, the manifest not
 * counted), walking its metadata and content streams forward together.
 */
export class PreviousArchive {
  private meta!: MetaReader;
  private data!: AsyncGenerator<BlobRef>;
  private position = -1;
  private started = false;
  /** Content bytes of the current large file not taken yet, and its padding. */
  private contentLeft = 0;
  private contentPad = 0;
  /** Bumped each time the walk starts over (offsets start again from 0). */
  generation = 0;

  constructor(
    private readonly repo: Repository,
    readonly snapshot: LoadedSnapshot,
  ) {
    this.open();
  }

  private open(): void {
    this.meta = new MetaReader(this.repo, this.repo.refs(this.snapshot.meta_tree));
    this.data = this.repo.refs(this.snapshot.data_tree);
    this.position = -1;
    this.started = false;
    this.contentLeft = 0;
    this.contentPad = 0;
  }

  async close(): Promise<void> {
    await this.meta.close();
    await this.data.return(undefined);
  }

  /** The metadata blob that starts at `offset`, if one does (of the current walk). */
  blobAt(offset: number): MetaBlob | undefined {
    for (const b of this.meta.blobs) {
      if (b.start === offset) return b;
      if (b.start > offset) return undefined;
    }
    return undefined;
  }

  /** The metadata blobs fetched and not forgotten, in order. */
  blobs(): readonly MetaBlob[] {
    return this.meta.blobs;
  }

  /** Forgets blobs wholly before `offset` (nothing before it will be copied any more). */
  trim(offset: number): void {
    this.meta.trim(offset);
  }

  /** The entry at `position`, or undefined if the archive has no such entry. */
  async seek(position: number): Promise<PreviousEntry | undefined> {
    if (position <= this.position) {
      // ferryd walks in a fixed order, so positions only grow; if they do not (another
      // walk order), start over rather than hold the archive's entries in memory.
      await this.close();
      this.open();
      this.generation++;
    }
    for (;;) {
      const e = await this.next();
      if (e === undefined || e.position === position) return e;
    }
  }

  /**
   * Passes the current large file's blob references, in order, to `each`; returns its
   * padding's bytes and their offset in the metadata stream.
   */
  async takeContent(
    each: (r: BlobRef) => void | Promise<void>,
  ): Promise<{ pad: Buffer; offset: number }> {
    while (this.contentLeft > 0) {
      const r = await this.data.next();
      if (r.done === true || r.value.length > this.contentLeft) {
        throw new FerryError(
          "REPO_CORRUPT",
          `snapshot ${this.snapshot.id}: its content blobs do not line up with its file headers`,
        );
      }
      this.contentLeft -= r.value.length;
      await each(r.value);
    }
    const offset = this.meta.pos;
    const pad = await this.meta.exact(this.contentPad);
    this.contentPad = 0;
    return { pad, offset };
  }

  private async next(): Promise<PreviousEntry | undefined> {
    if (this.contentLeft > 0 || this.contentPad > 0) await this.takeContent(() => {});
    let pax: Map<string, string> | undefined;
    const parts: Buffer[] = [];
    const offset = this.meta.pos;
    for (;;) {
      const block = await this.meta.read(BLOCK);
      if (block === undefined || isZeroBlock(block)) return undefined;
      parts.push(block);
      const raw = decodeBlock(block);
      if (raw.typeflag === "x") {
        const body = await this.meta.exact(raw.size + padding(raw.size));
        parts.push(body);
        pax = parsePax(body.subarray(0, raw.size));
        continue;
      }
      const h = resolveHeader(raw, pax);
      pax = undefined;
      if (this.started && h.path === END_PATH) return undefined;
      const content = isContent(h);
      if (content) {
        this.contentLeft = h.size;
        this.contentPad = padding(h.size);
      } else {
        parts.push(await this.meta.exact(h.size + padding(h.size)));
      }
      if (!this.started) {
        this.started = true; // the manifest
        if (content) await this.takeContent(() => {});
        return this.next();
      }
      this.position++;
      const bytes = this.meta.since(offset) ?? Buffer.concat(parts);
      return { position: this.position, header: h, offset, raw: bytes, content };
    }
  }
}

// ------------------------------------------------------------------ the metadata stream out

/**
 * The metadata stream of the archive being stored: chunked by `cdc`, except that a whole
 * blob of the previous snapshot's metadata stream, copied while the chunker stands at a
 * boundary, is referenced as it is (see the top).
 */
export class MetaOut {
  /** Copied bytes not decided yet: a run of the previous stream from `runStart`. */
  private run: Buffer[] = [];
  private runLen = 0;
  private runStart = -1;
  private runGeneration = -1;
  /** Blobs referenced as they are, and the bytes they hold. */
  reused = 0;
  reusedBytes = 0;

  constructor(
    private readonly cdc: FastCDC,
    private readonly previous: PreviousArchive,
    private readonly chunk: (b: Buffer) => void,
    private readonly ref: (r: BlobRef) => void,
  ) {}

  /** New bytes. */
  fresh(b: Buffer): void {
    this.release();
    if (b.length > 0) this.cdc.push(b, this.chunk);
  }

  /** Bytes that are the previous metadata stream's [offset, offset + length). */
  copy(b: Buffer, offset: number): void {
    if (b.length === 0) return;
    const generation = this.previous.generation;
    if (
      this.runStart < 0 ||
      generation !== this.runGeneration ||
      offset !== this.runStart + this.runLen
    ) {
      this.release();
      this.runStart = offset;
      this.runGeneration = generation;
    }
    this.run.push(b);
    this.runLen += b.length;
    this.settle();
  }

  /** Moves the run on: whole previous blobs out as references where it can, else chunked. */
  private settle(): void {
    while (this.runLen > 0) {
      const blob = this.previous.blobAt(this.runStart);
      if (this.cdc.pending === 0 && blob !== undefined) {
        if (this.runLen < blob.ref.length) return; // wait for the rest of the blob
        this.ref(blob.ref);
        this.reused++;
        this.reusedBytes += blob.ref.length;
        this.drop(blob.ref.length, false);
        continue;
      }
      // Not at a boundary: chunk up to where the next previous blob starts (if the chunker
      // cuts right there, the next blob can be referenced).
      const next = this.nextBoundary(this.runStart);
      this.drop(
        next === undefined ? this.runLen : Math.min(this.runLen, next - this.runStart),
        true,
      );
    }
  }

  private nextBoundary(offset: number): number | undefined {
    for (const b of this.previous.blobs()) if (b.start > offset) return b.start;
    return undefined;
  }

  /** Takes `n` bytes off the run's front, chunking them when `chunked`. */
  private drop(n: number, chunked: boolean): void {
    let left = n;
    while (left > 0) {
      const head = this.run[0] as Buffer;
      const take = Math.min(left, head.length);
      if (chunked) this.cdc.push(head.subarray(0, take), this.chunk);
      if (take === head.length) this.run.shift();
      else this.run[0] = head.subarray(take);
      left -= take;
    }
    this.runLen -= n;
    this.runStart += n;
    this.previous.trim(this.runStart);
  }

  /** The run is over: its bytes are chunked. */
  private release(): void {
    for (const b of this.run) this.cdc.push(b, this.chunk);
    this.run = [];
    this.runLen = 0;
    this.runStart = -1;
  }

  finish(): void {
    this.release();
    this.cdc.flush(this.chunk);
  }
}

// ------------------------------------------------------------------ the resolver

/** Where the completed archive goes. */
export interface ResolveSink {
  meta: MetaOut;
  /** A large file's body begins, goes on, ends (the content stream, chunked afresh). */
  content(b: Buffer): void;
  contentEnd(): void;
  /** A blob the repository already holds, next in the content stream. */
  storedRef(r: BlobRef): void;
  /** Called every few thousand stored references, so the queue stays short. */
  drain(): Promise<void>;
}

/**
 * Turns the archive ferryd sends into the archive to store (see the top), as the strict
 * reader's handler. Until the manifest says "delta" it does nothing: a full archive is
 * stored as it came by the caller.
 */
export class DeltaResolver implements ParseHandler {
  /** "delta" once the manifest said so, "full" otherwise. */
  kind: "full" | "delta" | undefined;
  /** Bytes of the completed archive given to the sink (up to its end record). */
  out = 0;
  /** Bytes of the (rewritten) manifest entry. */
  manifestBytes = 0;
  unchanged = 0;
  unchangedBytes = 0;
  /** The manifest as stored (a delta's says "full"). */
  storedManifest: Record<string, unknown> | undefined;
  /** mtime of the manifest's header (ferryd gives the end record's the same). */
  mtime = 0;
  private current: TarHeader | undefined;

  constructor(
    private readonly sink: ResolveSink,
    private readonly previous: PreviousArchive,
    /** The token the request named (the previous snapshot's). */
    private readonly since: string,
    /** The archive's first block (the manifest's header), once it came. */
    private readonly firstBlock: () => Buffer,
  ) {}

  private fresh(b: Buffer): void {
    this.out += b.length;
    this.sink.meta.fresh(b);
  }

  private copy(b: Buffer, offset: number): void {
    this.out += b.length;
    this.sink.meta.copy(b, offset);
  }

  manifest(m: Manifest): void {
    if (m.kind !== "delta") {
      this.kind = "full"; // ferryd did not know the token any more: stored as sent
      return;
    }
    if (m.since !== this.since) {
      throw unresolved(
        `ferryd sent a delta against ${String(m.since)}, not the token ${this.since} it was asked for`,
      );
    }
    this.kind = "delta";
    const header = decodeBlock(this.firstBlock());
    this.mtime = header.mtime;
    const { since: _, ...rest } = m;
    this.storedManifest = { ...rest, kind: "full" };
    const text = Buffer.from(`${JSON.stringify(this.storedManifest)}\n`);
    const h: TarHeader = {
      path: MANIFEST_PATH,
      type: "file",
      mode: header.mode,
      uid: header.uid,
      gid: header.gid,
      uname: header.uname,
      gname: header.gname,
      size: text.length,
      mtimeSec: header.mtime,
      mtimeNsec: 0,
      linkpath: "",
    };
    this.fresh(encodeHeader(h));
    if (isContent(h)) {
      this.out += text.length;
      this.sink.content(text);
      this.sink.contentEnd();
    } else {
      this.fresh(text);
    }
    this.fresh(ZEROS.subarray(0, padding(text.length)));
    this.manifestBytes = this.out;
  }

  async entry(h: TarHeader, raw: readonly Buffer[]): Promise<void> {
    if (this.kind !== "delta") return;
    if (h.unchanged !== undefined) {
      await this.resolve(h);
      return;
    }
    this.current = h;
    for (const b of raw) this.fresh(b);
  }

  data(chunk: Buffer): void {
    const h = this.current;
    if (this.kind !== "delta" || h === undefined) return;
    if (isContent(h)) {
      this.out += chunk.length;
      this.sink.content(chunk);
    } else {
      this.fresh(chunk);
    }
  }

  entryEnd(h: TarHeader): void {
    if (this.kind !== "delta" || h.unchanged !== undefined) return;
    this.current = undefined;
    if (isContent(h)) this.sink.contentEnd();
    this.fresh(ZEROS.subarray(0, padding(h.size)));
  }

  /** An unchanged entry: the full header, and the body from the previous snapshot. */
  private async resolve(h: TarHeader): Promise<void> {
    const u = h.unchanged as NonNullable<TarHeader["unchanged"]>;
    const before = await this.previous.seek(u.position);
    const where = `${JSON.stringify(h.path)} (unchanged since entry ${u.position})`;
    if (before === undefined) throw unresolved(`${where}: the previous snapshot has no such entry`);
    const b = before.header;
    if (b.type !== "file" || b.path !== h.path) {
      throw unresolved(`${where}: that entry is ${JSON.stringify(b.path)} (${b.type})`);
    }
    if (b.size !== u.size || b.mtimeSec !== h.mtimeSec || b.mtimeNsec !== h.mtimeNsec) {
      throw unresolved(`${where}: its size or mtime differ in the previous snapshot`);
    }
    const same =
      b.mode === h.mode &&
      b.uid === h.uid &&
      b.gid === h.gid &&
      b.uname === h.uname &&
      b.gname === h.gname &&
      b.linkpath === h.linkpath;
    if (same) {
      // The previous header (and a small file's body) is byte for byte what a full archive has.
      this.copy(before.raw, before.offset);
    } else {
      const { unchanged: _, ...full } = h;
      this.fresh(encodeHeader({ ...full, size: u.size }));
      if (!before.content) {
        this.fresh(before.raw.subarray(before.raw.length - (u.size + padding(u.size))));
      }
      this.previous.trim(before.offset + before.raw.length);
    }
    if (before.content) {
      let n = 0;
      const { pad, offset } = await this.previous.takeContent(async (r) => {
        this.sink.storedRef(r);
        if (++n % 4096 === 0) await this.sink.drain();
      });
      this.out += u.size;
      if (same) this.copy(pad, offset);
      else this.fresh(pad);
    }
    this.unchanged++;
    this.unchangedBytes += u.size;
  }
}

/** The header ferryd's writer gives the manifest and the end record. */
function metaHeader(path: string, size: number, mtimeSec: number): TarHeader {
  return {
    path,
    type: "file",
    mode: 0o644,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    size,
    mtimeSec,
    mtimeNsec: 0,
    linkpath: "",
  };
}

/**
 * The end record entry and the end-of-archive blocks of a completed delta, as ferryd's
 * writer frames them: `fields` is the snapshot's `end` (entries, payload_bytes, then
 * warnings and token when present), `sha256` the payload's.
 */
export function endRecordBytes(
  fields: Record<string, unknown>,
  sha256: string,
  mtimeSec: number,
): Buffer {
  const { entries, payload_bytes, ...rest } = fields;
  const body = Buffer.from(`${JSON.stringify({ entries, payload_bytes, sha256, ...rest })}\n`);
  return Buffer.concat([
    encodeHeader(metaHeader(END_PATH, body.length, mtimeSec)),
    body,
    Buffer.alloc(padding(body.length) + 2 * BLOCK),
  ]);
}
