/**
 * The fast path for a streamed response from ferryd (an archive): HTTP/1.1 spoken by hand
 * over the Unix socket, read with `onread` into one reused buffer, the body handed to a
 * synchronous consumer. bench/README.md has the profile behind it: through node:http,
 * every 64 KiB read allocated a new buffer and crossed the stream machinery, and the
 * client spent more CPU on that than on hashing the archive.
 *
 * The peer is ferryd, but the bytes are still checked as if they were anyone's: the head
 * and the trailers are bounded (64 KiB each), chunk-size lines too (1 KiB), a body must be
 * chunked or have a Content-Length, and anything after the end of the response is an
 * error. A consumer that returns a promise pauses reading until it settles.
 *
 * Longer than 300 lines on purpose: the response parser and the socket loop that feeds it
 * are one unit, tested together in test/cli/download.test.ts.
 */
import { connect, type Socket } from "node:net";
import { FerryError } from "../core/errors.js";

const RECV_BYTES = 1024 * 1024;
const MAX_HEAD = 64 * 1024;
const MAX_SIZE_LINE = 1024;
const MAX_ERROR_BODY = 1024 * 1024;

export interface ResponseHead {
  status: number;
  /** Header names in lower case. */
  headers: Map<string, string>;
}

export interface ResponseEnd {
  head: ResponseHead;
  /** Trailer names in lower case. */
  trailers: Map<string, string>;
  /** The body of a response other than 200, for its error (bounded). */
  errorBody?: string;
}

type State = "head" | "length" | "size" | "data" | "crlf" | "trailers" | "done";

function bad(message: string): FerryError {
  return new FerryError("BAD_RESPONSE", `ferryd's response is malformed: ${message}`);
}

const CRLF = Buffer.from("\r\n");
const CRLFCRLF = Buffer.from("\r\n\r\n");

/**
 * An incremental parser of one HTTP/1.1 response. `push` takes the bytes as they arrive;
 * the body of a 200 response goes to `onBody` (a view of the pushed buffer, valid only
 * during the call), any other body is collected for the error.
 */
export class ResponseParser {
  head: ResponseHead | undefined;
  readonly trailers = new Map<string, string>();
  private state: State = "head";
  private acc: Buffer[] = [];
  private accBytes = 0;
  private remaining = 0;
  private errorBody: Buffer[] = [];
  private errorBytes = 0;

  constructor(private readonly onBody: (b: Buffer) => void) {}

  get done(): boolean {
    return this.state === "done";
  }

  /** Feeds bytes; all of them are taken (the body consumer copies what it must keep). */
  push(buf: Buffer): void {
    let off = 0;
    while (off < buf.length) {
      switch (this.state) {
        case "head":
        case "trailers": {
          const what = this.state === "head" ? "a head" : "trailers";
          const end = this.accumulate(buf, off, CRLFCRLF, MAX_HEAD, what);
          if (end < 0) return;
          off = end;
          if (this.state === "head") this.parseHead();
          else {
            this.parseTrailers();
            this.state = "done";
          }
          break;
        }
        case "size": {
          const end = this.accumulate(buf, off, CRLF, MAX_SIZE_LINE, "a chunk-size line");
          if (end < 0) return;
          off = end;
          this.parseSize();
          break;
        }
        case "length":
        case "data": {
          const n = Math.min(this.remaining, buf.length - off);
          this.body(buf.subarray(off, off + n));
          off += n;
          this.remaining -= n;
          if (this.remaining === 0) {
            if (this.state === "data") {
              this.state = "crlf";
              this.remaining = 2;
            } else this.state = "done";
          }
          break;
        }
        case "crlf": {
          // this.remaining counts the bytes of the CRLF still expected (2, then 1).
          if (buf[off] !== CRLF[2 - this.remaining]) throw bad("a chunk does not end with CRLF");
          off++;
          if (--this.remaining === 0) this.state = "size";
          break;
        }
        case "done":
          throw bad("data after the end of the response");
      }
    }
    return;
  }

  /** Called at end of input: the response must be complete. */
  end(): ResponseEnd {
    if (this.state !== "done" || this.head === undefined) {
      throw new FerryError(
        "CONNECTION_LOST",
        this.head === undefined
          ? "ferryd closed the connection without answering"
          : "the connection to ferryd broke in the middle of the response",
      );
    }
    const out: ResponseEnd = { head: this.head, trailers: this.trailers };
    if (this.head.status !== 200) out.errorBody = Buffer.concat(this.errorBody).toString("utf8");
    return out;
  }

  private body(b: Buffer): void {
    if (b.length === 0) return;
    if (this.head?.status === 200) {
      this.onBody(b);
      return;
    }
    this.errorBytes += b.length;
    if (this.errorBytes > MAX_ERROR_BODY) throw bad("an error body larger than 1 MiB");
    this.errorBody.push(Buffer.from(b));
  }

  /**
   * Collects bytes until `delim` has been seen (for the trailers, also a lone CRLF at the
   * start: no trailers), at most `limit` bytes in all; returns the offset in `buf` just
   * after the delimiter, or -1 when more input is needed (all of `buf` was taken).
   */
  private accumulate(buf: Buffer, off: number, delim: Buffer, limit: number, what: string): number {
    const prev = this.accBytes;
    const take = Math.min(buf.length - off, limit - prev);
    const acc = Buffer.concat([...this.acc, buf.subarray(off, off + take)]);
    let end = -1;
    if (this.state === "trailers" && acc.length >= 2 && acc[0] === 0x0d && acc[1] === 0x0a) end = 2;
    else {
      const at = acc.indexOf(delim, Math.max(0, prev - delim.length + 1));
      if (at >= 0) end = at + delim.length;
    }
    if (end < 0) {
      if (acc.length >= limit) throw bad(`${what} longer than ${limit} bytes`);
      this.acc = [acc];
      this.accBytes = acc.length;
      return -1;
    }
    this.acc = [acc.subarray(0, end)];
    this.accBytes = end;
    return off + (end - prev);
  }

