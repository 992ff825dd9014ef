/**
 * A files application with several paths is restored as one: every root changes, or none
 * does. Through a real privileged ferryd (root only): a good restore replaces both roots;
 * an archive whose second root holds an unsafe entry is refused with the first root (whose
 * entries came first and were fine) untouched; and a SIGKILL between the swaps of the two
 * roots (failpoint restore-swapped-0) or before any swap is recovered at restart to both
 * new or both old, never one of each.
 *
 * Bounds: two roots of a few files each; each restart is bounded by startFerryd's 60 s.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningFerryd, startFerryd } from "../../helpers/ferryd.js";
import { makeArchive, snapshot } from "../../helpers/files-app.js";
import { ensureUser, ferry, needsRoot, type TestUser } from "../../helpers/proc.js";

describe("restore of an app with several paths", { skip: needsRoot, timeout: 300_000 }, () => {
  let dir: string;
  let roots: string[];
  let config: string;
  let socket: string;
  let app: TestUser;
  let backup: TestUser;
  let daemon: RunningFerryd;
  let oldArchive: Buffer;
  let newArchive: Buffer;
  let oldTrees: Map<string, string>[];
  let newTrees: Map<string, string>[];

  const trees = () => roots.map((r) => snapshot(r));
  const importArchive = (a: Buffer) =>
    ferry(socket, ["import", "multi"], { user: backup, input: a });
  /** Nothing but the live roots in their parents: no staging left. */
  const parents = () => [
    readdirSync(join(dir, "one")).sort(),
    readdirSync(join(dir, "two")).sort(),
  ];
  const journals = () => {
    try {
      return readdirSync(join(dir, "state/journal"));
    } catch {
      return [];
    }
  };
  async function restart(env?: Record<string, string>): Promise<void> {
    await daemon.stop();
    daemon = await startFerryd({ config, serviceUser: backup, env });
  }
  const same = (a: unknown, b: unknown) => {
    try {
      assert.deepEqual(a, b);
      return true;
    } catch {
      return false;
    }
  };

  before(async () => {
    app = ensureUser("ferry-rt-app");
    backup = ensureUser("ferry-rt-bk");
    dir = mkdtempSync("/tmp/ferry-multi-");
    chmodSync(dir, 0o755);
    roots = [join(dir, "one/data"), join(dir, "two/data")];
    for (const [i, r] of roots.entries()) {
      mkdirSync(join(r, "sub"), { recursive: true });
      writeFileSync(join(r, "a.txt"), `root ${i} old\n`);
      writeFileSync(join(r, "sub/b.txt"), `root ${i} old b\n`);
      execFileSync("chown", ["-R", `${app.name}:${app.name}`, r]);
    }
    socket = join(dir, "run/ferry.sock");
    config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n[apps.multi]\ndriver = "files"\npaths = ["${roots[0]}", "${roots[1]}"]\nowner = "${app.name}"\nrestore = true\n`,
    );
    daemon = await startFerryd({ config, serviceUser: backup });
    oldTrees = trees();
    const exported = await ferry(socket, ["export", "multi"], { user: backup });
    assert.equal(exported.code, 0, exported.stderr);
    oldArchive = exported.stdout;
    const entries: Record<string, unknown>[] = [];
    for (const i of [0, 1]) {
      entries.push({ name: `data/${i}/`, type: "dir", mode: 0o750 });
      for (let f = 0; f < 50; f++)
        entries.push({ name: `data/${i}/new${f}.txt`, data: `root ${i} new ${f}\n`.repeat(50) });
    }
    newArchive = makeArchive({ app: "multi", paths: roots, entries });
    const r = await importArchive(newArchive);
    assert.equal(r.code, 0, r.stderr);
    newTrees = trees();
    assert.ok(!same(newTrees[0], oldTrees[0]) && !same(newTrees[1], oldTrees[1]));
    const back = await importArchive(oldArchive);
    assert.equal(back.code, 0, back.stderr);
    assert.deepEqual(trees(), oldTrees);
  });
  after(async () => {
    await daemon?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test("a good restore replaces every root", async () => {
    const r = await importArchive(newArchive);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(trees(), newTrees);
    assert.deepEqual(parents(), [["data"], ["data"]]);
    const back = await importArchive(oldArchive);
    assert.equal(back.code, 0, back.stderr);
    assert.deepEqual(trees(), oldTrees);
  });

  test("multipath-partial-restore: an unsafe entry in the second root leaves the first untouched", async () => {
    const entries: Record<string, unknown>[] = [
      { name: "data/0/", type: "dir", mode: 0o750 },
      { name: "data/0/fine.txt", data: "a perfectly good file\n" },
      { name: "data/1/", type: "dir", mode: 0o750 },
      { name: "data/1/fine.txt", data: "fine too\n" },
      { name: "data/1/../../escape", data: "pwned" },
    ];
    const r = await importArchive(makeArchive({ app: "multi", paths: roots, entries }));
    assert.notEqual(r.code, 0, "the archive was accepted");
    assert.match(r.stderr, /\[ARCHIVE_UNSAFE\]/);
    assert.deepEqual(trees(), oldTrees, "a root changed although the restore was refused");
    assert.deepEqual(parents(), [["data"], ["data"]], "staging left behind");
    assert.deepEqual(readdirSync(dir).sort(), ["ferry.toml", "one", "run", "state", "two"]);
    assert.deepEqual(journals(), []);
  });

  for (const [point, expected] of [
    ["restore-synced", "old"],
    ["restore-swapped-0", "new"],
  ] as const) {
    test(`multipath-crash-${point}: after restart both roots are ${expected}`, async () => {
      await restart({ FERRY_FAILPOINTS: point });
      const r = await importArchive(newArchive);
      assert.notEqual(r.code, 0, `${point}: the import did not crash`);
      await new Promise<void>((resolve) => {
        if (daemon.child.exitCode !== null || daemon.child.signalCode !== null) resolve();
        else daemon.child.once("exit", () => resolve());
      });
      assert.equal(daemon.child.signalCode, "SIGKILL");
      if (point === "restore-swapped-0") {
        // The crash really fell between the two swaps: one root new, one old.
        assert.deepEqual(snapshot(roots[0] as string), newTrees[0]);
        assert.deepEqual(snapshot(roots[1] as string), oldTrees[1]);
      }
      await restart();
      assert.deepEqual(trees(), expected === "new" ? newTrees : oldTrees);
      assert.deepEqual(parents(), [["data"], ["data"]], "staging left behind");
      assert.deepEqual(journals(), []);
      assert.match(
        daemon.log(),
        expected === "new"
          ? /"outcome":"completed".*completed an interrupted restore/
          : /"outcome":"rolled back".*rolled back an interrupted restore/,
      );
      if (expected === "new") {
        const back = await importArchive(oldArchive);
        assert.equal(back.code, 0, back.stderr);
      }
      assert.deepEqual(trees(), oldTrees);
    });
  }
});
