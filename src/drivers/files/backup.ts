/**
 * The files driver's backup: every declared root walked through held descriptors
 * (walk.ts); each regular file goes to the archive writer as its open descriptor, which
 * the writer reads straight into its output blocks (src/core/archive/writer.ts). An
 * unreadable root fails the request before any byte is sent.
 */
import { closeSync } from "node:fs";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { openRoot } from "../../core/safe-fs.js";
import type { DriverContext } from "../types.js";
import type { FilesConfig } from "./config.js";
import { sinceMarker } from "./since-index.js";
import { type PlannedEntry, type Unread, walkRoot } from "./walk.js";

function* walkAll(
  config: FilesConfig,
  ctx: DriverContext,
  unread?: Unread,
): Generator<PlannedEntry> {
  for (const [i, path] of config.paths.entries()) {
    // Hardlinks are kept within one declared path: across two, a restore could not
    // recreate them when the paths are on different filesystems.
    const links = new Map<string, string>();
    const fd = openRoot(path);
    try {
      yield* walkRoot(fd, `data/${i}/`, ctx.warnings, links, unread);
    } finally {
      closeSync(fd);
    }
  }
}

async function* entries(config: FilesConfig, ctx: DriverContext): AsyncGenerator<ArchiveEntry> {
  const since = sinceMarker(ctx.since);
  for (const planned of walkAll(config, ctx, since.unread)) {
    const p = since.mark(planned);
    if (ctx.signal.aborted) {
      if (p.fd !== undefined) closeSync(p.fd);
      ctx.signal.throwIfAborted();
    }
    yield p.fd === undefined
      ? { header: p.header }
      : { header: p.header, file: p.fd, signal: ctx.signal };
  }
}

export function backup(config: FilesConfig, ctx: DriverContext): AsyncIterable<ArchiveEntry> {
  // Open every root first, so an unreadable path fails the request before any byte is sent.
  for (const path of config.paths) closeSync(openRoot(path));
  return entries(config, ctx);
}
