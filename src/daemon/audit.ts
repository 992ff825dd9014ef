/**
 * The audit trail: one JSON line per request (and per refused connection), with who asked
 * (kernel-reported peer uid/gid/pid), what for, the outcome, bytes, duration and the
 * archive's payload SHA-256. Written through the service log (stderr → journald).
 */
import type { Logger } from "../core/log.js";
import type { PeerCred } from "../core/sys.js";

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
