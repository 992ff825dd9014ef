/**
 * The SDK's side of POST /v1/restore: the request body is read to its end and checked
 * entry by entry (the payload rules ferryd applies) into a private staging file before the
 * application's `restore` handler sees anything. A body cut short, a bad tar stream or a
 * refused entry means the handler is never called, so nothing is applied.
 */
import { constants } from "node:fs";
import { type FileHandle, mkdir, mkdtemp, open, rm, symlink, utimes } from "node:fs/promises";
import { join } from "node:path";
import { AgentError } from "./errors.js";
import type { PayloadChecker } from "./protocol.js";
import { ByteSource, readTar } from "./tar-stream.js";

/** One entry of a restore payload. */
export interface RestoreEntry {
  /** Relative, `/`-separated, checked: no `..`, no absolute path, nothing below a symlink. */
  readonly path: string;
  readonly type: "file" | "dir" | "symlink";
  /** Permission bits. */
  readonly mode: number;
  /** Body length (0 unless a file). */
  readonly size: number;
  readonly mtime: Date;
  /** A symlink's target (relative, stays inside the payload). */
  readonly linkTarget?: string;
  /** A file's body. */
  read(): Promise<Buffer>;
  /** A file's body as UTF-8. */
  text(): Promise<string>;
  /** A file's body parsed as JSON. */
  json<T = unknown>(): Promise<T>;
}

/** A complete, checked restore payload, staged privately. */
export interface RestorePayload {
  readonly entryCount: number;
  /** Bytes of file bodies. */
  readonly bytes: number;
  /** The entries in payload order. */
  entries(): AsyncIterable<RestoreEntry>;
  /** The entry at `path`, if any. */
  get(path: string): RestoreEntry | undefined;
  /**
   * Writes the payload below `dir`, which must not exist yet (create a sibling of your live
   * data, then rename it into place). Files are created exclusively and never through a
   * symlink; symlinks are created last.
   */
  extractTo(dir: string): Promise<void>;
}

interface Staged {
  path: string;
  type: "file" | "dir" | "symlink";
  mode: number;
  size: number;
  mtimeMs: number;
  linkTarget: string;
  offset: number;
}

export class StagedPayload implements RestorePayload {
  private readonly list: Staged[] = [];
  private readonly byPath = new Map<string, Staged>();
  bytes = 0;

  private constructor(
    private readonly dir: string,
    private readonly fh: FileHandle,
  ) {}

  get entryCount(): number {
    return this.list.length;
  }

  /** Reads and checks a whole tar body into a new staging directory under `tmpDir`. */
  static async receive(
    body: AsyncIterable<Buffer>,
    checker: PayloadChecker,
    tmpDir: string,
    idleMs: number,
    signal: AbortSignal,
  ): Promise<StagedPayload> {
    const dir = await mkdtemp(join(tmpDir, "ferry-agent-restore-"));
    const fh = await open(join(dir, "payload"), "wx+", 0o600);
    const p = new StagedPayload(dir, fh);
    try {
      const src = new ByteSource(body, {
        idleMs,
        signal,
        onIdle: () => new AgentError("BAD_REQUEST", `the payload stalled for ${idleMs / 1000}s`),
      });
      let offset = 0;
      const bad = (m: string) => new AgentError("PAYLOAD_INVALID", m);
      for await (const e of readTar(src, checker.limits, bad)) {
        let rel: string;
        try {
          rel = checker.checkAgentEntry(e.header);
        } catch (err) {
          throw new AgentError("PAYLOAD_INVALID", (err as Error).message);
        }
        const h = e.header;
        const s: Staged = {
          path: rel,
          type: h.type as Staged["type"],
          mode: h.mode & 0o777,
          size: h.size,
          mtimeMs: h.mtimeSec * 1000,
          linkTarget: h.linkpath,
          offset,
        };
        for await (const chunk of e.body) {
          await fh.write(chunk, 0, chunk.length, offset);
          offset += chunk.length;
        }
        p.list.push(s);
        p.byPath.set(rel, s);
        p.bytes += h.size;
      }
      await fh.sync();
      return p;
    } catch (err) {
      await p.dispose();
      throw err;
    }
  }

  private entryOf(s: Staged): RestoreEntry {
    const read = async (): Promise<Buffer> => {
      if (s.type !== "file") throw new AgentError("RESTORE_FAILED", `${s.path} is not a file`);
      const buf = Buffer.alloc(s.size);
      let off = 0;
      while (off < s.size) {
        const { bytesRead } = await this.fh.read(buf, off, s.size - off, s.offset + off);
        if (bytesRead === 0) throw new AgentError("RESTORE_FAILED", "the staged payload is short");
        off += bytesRead;
      }
      return buf;
    };
    return {
      path: s.path,
      type: s.type,
      mode: s.mode,
      size: s.size,
      mtime: new Date(s.mtimeMs),
      ...(s.type === "symlink" ? { linkTarget: s.linkTarget } : {}),
      read,
      text: async () => (await read()).toString("utf8"),
      json: async <T>() => JSON.parse((await read()).toString("utf8")) as T,
    };
  }

  async *entries(): AsyncIterable<RestoreEntry> {
    for (const s of this.list) yield this.entryOf(s);
  }

  get(path: string): RestoreEntry | undefined {
    const s = this.byPath.get(path);
    return s === undefined ? undefined : this.entryOf(s);
  }

  async extractTo(dir: string): Promise<void> {
    await mkdir(dir, { mode: 0o700 }); // throws EEXIST: never writes into an existing tree
    const links: Staged[] = [];
    const made = new Set<string>([""]);
    const ensureParents = async (rel: string) => {
      const parts = rel.split("/");
      for (let i = 1; i < parts.length; i++) {
        const p = parts.slice(0, i).join("/");
        if (made.has(p)) continue;
        await mkdir(join(dir, p), { mode: 0o755 });
        made.add(p);
      }
    };
    const dirs: Staged[] = [];
    for (const s of this.list) {
      if (s.type === "symlink") {
        links.push(s);
        continue;
      }
      await ensureParents(s.path);
      const target = join(dir, s.path);
      if (s.type === "dir") {
        if (!made.has(s.path)) await mkdir(target, { mode: 0o700 });
        made.add(s.path);
        dirs.push(s);
        continue;
      }
      const out = await open(
        target,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        s.mode,
      );
      try {
        const body = await this.entryOf(s).read();
        await out.write(body, 0, body.length, 0);
        await out.chmod(s.mode);
        await out.sync();
      } finally {
        await out.close();
      }
      await utimes(target, new Date(s.mtimeMs), new Date(s.mtimeMs));
    }
    for (const s of links) {
      await ensureParents(s.path);
      await symlink(s.linkTarget, join(dir, s.path));
    }
    // Directory modes last, so a read-only directory does not stop its own extraction.
    for (const s of dirs.reverse()) {
      const h = await open(
        join(dir, s.path),
        constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW,
      );
      try {
        await h.chmod(s.mode);
      } finally {
        await h.close();
      }
    }
  }

  /** Removes the staging directory. */
  async dispose(): Promise<void> {
    await this.fh.close().catch(() => {});
    await rm(this.dir, { recursive: true, force: true });
  }
}
