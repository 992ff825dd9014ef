/**
 * What a backup or restore request needs of ferryd, and the frame every such job runs in.
 *
 * backup.ts and restore.ts see ferryd only through `JobHost` (the job registry, the live
 * config, the state directory, the log and the audit trail), never the server itself, so the
 * server can import them without a circle. `runJob` is the part both share: the job is
 * registered (its limits enforced), cancelled when the client goes away, and — whatever
 * the work did, threw or was cancelled — finished and audited exactly once.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { JobKind } from "../api/types.js";
import { FerryError, toFerryError } from "../core/errors.js";
import type { Logger } from "../core/log.js";
import type { StateDir } from "../core/state-dir.js";
import type { PeerCred } from "../core/sys.js";
import type { Audit } from "./audit.js";
import type { AppConfig, Config } from "./config.js";
import type { Job, JobRegistry } from "./jobs.js";

/** Who asked, and when (for the audit line). */
export interface RequestContext {
  peer: PeerCred;
  started: number;
}

/** What the audit line of a finished job records. */
export interface JobResult {
  bytes: number;
  entries?: number | undefined;
  sha256?: string | undefined;
}

/** The narrow view of ferryd that job handlers get. */
export interface JobHost {
  readonly jobs: JobRegistry;
  readonly config: Config;
  readonly state: StateDir;
  readonly log: Logger;
  readonly audit: Audit;
}

/** The handler of a backup or restore request (backup.ts, restore.ts). */
export type JobHandler = (
  host: JobHost,
  app: AppConfig,
  req: IncomingMessage,
  res: ServerResponse,
  ctx: RequestContext,
) => Promise<void>;

/** How a job's work ended: its failure (if any) and what to audit. */
export interface JobOutcome {
  failure?: FerryError | undefined;
  result: JobResult;
}

/**
 * Runs `work` as a job of `kind` for `app`. `work` reports failures in its outcome (after
 * answering the client itself); anything it throws is recorded as the job's failure and
 * rethrown.
 */
export async function runJob(
  host: JobHost,
  kind: JobKind,
  app: AppConfig,
  req: IncomingMessage,
  res: ServerResponse,
  ctx: RequestContext,
  work: (job: Job, warnings: string[]) => Promise<JobOutcome>,
): Promise<void> {
  const job = host.jobs.start(kind, app.name, ctx.peer);
  const onClose = () => {
    if (!res.writableFinished) {
      job.controller.abort(new FerryError("CANCELLED", "the client disconnected"));
    }
  };
  res.on("close", onClose);
  const warnings: string[] = [];
  let outcome: JobOutcome = { result: { bytes: 0 } };
  try {
    outcome = await work(job, warnings);
  } catch (err) {
    outcome = { failure: toFerryError(err), result: outcome.result };
    throw err;
  } finally {
    res.off("close", onClose);
    job.finish(outcome.failure);
    host.audit.job(req, ctx, app.name, job.info.id, outcome.failure, outcome.result);
    if (warnings.length > 0) {
      host.log.warn({ app: app.name, kind, warnings: warnings.slice(0, 50) }, `${kind} warnings`);
    }
  }
}
