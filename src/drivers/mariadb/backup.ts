/**
 * Backup of the mariadb driver. Archive layout:
 *
 * - `data/mariadb.json`: server and tool versions, database names and their path prefixes;
 * - `data/db/<name>/NNNNNNNN.sql`: `mariadb-dump --single-transaction --routines --events
 *   --triggers` of each database, cut into parts (src/drivers/db/dump-parts.ts); the parts
 *   concatenated are the dump, unchanged, sandbox line (`/*M!999999\- enable the sandbox
 *   mode *\/`) included.
 *
 * The dump names no database (no `--databases`, so no CREATE DATABASE or USE), which lets
 * a restore load it into a scratch database. `--single-transaction` gives one consistent
 * snapshot of the InnoDB tables of each database without locking writers out.
 */
import { fileEntryHeader } from "../../core/archive/tar.js";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { dbPrefix, helperParts } from "../db/dump-parts.js";
import type { DriverContext } from "../types.js";
import type { MariadbConfig } from "./config.js";
import { clientArgs, mariadb, myHelper, toolVersion } from "./conn.js";

export const META_PATH = "data/mariadb.json";

export async function* backup(
  config: MariadbConfig,
  ctx: DriverContext,
): AsyncGenerator<ArchiveEntry> {
  const { signal } = ctx;
  const version = (await mariadb(config, "SELECT VERSION()", signal))[0]?.[0] ?? "unknown";
  const dumpVersion = await toolVersion(config, "mariadb-dump", signal);
  const body = Buffer.from(
    `${JSON.stringify(
      {
        driver: "mariadb",
        server_version: version,
        mariadb_dump_version: dumpVersion,
        databases: config.databases.map((name) => ({ name, prefix: dbPrefix(name), ext: "sql" })),
      },
      null,
      2,
    )}\n`,
  );
  const owner = { uid: config.user.uid, gid: config.user.gid, uname: config.user.name };
  yield {
    header: fileEntryHeader(META_PATH, body.length, { mode: 0o644, ...owner }),
    body,
  };
  for (const db of config.databases) {
    signal.throwIfAborted();
    const h = myHelper(
      config,
      [
        "mariadb-dump",
        ...clientArgs(config),
        "--single-transaction",
        "--routines",
        "--events",
        "--triggers",
        "--hex-blob",
        "--default-character-set=utf8mb4",
        "--",
        db,
      ],
      { label: `mariadb-dump of ${db}`, signal },
    );
    yield* helperParts(h, { ...owner, prefix: dbPrefix(db), ext: "sql", signal });
  }
}
