/**
 * A small agent built with the SDK for tests: its data is the directory `root/data`, backed
 * up as `data/…`, restored by extracting beside it and swapping. Switches let a test make
 * its backup block until cancelled or fail.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from "node:fs";
import { join } from "node:path";
import { type Agent, AgentError, createAgent, type FinishContext } from "../../src/agent/index.js";

export interface DirAgent {
  agent: Agent;
  dataDir: string;
  calls: string[];
  finishes: FinishContext[];
  /** Backup waits until cancelled while true. */
  block: boolean;
  /** Backup throws this message when set. */
  fail: string | undefined;
  backupRunning: boolean;
  restores: number;
}

export async function startDirAgent(
  root: string,
  socket: string,
  name = "dir-agent",
): Promise<DirAgent> {
  const dataDir = join(root, "data");
  mkdirSync(dataDir, { recursive: true });
  const st: DirAgent = {
    agent: undefined as unknown as Agent,
    dataDir,
    calls: [],
    finishes: [],
    block: false,
    fail: undefined,
    backupRunning: false,
    restores: 0,
  };
  st.agent = createAgent({
    socket,
    info: { name, version: "1.2.3", holds: "a directory" },
    prepare: async (ctx) => {
      st.calls.push(`prepare:${ctx.operation}`);
    },
    finish: async (ctx) => {
      st.calls.push(`finish:${ctx.operation}:${ctx.outcome}`);
      st.finishes.push(ctx);
    },
    backup: async (out, ctx) => {
      st.calls.push("backup");
      st.backupRunning = true;
      try {
        if (st.fail !== undefined) throw new AgentError("BACKUP_FAILED", st.fail);
        if (st.block) {
          await out.addBuffer("started", "1");
          await new Promise<void>((resolve) => {
            if (ctx.signal.aborted) resolve();
            ctx.signal.addEventListener("abort", () => resolve(), { once: true });
          });
          ctx.signal.throwIfAborted();
        }
        await out.addDirectory("data", dataDir);
      } finally {
        st.backupRunning = false;
      }
    },
    restore: async (payload) => {
      st.calls.push("restore");
      const next = join(root, "data.new");
      rmSync(next, { recursive: true, force: true });
      await payload.extractTo(next);
      const old = join(root, "data.old");
      rmSync(old, { recursive: true, force: true });
      renameSync(dataDir, old);
      renameSync(join(next, "data"), dataDir);
      rmSync(old, { recursive: true, force: true });
      rmSync(next, { recursive: true, force: true });
      st.restores++;
    },
  });
  await st.agent.listen();
  return st;
}

/** Names and contents of a directory tree, sorted: equal for equal data. */
export function treeSnapshot(dir: string): string {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const e of readdirSync(join(dir, rel), { withFileTypes: true }).sort((a, b) =>
      a.name < b.name ? -1 : 1,
    )) {
      const p = rel === "" ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) {
        out.push(`${p}/`);
        walk(p);
      } else out.push(`${p}=${readFileSync(join(dir, p), "utf8")}`);
    }
  };
  walk("");
  return out.join("\n");
}
