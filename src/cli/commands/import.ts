/**
 * `ferry import APP [-i FILE]`: sends an archive (FILE, or stdin) to ferryd to restore APP.
 * ferryd verifies the whole archive before it touches the live data and answers after
 * the restore is committed or rolled back; this prints the one-line result.
 */
import { createReadStream, statSync } from "node:fs";
import { Transform } from "node:stream";
import { errorFromBody, type FerryClient, readBody } from "../client.js";
import { EXIT, UsageError } from "../exit-codes.js";
import { formatBytes, Progress } from "../progress.js";

export interface ImportOptions {
  app: string;
  input?: string;
}

export async function importCommand(client: FerryClient, opts: ImportOptions): Promise<number> {
  if (opts.input === undefined && process.stdin.isTTY) {
    throw new UsageError("refusing to read an archive from a terminal; use -i FILE or a pipe");
  }
  let source: NodeJS.ReadableStream;
  if (opts.input !== undefined) {
    try {
      if (!statSync(opts.input).isFile()) throw new Error("not a regular file");
    } catch (err) {
      throw new UsageError(
        `cannot read ${opts.input}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    source = createReadStream(opts.input, { highWaterMark: 1 << 20 });
  } else {
    source = process.stdin;
  }
  const progress = new Progress(`import ${opts.app}`);
  let sent = 0;
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      sent += chunk.length;
      progress.update(sent);
      cb(null, chunk);
    },
  });
  source.pipe(counter);
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    const res = await client.request(
      "POST",
      `/v1/apps/${encodeURIComponent(opts.app)}/restore`,
      abort.signal,
      counter,
    );
    const text = await readBody(res, 1 << 20);
    progress.clear();
    if (res.statusCode !== 200) throw errorFromBody(res.statusCode ?? 500, text);
    const r = JSON.parse(text) as { entries: number; bytes: number; warnings?: string[] };
    for (const w of r.warnings ?? []) process.stderr.write(`ferry: warning: ${w}\n`);
    const secs = progress.elapsed();
    process.stderr.write(
      `restored ${opts.app}: ${r.entries} entries, ${formatBytes(r.bytes)} of file data from ${formatBytes(sent)} in ${secs.toFixed(1)}s\n`,
    );
    return EXIT.OK;
  } catch (err) {
    progress.clear();
    if (abort.signal.aborted) {
      process.stderr.write(`ferry: import of ${opts.app} interrupted; ferryd rolls it back\n`);
      return EXIT.INTERRUPTED;
    }
    throw err;
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
}
