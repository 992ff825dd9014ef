/**
 * The peer check fails closed: no descriptor, a failing SO_PEERCRED, a bogus uid or an
 * unlisted uid all refuse; only a kernel-reported allowed uid passes. The last test uses
 * a real Unix socket connection and the real getsockopt.
 */
import assert from "node:assert/strict";
import { once } from "node:events";
import { closeSync, mkdtempSync, openSync, rmSync } from "node:fs";
import { createConnection, createServer, type Socket } from "node:net";
import { join } from "node:path";
import { test } from "node:test";
import { getPeerCred, SysError } from "../../src/core/sys.js";
import { checkPeer, socketFd } from "../../src/daemon/peer.js";

const fakeSocket = (fd: unknown) => ({ _handle: { fd } }) as unknown as Socket;
const me = process.getuid?.() as number;

test("peer check: a socket without a descriptor is refused", () => {
  const d = checkPeer(fakeSocket(undefined), new Set([me]));
  assert.equal(d.ok, false);
  assert.equal(checkPeer(fakeSocket(-1), new Set([me])).ok, false);
  assert.equal(checkPeer({} as Socket, new Set([me])).ok, false);
});

test("peer check: a failing SO_PEERCRED refuses (fail closed)", () => {
  const d = checkPeer(fakeSocket(7), new Set([me]), () => {
    throw new SysError("getsockopt", 9, "EBADF");
  });
  assert.equal(d.ok, false);
  assert.match(d.ok ? "" : d.reason, /SO_PEERCRED failed/);
});

test("peer check: the overflow uid (-1) and unlisted uids are refused", () => {
  assert.equal(
    checkPeer(fakeSocket(7), new Set([me]), () => ({ pid: 1, uid: 0xffffffff, gid: 0 })).ok,
    false,
  );
  assert.equal(
    checkPeer(fakeSocket(7), new Set([1000]), () => ({ pid: 1, uid: 1001, gid: 0 })).ok,
    false,
  );
  assert.equal(
    checkPeer(fakeSocket(7), new Set([1000, 1001]), () => ({ pid: 1, uid: 1001, gid: 0 })).ok,
    true,
  );
});

test("peer check: getsockopt on an open descriptor that is not a socket throws ENOTSOCK", () => {
  const dir = mkdtempSync("/tmp/ferry-peer-");
  const fd = openSync(join(dir, "plain-file"), "w+");
  try {
    assert.throws(
      () => getPeerCred(fd),
      (err: unknown) => err instanceof SysError && err.errnoName === "ENOTSOCK",
    );
    // And the peer check refuses a "socket" whose descriptor is that file.
    const d = checkPeer(fakeSocket(fd), new Set([me]));
    assert.equal(d.ok, false);
    assert.match(d.ok ? "" : d.reason, /SO_PEERCRED failed/);
  } finally {
    closeSync(fd);
    rmSync(dir, { recursive: true, force: true });
  }
});

test("peer check: a descriptor number that is not open throws EBADF", () => {
  assert.throws(
    () => getPeerCred(999_999),
    (err: unknown) => err instanceof SysError && err.errnoName === "EBADF",
  );
});

test("peer check: a real connection reports this process's uid and pid", async () => {
  const dir = mkdtempSync("/tmp/ferry-peer-");
  const path = join(dir, "s.sock");
  const server = createServer({ pauseOnConnect: true });
  server.listen(path);
  await once(server, "listening");
  try {
    const accepted = once(server, "connection");
    const client = createConnection(path);
    const [sock] = (await accepted) as [Socket];
    const fd = socketFd(sock);
    assert.equal(typeof fd, "number");
    const cred = getPeerCred(fd as number);
    assert.equal(cred.uid, me);
    assert.equal(cred.pid, process.pid);
    assert.equal(checkPeer(sock, new Set([me])).ok, true);
    assert.equal(checkPeer(sock, new Set([me + 1])).ok, false);
    sock.destroy();
    client.destroy();
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
