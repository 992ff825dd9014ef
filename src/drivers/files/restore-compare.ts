/**
 * The files driver's dry run (`ferry import --dry-run`): what a restore of this archive
 * would change in the live trees, without changing anything anywhere.
 *
 * Each entry is checked by the restore's own rules (src/core/archive/paths.ts: confined
 * to `data/<declared index>/`, no `..`, parents are earlier directories of the archive,
 * each path once, hardlinks only to earlier files of the same root, no device nodes or
 * FIFOs, the limits), so an archive the restore would refuse is refused here too, with
 * the same code. The restore checks structure in its staging tree; a dry run has none,
 * so it keeps what it needs in `PathTable`: a 64-bit hash of each path and its type, in
 * an open-addressing table of 8-byte slots at most 70 % full. At the 5,000,000-entry
 * limit that is 2^23 slots, 64 MiB (96 MiB for the moment it doubles); paths themselves
 * are never kept. Two paths sharing a 64-bit hash (about 1 in 10^6 for 5,000,000
 * entries) would make the dry run call a live entry "unchanged" or not "removed"; the
 * restore itself does not depend on it.
 *
 * The live trees are only read, with ferryd's rights, through held descriptors and never
 * through a symlink (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS, statx without
 * following), as the backup reads them:
 * - an entry whose live path is missing (or lies below something that is not a
 *   directory) is "added";
 * - one that exists differs in type, content (size, then SHA-256 of the bytes), mode
 *   (after the restore's own sanitising), mtime (files), owner (the restore makes
 *   everything the application's owner's), symlink target or hardlink identity, or is
 *   "unchanged" (a directory's mtime is not compared: it moves with its contents);
 * - after the end record verified, each live tree is walked the way a backup walks it and
 *   every entry the archive does not hold is "removed" (a restore swaps the whole tree).
 *
 * Longer than 300 lines on purpose: the dry run applies the restore's own entry rules and
 * walks the live tree as a backup does; both halves of the comparison are kept together
 * so they cannot drift apart.
 */
import { createHash, type Hash } from "node:crypto";
import { closeSync, read } from "node:fs";
import {
  checkLinkTarget,
  DEFAULT_RESTORE_LIMITS,
  parseArchivePath,
  type RestoreLimits,
  unsafe,
} from "../../core/archive/paths.js";
import type { TarHeader } from "../../core/archive/tar.js";
import { FerryError } from "../../core/errors.js";
import { explain, openBeneath, openRoot, RESOLVE_STRICT } from "../../core/safe-fs.js";
import {
  O_CLOEXEC,
  O_DIRECTORY,
  O_NONBLOCK,
  O_RDONLY,
  openat2,
  readLinkAt,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  type Stat,
  SysError,
  statAt,
  statFd,
} from "../../core/sys.js";
import type { DryRunChange, DryRunResult, DryRunSession, RestoreContext } from "../types.js";
import type { FilesConfig } from "./config.js";
import { sanitizeMode } from "./restore-extract.js";
import { walkRoot } from "./walk.js";

/** Differences listed in full; beyond this only counted. */
export const MAX_LISTED = 1000;

const T_FILE = 0n;
const T_DIR = 1n;
const T_LINK = 2n;
const TYPE_BITS = 3n;
const HIGH = 1n << 63n;

/** `root/a/b` (the root's index and the components): the key of an archive path. */
function keyOf(root: number, parts: readonly string[]): string {
  return parts.length === 0 ? String(root) : `${root}/${parts.join("/")}`;
}

function hashOf(key: string): bigint {
  return (createHash("sha256").update(key).digest().readBigUInt64BE(0) | HIGH) & ~TYPE_BITS;
}

/**
 * A set of path hashes with their type, in one BigUint64Array (open addressing, linear
 * probing). 0 marks an empty slot; every stored value has its top bit set.
 */
class PathTable {
  private slots = new BigUint64Array(1 << 12);
  private count = 0;

