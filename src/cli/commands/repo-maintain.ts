/**
 * Keeping a repository sound and small with `ferry` (docs/repository.md, "Commands"):
 * `check [--read-data]`, `forget --keep-…` (restic's policies, per host and app) and
 * `prune`, each under the repository lock (exclusive when it removes data).
 */

import { checkRepository } from "../../repo/check.js";
import type { LoadedSnapshot } from "../../repo/format.js";
import { RepoLock } from "../../repo/lock.js";
import { applyPolicy, isEmptyPolicy, type KeepPolicy } from "../../repo/policy.js";
import { prune } from "../../repo/prune.js";
import { EXIT, UsageError } from "../exit-codes.js";
import { formatBytes } from "../progress.js";
import { openRepo, type RepoOptions } from "./repo-open.js";
import { RepoProgress } from "./repo-progress.js";

export async function checkCommand(o: RepoOptions, readData: boolean): Promise<number> {
  const repo = await openRepo(o);
  const lock = await RepoLock.acquire(repo, false);
  const progress = new RepoProgress("check --read-data");
  let report: Awaited<ReturnType<typeof checkRepository>>;
  try {
    report = await checkRepository(repo, {
      readData,
      onProgress: (done, total, bytes) => progress.update(bytes, `pack ${done} of ${total}`),
    });
  } finally {
    progress.clear();
    await lock.release();
  }
  if (o.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    for (const n of report.notes) process.stderr.write(`note: ${n}\n`);
    for (const p of report.problems) {
      process.stdout.write(
        `error: ${p.what}${p.snapshots.length ? `\n  affects snapshot(s): ${p.snapshots.join(", ")}` : ""}\n`,
      );
    }
    process.stdout.write(
      `checked ${report.snapshots} snapshot(s), ${report.packs} pack(s), ${report.blobs} blob(s)` +
        `${readData ? `, read ${formatBytes(report.bytesRead)}` : ""}: ` +
        `${report.problems.length === 0 ? "no errors" : `${report.problems.length} error(s)`}\n`,
    );
  }
  return report.problems.length === 0 ? EXIT.OK : EXIT.FAILURE;
}

// ---------------------------------------------------------------------------- forget, prune

export interface ForgetOptions {
  policy: KeepPolicy;
  app?: string;
  dryRun: boolean;
  prune: boolean;
}

export async function forgetCommand(o: RepoOptions, f: ForgetOptions): Promise<number> {
  if (isEmptyPolicy(f.policy)) {
    throw new UsageError("forget needs at least one --keep-* option");
  }
  const repo = await openRepo(o);
  const lock = await RepoLock.acquire(repo, f.prune && !f.dryRun);
  try {
    const snaps = (await repo.listSnapshots()).filter(
      (s) => f.app === undefined || s.app === f.app,
    );
    const groups = new Map<string, LoadedSnapshot[]>();
    for (const s of snaps) {
      const k = `${s.host}\u0000${s.app}`;
      const g = groups.get(k) ?? [];
      g.push(s);
      groups.set(k, g);
    }
    const summary: { host: string; app: string; keep: unknown[]; remove: unknown[] }[] = [];
    for (const g of groups.values()) {
      const r = applyPolicy(g, f.policy);
      const first = g[0] as LoadedSnapshot;
      summary.push({
        host: first.host,
        app: first.app,
        keep: r.keep.map((k) => ({ id: k.snapshot.id, time: k.snapshot.time, reasons: k.reasons })),
        remove: r.remove.map((s) => ({ id: s.id, time: s.time })),
      });
      if (!o.json) {
        process.stdout.write(
          `${first.app} on ${first.host}: keep ${r.keep.length}, ${f.dryRun ? "would remove" : "remove"} ${r.remove.length}\n`,
        );
        for (const k of r.keep)
          process.stdout.write(
            `  keep   ${k.snapshot.id.slice(0, 8)} ${k.snapshot.time} (${k.reasons.join(", ")})\n`,
          );
        for (const s of r.remove) process.stdout.write(`  remove ${s.id.slice(0, 8)} ${s.time}\n`);
      }
      if (!f.dryRun) for (const s of r.remove) await repo.backend.remove("snapshots", s.id);
    }
    let pruned: unknown;
    if (f.prune) pruned = await prune(repo, { dryRun: f.dryRun });
    if (o.json)
      process.stdout.write(`${JSON.stringify({ groups: summary, prune: pruned }, null, 2)}\n`);
    else if (pruned !== undefined) printPrune(pruned as Awaited<ReturnType<typeof prune>>);
  } finally {
    await lock.release();
  }
  return EXIT.OK;
}

function printPrune(r: Awaited<ReturnType<typeof prune>>): void {
  process.stdout.write(
    `prune${r.dryRun ? " (dry run)" : ""}: ${r.snapshots} snapshot(s) use ${r.usedBlobs} blob(s); ` +
      `${r.dryRun ? "would remove" : "removed"} ${r.packsRemoved} of ${r.packsBefore} pack(s) ` +
      `(${r.packsRepacked} repacked into ${r.packsWritten}, ${r.unindexedRemoved} unindexed), ` +
      `${formatBytes(r.bytesRemoved)} of ${formatBytes(r.bytesBefore)}\n`,
  );
}

export async function pruneCommand(o: RepoOptions, dryRun: boolean): Promise<number> {
  const repo = await openRepo(o);
  const lock = await RepoLock.acquire(repo, !dryRun);
  try {
    const r = await prune(repo, { dryRun });
    if (o.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    else printPrune(r);
  } finally {
    await lock.release();
  }
  return EXIT.OK;
}
