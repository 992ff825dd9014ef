/**
 * journald priorities (src/core/journal-stream.ts, src/core/log.ts, src/cli/main.ts): with
 * stderr the journal stream systemd announced in JOURNAL_STREAM, every line ferryd and
 * ferry write starts with its syslog priority, so `journalctl -p warning` shows warnings
 * and failed backups; with stderr anywhere else, nothing is prefixed.
 *
 * Real processes: a user-mode ferryd (as root with --allow-root when the test is root)
 * whose stderr is a file, and JOURNAL_STREAM set to that file's device:inode, the way
 * systemd sets it for the stream it connects.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { once } from "node:events";
import {
  closeSync,
  fstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { stderrPriority } from "../../src/cli/main.js";
import { SYSLOG } from "../../src/core/journal-stream.js";
import { FERRY, FERRYD, isRoot } from "../helpers/proc.js";

const me = userInfo().username;

/** Runs `argv` to its exit with stderr appended to `file`; JOURNAL_STREAM as given. */
async function runTo(
  argv: string[],
  file: string,
  journal: "match" | "other" | "unset",
): Promise<number | null> {
  const fd = openSync(file, "a");
  const env = journalEnv(fd, journal);
  const child = spawn(argv[0] as string, argv.slice(1), { stdio: ["ignore", "ignore", fd], env });
  closeSync(fd);
  const [code] = await once(child, "exit");
  return code as number | null;
}

/** A clean environment whose JOURNAL_STREAM names `fd`'s file, another one, or nothing. */
function journalEnv(fd: number, journal: "match" | "other" | "unset"): Record<string, string> {
  const st = fstatSync(fd, { bigint: true });
  const env: Record<string, string> = { PATH: process.env.PATH ?? "/usr/bin:/bin" };
  if (journal === "match") env.JOURNAL_STREAM = `${st.dev}:${st.ino}`;
  if (journal === "other") env.JOURNAL_STREAM = `${st.dev}:${st.ino + 1n}`;
  return env;
}

