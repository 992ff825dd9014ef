/**
 * import-big, import-small: `ferry import APP -i ARCHIVE` through ferryd against a durable
 * `tar -x` of the very same archive.
 *
 * Setup, untimed: the generated tree is copied (`cp -a`) to the import app's path, and the
 * archive is made by `ferry export` of that app from the very ferryd that then restores it
 * (a restore refuses an archive made for another application or other declared paths).
 *
 * Both sides replace an existing tree and write durably, all of it timed:
 * - baseline: `rm -rf OLD && tar -xf ARCHIVE -C NEW && sync -f NEW`, where OLD is the tree
 *   the previous baseline sample extracted and NEW an empty directory (made untimed);
 * - Ferry: `ferry import APP -i ARCHIVE` into the app's path, which holds the tree the
 *   previous sample restored (the copy, for the first): ferryd extracts into staging,
 *   syncs the filesystem, swaps the staging in and removes the old tree before it answers.
 * After every sample `sync` runs (untimed), so neither side pays for the other's
 * write-back. After every Ferry sample the harness checks that the restore replaced the
 * tree (a marker file put into the old tree before the sample is gone) and that every
 * file and byte arrived: an import that silently did nothing must not pass for a fast one.
 */
import { chownSync, existsSync, mkdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import {
  appToml,
  baselineSample,
  type Ferryd,
  ferryArgv,
  ferrySample,
  startFerryd,
} from "../lib/ferryd.js";
import { treeStats } from "../lib/fs-util.js";
import { alternate, SkipCase, speedRatios } from "../lib/measure.js";
import { run, shell } from "../lib/proc.js";
import { summariseUsage } from "../lib/usage.js";
import type { BenchCase, CaseContext, CaseOutcome } from "./types.js";

/** Put into Ferry's target before each sample; a real restore replaces the whole tree. */
const MARKER = "ferry-bench-old-tree-marker";

export function importCase(tree: "big" | "small"): BenchCase {
  return {
    name: `import-${tree}`,
    description: `restore the ${tree} tree's archive over the previous one: ferry import through ferryd vs rm -rf OLD; tar -xf -C NEW; sync -f NEW`,
    target: "≥ 0.9 of the durable tar -x's throughput",
    targetValue: 0.9,
    targetHigherIsBetter: true,
    async run(ctx: CaseContext): Promise<CaseOutcome> {
      const { env } = ctx;
      const missing = ctx.ferry.commands.includes("import")
        ? undefined
        : "ferry import not implemented yet (not in `ferry --help`)";
      if (missing !== undefined && !env.options.baselineOnly) throw new SkipCase(missing);
      if (!ctx.ferry.commands.includes("export"))
        throw new SkipCase("ferry export (needed to make the archive) is not available");
      const data = await env.tree(tree);
      const work = env.ownedDir(join(env.tmp, "work", `import-${tree}`), env.backupUser, 0o755);
      const archive = join(work, `${tree}.tar`);
      const ferryTarget = join(work, "ferry-target");
      // The baseline's OLD and NEW trade places after every sample.
      let tarOld = join(work, "tar-a");
      let tarNew = join(work, "tar-b");
      const sync = async () => {
        await run(["sync"]);
      };
      await run(["cp", "-a", data.root, ferryTarget]);
      await sync();
      const daemon: Ferryd = await startFerryd(env, `import-${tree}`, [
        appToml(tree, {
          driver: "files",
          paths: [ferryTarget],
          owner: env.appUser.name,
          restore: true,
        }),
      ]);
      let checks = 0;
      try {
        await run(ferryArgv(env, daemon.socket, ["export", tree, "-o", archive]));
        const archiveBytes = statSync(archive).size;
        ctx.say(`  archive: ${(archiveBytes / 1e6).toFixed(1)} MB`);
        const check = () => {
          if (existsSync(join(ferryTarget, MARKER)))
            throw new Error(`ferry import left the old tree in place (${MARKER} is still there)`);
          const got = treeStats(ferryTarget);
          if (got.files !== data.files.length || got.bytes !== data.bytes) {
            throw new Error(
              `ferry import restored ${got.files} files / ${got.bytes} bytes, expected ${data.files.length} / ${data.bytes}`,
            );
          }
          checks++;
        };
        const result = await alternate(
          {
            command: `rm -rf OLD && tar -xf ${tree}.tar -C NEW && sync -f NEW (OLD: the previous sample's tree)`,
            before: async () => {
              rmSync(tarNew, { recursive: true, force: true });
              mkdirSync(tarNew, { mode: 0o700 });
            },
            measure: async () => {
              const sample = await baselineSample(
                env,
                shell(
                  'rm -rf -- "$1" && tar -xf "$2" -C "$3" && sync -f "$3"',
                  tarOld,
                  archive,
                  tarNew,
                ),
              );
              [tarOld, tarNew] = [tarNew, tarOld];
              return sample;
            },
            after: sync,
          },
          missing !== undefined
            ? undefined
            : {
                command: `ferry import ${tree} -i ${tree}.tar (over the previous sample's tree)`,
                before: async () => {
                  const marker = join(ferryTarget, MARKER);
                  writeFileSync(marker, "the tree before this import\n", { mode: 0o600 });
                  if (env.isRoot) chownSync(marker, env.appUser.uid, env.appUser.gid);
                  await sync();
                },
                measure: async () => {
                  const sample = await ferrySample(env, daemon, ["import", tree, "-i", archive]);
                  // Untimed (the sample's time is already taken), and only after a restore
                  // that succeeded: a failed one reports its own error.
                  await sync();
                  check();
                  return sample;
                },
              },
          ctx.pairs,
          ctx.say,
        );
        return {
          status: missing === undefined ? "ran" : "baseline-only",
          reason: missing,
          metric: "seconds",
          dataBytes: data.bytes,
          baseline: result.baseline,
          ferry: result.ferry,
          ratio: speedRatios(result.pairs),
          ratioMeaning:
            "durable tar -x seconds / ferry import seconds per pair (Ferry's throughput relative to tar)",
          details: { files: data.files.length, archiveBytes, restoresChecked: checks },
          usage: summariseUsage(result.baseline.usage, result.ferry?.usage),
        };
      } finally {
        await daemon.stop();
        rmSync(work, { recursive: true, force: true });
      }
    },
  };
}
