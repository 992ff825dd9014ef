/**
 * ferryd's config: read once, validated against one strict schema, then frozen.
 *
 * Every error names the key and the line it is on. Defaults live here and nowhere else.
 * When ferryd holds capabilities, the file and every directory on its real path must not be
 * writable by ferryd's own uid (`loadConfig` through `openTrustedFile`): otherwise the
 * backup software, which runs as that uid, could declare /etc as an application and read
 * it through ferryd. Files the config names must be root's (`checkNamedFiles`).
 *
 * Longer than 300 lines on purpose: the one schema, its defaults and the one-pass problem
 * report (every problem with its line) are kept in one place, so no default or check
 * lives anywhere else.
 */
import { closeSync, readFileSync } from "node:fs";
import { resolve } from "node:path";
import { parse, TomlError } from "smol-toml";
import { z } from "zod";
import { DEFAULT_SOCKET, DEFAULT_STATE_DIR } from "../api/defaults.js";
import { readCaps } from "../core/caps.js";
import { FerryError } from "../core/errors.js";
import {
  openTrustedFile,
  SECRET_ADVICE,
  secretPolicy,
  type TrustPolicy,
} from "../core/trusted-file.js";
import { lookupUser } from "../core/users.js";
import { drivers } from "../drivers/all.js";
import { rootRuleProblems } from "../drivers/common.js";
import type { Driver } from "../drivers/types.js";
import { findKeyLine } from "./config-lines.js";

export { DEFAULT_CONFIG } from "../api/defaults.js";
export const APP_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/;

const absolute = z.string().refine((p) => p.startsWith("/") && !p.includes("\0"), {
  message: "must be an absolute path",
});

const client = z.union([z.number().int().min(0).max(0xfffffffe), z.string().min(1)]);

const count = (max: number) => z.number().int().min(1).max(max);
const secs = z
  .number()
  .min(0.1)
  .max(30 * 24 * 3600);

/** `[limits]`: every resource a client can make ferryd spend, with its default. */
const limitsSchema = z.strictObject({
  /** Open connections at once; more are closed on accept. */
  max_connections: count(100_000).default(1024),
  /** Backups and restores running at once, over all applications. */
  max_jobs: count(1000).default(4),
  /** Backups and restores running at once for one application. */
  max_jobs_per_app: count(100).default(1),
  /** Largest request head (request line + headers). */
  max_header_bytes: count(1 << 20).default(16 * 1024),
  /** Largest request body on endpoints that take no archive. */
  max_body_bytes: count(1 << 30).default(64 * 1024),
  /** Seconds a connection may stay without traffic (and to send a full request head). */
  idle_timeout: secs.default(30),
  /** Seconds a request that is not a backup or restore may take in all. */
  request_timeout: secs.default(60),
  /** Seconds a backup or restore may take in all. */
  job_timeout: secs.default(6 * 3600),
  /** Seconds running jobs get to finish on SIGTERM before they are cancelled. */
  shutdown_grace: secs.default(30),
});

export type Limits = z.output<typeof limitsSchema>;

const topSchema = z.strictObject({
  version: z.literal(1, { message: "must be 1" }),
  socket: absolute.default(DEFAULT_SOCKET),
  state_dir: absolute.default(DEFAULT_STATE_DIR),
  clients: z.array(client).default([]),
  limits: limitsSchema.default(limitsSchema.parse({})),
  apps: z.record(z.string(), z.unknown()).default({}),
});

export interface AppConfig {
  name: string;
  /** The driver's name (`driver = "…"`). */
  driver: string;
  /** The driver itself, resolved once when the config was read. */
  impl: Driver<unknown>;
  restore: boolean;
  /** The driver's validated config (its own type, checked by `impl.schema`). */
  settings: Readonly<Record<string, unknown>>;
}

export interface Config {
  path: string;
  socket: string;
  stateDir: string;
  /** Extra uids allowed on the socket besides ferryd's own. */
  clients: readonly number[];
  limits: Readonly<Limits>;
  apps: ReadonlyMap<string, AppConfig>;
}

