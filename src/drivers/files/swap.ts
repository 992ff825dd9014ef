/**
 * What a files restore journal (journal.ts) steers, each act safe to repeat after a crash
 * at any point: the identity of a directory (dev:ino, `idAt`), the swap of a staged root
 * into place (`swapIn`), and removal of the old tree or of a staging tree only while it is
 * still the directory ferryd replaced or made (`removeOldTree`, `removeStaging`), or, for
 * `--keep-old`, the old tree's rename beside the live one (`keepOldTree`): an
 * owner who can write the parent cannot exchange another directory into the name and
 * have it deleted. Used by the restore (restore-staging.ts, restore-commit.ts) and by
 * recovery at start-up (journal.ts).
 */
import { basename } from "node:path";
import { removeDirIfSame } from "../../core/safe-remove.js";
import {
  RENAME_EXCHANGE,
  RENAME_NOREPLACE,
  renameAt2,
  S_IFDIR,
  S_IFMT,
  SysError,
  statAt,
  unlinkAt,
} from "../../core/sys.js";
import type { JournalRoot } from "./journal.js";

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

/**
 * After the swap: removes the old tree, now at the staging name, if it is still the
 * directory that was live ("foreign" when something else was put there: left alone).
 */
export function removeOldTree(
  parentFd: number,
  root: JournalRoot,
): "removed" | "absent" | "foreign" {
  if (!root.existed) return "absent";
  if (root.oldId === undefined)
    return idAt(parentFd, root.staging) === undefined ? "absent" : "foreign";
  return removeDirIfSame(parentFd, root.staging, root.oldId);
}

/**
 * After the swap, with `keepOld`: renames the old tree, now at the staging name, to
 * `kept` (journal.ts's `keptName`) beside it, if it is still the directory that was live
 * (dev:ino); safe to call again after a crash ("kept" when it is already there).
 */
export function keepOldTree(
  parentFd: number,
  root: JournalRoot,
  kept: string,
): "kept" | "absent" | "foreign" {
  if (!root.existed) return "absent";
  if (root.oldId === undefined) return "foreign";
  const atStaging = idAt(parentFd, root.staging);
  if (atStaging === undefined) return idAt(parentFd, kept) === root.oldId ? "kept" : "absent";
  if (atStaging !== root.oldId) return "foreign";
  renameAt2(parentFd, root.staging, parentFd, kept, RENAME_NOREPLACE);
  return "kept";
}

/**
 * Before the swap (abort, roll back): removes the staging tree, if it is still the one
 * ferryd made. Its id is in the journal, except after a crash between the mkdirat and the
 * journal write; then only a directory as ferryd makes them (owned by `owner`, mode 0700)
 * is taken for it.
 */
export function removeStaging(
  parentFd: number,
  root: JournalRoot,
  owner: number,
): "removed" | "absent" | "foreign" {
  if (root.stagingId === "") {
    // ferryd never recorded which directory it made: it was empty then (the id is written
    // before anything goes in), so only an empty directory is removed, with rmdir, never
    // a tree someone else put under the name (a root-owned 0700 one included).
    let st: ReturnType<typeof statAt>;
    try {
      st = statAt(parentFd, root.staging);
    } catch (err) {
      if (err instanceof SysError && err.errnoName === "ENOENT") return "absent";
      throw err;
    }
    if ((st.mode & S_IFMT) !== S_IFDIR || st.uid !== owner) return "foreign";
    try {
      unlinkAt(parentFd, root.staging, true);
      return "removed";
    } catch (err) {
      if (
        err instanceof SysError &&
        (err.errnoName === "ENOTEMPTY" || err.errnoName === "EEXIST")
      ) {
        return "foreign";
      }
      if (err instanceof SysError && err.errnoName === "ENOENT") return "absent";
      throw err;
    }
  }
  return removeDirIfSame(parentFd, root.staging, root.stagingId);
}
