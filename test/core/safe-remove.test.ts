/**
 * removeTreeAt works on the bytes of names: entries whose names a UTF-8 decoder would
 * change (a leading U+FEFF, invalid sequences, overlong encodings) are removed like any
 * other, so a tree holding them never survives its removal.
 */
import assert from "node:assert/strict";
import {
  closeSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { removeTreeAt } from "../../src/core/safe-remove.js";

const HOSTILE = [
  Buffer.from("\ufeffx"),
  Buffer.from([0x78, 0xff]),
  Buffer.from([0xc0, 0xaf]),
  Buffer.from([0xed, 0xa0, 0x80]), // a UTF-16 surrogate, encoded
  Buffer.from("\ufeff"),
];

test("bom-name-cleanup: removeTreeAt removes names that are not (or not stable) UTF-8", () => {
  const dir = mkdtempSync("/tmp/ferry-remove-");
  try {
    const top = join(dir, "tree");
    mkdirSync(join(top, "sub"), { recursive: true });
    for (const n of HOSTILE) {
      writeFileSync(Buffer.concat([Buffer.from(`${top}/`), n]), "x");
      const d = Buffer.concat([Buffer.from(`${top}/sub/`), n]);
      mkdirSync(d);
      writeFileSync(Buffer.concat([d, Buffer.from("/"), n]), "y");
    }
    const fd = openSync(dir, "r");
    try {
      removeTreeAt(fd, "tree");
    } finally {
      closeSync(fd);
    }
    assert.equal(existsSync(top), false, "the tree survived its removal");
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("bom-name-cleanup: removeTreeAt takes the name itself as bytes", () => {
  const dir = mkdtempSync("/tmp/ferry-remove-");
  try {
    const name = Buffer.from([0xef, 0xbb, 0xbf, 0x64, 0xff]);
    const p = Buffer.concat([Buffer.from(`${dir}/`), name]);
    mkdirSync(p);
    writeFileSync(Buffer.concat([p, Buffer.from("/f")]), "z");
    const fd = openSync(dir, "r");
    try {
      removeTreeAt(fd, name);
    } finally {
      closeSync(fd);
    }
    assert.equal(existsSync(p), false);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
