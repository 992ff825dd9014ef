/**
 * ferryd's API server: HTTP/1.1 on a Unix socket, behind the peer check.
 *
 * Connections are accepted by a net.Server with `pauseOnConnect`, so not a byte of a
 * request is read before SO_PEERCRED has been checked; only accepted connections are
 * handed to the HTTP server. A refused connection is destroyed and audited.
 *
 * Limits (config `[limits]`): connections (net.Server.maxConnections), request head size
 * and time to send it (maxHeaderSize, headersTimeout = idle_timeout), idle keep-alive
 * connections (keepAliveTimeout = idle_timeout), bodies on endpoints that take no archive
 * (max_body_bytes), total time of ordinary requests (request_timeout), and, for jobs, the
 * registry's job limits plus stalled-client detection in the backup and restore handlers.
 *
 * Every connection has a deadline in every state (README, "Limits"):
 * - waiting for a request head: idle_timeout from accept or from the previous response;
 * - a request body: idle_timeout without a byte (archives) or request_timeout in all;
 * - a client that stops reading what ferryd sends (any response, an event stream): closed
 *   once nothing of the pending output moved for 2 × idle_timeout (connection watchdog);
 * - a malformed request (parse error, mid-body included): answered when no response has
 *   started, and the socket is destroyed at once after that answer or within 1 s;
 * - a client that half-closed: its request is served or cancelled, then the socket closes.
 * `GET /v1/events` streams are capped per peer uid and in all, and carry a heartbeat every
 * idle_timeout / 2, so an idle stream is still one whose reader the watchdog can judge.
 */
