import { z } from "zod";
import { argvSchema, commonKeys, resolveHooks, resolveRunUser, userNameSchema } from "../common.js";

export const commandSchema = z
  .strictObject({
    driver: z.literal("command"),
    ...commonKeys,
    /** Writes the application's data to stdout. */
    backup_command: argvSchema,
    /** Reads it back from stdin; without it the application cannot be restored. */
    restore_command: argvSchema.optional(),
    /** The OS user both commands (and, by default, the hooks) run as. */
    os_user: userNameSchema,
  })
  .superRefine((c, ctx) => {
    if (c.restore && c.restore_command === undefined) {
      ctx.addIssue({
        code: "custom",
        path: ["restore_command"],
        message: "restore = true needs a restore_command",
      });
    }
  })
  .transform((c, ctx) => {
    const user = resolveRunUser(c.os_user, c.allow_root, ctx, ["os_user"]);
    const hooks = resolveHooks(c, user, ctx);
    if (user === undefined) return z.NEVER;
    return { ...c, user, hooks };
  });

export type CommandConfig = z.output<typeof commandSchema>;
