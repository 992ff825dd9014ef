/**
 * The ways the operating system starts ferryd, as root: systemd socket activation (a real
 * inherited listening socket from systemd-socket-activate, still peer-checked), and
 * `ferryd run -- COMMAND` (a socket pair on the command's fd 3, the command without
 * capabilities, ferryd exiting with the command's status).
 *
 * Bounds: a two-file application; each process is bounded by a 60 s timeout.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parseStatus } from "../../src/core/caps.js";
import {
  ensureUser,
  FERRY,
  FERRYD,
  ferry,
  needsRoot,
  run,
  type TestUser,
} from "../helpers/proc.js";

describe("ferryd started by the OS", { skip: needsRoot }, () => {
  let dir: string;
  let config: string;
  let app: TestUser;
  let backup: TestUser;
  let other: TestUser;

  before(async () => {
    app = ensureUser("ferry-e2e-app");
    backup = ensureUser("ferry-e2e-bk");
    other = ensureUser("ferry-e2e-other");
    dir = mkdtempSync("/tmp/ferry-svc-");
    chmodSync(dir, 0o755);
    mkdirSync(join(dir, "app"));
    writeFileSync(join(dir, "app/secret"), "secret\n", { mode: 0o600 });
    const chown = await run(["chown", "-R", `${app.name}:${app.name}`, join(dir, "app")]);
    assert.equal(chown.code, 0, chown.stderr);
    const st = statSync(join(dir, "app/secret"));
    assert.deepEqual([st.uid, st.gid], [app.uid, app.gid], "the app's data is the app user's");
    config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1\nsocket = "${dir}/run/ferry.sock"\nstate_dir = "${dir}/state"\n\n[apps.notes]\ndriver = "files"\npaths = ["${dir}/app"]\nowner = "${app.name}"\n`,
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("socket activation: ferryd serves the inherited socket and still checks every peer", async () => {
    const sock = join(dir, "activated.sock");
    const child = spawn(
      "systemd-socket-activate",
      ["-l", sock, process.execPath, FERRYD, "--config", config, "--user", backup.name],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let log = "";
    child.stderr.on("data", (d: Buffer) => {
      log += d.toString();
    });
    try {
      for (let i = 0; i < 100 && !existsSync(sock); i++)
        await new Promise((r) => setTimeout(r, 50));
      assert.ok(existsSync(sock), `systemd-socket-activate did not listen: ${log}`);
      chmodSync(sock, 0o666); // even world-writable, the peer check decides
      const ok = await ferry(sock, ["apps"], { user: backup });
      assert.equal(ok.code, 0, ok.stderr + log);
      assert.match(ok.stdout.toString(), /notes\s+files/);
      assert.match(log, /"socket":"fd 3 \(socket activation\)"/);
      const refused = await ferry(sock, ["apps"], { user: other });
      assert.equal(refused.code, 3, refused.stderr);
      assert.match(refused.stderr, /PEER_REJECTED/);
      assert.ok(
        !existsSync(join(dir, "run/ferry.sock")),
        "ferryd created its own socket despite activation",
      );
    } finally {
      child.kill("SIGTERM");
    }
  });

  test("ferryd run: the command gets fd 3 and FERRY_FD, runs as the backup user without capabilities", async () => {
    const script = [
      `echo "fd=$FERRY_FD"`,
      `${process.execPath} ${FERRY} apps`,
      `${process.execPath} ${FERRY} export notes | tar -tf - | grep -c data/0/secret`,
      "grep -E '^(Uid|CapInh|CapPrm|CapEff|CapAmb|NoNewPrivs):' /proc/self/status",
      "exit 7",
    ].join(" && ");
    const r = await run(
      [
        process.execPath,
        FERRYD,
        "run",
        "--config",
        config,
        "--user",
        backup.name,
        "--",
        "sh",
        "-c",
        script,
      ],
      { timeoutMs: 60_000 },
    );
    assert.equal(r.code, 7, r.stderr);
    const out = r.stdout.toString();
    assert.match(out, /^fd=3$/m);
    assert.match(out, /notes\s+files/);
    assert.match(out, /^1$/m);
    const status = parseStatus(out);
    assert.deepEqual(status.uid, [backup.uid, backup.uid, backup.uid, backup.uid]);
    assert.deepEqual(status.effective, []);
    assert.deepEqual(status.permitted, []);
    assert.deepEqual(status.ambient, []);
    assert.match(out, /^NoNewPrivs:\s+1$/m);
    assert.ok(!existsSync(join(dir, "run/ferry.sock")), "ferryd run must not create a socket path");
  });

  test("ferryd run without a command is a usage error", async () => {
    const r = await run([
      process.execPath,
      FERRYD,
      "run",
      "--config",
      config,
      "--user",
      backup.name,
    ]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /run takes a command after --/);
  });
});
