import {
  ARCHIVE_PREFIX,
  PayloadChecker,
  payloadHeader,
  STATUS_TRAILER,
} from "../../agent/protocol.js";
import { ByteSource, readTar } from "../../agent/tar-stream.js";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { FerryError } from "../../core/errors.js";
import type { DriverContext } from "../types.js";
import { agentError, fetchInfo } from "./calls.js";
import { agentRequest, clean } from "./client.js";
import type { AgentConfig } from "./config.js";

import { endQuiesce, limitsOf, startQuiesce } from "./quiesce.js";

function protocolError(message: string): FerryError {
  return new FerryError("AGENT_PROTOCOL_ERROR", `the agent's backup stream: ${message}`);
}

/** The error a `Ferry-Status: error CODE message` trailer reports, if it is one. */
function trailerError(trailer: string | undefined): FerryError | undefined {
  const m = /^error ([A-Z0-9_]{1,60})(?: (.*))?$/.exec(trailer ?? "");
  if (m === null) return undefined;
  return new FerryError(
    "AGENT_FAILED",
    `the agent's backup failed: ${m[1]}${m[2] ? `: ${clean(m[2])}` : ""}`,
  );
}

async function* backupEntries(
  config: AgentConfig,
  ctx: DriverContext,
): AsyncGenerator<ArchiveEntry> {
  const idleMs = config.idle_timeout * 1000;
  const { res, destroy } = await agentRequest(config, {
    method: "POST",
    path: "/v1/backup",
    timeoutMs: idleMs,
    signal: ctx.signal,
  });
  try {
    const status = res.statusCode ?? 0;
    if (status !== 200) throw await agentError(config, "the backup", res, idleMs);
    const src = new ByteSource(res, {
      idleMs,
      signal: ctx.signal,
      onIdle: () =>
        new FerryError(
          "AGENT_TIMEOUT",
          `the agent of ${config.socket} sent nothing for ${config.idle_timeout}s in the middle of its backup`,
        ),
    });
    const checker = new PayloadChecker(limitsOf(config));
    try {
      for await (const e of readTar(src, checker.limits, protocolError)) {
        const rel = checker.checkAgentEntry(e.header);
        const h = e.header;
        const header = payloadHeader(ARCHIVE_PREFIX + rel, h.type as "file" | "dir" | "symlink", {
          size: h.size,
          mode: h.mode,
          mtimeMs: h.mtimeSec * 1000,
          linkpath: h.linkpath,
        });
        yield h.type === "file" ? { header, body: e.body } : { header };
      }
    } catch (err) {
      // An agent that fails mid-stream ends its tar early and says why in the trailer.
      if (err instanceof FerryError && err.code === "AGENT_PROTOCOL_ERROR" && res.complete) {
        const said = trailerError(res.trailers[STATUS_TRAILER]);
        if (said !== undefined) throw said;
      }
      throw err;
    }
    // The stream is complete; the trailer says whether the agent stands by it.
    const trailer = res.trailers[STATUS_TRAILER];
    if (trailer === undefined) {
      throw protocolError(
        `it ended without its ${STATUS_TRAILER} trailer, so it may be incomplete`,
      );
    }
    if (trailer !== "ok") {
      throw (
        trailerError(trailer) ??
        new FerryError(
          "AGENT_FAILED",
          `the agent's backup ended with status ${clean(trailer, 100)}`,
        )
      );
    }
  } finally {
    destroy();
  }
}

/** The archive's first entry: who answered for the application (checked on restore). */
export const INFO_ENTRY = "data/agent.json";
export const MAX_INFO_BYTES = 64 * 1024;

export function backup(config: AgentConfig, ctx: DriverContext): AsyncGenerator<ArchiveEntry> {
  return (async function* () {
    const { info } = await fetchInfo(config, ctx.signal);
    const body = Buffer.from(`${JSON.stringify(info)}\n`);
    yield { header: payloadHeader(INFO_ENTRY, "file", { size: body.length, mode: 0o644 }), body };
    const held = await startQuiesce(config, info, "backup", ctx.signal);
    let failure: unknown;
    let completed = false;
    try {
      yield* backupEntries(config, ctx);
      completed = true;
    } catch (err) {
      failure = err;
      throw err;
    } finally {
      // Also when the consumer returns early (the client went away).
      if (held) await endQuiesce(config, "backup", ctx, completed, failure);
    }
  })();
}
