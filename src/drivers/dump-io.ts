/**
 * Writing a dump to disk for the drivers that spool (spool.ts): a helper's stdout into a
 * spool, accepted only when the helper exited 0 and wrote something (`spoolHelper`), the
 * error of a helper that produced nothing (`noData`), and a buffer written whole at a
 * descriptor's offset (`writeAll`).
 */
import { write } from "node:fs";
import { FerryError } from "../core/errors.js";
import type { Helper } from "../core/spawn.js";
import type { Spool } from "./spool.js";

/**
 * Waits for a helper whose stdout is being spooled into `spool` as `name`. Succeeds only
 * when the stream ended, the helper exited 0 and at least one byte came out; otherwise the
 * helper is killed and the error (with its stderr) is thrown.
 */
export async function spoolHelper(
  helper: Helper,
  spool: Spool,
  name: string,
  label: string,
): Promise<number> {
  if (helper.stdout === null) throw new FerryError("INTERNAL", `${label}: stdout is not a pipe`);
  const writing = spool.write(name, helper.stdout);
  writing.catch(() => {});
  let bytes: number;
  try {
    [bytes] = await Promise.all([writing, helper.done]);
  } catch (err) {
    helper.kill();
    // The helper's own failure (with its stderr) explains more than a broken pipe does.
    const exit = await helper.done.then(
      () => undefined,
      (e: unknown) => e,
    );
    await writing.catch(() => {});
    throw exit ?? err;
  }
  if (bytes === 0) throw noData(label, helper.stderrText());
  return bytes;
}

/** Writes all of `buf` at the file's current offset. */
export function writeAll(fd: number, buf: Buffer): Promise<void> {
  return new Promise((resolve, reject) => {
    const step = (off: number) => {
      write(fd, buf, off, buf.length - off, null, (err, n) => {
        if (err) return reject(err);
        if (off + n < buf.length) return step(off + n);
        resolve();
      });
    };
    step(0);
  });
}

export function noData(label: string, stderr: string): FerryError {
  const tail = stderr.trim().split("\n").slice(-20).join("\n");
  return new FerryError(
    "HELPER_FAILED",
    `${label} exited 0 but produced no data${tail === "" ? "" : `: ${tail}`}`,
  );
}
