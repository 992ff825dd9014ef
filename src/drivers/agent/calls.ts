/**
 * The agent protocol's calls as ferryd makes them (docs/agent-protocol.md), each over one
 * verified request of client.ts: bounded JSON answers, an agent's error answer as
 * AGENT_FAILED, `GET /v1/info` checked against the protocol, `POST /v1/prepare` and
 * `POST /v1/finish`.
 */
import type { IncomingMessage } from "node:http";
import { PROTOCOL_VERSION } from "../../agent/protocol.js";
import { FerryError } from "../../core/errors.js";
import type { PeerCred } from "../../core/sys.js";
import { type AgentRequest, agentRequest, clean, timeoutError, withTimeout } from "./client.js";
import type { AgentConfig } from "./config.js";

/** Largest JSON body ferryd reads from an agent. */
const MAX_JSON_BYTES = 64 * 1024;

export type Operation = "backup" | "restore";
export type Outcome = "ok" | "error" | "cancelled";

export interface AgentInfo {
  protocol: number;
  name: string;
  version: string;
  holds: string;
  estimated_bytes: number | null;
  prepare: boolean;
  restore: boolean;
}

/** Reads a bounded JSON body. */
export async function readJson(
  config: AgentConfig,
  res: IncomingMessage,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<unknown> {
  const read = (async () => {
    const chunks: Buffer[] = [];
    let n = 0;
    for await (const c of res) {
      n += (c as Buffer).length;
      if (n > MAX_JSON_BYTES) {
        throw new FerryError(
          "AGENT_PROTOCOL_ERROR",
          `the agent sent more than ${MAX_JSON_BYTES} bytes of JSON`,
        );
      }
      chunks.push(c as Buffer);
    }
    return Buffer.concat(chunks).toString("utf8");
  })();
  read.catch(() => {});
  const text = await withTimeout(
    read,
    timeoutMs,
    () => timeoutError(config, "with its body", timeoutMs),
    signal,
  );
  try {
    return JSON.parse(text);
  } catch {
    throw new FerryError(
      "AGENT_PROTOCOL_ERROR",
      `the agent sent a body that is not JSON: ${clean(text, 100)}`,
    );
  }
}

/** A non-2xx answer as an error carrying the agent's own code and message. */
export async function agentError(
  config: AgentConfig,
  what: string,
  res: IncomingMessage,
  timeoutMs: number,
): Promise<FerryError> {
  let code = "";
  let message = "";
  try {
    const body = (await readJson(config, res, timeoutMs)) as {
      error?: { code?: unknown; message?: unknown };
    };
    code = clean(body?.error?.code ?? "", 60);
    message = clean(body?.error?.message ?? "");
  } catch {
    // A body that is not the protocol's error shape still fails the step with the status.
  }
  return new FerryError(
    "AGENT_FAILED",
    `the agent refused ${what}: HTTP ${res.statusCode}${code ? ` ${code}` : ""}${message ? `: ${message}` : ""}`,
  );
}

/** One request with a JSON answer; non-2xx become AGENT_FAILED. */
export async function callJson(
  config: AgentConfig,
  r: AgentRequest,
): Promise<{ body: unknown; cred: PeerCred }> {
  const { res, cred, destroy } = await agentRequest(config, r);
  try {
    const status = res.statusCode ?? 0;
    if (status < 200 || status > 299)
      throw await agentError(config, `${r.method} ${r.path}`, res, r.timeoutMs);
    return { body: await readJson(config, res, r.timeoutMs, r.signal), cred };
  } finally {
    destroy();
  }
}

/** GET /v1/info, checked against the protocol. */
export async function fetchInfo(
  config: AgentConfig,
  signal?: AbortSignal,
): Promise<{ info: AgentInfo; cred: PeerCred }> {
  const ms = config.connect_timeout * 1000;
  const { body, cred } = await callJson(config, {
    method: "GET",
    path: "/v1/info",
    timeoutMs: ms,
    ...(signal ? { signal } : {}),
  });
  const b = body as Record<string, unknown>;
  if (typeof b !== "object" || b === null || b.protocol !== PROTOCOL_VERSION) {
    throw new FerryError(
      "AGENT_PROTOCOL_ERROR",
      `the agent's /v1/info does not say protocol ${PROTOCOL_VERSION}`,
    );
  }
  if (typeof b.name !== "string" || b.name === "" || typeof b.version !== "string") {
    throw new FerryError("AGENT_PROTOCOL_ERROR", "the agent's /v1/info lacks name or version");
  }
  const est = b.estimated_bytes;
  return {
    info: {
      protocol: PROTOCOL_VERSION,
      name: clean(b.name, 100),
      version: clean(b.version, 100),
      holds: typeof b.holds === "string" ? clean(b.holds, 300) : "",
      estimated_bytes: Number.isSafeInteger(est) && (est as number) >= 0 ? (est as number) : null,
      prepare: b.prepare === true,
      restore: b.restore === true,
    },
    cred,
  };
}

/** POST /v1/prepare: the agent quiesces and holds that state until finish or `lease_ms`. */
export async function prepare(
  config: AgentConfig,
  operation: Operation,
  signal: AbortSignal,
): Promise<void> {
  const ms = config.prepare_timeout * 1000;
  // The lease outlives the whole job: the agent resumes by itself if finish never comes.
  const lease = (config.timeout + config.finish_timeout) * 1000;
  await callJson(config, {
    method: "POST",
    path: "/v1/prepare",
    json: { operation, lease_ms: lease },
    timeoutMs: ms,
    signal,
  });
}

/** POST /v1/finish. Never tied to the job's signal: a cancel must not skip it. */
export async function finish(
  config: AgentConfig,
  operation: Operation,
  outcome: Outcome,
): Promise<void> {
  await callJson(config, {
    method: "POST",
    path: "/v1/finish",
    json: { operation, outcome },
    timeoutMs: config.finish_timeout * 1000,
  });
}
