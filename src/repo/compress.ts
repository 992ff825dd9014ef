/**
 * zstd for the repository's blobs. Frames are standard zstd frames (`zstd -d` reads them).
 *
 * Two implementations of the same format, chosen once per process:
 *
 * - **libzstd** (the reference library; Debian's `libzstd1`, which dpkg itself depends on,
 *   so it is on every Debian and Ubuntu machine) called through koffi: one-shot
 *   `ZSTD_compress`/`ZSTD_decompress` into buffers of known size. Calls of 32 KiB and more
 *   run on koffi's worker threads, so compression overlaps with chunking and hashing on
 *   the main thread.
 * - **@toondepauw/node-zstd**, a Node-API binding whose prebuilt binaries come from the
 *   npm registry, where libzstd.so.1 cannot be loaded (a system without it).
 *
 * Why libzstd first: measured on this project's 2-core machine (1 MiB blocks, level 1),
 * the binding compressed text at 205 MB/s and incompressible data at 212 MB/s; libzstd
 * did the same text at 602 MB/s and incompressible data at 2,381 MB/s. The binding
 * streams every call through a fresh stream context into a growing vector, which costs
 * more than compressing. `FERRY_ZSTD=binding` forces the binding (tests compare both).
 */
import { createRequire } from "node:module";
import { FerryError } from "../core/errors.js";

/** Level 1: on a tar of /usr/share/doc and Perl (170 MB) 671 MB/s at ratio 0.472, against
 * 267 MB/s at 0.462 for level 3 (one core of the development machine): 2.5× the speed for
 * 2% more bytes. */
export const ZSTD_LEVEL = 1;

interface Zstd {
  readonly name: "libzstd" | "binding";
  /** Compresses into `out` when it is large enough (see compressBound), else a new buffer. */
  compressSync(data: Buffer, out?: Buffer): Buffer;
  compress(data: Buffer, out?: Buffer): Promise<Buffer>;
  /** Decompresses into exactly rawLength bytes, or throws. */
  decompressSync(data: Buffer, rawLength: number): Buffer;
  decompress(data: Buffer, rawLength: number): Promise<Buffer>;
}

const require = createRequire(import.meta.url);

/** Asynchronous libzstd calls queued in koffi at once (koffi's own limit is 256). */
const MAX_ASYNC = 32;

type Native = {
  (...args: unknown[]): unknown;
  async(...args: unknown[]): void;
};

