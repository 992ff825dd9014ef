/**
 * Completing deltas in the repository (src/repo/delta.ts), without ferryd: archives made
 * by the archive writer as ferryd makes them, a full one and then deltas whose unchanged
 * files (small ones kept in the metadata stream, large ones in the content stream, an
 * empty one, one behind a hardlink) name their entry in the previous archive. The stored
 * snapshot dumps to the archive a full backup gives, entry by entry and with the same
 * payload SHA-256; anything that does not resolve stores nothing.
 */
import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { join } from "node:path";
import { after, describe, test } from "node:test";
import type { EndRecord, Manifest } from "../../src/api/types.js";
import { ArchiveParser } from "../../src/core/archive/reader.js";
import type { TarHeader } from "../../src/core/archive/tar.js";
import { type ArchiveEntry, writeArchive } from "../../src/core/archive/writer.js";
import { ArchiveStore, listEntries, rebuildArchive } from "../../src/repo/archive.js";
import { LocalBackend } from "../../src/repo/backend.js";
import { checkRepository } from "../../src/repo/check.js";
import type { LoadedSnapshot } from "../../src/repo/format.js";
import { prune } from "../../src/repo/prune.js";
import { Repository } from "../../src/repo/repository.js";
import { prng, tempDir } from "./helpers.js";

const T1 = "11111111111111111111111111111111";
const T2 = "22222222222222222222222222222222";
const T3 = "33333333333333333333333333333333";
const dirs: string[] = [];
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

interface F {
  path: string;
  type?: "dir" | "symlink" | "hardlink";
  data?: Buffer;
  link?: string;
  mtimeNsec?: number;
}

function header(f: F): TarHeader {
  return {
    path: f.path,
    type: f.type ?? "file",
    mode: f.type === "dir" ? 0o755 : 0o640,
    uid: 1000,
    gid: 1000,
    uname: "app",
    gname: "app",
    size: f.data?.length ?? 0,
    mtimeSec: 1_700_000_000,
    mtimeNsec: f.mtimeNsec ?? 123_456_789,
    linkpath: f.link ?? "",
  };
}

const TREE: F[] = [
  { path: "data/0/", type: "dir" },
  { path: "data/0/a-small", data: prng("a", 700) },
  { path: "data/0/b-large", data: prng("b", 300_000) },
  { path: "data/0/c-empty", data: Buffer.alloc(0) },
  { path: "data/0/d-link", type: "symlink", link: "a-small" },
  { path: "data/0/e-large", data: prng("e", 5_000) },
  { path: "data/0/f-hard", type: "hardlink", link: "data/0/e-large" },
  { path: `data/0/${"long-".repeat(40)}g`, data: prng("g", 9_000) },
  { path: "data/0/h-small", data: prng("h", 4_095) },
];

const base = {
  app: "notes",
  driver: "files",
  driver_type: "files.v1",
  driver_version: 1,
  ferry_version: "t",
  host: "h",
  created: "2026-12-01T00:00:00.000Z",
  paths: ["/srv/notes"],
  owner: "app",
};

/**
 * The archive of `tree`: full, or a delta against `since` where every regular file in
 * `unchanged` is a header without data naming its position in `previous`.
 */
async function archive(
  tree: F[],
  token: string,
  delta?: {
    since: string;
    previous: F[];
    unchanged: Set<string>;
    position?: (p: string) => number;
  },
): Promise<Buffer> {
  async function* entries(): AsyncGenerator<ArchiveEntry> {
    for (const f of tree) {
      const h = header(f);
      if (delta?.unchanged.has(f.path)) {
        const position =
          delta.position?.(f.path) ?? delta.previous.findIndex((p) => p.path === f.path);
        yield {
          header: { ...h, size: 0, unchanged: { since: delta.since, size: h.size, position } },
        };
      } else {
        yield f.data === undefined ? { header: h } : { header: h, body: f.data };
      }
    }
  }
  const manifest =
    delta === undefined
      ? { ...base, kind: "full" }
      : { ...base, kind: "delta", since: delta.since };
  const parts: Buffer[] = [];
  for await (const b of writeArchive(manifest, entries(), ["a warning"], undefined, () => ({
    token,
  }))) {
    parts.push(b);
  }
  return Buffer.concat(parts);
}

async function newRepo(): Promise<Repository> {
  const d = tempDir("ferry-delta-");
  dirs.push(d);
  return Repository.init(new LocalBackend(join(d, "repo")), "pw", { N: 1024, r: 8, p: 1 });
}

