/**
 * The archive format: what Ferry writes is what GNU tar and Python's tarfile read, the end
 * record covers exactly the payload bytes, and the reader refuses every truncation or
 * corruption instead of passing it on as a good archive.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import { ArchiveParser } from "../../../src/core/archive/reader.js";
import { encodeHeader, type TarHeader } from "../../../src/core/archive/tar.js";
import { type ArchiveEntry, writeArchive } from "../../../src/core/archive/writer.js";
import { FerryError } from "../../../src/core/errors.js";
import { ROOT } from "../../helpers/proc.js";

function h(
  path: string,
  type: TarHeader["type"],
  size = 0,
  extra: Partial<TarHeader> = {},
): TarHeader {
  return {
    path,
    type,
    mode: type === "dir" ? 0o755 : 0o644,
    uid: 1000,
    gid: 1000,
    uname: "alice",
    gname: "alice",
    size,
    mtimeSec: 1_700_000_000,
    mtimeNsec: 123_456_789,
    linkpath: "",
    ...extra,
  };
}

const longName = `data/0/${"d".repeat(120)}/${"f".repeat(150)}.txt`;
const entries: ArchiveEntry[] = [
  { header: h("data/0/", "dir") },
  { header: h("data/0/a.txt", "file", 5), body: Buffer.from("hello") },
  {
    header: h("data/0/ünï 日本.txt", "file", 3, { uid: 70_000_000, uname: "jörg" }),
    body: Buffer.from("abc"),
  },
  { header: h(longName, "file", 600_000), body: Buffer.alloc(600_000, 1) },
  { header: h("data/0/l", "symlink", 0, { linkpath: `/${"x".repeat(200)}` }) },
  { header: h("data/0/hl", "hardlink", 0, { linkpath: "data/0/a.txt" }) },
];

async function* iter(list: ArchiveEntry[]) {
  yield* list;
}

async function build(list = entries): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of writeArchive({ app: "t", driver: "files" }, iter(list), ["a warning"]))
    chunks.push(c);
  return Buffer.concat(chunks);
}

async function parse(buf: Buffer, chunk = 4096) {
  const seen: TarHeader[] = [];
  const p = new ArchiveParser({ entry: (x) => void seen.push(x) });
  for (let i = 0; i < buf.length; i += chunk) await p.write(buf.subarray(i, i + chunk));
  return { end: p.finish(), seen, manifest: p.manifest };
}

async function codeOf(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    assert.ok(err instanceof FerryError, String(err));
    return err.code;
  }
  return "accepted";
}

const dir = mkdtempSync("/tmp/ferry-archive-");
after(() => rmSync(dir, { recursive: true, force: true }));

describe("archive", () => {
  test("round-trips through Ferry's reader with every field", async () => {
    const buf = await build();
    const { end, seen, manifest } = await parse(buf, 777);
    assert.equal(manifest?.app, "t");
    assert.equal(end.entries, entries.length);
    assert.deepEqual(end.warnings, ["a warning"]);
    assert.deepEqual(
      seen.map((x) => [
        x.path,
        x.type,
        x.size,
        x.uid,
        x.uname,
        x.mtimeSec,
        x.mtimeNsec,
        x.linkpath,
      ]),
      entries.map((e) => [
        e.header.path,
        e.header.type,
        e.header.size,
        e.header.uid,
        e.header.uname,
        e.header.mtimeSec,
        e.header.mtimeNsec,
        e.header.linkpath,
      ]),
    );
  });

  test("GNU tar lists it and Python's tarfile verifies the end record independently", async () => {
    const file = join(dir, "a.tar");
    writeFileSync(file, await build());
    // --quoting-style=literal: in the C locale (LANG unset) GNU tar escapes non-ASCII names.
    const listed = execFileSync("tar", ["--quoting-style=literal", "-tf", file])
      .toString()
      .trim()
      .split("\n");
    assert.deepEqual(listed, [
      ".ferry/manifest.json",
      ...entries.map((e) => e.header.path),
      ".ferry/end.json",
    ]);
    const check = JSON.parse(
      execFileSync("python3", [join(ROOT, "test/helpers/verify_archive.py"), file]).toString(),
    );
    assert.equal(check.ok, true, check.problem);
    assert.equal(check.entries, entries.length);
  });

  test("every truncation is refused", async () => {
    const buf = await build();
    for (const cut of [0, 100, 512, 1024, 1536, 3000, buf.length - 2048, buf.length - 1025]) {
      const code = await codeOf(parse(buf.subarray(0, cut)));
      assert.ok(["ARCHIVE_TRUNCATED", "ARCHIVE_INVALID"].includes(code), `cut at ${cut}: ${code}`);
    }
  });

  test("a flipped payload byte is a checksum mismatch", async () => {
    const buf = Buffer.from(await build());
    const at = buf.indexOf(Buffer.alloc(1000, 1)) + 10;
    buf[at] = 2;
    assert.equal(await codeOf(parse(buf)), "ARCHIVE_CHECKSUM_MISMATCH");
  });

  test("a flipped header byte is invalid", async () => {
    const buf = Buffer.from(await build());
    const at = buf.indexOf(Buffer.from("data/0/a.txt"));
    buf[at + 1] = "b".charCodeAt(0);
    assert.equal(await codeOf(parse(buf)), "ARCHIVE_INVALID");
  });

  test("an archive without its end record is truncated", async () => {
    const buf = await build();
    const endAt = buf.lastIndexOf(Buffer.from(".ferry/end.json"));
    const cut = Buffer.concat([buf.subarray(0, endAt), Buffer.alloc(1024)]);
    assert.equal(await codeOf(parse(cut)), "ARCHIVE_TRUNCATED");
  });

  test("data after the end of the archive is refused", async () => {
    const buf = await build();
    const extra = Buffer.concat([buf, encodeHeader(h("data/0/late", "file", 0))]);
    assert.equal(await codeOf(parse(extra)), "ARCHIVE_INVALID");
  });

  test("a first entry other than the manifest is refused", async () => {
    const bogus = Buffer.concat([encodeHeader(h("data/0/x", "file", 0)), Buffer.alloc(1024)]);
    assert.equal(await codeOf(parse(bogus)), "ARCHIVE_INVALID");
  });

  test("an oversized pax header is refused before it is buffered", async () => {
    const p = new ArchiveParser({}, { maxPaxBytes: 1024, maxPathBytes: 4096, maxEntries: 10 });
    const buf = await build([{ header: h(`data/0/${"n".repeat(2000)}`, "file", 0) }]);
    assert.equal(await codeOf(p.write(buf)), "ARCHIVE_INVALID");
  });
});
