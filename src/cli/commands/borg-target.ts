/**
 * The borg target, for people who already keep backups in borg (docs/repository.md,
 * "Other targets"; what it shares with the restic target is in target-common.ts):
 *
 * - `ferry backup APP… --to borg:REPO` pipes each archive, verified on the way, to
 *   `borg import-tar --checkpoint-interval 0 --comment "ferry-app=APP [tag=T]…"
 *   REPO::APP-<UTC time> -`, with the layout member put before its end blocks
 *   (src/repo/borg-layout.ts says why and what it holds). The layout is spooled to a 0600
 *   file in a private temporary directory while the archive streams (it grows by ~1.5 KB
 *   an entry), appended once the archive verified, and removed whatever happens. A
 *   failure kills borg with SIGKILL before its input ends: borg then records no archive
 *   (no checkpoints either, at interval 0), and the locks it leaves are removed by the next
 *   borg command on this host, which sees that their process is gone;
 * - `ferry restore --from borg:REPO ARCHIVE` (an archive name, or `latest`: the newest
 *   archive whose comment names a Ferry app) extracts the layout, streams
 *   `borg export-tar` of the rest, rebuilds the archive byte for byte and uploads it to
 *   ferryd's restore, which verifies it whole before touching the application.
 *
 * borg takes its passphrase and options from its own environment (BORG_PASSPHRASE,
 * BORG_PASSCOMMAND, BORG_RSH, BORG_BASE_DIR, …). The two questions borg would otherwise
 * ask on its stdin, which here is the archive, are answered "no" unless the environment
 * answers them (BORG_RELOCATED_REPO_ACCESS_IS_OK, BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK).
 */
import { createHash } from "node:crypto";
import {
  closeSync,
  createReadStream,
  createWriteStream,
  openSync,
  readSync,
  writeSync,
} from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { FerryError } from "../../core/errors.js";
import {
  BorgImportStream,
  collidesWithLayout,
  LAYOUT_NAME,
  parseLayoutHeader,
  rebuildFromLayout,
} from "../../repo/borg-layout.js";
import { BorgTarReader } from "../../repo/borg-tar.js";
import type { FerryClient } from "../client.js";
import { UsageError } from "../exit-codes.js";
import {
  abortTool,
  type BackupTarget,
  backupToTarget,
  feed,
  restoreFromTarget,
  runTool,
  type ToolOptions,
} from "./target-common.js";

const BORG = { command: "borg", debianPackage: "borgbackup" };
const APP_KEY = "ferry-app=";
/** The names backups get: APP-2026-01-31T12:34:56.789Z. */
const NAME_GLOB = "*-????-??-??T??:??:??.???Z";
const SPOOL_BLOCK = 1 << 20;

/**
 * borg runs in a session of its own (no terminal: a Ctrl-C reaches ferry, which kills
 * borg, instead of borg, which would write a checkpoint archive), so it must never ask
 * anything: a question would be read from its stdin, which for import-tar is the archive.
 * The repository questions are answered "no", and without a passphrase in the
 * environment the passphrase command is `false`, so an encrypted repository fails at once
 * with PASSWORD_REQUIRED; the environment's own settings win over both.
 */
const ANSWERS = {
  BORG_RELOCATED_REPO_ACCESS_IS_OK: "no",
  BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: "no",
};
const PASSPHRASE_VARS = ["BORG_PASSPHRASE", "BORG_PASSCOMMAND", "BORG_PASSPHRASE_FD"];

function borg(args: string[], o: ToolOptions) {
  const noPassphrase = PASSPHRASE_VARS.every((k) => process.env[k] === undefined);
  return runTool(BORG, args, {
    ...o,
    detached: true,
    envDefaults: noPassphrase ? { ...ANSWERS, BORG_PASSCOMMAND: "false" } : ANSWERS,
    failure: (exit, err) =>
      noPassphrase && /BORG_PASSCOMMAND/.test(err)
        ? new FerryError(
            "PASSWORD_REQUIRED",
            `the borg repository is encrypted: give borg its passphrase in BORG_PASSPHRASE, BORG_PASSCOMMAND or BORG_PASSPHRASE_FD (ferry runs borg without a terminal, so borg cannot ask)`,
          )
        : o.failure?.(exit, err),
  });
}

async function privateDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "ferry-borg-")); // mode 0700
}

/** The layout's metadata stream, spooled to a 0600 file in 1 MiB writes. */
class LayoutSpool {
  private readonly block = Buffer.allocUnsafe(SPOOL_BLOCK);
  private fill = 0;
  size = 0;

  private constructor(
    readonly dir: string,
    private fd: number | undefined,
  ) {}

