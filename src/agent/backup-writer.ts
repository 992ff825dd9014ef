/**
 * The SDK's tar writer for POST /v1/backup: each `add*` call appends entries to the
 * response, waiting for the socket to drain (backpressure) and checking every entry with
 * the payload rules ferryd applies, so a bug in the application is reported where it is.
 */

import { constants } from "node:fs";
import { lstat, open, readdir, readlink } from "node:fs/promises";
import type { ServerResponse } from "node:http";
import { join } from "node:path";
import type { TarHeader } from "../core/archive/tar.js";
import { AgentError } from "./errors.js";
import { encodeEntryHeader, entryPadding, type PayloadChecker, payloadHeader } from "./protocol.js";

/** Options of one entry. */
export interface EntryOptions {
  /** Permission bits (default 0644 for files, 0755 for directories). */
  mode?: number;
  /** Modification time (default: now, or the file's own for `addFile`/`addDirectory`). */
  mtime?: Date;
}

/** What a `backup` handler writes its payload with. Paths are relative, `/`-separated. */
export interface BackupWriter {
  /** An entry holding `data` (a string is written as UTF-8). */
  addBuffer(path: string, data: Buffer | string, opts?: EntryOptions): Promise<void>;
  /** An entry holding `JSON.stringify(value)` and a newline. */
  addJSON(path: string, value: unknown, opts?: EntryOptions): Promise<void>;
  /** A directory entry. */
  addDir(path: string, opts?: EntryOptions): Promise<void>;
  /**
   * The regular file at `fsPath` (never through a symlink), as `path`. The file must keep
   * its length while it is read: quiesce writers in `prepare`.
   */
  addFile(path: string, fsPath: string, opts?: EntryOptions): Promise<void>;
  /**
   * The tree at `fsPath` as `path` and below: directories, regular files and symlinks that
   * stay inside the tree; symlinks are stored, never followed. Other file types throw.
   */
  addDirectory(path: string, fsPath: string): Promise<void>;
  /** Aborts when ferryd disconnects; long work should watch it. */
  readonly signal: AbortSignal;
}

const CHUNK = 256 * 1024;

export class TarResponseWriter implements BackupWriter {
  private started = false;
  entries = 0;
  bytes = 0;

  constructor(
    private readonly res: ServerResponse,
    private readonly checker: PayloadChecker,
    readonly signal: AbortSignal,
    private readonly startResponse: () => void,
  ) {}

  /** Writes bytes, waiting for 'drain' when the socket's buffer is full. */
  async write(b: Buffer): Promise<void> {
    this.signal.throwIfAborted();
    if (!this.started) {
      this.started = true;
      this.startResponse();
    }
    if (b.length === 0) return;
    if (this.res.write(b)) return;
    await new Promise<void>((resolve, reject) => {
      const done = (err?: unknown) => {
        this.res.off("drain", onDrain);
        this.signal.removeEventListener("abort", onAbort);
        if (err === undefined) resolve();
        else reject(err);
      };
      const onDrain = () => done();
      const onAbort = () => done(this.signal.reason);
      this.res.on("drain", onDrain);
      this.signal.addEventListener("abort", onAbort, { once: true });
    });
  }

  get hasStarted(): boolean {
    return this.started;
  }

  private check(h: TarHeader): void {
    try {
      this.checker.checkAgentEntry(h);
    } catch (err) {
      throw new AgentError("PAYLOAD_INVALID", (err as Error).message);
    }
  }

  async addBuffer(path: string, data: Buffer | string, opts: EntryOptions = {}): Promise<void> {
    const body = typeof data === "string" ? Buffer.from(data, "utf8") : data;
    const h = payloadHeader(path, "file", {
      size: body.length,
      mode: opts.mode ?? 0o644,
      mtimeMs: opts.mtime?.getTime() ?? Date.now(),
    });
    this.check(h);
    await this.write(encodeEntryHeader(h));
    await this.write(body);
    await this.write(entryPadding(body.length));
    this.entries++;
    this.bytes += body.length;
  }

  async addJSON(path: string, value: unknown, opts: EntryOptions = {}): Promise<void> {
    await this.addBuffer(path, `${JSON.stringify(value)}\n`, opts);
  }

  async addDir(path: string, opts: EntryOptions = {}): Promise<void> {
    const h = payloadHeader(path, "dir", {
      mode: opts.mode ?? 0o755,
      mtimeMs: opts.mtime?.getTime() ?? Date.now(),
    });
    this.check(h);
    await this.write(encodeEntryHeader(h));
    this.entries++;
  }

  async addFile(path: string, fsPath: string, opts: EntryOptions = {}): Promise<void> {
    const fh = await open(fsPath, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    try {
      const st = await fh.stat();
      if (!st.isFile()) throw new AgentError("BACKUP_FAILED", `${fsPath} is not a regular file`);
      const h = payloadHeader(path, "file", {
        size: st.size,
        mode: opts.mode ?? st.mode,
        mtimeMs: opts.mtime?.getTime() ?? st.mtimeMs,
      });
      this.check(h);
      await this.write(encodeEntryHeader(h));
      let off = 0;
      const buf = Buffer.alloc(Math.min(CHUNK, Math.max(st.size, 1)));
      while (off < st.size) {
        const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, st.size - off), off);
        if (bytesRead === 0) {
          throw new AgentError(
            "BACKUP_FAILED",
            `${fsPath} shrank while it was read (quiesce its writers in prepare)`,
          );
        }
        off += bytesRead;
        await this.write(Buffer.from(buf.subarray(0, bytesRead)));
      }
      await this.write(entryPadding(st.size));
      this.entries++;
      this.bytes += st.size;
    } finally {
      await fh.close();
    }
  }

  async addDirectory(path: string, fsPath: string): Promise<void> {
    const st = await lstat(fsPath);
    if (!st.isDirectory()) throw new AgentError("BACKUP_FAILED", `${fsPath} is not a directory`);
    await this.addDir(path, { mode: st.mode, mtime: st.mtime });
    const names = (await readdir(fsPath)).sort();
    for (const name of names) {
      this.signal.throwIfAborted();
      const child = join(fsPath, name);
      const rel = `${path}/${name}`;
      const cst = await lstat(child);
      if (cst.isDirectory()) await this.addDirectory(rel, child);
      else if (cst.isFile()) await this.addFile(rel, child);
      else if (cst.isSymbolicLink()) {
        const h = payloadHeader(rel, "symlink", {
          linkpath: await readlink(child),
          mtimeMs: cst.mtimeMs,
        });
        this.check(h);
        await this.write(encodeEntryHeader(h));
        this.entries++;
      } else {
        throw new AgentError(
          "BACKUP_FAILED",
          `${child} is neither a file, a directory nor a symlink`,
        );
      }
    }
  }
}
