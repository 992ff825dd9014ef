/**
 * The public shape of the `ferry/agent` SDK (docs/agent-protocol.md): what an application
 * passes to `createAgent`, what its handlers are given, and the agent it gets back. The
 * server behind it is agent.ts.
 */
import type { BackupWriter } from "./backup-writer.js";
import type { PayloadLimits } from "./protocol.js";
import type { RestorePayload } from "./restore-payload.js";

export type Operation = "backup" | "restore";

/** What `GET /v1/info` says about the application. */
export interface AgentInfo {
  /** The application's name (stable: ferryd checks it on restore). */
  name: string;
  /** The application's version. */
  version: string;
  /** What its payload holds, for people ("notes as JSON files"). */
  holds?: string;
  /** An estimate of the payload's size in bytes. */
  estimateBytes?: () => number | Promise<number>;
}

/** Passed to `backup` and `restore`. */
export interface OperationContext {
  /** Aborts when ferryd disconnects or the agent closes. */
  signal: AbortSignal;
}

/** Passed to `prepare`. */
export interface PrepareContext extends OperationContext {
  operation: Operation;
  /** If `finish` has not come by then, the SDK calls it itself with outcome `expired`. */
  leaseMs: number;
}

/** Passed to `finish`. */
export interface FinishContext {
  operation: Operation;
  outcome: "ok" | "error" | "cancelled" | "expired";
}

export interface AgentOptions {
  /** Path of the Unix socket to serve on. Its directory should be private to the app. */
  socket: string;
  info: AgentInfo;
  /** Writes the payload. It runs between `prepare` and `finish` when those exist. */
  backup(out: BackupWriter, ctx: OperationContext): Promise<void>;
  /**
   * Applies a complete, checked payload. Without it the agent refuses restores. Make it
   * atomic: build the new state beside the live one, then swap.
   */
  restore?(payload: RestorePayload, ctx: OperationContext): Promise<void>;
  /** Quiesce: after it resolves, the data must stay consistent until `finish`. */
  prepare?(ctx: PrepareContext): Promise<void>;
  /** Resume. Called exactly once for every successful `prepare`. */
  finish?(ctx: FinishContext): Promise<void>;
  /** Socket file mode (default 0o600; ferryd connects with CAP_DAC_OVERRIDE). */
  socketMode?: number;
  /** Only these uids may connect (SO_PEERCRED); default: anyone the socket's mode lets in. */
  allowUids?: readonly number[];
  /** Where restore payloads are staged (default the system temp dir). */
  stagingDir?: string;
  /** Bounds of a restore payload. */
  limits?: Partial<PayloadLimits>;
  /** Longest silence inside a request body (default 60 s). */
  idleTimeoutMs?: number;
  /** Longest lease a prepare may ask for (default 6 h). */
  maxLeaseMs?: number;
  /** Called with errors that are not sent to ferryd (handler failures, finish failures). */
  onError?(err: unknown): void;
}

export interface Agent {
  /** The socket path. */
  readonly socket: string;
  /** Starts serving; replaces a stale socket of the same owner, refuses anything else. */
  listen(): Promise<void>;
  /**
   * Stops accepting, lets the running operation end for up to `graceMs` (default 10 s),
   * then aborts it; a held prepare is finished with outcome `cancelled`.
   */
  close(graceMs?: number): Promise<void>;
}
