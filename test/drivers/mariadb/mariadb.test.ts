/**
 * The mariadb driver against a real MariaDB server that this file starts itself
 * (test/helpers/mariadb-server.ts). Bounds: a `shop` database of InnoDB tables (2 000
 * accounts, a trigger, a view on a view, a procedure, a function, an event) and a `filler`
 * table of 200 000 random rows (~14 MB of dump, so a dump has several 8 MiB parts); a
 * writer committing transfers for at most 6 s during one dump. Whole file: ~20-40 s.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { FerryError } from "../../../src/core/errors.js";
import { type MariadbConfig, mariadbSchema } from "../../../src/drivers/mariadb/config.js";
import { mariadbDriver } from "../../../src/drivers/mariadb/index.js";
import { type MariaServer, startMariaServer } from "../../helpers/mariadb-server.js";
import { asUser, isRoot } from "../../helpers/proc.js";
import {
  backupBytes,
  manifestOf,
  readEntries,
  rebuildArchive,
  restoreBytes,
} from "../../helpers/roundtrip.js";
import { testState } from "../../helpers/state.js";

let my: MariaServer;

function config(extra: Record<string, unknown>): MariadbConfig {
  return mariadbSchema.parse({
    driver: "mariadb",
    os_user: my.user.name,
    socket: my.socket,
    restore: true,
    timeout: 120,
    ...extra,
  });
}

const SCHEMA = `
CREATE DATABASE shop;
USE shop;
CREATE TABLE accounts (id INT PRIMARY KEY, balance BIGINT NOT NULL) ENGINE=InnoDB;
CREATE TABLE transfers (id INT AUTO_INCREMENT PRIMARY KEY, src INT, dst INT, amount INT) ENGINE=InnoDB;
CREATE TABLE stats (k VARCHAR(10) PRIMARY KEY, n BIGINT NOT NULL) ENGINE=InnoDB;
CREATE TABLE filler (id INT PRIMARY KEY, v CHAR(64) NOT NULL) ENGINE=InnoDB;
INSERT INTO accounts SELECT seq, 1000 FROM seq_1_to_2000;
INSERT INTO stats VALUES ('transfers', 0);
INSERT INTO filler SELECT seq, CONCAT(MD5(RAND()), MD5(RAND())) FROM seq_1_to_200000;
CREATE TRIGGER count_transfer AFTER INSERT ON transfers FOR EACH ROW UPDATE stats SET n = n + 1 WHERE k = 'transfers';
CREATE VIEW rich AS SELECT id, balance FROM accounts WHERE balance > 1000;
CREATE VIEW very_rich AS SELECT id FROM rich WHERE balance > 1500;
CREATE FUNCTION total() RETURNS BIGINT READS SQL DATA RETURN (SELECT SUM(balance) FROM accounts);
DELIMITER //
CREATE PROCEDURE transfer_loop(n INT)
BEGIN
  DECLARE i INT DEFAULT 0;
  DECLARE a INT; DECLARE b INT; DECLARE x INT;
  WHILE i < n DO
    SET a = 1 + FLOOR(RAND() * 2000), b = 1 + FLOOR(RAND() * 2000), x = 1 + FLOOR(RAND() * 50);
    START TRANSACTION;
    UPDATE accounts SET balance = balance - x WHERE id = a;
    UPDATE accounts SET balance = balance + x WHERE id = b;
    INSERT INTO transfers (src, dst, amount) VALUES (a, b, x);
    COMMIT;
    SET i = i + 1;
  END WHILE;
END//
DELIMITER ;
CREATE EVENT nightly ON SCHEDULE EVERY 1 DAY DISABLE DO DELETE FROM transfers WHERE id < 0;
`;

async function checksums(db: string): Promise<string> {
  return (
    await my.sql("CHECKSUM TABLE accounts, transfers, stats, filler EXTENDED", db)
  ).replaceAll(`${db}.`, "");
}

async function invariants(
  db: string,
): Promise<{ total: number; transfers: number; counted: number }> {
  const [total, transfers, counted] = (
    await my.sql(
      "SELECT (SELECT SUM(balance) FROM accounts), (SELECT COUNT(*) FROM transfers), (SELECT n FROM stats)",
      db,
    )
  )
    .trim()
    .split("\t")
    .map(Number);
  return { total: total as number, transfers: transfers as number, counted: counted as number };
}

async function scratchDatabases(): Promise<string[]> {
  return (await my.sql("SHOW DATABASES")).split("\n").filter((d) => d.includes("__ferry_"));
}

// While a procedure runs, INFO shows its current statement, so match on the database.
const WRITERS =
  "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = 'shop' AND ID <> CONNECTION_ID()";

/** Kills the writer and its statement on the server (which outlives a killed client). */
async function stopWriter(writer: ReturnType<typeof spawn>): Promise<void> {
  writer.kill("SIGKILL");
  for (const id of (await my.sql(WRITERS)).split("\n")) {
    if (id.trim() !== "") await my.sql(`KILL ${Number(id)}`).catch(() => {});
  }
  for (let i = 0; i < 50; i++) {
    if ((await my.sql(WRITERS)).trim() === "") return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the writer's statement did not stop");
}

function processes(comm: string, uid: number): number {
  let n = 0;
  for (const d of readdirSync("/proc")) {
    if (!/^[0-9]+$/.test(d)) continue;
    try {
      const status = readFileSync(`/proc/${d}/status`, "utf8");
      if (
        /^Name:\s*(.*)$/m.exec(status)?.[1] === comm &&
        Number(/^Uid:\s*([0-9]+)/m.exec(status)?.[1]) === uid
      )
        n++;
    } catch {}
  }
  return n;
}

describe("mariadb driver", { timeout: 180_000 }, () => {
  before(async () => {
    my = await startMariaServer();
    await my.sql(SCHEMA);
  });
  after(async () => {
    await my?.stop();
  });

  test("config: exactly one of database/databases, unknown keys refused", () => {
    assert.throws(() => config({}), /exactly one of/);
    assert.throws(() => config({ database: "a", all: true }), /all/);
    assert.equal(config({ database: "a" }).os_user, my.user.name);
  });

  test("InnoDB round trip with trigger, views, routines and event; originals replaced", async () => {
    const cfg = config({ database: "shop" });
    await my.sql("CALL transfer_loop(200)", "shop");
    const before = await checksums("shop");
    const bytes = await backupBytes(mariadbDriver, cfg);
    const entries = await readEntries(bytes);
    const meta = JSON.parse(String(entries[0]?.body));
    assert.match(meta.server_version, /MariaDB/);
    assert.match(meta.mariadb_dump_version, /mariadb-dump/);
    assert.ok(entries.length >= 3, "the dump spans several parts");
    assert.ok(entries.slice(1).every((e) => /^data\/db\/shop\/[0-9]{8}\.sql$/.test(e.path)));
    assert.match(
      String(entries[1]?.body.subarray(0, 60)),
      /^\/\*M!999999\\- enable the sandbox mode \*\//,
    );
    assert.deepEqual((await manifestOf(bytes)).databases, ["shop"]);

    await my.sql(
      "CALL transfer_loop(50); DROP VIEW very_rich; DROP TRIGGER count_transfer; CREATE TABLE extra (x INT); DROP PROCEDURE transfer_loop;",
      "shop",
    );
    assert.notEqual(await checksums("shop"), before);
    const warnings: string[] = [];
    await restoreBytes(mariadbDriver, cfg, bytes, { warnings });
    assert.deepEqual(warnings, []);
    assert.equal(await checksums("shop"), before);
    const tables = (
      await my.sql(
        "SELECT TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'shop' ORDER BY 1",
      )
    ).trim();
    assert.equal(
      tables,
      "accounts\tBASE TABLE\nfiller\tBASE TABLE\nrich\tVIEW\nstats\tBASE TABLE\ntransfers\tBASE TABLE\nvery_rich\tVIEW",
    );
    // The trigger, procedure, function and event are back and work on the live tables.
    await my.sql("CALL transfer_loop(10)", "shop");
    const inv = await invariants("shop");
    assert.equal(inv.counted, inv.transfers);
    assert.equal(inv.total, 2000 * 1000);
    assert.equal((await my.sql("SELECT total()", "shop")).trim(), String(2000 * 1000));
    assert.equal(
      (
        await my.sql("SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'shop'")
      ).trim(),
      "1",
    );
    // The restored view is the one backed up: it selects what its definition says, on the
    // live tables (a missing or different view would error or count something else).
    const viaView = (await my.sql("SELECT COUNT(*) FROM very_rich", "shop")).trim();
    const direct = (
      await my.sql("SELECT COUNT(*) FROM accounts WHERE balance > 1500", "shop")
    ).trim();
    assert.match(viaView, /^\d+$/);
    assert.equal(viaView, direct);
    assert.deepEqual(await scratchDatabases(), []);
  });

  test("a dump taken while transactions commit restores to a consistent database", async () => {
    const cfg = config({ database: "shop" });
    const asRoot = process.getuid?.() === 0;
    const writer = spawn(
      "mariadb",
      [
        `--socket=${my.socket}`,
        `--user=${my.user.name}`,
        "--database=shop",
        "--execute=CALL transfer_loop(1000000)",
      ],
      {
        ...(asRoot ? { uid: my.user.uid, gid: my.user.gid } : {}),
        stdio: "ignore",
      },
    );
    const stop = setTimeout(() => void stopWriter(writer).catch(() => {}), 6000);
    try {
      const start = (await invariants("shop")).transfers;
      let now = start;
      while (now < start + 300) {
        await new Promise((r) => setTimeout(r, 100));
        now = (await invariants("shop")).transfers;
      }
      const bytes = await backupBytes(mariadbDriver, cfg);
      const during = (await invariants("shop")).transfers;
      await stopWriter(writer);
      await restoreBytes(mariadbDriver, cfg, bytes);
      const restored = await invariants("shop");
      assert.equal(restored.total, 2000 * 1000, "money is conserved in the snapshot");
      assert.equal(restored.counted, restored.transfers, "the counter matches the log");
      assert.ok(
        restored.transfers >= start + 300 && restored.transfers < during,
        `${start} < ${restored.transfers} < ${during}`,
      );
    } finally {
      clearTimeout(stop);
      await stopWriter(writer);
    }
  });

  test("a restore whose dump fails to load leaves the original intact", async () => {
    const cfg = config({ database: "shop" });
    const bytes = await backupBytes(mariadbDriver, cfg);
    const entries = await readEntries(bytes);
    await my.sql("INSERT INTO transfers (src, dst, amount) VALUES (1, 1, 0)", "shop");
    const before = await checksums("shop");
    const dump = Buffer.concat(entries.slice(1).map((e) => e.body));
    const cut = dump.indexOf("INSERT INTO `filler`") + 5000;
    const broken = await rebuildArchive(await manifestOf(bytes), [
      entries[0] as { path: string; body: Buffer },
      { path: "data/db/shop/00000000.sql", body: dump.subarray(0, cut) },
    ]);
    await assert.rejects(
      restoreBytes(mariadbDriver, cfg, broken),
      (e: unknown) =>
        e instanceof FerryError && e.code === "HELPER_FAILED" && /ERROR/.test(e.message),
    );
    assert.equal(await checksums("shop"), before);
    assert.deepEqual(await scratchDatabases(), []);
    // A flipped byte: the archive's end record no longer matches; nothing is touched.
    const corrupt = Buffer.from(bytes);
    const at = bytes.indexOf("INSERT INTO `filler`") + 3000;
    corrupt[at] = (corrupt[at] as number) ^ 0x01;
    await assert.rejects(
      restoreBytes(mariadbDriver, cfg, corrupt),
      (e: unknown) => e instanceof FerryError,
    );
    assert.equal(await checksums("shop"), before);
    assert.deepEqual(await scratchDatabases(), []);
  });

  test("mariadb-archive-runs-shell-command: \\! and system in a dump run nothing (--sandbox)", async (t) => {
    const help = execFileSync("mariadb", ["--help"], { env: { PATH: "/usr/bin:/bin" } }).toString();
    if (!/^\s+--sandbox\s/m.test(help)) {
      t.skip("this mariadb client has no --sandbox");
      return;
    }
    await my.sql(
      "CREATE DATABASE tiny; CREATE TABLE tiny.t (x INT) ENGINE=InnoDB; INSERT INTO tiny.t VALUES (1)",
    );
    const cfg = config({ database: "tiny" });
    const bytes = await backupBytes(mariadbDriver, cfg);
    const entries = await readEntries(bytes);
    const dir = mkdtempSync("/tmp/ferry-sandbox-");
    chmodSync(dir, 0o777); // the app's OS user could create files here
    try {
      // Control: the client, without --sandbox, does run such a line as the app's user.
      // (as root, as the app's user; as a normal user the server runs as that user already)
      const control = asUser(isRoot ? my.user : undefined, [
        "mariadb",
        `--socket=${my.socket}`,
        `--user=${my.user.name}`,
        "--batch",
      ]);
      execFileSync(control[0] as string, control.slice(1), {
        input: `\\! touch ${dir}/control\n`,
        env: { PATH: "/usr/bin:/bin" },
      });
      assert.ok(existsSync(join(dir, "control")), "the control command did not run");
      // The attacker's archive: the dump's own sandbox line removed, shell commands added.
      const dump = Buffer.concat(entries.slice(1).map((e) => e.body))
        .toString("utf8")
        .replace(/^\/\*M!999999\\- enable the sandbox mode \*\/\n/m, "");
      for (const evil of [`\\! touch ${dir}/bang\n`, `system touch ${dir}/system\n`]) {
        const archive = await rebuildArchive(await manifestOf(bytes), [
          entries[0] as { path: string; body: Buffer },
          { path: "data/db/tiny/00000000.sql", body: Buffer.from(evil + dump) },
        ]);
        await assert.rejects(
          restoreBytes(mariadbDriver, cfg, archive),
          (e: unknown) =>
            e instanceof FerryError && e.code === "HELPER_FAILED" && /sandbox/i.test(e.message),
        );
      }
      assert.deepEqual(readdirSync(dir), ["control"], "a command from the archive ran");
      assert.equal((await my.sql("SELECT x FROM t", "tiny")).trim(), "1");
      assert.deepEqual(await scratchDatabases(), []);
      // The dump itself (with its sandbox line) still restores.
      await restoreBytes(mariadbDriver, cfg, bytes);
      assert.equal((await my.sql("SELECT x FROM t", "tiny")).trim(), "1");
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await my.sql("DROP DATABASE tiny");
    }
  });

  test("an archive cannot restore a database the app does not declare", async () => {
    await my.sql(
      "CREATE DATABASE other; CREATE TABLE other.t (x INT) ENGINE=InnoDB; INSERT INTO other.t VALUES (1)",
    );
    const bytes = await backupBytes(mariadbDriver, config({ database: "other" }));
    await assert.rejects(
      restoreBytes(mariadbDriver, config({ database: "shop" }), bytes),
      /not one this application declares/,
    );
    assert.deepEqual(await scratchDatabases(), []);
  });

  test("a failing mariadb-dump fails the backup with its stderr", async () => {
    await assert.rejects(
      backupBytes(mariadbDriver, config({ databases: ["shop", "no_such_db"] })),
      (e: unknown) =>
        e instanceof FerryError &&
        e.code === "HELPER_FAILED" &&
        /mariadb-dump of no_such_db/.test(e.message) &&
        /Unknown database/.test(e.message),
    );
  });

  test("returning the backup early kills mariadb-dump", async () => {
    const it = mariadbDriver
      .backup(config({ database: "shop" }), {
        app: "t",
        signal: new AbortController().signal,
        warnings: [],
        state: testState(),
      })
      [Symbol.asyncIterator]();
    assert.equal((await it.next()).value?.header.path, "data/mariadb.json");
    assert.equal((await it.next()).value?.header.size, 8 * 1024 * 1024);
    assert.equal(processes("mariadb-dump", my.user.uid), 1, "mariadb-dump is still running");
    await it.return?.(undefined);
    assert.equal(processes("mariadb-dump", my.user.uid), 0);
  });
});
