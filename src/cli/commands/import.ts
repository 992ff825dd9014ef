/**
 * `ferry import APP [-i FILE]`: sends an archive (FILE, or stdin) to ferryd to restore APP.
 * ferryd verifies the whole archive before it touches the live data and answers after
 * the restore is committed or rolled back; this prints the one-line result.
 */
import { closeSync, fstatSync, openSync } from "node:fs";
import { Transform } from "node:stream";
import { type BodyPump, type FerryClient, fileBody } from "../client.js";
import { EXIT, UsageError } from "../exit-codes.js";
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
  const progress = new Progress(`import ${opts.app}`);
  let sent = 0;
  let source: BodyPump | Transform;
  let fd: number | undefined;
  if (opts.input !== undefined) {
    try {
      fd = openSync(opts.input, "r");
      if (!fstatSync(fd).isFile()) throw new Error("not a regular file");
    } catch (err) {
      if (fd !== undefined) closeSync(fd);
      throw new UsageError(
        `cannot read ${opts.input}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    source = fileBody(fd, (n) => {
      sent += n;
      progress.update(sent);
    });
  } else {
    source = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        sent += chunk.length;
        progress.update(sent);
        cb(null, chunk);
      },
    });
    process.stdin.pipe(source);
  }
  let r: Awaited<ReturnType<typeof uploadRestore>>;
  try {
    r = await uploadRestore(client, opts.app, source, () => progress.clear());
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
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
