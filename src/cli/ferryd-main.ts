/**
 * ferryd's command line, once src/cli/ferryd.ts has checked the code it is about to load:
 * arguments, help and version; the service's life is src/daemon/main.ts. See
 * `ferryd --help` and docs/ops.md.
 */

import { parseArgs } from "node:util";
import { SERVICE_CAPS } from "../core/caps.js";
import { FerryError } from "../core/errors.js";
import { lookupUser } from "../core/users.js";
import { VERSION } from "../core/version.js";
import { DEFAULT_CONFIG } from "../daemon/config.js";
import { checkConfig, runDaemon, switchToServiceUser } from "../daemon/main.js";
import { DROPPED_ENV, markInheritedCloexec } from "../daemon/privilege.js";
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
  --check-config   check the config and the machine, listing every problem with its
                   line: the schema, users, declared paths (type, owner), helper and
                   hook programs, the state directory, socket against ferry.socket;
                   exit 0 valid (warnings on stderr), 2 invalid
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

  // --user: the service user root switches to (it must exist and not be root).
  const user = values.user === undefined ? undefined : lookupUser(values.user);
  if (values.user !== undefined && user === undefined) {
    throw new UsageError(`--user: no such user ${JSON.stringify(values.user)}`);
  }
  if (values["check-config"]) {
    const report = checkConfig(configPath, user);
    const { config, errors, warnings } = report;
    if (errors > 0) {
      const counts = `${errors} error(s)${warnings > 0 ? `, ${warnings} warning(s)` : ""}`;
      throw new FerryError(
        report.unsafe ? "CONFIG_UNSAFE" : "CONFIG_INVALID",
        `${report.lines.join("\n")}\n${config.path}: invalid (${counts})`,
      );
    }
    if (warnings > 0) {
      process.stderr.write(`ferryd: warning: ${report.lines.join("\n")}\n`);
    }
    process.stdout.write(
      `${config.path}: valid, ${config.apps.size} application(s)${warnings > 0 ? `, ${warnings} warning(s)` : ""}\n`,
    );
    return EXIT.OK;
  }
  const uid = process.getuid?.() ?? -1;
  if (uid === 0 && user !== undefined && process.env[DROPPED_ENV] === undefined) {
    if (user.uid === 0) throw new UsageError("--user must name a user other than root");
    // The same arguments: the new process sees --user NAME with uid == NAME's and goes on.
    switchToServiceUser(configPath, user);
  }
  if (user !== undefined && user.uid !== uid) {
    throw new UsageError(
      `--user ${values.user}: ferryd is not running as root, so it cannot switch users`,
    );
  }
  return runDaemon({ configPath, allowRoot: values["allow-root"] === true, runCommand });
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
