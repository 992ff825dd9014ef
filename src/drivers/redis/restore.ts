/**
 * Restoring a logical Redis backup.
 *
 * While the archive streams in, the key stream is staged in a private spool file and then
 * parsed once end to end (framing, record count against its trailer), so a damaged or
 * truncated archive is refused before anything is sent to the server. Nothing touches
 * Redis before `commit`, which ferryd calls only after the archive's end record verified.
 *
 * Commit makes the database equal to the archive: keys that exist live but not in the
 * archive are removed. Two ways, by config:
 *
 * - with `staging_db` (recommended): RESTORE … REPLACE every key into that scratch db
 *   (which must be empty), then `SWAPDB db staging_db` — one atomic step in which clients of
 *   `db` see the restored data — then FLUSHDB ASYNC the scratch db, which now holds the old
 *   data. If any RESTORE fails (a payload from a newer Redis, out of memory), the scratch
 *   db is flushed and the live db was never touched.
 * - without it: RESTORE … REPLACE every key into the live db in batches, remembering the
 *   archive's key names, then SCAN the live db and UNLINK every key not among them. This is
 *   not atomic: clients see keys change batch by batch, and a failure part-way leaves a mix
 *   of restored and old keys (reported as an error). Memory grows with the number of keys
 *   (names only).
 *
 * TTLs are restored as the time that was left at backup time, counted from the restore
 * (RESTORE's relative TTL), so a restored session key lives as long as it had left.
 * Archives of `mode = "rdb"` are not restored online: a dump.rdb is loaded by a Redis
 * server at start-up (stop it, place the file in its `dir`, start it).
 */
import { fsyncSync } from "node:fs";
import type { Redis } from "ioredis";
import type { TarHeader } from "../../core/archive/tar.js";
import { FerryError } from "../../core/errors.js";
import { timeoutMs } from "../common.js";
import { archiveInvalid } from "../db/restore.js";
import { writeAll } from "../dump-io.js";
import { Spool } from "../spool.js";
import type { RestoreContext, RestoreSession } from "../types.js";
import { KEYS_ENTRY, META_ENTRY, RDB_ENTRY } from "./backup.js";
import { connectRedis } from "./client.js";
import type { RedisConfig } from "./config.js";
import { decodeRecords, type KeyRecord } from "./format.js";

const BATCH_KEYS = 500;
const BATCH_BYTES = 8 * 1024 * 1024;
const MAX_META = 64 * 1024;

function printable(key: Buffer): string {
  return JSON.stringify(key.toString("latin1").slice(0, 200));
}

/** RESTOREs every record into `r` in pipelined batches; calls `seen` for each key. */
async function restoreAll(
  r: Redis,
  records: AsyncIterable<KeyRecord>,
  signal: AbortSignal,
  seen?: (key: Buffer) => void,
): Promise<number> {
  let batch: KeyRecord[] = [];
  let batchBytes = 0;
  let count = 0;
  const send = async () => {
    if (batch.length === 0) return;
    signal.throwIfAborted();
    const p = r.pipeline();
    for (const rec of batch) {
      // PTTL -1 is "no expiry" (RESTORE's 0); a key with 0 ms left still gets 1 ms, not forever.
      const ttl = rec.pttl < 0 ? 0 : Math.max(1, rec.pttl);
      p.callBuffer("RESTORE", rec.key, ttl, rec.dump, "REPLACE");
    }
    const res = (await p.exec()) ?? [];
    res.forEach(([err], i) => {
      if (err !== null) {
        throw new FerryError(
          "HELPER_FAILED",
          `RESTORE of key ${printable((batch[i] as KeyRecord).key)} failed: ${err.message}`,
          { cause: err },
        );
      }
    });
    count += batch.length;
    batch = [];
    batchBytes = 0;
  };
  for await (const rec of records) {
    seen?.(rec.key);
    batch.push(rec);
    batchBytes += rec.dump.length + rec.key.length;
    if (batch.length >= BATCH_KEYS || batchBytes >= BATCH_BYTES) await send();
  }
  await send();
  return count;
}

/** UNLINKs every key of `r`'s db that is not in `keep`. */
async function removeOthers(r: Redis, keep: Set<string>, signal: AbortSignal): Promise<number> {
  let removed = 0;
  let cursor = "0";
  do {
    signal.throwIfAborted();
    const [next, keys] = (await r.callBuffer("SCAN", cursor, "COUNT", BATCH_KEYS)) as [
      Buffer,
      Buffer[],
    ];
    cursor = next.toString();
    const gone = keys.filter((k) => !keep.has(k.toString("latin1")));
    if (gone.length > 0) {
      await r.callBuffer("UNLINK", ...gone);
      removed += gone.length;
    }
  } while (cursor !== "0");
  return removed;
}

