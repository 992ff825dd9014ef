/**
 * Repository locks (docs/repository.md, "Locks"): a lock is a sealed file in `locks/`.
 * Backups take shared locks, prune (and forget --prune) an exclusive one. A lock is stale
 * when it is older than STALE_MS (live holders refresh theirs every REFRESH_MS) or when it
 * was made on this host by a process that no longer exists; stale locks are removed by
 * whoever finds them. Taking a lock: write ours, then list; a conflicting live lock means
 * ours is removed again and the command fails (two racing writers both back off, never
 * both proceed).
 */

import { hostname } from "node:os";
import { FerryError } from "../core/errors.js";
import type { Repository } from "./repository.js";

export const STALE_MS = 30 * 60 * 1000;
export const REFRESH_MS = 5 * 60 * 1000;

export interface LockInfo {
  time: string;
  exclusive: boolean;
  host: string;
  pid: number;
  uid: number;
  /** Identifies the holder across refreshes. */
  nonce: string;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

export function isStale(l: LockInfo, now = Date.now()): boolean {
  const t = Date.parse(l.time);
  if (!Number.isFinite(t) || now - t > STALE_MS) return true;
  if (l.host === hostname() && l.pid !== process.pid && !pidAlive(l.pid)) return true;
  return false;
}

export class RepoLock {
  private name: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private constructor(
    private readonly repo: Repository,
    private readonly info: LockInfo,
  ) {}

  static async acquire(repo: Repository, exclusive: boolean): Promise<RepoLock> {
    const info: LockInfo = {
      time: new Date().toISOString(),
      exclusive,
      host: hostname(),
      pid: process.pid,
      uid: process.getuid?.() ?? -1,
      nonce: Math.random().toString(36).slice(2),
    };
    const lock = new RepoLock(repo, info);
    for (let attempt = 0; ; attempt++) {
      lock.name = await repo.writeFile("locks", Buffer.from(JSON.stringify(info)));
      let conflict: LockInfo | undefined;
      try {
        conflict = await lock.conflicting();
      } catch (err) {
        await repo.backend.remove("locks", lock.name);
        throw err;
      }
      if (conflict === undefined) break;
      await repo.backend.remove("locks", lock.name);
      lock.name = undefined;
      // A young conflicting lock may be a racing locker that is about to back off too.
      const young = Date.now() - Date.parse(conflict.time) < 5000;
      if (attempt >= 4 || !young) {
        throw new FerryError(
          "REPO_LOCKED",
          `the repository is locked${conflict.exclusive ? " exclusively" : ""} by pid ${conflict.pid} on ${conflict.host} since ${conflict.time}` +
            `${exclusive ? " (this needs it alone: wait for running backups)" : ""}`,
        );
      }
      await new Promise((r) => setTimeout(r, 200 + Math.random() * 800));
    }
    lock.timer = setInterval(() => {
      lock.refresh().catch(() => {});
    }, REFRESH_MS);
    lock.timer.unref();
    return lock;
  }

  /** A live lock that conflicts with ours, removing stale ones on the way. */
  private async conflicting(): Promise<LockInfo | undefined> {
    for (const f of await this.repo.backend.list("locks")) {
      if (f.name === this.name) continue;
      let other: LockInfo;
      try {
        other = JSON.parse(
          (await this.repo.readFile("locks", f.name)).toString("utf8"),
        ) as LockInfo;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "ENOENT") continue; // removed meanwhile
        throw new FerryError(
          "REPO_LOCKED",
          `lock ${f.name} cannot be read: ${(err as Error).message}`,
        );
      }
      if (other.nonce === this.info.nonce) continue;
      if (isStale(other)) {
        await this.repo.backend.remove("locks", f.name);
        continue;
      }
      if (this.info.exclusive || other.exclusive) return other;
    }
    return undefined;
  }

  private async refresh(): Promise<void> {
    const old = this.name;
    this.info.time = new Date().toISOString();
    this.name = await this.repo.writeFile("locks", Buffer.from(JSON.stringify(this.info)));
    if (old !== undefined && old !== this.name) await this.repo.backend.remove("locks", old);
  }

  async release(): Promise<void> {
    if (this.timer !== undefined) clearInterval(this.timer);
    if (this.name !== undefined) await this.repo.backend.remove("locks", this.name);
    this.name = undefined;
  }
}
