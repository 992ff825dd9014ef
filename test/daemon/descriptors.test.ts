/**
 * Start-up descriptor hygiene: closeRangeCloexec marks exactly the descriptors from the
 * given one up close-on-exec (close_range(2) with CLOSE_RANGE_CLOEXEC). The attack it
 * closes is tested end to end in test/e2e/trust-boundary.test.ts
 * (inherited-descriptor-not-in-helper).
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import {
  AT_FDCWD,
  closeFd,
  closeRangeCloexec,
  isCloexec,
  O_RDONLY,
  openat2,
} from "../../src/core/sys.js";

test("closeRangeCloexec marks every descriptor from the first given up, none below", () => {
  const dir = mkdtempSync(join(tmpdir(), "ferry-fd-"));
  const file = join(dir, "f");
  writeFileSync(file, "x");
  // Opened without O_CLOEXEC, as a leaked descriptor would be.
  const fds = [0, 1, 2].map(() => openat2(AT_FDCWD, file, O_RDONLY, 0, 0));
  try {
    const [low, mid, high] = fds as [number, number, number];
    assert.ok(low < mid && mid < high);
    for (const fd of fds) assert.equal(isCloexec(fd), false);
    assert.equal(closeRangeCloexec(mid), "close_range");
    assert.equal(isCloexec(low), false, "a descriptor below the range was touched");
    assert.equal(isCloexec(mid), true);
    assert.equal(isCloexec(high), true);
  } finally {
    for (const fd of fds) closeFd(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});
