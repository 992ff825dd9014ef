/**
 * The tar-aware cut: metadata and content streams put back together give the archive
 * byte for byte, whatever the piece sizes; large file bodies (only those) go to content.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { INLINE_MAX, TarSplitter, TarWalker } from "../../src/repo/tarsplit.js";
import { makeArchive, mixedFiles, prng } from "./helpers.js";

function split(archive: Buffer, piece: number) {
  const meta: Buffer[] = [];
  const files: Buffer[][] = [];
  const s = new TarSplitter({
    meta: (b) => meta.push(Buffer.from(b)),
    contentStart: () => files.push([]),
    content: (b) => files[files.length - 1]?.push(Buffer.from(b)),
    contentEnd: () => {},
  });
  for (let o = 0; o < archive.length; o += piece) s.push(archive.subarray(o, o + piece));
  s.finish();
  return { meta: Buffer.concat(meta), files: files.map((f) => Buffer.concat(f)) };
}

function join(meta: Buffer, files: Buffer[]): Buffer {
  const w = new TarWalker();
  const out: Buffer[] = [];
  let off = 0;
  let next = 0;
  while (off < meta.length) {
    const n = w.take(meta.subarray(off));
    out.push(meta.subarray(off, off + n));
    off += n;
    if (w.mode === "content") {
      const f = files[next++] as Buffer;
      assert.equal(f.length, w.need);
      out.push(f);
      w.contentDone();
    }
  }
  assert.equal(next, files.length);
  return Buffer.concat(out);
}

test("split then join gives the archive byte for byte, for any piece size", async () => {
  const archive = await makeArchive("app", mixedFiles(60));
  for (const piece of [1, 100, 512, 4096, 1 << 20]) {
    const { meta, files } = split(archive, piece);
    assert.ok(join(meta, files).equals(archive), `piece ${piece}`);
  }
});

test("only bodies of files of INLINE_MAX bytes or more go to the content stream", async () => {
  const archive = await makeArchive("app", [
    { path: "data/0/small", data: prng("a", INLINE_MAX - 1) },
    { path: "data/0/exact", data: prng("b", INLINE_MAX) },
    { path: `data/0/${"p".repeat(150)}/big`, data: prng("c", 70_000) },
  ]);
  const { meta, files } = split(archive, 7777);
  assert.deepEqual(
    files.map((f) => f.length),
    [INLINE_MAX, 70_000],
  );
  assert.ok(files[1]?.equals(prng("c", 70_000)));
  assert.equal(meta.length + INLINE_MAX + 70_000, archive.length);
});

test("a stream cut inside an entry is refused", async () => {
  const archive = await makeArchive("app", mixedFiles(5));
  const s = new TarSplitter({ meta() {}, contentStart() {}, content() {}, contentEnd() {} });
  s.push(archive.subarray(0, 3000));
  assert.throws(() => s.finish(), /inside an entry/);
});
