/**
 * Serialises a Ferry archive: manifest entry, payload entries, end record, end-of-archive
 * blocks. The SHA-256 and length in the end record cover the exact bytes from the first
 * byte after the manifest entry up to the first byte of the end record's header, so the
 * hash is computed on the bytes as they are produced, not re-derived.
 *
 * The data path (bench/README.md has the profile that shaped it): output is assembled in
 * blocks of BLOCK_BYTES. Headers and in-memory bodies are copied into the current block;
 * a regular file given as an open descriptor (`ArchiveEntry.file`) is read with pread
 * straight into the block, with no intermediate buffer. Each block is hashed once, in one
 * call, when it is handed out. Blocks come from a `BlockPool`: a consumer that gives them
 * back once written (ferryd, from the socket write's callback) makes the steady state
 * allocation-free; one that keeps them simply gets new ones.
 *
 * Reads never wait on the event loop. What the page cache holds is copied synchronously
 * with preadv2(RWF_NOWAIT) (src/core/sys.ts, preadCached), which answers at once, with
 * EAGAIN, when it would have to wait; everything else goes through the thread pool (one
 * pread of up to a block each). So a read that does not return — an NFS server gone away,
 * a hung FUSE file system, a disk retrying a bad sector — holds that one backup (and a
 * pool thread) instead of ferryd, which goes on serving every other client, job, cancel
 * and signal (a process waiting on such a read cannot even be killed);
 * test/e2e/stuck-read.test.ts proves it. A warm tree costs no pool hop per file.
 * The rest of an entry's work (headers, the walk's openat2/statx) is synchronous, so the
 * writer gives the loop a turn (setImmediate) after an entry whenever it has worked for
 * TURN_MS without one, handing out the block first if it holds COALESCE bytes.
 *
 * A file is read for exactly the size its header says (taken from fstat after the open):
 * if it shrank meanwhile the rest is zero-filled and a warning recorded (GNU tar does the
 * same); if it grew, the extra is left out. Either way the archive stays well-formed.
 */
import { createHash } from "node:crypto";
import { closeSync, read } from "node:fs";
import { performance } from "node:perf_hooks";
import { ARCHIVE_FORMAT, END_PATH, type EndRecord, MANIFEST_PATH } from "../../api/types.js";
import { FerryError } from "../errors.js";
import { preadCached } from "../sys.js";
import { BLOCK, encodeHeader, fileEntryHeader, padding, type TarHeader } from "./tar.js";

export interface ArchiveEntry {
  header: TarHeader;
  /** Exactly header.size bytes for files; absent for everything else. */
  body?: Buffer | AsyncIterable<Buffer>;
  /**
   * Instead of `body`: an open descriptor of a regular file whose first header.size bytes
   * are the body. The writer reads it and closes it, also when the archive fails.
   */
  file?: number;
  /**
   * For `file`: the reading stops, throwing the abort reason, once this aborts (checked at
   * every block), so a cancelled backup of a huge file lets go at once.
   */
  signal?: AbortSignal;
}

/** Size of the blocks the archive is handed out in (the last one and early ones smaller). */
export const BLOCK_BYTES = 1024 * 1024;
/** An async body's bytes are handed out once this much is pending, not held for a block. */
const COALESCE = 256 * 1024;
/** Longest stretch of synchronous work before the event loop gets a turn. */
const TURN_MS = 10;
const ZEROS = Buffer.alloc(BLOCK * 2);

function metaHeader(path: string, size: number, mtimeSec: number): TarHeader {
  return fileEntryHeader(path, size, { mode: 0o644, mtimeSec });
}

/** pread on the thread pool (see the header: never a read on the event loop). */
function readAt(fd: number, buf: Buffer, off: number, len: number, pos: number): Promise<number> {
  return new Promise((resolve, reject) => {
    read(fd, buf, off, len, pos, (err, n) => (err ? reject(err) : resolve(n)));
  });
}

/** Recycles output blocks between the writer and a consumer that returns them. */
export class BlockPool {
  private readonly free: Buffer[] = [];

  constructor(
    readonly blockBytes = BLOCK_BYTES,
    private readonly keep = 16,
  ) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.blockBytes);
  }

  /** Gives back a block (or a view of one from its start) the consumer is done with. */
  give(view: Buffer): void {
    if (view.byteOffset !== 0 || view.buffer.byteLength !== this.blockBytes) return;
    if (this.free.length >= this.keep || this.free.some((b) => b.buffer === view.buffer)) return;
    this.free.push(Buffer.from(view.buffer, 0, this.blockBytes));
  }
}

/**
 * Yields the archive's bytes. `warnings` may be appended to while entries are produced;
 * they end up in the end record. `complete`, if given, is called once after the last
 * entry, just before the end record is made, and may name a `token` for it. The
 * generator's return value is the end record.
 */
