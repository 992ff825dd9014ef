/**
 * Running the MariaDB client tools as the configured OS user (core/spawn.ts: no
 * capabilities, no shell, clean environment). The account is the OS user's own name
 * (unix_socket authentication, MariaDB's default for local system accounts) unless that
 * user's ~/.my.cnf says otherwise. Database names are passed after `--` or glued to
 * `--database=`, never where they could be read as an option.
 */
import { FerryError } from "../../core/errors.js";
import { type Helper, type HelperOptions, runHelper } from "../../core/spawn.js";
import { timeoutMs } from "../common.js";
import type { MariadbConfig } from "./config.js";

export function clientArgs(config: MariadbConfig): string[] {
  return [
    `--user=${config.user.name}`,
    ...(config.socket === undefined ? [] : [`--socket=${config.socket}`]),
  ];
}

export function myHelper(
  config: MariadbConfig,
  argv: string[],
  opts: Partial<HelperOptions> & { label: string; signal: AbortSignal },
): Helper {
  return runHelper({ argv, user: config.user, timeoutMs: timeoutMs(config), ...opts });
}

export function quoteIdent(name: string): string {
  return `\`${name.replace(/`/g, "``")}\``;
}

export function quoteLiteral(s: string): string {
  return `'${s.replace(/\\/g, "\\\\").replace(/'/g, "\\'").replace(/\0/g, "\\0")}'`;
}

/** Undoes the escaping of `mariadb --batch` output (\\, \t, \n, \0). */
function unescapeBatch(s: string): string {
  return s.replace(/\\(.)/g, (_, c: string) =>
    c === "n" ? "\n" : c === "t" ? "\t" : c === "0" ? "\0" : c,
  );
}

async function collect(h: Helper): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  h.stdout?.on("data", (c: Buffer) => {
    size += c.length;
    if (size <= 64 * 1024 * 1024) chunks.push(c);
    else h.kill();
  });
  await h.done;
  if (size > 64 * 1024 * 1024)
    throw new FerryError("INTERNAL", "mariadb answered more than 64 MiB");
  return Buffer.concat(chunks).toString("utf8");
}

/**
 * Runs SQL (one or more statements) with the mariadb client; returns the rows of the
 * output, tab-separated fields unescaped. `db` is the default database, if any.
 */
export async function mariadb(
  config: MariadbConfig,
  sql: string,
  signal: AbortSignal,
  db?: string,
): Promise<string[][]> {
  const sandbox = await sandboxArgs(config, signal);
  const h = myHelper(
    config,
    [
      "mariadb",
      ...clientArgs(config),
      "--batch",
      ...sandbox,
      "--skip-column-names",
      ...(db === undefined ? [] : [`--database=${db}`]),
      `--execute=${sql}`,
    ],
    { label: "mariadb", signal },
  );
  const text = await collect(h);
  return text
    .split("\n")
    .filter((l) => l !== "")
    .map((l) => l.split("\t").map(unescapeBatch));
}

/**
 * Runs an SQL script given on stdin (for statements with their own delimiters). Scripts
 * carry definitions that came from an archive (views, routines, triggers), so the client
 * runs them with `--sandbox` where it has it: no `\!`/`system`, `source`, `tee`.
 */
export async function mariadbScript(
  config: MariadbConfig,
  script: string,
  signal: AbortSignal,
  opts: { force?: boolean } = {},
): Promise<void> {
  const sandbox = await sandboxArgs(config, signal);
  const h = myHelper(
    config,
    ["mariadb", ...clientArgs(config), "--batch", ...sandbox, ...(opts.force ? ["--force"] : [])],
    { label: "mariadb", signal, stdin: "pipe" },
  );
  h.stdout?.resume();
  h.stdin?.end(script);
  await h.done;
}

export async function toolVersion(
  config: MariadbConfig,
  tool: string,
  signal: AbortSignal,
): Promise<string> {
  return (await collect(myHelper(config, [tool, "--version"], { label: tool, signal }))).trim();
}

let sandboxKnown: boolean | undefined;

/**
 * `["--sandbox"]` when the installed client has it, else `[]`. Every client run gets it:
 * in sandbox mode the client refuses the commands that reach outside the database
 * (`\!`/`system`, `source`, `tee`, `pager`), which an archive's SQL could otherwise use
 * to run programs as the app's OS user.
 */
export async function sandboxArgs(config: MariadbConfig, signal: AbortSignal): Promise<string[]> {
  return (await clientHasSandbox(config, signal)) ? ["--sandbox"] : [];
}

/** Whether this mariadb client has `--sandbox` (10.5.25, 10.6.18, 10.11.8, 11.x and later). */
export async function clientHasSandbox(
  config: MariadbConfig,
  signal: AbortSignal,
): Promise<boolean> {
  if (sandboxKnown === undefined) {
    const help = await collect(
      myHelper(config, ["mariadb", "--help"], { label: "mariadb --help", signal }),
    );
    sandboxKnown = /^\s+--sandbox\s/m.test(help);
  }
  return sandboxKnown;
}
