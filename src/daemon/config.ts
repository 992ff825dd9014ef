/**
 * ferryd's config: read once, validated against one strict schema, then frozen.
 *
 * Every error names the key and the line it is on. Defaults live here and nowhere else.
 * When ferryd holds capabilities, the file and every directory on its real path must not be
 * writable by ferryd's own uid (`loadConfig` through `openTrustedFile`): otherwise the
 * backup software, which runs as that uid, could declare /etc as an application and read
 * it through ferryd. Files the config names must be root's (`checkNamedFiles`).
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

interface Problem {
  path: (string | number)[];
  message: string;
}

function formatPath(path: readonly (string | number)[]): string {
  return path.map((p, i) => (typeof p === "number" ? `[${p}]` : i === 0 ? p : `.${p}`)).join("");
}

function configError(file: string, source: string, problems: Problem[]): FerryError {
  const lines = problems.map((p) => {
    const line = findKeyLine(source, p.path);
    const where = line === undefined ? file : `${file}:${line}`;
    return `${where}: ${formatPath(p.path) || "(top level)"}: ${p.message}`;
  });
  return new FerryError("CONFIG_INVALID", lines.join("\n"));
}

function zodProblems(error: z.ZodError, base: (string | number)[]): Problem[] {
  const out: Problem[] = [];
  for (const issue of error.issues) {
    const path = [...base, ...(issue.path as (string | number)[])];
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) out.push({ path: [...path, key], message: "unknown key" });
    } else {
      out.push({ path, message: issue.message });
    }
  }
  return out;
}

/** Parses and validates config text; `file` is only used in messages. */
export function parseConfig(source: string, file: string): Config {
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
  const top = topSchema.safeParse(raw);
  if (!top.success) throw configError(file, source, zodProblems(top.error, []));

  const problems: Problem[] = [];
  const clients: number[] = [];
  top.data.clients.forEach((c, i) => {
    if (typeof c === "number") clients.push(c);
    else {
      const u = lookupUser(c);
      if (u === undefined)
        problems.push({ path: ["clients", i], message: `no such user ${JSON.stringify(c)}` });
      else clients.push(u.uid);
    }
  });

  const apps = new Map<string, AppConfig>();
  for (const [name, table] of Object.entries(top.data.apps)) {
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
            ? `missing; one of: ${known}`
            : `unknown driver ${JSON.stringify(driverName)}; one of: ${known}`,
      });
      continue;
    }
    const parsed = driver.schema.safeParse(table);
    if (!parsed.success) {
      problems.push(...zodProblems(parsed.error, at));
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
  if (problems.length > 0) throw configError(file, source, problems);
  return Object.freeze({
    path: file,
    socket: top.data.socket,
    stateDir: top.data.state_dir,
    clients: Object.freeze(clients),
    limits: Object.freeze({ ...top.data.limits }),
    apps,
  });
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
 * Reads and validates the config file. With `trust.privileged`, the file and every
 * directory on its real path must be root's and writable by root alone (sticky
 * directories such as /tmp excepted for a root-owned entry; `openTrustedFile`), and the
 * text is read from the descriptor that was checked. Every
 * file the config names (keys ending in `_file`) must pass the secret-file rule
 * (`checkNamedFiles`).
 */
export function loadConfig(file: string, trust: ConfigTrust = processTrust()): Config {
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
  let source: string;
  try {
    source = readFileSync(opened.fd, "utf8");
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new FerryError("CONFIG_INVALID", `cannot read config ${path}: ${why}`, { cause: err });
  } finally {
    closeSync(opened.fd);
  }
  const config = parseConfig(source, path);
  checkNamedFiles(config, source, secretPolicy(trust.uid, trust.privileged));
  return config;
}

/**
 * Every file an application's config names (a key ending in `_file`, such as redis's
 * `password_file`) is read by ferryd, with its capabilities: each must pass the
 * secret-file rule (`openTrustedFile` under `policy`; see docs/security.md). Problems name
 * the key and its line.
 */
export function checkNamedFiles(config: Config, source: string, policy: TrustPolicy): void {
  const problems: string[] = [];
  let unsafe = false;
  for (const app of config.apps.values()) {
    for (const [key, value] of Object.entries(app.settings)) {
      if (!key.endsWith("_file") || typeof value !== "string") continue;
      const at = ["apps", app.name, key];
      const line = findKeyLine(source, at);
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
        problems.push(
          `${line === undefined ? config.path : `${config.path}:${line}`}: ${err.message}`,
        );
      }
    }
  }
  if (problems.length > 0) {
    throw new FerryError(unsafe ? "CONFIG_UNSAFE" : "CONFIG_INVALID", problems.join("\n"));
  }
}
