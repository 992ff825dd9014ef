/**
 * The redis driver against a real redis-server that the test starts as `ferry-redis` on a
 * free port, with a password and nothing on disk: the shared suite (atomic restore through
 * `staging_db`), an in-place restore without it, every data type with TTLs and binary
 * keys, a refused key stream, cancel while the server is paused, and `mode = "rdb"`.
 */
import assert from "node:assert/strict";
import { chownSync, mkdtempSync, readdirSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Redis } from "ioredis";
import { FerryError } from "../../../src/core/errors.js";
import { redisDriver } from "../../../src/drivers/redis/index.js";
import { hasRedis, type RedisServer, startRedis } from "../../helpers/redis-server.js";
import {
  archiveOf,
  backupArchive,
  ensureUser,
  payloadOf,
  restoreArchive,
  runAs,
  runDriverSuite,
  settingsOf,
  waitFor,
} from "../suite.js";

const isRoot = process.getuid?.() === 0;
const skip = !isRoot ? "needs root" : !hasRedis() ? "redis-server is not installed" : false;

const BIN = Buffer.from([0, 1, 2, 0xff, 0xfe, 10, 13]);

/** Every data type, TTLs, a binary key and value, a big hash and list. */
async function populate(r: Redis): Promise<void> {
  await r.flushdb();
  await r.set("str", "hello");
  await r.set("counter", 41);
  await r.incr("counter");
  await r.set(Buffer.concat([Buffer.from("bin:"), BIN]), BIN);
  await r.hset("hash", { a: "1", b: "2", c: "three" });
  const big: Record<string, string> = {};
  for (let i = 0; i < 2000; i++) big[`f${i}`] = `v${i}`.repeat(5);
  await r.hset("bighash", big);
  await r.rpush("list", "x", "y", "z", "x");
  await r.rpush("biglist", ...Array.from({ length: 3000 }, (_, i) => `item-${i}`));
  await r.sadd("set", "m1", "m2", "m3");
  await r.zadd("zset", 1, "one", 2.5, "two-and-a-half", -3, "minus-three");
  await r.xadd("stream", "1-1", "field", "v1");
  await r.xadd("stream", "2-1", "field", "v2", "other", "w");
  await r.xgroup("CREATE", "stream", "readers", "0");
  await r.set("ttl:long", "soon gone", "PX", 3_600_000);
  await r.hset("ttl:hash", "k", "v");
  await r.pexpire("ttl:hash", 7_200_000);
  for (let i = 0; i < 1500; i++) await r.set(`many:${i}`, `value ${i}`);
}

/** A text image of the db: every key with its type, value and whether it has a TTL. */
async function snapshot(r: Redis): Promise<string> {
  const keys: Buffer[] = [];
  let cursor = "0";
  do {
    const [next, batch] = (await r.callBuffer("SCAN", cursor, "COUNT", 1000)) as [Buffer, Buffer[]];
    cursor = next.toString();
    keys.push(...batch);
  } while (cursor !== "0");
  keys.sort(Buffer.compare);
  const lines: string[] = [];
  for (const k of keys) {
    const type = await r.type(k);
    let value: unknown;
    switch (type) {
      case "string":
        value = (await r.getBuffer(k))?.toString("hex");
        break;
      case "hash":
        value = Object.entries(await r.hgetall(k)).sort();
        break;
      case "list":
        value = await r.lrange(k, 0, -1);
        break;
      case "set":
        value = (await r.smembers(k)).sort();
        break;
      case "zset":
        value = await r.call("ZRANGE", k, "0", "-1", "WITHSCORES");
        break;
      case "stream":
        value = [await r.xrange(k, "-", "+"), await r.xinfo("GROUPS", k)];
        break;
      default:
        value = "?";
    }
    const ttl = await r.pttl(k);
    lines.push(`${k.toString("hex")} ${type} ttl=${ttl > 0} ${JSON.stringify(value)}`);
  }
  return lines.join("\n");
}

async function mutate(r: Redis): Promise<void> {
  await r.del("str", "list");
  await r.hset("hash", "a", "changed");
  await r.set("extra", "not in the backup");
  await r.persist("ttl:long");
}

let server: RedisServer | undefined;
const user = () => ensureUser("ferry-redis");

