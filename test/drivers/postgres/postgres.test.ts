/**
 * The postgres driver against a real PostgreSQL server (the installed version) that this file starts itself
 * (test/helpers/pg-server.ts), with pgbench data. Bounds: pgbench scale 2 (200 000
 * accounts, ~30 MB), a `noise` table of 300 000 random rows (~20 MB of dump, so a dump has
 * several 8 MiB parts), pgbench writers for at most 8 s. Whole file: ~30-60 s.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import { FerryError } from "../../../src/core/errors.js";
import { runHelper } from "../../../src/core/spawn.js";
import { helperParts } from "../../../src/drivers/db/dump-parts.js";
import { type PostgresConfig, postgresSchema } from "../../../src/drivers/postgres/config.js";
import { postgresDriver } from "../../../src/drivers/postgres/index.js";
import { PG_BIN, type PgServer, runAs, startPgServer } from "../../helpers/pg-server.js";
import {
  backupBytes,
  manifestOf,
  readEntries,
  rebuildArchive,
  restoreBytes,
} from "../../helpers/roundtrip.js";
import { testState } from "../../helpers/state.js";

const ODD = `we'ird "db"/../host=x`;
let pg: PgServer;

function config(extra: Record<string, unknown>): PostgresConfig {
  return postgresSchema.parse({
    driver: "postgres",
    os_user: pg.user.name,
    host: pg.socketDir,
    port: pg.port,
    restore: true,
    timeout: 120,
    ...extra,
  });
}

const TABLES: Record<string, string> = {
  pgbench_accounts: "aid",
  pgbench_branches: "bid",
  pgbench_tellers: "tid",
  pgbench_history: "tid, bid, aid, delta, mtime",
};

async function checksums(db: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const [t, order] of Object.entries(TABLES)) {
    out[t] = (
      await pg.sql(
        db,
        `SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY ${order})), '') FROM ${t} x`,
      )
    ).trim();
  }
  return out;
}

async function databases(): Promise<string[]> {
  return (await pg.sql("postgres", "SELECT datname FROM pg_database ORDER BY 1"))
    .trim()
    .split("\n");
}

/** The pgbench invariant: every transaction adds the same delta to all four tables. */
async function pgbenchBalanced(db: string): Promise<{ history: number; balanced: boolean }> {
  const row = (
    await pg.sql(
      db,
      "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(bbalance) FROM pgbench_branches), (SELECT sum(tbalance) FROM pgbench_tellers), (SELECT coalesce(sum(delta), 0) FROM pgbench_history), (SELECT count(*) FROM pgbench_history)",
    )
  )
    .trim()
    .split("|");
  const [a, b, t, h, n] = row;
  return { history: Number(n), balanced: a === b && b === t && t === h };
}

/** Processes named `comm` running as `uid` (read from /proc). */
function processes(comm: string, uid: number): { pid: number; status: string }[] {
  const out: { pid: number; status: string }[] = [];
  for (const d of readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(d)) continue;
    try {
      const status = readFileSync(`/proc/${d}/status`, "utf8");
      const name = /^Name:\s*(.*)$/m.exec(status)?.[1];
      const ruid = Number(/^Uid:\s*([0-9]+)/m.exec(status)?.[1]);
      if (name === comm && ruid === uid) out.push({ pid: Number(d), status });
    } catch {}
  }
  return out;
}

async function waitFor(
  cond: () => Promise<boolean> | boolean,
  ms: number,
  what: string,
): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function ferrySessions(): Promise<number> {
  return Number(
    (
      await pg.sql(
        "postgres",
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'ferry'",
      )
    ).trim(),
  );
}

