/**
 * Running helper programs (pg_dump, mariadb-dump, sqlite3, user commands, hooks) as an
 * application's own OS user, with nothing of ferryd's privilege.
 *
 * A child started by Node's spawn({uid, gid}) from a process holding ambient capabilities
 * keeps them (measured; see docs/security.md), so helpers are started through
 * `setpriv --reuid --regid --init-groups --inh-caps=-all --ambient-caps=-all --nnp -- …`:
 * identity switched, every capability gone for good (empty effective, permitted,
 * inheritable and ambient sets, and no_new_privs so no set-uid or file-capability binary
 * can give any back).
 *
 * ferryd cannot signal a process of another uid (it has no CAP_KILL, on purpose), and
 * PR_SET_PDEATHSIG does not fire across uids, so every helper runs under the supervisor
 * (src/core/supervisor.ts), which has the helper's uid and kills the helper's process group
 * when ferryd asks over a control pipe, or when that pipe closes because ferryd died.
 *
 * No shell is involved; the environment is clean (a fixed PATH, HOME/USER/LOGNAME of the
 * target user, LANG=C.UTF-8, plus what the driver passes); only stdio reaches the helper. stderr is read concurrently (its last 64 KiB
 * are kept for the error message); the helper gets SIGTERM at its timeout or on abort,
 * then SIGKILL after a grace period.
 *
 * A helper succeeded only when it exited 0 (`done` resolves); the caller must also have
 * consumed stdout to its end.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import type { Readable, Writable } from "node:stream";
import { fileURLToPath } from "node:url";
import { readCaps } from "./caps.js";
import { FerryError } from "./errors.js";
import { setprivArgv } from "./setpriv.js";

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
  /** SIGTERM now, SIGKILL after the grace period (through the supervisor). */
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
  return setprivArgv({ user, keep: [] }, argv);
}

/** The supervisor script (src/core/supervisor.ts), beside this module in ferryd's own code. */
const SUPERVISOR = fileURLToPath(new URL("./supervisor.js", import.meta.url));

/**
 * Starts a helper as `opts.user`, under the supervisor (src/core/supervisor.ts), which runs
 * as that user too and is the only process that signals the helper: ferryd asks it over a
 * control pipe, and its end of file (ferryd closed it or died) kills the helper's whole
 * process group. No child-process error ever escapes as an unhandled event.
 */
export function runHelper(opts: HelperOptions): Helper {
  const [prog, ...args] = opts.argv;
  if (prog === undefined) throw new FerryError("HELPER_FAILED", `${opts.label}: empty command`);
  const flags = opts.stdin === "pipe" ? ["--stdin"] : [];
  const argv = dropArgv(
    [process.execPath, SUPERVISOR, ...flags, "--", findProgram(prog, opts.path), ...args],
    opts.user,
  );
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
    // 0: control pipe to the supervisor; 1, 2: the helper's stdout and stderr; 3: its stdin.
    stdio: ["pipe", opts.stdout ?? "pipe", "pipe", opts.stdin === "pipe" ? "pipe" : "ignore"],
    detached: true, // not in ferryd's process group: a terminal's ^C is ferryd's to handle
    shell: false,
  });
  const control = child.stdin;
  const stdin = opts.stdin === "pipe" ? (child.stdio[3] as Writable) : null;

  let stderr = "";
  child.stderr?.setEncoding("utf8");
  child.stderr?.on("data", (s: string) => {
    stderr = (stderr + s).slice(-STDERR_KEEP);
  });
  // EPIPE on stdin (helper exited early) or on the control pipe (supervisor gone) is
  // reported through the exit status instead.
  stdin?.on("error", () => {});
  control?.on("error", () => {});

  let reason: string | undefined;
  let killTimer: NodeJS.Timeout | undefined;
  let abandonTimer: NodeJS.Timeout | undefined;
  const finished = () => child.exitCode !== null || child.signalCode !== null;
  let closed = false;
  const kill = () => {
    if (closed || killTimer !== undefined) return;
    // The supervisor may already be gone (the app's user can kill it: it runs as that
    // user) while something of the helper's still holds its pipes open; ferryd is never
    // held by that: after the grace periods it stops waiting for the pipes.
    const supervised = !finished();
    if (supervised && control?.writable) control.write("T");
    killTimer = setTimeout(
      () => {
        // Closing the control pipe makes the supervisor SIGKILL the helper's group.
        control?.destroy();
        abandonTimer = setTimeout(() => {
          for (const s of child.stdio) s?.destroy();
          // A supervisor the app's user stopped (SIGSTOP) never exits, so 'close' would
          // never come: the helper is given up on here, and ferryd goes on.
          setTimeout(() => {
            if (closed) return;
            reason ??= "was given up on (its supervisor did not exit)";
            child.unref();
            settle(null, null);
          }, 1000).unref();
        }, KILL_GRACE_MS);
        abandonTimer.unref();
      },
      supervised ? KILL_GRACE_MS : 0,
    );
    killTimer.unref();
  };
  // Once the supervisor has exited, the control pipe has nothing left to say.
  child.once("exit", () => control?.destroy());
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

  let startError: Error | undefined;
  let settle: (code: number | null, sig: NodeJS.Signals | null) => void = () => {};
  const done = new Promise<void>((resolve, reject) => {
    // `on`, not `once`: a second 'error' must never become an uncaught exception.
    child.on("error", (err) => {
      startError ??= err;
    });
    settle = (code, sig) => {
      if (closed) return;
      closed = true;
      clearTimeout(timer);
      if (killTimer !== undefined) clearTimeout(killTimer);
      if (abandonTimer !== undefined) clearTimeout(abandonTimer);
      opts.signal?.removeEventListener("abort", onAbort);
      control?.destroy();
      if (startError !== undefined && child.pid === undefined) {
        return reject(
          new FerryError("HELPER_FAILED", `${opts.label}: could not start: ${startError.message}`, {
            cause: startError,
          }),
        );
      }
      if (code === 0 && reason === undefined) return resolve();
      const tail = stderr.trim().split("\n").slice(-20).join("\n");
      const how =
        reason ??
        (sig !== null
          ? `was killed by ${sig}`
          : code === 127 && /ferry supervisor: cannot start/.test(stderr)
            ? "could not be started"
            : `exited with status ${code}`);
      const code2 = reason?.startsWith("timed out")
        ? "HELPER_TIMEOUT"
        : reason === "cancelled"
          ? "CANCELLED"
          : "HELPER_FAILED";
      reject(new FerryError(code2, `${opts.label} ${how}${tail === "" ? "" : `: ${tail}`}`));
    };
    child.once("close", (code, sig) => settle(code, sig));
  });
  done.catch(() => {}); // callers await it; never an unhandled rejection in between

  return {
    child,
    stdout: child.stdout,
    stdin,
    done,
    kill,
    stderrText: () => stderr,
  };
}
