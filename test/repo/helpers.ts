/**
 * Test archives for the repository tests: real Ferry archives made by the archive
 * writer, with files of chosen sizes and contents, long (pax) paths, links and dirs.
 */
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TarHeader } from "../../src/core/archive/tar.js";
import { type ArchiveEntry, writeArchive } from "../../src/core/archive/writer.js";

export interface TestFile {
  path: string;
  data?: Buffer;
  /** A symlink's or hardlink's target is `target`. */
  type?: "dir" | "symlink" | "hardlink";
  target?: string;
  mtime?: number;
  /** Sub-second part of the mtime (a pax record). */
  mtimeNsec?: number;
}

function header(f: TestFile): TarHeader {
  return {
    path: f.path,
    type: f.type ?? "file",
    mode: f.type === "dir" ? 0o755 : 0o644,
    uid: 1000,
    gid: 1000,
    uname: "app",
    gname: "app",
    size: f.data?.length ?? 0,
    mtimeSec: f.mtime ?? 1_700_000_000,
    mtimeNsec: f.mtimeNsec ?? 0,
    linkpath: f.target ?? "",
  };
}

/** The archive's bytes. */
export async function makeArchive(app: string, files: TestFile[]): Promise<Buffer> {
  async function* entries(): AsyncGenerator<ArchiveEntry> {
    for (const f of files) yield { header: header(f), ...(f.data ? { body: f.data } : {}) };
  }
  const parts: Buffer[] = [];
  const manifest = {
    app,
    driver: "files",
    driver_version: 1,
    ferry_version: "test",
    host: "test",
    created: "2026-01-01T00:00:00Z",
  };
  for await (const b of writeArchive(manifest, entries())) parts.push(b);
  return Buffer.concat(parts);
}

/** Deterministic pseudo-random bytes (SHA-256 in counter mode). */
export function prng(seed: string, n: number): Buffer {
  const out = Buffer.alloc(n);
  let o = 0;
  for (let i = 0; o < n; i++) {
    const h = createHash("sha256").update(`${seed}:${i}`).digest();
    o += h.copy(out, o);
  }
  return out;
}

/** A mixed tree: small text files, large random files, a long path, a dir and a symlink. */
export function mixedFiles(count: number, seed = "s"): TestFile[] {
  const files: TestFile[] = [{ path: "data/0/", type: "dir" }];
  for (let i = 0; i < count; i++) {
    const size = i % 10 === 0 ? 200_000 + i * 37 : i % 3 === 0 ? 20_000 + i : 100 + i;
    files.push({ path: `data/0/dir${i % 7}/file-${i}.bin`, data: prng(`${seed}${i}`, size) });
  }
  files.push({ path: `data/0/${"long-name-".repeat(30)}x`, data: prng("long", 9000) });
  files.push({ path: "data/0/link", type: "symlink", target: "dir0/file-0.bin" });
  return files;
}

export function tempDir(prefix: string): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function sha256hex(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

export { randomBytes };
