/**
 * The structure-aware archive fuzzer. A real archive of the target application (made by
 * ferryd itself) is parsed into entries; fast-check generates lists of entry-level
 * mutations (paths and link targets from a dictionary of hostile fragments, types, modes,
 * times, duplicates, reordering, deletions, insertions, pax records, single header bytes,
 * manifest fields); the result is serialised again with every header checksum and the end
 * record (entry count, payload length, SHA-256) recomputed, so that mutations get past the
 * integrity checks and reach the restore logic. A few mutations break the framing on
 * purpose (truncation, trailing data, a wrong end record) to keep the reader honest too.
 */
import { createHash } from "node:crypto";
import { request } from "node:http";
import fc from "fast-check";
import { END_PATH, MANIFEST_PATH } from "../src/api/types.js";
import { ArchiveParser } from "../src/core/archive/reader.js";
import {
  BLOCK,
  type EntryType,
  encodeHeader,
  padding,
  type TarHeader,
} from "../src/core/archive/tar.js";
import type { Target } from "./target.js";

export interface Entry {
  header: TarHeader;
  body: Buffer;
  /** Extra pax records put in front of the entry (keys and values as given). */
  pax?: [string, string][];
  /** One byte of the ustar block overwritten (checksum fixed unless inside it). */
  poke?: [number, number];
}

export interface Model {
  manifest: Record<string, unknown>;
  entries: Entry[];
  framing?: "truncate" | "trailing" | "wrong-count" | "wrong-sha" | "no-end";
  cut?: number;
}

/** Reads an archive into the model (the seed). */
export async function parseArchive(buf: Buffer): Promise<Model> {
  const entries: Entry[] = [];
  let current: Entry | undefined;
  const chunks: Buffer[] = [];
  const parser = new ArchiveParser({
    entry(h) {
      current = { header: { ...h }, body: Buffer.alloc(0) };
      chunks.length = 0;
    },
    data(c) {
      chunks.push(Buffer.from(c));
    },
    entryEnd() {
      if (current === undefined) return;
      current.body = Buffer.concat(chunks);
      entries.push(current);
      current = undefined;
    },
  });
  await parser.write(buf);
  parser.finish();
  return { manifest: { ...(parser.manifest as Record<string, unknown>) }, entries };
}

function checksum(block: Buffer): void {
  block.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += block[i] as number;
  block.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
}

function paxRecord(key: string, value: string): Buffer {
  const body = Buffer.from(` ${key}=${value}\n`);
  let len = body.length + String(body.length).length;
  if (String(len).length + body.length !== len) len = String(len + 1).length + body.length;
  return Buffer.concat([Buffer.from(String(len)), body]);
}

function metaEntry(path: string, body: Buffer): Buffer {
  const h = encodeHeader({
    path,
    type: "file",
    mode: 0o644,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    size: body.length,
    mtimeSec: 1_700_000_000,
    mtimeNsec: 0,
    linkpath: "",
  });
  return Buffer.concat([h, body, Buffer.alloc(padding(body.length))]);
}

function encodeEntry(e: Entry): Buffer {
  const parts: Buffer[] = [];
  if (e.pax !== undefined && e.pax.length > 0) {
    const body = Buffer.concat(e.pax.map(([k, v]) => paxRecord(k, v)));
    const x = Buffer.from(
      encodeHeader({
        ...e.header,
        path: "PaxHeaders/x",
        type: "file",
        size: body.length,
        linkpath: "",
        mtimeNsec: 0,
      }).subarray(0, BLOCK),
    );
    x.write("x", 156, "latin1");
    checksum(x);
    parts.push(x, body, Buffer.alloc(padding(body.length)));
  }
  const h = Buffer.from(encodeHeader(e.header));
  if (e.poke !== undefined) {
    const block = h.subarray(h.length - BLOCK);
    const [off, byte] = e.poke;
    block[off] = byte;
    if (off < 148 || off >= 156) checksum(block);
  }
  parts.push(h, e.body, Buffer.alloc(padding(e.body.length)));
  return Buffer.concat(parts);
}

