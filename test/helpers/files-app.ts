/**
 * A files application served by a real privileged ferryd, for restore tests (root only):
 * an app user owning the tree, a backup user running ferryd --user, an "outside" directory
 * of root-owned sentinels beside the app, and snapshots to prove what changed and what
 * did not.
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import {
  chmodSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { type RunningFerryd, startFerryd } from "./ferryd.js";
import { ensureUser, ferry, ROOT, type RunResult, type TestUser } from "./proc.js";

export interface FilesApp {
  dir: string;
  appDir: string; // parent of the live tree (holds staging during a restore)
  live: string;
  outside: string;
  socket: string;
  config: string;
  app: TestUser;
  backup: TestUser;
  daemon: RunningFerryd;
  restart(env?: Record<string, string>): Promise<void>;
  importArchive(archive: Buffer): Promise<RunResult>;
  exportArchive(): Promise<RunResult>;
  /** Everything observable about the live tree, the outside tree and /etc/passwd. */
  world(): World;
  close(): Promise<void>;
}

export interface World {
  live: Map<string, string>;
  outside: Map<string, string>;
  passwd: string;
  parentEntries: string[];
  journals: string[];
}

/** path → "type mode uid:gid size sha/target mtime" for every entry below `root`. */
export function snapshot(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const inodes = new Map<number, string>();
  const walk = (rel: string) => {
    const p = join(root, rel);
    const st = lstatSync(p, { bigint: true });
    let what = "";
    if (st.isSymbolicLink()) what = `link→${readlinkSync(p)}`;
    else if (st.isFile()) {
      what = `file ${st.size} ${createHash("sha256").update(readFileSync(p)).digest("hex").slice(0, 16)}`;
      const first = inodes.get(Number(st.ino));
      if (first !== undefined && st.nlink > 1n) what += ` same-inode-as ${first}`;
      else inodes.set(Number(st.ino), rel);
    } else if (st.isDirectory()) what = "dir";
    else what = "other";
    const mtime = st.isDirectory() ? "" : ` ${st.mtimeNs}`;
    out.set(rel || ".", `${what} ${(st.mode & 0o7777n).toString(8)} ${st.uid}:${st.gid}${mtime}`);
    if (st.isDirectory()) for (const n of readdirSync(p).sort()) walk(join(rel, n));
  };
  walk("");
  return out;
}

export async function setupFilesApp(
  prefix: string,
  opts: {
    restore?: boolean;
    /** The app's and the backup user's names (default ferry-rt-app, ferry-rt-bk). */
    users?: { app: string; backup: string };
    /** More config, appended (with APP for the app user's name). */
    extraConfig?: string;
  } = {},
): Promise<FilesApp> {
  const app = ensureUser(opts.users?.app ?? "ferry-rt-app");
  const backup = ensureUser(opts.users?.backup ?? "ferry-rt-bk");
  const dir = mkdtempSync(`/tmp/${prefix}-`);
  chmodSync(dir, 0o755);
  const appDir = join(dir, "apps");
  const live = join(appDir, "notes");
  const outside = join(dir, "outside");
  mkdirSync(join(live, "sub/deeper"), { recursive: true });
  mkdirSync(outside);
  writeFileSync(join(outside, "sentinel"), "must never change\n", { mode: 0o644 });
  writeFileSync(join(outside, "passwd"), "root:x:0:0::/root:/bin/sh\n", { mode: 0o644 });
  writeFileSync(join(live, "a.txt"), "alpha\n", { mode: 0o640 });
  writeFileSync(join(live, "sub/b.txt"), "bravo\n", { mode: 0o600 });
  writeFileSync(join(live, "sub/deeper/c.bin"), Buffer.alloc(100_000, 3), { mode: 0o600 });
  execFileSync("ln", ["-s", "../a.txt", join(live, "sub/link-to-a")]);
  execFileSync("ln", [join(live, "a.txt"), join(live, "sub/hard-a")]);
  execFileSync("chown", ["-R", "-h", `${app.name}:${app.name}`, live]);
  chmodSync(live, 0o750);
  const socket = join(dir, "run/ferry.sock");
  const config = join(dir, "ferry.toml");
  writeFileSync(
    config,
    `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n[apps.notes]\ndriver = "files"\npaths = ["${live}"]\nowner = "${app.name}"\nrestore = ${opts.restore ?? true}\n\n[apps.other]\ndriver = "files"\npaths = ["${outside}"]\nowner = "${app.name}"\nrestore = true\n${(opts.extraConfig ?? "").replaceAll("APP", app.name)}`,
  );
  const fx: FilesApp = {
    dir,
    appDir,
    live,
    outside,
    socket,
    config,
    app,
    backup,
    daemon: await startFerryd({ config, serviceUser: backup }),
    async restart(env) {
      await fx.daemon.stop();
      fx.daemon = await startFerryd({ config, serviceUser: backup, env });
    },
    importArchive(archive) {
      return ferry(socket, ["import", "notes"], { user: backup, input: archive });
    },
    exportArchive() {
      return ferry(socket, ["export", "notes"], { user: backup });
    },
    world() {
      return {
        live: snapshot(live),
        outside: snapshot(outside),
        passwd: readFileSync("/etc/passwd", "utf8"),
        parentEntries: readdirSync(appDir).sort(),
        journals: (() => {
          try {
            return readdirSync(join(dir, "state/journal"));
          } catch {
            return [];
          }
        })(),
      };
    },
    async close() {
      await fx.daemon.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return fx;
}

/** The world is exactly as before, and no staging or journal is left behind. */
export function assertUnchanged(before: World, after: World, what: string): void {
  assert.deepEqual(after.live, before.live, `${what}: the live tree changed`);
  assert.deepEqual(after.outside, before.outside, `${what}: something outside the app changed`);
  assert.equal(after.passwd, before.passwd, `${what}: /etc/passwd changed`);
  assert.deepEqual(after.parentEntries, ["notes"], `${what}: staging left beside the live tree`);
  assert.deepEqual(after.journals, [], `${what}: a restore journal was left`);
}

/** Builds an archive with Python's tarfile from a spec (see make_archive.py). */
export function makeArchive(spec: Record<string, unknown>): Buffer {
  return execFileSync("python3", [join(ROOT, "test/helpers/make_archive.py")], {
    input: JSON.stringify(spec),
    maxBuffer: 1 << 30,
  });
}
