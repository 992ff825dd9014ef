/**
 * The socket's location: ferryd listens only in a directory that is a real directory
 * owned by its uid (made 0700), on a socket made 0600, and never removes anything at the
 * socket path but its own stale socket. Each refusal is tried as an attacker would set it
 * up, both on prepareSocketPath and through a real ferryd (user mode), asserting the
 * error and that nothing at the attacker's paths changed.
 *
 * Bounds: each ferryd run is bounded by 30 s.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import {
  chmodSync,
  chownSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createConnection, createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { FerryError } from "../../src/core/errors.js";
import { prepareSocketPath } from "../../src/daemon/socket.js";
import { startFerryd } from "../helpers/ferryd.js";
import { ensureUser, FERRYD, isRoot, needsRoot, run } from "../helpers/proc.js";

const me = process.getuid?.() as number;
const extra = isRoot ? ["--allow-root"] : [];

/** What an entry is: type, mode, owner (lstat, so a symlink is itself). */
function describeEntry(path: string): string {
  const st = lstatSync(path);
  const type = st.isSymbolicLink()
    ? "link"
    : st.isDirectory()
      ? "dir"
      : st.isSocket()
        ? "socket"
        : st.isFile()
          ? "file"
          : "other";
  return `${type} ${(st.mode & 0o7777).toString(8)} ${st.uid}`;
}

function refusedWith(fn: () => void, why: RegExp): void {
  assert.throws(fn, (err: unknown) => {
    assert.ok(err instanceof FerryError, String(err));
    assert.equal(err.code, "SOCKET_UNSAFE");
    assert.match(err.message, why);
    return true;
  });
}

async function listenOn(path: string): Promise<Server> {
  const s = createServer();
  s.listen(path);
  await once(s, "listening");
  return s;
}