  /** The first slot to try for `hash` (its low bits above the type bits). */
  private home(hash: bigint): number {
    return Number((hash >> 2n) & BigInt(this.slots.length - 1));
  }

  /** The type stored for `hash`, or undefined. */
  get(hash: bigint): bigint | undefined {
    const mask = this.slots.length - 1;
    for (let i = this.home(hash); ; i = (i + 1) & mask) {
      const v = this.slots[i] as bigint;
      if (v === 0n) return undefined;
      if ((v & ~TYPE_BITS) === hash) return v & TYPE_BITS;
    }
  }

  /** Adds `hash` with `type`; false if it was there already (with any type). */
  add(hash: bigint, type: bigint): boolean {
    if (this.get(hash) !== undefined) return false;
    if ((this.count + 1) * 10 > this.slots.length * 7) this.grow();
    this.put(hash | type);
    this.count++;
    return true;
  }

  private put(v: bigint): void {
    const mask = this.slots.length - 1;
    let i = this.home(v & ~TYPE_BITS);
    while (this.slots[i] !== 0n) i = (i + 1) & mask;
    this.slots[i] = v;
  }

  private grow(): void {
    const old = this.slots;
    this.slots = new BigUint64Array(old.length * 2);
    for (const v of old) if (v !== 0n) this.put(v);
  }
}

/** Reads the file held by `fd` to its end into `hash`, in 1 MiB reads off the event loop. */
async function hashFile(fd: number, hash: Hash): Promise<void> {
  const buf = Buffer.allocUnsafe(1 << 20);
  let pos = 0;
  for (;;) {
    const n = await new Promise<number>((resolve, reject) =>
      read(fd, buf, 0, buf.length, pos, (err, got) => (err ? reject(err) : resolve(got))),
    );
    if (n === 0) return;
    hash.update(buf.subarray(0, n));
    pos += n;
  }
}

interface PendingFile {
  header: TarHeader;
  live: Stat;
  parentFd: number;
  name: string;
  hash: Hash;
  display: string;
}

