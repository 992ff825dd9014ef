/**
 * Where a sample's time and memory go, per process, recorded for every sample:
 *
 * - `ferry` (and a baseline command): GNU time (`/usr/bin/time -o FILE -f …`) wrapped
 *   around exactly that command, so the figures are the kernel's rusage of it and of every
 *   process it waited for (for `ferry`, its own process: setpriv execs node in place);
 *   `ru_maxrss` is the largest resident set any of them reached. A pipeline's other
 *   stages (`| cat`) are outside the wrapper and not counted.
 * - `ferryd`: /proc/PID/stat (utime + stime, all its threads; cutime + cstime for helper
 *   processes it reaped, e.g. pg_dump) read just before and just after the sample, and
 *   VmHWM from /proc/PID/status after it, reset to the current resident set before the
 *   sample by writing "5" to /proc/PID/clear_refs. So ferryd's figures belong to exactly
 *   that sample, not to the warm-up or the samples before it.
 */
import { execFileSync } from "node:child_process";
import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { median } from "./stats.js";

/** GNU time, which every sample's `ferry` and baseline run under. */
export const GNU_TIME = "/usr/bin/time";

export interface ProcessUsage {
  userSeconds: number;
  systemSeconds: number;
  /** Peak resident set size in bytes (ru_maxrss; VmHWM for ferryd). */
  peakRssBytes: number;
}

export interface FerrydUsage extends ProcessUsage {
  /** CPU of helper processes ferryd started and reaped during the sample (cutime, cstime). */
  childUserSeconds: number;
  childSystemSeconds: number;
  /** "sample": VmHWM was reset before the sample; "process": the peak since ferryd started. */
  peakRssScope: "sample" | "process";
}

/** The usage of one sample: whichever processes it involved. */
export interface SampleUsage {
  ferry?: ProcessUsage;
  ferryd?: FerrydUsage;
  /** The baseline command and every process it waited for (tar, cat, rm, sync …). */
  baseline?: ProcessUsage;
}

/** argv that runs `argv` under GNU time, which writes user, system and max RSS to `file`. */
export function timed(file: string, argv: string[]): string[] {
  return [GNU_TIME, "-o", file, "-f", "ferry-bench-usage %U %S %M", ...argv];
}

/** Reads (and removes) what GNU time wrote for `timed(file, …)`. */
export function readTimed(file: string): ProcessUsage {
  const text = readFileSync(file, "utf8");
  rmSync(file, { force: true });
  // GNU time puts "Command exited with non-zero status N" before the line when it fails.
  const m = /^ferry-bench-usage (\d+(?:\.\d+)?) (\d+(?:\.\d+)?) (\d+)$/m.exec(text);
  if (m === null) throw new Error(`unexpected output of ${GNU_TIME} in ${file}: ${text.trim()}`);
  return {
    userSeconds: Number(m[1]),
    systemSeconds: Number(m[2]),
    peakRssBytes: Number(m[3]) * 1024,
  };
}

/** Clock ticks per second of /proc/PID/stat's times (USER_HZ). */
let userHz: number | undefined;
function ticksPerSecond(): number {
  if (userHz === undefined) {
    const n = Number(execFileSync("getconf", ["CLK_TCK"]).toString().trim());
    userHz = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return userHz;
}

interface CpuTimes {
  user: number;
  system: number;
  childUser: number;
  childSystem: number;
}

/** utime, stime, cutime, cstime of a process, in seconds. */
export function cpuTimes(pid: number): CpuTimes {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  // Field 2 (comm) is in parentheses and may contain spaces or ')': cut after the last ')'.
  const rest = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  // rest[0] is field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
  const hz = ticksPerSecond();
  const field = (n: number) => Number(rest[n - 3]) / hz;
  return { user: field(14), system: field(15), childUser: field(16), childSystem: field(17) };
}

/** VmHWM (peak resident set) of a process, in bytes. */
export function peakRss(pid: number): number {
  const m = /^VmHWM:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (m === null) throw new Error(`no VmHWM in /proc/${pid}/status`);
  return Number(m[1]) * 1024;
}

/** Resets VmHWM to the current resident set (Linux ≥ 4.0; needs to own the process or root). */
export function resetPeakRss(pid: number): void {
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
}

/**
 * Brackets one sample of a long-running process: call before the sample, then call the
 * returned function after it. With `resetPeak: false` the peak is the process's lifetime
 * peak (for a ferryd started for just this sample).
 */
export function processSample(pid: number, resetPeak = true): () => FerrydUsage {
  if (resetPeak) resetPeakRss(pid);
  const t0 = cpuTimes(pid);
  return () => {
    const t1 = cpuTimes(pid);
    return {
      userSeconds: round2(t1.user - t0.user),
      systemSeconds: round2(t1.system - t0.system),
      childUserSeconds: round2(t1.childUser - t0.childUser),
      childSystemSeconds: round2(t1.childSystem - t0.childSystem),
      peakRssBytes: peakRss(pid),
      peakRssScope: resetPeak ? "sample" : "process",
    };
  };
}

/** One process's figures over a case's measured samples. */
export interface UsageSummary {
  /** Medians over the samples of user, system and user + system CPU seconds. */
  userSeconds: number;
  systemSeconds: number;
  cpuSeconds: number;
  /** The highest peak RSS of any sample, and the median of the samples' peaks. */
  peakRssBytes: number;
  medianPeakRssBytes: number;
  /** ferryd only: median CPU seconds of the helpers it ran (user + system). */
  childCpuSeconds?: number;
  samples: number;
}

export type Role = keyof SampleUsage;

/** CPU seconds come in hundredths (USER_HZ, GNU time's %U/%S); sums are rounded back. */
function round2(x: number): number {
  return Math.round(x * 100) / 100;
}

function summariseRole(usages: (SampleUsage | undefined)[], role: Role): UsageSummary | undefined {
  const got = usages
    .map((u) => u?.[role])
    .filter((u): u is ProcessUsage | FerrydUsage => u !== undefined);
  if (got.length === 0) return undefined;
  const summary: UsageSummary = {
    userSeconds: median(got.map((u) => u.userSeconds)),
    systemSeconds: median(got.map((u) => u.systemSeconds)),
    cpuSeconds: round2(median(got.map((u) => u.userSeconds + u.systemSeconds))),
    peakRssBytes: Math.max(...got.map((u) => u.peakRssBytes)),
    medianPeakRssBytes: median(got.map((u) => u.peakRssBytes)),
    samples: got.length,
  };
  if (role === "ferryd") {
    summary.childCpuSeconds = round2(
      median(
        got.map((u) => {
          const d = u as FerrydUsage;
          return d.childUserSeconds + d.childSystemSeconds;
        }),
      ),
    );
  }
  return summary;
}

/** Per process, the medians and peaks over a case's measured samples (warm-up excluded). */
export function summariseUsage(
  ...lists: ((SampleUsage | undefined)[] | undefined)[]
): Partial<Record<Role, UsageSummary>> | undefined {
  const all = lists.flatMap((l) => l ?? []);
  const out: Partial<Record<Role, UsageSummary>> = {};
  for (const role of ["ferry", "ferryd", "baseline"] as const) {
    const s = summariseRole(all, role);
    if (s !== undefined) out[role] = s;
  }
  return Object.keys(out).length === 0 ? undefined : out;
}
