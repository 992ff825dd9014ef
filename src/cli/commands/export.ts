/**
 * `ferry export APP [-o FILE]`: asks ferryd for APP's archive and writes it to FILE or
 * stdout, verifying it on the way (header checksums, end record, SHA-256). With -o the
 * archive is written to a temporary file beside FILE and renamed into place only when it
 * verified, so FILE is never a truncated archive. On stdout a failure is reported and the
 * exit status is non-zero; the archive written so far lacks its end record, so no Ferry
 * reader will take it for a good one.
 */
import { once } from "node:events";
import {
  closeSync,
  fsyncSync,
  lstatSync,
  openSync,
  renameSync,
  unlinkSync,
  writeSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import { isatty } from "node:tty";
import type { EndRecord } from "../../api/types.js";
import { ArchiveParser } from "../../core/archive/reader.js";
import { FerryError } from "../../core/errors.js";
import { errorFromBody, type FerryClient, parseStatusTrailer } from "../client.js";
import { EXIT, UsageError } from "../exit-codes.js";
import { checkOutputFile, checkWritableDir } from "../local-paths.js";
import { formatBytes, Progress } from "../progress.js";

export interface ExportOptions {
  app: string;
  output?: string;
}

interface Sink {
  /**
   * Takes all of `chunk` before returning (the caller reuses the buffer); a promise asks
   * the caller to wait before sending more.
   */
  write(chunk: Buffer): undefined | Promise<void>;
  commit(): void;
  discard(): void;
}

/**
 * write(2) until all of `chunk` is out; returns how much was written, which is less only
 * when a non-blocking descriptor answered EAGAIN.
 */
function writeAll(fd: number, chunk: Buffer): number {
  let off = 0;
  while (off < chunk.length) {
    try {
      off += writeSync(fd, chunk, off);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "EAGAIN") return off;
      throw err;
    }
  }
  return off;
}

/**
 * A regular file (or a new one) is written beside and renamed into place when complete.
 * Anything else that exists at the path — /dev/null, a FIFO, a terminal — is written to
 * directly: renaming over it would replace a device node with a file.
 */
function outputSink(path: string): Sink {
  let existing: ReturnType<typeof lstatSync> | undefined;
  try {
    existing = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "ENOENT") throw err;
  }
  if (existing?.isDirectory()) {
    throw new UsageError(`-o ${path} is a directory; give a file name`);
  }
  if (existing === undefined || existing.isFile()) return fileSink(path);
  const fd = openSync(path, "w");
  return {
    write: (chunk) => {
      writeAll(fd, chunk);
      return undefined;
    },
    commit() {
      closeSync(fd);
    },
    discard() {
      closeSync(fd);
    },
  };
}

function fileSink(path: string): Sink {
  const tmp = join(dirname(path), `.${basename(path)}.ferry-${process.pid}.tmp`);
  const fd = openSync(tmp, "wx", 0o600);
  let open = true;
  return {
    write: (chunk) => {
      writeAll(fd, chunk);
      return undefined;
    },
    commit() {
      fsyncSync(fd);
      closeSync(fd);
      open = false;
      renameSync(tmp, path);
    },
    discard() {
      if (open) closeSync(fd);
      open = false;
      try {
        unlinkSync(tmp);
      } catch {}
    },
  };
}

/**
 * Standard output, written with write(2) directly: no stream, no copy, no queue. A pipe
 * some parent left in non-blocking mode answers EAGAIN when its reader is behind; then
 * the rest goes through process.stdout (a copy, as the caller reuses the buffer), and the
 * caller waits for its drain. While process.stdout still holds bytes, everything after
 * them goes the same way: the caller hands over the rest of a read before it waits, and
 * a direct write(2) then would overtake the queued bytes, shuffling the archive on the
 * pipe while the verified stream was whole.
 */
function stdoutSink(): Sink {
  let viaStream = false; // process.stdout was created (only then is it looked at)
  let drain: Promise<void> | undefined;
  return {
    write: (chunk) => {
      let rest = chunk;
      if (!viaStream || process.stdout.writableLength === 0) {
        const n = writeAll(1, chunk);
        if (n === chunk.length) return undefined;
        rest = chunk.subarray(n);
        viaStream = true;
      }
      if (process.stdout.write(Buffer.from(rest))) return undefined;
      // One wait for every write queued behind the same drain.
      drain ??= once(process.stdout, "drain").then(() => {
        drain = undefined;
      });
      return drain;
    },
    commit() {},
    discard() {},
  };
}

