import type { ServerResponse } from "node:http";
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
