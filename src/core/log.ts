/**
 * Structured logging: JSON lines on stderr (journald and `docker logs` keep them), written
 * synchronously so the last lines before a crash are not lost.
 */
import { type Logger, pino } from "pino";

export type { Logger };

export function createLogger(name: string, level = process.env.FERRY_LOG_LEVEL ?? "info"): Logger {
  return pino(
    {
      name,
      level,
      base: { pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
    },
    pino.destination({ dest: 2, sync: true }),
  );
}
