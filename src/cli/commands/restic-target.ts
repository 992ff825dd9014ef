/**
 * The restic target, for people who already keep backups in restic (docs/repository.md,
 * "Other targets"; what it shares with the borg target is in target-common.ts):
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
import type { Readable } from "node:stream";
import { FerryError } from "../../core/errors.js";
import type { FerryClient } from "../client.js";
import { EXIT } from "../exit-codes.js";
import {
  abortTool,
  type BackupTarget,
  backupToTarget,
  feed,
  restoreFromTarget,
  runTool,
  type Tool,
} from "./target-common.js";

const RESTIC: Tool = { command: "restic", debianPackage: "restic" };
const APP_TAG = "ferry-app=";

function resticTarget(repo: string, tags: string[]): BackupTarget {
  return {
    label: `restic:${repo}`,
    async open(app) {
      const run = runTool(
        RESTIC,
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
        { stdin: "pipe", collect: true, what: `restic backup of ${app}`, code: "BACKUP_FAILED" },
      );
      const stdin = run.child.stdin as NonNullable<typeof run.child.stdin>;
      return {
        write: (b) => feed(stdin, run, b),
        async finish(_archive, signal) {
          if (signal.aborted) throw signal.reason;
          stdin.end();
          await run.done;
          return {};
        },
        abort: () => abortTool(run),
      };
    },
  };
}

export function backupToRestic(
  client: FerryClient,
  repo: string,
  apps: string[] | "all",
  tags: string[],
  json: boolean,
): Promise<number> {
  return backupToTarget(client, resticTarget(repo, tags), apps, json);
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
    await runTool(RESTIC, ["-r", repo, "snapshots", "--json", "--tag", "ferry", snapshot], {
      stdin: "ignore",
      collect: true,
      what: "restic snapshots",
      code: "HELPER_FAILED",
    }).done,
  ) as { id: string; tags?: string[] }[] | null;
  const snap = list?.[list.length - 1];
  const app = snap?.tags?.find((t) => t.startsWith(APP_TAG))?.slice(APP_TAG.length);
  if (snap === undefined || app === undefined) {
    throw new FerryError(
      "SNAPSHOT_NOT_FOUND",
      `restic:${repo} has no Ferry snapshot ${snapshot} (one tagged ferry and ${APP_TAG}APP)`,
    );
  }
  const dump = runTool(RESTIC, ["-r", repo, "dump", snap.id, `/${app}.tar`], {
    stdin: "ignore",
    collect: false,
    what: `restic dump of ${snap.id}`,
    code: "HELPER_FAILED",
  });
  const code = await restoreFromTarget(client, {
    app,
    label: `restic:${repo}`,
    id: { key: "snapshot", value: snap.id, shown: snap.id.slice(0, 8) },
    source: dump.child.stdout as Readable,
    onFailure: () => dump.child.kill("SIGKILL"),
    json,
  });
  if (code === EXIT.OK) await dump.done;
  return code;
}
