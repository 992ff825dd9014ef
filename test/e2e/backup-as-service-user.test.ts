/**
 * End to end, as root: a real ferryd started with --user drops to the backup user while
 * keeping exactly the service capabilities; the backup user alone cannot read the
 * application's files, but `ferry export` gets a complete, verified archive of them; a
 * third user is refused by the peer check even when the socket is world-writable.
 *
 * Bounds: a tree of a few dozen small files; each command has a 2-minute timeout.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parseStatus, SERVICE_CAPS } from "../../src/core/caps.js";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { ensureUser, ferry, needsRoot, ROOT, run, type TestUser } from "../helpers/proc.js";

describe("ferryd as a service user", { skip: needsRoot }, () => {
  let dir: string;
  let app: TestUser;
  let backup: TestUser;
  let other: TestUser;
  let daemon: RunningFerryd;
  let socket: string;
  let appRoot: string;

  before(async () => {
    app = ensureUser("ferry-e2e-app");
    backup = ensureUser("ferry-e2e-bk");
    other = ensureUser("ferry-e2e-other");
    dir = mkdtempSync("/tmp/ferry-e2e-");
    chmodSync(dir, 0o755);
    appRoot = join(dir, "app");
    mkdirSync(join(appRoot, "deep/er/still"), { recursive: true });
    mkdirSync(join(appRoot, "empty"));
    writeFileSync(join(appRoot, "secret.txt"), "top secret\n", { mode: 0o600 });
    writeFileSync(join(appRoot, "deep/er/still/data.bin"), Buffer.alloc(300_000, 7), {
      mode: 0o640,
    });
    writeFileSync(join(appRoot, "name with spaces.txt"), "spaces\n", { mode: 0o600 });
    writeFileSync(join(appRoot, "ünïcødé-日本.txt"), "unicode\n", { mode: 0o600 });
    writeFileSync(join(appRoot, `${"long-".repeat(40)}.txt`), "long\n", { mode: 0o600 });
    symlinkSync("/etc/shadow", join(appRoot, "shadow-link"));
    linkSync(join(appRoot, "secret.txt"), join(appRoot, "deep/hardlink-to-secret"));
    execFileSync("mkfifo", [join(appRoot, "a-fifo")]);
    execFileSync("chown", ["-R", "-h", `${app.name}:${app.name}`, appRoot]);
    for (const d of ["", "deep", "deep/er", "deep/er/still", "empty"])
      chmodSync(join(appRoot, d), 0o700);

    socket = join(dir, "run/ferry.sock");
    const config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n[apps.notes]\ndriver = "files"\npaths = ["${appRoot}"]\nowner = "${app.name}"\n`,
    );
    daemon = await startFerryd({ config, serviceUser: backup });
  });

  after(async () => {
    await daemon?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test("ferryd runs with the backup user's uid and exactly the service capabilities", () => {
    const status = parseStatus(readFileSync(`/proc/${daemon.pid}/status`, "utf8"));
    assert.deepEqual(status.uid, [backup.uid, backup.uid, backup.uid, backup.uid]);
    assert.deepEqual(status.effective.sort(), [...SERVICE_CAPS].sort());
    assert.deepEqual(status.ambient.sort(), [...SERVICE_CAPS].sort());
    assert.deepEqual(status.bounding.sort(), [...SERVICE_CAPS].sort());
    assert.match(daemon.log(), /"uid":\d+.*"capabilities":\[/);
  });

  test("the backup user alone cannot read the application's files", async () => {
    const r = await run(["cat", join(appRoot, "secret.txt")], { user: backup });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /Permission denied/);
  });

  test("ferry export as the backup user yields the tree with owners, modes, links", async () => {
    mkdirSync(join(dir, "out"));
    chownSync(join(dir, "out"), backup.uid, backup.gid);
    const out = join(dir, "out/notes.tar");
    const r = await ferry(socket, ["export", "notes", "-o", out], { user: backup });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /a-fifo: skipped, FIFOs are not backed up/);

    const check = JSON.parse(
      execFileSync("python3", [join(ROOT, "test/helpers/verify_archive.py"), out]).toString(),
    );
    assert.equal(check.ok, true, check.problem);
    assert.equal(check.manifest.app, "notes");
    assert.ok(check.end.warnings.some((w: string) => w.includes("a-fifo")));

    const x = join(dir, "extract");
    mkdirSync(x);
    execFileSync("tar", ["-xpf", out, "--numeric-owner", "-C", x]);
    const got = join(x, "data/0");
    const walk = (base: string, rel = ""): string[] =>
      readdirSync(join(base, rel), { withFileTypes: true }).flatMap((e) => {
        const p = join(rel, e.name);
        return e.isDirectory() ? [p, ...walk(base, p)] : [p];
      });
    const expected = walk(appRoot)
      .filter((p) => p !== "a-fifo")
      .sort();
    assert.deepEqual(walk(got).sort(), expected);
    for (const p of expected) {
      const a = lstatSync(join(appRoot, p));
      const b = lstatSync(join(got, p));
      assert.equal(b.uid, app.uid, p);
      assert.equal(b.gid, app.gid, p);
      assert.equal(b.mode, a.mode, p);
      if (a.isFile())
        assert.ok(readFileSync(join(appRoot, p)).equals(readFileSync(join(got, p))), p);
      if (!a.isDirectory()) assert.equal(b.mtimeMs, a.mtimeMs, p);
    }
    assert.ok(lstatSync(join(got, "shadow-link")).isSymbolicLink());
    assert.equal(readlinkSync(join(got, "shadow-link")), "/etc/shadow");
    assert.equal(
      lstatSync(join(got, "deep/hardlink-to-secret")).ino,
      lstatSync(join(got, "secret.txt")).ino,
    );
    // The symlink's target was never read: nothing of /etc/shadow is in the archive.
    const shadowLine = readFileSync("/etc/shadow", "utf8").split("\n")[0] as string;
    assert.ok(!readFileSync(out).includes(Buffer.from(shadowLine)));
  });

  test("a third user is refused, even after the socket is made world-writable", async () => {
    const before = await ferry(socket, ["apps"], { user: other });
    assert.equal(before.code, 3, before.stderr);
    assert.match(before.stderr, /SOCKET_ACCESS_DENIED/);

    chmodSync(join(dir, "run"), 0o777);
    chmodSync(socket, 0o666);
    const r = await ferry(socket, ["apps"], { user: other });
    assert.equal(r.code, 3, r.stderr);
    assert.match(r.stderr, /PEER_REJECTED/);
    assert.equal(r.stdout.length, 0);
    const curl = await run(["curl", "-sS", "--unix-socket", socket, "http://ferry/v1/apps"], {
      user: other,
    });
    assert.notEqual(curl.code, 0);
    assert.doesNotMatch(curl.stdout.toString(), /notes/);
    assert.match(daemon.log(), new RegExp(`"peer_uid":${other.uid},[^\\n]*"outcome":"refused"`));

    // The backup user still gets in.
    const ok = await ferry(socket, ["apps"], { user: backup });
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(ok.stdout.toString(), /notes\s+files/);
  });

  test("an unknown application is a 404 and a clean CLI error", async () => {
    // To stdout: an -o in a directory the backup user cannot write would be refused by
    // ferry itself (OUTPUT_NOT_WRITABLE) before ferryd is asked.
    const r = await ferry(socket, ["export", "nope"], { user: backup });
    assert.equal(r.code, 1);
    assert.equal(r.stderr.trim(), 'ferry: no application "nope" is declared [APP_NOT_FOUND]');
    const curl = await run(
      [
        "curl",
        "-sS",
        "-w",
        "\\n%{http_code}",
        "--unix-socket",
        socket,
        "-X",
        "POST",
        "http://ferry/v1/apps/nope/backup",
      ],
      { user: backup },
    );
    const lines = curl.stdout.toString().trim().split("\n");
    const body = lines[0];
    const status = lines[lines.length - 1];
    assert.equal(status, "404");
    assert.deepEqual(JSON.parse(body as string), {
      error: { code: "APP_NOT_FOUND", message: 'no application "nope" is declared' },
    });
    const bad = await run(
      ["curl", "-sS", "--unix-socket", socket, "http://ferry/v1/apps/..%2Fetc"],
      { user: backup },
    );
    assert.match(bad.stdout.toString(), /"code":"BAD_REQUEST"/);
  });
});