  static async create(): Promise<LayoutSpool> {
    const dir = await privateDir();
    try {
      return new LayoutSpool(dir, openSync(join(dir, "layout"), "wx", 0o600));
    } catch (err) {
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
  }

  write(b: Buffer): void {
    let off = 0;
    while (off < b.length) {
      const n = b.copy(this.block, this.fill, off);
      this.fill += n;
      off += n;
      if (this.fill === SPOOL_BLOCK) this.flush();
    }
    this.size += b.length;
  }

  flush(): void {
    if (this.fd !== undefined && this.fill > 0) writeSync(this.fd, this.block, 0, this.fill);
    this.fill = 0;
  }

  read(): AsyncIterable<Buffer> {
    return createReadStream(join(this.dir, "layout"), { highWaterMark: SPOOL_BLOCK });
  }

  async remove(): Promise<void> {
    if (this.fd !== undefined) closeSync(this.fd);
    this.fd = undefined;
    await rm(this.dir, { recursive: true, force: true });
  }
}

function borgTarget(repo: string, tags: string[]): BackupTarget {
  return {
    label: `borg:${repo}`,
    checkEntry(h) {
      if (collidesWithLayout(h.path)) {
        throw new FerryError(
          "ARCHIVE_INVALID",
          `the archive has an entry named ${JSON.stringify(h.path)}, which borg would store as the layout ${LAYOUT_NAME}`,
        );
      }
    },
    async open(app) {
      const name = `${app}-${new Date().toISOString()}`;
      const comment = [`${APP_KEY}${app}`, ...tags.map((t) => `tag=${t}`)].join(" ");
      const spool = await LayoutSpool.create();
      const run = borg(
        [
          "import-tar",
          "--checkpoint-interval",
          "0",
          "--comment",
          comment,
          "--",
          `${repo}::${name}`,
          "-",
        ],
        { stdin: "pipe", collect: false, what: `borg import-tar of ${app}`, code: "BACKUP_FAILED" },
      );
      run.child.stdout?.resume();
      const stdin = run.child.stdin as NonNullable<typeof run.child.stdin>;
      const stream = new BorgImportStream((b) => spool.write(b));
      return {
        async write(b) {
          for (const part of stream.push(b)) await feed(stdin, run, part);
        },
        async finish(archive, signal) {
          try {
            spool.flush();
            await feed(stdin, run, stream.memberHead(archive, spool.size));
            for await (const b of spool.read()) {
              signal.throwIfAborted();
              await feed(stdin, run, b as Buffer);
            }
            signal.throwIfAborted();
            await feed(stdin, run, stream.memberEnd(archive, spool.size));
          } finally {
            await spool.remove();
          }
          stdin.end();
          await run.done;
          return { archive: name };
        },
        async abort() {
          const err = await abortTool(run);
          await spool.remove();
          return err;
        },
      };
    },
  };
}

export function backupToBorg(
  client: FerryClient,
  repo: string,
  apps: string[] | "all",
  tags: string[],
  json: boolean,
): Promise<number> {
  for (const t of tags) {
    if (!/^[^\s\p{Cc}]+$/u.test(t)) {
      throw new UsageError(
        `--tag ${JSON.stringify(t)}: borg's tags live in the archive comment, one word each`,
      );
    }
  }
  return backupToTarget(client, borgTarget(repo, tags), apps, json);
}

/** The application a Ferry archive's comment names, if it is one. */
function appOf(comment: unknown): string | undefined {
  if (typeof comment !== "string") return undefined;
  const first = comment.split(" ")[0] as string;
  return first.startsWith(APP_KEY) && first.length > APP_KEY.length
    ? first.slice(APP_KEY.length)
    : undefined;
}

interface BorgArchive {
  name: string;
  comment?: string;
}

async function findArchive(repo: string, archive: string): Promise<{ name: string; app: string }> {
  const common = { stdin: "ignore", collect: true, code: "HELPER_FAILED" } as const;
  if (archive === "latest") {
    const out = await borg(
      ["list", "--json", "--glob-archives", NAME_GLOB, "--format", "{comment}", "--", repo],
      { ...common, what: `borg list of ${repo}` },
    ).done;
    const ferry = ((JSON.parse(out) as { archives?: BorgArchive[] }).archives ?? []).filter(
      (a) => appOf(a.comment) !== undefined,
    );
    const last = ferry[ferry.length - 1];
    if (last === undefined) {
      throw new FerryError(
        "SNAPSHOT_NOT_FOUND",
        `borg:${repo} has no archive made by ferry backup --to borg (named APP-TIME, with ${APP_KEY}APP in its comment)`,
      );
    }
    return { name: last.name, app: appOf(last.comment) as string };
  }
  // biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are the point
  if (!/^[^/\u0000-\u001f]{1,255}$/.test(archive)) {
    throw new FerryError(
      "SNAPSHOT_NOT_FOUND",
      `${JSON.stringify(archive)} is not a borg archive name`,
    );
  }
  const out = await borg(["info", "--json", "--", `${repo}::${archive}`], {
    ...common,
    what: `borg info of ${archive}`,
    failure: (_exit, err) =>
      /does not exist/.test(err)
        ? new FerryError(
            "SNAPSHOT_NOT_FOUND",
            `borg:${repo} has no archive ${JSON.stringify(archive)}`,
          )
        : undefined,
  }).done;
  const found = (JSON.parse(out) as { archives?: BorgArchive[] }).archives?.[0];
  const app = appOf(found?.comment);
  if (found === undefined || app === undefined) {
    throw new FerryError(
      "ARCHIVE_INVALID",
      `borg archive ${JSON.stringify(archive)} was not made by ferry backup --to borg (its comment names no ${APP_KEY}APP); nothing was restored`,
    );
  }
  return { name: found.name, app };
}

/** `borg extract --stdout` of the layout into `path` (0600); returns its header and length. */
async function extractLayout(repo: string, name: string, path: string) {
  // A path prefix pattern: borg 1.2 does not count `pf:` matches and would warn (exit 1)
  // that the pattern never matched although it did (borg/patterns.py, PatternMatcher.match).
  const run = borg(["extract", "--stdout", "--", `${repo}::${name}`, LAYOUT_NAME], {
    stdin: "ignore",
    collect: false,
    what: `borg extract of ${name}'s layout`,
    code: "HELPER_FAILED",
    failure: (exit, err) =>
      exit === 1 && /never matched/.test(err)
        ? new FerryError(
            "ARCHIVE_INVALID",
            `borg archive ${JSON.stringify(name)} has no ${LAYOUT_NAME}: it was not made by ferry backup --to borg, or that backup was interrupted (borg delete it); nothing was restored`,
          )
        : undefined,
  });
  const out = createWriteStream(path, { flags: "wx", mode: 0o600 });
  await Promise.all([pipeline(run.child.stdout as Readable, out), run.done]);
  const head = Buffer.alloc(256);
  const fd = openSync(path, "r");
  let n: number;
  try {
    n = readSync(fd, head, 0, head.length, 0);
  } finally {
    closeSync(fd);
  }
  return parseLayoutHeader(head.subarray(0, n));
}

export async function restoreFromBorg(
  client: FerryClient,
  repo: string,
  archive: string,
  json: boolean,
): Promise<number> {
  const { name, app } = await findArchive(repo, archive);
  const dir = await privateDir();
  try {
    const path = join(dir, "layout");
    const { header, length } = await extractLayout(repo, name, path);
    const exp = borg(
      ["export-tar", "--exclude", `pf:${LAYOUT_NAME}`, "--", `${repo}::${name}`, "-"],
      {
        stdin: "ignore",
        collect: false,
        what: `borg export-tar of ${name}`,
        code: "HELPER_FAILED",
      },
    );
    const reader = new BorgTarReader(exp.child.stdout as Readable);
    const hash = createHash("sha256");
    let bytes = 0;
    let rebuilt: string | undefined;
    let failure: unknown;
    const source = Readable.from(
      (async function* () {
        try {
          const layout = createReadStream(path, { start: length, highWaterMark: SPOOL_BLOCK });
          for await (const b of rebuildFromLayout(layout, reader)) {
            hash.update(b);
            bytes += b.length;
            yield b;
          }
          await reader.drain();
          await exp.done;
          rebuilt = hash.digest("hex");
        } catch (err) {
          // borg's own failure (its stderr) explains a stream that stopped short.
          const borgErr = exp.child.stdout?.readableEnded
            ? await exp.done.then(
                () => undefined,
                (e: unknown) => e,
              )
            : await abortTool(exp);
          failure = borgErr ?? err;
          throw failure;
        }
      })(),
      { objectMode: false },
    );
    const same = () => rebuilt === header.sha256 && bytes === header.bytes;
    try {
      return await restoreFromTarget(client, {
        app,
        label: `borg:${repo}`,
        id: { key: "archive", value: name, shown: name },
        source,
        onFailure: () => exp.child.kill("SIGKILL"),
        sourceError: () => failure,
        report: () => ({
          fields: { sha256: rebuilt, bytes, sha256_matches_backup: same() },
          text: same() ? `, sha256 ${header.sha256.slice(0, 16)}… as backed up` : "",
          warning: same()
            ? undefined
            : `the archive rebuilt from borg (sha256 ${rebuilt}) is not the one backed up (${header.sha256}), yet ferryd accepted it`,
        }),
        json,
      });
    } catch (err) {
      if (err instanceof FerryError && rebuilt !== undefined && !same()) {
        throw new FerryError(
          err.code,
          `${err.message} (the archive rebuilt from borg has sha256 ${rebuilt.slice(0, 16)}…, the layout records ${header.sha256.slice(0, 16)}… for the one backed up)`,
        );
      }
      throw err;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
