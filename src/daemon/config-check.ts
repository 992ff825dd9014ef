/**
 * `ferryd --check-config`: everything wrong with a config, in one pass, each with its file
 * and line, before it is put in service.
 *
 * 1. The schema (`analyseConfig`): syntax, unknown keys, wrong types, missing keys,
 *    unknown users and groups, for every application at once.
 * 2. Files the config names (`password_file`): the secret-file rule.
 * 3. The machine (src/drivers/inspect.ts, each driver's `inspect`): declared paths exist
 *    with the right type and owner, helper programs and hook programs are installed and
 *    only root (or the user they run as) can change them, setpriv is there when ferryd
 *    holds capabilities, the state directory would pass ferryd's start-up check, and
 *    `socket` is the path the installed socket unit (ferry.socket) listens on.
 *
 * A warning is printed but does not make the config invalid. Nothing is created, changed
 * or run.
 */
import { readdirSync, readFileSync } from "node:fs";
import { inspectStateDir } from "../core/state-dir.js";
import { secretPolicy } from "../core/trusted-file.js";
import type { CommonSettings } from "../drivers/common.js";
import { type InspectEnv, inspectHooks, inspectSetpriv } from "../drivers/inspect.js";
import {
  analyseConfig,
  type Config,
  type ConfigTrust,
  formatProblems,
  namedFileProblems,
  type Problem,
  readConfigSource,
} from "./config.js";

export interface CheckReport {
  /** The config as far as it validated. */
  config: Config;
  /** `FILE:LINE: key: message` lines, in line order; warnings say "warning:". */
  lines: string[];
  errors: number;
  warnings: number;
  /** A named file failed the secret-file rule (CONFIG_UNSAFE rather than CONFIG_INVALID). */
  unsafe: boolean;
}

/** The unit directories systemd reads system units from, highest precedence first. */
const UNIT_DIRS = [
  "/etc/systemd/system",
  "/run/systemd/system",
  "/usr/local/lib/systemd/system",
  "/usr/lib/systemd/system",
  "/lib/systemd/system",
];

/** The socket unit ferryd is activated by. */
export const SOCKET_UNIT = "ferry.socket";

/**
 * systemd's unit search path: `$SYSTEMD_UNIT_PATH` when set (a trailing `:` appends the
 * defaults, as systemd does), else the default directories.
 */
export function unitDirs(env: NodeJS.ProcessEnv = process.env): string[] {
  const given = env.SYSTEMD_UNIT_PATH;
  if (given === undefined || given === "") return UNIT_DIRS;
  const dirs = given.split(":").filter((d) => d !== "");
  return given.endsWith(":") ? [...dirs, ...UNIT_DIRS] : dirs;
}

function read(path: string): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
}

/** `ListenStream=` assignments of unit text in `[Socket]`, in order ("" resets). */
function listenAssignments(text: string): string[] {
  const out: string[] = [];
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header !== null) {
      section = header[1] as string;
      continue;
    }
    const m = /^ListenStream\s*=\s*(.*)$/.exec(line);
    if (m !== null && section === "Socket") out.push((m[1] as string).trim());
  }
  return out;
}

/**
 * The installed socket unit's ListenStream= values (the unit file where systemd would find
 * it, then its drop-ins `ferry.socket.d/*.conf` in name order, a drop-in in an earlier
 * directory hiding one of the same name later), or undefined when none is installed or it
 * is masked.
 */
export function installedSocketUnit(
  dirs: readonly string[] = unitDirs(),
): { file: string; listen: string[] } | undefined {
  let file: string | undefined;
  let text: string | undefined;
  for (const d of dirs) {
    const t = read(`${d}/${SOCKET_UNIT}`);
    if (t !== undefined) {
      file = `${d}/${SOCKET_UNIT}`;
      text = t;
      break;
    }
  }
  if (file === undefined || text === undefined || text.trim() === "") return undefined; // masked
  const dropIns = new Map<string, string>();
  for (const d of dirs) {
    let names: string[];
    try {
      names = readdirSync(`${d}/${SOCKET_UNIT}.d`);
    } catch {
      continue;
    }
    for (const n of names) {
      if (n.endsWith(".conf") && !dropIns.has(n)) dropIns.set(n, `${d}/${SOCKET_UNIT}.d/${n}`);
    }
  }
  let listen: string[] = [];
  const texts = [
    text,
    ...[...dropIns.keys()].sort().map((n) => read(dropIns.get(n) as string) ?? ""),
  ];
  for (const t of texts) {
    for (const v of listenAssignments(t)) listen = v === "" ? [] : [...listen, v];
  }
  return { file, listen };
}

/** `socket` against the installed socket unit, where one is installed. */
export function socketUnitProblems(socket: string, dirs?: readonly string[]): Problem[] {
  const unit = installedSocketUnit(dirs);
  if (unit === undefined) return [];
  if (unit.listen.includes(socket)) return [];
  const listens =
    unit.listen.length === 0
      ? "no ListenStream= path"
      : `ListenStream=${unit.listen.join(", ListenStream=")}`;
  return [
    {
      path: ["socket"],
      message: `is ${socket}, but the installed ${unit.file} has ${listens}: ferryd would be started on a socket ferry does not look for. Make them equal (socket = "…" here, or ListenStream= in a drop-in: systemctl edit ${SOCKET_UNIT})`,
    },
  ];
}

/**
 * Checks the config file as ferryd with `trust` would read it, and the machine it is to
 * run on. Throws only when the file itself cannot be read safely (CONFIG_UNSAFE,
 * CONFIG_INVALID for a syntax error or an unreadable file); every other problem is in the
 * report.
 */
export function checkConfigFile(file: string, trust: ConfigTrust): CheckReport {
  const { path, source } = readConfigSource(file, trust);
  const { problems, config } = analyseConfig(source, path);
  const named = namedFileProblems(config, secretPolicy(trust.uid, trust.privileged));
  problems.push(...named.problems);

  const env: InspectEnv = { uid: trust.uid, privileged: trust.privileged };
  for (const app of config.apps.values()) {
    const at = ["apps", app.name];
    const findings = [
      ...(app.impl.inspect?.(app.settings, env) ?? []),
      ...inspectHooks((app.settings as unknown as CommonSettings).hooks),
    ];
    for (const f of findings) {
      problems.push({ path: [...at, ...f.key], message: f.message, warning: f.warning });
    }
  }
  if (config.apps.size > 0) {
    for (const f of inspectSetpriv(env)) problems.push({ path: f.key, message: f.message });
  }
  for (const f of inspectStateDir(config.stateDir, trust.privileged)) {
    problems.push({ path: ["state_dir"], message: f.message, warning: f.warning });
  }
  problems.push(...socketUnitProblems(config.socket));

  const warnings = problems.filter((p) => p.warning === true).length;
  return {
    config,
    lines: formatProblems(path, source, problems),
    errors: problems.length - warnings,
    warnings,
    unsafe: named.unsafe,
  };
}
