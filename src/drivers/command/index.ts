/**
 * The `command` driver: the application's own program produces and consumes its data,
 * like borg's `--content-from-command` and Bareos's bpipe.
 *
 * Backup: `backup_command` runs as `os_user` (no capabilities, no shell, clean
 * environment, `timeout`); its stdout is the payload, spooled to a private file (the tar
 * header needs the size first) and archived as `data/stdout`. A non-zero exit, a timeout
 * or an empty stdout fails the backup with the command's stderr.
 *
 * Restore: the payload is staged in a private file while the archive streams in; only in
 * `commit`, after the archive's end record verified, does `restore_command` run, with the
 * staged file on its stdin. A command that fails there fails the restore with its stderr;
 * what it changed before failing is the command's own business (it should restore
 * atomically itself, e.g. into a new file and rename). `abort` never runs the command.
 */
import { fsyncSync } from "node:fs";
import { Readable, type Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ArchiveEntry } from "../../core/archive/writer.js";
import { FerryError } from "../../core/errors.js";
import { findProgram, runHelper } from "../../core/spawn.js";
import { timeoutMs } from "../common.js";
import { Spool, spoolHelper, writeAll } from "../spool.js";
import type { Driver, DriverContext, RestoreContext, RestoreSession } from "../types.js";
import { type CommandConfig, commandSchema } from "./config.js";

export const COMMAND_ENTRY = "data/stdout";
const SPOOLED = "stdout";

async function* backupCommand(
  config: CommandConfig,
  ctx: DriverContext,
): AsyncGenerator<ArchiveEntry> {
  const spool = Spool.create(ctx.state, "command");
  try {
    const label = `backup_command of ${ctx.app}`;
    const helper = runHelper({
      argv: config.backup_command,
      user: config.user,
      env: { FERRY_APP: ctx.app },
      timeoutMs: timeoutMs(config),
      signal: ctx.signal,
      label,
    });
    await spoolHelper(helper, spool, SPOOLED, label);
    yield spool.entry(COMMAND_ENTRY, SPOOLED, { mode: 0o600 });
  } finally {
    spool.remove();
  }
}

async function openCommandRestore(
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

export const commandDriver: Driver<CommandConfig> = {
  name: "command",
  type: "command.v1",
  version: 1,
  schema: commandSchema,

  async describe(config) {
    return {
      backup_command: config.backup_command,
      restore_command: config.restore_command ?? null,
      os_user: config.os_user,
      entry: COMMAND_ENTRY,
    };
  },

  async health(config) {
    try {
      const prog = findProgram(config.backup_command[0] as string);
      return { ok: true, message: `runs ${prog} as ${config.os_user}` };
    } catch (err) {
      return { ok: false, message: (err as Error).message };
    }
  },

  manifest(config) {
    return { os_user: config.os_user, backup_command: config.backup_command };
  },

  backup: backupCommand,

  restore: openCommandRestore,
};
