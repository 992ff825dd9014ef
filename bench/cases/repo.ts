/**
 * repo-first, repo-unchanged, repo-1pct: Ferry's deduplicating repository (`ferry backup`)
 * against `restic backup` of the same generated small tree (20,000 files).
 *
 * - repo-first: a backup into an empty repository (each sample starts from a new one);
 * - repo-unchanged: a further backup of the unchanged tree into a repository that
 *   already holds it (Ferry's is incremental: ferryd sends a delta against the previous
 *   snapshot, which the repository completes; restic compares with its parent snapshot);
 * - repo-1pct: after 1% of the files changed (4 KiB each, seeded, a new set per pair,
 *   changed once and then backed up by both), the bytes each repository grew by.
 *
 * restic runs as root reading the tree directly (how it is used today); Ferry's side runs
 * as the backup user through ferryd. restic's repository password is fixed and its cache
 * lives in the temporary directory.
 *
 * Ferry's side: `ferry init --repo DIR` then `ferry backup small --repo DIR`, encrypted
 * with a fixed password (FERRY_PASSWORD), as the backup user through ferryd.
 * repo-1pct changes the small tree, so it runs after every other case.
 */
import { rmSync } from "node:fs";
import { join } from "node:path";
import type { Tree } from "../lib/data.js";
import { modifyOnePercent } from "../lib/data.js";
import type { BenchEnv } from "../lib/env.js";
import {
  appToml,
  baselineSample,
  type Ferryd,
  ferryArgv,
  ferrySample,
  startFerryd,
} from "../lib/ferryd.js";
import { treeStats } from "../lib/fs-util.js";
import {
  alternate,
  type Sample,
  type Side,
  SkipCase,
  sizeRatios,
  speedRatios,
} from "../lib/measure.js";
import { run, which } from "../lib/proc.js";
import { summariseUsage } from "../lib/usage.js";
import type { BenchCase, CaseContext, CaseOutcome } from "./types.js";

type Kind = "first" | "unchanged" | "1pct";

const DESCRIPTIONS: Record<Kind, string> = {
  first: "first backup of the small tree into an empty repository: ferry backup vs restic backup",
  unchanged: "backup of the unchanged small tree into a repository that holds it: ferry vs restic",
  "1pct": "bytes a repository grows by after 1% of the small tree's files changed: ferry vs restic",
};

const TARGETS: Record<Kind, [string, number, boolean]> = {
  first: ["≥ 2× restic's throughput", 2.0, true],
  unchanged: ["≤ 0.5× restic's time (≥ 2.0)", 2.0, true],
  "1pct": ["no more bytes than restic (≤ 1.0)", 1.0, false],
};

class Restic {
  readonly env: Record<string, string>;
  constructor(
    private readonly benchEnv: BenchEnv,
    private readonly bin: string,
    cache: string,
  ) {
    this.env = { RESTIC_PASSWORD: "ferry-bench", RESTIC_CACHE_DIR: cache };
  }
  async init(repo: string) {
    rmSync(repo, { recursive: true, force: true });
    await run([this.bin, "-r", repo, "init"], { env: this.env });
  }
  backup(repo: string, dir: string): Promise<Sample> {
    return baselineSample(
      this.benchEnv,
      [this.bin, "-r", repo, "backup", "--quiet", "--host", "ferry-bench", dir],
      { env: this.env },
    );
  }
}

/** Ferry's repository is encrypted, like restic's: the same fixed password. */
const FERRY_ENV = { FERRY_PASSWORD: "ferry-bench" };

class FerryRepo {
  constructor(
    private readonly env: BenchEnv,
    private readonly daemon: Ferryd,
    private readonly hasInit: boolean,
  ) {}
  async init(repo: string) {
    rmSync(repo, { recursive: true, force: true });
    if (this.hasInit) {
      await run(ferryArgv(this.env, this.daemon.socket, ["init", "--repo", repo]), {
        env: FERRY_ENV,
      });
    } else {
      this.env.ownedDir(repo, this.env.backupUser, 0o700);
    }
  }
  backup(repo: string, app: string): Promise<Sample> {
    return ferrySample(this.env, this.daemon, ["backup", app, "--repo", repo], {
      env: FERRY_ENV,
    });
  }
}

