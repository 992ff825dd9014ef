/**
 * What an archive path may name on restore. Every rule here is one the attack suite
 * (test/drivers/files/restore-*.test.ts) tries to break.
 */
import { FerryError } from "../errors.js";

export interface RestoreLimits {
  /** Most payload entries in one archive. */
  maxEntries: number;
  /** Deepest path below a root, in components. */
  maxDepth: number;
  /** Longest single name, in bytes (Linux NAME_MAX). */
  maxNameBytes: number;
  /** Longest path or symlink target, in bytes (Linux PATH_MAX - 1). */
  maxPathBytes: number;
}

export const DEFAULT_RESTORE_LIMITS: RestoreLimits = {
  maxEntries: 5_000_000,
  maxDepth: 256,
  maxNameBytes: 255,
  maxPathBytes: 4095,
};

export interface ParsedPath {
  root: number;
  /** Components below the root; [] is the root itself. */
  parts: string[];
}

export function unsafe(message: string): FerryError {
  return new FerryError("ARCHIVE_UNSAFE", message);
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are the point
const CONTROL = /[\u0000-\u001f\u007f]/;

/**
 * Parses `data/<index>/a/b` into root index and components, refusing absolute paths,
 * empty, `.` and `..` components, control characters (NUL included), names and paths
 * over the limits, depth over the limit, and indexes that are not declared.
 */
export function parseArchivePath(path: string, roots: number, limits: RestoreLimits): ParsedPath {
  const show = JSON.stringify(path.length > 200 ? `${path.slice(0, 200)}…` : path);
  if (CONTROL.test(path)) throw unsafe(`entry ${show} has a control character in its name`);
  if (Buffer.byteLength(path) > limits.maxPathBytes)
    throw unsafe(`entry ${show} has too long a path`);
  if (path.startsWith("/")) throw unsafe(`entry ${show} is an absolute path`);
  const trimmed = path.endsWith("/") ? path.slice(0, -1) : path;
  const all = trimmed.split("/");
  if (all[0] !== "data") throw unsafe(`entry ${show} is outside data/`);
  const index = all[1];
  if (index === undefined || !/^(0|[1-9][0-9]{0,5})$/.test(index) || Number(index) >= roots) {
    throw unsafe(`entry ${show} names no declared path of this application`);
  }
  const parts = all.slice(2);
  if (parts.length > limits.maxDepth)
    throw unsafe(`entry ${show} is nested deeper than ${limits.maxDepth}`);
  for (const p of parts) {
    if (p === "" || p === "." || p === "..")
      throw unsafe(`entry ${show} has an empty, '.' or '..' component`);
    if (Buffer.byteLength(p) > limits.maxNameBytes)
      throw unsafe(`entry ${show} has a name longer than ${limits.maxNameBytes} bytes`);
  }
  return { root: Number(index), parts };
}

/** Symlink targets are restored as text, never followed; they must still be sane text. */
export function checkLinkTarget(path: string, target: string, limits: RestoreLimits): void {
  if (target === "") throw unsafe(`symlink ${JSON.stringify(path)} has an empty target`);
  if (CONTROL.test(target))
    throw unsafe(`symlink ${JSON.stringify(path)} has a control character in its target`);
  if (Buffer.byteLength(target) > limits.maxPathBytes)
    throw unsafe(`symlink ${JSON.stringify(path)} has too long a target`);
}
