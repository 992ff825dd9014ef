/**
 * The borg target's layout without borg (fast): a Ferry archive cut into what goes to
 * `borg import-tar` (the archive, then the layout member), put through a stand-in for
 * borg's import and export (test/helpers/borg_like.py: Python's tarfile, as borg 1.2 uses
 * it: GNU format, whole-second times, no pax records), and rebuilt from the layout and the
 * exported bodies byte for byte. Then what a restore must refuse: a foreign or newer
 * layout, bodies that do not fit, a broken or truncated export stream.
 *
 * Bounds: archives of a few MiB; the Python stand-in runs a handful of times.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { ArchiveParser } from "../../src/core/archive/reader.js";
import {
  BorgImportStream,
  collidesWithLayout,
  LAYOUT_NAME,
  parseLayoutHeader,
  rebuildFromLayout,
} from "../../src/repo/borg-layout.js";
import { BorgTarReader } from "../../src/repo/borg-tar.js";
import { ROOT } from "../helpers/proc.js";
import { makeArchive, prng, type TestFile } from "./helpers.js";

const BORG_LIKE = join(ROOT, "test/helpers/borg_like.py");

function tree(extra: TestFile[] = []): TestFile[] {
  return [
    { path: "data/0/", type: "dir" },
    { path: "data/0/sub/deeper/", type: "dir" },
    { path: "data/0/a.txt", data: Buffer.from("alpha\n"), mtimeNsec: 123_456_789 },
    { path: "data/0/empty", data: Buffer.alloc(0) },
    { path: "data/0/sub/zeros", data: Buffer.alloc(20_000) },
    { path: "data/0/sub/ends-in-zeros", data: Buffer.concat([prng("z", 700), Buffer.alloc(3000)]) },
    { path: `data/0/sub/${"long-name-".repeat(12)}end`, data: prng("l", 5000), mtimeNsec: 1 },
    { path: `data/0/sub/deeper/${"ü".repeat(130)}`, data: prng("u", 10) },
    { path: "data/0/sub/big.bin", data: prng("big", 3 << 20) },
    { path: "data/0/sub/link", type: "symlink", target: "../a.txt" },
    { path: "data/0/sub/hard-a", type: "hardlink", target: "data/0/a.txt" },
    ...extra,
  ];
}

function sha(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

/** What ferry gives borg import-tar: the archive in `piece`-byte pushes, then the layout. */
/**
 * What borg is given: `stream`, the archive as passed on before the layout member, then
 * the member (its header carries the current time, so two calls a second apart differ
 * there), the metadata `meta`, and the end blocks.
 */
function borgInput(
  archive: Buffer,
  piece: number,
): { input: Buffer; meta: Buffer; stream: Buffer } {
  const meta: Buffer[] = [];
  const s = new BorgImportStream((b) => meta.push(Buffer.from(b)));
  const out: Buffer[] = [];
  for (let o = 0; o < archive.length; o += piece) {
    for (const b of s.push(archive.subarray(o, o + piece))) out.push(Buffer.from(b));
  }
  const m = Buffer.concat(meta);
  const stream = Buffer.concat(out);
  const h = { sha256: sha(archive), bytes: archive.length };
  const input = Buffer.concat([stream, s.memberHead(h, m.length), m, s.memberEnd(h, m.length)]);
  return { input, meta: m, stream };
}

