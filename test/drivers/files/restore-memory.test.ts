/**
 * Memory per restored entry: the files driver's restore keeps no per-entry path state
 * (duplicates and parents are found through the filesystem) and a few bytes per directory
 * (README, "Limits"). Driven in-process through openRestore in user mode (the files are
 * owned by the current user), so it needs no privileges.
 *
 * Bounds: 10,000 entries with ~4 KB paths (about 40 MB of path text), one temporary tree.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import type { TarHeader } from "../../../src/core/archive/tar.js";
import type { FilesConfig } from "../../../src/drivers/files/config.js";
import { openRestore } from "../../../src/drivers/files/restore.js";
import { testState } from "../../helpers/state.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

function used(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

function header(path: string, type: TarHeader["type"]): TarHeader {
  return {
    path,
    type,
    mode: type === "dir" ? 0o750 : 0o640,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    size: 0,
    mtimeSec: 1_700_000_000,
    mtimeNsec: 0,
    linkpath: "",
  };
}

test("deep-path-memory: 10,000 entries with 4 KB paths stay within 26 bytes each (README) plus 512 KiB of allocator noise", async () => {
  const dir = mkdtempSync("/tmp/ferry-restore-mem-");
  try {
    const live = join(dir, "apps/notes");
    mkdirSync(live, { recursive: true });
    const uid = process.getuid?.() ?? 0;
    const gid = process.getgid?.() ?? 0;
    const config = {
      driver: "files",
      paths: [live],
      owner: "me",
      uid,
      gid,
      allow_root: true,
    } as unknown as FilesConfig;
    const session = await openRestore(config, {
      app: "notes",
      signal: new AbortController().signal,
      warnings: [],
      manifest: {
        format: 1,
        app: "notes",
        driver: "files",
        driver_version: 1,
        ferry_version: "test",
        host: "test",
        created: "",
        paths: [live],
      },
      state: testState(),
    });
    await session.entry(header("data/0/", "dir"));
    let deep = "data/0";
    for (let i = 0; i < 15; i++) {
      deep += `/${String(i).padStart(3, "0")}${"d".repeat(247)}`;
      await session.entry(header(`${deep}/`, "dir"));
    }
    const N = 5000;
    const base = used();
    for (let i = 0; i < N; i++) {
      const tail = `${String(i).padStart(5, "0")}${"x".repeat(200)}`;
      await session.entry(header(`${deep}/s${tail}/`, "dir"));
      const f = header(`${deep}/f${tail}`, "file");
      await session.entry(f);
      await session.entryEnd(f);
    }
    const grown = used() - base;
    assert.ok(
      grown < 2 * N * 26 + 512 * 1024,
      `the restore holds ${Math.round(grown / (2 * N))} bytes per entry (paths of ~${deep.length + 206} bytes)`,
    );
    const result = await session.commit();
    assert.equal(result.entries, 1 + 15 + 2 * N);
    let p = live;
    for (const name of deep.split("/").slice(2)) p = join(p, name);
    assert.equal(readdirSync(p).length, 2 * N);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
