/**
 * Seeded, deterministic benchmark data. The same seed and size factor give byte-identical
 * trees on every machine, so anyone can reproduce a run:
 *
 * - "random" bytes are an AES-256-CTR keystream whose key is SHA-256 of the seed and the
 *   tree's name (incompressible, and fast to make);
 * - "text-like" bytes are words drawn with a skewed distribution from a generated
 *   4,096-word dictionary, with punctuation and line breaks (compresses about 2–3×);
 * - sizes, names and choices come from a xorshift128 generator seeded the same way.
 *
 * Every file is unique, so no tool can deduplicate across files within one snapshot.
 */
import { createCipheriv, createHash } from "node:crypto";
import { closeSync, fstatSync, mkdirSync, openSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";

/** xorshift128, seeded through splitmix32 from a string. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;

  constructor(seed: number, stream: string) {
    const h = createHash("sha256").update(`ferry-bench:${seed}:${stream}`).digest();
    this.a = h.readUInt32LE(0) | 1;
    this.b = h.readUInt32LE(4);
    this.c = h.readUInt32LE(8);
    this.d = h.readUInt32LE(12);
  }

  /** A uint32. */
  next(): number {
    let t = this.d;
    const s = this.a;
    this.d = this.c;
    this.c = this.b;
    this.b = s;
    t ^= t << 11;
    t ^= t >>> 8;
    this.a = (t ^ s ^ (s >>> 19)) >>> 0;
    return this.a;
  }

  /** A float in [0, 1). */
  float(): number {
    return this.next() / 4294967296;
  }

  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }
}

/** An endless incompressible byte stream. */
export class RandomBytes {
  private readonly cipher;
  constructor(seed: number, stream: string) {
    const key = createHash("sha256").update(`ferry-bench-bytes:${seed}:${stream}`).digest();
    this.cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  }
  take(n: number): Buffer {
    return this.cipher.update(Buffer.alloc(n));
  }
}

/** An endless stream of text-like bytes. */
export class TextBytes {
  private readonly rng: Rng;
  private readonly dict: Uint8Array;
  private readonly offsets: Uint32Array;
  private wordsInLine = 0;
  private pending: number[] = [];

  constructor(seed: number, stream: string) {
    const d = new Rng(seed, "dictionary");
    const letters = "etaoinshrdlcumwfgypbvkjxqz";
    const words: string[] = [];
    for (let i = 0; i < 4096; i++) {
      const len = 1 + Math.floor(d.float() * d.float() * 11) + (i < 64 ? 0 : 1);
      let w = "";
      // Frequent letters first, like English; squaring skews towards the start.
      for (let j = 0; j < len; j++) w += letters[Math.floor(d.float() * d.float() * 26)];
      words.push(w);
    }
    const bytes = Buffer.from(words.join(""), "latin1");
    this.dict = new Uint8Array(bytes);
    this.offsets = new Uint32Array(words.length + 1);
    let off = 0;
    words.forEach((w, i) => {
      this.offsets[i] = off;
      off += w.length;
    });
    this.offsets[words.length] = off;
    this.rng = new Rng(seed, stream);
  }

  take(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let i = 0;
    while (i < n && this.pending.length > 0) out[i++] = this.pending.shift() as number;
    const rng = this.rng;
    const dict = this.dict;
    const offsets = this.offsets;
    const word = Buffer.allocUnsafe(32);
    while (i < n) {
      const r = rng.float();
      const w = Math.floor(r * r * r * 4096);
      const start = offsets[w] as number;
      const end = offsets[w + 1] as number;
      let len = 0;
      for (let k = start; k < end; k++) word[len++] = dict[k] as number;
      const p = rng.next() & 63;
      if (p === 0)
        word[len++] = 0x2e; // .
      else if (p < 4) word[len++] = 0x2c; // ,
      this.wordsInLine++;
      if (this.wordsInLine >= 9 + (rng.next() & 7)) {
        word[len++] = 0x0a;
        this.wordsInLine = 0;
      } else word[len++] = 0x20;
      for (let k = 0; k < len; k++) {
        if (i < n) out[i++] = word[k] as number;
        else this.pending.push(word[k] as number);
      }
    }
    return out;
  }
}

