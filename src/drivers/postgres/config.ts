/**
 * `[apps.NAME]` keys of the postgres driver:
 *
 * | key | default | meaning |
 * |---|---|---|
 * | `database` / `databases` / `all` | (one required) | what to dump: one database, a list, or every database that accepts connections (plus `pg_dumpall --globals-only`) |
 * | `os_user` | `postgres` | the OS user pg_dump, pg_restore and psql run as (peer authentication) |
 * | `host` | libpq's default | server host name, or the directory of its Unix socket |
 * | `port` | libpq's default | server port (also names the Unix socket file) |
 */
import { z } from "zod";
import { commonKeys, userNameSchema } from "../common.js";
import { databaseList, resolveDbCommon } from "../db/config.js";

/** PostgreSQL identifiers are at most 63 bytes (NAMEDATALEN - 1). */
const dbName = z
  .string()
  .min(1)
  .refine((s) => Buffer.byteLength(s) <= 63, { message: "must be at most 63 bytes" })
  .refine((s) => !s.includes("\0"), { message: "must not contain NUL" });

export const postgresSchema = z
  .strictObject({
    driver: z.literal("postgres"),
    ...commonKeys,
    database: dbName.optional(),
    databases: z.array(dbName).min(1).optional(),
    all: z.boolean().optional(),
    os_user: userNameSchema.default("postgres"),
    host: z
      .string()
      .min(1)
      .refine((s) => !s.includes("\0"), { message: "must not contain NUL" })
      .optional(),
    port: z.number().int().min(1).max(65535).optional(),
  })
  .transform((c, ctx) => {
    const chosen = [c.database !== undefined, c.databases !== undefined, c.all === true];
    if (chosen.filter(Boolean).length !== 1) {
      ctx.addIssue({
        code: "custom",
        path: [],
        message: 'set exactly one of database = "NAME", databases = ["A", "B"] or all = true',
      });
      return z.NEVER;
    }
    const databases = databaseList(c, ctx);
    const common = resolveDbCommon(c, ctx);
    if (common === undefined) return z.NEVER;
    return {
      ...common,
      /** Empty when `all` is set: the list is read from the server at backup time. */
      databases,
      all: c.all === true,
      host: c.host,
      port: c.port,
    };
  });

export type PostgresConfig = z.output<typeof postgresSchema>;
