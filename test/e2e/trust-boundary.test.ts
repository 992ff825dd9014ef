/**
 * The privilege boundary, attacked as the backup user (B) and an application's owner
 * would, against a real ferryd started by root with --user (docs/security.md):
 *
 * - config-link-into-backup-user-dir: /etc-like link to a root-owned config in B's
 *   directory;
 * - secret-file-symlink-swap (and its hardlink, wrong-owner and after-start variants):
 *   redis `password_file` pointed at a root-only file, with a fake redis server recording
 *   what it is sent;
 * - code-owned-by-backup-user: ferryd's package copied into a B-owned directory;
 * - inherited-descriptor-not-in-helper: a descriptor leaked into ferryd by whoever
 *   started it must not reach a helper running as the app's user. (Node 20 itself marks
 *   the descriptors it inherits close-on-exec at start-up; ferryd's own close_range makes
 *   the rule independent of that, and test/daemon/descriptors.test.ts checks it alone.)
 *
 * Bounds: every ferryd run is bounded by 60 s; the code copy is the package's dist/ and
 * node_modules/ (a few thousand files).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { once } from "node:events";
import {
  chmodSync,
  chownSync,
  closeSync,
  existsSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { createServer, type Server } from "node:net";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  ensureUser,
  FERRYD,
  ferry,
  needsRoot,
  ROOT,
  type RunResult,
  run,
  type TestUser,
} from "../helpers/proc.js";

/** Runs ferryd (as root, --user B) expecting it to refuse and exit. */
function ferrydRefuses(ferrydJs: string, config: string, user: TestUser, extra: string[] = []) {
  return run([process.execPath, ferrydJs, "--config", config, "--user", user.name, ...extra], {
    timeoutMs: 60_000,
  });
}

