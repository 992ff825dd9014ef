/**
 * The mariadb driver through the shared driver suite (test/drivers/suite.ts), against a
 * throwaway server this file starts (test/helpers/mariadb-server.ts). Needs root (hooks
 * run as the server's test user). Bounds: one InnoDB table of 1 000 rows; ~10 s.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { mariadbDriver } from "../../../src/drivers/mariadb/index.js";
import { type MariaServer, startMariaServer } from "../../helpers/mariadb-server.js";
import { runDriverSuite } from "../suite.js";

function dumpRunning(uid: number): boolean {
  return readdirSync("/proc").some((d) => {
    try {
      const s = readFileSync(`/proc/${d}/status`, "utf8");
      return /^Name:\s*mariadb-dump$/m.test(s) && Number(/^Uid:\s*([0-9]+)/m.exec(s)?.[1]) === uid;
    } catch {
      return false;
    }
  });
}

runDriverSuite({
  name: "mariadb",
  driver: mariadbDriver,
  skip: process.getuid?.() === 0 ? false : "needs root",
  async setup() {
    const my: MariaServer = await startMariaServer();
    const hookDir = mkdtempSync(join(tmpdir(), "ferry-my-hooks-"));
    chownSync(hookDir, my.user.uid, my.user.gid);
    await my.sql("CREATE DATABASE suite");
    return {
      table: { database: "suite", os_user: my.user.name, socket: my.socket, timeout: 60 },
      hookUser: my.user.name,
      hookDir,
      async seed() {
        await my.sql(
          "DROP TABLE IF EXISTS t; CREATE TABLE t (id INT PRIMARY KEY, v VARCHAR(64)) ENGINE=InnoDB; INSERT INTO t SELECT seq, MD5(seq) FROM seq_1_to_1000",
          "suite",
        );
      },
      async mutate() {
        await my.sql(
          "UPDATE t SET v = 'changed' WHERE id % 7 = 0; DELETE FROM t WHERE id > 990",
          "suite",
        );
      },
      snapshot: async () => (await my.sql("CHECKSUM TABLE t EXTENDED", "suite")).trim(),
      failing: { table: { database: "no_such_db" }, stderr: /Unknown database/ },
      slow: {
        table: {},
        async block() {
          // The dump's SELECT waits for its metadata lock while a session holds LOCK TABLES … WRITE.
          const locker: ChildProcess = spawn(
            "mariadb",
            [
              `--socket=${my.socket}`,
              `--user=${my.user.name}`,
              "--database=suite",
              "--execute=LOCK TABLES t WRITE; DO SLEEP(60)",
            ],
            { uid: my.user.uid, gid: my.user.gid, stdio: "ignore" },
          );
          for (let i = 0; i < 100; i++) {
            if (
              (
                await my.sql(
                  "SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO LIKE 'DO SLEEP%'",
                )
              ).trim() === "1"
            )
              break;
            await new Promise((r) => setTimeout(r, 50));
          }
          return async () => {
            locker.kill("SIGKILL");
            for (const id of (
              await my.sql(
                "SELECT ID FROM information_schema.PROCESSLIST WHERE INFO LIKE 'DO SLEEP%'",
              )
            ).split("\n")) {
              if (id.trim() !== "") await my.sql(`KILL ${Number(id)}`).catch(() => {});
            }
          };
        },
        helperRunning: async () => dumpRunning(my.user.uid),
      },
      garbage: {
        entries: [
          { path: "data/mariadb.json", body: Buffer.from("{}\n") },
          { path: "data/db/suite/00000000.sql", body: Buffer.from("this is not SQL;\n") },
        ],
        codes: /^HELPER_FAILED$/, // the restore tool itself rejects it
      },
      health: {
        ok: /^MariaDB \d+\.\d+\.\d+/,
        unhealthy: {
          table: { socket: "/nonexistent/ferry-test/mysqld.sock" },
          message: /Can't connect|No such file/,
        },
      },
      async teardown() {
        await my.stop();
        rmSync(hookDir, { recursive: true, force: true });
      },
    };
  },
});
