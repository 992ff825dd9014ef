/**
 * Shared entry-point behaviour of both programs: one line per error on stderr (never a
 * stack trace unless FERRY_DEBUG is set), and the catalogued exit code.
 */
import { FerryError } from "../core/errors.js";
import { prefixStderrLines, SYSLOG, stderrIsJournal } from "../core/journal-stream.js";
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

/**
 * The syslog priority of a message `program` writes to stderr, by its first line: every
 * error and warning it prints starts with its name (`ferry: …`, `ferry: warning: …`,
 * `ferry: APP: warning: …`); `note:` lines are notices; summaries and progress are info.
 */
export function stderrPriority(program: string, line: string): number {
  if (line.startsWith(`${program}: `)) {
    return /^[^:]+: (?:[^: ]+: )?warning: /.test(line) ? SYSLOG.warning : SYSLOG.err;
  }
  if (line.startsWith("note: ")) return SYSLOG.notice;
  return SYSLOG.info;
}

export function runMain(program: string, main: () => Promise<number>): void {
  // Under systemd with stderr in the journal, each message carries its priority
  // (src/core/journal-stream.ts), so a failed nightly backup is seen by journalctl -p err.
  if (stderrIsJournal()) prefixStderrLines((line) => stderrPriority(program, line));
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
