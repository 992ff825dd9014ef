/**
 * The notes app's storage: one JSON file per note in `<data>/notes/`, all of them also held
 * in memory. Readers are served from memory, and a restore replaces the whole map in one
 * assignment, so a reader sees either the old notes or the new ones, never a mix.
 *
 * Writes go to disk first (write a temporary file, fsync, rename) and then to memory.
 * `pause()` lets running writes finish and holds new ones until `resume()`: that is what
 * the agent's prepare/finish do around a backup or a restore.
 */
import { mkdirSync, readdirSync, readFileSync, renameSync, rmSync, statSync } from "node:fs";
import { open, rename, rm, unlink } from "node:fs/promises";
import { join } from "node:path";

export interface Note {
  id: string;
  text: string;
  updated: string;
}

const ID = /^[a-z0-9][a-z0-9-]{0,63}$/;

export function validId(id: string): boolean {
  return ID.test(id);
}

/** Parses and checks one note file; throws on anything else. */
export function parseNote(file: string, body: string): Note {
  const n = JSON.parse(body) as Partial<Note>;
  const id = file.replace(/\.json$/, "");
  if (
    !file.endsWith(".json") ||
    !validId(id) ||
    n.id !== id ||
    typeof n.text !== "string" ||
    typeof n.updated !== "string"
  ) {
    throw new Error(`${file} is not a note`);
  }
  return { id: n.id, text: n.text, updated: n.updated };
}

function loadDir(dir: string): Map<string, Note> {
  const notes = new Map<string, Note>();
  for (const f of readdirSync(dir).sort()) {
    if (f.startsWith(".")) continue;
    const n = parseNote(f, readFileSync(join(dir, f), "utf8"));
    notes.set(n.id, n);
  }
  return notes;
}

export class NoteStore {
  readonly dir: string;
  private notes: Map<string, Note>;
  private paused: Promise<void> | undefined;
  private unpause: (() => void) | undefined;
  private writing = 0;
  private idle: (() => void) | undefined;

  constructor(readonly dataDir: string) {
    this.dir = join(dataDir, "notes");
    // A crash between the two renames of a restore leaves only `notes.new`.
    const fresh = join(dataDir, "notes.new");
    if (!exists(this.dir) && exists(fresh)) renameSync(fresh, this.dir);
    mkdirSync(this.dir, { recursive: true, mode: 0o700 });
    for (const f of readdirSync(dataDir)) {
      if (f.startsWith("notes.old-") || f === "notes.new") {
        rmSync(join(dataDir, f), { recursive: true, force: true });
      }
    }
    this.notes = loadDir(this.dir);
  }

  list(): Note[] {
    return [...this.notes.values()];
  }

  get(id: string): Note | undefined {
    return this.notes.get(id);
  }

  get count(): number {
    return this.notes.size;
  }

  /** Waits while paused; counts the write as running until `done` is called. */
  private async begin(): Promise<void> {
    while (this.paused !== undefined) await this.paused;
    this.writing++;
  }

  private end(): void {
    this.writing--;
    if (this.writing === 0) this.idle?.();
  }

  async put(id: string, text: string): Promise<Note> {
    await this.begin();
    try {
      const note = { id, text, updated: new Date().toISOString() };
      const tmp = join(this.dir, `.${id}.tmp`);
      const fh = await open(tmp, "w", 0o600);
      try {
        await fh.writeFile(`${JSON.stringify(note)}\n`);
        await fh.sync();
      } finally {
        await fh.close();
      }
      await rename(tmp, join(this.dir, `${id}.json`));
      this.notes.set(id, note);
      return note;
    } finally {
      this.end();
    }
  }

  async remove(id: string): Promise<boolean> {
    await this.begin();
    try {
      if (!this.notes.has(id)) return false;
      await unlink(join(this.dir, `${id}.json`));
      this.notes.delete(id);
      return true;
    } finally {
      this.end();
    }
  }

  /** Holds new writes and waits for running ones: the files are then consistent. */
  async pause(): Promise<void> {
    if (this.paused === undefined) {
      this.paused = new Promise((r) => {
        this.unpause = r;
      });
    }
    if (this.writing > 0) {
      await new Promise<void>((r) => {
        this.idle = r;
      });
      this.idle = undefined;
    }
  }

  resume(): void {
    const r = this.unpause;
    this.paused = undefined;
    this.unpause = undefined;
    r?.();
  }

  get isPaused(): boolean {
    return this.paused !== undefined;
  }

  /**
   * Replaces all notes with those in `staged` (a directory of note files the caller
   * created): every file is checked first, then the directories are swapped and the
   * in-memory map replaced in one step. Call it paused.
   */
  async replaceWith(staged: string): Promise<number> {
    const next = loadDir(staged); // throws on a bad note: nothing changed yet
    const old = join(this.dataDir, `notes.old-${Date.now()}`);
    const fresh = join(this.dataDir, "notes.new");
    await rename(staged, fresh);
    await rename(this.dir, old);
    await rename(fresh, this.dir);
    this.notes = next;
    await rm(old, { recursive: true, force: true });
    return next.size;
  }
}

function exists(p: string): boolean {
  try {
    statSync(p);
    return true;
  } catch {
    return false;
  }
}
