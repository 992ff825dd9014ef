/**
 * Structured logging: JSON lines on stderr (journald and `docker logs` keep them), written
 * synchronously so the last lines before a crash are not lost.
 *
 * When stderr is the journal (src/core/journal-stream.ts), each line starts with its syslog
 * priority, `<N>`, so journald files warnings and errors at their own levels
 * (`journalctl -p warning` shows them): fatal `<2>`, error `<3>`, warn `<4>`, info `<6>`,
 * debug and trace `<7>`. The JSON after the prefix is unchanged.
 */
import { type DestinationStream, type Level, type Logger, pino } from "pino";
import { SYSLOG, stderrIsJournal } from "./journal-stream.js";

export type { Logger };

/** pino level → syslog priority. */
const PRIORITIES: readonly [Level, number][] = [
  ["trace", SYSLOG.debug],
  ["info", SYSLOG.info],
  ["warn", SYSLOG.warning],
  ["error", SYSLOG.err],
  ["fatal", SYSLOG.crit],
];

export function createLogger(
  name: string,
  level = process.env.FERRY_LOG_LEVEL ?? "info",
  journal = stderrIsJournal(),
): Logger {
  const dest = pino.destination({ dest: 2, sync: true });
  const options = {
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  if (!journal) return pino(options, dest);
  // One stream per priority; `dedupe` hands each line to the highest level it reaches only.
  const streams = PRIORITIES.map(([lvl, prio]) => ({
    level: lvl,
    stream: { write: (line: string) => dest.write(`<${prio}>${line}`) } as DestinationStream,
  }));
  return pino(options, pino.multistream(streams, { dedupe: true }));
}
