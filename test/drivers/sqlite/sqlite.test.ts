/**
 * The sqlite driver against real database files owned by a test user (`ferry-sqlite`):
 * the shared suite, a backup taken while a writer process commits transfers (the restored
 * copy must be a consistent snapshot), a restore over a live database with a stale -wal
 * left by a crashed writer, and a parent directory swapped for a symlink.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import {
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { sqliteDriver } from "../../../src/drivers/sqlite/index.js";
import {
  archiveOf,
  asUser,
  backupArchive,
  ensureUser,
  hasProgram,
  payloadOf,
  removeDir,
  restoreArchive,
  runAs,
  runDriverSuite,
  settingsOf,
  waitFor,
} from "../suite.js";

const isRoot = process.getuid?.() === 0;
const skip = !isRoot
  ? "needs root"
  : !hasProgram("sqlite3") || !existsSync("/usr/bin/python3")
    ? "sqlite3 and python3 are needed"
    : false;

type User = ReturnType<typeof ensureUser>;
// The system interpreter: a user's PATH may hold shims (pyenv) the test user cannot read.
const PYTHON = "/usr/bin/python3";

function sql(user: User, db: string, statements: string): string {
  return runAs(user, ["sqlite3", "-bail", "-batch", db], statements);
}

/** Creates a fresh test directory owned by the user. */
function testDir(user: User): string {
  const dir = mkdtempSync(join(tmpdir(), "ferry-sqlite-test-"));
  chownSync(dir, user.uid, user.gid);
  return dir;
}

function seedDb(user: User, db: string): void {
  for (const s of ["", "-wal", "-shm", "-journal"]) removeDir(db + s);
  sql(
    user,
    db,
    `PRAGMA journal_mode=WAL;
     CREATE TABLE notes(id INTEGER PRIMARY KEY, body TEXT NOT NULL, blob BLOB);
     CREATE INDEX notes_body ON notes(body);
     WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 2000)
       INSERT INTO notes(body, blob) SELECT 'note ' || i, randomblob(100) FROM n;`,
  );
}

