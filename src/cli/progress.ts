/**
 * A one-line progress display on stderr, only when stderr is a terminal (scripts and logs
 * get the final summary line alone).
 */
export function formatBytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

/**
 * The shared part of every progress display: throttled redraws of one line on stderr (cut
 * to the terminal's width), only when enabled (stderr is a terminal), and its removal.
 */
export class StatusLine {
  private last = 0;
  private shown = false;
  private readonly started = Date.now();
  constructor(
    private readonly enabled = process.stderr.isTTY === true,
    private readonly everyMs = 200,
  ) {}

  /** Redraws the line (at most every `everyMs`); `line` gets the seconds since the start. */
  protected show(line: (secs: number) => string): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.last < this.everyMs) return;
    this.last = now;
    const text = line((now - this.started) / 1000);
    process.stderr.write(`\r\x1b[K${text.slice(0, (process.stderr.columns || 100) - 1)}`);
    this.shown = true;
  }

  clear(): void {
    if (this.shown) process.stderr.write("\r\x1b[K");
    this.shown = false;
  }

  elapsed(): number {
    return (Date.now() - this.started) / 1000;
  }
}

/** export and import: bytes, entries and rate. */
export class Progress extends StatusLine {
  constructor(
    private readonly label: string,
    enabled = process.stderr.isTTY === true,
  ) {
    super(enabled, 200);
  }

  update(bytes: number, entries?: number): void {
    this.show((secs) => {
      const rate = secs > 0 ? bytes / secs : 0;
      const ent = entries === undefined ? "" : `, ${entries} entries`;
      return `${this.label}: ${formatBytes(bytes)}${ent}, ${formatBytes(rate)}/s`;
    });
  }
}
