/**
 * Completing a delta (docs/repository.md, "Incremental backups").
 *
 * `ferry backup` asks ferryd for a delta against the app's latest snapshot (its end
 * record's `token`). In the delta, each regular file that is unchanged since that archive
 * is a header without data, marked `FERRY.unchanged` with the file's real size and its
 * entry's position in that archive (src/core/archive/tar.ts). `DeltaResolver` turns the
 * delta back into the complete archive on its way into the repository:
 *
 * - every entry that is not unchanged passes byte for byte;
 * - an unchanged entry is looked up at its position in the previous snapshot
 *   (`PreviousArchive`, which walks that snapshot's streams forward, so memory stays
 *   bounded), and must be a regular file there with the same path, size and mtime to the
 *   nanosecond; its header is then written as a full archive has it (the same header
 *   with the size put back and without the FERRY records, which is byte for byte what a
 *   full backup writes) and its body comes from the previous snapshot: a small file's
 *   bytes from its metadata stream, a large file's content as the previous snapshot's
 *   blob references, without reading or hashing the content again;
 * - the manifest says `"kind": "full"` (and no `since`), and the end record is left out:
 *   the stored streams are the complete archive up to its end record, which `dump`
 *   computes over the bytes it rebuilds (archive.ts).
 *
 * Anything that does not resolve refuses the whole snapshot (REPO_DELTA_UNRESOLVED): no
 * snapshot is written, and `ferry backup --force-full` asks for a full archive instead.
 */
import { END_PATH, MANIFEST_PATH } from "../api/types.js";
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
import type { BlobRef, LoadedSnapshot } from "./format.js";
import type { Repository } from "./repository.js";
import { INLINE_MAX, type TarSplitter } from "./tarsplit.js";

const ZEROS = Buffer.alloc(BLOCK);

function unresolved(why: string): FerryError {
  return new FerryError(
    "REPO_DELTA_UNRESOLVED",
    `${why}: the delta cannot be completed from the previous snapshot, so nothing was stored (run 'ferry backup --force-full')`,
  );
}

/** Whether an entry's body goes to the content stream (tarsplit.ts's rule). */
function isContent(typeflag: string, size: number): boolean {
  return (typeflag === "0" || typeflag === "\0" || typeflag === "7") && size >= INLINE_MAX;
}

/** Exact reads from a stream of buffers. */
class ByteReader {
  private buf = Buffer.alloc(0);
  private off = 0;

  constructor(private readonly src: AsyncGenerator<Buffer>) {}

  /** The next `n` bytes; undefined at a clean end of the stream (nothing left). */
  async read(n: number): Promise<Buffer | undefined> {
    if (this.buf.length - this.off >= n) {
      const out = this.buf.subarray(this.off, this.off + n);
      this.off += n;
      return out;
    }
    const parts: Buffer[] = [this.buf.subarray(this.off)];
    let have = this.buf.length - this.off;
    while (have < n) {
      const r = await this.src.next();
      if (r.done === true) {
        if (have === 0) return undefined;
        throw new FerryError("REPO_CORRUPT", "a snapshot's metadata stream ends inside an entry");
      }
      parts.push(r.value);
      have += r.value.length;
    }
    this.buf = Buffer.concat(parts);
    this.off = n;
    return this.buf.subarray(0, n);
  }

  async exact(n: number): Promise<Buffer> {
    if (n === 0) return Buffer.alloc(0);
    const b = await this.read(n);
    if (b === undefined) {
      throw new FerryError("REPO_CORRUPT", "a snapshot's metadata stream ends inside an entry");
    }
    return b;
  }

  async close(): Promise<void> {
    await this.src.return(undefined);
  }
}

/** An entry of the previous snapshot. */
export interface PreviousEntry {
  position: number;
  header: TarHeader;
  /** A small file's body (from the metadata stream); undefined for a large file. */
  inline?: Buffer;
}

/**
 * The payload entries of a stored snapshot, by position (0-based, the manifest not
 * counted), walking its metadata and content streams forward together.
 */
export class PreviousArchive {
  private meta!: ByteReader;
  private data!: AsyncGenerator<BlobRef>;
  private position = -1;
  private started = false;
  /** Content bytes of the current large file not taken yet, and its padding. */
  private contentLeft = 0;
  private contentPad = 0;
  /** How often the walk had to start over (a position at or before the last one). */
  restarts = 0;

  constructor(
    private readonly repo: Repository,
    readonly snapshot: LoadedSnapshot,
    private readonly blobs: (refs: AsyncGenerator<BlobRef>) => AsyncGenerator<Buffer>,
  ) {
    this.open();
  }

