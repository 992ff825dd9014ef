/**
 * POSIX pax (ustar + extended header) encoding and decoding of single tar headers.
 *
 * Ferry writes its own tar headers instead of using a tar library because the archive's
 * end record must hash an exact byte range of the stream (docs/design.md, "A backup"),
 * and because the reader sits on a privilege boundary: it must enforce size limits on
 * every field before allocating, and reject rather than "repair" anything odd. The
 * output is checked against GNU tar and Python's tarfile in the tests.
 *
 * Layout of a ustar header block (512 bytes): name[100] mode[8] uid[8] gid[8] size[12]
 * mtime[12] chksum[8] typeflag[1] linkname[100] magic[6] version[2] uname[32] gname[32]
 * devmajor[8] devminor[8] prefix[155].
 *
 * Longer than 300 lines on purpose: encoding and decoding of a header are kept side by
 * side, so a field's octal, pax and fallback forms are read (and fixed) in one place.
 */

import { SINCE_TOKEN } from "../../api/types.js";

export const BLOCK = 512;

export type EntryType = "file" | "dir" | "symlink" | "hardlink" | "char" | "block" | "fifo";

export interface TarHeader {
  path: string;
  type: EntryType;
  mode: number; // permission bits incl. set-uid/set-gid/sticky, no type bits
  uid: number;
  gid: number;
  uname: string;
  gname: string;
  size: number; // body length (0 for everything but files)
  mtimeSec: number;
  mtimeNsec: number;
  linkpath: string; // symlink target or hardlink target path ("" otherwise)
  /**
   * Only in a delta archive (`POST /v1/apps/{app}/backup?since=TOKEN`): this regular file
   * is unchanged since the archive TOKEN names, and its data is left out (`size` is 0).
   * Written as the pax records `FERRY.unchanged`, `FERRY.size` and `FERRY.position`.
   */
  unchanged?: Unchanged;
}

export interface Unchanged {
  /** The token of the earlier archive (its end record's `token`). */
  since: string;
  /** The file's real size, whose bytes this entry leaves out. */
  size: number;
  /** The file's entry in that archive: 0-based, counting payload entries only. */
  position: number;
}

/** What `fileEntryHeader` lets a caller choose; the rest is fixed. */
export interface FileEntryOptions {
  /** Permission bits; 0600 unless given. */
  mode?: number;
  /** Owner; root (0, 0, no names) unless given. */
  uid?: number;
  gid?: number;
  uname?: string;
  gname?: string;
  /** Whole seconds; now unless given. */
  mtimeSec?: number;
}

/**
 * The header of a regular file entry that Ferry makes itself (metadata, dump parts,
 * spooled files): no link, whole-second mtime.
 */
export function fileEntryHeader(path: string, size: number, o: FileEntryOptions = {}): TarHeader {
  return {
    path,
    type: "file",
    mode: o.mode ?? 0o600,
    uid: o.uid ?? 0,
    gid: o.gid ?? 0,
    uname: o.uname ?? "",
    gname: o.gname ?? "",
    size,
    mtimeSec: o.mtimeSec ?? Math.floor(Date.now() / 1000),
    mtimeNsec: 0,
    linkpath: "",
  };
}

const TYPEFLAG: Record<EntryType, string> = {
  file: "0",
  hardlink: "1",
  symlink: "2",
  char: "3",
  block: "4",
  dir: "5",
  fifo: "6",
};

const MAX_OCTAL_7 = 0o7777777;
const MAX_OCTAL_11 = 0o77777777777;

export function padding(size: number): number {
  const r = size % BLOCK;
  return r === 0 ? 0 : BLOCK - r;
}

function isPlainAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e) return false;
  }
  return true;
}

function writeString(block: Buffer, off: number, len: number, s: string): void {
  block.write(s, off, len, "utf8");
}

function writeOctal(block: Buffer, off: number, len: number, n: number): void {
  const s = Math.max(0, Math.floor(n))
    .toString(8)
    .padStart(len - 1, "0");
  block.write(s.slice(-(len - 1)), off, len - 1, "ascii");
  block[off + len - 1] = 0;
}

/** Splits a path into ustar prefix and name, or undefined if it does not fit. */
function splitUstarPath(path: string): [string, string] | undefined {
  if (Buffer.byteLength(path) <= 100) return ["", path];
  for (let i = path.length - 1; i > 0; i--) {
    if (path[i] !== "/") continue;
    const prefix = path.slice(0, i);
    const name = path.slice(i + 1);
    if (prefix.length <= 155 && name.length > 0 && name.length <= 100) return [prefix, name];
    if (prefix.length <= 155) return undefined;
  }
  return undefined;
}

function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body);
  let len = bodyLen + String(bodyLen).length;
  if (String(len).length + bodyLen !== len) len = String(len + 1).length + bodyLen;
  return `${len}${body}`;
}

