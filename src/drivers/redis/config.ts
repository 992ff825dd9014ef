import { z } from "zod";
import {
  absolutePathSchema,
  commonKeys,
  resolveHooks,
  resolveRunUser,
  userNameSchema,
} from "../common.js";

export const redisSchema = z
  .strictObject({
    driver: z.literal("redis"),
    ...commonKeys,
    /** `redis://[user[:password]@]host[:port][/db]`; or give `host`/`port` instead. */
    url: z.string().url().optional(),
    host: z.string().min(1).optional(),
    port: z.number().int().min(1).max(65535).optional(),
    username: z.string().min(1).optional(),
    /** A file holding the password (read by ferryd; trailing newline ignored). */
    password_file: absolutePathSchema.optional(),
    /** The logical database (default: the url's, else 0). */
    db: z.number().int().min(0).optional(),
    /**
     * `logical` (default): SCAN + DUMP + PTTL through a client; works without persistence,
     * restorable online. `rdb`: `redis-cli --rdb` (a server-side snapshot of every db).
     */
    mode: z.enum(["logical", "rdb"]).default("logical"),
    /**
     * An empty database index a restore may use as scratch space; with it a restore is
     * atomic (RESTORE into it, then SWAPDB). Without it the live db is rewritten in place.
     */
    staging_db: z.number().int().min(0).optional(),
    /** The OS user `redis-cli` (rdb mode) and, by default, the hooks run as. */
    os_user: userNameSchema.optional(),
  })
  .superRefine((c, ctx) => {
    if ((c.url === undefined) === (c.host === undefined)) {
      ctx.addIssue({ code: "custom", path: ["url"], message: "give exactly one of url or host" });
    }
    if (c.url !== undefined && !/^rediss?:\/\//.test(c.url)) {
      ctx.addIssue({ code: "custom", path: ["url"], message: "must be a redis:// url" });
    }
    if (c.port !== undefined && c.host === undefined) {
      ctx.addIssue({ code: "custom", path: ["port"], message: "port goes with host" });
    }
    if (c.mode === "rdb" && c.os_user === undefined) {
      ctx.addIssue({ code: "custom", path: ["os_user"], message: 'mode = "rdb" needs os_user' });
    }
    if (c.hooks !== undefined && c.hooks.user === undefined && c.os_user === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["hooks", "user"],
        message: "hooks need hooks.user or os_user",
      });
    }
  })
  .transform((c, ctx) => {
    const user =
      c.os_user === undefined
        ? undefined
        : resolveRunUser(c.os_user, c.allow_root, ctx, ["os_user"]);
    const hooks = resolveHooks(c, user, ctx);
    const conn = connection(c);
    if (c.staging_db !== undefined && c.staging_db === conn.db) {
      ctx.addIssue({ code: "custom", path: ["staging_db"], message: "must differ from db" });
    }
    return { ...c, user, hooks, conn };
  });

export interface RedisConnection {
  host: string;
  port: number;
  username?: string;
  /** Password given inline in the url (prefer password_file). */
  password?: string;
  passwordFile?: string;
  db: number;
  tls: boolean;
}

function connection(c: {
  url?: string | undefined;
  host?: string | undefined;
  port?: number | undefined;
  username?: string | undefined;
  password_file?: string | undefined;
  db?: number | undefined;
}): RedisConnection {
  const out: RedisConnection = {
    host: c.host ?? "127.0.0.1",
    port: c.port ?? 6379,
    db: 0,
    tls: false,
  };
  if (c.url !== undefined) {
    const u = new URL(c.url);
    out.host = u.hostname.replace(/^\[|\]$/g, "") || "127.0.0.1";
    out.port = u.port === "" ? 6379 : Number(u.port);
    out.tls = u.protocol === "rediss:";
    if (u.username !== "") out.username = decodeURIComponent(u.username);
    if (u.password !== "") out.password = decodeURIComponent(u.password);
    const db = u.pathname.replace(/^\//, "");
    if (/^[0-9]+$/.test(db)) out.db = Number(db);
  }
  if (c.username !== undefined) out.username = c.username;
  if (c.password_file !== undefined) out.passwordFile = c.password_file;
  if (c.db !== undefined) out.db = c.db;
  return out;
}

export type RedisConfig = z.output<typeof redisSchema>;