runDriverSuite({
  name: "sqlite",
  driver: sqliteDriver,
  skip,
  async setup() {
    const user = ensureUser("ferry-sqlite");
    const dir = testDir(user);
    const db = `${dir}/app.db`;
    const hookDir = `${dir}/hooks`;
    mkdirSync(hookDir);
    chownSync(hookDir, user.uid, user.gid);
    // Not a database: sqlite3 fails on it with a message on stderr.
    writeFileSync(`${dir}/junk.db`, Buffer.alloc(8192, 7));
    chownSync(`${dir}/junk.db`, user.uid, user.gid);
    // A rollback-journal database that a blocker holds an exclusive lock on.
    const locked = `${dir}/locked.db`;
    sql(user, locked, "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    let blocker: ChildProcess | undefined;
    return {
      table: { path: db, owner: user.name, timeout: 60 },
      hookUser: user.name,
      hookDir,
      async seed() {
        seedDb(user, db);
      },
      async mutate() {
        sql(
          user,
          db,
          "DELETE FROM notes WHERE id % 3 = 0; INSERT INTO notes(body) VALUES ('new');",
        );
      },
      async snapshot() {
        return sql(user, db, ".dump");
      },
      failing: { table: { path: `${dir}/junk.db` }, stderr: /file is not a database/ },
      slow: {
        table: { path: locked },
        async block() {
          const argv = asUser(user, ["sqlite3", locked]);
          blocker = spawn(argv[0] as string, argv.slice(1), { stdio: ["pipe", "pipe", "pipe"] });
          blocker.stdin?.write("BEGIN EXCLUSIVE;\nSELECT 'locked';\n");
          let out = "";
          blocker.stdout?.on("data", (d: Buffer) => {
            out += d.toString();
          });
          assert.ok(await waitFor(() => out.includes("locked"), 10_000), "blocker did not lock");
          return async () => {
            blocker?.stdin?.end();
            blocker?.kill();
            if (blocker?.exitCode === null) await once(blocker, "exit");
          };
        },
        async helperRunning() {
          try {
            // The blocker runs `sqlite3 <path>`; the helper is the one with VACUUM INTO.
            runAs(user, ["pgrep", "-u", String(user.uid), "-f", "VACUUM INTO"]);
            return true;
          } catch {
            return false;
          }
        },
      },
      garbage: {
        entries: [{ path: "data/database.sqlite", body: Buffer.alloc(16384, 0x42) }],
        codes: /^ARCHIVE_INVALID$/, // not an SQLite database
      },
      health: {
        ok: /^\/\S+: \d+ bytes$/,
        unhealthy: {
          table: { path: `${dir}/no-such.sqlite` },
          message: /no-such\.sqlite: .*(no such file|ENOENT)/i,
        },
      },
      async teardown() {
        removeDir(dir);
      },
    };
  },
});

describe("sqlite driver", { skip, timeout: 120_000 }, () => {
  let user: User;
  let dir: string;
  before(() => {
    user = ensureUser("ferry-sqlite");
    dir = testDir(user);
  });
  after(() => removeDir(dir));

  test("a backup taken while a writer commits restores to a consistent database", async () => {
    const db = `${dir}/bank.db`;
    sql(
      user,
      db,
      `PRAGMA journal_mode=WAL;
       CREATE TABLE accounts(id INTEGER PRIMARY KEY, balance INTEGER NOT NULL);
       CREATE TABLE transfers(id INTEGER PRIMARY KEY, src INT, dst INT, amount INT, pad BLOB);
       WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 100)
         INSERT INTO accounts(id, balance) SELECT i, 1000 FROM n;
       WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < 50000)
         INSERT INTO transfers(src, dst, amount, pad) SELECT 0, 0, 0, randomblob(1000) FROM n;`,
    );
    // Each transaction moves money and logs it: total balance stays 100000, and the
    // number of logged transfers equals the commits a snapshot saw.
    const writer = `
import sqlite3, random, sys
c = sqlite3.connect(sys.argv[1], timeout=30, isolation_level=None)
n = 0
while True:
    a, b = random.randint(1, 100), random.randint(1, 100)
    c.execute("BEGIN IMMEDIATE")
    c.execute("UPDATE accounts SET balance = balance - 7 WHERE id = ?", (a,))
    c.execute("UPDATE accounts SET balance = balance + 7 WHERE id = ?", (b,))
    c.execute("INSERT INTO transfers(src, dst, amount) VALUES (?, ?, 7)", (a, b))
    c.execute("COMMIT")
    n += 1
    if n % 5 == 0:
        print(n, flush=True)
`;
    const argv = asUser(user, [PYTHON, "-c", writer, db]);
    const proc = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    let commits = 0;
    let pending = "";
    proc.stdout.on("data", (d: Buffer) => {
      // Whole lines only: a chunk may end in the middle of a number (or be just "\n").
      pending += d.toString();
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const l of lines) if (/^\d+$/.test(l)) commits = Math.max(commits, Number(l));
    });
    try {
      assert.ok(await waitFor(() => commits > 0, 10_000), "writer did not start");
      const before = commits;
      const app = {
        name: "bank",
        settings: settingsOf(sqliteDriver, { path: db, owner: user.name, restore: true }),
      };
      const bytes = await backupArchive(sqliteDriver, app);
      const during = commits;
      assert.ok(during > before, `the writer committed during the backup (${before} → ${during})`);

      // Restore into a fresh path and check the invariants of that snapshot.
      const target = `${dir}/bank-restored.db`;
      const app2 = {
        name: "bank2",
        settings: settingsOf(sqliteDriver, { path: target, owner: user.name, restore: true }),
      };
      await restoreArchive(sqliteDriver, app2, bytes);
      const out = sql(
        user,
        target,
        "PRAGMA integrity_check; SELECT sum(balance) FROM accounts; SELECT count(*) FROM transfers WHERE amount = 7;",
      )
        .trim()
        .split("\n");
      assert.equal(out[0], "ok");
      assert.equal(out[1], "100000");
      assert.ok(Number(out[2]) > 0, "the snapshot holds committed transfers");
      const st = statSync(target);
      assert.equal(st.uid, user.uid);
    } finally {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGKILL");
        await once(proc, "exit");
      }
    }
  });

  test("restore over a database with a stale -wal from a crashed writer", async () => {
    const db = `${dir}/crash.db`;
    seedDb(user, db);
    const app = {
      name: "crash",
      settings: settingsOf(sqliteDriver, { path: db, owner: user.name, restore: true }),
    };
    const bytes = await backupArchive(sqliteDriver, app);
    const expected = sql(user, db, "SELECT count(*), sum(length(body)) FROM notes;");
    // A writer that commits into the WAL and is killed before it can checkpoint.
    const argv = asUser(user, [
      PYTHON,
      "-c",
      `import sqlite3, sys, os
c = sqlite3.connect(sys.argv[1], isolation_level=None)
c.execute("PRAGMA wal_autocheckpoint=0")
for i in range(500): c.execute("INSERT INTO notes(body) VALUES ('stale wal row')")
print("ready", flush=True)
os.kill(os.getpid(), 9)`,
      db,
    ]);
    const crash = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    await once(crash, "exit");
    assert.ok(statSync(`${db}-wal`).size > 0, "the crashed writer left a -wal");
    await restoreArchive(sqliteDriver, app, bytes);
    assert.equal(sql(user, db, "SELECT count(*), sum(length(body)) FROM notes;"), expected);
    assert.equal(sql(user, db, "PRAGMA integrity_check;").trim(), "ok");
    const st = statSync(db);
    assert.equal(st.uid, user.uid);
    // No staging or old files are left beside it.
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.includes("ferry-")),
      [],
    );
  });

  test("restore refuses a path whose directory was swapped for a symlink", async () => {
    const real = `${dir}/real`;
    mkdirSync(real);
    chownSync(real, user.uid, user.gid);
    const db = `${real}/app.db`;
    seedDb(user, db);
    const app = {
      name: "swap",
      settings: settingsOf(sqliteDriver, { path: db, owner: user.name, restore: true }),
    };
    const bytes = await backupArchive(sqliteDriver, app);
    // The app's user moves the directory away and puts a symlink to elsewhere in its place.
    const elsewhere = `${dir}/elsewhere`;
    mkdirSync(elsewhere);
    renameSync(real, `${dir}/moved`);
    symlinkSync(elsewhere, real);
    await assert.rejects(restoreArchive(sqliteDriver, app, bytes), /symlink|not a directory/);
    assert.deepEqual(readdirSync(elsewhere), []);
  });

  /** journal_mode, page_size, auto_vacuum, user_version, application_id of `db`. */
  const settingsOfDb = (db: string) =>
    sql(
      user,
      db,
      "PRAGMA journal_mode; PRAGMA page_size; PRAGMA auto_vacuum; PRAGMA user_version; PRAGMA application_id;",
    )
      .trim()
      .split("\n");

  function tunedDb(db: string): void {
    for (const s of ["", "-wal", "-shm", "-journal"]) removeDir(db + s);
    sql(
      user,
      db,
      `PRAGMA page_size=8192; PRAGMA auto_vacuum=INCREMENTAL; PRAGMA user_version=42;
       PRAGMA application_id=1179800146; PRAGMA journal_mode=WAL;
       CREATE TABLE t(x); INSERT INTO t VALUES (1), (2), (3);`,
    );
  }

  test("sqlite-restore-drops-wal-mode: journal mode, page size, auto_vacuum and user_version survive", async () => {
    const db = `${dir}/tuned.db`;
    tunedDb(db);
    const want = ["wal", "8192", "2", "42", "1179800146"];
    assert.deepEqual(settingsOfDb(db), want);
    const app = {
      name: "tuned",
      settings: settingsOf(sqliteDriver, { path: db, owner: user.name, restore: true }),
    };
    const bytes = await backupArchive(sqliteDriver, app);
    // The archived file itself is a WAL database (header bytes 18-19 are 2).
    const body = (await payloadOf(bytes))[0]?.body as Buffer;
    assert.deepEqual([body[18], body[19]], [2, 2]);
    // Restored over the live database (now switched to a rollback journal, so only the
    // archive can bring WAL back) and into a new path.
    sql(user, db, "PRAGMA journal_mode=DELETE; PRAGMA user_version=7;");
    await restoreArchive(sqliteDriver, app, bytes);
    assert.deepEqual(settingsOfDb(db), want);
    const fresh = `${dir}/tuned-new.db`;
    await restoreArchive(
      sqliteDriver,
      {
        name: "tuned-new",
        settings: settingsOf(sqliteDriver, { path: fresh, owner: user.name, restore: true }),
      },
      bytes,
    );
    assert.deepEqual(settingsOfDb(fresh), want);
    assert.equal(sql(user, fresh, "SELECT count(*) FROM t;").trim(), "3");
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.includes("ferry-")),
      [],
    );
  });

  test("sqlite-old-archive-over-wal-database: an archive without WAL mode keeps the live WAL mode", async () => {
    const db = `${dir}/older.db`;
    tunedDb(db);
    const app = {
      name: "older",
      settings: settingsOf(sqliteDriver, { path: db, owner: user.name, restore: true }),
    };
    // What a backup made before WAL was kept looks like: VACUUM INTO's rollback-journal
    // copy, header bytes 18-19 = 1.
    const body = Buffer.from(
      (await payloadOf(await backupArchive(sqliteDriver, app)))[0]?.body as Buffer,
    );
    body[18] = 1;
    body[19] = 1;
    const old = await archiveOf(
      { app: "older", driver: "sqlite", driver_type: "sqlite.v1", driver_version: 1 },
      [{ path: "data/database.sqlite", body }],
    );
    await restoreArchive(sqliteDriver, app, old);
    assert.deepEqual(settingsOfDb(db), ["wal", "8192", "2", "42", "1179800146"]);
    assert.equal(sql(user, db, "PRAGMA integrity_check;").trim(), "ok");
    // Over a database in rollback-journal mode the archive's mode is kept as it is.
    sql(user, db, "PRAGMA journal_mode=DELETE;");
    await restoreArchive(sqliteDriver, app, old);
    assert.equal(settingsOfDb(db)[0], "delete");
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.includes("ferry-")),
      [],
    );
  });

  test("the archive holds one plain database file owned by the owner", async () => {
    const db = `${dir}/plain.db`;
    seedDb(user, db);
    const app = {
      name: "plain",
      settings: settingsOf(sqliteDriver, { path: db, owner: user.name }),
    };
    const entries = await payloadOf(await backupArchive(sqliteDriver, app));
    assert.deepEqual(
      entries.map((e) => e.path),
      ["data/database.sqlite"],
    );
    assert.equal(entries[0]?.body.subarray(0, 16).toString("latin1"), "SQLite format 3\0");
    assert.ok(!existsSync(`${db}.ferry`));
  });
});
