/**
 * Delta archives (`POST …/backup?since=TOKEN`): the unchanged entry's pax records round-trip
 * exactly, and the strict reader takes a delta only when told to (the repository), never
 * an unchanged entry outside a delta or relative to another token, nor malformed records.
 */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ArchiveParser, DEFAULT_LIMITS } from "../../../src/core/archive/reader.js";
import {
  decodeBlock,
  encodeHeader,
  parsePax,
  resolveHeader,
  type TarHeader,
} from "../../../src/core/archive/tar.js";
import { type ArchiveEntry, writeArchive } from "../../../src/core/archive/writer.js";

const T1 = "0123456789abcdef0123456789abcdef";
const T2 = "fedcba9876543210fedcba9876543210";

function header(extra: Partial<TarHeader> = {}): TarHeader {
  return {
    path: "data/0/f",
    type: "file",
    mode: 0o644,
    uid: 1000,
    gid: 1000,
    uname: "app",
    gname: "app",
    size: 0,
    mtimeSec: 1_700_000_000,
    mtimeNsec: 5,
    linkpath: "",
    ...extra,
  };
}

/** Decodes one encoded header (pax + ustar) back into a TarHeader. */
function decode(b: Buffer): TarHeader {
  if (b.length === 512) return resolveHeader(decodeBlock(b), undefined);
  const pax = decodeBlock(b.subarray(0, 512));
  const body = b.subarray(512, 512 + pax.size);
  return resolveHeader(decodeBlock(b.subarray(b.length - 512)), parsePax(body));
}

/** A header whose pax body is exactly `records` (checksums right, as an attacker would make). */
function withRecords(records: [string, string][], extra: Partial<TarHeader> = {}): Buffer {
  const base = encodeHeader(header({ mtimeNsec: 0, ...extra }));
  const body = Buffer.from(
    records
      .map(([k, v]) => {
        const rest = ` ${k}=${v}\n`;
        let len = rest.length + 2;
        if (String(len).length + rest.length !== len) len = String(len + 1).length + rest.length;
        return `${len}${rest}`;
      })
      .join(""),
  );
  const paxHdr = encodeHeader({
    ...header({ mtimeNsec: 0 }),
    path: "PaxHeaders/f",
    size: body.length,
  });
  paxHdr[156] = 0x78; // 'x'
  paxHdr.fill(0x20, 148, 156);
  let sum = 0;
  for (const x of paxHdr) sum += x;
  paxHdr.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  const pad = Buffer.alloc((512 - (body.length % 512)) % 512);
  return Buffer.concat([paxHdr, body, pad, base]);
}

async function archive(
  manifest: Record<string, unknown>,
  entries: ArchiveEntry[],
  end?: () => { token?: string },
): Promise<Buffer> {
  async function* gen() {
    yield* entries;
  }
  const parts: Buffer[] = [];
  const base = { app: "a", driver: "files", driver_version: 1, ferry_version: "t", host: "h" };
  for await (const b of writeArchive(
    { ...base, created: "x", ...manifest },
    gen(),
    [],
    undefined,
    end,
  )) {
    parts.push(b);
  }
  return Buffer.concat(parts);
}

async function parse(bytes: Buffer, allowDelta: boolean): Promise<TarHeader[]> {
  const seen: TarHeader[] = [];
  const p = new ArchiveParser({ entry: (h) => void seen.push(h) }, DEFAULT_LIMITS, allowDelta);
  await p.write(bytes);
  p.finish();
  return seen;
}

