/**
 * The command driver with real commands run as a test user (`ferry-cmd`): the shared
 * suite, stdin/stdout round trip of binary data, and the proof that a helper started by a
 * process holding ferryd's capabilities runs as the app's user with none of them.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { chownSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { SERVICE_CAPS } from "../../../src/core/caps.js";
import { commandDriver } from "../../../src/drivers/command/index.js";
import { ensureUser, removeDir, runAs, runDriverSuite } from "../suite.js";

const isRoot = process.getuid?.() === 0;
const skip = isRoot ? false : "needs root";

runDriverSuite({
  name: "command",
  driver: commandDriver,
  skip,
  async setup() {
    const u = ensureUser("ferry-cmd");
    const dir = mkdtempSync(join(tmpdir(), "ferry-cmd-test-"));
    chownSync(dir, u.uid, u.gid);
    const file = `${dir}/state.bin`;
    const write = (data: Buffer) => {
      writeFileSync(file, data);
      chownSync(file, u.uid, u.gid);
    };
    return {
      table: {
        backup_command: ["cat", "--", file],
        // Atomic on its own side: a new file renamed over the old one.
        restore_command: ["sh", "-c", 'cat > "$0.new" && mv -- "$0.new" "$0"', file],
        os_user: u.name,
        timeout: 60,
      },
      hookUser: u.name,
      hookDir: dir,
      async seed() {
        write(randomBytes(3 * 1024 * 1024 + 17));
      },
      async mutate() {
        write(Buffer.from("changed\n"));
      },
      async snapshot() {
        return createHash("sha256").update(readFileSync(file)).digest("hex");
      },
      failing: {
        table: { backup_command: ["sh", "-c", "echo 'cannot reach the app socket' >&2; exit 3"] },
        stderr: /exited with status 3: cannot reach the app socket/,
      },
      empty: { table: { backup_command: ["true"] } },
      // A command archive holds exactly data/stdout; anything else is refused before the
      // restore command runs.
      garbage: {
        entries: [{ path: "data/not-stdout", body: Buffer.from("nonsense\n") }],
        codes: /^ARCHIVE_INVALID$/,
      },
      slow: {
        table: { backup_command: ["sleep", "37"] },
        async helperRunning() {
          try {
            runAs(u, ["pgrep", "-u", String(u.uid), "-f", "sleep 37"]);
            return true;
          } catch {
            return false;
          }
        },
      },
      health: {
        ok: /^runs \/\S+\/cat as ferry-cmd$/,
        unhealthy: {
          table: { backup_command: ["ferry-no-such-program"] },
          message: /ferry-no-such-program/,
        },
      },
      async teardown() {
        removeDir(dir);
      },
    };
  },
});

function statusField(status: string, field: string): string {
  const m = new RegExp(`^${field}:\\s*(.*)$`, "m").exec(status);
  assert.ok(m !== null, `no ${field} in status`);
  return (m[1] as string).trim();
}

describe("command driver: helpers drop ferryd's capabilities", { skip, timeout: 60_000 }, () => {
  test("a helper started by a process with ferryd's ambient caps runs as os_user with CapEff = CapAmb = 0", () => {
    const app = ensureUser("ferry-cmd");
    const service = ensureUser("ferry-cmd-svc");
    const probe = fileURLToPath(new URL("./caps-probe.js", import.meta.url));
    const keep = `-all,${SERVICE_CAPS.map((c) => `+${c}`).join(",")}`;
    // Exactly how ferryd runs: the backup user's uid plus the service capabilities as
    // ambient capabilities (src/daemon/privilege.ts).
    const out = execFileSync(
      "setpriv",
      [
        `--reuid=${service.uid}`,
        `--regid=${service.gid}`,
        "--init-groups",
        `--inh-caps=${keep}`,
        `--ambient-caps=${keep}`,
        `--bounding-set=${keep}`,
        "--",
        process.execPath,
        probe,
        app.name,
      ],
      { encoding: "utf8", timeout: 30_000, cwd: "/" },
    );
    const { self, helper } = JSON.parse(out) as { self: string; helper: string };
    // The probe itself really held the capabilities (so the test can fail).
    assert.equal(statusField(self, "Uid").split(/\s+/)[0], String(service.uid));
    assert.notEqual(BigInt(`0x${statusField(self, "CapEff")}`), 0n);
    assert.notEqual(BigInt(`0x${statusField(self, "CapAmb")}`), 0n);
    // The helper: the app's user, every capability set empty, no_new_privs.
    assert.deepEqual(statusField(helper, "Uid").split(/\s+/), Array(4).fill(String(app.uid)));
    assert.deepEqual(statusField(helper, "Gid").split(/\s+/), Array(4).fill(String(app.gid)));
    for (const f of ["CapEff", "CapAmb", "CapPrm", "CapInh"]) {
      assert.equal(BigInt(`0x${statusField(helper, f)}`), 0n, `${f} of the helper`);
    }
    assert.equal(statusField(helper, "NoNewPrivs"), "1");
  });
});
