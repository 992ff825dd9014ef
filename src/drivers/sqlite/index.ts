import { closeSync } from "node:fs";
import { basename, dirname } from "node:path";
import { explain, openRoot } from "../../core/safe-fs.js";
import { S_IFMT, S_IFREG, statAt } from "../../core/sys.js";
import { inspectFile, inspectProgram } from "../inspect.js";
import type { Driver } from "../types.js";
import { backup, sqliteVersion } from "./backup.js";
import { type SqliteConfig, sqliteSchema } from "./config.js";
import { openRestore } from "./restore.js";
import { SQLITE_ENTRY } from "./sql.js";

export const sqliteDriver: Driver<SqliteConfig> = {
  name: "sqlite",
  type: "sqlite.v1",
  version: 1,
  schema: sqliteSchema,

  async describe(config) {
    return { path: config.path, owner: config.owner, entry: SQLITE_ENTRY };
  },

  async health(config) {
    try {
      const dirfd = openRoot(dirname(config.path));
      try {
        const st = statAt(dirfd, basename(config.path));
        if ((st.mode & S_IFMT) !== S_IFREG) {
          return { ok: false, message: `${config.path} is not a regular file` };
        }
        return { ok: true, message: `${config.path}: ${st.size} bytes` };
      } finally {
        closeSync(dirfd);
      }
    } catch (err) {
      return { ok: false, message: `${config.path}: ${explain(err)}` };
    }
  },

  manifest(config) {
    return { path: config.path, owner: config.owner, sqlite_version: sqliteVersion(config) };
  },

  backup,

  restore: openRestore,

  inspect(config) {
    return [
      ...inspectProgram("sqlite3", ["driver"], config.user),
      ...inspectFile(config.path, ["path"], { uid: config.user.uid, name: config.owner }),
    ];
  },
};
