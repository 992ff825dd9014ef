/**
 * `ferry import APP [-i FILE]`: sends an archive (FILE, or stdin) to ferryd to restore APP.
 * ferryd verifies the whole archive before it touches the live data and answers after
 * the restore is committed or rolled back; this prints the one-line result.
 */
import { createReadStream } from "node:fs";
import { Transform } from "node:stream";
import type { FerryClient } from "../client.js";
import { EXIT, UsageError } from "../exit-codes.js";
import { openInputFile } from "../local-paths.js";
import { formatBytes, Progress } from "../progress.js";
import { uploadRestore } from "../restore-upload.js";

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
    // Opened before the request: ferryd would run the pre-restore hook first.
    const fd = openInputFile(opts.input);
    source = createReadStream("", { fd, highWaterMark: 1 << 20 });
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
  const r = await uploadRestore(client, opts.app, counter, () => progress.clear());
  if (r === "interrupted") {
    process.stderr.write(`ferry: import of ${opts.app} interrupted; ferryd rolls it back\n`);
    return EXIT.INTERRUPTED;
  }
  progress.clear();
  for (const w of r.warnings ?? []) process.stderr.write(`ferry: warning: ${w}\n`);
  const secs = progress.elapsed();
  process.stderr.write(
    `restored ${opts.app}: ${r.entries} entries, ${formatBytes(r.bytes)} of file data from ${formatBytes(sent)} in ${secs.toFixed(1)}s\n`,
  );
  return EXIT.OK;
}
