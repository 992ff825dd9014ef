/**
 * Other targets for people who already keep backups in restic (docs/repository.md,
 * "Other targets"):
 *
 * - `ferry backup APP… --to restic:REPO` pipes each archive, verified on the way, to
 *   `restic -r REPO backup --stdin --stdin-filename APP.tar --tag ferry --tag ferry-app=APP`;
 *   an archive that fails verification (or a stream ferryd ends with an error) kills restic
 *   before its stdin closes, so restic never records a snapshot of it;
 * - `ferry restore --from restic:REPO SNAPSHOT` finds the application in the snapshot's
 *   `ferry-app=` tag and streams `restic dump SNAPSHOT /APP.tar` to ferryd's restore.
 *
 * restic takes its password and options from its own environment (RESTIC_PASSWORD,
 * RESTIC_PASSWORD_FILE, RESTIC_PASSWORD_COMMAND, RESTIC_CACHE_DIR, …).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { ArchiveParser } from "../../core/archive/reader.js";
import { FerryError } from "../../core/errors.js";
import { errorFromBody, type FerryClient, parseStatusTrailer, readBody } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { formatBytes } from "../progress.js";

const APP_TAG = "ferry-app=";

function restic(args: string[], stdin: "pipe" | "ignore"): ChildProcess {
  return spawn("restic", args, { stdio: [stdin, "pipe", "pipe"] });
}

async function finished(child: ChildProcess, what: string, collect = true): Promise<string> {
  let err = "";
  let out = "";
  child.stderr?.on("data", (d: Buffer) => {
    err += d.toString();
  });
  if (collect) {
    child.stdout?.on("data", (d: Buffer) => {
      out += d.toString();
    });
  }
  const [code, signal] = (await once(child, "close")) as [number | null, string | null];
  if (code !== 0) {
    throw new FerryError(
      "BACKUP_FAILED",
      `${what} failed (${signal ?? `exit ${code}`}): ${err.trim().split("\n").slice(-3).join(" ")}`,
    );
  }
  return out;
}

async function oneToRestic(
  client: FerryClient,
  repo: string,
  app: string,
  tags: string[],
): Promise<{ app: string; ok: true; bytes: number; sha256: string }> {
  const res = await client.request("POST", `/v1/apps/${encodeURIComponent(app)}/backup`);
  if (res.statusCode !== 200)
    throw errorFromBody(res.statusCode ?? 500, await readBody(res, 1 << 20));
  const child = restic(
    [
      "-r",
      repo,
      "backup",
      "--quiet",
      "--stdin",
      "--stdin-filename",
      `${app}.tar`,
      "--tag",
      "ferry",
      "--tag",
      `${APP_TAG}${app}`,
      ...tags.flatMap((t) => ["--tag", t]),
    ],
    "pipe",
  );
  const done = finished(child, `restic backup of ${app}`);
  done.catch(() => {});
  const stdin = child.stdin as NonNullable<ChildProcess["stdin"]>;
  stdin.on("error", () => {});
  const parser = new ArchiveParser();
  const hash = createHash("sha256");
  let bytes = 0;
  try {
    for await (const chunk of res) {
      const b = chunk as Buffer;
      await parser.write(b);
      hash.update(b);
      bytes += b.length;
      if (!stdin.write(b)) await Promise.race([once(stdin, "drain"), done]);
    }
    const status = parseStatusTrailer(res.trailers["ferry-status"]);
    if (status !== undefined) throw status;
    parser.finish();
  } catch (err) {
    // restic must not see the end of its input: it would record a snapshot of it.
    child.kill("SIGKILL");
    await done.catch(() => {});
    throw err;
  }
  stdin.end();
  await done;
  return { app, ok: true, bytes, sha256: hash.digest("hex") };
}

export async function backupToRestic(
  client: FerryClient,
  repo: string,
  apps: string[] | "all",
  tags: string[],
  json: boolean,
): Promise<number> {
  const names =
    apps === "all"
      ? (await client.json<{ apps: { name: string }[] }>("GET", "/v1/apps")).apps.map((a) => a.name)
      : apps;
  const results: unknown[] = [];
  const failed: string[] = [];
  for (const app of names) {
    try {
      const r = await oneToRestic(client, repo, app, tags);
      results.push(r);
      if (!json)
        process.stderr.write(
          `backed up ${app} to restic:${repo}: ${formatBytes(r.bytes)}, sha256 ${r.sha256.slice(0, 16)}…\n`,
        );
    } catch (err) {
      const code = err instanceof FerryError ? err.code : "INTERNAL";
      failed.push(app);
      results.push({ app, ok: false, error: { code, message: (err as Error).message } });
      if (!json)
        process.stderr.write(
          `ferry: backup of ${app} failed: ${(err as Error).message} [${code}]\n`,
        );
    }
  }
  if (json) process.stdout.write(`${JSON.stringify({ results, failed }, null, 2)}\n`);
  return failed.length > 0 ? EXIT.FAILURE : EXIT.OK;
}

export async function restoreFromRestic(
  client: FerryClient,
  repo: string,
  snapshot: string,
  json: boolean,
): Promise<number> {
  if (!/^([0-9a-f]{4,64}|latest)$/.test(snapshot)) {
    throw new FerryError(
      "SNAPSHOT_NOT_FOUND",
      `${JSON.stringify(snapshot)} is not a restic snapshot id`,
    );
  }
  const list = JSON.parse(
    await finished(
      restic(["-r", repo, "snapshots", "--json", "--tag", "ferry", snapshot], "ignore"),
      "restic snapshots",
    ),
  ) as { id: string; tags?: string[] }[] | null;
  const snap = list?.[list.length - 1];
  const app = snap?.tags?.find((t) => t.startsWith(APP_TAG))?.slice(APP_TAG.length);
  if (snap === undefined || app === undefined) {
    throw new FerryError(
      "SNAPSHOT_NOT_FOUND",
      `restic:${repo} has no Ferry snapshot ${snapshot} (one tagged ferry and ${APP_TAG}APP)`,
    );
  }
  const child = restic(["-r", repo, "dump", snap.id, `/${app}.tar`], "ignore");
  const done = finished(child, `restic dump of ${snap.id}`, false);
  done.catch(() => {});
  const res = await client.request(
    "POST",
    `/v1/apps/${encodeURIComponent(app)}/restore`,
    undefined,
    child.stdout as NonNullable<ChildProcess["stdout"]>,
  );
  const text = await readBody(res, 1 << 20);
  if (res.statusCode !== 200) {
    child.kill("SIGKILL");
    throw errorFromBody(res.statusCode ?? 500, text);
  }
  await done;
  const r = JSON.parse(text) as { entries: number };
  if (json) process.stdout.write(`${JSON.stringify({ snapshot: snap.id, app, ...r }, null, 2)}\n`);
  else
    process.stderr.write(
      `restored ${app} from restic:${repo} snapshot ${snap.id.slice(0, 8)}: ${r.entries} entries\n`,
    );
  return EXIT.OK;
}
