/**
 * End to end through a real ferryd (started by root with --user, so mariadb-dump and the
 * mariadb client run through setpriv as the server's OS user): `ferry export` of a mariadb
 * app, a change, `ferry import` of the archive, and the database is back as it was.
 * Bounds: one InnoDB table of 10 000 rows with a trigger; ~10 s.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningFerryd, startFerryd } from "../../helpers/ferryd.js";
import { type MariaServer, startMariaServer } from "../../helpers/mariadb-server.js";
import { ensureUser, ferry, needsRoot, type TestUser } from "../../helpers/proc.js";

describe("mariadb app through ferryd", { skip: needsRoot, timeout: 120_000 }, () => {
  let my: MariaServer;
  let dir: string;
  let daemon: RunningFerryd;
  let backup: TestUser;
  let socket: string;
  const state = async () =>
    (
      await my.sql(
        "CHECKSUM TABLE t EXTENDED; SELECT n FROM c; SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop'",
        "shop",
      )
    ).trim();

  before(async () => {
    my = await startMariaServer();
    await my.sql(
      "CREATE DATABASE shop; USE shop; CREATE TABLE t (id INT PRIMARY KEY, v INT) ENGINE=InnoDB; CREATE TABLE c (n INT) ENGINE=InnoDB; INSERT INTO c VALUES (0); INSERT INTO t SELECT seq, seq FROM seq_1_to_10000; CREATE TRIGGER bump AFTER UPDATE ON t FOR EACH ROW UPDATE c SET n = n + 1;",
    );
    backup = ensureUser("ferry-e2e-bk");
    dir = mkdtempSync("/tmp/ferry-my-e2e-");
    chmodSync(dir, 0o755);
    socket = join(dir, "run/ferry.sock");
    const config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n[apps.shop]\ndriver = "mariadb"\ndatabase = "shop"\nos_user = "${my.user.name}"\nsocket = "${my.socket}"\nrestore = true\ntimeout = 60\n`,
    );
    daemon = await startFerryd({ config, serviceUser: backup });
  });
  after(async () => {
    await daemon?.stop();
    await my?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test("ferry export, then ferry import, brings the database back", async () => {
    const before = await state();
    const r = await ferry(socket, ["export", "shop"], { user: backup });
    assert.equal(r.code, 0, `${r.stderr}\n${daemon.log().slice(-3000)}`);
    assert.ok(r.stdout.includes(Buffer.from("data/db/shop/00000000.sql")));
    await my.sql("UPDATE t SET v = v + 1 WHERE id < 100", "shop");
    assert.notEqual(await state(), before);
    const imp = await ferry(socket, ["import", "shop"], { user: backup, input: r.stdout });
    assert.equal(imp.code, 0, `${imp.stderr}\n${daemon.log().slice(-3000)}`);
    assert.equal(await state(), before);
    assert.equal((await my.sql("SHOW DATABASES LIKE '%\\_\\_ferry\\_%'")).trim(), "");
  });
});