export function repoCase(kind: Kind): BenchCase {
  const [target, targetValue, higher] = TARGETS[kind];
  return {
    name: `repo-${kind}`,
    description: DESCRIPTIONS[kind],
    target,
    targetValue,
    targetHigherIsBetter: higher,
    async run(ctx: CaseContext): Promise<CaseOutcome> {
      const { env } = ctx;
      const missing = ctx.ferry.commands.includes("backup")
        ? undefined
        : "ferry backup not implemented yet";
      if (missing !== undefined && !env.options.baselineOnly) throw new SkipCase(missing);
      const resticBin = which("restic");
      if (resticBin === undefined) throw new SkipCase("restic is not installed");
      const data: Tree = await env.tree("small");
      const work = env.ownedDir(join(env.tmp, "work", `repo-${kind}`), env.backupUser, 0o755);
      const restic = new Restic(env, resticBin, join(work, "restic-cache"));
      const resticRepo = join(work, "restic-repo");
      const ferryRepo = join(work, "ferry-repo");
      let daemon: Ferryd | undefined;
      if (missing === undefined) {
        daemon = await startFerryd(env, `repo-${kind}`, [
          appToml("small", { driver: "files", paths: [data.root], owner: env.appUser.name }),
        ]);
      }
      const ferry =
        daemon === undefined
          ? undefined
          : new FerryRepo(env, daemon, ctx.ferry.commands.includes("init"));
      try {
        let round = 0;
        const sides = ((): { a: Side; b: Side | undefined } => {
          const resticCmd = `restic backup ${data.root}`;
          const ferryCmd = "ferry backup small";
          if (kind === "first") {
            return {
              a: {
                command: `${resticCmd} (empty repository)`,
                before: () => restic.init(resticRepo),
                measure: () => restic.backup(resticRepo, data.root),
              },
              b: ferry && {
                command: `${ferryCmd} (empty repository)`,
                before: () => ferry.init(ferryRepo),
                measure: () => ferry.backup(ferryRepo, "small"),
              },
            };
          }
          if (kind === "unchanged") {
            return {
              a: {
                command: `${resticCmd} (unchanged, repository holds it)`,
                measure: () => restic.backup(resticRepo, data.root),
              },
              b: ferry && {
                command: `${ferryCmd} (unchanged, repository holds it)`,
                measure: () => ferry.backup(ferryRepo, "small"),
              },
            };
          }
          const grown = async (repo: string, backup: () => Promise<Sample>): Promise<Sample> => {
            const before = treeStats(repo).bytes;
            const s = await backup();
            return { value: treeStats(repo).bytes - before, usage: s.usage };
          };
          return {
            a: {
              command: `${resticCmd} after 1% of files changed: bytes added`,
              before: async () => {
                modifyOnePercent(data, env.options.seed, round++);
                await run(["sync"]);
              },
              measure: () => grown(resticRepo, () => restic.backup(resticRepo, data.root)),
            },
            b: ferry && {
              command: `${ferryCmd} after 1% of files changed: bytes added`,
              measure: () => grown(ferryRepo, () => ferry.backup(ferryRepo, "small")),
            },
          };
        })();
        if (kind !== "first") {
          ctx.say("  seeding the repositories with a first backup (untimed)");
          await restic.init(resticRepo);
          await restic.backup(resticRepo, data.root);
          if (ferry !== undefined) {
            await ferry.init(ferryRepo);
            await ferry.backup(ferryRepo, "small");
          }
        }
        const result = await alternate(sides.a, sides.b, ctx.pairs, ctx.say);
        const bytes = kind === "1pct";
        return {
          status: daemon === undefined ? "baseline-only" : "ran",
          reason: missing,
          metric: bytes ? "bytes-added" : "seconds",
          dataBytes: data.bytes,
          baseline: result.baseline,
          ferry: result.ferry,
          ratio: bytes ? sizeRatios(result.pairs) : speedRatios(result.pairs),
          ratioMeaning: bytes
            ? "ferry bytes added / restic bytes added per pair"
            : "restic seconds / ferry seconds per pair (Ferry's throughput relative to restic)",
          details: {
            files: data.files.length,
            resticRepositoryBytes: treeStats(resticRepo).bytes,
            ...(ferry === undefined ? {} : { ferryRepositoryBytes: treeStats(ferryRepo).bytes }),
          },
          usage: summariseUsage(result.baseline.usage, result.ferry?.usage),
        };
      } finally {
        await daemon?.stop();
        rmSync(work, { recursive: true, force: true });
      }
    },
  };
}
