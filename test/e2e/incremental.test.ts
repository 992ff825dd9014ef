/**
 * Incremental backups through a real privileged ferryd (root only), as a user drives them:
 * `ferry backup` asks for a delta against the app's latest snapshot and stores the
 * complete archive.
 *
 * - A second backup of an unchanged 20,000-file tree reads no file content in ferryd
 *   (`/proc/<ferryd>/io`: rchar grows by little more than ferryd's own index, read_bytes
 *   stays near zero), and `dump` of that snapshot equals a fresh `ferry export` entry by
 *   entry, with the same payload SHA-256.
 * - Each change is picked up: a modified file with its mtime set back (`touch -d`), a
 *   replaced file (new inode), a renamed file, a new hardlink, a deleted file; the
 *   completed snapshot restores through ferryd and `check --read-data` passes.
 * - An unknown token gives a full backup; two apps backed up in turn keep their own
 *   indexes (and one's token is unknown to the other); kill -9 of ferryd between and
 *   during backups loses at most an index, never a correct snapshot.
 * - Attacks as the backup user: a path-traversal token is refused before any name is
 *   formed, and the index directory cannot even be entered.
 *
 * Bounds: a 20,000-file tree of 1–3 KiB files (~40 MB) and two small apps; every CLI call
 * has the helpers' 2-minute timeout; the suite takes about 2–4 minutes on 2 cores.
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  chownSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import type { EndRecord, Manifest } from "../../src/api/types.js";
import { ArchiveParser } from "../../src/core/archive/reader.js";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { ensureUser, ferry, needsRoot, run, type TestUser } from "../helpers/proc.js";
import { prng } from "../repo/helpers.js";

const PW = "incremental e2e password";
const FILES = 20_000;

interface Parsed {
  manifest: Manifest;
  end: EndRecord;
  /** path → header fields and the body's SHA-256, in archive order. */
  entries: string[];
}

async function parse(bytes: Buffer): Promise<Parsed> {
  const entries: string[] = [];
  let hash = createHash("sha256");
  const p = new ArchiveParser({
    entry: () => {
      hash = createHash("sha256");
    },
    data: (c) => void hash.update(c),
    entryEnd: (h) => {
      const { unchanged: _, ...fields } = h;
      entries.push(`${JSON.stringify(fields)} ${hash.digest("hex")}`);
    },
  });
  await p.write(bytes);
  return { manifest: p.manifest as Manifest, end: p.finish(), entries };
}

function io(pid: number): { rchar: number; read_bytes: number } {
  const text = readFileSync(`/proc/${pid}/io`, "utf8");
  const get = (k: string) => Number(new RegExp(`^${k}: (\\d+)$`, "m").exec(text)?.[1]);
  return { rchar: get("rchar"), read_bytes: get("read_bytes") };
}

interface BackupJson {
  app: string;
  ok: boolean;
  snapshot: string;
  kind: "full" | "delta";
  since?: string;
  previous?: string;
  unchanged_files?: number;
  received_bytes: number;
  error?: { code: string; message: string };
}

