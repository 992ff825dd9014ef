#!/usr/bin/env node
/**
 * `npm run bench`: Ferry against GNU tar, pg_dump and restic, side by side in one run.
 * See bench/README.md. Prints a table and writes bench/results/<date>-<host>.json with
 * the machine, every sample, the medians and the pairwise ratios. Exit status: 0 when
 * every selected case ran or was skipped with a reason, 1 when a case failed, 2 on usage
 * errors. No thresholds: benchmarks report, they do not gate.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { hostname, loadavg } from "node:os";
import { dirname, join } from "node:path";
import { CASES } from "./cases/all.js";
import { findPostgresBin } from "./cases/postgres.js";
import { HELP, parseBenchArgs } from "./lib/args.js";
import { BenchEnv, missingBasics, ROOT } from "./lib/env.js";
import { type FerryAbilities, probeFerry } from "./lib/ferryd.js";
import { machineInfo } from "./lib/machine.js";
import { type CaseResult, SkipCase } from "./lib/measure.js";
import { markdownTable, terminalTable, usageTable } from "./lib/report.js";

const say = (line: string) => process.stdout.write(`${line}\n`);

async function main(): Promise<number> {
  let opts: ReturnType<typeof parseBenchArgs>;
  try {
    opts = parseBenchArgs(process.argv.slice(2), process.env);
  } catch (err) {
    process.stderr.write(`bench: ${(err as Error).message}\n${HELP}`);
    return 2;
  }
  if (opts.help) {
    say(HELP);
    return 0;
  }
  if (opts.list) {
    for (const c of CASES) say(`${c.name.padEnd(15)} ${c.description}`);
    return 0;
  }
  if (opts.from !== undefined) {
    const saved = JSON.parse(readFileSync(opts.from, "utf8")) as { results: CaseResult[] };
    say(terminalTable(saved.results));
    const usage = usageTable(saved.results);
    if (usage !== "") say(`\n${usage}`);
    say("");
    say(markdownTable(saved.results));
    return 0;
  }
  const unknown = opts.only.filter((n) => !CASES.some((c) => c.name === n));
  if (unknown.length > 0) {
    process.stderr.write(
      `bench: unknown case ${unknown.join(", ")}; cases: ${CASES.map((c) => c.name).join(", ")}\n`,
    );
    return 2;
  }
  const selected = CASES.filter((c) => opts.only.length === 0 || opts.only.includes(c.name));
  const basics = missingBasics();
  if (basics !== undefined) {
    process.stderr.write(`bench: cannot run: ${basics}\n`);
    return 1;
  }

  const started = new Date();
  const env = new BenchEnv(opts, say);
  // Ctrl-C also reaches the measured commands (same process group), so the running case
  // fails, its finally-blocks stop its ferryd and database, and nothing more starts.
  let interrupted = false;
  const onSignal = () => {
    interrupted = true;
    say("\ninterrupted: cleaning up");
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const results: CaseResult[] = [];
  let ferry: FerryAbilities | undefined;
  // Recorded first: the checkout's state while the build is measured, not after.
  const machine = await machineInfo(dirname(env.tmp), findPostgresBin());
  try {
    say(`ferry bench: ${env.mode}`);
    say(
      `data factor ${env.factor} (quick: ${opts.quick}, scale: ${opts.scale}), seed ${opts.seed}, ` +
        `${opts.pairs} pairs after a warm-up pair, in ${env.tmp}`,
    );
    ferry = await probeFerry(env);
    say(
      `ferry ${ferry.version}: commands ${ferry.commands.join(", ")}; drivers ${ferry.drivers.join(", ")}`,
    );
    for (const c of selected) {
      if (interrupted) break;
      say(`\n== ${c.name}: ${c.description}`);
      const base = {
        name: c.name,
        description: c.description,
        target: c.target,
        targetValue: c.targetValue,
        targetHigherIsBetter: c.targetHigherIsBetter,
        displayUnit: c.displayUnit,
      };
      const t0 = Date.now();
      try {
        const outcome = await c.run({ env, ferry, pairs: opts.pairs, say });
        results.push({ ...base, ...outcome });
        say(`  done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
      } catch (err) {
        if (err instanceof SkipCase) {
          results.push({ ...base, status: "skipped", reason: err.message });
          say(`  skipped: ${err.message}`);
        } else {
          results.push({ ...base, status: "failed", reason: (err as Error).message });
          say(`  FAILED: ${(err as Error).message}`);
        }
      }
    }
  } finally {
    env.cleanup();
  }

  if (interrupted) return 130;
  const finished = new Date();
  const date = started.toISOString().slice(0, 10);
  const host = hostname().replace(/[^A-Za-z0-9._-]/g, "_");
  const file =
    opts.json ??
    join(ROOT, "bench", "results", `${date}-${host}${opts.quick ? "-quick" : ""}.json`);
  const report = {
    format: 1,
    started: started.toISOString(),
    finished: finished.toISOString(),
    loadAverageAtEnd: loadavg().map((l) => Math.round(l * 100) / 100),
    durationSeconds: Math.round((finished.getTime() - started.getTime()) / 1000),
    options: {
      quick: opts.quick,
      scale: opts.scale,
      factor: env.factor,
      pairs: opts.pairs,
      seed: opts.seed,
      only: opts.only,
      baselineOnly: opts.baselineOnly,
    },
    mode: env.mode,
    machine,
    ferry,
    data: env.generatedTrees().map((t) => ({
      name: t.name,
      files: t.files.length,
      directories: t.dirs,
      bytes: t.bytes,
    })),
    results,
  };
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, `${JSON.stringify(report, null, 2)}\n`);

  say(
    `\n${date}, ${machine.host}: ${machine.cpuModel}, ${machine.cores} cores, ${(machine.memoryBytes / 2 ** 30).toFixed(0)} GiB, ${machine.kernel}, Node ${machine.node}`,
  );
  say(terminalTable(results));
  const usage = usageTable(results);
  if (usage !== "") say(`\n${usage}`);
  say(`\nratio: baseline time / Ferry time per pair (bytes: Ferry / baseline); results in ${file}`);
  return results.some((r) => r.status === "failed") ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err) => {
    process.stderr.write(
      `bench: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`,
    );
    process.exitCode = 1;
  },
);
