/**
 * `npm run fuzz -- [--seconds N] [--seed S] [--only archive|http] [--json FILE]`
 *
 * Runs the archive fuzzer and then the HTTP fuzzer against a real ferryd in user mode
 * (fuzz/target.ts), each for its share of N seconds (default 60: 60 % archives, 40 %
 * HTTP), checking the oracles after every input. fast-check drives the generation; on a
 * broken oracle it shrinks the input, prints the counterexample and the seed to replay
 * it, and the run exits 1. The summary (inputs tried, accepted, refused, peak descriptors
 * and RSS) is printed as one JSON line on stdout and optionally written to FILE.
 */
import { writeFileSync } from "node:fs";
import { request } from "node:http";
import type { Socket } from "node:net";
import { parseArgs } from "node:util";
import fc from "fast-check";
import {
  fetchBackup,
  mutate,
  mutationArb,
  parseArchive,
  postRestore,
  serialise,
} from "./archive.js";
import { type HttpStats, requestArb, sendRaw } from "./http.js";
import { startTarget } from "./target.js";

/** Waits (at most 60 s) until ferryd reports no running job. */
async function waitIdle(socket: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const jobs = await new Promise<{ state: string }[]>((resolve) => {
      const req = request({ socketPath: socket, path: "/v1/jobs", method: "GET" }, (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          text += d;
        });
        res.on("end", () => {
          try {
            resolve((JSON.parse(text) as { jobs: { state: string }[] }).jobs);
          } catch {
            resolve([{ state: "unknown" }]);
          }
        });
      });
      req.on("error", () => resolve([{ state: "unknown" }]));
      req.end();
    });
    if (!jobs.some((j) => j.state === "running" || j.state === "unknown")) return;
    if (Date.now() > deadline)
      throw new Error("ferryd did not become idle after the archive phase");
    await new Promise((r) => setTimeout(r, 100));
  }
}

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "60" },
    seed: { type: "string" },
    only: { type: "string" },
    json: { type: "string" },
  },
});
const seconds = Number(values.seconds);
if (!Number.isFinite(seconds) || seconds <= 0) {
  process.stderr.write("fuzz: --seconds must be a positive number\n");
  process.exit(2);
}
const seed = values.seed === undefined ? Date.now() % 2 ** 31 : Number(values.seed);
const only = values.only;

const t = await startTarget();
const seedArchive = await fetchBackup(t.socket);
const model = await parseArchive(seedArchive);
const pristine = t.liveSnapshot();

const summary = {
  seconds,
  seed,
  archive: { tried: 0, accepted: 0, refused: 0, codes: {} as Record<string, number> },
  http: { tried: 0, answered: 0, closed_by_ferryd: 0, held: 0 },
  baseline_fds: t.baselineFds,
  peak_fds: 0,
  peak_rss_kb: 0,
  failure: undefined as string | undefined,
};

let failed = false;
try {
  if (only === undefined || only === "archive") {
    const ms = (only === undefined ? 0.6 : 1) * seconds * 1000;
    await fc.assert(
      fc.asyncProperty(mutationArb(t), async (muts) => {
        const archive = serialise(mutate(model, muts));
        const before = t.liveSnapshot();
        const r = await postRestore(t.socket, archive);
        summary.archive.tried++;
        const key = r.status === 200 ? "ok" : (r.code ?? `HTTP ${r.status}`);
        summary.archive.codes[key] = (summary.archive.codes[key] ?? 0) + 1;
        if (r.status === 200) {
          summary.archive.accepted++;
          await t.check("accepted restore");
          // Put the original tree back so that the next input starts from it.
          const back = await postRestore(t.socket, seedArchive);
          if (back.status !== 200) throw new Error(`re-seeding failed: ${back.code}`);
          if (t.liveSnapshot() !== pristine) throw new Error("re-seeding did not restore the tree");
        } else {
          summary.archive.refused++;
          if (r.status === 0 || r.code === "INTERNAL")
            throw new Error(`the restore ended without a proper answer: ${r.status} ${r.code}`);
          await t.check(`refused restore (${r.code})`, before);
        }
      }),
      {
        numRuns: Number.MAX_SAFE_INTEGER,
        interruptAfterTimeLimit: ms,
        markInterruptAsFailure: false,
        seed,
        endOnFailure: false,
      },
    );
  }
  if (only === undefined || only === "http") {
    // fast-check's time limit abandons the archive phase's last run where it stands: a
    // restore it sent may still be running, or the tree may still hold an accepted
    // archive's content. Wait for ferryd to be idle and put the original tree back, so that
    // nothing of the archive phase is taken for a change the HTTP phase made.
    if (only === undefined) {
      await waitIdle(t.socket);
      const back = await postRestore(t.socket, seedArchive);
      if (back.status !== 200) throw new Error(`re-seeding failed: ${back.code}`);
      if (t.liveSnapshot() !== pristine) throw new Error("re-seeding did not restore the tree");
    }
    const ms = (only === undefined ? 0.4 : 1) * seconds * 1000;
    const pool: Socket[] = [];
    const stats: HttpStats = { answered: 0, closedByFerryd: 0, held: 0 };
    try {
      await fc.assert(
        fc.asyncProperty(fc.array(requestArb(), { minLength: 1, maxLength: 4 }), async (reqs) => {
          const before = t.liveSnapshot();
          await Promise.all(reqs.map((r) => sendRaw(t, r, pool, stats)));
          summary.http.tried += reqs.length;
          // No valid archive is ever sent here, so the application must not change.
          await t.check("http", before);
        }),
        {
          numRuns: Number.MAX_SAFE_INTEGER,
          interruptAfterTimeLimit: ms,
          markInterruptAsFailure: false,
          seed,
        },
      );
    } finally {
      for (const s of pool) s.destroy();
      summary.http.answered = stats.answered;
      summary.http.closed_by_ferryd = stats.closedByFerryd;
      summary.http.held = stats.held;
    }
    // Once the misbehaving clients are gone, ferryd is back to its idle descriptors.
    await new Promise((r) => setTimeout(r, 3000));
    await t.check("after the HTTP fuzzer");
  }
} catch (err) {
  failed = true;
  const cause = (err as Error).cause;
  summary.failure = `${(err as Error).message}${cause instanceof Error ? `\nCause: ${cause.message}` : ""}`;
  process.stderr.write(`fuzz: ${summary.failure}\n`);
}
summary.peak_fds = t.peakFds;
summary.peak_rss_kb = t.peakRssKb;
const code = await t.stop();
if (code !== 0 && !failed) {
  failed = true;
  summary.failure = `ferryd exited ${code} on SIGTERM`;
}
const line = JSON.stringify(summary);
process.stdout.write(`${line}\n`);
if (values.json !== undefined) writeFileSync(values.json, `${line}\n`);
process.exit(failed ? 1 : 0);
