/**
 * `ferry export -o PATH` and `ferry import -i PATH` check their path before anything
 * reaches ferryd (src/cli/local-paths.ts): an unusable path fails with a stable code and
 * no hook runs, no data streams.
 *
 * - export-o-unwritable-dir-after-hook: -o in a directory the user cannot write; the
 *   application's pre_backup hook (which leaves a marker file) must not have run, and
 *   ferryd must have seen no backup request.
 * - export-o-read-only-filesystem (root: a tmpfs remounted read-only).
 * - import-i-unreadable-after-hook: -i of a file the user cannot read; no pre_restore hook.
 *
 * ferryd runs in user mode as the user running ferry: a test user when the test is root
 * (root would pass every permission check), the current user otherwise.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { ensureUser, ferry, isRoot, type TestUser } from "../helpers/proc.js";

describe("-o and -i are checked before ferryd is asked", () => {
  let dir: string;
  let socket: string;
  let daemon: RunningFerryd;
  let user: TestUser | undefined;
  let name: string;
  const marker = (hook: string) => join(dir, "markers", hook);
  const backups = () => (daemon.log().match(/"path":"\/v1\/apps\/notes\/backup"/g) ?? []).length;
  const restores = () => (daemon.log().match(/"path":"\/v1\/apps\/notes\/restore"/g) ?? []).length;

  before(async () => {
    dir = mkdtempSync("/tmp/ferry-local-paths-");
    user = isRoot ? ensureUser("ferry-lp-user") : undefined;
    name = user?.name ?? userInfo().username;
    for (const d of ["notes", "markers", "out", "state"]) mkdirSync(join(dir, d));
    writeFileSync(join(dir, "notes", "a.txt"), "alpha\n");
    socket = join(dir, "run", "ferry.sock");
    const hook = (h: string) => `["/bin/sh", "-c", "touch ${marker(h)}"]`;
    writeFileSync(
      join(dir, "ferry.toml"),
      `version = 1
socket = "${socket}"
state_dir = "${dir}/state"

[apps.notes]
driver = "files"
paths = ["${dir}/notes"]
owner = "${name}"
restore = true

[apps.notes.hooks]
pre_backup = ${hook("pre_backup")}
pre_restore = ${hook("pre_restore")}
`,
    );
    if (user !== undefined) {
      execFileSync("chown", ["-R", `${user.uid}:${user.gid}`, dir]);
      chmodSync(dir, 0o755);
    }
    // Not writable by the user: root's when the test is root, mode 0555 otherwise.
    mkdirSync(join(dir, "locked"), { mode: 0o555 });
    chmodSync(join(dir, "locked"), 0o555);
    if (user !== undefined) chownSync(join(dir, "locked"), 0, 0);
    daemon = await startFerryd({ config: join(dir, "ferry.toml"), runAs: user });
  });
  after(async () => {
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("export-o-unwritable-dir-after-hook: refused with OUTPUT_NOT_WRITABLE before the pre-backup hook", async () => {
    // The hook does run on a backup that can be written (so its absence below means something).
    const ok = await ferry(socket, ["export", "notes", "-o", join(dir, "out", "ok.tar")], { user });
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(existsSync(marker("pre_backup")), "the hook ran for a good export");
    rmSync(marker("pre_backup"));
    const seen = backups();

    const r = await ferry(socket, ["export", "notes", "-o", join(dir, "locked", "wiki.tar")], {
      user,
    });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /^ferry: -o .*locked\/wiki\.tar: cannot create files in .*locked: permission denied \(owner uid \d+, mode 0555; you are uid \d+\); choose a directory you can write; nothing was exported \[OUTPUT_NOT_WRITABLE\]$/m,
    );
    assert.doesNotMatch(r.stderr, /EACCES|lstat/);
    assert.equal(existsSync(marker("pre_backup")), false, "the pre-backup hook ran");
    assert.equal(backups(), seen, "ferryd was asked for a backup");
    assert.deepEqual(readdirSync(join(dir, "locked")), []);

    // A missing directory, and -o naming a directory, are refused the same way.
    const missing = await ferry(socket, ["export", "notes", "-o", join(dir, "nope", "x.tar")], {
      user,
    });
    assert.equal(missing.code, 2);
    assert.match(
      missing.stderr,
      /the directory .*nope: it does not exist.*\[OUTPUT_NOT_WRITABLE\]/,
    );
    const isDir = await ferry(socket, ["export", "notes", "-o", join(dir, "out")], { user });
    assert.equal(isDir.code, 2);
    assert.match(isDir.stderr, /is a directory; give a file name.*\[OUTPUT_NOT_WRITABLE\]/);
    // Several apps into an unwritable directory: refused before the first.
    const many = await ferry(socket, ["export", "--all", "-o", join(dir, "locked")], { user });
    assert.equal(many.code, 2);
    assert.match(many.stderr, /\[OUTPUT_NOT_WRITABLE\]/);
    assert.equal(existsSync(marker("pre_backup")), false);
    assert.equal(backups(), seen);
  });

  test("export-o-read-only-filesystem: a read-only mount is named as such", {
    skip: isRoot ? false : "needs root to mount a read-only tmpfs",
  }, async () => {
    const ro = join(dir, "ro");
    mkdirSync(ro);
    execFileSync("mount", ["-t", "tmpfs", "-o", "mode=0777", "ferry-test-ro", ro]);
    try {
      execFileSync("mount", ["-o", "remount,ro", ro]);
      const seen = backups();
      const r = await ferry(socket, ["export", "notes", "-o", join(ro, "x.tar")], { user });
      assert.equal(r.code, 2, r.stderr);
      assert.match(
        r.stderr,
        /-o .*ro\/x\.tar: cannot create files in .*ro: it is on a read-only filesystem.*\[OUTPUT_NOT_WRITABLE\]/,
      );
      assert.equal(existsSync(marker("pre_backup")), false);
      assert.equal(backups(), seen);
    } finally {
      execFileSync("umount", [ro]);
    }
  });

  test("import-i-unreadable-after-hook: refused with INPUT_NOT_READABLE before the pre-restore hook", async () => {
    const archive = join(dir, "out", "secret.tar");
    const ok = await ferry(socket, ["export", "notes", "-o", archive], { user });
    assert.equal(ok.code, 0, ok.stderr);
    chmodSync(archive, 0o000);
    if (user !== undefined) chownSync(archive, 0, 0);
    const seen = restores();
    const r = await ferry(socket, ["import", "notes", "-i", archive], { user });
    assert.equal(r.code, 2, r.stderr);
    assert.match(
      r.stderr,
      /^ferry: -i .*secret\.tar: cannot read it: permission denied \(owner uid \d+, mode 0000; you are uid \d+\); nothing was sent to ferryd \[INPUT_NOT_READABLE\]$/m,
    );
    assert.equal(existsSync(marker("pre_restore")), false, "the pre-restore hook ran");
    assert.equal(restores(), seen, "ferryd was sent a restore");
    const dirAsInput = await ferry(socket, ["import", "notes", "-i", join(dir, "out")], { user });
    assert.equal(dirAsInput.code, 2);
    assert.match(dirAsInput.stderr, /-i .*out: not a regular file.*\[INPUT_NOT_READABLE\]/);
  });
});
