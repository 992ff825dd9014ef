/**
 * The fuzzing target: a real ferryd in user mode (as the current user, --allow-root when
 * that is root) serving one files application, with a sentinel tree beside it, and the
 * oracles every fuzz input is judged by:
 *
 * - ferryd is still running and answers GET /v1/version on a new connection within 2 s;
 * - its descriptors and RSS stay under fixed bounds (peaks are recorded);
 * - nothing outside the application changed: the sentinel tree, the application's parent
 *   directory (no staging left), ferryd's restore journals (none left);
 * - a refused restore left the application's tree exactly as it was.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import {
  linkSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { request } from "node:http";
import { userInfo } from "node:os";
import { join } from "node:path";

const FERRYD = new URL("../src/cli/ferryd.js", import.meta.url).pathname;

/** Limits the fuzzed ferryd runs with: short, so that deadlines are exercised often. */
export const LIMITS = {
  idle_timeout: 2,
  request_timeout: 5,
  job_timeout: 60,
  max_connections: 64,
  max_header_bytes: 16 * 1024,
  max_body_bytes: 64 * 1024,
};
/** Descriptors ferryd may hold above its idle count (connections included). */
export const FD_SLACK = LIMITS.max_connections + 32;
/** RSS ferryd may reach, in kB. */
export const RSS_LIMIT_KB = 512 * 1024;

export class OracleError extends Error {}

export interface Target {
  dir: string;
  live: string;
  appParent: string;
  outside: string;
  socket: string;
  pid: number;
  baselineFds: number;
  peakFds: number;
  peakRssKb: number;
  /** Everything observable about the app tree (path → type, mode, size, content hash). */
  liveSnapshot(): string;
  /** Checks the oracles; `restoreRefused` adds "the app tree is as `before`". */
  check(what: string, before?: string): Promise<void>;
  log(): string;
  stop(): Promise<number | null>;
}

/** path → description of every entry below `root`, names as raw bytes (hex when odd). */
export function snapshot(root: string): string {
  const out: string[] = [];
  const walk = (rel: Buffer) => {
    const p = Buffer.concat([Buffer.from(root), rel.length > 0 ? Buffer.from("/") : rel, rel]);
    let st: ReturnType<typeof lstatSync>;
    try {
      st = lstatSync(p);
    } catch {
      out.push(`${rel.toString("hex")} vanished`);
      return;
    }
    let what: string;
    if (st.isSymbolicLink())
      what = `link ${readlinkSync(p, { encoding: "buffer" }).toString("hex")}`;
    else if (st.isFile()) what = `file ${st.size} ${digest(p)} nlink ${st.nlink}`;
    else if (st.isDirectory()) what = "dir";
    else what = `other ${st.mode}`;
    out.push(
      `${rel.toString("hex")} ${what} ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`,
    );
    if (st.isDirectory()) {
      let names: Buffer[];
      try {
        names = readdirSync(p, { encoding: "buffer" }).sort(Buffer.compare);
      } catch (err) {
        // A restored mode may lock even the owner out (the fuzzer runs as ferryd's uid).
        out.push(`${rel.toString("hex")} unreadable ${(err as NodeJS.ErrnoException).code}`);
        return;
      }
      for (const n of names) walk(rel.length === 0 ? n : Buffer.concat([rel, Buffer.from("/"), n]));
    }
  };
  walk(Buffer.alloc(0));
  return out.join("\n");
}

function digest(p: Buffer): string {
  try {
    return createHash("sha256").update(readFileSync(p)).digest("hex").slice(0, 16);
  } catch (err) {
    return `unreadable ${(err as NodeJS.ErrnoException).code}`;
  }
}

function kb(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(
    readFileSync(`/proc/${pid}/status`, "utf8"),
  );
  return Number(m?.[1] ?? 0);
}

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** GET /v1/version on a fresh connection; the status, or 0 if there was none within `ms`. */
export function version(socket: string, ms = 2000): Promise<number> {
  return new Promise((resolve) => {
    const req = request(
      { socketPath: socket, path: "/v1/version", headers: { Host: "ferry" }, agent: false },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
        res.on("error", () => resolve(0));
      },
    );
    const t = setTimeout(() => {
      req.destroy();
      resolve(0);
    }, ms);
    req.on("close", () => clearTimeout(t));
    req.on("error", () => resolve(0));
    req.end();
  });
}

