/**
 * hung-database-port: a PostgreSQL port that accepts connections and never answers. Before,
 * every `GET /v1/apps` started another psql for the app, none could be stopped (ferryd may
 * not signal the app's user), and the second failed kill crashed ferryd after about 15 s.
 *
 * A real privileged ferryd, a postgres app pointed at a TCP server that accepts and stays
 * silent, and five `ferry apps` at once, twice: every answer comes within the health bound
 * and says the app is unhealthy, at most one psql runs for the app at any moment, ferryd
 * stays up, and the stuck psql is gone once the driver's own 10 s timeout has passed.
 *
 * Bounds: about 30 s.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type Server, type Socket } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { ensureUser, ferry, needsRoot, type TestUser } from "../helpers/proc.js";

function psqlOf(user: TestUser): number {
  try {
    return execFileSync("pgrep", ["-u", String(user.uid), "-x", "psql"], { encoding: "utf8" })
      .trim()
      .split("\n")
      .filter((l) => l !== "").length;
  } catch {
    return 0;
  }
}

describe("hung-database-port: health checks are bounded", { skip: needsRoot }, () => {
  let dir: string;
  let app: TestUser;
  let backup: TestUser;
  let server: Server;
  const held: Socket[] = [];
  let daemon: RunningFerryd;
  let socket: string;

  before(async () => {
    app = ensureUser("ferry-hung-app");
    backup = ensureUser("ferry-hung-bk");
    dir = mkdtempSync("/tmp/ferry-hung-");
    chmodSync(dir, 0o755);
    server = createServer((s) => {
      held.push(s); // accept, read, never answer
      s.on("error", () => {});
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as { port: number }).port;
    socket = join(dir, "run/ferry.sock");
    const config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n[apps.shop]\ndriver = "postgres"\ndatabase = "shop"\nos_user = "${app.name}"\nhost = "127.0.0.1"\nport = ${port}\n`,
    );
    daemon = await startFerryd({ config, serviceUser: backup });
  });

  after(async () => {
    await daemon?.stop();
    for (const s of held) s.destroy();
    server?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("five concurrent app listings, twice: bounded answers, one psql at most, ferryd lives", async () => {
    let maxPsql = 0;
    const sampler = setInterval(() => {
      maxPsql = Math.max(maxPsql, psqlOf(app));
    }, 100);
    try {
      for (let round = 0; round < 2; round++) {
        const t0 = Date.now();
        const answers = await Promise.all(
          Array.from({ length: 5 }, () =>
            ferry(socket, ["apps", "--json"], { user: backup, timeoutMs: 40_000 }),
          ),
        );
        const took = Date.now() - t0;
        for (const a of answers) {
          assert.equal(a.code, 0, a.stderr + daemon.log());
          const apps = JSON.parse(a.stdout.toString()) as { health: { ok: boolean } }[];
          assert.equal(apps[0]?.health.ok, false);
        }
        assert.ok(took < 20_000, `the listing took ${took} ms`);
      }
    } finally {
      clearInterval(sampler);
    }
    assert.ok(maxPsql >= 1, "psql never ran: the test did not reach the hung port");
    assert.ok(maxPsql <= 1, `${maxPsql} psql ran at once for one app`);
    assert.equal(daemon.child.exitCode, null, daemon.log());
    const v = await ferry(socket, ["version"], { user: backup });
    assert.equal(v.code, 0, v.stderr);
    // The driver gives up after 10 s; the supervisor then stops psql for ferryd.
    const deadline = Date.now() + 25_000;
    while (psqlOf(app) > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 200));
    assert.equal(psqlOf(app), 0, "a stuck psql outlived its timeout");
  });
});