/** One thing wrong with a config: the key it is about and what is wrong, in words. */
export interface Problem {
  path: (string | number)[];
  message: string;
  /** A warning does not make the config invalid (only `ferryd --check-config` reports them). */
  warning?: boolean;
}

export function formatPath(path: readonly (string | number)[]): string {
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

/** `FILE:LINE: key: message` for each problem, in the order of the lines they are on. */
export function formatProblems(file: string, source: string, problems: Problem[]): string[] {
  return problems
    .map((p, i) => ({ p, i, line: findKeyLine(source, p.path) }))
    .sort((a, b) => (a.line ?? 0) - (b.line ?? 0) || a.i - b.i)
    .map(({ p, line }) => {
      const where = line === undefined ? file : `${file}:${line}`;
      return `${where}: ${formatPath(p.path) || "(top level)"}: ${p.warning ? "warning: " : ""}${p.message}`;
    });
}

function configError(file: string, source: string, problems: Problem[]): FerryError {
  return new FerryError("CONFIG_INVALID", formatProblems(file, source, problems).join("\n"));
}

/** The raw value at `path` in the parsed TOML, or undefined. */
function valueAt(raw: unknown, path: readonly (string | number)[]): unknown {
  let v = raw;
  for (const k of path) {
    if (typeof v !== "object" || v === null) return undefined;
    v = (v as Record<string | number, unknown>)[k];
  }
  return v;
}

/** "a string", "a number", … for a zod type name or a TOML value. */
function kindOf(expected: string): string {
  switch (expected) {
    case "string":
      return "a string";
    case "number":
    case "int":
      return "a number";
    case "boolean":
      return "a boolean (true or false)";
    case "array":
      return "an array";
    case "object":
    case "record":
      return "a table";
    default:
      return expected;
  }
}

function kindOfValue(v: unknown): string {
  if (Array.isArray(v)) return "an array";
  if (v instanceof Date) return "a date";
  if (typeof v === "object" && v !== null) return "a table";
  return kindOf(typeof v === "bigint" ? "number" : typeof v);
}

/**
 * zod's issues as problems in words: a key that is absent is "missing" (zod would say
 * "expected string, received undefined"), a wrong type names both types.
 */
function zodProblems(error: z.ZodError, base: (string | number)[], raw: unknown): Problem[] {
  const out: Problem[] = [];
  for (const issue of error.issues) {
    const path = [...base, ...(issue.path as (string | number)[])];
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) out.push({ path: [...path, key], message: "unknown key" });
      continue;
    }
    const value = valueAt(raw, path);
    const key = path[path.length - 1];
    if (
      value === undefined &&
      typeof key === "string" &&
      (issue.code === "invalid_type" ||
        issue.code === "invalid_value" ||
        issue.code === "invalid_union")
    ) {
      const what = issue.code === "invalid_type" ? ` (${kindOf(issue.expected)})` : "";
      out.push({ path, message: `missing: the key "${key}" is required${what}` });
    } else if (issue.code === "invalid_type" && value !== undefined) {
      out.push({ path, message: `must be ${kindOf(issue.expected)}, not ${kindOfValue(value)}` });
    } else {
      out.push({ path, message: issue.message });
    }
  }
  return out;
}

/** What `analyseConfig` found: every problem at once, and what did validate. */
export interface ConfigAnalysis {
  problems: Problem[];
  /**
   * The config as far as it validated: top-level keys that were wrong take their defaults,
   * and only the applications that validated are in `apps`.
   */
  config: Config;
}

/**
 * Validates config text and reports every problem in one pass — syntax aside, which stops
 * at the first error: top-level keys, and each application (its driver's schema, where
 * user names are checked per key, so a misspelt owner is reported together with a wrong
 * type beside it). `file` is only used in messages.
 */
