/**
 * The repository commands of `ferry` (docs/repository.md): init, backup, snapshots, ls,
 * dump, restore, check, forget, prune. Each takes `--repo PATH` (or FERRY_REPO) and
 * `--json`; the password comes from FERRY_PASSWORD, --password-file, --password-command or
 * a prompt on the terminal. Every command on an unencrypted repository says so on stderr.
 */
import { execFileSync } from "node:child_process";
import { once } from "node:events";
import { readFileSync } from "node:fs";
import { Readable } from "node:stream";
import { FerryError } from "../../core/errors.js";
import { ArchiveStore, listEntries, rebuildArchive } from "../../repo/archive.js";
import { LocalBackend } from "../../repo/backend.js";
import { checkRepository } from "../../repo/check.js";
import { RepoLock } from "../../repo/lock.js";
import { applyPolicy, isEmptyPolicy, type KeepPolicy } from "../../repo/policy.js";
import { prune } from "../../repo/prune.js";
import { type LoadedSnapshot, Repository } from "../../repo/repository.js";
import { errorFromBody, type FerryClient, parseStatusTrailer, readBody } from "../client.js";
import { EXIT, UsageError } from "../exit-codes.js";
import { formatBytes } from "../progress.js";
import { uploadRestore } from "../restore-upload.js";
import { RepoProgress } from "./repo-progress.js";

export interface RepoOptions {
  repo?: string;
  passwordFile?: string;
  passwordCommand?: string;
  json: boolean;
}

function repoPath(o: RepoOptions): string {
  const p = o.repo ?? process.env.FERRY_REPO;
  if (p === undefined || p === "") {
    throw new UsageError("no repository: give --repo PATH or set FERRY_REPO");
  }
  return p;
}

