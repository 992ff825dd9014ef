/**
 * A strict, push-based parser of Ferry archives.
 *
 * Bytes are pushed in with `write` (which awaits the handler, so a slow consumer slows the
 * producer: backpressure), and `finish` says whether the archive was complete. The parser
 * checks everything that is about the archive as a whole: header checksums and fields,
 * the manifest coming first, the end record coming last with the right entry count,
 * payload length and SHA-256, and nothing but zero blocks after it. What a path may name
 * is the restoring driver's business, not this module's.
 *
 * State machine: header → (pax → header)* → body → pad → header … → end record → trailer.
 * The header bytes of an entry are held back until the entry is known not to be the end
 * record, because the end record's own header is outside the hashed range.
 *
 * Longer than 300 lines on purpose: one strict state machine, and the manifest and
 * end-record checks it ends with, read best in one piece.
 */
import { createHash } from "node:crypto";
import { END_PATH, type EndRecord, MANIFEST_PATH, type Manifest } from "../../api/types.js";
import { FerryError } from "../errors.js";
import { type ArchiveKind, checkEndToken, checkUnchangedEntry, manifestKind } from "./delta.js";
import {
  BLOCK,
  decodeBlock,
  isZeroBlock,
  padding,
  parsePax,
  resolveHeader,
  TarFormatError,
  type TarHeader,
} from "./tar.js";

export interface ParseHandler {
  /** Called with the manifest before any payload entry; may throw to refuse the archive. */
  manifest?(m: Manifest): void | Promise<void>;
  /**
   * Start of a payload entry; `raw` are its header's bytes as they came (a pax header's
   * block and body, then the ustar block), for a consumer that passes entries on as they are.
   */
  entry?(h: TarHeader, raw: readonly Buffer[]): void | Promise<void>;
  /** A chunk of the current entry's body. */
  data?(chunk: Buffer): void | Promise<void>;
  /** The current entry's body is complete. */
  entryEnd?(h: TarHeader): void | Promise<void>;
}

export interface ParserLimits {
  /** Largest pax extended header body accepted. */
  maxPaxBytes: number;
  /** Longest path or link target, in bytes. */
  maxPathBytes: number;
  /** Most payload entries. */
  maxEntries: number;
}

export const DEFAULT_LIMITS: ParserLimits = {
  maxPaxBytes: 64 * 1024,
  maxPathBytes: 4096,
  maxEntries: 10_000_000,
};

const MAX_META_BYTES = 1024 * 1024;
const EMPTY = Buffer.alloc(0);

type State = "header" | "pax" | "meta" | "body" | "pad" | "trailer";

export class ArchiveParser {
  manifest: Manifest | undefined;
  /** Full or delta (delta.ts), once the manifest was read. */
  kind: ArchiveKind | undefined;
  end: EndRecord | undefined;
  /** Payload entries seen so far. */
  entries = 0;
  /** Bytes of the whole archive seen so far. */
  bytes = 0;

  private state: State = "header";
  private carry: Buffer = EMPTY;
  private need = BLOCK; // bytes the current state wants
  private collect: Buffer[] = [];
  private collected = 0;
  private pax: Map<string, string> | undefined;
  private held: Buffer[] = []; // header bytes of the entry being decided
  private current: TarHeader | undefined;
  private meta: "manifest" | "end" | "pax" | undefined;
  private metaSize = 0;
  private inPayload = false;
  private readonly hash = createHash("sha256");
  private payloadBytes = 0;

  constructor(
    private readonly handler: ParseHandler = {},
    private readonly limits: ParserLimits = DEFAULT_LIMITS,
    /** Accept a delta archive (only the repository, which completes it, does). */
    private readonly allowDelta = false,
  ) {}

  /** Feeds bytes; resolves once the handler has taken them. */
  async write(chunk: Buffer): Promise<void> {
    try {
      const steps = this.steps(chunk);
      for (let r = steps.next(); r.done !== true; r = steps.next()) await r.value;
    } catch (err) {
      throw asArchiveError(err);
    }
  }

  /**
   * Feeds bytes synchronously, for a parser whose handlers never return a promise (one
   * that does is an error). The chunk may be reused by the caller afterwards: nothing of
   * it is kept but copies.
   */
  writeSync(chunk: Buffer): void {
    try {
      const steps = this.steps(chunk);
      for (let r = steps.next(); r.done !== true; r = steps.next()) {
        if (r.value !== undefined) throw new Error("ArchiveParser.writeSync: a handler is async");
      }
    } catch (err) {
      throw asArchiveError(err);
    }
  }

