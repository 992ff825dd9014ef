/**
 * Talking to the server through the client tools, always as the configured OS user with
 * every capability dropped (core/spawn.ts), never through a shell.
 *
 * Databases are named to the tools only as `--dbname=dbname='…'` connection strings: a
 * database name is then never parsed as an option (it is glued to `--dbname=`) nor as a
 * connection string or URI of its own (a database called `host=/evil` stays a name).
 * Host and port go through PGHOST/PGPORT; PGOPTIONS carries
 * `restrict_nonsystem_relation_kind` for the dump tools where the server knows it.
 */
import { FerryError } from "../../core/errors.js";
import { type Helper, type HelperOptions, runHelper } from "../../core/spawn.js";
import { timeoutMs } from "../common.js";
import type { PostgresConfig } from "./config.js";

/** Where the PostgreSQL client tools live besides PATH (Debian keeps versions apart). */
export const PG_BIN_DIRS = [
  "/usr/lib/postgresql/17/bin",
  "/usr/lib/postgresql/16/bin",
  "/usr/lib/postgresql/15/bin",
];

/** A libpq connection string naming one database, with the value quoted. */
export function conninfo(db: string): string {
  return `dbname='${db.replace(/\\/g, "\\\\").replace(/'/g, "\\'")}'`;
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/** A string literal; standard_conforming_strings is on, so only quotes are doubled. */
export function quoteLiteral(s: string): string {
  return `'${s.replace(/'/g, "''")}'`;
}

export function pgEnv(
  config: PostgresConfig,
  extra: Record<string, string> = {},
): Record<string, string> {
  const env: Record<string, string> = { PGAPPNAME: "ferry", PGCONNECT_TIMEOUT: "30", ...extra };
  if (config.host !== undefined) env.PGHOST = config.host;
  if (config.port !== undefined) env.PGPORT = String(config.port);
  return env;
}

export function pgHelper(
  config: PostgresConfig,
  argv: string[],
  opts: Partial<HelperOptions> & { label: string; signal: AbortSignal },
): Helper {
  return runHelper({
    argv,
    user: config.user,
    path: PG_BIN_DIRS,
    timeoutMs: timeoutMs(config),
    ...opts,
    env: pgEnv(config, opts.env),
  });
}

/**
 * Runs SQL with psql and returns its unaligned, tab-separated rows. For small results
 * (catalogue queries); the whole output is collected.
 */
export async function psql(
  config: PostgresConfig,
  db: string,
  sql: string,
  signal: AbortSignal,
): Promise<string[][]> {
  const h = pgHelper(
    config,
    [
      "psql",
      "--no-psqlrc",
      "--no-password",
      "--quiet",
      "--tuples-only",
      "--no-align",
      "--field-separator=\t",
      "--set=ON_ERROR_STOP=1",
      `--dbname=${conninfo(db)}`,
      `--command=${sql}`,
    ],
    { label: `psql on ${db}`, signal },
  );
  const chunks: Buffer[] = [];
  let size = 0;
  h.stdout?.on("data", (c: Buffer) => {
    size += c.length;
    if (size > 16 * 1024 * 1024) {
      h.kill();
      return;
    }
    chunks.push(c);
  });
  await h.done;
  if (size > 16 * 1024 * 1024) throw new FerryError("INTERNAL", "psql answered more than 16 MiB");
  const text = Buffer.concat(chunks).toString("utf8");
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => l.split("\t"));
}

export interface ServerInfo {
  serverVersion: string;
  serverVersionNum: number;
  restrictRelationKind: boolean;
}

export async function serverInfo(
  config: PostgresConfig,
  db: string,
  signal: AbortSignal,
): Promise<ServerInfo> {
  const rows = await psql(
    config,
    db,
    "SELECT current_setting('server_version'), current_setting('server_version_num'), " +
      "(SELECT count(*) FROM pg_settings WHERE name = 'restrict_nonsystem_relation_kind')",
    signal,
  );
  const [v, num, restrict] = rows[0] ?? [];
  return {
    serverVersion: v ?? "unknown",
    serverVersionNum: Number(num ?? 0),
    restrictRelationKind: restrict === "1",
  };
}

/** The `--version` line of a client tool, e.g. "pg_dump (PostgreSQL) 15.20". */
export async function toolVersion(
  config: PostgresConfig,
  tool: string,
  signal: AbortSignal,
): Promise<string> {
  const h = pgHelper(config, [tool, "--version"], { label: `${tool} --version`, signal });
  let out = "";
  h.stdout?.setEncoding("utf8");
  h.stdout?.on("data", (s: string) => {
    out += s;
  });
  await h.done;
  return out.trim();
}

/**
 * PGOPTIONS for the dump tools: forbid expanding non-system views and reading foreign
 * tables while dumping (CVE-2024-7348), on servers that have the setting (12.20, 13.16,
 * 14.13, 15.8, 16.4 and later). An unknown setting in PGOPTIONS would refuse the
 * connection, hence the check. pg_dump of those releases sets it too; this also covers an
 * older pg_dump against a newer server.
 */
export function dumpOptions(info: ServerInfo): Record<string, string> {
  return info.restrictRelationKind
    ? { PGOPTIONS: "-c restrict_nonsystem_relation_kind=view,foreign-table" }
    : {};
}
