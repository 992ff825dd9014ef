/**
 * Alternating measurement: one warm-up pair (not recorded; it also brings the data into
 * the page cache), then `pairs` pairs of baseline (A) and Ferry (B), A B A B …, so that
 * slow drifts of a shared machine hit both sides alike. Each side may have untimed
 * `before`/`after` steps (emptying a target directory, `sync`, …). Every sample carries,
 * beside its value, the CPU seconds and peak RSS of the processes involved (usage.ts).
 */
import { median, type RatioSummary, summariseRatios } from "./stats.js";
import type { Role, SampleUsage, UsageSummary } from "./usage.js";

/** One measurement: the value (seconds, or bytes for size metrics) and where it went. */
export interface Sample {
  value: number;
  usage?: SampleUsage;
}

export interface Side {
  /** The command as a reader would type it, for the report. */
  command: string;
  before?(): Promise<void>;
  /** Runs once and returns the measured value (seconds, or bytes for size metrics). */
  measure(): Promise<Sample>;
  after?(): Promise<void>;
}

export type Metric = "seconds" | "bytes-added" | "peak-rss";

export interface SideResult {
  command: string;
  samples: number[];
  median: number;
  warmup?: number;
  /** Per sample, in the order of `samples`: CPU seconds and peak RSS per process. */
  usage?: (SampleUsage | undefined)[];
  warmupUsage?: SampleUsage;
}

export type CaseStatus = "ran" | "baseline-only" | "skipped" | "failed";

export interface CaseResult {
  name: string;
  description: string;
  status: CaseStatus;
  /** Why the case was skipped or failed, or what is missing for baseline-only. */
  reason?: string;
  metric?: Metric;
  /** Bytes of application data each run handles (for throughput). */
  dataBytes?: number;
  baseline?: SideResult;
  ferry?: SideResult;
  /** Per pair; for "seconds": baseline/ferry (Ferry's throughput relative to the baseline);
   * for "bytes-added": ferry/baseline. */
  ratio?: RatioSummary;
  ratioMeaning?: string;
  target: string;
  /** The target as a number on `ratio` (or on the Ferry median for peak-rss). */
  targetValue?: number;
  targetHigherIsBetter?: boolean;
  /** How peak-rss figures are shown: MB (10⁶ bytes, the default) or MiB. */
  displayUnit?: "MB" | "MiB";
  details?: Record<string, unknown>;
  /** Per process (ferry, ferryd, the baseline command): medians of CPU seconds and the
   * peak RSS over the measured samples of both sides (warm-up excluded). */
  usage?: Partial<Record<Role, UsageSummary>>;
}

/** Thrown by a case to be skipped with a printed reason. */
export class SkipCase extends Error {}

export async function alternate(
  baseline: Side,
  ferry: Side | undefined,
  pairs: number,
  say: (line: string) => void,
): Promise<{ baseline: SideResult; ferry?: SideResult; pairs: [number, number | undefined][] }> {
  const once = async (side: Side): Promise<Sample> => {
    await side.before?.();
    try {
      return await side.measure();
    } finally {
      await side.after?.();
    }
  };
  const fmt = (v: number | undefined) =>
    v === undefined ? "-" : v >= 1000 ? `${(v / 1e6).toFixed(3)} MB` : `${v.toFixed(3)} s`;
  const wa = await once(baseline);
  const wb = ferry === undefined ? undefined : await once(ferry);
  say(`  warm-up: baseline ${fmt(wa.value)}  ferry ${fmt(wb?.value)}${brief(wb)}`);
  const a: Sample[] = [];
  const b: Sample[] = [];
  const out: [number, number | undefined][] = [];
  for (let i = 0; i < pairs; i++) {
    const sa = await once(baseline);
    a.push(sa);
    const sb = ferry === undefined ? undefined : await once(ferry);
    if (sb !== undefined) b.push(sb);
    out.push([sa.value, sb?.value]);
    say(`  pair ${i + 1}/${pairs}: baseline ${fmt(sa.value)}  ferry ${fmt(sb?.value)}${brief(sb)}`);
  }
  return {
    baseline: sideResult(baseline.command, a, wa),
    ferry: ferry === undefined ? undefined : sideResult(ferry.command, b, wb as Sample),
    pairs: out,
  };
}

/** A side's samples as reported: values, their median, and the usage of each. */
export function sideResult(command: string, samples: Sample[], warmup?: Sample): SideResult {
  const values = samples.map((s) => s.value);
  const r: SideResult = { command, samples: values, median: median(values) };
  if (warmup !== undefined) r.warmup = warmup.value;
  if (samples.some((s) => s.usage !== undefined)) r.usage = samples.map((s) => s.usage);
  if (warmup?.usage !== undefined) r.warmupUsage = warmup.usage;
  return r;
}

/** " (ferry 1.2 s CPU, 61 MiB; ferryd 0.9 s CPU, 95 MiB)" for the progress lines. */
function brief(s: Sample | undefined): string {
  const u = s?.usage;
  if (u === undefined) return "";
  const part = (
    name: string,
    p: { userSeconds: number; systemSeconds: number; peakRssBytes: number } | undefined,
  ) =>
    p === undefined
      ? []
      : [
          `${name} ${(p.userSeconds + p.systemSeconds).toFixed(2)} s CPU, ${(p.peakRssBytes / 2 ** 20).toFixed(0)} MiB`,
        ];
  const parts = [...part("ferry", u.ferry), ...part("ferryd", u.ferryd)];
  return parts.length === 0 ? "" : ` (${parts.join("; ")})`;
}

/** The ratio summary for time samples: baseline / ferry per pair (> 1: Ferry faster). */
export function speedRatios(pairs: [number, number | undefined][]): RatioSummary | undefined {
  const r = pairs.filter(([, b]) => b !== undefined).map(([a, b]) => a / (b as number));
  return r.length === 0 ? undefined : summariseRatios(r);
}

/** The ratio summary for size samples: ferry / baseline per pair (< 1: Ferry smaller). */
export function sizeRatios(pairs: [number, number | undefined][]): RatioSummary | undefined {
  const r = pairs.filter(([, b]) => b !== undefined).map(([a, b]) => (b as number) / a);
  return r.length === 0 ? undefined : summariseRatios(r);
}
