/** The agent driver's restore: the payload staged, checked, and sent at commit (see index.ts). */
import { fsyncSync } from "node:fs";
import { Readable } from "node:stream";
import {
  END_OF_TAR,
  encodeEntryHeader,
  entryPadding,
  PayloadChecker,
  payloadHeader,
} from "../../agent/protocol.js";
import type { TarHeader } from "../../core/archive/tar.js";
import { FerryError } from "../../core/errors.js";
import { writeAll } from "../dump-io.js";
import { Spool } from "../spool.js";
import type { RestoreContext, RestoreSession } from "../types.js";
import { INFO_ENTRY, MAX_INFO_BYTES } from "./backup.js";
import { agentError, fetchInfo, readJson } from "./calls.js";
import { agentRequest } from "./client.js";
import type { AgentConfig } from "./config.js";
import { endQuiesce, limitsOf, startQuiesce } from "./quiesce.js";

const SPOOLED = "payload.tar";

export async function openRestore(
  config: AgentConfig,
  ctx: RestoreContext,
): Promise<RestoreSession> {
  const m = ctx.manifest as Record<string, unknown>;
  if (m.socket !== config.socket || m.owner !== config.owner) {
    throw new FerryError(
      "ARCHIVE_FOREIGN",
      `the archive was made through agent socket ${JSON.stringify(m.socket)} as ${JSON.stringify(m.owner)}; ${ctx.app} uses ${config.socket} as ${config.owner}`,
    );
  }
  let agentName: string | undefined;
  let infoChunks: Buffer[] | undefined;
  let infoBytes = 0;
  let first = true;
  const spool = Spool.create(ctx.state, "agent-restore");
  const checker = new PayloadChecker(limitsOf(config));
  let fd: number | undefined;
  let length = 0;
  let bodyLeft = 0;
  const put = async (b: Buffer) => {
    if (b.length === 0) return;
    await writeAll(fd as number, b);
    length += b.length;
  };
  try {
    fd = spool.createFile(SPOOLED);
  } catch (err) {
    spool.remove();
    throw err;
  }

  return {
    async entry(h: TarHeader) {
      const isInfo =
        first && h.path === INFO_ENTRY && h.type === "file" && h.size <= MAX_INFO_BYTES;
      if (first && !isInfo) {
        throw new FerryError("ARCHIVE_INVALID", `an agent archive starts with ${INFO_ENTRY}`);
      }
      first = false;
      if (isInfo) {
        infoChunks = [];
        return;
      }
      const rel = checker.checkArchiveEntry(h);
      await put(
        encodeEntryHeader(
          payloadHeader(rel, h.type as "file" | "dir" | "symlink", {
            size: h.size,
            mode: h.mode,
            mtimeMs: h.mtimeSec * 1000,
            linkpath: h.linkpath,
          }),
        ),
      );
      bodyLeft = h.size;
    },
    async data(chunk) {
      if (infoChunks !== undefined) {
        infoBytes += chunk.length;
        if (infoBytes > MAX_INFO_BYTES)
          throw new FerryError("ARCHIVE_INVALID", `${INFO_ENTRY} is too large`);
        infoChunks.push(Buffer.from(chunk));
        return;
      }
      bodyLeft -= chunk.length;
      await put(chunk);
    },
    async entryEnd(h) {
      if (infoChunks !== undefined) {
        let name: unknown;
        try {
          name = JSON.parse(Buffer.concat(infoChunks).toString("utf8"))?.name;
        } catch {
          // reported below
        }
        if (typeof name !== "string" || name === "") {
          throw new FerryError("ARCHIVE_INVALID", `${INFO_ENTRY} does not name the agent`);
        }
        agentName = name;
        infoChunks = undefined;
        return;
      }
      if (bodyLeft !== 0) throw new FerryError("ARCHIVE_INVALID", "an entry's body is incomplete");
      await put(entryPadding(h.size));
    },
    async commit() {
      try {
        await put(END_OF_TAR);
        fsyncSync(fd as number);
        spool.closeFd(fd as number);
        fd = undefined;
        if (agentName === undefined) {
          throw new FerryError("ARCHIVE_INVALID", `the archive lacks ${INFO_ENTRY}`);
        }
        const { info } = await fetchInfo(config, ctx.signal);
        if (info.name !== agentName) {
          throw new FerryError(
            "ARCHIVE_FOREIGN",
            `the archive holds the data of agent ${JSON.stringify(agentName)}, but ${config.socket} is agent ${JSON.stringify(info.name)}; nothing was sent`,
          );
        }
        if (!info.restore) {
          throw new FerryError("RESTORE_NOT_ALLOWED", `the agent of ${ctx.app} does not restore`);
        }
        const held = await startQuiesce(config, info, "restore", ctx.signal);
        let failure: unknown;
        let result: { entries: number; bytes: number } | undefined;
        try {
          result = await sendPayload(config, ctx, spool, length);
        } catch (err) {
          failure = err;
          throw err;
        } finally {
          if (held) await endQuiesce(config, "restore", ctx, result !== undefined, failure);
        }
        return result;
      } finally {
        spool.remove();
      }
    },
    async abort() {
      spool.remove();
    },
  };
}

async function sendPayload(
  config: AgentConfig,
  ctx: RestoreContext,
  spool: Spool,
  length: number,
): Promise<{ entries: number; bytes: number }> {
  const file = spool.openFile(SPOOLED);
  const body = Readable.from(spool.read(file));
  const ms = config.timeout * 1000;
  const { res, destroy } = await agentRequest(config, {
    method: "POST",
    path: "/v1/restore",
    stream: { body, length },
    timeoutMs: ms,
    signal: ctx.signal,
  });
  try {
    if (res.statusCode !== 200) throw await agentError(config, "the restore", res, ms);
    const r = (await readJson(config, res, ms, ctx.signal)) as {
      entries?: unknown;
      bytes?: unknown;
    };
    return {
      entries: Number.isSafeInteger(r?.entries) ? (r.entries as number) : 0,
      bytes: Number.isSafeInteger(r?.bytes) ? (r.bytes as number) : 0,
    };
  } finally {
    destroy();
    body.destroy();
  }
}
