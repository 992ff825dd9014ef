/**
 * Turns planned entries (headers + open descriptors) into archive entries with bodies,
 * reading several small files concurrently while keeping output order.
 *
 * Memory is bounded: small files (≤ SMALL) are read whole, ahead of the writer, as long as
 * fewer than MAX_AHEAD entries and MAX_AHEAD_BYTES bytes are in flight; a large file is
 * streamed in CHUNK pieces with one read ahead. So a 10 GiB tree never has more than
 * MAX_AHEAD_BYTES + 2 × CHUNK of file data in memory here.
 *
 * A file is read for exactly the size its fstat reported: if it shrank meanwhile the rest
 * is zero-filled, if it grew the extra is left out, and either way a warning is recorded
 * (GNU tar does the same), so the archive stays well-formed.
 */
import { closeSync, read } from "node:fs";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import type { PlannedEntry } from "./walk.js";

const SMALL = 1024 * 1024;
const CHUNK = 1024 * 1024;
const MAX_AHEAD = 64;
const MAX_AHEAD_BYTES = 16 * 1024 * 1024;

function readAt(fd: number, buf: Buffer, offset: number, length: number, pos: number) {
  return new Promise<number>((resolve, reject) => {
    read(fd, buf, offset, length, pos, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** Reads `length` bytes at `pos` into a new buffer; short at end of file. */
async function readSpan(fd: number, pos: number, length: number): Promise<Buffer> {
  const buf = Buffer.allocUnsafe(length);
  let got = 0;
  while (got < length) {
    const n = await readAt(fd, buf, got, length - got, pos + got);
    if (n === 0) break;
    got += n;
  }
  return got === length ? buf : buf.subarray(0, got);
}

function fit(path: string, buf: Buffer, want: number, warnings: string[]): Buffer {
  if (buf.length === want) return buf;
  warnings.push(`${path}: shrank by ${want - buf.length} bytes while being read; zero-filled`);
  return Buffer.concat([buf, Buffer.alloc(want - buf.length)]);
}

async function readWhole(p: PlannedEntry, warnings: string[]): Promise<Buffer> {
  const fd = p.fd as number;
  try {
    return fit(p.header.path, await readSpan(fd, 0, p.header.size), p.header.size, warnings);
  } finally {
    closeSync(fd);
  }
}

async function* streamFile(p: PlannedEntry, warnings: string[], signal: AbortSignal) {
  const fd = p.fd as number;
  const size = p.header.size;
  try {
    let pos = 0;
    let next: Promise<Buffer> | undefined =
      size > 0 ? readSpan(fd, 0, Math.min(CHUNK, size)) : undefined;
    while (next !== undefined) {
      const want = Math.min(CHUNK, size - pos);
      const buf = fit(p.header.path, await next, want, warnings);
      pos += want;
      next = pos < size ? readSpan(fd, pos, Math.min(CHUNK, size - pos)) : undefined;
      signal.throwIfAborted();
      yield buf;
    }
  } finally {
    closeSync(fd);
  }
}

interface Slot {
  planned: PlannedEntry;
  data?: Promise<Buffer>;
}

export async function* readEntries(
  planned: Iterator<PlannedEntry>,
  warnings: string[],
  signal: AbortSignal,
): AsyncGenerator<ArchiveEntry> {
  const queue: Slot[] = [];
  let aheadBytes = 0;
  let done = false;
  const fill = () => {
    while (!done && queue.length < MAX_AHEAD && aheadBytes < MAX_AHEAD_BYTES) {
      const r = planned.next();
      if (r.done) {
        done = true;
        return;
      }
      const p = r.value;
      const slot: Slot = { planned: p };
      if (p.fd !== undefined && p.header.size <= SMALL) {
        slot.data = readWhole(p, warnings);
        // A rejected read is awaited when its turn comes; keep Node from calling it unhandled.
        slot.data.catch(() => {});
        aheadBytes += p.header.size;
      }
      queue.push(slot);
      // A large file is streamed when its turn comes; do not open more behind it.
      if (p.fd !== undefined && p.header.size > SMALL) return;
    }
  };
  try {
    for (;;) {
      signal.throwIfAborted();
      fill();
      const slot = queue.shift();
      if (slot === undefined) return;
      const p = slot.planned;
      if (slot.data !== undefined) {
        const body = await slot.data;
        aheadBytes -= p.header.size;
        yield { header: p.header, body };
      } else if (p.fd !== undefined) {
        yield { header: p.header, body: streamFile(p, warnings, signal) };
      } else {
        yield { header: p.header };
      }
    }
  } finally {
    // Early exit (error, cancel, disconnect): close what was opened but not yet read.
    for (const slot of queue) {
      if (slot.data !== undefined) await slot.data.catch(() => {});
      else if (slot.planned.fd !== undefined) closeSync(slot.planned.fd);
    }
    planned.return?.(undefined);
  }
}