/** Serialises a model, recomputing checksums and the end record. */
export function serialise(m: Model): Buffer {
  const manifest = metaEntry(MANIFEST_PATH, Buffer.from(`${JSON.stringify(m.manifest)}\n`));
  const payload = Buffer.concat(m.entries.map(encodeEntry));
  const end = {
    entries: m.entries.length + (m.framing === "wrong-count" ? 1 : 0),
    payload_bytes: payload.length,
    sha256: createHash("sha256")
      .update(m.framing === "wrong-sha" ? Buffer.concat([payload, Buffer.from("x")]) : payload)
      .digest("hex"),
  };
  const tail =
    m.framing === "no-end"
      ? Buffer.alloc(2 * BLOCK)
      : Buffer.concat([
          metaEntry(END_PATH, Buffer.from(`${JSON.stringify(end)}\n`)),
          Buffer.alloc(2 * BLOCK),
        ]);
  let out = Buffer.concat([manifest, payload, tail]);
  if (m.framing === "truncate") out = out.subarray(0, Math.floor(out.length * (m.cut ?? 0.5)));
  if (m.framing === "trailing") out = Buffer.concat([out, Buffer.from("trailing garbage")]);
  return out;
}

// --- arbitraries ------------------------------------------------------------------------

/** Path fragments that broke extractors before, plus ordinary ones. */
function fragments(t: Target): string[] {
  return [
    "a",
    "sub",
    "deeper",
    "a.txt",
    "x",
    "..",
    ".",
    "",
    "/",
    "//",
    "data",
    "0",
    "1",
    "00",
    "-1",
    "\ufeff",
    "\ufeffx",
    "\u200b",
    "x\u0000y",
    "\u001b[2J",
    "\n",
    "é",
    "e\u0301",
    "\ud800",
    "%2e%2e",
    "..\\x",
    "a".repeat(255),
    "b".repeat(256),
    "c".repeat(120),
    t.outside,
    t.live,
    t.appParent,
    `../../outside/sentinel`,
    ".notes.ferry-restore-0",
    "/etc/passwd",
    "/proc/self/root",
  ];
}

function pathArb(t: Target): fc.Arbitrary<string> {
  const frag = fc.oneof(
    { weight: 5, arbitrary: fc.constantFrom(...fragments(t)) },
    { weight: 1, arbitrary: fc.string({ unit: "binary", maxLength: 12 }) },
  );
  return fc.oneof(
    fc
      .array(frag, { minLength: 0, maxLength: 6 })
      .map((parts) => ["data", "0", ...parts].join("/")),
    fc
      .tuple(fc.array(frag, { minLength: 1, maxLength: 4 }), fc.boolean())
      .map(([parts, slash]) => parts.join("/") + (slash ? "/" : "")),
    fc.integer({ min: 1, max: 300 }).map((n) => `data/0/${"d/".repeat(n)}f`),
  );
}

const TYPES: EntryType[] = ["file", "dir", "symlink", "hardlink", "char", "block", "fifo"];

function headerArb(t: Target): fc.Arbitrary<TarHeader> {
  return fc.record({
    path: pathArb(t),
    type: fc.constantFrom(...TYPES),
    mode: fc.oneof(
      fc.constantFrom(0o755, 0o644, 0o4755, 0o2755, 0o7777, 0o000, 0o1777),
      fc.nat(0o7777),
    ),
    uid: fc.oneof(fc.constant(0), fc.nat(70_000), fc.constant(2 ** 32 - 1)),
    gid: fc.oneof(fc.constant(0), fc.nat(70_000)),
    uname: fc.constantFrom("", "root", "ü".repeat(40)),
    gname: fc.constantFrom("", "root", "wheel"),
    size: fc.constant(0),
    mtimeSec: fc.oneof(fc.integer({ min: -(2 ** 34), max: 2 ** 34 }), fc.constant(0)),
    mtimeNsec: fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 999_999_999 })),
    linkpath: fc.oneof(fc.constant(""), pathArb(t)),
  });
}