export interface Tree {
  name: string;
  root: string;
  files: string[];
  dirs: number;
  bytes: number;
}

const KiB = 1024;
const MiB = 1024 * KiB;
const CHUNK = 4 * MiB;

/** The many-small-files tree: 20,000 files of 1–100 KiB in 200 directories (× factor). */
export function generateSmallTree(root: string, seed: number, factor: number): Tree {
  const nFiles = Math.max(2, Math.round(20_000 * factor));
  const nDirs = Math.max(1, Math.round(200 * factor));
  const nTop = Math.ceil(nDirs / 10);
  const dirs: string[] = [];
  for (let j = 0; j < nDirs; j++) {
    dirs.push(j < nTop ? `t${j}` : `t${(j - nTop) % nTop}/s${j}`);
  }
  mkdirSync(root, { recursive: true });
  for (const d of dirs) mkdirSync(join(root, d), { recursive: true });
  const rng = new Rng(seed, "small-sizes");
  const random = new RandomBytes(seed, "small");
  const text = new TextBytes(seed, "small-text");
  const files: string[] = [];
  let bytes = 0;
  for (let i = 0; i < nFiles; i++) {
    const size = rng.int(1 * KiB, 100 * KiB);
    const isText = i % 2 === 1;
    const rel = join(
      dirs[i % nDirs] as string,
      `f${String(i).padStart(5, "0")}.${isText ? "txt" : "bin"}`,
    );
    writeFileSync(join(root, rel), isText ? text.take(size) : random.take(size));
    files.push(rel);
    bytes += size;
  }
  return { name: "small", root, files, dirs: nDirs, bytes };
}

/** The big-files tree: 4 files of 256 MiB (× factor), two random, two text-like. */
export function generateBigTree(root: string, seed: number, factor: number): Tree {
  mkdirSync(root, { recursive: true });
  const size = Math.max(1, Math.round(256 * MiB * factor));
  const files: string[] = [];
  let bytes = 0;
  for (let i = 0; i < 4; i++) {
    const isText = i >= 2;
    const rel = isText ? `text-${i}.txt` : `random-${i}.bin`;
    const source = isText ? new TextBytes(seed, `big-${i}`) : new RandomBytes(seed, `big-${i}`);
    const fd = openSync(join(root, rel), "w", 0o640);
    try {
      for (let done = 0; done < size; ) {
        const n = Math.min(CHUNK, size - done);
        const buf = source.take(n);
        for (let off = 0; off < n; ) off += writeSync(fd, buf, off, n - off);
        done += n;
      }
    } finally {
      closeSync(fd);
    }
    files.push(rel);
    bytes += size;
  }
  return { name: "big", root, files, dirs: 1, bytes };
}

/**
 * Changes 1% of the tree's files (at least one) in place: 4 KiB (or the whole file, if
 * smaller) at a seeded offset is overwritten with fresh random bytes. `round` picks a
 * different set each time. Returns the number of bytes rewritten.
 */
export function modifyOnePercent(tree: Tree, seed: number, round: number): number {
  const rng = new Rng(seed, `modify-${round}`);
  const random = new RandomBytes(seed, `modify-${round}`);
  const count = Math.max(1, Math.round(tree.files.length / 100));
  const chosen = new Set<number>();
  while (chosen.size < count) chosen.add(rng.int(0, tree.files.length - 1));
  let changed = 0;
  for (const i of [...chosen].sort((a, b) => a - b)) {
    const path = join(tree.root, tree.files[i] as string);
    const fd = openSync(path, "r+");
    try {
      const { size } = fstatSync(fd);
      const n = Math.min(4 * KiB, size);
      const at = rng.int(0, size - n);
      writeSync(fd, random.take(n), 0, n, at);
      changed += n;
    } finally {
      closeSync(fd);
    }
  }
  return changed;
}
