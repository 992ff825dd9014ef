/**
 * A repository's `config` file and key files (docs/repository.md, "config" and "Keys and
 * encryption"): making them for a new repository, and reading them, with the password, to
 * open one. The config is written last, so a crash leaves no half-made repository; an
 * unencrypted config beside key files is refused (downgrade defence).
 */
import { randomBytes } from "node:crypto";
import { hostname } from "node:os";
import { FerryError } from "../core/errors.js";
import { VERSION } from "../core/version.js";
import type { Backend } from "./backend.js";
import {
  AeadCrypto,
  type Crypto,
  type KeyFile,
  makeKeyFile,
  newMasterKeys,
  openKeyFile,
  PlainCrypto,
  type ScryptParams,
  sha256,
} from "./crypto.js";
import { type ChunkerParams, CONTENT_PARAMS, META_PARAMS } from "./fastcdc.js";
import { hex } from "./format.js";

/** The repository format this code writes and reads. */
export const FORMAT_VERSION = 1;

export interface RepoConfig {
  ferry_repository: typeof FORMAT_VERSION;
  id: string;
  created: string;
  encrypted: boolean;
  compression: "zstd";
  chunker: { content: ChunkerParams; meta: ChunkerParams };
  inline_max: number;
}

export interface OpenOptions {
  /** The password, or undefined for a repository made with --insecure-no-password. */
  password: string | undefined;
}

/** What opening a repository yields: its config and the keys it is sealed with. */
export interface Opened {
  config: RepoConfig;
  crypto: Crypto;
}

function parseConfig(raw: Buffer, where: string): RepoConfig {
  let c: RepoConfig;
  try {
    c = JSON.parse(raw.toString("utf8")) as RepoConfig;
  } catch {
    throw new FerryError("REPO_CORRUPT", `${where}/config is not JSON`);
  }
  if (typeof c.ferry_repository !== "number") {
    throw new FerryError(
      "REPO_NOT_FOUND",
      `${where} is not a Ferry repository (no format in its config)`,
    );
  }
  if (c.ferry_repository > FORMAT_VERSION) {
    throw new FerryError(
      "REPO_FORMAT_UNSUPPORTED",
      `${where} has repository format ${c.ferry_repository}; this ferry (${VERSION}) reads format ${FORMAT_VERSION}: upgrade ferry`,
    );
  }
  if (c.ferry_repository !== FORMAT_VERSION || !/^[0-9a-f]{64}$/.test(c.id)) {
    throw new FerryError("REPO_FORMAT_UNSUPPORTED", `${where} has an unknown repository format`);
  }
  return c;
}

/** Makes a new repository's key file (when there is a password) and then its config. */
export async function createRepo(
  backend: Backend & { create?(): Promise<void> },
  password: string | undefined,
  scrypt?: ScryptParams,
): Promise<Opened> {
  if (await backend.exists("config", "config")) {
    throw new FerryError("REPO_EXISTS", `${backend.location} already holds a repository`);
  }
  await backend.create?.();
  const repoId = hex(randomBytes(32));
  const config: RepoConfig = {
    ferry_repository: FORMAT_VERSION,
    id: repoId,
    created: new Date().toISOString(),
    encrypted: password !== undefined,
    compression: "zstd",
    chunker: { content: CONTENT_PARAMS, meta: META_PARAMS },
    inline_max: 4096,
  };
  let crypto: Crypto = new PlainCrypto();
  if (password !== undefined) {
    const keys = newMasterKeys();
    const kf = makeKeyFile(password, keys, repoId, hostname(), scrypt);
    const raw = Buffer.from(`${JSON.stringify(kf, null, 2)}\n`);
    await backend.write("keys", hex(sha256(raw)), raw);
    crypto = new AeadCrypto(keys);
  }
  // The config is written last: a crash before leaves no repository, just files.
  await backend.write("config", "config", Buffer.from(`${JSON.stringify(config, null, 2)}\n`));
  return { config, crypto };
}

/** Reads the config and, for an encrypted repository, finds a key file the password opens. */
export async function openRepo(backend: Backend, opts: OpenOptions): Promise<Opened> {
  let raw: Buffer;
  try {
    raw = await backend.read("config", "config");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") {
      throw new FerryError(
        "REPO_NOT_FOUND",
        `no repository at ${backend.location} (create one with 'ferry init')`,
      );
    }
    throw err;
  }
  const config = parseConfig(raw, backend.location);
  const keys = await backend.list("keys");
  if (!config.encrypted) {
    // Downgrade defence: an attacker who can write the repository must not be able to
    // turn an encrypted repository into a plaintext one by rewriting its config.
    if (keys.length > 0) {
      throw new FerryError(
        "REPO_CORRUPT",
        `${backend.location}/config says the repository is unencrypted but it has key files: refusing (the config may have been tampered with)`,
      );
    }
    if (opts.password !== undefined) {
      throw new FerryError(
        "REPO_UNENCRYPTED",
        `${backend.location} is an unencrypted repository (made with --insecure-no-password) but a password was given: refusing, so backups meant to be encrypted are not stored in plaintext`,
      );
    }
    return { config, crypto: new PlainCrypto() };
  }
  if (opts.password === undefined) {
    throw new FerryError(
      "PASSWORD_REQUIRED",
      `${backend.location} is encrypted: give its password in FERRY_PASSWORD, --password-file or --password-command`,
    );
  }
  if (keys.length === 0)
    throw new FerryError("REPO_CORRUPT", `${backend.location} has no key files`);
  for (const k of keys) {
    const text = await backend.read("keys", k.name);
    let kf: KeyFile;
    try {
      kf = JSON.parse(text.toString("utf8")) as KeyFile;
    } catch {
      continue;
    }
    const master = openKeyFile(kf, opts.password, config.id);
    if (master !== undefined) return { config, crypto: new AeadCrypto(master) };
  }
  throw new FerryError(
    "REPO_WRONG_PASSWORD",
    `wrong password for ${backend.location}: no key file opens with it`,
  );
}
