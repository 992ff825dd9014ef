/**
 * removeTreeAt works on the bytes of names: entries whose names a UTF-8 decoder would
 * change (a leading U+FEFF, invalid sequences, overlong encodings) are removed like any
 * other, so a tree holding them never survives its removal.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
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

test("locked-dirs-user-mode: directories restored as 0500 or 0000 are removed by their owner without CAP_DAC_OVERRIDE", () => {
  // As root, the removal runs as an unprivileged uid (root's DAC override would hide the
  // problem); as any other user it runs here.
  const isRoot = process.getuid?.() === 0;
  const dir = mkdtempSync("/tmp/ferry-remove-");
  try {
    const top = join(dir, "tree");
    mkdirSync(join(top, "ro/inner"), { recursive: true });
    mkdirSync(join(top, "none/inner"), { recursive: true });
    writeFileSync(join(top, "ro/inner/f"), "x");
    writeFileSync(join(top, "none/inner/g"), "y");
    writeFileSync(join(top, "ro/h"), "z");
    const modes: [string, number][] = [
      ["ro/inner", 0o500],
      ["ro", 0o555],
      ["none/inner", 0o000],
      ["none", 0o300],
      ["", 0o500],
    ];
    if (isRoot) execFileSync("chown", ["-R", "65534:65534", dir]);
    for (const [p, m] of modes) chmodSync(join(top, p), m);
    const script = `import { openSync, closeSync } from "node:fs";
      import { removeTreeAt } from ${JSON.stringify(new URL("../../src/core/safe-remove.js", import.meta.url).href)};
      const fd = openSync(${JSON.stringify(dir)}, "r");
      removeTreeAt(fd, "tree");
      closeSync(fd);`;
    const argv = isRoot
      ? ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath]
      : [process.execPath];
    execFileSync(argv[0] as string, [...argv.slice(1), "--input-type=module", "-e", script], {
      stdio: "pipe",
    });
    assert.equal(existsSync(top), false, "the tree survived its removal");
  } finally {
    execFileSync("chmod", ["-R", "u+rwx", dir]);
    rmSync(dir, { recursive: true, force: true });
  }
});
