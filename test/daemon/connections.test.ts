/**
 * Every connection ends: clients that stop reading, stop sending or send garbage halfway
 * through a body cannot keep a connection (and so a slot of limits.max_connections) for
 * ever, and event streams are capped and bounded. ferryd runs in user mode as the current
 * user (with --allow-root when that is root), so these need no privileges.
 *
 * Bounds: max_connections 16, idle_timeout 2 s; every wait is bounded (≤ 20 s per test).
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { request } from "node:http";
import { createConnection, type Socket } from "node:net";
import { userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { makeArchive } from "../helpers/files-app.js";
import { isRoot } from "../helpers/proc.js";

const MAX_CONNECTIONS = 16;

/** GET /v1/version on a fresh connection: the status, or 0 if it was dropped or took > 2 s. */
function version(socket: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request(
      { socketPath: socket, path: "/v1/version", headers: { Host: "ferry" }, agent: false },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.setTimeout(2000, () => {
      req.destroy();
      resolve(0);
    });
    req.on("error", () => resolve(0));
    req.end();
  });
}

/** Polls until GET /v1/version answers 200 or `ms` passed; returns the time it took or -1. */
async function servedWithin(socket: string, ms: number): Promise<number> {
  const start = Date.now();
  while (Date.now() - start < ms) {
    if ((await version(socket)) === 200) return Date.now() - start;
    await new Promise((r) => setTimeout(r, 200));
  }
  return -1;
}

function connect(socket: string): Promise<Socket> {
  const s = createConnection(socket);
  s.on("error", () => {});
  return once(s, "connect").then(() => s);
}

