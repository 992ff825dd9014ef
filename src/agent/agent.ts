/**
 * The agent server: HTTP/1.1 on a Unix socket, one operation at a time, as specified in
 * docs/agent-protocol.md. Its options and public types are options.ts; what info, backup
 * and restore do is operations.ts. This module is the server's state: one operation at a
 * time, a held prepare with its lease, closing with a grace period.
 */
import { chmodSync, lstatSync, unlinkSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { getPeerCred } from "../core/sys.js";
import { AgentError, toAgentError } from "./errors.js";
import { operationOf, readJsonBody, send, sendError } from "./http.js";
import { answerInfo, type OperationRequest, serveBackup, serveRestore } from "./operations.js";
import type { Agent, AgentOptions, FinishContext, Operation } from "./options.js";
import {
  DEFAULT_PAYLOAD_LIMITS,
  type PayloadLimits,
  PROTOCOL_HEADER,
  PROTOCOL_VERSION,
} from "./protocol.js";

/** Creates an agent; call `listen()` to serve. */
export function createAgent(options: AgentOptions): Agent {
  return new AgentServer(options);
}

interface Held {
  operation: Operation;
  timer: NodeJS.Timeout;
}

class AgentServer implements Agent {
  readonly socket: string;
  private server: Server | undefined;
  private busy = false;
  private held: Held | undefined;
  private finishing: Promise<void> = Promise.resolve();
  private readonly closing = new AbortController();
  private readonly sockets = new Set<Socket>();
  private active: Promise<void> | undefined;
  private readonly limits: PayloadLimits;

  constructor(private readonly o: AgentOptions) {
    if (typeof o.socket !== "string" || !o.socket.startsWith("/")) {
      throw new TypeError("createAgent: socket must be an absolute path");
    }
    if (typeof o.info?.name !== "string" || o.info.name === "") {
      throw new TypeError("createAgent: info.name is required");
    }
    this.socket = o.socket;
    this.limits = { ...DEFAULT_PAYLOAD_LIMITS, ...o.limits };
  }

  async listen(): Promise<void> {
    // The SDK runs inside the application, as the application's own user and without any
    // capability: its socket path is the application's to manage, and the path-based
    // calls here (chmod, lstat, unlink of its own socket) act with the application's rights
    // only. ferryd never trusts this socket's path: it connects through a held descriptor
    // and checks the peer's uid (src/drivers/agent/client.ts).
    if (this.server !== undefined) throw new Error("the agent is already listening");
    this.removeStale();
    const server = createServer({ requestTimeout: 0, headersTimeout: 30_000 }, (req, res) => {
      this.handle(req, res);
    });
    server.keepAliveTimeout = 5_000;
    server.on("connection", (s: Socket) => {
      if (this.o.allowUids !== undefined && !this.peerAllowed(s)) {
        s.destroy();
        return;
      }
      this.sockets.add(s);
      s.on("close", () => this.sockets.delete(s));
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.socket, () => {
        server.off("error", reject);
        resolve();
      });
    });
    chmodSync(this.socket, this.o.socketMode ?? 0o600);
    this.server = server;
  }

  private peerAllowed(s: Socket): boolean {
    const fd = (s as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (typeof fd !== "number" || fd < 0) return false;
    try {
      return (this.o.allowUids as readonly number[]).includes(getPeerCred(fd).uid);
    } catch {
      return false;
    }
  }

  /** A socket left by an earlier run of the same user is replaced; anything else is not. */
  private removeStale(): void {
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(this.socket);
    } catch {
      return;
    }
    if (!st.isSocket() || st.uid !== process.getuid?.()) {
      throw new Error(
        `${this.socket} exists and is not this user's old socket; refusing to replace it`,
      );
    }
    unlinkSync(this.socket);
  }

  async close(graceMs = 10_000): Promise<void> {
    const server = this.server;
    if (server === undefined) return;
    this.server = undefined;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    if (this.active !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.active.catch(() => {}),
        new Promise<void>((r) => {
          timer = setTimeout(r, graceMs);
        }),
      ]);
      clearTimeout(timer);
    }
    this.closing.abort(new AgentError("INTERNAL", "the agent is closing"));
    for (const s of this.sockets) s.destroy();
    await closed;
    await this.release("cancelled");
    await this.finishing;
    try {
      const st = lstatSync(this.socket);
      if (st.isSocket()) unlinkSync(this.socket);
    } catch {
      // already gone
    }
  }

  private report(err: unknown): void {
    try {
      this.o.onError?.(err);
    } catch {
      // a failing reporter must not take the agent down
    }
  }

  /** Ends a held prepare: clears its lease and calls `finish` once. */
  private release(outcome: FinishContext["outcome"]): Promise<void> {
    const h = this.held;
    if (h === undefined) return this.finishing;
    this.held = undefined;
    clearTimeout(h.timer);
    const run = async () => {
      try {
        await this.o.finish?.({ operation: h.operation, outcome });
      } catch (err) {
        this.report(err);
        throw err;
      }
    };
    const p = this.finishing.then(run, run);
    this.finishing = p.catch(() => {});
    return p;
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const work = this.route(req, res).catch((err) => {
      const e = toAgentError(err);
      if (e.code === "INTERNAL") this.report(err);
      if (!res.headersSent) sendError(res, e);
      else res.destroy();
      req.resume();
    });
    void work;
  }

  private async route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const proto = req.headers[PROTOCOL_HEADER];
    if (proto !== undefined && proto !== String(PROTOCOL_VERSION)) {
      throw new AgentError(
        "UNSUPPORTED_PROTOCOL",
        `this agent speaks protocol ${PROTOCOL_VERSION}, not ${String(proto).slice(0, 20)}`,
      );
    }
    const url = req.url ?? "";
    const method = req.method ?? "";
    const want = (m: string) => {
      if (method !== m) throw new AgentError("METHOD_NOT_ALLOWED", `${url} takes ${m}`);
    };
    switch (url) {
      case "/v1/info":
        want("GET");
        return answerInfo(this.o, res, (err) => this.report(err));
      case "/v1/prepare":
        want("POST");
        return this.prepare(req, res);
      case "/v1/finish":
        want("POST");
        return this.finish(req, res);
      case "/v1/backup":
        want("POST");
        return this.exclusive(() => serveBackup(this.operation(req, res)));
      case "/v1/restore":
        want("POST");
        return this.exclusive(() => serveRestore(this.operation(req, res)));
      default:
        throw new AgentError("NOT_FOUND", `no such path ${url.slice(0, 100)}`);
    }
  }

  private async exclusive(fn: () => Promise<void>): Promise<void> {
    if (this.busy) throw new AgentError("BUSY", "a backup or restore is already running");
    this.busy = true;
    const p = fn();
    this.active = p;
    try {
      await p;
    } finally {
      this.busy = false;
      this.active = undefined;
    }
  }

  /** What serveBackup and serveRestore (operations.ts) are given. */
  private operation(req: IncomingMessage, res: ServerResponse): OperationRequest {
    return {
      o: this.o,
      limits: this.limits,
      req,
      res,
      signalOf: () => this.requestSignal(req, res),
      report: (err) => this.report(err),
    };
  }

  /** An AbortSignal that fires when the client goes away before the response ended. */
  private requestSignal(req: IncomingMessage, res: ServerResponse): AbortSignal {
    const ac = new AbortController();
    const onClose = () => {
      if (!res.writableFinished) ac.abort(new AgentError("INTERNAL", "ferryd disconnected"));
    };
    res.on("close", onClose);
    req.on("aborted", onClose);
    return AbortSignal.any([ac.signal, this.closing.signal]);
  }

  private async prepare(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJsonBody(req);
    const operation = operationOf(body);
    const max = this.o.maxLeaseMs ?? 6 * 3600 * 1000;
    const lease = body.lease_ms;
    if (!Number.isSafeInteger(lease) || (lease as number) < 1) {
      throw new AgentError("BAD_REQUEST", "lease_ms must be a positive integer");
    }
    if (this.held !== undefined || this.busy) {
      throw new AgentError("BUSY", "the application is already prepared for another operation");
    }
    const leaseMs = Math.min(lease as number, max);
    this.busy = true; // no second prepare while this one runs
    const signal = this.requestSignal(req, res);
    try {
      await this.o.prepare?.({ operation, leaseMs, signal });
    } catch (err) {
      throw err instanceof AgentError
        ? err
        : new AgentError("BACKUP_FAILED", `prepare failed: ${(err as Error).message}`);
    } finally {
      this.busy = false;
    }
    const timer = setTimeout(() => {
      this.release("expired").catch(() => {});
    }, leaseMs);
    timer.unref();
    this.held = { operation, timer };
    if (signal.aborted) {
      // ferryd is gone: it will not know prepare succeeded; resume now.
      await this.release("cancelled").catch(() => {});
      return;
    }
    send(res, 200, { ok: true, lease_ms: leaseMs });
  }

  private async finish(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const body = await readJsonBody(req);
    const operation = operationOf(body);
    const outcome = body.outcome;
    if (outcome !== "ok" && outcome !== "error" && outcome !== "cancelled") {
      throw new AgentError("BAD_REQUEST", 'outcome must be "ok", "error" or "cancelled"');
    }
    if (this.held === undefined || this.held.operation !== operation) {
      send(res, 200, { ok: true, held: false });
      return;
    }
    await this.release(outcome);
    send(res, 200, { ok: true, held: true });
  }
}
