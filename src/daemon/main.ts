/**
 * ferryd's life once its arguments are understood (src/cli/ferryd-main.ts parses them):
 * the switch from root to the service user, the config, the state directory and crash
 * recovery, then serving — on the socket path, an inherited systemd socket, or the socket
 * pair of `ferryd run` — until SIGTERM, with SIGHUP reloading the config.
 */
import { spawn } from "node:child_process";
import { Socket } from "node:net";
import { constants as osConstants } from "node:os";
import { readCaps } from "../core/caps.js";
import { FerryError } from "../core/errors.js";
import { createLogger } from "../core/log.js";
import { setprivArgv } from "../core/setpriv.js";
import { StateDir } from "../core/state-dir.js";
import { closeFd, socketPair } from "../core/sys.js";
import { groupsOf, lookupUid, type UserInfo } from "../core/users.js";
import { VERSION } from "../core/version.js";
import { drivers } from "../drivers/all.js";
import { removeStaleSpools } from "../drivers/spool.js";
import { type ConfigTrust, loadConfig, processTrust } from "./config.js";
import { type CheckReport, checkConfigFile } from "./config-check.js";
import { execAsServiceUser } from "./privilege.js";
import { FerryDaemon } from "./server.js";
import { prepareSocketPath } from "./socket.js";
import { listenFd, sdNotify } from "./systemd.js";

export interface DaemonOptions {
  configPath: string;
  allowRoot: boolean;
  /** `ferryd run -- COMMAND…`: serve this command's socket pair instead of a socket. */
  runCommand?: string[] | undefined;
}

/**
 * `ferryd --check-config`: the config as ferryd started with `--user` would judge it, and
 * the machine it is to serve (src/daemon/config-check.ts).
 */
export function checkConfig(configPath: string, user: UserInfo | undefined): CheckReport {
  return checkConfigFile(configPath, trustFor(user));
}

/**
 * Started as root with `--user`: check the config as root (a clear message now rather than
 * after the switch), then become the service user — same pid, same arguments.
 */
export function switchToServiceUser(configPath: string, user: UserInfo): never {
  loadConfig(configPath, trustFor(user));
  return execAsServiceUser(user, process.argv.slice(1));
}

/** Runs ferryd until it is told to stop; resolves with its exit status. */
export async function runDaemon(opts: DaemonOptions): Promise<number> {
  const { configPath, runCommand } = opts;
  const uid = process.getuid?.() ?? -1;
  if (uid === 0 && !opts.allowRoot) {
    throw new FerryError(
      "ROOT_REFUSED",
      "refusing to run as root: start ferryd with --user BACKUPUSER (or as that user with capabilities), or pass --allow-root",
    );
  }

  const caps = readCaps();
  const privileged = uid === 0 || caps.effective.length > 0;
  const config = loadConfig(configPath);
  const log = createLogger("ferryd");
  const me = lookupUid(uid);
  const identity = {
    uid,
    gid: process.getgid?.() ?? -1,
    user: me?.name ?? String(uid),
    capabilities: caps.effective,
    privileged,
  };
  if (!privileged) {
    log.warn("running without capabilities (user mode): only data this user can read is served");
  }

  // The state directory is opened and checked once (root-owned 0700 when privileged) and
  // held for ferryd's life; then restores a crash interrupted are finished or rolled back,
  // before anything is served.
  const state = StateDir.open(config.stateDir, {
    privileged,
    uid,
  });
  removeStaleSpools(state, log);
  for (const driver of drivers.values()) driver.recover?.(state, config.apps, log);

  const daemon = new FerryDaemon(config, identity, log, state);
  const started = {
    version: VERSION,
    uid,
    gid: identity.gid,
    user: identity.user,
    capabilities: caps.effective,
    ambient: caps.ambient,
    apps: [...config.apps.keys()],
  };
  const graceMs = () => daemon.config.limits.shutdown_grace * 1000;

  if (runCommand !== undefined) {
    log.info({ ...started, command: runCommand }, "ferryd running a command");
    return runWith(daemon, runCommand, privileged, graceMs);
  }

  const inherited = listenFd();
  if (inherited !== undefined) {
    await daemon.listen({ fd: inherited });
  } else {
    const prepared = prepareSocketPath(config.socket, uid);
    await daemon.listen({ path: prepared.bindPath });
  }
  log.info(
    {
      ...started,
      socket: inherited === undefined ? config.socket : `fd ${inherited} (socket activation)`,
    },
    "ferryd listening",
  );
  sdNotify(`READY=1\nMAINPID=${process.pid}\nSTATUS=serving ${config.apps.size} application(s)`);

  process.on("SIGHUP", () => {
    sdNotify("RELOADING=1");
    try {
      daemon.reload(loadConfig(configPath));
    } catch (err) {
      log.error(
        { err: (err as Error).message },
        "config reload failed; keeping the current config",
      );
    }
    sdNotify("READY=1");
  });
  return new Promise((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal, jobs: daemon.jobs.runningCount() }, "shutting down");
      sdNotify("STOPPING=1");
      daemon.shutdown(graceMs()).then(() => {
        log.info("stopped");
        resolve(0);
      });
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
}

/**
 * `ferryd run -- COMMAND…`: serve one socket pair, whose other end is COMMAND's fd 3
 * (FERRY_FD=3). COMMAND runs with ferryd's uid but none of its capabilities; ferryd exits
 * with COMMAND's exit status.
 */
async function runWith(
  daemon: FerryDaemon,
  command: string[],
  privileged: boolean,
  graceMs: () => number,
): Promise<number> {
  const [mine, theirs] = socketPair();
  daemon.serveSocket(new Socket({ fd: mine, readable: true, writable: true }));
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (v !== undefined && !/^(LISTEN_|NOTIFY_SOCKET$|FERRYD_)/.test(k)) env[k] = v;
  }
  env.FERRY_FD = "3";
  delete env.FERRY_SOCKET;
  const argv = privileged ? setprivArgv({ keep: [] }, command) : command;
  const child = spawn(argv[0] as string, argv.slice(1), {
    stdio: ["inherit", "inherit", "inherit", theirs],
    env,
  });
  closeFd(theirs);
  const forward = (sig: NodeJS.Signals) => () => child.kill(sig);
  for (const sig of ["SIGTERM", "SIGINT", "SIGHUP"] as const) process.on(sig, forward(sig));
  const code = await new Promise<number>((resolve) => {
    child.once("error", (err) => {
      daemon.log.error({ err: err.message }, "could not start the command");
      resolve(127);
    });
    child.once("exit", (c, sig) =>
      resolve(c ?? 128 + (sig === null ? 0 : (osConstants.signals[sig] ?? 0))),
    );
  });
  await daemon.shutdown(graceMs());
  return code;
}

/** Whose writes the config check distrusts: the --user NAME root switches to, else ours. */
function trustFor(user: UserInfo | undefined): ConfigTrust {
  if (user === undefined || user.uid === 0 || user.uid === process.getuid?.()) {
    return processTrust();
  }
  return { uid: user.uid, gids: groupsOf(user), privileged: true };
}
