/**
 * Tar-aware cutting of an archive into two streams (docs/repository.md, "Archives"):
 *
 * - the **metadata stream**: every byte that is not the body of a large regular file —
 *   ustar headers, pax/GNU extension bodies, the bodies of files smaller than
 *   INLINE_MAX, padding, the end-of-archive zero blocks;
 * - the **content stream**: the bodies of regular files of INLINE_MAX bytes or more, each
 *   file chunked on its own so identical files give identical chunks wherever they sit.
 *
 * The archive is the metadata stream with each large file's body put back after its
 * header. Both directions walk the metadata stream with the same `TarWalker`, so the cut
 * is recomputed exactly on the way back and the rebuilt archive is byte for byte the one
 * that was stored. The walker reads only what it needs to find body lengths (the size
 * field, a pax `size` record, the type flag); judging the archive is ArchiveParser's job.
 *
 * The threshold is a parameter: the repository cuts at INLINE_MAX, the borg target
 * (src/repo/borg-layout.ts) at 1 byte, so that its layout holds no file body at all.
 */
import { FerryError } from "../core/errors.js";

export const BLOCK = 512;
/** Files with fewer body bytes than this stay in the metadata stream. */
export const INLINE_MAX = 4096;
/** Largest extension body parsed for a `size` record. */
const MAX_EXT = 1 << 20;

export type WalkMode = "header" | "ext" | "body" | "content" | "pad";