async function store(repo: Repository, bytes: Buffer, previous?: LoadedSnapshot) {
  const s = new ArchiveStore(repo, { app: "notes", tags: [], ...(previous ? { previous } : {}) });
  for (let o = 0; o < bytes.length; o += 7_000) await s.write(bytes.subarray(o, o + 7_000));
  const r = await s.finish();
  return { ...r, snap: await repo.loadSnapshot(r.id), kind: s.kind };
}

async function dump(repo: Repository, snap: LoadedSnapshot): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const b of rebuildArchive(repo, snap)) parts.push(b);
  return Buffer.concat(parts);
}

interface Parsed {
  manifest: Manifest;
  end: EndRecord;
  entries: { header: TarHeader; body: Buffer }[];
}

async function parse(bytes: Buffer): Promise<Parsed> {
  const entries: { header: TarHeader; body: Buffer }[] = [];
  let parts: Buffer[] = [];
  const p = new ArchiveParser({
    entry: () => {
      parts = [];
    },
    data: (c) => void parts.push(Buffer.from(c)),
    entryEnd: (h) => void entries.push({ header: h, body: Buffer.concat(parts) }),
  });
  await p.write(bytes);
  return { manifest: p.manifest as Manifest, end: p.finish(), entries };
}

const fileNames = (tree: F[]) =>
  new Set(tree.filter((f) => f.type === undefined).map((f) => f.path));