export function analyseConfig(source: string, file: string): ConfigAnalysis {
  let raw: unknown;
  try {
    raw = parse(source);
  } catch (err) {
    if (err instanceof TomlError) {
      const first = err.message.split("\n")[0];
      throw new FerryError("CONFIG_INVALID", `${file}:${err.line}: ${first}`, { cause: err });
    }
    throw err;
  }
  const problems: Problem[] = [];
  const top = topSchema.safeParse(raw);
  let data: z.output<typeof topSchema>;
  if (top.success) data = top.data;
  else {
    problems.push(...zodProblems(top.error, [], raw));
    // Go on with what is valid, so the applications are checked in the same pass.
    const table = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>;
    const part = (key: keyof typeof topSchema.shape) => {
      const r = topSchema.shape[key].safeParse(table[key]);
      return r.success ? r.data : topSchema.shape[key].parse(undefined);
    };
    data = {
      version: 1,
      socket: part("socket") as string,
      state_dir: part("state_dir") as string,
      clients: (part("clients") as (string | number)[]).filter(
        (c) => typeof c === "number" || typeof c === "string",
      ),
      limits: part("limits") as Limits,
      apps: z.record(z.string(), z.unknown()).safeParse(table.apps).data ?? {},
    };
  }

  const clients: number[] = [];
  data.clients.forEach((c, i) => {
    if (typeof c === "number") clients.push(c);
    else {
      const u = lookupUser(c);
      if (u === undefined)
        problems.push({ path: ["clients", i], message: `no such user ${JSON.stringify(c)}` });
      else clients.push(u.uid);
    }
  });

  const apps = new Map<string, AppConfig>();
  for (const [name, table] of Object.entries(data.apps)) {
    const at = ["apps", name];
    if (!APP_NAME.test(name)) {
      problems.push({
        path: at,
        message: "application names are 1-63 of a-z 0-9 . _ - and start with a letter or digit",
      });
      continue;
    }
    if (typeof table !== "object" || table === null || Array.isArray(table)) {
      problems.push({ path: at, message: "must be a table" });
      continue;
    }
    const driverName = (table as Record<string, unknown>).driver;
    const driver = typeof driverName === "string" ? drivers.get(driverName) : undefined;
    if (driver === undefined) {
      const known = [...drivers.keys()].join(", ");
      problems.push({
        path: [...at, "driver"],
        message:
          driverName === undefined
            ? `missing: the key "driver" is required (one of: ${known})`
            : `unknown driver ${JSON.stringify(driverName)}; one of: ${known}`,
      });
      continue;
    }
    const parsed = driver.schema.safeParse(table);
    if (!parsed.success) {
      problems.push(...zodProblems(parsed.error, at, raw));
      // The root rule lives in the drivers' transforms, which do not run on a table with
      // other problems: checked here too, so it is reported in the same pass.
      problems.push(...rootRuleProblems(table as Record<string, unknown>, at));
      continue;
    }
    const settings = Object.freeze(parsed.data as Record<string, unknown>);
    apps.set(name, {
      name,
      driver: driver.name,
      impl: driver as Driver<unknown>,
      restore: settings.restore === true,
      settings,
    });
  }
  const seen = new Set<string>();
  const unique = problems.filter((p) => {
    const k = `${formatPath(p.path)}\0${p.message}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
  return {
    problems: unique,
    config: Object.freeze({
      path: file,
      socket: data.socket,
      stateDir: data.state_dir,
      clients: Object.freeze(clients),
      limits: Object.freeze({ ...data.limits }),
      apps,
    }),
  };
}

/** Parses and validates config text; throws CONFIG_INVALID listing every problem. */
export function parseConfig(source: string, file: string): Config {
  const { problems, config } = analyseConfig(source, file);
  if (problems.length > 0) throw configError(file, source, problems);
  return config;
}

/** Whose writes ferryd must not trust when it reads its config. */
export interface ConfigTrust {
  /** ferryd's (service) uid. */
  uid: number;
  /** Its groups. */
  gids: readonly number[];
  /** Whether ferryd holds (or will hold) capabilities: then the rules apply. */
  privileged: boolean;
}

/** The trust of the running process: its uid, groups and whether it holds capabilities. */
export function processTrust(): ConfigTrust {
  const uid = process.getuid?.() ?? -1;
  return {
    uid,
    gids: process.getgroups?.() ?? [],
    privileged: uid === 0 || readCaps().effective.length > 0,
  };
}

const CONFIG_ADVICE =
  "Whoever can change it could declare any path as an application. " +
  "Make the config and every directory above it (and above a symlink's target) root-owned " +
  "and writable by root alone, e.g. /etc/ferry/ferry.toml root:root 0644 in /etc/ferry root:root 0755.";

/**
 * Reads the config file's text. With `trust.privileged`, the file and every directory on
 * its real path must be root's and writable by root alone (sticky directories such as
 * /tmp excepted for a root-owned entry; `openTrustedFile`), and the text is read from the
 * descriptor that was checked.
 */
export function readConfigSource(
  file: string,
  trust: ConfigTrust = processTrust(),
): { path: string; source: string } {
  const path = resolve(file);
  // Root's alone, not merely "not the backup user's": an application's owner who could
  // change the config could declare /etc as an application, or itself as a client.
  const opened = openTrustedFile(path, {
    policy: trust.privileged ? { kind: "root-only", owners: [0] } : { kind: "any" },
    purpose: "config",
    unsafeCode: "CONFIG_UNSAFE",
    unreadableCode: "CONFIG_INVALID",
    advice: CONFIG_ADVICE,
  });
  try {
    return { path, source: readFileSync(opened.fd, "utf8") };
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new FerryError("CONFIG_INVALID", `cannot read config ${path}: ${why}`, { cause: err });
  } finally {
    closeSync(opened.fd);
  }
}

/**
 * Reads (`readConfigSource`) and validates the config file. Every file the config names
 * (keys ending in `_file`) must pass the secret-file rule (`namedFileProblems`).
 */
export function loadConfig(file: string, trust: ConfigTrust = processTrust()): Config {
  const { path, source } = readConfigSource(file, trust);
  const config = parseConfig(source, path);
  const named = namedFileProblems(config, secretPolicy(trust.uid, trust.privileged));
  if (named.problems.length > 0) {
    throw new FerryError(
      named.unsafe ? "CONFIG_UNSAFE" : "CONFIG_INVALID",
      formatProblems(path, source, named.problems).join("\n"),
    );
  }
  return config;
}

/**
 * Every file an application's config names (a key ending in `_file`, such as redis's
 * `password_file`) is read by ferryd, with its capabilities: each must pass the
 * secret-file rule (`openTrustedFile` under `policy`; see docs/security.md). `unsafe`:
 * one of them failed the rule (rather than being unreadable).
 */
export function namedFileProblems(
  config: Config,
  policy: TrustPolicy,
): { problems: Problem[]; unsafe: boolean } {
  const problems: Problem[] = [];
  let unsafe = false;
  for (const app of config.apps.values()) {
    for (const [key, value] of Object.entries(app.settings)) {
      if (!key.endsWith("_file") || typeof value !== "string") continue;
      const at = ["apps", app.name, key];
      try {
        const f = openTrustedFile(value, {
          policy,
          purpose: `${formatPath(at)}`,
          unsafeCode: "CONFIG_UNSAFE",
          unreadableCode: "CONFIG_INVALID",
          advice: SECRET_ADVICE,
          followLinks: false,
        });
        closeSync(f.fd);
      } catch (err) {
        if (!(err instanceof FerryError)) throw err;
        if (err.code === "CONFIG_UNSAFE") unsafe = true;
        // The message starts with the key already ("apps.x.password_file …").
        problems.push({ path: at, message: err.message.replace(/^\S+ /, "") });
      }
    }
  }
  return { problems, unsafe };
}
