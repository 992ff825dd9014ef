/**
 * The one rule: a request is served only if the kernel says the peer's uid is ferryd's own
 * uid or one listed in `clients`. Identity comes from SO_PEERCRED on the accepted socket,
 * read synchronously when the connection is accepted and before any request byte is read;
 * never from the request, the socket path, a pid or /proc. Any failure closes (fail closed).
 */
import type { Socket } from "node:net";
import { getPeerCred, type PeerCred } from "../core/sys.js";

export type PeerDecision =
  | { ok: true; cred: PeerCred }
  | { ok: false; cred?: PeerCred; reason: string };

/** The descriptor behind a net.Socket, or undefined if Node does not expose one. */
export function socketFd(socket: Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } })._handle;
  const fd = handle?.fd;
  return typeof fd === "number" && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

/** `readCred` is injectable so tests can make the kernel call fail. */
export function checkPeer(
  socket: Socket,
  allowed: ReadonlySet<number>,
  readCred: (fd: number) => PeerCred = getPeerCred,
): PeerDecision {
  const fd = socketFd(socket);
  if (fd === undefined) return { ok: false, reason: "no descriptor for the connection" };
  let cred: PeerCred;
  try {
    cred = readCred(fd);
  } catch (err) {
    return { ok: false, reason: `SO_PEERCRED failed: ${(err as Error).message}` };
  }
  if (!Number.isInteger(cred.uid) || cred.uid < 0 || cred.uid === 0xffffffff) {
    return { ok: false, cred, reason: "the kernel reported no valid uid" };
  }
  if (!allowed.has(cred.uid)) {
    return { ok: false, cred, reason: `uid ${cred.uid} is not allowed` };
  }
  return { ok: true, cred };
}
