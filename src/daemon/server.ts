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
 * Every connection has a deadline in every state: deadlines.ts. The handlers and what they
 * share are elsewhere: the route table (routes.ts), backup and restore (job-request.ts),
 * `GET /v1/events` (events.ts), application status (apps.ts), the audit trail (audit.ts).
 */
import {
  createServer as createHttpServer,
  type Server as HttpServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import { FerryError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { StateDir } from "../core/state-dir.js";
import type { PeerCred } from "../core/sys.js";
import { AppStatus, type Identity } from "./apps.js";
import { Audit } from "./audit.js";
import type { Config } from "./config.js";
import { ConnectionDeadlines } from "./deadlines.js";
import { Doctor } from "./doctor.js";
import { EventStreams } from "./events.js";
import type { RequestContext } from "./job-request.js";
import { JobRegistry } from "./jobs.js";
import { checkPeer } from "./peer.js";
import { sendErrorDuringUpload } from "./respond.js";
import { matchRoute, type RouteHost } from "./routes.js";

/**
 * ferryd: the transport (listening, peer check, connection deadlines, dispatch through the
 * route table) and the parts route handlers reach through `RouteHost`: the job registry,
 * the audit trail (audit.ts), event streams (events.ts) and application status (apps.ts).
 */
export class FerryDaemon implements RouteHost {
  readonly jobs: JobRegistry;
  readonly audit: Audit;
  readonly events: EventStreams;
  readonly apps = new AppStatus();
  readonly doctor: Doctor;
  private readonly peers = new WeakMap<Socket, PeerCred>();
  private readonly http: HttpServer;
  /** A second HTTP server without keep-alive timeout, for `ferryd run`'s socket pair. */
  private readonly pairHttp: HttpServer;
  private readonly net: Server;
  private allowed: Set<number>;
  stopping = false;
  private readonly deadlines: ConnectionDeadlines;

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
    this.audit = new Audit(log, this.jobs);
    this.events = new EventStreams(this.jobs, this.audit, () => this.config.limits);
    this.deadlines = new ConnectionDeadlines(log, () => this.config.limits);
    this.doctor = new Doctor(state);
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
      server.on("clientError", (err, socket) => this.deadlines.clientError(err, socket));
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
    this.deadlines.stop();
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
    this.events.endAll();
    this.deadlines.destroyAll();
  }

  private accept(socket: Socket, server: HttpServer): void {
    const decision = checkPeer(socket, this.allowed);
    if (!decision.ok) {
      socket.destroy();
      this.audit.record({ peer: decision.cred, outcome: "refused", reason: decision.reason });
      return;
    }
    this.peers.set(socket, decision.cred);
    this.deadlines.track(socket, server === this.http);
    server.emit("connection", socket);
    socket.resume();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const peer = this.peers.get(req.socket as Socket);
    if (peer === undefined) {
      // Unreachable by construction; kept so that a future code path cannot serve unchecked.
      req.socket.destroy();
      return;
    }
    this.deadlines.requestStarted(req.socket as Socket, res);
    const ctx: RequestContext = { peer, started: Date.now() };
    this.route(req, res, ctx).catch((err) => {
      const fe = sendErrorDuringUpload(req, res, err);
      if (fe.code === "INTERNAL") this.log.error({ err }, "request failed");
      this.audit.record({
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
    if (route.body === "small") this.deadlines.guardSmall(req, res);
    return handler(this, req, res, ctx, params);
  }
}
