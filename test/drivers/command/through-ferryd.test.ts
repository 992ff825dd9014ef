/**
 * The sqlite and command drivers through a real ferryd started as root with --user (the
 * backup user plus the service capabilities), driven by the `ferry` CLI as that user:
 * the command helper reports, from its own /proc/self/status, the app's uid and empty
 * CapEff/CapAmb; a helper or hook past its timeout is stopped (gone, grandchild
 * included) although it runs as another uid; an SQLite database exported and imported
 * comes back whole.
 *
 * Bounds: one tiny database and one tiny command; each CLI call has a 2-minute timeout.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningFerryd, startFerryd } from "../../helpers/ferryd.js";
import {
  ensureUser,
  ferry,
  processesOf,
  type TestUser,
  waitProcessesGone,
} from "../../helpers/proc.js";
import { hasProgram, removeDir, runAs } from "../suite.js";

const isRoot = process.getuid?.() === 0;
const skip = !isRoot ? "needs root" : !hasProgram("sqlite3") ? "sqlite3 is not installed" : false;

describe("sqlite and command apps through a real ferryd", { skip, timeout: 120_000 }, () => {
  let dir: string;
  let svc: TestUser;
  let app: TestUser;
  let daemon: RunningFerryd;
  let socket: string;
  let db: string;
  // sleep arguments no other test uses, to find the processes by their argv.
  const helperMarker = `47.${process.pid}`;
  const hookMarker = `53.${process.pid}`;

  before(async () => {
    svc = ensureUser("ferry-drv-svc");
    app = ensureUser("ferry-sqlite");
    dir = mkdtempSync("/tmp/ferry-drv-e2e-");
    chmodSync(dir, 0o755);
    const data = join(dir, "data");
    mkdirSync(data);
    chownSync(data, app.uid, app.gid);
    db = join(data, "app.db");
    runAs(app, [
      "sqlite3",
      db,
      "PRAGMA journal_mode=WAL; CREATE TABLE t(x); INSERT INTO t VALUES (1),(2),(3);",
    ]);
    const run = join(dir, "run");
    mkdirSync(run, { mode: 0o700 });
    chownSync(run, svc.uid, svc.gid);
    socket = join(run, "ferry.sock");
    const config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1
socket = "${socket}"
state_dir = "${dir}/state"

[apps.db]
driver = "sqlite"
path = "${db}"
owner = "${app.name}"
restore = true

[apps.status]
driver = "command"
backup_command = ["cat", "/proc/self/status"]
os_user = "${app.name}"

[apps.sleepy]
driver = "command"
backup_command = ["sleep", "${helperMarker}"]
os_user = "${app.name}"
timeout = 1

[apps.hooky]
driver = "command"
backup_command = ["true"]
os_user = "${app.name}"
hooks = { pre_backup = ["sh", "-c", 'sleep "$0" </dev/null >/dev/null 2>&1 & wait', "${hookMarker}"], timeout = 1 }
`,
    );
    daemon = await startFerryd({ config, serviceUser: svc });
  });
  after(async () => {
    await daemon?.stop();
    if (dir !== undefined) removeDir(dir);
  });

  test("the command helper runs as the app's user with no capabilities", async () => {
    const r = await ferry(socket, ["export", "status"], { user: svc });
    assert.equal(r.code, 0, r.stderr);
    const status = r.stdout.toString("latin1");
    assert.match(status, new RegExp(`Uid:\\t${app.uid}\\t${app.uid}\\t${app.uid}\\t${app.uid}`));
    assert.match(status, /CapEff:\t0000000000000000/);
    assert.match(status, /CapAmb:\t0000000000000000/);
    assert.match(status, /CapPrm:\t0000000000000000/);
    // ferryd itself does hold capabilities, so the zeros above are the helper's doing.
    const ferrydStatus = execFileSync("cat", [`/proc/${daemon.pid}/status`]).toString();
    assert.doesNotMatch(ferrydStatus, /CapAmb:\t0000000000000000/);
  });

  // ferryd runs as the backup user and the helper as the app's user: stopping it at a
  // timeout crosses that boundary (plain kill(2) from ferryd's uid gets EPERM).
  for (const [what, appName, marker, error] of [
    [
      "a helper past the app's timeout",
      "sleepy",
      () => helperMarker,
      /timed out.*\[HELPER_TIMEOUT\]/,
    ],
    [
      "a hook past hooks.timeout (and its grandchild)",
      "hooky",
      () => hookMarker,
      /pre_backup hook of hooky timed out/,
    ],
  ] as const) {
    test(`${what} is stopped by ferryd: the export fails promptly and no process of the app's user is left`, async () => {
      const started = Date.now();
      // The output directory is the backup user's own: ferry checks that -o can be written
      // before it asks ferryd (OUTPUT_NOT_WRITABLE), and the test is about the helper.
      const out = join(dir, "out");
      mkdirSync(out, { recursive: true });
      chownSync(out, svc.uid, svc.gid);
      const r = await ferry(socket, ["export", appName, "-o", join(out, `${appName}.tar`)], {
        user: svc,
      });
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, error);
      assert.ok(Date.now() - started < 15_000, `the export took ${Date.now() - started} ms`);
      const left = await waitProcessesGone(app.uid, marker(), 5000);
      assert.deepEqual(left, [], `still running as ${app.name}: ${JSON.stringify(left)}`);
      assert.deepEqual(processesOf(app.uid), [], `a process of ${app.name} is left`);
    });
  }

  test("an SQLite database exported and imported through ferryd comes back whole", async () => {
    const ex = await ferry(socket, ["export", "db"], { user: svc });
    assert.equal(ex.code, 0, ex.stderr);
    runAs(app, ["sqlite3", db, "DELETE FROM t; INSERT INTO t VALUES (99);"]);
    const im = await ferry(socket, ["import", "db"], { user: svc, input: ex.stdout });
    assert.equal(im.code, 0, im.stderr);
    assert.equal(runAs(app, ["sqlite3", db, "SELECT group_concat(x) FROM t;"]).trim(), "1,2,3");
    assert.equal(runAs(app, ["sqlite3", db, "PRAGMA integrity_check;"]).trim(), "ok");
  });
});
