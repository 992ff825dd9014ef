/**
 * The `ferry/agent` SDK against a raw HTTP client on its Unix socket: what it says, what it
 * sends, what it refuses, and that a restore handler never sees a payload that is
 * incomplete or breaks the payload rules. No root needed.
 *
 * Bounds: small payloads except the backpressure test (32 MiB through a paused reader).
 */
import assert from "node:assert/strict";
import {
  existsSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { type IncomingMessage, request } from "node:http";
import { connect } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  type Agent,
  AgentError,
  type AgentOptions,
  createAgent,
  type RestorePayload,
} from "../../src/agent/index.js";
import { tarOf } from "./raw-agent.js";

interface Reply {
  status: number;
  headers: IncomingMessage["headers"];
  body: Buffer;
  trailers: Record<string, string | undefined>;
}

function call(
  socket: string,
  method: string,
  path: string,
  body?: Buffer | string,
  headers: Record<string, string> = {},
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath: socket, method, path, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          body: Buffer.concat(chunks),
          trailers: res.trailers,
        }),
      );
      res.on("error", reject);
    });
    req.on("error", reject);
    req.end(body);
  });
}

const json = (r: Reply) =>
  JSON.parse(r.body.toString()) as Record<string, unknown> & {
    error?: { code: string; message: string };
  };