export async function openDryRun(
  config: FilesConfig,
  ctx: RestoreContext,
  limits: RestoreLimits = DEFAULT_RESTORE_LIMITS,
): Promise<DryRunSession> {
  const table = new PathTable();
  const rootSeen = config.paths.map(() => false);
  /** Held live roots; null: the declared path does not exist (everything is added). */
  const rootFds: (number | null)[] = config.paths.map((p) => {
    try {
      return openRoot(p);
    } catch (err) {
      const cause = err instanceof FerryError ? err.cause : err;
      if (cause instanceof SysError && cause.errnoName === "ENOENT") return null;
      throw err;
    }
  });
  const result: DryRunResult = {
    added: 0,
    removed: 0,
    changed: 0,
    unchanged: 0,
    changes: [],
    truncated: false,
  };
  let entries = 0;
  let cached: { root: number; rel: string; fd: number | null } | undefined;
  let pending: PendingFile | undefined;

  const note = (change: DryRunChange) => {
    result[change.change]++;
    if (result.changes.length < MAX_LISTED) result.changes.push(change);
    else result.truncated = true;
  };
  const display = (root: number, parts: readonly string[]) =>
    parts.length === 0
      ? (config.paths[root] as string)
      : `${config.paths[root]}/${parts.join("/")}`;

  const closeCached = () => {
    if (cached?.fd !== undefined && cached.fd !== null) closeSync(cached.fd);
    cached = undefined;
  };
  /** The live directory `rel` of root `root`, or null when it is not one. */
  const liveDir = (root: number, rel: string): number | null => {
    const rootFd = rootFds[root] as number | null;
    if (rootFd === null) return null;
    if (rel === "") return rootFd;
    if (cached !== undefined && cached.root === root && cached.rel === rel) return cached.fd;
    closeCached();
    let fd: number | null;
    try {
      fd = openat2(rootFd, rel, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0, RESOLVE_STRICT);
    } catch (err) {
      if (
        err instanceof SysError &&
        ["ENOENT", "ENOTDIR", "ELOOP", "EXDEV"].includes(err.errnoName)
      ) {
        fd = null;
      } else throw err;
    }
    cached = { root, rel, fd };
    return fd;
  };
  const liveStat = (dirFd: number | null, name: string): Stat | undefined => {
    if (dirFd === null) return undefined;
    try {
      return statAt(dirFd, name);
    } catch (err) {
      if (err instanceof SysError && err.errnoName === "ENOENT") return undefined;
      throw err;
    }
  };
  const ownerDiffers = (st: Stat) => st.uid !== config.uid || st.gid !== config.gid;

  const close = () => {
    pending = undefined;
    closeCached();
    for (const fd of rootFds) if (fd !== null) closeSync(fd);
    rootFds.fill(null);
  };

  return {
    async entry(h: TarHeader) {
      ctx.signal.throwIfAborted();
      entries++;
      if (entries > limits.maxEntries)
        throw unsafe(`the archive has more than ${limits.maxEntries} entries`);
      const p = parseArchivePath(h.path, config.paths.length, limits);
      const shown = JSON.stringify(h.path);
      const type =
        h.type === "dir"
          ? T_DIR
          : h.type === "symlink"
            ? T_LINK
            : h.type === "file" || h.type === "hardlink"
              ? T_FILE
              : undefined;
      if (type === undefined) {
        throw unsafe(
          `entry ${shown} is a ${h.type === "fifo" ? "FIFO" : "device node"}; Ferry does not restore those`,
        );
      }
      if (p.parts.length === 0) {
        if (rootSeen[p.root]) throw unsafe(`entry ${shown} appears twice`);
        if (h.type !== "dir") throw unsafe(`entry ${shown} must be a directory`);
        rootSeen[p.root] = true;
      } else if (!rootSeen[p.root]) {
        throw unsafe(`entry ${shown} comes before its root directory`);
      } else if (p.parts.length > 1) {
        const parent = table.get(hashOf(keyOf(p.root, p.parts.slice(0, -1))));
        if (parent === undefined)
          throw unsafe(
            `entry ${shown}: the parent directory is not an earlier directory of the archive`,
          );
        if (parent !== T_DIR)
          throw unsafe(`entry ${shown}: the parent directory is a file or a link, not a directory`);
      }
      if (!table.add(hashOf(keyOf(p.root, p.parts)), type)) {
        throw unsafe(`entry ${shown} appears twice`);
      }
      if (h.type === "symlink") checkLinkTarget(h.path, h.linkpath, limits);

      const where = display(p.root, p.parts);
      let dirFd: number | null;
      let name: string;
      let st: Stat | undefined;
      try {
        if (p.parts.length === 0) {
          dirFd = rootFds[p.root] as number | null;
          name = "";
          st = dirFd === null ? undefined : statFd(dirFd);
        } else {
          dirFd = liveDir(p.root, p.parts.slice(0, -1).join("/"));
          name = p.parts[p.parts.length - 1] as string;
          st = liveStat(dirFd, name);
        }
      } catch (err) {
        note({ change: "changed", path: where, what: [`unreadable (${explain(err)})`] });
        return;
      }
      if (st === undefined) {
        note({ change: "added", path: where });
        return;
      }
      const what: string[] = [];
      const liveType = st.mode & S_IFMT;
      switch (h.type) {
        case "dir":
          if (liveType !== S_IFDIR) what.push("type");
          else if ((st.mode & 0o7777) !== sanitizeMode(h.mode)) what.push("mode");
          break;
        case "symlink":
          if (liveType !== S_IFLNK) what.push("type");
          else if (!readLinkAt(dirFd as number, name).equals(Buffer.from(h.linkpath))) {
            what.push("target");
          }
          break;
        case "hardlink": {
          if (liveType !== S_IFREG) {
            what.push("type");
            break;
          }
          // The same file as the live copy of its target?
          let target: Stat | undefined;
          try {
            const t = parseArchivePath(h.linkpath, config.paths.length, limits);
            if (t.root !== p.root || t.parts.length === 0)
              throw unsafe(`hardlink ${shown} crosses declared paths`);
            if (table.get(hashOf(keyOf(t.root, t.parts))) !== T_FILE)
              throw unsafe(
                `hardlink ${shown} does not point to an earlier regular file of this archive`,
              );
            target = liveStat(
              liveDir(t.root, t.parts.slice(0, -1).join("/")),
              t.parts[t.parts.length - 1] as string,
            );
            // liveDir may have replaced the cached parent of this entry: reopen it later.
          } catch (err) {
            if (err instanceof FerryError) throw err;
            target = undefined;
          }
          if (target === undefined || target.ino !== st.ino || target.dev !== st.dev)
            what.push("link");
          break;
        }
        case "file":
          if (liveType !== S_IFREG) {
            what.push("type");
            break;
          }
          pending = {
            header: h,
            live: st,
            parentFd: dirFd as number,
            name,
            hash: createHash("sha256"),
            display: where,
          };
          return; // judged at entryEnd, once the content is known
      }
      if (what.length === 0 && ownerDiffers(st) && h.type !== "hardlink") what.push("owner");
      if (what.length === 0) result.unchanged++;
      else note({ change: "changed", path: where, what });
    },

    async data(chunk: Buffer) {
      ctx.signal.throwIfAborted();
      pending?.hash.update(chunk);
    },

    async entryEnd(h: TarHeader) {
      const f = pending;
      pending = undefined;
      if (f === undefined || h.type !== "file") return;
      const what: string[] = [];
      if (f.live.size !== h.size) what.push("content");
      else {
        // Same size: the bytes decide. Opened beneath the held parent, never a symlink, not
        // blocking on a FIFO swapped in.
        let same = false;
        try {
          const fd = openBeneath(f.parentFd, f.name, O_RDONLY | O_NONBLOCK);
          try {
            if ((statFd(fd).mode & S_IFMT) === S_IFREG) {
              const live = createHash("sha256");
              await hashFile(fd, live);
              same = live.digest().equals(f.hash.digest());
            }
          } finally {
            closeSync(fd);
          }
        } catch {
          same = false;
        }
        if (!same) what.push("content");
      }
      if ((f.live.mode & 0o7777) !== sanitizeMode(h.mode)) what.push("mode");
      if (f.live.mtimeSec !== h.mtimeSec || f.live.mtimeNsec !== h.mtimeNsec) what.push("mtime");
      if (ownerDiffers(f.live)) what.push("owner");
      if (what.length === 0) result.unchanged++;
      else note({ change: "changed", path: f.display, what });
    },

    async finish() {
      try {
        for (const [i, seen] of rootSeen.entries()) {
          if (!seen) throw unsafe(`the archive has no data/${i}/ directory for ${config.paths[i]}`);
        }
        closeCached();
        // What the live trees hold that the archive does not: gone after a restore.
        for (const [i, rootFd] of rootFds.entries()) {
          if (rootFd === null) continue;
          const walkWarnings: string[] = [];
          for (const e of walkRoot(rootFd, `data/${i}/`, walkWarnings, new Map())) {
            if (e.fd !== undefined) closeSync(e.fd);
            ctx.signal.throwIfAborted();
            const rel = e.header.path.slice(`data/${i}/`.length).replace(/\/$/, "");
            const parts = rel === "" ? [] : rel.split("/");
            if (table.get(hashOf(keyOf(i, parts))) === undefined) {
              note({ change: "removed", path: display(i, parts) });
            }
          }
          for (const w of walkWarnings) {
            // e.g. a socket: never archived, so a restore's new tree has none.
            ctx.warnings.push(
              `${w.replace(`data/${i}/`, `${config.paths[i]}/`)} (gone after a restore)`,
            );
          }
        }
        return result;
      } finally {
        close();
      }
    },

    async abort() {
      close();
    },
  };
}
