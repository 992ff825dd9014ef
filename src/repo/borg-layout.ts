/**
 * The borg target's layout (docs/repository.md, "Other targets"): how a Ferry archive goes
 * into `borg import-tar` and comes back out of `borg export-tar` byte for byte.
 *
 * borg parses the tar it imports into items and keeps only what it models: pax records
 * are dropped, and export-tar writes GNU headers with whole-second times. So the stream
 * borg gives back is not the archive ferryd sent, and ferryd's restore would refuse it
 * (the end record hashes the exact bytes). Hence:
 *
 * - backup: the archive goes to borg as it is, except that its final zero blocks are held
 *   back (Python's tarfile stops reading at the first one) and one more member is put
 *   before them, the layout `.ferry-borg-layout`. Its body is a header line (magic,
 *   version, the archive's SHA-256 and length) and then the archive's **metadata
 *   stream**: every byte except the bodies of non-empty regular files (headers, pax
 *   bodies, padding, the zero blocks), cut by tarsplit.ts's TarSplitter with the inline
 *   threshold at 1 byte;
 * - restore: the metadata stream, walked with the same TarWalker, gives the archive back;
 *   each time the original had a file body, the bytes are the next non-empty regular file
 *   of borg's export-tar stream (borg keeps items in the order it imported them), whose
 *   size must be the one the layout says.
 *
 * The layout's name cannot be one of the archive's own: ferryd names the manifest and the
 * end record `.ferry/…` and every payload entry `data/…` (src/core/archive/writer.ts and
 * the drivers), and `collidesWithLayout` refuses anything else that borg would store
 * under that name.
 */

import { encodeHeader, fileEntryHeader, padding } from "../core/archive/tar.js";
import { FerryError } from "../core/errors.js";
import { BLOCK, TarSplitter, TarWalker } from "./tarsplit.js";

export const LAYOUT_NAME = ".ferry-borg-layout";
const MAGIC = "ferry-borg-layout";
export const LAYOUT_VERSION = 1;
/** Longest header line read before giving up on it. */
const MAX_LINE = 256;
/** The end-of-archive blocks written after the layout. */
const END_BLOCKS = Buffer.alloc(2 * BLOCK);
const ZERO_CHUNK = 1 << 20;

export interface LayoutHeader {
  /** SHA-256 (hex) and length of the whole archive the layout rebuilds. */
  sha256: string;
  bytes: number;
}

/** The layout's first line: `ferry-borg-layout 1 sha256=HEX bytes=N`. */
function layoutHeaderLine(h: LayoutHeader): Buffer {
  return Buffer.from(`${MAGIC} ${LAYOUT_VERSION} sha256=${h.sha256} bytes=${h.bytes}\n`);
}

/**
 * Parses the header line at the start of `head` (the layout's first bytes, up to
 * MAX_LINE of them suffice); returns it and its length in bytes. A layout of another
 * version or something that is no layout at all is refused with what to do.
 */
export function parseLayoutHeader(head: Buffer): { header: LayoutHeader; length: number } {
  const nl = head.subarray(0, MAX_LINE).indexOf(0x0a);
  const line = nl < 0 ? "" : head.toString("latin1", 0, nl);
  const words = line.split(" ");
  if (words[0] !== MAGIC) {
    throw new FerryError(
      "ARCHIVE_INVALID",
      `${LAYOUT_NAME} does not start with "${MAGIC}": it is not a Ferry layout`,
    );
  }
  if (words[1] !== String(LAYOUT_VERSION)) {
    throw new FerryError(
      "ARCHIVE_INVALID",
      `${LAYOUT_NAME} has version ${JSON.stringify(words[1] ?? "")}; this ferry reads version ${LAYOUT_VERSION} only (a newer ferry wrote it?)`,
    );
  }
  const sha = /^sha256=([0-9a-f]{64})$/.exec(words[2] ?? "")?.[1];
  const bytes = /^bytes=([0-9]{1,16})$/.exec(words[3] ?? "")?.[1];
  if (sha === undefined || bytes === undefined || words.length !== 4) {
    throw new FerryError("ARCHIVE_INVALID", `${LAYOUT_NAME} has a malformed header line`);
  }
  return { header: { sha256: sha, bytes: Number(bytes) }, length: nl + 1 };
}

/**
 * Whether borg would store an archive entry under the layout's name (or below it):
 * it drops leading `/`, `.` and `..` components (borg's make_path_safe).
 */
export function collidesWithLayout(path: string): boolean {
  const parts = path.split("/").filter((p) => p !== "" && p !== "." && p !== "..");
  return parts[0] === LAYOUT_NAME;
}