describe("ferry/agent SDK", { timeout: 120_000 }, () => {
  let dir: string;
  let n = 0;
  const agents: Agent[] = [];

  before(() => {
    dir = mkdtempSync("/tmp/ferry-sdk-");
  });
  after(async () => {
    for (const a of agents) await a.close(100);
    rmSync(dir, { recursive: true, force: true });
  });

  async function start(
    opts: Partial<AgentOptions> = {},
  ): Promise<{ agent: Agent; socket: string; staging: string }> {
    const socket = join(dir, `s${++n}.sock`);
    const staging = mkdtempSync(join(dir, "staging-"));
    const agent = createAgent({
      socket,
      info: { name: "t", version: "9.9.9", holds: "tests", estimateBytes: () => 1234 },
      backup: async (out) => {
        await out.addDir("d");
        await out.addJSON("d/x.json", { x: 1 });
        await out.addBuffer("b.txt", "bee");
      },
      stagingDir: staging,
      ...opts,
    });
    await agent.listen();
    agents.push(agent);
    return { agent, socket, staging };
  }

  test("GET /v1/info says who it is and what it supports", async () => {
    const { socket } = await start({ restore: async () => {} });
    const r = await call(socket, "GET", "/v1/info");
    assert.equal(r.status, 200);
    assert.equal(r.headers["ferry-agent-protocol"], "1");
    assert.deepEqual(json(r), {
      protocol: 1,
      name: "t",
      version: "9.9.9",
      holds: "tests",
      estimated_bytes: 1234,
      prepare: false,
      restore: true,
    });
  });

  test("POST /v1/backup sends a tar with end blocks and the ok trailer", async () => {
    const { socket } = await start();
    const r = await call(socket, "POST", "/v1/backup");
    assert.equal(r.status, 200);
    assert.equal(r.trailers["ferry-status"], "ok");
    const tail = r.body.subarray(r.body.length - 1024);
    assert.ok(tail.every((b) => b === 0));
    const x = mkdtempSync(join(dir, "x-"));
    writeFileSync(join(x, "b.tar"), r.body);
    const { execFileSync } = await import("node:child_process");
    const list = execFileSync("tar", ["-tf", join(x, "b.tar")])
      .toString()
      .trim()
      .split("\n");
    assert.deepEqual(list, ["d/", "d/x.json", "b.txt"]);
  });

  test("a backup that fails mid-stream ends without end blocks and says why in the trailer", async () => {
    const { socket } = await start({
      backup: async (out) => {
        await out.addBuffer("a", "a");
        throw new AgentError("BACKUP_FAILED", "database went away");
      },
    });
    const r = await call(socket, "POST", "/v1/backup");
    assert.equal(r.trailers["ferry-status"], "error BACKUP_FAILED database went away");
    assert.equal(r.body.length, 1024); // one header block and one body block, no end blocks
  });

  test("a backup that fails before writing is a JSON error; other errors hide their text", async () => {
    const { socket } = await start({
      backup: async () => {
        throw new Error("secret internal detail");
      },
    });
    const r = await call(socket, "POST", "/v1/backup");
    assert.equal(r.status, 500);
    assert.equal(json(r).error?.code, "INTERNAL");
    assert.doesNotMatch(r.body.toString(), /secret internal detail/);
  });

  test("the backup writer refuses entries ferryd would refuse (the app's bug is caught at home)", async () => {
    for (const bad of ["../x", "/etc/passwd", "a/../../x", ""]) {
      const { socket } = await start({
        backup: async (out) => {
          await out.addBuffer(bad, "x");
        },
      });
      const r = await call(socket, "POST", "/v1/backup");
      assert.equal(r.status, 422, bad);
      assert.equal(json(r).error?.code, "PAYLOAD_INVALID");
    }
  });

  describe("restore", () => {
    for (const [what, tar] of [
      [
        "a '..' path",
        tarOf([
          { path: "ok", body: "1" },
          { path: "../x", body: "x" },
        ]),
      ],
      ["an absolute path", tarOf([{ path: "/etc/passwd", body: "x" }])],
      ["a symlink out", tarOf([{ path: "l", type: "symlink", linkpath: "../../x" }])],
      ["a hard link", tarOf([{ path: "h", type: "hardlink", linkpath: "ok" }])],
      ["no end-of-archive blocks", tarOf([{ path: "ok", body: "1" }], { end: false })],
      ["a body cut short", tarOf([{ path: "ok", body: "x".repeat(2000) }]).subarray(0, 1024)],
      [
        "garbage after the end",
        Buffer.concat([tarOf([{ path: "ok", body: "1" }]), Buffer.from("junk")]),
      ],
    ] as const) {
      test(`a payload with ${what} is refused and the handler never runs`, async () => {
        let called = false;
        const { socket, staging } = await start({
          restore: async () => {
            called = true;
          },
        });
        const r = await call(socket, "POST", "/v1/restore", tar);
        assert.equal(r.status, 422, r.body.toString());
        assert.equal(json(r).error?.code, "PAYLOAD_INVALID");
        assert.equal(called, false);
        assert.deepEqual(readdirSync(staging), [], "staging was left behind");
      });
    }

    test("a client that disconnects mid-body: the handler never runs, staging is removed", async () => {
      let called = false;
      const { socket, staging } = await start({
        restore: async () => {
          called = true;
        },
      });
      const tar = tarOf([{ path: "big", body: "y".repeat(100_000) }]);
      await new Promise<void>((resolve) => {
        const s = connect(socket, () => {
          s.write(`POST /v1/restore HTTP/1.1\r\nhost: a\r\ncontent-length: ${tar.length}\r\n\r\n`);
          s.write(tar.subarray(0, 50_000), () => {
            setTimeout(() => {
              s.destroy();
              resolve();
            }, 100);
          });
        });
      });
      await new Promise((r) => setTimeout(r, 300));
      assert.equal(called, false);
      assert.deepEqual(readdirSync(staging), []);
    });

    test("a good payload reaches the handler; extractTo writes it without following links", async () => {
      let got: string[] = [];
      const out = join(dir, "extracted");
      const { socket } = await start({
        restore: async (p: RestorePayload) => {
          got = [];
          for await (const e of p.entries()) got.push(`${e.type}:${e.path}`);
          assert.equal(
            await p
              .get("d/a.json")
              ?.json<{ a: number }>()
              .then((v) => v.a),
            1,
          );
          await p.extractTo(out);
          await assert.rejects(p.extractTo(out), /EEXIST/);
        },
      });
      const tar = tarOf([
        { path: "d", type: "dir" },
        { path: "d/a.json", body: '{"a":1}' },
        { path: "l", type: "symlink", linkpath: "d/a.json" },
      ]);
      const r = await call(socket, "POST", "/v1/restore", tar);
      assert.equal(r.status, 200, r.body.toString());
      assert.deepEqual(json(r), { ok: true, entries: 3, bytes: 7 });
      assert.deepEqual(got, ["dir:d", "file:d/a.json", "symlink:l"]);
      assert.equal(readFileSync(join(out, "d/a.json"), "utf8"), '{"a":1}');
      assert.equal(readlinkSync(join(out, "l")), "d/a.json");
    });

    test("an agent without a restore handler refuses restores", async () => {
      const { socket } = await start();
      const r = await call(socket, "POST", "/v1/restore", tarOf([]));
      assert.equal(r.status, 501);
      assert.equal(json(r).error?.code, "NOT_SUPPORTED");
    });
  });

  describe("prepare and finish", () => {
    test("an unfinished prepare expires after its lease: finish runs with 'expired'", async () => {
      const log: string[] = [];
      const { socket } = await start({
        prepare: async (c) => {
          log.push(`prepare:${c.operation}:${c.leaseMs}`);
        },
        finish: async (c) => {
          log.push(`finish:${c.outcome}`);
        },
      });
      const r = await call(
        socket,
        "POST",
        "/v1/prepare",
        JSON.stringify({ operation: "backup", lease_ms: 200 }),
      );
      assert.equal(r.status, 200);
      const busy = await call(
        socket,
        "POST",
        "/v1/prepare",
        JSON.stringify({ operation: "backup", lease_ms: 200 }),
      );
      assert.equal(busy.status, 409);
      assert.equal(json(busy).error?.code, "BUSY");
      await new Promise((res) => setTimeout(res, 500));
      assert.deepEqual(log, ["prepare:backup:200", "finish:expired"]);
      const late = await call(
        socket,
        "POST",
        "/v1/finish",
        JSON.stringify({ operation: "backup", outcome: "ok" }),
      );
      assert.deepEqual(json(late), { ok: true, held: false });
      assert.equal(log.length, 2, "finish ran twice");
    });

    test("finish runs once per prepare; close() finishes a held prepare as cancelled", async () => {
      const log: string[] = [];
      const { agent, socket } = await start({
        prepare: async () => {
          log.push("prepare");
        },
        finish: async (c) => {
          log.push(`finish:${c.outcome}`);
        },
      });
      await call(
        socket,
        "POST",
        "/v1/prepare",
        JSON.stringify({ operation: "restore", lease_ms: 60_000 }),
      );
      const f = await call(
        socket,
        "POST",
        "/v1/finish",
        JSON.stringify({ operation: "restore", outcome: "ok" }),
      );
      assert.deepEqual(json(f), { ok: true, held: true });
      await call(
        socket,
        "POST",
        "/v1/prepare",
        JSON.stringify({ operation: "backup", lease_ms: 60_000 }),
      );
      await agent.close(100);
      assert.deepEqual(log, ["prepare", "finish:ok", "prepare", "finish:cancelled"]);
      assert.equal(existsSync(socket), false, "close() left the socket");
    });

    test("bad prepare bodies are 400s", async () => {
      const { socket } = await start({ prepare: async () => {} });
      for (const body of [
        "{}",
        '{"operation":"backup"}',
        "not json",
        '{"operation":"x","lease_ms":1}',
      ]) {
        const r = await call(socket, "POST", "/v1/prepare", body);
        assert.equal(r.status, 400, body);
        assert.equal(json(r).error?.code, "BAD_REQUEST");
      }
    });
  });

  test("backpressure: a client that stops reading stops the backup handler", async () => {
    const chunk = Buffer.alloc(1024 * 1024, 1);
    let written = 0;
    let finished = false;
    const { socket } = await start({
      backup: async (out) => {
        for (let i = 0; i < 32; i++) {
          await out.addBuffer(`c${i}`, chunk);
          written++;
        }
        finished = true;
      },
    });
    let res: IncomingMessage | undefined;
    await new Promise<void>((resolve) => {
      const req = request({ socketPath: socket, method: "POST", path: "/v1/backup" }, (r) => {
        res = r;
        r.pause();
        resolve();
      });
      req.end();
    });
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(finished, false, "the handler ran ahead of a client that does not read");
    assert.ok(written < 32);
    let bytes = 0;
    (res as IncomingMessage).on("data", (c: Buffer) => {
      bytes += c.length;
    });
    (res as IncomingMessage).resume();
    await new Promise((r) => (res as IncomingMessage).on("end", r));
    assert.equal(finished, true);
    assert.ok(bytes > 32 * 1024 * 1024);
  });

  test("a client that disconnects aborts the backup handler's signal", async () => {
    let aborted = false;
    const { socket } = await start({
      backup: async (out) => {
        await out.addBuffer("first", "1");
        await new Promise<void>((resolve) => {
          out.signal.addEventListener("abort", () => {
            aborted = true;
            resolve();
          });
        });
      },
    });
    await new Promise<void>((resolve) => {
      const req = request({ socketPath: socket, method: "POST", path: "/v1/backup" }, (r) => {
        r.once("data", () => {
          req.destroy();
          resolve();
        });
      });
      req.on("error", () => {});
      req.end();
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(aborted, true);
  });

  test("a different protocol version is refused; unknown paths are 404", async () => {
    const { socket } = await start();
    const r = await call(socket, "GET", "/v1/info", undefined, { "ferry-agent-protocol": "2" });
    assert.equal(r.status, 400);
    assert.equal(json(r).error?.code, "UNSUPPORTED_PROTOCOL");
    assert.equal((await call(socket, "GET", "/v2/info")).status, 404);
    assert.equal((await call(socket, "GET", "/v1/backup")).status, 405);
  });

  test("listen() never replaces a file that is not its own old socket", async () => {
    const p = join(dir, "not-a-socket");
    writeFileSync(p, "precious");
    const a = createAgent({ socket: p, info: { name: "x", version: "1" }, backup: async () => {} });
    await assert.rejects(a.listen(), /refusing to replace/);
    assert.equal(readFileSync(p, "utf8"), "precious");
  });
});
