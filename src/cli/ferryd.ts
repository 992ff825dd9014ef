#!/usr/bin/env node
/**
 * ferryd — the service process. See `ferryd --help` and docs/ops.md.
 */
import { mkdirSync } from "node:fs";
import { parseArgs } from "node:util";
import { readCaps, SERVICE_CAPS } from "../core/caps.js";
import { FerryError } from "../core/errors.js";
import { createLogger } from "../core/log.js";
import { lookupUid, lookupUser } from "../core/users.js";
import { VERSION } from "../core/version.js";
import { assertConfigSafe, DEFAULT_CONFIG, loadConfig } from "../daemon/config.js";
import { DROPPED_ENV, execAsServiceUser } from "../daemon/privilege.js";
import { FerryDaemon } from "../daemon/server.js";
import { prepareSocketPath } from "../daemon/socket.js";
import { drivers } from "../drivers/all.js";
import { EXIT, UsageError } from "./exit-codes.js";
import { runMain } from "./main.js";

const HELP = `Usage: ferryd [--config FILE] [--user NAME] [--allow-root]
       ferryd --check-config [--config FILE]

The Ferry service process: serves application data to the backup software over a
peer-checked Unix socket.

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
  if (positionals.length > 0)
    throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const configPath = values.config ?? process.env.FERRY_CONFIG ?? DEFAULT_CONFIG;

  if (values["check-config"]) {
    const config = loadConfig(configPath);
    process.stdout.write(`${config.path}: valid, ${config.apps.size} application(s)\n`);
    return EXIT.OK;
  }

  const uid = process.getuid?.() ?? -1;
  if (uid === 0 && values.user !== undefined && process.env[DROPPED_ENV] === undefined) {
    const user = lookupUser(values.user);
    if (user === undefined)
      throw new UsageError(`--user: no such user ${JSON.stringify(values.user)}`);
    if (user.uid === 0) throw new UsageError("--user must name a user other than root");
    loadConfig(configPath); // fail here, as root, with a clear message rather than after the switch
    const args = process.argv
      .slice(1)
      .filter((a, i, all) => a !== "--user" && all[i - 1] !== "--user" && !a.startsWith("--user="));
    execAsServiceUser(user, args);
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
  if (privileged && uid !== 0) assertConfigSafe(configPath, uid, process.getgroups?.() ?? []);
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

  // Finish or roll back restores a crash interrupted, before serving anything.
  mkdirSync(config.stateDir, { recursive: true, mode: 0o700 });
  for (const driver of drivers.values()) driver.recover?.(config.stateDir, log);

  const daemon = new FerryDaemon(config, identity, log);
  prepareSocketPath(config.socket, uid);
  await daemon.listen({ path: config.socket });
  log.info(
    {
      version: VERSION,
      uid,
      gid: identity.gid,
      user: identity.user,
      capabilities: caps.effective,
      ambient: caps.ambient,
      socket: config.socket,
      apps: [...config.apps.keys()],
    },
    "ferryd listening",
  );

  return new Promise((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, "shutting down");
      daemon.close().then(() => resolve(EXIT.OK));
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
  });
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
