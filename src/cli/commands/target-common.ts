/**
 * What the restic and borg targets share (docs/repository.md, "Other targets"):
 *
 * - running the tool: its stderr read concurrently (the tail kept for the message), a
 *   success only when it exited 0, and a missing program named with its Debian package;
 * - a backup: ferryd's archive (always a full one) verified on the way into the tool —
 *   headers, end record, SHA-256, ferryd's `Ferry-Status` trailer. Anything wrong kills
 *   the tool with SIGKILL before its input ends, so it records nothing; so do Ctrl-C and
 *   SIGTERM. And if ferry itself dies (kill -9, out of memory), the tool dies with it:
 *   it runs under `setpriv --pdeathsig KILL`, so the end of its input never looks like
 *   the end of an archive it should record. One result per application, going on past
 *   failures, and the JSON summary;
 * - a restore: the stream uploaded to ferryd's restore (which verifies the whole archive
 *   before touching the application), and the report.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { accessSync, constants } from "node:fs";
import { delimiter, isAbsolute, join } from "node:path";
import type { Readable, Writable } from "node:stream";
import type { ErrorCode } from "../../api/errors.js";
import { ArchiveParser } from "../../core/archive/reader.js";
import type { TarHeader } from "../../core/archive/tar.js";
import { FerryError } from "../../core/errors.js";
import { errorFromBody, type FerryClient, parseStatusTrailer, readBody } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { formatBytes } from "../progress.js";
import { type RestoreAnswer, uploadRestore } from "../restore-upload.js";

export interface Tool {
  command: string;
  /** The Debian package that has it, for the message when it is missing. */
  debianPackage: string;
}

export interface ToolOptions {
  stdin: "pipe" | "ignore";
  /** Keep stdout (up to MAX_OUTPUT) as `done`'s value; otherwise the caller reads it. */
  collect: boolean;
  /** What it is, for messages ("borg import-tar of notes"). */
  what: string;
  /** The code of a non-zero exit. */
  code: ErrorCode;
  /**
   * In a session of its own: a Ctrl-C at the terminal then reaches ferry only, which kills
   * the tool, instead of the tool's own handling (borg writes a checkpoint archive).
   */
  detached?: boolean;
  /** Variables set for the tool where the environment does not set them itself. */
  envDefaults?: Record<string, string>;
  /** A more precise error for a given exit (an unknown archive, say); undefined: the default. */
  failure?: (exit: number | null, stderr: string) => FerryError | undefined;
}

export interface ToolRun {
  child: ChildProcess;
  /** Resolves with the collected stdout once the tool exited 0; rejects otherwise. */
  done: Promise<string>;
}

const STDERR_KEEP = 64 * 1024;
const MAX_OUTPUT = 64 * 1024 * 1024;

function tail(stderr: string): string {
  return stderr.trim().split("\n").slice(-3).join(" ");
}

/** The program `command` names on PATH (as execvp would find it), if any. */
export function onPath(command: string, path = process.env.PATH ?? ""): string | undefined {
  const candidates = command.includes("/")
    ? [command]
    : path
        .split(delimiter)
        .filter((d) => isAbsolute(d))
        .map((d) => join(d, command));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // not here
    }
  }
  return undefined;
}

/**
 * The argv that runs `program` so that it receives SIGKILL when ferry dies: a restic or
 * borg whose input simply ended would record what it had as a snapshot. setpriv is
 * util-linux's (a dependency of the Debian package); without it, the program runs as is.
 */
function dyingWithFerry(program: string, args: string[]): [string, string[]] {
  const setpriv = onPath(
    "setpriv",
    `${process.env.PATH ?? ""}${delimiter}/usr/bin${delimiter}/bin`,
  );
  return setpriv === undefined
    ? [program, args]
    : [setpriv, ["--pdeathsig", "KILL", "--", program, ...args]];
}

