/**
 * The repository through a real privileged ferryd (root only), as a user would drive it:
 * `ferry init`, `ferry backup` of a files app, an SQLite app and a failing app, `dump`
 * equal to what ferryd sent, an unchanged second backup adding almost nothing, `restore`
 * bringing both apps back, kill -9 of `ferry backup` mid-stream, two backups at once.
 *
 * Bounds: a ~6 MiB files app and a tiny database; every CLI call has a 2-minute timeout.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { ArchiveParser } from "../../src/core/archive/reader.js";
import { hasProgram, runAs } from "../drivers/suite.js";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { snapshot } from "../helpers/files-app.js";
import { ensureUser, ferry, type TestUser } from "../helpers/proc.js";
import { prng } from "./helpers.js";

const isRoot = process.getuid?.() === 0;
const skip = !isRoot ? "needs root" : !hasProgram("sqlite3") ? "sqlite3 is not installed" : false;
const PW = "e2e repository password";

describe("ferry's repository through a real ferryd", { skip, timeout: 600_000 }, () => {
  let dir: string;
  let svc: TestUser;
  let app: TestUser;
  let daemon: RunningFerryd;
  let socket: string;
  let live: string;
  let db: string;
  let repo: string;
  let env: Record<string, string>;
  const f = (args: string[], extra: Record<string, string> = {}) =>
    ferry(socket, args, { user: svc, env: { ...env, ...extra } });

  before(async () => {
    svc = ensureUser("ferry-repo-svc");
    app = ensureUser("ferry-repo-app");
    dir = mkdtempSync("/tmp/ferry-repo-e2e-");
    chmodSync(dir, 0o755);
    live = join(dir, "apps/notes");
    mkdirSync(join(live, "sub"), { recursive: true });
    writeFileSync(join(live, "a.txt"), "alpha\n");
    writeFileSync(join(live, "sub/b.txt"), "bravo\n");
    writeFileSync(join(live, "big.bin"), prng("big", 6 << 20));
    for (let i = 0; i < 50; i++)
      writeFileSync(join(live, `sub/f${i}`), prng(`f${i}`, 3000 + i * 500));
    execFileSync("chown", ["-R", `${app.name}:${app.name}`, join(dir, "apps")]);
    const data = join(dir, "db");
    mkdirSync(data);
    chownSync(data, app.uid, app.gid);
    db = join(data, "app.db");
    runAs(app, ["sqlite3", db, "CREATE TABLE t(x); INSERT INTO t VALUES (1),(2),(3);"]);
    const run = join(dir, "run");
    mkdirSync(run, { mode: 0o700 });
    chownSync(run, svc.uid, svc.gid);
    socket = join(run, "ferry.sock");
    repo = join(dir, "repo");
    mkdirSync(repo, { mode: 0o700 });
    chownSync(repo, svc.uid, svc.gid);
    const config = join(dir, "ferry.toml");
    writeFileSync(
      config,
      `version = 1
socket = "${socket}"
state_dir = "${dir}/state"

[apps.notes]
driver = "files"
paths = ["${live}"]
owner = "${app.name}"
restore = true

[apps.db]
driver = "sqlite"
path = "${db}"
owner = "${app.name}"
restore = true

[apps.broken]
driver = "command"
backup_command = ["false"]
os_user = "${app.name}"
`,
    );
    daemon = await startFerryd({ config, serviceUser: svc });
    env = { FERRY_REPO: repo, FERRY_PASSWORD: PW };
    const init = await f(["init"]);
    assert.equal(init.code, 0, init.stderr);
  });
  after(async () => {
    await daemon?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  let first: { app: string; snapshot: string; sha256: string; added_bytes: number }[] = [];

  test("backup of three apps: the failing one is reported, the others are stored", async () => {
    const r = await f(["backup", "notes", "db", "broken", "--tag", "nightly", "--json"]);
    assert.equal(r.code, 1, r.stderr);
    const out = JSON.parse(r.stdout.toString());
    assert.deepEqual(out.failed, ["broken"]);
    first = out.results.filter((x: { ok: boolean }) => x.ok);
    assert.deepEqual(
      first.map((x) => x.app),
      ["notes", "db"],
    );
    const snaps = JSON.parse((await f(["snapshots", "--json"])).stdout.toString());
    assert.equal(snaps.length, 2);
    assert.deepEqual(snaps[0].tags, ["nightly"]);
  });

  test("dump gives exactly the bytes ferryd sent: the SHA-256 backup received, and a valid end record", async () => {
    for (const s of first) {
      const d = await f(["dump", s.snapshot.slice(0, 12)]);
      assert.equal(d.code, 0, d.stderr);
      assert.equal(createHash("sha256").update(d.stdout).digest("hex"), s.sha256);
      const parser = new ArchiveParser();
      await parser.write(d.stdout);
      assert.equal(parser.finish().entries > 0, true);
    }
    const ls = await f(["ls", first[0]?.snapshot as string]);
    assert.match(ls.stdout.toString(), /big\.bin/);
  });

  test("an unchanged second backup adds almost nothing", async () => {
    const r = await f(["backup", "notes", "--json"]);
    assert.equal(r.code, 0, r.stderr);
    const res = JSON.parse(r.stdout.toString()).results[0];
    const notesFirst = first.find((x) => x.app === "notes");
    assert.ok(res.added_bytes < 64 * 1024, `added ${res.added_bytes} bytes`);
    assert.ok((notesFirst?.added_bytes ?? 0) > 5_000_000);
  });

  test("restore brings the files app and the database back", async () => {
    const before = snapshot(live);
    writeFileSync(join(live, "a.txt"), "changed\n");
    rmSync(join(live, "sub/b.txt"));
    runAs(app, ["sqlite3", db, "INSERT INTO t VALUES (99); DELETE FROM t WHERE x = 1;"]);
    for (const s of first) {
      const r = await f(["restore", s.snapshot]);
      assert.equal(r.code, 0, r.stderr);
    }
    const afterRestore = snapshot(live);
    for (const k of ["a.txt", "sub/b.txt", "big.bin", "sub/f7"]) {
      assert.equal(
        afterRestore.get(k)?.split(" ").slice(0, 3).join(" "),
        before.get(k)?.split(" ").slice(0, 3).join(" "),
        k,
      );
    }
    assert.equal(readFileSync(join(live, "a.txt"), "utf8"), "alpha\n");
    assert.equal(runAs(app, ["sqlite3", db, "SELECT group_concat(x) FROM t;"]).trim(), "1,2,3");
  });

  test("kill -9 during ferry backup leaves no snapshot and a repository check passes", async () => {
    const count = JSON.parse((await f(["snapshots", "--json"])).stdout.toString()).length;
    writeFileSync(join(live, "big2.bin"), prng("big2", 6 << 20));
    execFileSync("chown", [`${app.name}:${app.name}`, join(live, "big2.bin")]);
    const r = await f(["backup", "notes"], { FERRY_FAILPOINTS: "repo-after-pack" });
    assert.equal(r.code, null, `expected a SIGKILL: ${r.code} ${r.stderr}`);
    assert.equal(JSON.parse((await f(["snapshots", "--json"])).stdout.toString()).length, count);
    const c = await f(["check", "--read-data"]);
    assert.equal(c.code, 0, c.stdout.toString() + c.stderr);
    assert.match(c.stderr, /in no index/);
  });

  test("restic target: backup --to restic:REPO and restore --from restic:REPO round-trip", async () => {
    const rrepo = join(dir, "restic-repo");
    const cache = join(dir, "restic-cache");
    for (const d of [rrepo, cache]) {
      mkdirSync(d, { mode: 0o700 });
      chownSync(d, svc.uid, svc.gid);
    }
    const renv = { RESTIC_PASSWORD: "restic e2e", RESTIC_CACHE_DIR: cache };
    execFileSync(
      "setpriv",
      [
        `--reuid=${svc.uid}`,
        `--regid=${svc.gid}`,
        "--init-groups",
        "--",
        "restic",
        "-r",
        rrepo,
        "init",
      ],
      {
        env: { ...process.env, ...renv },
        stdio: "ignore",
      },
    );
    const before = readFileSync(join(live, "a.txt"), "utf8");
    const b = await f(
      ["backup", "notes", "--to", `restic:${rrepo}`, "--tag", "e2e", "--json"],
      renv,
    );
    assert.equal(b.code, 0, b.stderr);
    const sha = JSON.parse(b.stdout.toString()).results[0].sha256;
    assert.match(sha, /^[0-9a-f]{64}$/);
    writeFileSync(join(live, "a.txt"), "changed again\n");
    const r = await f(["restore", "latest", "--from", `restic:${rrepo}`], renv);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(readFileSync(join(live, "a.txt"), "utf8"), before);
    // A failing app never becomes a restic snapshot.
    const bad = await f(["backup", "broken", "--to", `restic:${rrepo}`], renv);
    assert.equal(bad.code, 1);
    const list = execFileSync(
      "setpriv",
      [
        `--reuid=${svc.uid}`,
        `--regid=${svc.gid}`,
        "--init-groups",
        "--",
        "restic",
        "-r",
        rrepo,
        "snapshots",
        "--json",
      ],
      { env: { ...process.env, ...renv } },
    ).toString();
    assert.equal(JSON.parse(list).length, 1);
  });

  test("two concurrent backups into one repository both succeed", async () => {
    const [a, b] = await Promise.all([f(["backup", "notes"]), f(["backup", "db"])]);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(b.code, 0, b.stderr);
    const c = await f(["check", "--read-data"]);
    assert.equal(c.code, 0, c.stdout.toString());
    const p = await f(["prune"]);
    assert.equal(p.code, 0, p.stderr);
    const c2 = await f(["check", "--read-data", "--json"]);
    assert.deepEqual(JSON.parse(c2.stdout.toString()).problems, []);
  });
});