export async function* writeArchive(
  manifest: Record<string, unknown>,
  entries: AsyncIterable<ArchiveEntry>,
  warnings: string[] = [],
  pool: BlockPool = new BlockPool(),
  complete?: () => { token?: string | undefined },
): AsyncGenerator<Buffer, EndRecord, undefined> {
  const now = Math.floor(Date.now() / 1000);
  const hash = createHash("sha256");
  let payloadBytes = 0;
  let count = 0;
  let block = pool.take();
  let fill = 0;
  /** Start of the not yet hashed payload bytes in `block`; -1 while outside the payload. */
  let hashFrom = -1;
  let lastTurn = performance.now();

  const hashUpTo = (): void => {
    if (hashFrom < 0 || fill === hashFrom) return;
    hash.update(block.subarray(hashFrom, fill));
    payloadBytes += fill - hashFrom;
    hashFrom = fill;
  };
  /** The filled part of the block, hashed; a fresh block takes its place. */
  const takeBlock = (): Buffer => {
    hashUpTo();
    const out = block.subarray(0, fill);
    block = pool.take();
    fill = 0;
    if (hashFrom >= 0) hashFrom = 0;
    return out;
  };
  /** Copies bytes in; the blocks that filled up on the way are appended to `full`. */
  const put = (b: Buffer, full: Buffer[]): void => {
    let off = 0;
    while (off < b.length) {
      const n = Math.min(b.length - off, block.length - fill);
      b.copy(block, fill, off, off + n);
      fill += n;
      off += n;
      if (fill === block.length) full.push(takeBlock());
    }
  };
  const overBudget = (): boolean => performance.now() - lastTurn >= TURN_MS;
  const turn = async (): Promise<void> => {
    await new Promise<void>((resolve) => setImmediate(resolve));
    lastTurn = performance.now();
  };

  /** The body of a file entry, read straight into the blocks. */
  async function* readFileInto(
    fd: number,
    h: TarHeader,
    signal: AbortSignal | undefined,
  ): AsyncGenerator<Buffer> {
    let pos = 0;
    while (pos < h.size) {
      signal?.throwIfAborted();
      const want = Math.min(h.size - pos, block.length - fill);
      // What the page cache holds is copied at once (preadv2 RWF_NOWAIT, never a wait on
      // a disk or a network); anything else is read on the thread pool. The block is this
      // generator's until handed out, so nothing touches it meanwhile.
      let n = preadCached(fd, block, fill, want, pos);
      if (n < 0) {
        n = await readAt(fd, block, fill, want, pos);
        lastTurn = performance.now(); // the loop ran while the read was away
      }
      if (n === 0) {
        warnings.push(`${h.path}: shrank by ${h.size - pos} bytes while being read; zero-filled`);
        while (pos < h.size) {
          const z = Math.min(h.size - pos, block.length - fill);
          block.fill(0, fill, fill + z);
          fill += z;
          pos += z;
          if (fill === block.length) {
            signal?.throwIfAborted();
            yield takeBlock();
          }
        }
        return;
      }
      fill += n;
      pos += n;
      if (fill === block.length) yield takeBlock();
      if (pos < h.size && overBudget()) {
        if (fill >= COALESCE) yield takeBlock();
        await turn();
      }
    }
  }

  const manifestBody = Buffer.from(`${JSON.stringify({ ...manifest, format: ARCHIVE_FORMAT })}\n`);
  const first: Buffer[] = [];
  put(encodeHeader(metaHeader(MANIFEST_PATH, manifestBody.length, now)), first);
  put(manifestBody, first);
  put(ZEROS.subarray(0, padding(manifestBody.length)), first);
  hashFrom = fill;
  yield* first;

  const out: Buffer[] = [];
  for await (const entry of entries) {
    const h = entry.header;
    count++;
    if (entry.file !== undefined) {
      try {
        put(encodeHeader(h), out);
        yield* out.splice(0);
        yield* readFileInto(entry.file, h, entry.signal);
      } finally {
        closeSync(entry.file);
      }
    } else {
      put(encodeHeader(h), out);
      let written = 0;
      if (entry.body !== undefined) {
        const inMemory = Buffer.isBuffer(entry.body);
        const chunks = inMemory ? [entry.body as Buffer] : (entry.body as AsyncIterable<Buffer>);
        for await (const chunk of chunks) {
          written += chunk.length;
          if (written > h.size) break;
          put(chunk, out);
          yield* out.splice(0);
          if (!inMemory && fill >= COALESCE) yield takeBlock();
        }
      }
      if (written !== h.size) {
        throw new FerryError(
          "INTERNAL",
          `archive entry ${JSON.stringify(h.path)}: body has ${written} bytes, header says ${h.size}`,
        );
      }
    }
    put(ZEROS.subarray(0, padding(h.size)), out);
    yield* out.splice(0);
    if (overBudget()) {
      if (fill >= COALESCE) yield takeBlock();
      await turn();
    }
  }

  hashUpTo();
  hashFrom = -1;
  const token = complete?.().token;
  const end: EndRecord = {
    entries: count,
    payload_bytes: payloadBytes,
    sha256: hash.digest("hex"),
  };
  if (warnings.length > 0) end.warnings = [...warnings];
  if (token !== undefined) end.token = token;
  const endBody = Buffer.from(`${JSON.stringify(end)}\n`);
  const tail: Buffer[] = [];
  put(encodeHeader(metaHeader(END_PATH, endBody.length, now)), tail);
  put(endBody, tail);
  put(ZEROS.subarray(0, padding(endBody.length)), tail);
  put(ZEROS, tail);
  yield* tail;
  if (fill > 0) yield takeBlock();
  return end;
}
