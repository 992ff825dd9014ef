/**
 * Reading a request body with backpressure, chunk by chunk, through an async consumer.
 *
 * If the consumer fails (a refused archive), the promise rejects at once but the rest of
 * the body keeps being read and discarded: closing a socket with unread data makes the
 * kernel send a reset, which can destroy the error answer before the client reads it.
 * It also rejects when `signal` aborts (cancel, shutdown) or when the client sends nothing
 * for `idleMs` while ferryd waits for it (time spent processing a chunk does not count).
 */
import type { IncomingMessage } from "node:http";
import { FerryError } from "../core/errors.js";

export function consumeBody(
  req: IncomingMessage,
  onChunk: (chunk: Buffer) => Promise<void>,
  signal: AbortSignal,
  idleMs: number,
): Promise<void> {
  return new Promise((resolve, reject) => {
    let failed = false;
    let idle: NodeJS.Timeout | undefined;
    const arm = () => {
      clearTimeout(idle);
      idle = setTimeout(
        () =>
          fail(new FerryError("CLIENT_TIMEOUT", `the client sent nothing for ${idleMs / 1000}s`)),
        idleMs,
      );
      idle.unref();
    };
    const onAbort = () => fail(signal.reason);
    const fail = (err: unknown) => {
      if (failed) return;
      failed = true;
      clearTimeout(idle);
      signal.removeEventListener("abort", onAbort);
      reject(err);
      req.resume(); // keep draining
    };
    signal.addEventListener("abort", onAbort, { once: true });
    arm();
    let inFlight: Promise<void> = Promise.resolve();
    req.on("data", (chunk: Buffer) => {
      if (failed) return;
      clearTimeout(idle); // ferryd is busy with the chunk, not waiting for the client
      req.pause();
      inFlight = onChunk(chunk).then(
        () => {
          if (failed) return;
          arm();
          req.resume();
        },
        (err) => fail(err),
      );
    });
    req.on("end", () => {
      // 'end' can come while the last chunk is still being processed (a paused stream
      // still ends once its buffer is empty): finish that chunk first.
      void inFlight.then(() => {
        if (failed) return;
        clearTimeout(idle);
        signal.removeEventListener("abort", onAbort);
        resolve();
      });
    });
    req.on("error", fail);
    req.on("aborted", () => fail(new Error("the client aborted the upload")));
  });
}
