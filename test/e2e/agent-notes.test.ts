/**
 * End to end, as root: the example notes app runs as its own user and serves the agent
 * protocol; ferryd runs as the backup user (--user). `ferry export notes | ferry import
 * notes` round-trips while the app keeps serving, and its readers see the old notes or the
 * new ones, never a mix. An impostor on a configured agent socket (another uid, with or
 * without the socket file chowned to the owner) gets AGENT_IMPOSTOR on backup and restore
 * and receives not one byte.
 *
 * Bounds: a handful of notes; every command has a 2-minute timeout; reader loops stop
 * with the command they watch.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { archiveOf } from "../drivers/suite.js";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { asUser, ensureUser, ferry, needsRoot, ROOT, run, type TestUser } from "../helpers/proc.js";

const NOTES_APP = `${ROOT}dist/examples/notes-app/main.js`;
const RAW_AGENT = `${ROOT}dist/test/agent/raw-agent.js`;

interface Note {
  id: string;
  text: string;
}

async function startProcess(
  user: TestUser,
  argv: string[],
  ready: RegExp,
): Promise<{ child: ChildProcess; out: string }> {
  const full = asUser(user, argv);
  const child = spawn(full[0] as string, full.slice(1), { stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout?.on("data", (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  const deadline = Date.now() + 30_000;
  while (!ready.test(out)) {
    if (child.exitCode !== null) throw new Error(`${argv.join(" ")} exited: ${err}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`${argv.join(" ")} did not start: ${err}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return { child, out };
}

async function stopProcess(child: ChildProcess | undefined): Promise<void> {
  if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  const t = setTimeout(() => child.kill("SIGKILL"), 5000);
  await once(child, "exit");
  clearTimeout(t);
}

describe("agent end to end: the notes app", { skip: needsRoot, timeout: 300_000 }, () => {
  let dir: string;
  let appUser: TestUser;
  let backup: TestUser;
  let evil: TestUser;
  let daemon: RunningFerryd;
  let app: ChildProcess;
  let base: string;
  let socket: string;
  let shared: string;
  let archivePath: string;

  const api = async (method: string, path: string, body?: string) => {
    const r = await fetch(`${base}${path}`, { method, ...(body === undefined ? {} : { body }) });
    return { status: r.status, json: (await r.json()) as unknown };
  };
  const notes = async () =>
    ((await api("GET", "/notes")).json as Note[])
      .map((n) => `${n.id}=${n.text}`)
      .sort()
      .join(",");

  before(async () => {
    appUser = ensureUser("ferry-notes-app");
    backup = ensureUser("ferry-notes-bk");
    evil = ensureUser("ferry-notes-evil");
    dir = mkdtempSync("/tmp/ferry-agent-e2e-");
    chmodSync(dir, 0o755);
    const home = join(dir, "notes");
    mkdirSync(join(home, "run"), { recursive: true });
    chownSync(home, appUser.uid, appUser.gid);
    chownSync(join(home, "run"), appUser.uid, appUser.gid);
    chmodSync(home, 0o700);
    socket = join(home, "run/agent.sock");
    shared = join(dir, "shared");
    mkdirSync(shared);
    chmodSync(shared, 0o1777);
    mkdirSync(join(dir, "out"));
    chownSync(join(dir, "out"), backup.uid, backup.gid);
    archivePath = join(dir, "out/evil.tar");

    const started = await startProcess(
      appUser,
      [
        process.execPath,
        NOTES_APP,
        "--data",
        join(home, "data"),
        "--socket",
        socket,
        "--port",
        "0",
      ],
      /listening on (http:\/\/127\.0\.0\.1:\d+)/,
    );
    app = started.child;
    base = (
      /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(started.out) as RegExpExecArray
    )[1] as string;

    const config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      [
        "version = 1",
        `socket = "${dir}/ferryd/ferry.sock"`,
        `state_dir = "${dir}/state"`,
        "",
        "[apps.notes]",
        'driver = "agent"',
        `socket = "${socket}"`,
        `owner = "${appUser.name}"`,
        "restore = true",
        "",
        "[apps.evil]",
        'driver = "agent"',
        `socket = "${shared}/agent.sock"`,
        `owner = "${appUser.name}"`,
        "restore = true",
        "connect_timeout = 5",
        "",
      ].join("\n"),
    );
    daemon = await startFerryd({ config, serviceUser: backup });
  });

  after(async () => {
    await daemon?.stop();
    await stopProcess(app);
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  const ferrySock = () => `${dir}/ferryd/ferry.sock`;

  test("GET /v1/apps shows the agent reachable, its version and the identity check", async () => {
    const r = await run(["curl", "-sS", "--unix-socket", ferrySock(), "http://ferry/v1/apps"], {
      user: backup,
    });
    assert.equal(r.code, 0, r.stderr);
    const body = JSON.parse(r.stdout.toString()) as {
      apps: { name: string; health: { ok: boolean; message: string } }[];
    };
    const list = Array.isArray(body) ? (body as typeof body.apps) : body.apps;
    const notesApp = list.find((a) => a.name === "notes");
    assert.ok(notesApp !== undefined);
    assert.equal(notesApp.health.ok, true, notesApp.health.message);
    assert.match(
      notesApp.health.message,
      new RegExp(
        `notes-app 1\\.0\\.0 reachable; identity checked: runs as ${appUser.name} \\(uid ${appUser.uid}\\)`,
      ),
    );
  });

  test("ferry export notes | ferry import notes round-trips while readers see old or new", async () => {
    await api("PUT", "/notes/alpha", "first note");
    await api("PUT", "/notes/beta", "second note");
    const original = await notes();
    const exported = join(dir, "out/notes.tar");

    // A writer during the export: its writes wait for finish, none is lost.
    let writes = 0;
    let stopWriter = false;
    const writer = (async () => {
      while (!stopWriter && writes < 200) {
        const r = await api("PUT", `/notes/w${writes % 3}`, `write ${writes}`);
        assert.equal(r.status, 200);
        writes++;
      }
    })();
    const ex = await ferry(ferrySock(), ["export", "notes", "-o", exported], { user: backup });
    stopWriter = true;
    await writer;
    assert.equal(ex.code, 0, ex.stderr);
    const atExport = JSON.parse(
      (await run(["tar", "-xOf", exported, "data/agent.json"])).stdout.toString(),
    );
    assert.equal(atExport.name, "notes-app");
    // Restore the export's own state, whatever the writer had reached by then.
    const listing = (await run(["tar", "-tf", exported])).stdout.toString();
    assert.match(listing, /^data\/0\/notes\/alpha\.json$/m);
    const exportedState = (
      await run(["sh", "-c", `tar -xOf ${exported} --wildcards 'data/0/notes/*.json' | sort`])
    ).stdout
      .toString()
      .trim()
      .split("\n")
      .map((l) => JSON.parse(l) as Note)
      .map((n) => `${n.id}=${n.text}`)
      .sort()
      .join(",");

    await api("PUT", "/notes/alpha", "changed");
    await api("DELETE", "/notes/beta");
    await api("PUT", "/notes/gamma", "new one");
    const changed = await notes();
    assert.notEqual(changed, exportedState);

    const pid = app.pid;
    let stopReaders = false;
    const seen = new Map<string, number>();
    const readers = Promise.all(
      [0, 1].map(async () => {
        while (!stopReaders) {
          const s = await notes();
          seen.set(s, (seen.get(s) ?? 0) + 1);
        }
      }),
    );
    const pipe = await run(
      [
        "sh",
        "-c",
        `"$0" "$1" --socket "$2" export notes | "$0" "$1" --socket "$2" import notes`,
        process.execPath,
        `${ROOT}dist/src/cli/ferry.js`,
        ferrySock(),
      ],
      { user: backup },
    );
    // The pipe exported the changed state and put it back: nothing changes for readers.
    assert.equal(pipe.code, 0, pipe.stderr);
    assert.equal(await notes(), changed);

    const imp = await ferry(ferrySock(), ["import", "notes", "-i", exported], { user: backup });
    await new Promise((r) => setTimeout(r, 100));
    stopReaders = true;
    await readers;
    assert.equal(imp.code, 0, imp.stderr);
    assert.equal(await notes(), exportedState);
    for (const state of seen.keys()) {
      assert.ok(state === changed || state === exportedState, `a reader saw a mix: ${state}`);
    }
    assert.ok(
      seen.has(changed) && seen.has(exportedState),
      "readers did not run across the restore",
    );
    assert.equal(app.pid, pid);
    assert.equal(app.exitCode, null, "the app restarted or died");
    assert.ok(original.includes("alpha=first note"));
    // Writes work again after the restore's finish.
    assert.equal((await api("PUT", "/notes/after", "still writable")).status, 200);
  });

  async function impostorCase(chownToOwner: boolean) {
    const evilSock = join(shared, "agent.sock");
    rmSync(evilSock, { force: true });
    const log = join(dir, `impostor-${chownToOwner}.log`);
    writeFileSync(log, "");
    chownSync(log, evil.uid, evil.gid);
    const imp = await startProcess(
      evil,
      [process.execPath, RAW_AGENT, "impostor", evilSock, log],
      /ready/,
    );
    try {
      if (chownToOwner) chownSync(evilSock, appUser.uid, appUser.gid);
      const ex = await ferry(ferrySock(), ["export", "evil", "-o", join(dir, "out/stolen.tar")], {
        user: backup,
      });
      assert.notEqual(ex.code, 0);
      assert.match(ex.stderr, /\[AGENT_IMPOSTOR\]/);
      assert.match(
        ex.stderr,
        chownToOwner
          ? new RegExp(`runs as uid ${evil.uid}`)
          : new RegExp(`owned by uid ${evil.uid}`),
      );

      const archive = await archiveOf(
        {
          app: "evil",
          driver: "agent",
          driver_type: "agent.v1",
          driver_version: 1,
          socket: evilSock,
          owner: appUser.name,
        },
        [
          { path: "data/agent.json", body: Buffer.from('{"name":"notes-app"}\n') },
          { path: "data/0/secret.txt", body: Buffer.from("SECRET-PAYLOAD-BYTES") },
        ],
      );
      writeFileSync(archivePath, archive);
      chownSync(archivePath, backup.uid, backup.gid);
      const im = await ferry(ferrySock(), ["import", "evil", "-i", archivePath], { user: backup });
      assert.notEqual(im.code, 0);
      assert.match(im.stderr, /\[AGENT_IMPOSTOR\]/);

      // Health results are cached for 5 s (src/daemon/health.ts): ask until the cached
      // answer from before the impostor started has expired.
      const impostorHealth =
        /"name":"evil"[^}]*"health":\{"ok":false,"message":"[^"]*AGENT_IMPOSTOR/;
      let listing = "";
      for (let i = 0; i < 40 && !impostorHealth.test(listing); i++) {
        if (i > 0) await new Promise((r) => setTimeout(r, 250));
        const health = await run(
          ["curl", "-sS", "--unix-socket", ferrySock(), "http://ferry/v1/apps"],
          { user: backup },
        );
        listing = health.stdout.toString();
      }
      assert.match(listing, impostorHealth);
      assert.equal(readFileSync(log).length, 0, "the impostor received bytes");
    } finally {
      await stopProcess(imp.child);
    }
  }

  test("the repository stores and restores the agent app like any other", async () => {
    const repo = join(dir, "out/repo");
    const env = { FERRY_REPO: repo, FERRY_PASSWORD: "agent e2e password" };
    const f = (args: string[]) => ferry(ferrySock(), args, { user: backup, env });
    const init = await f(["init"]);
    assert.equal(init.code, 0, init.stderr);
    await api("PUT", "/notes/kept", "the note the snapshot holds");
    const kept = await notes();
    const b = await f(["backup", "notes", "--json"]);
    assert.equal(b.code, 0, b.stderr);
    await api("PUT", "/notes/kept", "changed after the snapshot");
    assert.notEqual(await notes(), kept);
    const r = await f(["restore", "latest"]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await notes(), kept);
    const c = await f(["check", "--read-data"]);
    assert.equal(c.code, 0, c.stderr);
  });

  test("an impostor's own socket on the configured path: AGENT_IMPOSTOR, nothing sent", async () => {
    await impostorCase(false);
  });

  test("an impostor behind a socket chowned to the owner: SO_PEERCRED refuses it", async () => {
    await impostorCase(true);
  });
});
