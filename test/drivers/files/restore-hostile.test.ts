/**
 * Hostile input that used to take ferryd out of service or break a promise of the README
 * (issue: names it cannot clean up, a manifest naming other paths). As the backup user,
 * through `ferry import`, against a real privileged ferryd; each test asserts that
 * nothing outside the application changed and no staging or journal was left behind.
 */
import assert from "node:assert/strict";
import { chownSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  assertUnchanged,
  type FilesApp,
  makeArchive,
  setupFilesApp,
} from "../../helpers/files-app.js";
import { needsRoot } from "../../helpers/proc.js";

const ROOT_DIR = { name: "data/0/", type: "dir", mode: 0o750 };

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

describe("restore: hostile names and manifests", { skip: needsRoot }, () => {
  let fx: FilesApp;
  before(async () => {
    fx = await setupFilesApp("ferry-hostile");
  });
  after(async () => {
    await fx?.close();
  });

  test("bom-name-cleanup: a refused archive with a U+FEFF name leaves no staging, journal or descriptor", async () => {
    const archive = makeArchive({
      paths: [fx.live],
      entries: [
        ROOT_DIR,
        { name: "data/0/0/", type: "dir" },
        { name: "data/0/0/\ufeffx", data: "bom" },
        { name: "data/0/0/../x", data: "escape" },
      ],
    });
    const before = fx.world();
    const fds = fdCount(fx.daemon.pid);
    for (let i = 0; i < 10; i++) {
      const r = await fx.importArchive(archive);
      assert.notEqual(r.code, 0, "the archive was accepted");
      assert.match(r.stderr, /\[ARCHIVE_UNSAFE\]/, r.stderr);
      assertUnchanged(before, fx.world(), `attempt ${i}`);
    }
    assert.ok(fdCount(fx.daemon.pid) <= fds + 2, "ferryd keeps descriptors of failed restores");
    // And it still starts: nothing left for recovery to trip over.
    await fx.restart();
    assertUnchanged(before, fx.world(), "after restart");
  });

  test("invalid-utf8-old-tree: the old tree of a successful restore is removed even with names that are not UTF-8", async () => {
    const exported = await fx.exportArchive();
    assert.equal(exported.code, 0, exported.stderr);
    const bad = [
      Buffer.from([0x78, 0xff, 0xfe]),
      Buffer.from("\ufeffbom"),
      Buffer.from([0xc0, 0xaf, 0x2e]),
    ];
    for (const n of bad) {
      const p = Buffer.concat([Buffer.from(`${fx.live}/sub/`), n]);
      writeFileSync(p, "left behind?");
      chownSync(p, fx.app.uid, fx.app.gid);
    }
    const r = await fx.importArchive(exported.stdout);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(fx.appDir), ["notes"], "the old tree was left beside the app");
    assert.ok(!readdirSync(join(fx.live, "sub")).some((n) => n.includes("left")));
  });

  test("manifest-foreign-paths: a manifest naming other paths is refused as foreign", async () => {
    for (const paths of [["/etc"], [`${fx.live}/`], [fx.live.toUpperCase()], [fx.outside]]) {
      const before = fx.world();
      const r = await fx.importArchive(
        makeArchive({ paths, entries: [ROOT_DIR, { name: "data/0/x", data: "pwned" }] }),
      );
      assert.notEqual(r.code, 0, `${JSON.stringify(paths)}: accepted`);
      assert.match(r.stderr, /\[ARCHIVE_FOREIGN\]/, r.stderr);
      assertUnchanged(before, fx.world(), JSON.stringify(paths));
    }
  });
});
