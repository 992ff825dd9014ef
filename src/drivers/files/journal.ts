/**
 * The files driver's restore journal: one small JSON file per application in
 * `<state_dir>/journal/`, replaced atomically (write, fsync, rename, fsync dir) at every
 * phase change, so that a ferryd killed at any instant can finish or undo the restore when
 * it starts again, before it serves anything.
 *
 * The journal steers renames and deletions with ferryd's capabilities, so it must never be
 * something the backup user (ferryd's own uid) could write: it lives in the root-owned
 * state directory (src/core/state-dir.ts), is only ever opened from that held descriptor
 * without following symlinks, and what it says is checked against the live config before
 * recovery acts on it (`validateJournal`).
 *
 *   extracting → staged → cleanup → (journal removed)
 *
 * - extracting: staging may be partial. Recovery removes the staging trees (roll back).
 * - staged: every staging tree is complete and synced. Recovery swaps in whatever is not
 *   swapped yet (roll forward); a root counts as swapped when the live name's inode is
 *   the staging directory's inode, recorded when it was created.
 * - cleanup: all roots swapped; recovery removes the old trees left at the staging names.
 *
 * The acts themselves (swap, removal checked by identity) are swap.ts, shared with the
 * restore (restore-staging.ts, restore-commit.ts).
 *
 * Longer than 300 lines on purpose: the journal's format, its validation against the live
 * config and the recovery it steers are read together when judging a crash.
 */
import { closeSync, fstatSync, fsyncSync, readFileSync, writeSync } from "node:fs";
import { basename, dirname } from "node:path";
import { fsFailure } from "../../core/fs-errors.js";
import type { Logger } from "../../core/log.js";
import { explain, openBeneath, openRoot } from "../../core/safe-fs.js";
import type { StateDir } from "../../core/state-dir.js";
import {
  O_CREAT,
  O_EXCL,
  O_NONBLOCK,
  O_RDONLY,
  O_WRONLY,
  RENAME_NOREPLACE,
  readDir,
  renameAt2,
  S_IFMT,
  S_IFREG,
  SysError,
  unlinkAt,
} from "../../core/sys.js";
import type { DeclaredApp } from "../types.js";
import { keepOldTree, removeOldTree, removeStaging, swapIn } from "./swap.js";

export type Phase = "extracting" | "staged" | "cleanup";

export interface JournalRoot {
  /** The declared path (live data). */
  path: string;
  /** Name of the staging directory, beside the live one. */
  staging: string;
  /** dev:ino of the staging directory, to tell after a crash whether it was swapped in. */
  stagingId: string;
  /** Whether live data existed (swap) or not (plain rename). */
  existed: boolean;
  /**
   * dev:ino of the live directory the restore replaces: after the swap the old tree sits
   * at the staging name, and only that directory is ever removed there.
   */
  oldId?: string;
}

export interface Journal {
  version: 1;
  app: string;
  id: string;
  phase: Phase;
  started: string;
  roots: JournalRoot[];
  /**
   * `ferry import --keep-old`: after the swap each old tree is renamed to `keptName`
   * (beside the live one) instead of being removed, by the restore and by recovery alike.
   */
  keepOld?: boolean;
}

const JOURNAL_DIR = "journal";
const JOURNAL_NAME = /^files-([a-z0-9][a-z0-9._-]{0,62})\.json$/;
const MAX_JOURNAL_BYTES = 1024 * 1024;
const RESTORE_ID = /^[0-9a-f]{12}$/;
const STAGING_ID = /^\d{1,10}:\d{1,10}:\d{1,20}$/;
const PHASES: readonly Phase[] = ["extracting", "staged", "cleanup"];

/** A new restore id: 12 lowercase hex digits (part of every staging name). */
export function newRestoreId(random: Buffer): string {
  return random.subarray(0, 6).toString("hex");
}

/** The staging directory's name for declared path `path` and restore `id`. */
export function stagingName(path: string, id: string): string {
  return `.${basename(path)}.ferry-restore-${id}`;
}

/** Where `--keep-old` keeps the tree a restore replaced, beside the live `path`. */
export function keptName(path: string, id: string): string {
  return `.${basename(path)}.ferry-old-${id}`;
}

function journalName(app: string): string {
  return `files-${app}.json`;
}

