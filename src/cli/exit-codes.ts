/**
 * Exit codes of `ferry` and `ferryd`, the one place they are defined (documented in the
 * README). Scripts should treat any code they do not know as a failure.
 */
import { ERRORS, type ExitClass, isErrorCode } from "../api/errors.js";
import { FerryError } from "../core/errors.js";

export const EXIT = {
  OK: 0,
  FAILURE: 1,
  USAGE: 2,
  REFUSED: 3,
  UNREACHABLE: 4,
  INTERRUPTED: 130,
} as const;

const BY_CLASS: Record<ExitClass, number> = {
  failure: EXIT.FAILURE,
  usage: EXIT.USAGE,
  refused: EXIT.REFUSED,
  unreachable: EXIT.UNREACHABLE,
};

export function exitCodeFor(err: unknown): number {
  if (err instanceof UsageError) return EXIT.USAGE;
  if (err instanceof FerryError && isErrorCode(err.code)) return BY_CLASS[ERRORS[err.code].exit];
  return EXIT.FAILURE;
}

/** Wrong words on the command line. */
export class UsageError extends Error {
  override name = "UsageError";
}
