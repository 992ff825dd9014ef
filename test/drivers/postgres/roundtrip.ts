/**
 * Driving a database driver through its contract the way ferryd does: backup entries →
 * archive bytes (core/archive/writer) → parser (core/archive/reader) → restore session →
 * commit after the end record verified, abort on any failure. Shared by the postgres and
 * mariadb tests.
 */
import { ArchiveParser } from "../../../src/core/archive/reader.js";
import { writeArchive } from "../../../src/core/archive/writer.js";
import type { Driver, RestoreResult, RestoreSession } from "../../../src/drivers/types.js";

// biome-ignore lint/suspicious/noExplicitAny: drivers carry their own config types
type AnyDriver = Driver<any>;

export async function backupBytes(
  driver: AnyDriver,
  config: unknown,
  opts: { signal?: AbortSignal; warnings?: string[] } = {},
): Promise<Buffer> {
  const warnings = opts.warnings ?? [];
  const ctx = { app: "test", signal: opts.signal ?? new AbortController().signal, warnings };
  const manifest = {
    app: "test",
    driver: driver.name,
    driver_version: driver.version,
    ferry_version: "test",
    host: "test",
    created: new Date().toISOString(),
    ...driver.manifest(config),
  };
  const chunks: Buffer[] = [];
  for await (const b of writeArchive(manifest, driver.backup(config, ctx), warnings))
    chunks.push(b);
  return Buffer.concat(chunks);
}

// Reading and rebuilding archives is the shared driver suite's; re-exported under the
// names these tests use.
export { archiveOf as rebuildArchive, payloadOf as readEntries } from "../suite.js";

export async function manifestOf(bytes: Buffer): Promise<Record<string, unknown>> {
  let m: Record<string, unknown> | undefined;
  const p = new ArchiveParser({
    manifest: (x) => {
      m = x;
    },
  });
  await p.write(bytes);
  return m as Record<string, unknown>;
}

/**
 * Restores `bytes` through a session as ferryd does. Returns the result, or throws the
 * first failure after the session was aborted.
 */
export async function restoreBytes(
  driver: AnyDriver,
  config: unknown,
  bytes: Buffer,
  opts: { warnings?: string[]; chunk?: number } = {},
): Promise<RestoreResult> {
  const warnings = opts.warnings ?? [];
  const signal = new AbortController().signal;
  let session: RestoreSession | undefined;
  const restore = driver.restore;
  if (restore === undefined) throw new Error(`${driver.name} cannot restore`);
  const parser = new ArchiveParser({
    manifest: async (m) => {
      session = await restore.call(driver, config, {
        app: "test",
        signal,
        warnings,
        manifest: m,
        stateDir: "/nonexistent",
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
  } catch (err) {
    await session?.abort(err);
    throw err;
  }
  if (session === undefined) throw new Error("no manifest");
  return await session.commit();
}
