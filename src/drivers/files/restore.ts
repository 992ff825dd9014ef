/**
 * The files driver's restore: extract into staging beside each declared path, then swap
 * atomically.
 *
 * Staging: `.<name>.ferry-restore-<id>` in the live directory's parent (same filesystem,
 * so renameat2 can swap), created by ferryd with mode 0700 and owned by ferryd's uid until
 * the very end, so the application's user cannot reach into it while it is built. Every
 * operation is relative to held directory descriptors: a parent is opened with
 * openat2(staging, "a/b", RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS), files
 * are created O_CREAT|O_EXCL|O_NOFOLLOW, links with symlinkat/linkat (never following).
 *
 * What the archive may say is checked entry by entry (src/core/archive/paths.ts): no absolute or
 * `..` paths, no control characters, nothing outside `data/<declared index>/`, parents
 * must be earlier directories of the same archive (so nothing can be placed below a
 * symlink), each path at most once, hardlinks only to earlier regular files of the same
 * root, no device nodes or FIFOs, limits on entries, depth and name length. Owners are
 * mapped: everything becomes the application's configured owner and group. Set-uid and
 * set-gid bits are cleared.
 *
 * Commit (only after ferryd verified the end record): directory modes and times are
 * applied deepest first, the filesystem is synced, the journal says "staged", each root is
 * swapped in with renameat2(RENAME_EXCHANGE), the journal says "cleanup", the old trees are
 * removed (symlink-safe) and the journal is deleted. Abort removes the staging trees; the
 * live data was never touched.
 */
import { randomBytes } from "node:crypto";
import { closeSync, fchmodSync, fchownSync, fsyncSync, write } from "node:fs";
import { basename, dirname } from "node:path";
import {
  checkLinkTarget,
  DEFAULT_RESTORE_LIMITS,
  parseArchivePath,
  type RestoreLimits,
  unsafe,
} from "../../core/archive/paths.js";
import type { TarHeader } from "../../core/archive/tar.js";
import { readCaps } from "../../core/caps.js";
import { FerryError } from "../../core/errors.js";
import { failpoint } from "../../core/failpoint.js";
import { explain, isDirMode, openBeneath, openRoot, RESOLVE_STRICT } from "../../core/safe-fs.js";
import { idOf } from "../../core/safe-remove.js";
import { makePrivateDir } from "../../core/state-dir.js";
import {
  DT_DIR,
  lchownAt,
  linkAt,
  mkdirAt,
  O_CLOEXEC,
  O_CREAT,
  O_DIRECTORY,
  O_EXCL,
  O_NOFOLLOW,
  O_PATH,
  O_RDONLY,
  O_WRONLY,
  openat2,
  RENAME_EXCHANGE,
  readDirBatch,
  renameAt2,
  rewindDir,
  S_IFMT,
  S_IFREG,
  SysError,
  setTimesAt,
  setTimesFd,
  statAt,
  statFd,
  symlinkAt,
  syncFs,
} from "../../core/sys.js";
import type { RestoreContext, RestoreResult, RestoreSession } from "../types.js";
import type { FilesConfig } from "./config.js";
import {
  idAt,
  type Journal,
  type JournalRoot,
  newRestoreId,
  removeJournal,
  removeOldTree,
  removeStaging,
  stagingName,
  swapIn,
  writeJournal,
} from "./journal.js";

interface Root {
  path: string;
  parentFd: number;
  name: string;
  staging: string;
  stagingFd: number;
  existed: boolean;
  meta?: { mode: number; sec: number; nsec: number };
}

/**
 * Directory modes and times, applied at commit: 22 bytes per directory in fixed-size
 * typed-array chunks (no growth copies), keyed by inode number. Nothing else is kept per
 * entry: parents, duplicates and hardlink targets are looked up in the staging tree itself,
 * which only this restore writes to. See README, "Limits".
 */
class DirTable {
  static readonly CHUNK = 1 << 16;
  private ino: Float64Array[] = [];
  private sec: Float64Array[] = [];
  private nsec: Uint32Array[] = [];
  private mode: Uint16Array[] = [];
  size = 0;

