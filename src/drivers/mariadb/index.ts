/**
 * The `mariadb` driver: logical backups with `mariadb-dump --single-transaction` (one
 * consistent InnoDB snapshot per database), restores through a scratch database and an
 * atomic multi-table RENAME. See backup.ts for the archive layout and restore.ts for the
 * restore protocol and its limits.
 */

import { inspectProgram, inspectSocket } from "../inspect.js";
import type { Driver } from "../types.js";
import { backup } from "./backup.js";
import { type MariadbConfig, mariadbSchema } from "./config.js";
import { mariadb } from "./conn.js";
import { openRestore } from "./restore.js";

export const mariadbDriver: Driver<MariadbConfig> = {
  name: "mariadb",
  type: "mariadb.v1",
  version: 1,
  schema: mariadbSchema,

  async describe(config) {
    return {
      databases: config.databases,
      os_user: config.os_user,
      socket: config.socket ?? null,
      format: "mariadb-dump --single-transaction --routines --events --triggers",
    };
  },

  async health(config) {
    try {
      const rows = await mariadb(config, "SELECT VERSION()", AbortSignal.timeout(10_000));
      return { ok: true, message: `MariaDB ${rows[0]?.[0] ?? "?"}` };
    } catch (err) {
      return { ok: false, message: err instanceof Error ? err.message : String(err) };
    }
  },

  manifest(config) {
    // Server and tool versions are known only once the backup runs: see data/mariadb.json.
    return { databases: config.databases, os_user: config.os_user, metadata: "data/mariadb.json" };
  },

  backup: backup,
  restore: openRestore,

  inspect(config) {
    const out = ["mariadb", "mariadb-dump"].flatMap((t) =>
      inspectProgram(t, ["driver"], config.user),
    );
    if (config.socket !== undefined) {
      out.push(...inspectSocket(config.socket, ["socket"], "the MariaDB server"));
    }
    return out;
  },
};
