/**
 * Alternating measurement: one warm-up pair (not recorded; it also brings the data into
 * the page cache), then `pairs` pairs of baseline (A) and Ferry (B), A B A B …, so that
 * slow drifts of a shared machine hit both sides alike. Each side may have untimed
 * `before`/`after` steps (emptying a target directory, `sync`, …).
 */
import { median, type RatioSummary, summariseRatios } from "./stats.js";

export interface Side {
  /** The command as a reader would type it, for the report. */
  command: string;
  before?(): Promise<void>;
  /** Runs once and returns the measured value (seconds, or bytes for size metrics). */
  measure(): Promise<number>;
  after?(): Promise<void>;
}

export type Metric = "seconds" | "bytes-added" | "peak-rss";

export interface SideResult {
  command: string;
  samples: number[];
  median: number;
  warmup?: number;
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
  details?: Record<string, unknown>;
}

/** Thrown by a case to be skipped with a printed reason. */
export class SkipCase extends Error {}

export async function alternate(
  baseline: Side,
  ferry: Side | undefined,
  pairs: number,
  say: (line: string) => void,
): Promise<{ baseline: SideResult; ferry?: SideResult; pairs: [number, number | undefined][] }> {
  const once = async (side: Side): Promise<number> => {
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
  say(`  warm-up: baseline ${fmt(wa)}  ferry ${fmt(wb)}`);
  const a: number[] = [];
  const b: number[] = [];
  const out: [number, number | undefined][] = [];
  for (let i = 0; i < pairs; i++) {
    const va = await once(baseline);
    a.push(va);
    const vb = ferry === undefined ? undefined : await once(ferry);
    if (vb !== undefined) b.push(vb);
    out.push([va, vb]);
    say(`  pair ${i + 1}/${pairs}: baseline ${fmt(va)}  ferry ${fmt(vb)}`);
  }
  return {
    baseline: { command: baseline.command, samples: a, median: median(a), warmup: wa },
    ferry:
      ferry === undefined
        ? undefined
        : { command: ferry.command, samples: b, median: median(b), warmup: wb as number },
    pairs: out,
  };
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
