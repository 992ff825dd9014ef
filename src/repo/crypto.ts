/**
 * The repository's cryptography (docs/repository.md, "Keys and encryption").
 *
 * - Master keys: 32 random bytes for AES-256-GCM, 32 for HMAC-SHA-256 blob ids, 32 seeding
 *   the chunker's gear table (so chunk boundaries do not reveal known files).
 * - A key file seals them with a key derived from the password by scrypt; its parameters
 *   and salt are stored beside the sealed bytes, so they can be raised later.
 * - Sealed bytes are `nonce(12) || ciphertext || tag(16)`, with additional data naming what
 *   the bytes are (a blob's id, or the kind of file), so nothing can be swapped unnoticed.
 * - An unencrypted repository (`--insecure-no-password`) stores plaintext and uses plain
 *   SHA-256 ids and a fixed gear seed.
 */
import {
  createCipheriv,
  createDecipheriv,
  createHash,
  createHmac,
  randomBytes,
  scryptSync,
  timingSafeEqual,
} from "node:crypto";
import { FerryError } from "../core/errors.js";

export interface MasterKeys {
  enc: Buffer;
  mac: Buffer;
  chunker: Buffer;
}

export interface ScryptParams {
  N: number;
  r: number;
  p: number;
}

export const DEFAULT_SCRYPT: ScryptParams = { N: 1 << 15, r: 8, p: 1 };

/** What a key file holds (JSON). */
export interface KeyFile {
  version: 1;
  created: string;
  host: string;
  kdf: { name: "scrypt"; N: number; r: number; p: number; salt: string };
  /** base64 of seal(JSON of the master keys and the repository id). */
  data: string;
}

const NONCE = 12;
const TAG = 16;
export const SEAL_OVERHEAD = NONCE + TAG;

export interface Crypto {
  readonly encrypted: boolean;
  readonly chunkerSeed: Buffer;
  /** The id of a blob: HMAC-SHA-256 with the mac key, or SHA-256 when unencrypted. */
  blobId(data: Buffer): Buffer;
  seal(plain: Buffer, aad: string | Buffer): Buffer;
  /** Length of `plain` once sealed. */
  sealedLength(plainLength: number): number;
  /** Seals `plain` into `out` at `at` (sealedLength bytes), without a buffer of its own. */
  sealInto(plain: Buffer, aad: string | Buffer, out: Buffer, at: number): number;
  open(sealed: Buffer, aad: string | Buffer, what: string): Buffer;
}

export class PlainCrypto implements Crypto {
  readonly encrypted = false;
  readonly chunkerSeed = Buffer.alloc(32);
  blobId(data: Buffer): Buffer {
    return createHash("sha256").update(data).digest();
  }
  seal(plain: Buffer): Buffer {
    return plain;
  }
  sealedLength(plainLength: number): number {
    return plainLength;
  }
  sealInto(plain: Buffer, _aad: string | Buffer, out: Buffer, at: number): number {
    return plain.copy(out, at);
  }
  open(sealed: Buffer): Buffer {
    return sealed;
  }
}

export class AeadCrypto implements Crypto {
  readonly encrypted = true;
  constructor(private readonly keys: MasterKeys) {}
  get chunkerSeed(): Buffer {
    return this.keys.chunker;
  }
  blobId(data: Buffer): Buffer {
    return createHmac("sha256", this.keys.mac).update(data).digest();
  }
  seal(plain: Buffer, aad: string | Buffer): Buffer {
    return seal(this.keys.enc, plain, aad);
  }
  sealedLength(plainLength: number): number {
    return plainLength + SEAL_OVERHEAD;
  }
  sealInto(plain: Buffer, aad: string | Buffer, out: Buffer, at: number): number {
    const nonce_ = nonce();
    const c = createCipheriv("aes-256-gcm", this.keys.enc, nonce_);
    c.setAAD(aadBuf(aad));
    let o = at + nonce_.copy(out, at);
    o += c.update(plain).copy(out, o);
    o += c.final().copy(out, o);
    o += c.getAuthTag().copy(out, o);
    return o - at;
  }
  open(sealed: Buffer, aad: string | Buffer, what: string): Buffer {
    const out = open(this.keys.enc, sealed, aad);
    if (out === undefined) {
      throw new FerryError(
        "REPO_CORRUPT",
        `${what} fails authentication: it was modified or damaged`,
      );
    }
    return out;
  }
}

function aadBuf(aad: string | Buffer): Buffer {
  return typeof aad === "string" ? Buffer.from(aad, "utf8") : aad;
}

