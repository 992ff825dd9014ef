/**
 * Races against ferryd by the application's own user, who may swap any directory of its
 * tree for a symlink at any instant (the node-tar / rsync class of bugs). A racer
 * atomically exchanges `sub` with a symlink to a directory outside the application,
 * thousands of times, in the live tree and in the old tree ferryd removes after a swap
 * (a failpoint holds the cleanup step open 300 ms so the racer is sure to reach it). The
 * racer counts the swaps that landed per tree, and the test requires them in both.
 *
 * - during imports: nothing outside is written, created, removed, chowned or chmodded;
 * - during exports: nothing from outside ever appears in an archive.
 *
 * Bounds: the racer runs 10 s per test; imports/exports loop until it stops.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type FilesApp, makeArchive, setupFilesApp, snapshot } from "../../helpers/files-app.js";
import { needsRoot, ROOT, type RunResult, run } from "../../helpers/proc.js";

const RACE_SECONDS = 10;

interface Swaps {
  live: number;
  old: number;
  old_trees: number;
}

function swapsOf(r: RunResult): Swaps {
  assert.equal(r.code, 0, `the racer failed: ${r.stderr}`);
  return JSON.parse(r.stdout.toString()) as Swaps;
}

describe("races with the application's user", { skip: needsRoot }, () => {
  let fx: FilesApp;
  before(async () => {
    fx = await setupFilesApp("ferry-race");
  });
  after(async () => {
    await fx?.close();
  });

  function racer() {
    return run(
      [
        "/usr/bin/python3",
        join(ROOT, "test/helpers/racer.py"),
        fx.live,
        fx.outside,
        String(RACE_SECONDS),
      ],
      {
        user: fx.app,
        timeoutMs: (RACE_SECONDS + 30) * 1000,
      },
    );
  }

  test("restore-race-symlink-swap: imports never touch anything outside", async (t) => {
    const entries: Record<string, unknown>[] = [
      { name: "data/0/", type: "dir", mode: 0o755 },
      { name: "data/0/sub/", type: "dir", mode: 0o755 },
    ];
    for (let i = 0; i < 300; i++)
      entries.push({ name: `data/0/sub/f${i}`, data: `file ${i}\n`, mode: 0o666 });
    entries.push({
      name: "data/0/sub/sentinel",
      data: "overwritten through a symlink!\n",
      mode: 0o777,
    });
    const archive = makeArchive({ paths: [fx.live], entries });
    const outsideBefore = snapshot(fx.outside);
    const passwd = execFileSync("sha256sum", ["/etc/passwd"]).toString();

    // Hold the cleanup step open a moment, so the old tree ferryd is about to remove sits
    // at its staging name long enough for the racer to find it and swap inside it.
    await fx.restart({ FERRY_FAILPOINTS: "restore-before-cleanup:pause300" });
    const race = racer();
    let imports = 0;
    const deadline = Date.now() + RACE_SECONDS * 1000;
    while (Date.now() < deadline) {
      const r = await fx.importArchive(archive);
      assert.equal(r.code, 0, r.stderr);
      imports++;
    }
    const swaps = swapsOf(await race);
    await fx.restart();
    assert.ok(imports >= 2, `only ${imports} imports`);
    // The swaps landed in both trees ferryd works on: the live tree it swaps out, and the
    // old tree it walks and removes afterwards, for more than one import.
    assert.ok(swaps.live >= 1000, `only ${swaps.live} swaps in the live tree`);
    assert.ok(swaps.old >= 50, `only ${swaps.old} swaps inside old trees being removed`);
    assert.ok(swaps.old_trees >= 2, `swaps inside only ${swaps.old_trees} old trees`);
    t.diagnostic(`${JSON.stringify(swaps)} swaps during ${imports} imports`);
    assert.deepEqual(
      snapshot(fx.outside),
      outsideBefore,
      "something outside the application changed",
    );
    assert.equal(execFileSync("sha256sum", ["/etc/passwd"]).toString(), passwd);
    assert.deepEqual(fx.world().journals, []);
  });

  test("backup-race-symlink-swap: exports never contain anything from outside", async (t) => {
    const marker = `OUTSIDE-SECRET-${randomBytes(8).toString("hex")}`;
    writeFileSync(join(fx.outside, "secret"), `${marker}\n`, { mode: 0o600 });
    // A fresh live tree with a real sub/ directory of some files.
    mkdirSync(join(fx.live, "sub"), { recursive: true });
    for (let i = 0; i < 200; i++) writeFileSync(join(fx.live, "sub", `g${i}`), `inside ${i}\n`);
    execFileSync("chown", ["-R", "-h", `${fx.app.name}:${fx.app.name}`, fx.live]);
    chownSync(join(fx.outside, "secret"), 0, 0);

    const race = racer();
    let exports = 0;
    let complete = 0;
    const deadline = Date.now() + RACE_SECONDS * 1000;
    while (Date.now() < deadline) {
      const r = await fx.exportArchive();
      exports++;
      assert.ok(
        !r.stdout.includes(Buffer.from(marker)),
        "an archive contains data from outside the application",
      );
      assert.ok(
        !r.stdout.includes(Buffer.from("must never change")),
        "an archive contains the outside sentinel",
      );
      if (r.code === 0) complete++;
      else assert.match(r.stderr, /\[[A-Z_]+\]/);
    }
    const swaps = swapsOf(await race);
    assert.ok(swaps.live >= 1000, `only ${swaps.live} swaps in the live tree ferryd walks`);
    assert.ok(exports >= 2 && complete >= 1, `${exports} exports, ${complete} complete`);
    t.diagnostic(`${swaps.live} swaps during ${exports} exports (${complete} complete)`);
  });
});
