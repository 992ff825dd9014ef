/**
 * The memory goals, absolute (no baseline):
 *
 * - ferryd-rss: the peak resident set (VmHWM, /proc/PID/status) of a freshly started ferryd
 *   after it served one `ferry export` of the big tree. One fresh ferryd per sample, never
 *   reset, so every sample is the peak of start-up plus exactly one export.
 * - client-rss: the peak resident set of the `ferry` client (GNU time's maximum RSS of the
 *   process) during `ferry export big | cat` and `ferry export small | cat`, one of each
 *   per sample from one ferryd; the sample is the larger of the two, both are in the
 *   details. (Every other case records ferry's peak too, in its usage summary.)
 */
import type { Tree } from "../lib/data.js";
import { appToml, ferrySample, startFerryd } from "../lib/ferryd.js";
import { SkipCase, sideResult } from "../lib/measure.js";
import { summariseUsage } from "../lib/usage.js";
import type { BenchCase, CaseContext, CaseOutcome } from "./types.js";

const MiB = 2 ** 20;

export const rssCase: BenchCase = {
  name: "ferryd-rss",
  description: "peak RSS (VmHWM) of a fresh ferryd serving one export of the big tree",
  target: "≤ 128 MB",
  targetValue: 128e6,
  targetHigherIsBetter: false,
  async run(ctx: CaseContext): Promise<CaseOutcome> {
    const { env } = ctx;
    if (!ctx.ferry.commands.includes("export"))
      throw new SkipCase("ferry export is not available (not in `ferry --help`)");
    const data = await env.tree("big");
    const samples = [];
    const idle: number[] = [];
    for (let i = 0; i < ctx.pairs; i++) {
      const daemon = await startFerryd(env, "rss", [
        appToml("big", { driver: "files", paths: [data.root], owner: env.appUser.name }),
      ]);
      try {
        idle.push(daemon.peakRss());
        const s = await ferrySample(env, daemon, ["export", "big"], {
          discard: true,
          resetPeak: false,
        });
        samples.push({ value: daemon.peakRss(), usage: s.usage });
      } finally {
        await daemon.stop();
      }
      ctx.say(
        `  sample ${i + 1}/${ctx.pairs}: ferryd ${((samples.at(-1)?.value as number) / 1e6).toFixed(1)} MB`,
      );
    }
    const ferry = sideResult("ferry export big | cat >/dev/null (fresh ferryd)", samples);
    return {
      status: "ran",
      metric: "peak-rss",
      dataBytes: data.bytes,
      ferry,
      details: { peakRssBeforeExportBytes: idle },
      usage: summariseUsage(ferry.usage),
    };
  },
};

export const clientRssCase: BenchCase = {
  name: "client-rss",
  description: "peak RSS of the ferry client during ferry export of the big and the small tree",
  target: "≤ 64 MiB",
  targetValue: 64 * MiB,
  targetHigherIsBetter: false,
  displayUnit: "MiB",
  async run(ctx: CaseContext): Promise<CaseOutcome> {
    const { env } = ctx;
    if (!ctx.ferry.commands.includes("export"))
      throw new SkipCase("ferry export is not available (not in `ferry --help`)");
    const trees: Tree[] = [await env.tree("big"), await env.tree("small")];
    const daemon = await startFerryd(
      env,
      "client-rss",
      trees.map((t) =>
        appToml(t.name, { driver: "files", paths: [t.root], owner: env.appUser.name }),
      ),
    );
    const samples = [];
    const perTree: Record<string, number[]> = { big: [], small: [] };
    try {
      for (let i = 0; i < ctx.pairs; i++) {
        let worst: Awaited<ReturnType<typeof ferrySample>> | undefined;
        for (const t of trees) {
          const s = await ferrySample(env, daemon, ["export", t.name], { discard: true });
          const peak = s.usage?.ferry?.peakRssBytes as number;
          perTree[t.name]?.push(peak);
          if (worst === undefined || peak > (worst.usage?.ferry?.peakRssBytes as number)) worst = s;
        }
        const w = worst as Awaited<ReturnType<typeof ferrySample>>;
        samples.push({ value: w.usage?.ferry?.peakRssBytes as number, usage: w.usage });
        ctx.say(
          `  sample ${i + 1}/${ctx.pairs}: ferry export big ${((perTree.big?.at(-1) as number) / MiB).toFixed(1)} MiB, small ${((perTree.small?.at(-1) as number) / MiB).toFixed(1)} MiB`,
        );
      }
    } finally {
      await daemon.stop();
    }
    const ferry = sideResult(
      "max(peak RSS of ferry export big | cat, of ferry export small | cat)",
      samples,
    );
    return {
      status: "ran",
      metric: "peak-rss",
      dataBytes: trees.reduce((n, t) => n + t.bytes, 0),
      ferry,
      details: {
        bigPeakRssBytes: perTree.big,
        smallPeakRssBytes: perTree.small,
        usageOf: "each sample's usage is that of the export with the larger ferry peak",
      },
      usage: summariseUsage(ferry.usage),
    };
  },
};