function ustarBlock(h: TarHeader, typeflag: string, name: [string, string], linkpath: string) {
  // From Node's shared slab (allocUnsafe under 4 KiB), zeroed here: a zero-filled
  // Buffer.alloc is a separate allocation for every header of every file.
  const b = Buffer.allocUnsafe(BLOCK).fill(0);
  writeString(b, 0, 100, name[1]);
  writeOctal(b, 100, 8, h.mode & 0o7777);
  writeOctal(b, 108, 8, h.uid > MAX_OCTAL_7 ? 0 : h.uid);
  writeOctal(b, 116, 8, h.gid > MAX_OCTAL_7 ? 0 : h.gid);
  writeOctal(b, 124, 12, h.size > MAX_OCTAL_11 ? 0 : h.size);
  writeOctal(b, 136, 12, h.mtimeSec < 0 || h.mtimeSec > MAX_OCTAL_11 ? 0 : h.mtimeSec);
  b.write(typeflag, 156, 1, "ascii");
  writeString(b, 157, 100, linkpath);
  b.write("ustar\u000000", 257, 8, "ascii");
  if (isPlainAscii(h.uname) && h.uname.length < 32) writeString(b, 265, 32, h.uname);
  if (isPlainAscii(h.gname) && h.gname.length < 32) writeString(b, 297, 32, h.gname);
  writeOctal(b, 329, 8, 0);
  writeOctal(b, 337, 8, 0);
  writeString(b, 345, 155, name[0]);
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i] as number;
  writeOctal(b, 148, 7, sum);
  b[155] = 0x20;
  return b;
}

/**
 * The header bytes of one entry: a pax extended header when any field needs it, then the
 * ustar block. Fields that do not fit ustar (long or non-ASCII names, big ids and sizes,
 * sub-second times) go into the pax header, which GNU tar and every modern reader honour.
 */
export function encodeHeader(h: TarHeader): Buffer {
  const records: string[] = [];
  const asciiPath = isPlainAscii(h.path);
  const split = asciiPath ? splitUstarPath(h.path) : undefined;
  if (split === undefined) records.push(paxRecord("path", h.path));
  const link = h.linkpath;
  if (link !== "" && (!isPlainAscii(link) || Buffer.byteLength(link) > 100)) {
    records.push(paxRecord("linkpath", link));
  }
  if (h.size > MAX_OCTAL_11) records.push(paxRecord("size", String(h.size)));
  if (h.uid > MAX_OCTAL_7) records.push(paxRecord("uid", String(h.uid)));
  if (h.gid > MAX_OCTAL_7) records.push(paxRecord("gid", String(h.gid)));
  if (!isPlainAscii(h.uname) || h.uname.length >= 32) records.push(paxRecord("uname", h.uname));
  if (!isPlainAscii(h.gname) || h.gname.length >= 32) records.push(paxRecord("gname", h.gname));
  if (h.mtimeNsec !== 0 || h.mtimeSec < 0 || h.mtimeSec > MAX_OCTAL_11) {
    records.push(paxRecord("mtime", formatPaxTime(h.mtimeSec, h.mtimeNsec)));
  }
  if (h.unchanged !== undefined) {
    if (h.type !== "file" || h.size !== 0) throw new Error("an unchanged entry carries no data");
    records.push(paxRecord("FERRY.unchanged", h.unchanged.since));
    records.push(paxRecord("FERRY.size", String(h.unchanged.size)));
    records.push(paxRecord("FERRY.position", String(h.unchanged.position)));
  }
  const fallbackName: [string, string] = split ?? ["", asciiFallback(h.path, 100)];
  const fallbackLink = isPlainAscii(link) && link.length <= 100 ? link : asciiFallback(link, 100);
  const main = ustarBlock(h, TYPEFLAG[h.type], fallbackName, fallbackLink);
  if (records.length === 0) return main;
  const body = Buffer.from(records.join(""), "utf8");
  const paxHeader = fileEntryHeader(h.path, body.length, { mode: 0o644, mtimeSec: h.mtimeSec });
  const base = asciiFallback(h.path.split("/").filter(Boolean).pop() ?? "entry", 80);
  const paxBlock = ustarBlock(paxHeader, "x", ["", `PaxHeaders/${base}`], "");
  return Buffer.concat([paxBlock, body, Buffer.alloc(padding(body.length)), main]);
}

function asciiFallback(s: string, max: number): string {
  let out = "";
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    out += c >= 0x20 && c <= 0x7e && ch.length === 1 ? ch : "_";
    if (out.length >= max) break;
  }
  return out.slice(0, max);
}

// --- decoding ---------------------------------------------------------------------------

export class TarFormatError extends Error {}

