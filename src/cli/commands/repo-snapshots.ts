/**
 * Reading a repository's snapshots with `ferry` (docs/repository.md, "Commands"):
 * `snapshots`, `ls`, `dump` (the archive, byte for byte) and `restore` (streamed to
 * ferryd's restore of the snapshot's application).
 */
import { once } from "node:events";
import { Readable } from "node:stream";
import { FerryError } from "../../core/errors.js";
import { listEntries, rebuildArchive } from "../../repo/archive.js";
import type { LoadedSnapshot } from "../../repo/format.js";
import type { FerryClient } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { formatBytes } from "../progress.js";
import { uploadRestore } from "../restore-upload.js";
import { openRepo, type RepoOptions } from "./repo-open.js";
import { RepoProgress } from "./repo-progress.js";

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
    // null for a completed delta: `dump` computes its end record
    sha256: s.archive.sha256,
    end: s.end,
    // how a completed delta was made (what ferryd sent, the snapshot it was completed from)
    ...(s.delta === undefined ? {} : { delta: s.delta }),
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