/** The password from the first source that gives one, or undefined if none does. */
export async function readPassword(o: RepoOptions, confirm = false): Promise<string | undefined> {
  if (o.passwordFile !== undefined) {
    let text: string;
    try {
      // `-` and /dev/stdin read the descriptor ferry was given, not the path: reopening
      // /dev/stdin fails with EACCES when root redirected a file only root can open
      // (`runuser -u ferry-backup -- ferry … --password-file /dev/stdin < root-only-file`).
      const stdin = o.passwordFile === "-" || o.passwordFile === "/dev/stdin";
      text = readFileSync(stdin ? 0 : o.passwordFile, "utf8");
    } catch (err) {
      throw new FerryError(
        "BAD_REQUEST",
        `cannot read --password-file ${o.passwordFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
      );
    }
    return nonEmpty(text.replace(/\r?\n$/, ""), "--password-file");
  }
  if (o.passwordCommand !== undefined) {
    let out: Buffer;
    try {
      out = execFileSync("/bin/sh", ["-c", o.passwordCommand], {
        stdio: ["ignore", "pipe", "inherit"],
        timeout: 60_000,
        maxBuffer: 1 << 16,
      });
    } catch (err) {
      throw new FerryError(
        "BAD_REQUEST",
        `--password-command failed: ${(err as Error).message.split("\n")[0]}`,
      );
    }
    return nonEmpty(out.toString("utf8").replace(/\r?\n$/, ""), "--password-command");
  }
  const env = process.env.FERRY_PASSWORD;
  if (env !== undefined) return nonEmpty(env, "FERRY_PASSWORD");
  if (process.stdin.isTTY && process.stderr.isTTY) {
    const pw = await prompt("repository password: ");
    if (confirm && (await prompt("repeat password: ")) !== pw) {
      throw new FerryError("BAD_REQUEST", "the passwords differ");
    }
    return nonEmpty(pw, "the password");
  }
  return undefined;
}

function nonEmpty(pw: string, where: string): string {
  if (pw === "") throw new FerryError("BAD_REQUEST", `${where} gives an empty password`);
  return pw;
}

/** Reads a line from the terminal without echo. */
async function prompt(question: string): Promise<string> {
  process.stderr.write(question);
  const stdin = process.stdin;
  stdin.setRawMode(true);
  stdin.resume();
  let text = "";
  try {
    for (;;) {
      const [chunk] = (await once(stdin, "data")) as [Buffer];
      for (const ch of chunk.toString("utf8")) {
        if (ch === "\r" || ch === "\n") return text;
        if (ch === "\u0003") throw new FerryError("CANCELLED", "interrupted");
        if (ch === "\u007f" || ch === "\b") text = text.slice(0, -1);
        else text += ch;
      }
    }
  } finally {
    stdin.setRawMode(false);
    stdin.pause();
    process.stderr.write("\n");
  }
}

function announce(repo: Repository): void {
  if (!repo.encrypted) {
    process.stderr.write(
      `ferry: warning: the repository ${repo.backend.location} is NOT encrypted (made with --insecure-no-password)\n`,
    );
  }
}

async function openRepo(o: RepoOptions): Promise<Repository> {
  const backend = new LocalBackend(repoPath(o));
  let password: string | undefined;
  // An unencrypted repository needs no password; ask only when the config says encrypted.
  try {
    const cfg = JSON.parse((await backend.read("config", "config")).toString("utf8")) as {
      encrypted?: unknown;
    };
    if (cfg.encrypted !== false) password = await readPassword(o);
    else if (
      o.passwordFile !== undefined ||
      o.passwordCommand !== undefined ||
      process.env.FERRY_PASSWORD !== undefined
    ) {
      password = await readPassword(o);
    }
  } catch (err) {
    if (err instanceof FerryError) throw err;
    // Missing or malformed config: Repository.open says what is wrong.
  }
  const repo = await Repository.open(backend, { password });
  announce(repo);
  return repo;
}

function out(o: RepoOptions, value: unknown, text: string): void {
  process.stdout.write(o.json ? `${JSON.stringify(value, null, 2)}\n` : text);
}

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
  bytes?: number;
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
  expected: number | undefined,
): Promise<BackupResult> {
  const res = await client.request("POST", `/v1/apps/${encodeURIComponent(app)}/backup`, signal);
  if (res.statusCode !== 200)
    throw errorFromBody(res.statusCode ?? 500, await readBody(res, 1 << 20));
  const before = { ...repo.stats };
  const store = new ArchiveStore(repo, { app, tags });
  const progress = new RepoProgress(`backup ${app}`, expected);
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
    return {
      app,
      ok: true,
      snapshot: id,
      bytes: snapshot.archive.bytes,
      sha256: snapshot.archive.sha256,
      added_bytes: repo.stats.newStored - before.newStored,
      seconds: snapshot.stats.seconds,
      warnings: snapshot.warnings,
    };
  } finally {
    progress.clear();
  }
}

export async function backupCommand(
  client: FerryClient,
  o: RepoOptions,
  apps: string[] | "all",
  tags: string[],
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
    // The previous snapshot of each app estimates this one's size, for the ETA.
    const lastSize = new Map<string, number>();
    if (process.stderr.isTTY) {
      for (const s of await repo.listSnapshots()) lastSize.set(s.app, s.archive.bytes);
    }
    for (const app of names) {
      if (abort.signal.aborted) break;
      try {
        const r = await backupOne(client, repo, app, tags, abort.signal, lastSize.get(app));
        results.push(r);
        if (!o.json) {
          for (const w of r.warnings ?? []) process.stderr.write(`ferry: ${app}: warning: ${w}\n`);
          process.stderr.write(
            `backed up ${app}: snapshot ${r.snapshot?.slice(0, 8)}, ${formatBytes(r.bytes ?? 0)} archive, ` +
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

// ---------------------------------------------------------------------------- snapshots, ls

function snapshotJson(s: LoadedSnapshot) {
  return {
    id: s.id,
    time: s.time,
    host: s.host,
    app: s.app,
    driver: s.driver,
    tags: s.tags,
    bytes: s.archive.bytes,
    entries: s.archive.entries,
    sha256: s.archive.sha256,
    end: s.end,
    warnings: s.warnings,
    stats: s.stats,
  };
}

export async function snapshotsCommand(o: RepoOptions, app: string | undefined): Promise<number> {
  const repo = await openRepo(o);
  const snaps = (await repo.listSnapshots()).filter((s) => app === undefined || s.app === app);
  if (o.json) {
    process.stdout.write(`${JSON.stringify(snaps.map(snapshotJson), null, 2)}\n`);
    return EXIT.OK;
  }
  const rows = [
    ["ID", "TIME", "HOST", "APP", "SIZE", "TAGS"],
    ...snaps.map((s) => [
      s.id.slice(0, 8),
      s.time.replace("T", " ").replace(/\.\d+Z$/, "Z"),
      s.host,
      s.app,
      formatBytes(s.archive.bytes),
      s.tags.join(","),
    ]),
  ];
  const w = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] as string).length))) ?? [];
  for (const r of rows)
    process.stdout.write(
      `${r
        .map((c, i) => c.padEnd((w[i] as number) + 2))
        .join("")
        .trimEnd()}\n`,
    );
  process.stdout.write(`${snaps.length} snapshot(s)\n`);
  return EXIT.OK;
}

function modeString(type: string, mode: number): string {
  const t =
    { dir: "d", symlink: "l", hardlink: "h", char: "c", block: "b", fifo: "p" }[type] ?? "-";
  let s = t;
  for (const shift of [6, 3, 0]) {
    const m = (mode >> shift) & 7;
    s += `${m & 4 ? "r" : "-"}${m & 2 ? "w" : "-"}${m & 1 ? "x" : "-"}`;
  }
  return s;
}

export async function lsCommand(o: RepoOptions, ref: string): Promise<number> {
  const repo = await openRepo(o);
  await repo.loadIndex();
  const snap = await repo.findSnapshot(ref);
  const lines: string[] = [];
  for await (const h of listEntries(repo, snap)) {
    if (o.json) {
      process.stdout.write(
        `${JSON.stringify({ path: h.path, type: h.type, mode: h.mode, uid: h.uid, gid: h.gid, uname: h.uname, gname: h.gname, size: h.size, mtime: h.mtimeSec, linkpath: h.linkpath || undefined })}\n`,
      );
      continue;
    }
    const owner = `${h.uname || h.uid}/${h.gname || h.gid}`;
    const time = new Date(h.mtimeSec * 1000).toISOString().slice(0, 16).replace("T", " ");
    const link =
      h.type === "symlink"
        ? ` -> ${h.linkpath}`
        : h.type === "hardlink"
          ? ` link to ${h.linkpath}`
          : "";
    lines.push(
      `${modeString(h.type, h.mode)} ${owner} ${String(h.size).padStart(10)} ${time} ${h.path}${link}`,
    );
    if (lines.length >= 1000) {
      process.stdout.write(`${lines.join("\n")}\n`);
      lines.length = 0;
    }
  }
  if (lines.length > 0) process.stdout.write(`${lines.join("\n")}\n`);
  return EXIT.OK;
}

// ---------------------------------------------------------------------------- dump, restore

export async function dumpCommand(o: RepoOptions, ref: string): Promise<number> {
  if (process.stdout.isTTY) {
    throw new FerryError("BAD_REQUEST", "refusing to write an archive to a terminal; use a pipe");
  }
  const repo = await openRepo(o);
  await repo.loadIndex();
  const snap = await repo.findSnapshot(ref);
  for await (const b of rebuildArchive(repo, snap)) {
    if (!process.stdout.write(b)) await once(process.stdout, "drain");
  }
  return EXIT.OK;
}

export async function restoreCommand(
  client: FerryClient,
  o: RepoOptions,
  ref: string,
): Promise<number> {
  const repo = await openRepo(o);
  await repo.loadIndex();
  const snap = await repo.findSnapshot(ref);
  const progress = new RepoProgress(`restore ${snap.app}`, snap.archive.bytes);
  let sent = 0;
  const source = Readable.from(
    (async function* () {
      for await (const b of rebuildArchive(repo, snap)) {
        sent += b.length;
        progress.update(sent);
        yield b;
      }
    })(),
  );
  const r = await uploadRestore(client, snap.app, source, () => progress.clear());
  if (r === "interrupted") {
    process.stderr.write(`ferry: restore of ${snap.app} interrupted; ferryd rolls it back\n`);
    return EXIT.INTERRUPTED;
  }
  progress.clear();
  if (o.json) {
    process.stdout.write(
      `${JSON.stringify({ snapshot: snap.id, app: snap.app, ...r }, null, 2)}\n`,
    );
  } else {
    for (const w of r.warnings ?? []) process.stderr.write(`ferry: warning: ${w}\n`);
    process.stderr.write(
      `restored ${snap.app} from snapshot ${snap.id.slice(0, 8)}: ${r.entries} entries, ${formatBytes(sent)} in ${progress.elapsed().toFixed(1)}s\n`,
    );
  }
  return EXIT.OK;
}

// ---------------------------------------------------------------------------- check

export async function checkCommand(o: RepoOptions, readData: boolean): Promise<number> {
  const repo = await openRepo(o);
  const lock = await RepoLock.acquire(repo, false);
  const progress = new RepoProgress("check --read-data");
  let report: Awaited<ReturnType<typeof checkRepository>>;
  try {
    report = await checkRepository(repo, {
      readData,
      onProgress: (done, total, bytes) => progress.update(bytes, `pack ${done} of ${total}`),
    });
  } finally {
    progress.clear();
    await lock.release();
  }
  if (o.json) {
    process.stdout.write(`${JSON.stringify(report, null, 2)}\n`);
  } else {
    for (const n of report.notes) process.stderr.write(`note: ${n}\n`);
    for (const p of report.problems) {
      process.stdout.write(
        `error: ${p.what}${p.snapshots.length ? `\n  affects snapshot(s): ${p.snapshots.join(", ")}` : ""}\n`,
      );
    }
    process.stdout.write(
      `checked ${report.snapshots} snapshot(s), ${report.packs} pack(s), ${report.blobs} blob(s)` +
        `${readData ? `, read ${formatBytes(report.bytesRead)}` : ""}: ` +
        `${report.problems.length === 0 ? "no errors" : `${report.problems.length} error(s)`}\n`,
    );
  }
  return report.problems.length === 0 ? EXIT.OK : EXIT.FAILURE;
}

// ---------------------------------------------------------------------------- forget, prune

export interface ForgetOptions {
  policy: KeepPolicy;
  app?: string;
  dryRun: boolean;
  prune: boolean;
}

export async function forgetCommand(o: RepoOptions, f: ForgetOptions): Promise<number> {
  if (isEmptyPolicy(f.policy)) {
    throw new UsageError("forget needs at least one --keep-* option");
  }
  const repo = await openRepo(o);
  const lock = await RepoLock.acquire(repo, f.prune && !f.dryRun);
  try {
    const snaps = (await repo.listSnapshots()).filter(
      (s) => f.app === undefined || s.app === f.app,
    );
    const groups = new Map<string, LoadedSnapshot[]>();
    for (const s of snaps) {
      const k = `${s.host}\u0000${s.app}`;
      const g = groups.get(k) ?? [];
      g.push(s);
      groups.set(k, g);
    }
    const summary: { host: string; app: string; keep: unknown[]; remove: unknown[] }[] = [];
    for (const g of groups.values()) {
      const r = applyPolicy(g, f.policy);
      const first = g[0] as LoadedSnapshot;
      summary.push({
        host: first.host,
        app: first.app,
        keep: r.keep.map((k) => ({ id: k.snapshot.id, time: k.snapshot.time, reasons: k.reasons })),
        remove: r.remove.map((s) => ({ id: s.id, time: s.time })),
      });
      if (!o.json) {
        process.stdout.write(
          `${first.app} on ${first.host}: keep ${r.keep.length}, ${f.dryRun ? "would remove" : "remove"} ${r.remove.length}\n`,
        );
        for (const k of r.keep)
          process.stdout.write(
            `  keep   ${k.snapshot.id.slice(0, 8)} ${k.snapshot.time} (${k.reasons.join(", ")})\n`,
          );
        for (const s of r.remove) process.stdout.write(`  remove ${s.id.slice(0, 8)} ${s.time}\n`);
      }
      if (!f.dryRun) for (const s of r.remove) await repo.backend.remove("snapshots", s.id);
    }
    let pruned: unknown;
    if (f.prune) pruned = await prune(repo, { dryRun: f.dryRun });
    if (o.json)
      process.stdout.write(`${JSON.stringify({ groups: summary, prune: pruned }, null, 2)}\n`);
    else if (pruned !== undefined) printPrune(pruned as Awaited<ReturnType<typeof prune>>);
  } finally {
    await lock.release();
  }
  return EXIT.OK;
}

function printPrune(r: Awaited<ReturnType<typeof prune>>): void {
  process.stdout.write(
    `prune${r.dryRun ? " (dry run)" : ""}: ${r.snapshots} snapshot(s) use ${r.usedBlobs} blob(s); ` +
      `${r.dryRun ? "would remove" : "removed"} ${r.packsRemoved} of ${r.packsBefore} pack(s) ` +
      `(${r.packsRepacked} repacked into ${r.packsWritten}, ${r.unindexedRemoved} unindexed), ` +
      `${formatBytes(r.bytesRemoved)} of ${formatBytes(r.bytesBefore)}\n`,
  );
}

export async function pruneCommand(o: RepoOptions, dryRun: boolean): Promise<number> {
  const repo = await openRepo(o);
  const lock = await RepoLock.acquire(repo, !dryRun);
  try {
    const r = await prune(repo, { dryRun });
    if (o.json) process.stdout.write(`${JSON.stringify(r, null, 2)}\n`);
    else printPrune(r);
  } finally {
    await lock.release();
  }
  return EXIT.OK;
}
