/**
 * `ferry import APP [-i FILE] [--dry-run] [--yes] [--keep-old]`: sends an archive (FILE, or
 * stdin) to ferryd to restore APP. ferryd verifies the whole archive before it touches the
 * live data and answers after the restore is committed or rolled back; this prints the
 * one-line result.
 *
 * - `--dry-run`: ferryd verifies the archive against the application and says what a
 *   restore would add, remove and change (it alone can read the application); nothing is
 *   changed, no hook runs. The differences go to stdout (`+ PATH`, `- PATH`,
 *   `~ PATH (what)`), the summary to stderr.
 * - On a terminal (src/cli/confirm.ts) ferry asks before replacing the data; with
 *   `-i FILE` it first runs the dry run and shows its summary. `--yes` does not ask.
 *   Without a terminal nobody is asked, so scripts and timers work as they always did.
 * - `--keep-old` (files applications): the replaced tree is kept beside the live one, at
 *   the path printed, instead of being deleted.
 */
import { closeSync } from "node:fs";
import type { Readable } from "node:stream";
import { Transform } from "node:stream";
import { FerryError } from "../../core/errors.js";
import { type BodyPump, type FerryClient, fileBody } from "../client.js";
import { confirm, questionTerminal } from "../confirm.js";
import { EXIT, UsageError } from "../exit-codes.js";
import { openInputFile, reopenInputFile } from "../local-paths.js";
import { formatBytes, Progress } from "../progress.js";
import { type DryRunAnswer, type RestoreAnswer, uploadRestore } from "../restore-upload.js";

export interface ImportOptions {
  app: string;
  input?: string;
  dryRun?: boolean;
  /** Do not ask, even on a terminal. */
  yes?: boolean;
  keepOld?: boolean;
}

/** A path as it can be printed on one line: quoted when it holds anything unprintable. */
function shown(path: string): string {
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are the point
  return /[\u0000-\u001f\u007f-\u009f]/.test(path) ? JSON.stringify(path) : path;
}

function summary(app: string, r: DryRunAnswer): string {
  const verified = `the archive verified (${r.entries} entries${r.sha256 === undefined ? "" : `, sha256 ${r.sha256.slice(0, 16)}…`})`;
  if (!r.compared) {
    return `${app}: ${verified}; its driver replaces the data whole, so entries are not compared with the live data`;
  }
  return `${app}: ${r.added} added, ${r.removed} removed, ${r.changed} changed, ${r.unchanged} unchanged; ${verified}`;
}

export async function importCommand(client: FerryClient, opts: ImportOptions): Promise<number> {
  if (opts.input === undefined && process.stdin.isTTY) {
    throw new UsageError("refusing to read an archive from a terminal; use -i FILE or a pipe");
  }
  if (opts.dryRun && opts.keepOld) throw new UsageError("--keep-old has no meaning with --dry-run");
  // Opened before any request: ferryd would run the pre-restore hook first.
  const fd = opts.input === undefined ? undefined : openInputFile(opts.input);
  try {
    return await importFrom(client, opts, fd);
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

async function importFrom(
  client: FerryClient,
  opts: ImportOptions,
  fd: number | undefined,
): Promise<number> {
  if (opts.dryRun) {
    const r = await dryRun(client, opts.app, fd);
    if (r === "interrupted") return EXIT.INTERRUPTED;
    for (const c of r.changes) {
      const mark = c.change === "added" ? "+" : c.change === "removed" ? "-" : "~";
      const what = c.what === undefined ? "" : ` (${c.what.join(", ")})`;
      process.stdout.write(`${mark} ${shown(c.path)}${what}\n`);
    }
    if (r.truncated) {
      const more = r.added + r.removed + r.changed - r.changes.length;
      process.stdout.write(`… and ${more} more\n`);
    }
    for (const w of r.warnings ?? []) process.stderr.write(`ferry: warning: ${w}\n`);
    process.stderr.write(`dry run of ${summary(opts.app, r)}; nothing was changed\n`);
    return EXIT.OK;
  }

  // The restore's pass over a file that a dry run has already read: fileBody reads at the
  // descriptor's offset, so the second pass gets its own descriptor of the same file.
  let restoreFd = fd;
  const term = opts.yes === true ? undefined : questionTerminal();
  try {
    if (term !== undefined) {
      let question = `Replace the live data of ${opts.app} with the archive from stdin?`;
      if (fd !== undefined) {
        restoreFd = reopenInputFile(fd, opts.input as string);
        const r = await dryRun(client, opts.app, fd);
        if (r === "interrupted") {
          term.close();
          return EXIT.INTERRUPTED;
        }
        process.stderr.write(`${summary(opts.app, r)}\n`);
        question = `Restore ${opts.app} from ${shown(opts.input as string)}${r.removed > 0 ? ` (${r.removed} live entries will be deleted${opts.keepOld ? "" : "; --keep-old keeps them"})` : ""}?`;
      }
      if (!(await confirm(term, question))) {
        throw new FerryError(
          "CANCELLED",
          `import of ${opts.app} not confirmed; nothing was changed`,
        );
      }
    }

    const progress = new Progress(`import ${opts.app}`);
    let sent = 0;
    const source = body(restoreFd, (n) => {
      sent += n;
      progress.update(sent);
    });
    const r = await uploadRestore<RestoreAnswer>(
      client,
      opts.app,
      source,
      () => progress.clear(),
      opts.keepOld ? "keep_old=1" : "",
    );
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
    for (const k of r.kept ?? []) {
      process.stderr.write(`kept the replaced data of ${opts.app} at ${shown(k)}\n`);
    }
    return EXIT.OK;
  } finally {
    if (restoreFd !== undefined && restoreFd !== fd) closeSync(restoreFd);
  }
}

/**
 * The request body: the file at `fd` through fileBody (reused 1 MiB blocks, read from the
 * descriptor's current offset), or stdin through a counting stream.
 */
function body(fd: number | undefined, onBytes: (n: number) => void): BodyPump | Readable {
  if (fd !== undefined) return fileBody(fd, onBytes);
  const counter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onBytes(chunk.length);
      cb(null, chunk);
    },
  });
  process.stdin.pipe(counter);
  return counter;
}

/** Sends the archive as a dry run; progress on a terminal as for the restore itself. */
async function dryRun(
  client: FerryClient,
  app: string,
  fd: number | undefined,
): Promise<DryRunAnswer | "interrupted"> {
  const progress = new Progress(`dry run ${app}`);
  let sent = 0;
  const source = body(fd, (n) => {
    sent += n;
    progress.update(sent);
  });
  const r = await uploadRestore<DryRunAnswer>(
    client,
    app,
    source,
    () => progress.clear(),
    "dry_run=1",
  );
  progress.clear();
  if (r === "interrupted") {
    process.stderr.write(`ferry: dry run of ${app} interrupted; nothing was changed\n`);
  }
  return r;
}
