/**
 * `--password-file -` and `--password-file /dev/stdin` read the descriptor ferry was
 * given. docs/ops.md runs, as root, `runuser -u ferry-backup -- ferry init --repo R
 * --password-file - < /etc/ferry/repository.password`: a file only root can open. Opening
 * the path /dev/stdin again as the backup user would fail with EACCES; reading fd 0 works.
 *
 * As root the commands run as a test user against a root-only password file (the
 * runbook's case); as another user they run as that user (the same code path, without the
 * permission difference). Bounds: two repository commands on an empty repository.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { chmodSync, closeSync, mkdtempSync, openSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { asUser, ensureUser, FERRY, isRoot, type TestUser } from "../helpers/proc.js";

describe("--password-file - and /dev/stdin read the given descriptor", () => {
  let dir = "";
  let user: TestUser | undefined;
  let secret = "";

  before(() => {
    if (isRoot) user = ensureUser("ferry-pwstdin");
    dir = mkdtempSync("/tmp/ferry-pwstdin-");
    chmodSync(dir, 0o755);
    if (user !== undefined) {
      const repoParent = join(dir, "r");
      spawnSync("install", ["-d", "-o", user.name, "-m", "0700", repoParent]);
    }
    secret = join(dir, "repository.password");
    writeFileSync(secret, "correct horse battery staple\n", { mode: 0o600 });
  });

  after(() => {
    if (dir !== "") rmSync(dir, { recursive: true, force: true });
  });

  function run(args: string[]) {
    const fd = openSync(secret, "r");
    try {
      const argv = asUser(user, [process.execPath, FERRY, ...args]);
      return spawnSync(argv[0] as string, argv.slice(1), {
        stdio: [fd, "pipe", "pipe"],
        encoding: "utf8",
        timeout: 120_000,
      });
    } finally {
      closeSync(fd);
    }
  }

  test("init with --password-file -, then snapshots with --password-file /dev/stdin", () => {
    const repo = user === undefined ? join(dir, "repo") : join(dir, "r", "repo");
    const init = run(["init", "--repo", repo, "--password-file", "-"]);
    assert.equal(init.status, 0, init.stderr);
    const list = run(["snapshots", "--repo", repo, "--password-file", "/dev/stdin", "--json"]);
    assert.equal(list.status, 0, list.stderr);
    assert.deepEqual(JSON.parse(list.stdout), []);
    // The password really was read: a wrong one is refused.
    writeFileSync(secret, "wrong\n");
    const wrong = run(["snapshots", "--repo", repo, "--password-file", "-"]);
    assert.notEqual(wrong.status, 0);
  });
});
