/**
 * The Debian package, end to end, as an admin would meet it (root only: it installs and
 * purges a package, and creates users): `scripts/build-deb.sh` (`npm run deb`) builds
 * ferry_<version>_<arch>.deb from `npm pack`'s tarball; `dpkg -i` installs it; the
 * installed programs work — `ferryd --check-config`, a user-mode export and restore, and
 * ferryd as the package's own `ferry-backup` user with its capabilities; `dpkg -r` and
 * `dpkg --purge` then leave nothing of it behind but what docs/ops.md says purge keeps:
 * the backups in /var/backups/ferry (with a message) and the user `ferry-backup`.
 *
 * Needs Node.js >= 20 as a dpkg package (`Depends: nodejs (>= 20)`): on Ferry's CI
 * machines it is NodeSource's nodejs 20, installed with dpkg. It refuses to run (fails,
 * never skips as root) when the machine already has a ferry package or Ferry's
 * directories, since it would remove them.
 *
 * Bounds: one build (~45 s: tsc, npm ci --omit=dev from the npm cache, xz), one install
 * and purge (~15 s), a handful of small files; every command has the 2-minute timeout of
 * test/helpers/proc.ts (the build 4 minutes).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { VERSION } from "../../src/core/version.js";
import {
  asUser as asUserArgv,
  ensureUser,
  isRoot,
  ROOT,
  run,
  type TestUser,
} from "../helpers/proc.js";

const PACKAGE_DIRS = ["/usr/lib/ferry", "/run/ferry", "/var/lib/ferry", "/var/backups/ferry"];
const BACKUP_USER = "ferry-backup";
// biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format, not JavaScript's
const SHOW_STATUS = "-f=${Status}";
// biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's format, not JavaScript's
const SHOW_STATUS_VERSION = "-f=${Status} ${Version}";
const PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/** Runs a command to completion (stdout as text); never throws. */
function sh(argv: string[], opts: { input?: string; timeout?: number } = {}) {
  const r = spawnSync(argv[0] as string, argv.slice(1), {
    encoding: "utf8",
    input: opts.input,
    timeout: opts.timeout ?? 120_000,
    env: { ...process.env, PATH: process.env.PATH ?? PATH, LC_ALL: "C" },
  });
  return { code: r.status, stdout: r.stdout ?? "", stderr: `${r.stderr ?? ""}${r.error ?? ""}` };
}

