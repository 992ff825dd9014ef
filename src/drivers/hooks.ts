/**
 * Per-application hooks around a driver's backup and restore (quiesce/unquiesce,
 * freeze/thaw, stop/start). ferryd calls these wrappers instead of the driver directly.
 *
 * Backup: `pre_backup` runs when the archive asks for the first entry, before the driver
 * starts. `post_backup` runs once the pre hook was started (even if it failed: a freeze
 * that half-happened must be thawed), whatever follows: the driver's success, a helper
 * failure, a timeout, a cancel, or the consumer returning the iterator early (what ferryd
 * does when the client disconnects mid-stream). The post hook is not tied to the request's
 * AbortSignal, only to its own timeout, so a cancel cannot skip it.
 *
 * Restore: `pre_restore` runs before the driver's restore session is opened (so nothing is
 * staged while it fails); `post_restore` runs after `commit` or `abort`, or when opening
 * the session failed.
 *
 * Failure policy of post hooks. If the work itself failed, the work's error is thrown with
 * the hook's failure appended to its message. If the work succeeded, the data is good
 * (the archive is complete and consistent; the restore is live), so the hook's failure does
 * not throw it away: it is pushed to `ctx.warnings` as `post_backup hook failed: …`, which
 * ends up in the archive's end record and ferryd's log. A failing pre hook fails the work.
 *
 * Hooks run through runHelper: as `hooks.user` (default the application's own user), no
 * capabilities, no shell, a clean environment plus FERRY_APP and FERRY_HOOK, stdout
 * discarded, stderr kept for the message, `hooks.timeout` seconds.
 */
import type { ArchiveEntry } from "../core/archive/writer.js";
import { FerryError, toFerryError } from "../core/errors.js";
import { runHelper } from "../core/spawn.js";
import type { HookName, ResolvedHooks } from "./common.js";
import type { Driver, DriverContext, RestoreContext, RestoreSession } from "./types.js";

export interface HookedApp {
  name: string;
  settings: Readonly<Record<string, unknown>>;
}

function hooksOf(app: HookedApp): ResolvedHooks | undefined {
  return app.settings.hooks as ResolvedHooks | undefined;
}

/** Runs one hook if configured; resolves when it exited 0, else throws with its stderr. */
export async function runHook(
  app: HookedApp,
  which: HookName,
  signal?: AbortSignal,
): Promise<void> {
  const hooks = hooksOf(app);
  const argv = hooks?.[which];
  if (hooks === undefined || argv === undefined) return;
  const h = runHelper({
    argv,
    user: hooks.user,
    env: { FERRY_APP: app.name, FERRY_HOOK: which },
    stdout: "ignore",
    timeoutMs: hooks.timeout * 1000,
    label: `${which} hook of ${app.name}`,
    ...(signal === undefined ? {} : { signal }),
  });
  await h.done;
}

/** The work's error, with a post hook's failure added to its message. */
function withHookFailure(err: unknown, hookErr: unknown): FerryError {
  const e = toFerryError(err);
  return new FerryError(e.code, `${e.message}; and then ${toFerryError(hookErr).message}`, {
    cause: err,
  });
}

function hookWarning(which: HookName, err: unknown): string {
  return `${which} hook failed: ${toFerryError(err).message}`;
}

/**
 * The driver's backup entries, with `pre_backup` before the first and `post_backup`
 * after the last (or after any failure or early return).
 */
export async function* backupWithHooks(
  app: HookedApp,
  // biome-ignore lint/suspicious/noExplicitAny: each driver carries its own config type
  driver: Driver<any>,
  ctx: DriverContext,
): AsyncGenerator<ArchiveEntry, void, undefined> {
  let failure: unknown;
  let failed = false;
  try {
    await runHook(app, "pre_backup", ctx.signal);
    yield* driver.backup(app.settings, ctx);
  } catch (err) {
    failed = true;
    failure = err;
  } finally {
    // Also reached on an early `return()` from the consumer, with neither flag set, and
    // in that case the consumer has already given up on the archive: a hook failure can
    // only be reported as a warning.
    try {
      await runHook(app, "post_backup");
    } catch (hookErr) {
      if (failed) failure = withHookFailure(failure, hookErr);
      else ctx.warnings.push(hookWarning("post_backup", hookErr));
    }
  }
  if (failed) throw failure;
}

/**
 * The driver's restore session, with `pre_restore` before it is opened and
 * `post_restore` after it is committed or aborted.
 */
export async function restoreWithHooks(
  app: HookedApp,
  // biome-ignore lint/suspicious/noExplicitAny: each driver carries its own config type
  driver: Driver<any>,
  ctx: RestoreContext,
): Promise<RestoreSession> {
  if (driver.restore === undefined) {
    throw new FerryError("RESTORE_NOT_ALLOWED", `the ${driver.name} driver cannot restore`);
  }
  let posted = false;
  const post = async (workErr?: unknown): Promise<void> => {
    if (posted) return;
    posted = true;
    try {
      await runHook(app, "post_restore");
    } catch (hookErr) {
      if (workErr !== undefined) throw withHookFailure(workErr, hookErr);
      ctx.warnings.push(hookWarning("post_restore", hookErr));
    }
  };

  let session: RestoreSession;
  try {
    await runHook(app, "pre_restore", ctx.signal);
    session = await driver.restore(app.settings, ctx);
  } catch (err) {
    await post(err);
    throw err;
  }
  return {
    entry: (h) => session.entry(h),
    data: (chunk) => session.data(chunk),
    entryEnd: (h) => session.entryEnd(h),
    async commit() {
      let result: Awaited<ReturnType<RestoreSession["commit"]>>;
      try {
        result = await session.commit();
      } catch (err) {
        await post(err);
        throw err;
      }
      await post();
      return result;
    },
    async abort(reason) {
      try {
        await session.abort(reason);
      } finally {
        await post().catch(() => {});
      }
    },
  };
}
