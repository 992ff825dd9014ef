#!/usr/bin/env -S node --max-semi-space-size=16 --initial-old-space-size=64
/**
 * ferry — the backup software's command line. See `ferry --help`.
 *
 * The V8 flags on the first line are for `ferry backup`: with V8's default, tiny
 * initial old generation, a 1 GB backup ran 190–250 full collections (a profile showed
 * 3 s of its 18 s in the collector); starting the old generation at 64 MiB and the young
 * one at up to 16 MiB leaves 1–3. They only move the first collection's threshold: the
 * export path allocates almost nothing and keeps its peak RSS (61 MiB, bench/README.md).
 * `env -S` (coreutils 8.30 and later) splits the line; run as `node ferry.js`, ferry
 * works the same, only without the tuning.
 */
import { parseArgs } from "node:util";
import type { VersionInfo } from "../api/types.js";
import { VERSION } from "../core/version.js";
import { clientOptionsFromEnv, FerryClient } from "./client.js";
import { appsCommand } from "./commands/apps.js";
import { backupToBorg, restoreFromBorg } from "./commands/borg-target.js";
import { doctorCommand } from "./commands/doctor.js";
import { exportCommand, exportManyCommand } from "./commands/export.js";
import { importCommand } from "./commands/import.js";
import { cancelCommand, jobsCommand } from "./commands/jobs.js";
import { backupCommand, initCommand } from "./commands/repo.js";
import { checkCommand, forgetCommand, pruneCommand } from "./commands/repo-maintain.js";
import type { RepoOptions } from "./commands/repo-open.js";
import {
  dumpCommand,
  lsCommand,
  restoreCommand,
  snapshotsCommand,
} from "./commands/repo-snapshots.js";
import { backupToRestic, restoreFromRestic } from "./commands/restic-target.js";
import { EXIT, exitCodeFor, UsageError } from "./exit-codes.js";
import { COMMANDS, GLOBAL, HELP, splitArgs } from "./ferry-usage.js";
import { printError, runMain } from "./main.js";

/** `--to`/`--from`: restic:REPO or borg:REPO. */
function targetOf(target: string, flag: string): { tool: "restic" | "borg"; repo: string } {
  const m = /^(restic|borg):(.+)$/s.exec(target);
  if (m === null) throw new UsageError(`${flag} takes restic:REPO or borg:REPO`);
  return { tool: m[1] as "restic" | "borg", repo: m[2] as string };
}

function keepCount(v: unknown, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !/^(-1|[0-9]{1,9})$/.test(v)) {
    throw new UsageError(`--${name} takes a whole number (or -1 for unlimited)`);
  }
  return Number(v);
}

