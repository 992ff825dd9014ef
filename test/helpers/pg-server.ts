/**
 * A throwaway PostgreSQL server for tests: initdb into a temp dir, started as a test OS
 * user on a Unix socket in its own directory (no TCP listener, so nothing collides with
 * the machine's own server), peer authentication, so the server role is the OS user.
 *
 * As root the server runs as the system user `ferry-pg` (created if missing), so a driver
 * that runs its helpers "as the application's user" really switches users. As any other
 * user it runs as that user (user mode).
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { lookupUser, type UserInfo } from "../../src/core/users.js";

/**
 * The bin directory of the newest installed PostgreSQL server: Debian's `postgresql`
 * package brings whatever major version the release ships (/usr/lib/postgresql/N/bin),
 * so the version is found, not assumed. FERRY_TEST_PG_BIN overrides it.
 */
export function findPgBin(root = "/usr/lib/postgresql"): string | undefined {
  const override = process.env.FERRY_TEST_PG_BIN;
  if (override !== undefined && override !== "") return override;
  let versions: string[];
  try {
    versions = readdirSync(root);
  } catch {
    return undefined;
  }
  const found = versions
    .filter((v) => /^\d+(\.\d+)?$/.test(v) && existsSync(join(root, v, "bin/postgres")))
    .sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  return found[0] === undefined ? undefined : join(root, found[0], "bin");
}

/** Where initdb, postgres, psql, pg_dump… are; a path that does not exist if none is installed. */
export const PG_BIN = findPgBin() ?? "/usr/lib/postgresql/NOT-INSTALLED/bin";

/** The test OS user: `name` (created with useradd --system) as root, else the current user. */
export function ensureTestUser(name: string): UserInfo {
  if (process.getuid?.() !== 0) {
    const me = lookupUser(String(process.getuid?.()));
    if (me === undefined) throw new Error("cannot look up the current user");
    return me;
  }
  let u = lookupUser(name);
  if (u === undefined) {
    try {
      execFileSync(
        "useradd",
        [
          "--system",
          "--user-group",
          "--home-dir",
          "/nonexistent",
          "--no-create-home",
          "--shell",
          "/usr/sbin/nologin",
          name,
        ],
        { stdio: "pipe" },
      );
    } catch (err) {
      // A concurrent test file may have created it meanwhile.
      if (lookupUser(name) === undefined) throw err;
    }
    u = lookupUser(name);
  }
  if (u === undefined) throw new Error(`useradd ${name} did not create the user`);
  return u;
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a !== null ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Runs a program as `user`, returns stdout; throws with stderr on a non-zero exit. */
export async function runAs(
  user: UserInfo,
  argv: string[],
  opts: { env?: Record<string, string>; input?: string; cwd?: string; timeoutMs?: number } = {},
): Promise<string> {
  const [cmd, ...args] = argv;
  const asRoot = process.getuid?.() === 0;
  const child = spawn(cmd as string, args, {
    ...(asRoot ? { uid: user.uid, gid: user.gid } : {}),
    env: {
      PATH: `${PG_BIN}:/usr/sbin:/usr/bin:/sbin:/bin`,
      HOME: "/tmp",
      USER: user.name,
      LANG: "C.UTF-8",
      ...opts.env,
    },
    cwd: opts.cwd ?? "/",
    stdio: ["pipe", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  child.stdout.setEncoding("utf8").on("data", (s: string) => (out += s));
  child.stderr.setEncoding("utf8").on("data", (s: string) => (err += s));
  child.stdin.on("error", () => {}); // a program that exits without reading its input
  child.stdin.end(opts.input ?? "");
  const timer = setTimeout(() => child.kill("SIGKILL"), opts.timeoutMs ?? 120_000);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (c) => resolve(c));
  });
  clearTimeout(timer);
  if (code !== 0) throw new Error(`${argv.join(" ")} exited ${code}: ${err.trim()}`);
  return out;
}

export interface PgServer {
  user: UserInfo;
  /** Directory of the Unix socket (the driver's `host`). */
  socketDir: string;
  port: number;
  dataDir: string;
  /** Environment for libpq tools run as `user`. */
  env: Record<string, string>;
  /** Runs SQL in `db` with psql as the server user; returns unaligned tuples. */
  sql(db: string, sql: string): Promise<string>;
  stop(): Promise<void>;
}

async function waitReady(
  env: Record<string, string>,
  user: UserInfo,
  proc: ChildProcess,
  log: () => string,
): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`postgres exited early: ${log()}`);
    try {
      await runAs(user, ["pg_isready", "--quiet"], { env });
      return;
    } catch {
      if (Date.now() > deadline) throw new Error(`postgres did not start: ${log()}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

export async function startPgServer(userName = "ferry-pg"): Promise<PgServer> {
  const user = ensureTestUser(userName);
  const root = mkdtempSync(join(tmpdir(), "ferry-pg-"));
  chmodSync(root, 0o700);
  if (process.getuid?.() === 0) chownSync(root, user.uid, user.gid);
  const dataDir = join(root, "data");
  const socketDir = root;
  const port = await freePort();
  const env = {
    PGHOST: socketDir,
    PGPORT: String(port),
    PGDATABASE: "postgres",
    PGUSER: user.name,
  };
  await runAs(
    user,
    [
      "initdb",
      "--pgdata",
      dataDir,
      "--username",
      user.name,
      "--auth-local=peer",
      "--auth-host=reject",
      "--encoding=UTF8",
      "--locale=C.UTF-8",
      "--no-sync",
    ],
    { env },
  );
  let log = "";
  const asRoot = process.getuid?.() === 0;
  const proc = spawn(
    `${PG_BIN}/postgres`,
    [
      "-D",
      dataDir,
      "-k",
      socketDir,
      "-p",
      String(port),
      "-c",
      "listen_addresses=",
      "-c",
      "fsync=off",
      "-c",
      "synchronous_commit=off",
      "-c",
      "full_page_writes=off",
      "-c",
      "max_connections=40",
      "-c",
      "shared_buffers=128MB",
    ],
    {
      ...(asRoot ? { uid: user.uid, gid: user.gid } : {}),
      env: { LANG: "C.UTF-8", PATH: "/usr/bin:/bin" },
      stdio: ["ignore", "ignore", "pipe"],
    },
  );
  proc.stderr?.setEncoding("utf8").on("data", (s: string) => {
    log = (log + s).slice(-8000);
  });
  await waitReady(env, user, proc, () => log);
  const server: PgServer = {
    user,
    socketDir,
    port,
    dataDir,
    env,
    sql: (db, sql) =>
      runAs(
        user,
        [
          "psql",
          "--no-psqlrc",
          "-X",
          "--quiet",
          "--tuples-only",
          "--no-align",
          "--set=ON_ERROR_STOP=1",
          `--dbname=${db}`,
          "--command",
          sql,
        ],
        { env },
      ),
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGINT"); // fast shutdown
        const t = setTimeout(() => proc.kill("SIGKILL"), 20_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(root, { recursive: true, force: true });
    },
  };
  return server;
}
