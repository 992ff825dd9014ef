/**
 * What every repository command of `ferry` starts with (docs/repository.md, "Commands"):
 * the repository's path (`--repo` or FERRY_REPO), its password (FERRY_PASSWORD,
 * --password-file, --password-command or a prompt on the terminal), opening it, and the
 * warning on stderr for an unencrypted repository.
 */
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { FerryError } from "../../core/errors.js";
import { LocalBackend } from "../../repo/backend.js";
import { Repository } from "../../repo/repository.js";
import { UsageError } from "../exit-codes.js";

export interface RepoOptions {
  repo?: string;
  passwordFile?: string;
  passwordCommand?: string;
  json: boolean;
}

export function repoPath(o: RepoOptions): string {
  const p = o.repo ?? process.env.FERRY_REPO;
  if (p === undefined || p === "") {
    throw new UsageError("no repository: give --repo PATH or set FERRY_REPO");
  }
  return p;
}

/** The password from the first source that gives one, or undefined if none does. */
export async function readPassword(o: RepoOptions, confirm = false): Promise<string | undefined> {
  if (o.passwordFile !== undefined) {
    let text: string;
    try {
      // `-` and /dev/stdin read the descriptor ferry was given, not the path: reopening
      // /dev/stdin fails with EACCES when root redirected a file only root can open
      // (`runuser -u ferry-backup -- ferry … --password-file /dev/stdin < root-only-file`).
      const stdin = o.passwordFile === "-" || o.passwordFile === "/dev/stdin";
      text = readFileSync(stdin ? 0 : o.passwordFile, "utf8");
    } catch (err) {
      throw new FerryError(
        "BAD_REQUEST",
        `cannot read --password-file ${o.passwordFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    return nonEmpty(text.replace(/\r?\n$/, ""), "--password-file");
  }
  if (o.passwordCommand !== undefined) {
    let out: Buffer;
    try {
      out = execFileSync("/bin/sh", ["-c", o.passwordCommand], {
        stdio: ["ignore", "pipe", "inherit"],
        timeout: 60_000,
        maxBuffer: 1 << 16,
      });
    } catch (err) {
      throw new FerryError(
        "BAD_REQUEST",
        `--password-command failed: ${(err as Error).message.split("\n")[0]}`,
      );
    }
    return nonEmpty(out.toString("utf8").replace(/\r?\n$/, ""), "--password-command");
  }
  const env = process.env.FERRY_PASSWORD;
  if (env !== undefined) return nonEmpty(env, "FERRY_PASSWORD");
  if (process.stdin.isTTY && process.stderr.isTTY) {
    const pw = await prompt("repository password: ");
    if (confirm && (await prompt("repeat password: ")) !== pw) {
      throw new FerryError("BAD_REQUEST", "the passwords differ");
    }
    return nonEmpty(pw, "the password");
  }
  return undefined;
}

function nonEmpty(pw: string, where: string): string {
  if (pw === "") throw new FerryError("BAD_REQUEST", `${where} gives an empty password`);
  return pw;
}

/** Reads a line from the terminal without echo. */
async function prompt(question: string): Promise<string> {
  process.stderr.write(question);
  const stdin = process.stdin;
  stdin.setRawMode(true);
  stdin.resume();
  let text = "";
  try {
    for (;;) {
      const [chunk] = (await once(stdin, "data")) as [Buffer];
      for (const ch of chunk.toString("utf8")) {
        if (ch === "\r" || ch === "\n") return text;
        if (ch === "\u0003") throw new FerryError("CANCELLED", "interrupted");
        if (ch === "\u007f" || ch === "\b") text = text.slice(0, -1);
        else text += ch;
      }
    }
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write("\n");
  }
}

export function announce(repo: Repository): void {
  if (!repo.encrypted) {
    process.stderr.write(
      `ferry: warning: the repository ${repo.backend.location} is NOT encrypted (made with --insecure-no-password)\n`,
    );
  }
}

export async function openRepo(o: RepoOptions): Promise<Repository> {
  const backend = new LocalBackend(repoPath(o));
  let password: string | undefined;
  // An unencrypted repository needs no password; ask only when the config says encrypted.
  try {
    const cfg = JSON.parse((await backend.read("config", "config")).toString("utf8")) as {
      encrypted?: unknown;
    };
    if (cfg.encrypted !== false) password = await readPassword(o);
    else if (
      o.passwordFile !== undefined ||
      o.passwordCommand !== undefined ||
      process.env.FERRY_PASSWORD !== undefined
    ) {
      password = await readPassword(o);
    }
  } catch (err) {
    if (err instanceof FerryError) throw err;
    // Missing or malformed config: Repository.open says what is wrong.
  }
  const repo = await Repository.open(backend, { password });
  announce(repo);
  return repo;
}

/** Prints `value` as JSON with --json, else `text`. */
export function out(o: RepoOptions, value: unknown, text: string): void {
  process.stdout.write(o.json ? `${JSON.stringify(value, null, 2)}\n` : text);
}
