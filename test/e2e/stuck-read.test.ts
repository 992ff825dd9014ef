/**
 * stuck-read-freezes-ferryd: one application's file whose read never returns (an NFS
 * server gone away, a disk retrying a bad sector, a hung FUSE file system — here a tiny
 * FUSE server that answers everything but READ) must cost that application's backup, not
 * ferryd: while that export hangs, ferryd still answers on its socket and backs up the
 * other applications. A read that blocks ferryd's event loop stops every client, every
 * other app's job, cancels, timeouts and SIGTERM (the process sits in the kernel, not even
 * SIGKILL takes it until the file system answers).
 *
 * Needs root (mounting FUSE). Bounds: each probe gets 10 s.
 */
import assert from "node:assert/strict";
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { ferry, needsRoot, ROOT } from "../helpers/proc.js";

async function until(what: string, ok: () => boolean, ms: number): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe("a file whose read never returns", { skip: needsRoot }, () => {
  let dir: string;
  let mnt: string;
  let fs: ChildProcess | undefined;
  let fsLog = "";
  let daemon: RunningFerryd | undefined;
  let stuckExport: ChildProcess | undefined;

  before(async () => {
    assert.ok(existsSync("/dev/fuse"), "this test needs /dev/fuse (modprobe fuse)");
    dir = mkdtempSync("/tmp/ferry-stuck-read-");
    mnt = join(dir, "stuck/mnt");
    mkdirSync(mnt, { recursive: true });
    mkdirSync(join(dir, "ok"));
    writeFileSync(join(dir, "ok/a.txt"), "alpha\n");
    fs = spawn("/usr/bin/python3", [join(ROOT, "test/helpers/stuckfs.py"), mnt], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    fs.stdout?.on("data", (d: Buffer) => {
      fsLog += d.toString();
    });
    fs.stderr?.on("data", (d: Buffer) => {
      fsLog += d.toString();
    });
    await until("the FUSE mount", () => fsLog.includes("mounted"), 10_000);
    const socket = join(dir, "run/ferry.sock");
    writeFileSync(
      join(dir, "ferry.toml"),
      `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n` +
        `[apps.stuck]\ndriver = "files"\npaths = ["${join(dir, "stuck")}"]\nowner = "root"\nallow_root = true\n\n` +
        `[apps.ok]\ndriver = "files"\npaths = ["${join(dir, "ok")}"]\nowner = "root"\nallow_root = true\n`,
    );
    daemon = await startFerryd({ config: join(dir, "ferry.toml"), extraArgs: ["--allow-root"] });
  });

  after(async () => {
    // The FUSE server first: until it is gone, a read it left hanging holds its reader.
    fs?.kill("SIGKILL");
    stuckExport?.kill("SIGKILL");
    daemon?.child.kill("SIGKILL");
    try {
      execFileSync("umount", ["-l", mnt], { stdio: "ignore" });
    } catch {}
    if (
      daemon !== undefined &&
      daemon.child.exitCode === null &&
      daemon.child.signalCode === null
    ) {
      await new Promise((r) => daemon?.child.once("exit", r));
    }
    rmSync(dir, { recursive: true, force: true });
  });

  test("stuck-read-freezes-ferryd: ferryd keeps serving the other apps", async () => {
    const socket = join(dir, "run/ferry.sock");
    stuckExport = spawn(
      process.execPath,
      [join(ROOT, "dist/src/cli/ferry.js"), "--socket", socket, "export", "stuck"],
      {
        stdio: ["ignore", "ignore", "ignore"],
      },
    );
    await until("ferryd's read of the stuck file", () => fsLog.includes("read received"), 20_000);
    const version = await ferry(socket, ["version"], { timeoutMs: 10_000 });
    assert.equal(
      version.code,
      0,
      `ferry version got no answer while one read hung: ${version.stderr}`,
    );
    const other = await ferry(socket, ["export", "ok"], { timeoutMs: 10_000 });
    assert.equal(
      other.code,
      0,
      `another app's export did not finish while one read hung: ${other.stderr}`,
    );
    assert.ok(other.stdout.includes(Buffer.from("alpha\n")));
  });
});
