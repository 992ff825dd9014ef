/**
 * A state directory for tests that call drivers directly (as ferryd would, with
 * `ctx.state`): a fresh temporary directory opened through StateDir, root-owned 0700 when
 * the tests run as root, so spools and journals behave as under a privileged ferryd.
 */
import { chmodSync, mkdtempSync, readdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { StateDir } from "../../src/core/state-dir.js";
import { SPOOL_DIR, spoolRoot } from "../../src/drivers/spool.js";

let shared: StateDir | undefined;

/** One state directory per test process (created on first use). */
export function testState(): StateDir {
  if (shared === undefined) {
    const top = mkdtempSync(join(tmpdir(), "ferry-test-state-"));
    chmodSync(top, 0o755); // as /var/lib: helpers pass through it to their spools
    const path = join(top, "state");
    const uid = process.getuid?.() ?? -1;
    shared = StateDir.open(path, {
      privileged: uid === 0,
      uid,
      gids: process.getgroups?.() ?? [],
    });
  }
  return shared;
}

/** Names of the spools currently in the shared test state directory. */
export function spoolNames(): string[] {
  spoolRoot(testState());
  return readdirSync(join(testState().path, SPOOL_DIR));
}
