import { inspectProgram } from "../inspect.js";
import type { Driver } from "../types.js";
import { backup, KEYS_ENTRY, RDB_ENTRY } from "./backup.js";
import { connectRedis, serverVersion } from "./client.js";
import { type RedisConfig, redisSchema } from "./config.js";
import { openRestore } from "./restore.js";

export const redisDriver: Driver<RedisConfig> = {
  name: "redis",
  type: "redis.v1",
  version: 1,
  schema: redisSchema,

  async describe(config) {
    const c = config.conn;
    return {
      host: c.host,
      port: c.port,
      db: c.db,
      mode: config.mode,
      staging_db: config.staging_db ?? null,
      entry: config.mode === "rdb" ? RDB_ENTRY : KEYS_ENTRY,
    };
  },

  async health(config) {
    try {
      const r = await connectRedis(config.conn);
      try {
        const version = await serverVersion(r);
        const keys = await r.dbsize();
        return { ok: true, message: `redis ${version}, db ${config.conn.db}: ${keys} keys` };
      } finally {
        r.disconnect();
      }
    } catch (err) {
      return { ok: false, message: (err as Error).message };
    }
  },

  manifest(config) {
    const c = config.conn;
    return { mode: config.mode, host: c.host, port: c.port, db: c.db };
  },

  backup,

  restore: openRestore,

  inspect(config) {
    return config.mode === "rdb" ? inspectProgram("redis-cli", ["mode"], config.user) : [];
  },
};
