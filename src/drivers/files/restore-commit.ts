/**
 * The files driver's restore, step 3 of 3: making the staged trees live, only after ferryd
 * verified the archive's end record.
 *
 * Directory modes and times are applied deepest first, the filesystem is synced, the
 * journal says "staged", each root is swapped in with renameat2(RENAME_EXCHANGE), the
 * journal says "cleanup", the old trees are removed (symlink-safe, by identity) and the
 * journal is deleted. A failure before the swap, or during it (what was swapped is swapped
 * back), discards the staging: the live data is as it was. A crash anywhere is finished or
 * undone by recovery (journal.ts).
 */
import { closeSync, fchmodSync, fchownSync, fsyncSync } from "node:fs";
import { dirname } from "node:path";
import { unsafe } from "../../core/archive/paths.js";
import { FerryError } from "../../core/errors.js";
import { failpoint } from "../../core/failpoint.js";
import { explain, isDirMode, RESOLVE_STRICT } from "../../core/safe-fs.js";
import {
  DT_DIR,
  O_CLOEXEC,
  O_DIRECTORY,
  O_RDONLY,
  openat2,
  RENAME_EXCHANGE,
  readDirBatch,
  renameAt2,
  rewindDir,
  setTimesFd,
  statAt,
  statFd,
  syncFs,
} from "../../core/sys.js";
import type { RestoreContext } from "../types.js";
import { type JournalRoot, keptName } from "./journal.js";
import type { StagedRoot, Staging } from "./restore-staging.js";
import { keepOldTree, removeOldTree, swapIn } from "./swap.js";

/**
 * Directory modes and times, applied at commit: 22 bytes per directory in fixed-size
 * typed-array chunks (no growth copies), keyed by inode number. Nothing else is kept per
 * entry: parents, duplicates and hardlink targets are looked up in the staging tree itself,
 * which only this restore writes to. See README, "Limits".
 */
export class DirTable {
  static readonly CHUNK = 1 << 16;
  private ino: Float64Array[] = [];
  private sec: Float64Array[] = [];
  private nsec: Uint32Array[] = [];
  private mode: Uint16Array[] = [];
  size = 0;

  add(ino: bigint, mode: number, sec: number, nsec: number): void {
    const c = this.size >>> 16;
    const i = this.size & 0xffff;
    if (i === 0) {
      this.ino.push(new Float64Array(DirTable.CHUNK));
      this.sec.push(new Float64Array(DirTable.CHUNK));
      this.nsec.push(new Uint32Array(DirTable.CHUNK));
      this.mode.push(new Uint16Array(DirTable.CHUNK));
    }
    (this.ino[c] as Float64Array)[i] = Number(ino);
    (this.sec[c] as Float64Array)[i] = sec;
    (this.nsec[c] as Uint32Array)[i] = nsec;
    (this.mode[c] as Uint16Array)[i] = mode;
    this.size++;
  }

  private inoAt(k: number): number {
    return (this.ino[k >>> 16] as Float64Array)[k & 0xffff] as number;
  }

  /** Sorts an index by inode (4 bytes per directory) so `find` can search it. */
  index(): Uint32Array {
    const order = new Uint32Array(this.size);
    for (let k = 0; k < this.size; k++) order[k] = k;
    order.sort((a, b) => this.inoAt(a) - this.inoAt(b));
    return order;
  }

  find(order: Uint32Array, ino: bigint): { mode: number; sec: number; nsec: number } | undefined {
    const want = Number(ino);
    let lo = 0;
    let hi = order.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const k = order[mid] as number;
      const v = this.inoAt(k);
      if (v === want) {
        const c = k >>> 16;
        const i = k & 0xffff;
        return {
          mode: (this.mode[c] as Uint16Array)[i] as number,
          sec: (this.sec[c] as Float64Array)[i] as number,
          nsec: (this.nsec[c] as Uint32Array)[i] as number,
        };
      }
      if (v < want) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }
}

/**
 * Applies directory modes and times below `rootFd`, children before parents (a parent's
 * final mode may forbid entering it), reading the tree a batch of names at a time so that
 * a directory with millions of entries is never listed into memory at once.
 */
