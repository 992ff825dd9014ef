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
import {
  absolutePathSchema,
  commonKeys,
  resolveHooks,
  resolveRunUser,
  userNameSchema,
} from "../common.js";

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
    const databases = c.database !== undefined ? [c.database] : (c.databases ?? []);
    if (new Set(databases).size !== databases.length) {
      ctx.addIssue({ code: "custom", path: ["databases"], message: "lists a database twice" });
    }
    const user = resolveRunUser(c.os_user, c.allow_root, ctx, ["os_user"]);
    const hooks = resolveHooks(c, user, ctx);
    if (user === undefined) return z.NEVER;
    return {
      driver: c.driver,
      restore: c.restore,
      timeout: c.timeout,
      allow_root: c.allow_root,
      hooks,
      databases,
      os_user: c.os_user,
      user,
      socket: c.socket,
    };
  });

export type MariadbConfig = z.output<typeof mariadbSchema>;