runDriverSuite({
  name: "redis",
  driver: redisDriver,
  skip,
  async setup() {
    const u = user();
    server = await startRedis(u);
    const s = server;
    const r = await s.client(0);
    const hookDir = `${s.dir}/hooks`;
    runAs(u, ["mkdir", hookDir]);
    // A valid-looking key stream whose DUMP payload RESTORE refuses (bad checksum): the
    // archive verifies, so it is the driver's commit that must fail and leave db 0 alone.
    const good = await payloadOf(
      await backupArchive(redisDriver, {
        name: "g",
        settings: settingsOf(redisDriver, {
          host: "127.0.0.1",
          port: s.port,
          password_file: s.passwordFile,
        }),
      }),
    );
    const garbage = good.map((e) => {
      if (e.path !== "data/keys.redis") return e;
      const body = Buffer.from(e.body);
      // Corrupt the CRC64 at the end of the last record's DUMP payload (before the PTTL
      // and the 9-byte trailer).
      const at = body.length - 9 - 8 - 3;
      body[at] = (body[at] as number) ^ 0x55;
      return { path: e.path, body };
    });
    return {
      table: {
        host: "127.0.0.1",
        port: s.port,
        password_file: s.passwordFile,
        db: 0,
        staging_db: 5,
        os_user: u.name,
        timeout: 60,
      },
      hookUser: u.name,
      hookDir,
      seed: () => populate(r),
      mutate: () => mutate(r),
      snapshot: () => snapshot(r),
      failing: {
        // redis-cli (rdb mode) against a port where nothing listens.
        table: { mode: "rdb", port: 1 },
        stderr: /Could not connect to Redis at 127\.0\.0\.1:1/,
      },
      slow: {
        table: { mode: "rdb" },
        async block() {
          // Every client, redis-cli's sync included, waits while the server is paused.
          await r.call("CLIENT", "PAUSE", "4000", "ALL");
          return async () => {
            const probe = await s.client(0);
            assert.ok(await waitFor(async () => (await probe.ping()) === "PONG", 10_000));
          };
        },
        async helperRunning() {
          try {
            runAs(u, ["pgrep", "-u", String(u.uid), "-x", "redis-cli"]);
            return true;
          } catch {
            return false;
          }
        },
      },
      garbage: { entries: garbage, codes: /^ARCHIVE_INVALID$/ }, // a DUMP payload with a bad CRC
      health: {
        ok: /^redis \d+\.\d+\.\d+, db 0: \d+ keys$/,
        unhealthy: { table: { port: 1 }, message: /ECONNREFUSED|connect/ },
      },
      async teardown() {
        await s.stop();
      },
    };
  },
});

