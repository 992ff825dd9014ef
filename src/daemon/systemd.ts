/**
 * The two systemd protocols ferryd speaks, without linking libsystemd:
 *
 * - socket activation (sd_listen_fds): when LISTEN_PID is our pid and LISTEN_FDS ≥ 1, the
 *   listening socket is descriptor 3. The variables are removed from the environment so
 *   children do not mistake them for theirs.
 * - readiness (sd_notify): "READY=1" / "RELOADING=1" / "STOPPING=1" datagrams to the
 *   AF_UNIX socket in NOTIFY_SOCKET (a path, or an abstract name written "@name").
 *   Node has no AF_UNIX datagram sockets, so the datagram is sent through koffi.
 */
import { libc } from "../core/libc.js";

const SD_LISTEN_FDS_START = 3;

/**
 * How many descriptors from 3 up systemd passed to this process (LISTEN_PID is ours),
 * without consuming the variables; 0 when not socket-activated.
 */
export function listenFdCount(env: NodeJS.ProcessEnv = process.env): number {
  if (env.LISTEN_PID === undefined || Number(env.LISTEN_PID) !== process.pid) return 0;
  const n = Number(env.LISTEN_FDS);
  return Number.isInteger(n) && n > 0 ? Math.min(n, 64) : 0;
}

/** The inherited listening descriptor, or undefined when not socket-activated. */
export function listenFd(env: NodeJS.ProcessEnv = process.env): number | undefined {
  const pid = env.LISTEN_PID;
  const fds = env.LISTEN_FDS;
  if (pid === undefined || fds === undefined) return undefined;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (Number(pid) !== process.pid) return undefined;
  const n = Number(fds);
  if (!Number.isInteger(n) || n < 1) return undefined;
  return SD_LISTEN_FDS_START;
}

const socket = libc.func("int socket(int, int, int)");
const sendto = libc.func("intptr_t sendto(int, const void *, size_t, int, const void *, uint32_t)");
const close = libc.func("int close(int)");

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;

/** Sends a notification; returns false when not run under systemd (or on failure). */
export function sdNotify(state: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const path = env.NOTIFY_SOCKET;
  if (path === undefined || path === "" || (path[0] !== "/" && path[0] !== "@")) return false;
  const name = Buffer.from(path);
  if (name.length > 107) return false;
  const addr = Buffer.alloc(2 + 108);
  addr.writeUInt16LE(AF_UNIX, 0);
  name.copy(addr, 2);
  if (path[0] === "@") addr[2] = 0; // abstract namespace
  const addrLen = 2 + name.length + (path[0] === "@" ? 0 : 1);
  const fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) return false;
  try {
    const msg = Buffer.from(state);
    return Number(sendto(fd, msg, msg.length, 0, addr, addrLen)) === msg.length;
  } finally {
    close(fd);
  }
}
