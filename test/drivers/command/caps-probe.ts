/**
 * Run by command.test.ts as the backup user with ferryd's ambient capabilities: backs up
 * a `command` app whose command prints its own /proc/self/status, and prints JSON with
 * this process's status and the helper's (read back out of the archive).
 *
 * argv: [node, caps-probe.js, os_user]
 */
import { readFileSync } from "node:fs";
import { commandDriver } from "../../../src/drivers/command/index.js";
import { backupArchive, payloadOf, settingsOf } from "../suite.js";

const osUser = process.argv[2] as string;
const app = {
  name: "probe",
  settings: settingsOf(commandDriver, {
    backup_command: ["cat", "/proc/self/status"],
    os_user: osUser,
    hooks: { pre_backup: ["cat", "/proc/self/status"] },
  }),
};
const entries = await payloadOf(await backupArchive(commandDriver, app));
process.stdout.write(
  JSON.stringify({
    self: readFileSync("/proc/self/status", "utf8"),
    helper: entries[0]?.body.toString("utf8"),
  }),
);
