/**
 * The restore session shared by the postgres and mariadb drivers: each database of the
 * archive (`data/db/<name>/NNNNNNNN.<ext>`, parts in order, see dump-parts.ts) is loaded,
 * while the archive streams in, into a scratch database `NAME__ferry_restore_<id>` by the
 * driver's restore tool (its stdin fed the parts; nothing is spooled). Nothing live is
 * touched before `commit`, called after the archive's end record verified; then the driver
 * swaps the scratch databases in (its own restore.ts says how and how atomically).
 *
 * What the archive may hold is checked here: regular files only, the driver's own extra
 * entries (metadata), and dump parts of databases the application declares, each database
 * once, its parts numbered from 0 without a gap. Any failure drops every scratch database
 * not swapped in yet; the live databases are as they were.
 */
import { randomBytes } from "node:crypto";
import type { TarHeader } from "../../core/archive/tar.js";
import { describeError, FerryError } from "../../core/errors.js";
import type { Helper } from "../../core/spawn.js";
import type { RestoreContext, RestoreSession } from "../types.js";
import {
  DB_PREFIX,
  decodeSegment,
  finishHelper,
  parsePartPath,
  writeToHelper,
} from "./dump-parts.js";

/** The error for an archive a driver cannot restore: ARCHIVE_INVALID, naming the driver if given. */
export function archiveInvalid(message: string, driver?: string): FerryError {
  return new FerryError(
    "ARCHIVE_INVALID",
    driver === undefined ? message : `not a ${driver} archive this app can restore: ${message}`,
  );
}

/** One database of the archive being restored. */
export interface DbTarget {
  /** The live database's name. */
  name: string;
  /** The scratch database the dump is loaded into. */
  temp: string;
  /** The name the live database gets while it is replaced. */
  old: string;
  /** Whether the scratch database exists (so must be dropped on failure). */
  created: boolean;
  /** The restore tool loading the scratch database. */
  load?: Helper;
  /** Dump parts seen so far. */
  parts: number;
  /** The restore tool finished (stdin closed, exited 0). */
  finished: boolean;
  /** Swapped in: no longer the session's to drop. */
  swapped: boolean;
}

/** What a database driver brings to the shared restore session. */
export interface DbRestorePlan {
  /** The driver's name, in messages. */
  driver: string;
  /** Extension of its dump parts ("pgdump", "sql"). */
  ext: string;
  /** This restore's id (random hex), part of every scratch name. */
  id: string;
  /** The scratch (`restore`) or set-aside (`old`) name of database `name`, within the server's limit. */
  stagingName(name: string, kind: "restore" | "old", id: string): string;
  /** Whether the application declares database `name`. */
  declares(name: string): boolean;
  /** Handles an entry that is not a dump part (metadata); false if the driver knows no such entry. */
  otherEntry(path: string): boolean;
  /** Creates the scratch database `t.temp` (the original's encoding and the like, where it exists). */
  createScratch(t: DbTarget): Promise<void>;
  /** Starts the tool that loads the dump into `t.temp` from its stdin. */
  startLoad(t: DbTarget): Helper;
  /** Drops database `name` (cleanup: `signal` is not the request's, which may be aborted). */
  dropDatabase(name: string, signal: AbortSignal): Promise<void>;
  /**
   * Makes the loaded scratch databases live, setting `swapped` on each as it is, and drops
   * what it set aside. What it leaves unswapped on a throw is dropped by the session.
   */
  swap(targets: readonly DbTarget[]): Promise<void>;
}

/** The signal of cleanup work: it must run after a cancel too, but not forever. */
export const cleanupSignal = (): AbortSignal => AbortSignal.timeout(120_000);

/** A new restore id: 8 hex digits, short enough for the servers' name limits. */
export function newRestoreId(): string {
  return randomBytes(4).toString("hex");
}

/** A restore session over `plan`. */
export function openDbRestore(plan: DbRestorePlan, ctx: RestoreContext): RestoreSession {
  const { id } = plan;
  const invalid = (msg: string) => archiveInvalid(msg, plan.driver);
  const targets: DbTarget[] = [];
  let current: DbTarget | undefined;
  let inDump = false;
  let entries = 0;
  let bytes = 0;
  let done = false;

  async function finishTarget(t: DbTarget): Promise<void> {
    if (t.finished || t.load === undefined) return;
    t.finished = true;
    await finishHelper(t.load);
  }

  async function dropScratch(t: DbTarget): Promise<void> {
    if (t.load !== undefined && !t.finished) {
      t.load.kill();
      await t.load.done.catch(() => {});
    }
    if (!t.created) return;
    try {
      await plan.dropDatabase(t.temp, cleanupSignal());
      t.created = false;
    } catch (err) {
      ctx.warnings.push(`could not drop the scratch database ${t.temp}: ${describeError(err)}`);
    }
  }

  async function startTarget(name: string): Promise<void> {
    if (current !== undefined) await finishTarget(current);
    const t: DbTarget = {
      name,
      temp: plan.stagingName(name, "restore", id),
      old: plan.stagingName(name, "old", id),
      created: false,
      parts: 1,
      finished: false,
      swapped: false,
    };
    targets.push(t);
    current = t;
    await plan.createScratch(t);
    t.created = true;
    t.load = plan.startLoad(t);
  }

  return {
    async entry(h: TarHeader) {
      entries++;
      inDump = false;
      if (h.type !== "file") throw invalid(`${h.path} is not a file`);
      if (plan.otherEntry(h.path)) return;
      const m = /^data\/db\/([^/]+)\/[^/]+$/.exec(h.path);
      const name = m === null ? undefined : decodeSegment(m[1] as string);
      const index =
        m === null ? undefined : parsePartPath(h.path, `${DB_PREFIX}/${m[1]}`, plan.ext);
      if (name === undefined || index === undefined) throw invalid(`unexpected entry ${h.path}`);
      if (!plan.declares(name)) {
        throw invalid(`database ${JSON.stringify(name)} is not one this application declares`);
      }
      inDump = true;
      if (current !== undefined && current.name === name) {
        if (index !== current.parts) throw invalid(`${h.path}: expected part ${current.parts}`);
        current.parts++;
        return;
      }
      if (targets.some((t) => t.name === name)) throw invalid(`database ${name} appears twice`);
      if (index !== 0) throw invalid(`${h.path}: the first part is missing`);
      await startTarget(name);
    },
    async data(chunk: Buffer) {
      bytes += chunk.length;
      if (inDump) await writeToHelper(current?.load as Helper, chunk);
    },
    async entryEnd() {},
    async commit() {
      if (done) throw new FerryError("INTERNAL", "restore session used twice");
      done = true;
      try {
        if (targets.length === 0) throw invalid("it holds no database dump");
        for (const t of targets) await finishTarget(t);
        await plan.swap(targets);
      } catch (err) {
        for (const t of targets) if (!t.swapped) await dropScratch(t);
        const swapped = targets.filter((t) => t.swapped);
        if (swapped.length > 0) {
          throw new FerryError(
            "HELPER_FAILED",
            `restored ${swapped.map((t) => t.name).join(", ")}, then failed: ${describeError(err)}`,
          );
        }
        throw err;
      }
      return { entries, bytes };
    },
    async abort() {
      if (done) return;
      done = true;
      for (const t of targets) await dropScratch(t);
    },
  };
}
