/**
 * The agent server's small HTTP pieces (docs/agent-protocol.md): JSON answers carrying the
 * protocol header, error bodies, and bounded JSON request bodies.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { AgentError } from "./errors.js";
import type { Operation } from "./options.js";
import { PROTOCOL_HEADER, PROTOCOL_VERSION } from "./protocol.js";

const MAX_JSON_BODY = 64 * 1024;

export function send(res: ServerResponse, status: number, body: unknown): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  const text = JSON.stringify(body);
  res.writeHead(status, {
    "content-type": "application/json",
    "content-length": Buffer.byteLength(text),
    [PROTOCOL_HEADER]: String(PROTOCOL_VERSION),
  });
  res.end(text);
}

export function sendError(res: ServerResponse, err: AgentError): void {
  send(res, err.status, { error: { code: err.code, message: err.message } });
}

export async function readJsonBody(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > MAX_JSON_BODY) throw new AgentError("BAD_REQUEST", "the JSON body is too large");
    chunks.push(c as Buffer);
  }
  if (n === 0) return {};
  try {
    const v = JSON.parse(Buffer.concat(chunks).toString("utf8"));
    if (typeof v !== "object" || v === null || Array.isArray(v)) throw new Error("not an object");
    return v as Record<string, unknown>;
  } catch {
    throw new AgentError("BAD_REQUEST", "the body is not a JSON object");
  }
}

export function operationOf(body: Record<string, unknown>): Operation {
  if (body.operation !== "backup" && body.operation !== "restore") {
    throw new AgentError("BAD_REQUEST", 'operation must be "backup" or "restore"');
  }
  return body.operation;
}
