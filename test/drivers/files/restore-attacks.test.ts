/**
 * The attack suite: one test per way privileged extractors have been broken (node-tar,
 * GNU tar, libarchive, rsync, Android adb restore). Archives are built with Python's
 * tarfile, sent with `ferry import` to a real ferryd running as the backup user with its
 * capabilities. Each test asserts the archive was refused (or, for the two that are
 * restored, defused), that the live tree is exactly as it was, and that nothing outside
 * the application changed: a sentinel directory beside it, /etc/passwd, and the exact
 * absolute paths the archives aim at (/etc/ferry-pwned, /x, …), link counts included.
 *
 * Bounds: the largest archive is 100,000 empty entries (~100 MB of headers); every
 * command has a 2-minute timeout.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync, lstatSync, readFileSync } from "node:fs";
import { after, before, describe, test } from "node:test";
import {
  assertUnchanged,
  type FilesApp,
  makeArchive,
  setupFilesApp,
} from "../../helpers/files-app.js";
import { needsRoot } from "../../helpers/proc.js";

const ROOT_DIR = { name: "data/0/", type: "dir", mode: 0o750 };

describe("restore attacks", { skip: needsRoot }, () => {
  let fx: FilesApp;
  before(async () => {
    fx = await setupFilesApp("ferry-attack");
  });
  after(async () => {
    await fx?.close();
  });

  /**
   * The exact absolute places the attacks aim at, beyond the live and outside trees that
   * World covers: what each is now (absent, or inode, link count, mode, owner, size,
   * mtime and content hash), so a created file, a new hard link or a rewrite shows.
   */
  const targets = () => [
    "/etc/ferry-pwned",
    "/etc/passwd",
    "/x",
    `${fx.dir}/x`,
    `${fx.dir}/etc`,
    `${fx.appDir}/x`,
    `${fx.outside}/sentinel`,
    `${fx.outside}/passwd`,
  ];
  function targetState(): Map<string, string> {
    const out = new Map<string, string>();
    for (const p of targets()) {
      if (!existsSync(p)) {
        out.set(p, "absent");
        continue;
      }
      const st = lstatSync(p, { bigint: true });
      const sha = st.isFile()
        ? createHash("sha256").update(readFileSync(p)).digest("hex").slice(0, 16)
        : "-";
      out.set(
        p,
        `ino ${st.ino} nlink ${st.nlink} mode ${st.mode.toString(8)} ${st.uid}:${st.gid} size ${st.size} mtime ${st.mtimeNs} ${sha}`,
      );
    }
    return out;
  }

  /** Imports `entries` (after the root directory) and expects refusal with `code`. */
  async function refused(name: string, spec: Record<string, unknown>, code: string) {
    const before = fx.world();
    const aimedAt = targetState();
    assert.equal(aimedAt.get("/etc/ferry-pwned"), "absent", "left over from an earlier run");
    const archive = makeArchive({ paths: [fx.live], ...spec });
    const r = await fx.importArchive(archive);
    assert.notEqual(r.code, 0, `${name}: the archive was accepted`);
    assert.match(r.stderr, new RegExp(`\\[${code}\\]`), `${name}: ${r.stderr}`);
    assertUnchanged(before, fx.world(), name);
    assert.deepEqual(targetState(), aimedAt, `${name}: a target outside the application changed`);
  }
  const entries = (...list: Record<string, unknown>[]) => ({ entries: [ROOT_DIR, ...list] });

  test("restore-dotdot-traversal: ../ and a/../../x", async () => {
    await refused(
      "../x",
      entries({ name: "data/0/../../outside/sentinel", data: "pwned" }),
      "ARCHIVE_UNSAFE",
    );
    await refused(
      "a/../../x",
      entries({ name: "data/0/a/../../x", data: "pwned" }),
      "ARCHIVE_UNSAFE",
    );
    await refused(
      "top-level ../",
      { entries: [{ name: "../x", data: "pwned" }] },
      "ARCHIVE_UNSAFE",
    );
  });

  test("restore-absolute-paths: /etc/x and ////etc/x", async () => {
    await refused(
      "absolute",
      entries({ name: `${fx.outside}/sentinel`, data: "pwned" }),
      "ARCHIVE_UNSAFE",
    );
    await refused(
      "////",
      entries({ name: `////${fx.outside.slice(1)}/sentinel`, data: "pwned" }),
      "ARCHIVE_UNSAFE",
    );
    await refused(
      "pax absolute",
      entries({ name: "data/0/x", data: "pwned", pax: { path: "/etc/ferry-pwned" } }),
      "ARCHIVE_UNSAFE",
    );
    // The exact file the pax header aims at was not created (refused() compares it too).
    assert.equal(existsSync("/etc/ferry-pwned"), false, "/etc/ferry-pwned was created");
  });

  test("restore-symlink-then-file: d -> /etc, then d/passwd", async () => {
    await refused(
      "symlink parent",
      entries(
        { name: "data/0/d", type: "symlink", linkname: fx.outside },
        { name: "data/0/d/passwd", data: "pwned" },
      ),
      "ARCHIVE_UNSAFE",
    );
  });

  test("restore-dir-then-symlink-same-name: dir d, symlink d, file d/x", async () => {
    await refused(
      "dir then symlink",
      entries(
        { name: "data/0/d/", type: "dir" },
        { name: "data/0/d", type: "symlink", linkname: fx.outside },
        { name: "data/0/d/sentinel", data: "pwned" },
      ),
      "ARCHIVE_UNSAFE",
    );
  });

  test("restore-hardlink-escape: to an absolute path and to ../", async () => {
    await refused(
      "hardlink absolute",
      entries({ name: "data/0/h", type: "hardlink", linkname: `${fx.outside}/sentinel` }),
      "ARCHIVE_UNSAFE",
    );
    await refused(
      "hardlink ../",
      entries({ name: "data/0/h", type: "hardlink", linkname: "data/0/../../outside/sentinel" }),
      "ARCHIVE_UNSAFE",
    );
    await refused(
      "hardlink to passwd",
      entries({ name: "data/0/h", type: "hardlink", linkname: "/etc/passwd" }),
      "ARCHIVE_UNSAFE",
    );
  });

  test("restore-symlink-chain-hardlink: two symlinks and a hardlink through them", async () => {
    await refused(
      "chain",
      entries(
        { name: "data/0/l1", type: "symlink", linkname: fx.outside },
        { name: "data/0/l2", type: "symlink", linkname: "l1" },
        { name: "data/0/h", type: "hardlink", linkname: "data/0/l2/sentinel" },
      ),
      "ARCHIVE_UNSAFE",
    );
    await refused(
      "hardlink to a symlink",
      entries(
        { name: "data/0/l1", type: "symlink", linkname: `${fx.outside}/sentinel` },
        { name: "data/0/h", type: "hardlink", linkname: "data/0/l1" },
      ),
      "ARCHIVE_UNSAFE",
    );
  });

  test("restore-hardlink-then-file-same-name: overwrite through a link", async () => {
    await refused(
      "hardlink then file",
      entries(
        { name: "data/0/f", data: "original" },
        { name: "data/0/h", type: "hardlink", linkname: "data/0/f" },
        { name: "data/0/h", data: "overwritten through the link" },
      ),
      "ARCHIVE_UNSAFE",
    );
  });

  test("restore-device-node-and-fifo: refused", async () => {
    await refused("char device", entries({ name: "data/0/null", type: "chr" }), "ARCHIVE_UNSAFE");
    await refused("block device", entries({ name: "data/0/sda", type: "blk" }), "ARCHIVE_UNSAFE");
    await refused("fifo", entries({ name: "data/0/pipe", type: "fifo" }), "ARCHIVE_UNSAFE");
  });

  test("restore-setuid-root-file: restored owned by the app user, set-id bits cleared", async () => {
    const before = fx.world();
    const aimedAt = targetState();
    const archive = makeArchive({
      paths: [fx.live],
      entries: [
        ROOT_DIR,
        { name: "data/0/suid", data: "#!/bin/sh\nid\n", mode: 0o6755, uid: 0, gid: 0 },
      ],
    });
    const r = await fx.importArchive(archive);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(targetState(), aimedAt, "a target outside the application changed");
    const after = fx.world();
    assert.equal(
      after.live.get("suid")?.split(" ").slice(3, 5).join(" "),
      `755 ${fx.app.uid}:${fx.app.gid}`,
    );
    assert.deepEqual(after.outside, before.outside);
    assert.deepEqual(after.parentEntries, ["notes"]);
  });

  test("restore-nul-in-pax-path: refused", async () => {
    await refused(
      "NUL",
      entries({
        name: "data/0/x",
        data: "x",
        pax: { path: "data/0/a\u0000/../../outside/sentinel" },
      }),
      "ARCHIVE_UNSAFE",
    );
    await refused("newline", entries({ name: "data/0/x\nevil", data: "x" }), "ARCHIVE_UNSAFE");
  });

  test("restore-long-name: a name of 5,000 bytes is refused", async () => {
    await refused(
      "5000-byte name",
      entries({ name: `data/0/${"n".repeat(5000)}`, data: "x" }),
      "ARCHIVE_(UNSAFE|INVALID)",
    );
    await refused(
      "255+ name",
      entries({ name: `data/0/${"n".repeat(300)}`, data: "x" }),
      "ARCHIVE_UNSAFE",
    );
  });

  test("restore-100k-empty-entries: handled in bounded time, nothing escapes", async () => {
    const started = Date.now();
    const before = fx.world();
    const aimedAt = targetState();
    const r = await fx.importArchive(
      makeArchive({ paths: [fx.live], entries: [ROOT_DIR], many_empty: 100_000 }),
    );
    assert.equal(r.code, 0, r.stderr);
    assert.ok(Date.now() - started < 120_000);
    const after = fx.world();
    assert.equal(after.live.size, 100_001);
    assert.deepEqual(targetState(), aimedAt, "a target outside the application changed");
    assert.deepEqual(after.outside, before.outside);
    assert.deepEqual(after.parentEntries, ["notes"]);
    // Back to a small tree for the tests that follow.
    const reset = await fx.importArchive(
      makeArchive({ paths: [fx.live], ...entries({ name: "data/0/f", data: "small" }) }),
    );
    assert.equal(reset.code, 0, reset.stderr);
    // Many entries under one name are refused at the second.
    await refused(
      "duplicates",
      entries(...Array.from({ length: 1000 }, () => ({ name: "data/0/e", data: "" }))),
      "ARCHIVE_UNSAFE",
    );
  });

  test("restore-depth-10000: refused", async () => {
    await refused("depth 10000", { entries: [ROOT_DIR], deep: 10_000 }, "ARCHIVE_(UNSAFE|INVALID)");
    await refused("depth 300", { entries: [ROOT_DIR], deep: 300 }, "ARCHIVE_UNSAFE");
  });

  test("restore-truncated-archive: refused before the live data is touched", async () => {
    const full = makeArchive({
      paths: [fx.live],
      ...entries({ name: "data/0/big", data: "x".repeat(200_000) }),
    });
    for (const cut of [700, 5000, full.length - 3000]) {
      await refused(
        `cut at ${cut}`,
        { ...entries({ name: "data/0/big", data: "x".repeat(200_000) }), truncate: cut },
        "ARCHIVE_(TRUNCATED|INVALID)",
      );
    }
    await refused(
      "no end record",
      { ...entries({ name: "data/0/f", data: "x" }), no_end: true },
      "ARCHIVE_TRUNCATED",
    );
  });

  test("restore-wrong-sha256: refused", async () => {
    await refused(
      "wrong sha",
      { ...entries({ name: "data/0/f", data: "evil" }), corrupt_sha: true },
      "ARCHIVE_CHECKSUM_MISMATCH",
    );
  });

  test("restore-foreign-archive: another app's archive is refused", async () => {
    await refused(
      "other app",
      { app: "other", ...entries({ name: "data/0/f", data: "x" }) },
      "ARCHIVE_FOREIGN",
    );
    await refused(
      "other driver",
      { driver: "postgres", ...entries({ name: "data/0/f", data: "x" }) },
      "ARCHIVE_FOREIGN",
    );
    await refused(
      "more paths",
      { paths: ["/a", "/b"], ...entries({ name: "data/1/f", data: "x" }) },
      "ARCHIVE_FOREIGN",
    );
  });

  test("restore-undeclared-root-index: data/1/ of a one-path app is refused", async () => {
    await refused(
      "data/1",
      entries({ name: "data/1/", type: "dir" }, { name: "data/1/f", data: "x" }),
      "ARCHIVE_UNSAFE",
    );
    await refused("outside data/", entries({ name: "etc/passwd", data: "x" }), "ARCHIVE_UNSAFE");
  });
});
