#!/usr/bin/env node
/**
 * ferry — the backup software's command line. See `ferry --help`.
 */
import { parseArgs } from "node:util";
import type { VersionInfo } from "../api/types.js";
import { VERSION } from "../core/version.js";
import { clientOptionsFromEnv, FerryClient } from "./client.js";
import { appsCommand } from "./commands/apps.js";
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
import { EXIT, UsageError } from "./exit-codes.js";
import { runMain } from "./main.js";

const HELP = `Usage: ferry [--socket PATH] COMMAND [ARGS]

Commands:
  apps [--json]              list the applications ferryd serves, with their health
  export APP [-o FILE]       write APP's archive to FILE (default: stdout), verified
  export APP… | --all -o DIR each application to DIR/APP.tar; goes on past failures
  import APP [-i FILE] [--dry-run] [--yes] [--keep-old]
                             restore APP from the archive in FILE (default: stdin); on a
                             terminal it asks first (--yes: do not ask); --dry-run shows
                             what would be added, removed and changed, changing nothing;
                             --keep-old keeps the replaced files tree beside the new one
  jobs [--json]              running and recent backups and restores
  cancel ID                  cancel a running job (helpers killed, post hooks run, restores rolled back)
  doctor                     check the socket, the peer check, ferryd's uid and capabilities,
                             each application's health and the space restores need
  version [--json]           show ferry's and ferryd's versions, ferryd's uid and capabilities
  init [--insecure-no-password]
                             create a repository (encrypted unless told otherwise)
  backup APP… | --all [--tag T]… [--to restic:REPO]
                             one snapshot per application; goes on past failures; with
                             --to, each verified archive piped to restic backup --stdin
  snapshots [--app A]        list the repository's snapshots
  ls SNAPSHOT                the entries of a snapshot, like tar -tv
  dump SNAPSHOT              the stored archive to stdout, byte for byte as ferryd sent it
  restore SNAPSHOT [--from restic:REPO]
                             restore the snapshot's application through ferryd
  check [--read-data]        verify the repository (and every blob with --read-data)
  forget --keep-{last,hourly,daily,weekly,monthly,yearly} N | --keep-tag T [--app A]
         [--dry-run] [--prune]
                             remove snapshots by restic's keep policies, per app
  prune [--dry-run]          remove unused data, repack mostly-empty packs

Repository commands (init … prune, docs/repository.md) take --repo PATH (default
$FERRY_REPO) and --json. SNAPSHOT is an id, a unique prefix of one (4+ hex digits), or
'latest'. The password: --password-file FILE, --password-command CMD, $FERRY_PASSWORD,
or a prompt on a terminal.

Options:
  --socket PATH   ferryd's socket (default $FERRY_SOCKET, else /run/ferry/ferry.sock);
                  when started by 'ferryd run', the inherited connection in $FERRY_FD
  -h, --help      this help

Exit codes: 0 ok, 1 failure, 2 usage, 3 refused by ferryd (or the socket's permissions),
4 ferryd unreachable, 130 interrupted.
`;

type Options = Record<string, { type: "string" | "boolean"; short?: string; multiple?: boolean }>;

const REPO: Options = {
  repo: { type: "string" },
  "password-file": { type: "string" },
  "password-command": { type: "string" },
  json: { type: "boolean" },
};
const KEEP: Options = {
  "keep-last": { type: "string" },
  "keep-hourly": { type: "string" },
  "keep-daily": { type: "string" },
  "keep-weekly": { type: "string" },
  "keep-monthly": { type: "string" },
  "keep-yearly": { type: "string" },
  "keep-tag": { type: "string", multiple: true },
};

const COMMANDS: Record<string, Options> = {
  apps: { json: { type: "boolean" } },
  export: { output: { type: "string", short: "o" }, all: { type: "boolean" } },
  jobs: { json: { type: "boolean" } },
  cancel: {},
  doctor: {},
  import: {
    input: { type: "string", short: "i" },
    "dry-run": { type: "boolean" },
    yes: { type: "boolean", short: "y" },
    "keep-old": { type: "boolean" },
  },
  version: { json: { type: "boolean" } },
  init: { ...REPO, "insecure-no-password": { type: "boolean" } },
  backup: {
    ...REPO,
    all: { type: "boolean" },
    tag: { type: "string", multiple: true },
    to: { type: "string" },
  },
  snapshots: { ...REPO, app: { type: "string" } },
  ls: REPO,
  dump: REPO,
  restore: { ...REPO, from: { type: "string" } },
  check: { ...REPO, "read-data": { type: "boolean" } },
  forget: {
    ...REPO,
    ...KEEP,
    app: { type: "string" },
    "dry-run": { type: "boolean" },
    prune: { type: "boolean" },
  },
  prune: { ...REPO, "dry-run": { type: "boolean" } },
};

function resticRepo(target: string, flag: string): string {
  if (!target.startsWith("restic:") || target.length <= "restic:".length) {
    throw new UsageError(`${flag} takes restic:REPO (borg is not supported yet)`);
  }
  return target.slice("restic:".length);
}

function keepCount(v: unknown, name: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== "string" || !/^(-1|[0-9]{1,9})$/.test(v)) {
    throw new UsageError(`--${name} takes a whole number (or -1 for unlimited)`);
  }
  return Number(v);
}

const GLOBAL: Options = {
  socket: { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
};

/** Splits argv at the command word, honouring `--socket VALUE` before it. */
function splitArgs(argv: string[]): { global: string[]; command?: string; rest: string[] } {
  let i = 0;
  while (i < argv.length) {
    const a = argv[i] as string;
    if (a === "--socket") i += 2;
    else if (a.startsWith("-")) i += 1;
    else break;
  }
  return { global: argv.slice(0, i), command: argv[i], rest: argv.slice(i + 1) };
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
  const command = split.command ?? "version";
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
        return backupToRestic(
          client,
          resticRepo(v.to as string, "--to"),
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
        return restoreFromRestic(
          client,
          resticRepo(v.from as string, "--from"),
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
    case "version": {
      want(0, "no arguments");
      const info = await client.json<VersionInfo>("GET", "/v1/version");
      if (v.json)
        process.stdout.write(`${JSON.stringify({ ferry: VERSION, ferryd: info }, null, 2)}\n`);
      else {
        process.stdout.write(
          `ferry ${VERSION}\nferryd ${info.version} (api ${info.api}) as ${info.user} (uid ${info.uid}), ` +
            `capabilities: ${info.capabilities.join(", ") || "none"}\ndrivers: ${info.drivers.join(", ")}\n`,
        );
      }
      return EXIT.OK;
    }
  }
  throw new UsageError(`unknown command ${JSON.stringify(command)}`);
}

runMain("ferry", main);