  add(ino: bigint, mode: number, sec: number, nsec: number): void {
    const c = this.size >>> 16;
    const i = this.size & 0xffff;
    if (i === 0) {
      this.ino.push(new Float64Array(DirTable.CHUNK));
      this.sec.push(new Float64Array(DirTable.CHUNK));
      this.nsec.push(new Uint32Array(DirTable.CHUNK));
      this.mode.push(new Uint16Array(DirTable.CHUNK));
    }
    (this.ino[c] as Float64Array)[i] = Number(ino);
    (this.sec[c] as Float64Array)[i] = sec;
    (this.nsec[c] as Uint32Array)[i] = nsec;
    (this.mode[c] as Uint16Array)[i] = mode;
    this.size++;
  }

  private inoAt(k: number): number {
    return (this.ino[k >>> 16] as Float64Array)[k & 0xffff] as number;
  }

  /** Sorts an index by inode (4 bytes per directory) so `find` can search it. */
  index(): Uint32Array {
    const order = new Uint32Array(this.size);
    for (let k = 0; k < this.size; k++) order[k] = k;
    order.sort((a, b) => this.inoAt(a) - this.inoAt(b));
    return order;
  }

  find(order: Uint32Array, ino: bigint): { mode: number; sec: number; nsec: number } | undefined {
    const want = Number(ino);
    let lo = 0;
    let hi = order.length - 1;
    while (lo <= hi) {
      const mid = (lo + hi) >>> 1;
      const k = order[mid] as number;
      const v = this.inoAt(k);
      if (v === want) {
        const c = k >>> 16;
        const i = k & 0xffff;
        return {
          mode: (this.mode[c] as Uint16Array)[i] as number,
          sec: (this.sec[c] as Float64Array)[i] as number,
          nsec: (this.nsec[c] as Uint32Array)[i] as number,
        };
      }
      if (v < want) lo = mid + 1;
      else hi = mid - 1;
    }
    return undefined;
  }
}

/**
 * Applies directory modes and times below `rootFd`, children before parents (a parent's
 * final mode may forbid entering it), reading the tree a batch of names at a time so that
 * a directory with millions of entries is never listed into memory at once.
 */
function applyDirMeta(rootFd: number, table: DirTable): void {
  if (table.size === 0) return;
  const order = table.index();
  interface Frame {
    fd: number;
    pending: Buffer[];
  }
  const buf = Buffer.alloc(16 * 1024);
  const subdirs = (fd: number): Buffer[] => {
    const out: Buffer[] = [];
    for (;;) {
      const batch = readDirBatch(fd, buf);
      if (batch.length === 0) return out;
      for (const d of batch) {
        if (d.type === DT_DIR || (d.type === 0 && isDirMode(statAt(fd, d.name).mode)))
          out.push(d.name);
      }
      if (out.length > 0) return out;
    }
  };
  rewindDir(rootFd); // it may have been listed before (an emptiness check when made)
  const stack: Frame[] = [{ fd: rootFd, pending: subdirs(rootFd) }];
  try {
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as Frame;
      const next = top.pending.pop();
      if (next !== undefined) {
        const fd = openat2(top.fd, next, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, RESOLVE_STRICT);
        stack.push({ fd, pending: [] });
        (stack[stack.length - 1] as Frame).pending = subdirs(fd);
        continue;
      }
      top.pending = subdirs(top.fd);
      if (top.pending.length > 0) continue;
      stack.pop();
      if (top.fd === rootFd) continue;
      try {
        const meta = table.find(order, statFd(top.fd).ino);
        if (meta === undefined) {
          throw new FerryError(
            "RESTORE_FAILED",
            "the staging tree holds a directory the archive did not create",
          );
        }
        fchmodSync(top.fd, meta.mode);
        setTimesFd(top.fd, meta.sec, meta.nsec);
      } finally {
        closeSync(top.fd);
      }
    }
  } finally {
    for (const f of stack) if (f.fd !== rootFd) closeSync(f.fd);
  }
}