/** Whether a path exists, a dangling symlink included. */
function present(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

function userExists(name: string): boolean {
  return sh(["getent", "passwd", name]).code === 0;
}

/** `ARGS…` as `user` through runuser, as docs/ops.md does it. */
function asUser(user: string, argv: string[], input?: Buffer) {
  const env = { PATH: process.env.PATH ?? PATH };
  return run(
    ["runuser", "-u", user, "--", ...argv],
    input === undefined ? { env } : { env, input },
  );
}

/** The ferry links and units that `systemctl enable` made, under /etc/systemd/system. */
function enabledLinks(): string[] {
  const base = "/etc/systemd/system";
  if (!existsSync(base)) return [];
  const out: string[] = [];
  for (const d of readdirSync(base)) {
    if (!d.endsWith(".wants") && !d.endsWith(".requires")) continue;
    for (const f of readdirSync(join(base, d))) if (/^ferry/.test(f)) out.push(join(base, d, f));
  }
  return out;
}

describe("the Debian package", { skip: isRoot ? false : "needs root (dpkg -i, users)" }, () => {
  let dir = "";
  let deb = "";
  let contents: string[] = [];
  let existedBefore = new Set<string>();
  let backupUserExisted = false;
  let demo: TestUser;
  let appOwner: TestUser;

  before(() => {
    const node = sh(["dpkg-query", "-W", SHOW_STATUS_VERSION, "nodejs"]);
    assert.match(
      node.stdout,
      /^install ok installed /,
      "this test installs the package with dpkg, whose Depends: nodejs (>= 20) needs Node.js as a dpkg package (NodeSource's nodejs 20 on Ferry's CI machines, or Debian 13's)",
    );
    const version = node.stdout.split(" ").at(-1) as string;
    assert.equal(
      sh(["dpkg", "--compare-versions", version, "ge", "20"]).code,
      0,
      `nodejs ${version} is older than 20`,
    );
    assert.notEqual(
      sh(["dpkg-query", "-W", SHOW_STATUS, "ferry"]).stdout.trim(),
      "install ok installed",
      "a ferry package is installed on this machine: this test would purge it",
    );
    for (const p of PACKAGE_DIRS) {
      assert.ok(!existsSync(p), `${p} exists: this test would remove it (a Ferry install?)`);
    }
    assert.deepEqual(enabledLinks(), [], "ferry units are enabled on this machine");
    backupUserExisted = userExists(BACKUP_USER);
    demo = ensureUser("ferry-deb-demo");
    appOwner = ensureUser("ferry-deb-app");
    dir = mkdtempSync("/tmp/ferry-deb-");
    chmodSync(dir, 0o755);
  });

  after(() => {
    // Whatever happened, the machine is left as it was found.
    if (sh(["dpkg-query", "-W", SHOW_STATUS, "ferry"]).stdout.includes("installed")) {
      sh(["dpkg", "--purge", "ferry"]);
    }
    rmSync("/var/backups/ferry", { recursive: true, force: true });
    if (!backupUserExisted && userExists(BACKUP_USER)) sh(["userdel", BACKUP_USER]);
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  test("npm run deb builds ferry_<version>_<arch>.deb: pinned app, units, snippets, man pages", () => {
    const out = join(dir, "out");
    const r = sh(["bash", join(ROOT, "scripts/build-deb.sh"), out], { timeout: 240_000 });
    assert.equal(r.code, 0, r.stderr);
    const arch = sh(["dpkg", "--print-architecture"]).stdout.trim();
    deb = join(out, `ferry_${VERSION.replace("-", "~")}_${arch}.deb`);
    assert.equal(r.stdout.trim().split("\n").at(-1), deb);

    const field = (f: string) => sh(["dpkg-deb", "-f", deb, f]).stdout.trim();
    assert.equal(field("Package"), "ferry");
    assert.equal(field("Architecture"), arch);
    assert.match(field("Depends"), /(^|, )nodejs \(>= 20\)(,|$)/);
    for (const tool of ["postgresql-client", "mariadb-client", "sqlite3", "redis-tools"]) {
      assert.match(`${field("Recommends")}, ${field("Suggests")}`, new RegExp(`\\b${tool}\\b`));
    }

    const fsys = execFileSync("dpkg-deb", ["--fsys-tarfile", deb], { maxBuffer: 1 << 30 });
    const listed = execFileSync("tar", ["-tf", "-"], {
      input: fsys,
      encoding: "utf8",
      maxBuffer: 1 << 30,
    })
      .split("\n")
      .filter((l) => l !== "" && l !== "./");
    contents = listed.map((l) => l.slice(1).replace(/\/$/, ""));
    for (const want of [
      "/usr/bin/ferry",
      "/usr/bin/ferryd",
      "/usr/lib/ferry/package.json",
      "/usr/lib/ferry/npm-shrinkwrap.json",
      "/usr/lib/ferry/dist/src/cli/ferryd.js",
      "/usr/lib/ferry/node_modules/koffi/package.json",
      "/usr/lib/systemd/system/ferryd.service",
      "/usr/lib/systemd/system/ferry.socket",
      "/usr/lib/systemd/system/ferry-backup.service",
      "/usr/lib/systemd/system/ferry-backup.timer",
      "/usr/lib/tmpfiles.d/ferry.conf",
      "/usr/lib/sysusers.d/ferry.conf",
      "/usr/share/doc/ferry/examples/ferry.toml",
      "/usr/share/doc/ferry/ops.md",
      "/usr/share/man/man1/ferry.1.gz",
      "/usr/share/man/man8/ferryd.8.gz",
      "/usr/share/man/man5/ferry.toml.5.gz",
    ]) {
      assert.ok(contents.includes(want), `${want} is not in the package`);
    }
    // The application is the built code and its production dependencies, nothing else:
    // no sources, tests, benchmarks, CI files, source maps or development dependencies.
    const app = "/usr/lib/ferry/";
    const top = new Set(
      contents.filter((p) => p.startsWith(app)).map((p) => p.slice(app.length).split("/")[0]),
    );
    assert.deepEqual([...top].sort(), [
      "dist",
      "node_modules",
      "npm-shrinkwrap.json",
      "package.json",
    ]);
    const code = listed
      .map((l) => l.slice(1))
      .filter((p) => p.startsWith(`${app}dist/`) && !p.endsWith("/"));
    assert.ok(code.length > 50, `${code.length} files in dist`);
    assert.deepEqual(
      code.filter((p) => !p.startsWith(`${app}dist/src/`) || !/\.(js|d\.ts)$/.test(p)),
      [],
    );
    const devDeps = Object.keys(
      (
        JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")) as {
          devDependencies: Record<string, string>;
        }
      ).devDependencies,
    );
    for (const dev of devDeps) {
      assert.ok(!top.has("node_modules") || !contents.includes(`${app}node_modules/${dev}`), dev);
    }
    const pinned = JSON.parse(
      execFileSync("tar", ["-xOf", "-", "./usr/lib/ferry/node_modules/koffi/package.json"], {
        input: fsys,
        encoding: "utf8",
      }),
    ) as { version: string };
    const lock = JSON.parse(readFileSync(join(ROOT, "npm-shrinkwrap.json"), "utf8")) as {
      packages: Record<string, { version: string }>;
    };
    assert.equal(pinned.version, lock.packages["node_modules/koffi"]?.version, "as pinned");
  });

  test("dpkg -i installs it: the backup user, its directories, nothing enabled or started", () => {
    assert.ok(deb !== "", "the package was built");
    existedBefore = new Set(contents.filter((p) => present(p)));
    const r = sh(["dpkg", "-i", deb]);
    assert.equal(r.code, 0, `${r.stdout}\n${r.stderr}`);
    assert.deepEqual(
      contents.filter((p) => !present(p)),
      [],
      "listed in the package but not installed",
    );

    const pw = sh(["getent", "passwd", BACKUP_USER]).stdout.trim().split(":");
    assert.equal(pw[0], BACKUP_USER);
    assert.ok(Number(pw[2]) < 1000, `${BACKUP_USER} is a system user (uid ${pw[2]})`);
    assert.equal(pw[6], "/usr/sbin/nologin");
    const uid = Number(pw[2]);
    const check = (p: string, mode: number, owner: number) => {
      const st = statSync(p);
      assert.ok(st.isDirectory(), p);
      assert.equal(st.mode & 0o7777, mode, `${p} mode ${(st.mode & 0o7777).toString(8)}`);
      assert.equal(st.uid, owner, `${p} owner`);
    };
    check("/run/ferry", 0o700, uid);
    check("/var/backups/ferry", 0o700, uid);
    check("/var/lib/ferry", 0o711, 0);
    // The code ferryd runs is root's and nobody else's to change (ferryd checks it too).
    for (const p of ["/usr/lib/ferry", "/usr/lib/ferry/dist/src/cli/ferryd.js"]) {
      const st = statSync(p);
      assert.equal(st.uid, 0, p);
      assert.equal(st.mode & 0o022, 0, `${p} is writable by group or others`);
    }

    // Nothing runs before the admin wrote /etc/ferry/ferry.toml: no unit is enabled, and
    // every unit is conditioned on the config.
    assert.deepEqual(enabledLinks(), []);
    for (const unit of ["ferryd.service", "ferry.socket", "ferry-backup.service"]) {
      const text = readFileSync(`/usr/lib/systemd/system/${unit}`, "utf8");
      assert.match(text, /^ConditionPathExists=\/etc\/ferry\/ferry\.toml$/m, unit);
    }

    const v = sh(["/usr/bin/ferry", "--version"]);
    assert.equal(v.code, 0, v.stderr);
    assert.equal(v.stdout, `ferry ${VERSION}\n`);
    // As root, ferryd checks its own code (CODE_UNSAFE) before it prints anything.
    const d = sh(["/usr/bin/ferryd", "--version"]);
    assert.equal(d.code, 0, d.stderr);
    assert.equal(d.stdout, `ferryd ${VERSION}\n`);
  });

  test("the installed ferryd --check-config judges a config: valid, and broken with its line", () => {
    // The package's own socket and state directory, so the config matches its units.
    const data = join(dir, "checked");
    mkdirSync(data);
    chownSync(data, demo.uid, demo.gid);
    const good = join(dir, "check.toml");
    writeFileSync(
      good,
      `version = 1\nsocket = "/run/ferry/ferry.sock"\nstate_dir = "/var/lib/ferry"\n\n[apps.notes]\ndriver = "files"\npaths = ["${data}"]\nowner = "${demo.name}"\n`,
    );
    const ok = sh(["/usr/bin/ferryd", "--check-config", "--config", good]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(ok.stdout, `${good}: valid, 1 application(s)\n`);
    const bad = join(dir, "broken.toml");
    writeFileSync(bad, `${readFileSync(good, "utf8")}colour = "blue"\n`);
    const no = sh(["/usr/bin/ferryd", "--check-config", "--config", bad]);
    assert.equal(no.code, 2, no.stdout);
    assert.match(no.stderr, new RegExp(`${bad}:9: apps\\.notes\\.colour`));
  });

  test("user mode with the installed programs: export, damage, import, as in the demo", async () => {
    const base = join(dir, "user");
    const notes = join(base, "notes");
    mkdirSync(join(notes, "drafts"), { recursive: true });
    writeFileSync(join(notes, "todo.txt"), "Buy milk\n");
    writeFileSync(join(notes, "drafts/private.txt"), "secret draft\n", { mode: 0o600 });
    execFileSync("chown", ["-R", `${demo.name}:${demo.name}`, base]);
    const config = join(dir, "user.toml");
    const socket = join(base, "run/ferry.sock");
    writeFileSync(
      config,
      `version = 1\nsocket = "${socket}"\nstate_dir = "${base}/state"\n\n[apps.notes]\ndriver = "files"\npaths = ["${notes}"]\nowner = "${demo.name}"\nrestore = true\n`,
    );
    // setpriv execs ferryd itself (no process in between to pass signals on).
    const daemon = await startInstalledFerryd(asUserArgv(demo, []), config);
    try {
      const ver = await asUser(demo.name, ["/usr/bin/ferry", "--socket", socket, "version"]);
      assert.equal(ver.code, 0, ver.stderr);
      assert.match(
        ver.stdout.toString(),
        new RegExp(
          `^ferry ${VERSION}\\nferryd ${VERSION} .* as ${demo.name} \\(uid ${demo.uid}\\), capabilities: none\\n`,
        ),
      );
      const tar = join(base, "notes.tar");
      const ex = await asUser(demo.name, [
        "/usr/bin/ferry",
        "--socket",
        socket,
        "export",
        "notes",
        "-o",
        tar,
      ]);
      assert.equal(ex.code, 0, ex.stderr);
      const names = execFileSync("tar", ["-tf", tar], { encoding: "utf8" }).split("\n");
      for (const n of [
        ".ferry/manifest.json",
        "data/0/todo.txt",
        "data/0/drafts/private.txt",
        ".ferry/end.json",
      ])
        assert.ok(names.includes(n), `${n} in ${names.join(",")}`);

      writeFileSync(join(notes, "todo.txt"), "overwritten\n");
      writeFileSync(join(notes, "junk.txt"), "junk\n");
      const im = await asUser(demo.name, [
        "/usr/bin/ferry",
        "--socket",
        socket,
        "import",
        "notes",
        "-i",
        tar,
      ]);
      assert.equal(im.code, 0, im.stderr);
      assert.equal(readFileSync(join(notes, "todo.txt"), "utf8"), "Buy milk\n");
      assert.ok(!existsSync(join(notes, "junk.txt")), "the restore replaced the tree");
    } finally {
      await daemon.stop();
    }
  });

  test("ferryd as the package's ferry-backup user, with capabilities: reads what that user cannot", async () => {
    const base = join(dir, "service");
    const data = join(base, "app");
    mkdirSync(data, { recursive: true });
    writeFileSync(join(data, "secret.txt"), "only the app reads this\n", { mode: 0o600 });
    execFileSync("chown", ["-R", `${appOwner.name}:${appOwner.name}`, data]);
    chmodSync(data, 0o700);
    chmodSync(base, 0o755);
    const socket = join(base, "run/ferry.sock");
    const config = join(base, "ferry.toml");
    writeFileSync(
      config,
      `version = 1\nsocket = "${socket}"\nstate_dir = "${base}/state"\n\n[apps.app]\ndriver = "files"\npaths = ["${data}"]\nowner = "${appOwner.name}"\n`,
    );
    chownSync(config, 0, 0);
    const alone = await asUser(BACKUP_USER, ["cat", join(data, "secret.txt")]);
    assert.notEqual(alone.code, 0, "the backup user cannot read the app's file by itself");
    const daemon = await startInstalledFerryd([], config, ["--user", BACKUP_USER]);
    try {
      const tar = join(dir, "service.tar");
      const out = await asUser(BACKUP_USER, [
        "/usr/bin/ferry",
        "--socket",
        socket,
        "export",
        "app",
      ]);
      assert.equal(out.code, 0, out.stderr);
      writeFileSync(tar, out.stdout);
      assert.equal(
        execFileSync("tar", ["-xOf", tar, "data/0/secret.txt"], { encoding: "utf8" }),
        "only the app reads this\n",
      );
      const ver = await asUser(BACKUP_USER, ["/usr/bin/ferry", "--socket", socket, "version"]);
      assert.match(
        ver.stdout.toString(),
        new RegExp(`as ${BACKUP_USER} \\(uid \\d+\\), capabilities: \\w`),
      );
    } finally {
      await daemon.stop();
    }
  });

  test("dpkg -r, then dpkg --purge: nothing left but the backups (said so) and the documented user", () => {
    assert.ok(deb !== "", "the package was built");
    // The admin enabled the units (offline: systemctl only writes links here).
    const en = sh(["systemctl", "enable", "ferry.socket", "ferryd.service", "ferry-backup.timer"]);
    assert.equal(en.code, 0, en.stderr);
    assert.equal(enabledLinks().length, 3, enabledLinks().join(", "));

    const rm = sh(["dpkg", "-r", "ferry"]);
    assert.equal(rm.code, 0, `${rm.stdout}\n${rm.stderr}`);
    assert.deepEqual(enabledLinks(), [], "dpkg -r disables the units it removes");
    for (const p of ["/usr/bin/ferry", "/usr/bin/ferryd", "/usr/lib/ferry", "/run/ferry"]) {
      assert.ok(!existsSync(p), `${p} survived dpkg -r`);
    }
    assert.ok(existsSync("/var/backups/ferry"), "dpkg -r keeps the backups");

    // A backup made meanwhile is user data: purge keeps it and says so.
    mkdirSync("/var/backups/ferry/repo");
    writeFileSync("/var/backups/ferry/repo/config", "a repository\n");
    const purge = sh(["dpkg", "--purge", "ferry"]);
    assert.equal(purge.code, 0, `${purge.stdout}\n${purge.stderr}`);
    assert.match(purge.stderr, /kept \/var\/backups\/ferry: it holds your backups/);
    assert.match(purge.stderr, /kept the user and group ferry-backup/);
    assert.equal(readFileSync("/var/backups/ferry/repo/config", "utf8"), "a repository\n");

    assert.notEqual(sh(["dpkg-query", "-W", SHOW_STATUS, "ferry"]).code, 0, "unknown to dpkg");
    const left = contents.filter((p) => !existedBefore.has(p) && present(p));
    assert.deepEqual(left, [], "files of the package left after purge");
    for (const p of ["/usr/lib/ferry", "/run/ferry", "/var/lib/ferry"]) {
      assert.ok(!existsSync(p), `${p} survived the purge`);
    }
    assert.deepEqual(
      readdirSync("/var/lib/dpkg/info").filter((f) => f.startsWith("ferry.")),
      [],
      "dpkg's records of the package",
    );
    assert.deepEqual(enabledLinks(), []);
    // The documented policy: the user stays (files it owns, like that repository, may
    // outlive the package); the admin removes it with userdel.
    assert.ok(userExists(BACKUP_USER), "purge keeps the ferry-backup user");
  });
});

/** Starts the installed /usr/bin/ferryd (behind `prefix`) and waits until it listens. */
async function startInstalledFerryd(prefix: string[], config: string, extra: string[] = []) {
  const argv = [...prefix, "/usr/bin/ferryd", "--config", config, ...extra];
  const child = spawn(argv[0] as string, argv.slice(1), {
    stdio: ["ignore", "ignore", "pipe"],
    env: { ...process.env, PATH: process.env.PATH ?? PATH },
  });
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
