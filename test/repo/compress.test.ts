/**
 * src/repo/compress.ts: libzstd (through koffi) and the npm binding write the same format,
 * each reads the other's frames, output lands in a caller's buffer when it fits, and a
 * damaged frame or recorded length is REPO_CORRUPT, never a crash or a huge allocation.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { describe, test } from "node:test";
import {
  compress,
  compressBound,
  compressSync,
  decompress,
  decompressSync,
  MAX_RAW_BLOB,
  zstdImpl,
} from "../../src/repo/compress.js";

const MODULE = new URL("../../src/repo/compress.js", import.meta.url).href;

function samples(): Buffer[] {
  const text = Buffer.from("the quick brown fox jumps over the lazy dog\n".repeat(30000));
  return [Buffer.alloc(0), Buffer.from("x"), randomBytes(70 * 1024), text, Buffer.alloc(1 << 20)];
}

/**
 * Runs `call` ("compressSync(input)" or "decompressSync(input, N, \"blob\")") on stdin's
 * bytes with the implementation `impl`, in a child process (one is chosen per process).
 */
function withImpl(impl: "libzstd" | "binding", call: string, input: Buffer): Buffer {
  const r = spawnSync(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `import { compressSync, decompressSync, zstdImpl } from ${JSON.stringify(MODULE)};
       const chunks = []; for await (const c of process.stdin) chunks.push(c);
       const input = Buffer.concat(chunks);
       if (zstdImpl().name !== ${JSON.stringify(impl)}) throw new Error("not " + ${JSON.stringify(impl)});
       process.stdout.write(${call});`,
    ],
    {
      input,
      env: { ...process.env, FERRY_ZSTD: impl === "binding" ? "binding" : "" },
      maxBuffer: 64 << 20,
    },
  );
  assert.equal(r.status, 0, r.stderr.toString());
  return r.stdout;
}

describe("zstd for the repository", () => {
  test("libzstd is used on Debian (libzstd1 is a dependency of dpkg)", () => {
    assert.equal(zstdImpl().name, "libzstd");
  });

  test("round trip, sync and async, into a caller's buffer", async () => {
    for (const data of samples()) {
      const out = Buffer.alloc(compressBound(data.length));
      const z = compressSync(data, out);
      assert.equal(z.buffer, out.buffer, "compressed into the given buffer");
      assert.deepEqual(decompressSync(Buffer.from(z), data.length, "blob"), data);
      const za = await compress(data);
      assert.deepEqual(await decompress(za, data.length, "blob"), data);
    }
  });

  test("frames of the npm binding and of libzstd read each other", () => {
    for (const data of samples()) {
      const fromBinding = withImpl("binding", "compressSync(input)", data);
      assert.deepEqual(decompressSync(fromBinding, data.length, "blob"), data);
      const fromLib = compressSync(data);
      const back = withImpl("binding", `decompressSync(input, ${data.length}, "blob")`, fromLib);
      assert.deepEqual(back, data);
    }
  });

  test("a damaged frame or a wrong recorded length is REPO_CORRUPT", async () => {
    const data = Buffer.from("hello hello hello hello hello hello hello hello hello\n".repeat(100));
    const z = compressSync(data);
    const flipped = Buffer.from(z);
    const at = Math.floor(flipped.length / 2);
    flipped[at] = (flipped[at] as number) ^ 0xff;
    for (const [frame, len] of [
      [flipped, data.length],
      [z, data.length - 1],
      [z, data.length + 1],
      [z.subarray(0, z.length - 3), data.length],
    ] as const) {
      assert.throws(() => decompressSync(frame, len, "blob x"), { code: "REPO_CORRUPT" });
      await assert.rejects(decompress(frame, len, "blob x"), { code: "REPO_CORRUPT" });
    }
  });

  test("more asynchronous calls than koffi queues at once (256) wait instead of failing", async () => {
    const data = Buffer.from("abcabcabc".repeat(8000));
    const all = await Promise.all(Array.from({ length: 600 }, () => compress(data)));
    for (const z of all) assert.deepEqual(decompressSync(z, data.length, "blob"), data);
  });

  test("a recorded length beyond any blob is refused before anything is allocated", async () => {
    const z = compressSync(Buffer.from("x"));
    for (const len of [MAX_RAW_BLOB + 1, 2 ** 32 - 1, -1, 1.5]) {
      assert.throws(() => decompressSync(z, len, "blob y"), {
        code: "REPO_CORRUPT",
        message: /impossible length/,
      });
      await assert.rejects(decompress(z, len, "blob y"), { code: "REPO_CORRUPT" });
    }
  });
});
