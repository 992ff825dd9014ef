import type { FerryError } from "../../core/errors.js";
import { inspectSocket } from "../inspect.js";
import type { Driver } from "../types.js";
import { backup } from "./backup.js";
import { fetchInfo } from "./calls.js";
import { type AgentConfig, agentSchema } from "./config.js";
import { openRestore } from "./restore.js";

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

  backup,

  restore: openRestore,

  inspect(config) {
    return inspectSocket(config.socket, ["socket"], "the application (its agent)");
  },
};
