/**
 * A short run of the fuzzing suite (fuzz/run.ts): the structure-aware archive fuzzer and
 * the HTTP fuzzer against a real ferryd in user mode, with all their oracles (ferryd up,
 * /v1/version within 2 s, descriptors and RSS bounded, nothing outside the application
 * changed, refused restores leave it unchanged). The long run is `npm run fuzz -- --seconds
 * 1800` (docs/security.md, "Fuzzing").
 *
 * Bounds: 30 s of fuzzing, 90 s in all.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ROOT } from "../helpers/proc.js";

const SEED = 20261201;

test("fuzz: 30 s of mutated archives and HTTP requests break no oracle", {
  timeout: 90_000,
}, async () => {
  const dir = mkdtempSync("/tmp/ferry-fuzz-test-");
  try {
    const out = join(dir, "summary.json");
    const child = spawn(
      process.execPath,
      // A pinned seed: the same inputs every run (as many as 30 s allow), so a failure here
      // can be replayed with `npm run fuzz -- --seed SEED`; the long runs explore new seeds.
      [join(ROOT, "dist/fuzz/run.js"), "--seconds", "30", "--seed", String(SEED), "--json", out],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    const [code] = (await once(child, "exit")) as [number | null];
    assert.equal(code, 0, `seed ${SEED}: ${stderr.slice(0, 2000)} … ${stderr.slice(-2000)}`);
    const s = JSON.parse(readFileSync(out, "utf8")) as {
      archive: { tried: number; accepted: number; refused: number };
      http: { tried: number };
    };
    assert.ok(s.archive.tried > 50, `only ${s.archive.tried} archives were tried`);
    assert.ok(s.archive.refused > 0 && s.archive.accepted > 0, JSON.stringify(s.archive));
    assert.ok(s.http.tried > 50, `only ${s.http.tried} HTTP requests were tried`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});