function pad(n: number): number {
  const r = n % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

/** A ustar size field: octal, or GNU base-256 (top bit set); negative sizes refused. */
export function parseSizeField(b: Buffer): number {
  const first = b[124] as number;
  if (first & 0x80) {
    if (first & 0x40) throw new FerryError("ARCHIVE_INVALID", "negative tar size");
    let n = first & 0x3f;
    for (let i = 125; i < 136; i++) {
      n = n * 256 + (b[i] as number);
      if (n > Number.MAX_SAFE_INTEGER)
        throw new FerryError("ARCHIVE_INVALID", "tar size too large");
    }
    return n;
  }
  const s = b
    .toString("latin1", 124, 136)
    .replace(/[\0 ]+$/, "")
    .replace(/^ +/, "");
  if (s === "") return 0;
  if (!/^[0-7]+$/.test(s)) throw new FerryError("ARCHIVE_INVALID", "tar size is not octal");
  return Number.parseInt(s, 8);
}

/** The `size` record of a pax body, if it has a well-formed one. */
function paxSize(body: Buffer): number | undefined {
  let off = 0;
  let size: number | undefined;
  while (off < body.length) {
    let sp = off;
    while (sp < body.length && sp - off < 10 && body[sp] !== 0x20) sp++;
    const lenText = body.toString("latin1", off, sp);
    if (!/^[1-9][0-9]{0,8}$/.test(lenText)) return size;
    const end = off + Number(lenText);
    if (end > body.length || body[end - 1] !== 0x0a) return size;
    const rec = body.toString("latin1", sp + 1, end - 1);
    if (rec.startsWith("size=")) {
      const v = rec.slice(5);
      if (/^[0-9]{1,16}$/.test(v) && Number.isSafeInteger(Number(v))) size = Number(v);
    }
    off = end;
  }
  return size;
}

export interface HeaderEvent {
  /** The ustar block. */
  block: Buffer;
  /** The pax extension body that preceded it, if any. */
  pax: Buffer | undefined;
}

export class TarWalker {
  mode: WalkMode = "header";
  /** Bytes the current mode still wants. */
  need = BLOCK;
  private readonly hdr = Buffer.alloc(BLOCK);
  private hdrLen = 0;
  private ext: Buffer[] | undefined;
  private extType = "";
  private extSize = 0;
  private pendingSize: number | undefined;
  private pendingPax: Buffer | undefined;
  private contentPad = 0;

  /**
   * `inlineMax`: regular files with at least this many body bytes are content (the
   * repository's INLINE_MAX unless given; 1 makes every non-empty file body content).
   */
  constructor(
    private readonly onHeader?: (e: HeaderEvent) => void,
    private readonly inlineMax = INLINE_MAX,
  ) {
    if (!Number.isSafeInteger(inlineMax) || inlineMax < 1) {
      throw new Error("TarWalker: the inline threshold is a whole number of at least 1");
    }
  }

  /**
   * Consumes bytes that are not file content, stopping early when a large file's body
   * begins (mode "content"). Returns how many bytes of `buf` it took.
   */
  take(buf: Buffer): number {
    let off = 0;
    while (off < buf.length && this.mode !== "content") {
      const n = Math.min(this.need, buf.length - off);
      if (this.mode === "header") {
        buf.copy(this.hdr, this.hdrLen, off, off + n);
        this.hdrLen += n;
      } else if (this.mode === "ext" && this.ext !== undefined) {
        this.ext.push(Buffer.from(buf.subarray(off, off + n)));
      }
      off += n;
      this.need -= n;
      if (this.need === 0) this.advance();
    }
    return off;
  }

  /** The large file's body (`need` bytes) has been passed by the caller. */
  contentDone(): void {
    if (this.mode !== "content") throw new Error("contentDone outside a file body");
    this.mode = "pad";
    this.need = this.contentPad;
    if (this.need === 0) this.toHeader();
  }

  /** True between entries: the stream may end here. */
  get atBoundary(): boolean {
    return this.mode === "header" && this.hdrLen === 0;
  }

  private toHeader(): void {
    this.mode = "header";
    this.need = BLOCK;
    this.hdrLen = 0;
  }

  private advance(): void {
    switch (this.mode) {
      case "header":
        this.onBlock();
        return;
      case "ext": {
        if (this.ext !== undefined) {
          const body = Buffer.concat(this.ext).subarray(0, this.extSize);
          if (this.extType === "x") {
            this.pendingSize = paxSize(body);
            this.pendingPax = body;
          }
        }
        this.ext = undefined;
        this.toHeader();
        return;
      }
      case "body":
      case "pad":
        this.toHeader();
        return;
      case "content":
        return;
    }
  }

  private onBlock(): void {
    const b = this.hdr;
    let zero = true;
    for (let i = 0; i < BLOCK; i++) {
      if (b[i] !== 0) {
        zero = false;
        break;
      }
    }
    if (zero) {
      this.toHeader();
      return;
    }
    const tf = String.fromCharCode(b[156] as number);
    const size = parseSizeField(b);
    if (tf === "x" || tf === "g" || tf === "L" || tf === "K") {
      this.extType = tf;
      this.extSize = size;
      this.ext = size <= MAX_EXT ? [] : undefined;
      this.mode = "ext";
      this.need = size + pad(size);
      if (this.need === 0) this.advance();
      return;
    }
    if (this.onHeader !== undefined) this.onHeader({ block: Buffer.from(b), pax: this.pendingPax });
    const s = this.pendingSize ?? size;
    this.pendingSize = undefined;
    this.pendingPax = undefined;
    if (s === 0) {
      this.toHeader();
      return;
    }
    if ((tf === "0" || tf === "\0" || tf === "7") && s >= this.inlineMax) {
      this.mode = "content";
      this.need = s;
      this.contentPad = pad(s);
      return;
    }
    this.mode = "body";
    this.need = s + pad(s);
  }
}

export interface SplitSink {
  meta(b: Buffer): void;
  /** A large file's body begins. */
  contentStart(size: number): void;
  content(b: Buffer): void;
  contentEnd(): void;
}

/** Cuts a whole archive stream into metadata and content (backup). */
export class TarSplitter {
  private readonly walker: TarWalker;
  private contentLeft = 0;

  /** `inlineMax` as TarWalker's (the repository's INLINE_MAX unless given). */
  constructor(
    private readonly sink: SplitSink,
    inlineMax = INLINE_MAX,
  ) {
    this.walker = new TarWalker(undefined, inlineMax);
  }

  push(buf: Buffer): void {
    let off = 0;
    while (off < buf.length) {
      if (this.walker.mode === "content") {
        if (this.contentLeft === 0) {
          this.contentLeft = this.walker.need;
          this.sink.contentStart(this.contentLeft);
        }
        const n = Math.min(this.contentLeft, buf.length - off);
        this.sink.content(buf.subarray(off, off + n));
        off += n;
        this.contentLeft -= n;
        if (this.contentLeft === 0) {
          this.sink.contentEnd();
          this.walker.contentDone();
        }
        continue;
      }
      const n = this.walker.take(buf.subarray(off));
      if (n > 0) this.sink.meta(buf.subarray(off, off + n));
      off += n;
    }
  }

  /**
   * The large file whose header was just pushed has its body in blobs the repository
   * already holds (a delta's unchanged file): the walker passes over it without bytes,
   * and the caller hands the blobs to the content side itself.
   */
  skipStoredContent(size: number): void {
    if (this.walker.mode !== "content" || this.walker.need !== size || this.contentLeft !== 0) {
      throw new FerryError("INTERNAL", "stored content given where the archive has none");
    }
    this.walker.contentDone();
  }

  /** Whether the header just pushed starts a large file's body (its bytes go to content). */
  get inContent(): boolean {
    return this.walker.mode === "content";
  }

  /** Throws unless the stream ended between entries. */
  finish(): void {
    if (!this.walker.atBoundary) {
      throw new FerryError("ARCHIVE_TRUNCATED", "the archive ended inside an entry");
    }
  }
}
