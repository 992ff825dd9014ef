/**
 * The `ferry` commands people and the nightly unit run, against a real ferryd in user
 * mode (started as the current user, with --allow-root when that is root, so no
 * privileges are needed): `export --all -o DIR`, `export APP… -o DIR`, `import -i FILE`,
 * `apps --json`, `version` (text and --json), `doctor`, with their output shapes, exit
 * codes and what they leave on disk.
 *
 * Bounds: three small files apps and one failing command app; every command has the
 * 2-minute timeout of test/helpers/proc.ts.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { VERSION } from "../../src/core/version.js";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { snapshot } from "../helpers/files-app.js";
import { ferry, isRoot, ROOT } from "../helpers/proc.js";

const me = userInfo().username;

/** Python's tarfile view of an archive file (test/helpers/verify_archive.py). */
function verify(path: string): {
  ok: boolean;
  problem: string | null;
  manifest: { app: string; driver: string };
  names: string[];
} {
  return JSON.parse(
    execFileSync("python3", [join(ROOT, "test/helpers/verify_archive.py"), path], {
      encoding: "utf8",
    }),
  );
}

describe("ferry commands against a real ferryd (user mode)", () => {
  let dir: string;
  let socket: string;
  let daemon: RunningFerryd;
  const extra = isRoot ? ["--allow-root"] : [];

  before(async () => {
    dir = mkdtempSync("/tmp/ferry-cli-");
    for (const app of ["notes", "photos"]) {
      mkdirSync(join(dir, app, "sub"), { recursive: true });
      writeFileSync(join(dir, app, "a.txt"), `${app} alpha\n`);
      writeFileSync(join(dir, app, "sub/b.bin"), Buffer.alloc(70_000, app.length));
    }
    socket = join(dir, "run/ferry.sock");
    const config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1
socket = "${socket}"
state_dir = "${dir}/state"

[apps.notes]
driver = "files"
paths = ["${dir}/notes"]
owner = "${me}"
restore = true
allow_root = true

[apps.photos]
driver = "files"
paths = ["${dir}/photos"]
owner = "${me}"
allow_root = true

[apps.failing]
driver = "command"
os_user = "${me}"
allow_root = true
backup_command = ["sh", "-c", "echo cannot reach the app >&2; exit 3"]

[apps.missing]
driver = "files"
paths = ["${dir}/does-not-exist"]
owner = "${me}"
allow_root = true
`,
    );
    daemon = await startFerryd({ config, extraArgs: extra });
  });
  after(async () => {
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const outDir = (name: string) => {
    const d = join(dir, name);
    mkdirSync(d);
    return d;
  };

  test("ferry version: ferry's and ferryd's versions, uid and capabilities; --json shape", async () => {
    const text = await ferry(socket, ["version"]);
    assert.equal(text.code, 0, text.stderr);
    const uid = process.getuid?.() as number;
    // In user mode ferryd holds no capabilities unless it runs as root (--allow-root),
    // which keeps root's own.
    const caps = isRoot ? "[a-z_]+(, [a-z_]+)*" : "none";
    const ver = VERSION.replace(/\./g, "\\.");
    assert.match(
      text.stdout.toString(),
      new RegExp(
        `^ferry ${ver}\\nferryd ${ver} \\(api v\\d+\\) as ${me} \\(uid ${uid}\\), capabilities: ${caps}\\ndrivers: (\\w+\\.v\\d+)(, \\w+\\.v\\d+)*\\n$`,
      ),
    );
    const j = await ferry(socket, ["version", "--json"]);
    assert.equal(j.code, 0, j.stderr);
    const v = JSON.parse(j.stdout.toString());
    assert.deepEqual(Object.keys(v).sort(), ["ferry", "ferryd"]);
    assert.equal(v.ferry, VERSION);
    assert.deepEqual(Object.keys(v.ferryd).sort(), [
      "api",
      "capabilities",
      "drivers",
      "gid",
      "name",
      "privileged",
      "uid",
      "user",
      "version",
    ]);
    assert.equal(v.ferryd.name, "ferryd");
    assert.equal(v.ferryd.version, VERSION);
    assert.equal(v.ferryd.uid, uid);
    assert.equal(v.ferryd.gid, process.getgid?.());
    assert.equal(v.ferryd.user, me);
    if (isRoot) assert.ok(v.ferryd.capabilities.includes("dac_read_search"));
    else assert.deepEqual(v.ferryd.capabilities, [], "user mode holds no capabilities");
    assert.equal(v.ferryd.privileged, isRoot, "privileged: holds capabilities");
    for (const d of ["files", "command", "postgres", "mariadb", "sqlite", "redis"])
      assert.ok(v.ferryd.drivers.includes(`${d}.v1`), `driver ${d} listed: ${v.ferryd.drivers}`);
  });

  test("ferry version with ferryd down: ferry's version, then why ferryd is unreachable, exit 4", async () => {
    const nowhere = join(dir, "no-ferryd-here.sock");
    const text = await ferry(nowhere, ["version"]);
    assert.equal(text.code, 4, "4: ferryd unreachable (README's exit codes)");
    assert.equal(text.stdout.toString(), `ferry ${VERSION}\n`);
    assert.match(
      text.stderr,
      /no ferryd is listening on .*no-ferryd-here\.sock.*\[SERVICE_UNREACHABLE\]/,
    );

    const j = await ferry(nowhere, ["version", "--json"]);
    assert.equal(j.code, 4);
    assert.deepEqual(JSON.parse(j.stdout.toString()), { ferry: VERSION, ferryd: null });
    assert.match(j.stderr, /\[SERVICE_UNREACHABLE\]/);

    // --version never asks ferryd: exit 0 whether or not one runs, before or after a command.
    for (const args of [["--version"], ["--version", "apps"]]) {
      const v = await ferry(nowhere, args);
      assert.equal(v.code, 0, v.stderr);
      assert.equal(v.stdout.toString(), `ferry ${VERSION}\n`);
      assert.equal(v.stderr, "");
    }
  });

  test("ferry apps --json: every app with its driver, restore flag and health", async () => {
    const r = await ferry(socket, ["apps", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const apps = JSON.parse(r.stdout.toString()) as Record<string, unknown>[];
    assert.ok(Array.isArray(apps));
    const byName = new Map(apps.map((a) => [a.name, a]));
    assert.deepEqual([...byName.keys()].sort(), ["failing", "missing", "notes", "photos"]);
    for (const a of apps) {
      assert.deepEqual(Object.keys(a).sort(), ["driver", "health", "name", "restore"]);
      assert.deepEqual(Object.keys(a.health as object).sort(), ["message", "ok"]);
    }
    assert.deepEqual(byName.get("notes"), {
      name: "notes",
      driver: "files",
      restore: true,
      health: { ok: true, message: "1 path(s) readable" },
    });
    assert.equal((byName.get("photos") as { restore: boolean }).restore, false);
    assert.equal((byName.get("failing") as { driver: string }).driver, "command");
    const missing = byName.get("missing") as { health: { ok: boolean; message: string } };
    assert.equal(missing.health.ok, false);
    assert.match(missing.health.message, /does-not-exist/);

    // The table form says the same.
    const t = await ferry(socket, ["apps"]);
    assert.equal(t.code, 0, t.stderr);
    const lines = t.stdout.toString().trim().split("\n");
    assert.match(lines[0] as string, /^APP\s+DRIVER\s+RESTORE\s+HEALTH$/);
    assert.ok(
      lines.some((l) => /^notes\s+files\s+yes\s+ok$/.test(l)),
      t.stdout.toString(),
    );
    assert.ok(lines.some((l) => /^missing\s+files\s+no\s+FAIL: .*does-not-exist/.test(l)));
  });

  test("ferry export APP… -o DIR: each app to DIR/APP.tar, verified, nothing else left", async () => {
    const out = outDir("some");
    const r = await ferry(socket, ["export", "notes", "photos", "-o", out]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(out).sort(), ["notes.tar", "photos.tar"]);
    for (const app of ["notes", "photos"]) {
      const v = verify(join(out, `${app}.tar`));
      assert.equal(v.ok, true, v.problem ?? "");
      assert.equal(v.manifest.app, app);
      assert.equal(v.manifest.driver, "files");
      assert.ok(v.names.includes("data/0/sub/b.bin"), v.names.join(","));
      assert.match(r.stderr, new RegExp(`exported ${app}: \\d+ entries`));
    }
    assert.match(r.stderr, /exported 2 of 2 application\(s\) to /);
  });

  test("ferry export --all -o DIR: goes on past failures, reports them, exits 1", async () => {
    const out = outDir("all");
    const r = await ferry(socket, ["export", "--all", "-o", out]);
    assert.equal(r.code, 1, r.stderr);
    // The good ones are complete archives; the failed ones left nothing, not even a temp file.
    assert.deepEqual(readdirSync(out).sort(), ["notes.tar", "photos.tar"]);
    for (const app of ["notes", "photos"]) assert.equal(verify(join(out, `${app}.tar`)).ok, true);
    assert.match(
      r.stderr,
      /ferry: export of failing failed: .*cannot reach the app.* \[HELPER_FAILED\]/,
    );
    assert.match(r.stderr, /ferry: export of missing failed: .*does-not-exist.* \[[A-Z_]+\]/);
    assert.match(
      r.stderr,
      /exported 2 of 4 application\(s\) to .*; failed: (failing, missing|missing, failing)\n$/,
    );
  });

  test("ferry export with several apps: usage errors and a bad -o DIR", async () => {
    const both = await ferry(socket, ["export", "--all", "notes", "-o", dir]);
    assert.equal(both.code, 2);
    assert.match(both.stderr, /application names or --all, not both/);
    const noDir = await ferry(socket, ["export", "notes", "photos"]);
    assert.equal(noDir.code, 2);
    assert.match(noDir.stderr, /needs -o DIR/);
    const file = join(dir, "a-file");
    writeFileSync(file, "x");
    const notDir = await ferry(socket, ["export", "--all", "-o", file]);
    assert.equal(notDir.code, 2, "a usage error");
    assert.match(
      notDir.stderr,
      /-o .*a-file: .*a-file is not a directory.* \[OUTPUT_NOT_WRITABLE\]/,
    );
    assert.equal(readFileSync(file, "utf8"), "x", "the file given as -o was not touched");
  });

  test("ferry import APP -i FILE: restores from the file; a missing file is refused", async () => {
    const live = join(dir, "notes");
    const before = snapshot(live);
    const archive = join(dir, "notes-import.tar");
    const exp = await ferry(socket, ["export", "notes", "-o", archive]);
    assert.equal(exp.code, 0, exp.stderr);
    writeFileSync(join(live, "a.txt"), "changed\n");
    writeFileSync(join(live, "new.txt"), "not in the archive\n");
    rmSync(join(live, "sub"), { recursive: true });
    const r = await ferry(socket, ["import", "notes", "-i", archive]);
    assert.equal(r.code, 0, r.stderr);
    const after = snapshot(live);
    // Same names, types, modes and contents (mtimes of files are restored too).
    assert.deepEqual(
      [...after.keys()].sort(),
      [...before.keys()].sort(),
      "the tree is the archived one",
    );
    for (const [k, v] of before) {
      if (k === ".") continue;
      assert.equal(after.get(k), v, `${k} restored`);
    }

    const missing = await ferry(socket, ["import", "notes", "-i", join(dir, "nope.tar")]);
    assert.notEqual(missing.code, 0);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /-i .*nope\.tar: it does not exist.* \[INPUT_NOT_READABLE\]/);
    const refused = await ferry(socket, ["import", "photos", "-i", archive]);
    assert.notEqual(refused.code, 0, "photos has restore = false");
    assert.match(refused.stderr, /\[[A-Z_]+\]/);
    assert.deepEqual(snapshot(join(dir, "photos")).has("a.txt"), true);
    assert.equal(statSync(archive).isFile(), true, "-i FILE is only read");
  });

  test("ferry doctor: one line per check, FAIL for an unhealthy app, exit 1", async () => {
    const r = await ferry(socket, ["doctor"]);
    assert.equal(r.code, 1, r.stdout.toString() + r.stderr);
    const lines = r.stdout.toString().trim().split("\n");
    for (const l of lines)
      assert.match(l, /^((OK|WARN|FAIL) {1,3}\S| {5}fix: \S)/, `line shape: ${l}`);
    const uid = process.getuid?.() as number;
    assert.match(
      lines[0] as string,
      new RegExp(`^OK   socket ${socket} \\(owner uid ${uid}, mode 600\\)$`),
    );
    assert.match(
      lines[1] as string,
      new RegExp(`^OK   ferryd ${VERSION.replace(/\./g, "\\.")} answers and accepts uid ${uid}`),
    );
    assert.ok(
      lines.includes(
        isRoot
          ? "WARN ferryd runs as root (--allow-root): run it as the backup user with --user"
          : `OK   ferryd runs as ${me} (uid ${uid})`,
      ),
      lines.join("\n"),
    );
    if (!isRoot)
      assert.ok(lines.some((l) => l.startsWith("WARN ferryd holds no capabilities (user mode)")));
    assert.ok(lines.includes("OK   app notes (files): 1 path(s) readable"), lines.join("\n"));
    assert.ok(lines.some((l) => /^FAIL app missing \(files\): .*does-not-exist/.test(l)));
    assert.ok(
      lines.some((l) =>
        /^(OK|WARN) {1,3}app notes \(files\): a restore can stage beside .*notes \(made and removed .*\.notes\.ferry-probe\), [0-9.]+ GiB free there$/.test(
          l,
        ),
      ),
      lines.join("\n"),
    );

    // No socket at the path: one FAIL line that says what to do, exit 1.
    const none = await ferry(join(dir, "no.sock"), ["doctor"]);
    assert.equal(none.code, 1);
    assert.match(none.stdout.toString(), /^FAIL no socket at .*no\.sock — start ferryd/);
  });
});