describe("postgres driver", { timeout: 240_000 }, () => {
  before(async () => {
    pg = await startPgServer();
    await pg.sql("postgres", "CREATE DATABASE bench");
    await runAs(pg.user, ["pgbench", "--initialize", "--scale=2", "--quiet", "bench"], {
      env: pg.env,
    });
    await pg.sql("postgres", "CREATE DATABASE big");
    await pg.sql(
      "big",
      "CREATE TABLE noise AS SELECT g AS id, md5(random()::text) || md5(random()::text) AS v FROM generate_series(1, 300000) g",
    );
    await pg.sql("postgres", `CREATE DATABASE "${ODD.replace(/"/g, '""')}"`);
    await runAs(
      pg.user,
      [
        "psql",
        "--no-psqlrc",
        "--set=ON_ERROR_STOP=1",
        `--dbname=dbname='${ODD.replace(/'/g, "\\'")}'`,
        "--command",
        "CREATE TABLE t (k text PRIMARY KEY, n int); INSERT INTO t VALUES ('a', 1), ('b', 2)",
      ],
      { env: pg.env },
    );
  });
  after(async () => {
    await pg?.stop();
  });

  test("config: exactly one of database/databases/all, unknown keys refused", () => {
    assert.throws(() => config({}), /exactly one of/);
    assert.throws(() => config({ database: "a", all: true }), /exactly one of/);
    assert.throws(() => config({ database: "a", dbname: "b" }), /dbname/);
    assert.deepEqual(config({ databases: ["a", "b"] }).databases, ["a", "b"]);
    assert.equal(config({ database: "a" }).timeout, 120);
  });

  test("pgbench round trip: per-table checksums equal after restore, originals replaced atomically", async () => {
    const cfg = config({ database: "bench" });
    const before = await checksums("bench");
    const bytes = await backupBytes(postgresDriver, cfg);
    const entries = await readEntries(bytes);
    assert.equal(entries[0]?.path, "data/postgres.json");
    const meta = JSON.parse(String(entries[0]?.body));
    assert.match(meta.server_version, /^15\./);
    assert.match(meta.pg_dump_version, /pg_dump \(PostgreSQL\) 15/);
    assert.equal(meta.restrict_nonsystem_relation_kind, true);
    assert.deepEqual(
      meta.databases.map((d: { name: string }) => d.name),
      ["bench"],
    );
    assert.ok(entries.slice(1).every((e) => /^data\/db\/bench\/[0-9]{8}\.pgdump$/.test(e.path)));
    // The parts concatenated are a custom-format dump.
    assert.equal(entries[1]?.body.subarray(0, 5).toString(), "PGDMP");
    assert.equal((await manifestOf(bytes)).databases?.toString(), "bench");

    await pg.sql(
      "bench",
      "UPDATE pgbench_accounts SET abalance = abalance + 7 WHERE aid % 3 = 0; DELETE FROM pgbench_tellers WHERE tid = 1; CREATE TABLE after_backup (x int)",
    );
    assert.notDeepEqual(await checksums("bench"), before);
    const warnings: string[] = [];
    const r = await restoreBytes(postgresDriver, cfg, bytes, { warnings });
    assert.deepEqual(warnings, []);
    assert.equal(r.entries, entries.length);
    assert.deepEqual(await checksums("bench"), before);
    assert.equal(
      (
        await pg.sql("bench", "SELECT count(*) FROM pg_class WHERE relname = 'after_backup'")
      ).trim(),
      "0",
    );
    assert.deepEqual(
      (await databases()).filter((d) => d.includes("__ferry_")),
      [],
    );
  });

  test("a backup taken while pgbench writes restores to a consistent database", async () => {
    const cfg = config({ database: "bench" });
    const bench = spawn("pgbench", ["--client=4", "--jobs=2", "--time=8", "--no-vacuum", "bench"], {
      ...(process.getuid?.() === 0 ? { uid: pg.user.uid, gid: pg.user.gid } : {}),
      env: { ...pg.env, PATH: `${PG_BIN}:/usr/bin:/bin` },
      stdio: "ignore",
    });
    const benchDone = new Promise((r) => bench.once("exit", r));
    try {
      await waitFor(
        async () => (await pgbenchBalanced("bench")).history > 200,
        8000,
        "pgbench to write",
      );
      const bytes = await backupBytes(postgresDriver, cfg);
      await benchDone;
      const live = await pgbenchBalanced("bench");
      await restoreBytes(postgresDriver, cfg, bytes);
      const restored = await pgbenchBalanced("bench");
      assert.ok(restored.balanced, "the restored database satisfies pgbench's invariant");
      assert.ok(
        restored.history > 200,
        `restored history has ${restored.history} rows written before the dump`,
      );
      assert.ok(
        restored.history < live.history,
        `pgbench kept writing after the dump (${restored.history} < ${live.history})`,
      );
    } finally {
      bench.kill("SIGKILL");
    }
  });

  test("restore terminates other sessions on the original only at the swap", async () => {
    const cfg = config({ database: "bench" });
    const bytes = await backupBytes(postgresDriver, cfg);
    const sleeper = runAs(
      pg.user,
      ["psql", "--no-psqlrc", "--dbname=bench", "--command", "SELECT pg_sleep(60)"],
      { env: { ...pg.env, PGAPPNAME: "sleeper" } },
    ).catch((e: Error) => e);
    await waitFor(
      async () =>
        (
          await pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sleeper'",
          )
        ).trim() === "1",
      5000,
      "the sleeper session",
    );
    const start = Date.now();
    let done = false;
    const restoring = restoreBytes(postgresDriver, cfg, bytes).finally(() => {
      done = true;
    });
    // While the restore loads the scratch database, the sleeper on the original is
    // still connected: sessions are terminated at the swap, not when the restore begins.
    // Shown by the sleeper being alive while the scratch database had already grown to
    // most of the data's size.
    let loadsSeen = 0;
    let largestWithSleeper = 0;
    while (!done) {
      const [scratchBytes, sleepers] = (
        await pg.sql(
          "postgres",
          "SELECT coalesce((SELECT max(pg_database_size(oid)) FROM pg_database WHERE datname LIKE 'bench\\_\\_ferry\\_restore\\_%'), -1), (SELECT count(*) FROM pg_stat_activity WHERE application_name = 'sleeper' AND datname = 'bench')",
        )
      )
        .trim()
        .split("|")
        .map(Number);
      if ((scratchBytes as number) >= 0) {
        loadsSeen++;
        if (sleepers === 1)
          largestWithSleeper = Math.max(largestWithSleeper, scratchBytes as number);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
    await restoring;
    const err = await sleeper;
    assert.ok(err instanceof Error, "the session on the old database was terminated");
    assert.match(err.message, /terminat/i, "the sleeper ended by termination, not otherwise");
    assert.ok(loadsSeen > 0, "the scratch database was never seen while loading");
    const original = Number((await pg.sql("postgres", "SELECT pg_database_size('bench')")).trim());
    assert.ok(
      largestWithSleeper > original * 0.5,
      `the sleeper was gone before the load was half done (${largestWithSleeper} of ${original} bytes)`,
    );
    assert.ok(Date.now() - start < 30_000);
  });

  test("odd database names round-trip (quotes, slash, dots, '=')", async () => {
    const cfg = config({ databases: [ODD] });
    const bytes = await backupBytes(postgresDriver, cfg);
    const paths = (await readEntries(bytes)).map((e) => e.path);
    assert.ok(
      paths.every(
        (p) =>
          !p.includes("..") &&
          (p === "data/postgres.json" ||
            p.startsWith("data/db/we%27ird%20%22db%22%2F%2E%2E%2Fhost%3Dx/")),
      ),
      paths.join(","),
    );
    await runAs(
      pg.user,
      [
        "psql",
        "--no-psqlrc",
        `--dbname=dbname='${ODD.replace(/'/g, "\\'")}'`,
        "--command",
        "DELETE FROM t",
      ],
      { env: pg.env },
    );
    await restoreBytes(postgresDriver, cfg, bytes);
    const rows = await runAs(
      pg.user,
      [
        "psql",
        "--no-psqlrc",
        "-At",
        `--dbname=dbname='${ODD.replace(/'/g, "\\'")}'`,
        "--command",
        "SELECT string_agg(k || n, ',' ORDER BY k) FROM t",
      ],
      { env: pg.env },
    );
    assert.equal(rows.trim(), "a1,b2");
  });

  test("the restored database keeps the original's owner, encoding and ICU locale", async () => {
    await pg.sql("postgres", "CREATE ROLE shop_owner");
    await pg.sql(
      "postgres",
      "CREATE DATABASE icu_db OWNER shop_owner TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LC_COLLATE 'C' LC_CTYPE 'C'",
    );
    await pg.sql("icu_db", "CREATE TABLE t (s text); INSERT INTO t VALUES ('b'), ('a'), ('B')");
    const props = () =>
      pg.sql(
        "postgres",
        "SELECT pg_get_userbyid(datdba), datlocprovider, daticulocale, datcollate FROM pg_database WHERE datname = 'icu_db'",
      );
    const before = await props();
    assert.match(before, /shop_owner\|i\|en-US\|C/);
    const cfg = config({ database: "icu_db" });
    const bytes = await backupBytes(postgresDriver, cfg);
    await pg.sql("icu_db", "DELETE FROM t");
    await restoreBytes(postgresDriver, cfg, bytes);
    assert.equal(await props(), before);
    // ICU en-US order (the C collation would give "Bab").
    assert.equal(
      (await pg.sql("icu_db", "SELECT string_agg(s, '' ORDER BY s) FROM t")).trim(),
      "abB",
    );
    await pg.sql("postgres", "DROP DATABASE icu_db");
  });

  test("a restore of a corrupted payload is refused and leaves the original intact", async () => {
    const cfg = config({ database: "bench" });
    const bytes = await backupBytes(postgresDriver, cfg);
    const before = await checksums("bench");
    const dbsBefore = await databases();
    // 1. A flipped byte in the dump: the end record no longer matches.
    const corrupt = Buffer.from(bytes);
    const at = bytes.indexOf(Buffer.from("PGDMP")) + 100_000;
    corrupt[at] = (corrupt[at] as number) ^ 0xff;
    await assert.rejects(
      restoreBytes(postgresDriver, cfg, corrupt),
      (e: unknown) => e instanceof FerryError,
    );
    assert.deepEqual(await checksums("bench"), before);
    assert.deepEqual(await databases(), dbsBefore);
    // 2. A valid archive whose dump is truncated: pg_restore fails, its stderr surfaces.
    const entries = await readEntries(bytes);
    const dump = Buffer.concat(entries.slice(1).map((e) => e.body));
    const cut = [
      entries[0] as { path: string; body: Buffer },
      {
        path: "data/db/bench/00000000.pgdump",
        body: dump.subarray(0, Math.floor(dump.length / 2)),
      },
    ];
    const truncated = await rebuildArchive(await manifestOf(bytes), cut);
    await assert.rejects(
      restoreBytes(postgresDriver, cfg, truncated),
      (e: unknown) =>
        e instanceof FerryError && /pg_restore/.test(e.message) && e.code === "HELPER_FAILED",
    );
    assert.deepEqual(await checksums("bench"), before);
    assert.deepEqual(await databases(), dbsBefore);
  });

  test("an archive cannot restore a database the app does not declare", async () => {
    const bytes = await backupBytes(postgresDriver, config({ database: "big" }));
    await assert.rejects(
      restoreBytes(postgresDriver, config({ database: "bench" }), bytes),
      /not one this application declares/,
    );
    assert.deepEqual(
      (await databases()).filter((d) => d.includes("__ferry_")),
      [],
    );
  });

  test("a failing pg_dump fails the backup with its stderr", async () => {
    await assert.rejects(
      backupBytes(postgresDriver, config({ databases: ["bench", "no_such_db"] })),
      (e: unknown) =>
        e instanceof FerryError &&
        e.code === "HELPER_FAILED" &&
        /pg_dump of no_such_db/.test(e.message) &&
        /database "no_such_db" does not exist/.test(e.message),
    );
  });

  test("a helper that exits 0 without output fails with HELPER_FAILED", async () => {
    const h = runHelper({ argv: ["true"], user: pg.user, timeoutMs: 10_000, label: "true" });
    const parts = helperParts(h, {
      prefix: "data/db/x",
      ext: "pgdump",
      uid: 0,
      gid: 0,
      uname: "",
      signal: new AbortController().signal,
    });
    await assert.rejects(
      async () => {
        for await (const _ of parts) {
        }
      },
      (e: unknown) =>
        e instanceof FerryError && e.code === "HELPER_FAILED" && /no data/.test(e.message),
    );
  });

  test("returning the backup early kills pg_dump, which ran as the app user with no capabilities", async () => {
    const it = postgresDriver
      .backup(config({ database: "big" }), {
        app: "t",
        signal: new AbortController().signal,
        warnings: [],
        state: testState(),
      })
      [Symbol.asyncIterator]();
    assert.equal((await it.next()).value?.header.path, "data/postgres.json");
    const part = await it.next();
    assert.equal(part.value?.header.path, "data/db/big/00000000.pgdump");
    assert.equal(part.value?.header.size, 8 * 1024 * 1024);
    const running = processes("pg_dump", pg.user.uid);
    assert.equal(running.length, 1, "pg_dump is still running (more parts to come)");
    const status = (running[0] as { status: string }).status;
    assert.match(status, /^CapEff:\s*0+$/m);
    assert.match(status, /^CapAmb:\s*0+$/m);
    assert.match(status, /^CapPrm:\s*0+$/m);
    await it.return?.(undefined);
    assert.equal(processes("pg_dump", pg.user.uid).length, 0);
    await waitFor(async () => (await ferrySessions()) === 0, 10_000, "pg_dump's session to end");
  });

  test("aborting the signal while pg_dump waits on a lock cancels it", async () => {
    const locker = runAs(
      pg.user,
      [
        "psql",
        "--no-psqlrc",
        "--dbname=big",
        "--command",
        "BEGIN; LOCK TABLE noise IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(20); COMMIT;",
      ],
      { env: { ...pg.env, PGAPPNAME: "locker" } },
    ).catch(() => {});
    await waitFor(
      async () =>
        (
          await pg.sql(
            "postgres",
            "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid) WHERE a.application_name = 'locker' AND l.mode = 'AccessExclusiveLock' AND l.relation IS NOT NULL",
          )
        ).trim() !== "0",
      5000,
      "the lock",
    );
    const ac = new AbortController();
    const done = backupBytes(postgresDriver, config({ database: "big" }), { signal: ac.signal });
    await waitFor(() => processes("pg_dump", pg.user.uid).length === 1, 5000, "pg_dump to start");
    await new Promise((r) => setTimeout(r, 500));
    const t0 = Date.now();
    ac.abort(new FerryError("CANCELLED", "test cancel"));
    await assert.rejects(done);
    assert.ok(Date.now() - t0 < 6000, "cancelled promptly");
    assert.equal(processes("pg_dump", pg.user.uid).length, 0);
    await pg.sql(
      "postgres",
      "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'locker'",
    );
    await locker;
    await waitFor(async () => (await ferrySessions()) === 0, 10_000, "pg_dump's session to end");
  });

  test("all = true dumps every database and the globals", async () => {
    const bytes = await backupBytes(postgresDriver, config({ all: true }));
    const entries = await readEntries(bytes);
    const meta = JSON.parse(String(entries[0]?.body));
    assert.deepEqual(
      meta.databases.map((d: { name: string }) => d.name).sort(),
      ["bench", "big", "postgres", ODD].sort(),
    );
    const globals = entries.filter((e) => e.path.startsWith("data/globals/"));
    assert.ok(globals.length >= 1);
    assert.match(Buffer.concat(globals.map((g) => g.body)).toString(), /CREATE ROLE/);
  });
});
