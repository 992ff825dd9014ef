import { ERRORS, type ErrorCode } from "../api/errors.js";

/**
 * The base of every error Ferry raises on purpose. `code` is stable (users' scripts match
 * on it); `message` says what happened and what to do; `cause` keeps the underlying error
 * for the log, never for the wire.
 */
export class FerryError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "FerryError";
    this.code = code;
  }

  get status(): number {
    return ERRORS[this.code].status;
  }
}

/** Any thrown value as a FerryError; unknown errors become INTERNAL with a neutral message. */
export function toFerryError(err: unknown): FerryError {
  if (err instanceof FerryError) return err;
  return new FerryError("INTERNAL", "internal error (see ferryd's log)", { cause: err });
}

/** A message for logs: the error's text, with its cause chain. */
export function describeError(err: unknown): string {
  const parts: string[] = [];
  let e: unknown = err;
  for (let i = 0; i < 5 && e !== undefined && e !== null; i++) {
    parts.push(e instanceof Error ? e.message : String(e));
    e = e instanceof Error ? e.cause : undefined;
  }
  return parts.join(": ");
}