  private open(): void {
    this.meta = new ByteReader(this.blobs(this.repo.refs(this.snapshot.meta_tree)));
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

  /** The entry at `position`, or undefined if the archive has no such entry. */
  async seek(position: number): Promise<PreviousEntry | undefined> {
    if (position <= this.position) {
      // ferryd walks in a fixed order, so positions only grow; if they do not (another
      // walk order), start over rather than hold the archive's entries in memory.
      await this.close();
      this.open();
      this.restarts++;
    }
    for (;;) {
      const e = await this.next();
      if (e === undefined || e.position === position) return e;
    }
  }

  /** Passes the current large file's blob references, in order, to `each`. */
  async takeContent(each: (r: BlobRef) => void | Promise<void>): Promise<void> {
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
    await this.meta.exact(this.contentPad);
    this.contentPad = 0;
  }

  private async next(): Promise<PreviousEntry | undefined> {
    if (this.contentLeft > 0 || this.contentPad > 0) await this.takeContent(() => {});
    let pax: Map<string, string> | undefined;
    for (;;) {
      const block = await this.meta.read(BLOCK);
      if (block === undefined || isZeroBlock(block)) return undefined;
      const raw = decodeBlock(block);
      if (raw.typeflag === "x") {
        const body = await this.meta.exact(raw.size + padding(raw.size));
        pax = parsePax(body.subarray(0, raw.size));
        continue;
      }
      const h = resolveHeader(raw, pax);
      pax = undefined;
      if (this.started && h.path === END_PATH) return undefined;
      let inline: Buffer | undefined;
      if (isContent(raw.typeflag, h.size)) {
        this.contentLeft = h.size;
        this.contentPad = padding(h.size);
      } else {
        inline = (await this.meta.exact(h.size + padding(h.size))).subarray(0, h.size);
      }
      if (!this.started) {
        this.started = true; // the manifest
        continue;
      }
      this.position++;
      return inline === undefined
        ? { position: this.position, header: h }
        : { position: this.position, header: h, inline: Buffer.from(inline) };
    }
  }
}

/** Where the completed archive goes: the store's splitter and content queue. */
export interface ResolveSink {
  splitter: TarSplitter;
  /** A blob the repository already holds, next in the content stream. */
  storedRef(r: BlobRef): void;
  /** Called every few thousand stored references, so the queue stays short. */
  drain(): Promise<void>;
}

type Mode = "block" | "ext" | "manifest" | "body" | "drop" | "pass";

/**
 * Turns the archive ferryd sends into the archive to store (see the top). A full archive
 * passes through unchanged. Runs after the strict reader has accepted the same bytes.
 */
export class DeltaResolver {
  /** "delta" once the manifest said so; "full" for a full archive. */
  kind: "full" | "delta" | undefined;
  /** Bytes of the completed archive given to the sink (up to its end record). */
  out = 0;
  /** Bytes of the (rewritten) manifest entry. */
  manifestBytes = 0;
  unchanged = 0;
  unchangedBytes = 0;
  /** The end record header's mtime (the completed archive's end record keeps it). */
  endMtime = 0;
  /** The manifest as stored (a delta's says "full"). */
  storedManifest: Record<string, unknown> | undefined;

  private mode: Mode = "block";
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private need = BLOCK;
  /** Bytes of the current entry's header region (pax blocks and body, then the ustar block). */
  private region: Buffer[] = [];
  private pax: Map<string, string> | undefined;
  private manifestHeader: TarHeader | undefined;
  private manifestSize = 0;

  constructor(
    private readonly sink: ResolveSink,
    private readonly previous: PreviousArchive,
    /** The token the request named (the previous snapshot's). */
    private readonly since: string,
  ) {}

  private emit(b: Buffer): void {
    if (b.length === 0) return;
    this.out += b.length;
    this.sink.splitter.push(b);
  }

  /** Takes the next bytes of the archive ferryd sent. */
  async push(chunk: Buffer): Promise<void> {
    if (this.mode === "pass") {
      this.emit(chunk);
      return;
    }
    let off = 0;
    while (off < chunk.length) {
      const mode = this.mode as Mode;
      if (mode === "drop") return;
      if (mode === "pass") {
        this.emit(chunk.subarray(off));
        return;
      }
      if (mode === "body") {
        const n = Math.min(this.need, chunk.length - off);
        this.emit(chunk.subarray(off, off + n));
        off += n;
        this.need -= n;
        if (this.need === 0) this.toBlock();
        continue;
      }
      const n = Math.min(this.need - this.pendingBytes, chunk.length - off);
      this.pending.push(chunk.subarray(off, off + n));
      this.pendingBytes += n;
      off += n;
      if (this.pendingBytes === this.need) {
        const whole =
          this.pending.length === 1 ? (this.pending[0] as Buffer) : Buffer.concat(this.pending);
        this.pending = [];
        this.pendingBytes = 0;
        await this.step(Buffer.from(whole));
      }
    }
  }

