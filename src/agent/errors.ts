/**
 * Errors an agent answers with. A handler may throw an `AgentError` to choose the code and
 * status ferryd sees; any other error becomes `INTERNAL` with a neutral message (its text
 * stays in the application, it is not sent).
 */

/** The error codes of the agent protocol (docs/agent-protocol.md, "Errors"). */
export type AgentErrorCode =
  | "BAD_REQUEST"
  | "NOT_FOUND"
  | "METHOD_NOT_ALLOWED"
  | "UNSUPPORTED_PROTOCOL"
  | "BUSY"
  | "NOT_SUPPORTED"
  | "PAYLOAD_INVALID"
  | "BACKUP_FAILED"
  | "RESTORE_FAILED"
  | "INTERNAL";

const STATUS: Record<AgentErrorCode, number> = {
  BAD_REQUEST: 400,
  NOT_FOUND: 404,
  METHOD_NOT_ALLOWED: 405,
  UNSUPPORTED_PROTOCOL: 400,
  BUSY: 409,
  NOT_SUPPORTED: 501,
  PAYLOAD_INVALID: 422,
  BACKUP_FAILED: 500,
  RESTORE_FAILED: 500,
  INTERNAL: 500,
};

export class AgentError extends Error {
  readonly code: AgentErrorCode;
  constructor(code: AgentErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AgentError";
    this.code = code;
  }

  /** The HTTP status this code is sent with. */
  get status(): number {
    return STATUS[this.code];
  }
}

/** Any thrown value as an AgentError. */
export function toAgentError(err: unknown): AgentError {
  if (err instanceof AgentError) return err;
  return new AgentError("INTERNAL", "the agent failed (see the application's log)", { cause: err });
}