/** borg import-tar then export-tar, as borg_like.py plays them. */
function throughBorg(input: Buffer): { exported: Buffer; layout: Buffer } {
  const dir = mkdtempSync(join(tmpdir(), "ferry-borg-like-"));
  try {
    const exported = execFileSync("python3", [BORG_LIKE, join(dir, "layout")], {
      input,
      maxBuffer: 1 << 28,
    });
    return { exported, layout: readFileSync(join(dir, "layout")) };
  } catch (err) {
    throw new Error(`borg_like.py: ${(err as { stderr?: Buffer }).stderr?.toString()}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

function* pieces(b: Buffer, n: number): Generator<Buffer> {
  for (let o = 0; o < b.length; o += n) yield b.subarray(o, o + n);
}

/** A GNU-format tar of [name, text] files, written by Python's tarfile as borg's export is. */
function gnuTar(files: [string, string][]): Buffer {
  return execFileSync(
    "python3",
    [
      "-c",
      `import io, json, sys, tarfile
out = io.BytesIO()
t = tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT)
for name, text in json.load(sys.stdin):
    data = text.encode()
    ti = tarfile.TarInfo(name); ti.size = len(data); t.addfile(ti, io.BytesIO(data))
t.close(); sys.stdout.buffer.write(out.getvalue())`,
    ],
    { input: JSON.stringify(files) },
  );
}

async function rebuild(layout: Buffer, exported: Buffer, piece = 65_536): Promise<Buffer> {
  const { length } = parseLayoutHeader(layout);
  const reader = new BorgTarReader(
    (async function* () {
      yield* pieces(exported, piece);
    })(),
  );
  const out: Buffer[] = [];
  const meta = (async function* () {
    yield* pieces(layout.subarray(length), piece);
  })();
  for await (const b of rebuildFromLayout(meta, reader)) out.push(Buffer.from(b));
  await reader.drain();
  return Buffer.concat(out);
}

test("an archive through borg's import and export comes back byte for byte, whatever the piece sizes", async () => {
  const archive = await makeArchive("notes", tree());
  // The regular files' bodies (manifest and end record included), as Python's tarfile sees them.
  const bodies = Number(
    execFileSync(
      "python3",
      [
        "-c",
        "import sys, tarfile; print(sum(m.size for m in tarfile.open(fileobj=sys.stdin.buffer, mode='r|') if m.isreg()))",
      ],
      { input: archive },
    ).toString(),
  );
  let first: ReturnType<typeof borgInput> | undefined;
  for (const piece of [509, 512, 65_536, 1 << 20]) {
    const got = borgInput(archive, piece);
    // The layout holds every byte but the file bodies (the manifest's and end record's
    // too: every non-empty regular file's).
    assert.equal(got.meta.length + bodies, archive.length);
    first ??= got;
    assert.ok(got.stream.equals(first.stream), `piece ${piece}: the same stream to borg`);
    assert.ok(got.meta.equals(first.meta), `piece ${piece}: the same layout`);
  }
  const { exported, layout } = throughBorg((first as ReturnType<typeof borgInput>).input);
  assert.ok(!exported.includes(Buffer.from(LAYOUT_NAME)), "export-tar without the layout");
  const { header } = parseLayoutHeader(layout);
  assert.deepEqual(header, { sha256: sha(archive), bytes: archive.length });
  for (const piece of [1000, 512, 1 << 20]) {
    const back = await rebuild(layout, exported, piece);
    assert.equal(back.length, archive.length, `piece ${piece}`);
    assert.ok(back.equals(archive), `piece ${piece}: byte for byte`);
  }
  // What borg gave back is itself not the archive (why the layout exists).
  assert.notEqual(sha(exported), sha(archive));
  const p = new ArchiveParser();
  await p.write(await rebuild(layout, exported));
  assert.equal(p.finish().entries, tree().length);
});

test("one byte at a time on the way in gives the same input to borg", async () => {
  const archive = await makeArchive(
    "notes",
    tree().filter((f) => f.path !== "data/0/sub/big.bin"),
  );
  const a = borgInput(archive, 1);
  const b = borgInput(archive, 1 << 20);
  assert.ok(a.stream.equals(b.stream), "the same stream to borg");
  assert.ok(a.meta.equals(b.meta), "the same layout");
});

test("a layout that is not one, or of another version, is refused with what it is", () => {
  const h = `sha256=${"a".repeat(64)} bytes=5`;
  assert.throws(() => parseLayoutHeader(Buffer.from("hello world\n")), /not a Ferry layout/);
  assert.throws(
    () => parseLayoutHeader(Buffer.from(`ferry-borg-layout 2 ${h}\n`)),
    /version "2"; this ferry reads version 1 only/,
  );
  assert.throws(() => parseLayoutHeader(Buffer.from(`ferry-borg-layout 1 ${h}`)), /not a Ferry/);
  assert.throws(
    () => parseLayoutHeader(Buffer.from("ferry-borg-layout 1 sha256=xyz bytes=5\n")),
    /malformed/,
  );
  assert.deepEqual(parseLayoutHeader(Buffer.from(`ferry-borg-layout 1 ${h}\nrest`)), {
    header: { sha256: "a".repeat(64), bytes: 5 },
    length: 100,
  });
});

test("bodies that do not fit the layout are clear errors: another size, one missing, one more", async () => {
  const small = tree().filter((f) => f.path !== "data/0/sub/big.bin");
  const { layout, exported } = throughBorg(
    borgInput(await makeArchive("notes", small), 1 << 20).input,
  );
  const bigger = small.map((f) =>
    f.path === "data/0/a.txt" ? { ...f, data: Buffer.from("alpha!\n") } : f,
  );
  const other = throughBorg(borgInput(await makeArchive("notes", bigger), 1 << 20).input).exported;
  // The manifest is the first non-empty file, a.txt the second.
  await assert.rejects(
    rebuild(layout, other),
    /non-empty file number 2 has 7 bytes in borg's archive where the layout says 6/,
  );
  // borg's tar without its last file (the end record): the layout wants one more body.
  const endHeader = exported.indexOf(Buffer.from(".ferry/end.json"));
  assert.equal(endHeader % 512, 0);
  const cut = Buffer.concat([exported.subarray(0, endHeader), Buffer.alloc(1024)]);
  await assert.rejects(rebuild(layout, cut), /more file bodies than borg's archive, which has 6/);
  // One more file after the end record (whose body fits one block).
  const more = Buffer.concat([exported.subarray(0, endHeader + 1024), gnuTar([["zz", "extra"]])]);
  await assert.rejects(
    rebuild(layout, more),
    /borg's archive has more non-empty files than the layout's 7/,
  );
});

test("borg's tar is read strictly: base-256 sizes, long names, checksums, truncation", async () => {
  const gnu = gnuTar([
    ["x".repeat(150), "hello"],
    ["b", ""],
  ]);
  const read = async (tar: Buffer) => {
    const r = new BorgTarReader(
      (async function* () {
        yield* pieces(tar, 100);
      })(),
    );
    const files: string[] = [];
    for (let n = await r.nextFile(); n !== undefined; n = await r.nextFile()) {
      const parts: Buffer[] = [];
      for await (const b of r.body(n)) parts.push(b);
      files.push(Buffer.concat(parts).toString());
    }
    return files;
  };
  assert.deepEqual(await read(gnu), ["hello"]);
  // The first member is the GNU long name ('L'); the file's header is the second block
  // after its one-block body. Its size field rewritten in base-256 reads the same.
  const hdr = 1024;
  assert.equal(String.fromCharCode(gnu[hdr + 156] as number), "0");
  const b256 = Buffer.from(gnu);
  b256.fill(0, hdr + 124, hdr + 136);
  b256[hdr + 124] = 0x80;
  b256[hdr + 135] = 5;
  b256.fill(0x20, hdr + 148, hdr + 156);
  let sum = 0;
  for (let i = hdr; i < hdr + 512; i++) sum += b256[i] as number;
  b256.write(`${sum.toString(8).padStart(6, "0")}\0 `, hdr + 148, "latin1");
  assert.deepEqual(await read(b256), ["hello"]);
  const bad = Buffer.from(gnu);
  bad[hdr + 10] = (bad[hdr + 10] as number) ^ 1;
  await assert.rejects(read(bad), /header checksum mismatch/);
  await assert.rejects(read(gnu.subarray(0, hdr + 600)), /ended inside a member/);
});

test("no archive entry can be stored by borg under the layout's name", () => {
  for (const p of [LAYOUT_NAME, `/${LAYOUT_NAME}`, `./${LAYOUT_NAME}/x`, `../../${LAYOUT_NAME}`]) {
    assert.equal(collidesWithLayout(p), true, p);
  }
  for (const p of [
    `data/${LAYOUT_NAME}`,
    ".ferry/manifest.json",
    ".ferry/end.json",
    `${LAYOUT_NAME}2`,
  ]) {
    assert.equal(collidesWithLayout(p), false, p);
  }
});
