/**
 * `GET /v1/events`: newline-delimited JSON of job and audit events until the client goes
 * away. At most EVENT_STREAMS_PER_PEER streams per peer uid and EVENT_STREAMS_MAX in all
 * (never more than a quarter of max_connections); a heartbeat line every idle_timeout / 2
 * keeps an idle stream distinguishable from a stalled one (the server's connection
 * watchdog closes a stream whose reader stopped), and a subscriber more than
 * EVENT_BUFFER_MAX behind is dropped rather than buffered without bound.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { FerryError } from "../core/errors.js";
import type { Audit } from "./audit.js";
import type { Limits } from "./config.js";
import type { RequestContext } from "./job-request.js";
import type { JobRegistry } from "./jobs.js";

const EVENT_BUFFER_MAX = 1024 * 1024;
/** Most `GET /v1/events` streams one peer uid may hold at once. */
export const EVENT_STREAMS_PER_PEER = 4;
/** Most `GET /v1/events` streams in all (and never more than a quarter of max_connections). */
export const EVENT_STREAMS_MAX = 64;

export class EventStreams {
  private readonly streams = new Map<ServerResponse, number>(); // → peer uid

  constructor(
    private readonly jobs: JobRegistry,
    private readonly audit: Audit,
    /** The live limits (a reload may change them). */
    private readonly limits: () => Limits,
  ) {
    jobs.on("event", (e: Record<string, unknown>) => this.broadcast(e));
  }

  /** Opens a stream on `res`: a hello with the jobs, then every event. */
  stream(req: IncomingMessage, res: ServerResponse, ctx: RequestContext): void {
    // A stream reads no body: one would be left unread, pausing the socket for good.
    if (
      req.headers["transfer-encoding"] !== undefined ||
      Number(req.headers["content-length"] ?? 0) > 0
    ) {
      res.shouldKeepAlive = false;
      throw new FerryError("PAYLOAD_TOO_LARGE", "GET /v1/events takes no body");
    }
    let mine = 0;
    for (const uid of this.streams.values()) if (uid === ctx.peer.uid) mine++;
    const total = Math.min(
      EVENT_STREAMS_MAX,
      Math.max(1, Math.floor(this.limits().max_connections / 4)),
    );
    if (mine >= EVENT_STREAMS_PER_PEER || this.streams.size >= total) {
      throw new FerryError(
        "TOO_MANY_STREAMS",
        mine >= EVENT_STREAMS_PER_PEER
          ? `uid ${ctx.peer.uid} already holds ${mine} event streams (at most ${EVENT_STREAMS_PER_PEER})`
          : `ferryd already serves ${this.streams.size} event streams (at most ${total})`,
      );
    }
    res.writeHead(200, { "Content-Type": "application/x-ndjson", "Cache-Control": "no-store" });
    res.write(
      `${JSON.stringify({ time: new Date().toISOString(), type: "hello", jobs: this.jobs.list() })}\n`,
    );
    this.streams.set(res, ctx.peer.uid);
    const heartbeat = setInterval(() => {
      if (res.writableLength > EVENT_BUFFER_MAX) res.destroy();
      else res.write(`${JSON.stringify({ time: new Date().toISOString(), type: "heartbeat" })}\n`);
    }, this.limits().idle_timeout * 500);
    heartbeat.unref();
    res.once("close", () => {
      clearInterval(heartbeat);
      this.streams.delete(res);
    });
    this.audit.record({
      peer: ctx.peer,
      method: req.method,
      path: req.url,
      outcome: "ok",
      status: 200,
    });
  }

  /** Ends every stream (shutdown). */
  endAll(): void {
    for (const res of this.streams.keys()) res.end();
  }

  private broadcast(e: Record<string, unknown>): void {
    const line = `${JSON.stringify(e)}\n`;
    for (const res of this.streams.keys()) {
      // A subscriber that does not read is dropped rather than buffered without bound.
      if (res.writableLength > EVENT_BUFFER_MAX) res.destroy();
      else res.write(line);
    }
  }
}
