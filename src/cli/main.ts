/**
 * Shared entry-point behaviour of both programs: one line per error on stderr (never a
 * stack trace unless FERRY_DEBUG is set), and the catalogued exit code.
 */
import { FerryError } from "../core/errors.js";
import { EXIT, exitCodeFor, UsageError } from "./exit-codes.js";

export function printError(program: string, err: unknown): void {
  if (process.env.FERRY_DEBUG) console.error(err);
  if (err instanceof FerryError) {
    process.stderr.write(`${program}: ${err.message} [${err.code}]\n`);
  } else if (err instanceof UsageError) {
    process.stderr.write(`${program}: ${err.message}\nTry '${program} --help'.\n`);
  } else {
    process.stderr.write(`${program}: ${err instanceof Error ? err.message : String(err)}\n`);
  }
}

export function runMain(program: string, main: () => Promise<number>): void {
  main().then(
    (code) => {
      process.exitCode = code;
    },
    (err) => {
      printError(program, err);
      process.exitCode = exitCodeFor(err);
    },
  );
}

export { EXIT };
