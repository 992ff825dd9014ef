/**
 * Keys every `[apps.NAME]` table accepts, whatever its driver, with their defaults (the
 * only place those defaults live):
 *
 * | key | default | meaning |
 * |---|---|---|
 * | `driver` | (required) | which driver serves the application |
 * | `restore` | `false` | whether ferryd accepts a restore for this application |
 * | `timeout` | `3600` | seconds a helper (dump tool, command) may run before SIGTERM/SIGKILL |
 * | `allow_root` | `false` | permit a helper or hook that would run as uid 0 |
 * | `hooks.pre_backup` … `hooks.post_restore` | none | argv arrays (never a shell string) |
 * | `hooks.user` | the app's user | the OS user the hooks run as |
 * | `hooks.timeout` | `300` | seconds one hook may run |
 *
 * A driver's schema spreads `commonKeys` into its strict object and, in its transform,
 * calls `resolveRunUser` for its own helper user and `resolveHooks` for the hooks, so a
 * missing user or a root user without `allow_root` is a config error at start-up that
 * names the key, not a failure in the middle of the night.
 */
import { posix } from "node:path";
import { z } from "zod";
import type { HelperUser } from "../core/spawn.js";
import { lookupGroupId, lookupUser } from "../core/users.js";

export const DEFAULT_TIMEOUT_S = 3600;
export const DEFAULT_HOOK_TIMEOUT_S = 300;

/** A program and its arguments; never a shell string. */
export const argvSchema = z
  .array(z.string().refine((s) => !s.includes("\0"), { message: "must not contain NUL" }))
  .min(1, { message: "must name a program (an argv array, not a shell string)" })
  .refine((a) => (a[0] ?? "") !== "", { message: "the program name must not be empty" })
  .refine((a) => !(a[0] ?? "").includes("/") || (a[0] ?? "").startsWith("/"), {
    message: "the program must be a bare name looked up in PATH or an absolute path",
  });

const seconds = z
  .number()
  .int()
  .min(1)
  .max(7 * 24 * 3600);

/**
 * A key that names an OS user. The user must exist: checked on the key itself, so that a
 * misspelt user is reported in the same pass as every other problem of the table (a check
 * in a transform would only run once everything else is right).
 */
export const userNameSchema = z
  .string()
  .min(1, { message: "must name a user" })
  .superRefine((name, ctx) => {
    if (lookupUser(name) === undefined) {
      ctx.addIssue({ code: "custom", message: `no such user ${JSON.stringify(name)}` });
    }
  });

/** A key that names an OS group, which must exist (see `userNameSchema`). */
export const groupNameSchema = z
  .string()
  .min(1, { message: "must name a group" })
  .superRefine((name, ctx) => {
    if (lookupGroupId(name) === undefined) {
      ctx.addIssue({ code: "custom", message: `no such group ${JSON.stringify(name)}` });
    }
  });

/** The keys of an application table that name the user its helpers or hooks run as. */
const USER_KEYS: readonly (readonly string[])[] = [["owner"], ["os_user"], ["hooks", "user"]];

const ROOT_RULE =
  "helpers and hooks never run as root unless the application says allow_root = true";

/**
 * The root rule (`resolveRunUser`) applied to a raw table that failed its schema for other
 * reasons, so that a root user is reported in the same pass as the rest.
 */
export function rootRuleProblems(
  table: Record<string, unknown>,
  at: (string | number)[],
): { path: (string | number)[]; message: string }[] {
  if (table.allow_root === true) return [];
  const out: { path: (string | number)[]; message: string }[] = [];
  for (const key of USER_KEYS) {
    let v: unknown = table;
    for (const k of key)
      v = typeof v === "object" && v !== null ? (v as Record<string, unknown>)[k] : undefined;
    if (typeof v === "string" && lookupUser(v)?.uid === 0)
      out.push({ path: [...at, ...key], message: ROOT_RULE });
  }
  return out;
}

export const hooksSchema = z.strictObject({
  pre_backup: argvSchema.optional(),
  post_backup: argvSchema.optional(),
  pre_restore: argvSchema.optional(),
  post_restore: argvSchema.optional(),
  user: userNameSchema.optional(),
  timeout: seconds.default(DEFAULT_HOOK_TIMEOUT_S),
});

/** Spread into every driver's strict object, next to its own `driver: z.literal(…)`. */
export const commonKeys = {
  restore: z.boolean().default(false),
  timeout: seconds.default(DEFAULT_TIMEOUT_S),
  allow_root: z.boolean().default(false),
  hooks: hooksSchema.optional(),
};

export type HookName = "pre_backup" | "post_backup" | "pre_restore" | "post_restore";

/** Hooks after validation: the user resolved to ids. */
export interface ResolvedHooks {
  pre_backup?: string[];
  post_backup?: string[];
  pre_restore?: string[];
  post_restore?: string[];
  user: HelperUser;
  timeout: number;
}

/** The common keys as they appear in every validated `app.settings`. */
export interface CommonSettings {
  driver: string;
  restore: boolean;
  timeout: number;
  allow_root: boolean;
  hooks?: ResolvedHooks;
}

/** An absolute, normalised path (no `.`, `..`, `//`, trailing slash) that is not `/`. */
export const absolutePathSchema = z
  .string()
  .refine((p) => p.startsWith("/"), { message: "must be an absolute path" })
  .refine((p) => !p.includes("\0"), { message: "must not contain NUL" })
  .refine((p) => posix.normalize(p) === p && !p.endsWith("/"), {
    message: "must be a normalised path (no '.', '..', '//' or trailing '/')",
  });

/**
 * Resolves the OS user a helper runs as. Adds a config issue (at `path`) and returns
 * undefined when the user does not exist, or is root while `allow_root` is false.
 */
export function resolveRunUser(
  name: string,
  allowRoot: boolean,
  ctx: z.RefinementCtx,
  path: (string | number)[],
): HelperUser | undefined {
  const u = lookupUser(name);
  if (u === undefined) {
    ctx.addIssue({ code: "custom", path, message: `no such user ${JSON.stringify(name)}` });
    return undefined;
  }
  if (u.uid === 0 && !allowRoot) {
    ctx.addIssue({ code: "custom", path, message: ROOT_RULE });
    return undefined;
  }
  // Root only gets here with allow_root = true; the flag travels with the user so that
  // runHelper, which refuses root by default, can tell it was allowed.
  return {
    name: u.name,
    uid: u.uid,
    gid: u.gid,
    home: u.home,
    ...(u.uid === 0 ? { allowRoot: true } : {}),
  };
}

/**
 * Validates the `hooks` table; hooks run as `hooks.user`, else as the application's own
 * helper user (`appUser`, already resolved by the driver; undefined if that failed and was
 * reported).
 */
export function resolveHooks(
  c: { hooks?: z.output<typeof hooksSchema> | undefined; allow_root: boolean },
  appUser: HelperUser | undefined,
  ctx: z.RefinementCtx,
): ResolvedHooks | undefined {
  if (c.hooks === undefined) return undefined;
  const { user: userName, ...rest } = c.hooks;
  const user =
    userName === undefined
      ? appUser
      : resolveRunUser(userName, c.allow_root, ctx, ["hooks", "user"]);
  if (user === undefined) return undefined;
  return { ...rest, user };
}

/** `timeout` in milliseconds, for runHelper. */
export function timeoutMs(settings: { timeout: number }): number {
  return settings.timeout * 1000;
}