describe("connections end in every state", () => {
  let dir: string;
  let socket: string;
  let daemon: RunningFerryd;
  let archive: Buffer;
  const held: Socket[] = [];

  before(async () => {
    dir = mkdtempSync("/tmp/ferry-conn-");
    mkdirSync(join(dir, "notes"));
    writeFileSync(join(dir, "notes/a.txt"), "a\n");
    socket = join(dir, "run/ferry.sock");
    const me = userInfo().username;
    writeFileSync(
      join(dir, "ferry.toml"),
      `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n[limits]\nidle_timeout = 2\nshutdown_grace = 1\nmax_connections = ${MAX_CONNECTIONS}\n\n[apps.notes]\ndriver = "files"\npaths = ["${dir}/notes"]\nowner = "${me}"\nrestore = true\nallow_root = true\n`,
    );
    archive = makeArchive({
      paths: [join(dir, "notes")],
      entries: [{ name: "data/0/", type: "dir" }],
      many_empty: 2000,
    });
    daemon = await startFerryd({
      config: join(dir, "ferry.toml"),
      extraArgs: isRoot ? ["--allow-root"] : [],
    });
  });
  after(async () => {
    for (const s of held) s.destroy();
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const release = () => {
    for (const s of held.splice(0)) s.destroy();
  };

  for (const target of ["GET /v1/events", "POST /v1/apps/notes/restore"]) {
    test(`malformed-chunk-half-close: ${target} with a chunked body that turns malformed after 40 KB, then a half-close, frees its connection`, async () => {
      for (let i = 0; i < MAX_CONNECTIONS; i++) {
        const s = await connect(socket);
        held.push(s);
        const chunk = archive.subarray(0, 40 * 1024);
        // An event stream reads no body, so its socket pauses with the body half-read; a
        // restore reads the body until the parser fails.
        s.write(
          `${target} HTTP/1.1\r\nHost: ferry\r\nTransfer-Encoding: chunked\r\n\r\n${chunk.length.toString(16)}\r\n`,
        );
        s.write(chunk);
        s.write("\r\nzz-not-a-chunk-size\r\n");
        s.end(); // half-close: the client sends nothing more, but keeps the socket
      }
      const ms = await servedWithin(socket, 12_000);
      release();
      assert.ok(ms >= 0, "max_connections stayed exhausted by half-read connections");
    });
  }

  test("parse-error-answered-and-closed: a malformed request gets a 400 and its socket is closed", async () => {
    for (const bad of [
      "GARBAGE\r\n\r\n",
      "GET /v1/version HTTP/1.1\r\nHost: ferry\r\nContent-Length: -1\r\n\r\n",
      `GET /v1/version HTTP/1.1\r\nX-Long: ${"x".repeat(20_000)}\r\n\r\n`,
    ]) {
      const s = await connect(socket);
      let text = "";
      s.on("data", (d: Buffer) => {
        text += d.toString();
      });
      const started = Date.now();
      const closed = once(s, "close").then(() => Date.now() - started);
      s.write(bad); // and keep the socket open: ferryd must close it
      const ms = await Promise.race([
        closed,
        new Promise<number>((r) => setTimeout(() => r(-1), 5000)),
      ]);
      s.destroy();
      assert.ok(ms >= 0 && ms < 2000, `${JSON.stringify(bad.slice(0, 40))}: closed after ${ms} ms`);
      assert.match(text, /^HTTP\/1\.1 4(00|31) /, text);
    }
  });

  test("half-close-answered: a request followed by a half-close is answered, then the connection closes", async () => {
    const s = await connect(socket);
    let text = "";
    s.on("data", (d: Buffer) => {
      text += d.toString();
    });
    s.end("GET /v1/version HTTP/1.1\r\nHost: ferry\r\n\r\n");
    const ok = await Promise.race([
      once(s, "close").then(() => true),
      new Promise<boolean>((r) => setTimeout(() => r(false), 3000)),
    ]);
    s.destroy();
    assert.ok(ok, "the connection stayed open");
    assert.match(text, /^HTTP\/1\.1 200 /);
  });

  test("stalled-readers-hostage: clients that pipeline requests and never read cannot hold max_connections", async () => {
    for (let i = 0; i < MAX_CONNECTIONS; i++) {
      const s = await connect(socket);
      held.push(s);
      s.pause();
      const one = "GET /v1/jobs HTTP/1.1\r\nHost: ferry\r\n\r\n";
      s.write(one.repeat(20_000));
    }
    const ms = await servedWithin(socket, 12_000);
    release();
    assert.ok(ms >= 0, "max_connections stayed exhausted by clients that do not read");
  });

  test("events-cap: event streams are capped per peer, and the refusal says so", async () => {
    const statuses: number[] = [];
    const bodies: string[] = [];
    for (let i = 0; i < 5; i++) {
      const s = await connect(socket);
      held.push(s);
      s.write("GET /v1/events HTTP/1.1\r\nHost: ferry\r\n\r\n");
      const [data] = (await once(s, "data")) as [Buffer];
      const text = data.toString();
      statuses.push(Number(/^HTTP\/1\.1 (\d+)/.exec(text)?.[1]));
      bodies.push(text);
    }
    release();
    assert.deepEqual(statuses.slice(0, 4), [200, 200, 200, 200]);
    assert.equal(statuses[4], 503, bodies[4]);
    assert.match(bodies[4] as string, /TOO_MANY_STREAMS/);
  });

  test("events-stalled-reader: an event stream whose client stops reading is closed within 2 × idle_timeout", async () => {
    const s = await connect(socket);
    s.write("GET /v1/events HTTP/1.1\r\nHost: ferry\r\n\r\n");
    await once(s, "data");
    s.pause();
    // Make events while the client reads nothing: each request is audited and published.
    const until = Date.now() + 8000;
    let answered = 0;
    while (Date.now() < until) {
      const r = await Promise.all(Array.from({ length: 3 }, () => version(socket)));
      answered += r.filter((x) => x === 200).length;
    }
    // A paused socket does not notice its peer closing; reading again shows whether it did.
    const closed = once(s, "close").then(() => true);
    s.on("data", () => {});
    s.resume();
    const done = await Promise.race([closed, new Promise((r) => setTimeout(() => r(false), 3000))]);
    s.destroy();
    assert.ok(done, `a stalled event subscriber kept its connection (${answered} events made)`);
  });

  test("events-idle: an event stream sends a heartbeat, and one that is never read ends", async () => {
    const s = await connect(socket);
    held.push(s);
    s.write("GET /v1/events HTTP/1.1\r\nHost: ferry\r\n\r\n");
    let text = "";
    s.on("data", (d: Buffer) => {
      text += d.toString();
    });
    await new Promise((r) => setTimeout(r, 3500));
    release();
    assert.match(text, /"type":"heartbeat"/, "no heartbeat within 1.5 × idle_timeout");
  });
});
