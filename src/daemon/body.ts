/**
 * Reading a request body with backpressure, chunk by chunk, through an async consumer.
 *
 * If the consumer fails (a refused archive), the promise rejects at once but the rest of
 * the body keeps being read and discarded: closing a socket with unread data makes the
 * kernel send a reset, which can destroy the error answer before the client reads it.
 */
import type { IncomingMessage } from "node:http";

export function consumeBody(
  req: IncomingMessage,
  onChunk: (chunk: Buffer) => Promise<void>,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let failed = false;
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      reject(err);
      req.resume(); // keep draining
    };
    req.on("data", (chunk: Buffer) => {
      if (failed) return;
      req.pause();
      onChunk(chunk).then(
        () => {
          if (!failed) req.resume();
        },
        (err) => fail(err),
      );
    });
    req.on("end", () => {
      // `end` only follows the last `data` once it was resumed, i.e. processed.
      if (!failed) resolve();
    });
    req.on("error", fail);
    req.on("aborted", () => fail(new Error("the client aborted the upload")));
  });
}
