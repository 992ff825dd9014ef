/**
 * A real ferryd for the benchmark, started the way production starts it (see env.ts), and
 * the `ferry` command lines that talk to it. Each case starts its own ferryd with only the
 * applications it needs, so a case whose driver does not exist yet cannot break the others.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { type BenchEnv, FERRY, FERRYD } from "./env.js";
import type { Sample } from "./measure.js";
import { asUser, run, shell } from "./proc.js";
import { type FerrydUsage, peakRss, processSample, readTimed, timed } from "./usage.js";

export interface Ferryd {
  pid: number;
  socket: string;
  log(): string;
  /** VmHWM (peak resident set) of the ferryd process, in bytes. */
  peakRss(): number;
  /** Starts one sample (VmHWM reset unless `resetPeak` is false); call the result after it. */
  sample(resetPeak?: boolean): () => FerrydUsage;
  stop(): Promise<void>;
}

/** TOML for one application; values are strings, numbers, booleans or string arrays. */
export function appToml(name: string, settings: Record<string, unknown>): string {
  const lines = [`[apps.${name}]`];
  for (const [k, v] of Object.entries(settings)) lines.push(`${k} = ${JSON.stringify(v)}`);
  return `${lines.join("\n")}\n`;
}

export async function startFerryd(env: BenchEnv, name: string, apps: string[]): Promise<Ferryd> {
  const socket = join(env.tmp, `run-${name}`, "ferry.sock");
  env.ownedDir(join(env.tmp, `run-${name}`), env.backupUser, 0o700);
  // Not pre-created: ferryd makes its state directory itself (root-owned when privileged).
  const stateDir = join(env.tmp, `state-${name}`);
  const config = env.writeConfig(
    name,
    `version = 1\nsocket = ${JSON.stringify(socket)}\nstate_dir = ${JSON.stringify(stateDir)}\n\n${apps.join("\n")}`,
  );
  const args = [process.execPath, FERRYD, "--config", config];
  if (env.isRoot) args.push("--user", env.backupUser.name);
  const child: ChildProcess = spawn(args[0] as string, args.slice(1), {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, FERRY_LOG_LEVEL: process.env.FERRY_LOG_LEVEL ?? "info" },
  });
  let log = "";
  child.stderr?.on("data", (d: Buffer) => {
    log = (log + d.toString()).slice(-64_000);
  });
  const deadline = Date.now() + 20_000;
  while (!log.includes('"msg":"ferryd listening"')) {
    if (child.exitCode !== null) throw new Error(`ferryd exited ${child.exitCode}: ${log.trim()}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`ferryd did not start within 20 s: ${log.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const pid = child.pid as number;
  return {
    pid,
    socket,
    log: () => log,
    peakRss: () => peakRss(pid),
    sample: (resetPeak = true) => processSample(pid, resetPeak),
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await once(child, "exit");
      clearTimeout(t);
    },
  };
}

/** argv of `ferry --socket SOCK ARGS…` as the backup user. */
export function ferryArgv(env: BenchEnv, socket: string, args: string[]): string[] {
  // Through its own first line, as users run it (the V8 flags there, src/cli/ferry.ts).
  return asUser(env.backupUser, [FERRY, "--socket", socket, ...args]);
}

export interface FerryRun {
  /** `ferry ARGS… | cat >/dev/null` instead of `ferry ARGS…` (output discarded). */
  discard?: boolean;
  env?: Record<string, string>;
  /** false: ferryd's peak is its lifetime peak (a ferryd started for this one sample). */
  resetPeak?: boolean;
}

/**
 * One measured `ferry` command against `daemon`: its wall time from spawn to exit, ferry's
 * own CPU seconds and max RSS (GNU time around ferry only, not the `| cat`), and ferryd's
 * CPU seconds and peak RSS over the same interval.
 */
export async function ferrySample(
  env: BenchEnv,
  daemon: Ferryd,
  args: string[],
  opts: FerryRun = {},
): Promise<Sample> {
  const file = env.usageFile();
  const argv = timed(file, ferryArgv(env, daemon.socket, args));
  const end = daemon.sample(opts.resetPeak ?? true);
  const r = await run(opts.discard ? shell('"$@" | cat >/dev/null', ...argv) : argv, {
    env: opts.env,
  });
  const ferryd = end();
  return { value: r.seconds, usage: { ferry: readTimed(file), ferryd } };
}

/** One measured baseline command: wall time, and its (and its children's) CPU and max RSS. */
export async function baselineSample(
  env: BenchEnv,
  argv: string[],
  opts: Parameters<typeof run>[1] = {},
): Promise<Sample> {
  const r = await run(argv, { ...opts, usageFile: env.usageFile() });
  return { value: r.seconds, usage: { baseline: r.usage } };
}

export interface FerryAbilities {
  /** Command words listed by `ferry --help`. */
  commands: string[];
  /** Driver types ferryd reports in GET /v1/version (e.g. "files.v1"). */
  drivers: string[];
  version: string;
}

/** What the built Ferry can do: its commands, and the drivers of a probe ferryd. */
export async function probeFerry(env: BenchEnv): Promise<FerryAbilities> {
  const help = await run([process.execPath, FERRY, "--help"]);
  const commands: string[] = [];
  let inCommands = false;
  for (const line of help.stdout.split("\n")) {
    if (/^Commands:/.test(line)) inCommands = true;
    else if (inCommands && /^\S/.test(line)) inCommands = false;
    else if (inCommands) {
      const m = /^ {2}([a-z][a-z-]*)\b/.exec(line);
      if (m !== null && !commands.includes(m[1] as string)) commands.push(m[1] as string);
    }
  }
  const daemon = await startFerryd(env, "probe", []);
  try {
    const v = await run(ferryArgv(env, daemon.socket, ["version", "--json"]));
    const info = JSON.parse(v.stdout) as { ferry: string; ferryd: { drivers: string[] } };
    return { commands, drivers: info.ferryd.drivers, version: info.ferry };
  } finally {
    await daemon.stop();
  }
}

export function hasDriver(abilities: FerryAbilities, name: string): boolean {
  return abilities.drivers.some((d) => d === name || d.startsWith(`${name}.`));
}
