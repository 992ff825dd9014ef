/**
 * Sending an archive to ferryd's restore of one application, for `ferry import` and
 * `ferry restore`: the request, ferryd's answer once the restore is committed or rolled
 * back, and Ctrl-C / SIGTERM, which abort the upload (ferryd then rolls the restore back).
 */
import type { Readable } from "node:stream";
import { type BodyPump, errorFromBody, type FerryClient, readBody } from "./client.js";

export interface RestoreAnswer {
  entries: number;
  bytes: number;
  /** `keep_old`: where the replaced data was kept. */
  kept?: string[];
  warnings?: string[];
}

/** ferryd's answer to a dry run (`?dry_run=1`): what a restore would change. */
export interface DryRunAnswer {
  dry_run: true;
  entries: number;
  sha256?: string;
  /** Whether the driver compared entries with the live data (else it replaces it whole). */
  compared: boolean;
  added: number;
  removed: number;
  changed: number;
  unchanged: number;
  changes: { change: "added" | "removed" | "changed"; path: string; what?: string[] }[];
  truncated: boolean;
  warnings?: string[];
}

/**
 * The answer, or `"interrupted"` when a signal stopped the upload. `query` is the restore
 * request's (`dry_run=1`, `keep_old=1`).
 */
export async function uploadRestore<T = RestoreAnswer>(
  client: FerryClient,
  app: string,
  source: Readable | BodyPump,
  onFailure: () => void,
  query = "",
): Promise<T | "interrupted"> {
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const res = await client.request(
      "POST",
      `/v1/apps/${encodeURIComponent(app)}/restore${query === "" ? "" : `?${query}`}`,
      abort.signal,
      source,
    );
    // A dry run lists up to 1000 paths of up to 4 KiB each.
    const text = await readBody(res, 8 << 20);
    if (res.statusCode !== 200) throw errorFromBody(res.statusCode ?? 500, text);
    return JSON.parse(text) as T;
  } catch (err) {
    onFailure();
    if (abort.signal.aborted) return "interrupted";
    throw err;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
