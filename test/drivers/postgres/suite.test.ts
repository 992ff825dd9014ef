/**
 * The postgres driver through the shared driver suite (test/drivers/suite.ts), against a
 * throwaway server this file starts (test/helpers/pg-server.ts). Needs root (hooks run as
 * the server's test user). Bounds: one table of 1 000 rows; ~10 s.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { postgresDriver } from "../../../src/drivers/postgres/index.js";
import { PG_BIN, type PgServer, startPgServer } from "../../helpers/pg-server.js";
import { runDriverSuite } from "../suite.js";

function pgDumpRunning(uid: number): boolean {
  return readdirSync("/proc").some((d) => {
    try {
      const s = readFileSync(`/proc/${d}/status`, "utf8");
      return /^Name:\s*pg_dump$/m.test(s) && Number(/^Uid:\s*([0-9]+)/m.exec(s)?.[1]) === uid;
    } catch {
      return false;
    }
  });
}

runDriverSuite({
  name: "postgres",
  driver: postgresDriver,
  skip: process.getuid?.() === 0 ? false : "needs root",
  async setup() {
    const pg: PgServer = await startPgServer();
    const hookDir = mkdtempSync(join(tmpdir(), "ferry-pg-hooks-"));
    chownSync(hookDir, pg.user.uid, pg.user.gid);
    await pg.sql("postgres", "CREATE DATABASE suite");
    const table = {
      database: "suite",
      os_user: pg.user.name,
      host: pg.socketDir,
      port: pg.port,
      timeout: 60,
    };
    const snapshot = async () =>
      (
        await pg.sql(
          "suite",
          "SELECT count(*) || ':' || md5(string_agg(id || '=' || v, ',' ORDER BY id)) FROM t",
        )
      ).trim();
    return {
      table,
      hookUser: pg.user.name,
      hookDir,
      async seed() {
        await pg.sql(
          "suite",
          "DROP TABLE IF EXISTS t; CREATE TABLE t (id int PRIMARY KEY, v text); INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 1000) g",
        );
      },
      async mutate() {
        await pg.sql(
          "suite",
          "UPDATE t SET v = 'changed' WHERE id % 7 = 0; DELETE FROM t WHERE id > 990",
        );
      },
      snapshot,
      failing: {
        table: { database: "no_such_db" },
        stderr: /database "no_such_db" does not exist/,
      },
      slow: {
        table: {},
        async block() {
          // pg_dump waits for its lock on t while another session holds an exclusive one.
          const locker: ChildProcess = spawn(
            `${PG_BIN}/psql`,
            [
              "--no-psqlrc",
              "--dbname=suite",
              "--command",
              "BEGIN; LOCK TABLE t IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(60); COMMIT;",
            ],
            {
              uid: pg.user.uid,
              gid: pg.user.gid,
              env: { ...pg.env, PGAPPNAME: "locker" },
              stdio: "ignore",
            },
          );
          for (let i = 0; i < 100; i++) {
            const n = (
              await pg.sql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'locker' AND wait_event = 'PgSleep'",
              )
            ).trim();
            if (n === "1") break;
            await new Promise((r) => setTimeout(r, 50));
          }
          return async () => {
            locker.kill("SIGKILL");
            await pg.sql(
              "postgres",
              "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'locker'",
            );
          };
        },
        helperRunning: async () => pgDumpRunning(pg.user.uid),
      },
      garbage: {
        entries: [
          { path: "data/postgres.json", body: Buffer.from("{}\n") },
          {
            path: "data/db/suite/00000000.pgdump",
            body: Buffer.from("this is not a custom-format dump\n"),
          },
        ],
        codes: /^HELPER_FAILED$/, // the restore tool itself rejects it
      },
      health: {
        ok: /^PostgreSQL \d+(\.\d+)*.*, \d+ database\(s\)$/,
        unhealthy: {
          table: { database: "no_such_db" },
          message: /database "no_such_db" does not exist/,
        },
      },
      async teardown() {
        await pg.stop();
        rmSync(hookDir, { recursive: true, force: true });
      },
    };
  },
});