describe("journald priorities", () => {
  let dir: string;
  let config: string;
  let socket: string;
  const extra = isRoot ? ["--allow-root"] : [];

  before(() => {
    dir = mkdtempSync("/tmp/ferry-journal-");
    mkdirSync(join(dir, "notes"));
    writeFileSync(join(dir, "notes", "a.txt"), "alpha\n");
    socket = join(dir, "run/ferry.sock");
    config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1
socket = "${socket}"
state_dir = "${dir}/state"

[apps.notes]
driver = "files"
paths = ["${dir}/notes"]
owner = "${me}"
allow_root = true

[apps.gone]
driver = "files"
paths = ["${dir}/gone"]
owner = "${me}"
allow_root = true
`,
    );
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  async function ferrydSession(journal: "match" | "other" | "unset"): Promise<string[]> {
    const log = join(dir, `ferryd-${journal}.log`);
    writeFileSync(log, "");
    const fd = openSync(log, "a");
    const env = journalEnv(fd, journal);
    const child = spawn(process.execPath, [FERRYD, "--config", config, ...extra], {
      stdio: ["ignore", "ignore", fd],
      env,
    });
    closeSync(fd);
    try {
      const deadline = Date.now() + 60_000;
      while (!readFileSync(log, "utf8").includes("ferryd listening")) {
        if (child.exitCode !== null) assert.fail(`ferryd exited: ${readFileSync(log, "utf8")}`);
        assert.ok(Date.now() < deadline, "ferryd did not start");
        await new Promise((r) => setTimeout(r, 25));
      }
      // A backup that fails in ferryd (the app's directory is missing): an error.
      const cli = join(dir, `ferry-${journal}.log`);
      writeFileSync(cli, "");
      const code = await runTo(
        [process.execPath, FERRY, "--socket", socket, "export", "gone", "-o", join(dir, "g.tar")],
        cli,
        journal,
      );
      assert.equal(code, 1);
      // A refused request (no such app): a warning in ferryd's log.
      await runTo(
        [process.execPath, FERRY, "--socket", socket, "export", "nope", "-o", join(dir, "n.tar")],
        cli,
        journal,
      );
      return [readFileSync(log, "utf8"), readFileSync(cli, "utf8")];
    } finally {
      child.kill("SIGTERM");
      if (child.exitCode === null) await once(child, "exit");
    }
  }

  test("journald-priorities-lost: ferryd's warnings and errors reach stderr as <4> and <3>, info as <6>", async () => {
    const [log, cli] = (await ferrydSession("match")) as [string, string];
    const lines = log.trim().split("\n");
    for (const l of lines) assert.match(l, /^<[2-7]>\{/, `every line has a priority: ${l}`);
    const prio = (l: string) => Number(/^<(\d)>/.exec(l)?.[1]);
    const json = (l: string) => JSON.parse(l.replace(/^<\d>/, "")) as Record<string, unknown>;
    for (const l of lines) {
      const level = json(l).level;
      const want = { info: 6, warn: 4, error: 3, fatal: 2, debug: 7, trace: 7 }[level as string];
      assert.equal(prio(l), want, `level ${String(level)} → <${want}>: ${l}`);
    }
    const listening = lines.find((l) => json(l).msg === "ferryd listening") as string;
    assert.equal(prio(listening), SYSLOG.info);
    const failed = lines.find((l) => json(l).audit === true && json(l).app === "gone");
    assert.ok(failed, log);
    assert.equal(prio(failed), SYSLOG.err, "a failed backup is an error");
    assert.equal(json(failed).code, "SOURCE_UNREADABLE");
    const refused = lines.find((l) => json(l).audit === true && json(l).code === "APP_NOT_FOUND");
    assert.ok(refused, log);
    assert.equal(prio(refused), SYSLOG.warning, "a request for an undeclared app is a warning");
    if (!isRoot) {
      // User mode says so at warning level.
      const warn = lines.find((l) => String(json(l).msg).includes("without capabilities"));
      assert.equal(prio(warn as string), SYSLOG.warning);
    }
    // ferry's own messages: errors at <3>, each line of a message at its priority.
    const cliLines = cli.trim().split("\n");
    assert.ok(cliLines.length >= 2, cli);
    for (const l of cliLines) assert.match(l, /^<3>ferry: /, cli);
    assert.ok(cliLines.some((l) => l.includes("[APP_NOT_FOUND]")));
    assert.ok(cliLines.some((l) => l.includes("[SOURCE_UNREADABLE]")));
  });

  test("no prefixes when stderr is not the stream JOURNAL_STREAM names, or it is unset", async () => {
    for (const journal of ["other", "unset"] as const) {
      const [log, cli] = (await ferrydSession(journal)) as [string, string];
      for (const l of log.trim().split("\n")) assert.match(l, /^\{/, l);
      for (const l of cli.trim().split("\n")) assert.match(l, /^ferry: /, l);
    }
  });

  test("ferry's message priorities: errors, warnings, notes, summaries", () => {
    assert.equal(stderrPriority("ferry", 'ferry: no application "x" [APP_NOT_FOUND]'), SYSLOG.err);
    assert.equal(stderrPriority("ferry", "ferry: warning: skipped a socket"), SYSLOG.warning);
    assert.equal(stderrPriority("ferry", "ferry: wiki: warning: skipped"), SYSLOG.warning);
    assert.equal(stderrPriority("ferry", "ferry: backup of wiki failed: x [HELPER_FAILED]"), 3);
    assert.equal(stderrPriority("ferry", "note: 3 packs are unused"), SYSLOG.notice);
    assert.equal(stderrPriority("ferry", "exported wiki: 3 entries"), SYSLOG.info);
    assert.equal(stderrPriority("ferryd", "ferryd: bad config [CONFIG_INVALID]"), SYSLOG.err);
  });
});
