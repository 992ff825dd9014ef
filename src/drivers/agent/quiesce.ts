import { DEFAULT_PAYLOAD_LIMITS, type PayloadLimits } from "../../agent/protocol.js";
import { FerryError } from "../../core/errors.js";
import type { DriverContext } from "../types.js";
import { type AgentInfo, finish, type Operation, type Outcome, prepare } from "./calls.js";
import type { AgentConfig } from "./config.js";

export function limitsOf(config: AgentConfig): PayloadLimits {
  return { ...DEFAULT_PAYLOAD_LIMITS, maxBytes: config.max_bytes, maxEntries: config.max_entries };
}

/** Returned early without an error: the consumer (the client) went away. */
export function outcomeOf(completed: boolean, err: unknown, signal: AbortSignal): Outcome {
  if (completed) return "ok";
  if (signal.aborted || err === undefined) return "cancelled";
  return "error";
}

/**
 * Prepare, when the agent has that step. A prepare that timed out or broke off may still
 * have quiesced the agent, so it is told to resume (a finish without a held prepare is a
 * no-op by the protocol); never an impostor.
 */
export async function startQuiesce(
  config: AgentConfig,
  info: AgentInfo,
  operation: Operation,
  signal: AbortSignal,
): Promise<boolean> {
  if (!info.prepare) return false;
  try {
    await prepare(config, operation, signal);
  } catch (err) {
    if (!(err instanceof FerryError && err.code === "AGENT_IMPOSTOR")) {
      await finish(config, operation, "error").catch(() => {});
    }
    throw err;
  }
  return true;
}

/**
 * Finish, exactly once after a successful prepare, whatever happened between. Its failure
 * after good work is a warning (the data is complete and consistent); after failed work it
 * is appended to that failure.
 */
export async function endQuiesce(
  config: AgentConfig,
  operation: Operation,
  ctx: DriverContext,
  completed: boolean,
  failure: unknown,
): Promise<void> {
  try {
    await finish(config, operation, outcomeOf(completed, failure, ctx.signal));
  } catch (err) {
    const msg = `the agent's finish step failed: ${(err as Error).message}`;
    if (failure instanceof FerryError) failure.message += `; ${msg}`;
    else if (failure === undefined) ctx.warnings.push(msg);
  }
}