export async function exportCommand(client: FerryClient, opts: ExportOptions): Promise<number> {
  // isatty, not process.stdout.isTTY: creating process.stdout puts a pipe in non-blocking
  // mode, and the data path writes to descriptor 1 directly (stdoutSink).
  if (opts.output === undefined && isatty(1)) {
    throw new UsageError("refusing to write an archive to a terminal; use -o FILE or a pipe");
  }
  // Before the request: ferryd would run the pre-backup hook and stream the data first.
  if (opts.output !== undefined) checkOutputFile(opts.output);
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const path = `/v1/apps/${encodeURIComponent(opts.app)}/backup`;
  const progress = new Progress(`export ${opts.app}`);
  const parser = new ArchiveParser();
  let sink: Sink | undefined;
  let sinkError: unknown;
  let bytes = 0;
  let end: EndRecord;
  try {
    try {
      const res = await client.stream("POST", path, abort.signal, {
        // The answer is 200: only now is the output created.
        head: () => {
          try {
            sink = opts.output === undefined ? stdoutSink() : outputSink(opts.output);
          } catch (err) {
            sinkError = err;
            throw err;
          }
        },
        body: (buf: Buffer) => {
          parser.writeSync(buf);
          bytes += buf.length;
          progress.update(bytes, parser.entries);
          return (sink as Sink).write(buf);
        },
      });
      if (res.head.status !== 200) throw errorFromBody(res.head.status, res.errorBody ?? "");
      const status = parseStatusTrailer(res.trailers.get("ferry-status"));
      if (status !== undefined) throw status;
    } catch (err) {
      if (err === sinkError) throw err;
      if (abort.signal.aborted) throw new FerryError("CANCELLED", "interrupted");
      // A connection cut mid-stream: what arrived is incomplete.
      if (!(err instanceof FerryError)) {
        throw new FerryError(
          "ARCHIVE_TRUNCATED",
          `the stream broke after ${bytes} bytes: ${(err as Error).message}`,
        );
      }
      if (err.code === "CONNECTION_LOST" && bytes > 0) {
        throw new FerryError(
          "ARCHIVE_TRUNCATED",
          `the stream broke after ${bytes} bytes: ${err.message}`,
        );
      }
      throw err;
    }
    end = parser.finish();
    (sink as Sink).commit();
  } catch (err) {
    progress.clear();
    sink?.discard();
    // Interrupted here (a signal); a job cancelled in ferryd is an error like any other.
    if (abort.signal.aborted) {
      process.stderr.write(`ferry: export of ${opts.app} interrupted\n`);
      return EXIT.INTERRUPTED;
    }
    throw err;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  progress.clear();
  for (const w of end.warnings ?? []) process.stderr.write(`ferry: warning: ${w}\n`);
  const secs = progress.elapsed();
  process.stderr.write(
    `exported ${opts.app}: ${end.entries} entries, ${formatBytes(bytes)} in ${secs.toFixed(1)}s ` +
      `(${formatBytes(bytes / Math.max(secs, 0.001))}/s), sha256 ${end.sha256.slice(0, 16)}…` +
      `${opts.output === undefined ? "" : ` → ${opts.output}`}\n`,
  );
  return EXIT.OK;
}

/**
 * `ferry export --all -o DIR` / `ferry export APP1 APP2 … -o DIR`: each application to
 * DIR/APP.tar, one after the other; a failing application is reported and the others go
 * on. The exit status is 1 if any failed.
 */
export async function exportManyCommand(
  client: FerryClient,
  apps: string[] | "all",
  dir: string,
): Promise<number> {
  checkWritableDir(dir);
  const names =
    apps === "all"
      ? (await client.json<{ apps: { name: string }[] }>("GET", "/v1/apps")).apps.map((a) => a.name)
      : apps;
  const failed: string[] = [];
  for (const app of names) {
    try {
      const code = await exportCommand(client, { app, output: join(dir, `${app}.tar`) });
      if (code === EXIT.INTERRUPTED) return code;
    } catch (err) {
      failed.push(app);
      const code = err instanceof FerryError ? ` [${err.code}]` : "";
      process.stderr.write(`ferry: export of ${app} failed: ${(err as Error).message}${code}\n`);
    }
  }
  process.stderr.write(
    `exported ${names.length - failed.length} of ${names.length} application(s) to ${dir}` +
      `${failed.length > 0 ? `; failed: ${failed.join(", ")}` : ""}\n`,
  );
  return failed.length > 0 ? EXIT.FAILURE : EXIT.OK;
}
