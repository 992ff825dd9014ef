/**
 * ferryd can always stop what it starts (docs/security.md). A helper runs as the
 * application's user, which ferryd (the backup user, without CAP_KILL) may not signal;
 * before the supervisor, a helper that ignored SIGTERM outlived every timeout, cancel,
 * disconnect and shutdown, the EPERM of the second kill crashed ferryd, and a ferryd killed
 * with SIGKILL left its helpers behind as orphans.
 *
 * Each test runs a real privileged ferryd (`--user`, started by root) with a `command` app
 * whose command ignores SIGTERM and starts a second process in its group, then stops it
 * the way the attack names, and asserts: no process of the application's user is left, and
 * ferryd still answers (or, where it was stopped, is gone).
 *
 * Bounds: each case waits at most 30 s for the processes to go (the supervisor's grace
 * between SIGTERM and SIGKILL is 5 s); the whole file takes about a minute.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { asUser, ensureUser, FERRY, ferry, needsRoot, type TestUser } from "../helpers/proc.js";

/** Ignores SIGTERM, and keeps a second process of its own in its process group. */
const STUBBORN = ["/bin/sh", "-c", "trap '' TERM; sleep 1000 & sleep 1000; wait"];

/** The pids of every process running as `user` (supervisor and helpers included). */
function processesOf(user: TestUser): number[] {
  try {
    return execFileSync("pgrep", ["-u", String(user.uid)], { encoding: "utf8" })
      .trim()
      .split("\n")
      .filter((l) => l !== "")
      .map(Number);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

async function waitFor(what: string, cond: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe("helper-ignores-sigterm: ferryd stops every helper it starts", {
  skip: needsRoot,
  timeout: 240_000,
}, () => {
  let dir: string;
  let config: string;
  let socket: string;
  let app: TestUser;
  let backup: TestUser;
  let daemon: RunningFerryd | undefined;
  let client: ChildProcess | undefined;

  before(() => {
    app = ensureUser("ferry-hs-app");
    backup = ensureUser("ferry-hs-bk");
    dir = mkdtempSync("/tmp/ferry-helper-stop-");
    chmodSync(dir, 0o755);
    socket = join(dir, "run/ferry.sock");
    config = join(dir, "ferry.toml");
    mkdirSync(join(dir, "out"));
    chownSync(join(dir, "out"), backup.uid, backup.gid);
    const argv = JSON.stringify(STUBBORN);
    writeFileSync(
      config,
      `version = 1
socket = "${socket}"
state_dir = "${dir}/state"

[limits]
shutdown_grace = 1

[apps.stubborn]
driver = "command"
os_user = "${app.name}"
backup_command = ${argv}

[apps.quick]
driver = "command"
os_user = "${app.name}"
backup_command = ${argv}
timeout = 2

[apps.killer]
driver = "command"
os_user = "${app.name}"
backup_command = ["/bin/sh", "-c", "kill -9 $PPID; trap '' TERM; sleep 1000"]
timeout = 2

[apps.stopper]
driver = "command"
os_user = "${app.name}"
backup_command = ["/bin/sh", "-c", "kill -STOP $PPID; trap '' TERM; sleep 1000"]
timeout = 2

[apps.escaper]
driver = "command"
os_user = "${app.name}"
# (sleep 1: setsid must have left the helper's process group before sh exits)
backup_command = ["/bin/sh", "-c", "setsid sleep 1000 & sleep 1; echo data"]
timeout = 2
`,
    );
  });

  afterEach(async () => {
    client?.kill("SIGKILL");
    client = undefined;
    await daemon?.stop();
    daemon = undefined;
    // Never leave a test's processes to the next one, whatever happened.
    for (const pid of processesOf(app)) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {}
    }
    await waitFor("the killed processes to be gone", () => processesOf(app).length === 0, 10_000);
  });

  after(() => rmSync(dir, { recursive: true, force: true }));

  const start = async () => {
    // (This test's users are its own: nothing else runs as them, unless two runs of the
    // suite share the machine.)
    assert.deepEqual(processesOf(app), [], "processes of the app's user left from before");
    daemon = await startFerryd({ config, serviceUser: backup });
  };

  /** `ferry export stubborn` as the backup user, in the background; resolves its exit. */
  const exportInBackground = (appName = "stubborn") => {
    const argv = asUser(backup, [
      process.execPath,
      FERRY,
      "--socket",
      socket,
      "export",
      appName,
      "-o",
      join(dir, "out", `${appName}.tar`),
    ]);
    const child = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    client = child;
    return new Promise<{ code: number | null; stderr: string }>((resolve) =>
      child.on("close", (code) => resolve({ code, stderr })),
    );
  };

  const helperRunning = () =>
    waitFor("the helper to start", () => processesOf(app).length >= 3, 20_000);

  const ferrydAnswers = async () => {
    const v = await ferry(socket, ["version", "--json"], { user: backup });
    assert.equal(v.code, 0, `ferryd no longer answers: ${v.stderr}\n${daemon?.log()}`);
  };

  test("helper-ignores-sigterm-timeout: the app's timeout stops it and ferryd lives", async () => {
    await start();
    const done = exportInBackground("quick");
    const r = await done;
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /timed out after 2s.*\[HELPER_TIMEOUT\]/s);
    await waitFor("no process of the app's user", () => processesOf(app).length === 0, 30_000);
    await ferrydAnswers();
    assert.equal(daemon?.child.exitCode, null);
  });

  test("helper-ignores-sigterm-cancel: ferry cancel stops it and ferryd lives", async () => {
    await start();
    const done = exportInBackground();
    await helperRunning();
    const jobs = await ferry(socket, ["jobs", "--json"], { user: backup });
    const running = (JSON.parse(jobs.stdout.toString()) as { id: string; state: string }[]).find(
      (j) => j.state === "running",
    );
    assert.ok(running, jobs.stdout.toString());
    const c = await ferry(socket, ["cancel", running.id], { user: backup });
    assert.equal(c.code, 0, c.stderr);
    const r = await done;
    assert.notEqual(r.code, 0);
    await waitFor("no process of the app's user", () => processesOf(app).length === 0, 30_000);
    await ferrydAnswers();
  });

  test("helper-ignores-sigterm-disconnect: a client that goes away stops it", async () => {
    await start();
    const done = exportInBackground();
    await helperRunning();
    client?.kill("SIGKILL");
    await done;
    await waitFor("no process of the app's user", () => processesOf(app).length === 0, 30_000);
    await ferrydAnswers();
  });

  test("helper-ignores-sigterm-shutdown: SIGTERM of ferryd stops it, then ferryd exits", async () => {
    await start();
    const d = daemon as RunningFerryd;
    const done = exportInBackground();
    await helperRunning();
    d.child.kill("SIGTERM");
    await waitFor("ferryd to exit", () => d.child.exitCode !== null, 30_000);
    assert.equal(d.child.exitCode, 0, d.log());
    await done;
    await waitFor("no process of the app's user", () => processesOf(app).length === 0, 30_000);
  });

  // The app's user can always kill or escape its own helper's supervisor (they share a
  // uid); what must hold then is that ferryd is never held by it: the job ends at the
  // app's timeout, and ferryd goes on serving.
  for (const [name, how] of [
    ["killer", "a helper that kills its supervisor"],
    ["stopper", "a helper that stops its supervisor (SIGSTOP)"],
    ["escaper", "a helper that leaves a setsid process holding its output"],
  ] as const) {
    test(`helper-${name}-holds-ferryd: ${how} cannot hold the job past its timeout`, {
      timeout: 60_000,
    }, async () => {
      await start();
      const t0 = Date.now();
      const r = await exportInBackground(name);
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, /\[HELPER_TIMEOUT\]/);
      assert.ok(Date.now() - t0 < 20_000, `the job took ${Date.now() - t0} ms`);
      // Something of the helper's did survive its supervisor (else nothing was proved);
      // afterEach removes it.
      assert.ok(processesOf(app).length > 0, "no process escaped: the test proved nothing");
      await ferrydAnswers();
      const jobs = await ferry(socket, ["jobs", "--json"], { user: backup });
      const running = (JSON.parse(jobs.stdout.toString()) as { state: string }[]).filter(
        (j) => j.state === "running",
      );
      assert.deepEqual(running, [], "a job is still running");
    });
  }

  test("ferryd-sigkill-orphans-helper: a ferryd killed with SIGKILL leaves no helper behind", async () => {
    await start();
    const d = daemon as RunningFerryd;
    const done = exportInBackground();
    await helperRunning();
    const t0 = Date.now();
    d.child.kill("SIGKILL");
    await done;
    await waitFor("no process of the app's user", () => processesOf(app).length === 0, 10_000);
    assert.ok(Date.now() - t0 < 10_000);
  });
});
