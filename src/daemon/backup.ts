/**
 * POST /v1/apps/{app}/backup: the response body is the archive, streamed.
 *
 * Errors before the first byte are ordinary JSON error responses. After the first byte
 * the status line is gone, so a failure is signalled twice: the archive stops before its
 * end record, and the chunked response ends with the trailer `Ferry-Status: error CODE
 * message`. A complete archive ends with `Ferry-Status: ok`. If the client goes away, the
 * driver's iterator is returned so descriptors and helpers are released at once.
 */
import { once } from "node:events";
import type { IncomingMessage, ServerResponse } from "node:http";
import { hostname } from "node:os";
import type { EndRecord } from "../api/types.js";
import { writeArchive } from "../core/archive/writer.js";
import { describeError, FerryError, toFerryError } from "../core/errors.js";
import { VERSION } from "../core/version.js";
import { drivers } from "../drivers/all.js";
import { backupWithHooks } from "../drivers/hooks.js";
import { audit } from "./audit.js";
import type { AppConfig } from "./config.js";
import { sendError } from "./respond.js";
import type { FerryDaemon, RequestContext } from "./server.js";

/** A header-safe one-line rendering of an error for the Ferry-Status trailer. */
export function statusTrailer(err: FerryError | undefined): string {
  if (err === undefined) return "ok";
  const msg = err.message.replace(/[^\x20-\x7e]/g, "?").slice(0, 300);
  return `error ${err.code} ${msg}`;
}

export async function streamBackup(
  daemon: FerryDaemon,
  app: AppConfig,
  req: IncomingMessage,
  res: ServerResponse,
  ctx: RequestContext,
): Promise<void> {
  const driver = drivers.get(app.driver);
  if (driver === undefined) throw new FerryError("INTERNAL", `driver ${app.driver} missing`);
  if (daemon.busy.has(app.name)) {
    throw new FerryError(
      "APP_BUSY",
      `a backup or restore of ${app.name} is already running; try again later`,
    );
  }
  daemon.busy.add(app.name);
  req.resume(); // the request body, if any, is not used

  const abort = new AbortController();
  const onClose = () => {
    if (!res.writableFinished) abort.abort(new FerryError("CANCELLED", "the client disconnected"));
  };
  res.on("close", onClose);
  const warnings: string[] = [];
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
  try {
    const ctxDriver = { app: app.name, signal: abort.signal, warnings };
    // Hooks wrap the whole iteration (post_backup also runs when the client goes away).
    // Nothing is sent before the first chunk, so a driver failing at its start (an
    // unreadable path, a dump tool that will not start) is still a JSON error response.
    const entries = backupWithHooks(app, driver, ctxDriver);
    archive = writeArchive(manifest, entries, warnings);
    for (;;) {
      const r = await archive.next();
      if (r.done) {
        end = r.value;
        break;
      }
      if (!res.headersSent) {
        res.writeHead(200, {
          "Content-Type": "application/x-tar",
          "Content-Disposition": `attachment; filename="${app.name}.tar"`,
          Trailer: "Ferry-Status",
          "Cache-Control": "no-store",
        });
      }
      bytes += r.value.length;
      if (!res.write(r.value)) await once(res, "drain", { signal: abort.signal });
    }
    if (!res.headersSent) {
      res.writeHead(200, { "Content-Type": "application/x-tar", Trailer: "Ferry-Status" });
    }
    res.addTrailers({ "Ferry-Status": statusTrailer(undefined) });
    res.end();
  } catch (err) {
    failure = abort.signal.aborted ? toFerryError(abort.signal.reason) : toFerryError(err);
    if (failure.code === "INTERNAL") daemon.log.error({ err: describeError(err) }, "backup failed");
    await archive?.return(undefined as unknown as EndRecord).catch(() => {});
    if (!res.headersSent) {
      sendError(res, failure);
    } else if (!res.destroyed) {
      const streamed = new FerryError(
        failure.code === "CANCELLED" ? "CANCELLED" : failure.code,
        `backup of ${app.name} failed after ${bytes} bytes: ${failure.message}`,
      );
      res.addTrailers({ "Ferry-Status": statusTrailer(streamed) });
      res.end();
    }
  } finally {
    res.off("close", onClose);
    daemon.busy.delete(app.name);
    audit(daemon.log, {
      peer: ctx.peer,
      method: req.method,
      path: req.url,
      app: app.name,
      outcome: failure === undefined ? "ok" : failure.code === "CANCELLED" ? "aborted" : "error",
      status: failure === undefined ? 200 : failure.status,
      code: failure?.code,
      bytes,
      entries: end?.entries,
      sha256: end?.sha256,
      duration_ms: Date.now() - ctx.started,
      reason: failure?.message,
    });
    if (warnings.length > 0)
      daemon.log.warn({ app: app.name, warnings: warnings.slice(0, 50) }, "backup warnings");
  }
}
