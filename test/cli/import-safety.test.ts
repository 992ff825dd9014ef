/**
 * `ferry import` before it deletes anything (root: a privileged ferryd through the files-app
 * fixture, its own users):
 *
 * - import-deletes-files-created-since-backup: `--dry-run` lists what a restore would add,
 *   remove and change (ferryd compares; it alone can read the app), changes nothing (no
 *   staging, no journal, no pre_restore hook), and the restore then does exactly that;
 * - import-dry-run-takes-bad-archives: a foreign, an unsafe and a truncated archive are
 *   refused by the dry run with the restore's own codes;
 * - import-asks-on-terminal: on a terminal (a pty from `script`) ferry shows the dry run's
 *   summary and asks; "n" changes nothing, "y" restores, `--yes` does not ask, and without
 *   a terminal nobody is asked (scripts keep working);
 * - import-keep-old: the replaced tree is kept at the path ferry prints, also when ferryd
 *   is killed after the swap and finishes the restore at its next start.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  existsSync,
  readdirSync,
  rmSync,
  symlinkSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  assertUnchanged,
  type FilesApp,
  makeArchive,
  setupFilesApp,
  snapshot,
} from "../helpers/files-app.js";
import { FERRY, ferry, needsRoot } from "../helpers/proc.js";

const hasScript = existsSync("/usr/bin/script");

describe("ferry import: dry run, confirmation, keep-old", { skip: needsRoot }, () => {
  let fx: FilesApp;
  let archive: string;
  let archived: Map<string, string>;

  before(async () => {
    fx = await setupFilesApp("ferry-import-safety", {
      users: { app: "ferry-is-app", backup: "ferry-is-bk" },
      extraConfig: `
[apps.notes.hooks]
pre_restore = ["/bin/sh", "-c", "echo x > MARKER"]

[apps.blob]
driver = "command"
os_user = "APP"
backup_command = ["/bin/sh", "-c", "echo blob"]
restore_command = ["/bin/sh", "-c", "cat > /dev/null"]
restore = true
`.replace("MARKER", "/tmp/ferry-is-marker"),
    });
    chmodSync(fx.dir, 0o755);
    archived = snapshot(fx.live);
    const out = join(fx.dir, "out");
    execFileSync("install", ["-d", "-o", fx.backup.name, out]);
    archive = join(out, "notes.tar");
    const r = await ferry(fx.socket, ["export", "notes", "-o", archive], { user: fx.backup });
    assert.equal(r.code, 0, r.stderr);
  });
  after(async () => {
    rmSync("/tmp/ferry-is-marker", { force: true });
    await fx?.close();
  });

  /** Changes since the backup: one file new, one gone, one rewritten, a mode, a link. */
  const mutate = () => {
    writeFileSync(join(fx.live, "new.txt"), "made after the backup\n");
    unlinkSync(join(fx.live, "sub/b.txt"));
    writeFileSync(join(fx.live, "a.txt"), "ALPHA\n");
    chmodSync(join(fx.live, "sub/deeper/c.bin"), 0o644);
    unlinkSync(join(fx.live, "sub/link-to-a"));
    symlinkSync("deeper/c.bin", join(fx.live, "sub/link-to-a"));
    execFileSync("chown", ["-R", "-h", `${fx.app.name}:${fx.app.name}`, fx.live]);
  };
  const importAs = (args: string[]) =>
    ferry(fx.socket, ["import", "notes", "-i", archive, ...args], { user: fx.backup });

  test("import-deletes-files-created-since-backup: --dry-run says so and changes nothing", async () => {
    mutate();
    rmSync("/tmp/ferry-is-marker", { force: true });
    const before = fx.world();
    const r = await importAs(["--dry-run"]);
    assert.equal(r.code, 0, r.stderr);
    const L = fx.live;
    assert.deepEqual(r.stdout.toString().trim().split("\n").sort(), [
      `+ ${L}/sub/b.txt`,
      `- ${L}/new.txt`,
      `~ ${L}/a.txt (content, mtime)`,
      `~ ${L}/sub/deeper/c.bin (mode)`,
      `~ ${L}/sub/link-to-a (target)`,
    ]);
    assert.match(
      r.stderr,
      /^dry run of notes: 1 added, 1 removed, 3 changed, \d+ unchanged; the archive verified \(\d+ entries, sha256 [0-9a-f]{16}…\); nothing was changed$/m,
    );
    assertUnchanged(before, fx.world(), "dry run");
    assert.equal(existsSync("/tmp/ferry-is-marker"), false, "the pre_restore hook ran");

    // The restore does what the dry run said (no terminal: nobody is asked).
    const real = await importAs([]);
    assert.equal(real.code, 0, real.stderr);
    assert.doesNotMatch(real.stderr, /\[y\/N\]/);
    assert.deepEqual(snapshot(fx.live), archived);
    assert.equal(existsSync("/tmp/ferry-is-marker"), true, "the restore ran its hook");
    const again = await importAs(["--dry-run"]);
    assert.equal(again.stdout.toString(), "");
    assert.match(again.stderr, /notes: 0 added, 0 removed, 0 changed, \d+ unchanged/);
  });

  test("a long list of differences is cut at 1000 lines and says how many more", async () => {
    const many = join(fx.live, "many");
    execFileSync("mkdir", [many]);
    for (let i = 0; i < 1100; i++) writeFileSync(join(many, `f${i}`), "");
    const r = await importAs(["--dry-run"]);
    rmSync(many, { recursive: true });
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.toString().trim().split("\n");
    assert.equal(lines.length, 1001);
    assert.equal(lines[1000], "… and 101 more");
    assert.match(r.stderr, /notes: 0 added, 1101 removed, 0 changed/);
  });

  test("a driver that cannot compare verifies the archive; --keep-old is for files apps", async () => {
    const blob = join(fx.dir, "out/blob.tar");
    assert.equal(
      (await ferry(fx.socket, ["export", "blob", "-o", blob], { user: fx.backup })).code,
      0,
    );
    const dry = await ferry(fx.socket, ["import", "blob", "-i", blob, "--dry-run"], {
      user: fx.backup,
    });
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(
      dry.stderr,
      /dry run of blob: the archive verified \(1 entries.*\); its driver replaces the data whole, so entries are not compared with the live data; nothing was changed/,
    );
    const keep = await ferry(fx.socket, ["import", "blob", "-i", blob, "--keep-old"], {
      user: fx.backup,
    });
    assert.equal(keep.code, 2);
    assert.match(
      keep.stderr,
      /the command driver cannot keep the data it replaces .*\[BAD_REQUEST\]/,
    );
  });

  test("import-dry-run-takes-bad-archives: refused with the restore's own codes", async () => {
    const before = fx.world();
    const bad = join(fx.dir, "out/bad.tar");
    const tryDry = async (bytes: Buffer) => {
      writeFileSync(bad, bytes);
      return ferry(fx.socket, ["import", "notes", "-i", bad, "--dry-run"], { user: fx.backup });
    };
    const foreign = await ferry(fx.socket, ["export", "other"], { user: fx.backup });
    const f = await tryDry(foreign.stdout);
    assert.equal(f.code, 1);
    assert.match(f.stderr, /\[ARCHIVE_FOREIGN\]/);
    const u = await tryDry(
      makeArchive({
        paths: [fx.live],
        entries: [
          { name: "data/0/", type: "dir", mode: 0o750 },
          { name: "data/0/x/../../../etc/evil", data: "x" },
        ],
      }),
    );
    assert.equal(u.code, 1);
    assert.match(u.stderr, /\[ARCHIVE_UNSAFE\]/);
    const orphan = await tryDry(
      makeArchive({
        paths: [fx.live],
        entries: [
          { name: "data/0/", type: "dir", mode: 0o750 },
          { name: "data/0/nodir/file", data: "x" },
        ],
      }),
    );
    assert.match(orphan.stderr, /not an earlier directory of the archive.*\[ARCHIVE_UNSAFE\]/);
    const whole = await ferry(fx.socket, ["export", "notes"], { user: fx.backup });
    const t = await tryDry(whole.stdout.subarray(0, whole.stdout.length - 2048));
    assert.equal(t.code, 1);
    assert.match(t.stderr, /\[ARCHIVE_TRUNCATED\]/);
    assertUnchanged(before, fx.world(), "refused dry runs");
  });

  test("import-asks-on-terminal: the summary, then a question; n keeps, y restores, --yes does not ask", {
    skip: hasScript ? false : "script (util-linux) is needed for a terminal",
  }, async () => {
    /** `ferry import` in a pty as the backup user, typing `answer`. */
    const onTerminal = (args: string[], answer: string) => {
      const cmd = [
        "setpriv",
        `--reuid=${fx.backup.uid}`,
        `--regid=${fx.backup.gid}`,
        "--init-groups",
        process.execPath,
        FERRY,
        "--socket",
        fx.socket,
        "import",
        "notes",
        "-i",
        archive,
        ...args,
      ]
        .map((a) => `'${a}'`)
        .join(" ");
      const r = spawnSync("script", ["-qec", cmd, "/dev/null"], {
        input: answer,
        encoding: "utf8",
        timeout: 120_000,
        env: { PATH: "/usr/bin:/bin", TERM: "dumb" },
      });
      return { code: r.status, out: r.stdout };
    };
    mutate();
    const changed = snapshot(fx.live);
    const no = onTerminal([], "n\n");
    assert.equal(no.code, 1, no.out);
    assert.match(no.out, /notes: 1 added, 1 removed, 3 changed, \d+ unchanged/);
    assert.match(
      no.out,
      /Restore notes from .*notes\.tar \(1 live entries will be deleted; --keep-old keeps them\)\? \[y\/N\]/,
    );
    assert.match(no.out, /import of notes not confirmed; nothing was changed \[CANCELLED\]/);
    assert.deepEqual(snapshot(fx.live), changed, "n changed the data");

    const yes = onTerminal([], "y\n");
    assert.equal(yes.code, 0, yes.out);
    assert.match(yes.out, /restored notes: /);
    assert.deepEqual(snapshot(fx.live), archived);

    mutate();
    const forced = onTerminal(["--yes"], "");
    assert.equal(forced.code, 0, forced.out);
    assert.doesNotMatch(forced.out, /\[y\/N\]/);
    assert.deepEqual(snapshot(fx.live), archived);
  });

  test("import-keep-old: the replaced tree is kept where ferry says, even across a crash", async () => {
    mutate();
    const replaced = snapshot(fx.live);
    const r = await importAs(["--keep-old"]);
    assert.equal(r.code, 0, r.stderr);
    const m = /^kept the replaced data of notes at (\/\S+)$/m.exec(r.stderr);
    assert.ok(m, r.stderr);
    const kept = m[1] as string;
    assert.match(kept, new RegExp(`^${fx.appDir}/\\.notes\\.ferry-old-[0-9a-f]{12}$`));
    assert.deepEqual(snapshot(fx.live), archived);
    assert.deepEqual(snapshot(kept), replaced, "the kept tree is the replaced one");
    rmSync(kept, { recursive: true });

    // Killed after the swap, before the old tree was dealt with: the next start keeps it.
    mutate();
    const replaced2 = snapshot(fx.live);
    await fx.restart({ FERRY_FAILPOINTS: "restore-before-cleanup" });
    const crashed = await importAs(["--keep-old"]);
    assert.notEqual(crashed.code, 0);
    await new Promise<void>((resolve) => {
      if (fx.daemon.child.exitCode !== null || fx.daemon.child.signalCode !== null) resolve();
      else fx.daemon.child.once("exit", () => resolve());
    });
    await fx.restart();
    assert.match(fx.daemon.log(), /completed an interrupted restore/);
    assert.deepEqual(snapshot(fx.live), archived);
    const left = readdirSync(fx.appDir).filter((n) => n !== "notes");
    assert.equal(left.length, 1, left.join(", "));
    assert.match(left[0] as string, /^\.notes\.ferry-old-[0-9a-f]{12}$/);
    assert.deepEqual(snapshot(join(fx.appDir, left[0] as string)), replaced2);
    rmSync(join(fx.appDir, left[0] as string), { recursive: true });
  });
});
