/**
 * ferryd's side of the agent protocol (docs/agent-protocol.md): one verified connection per
 * request, HTTP/1.1 on it, bounded in time and size.
 *
 * Connecting is the privileged part. The agent's socket lives in a directory its owner
 * controls, so the owner could put a symlink anywhere on the way (to ferryd's own socket,
 * to a root daemon's). Therefore:
 * 1. the socket's directory is opened with openat2(RESOLVE_NO_SYMLINKS|NO_MAGICLINKS) over
 *    the whole path (safe-fs `openRoot`), and that descriptor is held;
 * 2. the socket's name is fstat'ed through it without following a symlink: it must be a
 *    socket owned by the configured owner;
 * 3. ferryd connects to `/proc/self/fd/<dirfd>/<name>`, the magic link of its own held
 *    descriptor, so no path string is resolved again;
 * 4. before a single byte is written, SO_PEERCRED of the connection must name the owner's
 *    uid. The name could have been swapped between 2 and 3, but not the kernel's record of
 *    who listens: anything else is AGENT_IMPOSTOR and the connection is closed unused.
 *
 * The protocol's calls made over such a request (info, prepare, finish, JSON bodies and
 * error answers) are calls.ts.
 */
import { request as httpRequest, type IncomingMessage } from "node:http";
import { connect, type Socket } from "node:net";
import { posix } from "node:path";
import type { Readable } from "node:stream";
import { PROTOCOL_HEADER, PROTOCOL_VERSION } from "../../agent/protocol.js";
import { FerryError } from "../../core/errors.js";
import { explain, openRoot } from "../../core/safe-fs.js";
import {
  closeFd,
  getPeerCred,
  type PeerCred,
  S_IFLNK,
  S_IFMT,
  S_IFSOCK,
  SysError,
  statAt,
} from "../../core/sys.js";
import type { AgentConfig } from "./config.js";

/** The descriptor behind a net.Socket (same as the daemon's peer check reads). */
function socketFd(socket: Socket): number | undefined {
  const handle = (socket as unknown as { _handle?: { fd?: unknown } })._handle;
  const fd = handle?.fd;
  return typeof fd === "number" && Number.isInteger(fd) && fd >= 0 ? fd : undefined;
}

/** Printable, bounded text of something the agent said. */
export function clean(s: unknown, max = 300): string {
  return String(s)
    .replace(/[^\x20-\x7e]/g, "?")
    .slice(0, max);
}

function unreachable(config: AgentConfig, why: string, cause?: unknown): FerryError {
  return new FerryError("AGENT_UNREACHABLE", `agent socket ${config.socket}: ${why}`, { cause });
}

function impostor(config: AgentConfig, why: string): FerryError {
  return new FerryError(
    "AGENT_IMPOSTOR",
    `agent socket ${config.socket}: ${why}, not ${config.owner} (uid ${config.user.uid}); nothing was sent or accepted`,
  );
}

export function withTimeout<T>(
  p: Promise<T>,
  ms: number,
  onTimeout: () => Error,
  signal?: AbortSignal,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const timer = setTimeout(() => {
      done();
      reject(onTimeout());
    }, ms);
    const onAbort = () => {
      done();
      reject(signal?.reason);
    };
    if (signal?.aborted) return onAbort();
    signal?.addEventListener("abort", onAbort, { once: true });
    p.then(
      (v) => {
        done();
        resolve(v);
      },
      (e) => {
        done();
        reject(e);
      },
    );
  });
}

export interface VerifiedConnection {
  socket: Socket;
  cred: PeerCred;
}

/**
 * Opens a connection to the agent and proves who listens on it (see the module comment).
 * Throws AGENT_UNREACHABLE or AGENT_IMPOSTOR; on success nothing has been written yet.
 */