  /** The parsing work for one chunk; yields what the handlers return (promises or not). */
  private *steps(chunk: Buffer): Generator<void | Promise<void>, void, undefined> {
    this.bytes += chunk.length;
    let buf = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = EMPTY;
    while (buf.length > 0) {
      if (this.state === "body") {
        const n = Math.min(this.need, buf.length);
        const part = buf.subarray(0, n);
        this.hashPayload(part);
        this.need -= n;
        buf = buf.subarray(n);
        if (this.handler.data !== undefined) yield this.handler.data(part);
        if (this.need === 0) yield* this.endBody();
        continue;
      }
      if (this.state === "pad") {
        const n = Math.min(this.need, buf.length);
        this.hashPayload(buf.subarray(0, n));
        this.need -= n;
        buf = buf.subarray(n);
        if (this.need === 0) this.toHeader();
        continue;
      }
      if (this.state === "trailer") {
        for (const byte of buf) {
          if (byte !== 0) throw new TarFormatError("data after the end of the archive");
        }
        return;
      }
      if (this.state === "pax" || this.state === "meta") {
        const n = Math.min(this.need, buf.length);
        this.collect.push(Buffer.from(buf.subarray(0, n)));
        this.collected += n;
        this.need -= n;
        buf = buf.subarray(n);
        if (this.need === 0) yield* this.endCollect();
        continue;
      }
      // header: needs a whole block
      if (buf.length < BLOCK) {
        this.carry = Buffer.from(buf);
        return;
      }
      const block = buf.subarray(0, BLOCK);
      buf = buf.subarray(BLOCK);
      yield* this.onHeader(Buffer.from(block));
    }
  }

  /** Declares the input complete; throws unless a valid end record was read and matched. */
  finish(): EndRecord {
    if (this.end === undefined || this.state !== "trailer") {
      throw new FerryError(
        "ARCHIVE_TRUNCATED",
        this.manifest === undefined
          ? "the archive ended before its manifest: it is empty or not a Ferry archive"
          : `the archive ended after ${this.entries} entries without its end record: it is incomplete`,
      );
    }
    return this.end;
  }

  private hashPayload(b: Buffer): void {
    if (!this.inPayload || b.length === 0) return;
    this.hash.update(b);
    this.payloadBytes += b.length;
  }

  private toHeader(): void {
    this.state = "header";
    this.need = BLOCK;
  }

  private startCollect(kind: "manifest" | "end" | "pax", size: number): void {
    this.meta = kind;
    this.metaSize = size;
    this.collect = [];
    this.collected = 0;
    this.state = "meta";
    if (kind === "pax") this.state = "pax";
    this.need = size + padding(size);
  }

  private *onHeader(block: Buffer): Generator<void | Promise<void>, void, undefined> {
    if (isZeroBlock(block)) {
      if (this.end === undefined) {
        throw new FerryError(
          "ARCHIVE_TRUNCATED",
          "the archive ends without its end record: it is incomplete and must not be used",
        );
      }
      this.state = "trailer";
      return;
    }
    if (this.end !== undefined) throw new TarFormatError("an entry follows the end record");
    const raw = decodeBlock(block);
    this.held.push(block);
    if (raw.typeflag === "x") {
      if (this.pax !== undefined) throw new TarFormatError("two pax headers in a row");
      if (raw.size > this.limits.maxPaxBytes) {
        throw new TarFormatError(
          `a pax header of ${raw.size} bytes exceeds the limit of ${this.limits.maxPaxBytes}`,
        );
      }
      this.startCollect("pax", raw.size);
      if (raw.size === 0) yield* this.endCollect();
      return;
    }
    if (raw.typeflag === "g") throw new TarFormatError("global pax headers are not accepted");
    const h = resolveHeader(raw, this.pax);
    const hadPax = this.pax !== undefined;
    this.pax = undefined;
    if (Buffer.byteLength(h.path) > this.limits.maxPathBytes) {
      throw new TarFormatError(`a path of ${Buffer.byteLength(h.path)} bytes exceeds the limit`);
    }
    if (Buffer.byteLength(h.linkpath) > this.limits.maxPathBytes) {
      throw new TarFormatError("a link target exceeds the length limit");
    }

    if (this.manifest === undefined) {
      if (h.path !== MANIFEST_PATH || h.type !== "file") {
        throw new FerryError(
          "ARCHIVE_INVALID",
          `the first entry is ${JSON.stringify(h.path)}, not ${MANIFEST_PATH}: not a Ferry archive`,
        );
      }
      if (h.size > MAX_META_BYTES) throw new TarFormatError("the manifest is too large");
      this.held = [];
      this.startCollect("manifest", h.size);
      if (h.size === 0) yield* this.endCollect();
      return;
    }
    if (h.path === END_PATH) {
      if (hadPax || h.type !== "file") throw new TarFormatError("malformed end record header");
      if (h.size > MAX_META_BYTES) throw new TarFormatError("the end record is too large");
      this.held = []; // the end record's own header is outside the hashed range
      this.inPayload = false;
      this.startCollect("end", h.size);
      if (h.size === 0) yield* this.endCollect();
      return;
    }
    checkUnchangedEntry(h, this.kind as ArchiveKind);
    const headerBytes = this.held;
    for (const b of headerBytes) this.hashPayload(b);
    this.held = [];
    this.entries++;
    if (this.entries > this.limits.maxEntries) {
      throw new TarFormatError(`more than ${this.limits.maxEntries} entries`);
    }
    this.current = h;
    if (this.handler.entry !== undefined) yield this.handler.entry(h, headerBytes);
    if (h.size === 0) {
      yield* this.endBody();
    } else {
      this.state = "body";
      this.need = h.size;
    }
  }

