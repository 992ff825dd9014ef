/**
 * The files driver's backup: every declared root walked through held descriptors
 * (walk.ts), the files read ahead in bounded batches (read.ts). An unreadable root fails
 * the request before any byte is sent.
 */
import { closeSync } from "node:fs";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { openRoot } from "../../core/safe-fs.js";
import type { DriverContext } from "../types.js";
import type { FilesConfig } from "./config.js";
import { readEntries } from "./read.js";
import { withSince } from "./since-index.js";
import { type PlannedEntry, walkRoot } from "./walk.js";

function* walkAll(config: FilesConfig, ctx: DriverContext): Generator<PlannedEntry> {
  for (const [i, path] of config.paths.entries()) {
    // Hardlinks are kept within one declared path: across two, a restore could not
    // recreate them when the paths are on different filesystems.
    const links = new Map<string, string>();
    const fd = openRoot(path);
    try {
      yield* walkRoot(fd, `data/${i}/`, ctx.warnings, links);
    } finally {
      closeSync(fd);
    }
  }
}

export function backup(config: FilesConfig, ctx: DriverContext): AsyncIterable<ArchiveEntry> {
  // Open every root first, so an unreadable path fails the request before any byte is sent.
  for (const path of config.paths) closeSync(openRoot(path));
  return withSince(ctx.since, walkAll(config, ctx), (p) =>
    readEntries(p, ctx.warnings, ctx.signal),
  );
}