describe("incremental backups through a real ferryd", { skip: needsRoot, timeout: 900_000 }, () => {
  let dir: string;
  let bk: TestUser;
  let owner: TestUser;
  let daemon: RunningFerryd;
  let socket: string;
  let config: string;
  let state: string;
  const live: Record<string, string> = {};
  const env = () => ({ FERRY_REPO: join(dir, "repo"), FERRY_PASSWORD: PW });
  const f = (args: string[]) => ferry(socket, args, { user: bk, env: env() });

  async function backup(app: string, extra: string[] = []): Promise<BackupJson> {
    const r = await f(["backup", app, "--json", ...extra]);
    const out = JSON.parse(r.stdout.toString()) as { results: BackupJson[] };
    const res = out.results[0] as BackupJson;
    assert.ok(res.ok, `${app}: ${r.stderr} ${JSON.stringify(res.error)}`);
    return res;
  }

  async function dumped(snapshot: string): Promise<Parsed> {
    const r = await f(["dump", snapshot]);
    assert.equal(r.code, 0, r.stderr);
    return parse(r.stdout);
  }

  async function exported(app: string): Promise<Parsed> {
    const r = await f(["export", app]);
    assert.equal(r.code, 0, r.stderr);
    return parse(r.stdout);
  }

  /** The completed snapshot is the archive a full backup gives now, entry by entry. */
  async function assertComplete(app: string, snapshot: string): Promise<void> {
    const got = await dumped(snapshot);
    const want = await exported(app);
    assert.equal(got.manifest.kind, "full");
    assert.equal(want.manifest.kind, "full", "ferry export never asks for a delta");
    assert.equal(got.entries.length, want.entries.length);
    assert.deepEqual(got.entries, want.entries);
    assert.equal(got.end.payload_bytes, want.end.payload_bytes);
    assert.equal(got.end.sha256, want.end.sha256);
  }

  function indexes(app: string): string[] {
    try {
      return readdirSync(join(state, "since", app)).sort();
    } catch {
      return [];
    }
  }

  async function start(): Promise<void> {
    daemon = await startFerryd({ config, serviceUser: bk });
  }

  before(async () => {
    bk = ensureUser("ferry-incr-bk");
    owner = ensureUser("ferry-incr-app");
    dir = mkdtempSync("/tmp/ferry-incr-e2e-");
    chmodSync(dir, 0o755);
    for (const app of ["big", "notes", "other"]) {
      live[app] = join(dir, "apps", app);
      mkdirSync(live[app] as string, { recursive: true });
    }
    for (let d = 0; d < 200; d++) {
      const sub = join(live.big as string, `d${String(d).padStart(3, "0")}`);
      mkdirSync(sub);
      for (let i = 0; i < FILES / 200; i++) {
        writeFileSync(join(sub, `f${i}`), prng(`${d}/${i}`, 1024 + ((d * 131 + i * 17) % 2048)));
      }
    }
    for (const app of ["notes", "other"]) {
      mkdirSync(join(live[app] as string, "sub"));
      for (let i = 0; i < 12; i++) {
        const size = i % 3 === 0 ? 20_000 + i : 300 + i;
        writeFileSync(
          join(live[app] as string, i % 2 ? "sub" : "", `f${i}`),
          prng(`${app}${i}`, size),
        );
      }
    }
    execFileSync("chown", ["-R", `${owner.name}:${owner.name}`, join(dir, "apps")]);
    const runDir = join(dir, "run");
    mkdirSync(runDir, { mode: 0o700 });
    chownSync(runDir, bk.uid, bk.gid);
    socket = join(runDir, "ferry.sock");
    state = join(dir, "state");
    const repo = join(dir, "repo");
    mkdirSync(repo, { mode: 0o700 });
    chownSync(repo, bk.uid, bk.gid);
    config = join(dir, "ferry.toml");
    const apps = ["big", "notes", "other"]
      .map(
        (a) =>
          `[apps.${a}]\ndriver = "files"\npaths = ["${live[a]}"]\nowner = "${owner.name}"\nrestore = true\n`,
      )
      .join("\n");
    writeFileSync(config, `version = 1\nsocket = "${socket}"\nstate_dir = "${state}"\n\n${apps}`);
    await start();
    const init = await f(["init"]);
    assert.equal(init.code, 0, init.stderr);
    // Older than ferryd's racy-ctime window (2 s), so the first backup indexes every file.
    await new Promise((r) => setTimeout(r, 2500));
  });
  after(async () => {
    await daemon?.stop();
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
  });

  test("unchanged-20000-files: the second backup reads no file content in ferryd and dumps to a fresh export", async (t) => {
    const first = await backup("big");
    assert.equal(first.kind, "full");
    const [token] = indexes("big");
    assert.ok(token !== undefined);
    const indexBytes = statSync(join(state, "since", "big", token)).size;
    const before = io(daemon.pid);
    const second = await backup("big");
    const afterIo = io(daemon.pid);
    assert.equal(second.kind, "delta");
    assert.equal(second.since, token);
    assert.equal(second.previous, first.snapshot);
    assert.equal(second.unchanged_files, FILES);
    const rchar = afterIo.rchar - before.rchar;
    const readBytes = afterIo.read_bytes - before.read_bytes;
    const fullIo = { rchar: before.rchar };
    t.diagnostic(
      `ferryd during the delta: rchar +${rchar}, read_bytes +${readBytes} (index ${indexBytes} bytes; ${second.received_bytes} bytes sent; rchar after start through the full backup ${fullIo.rchar})`,
    );
    // The tree holds ~40 MB of file data; ferryd read its own index and nothing else.
    assert.ok(rchar < indexBytes + 1024 * 1024, `rchar grew by ${rchar} (index ${indexBytes})`);
    assert.ok(readBytes < 1024 * 1024, `read_bytes grew by ${readBytes}`);
    // What crossed the socket was headers, not the data.
    assert.ok(second.received_bytes < 40_000_000, `${second.received_bytes} bytes received`);
    await assertComplete("big", second.snapshot);
  });

  test("changes are read again: mtime set back with touch -d, replaced, renamed, new hardlink, deleted", async () => {
    const base = await backup("notes");
    const p = (n: string) => join(live.notes as string, n);
    // Same size, new content, mtime set back.
    const mtime = execFileSync("stat", ["-c", "%.9Y", p("f0")])
      .toString()
      .trim();
    const size = statSync(p("f0")).size;
    writeFileSync(p("f0"), Buffer.alloc(size, 0x41));
    execFileSync("touch", ["-m", "-d", `@${mtime}`, p("f0")]);
    assert.equal(
      execFileSync("stat", ["-c", "%.9Y", p("f0")])
        .toString()
        .trim(),
      mtime,
    );
    // Replaced: a new inode of the same size and mtime.
    const m2 = execFileSync("stat", ["-c", "%.9Y", p("f2")])
      .toString()
      .trim();
    writeFileSync(p("f2.new"), Buffer.alloc(statSync(p("f2")).size, 0x42));
    chownSync(p("f2.new"), owner.uid, owner.gid);
    execFileSync("touch", ["-m", "-d", `@${m2}`, p("f2.new")]);
    renameSync(p("f2.new"), p("f2"));
    renameSync(p("f4"), p("f4-renamed"));
    linkSync(p("f6"), p("f6-link"));
    unlinkSync(p("f8"));
    const delta = await backup("notes");
    assert.equal(delta.kind, "delta");
    assert.equal(delta.previous, base.snapshot);
    // f0, f2, f4-renamed and f6 (its link count changed) were read; 12 - 1 deleted - 4.
    assert.equal(delta.unchanged_files, 7);
    await assertComplete("notes", delta.snapshot);
    // The completed snapshot restores like any other, and the repository checks.
    const before = await exported("notes");
    writeFileSync(p("f10"), "damage");
    const r = await f(["restore", delta.snapshot]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual((await exported("notes")).entries, before.entries);
    const check = await f(["check", "--read-data"]);
    assert.equal(check.code, 0, check.stdout.toString() + check.stderr);
  });

  test("unknown-token: an index ferryd no longer has gives a full backup, then deltas again", async () => {
    await backup("other");
    for (const t of indexes("other")) rmSync(join(state, "since", "other", t));
    const full = await backup("other");
    assert.equal(full.kind, "full");
    assert.match(full.since ?? "", /^[0-9a-f]{32}$/);
    const next = await backup("other");
    assert.equal(next.kind, "delta");
    assert.equal(next.previous, full.snapshot);
    // --force-full asks for no delta at all.
    const forced = await backup("other", ["--force-full"]);
    assert.equal(forced.kind, "full");
    assert.equal(forced.since, undefined);
  });

  test("interleaved apps keep separate indexes; one app's token is unknown to another", async () => {
    const a1 = await backup("notes");
    const b1 = await backup("other");
    writeFileSync(join(live.notes as string, "f1"), "changed");
    chownSync(join(live.notes as string, "f1"), owner.uid, owner.gid);
    const a2 = await backup("notes");
    const b2 = await backup("other");
    assert.equal(a2.kind, "delta");
    assert.equal(a2.previous, a1.snapshot);
    assert.equal(b2.kind, "delta");
    assert.equal(b2.previous, b1.snapshot);
    const shared = indexes("notes").filter((t) => indexes("other").includes(t));
    assert.deepEqual(shared, []);
    await assertComplete("notes", a2.snapshot);
    await assertComplete("other", b2.snapshot);
    // token-from-another-app: a token of notes' asked of other gives a full archive.
    const token = a2.since as string;
    assert.ok(indexes("notes").includes(token));
    const r = await run(
      [
        "curl",
        "-sS",
        "--unix-socket",
        socket,
        "-XPOST",
        `http://ferry/v1/apps/other/backup?since=${token}`,
      ],
      { user: bk },
    );
    const m = (await parse(r.stdout)).manifest;
    assert.equal(m.kind, "full");
    assert.equal(m.since, undefined);
  });

  test("path-traversal-token and the index directory: refused before a name is formed, closed to the backup user", async () => {
    for (const t of [
      "..%2F..%2Fjournal",
      "../../etc/passwd",
      "%2Fetc%2Fshadow",
      "A".repeat(32),
      "",
    ]) {
      const r = await run(
        [
          "curl",
          "-sS",
          "-o",
          "-",
          "-w",
          "\n%{http_code}",
          "--unix-socket",
          socket,
          "-XPOST",
          `http://ferry/v1/apps/notes/backup?since=${t}`,
        ],
        { user: bk },
      );
      const text = r.stdout.toString();
      assert.match(text, /\n400$/, `${t}: ${text}`);
      assert.match(text, /BAD_REQUEST/);
    }
    // The backup user cannot enter, list or write the index directory.
    const since = join(state, "since");
    const st = statSync(since);
    assert.equal(st.uid, 0);
    assert.equal(st.mode & 0o777, 0o700);
    const w = await run(["touch", join(since, "notes", "0".repeat(32))], { user: bk });
    assert.notEqual(w.code, 0);
    assert.match(w.stderr, /Permission denied/);
    for (const t of indexes("notes")) {
      const s = statSync(join(since, "notes", t));
      assert.equal(s.uid, 0, "an index is root's");
      assert.equal(s.mode & 0o077, 0);
    }
  });

  test("kill -9 of ferryd between and during backups loses at most an index, never correctness", async () => {
    const a = await backup("notes");
    daemon.child.kill("SIGKILL");
    await new Promise((r) => daemon.child.once("exit", r));
    await start();
    const b = await backup("notes");
    assert.equal(b.kind, "delta", "the index written before the end record survived");
    assert.equal(b.previous, a.snapshot);
    // During a backup: kill ferryd while it streams the big tree (a full one, the longest).
    const child = spawn(
      "setpriv",
      [
        `--reuid=${bk.uid}`,
        `--regid=${bk.gid}`,
        "--init-groups",
        "--",
        process.execPath,
        join(process.cwd(), "dist/src/cli/ferry.js"),
        "--socket",
        socket,
        "backup",
        "big",
        "--force-full",
      ],
      { env: { ...process.env, ...env() }, stdio: "ignore" },
    );
    // The index of a backup in progress is a temporary file until the archive is complete.
    const deadline = Date.now() + 60_000;
    while (!indexes("big").some((n) => n.startsWith(".tmp-")) && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.ok(Date.now() < deadline, "the backup did not start");
    daemon.child.kill("SIGKILL");
    const code = await new Promise<number | null>((r) => child.once("exit", r));
    assert.notEqual(code, 0, "the interrupted backup failed");
    await start();
    assert.deepEqual(
      indexes("big").filter((n) => n.startsWith(".tmp-")),
      [],
      "no temporary index is left after a restart",
    );
    const c = await backup("big");
    assert.equal(c.kind, "delta");
    await assertComplete("big", c.snapshot);
    // Losing the whole state directory's indexes loses only the shortcut.
    rmSync(join(state, "since"), { recursive: true });
    await daemon.stop();
    await start();
    const d = await backup("notes");
    assert.equal(d.kind, "full");
    await assertComplete("notes", d.snapshot);
  });
});