/** Random nonces drawn from a pool: one getrandom call per 341 seals, not one per seal. */
let noncePool = Buffer.alloc(0);
function nonce(): Buffer {
  if (noncePool.length < NONCE) noncePool = randomBytes(NONCE * 341);
  const n = noncePool.subarray(0, NONCE);
  noncePool = noncePool.subarray(NONCE);
  return n;
}

export function seal(key: Buffer, plain: Buffer, aad: string | Buffer): Buffer {
  const nonce_ = nonce();
  const c = createCipheriv("aes-256-gcm", key, nonce_);
  c.setAAD(aadBuf(aad));
  const body = c.update(plain);
  const fin = c.final();
  return Buffer.concat([nonce_, body, fin, c.getAuthTag()]);
}

/** Opens sealed bytes; undefined when they fail authentication. */
export function open(key: Buffer, sealed: Buffer, aad: string | Buffer): Buffer | undefined {
  if (sealed.length < SEAL_OVERHEAD) return undefined;
  const nonce = sealed.subarray(0, NONCE);
  const tag = sealed.subarray(sealed.length - TAG);
  const d = createDecipheriv("aes-256-gcm", key, nonce);
  d.setAAD(aadBuf(aad));
  d.setAuthTag(tag);
  try {
    const body = d.update(sealed.subarray(NONCE, sealed.length - TAG));
    return Buffer.concat([body, d.final()]);
  } catch {
    return undefined;
  }
}

function deriveKey(password: string, params: ScryptParams, salt: Buffer): Buffer {
  if (
    !Number.isSafeInteger(params.N) ||
    params.N < 1024 ||
    params.N > 1 << 22 ||
    (params.N & (params.N - 1)) !== 0 ||
    params.r < 1 ||
    params.r > 32 ||
    params.p < 1 ||
    params.p > 16
  ) {
    throw new FerryError("REPO_CORRUPT", "the key file's scrypt parameters are out of range");
  }
  return scryptSync(password.normalize("NFC"), salt, 32, {
    N: params.N,
    r: params.r,
    p: params.p,
    maxmem: 256 * params.N * params.r + (1 << 20),
  });
}

export function newMasterKeys(): MasterKeys {
  return { enc: randomBytes(32), mac: randomBytes(32), chunker: randomBytes(32) };
}

export function makeKeyFile(
  password: string,
  keys: MasterKeys,
  repoId: string,
  host: string,
  params: ScryptParams = DEFAULT_SCRYPT,
): KeyFile {
  const salt = randomBytes(32);
  const k = deriveKey(password, params, salt);
  const plain = Buffer.from(
    JSON.stringify({
      repo: repoId,
      enc: keys.enc.toString("base64"),
      mac: keys.mac.toString("base64"),
      chunker: keys.chunker.toString("base64"),
    }),
  );
  return {
    version: 1,
    created: new Date().toISOString(),
    host,
    kdf: { name: "scrypt", ...params, salt: salt.toString("base64") },
    data: seal(k, plain, `ferry-key:${repoId}`).toString("base64"),
  };
}

/** Opens a key file with a password; undefined if the password does not fit. */
export function openKeyFile(
  file: KeyFile,
  password: string,
  repoId: string,
): MasterKeys | undefined {
  if (file.version !== 1 || file.kdf?.name !== "scrypt" || typeof file.kdf.salt !== "string") {
    throw new FerryError("REPO_FORMAT_UNSUPPORTED", "a key file of an unknown version or KDF");
  }
  const k = deriveKey(password, file.kdf, Buffer.from(file.kdf.salt, "base64"));
  const plain = open(k, Buffer.from(file.data, "base64"), `ferry-key:${repoId}`);
  if (plain === undefined) return undefined;
  const j = JSON.parse(plain.toString("utf8")) as Record<string, string>;
  const keys = {
    enc: Buffer.from(j.enc ?? "", "base64"),
    mac: Buffer.from(j.mac ?? "", "base64"),
    chunker: Buffer.from(j.chunker ?? "", "base64"),
  };
  if (
    j.repo !== repoId ||
    keys.enc.length !== 32 ||
    keys.mac.length !== 32 ||
    keys.chunker.length !== 32
  ) {
    throw new FerryError("REPO_CORRUPT", "a key file opened but holds malformed keys");
  }
  return keys;
}

export function sha256(data: Buffer | Buffer[]): Buffer {
  const h = createHash("sha256");
  for (const d of Array.isArray(data) ? data : [data]) h.update(d);
  return h.digest();
}

export function equalIds(a: Buffer, b: Buffer): boolean {
  return a.length === b.length && timingSafeEqual(a, b);
}
