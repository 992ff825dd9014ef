/**
 * The files driver's restore: extract into staging beside each declared path, then swap
 * atomically. Three steps, each in its own module:
 *
 * 1. restore-staging.ts: the staging trees (`.<name>.ferry-restore-<id>` beside each live
 *    directory, root-owned 0700 while built) and the journal that names them.
 * 2. restore-extract.ts: each archive entry checked and created from held descriptors
 *    (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS, exclusive creation,
 *    owners mapped to the application's, set-id bits cleared).
 * 3. restore-commit.ts: only after ferryd verified the end record, directory metadata,
 *    sync, journal "staged", renameat2(RENAME_EXCHANGE) per root, journal "cleanup", the
 *    old trees removed by identity.
 *
 * This module decides whether the restore may happen at all and ties the steps into the
 * driver's session. Abort removes the staging trees; the live data was never touched.
 */
import { DEFAULT_RESTORE_LIMITS, type RestoreLimits } from "../../core/archive/paths.js";
import { readCaps } from "../../core/caps.js";
import { FerryError } from "../../core/errors.js";
import { failpoint } from "../../core/failpoint.js";
import type { RestoreContext, RestoreResult, RestoreSession } from "../types.js";
import type { FilesConfig } from "./config.js";
import { finishStaging, swapStagingIn } from "./restore-commit.js";
import { Extractor } from "./restore-extract.js";
import { Staging } from "./restore-staging.js";

/** The manifest's `paths` equal the declared paths, byte for byte and in order. */
function samePaths(manifest: unknown, declared: readonly string[]): boolean {
  if (!Array.isArray(manifest) || manifest.length !== declared.length) return false;
  return manifest.every(
    (p, i) =>
      typeof p === "string" && Buffer.from(p, "utf8").equals(Buffer.from(declared[i] as string)),
  );
}

/** Refuses a restore ferryd must not or cannot do, before anything is made. */
function checkAllowed(config: FilesConfig, ctx: RestoreContext): void {
  const myUid = process.getuid?.() ?? -1;
  const caps = readCaps();
  if (config.uid === 0 && (config as { allow_root?: boolean }).allow_root !== true) {
    throw new FerryError(
      "RESTORE_NOT_ALLOWED",
      `${ctx.app}'s owner is root; restoring files owned by root needs allow_root = true in its config`,
    );
  }
  if (myUid !== 0 && !caps.effective.includes("chown") && config.uid !== myUid) {
    throw new FerryError(
      "RESTORE_NOT_ALLOWED",
      `ferryd runs without CAP_CHOWN (user mode), so it can only restore files owned by its own uid ${myUid}, not ${config.owner}`,
    );
  }
  const paths = ctx.manifest.paths;
  if (!samePaths(paths, config.paths)) {
    const shown = JSON.stringify(paths) ?? "nothing";
    throw new FerryError(
      "ARCHIVE_FOREIGN",
      `the archive holds paths ${shown.length > 300 ? `${shown.slice(0, 300)}…` : shown} but ${ctx.app} declares ${JSON.stringify(config.paths)}; it was made for a different application or configuration`,
    );
  }
}

export async function openRestore(
  config: FilesConfig,
  ctx: RestoreContext,
  limits: RestoreLimits = DEFAULT_RESTORE_LIMITS,
): Promise<RestoreSession> {
  checkAllowed(config, ctx);
  const staging = Staging.prepare(config, ctx);
  failpoint("restore-prepared");

  const owner = { uid: config.uid, gid: config.gid };
  const extract = new Extractor(staging.roots, owner, limits, ctx.signal);
  const discard = () => {
    extract.close();
    staging.discard();
  };

  return {
    entry: (h) => extract.entry(h),
    data: (chunk) => extract.data(chunk),
    entryEnd: (h) => extract.entryEnd(h),

    async commit(): Promise<RestoreResult> {
      try {
        extract.close();
        finishStaging(staging.roots, extract.dirs, owner);
      } catch (err) {
        discard();
        throw err;
      }
      const kept = swapStagingIn(staging, ctx);
      return {
        entries: extract.entries,
        bytes: extract.bytes,
        ...(ctx.keepOld === true ? { kept } : {}),
      };
    },

    async abort() {
      discard();
    },
  };
}
