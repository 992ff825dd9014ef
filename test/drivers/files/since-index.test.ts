/**
 * ferryd's backup indexes (src/drivers/files/since-index.ts), driven as ferryd drives them:
 * the files driver's backup with an index session, framed by the archive writer and read
 * back by the strict reader. What a delta leaves out, what it must not leave out
 * (changed content with mtime set back, a replaced, renamed or newly linked file, a file
 * changed in the last seconds), and every way an index could be forged, planted,
 * borrowed from another app or named by a hostile token, which must all give a full
 * backup or a refusal, never a wrong delta. As root the state directory is root's and
 * ferryd's files are checked for root ownership, as under a privileged ferryd.
 *
 * Bounds: a tree of 40 small files; one 2.2 s wait so the tree is older than the
 * racy-ctime window.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chownSync,
  closeSync,
  copyFileSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { pino } from "pino";
import type { EndRecord, Manifest } from "../../../src/api/types.js";
import { ArchiveParser, DEFAULT_LIMITS } from "../../../src/core/archive/reader.js";
import type { TarHeader } from "../../../src/core/archive/tar.js";
import { writeArchive } from "../../../src/core/archive/writer.js";
import { filesDriver } from "../../../src/drivers/files/index.js";
import {
  cleanSinceIndexes,
  MAX_INDEXES_PER_APP,
  pruneIndexes,
  SINCE_DIR,
} from "../../../src/drivers/files/since-index.js";
import type { DeclaredApp } from "../../../src/drivers/types.js";
import { testState } from "../../helpers/state.js";

const isRoot = process.getuid?.() === 0;
const state = testState();
const logLines: string[] = [];
const log = pino({ level: "info" }, { write: (s: string) => void logLines.push(s) });

interface Result {
  manifest: Manifest;
  end: EndRecord;
  entries: TarHeader[];
  bodies: Map<string, Buffer>;
}

async function backup(
  app: string,
  paths: string[],
  token?: string,
  failAfter?: number,
): Promise<Result> {
  const config = filesDriver.schema.parse({ driver: "files", paths, owner: "root" });
  const warnings: string[] = [];
  const index = filesDriver.openSince?.(config, { app, state, log, warnings }, token);
  assert.ok(index);
  const ctx = { app, signal: new AbortController().signal, warnings, state, since: index };
  const manifest = {
    app,
    driver: "files",
    driver_version: 1,
    ferry_version: "t",
    host: "h",
    created: "now",
    ...(index.since === undefined ? { kind: "full" } : { kind: "delta", since: index.since }),
  };
  const entries: TarHeader[] = [];
  const bodies = new Map<string, Buffer>();
  let current: Buffer[] = [];
  const parser = new ArchiveParser(
    {
      entry: (h) => {
        entries.push(h);
        current = [];
      },
      data: (c) => void current.push(Buffer.from(c)),
      entryEnd: (h) => void bodies.set(h.path, Buffer.concat(current)),
    },
    DEFAULT_LIMITS,
    true,
  );
  try {
    const source = filesDriver.backup(config, ctx);
    // A failure after `failAfter` entries (a file that cannot be read, a cancel).
    async function* failing() {
      let n = 0;
      for await (const e of source) {
        if (++n > (failAfter as number)) {
          if (e.file !== undefined) closeSync(e.file);
          throw new Error("stopped");
        }
        yield e;
      }
    }
    const entriesIn = failAfter === undefined ? source : failing();
    for await (const b of writeArchive(manifest, entriesIn, warnings, undefined, () => ({
      token: index.complete(),
    }))) {
      await parser.write(b);
    }
  } finally {
    index.close();
  }
  return { manifest: parser.manifest as Manifest, end: parser.finish(), entries, bodies };
}

function files(r: Result): TarHeader[] {
  return r.entries.filter((e) => e.type === "file");
}

/** `touch -m -d @SECONDS.NANOSECONDS`: sets mtime back to the nanosecond. */
function touchBack(path: string, ns: bigint): void {
  const sec = ns / 1_000_000_000n;
  const frac = String(ns % 1_000_000_000n).padStart(9, "0");
  execFileSync("touch", ["-m", "-d", `@${sec}.${frac}`, path]);
}

