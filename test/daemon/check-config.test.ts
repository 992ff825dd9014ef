/**
 * `ferryd --check-config` catches what an admin's first config gets wrong, all at once
 * (src/daemon/config-check.ts): the real program, run on real files.
 *
 * - check-config-unedited-example: deploy/ferry.toml as shipped names paths and hook
 *   programs that do not exist; it must not be reported valid.
 * - check-config-one-problem-at-a-time: a type error, a misspelt owner, a missing key and
 *   an unknown key are reported together, each with its line, a missing key in words.
 * - check-config-paths-and-programs: a declared path that is a file, a symlink, or someone
 *   else's; an sqlite file of mode 000; a missing helper command; a hook program anyone
 *   can change.
 * - check-config-socket-unit-mismatch: `socket` differs from the installed ferry.socket's
 *   ListenStream= (drop-ins included).
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { lookupUser } from "../../src/core/users.js";
import { ensureUser, FERRYD, isRoot, ROOT } from "../helpers/proc.js";

/** `ferryd --check-config --config FILE` with a clean environment (C locale). */
function check(file: string, env: Record<string, string> = {}) {
  const r = spawnSync(process.execPath, [FERRYD, "--check-config", "--config", file], {
    encoding: "utf8",
    env: { PATH: "/usr/bin:/bin", ...env },
  });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe("ferryd --check-config", () => {
  let dir: string;
  const me = userInfo().username;

  before(() => {
    dir = mkdtempSync("/tmp/ferry-check-config-");
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  const missingUsers = ["www-data", "postgres"].filter((u) => lookupUser(u) === undefined);
  test("check-config-unedited-example: deploy/ferry.toml as shipped is not reported valid", {
    skip:
      isRoot || missingUsers.length === 0
        ? false
        : `needs root to create the users the example names (${missingUsers.join(", ")})`,
  }, () => {
    for (const u of missingUsers) ensureUser(u);
    const example = join(ROOT, "deploy/ferry.toml");
    const r = check(example);
    assert.equal(r.code, 2, r.stdout + r.stderr);
    assert.doesNotMatch(r.stdout, /valid/);
    // Its placeholders, each with its line: the wiki's directory and hook program, the
    // notes database's directory.
    assert.match(
      r.stderr,
      /ferry\.toml:\d+: apps\.wiki\.paths\[0\]: \/srv\/wiki\/data does not exist/,
    );
    assert.match(
      r.stderr,
      /ferry\.toml:\d+: apps\.wiki\.hooks\.pre_backup: \/usr\/local\/bin\/wiki-maintenance does not exist/,
    );
    assert.match(r.stderr, /ferry\.toml:\d+: apps\.notes\.path: .*\/srv\/notes does not exist/);
    assert.match(r.stderr, /invalid \(\d+ error\(s\)/);
    assert.match(r.stderr, /\[CONFIG_INVALID\]$/m);
  });

  test("check-config-one-problem-at-a-time: type errors, a misspelt owner, missing and unknown keys in one pass", () => {
    const file = join(dir, "many.toml");
    writeFileSync(
      file,
      `version = 1
state_dir = "${dir}/state"
sokcet = "/run/ferry/ferry.sock"

[apps.wiki]
driver = "files"
paths = ["${dir}"]
owner = "no-such-owner-ferry-cc"
restore = "yes"

[apps.notes]
driver = "sqlite"
owner = "${me}"
timeout = "soon"

[apps.shop]
driver = "postgres"
database = 5
os_user = "no-such-pg-user-ferry-cc"
`,
    );
    const r = check(file);
    assert.equal(r.code, 2, r.stderr);
    const lines = r.stderr.trim().split("\n");
    const expect = [
      /many\.toml:3: sokcet: unknown key$/,
      /many\.toml:8: apps\.wiki\.owner: no such user "no-such-owner-ferry-cc"$/,
      /many\.toml:9: apps\.wiki\.restore: must be a boolean \(true or false\), not a string$/,
      /many\.toml:11: apps\.notes\.path: missing: the key "path" is required \(a string\)$/,
      /many\.toml:14: apps\.notes\.timeout: must be a number, not a string$/,
      /many\.toml:18: apps\.shop\.database: must be a string, not a number$/,
      /many\.toml:19: apps\.shop\.os_user: no such user "no-such-pg-user-ferry-cc"$/,
    ];
    for (const re of expect) {
      assert.ok(
        lines.some((l) => re.test(l)),
        `${re} in:\n${r.stderr}`,
      );
    }
    // In line order, and never zod's own words for a missing key.
    assert.doesNotMatch(r.stderr, /Invalid input|received undefined/);
    const numbers = lines
      .map((l) => /many\.toml:(\d+):/.exec(l)?.[1])
      .filter((n) => n !== undefined)
      .map(Number);
    assert.deepEqual(
      numbers,
      [...numbers].sort((a, b) => a - b),
    );
  });

  test("a config that is right, on a machine that is right, is valid", () => {
    mkdirSync(join(dir, "ok-data"));
    const file = join(dir, "ok.toml");
    writeFileSync(
      file,
      `version = 1
state_dir = "${dir}/ok-state"
socket = "${dir}/ok.sock"

[apps.data]
driver = "files"
paths = ["${dir}/ok-data"]
owner = "${me}"
allow_root = true
`,
    );
    const r = check(file, { SYSTEMD_UNIT_PATH: join(dir, "no-units") });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /ok\.toml: valid, 1 application\(s\)/);
  });

  describe("check-config-paths-and-programs", {
    skip: isRoot ? false : "needs root (files of another owner, a test user)",
  }, () => {
    test("a wrong path type, a symlink, another owner, mode 000, a missing command, a hook anyone can change", () => {
      const app = ensureUser("ferry-cc-app");
      const base = join(dir, "machine");
      mkdirSync(base);
      // A file where a directory is declared; a symlink to a directory; root's directory
      // for an app owned by ferry-cc-app.
      writeFileSync(join(base, "a-file"), "x");
      mkdirSync(join(base, "real"));
      chownSync(join(base, "real"), app.uid, app.gid);
      symlinkSync(join(base, "real"), join(base, "link"));
      mkdirSync(join(base, "roots"));
      // An sqlite database its owner cannot open.
      const db = join(base, "locked.db");
      writeFileSync(db, "SQLite format 3\0");
      chownSync(db, app.uid, app.gid);
      chmodSync(db, 0o000);
      // A hook program anyone may rewrite.
      const hook = join(base, "hook.sh");
      writeFileSync(hook, "#!/bin/sh\nexit 0\n");
      chmodSync(hook, 0o777);
      const file = join(dir, "machine.toml");
      writeFileSync(
        file,
        `version = 1
state_dir = "${dir}/machine-state"

[apps.tree]
driver = "files"
paths = ["${base}/a-file", "${base}/link", "${base}/roots"]
owner = "${app.name}"

[apps.db]
driver = "sqlite"
path = "${db}"
owner = "${app.name}"

[apps.cmd]
driver = "command"
os_user = "${app.name}"
backup_command = ["/nonexistent/ferry-cc-dump", "--all"]
restore_command = ["ferry-cc-no-such-program"]
restore = true

[apps.cmd.hooks]
pre_backup = ["${hook}"]
`,
      );
      const r = check(file, { SYSTEMD_UNIT_PATH: join(dir, "no-units") });
      assert.equal(r.code, 2, r.stderr);
      const has = (re: RegExp) => assert.match(r.stderr, re);
      has(/machine\.toml:6: apps\.tree\.paths\[0\]: .*a-file is not a directory/);
      has(/machine\.toml:6: apps\.tree\.paths\[1\]: .*link: a symlink is on the way/);
      has(
        /machine\.toml:6: apps\.tree\.paths\[2\]: .*roots is owned by root \(uid 0\), not by the application's owner ferry-cc-app/,
      );
      has(/machine\.toml:11: apps\.db\.path: .*locked\.db has mode 0000: its owner ferry-cc-app/);
      has(
        /machine\.toml:17: apps\.cmd\.backup_command: \/nonexistent\/ferry-cc-dump does not exist/,
      );
      has(
        /machine\.toml:18: apps\.cmd\.restore_command: ferry-cc-no-such-program is not installed/,
      );
      has(
        /machine\.toml:22: apps\.cmd\.hooks\.pre_backup: .*hook\.sh is writable by its group or others \(mode 0777\)/,
      );
      assert.doesNotMatch(r.stdout, /valid/);
    });
  });

  test("check-config-socket-unit-mismatch: socket must be the installed ferry.socket's ListenStream=", () => {
    mkdirSync(join(dir, "sock-data"));
    const units = join(dir, "units");
    const lower = join(dir, "units-lower");
    mkdirSync(units);
    mkdirSync(join(lower, "ferry.socket.d"), { recursive: true });
    writeFileSync(
      join(units, "ferry.socket"),
      "[Unit]\nDescription=x\n\n[Socket]\nListenStream=/run/ferry/ferry.sock\nSocketMode=0600\n",
    );
    const file = join(dir, "sock.toml");
    writeFileSync(
      file,
      `version = 1
state_dir = "${dir}/sock-state"
socket = "/run/ferry-other/ferry.sock"

[apps.data]
driver = "files"
paths = ["${dir}/sock-data"]
owner = "${me}"
allow_root = true
`,
    );
    const env = { SYSTEMD_UNIT_PATH: `${units}:${lower}` };
    const r = check(file, env);
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /sock\.toml:3: socket: is \/run\/ferry-other\/ferry\.sock, but the installed .*units\/ferry\.socket has ListenStream=\/run\/ferry\/ferry\.sock/,
    );
    // A drop-in (in a lower directory) that resets the list and listens where the config says.
    writeFileSync(
      join(lower, "ferry.socket.d", "path.conf"),
      "[Socket]\nListenStream=\nListenStream=/run/ferry-other/ferry.sock\n",
    );
    const fixed = check(file, env);
    assert.equal(fixed.code, 0, fixed.stderr);
    // No unit installed: nothing to compare with.
    assert.equal(check(file, { SYSTEMD_UNIT_PATH: join(dir, "none") }).code, 0);
  });
});
