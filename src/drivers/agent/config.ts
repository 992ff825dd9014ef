import { posix } from "node:path";
import { z } from "zod";
import { DEFAULT_PAYLOAD_LIMITS } from "../../agent/protocol.js";
import {
  absolutePathSchema,
  commonKeys,
  resolveHooks,
  resolveRunUser,
  userNameSchema,
} from "../common.js";

/** ferryd connects through `/proc/self/fd/N/NAME`; sun_path holds 107 bytes. */
export const MAX_SOCKET_NAME_BYTES = 80;

const seconds = (def: number) => z.number().int().min(1).max(86_400).default(def);

export const agentSchema = z
  .strictObject({
    driver: z.literal("agent"),
    ...commonKeys,
    /** The agent's Unix socket (absolute; no component may be a symlink). */
    socket: absolutePathSchema.refine(
      (p) => Buffer.byteLength(posix.basename(p)) <= MAX_SOCKET_NAME_BYTES,
      { message: `the socket's file name must be at most ${MAX_SOCKET_NAME_BYTES} bytes` },
    ),
    /** The OS user the agent must run as (checked with SO_PEERCRED on every connection). */
    owner: userNameSchema,
    /** Seconds to connect and to answer GET /v1/info. */
    connect_timeout: seconds(10),
    /** Seconds the agent may take to quiesce (POST /v1/prepare). */
    prepare_timeout: seconds(60),
    /** Seconds the agent may take to resume (POST /v1/finish). */
    finish_timeout: seconds(30),
    /** Seconds the agent may go silent in the middle of a backup stream or a restore. */
    idle_timeout: seconds(60),
    /** Most bytes of file data in one payload. */
    max_bytes: z
      .number()
      .int()
      .min(1)
      .max(Number.MAX_SAFE_INTEGER)
      .default(DEFAULT_PAYLOAD_LIMITS.maxBytes),
    /** Most entries in one payload. */
    max_entries: z
      .number()
      .int()
      .min(1)
      .max(100_000_000)
      .default(DEFAULT_PAYLOAD_LIMITS.maxEntries),
  })
  .transform((c, ctx) => {
    const user = resolveRunUser(c.owner, c.allow_root, ctx, ["owner"]);
    const hooks = resolveHooks(c, user, ctx);
    if (user === undefined) return z.NEVER;
    return { ...c, user, hooks };
  });

export type AgentConfig = z.output<typeof agentSchema>;
