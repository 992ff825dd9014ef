/**
 * The `agent` driver: the application answers for itself over the agent protocol
 * (docs/agent-protocol.md), served on its own Unix socket as its own user.
 *
 * Backup: verified connection (client.ts) → GET /v1/info → POST /v1/prepare (when the agent
 * says it has one) → POST /v1/backup, whose tar body is read entry by entry, each entry
 * checked by the payload rules (src/agent/protocol.ts, the files restore rules) and handed
 * on as `data/0/<path>` only once it passed, and the `Ferry-Status: ok` trailer required at
 * the end → POST /v1/finish. Finish follows a successful prepare whatever happens next:
 * error, timeout, cancel, or the client going away (the generator's `finally`).
 *
 * Restore: the archive's entries are checked by the same rules and re-encoded as the
 * agent's tar into a private spool file while the archive streams in; the agent hears
 * nothing until `commit`, which ferryd calls only after the end record verified. Then:
 * verified connection → /v1/info (the agent's name must be the one in the manifest) →
 * prepare → POST /v1/restore with the spooled payload → finish. `abort` only removes the
 * spool. ferryd's restore handler already refuses an archive of another app or driver;
 * this driver also refuses one whose agent name or socket differ (ARCHIVE_FOREIGN), so an
 * agent's data only ever goes back to the same application.
 */
import { fsyncSync } from "node:fs";
import { Readable } from "node:stream";
import {
  ARCHIVE_PREFIX,
  ByteSource,
  DEFAULT_PAYLOAD_LIMITS,
  END_OF_TAR,
  encodeEntryHeader,
  entryPadding,
  PayloadChecker,
  type PayloadLimits,
  payloadHeader,
  readTar,
  STATUS_TRAILER,
} from "../../agent/protocol.js";
import type { TarHeader } from "../../core/archive/tar.js";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { FerryError } from "../../core/errors.js";
import { Spool, writeAll } from "../spool.js";
import type { Driver, DriverContext, RestoreContext, RestoreSession } from "../types.js";
import {
  type AgentInfo,
  agentError,
  agentRequest,
  clean,
  fetchInfo,
  finish,
  type Operation,
  type Outcome,
  prepare,
  readJson,
} from "./client.js";
import { type AgentConfig, agentSchema } from "./config.js";

function limitsOf(config: AgentConfig): PayloadLimits {
  return { ...DEFAULT_PAYLOAD_LIMITS, maxBytes: config.max_bytes, maxEntries: config.max_entries };
}

/** Returned early without an error: the consumer (the client) went away. */
function outcomeOf(completed: boolean, err: unknown, signal: AbortSignal): Outcome {
  if (completed) return "ok";
  if (signal.aborted || err === undefined) return "cancelled";
  return "error";
}

/**
 * Prepare, when the agent has that step. A prepare that timed out or broke off may still
 * have quiesced the agent, so it is told to resume (a finish without a held prepare is a
 * no-op by the protocol); never an impostor.
 */
async function startQuiesce(
  config: AgentConfig,
  info: AgentInfo,
  operation: Operation,
  signal: AbortSignal,
): Promise<boolean> {
  if (!info.prepare) return false;
  try {
    await prepare(config, operation, signal);
  } catch (err) {
    if (!(err instanceof FerryError && err.code === "AGENT_IMPOSTOR")) {
      await finish(config, operation, "error").catch(() => {});
    }
    throw err;
  }
  return true;
}

/**
 * Finish, exactly once after a successful prepare, whatever happened between. Its failure
 * after good work is a warning (the data is complete and consistent); after failed work it
 * is appended to that failure.
 */
async function endQuiesce(
  config: AgentConfig,
  operation: Operation,
  ctx: DriverContext,
  completed: boolean,
  failure: unknown,
): Promise<void> {
  try {
    await finish(config, operation, outcomeOf(completed, failure, ctx.signal));
  } catch (err) {
    const msg = `the agent's finish step failed: ${(err as Error).message}`;
    if (failure instanceof FerryError) failure.message += `; ${msg}`;
    else if (failure === undefined) ctx.warnings.push(msg);
  }
}

function protocolError(message: string): FerryError {
  return new FerryError("AGENT_PROTOCOL_ERROR", `the agent's backup stream: ${message}`);
}

/** The error a `Ferry-Status: error CODE message` trailer reports, if it is one. */
function trailerError(trailer: string | undefined): FerryError | undefined {
  const m = /^error ([A-Z0-9_]{1,60})(?: (.*))?$/.exec(trailer ?? "");
  if (m === null) return undefined;
  return new FerryError(
    "AGENT_FAILED",
    `the agent's backup failed: ${m[1]}${m[2] ? `: ${clean(m[2])}` : ""}`,
  );
}

