/**
 * Driving a database driver through its contract the way ferryd does: backup entries →
 * archive bytes (core/archive/writer) → parser (core/archive/reader) → restore session →
 * commit after the end record verified, abort on any failure. Shared by the postgres and
 * mariadb tests.
 */
import { ArchiveParser } from "../../src/core/archive/reader.js";
import { writeArchive } from "../../src/core/archive/writer.js";
import type { Driver, RestoreResult } from "../../src/drivers/types.js";
import { restoreArchive } from "../drivers/suite.js";
import { testState } from "./state.js";

// biome-ignore lint/suspicious/noExplicitAny: drivers carry their own config types
type AnyDriver = Driver<any>;

export async function backupBytes(
  driver: AnyDriver,
  config: unknown,
  opts: { signal?: AbortSignal; warnings?: string[] } = {},
): Promise<Buffer> {
  const warnings = opts.warnings ?? [];
  const ctx = {
    app: "test",
    signal: opts.signal ?? new AbortController().signal,
    warnings,
    state: testState(),
  };
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

// Reading, rebuilding and restoring archives is the shared driver suite's; re-exported under the
// names these tests use.
export { archiveOf as rebuildArchive, payloadOf as readEntries } from "../drivers/suite.js";

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
  // The shared suite's restore path, as ferryd drives it (hooks wrapper included).
  return restoreArchive(
    driver,
    { name: "test", settings: config as Record<string, unknown> },
    bytes,
    opts,
  );
}
