/**
 * A throwaway MariaDB server for tests: mariadb-install-db into a temp dir, mariadbd
 * started as a test OS user on a Unix socket in that dir (--skip-networking, so nothing
 * collides with the machine's own server). The install creates an account named after the
 * OS user with unix_socket authentication, which is what the driver uses.
 *
 * As root the server runs as the system user `ferry-my` (created if missing); as any other
 * user it runs as that user.
 */
import { spawn } from "node:child_process";
import { chmodSync, chownSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { UserInfo } from "../../src/core/users.js";
import { ensureTestUser, runAs } from "./pg-server.js";

export interface MariaServer {
  user: UserInfo;
  socket: string;
  /** Runs SQL with the mariadb client as the server user; tab-separated rows. */
  sql(sql: string, db?: string): Promise<string>;
  stop(): Promise<void>;
}

export async function startMariaServer(userName = "ferry-my"): Promise<MariaServer> {
  const user = ensureTestUser(userName);
  const root = mkdtempSync(join(tmpdir(), "ferry-my-"));
  chmodSync(root, 0o700);
  if (process.getuid?.() === 0) chownSync(root, user.uid, user.gid);
  const dataDir = join(root, "data");
  const socket = join(root, "mysqld.sock");
  await runAs(
    user,
    [
      "mariadb-install-db",
      "--no-defaults",
      `--user=${user.name}`,
      `--datadir=${dataDir}`,
      "--auth-root-authentication-method=socket",
      "--skip-test-db",
    ],
    { cwd: root, timeoutMs: 120_000 },
  );
  let log = "";
  const asRoot = process.getuid?.() === 0;
  const proc = spawn(
    "/usr/sbin/mariadbd",
    [
      "--no-defaults",
      `--datadir=${dataDir}`,
      `--socket=${socket}`,
      `--pid-file=${join(root, "mysqld.pid")}`,
      "--skip-networking",
      "--innodb-buffer-pool-size=128M",
      "--innodb-flush-log-at-trx-commit=0",
      "--skip-log-bin",
      "--log-error=",
    ],
    {
      ...(asRoot ? { uid: user.uid, gid: user.gid } : {}),
      env: { LANG: "C.UTF-8", PATH: "/usr/sbin:/usr/bin:/bin" },
      stdio: ["ignore", "ignore", "pipe"],
      cwd: root,
    },
  );
  proc.stderr?.setEncoding("utf8").on("data", (s: string) => {
    log = (log + s).slice(-8000);
  });
  const sql = (q: string, db?: string) =>
    runAs(user, [
      "mariadb",
      `--socket=${socket}`,
      `--user=${user.name}`,
      "--batch",
      "--skip-column-names",
      ...(db === undefined ? [] : [`--database=${db}`]),
      `--execute=${q}`,
    ]);
  const deadline = Date.now() + 60_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`mariadbd exited early: ${log}`);
    try {
      await sql("SELECT 1");
      break;
    } catch (err) {
      if (Date.now() > deadline) throw new Error(`mariadbd did not start: ${log} ${err}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  return {
    user,
    socket,
    sql,
    async stop() {
      if (proc.exitCode === null && proc.signalCode === null) {
        const exited = new Promise((r) => proc.once("exit", r));
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 20_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(root, { recursive: true, force: true });
    },
  };
}
