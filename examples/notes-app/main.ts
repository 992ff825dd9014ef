/**
 * notes-app: a small real service that embeds the `ferry/agent` SDK.
 *
 *   node dist/examples/notes-app/main.js --data DIR --socket PATH [--port N]
 *
 * HTTP on 127.0.0.1 (port 0 picks a free one; the first line on stdout says which):
 *   GET /notes            all notes, as a JSON array
 *   GET /notes/ID         one note
 *   PUT /notes/ID         sets its text (the request body, UTF-8, at most 64 KiB)
 *   DELETE /notes/ID      removes it
 *
 * The agent on PATH: prepare pauses writes (running ones finish, new ones wait), backup
 * sends `notes/` as it is on disk, finish resumes writes; restore checks every note,
 * swaps the notes directory and reloads the notes in memory without a restart.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import { join } from "node:path";
import { AgentError, createAgent } from "ferry/agent";
import { NoteStore, validId } from "./store.js";

function arg(name: string, fallback?: string): string {
  const i = process.argv.indexOf(`--${name}`);
  const v = i >= 0 ? process.argv[i + 1] : fallback;
  if (v === undefined) {
    process.stderr.write(`notes-app: --${name} is required\n`);
    process.exit(2);
  }
  return v;
}

const dataDir = arg("data");
const socket = arg("socket");
const port = Number(arg("port", "0"));
const store = new NoteStore(dataDir);

const agent = createAgent({
  socket,
  info: {
    name: "notes-app",
    version: "1.0.0",
    holds: "notes, one JSON file each",
    estimateBytes: () => store.list().reduce((n, x) => n + x.text.length + 64, 0),
  },
  prepare: async () => {
    await store.pause();
  },
  finish: async () => {
    store.resume();
  },
  backup: async (out) => {
    await out.addDirectory("notes", store.dir);
  },
  restore: async (payload) => {
    if (payload.get("notes")?.type !== "dir") {
      throw new AgentError("PAYLOAD_INVALID", "the payload has no notes/ directory");
    }
    for await (const e of payload.entries()) {
      if (e.path !== "notes" && !/^notes\/[^/]+\.json$/.test(e.path)) {
        throw new AgentError("PAYLOAD_INVALID", `unexpected entry ${e.path}`);
      }
    }
    const stage = await mkdtemp(join(dataDir, ".restore-"));
    try {
      await payload.extractTo(join(stage, "x"));
      const n = await store.replaceWith(join(stage, "x", "notes"));
      log(`restored ${n} notes`);
    } finally {
      await rm(stage, { recursive: true, force: true });
    }
  },
  onError: (err) => log(`agent: ${(err as Error)?.stack ?? err}`),
});

function log(msg: string): void {
  process.stderr.write(`notes-app: ${msg}\n`);
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { "content-type": "application/json" });
  res.end(text);
}

async function bodyOf(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of req) {
    n += (c as Buffer).length;
    if (n > 64 * 1024) throw new Error("too large");
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString("utf8");
}

const http = createServer((req, res) => {
  const url = req.url ?? "/";
  const m = /^\/notes(?:\/([^/]+))?$/.exec(url);
  if (m === null) return reply(res, 404, { error: "not found" });
  const id = m[1];
  if (id === undefined) {
    if (req.method === "GET") return reply(res, 200, store.list());
    return reply(res, 405, { error: "GET only" });
  }
  if (!validId(id)) return reply(res, 400, { error: "bad id" });
  if (req.method === "GET") {
    const n = store.get(id);
    return n === undefined ? reply(res, 404, { error: "no such note" }) : reply(res, 200, n);
  }
  if (req.method === "PUT") {
    bodyOf(req).then(
      async (text) => reply(res, 200, await store.put(id, text)),
      () => reply(res, 413, { error: "body too large" }),
    );
    return;
  }
  if (req.method === "DELETE") {
    store.remove(id).then((ok) => reply(res, ok ? 200 : 404, { deleted: ok }));
    return;
  }
  reply(res, 405, { error: "method not allowed" });
});

await agent.listen();
http.listen(port, "127.0.0.1", () => {
  const a = http.address();
  process.stdout.write(
    `listening on http://127.0.0.1:${typeof a === "object" && a ? a.port : port}\n`,
  );
  log(`agent on ${socket}, ${store.count} notes in ${store.dir}`);
});

for (const sig of ["SIGTERM", "SIGINT"] as const) {
  process.once(sig, () => {
    http.close();
    agent.close().then(() => process.exit(0));
  });
}
