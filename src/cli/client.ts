/**
 * The backup software's side of API v1: HTTP/1.1 to ferryd over its Unix socket, or over
 * an inherited connected descriptor when ferryd started us (`FERRY_FD`, see `ferryd run`).
 * Transport failures become catalogued errors so the CLI can say what to do.
 */

import { readSync } from "node:fs";
import { Agent, type ClientRequest, type IncomingMessage, request } from "node:http";
import { Socket } from "node:net";
import type { Readable } from "node:stream";
import { DEFAULT_SOCKET } from "../api/defaults.js";
import { isErrorCode } from "../api/errors.js";
import { FerryError } from "../core/errors.js";
import { download, type ResponseEnd } from "./download.js";
import { UsageError } from "./exit-codes.js";

export interface ClientOptions {
  socket?: string;
  fd?: number;
}

export function clientOptionsFromEnv(socketFlag: string | undefined): ClientOptions {
  if (socketFlag !== undefined) return { socket: socketFlag };
  const fd = process.env.FERRY_FD;
  if (fd !== undefined && fd !== "") {
    if (!/^[0-9]+$/.test(fd)) throw new UsageError(`FERRY_FD=${fd} is not a descriptor number`);
    return { fd: Number(fd) };
  }
  return { socket: process.env.FERRY_SOCKET || DEFAULT_SOCKET };
}

export class FerryClient {
  private agent: Agent | undefined;

  /**
   * The inherited descriptor is one HTTP connection shared by every `ferry` the command
   * runs, one after the other: keep it alive (never send `Connection: close`, never shut
   * it down), so the next process can send its request on it.
   */
  private fdAgent(fd: number): Agent {
    if (this.agent === undefined) {
      const agent = new Agent({ keepAlive: true, maxSockets: 1 });
      let socket: Socket | undefined;
      (agent as unknown as { createConnection: () => Socket }).createConnection = () => {
        if (socket !== undefined)
          throw new FerryError(
            "CONNECTION_LOST",
            "the connection ferryd run handed down (FERRY_FD) was closed",
          );
        socket = new Socket({ fd, readable: true, writable: true });
        return socket;
      };
      this.agent = agent;
    }
    return this.agent;
  }
  constructor(private readonly opts: ClientOptions) {}

  get where(): string {
    return this.opts.fd !== undefined ? `fd ${this.opts.fd}` : (this.opts.socket ?? DEFAULT_SOCKET);
  }

  /**
   * Sends a request; resolves with the response (any status), rejects on transport errors.
   * The body is a stream, or a pump that writes it into the request itself and ends it
   * (see fileBody).
   */
  request(
    method: string,
    path: string,
    signal?: AbortSignal,
    body?: Readable | BodyPump,
  ): Promise<IncomingMessage> {
    return new Promise((resolve, reject) => {
      const headers: Record<string, string> = { Host: "ferry", Accept: "application/json" };
      if (body !== undefined) headers["Content-Type"] = "application/x-tar";
      const base = { method, path, headers, signal };
      let req: ReturnType<typeof request>;
      if (this.opts.fd !== undefined) {
        req = request({ ...base, agent: this.fdAgent(this.opts.fd) });
      } else {
        req = request({ ...base, socketPath: this.opts.socket, agent: false });
      }
      req.on("response", resolve);
      req.on("error", (err) => reject(this.transportError(err)));
      if (body === undefined) req.end();
      else if (typeof body === "function") {
        let answered = false;
        req.on("response", () => {
          answered = true;
        });
        // ferryd may answer (and close) before the body is sent, e.g. a refused archive:
        // the pump stops at the answer; its own failure (a read error) ends the request.
        body(req, () => answered).then(
          () => req.end(),
          (err) => req.destroy(err),
        );
      } else {
        // ferryd may answer (and close) before the body is sent, e.g. a refused archive.
        body.on("error", (err) => req.destroy(err));
        body.pipe(req);
        req.on("response", (res) => {
          if (res.statusCode !== 200) {
            body.unpipe(req);
            req.end();
          }
        });
      }
    });
  }

  /**
   * A request whose answer is streamed to `handler`: `head` once a 200 arrives, then
   * `body` with each piece (the buffer is reused after the call, so what is kept must be
   * copied; a returned promise holds the stream until it settles). On the
   * socket this is the hand-made fast path (download.ts); on an inherited descriptor, the
   * shared keep-alive connection stays with node:http.
   */
  async stream(
    method: string,
    path: string,
    signal: AbortSignal,
    handler: { head(): void; body(b: Buffer): undefined | Promise<void> },
  ): Promise<ResponseEnd> {
    if (this.opts.fd === undefined) {
      let started = false;
      return download({
        socketPath: this.opts.socket ?? DEFAULT_SOCKET,
        method,
        path,
        signal,
        onBody: (b) => {
          if (!started) {
            started = true;
            handler.head();
          }
          return handler.body(b);
        },
        transportError: (err) => this.transportError(err),
      });
    }
    const res = await this.request(method, path, signal);
    const status = res.statusCode ?? 500;
    const head = { status, headers: new Map<string, string>() };
    if (status !== 200) {
      return { head, trailers: new Map(), errorBody: await readBody(res, 1 << 20) };
    }
    handler.head();
    for await (const chunk of res) await handler.body(chunk as Buffer);
    const trailers = new Map<string, string>();
    for (const [k, v] of Object.entries(res.trailers)) if (v !== undefined) trailers.set(k, v);
    return { head, trailers };
  }

