/**
 * Starting a real ferryd process for a test and waiting until it listens.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { asUser, FERRYD, type TestUser } from "./proc.js";

export interface RunningFerryd {
  child: ChildProcess;
  pid: number;
  /** Everything ferryd logged so far (JSON lines). */
  log(): string;
  stop(): Promise<void>;
}

export interface StartOptions {
  config: string;
  /** Started as root with `--user NAME` (privileged mode). */
  serviceUser?: TestUser;
  /** Started directly as this user (user mode). */
  runAs?: TestUser;
  extraArgs?: string[];
  env?: Record<string, string>;
}

export async function startFerryd(opts: StartOptions): Promise<RunningFerryd> {
  const args = [process.execPath, FERRYD, "--config", opts.config, ...(opts.extraArgs ?? [])];
  if (opts.serviceUser !== undefined) args.push("--user", opts.serviceUser.name);
  const argv = asUser(opts.runAs, args);
  const child = spawn(argv[0] as string, argv.slice(1), {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, ...opts.env },
  });
  let log = "";
  child.stderr?.on("data", (d: Buffer) => {
    log += d.toString();
  });
  const deadline = Date.now() + 60_000; // generous: a loaded CI machine starts node slowly
  while (!log.includes('"msg":"ferryd listening"')) {
    if (child.exitCode !== null) throw new Error(`ferryd exited ${child.exitCode}: ${log}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`ferryd did not start: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    child,
    pid: child.pid as number,
    log: () => log,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await once(child, "exit");
      clearTimeout(t);
    },
  };
}