describe("socket location", () => {
  let dir: string;
  let n = 0;
  before(() => {
    dir = mkdtempSync("/tmp/ferry-socket-");
    chmodSync(dir, 0o755);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));
  const fresh = () => {
    const d = join(dir, `case-${++n}`);
    mkdirSync(d);
    return d;
  };

  /** Runs ferryd on `socket` and expects it to exit non-zero with SOCKET_UNSAFE. */
  async function ferrydRefuses(socket: string, why: RegExp): Promise<void> {
    const base = fresh();
    const config = join(base, "ferry.toml");
    writeFileSync(config, `version = 1\nsocket = "${socket}"\nstate_dir = "${base}/state"\n`);
    const r = await run([process.execPath, FERRYD, "--config", config, ...extra], {
      timeoutMs: 30_000,
    });
    assert.notEqual(r.code, 0, `ferryd started: ${r.stderr}`);
    assert.match(r.stderr, /SOCKET_UNSAFE/);
    assert.match(r.stderr, why);
  }

  test("socket-dir-not-a-directory: a file where the directory should be is refused, untouched", async () => {
    const base = fresh();
    const notDir = join(base, "run");
    writeFileSync(notDir, "a file\n", { mode: 0o644 });
    const before = describeEntry(notDir);
    refusedWith(() => prepareSocketPath(join(notDir, "ferry.sock"), me), /is not a directory/);
    await ferrydRefuses(join(notDir, "ferry.sock"), /is not a directory/);
    assert.equal(describeEntry(notDir), before);
    assert.equal(readFileSync(notDir, "utf8"), "a file\n");
  });

  test("socket-dir-symlink-attack: a symlinked directory is refused and its target is not chmodded", async () => {
    const base = fresh();
    const target = join(base, "victim");
    mkdirSync(target, { mode: 0o755 });
    chmodSync(target, 0o755);
    writeFileSync(join(target, "keep"), "x");
    const link = join(base, "run");
    symlinkSync(target, link);
    const before = [
      describeEntry(link),
      describeEntry(target),
      describeEntry(join(target, "keep")),
    ];
    refusedWith(() => prepareSocketPath(join(link, "ferry.sock"), me), /symlink/);
    await ferrydRefuses(join(link, "ferry.sock"), /symlink/);
    assert.deepEqual(
      [describeEntry(link), describeEntry(target), describeEntry(join(target, "keep"))],
      before,
      "the symlink or its target changed",
    );
  });

  test("socket-dir-wrong-owner: a directory owned by another uid is refused, not chmodded", () => {
    const base = fresh();
    const d = join(base, "run");
    mkdirSync(d);
    chmodSync(d, 0o777);
    // As ferryd of uid me+1 sees it, the directory belongs to someone else.
    refusedWith(
      () => prepareSocketPath(join(d, "ferry.sock"), me + 1),
      new RegExp(`is owned by uid ${me}, not ferryd's uid ${me + 1}`),
    );
    assert.equal(describeEntry(d), `dir 777 ${me}`);
  });

  test("socket-dir-wrong-owner through ferryd: another user's directory is refused", {
    skip: needsRoot,
  }, async () => {
    const other = ensureUser("ferry-e2e-other");
    const base = fresh();
    const d = join(base, "run");
    mkdirSync(d, { mode: 0o755 });
    chownSync(d, other.uid, other.gid);
    const before = describeEntry(d);
    await ferrydRefuses(join(d, "ferry.sock"), new RegExp(`owned by uid ${other.uid}`));
    assert.equal(describeEntry(d), before);
  });

  test("socket-path-not-a-socket: a file at the socket path is refused and not removed", async () => {
    const base = fresh();
    const d = join(base, "run");
    mkdirSync(d, { mode: 0o700 });
    const path = join(d, "ferry.sock");
    writeFileSync(path, "someone's data\n", { mode: 0o600 });
    refusedWith(() => prepareSocketPath(path, me), /is not a socket; refusing to remove it/);
    await ferrydRefuses(path, /is not a socket; refusing to remove it/);
    assert.equal(readFileSync(path, "utf8"), "someone's data\n");
  });

  test("socket-path-other-users-socket through ferryd: refused, the socket still answers", {
    skip: needsRoot,
  }, async () => {
    const other = ensureUser("ferry-e2e-other");
    const base = fresh();
    const d = join(base, "run");
    mkdirSync(d, { mode: 0o700 });
    const path = join(d, "ferry.sock");
    const server = await listenOn(path);
    try {
      chownSync(path, other.uid, other.gid);
      const before = describeEntry(path);
      refusedWith(
        () => prepareSocketPath(path, me),
        new RegExp(`is a socket owned by uid ${other.uid}; refusing to remove it`),
      );
      await ferrydRefuses(path, new RegExp(`socket owned by uid ${other.uid}`));
      assert.equal(describeEntry(path), before);
      // Still the other user's live socket: a connection reaches its listener.
      const accepted = once(server, "connection");
      const c = createConnection(path);
      await accepted;
      c.destroy();
    } finally {
      server.close();
    }
  });

  test("a stale socket of ferryd's own uid is replaced; the directory is made 0700, the socket 0600", async () => {
    const base = fresh();
    const d = join(base, "run");
    mkdirSync(d);
    chmodSync(d, 0o755);
    const path = join(d, "ferry.sock");
    // A socket left behind by a crash: bound, never unlinked, nobody listening.
    execFileSync("python3", [
      "-c",
      "import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])",
      path,
    ]);
    assert.equal(describeEntry(path).split(" ")[0], "socket");
    const config = join(base, "ferry.toml");
    writeFileSync(config, `version = 1\nsocket = "${path}"\nstate_dir = "${base}/state"\n`);
    const daemon = await startFerryd({ config, extraArgs: extra });
    try {
      assert.equal(describeEntry(d), `dir 700 ${me}`);
      assert.equal(describeEntry(path), `socket 600 ${me}`);
    } finally {
      await daemon.stop();
    }
  });

  test("a missing directory is created 0700", async () => {
    const base = fresh();
    const path = join(base, "made/ferry.sock");
    const config = join(base, "ferry.toml");
    writeFileSync(config, `version = 1\nsocket = "${path}"\nstate_dir = "${base}/state"\n`);
    const daemon = await startFerryd({ config, extraArgs: extra });
    try {
      assert.equal(describeEntry(join(base, "made")), `dir 700 ${me}`);
      assert.equal(describeEntry(path), `socket 600 ${me}`);
    } finally {
      await daemon.stop();
    }
  });
});
