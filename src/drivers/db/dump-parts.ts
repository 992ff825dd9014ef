/**
 * Streaming a helper's output (a database dump) into archive entries, and archive entries
 * back into a helper's input, without holding a whole dump in memory or on disk. Used by
 * the postgres and mariadb drivers (their restores share ./restore.ts).
 *
 * Why parts instead of one entry per dump: a tar header carries the body's size, and a
 * dump tool cannot say its output size before it has finished. The two obvious ways out
 * are worse: buffering the dump in memory is unbounded, and spooling it to a temporary file
 * first needs free disk as large as the dump, writes and reads every byte twice and sends
 * nothing to the client until the dump tool is done (so a slow client cannot overlap with
 * it). Instead the stream is cut into parts of at most `partBytes` (8 MiB): each part is an
 * ordinary archive entry `PREFIX/00000000.EXT`, `PREFIX/00000001.EXT`, … whose size is
 * known when it is emitted. Memory stays at two parts (one being sent, one being filled
 * while the first is sent, so the dump tool and the client run concurrently), and the
 * original stream is the parts concatenated in name order (`cat PREFIX/*.EXT`), which is
 * what a restore feeds to the restore tool.
 *
 * A helper succeeded only if its stdout ended, it exited 0 and it wrote at least one byte;
 * the last part is released only after the exit status is known, so no archive whose last
 * dump part was emitted can come from a failed helper.
 */
import type { Readable, Writable } from "node:stream";
import { fileEntryHeader } from "../../core/archive/tar.js";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { FerryError } from "../../core/errors.js";
import type { Helper } from "../../core/spawn.js";

export const PART_BYTES = 8 * 1024 * 1024;
const PART_DIGITS = 8;

/** Where the database drivers put each database's dump: `data/db/<encoded name>/`. */
export const DB_PREFIX = "data/db";

/** The archive folder of database `name`'s dump parts. */
export function dbPrefix(name: string): string {
  return `${DB_PREFIX}/${encodeSegment(name)}`;
}

/** Archive path of part `index` of a stream: `PREFIX/00000042.EXT`. */
export function partPath(prefix: string, index: number, ext: string): string {
  return `${prefix}/${String(index).padStart(PART_DIGITS, "0")}.${ext}`;
}

/** The index of a part path under `prefix` with extension `ext`, or undefined. */
export function parsePartPath(path: string, prefix: string, ext: string): number | undefined {
  if (!path.startsWith(`${prefix}/`)) return undefined;
  const rest = path.slice(prefix.length + 1);
  const m = new RegExp(`^([0-9]{${PART_DIGITS}})\\.${ext}$`).exec(rest);
  return m === null ? undefined : Number(m[1]);
}

/**
 * A name (database, table…) as one safe path segment: ASCII letters, digits, `_` and `-`
 * stay, every other byte of its UTF-8 is `%XX`, so no name can produce `/`, `.`, `..` or
 * anything a file system treats specially.
 */
