/**
 * Wire types of API v1 and of the archive format (docs/design.md). Imports nothing of Ferry.
 */

export const API_VERSION = "v1";
export const ARCHIVE_FORMAT = 1;
export const MANIFEST_PATH = ".ferry/manifest.json";
export const END_PATH = ".ferry/end.json";

/**
 * A token naming ferryd's index of an earlier backup (the end record's `token`), passed
 * back as `POST /v1/apps/{app}/backup?since=TOKEN`: 128 random bits, lowercase hex.
 */
export const SINCE_TOKEN = /^[0-9a-f]{32}$/;

/** First entry of every archive: what the payload is and how to restore it. */
export interface Manifest {
  format: number;
  app: string;
  driver: string;
  driver_version: number;
  ferry_version: string;
  host: string;
  created: string; // ISO 8601
  /**
   * "full" (every file's data), or "delta": files unchanged since the archive `since`
   * names carry no data (docs/api.yaml, `since`). Archives made before deltas existed
   * have no `kind` and are full.
   */
  kind?: "full" | "delta";
  /** The token a delta is relative to. */
  since?: string;
  /** Driver-specific description, e.g. the files driver's declared paths. */
  [key: string]: unknown;
}

/** Last entry of every archive; see docs/design.md ("A backup") for the exact byte range hashed. */
export interface EndRecord {
  entries: number;
  payload_bytes: number;
  sha256: string;
  /** Things the backup skipped or noticed (sockets, FIFOs, files that changed size). */
  warnings?: string[];
  /**
   * The name of the index ferryd kept of this backup's regular files; pass it as `since`
   * to get the next backup as a delta. Absent when no index was kept.
   */
  token?: string;
}

export interface VersionInfo {
  name: "ferryd";
  version: string;
  api: string;
  uid: number;
  gid: number;
  user: string;
  capabilities: string[];
  privileged: boolean;
  drivers: string[];
}

export interface AppSummary {
  name: string;
  driver: string;
  restore: boolean;
  health: { ok: boolean; message: string; fix?: string };
}

/** One finding of `POST /v1/apps/{app}/doctor`. */
export interface DoctorCheck {
  level: "ok" | "warn" | "fail";
  /** What was checked and what was found. */
  message: string;
  /** For "warn" and "fail": what to do about it. */
  fix?: string;
}

/** `POST /v1/apps/{app}/doctor`: the application checked the way a backup and a restore would use it. */
export interface DoctorReport {
  app: string;
  driver: string;
  restore: boolean;
  checks: DoctorCheck[];
}

export interface AppDetail extends AppSummary {
  description: Record<string, unknown>;
}

/** "dry-run": `POST /v1/apps/{app}/restore?dry_run=1`, which changes nothing. */
export type JobKind = "backup" | "restore" | "dry-run";
export type JobState = "running" | "succeeded" | "failed" | "cancelled";

/** A backup or restore as `GET /v1/jobs` and `GET /v1/jobs/{id}` describe it. */
export interface JobInfo {
  id: string;
  kind: JobKind;
  app: string;
  peer: { uid: number; gid: number; pid: number };
  started: string;
  finished?: string;
  state: JobState;
  bytes: number;
  entries: number;
  error?: { code: string; message: string };
}