/** Starts ferryd and waits until it listens; `stdio` may add inherited descriptors. */
async function startListening(
  argv: string[],
  stdio: (number | "ignore" | "pipe")[] = ["ignore", "ignore", "pipe"],
) {
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: stdio as never });
  let log = "";
  child.stderr?.on("data", (d: Buffer) => {
    log += d.toString();
  });
  const deadline = Date.now() + 60_000;
  while (!log.includes('"msg":"ferryd listening"')) {
    if (child.exitCode !== null) throw new Error(`ferryd exited ${child.exitCode}: ${log}`);
    if (Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`ferryd did not start: ${log}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return {
    child,
    log: () => log,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5000);
      await once(child, "exit");
      clearTimeout(t);
    },
  };
}

function refusedWith(r: RunResult, code: string, fragment: string): void {
  assert.equal(r.code, 2, `ferryd did not refuse (exit ${r.code}): ${r.stderr}`);
  assert.match(r.stderr, new RegExp(code));
  assert.ok(r.stderr.includes(fragment), `${JSON.stringify(fragment)} not in: ${r.stderr}`);
}

describe("the privilege boundary, attacked", { skip: needsRoot, timeout: 600_000 }, () => {
  let dir: string;
  let app: TestUser;
  let backup: TestUser;

  before(() => {
    app = ensureUser("ferry-e2e-app");
    backup = ensureUser("ferry-e2e-bk");
    dir = mkdtempSync("/tmp/ferry-trust-");
    chmodSync(dir, 0o755);
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  function filesConfig(at: string, name: string): string {
    const root = join(at, `${name}-data`);
    mkdirSync(root, { recursive: true });
    writeFileSync(join(root, "x"), "x\n");
    return `version = 1\nsocket = "${at}/${name}-run/ferry.sock"\nstate_dir = "${at}/${name}-state"\n\n[apps.notes]\ndriver = "files"\npaths = ["${root}"]\nowner = "root"\nallow_root = true\n`;
  }

  test("config-link-into-backup-user-dir: refused at start-up and by --check-config", async () => {
    const base = join(dir, "cfglink");
    const etc = join(base, "etc");
    const bdir = join(base, "bk");
    mkdirSync(etc, { recursive: true, mode: 0o755 });
    mkdirSync(bdir, { mode: 0o755 });
    const text = filesConfig(base, "c");
    writeFileSync(join(bdir, "ferry.toml"), text, { mode: 0o644 }); // root-owned file…
    chownSync(bdir, backup.uid, backup.gid); // …in B's directory
    symlinkSync(join(bdir, "ferry.toml"), join(etc, "ferry.toml"));
    const cfg = join(etc, "ferry.toml");
    const before = readdirSync(base).sort();

    refusedWith(await ferrydRefuses(FERRYD, cfg, backup), "CONFIG_UNSAFE", bdir);
    refusedWith(
      await ferrydRefuses(FERRYD, cfg, backup, ["--check-config"]),
      "CONFIG_UNSAFE",
      bdir,
    );
    // B replaces the file in its directory with one declaring /root: still refused.
    const evil = join(bdir, "evil.toml");
    writeFileSync(evil, text.replace(join(base, "c-data"), "/root"));
    chownSync(evil, backup.uid, backup.gid);
    const mv = await run(["mv", evil, join(bdir, "ferry.toml")], { user: backup });
    assert.equal(mv.code, 0, mv.stderr);
    refusedWith(await ferrydRefuses(FERRYD, cfg, backup), "CONFIG_UNSAFE", bdir);
    assert.deepEqual(readdirSync(base).sort(), before, "ferryd created something");
    assert.ok(!existsSync(join(base, "c-run/ferry.sock")));

    // Control: the same link into a root-owned directory is accepted.
    writeFileSync(join(bdir, "ferry.toml"), text);
    chownSync(join(bdir, "ferry.toml"), 0, 0);
    chownSync(bdir, 0, 0);
    const ok = await ferrydRefuses(FERRYD, cfg, backup, ["--check-config"]);
    assert.equal(ok.code, 0, ok.stderr);
  });

  describe("secret-file-symlink-swap", () => {
    let fake: Server;
    let port: number;
    let received = "";
    let secret: string;
    let rootOnly: string;
    let base: string;

    before(async () => {
      fake = createServer((s) => {
        s.on("data", (d: Buffer) => {
          received += d.toString("latin1");
          s.write("-ERR this is not redis\r\n");
        });
        s.on("error", () => {});
      });
      fake.listen(0, "127.0.0.1");
      await once(fake, "listening");
      port = (fake.address() as { port: number }).port;
      base = join(dir, "secret");
      mkdirSync(base, { mode: 0o755 });
      mkdirSync(join(base, "rootonly"), { mode: 0o700 });
      chmodSync(join(base, "rootonly"), 0o700);
      secret = `ROOT-ONLY-${randomBytes(8).toString("hex")}`;
      rootOnly = join(base, "rootonly/secret");
      writeFileSync(rootOnly, `${secret}\n`, { mode: 0o600 });
      mkdirSync(join(base, "owner"), { mode: 0o755 }); // the app owner's directory
      chownSync(join(base, "owner"), app.uid, app.gid);
      mkdirSync(join(base, "secrets"), { mode: 0o755 }); // root's
    });
    after(() => fake?.close());

    function redisConfig(name: string, passwordFile: string): string {
      const cfg = join(base, `${name}.toml`);
      writeFileSync(
        cfg,
        `version = 1\nsocket = "${base}/${name}-run/ferry.sock"\nstate_dir = "${base}/${name}-state"\n\n[apps.cache]\ndriver = "redis"\nhost = "127.0.0.1"\nport = ${port}\npassword_file = "${passwordFile}"\n`,
      );
      return cfg;
    }

    test("the owner's link to a root-only file: refused, nothing sent", async () => {
      const pw = join(base, "owner/pw");
      // The app owner, in its own directory, points the password file at root's secret.
      const ln = await run(["ln", "-s", rootOnly, pw], { user: app });
      assert.equal(ln.code, 0, ln.stderr);
      const cfg = redisConfig("link", pw);
      refusedWith(
        await ferrydRefuses(FERRYD, cfg, backup, ["--check-config"]),
        "CONFIG_UNSAFE",
        "apps.cache.password_file",
      );
      refusedWith(await ferrydRefuses(FERRYD, cfg, backup), "CONFIG_UNSAFE", join(base, "owner"));
      assert.ok(!existsSync(join(base, "link-run")), "ferryd made its socket directory");
      assert.ok(!received.includes(secret), "the root-only secret reached the fake server");
    });

    test("hardlink and wrong-owner variants: refused, nothing sent", async () => {
      const hard = join(base, "secrets/pw-hard");
      linkSync(rootOnly, hard);
      refusedWith(
        await ferrydRefuses(FERRYD, redisConfig("hard", hard), backup),
        "CONFIG_UNSAFE",
        "2 hard links",
      );
      const owned = join(base, "secrets/pw-owned");
      writeFileSync(owned, "owner-pw\n", { mode: 0o600 });
      chownSync(owned, app.uid, app.gid);
      refusedWith(
        await ferrydRefuses(FERRYD, redisConfig("owned", owned), backup),
        "CONFIG_UNSAFE",
        `owned by uid ${app.uid}`,
      );
      const writable = join(base, "secrets/pw-writable");
      writeFileSync(writable, "pw\n", { mode: 0o600 });
      chmodSync(writable, 0o666);
      refusedWith(
        await ferrydRefuses(FERRYD, redisConfig("writable", writable), backup),
        "CONFIG_UNSAFE",
        "writable by its group or by everyone",
      );
      assert.ok(!received.includes(secret));
    });

    test("swapped for a link after start-up: the read at connect time refuses it too", async () => {
      const pw = join(base, "secrets/pw");
      writeFileSync(pw, "good-pw\n", { mode: 0o600 });
      const cfg = redisConfig("late", pw);
      const d = await startListening([
        process.execPath,
        FERRYD,
        "--config",
        cfg,
        "--user",
        backup.name,
      ]);
      try {
        rmSync(pw);
        symlinkSync(rootOnly, pw);
        const r = await ferry(join(base, "late-run/ferry.sock"), ["export", "cache"], {
          user: backup,
          timeoutMs: 60_000,
        });
        assert.notEqual(r.code, 0);
        assert.match(r.stderr, /CONFIG_UNSAFE|symlink/);
        assert.ok(!received.includes(secret), "the root-only secret reached the fake server");
        assert.ok(d.child.exitCode === null, "ferryd died");
      } finally {
        await d.stop();
      }
    });
  });

  test("code-owned-by-backup-user: refused before serving, no socket", async () => {
    const base = join(dir, "code");
    const code = join(base, "pkg");
    mkdirSync(code, { recursive: true, mode: 0o755 });
    for (const p of ["package.json", "dist", "node_modules"]) {
      execFileSync("cp", ["-a", join(ROOT, p), code]);
    }
    const cfg = join(base, "ferry.toml");
    writeFileSync(cfg, filesConfig(base, "k"));
    const ferrydJs = join(code, "dist/src/cli/ferryd.js");
    const sock = join(base, "k-run/ferry.sock");

    // A clone owned by B (the backup user's checkout).
    execFileSync("chown", ["-R", `${backup.name}:${backup.name}`, code]);
    refusedWith(
      await ferrydRefuses(ferrydJs, cfg, backup),
      "CODE_UNSAFE",
      `${code} is owned by uid ${backup.uid}, not root`,
    );
    assert.ok(!existsSync(sock));

    // code-planted-module-runs-before-check: B plants code in a module ferryd loads; the
    // check must refuse before any of ferryd's modules (other than the check) is loaded,
    // so the planted code never runs, neither as root nor as B with capabilities.
    const pwned = join(base, `pwned-${randomBytes(4).toString("hex")}`);
    for (const planted of ["dist/src/core/version.js", "dist/src/cli/ferryd-main.js"]) {
      await run(
        [
          "sh",
          "-c",
          // (a newline first: the compiled file ends in a comment without one)
          `echo >> ${join(code, planted)}; echo 'import { writeFileSync as __w } from "node:fs"; __w(${JSON.stringify(pwned)}, "uid " + process.getuid(), { flag: "a" });' >> ${join(code, planted)}`,
        ],
        { user: backup },
      );
    }
    refusedWith(await ferrydRefuses(ferrydJs, cfg, backup), "CODE_UNSAFE", code);
    assert.ok(!existsSync(pwned), "code planted by the backup user ran before the check");
    for (const planted of ["dist/src/core/version.js", "dist/src/cli/ferryd-main.js"]) {
      execFileSync("cp", [join(ROOT, planted), join(code, planted)]);
    }

    // Root-owned, but one dependency file B may write.
    execFileSync("chown", ["-R", "root:root", code]);
    const deep = join(code, "node_modules/zod/package.json");
    chownSync(deep, backup.uid, backup.gid);
    refusedWith(await ferrydRefuses(ferrydJs, cfg, backup), "CODE_UNSAFE", deep);
    chownSync(deep, 0, 0);
    // Root-owned, but a dist/ directory writable by everyone.
    chmodSync(join(code, "dist/src/daemon"), 0o777);
    refusedWith(
      await ferrydRefuses(ferrydJs, cfg, backup),
      "CODE_UNSAFE",
      join(code, "dist/src/daemon"),
    );
    assert.ok(!existsSync(sock));

    // Control: installed properly, the same copy starts.
    chmodSync(join(code, "dist/src/daemon"), 0o755);
    const d = await startListening([
      process.execPath,
      ferrydJs,
      "--config",
      cfg,
      "--user",
      backup.name,
    ]);
    await d.stop();
  });

  test("code-home-node-modules-planted: a module in the backup user's ~/.node_modules never loads", async () => {
    // CommonJS require() falls back to $HOME/.node_modules for a package it cannot find
    // (debug, under ioredis, probes for supports-color at start-up), and HOME is the backup
    // user's once ferryd has switched to it.
    const homeUser = ensureUser("ferry-home-bk");
    const base = join(dir, "home");
    const home = join(base, "b-home");
    mkdirSync(join(home, ".node_modules/supports-color"), { recursive: true, mode: 0o755 });
    execFileSync("usermod", ["-d", home, homeUser.name]);
    const pwned = join(base, `pwned-${randomBytes(4).toString("hex")}`);
    writeFileSync(
      join(home, ".node_modules/supports-color/index.js"),
      `require("fs").writeFileSync(${JSON.stringify(pwned)}, "uid " + process.getuid());\nmodule.exports = {};\n`,
    );
    execFileSync("chown", ["-R", `${homeUser.name}:${homeUser.name}`, home]);
    const cfg = join(base, "ferry.toml");
    writeFileSync(cfg, filesConfig(base, "h"));
    try {
      const d = await startListening([
        process.execPath,
        FERRYD,
        "--config",
        cfg,
        "--user",
        homeUser.name,
      ]);
      await d.stop();
      assert.ok(!existsSync(pwned), "a module the backup user planted in its home ran in ferryd");
    } finally {
      execFileSync("usermod", ["-d", "/nonexistent", homeUser.name]);
    }
  });

  test("inherited-descriptor-not-in-helper: a leaked descriptor never reaches a helper", async () => {
    const base = join(dir, "fd");
    mkdirSync(base, { mode: 0o755 });
    const marker = join(base, `leaked-${randomBytes(4).toString("hex")}`);
    writeFileSync(marker, "a file root opened\n", { mode: 0o600 });
    const cfg = join(base, "ferry.toml");
    writeFileSync(
      cfg,
      `version = 1\nsocket = "${base}/run/ferry.sock"\nstate_dir = "${base}/state"\n\n[apps.tool]\ndriver = "command"\nos_user = "${app.name}"\nbackup_command = ["sh", "-c", "ls -l /proc/self/fd; echo fd-listing-done"]\n`,
    );
    const fd = openSync(marker, "r");
    let d: Awaited<ReturnType<typeof startListening>>;
    try {
      // Whoever starts ferryd leaks descriptor 5 (no close-on-exec) into it.
      d = await startListening(
        [process.execPath, FERRYD, "--config", cfg, "--user", backup.name],
        ["ignore", "ignore", "pipe", "ignore", "ignore", fd],
      );
    } finally {
      closeSync(fd);
    }
    try {
      // Marked close-on-exec first thing, it did not even survive root's switch to B.
      const held = readdirSync(`/proc/${d.child.pid}/fd`).map((n) => {
        try {
          return readlinkSync(`/proc/${d.child.pid}/fd/${n}`);
        } catch {
          return "";
        }
      });
      assert.ok(!held.includes(marker), "ferryd (as B) still holds the leaked descriptor");
      const r = await ferry(join(base, "run/ferry.sock"), ["export", "tool"], {
        user: backup,
        timeoutMs: 60_000,
      });
      assert.equal(r.code, 0, r.stderr + d.log());
      const listing = r.stdout.toString("latin1");
      assert.ok(listing.includes("fd-listing-done"), "the helper's listing is not in the archive");
      assert.ok(!listing.includes(marker), `the leaked descriptor reached the helper:\n${listing}`);
    } finally {
      await d.stop();
    }
  });
});