function indexDir(app: string): string {
  return join(state.path, SINCE_DIR, app);
}

let dir: string;
let root: string;

before(async () => {
  dir = mkdtempSync("/tmp/ferry-since-");
  root = join(dir, "app");
  mkdirSync(join(root, "sub"), { recursive: true });
  for (let i = 0; i < 40; i++) {
    writeFileSync(
      join(root, i % 2 ? "sub" : "", `f${String(i).padStart(2, "0")}`),
      randomBytes(100 + i * 50),
    );
  }
  writeFileSync(join(root, "empty"), "");
  // Older than the racy-ctime window, so the first backup indexes every file.
  await new Promise((r) => setTimeout(r, 2200));
});
after(() => rmSync(dir, { recursive: true, force: true }));

describe("backup indexes", () => {
  test("an unchanged tree: every regular file is a header without data, naming its earlier entry", async () => {
    const full = await backup("notes", [root]);
    assert.equal(full.manifest.kind, "full");
    assert.match(full.end.token ?? "", /^[0-9a-f]{32}$/);
    const delta = await backup("notes", [root], full.end.token);
    assert.equal(delta.manifest.kind, "delta");
    assert.equal(delta.manifest.since, full.end.token);
    assert.equal(delta.entries.length, full.entries.length);
    assert.equal(files(delta).length, 41);
    for (const h of files(delta)) {
      assert.ok(h.unchanged, `${h.path} should be unchanged`);
      assert.equal(h.size, 0);
      assert.equal(h.unchanged.since, full.end.token);
      const before = full.entries[h.unchanged.position] as TarHeader;
      assert.equal(before.path, h.path);
      assert.equal(before.size, h.unchanged.size);
      assert.equal(before.mtimeSec, h.mtimeSec);
      assert.equal(before.mtimeNsec, h.mtimeNsec);
    }
    // The delta's own token indexes the complete tree: a third backup is a delta too.
    const third = await backup("notes", [root], delta.end.token);
    assert.equal(third.manifest.kind, "delta");
    assert.ok(files(third).every((h) => h.unchanged !== undefined));
    // The end record covers the bytes sent: the delta is small.
    assert.ok(delta.end.payload_bytes < full.end.payload_bytes);
  });

  test("changes are read: content with mtime set back, replaced, renamed, newly linked, deleted", async () => {
    const base = await backup("notes", [root]);
    const p = (n: string) => join(root, n);
    // Same size, new content, mtime set back as `touch -d` would.
    const st = statSync(p("f00"), { bigint: true });
    writeFileSync(p("f00"), Buffer.alloc(Number(st.size), 0x41));
    touchBack(p("f00"), st.mtimeNs);
    assert.equal(statSync(p("f00"), { bigint: true }).mtimeNs, st.mtimeNs);
    // Replaced by a new inode of the same size and mtime.
    const st2 = statSync(p("f02"), { bigint: true });
    writeFileSync(p("f02.new"), Buffer.alloc(Number(st2.size), 0x42));
    touchBack(p("f02.new"), st2.mtimeNs);
    renameSync(p("f02.new"), p("f02"));
    // Renamed.
    renameSync(p("f04"), p("f04-renamed"));
    // A new hardlink.
    linkSync(p("f06"), p("f06-link"));
    // Deleted.
    unlinkSync(p("f08"));
    const delta = await backup("notes", [root], base.end.token);
    assert.equal(delta.manifest.kind, "delta");
    const byPath = new Map(delta.entries.map((h) => [h.path, h]));
    for (const name of ["f00", "f02", "f04-renamed", "f06"]) {
      const h = byPath.get(`data/0/${name}`);
      assert.ok(h, name);
      assert.equal(h.unchanged, undefined, `${name} must be read again`);
      assert.deepEqual(delta.bodies.get(h.path), readFileSync(p(name)), name);
    }
    assert.equal(byPath.get("data/0/f06-link")?.type, "hardlink");
    assert.equal(byPath.has("data/0/f04"), false);
    assert.equal(byPath.has("data/0/f08"), false);
    assert.ok(byPath.get("data/0/f10")?.unchanged, "an untouched file stays unchanged");
    // Files changed just now (ctime within the racy window) are not indexed: read again next time.
    const next = await backup("notes", [root], delta.end.token);
    const again = new Map(next.entries.map((h) => [h.path, h]));
    assert.equal(again.get("data/0/f00")?.unchanged, undefined);
    assert.ok(again.get("data/0/f10")?.unchanged);
  });

  test("two declared paths: positions run across both roots", async () => {
    const second = join(dir, "second");
    mkdirSync(second, { recursive: true });
    for (let i = 0; i < 5; i++) writeFileSync(join(second, `g${i}`), randomBytes(300));
    await new Promise((r) => setTimeout(r, 2200));
    const full = await backup("two", [root, second]);
    const delta = await backup("two", [root, second], full.end.token);
    assert.equal(delta.manifest.kind, "delta");
    const inSecond = files(delta).filter((h) => h.path.startsWith("data/1/"));
    assert.equal(inSecond.length, 5);
    for (const h of files(delta)) {
      assert.ok(h.unchanged, h.path);
      assert.equal(full.entries[h.unchanged.position]?.path, h.path);
    }
  });

  test("unknown-token: a token ferryd never made gives a full backup", async () => {
    const r = await backup("notes", [root], randomBytes(16).toString("hex"));
    assert.equal(r.manifest.kind, "full");
    assert.ok(files(r).every((h) => h.unchanged === undefined));
    assert.ok(logLines.some((l) => l.includes("unknown or expired token")));
  });

  test("token-from-another-app: another app's token is unknown here, even for the same paths", async () => {
    const other = await backup("other", [root]);
    const r = await backup("notes", [root], other.end.token);
    assert.equal(r.manifest.kind, "full");
    // and the other app's index is still there, untouched
    assert.ok(readdirSync(indexDir("other")).includes(other.end.token as string));
  });

  test("path-traversal-token: a token that is not 32 hex digits is refused before any name is formed", async () => {
    const victim = join(state.path, "victim");
    writeFileSync(victim, "keep");
    for (const t of ["../victim", "../../victim", "..", "/etc/passwd", "A".repeat(32), ""]) {
      await assert.rejects(backup("notes", [root], t), (e: Error & { code?: string }) => {
        assert.equal(e.code, "BAD_REQUEST");
        return true;
      });
    }
    assert.equal(readFileSync(victim, "utf8"), "keep");
    rmSync(victim);
  });

  test("the app's declared paths changed: the old index is not used", async () => {
    const a = await backup("moved", [root]);
    const sub = join(root, "sub");
    const r = await backup("moved", [sub], a.end.token);
    assert.equal(r.manifest.kind, "full");
  });

  test(`bounds: at most ${MAX_INDEXES_PER_APP} indexes per app, the newest kept`, async () => {
    const tokens: string[] = [];
    for (let i = 0; i < MAX_INDEXES_PER_APP + 2; i++) {
      tokens.push((await backup("bounded", [root])).end.token as string);
    }
    const kept = readdirSync(indexDir("bounded")).sort();
    assert.deepEqual(kept, tokens.slice(2).sort());
    assert.equal((await backup("bounded", [root], tokens[0])).manifest.kind, "full");
    assert.equal((await backup("bounded", [root], tokens.at(-1))).manifest.kind, "delta");
  });

  test("bounds: at most 256 MiB of indexes per app, the newest kept (sparse files stand in)", () => {
    const d = join(dir, "bytes-bound");
    mkdirSync(d);
    const names = [1, 2, 3, 4].map((i) => String(i).repeat(32));
    names.forEach((n, i) => {
      const f = join(d, n);
      writeFileSync(f, "");
      truncateSync(f, 100 * 1024 * 1024);
      utimesSync(f, 1_700_000_000 + i, 1_700_000_000 + i);
    });
    const fd = openSync(d, "r");
    try {
      pruneIndexes(fd, names[0] as string); // the one just made always stays
    } finally {
      closeSync(fd);
    }
    // Newest first: the kept one (100 MiB), then 4 (200 MiB); 3 would pass 256 MiB.
    assert.deepEqual(readdirSync(d).sort(), [names[0], names[3]].sort());
  });

  test("a backup that does not complete keeps no index and leaves no temporary file", async () => {
    const base = await backup("partial", [root]);
    await assert.rejects(backup("partial", [root], base.end.token, 5), /stopped/);
    assert.deepEqual(readdirSync(indexDir("partial")), [base.end.token]);
  });

  describe("forged-index-file: what is in an index's place must be ferryd's own, whole index", () => {
    const forge = async (how: (path: string, token: string) => void, expectRemoved = true) => {
      const good = await backup("forged", [root]);
      const token = good.end.token as string;
      const path = join(indexDir("forged"), token);
      how(path, token);
      logLines.length = 0;
      const r = await backup("forged", [root], token);
      assert.equal(r.manifest.kind, "full");
      assert.ok(files(r).every((h) => h.unchanged === undefined));
      assert.ok(
        logLines.some((l) => l.includes("backup index refused")),
        logLines.join(""),
      );
      if (expectRemoved) assert.equal(readdirSync(indexDir("forged")).includes(token), false);
    };

    test("one flipped byte (its checksum fails)", () =>
      forge((path) => {
        const b = readFileSync(path);
        b[b.length - 50] = (b[b.length - 50] as number) ^ 1;
        writeFileSync(path, b);
      }));

    test("truncated", () =>
      forge((path) => writeFileSync(path, readFileSync(path).subarray(0, 100))));

    test("another app's valid index copied under this token", async () => {
      const other = await backup("other", [root]);
      await forge((path) => copyFileSync(join(indexDir("other"), other.end.token as string), path));
    });

    test("a valid index of this app renamed to another token", async () => {
      const older = await backup("forged", [root]);
      await forge((path) =>
        copyFileSync(join(indexDir("forged"), older.end.token as string), path),
      );
    });

    test("a symlink to a valid index", async () => {
      const older = await backup("forged", [root]);
      await forge((path) => {
        unlinkSync(path);
        symlinkSync(join(indexDir("forged"), older.end.token as string), path);
      });
    });

    test("a second link to it (nlink 2)", () =>
      forge((path) => linkSync(path, `${path}-second-link`), false));

    test(
      "planted-by-backup-user: a whole, valid index owned by another uid",
      { skip: !isRoot && "needs root (chown)" },
      () => forge((path) => chownSync(path, 12345, 12345)),
    );
  });

  test("state-dir-since-owned-by-backup-user: an app's index directory owned by another uid is refused", {
    skip: !isRoot && "needs root (chown)",
  }, async () => {
    await backup("owned", [root]);
    chownSync(indexDir("owned"), 12345, 12345);
    await assert.rejects(backup("owned", [root]), (e: Error & { code?: string }) => {
      assert.equal(e.code, "STATE_DIR_UNSAFE");
      return true;
    });
    rmSync(indexDir("owned"), { recursive: true });
  });

  test("at start: temporary files of a killed ferryd and the indexes of undeclared apps are removed", async () => {
    const kept = await backup("notes", [root]);
    writeFileSync(join(indexDir("notes"), ".tmp-0123456789abcdef0123456789abcdef"), "partial");
    await backup("gone", [root]);
    const apps = new Map<string, DeclaredApp>([
      ["notes", { driver: "files", settings: {} }],
      ["other", { driver: "sqlite", settings: {} }],
    ]);
    cleanSinceIndexes(state, apps, log);
    const left = readdirSync(join(state.path, SINCE_DIR)).sort();
    assert.deepEqual(left, ["notes"]);
    const names = readdirSync(indexDir("notes"));
    assert.ok(names.includes(kept.end.token as string));
    assert.ok(names.every((n) => /^[0-9a-f]{32}$/.test(n)));
  });
});
