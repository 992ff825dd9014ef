/**
 * End to end through a real ferryd (started by root with --user, so it holds the service
 * capabilities and runs pg_dump/pg_restore through setpriv as the database's OS user):
 * `ferry export` of a postgres app, a change, `ferry import` of the archive, and the
 * database is back as it was. Bounds: pgbench scale 1 (100 000 accounts); ~10 s.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningFerryd, startFerryd } from "../../helpers/ferryd.js";
import { type PgServer, runAs, startPgServer } from "../../helpers/pg-server.js";
import { ensureUser, ferry, needsRoot, type TestUser } from "../../helpers/proc.js";

describe("postgres app through ferryd", { skip: needsRoot, timeout: 120_000 }, () => {
  let pg: PgServer;
  let dir: string;
  let daemon: RunningFerryd;
  let backup: TestUser;
  let socket: string;
  const sum = async () =>
    (
      await pg.sql(
        "bench",
        "SELECT sum(abalance) || ':' || count(*) || ':' || md5(string_agg(aid || '/' || abalance, ',' ORDER BY aid)) FROM pgbench_accounts",
      )
    ).trim();

  before(async () => {
    pg = await startPgServer();
    await pg.sql("postgres", "CREATE DATABASE bench");
    await runAs(pg.user, ["pgbench", "--initialize", "--scale=1", "--quiet", "bench"], {
      env: pg.env,
    });
    backup = ensureUser("ferry-e2e-bk");
    dir = mkdtempSync("/tmp/ferry-pg-e2e-");
    chmodSync(dir, 0o755);
    socket = join(dir, "run/ferry.sock");
    const config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n[apps.bench]\ndriver = "postgres"\ndatabase = "bench"\nos_user = "${pg.user.name}"\nhost = "${pg.socketDir}"\nport = ${pg.port}\nrestore = true\ntimeout = 60\n`,
    );
    daemon = await startFerryd({ config, serviceUser: backup });
  });
  after(async () => {
    await daemon?.stop();
    await pg?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test("ferry export, then ferry import, brings the database back", async () => {
    const before = await sum();
    const r = await ferry(socket, ["export", "bench"], { user: backup });
    assert.equal(r.code, 0, r.stderr);
    const tarBytes = r.stdout;
    assert.ok(tarBytes.includes(Buffer.from("data/db/bench/00000000.pgdump")));

    await pg.sql("bench", "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid < 5000");
    assert.notEqual(await sum(), before);
    const imp = await ferry(socket, ["import", "bench"], { user: backup, input: tarBytes });
    assert.equal(imp.code, 0, imp.stderr);
    assert.equal(await sum(), before);
    const leftovers = (
      await pg.sql("postgres", "SELECT datname FROM pg_database WHERE datname LIKE '%__ferry_%'")
    ).trim();
    assert.equal(leftovers, "");
  });
});
