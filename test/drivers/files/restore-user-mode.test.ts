/**
 * ferryd in user mode has no CAP_DAC_OVERRIDE: modes an archive restored can lock even
 * their owner out. Found by the fuzzer run as an unprivileged user: after an archive set
 * the application's root to 0000, every later restore failed (RESTORE_FAILED) and old
 * trees with 0500 directories were left beside the application.
 *
 * The restore runs in a child process as an unprivileged uid (65534 when the tests run as
 * root, the current user otherwise), through openRestore as ferryd would call it.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { test } from "node:test";

const src = (p: string) => JSON.stringify(new URL(`../../../src/${p}`, import.meta.url).href);

test("locked-root-user-mode: an application whose root and subdirectories were restored 0000/0500 restores again, and its old tree is removed", () => {
  const isRoot = process.getuid?.() === 0;
  const dir = mkdtempSync("/tmp/ferry-usermode-");
  try {
    const live = join(dir, "apps/notes");
    mkdirSync(join(live, "sub"), { recursive: true });
    writeFileSync(join(live, "sub/f"), "old");
    if (isRoot) execFileSync("chown", ["-R", "65534:65534", dir]);
    chmodSync(join(live, "sub"), 0o500);
    chmodSync(live, 0o000);
    const script = `
      import { StateDir } from ${src("core/state-dir.js")};
      import { openRestore } from ${src("drivers/files/restore.js")};
      const uid = process.getuid(), gid = process.getgid();
      const state = StateDir.open(${JSON.stringify(join(dir, "state"))}, { privileged: false, uid, gids: [gid] });
      const live = ${JSON.stringify(live)};
      const h = (path, type) => ({ path, type, mode: type === "dir" ? 0o750 : 0o640, uid: 0, gid: 0,
        uname: "", gname: "", size: 0, mtimeSec: 1700000000, mtimeNsec: 0, linkpath: "" });
      const session = await openRestore(
        { driver: "files", paths: [live], owner: "x", uid, gid, allow_root: true },
        { app: "notes", signal: new AbortController().signal, warnings: [], state,
          manifest: { format: 1, app: "notes", driver: "files", paths: [live] } });
      await session.entry(h("data/0/", "dir"));
      const f = h("data/0/new", "file");
      await session.entry(f);
      await session.entryEnd(f);
      await session.commit();`;
    const argv = isRoot
      ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath]
      : [process.execPath];
    execFileSync(argv[0] as string, [...argv.slice(1), "--input-type=module", "-e", script], {
      stdio: "pipe",
    });
    assert.equal(statSync(live).mode & 0o7777, 0o750);
    assert.deepEqual(readdirSync(live), ["new"]);
    assert.deepEqual(
      readdirSync(join(dir, "apps")),
      ["notes"],
      "the old tree was left beside the app",
    );
  } finally {
    execFileSync("chmod", ["-R", "u+rwx", dir]);
    rmSync(dir, { recursive: true, force: true });
  }
});