/** Starts `tool args…` with the caller's environment (the tool's own settings live there). */
export function runTool(tool: Tool, args: string[], o: ToolOptions): ToolRun {
  const program = onPath(tool.command);
  const [file, argv] = program === undefined ? [tool.command, args] : dyingWithFerry(program, args);
  // A missing program goes to spawn as it is, whose ENOENT is reported below.
  const child = spawn(file, argv, {
    stdio: [o.stdin, "pipe", "pipe"],
    env: { ...o.envDefaults, ...process.env },
    detached: o.detached === true,
  });
  let err = "";
  const out: Buffer[] = [];
  let outBytes = 0;
  child.stderr?.on("data", (d: Buffer) => {
    err = (err + d.toString()).slice(-STDERR_KEEP);
  });
  if (o.collect) {
    child.stdout?.on("data", (d: Buffer) => {
      outBytes += d.length;
      if (outBytes <= MAX_OUTPUT) out.push(d);
      else child.kill("SIGKILL");
    });
  }
  child.stdin?.on("error", () => {}); // a tool that exits early: its exit status says why
  const done = new Promise<string>((resolve, reject) => {
    child.on("error", (e: NodeJS.ErrnoException) => {
      reject(
        e.code === "ENOENT"
          ? new FerryError(
              "HELPER_FAILED",
              `${tool.command} is not installed or not on PATH (Debian package ${tool.debianPackage}: apt-get install ${tool.debianPackage})`,
            )
          : new FerryError("HELPER_FAILED", `${o.what} could not start: ${e.message}`),
      );
    });
    child.on("close", (exit: number | null, signal: string | null) => {
      if (outBytes > MAX_OUTPUT) {
        reject(new FerryError(o.code, `${o.what} printed more than ${formatBytes(MAX_OUTPUT)}`));
      } else if (exit === 0) {
        resolve(Buffer.concat(out).toString("utf8"));
      } else {
        reject(
          o.failure?.(exit, err) ??
            new FerryError(o.code, `${o.what} failed (${signal ?? `exit ${exit}`}): ${tail(err)}`),
        );
      }
    });
  });
  done.catch(() => {}); // awaited by the caller; never an unhandled rejection meanwhile
  return { child, done };
}

/** Writes `b` into the tool's stdin, waiting while the pipe is full (or the tool ended). */
export async function feed(stdin: Writable, run: ToolRun, b: Buffer): Promise<void> {
  if (stdin.write(b)) return;
  await Promise.race([
    new Promise<void>((resolve) => {
      const go = () => {
        stdin.off("drain", go);
        stdin.off("close", go);
        resolve();
      };
      stdin.on("drain", go);
      stdin.on("close", go);
    }),
    run.done,
  ]);
}

/**
 * Kills the tool (SIGKILL: it must not see the end of its input) and waits for it;
 * returns its own error if it had already ended with one (a broken pipe's reason).
 */
export async function abortTool(run: ToolRun): Promise<unknown> {
  const ended = run.child.exitCode !== null || run.child.signalCode !== null;
  if (!ended) run.child.kill("SIGKILL");
  const err = await run.done.then(
    () => undefined,
    (e: unknown) => e,
  );
  return ended ? err : undefined;
}

/** One application's archive on its way into a target. */
export interface TargetWriter {
  /** The next bytes of the archive (verified so far). */
  write(b: Buffer): Promise<void>;
  /**
   * The archive is verified whole: complete the tool's input, wait for it; extra result
   * fields. Until the input is complete, an abort of `signal` must still stop it (abortTool).
   */
  finish(
    archive: { bytes: number; sha256: string },
    signal: AbortSignal,
  ): Promise<Record<string, unknown>>;
  /** Something failed: the tool must record nothing (abortTool); its error, if it has one. */
  abort(): Promise<unknown>;
}

export interface BackupTarget {
  /** `restic:REPO`, `borg:REPO`, for messages. */
  label: string;
  /** Starts the tool for `app` (ferryd has answered with an archive). */
  open(app: string): Promise<TargetWriter>;
  /** A further check of each payload entry's header (throws to refuse the archive). */
  checkEntry?(h: TarHeader): void;
}

interface BackupResult {
  app: string;
  ok: true;
  bytes: number;
  sha256: string;
  [extra: string]: unknown;
}

async function backupOne(
  client: FerryClient,
  target: BackupTarget,
  app: string,
  signal: AbortSignal,
): Promise<BackupResult> {
  const res = await client.request("POST", `/v1/apps/${encodeURIComponent(app)}/backup`, signal);
  if (res.statusCode !== 200)
    throw errorFromBody(res.statusCode ?? 500, await readBody(res, 1 << 20));
  let writer: TargetWriter;
  try {
    writer = await target.open(app);
  } catch (err) {
    res.destroy(); // ferryd sees the client go and ends the job
    throw err;
  }
  const check = target.checkEntry;
  const parser = new ArchiveParser(check === undefined ? {} : { entry: (h) => check(h) });
  const hash = createHash("sha256");
  let bytes = 0;
  try {
    for await (const chunk of res) {
      const b = chunk as Buffer;
      await parser.write(b);
      hash.update(b);
      bytes += b.length;
      await writer.write(b);
    }
    const status = parseStatusTrailer(res.trailers["ferry-status"]);
    if (status !== undefined) throw status;
    parser.finish();
  } catch (err) {
    const toolErr = await writer.abort();
    // A verification failure is the story; a broken pipe is the tool's, which says why.
    throw err instanceof FerryError || toolErr === undefined ? err : toolErr;
  }
  const sha256 = hash.digest("hex");
  try {
    const extra = await writer.finish({ bytes, sha256 }, signal);
    return { app, ok: true, bytes, sha256, ...extra };
  } catch (err) {
    await writer.abort();
    throw err;
  }
}

