/**
 * `ferry check`: the repository's structure — config, keys, snapshots, index files, pack
 * headers against the index, every tree of every snapshot and every blob they name —
 * and with `readData` every pack read whole: its name is its SHA-256, and every blob
 * authenticates, decompresses and hashes to its id. Each problem is reported with the
 * snapshots it affects. Packs no index names (left by an interrupted backup or prune) are
 * noted, not errors: `prune` removes them.
 */
import { FerryError } from "../core/errors.js";
import { sha256 } from "./crypto.js";
import { blobTypeName, decodeTree, hex, type IndexEntry, type LoadedSnapshot } from "./format.js";
import type { Repository } from "./repository.js";

export interface CheckProblem {
  what: string;
  /** Snapshot ids affected. */
  snapshots: string[];
}

export interface CheckReport {
  snapshots: number;
  packs: number;
  blobs: number;
  readData: boolean;
  bytesRead: number;
  problems: CheckProblem[];
  notes: string[];
}

export async function checkRepository(
  repo: Repository,
  opts: { readData: boolean; onProgress?: (done: number, total: number, bytes: number) => void },
): Promise<CheckReport> {
  const report: CheckReport = {
    snapshots: 0,
    packs: 0,
    blobs: 0,
    readData: opts.readData,
    bytesRead: 0,
    problems: [],
    notes: [],
  };
  // Snapshots first, then the index (the order of docs/repository.md, "Reading").
  const snaps: LoadedSnapshot[] = [];
  for (const f of await repo.backend.list("snapshots")) {
    try {
      snaps.push(await repo.loadSnapshot(f.name));
    } catch (err) {
      report.problems.push({
        what: `snapshot ${f.name}: ${(err as Error).message}`,
        snapshots: [f.name],
      });
    }
  }
  report.snapshots = snaps.length;
  for (const f of await repo.backend.list("index")) {
    try {
      await repo.loadIndexFile(f.name);
    } catch (err) {
      report.problems.push({ what: `index ${f.name}: ${(err as Error).message}`, snapshots: [] });
    }
  }
  report.blobs = repo.index.size;

  // Packs: present, headers agree with the index.
  const onDisk = new Map((await repo.backend.list("packs")).map((p) => [p.name, p.size]));
  const byPack = new Map<string, (IndexEntry & { id: string })[]>();
  for (const [id, e] of repo.allEntries()) {
    let l = byPack.get(e.pack);
    if (l === undefined) {
      l = [];
      byPack.set(e.pack, l);
    }
    l.push({ ...e, id });
  }
  report.packs = byPack.size;
  /** Blob ids that cannot be read. */
  const bad = new Map<string, string>();
  const badPack = (pack: string, why: string) => {
    for (const e of byPack.get(pack) ?? []) if (!bad.has(e.id)) bad.set(e.id, why);
  };
  for (const [pack, entries] of byPack) {
    const size = onDisk.get(pack);
    if (size === undefined) {
      report.problems.push({ what: `pack ${pack} is missing`, snapshots: [] });
      badPack(pack, `its pack ${pack} is missing`);
      continue;
    }
    try {
      const header = await repo.readPackHeader(pack, size);
      const inPack = new Map(header.map((h) => [hex(h.id), h]));
      for (const e of entries) {
        const h = inPack.get(e.id);
        if (h === undefined || h.offset !== e.offset || h.length !== e.length) {
          report.problems.push({
            what: `pack ${pack} does not hold blob ${e.id} where the index says`,
            snapshots: [],
          });
          bad.set(e.id, `not where the index says in pack ${pack}`);
        }
      }
    } catch (err) {
      report.problems.push({ what: `pack ${pack}: ${(err as Error).message}`, snapshots: [] });
    }
  }
  for (const name of onDisk.keys()) {
    if (!byPack.has(name)) {
      report.notes.push(
        `pack ${name} is in no index (left by an interrupted backup or prune); 'ferry prune' removes it`,
      );
    }
  }

  if (opts.readData) {
    let done = 0;
    for (const [pack, entries] of byPack) {
      opts.onProgress?.(done++, byPack.size, report.bytesRead);
      const size = onDisk.get(pack);
      if (size === undefined) continue;
      let data: Buffer;
      try {
        data = await repo.backend.read("packs", pack);
      } catch (err) {
        report.problems.push({ what: `pack ${pack}: ${(err as Error).message}`, snapshots: [] });
        badPack(pack, `pack ${pack} cannot be read`);
        continue;
      }
      report.bytesRead += data.length;
      if (hex(sha256(data)) !== pack) {
        report.problems.push({
          what: `pack ${pack} does not match its name: its bytes were changed`,
          snapshots: [],
        });
      }
      for (const e of entries) {
        try {
          if (e.offset + e.length > data.length) throw new Error("beyond the pack's end");
          await repo.openBlob(
            Buffer.from(e.id, "hex"),
            e,
            data.subarray(e.offset, e.offset + e.length),
          );
        } catch (err) {
          bad.set(e.id, (err as Error).message);
        }
      }
    }
  }

  // Every snapshot's trees and the blobs they name.
  const affected = new Map<string, Set<string>>(); // problem → snapshots
  const note = (what: string, snap: string) => {
    let s = affected.get(what);
    if (s === undefined) {
      s = new Set();
      affected.set(what, s);
    }
    s.add(snap);
  };
  for (const s of snaps) {
    for (const t of [...s.meta_tree, ...s.data_tree]) {
      const badWhy = bad.get(t);
      if (badWhy !== undefined) {
        note(`tree blob ${t}: ${badWhy}`, s.id);
        continue;
      }
      if (!repo.index.has(t)) {
        note(`tree blob ${t} is in no index`, s.id);
        continue;
      }
      let refs: ReturnType<typeof decodeTree>;
      try {
        refs = decodeTree(await repo.loadBlob(Buffer.from(t, "hex")), t);
      } catch (err) {
        note(`tree blob ${t}: ${(err as Error).message}`, s.id);
        continue;
      }
      for (const r of refs) {
        const id = hex(r.id);
        const e = repo.index.get(id);
        const why = bad.get(id);
        if (e === undefined) note(`blob ${id} is in no index`, s.id);
        else if (why !== undefined) note(`${blobTypeName(e.type)} blob ${id}: ${why}`, s.id);
        else if (e.rawLength !== r.length) note(`blob ${id} has another length than listed`, s.id);
      }
    }
  }
  for (const [what, ss] of affected) report.problems.push({ what, snapshots: [...ss].sort() });
  // Unreferenced damaged blobs are problems too (prune would carry them along).
  const named = new Set<string>();
  for (const p of report.problems)
    for (const m of p.what.matchAll(/[0-9a-f]{64}/g)) named.add(m[0]);
  for (const [id, why] of bad) {
    if (!named.has(id)) report.problems.push({ what: `blob ${id}: ${why}`, snapshots: [] });
  }
  return report;
}

export function assertClean(report: CheckReport): void {
  if (report.problems.length > 0) {
    throw new FerryError(
      "REPO_CORRUPT",
      `check found ${report.problems.length} problem(s) in the repository`,
    );
  }
}
