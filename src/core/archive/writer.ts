/**
 * Serialises a Ferry archive: manifest entry, payload entries, end record, end-of-archive
 * blocks. The SHA-256 and length in the end record cover the exact bytes from the first
 * byte after the manifest entry up to the first byte of the end record's header, so the
 * hash is computed on the bytes as they are produced, not re-derived.
 *
 * Output is coalesced into chunks of at least COALESCE bytes so that thousands of small
 * files do not become thousands of socket writes.
 */
import { createHash } from "node:crypto";
import { ARCHIVE_FORMAT, END_PATH, type EndRecord, MANIFEST_PATH } from "../../api/types.js";
import { FerryError } from "../errors.js";
import { BLOCK, encodeHeader, padding, type TarHeader } from "./tar.js";

export interface ArchiveEntry {
  header: TarHeader;
  /** Exactly header.size bytes for files; absent for everything else. */
  body?: Buffer | AsyncIterable<Buffer>;
}

const COALESCE = 256 * 1024;
const ZEROS = Buffer.alloc(BLOCK * 2);

function metaHeader(path: string, size: number, mtimeSec: number): TarHeader {
  return {
    path,
    type: "file",
    mode: 0o644,
    uid: 0,
    gid: 0,
    uname: "",
    gname: "",
    size,
    mtimeSec,
    mtimeNsec: 0,
    linkpath: "",
  };
}

/**
 * Yields the archive's bytes. `warnings` may be appended to while entries are produced;
 * they end up in the end record. `complete`, if given, is called once after the last
 * entry, just before the end record is made, and may name a `token` for it. The
 * generator's return value is the end record.
 */
export async function* writeArchive(
  manifest: Record<string, unknown>,
  entries: AsyncIterable<ArchiveEntry>,
  warnings: string[] = [],
  complete?: () => { token?: string | undefined },
): AsyncGenerator<Buffer, EndRecord, undefined> {
  const now = Math.floor(Date.now() / 1000);
  const manifestBody = Buffer.from(`${JSON.stringify({ ...manifest, format: ARCHIVE_FORMAT })}\n`);
  let pending: Buffer[] = [
    encodeHeader(metaHeader(MANIFEST_PATH, manifestBody.length, now)),
    manifestBody,
    ZEROS.subarray(0, padding(manifestBody.length)),
  ];
  let pendingBytes = 0;
  const hash = createHash("sha256");
  let payloadBytes = 0;
  let count = 0;

  const take = (): Buffer => {
    const out = pending.length === 1 ? (pending[0] as Buffer) : Buffer.concat(pending);
    pending = [];
    pendingBytes = 0;
    return out;
  };
  const payload = (b: Buffer): void => {
    if (b.length === 0) return;
    hash.update(b);
    payloadBytes += b.length;
    pending.push(b);
    pendingBytes += b.length;
  };

  for await (const entry of entries) {
    const h = entry.header;
    payload(encodeHeader(h));
    count++;
    let written = 0;
    if (entry.body !== undefined) {
      const chunks = Buffer.isBuffer(entry.body) ? [entry.body] : entry.body;
      for await (const chunk of chunks) {
        written += chunk.length;
        if (written > h.size) break;
        payload(chunk);
        if (pendingBytes >= COALESCE) yield take();
      }
    }
    if (written !== h.size) {
      throw new FerryError(
        "INTERNAL",
        `archive entry ${JSON.stringify(h.path)}: body has ${written} bytes, header says ${h.size}`,
      );
    }
    payload(ZEROS.subarray(0, padding(h.size)));
    if (pendingBytes >= COALESCE) yield take();
  }

  const token = complete?.().token;
  const end: EndRecord = {
    entries: count,
    payload_bytes: payloadBytes,
    sha256: hash.digest("hex"),
  };
  if (warnings.length > 0) end.warnings = [...warnings];
  if (token !== undefined) end.token = token;
  const endBody = Buffer.from(`${JSON.stringify(end)}\n`);
  pending.push(
    encodeHeader(metaHeader(END_PATH, endBody.length, now)),
    endBody,
    ZEROS.subarray(0, padding(endBody.length)),
    ZEROS,
  );
  yield take();
  return end;
}
