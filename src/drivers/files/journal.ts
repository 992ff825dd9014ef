/**
 * The files driver's restore journal: one small JSON file per application in
 * `<state_dir>/journal/`, replaced atomically (write, fsync, rename, fsync dir) at every
 * phase change, so that a ferryd killed at any instant can finish or undo the restore when
 * it starts again, before it serves anything.
 *
 *   extracting → staged → cleanup → (journal removed)
 *
 * - extracting: staging may be partial. Recovery removes the staging trees (roll back).
 * - staged: every staging tree is complete and synced. Recovery swaps in whatever is not
 *   swapped yet (roll forward); a root counts as swapped when the live name's inode is
 *   the staging directory's inode, recorded when it was created.
 * - cleanup: all roots swapped; recovery removes the old trees left at the staging names.
 */
import {
  closeSync,
  fsyncSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, join } from "node:path";
import type { Logger } from "../../core/log.js";
import { openRoot } from "../../core/safe-fs.js";
import { removeTreeAt } from "../../core/safe-remove.js";
import { RENAME_EXCHANGE, RENAME_NOREPLACE, renameAt2, SysError, statAt } from "../../core/sys.js";

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
}

export interface Journal {
  version: 1;
  app: string;
  id: string;
  phase: Phase;
  started: string;
  roots: JournalRoot[];
}

export function journalDir(stateDir: string): string {
  return join(stateDir, "journal");
}

function journalPath(stateDir: string, app: string): string {
  return join(journalDir(stateDir), `files-${app}.json`);
}

export function ensureStateDir(stateDir: string): void {
  mkdirSync(journalDir(stateDir), { recursive: true, mode: 0o700 });
}

function fsyncDir(dir: string): void {
  const fd = openSync(dir, "r");
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

export function writeJournal(stateDir: string, j: Journal): void {
  const file = journalPath(stateDir, j.app);
  const tmp = `${file}.tmp`;
  const fd = openSync(tmp, "w", 0o600);
  try {
    writeFileSync(fd, `${JSON.stringify(j)}\n`);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  fsyncDir(dirname(file));
}

export function removeJournal(stateDir: string, app: string): void {
  rmSync(journalPath(stateDir, app), { force: true });
  fsyncDir(journalDir(stateDir));
}

/** dev:ino of `name` in the directory held by `dirfd`, or undefined if it does not exist. */
export function idAt(dirfd: number, name: string): string | undefined {
  try {
    const st = statAt(dirfd, name);
    return `${st.dev}:${st.ino}`;
  } catch (err) {
    if (err instanceof SysError && err.errnoName === "ENOENT") return undefined;
    throw err;
  }
}

/** Makes every staged root live; safe to call again after a crash at any point. */
export function swapIn(parentFd: number, root: JournalRoot): void {
  const name = basename(root.path);
  const live = idAt(parentFd, name);
  if (live === root.stagingId) return; // already swapped
  if (idAt(parentFd, root.staging) !== root.stagingId) {
    throw new Error(`staging ${root.staging} for ${root.path} is missing or was replaced`);
  }
  if (live === undefined) renameAt2(parentFd, root.staging, parentFd, name, RENAME_NOREPLACE);
  else renameAt2(parentFd, root.staging, parentFd, name, RENAME_EXCHANGE);
}

/** Removes what is at the staging name unless it is the (new) staging tree itself. */
export function removeLeftover(parentFd: number, root: JournalRoot, keepStaging: boolean): void {
  const id = idAt(parentFd, root.staging);
  if (id === undefined) return;
  if (keepStaging && id === root.stagingId) return;
  removeTreeAt(parentFd, root.staging);
}

/**
 * Finishes or rolls back every interrupted restore found in the state directory.
 * Called once at start-up, before ferryd listens.
 */
export function recoverRestores(stateDir: string, log: Logger): void {
  let all: string[];
  try {
    all = readdirSync(journalDir(stateDir));
  } catch {
    return;
  }
  // A crash while a journal was being rewritten leaves its .tmp; the previous version of
  // the journal (if any) is still intact under its real name, so the .tmp is garbage.
  for (const n of all.filter((n) => n.startsWith("files-") && n.endsWith(".json.tmp"))) {
    rmSync(join(journalDir(stateDir), n), { force: true });
  }
  const names = all.filter((n) => n.startsWith("files-") && n.endsWith(".json"));
  for (const n of names) {
    const file = join(journalDir(stateDir), n);
    let j: Journal;
    try {
      j = JSON.parse(readFileSync(file, "utf8")) as Journal;
    } catch (err) {
      log.error({ file, err: (err as Error).message }, "unreadable restore journal; left in place");
      continue;
    }
    const rollForward = j.phase === "staged" || j.phase === "cleanup";
    for (const root of j.roots) {
      const parentFd = openRoot(dirname(root.path));
      try {
        if (rollForward) {
          swapIn(parentFd, root);
          removeLeftover(parentFd, root, false);
        } else {
          // Extraction was incomplete: the live data was never touched. The staging name
          // carries a random id of ours; whatever is there is removed (symlink-safe).
          if (idAt(parentFd, root.staging) !== undefined) removeTreeAt(parentFd, root.staging);
        }
      } finally {
        closeSync(parentFd);
      }
    }
    rmSync(file, { force: true });
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
