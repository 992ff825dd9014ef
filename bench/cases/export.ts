/**
 * export-big, export-small: `ferry export APP` through a real ferryd (separate processes,
 * the Unix socket, the peer check, the archive verified by the client) against
 * `tar -cf - DIR | cat >/dev/null`. The `| cat` matters: GNU tar does not read file
 * contents at all when its output is /dev/null.
 */
import { appToml, baselineSample, ferrySample, startFerryd } from "../lib/ferryd.js";
import { alternate, SkipCase, speedRatios } from "../lib/measure.js";
import { shell } from "../lib/proc.js";
import { summariseUsage } from "../lib/usage.js";
import type { BenchCase, CaseContext, CaseOutcome } from "./types.js";

export function exportCase(tree: "big" | "small"): BenchCase {
  return {
    name: `export-${tree}`,
    description:
      tree === "big"
        ? "4 files of 256 MiB (2 random, 2 text): ferry export through ferryd vs tar -cf - | cat"
        : "20,000 files of 1–100 KiB in 200 directories: ferry export through ferryd vs tar -cf - | cat",
    target: tree === "big" ? "≥ 0.7 of tar's throughput" : "≥ 0.6 of tar's throughput",
    targetValue: tree === "big" ? 0.7 : 0.6,
    targetHigherIsBetter: true,
    async run(ctx: CaseContext): Promise<CaseOutcome> {
      const { env } = ctx;
      if (!ctx.ferry.commands.includes("export"))
        throw new SkipCase("ferry export is not available (not in `ferry --help`)");
      const data = await env.tree(tree);
      const daemon = await startFerryd(env, `export-${tree}`, [
        appToml(tree, { driver: "files", paths: [data.root], owner: env.appUser.name }),
      ]);
      try {
        const result = await alternate(
          {
            command: `tar -cf - -C ${data.root} . | cat >/dev/null`,
            measure: () =>
              baselineSample(env, shell('tar -cf - -C "$1" . | cat >/dev/null', data.root)),
          },
          {
            command: `ferry export ${tree} | cat >/dev/null`,
            measure: () => ferrySample(env, daemon, ["export", tree], { discard: true }),
          },
          ctx.pairs,
          ctx.say,
        );
        return {
          status: "ran",
          metric: "seconds",
          dataBytes: data.bytes,
          baseline: result.baseline,
          ferry: result.ferry,
          ratio: speedRatios(result.pairs),
          ratioMeaning: "tar seconds / ferry seconds per pair (Ferry's throughput relative to tar)",
          details: { files: data.files.length },
          usage: summariseUsage(result.baseline.usage, result.ferry?.usage),
        };
      } finally {
        await daemon.stop();
      }
    },
  };
}
