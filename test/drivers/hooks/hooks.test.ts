/**
 * Per-application hooks and the common app keys, driven through the real `command`
 * driver with real hook processes run as a test user: the post hook runs whatever
 * happens (pre hook failure, helper failure, helper timeout, hook timeout, commit
 * failure), its own failure is reported (a warning in the end record after a good backup,
 * appended to the error after a failed one), and the config refuses shell strings,
 * unknown keys and root without allow_root.
 */
import assert from "node:assert/strict";
import { chownSync, existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { FerryError } from "../../../src/core/errors.js";
import { commandDriver } from "../../../src/drivers/command/index.js";
import { DEFAULT_TIMEOUT_S } from "../../../src/drivers/common.js";
import { sqliteDriver } from "../../../src/drivers/sqlite/index.js";
import { processesOf, waitProcessesGone } from "../../helpers/proc.js";
import { backupArchive, ensureUser, removeDir, restoreArchive, settingsOf } from "../suite.js";

const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : "needs root";

describe("hooks around backup and restore", { skip, timeout: 90_000 }, () => {
  let user: ReturnType<typeof ensureUser>;
  let dir: string;
  let n = 0;
  before(() => {
    user = ensureUser("ferry-cmd");
    dir = mkdtempSync(join(tmpdir(), "ferry-hooks-test-"));
    chownSync(dir, user.uid, user.gid);
  });
  after(() => removeDir(dir));

  const log = () => `${dir}/log-${n}`;
  const logged = () => (existsSync(log()) ? readFileSync(log(), "utf8").trim().split("\n") : []);
  // "@LOG@" stands for this app's log file (known once app() numbered it).
  const note = (what: string) => ["sh", "-c", `echo ${what} >> "$0"`, "@LOG@"];
  const fail = (what: string) => [
    "sh",
    "-c",
    `echo ${what} >> "$0"; echo ${what} broke >&2; exit 4`,
    "@LOG@",
  ];
  const withLog = (v: unknown): unknown =>
    Array.isArray(v) ? v.map((x) => (x === "@LOG@" ? log() : x)) : v;

  function app(table: Record<string, unknown>, rawHooks: Record<string, unknown>) {
    n++;
    const hooks = Object.fromEntries(Object.entries(rawHooks).map(([k, v]) => [k, withLog(v)]));
    return {
      name: "hooked",
      settings: settingsOf(commandDriver, {
        backup_command: ["sh", "-c", `echo driver >> "$0"; echo payload`, log()],
        restore_command: ["sh", "-c", `cat > /dev/null; echo restore >> "$0"`, log()],
        os_user: user.name,
        restore: true,
        ...table,
        hooks: { timeout: 30, ...hooks },
      }),
    };
  }

  test("a failing pre_backup fails the backup before the driver runs; post_backup still runs", async () => {
    const a = app({}, { pre_backup: fail("pre"), post_backup: note("post") });
    await assert.rejects(
      backupArchive(commandDriver, a),
      /pre_backup hook of hooked exited with status 4: pre broke/,
    );
    assert.deepEqual(logged(), ["pre", "post"]);
  });

  test("a failing post_backup after a good backup is a warning in the end record", async () => {
    const a = app({}, { pre_backup: note("pre"), post_backup: fail("post") });
    const warnings: string[] = [];
    const bytes = await backupArchive(commandDriver, a, { warnings });
    assert.deepEqual(logged(), ["pre", "driver", "post"]);
    assert.equal(warnings.length, 1);
    assert.match(warnings[0] as string, /^post_backup hook failed: .*post broke/);
    assert.match(bytes.toString("latin1"), /"warnings":\["post_backup hook failed/);
  });

  test("a failing post_backup after a failed backup is added to the backup's error", async () => {
    const a = app(
      { backup_command: ["sh", "-c", "echo dump broke >&2; exit 2"] },
      { post_backup: fail("post") },
    );
    await assert.rejects(backupArchive(commandDriver, a), (err: unknown) => {
      assert.ok(err instanceof FerryError);
      assert.equal(err.code, "HELPER_FAILED");
      assert.match(
        err.message,
        /dump broke.*and then post_backup hook of hooked exited with status 4: post broke/s,
      );
      return true;
    });
  });

  // A sleep argument no other test uses, so the process can be found by its argv.
  const marker = (base: number) => `${base}.${process.pid}`;

  test("a helper past the app's timeout is killed (gone) and post_backup runs", async () => {
    const sleepFor = marker(41);
    const a = app(
      { backup_command: ["sleep", sleepFor], timeout: 1 },
      { post_backup: note("post") },
    );
    const started = Date.now();
    await assert.rejects(backupArchive(commandDriver, a), (err: unknown) => {
      assert.ok(err instanceof FerryError);
      assert.equal(err.code, "HELPER_TIMEOUT");
      return true;
    });
    assert.ok(Date.now() - started < 10_000);
    assert.deepEqual(logged(), ["post"]);
    // Killed means gone: no process of the app's user is left running the helper.
    const left = await waitProcessesGone(user.uid, sleepFor, 5000);
    assert.deepEqual(left, [], "the timed-out helper is still running");
    assert.deepEqual(processesOf(user.uid), [], "a process of the app's user is left");
  });

  test("a hook past hooks.timeout is killed (gone), fails the backup, and post_backup runs", async () => {
    const sleepFor = marker(43);
    // The hook leaves a grandchild that holds none of its pipes: killing only the hook's
    // own process would let the hook "end" while the grandchild keeps running.
    const hook = ["sh", "-c", 'sleep "$0" </dev/null >/dev/null 2>&1 & wait', sleepFor];
    const a = app({}, { pre_backup: hook, post_backup: note("post"), timeout: 1 });
    const started = Date.now();
    await assert.rejects(backupArchive(commandDriver, a), /pre_backup hook of hooked timed out/);
    assert.ok(Date.now() - started < 10_000, "the timeout did not end the hook promptly");
    assert.deepEqual(logged(), ["post"]);
    const left = await waitProcessesGone(user.uid, sleepFor, 5000);
    assert.deepEqual(left, [], "the timed-out hook is still running");
    assert.deepEqual(processesOf(user.uid), [], "a process of the app's user is left");
  });

  test("hooks run as hooks.user when given, else as the app's user", async () => {
    const other = ensureUser("ferry-hook-other");
    const otherDir = mkdtempSync(join(tmpdir(), "ferry-hooks-other-"));
    chownSync(otherDir, other.uid, other.gid);
    try {
      const out = `${otherDir}/uid`;
      await backupArchive(
        commandDriver,
        app({}, { user: other.name, pre_backup: ["sh", "-c", 'id -u > "$0"', out] }),
      );
      assert.equal(readFileSync(out, "utf8").trim(), String(other.uid));
      const mine = `${dir}/uid-${n + 1}`;
      await backupArchive(
        commandDriver,
        app({}, { pre_backup: ["sh", "-c", 'id -u > "$0"', mine] }),
      );
      assert.equal(readFileSync(mine, "utf8").trim(), String(user.uid));
    } finally {
      removeDir(otherDir);
    }
  });

  test("post_restore runs after a commit whose restore command fails, and after abort", async () => {
    const good = app({}, {});
    const bytes = await backupArchive(commandDriver, good);
    const a = app(
      { restore_command: ["sh", "-c", "cat > /dev/null; echo load broke >&2; exit 5"] },
      { pre_restore: note("pre"), post_restore: note("post") },
    );
    await assert.rejects(restoreArchive(commandDriver, a, bytes), /load broke/);
    assert.deepEqual(logged(), ["pre", "post"]);

    const b = app({}, { pre_restore: note("pre"), post_restore: note("post") });
    await assert.rejects(restoreArchive(commandDriver, b, bytes.subarray(0, bytes.length - 1536)));
    assert.deepEqual(logged(), ["pre", "post"], "no restore command ran for a truncated archive");
  });

  test("a failing pre_restore stops the restore; post_restore still runs", async () => {
    const bytes = await backupArchive(commandDriver, app({}, {}));
    const a = app({}, { pre_restore: fail("pre"), post_restore: note("post") });
    await assert.rejects(restoreArchive(commandDriver, a, bytes), /pre_restore hook/);
    assert.deepEqual(logged(), ["pre", "post"]);
  });
});

describe("common app keys", { skip }, () => {
  const base = { backup_command: ["true"], os_user: "ferry-cmd" };
  const parse = (t: Record<string, unknown>) =>
    commandDriver.schema.safeParse({ driver: "command", ...t });
  before(() => ensureUser("ferry-cmd"));

  test("defaults: restore false, timeout 3600 s, allow_root false, no hooks", () => {
    const r = parse(base);
    assert.ok(r.success);
    const s = r.data as Record<string, unknown>;
    assert.equal(s.restore, false);
    assert.equal(s.timeout, DEFAULT_TIMEOUT_S);
    assert.equal(DEFAULT_TIMEOUT_S, 3600);
    assert.equal(s.allow_root, false);
    assert.equal(s.hooks, undefined);
  });

  test("hooks are argv arrays, never shell strings; unknown hook keys are errors", () => {
    assert.equal(parse({ ...base, hooks: { pre_backup: "fsfreeze -f /data" } }).success, false);
    assert.equal(parse({ ...base, hooks: { pre_backup: [] } }).success, false);
    assert.equal(parse({ ...base, hooks: { pre_backup: ["./relative"] } }).success, false);
    const r = parse({ ...base, hooks: { pre_bakup: ["true"] } });
    assert.equal(r.success, false);
    assert.match(JSON.stringify(r.error?.issues), /pre_bakup/);
    assert.equal(parse({ ...base, backup_command: "pg_dump shop" }).success, false);
  });

  test("root is refused for helpers and hooks unless allow_root = true", () => {
    const helper = parse({ ...base, os_user: "root" });
    assert.equal(helper.success, false);
    assert.match(JSON.stringify(helper.error?.issues), /allow_root/);
    const hook = parse({ ...base, hooks: { user: "root", pre_backup: ["true"] } });
    assert.equal(hook.success, false);
    assert.deepEqual(hook.error?.issues[0]?.path, ["hooks", "user"]);
    assert.ok(
      parse({ ...base, hooks: { user: "root", pre_backup: ["true"] }, allow_root: true }).success,
    );
    const sq = sqliteDriver.schema.safeParse({
      driver: "sqlite",
      path: "/srv/a.db",
      owner: "root",
    });
    assert.equal(sq.success, false);
  });

  test("a missing user is named at its key", () => {
    const r = parse({ ...base, os_user: "no-such-user-ferry" });
    assert.equal(r.success, false);
    assert.deepEqual(r.error?.issues[0]?.path, ["os_user"]);
  });
});