// ignoreBOM: a leading U+FEFF is part of a name, not a byte-order mark to strip.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function readCString(b: Buffer, off: number, len: number): string {
  let end = off;
  let ascii = true;
  while (end < off + len && b[end] !== 0) {
    if ((b[end] as number) >= 0x80) ascii = false;
    end++;
  }
  // Plain ASCII (nearly every field) needs no decoder; anything else must be valid UTF-8.
  if (ascii) return end === off ? "" : b.toString("latin1", off, end);
  try {
    return utf8.decode(b.subarray(off, end));
  } catch {
    throw new TarFormatError("a header field is not valid UTF-8");
  }
}

function readNumber(b: Buffer, off: number, len: number, field: string): number {
  const first = b[off] as number;
  if (first & 0x80) {
    // The checksum is always octal: it covers the block, it never needs base-256.
    if (field === "checksum") throw new TarFormatError("checksum is not an octal number");
    // GNU base-256: big-endian, top bit of the first byte set; negative values refused.
    if (first & 0x40) throw new TarFormatError(`negative ${field}`);
    let n = first & 0x3f;
    for (let i = 1; i < len; i++) {
      n = n * 256 + (b[off + i] as number);
      if (n > Number.MAX_SAFE_INTEGER) throw new TarFormatError(`${field} is too large`);
    }
    return n;
  }
  // Octal: optional leading spaces, octal digits, then only spaces and NULs. Every byte is
  // checked as a byte ("ascii" decoding would clear the top bit and turn 0xb6 into "6").
  let i = off;
  const end = off + len;
  while (i < end && b[i] === 0x20) i++;
  let n = 0;
  let digits = 0;
  for (; i < end; i++) {
    const c = b[i] as number;
    if (c < 0x30 || c > 0x37) break;
    n = n * 8 + (c - 0x30);
    digits++;
  }
  for (; i < end; i++) {
    const c = b[i] as number;
    if (c !== 0x20 && c !== 0) throw new TarFormatError(`${field} is not an octal number`);
  }
  if (digits > 0 && !Number.isSafeInteger(n)) throw new TarFormatError(`${field} is too large`);
  return n;
}

export function isZeroBlock(b: Buffer): boolean {
  for (let i = 0; i < BLOCK; i++) if (b[i] !== 0) return false;
  return true;
}

export interface RawHeader {
  typeflag: string;
  name: string;
  linkname: string;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  uname: string;
  gname: string;
}

/** Decodes and checksums one ustar block. */
export function decodeBlock(b: Buffer): RawHeader {
  const stored = readNumber(b, 148, 8, "checksum");
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : (b[i] as number);
  if (sum !== stored) throw new TarFormatError("header checksum mismatch");
  const magic = b.toString("ascii", 257, 263);
  if (magic !== "ustar\u0000" && magic !== "ustar ") {
    throw new TarFormatError("not a ustar/pax header");
  }
  const prefix = magic === "ustar\u0000" ? readCString(b, 345, 155) : "";
  const name = readCString(b, 0, 100);
  return {
    typeflag: String.fromCharCode(b[156] as number),
    name: prefix === "" ? name : `${prefix}/${name}`,
    linkname: readCString(b, 157, 100),
    mode: readNumber(b, 100, 8, "mode"),
    uid: readNumber(b, 108, 8, "uid"),
    gid: readNumber(b, 116, 8, "gid"),
    size: readNumber(b, 124, 12, "size"),
    mtime: readNumber(b, 136, 12, "mtime"),
    uname: readCString(b, 265, 32),
    gname: readCString(b, 297, 32),
  };
}

/** Parses pax extended header records ("LEN key=value\n"). */
export function parsePax(body: Buffer): Map<string, string> {
  const out = new Map<string, string>();
  let off = 0;
  while (off < body.length) {
    let sp = off;
    while (sp < body.length && body[sp] !== 0x20) sp++;
    const lenText = body.toString("ascii", off, sp);
    if (!/^[1-9][0-9]{0,8}$/.test(lenText)) throw new TarFormatError("bad pax record length");
    const len = Number(lenText);
    const end = off + len;
    if (end > body.length || body[end - 1] !== 0x0a) throw new TarFormatError("bad pax record");
    let record: string;
    try {
      record = utf8.decode(body.subarray(sp + 1, end - 1));
    } catch {
      throw new TarFormatError("pax record is not valid UTF-8");
    }
    const eq = record.indexOf("=");
    if (eq <= 0) throw new TarFormatError("bad pax record");
    out.set(record.slice(0, eq), record.slice(eq + 1));
    off = end;
  }
  return out;
}

const TYPES: Record<string, EntryType> = {
  "0": "file",
  "\u0000": "file",
  "7": "file",
  "1": "hardlink",
  "2": "symlink",
  "3": "char",
  "4": "block",
  "5": "dir",
  "6": "fifo",
};

