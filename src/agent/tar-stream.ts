/**
 * A pull-based reader of a plain tar stream (an agent's payload, in either direction),
 * built on the header codec of src/core/archive/tar.ts: exact byte counts out of an async
 * stream of chunks with an idle bound (`ByteSource`), and the entries of a ustar/pax
 * stream with the limits of protocol.ts (`readTar`). Used by ferryd's `agent` driver and by
 * the `ferry/agent` SDK (docs/agent-protocol.md).
 */
import {
  BLOCK,
  decodeBlock,
  isZeroBlock,
  padding,
  parsePax,
  resolveHeader,
  TarFormatError,
  type TarHeader,
} from "../core/archive/tar.js";
import type { PayloadLimits } from "./protocol.js";

export interface ByteSourceOptions {
  /** Longest wait for the next chunk; `onIdle` makes the error. */
  idleMs: number;
  onIdle: () => Error;
  signal?: AbortSignal;
}

/**
 * Pulls exact byte counts out of an async iterator of chunks. Only the time spent waiting
 * for the producer counts against `idleMs`: a slow consumer never trips it.
 */
export class ByteSource {
  private buf: Buffer = Buffer.alloc(0);
  private ended = false;
  private readonly it: AsyncIterator<Buffer>;

  constructor(
    src: AsyncIterable<Buffer>,
    private readonly opts: ByteSourceOptions,
  ) {
    this.it = src[Symbol.asyncIterator]();
  }

  get buffered(): number {
    return this.buf.length;
  }

  /** Reads one more chunk into the buffer; false at the end of the stream. */
  private async more(): Promise<boolean> {
    if (this.ended) return false;
    this.opts.signal?.throwIfAborted();
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    const waits: Promise<never>[] = [
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(this.opts.onIdle()), this.opts.idleMs);
      }),
    ];
    const signal = this.opts.signal;
    if (signal !== undefined) {
      waits.push(
        new Promise<never>((_, reject) => {
          onAbort = () => reject(signal.reason);
          signal.addEventListener("abort", onAbort, { once: true });
        }),
      );
    }
    try {
      const r = await Promise.race([this.it.next(), ...waits]);
      if (r.done) {
        this.ended = true;
        return false;
      }
      const chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value);
      this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
      return true;
    } finally {
      clearTimeout(timer);
      if (onAbort !== undefined) signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Exactly `n` bytes, or undefined if the stream ended first (`partial` says if any came). */
  async exact(n: number): Promise<Buffer | undefined> {
    while (this.buf.length < n) if (!(await this.more())) return undefined;
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Up to `max` bytes (at least one), or undefined at the end of the stream. */
  async some(max: number): Promise<Buffer | undefined> {
    if (this.buf.length === 0 && !(await this.more())) return undefined;
    const n = Math.min(max, this.buf.length);
    const out = this.buf.subarray(0, n);
    this.buf = this.buf.subarray(n);
    return out;
  }

  /** Gives up the underlying iterator (closes the stream behind it). */
  async close(): Promise<void> {
    this.ended = true;
    await this.it.return?.().catch(() => {});
  }
}

export interface TarEntry {
  header: TarHeader;
  /** The entry's body; must be read to the end (or abandoned) before the next entry. */
  body: AsyncIterable<Buffer>;
}

/**
 * Reads a plain ustar/pax tar stream: entries in order, then the end-of-archive blocks,
 * then nothing but zero bytes (at most `maxTrailingBytes`). A stream without its
 * end-of-archive blocks is incomplete and throws. `makeError` turns a format problem into
 * the caller's error.
 */
export async function* readTar(
  src: ByteSource,
  limits: PayloadLimits,
  makeError: (message: string) => Error,
): AsyncGenerator<TarEntry, void, undefined> {
  let pax: Map<string, string> | undefined;
  for (;;) {
    const block = await src.exact(BLOCK);
    if (block === undefined) throw truncatedErr(makeError, "before its end-of-archive blocks");
    if (isZeroBlock(block)) {
      let trailing = 0;
      for (;;) {
        const rest = await src.some(64 * 1024);
        if (rest === undefined) break;
        trailing += rest.length;
        if (trailing > limits.maxTrailingBytes || rest.some((b) => b !== 0)) {
          throw makeError("data follows the end of the tar stream");
        }
      }
      if (trailing < BLOCK) throw makeError("the tar stream has one end-of-archive block, not two");
      if (pax !== undefined) throw makeError("a pax header is not followed by an entry");
      return;
    }
    let h: TarHeader;
    try {
      const raw = decodeBlock(Buffer.from(block));
      if (raw.typeflag === "x") {
        if (pax !== undefined) throw new TarFormatError("two pax headers in a row");
        if (raw.size > limits.maxPaxBytes) {
          throw new TarFormatError(`a pax header of ${raw.size} bytes exceeds the limit`);
        }
        const body = await src.exact(raw.size + padding(raw.size));
        if (body === undefined) throw truncatedErr(makeError, "inside a pax header");
        pax = parsePax(body.subarray(0, raw.size));
        continue;
      }
      if (raw.typeflag === "g") throw new TarFormatError("global pax headers are not accepted");
      h = resolveHeader(raw, pax);
      pax = undefined;
    } catch (err) {
      if (err instanceof TarFormatError) throw makeError(`invalid tar stream: ${err.message}`);
      throw err;
    }
    let left = h.size;
    const body = (async function* () {
      while (left > 0) {
        const chunk = await src.some(Math.min(left, 1024 * 1024));
        if (chunk === undefined) throw truncatedErr(makeError, "inside an entry's body");
        left -= chunk.length;
        yield chunk;
      }
    })();
    yield { header: h, body };
    // Whatever the consumer left unread is skipped, never misread as a header.
    for await (const _ of body) {
      // drain
    }
    while (left > 0) {
      const chunk = await src.some(Math.min(left, 1024 * 1024));
      if (chunk === undefined) throw truncatedErr(makeError, "inside an entry's body");
      left -= chunk.length;
    }
    const pad = padding(h.size);
    if (pad > 0 && (await src.exact(pad)) === undefined) {
      throw truncatedErr(makeError, "inside an entry's padding");
    }
  }
}

function truncatedErr(makeError: (m: string) => Error, where: string): Error {
  return makeError(`the tar stream ended ${where}: it is incomplete`);
}
