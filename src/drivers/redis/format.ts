/**
 * The key stream of a logical Redis backup (`data/keys.redis`):
 *
 * ```
 * "FERRY-REDIS-KEYS 1\n"
 * record*  : 0x01 | u32be key length | key | u32be dump length | DUMP payload | i64be PTTL
 * trailer  : 0x00 | u64be number of records
 * ```
 *
 * Keys and DUMP payloads are raw bytes (Redis keys need not be text). PTTL is the
 * remaining time to live in milliseconds at backup time, -1 for none. The trailer lets a
 * restore refuse a stream that was cut short even before the archive's end record is
 * checked. The DUMP payload carries Redis's own RDB version and CRC64, which RESTORE
 * verifies.
 */
import { FerryError } from "../../core/errors.js";

export const MAGIC = Buffer.from("FERRY-REDIS-KEYS 1\n");

export interface KeyRecord {
  key: Buffer;
  dump: Buffer;
  pttl: number;
}

export function encodeRecord(r: KeyRecord): Buffer[] {
  const head = Buffer.allocUnsafe(5);
  head.writeUInt8(1, 0);
  head.writeUInt32BE(r.key.length, 1);
  const mid = Buffer.allocUnsafe(4);
  mid.writeUInt32BE(r.dump.length, 0);
  const tail = Buffer.allocUnsafe(8);
  tail.writeBigInt64BE(BigInt(r.pttl), 0);
  return [head, r.key, mid, r.dump, tail];
}

export function encodeTrailer(count: number): Buffer {
  const b = Buffer.allocUnsafe(9);
  b.writeUInt8(0, 0);
  b.writeBigUInt64BE(BigInt(count), 1);
  return b;
}

function bad(why: string): FerryError {
  return new FerryError("ARCHIVE_INVALID", `the redis key stream is malformed: ${why}`);
}

/**
 * Parses a key stream from chunks, yielding records; throws ARCHIVE_INVALID on any
 * framing error, a missing trailer, a wrong count or bytes after the trailer.
 */
export async function* decodeRecords(
  chunks: AsyncIterable<Buffer>,
): AsyncGenerator<KeyRecord, number, undefined> {
  let buf: Buffer = Buffer.alloc(0);
  let count = 0;
  let started = false;
  let ended = false;
  const it = chunks[Symbol.asyncIterator]();
  const fill = async (n: number): Promise<boolean> => {
    while (buf.length < n) {
      const r = await it.next();
      if (r.done) return false;
      buf = buf.length === 0 ? r.value : Buffer.concat([buf, r.value]);
    }
    return true;
  };
  if (!(await fill(MAGIC.length)) || !buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw bad("it does not start with the expected header");
  }
  buf = buf.subarray(MAGIC.length);
  started = true;
  while (started && !ended) {
    if (!(await fill(1))) throw bad("it ends without its trailer");
    const tag = buf[0];
    if (tag === 0) {
      if (!(await fill(9))) throw bad("the trailer is cut short");
      const n = buf.readBigUInt64BE(1);
      if (n !== BigInt(count)) throw bad(`the trailer says ${n} keys, the stream has ${count}`);
      buf = buf.subarray(9);
      ended = true;
      break;
    }
    if (tag !== 1) throw bad(`unknown record tag ${tag}`);
    if (!(await fill(5))) throw bad("a record is cut short");
    const klen = buf.readUInt32BE(1);
    if (!(await fill(5 + klen + 4))) throw bad("a record is cut short");
    const dlen = buf.readUInt32BE(5 + klen);
    const total = 5 + klen + 4 + dlen + 8;
    if (!(await fill(total))) throw bad("a record is cut short");
    const key = Buffer.from(buf.subarray(5, 5 + klen));
    const dump = Buffer.from(buf.subarray(9 + klen, 9 + klen + dlen));
    const pttl = Number(buf.readBigInt64BE(9 + klen + dlen));
    buf = buf.subarray(total);
    count++;
    yield { key, dump, pttl };
  }
  if (buf.length > 0 || !(await it.next()).done) throw bad("bytes follow the trailer");
  return count;
}
