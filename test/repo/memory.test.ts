/**
 * Memory stays bounded by the work in progress, not by the archive: a 1,000,000-entry
 * archive (1.07 GB, generated on the fly in a child process) is stored and dumped back
 * byte for byte with a peak RSS under 768 MiB, well below the archive's 1.07 GB: holding
 * it, or a copy of it, would exceed that. Measured: 186–229 MiB alone on a 2-core machine,
 * 297 MiB and once 579 MiB in full CI runs; about 90 MiB is the in-memory index
 * (docs/repository.md). What makes the peak grow on a slower run is not found yet (an open
 * point of the repository issue), so this bound proves "not held whole", not the 256 MiB
 * goal. Bounds: one child process, at most 5 minutes.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ROOT } from "../helpers/proc.js";
import { tempDir } from "./helpers.js";

test("a 1,000,000-entry archive is stored and dumped back byte for byte within 768 MiB", {
  timeout: 300_000,
}, () => {
  const dir = tempDir("ferry-repo-mem-");
  try {
    const out = execFileSync(
      process.execPath,
      [join(ROOT, "dist/test/repo/store-generated.js"), join(dir, "repo"), "1000000"],
      { encoding: "utf8", timeout: 290_000 },
    );
    const r = JSON.parse(out) as Record<string, number | string>;
    assert.equal(r.entries, 1_000_000);
    assert.equal(r.dumpBytes, r.bytes);
    assert.equal(r.dumpSha256, r.sha256);
    assert.ok((r.bytes as number) > 1_000_000_000);
    assert.ok((r.peakRssBytes as number) < 768 * 1024 * 1024, `peak RSS ${r.peakRssBytes}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
