/**
 * Every connection to ferryd has a deadline in every state (README, "Limits"):
 * - waiting for a request head: idle_timeout from accept or from the previous response
 *   (`track`, `requestStarted`);
 * - a request body: idle_timeout without a byte (archives, in their handlers) or
 *   request_timeout in all (`guardSmall`, with max_body_bytes);
 * - a client that stops reading what ferryd sends (any response, an event stream): closed
 *   once nothing of the pending output moved for 2 × idle_timeout (the watchdog);
 * - a malformed request (parse error, mid-body included): answered when no response has
 *   started, and the socket is destroyed at once after that answer or within 1 s
 *   (`clientError`);
 * - a client that half-closed: its request is served or cancelled, then the socket closes.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Socket } from "node:net";
import type { Duplex } from "node:stream";
import { FerryError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { Limits } from "./config.js";

/** How long a malformed request's answer may take to leave before the socket is destroyed. */
const CLIENT_ERROR_LINGER_MS = 1000;

const STATUS_TEXT: Record<number, string> = {
  400: "Bad Request",
  408: "Request Timeout",
  413: "Payload Too Large",
  431: "Request Header Fields Too Large",
};

/** Progress of a connection's output, as the watchdog last saw it. */
interface OutputProgress {
  dispatched: number;
  since: number;
}

/** The deadlines of ferryd's accepted connections. */
export class ConnectionDeadlines {
  /** Accepted sockets (the HTTP servers never listen, so Node does not track them). */
  private readonly sockets = new Set<Socket>();
  /** Per socket: the deadline for its next complete request head. */
  private readonly headTimers = new WeakMap<Socket, NodeJS.Timeout>();
  private readonly progress = new WeakMap<Socket, OutputProgress>();
  private readonly watchdog: NodeJS.Timeout;

  constructor(
    private readonly log: Logger,
    /** The live limits (a reload may change them). */
    private readonly limits: () => Limits,
  ) {
    this.watchdog = setInterval(
      () => this.checkStalled(),
      Math.min(1000, limits().idle_timeout * 500),
    );
    this.watchdog.unref();
  }

  /**
   * Follows an accepted socket until it closes; `headDeadline`: it must send its first
   * request head within idle_timeout (not for `ferryd run`'s socket pair).
   */
  track(socket: Socket, headDeadline: boolean): void {
    this.sockets.add(socket);
    socket.once("close", () => {
      this.sockets.delete(socket);
      clearTimeout(this.headTimers.get(socket));
    });
    if (headDeadline) this.armHeadTimer(socket);
  }

  /** A request head arrived: no head deadline until its response is sent. */
  requestStarted(socket: Socket, res: ServerResponse): void {
    clearTimeout(this.headTimers.get(socket));
    res.once("finish", () => {
      if (!socket.destroyed && this.headTimers.has(socket)) this.armHeadTimer(socket);
    });
  }

  /** Ordinary (non-archive) requests: bounded body and total time. */
  guardSmall(req: IncomingMessage, res: ServerResponse): void {
    const l = this.limits();
    const len = Number(req.headers["content-length"] ?? 0);
    if (req.headers["transfer-encoding"] !== undefined || len > l.max_body_bytes) {
      res.shouldKeepAlive = false;
      throw new FerryError(
        "PAYLOAD_TOO_LARGE",
        `this endpoint takes at most ${l.max_body_bytes} bytes of body`,
      );
    }
    const timer = setTimeout(() => res.destroy(), l.request_timeout * 1000);
    timer.unref();
    res.once("close", () => clearTimeout(timer));
  }

  /**
   * A request that cannot be parsed (bad head, a chunked body that turns malformed, a head
   * over max_header_bytes): answered with a status when no response has started on the
   * connection, and the socket is destroyed in every case, at once after the answer left
   * or after CLIENT_ERROR_LINGER_MS. Ending it gracefully is not enough: a request that
   * was being read may have paused the socket, and a paused socket never sees the client's
   * FIN, so it would stay open (and count against max_connections) for ever.
   */
  clientError(err: Error, socket: Duplex): void {
    const code = (err as NodeJS.ErrnoException).code;
    this.log.debug({ err: err.message, code }, "client error");
    const current = (socket as { _httpMessage?: ServerResponse })._httpMessage;
    if (!socket.writable || socket.destroyed || current?.headersSent === true) {
      socket.destroy();
      return;
    }
    const status =
      code === "HPE_HEADER_OVERFLOW"
        ? 431
        : code === "ERR_HTTP_REQUEST_TIMEOUT"
          ? 408
          : code === "HPE_CHUNK_EXTENSIONS_OVERFLOW"
            ? 413
            : 400;
    const body = `${JSON.stringify({ error: { code: status === 431 || status === 413 ? "PAYLOAD_TOO_LARGE" : "BAD_REQUEST", message: "malformed request" } })}\n`;
    const timer = setTimeout(() => socket.destroy(), CLIENT_ERROR_LINGER_MS);
    timer.unref();
    socket.once("close", () => clearTimeout(timer));
    socket.end(
      `HTTP/1.1 ${status} ${STATUS_TEXT[status]}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
      () => socket.destroy(),
    );
  }

  /** Stops the watchdog (shutdown). */
  stop(): void {
    clearInterval(this.watchdog);
  }

  /** Destroys every connection (the end of a shutdown). */
  destroyAll(): void {
    for (const socket of this.sockets) socket.destroy();
  }

  /**
   * The connection watchdog: a connection with output pending that did not move for
   * 2 × idle_timeout belongs to a client that stopped reading, whatever state its request
   * is in, and is destroyed. (The backup handler notices a stalled reader after
   * idle_timeout itself and fails the job with CLIENT_TIMEOUT; this is the backstop for
   * every other response and for event streams.) One timer for all connections.
   */
  private checkStalled(): void {
    const now = Date.now();
    const limit = 2 * this.limits().idle_timeout * 1000;
    for (const socket of this.sockets) {
      const pending = socket.writableLength;
      const dispatched = socket.bytesWritten - pending;
      const last = this.progress.get(socket);
      if (pending === 0 || last === undefined || last.dispatched !== dispatched) {
        this.progress.set(socket, { dispatched, since: now });
        continue;
      }
      if (now - last.since >= limit) {
        this.log.debug({ pending }, "closing a connection whose client stopped reading");
        socket.destroy();
      }
    }
  }

  /**
   * A connection must deliver a complete request head within idle_timeout of being
   * accepted or of its previous response: a client trickling one byte a second (which
   * keeps any inactivity timer happy) is cut off. Node's own headersTimeout is enforced
   * only for servers that listen themselves, which ours do not.
   */
  private armHeadTimer(socket: Socket): void {
    clearTimeout(this.headTimers.get(socket));
    const t = setTimeout(() => {
      this.log.debug("closing a connection that sent no complete request in time");
      socket.destroy();
    }, this.limits().idle_timeout * 1000);
    t.unref();
    this.headTimers.set(socket, t);
  }
}
