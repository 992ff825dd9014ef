/**
 * Restore round trips through a real privileged ferryd: export, damage the live tree,
 * import, and the tree is back exactly (content, owners, modes, mtimes, symlink targets,
 * hardlink identity). Plus the rules around it: restore = false is refused, one job per
 * application at a time, `ferry export | ferry import` works as a pipe.
 *
 * Bounds: a tree of a few files plus one 40 MiB file for the busy test.
 */
import assert from "node:assert/strict";
import { appendFileSync, chownSync, rmSync, unlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type FilesApp, setupFilesApp, snapshot } from "../../helpers/files-app.js";
import { FERRY, needsRoot, run } from "../../helpers/proc.js";

describe("restore round trip", { skip: needsRoot }, () => {
  let fx: FilesApp;
  before(async () => {
    fx = await setupFilesApp("ferry-roundtrip");
  });
  after(async () => {
    await fx?.close();
  });

  test("export, damage, import: the tree is exactly as it was", async () => {
    const original = snapshot(fx.live);
    const exported = await fx.exportArchive();
    assert.equal(exported.code, 0, exported.stderr);

    appendFileSync(join(fx.live, "a.txt"), "edited\n");
    unlinkSync(join(fx.live, "sub/b.txt"));
    rmSync(join(fx.live, "sub/deeper"), { recursive: true });
    writeFileSync(join(fx.live, "added.txt"), "new\n");
    chownSync(join(fx.live, "added.txt"), fx.app.uid, fx.app.gid);
    assert.notDeepEqual(snapshot(fx.live), original);

    const r = await fx.importArchive(exported.stdout);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /^restored notes: 8 entries, /m);
    assert.deepEqual(snapshot(fx.live), original);
    assert.deepEqual(fx.world().parentEntries, ["notes"]);
    assert.deepEqual(fx.world().journals, []);
    assert.match(
      fx.daemon.log(),
      /"path":"\/v1\/apps\/notes\/restore","app":"notes","job":"[0-9a-f]+","outcome":"ok"/,
    );
  });

  test("ferry export APP | ferry import APP round-trips as a pipe", async () => {
    const original = snapshot(fx.live);
    const sock = fx.socket;
    const pipeline = `${process.execPath} ${FERRY} --socket ${sock} export notes | ${process.execPath} ${FERRY} --socket ${sock} import notes`;
    const r = await run(["bash", "-o", "pipefail", "-c", pipeline], { user: fx.backup });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /exported notes: .*\nrestored notes: /s);
    assert.deepEqual(snapshot(fx.live), original);
  });

  test("restore into an application with restore = false is refused with 403", async () => {
    const other = await setupFilesApp("ferry-noreset", { restore: false });
    try {
      const before = snapshot(other.live);
      const exported = await other.exportArchive();
      assert.equal(exported.code, 0);
      const r = await other.importArchive(exported.stdout);
      assert.equal(r.code, 3, r.stderr);
      assert.match(r.stderr, /\[RESTORE_NOT_ALLOWED\]/);
      assert.deepEqual(snapshot(other.live), before);
    } finally {
      await other.close();
    }
  });

  test("one backup or restore per application at a time: 409 APP_BUSY", async () => {
    writeFileSync(join(fx.live, "big.bin"), Buffer.alloc(40 * 1024 * 1024, 5));
    chownSync(join(fx.live, "big.bin"), fx.app.uid, fx.app.gid);
    const exported = await fx.exportArchive();
    // A backup whose client (the backup user) does not read: ferryd blocks on the full
    // socket and the application stays busy until that client goes away.
    const child = run(
      [
        process.execPath,
        "-e",
        `const h=require("http");const r=h.request({socketPath:${JSON.stringify(fx.socket)},path:"/v1/apps/notes/backup",method:"POST",headers:{Host:"ferry"}},res=>{res.pause();console.log("started");setTimeout(()=>process.exit(0),8000)});r.end();`,
      ],
      { user: fx.backup },
    );
    // Wait until ferryd reports the stalled backup as a running job.
    for (let i = 0; i < 300; i++) {
      const jobs = await run([process.execPath, FERRY, "--socket", fx.socket, "jobs", "--json"], {
        user: fx.backup,
      });
      if (/"state": "running"/.test(jobs.stdout.toString())) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const busy = await fx.importArchive(exported.stdout);
    assert.equal(busy.code, 1, busy.stderr);
    assert.match(busy.stderr, /\[APP_BUSY\]/);
    const busyExport = await fx.exportArchive();
    assert.match(busyExport.stderr, /\[APP_BUSY\]/);
    const c = await child;
    assert.match(c.stdout.toString(), /started/);
    // Once the stalled client is gone, the app is free again.
    await new Promise((r) => setTimeout(r, 500));
    unlinkSync(join(fx.live, "big.bin"));
    const again = await fx.exportArchive();
    assert.equal(again.code, 0, again.stderr);
  });
});
