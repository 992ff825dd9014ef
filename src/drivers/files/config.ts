import { posix } from "node:path";
import { z } from "zod";
import { lookupGroupId, lookupUser } from "../../core/users.js";
import {
  commonKeys,
  groupNameSchema,
  resolveHooks,
  resolveRunUser,
  userNameSchema,
} from "../common.js";

const absolutePath = z
  .string()
  .refine((p) => p.startsWith("/"), { message: "must be an absolute path" })
  .refine((p) => !p.includes("\0"), { message: "must not contain NUL" })
  .refine((p) => p === "/" || posix.normalize(p).replace(/\/$/, "") === p.replace(/\/$/, ""), {
    message: "must be a normalised path (no '.', '..' or '//')",
  })
  .refine((p) => p !== "/", { message: "the root directory cannot be an application's data" })
  .transform((p) => p.replace(/\/+$/, ""));

export const filesSchema = z
  .strictObject({
    driver: z.literal("files"),
    ...commonKeys,
    paths: z.array(absolutePath).min(1, { message: "must list at least one directory" }),
    owner: userNameSchema,
    group: groupNameSchema.optional(),
  })
  .superRefine((c, ctx) => {
    const seen = new Set<string>();
    c.paths.forEach((p, i) => {
      for (const q of seen) {
        if (p === q || p.startsWith(`${q}/`) || q.startsWith(`${p}/`)) {
          ctx.addIssue({ code: "custom", path: ["paths", i], message: `overlaps ${q}` });
        }
      }
      seen.add(p);
    });
  })
  .transform((c, ctx) => {
    // Hooks run as hooks.user, else as the owner (which may be root only with allow_root).
    const hooks =
      c.hooks === undefined
        ? undefined
        : resolveHooks(
            c,
            c.hooks.user === undefined
              ? resolveRunUser(c.owner, c.allow_root, ctx, ["owner"])
              : undefined,
            ctx,
          );
    const user = lookupUser(c.owner);
    const uid = user?.uid ?? -1;
    const gid = c.group === undefined ? (user?.gid ?? -1) : (lookupGroupId(c.group) ?? -1);
    return { ...c, uid, gid, hooks };
  });

export type FilesConfig = z.output<typeof filesSchema>;
