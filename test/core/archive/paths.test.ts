import assert from "node:assert/strict";
import { test } from "node:test";
import {
  checkLinkTarget,
  DEFAULT_RESTORE_LIMITS as L,
  parseArchivePath,
} from "../../../src/core/archive/paths.js";
import { FerryError } from "../../../src/core/errors.js";

const refused = (fn: () => unknown) =>
  assert.throws(fn, (e: unknown) => e instanceof FerryError && e.code === "ARCHIVE_UNSAFE");

test("archive paths: declared roots and plain components are accepted", () => {
  assert.deepEqual(parseArchivePath("data/0/", 1, L), { root: 0, parts: [] });
  assert.deepEqual(parseArchivePath("data/1/a/b.txt", 2, L), { root: 1, parts: ["a", "b.txt"] });
  assert.deepEqual(parseArchivePath("data/0/ü b/..x", 1, L), { root: 0, parts: ["ü b", "..x"] });
});

test("archive paths: traversal, absolute, empty components and control characters are refused", () => {
  for (const p of [
    "data/0/../x",
    "data/0/a/../../x",
    "../x",
    "/etc/passwd",
    "////etc/passwd",
    "data/0//x",
    "data/0/./x",
    "data/0/a\u0000b",
    "data/0/a\nb",
    "data/0/a\u007fb",
  ]) {
    refused(() => parseArchivePath(p, 1, L));
  }
});

test("archive paths: undeclared roots and paths outside data/ are refused", () => {
  for (const p of [
    "data/1/x",
    "data/01/x",
    "data/-1/x",
    "data/x/y",
    "etc/passwd",
    "data",
    ".ferry/x",
  ]) {
    refused(() => parseArchivePath(p, 1, L));
  }
});

test("archive paths: limits on name length, path length and depth", () => {
  parseArchivePath(`data/0/${"n".repeat(255)}`, 1, L);
  refused(() => parseArchivePath(`data/0/${"n".repeat(256)}`, 1, L));
  refused(() => parseArchivePath(`data/0/${"a/".repeat(2100)}x`, 1, L));
  parseArchivePath(`data/0/${"d/".repeat(255)}x`, 1, L);
  refused(() => parseArchivePath(`data/0/${"d/".repeat(256)}x`, 1, L));
});

test("symlink targets: any text but empty, control characters or too long", () => {
  checkLinkTarget("data/0/l", "/etc/shadow", L);
  checkLinkTarget("data/0/l", "../../anything", L);
  refused(() => checkLinkTarget("data/0/l", "", L));
  refused(() => checkLinkTarget("data/0/l", "a\u0000b", L));
  refused(() => checkLinkTarget("data/0/l", "x".repeat(5000), L));
});
