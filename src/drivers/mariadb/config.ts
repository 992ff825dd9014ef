/**
 * `[apps.NAME]` keys of the mariadb driver:
 *
 * | key | default | meaning |
 * |---|---|---|
 * | `database` / `databases` | (one required) | the database(s) to dump |
 * | `os_user` | `mysql` | the OS user mariadb-dump and mariadb run as (unix_socket authentication, or that user's ~/.my.cnf) |
 * | `socket` | the client's default | path of the server's Unix socket |
 */
import { z } from "zod";
import { absolutePathSchema, commonKeys, userNameSchema } from "../common.js";
import { databaseList, resolveDbCommon } from "../db/config.js";

/** MariaDB database names are at most 64 characters. */
const dbName = z
  .string()
  .min(1)
  .max(64)
  .refine((s) => !s.includes("\0") && !s.includes("/") && !s.endsWith(" "), {
    message: "is not a valid MariaDB database name",
  });

export const mariadbSchema = z
  .strictObject({
    driver: z.literal("mariadb"),
    ...commonKeys,
    database: dbName.optional(),
    databases: z.array(dbName).min(1).optional(),
    os_user: userNameSchema.default("mysql"),
    socket: absolutePathSchema.optional(),
  })
  .transform((c, ctx) => {
    if ((c.database === undefined) === (c.databases === undefined)) {
      ctx.addIssue({
        code: "custom",
        path: [],
        message: 'set exactly one of database = "NAME" or databases = ["A", "B"]',
      });
      return z.NEVER;
    }
    const databases = databaseList(c, ctx);
    const common = resolveDbCommon(c, ctx);
    if (common === undefined) return z.NEVER;
    return { ...common, databases, socket: c.socket };
  });

export type MariadbConfig = z.output<typeof mariadbSchema>;
