/**
 * Nothing ferryd trusts later is writable by the backup user (docs/security.md). Before,
 * the state directory, its journals and the /tmp spools were the backup user's own (ferryd
 * runs with its uid), and a security review turned each into root:
 *
 * - a forged "staged" journal made recovery swap a backup-user directory into a root-only
 *   one; a forged "extracting" journal deleted any tree;
 * - a symlink planted at `journal/files-APP.json.tmp` made the next import overwrite its
 *   target;
 * - an inotify racer swapped a fresh spool directory in /tmp for a symlink between mkdtemp
 *   and chown, and ferryd chowned a root file to the app's user.
 *
 * Each test first tries the attack exactly as the backup user would (and shows the kernel
 * now refuses it), then plants the forged file as root, as if the state directory had been
 * writable, to show that ferryd's own checks refuse it too; and it asserts that nothing
 * outside the application changed.
 *
 * Bounds: a small files app and a small SQLite database; the spool race runs 25 backups
 * against a racer (about 30 s).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startFerryd } from "../helpers/ferryd.js";
import { type FilesApp, setupFilesApp, snapshot } from "../helpers/files-app.js";
import { ensureUser, ferry, needsRoot, run, type TestUser } from "../helpers/proc.js";

function journal(
  root: { path: string; staging: string; stagingId: string; existed: boolean },
  phase: string,
) {
  return `${JSON.stringify({
    version: 1,
    app: "notes",
    id: "aaaaaaaaaaaa",
    phase,
    started: new Date().toISOString(),
    roots: [root],
  })}\n`;
}

function devIno(path: string): string {
  const st = statSync(path, { bigint: true });
  const dev = st.dev;
  // statx reports dev as major:minor; node's dev is the encoded number.
  const major = (dev >> 8n) & 0xfffn;
  const minor = (dev & 0xffn) | ((dev >> 12n) & 0xfff00n);
  return `${major}:${minor}:${st.ino}`;
}

describe("state directory attacks", { skip: needsRoot }, () => {
  let fx: FilesApp;
  let rootOnly: string;
  let bDir: string;

  before(async () => {
    fx = await setupFilesApp("ferry-state-attack");
    rootOnly = join(fx.dir, "root-only");
    mkdirSync(rootOnly, { mode: 0o700 });
    writeFileSync(join(rootOnly, "secret"), "root's\n", { mode: 0o600 });
    bDir = join(fx.dir, "b-owned");
    mkdirSync(bDir);
    writeFileSync(join(bDir, "evil"), "the backup user's\n");
    execFileSync("chown", ["-R", `${fx.backup.name}:${fx.backup.name}`, bDir]);
  });
  after(() => fx.close());

  const journalDir = () => join(fx.dir, "state/journal");

  test("the state directory is root's: the backup user can neither list it nor write a journal", async () => {
    const st = statSync(join(fx.dir, "state"));
    assert.equal(st.uid, 0);
    assert.equal(st.mode & 0o7777, 0o711);
    const jst = statSync(journalDir());
    assert.equal(jst.uid, 0);
    assert.equal(jst.mode & 0o7777, 0o700);
    const ls = await run(["ls", join(fx.dir, "state")], { user: fx.backup });
    assert.notEqual(ls.code, 0);
    const write = await run(["sh", "-c", `echo '{}' > ${journalDir()}/files-notes.json`], {
      user: fx.backup,
    });
    assert.notEqual(write.code, 0);
    assert.match(write.stderr, /Permission denied/);
    assert.equal(existsSync(join(journalDir(), "files-notes.json")), false);
  });

  test("forged-journal-staged-phase: a journal that points recovery at a root-only directory is refused", async () => {
    const before = { rootOnly: snapshot(rootOnly), bDir: snapshot(bDir), live: snapshot(fx.live) };
    await fx.daemon.stop();
    // What the reviewer wrote as the backup user: swap my directory into a root-only one.
    writeFileSync(
      join(journalDir(), "files-notes.json"),
      journal({ path: rootOnly, staging: bDir, stagingId: devIno(bDir), existed: true }, "staged"),
    );
    await fx.restart();
    assert.match(fx.daemon.log(), /refused a restore journal that does not match the config/);
    assert.deepEqual(snapshot(rootOnly), before.rootOnly, "the root-only directory changed");
    assert.deepEqual(snapshot(bDir), before.bDir);
    assert.deepEqual(snapshot(fx.live), before.live);
    const left = readdirSync(journalDir());
    assert.equal(left.length, 1);
    assert.match(left[0] as string, /^files-notes\.json\.rejected-\d+$/);
    rmSync(join(journalDir(), left[0] as string));
    const v = await ferry(fx.socket, ["apps"], { user: fx.backup });
    assert.equal(v.code, 0, v.stderr);
  });

  test("forged-journal-staged-phase: the declared path with a staging name ferryd would not make is refused", async () => {
    const before = { outside: snapshot(fx.outside), live: snapshot(fx.live) };
    await fx.daemon.stop();
    writeFileSync(
      join(journalDir(), "files-notes.json"),
      journal(
        { path: fx.live, staging: "../outside", stagingId: devIno(fx.outside), existed: true },
        "staged",
      ),
    );
    await fx.restart();
    assert.match(fx.daemon.log(), /names a staging directory ferryd would not have made/);
    assert.deepEqual(snapshot(fx.outside), before.outside);
    assert.deepEqual(snapshot(fx.live), before.live);
    for (const n of readdirSync(journalDir())) rmSync(join(journalDir(), n));
  });

  test("forged-journal-extracting-phase: a journal that would delete a tree is refused", async () => {
    const before = { rootOnly: snapshot(rootOnly), outside: snapshot(fx.outside) };
    await fx.daemon.stop();
    // "Roll back" would remove the staging tree: aim it at a root-only directory, and at the
    // other app's data through '..'.
    writeFileSync(
      join(journalDir(), "files-notes.json"),
      journal({ path: rootOnly, staging: "secret", stagingId: "", existed: true }, "extracting"),
    );
    writeFileSync(
      join(journalDir(), "files-other.json"),
      `${JSON.stringify({
        version: 1,
        app: "other",
        id: "bbbbbbbbbbbb",
        phase: "extracting",
        started: new Date().toISOString(),
        roots: [{ path: fx.outside, staging: "../outside", stagingId: "", existed: true }],
      })}\n`,
    );
    await fx.restart();
    assert.deepEqual(snapshot(rootOnly), before.rootOnly, "the root-only directory changed");
    assert.deepEqual(snapshot(fx.outside), before.outside, "the other app's data changed");
    const left = readdirSync(journalDir()).sort();
    assert.equal(left.length, 2);
    for (const n of left) assert.match(n, /\.rejected-\d+$/);
    for (const n of left) rmSync(join(journalDir(), n));
  });

  test("crash-journal-no-staging-id-deletes-root-dir: recovery never deletes a tree it cannot prove it made", async () => {
    // A crash between the journal's first write (no staging id yet) and its second leaves a
    // journal whose staging directory is unknown; an owner of the parent could then rename
    // one of root's directories to that name. Recovery may only rmdir an empty directory.
    const id = "cccccccccccc";
    const staging = join(fx.appDir, `.notes.ferry-restore-${id}`);
    mkdirSync(staging, { mode: 0o700 });
    writeFileSync(join(staging, "precious"), "root's data\n", { mode: 0o600 });
    const before = { staging: snapshot(staging), live: snapshot(fx.live) };
    await fx.daemon.stop();
    writeFileSync(
      join(journalDir(), "files-notes.json"),
      journal(
        { path: fx.live, staging: `.notes.ferry-restore-${id}`, stagingId: "", existed: true },
        "extracting",
      ).replace('"aaaaaaaaaaaa"', `"${id}"`),
    );
    await fx.restart();
    assert.deepEqual(snapshot(staging), before.staging, "root's directory was deleted");
    assert.deepEqual(snapshot(fx.live), before.live);
    assert.match(fx.daemon.log(), /left in place/);
    rmSync(staging, { recursive: true, force: true });
    for (const n of readdirSync(journalDir())) rmSync(join(journalDir(), n));
  });

  test("journal-tmp-symlink-planted: an import never writes through a planted .tmp link", async () => {
    const victim = join(fx.dir, "victim");
    writeFileSync(victim, "root's file\n", { mode: 0o644 });
    // As the backup user: the journal directory is root's, so nothing can be planted.
    const plant = await run(["ln", "-s", victim, join(journalDir(), "files-notes.json.tmp")], {
      user: fx.backup,
    });
    assert.notEqual(plant.code, 0);
    // As if it could: the link is there when the import writes its journal.
    symlinkSync(victim, join(journalDir(), "files-notes.json.tmp"));
    const exported = await fx.exportArchive();
    assert.equal(exported.code, 0, exported.stderr);
    const imported = await fx.importArchive(exported.stdout);
    assert.equal(imported.code, 0, imported.stderr);
    assert.equal(readFileSync(victim, "utf8"), "root's file\n");
    assert.equal(lstatSync(victim).isFile(), true);
    assert.deepEqual(readdirSync(journalDir()), [], "journal or link left behind");
  });

  test("state-dir-owned-by-backup-user: ferryd refuses to start on a state directory the backup user owns", async () => {
    await fx.daemon.stop();
    const state = join(fx.dir, "state");
    chownSync(state, fx.backup.uid, fx.backup.gid);
    try {
      await assert.rejects(
        startFerryd({ config: fx.config, serviceUser: fx.backup }),
        /STATE_DIR_UNSAFE/,
      );
    } finally {
      chownSync(state, 0, 0);
    }
    // A state directory below a directory the backup user owns is refused too.
    const bParent = join(fx.dir, "b-parent");
    mkdirSync(bParent);
    chownSync(bParent, fx.backup.uid, fx.backup.gid);
    const config = join(fx.dir, "ferry-b-state.toml");
    writeFileSync(
      config,
      readFileSync(fx.config, "utf8").replace(/state_dir = ".*"/, `state_dir = "${bParent}/state"`),
    );
    await assert.rejects(
      startFerryd({ config, serviceUser: fx.backup }),
      /a directory above it is owned or writable by a user other than root/,
    );
    await fx.restart();
  });
});

describe("spool-race-inotify: spools cannot be raced into a chown", { skip: needsRoot }, () => {
  let dir: string;
  let app: TestUser;
  let backup: TestUser;

  before(() => {
    app = ensureUser("ferry-spool-app");
    backup = ensureUser("ferry-spool-bk");
    dir = mkdtempSync("/tmp/ferry-spool-race-");
    chmodSync(dir, 0o755);
    mkdirSync(join(dir, "data"));
    chownSync(join(dir, "data"), app.uid, app.gid);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("an inotify racer as the backup user never gets a root file chowned", async () => {
    const db = join(dir, "data/app.db");
    await run(["sqlite3", db, "CREATE TABLE t(x); INSERT INTO t VALUES (1);"], { user: app });
    const victim = join(dir, "victim");
    writeFileSync(victim, "root's\n", { mode: 0o600 });
    const config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1\nsocket = "${dir}/run/ferry.sock"\nstate_dir = "${dir}/state"\n\n[apps.db]\ndriver = "sqlite"\npath = "${db}"\nowner = "${app.name}"\n`,
    );
    const daemon = await startFerryd({ config, serviceUser: backup });
    // The racer: watch every place a spool could appear; the moment a directory shows up,
    // move it away and put a symlink to the victim in its place.
    const racer = join(dir, "racer.cjs");
    writeFileSync(
      racer,
      `const fs = require("fs");
const [victim, seconds, ...dirs] = process.argv.slice(2);
let seen = 0, swapped = 0; const denied = [];
for (const d of dirs) {
  try {
    fs.watch(d, (ev, name) => {
      if (!name) return;
      const p = d + "/" + name;
      try {
        if (!fs.lstatSync(p).isDirectory()) return;
        seen++;
        fs.renameSync(p, p + ".moved");
        fs.symlinkSync(victim, p);
        swapped++;
      } catch {}
    });
  } catch (e) { denied.push(d + ": " + e.code); }
}
const report = () => { console.log(JSON.stringify({ seen, swapped, denied })); process.exit(0); };
process.on("SIGTERM", report);
setTimeout(report, seconds * 1000);
`,
    );
    chmodSync(racer, 0o644);
    const racerArgs = [victim, "40", "/tmp", join(dir, "state"), join(dir, "state/spool")];
    const r = spawn(
      "setpriv",
      [
        `--reuid=${backup.uid}`,
        `--regid=${backup.gid}`,
        "--init-groups",
        "--",
        process.execPath,
        racer,
        ...racerArgs,
      ],
      { stdio: ["ignore", "pipe", "inherit"] },
    );
    let out = "";
    r.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    try {
      for (let i = 0; i < 25; i++) {
        const x = await ferry(`${dir}/run/ferry.sock`, ["export", "db", "-o", "/dev/null"], {
          user: backup,
        });
        assert.equal(x.code, 0, x.stderr);
        const st = statSync(victim);
        assert.equal(st.uid, 0, `round ${i}: the victim was chowned`);
        assert.equal(st.gid, 0);
        assert.equal(st.mode & 0o7777, 0o600);
      }
    } finally {
      r.kill("SIGTERM");
      await new Promise((res) => r.on("close", res));
      await daemon.stop();
    }
    // The racer could not even watch the state directory, and it never got to swap a
    // directory of ferryd's (the backup user's own, which /tmp spools used to be).
    const report = JSON.parse(out) as { seen: number; swapped: number; denied: string[] };
    assert.ok(
      report.denied.some((d) => d.includes("/state")),
      out,
    );
    assert.equal(report.swapped, 0, out);
    assert.equal(readFileSync(victim, "utf8"), "root's\n");
  });
});
