/**
 * src/repo/archive.ts's ArchiveStore verifies what it stores: the stored SHA-256 and entry
 * count are the stream's, and a stream the strict reader refuses — a flipped body byte, a
 * cut, a forged header — never becomes a snapshot, even after megabytes were stored.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { ArchiveStore } from "../../src/repo/archive.js";
import { LocalBackend } from "../../src/repo/backend.js";
import { Repository } from "../../src/repo/repository.js";
import { makeArchive, mixedFiles, sha256hex, tempDir } from "./helpers.js";

const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function newRepo(): Promise<Repository> {
  const d = tempDir("ferry-verify-");
  dirs.push(d);
  return Repository.init(new LocalBackend(join(d, "repo")), "pw", { N: 1024, r: 8, p: 1 });
}

async function storeAll(repo: Repository, archive: Buffer, piece = 100_000) {
  const s = new ArchiveStore(repo, { app: "notes", tags: [] });
  for (let o = 0; o < archive.length; o += piece) await s.write(archive.subarray(o, o + piece));
  return await s.finish();
}

// More than 3 MiB of files: blobs are stored before the reader reaches the damage.
const files = mixedFiles(200, "verify");

test("the stored SHA-256 and entry count are those of the stream", async () => {
  const archive = await makeArchive("notes", files);
  assert.ok(archive.length > 3 * 1024 * 1024);
  const { snapshot, end } = await storeAll(await newRepo(), archive);
  assert.equal(snapshot.archive.sha256, sha256hex(archive));
  assert.equal(snapshot.archive.bytes, archive.length);
  assert.equal(end.entries, snapshot.archive.entries);
});

test("forged-archive-never-a-snapshot: a flipped body byte, a cut stream, a bad header", async () => {
  const archive = await makeArchive("notes", files);
  const flipped = Buffer.from(archive);
  const at = Math.floor(archive.length / 2);
  flipped[at] = (flipped[at] as number) ^ 0x01;
  const badHeader = Buffer.from(archive);
  // The second header block's checksum field: the reader refuses it at once.
  const second = 512 * Math.ceil((archive.indexOf("\n}", 512) + 2) / 512);
  badHeader.fill(0x37, second + 148, second + 156);
  const cases: [string, Buffer, RegExp][] = [
    ["flipped", flipped, /ARCHIVE_CHECKSUM_MISMATCH|ARCHIVE_INVALID/],
    ["truncated", archive.subarray(0, archive.length - 4096), /ARCHIVE_TRUNCATED/],
    ["bad header", badHeader, /ARCHIVE_INVALID|ARCHIVE_CHECKSUM_MISMATCH/],
  ];
  for (const [what, bytes, code] of cases) {
    const repo = await newRepo();
    await assert.rejects(
      storeAll(repo, bytes),
      (err: Error & { code?: string }) => code.test(String(err.code)),
      what,
    );
    assert.deepEqual(await repo.backend.list("snapshots"), [], `${what}: no snapshot`);
  }
});
