/**
 * The backup walk reads names as written: a name starting with U+FEFF is backed up under
 * that name (a decoder that strips byte-order marks would back up "x" — another file, or
 * nothing — in its place), and a name that is not UTF-8 is skipped with a warning.
 */
import assert from "node:assert/strict";
import { closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { walkRoot } from "../../../src/drivers/files/walk.js";

test("bom-name-backup: a file named U+FEFF x is backed up as itself, not as x", () => {
  const dir = mkdtempSync("/tmp/ferry-walk-");
  try {
    writeFileSync(join(dir, "\ufeffx"), "with bom");
    writeFileSync(join(dir, "x"), "plain");
    writeFileSync(Buffer.concat([Buffer.from(`${dir}/`), Buffer.from([0x79, 0xff])]), "bad");
    const fd = openSync(dir, "r");
    const warnings: string[] = [];
    let paths: string[];
    try {
      paths = [...walkRoot(fd, "data/0/", warnings, new Map())].map((e) => e.header.path);
    } finally {
      closeSync(fd);
    }
    assert.deepEqual(paths.sort(), ["data/0/", "data/0/x", "data/0/\ufeffx"].sort());
    assert.equal(warnings.length, 1, warnings.join("\n"));
    assert.match(warnings[0] as string, /not valid UTF-8/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