async function* backupEntries(
  config: AgentConfig,
  ctx: DriverContext,
): AsyncGenerator<ArchiveEntry> {
  const idleMs = config.idle_timeout * 1000;
  const { res, destroy } = await agentRequest(config, {
    method: "POST",
    path: "/v1/backup",
    timeoutMs: idleMs,
    signal: ctx.signal,
  });
  try {
    const status = res.statusCode ?? 0;
    if (status !== 200) throw await agentError(config, "the backup", res, idleMs);
    const src = new ByteSource(res, {
      idleMs,
      signal: ctx.signal,
      onIdle: () =>
        new FerryError(
          "AGENT_TIMEOUT",
          `the agent of ${config.socket} sent nothing for ${config.idle_timeout}s in the middle of its backup`,
        ),
    });
    const checker = new PayloadChecker(limitsOf(config));
    try {
      for await (const e of readTar(src, checker.limits, protocolError)) {
        const rel = checker.checkAgentEntry(e.header);
        const h = e.header;
        const header = payloadHeader(ARCHIVE_PREFIX + rel, h.type as "file" | "dir" | "symlink", {
          size: h.size,
          mode: h.mode,
          mtimeMs: h.mtimeSec * 1000,
          linkpath: h.linkpath,
        });
        yield h.type === "file" ? { header, body: e.body } : { header };
      }
    } catch (err) {
      // An agent that fails mid-stream ends its tar early and says why in the trailer.
      if (err instanceof FerryError && err.code === "AGENT_PROTOCOL_ERROR" && res.complete) {
        const said = trailerError(res.trailers[STATUS_TRAILER]);
        if (said !== undefined) throw said;
      }
      throw err;
    }
    // The stream is complete; the trailer says whether the agent stands by it.
    const trailer = res.trailers[STATUS_TRAILER];
    if (trailer === undefined) {
      throw protocolError(
        `it ended without its ${STATUS_TRAILER} trailer, so it may be incomplete`,
      );
    }
    if (trailer !== "ok") {
      throw (
        trailerError(trailer) ??
        new FerryError(
          "AGENT_FAILED",
          `the agent's backup ended with status ${clean(trailer, 100)}`,
        )
      );
    }
  } finally {
    destroy();
  }
}

/** The archive's first entry: who answered for the application (checked on restore). */
export const INFO_ENTRY = "data/agent.json";
const MAX_INFO_BYTES = 64 * 1024;

function backupAgent(config: AgentConfig, ctx: DriverContext): AsyncGenerator<ArchiveEntry> {
  return (async function* () {
    const { info } = await fetchInfo(config, ctx.signal);
    const body = Buffer.from(`${JSON.stringify(info)}\n`);
    yield { header: payloadHeader(INFO_ENTRY, "file", { size: body.length, mode: 0o644 }), body };
    const held = await startQuiesce(config, info, "backup", ctx.signal);
    let failure: unknown;
    let completed = false;
    try {
      yield* backupEntries(config, ctx);
      completed = true;
    } catch (err) {
      failure = err;
      throw err;
    } finally {
      // Also when the consumer returns early (the client went away).
      if (held) await endQuiesce(config, "backup", ctx, completed, failure);
    }
  })();
}

const SPOOLED = "payload.tar";

async function openAgentRestore(config: AgentConfig, ctx: RestoreContext): Promise<RestoreSession> {
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

export const agentDriver: Driver<AgentConfig> = {
  name: "agent",
  type: "agent.v1",
  version: 1,
  schema: agentSchema,

  async describe(config) {
    const base = { socket: config.socket, owner: config.owner, uid: config.user.uid };
    try {
      const { info, cred } = await fetchInfo(config);
      return {
        ...base,
        reachable: true,
        identity: `ok: pid ${cred.pid} runs as uid ${cred.uid}`,
        agent: info,
      };
    } catch (err) {
      const e = err as FerryError;
      return {
        ...base,
        reachable: false,
        identity: e.code === "AGENT_IMPOSTOR" ? "impostor" : "unchecked",
        error: { code: e.code ?? "INTERNAL", message: e.message },
      };
    }
  },

  async health(config) {
    try {
      const { info, cred } = await fetchInfo(config);
      return {
        ok: true,
        message: `agent ${info.name} ${info.version} reachable; identity checked: runs as ${config.owner} (uid ${cred.uid})`,
      };
    } catch (err) {
      const e = err as FerryError;
      return { ok: false, message: e.code ? `${e.message} [${e.code}]` : String(err) };
    }
  },

  manifest(config) {
    return { socket: config.socket, owner: config.owner };
  },

  backup: backupAgent,

  restore: openAgentRestore,
};