type Mutation =
  | { kind: "set-path"; at: number; path: string }
  | { kind: "set-link"; at: number; link: string }
  | { kind: "set-type"; at: number; type: EntryType }
  | { kind: "set-mode"; at: number; mode: number }
  | { kind: "set-time"; at: number; sec: number; nsec: number }
  | { kind: "body"; at: number; body: Uint8Array }
  | { kind: "duplicate"; at: number; to: number }
  | { kind: "delete"; at: number }
  | { kind: "move"; at: number; to: number }
  | { kind: "insert"; to: number; header: TarHeader; body: Uint8Array }
  | { kind: "pax"; at: number; records: [string, string][] }
  | { kind: "poke"; at: number; offset: number; byte: number }
  | { kind: "manifest"; key: string; value: unknown }
  | { kind: "framing"; framing: NonNullable<Model["framing"]>; cut: number };

export function mutationArb(t: Target): fc.Arbitrary<Mutation[]> {
  const at = fc.nat(1000);
  const body = fc.uint8Array({ maxLength: 2048 });
  const paxKey = fc.constantFrom(
    "path",
    "linkpath",
    "size",
    "mtime",
    "uid",
    "gid",
    "uname",
    "atime",
    "hdrcharset",
    "GNU.sparse.size",
    "SCHILY.xattr.security.capability",
    "LIBARCHIVE.xattr.user.x",
    "comment",
    "",
    "=",
  );
  const paxValue = fc.oneof(
    pathArb(t),
    fc.constantFrom("-1.5", "1e9", "0x10", "99999999999999999999", "-0", "", " ", "\u0000"),
    fc.string({ maxLength: 20 }),
  );
  const one: fc.Arbitrary<Mutation> = fc.oneof(
    {
      weight: 6,
      arbitrary: fc.record({ kind: fc.constant("set-path" as const), at, path: pathArb(t) }),
    },
    {
      weight: 3,
      arbitrary: fc.record({ kind: fc.constant("set-link" as const), at, link: pathArb(t) }),
    },
    {
      weight: 3,
      arbitrary: fc.record({
        kind: fc.constant("set-type" as const),
        at,
        type: fc.constantFrom(...TYPES),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({ kind: fc.constant("set-mode" as const), at, mode: fc.nat(0o7777) }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("set-time" as const),
        at,
        sec: fc.integer({ min: -(2 ** 40), max: 2 ** 40 }),
        nsec: fc.integer({ min: 0, max: 999_999_999 }),
      }),
    },
    { weight: 1, arbitrary: fc.record({ kind: fc.constant("body" as const), at, body }) },
    { weight: 3, arbitrary: fc.record({ kind: fc.constant("duplicate" as const), at, to: at }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant("delete" as const), at }) },
    { weight: 2, arbitrary: fc.record({ kind: fc.constant("move" as const), at, to: at }) },
    {
      weight: 5,
      arbitrary: fc.record({
        kind: fc.constant("insert" as const),
        to: at,
        header: headerArb(t),
        body,
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant("pax" as const),
        at,
        records: fc.array(fc.tuple(paxKey, paxValue), { minLength: 1, maxLength: 3 }),
      }),
    },
    {
      weight: 2,
      arbitrary: fc.record({
        kind: fc.constant("poke" as const),
        at,
        offset: fc.nat(BLOCK - 1),
        byte: fc.nat(255),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("manifest" as const),
        key: fc.constantFrom("paths", "app", "driver", "format", "driver_version"),
        value: fc.oneof(
          fc.constantFrom(
            ["/etc"],
            [t.outside],
            [`${t.live}/`],
            [t.live, t.live],
            [],
            "notes",
            "other",
            "command",
            1,
            2,
            null,
          ),
          fc.jsonValue({ maxDepth: 2 }),
        ),
      }),
    },
    {
      weight: 1,
      arbitrary: fc.record({
        kind: fc.constant("framing" as const),
        framing: fc.constantFrom("truncate", "trailing", "wrong-count", "wrong-sha", "no-end"),
        cut: fc.double({ min: 0, max: 1, noNaN: true }),
      }),
    },
  );
  return fc.array(one, { minLength: 1, maxLength: 5 });
}

