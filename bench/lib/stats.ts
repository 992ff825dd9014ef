/**
 * The few statistics the harness reports: medians, and the summary of pairwise ratios.
 * Ratios are computed per pair (A_i, B_i) because neighbouring runs share the machine's
 * state at that moment; the median of those ratios is steadier than a ratio of medians
 * when the machine drifts during a run.
 */

export function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 === 1
    ? (s[mid] as number)
    : ((s[mid - 1] as number) + (s[mid] as number)) / 2;
}

export interface RatioSummary {
  median: number;
  min: number;
  max: number;
  /** Every pairwise ratio, in run order. */
  values: number[];
}

export function summariseRatios(values: readonly number[]): RatioSummary {
  return {
    median: median(values),
    min: values.length === 0 ? Number.NaN : Math.min(...values),
    max: values.length === 0 ? Number.NaN : Math.max(...values),
    values: [...values],
  };
}
