import type { Manifest } from "../api/types.js";
import { ArchiveParser, DEFAULT_LIMITS } from "../core/archive/reader.js";
import { describeError, FerryError, toFerryError } from "../core/errors.js";
import { restoreWithHooks } from "../drivers/hooks.js";
import type { RestoreSession } from "../drivers/types.js";
import { consumeBody } from "./body.js";
import { type JobHandler, runJob } from "./job-request.js";
import { sendErrorDuringUpload, sendJson } from "./respond.js";

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
  await runJob(host, "restore", app, req, res, ctx, async (job, warnings) => {
    const abort = job.controller;
    let session: RestoreSession | undefined;
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
          session = await restoreWithHooks(app, driver, {
            app: app.name,
            signal: abort.signal,
            warnings,
            manifest: m,
            state: host.state,
          });
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
      result = await s.commit();
      sendJson(res, 200, {
        app: app.name,
        job: job.info.id,
        entries: result.entries,
        bytes: result.bytes,
        warnings,
      });
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
  });
};
