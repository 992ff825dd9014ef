/**
 * What the reader accepts in numeric fields and times, checked field by field: only what
 * GNU tar and Python's tarfile also accept, and times that keep their sign.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  decodeBlock,
  encodeHeader,
  parsePax,
  resolveHeader,
  type TarHeader,
} from "../../../src/core/archive/tar.js";

function header(extra: Partial<TarHeader> = {}): TarHeader {
  return {
    path: "data/0/f",
    type: "file",
    mode: 0o644,
    uid: 1000,
    gid: 1000,
    uname: "",
    gname: "",
    size: 6,
    mtimeSec: 1_700_000_000,
    mtimeNsec: 0,
    linkpath: "",
    ...extra,
  };
}

/** Writes `bytes` into a ustar block at `off` and fixes the checksum, as an attacker would. */
function patched(off: number, bytes: Buffer): Buffer {
  const b = Buffer.from(encodeHeader(header()));
  assert.equal(b.length, 512);
  bytes.copy(b, off);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of b) sum += x;
  b.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return b;
}

const FIELDS: [string, number, number][] = [
  ["mode", 100, 8],
  ["uid", 108, 8],
  ["gid", 116, 8],
  ["size", 124, 12],
  ["mtime", 136, 12],
];

describe("reader strictness", () => {
  test("numeric-top-bit: a size of 0000000000\\xb6 is refused, not read as 6", () => {
    const b = patched(124, Buffer.from("0000000000\xb6\0", "latin1"));
    assert.throws(() => decodeBlock(b), /size is not an octal number/);
  });

  test("numeric-top-bit: every numeric field refuses bytes other than octal digits, spaces and NULs", () => {
    for (const [name, off, len] of FIELDS) {
      for (const bad of ["\xb7", "8", "+", "-", "x", "\x01", "\xff", "0x1"]) {
        const text = `${"0".repeat(len - 1 - bad.length)}${bad}\0`;
        const b = patched(off, Buffer.from(text, "latin1"));
        assert.throws(
          () => decodeBlock(b),
          /is not an octal number/,
          `${name} ${JSON.stringify(bad)}`,
        );
      }
      // Spaces and NULs around the digits are what real tars write.
      const ok = patched(off, Buffer.from(` ${"0".repeat(len - 4)}5 \0`, "latin1"));
      assert.doesNotThrow(() => decodeBlock(ok), name);
    }
  });

  test("numeric-top-bit: base-256 is accepted only when valid", () => {
    const size = Buffer.alloc(12);
    size[0] = 0x80;
    size.writeUInt32BE(12345, 8);
    assert.equal(decodeBlock(patched(124, size)).size, 12345);
    const chk = Buffer.from(encodeHeader(header()));
    chk[148] = 0x80;
    assert.throws(() => decodeBlock(chk), /checksum is not an octal number/);
    const negative = Buffer.alloc(12, 0xff);
    assert.throws(() => decodeBlock(patched(124, negative)), /negative size/);
  });

  test("negative-fractional-mtime: -1.5 is read as 1.5 s before the epoch", () => {
    const at = (v: string) =>
      resolveHeader(
        decodeBlock(encodeHeader(header())),
        parsePax(Buffer.from(`${` mtime=${v}\n`.length + 2} mtime=${v}\n`)),
      );
    for (const [v, sec, nsec] of [
      ["-1.5", -2, 500_000_000],
      ["-0.25", -1, 750_000_000],
      ["-3", -3, 0],
      ["-3.000000000", -3, 0],
      ["-0.000000001", -1, 999_999_999],
      ["1.5", 1, 500_000_000],
      ["0.5", 0, 500_000_000],
    ] as const) {
      const h = at(v);
      assert.deepEqual([h.mtimeSec, h.mtimeNsec], [sec, nsec], v);
    }
  });

  test("negative-fractional-mtime: the writer keeps the sign and the reader reads it back", () => {
    for (const [sec, nsec, text] of [
      [-2, 500_000_000, "-1.5"],
      [-1, 999_999_999, "-0.000000001"],
      [-1, 500_000_000, "-0.5"],
      [5, 250_000_000, "5.25"],
    ] as const) {
      const bytes = encodeHeader(header({ mtimeSec: sec, mtimeNsec: nsec }));
      const pax = parsePax(bytes.subarray(512, 512 + decodeBlock(bytes.subarray(0, 512)).size));
      const v = pax.get("mtime") as string;
      assert.equal(Number(v), Number(text), `${sec}+${nsec}ns written as ${v}`);
      const main = bytes.subarray(bytes.length - 512);
      const h = resolveHeader(decodeBlock(main), pax);
      assert.deepEqual([h.mtimeSec, h.mtimeNsec], [sec, nsec]);
    }
  });
});

describe("reader: names are read as written", () => {
  test("bom-in-header-fields: a name or link target starting with U+FEFF keeps it", () => {
    const link = decodeBlock(patched(157, Buffer.from("\ufeffx\0")));
    assert.equal(link.linkname, "\ufeffx");
    // Ferry's writer puts non-ASCII names in pax records; other writers use the ustar fields.
    const b = patched(0, Buffer.from("\ufeffy\0"));
    assert.equal(decodeBlock(b).name, "\ufeffy");
  });
});
