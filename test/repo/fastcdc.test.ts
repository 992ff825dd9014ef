/**
 * FastCDC: pinned vectors (computed by this implementation when it was written and
 * checked against the paper's rules below), streaming equivalence, bounds, and the
 * property that makes it worth having: an insertion moves only nearby boundaries.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  CONTENT_PARAMS,
  chunkLengths,
  FastCDC,
  gearTable,
  META_PARAMS,
} from "../../src/repo/fastcdc.js";
import { prng } from "./helpers.js";

const ZERO_SEED = gearTable(Buffer.alloc(32));
const DATA = prng("fastcdc-vector", 4 << 20);

test("gear table from the zero seed is pinned", () => {
  assert.deepEqual(
    [...ZERO_SEED.slice(0, 4)].map((x) => x.toString(16)),
    ["6db65fd5", "2158a890", "e15f3744", "b4e3c4fa"],
  );
});

test("content chunk boundaries of a pinned input are pinned", () => {
  assert.deepEqual(
    chunkLengths(ZERO_SEED, CONTENT_PARAMS, DATA),
    [
      299380, 275473, 515976, 263389, 386797, 166982, 200030, 276535, 271759, 275795, 283075,
      334232, 333410, 121434, 190037,
    ],
  );
});

test("metadata chunk boundaries of a pinned input are pinned", () => {
  assert.deepEqual(
    chunkLengths(ZERO_SEED, META_PARAMS, DATA.subarray(0, 128 * 1024)),
    [
      2428, 4435, 4494, 4218, 5232, 4481, 4859, 3182, 1386, 4259, 4203, 4784, 4722, 5931, 4831,
      2970, 4016, 5511, 4971, 5119, 4212, 3951, 5190, 5050, 5582, 4507, 4274, 4799, 5029, 2446,
    ],
  );
});

test("another seed gives other boundaries (an encrypted repository's key decides them)", () => {
  const other = chunkLengths(gearTable(Buffer.alloc(32, 1)), CONTENT_PARAMS, DATA);
  assert.notDeepEqual(other, chunkLengths(ZERO_SEED, CONTENT_PARAMS, DATA));
  assert.equal(
    other.reduce((a, b) => a + b, 0),
    DATA.length,
  );
});

test("pushing in pieces of any size gives the same chunks", () => {
  const whole = chunkLengths(ZERO_SEED, CONTENT_PARAMS, DATA);
  for (const piece of [1, 511, 4096, 65537, 1 << 20]) {
    const c = new FastCDC(ZERO_SEED, CONTENT_PARAMS);
    const got: Buffer[] = [];
    for (let o = 0; o < 1 << 21; o += piece)
      c.push(DATA.subarray(o, Math.min(o + piece, 1 << 21)), (b) => got.push(b));
    for (let o = 1 << 21; o < DATA.length; o += piece * 7)
      c.push(DATA.subarray(o, Math.min(o + piece * 7, DATA.length)), (b) => got.push(b));
    c.flush((b) => got.push(b));
    assert.deepEqual(
      got.map((b) => b.length),
      whole,
      `piece ${piece}`,
    );
    assert.ok(Buffer.concat(got).equals(DATA));
  }
});

test("every chunk but the last is within [min, max]; all-zero input is cut at max", () => {
  for (const p of [CONTENT_PARAMS, META_PARAMS]) {
    const lens = chunkLengths(ZERO_SEED, p, DATA);
    for (const l of lens.slice(0, -1)) assert.ok(l >= p.min && l <= p.max, `${l}`);
  }
  const zeros = chunkLengths(ZERO_SEED, CONTENT_PARAMS, Buffer.alloc(3 << 20));
  assert.ok(zeros.slice(0, -1).every((l) => l === CONTENT_PARAMS.max || l >= CONTENT_PARAMS.min));
});

test("an insertion near the start leaves the later chunks unchanged", () => {
  const before = new Set(cut(DATA).map((b) => b.toString("base64", 0, 48) + b.length));
  const edited = Buffer.concat([
    DATA.subarray(0, 1000),
    Buffer.from("inserted bytes"),
    DATA.subarray(1000),
  ]);
  const after = cut(edited).map((b) => b.toString("base64", 0, 48) + b.length);
  const shared = after.filter((k) => before.has(k)).length;
  assert.ok(shared >= after.length - 2, `only ${shared} of ${after.length} chunks survived`);
});

function cut(data: Buffer): Buffer[] {
  const c = new FastCDC(ZERO_SEED, CONTENT_PARAMS);
  const out: Buffer[] = [];
  c.push(data, (b) => out.push(b));
  c.flush((b) => out.push(b));
  return out;
}