describe("delta archives", () => {
  test("an unchanged entry round-trips: token, real size and position, no data", () => {
    const h = header({ unchanged: { since: T1, size: 123_456_789_012, position: 41 } });
    const back = decode(encodeHeader(h));
    assert.deepEqual(back, h);
    // The header of the full archive is the same header with the size put back.
    const { unchanged: _, ...full } = h;
    assert.deepEqual(decode(encodeHeader({ ...full, size: 7 })), { ...full, size: 7 });
  });

  test("an unchanged entry cannot carry data, nor be anything but a regular file", () => {
    assert.throws(() =>
      encodeHeader(header({ size: 1, unchanged: { since: T1, size: 1, position: 0 } })),
    );
    const records: [string, string][] = [
      ["FERRY.unchanged", T1],
      ["FERRY.size", "5"],
      ["FERRY.position", "0"],
    ];
    assert.throws(() => decode(withRecords(records, { size: 5 })), /without data/);
    assert.throws(() => decode(withRecords(records, { type: "dir" })), /without data/);
  });

  test("unchanged-partial-records: all three records or none; no other FERRY. record", () => {
    assert.throws(
      () => decode(withRecords([["FERRY.unchanged", T1]])),
      /needs FERRY.unchanged, FERRY.size and FERRY.position/,
    );
    assert.throws(
      () =>
        decode(
          withRecords([
            ["FERRY.size", "5"],
            ["FERRY.position", "1"],
          ]),
        ),
      /needs/,
    );
    assert.throws(() => decode(withRecords([["FERRY.other", "1"]])), /unknown Ferry pax record/);
    for (const bad of ["../../etc/x", T1.toUpperCase(), `${T1}0`, ""]) {
      assert.throws(
        () =>
          decode(
            withRecords([
              ["FERRY.unchanged", bad],
              ["FERRY.size", "5"],
              ["FERRY.position", "1"],
            ]),
          ),
        /malformed FERRY.unchanged token|bad pax record/,
      );
    }
    assert.throws(
      () =>
        decode(
          withRecords([
            ["FERRY.unchanged", T1],
            ["FERRY.size", "-5"],
            ["FERRY.position", "1"],
          ]),
        ),
      /bad pax FERRY.size/,
    );
  });

  test("a delta is refused by every reader that did not ask for one (restore, import, export)", async () => {
    const h = header({ unchanged: { since: T1, size: 5, position: 0 } });
    const bytes = await archive({ kind: "delta", since: T1 }, [{ header: h }]);
    await assert.rejects(parse(bytes, false), (e: Error & { code?: string }) => {
      assert.equal(e.code, "ARCHIVE_INVALID");
      assert.match(e.message, /delta archive/);
      return true;
    });
    const seen = await parse(bytes, true);
    assert.deepEqual(seen[0]?.unchanged, { since: T1, size: 5, position: 0 });
  });

  test("unchanged-in-full-archive: an unchanged entry in a full archive is refused", async () => {
    const h = header({ unchanged: { since: T1, size: 5, position: 0 } });
    for (const m of [{ kind: "full" }, {}]) {
      const bytes = await archive(m, [{ header: h }]);
      await assert.rejects(parse(bytes, true), /not a delta/);
    }
  });

  test("unchanged-other-token: an entry unchanged since another archive than the delta's is refused", async () => {
    const h = header({ unchanged: { since: T2, size: 5, position: 0 } });
    const bytes = await archive({ kind: "delta", since: T1 }, [{ header: h }]);
    await assert.rejects(parse(bytes, true), /another archive than the delta's/);
  });

  test("manifest kinds: unknown kinds, a delta without a token and a full one with one are refused", async () => {
    for (const m of [
      { kind: "partial" },
      { kind: "delta" },
      { kind: "delta", since: "../x" },
      { kind: "full", since: T1 },
    ]) {
      await assert.rejects(parse(await archive(m, []), true), /invalid archive/);
    }
  });

  test("the end record carries the token it is given, and a malformed one is refused", async () => {
    const ok = await archive({ kind: "full" }, [], () => ({ token: T1 }));
    const p = new ArchiveParser();
    await p.write(ok);
    assert.equal(p.finish().token, T1);
    const bad = await archive({ kind: "full" }, [], () => ({ token: "nope" }));
    await assert.rejects(parse(bad, false), /token is malformed/);
  });
});
