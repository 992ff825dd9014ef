/**
 * The systemd units and example config in deploy/: they load without a single warning
 * (`systemd-analyze verify`), they say what ferryd needs and nothing more, their hardening
 * does not regress (`systemd-analyze security` score and list of exposures, measured and
 * explained in docs/ops.md), and the example config matches the schema.
 *
 * Runs without systemd as PID 1: verify and security both work offline. The units name
 * /usr/bin/ferryd and /usr/bin/ferry, which verify insists are executable, so they are
 * checked in a copy that points at this tree's built programs instead.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn, spawnSync } from "node:child_process";
import {
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { parse } from "smol-toml";
import { SERVICE_CAPS } from "../../src/core/caps.js";
import { lookupUser } from "../../src/core/users.js";
import { analyseConfig } from "../../src/daemon/config.js";
import { ensureUser, FERRY, FERRYD, isRoot, ROOT } from "../helpers/proc.js";

const DEPLOY = join(ROOT, "deploy");
const UNITS = ["ferryd.service", "ferry.socket", "ferry-backup.service", "ferry-backup.timer"];
const BACKUP_USER = "ferry-backup";

/**
 * Measured with systemd 252 (Debian 12), `systemd-analyze security --offline=yes`.
 * Each remaining exposure is explained in docs/ops.md; a unit may lose exposures (then
 * lower the score here) but never gain one.
 */
const SECURITY = {
  "ferryd.service": {
    maxScore: 2.1,
    exposures: [
      "SystemCallFilter=~@resources",
      "SystemCallFilter=~@privileged",
      "RootDirectory=/RootImage=",
      "AmbientCapabilities=",
      "CapabilityBoundingSet=~CAP_(DAC_*|FOWNER|IPC_OWNER)",
      "MemoryDenyWriteExecute=",
      "CapabilityBoundingSet=~CAP_(CHOWN|FSETID|SETFCAP)",
      "CapabilityBoundingSet=~CAP_SET(UID|GID|PCAP)",
      "RestrictAddressFamilies=~AF_UNIX",
      "RestrictAddressFamilies=~AF_(INET|INET6)",
      "ProtectHome=",
      "ProcSubset=",
      "PrivateNetwork=",
      "PrivateUsers=",
      "DeviceAllow=",
      "IPAddressDeny=",
    ],
  },
  "ferry-backup.service": {
    maxScore: 0.2,
    exposures: [
      "RootDirectory=/RootImage=",
      "MemoryDenyWriteExecute=",
      "RestrictAddressFamilies=~AF_UNIX",
      "DeviceAllow=",
    ],
  },
} as const;

/** System calls ferryd and the setpriv it starts helpers with cannot do without. */
const NEEDED_SYSCALLS = [
  // setpriv --reuid --regid --init-groups --inh-caps=-all --ambient-caps=-all --nnp
  "setresuid",
  "setresgid",
  "setgroups",
  "capget",
  "capset",
  "prctl",
  "execve",
  // ferryd's own filesystem and socket work (koffi calls)
  "openat2",
  "renameat2",
  "fchownat",
  "fchown",
  "fchmod",
  "utimensat",
  "syncfs",
  "getsockopt",
  "mkdirat",
  "symlinkat",
  "linkat",
  "unlinkat",
];

const analyze = spawnSync("systemd-analyze", ["--version"], { encoding: "utf8" });
const noAnalyze =
  analyze.status === 0
    ? false
    : "systemd-analyze is not installed (Debian package systemd); unit checks skipped";

/** A unit file as `section` → key → values, in order (repeated keys accumulate). */
type Unit = Map<string, Map<string, string[]>>;

function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header) {
      section = unit.get(header[1] as string) ?? new Map();
      unit.set(header[1] as string, section);
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(section !== undefined && eq > 0, `not a unit line: ${line}`);
    const key = line.slice(0, eq).trim();
    section.set(key, [...(section.get(key) ?? []), line.slice(eq + 1).trim()]);
  }
  return unit;
}

function readUnit(name: string): Unit {
  return parseUnit(readFileSync(join(DEPLOY, name), "utf8"));
}

