import { z } from "zod";
import {
  absolutePathSchema,
  commonKeys,
  resolveHooks,
  resolveRunUser,
  userNameSchema,
} from "../common.js";

export const sqliteSchema = z
  .strictObject({
    driver: z.literal("sqlite"),
    ...commonKeys,
    /** The database file. Its directory must not be a symlink anywhere on the way. */
    path: absolutePathSchema,
    /** The OS user that owns the database: sqlite3 runs as them; a restore is owned by them. */
    owner: userNameSchema,
  })
  .transform((c, ctx) => {
    const user = resolveRunUser(c.owner, c.allow_root, ctx, ["owner"]);
    const hooks = resolveHooks(c, user, ctx);
    if (user === undefined) return z.NEVER;
    return { ...c, user, hooks };
  });

export type SqliteConfig = z.output<typeof sqliteSchema>;
