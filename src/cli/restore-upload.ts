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
  warnings?: string[];
}

/** The answer, or `"interrupted"` when a signal stopped the upload. */
export async function uploadRestore(
  client: FerryClient,
  app: string,
  source: Readable | BodyPump,
  onFailure: () => void,
): Promise<RestoreAnswer | "interrupted"> {
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const res = await client.request(
      "POST",
      `/v1/apps/${encodeURIComponent(app)}/restore`,
      abort.signal,
      source,
    );
    const text = await readBody(res, 1 << 20);
    if (res.statusCode !== 200) throw errorFromBody(res.statusCode ?? 500, text);
    return JSON.parse(text) as RestoreAnswer;
  } catch (err) {
    onFailure();
    if (abort.signal.aborted) return "interrupted";
    throw err;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
