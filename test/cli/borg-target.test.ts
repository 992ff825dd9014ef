/**
 * `ferry backup --to borg:REPO` and `ferry restore --from borg:REPO` as a user runs them:
 * a real privileged ferryd (root only), ferry and borg both as the backup user, a real
 * borg 1.2 repository (repokey, BORG_PASSPHRASE, BORG_BASE_DIR of the backup user's, so
 * nothing of root's is touched). The cases: a files tree with everything tar and borg
 * treat differently (long names, links, empty and multi-MiB files, sub-second mtimes)
 * round-trips exactly, with the SHA-256 backup reported; a failing app never becomes a
 * borg archive and the repository still checks; archives not made by Ferry, unknown
 * archives and a tampered layout are refused with the live data untouched; and no
 * temporary file of ferry's is left behind.
 *
 * Bounds: a ~5 MiB tree; about fifteen ferry and borg runs.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { BorgImportStream } from "../../src/repo/borg-layout.js";
import { hasProgram } from "../drivers/suite.js";
import { assertUnchanged, type FilesApp, setupFilesApp, snapshot } from "../helpers/files-app.js";
import {
  asUser,
  ensureUser,
  FERRY,
  ferry,
  isRoot,
  processesOf,
  start,
  waitProcessesGone,
} from "../helpers/proc.js";
import { prng } from "../repo/helpers.js";

const skip = !isRoot ? "needs root" : !hasProgram("borg") ? "borg is not installed" : false;

describe("the borg target through a real ferryd", { skip, timeout: 300_000 }, () => {
  let fx: FilesApp;
  let big: string;
  let repo: string;
  let tmp: string;
  let env: Record<string, string>;
  const f = (args: string[]) => ferry(fx.socket, args, { user: fx.backup, env });
  /** borg as the backup user; stdout. */
  const borg = (args: string[], input?: Buffer): string => {
    const argv = asUser(fx.backup, ["borg", ...args]);
    return execFileSync(argv[0] as string, argv.slice(1), {
      env: { ...process.env, ...env },
      input,
      stdio: ["pipe", "pipe", "pipe"],
      maxBuffer: 1 << 26,
    }).toString();
  };
  const archives = (): { name: string; comment: string }[] =>
    JSON.parse(borg(["list", "--json", "--consider-checkpoints", "--format", "{comment}", repo]))
      .archives;
  const to = () => `borg:${repo}`;

  before(async () => {
    // An app whose backup streams for several seconds at borg's pace (random data: borg's
    // compression and deduplication cannot make it short), to be stopped in the middle.
    const appUser = ensureUser("ferry-borg-app");
    big = mkdtempSync("/tmp/ferry-borg-big-");
    chmodSync(big, 0o755);
    execFileSync("sh", [
      "-c",
      `head -c ${256 << 20} /dev/urandom > "$1"`,
      "sh",
      join(big, "random"),
    ]);
    execFileSync("chown", ["-R", `${appUser.name}:${appUser.name}`, big]);
    fx = await setupFilesApp("ferry-borg", {
      users: { app: "ferry-borg-app", backup: "ferry-borg-bk" },
      extraConfig:
        '\n[apps.broken]\ndriver = "command"\nbackup_command = ["false"]\nos_user = "APP"\n' +
        `\n[apps.big]\ndriver = "files"\npaths = ["${big}"]\nowner = "APP"\n`,
    });
    const { live, app, backup } = fx;
    mkdirSync(join(live, "x/y/z"), { recursive: true });
    writeFileSync(join(live, "x/y/z/w.txt"), "deep\n");
    writeFileSync(join(live, `sub/deeper/${"long-name-".repeat(11)}end`), prng("l", 9000));
    writeFileSync(join(live, "empty"), "");
    writeFileSync(join(live, "big.bin"), prng("big", 5 << 20));
    execFileSync("chown", ["-R", "-h", `${app.name}:${app.name}`, live]);
    // Sub-second mtimes on every file and link (borg keeps whole seconds in its tar).
    execFileSync("find", [
      live,
      "!",
      "-type",
      "d",
      "-exec",
      "touch",
      "-h",
      "-d",
      "2024-02-29 12:34:56.123456789",
      "{}",
      "+",
    ]);
    for (const d of ["borg-repo", "borg-base", "tmp"]) {
      mkdirSync(join(fx.dir, d), { mode: 0o700 });
      chownSync(join(fx.dir, d), backup.uid, backup.gid);
    }
    repo = join(fx.dir, "borg-repo");
    tmp = join(fx.dir, "tmp");
    env = {
      BORG_PASSPHRASE: "borg e2e",
      BORG_BASE_DIR: join(fx.dir, "borg-base"),
      TMPDIR: tmp,
    };
    borg(["init", "-e", "repokey", repo]);
  });
  after(async () => {
    await fx?.close();
    if (big !== undefined) rmSync(big, { recursive: true, force: true });
  });

  /** `ferry ARGS…` as the backup user, in a process group of its own (a shell's job). */
  const background = (args: string[]) =>
    start([process.execPath, FERRY, "--socket", fx.socket, ...args], {
      user: fx.backup,
      env,
      detached: true,
    });
  /** Waits until borg import-tar runs and has had a second to take in some of the archive. */
  const borgImporting = async () => {
    const deadline = Date.now() + 30_000;
    while (processesOf(fx.backup.uid, "import-tar").length === 0) {
      assert.ok(Date.now() < deadline, "borg import-tar never started");
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 1000));
  };

  let backedUp: { app: string; ok: boolean; bytes: number; sha256: string; archive: string };

  test("round trip: backup --to borg, change the data, restore --from borg latest gives the tree back exactly", async () => {
    const original = snapshot(fx.live);
    const b = await f(["backup", "notes", "--to", to(), "--tag", "e2e", "--json"]);
    assert.equal(b.code, 0, b.stderr);
    const out = JSON.parse(b.stdout.toString());
    assert.deepEqual(out.failed, []);
    backedUp = out.results[0];
    assert.equal(backedUp.app, "notes");
    assert.match(backedUp.sha256, /^[0-9a-f]{64}$/);
    assert.match(backedUp.archive, /^notes-\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const list = archives();
    assert.equal(list.length, 1);
    assert.equal(list[0]?.name, backedUp.archive);
    assert.equal(list[0]?.comment, "ferry-app=notes tag=e2e");
    assert.deepEqual(readdirSync(tmp), [], "the layout spool is removed");

    writeFileSync(join(fx.live, "a.txt"), "changed\n"); // also the hardlink sub/hard-a
    rmSync(join(fx.live, "sub/b.txt"));
    rmSync(join(fx.live, "big.bin"));
    writeFileSync(join(fx.live, "new"), "not in the backup\n");
    assert.notDeepEqual(snapshot(fx.live), original);

    const r = await f(["restore", "latest", "--from", to(), "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout.toString());
    assert.equal(res.archive, backedUp.archive);
    assert.equal(res.app, "notes");
    assert.equal(res.sha256, backedUp.sha256, "the rebuilt archive is the one backed up");
    assert.equal(res.bytes, backedUp.bytes);
    assert.equal(res.sha256_matches_backup, true);
    // Content, modes, owners, links and mtimes to the nanosecond (test/helpers/files-app.ts).
    assert.deepEqual(snapshot(fx.live), original);
    assert.deepEqual(readdirSync(tmp), [], "the extracted layout is removed");

    // The text form names the archive and says the archive is the one backed up.
    const t = await f(["restore", backedUp.archive, "--from", to()]);
    assert.equal(t.code, 0, t.stderr);
    assert.match(
      t.stderr,
      new RegExp(
        `restored notes from borg:.* archive ${backedUp.archive.replace(/\./g, "\\.")}: \\d+ entries, sha256 ${backedUp.sha256.slice(0, 16)}… as backed up`,
      ),
    );
  });

  test("a failing app never becomes a borg archive, before or during its stream, and the repository still checks", async () => {
    const before = archives();
    // Fails before its first byte: borg is never started.
    const r = await f(["backup", "broken", "notes", "--to", to(), "--json"]);
    assert.equal(r.code, 1, r.stderr);
    const out = JSON.parse(r.stdout.toString());
    assert.deepEqual(out.failed, ["broken"]);
    assert.equal(out.results[1].ok, true);
    // Fails in the middle of its stream (cancelled: ferryd's Ferry-Status trailer says so and
    // the archive has no end record): borg, which has part of it, is killed.
    const bg = background(["backup", "big", "--to", to(), "--json"]);
    await borgImporting();
    const jobs = JSON.parse((await f(["jobs", "--json"])).stdout.toString());
    const job = jobs.find(
      (j: { app: string; state: string }) => j.app === "big" && j.state === "running",
    );
    assert.ok(job !== undefined && job.bytes > 0, JSON.stringify(jobs));
    assert.equal((await f(["cancel", job.id])).code, 0);
    const b = await bg.done;
    assert.equal(b.code, 1, b.stderr);
    assert.deepEqual(JSON.parse(b.stdout.toString()).failed, ["big"]);
    assert.deepEqual(await waitProcessesGone(fx.backup.uid, "import-tar", 5000), []);
    const names = archives().map((a) => a.name);
    assert.equal(names.length, before.length + 1, `one more (notes); no checkpoint: ${names}`);
    assert.ok(
      names.every((n) => !/^(broken|big)-/.test(n)),
      names.join(" "),
    );
    borg(["check", repo]); // throws on a non-zero exit; also removes borg's stale lock
    assert.deepEqual(readdirSync(tmp), []);
  });

  test("Ctrl-C during a backup: exit 130, borg killed, nothing recorded (no checkpoint either)", async () => {
    const before = archives();
    const bg = background(["backup", "big", "--to", to()]);
    await borgImporting();
    process.kill(-bg.pid, "SIGINT"); // what the terminal sends to its foreground job
    const r = await bg.done;
    assert.equal(r.code, 130, r.stderr);
    assert.match(r.stderr, /backup of big interrupted; borg:.* recorded nothing of it/);
    assert.deepEqual(await waitProcessesGone(fx.backup.uid, "import-tar", 5000), []);
    assert.deepEqual(archives(), before, "no archive and no checkpoint");
    assert.deepEqual(readdirSync(tmp), []);
  });

  test("ferry-killed-borg-records-partial-archive: kill -9 of ferry mid-backup takes borg with it; nothing recorded", async () => {
    const before = archives();
    const bg = background(["backup", "big", "--to", to()]);
    await borgImporting();
    const borgPids = processesOf(fx.backup.uid, "import-tar").map((p) => p.pid);
    process.kill(bg.pid, "SIGKILL"); // ferry only: not its process group
    await bg.done;
    // Without --pdeathsig, borg saw its input end and recorded the archive up to there.
    assert.deepEqual(await waitProcessesGone(fx.backup.uid, "import-tar", 5000), []);
    // The orphaned borg is reaped by init, not by ferry: until then its pid exists, and
    // the next borg takes its lock for a live one's.
    const deadline = Date.now() + 20_000;
    while (borgPids.some((pid) => existsSync(`/proc/${pid}`)) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.deepEqual(archives(), before, "no archive, partial or checkpoint");
    borg(["check", repo]); // the killed borg's stale lock is removed by the next borg
    // ferry was killed: its private temporary directory (the layout's spool) stays.
    for (const d of readdirSync(tmp)) rmSync(join(tmp, d), { recursive: true, force: true });
  });

  // The same rule for restic, whose targets share the tool runner (target-common.ts):
  // restic --stdin records whatever it read once its input ends, so here the bug this
  // stops is certain, where borg records a partial archive only when the cut falls
  // between two tar entries.
  test("ferry-killed-restic-records-partial-archive: kill -9 of ferry mid-backup takes restic with it; no snapshot", {
    skip: hasProgram("restic") ? false : "restic is not installed",
  }, async () => {
    const rrepo = join(fx.dir, "restic-repo");
    const renv = {
      ...env,
      RESTIC_PASSWORD: "restic e2e",
      RESTIC_CACHE_DIR: join(tmp, "..", "restic-cache"),
    };
    const restic = (args: string[]): string => {
      const argv = asUser(fx.backup, ["restic", "-r", rrepo, ...args]);
      return execFileSync(argv[0] as string, argv.slice(1), {
        env: { ...process.env, ...renv },
        stdio: ["ignore", "pipe", "pipe"],
      }).toString();
    };
    for (const d of [rrepo, join(fx.dir, "restic-cache")]) {
      mkdirSync(d, { mode: 0o700 });
      chownSync(d, fx.backup.uid, fx.backup.gid);
    }
    restic(["init"]);
    const bg = start(
      [process.execPath, FERRY, "--socket", fx.socket, "backup", "big", "--to", `restic:${rrepo}`],
      {
        user: fx.backup,
        env: renv,
        detached: true,
      },
    );
    const deadline = Date.now() + 30_000;
    while (processesOf(fx.backup.uid, "--stdin").length === 0) {
      assert.ok(Date.now() < deadline, "restic backup never started");
      await new Promise((r) => setTimeout(r, 50));
    }
    await new Promise((r) => setTimeout(r, 1000));
    process.kill(bg.pid, "SIGKILL");
    await bg.done;
    assert.deepEqual(await waitProcessesGone(fx.backup.uid, "--stdin", 10_000), []);
    assert.deepEqual(
      JSON.parse(restic(["snapshots", "--json"])),
      [],
      "no snapshot of a partial archive",
    );
    for (const d of readdirSync(tmp)) rmSync(join(tmp, d), { recursive: true, force: true });
  });

  test("unknown archives, archives not made by Ferry or without a layout, and a missing borg are refused; nothing changes", async () => {
    const docs = join(fx.dir, "docs");
    mkdirSync(docs, { mode: 0o755 });
    writeFileSync(join(docs, "readme"), "not a Ferry archive\n");
    chmodSync(join(docs, "readme"), 0o644);
    borg(["create", `${repo}::docs`, docs]);
    borg(["create", "--comment", "ferry-app=notes", `${repo}::fake-notes`, docs]);
    const world = fx.world();
    const unknown = await f(["restore", "no-such-archive", "--from", to()]);
    assert.equal(unknown.code, 1);
    assert.match(unknown.stderr, /has no archive "no-such-archive" \[SNAPSHOT_NOT_FOUND\]/);
    const foreign = await f(["restore", "docs", "--from", to()]);
    assert.equal(foreign.code, 1);
    assert.match(
      foreign.stderr,
      /"docs" was not made by ferry backup --to borg .*\[ARCHIVE_INVALID\]/,
    );
    const fake = await f(["restore", "fake-notes", "--from", to()]);
    assert.equal(fake.code, 1);
    assert.match(fake.stderr, /"fake-notes" has no \.ferry-borg-layout.*\[ARCHIVE_INVALID\]/);
    // Without borg on PATH: the Debian package to install (only setpriv, for the test).
    const bin = join(fx.dir, "bin-without-borg");
    mkdirSync(bin);
    symlinkSync("/usr/bin/setpriv", join(bin, "setpriv"));
    const none = await ferry(fx.socket, ["restore", "latest", "--from", to()], {
      user: fx.backup,
      env: { ...env, PATH: bin },
    });
    assert.equal(none.code, 1);
    assert.match(
      none.stderr,
      /borg is not installed .*Debian package borgbackup.*\[HELPER_FAILED\]/,
    );
    assertUnchanged(world, fx.world(), "refused borg archives");
    // `latest` passes over both: it is still the newest archive made by Ferry.
    const latest = await f(["restore", "latest", "--from", to(), "--json"]);
    assert.equal(latest.code, 0, latest.stderr);
    assert.match(JSON.parse(latest.stdout.toString()).archive, /^notes-/);
    assert.deepEqual(readdirSync(tmp), []);
  });

  test("a tampered layout makes ferryd refuse the restore; nothing changes", async () => {
    const exp = await f(["export", "notes"]);
    assert.equal(exp.code, 0, exp.stderr);
    const archive = exp.stdout;
    const meta: Buffer[] = [];
    const s = new BorgImportStream((b) => meta.push(Buffer.from(b)));
    const input: Buffer[] = s.push(archive).map((b) => Buffer.from(b));
    const m = Buffer.concat(meta);
    // One byte of a.txt's ustar header (its mode field) flipped in the layout only.
    const hdr = m.indexOf(Buffer.from("data/0/a.txt\0"));
    assert.equal(m.toString("latin1", hdr + 257, hdr + 262), "ustar", "a header's name field");
    m[hdr + 104] = (m[hdr + 104] as number) ^ 1;
    const h = { sha256: createHash("sha256").update(archive).digest("hex"), bytes: archive.length };
    input.push(s.memberHead(h, m.length), m, s.memberEnd(h, m.length));
    borg(
      ["import-tar", "--comment", "ferry-app=notes", `${repo}::tampered`, "-"],
      Buffer.concat(input),
    );
    const world = fx.world();
    const logBefore = fx.daemon.log().length;
    const r = await f(["restore", "tampered", "--from", to()]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /invalid archive: header checksum mismatch \[ARCHIVE_INVALID\]/);
    // ferryd said so: its audit log has the restore refused with that code.
    assert.match(
      fx.daemon.log().slice(logBefore),
      /"path":"\/v1\/apps\/notes\/restore".*"outcome":"error".*"code":"ARCHIVE_INVALID"/,
    );
    assertUnchanged(world, fx.world(), "tampered layout");
    assert.deepEqual(readdirSync(tmp), []);
  });
});