async function main(): Promise<number> {
  const split = splitArgs(process.argv.slice(2));
  let global: { socket?: string; help?: boolean; version?: boolean };
  try {
    global = parseArgs({ args: split.global, options: GLOBAL, strict: true })
      .values as typeof global;
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  if (global.help || (split.command === undefined && !global.version)) {
    process.stdout.write(HELP);
    return split.command === undefined && !global.help ? EXIT.USAGE : EXIT.OK;
  }
  if (global.version || split.command === undefined) {
    // `ferry --version`: the client's own version, whether or not ferryd runs.
    process.stdout.write(`ferry ${VERSION}\n`);
    return EXIT.OK;
  }
  const command = split.command;
  const options = COMMANDS[command];
  if (options === undefined) throw new UsageError(`unknown command ${JSON.stringify(command)}`);
  let parsed: { values: Record<string, unknown>; positionals: string[] };
  try {
    parsed = parseArgs({
      args: split.rest,
      options: { ...options, socket: { type: "string" }, help: { type: "boolean", short: "h" } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = parsed.values;
  if (v.help) {
    process.stdout.write(HELP);
    return EXIT.OK;
  }
  const client = new FerryClient(
    clientOptionsFromEnv((v.socket as string | undefined) ?? global.socket),
  );
  const pos = parsed.positionals;
  const want = (n: number, what: string) => {
    if (pos.length !== n) throw new UsageError(`${command} takes ${what}`);
  };

  const ro: RepoOptions = {
    repo: v.repo as string | undefined,
    passwordFile: v["password-file"] as string | undefined,
    passwordCommand: v["password-command"] as string | undefined,
    json: v.json === true,
  };

  switch (command) {
    case "init":
      want(0, "no arguments");
      return initCommand(ro, v["insecure-no-password"] === true);
    case "backup": {
      if (v.all === true && pos.length > 0)
        throw new UsageError("backup takes application names or --all, not both");
      if (v.all !== true && pos.length === 0)
        throw new UsageError("backup takes application names or --all");
      if (v.to !== undefined) {
        // restic and borg get complete archives only: they never ask ferryd for a delta.
        if (v["force-full"] === true)
          throw new UsageError("--force-full is for the repository, not --to");
        const t = targetOf(v.to as string, "--to");
        return (t.tool === "borg" ? backupToBorg : backupToRestic)(
          client,
          t.repo,
          v.all === true ? "all" : pos,
          (v.tag as string[] | undefined) ?? [],
          v.json === true,
        );
      }
      return backupCommand(
        client,
        ro,
        v.all === true ? "all" : pos,
        (v.tag as string[] | undefined) ?? [],
        v["force-full"] === true,
      );
    }
    case "snapshots":
      want(0, "no arguments");
      return snapshotsCommand(ro, v.app as string | undefined);
    case "ls":
      want(1, "one snapshot");
      return lsCommand(ro, pos[0] as string);
    case "dump":
      want(1, "one snapshot");
      return dumpCommand(ro, pos[0] as string);
    case "restore":
      want(1, "one snapshot");
      if (v.from !== undefined) {
        const t = targetOf(v.from as string, "--from");
        return (t.tool === "borg" ? restoreFromBorg : restoreFromRestic)(
          client,
          t.repo,
          pos[0] as string,
          v.json === true,
        );
      }
      return restoreCommand(client, ro, pos[0] as string);
    case "check":
      want(0, "no arguments");
      return checkCommand(ro, v["read-data"] === true);
    case "forget":
      want(0, "no arguments (snapshots are chosen by the --keep-* policy)");
      return forgetCommand(ro, {
        policy: {
          last: keepCount(v["keep-last"], "keep-last"),
          hourly: keepCount(v["keep-hourly"], "keep-hourly"),
          daily: keepCount(v["keep-daily"], "keep-daily"),
          weekly: keepCount(v["keep-weekly"], "keep-weekly"),
          monthly: keepCount(v["keep-monthly"], "keep-monthly"),
          yearly: keepCount(v["keep-yearly"], "keep-yearly"),
          tags: (v["keep-tag"] as string[] | undefined) ?? [],
        },
        app: v.app as string | undefined,
        dryRun: v["dry-run"] === true,
        prune: v.prune === true,
      });
    case "prune":
      want(0, "no arguments");
      return pruneCommand(ro, v["dry-run"] === true);
    case "apps":
      want(0, "no arguments");
      return appsCommand(client, v.json === true);
    case "export": {
      const output = v.output as string | undefined;
      if (v.all === true || pos.length > 1) {
        if (v.all === true && pos.length > 0) {
          throw new UsageError("export takes application names or --all, not both");
        }
        if (output === undefined)
          throw new UsageError("exporting several applications needs -o DIR");
        return exportManyCommand(client, v.all === true ? "all" : pos, output);
      }
      want(1, "one application name (or several, or --all, with -o DIR)");
      return exportCommand(client, { app: pos[0] as string, output });
    }
    case "jobs":
      want(0, "no arguments");
      return jobsCommand(client, v.json === true);
    case "cancel":
      want(1, "one job id");
      return cancelCommand(client, pos[0] as string);
    case "doctor": {
      want(0, "no arguments");
      const opts = clientOptionsFromEnv((v.socket as string | undefined) ?? global.socket);
      return doctorCommand(client, opts.socket);
    }
    case "import":
      want(1, "one application name");
      return importCommand(client, {
        app: pos[0] as string,
        input: v.input as string | undefined,
        dryRun: v["dry-run"] === true,
        yes: v.yes === true,
        keepOld: v["keep-old"] === true,
      });
    case "version":
      want(0, "no arguments");
      return versionCommand(client, v.json === true);
  }
  throw new UsageError(`unknown command ${JSON.stringify(command)}`);
}

/**
 * `ferry version`: ferry's own version always comes first, so it is known even when ferryd
 * is down. If ferryd cannot be asked, the reason follows on stderr (with its code) and the
 * exit status is that failure's: 4 when ferryd is unreachable, 3 when it refuses this
 * user. With --json the object is still printed, with `ferryd: null`.
 */
async function versionCommand(client: FerryClient, json: boolean): Promise<number> {
  if (!json) process.stdout.write(`ferry ${VERSION}\n`);
  let info: VersionInfo;
  try {
    info = await client.json<VersionInfo>("GET", "/v1/version");
  } catch (err) {
    if (json)
      process.stdout.write(`${JSON.stringify({ ferry: VERSION, ferryd: null }, null, 2)}\n`);
    printError("ferry", err);
    return exitCodeFor(err);
  }
  if (json) {
    process.stdout.write(`${JSON.stringify({ ferry: VERSION, ferryd: info }, null, 2)}\n`);
  } else {
    process.stdout.write(
      `ferryd ${info.version} (api ${info.api}) as ${info.user} (uid ${info.uid}), ` +
        `capabilities: ${info.capabilities.join(", ") || "none"}\ndrivers: ${info.drivers.join(", ")}\n`,
    );
  }
  return EXIT.OK;
}

runMain("ferry", main);
