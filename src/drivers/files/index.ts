/**
 * The `files` driver: one or more directory trees of an application, archived as
 * `data/<index of the path in the config>/…` with owners, modes, times, symlinks (never
 * followed) and hardlinks.
 */
import { closeSync, statfsSync } from "node:fs";
import { dirname } from "node:path";
import type { DoctorCheck } from "../../api/types.js";
import { explain, openRoot } from "../../core/safe-fs.js";
import { inspectDirectory } from "../inspect.js";
import { probeJournal, probeStagingDir } from "../probe.js";
import type { Driver } from "../types.js";
import { backup } from "./backup.js";
import { type FilesConfig, filesSchema } from "./config.js";
import { recoverRestores } from "./journal.js";
import { openRestore } from "./restore.js";
import { openDryRun } from "./restore-compare.js";
import { cleanSinceIndexes, openSinceIndex } from "./since-index.js";

export const filesDriver: Driver<FilesConfig> = {
  name: "files",
  type: "files.v1",
  version: 1,
  schema: filesSchema,

  async describe(config) {
    return {
      paths: config.paths.map((path, index) => ({
        index,
        path,
        archive_prefix: `data/${index}/`,
        // Restores stage beside the live tree, so this is the space a restore can use.
        free_bytes: freeBytes(dirname(path)),
      })),
      owner: config.owner,
      uid: config.uid,
      gid: config.gid,
    };
  },

  async health(config) {
    const problems: string[] = [];
    for (const path of config.paths) {
      try {
        closeSync(openRoot(path));
      } catch (err) {
        problems.push(err instanceof Error ? err.message : explain(err));
      }
    }
    return problems.length === 0
      ? { ok: true, message: `${config.paths.length} path(s) readable` }
      : { ok: false, message: problems.join("; ") };
  },

  manifest(config) {
    return { paths: config.paths, owner: config.owner };
  },

  backup,

  openSince(config, ctx, token) {
    return openSinceIndex({ ...ctx, paths: config.paths }, token);
  },

  restore: openRestore,

  keepsOld: true,

  dryRun: (config, ctx) => openDryRun(config, ctx),

  recover(state, apps, log) {
    recoverRestores(state, apps, log);
    cleanSinceIndexes(state, apps, log);
  },

  async doctor(config, ctx) {
    if (!ctx.restore) return [];
    const checks: DoctorCheck[] = [];
    // What openRestore refuses before it stages anything.
    const uid = process.getuid?.() ?? -1;
    if (config.uid === 0 && config.allow_root !== true) {
      checks.push({
        level: "fail",
        message: `${ctx.app}'s owner is root: restores are refused`,
        fix: "set allow_root = true in its config, or make owner the application's user",
      });
    }
    if (!ctx.state.options.privileged && config.uid !== uid) {
      checks.push({
        level: "fail",
        message: `ferryd runs without capabilities, so it can restore only files of its own uid ${uid}, not ${config.owner}'s`,
        fix: "run ferryd as the service (deploy/ferryd.service), with its capabilities",
      });
    }
    for (const path of config.paths) {
      const probe = probeStagingDir(path, ctx.state);
      const free = freeBytes(dirname(path));
      if (probe.level === "ok" && free !== null && free < 1024 ** 3) {
        checks.push({
          level: "warn",
          message: probe.message,
          fix: `less than 1 GiB is free beside ${path}, and a restore stages a full copy of it there`,
        });
      } else checks.push(probe);
    }
    checks.push(probeJournal(ctx.state));
    return checks;
  },

  inspect(config) {
    const owner = { uid: config.uid, gid: config.gid, name: config.owner };
    return config.paths.flatMap((p, i) => inspectDirectory(p, ["paths", i], owner));
  },
};

function freeBytes(dir: string): number | null {
  try {
    const st = statfsSync(dir);
    return st.bavail * st.bsize;
  } catch {
    return null;
  }
}