  private *endBody(): Generator<void | Promise<void>, void, undefined> {
    const h = this.current as TarHeader;
    this.current = undefined;
    if (this.handler.entryEnd !== undefined) yield this.handler.entryEnd(h);
    this.state = "pad";
    this.need = padding(h.size);
    if (this.need === 0) this.toHeader();
  }

  private *endCollect(): Generator<void | Promise<void>, void, undefined> {
    const all = Buffer.concat(this.collect);
    this.collect = [];
    const kind = this.meta;
    if (kind === "pax") {
      // A pax header belongs to the payload's byte range when it precedes a payload entry;
      // it is held with the ustar block until we know which entry it belongs to.
      this.held.push(all);
      this.pax = parsePax(all.subarray(0, this.metaSize));
      this.toHeader();
      return;
    }
    const body = all.subarray(0, this.metaSize);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      throw new TarFormatError(`${kind === "end" ? END_PATH : MANIFEST_PATH} is not JSON`);
    }
    if (kind === "manifest") {
      this.manifest = checkManifest(parsed);
      this.kind = manifestKind(this.manifest, this.allowDelta);
      if (this.handler.manifest !== undefined) yield this.handler.manifest(this.manifest);
      this.inPayload = true;
    } else {
      this.end = checkEnd(parsed);
      this.verify(this.end);
    }
    this.toHeader();
  }

  private verify(end: EndRecord): void {
    const sha = this.hash.digest("hex");
    const problems: string[] = [];
    if (end.entries !== this.entries)
      problems.push(`${this.entries} entries, record says ${end.entries}`);
    if (end.payload_bytes !== this.payloadBytes) {
      problems.push(`${this.payloadBytes} payload bytes, record says ${end.payload_bytes}`);
    }
    if (end.sha256 !== sha) problems.push("the payload's SHA-256 differs from the record");
    if (problems.length > 0) {
      throw new FerryError(
        "ARCHIVE_CHECKSUM_MISMATCH",
        `the archive does not match its end record (${problems.join("; ")}): it is corrupted`,
      );
    }
  }
}

function checkManifest(v: unknown): Manifest {
  if (typeof v !== "object" || v === null || Array.isArray(v)) {
    throw new TarFormatError("the manifest is not a JSON object");
  }
  const m = v as Record<string, unknown>;
  if (m.format !== 1) {
    throw new FerryError(
      "ARCHIVE_INVALID",
      `archive format ${JSON.stringify(m.format)} is not supported (this Ferry reads format 1)`,
    );
  }
  for (const k of ["app", "driver"]) {
    if (typeof m[k] !== "string") throw new TarFormatError(`the manifest has no "${k}"`);
  }
  return m as Manifest;
}

function checkEnd(v: unknown): EndRecord {
  if (typeof v !== "object" || v === null)
    throw new TarFormatError("the end record is not an object");
  const e = v as Record<string, unknown>;
  if (
    !Number.isSafeInteger(e.entries) ||
    !Number.isSafeInteger(e.payload_bytes) ||
    typeof e.sha256 !== "string" ||
    !/^[0-9a-f]{64}$/.test(e.sha256)
  ) {
    throw new TarFormatError("the end record lacks entries, payload_bytes or sha256");
  }
  checkEndToken(e);
  return e as unknown as EndRecord;
}

function asArchiveError(err: unknown): unknown {
  if (err instanceof TarFormatError) {
    return new FerryError("ARCHIVE_INVALID", `invalid archive: ${err.message}`, { cause: err });
  }
  return err;
}