function isZero(b: Buffer, off: number): boolean {
  for (let i = off; i < off + BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

/**
 * Passes an archive on but holds back its trailing zero blocks: any run of whole zero
 * blocks is held (as a count, never in memory) until a block that is not zero follows it.
 * At the end what is held is exactly the end-of-archive blocks, because the last entry,
 * the end record, has a body that is not zero.
 */
class ZeroTail {
  private carry = Buffer.alloc(0);
  private held = 0;

  /** The bytes that may go on now. */
  push(chunk: Buffer): Buffer[] {
    const buf = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    const whole = buf.length - (buf.length % BLOCK);
    this.carry = Buffer.from(buf.subarray(whole));
    let end = whole;
    while (end > 0 && isZero(buf, end - BLOCK)) end -= BLOCK;
    if (end === 0) {
      this.held += whole;
      return [];
    }
    const out: Buffer[] = [];
    while (this.held > 0) {
      const n = Math.min(this.held, ZERO_CHUNK);
      out.push(Buffer.alloc(n));
      this.held -= n;
    }
    out.push(buf.subarray(0, end));
    this.held = whole - end;
    return out;
  }
}

/**
 * The backup side: `push` each piece of the archive and send what it returns to borg;
 * the layout's metadata stream goes to `onMeta` meanwhile (to be spooled). Once the
 * archive is complete, send `memberHead`, the spooled metadata, then `memberEnd`.
 */
export class BorgImportStream {
  private readonly splitter: TarSplitter;
  private readonly tail = new ZeroTail();

  constructor(onMeta: (b: Buffer) => void) {
    const skip = () => {};
    this.splitter = new TarSplitter(
      { meta: onMeta, contentStart: skip, content: skip, contentEnd: skip },
      1,
    );
  }

  push(chunk: Buffer): Buffer[] {
    this.splitter.push(chunk);
    return this.tail.push(chunk);
  }

  /** The layout member's tar header and header line, for `metaBytes` of metadata. */
  memberHead(archive: LayoutHeader, metaBytes: number): Buffer {
    this.splitter.finish();
    const line = layoutHeaderLine(archive);
    return Buffer.concat([layoutMemberHeader(line.length + metaBytes), line]);
  }

  /** What follows the metadata: the member's padding and the end-of-archive blocks. */
  memberEnd(archive: LayoutHeader, metaBytes: number): Buffer {
    const body = layoutHeaderLine(archive).length + metaBytes;
    return Buffer.concat([Buffer.alloc(padding(body)), END_BLOCKS]);
  }
}

function layoutMemberHeader(bodyBytes: number): Buffer {
  return encodeHeader(fileEntryHeader(LAYOUT_NAME, bodyBytes));
}

/** Where the file bodies come from on the way back: borg's tar, in order. */
export interface BodySource {
  /** The next non-empty regular file's size, or undefined after the last one. */
  nextFile(): Promise<number | undefined>;
  /** That file's body, exactly `size` bytes. */
  body(size: number): AsyncIterable<Buffer>;
}

/**
 * The archive again: `layout` is the layout's body after its header line (the metadata
 * stream); every file body the walk reaches is taken from `bodies`, which must have
 * exactly as many, of the same sizes.
 */
export async function* rebuildFromLayout(
  layout: AsyncIterable<Buffer>,
  bodies: BodySource,
): AsyncGenerator<Buffer> {
  const walker = new TarWalker(undefined, 1);
  let files = 0;
  for await (const chunk of layout) {
    let off = 0;
    while (off < chunk.length) {
      const n = walker.take(chunk.subarray(off));
      if (n > 0) yield chunk.subarray(off, off + n);
      off += n;
      if (walker.mode !== "content") continue;
      const want = walker.need;
      const size = await bodies.nextFile();
      if (size === undefined) {
        throw new FerryError(
          "ARCHIVE_INVALID",
          `the layout has more file bodies than borg's archive, which has ${files} non-empty files`,
        );
      }
      files++;
      if (size !== want) {
        throw new FerryError(
          "ARCHIVE_INVALID",
          `non-empty file number ${files} has ${size} bytes in borg's archive where the layout says ${want}`,
        );
      }
      yield* bodies.body(size);
      walker.contentDone();
    }
  }
  if (!walker.atBoundary) {
    throw new FerryError("ARCHIVE_TRUNCATED", "the layout ends inside an entry");
  }
  if ((await bodies.nextFile()) !== undefined) {
    throw new FerryError(
      "ARCHIVE_INVALID",
      `borg's archive has more non-empty files than the layout's ${files}`,
    );
  }
}
