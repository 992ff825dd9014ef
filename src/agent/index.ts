/**
 * `ferry/agent`: let an application answer for itself when Ferry backs it up or restores
 * it. The application serves the agent protocol (docs/agent-protocol.md) on its own Unix
 * socket; ferryd's `agent` driver connects to it, checks that it runs as the configured
 * owner, and wraps its payload into a Ferry archive.
 *
 * ```ts
 * import { createAgent } from "ferry/agent";
 *
 * const agent = createAgent({
 *   socket: "/run/notes/agent.sock",
 *   info: { name: "notes", version: "1.0.0", holds: "notes as JSON files" },
 *   prepare: async () => store.pauseWrites(),
 *   finish: async () => store.resumeWrites(),
 *   backup: async (out) => out.addDirectory("notes", store.dir),
 *   restore: async (payload) => {
 *     await payload.extractTo(`${store.dir}.new`);
 *     await store.swapIn(`${store.dir}.new`);
 *   },
 * });
 * await agent.listen();
 * ```
 *
 * @packageDocumentation
 */

export { createAgent } from "./agent.js";
export type { BackupWriter, EntryOptions } from "./backup-writer.js";
export { AgentError, type AgentErrorCode } from "./errors.js";
export type {
  Agent,
  AgentInfo,
  AgentOptions,
  FinishContext,
  Operation,
  OperationContext,
  PrepareContext,
} from "./options.js";
export type { PayloadLimits } from "./protocol.js";
export { PROTOCOL_VERSION } from "./protocol.js";
export type { RestoreEntry, RestorePayload } from "./restore-payload.js";
