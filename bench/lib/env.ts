/**
 * The benchmark's world: a temporary directory, the OS users that play the roles of
 * DESIGN.md, and the generated trees (made lazily, only for the cases that run).
 *
 * Run as root, the harness runs Ferry as in production: ferryd is started as root with
 * `--user ferry-bench-bk` and drops to that user keeping only its capabilities; `ferry`
 * runs as ferry-bench-bk; the data belongs to ferry-bench-app (mode 0700, unreadable by
 * the backup user). Baselines run as root, like a root backup would. Run as a normal user,
 * everything runs as that user and ferryd in user mode (no capabilities).
 *
 * Layout of the temporary directory (root-owned, 0755, so that ferryd's config and every
 * directory above it are not writable by the backup user):
 *   data/small, data/big      the generated trees (owned by the app user)
 *   etc/NAME.toml             one ferryd config per ferryd started
 *   run-NAME/, state-NAME/    its socket directory and state directory (backup user)
 *   work/                     scratch space of the cases
 *   usage/                    GNU time's output for each measured command (read, removed)
 */
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { BenchOptions } from "./args.js";
import { generateBigTree, generateSmallTree, type Tree } from "./data.js";
import { run, type User, which } from "./proc.js";
import { GNU_TIME } from "./usage.js";

export const ROOT = fileURLToPath(new URL("../../../", import.meta.url));
export const FERRY = join(ROOT, "dist/src/cli/ferry.js");
export const FERRYD = join(ROOT, "dist/src/cli/ferryd.js");

export type TreeName = "small" | "big";

export class BenchEnv {
  readonly tmp: string;
  readonly isRoot: boolean;
  /** Owner of the application data. */
  readonly appUser: User;
  /** ferryd's uid and the uid `ferry` runs as. */
  readonly backupUser: User;
  /** Size multiplier of the data: 1, 0.1 with --quick, times --scale. */
  readonly factor: number;
  private readonly trees = new Map<TreeName, Tree>();
  private extraUsers = new Map<string, User>();
  private usageFiles = 0;

  constructor(
    readonly options: BenchOptions,
    readonly say: (line: string) => void,
  ) {
    this.isRoot = process.getuid?.() === 0;
    this.factor = (options.quick ? 0.1 : 1) * options.scale;
    this.tmp = mkdtempSync(join(options.tmpdir ?? tmpdir(), "ferry-bench-"));
    chmodSync(this.tmp, 0o755);
    if (this.isRoot) {
      this.appUser = ensureUser("ferry-bench-app");
      this.backupUser = ensureUser("ferry-bench-bk");
    } else {
      const me = currentUser();
      this.appUser = me;
      this.backupUser = me;
    }
    for (const d of ["data", "etc", "work", "usage"]) mkdirSync(join(this.tmp, d), { mode: 0o755 });
  }

  /** A fresh path for GNU time's output of one command (written by the harness's user). */
  usageFile(): string {
    return join(this.tmp, "usage", `${++this.usageFiles}.txt`);
  }

  get mode(): string {
    return this.isRoot
      ? `service user: ferryd started as root with --user ${this.backupUser.name} (capabilities kept), ferry as ${this.backupUser.name}, data owned by ${this.appUser.name}, baselines as root`
      : `user mode: everything as ${this.appUser.name}, ferryd without capabilities`;
  }

  /** A user for a helper role (e.g. the PostgreSQL server); the current user when not root. */
  user(name: string): User {
    if (!this.isRoot) return this.appUser;
    let u = this.extraUsers.get(name);
    if (u === undefined) {
      u = ensureUser(name);
      this.extraUsers.set(name, u);
    }
    return u;
  }

  /** Makes `path` a directory owned by `user` with `mode`, creating parents as needed. */
  ownedDir(path: string, user: User, mode = 0o700): string {
    mkdirSync(path, { recursive: true, mode });
    chmodSync(path, mode);
    if (this.isRoot) chownSync(path, user.uid, user.gid);
    return path;
  }

  /** The generated tree, made on first use (and flushed to disk before any measurement). */
  async tree(name: TreeName): Promise<Tree> {
    const have = this.trees.get(name);
    if (have !== undefined) return have;
    const root = join(this.tmp, "data", name);
    const started = Date.now();
    const tree =
      name === "small"
        ? generateSmallTree(root, this.options.seed, this.factor)
        : generateBigTree(root, this.options.seed, this.factor);
    if (this.isRoot) {
      execFileSync("chown", ["-R", `${this.appUser.uid}:${this.appUser.gid}`, root]);
      chmodSync(root, 0o700);
    }
    await run(["sync"]);
    this.say(
      `generated ${name} tree: ${tree.files.length} files in ${tree.dirs} directories, ` +
        `${(tree.bytes / 1e6).toFixed(1)} MB in ${((Date.now() - started) / 1000).toFixed(1)} s`,
    );
    this.trees.set(name, tree);
    return tree;
  }

  generatedTrees(): Tree[] {
    return [...this.trees.values()];
  }

  writeConfig(name: string, body: string): string {
    const path = join(this.tmp, "etc", `${name}.toml`);
    writeFileSync(path, body, { mode: 0o644 });
    return path;
  }

  cleanup(): void {
    if (this.options.keep) {
      this.say(`kept ${this.tmp}`);
      return;
    }
    rmSync(this.tmp, { recursive: true, force: true });
  }
}

function currentUser(): User {
  const u = userInfo();
  return { name: u.username, uid: u.uid, gid: u.gid };
}

/** Creates (once) a system user without a home or shell; root only. */
export function ensureUser(name: string): User {
  try {
    execFileSync("id", ["-u", name], { stdio: "ignore" });
  } catch {
    execFileSync(
      "useradd",
      ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", name],
      { stdio: "ignore" },
    );
  }
  const uid = Number(execFileSync("id", ["-u", name]).toString().trim());
  const gid = Number(execFileSync("id", ["-g", name]).toString().trim());
  return { name, uid, gid };
}

/** Whether the harness can run at all: the built programs and the tools every case uses. */
export function missingBasics(): string | undefined {
  for (const tool of ["bash", "tar", "cat", "sync", "getconf"]) {
    if (which(tool) === undefined) return `${tool} is not installed`;
  }
  // Every sample's CPU seconds and peak RSS come from GNU time (the Debian package `time`;
  // bash's `time` keyword cannot write the maximum resident set).
  if (which(GNU_TIME) === undefined)
    return `${GNU_TIME} (GNU time, Debian package "time") is not installed`;
  // Every pipeline ends in /dev/null; a regular file there (a root process once renamed an
  // archive over it) would make the baselines write to disk and non-root helpers fail.
  if (!statSync("/dev/null").isCharacterDevice())
    return "/dev/null is not the null device (a regular file replaced it?); restore it first";
  if (process.getuid?.() === 0 && which("setpriv") === undefined)
    return "setpriv (util-linux) is not installed";
  try {
    execFileSync(process.execPath, [FERRY, "--help"], { stdio: "ignore" });
  } catch {
    return `${FERRY} does not run; build first (npm run build)`;
  }
  return undefined;
}
