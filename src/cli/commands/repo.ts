/**
 * The repository commands of `ferry` (docs/repository.md): `init` and `backup` here;
 * `snapshots`, `ls`, `dump` and `restore` in repo-snapshots.ts; `check`, `forget` and
 * `prune` in repo-maintain.ts; the path, password and opening shared by all in
 * repo-open.ts. Each takes `--repo PATH` (or FERRY_REPO) and `--json`. Every command on an
 * unencrypted repository says so on stderr.
 */
import { hostname } from "node:os";
import { SINCE_TOKEN } from "../../api/types.js";
import { FerryError } from "../../core/errors.js";
import { ArchiveStore } from "../../repo/archive.js";
import { LocalBackend } from "../../repo/backend.js";
import type { LoadedSnapshot } from "../../repo/format.js";
import { RepoLock } from "../../repo/lock.js";
import { Repository } from "../../repo/repository.js";
import { errorFromBody, type FerryClient, parseStatusTrailer, readBody } from "../client.js";
import { EXIT, UsageError } from "../exit-codes.js";
import { formatBytes } from "../progress.js";
import { announce, openRepo, out, type RepoOptions, readPassword, repoPath } from "./repo-open.js";
import { RepoProgress } from "./repo-progress.js";

// ---------------------------------------------------------------------------- init

export async function initCommand(o: RepoOptions, insecure: boolean): Promise<number> {
  const path = repoPath(o);
  let password: string | undefined;
  if (!insecure) {
    password = await readPassword(o, true);
    if (password === undefined) {
      throw new FerryError(
        "PASSWORD_REQUIRED",
        "init needs a password (FERRY_PASSWORD, --password-file, --password-command or a terminal), or --insecure-no-password for an unencrypted repository",
      );
    }
  } else if (
    o.passwordFile !== undefined ||
    o.passwordCommand !== undefined ||
    process.env.FERRY_PASSWORD !== undefined
  ) {
    throw new UsageError("--insecure-no-password and a password exclude each other");
  }
  const repo = await Repository.init(new LocalBackend(path), password);
  announce(repo);
  out(
    o,
    { id: repo.config.id, path, encrypted: repo.encrypted },
    `created ${repo.encrypted ? "an encrypted" : "an UNENCRYPTED"} repository ${repo.config.id.slice(0, 8)} at ${path}\n`,
  );
  return EXIT.OK;
}

// ---------------------------------------------------------------------------- backup

export interface BackupResult {
  app: string;
  ok: boolean;
  snapshot?: string;
  /** "delta": ferryd sent only what changed since `since`, completed from `previous`. */
  kind?: "full" | "delta";
  /** The token asked for (the previous snapshot's), whether ferryd still knew it or not. */
  since?: string;
  previous?: string;
  unchanged_files?: number;
  /** Bytes of the stored (complete) archive. */
  bytes?: number;
  /** What ferryd sent: its bytes and SHA-256 (for a delta, less than the archive). */
  received_bytes?: number;
  sha256?: string;
  added_bytes?: number;
  seconds?: number;
  warnings?: string[];
  error?: { code: string; message: string };
}

async function backupOne(
  client: FerryClient,
  repo: Repository,
  app: string,
  tags: string[],
  signal: AbortSignal,
  previous: LoadedSnapshot | undefined,
  expected: number | undefined,
): Promise<BackupResult> {
  // A delta against the app's latest snapshot when it names ferryd's index of itself.
  const token = previous?.end.token;
  const since = typeof token === "string" && SINCE_TOKEN.test(token) ? token : undefined;
  const path = `/v1/apps/${encodeURIComponent(app)}/backup${since === undefined ? "" : `?since=${since}`}`;
  const res = await client.request("POST", path, signal);
  if (res.statusCode !== 200)
    throw errorFromBody(res.statusCode ?? 500, await readBody(res, 1 << 20));
  const before = { ...repo.stats };
  const store = new ArchiveStore(repo, {
    app,
    tags,
    ...(since === undefined ? {} : { previous }),
  });
  const progress = new RepoProgress(`backup ${app}`, since === undefined ? expected : undefined);
  try {
    try {
      for await (const chunk of res) {
        await store.write(chunk as Buffer);
        progress.update(store.bytes, `${store.parser.entries} entries`);
      }
    } catch (err) {
      if (signal.aborted) throw new FerryError("CANCELLED", "interrupted");
      if (!(err instanceof FerryError)) {
        throw new FerryError(
          "ARCHIVE_TRUNCATED",
          `the stream broke after ${store.bytes} bytes: ${(err as Error).message}`,
        );
      }
      throw err;
    }
    const status = parseStatusTrailer(res.trailers["ferry-status"]);
    if (status !== undefined) throw status;
    const { id, snapshot } = await store.finish();
    const delta = snapshot.delta;
    return {
      app,
      ok: true,
      snapshot: id,
      kind: delta === undefined ? "full" : "delta",
      ...(since === undefined ? {} : { since }),
      ...(delta === undefined
        ? {}
        : { previous: delta.previous, unchanged_files: delta.unchanged }),
      bytes: snapshot.archive.bytes,
      received_bytes: store.bytes,
      sha256: delta?.received.sha256 ?? snapshot.archive.sha256 ?? "",
      added_bytes: repo.stats.newStored - before.newStored,
      seconds: snapshot.stats.seconds,
      warnings: snapshot.warnings,
    };
  } finally {
    progress.clear();
  }
}

