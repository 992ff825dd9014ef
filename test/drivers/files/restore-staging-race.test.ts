/**
 * Races on the staging directory a restore makes beside the live tree, found by an
 * attacker's review:
 *
 * - restore-staging-planted-by-backup-user: the staging root is made with mkdirat, so for
 *   an instant it is the backup user's (ferryd's uid) before ferryd hands it to root; a
 *   backup user watching the app's parent directory with inotify planted a directory of
 *   its own inside, which then went live with the restore. Now a new directory that is not
 *   empty once handed to root is refused and removed.
 * - restore-staging-exchange-deletes-root-dir: an application owner who can write the
 *   app's parent directory exchanged one of root's directories with the staging name, and
 *   ferryd, cleaning up "its" staging by name, deleted root's directory. Now ferryd only
 *   removes a directory it verified (through a held descriptor) to be the one it made.
 *
 * Real privileged ferryd, real users, the racers in test/helpers/staging_racer.py.
 * Bounds: at most 12 imports per test of a tree with one 16 MiB file (so extraction takes
 * long enough to race); each racer runs at most 120 s.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import {
  chownSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type FilesApp, setupFilesApp, snapshot } from "../../helpers/files-app.js";
import { asUser, needsRoot, ROOT, type TestUser } from "../../helpers/proc.js";

const RACER = join(ROOT, "test/helpers/staging_racer.py");

function startRacer(user: TestUser, args: string[]) {
  // Debian's python3: a test user may not run a python from root's home (pyenv).
  const argv = asUser(user, ["/usr/bin/python3", RACER, ...args]);
  const child: ChildProcess = spawn(argv[0] as string, argv.slice(1), {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  return {
    async stop(): Promise<{ seen: number; won: number; lost: number; error?: string }> {
      child.kill("SIGTERM");
      await new Promise((r) => child.on("close", r));
      return JSON.parse(out || '{"seen":0,"won":0,"lost":0}');
    },
  };
}

/** Every entry below `dir` whose owner is `uid` (lstat, no following). */
function ownedBy(dir: string, uid: number): string[] {
  const out: string[] = [];
  const walk = (p: string) => {
    const st = lstatSync(p);
    if (st.uid === uid) out.push(p);
    if (st.isDirectory()) for (const n of readdirSync(p)) walk(join(p, n));
  };
  walk(dir);
  return out;
}

describe("restore staging races", { skip: needsRoot, timeout: 600_000 }, () => {
  let fx: FilesApp;
  let archive: Buffer;

  before(async () => {
    fx = await setupFilesApp("ferry-stage-race");
    writeFileSync(join(fx.live, "big.bin"), Buffer.alloc(16 * 1024 * 1024, 7));
    execFileSync("chown", [`${fx.app.name}:${fx.app.name}`, join(fx.live, "big.bin")]);
    const exported = await fx.exportArchive();
    assert.equal(exported.code, 0, exported.stderr);
    archive = exported.stdout;
  });
  after(() => fx.close());

  test("restore-staging-planted-by-backup-user: nothing the backup user plants in staging goes live", async () => {
    const passwd = readFileSync("/etc/passwd", "utf8");
    const outside = snapshot(fx.outside);
    const racer = startRacer(fx.backup, ["plant", fx.appDir, ".notes.ferry-restore-", "120"]);
    await new Promise((r) => setTimeout(r, 300)); // the watch is in place
    let refused = 0;
    try {
      for (let i = 0; i < 12; i++) {
        const r = await fx.importArchive(archive);
        if (r.code !== 0) {
          assert.match(r.stderr, /something was put into this new directory/, r.stderr);
          refused++;
        }
        assert.deepEqual(ownedBy(fx.live, fx.backup.uid), [], `round ${i}: B's entry went live`);
        assert.equal(readdirSync(fx.live).includes("planted"), false);
      }
    } finally {
      const report = await racer.stop();
      assert.equal(report.error, undefined, JSON.stringify(report));
      assert.ok(
        report.seen > 0,
        `the racer never saw a staging directory: ${JSON.stringify(report)}`,
      );
      // Every plant that landed was caught and refused.
      assert.equal(refused, report.won, JSON.stringify({ refused, ...report }));
    }
    assert.deepEqual(snapshot(fx.outside), outside);
    assert.equal(readFileSync("/etc/passwd", "utf8"), passwd);
    assert.deepEqual(
      readdirSync(fx.appDir).filter((n) => n !== "notes"),
      [],
      "staging left behind",
    );
  });

  test("restore-staging-exchange-deletes-root-dir: ferryd never removes a directory it did not make", async () => {
    // The app's owner may write the parent directory (an admin's choice docs/security.md
    // warns about); root keeps a directory there that the owner cannot delete.
    chownSync(fx.appDir, fx.app.uid, fx.app.gid);
    const victim = join(fx.appDir, "roots-own");
    mkdirSync(victim, { mode: 0o700 });
    writeFileSync(join(victim, "precious"), "root's data\n", { mode: 0o600 });
    const precious = () =>
      execFileSync("find", [fx.appDir, "-name", "precious", "-type", "f"], { encoding: "utf8" })
        .trim()
        .split("\n")
        .filter((l) => l !== "");
    let won = 0;
    try {
      for (let i = 0; i < 12 && won === 0; i++) {
        const racer = startRacer(fx.app, [
          "exchange",
          fx.appDir,
          ".notes.ferry-restore-",
          victim,
          "120",
        ]);
        await new Promise((r) => setTimeout(r, 200));
        await fx.importArchive(archive);
        const report = await racer.stop();
        won += report.won;
        const found = precious();
        assert.equal(
          found.length,
          1,
          `round ${i}: root's file is gone (${JSON.stringify(report)})`,
        );
        const st = lstatSync(found[0] as string);
        assert.equal(st.uid, 0);
        assert.equal(readFileSync(found[0] as string, "utf8"), "root's data\n");
      }
      assert.ok(won > 0, "the owner never managed the exchange: the test proved nothing");
    } finally {
      // Put things back for the fixture's own cleanup.
      for (const n of readdirSync(fx.appDir)) {
        if (n !== "notes") rmSync(join(fx.appDir, n), { recursive: true, force: true });
      }
      chownSync(fx.appDir, 0, 0);
    }
  });
});
