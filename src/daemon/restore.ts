/**
 * POST /v1/apps/{app}/restore: the request body is an archive; the answer comes after the
 * restore is committed or rolled back.
 *
 * The archive streams through the strict parser into the driver's restore session, which
 * stages everything away from the live data. Only when the whole body arrived and the end
 * record verified (entry count, payload length, SHA-256) is the session committed; on any
 * failure — foreign, truncated, corrupted or unsafe archive, client gone, cancel — it is
 * aborted and the live data stays exactly as it was.
 *
 * `?dry_run=1` takes the same path up to the commit, with the driver's dry-run session
 * instead of its restore (no hook runs, nothing is staged): the answer says what the
 * restore would add, remove and change. `?keep_old=1` asks the driver to keep the data
 * it replaces and say where.
 */
import type { Manifest } from "../api/types.js";
import { ArchiveParser, DEFAULT_LIMITS } from "../core/archive/reader.js";
import { describeError, FerryError, toFerryError } from "../core/errors.js";
import { restoreWithHooks } from "../drivers/hooks.js";
import type { DryRunSession, RestoreSession } from "../drivers/types.js";
import { consumeBody } from "./body.js";
import { type JobHandler, runJob } from "./job-request.js";
import { sendErrorDuringUpload, sendJson } from "./respond.js";

/** What `POST /v1/apps/{app}/restore` is asked to do besides restoring. */
export interface RestoreOptions {
  /** `?dry_run=1`: verify and compare, change nothing (no staging, journal or hook). */
  dryRun: boolean;
  /** `?keep_old=1`: keep the data the restore replaces (drivers with `keepsOld`). */
  keepOld: boolean;
}

/** The query of a restore request; anything else in it is a BAD_REQUEST. */
export function restoreOptions(url: string | undefined): RestoreOptions {
  const opts: RestoreOptions = { dryRun: false, keepOld: false };
  const query = new URL(url ?? "/", "http://ferry").searchParams;
  for (const [key, value] of query) {
    const flag = key === "dry_run" ? "dryRun" : key === "keep_old" ? "keepOld" : undefined;
    if (flag === undefined) {
      throw new FerryError(
        "BAD_REQUEST",
        `unknown query parameter ${JSON.stringify(key)} (dry_run, keep_old)`,
      );
    }
    if (!["1", "true", "0", "false"].includes(value)) {
      throw new FerryError("BAD_REQUEST", `${key} takes 1 or 0`);
    }
    opts[flag] = value === "1" || value === "true";
  }
  if (opts.dryRun && opts.keepOld) {
    throw new FerryError("BAD_REQUEST", "keep_old has no meaning in a dry run");
  }
  return opts;
}

/** A dry run of a driver that cannot compare: the archive is verified, nothing compared. */
function verifyOnly(): DryRunSession {
  return {
    entry: async () => {},
    data: async () => {},
    entryEnd: async () => {},
    finish: async () => ({
      added: 0,
      removed: 0,
      changed: 0,
      unchanged: 0,
      changes: [],
      truncated: false,
    }),
    abort: async () => {},
  };
}

export const handleRestore: JobHandler = async (host, app, req, res, ctx) => {
  const driver = app.impl;
  if (!app.restore) {
    throw new FerryError(
      "RESTORE_NOT_ALLOWED",
      `${app.name} does not allow restores (set restore = true in its config)`,
    );
  }
  if (driver.restore === undefined) {
    throw new FerryError("RESTORE_NOT_ALLOWED", `the ${driver.name} driver cannot restore`);
  }
  const opts = restoreOptions(req.url);
  if (opts.keepOld && driver.keepsOld !== true) {
    throw new FerryError(
      "BAD_REQUEST",
      `the ${driver.name} driver cannot keep the data it replaces (keep_old is for files applications)`,
    );
  }
  await runJob(
    host,
    opts.dryRun ? "dry-run" : "restore",
    app,
    req,
    res,
    ctx,
    async (job, warnings) => {
      const abort = job.controller;
      let session: RestoreSession | DryRunSession | undefined;
      let failure: FerryError | undefined;
      let result: { entries: number; bytes: number } | undefined;

      const parser = new ArchiveParser(
        {
          manifest: async (m: Manifest) => {
            if (m.app !== app.name) {
              throw new FerryError(
                "ARCHIVE_FOREIGN",
                `the archive is of application ${JSON.stringify(m.app)}, not ${app.name}`,
              );
            }
            if (m.driver !== driver.name) {
              throw new FerryError(
                "ARCHIVE_FOREIGN",
                `the archive was made by the ${String(m.driver)} driver, ${app.name} uses ${driver.name}`,
              );
            }
            const rctx = {
              app: app.name,
              signal: abort.signal,
              warnings,
              manifest: m,
              state: host.state,
              ...(opts.keepOld ? { keepOld: true } : {}),
            };
            // A dry run runs no hook: it must not stop or touch the application.
            session = opts.dryRun
              ? driver.dryRun === undefined
                ? verifyOnly()
                : await driver.dryRun(app.settings, rctx)
              : await restoreWithHooks(app, driver, rctx);
          },
          entry: (h) => (session as RestoreSession).entry(h),
          data: (c) => (session as RestoreSession).data(c),
          entryEnd: (h) => (session as RestoreSession).entryEnd(h),
        },
        DEFAULT_LIMITS,
      );
      try {
        try {
          // A refused archive still gets its error answer: the rest of the upload is drained
          // instead of the connection being reset. Cancel and stalled clients end the wait.
          await consumeBody(
            req,
            async (chunk) => {
              await parser.write(chunk);
              job.progress(parser.bytes, parser.entries);
            },
            abort.signal,
            host.config.limits.idle_timeout * 1000,
          );
        } catch (err) {
          if (abort.signal.aborted) throw abort.signal.reason;
          if (err instanceof FerryError) throw err;
          throw new FerryError(
            "ARCHIVE_TRUNCATED",
            `the upload broke after ${parser.bytes} bytes: ${(err as Error).message}`,
          );
        }
        parser.finish();
        if (session === undefined)
          throw new FerryError("ARCHIVE_INVALID", "the archive has no manifest");
        abort.signal.throwIfAborted();
        const s = session;
        session = undefined; // committed or failed, it must not be aborted afterwards
        if ("finish" in s) {
          const report = await s.finish();
          result = { entries: parser.entries, bytes: 0 };
          sendJson(res, 200, {
            app: app.name,
            job: job.info.id,
            dry_run: true,
            entries: parser.entries,
            sha256: parser.end?.sha256,
            compared: driver.dryRun !== undefined,
            ...report,
            warnings,
          });
        } else {
          const done = await s.commit();
          result = done;
          sendJson(res, 200, {
            app: app.name,
            job: job.info.id,
            entries: done.entries,
            bytes: done.bytes,
            ...(done.kept === undefined ? {} : { kept: done.kept }),
            warnings,
          });
        }
      } catch (err) {
        failure = abort.signal.aborted ? toFerryError(abort.signal.reason) : toFerryError(err);
        if (failure.code === "INTERNAL")
          host.log.error({ err: describeError(err) }, "restore failed");
        if (session !== undefined) {
          try {
            await session.abort(failure);
          } catch (e) {
            host.log.error(
              { app: app.name, err: describeError(e) },
              "restore abort could not clean up",
            );
          }
        }
        sendErrorDuringUpload(req, res, failure);
      }
      return {
        failure,
        result: { bytes: parser.bytes, entries: result?.entries, sha256: parser.end?.sha256 },
      };
    },
  );
};
