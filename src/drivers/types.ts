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
import type { DoctorCheck, Manifest } from "../api/types.js";
import type { TarHeader } from "../core/archive/tar.js";
import type { ArchiveEntry } from "../core/archive/writer.js";
import type { Logger } from "../core/log.js";
import type { StateDir } from "../core/state-dir.js";
import type { Stat } from "../core/sys.js";
import type { Finding, InspectEnv } from "./inspect.js";

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
  /**
   * Keep the data the restore replaces instead of removing it (`ferry import --keep-old`);
   * only asked of a driver that says `keepsOld`.
   */
  keepOld?: boolean;
}

export interface RestoreResult {
  entries: number;
  bytes: number;
  /** With `keepOld`: where the replaced data was kept (absolute paths). */
  kept?: string[];
}

/**
 * A dry run of a restore (`ferry import --dry-run`): receives the archive like a restore
 * session, checks every entry by the restore's own rules, compares it with the live data,
 * and changes nothing anywhere — no staging, no journal, no hook.
 */
export interface DryRunSession {
  entry(h: TarHeader): Promise<void>;
  data(chunk: Buffer): Promise<void>;
  entryEnd(h: TarHeader): Promise<void>;
  /** The archive verified: what a restore would change. */
  finish(): Promise<DryRunResult>;
  /** Something failed; release what the session holds. */
  abort(reason: unknown): Promise<void>;
}

/** One difference between the archive and the live data. */
export interface DryRunChange {
  change: "added" | "removed" | "changed";
  /** The live path (absolute). */
  path: string;
  /** For "changed": what differs ("type", "content", "mode", "mtime", "owner", "target", "link"). */
  what?: string[];
}

export interface DryRunResult {
  added: number;
  removed: number;
  changed: number;
  unchanged: number;
  /** The first differences, in archive order, then the removed ones. */
  changes: DryRunChange[];
  /** More differences than `changes` lists. */
  truncated: boolean;
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
  /** When not ok: what to do about it (a mode, a missing tool, ReadWritePaths=). */
  fix?: string;
}

/** What `doctor` gets besides the application's config. */
export interface DoctorContext {
  app: string;
  /** Whether the application accepts restores (then restores are probed too). */
  restore: boolean;
  state: StateDir;
  signal: AbortSignal;
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
  /** The restore can keep the data it replaces (`RestoreContext.keepOld`). */
  readonly keepsOld?: boolean;
  /**
   * A dry run of `restore`, entry by entry against the live data (see `DryRunSession`).
   * Without it, a dry run verifies the archive and says the driver replaces the data whole.
   */
  dryRun?(config: C, ctx: RestoreContext): Promise<DryRunSession>;
  /**
   * Called once at ferryd's start, before it serves anything: finish or roll back restores
   * that a crash interrupted (journals in `state`), after checking each journal against the
   * live config (`apps`). Must be idempotent, and must not throw for one app's leftovers:
   * it sets them aside with a log line and lets ferryd serve the others.
   */
  recover?(state: StateDir, apps: ReadonlyMap<string, DeclaredApp>, log: Logger): void;
  /**
   * `ferryd --check-config`: what on this machine would make the application fail even
   * though its config is well-formed — declared paths missing or of the wrong type or
   * owner, helper programs not installed (src/drivers/inspect.ts has the shared checks;
   * the hooks are checked by the caller). Must not change anything or run anything.
   */
  inspect?(config: C, env: InspectEnv): Finding[];
  /**
   * `ferry doctor` (`POST /v1/apps/{app}/doctor`), beyond `health`: try what a backup and
   * a restore will need, exactly where and as whom they will do it — a restore's staging
   * is created and removed beside the live data with the restore's own rules (held
   * descriptors, no symlink followed, root-owned) — and name the fix for each failure.
   * Calls are serialised by ferryd; it may create and must remove only its own probe
   * names, and must leave the application's data untouched.
   */
  doctor?(config: C, ctx: DoctorContext): Promise<DoctorCheck[]>;
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