export function encodeSegment(name: string): string {
  let out = "";
  for (const byte of Buffer.from(name, "utf8")) {
    const c = String.fromCharCode(byte);
    out += /[A-Za-z0-9_-]/.test(c) ? c : `%${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** The inverse of encodeSegment; undefined unless `seg` is exactly its canonical form. */
export function decodeSegment(seg: string): string | undefined {
  if (!/^(?:[A-Za-z0-9_-]|%[0-9A-F]{2})+$/.test(seg)) return undefined;
  const bytes: number[] = [];
  for (let i = 0; i < seg.length; i++) {
    if (seg[i] === "%") {
      bytes.push(Number.parseInt(seg.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(seg.charCodeAt(i));
  }
  const name = new TextDecoder("utf-8", { fatal: false }).decode(Uint8Array.from(bytes));
  return encodeSegment(name) === seg ? name : undefined;
}

interface PartOptions {
  prefix: string;
  ext: string;
  /** Owner recorded in the tar headers (informational). */
  uid: number;
  gid: number;
  uname: string;
  partBytes?: number;
  signal: AbortSignal;
}

/**
 * Cuts `helper`'s stdout into part entries. Fails with the helper's own error (stderr
 * included) if it exits non-zero, and with HELPER_FAILED if it wrote nothing. Returning the
 * generator early (cancel, client gone) or an abort of `signal` kills the helper.
 */
export async function* helperParts(
  helper: Helper,
  opts: PartOptions,
): AsyncGenerator<ArchiveEntry> {
  const partBytes = opts.partBytes ?? PART_BYTES;
  const out = helper.stdout as Readable;
  const ready: Buffer[] = [];
  let fill = Buffer.allocUnsafe(partBytes);
  let filled = 0;
  let total = 0;
  let ended = false;
  let failed: unknown;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const onData = (chunk: Buffer) => {
    total += chunk.length;
    let off = 0;
    while (off < chunk.length) {
      const n = Math.min(partBytes - filled, chunk.length - off);
      chunk.copy(fill, filled, off, off + n);
      filled += n;
      off += n;
      if (filled === partBytes) {
        ready.push(fill);
        fill = Buffer.allocUnsafe(partBytes);
        filled = 0;
      }
    }
    // One full part waiting is enough read-ahead: let the pipe apply backpressure.
    if (ready.length >= 1) out.pause();
    notify();
  };
  const onEnd = () => {
    ended = true;
    notify();
  };
  const onError = (err: unknown) => {
    failed = err;
    notify();
  };
  out.on("data", onData);
  out.once("end", onEnd);
  out.once("error", onError);
  const mtimeSec = Math.floor(Date.now() / 1000);
  const entry = (index: number, body: Buffer): ArchiveEntry => ({
    header: fileEntryHeader(partPath(opts.prefix, index, opts.ext), body.length, {
      uid: opts.uid,
      gid: opts.gid,
      uname: opts.uname,
      mtimeSec,
    }),
    body,
  });
  let index = 0;
  let finished = false;
  try {
    for (;;) {
      opts.signal.throwIfAborted();
      if (failed !== undefined) throw failed;
      const part = ready.shift();
      if (part !== undefined) {
        out.resume();
        yield entry(index++, part);
        continue;
      }
      if (ended) break;
      await new Promise<void>((resolve) => {
        wake = resolve;
        opts.signal.addEventListener("abort", notify, { once: true });
      });
      opts.signal.removeEventListener("abort", notify);
    }
    await helper.done;
    if (total === 0) {
      throw new FerryError(
        "HELPER_FAILED",
        `${opts.prefix}: the dump tool exited 0 but produced no data${stderrSuffix(helper)}`,
      );
    }
    finished = true;
    if (filled > 0) yield entry(index++, fill.subarray(0, filled));
  } finally {
    out.off("data", onData);
    out.off("end", onEnd);
    out.off("error", onError);
    if (!finished) {
      helper.kill();
      out.destroy();
      await helper.done.catch(() => {});
    }
  }
}

function stderrSuffix(h: Helper): string {
  const s = h.stderrText().trim();
  return s === "" ? "" : `: ${s.split("\n").slice(-10).join("\n")}`;
}

/**
 * Writes a chunk to a helper's stdin, waiting for the pipe to drain (backpressure). Fails
 * if the helper exits before taking it, with the helper's own error when it failed.
 */
export async function writeToHelper(helper: Helper, chunk: Buffer): Promise<void> {
  const stdin = helper.stdin as Writable;
  const exited = () => helper.child.exitCode !== null || helper.child.signalCode !== null;
  if (exited() || stdin.destroyed) return exitedEarly(helper);
  if (stdin.write(chunk)) return;
  let closed = false;
  await new Promise<void>((resolve) => {
    const done = () => {
      stdin.off("drain", done);
      helper.child.off("close", onClose);
      resolve();
    };
    const onClose = () => {
      closed = true;
      done();
    };
    stdin.on("drain", done);
    helper.child.once("close", onClose);
  });
  if (closed) return exitedEarly(helper);
}

async function exitedEarly(helper: Helper): Promise<never> {
  await helper.done; // throws the helper's error (with stderr) if it failed
  throw new FerryError(
    "HELPER_FAILED",
    `the restore tool exited before reading all its input${stderrSuffix(helper)}`,
  );
}

/** Closes a helper's stdin and waits for it to exit 0 (its error, with stderr, otherwise). */
export async function finishHelper(helper: Helper): Promise<void> {
  helper.stdin?.end();
  await helper.done;
}
