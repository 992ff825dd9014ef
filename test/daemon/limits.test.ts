/**
 * Who may talk to ferryd and how much of it they may use, through a real ferryd: the
 * refusal to run as root without --allow-root, the `clients` key, and the limits
 * max_connections, request_timeout and job_timeout (idle_timeout and the body limits are
 * in service.test.ts).
 *
 * Bounds: timeouts of 1-2 s; a silent TCP listener stands in for a server that accepts
 * and never answers; each ferryd run is bounded by 30 s.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { request } from "node:http";
import { createConnection, createServer, type Server, type Socket } from "node:net";
import { userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { startFerryd } from "../helpers/ferryd.js";
import {
  ensureUser,
  FERRYD,
  ferry,
  isRoot,
  needsRoot,
  processesOf,
  run,
  waitProcessesGone,
} from "../helpers/proc.js";

const me = userInfo().username;
const extra = isRoot ? ["--allow-root"] : [];

function get(socket: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: socket, path, headers: { Host: "ferry" }, agent: false },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          body += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
        res.on("error", reject);
      },
    );
    req.on("error", reject);
    req.end();
  });
}

describe("who may use ferryd, and how much", { timeout: 120_000 }, () => {
  let dir: string;
  let n = 0;
  before(() => {
    dir = mkdtempSync("/tmp/ferry-limits-");
    chmodSync(dir, 0o755); // the configs are read by ferryd run as another user too
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  /** A config in a fresh directory; returns its path and socket. */
  function config(body: string, limits = ""): { config: string; socket: string; base: string } {
    const base = join(dir, `case-${++n}`);
    const socket = join(base, "run/ferry.sock");
    mkdirSync(base); // the state directory's parent, root's when ferryd runs as root
    const file = join(`${base}.toml`);
    writeFileSync(
      file,
      `version = 1\nsocket = "${socket}"\nstate_dir = "${base}/state"\n${body}\n[limits]\n${limits}\n`,
    );
    return { config: file, socket, base };
  }

  test("ferryd-as-root-without-allow-root: refused with ROOT_REFUSED, no socket made", {
    skip: needsRoot,
  }, async () => {
    const c = config("");
    const r = await run([process.execPath, FERRYD, "--config", c.config], { timeoutMs: 30_000 });
    assert.notEqual(r.code, 0, r.stderr);
    assert.match(r.stderr, /refusing to run as root: .*\[ROOT_REFUSED\]/);
    assert.equal(existsSync(c.socket), false, "a socket was created");
    assert.equal(existsSync(join(c.base, "run")), false, "the socket directory was created");
  });

  test("clients: an uid not listed is refused (PEER_REJECTED, exit 3); listed, it is served", {
    skip: needsRoot,
  }, async () => {
    // ferryd runs as a plain user; root (uid 0) can reach its 0700 socket directory, so
    // only the peer check stands between them.
    const owner = ensureUser("ferry-e2e-bk");
    for (const [clients, allowed] of [
      ["", false],
      ['clients = ["root"]', true],
      ["clients = [0]", true],
    ] as const) {
      const c = config(clients);
      chownSync(c.base, owner.uid, owner.gid);
      const daemon = await startFerryd({ config: c.config, runAs: owner });
      try {
        const r = await ferry(c.socket, ["apps", "--json"]);
        if (allowed) {
          assert.equal(r.code, 0, `${clients}: ${r.stderr}`);
          assert.deepEqual(JSON.parse(r.stdout.toString()), []);
        } else {
          assert.equal(r.code, 3, `${clients}: ${r.stderr}`);
          assert.match(r.stderr, /\[PEER_REJECTED\]/);
          assert.match(
            daemon.log(),
            /"peer_uid":0,.*"outcome":"refused","reason":"uid 0 is not allowed"/,
          );
        }
      } finally {
        await daemon.stop();
      }
    }
  });

  test("max_connections: the connection past the limit is closed at once, the others are served", async () => {
    const c = config("", "max_connections = 5\nidle_timeout = 30\n");
    const daemon = await startFerryd({ config: c.config, extraArgs: extra });
    const held: Socket[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const s = createConnection(c.socket);
        s.on("error", () => {});
        held.push(s);
        await once(s, "connect");
      }
      let closedEarly = 0;
      for (const s of held) s.once("close", () => closedEarly++);
      // The sixth: accepted by the kernel, closed by ferryd without an answer.
      const sixth = createConnection(c.socket);
      sixth.on("error", () => {});
      let answer = "";
      sixth.on("data", (d: Buffer) => {
        answer += d.toString();
      });
      await once(sixth, "connect");
      sixth.write("GET /v1/version HTTP/1.1\r\nHost: ferry\r\n\r\n");
      // (events.once would reject on the ECONNRESET that may come first.)
      const closed = await Promise.race([
        new Promise<boolean>((r) => sixth.once("close", () => r(true))),
        new Promise<boolean>((r) => setTimeout(() => r(false), 5000)),
      ]);
      assert.equal(closed, true, "the connection past max_connections stayed open");
      assert.equal(answer, "", "the connection past max_connections was answered");
      // The log line travels through ferryd's stderr pipe: give it a moment to arrive.
      const dropped = /connection dropped: limits.max_connections reached/;
      for (let i = 0; i < 50 && !dropped.test(daemon.log()); i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.match(daemon.log(), dropped);
      assert.equal(closedEarly, 0, "a connection within the limit was closed");
      // One of the five is served.
      const first = held[0] as Socket;
      let reply = "";
      first.on("data", (d: Buffer) => {
        reply += d.toString();
      });
      first.write("GET /v1/version HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n\r\n");
      await new Promise((r) => first.once("close", r));
      assert.match(reply, /^HTTP\/1\.1 200/);
      // With the five gone, new connections are served again.
      for (const s of held) s.destroy();
      await new Promise((r) => setTimeout(r, 200));
      assert.equal((await get(c.socket, "/v1/version")).status, 200);
    } finally {
      for (const s of held) s.destroy();
      await daemon.stop();
    }
  });

  test("request_timeout: a request that hangs on a silent server is cut at the limit; ferryd goes on", async () => {
    // A "redis" that accepts connections and never says a word.
    const silent: Server = createServer((s) => s.on("error", () => {}));
    silent.listen(0, "127.0.0.1");
    await once(silent, "listening");
    const port = (silent.address() as { port: number }).port;
    const c = config(
      `\n[apps.silent]\ndriver = "redis"\nhost = "127.0.0.1"\nport = ${port}\n`,
      "request_timeout = 1\nidle_timeout = 30\n",
    );
    const daemon = await startFerryd({ config: c.config, extraArgs: extra });
    try {
      const started = Date.now();
      const outcome = await Promise.race([
        get(c.socket, "/v1/apps/silent").then(
          (r) => `answered ${r.status}`,
          (err: Error) => `cut: ${err.message}`,
        ),
        new Promise<string>((r) => setTimeout(() => r("still hanging after 15 s"), 15_000)),
      ]);
      const ms = Date.now() - started;
      assert.match(outcome, /^cut: /, `the hanging request was not cut: ${outcome}`);
      assert.ok(ms >= 900 && ms < 5000, `cut after ${ms} ms (request_timeout 1 s)`);
      assert.equal((await get(c.socket, "/v1/version")).status, 200, "ferryd still serves");
    } finally {
      await daemon.stop();
      silent.close();
    }
  });

  test("job_timeout: a backup past the limit fails with JOB_TIMEOUT and its helper is gone", async () => {
    const marker = `29.${process.pid}`;
    const c = config(
      `\n[apps.slow]\ndriver = "command"\nos_user = "${me}"\nallow_root = true\nbackup_command = ["sleep", "${marker}"]\n`,
      "job_timeout = 1\n",
    );
    const daemon = await startFerryd({ config: c.config, extraArgs: extra });
    try {
      const started = Date.now();
      const r = await ferry(c.socket, ["export", "slow", "-o", join(dir, "slow.tar")]);
      const ms = Date.now() - started;
      assert.notEqual(r.code, 0);
      assert.match(r.stderr, /ran past limits\.job_timeout \(1s\).*\[JOB_TIMEOUT\]/);
      assert.ok(ms < 10_000, `the job ran ${ms} ms past a 1 s job_timeout`);
      assert.equal(existsSync(join(dir, "slow.tar")), false, "a partial archive was left");
      const uid = process.getuid?.() as number;
      const left = await waitProcessesGone(uid, marker, 5000);
      assert.deepEqual(left, [], "the helper outlived the job");
      assert.deepEqual(processesOf(uid, marker), []);
    } finally {
      await daemon.stop();
    }
  });
});
