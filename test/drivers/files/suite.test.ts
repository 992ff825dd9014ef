/**
 * The files driver through the shared driver suite (test/drivers/suite.ts), as ferryd
 * drives it: a tree owned by the test user `ferry-files-suite` (files, a subdirectory, a
 * symlink, a hardlink, odd modes), backed up, changed, restored. The files driver reads the
 * data itself (no helper process), so it runs the suite's helper-less cases: a declared path
 * that became a symlink fails the backup and says why, an empty directory is a valid backup
 * that restores as empty, and a cancelled backup of a large (sparse) file lets go of it.
 *
 * Needs root (the restore maps owners, hooks run as the test user). Bounds: a 3 MiB tree;
 * the cancelled backup reads at most a few hundred MiB of a 64 GiB sparse file.
 */
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readlinkSync,
  rmSync,
  symlinkSync,
  truncateSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { filesDriver } from "../../../src/drivers/files/index.js";
import { snapshot } from "../../helpers/files-app.js";
import { needsRoot } from "../../helpers/proc.js";
import { ensureUser, removeDir, runDriverSuite } from "../suite.js";

runDriverSuite({
  name: "files",
  driver: filesDriver,
  skip: needsRoot,
  helper: false,
  async setup() {
    const u = ensureUser("ferry-files-suite");
    const dir = mkdtempSync("/tmp/ferry-files-suite-");
    chmodSync(dir, 0o755);
    // Root-owned parents, as for a real application: staging is made beside each path.
    const apps = join(dir, "apps");
    mkdirSync(apps, { mode: 0o755 });
    const live = join(apps, "data");
    const empty = join(apps, "empty");
    const slow = join(apps, "slow");
    const missing = join(apps, "missing");
    const hookDir = join(dir, "hooks");
    mkdirSync(hookDir);
    chownSync(hookDir, u.uid, u.gid);
    const own = (p: string) => execFileSync("chown", ["-R", "-h", `${u.uid}:${u.gid}`, p]);

    const seed = async () => {
      rmSync(live, { recursive: true, force: true });
      mkdirSync(join(live, "sub"), { recursive: true });
      // Random bytes first, so the suite's flipped byte lands in this body.
      writeFileSync(join(live, "a.bin"), randomBytes(3 * 1024 * 1024 + 17), { mode: 0o640 });
      writeFileSync(join(live, "sub/b.txt"), "bravo\n", { mode: 0o600 });
      symlinkSync("../a.bin", join(live, "sub/link-to-a"));
      execFileSync("ln", [join(live, "sub/b.txt"), join(live, "sub/hard-b")]);
      own(live);
      chmodSync(join(live, "sub"), 0o710);
      chmodSync(live, 0o750);
    };

    // A declared path that is a symlink: ferryd never follows one (safe-fs.ts).
    const linked = join(apps, "linked");
    symlinkSync(live, linked);
    mkdirSync(empty);
    chownSync(empty, u.uid, u.gid);
    mkdirSync(slow);
    const big = join(slow, "big.img");
    writeFileSync(big, "");
    truncateSync(big, 64 * 1024 ** 3); // sparse: no disk used
    own(slow);

    return {
      table: { paths: [live], owner: u.name },
      hookUser: u.name,
      hookDir,
      seed,
      async mutate() {
        writeFileSync(join(live, "sub/b.txt"), "changed\n");
        unlinkSync(join(live, "sub/link-to-a"));
        writeFileSync(join(live, "added.txt"), "new\n");
        own(live);
      },
      async snapshot() {
        return JSON.stringify([...snapshot(live)]);
      },
      failing: {
        table: { paths: [linked] },
        stderr: /cannot open .*\/linked: not a directory/,
      },
      emptySource: {
        table: { paths: [empty] },
        async fill() {
          writeFileSync(join(empty, "x.txt"), "x\n");
          chownSync(join(empty, "x.txt"), u.uid, u.gid);
        },
        async isEmpty() {
          return readdirSync(empty).length === 0;
        },
      },
      slow: {
        table: { paths: [slow] },
        // The backup runs in this process: it holds the big file while it reads it.
        async helperRunning() {
          for (const fd of readdirSync("/proc/self/fd")) {
            try {
              if (readlinkSync(`/proc/self/fd/${fd}`) === big) return true;
            } catch {}
          }
          return false;
        },
      },
      // Data for a declared path the application does not have (one path: only data/0/).
      garbage: {
        entries: [{ path: "data/1/x.txt", body: Buffer.from("nonsense\n") }],
        codes: /^ARCHIVE_UNSAFE$/,
      },
      health: {
        ok: /^1 path\(s\) readable$/,
        unhealthy: {
          table: { paths: [missing] },
          message: /cannot open .*\/missing: no such file or directory/,
        },
      },
      async teardown() {
        removeDir(dir);
      },
    };
  },
});
