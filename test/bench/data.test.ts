/**
 * The benchmark's data is deterministic: the same seed and factor give byte-identical
 * trees, another seed gives other bytes, and the shape matches the issue (sizes 1–100 KiB,
 * half random and half text-like, one 4 KiB region changed per modified file).
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";
import { gzipSync } from "node:zlib";
import {
  generateBigTree,
  generateSmallTree,
  modifyOnePercent,
  type Tree,
} from "../../bench/lib/data.js";

const dir = mkdtempSync(join(tmpdir(), "ferry-bench-data-"));
after(() => rmSync(dir, { recursive: true, force: true }));

function digest(tree: Tree): string {
  const h = createHash("sha256");
  for (const f of tree.files) h.update(f).update(readFileSync(join(tree.root, f)));
  return h.digest("hex");
}

test("same seed, same bytes; another seed, other bytes", () => {
  const a = generateSmallTree(join(dir, "a"), 6, 0.005);
  const b = generateSmallTree(join(dir, "b"), 6, 0.005);
  const c = generateSmallTree(join(dir, "c"), 7, 0.005);
  assert.equal(a.files.length, 100);
  assert.equal(a.dirs, 1);
  assert.equal(digest(a), digest(b));
  assert.notEqual(digest(a), digest(c));
  const big1 = generateBigTree(join(dir, "big1"), 6, 0.001);
  const big2 = generateBigTree(join(dir, "big2"), 6, 0.001);
  assert.equal(big1.files.length, 4);
  assert.equal(digest(big1), digest(big2));
});

test("small files are 1–100 KiB, half incompressible and half text-like", () => {
  const t = generateSmallTree(join(dir, "shape"), 6, 0.005);
  for (const f of t.files) {
    const data = readFileSync(join(t.root, f));
    assert.ok(data.length >= 1024 && data.length <= 100 * 1024, `${f}: ${data.length}`);
    const ratio = gzipSync(data).length / data.length;
    if (f.endsWith(".txt")) {
      assert.ok(ratio < 0.6, `${f} compresses like text (${ratio})`);
      assert.match(data.toString("latin1"), /^[a-z ,.\n]+$/);
    } else assert.ok(ratio > 0.99, `${f} is incompressible (${ratio})`);
  }
});

test("modifyOnePercent changes 1% of the files, differently each round", () => {
  const t = generateSmallTree(join(dir, "mod"), 6, 0.01);
  const before = t.files.map((f) => readFileSync(join(t.root, f)));
  const changed = modifyOnePercent(t, 6, 0);
  const after0 = t.files.map((f) => readFileSync(join(t.root, f)));
  const diff0 = t.files.filter((_, i) => !before[i]?.equals(after0[i] as Buffer));
  assert.equal(diff0.length, 2);
  assert.ok(changed <= 2 * 4096);
  modifyOnePercent(t, 6, 1);
  const after1 = t.files.map((f) => readFileSync(join(t.root, f)));
  const diff1 = t.files.filter((_, i) => !after0[i]?.equals(after1[i] as Buffer));
  assert.equal(diff1.length, 2);
  assert.notDeepEqual(diff0, diff1);
  for (const [i, buf] of after1.entries()) assert.equal(buf.length, before[i]?.length);
});