/** The manifest's `paths` equal the declared paths, byte for byte and in order. */
function samePaths(manifest: unknown, declared: readonly string[]): boolean {
  if (!Array.isArray(manifest) || manifest.length !== declared.length) return false;
  return manifest.every(
    (p, i) =>
      typeof p === "string" && Buffer.from(p, "utf8").equals(Buffer.from(declared[i] as string)),
  );
}

function writeAt(fd: number, buf: Buffer, pos: number): Promise<number> {
  return new Promise((resolve, reject) =>
    write(fd, buf, 0, buf.length, pos, (e, n) => (e ? reject(e) : resolve(n))),
  );
}

const WRITE_BATCH = 1024 * 1024;

interface OpenFile {
  fd: number;
  pos: number;
  pending: Buffer[];
  pendingBytes: number;
}

/** Writes what was gathered for an open file, at its position. */
async function flush(f: OpenFile): Promise<void> {
  if (f.pendingBytes === 0) return;
  const buf = f.pending.length === 1 ? (f.pending[0] as Buffer) : Buffer.concat(f.pending);
  f.pending = [];
  f.pendingBytes = 0;
  let off = 0;
  while (off < buf.length) {
    const n = await writeAt(f.fd, off === 0 ? buf : buf.subarray(off), f.pos);
    off += n;
    f.pos += n;
  }
}

/** Mode bits an archive may set: permissions and sticky, never set-uid or set-gid. */
export function sanitizeMode(mode: number): number {
  return mode & 0o1777;
}

