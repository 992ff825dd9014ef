/**
 * `ferry doctor` against a real ferryd running as a service user with its capabilities
 * (root needed: users, `--user`, read-only mounts). Each trap it must catch:
 *
 * - doctor-sqlite-mode-000: ferryd's capabilities can read a database its owner cannot;
 *   the backup runs as the owner and fails, so the doctor must FAIL (and name the modes).
 * - doctor-read-only-parent: a restorable files app and an sqlite app whose directories are
 *   on a read-only filesystem (a tmpfs remounted read-only: what ProtectSystem=strict
 *   without ReadWritePaths= looks like to ferryd) FAIL, with ReadWritePaths= as the fix;
 *   and the restores themselves say READ_ONLY_FILESYSTEM naming the directory and the fix.
 * - restore-disk-full-blamed-on-archive: a files restore that runs out of space (a 4 MiB
 *   tmpfs) is DISK_FULL naming the directory, not an "inconsistent archive"; the doctor
 *   warned about the space beforehand.
 * - doctor-probe-symlink-planted: a symlink at the probe's name, to a directory outside or
 *   to nowhere, is neither followed nor removed: nothing is created or removed outside,
 *   and the doctor FAILs naming it.
 * - a probe left by a killed ferryd (empty, root's) is cleared; one that is not empty is not.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { ensureUser, ferry, needsRoot, type TestUser } from "../helpers/proc.js";

const hasSqlite = existsSync("/usr/bin/sqlite3");

describe("ferry doctor: the traps of a first day", {
  skip: needsRoot || (hasSqlite ? false : "sqlite3 is needed"),
}, () => {
  let dir: string;
  let app: TestUser;
  let backup: TestUser;
  let daemon: RunningFerryd;
  let socket: string;
  const mounts: string[] = [];

  const sql = (db: string, statements: string) =>
    execFileSync(
      "setpriv",
      [
        `--reuid=${app.uid}`,
        `--regid=${app.gid}`,
        "--init-groups",
        "sqlite3",
        "-bail",
        "-batch",
        db,
        statements,
      ],
      { encoding: "utf8" },
    );

  /** A tmpfs at `path` for the app, filled by `fill`, then remounted read-only. */
  const readOnly = (path: string, fill: () => void) => {
    mkdirSync(path);
    execFileSync("mount", ["-t", "tmpfs", "-o", "mode=0755,size=16m", "ferry-doctor-ro", path]);
    mounts.push(path);
    fill();
    execFileSync("mount", ["-o", "remount,ro", path]);
  };

  before(async () => {
    app = ensureUser("ferry-doc-app");
    backup = ensureUser("ferry-doc-bk");
    dir = mkdtempSync("/tmp/ferry-doctor-");
    chmodSync(dir, 0o755);
    // A healthy files app, and its sibling for the planted-symlink probe.
    for (const d of ["tree/data", "planted/data", "outside"])
      mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, "tree/data/a.txt"), "a\n");
    writeFileSync(join(dir, "planted/data/a.txt"), "a\n");
    writeFileSync(join(dir, "outside/sentinel"), "keep\n");
    execFileSync("chown", [
      "-R",
      `${app.name}:${app.name}`,
      join(dir, "tree/data"),
      join(dir, "planted/data"),
    ]);
    // sqlite: one fine, one its owner cannot open.
    mkdirSync(join(dir, "db"));
    chownSync(join(dir, "db"), app.uid, app.gid);
    sql(join(dir, "db/ok.db"), "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    sql(join(dir, "db/locked.db"), "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    chmodSync(join(dir, "db/locked.db"), 0o000);
    // Read-only: a files app's parent and an sqlite app's directory.
    readOnly(join(dir, "ro-tree"), () => {
      mkdirSync(join(dir, "ro-tree/data"));
      writeFileSync(join(dir, "ro-tree/data/a.txt"), "a\n");
      execFileSync("chown", ["-R", `${app.name}:${app.name}`, join(dir, "ro-tree/data")]);
    });
    // Room for the data, not for a second copy of it.
    mkdirSync(join(dir, "small"));
    execFileSync("mount", [
      "-t",
      "tmpfs",
      "-o",
      "mode=0755,size=4m",
      "ferry-doctor-small",
      join(dir, "small"),
    ]);
    mounts.push(join(dir, "small"));
    mkdirSync(join(dir, "small/data"));
    writeFileSync(join(dir, "small/data/big.bin"), Buffer.alloc(2_500_000, 1));
    execFileSync("chown", ["-R", `${app.name}:${app.name}`, join(dir, "small/data")]);
    readOnly(join(dir, "ro-db"), () => {
      chownSync(join(dir, "ro-db"), app.uid, app.gid);
      sql(join(dir, "ro-db/app.db"), "CREATE TABLE t(x); INSERT INTO t VALUES (1);");
    });

    // Hook programs: one the app's user may run, one in a directory it cannot enter.
    mkdirSync(join(dir, "hooks-ok"));
    writeFileSync(join(dir, "hooks-ok/quiesce"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });
    mkdirSync(join(dir, "hooks-private"), { mode: 0o700 });
    chmodSync(join(dir, "hooks-private"), 0o700);
    writeFileSync(join(dir, "hooks-private/quiesce"), "#!/bin/sh\nexit 0\n", { mode: 0o755 });

    socket = join(dir, "run/ferry.sock");
    const files = (name: string, path: string) =>
      `[apps.${name}]\ndriver = "files"\npaths = ["${path}"]\nowner = "${app.name}"\nrestore = true\n\n`;
    const sqlite = (name: string, path: string) =>
      `[apps.${name}]\ndriver = "sqlite"\npath = "${path}"\nowner = "${app.name}"\nrestore = true\n\n`;
    writeFileSync(
      join(dir, "ferry.toml"),
      `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n` +
        files("tree", join(dir, "tree/data")) +
        files("planted", join(dir, "planted/data")) +
        files("rotree", join(dir, "ro-tree/data")) +
        files("small", join(dir, "small/data")) +
        sqlite("okdb", join(dir, "db/ok.db")) +
        sqlite("lockeddb", join(dir, "db/locked.db")) +
        sqlite("rodb", join(dir, "ro-db/app.db")) +
        `[apps.hooked]\ndriver = "files"\npaths = ["${join(dir, "tree/data")}"]\nowner = "${app.name}"\n` +
        `[apps.hooked.hooks]\npre_backup = ["${join(dir, "hooks-ok/quiesce")}"]\n` +
        `post_backup = ["${join(dir, "hooks-private/quiesce")}"]\npre_restore = ["ferry-doc-no-such-tool"]\n`,
    );
    daemon = await startFerryd({ config: join(dir, "ferry.toml"), serviceUser: backup });
  });

  after(async () => {
    await daemon?.stop();
    for (const m of mounts.reverse()) {
      try {
        execFileSync("umount", [m]);
      } catch {}
    }
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  /** A directory the backup user may write archives into. */
  const outDir = () => {
    const out = join(dir, "out");
    if (!existsSync(out)) {
      mkdirSync(out);
      chownSync(out, backup.uid, backup.gid);
    }
    return out;
  };

  const doctor = async () => {
    const r = await ferry(socket, ["doctor"], { user: backup });
    return { code: r.code, out: r.stdout.toString(), err: r.stderr };
  };
  /** The lines about one app, each FAIL/WARN with its fix line after it. */
  const linesOf = (out: string, name: string) => {
    const lines = out.split("\n");
    const res: string[] = [];
    lines.forEach((l, i) => {
      if (l.includes(` app ${name} (`)) {
        res.push(l);
        const next = lines[i + 1];
        if (next?.startsWith("     fix: ")) res.push(next);
      }
    });
    return res.join("\n");
  };

  test("healthy applications are OK: the probe was made and removed where a restore stages", async () => {
    const r = await doctor();
    const tree = linesOf(r.out, "tree");
    assert.match(tree, /^OK {3}app tree \(files\): 1 path\(s\) readable$/m, r.out);
    assert.match(
      tree,
      /^OK {3}app tree \(files\): a restore can stage beside .*tree\/data \(made and removed .*tree\/\.data\.ferry-probe\)/m,
    );
    assert.match(tree, /^OK {3}app tree \(files\): the restore journal can be written/m);
    assert.match(linesOf(r.out, "okdb"), /^OK {3}app okdb \(sqlite\): .*ok\.db: \d+ bytes$/m);
    assert.match(
      linesOf(r.out, "okdb"),
      /^OK {3}app okdb \(sqlite\): sqlite3 as ferry-doc-app can write the backup's copy/m,
    );
    assert.deepEqual(readdirSync(join(dir, "tree")), ["data"], "no probe is left");
    assert.deepEqual(readdirSync(join(dir, "db")).sort(), ["locked.db", "ok.db"]);
  });

  test("doctor-hook-not-runnable: each hook program is tried as the user it runs as", async () => {
    const r = await doctor();
    const hooked = linesOf(r.out, "hooked");
    assert.match(
      hooked,
      /^OK {3}app hooked \(files\): hooks\.pre_backup: .*hooks-ok\/quiesce runs as ferry-doc-app$/m,
      r.out,
    );
    assert.match(
      hooked,
      /^FAIL app hooked \(files\): hooks\.post_backup: ferry-doc-app cannot run .*hooks-private\/quiesce/m,
    );
    assert.match(
      hooked,
      /^ {5}fix: make .*hooks-private\/quiesce a regular file executable by ferry-doc-app, in directories ferry-doc-app can search$/m,
    );
    assert.match(
      hooked,
      /^FAIL app hooked \(files\): hooks\.pre_restore: ferry-doc-no-such-tool is not installed$/m,
    );
  });

  test("doctor-sqlite-mode-000: a database its owner cannot open FAILs, with the modes to fix", async () => {
    const r = await doctor();
    assert.equal(r.code, 1);
    const locked = linesOf(r.out, "lockeddb");
    assert.match(
      locked,
      /^FAIL app lockeddb \(sqlite\): .*locked\.db: sqlite3 as ferry-doc-app .*unable to open/m,
      r.out,
    );
    assert.match(
      locked,
      /^ {5}fix: the backup runs sqlite3 as ferry-doc-app: .*chmod u\+rw .*locked\.db/m,
    );
    // And it is right: the backup fails the same way.
    const exp = await ferry(socket, ["export", "lockeddb", "-o", join(dir, "x.tar")], {
      user: backup,
    });
    assert.notEqual(exp.code, 0);
  });

  test("doctor-read-only-parent: staging on a read-only filesystem FAILs with ReadWritePaths=", async () => {
    const r = await doctor();
    const tree = linesOf(r.out, "rotree");
    assert.match(tree, /^OK {3}app rotree \(files\): 1 path\(s\) readable$/m, r.out);
    assert.match(
      tree,
      /^FAIL app rotree \(files\): creating a staging directory \(mkdirat \.data\.ferry-probe\) in .*ro-tree fails: EROFS$/m,
    );
    assert.match(tree, /^ {5}fix: .*ro-tree is read-only for ferryd\. .*ReadWritePaths=/m);
    const db = linesOf(r.out, "rodb");
    assert.match(db, /^OK {3}app rodb \(sqlite\): .*app\.db: \d+ bytes$/m, "a backup still works");
    assert.match(
      db,
      /^FAIL app rodb \(sqlite\): creating a staged copy \(openat \.app\.db\.ferry-probe\) in .*ro-db fails: EROFS$/m,
    );
    assert.match(db, /^ {5}fix: .*ReadWritePaths=/m);

    // What the doctor predicted: the restore fails, saying where and what to do.
    const archive = join(outDir(), "rodb.tar");
    const exp = await ferry(socket, ["export", "rodb", "-o", archive], { user: backup });
    assert.equal(exp.code, 0, exp.stderr);
    const imp = await ferry(socket, ["import", "rodb", "-i", archive], { user: backup });
    assert.equal(imp.code, 1);
    assert.match(
      imp.stderr,
      /creating \.app\.db\.ferry-restore-[0-9a-f]{12} in .*ro-db failed \(EROFS\): .*ro-db is read-only for ferryd\. .*ReadWritePaths=.* \[READ_ONLY_FILESYSTEM\]/,
    );
    const treeArchive = join(outDir(), "rotree.tar");
    assert.equal(
      (await ferry(socket, ["export", "rotree", "-o", treeArchive], { user: backup })).code,
      0,
    );
    const treeImp = await ferry(socket, ["import", "rotree", "-i", treeArchive], { user: backup });
    assert.equal(treeImp.code, 1);
    assert.match(
      treeImp.stderr,
      /^ferry: mkdirat \.data\.ferry-restore-[0-9a-f]{12} in .*ro-tree failed \(EROFS\): .*ro-tree is read-only for ferryd\. Under systemd \(ProtectSystem=strict\) add it to ReadWritePaths= .* \[READ_ONLY_FILESYSTEM\]$/m,
    );
    assert.deepEqual(readdirSync(join(dir, "state/journal")), [], "no journal is left");
  });

  test("restore-disk-full-blamed-on-archive: a restore out of space is DISK_FULL, with a warning first", async () => {
    const r = await doctor();
    const small = linesOf(r.out, "small");
    assert.match(
      small,
      /^WARN app small \(files\): a restore can stage beside .*small\/data/m,
      r.out,
    );
    assert.match(
      small,
      /^ {5}fix: less than 1 GiB is free beside .*small\/data, and a restore stages a full copy of it there$/m,
    );
    const archive = join(outDir(), "small.tar");
    assert.equal(
      (await ferry(socket, ["export", "small", "-o", archive], { user: backup })).code,
      0,
    );
    const imp = await ferry(socket, ["import", "small", "-i", archive], { user: backup });
    assert.equal(imp.code, 1);
    assert.match(
      imp.stderr,
      /^ferry: writing data\/0\/big\.bin into the staging tree in .*small failed \(ENOSPC\): the filesystem of .*small is full.* \[DISK_FULL\]$/m,
    );
    assert.deepEqual(readdirSync(join(dir, "small")), ["data"], "the staging tree was removed");
    assert.deepEqual(readdirSync(join(dir, "small/data")), ["big.bin"]);
  });

  test("doctor-probe-symlink-planted: a symlink at the probe's name is not followed, created through or removed", async () => {
    const probe = join(dir, "planted/.data.ferry-probe");
    const outside = join(dir, "outside");
    for (const target of [outside, join(outside, "made-by-ferryd"), "/etc"]) {
      symlinkSync(target, probe);
      try {
        const r = await doctor();
        assert.equal(r.code, 1);
        const planted = linesOf(r.out, "planted");
        assert.match(
          planted,
          /^FAIL app planted \(files\): cannot probe .*planted: .*\.data\.ferry-probe is a symlink or special file of uid 0 that ferryd did not make; it is neither followed nor removed$/m,
          r.out,
        );
        assert.match(planted, /^ {5}fix: remove .*\.data\.ferry-probe/m);
        // Still the same symlink; nothing made or removed at its target.
        assert.ok(lstatSync(probe).isSymbolicLink());
        assert.equal(readlinkSync(probe), target);
        assert.deepEqual(readdirSync(outside), ["sentinel"]);
        assert.equal(existsSync(join(outside, "made-by-ferryd")), false);
      } finally {
        rmSync(probe);
      }
    }
  });

  test("a probe directory left by a killed ferryd is removed; one that holds something is not", async () => {
    const probe = join(dir, "planted/.data.ferry-probe");
    mkdirSync(probe, { mode: 0o700 });
    chmodSync(probe, 0o700);
    let r = await doctor();
    assert.match(
      linesOf(r.out, "planted"),
      /^OK {3}app planted \(files\): a restore can stage/m,
      r.out,
    );
    assert.equal(existsSync(probe), false);

    mkdirSync(probe, { mode: 0o700 });
    writeFileSync(join(probe, "keep"), "x");
    r = await doctor();
    assert.match(
      linesOf(r.out, "planted"),
      /^FAIL app planted \(files\): cannot probe .*is a directory of uid 0 that ferryd did not make/m,
    );
    assert.deepEqual(readdirSync(probe), ["keep"]);
    rmSync(probe, { recursive: true });
  });
});
