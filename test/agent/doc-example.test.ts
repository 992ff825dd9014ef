/**
 * The minimal Python agent of docs/agent-protocol.md, taken from the document as it is,
 * backed up by the real driver: the document is enough to write an agent.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { userName } from "../../src/core/users.js";
import { agentDriver } from "../../src/drivers/agent/index.js";
import { backupArchive, hasProgram, payloadOf, settingsOf, waitFor } from "../drivers/suite.js";
import { ROOT } from "../helpers/proc.js";

let child: ChildProcess | undefined;
let dir: string | undefined;
after(() => {
  child?.kill("SIGKILL");
  if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
});

test("the document's Python agent is backed up by ferryd's driver", {
  skip: hasProgram("python3") ? false : "python3 is not installed",
  timeout: 60_000,
}, async () => {
  const doc = readFileSync(join(ROOT, "docs/agent-protocol.md"), "utf8");
  const code = /```python\n([\s\S]*?)```/.exec(doc)?.[1];
  assert.ok(code !== undefined, "the document has no Python example");
  dir = mkdtempSync("/tmp/ferry-doc-agent-");
  mkdirSync(join(dir, "data"));
  writeFileSync(join(dir, "data/state.json"), '{"state":42}\n');
  const socket = join(dir, "agent.sock");
  const script = code.replace(
    '"/run/myapp/agent.sock", "/var/lib/myapp"',
    `${JSON.stringify(socket)}, ${JSON.stringify(join(dir, "data"))}`,
  );
  assert.notEqual(script, code, "the example's paths changed; update this test");
  writeFileSync(join(dir, "agent.py"), script);
  child = spawn("python3", [join(dir, "agent.py")], { stdio: "ignore" });
  assert.ok(await waitFor(() => existsSync(socket), 20_000), "the Python agent did not start");

  const owner = userName(process.getuid?.() ?? 0);
  const settings = settingsOf(agentDriver, { socket, owner, allow_root: owner === "root" });
  const health = await agentDriver.health(settings as never);
  assert.equal(health.ok, true, health.message);
  const bytes = await backupArchive(agentDriver, { name: "py", settings });
  const entries = await payloadOf(bytes);
  assert.deepEqual(
    entries.map((e) => e.path),
    ["data/agent.json", "data/0/state.json"],
  );
  assert.equal(entries[1]?.body.toString(), '{"state":42}\n');
});
