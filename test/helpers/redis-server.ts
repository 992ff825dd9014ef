/**
 * A throwaway redis-server for tests: its own temp directory, a free port on 127.0.0.1
 * (never the machine's 6379), run as a test OS user through setpriv, with a password and,
 * by default, nothing on disk (`save ""`, no AOF), like a cache-only production server.
 */

import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import { chownSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Redis } from "ioredis";
import { asUser } from "./proc.js";

export interface RedisServer {
  port: number;
  dir: string;
  password: string;
  /** A root-owned 0600 file holding the password (what `password_file` names). */
  passwordFile: string;
  /** A fixture client on `db`. */
  client(db?: number): Promise<Redis>;
  stop(): Promise<void>;
}

export async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const addr = srv.address();
  srv.close();
  await once(srv, "close");
  if (addr === null || typeof addr === "string") throw new Error("no port");
  return addr.port;
}

export async function startRedis(
  user: { uid: number; gid: number },
  opts: { persistence?: boolean; dir?: string } = {},
): Promise<RedisServer> {
  const dir = opts.dir ?? mkdtempSync(join(tmpdir(), "ferry-redis-test-"));
  chownSync(dir, user.uid, user.gid);
  const password = `pw-${Math.random().toString(36).slice(2)}`;
  const passwordFile = `${dir}.password`;
  writeFileSync(passwordFile, `${password}\n`, { mode: 0o600 });
  let child: ChildProcess | undefined;
  let port = 0;
  let log = "";
  for (let attempt = 0; attempt < 5 && child === undefined; attempt++) {
    port = await freePort();
    const args = [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--requirepass",
      password,
      "--databases",
      "16",
      "--daemonize",
      "no",
      "--logfile",
      "",
      ...(opts.persistence
        ? ["--save", "3600 1", "--appendonly", "no"]
        : ["--save", "", "--appendonly", "no"]),
    ];
    const argv = asUser(user, ["redis-server", ...args]);
    const c = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
    c.stdout?.on("data", (d: Buffer) => {
      log += d.toString();
    });
    c.stderr?.on("data", (d: Buffer) => {
      log += d.toString();
    });
    const deadline = Date.now() + 10_000;
    while (!log.includes("Ready to accept connections") && c.exitCode === null) {
      if (Date.now() > deadline) {
        c.kill("SIGKILL");
        throw new Error(`redis-server did not start: ${log}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
    if (c.exitCode === null) child = c;
  }
  if (child === undefined) throw new Error(`redis-server did not start: ${log}`);
  const running = child;
  const clients: Redis[] = [];
  return {
    port,
    dir,
    password,
    passwordFile,
    async client(db = 0) {
      const r = new Redis({ host: "127.0.0.1", port, password, db, lazyConnect: true });
      await r.connect();
      clients.push(r);
      return r;
    },
    async stop() {
      for (const r of clients) r.disconnect();
      if (running.exitCode === null) {
        running.kill("SIGKILL");
        await once(running, "exit");
      }
      rmSync(dir, { recursive: true, force: true });
      rmSync(passwordFile, { force: true });
    },
  };
}

/** Whether redis-server and redis-cli are installed. */
export function hasRedis(): boolean {
  try {
    execFileSync("redis-server", ["--version"], { stdio: "ignore" });
    execFileSync("redis-cli", ["--version"], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
