/**
 * The benchmark harness must not rot: `npm run bench -- --quick --only export-big` on tiny
 * data (--scale 0.01: 4 files of 268 KB) runs a real ferryd and tar, and its table and
 * JSON carry the case with numeric medians and ratios. No thresholds on the numbers.
 *
 * Bounds: about 15 ferry/tar runs of a 1 MB tree; the whole harness gets 3 minutes.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const RUN = fileURLToPath(new URL("../../bench/run.js", import.meta.url));

interface Side {
  command: string;
  samples: number[];
  median: number;
}

function medianOf(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
}

function assertSide(side: Side | undefined, what: string, pairs: number): void {
  assert.ok(side, `${what} is missing`);
  assert.equal(side.samples.length, pairs, `${what}: one sample per pair`);
  for (const s of side.samples) assert.ok(Number.isFinite(s) && s > 0, `${what}: sample ${s}`);
  assert.ok(Number.isFinite(side.median) && side.median > 0, `${what}: median ${side.median}`);
  assert.equal(side.median, medianOf(side.samples), `${what}: median of its samples`);
}

describe("npm run bench -- --quick --only export-big (tiny data)", () => {
  let dir: string;
  let out: ReturnType<typeof spawnSync>;
  let json: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "ferry-bench-smoke-"));
    json = join(dir, "results.json");
    out = spawnSync(
      process.execPath,
      [RUN, "--quick", "--only", "export-big", "--scale", "0.01", "--json", json],
      { encoding: "utf8", timeout: 180_000 },
    );
  });

  after(() => {
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test("exits 0 and prints the case in the table with numeric medians and ratio", () => {
    assert.equal(out.status, 0, `bench failed:\n${out.stdout}\n${out.stderr}`);
    const row = String(out.stdout)
      .split("\n")
      .find((l) => l.startsWith("export-big "));
    assert.ok(row, `no export-big row in:\n${out.stdout}`);
    assert.match(
      row,
      /^export-big\s+\d+\.\d+ s \(.+\/s\)\s+\d+\.\d+ s \(.+\/s\)\s+\d+\.\d+ \[\d+\.\d+–\d+\.\d+\]\s+≥ 0\.9$/,
    );
  });

  test("the JSON has the machine, every sample, both medians and the pairwise ratios", () => {
    const report = JSON.parse(readFileSync(json, "utf8"));
    assert.equal(report.options.quick, true);
    assert.equal(report.options.factor, 0.001);
    assert.ok(report.machine.cpuModel.length > 0);
    assert.ok(report.machine.cores >= 1);
    assert.match(report.machine.kernel, /^Linux /);
    assert.equal(report.machine.node, process.version);
    assert.match(report.machine.tools.tar, /tar/);
    assert.deepEqual(
      report.data.map((d: { name: string }) => d.name),
      ["big"],
      "only the data the case needs is generated",
    );
    assert.equal(report.results.length, 1);
    const c = report.results[0];
    assert.equal(c.name, "export-big");
    assert.equal(c.status, "ran", `status ${c.status}: ${c.reason}`);
    assert.equal(c.metric, "seconds");
    assert.equal(c.dataBytes, report.data[0].bytes);
    const pairs = report.options.pairs;
    assert.ok(pairs >= 5);
    assertSide(c.baseline, "baseline", pairs);
    assertSide(c.ferry, "ferry", pairs);
    assert.equal(c.ratio.values.length, pairs);
    c.ratio.values.forEach((r: number, i: number) => {
      assert.ok(Math.abs(r - c.baseline.samples[i] / c.ferry.samples[i]) < 1e-12, `ratio ${i}`);
    });
    assert.equal(c.ratio.median, medianOf(c.ratio.values));
    assert.ok(c.ratio.min <= c.ratio.median && c.ratio.median <= c.ratio.max);
  });

  test("an unknown case is a usage error", () => {
    const r = spawnSync(process.execPath, [RUN, "--only", "no-such-case"], { encoding: "utf8" });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown case no-such-case/);
  });
});
