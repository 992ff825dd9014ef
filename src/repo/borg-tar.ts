/**
 * A strict, bounded reader of the tar stream `borg export-tar` writes (Python's tarfile
 * in GNU format, borg/archiver.py `_export_tar`): ustar blocks with the GNU magic, long
 * names and link names as members of their own (types 'L' and 'K'), sizes in octal or
 * GNU base-256. The borg target needs only the bodies of the non-empty regular files, in
 * order (borg-layout.ts puts everything else back from the layout); every other member is
 * checked (checksum, type, no data where none belongs) and passed over without being
 * held in memory. The stream ends at the first zero block.
 */
import { FerryError } from "../core/errors.js";
import type { BodySource } from "./borg-layout.js";
import { BLOCK, parseSizeField } from "./tarsplit.js";

/** Longest GNU long name or link name member passed over (Linux PATH_MAX is 4 KiB). */
const MAX_LONG_NAME = 64 * 1024;
const EMPTY = Buffer.alloc(0);

function invalid(message: string): FerryError {
  return new FerryError("ARCHIVE_INVALID", `borg export-tar: ${message}`);
}

function pad(n: number): number {
  const r = n % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

function checkBlock(b: Buffer): void {
  const field = b.toString("latin1", 148, 156);
  const m = /^ *([0-7]{1,7})[ \0]*$/.exec(field);
  if (m === null) throw invalid("a header's checksum is not an octal number");
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (b[i] as number);
  if (sum !== Number.parseInt(m[1] as string, 8)) throw invalid("header checksum mismatch");
  const magic = b.toString("latin1", 257, 263);
  if (magic !== "ustar " && magic !== "ustar\0") throw invalid("a header is not ustar/GNU");
}

export class BorgTarReader implements BodySource {
  private readonly it: AsyncIterator<Buffer>;
  private buf: Buffer = EMPTY;
  private eof = false;
  private ended = false;
  /** Body bytes of the file nextFile() returned, not yet read. */
  private pending = 0;

  constructor(source: AsyncIterable<Buffer>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async more(): Promise<boolean> {
    if (this.eof) return false;
    const r = await this.it.next();
    if (r.done === true) {
      this.eof = true;
      return false;
    }
    const chunk = r.value as Buffer;
    this.buf = this.buf.length > 0 ? Buffer.concat([this.buf, chunk]) : chunk;
    return true;
  }

  private truncated(): FerryError {
    return new FerryError("ARCHIVE_TRUNCATED", "borg export-tar: the stream ended inside a member");
  }

  private async block(): Promise<Buffer> {
    while (this.buf.length < BLOCK) if (!(await this.more())) throw this.truncated();
    const b = this.buf.subarray(0, BLOCK);
    this.buf = this.buf.subarray(BLOCK);
    return b;
  }

  private async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.buf.length === 0 && !(await this.more())) throw this.truncated();
      const k = Math.min(left, this.buf.length);
      this.buf = this.buf.subarray(k);
      left -= k;
    }
  }

  async nextFile(): Promise<number | undefined> {
    if (this.pending !== 0) throw new Error("BorgTarReader: the previous body was not read");
    while (!this.ended) {
      const b = await this.block();
      if (b.every((x) => x === 0)) {
        this.ended = true;
        break;
      }
      checkBlock(b);
      const type = String.fromCharCode(b[156] as number);
      const size = parseSizeField(b);
      if (type === "L" || type === "K") {
        if (size > MAX_LONG_NAME) throw invalid(`a long name of ${size} bytes`);
        await this.skip(size + pad(size));
      } else if (type === "0") {
        if (size === 0) continue;
        this.pending = size;
        return size;
      } else if ("123456".includes(type)) {
        if (size !== 0) throw invalid(`a member of type ${type} carries ${size} bytes`);
      } else {
        throw invalid(`unexpected member type ${JSON.stringify(type)}`);
      }
    }
    return undefined;
  }

  async *body(size: number): AsyncGenerator<Buffer> {
    if (size !== this.pending || size === 0) {
      throw new Error("BorgTarReader: body() of another size than nextFile() gave");
    }
    while (this.pending > 0) {
      if (this.buf.length === 0 && !(await this.more())) throw this.truncated();
      const k = Math.min(this.pending, this.buf.length);
      const out = this.buf.subarray(0, k);
      this.buf = this.buf.subarray(k);
      this.pending -= k;
      yield out;
    }
    await this.skip(pad(size));
  }

  /** Reads the rest of the stream (the zero blocks' record padding) so its writer can end. */
  async drain(): Promise<void> {
    this.buf = EMPTY;
    while (await this.more()) this.buf = EMPTY;
  }
}
