/**
 * `ferry prune` (under an exclusive lock): removes what no snapshot uses and repacks
 * mostly-empty packs. The order keeps the repository valid at every step, so a kill -9
 * anywhere leaves one that `check` passes (docs/repository.md, "Prune"):
 *
 * 1. find the blobs the snapshots use (walking their trees);
 * 2. copy the used blobs of packs that are mostly unused into new packs (blobs are
 *    copied sealed: their additional data is their id, not their place);
 * 3. write new index files for every pack that stays and every new pack;
 * 4. remove the old index files — from here on no index names a pack about to go;
 * 5. remove the packs no longer indexed, and leftovers of crashed writers.
 */
import { FerryError } from "../core/errors.js";
import { failpoint } from "../core/failpoint.js";
import { sha256 } from "./crypto.js";
import { decodeTree, encodeIndex, hex, type IndexEntry } from "./format.js";
import { PACK_TARGET } from "./packs.js";
import type { Repository } from "./repository.js";

/** A pack whose unused share is above this is repacked. */
const REPACK_UNUSED = 0.5;
const PACKS_PER_INDEX = 256;

export interface PruneReport {
  snapshots: number;
  usedBlobs: number;
  packsBefore: number;
  packsRemoved: number;
  packsRepacked: number;
  packsWritten: number;
  bytesBefore: number;
  bytesRemoved: number;
  unindexedRemoved: number;
  dryRun: boolean;
}

type Entry = IndexEntry & { id: string };

export async function prune(repo: Repository, opts: { dryRun: boolean }): Promise<PruneReport> {
  const fp = failpoint;
  const snaps = await repo.listSnapshots();
  const indexFilesBefore = (await repo.backend.list("index")).map((f) => f.name);
  for (const n of indexFilesBefore) await repo.loadIndexFile(n);

  const used = new Set<string>();
  for (const s of snaps) {
    for (const t of [...s.meta_tree, ...s.data_tree]) {
      used.add(t);
      for (const r of decodeTree(await repo.loadBlob(Buffer.from(t, "hex")), t)) {
        const id = hex(r.id);
        if (!repo.index.has(id)) {
          throw new FerryError(
            "REPO_CORRUPT",
            `snapshot ${s.id} names blob ${id}, which is in no index: run 'ferry check'; prune stops here and removes nothing`,
          );
        }
        used.add(id);
      }
    }
  }

  const packsOnDisk = new Map((await repo.backend.list("packs")).map((p) => [p.name, p.size]));
  const byPack = new Map<string, Entry[]>();
  for (const [id, e] of repo.allEntries()) {
    if (!packsOnDisk.has(e.pack)) {
      throw new FerryError(
        "REPO_CORRUPT",
        `the index names pack ${e.pack}, which is missing: run 'ferry check'; prune removes nothing`,
      );
    }
    let l = byPack.get(e.pack);
    if (l === undefined) {
      l = [];
      byPack.set(e.pack, l);
    }
    l.push({ ...e, id });
  }

  // Which copy of each used blob stays: the first one seen in a pack that is kept.
  const keepPacks = new Set<string>();
  const repack = new Set<string>();
  const removePacks = new Set<string>();
  for (const [pack, entries] of byPack) {
    const size = packsOnDisk.get(pack) ?? 0;
    let usedBytes = 0;
    for (const e of entries) if (used.has(e.id)) usedBytes += e.length;
    if (usedBytes === 0) removePacks.add(pack);
    else if (1 - usedBytes / size > REPACK_UNUSED) repack.add(pack);
    else keepPacks.add(pack);
  }
  const placed = new Set<string>();
  for (const p of keepPacks) for (const e of byPack.get(p) ?? []) placed.add(e.id);
  const unindexed = [...packsOnDisk.keys()].filter((p) => !byPack.has(p));
  const report: PruneReport = {
    snapshots: snaps.length,
    usedBlobs: used.size,
    packsBefore: packsOnDisk.size,
    packsRemoved: removePacks.size + repack.size + unindexed.length,
    packsRepacked: repack.size,
    packsWritten: 0,
    bytesBefore: [...packsOnDisk.values()].reduce((a, b) => a + b, 0),
    bytesRemoved: 0,
    unindexedRemoved: unindexed.length,
    dryRun: opts.dryRun,
  };
  for (const p of [...removePacks, ...repack, ...unindexed])
    report.bytesRemoved += packsOnDisk.get(p) ?? 0;
  if (opts.dryRun) return report;

  // 2. Repack.
  const newPacks: { pack: string; entries: (IndexEntry & { id: Buffer })[] }[] = [];
  let parts: Buffer[] = [];
  let partEntries: {
    type: number;
    flags: number;
    id: Buffer;
    length: number;
    rawLength: number;
  }[] = [];
  let partSize = 0;
  const writeNew = async () => {
    if (partEntries.length === 0) return;
    const written = await repo.writeRawPack(parts, partEntries);
    newPacks.push(written);
    report.packsWritten++;
    parts = [];
    partEntries = [];
    partSize = 0;
    fp("repo-prune-after-pack");
  };
  for (const pack of repack) {
    const data = await repo.backend.read("packs", pack);
    if (hex(sha256(data)) !== pack) {
      throw new FerryError(
        "REPO_CORRUPT",
        `pack ${pack} does not match its name; prune removes nothing (run 'ferry check --read-data')`,
      );
    }
    for (const e of byPack.get(pack) ?? []) {
      if (!used.has(e.id) || placed.has(e.id)) continue;
      placed.add(e.id);
      const sealed = data.subarray(e.offset, e.offset + e.length);
      // Check the blob before carrying it on.
      await repo.openBlob(Buffer.from(e.id, "hex"), e, sealed);
      parts.push(Buffer.from(sealed));
      partEntries.push({
        type: e.type,
        flags: e.flags,
        id: Buffer.from(e.id, "hex"),
        length: e.length,
        rawLength: e.rawLength,
      });
      partSize += e.length;
      if (partSize >= PACK_TARGET) await writeNew();
    }
  }
  await writeNew();

  // 3. New index files: every pack that stays, as its own header says, and the new packs.
  const all: { pack: string; entries: (IndexEntry & { id: Buffer })[] }[] = [...newPacks];
  for (const pack of keepPacks) {
    all.push({
      pack,
      entries: uniqueById(byPack.get(pack) ?? []).map((e) => ({
        ...e,
        id: Buffer.from(e.id, "hex"),
      })),
    });
  }
  const newIndexFiles = new Set<string>();
  for (let i = 0; i < all.length; i += PACKS_PER_INDEX) {
    newIndexFiles.add(
      await repo.writeFile("index", encodeIndex(all.slice(i, i + PACKS_PER_INDEX))),
    );
    fp("repo-prune-after-index");
  }
  // 4. Old index files.
  for (const n of indexFilesBefore) {
    if (!newIndexFiles.has(n)) {
      await repo.backend.remove("index", n);
      fp("repo-prune-after-index-remove");
    }
  }
  // 5. Packs.
  for (const p of [...removePacks, ...repack, ...unindexed]) {
    await repo.backend.remove("packs", p);
    fp("repo-prune-after-pack-remove");
  }
  const local = repo.backend as { removeTemporaries?: (ms: number) => Promise<number> };
  await local.removeTemporaries?.(60 * 60 * 1000);
  return report;
}

function uniqueById(entries: Entry[]): Entry[] {
  const seen = new Set<string>();
  return entries.filter((e) => !seen.has(e.id) && seen.add(e.id) !== undefined);
}