/** The last value of a key (systemd's rule for single-valued settings). */
function value(unit: Unit, section: string, key: string): string | undefined {
  return unit.get(section)?.get(key)?.at(-1);
}

function words(unit: Unit, section: string, key: string): string[] {
  return (unit.get(section)?.get(key) ?? []).flatMap((v) => v.split(/\s+/).filter(Boolean));
}

/** A copy of deploy/ whose ExecStart= lines run this tree's built ferryd and ferry. */
function copyForVerify(): string {
  const dir = mkdtempSync(join(tmpdir(), "ferry-units-"));
  cpSync(DEPLOY, dir, { recursive: true });
  for (const name of ["ferryd.service", "ferry-backup.service"]) {
    const p = join(dir, name);
    const text = readFileSync(p, "utf8")
      .replaceAll("=/usr/bin/ferryd ", `=${FERRYD} `)
      .replaceAll("=/usr/bin/ferry ", `=${FERRY} `);
    writeFileSync(p, text);
  }
  // The units' Documentation= names Ferry's man pages, which verify looks up with man(1):
  // this tree's pages, built from docs/man, in a man hierarchy on MANPATH.
  const built = join(dir, "man-built");
  execFileSync(process.execPath, [join(ROOT, "scripts/build-man.mjs"), built], { stdio: "ignore" });
  for (const page of readdirSync(built)) {
    const section = join(dir, "man", `man${page.slice(page.lastIndexOf(".") + 1)}`);
    mkdirSync(section, { recursive: true });
    cpSync(join(built, page), join(section, page));
  }
  return dir;
}

/** man(1)'s search path for verify: Ferry's pages from copyForVerify, then the system's. */
function manpath(dir: string): string {
  const system = spawnSync("manpath", { encoding: "utf8", env: { ...process.env, MANPATH: "" } });
  return `${join(dir, "man")}:${system.status === 0 ? system.stdout.trim() : "/usr/share/man"}`;
}

/** Runs `systemd-analyze verify` on the units in `dir`; returns the problems it reports. */
function verify(dir: string): { status: number | null; problems: string[] } {
  const r = spawnSync("systemd-analyze", ["verify", ...UNITS.map((u) => join(dir, u))], {
    encoding: "utf8",
    cwd: dir,
    env: { ...process.env, MANPATH: manpath(dir) },
  });
  // verify also loads the host's units (sockets.target, …); only lines about ours count.
  // Unknown keys and bad values are only warnings (exit status 0), so they count too.
  const ours = [dir, ...UNITS];
  const problems = `${r.stdout}\n${r.stderr}`
    .split("\n")
    .filter((l) => l.trim() !== "" && ours.some((o) => l.includes(o)));
  return { status: r.status, problems };
}

