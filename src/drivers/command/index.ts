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
import { findProgram } from "../../core/spawn.js";
import { inspectProgram } from "../inspect.js";
import type { Driver } from "../types.js";
import { backup, COMMAND_ENTRY } from "./backup.js";
import { type CommandConfig, commandSchema } from "./config.js";
import { openRestore } from "./restore.js";

export { COMMAND_ENTRY };

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

  backup,

  restore: openRestore,

  inspect(config) {
    return [
      ...inspectProgram(config.backup_command[0] as string, ["backup_command"], config.user),
      ...(config.restore_command === undefined
        ? []
        : inspectProgram(config.restore_command[0] as string, ["restore_command"], config.user)),
    ];
  },
};
