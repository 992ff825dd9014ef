/**
 * The files driver's restore, step 1 of 3: the staging trees and the journal that names them
 * (extraction is restore-extract.ts, the swap restore-commit.ts, the whole restore.ts).
 *
 * Staging: `.<name>.ferry-restore-<id>` in the live directory's parent (same filesystem,
 * so renameat2 can swap), created by ferryd with mode 0700 and owned by root (or ferryd's
 * uid in user mode) until the very end, so the application's user cannot reach into it
 * while it is built. Each parent is held open from here on; everything later is relative
 * to these descriptors. The journal (journal.ts) records every staging directory's dev:ino
 * and the live directory's, so removal and recovery only ever touch those directories.
 */
import { randomBytes } from "node:crypto";
import { closeSync } from "node:fs";
import { basename, dirname } from "node:path";
import { FerryError } from "../../core/errors.js";
import { fsFailure } from "../../core/fs-errors.js";
import { explain, openRoot, RESOLVE_STRICT } from "../../core/safe-fs.js";
import { idOf } from "../../core/safe-remove.js";
import { makePrivateDir } from "../../core/state-dir.js";
import { O_CLOEXEC, O_DIRECTORY, O_NOFOLLOW, O_PATH, openat2, statFd } from "../../core/sys.js";
import type { RestoreContext } from "../types.js";
import type { FilesConfig } from "./config.js";
import {
  type Journal,
  type JournalRoot,
  newRestoreId,
  removeJournal,
  stagingName,
  writeJournal,
} from "./journal.js";
import { idAt, removeStaging } from "./swap.js";

/** One declared path being restored: its held parent and its staging tree. */
export interface StagedRoot {
  path: string;
  parentFd: number;
  name: string;
  staging: string;
  /** The staging directory, held open; -1 once closed. */
  stagingFd: number;
  existed: boolean;
  /** The archive's `data/<i>/` entry itself: the root's mode and times, applied at commit. */
  meta?: { mode: number; sec: number; nsec: number };
}

/** The staging trees of one restore and its journal. */
export class Staging {
  private constructor(
    private readonly ctx: RestoreContext,
    readonly roots: StagedRoot[],
    readonly journal: Journal,
    private readonly stagingOwner: number,
  ) {}

  /**
   * Opens each declared path's parent, records the live directories in the journal, then
   * makes the staging directories and records them. On any failure what was made is
   * removed again and the journal deleted.
   */
  static prepare(config: FilesConfig, ctx: RestoreContext): Staging {
    const id = newRestoreId(randomBytes(6));
    const privilege = ctx.state.options;
    const staging = new Staging(
      ctx,
      [],
      {
        version: 1,
        app: ctx.app,
        id,
        phase: "extracting",
        started: new Date().toISOString(),
        roots: [],
        ...(ctx.keepOld === true ? { keepOld: true } : {}),
      },
      privilege.privileged ? 0 : privilege.uid,
    );
    const { roots, journal } = staging;
    try {
      for (const path of config.paths) {
        const parentFd = openRoot(dirname(path));
        const name = basename(path);
        const root: StagedRoot = {
          path,
          parentFd,
          name,
          staging: stagingName(path, id),
          stagingFd: -1,
          existed: false,
        };
        roots.push(root);
        let oldId: string | undefined;
        if (idAt(parentFd, name) !== undefined) {
          // Must be a real directory, not a link. O_PATH: its mode may keep even its owner
          // out (an earlier archive may have set 0000), which must not block the next restore.
          const fd = openat2(
            parentFd,
            name,
            O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
            0,
            RESOLVE_STRICT,
          );
          oldId = idOf(fd);
          closeSync(fd);
          root.existed = true;
        }
        journal.roots.push({
          path,
          staging: root.staging,
          stagingId: "",
          existed: root.existed,
          ...(oldId === undefined ? {} : { oldId }),
        });
      }
      writeJournal(ctx.state, journal);
      for (const [i, root] of roots.entries()) {
        // Root-owned 0700 at once (when ferryd holds capabilities): neither the backup user
        // (ferryd's own uid) nor the app's owner can enter the tree while it is built, so
        // nothing inside can be swapped between a mkdirat and the chown that follows it.
        try {
          root.stagingFd = makePrivateDir(root.parentFd, root.staging, privilege, {
            existing: "fail",
          });
        } catch (err) {
          // Read-only (not in ReadWritePaths=), not ferryd's to write, or full: the
          // directory and the fix, not a bare "mkdirat …: EROFS".
          throw fsFailure(err, `mkdirat ${root.staging}`, dirname(root.path)) ?? err;
        }
        const st = statFd(root.stagingFd);
        (journal.roots[i] as JournalRoot).stagingId = `${st.dev}:${st.ino}`;
      }
      writeJournal(ctx.state, journal);
    } catch (err) {
      staging.removeAll();
      for (const r of roots) {
        if (r.stagingFd >= 0) closeSync(r.stagingFd);
        closeSync(r.parentFd);
      }
      removeJournal(ctx.state, ctx.app);
      throw err instanceof FerryError
        ? err
        : new FerryError("RESTORE_FAILED", `cannot prepare the restore: ${explain(err)}`, {
            cause: err,
          });
    }
    return staging;
  }

  /** Moves the journal to its next phase (written atomically before the caller goes on). */
  setPhase(phase: Journal["phase"]): void {
    this.journal.phase = phase;
    writeJournal(this.ctx.state, this.journal);
  }

  /** The restore is over (done or undone): the journal goes. */
  removeJournal(): void {
    removeJournal(this.ctx.state, this.ctx.app);
  }

  /**
   * Drops the whole restore: closes the staging trees, removes them (checked by identity),
   * closes the parents and deletes the journal. The live data was never touched.
   */
  discard(): void {
    for (const r of this.roots) {
      if (r.stagingFd >= 0) closeSync(r.stagingFd);
      r.stagingFd = -1;
    }
    this.removeAll();
    for (const r of this.roots) closeSync(r.parentFd);
    this.removeJournal();
  }

  /** Removes every staging tree this restore made, checked by identity (journal.ts). */
  private removeAll(): void {
    for (const [i, r] of this.roots.entries()) {
      const jr = this.journal.roots[i];
      if (jr === undefined || jr.stagingId === "") continue; // never made, or it removed itself
      if (removeStaging(r.parentFd, jr, this.stagingOwner) === "foreign") {
        this.ctx.warnings.push(
          `${r.staging} beside ${r.path} is no longer ferryd's; left in place`,
        );
      }
    }
  }
}