export async function openRestore(
  config: RedisConfig,
  ctx: RestoreContext,
): Promise<RestoreSession> {
  if (ctx.manifest.mode === "rdb") {
    throw new FerryError(
      "RESTORE_NOT_ALLOWED",
      "an rdb-mode archive is not restored online: stop redis, put data/dump.rdb in its dir, start it",
    );
  }
  const conn = config.conn;
  const spool = Spool.create(ctx.state, "redis-restore");
  let current: "meta" | "keys" | undefined;
  let keysFd: number | undefined;
  let meta: Buffer[] = [];
  let metaBytes = 0;
  let keysStaged = false;
  let bytes = 0;
  let entries = 0;

  const records = () => decodeRecords(spool.read(spool.openFile("keys")));

  return {
    async entry(h: TarHeader) {
      if (h.type !== "file") throw archiveInvalid(`unexpected ${h.type} ${JSON.stringify(h.path)}`);
      if (h.path === META_ENTRY && current === undefined && metaBytes === 0) {
        current = "meta";
      } else if (h.path === KEYS_ENTRY && keysFd === undefined && !keysStaged) {
        current = "keys";
        keysFd = spool.createFile("keys");
      } else if (h.path === RDB_ENTRY) {
        throw new FerryError("RESTORE_NOT_ALLOWED", "an rdb-mode archive is not restored online");
      } else {
        throw archiveInvalid(`unexpected entry ${JSON.stringify(h.path)} in a redis archive`);
      }
      entries++;
    },
    async data(chunk: Buffer) {
      bytes += chunk.length;
      if (current === "meta") {
        metaBytes += chunk.length;
        if (metaBytes > MAX_META) throw archiveInvalid(`${META_ENTRY} is too large`);
        meta.push(Buffer.from(chunk));
      } else if (current === "keys" && keysFd !== undefined) {
        await writeAll(keysFd, chunk);
      } else {
        throw archiveInvalid("data outside an entry");
      }
    },
    async entryEnd() {
      if (current === "keys" && keysFd !== undefined) {
        fsyncSync(keysFd);
        spool.closeFd(keysFd);
        keysFd = undefined;
        // Parse it all once now: a damaged stream is refused before commit.
        const it = records();
        for (;;) {
          const r = await it.next();
          if (r.done) break;
        }
        keysStaged = true;
      } else if (current === "meta") {
        try {
          JSON.parse(Buffer.concat(meta).toString("utf8"));
        } catch {
          throw archiveInvalid(`${META_ENTRY} is not JSON`);
        }
        meta = [];
      }
      current = undefined;
    },
    async commit() {
      // Cancel and the app's timeout both close the connection, failing what is pending.
      const timeout = AbortSignal.timeout(timeoutMs(config));
      const signal = AbortSignal.any([ctx.signal, timeout]);
      try {
        if (!keysStaged) throw archiveInvalid(`the archive holds no ${KEYS_ENTRY}`);
        if (config.staging_db !== undefined) {
          await commitViaStagingDb(config, config.staging_db, records, signal);
        } else {
          await commitInPlace(config, records, signal);
        }
        return { entries, bytes };
      } catch (err) {
        if (timeout.aborted && !ctx.signal.aborted) {
          throw new FerryError(
            "HELPER_TIMEOUT",
            `restore into redis timed out after ${config.timeout}s: ${(err as Error).message}`,
            { cause: err },
          );
        }
        throw err;
      } finally {
        spool.remove();
      }
    },
    async abort() {
      spool.remove();
    },
  };

  async function commitViaStagingDb(
    c: RedisConfig,
    stagingDb: number,
    recs: () => AsyncIterable<KeyRecord>,
    signal: AbortSignal,
  ): Promise<void> {
    const s = await connectRedis(c.conn, stagingDb, signal);
    try {
      if ((await s.dbsize()) !== 0) {
        throw new FerryError(
          "HELPER_FAILED",
          `staging_db ${stagingDb} of redis ${conn.host}:${conn.port} is not empty; ` +
            "ferryd uses it as scratch space and refuses to overwrite it",
        );
      }
      try {
        await restoreAll(s, recs(), signal);
        await s.call("SWAPDB", String(conn.db), String(stagingDb));
      } catch (err) {
        // Drop what was staged, on a connection of its own: a cancel or timeout has
        // already closed `s`.
        const cleanup = await connectRedis(c.conn, stagingDb).catch(() => undefined);
        await cleanup?.flushdb().catch(() => {});
        cleanup?.disconnect();
        throw err;
      }
      // The scratch db now holds the old data.
      await s.call("FLUSHDB", "ASYNC");
    } finally {
      s.disconnect();
    }
  }

  async function commitInPlace(
    c: RedisConfig,
    recs: () => AsyncIterable<KeyRecord>,
    signal: AbortSignal,
  ): Promise<void> {
    const r = await connectRedis(c.conn, c.conn.db, signal);
    try {
      const keep = new Set<string>();
      await restoreAll(r, recs(), signal, (k) => keep.add(k.toString("latin1")));
      await removeOthers(r, keep, signal);
    } catch (err) {
      throw new FerryError(
        "HELPER_FAILED",
        `restore into redis db ${conn.db} failed part-way (without staging_db it is not atomic; ` +
          `some keys may already be restored): ${(err as Error).message}`,
        { cause: err },
      );
    } finally {
      r.disconnect();
    }
  }
}