/** How a backup was made, for the one-line report. */
function kindText(r: BackupResult): string {
  if (r.kind === "delta") {
    return `delta: ${r.unchanged_files} unchanged file(s) from snapshot ${r.previous?.slice(0, 8)}, ${formatBytes(r.received_bytes ?? 0)} received`;
  }
  return r.since === undefined
    ? "full"
    : "full: ferryd no longer knows the previous snapshot's token (expired, or its state was lost)";
}

export async function backupCommand(
  client: FerryClient,
  o: RepoOptions,
  apps: string[] | "all",
  tags: string[],
  forceFull = false,
): Promise<number> {
  const repo = await openRepo(o);
  const names =
    apps === "all"
      ? (await client.json<{ apps: { name: string }[] }>("GET", "/v1/apps")).apps.map((a) => a.name)
      : apps;
  if (names.length === 0) throw new UsageError("backup needs application names or --all");
  const lock = await RepoLock.acquire(repo, false);
  const abort = new AbortController();
  const onSignal = () => abort.abort();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const results: BackupResult[] = [];
  try {
    await repo.loadIndex();
    // Each app's latest snapshot from this host: its token asks ferryd for a delta (unless
    // --force-full), and its size estimates this one's, for the ETA.
    const latest = new Map<string, LoadedSnapshot>();
    const host = hostname();
    for (const s of await repo.listSnapshots()) if (s.host === host) latest.set(s.app, s);
    for (const app of names) {
      if (abort.signal.aborted) break;
      try {
        const last = latest.get(app);
        const r = await backupOne(
          client,
          repo,
          app,
          tags,
          abort.signal,
          forceFull ? undefined : last,
          last?.archive.bytes,
        );
        results.push(r);
        if (!o.json) {
          for (const w of r.warnings ?? []) process.stderr.write(`ferry: ${app}: warning: ${w}\n`);
          process.stderr.write(
            `backed up ${app}: snapshot ${r.snapshot?.slice(0, 8)}, ${formatBytes(r.bytes ?? 0)} archive (${kindText(r)}), ` +
              `${formatBytes(r.added_bytes ?? 0)} added in ${(r.seconds ?? 0).toFixed(1)}s, sha256 ${r.sha256?.slice(0, 16)}…\n`,
          );
        }
      } catch (err) {
        const code = err instanceof FerryError ? err.code : "INTERNAL";
        results.push({ app, ok: false, error: { code, message: (err as Error).message } });
        if (!o.json)
          process.stderr.write(
            `ferry: backup of ${app} failed: ${(err as Error).message} [${code}]\n`,
          );
        if (code === "CANCELLED") break;
      }
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await lock.release();
  }
  const failed = results.filter((r) => !r.ok).map((r) => r.app);
  if (o.json) {
    process.stdout.write(`${JSON.stringify({ results, failed }, null, 2)}\n`);
  } else if (names.length > 1) {
    process.stderr.write(
      `${results.length - failed.length} of ${names.length} application(s) backed up${failed.length ? `; failed: ${failed.join(", ")}` : ""}\n`,
    );
  }
  if (abort.signal.aborted) return EXIT.INTERRUPTED;
  return failed.length > 0 ? EXIT.FAILURE : EXIT.OK;
}
