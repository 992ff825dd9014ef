/**
 * The one driver test suite every driver runs (like restic's backend/test/suite.go). It drives a driver exactly as ferryd does: through
 * `backupWithHooks` → `writeArchive` → archive bytes → `ArchiveParser` →
 * `restoreWithHooks` session → `commit` only after the end record verified, `abort` on any
 * failure. Every test uses hooks that append their name to a log, so "the post hook ran"
 * is checked each time.
 *
 * API:
 *
 * ```ts
 * runDriverSuite({
 *   name: "sqlite",                 // test names are prefixed with it
 *   driver: sqliteDriver,
 *   skip: needsRoot,                // false, or a reason string (e.g. tool not installed)
 *   setup: async () => ({           // called once (in `before`); start servers here
 *     table: {...},                 // the [apps.NAME] table, without `driver`/`hooks`
 *     hookUser: "ferry-sqlite",     // hooks run as this user, who must be able to
 *     hookDir: "/tmp/…",            //   append to files in this directory
 *     seed, mutate, snapshot,       // see SuiteTarget
 *     failing, empty, slow, garbage,
 *     teardown,
 *   }),
 * });
 * ```
 *
 * - `seed()` puts known data in place; `snapshot()` returns a string that is equal for
 *   equal data (a dump, a checksum list); `mutate()` changes the data so a restore shows.
 * - `failing`: table keys that make the helper fail, and text its stderr must contain.
 * - `empty`: table keys that make the helper exit 0 with no data (omit if impossible).
 * - `slow`: table keys (plus optional `block()` returning a release function) that make the
 *   helper run until cancelled; `helperRunning()` says whether it is still alive.
 * - `garbage`: entries of an archive that verifies but whose payload the driver must
 *   refuse at restore (omit for drivers that cannot tell, like `command`).
 *
 * A driver that reads the data itself, without a helper process (files), passes
 * `helper: false`; the helper cases become their equivalents: `failing` is a table whose
 * backup fails (its message must match `stderr`), `emptySource` an empty source that is a
 * valid backup and restores as empty, and `slow.helperRunning()` says whether the backup
 * still holds what it reads (it must let go when cancelled).
 *
 * Tests (each bounded in time):
 * 1. round trip: seed → backup → mutate → restore → snapshot equal to the seeded one;
 *    hooks ran in order pre_backup, post_backup, pre_restore, post_restore;
 * 2. a failing helper fails the backup with its stderr in the message; post hook ran;
 * 3. empty output fails the backup; post hook ran (without a helper: an empty source
 *    backs up and restores as empty);
 * 4. cancel (AbortSignal) mid-helper kills it (without a helper: releases what the backup
 *    held), post hook ran; an early `return()` of the iterator (client disconnect) runs the
 *    post hook too;
 * 5. a corrupted archive (a flipped payload byte), a truncated one, and a verifying one
 *    with a garbage payload are refused and leave the live data exactly as it was; the
 *    post_restore hook ran.
 *
 * Every test also checks that the driver left no spool directory behind (spool.ts), on
 * success and on failure alike.
 */

import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, rmSync } from "node:fs";
import { after, afterEach, before, beforeEach, describe, test } from "node:test";
import { ArchiveParser } from "../../src/core/archive/reader.js";
import { type ArchiveEntry, writeArchive } from "../../src/core/archive/writer.js";
import { FerryError } from "../../src/core/errors.js";
import { backupWithHooks, restoreWithHooks } from "../../src/drivers/hooks.js";
import type { Driver, RestoreResult, RestoreSession } from "../../src/drivers/types.js";
import { asUser, ensureUser } from "../helpers/proc.js";
import { spoolNames, testState } from "../helpers/state.js";

// biome-ignore lint/suspicious/noExplicitAny: drivers carry their own config types
type AnyDriver = Driver<any>;
type Table = Record<string, unknown>;

export interface SuiteTarget {
  table: Table;
  hookUser: string;
  hookDir: string;
  seed(): Promise<void>;
  mutate(): Promise<void>;
  snapshot(): Promise<string>;
  failing?: { table: Table; stderr: RegExp };
  empty?: { table: Table };
  /** Drivers without a helper: an empty source, a way to put data in it, and whether it is empty. */
  emptySource?: { table: Table; fill(): Promise<void>; isEmpty(): Promise<boolean> };
  slow?: {
    table: Table;
    block?(): Promise<() => Promise<void>>;
    helperRunning(): Promise<boolean>;
  };
  /**
   * A well-formed archive payload the driver must refuse (required: every driver has a
   * way to be handed nonsense), and the error codes that refusal may carry.
   */
  garbage: { entries: { path: string; body: Buffer }[]; codes: RegExp };
  /**
   * health(): the message of the configured (reachable) target, and a table whose target
   * is unreachable or missing with the message that must say so.
   */
  health: { ok: RegExp; unhealthy: { table: Table; message: RegExp } };
  teardown?(): Promise<void>;
}

