/**
 * End to end through a real ferryd (started by root with --user, so it holds the service
 * capabilities and reads the root-owned password file with them): `ferry export` of a
 * redis app, a change, `ferry import` of the archive, and the database is back as it was,
 * with a staging_db left empty; `ferry apps --json` reports the server healthy.
 * Bounds: 2,000 keys; ~10 s.
 */
import assert from "node:assert/strict";
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { Redis } from "ioredis";
import { type RunningFerryd, startFerryd } from "../../helpers/ferryd.js";
import { ensureUser as ensureOsUser, ferry, isRoot, type TestUser } from "../../helpers/proc.js";
import { hasRedis, type RedisServer, startRedis } from "../../helpers/redis-server.js";

const skip = !isRoot ? "needs root" : !hasRedis() ? "redis-server is not installed" : false;

/** Every key with its type, value and whether it expires, in key order. */
async function image(r: Redis): Promise<string> {
  const keys = (await r.keys("*")).sort();
  const out: string[] = [];
  for (const k of keys) {
    const type = await r.type(k);
    let v: unknown;
    if (type === "string") v = await r.get(k);
    else if (type === "hash") v = await r.hgetall(k);
    else if (type === "list") v = await r.lrange(k, 0, -1);
    else if (type === "set") v = (await r.smembers(k)).sort();
    else if (type === "zset") v = await r.call("ZRANGE", k, "0", "-1", "WITHSCORES");
    const ttl = await r.pttl(k);
    out.push(JSON.stringify([k, type, v, ttl > 0 ? "expires" : ttl]));
  }
  return out.join("\n");
}

describe("redis app through ferryd", { skip, timeout: 120_000 }, () => {
  let redis: RedisServer;
  let r: Redis;
  let dir: string;
  let daemon: RunningFerryd;
  let backup: TestUser;
  let socket: string;

  before(async () => {
    const owner = ensureOsUser("ferry-redis");
    redis = await startRedis(owner);
    r = await redis.client(1);
    const batch = r.multi();
    for (let i = 0; i < 2000; i++) batch.set(`k:${i}`, `value ${i}`);
    batch.hset("h", { a: "1", b: "2" });
    batch.rpush("l", "x", "y", "z");
    batch.sadd("s", "m1", "m2");
    batch.zadd("z", 1, "one", 2, "two");
    batch.set("ttl", "soon", "EX", 3600);
    await batch.exec();
    backup = ensureOsUser("ferry-e2e-bk");
    dir = mkdtempSync("/tmp/ferry-redis-e2e-");
    chmodSync(dir, 0o755);
    socket = join(dir, "run/ferry.sock");
    const config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n[apps.cache]\ndriver = "redis"\nhost = "127.0.0.1"\nport = ${redis.port}\ndb = 1\nstaging_db = 7\npassword_file = "${redis.passwordFile}"\nrestore = true\ntimeout = 60\n`,
    );
    daemon = await startFerryd({ config, serviceUser: backup });
  });
  after(async () => {
    await daemon?.stop();
    r?.disconnect();
    await redis?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test("ferry apps --json reports the server healthy", async () => {
    const a = await ferry(socket, ["apps", "--json"], { user: backup });
    assert.equal(a.code, 0, a.stderr);
    const [app] = JSON.parse(a.stdout.toString());
    assert.equal(app.name, "cache");
    assert.equal(app.driver, "redis");
    assert.equal(app.health.ok, true, app.health.message);
    assert.match(app.health.message, /^redis \d+\.\d+\.\d+, db 1: 2005 keys$/);
  });

  test("ferry export, then ferry import, brings the database back", async () => {
    const before = await image(r);
    const exp = await ferry(socket, ["export", "cache"], { user: backup });
    assert.equal(exp.code, 0, exp.stderr);
    assert.ok(exp.stdout.includes(Buffer.from("data/keys.redis")));
    await r.set("k:1", "changed");
    await r.del("h");
    await r.set("extra", "not in the archive");
    assert.notEqual(await image(r), before);
    const imp = await ferry(socket, ["import", "cache"], { user: backup, input: exp.stdout });
    assert.equal(imp.code, 0, imp.stderr);
    assert.equal(await image(r), before);
    const staging = await redis.client(7);
    try {
      assert.equal(await staging.dbsize(), 0, "the staging db was left with keys");
    } finally {
      staging.disconnect();
    }
  });
});
