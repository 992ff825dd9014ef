/**
 * The driver contract. A driver knows how to ask one kind of application for a consistent
 * copy of its data (backup) and how to give it back (restore).
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
 * - `restore` (optional: a driver without it cannot restore) is called once per restore
 *   request, after the manifest was checked to name this app and driver. It returns a
 *   session that receives the payload entries as the archive streams in. The session must
 *   not touch the live data until `commit`, which ferryd calls only after the archive's
 *   end record has verified (entry count, length, SHA-256). `commit` makes the restored
 *   data live atomically (or as close as the application allows, documented per driver).
 *   `abort` is called instead of `commit` on any failure (bad archive, client gone,
 *   cancel, a throw from any session method) and must leave the live data exactly as it
 *   was and remove all staging. Exactly one of commit/abort is called; neither is retried.
 */
import type { z } from "zod";
import type { Manifest } from "../api/types.js";
import type { TarHeader } from "../core/archive/tar.js";
import type { ArchiveEntry } from "../core/archive/writer.js";
import type { Logger } from "../core/log.js";
import type { StateDir } from "../core/state-dir.js";
import type { Stat } from "../core/sys.js";

export interface DriverContext {
  app: string;
  signal: AbortSignal;
  /** Non-fatal problems (skipped sockets, files that changed size); end up in the end record. */
  warnings: string[];
  /**
   * ferryd's root-owned state directory, held open (src/core/state-dir.ts): restore
   * journals and spools live here, never in a directory the backup user can write.
   */
  state: StateDir;
  /**
   * For a driver with `openSince`: ferryd's index of an earlier backup to compare with,
   * and of this one being built (src/drivers/files/since-index.ts).
   */
  since?: SinceIndex;
}

/**
 * ferryd's memory of the regular files a backup sent (docs/api.yaml, `since`). `lookup`
 * answers for the earlier backup named by the request's token, `record` builds the index
 * of this one, which `complete` keeps once the archive is complete.
 */
export interface SinceIndex {
  /** The token this backup is a delta against, or undefined for a full backup. */
  readonly since: string | undefined;
  /**
   * The file's position in the `since` archive when its path, size, mtime, ctime, inode
   * and device all equal what was indexed there; undefined otherwise.
   */
  lookup(path: string, st: Stat): number | undefined;
  /** The regular file `path` (with the stat its header was made from) is entry `position`. */
  record(path: string, st: Stat, position: number): void;
  /** The archive is complete: keep this backup's index; returns its token (undefined if none was kept). */
  complete(): string | undefined;
  /** Releases everything; discards this backup's index unless `complete` kept it. */
  close(): void;
}

export interface RestoreContext extends DriverContext {
  /** The archive's manifest (already checked: format, app, driver). */
  manifest: Manifest;
}

export interface RestoreResult {
  entries: number;
  bytes: number;
}

export interface RestoreSession {
  /** Start of a payload entry (paths are archive paths, e.g. "data/0/a.txt"). */
  entry(h: TarHeader): void | Promise<void>;
  /**
   * A chunk of the current entry's body (may be called many times, never for size 0).
   * Synchronous sessions return nothing, which spares an await per chunk.
   */
  data(chunk: Buffer): void | Promise<void>;
  /** The current entry is complete. */
  entryEnd(h: TarHeader): void | Promise<void>;
  /** The archive verified: make the restored data live. */
  commit(): Promise<RestoreResult>;
  /** Something failed: discard everything staged; the live data must be as it was. */
  abort(reason: unknown): Promise<void>;
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
  /**
   * Incremental backups (optional): the index session of one backup of `app`, comparing
   * with the earlier backup `token` names when ferryd still has a valid index of it.
   * Without it, a `since` token is ignored and every backup is full.
   */
  openSince?(
    config: C,
    ctx: { app: string; state: StateDir; log: Logger; warnings: string[] },
    token: string | undefined,
  ): SinceIndex;
  restore?(config: C, ctx: RestoreContext): Promise<RestoreSession>;
  /**
   * Called once at ferryd's start, before it serves anything: finish or roll back restores
   * that a crash interrupted (journals in `state`), after checking each journal against the
   * live config (`apps`). Must be idempotent, and must not throw for one app's leftovers:
   * it sets them aside with a log line and lets ferryd serve the others.
   */
  recover?(state: StateDir, apps: ReadonlyMap<string, DeclaredApp>, log: Logger): void;
}

/** What recovery is told of each declared application. */
export interface DeclaredApp {
  driver: string;
  settings: unknown;
}

/** Keys every application table may have, whatever its driver. */
export interface CommonAppConfig {
  driver: string;
  restore: boolean;
}
