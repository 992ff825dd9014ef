/**
 * The repository end to end without ferryd: round trips, deduplication, passwords and
 * formats, corruption found by check, attacks on the stored files, crashes (kill -9
 * through failpoints) during backup and prune, concurrent writers, locks.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, test } from "node:test";
import { ArchiveStore, listEntries, rebuildArchive } from "../../src/repo/archive.js";
import { LocalBackend } from "../../src/repo/backend.js";
import { checkRepository } from "../../src/repo/check.js";
import { hex } from "../../src/repo/format.js";
import { RepoLock } from "../../src/repo/lock.js";
import { Repository } from "../../src/repo/repository.js";
import { FERRY, ROOT } from "../helpers/proc.js";
import { makeArchive, mixedFiles, prng, sha256hex, type TestFile, tempDir } from "./helpers.js";

const PW = "test password";
const STORE = join(ROOT, "dist/test/repo/store-archive.js");
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

async function newRepo(encrypted = true): Promise<{ path: string; repo: Repository }> {
  const password = encrypted ? PW : undefined;
  const d = tempDir("ferry-repo-");
  dirs.push(d);
  const path = join(d, "repo");
  const repo = await Repository.init(new LocalBackend(path), password, { N: 1024, r: 8, p: 1 });
  return { path, repo };
}

async function reopen(path: string, encrypted = true): Promise<Repository> {
  const repo = await Repository.open(new LocalBackend(path), {
    password: encrypted ? PW : undefined,
  });
  await repo.loadIndex();
  return repo;
}

async function store(repo: Repository, app: string, archive: Buffer, piece = 65536) {
  const s = new ArchiveStore(repo, { app, tags: ["t"] });
  for (let o = 0; o < archive.length; o += piece) await s.write(archive.subarray(o, o + piece));
  return s.finish();
}

async function dump(repo: Repository, id: string): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of rebuildArchive(repo, await repo.loadSnapshot(id))) parts.push(b);
  return Buffer.concat(parts);
}

function run(argv: string[], env: Record<string, string>, input?: Buffer) {
  return new Promise<{
    code: number | null;
    signal: string | null;
    stdout: string;
    stderr: string;
  }>((resolve) => {
    const c = spawn(process.execPath, argv, {
      env: { ...process.env, ...env },
      stdio: ["pipe", "pipe", "pipe"],
    });
    let out = "";
    let err = "";
    c.stdout.on("data", (d: Buffer) => {
      out += d;
    });
    c.stderr.on("data", (d: Buffer) => {
      err += d;
    });
    c.stdin.on("error", () => {});
    c.stdin.end(input);
    c.on("close", (code, signal) => resolve({ code, signal, stdout: out, stderr: err }));
  });
}

const ferryCli = (args: string[], env: Record<string, string> = {}) =>
  run([FERRY, ...args], { FERRY_PASSWORD: PW, ...env });

for (const encrypted of [true, false]) {
  test(`round trip (${encrypted ? "encrypted" : "unencrypted"}): dump is byte for byte the archive stored; ls lists every entry`, async () => {
    const { path, repo } = await newRepo(encrypted);
    const files = mixedFiles(120);
    const archive = await makeArchive("app", files);
    const r = await store(repo, "app", archive, 10_007);
    assert.equal(r.snapshot.archive.sha256, sha256hex(archive));
    const again = await reopen(path, encrypted);
    const back = await dump(again, r.id);
    assert.equal(sha256hex(back), sha256hex(archive));
    const paths: string[] = [];
    for await (const h of listEntries(again, await again.loadSnapshot(r.id))) paths.push(h.path);
    assert.deepEqual(paths, [
      ".ferry/manifest.json",
      ...files.map((f) => f.path),
      ".ferry/end.json",
    ]);
    const rep = await checkRepository(again, { readData: true });
    assert.deepEqual(rep.problems, []);
  });
}

test("an unchanged second backup adds nothing; a 1% change adds little", async () => {
  const { path, repo } = await newRepo();
  const files = mixedFiles(400);
  const archive = await makeArchive("app", files);
  const first = await store(repo, "app", archive);
  const r2 = await reopen(path);
  const second = await store(r2, "app", archive);
  assert.equal(second.snapshot.stats.new_bytes_stored, 0);
  assert.equal(second.snapshot.stats.new_blobs, 0);
  // 4 KiB changed in 1% of the files (and their mtimes).
  const changed: TestFile[] = files.map((f, i) =>
    i % 100 === 5 && f.data !== undefined
      ? {
          ...f,
          mtime: 1_800_000_000,
          data: Buffer.concat([prng(`chg${i}`, 4096), f.data.subarray(4096)]),
        }
      : f,
  );
  const r3 = await reopen(path);
  const third = await store(r3, "app", await makeArchive("app", changed));
  const total = first.snapshot.stats.new_bytes_stored;
  assert.ok(
    third.snapshot.stats.new_bytes_stored < total * 0.1,
    `${third.snapshot.stats.new_bytes_stored} of ${total}`,
  );
  assert.ok(third.snapshot.stats.new_bytes_stored > 0);
});

test("wrong password and newer format are refused clearly", async () => {
  const { path } = await newRepo();
  const wrong = await ferryCli(["snapshots", "--repo", path], { FERRY_PASSWORD: "nope" });
  assert.equal(wrong.code, 3);
  assert.match(wrong.stderr, /wrong password .*\[REPO_WRONG_PASSWORD\]/);
  const none = await ferryCli(["snapshots", "--repo", path], { FERRY_PASSWORD: "" });
  assert.notEqual(none.code, 0);
  const cfgPath = join(path, "config");
  const cfg = JSON.parse(readFileSync(cfgPath, "utf8"));
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, ferry_repository: 2 }));
  const newer = await ferryCli(["snapshots", "--repo", path]);
  assert.equal(newer.code, 1);
  assert.match(
    newer.stderr,
    /repository format 2; this ferry .* reads format 1: upgrade ferry \[REPO_FORMAT_UNSUPPORTED\]/,
  );
});

test("attack: the config rewritten to 'unencrypted' does not make ferry write plaintext", async () => {
  const { path } = await newRepo();
  const cfgPath = join(path, "config");
  const cfg = JSON.parse(readFileSync(cfgPath, "utf8"));
  writeFileSync(cfgPath, JSON.stringify({ ...cfg, encrypted: false }));
  const withPw = await ferryCli(["snapshots", "--repo", path]);
  assert.notEqual(withPw.code, 0);
  assert.match(withPw.stderr, /REPO_CORRUPT|REPO_UNENCRYPTED/);
  const noPw = await run([FERRY, "snapshots", "--repo", path], {});
  assert.notEqual(noPw.code, 0);
  assert.match(noPw.stderr, /key files: refusing/);
  await assert.rejects(
    Repository.open(new LocalBackend(path), { password: undefined }),
    /tampered/,
  );
});

test("attack: another local user reads the repository — every directory is 0700, every file 0600", async () => {
  const { path, repo } = await newRepo();
  await store(repo, "a", await makeArchive("a", mixedFiles(20)));
  const lock = await RepoLock.acquire(repo, false);
  const walk = (p: string): void => {
    const st = statSync(p);
    if (st.isDirectory()) {
      assert.equal(st.mode & 0o777, 0o700, p);
      for (const n of readdirSync(p)) walk(join(p, n));
    } else {
      assert.equal(st.mode & 0o777, 0o600, p);
    }
  };
  walk(path);
  await lock.release();
});

test("an unencrypted repository is announced by every command", async () => {
  const { path } = await newRepo(false);
  for (const args of [["snapshots"], ["check"], ["prune", "--dry-run"]]) {
    const r = await run([FERRY, ...args, "--repo", path], {});
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /is NOT encrypted/);
  }
});

test("check --read-data finds one flipped byte in a pack and names the affected snapshot only", async () => {
  const { path, repo } = await newRepo();
  const a = await store(repo, "a", await makeArchive("a", mixedFiles(40, "A")));
  const b = await store(repo, "b", await makeArchive("b", mixedFiles(40, "B")));
  const r = await reopen(path);
  // A data blob only snapshot a uses.
  const bRefs = new Set<string>();
  for await (const ref of r.refs(b.snapshot.data_tree)) bRefs.add(hex(ref.id));
  let victim: string | undefined;
  for await (const ref of r.refs(a.snapshot.data_tree))
    if (!bRefs.has(hex(ref.id))) victim = hex(ref.id);
  const e = r.index.get(victim as string);
  assert.ok(e);
  const packPath = join(path, "packs", e.pack.slice(0, 2), e.pack);
  const bytes = readFileSync(packPath);
  bytes[e.offset + 20] = (bytes[e.offset + 20] as number) ^ 0x01;
  writeFileSync(packPath, bytes);

  const quick = await ferryCli(["check", "--repo", path]);
  assert.equal(quick.code, 0, "the structure is intact; only reading the data finds it");
  const full = await ferryCli(["check", "--read-data", "--repo", path]);
  assert.equal(full.code, 1);
  assert.match(full.stdout, new RegExp(`affects snapshot\\(s\\): ${a.id}`));
  assert.doesNotMatch(full.stdout, new RegExp(b.id));
  assert.match(full.stdout, /fails authentication/);
  const json = JSON.parse(
    (await ferryCli(["check", "--read-data", "--json", "--repo", path])).stdout,
  );
  assert.ok(json.problems.some((p: { snapshots: string[] }) => p.snapshots.includes(a.id)));
  // Dumping the damaged snapshot fails loudly, the other still works.
  await assert.rejects(dump(await reopen(path), a.id), /authentication/);
  assert.equal(sha256hex(await dump(await reopen(path), b.id)), b.snapshot.archive.sha256);
});

test("attack: one blob's sealed bytes copied over another's in a pack are detected", async () => {
  const { path, repo } = await newRepo();
  const a = await store(repo, "a", await makeArchive("a", mixedFiles(30)));
  const r = await reopen(path);
  // Two blobs of the snapshot in the same pack.
  const used: string[] = [];
  for await (const ref of r.refs([...a.snapshot.meta_tree, ...a.snapshot.data_tree]))
    used.push(hex(ref.id));
  const byPack = new Map<string, string[]>();
  for (const id of used) {
    const e = r.index.get(id);
    if (e) byPack.set(e.pack, [...(byPack.get(e.pack) ?? []), id]);
  }
  const [pack, ids] = [...byPack].find(([, l]) => l.length >= 2) as [string, string[]];
  const x = r.index.get(ids[0] as string) as { offset: number; length: number };
  const y = r.index.get(ids[1] as string) as { offset: number; length: number };
  const p = join(path, "packs", pack.slice(0, 2), pack);
  const bytes = readFileSync(p);
  bytes.copy(bytes, x.offset, y.offset, y.offset + Math.min(x.length, y.length));
  writeFileSync(p, bytes);
  const rep = await checkRepository(await reopen(path), { readData: true });
  assert.ok(
    rep.problems.some((q) => q.snapshots.includes(a.id) && q.what.includes(ids[0] as string)),
    JSON.stringify(rep.problems),
  );
});

test("kill -9 during backup leaves no snapshot and a repository check passes; prune clears the leftovers", async () => {
  const { path } = await newRepo();
  const archive = await makeArchive("app", mixedFiles(300));
  for (const point of ["repo-after-pack", "repo-backup-before-snapshot"]) {
    const r = await run(
      [STORE, path, "app"],
      { FERRY_PASSWORD: PW, FERRY_FAILPOINTS: point },
      archive,
    );
    assert.equal(r.signal, "SIGKILL", `${point}: ${r.stderr}`);
    const repo = await reopen(path);
    assert.deepEqual(await repo.listSnapshots(), [], point);
    const rep = await checkRepository(repo, { readData: true });
    assert.deepEqual(rep.problems, [], point);
  }
  // The dead writer's lock is stale (its pid is gone): prune may run.
  const pr = await ferryCli(["prune", "--repo", path]);
  assert.equal(pr.code, 0, pr.stderr);
  const repo = await reopen(path);
  assert.equal((await repo.backend.list("packs")).length, 0);
  assert.equal((await repo.backend.list("locks")).length, 0);
  const ok = await run([STORE, path, "app"], { FERRY_PASSWORD: PW }, archive);
  assert.equal(ok.code, 0, ok.stderr);
});

test("kill -9 at every step of prune leaves a repository check passes, with the kept snapshot intact", async () => {
  for (const point of [
    "repo-prune-after-pack",
    "repo-prune-after-index",
    "repo-prune-after-index-remove",
    "repo-prune-after-pack-remove",
  ]) {
    const { path, repo } = await newRepo();
    // The forgotten snapshot's packs interleave its own data with the kept one's, so
    // prune must both repack and delete.
    const keepFiles = mixedFiles(100, "keep");
    const otherFiles = mixedFiles(300, "other").flatMap((f, i) =>
      i % 3 === 0 && keepFiles[i / 3]
        ? [keepFiles[i / 3] as TestFile, { ...f, path: `${f.path}.o` }]
        : [{ ...f, path: `${f.path}.o` }],
    );
    const other = await store(repo, "app", await makeArchive("app", otherFiles));
    const keep = await store(repo, "app", await makeArchive("app", keepFiles));
    await repo.backend.remove("snapshots", other.id);
    const r = await ferryCli(["prune", "--repo", path], { FERRY_FAILPOINTS: point });
    assert.equal(r.signal, "SIGKILL", `${point}: ${r.code} ${r.stderr}`);
    const after = await reopen(path);
    const rep = await checkRepository(after, { readData: true });
    assert.deepEqual(rep.problems, [], point);
    assert.equal(sha256hex(await dump(after, keep.id)), keep.snapshot.archive.sha256, point);
    const again = await ferryCli(["prune", "--repo", path]);
    assert.equal(again.code, 0, again.stderr);
    const final = await reopen(path);
    assert.deepEqual((await checkRepository(final, { readData: true })).problems, []);
    assert.equal(sha256hex(await dump(final, keep.id)), keep.snapshot.archive.sha256);
  }
});

test("prune repacks mostly-unused packs and removes unused ones; forget --prune end to end", async () => {
  const { path, repo } = await newRepo();
  const s1 = await store(repo, "app", await makeArchive("app", mixedFiles(150, "one")));
  await store(repo, "app", await makeArchive("app", mixedFiles(150, "two")));
  const sizeBefore = (await repo.backend.list("packs")).reduce((a, p) => a + p.size, 0);
  const f = await ferryCli(["forget", "--repo", path, "--keep-last", "1", "--prune", "--json"]);
  assert.equal(f.code, 0, f.stderr);
  const out = JSON.parse(f.stdout);
  assert.equal(out.groups[0].remove[0].id, s1.id);
  const r = await reopen(path);
  const sizeAfter = (await r.backend.list("packs")).reduce((a, p) => a + p.size, 0);
  assert.ok(sizeAfter < sizeBefore * 0.6, `${sizeAfter} of ${sizeBefore}`);
  assert.deepEqual((await checkRepository(r, { readData: true })).problems, []);
  assert.equal((await r.listSnapshots()).length, 1);
});

test("two concurrent backups into one repository both succeed", async () => {
  const { path } = await newRepo();
  const a = await makeArchive("a", mixedFiles(200, "A"));
  const b = await makeArchive("b", mixedFiles(200, "B"));
  const [ra, rb] = await Promise.all([
    run([STORE, path, "a"], { FERRY_PASSWORD: PW }, a),
    run([STORE, path, "b"], { FERRY_PASSWORD: PW }, b),
  ]);
  assert.equal(ra.code, 0, ra.stderr);
  assert.equal(rb.code, 0, rb.stderr);
  const repo = await reopen(path);
  assert.deepEqual((await checkRepository(repo, { readData: true })).problems, []);
  assert.equal(sha256hex(await dump(repo, ra.stdout.trim())), sha256hex(a));
  assert.equal(sha256hex(await dump(repo, rb.stdout.trim())), sha256hex(b));
});

test("locks: prune is refused while a backup holds its shared lock; a dead process's lock is stale", async () => {
  const { path, repo } = await newRepo();
  const shared = await RepoLock.acquire(repo, false);
  const refused = await ferryCli(["prune", "--repo", path]);
  assert.equal(refused.code, 1);
  assert.match(refused.stderr, /REPO_LOCKED/);
  const second = await RepoLock.acquire(repo, false); // shared locks coexist
  await second.release();
  await shared.release();
  // A lock left by a process that no longer exists on this host.
  const dead = spawn(process.execPath, ["-e", ""]);
  await new Promise((r) => dead.on("exit", r));
  await repo.writeFile(
    "locks",
    Buffer.from(
      JSON.stringify({
        time: new Date().toISOString(),
        exclusive: true,
        host: (await import("node:os")).hostname(),
        pid: dead.pid,
        uid: 0,
        nonce: "x",
      }),
    ),
  );
  const ok = await ferryCli(["prune", "--repo", path]);
  assert.equal(ok.code, 0, ok.stderr);
});
