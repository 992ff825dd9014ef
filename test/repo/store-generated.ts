/**
 * Test helper process for the memory bound: generates an archive of N entries on the fly
 * (never held whole), stores it, dumps it back (streaming, hashed), and prints
 * {bytes, sha256, dumpSha256, peakRssBytes} as JSON. Usage: node store-generated.js REPO N.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import type { TarHeader } from "../../src/core/archive/tar.js";
import { type ArchiveEntry, writeArchive } from "../../src/core/archive/writer.js";
import { ArchiveStore, rebuildArchive } from "../../src/repo/archive.js";
import { LocalBackend } from "../../src/repo/backend.js";
import { Repository } from "../../src/repo/repository.js";

const [path, n] = process.argv.slice(2) as [string, string];
const count = Number(n);
const repo = await Repository.init(new LocalBackend(path), "pw", { N: 1024, r: 8, p: 1 });

async function* entries(): AsyncGenerator<ArchiveEntry> {
  for (let i = 0; i < count; i++) {
    const body = i % 100 === 0 ? Buffer.alloc(5000, i % 251) : Buffer.from(`entry ${i}\n`);
    const h: TarHeader = {
      path: `data/0/d${i % 1000}/file-${i}`,
      type: "file",
      mode: 0o644,
      uid: 1000,
      gid: 1000,
      uname: "app",
      gname: "app",
      size: body.length,
      mtimeSec: 1_700_000_000 + i,
      mtimeNsec: 0,
      linkpath: "",
    };
    yield { header: h, body };
  }
}

const store = new ArchiveStore(repo, { app: "big", tags: [] });
const gen = writeArchive(
  { app: "big", driver: "files", driver_version: 1, host: "t", created: "x" },
  entries(),
);
for await (const chunk of gen) await store.write(chunk);
const { snapshot } = await store.finish();
const h = createHash("sha256");
let bytes = 0;
for await (const b of rebuildArchive(repo, snapshot)) {
  h.update(b);
  bytes += b.length;
}
const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync("/proc/self/status", "utf8"))?.[1];
process.stdout.write(
  `${JSON.stringify({ bytes: snapshot.archive.bytes, dumpBytes: bytes, sha256: snapshot.archive.sha256, dumpSha256: h.digest("hex"), entries: snapshot.archive.entries, peakRssBytes: Number(hwm) * 1024 })}\n`,
);
