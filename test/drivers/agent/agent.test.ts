/**
 * The agent driver against real agents on real Unix sockets: the shared driver suite with
 * an SDK agent, and the attacks a misbehaving or hostile agent can try (bad tar entries,
 * hanging, wrong trailers, symlinks on the way, another application's archive).
 *
 * Bounds: a few small files per test; timeouts of 1-2 s where a hang is the point.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { FerryError } from "../../../src/core/errors.js";
import { userName } from "../../../src/core/users.js";
import { agentDriver } from "../../../src/drivers/agent/index.js";
import { type DirAgent, startDirAgent, treeSnapshot } from "../../agent/dir-agent.js";
import { scriptedAgent, tarOf } from "../../agent/raw-agent.js";
import { ensureUser, needsRoot } from "../../helpers/proc.js";
import {
  archiveOf,
  backupArchive,
  payloadOf,
  restoreArchive,
  runDriverSuite,
  settingsOf,
} from "../suite.js";

const me = userName(process.getuid?.() ?? 0);
const isRoot = process.getuid?.() === 0;

function table(socket: string, extra: Record<string, unknown> = {}) {
  return { socket, owner: me, allow_root: isRoot, restore: true, ...extra };
}

function appOf(socket: string, extra: Record<string, unknown> = {}) {
  return { name: "agent-app", settings: settingsOf(agentDriver, table(socket, extra)) };
}

function manifestOf(settings: Record<string, unknown>) {
  return {
    app: "agent-app",
    driver: "agent",
    driver_type: "agent.v1",
    driver_version: 1,
    ...agentDriver.manifest(settings as never),
  };
}

const isCode = (code: string) => (err: unknown) => {
  assert.ok(err instanceof FerryError, String(err));
  assert.equal(err.code, code, err.message);
  return true;
};

// --- the shared suite -------------------------------------------------------------------

{
  let dir: string;
  let good: DirAgent;
  let failing: DirAgent;
  runDriverSuite({
    name: "agent",
    driver: agentDriver,
    skip: needsRoot,
    setup: async () => {
      const hooks = ensureUser("ferry-agent-hook");
      dir = mkdtempSync("/tmp/ferry-agent-suite-");
      chmodSync(dir, 0o755);
      const hookDir = join(dir, "hooks");
      mkdirSync(hookDir);
      chmodSync(hookDir, 0o777);
      good = await startDirAgent(join(dir, "good"), join(dir, "good.sock"), "suite");
      failing = await startDirAgent(join(dir, "bad"), join(dir, "bad.sock"), "suite");
      failing.fail = "the disk is on fire";
      return {
        table: table(join(dir, "good.sock")),
        hookUser: hooks.name,
        hookDir,
        async seed() {
          rmSync(good.dataDir, { recursive: true, force: true });
          mkdirSync(join(good.dataDir, "sub"), { recursive: true });
          writeFileSync(join(good.dataDir, "a.txt"), "alpha\n");
          writeFileSync(join(good.dataDir, "sub/b.json"), '{"b":1}\n');
          symlinkSync("../a.txt", join(good.dataDir, "sub/link"));
        },
        async mutate() {
          writeFileSync(join(good.dataDir, "a.txt"), "changed\n");
          writeFileSync(join(good.dataDir, "new.txt"), "new\n");
        },
        async snapshot() {
          return treeSnapshot(good.dataDir);
        },
        failing: {
          table: { socket: join(dir, "bad.sock") },
          stderr: /the disk is on fire/,
        },
        slow: {
          table: {},
          async block() {
            good.block = true;
            return async () => {
              good.block = false;
            };
          },
          async helperRunning() {
            return good.backupRunning;
          },
        },
        garbage: {
          entries: [
            { path: "data/agent.json", body: Buffer.from('{"name":"suite"}\n') },
            { path: "data/0/../../etc/cron.d/x", body: Buffer.from("* * * * * root id\n") },
          ],
          codes: /^ARCHIVE_UNSAFE$/,
        },
        health: {
          ok: /^agent suite \S+ reachable; identity checked: runs as \S+ \(uid \d+\)$/,
          unhealthy: {
            table: { socket: join(dir, "nobody-listens.sock") },
            message: /nobody-listens\.sock/,
          },
        },
        async teardown() {
          await good.agent.close();
          await failing.agent.close();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    },
  });
}

// --- attacks and failures -----------------------------------------------------------------

describe("agent driver", { timeout: 120_000 }, () => {
  let dir: string;
  let n = 0;
  const sock = () => join(dir, `a${++n}.sock`);

  before(() => {
    dir = mkdtempSync("/tmp/ferry-agent-drv-");
  });
  after(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  async function backupWith(script: Parameters<typeof scriptedAgent>[1], extra = {}) {
    const s = sock();
    const agent = await scriptedAgent(s, script);
    const app = appOf(s, extra);
    const p = backupArchive(agentDriver, app);
    return { agent, p, app };
  }

  for (const [what, items] of [
    ["a '..' path", [{ path: "../x", body: "x" }]],
    ["an absolute path", [{ path: "/etc/passwd", body: "root::0:0::/:/bin/sh\n" }]],
    ["a symlink out", [{ path: "out", type: "symlink", linkpath: "../../etc/shadow" }]],
    ["an absolute symlink", [{ path: "out", type: "symlink", linkpath: "/etc/shadow" }]],
    ["a hard link", [{ path: "h", type: "hardlink", linkpath: "etc/shadow" }]],
    ["a FIFO", [{ path: "f", type: "fifo" }]],
    [
      "a path through one of its own symlinks",
      [
        { path: "d", type: "symlink", linkpath: "e" },
        { path: "d/x", body: "x" },
      ],
    ],
  ] as const) {
    test(`backup: an agent tar with ${what} is refused, no end record, finish still runs`, async () => {
      const tar = tarOf([{ path: "ok.txt", body: "fine" }, ...items] as never);
      const { agent, p } = await backupWith({ backup: { tar } });
      try {
        await assert.rejects(p, isCode("ARCHIVE_UNSAFE"));
        assert.deepEqual(
          agent.requests.map((r) => r.url),
          ["/v1/info", "/v1/prepare", "/v1/backup", "/v1/finish"],
        );
        assert.equal(JSON.parse(agent.requests[3]?.body.toString() ?? "").outcome, "error");
      } finally {
        await agent.close();
      }
    });
  }

  test("backup: the agent's payload is wrapped with its info entry, under data/0/", async () => {
    const tar = tarOf([
      { path: "d", type: "dir" },
      { path: "d/a.txt", body: "A" },
      { path: "l", type: "symlink", linkpath: "d/a.txt" },
    ]);
    const { agent, p } = await backupWith({ backup: { tar }, name: "wrapped" });
    try {
      const bytes = await p;
      const entries = await payloadOf(bytes);
      assert.deepEqual(
        entries.map((e) => e.path),
        ["data/agent.json", "data/0/d/", "data/0/d/a.txt", "data/0/l"],
      );
      assert.equal(JSON.parse(entries[0]?.body.toString() ?? "").name, "wrapped");
    } finally {
      await agent.close();
    }
  });

  test("backup: a trailer that reports an error fails it with the agent's message", async () => {
    const tar = tarOf([{ path: "a", body: "x" }], { end: false });
    const { agent, p } = await backupWith({
      backup: { tar, trailer: "error BACKUP_FAILED out of disk" },
    });
    try {
      await assert.rejects(p, (err: unknown) => {
        isCode("AGENT_FAILED")(err);
        assert.match((err as Error).message, /BACKUP_FAILED: out of disk/);
        return true;
      });
    } finally {
      await agent.close();
    }
  });

  test("backup: a complete tar without the ok trailer is not trusted", async () => {
    const tar = tarOf([{ path: "a", body: "x" }]);
    const { agent, p } = await backupWith({ backup: { tar, trailer: "maybe" } });
    try {
      await assert.rejects(p, isCode("AGENT_FAILED"));
    } finally {
      await agent.close();
    }
  });

  test("backup: an agent that hangs mid-stream is timed out and finish still runs", async () => {
    const started = Date.now();
    const { agent, p } = await backupWith({ backup: "hang" }, { idle_timeout: 1 });
    try {
      await assert.rejects(p, isCode("AGENT_TIMEOUT"));
      assert.ok(Date.now() - started < 10_000, "the timeout took too long");
      const finish = agent.requests.find((r) => r.url === "/v1/finish");
      assert.ok(finish !== undefined, "finish was not sent");
      assert.equal(JSON.parse(finish.body.toString()).outcome, "error");
    } finally {
      await agent.close();
    }
  });

  test("backup: an agent whose prepare hangs is timed out and told to finish", async () => {
    const { agent, p } = await backupWith({ hangPrepare: true }, { prepare_timeout: 1 });
    try {
      await assert.rejects(p, isCode("AGENT_TIMEOUT"));
      assert.ok(
        agent.requests.some((r) => r.url === "/v1/finish"),
        "finish was not sent",
      );
      assert.ok(!agent.requests.some((r) => r.url === "/v1/backup"));
    } finally {
      await agent.close();
    }
  });

  test("restore: an agent that never answers is timed out and finish still runs", async () => {
    const s = sock();
    const agent = await scriptedAgent(s, { hangRestore: true, name: "hangs" });
    try {
      const app = appOf(s, { timeout: 1 });
      const archive = await archiveOf(manifestOf(app.settings), [
        { path: "data/agent.json", body: Buffer.from('{"name":"hangs"}') },
        { path: "data/0/a.txt", body: Buffer.from("a") },
      ]);
      const started = Date.now();
      await assert.rejects(restoreArchive(agentDriver, app, archive), isCode("AGENT_TIMEOUT"));
      assert.ok(Date.now() - started < 10_000, "the timeout took too long");
      assert.deepEqual(
        agent.requests.map((r) => r.url),
        ["/v1/info", "/v1/prepare", "/v1/restore", "/v1/finish"],
      );
      assert.equal(JSON.parse(agent.requests[3]?.body.toString() ?? "").outcome, "error");
      // The payload it got was the checked one, re-encoded as the agent's own tar.
      const { execFileSync } = await import("node:child_process");
      const listing = execFileSync("tar", ["-tv"], { input: agent.requests[2]?.body }).toString();
      assert.match(listing, / a\.txt\n$/);
    } finally {
      await agent.close();
    }
  });

  test("a symlink at the socket path is never followed", async () => {
    const real = sock();
    const agent = await scriptedAgent(real, { backup: { tar: tarOf([]) } });
    const link = join(dir, "link.sock");
    symlinkSync(real, link);
    const linkedDir = join(dir, "linked-dir");
    symlinkSync(dir, linkedDir);
    try {
      await assert.rejects(backupArchive(agentDriver, appOf(link)), isCode("AGENT_UNREACHABLE"));
      await assert.rejects(
        backupArchive(agentDriver, appOf(join(linkedDir, real.split("/").pop() as string))),
        isCode("AGENT_UNREACHABLE"),
      );
      assert.deepEqual(agent.requests, []);
      const h = await agentDriver.health(appOf(link).settings as never);
      assert.equal(h.ok, false);
      assert.match(h.message, /symlink/);
    } finally {
      await agent.close();
    }
  });

  test("no socket: AGENT_UNREACHABLE and an unhealthy app", async () => {
    const s = sock();
    await assert.rejects(backupArchive(agentDriver, appOf(s)), isCode("AGENT_UNREACHABLE"));
    const h = await agentDriver.health(appOf(s).settings as never);
    assert.equal(h.ok, false);
    assert.match(h.message, /AGENT_UNREACHABLE/);
  });

  describe("restore", () => {
    let s: string;
    let root: string;
    let a: DirAgent;
    before(async () => {
      s = sock();
      root = join(dir, "restore-agent");
      a = await startDirAgent(root, s, "target");
      writeFileSync(join(a.dataDir, "live.txt"), "live\n");
    });
    after(async () => {
      await a.agent.close();
    });

    const info = Buffer.from('{"name":"target"}\n');
    for (const [what, entries] of [
      ["a '..' path", [{ path: "data/0/../x", body: Buffer.from("x") }]],
      ["a path outside data/0", [{ path: "data/1/x", body: Buffer.from("x") }]],
      ["an absolute path", [{ path: "/etc/passwd", body: Buffer.from("x") }]],
    ] as const) {
      test(`an archive with ${what} is refused before the agent hears anything`, async () => {
        const app = appOf(s);
        const before = treeSnapshot(a.dataDir);
        const calls = a.calls.length;
        const archive = await archiveOf(manifestOf(app.settings), [
          { path: "data/agent.json", body: info },
          { path: "data/0/data/ok.txt", body: Buffer.from("ok") },
          ...entries,
        ]);
        await assert.rejects(restoreArchive(agentDriver, app, archive), isCode("ARCHIVE_UNSAFE"));
        assert.deepEqual(a.calls.slice(calls), [], "the agent was contacted");
        assert.equal(treeSnapshot(a.dataDir), before);
      });
    }

    test("an archive with a symlink out is refused before the agent hears anything", async () => {
      const app = appOf(s);
      const { writeArchive } = await import("../../../src/core/archive/writer.js");
      async function* gen() {
        yield {
          header: {
            path: "data/agent.json",
            type: "file" as const,
            mode: 0o644,
            uid: 0,
            gid: 0,
            uname: "",
            gname: "",
            size: info.length,
            mtimeSec: 0,
            mtimeNsec: 0,
            linkpath: "",
          },
          body: info,
        };
        yield {
          header: {
            path: "data/0/data/evil",
            type: "symlink" as const,
            mode: 0o777,
            uid: 0,
            gid: 0,
            uname: "",
            gname: "",
            size: 0,
            mtimeSec: 0,
            mtimeNsec: 0,
            linkpath: "../../../../etc",
          },
        };
      }
      const chunks: Buffer[] = [];
      for await (const c of writeArchive(manifestOf(app.settings), gen())) chunks.push(c);
      const calls = a.calls.length;
      await assert.rejects(
        restoreArchive(agentDriver, app, Buffer.concat(chunks)),
        isCode("ARCHIVE_UNSAFE"),
      );
      assert.deepEqual(a.calls.slice(calls), []);
    });

    test("another application's agent archive is refused (ARCHIVE_FOREIGN)", async () => {
      const app = appOf(s);
      const calls = a.calls.length;
      const other = await archiveOf(
        { ...manifestOf(app.settings), socket: "/run/other/agent.sock" },
        [{ path: "data/agent.json", body: info }],
      );
      await assert.rejects(restoreArchive(agentDriver, app, other), isCode("ARCHIVE_FOREIGN"));
      const renamed = await archiveOf(manifestOf(app.settings), [
        { path: "data/agent.json", body: Buffer.from('{"name":"someone-else"}') },
        { path: "data/0/data/x", body: Buffer.from("x") },
      ]);
      await assert.rejects(restoreArchive(agentDriver, app, renamed), isCode("ARCHIVE_FOREIGN"));
      assert.ok(!a.calls.slice(calls).includes("restore"), "the payload was sent");
      assert.equal(a.restores, 0);
    });

    test("a good archive restores, between prepare and finish", async () => {
      const app = appOf(s);
      const bytes = await backupArchive(agentDriver, app);
      writeFileSync(join(a.dataDir, "live.txt"), "changed\n");
      const calls = a.calls.length;
      await restoreArchive(agentDriver, app, bytes);
      assert.deepEqual(a.calls.slice(calls), ["prepare:restore", "restore", "finish:restore:ok"]);
      assert.equal(treeSnapshot(a.dataDir), "live.txt=live\n");
    });
  });

  test("a cancelled backup tells the agent: finish runs with outcome 'cancelled'", async () => {
    const s = sock();
    const a = await startDirAgent(join(dir, "cancel"), s, "cancel");
    a.block = true;
    try {
      const ac = new AbortController();
      const p = backupArchive(agentDriver, appOf(s), { signal: ac.signal });
      p.catch(() => {});
      const { waitFor } = await import("../suite.js");
      assert.ok(await waitFor(() => a.backupRunning, 10_000), "the backup never started");
      ac.abort(new FerryError("CANCELLED", "cancelled by the test"));
      await assert.rejects(p, isCode("CANCELLED"));
      assert.ok(await waitFor(() => !a.backupRunning, 10_000), "the agent's backup still runs");
      assert.ok(await waitFor(() => a.finishes.length === 1, 10_000), "finish did not run");
      assert.deepEqual(a.finishes, [{ operation: "backup", outcome: "cancelled" }]);
    } finally {
      await a.agent.close();
    }
  });

  test("health and describe report reachability, version and the identity check", async () => {
    const s = sock();
    const a = await startDirAgent(join(dir, "health"), s, "healthy");
    try {
      const settings = appOf(s).settings as never;
      const h = await agentDriver.health(settings);
      assert.equal(h.ok, true, h.message);
      assert.match(h.message, /healthy 1\.2\.3 reachable; identity checked/);
      const d = await agentDriver.describe(settings);
      assert.equal(d.reachable, true);
      assert.match(String(d.identity), /^ok: pid \d+ runs as uid \d+$/);
      assert.equal((d.agent as { version: string }).version, "1.2.3");
    } finally {
      await a.agent.close();
    }
  });
});
