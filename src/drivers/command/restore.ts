/** The command driver's restore (see index.ts). */
import { fsyncSync } from "node:fs";
import { Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { FerryError } from "../../core/errors.js";
import { runHelper } from "../../core/spawn.js";
import { timeoutMs } from "../common.js";
import { writeAll } from "../dump-io.js";
import { Spool } from "../spool.js";
import type { RestoreContext, RestoreSession } from "../types.js";
import { COMMAND_ENTRY, SPOOLED } from "./backup.js";
import type { CommandConfig } from "./config.js";
export async function openRestore(
  config: CommandConfig,
  ctx: RestoreContext,
): Promise<RestoreSession> {
  const argv = config.restore_command;
  if (argv === undefined) {
    throw new FerryError("RESTORE_NOT_ALLOWED", `${ctx.app} has no restore_command`);
  }
  const spool = Spool.create(ctx.state, "command-restore");
  let fd: number | undefined;
  let seen = false;
  let complete = false;
  let bytes = 0;

  return {
    async entry(h) {
      if (h.path !== COMMAND_ENTRY || h.type !== "file" || seen) {
        throw new FerryError(
          "ARCHIVE_INVALID",
          `unexpected entry ${JSON.stringify(h.path)} in a command archive`,
        );
      }
      seen = true;
      fd = spool.createFile(SPOOLED);
    },
    async data(chunk) {
      if (fd === undefined) throw new FerryError("ARCHIVE_INVALID", "data outside an entry");
      await writeAll(fd, chunk);
      bytes += chunk.length;
    },
    async entryEnd() {
      if (fd === undefined) throw new FerryError("ARCHIVE_INVALID", "entry end outside an entry");
      fsyncSync(fd);
      spool.closeFd(fd);
      fd = undefined;
      complete = true;
    },
    async commit() {
      try {
        if (!complete) {
          throw new FerryError("ARCHIVE_INVALID", `the archive holds no ${COMMAND_ENTRY}`);
        }
        const file = spool.openFile(SPOOLED);
        const helper = runHelper({
          argv,
          user: config.user,
          env: { FERRY_APP: ctx.app },
          stdin: "pipe",
          stdout: "ignore",
          timeoutMs: timeoutMs(config),
          signal: ctx.signal,
          label: `restore_command of ${ctx.app}`,
        });
        // An early exit of the command (EPIPE) is reported by its exit status instead.
        const feeding = pipeline(Readable.from(spool.read(file)), helper.stdin as Writable).catch(
          () => {},
        );
        await Promise.all([helper.done, feeding]);
        return { entries: 1, bytes };
      } finally {
        spool.remove();
      }
    },
    async abort() {
      spool.remove();
    },
  };
}