  /** A JSON request; non-2xx answers become FerryErrors with ferryd's code and message. */
  async json<T>(method: string, path: string): Promise<T> {
    const res = await this.request(method, path);
    const text = await readBody(res, 4 * 1024 * 1024);
    if ((res.statusCode ?? 500) >= 300) throw errorFromBody(res.statusCode ?? 500, text);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new FerryError("BAD_RESPONSE", "ferryd sent a response that is not JSON");
    }
  }

  private transportError(err: NodeJS.ErrnoException): Error {
    if (err.name === "AbortError") return err;
    const where = this.where;
    switch (err.code) {
      case "ENOENT":
      case "ECONNREFUSED":
        return new FerryError(
          "SERVICE_UNREACHABLE",
          `no ferryd is listening on ${where} (is the service running? set --socket or FERRY_SOCKET)`,
          { cause: err },
        );
      case "EACCES":
      case "EPERM":
        return new FerryError(
          "SOCKET_ACCESS_DENIED",
          `permission denied on ${where}: only ferryd's own user may connect`,
          { cause: err },
        );
      case "ECONNRESET":
      case "EPIPE":
        return new FerryError(
          "PEER_REJECTED",
          `ferryd on ${where} closed the connection without answering: most likely this user (uid ${process.getuid?.()}) is not allowed to use it (ferryd's audit log says)`,
          { cause: err },
        );
      default:
        return new FerryError(
          "SERVICE_UNREACHABLE",
          `cannot talk to ferryd on ${where}: ${err.message}`,
          {
            cause: err,
          },
        );
    }
  }
}

/** Writes a request body into `req` (not ending it); `answered()` says to stop early. */
export type BodyPump = (req: ClientRequest, answered: () => boolean) => Promise<void>;

const PUMP_BLOCK = 1024 * 1024;
const PUMP_BLOCKS = 4;

/**
 * A body read from the regular file open at `fd`, synchronously, into PUMP_BLOCKS
 * reused 1 MiB blocks: a block is read into again only once the socket has taken it (the
 * write's callback), so memory stays at 4 MiB and nothing is allocated per read
 * (bench/README.md, "import"). `onBytes` sees each block's size as it is sent.
 */
export function fileBody(fd: number, onBytes: (n: number) => void): BodyPump {
  return async (req, answered) => {
    const free: Buffer[] = [];
    for (let i = 0; i < PUMP_BLOCKS; i++) free.push(Buffer.allocUnsafeSlow(PUMP_BLOCK));
    let waiting: (() => void) | undefined;
    const give = (b: Buffer) => {
      free.push(b);
      waiting?.();
    };
    for (;;) {
      if (answered() || req.destroyed) return;
      let block = free.pop();
      while (block === undefined) {
        await new Promise<void>((resolve) => {
          waiting = resolve;
        });
        waiting = undefined;
        if (answered() || req.destroyed) return;
        block = free.pop();
      }
      const n = readSync(fd, block, 0, block.length, null);
      if (n === 0) return;
      onBytes(n);
      const full = block;
      req.write(block.subarray(0, n), () => give(full));
    }
  };
}

export async function readBody(res: IncomingMessage, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res) {
    n += (c as Buffer).length;
    if (n > max) throw new FerryError("BAD_RESPONSE", "ferryd's response is too large");
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

export function errorFromBody(status: number, text: string): FerryError {
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } };
    const code = body.error?.code;
    const message = typeof body.error?.message === "string" ? body.error.message : `HTTP ${status}`;
    if (isErrorCode(code)) return new FerryError(code, message);
    return new FerryError(
      "BAD_RESPONSE",
      `ferryd answered with an error this ferry does not know (${String(code)}): ${message}; is ferry older than ferryd?`,
    );
  } catch {
    return new FerryError("BAD_RESPONSE", `ferryd answered HTTP ${status} without an error body`);
  }
}

/** Parses a `Ferry-Status` trailer ("ok" or "error CODE message"). */
export function parseStatusTrailer(value: string | undefined): FerryError | undefined {
  if (value === "ok") return undefined;
  if (value === undefined) {
    return new FerryError("ARCHIVE_TRUNCATED", "the stream ended without a Ferry-Status trailer");
  }
  const m = /^error ([A-Z_]+) ?(.*)$/.exec(value);
  const code = m?.[1];
  return new FerryError(isErrorCode(code) ? code : "BACKUP_FAILED", m?.[2] || value);
}
