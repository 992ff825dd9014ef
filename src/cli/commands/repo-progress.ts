/**
 * The repository commands' progress line on a terminal (stderr only, and only when it is
 * a terminal): the current application, bytes, rate and, when the total is known or can
 * be estimated (a restore knows its archive's size; a backup guesses from the app's
 * previous snapshot), the ETA.
 */
import { formatBytes, StatusLine } from "../progress.js";

function clock(secs: number): string {
  const s = Math.max(0, Math.round(secs));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return h > 0 ? `${h}:${String(m).padStart(2, "0")}:${ss}` : `${m}:${ss}`;
}

export function progressLine(
  label: string,
  bytes: number,
  secs: number,
  total?: number,
  extra?: string,
): string {
  const rate = secs > 0 ? bytes / secs : 0;
  let line = `${label}: ${formatBytes(bytes)}`;
  if (total !== undefined && total > 0) {
    line += ` of ${total < bytes ? "~" : ""}${formatBytes(Math.max(total, bytes))}`;
  }
  line += `, ${formatBytes(rate)}/s`;
  if (extra) line += `, ${extra}`;
  if (total !== undefined && total > bytes && rate > 0)
    line += `, ETA ${clock((total - bytes) / rate)}`;
  return line;
}

export class RepoProgress extends StatusLine {
  constructor(
    private readonly label: string,
    private readonly total?: number,
    enabled = process.stderr.isTTY === true,
  ) {
    super(enabled, 250);
  }

  update(bytes: number, extra?: string): void {
    this.show((secs) => progressLine(this.label, bytes, secs, this.total, extra));
  }
}
