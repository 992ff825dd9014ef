/** Key files and sealing. */
import assert from "node:assert/strict";
import { test } from "node:test";
import {
  AeadCrypto,
  makeKeyFile,
  newMasterKeys,
  openKeyFile,
  seal,
  open as unseal,
} from "../../src/repo/crypto.js";

const FAST = { N: 1024, r: 8, p: 1 };

test("a key file opens with its password only, and stores its scrypt parameters", () => {
  const keys = newMasterKeys();
  const kf = makeKeyFile("correct horse", keys, "a".repeat(64), "h", FAST);
  assert.deepEqual(
    { N: kf.kdf.N, r: kf.kdf.r, p: kf.kdf.p, name: kf.kdf.name },
    { ...FAST, name: "scrypt" },
  );
  const back = openKeyFile(kf, "correct horse", "a".repeat(64));
  assert.ok(back?.enc.equals(keys.enc) && back.mac.equals(keys.mac));
  assert.equal(openKeyFile(kf, "wrong", "a".repeat(64)), undefined);
});

test("attack: a key file moved to another repository does not open there", () => {
  const kf = makeKeyFile("pw", newMasterKeys(), "a".repeat(64), "h", FAST);
  assert.equal(openKeyFile(kf, "pw", "b".repeat(64)), undefined);
});

test("attack: scrypt parameters lowered to nothing are refused", () => {
  const kf = makeKeyFile("pw", newMasterKeys(), "a".repeat(64), "h", FAST);
  assert.throws(
    () => openKeyFile({ ...kf, kdf: { ...kf.kdf, N: 2 } }, "pw", "a".repeat(64)),
    /out of range/,
  );
});

test("sealed bytes fail to open when flipped or under other additional data", () => {
  const k = newMasterKeys().enc;
  const s = seal(k, Buffer.from("hello"), "blob-1");
  assert.equal(unseal(k, s, "blob-1")?.toString(), "hello");
  assert.equal(unseal(k, s, "blob-2"), undefined);
  const flipped = Buffer.from(s);
  flipped[14] = (flipped[14] as number) ^ 1;
  assert.equal(unseal(k, flipped, "blob-1"), undefined);
});

test("blob ids are keyed: two repositories give the same data different ids", () => {
  const a = new AeadCrypto(newMasterKeys());
  const b = new AeadCrypto(newMasterKeys());
  const d = Buffer.from("same data");
  assert.ok(!a.blobId(d).equals(b.blobId(d)));
  assert.ok(a.blobId(d).equals(a.blobId(d)));
});
