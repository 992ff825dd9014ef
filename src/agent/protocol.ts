/**
 * What ferryd's `agent` driver and the `ferry/agent` SDK share: the protocol's constants,
 * the rules a payload entry must obey (the same rules as a files restore, taken from
 * src/core/archive/paths.ts) and the writing of payload entries. Reading a payload is
 * tar-stream.ts.
 *
 * The protocol itself is specified in docs/agent-protocol.md; this module must stay in step
 * with it.
 */

import {
  checkLinkTarget,
  DEFAULT_RESTORE_LIMITS,
  parseArchivePath,
  unsafe,
} from "../core/archive/paths.js";
import {
  BLOCK,
  type EntryType,
  encodeHeader,
  padding,
  type TarHeader,
} from "../core/archive/tar.js";

/** The protocol version this code speaks (docs/agent-protocol.md, "Versioning"). */
export const PROTOCOL_VERSION = 1;
/** Header both sides send on every request and response. */
export const PROTOCOL_HEADER = "ferry-agent-protocol";
/** Trailer of a backup response: `ok` or `error CODE message`. */
export const STATUS_TRAILER = "ferry-status";

/** Where an agent's payload lives inside a Ferry archive: entry `x/y` is `data/0/x/y`. */
export const ARCHIVE_PREFIX = "data/0/";

export interface PayloadLimits {
  /** Most entries in one payload. */
  maxEntries: number;
  /** Most bytes of file bodies in one payload. */
  maxBytes: number;
  /** Largest pax extended header accepted. */
  maxPaxBytes: number;
  /** Zero bytes accepted after the end-of-archive blocks (tar record padding). */
  maxTrailingBytes: number;
}

export const DEFAULT_PAYLOAD_LIMITS: PayloadLimits = {
  maxEntries: 1_000_000,
  maxBytes: 64 * 1024 ** 3,
  maxPaxBytes: 64 * 1024,
  maxTrailingBytes: 1024 * 1024,
};

/** Entry types a payload may hold. Hard links, devices and FIFOs never cross. */
export const PAYLOAD_TYPES: ReadonlySet<EntryType> = new Set(["file", "dir", "symlink"]);

/**
 * Checks one payload entry and keeps the running totals. The payload is checked with the
 * same rules on both sides of the protocol and in both directions, so nothing the rules
 * refuse ever reaches an archive or an application.
 */
export class PayloadChecker {
  entries = 0;
  bytes = 0;
  private readonly seen = new Set<string>();
  private readonly links = new Set<string>();
  private readonly parents = new Set<string>();

  constructor(readonly limits: PayloadLimits = DEFAULT_PAYLOAD_LIMITS) {}

  /**
   * Checks an entry named as the agent names it (`notes/1.json`); returns the clean
   * relative path (no trailing slash).
   */
  checkAgentEntry(h: TarHeader): string {
    const show = JSON.stringify(h.path.length > 200 ? `${h.path.slice(0, 200)}…` : h.path);
    if (h.path.startsWith("/")) throw unsafe(`entry ${show} is an absolute path`);
    return this.checkArchiveEntry({ ...h, path: ARCHIVE_PREFIX + h.path }, show);
  }

  /**
   * Checks an entry named as the Ferry archive names it (`data/0/notes/1.json`); returns
   * the path as the agent names it.
   */
  checkArchiveEntry(h: TarHeader, show = JSON.stringify(h.path)): string {
    const { parts } = parseArchivePath(h.path, 1, DEFAULT_RESTORE_LIMITS);
    if (parts.length === 0) throw unsafe(`entry ${show} names the payload's root itself`);
    const rel = parts.join("/");
    if (!PAYLOAD_TYPES.has(h.type)) {
      throw unsafe(
        `entry ${show} is a ${h.type}; an agent payload holds files, directories and symlinks only`,
      );
    }
    if (h.type === "symlink") {
      checkLinkTarget(rel, h.linkpath, DEFAULT_RESTORE_LIMITS);
      if (linkLeaves(parts, h.linkpath)) {
        throw unsafe(`symlink ${show} points outside the payload (${JSON.stringify(h.linkpath)})`);
      }
    }
    if (this.seen.has(rel)) throw unsafe(`entry ${show} appears twice`);
    // Nothing may be reached through a symlink of the payload: a chain of links that are
    // each inside could still lead out, so a link never has entries below it.
    for (let i = 1; i < parts.length; i++) {
      if (this.links.has(parts.slice(0, i).join("/"))) {
        throw unsafe(`entry ${show} lies below a symlink of the payload`);
      }
    }
    if (h.type === "symlink" && this.parents.has(rel)) {
      throw unsafe(`symlink ${show} replaces a directory that holds other entries`);
    }
    for (let i = 1; i < parts.length; i++) this.parents.add(parts.slice(0, i).join("/"));
    if (h.type === "symlink") this.links.add(rel);
    this.entries++;
    if (this.entries > this.limits.maxEntries) {
      throw unsafe(`the payload has more than ${this.limits.maxEntries} entries`);
    }
    this.bytes += h.size;
    if (this.bytes > this.limits.maxBytes) {
      throw unsafe(`the payload is larger than ${this.limits.maxBytes} bytes`);
    }
    this.seen.add(rel);
    return rel;
  }
}

/** True if a symlink at `parts` with `target` resolves (lexically) outside the payload. */
function linkLeaves(parts: string[], target: string): boolean {
  if (target.startsWith("/")) return true;
  let depth = parts.length - 1; // the directory holding the link
  for (const c of target.split("/")) {
    if (c === "" || c === ".") continue;
    if (c === "..") {
      depth--;
      if (depth < 0) return true;
    } else {
      depth++;
    }
  }
  return false;
}

/** A header as it crosses: normalised owner, permission bits only. */
export function payloadHeader(
  path: string,
  type: "file" | "dir" | "symlink",
  opts: { size?: number; mode?: number; mtimeMs?: number; linkpath?: string } = {},
): TarHeader {
  const mtime = opts.mtimeMs ?? Date.now();
  return {
    path: type === "dir" ? `${path}/` : path,
    type,
    mode: (opts.mode ?? (type === "dir" ? 0o755 : type === "symlink" ? 0o777 : 0o644)) & 0o777,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    size: type === "file" ? (opts.size ?? 0) : 0,
    mtimeSec: Math.floor(mtime / 1000),
    mtimeNsec: 0,
    linkpath: type === "symlink" ? (opts.linkpath ?? "") : "",
  };
}

/** Header bytes, and the padding after a body of `size` bytes. */
export function encodeEntryHeader(h: TarHeader): Buffer {
  return encodeHeader(h);
}
export function entryPadding(size: number): Buffer {
  return Buffer.alloc(padding(size));
}
/** Two zero blocks: the end of a tar stream. */
export const END_OF_TAR = Buffer.alloc(BLOCK * 2);