/**
 * Replaces the app's journal atomically: a new temporary file (O_CREAT|O_EXCL|O_NOFOLLOW
 * from the held journal directory; a stale one from a crash is unlinked first, never
 * followed), fsync, renameat over the journal, fsync of the directory.
 */
export function writeJournal(state: StateDir, j: Journal): void {
  try {
    writeJournalFile(state, j);
  } catch (err) {
    // A state directory ferryd may not write (not in ReadWritePaths=) or a full disk.
    throw fsFailure(err, "writing the restore journal", state.describe(JOURNAL_DIR)) ?? err;
  }
}

function writeJournalFile(state: StateDir, j: Journal): void {
  const dir = state.sub(JOURNAL_DIR);
  const file = journalName(j.app);
  const tmp = `${file}.tmp`;
  unlinkIfPresent(dir, tmp);
  const fd = openBeneath(dir, tmp, O_WRONLY | O_CREAT | O_EXCL, 0o600);
  try {
    const text = Buffer.from(`${JSON.stringify(j)}\n`);
    let off = 0;
    while (off < text.length) off += writeSync(fd, text, off, text.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameAt2(dir, tmp, dir, file, 0);
  fsyncSync(dir);
}

export function removeJournal(state: StateDir, app: string): void {
  const dir = state.sub(JOURNAL_DIR);
  unlinkIfPresent(dir, journalName(app));
  fsyncSync(dir);
}

function unlinkIfPresent(dirfd: number, name: string): void {
  try {
    unlinkAt(dirfd, name, false);
  } catch (err) {
    if (!(err instanceof SysError) || err.errnoName !== "ENOENT") throw err;
  }
}

/**
 * Checks a journal read from disk against the live config. Anything a forger could use to
 * point recovery somewhere else is pinned: the app must exist and be a files app, the
 * roots must be exactly its declared paths in order, and each staging name must be exactly
 * the one ferryd derives from the path and the restore id. Returns the reason it is
 * refused, or the journal.
 */
export function validateJournal(
  raw: unknown,
  app: string,
  declared: DeclaredApp | undefined,
): Journal | string {
  if (declared === undefined) return `no application "${app}" is declared any more`;
  if (declared.driver !== "files") return `application "${app}" no longer uses the files driver`;
  const paths = (declared.settings as { paths?: unknown }).paths;
  if (!Array.isArray(paths)) return "the application declares no paths";
  if (typeof raw !== "object" || raw === null) return "not a JSON object";
  const j = raw as Record<string, unknown>;
  if (j.version !== 1) return "unknown journal version";
  if (j.app !== app) return "the journal names another application than its file name";
  if (typeof j.id !== "string" || !RESTORE_ID.test(j.id)) return "malformed restore id";
  if (!PHASES.includes(j.phase as Phase)) return "unknown phase";
  if (typeof j.started !== "string") return "malformed start time";
  if (j.keepOld !== undefined && typeof j.keepOld !== "boolean") return "malformed keepOld";
  if (!Array.isArray(j.roots) || j.roots.length !== paths.length) {
    return `the roots are not the ${paths.length} declared path(s)`;
  }
  const roots: JournalRoot[] = [];
  for (const [i, r] of (j.roots as unknown[]).entries()) {
    if (typeof r !== "object" || r === null) return `root ${i} is not an object`;
    const root = r as Record<string, unknown>;
    if (root.path !== paths[i]) return `root ${i} is not the declared path ${paths[i]}`;
    if (root.staging !== stagingName(paths[i] as string, j.id)) {
      return `root ${i} names a staging directory ferryd would not have made`;
    }
    if (
      typeof root.stagingId !== "string" ||
      !(root.stagingId === "" || STAGING_ID.test(root.stagingId))
    ) {
      return `root ${i} has a malformed staging id`;
    }
    if (typeof root.existed !== "boolean") return `root ${i} has a malformed 'existed'`;
    if (
      root.oldId !== undefined &&
      (typeof root.oldId !== "string" || !STAGING_ID.test(root.oldId))
    ) {
      return `root ${i} has a malformed old id`;
    }
    roots.push({
      path: root.path as string,
      staging: root.staging as string,
      stagingId: root.stagingId as string,
      existed: root.existed,
      ...(root.oldId === undefined ? {} : { oldId: root.oldId as string }),
    });
  }
  return {
    version: 1,
    app,
    id: j.id,
    phase: j.phase as Phase,
    started: j.started,
    roots,
    ...(j.keepOld === true ? { keepOld: true } : {}),
  };
}

/**
 * Finishes or rolls back every interrupted restore found in the state directory. Called
 * once at start-up, before ferryd listens. A journal that does not match the live config
 * is refused and set aside for an admin (renamed `….rejected-TIME`); one whose recovery
 * fails is set aside as `….failed-TIME`. Neither stops ferryd from serving the other apps.
 */
export function recoverRestores(
  state: StateDir,
  apps: ReadonlyMap<string, DeclaredApp>,
  log: Logger,
): void {
  const dir = state.sub(JOURNAL_DIR);
  // Who owns a staging directory ferryd made (root when it holds capabilities).
  const stagingOwner = state.options.privileged ? 0 : state.options.uid;
  const names = readDir(dir).map((d) => d.name.toString("latin1"));
  // A crash while a journal was being rewritten leaves its .tmp; the previous version of
  // the journal (if any) is still intact under its real name, so the .tmp is garbage.
  for (const n of names.filter((n) => /^files-.*\.json\.tmp$/.test(n))) unlinkIfPresent(dir, n);
  for (const n of names) {
    const m = JOURNAL_NAME.exec(n);
    if (m === null) continue;
    const app = m[1] as string;
    const file = state.describe(JOURNAL_DIR, n);
    const setAside = (why: "rejected" | "failed") => {
      const to = `${n}.${why}-${Date.now()}`;
      renameAt2(dir, n, dir, to, RENAME_NOREPLACE);
      fsyncSync(dir);
      return state.describe(JOURNAL_DIR, to);
    };
    let j: Journal | string;
    try {
      j = validateJournal(JSON.parse(readJournalFile(dir, n)), app, apps.get(app));
    } catch (err) {
      j = `unreadable: ${explain(err)}`;
    }
    if (typeof j === "string") {
      const moved = setAside("rejected");
      log.error(
        { app, file, movedTo: moved, reason: j },
        "refused a restore journal that does not match the config; set aside for an admin, nothing was changed",
      );
      continue;
    }
    const rollForward = j.phase === "staged" || j.phase === "cleanup";
    try {
      for (const root of j.roots) {
        const parentFd = openRoot(dirname(root.path));
        try {
          // Only what ferryd made (the staging tree) or replaced (the old tree) is ever
          // removed, checked by identity: never whatever else is under the name now.
          if (rollForward) swapIn(parentFd, root);
          const left = !rollForward
            ? removeStaging(parentFd, root, stagingOwner)
            : j.keepOld === true
              ? keepOldTree(parentFd, root, keptName(root.path, j.id))
              : removeOldTree(parentFd, root);
          if (left === "foreign") {
            log.warn(
              { app, restore: j.id, path: root.path, left: root.staging },
              "something other than ferryd's own directory is at the staging name; left in place",
            );
          }
        } finally {
          closeSync(parentFd);
        }
      }
    } catch (err) {
      const moved = setAside("failed");
      log.error(
        { app, restore: j.id, phase: j.phase, file, movedTo: moved, err: explain(err) },
        `could not ${rollForward ? "complete" : "roll back"} an interrupted restore; journal set aside for an admin`,
      );
      continue;
    }
    removeJournal(state, app);
    log.warn(
      {
        app: j.app,
        restore: j.id,
        phase: j.phase,
        outcome: rollForward ? "completed" : "rolled back",
      },
      rollForward ? "completed an interrupted restore" : "rolled back an interrupted restore",
    );
  }
}

function readJournalFile(dir: number, name: string): string {
  const fd = openBeneath(dir, name, O_RDONLY | O_NONBLOCK);
  try {
    const st = fstatSync(fd);
    if ((st.mode & S_IFMT) !== S_IFREG) throw new Error("not a regular file");
    if (st.size > MAX_JOURNAL_BYTES) throw new Error(`larger than ${MAX_JOURNAL_BYTES} bytes`);
    return readFileSync(fd, "utf8");
  } finally {
    closeSync(fd);
  }
}
