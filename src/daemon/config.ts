/**
 * ferryd's config: read once, validated against one strict schema, then frozen.
 *
 * Every error names the key and the line it is on. Defaults live here and nowhere else.
 * When ferryd holds capabilities, the file and every directory above it must not be
 * writable by ferryd's own uid (`assertConfigSafe`): otherwise the backup software, which
 * runs as that uid, could declare /etc as an application and read it through ferryd.
 */
import { closeSync, fstatSync, openSync, readFileSync, statSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { parse, TomlError } from "smol-toml";
import { z } from "zod";
import { FerryError } from "../core/errors.js";
import { lookupUser } from "../core/users.js";
import { drivers } from "../drivers/all.js";
import { findKeyLine } from "./config-lines.js";

export const DEFAULT_CONFIG = "/etc/ferry/ferry.toml";
export const DEFAULT_SOCKET = "/run/ferry/ferry.sock";
export const DEFAULT_STATE_DIR = "/var/lib/ferry";
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
  driver: string;
  restore: boolean;
  /** The driver's validated config (its own type). */
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

/** Reads and validates the config file. */
export function loadConfig(file: string): Config {
  const path = resolve(file);
  let source: string;
  try {
    const fd = openSync(path, "r");
    try {
      if (!fstatSync(fd).isFile()) throw new Error("not a regular file");
      source = readFileSync(fd, "utf8");
    } finally {
      closeSync(fd);
    }
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
    throw new FerryError("CONFIG_INVALID", `cannot read config ${path}: ${why}`, { cause: err });
  }
  return parseConfig(source, path);
}

/**
 * Refuses a config that ferryd's own uid could change: the file, or any directory above
 * it, owned by that uid or writable by it through its owner, group or other bits. A
 * sticky directory (like /tmp) is fine when the entry below it is not the uid's own: others
 * may create names there but cannot replace ours. (POSIX ACLs are not consulted; keep the
 * config's directories free of ACLs granting the backup user write access.)
 */
export function assertConfigSafe(file: string, uid: number, gids: readonly number[]): void {
  let p = resolve(file);
  let childOwner: number | undefined;
  for (;;) {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(p);
    } catch (err) {
      throw new FerryError("CONFIG_INVALID", `cannot check ${p}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const writable =
      (st.uid === uid && (st.mode & 0o200) !== 0) ||
      (gids.includes(st.gid) && (st.mode & 0o020) !== 0) ||
      (st.mode & 0o002) !== 0;
    const stickyShield = st.isDirectory() && (st.mode & 0o1000) !== 0 && childOwner !== uid;
    if (st.uid === uid || (writable && !stickyShield)) {
      throw new FerryError(
        "CONFIG_UNSAFE",
        `${p} is ${st.uid === uid ? "owned" : "writable"} by ferryd's own uid ${uid}; ` +
          "the backup user could then declare any path as an application. " +
          "Make the config and its directories root-owned and not writable by that user.",
      );
    }
    if (p === "/") return;
    childOwner = st.uid;
    p = dirname(p);
  }
}
