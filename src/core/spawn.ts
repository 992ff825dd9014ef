/**
 * Running helper programs (pg_dump, mariadb-dump, sqlite3, user commands, hooks) as an
 * application's own OS user, with nothing of ferryd's privilege.
 *
 * A child started by Node's spawn({uid, gid}) from a process holding ambient capabilities
 * keeps them (measured; DESIGN.md), so helpers are started through
 * `setpriv --reuid --regid --init-groups --inh-caps=-all --ambient-caps=-all --nnp
 * --pdeathsig=KILL -- CMD …`: identity switched, every capability gone for good (empty
 * effective, permitted, inheritable and ambient sets, and no_new_privs so no set-uid or
 * file-capability binary can give any back), killed if ferryd dies.
 *
 * No shell is involved; the environment is clean (a fixed PATH, HOME/USER/LOGNAME of the
 * target user, LANG=C.UTF-8, plus what the driver passes); only stdio is inherited.
 * stderr is read concurrently (its last 64 KiB are kept for the error message); the child
 * gets SIGTERM at its timeout or on abort, then SIGKILL after a grace period.
 *
 * A helper succeeded only when it exited 0 (`done` resolves); the caller must also have
 * consumed stdout to its end.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import type { Readable, Writable } from "node:stream";
import { readCaps } from "./caps.js";
import { FerryError } from "./errors.js";

export const SAFE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const KILL_GRACE_MS = 5_000;
const STDERR_KEEP = 64 * 1024;

export interface HelperUser {
  name: string;
  uid: number;
  gid: number;
  home: string;
  /** Set only when the application's config says `allow_root = true` and this is root. */
  allowRoot?: boolean;
}

export interface HelperOptions {
  /** Program and arguments; argv[0] is looked up in SAFE_PATH (or `path`) unless absolute. */
  argv: string[];
  user: HelperUser;
  /** Extra environment variables (on top of the clean base). */
  env?: Record<string, string>;
  /** Extra directories searched for argv[0] before SAFE_PATH. */
  path?: string[];
  stdin?: "pipe" | "ignore";
  /** Where stdout goes: a pipe to read (default) or ignored. */
  stdout?: "pipe" | "ignore";
  timeoutMs: number;
  signal?: AbortSignal;
  cwd?: string;
  /** What the helper is, for messages ("pg_dump of shop"). */
  label: string;
}

export interface Helper {
  readonly child: ChildProcess;
  readonly stdout: Readable | null;
  readonly stdin: Writable | null;
  /** Resolves when the helper exited 0; rejects with a FerryError carrying its stderr. */
  readonly done: Promise<void>;
  /** SIGTERM now, SIGKILL after the grace period. */
  kill(): void;
  stderrText(): string;
}

/** Resolves a program name to an absolute executable path, without a shell. */
export function findProgram(name: string, extra: string[] = []): string {
  if (name.includes("/")) {
    if (!name.startsWith("/"))
      throw new FerryError("HELPER_FAILED", `${name}: helper paths must be absolute`);
    return name;
  }
  for (const dir of [...extra, ...SAFE_PATH.split(":")]) {
    const p = `${dir}/${name}`;
    try {
      accessSync(p, constants.X_OK);
      return p;
    } catch {}
  }
  throw new FerryError(
    "HELPER_FAILED",
    `${name} is not installed (searched ${[...extra, SAFE_PATH].join(":")})`,
  );
}

let setprivPath: string | undefined;

/**
 * The argv that runs `argv` as `user` with no capabilities. In user mode (ferryd holds no
 * capabilities) a helper for ferryd's own uid is run directly; any other user is refused,
 * since switching needs CAP_SETUID.
 */
