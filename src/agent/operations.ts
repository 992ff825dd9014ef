/**
 * What the agent server does for each request that carries data (docs/agent-protocol.md):
 * `GET /v1/info`, `POST /v1/backup` (the application's payload as a tar stream, with a
 * `Ferry-Status` trailer) and `POST /v1/restore` (a checked, staged payload handed to the
 * application). The server (agent.ts) decides when they may run; these do the work.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { tmpdir } from "node:os";
import { TarResponseWriter } from "./backup-writer.js";
import { AgentError, toAgentError } from "./errors.js";
import { send } from "./http.js";
import type { AgentOptions } from "./options.js";
import {
  END_OF_TAR,
  PayloadChecker,
  type PayloadLimits,
  PROTOCOL_HEADER,
  PROTOCOL_VERSION,
} from "./protocol.js";
import { StagedPayload } from "./restore-payload.js";

/** Reports an error that is not sent to ferryd (AgentOptions.onError). */
type Report = (err: unknown) => void;

/** A backup or restore request, with what the server gives it. */
export interface OperationRequest {
  o: AgentOptions;
  limits: PayloadLimits;
  req: IncomingMessage;
  res: ServerResponse;
  /** The request's abort signal (ferryd gone, agent closing). */
  signalOf: () => AbortSignal;
  report: Report;
}

export async function answerInfo(o: AgentOptions, res: ServerResponse, report: Report) {
  const i = o.info;
  let estimated: number | null = null;
  if (i.estimateBytes !== undefined) {
    try {
      const n = await i.estimateBytes();
      estimated = Number.isSafeInteger(n) && n >= 0 ? n : null;
    } catch (err) {
      report(err);
    }
  }
  send(res, 200, {
    protocol: PROTOCOL_VERSION,
    name: i.name,
    version: i.version,
    holds: i.holds ?? "",
    estimated_bytes: estimated,
    prepare: o.prepare !== undefined,
    restore: o.restore !== undefined,
  });
}

export async function serveBackup(r: OperationRequest): Promise<void> {
  const { o, limits, req, res, signalOf, report } = r;
  req.resume();
  const signal = signalOf();
  const writer = new TarResponseWriter(res, new PayloadChecker(limits), signal, () => {
    res.writeHead(200, {
      "content-type": "application/x-tar",
      trailer: "Ferry-Status",
      [PROTOCOL_HEADER]: String(PROTOCOL_VERSION),
    });
  });
  try {
    await o.backup(writer, { signal });
    await writer.write(END_OF_TAR);
    res.addTrailers({ "Ferry-Status": "ok" });
    res.end();
  } catch (err) {
    if (!writer.hasStarted || res.destroyed) throw err;
    // The tar stream stays without its end blocks, and the trailer says why.
    const e = toAgentError(err);
    if (e.code === "INTERNAL") report(err);
    const msg = e.message.replace(/[^\x20-\x7e]/g, "?").slice(0, 300);
    res.addTrailers({ "Ferry-Status": `error ${e.code} ${msg}` });
    res.end();
  }
}

export async function serveRestore(r: OperationRequest): Promise<void> {
  const { o, limits, req, res, signalOf, report } = r;
  const handler = o.restore;
  if (handler === undefined) {
    req.resume();
    throw new AgentError("NOT_SUPPORTED", "this application does not restore");
  }
  const signal = signalOf();
  const payload = await StagedPayload.receive(
    req,
    new PayloadChecker(limits),
    o.stagingDir ?? tmpdir(),
    o.idleTimeoutMs ?? 60_000,
    signal,
  );
  try {
    signal.throwIfAborted();
    await handler(payload, { signal });
    send(res, 200, { ok: true, entries: payload.entryCount, bytes: payload.bytes });
  } catch (err) {
    if (err instanceof AgentError) throw err;
    report(err);
    throw new AgentError("RESTORE_FAILED", `the restore failed: ${(err as Error)?.message ?? err}`);
  } finally {
    await payload.dispose();
  }
}
