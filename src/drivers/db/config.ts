/**
 * What the configs of the database drivers (postgres, mariadb) resolve the same way: the
 * database list from `database = "NAME"` or `databases = ["A", "B"]`, and the helper user
 * (`os_user`) with the hooks, which run as that user unless `hooks.user` says otherwise.
 */
import type { z } from "zod";
import type { HelperUser } from "../../core/spawn.js";
import { type hooksSchema, type ResolvedHooks, resolveHooks, resolveRunUser } from "../common.js";

/** The databases named by `database` or `databases`; a name listed twice is a config issue. */
export function databaseList(
  c: { database?: string | undefined; databases?: string[] | undefined },
  ctx: z.RefinementCtx,
): string[] {
  const databases = c.database !== undefined ? [c.database] : (c.databases ?? []);
  if (new Set(databases).size !== databases.length) {
    ctx.addIssue({ code: "custom", path: ["databases"], message: "lists a database twice" });
  }
  return databases;
}

/** The keys every database driver's resolved config starts with. */
export interface DbCommon {
  driver: string;
  restore: boolean;
  timeout: number;
  allow_root: boolean;
  hooks: ResolvedHooks | undefined;
  os_user: string;
  user: HelperUser;
}

/**
 * The common keys, with `os_user` resolved to the helper user (and the hooks' user);
 * undefined when a user is missing or root without allow_root (reported in `ctx`).
 */
export function resolveDbCommon<D extends string>(
  c: {
    driver: D;
    restore: boolean;
    timeout: number;
    allow_root: boolean;
    hooks?: z.output<typeof hooksSchema> | undefined;
    os_user: string;
  },
  ctx: z.RefinementCtx,
): (DbCommon & { driver: D }) | undefined {
  const user = resolveRunUser(c.os_user, c.allow_root, ctx, ["os_user"]);
  const hooks = resolveHooks(c, user, ctx);
  if (user === undefined) return undefined;
  return {
    driver: c.driver,
    restore: c.restore,
    timeout: c.timeout,
    allow_root: c.allow_root,
    hooks,
    os_user: c.os_user,
    user,
  };
}