/**
 * `ferry backup APP… | --all --to TARGET`: each application in turn, going on past
 * failures (exit 1 if any failed), stopping at Ctrl-C or SIGTERM (exit 130).
 */
export async function backupToTarget(
  client: FerryClient,
  target: BackupTarget,
  apps: string[] | "all",
  json: boolean,
): Promise<number> {
  const names =
    apps === "all"
      ? (await client.json<{ apps: { name: string }[] }>("GET", "/v1/apps")).apps.map((a) => a.name)
      : apps;
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const results: unknown[] = [];
  const failed: string[] = [];
  try {
    for (const app of names) {
      if (abort.signal.aborted) break;
      try {
        const r = await backupOne(client, target, app, abort.signal);
        results.push(r);
        if (!json) {
          const where = typeof r.archive === "string" ? ` archive ${r.archive}` : "";
          process.stderr.write(
            `backed up ${app} to ${target.label}${where}: ${formatBytes(r.bytes)}, sha256 ${r.sha256.slice(0, 16)}…\n`,
          );
        }
      } catch (err) {
        if (abort.signal.aborted) {
          process.stderr.write(
            `ferry: backup of ${app} interrupted; ${target.label} recorded nothing of it\n`,
          );
          break;
        }
        const code = err instanceof FerryError ? err.code : "INTERNAL";
        failed.push(app);
        results.push({ app, ok: false, error: { code, message: (err as Error).message } });
        if (!json)
          process.stderr.write(
            `ferry: backup of ${app} failed: ${(err as Error).message} [${code}]\n`,
          );
      }
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  if (json) process.stdout.write(`${JSON.stringify({ results, failed }, null, 2)}\n`);
  if (abort.signal.aborted) return EXIT.INTERRUPTED;
  return failed.length > 0 ? EXIT.FAILURE : EXIT.OK;
}

export interface RestoreReport {
  /** Extra result fields (JSON) and words (text) once ferryd answered. */
  fields: Record<string, unknown>;
  text: string;
  /** Something the tool's side found wrong although ferryd accepted: exit 1. */
  warning?: string;
}

/**
 * Uploads `source` to ferryd's restore of `app` and reports. `id` names what was restored
 * (`snapshot`, `archive`: key, value, and how the text shows it); `onFailure` stops the
 * tool feeding `source`; a FerryError from `sourceError()` (the stream's own failure)
 * wins over the transport error it caused; `report` adds to the result.
 */
export async function restoreFromTarget(
  client: FerryClient,
  o: {
    app: string;
    label: string;
    id: { key: string; value: string; shown: string };
    source: Readable;
    onFailure: () => void;
    sourceError?: () => unknown;
    report?: () => RestoreReport;
    json: boolean;
  },
): Promise<number> {
  let r: RestoreAnswer | "interrupted";
  try {
    r = await uploadRestore<RestoreAnswer>(client, o.app, o.source, o.onFailure);
  } catch (err) {
    const own = o.sourceError?.();
    throw own instanceof FerryError ? own : err;
  }
  if (r === "interrupted") {
    process.stderr.write(`ferry: restore of ${o.app} interrupted; ferryd rolls it back\n`);
    return EXIT.INTERRUPTED;
  }
  const extra = o.report?.() ?? { fields: {}, text: "" };
  if (o.json) {
    const out = { [o.id.key]: o.id.value, app: o.app, ...r, ...extra.fields };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
  } else {
    for (const w of r.warnings ?? []) process.stderr.write(`ferry: warning: ${w}\n`);
    process.stderr.write(
      `restored ${o.app} from ${o.label} ${o.id.key} ${o.id.shown}: ${r.entries} entries${extra.text}\n`,
    );
  }
  if (extra.warning === undefined) return EXIT.OK;
  process.stderr.write(`ferry: warning: ${extra.warning}\n`);
  return EXIT.FAILURE;
}
