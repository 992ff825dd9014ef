/**
 * Running Ferry's programs in tests as real processes, optionally as another OS user
 * (through setpriv, with no capabilities), and collecting their output.
 */
import { execFileSync, spawn } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const FERRY = `${ROOT}dist/src/cli/ferry.js`;
export const FERRYD = `${ROOT}dist/src/cli/ferryd.js`;

export const isRoot = process.getuid?.() === 0;
export const needsRoot = isRoot ? false : "needs root (creates users, drops privileges)";

export interface TestUser {
  name: string;
  uid: number;
  gid: number;
}

/** Creates (once) a system user for tests; root only. */
export function ensureUser(name: string): TestUser {
  try {
    execFileSync("id", ["-u", name], { stdio: "ignore" });
  } catch {
    execFileSync("useradd", [
      "--system",
      "--no-create-home",
      "--shell",
      "/usr/sbin/nologin",
      "--user-group",
      name,
    ]);
  }
  const uid = Number(execFileSync("id", ["-u", name]).toString().trim());
  const gid = Number(execFileSync("id", ["-g", name]).toString().trim());
  return { name, uid, gid };
}

/** argv prefix that runs a command as `user` with no capabilities at all. */
export function asUser(user: { uid: number; gid: number } | undefined, argv: string[]): string[] {
  if (user === undefined) return argv;
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

export interface RunResult {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

export interface RunOptions {
  user?: TestUser;
  env?: Record<string, string>;
  input?: Buffer;
  timeoutMs?: number;
  /** A process group (and session) of its own, as a shell gives a job: `kill(-pid, …)`. */
  detached?: boolean;
}

/** Starts `argv` as `run` does, without waiting: its pid, and its result once it closed. */
export function start(
  argv: string[],
  opts: RunOptions = {},
): { pid: number; done: Promise<RunResult> } {
  const full = asUser(opts.user, argv);
  const child = spawn(full[0] as string, full.slice(1), {
    env: { ...process.env, ...opts.env },
    stdio: ["pipe", "pipe", "pipe"],
    timeout: opts.timeoutMs ?? 120_000,
    detached: opts.detached === true,
  });
  const done = new Promise<RunResult>((resolve, reject) => {
    const out: Buffer[] = [];
    let err = "";
    child.stdout.on("data", (d: Buffer) => out.push(d));
    child.stderr.on("data", (d: Buffer) => {
      err += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout: Buffer.concat(out), stderr: err }));
    child.stdin.on("error", () => {});
    child.stdin.end(opts.input);
  });
  return { pid: child.pid as number, done };
}

export function run(argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  return start(argv, opts).done;
}

/** `ferry --socket SOCK ARGS…` as `user`. */
export function ferry(socket: string, args: string[], opts: Parameters<typeof run>[1] = {}) {
  return run([process.execPath, FERRY, "--socket", socket, ...args], opts);
}

export interface ProcInfo {
  pid: number;
  argv: string[];
}

/**
 * Live processes whose real uid is `uid` (from /proc/PID/status), with their argv;
 * zombies count as gone. `argvIncludes` narrows to those with that exact argument.
 */
export function processesOf(uid: number, argvIncludes?: string): ProcInfo[] {
  const out: ProcInfo[] = [];
  for (const name of readdirSync("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const status = readFileSync(`/proc/${name}/status`, "utf8");
      const real = /^Uid:\s+(\d+)/m.exec(status)?.[1];
      const state = /^State:\s+(\S)/m.exec(status)?.[1];
      if (Number(real) !== uid || state === "Z" || state === "X") continue;
      const argv = readFileSync(`/proc/${name}/cmdline`, "utf8").split("\0").filter(Boolean);
      if (argvIncludes !== undefined && !argv.includes(argvIncludes)) continue;
      out.push({ pid: Number(name), argv });
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

/** Waits up to `ms` for `processesOf(uid, argvIncludes)` to be empty; returns what is left. */
export async function waitProcessesGone(
  uid: number,
  argvIncludes: string | undefined,
  ms: number,
): Promise<ProcInfo[]> {
  const deadline = Date.now() + ms;
  for (;;) {
    const left = processesOf(uid, argvIncludes);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((r) => setTimeout(r, 50));
  }
}