describe("completing deltas", () => {
  test("a delta is stored as the complete archive: dump equals the full archive entry by entry, with the same payload SHA-256", async () => {
    const repo = await newRepo();
    const first = await store(repo, await archive(TREE, T1));
    assert.equal(first.snap.version, 1);
    // One small and one large file changed; everything else unchanged since T1.
    const tree2 = TREE.map((f) =>
      f.path === "data/0/a-small"
        ? { ...f, data: prng("a2", 700) }
        : f.path === "data/0/b-large"
          ? { ...f, data: prng("b2", 300_000) }
          : f,
    );
    const unchanged = fileNames(tree2);
    unchanged.delete("data/0/a-small");
    unchanged.delete("data/0/b-large");
    const delta = await archive(tree2, T2, { since: T1, previous: TREE, unchanged });
    const second = await store(repo, delta, first.snap);
    assert.equal(second.kind, "delta");
    assert.equal(second.snap.version, 2);
    assert.equal(second.snap.archive.sha256, null);
    assert.equal(second.snap.delta?.previous, first.id);
    assert.equal(second.snap.delta?.unchanged, unchanged.size);
    assert.equal(second.snap.delta?.received.bytes, delta.length);
    assert.equal(second.snap.end.token, T2);

    const got = await parse(await dump(repo, second.snap));
    const want = await parse(await archive(tree2, T2));
    assert.equal(got.manifest.kind, "full");
    assert.equal(got.manifest.since, undefined);
    assert.deepEqual(got.entries, want.entries);
    assert.deepEqual(got.end, want.end);
    assert.equal(second.snap.archive.bytes, (await dump(repo, second.snap)).length);

    // A delta against the completed delta completes too (T2 -> T3, nothing changed).
    const rawBefore = repo.stats.newRaw;
    const loaded = new Set<string>();
    const load = repo.loadBlob.bind(repo);
    repo.loadBlob = (id, n) => {
      loaded.add(id.toString("hex"));
      return load(id, n);
    };
    const third = await store(
      repo,
      await archive(tree2, T3, { since: T2, previous: tree2, unchanged: fileNames(tree2) }),
      second.snap,
    );
    repo.loadBlob = load;
    const got3 = await parse(await dump(repo, third.snap));
    assert.deepEqual(got3.entries, want.entries);
    assert.equal(got3.end.sha256, want.end.sha256);
    // Nothing new but the snapshot: the content came from the previous snapshot's blobs.
    assert.ok(repo.stats.newRaw - rawBefore < 20_000, `${repo.stats.newRaw - rawBefore} new bytes`);
    // ...and no content blob was read to complete it, only metadata and trees.
    let contentBlobs = 0;
    for await (const r of repo.refs(second.snap.data_tree)) {
      contentBlobs++;
      assert.equal(loaded.has(r.id.toString("hex")), false, "a content blob was read");
    }
    assert.ok(contentBlobs >= 3);

    // ls shows real sizes, check reads every blob, and forgetting the snapshots the deltas
    // were completed from loses nothing: a completed snapshot names its blobs itself.
    const ls: TarHeader[] = [];
    for await (const h of listEntries(repo, third.snap)) ls.push(h);
    assert.equal(ls.find((h) => h.path === "data/0/b-large")?.size, 300_000);
    const report = await checkRepository(repo, { readData: true });
    assert.deepEqual(report.problems, []);
    await repo.backend.remove("snapshots", first.id);
    await repo.backend.remove("snapshots", second.id);
    await prune(repo, { dryRun: false });
    const fresh = await Repository.open(repo.backend, { password: "pw" });
    await fresh.loadIndex();
    const after = await parse(await dump(fresh, await fresh.loadSnapshot(third.id)));
    assert.deepEqual(after.entries, want.entries);
  });

  test("positions that go backwards (another walk order) still resolve", async () => {
    const repo = await newRepo();
    const first = await store(repo, await archive(TREE, T1));
    const reversed = [TREE[0] as F, ...TREE.slice(1).reverse()];
    const unchanged = fileNames(reversed);
    const second = await store(
      repo,
      await archive(reversed, T2, { since: T1, previous: TREE, unchanged }),
      first.snap,
    );
    const got = await parse(await dump(repo, second.snap));
    const want = await parse(await archive(reversed, T2));
    assert.deepEqual(got.entries, want.entries);
    assert.equal(got.end.sha256, want.end.sha256);
  });

  test("a full archive sent when a delta was asked for (ferryd lost the token) is stored as sent", async () => {
    const repo = await newRepo();
    const first = await store(repo, await archive(TREE, T1));
    const full = await archive(TREE, T2);
    const second = await store(repo, full, first.snap);
    assert.equal(second.kind, "full");
    assert.equal(second.snap.version, 1);
    assert.deepEqual(await dump(repo, second.snap), full);
  });

  describe("delta-unresolved: anything that does not match refuses the snapshot and stores none", () => {
    const cases: [string, (t: F[]) => F[], ((p: string) => number) | undefined, RegExp][] = [
      [
        "position names another file",
        (t) => t,
        (p) => (p === "data/0/h-small" ? 1 : TREE.findIndex((f) => f.path === p)),
        /that entry is "data\/0\/a-small"/,
      ],
      [
        "position names a directory",
        (t) => t,
        (p) => (p === "data/0/a-small" ? 0 : TREE.findIndex((f) => f.path === p)),
        /\(dir\)/,
      ],
      [
        "position beyond the previous archive",
        (t) => t,
        (p) => (p === "data/0/a-small" ? 99 : TREE.findIndex((f) => f.path === p)),
        /has no such entry/,
      ],
      [
        "mtime differs by a nanosecond",
        (t) => t.map((f) => (f.path === "data/0/b-large" ? { ...f, mtimeNsec: 123_456_790 } : f)),
        undefined,
        /size or mtime differ/,
      ],
      [
        "size differs",
        (t) => t.map((f) => (f.path === "data/0/a-small" ? { ...f, data: prng("a", 701) } : f)),
        undefined,
        /size or mtime differ/,
      ],
    ];
    for (const [name, change, position, why] of cases) {
      test(name, async () => {
        const repo = await newRepo();
        const first = await store(repo, await archive(TREE, T1));
        const tree2 = change(TREE);
        const bytes = await archive(tree2, T2, {
          since: T1,
          previous: TREE,
          unchanged: fileNames(tree2),
          ...(position ? { position } : {}),
        });
        await assert.rejects(store(repo, bytes, first.snap), (e: Error & { code?: string }) => {
          assert.equal(e.code, "REPO_DELTA_UNRESOLVED");
          assert.match(e.message, why);
          assert.match(e.message, /--force-full/);
          return true;
        });
        assert.equal((await repo.listSnapshots()).length, 1);
      });
    }

    test("a delta against another token than the one asked for", async () => {
      const repo = await newRepo();
      const first = await store(repo, await archive(TREE, T1));
      const bytes = await archive(TREE, T2, {
        since: T3,
        previous: TREE,
        unchanged: fileNames(TREE),
      });
      await assert.rejects(store(repo, bytes, first.snap), /not the token/);
      assert.equal((await repo.listSnapshots()).length, 1);
    });

    test("a delta without asking for one is refused by the strict reader", async () => {
      const repo = await newRepo();
      const bytes = await archive(TREE, T2, {
        since: T1,
        previous: TREE,
        unchanged: fileNames(TREE),
      });
      await assert.rejects(store(repo, bytes), /delta archive/);
    });
  });
});