export function dropArgv(argv: string[], user: HelperUser): string[] {
  const myUid = process.getuid?.() ?? -1;
  const caps = readCaps();
  if (myUid !== 0 && caps.effective.length === 0 && caps.permitted.length === 0) {
    if (user.uid !== myUid) {
      throw new FerryError(
        "HELPER_FAILED",
        `cannot run a helper as ${user.name} (uid ${user.uid}): ferryd runs without capabilities as uid ${myUid}`,
      );
    }
    return argv;
  }
  if (user.uid === 0 && user.allowRoot !== true) {
    throw new FerryError(
      "HELPER_FAILED",
      "refusing to run a helper as root (set allow_root = true to permit it)",
    );
  }
  setprivPath ??= findProgram("setpriv");
  return [
    setprivPath,
    `--reuid=${user.uid}`,
    `--regid=${user.gid}`,
    "--init-groups",
    "--inh-caps=-all",
    "--ambient-caps=-all",
    // No --bounding-set: shrinking it needs CAP_SETPCAP, which ferryd does not hold. With
    // empty permitted/inheritable/ambient sets and no_new_privs, nothing can be regained.
    "--nnp",
    "--pdeathsig=KILL",
    "--",
    ...argv,
  ];
}

export function runHelper(opts: HelperOptions): Helper {
  const [prog, ...args] = opts.argv;
  if (prog === undefined) throw new FerryError("HELPER_FAILED", `${opts.label}: empty command`);
  const argv = dropArgv([findProgram(prog, opts.path), ...args], opts.user);
  const env: Record<string, string> = {
    PATH: [...(opts.path ?? []), SAFE_PATH].join(":"),
    HOME: opts.user.home,
    USER: opts.user.name,
    LOGNAME: opts.user.name,
    LANG: "C.UTF-8",
    ...opts.env,
  };
  const child = spawn(argv[0] as string, argv.slice(1), {
    env,
    cwd: opts.cwd ?? "/",
    stdio: [opts.stdin ?? "ignore", opts.stdout ?? "pipe", "pipe"],
    detached: true, // own process group, so a timeout kills the helper's children too
    shell: false,
  });

  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (s: string) => {
    stderr = (stderr + s).slice(-STDERR_KEEP);
  });
  // An EPIPE on stdin (helper exited early) is reported through the exit status instead.
  child.stdin?.on("error", () => {});

  let reason: string | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  const signalGroup = (sig: NodeJS.Signals) => {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      child.kill(sig);
    }
  };
  const kill = () => {
    signalGroup("SIGTERM");
    killTimer ??= setTimeout(() => signalGroup("SIGKILL"), KILL_GRACE_MS);
    killTimer.unref();
  };
  const timer = setTimeout(() => {
    reason = `timed out after ${Math.round(opts.timeoutMs / 1000)}s`;
    kill();
  }, opts.timeoutMs);
  timer.unref();
  const onAbort = () => {
    reason ??= "cancelled";
    kill();
  };
  opts.signal?.addEventListener("abort", onAbort, { once: true });
  if (opts.signal?.aborted) onAbort();

  const done = new Promise<void>((resolve, reject) => {
    child.once("error", (err) => {
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      reject(
        new FerryError("HELPER_FAILED", `${opts.label}: could not start: ${err.message}`, {
          cause: err,
        }),
      );
    });
    child.once("close", (code, sig) => {
      clearTimeout(timer);
      if (killTimer !== undefined) clearTimeout(killTimer);
      opts.signal?.removeEventListener("abort", onAbort);
      if (code === 0 && reason === undefined) return resolve();
      const tail = stderr.trim().split("\n").slice(-20).join("\n");
      const how = reason ?? (sig !== null ? `was killed by ${sig}` : `exited with status ${code}`);
      const code2 = reason?.startsWith("timed out")
        ? "HELPER_TIMEOUT"
        : reason === "cancelled"
          ? "CANCELLED"
          : "HELPER_FAILED";
      reject(new FerryError(code2, `${opts.label} ${how}${tail === "" ? "" : `: ${tail}`}`));
    });
  });
  done.catch(() => {}); // callers await it; never an unhandled rejection in between

  return {
    child,
    stdout: child.stdout,
    stdin: child.stdin,
    done,
    kill,
    stderrText: () => stderr,
  };
}