describe("redis driver", { skip, timeout: 120_000 }, () => {
  let s: RedisServer;
  let r: Redis;
  const table = (extra: Record<string, unknown> = {}) =>
    settingsOf(redisDriver, {
      url: `redis://127.0.0.1:${s.port}/2`,
      password_file: s.passwordFile,
      restore: true,
      ...extra,
    });
  before(async () => {
    s = await startRedis(user());
    r = await s.client(2);
  });
  after(async () => {
    await s?.stop();
  });

  test("logical backup needs nothing on the server's disk and keeps types, TTLs, binary keys", async () => {
    await populate(r);
    const image = await snapshot(r);
    const app = { name: "cache", settings: table() };
    const bytes = await backupArchive(redisDriver, app);
    assert.deepEqual(readdirSync(s.dir), [], "the server wrote nothing to disk");
    const entries = await payloadOf(bytes);
    assert.deepEqual(
      entries.map((e) => e.path),
      ["data/redis.json", "data/keys.redis"],
    );
    const meta = JSON.parse(entries[0]?.body.toString() ?? "{}");
    assert.equal(meta.keys, 1500 + 12);
    assert.match(meta.redis_version, /^\d+\.\d+/);

    // In-place restore (no staging_db): the db becomes equal to the archive.
    await mutate(r);
    await restoreArchive(redisDriver, app, bytes);
    assert.equal(await snapshot(r), image);
    const ttl = await r.pttl("ttl:long");
    assert.ok(ttl > 3_500_000 && ttl <= 3_600_000, `TTL preserved (${ttl})`);
    assert.equal(await r.exists("extra"), 0, "a key not in the archive was removed");
  });

  test("a damaged key stream is refused before the server is touched", async () => {
    await populate(r);
    const app = { name: "cache", settings: table() };
    const bytes = await backupArchive(redisDriver, app);
    await mutate(r);
    const live = await snapshot(r);
    const entries = await payloadOf(bytes);
    const cut = entries.map((e) =>
      e.path === "data/keys.redis"
        ? { path: e.path, body: e.body.subarray(0, e.body.length - 100) }
        : e,
    );
    const manifest = {
      app: "cache",
      driver: "redis",
      driver_version: 1,
      ...redisDriver.manifest(app.settings as never),
    };
    await assert.rejects(
      restoreArchive(redisDriver, app, await archiveOf(manifest, cut)),
      (err: unknown) => err instanceof FerryError && err.code === "ARCHIVE_INVALID",
    );
    assert.equal(await snapshot(r), live);
  });

  test("a staging_db that is not empty is refused, and nothing changes", async () => {
    await populate(r);
    const app = { name: "cache", settings: table({ staging_db: 3 }) };
    const bytes = await backupArchive(redisDriver, app);
    await mutate(r);
    const live = await snapshot(r);
    const other = await s.client(3);
    await other.set("someone-elses", "data");
    await assert.rejects(restoreArchive(redisDriver, app, bytes), /staging_db 3 .* not empty/);
    assert.equal(await snapshot(r), live);
    assert.equal(await other.get("someone-elses"), "data");
  });

  test("cancel while the server does not answer closes the connection promptly", async () => {
    await populate(r);
    const app = { name: "cache", settings: table() };
    const ac = new AbortController();
    await r.call("CLIENT", "PAUSE", "3000", "ALL");
    const started = Date.now();
    const p = backupArchive(redisDriver, app, { signal: ac.signal });
    let settledBeforeCancel = false;
    p.then(
      () => {
        settledBeforeCancel = !ac.signal.aborted;
      },
      () => {
        settledBeforeCancel = !ac.signal.aborted;
      },
    );
    await new Promise((r) => setTimeout(r, 300));
    // The backup is blocked on the paused server: it has neither finished nor failed.
    assert.equal(settledBeforeCancel, false, "the backup ended before the cancel: not blocked");
    ac.abort(new FerryError("CANCELLED", "the client disconnected"));
    await assert.rejects(
      p,
      (err: unknown) => err instanceof FerryError && err.code === "CANCELLED",
      "the backup fails with the cancel's own error, not some other failure",
    );
    assert.ok(Date.now() - started < 2500, "cancel did not wait for the pause to end");
    const probe = await s.client(0);
    assert.ok(await waitFor(async () => (await probe.ping()) === "PONG", 10_000));
    const list = (await probe.call("CLIENT", "LIST")) as string;
    assert.ok(!list.includes("name=ferry"), `no ferry connection is left:\n${list}`);
  });

  test("mode = rdb: redis-cli --rdb runs as os_user and yields a loadable dump.rdb", async () => {
    await populate(r);
    const app = {
      name: "cache",
      settings: table({ mode: "rdb", os_user: "ferry-redis", restore: false }),
    };
    const entries = await payloadOf(await backupArchive(redisDriver, app));
    assert.deepEqual(
      entries.map((e) => e.path),
      ["data/redis.json", "data/dump.rdb"],
    );
    const rdb = entries[1]?.body as Buffer;
    assert.equal(rdb.subarray(0, 5).toString(), "REDIS");
    // A server started on that file holds the same data.
    const dir = mkdtempSync(join(tmpdir(), "ferry-redis-rdb-"));
    writeFileSync(`${dir}/dump.rdb`, rdb);
    chownSync(`${dir}/dump.rdb`, user().uid, user().gid);
    const loaded = await startRedis(user(), { persistence: true, dir });
    try {
      assert.equal(await snapshot(await loaded.client(2)), await snapshot(r));
    } finally {
      await loaded.stop();
    }
  });

  test("an atomic restore through staging_db leaves the scratch db empty", async () => {
    await populate(r);
    const image = await snapshot(r);
    const app = { name: "cache", settings: table({ staging_db: 4 }) };
    const bytes = await backupArchive(redisDriver, app);
    await mutate(r);
    await restoreArchive(redisDriver, app, bytes);
    assert.equal(await snapshot(r), image);
    const scratch = await s.client(4);
    assert.ok(await waitFor(async () => (await scratch.dbsize()) === 0, 5000));
  });
});
