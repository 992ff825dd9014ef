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
 */
import {
  createServer as createHttpServer,
  type Server as HttpServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import type { AppDetail, AppSummary, VersionInfo } from "../api/types.js";
import { API_VERSION } from "../api/types.js";
import { FerryError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { StateDir } from "../core/state-dir.js";
import type { PeerCred } from "../core/sys.js";
import { VERSION } from "../core/version.js";
import { drivers } from "../drivers/all.js";
import type { Health } from "../drivers/types.js";
import { type AuditRecord, audit } from "./audit.js";
import { streamBackup } from "./backup.js";
import { APP_NAME, type AppConfig, type Config } from "./config.js";
import { BoundedChecks } from "./health.js";
import { JobRegistry } from "./jobs.js";
import { checkPeer } from "./peer.js";
import { sendErrorDuringUpload, sendJson } from "./respond.js";
import { handleRestore } from "./restore.js";

export interface Identity {
  uid: number;
  gid: number;
  user: string;
  capabilities: string[];
  privileged: boolean;
}

export interface RequestContext {
  peer: PeerCred;
  started: number;
}

const EVENT_BUFFER_MAX = 1024 * 1024;
/** Health results are reused for 5 s; a caller waits at most 15 s for one. */
const HEALTH_BOUNDS = { ttlMs: 5_000, timeoutMs: 15_000 };

export class FerryDaemon {
  readonly jobs: JobRegistry;
  private readonly peers = new WeakMap<Socket, PeerCred>();
  private readonly http: HttpServer;
  /** A second HTTP server without keep-alive timeout, for `ferryd run`'s socket pair. */
  private readonly pairHttp: HttpServer;
  private readonly net: Server;
  private allowed: Set<number>;
  private stopping = false;
  private readonly eventStreams = new Set<ServerResponse>();
  /** Accepted sockets (the HTTP servers never listen, so Node does not track them). */
  private readonly sockets = new Set<Socket>();
  /** Per socket: the deadline for its next complete request head. */
  private readonly headTimers = new WeakMap<Socket, NodeJS.Timeout>();
  /** Health checks and descriptions: one in flight per app, cached briefly, bounded. */
  private readonly healthChecks = new BoundedChecks<Health>(HEALTH_BOUNDS);
  private readonly descriptions = new BoundedChecks<Record<string, unknown>>(HEALTH_BOUNDS);

  constructor(
    public config: Config,
    readonly identity: Identity,
    readonly log: Logger,
    /** The held, checked state directory (src/core/state-dir.ts). */
    readonly state: StateDir,
  ) {
    const l = config.limits;
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
      server.on("clientError", (err, socket) => {
        const code = (err as NodeJS.ErrnoException).code;
        const status =
          code === "HPE_HEADER_OVERFLOW" ? 431 : code === "ERR_HTTP_REQUEST_TIMEOUT" ? 408 : 400;
        if (socket.writable)
          socket.end(`HTTP/1.1 ${status} Bad Request\r\nConnection: close\r\n\r\n`);
        else socket.destroy();
        log.debug({ err: err.message, code }, "client error");
      });
    }
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
    for (const res of this.eventStreams) res.end();
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
    result: { bytes: number; entries?: number; sha256?: string },
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
    const parts = url.pathname.split("/").filter((p) => p !== "");
    const method = req.method ?? "GET";
    if (parts[0] !== API_VERSION) throw new FerryError("NOT_FOUND", `no such path ${url.pathname}`);
    const expect = (...m: string[]) => {
      if (!m.includes(method))
        throw new FerryError("METHOD_NOT_ALLOWED", `${url.pathname} takes ${m.join(" or ")}`);
    };
    const isArchive =
      parts.length === 4 &&
      parts[1] === "apps" &&
      (parts[3] === "backup" || parts[3] === "restore");
    if (!isArchive && !(parts.length === 2 && parts[1] === "events")) this.guardSmall(req, res);

    if (parts.length === 2 && parts[1] === "version") {
      expect("GET");
      return this.reply(req, res, ctx, 200, this.version());
    }
    if (parts[1] === "apps") {
      if (parts.length === 2) {
        expect("GET");
        const apps = await Promise.all([...this.config.apps.values()].map((a) => this.summary(a)));
        return this.reply(req, res, ctx, 200, { apps });
      }
      const app = this.app(parts[2] as string);
      if (parts.length === 3) {
        expect("GET");
        return this.reply(req, res, ctx, 200, await this.detail(app));
      }
      if (parts.length === 4 && (parts[3] === "backup" || parts[3] === "restore")) {
        expect("POST");
        if (this.stopping) throw new FerryError("SHUTTING_DOWN", "ferryd is shutting down");
        return parts[3] === "backup"
          ? streamBackup(this, app, req, res, ctx)
          : handleRestore(this, app, req, res, ctx);
      }
    }
    if (parts[1] === "jobs") {
      if (parts.length === 2) {
        expect("GET");
        return this.reply(req, res, ctx, 200, { jobs: this.jobs.list() });
      }
      if (parts.length === 3) {
        const id = parts[2] as string;
        expect("GET", "DELETE");
        const job = this.jobs.get(id);
        if (job === undefined)
          throw new FerryError("JOB_NOT_FOUND", `no job ${JSON.stringify(id)}`);
        if (method === "DELETE") {
          const cancelled = this.jobs.cancel(id, `cancelled by uid ${ctx.peer.uid}`);
          return this.reply(req, res, ctx, cancelled ? 202 : 200, {
            ...job,
            cancelling: cancelled,
          });
        }
        return this.reply(req, res, ctx, 200, job);
      }
    }
    if (parts.length === 2 && parts[1] === "events") {
      expect("GET");
      return this.streamEvents(req, res, ctx);
    }
    throw new FerryError("NOT_FOUND", `no such path ${url.pathname}`);
  }

  /** GET /v1/events: newline-delimited JSON until the client goes away. */
  private streamEvents(req: IncomingMessage, res: ServerResponse, ctx: RequestContext): void {
    res.writeHead(200, { "Content-Type": "application/x-ndjson", "Cache-Control": "no-store" });
    res.write(
      `${JSON.stringify({ time: new Date().toISOString(), type: "hello", jobs: this.jobs.list() })}\n`,
    );
    this.eventStreams.add(res);
    res.once("close", () => this.eventStreams.delete(res));
    this.audit({ peer: ctx.peer, method: req.method, path: req.url, outcome: "ok", status: 200 });
  }

  private broadcast(e: Record<string, unknown>): void {
    const line = `${JSON.stringify(e)}\n`;
    for (const res of this.eventStreams) {
      // A subscriber that does not read is dropped rather than buffered without bound.
      if (res.writableLength > EVENT_BUFFER_MAX) res.destroy();
      else res.write(line);
    }
  }

  private reply(
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

  private async summary(app: AppConfig): Promise<AppSummary> {
    const driver = drivers.get(app.driver);
    const health =
      driver === undefined
        ? { ok: false, message: "unknown driver" }
        : await this.healthChecks.get(
            app,
            () => driver.health(app.settings),
            (s) => ({ ok: false, message: `the health check did not answer within ${s}s` }),
            (err) => ({ ok: false, message: (err as Error).message }),
          );
    return { name: app.name, driver: app.driver, restore: app.restore, health };
  }

  private async detail(app: AppConfig): Promise<AppDetail> {
    const driver = drivers.get(app.driver);
    const description =
      driver === undefined
        ? {}
        : await this.descriptions.get(
            app,
            () => driver.describe(app.settings),
            (s) => ({ error: `the description did not answer within ${s}s` }),
            (err) => ({ error: (err as Error).message }),
          );
    return { ...(await this.summary(app)), description };
  }
}
