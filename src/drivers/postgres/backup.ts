/**
 * Backup of the postgres driver. Archive layout:
 *
 * - `data/postgres.json`: what was dumped (server and tool versions, database names, the
 *   path prefix of each database); written first, read back by restore;
 * - `data/globals/NNNNNNNN.sql`: `pg_dumpall --globals-only` (roles, tablespaces), only for
 *   `all = true`;
 * - `data/db/<name>/NNNNNNNN.pgdump`: `pg_dump --format=custom` of each database, cut into
 *   parts (src/drivers/db/dump-parts.ts): `cat data/db/shop/*.pgdump > shop.pgdump` gives the dump.
 *
 * Each pg_dump runs in one repeatable-read snapshot of its database, so each database is
 * consistent in itself; databases are dumped one after the other.
 */

import { fileEntryHeader } from "../../core/archive/tar.js";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { FerryError } from "../../core/errors.js";
import { dbPrefix, helperParts } from "../db/dump-parts.js";
import type { DriverContext } from "../types.js";
import type { PostgresConfig } from "./config.js";
import { conninfo, dumpOptions, pgHelper, psql, serverInfo, toolVersion } from "./conn.js";

export const META_PATH = "data/postgres.json";
export const GLOBALS_PREFIX = "data/globals";

/** The database psql connects to for server-wide work. */
export function maintenanceDb(avoid: readonly string[] = []): string {
  return avoid.includes("postgres") ? "template1" : "postgres";
}

export async function listDatabases(
  config: PostgresConfig,
  signal: AbortSignal,
): Promise<string[]> {
  if (!config.all) return config.databases;
  const rows = await psql(
    config,
    maintenanceDb(),
    "SELECT datname FROM pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname",
    signal,
  );
  return rows.map((r) => r[0] ?? "").filter((n) => n !== "" && !n.includes("__ferry_"));
}

function metaEntry(meta: Record<string, unknown>, config: PostgresConfig): ArchiveEntry {
  const body = Buffer.from(`${JSON.stringify(meta, null, 2)}\n`);
  return {
    header: fileEntryHeader(META_PATH, body.length, {
      mode: 0o644,
      uid: config.user.uid,
      gid: config.user.gid,
      uname: config.user.name,
    }),
    body,
  };
}

export async function* backup(
  config: PostgresConfig,
  ctx: DriverContext,
): AsyncGenerator<ArchiveEntry> {
  const { signal } = ctx;
  const info = await serverInfo(
    config,
    config.all ? maintenanceDb() : (config.databases[0] as string),
    signal,
  );
  const dumpVersion = await toolVersion(config, "pg_dump", signal);
  const databases = await listDatabases(config, signal);
  if (databases.length === 0) {
    throw new FerryError("HELPER_FAILED", "the server has no database to back up");
  }
  const partOpts = {
    uid: config.user.uid,
    gid: config.user.gid,
    uname: config.user.name,
    signal,
  };
  yield metaEntry(
    {
      driver: "postgres",
      server_version: info.serverVersion,
      server_version_num: info.serverVersionNum,
      pg_dump_version: dumpVersion,
      format: "custom",
      restrict_nonsystem_relation_kind: info.restrictRelationKind,
      globals: config.all ? GLOBALS_PREFIX : null,
      databases: databases.map((name) => ({ name, prefix: dbPrefix(name), ext: "pgdump" })),
    },
    config,
  );

  if (config.all) {
    const h = pgHelper(
      config,
      ["pg_dumpall", "--globals-only", "--no-password", `--dbname=${conninfo(maintenanceDb())}`],
      { label: "pg_dumpall --globals-only", signal, env: dumpOptions(info) },
    );
    yield* helperParts(h, { ...partOpts, prefix: GLOBALS_PREFIX, ext: "sql" });
  }
  for (const db of databases) {
    signal.throwIfAborted();
    const h = pgHelper(
      config,
      ["pg_dump", "--format=custom", "--no-password", `--dbname=${conninfo(db)}`],
      { label: `pg_dump of ${db}`, signal, env: dumpOptions(info) },
    );
    yield* helperParts(h, { ...partOpts, prefix: dbPrefix(db), ext: "pgdump" });
  }
}
