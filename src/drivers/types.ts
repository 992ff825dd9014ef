/**
 * The driver contract. A driver knows how to ask one kind of application for a consistent
 * copy of its data (backup) and how to give it back (restore, in a later step).
 *
 * - `schema` validates the driver's own keys of an `[apps.NAME]` table; it is strict
 *   (unknown keys are errors) and runs once at start-up.
 * - `describe` and `health` are called for API listings; they must be cheap, must not
 *   modify anything and may be called any number of times, concurrently.
 * - `backup` is called once per request. It yields the payload entries in order, each path
 *   under `data/`; it must stop promptly when `ctx.signal` aborts and must release every
 *   resource (descriptors, child processes) when its iterator is returned early. It is
 *   never retried by ferryd: a failed backup is reported and the archive is left without
 *   its end record.
 */
import type { z } from "zod";
import type { ArchiveEntry } from "../core/archive/writer.js";

export interface DriverContext {
  app: string;
  signal: AbortSignal;
  /** Non-fatal problems (skipped sockets, files that changed size); end up in the end record. */
  warnings: string[];
}

export interface Health {
  ok: boolean;
  message: string;
}

export interface Driver<C = unknown> {
  /** Name used in `driver = "…"`. */
  readonly name: string;
  /** Versioned type name, written into every manifest (e.g. "files.v1"). */
  readonly type: string;
  readonly version: number;
  readonly schema: z.ZodType<C>;
  describe(config: C): Promise<Record<string, unknown>>;
  health(config: C): Promise<Health>;
  /** Driver-specific manifest fields. */
  manifest(config: C): Record<string, unknown>;
  backup(config: C, ctx: DriverContext): AsyncIterable<ArchiveEntry>;
}

/** Keys every application table may have, whatever its driver. */
export interface CommonAppConfig {
  driver: string;
  restore: boolean;
}
