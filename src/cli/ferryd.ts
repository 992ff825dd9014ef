#!/usr/bin/env node
/**
 * ferryd — the service process. See `ferryd --help` and docs/ops.md.
 */
import { spawn } from "node:child_process";
import { Socket } from "node:net";
import { constants as osConstants } from "node:os";
import { parseArgs } from "node:util";
import { readCaps, SERVICE_CAPS } from "../core/caps.js";
import { FerryError } from "../core/errors.js";
import { createLogger } from "../core/log.js";
import { setprivArgv } from "../core/setpriv.js";
import { StateDir } from "../core/state-dir.js";
import { closeFd, socketPair } from "../core/sys.js";
import { groupsOf, lookupUid, lookupUser } from "../core/users.js";
import { VERSION } from "../core/version.js";
import { assertCodeSafe } from "../daemon/code-check.js";
import { type ConfigTrust, DEFAULT_CONFIG, loadConfig, processTrust } from "../daemon/config.js";
import { DROPPED_ENV, execAsServiceUser, markInheritedCloexec } from "../daemon/privilege.js";
import { FerryDaemon } from "../daemon/server.js";
import { prepareSocketPath } from "../daemon/socket.js";
import { listenFd, sdNotify } from "../daemon/systemd.js";
import { drivers } from "../drivers/all.js";
import { removeStaleSpools } from "../drivers/spool.js";
import { EXIT, UsageError } from "./exit-codes.js";
import { runMain } from "./main.js";

const HELP = `Usage: ferryd [--config FILE] [--user NAME] [--allow-root]
       ferryd run [--config FILE] [--user NAME] -- COMMAND [ARGS...]
       ferryd --check-config [--config FILE]

The Ferry service process: serves application data to the backup software over a
peer-checked Unix socket.

'ferryd run' serves no socket path: it starts COMMAND with ferryd's uid but none of its
capabilities, connected to ferryd through fd 3 (FERRY_FD=3, which ferry uses), and exits
with COMMAND's exit status. Under systemd, ferryd supports socket activation (LISTEN_FDS)
and Type=notify; SIGHUP reloads the config, SIGTERM stops gracefully.

Options:
  --config FILE    config file (default ${DEFAULT_CONFIG}, or $FERRY_CONFIG)
  --user NAME      when started as root: become NAME (the backup user), keeping only
                   the capabilities ferryd needs (${SERVICE_CAPS.join(", ")})
  --allow-root     permit running as uid 0 (not recommended)
  --check-config   validate the config and exit (0 valid, 2 invalid)
  --version        print the version
  -h, --help       this help
`;

async function main(): Promise<number> {
  markInheritedCloexec();
  let parsed: ReturnType<typeof parse>;
  try {
    parsed = parse();
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    process.stdout.write(HELP);
    return EXIT.OK;
  }
  if (values.version) {
    process.stdout.write(`ferryd ${VERSION}\n`);
    return EXIT.OK;
  }
  let runCommand: string[] | undefined;
  if (positionals[0] === "run") {
    const dashdash = process.argv.indexOf("--");
    runCommand = dashdash < 0 ? [] : process.argv.slice(dashdash + 1);
    if (runCommand.length === 0) {
      throw new UsageError(
        "run takes a command after --: ferryd run [OPTIONS] -- COMMAND [ARGS...]",
      );
    }
  } else if (positionals.length > 0) {
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  }
  const configPath = values.config ?? process.env.FERRY_CONFIG ?? DEFAULT_CONFIG;

  if (values["check-config"]) {
    const config = loadConfig(configPath, trustFor(values.user));
    process.stdout.write(`${config.path}: valid, ${config.apps.size} application(s)\n`);
    return EXIT.OK;
  }

  const uid = process.getuid?.() ?? -1;
  if (uid === 0 && values.user !== undefined && process.env[DROPPED_ENV] === undefined) {
    const user = lookupUser(values.user);
    if (user === undefined)
      throw new UsageError(`--user: no such user ${JSON.stringify(values.user)}`);
    if (user.uid === 0) throw new UsageError("--user must name a user other than root");
    // Fail here, as root, with a clear message rather than after the switch.
    loadConfig(configPath, trustFor(values.user));
    // The same arguments: the new process sees --user NAME with uid == NAME's and goes on.
    execAsServiceUser(user, process.argv.slice(1));
  }
  if (values.user !== undefined && uid !== 0) {
    const user = lookupUser(values.user);
    if (user === undefined || user.uid !== uid) {
      throw new UsageError(
        `--user ${values.user}: ferryd is not running as root, so it cannot switch users`,
      );
    }
  }
  if (uid === 0 && !values["allow-root"]) {
    throw new FerryError(
      "ROOT_REFUSED",
      "refusing to run as root: start ferryd with --user BACKUPUSER (or as that user with capabilities), or pass --allow-root",
    );
  }

  const caps = readCaps();
  const privileged = uid === 0 || caps.effective.length > 0;
  if (privileged) assertCodeSafe(uid);
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
    gids: process.getgroups?.() ?? [],
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
    prepareSocketPath(config.socket, uid);
    await daemon.listen({ path: config.socket });
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
        resolve(EXIT.OK);
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
function trustFor(userName: string | undefined): ConfigTrust {
  const user = userName === undefined ? undefined : lookupUser(userName);
  if (user === undefined || user.uid === 0 || user.uid === process.getuid?.()) {
    return processTrust();
  }
  return { uid: user.uid, gids: groupsOf(user), privileged: true };
}

function parse() {
  return parseArgs({
    args: process.argv.slice(2),
    allowPositionals: true,
    strict: true,
    options: {
      config: { type: "string", short: "c" },
      user: { type: "string", short: "u" },
      "allow-root": { type: "boolean" },
      "check-config": { type: "boolean" },
      version: { type: "boolean" },
      help: { type: "boolean", short: "h" },
    },
  });
}

runMain("ferryd", main);