function loadLibzstd(): Zstd | undefined {
  let lib: { func(decl: string): Native };
  try {
    const koffi = require("koffi") as { load(name: string): { func(decl: string): Native } };
    lib = koffi.load("libzstd.so.1");
  } catch {
    return undefined;
  }
  const compressC = lib.func(
    "size_t ZSTD_compress(void *dst, size_t dstCapacity, const void *src, size_t srcSize, int level)",
  );
  const decompressC = lib.func(
    "size_t ZSTD_decompress(void *dst, size_t dstCapacity, const void *src, size_t srcSize)",
  );
  const bound = lib.func("size_t ZSTD_compressBound(size_t srcSize)");
  const isError = lib.func("unsigned int ZSTD_isError(size_t code)");
  const errorName = lib.func("const char *ZSTD_getErrorName(size_t code)");

  const check = (code: unknown): number => {
    if (isError(code) !== 0) throw new Error(String(errorName(code)));
    return Number(code);
  };
  const outFor = (data: Buffer, out?: Buffer) => {
    const need = Number(bound(data.length));
    return out !== undefined && out.length >= need ? out : Buffer.allocUnsafe(need);
  };
  // koffi refuses more than 256 queued asynchronous calls (it throws); callers are
  // bounded already, but a queue here makes that a wait, never an error.
  let running = 0;
  const waiting: (() => void)[] = [];
  const asPromise = async (fn: Native, args: unknown[]): Promise<unknown> => {
    if (running >= MAX_ASYNC) await new Promise<void>((go) => waiting.push(go));
    running++;
    try {
      return await new Promise((resolve, reject) => {
        fn.async(...args, (err: unknown, res: unknown) => (err ? reject(err) : resolve(res)));
      });
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
  const exact = (n: number, rawLength: number, out: Buffer) => {
    if (n !== rawLength) throw new Error(`${n} bytes, not ${rawLength}`);
    return out;
  };
  return {
    name: "libzstd",
    compressSync(data, scratch) {
      const out = outFor(data, scratch);
      return out.subarray(0, check(compressC(out, out.length, data, data.length, ZSTD_LEVEL)));
    },
    async compress(data, scratch) {
      const out = outFor(data, scratch);
      const n = check(await asPromise(compressC, [out, out.length, data, data.length, ZSTD_LEVEL]));
      return out.subarray(0, n);
    },
    decompressSync(data, rawLength) {
      const out = Buffer.allocUnsafe(rawLength);
      return exact(check(decompressC(out, rawLength, data, data.length)), rawLength, out);
    },
    async decompress(data, rawLength) {
      const out = Buffer.allocUnsafe(rawLength);
      const n = check(await asPromise(decompressC, [out, rawLength, data, data.length]));
      return exact(n, rawLength, out);
    },
  };
}

function loadBinding(): Zstd {
  const { Decoder, Encoder } =
    require("@toondepauw/node-zstd") as typeof import("@toondepauw/node-zstd");
  const encoder = new Encoder(ZSTD_LEVEL);
  const decoder = new Decoder();
  const exact = (out: Buffer, rawLength: number) => {
    if (out.length !== rawLength) throw new Error(`${out.length} bytes, not ${rawLength}`);
    return out;
  };
  return {
    name: "binding",
    compressSync: (data) => encoder.encodeSync(data),
    compress: (data) => encoder.encode(data),
    decompressSync: (data, rawLength) => exact(decoder.decodeSync(data), rawLength),
    decompress: async (data, rawLength) => exact(await decoder.decode(data), rawLength),
  };
}

let zstd: Zstd | undefined;

/** The implementation in use, loaded on first use (so `ferry --help` never loads it). */
export function zstdImpl(): Zstd {
  if (zstd === undefined) {
    zstd = (process.env.FERRY_ZSTD === "binding" ? undefined : loadLibzstd()) ?? loadBinding();
  }
  return zstd;
}

/** The compressed frame, in `out` when given and large enough (compressBound bytes). */
export function compress(data: Buffer, out?: Buffer): Promise<Buffer> {
  return zstdImpl().compress(data, out);
}

export function compressSync(data: Buffer, out?: Buffer): Buffer {
  return zstdImpl().compressSync(data, out);
}

/** zstd's worst case for `n` input bytes (ZSTD_COMPRESSBOUND). */
export function compressBound(n: number): number {
  return n + (n >>> 8) + (n < 128 << 10 ? ((128 << 10) - n) >>> 11 : 0);
}

/** No blob is larger (chunks are at most a few MiB, trees a few hundred KiB): a larger
 * recorded length is damage, and must not become an allocation of gigabytes. */
export const MAX_RAW_BLOB = 64 * 1024 * 1024;

function checkLength(rawLength: number, what: string): void {
  if (!Number.isSafeInteger(rawLength) || rawLength < 0 || rawLength > MAX_RAW_BLOB) {
    throw new FerryError("REPO_CORRUPT", `${what} records an impossible length ${rawLength}`);
  }
}

/** Decompresses, refusing output of another length than recorded. */
export function decompressSync(data: Buffer, rawLength: number, what: string): Buffer {
  checkLength(rawLength, what);
  try {
    return zstdImpl().decompressSync(data, rawLength);
  } catch (err) {
    throw undecodable(what, rawLength, err);
  }
}

/** decompressSync off the main thread. */
export async function decompress(data: Buffer, rawLength: number, what: string): Promise<Buffer> {
  checkLength(rawLength, what);
  try {
    return await zstdImpl().decompress(data, rawLength);
  } catch (err) {
    throw undecodable(what, rawLength, err);
  }
}

function undecodable(what: string, rawLength: number, cause: unknown): FerryError {
  return new FerryError(
    "REPO_CORRUPT",
    `${what} does not decompress to the ${rawLength} bytes recorded (${(cause as Error).message})`,
    { cause },
  );
}
