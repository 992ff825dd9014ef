/**
 * ferryd's API server: HTTP/1.1 on a Unix socket, behind the peer check.
 *
 * Connections are accepted by a net.Server with `pauseOnConnect`, so not a byte of a
 * request is read before SO_PEERCRED has been checked; only accepted connections are
 * handed to the HTTP server. A refused connection is destroyed and audited.
 */
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import { createServer as createNetServer, type Server, type Socket } from "node:net";
import type { AppDetail, AppSummary, VersionInfo } from "../api/types.js";
import { API_VERSION } from "../api/types.js";
import { FerryError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { PeerCred } from "../core/sys.js";
import { VERSION } from "../core/version.js";
import { drivers } from "../drivers/all.js";
import { audit } from "./audit.js";
import { streamBackup } from "./backup.js";
import { APP_NAME, type AppConfig, type Config } from "./config.js";
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

export class FerryDaemon {
  readonly busy = new Set<string>();
  private readonly peers = new WeakMap<Socket, PeerCred>();
  private readonly http;
  private readonly net: Server;
  private readonly allowed: Set<number>;

  constructor(
    readonly config: Config,
    readonly identity: Identity,
    readonly log: Logger,
  ) {
    this.allowed = new Set([identity.uid, ...config.clients]);
    this.http = createHttpServer(
      {
        maxHeaderSize: 16 * 1024,
        requestTimeout: 0,
        headersTimeout: 30_000,
        keepAliveTimeout: 5_000,
      },
      (req, res) => this.handle(req, res),
    );
    this.http.on("clientError", (err, socket) => {
      if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
      else socket.destroy();
      log.debug({ err: err.message }, "client error");
    });
    this.net = createNetServer({ pauseOnConnect: true }, (socket) => this.accept(socket));
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

  /** Serves one already-connected socket (e.g. a socket pair) through the same peer check. */
  serveSocket(socket: Socket): void {
    this.accept(socket);
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.net.close(() => resolve());
      this.http.closeAllConnections();
    });
  }

  private accept(socket: Socket): void {
    const decision = checkPeer(socket, this.allowed);
    if (!decision.ok) {
      socket.destroy();
      audit(this.log, { peer: decision.cred, outcome: "refused", reason: decision.reason });
      return;
    }
    this.peers.set(socket, decision.cred);
    this.http.emit("connection", socket);
    socket.resume();
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const peer = this.peers.get(req.socket as Socket);
    if (peer === undefined) {
      // Unreachable by construction; kept so that a future code path cannot serve unchecked.
      req.socket.destroy();
      return;
    }
    const ctx: RequestContext = { peer, started: Date.now() };
    this.route(req, res, ctx).catch((err) => {
      const fe = sendErrorDuringUpload(req, res, err);
      if (fe.code === "INTERNAL") this.log.error({ err }, "request failed");
      audit(this.log, {
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
    const parts = url.pathname.split("/").filter((p) => p !== "");
    const method = req.method ?? "GET";
    if (parts[0] !== API_VERSION) throw new FerryError("NOT_FOUND", `no such path ${url.pathname}`);
    const expect = (m: string) => {
      if (method !== m) throw new FerryError("METHOD_NOT_ALLOWED", `${url.pathname} takes ${m}`);
    };

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
      if (parts.length === 4 && parts[3] === "backup") {
        expect("POST");
        return streamBackup(this, app, req, res, ctx);
      }
      if (parts.length === 4 && parts[3] === "restore") {
        expect("POST");
        return handleRestore(this, app, req, res, ctx);
      }
    }
    throw new FerryError("NOT_FOUND", `no such path ${url.pathname}`);
  }

  private reply(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: RequestContext,
    status: number,
    body: unknown,
  ): void {
    sendJson(res, status, body);
    audit(this.log, {
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
    let health = { ok: false, message: "unknown driver" };
    if (driver !== undefined) {
      try {
        health = await driver.health(app.settings);
      } catch (err) {
        health = { ok: false, message: (err as Error).message };
      }
    }
    return { name: app.name, driver: app.driver, restore: app.restore, health };
  }

  private async detail(app: AppConfig): Promise<AppDetail> {
    const driver = drivers.get(app.driver);
    const description = driver === undefined ? {} : await driver.describe(app.settings);
    return { ...(await this.summary(app)), description };
  }
}
