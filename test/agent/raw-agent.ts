/**
 * Agents that misbehave on purpose, for the driver's attack tests: a scripted HTTP agent
 * that answers with whatever tar bytes a test gives it (or hangs), and a listener that
 * only records what reaches it (an impostor). Both can run in this process or, as
 * `node raw-agent.js impostor SOCKET LOG`, as a separate process under another uid.
 */
import { appendFileSync, chmodSync, writeFileSync } from "node:fs";
import { createServer as createHttpServer, type IncomingMessage, type Server } from "node:http";
import { createServer as createNetServer } from "node:net";
import { fileURLToPath } from "node:url";
import { encodeHeader, type TarHeader } from "../../src/core/archive/tar.js";

export interface TarItem {
  path: string;
  type?: "file" | "dir" | "symlink" | "hardlink" | "fifo";
  body?: string;
  linkpath?: string;
}

/** A plain tar stream (ustar/pax) of the given items, with its end-of-archive blocks. */
export function tarOf(items: TarItem[], opts: { end?: boolean } = {}): Buffer {
  const parts: Buffer[] = [];
  for (const it of items) {
    const body = Buffer.from(it.body ?? "");
    const type = it.type ?? "file";
    const h: TarHeader = {
      path: it.path,
      type,
      mode: type === "dir" ? 0o755 : 0o644,
      uid: 0,
      gid: 0,
      uname: "",
      gname: "",
      size: type === "file" ? body.length : 0,
      mtimeSec: 1_700_000_000,
      mtimeNsec: 0,
      linkpath: it.linkpath ?? "",
    };
    parts.push(encodeHeader(h));
    if (type === "file") {
      parts.push(body, Buffer.alloc((512 - (body.length % 512)) % 512));
    }
  }
  if (opts.end !== false) parts.push(Buffer.alloc(1024));
  return Buffer.concat(parts);
}

export interface Recorded {
  method: string;
  url: string;
  body: Buffer;
}

export interface ScriptedAgent {
  server: Server;
  requests: Recorded[];
  close(): Promise<void>;
}

export interface Script {
  name?: string;
  prepare?: boolean;
  /** The backup response: tar bytes and trailer, or "hang" (head sent, then silence). */
  backup?: { tar: Buffer; trailer?: string } | "hang";
  /** Never answer prepare. */
  hangPrepare?: boolean;
  /** Read the restore payload, then never answer. */
  hangRestore?: boolean;
}

/** An HTTP agent on `socket` that follows a script and records every request it got. */
export async function scriptedAgent(socket: string, script: Script): Promise<ScriptedAgent> {
  const requests: Recorded[] = [];
  const json = (res: import("node:http").ServerResponse, v: unknown) => {
    const t = JSON.stringify(v);
    res.writeHead(200, { "content-type": "application/json", "content-length": t.length });
    res.end(t);
  };
  const server = createHttpServer(async (req: IncomingMessage, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    requests.push({ method: req.method ?? "", url: req.url ?? "", body: Buffer.concat(chunks) });
    if (req.url === "/v1/info") {
      return json(res, {
        protocol: 1,
        name: script.name ?? "raw",
        version: "0",
        prepare: script.prepare ?? true,
        restore: true,
      });
    }
    if (req.url === "/v1/prepare") {
      if (script.hangPrepare) return;
      return json(res, { ok: true });
    }
    if (req.url === "/v1/finish") return json(res, { ok: true, held: true });
    if (req.url === "/v1/backup") {
      res.writeHead(200, { "content-type": "application/x-tar", trailer: "Ferry-Status" });
      if (script.backup === "hang" || script.backup === undefined) {
        res.flushHeaders();
        return;
      }
      res.write(script.backup.tar);
      res.addTrailers({ "Ferry-Status": script.backup.trailer ?? "ok" });
      res.end();
      return;
    }
    if (req.url === "/v1/restore") {
      if (script.hangRestore) return;
      return json(res, { ok: true, entries: 0, bytes: 0 });
    }
    res.writeHead(404).end();
  });
  await new Promise<void>((r) => server.listen(socket, r));
  chmodSync(socket, 0o666);
  return {
    server,
    requests,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

/** A listener that writes every byte it receives to `log` and never answers. */
export function impostor(socket: string, log: string): Promise<() => void> {
  writeFileSync(log, "");
  const server = createNetServer((s) => {
    s.on("data", (d) => appendFileSync(log, d));
    s.on("error", () => {});
  });
  return new Promise((resolve) =>
    server.listen(socket, () => {
      chmodSync(socket, 0o666);
      resolve(() => server.close());
    }),
  );
}

if (process.argv[1] === fileURLToPath(import.meta.url) && process.argv[2] === "impostor") {
  const [socket, log] = process.argv.slice(3) as [string, string];
  await impostor(socket, log);
  process.stdout.write("ready\n");
}
