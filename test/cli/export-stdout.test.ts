/**
 * `ferry export` to a standard output that is a non-blocking pipe (a parent that created
 * Node's process.stdout on the same pipe leaves it so; the export path writes descriptor 1
 * with write(2) and falls back to process.stdout on EAGAIN). What reaches the pipe must be
 * exactly the archive that was verified, in order: an export that exits 0 with the bytes
 * of its archive shuffled is a backup that cannot be restored, found out only when needed.
 *
 * ferryd is stood in for by a socket server that sends a valid archive framed the way
 * ferryd frames it (one HTTP chunk per 1 MiB block), and in small chunks.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { TarHeader } from "../../src/core/archive/tar.js";
import { type ArchiveEntry, writeArchive } from "../../src/core/archive/writer.js";
import { FERRY, ROOT } from "../helpers/proc.js";

function header(path: string, type: TarHeader["type"], size: number): TarHeader {
  const mode = type === "dir" ? 0o755 : 0o644;
  return {
    path,
    type,
    mode,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    size,
    mtimeSec: 0,
    mtimeNsec: 0,
    linkpath: "",
  };
}

async function makeArchive(): Promise<Buffer> {
  async function* entries(): AsyncGenerator<ArchiveEntry> {
    yield { header: header("data/0/", "dir", 0) };
    for (let i = 0; i < 8; i++) {
      const body = randomBytes(1024 * 1024);
      yield { header: header(`data/0/f${i}`, "file", body.length), body };
    }
  }
  const parts: Buffer[] = [];
  for await (const b of writeArchive({ app: "x", driver: "files" }, entries())) {
    parts.push(Buffer.from(b));
  }
  return Buffer.concat(parts);
}

/** Answers every request with `archive` in HTTP chunks of `chunk` bytes, then the trailer. */
function serve(path: string, archive: Buffer, chunk: number): Promise<Server> {
  const server = createServer((c) => {
    c.on("error", () => {});
    c.once("data", () => {
      c.write(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n" +
          "Trailer: Ferry-Status\r\n\r\n",
      );
      for (let i = 0; i < archive.length; i += chunk) {
        const p = archive.subarray(i, i + chunk);
        c.write(`${p.length.toString(16)}\r\n`);
        c.write(p);
        c.write("\r\n");
      }
      c.end("0\r\nFerry-Status: ok\r\n\r\n");
    });
  });
  return new Promise((resolve) => server.listen(path, () => resolve(server)));
}

/** Runs `ferry export x` with a non-blocking pipe as stdout; the exit code and what arrived. */
function exportThroughNonBlockingPipe(socket: string, out: string) {
  return new Promise<{ code: number; stderr: string; got: Buffer }>((resolve, reject) => {
    const child = spawn(
      "/usr/bin/python3",
      [
        join(ROOT, "test/helpers/nonblocking_stdout.py"),
        out,
        process.execPath,
        FERRY,
        "--socket",
        socket,
        "export",
        "x",
      ],
      { stdio: ["ignore", "pipe", "pipe"], env: {}, timeout: 120_000 },
    );
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on("data", (d: Buffer) => {
      stderr += d.toString();
    });
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) return reject(new Error(`the pipe reader failed (${code}): ${stderr}`));
      resolve({ code: Number(stdout.trim()), stderr, got: readFileSync(out) });
    });
  });
}

describe("ferry export to a non-blocking pipe", () => {
  let dir: string;
  let archive: Buffer;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "ferry-export-stdout-"));
    archive = await makeArchive();
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  for (const [what, chunk] of [
    ["1 MiB chunks, as ferryd sends them", 1024 * 1024],
    ["4 KiB chunks", 4096],
  ] as const) {
    test(`export-nonblocking-stdout-reorders-archive (${what})`, async () => {
      const socket = join(dir, `${chunk}.sock`);
      const server = await serve(socket, archive, chunk);
      try {
        for (let run = 0; run < 3; run++) {
          const r = await exportThroughNonBlockingPipe(socket, join(dir, `out-${chunk}-${run}`));
          assert.equal(r.code, 0, `ferry export failed: ${r.stderr}`);
          assert.equal(r.got.length, archive.length, "the output has the archive's length");
          assert.ok(
            r.got.equals(archive),
            `run ${run}: ferry export exited 0 but wrote the archive's bytes out of order`,
          );
          assert.doesNotMatch(r.stderr, /MaxListenersExceededWarning/);
        }
      } finally {
        server.close();
      }
    });
  }
});
