/**
 * `ferry forget`'s keep policies, with restic's semantics (restic's `forget` docs):
 *
 * - snapshots are grouped (here: by host and app) and each group is walked newest first;
 * - `--keep-last n` keeps the n newest; `--keep-hourly/-daily/-weekly/-monthly/-yearly n`
 *   keep the newest snapshot of each of the n most recent hours/days/ISO weeks/months/
 *   years that have snapshots; a snapshot is kept if any rule keeps it;
 * - this is restic 0.14's behaviour (Debian's restic, which test/repo/policy.test.ts's
 *   table was computed with); restic ≥ 0.15 also keeps the oldest snapshot when a rule's
 *   count is not used up, Ferry does not;
 * - a count of -1 means unlimited (as in restic ≥ 0.15; 0.14 removed everything);
 * - `--keep-tag T` keeps every snapshot carrying T (T may be "a,b": all of them);
 * - a policy with no rule at all is refused (it would remove everything).
 *
 * Calendar buckets are taken in UTC (restic uses each snapshot's recorded offset; Ferry
 * records times in UTC).
 */
import { FerryError } from "../core/errors.js";

export interface KeepPolicy {
  last?: number;
  hourly?: number;
  daily?: number;
  weekly?: number;
  monthly?: number;
  yearly?: number;
  /** Each element is a comma-separated list of tags that must all be present. */
  tags?: string[];
}

export interface PolicySnapshot {
  id: string;
  time: string;
  tags: string[];
}

export function isEmptyPolicy(p: KeepPolicy): boolean {
  return (
    !p.last && !p.hourly && !p.daily && !p.weekly && !p.monthly && !p.yearly && !p.tags?.length
  );
}

function isoWeek(d: Date): number {
  // ISO 8601: the week with the year's first Thursday is week 1.
  const t = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  const day = t.getUTCDay() || 7;
  t.setUTCDate(t.getUTCDate() + 4 - day);
  const yearStart = Date.UTC(t.getUTCFullYear(), 0, 1);
  const week = Math.ceil(((t.getTime() - yearStart) / 86400000 + 1) / 7);
  return t.getUTCFullYear() * 100 + week;
}

type Bucker = (d: Date, nr: number) => number;

const BUCKERS: [keyof KeepPolicy, Bucker, string][] = [
  ["last", (_d, nr) => nr, "last snapshot"],
  [
    "hourly",
    (d) =>
      d.getUTCFullYear() * 1000000 +
      (d.getUTCMonth() + 1) * 10000 +
      d.getUTCDate() * 100 +
      d.getUTCHours(),
    "hourly snapshot",
  ],
  [
    "daily",
    (d) => d.getUTCFullYear() * 10000 + (d.getUTCMonth() + 1) * 100 + d.getUTCDate(),
    "daily snapshot",
  ],
  ["weekly", isoWeek, "weekly snapshot"],
  ["monthly", (d) => d.getUTCFullYear() * 100 + d.getUTCMonth() + 1, "monthly snapshot"],
  ["yearly", (d) => d.getUTCFullYear(), "yearly snapshot"],
];

export interface PolicyResult<T> {
  keep: { snapshot: T; reasons: string[] }[];
  remove: T[];
}

/** Applies a policy to one group of snapshots. */
export function applyPolicy<T extends PolicySnapshot>(list: T[], p: KeepPolicy): PolicyResult<T> {
  if (isEmptyPolicy(p)) {
    throw new FerryError(
      "BAD_REQUEST",
      "no keep policy given: forget needs at least one --keep-* option (it would remove everything)",
    );
  }
  for (const [k] of BUCKERS) {
    const v = p[k];
    if (v !== undefined && (!Number.isInteger(v) || (v as number) < -1)) {
      throw new FerryError("BAD_REQUEST", `--keep-${k} must be a whole number (or -1 for all)`);
    }
  }
  // Newest first; stable for equal times.
  const sorted = list
    .map((s, i) => ({ s, i }))
    .sort((a, b) => {
      const ta = Date.parse(a.s.time);
      const tb = Date.parse(b.s.time);
      return ta !== tb ? tb - ta : a.i - b.i;
    })
    .map((x) => x.s);
  const buckets = BUCKERS.map(([k, bucker, reason]) => ({
    count: (p[k] as number | undefined) ?? 0,
    bucker,
    last: -1,
    reason,
  }));
  const result: PolicyResult<T> = { keep: [], remove: [] };
  sorted.forEach((cur, nr) => {
    const reasons: string[] = [];
    for (const tl of p.tags ?? []) {
      const want = tl.split(",").filter((t) => t !== "");
      if (want.length > 0 && want.every((t) => cur.tags.includes(t)))
        reasons.push(`has tags ${tl}`);
    }
    const d = new Date(cur.time);
    for (const b of buckets) {
      if (b.count > 0 || b.count === -1) {
        const val = b.bucker(d, nr);
        if (val !== b.last) {
          reasons.push(b.reason);
          b.last = val;
          if (b.count > 0) b.count--;
        }
      }
    }
    if (reasons.length > 0) result.keep.push({ snapshot: cur, reasons });
    else result.remove.push(cur);
  });
  return result;
}
