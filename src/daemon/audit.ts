/**
 * The audit trail: one JSON line per request (and per refused connection), with who asked
 * (kernel-reported peer uid/gid/pid), what for, the outcome, bytes, duration and the
 * archive's payload SHA-256. Written through the service log (stderr → journald), and
 * published to `GET /v1/events` subscribers as an `audit` event.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { FerryError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { PeerCred } from "../core/sys.js";
import type { JobResult, RequestContext } from "./job-request.js";
import type { JobRegistry } from "./jobs.js";
import { sendJson } from "./respond.js";

export interface AuditRecord {
  peer?: PeerCred;
  method?: string;
  path?: string;
  app?: string;
  job?: string;
  outcome: "ok" | "error" | "refused" | "aborted";
  status?: number;
  code?: string;
  bytes?: number;
  entries?: number;
  duration_ms?: number;
  sha256?: string;
  reason?: string;
}

/**
 * Served requests are info; refused connections, cancelled jobs and requests that failed
 * for the client's reasons (4xx) are warnings; failures of ferryd or an application (5xx:
 * a backup or restore that failed) are errors, so `journalctl -p err` shows them.
 */
export function audit(log: Logger, rec: AuditRecord): void {
  const { peer, ...rest } = rec;
  const level =
    rec.outcome === "ok"
      ? "info"
      : rec.outcome === "error" && (rec.status ?? 500) >= 500
        ? "error"
        : "warn";
  log[level](
    { audit: true, peer_uid: peer?.uid, peer_gid: peer?.gid, peer_pid: peer?.pid, ...rest },
    "audit",
  );
}

/** Where ferryd's audit lines go: the log, and the event stream. */
export class Audit {
  constructor(
    private readonly log: Logger,
    private readonly jobs: JobRegistry,
  ) {}

  /** Logs an audit line and publishes it to event subscribers. */
  record(rec: AuditRecord): void {
    audit(this.log, rec);
    const { peer, ...rest } = rec;
    this.jobs.publish({ type: "audit", peer_uid: peer?.uid, peer_pid: peer?.pid, ...rest });
  }

  /** The audit line that ends a backup or restore job. */
  job(
    req: IncomingMessage,
    ctx: RequestContext,
    app: string,
    job: string,
    failure: FerryError | undefined,
    result: JobResult,
  ): void {
    this.record({
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

  /** Answers an ordinary request with JSON, and audits it. */
  reply(
    req: IncomingMessage,
    res: ServerResponse,
    ctx: RequestContext,
    status: number,
    body: unknown,
  ): void {
    sendJson(res, status, body);
    this.record({
      peer: ctx.peer,
      method: req.method,
      path: req.url,
      outcome: "ok",
      status,
      duration_ms: Date.now() - ctx.started,
    });
  }
}