export interface SuiteOptions {
  name: string;
  driver: AnyDriver;
  skip: false | string;
  setup(): Promise<SuiteTarget>;
  /** false for a driver that reads the data itself, without a helper process (see above). */
  helper?: boolean;
}

/** Runs a fixture command as `user`, returning stdout; throws with stderr on failure. */
export function runAs(user: { uid: number; gid: number }, argv: string[], input?: string): string {
  const full = asUser(user, argv);
  return execFileSync(full[0] as string, full.slice(1), {
    input,
    encoding: "utf8",
    timeout: 60_000,
    stdio: ["pipe", "pipe", "pipe"],
    maxBuffer: 256 * 1024 * 1024,
  });
}

export { asUser, ensureUser };

export function hasProgram(name: string): boolean {
  return ["/usr/bin", "/bin", "/usr/sbin", "/usr/local/bin"].some((d) =>
    existsSync(`${d}/${name}`),
  );
}

/** Polls `cond` until true or `ms` passed. */
export async function waitFor(
  cond: () => boolean | Promise<boolean>,
  ms: number,
): Promise<boolean> {
  const deadline = Date.now() + ms;
  for (;;) {
    if (await cond()) return true;
    if (Date.now() > deadline) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The validated settings of an app table (what ferryd keeps as `app.settings`). */
export function settingsOf(driver: AnyDriver, table: Table): Record<string, unknown> {
  const r = driver.schema.safeParse({ driver: driver.name, ...table });
  if (!r.success) throw new Error(`test config invalid: ${JSON.stringify(r.error.issues)}`);
  return r.data as Record<string, unknown>;
}

function manifestFor(driver: AnyDriver, app: string, settings: unknown): Record<string, unknown> {
  return {
    app,
    driver: driver.name,
    driver_type: driver.type,
    driver_version: driver.version,
    ferry_version: "test",
    host: "test",
    created: new Date().toISOString(),
    ...driver.manifest(settings),
  };
}

/** A backup through the hooks wrapper into archive bytes, as ferryd streams it. */
export async function backupArchive(
  driver: AnyDriver,
  app: { name: string; settings: Record<string, unknown> },
  opts: { signal?: AbortSignal; warnings?: string[]; onChunk?: () => void } = {},
): Promise<Buffer> {
  const warnings = opts.warnings ?? [];
  const ctx = {
    app: app.name,
    signal: opts.signal ?? new AbortController().signal,
    warnings,
    state: testState(),
  };
  const chunks: Buffer[] = [];
  const archive = writeArchive(
    manifestFor(driver, app.name, app.settings),
    backupWithHooks(app, driver, ctx),
    warnings,
  );
  try {
    for await (const b of archive) {
      chunks.push(b);
      opts.onChunk?.();
    }
  } finally {
    await archive.return(undefined as never).catch(() => {});
  }
  return Buffer.concat(chunks);
}

/** Restores archive bytes through the hooks wrapper, as ferryd does. */
export async function restoreArchive(
  driver: AnyDriver,
  app: { name: string; settings: Record<string, unknown> },
  bytes: Buffer,
  opts: { warnings?: string[]; chunk?: number } = {},
): Promise<RestoreResult> {
  const warnings = opts.warnings ?? [];
  const signal = new AbortController().signal;
  let session: RestoreSession | undefined;
  const parser = new ArchiveParser({
    manifest: async (m) => {
      session = await restoreWithHooks(app, driver, {
        app: app.name,
        signal,
        warnings,
        manifest: m,
        state: testState(),
      });
    },
    entry: (h) => (session as RestoreSession).entry(h),
    data: (c) => (session as RestoreSession).data(c),
    entryEnd: (h) => (session as RestoreSession).entryEnd(h),
  });
  const step = opts.chunk ?? 64 * 1024;
  try {
    for (let off = 0; off < bytes.length; off += step) {
      await parser.write(bytes.subarray(off, off + step));
    }
    parser.finish();
    if (session === undefined) throw new Error("no manifest");
  } catch (err) {
    await session?.abort(err);
    throw err;
  }
  return await session.commit();
}

/** Payload entries of archive bytes. */
export async function payloadOf(bytes: Buffer): Promise<{ path: string; body: Buffer }[]> {
  const out: { path: string; body: Buffer }[] = [];
  let cur: Buffer[] = [];
  const p = new ArchiveParser({
    entry: () => {
      cur = [];
    },
    data: (c) => {
      cur.push(Buffer.from(c));
    },
    entryEnd: (h) => {
      out.push({ path: h.path, body: Buffer.concat(cur) });
    },
  });
  await p.write(bytes);
  p.finish();
  return out;
}

/** A valid archive (fresh end record) holding the given entries. */
export async function archiveOf(
  manifest: Record<string, unknown>,
  entries: { path: string; body: Buffer }[],
): Promise<Buffer> {
  async function* gen(): AsyncGenerator<ArchiveEntry> {
    for (const e of entries) {
      yield {
        header: {
          path: e.path,
          type: "file",
          mode: 0o600,
          uid: 0,
          gid: 0,
          uname: "",
          gname: "",
          size: e.body.length,
          mtimeSec: 0,
          mtimeNsec: 0,
          linkpath: "",
        },
        body: e.body,
      };
    }
  }
  const chunks: Buffer[] = [];
  for await (const b of writeArchive(manifest, gen())) chunks.push(b);
  return Buffer.concat(chunks);
}

function spools(): string[] {
  return spoolNames();
}

const HOOKS = ["pre_backup", "post_backup", "pre_restore", "post_restore"] as const;

export function runDriverSuite(opts: SuiteOptions): void {
  describe(`${opts.name}: shared driver suite`, { skip: opts.skip, timeout: 120_000 }, () => {
    let t: SuiteTarget;
    let hookLog: string;
    let n = 0;

    before(async () => {
      t = await opts.setup();
    });
    after(async () => {
      await t?.teardown?.();
    });

    /** An app with hooks logging to a fresh file; `extra` overrides table keys. */
    const app = (extra: Table = {}) => {
      hookLog = `${t.hookDir}/hooks-${++n}.log`;
      const hooks: Record<string, unknown> = { user: t.hookUser, timeout: 30 };
      for (const h of HOOKS) hooks[h] = ["sh", "-c", 'echo "$FERRY_HOOK" >> "$0"', hookLog];
      const table = { ...t.table, ...extra, restore: true, hooks };
      return { name: `${opts.name}-app`, settings: settingsOf(opts.driver, table) };
    };
    const hooksRun = (): string[] =>
      existsSync(hookLog) ? readFileSync(hookLog, "utf8").trim().split("\n") : [];

    // Spool directories left behind by a test (every test ends with none of its own).
    let spoolsBefore = new Set<string>();
    beforeEach(() => {
      spoolsBefore = new Set(spools());
    });
    afterEach(() => {
      const left = spools().filter((d) => !spoolsBefore.has(d));
      assert.deepEqual(left, [], "spool directories were left behind");
    });

    test("health: ok with what was found; an unreachable target is reported, not thrown", async () => {
      await t.seed();
      const good = await opts.driver.health(settingsOf(opts.driver, t.table) as never);
      assert.deepEqual(Object.keys(good).sort(), ["message", "ok"]);
      assert.equal(good.ok, true, good.message);
      assert.match(good.message, t.health.ok);
      const bad = await opts.driver.health(
        settingsOf(opts.driver, { ...t.table, ...t.health.unhealthy.table }) as never,
      );
      assert.equal(bad.ok, false, `an unreachable target reported healthy: ${bad.message}`);
      assert.match(bad.message, t.health.unhealthy.message);
    });

    test("round trip: restore makes the data equal to the backup; hooks run around both", async () => {
      await t.seed();
      const before = await t.snapshot();
      const a = app();
      const warnings: string[] = [];
      const bytes = await backupArchive(opts.driver, a, { warnings });
      assert.deepEqual(warnings, []);
      await t.mutate();
      assert.notEqual(await t.snapshot(), before, "mutate() must change the data");
      await restoreArchive(opts.driver, a, bytes, { warnings });
      assert.equal(await t.snapshot(), before);
      assert.deepEqual(hooksRun(), [...HOOKS]);
      assert.deepEqual(warnings, []);
    });

    const helper = opts.helper !== false;

    test(
      helper
        ? "a failing helper fails the backup with its stderr; the post hook runs"
        : "a failing backup (an unreadable path) says why; the post hook runs",
      async (ctx) => {
        if (t.failing === undefined) return ctx.skip("no way to make this helper fail");
        const a = app(t.failing.table);
        await assert.rejects(backupArchive(opts.driver, a), (err: unknown) => {
          assert.ok(err instanceof FerryError, String(err));
          assert.match(err.message, (t.failing as { stderr: RegExp }).stderr);
          return true;
        });
        assert.deepEqual(hooksRun(), ["pre_backup", "post_backup"]);
      },
    );

    if (helper) {
      test("a helper that yields no data fails the backup", async (ctx) => {
        if (t.empty === undefined) return ctx.skip("this driver's helper cannot be empty");
        const a = app(t.empty.table);
        await assert.rejects(backupArchive(opts.driver, a), (err: unknown) => {
          assert.ok(err instanceof FerryError, String(err));
          assert.equal(err.code, "HELPER_FAILED");
          assert.match(err.message, /no data|no output/);
          return true;
        });
        assert.deepEqual(hooksRun(), ["pre_backup", "post_backup"]);
      });
    } else {
      // In place of "a helper that yields no data fails the backup" (not registered, so
      // not a skip): without a helper, no data is a valid backup.
      test("an empty source is a valid backup and restores as empty", async () => {
        const e = t.emptySource;
        assert.ok(e !== undefined, "a driver without a helper must give emptySource");
        const a = app(e.table);
        const warnings: string[] = [];
        const bytes = await backupArchive(opts.driver, a, { warnings });
        await e.fill();
        assert.equal(await e.isEmpty(), false, "fill() must put data in the source");
        await restoreArchive(opts.driver, a, bytes, { warnings });
        assert.equal(await e.isEmpty(), true);
        assert.deepEqual(hooksRun(), [...HOOKS]);
        assert.deepEqual(warnings, []);
      });
    }

    test(
      helper
        ? "cancel mid-helper kills the helper and runs the post hook"
        : "cancel mid-backup lets go of what the backup held and runs the post hook",
      async (ctx) => {
        const slow = t.slow;
        if (slow === undefined) return ctx.skip("no slow helper for this driver");
        const release = (await slow.block?.()) ?? (async () => {});
        try {
          const a = app(slow.table);
          const ac = new AbortController();
          const started = Date.now();
          const p = backupArchive(opts.driver, a, { signal: ac.signal });
          p.catch(() => {});
          assert.ok(await waitFor(() => slow.helperRunning(), 15_000), "the helper never started");
          ac.abort(new FerryError("CANCELLED", "the client disconnected"));
          await assert.rejects(p);
          assert.ok(Date.now() - started < 30_000, "cancel took too long");
          assert.ok(
            await waitFor(async () => !(await slow.helperRunning()), 10_000),
            "the helper is still running after cancel",
          );
          assert.deepEqual(hooksRun(), ["pre_backup", "post_backup"]);
        } finally {
          await release();
        }
      },
    );

    test("an early return of the entries (client disconnect) runs the post hook", async () => {
      await t.seed();
      const a = app();
      const it = backupWithHooks(a, opts.driver, {
        app: a.name,
        signal: new AbortController().signal,
        warnings: [],
        state: testState(),
      })[Symbol.asyncIterator]();
      const first = await it.next();
      assert.equal(first.done, false);
      assert.deepEqual(hooksRun(), ["pre_backup"]);
      await it.return?.(undefined);
      assert.deepEqual(hooksRun(), ["pre_backup", "post_backup"]);
    });

    test("failed restores (corrupted, truncated, garbage) leave the live data intact", async () => {
      await t.seed();
      const a = app();
      const bytes = await backupArchive(opts.driver, a);
      await t.mutate();
      const live = await t.snapshot();

      // A flipped byte in the payload: the end record no longer matches.
      const payload = await payloadOf(bytes);
      const firstBody = payload.find((e) => e.body.length > 0);
      assert.ok(firstBody !== undefined);
      const at = bytes.indexOf(firstBody.body.subarray(0, Math.min(64, firstBody.body.length)));
      assert.ok(at > 0);
      const corrupted = Buffer.from(bytes);
      const flip = at + Math.min(10, firstBody.body.length - 1);
      corrupted[flip] = (corrupted[flip] as number) ^ 0xff;
      await assert.rejects(restoreArchive(opts.driver, a, corrupted), (err: unknown) => {
        assert.ok(err instanceof FerryError);
        assert.match(err.code, /ARCHIVE_/);
        return true;
      });
      assert.equal(await t.snapshot(), live, "a corrupted archive changed the live data");
      assert.deepEqual(hooksRun().slice(-2), ["pre_restore", "post_restore"]);

      // Cut short before the end record: refused as truncated, not some other failure.
      const truncated = bytes.subarray(0, bytes.length - 2048);
      await assert.rejects(restoreArchive(opts.driver, a, truncated), (err: unknown) => {
        assert.ok(err instanceof FerryError, String(err));
        assert.equal(err.code, "ARCHIVE_TRUNCATED", err.message);
        return true;
      });
      assert.equal(await t.snapshot(), live, "a truncated archive changed the live data");

      // A well-formed archive whose payload the driver must refuse.
      const manifest = manifestFor(opts.driver, a.name, a.settings);
      const garbage = await archiveOf(manifest, t.garbage.entries);
      await assert.rejects(restoreArchive(opts.driver, a, garbage), (err: unknown) => {
        assert.ok(err instanceof FerryError, String(err));
        assert.match(err.code, t.garbage.codes, err.message);
        return true;
      });
      assert.equal(await t.snapshot(), live, "a garbage payload changed the live data");
      assert.equal(hooksRun().filter((h) => h === "post_restore").length, 3);
    });
  });
}

/** Removes a test directory, ignoring errors. */
export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}
