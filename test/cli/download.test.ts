/**
 * The hand-made HTTP/1.1 response reader of `ferry export` (src/cli/download.ts): every
 * well-formed response is read the same whatever the split of its bytes, and every
 * malformed or oversized one is refused with BAD_RESPONSE instead of being guessed at.
 */
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { download, ResponseParser } from "../../src/cli/download.js";
import { FerryError } from "../../src/core/errors.js";

function chunked(parts: string[], trailers = "Ferry-Status: ok\r\n"): string {
  const body = parts.map((p) => `${Buffer.byteLength(p).toString(16)}\r\n${p}\r\n`).join("");
  return (
    "HTTP/1.1 200 OK\r\nContent-Type: application/x-tar\r\nTransfer-Encoding: chunked\r\n" +
    `Trailer: Ferry-Status\r\n\r\n${body}0\r\n${trailers}\r\n`
  );
}

/** Feeds `text` in pieces of `step` bytes; returns the body and the end. */
function parse(text: string | Buffer, step: number) {
  const got: Buffer[] = [];
  const p = new ResponseParser((b) => {
    got.push(Buffer.from(b));
  });
  const all = Buffer.isBuffer(text) ? text : Buffer.from(text, "latin1");
  for (let i = 0; i < all.length; i += step) p.push(all.subarray(i, i + step));
  return { body: Buffer.concat(got).toString("latin1"), end: p.end() };
}

function refused(text: string, pattern: RegExp) {
  for (const step of [1, 7, 1 << 20]) {
    assert.throws(
      () => parse(text, step),
      (err: unknown) =>
        err instanceof FerryError &&
        (err.code === "BAD_RESPONSE" || err.code === "CONNECTION_LOST") &&
        pattern.test(err.message),
      `step ${step}`,
    );
  }
}

describe("download: the response reader", () => {
  test("a chunked response reads the same split at every byte or whole", () => {
    const text = chunked(["hello ", "world", "x".repeat(70_000)]);
    for (const step of [1, 2, 3, 5, 64, 4096, text.length]) {
      const { body, end } = parse(text, step);
      assert.equal(body, `hello world${"x".repeat(70_000)}`, `step ${step}`);
      assert.equal(end.head.status, 200);
      assert.equal(end.trailers.get("ferry-status"), "ok");
      assert.equal(end.head.headers.get("transfer-encoding"), "chunked");
    }
  });

  test("no trailers, chunk extensions and a Content-Length body are read", () => {
    const noTrailer = chunked(["abc"], "");
    assert.equal(parse(noTrailer, 1).body, "abc");
    assert.equal(parse(noTrailer, 1).end.trailers.size, 0);
    const ext = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\n\r\n";
    assert.equal(parse(ext, 2).body, "abc");
    const cl = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nwxyz";
    assert.equal(parse(cl, 3).body, "wxyz");
  });

  test("an error response's body is kept for the error, not passed on", () => {
    const json = '{"error":{"code":"NO_SUCH_APP","message":"no"}}';
    const text = `HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nContent-Length: ${json.length}\r\n\r\n${json}`;
    const { body, end } = parse(text, 5);
    assert.equal(body, "");
    assert.equal(end.head.status, 404);
    assert.equal(end.errorBody, json);
  });

  test("hostile-response: malformed framing is refused, never guessed at", () => {
    refused("HTTP/2 200 OK\r\n\r\n", /status line/);
    refused("HTTP/1.1 200 OK\r\nBad Header\r\nContent-Length: 0\r\n\r\n", /header line/);
    refused("HTTP/1.1 200 OK\r\nA: 1\r\nA: 2\r\nContent-Length: 0\r\n\r\n", /twice/);
    refused("HTTP/1.1 200 OK\r\nX: y\r\n\r\nabc", /neither Content-Length nor chunked/);
    refused(
      "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
      /Transfer-Encoding/,
    );
    refused("HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", /Content-Length/);
    refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", /chunk size/);
    refused("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n", /CRLF/);
    refused("HTTP/1.1 100 Continue\r\n\r\n", /interim/);
    refused(`${chunked(["a"])}extra`, /after the end/);
  });

  test("hostile-response: oversized heads, lines, trailers and error bodies are refused", () => {
    refused(`HTTP/1.1 200 OK\r\nX: ${"a".repeat(70_000)}\r\n\r\n`, /head longer/);
    refused(
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1;${"e".repeat(2000)}\r\n`,
      /chunk-size line longer/,
    );
    refused(
      `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: ${"t".repeat(70_000)}\r\n\r\n`,
      /trailers longer/,
    );
    const big = 2 * 1024 * 1024;
    assert.throws(
      () => parse(`HTTP/1.1 500 x\r\nContent-Length: ${big}\r\n\r\n${"e".repeat(big)}`, 65536),
      /error body larger/,
    );
  });

  test("a response cut short is CONNECTION_LOST, not a success", () => {
    const text = chunked(["abcdef"]);
    for (const cut of [0, 10, text.length - 3]) {
      const p = new ResponseParser(() => {});
      p.push(Buffer.from(text.slice(0, cut), "latin1"));
      assert.throws(
        () => p.end(),
        (e: unknown) => e instanceof FerryError && e.code === "CONNECTION_LOST",
      );
    }
  });

  test("download over a real socket: body, trailers, and a consumer that pauses", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ferry-download-"));
    const path = join(dir, "s.sock");
    const payload = Buffer.alloc(3 * 1024 * 1024, 7);
    let request = "";
    const server = createServer((c) => {
      c.once("data", (d) => {
        request = d.toString();
        c.end(
          Buffer.concat([
            Buffer.from(
              `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${payload.length.toString(16)}\r\n`,
            ),
            payload,
            Buffer.from("\r\n0\r\nFerry-Status: ok\r\n\r\n"),
          ]),
        );
      });
    });
    await new Promise<void>((r) => server.listen(path, r));
    try {
      let got = 0;
      let pauses = 0;
      const res = await download({
        socketPath: path,
        method: "POST",
        path: "/v1/apps/x/backup",
        onBody: (b) => {
          got += b.length;
          pauses++;
          return pauses % 2 === 0 ? new Promise((r) => setTimeout(r, 5)) : undefined;
        },
        transportError: (e) => e,
      });
      assert.equal(got, payload.length);
      assert.equal(res.trailers.get("ferry-status"), "ok");
      assert.match(request, /^POST \/v1\/apps\/x\/backup HTTP\/1\.1\r\n/);
      await assert.rejects(
        download({
          socketPath: join(dir, "missing.sock"),
          method: "GET",
          path: "/",
          onBody: () => undefined,
          transportError: () => new FerryError("SERVICE_UNREACHABLE", "mapped"),
        }),
        (e: unknown) => e instanceof FerryError && e.code === "SERVICE_UNREACHABLE",
      );
    } finally {
      server.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
