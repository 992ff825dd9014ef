/**
 * POST /v1/apps/{app}/backup: the response body is the archive, streamed.
 *
 * Errors before the first byte are ordinary JSON error responses. After the first byte
 * the status line is gone, so a failure is signalled twice: the archive stops before its
 * end record, and the chunked response ends with the trailer `Ferry-Status: error CODE
 * message`. A complete archive ends with `Ferry-Status: ok`.
 *
 * The backup is a job (`Ferry-Job` header). It is cancelled — the driver's iterator is
 * returned, so descriptors and helpers are released and post hooks run — when the client
 * disconnects, when it stops reading for longer than `limits.idle_timeout` (memory stays
 * flat: nothing more is produced while a write is pending), on `DELETE /v1/jobs/{id}`,
 * at `limits.job_timeout`, and at shutdown.
 */

import type { ServerResponse } from "node:http";
import { hostname } from "node:os";
import type { EndRecord } from "../api/types.js";
import { BlockPool, writeArchive } from "../core/archive/writer.js";
import { describeError, FerryError, toFerryError } from "../core/errors.js";
import { VERSION } from "../core/version.js";
import { backupWithHooks } from "../drivers/hooks.js";
import type { SinceIndex } from "../drivers/types.js";
import { type JobHandler, runJob } from "./job-request.js";
import { sendError } from "./respond.js";
import { archiveKind, sinceParam } from "./since.js";

const WINDOW = 8 * 1024 * 1024;
/** Blocks queued for the client at most (a partly filled block still holds a whole one). */
const MAX_QUEUED_BLOCKS = 8;

/** A header-safe one-line rendering of an error for the Ferry-Status trailer. */
export function statusTrailer(err: FerryError | undefined): string {
  if (err === undefined) return "ok";
  const msg = err.message.replace(/[^\x20-\x7e]/g, "?").slice(0, 300);
  return `error ${err.code} ${msg}`;
}

/** Resolves on 'drain'; rejects when the signal aborts or the client stalls past `ms`. */
function drained(res: ServerResponse, signal: AbortSignal, ms: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: unknown) => {
      clearTimeout(timer);
      res.off("drain", onDrain);
      signal.removeEventListener("abort", onAbort);
      if (err === undefined) resolve();
      else reject(err);
    };
    const onDrain = () => done();
    const onAbort = () => done(signal.reason);
    const timer = setTimeout(
      () => done(new FerryError("CLIENT_TIMEOUT", `the client stopped reading for ${ms / 1000}s`)),
      ms,
    );
    res.on("drain", onDrain);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}

export const streamBackup: JobHandler = (host, app, req, res, ctx) => {
  const driver = app.impl;
  const since = sinceParam(req);
  req.resume(); // the request body, if any, is not used
  return runJob(host, "backup", app, req, res, ctx, async (job, warnings) => {
    const idleMs = host.config.limits.idle_timeout * 1000;
    let bytes = 0;
    let end: EndRecord | undefined;
    let failure: FerryError | undefined;
    const manifest = {
      app: app.name,
      driver: driver.name,
      driver_type: driver.type,
      driver_version: driver.version,
      ferry_version: VERSION,
      host: hostname(),
      created: new Date().toISOString(),
      ...driver.manifest(app.settings),
    };
    let archive: AsyncGenerator<Buffer, EndRecord> | undefined;
    let index: SinceIndex | undefined;
    const head = () => {
      if (!res.headersSent) {
        res.writeHead(200, {
          "Content-Type": "application/x-tar",
          "Content-Disposition": `attachment; filename="${app.name}.tar"`,
          Trailer: "Ferry-Status",
          "Ferry-Job": job.info.id,
          "Cache-Control": "no-store",
        });
      }
    };
    try {
      const state = host.state;
      index = driver.openSince?.(
        app.settings,
        { app: app.name, state, log: host.log, warnings },
        since,
      );
      const ctxDriver = { app: app.name, signal: job.signal, warnings, state, since: index };
      // Hooks wrap the whole iteration (post_backup also runs when the client goes away).
      // Nothing is sent before the first chunk, so a driver failing at its start (an
      // unreadable path, a dump tool that will not start) is still a JSON error response.
      // The blocks come back to the pool once the socket has taken them (the write's
      // callback), so a steady backup allocates nothing per block.
      const pool = new BlockPool();
      let queued = 0;
      // The index of this backup is kept once its last entry is out, before the end record.
      archive = writeArchive(
        { ...manifest, ...archiveKind(index) },
        backupWithHooks(app, driver, ctxDriver),
        warnings,
        pool,
        () => ({ token: index?.complete() }),
      );
      for (;;) {
        job.signal.throwIfAborted();
        const r = await archive.next();
        if (r.done) {
          end = r.value;
          break;
        }
        head();
        bytes += r.value.length;
        job.progress(bytes, 0);
        // Keep up to WINDOW bytes queued for the client instead of waiting for a full drain
        // after every chunk (Node's 16 KiB high-water mark would stall the pipe each time);
        // memory stays bounded by MAX_QUEUED_BLOCKS blocks of BLOCK_BYTES.
        const block = r.value;
        queued++;
        res.write(block, () => {
          queued--;
          pool.give(block);
        });
        if (res.writableLength > WINDOW || queued >= MAX_QUEUED_BLOCKS) {
          await drained(res, job.signal, idleMs);
        }
      }
      job.signal.throwIfAborted();
      head();
      res.addTrailers({ "Ferry-Status": statusTrailer(undefined) });
      res.end();
      job.progress(bytes, end.entries);
    } catch (err) {
      failure = job.signal.aborted ? toFerryError(job.signal.reason) : toFerryError(err);
      if (failure.code === "INTERNAL") host.log.error({ err: describeError(err) }, "backup failed");
      if (failure.code === "CLIENT_TIMEOUT") job.controller.abort(failure);
      await archive?.return(undefined as unknown as EndRecord).catch(() => {});
      if (!res.headersSent) {
        sendError(res, failure);
      } else if (failure.code === "CLIENT_TIMEOUT") {
        res.destroy(); // it does not read: no trailer could reach it
      } else if (!res.destroyed) {
        const streamed = new FerryError(
          failure.code,
          `backup of ${app.name} failed after ${bytes} bytes: ${failure.message}`,
        );
        res.addTrailers({ "Ferry-Status": statusTrailer(streamed) });
        res.end();
      }
    } finally {
      index?.close();
    }
    return { failure, result: { bytes, entries: end?.entries, sha256: end?.sha256 } };
  });
};
