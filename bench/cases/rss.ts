/**
 * ferryd-rss: the peak resident set (VmHWM in /proc/PID/status) of a freshly started
 * ferryd after it served one `ferry export` of the big tree. One fresh ferryd per sample,
 * so every sample is the peak of exactly one export. No baseline: the target is absolute.
 */
import { appToml, ferryArgv, startFerryd } from "../lib/ferryd.js";
import { SkipCase } from "../lib/measure.js";
import { run, shell } from "../lib/proc.js";
import { median } from "../lib/stats.js";
import type { BenchCase, CaseContext, CaseOutcome } from "./types.js";

export const rssCase: BenchCase = {
  name: "ferryd-rss",
  description: "peak RSS (VmHWM) of a fresh ferryd serving one export of the big tree",
  target: "< 200 MB",
  targetValue: 200e6,
  targetHigherIsBetter: false,
  async run(ctx: CaseContext): Promise<CaseOutcome> {
    const { env } = ctx;
    if (!ctx.ferry.commands.includes("export"))
      throw new SkipCase("ferry export is not available (not in `ferry --help`)");
    const data = await env.tree("big");
    const samples: number[] = [];
    const idle: number[] = [];
    for (let i = 0; i < ctx.pairs; i++) {
      const daemon = await startFerryd(env, "rss", [
        appToml("big", { driver: "files", paths: [data.root], owner: env.appUser.name }),
      ]);
      try {
        idle.push(daemon.peakRss());
        await run(
          shell('"$@" | cat >/dev/null', ...ferryArgv(env, daemon.socket, ["export", "big"])),
        );
        samples.push(daemon.peakRss());
      } finally {
        await daemon.stop();
      }
      ctx.say(
        `  sample ${i + 1}/${ctx.pairs}: ${((samples.at(-1) as number) / 1e6).toFixed(1)} MB`,
      );
    }
    return {
      status: "ran",
      metric: "peak-rss",
      dataBytes: data.bytes,
      ferry: { command: "ferry export big | cat >/dev/null", samples, median: median(samples) },
      details: { peakRssBeforeExportBytes: idle },
    };
  },
};