export async function openRestore(
  config: FilesConfig,
  ctx: RestoreContext,
  limits: RestoreLimits = DEFAULT_RESTORE_LIMITS,
): Promise<RestoreSession> {
  const myUid = process.getuid?.() ?? -1;
  const caps = readCaps();
  if (config.uid === 0 && (config as { allow_root?: boolean }).allow_root !== true) {
    throw new FerryError(
      "RESTORE_NOT_ALLOWED",
      `${ctx.app}'s owner is root; restoring files owned by root needs allow_root = true in its config`,
    );
  }
  if (myUid !== 0 && !caps.effective.includes("chown") && config.uid !== myUid) {
    throw new FerryError(
      "RESTORE_NOT_ALLOWED",
      `ferryd runs without CAP_CHOWN (user mode), so it can only restore files owned by its own uid ${myUid}, not ${config.owner}`,
    );
  }
  const paths = ctx.manifest.paths;
  if (!samePaths(paths, config.paths)) {
    const shown = JSON.stringify(paths) ?? "nothing";
    throw new FerryError(
      "ARCHIVE_FOREIGN",
      `the archive holds paths ${shown.length > 300 ? `${shown.slice(0, 300)}…` : shown} but ${ctx.app} declares ${JSON.stringify(config.paths)}; it was made for a different application or configuration`,
    );
  }

  const id = newRestoreId(randomBytes(6));
  const privilege = ctx.state.options;
  const stagingOwner = privilege.privileged ? 0 : privilege.uid;
  const roots: Root[] = [];
  const journal: Journal = {
    version: 1,
    app: ctx.app,
    id,
    phase: "extracting",
    started: new Date().toISOString(),
    roots: [],
  };
  /** Removes every staging tree this restore made, checked by identity (journal.ts). */
  const removeAllStaging = () => {
    for (const [i, r] of roots.entries()) {
      const jr = journal.roots[i];
      if (jr === undefined || jr.stagingId === "") continue; // never made, or it removed itself
      if (removeStaging(r.parentFd, jr, stagingOwner) === "foreign") {
        ctx.warnings.push(`${r.staging} beside ${r.path} is no longer ferryd's; left in place`);
      }
    }
  };
  const closeAll = () => {
    for (const r of roots) {
      if (r.stagingFd >= 0) closeSync(r.stagingFd);
      closeSync(r.parentFd);
    }
  };
  try {
    for (const path of config.paths) {
      const parentFd = openRoot(dirname(path));
      const name = basename(path);
      const root: Root = {
        path,
        parentFd,
        name,
        staging: stagingName(path, id),
        stagingFd: -1,
        existed: false,
      };
      roots.push(root);
      let oldId: string | undefined;
      if (idAt(parentFd, name) !== undefined) {
        // Must be a real directory, not a link. O_PATH: its mode may keep even its owner
        // out (an earlier archive may have set 0000), which must not block the next restore.
        const fd = openat2(
          parentFd,
          name,
          O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC,
          0,
          RESOLVE_STRICT,
        );
        oldId = idOf(fd);
        closeSync(fd);
        root.existed = true;
      }
      journal.roots.push({
        path,
        staging: root.staging,
        stagingId: "",
        existed: root.existed,
        ...(oldId === undefined ? {} : { oldId }),
      });
    }
    writeJournal(ctx.state, journal);
    for (const [i, root] of roots.entries()) {
      // Root-owned 0700 at once (when ferryd holds capabilities): neither the backup user
      // (ferryd's own uid) nor the app's owner can enter the tree while it is built, so
      // nothing inside can be swapped between a mkdirat and the chown that follows it.
      root.stagingFd = makePrivateDir(root.parentFd, root.staging, privilege, {
        existing: "fail",
      });
      const st = statFd(root.stagingFd);
      (journal.roots[i] as JournalRoot).stagingId = `${st.dev}:${st.ino}`;
    }
    writeJournal(ctx.state, journal);
  } catch (err) {
    removeAllStaging();
    closeAll();
    removeJournal(ctx.state, ctx.app);
    throw err instanceof FerryError
      ? err
      : new FerryError("RESTORE_FAILED", `cannot prepare the restore: ${explain(err)}`, {
          cause: err,
        });
  }
  failpoint("restore-prepared");

  const dirs = roots.map(() => new DirTable());
  let entries = 0;
  let bytes = 0;
  let current: OpenFile | undefined;
  let cachedParent: { root: number; rel: string; fd: number } | undefined;

  const parentFd = (root: number, rel: string): number => {
    if (rel === "") return (roots[root] as Root).stagingFd;
    if (cachedParent !== undefined && cachedParent.root === root && cachedParent.rel === rel)
      return cachedParent.fd;
    if (cachedParent !== undefined) closeSync(cachedParent.fd);
    cachedParent = undefined;
    const fd = openStaged(root, rel);
    cachedParent = { root, rel, fd };
    return fd;
  };

  /**
   * Opens `rel` in root's staging tree. Only this restore creates anything there, so the
   * staging tree itself says whether an earlier entry of the archive made `rel` a
   * directory: missing, a file or a symlink in the way all fail here.
   */
  const openStaged = (root: number, rel: string, what = "the parent directory"): number => {
    try {
      return openat2(
        (roots[root] as Root).stagingFd,
        rel,
        O_RDONLY | O_DIRECTORY | O_CLOEXEC,
        0,
        RESOLVE_STRICT,
      );
    } catch (err) {
      if (err instanceof SysError && err.errnoName === "ENOENT")
        throw unsafe(`${what} ${JSON.stringify(rel)} is not an earlier directory of the archive`);
      if (err instanceof SysError && (err.errnoName === "ENOTDIR" || err.errnoName === "ELOOP"))
        throw unsafe(`${what} ${JSON.stringify(rel)} is a file or a link, not a directory`);
      throw unsafe(
        `cannot open ${rel} inside the staging tree (${explain(err)}): the archive is inconsistent`,
      );
    }
  };

  const closeCurrent = () => {
    if (current !== undefined) closeSync(current.fd);
    current = undefined;
  };

  const discard = () => {
    closeCurrent();
    if (cachedParent !== undefined) closeSync(cachedParent.fd);
    cachedParent = undefined;
    for (const r of roots) {
      if (r.stagingFd >= 0) closeSync(r.stagingFd);
      r.stagingFd = -1;
    }
    removeAllStaging();
    for (const r of roots) closeSync(r.parentFd);
    removeJournal(ctx.state, ctx.app);
  };

  const session: RestoreSession = {
    async entry(h: TarHeader) {
      ctx.signal.throwIfAborted();
      entries++;
      if (entries > limits.maxEntries)
        throw unsafe(`the archive has more than ${limits.maxEntries} entries`);
      if (entries === 500) failpoint("restore-extracting");
      const p = parseArchivePath(h.path, roots.length, limits);
      const root = roots[p.root] as Root;
      if (p.parts.length === 0) {
        if (root.meta !== undefined) throw unsafe(`entry ${JSON.stringify(h.path)} appears twice`);
        if (h.type !== "dir") throw unsafe(`entry ${JSON.stringify(h.path)} must be a directory`);
        root.meta = { mode: sanitizeMode(h.mode), sec: h.mtimeSec, nsec: h.mtimeNsec };
        return;
      }
      if (root.meta === undefined)
        throw unsafe(`entry ${JSON.stringify(h.path)} comes before its root directory`);
      const parentRel = p.parts.slice(0, -1).join("/");
      const name = p.parts[p.parts.length - 1] as string;
      // Duplicates need no bookkeeping either: every creation below is exclusive
      // (mkdirat, O_EXCL, symlinkat, linkat), so a name made earlier fails with EEXIST.
      let pfd: number;
      try {
        pfd = parentFd(p.root, parentRel);
      } catch (err) {
        if (!(err instanceof FerryError)) throw err;
        throw unsafe(`entry ${JSON.stringify(h.path)}: ${err.message}`);
      }
      const { uid, gid } = config;
      try {
        switch (h.type) {
          case "dir":
            mkdirAt(pfd, name, 0o700);
            lchownAt(pfd, name, uid, gid);
            (dirs[p.root] as DirTable).add(
              statAt(pfd, name).ino,
              sanitizeMode(h.mode),
              h.mtimeSec,
              h.mtimeNsec,
            );
            return;
          case "file": {
            const fd = openBeneath(pfd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600);
            current = { fd, pos: 0, pending: [], pendingBytes: 0 };
            return;
          }
          case "symlink":
            checkLinkTarget(h.path, h.linkpath, limits);
            symlinkAt(h.linkpath, pfd, name);
            lchownAt(pfd, name, uid, gid);
            setTimesAt(pfd, name, h.mtimeSec, h.mtimeNsec);
            return;
          case "hardlink": {
            const notEarlier = () =>
              unsafe(
                `hardlink ${JSON.stringify(h.path)} does not point to an earlier regular file of this archive`,
              );
            let target: ReturnType<typeof parseArchivePath>;
            try {
              target = parseArchivePath(h.linkpath, roots.length, limits);
            } catch {
              throw notEarlier();
            }
            if (target.root !== p.root)
              throw unsafe(`hardlink ${JSON.stringify(h.path)} crosses declared paths`);
            if (target.parts.length === 0) throw notEarlier();
            const targetParent = target.parts.slice(0, -1).join("/");
            const targetName = target.parts[target.parts.length - 1] as string;
            let srcFd = root.stagingFd;
            try {
              if (targetParent !== "") srcFd = openStaged(p.root, targetParent);
            } catch {
              throw notEarlier();
            }
            try {
              // In the staging tree, a regular file can only be one the archive made.
              let st: ReturnType<typeof statAt>;
              try {
                st = statAt(srcFd, targetName);
              } catch {
                throw notEarlier();
              }
              if ((st.mode & S_IFMT) !== S_IFREG) throw notEarlier();
              linkAt(srcFd, targetName, pfd, name);
            } finally {
              if (srcFd !== root.stagingFd) closeSync(srcFd);
            }
            return;
          }
          default:
            throw unsafe(
              `entry ${JSON.stringify(h.path)} is a ${h.type === "fifo" ? "FIFO" : "device node"}; Ferry does not restore those`,
            );
        }
      } catch (err) {
        if (err instanceof SysError && err.errnoName === "EEXIST")
          throw unsafe(`entry ${JSON.stringify(h.path)} appears twice`);
        if (err instanceof SysError) {
          throw unsafe(
            `cannot create ${JSON.stringify(h.path)} (${explain(err)}): the archive is inconsistent`,
          );
        }
        throw err;
      }
    },

    async data(chunk: Buffer) {
      ctx.signal.throwIfAborted();
      if (current === undefined) return;
      // Chunks arrive at the socket's 64 KiB; writing each through the thread pool costs a
      // round trip apiece, so they are gathered and written WRITE_BATCH at a time (the
      // chunks are fresh buffers from the socket, never reused, so keeping them is safe).
      current.pending.push(chunk);
      current.pendingBytes += chunk.length;
      bytes += chunk.length;
      if (current.pendingBytes >= WRITE_BATCH) await flush(current);
    },

    async entryEnd(h: TarHeader) {
      if (current === undefined || h.type !== "file") return;
      await flush(current);
      const fd = current.fd;
      // chown first (it clears set-id bits anyway), then the sanitised mode, then times.
      fchownSync(fd, config.uid, config.gid);
      fchmodSync(fd, sanitizeMode(h.mode));
      setTimesFd(fd, h.mtimeSec, h.mtimeNsec);
      closeCurrent();
    },

    async commit(): Promise<RestoreResult> {
      try {
        closeCurrent();
        for (const [i, r] of roots.entries()) {
          if (r.meta === undefined)
            throw unsafe(`the archive has no data/${i}/ directory for ${r.path}`);
        }
        if (cachedParent !== undefined) closeSync(cachedParent.fd);
        cachedParent = undefined;
        // Directory metadata last, children before parents, so modes and times stick.
        for (const [i, r] of roots.entries()) applyDirMeta(r.stagingFd, dirs[i] as DirTable);
        for (const r of roots) {
          const m = r.meta as NonNullable<Root["meta"]>;
          fchownSync(r.stagingFd, config.uid, config.gid);
          fchmodSync(r.stagingFd, m.mode);
          setTimesFd(r.stagingFd, m.sec, m.nsec);
          syncFs(r.stagingFd);
          fsyncSync(r.stagingFd);
        }
      } catch (err) {
        discard();
        throw err;
      }
      failpoint("restore-synced");
      journal.phase = "staged";
      writeJournal(ctx.state, journal);
      failpoint("restore-staged");

      const swapped: Root[] = [];
      try {
        for (const [i, r] of roots.entries()) {
          swapIn(r.parentFd, journal.roots[i] as JournalRoot);
          swapped.push(r);
          fsyncSync(r.parentFd);
          failpoint(`restore-swapped-${i}`);
        }
      } catch (err) {
        // Put back what was swapped, then drop the staging: the live data is as it was.
        for (const r of swapped.reverse()) {
          if (r.existed) renameAt2(r.parentFd, r.staging, r.parentFd, r.name, RENAME_EXCHANGE);
          else renameAt2(r.parentFd, r.name, r.parentFd, r.staging, 0);
        }
        discard();
        throw new FerryError(
          "RESTORE_FAILED",
          `could not swap the restored data in: ${explain(err)}`,
          { cause: err },
        );
      }
      journal.phase = "cleanup";
      writeJournal(ctx.state, journal);
      failpoint("restore-before-cleanup");
      for (const [i, r] of roots.entries()) {
        closeSync(r.stagingFd);
        r.stagingFd = -1;
        try {
          if (removeOldTree(r.parentFd, journal.roots[i] as JournalRoot) === "foreign") {
            ctx.warnings.push(
              `the old data of ${r.path} was replaced before it could be removed; left at ${r.staging}`,
            );
          }
        } catch (err) {
          ctx.warnings.push(
            `could not remove the old data of ${r.path} (left at ${r.staging}): ${explain(err)}`,
          );
        }
        closeSync(r.parentFd);
      }
      removeJournal(ctx.state, ctx.app);
      return { entries, bytes };
    },

    async abort() {
      discard();
    },
  };
  return session;
}
