import type { IncomingMessage, ServerResponse } from "node:http";
import type { ErrorBody } from "../api/errors.js";
import { type FerryError, toFerryError } from "../core/errors.js";

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  });
  res.end(text);
}

/** Sends a catalogued error; never a stack trace, never an internal message. */
export function sendError(res: ServerResponse, err: unknown): FerryError {
  const fe = toFerryError(err);
  if (!res.headersSent) {
    const body: ErrorBody = { error: { code: fe.code, message: fe.message } };
    sendJson(res, fe.status, body);
  } else {
    res.destroy();
  }
  return fe;
}

/**
 * Sends an error while the client may still be uploading: the whole answer is written
 * (with its Content-Length, so the client can read it at once and stop sending), but the
 * response is ended only once the upload was drained. Ending it earlier makes Node close
 * the socket with unread data, the kernel answers with a reset, and the client may lose
 * the answer. A client that keeps sending for more than `graceMs` is cut off.
 */
export function sendErrorDuringUpload(
  req: IncomingMessage,
  res: ServerResponse,
  err: unknown,
  graceMs = 30_000,
): FerryError {
  const fe = toFerryError(err);
  if (res.headersSent) {
    res.destroy();
    return fe;
  }
  const body: ErrorBody = { error: { code: fe.code, message: fe.message } };
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(fe.status, {
    "Content-Type": "application/json",
    "Content-Length": Buffer.byteLength(text),
  });
  res.write(text);
  if (req.complete || req.destroyed) {
    res.end();
    return fe;
  }
  const timer = setTimeout(() => res.destroy(), graceMs);
  timer.unref();
  const done = () => {
    clearTimeout(timer);
    res.end();
  };
  req.once("end", done);
  req.once("close", done);
  req.resume();
  return fe;
}
