/**
 * What a benchmark case is: a name, what it compares, the target, and a `run`
 * that measures (or throws SkipCase with the reason it cannot).
 */
import type { BenchEnv } from "../lib/env.js";
import type { FerryAbilities } from "../lib/ferryd.js";
import type { CaseResult } from "../lib/measure.js";

export interface CaseContext {
  env: BenchEnv;
  ferry: FerryAbilities;
  pairs: number;
  say: (line: string) => void;
}

export type CaseOutcome = Omit<CaseResult, "name" | "description" | "target" | "status"> & {
  status: "ran" | "baseline-only";
};

export interface BenchCase {
  name: string;
  description: string;
  /** The target, in words. */
  target: string;
  targetValue?: number;
  targetHigherIsBetter?: boolean;
  /** How peak-rss figures are shown (default MB). */
  displayUnit?: "MB" | "MiB";
  run(ctx: CaseContext): Promise<CaseOutcome>;
}