function applyDirMeta(rootFd: number, table: DirTable): void {
  if (table.size === 0) return;
  const order = table.index();
  interface Frame {
    fd: number;
    pending: Buffer[];
  }
  const buf = Buffer.alloc(16 * 1024);
  const subdirs = (fd: number): Buffer[] => {
    const out: Buffer[] = [];
    for (;;) {
      const batch = readDirBatch(fd, buf);
      if (batch.length === 0) return out;
      for (const d of batch) {
        if (d.type === DT_DIR || (d.type === 0 && isDirMode(statAt(fd, d.name).mode)))
          out.push(d.name);
      }
      if (out.length > 0) return out;
    }
  };
  rewindDir(rootFd); // it may have been listed before (an emptiness check when made)
  const stack: Frame[] = [{ fd: rootFd, pending: subdirs(rootFd) }];
  try {
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as Frame;
      const next = top.pending.pop();
      if (next !== undefined) {
        const fd = openat2(top.fd, next, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, RESOLVE_STRICT);
        stack.push({ fd, pending: [] });
        (stack[stack.length - 1] as Frame).pending = subdirs(fd);
        continue;
      }
      top.pending = subdirs(top.fd);
      if (top.pending.length > 0) continue;
      stack.pop();
      if (top.fd === rootFd) continue;
      try {
        const meta = table.find(order, statFd(top.fd).ino);
        if (meta === undefined) {
          throw new FerryError(
            "RESTORE_FAILED",
            "the staging tree holds a directory the archive did not create",
          );
        }
        fchmodSync(top.fd, meta.mode);
        setTimesFd(top.fd, meta.sec, meta.nsec);
      } finally {
        closeSync(top.fd);
      }
    }
  } finally {
    for (const f of stack) if (f.fd !== rootFd) closeSync(f.fd);
  }
}

/**
 * Completes each staging tree: every root directory arrived, directory metadata applied
 * (children before parents, so modes and times stick), the roots owned by the application,
 * the filesystem synced. Throws if the archive left a root out; touches no live data.
 */
export function finishStaging(
  roots: StagedRoot[],
  dirs: DirTable[],
  owner: { uid: number; gid: number },
): void {
  for (const [i, r] of roots.entries()) {
    if (r.meta === undefined) throw unsafe(`the archive has no data/${i}/ directory for ${r.path}`);
  }
  for (const [i, r] of roots.entries()) applyDirMeta(r.stagingFd, dirs[i] as DirTable);
  for (const r of roots) {
    const m = r.meta as NonNullable<StagedRoot["meta"]>;
    fchownSync(r.stagingFd, owner.uid, owner.gid);
    fchmodSync(r.stagingFd, m.mode);
    setTimesFd(r.stagingFd, m.sec, m.nsec);
    syncFs(r.stagingFd);
    fsyncSync(r.stagingFd);
  }
}

/**
 * Swaps the finished staging trees in (journal "staged" first, "cleanup" after), then
 * removes the old trees (or, with `keepOld`, renames each to `keptName` beside the live
 * one, returning those paths) and the journal. A failed swap puts back what was swapped
 * and discards the staging.
 */
export function swapStagingIn(staging: Staging, ctx: RestoreContext): string[] {
  const { roots, journal } = staging;
  failpoint("restore-synced");
  staging.setPhase("staged");
  failpoint("restore-staged");

  const swapped: StagedRoot[] = [];
  try {
    for (const [i, r] of roots.entries()) {
      swapIn(r.parentFd, journal.roots[i] as JournalRoot);
      swapped.push(r);
      fsyncSync(r.parentFd);
      failpoint(`restore-swapped-${i}`);
    }
  } catch (err) {
    // Put back what was swapped, then drop the staging: the live data is as it was.
    for (const r of swapped.reverse()) {
      if (r.existed) renameAt2(r.parentFd, r.staging, r.parentFd, r.name, RENAME_EXCHANGE);
      else renameAt2(r.parentFd, r.name, r.parentFd, r.staging, 0);
    }
    staging.discard();
    throw new FerryError("RESTORE_FAILED", `could not swap the restored data in: ${explain(err)}`, {
      cause: err,
    });
  }
  staging.setPhase("cleanup");
  failpoint("restore-before-cleanup");
  const kept: string[] = [];
  for (const [i, r] of roots.entries()) {
    closeSync(r.stagingFd);
    r.stagingFd = -1;
    try {
      if (journal.keepOld === true) {
        const name = keptName(r.path, journal.id);
        const k = keepOldTree(r.parentFd, journal.roots[i] as JournalRoot, name);
        if (k === "kept") kept.push(`${dirname(r.path)}/${name}`);
        if (k === "foreign") {
          ctx.warnings.push(
            `the old data of ${r.path} was replaced before it could be kept; left at ${r.staging}`,
          );
        }
      } else if (removeOldTree(r.parentFd, journal.roots[i] as JournalRoot) === "foreign") {
        ctx.warnings.push(
          `the old data of ${r.path} was replaced before it could be removed; left at ${r.staging}`,
        );
      }
    } catch (err) {
      ctx.warnings.push(
        `could not remove the old data of ${r.path} (left at ${r.staging}): ${explain(err)}`,
      );
    }
    closeSync(r.parentFd);
  }
  staging.removeJournal();
  return kept;
}
