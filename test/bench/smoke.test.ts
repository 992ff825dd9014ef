/**
 * The benchmark harness must not rot: `npm run bench -- --quick --pairs 2 --only
 * export-big,import-small,client-rss` on tiny data (--scale 0.01: 4 files of 268 KB, 20
 * small files) runs a real ferryd, tar and GNU time, and its table and JSON carry each
 * case with numeric medians and ratios and every sample's CPU seconds and peak RSS per
 * process; the durable import replaces the previous sample's tree and is checked each
 * time. No thresholds on the numbers.
 *
 * Bounds: about 20 ferry runs and as many tar runs on 1 MB trees; the harness gets
 * 3 minutes.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

const RUN = fileURLToPath(new URL("../../bench/run.js", import.meta.url));
const CASES = "export-big,import-small,client-rss";
const PAIRS = 2;

interface Usage {
  userSeconds: number;
  systemSeconds: number;
  peakRssBytes: number;
}

interface Side {
  command: string;
  samples: number[];
  median: number;
  usage: { ferry?: Usage; ferryd?: Usage & { peakRssScope: string }; baseline?: Usage }[];
}

function assertUsage(u: Usage | undefined, what: string): void {
  assert.ok(u, `${what}: no usage`);
  assert.ok(Number.isFinite(u.userSeconds) && u.userSeconds >= 0, `${what}: user ${u.userSeconds}`);
  assert.ok(Number.isFinite(u.systemSeconds) && u.systemSeconds >= 0, `${what}: sys`);
  // Anything that ran has a resident set; a Node process has at least several MB.
  assert.ok(Number.isInteger(u.peakRssBytes) && u.peakRssBytes > 0, `${what}: rss`);
}

/** Every sample of a Ferry side has ferry's and ferryd's usage; of a baseline, its own. */
function assertSampleUsage(side: Side, role: "ferry" | "baseline"): void {
  assert.equal(side.usage.length, side.samples.length, `${role}: one usage per sample`);
  side.usage.forEach((u, i) => {
    if (role === "baseline") {
      assertUsage(u.baseline, `baseline sample ${i}`);
      return;
    }
    assertUsage(u.ferry, `ferry sample ${i}`);
    assert.ok((u.ferry as Usage).peakRssBytes > 10e6, `ferry is a Node process: ${i}`);
    assertUsage(u.ferryd, `ferryd sample ${i}`);
    assert.equal(u.ferryd?.peakRssScope, "sample", "ferryd's peak is reset before each sample");
  });
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

describe("npm run bench -- --quick --pairs 2 --only export-big,import-small,client-rss (tiny data)", () => {
  let dir: string;
  let out: ReturnType<typeof spawnSync>;
  let json: string;

  before(() => {
    dir = mkdtempSync(join(tmpdir(), "ferry-bench-smoke-"));
    json = join(dir, "results.json");
    out = spawnSync(
      process.execPath,
      [
        RUN,
        "--quick",
        "--scale",
        "0.01",
        "--pairs",
        String(PAIRS),
        "--only",
        CASES,
        "--json",
        json,
      ],
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
      /^export-big\s+\d+\.\d+ s \(.+\/s\)\s+\d+\.\d+ s \(.+\/s\)\s+\d+\.\d+ \[\d+\.\d+–\d+\.\d+\]\s+≥ 0\.7$/,
    );
  });

  test("prints where the time goes: CPU seconds and peak RSS of ferry, ferryd, the baseline", () => {
    const lines = String(out.stdout).split("\n");
    const header = lines.findIndex((l) => l.startsWith("case") && l.includes("ferry peak RSS"));
    assert.ok(header > 0, `no usage table in:\n${out.stdout}`);
    const row = lines.slice(header).find((l) => l.startsWith("export-big "));
    assert.match(
      row ?? "",
      /^export-big\s+\d+\.\d\d\+\d+\.\d\d\s+\d+\.\d MiB\s+\d+\.\d\d\+\d+\.\d\d\s+\d+(\.\d)? MB\s+\d+\.\d\d\+\d+\.\d\d$/,
    );
  });

  test("the JSON has the machine, every sample, both medians and the pairwise ratios", () => {
    const report = JSON.parse(readFileSync(json, "utf8"));
    assert.equal(report.options.quick, true);
    assert.equal(report.options.factor, 0.001);
    assert.equal(report.options.pairs, PAIRS);
    assert.ok(report.machine.cpuModel.length > 0);
    assert.ok(report.machine.cores >= 1);
    assert.match(report.machine.kernel, /^Linux /);
    assert.equal(report.machine.node, process.version);
    assert.match(report.machine.tools.tar, /tar/);
    assert.deepEqual(
      report.data.map((d: { name: string }) => d.name).sort(),
      ["big", "small"],
      "only the data the cases need is generated",
    );
    assert.deepEqual(
      report.results.map((r: { name: string }) => r.name),
      CASES.split(","),
    );
    const c = report.results[0];
    assert.equal(c.name, "export-big");
    assert.equal(c.status, "ran", `status ${c.status}: ${c.reason}`);
    assert.equal(c.metric, "seconds");
    assert.equal(c.dataBytes, report.data.find((d: { name: string }) => d.name === "big").bytes);
    const pairs = report.options.pairs;
    assert.equal(pairs, PAIRS);
    assertSide(c.baseline, "baseline", pairs);
    assertSide(c.ferry, "ferry", pairs);
    assert.equal(c.ratio.values.length, pairs);
    c.ratio.values.forEach((r: number, i: number) => {
      assert.ok(Math.abs(r - c.baseline.samples[i] / c.ferry.samples[i]) < 1e-12, `ratio ${i}`);
    });
    assert.equal(c.ratio.median, medianOf(c.ratio.values));
    assert.ok(c.ratio.min <= c.ratio.median && c.ratio.median <= c.ratio.max);
    assertSampleUsage(c.baseline, "baseline");
    assertSampleUsage(c.ferry, "ferry");
    const ferryCpu = c.ferry.usage.map((u: Side["usage"][number]) =>
      Math.round(((u.ferry as Usage).userSeconds + (u.ferry as Usage).systemSeconds) * 100),
    );
    // The summary's median, rounded to hundredths like the samples.
    assert.ok(Math.abs(c.usage.ferry.cpuSeconds - medianOf(ferryCpu) / 100) <= 0.0051);
    assert.equal(
      c.usage.ferryd.peakRssBytes,
      Math.max(...c.ferry.usage.map((u: Side["usage"][number]) => u.ferryd?.peakRssBytes)),
    );
  });

  test("the durable import runs, replaces the previous tree each time and is checked", () => {
    const report = JSON.parse(readFileSync(json, "utf8"));
    const c = report.results.find((r: { name: string }) => r.name === "import-small");
    assert.equal(c.status, "ran", `status ${c.status}: ${c.reason}`);
    assert.match(c.baseline.command, /^rm -rf OLD && tar -xf small\.tar -C NEW && sync -f NEW/);
    assert.match(c.ferry.command, /^ferry import small -i small\.tar/);
    assertSide(c.baseline, "baseline", PAIRS);
    assertSide(c.ferry, "ferry", PAIRS);
    // The warm-up and every measured sample were checked after the restore.
    assert.equal(c.details.restoresChecked, PAIRS + 1);
    assertSampleUsage(c.baseline, "baseline");
    assertSampleUsage(c.ferry, "ferry");
    assert.match(String(out.stdout), /^import-small\s.*≥ 0\.9$/m);
  });

  test("client-rss reports ferry's peak RSS during both exports against 64 MiB", () => {
    const report = JSON.parse(readFileSync(json, "utf8"));
    const c = report.results.find((r: { name: string }) => r.name === "client-rss");
    assert.equal(c.status, "ran", `status ${c.status}: ${c.reason}`);
    assert.equal(c.metric, "peak-rss");
    assert.equal(c.targetValue, 64 * 2 ** 20);
    assert.equal(c.ferry.samples.length, PAIRS);
    c.ferry.samples.forEach((peak: number, i: number) => {
      assert.equal(peak, Math.max(c.details.bigPeakRssBytes[i], c.details.smallPeakRssBytes[i]));
    });
    assert.match(String(out.stdout), /^client-rss\s+-\s+\d+\.\d MiB\s+-\s+≤ 64 MiB$/m);
  });
  test("an unknown case is a usage error", () => {
    const r = spawnSync(process.execPath, [RUN, "--only", "no-such-case"], { encoding: "utf8" });
    assert.equal(r.status, 2);
    assert.match(r.stderr, /unknown case no-such-case/);
  });
});
