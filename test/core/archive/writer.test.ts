/**
 * The archive writer's data path (src/core/archive/writer.ts): files read from their
 * descriptors straight into recycled blocks give exactly the bytes that in-memory bodies
 * give, a file that shrinks is zero-filled with a warning, and descriptors are closed
 * whatever happens.
 */
import assert from "node:assert/strict";
import { fstatSync, mkdtempSync, openSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { END_PATH, MANIFEST_PATH } from "../../../src/api/types.js";
import { ArchiveParser } from "../../../src/core/archive/reader.js";
import type { TarHeader } from "../../../src/core/archive/tar.js";
import { type ArchiveEntry, BlockPool, writeArchive } from "../../../src/core/archive/writer.js";

function fileHeader(path: string, size: number): TarHeader {
  return {
    path,
    type: "file",
    mode: 0o640,
    uid: 1000,
    gid: 1000,
    uname: "u",
    gname: "g",
    size,
    mtimeSec: 1_700_000_000,
    mtimeNsec: 5,
    linkpath: "",
  };
}

async function collect(
  entries: ArchiveEntry[],
  pool?: BlockPool,
  warnings: string[] = [],
): Promise<Buffer> {
  async function* gen() {
    yield* entries;
  }
  const out: Buffer[] = [];
  const it = writeArchive({ app: "t", driver: "files" }, gen(), warnings, pool);
  for (;;) {
    const r = await it.next();
    if (r.done) break;
    out.push(Buffer.from(r.value)); // a copy: the block goes back to the pool at once
    pool?.give(r.value);
  }
  return Buffer.concat(out);
}

/**
 * The archive with the times of its own two meta entries (manifest, end record) and their
 * header checksums blanked: the writer stamps them with the current second, so two runs
 * that straddle a second boundary differ there and nowhere else.
 */
function withoutClock(archive: Buffer): Buffer {
  const out = Buffer.from(archive);
  for (let off = 0; off + 512 <= out.length; off += 512) {
    const name = out
      .subarray(off, off + 100)
      .toString("latin1")
      .replace(/\0.*$/s, "");
    if (name === MANIFEST_PATH || name === END_PATH) out.fill(0, off + 136, off + 156);
  }
  return out;
}

// Sizes around the block size, so bodies straddle blocks at every kind of offset.
const SIZES = [0, 1, 511, 512, 513, 300_000, 1024 * 1024 - 700, 1024 * 1024, 2_500_000, 3];

test("files read from descriptors into recycled blocks equal in-memory bodies, byte for byte", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ferry-writer-"));
  try {
    const datas = SIZES.map((n, i) => Buffer.alloc(n, 0x41 + i));
    for (const [i, d] of datas.entries()) writeFileSync(join(dir, `f${i}`), d);
    const fds: number[] = [];
    const fromFiles = await collect(
      datas.map((d, i) => {
        const fd = openSync(join(dir, `f${i}`), "r");
        fds.push(fd);
        return { header: fileHeader(`data/0/f${i}`, d.length), file: fd };
      }),
      new BlockPool(),
    );
    const fromMemory = await collect(
      datas.map((d, i) => ({ header: fileHeader(`data/0/f${i}`, d.length), body: d })),
    );
    assert.ok(withoutClock(fromFiles).equals(withoutClock(fromMemory)), "the two archives differ");
    for (const fd of fds) assert.throws(() => fstatSync(fd), /EBADF/, "a descriptor was left open");
    const parser = new ArchiveParser();
    await parser.write(fromFiles);
    assert.equal(parser.finish().entries, SIZES.length);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("file-shrinks-while-read: the rest is zero-filled, a warning says so, the archive verifies", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ferry-writer-"));
  try {
    const path = join(dir, "shrinking");
    writeFileSync(path, Buffer.alloc(100_000, 1));
    const fd = openSync(path, "r");
    truncateSync(path, 40_000); // after the "fstat" that planned 100,000 bytes
    const warnings: string[] = [];
    const archive = await collect(
      [{ header: fileHeader("data/0/shrinking", 100_000), file: fd }],
      new BlockPool(),
      warnings,
    );
    assert.deepEqual(warnings, [
      "data/0/shrinking: shrank by 60000 bytes while being read; zero-filled",
    ]);
    const bodies: Buffer[] = [];
    const parser = new ArchiveParser({ data: (b) => void bodies.push(Buffer.from(b)) });
    await parser.write(archive);
    const end = parser.finish();
    assert.deepEqual(end.warnings, warnings);
    const body = Buffer.concat(bodies);
    assert.equal(body.length, 100_000);
    assert.ok(body.subarray(0, 40_000).equals(Buffer.alloc(40_000, 1)));
    assert.ok(body.subarray(40_000).equals(Buffer.alloc(60_000, 0)));
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("a consumer that stops early leaves no descriptor open", async () => {
  const dir = mkdtempSync(join(tmpdir(), "ferry-writer-"));
  try {
    writeFileSync(join(dir, "big"), Buffer.alloc(3 * 1024 * 1024, 2));
    const fd = openSync(join(dir, "big"), "r");
    async function* gen(): AsyncGenerator<ArchiveEntry> {
      yield { header: fileHeader("data/0/big", 3 * 1024 * 1024), file: fd };
    }
    const it = writeArchive({ app: "t", driver: "files" }, gen());
    let blocks = 0;
    for (;;) {
      const r = await it.next();
      if (r.done) break;
      if (++blocks === 2) {
        await it.return(undefined as never);
        break;
      }
    }
    assert.throws(() => fstatSync(fd), /EBADF/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