import {
  createServer as createHttpServer,
  type Server as HttpServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import type { Duplex } from "node:stream";
import type { AppDetail, AppSummary, DoctorReport, VersionInfo } from "../api/types.js";
import { API_VERSION } from "../api/types.js";
import { FerryError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { StateDir } from "../core/state-dir.js";
import type { PeerCred } from "../core/sys.js";
import { VERSION } from "../core/version.js";
import { drivers } from "../drivers/all.js";
import type { Health } from "../drivers/types.js";
import { type AuditRecord, audit } from "./audit.js";
import { APP_NAME, type AppConfig, type Config } from "./config.js";
import { Doctor } from "./doctor.js";
import { BoundedChecks } from "./health.js";
import type { JobResult, RequestContext } from "./job-request.js";
import { JobRegistry } from "./jobs.js";
import { checkPeer } from "./peer.js";
import { sendErrorDuringUpload, sendJson } from "./respond.js";
import { matchRoute, type RouteHost } from "./routes.js";

export interface Identity {
  uid: number;
  gid: number;
  user: string;
  capabilities: string[];
  privileged: boolean;
}

const EVENT_BUFFER_MAX = 1024 * 1024;
/** Most `GET /v1/events` streams one peer uid may hold at once. */
export const EVENT_STREAMS_PER_PEER = 4;
/** Most `GET /v1/events` streams in all (and never more than a quarter of max_connections). */
export const EVENT_STREAMS_MAX = 64;
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

/** Health results are reused for 5 s; a caller waits at most 15 s for one. */
const HEALTH_BOUNDS = { ttlMs: 5_000, timeoutMs: 15_000 };

export class FerryDaemon implements RouteHost {
  readonly jobs: JobRegistry;
  private readonly peers = new WeakMap<Socket, PeerCred>();
  private readonly http: HttpServer;
  /** A second HTTP server without keep-alive timeout, for `ferryd run`'s socket pair. */
  private readonly pairHttp: HttpServer;
  private readonly net: Server;
  private allowed: Set<number>;
  stopping = false;
  private readonly eventStreams = new Map<ServerResponse, number>(); // → peer uid
  private readonly watchdog: NodeJS.Timeout;
  private readonly progress = new WeakMap<Socket, OutputProgress>();
  /** Accepted sockets (the HTTP servers never listen, so Node does not track them). */
  private readonly sockets = new Set<Socket>();
  /** Per socket: the deadline for its next complete request head. */
  private readonly headTimers = new WeakMap<Socket, NodeJS.Timeout>();
  /** Health checks and descriptions: one in flight per app, cached briefly, bounded. */
  private readonly healthChecks = new BoundedChecks<Health>(HEALTH_BOUNDS);
  private readonly descriptions = new BoundedChecks<Record<string, unknown>>(HEALTH_BOUNDS);
  private readonly doctors: Doctor;

  constructor(
    public config: Config,
    readonly identity: Identity,
    readonly log: Logger,
    /** The held, checked state directory (src/core/state-dir.ts). */
    readonly state: StateDir,
  ) {
    const l = config.limits;
    this.doctors = new Doctor(state);
    this.allowed = new Set([identity.uid, ...config.clients]);
    this.jobs = new JobRegistry(l);
    const handler = (req: IncomingMessage, res: ServerResponse) => this.handle(req, res);
    this.http = createHttpServer(
      {
        maxHeaderSize: l.max_header_bytes,
        requestTimeout: 0, // per request kind, below
        headersTimeout: l.idle_timeout * 1000,
        keepAliveTimeout: l.idle_timeout * 1000,
        connectionsCheckingInterval: Math.min(1000, l.idle_timeout * 500),
      },
      handler,
    );
    this.pairHttp = createHttpServer(
      { maxHeaderSize: l.max_header_bytes, requestTimeout: 0, keepAliveTimeout: 0 },
      handler,
    );
    for (const server of [this.http, this.pairHttp]) {
      server.on("clientError", (err, socket) => this.clientError(err, socket));
    }
    this.watchdog = setInterval(() => this.checkStalled(), Math.min(1000, l.idle_timeout * 500));
    this.watchdog.unref();
    this.net = createNetServer({ pauseOnConnect: true }, (socket) =>
      this.accept(socket, this.http),
    );
    this.net.maxConnections = l.max_connections;
    this.net.on("drop", (d) =>
      log.warn(
        { limit: l.max_connections, peer: d },
        "connection dropped: limits.max_connections reached",
      ),
    );
    this.jobs.on("event", (e: Record<string, unknown>) => this.broadcast(e));
  }

  /** Listens on a path (prepared by the caller) or an inherited descriptor. */
  listen(target: { path: string } | { fd: number }): Promise<void> {
    return new Promise((resolve, reject) => {
      this.net.once("error", reject);
      const done = () => {
        this.net.off("error", reject);
        resolve();
      };
      if ("path" in target) {
        // The socket is created with mode 0600 (umask), inside a 0700 directory.
        const old = process.umask(0o177);
        this.net.listen(target.path, () => {
          process.umask(old);
          done();
        });
      } else {
        this.net.listen({ fd: target.fd }, done);
      }
    });
  }

  /** Serves one already-connected socket (ferryd run's socket pair), through the same peer check. */
  serveSocket(socket: Socket): void {
    this.accept(socket, this.pairHttp);
  }

  /** Swaps in a new, already validated config (SIGHUP). The socket path cannot change. */
  reload(next: Config): void {
    if (next.socket !== this.config.socket) {
      this.log.warn(
        { socket: next.socket },
        "socket path changes need a restart; keeping the current socket",
      );
    }
    if (next.stateDir !== this.config.stateDir) {
      this.log.warn(
        { state_dir: next.stateDir },
        "state_dir changes need a restart; keeping the current state directory",
      );
    }
    this.config = next;
    this.allowed = new Set([this.identity.uid, ...next.clients]);
    this.jobs.setLimits(next.limits);
    this.net.maxConnections = next.limits.max_connections;
    this.log.info({ apps: [...next.apps.keys()] }, "config reloaded");
  }

  /**
   * Graceful stop: no new connections or jobs; running jobs get `graceMs` to finish, then
   * are cancelled (helpers killed, post hooks run, restores rolled back) and awaited.
   */
  async shutdown(graceMs: number): Promise<void> {
    this.stopping = true;
    this.net.close();
    clearInterval(this.watchdog);
    if (this.jobs.runningCount() > 0) {
      this.log.info(
        { jobs: this.jobs.runningCount(), grace_s: graceMs / 1000 },
        "waiting for running jobs",
      );
      if (!(await this.jobs.drain(graceMs))) {
        this.jobs.cancelAll("ferryd is shutting down");
        await this.jobs.drain(60_000);
      }
    }
    for (const res of this.eventStreams.keys()) res.end();
    for (const socket of this.sockets) socket.destroy();
  }

  /** Logs an audit line and publishes it to event subscribers. */
  audit(rec: AuditRecord): void {
    audit(this.log, rec);
    const { peer, ...rest } = rec;
    this.jobs.publish({ type: "audit", peer_uid: peer?.uid, peer_pid: peer?.pid, ...rest });
  }

  /** The audit line that ends a backup or restore job. */
  auditJob(
    req: IncomingMessage,
    ctx: RequestContext,
    app: string,
    job: string,
    failure: FerryError | undefined,
    result: JobResult,
  ): void {
    this.audit({
      peer: ctx.peer,
      method: req.method,
      path: req.url,
      app,
      job,
      outcome: failure === undefined ? "ok" : failure.code === "CANCELLED" ? "aborted" : "error",
      status: failure === undefined ? 200 : failure.status,
      code: failure?.code,
      ...result,
      duration_ms: Date.now() - ctx.started,
      reason: failure?.message,
    });
  }

  private accept(socket: Socket, server: HttpServer): void {
    const decision = checkPeer(socket, this.allowed);
    if (!decision.ok) {
      socket.destroy();
      this.audit({ peer: decision.cred, outcome: "refused", reason: decision.reason });
      return;
    }
    this.peers.set(socket, decision.cred);
    this.sockets.add(socket);
    socket.once("close", () => {
      this.sockets.delete(socket);
      clearTimeout(this.headTimers.get(socket));
    });
    if (server === this.http) this.armHeadTimer(socket);
    server.emit("connection", socket);
    socket.resume();
  }

  /**
   * A request that cannot be parsed (bad head, a chunked body that turns malformed, a head
   * over max_header_bytes): answered with a status when no response has started on the
   * connection, and the socket is destroyed in every case, at once after the answer left
   * or after CLIENT_ERROR_LINGER_MS. Ending it gracefully is not enough: a request that
   * was being read may have paused the socket, and a paused socket never sees the client's
   * FIN, so it would stay open (and count against max_connections) for ever.
   */
  private clientError(err: Error, socket: Duplex): void {
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

  /**
   * The connection watchdog: a connection with output pending that did not move for
   * 2 × idle_timeout belongs to a client that stopped reading, whatever state its request
   * is in, and is destroyed. (The backup handler notices a stalled reader after
   * idle_timeout itself and fails the job with CLIENT_TIMEOUT; this is the backstop for
   * every other response and for event streams.) One timer for all connections.
   */
  private checkStalled(): void {
    const now = Date.now();
    const limit = 2 * this.config.limits.idle_timeout * 1000;
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
    }, this.config.limits.idle_timeout * 1000);
    t.unref();
    this.headTimers.set(socket, t);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const peer = this.peers.get(req.socket as Socket);
    if (peer === undefined) {
      // Unreachable by construction; kept so that a future code path cannot serve unchecked.
      req.socket.destroy();
      return;
    }
    const socket = req.socket as Socket;
    clearTimeout(this.headTimers.get(socket));
    res.once("finish", () => {
      if (!socket.destroyed && this.headTimers.has(socket)) this.armHeadTimer(socket);
    });
    const ctx: RequestContext = { peer, started: Date.now() };
    this.route(req, res, ctx).catch((err) => {
      const fe = sendErrorDuringUpload(req, res, err);
      if (fe.code === "INTERNAL") this.log.error({ err }, "request failed");
      this.audit({
        peer,
        method: req.method,
        path: req.url,
        outcome: "error",
        status: fe.status,
        code: fe.code,
        duration_ms: Date.now() - ctx.started,
      });
    });
  }

  /** Ordinary (non-archive) requests: bounded body and total time. */
  private guardSmall(req: IncomingMessage, res: ServerResponse): void {
    const l = this.config.limits;
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

  private async route(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: RequestContext,
  ): Promise<void> {
    const url = new URL(req.url ?? "/", "http://ferry");
    const { route, params } = matchRoute(url.pathname);
    const method = req.method ?? "GET";
    const handler = route.methods[method];
    if (handler === undefined) {
      throw new FerryError(
        "METHOD_NOT_ALLOWED",
        `${url.pathname} takes ${Object.keys(route.methods).join(" or ")}`,
      );
    }
    if (route.body === "small") this.guardSmall(req, res);
    return handler(this, req, res, ctx, params);
  }

  /**
   * GET /v1/events: newline-delimited JSON until the client goes away. At most
   * EVENT_STREAMS_PER_PEER per peer uid and EVENT_STREAMS_MAX in all; a heartbeat line every
   * idle_timeout / 2 keeps an idle stream distinguishable from a stalled one.
   */
  streamEvents(req: IncomingMessage, res: ServerResponse, ctx: RequestContext): void {
    // A stream reads no body: one would be left unread, pausing the socket for good.
    if (
      req.headers["transfer-encoding"] !== undefined ||
      Number(req.headers["content-length"] ?? 0) > 0
    ) {
      res.shouldKeepAlive = false;
      throw new FerryError("PAYLOAD_TOO_LARGE", "GET /v1/events takes no body");
    }
    let mine = 0;
    for (const uid of this.eventStreams.values()) if (uid === ctx.peer.uid) mine++;
    const total = Math.min(
      EVENT_STREAMS_MAX,
      Math.max(1, Math.floor(this.config.limits.max_connections / 4)),
    );
    if (mine >= EVENT_STREAMS_PER_PEER || this.eventStreams.size >= total) {
      throw new FerryError(
        "TOO_MANY_STREAMS",
        mine >= EVENT_STREAMS_PER_PEER
          ? `uid ${ctx.peer.uid} already holds ${mine} event streams (at most ${EVENT_STREAMS_PER_PEER})`
          : `ferryd already serves ${this.eventStreams.size} event streams (at most ${total})`,
      );
    }
    res.writeHead(200, { "Content-Type": "application/x-ndjson", "Cache-Control": "no-store" });
    res.write(
      `${JSON.stringify({ time: new Date().toISOString(), type: "hello", jobs: this.jobs.list() })}\n`,
    );
    this.eventStreams.set(res, ctx.peer.uid);
    const heartbeat = setInterval(() => {
      if (res.writableLength > EVENT_BUFFER_MAX) res.destroy();
      else res.write(`${JSON.stringify({ time: new Date().toISOString(), type: "heartbeat" })}\n`);
    }, this.config.limits.idle_timeout * 500);
    heartbeat.unref();
    res.once("close", () => {
      clearInterval(heartbeat);
      this.eventStreams.delete(res);
    });
    this.audit({ peer: ctx.peer, method: req.method, path: req.url, outcome: "ok", status: 200 });
  }

  private broadcast(e: Record<string, unknown>): void {
    const line = `${JSON.stringify(e)}\n`;
    for (const res of this.eventStreams.keys()) {
      // A subscriber that does not read is dropped rather than buffered without bound.
      if (res.writableLength > EVENT_BUFFER_MAX) res.destroy();
      else res.write(line);
    }
  }

  reply(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: RequestContext,
    status: number,
    body: unknown,
  ): void {
    sendJson(res, status, body);
    this.audit({
      peer: ctx.peer,
      method: req.method,
      path: req.url,
      outcome: "ok",
      status,
      duration_ms: Date.now() - ctx.started,
    });
  }

  /** The declared app of that name; a malformed name is a 400, an unknown one a 404. */
  app(name: string): AppConfig {
    let decoded: string;
    try {
      decoded = decodeURIComponent(name);
    } catch {
      throw new FerryError("BAD_REQUEST", "malformed application name in the path");
    }
    if (!APP_NAME.test(decoded)) {
      throw new FerryError(
        "BAD_REQUEST",
        `${JSON.stringify(decoded)} is not a valid application name`,
      );
    }
    const app = this.config.apps.get(decoded);
    if (app === undefined) {
      throw new FerryError(
        "APP_NOT_FOUND",
        `no application ${JSON.stringify(decoded)} is declared`,
      );
    }
    return app;
  }

  version(): VersionInfo {
    return {
      name: "ferryd",
      version: VERSION,
      api: API_VERSION,
      uid: this.identity.uid,
      gid: this.identity.gid,
      user: this.identity.user,
      capabilities: this.identity.capabilities,
      privileged: this.identity.privileged,
      drivers: [...drivers.values()].map((d) => d.type),
    };
  }

  async summary(app: AppConfig): Promise<AppSummary> {
    const driver = app.impl;
    const health = await this.healthChecks.get(
      app,
      () => driver.health(app.settings),
      (s) => ({ ok: false, message: `the health check did not answer within ${s}s` }),
      (err) => ({ ok: false, message: (err as Error).message }),
    );
    return { name: app.name, driver: app.driver, restore: app.restore, health };
  }

  doctor(app: AppConfig): Promise<DoctorReport> {
    return this.doctors.examine(app);
  }

  async detail(app: AppConfig): Promise<AppDetail> {
    const driver = app.impl;
    const description = await this.descriptions.get(
      app,
      () => driver.describe(app.settings),
      (s) => ({ error: `the description did not answer within ${s}s` }),
      (err) => ({ error: (err as Error).message }),
    );
    return { ...(await this.summary(app)), description };
  }
}
