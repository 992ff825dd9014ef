/**
 * Rendering results: an aligned table for the terminal and the same rows as Markdown for
 * bench/README.md. Numbers are never judged here; the target is printed next to
 * the measured ratio and the reader compares.
 */
import type { CaseResult, SideResult } from "./measure.js";
import type { UsageSummary } from "./usage.js";

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(bytes >= 1e8 ? 0 : 1)} MB`;
}

function mib(bytes: number): string {
  return `${(bytes / 2 ** 20).toFixed(1)} MiB`;
}

/** Peak-RSS figures in the unit of their goal (the client's is in MiB, ferryd's in MB). */
function rss(r: CaseResult, bytes: number): string {
  return r.displayUnit === "MiB" ? mib(bytes) : mb(bytes);
}

function side(r: CaseResult, s: SideResult | undefined): string {
  if (s === undefined) return "-";
  if (r.metric === "seconds") {
    const rate = r.dataBytes === undefined ? "" : ` (${mb(r.dataBytes / s.median)}/s)`;
    return `${s.median.toFixed(s.median < 10 ? 3 : 2)} s${rate}`;
  }
  return r.metric === "peak-rss" ? rss(r, s.median) : mb(s.median);
}

function ratio(r: CaseResult): string {
  if (r.ratio === undefined) return "-";
  const f = (x: number) => x.toFixed(2);
  return `${f(r.ratio.median)} [${f(r.ratio.min)}–${f(r.ratio.max)}]`;
}

function shortTarget(r: CaseResult): string {
  if (r.targetValue === undefined) return r.target;
  // The case's own words (it names its unit, and saved results keep their old targets).
  if (r.metric === "peak-rss") return r.target;
  return `${r.targetHigherIsBetter ? "≥" : "≤"} ${r.targetValue.toFixed(1)}`;
}

export const HEADER = [
  "case",
  "baseline (median)",
  "Ferry (median)",
  "ratio median [min–max]",
  "target",
];

export function rows(results: readonly CaseResult[]): string[][] {
  return results.map((r) => {
    if (r.status === "skipped" || r.status === "failed")
      return [r.name, `${r.status}: ${r.reason ?? ""}`];
    const note = r.status === "baseline-only" ? " (baseline only)" : "";
    return [r.name, side(r, r.baseline) + note, side(r, r.ferry), ratio(r), shortTarget(r)];
  });
}

export function terminalTable(results: readonly CaseResult[]): string {
  const all = [HEADER, ...rows(results)];
  const widths = HEADER.map((_, i) =>
    Math.max(
      ...all
        .filter((row) => i === 0 || row.length === HEADER.length)
        .map((row) => (row[i] ?? "").length),
    ),
  );
  return all
    .map((row) =>
      row.length === HEADER.length
        ? row
            .map((cell, i) => cell.padEnd(widths[i] as number))
            .join("  ")
            .trimEnd()
        : `${(row[0] as string).padEnd(widths[0] as number)}  ${row[1]}`,
    )
    .join("\n");
}

export function markdownTable(results: readonly CaseResult[]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  const out = [line(HEADER), line(HEADER.map(() => "---"))];
  for (const row of rows(results)) {
    out.push(
      line(row.length === HEADER.length ? row : [row[0] as string, row[1] as string, "", "", ""]),
    );
  }
  const usage = usageRows(results);
  if (usage.length > 0) {
    out.push("", USAGE_NOTE, "", line(USAGE_HEADER), line(USAGE_HEADER.map(() => "---")));
    for (const row of usage) out.push(line(row));
  }
  return out.join("\n");
}

export const USAGE_NOTE =
  "Where the time goes, per process: median CPU seconds per sample (user + system), and the " +
  "highest peak RSS of any measured sample (goals: ferry ≤ 64 MiB during export, ferryd ≤ 128 MB).";

export const USAGE_HEADER = [
  "case",
  "ferry CPU s (user+sys)",
  "ferry peak RSS",
  "ferryd CPU s (user+sys)",
  "ferryd peak RSS",
  "baseline CPU s (user+sys)",
];

function cpu(u: UsageSummary | undefined): string {
  if (u === undefined) return "-";
  const helpers =
    u.childCpuSeconds !== undefined && u.childCpuSeconds > 0
      ? ` (helpers ${u.childCpuSeconds.toFixed(2)})`
      : "";
  return `${u.userSeconds.toFixed(2)}+${u.systemSeconds.toFixed(2)}${helpers}`;
}

/** One row per case that recorded usage: the compact "where the time goes" summary. */
export function usageRows(results: readonly CaseResult[]): string[][] {
  return results
    .filter((r) => r.usage !== undefined)
    .map((r) => {
      const u = r.usage ?? {};
      return [
        r.name,
        cpu(u.ferry),
        u.ferry === undefined ? "-" : mib(u.ferry.peakRssBytes),
        cpu(u.ferryd),
        u.ferryd === undefined ? "-" : mb(u.ferryd.peakRssBytes),
        cpu(u.baseline),
      ];
    });
}

/** The usage summary as aligned text, or "" when no case recorded any. */
export function usageTable(results: readonly CaseResult[]): string {
  const body = usageRows(results);
  if (body.length === 0) return "";
  const all = [USAGE_HEADER, ...body];
  const widths = USAGE_HEADER.map((_, i) => Math.max(...all.map((row) => (row[i] ?? "").length)));
  const text = all.map((row) =>
    row
      .map((cell, i) => cell.padEnd(widths[i] as number))
      .join("  ")
      .trimEnd(),
  );
  return [USAGE_NOTE, ...text].join("\n");
}
