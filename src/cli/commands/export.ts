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
import type { EndRecord } from "../../api/types.js";
import { ArchiveParser } from "../../core/archive/reader.js";
import { FerryError } from "../../core/errors.js";
import { errorFromBody, type FerryClient, parseStatusTrailer, readBody } from "../client.js";
import { EXIT, UsageError } from "../exit-codes.js";
import { checkOutputFile, checkWritableDir } from "../local-paths.js";
import { formatBytes, Progress } from "../progress.js";

export interface ExportOptions {
  app: string;
  output?: string;
}

interface Sink {
  write(chunk: Buffer): Promise<void>;
  commit(): void;
  discard(): void;
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
    async write(chunk) {
      let off = 0;
      while (off < chunk.length) off += writeSync(fd, chunk, off);
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
    async write(chunk) {
      let off = 0;
      while (off < chunk.length) off += writeSync(fd, chunk, off);
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

function stdoutSink(): Sink {
  return {
    async write(chunk) {
      if (!process.stdout.write(chunk)) await once(process.stdout, "drain");
    },
    commit() {},
    discard() {},
  };
}

export async function exportCommand(client: FerryClient, opts: ExportOptions): Promise<number> {
  if (opts.output === undefined && process.stdout.isTTY) {
    throw new UsageError("refusing to write an archive to a terminal; use -o FILE or a pipe");
  }
  // Before the request: ferryd would run the pre-backup hook and stream the data first.
  if (opts.output !== undefined) checkOutputFile(opts.output);
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const path = `/v1/apps/${encodeURIComponent(opts.app)}/backup`;
  const res = await client.request("POST", path, abort.signal);
  if (res.statusCode !== 200)
    throw errorFromBody(res.statusCode ?? 500, await readBody(res, 1 << 20));

  const sink = opts.output === undefined ? stdoutSink() : outputSink(opts.output);
  const progress = new Progress(`export ${opts.app}`);
  const parser = new ArchiveParser();
  let bytes = 0;
  let end: EndRecord;
  try {
    try {
      for await (const chunk of res) {
        const buf = chunk as Buffer;
        await parser.write(buf);
        await sink.write(buf);
        bytes += buf.length;
        progress.update(bytes, parser.entries);
      }
    } catch (err) {
      if (abort.signal.aborted) throw new FerryError("CANCELLED", "interrupted");
      // A connection cut mid-stream: what arrived is incomplete.
      if (!(err instanceof FerryError)) {
        throw new FerryError(
          "ARCHIVE_TRUNCATED",
          `the stream broke after ${bytes} bytes: ${(err as Error).message}`,
        );
      }
      throw err;
    }
    const status = parseStatusTrailer(res.trailers["ferry-status"]);
    if (status !== undefined) throw status;
    end = parser.finish();
    sink.commit();
  } catch (err) {
    progress.clear();
    sink.discard();
    if (err instanceof FerryError && err.code === "CANCELLED") {
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