/** Applies mutations to a copy of the seed. */
export function mutate(seed: Model, muts: Mutation[]): Model {
  const m: Model = {
    manifest: { ...seed.manifest },
    entries: seed.entries.map((e) => ({ ...e, header: { ...e.header } })),
  };
  const pick = (i: number) =>
    m.entries.length === 0 ? undefined : m.entries[i % m.entries.length];
  for (const mu of muts) {
    switch (mu.kind) {
      case "set-path": {
        const e = pick(mu.at);
        if (e) e.header.path = mu.path;
        break;
      }
      case "set-link": {
        const e = pick(mu.at);
        if (e) e.header.linkpath = mu.link;
        break;
      }
      case "set-type": {
        const e = pick(mu.at);
        if (e) {
          e.header.type = mu.type;
          if (mu.type !== "file") {
            e.body = Buffer.alloc(0);
            e.header.size = 0;
          }
        }
        break;
      }
      case "set-mode": {
        const e = pick(mu.at);
        if (e) e.header.mode = mu.mode;
        break;
      }
      case "set-time": {
        const e = pick(mu.at);
        if (e) {
          e.header.mtimeSec = mu.sec;
          e.header.mtimeNsec = mu.nsec;
        }
        break;
      }
      case "body": {
        const e = pick(mu.at);
        if (e && e.header.type === "file") {
          e.body = Buffer.from(mu.body);
          e.header.size = e.body.length;
        }
        break;
      }
      case "duplicate": {
        const e = pick(mu.at);
        if (e)
          m.entries.splice(mu.to % (m.entries.length + 1), 0, { ...e, header: { ...e.header } });
        break;
      }
      case "delete":
        if (m.entries.length > 0) m.entries.splice(mu.at % m.entries.length, 1);
        break;
      case "move": {
        if (m.entries.length === 0) break;
        const [e] = m.entries.splice(mu.at % m.entries.length, 1);
        if (e) m.entries.splice(mu.to % (m.entries.length + 1), 0, e);
        break;
      }
      case "insert": {
        const body = mu.header.type === "file" ? Buffer.from(mu.body) : Buffer.alloc(0);
        m.entries.splice(mu.to % (m.entries.length + 1), 0, {
          header: { ...mu.header, size: body.length },
          body,
        });
        break;
      }
      case "pax": {
        const e = pick(mu.at);
        if (e) e.pax = [...(e.pax ?? []), ...mu.records];
        break;
      }
      case "poke": {
        const e = pick(mu.at);
        if (e) e.poke = [mu.offset, mu.byte];
        break;
      }
      case "manifest":
        m.manifest[mu.key] = mu.value;
        break;
      case "framing":
        m.framing = mu.framing;
        m.cut = mu.cut;
        break;
    }
  }
  return m;
}

export interface PostResult {
  status: number;
  code?: string;
}

/** POSTs an archive as a restore and waits for the answer (bounded by `ms`). */
export function postRestore(socket: string, body: Buffer, ms = 60_000): Promise<PostResult> {
  return new Promise((resolve) => {
    const req = request(
      {
        socketPath: socket,
        path: "/v1/apps/notes/restore",
        method: "POST",
        headers: {
          Host: "ferry",
          "Content-Type": "application/x-tar",
          "Content-Length": body.length,
        },
        agent: false,
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          if (text.length < 65536) text += d;
        });
        res.on("end", () => {
          let code: string | undefined;
          try {
            code = (JSON.parse(text) as { error?: { code?: string } }).error?.code;
          } catch {
            code = undefined;
          }
          resolve({ status: res.statusCode ?? 0, code });
        });
        res.on("error", () => resolve({ status: res.statusCode ?? 0, code: "RESPONSE_CUT" }));
      },
    );
    const t = setTimeout(() => {
      req.destroy();
      resolve({ status: 0, code: "NO_ANSWER" });
    }, ms);
    req.on("close", () => clearTimeout(t));
    req.on("error", () => resolve({ status: 0, code: "CONNECTION_ERROR" }));
    req.end(body);
  });
}

/** POST /v1/apps/notes/backup: the whole archive, as ferryd makes it. */
export function fetchBackup(socket: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        socketPath: socket,
        path: "/v1/apps/notes/backup",
        method: "POST",
        headers: { Host: "ferry" },
        agent: false,
      },
      (res) => {
        const parts: Buffer[] = [];
        res.on("data", (d: Buffer) => parts.push(d));
        res.on("end", () =>
          res.statusCode === 200
            ? resolve(Buffer.concat(parts))
            : reject(new Error(`backup: HTTP ${res.statusCode}: ${Buffer.concat(parts)}`)),
        );
      },
    );
    req.on("error", reject);
    req.end();
  });
}
