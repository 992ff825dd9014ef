import type { ArchiveEntry } from "../../core/archive/writer.js";
import { runHelper } from "../../core/spawn.js";
import { timeoutMs } from "../common.js";
import { spoolHelper } from "../dump-io.js";
import { Spool } from "../spool.js";
import type { DriverContext } from "../types.js";
import type { CommandConfig } from "./config.js";

export const COMMAND_ENTRY = "data/stdout";
export const SPOOLED = "stdout";

export async function* backup(
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
