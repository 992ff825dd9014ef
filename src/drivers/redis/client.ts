/**
 * Opening a Redis connection for the driver: no retries, no offline queue, bounded waits.
 * ioredis is loaded on first use: it adds some 25 MB to the resident size of a ferryd
 * that may serve no Redis application at all (bench/README.md, ferryd's memory).
 */
import type { Redis } from "ioredis";
import { FerryError } from "../../core/errors.js";
import { readTrustedText } from "../../core/secret-file.js";
import type { RedisConnection } from "./config.js";

/**
 * The password: inline from the url, or read from `password_file` at every connect
 * through the trusted walk (never by path, never through a symlink; a regular root-owned
 * file with one link, in directories only root can write; see docs/security.md), so a
 * file swapped after start-up is refused just as at start-up.
 */
export function readPassword(conn: RedisConnection): string | undefined {
  if (conn.passwordFile === undefined) return conn.password;
  return readTrustedText(conn.passwordFile, "password_file").replace(/\r?\n$/, "");
}

/**
 * Connects to `db` (default: the configured one); throws HELPER_FAILED when unreachable.
 * An abort of `signal` while connecting (or later) closes the connection at once.
 */
export async function connectRedis(
  conn: RedisConnection,
  db = conn.db,
  signal?: AbortSignal,
): Promise<Redis> {
  signal?.throwIfAborted();
  const password = readPassword(conn);
  const { Redis } = await import("ioredis");
  const r = new Redis({
    host: conn.host,
    port: conn.port,
    db,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    retryStrategy: () => null,
    connectTimeout: 10_000,
    connectionName: "ferry",
    commandTimeout: 600_000,
    ...(conn.username === undefined ? {} : { username: conn.username }),
    ...(password === undefined ? {} : { password }),
    ...(conn.tls ? { tls: {} } : {}),
  });
  r.on("error", () => {}); // surfaced through the failing command instead
  const onAbort = () => r.disconnect();
  signal?.addEventListener("abort", onAbort, { once: true });
  r.once("end", () => signal?.removeEventListener("abort", onAbort));
  try {
    await r.connect();
  } catch (err) {
    r.disconnect();
    if (signal?.aborted) throw signal.reason;
    throw new FerryError(
      "HELPER_FAILED",
      `cannot connect to redis at ${conn.host}:${conn.port}: ${(err as Error).message}`,
      { cause: err },
    );
  }
  return r;
}

/** The server's version from INFO server. */
export async function serverVersion(r: Redis): Promise<string> {
  const info = await r.info("server");
  return /redis_version:(\S+)/.exec(info)?.[1] ?? "unknown";
}
