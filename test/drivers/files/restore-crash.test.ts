/**
 * Crash recovery: ferryd is killed with SIGKILL at each step of an import (failpoints set
 * through FERRY_FAILPOINTS, plus kills from outside once the staging directory is seen). After a
 * restart, ferryd finishes or rolls back the interrupted restore before serving: the live
 * tree is entirely the old one or entirely the new one, no staging or journal is left, and
 * the outcome ferryd logs (completed / rolled back) is the one the tree shows.
 *
 * Bounds: the new archive has 3,000 files (~12 MiB); six crash points; each restart is
 * bounded by startFerryd's 15 s.
 */
import assert from "node:assert/strict";
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type FilesApp, makeArchive, setupFilesApp, snapshot } from "../../helpers/files-app.js";
import { needsRoot } from "../../helpers/proc.js";

describe("restore crash recovery", { skip: needsRoot }, () => {
  let fx: FilesApp;
  let oldArchive: Buffer;
  let newArchive: Buffer;
  let oldTree: Map<string, string>;
  let newTree: Map<string, string>;

  before(async () => {
    fx = await setupFilesApp("ferry-crash");
    oldTree = snapshot(fx.live);
    const exported = await fx.exportArchive();
    assert.equal(exported.code, 0, exported.stderr);
    oldArchive = exported.stdout;
    const entries: Record<string, unknown>[] = [{ name: "data/0/", type: "dir", mode: 0o750 }];
    for (let d = 0; d < 30; d++) {
      entries.push({ name: `data/0/d${d}/`, type: "dir", mode: 0o700 });
      for (let f = 0; f < 100; f++)
        entries.push({ name: `data/0/d${d}/f${f}`, data: `${d}/${f}\n`.repeat(400), mode: 0o640 });
    }
    newArchive = makeArchive({ paths: [fx.live], entries });
    const r = await fx.importArchive(newArchive);
    assert.equal(r.code, 0, r.stderr);
    newTree = snapshot(fx.live);
    const back = await fx.importArchive(oldArchive);
    assert.equal(back.code, 0, back.stderr);
    assert.deepEqual(snapshot(fx.live), oldTree);
  });
  after(async () => {
    await fx?.close();
  });

  async function crashAt(point: string): Promise<"old" | "new"> {
    await fx.restart({ FERRY_FAILPOINTS: point });
    const r = await fx.importArchive(newArchive);
    assert.notEqual(r.code, 0, `${point}: the import did not crash`);
    await new Promise<void>((resolve) => {
      if (fx.daemon.child.exitCode !== null || fx.daemon.child.signalCode !== null) resolve();
      else fx.daemon.child.once("exit", () => resolve());
    });
    assert.equal(fx.daemon.child.signalCode, "SIGKILL", `${point}: ferryd was not killed`);
    return recover(point);
  }

  async function recover(what: string): Promise<"old" | "new"> {
    await fx.restart();
    const w = fx.world();
    assert.deepEqual(w.parentEntries, ["notes"], `${what}: staging left behind`);
    assert.deepEqual(w.journals, [], `${what}: journal left behind`);
    const now = snapshot(fx.live);
    const state = isDeepEqual(now, newTree) ? "new" : isDeepEqual(now, oldTree) ? "old" : "mixed";
    assert.notEqual(state, "mixed", `${what}: the live tree is neither the old nor the new one`);
    if (state === "new") {
      const back = await fx.importArchive(oldArchive);
      assert.equal(back.code, 0, back.stderr);
    }
    return state as "old" | "new";
  }

  for (const [point, expected] of [
    ["restore-prepared", "old"],
    ["restore-extracting", "old"],
    ["restore-synced", "old"],
    ["restore-staged", "new"],
    ["restore-swapped-0", "new"],
    ["restore-before-cleanup", "new"],
  ] as const) {
    test(`restore-crash-${point}: after restart the tree is entirely ${expected}`, async () => {
      assert.equal(await crashAt(point), expected);
      const log = fx.daemon.log();
      if (expected === "new") assert.match(log, /completed an interrupted restore/);
      else assert.match(log, /rolled back an interrupted restore/);
    });
  }

  /** The staging directory ferryd creates beside the live one, if present. */
  function stagingDir(): string | undefined {
    const name = readdirSync(fx.appDir).find((n) => n.startsWith(".notes.ferry-restore-"));
    return name === undefined ? undefined : join(fx.appDir, name);
  }

  /**
   * Starts an import and SIGKILLs ferryd as soon as `ready(staging)` holds for the staging
   * directory it created: the kill lands only once the restore has visibly begun. Returns
   * false if the import finished before that was seen.
   */
  async function killWhen(ready: (staging: string) => boolean): Promise<boolean> {
    const importing = fx.importArchive(newArchive);
    let finished = false;
    void importing.then(() => {
      finished = true;
    });
    let killed = false;
    while (!finished) {
      const staging = stagingDir();
      let hit = false;
      try {
        hit = staging !== undefined && ready(staging);
      } catch {
        hit = false; // the staging tree moved while we looked
      }
      if (hit) {
        fx.daemon.child.kill("SIGKILL");
        killed = true;
        break;
      }
      await new Promise((r) => setImmediate(r));
    }
    const r = await importing;
    if (!killed) {
      assert.equal(r.code, 0, r.stderr);
      return false;
    }
    assert.notEqual(r.code, 0, "the import reported success although ferryd was killed");
    await new Promise<void>((resolve) => {
      if (fx.daemon.child.exitCode !== null || fx.daemon.child.signalCode !== null) resolve();
      else fx.daemon.child.once("exit", () => resolve());
    });
    assert.equal(fx.daemon.child.signalCode, "SIGKILL");
    return true;
  }

  /** The outcome ferryd logged for the interrupted restore of `notes` after a restart. */
  function loggedOutcome(): string[] {
    return fx.daemon
      .log()
      .split("\n")
      .filter((l) => l.includes("an interrupted restore"))
      .map((l) => JSON.parse(l) as { app?: string; outcome?: string })
      .filter((l) => l.app === "notes")
      .map((l) => String(l.outcome));
  }

  for (const [what, ready] of [
    ["as soon as the staging directory appears", () => true],
    [
      "once the staging tree holds 10 of the 30 new directories",
      (staging: string) => readdirSync(staging).length >= 10,
    ],
  ] as const) {
    test(`restore-crash-kill-9-from-outside ${what}: recovery logged and matches the tree`, async () => {
      let landed = false;
      for (let attempt = 0; attempt < 5 && !landed; attempt++) {
        landed = await killWhen(ready);
        if (!landed) {
          // The restore finished before the kill: put the old tree back and try again.
          const back = await fx.importArchive(oldArchive);
          assert.equal(back.code, 0, back.stderr);
        }
      }
      assert.ok(landed, "the kill never landed while the restore was under way");
      const state = await recover(what);
      const outcomes = loggedOutcome();
      assert.equal(outcomes.length, 1, `one recovery logged: ${fx.daemon.log()}`);
      // What ferryd says it did is what the tree shows.
      assert.equal(outcomes[0], state === "new" ? "completed" : "rolled back");
    });
  }
});

function isDeepEqual(a: Map<string, string>, b: Map<string, string>): boolean {
  try {
    assert.deepEqual(a, b);
    return true;
  } catch {
    return false;
  }
}
