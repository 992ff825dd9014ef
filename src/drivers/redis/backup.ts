/**
 * Backing up Redis.
 *
 * Logical mode (default): the driver walks the database with SCAN and, for each batch of
 * up to BATCH keys, sends `MULTI; DUMP k; PTTL k; …; EXEC`, appending the results to the
 * key stream (format.ts) in a private spool file. This needs nothing on the server's disk.
 *
 * Consistency, precisely: every key's value and TTL are one point-in-time pair, and every
 * batch of up to BATCH keys is one point in time (MULTI/EXEC runs atomically). The backup
 * as a whole is NOT a point-in-time snapshot of the database: SCAN returns every key that
 * existed for the whole scan at least once (possibly twice; a duplicate is restored twice,
 * the last copy wins), a key created during the scan may or may not be included, a key
 * deleted or expired during the scan is left out, and two keys in different batches may
 * reflect different moments. An application that needs a consistent cut across keys must
 * quiesce writers in `pre_backup` (or use `mode = "rdb"`).
 *
 * RDB mode: `redis-cli --rdb FILE` runs as `os_user` (no capabilities), asking the server
 * for a full snapshot (the same fork-based snapshot a replica gets): point-in-time for the
 * whole server, every db. It is archived as `data/dump.rdb`.
 */
import { fsyncSync } from "node:fs";
import type { Redis } from "ioredis";
import { fileEntryHeader } from "../../core/archive/tar.js";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { FerryError } from "../../core/errors.js";
import { runHelper } from "../../core/spawn.js";
import { timeoutMs } from "../common.js";
import { noData, writeAll } from "../dump-io.js";
import { Spool } from "../spool.js";
import type { DriverContext } from "../types.js";
import { connectRedis, readPassword, serverVersion } from "./client.js";
import type { RedisConfig } from "./config.js";
import { encodeRecord, encodeTrailer, MAGIC } from "./format.js";

export const KEYS_ENTRY = "data/keys.redis";
export const META_ENTRY = "data/redis.json";
export const RDB_ENTRY = "data/dump.rdb";
const BATCH = 500;
const FLUSH_BYTES = 1024 * 1024;

function metaEntry(meta: Record<string, unknown>): ArchiveEntry {
  const body = Buffer.from(`${JSON.stringify(meta)}\n`);
  return { header: fileEntryHeader(META_ENTRY, body.length), body };
}

/** Writes the whole key stream of the connected db into `fd`; returns the key count. */
async function dumpKeys(r: Redis, fd: number, signal: AbortSignal): Promise<number> {
  let pending: Buffer[] = [MAGIC];
  let pendingBytes = MAGIC.length;
  const flush = async () => {
    if (pending.length === 0) return;
    const b = Buffer.concat(pending);
    pending = [];
    pendingBytes = 0;
    await writeAll(fd, b);
  };
  let count = 0;
  let cursor = "0";
  do {
    signal.throwIfAborted();
    const [next, keys] = (await r.callBuffer("SCAN", cursor, "COUNT", BATCH)) as [Buffer, Buffer[]];
    cursor = next.toString();
    if (keys.length === 0) continue;
    const tx = r.multi();
    for (const k of keys) {
      tx.dumpBuffer(k);
      tx.pttl(k);
    }
    const res = await tx.exec();
    if (res === null) throw new FerryError("BACKUP_FAILED", "redis aborted a MULTI/EXEC batch");
    for (let i = 0; i < keys.length; i++) {
      const [derr, dump] = res[2 * i] as [Error | null, Buffer | null];
      const [terr, pttl] = res[2 * i + 1] as [Error | null, number];
      if (derr !== null) throw derr;
      if (terr !== null) throw terr;
      // Gone between SCAN and DUMP (deleted or expired): not part of the backup.
      if (dump === null || pttl === -2) continue;
      for (const part of encodeRecord({ key: keys[i] as Buffer, dump, pttl })) {
        pending.push(part);
        pendingBytes += part.length;
      }
      count++;
    }
    if (pendingBytes >= FLUSH_BYTES) await flush();
  } while (cursor !== "0");
  pending.push(encodeTrailer(count));
  await flush();
  return count;
}

export async function* backupLogical(
  config: RedisConfig,
  ctx: DriverContext,
): AsyncGenerator<ArchiveEntry> {
  const conn = config.conn;
  // Cancel and timeout both close the connection, which fails whatever command is waiting.
  const timeout = AbortSignal.timeout(timeoutMs(config));
  const signal = AbortSignal.any([ctx.signal, timeout]);
  let r: Redis | undefined;
  const spool = Spool.create(ctx.state, "redis");
  try {
    let version: string;
    let keys: number;
    try {
      r = await connectRedis(conn, conn.db, signal);
      version = await serverVersion(r);
      const fd = spool.createFile("keys");
      try {
        keys = await dumpKeys(r, fd, signal);
        fsyncSync(fd);
      } finally {
        spool.closeFd(fd);
      }
    } catch (err) {
      if (ctx.signal.aborted) throw ctx.signal.reason;
      if (timeout.aborted) {
        throw new FerryError(
          "HELPER_TIMEOUT",
          `logical backup of redis timed out after ${config.timeout}s`,
        );
      }
      if (err instanceof FerryError) throw err;
      throw new FerryError(
        "BACKUP_FAILED",
        `logical backup of redis ${conn.host}:${conn.port} db ${conn.db} failed: ${(err as Error).message}`,
        { cause: err },
      );
    }
    r.disconnect();
    yield metaEntry({ mode: "logical", redis_version: version, db: conn.db, keys });
    yield spool.entry(KEYS_ENTRY, "keys");
  } finally {
    r?.disconnect();
    spool.remove();
  }
}

export async function* backupRdb(
  config: RedisConfig,
  ctx: DriverContext,
): AsyncGenerator<ArchiveEntry> {
  const user = config.user;
  if (user === undefined) throw new FerryError("CONFIG_INVALID", 'mode = "rdb" needs os_user');
  const conn = config.conn;
  const spool = Spool.create(ctx.state, "redis-rdb", user);
  try {
    const password = readPassword(conn);
    const label = `redis-cli --rdb of ${conn.host}:${conn.port}`;
    const argv = ["redis-cli", "-h", conn.host, "-p", String(conn.port)];
    if (conn.username !== undefined) argv.push("--user", conn.username);
    if (conn.tls) argv.push("--tls");
    argv.push("--rdb", spool.pathOf("dump.rdb"));
    const helper = runHelper({
      argv,
      user,
      // The password goes through the environment, never argv (visible in ps).
      ...(password === undefined ? {} : { env: { REDISCLI_AUTH: password } }),
      timeoutMs: timeoutMs(config),
      signal: ctx.signal,
      label,
    });
    helper.stdout?.resume();
    await helper.done;
    const entry = spool.entry(RDB_ENTRY, "dump.rdb", { owner: user.uid });
    if (entry.header.size === 0) throw noData(label, helper.stderrText());
    yield metaEntry({ mode: "rdb" });
    yield entry;
  } finally {
    spool.remove();
  }
}

/** The redis driver's backup: the logical key stream, or the server's RDB (`mode`). */
export function backup(config: RedisConfig, ctx: DriverContext): AsyncIterable<ArchiveEntry> {
  return config.mode === "rdb" ? backupRdb(config, ctx) : backupLogical(config, ctx);
}