  private toBlock(): void {
    this.mode = "block";
    this.need = BLOCK;
  }

  private async step(b: Buffer): Promise<void> {
    switch (this.mode) {
      case "ext": {
        this.region.push(b);
        this.pax = parsePax(b.subarray(0, this.extSize));
        this.toBlock();
        return;
      }
      case "manifest":
        return this.manifest(b);
      case "block":
        return this.block(b);
      default:
        throw new FerryError("INTERNAL", `delta resolver in mode ${this.mode}`);
    }
  }

  private extSize = 0;

  private async block(b: Buffer): Promise<void> {
    if (isZeroBlock(b)) {
      this.mode = "drop";
      return;
    }
    const raw = decodeBlock(b);
    if (raw.typeflag === "x") {
      this.region.push(b);
      this.extSize = raw.size;
      this.mode = "ext";
      this.need = raw.size + padding(raw.size);
      if (this.need === 0) {
        this.pax = parsePax(Buffer.alloc(0));
        this.toBlock();
      }
      return;
    }
    const h = resolveHeader(raw, this.pax);
    this.pax = undefined;
    const region = [...this.region, b];
    this.region = [];
    if (this.manifestHeader === undefined) {
      if (h.path !== MANIFEST_PATH) throw new FerryError("ARCHIVE_INVALID", "no manifest first");
      this.manifestHeader = h;
      this.manifestSize = h.size;
      this.regionOfManifest = region;
      this.mode = "manifest";
      this.need = h.size + padding(h.size);
      if (this.need === 0) await this.manifest(Buffer.alloc(0));
      return;
    }
    if (h.path === END_PATH) {
      this.endMtime = raw.mtime;
      this.mode = "drop"; // the end record: `dump` computes the completed archive's own
      return;
    }
    if (h.unchanged !== undefined) {
      await this.resolve(h);
      this.toBlock();
      return;
    }
    for (const part of region) this.emit(part);
    this.need = h.size + padding(h.size);
    if (this.need === 0) this.toBlock();
    else this.mode = "body";
  }

  private regionOfManifest: Buffer[] = [];

  private async manifest(body: Buffer): Promise<void> {
    let m: Record<string, unknown>;
    try {
      m = JSON.parse(body.subarray(0, this.manifestSize).toString("utf8")) as Record<
        string,
        unknown
      >;
    } catch {
      throw new FerryError("ARCHIVE_INVALID", "the manifest is not JSON");
    }
    if (m.kind !== "delta") {
      // A full archive (ferryd did not know the token any more): stored as sent.
      this.kind = "full";
      this.storedManifest = m;
      for (const part of this.regionOfManifest) this.emit(part);
      this.emit(body);
      this.manifestBytes = this.out;
      this.mode = "pass";
      return;
    }
    if (m.since !== this.since) {
      throw unresolved(
        `ferryd sent a delta against ${String(m.since)}, not the token ${this.since} it was asked for`,
      );
    }
    this.kind = "delta";
    const { since: _, ...rest } = m;
    this.storedManifest = { ...rest, kind: "full" };
    const text = Buffer.from(`${JSON.stringify(this.storedManifest)}\n`);
    this.emit(encodeHeader({ ...(this.manifestHeader as TarHeader), size: text.length }));
    this.emit(text);
    this.emit(ZEROS.subarray(0, padding(text.length)));
    this.manifestBytes = this.out;
    this.toBlock();
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
    const { unchanged: _, ...full } = h;
    this.emit(encodeHeader({ ...full, size: u.size }));
    if (before.inline !== undefined) {
      this.emit(before.inline);
    } else {
      this.sink.splitter.skipStoredContent(u.size);
      let n = 0;
      await this.previous.takeContent(async (r) => {
        this.sink.storedRef(r);
        if (++n % 4096 === 0) await this.sink.drain();
      });
      this.out += u.size;
    }
    this.emit(ZEROS.subarray(0, padding(u.size)));
    this.unchanged++;
    this.unchangedBytes += u.size;
  }

  /** After the last byte: the stream ended where an archive may end. */
  finish(): void {
    if (this.mode !== "drop" && this.mode !== "pass") {
      throw new FerryError("ARCHIVE_TRUNCATED", "the archive ended inside an entry");
    }
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