/** Builds the application tree and starts ferryd. */
export async function startTarget(): Promise<Target> {
  const dir = mkdtempSync("/tmp/ferry-fuzz-");
  const appParent = join(dir, "apps");
  const live = join(appParent, "notes");
  const outside = join(dir, "outside");
  mkdirSync(join(live, "sub/deeper"), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(outside, "sentinel"), "must never change\n");
  writeFileSync(join(live, "a.txt"), "alpha\n", { mode: 0o640 });
  writeFileSync(join(live, "sub/b.txt"), "bravo\n".repeat(100), { mode: 0o600 });
  writeFileSync(join(live, "sub/deeper/c.bin"), Buffer.alloc(3000, 7));
  symlinkSync("../a.txt", join(live, "sub/link"));
  linkSync(join(live, "a.txt"), join(live, "sub/hard"));
  const socket = join(dir, "run/ferry.sock");
  const me = userInfo().username;
  const isRoot = process.getuid?.() === 0;
  const limits = Object.entries(LIMITS)
    .map(([k, v]) => `${k} = ${v}`)
    .join("\n");
  writeFileSync(
    join(dir, "ferry.toml"),
    `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n[limits]\n${limits}\nshutdown_grace = 1\n\n[apps.notes]\ndriver = "files"\npaths = ["${live}"]\nowner = "${me}"\nrestore = true\nallow_root = true\n`,
  );
  const args = [FERRYD, "--config", join(dir, "ferry.toml"), ...(isRoot ? ["--allow-root"] : [])];
  const child: ChildProcess = spawn(process.execPath, args, {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let log = "";
  child.stderr?.on("data", (d: Buffer) => {
    log += d.toString();
    if (log.length > 4 * 1024 * 1024) log = log.slice(-1024 * 1024);
  });
  const deadline = Date.now() + 60_000;
  while (!log.includes('"msg":"ferryd listening"')) {
    if (child.exitCode !== null) throw new Error(`ferryd exited ${child.exitCode}: ${log}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`ferryd did not start: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const pid = child.pid as number;
  const outsideBefore = snapshot(outside);
  const t: Target = {
    dir,
    live,
    appParent,
    outside,
    socket,
    pid,
    baselineFds: fdCount(pid),
    peakFds: 0,
    peakRssKb: 0,
    liveSnapshot: () => snapshot(live),
    log: () => log,
    async check(what, before) {
      if (child.exitCode !== null || child.signalCode !== null)
        throw new OracleError(`${what}: ferryd died (${child.exitCode ?? child.signalCode})`);
      const status = await version(socket);
      if (status !== 200)
        throw new OracleError(`${what}: GET /v1/version got no answer within 2 s (${status})`);
      const fds = fdCount(pid);
      const rss = kb(pid, "VmRSS");
      t.peakFds = Math.max(t.peakFds, fds);
      t.peakRssKb = Math.max(t.peakRssKb, kb(pid, "VmHWM"), rss);
      if (fds > t.baselineFds + FD_SLACK)
        throw new OracleError(`${what}: ferryd holds ${fds} descriptors (idle: ${t.baselineFds})`);
      if (rss > RSS_LIMIT_KB) throw new OracleError(`${what}: ferryd's RSS is ${rss} kB`);
      if (snapshot(outside) !== outsideBefore)
        throw new OracleError(`${what}: something outside the application changed`);
      if (before !== undefined) {
        // A refused restore may still be rolling back when its answer arrives.
        let same = false;
        let left: string[] = [];
        for (let i = 0; i < 50 && !same; i++) {
          left = readdirSync(appParent).filter((n) => n !== "notes");
          same = left.length === 0 && snapshot(live) === before && journals(dir).length === 0;
          if (!same) await new Promise((r) => setTimeout(r, 100));
        }
        if (left.length > 0) throw new OracleError(`${what}: staging left beside the app: ${left}`);
        if (journals(dir).length > 0) throw new OracleError(`${what}: a restore journal was left`);
        if (!same) throw new OracleError(`${what}: a refused restore changed the application`);
      }
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill("SIGTERM");
      const k = setTimeout(() => child.kill("SIGKILL"), 10_000);
      const [code] = (await once(child, "exit")) as [number | null];
      clearTimeout(k);
      removeAll(dir);
      return code;
    },
  };
  return t;
}

/** Removes the fuzzing directory, also when an input left directories its owner cannot write. */
function removeAll(dir: string): void {
  try {
    rmSync(dir, { recursive: true, force: true });
  } catch {
    execFileSync("chmod", ["-R", "u+rwx", dir]);
    rmSync(dir, { recursive: true, force: true });
  }
}

function journals(dir: string): string[] {
  try {
    return readdirSync(join(dir, "state/journal"));
  } catch {
    return [];
  }
}
