/**
 * The `postgres` driver: logical backups with `pg_dump --format=custom` (one consistent
 * snapshot per database), restores with `pg_restore` into a new database and an atomic
 * name swap. See backup.ts for the archive layout and restore.ts for the restore protocol.
 */

import { inspectProgram, inspectSocket } from "../inspect.js";
import type { Driver } from "../types.js";
import { backup, listDatabases, maintenanceDb } from "./backup.js";
import { type PostgresConfig, postgresSchema } from "./config.js";
import { serverInfo } from "./conn.js";
import { openRestore } from "./restore.js";

export const postgresDriver: Driver<PostgresConfig> = {
  name: "postgres",
  type: "postgres.v1",
  version: 1,
  schema: postgresSchema,

  async describe(config) {
    return {
      databases: config.all ? "all" : config.databases,
      os_user: config.os_user,
      host: config.host ?? null,
      port: config.port ?? null,
      format: "pg_dump --format=custom",
    };
  },

  async health(config) {
    try {
      const signal = AbortSignal.timeout(10_000);
      const info = await serverInfo(
        config,
        config.all ? maintenanceDb() : (config.databases[0] as string),
        signal,
      );
      const dbs = await listDatabases(config, signal);
      return { ok: true, message: `PostgreSQL ${info.serverVersion}, ${dbs.length} database(s)` };
    } catch (err) {
      return { ok: false, message: err instanceof Error ? err.message : String(err) };
    }
  },

  manifest(config) {
    // Server and tool versions are only known once the backup runs: they are in the
    // archive's first payload entry, data/postgres.json.
    return {
      databases: config.all ? "all" : config.databases,
      os_user: config.os_user,
      metadata: "data/postgres.json",
    };
  },

  backup: backup,
  restore: openRestore,

  inspect(config) {
    const tools = ["psql", "pg_dump", ...(config.all ? ["pg_dumpall"] : [])];
    if (config.restore) tools.push("pg_restore");
    const out = tools.flatMap((t) => inspectProgram(t, ["driver"], config.user));
    if (config.host?.startsWith("/")) {
      out.push(
        ...inspectSocket(
          `${config.host}/.s.PGSQL.${config.port ?? 5432}`,
          ["host"],
          "the PostgreSQL server",
        ),
      );
    }
    return out;
  },
};