  private takeAcc(): Buffer {
    const all = this.acc.length === 1 ? (this.acc[0] as Buffer) : Buffer.concat(this.acc);
    this.acc = [];
    this.accBytes = 0;
    return all;
  }

  private parseHead(): void {
    const text = this.takeAcc().toString("latin1");
    const lines = text.slice(0, -4).split("\r\n");
    const m = /^HTTP\/1\.[01] ([0-9]{3})(?: .*)?$/.exec(lines[0] ?? "");
    if (m === null) throw bad("not an HTTP/1.1 status line");
    const status = Number(m[1]);
    if (status < 200) throw bad(`an interim response (${status})`);
    const headers = parseFields(lines.slice(1), "header");
    this.head = { status, headers };
    const te = headers.get("transfer-encoding");
    const cl = headers.get("content-length");
    if (te !== undefined) {
      if (te.toLowerCase() !== "chunked" || cl !== undefined) {
        throw bad(`Transfer-Encoding ${JSON.stringify(te)}`);
      }
      this.state = "size";
    } else if (cl !== undefined) {
      if (!/^[0-9]{1,15}$/.test(cl)) throw bad(`Content-Length ${JSON.stringify(cl)}`);
      this.remaining = Number(cl);
      this.state = this.remaining === 0 ? "done" : "length";
    } else {
      throw bad("a body with neither Content-Length nor chunked encoding");
    }
  }

  private parseSize(): void {
    const line = this.takeAcc().toString("latin1").slice(0, -2);
    const m = /^([0-9a-fA-F]{1,12})(?:;.*)?$/.exec(line);
    if (m === null) throw bad(`a chunk size of ${JSON.stringify(line.slice(0, 40))}`);
    this.remaining = Number.parseInt(m[1] as string, 16);
    this.state = this.remaining === 0 ? "trailers" : "data";
  }

  private parseTrailers(): void {
    const text = this.takeAcc().toString("latin1");
    if (text === "\r\n") return;
    for (const [k, v] of parseFields(text.slice(0, -4).split("\r\n"), "trailer")) {
      this.trailers.set(k, v);
    }
  }
}

function parseFields(lines: string[], what: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of lines) {
    const m = /^([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*(.*?)[ \t]*$/.exec(line);
    if (m === null) throw bad(`a ${what} line ${JSON.stringify(line.slice(0, 60))}`);
    const name = (m[1] as string).toLowerCase();
    if (out.has(name)) throw bad(`the ${what} ${name} twice`);
    out.set(name, m[2] as string);
  }
  return out;
}

export interface DownloadOptions {
  socketPath: string;
  method: string;
  path: string;
  signal?: AbortSignal;
  /**
   * Receives the body of a 200 response; the buffer is reused after the call, so what is
   * kept must be copied. A returned promise pauses reading until it settles.
   */
  onBody(b: Buffer): undefined | Promise<void>;
  /** Maps a connection error to what the user should read. */
  transportError(err: NodeJS.ErrnoException): Error;
}

/**
 * Sends one request without a body and reads the response through `ResponseParser`;
 * resolves with the complete response, rejects on any transport or framing error.
 */
export function download(opts: DownloadOptions): Promise<ResponseEnd> {
  let socket: Socket | undefined;
  return new Promise<ResponseEnd>((resolve, reject) => {
    let failed = false;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      socket?.destroy();
      reject(err);
    };
    if (opts.signal?.aborted) {
      fail(opts.signal.reason);
      return;
    }
    let waits: Promise<void>[] = [];
    const parser = new ResponseParser((b) => {
      const wait = opts.onBody(b);
      if (wait !== undefined) waits.push(wait);
    });
    const recv = Buffer.allocUnsafe(RECV_BYTES);
    const s = connect({
      path: opts.socketPath,
      onread: {
        buffer: recv,
        callback: (n: number, buf: Uint8Array) => {
          if (failed) return false;
          try {
            parser.push(Buffer.from(buf.buffer, buf.byteOffset, n));
          } catch (err) {
            fail(err);
            return false;
          }
          if (waits.length === 0) return true;
          const pending = waits;
          waits = [];
          Promise.all(pending).then(
            () => socket?.resume(),
            (err) => fail(err),
          );
          return false;
        },
      },
    });
    socket = s;
    const onAbort = () => fail(opts.signal?.reason);
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    let connected = false;
    s.on("connect", () => {
      connected = true;
      s.write(
        `${opts.method} ${opts.path} HTTP/1.1\r\nHost: ferry\r\nAccept: application/json\r\n` +
          "Content-Length: 0\r\nConnection: close\r\n\r\n",
      );
    });
    s.on("error", (err) => {
      fail(connected ? connectionLost(err) : opts.transportError(err));
    });
    s.on("end", () => {
      opts.signal?.removeEventListener("abort", onAbort);
      if (failed) return;
      try {
        const res = parser.end();
        failed = true; // settled
        s.destroy();
        resolve(res);
      } catch (err) {
        fail(err);
      }
    });
    s.on("close", () => fail(new FerryError("CONNECTION_LOST", "the connection to ferryd closed")));
  });
}

function connectionLost(err: NodeJS.ErrnoException): FerryError {
  return new FerryError("CONNECTION_LOST", `the connection to ferryd broke: ${err.message}`, {
    cause: err,
  });
}
