/**
 * import-big, import-small: `ferry import APP -i ARCHIVE` through ferryd (staging beside
 * the app's declared path, fsync, atomic swap) against `tar -xf ARCHIVE -C EMPTYDIR` of
 * the very same archive. The archive is made once, untimed, by `ferry export` of the
 * generated tree from a ferryd that declares the app with the same name (a restore
 * refuses an archive made for another app).
 *
 * Before every sample the target is emptied and `sync` is run, and after every sample
 * `sync` again, all untimed: so neither side pays for the other's write-back. Note that
 * Ferry fsyncs what it restores (it must, to swap atomically) and tar does not.
 */
import { rmSync, statSync } from "node:fs";
import { join } from "node:path";
import { appToml, type Ferryd, ferryArgv, startFerryd } from "../lib/ferryd.js";
import { treeStats } from "../lib/fs-util.js";
import { alternate, SkipCase, speedRatios } from "../lib/measure.js";
import { run } from "../lib/proc.js";
import type { BenchCase, CaseContext, CaseOutcome } from "./types.js";

export function importCase(tree: "big" | "small"): BenchCase {
  return {
    name: `import-${tree}`,
    description: `restore the ${tree} tree's archive: ferry import through ferryd vs tar -xf into an empty directory`,
    target: "≥ 0.8 of tar -x's throughput",
    targetValue: 0.8,
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
      const source = await startFerryd(env, `import-src-${tree}`, [
        appToml(tree, { driver: "files", paths: [data.root], owner: env.appUser.name }),
      ]);
      try {
        await run(ferryArgv(env, source.socket, ["export", tree, "-o", archive]));
      } finally {
        await source.stop();
      }
      const archiveBytes = statSync(archive).size;
      ctx.say(`  archive: ${(archiveBytes / 1e6).toFixed(1)} MB`);

      const ferryTarget = join(work, "ferry-target");
      const tarTarget = join(work, "tar-target");
      const empty = async (dir: string) => {
        rmSync(dir, { recursive: true, force: true });
        env.ownedDir(dir, env.appUser, 0o700);
        await run(["sync"]);
      };
      const sync = async () => {
        await run(["sync"]);
      };
      let daemon: Ferryd | undefined;
      if (missing === undefined) {
        env.ownedDir(ferryTarget, env.appUser, 0o700);
        daemon = await startFerryd(env, `import-${tree}`, [
          appToml(tree, {
            driver: "files",
            paths: [ferryTarget],
            owner: env.appUser.name,
            restore: true,
          }),
        ]);
      }
      let checked = false;
      try {
        const result = await alternate(
          {
            command: `tar -xf ${tree}.tar -C EMPTYDIR`,
            before: () => empty(tarTarget),
            measure: async () => (await run(["tar", "-xf", archive, "-C", tarTarget])).seconds,
            after: sync,
          },
          daemon === undefined
            ? undefined
            : {
                command: `ferry import ${tree} -i ${tree}.tar`,
                before: () => empty(ferryTarget),
                measure: async () =>
                  (
                    await run(
                      ferryArgv(env, (daemon as Ferryd).socket, ["import", tree, "-i", archive]),
                    )
                  ).seconds,
                after: async () => {
                  await sync();
                  if (!checked) {
                    // A restore that silently wrote nothing must not pass for a fast one.
                    const got = treeStats(ferryTarget);
                    if (got.files !== data.files.length || got.bytes !== data.bytes) {
                      throw new Error(
                        `ferry import restored ${got.files} files / ${got.bytes} bytes, expected ${data.files.length} / ${data.bytes}`,
                      );
                    }
                    checked = true;
                  }
                },
              },
          ctx.pairs,
          ctx.say,
        );
        return {
          status: daemon === undefined ? "baseline-only" : "ran",
          reason: missing,
          metric: "seconds",
          dataBytes: data.bytes,
          baseline: result.baseline,
          ferry: result.ferry,
          ratio: speedRatios(result.pairs),
          ratioMeaning:
            "tar -x seconds / ferry import seconds per pair (Ferry's throughput relative to tar)",
          details: {
            files: data.files.length,
            archiveBytes,
            ...(daemon === undefined ? {} : { ferrydPeakRssBytes: daemon.peakRss() }),
          },
        };
      } finally {
        await daemon?.stop();
        rmSync(work, { recursive: true, force: true });
      }
    },
  };
}