describe("deploy units", { skip: noAnalyze }, () => {
  let dir = "";
  before(() => {
    dir = copyForVerify();
  });
  after(() => {
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  test("systemd-analyze verify accepts every unit and the drop-in without a warning", () => {
    const r = verify(dir);
    assert.deepEqual(r.problems, []);
    assert.equal(r.status, 0);
  });

  test("verify's check would catch a mistake (a misspelt directive in the drop-in)", () => {
    const conf = join(dir, "ferryd.service.d", "restore-paths.conf");
    const good = readFileSync(conf, "utf8");
    try {
      writeFileSync(conf, `${good}ReadWritePath=/srv/typo\n`);
      const r = verify(dir);
      assert.ok(
        r.problems.some((l) => l.includes("ReadWritePath")),
        `no problem reported: ${r.problems.join("\n")}`,
      );
    } finally {
      writeFileSync(conf, good);
    }
  });

  for (const [name, expected] of Object.entries(SECURITY)) {
    test(`${name}: systemd-analyze security at most ${expected.maxScore}, no new exposure`, () => {
      const out = execFileSync(
        "systemd-analyze",
        ["security", "--offline=yes", "--no-pager", join(dir, name)],
        { encoding: "utf8", env: { ...process.env, SYSTEMD_COLORS: "0" } },
      );
      const score = /Overall exposure level for \S+: ([0-9.]+)/.exec(out);
      assert.ok(score, `no overall score in:\n${out}`);
      const exposures = out
        .split("\n")
        .filter((l) => l.startsWith("✗"))
        .map((l) => (l.slice(1).trim().split(/\s+/)[0] as string).trim());
      const unexpected = exposures.filter(
        (e) => !(expected.exposures as readonly string[]).includes(e),
      );
      assert.deepEqual(unexpected, [], `new exposures in ${name}`);
      assert.ok(
        Number(score[1]) <= expected.maxScore,
        `${name} scores ${score[1]}, above the measured ${expected.maxScore}`,
      );
    });
  }

  test("ferryd.service's system call filter allows what ferryd and setpriv need", () => {
    const unit = readUnit("ferryd.service");
    const groups = syscallGroups();
    const allowed = new Set<string>();
    const denied = new Set<string>();
    for (const v of unit.get("Service")?.get("SystemCallFilter") ?? []) {
      const deny = v.startsWith("~");
      for (const item of (deny ? v.slice(1) : v).split(/\s+/).filter(Boolean)) {
        for (const call of expand(item, groups)) (deny ? denied : allowed).add(call);
      }
    }
    assert.ok(allowed.size > 0, "ferryd.service has no SystemCallFilter allow list");
    const missing = NEEDED_SYSCALLS.filter((c) => !allowed.has(c) || denied.has(c));
    assert.deepEqual(missing, []);
    assert.equal(value(unit, "Service", "SystemCallErrorNumber"), "EPERM");
  });
});

/** `systemd-analyze syscall-filter`'s groups: name → members (calls or @groups). */
function syscallGroups(): Map<string, string[]> {
  const out = execFileSync("systemd-analyze", ["syscall-filter", "--no-pager"], {
    encoding: "utf8",
  });
  const groups = new Map<string, string[]>();
  let current: string[] | undefined;
  for (const line of out.split("\n")) {
    const t = line.trim();
    if (t === "" || t.startsWith("#")) continue;
    if (!/^\s/.test(line) && t.startsWith("@")) {
      current = [];
      groups.set(t, current);
    } else current?.push(t);
  }
  return groups;
}

function expand(item: string, groups: Map<string, string[]>, seen = new Set<string>()): string[] {
  if (!item.startsWith("@")) return [item];
  if (seen.has(item)) return [];
  seen.add(item);
  return (groups.get(item) ?? []).flatMap((m) => expand(m, groups, seen));
}

describe("deploy units say what ferryd needs", () => {
  const service = readUnit("ferryd.service");
  const socket = readUnit("ferry.socket");

  test("capabilities: exactly ferryd's, in both the ambient and the bounding set", () => {
    const want = SERVICE_CAPS.map((c) => `CAP_${c.toUpperCase()}`).sort();
    assert.deepEqual(words(service, "Service", "AmbientCapabilities").sort(), want);
    assert.deepEqual(words(service, "Service", "CapabilityBoundingSet").sort(), want);
  });

  test("ferryd.service: notify, backup user, no new privileges, strict and never MDWE", () => {
    const s = (k: string) => value(service, "Service", k);
    assert.equal(s("Type"), "notify");
    assert.equal(s("User"), BACKUP_USER);
    assert.equal(s("ExecStart"), "/usr/bin/ferryd --config /etc/ferry/ferry.toml");
    // The config is checked before ferryd is signalled, so a broken one fails the reload.
    assert.deepEqual(service.get("Service")?.get("ExecReload"), [
      "/usr/bin/ferryd --check-config --config /etc/ferry/ferry.toml",
      "/bin/kill -HUP $MAINPID",
    ]);
    assert.equal(s("NoNewPrivileges"), "yes");
    assert.equal(s("ProtectSystem"), "strict");
    assert.equal(s("PrivateTmp"), "yes");
    // StateDirectory= under User= would make the state directory the backup user's.
    assert.equal(s("StateDirectory"), undefined);
    assert.ok(words(service, "Service", "ReadWritePaths").includes("/var/lib/ferry"));
    assert.equal(s("RuntimeDirectory"), "ferry");
    assert.equal(s("RuntimeDirectoryMode"), "0700");
    // Else stopping ferryd deletes ferry.socket's socket along with /run/ferry.
    assert.equal(s("RuntimeDirectoryPreserve"), "yes");
    // Else systemd SIGTERMs the dump helpers together with ferryd and no job can finish.
    assert.equal(s("KillMode"), "mixed");
    assert.equal(s("SystemCallArchitectures"), "native");
    assert.deepEqual(words(service, "Service", "RestrictAddressFamilies").sort(), [
      "AF_INET",
      "AF_INET6",
      "AF_UNIX",
    ]);
    // V8's JIT needs writable-then-executable memory.
    assert.equal(s("MemoryDenyWriteExecute"), undefined);
    assert.deepEqual(value(service, "Unit", "Requires"), "ferry.socket");
  });

  test("nothing starts before the admin wrote /etc/ferry/ferry.toml", () => {
    for (const name of ["ferryd.service", "ferry.socket", "ferry-backup.service"]) {
      assert.deepEqual(
        readUnit(name).get("Unit")?.get("ConditionPathExists"),
        ["/etc/ferry/ferry.toml"],
        name,
      );
    }
    // The config the units run with is the one they wait for.
    assert.match(
      value(service, "Service", "ExecStart") ?? "",
      / --config \/etc\/ferry\/ferry\.toml$/,
    );
  });

  test("sysusers creates the backup user every unit and tmpfiles line names", () => {
    const lines = readFileSync(join(DEPLOY, "ferry.sysusers"), "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "" && !l.startsWith("#"));
    assert.equal(lines.length, 1);
    assert.match(
      lines[0] as string,
      new RegExp(`^u\\s+${BACKUP_USER}\\s+-\\s+"[^"]+"\\s+/var/lib/ferry\\s+/usr/sbin/nologin$`),
    );
    assert.equal(value(readUnit("ferry-backup.service"), "Service", "Group"), BACKUP_USER);
    assert.equal(value(service, "Service", "Group"), BACKUP_USER);
    assert.equal(value(socket, "Socket", "SocketGroup"), BACKUP_USER);
  });

  test("ferry.socket: the config's socket, the backup user's, 0600, activating ferryd", () => {
    const k = (key: string) => value(socket, "Socket", key);
    assert.equal(k("ListenStream"), "/run/ferry/ferry.sock");
    assert.equal(k("SocketUser"), value(service, "Service", "User"));
    assert.equal(k("SocketMode"), "0600");
    assert.equal(k("DirectoryMode"), "0700");
    assert.equal(k("Service"), "ferryd.service");
    assert.equal(value(socket, "Install", "WantedBy"), "sockets.target");
  });

  test("tmpfiles: /run/ferry exists as the backup user's 0700 before the socket starts", () => {
    const lines = readFileSync(join(DEPLOY, "ferry.tmpfiles"), "utf8")
      .split("\n")
      .filter((l) => l.trim() !== "" && !l.startsWith("#"))
      .map((l) => l.trim().split(/\s+/));
    assert.ok(
      lines.some((f) => f.join(" ") === `d /run/ferry 0700 ${BACKUP_USER} ${BACKUP_USER} -`),
    );
    // The state directory is root's (journals steer ferryd's privileged renames).
    assert.ok(lines.some((f) => f.join(" ") === "d /var/lib/ferry 0711 root root -"));
    const out = words(readUnit("ferry-backup.service"), "Service", "ReadWritePaths");
    for (const dir of out) {
      assert.ok(
        lines.some((f) => f[0] === "d" && f[1] === dir && f[2] === "0700" && f[3] === BACKUP_USER),
        `${dir} is not created by ferry.tmpfiles`,
      );
    }
  });

  test("ferry-backup: nightly, persistent, randomised, unprivileged, as the backup user", () => {
    const unit = readUnit("ferry-backup.service");
    const timer = readUnit("ferry-backup.timer");
    assert.equal(value(unit, "Service", "User"), BACKUP_USER);
    assert.equal(value(unit, "Service", "Type"), "oneshot");
    assert.match(
      value(unit, "Service", "ExecStart") ?? "",
      /^\/usr\/bin\/ferry (export|backup) --all/,
    );
    assert.equal(value(unit, "Service", "CapabilityBoundingSet"), "");
    assert.equal(value(unit, "Service", "NoNewPrivileges"), "yes");
    assert.equal(value(timer, "Timer", "Persistent"), "true");
    assert.ok(value(timer, "Timer", "RandomizedDelaySec"));
    assert.match(value(timer, "Timer", "OnCalendar") ?? "", /^(daily|\*-\*-\* \d\d:\d\d(:\d\d)?)$/);
    assert.equal(value(timer, "Install", "WantedBy"), "timers.target");
  });
});

describe("deploy/ferry.toml", () => {
  const file = join(DEPLOY, "ferry.toml");
  const config = parse(readFileSync(file, "utf8")) as {
    socket?: string;
    state_dir?: string;
    apps?: Record<string, Record<string, unknown>>;
  };
  const users = new Set<string>();
  for (const app of Object.values(config.apps ?? {})) {
    for (const key of ["owner", "os_user"]) {
      if (typeof app[key] === "string") users.add(app[key] as string);
    }
    const hooks = app.hooks as Record<string, unknown> | undefined;
    if (typeof hooks?.user === "string") users.add(hooks.user);
  }
  // Looked up the way ferryd looks them up.
  const missing = [...users].filter((u) => lookupUser(u) === undefined);
  const cannot =
    missing.length > 0 && !isRoot
      ? `users ${missing.join(", ")} do not exist and creating them needs root`
      : false;

  test("matches the schema (its paths and hooks are placeholders: --check-config refuses it as it is, test/daemon/check-config.test.ts)", {
    skip: cannot,
  }, () => {
    for (const u of missing) ensureUser(u);
    const { problems, config: checked } = analyseConfig(readFileSync(file, "utf8"), file);
    assert.deepEqual(problems, []);
    assert.equal(checked.apps.size, 3);
  });

  test("names a files, a postgres and an sqlite application", () => {
    const drivers = Object.values(config.apps ?? {})
      .map((a) => a.driver)
      .sort();
    assert.deepEqual(drivers, ["files", "postgres", "sqlite"]);
  });

  test("matches the units: socket path, state directory, restore paths", () => {
    assert.equal(config.socket, value(readUnit("ferry.socket"), "Socket", "ListenStream"));
    assert.ok(
      words(readUnit("ferryd.service"), "Service", "ReadWritePaths").includes(
        config.state_dir as string,
      ),
    );
    // Every restorable files/sqlite app's parent directory is writable per the drop-in.
    const dropIn = parseUnit(
      readFileSync(join(DEPLOY, "ferryd.service.d", "restore-paths.conf"), "utf8"),
    );
    const writable = words(dropIn, "Service", "ReadWritePaths").map((p) => p.replace(/^-/, ""));
    for (const [name, app] of Object.entries(config.apps ?? {})) {
      if (app.restore !== true) continue;
      const paths =
        app.driver === "files"
          ? (app.paths as string[])
          : app.driver === "sqlite"
            ? [app.path as string]
            : [];
      for (const p of paths) {
        const parent = p.slice(0, p.lastIndexOf("/"));
        assert.ok(writable.includes(parent), `${name}: ${parent} is not in ReadWritePaths=`);
      }
    }
  });
});

describe("systemctl reload ferryd fails visibly on a broken config", () => {
  /** ExecReload='s commands, each split into argv, with the config and ferryd replaced. */
  function reloadCommands(config: string): string[][] {
    return (readUnit("ferryd.service").get("Service")?.get("ExecReload") ?? []).map((line) =>
      line
        .split(/\s+/)
        .map((w) =>
          w === "/etc/ferry/ferry.toml" ? config : w === "/usr/bin/ferryd" ? FERRYD : w,
        ),
    );
  }

  /**
   * What systemd does on `systemctl reload`: the ExecReload= commands in order, stopping at
   * the first that fails (the reload then fails). $MAINPID is a process standing in for
   * ferryd, which records whether it got SIGHUP.
   */
  async function reload(config: string): Promise<{ status: number; hup: boolean; out: string }> {
    const stand = spawn(process.execPath, [
      "-e",
      'process.on("SIGHUP", () => { console.log("HUP"); process.exit(0); }); setTimeout(() => {}, 60000); console.log("ready");',
    ]);
    let seen = "";
    stand.stdout.on("data", (d: Buffer) => {
      seen += d.toString();
    });
    while (!seen.includes("ready")) await new Promise((r) => setTimeout(r, 10));
    let status = 0;
    let out = "";
    for (const argv of reloadCommands(config)) {
      const cmd = argv.map((w) => (w === "$MAINPID" ? String(stand.pid) : w));
      const r = spawnSync(
        cmd[0] === FERRYD ? process.execPath : (cmd[0] as string),
        cmd[0] === FERRYD ? cmd : cmd.slice(1),
        { encoding: "utf8" },
      );
      out += `${r.stdout}${r.stderr}`;
      if (r.status !== 0) {
        status = r.status ?? 1;
        break;
      }
    }
    if (status === 0) await new Promise((r) => stand.once("exit", r));
    const hup = seen.includes("HUP");
    stand.kill("SIGKILL");
    return { status, hup, out };
  }

  test("a broken config: the check fails, ferryd is never signalled; a good one reloads", async () => {
    const dir = mkdtempSync(join(tmpdir(), "ferry-reload-"));
    try {
      const config = join(dir, "ferry.toml");
      mkdirSync(join(dir, "state"), { mode: 0o700 });
      const good = `version = 1\nsocket = "${dir}/ferry.sock"\nstate_dir = "${dir}/state"\n`;
      writeFileSync(config, `${good}colour = "blue"\n`);
      const bad = await reload(config);
      assert.equal(bad.status, 2, bad.out);
      assert.match(bad.out, /ferry\.toml:4: colour: unknown key/);
      assert.equal(bad.hup, false, "a broken config never reaches ferryd");

      writeFileSync(config, good);
      const ok = await reload(config);
      assert.equal(ok.status, 0, ok.out);
      assert.match(ok.out, /: valid, 0 application\(s\)/);
      assert.equal(ok.hup, true, "then ferryd is told to reload");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("the docs and units agree on one installation", () => {
  const read = (p: string) => readFileSync(join(ROOT, p), "utf8");
  const files = [
    "README.md",
    "docs/ops.md",
    "docs/design.md",
    "docs/security.md",
    "docs/repository.md",
    "docs/man/ferry.1.md",
    "docs/man/ferryd.8.md",
    "docs/man/ferry.toml.5.md",
    "deploy/ferryd.service",
    "deploy/ferry.socket",
    "deploy/ferry-backup.service",
    "deploy/ferry-backup.timer",
    "deploy/ferry.tmpfiles",
    "deploy/ferry.sysusers",
    "deploy/ferry.toml",
    "deploy/ferryd.service.d/restore-paths.conf",
  ];

  /** `file:line: text` of every line of the files above that matches `re`. */
  function lines(re: RegExp): string[] {
    return files.flatMap((f) =>
      read(f)
        .split("\n")
        .flatMap((l, i) => (re.test(l) ? [`${f}:${i + 1}: ${l.trim()}`] : [])),
    );
  }

  test("runuser, never sudo (which a Debian machine may not have)", () => {
    assert.deepEqual(lines(/\bsudo\b/), []);
  });

  test("the backup user is ferry-backup everywhere", () => {
    assert.deepEqual(
      lines(/--user backup\b|-u backup\b|User=backup\b|useradd .*(?<![\w-])backup$/),
      [],
    );
  });

  test("units live in /usr/lib/systemd/system (the package) or /usr/local/lib/systemd/system (a tarball), nowhere else", () => {
    // Drop-ins (ferryd.service.d/) are the admin's, in /etc/systemd/system.
    const elsewhere =
      /(?<!\/usr(\/local)?\/lib)\/systemd\/system\/ferry[a-z-]*\.(service|socket|timer)(?!\.d\b)/;
    assert.deepEqual(lines(elsewhere), []);
    assert.deepEqual(lines(/\/opt\/ferry/), []);
  });
});
