/**
 * Log priorities for journald.
 *
 * systemd connects a service's stderr to the journal and says so in `JOURNAL_STREAM`
 * (`DEVICE:INODE` of that stream). Without more, every line is stored at the unit's
 * default priority (info), so `journalctl -p warning` would never show a failed backup.
 * journald reads a syslog priority prefix, `<N>`, at the start of each line
 * (SyslogLevelPrefix=, on by default): `<3>` error, `<4>` warning, `<6>` info, `<7>` debug.
 *
 * Following systemd.exec(5), the prefixes are written only when stderr IS that stream (its
 * device and inode equal JOURNAL_STREAM's): a program started from a service but with
 * stderr redirected to a file or a pipe inherits the variable and must not prefix.
 *
 * This module imports nothing but Node's built-ins.
 */
import { fstatSync } from "node:fs";

/** syslog priorities (RFC 5424 severities) by pino level number. */
export const SYSLOG = { crit: 2, err: 3, warning: 4, notice: 5, info: 6, debug: 7 } as const;

/** Whether fd 2 is the journal stream systemd announced in JOURNAL_STREAM. */
export function stderrIsJournal(env: NodeJS.ProcessEnv = process.env): boolean {
  const m = /^(\d+):(\d+)$/.exec(env.JOURNAL_STREAM ?? "");
  if (m === null) return false;
  try {
    const st = fstatSync(2, { bigint: true });
    return st.dev === BigInt(m[1] as string) && st.ino === BigInt(m[2] as string);
  } catch {
    return false;
  }
}

/**
 * From now on, every line written to `process.stderr` starts with a priority: one write is
 * one message, so all its lines get the priority `classify` gives its first line (a
 * multi-line error stays an error); a write that continues an unfinished line keeps that
 * line's priority.
 */
export function prefixStderrLines(classify: (firstLine: string) => number): void {
  const stream = process.stderr;
  const write = stream.write.bind(stream) as (chunk: unknown, ...rest: unknown[]) => boolean;
  let atLineStart = true;
  let priority: number = SYSLOG.info;
  stream.write = ((chunk: unknown, ...rest: unknown[]) => {
    const text =
      typeof chunk === "string"
        ? chunk
        : chunk instanceof Uint8Array
          ? Buffer.from(chunk).toString("utf8")
          : String(chunk);
    if (text === "") return write(text, ...rest);
    if (atLineStart) priority = classify(text.split("\n", 1)[0] as string);
    let out = "";
    for (const piece of text.split(/(?<=\n)/)) {
      out += atLineStart ? `<${priority}>${piece}` : piece;
      atLineStart = piece.endsWith("\n");
    }
    return write(out, ...rest);
  }) as typeof stream.write;
}
