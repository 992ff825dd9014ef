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

export class Progress {
  private last = 0;
  private shown = false;
  private readonly started = Date.now();
  constructor(
    private readonly label: string,
    private readonly enabled = process.stderr.isTTY === true,
  ) {}

  update(bytes: number, entries?: number): void {
    if (!this.enabled) return;
    const now = Date.now();
    if (now - this.last < 200) return;
    this.last = now;
    const secs = (now - this.started) / 1000;
    const rate = secs > 0 ? bytes / secs : 0;
    const ent = entries === undefined ? "" : `, ${entries} entries`;
    process.stderr.write(
      `\r\x1b[K${this.label}: ${formatBytes(bytes)}${ent}, ${formatBytes(rate)}/s`,
    );
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
