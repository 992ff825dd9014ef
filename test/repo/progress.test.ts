/** The repository commands' progress line: bytes, rate, the app, and an ETA when a total is known. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { progressLine } from "../../src/cli/commands/repo-progress.js";

test("progress line with a known total shows rate and ETA", () => {
  assert.equal(
    progressLine("restore notes", 50 * 1048576, 5, 100 * 1048576),
    "restore notes: 50.0 MiB of 100.0 MiB, 10.0 MiB/s, ETA 0:05",
  );
});

test("progress line past an estimated total shows ~ and no ETA", () => {
  assert.equal(
    progressLine("backup db", 3 * 1048576, 1, 2 * 1048576, "12 entries"),
    "backup db: 3.0 MiB of ~3.0 MiB, 3.0 MiB/s, 12 entries",
  );
});

test("progress line without a total", () => {
  assert.equal(progressLine("backup x", 1024, 2), "backup x: 1.0 KiB, 512 B/s");
});
