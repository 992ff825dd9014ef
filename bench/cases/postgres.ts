/**
 * dump-postgres: a throwaway PostgreSQL cluster (initdb in the temporary directory, its
 * own OS user, a Unix socket only), filled by `pgbench -i` to about 1 GiB (scale 68; a
 * tenth with --quick), dumped by `ferry export` through ferryd's postgres driver against
 * `pg_dump -Fc | cat >/dev/null` run directly as the database's OS user.
 *
 * The server runs with fsync off: that only speeds up loading; the dumps only read.
 */
import { appendFileSync, existsSync, readdirSync } from "node:fs";
import { createServer } from "node:net";
import { join } from "node:path";
import type { BenchEnv } from "../lib/env.js";
import {
  appToml,
  baselineSample,
  type Ferryd,
  ferrySample,
  hasDriver,
  startFerryd,
} from "../lib/ferryd.js";
import { alternate, SkipCase, speedRatios } from "../lib/measure.js";
import { run, shell, type User } from "../lib/proc.js";
import { summariseUsage } from "../lib/usage.js";
import type { BenchCase, CaseContext, CaseOutcome } from "./types.js";

/** The newest PostgreSQL server binaries installed the Debian way, if any. */
export function findPostgresBin(): string | undefined {
  const base = "/usr/lib/postgresql";
  if (!existsSync(base)) return undefined;
  const versions = readdirSync(base)
    .filter((v) => /^\d+$/.test(v) && existsSync(join(base, v, "bin", "initdb")))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] === undefined ? undefined : join(base, versions[0], "bin");
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr !== null ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

interface Cluster {
  bin: string;
  user: User;
  socketDir: string;
  port: number;
  database: string;
  sizeBytes: number;
  stop(): Promise<void>;
}

async function startCluster(
  env: BenchEnv,
  bin: string,
  say: (l: string) => void,
): Promise<Cluster> {
  const user = env.user("ferry-bench-pg");
  const dir = env.ownedDir(join(env.tmp, "work", "pg"), user, 0o755);
  const data = join(dir, "data");
  const socketDir = env.ownedDir(join(dir, "run"), user, 0o755);
  const port = await freePort();
  const as = { user, timeoutMs: 60 * 60_000 };
  await run([join(bin, "initdb"), "-D", data, "-A", "trust", "-E", "UTF8", "--no-sync"], as);
  appendFileSync(
    join(data, "postgresql.conf"),
    [
      "",
      "# ferry bench: a private, unix-socket-only, throwaway server",
      `port = ${port}`,
      "listen_addresses = ''",
      `unix_socket_directories = '${socketDir}'`,
      "fsync = off",
      "synchronous_commit = off",
      "full_page_writes = off",
      "shared_buffers = 256MB",
      "max_wal_size = 4GB",
      "",
    ].join("\n"),
  );
  await run([join(bin, "pg_ctl"), "-D", data, "-l", join(dir, "server.log"), "-w", "start"], as);
  const stop = async () => {
    await run([join(bin, "pg_ctl"), "-D", data, "-m", "fast", "-w", "stop"], as).catch(() => {});
  };
  try {
    const conn = ["-h", socketDir, "-p", String(port)];
    const database = "bench";
    await run([join(bin, "createdb"), ...conn, database], as);
    const scale = Math.max(1, Math.round(68 * env.factor));
    const started = Date.now();
    await run([join(bin, "pgbench"), "-i", "-q", "-s", String(scale), ...conn, database], as);
    await run([join(bin, "psql"), ...conn, "-d", database, "-Atc", "CHECKPOINT"], as);
    const size = await run(
      [
        join(bin, "psql"),
        ...conn,
        "-d",
        database,
        "-Atc",
        `SELECT pg_database_size('${database}')`,
      ],
      as,
    );
    const sizeBytes = Number(size.stdout.trim());
    say(
      `  pgbench -i -s ${scale}: database of ${(sizeBytes / 1e6).toFixed(0)} MB in ${((Date.now() - started) / 1000).toFixed(0)} s`,
    );
    return { bin, user, socketDir, port, database, sizeBytes, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

export const postgresCase: BenchCase = {
  name: "dump-postgres",
  description:
    "pgbench database of ~1 GiB: ferry export through ferryd's postgres driver vs pg_dump -Fc | cat",
  target: "≥ 0.9 of the direct dump's throughput",
  targetValue: 0.9,
  targetHigherIsBetter: true,
  async run(ctx: CaseContext): Promise<CaseOutcome> {
    const { env } = ctx;
    const missing = hasDriver(ctx.ferry, "postgres")
      ? undefined
      : `ferryd has no postgres driver yet (drivers: ${ctx.ferry.drivers.join(", ") || "none"})`;
    if (missing !== undefined && !env.options.baselineOnly) throw new SkipCase(missing);
    const bin = findPostgresBin();
    if (bin === undefined)
      throw new SkipCase("PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin");
    for (const tool of ["initdb", "pg_ctl", "pg_dump", "pgbench", "psql", "createdb"]) {
      if (!existsSync(join(bin, tool))) throw new SkipCase(`${join(bin, tool)} is missing`);
    }
    const cluster = await startCluster(env, bin, ctx.say);
    let daemon: Ferryd | undefined;
    try {
      if (missing === undefined) {
        daemon = await startFerryd(env, "dump-postgres", [
          appToml("pg", {
            driver: "postgres",
            database: cluster.database,
            os_user: cluster.user.name,
            host: cluster.socketDir,
            port: cluster.port,
          }),
        ]);
      }
      const pgDump = [
        join(bin, "pg_dump"),
        "-Fc",
        "-h",
        cluster.socketDir,
        "-p",
        String(cluster.port),
        "-d",
        cluster.database,
      ];
      const result = await alternate(
        {
          command: `pg_dump -Fc ${cluster.database} | cat >/dev/null (as ${cluster.user.name})`,
          measure: () =>
            baselineSample(env, shell('"$@" | cat >/dev/null', ...pgDump), { user: cluster.user }),
        },
        daemon === undefined
          ? undefined
          : {
              command: "ferry export pg | cat >/dev/null",
              measure: () =>
                ferrySample(env, daemon as Ferryd, ["export", "pg"], { discard: true }),
            },
        ctx.pairs,
        ctx.say,
      );
      const dumpBytes = Number(
        (await run(shell('"$@" | wc -c', ...pgDump), { user: cluster.user })).stdout.trim(),
      );
      return {
        status: daemon === undefined ? "baseline-only" : "ran",
        reason: missing,
        metric: "seconds",
        dataBytes: cluster.sizeBytes,
        baseline: result.baseline,
        ferry: result.ferry,
        ratio: speedRatios(result.pairs),
        ratioMeaning: "pg_dump seconds / ferry export seconds per pair",
        details: {
          postgres: bin,
          databaseBytes: cluster.sizeBytes,
          pgDumpFcBytes: dumpBytes,
        },
        usage: summariseUsage(result.baseline.usage, result.ferry?.usage),
      };
    } finally {
      await daemon?.stop();
      await cluster.stop();
    }
  },
};