function paxInt(v: string, field: string): number {
  if (!/^[0-9]{1,16}$/.test(v)) throw new TarFormatError(`bad pax ${field}`);
  const n = Number(v);
  if (!Number.isSafeInteger(n)) throw new TarFormatError(`pax ${field} is too large`);
  return n;
}

/**
 * A pax time ("-1.5") as a timespec: whole seconds rounded down and nanoseconds in
 * [0, 1e9), so -1.5 s is { sec: -2, nsec: 500000000 }. Digits past nanoseconds are dropped
 * (towards zero, as GNU tar does).
 */
export function parsePaxTime(v: string): { sec: number; nsec: number } {
  const m = /^(-?)([0-9]{1,16})(?:\.([0-9]{1,9})[0-9]*)?$/.exec(v);
  if (m === null) throw new TarFormatError("bad pax mtime");
  const whole = Number(m[2]);
  const frac = m[3] === undefined ? 0 : Number(m[3].padEnd(9, "0"));
  if (!Number.isSafeInteger(whole)) throw new TarFormatError("pax mtime is too large");
  if (m[1] === "") return { sec: whole, nsec: frac };
  return frac === 0 ? { sec: 0 - whole + 0, nsec: 0 } : { sec: -whole - 1, nsec: 1e9 - frac };
}

/** The pax text of a timespec: the inverse of parsePaxTime, exact to the nanosecond. */
export function formatPaxTime(sec: number, nsec: number): string {
  if (nsec === 0) return String(sec);
  if (sec >= 0) return `${sec}.${String(nsec).padStart(9, "0")}`;
  return `-${-(sec + 1)}.${String(1e9 - nsec).padStart(9, "0")}`;
}

/** Combines a ustar block with the pax records that preceded it into one header. */
export function resolveHeader(raw: RawHeader, pax: Map<string, string> | undefined): TarHeader {
  const type = TYPES[raw.typeflag];
  if (type === undefined) {
    throw new TarFormatError(`unsupported entry type ${JSON.stringify(raw.typeflag)}`);
  }
  const h: TarHeader = {
    path: raw.name,
    type,
    mode: raw.mode & 0o7777,
    uid: raw.uid,
    gid: raw.gid,
    uname: raw.uname,
    gname: raw.gname,
    size: raw.size,
    mtimeSec: raw.mtime,
    mtimeNsec: 0,
    linkpath: raw.linkname,
  };
  let ferry: Map<string, string> | undefined;
  if (pax !== undefined) {
    for (const [k, v] of pax) {
      if (k.startsWith("FERRY.")) {
        ferry ??= new Map();
        ferry.set(k, v);
        continue;
      }
      switch (k) {
        case "path":
          h.path = v;
          break;
        case "linkpath":
          h.linkpath = v;
          break;
        case "size":
          h.size = paxInt(v, k);
          break;
        case "uid":
          h.uid = paxInt(v, k);
          break;
        case "gid":
          h.gid = paxInt(v, k);
          break;
        case "uname":
          h.uname = v;
          break;
        case "gname":
          h.gname = v;
          break;
        case "mtime": {
          const t = parsePaxTime(v);
          h.mtimeSec = t.sec;
          h.mtimeNsec = t.nsec;
          break;
        }
        default:
          // atime, ctime, comment, SCHILY.*, LIBARCHIVE.* and friends carry nothing Ferry uses.
          break;
      }
    }
  }
  if (type !== "file" && h.size !== 0) throw new TarFormatError("a non-file entry carries data");
  if (ferry !== undefined) h.unchanged = resolveUnchanged(h, ferry);
  return h;
}

/**
 * Ferry's own pax records: only the three of an unchanged entry, all three together, on a
 * regular file that carries no data. Whether the archive may hold unchanged entries at
 * all is the reader's business (a delta manifest, the same token).
 */
function resolveUnchanged(h: TarHeader, records: Map<string, string>): Unchanged {
  for (const k of records.keys()) {
    if (k !== "FERRY.unchanged" && k !== "FERRY.size" && k !== "FERRY.position") {
      throw new TarFormatError(`unknown Ferry pax record ${JSON.stringify(k)}`);
    }
  }
  const since = records.get("FERRY.unchanged");
  const size = records.get("FERRY.size");
  const position = records.get("FERRY.position");
  if (since === undefined || size === undefined || position === undefined) {
    throw new TarFormatError(
      "an unchanged entry needs FERRY.unchanged, FERRY.size and FERRY.position",
    );
  }
  if (!SINCE_TOKEN.test(since)) throw new TarFormatError("malformed FERRY.unchanged token");
  if (h.type !== "file" || h.size !== 0) {
    throw new TarFormatError("an unchanged entry must be a regular file without data");
  }
  return { since, size: paxInt(size, "FERRY.size"), position: paxInt(position, "FERRY.position") };
}
