/**
 * FastCDC content-defined chunking (Xia et al., "FastCDC: a Fast and Efficient
 * Content-Defined Chunking Approach for Data Deduplication", USENIX ATC 2016), written
 * from the paper's description:
 *
 * - a gear rolling hash, `h = (h << 1) + G[byte]`, on 32 bits here (the window is the
 *   last 32 bytes);
 * - cut-point skipping: no byte before `min` is hashed;
 * - normalized chunking (level 2): up to the normal size the cut mask has two more bits
 *   than log2(avg) (cuts are rarer), after it two fewer (cuts are likelier), so sizes
 *   cluster around `avg`;
 * - a cut is forced at `max`.
 *
 * The gear table G comes from a 32-byte seed (SHA-256 of seed || index), so an encrypted
 * repository's boundaries depend on its secret key. The cut masks take their bits from
 * the top of the hash, where each bit depends on the most bytes.
 *
 * The chunker is streaming: push bytes, receive chunks (copied, so the caller's buffers
 * may be reused), and `flush` the remainder at the end of a stream.
 */
import { createHash } from "node:crypto";

export interface ChunkerParams {
  min: number;
  avg: number;
  max: number;
}

/** File contents: 64 KiB ≤ chunk ≤ 1 MiB, around 256 KiB. */
export const CONTENT_PARAMS: ChunkerParams = { min: 64 * 1024, avg: 256 * 1024, max: 1024 * 1024 };
/** The metadata stream (headers, small files): 1 KiB ≤ chunk ≤ 32 KiB, around 4 KiB. */
export const META_PARAMS: ChunkerParams = { min: 1024, avg: 4 * 1024, max: 32 * 1024 };

export function gearTable(seed: Buffer): Uint32Array {
  const t = new Uint32Array(256);
  const idx = Buffer.alloc(4);
  for (let i = 0; i < 256; i++) {
    idx.writeUInt32BE(i);
    t[i] = createHash("sha256").update(seed).update(idx).digest().readUInt32BE(0);
  }
  return t;
}

/** A mask of `bits` ones taken from the top of a 32-bit word. */
function topMask(bits: number): number {
  return bits >= 32 ? 0xffffffff : ((0xffffffff << (32 - bits)) >>> 0) | 0;
}

export class FastCDC {
  private readonly maskS: number;
  private readonly maskL: number;
  private readonly buf: Buffer;
  private len = 0; // bytes of the current chunk held in buf
  private hash = 0;

  constructor(
    private readonly gear: Uint32Array,
    private readonly p: ChunkerParams,
  ) {
    if (!(p.min > 0 && p.min < p.avg && p.avg < p.max)) throw new Error("bad chunker params");
    const bits = Math.round(Math.log2(p.avg));
    this.maskS = topMask(bits + 2);
    this.maskL = topMask(bits - 2);
    this.buf = Buffer.allocUnsafe(p.max);
  }

  /** Bytes held for the current (unfinished) chunk. */
  get pending(): number {
    return this.len;
  }

  /** Feeds bytes; calls `emit` with each completed chunk (a fresh Buffer). */
  push(data: Buffer, emit: (chunk: Buffer) => void): void {
    const { min, avg, max } = this.p;
    const gear = this.gear;
    const maskS = this.maskS;
    const maskL = this.maskL;
    let off = 0;
    while (off < data.length) {
      // Fill up to min without hashing (cut-point skipping).
      if (this.len < min) {
        const take = Math.min(min - this.len, data.length - off);
        data.copy(this.buf, this.len, off, off + take);
        this.len += take;
        off += take;
        if (this.len < min) return;
      }
      let h = this.hash;
      let pos = this.len;
      let i = off;
      let cut = -1;
      const end = data.length;
      const normal = Math.min(avg, max);
      // Phase 1: below the normal size, the harder mask.
      while (i < end && pos < normal) {
        h = ((h << 1) + (gear[data[i] as number] as number)) | 0;
        i++;
        pos++;
        if ((h & maskS) === 0) {
          cut = i;
          break;
        }
      }
      if (cut < 0) {
        while (i < end && pos < max) {
          h = ((h << 1) + (gear[data[i] as number] as number)) | 0;
          i++;
          pos++;
          if ((h & maskL) === 0) {
            cut = i;
            break;
          }
        }
      }
      data.copy(this.buf, this.len, off, i);
      this.len = pos;
      off = i;
      if (cut >= 0 || pos >= max) {
        emit(Buffer.from(this.buf.subarray(0, this.len)));
        this.len = 0;
        this.hash = 0;
      } else {
        this.hash = h;
      }
    }
  }

  /** Ends the stream: the remainder, if any, is the last chunk. */
  flush(emit: (chunk: Buffer) => void): void {
    if (this.len > 0) emit(Buffer.from(this.buf.subarray(0, this.len)));
    this.len = 0;
    this.hash = 0;
  }
}

/** Chunk lengths of a whole buffer (tests and tools). */
export function chunkLengths(gear: Uint32Array, p: ChunkerParams, data: Buffer): number[] {
  const c = new FastCDC(gear, p);
  const out: number[] = [];
  c.push(data, (b) => out.push(b.length));
  c.flush((b) => out.push(b.length));
  return out;
}
