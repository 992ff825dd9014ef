/**
 * Running the measured commands as real processes, as a given OS user, and timing them
 * from spawn to exit (so process start-up is part of every sample, for Ferry and for the
 * baseline alike).
 */
import { spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { delimiter, join } from "node:path";
import { type ProcessUsage, readTimed, timed } from "./usage.js";

export interface User {
  name: string;
  uid: number;
  gid: number;
}

const myUid = process.getuid?.() ?? -1;

/** argv prefix that runs `argv` as `user` with no capabilities (no-op if we already are). */
export function asUser(user: User | undefined, argv: string[]): string[] {
  if (user === undefined || user.uid === myUid) return argv;
  return [
    "setpriv",
    `--reuid=${user.uid}`,
    `--regid=${user.gid}`,
    "--init-groups",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    "--",
    ...argv,
  ];
}

/** `bash -c SCRIPT` with pipefail, positional arguments passed as $1, $2 … (no quoting). */
export function shell(script: string, ...args: string[]): string[] {
  return ["bash", "-c", `set -o pipefail; ${script}`, "bench", ...args];
}

export interface RunOptions {
  user?: User;
  env?: Record<string, string>;
  timeoutMs?: number;
  input?: string;
  /** Run the whole command (after the switch to `user`) under GNU time writing here; the
   * result then has its `usage` (CPU of it and every process it waited for, max RSS). */
  usageFile?: string;
}

export interface RunResult {
  seconds: number;
  stdout: string;
  stderr: string;
  usage?: ProcessUsage;
}

export class CommandError extends Error {}

function tail(text: string, n = 2000): string {
  return text.length <= n ? text : `…${text.slice(-n)}`;
}

/** Runs argv to completion; rejects unless it exits 0. stdout is kept (up to 4 MiB). */
export function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const switched = asUser(opts.user, argv);
  const full = opts.usageFile === undefined ? switched : timed(opts.usageFile, switched);
  return new Promise((resolve, reject) => {
    const started = process.hrtime.bigint();
    const child = spawn(full[0] as string, full.slice(1), {
      env: { ...process.env, ...opts.env },
      stdio: [opts.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
      timeout: opts.timeoutMs ?? 30 * 60_000,
      killSignal: "SIGKILL",
    });
    let out = "";
    let err = "";
    child.stdout?.on("data", (d: Buffer) => {
      if (out.length < 4 << 20) out += d.toString();
    });
    child.stderr?.on("data", (d: Buffer) => {
      err = tail(err + d.toString(), 16_000);
    });
    if (opts.input !== undefined) child.stdin?.end(opts.input);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      if (code === 0) {
        try {
          const usage = opts.usageFile === undefined ? undefined : readTimed(opts.usageFile);
          resolve({ seconds, stdout: out, stderr: err, usage });
        } catch (e) {
          reject(e);
        }
      } else
        reject(
          new CommandError(
            `${argv.join(" ")} failed (${signal ?? `exit ${code}`}): ${tail(err.trim(), 1500) || "(no stderr)"}`,
          ),
        );
    });
  });
}

/** The full path of an executable on $PATH (or the given absolute path), if any. */
export function which(cmd: string): string | undefined {
  const candidates = cmd.includes("/")
    ? [cmd]
    : (process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin")
        .split(delimiter)
        .concat(["/usr/sbin", "/sbin"])
        .map((d) => join(d, cmd));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {}
  }
  return undefined;
}

/** First line of `cmd ARGS` (a version string), or undefined when it cannot run. */
export async function versionOf(argv: string[]): Promise<string | undefined> {
  if (which(argv[0] as string) === undefined) return undefined;
  try {
    const r = await run(argv, { timeoutMs: 20_000 });
    return (r.stdout.trim() || r.stderr.trim()).split("\n")[0];
  } catch {
    return undefined;
  }
}
