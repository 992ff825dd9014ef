/**
 * Manual measurement (not a test; takes minutes and ~3 GiB of disk): dump throughput of a
 * PostgreSQL database of at least 1 GiB through a real ferryd, as a ratio to running the
 * same dump tool directly into `cat`. Needs root (creates users, starts ferryd with
 * --user). Run after `npx tsc -p .`:
 *
 *   node dist/bench/postgres-throughput.js [SCALE=70] [RUNS=3] [NOISE=0]
 *
 * NOISE adds that many million rows of random hex (~100 bytes each) to the database: the
 * pgbench tables compress about 50:1 in a custom-format dump, so without it the dump is
 * small and the measurement is dominated by pg_dump reading the tables.
 *
 * Baseline: `pg_dump --format=custom --dbname=bench | cat > /dev/null`, as the database's
 * OS user. Through ferryd: `ferry export bench > /dev/null` as the backup user, with ferryd
 * started by root with `--user` (so the helper really goes through setpriv), the archive
 * verified by ferry on the way. Each is run RUNS times alternately; the best of each is
 * compared (the first baseline run also warms the cache).
 */
import { execFileSync, spawnSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { startFerryd } from "../test/helpers/ferryd.js";
import { PG_BIN, startPgServer } from "../test/helpers/pg-server.js";
import { ensureUser, FERRY } from "../test/helpers/proc.js";

const scale = Number(process.argv[2] ?? 70);
const runs = Number(process.argv[3] ?? 3);
/** Millions of rows of random hex text added in table `noise` (the pgbench tables compress ~50:1). */
const noiseMillions = Number(process.argv[4] ?? 0);
if (process.getuid?.() !== 0) throw new Error("run as root");

function timed(argv: string[], label: string): number {
  const t0 = process.hrtime.bigint();
  const r = spawnSync(argv[0] as string, argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
  const s = Number(process.hrtime.bigint() - t0) / 1e9;
  if (r.status !== 0) throw new Error(`${label} failed: ${r.stderr}`);
  return s;
}

const pg = await startPgServer();
const dir = mkdtempSync("/tmp/ferry-measure-");
let daemon: Awaited<ReturnType<typeof startFerryd>> | undefined;
try {
  chmodSync(dir, 0o755);
  await pg.sql("postgres", "CREATE DATABASE bench");
  const t0 = Date.now();
  execFileSync(
    "setpriv",
    [
      "--reuid",
      String(pg.user.uid),
      "--regid",
      String(pg.user.gid),
      "--init-groups",
      "--",
      `${PG_BIN}/pgbench`,
      "--initialize",
      `--scale=${scale}`,
      "--quiet",
      "bench",
    ],
    { env: { ...pg.env, PATH: "/usr/bin:/bin" }, stdio: "ignore" },
  );
  if (noiseMillions > 0) {
    await pg.sql(
      "bench",
      `CREATE TABLE noise AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v FROM generate_series(1, ${noiseMillions * 1_000_000}) g`,
    );
  }
  const size = Number((await pg.sql("postgres", "SELECT pg_database_size('bench')")).trim());
  console.log(
    `pgbench scale ${scale}: database ${(size / 2 ** 30).toFixed(2)} GiB, initialised in ${((Date.now() - t0) / 1000).toFixed(0)} s`,
  );

  const backup = ensureUser("ferry-bk");
  const socket = join(dir, "run/ferry.sock");
  mkdirSync(join(dir, "state"));
  const config = join(dir, "ferry.toml");
  writeFileSync(
    config,
    `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n[apps.bench]\ndriver = "postgres"\ndatabase = "bench"\nos_user = "${pg.user.name}"\nhost = "${pg.socketDir}"\nport = ${pg.port}\n`,
  );
  daemon = await startFerryd({ config, serviceUser: backup });

  const env = Object.entries({ ...pg.env, PATH: "/usr/bin:/bin" }).map(([k, v]) => `${k}=${v}`);
  const direct = [
    "setpriv",
    "--reuid",
    String(pg.user.uid),
    "--regid",
    String(pg.user.gid),
    "--init-groups",
    "--",
    "env",
    "-i",
    ...env,
    "sh",
    "-c",
    `${PG_BIN}/pg_dump --format=custom --dbname=bench | cat > /dev/null`,
  ];
  const viaFerryd = [
    "setpriv",
    "--reuid",
    String(backup.uid),
    "--regid",
    String(backup.gid),
    "--init-groups",
    "--",
    "sh",
    "-c",
    `${process.execPath} ${FERRY} --socket ${socket} export bench > /dev/null`,
  ];
  const dumpBytes = Number(
    execFileSync("sh", [
      "-c",
      `setpriv --reuid ${pg.user.uid} --regid ${pg.user.gid} --init-groups -- env -i ${env.join(" ")} ${PG_BIN}/pg_dump --format=custom --dbname=bench | wc -c`,
    ])
      .toString()
      .trim(),
  );
  console.log(`custom-format dump: ${(dumpBytes / 2 ** 20).toFixed(0)} MiB`);
  const a: number[] = [];
  const b: number[] = [];
  for (let i = 0; i < runs; i++) {
    a.push(timed(direct, "pg_dump | cat"));
    b.push(timed(viaFerryd, "ferry export"));
    console.log(
      `run ${i + 1}: pg_dump | cat ${a.at(-1)?.toFixed(2)} s, ferry export via ferryd ${b.at(-1)?.toFixed(2)} s`,
    );
  }
  const best = (x: number[]) => Math.min(...x);
  const median = (x: number[]) => [...x].sort((p, q) => p - q)[Math.floor(x.length / 2)] as number;
  console.log(
    `median: direct ${median(a).toFixed(2)} s, ferryd ${median(b).toFixed(2)} s, ratio ${(median(a) / median(b)).toFixed(3)}`,
  );
  const mib = dumpBytes / 2 ** 20;
  console.log(
    `best: direct ${best(a).toFixed(2)} s (${(mib / best(a)).toFixed(1)} MiB/s of dump, ${(size / 2 ** 20 / best(a)).toFixed(1)} MiB/s of database)`,
  );
  console.log(`best: ferryd ${best(b).toFixed(2)} s (${(mib / best(b)).toFixed(1)} MiB/s of dump)`);
  console.log(`throughput ratio ferryd / direct = ${(best(a) / best(b)).toFixed(3)}`);
} finally {
  await daemon?.stop();
  await pg.stop();
  rmSync(dir, { recursive: true, force: true });
}