export async function connectVerified(
  config: AgentConfig,
  signal?: AbortSignal,
): Promise<VerifiedConnection> {
  const dir = posix.dirname(config.socket);
  const name = posix.basename(config.socket);
  let dirfd: number;
  try {
    dirfd = openRoot(dir);
  } catch (err) {
    throw unreachable(
      config,
      `cannot open its directory: ${explain((err as Error).cause ?? err)}`,
      err,
    );
  }
  let socket: Socket | undefined;
  try {
    let st: ReturnType<typeof statAt>;
    try {
      st = statAt(dirfd, name);
    } catch (err) {
      if (err instanceof SysError && err.errnoName === "ENOENT") {
        throw unreachable(config, "no such socket (is the application running?)", err);
      }
      throw unreachable(config, explain(err), err);
    }
    const type = st.mode & S_IFMT;
    if (type === S_IFLNK) {
      throw unreachable(config, "is a symlink; ferryd never follows symlinks to an agent");
    }
    if (type !== S_IFSOCK) throw unreachable(config, "is not a socket");
    if (st.uid !== config.user.uid) throw impostor(config, `the socket is owned by uid ${st.uid}`);

    const s = connect({ path: `/proc/self/fd/${dirfd}/${name}` });
    socket = s;
    await withTimeout(
      new Promise<void>((resolve, reject) => {
        s.once("connect", resolve);
        s.once("error", reject);
      }),
      config.connect_timeout * 1000,
      () => unreachable(config, `no connection within ${config.connect_timeout}s`),
      signal,
    ).catch((err) => {
      if (err instanceof FerryError || (signal?.aborted && err === signal.reason)) throw err;
      const code = (err as NodeJS.ErrnoException).code;
      throw unreachable(
        config,
        code === "ECONNREFUSED"
          ? "nothing listens on it (is the application running?)"
          : clean((err as Error).message),
        err,
      );
    });
    const fd = socketFd(s);
    if (fd === undefined) throw unreachable(config, "the connection has no descriptor");
    let cred: PeerCred;
    try {
      cred = getPeerCred(fd);
    } catch (err) {
      throw impostor(config, `SO_PEERCRED failed (${clean((err as Error).message)})`);
    }
    if (cred.uid !== config.user.uid) {
      throw impostor(
        config,
        `the process listening on it (pid ${cred.pid}) runs as uid ${cred.uid}`,
      );
    }
    return { socket: s, cred };
  } catch (err) {
    socket?.destroy();
    throw err;
  } finally {
    closeFd(dirfd);
  }
}

export interface AgentRequest {
  method: "GET" | "POST";
  path: string;
  /** JSON value, or a stream with its exact length. */
  json?: unknown;
  stream?: { body: Readable; length: number };
  /** Time for the response head to arrive (after the body was sent). */
  timeoutMs: number;
  signal?: AbortSignal;
}

export interface AgentResponse {
  res: IncomingMessage;
  cred: PeerCred;
  /** Tears the connection down (idempotent). */
  destroy(reason?: Error): void;
}

export function timeoutError(config: AgentConfig, what: string, ms: number): FerryError {
  return new FerryError(
    "AGENT_TIMEOUT",
    `the agent of ${config.socket} did not answer ${what} within ${ms / 1000}s`,
  );
}

/** Sends one request on a fresh verified connection; resolves with the response head. */
export async function agentRequest(config: AgentConfig, r: AgentRequest): Promise<AgentResponse> {
  const what = `${r.method} ${r.path}`;
  const { socket, cred } = await connectVerified(config, r.signal);
  const headers: Record<string, string | number> = {
    host: "agent",
    connection: "close",
    [PROTOCOL_HEADER]: String(PROTOCOL_VERSION),
  };
  let body: Buffer | undefined;
  if (r.json !== undefined) {
    body = Buffer.from(JSON.stringify(r.json));
    headers["content-type"] = "application/json";
    headers["content-length"] = body.length;
  } else if (r.stream !== undefined) {
    headers["content-type"] = "application/x-tar";
    headers["content-length"] = r.stream.length;
  } else if (r.method === "POST") {
    headers["content-length"] = 0;
  }
  const req = httpRequest({
    method: r.method,
    path: r.path,
    headers,
    createConnection: () => socket,
  });
  const destroy = (reason?: Error) => {
    req.destroy(reason);
    socket.destroy();
  };
  const head = new Promise<IncomingMessage>((resolve, reject) => {
    req.once("response", resolve);
    req.once("error", reject);
  });
  // The timer for the answer starts once the request (and its body) went out.
  const sent = new Promise<void>((resolve, reject) => {
    req.once("finish", resolve);
    req.once("error", reject);
  });
  head.catch(() => {});
  sent.catch(() => {});
  if (r.stream !== undefined) {
    const src = r.stream.body;
    src.once("error", (err) => destroy(err));
    src.pipe(req);
  } else {
    req.end(body);
  }
  try {
    await withTimeout(
      sent,
      r.timeoutMs,
      () => timeoutError(config, `${what} (sending)`, r.timeoutMs),
      r.signal,
    );
    const res = await withTimeout(
      head,
      r.timeoutMs,
      () => timeoutError(config, what, r.timeoutMs),
      r.signal,
    );
    const proto = res.headers[PROTOCOL_HEADER];
    if (proto !== undefined && proto !== String(PROTOCOL_VERSION)) {
      throw new FerryError(
        "AGENT_PROTOCOL_ERROR",
        `the agent speaks protocol ${clean(proto, 20)}; this ferryd speaks ${PROTOCOL_VERSION}`,
      );
    }
    return { res, cred, destroy };
  } catch (err) {
    destroy();
    if (err instanceof FerryError || (r.signal?.aborted && err === r.signal.reason)) throw err;
    throw new FerryError(
      "AGENT_UNREACHABLE",
      `the agent of ${config.socket} dropped ${what}: ${clean((err as Error).message)}`,
      { cause: err },
    );
  }
}
