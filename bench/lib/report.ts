/**
 * Rendering results: an aligned table for the terminal and the same rows as Markdown for
 * bench/README.md. Numbers are never judged here; the target is printed next to
 * the measured ratio and the reader compares.
 */
import type { CaseResult, SideResult } from "./measure.js";

function mb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(bytes >= 1e8 ? 0 : 1)} MB`;
}

function side(r: CaseResult, s: SideResult | undefined): string {
  if (s === undefined) return "-";
  if (r.metric === "seconds") {
    const rate = r.dataBytes === undefined ? "" : ` (${mb(r.dataBytes / s.median)}/s)`;
    return `${s.median.toFixed(s.median < 10 ? 3 : 2)} s${rate}`;
  }
  return mb(s.median);
}

function ratio(r: CaseResult): string {
  if (r.ratio === undefined) return "-";
  const f = (x: number) => x.toFixed(2);
  return `${f(r.ratio.median)} [${f(r.ratio.min)}–${f(r.ratio.max)}]`;
}

function shortTarget(r: CaseResult): string {
  if (r.targetValue === undefined) return r.target;
  if (r.metric === "peak-rss") return `< ${mb(r.targetValue)}`;
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
  return out.join("\n");
}
