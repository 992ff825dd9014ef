/**
 * The `files` driver: one or more directory trees of an application, archived as
 * `data/<index of the path in the config>/…` with owners, modes, times, symlinks (never
 * followed) and hardlinks.
 */
import { closeSync, statfsSync } from "node:fs";
import { dirname } from "node:path";
import { explain, openRoot } from "../../core/safe-fs.js";
import { inspectDirectory } from "../inspect.js";
import type { Driver } from "../types.js";
import { backup } from "./backup.js";
import { type FilesConfig, filesSchema } from "./config.js";
import { recoverRestores } from "./journal.js";
import { openRestore } from "./restore.js";

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

  restore: openRestore,

  recover(state, apps, log) {
    recoverRestores(state, apps, log);
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
