/**
 * What `ferry` accepts: the help text, the options before the command word, and every
 * command's own options (node:util parseArgs specs). ferry.ts parses with them and runs
 * the command.
 */

export const HELP = `Usage: ferry [--socket PATH] COMMAND [ARGS]

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
  version [--json]           ferry's version, then ferryd's version, uid and capabilities
                             (ferry's is printed even when ferryd cannot be asked)
  init [--insecure-no-password]
                             create a repository (encrypted unless told otherwise)
  backup APP… | --all [--tag T]… [--force-full] [--to restic:REPO | --to borg:REPO]
                             one snapshot per application; goes on past failures; files
                             apps send only what changed since their latest snapshot
                             unless --force-full; with --to, each verified (complete)
                             archive piped to restic backup --stdin, or to borg
                             import-tar (archive APP-TIME, with a layout member that
                             gives the exact archive back)
  snapshots [--app A]        list the repository's snapshots
  ls SNAPSHOT                the entries of a snapshot, like tar -tv
  dump SNAPSHOT              the stored archive to stdout (as ferryd sent it; a completed
                             delta with a freshly computed end record)
  restore SNAPSHOT [--from restic:REPO | --from borg:REPO]
                             restore the snapshot's application through ferryd (from
                             borg: an archive name, or 'latest')
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
  --version       print ferry's own version and exit (ferryd is not contacted)
  -h, --help      this help

Exit codes: 0 ok, 1 failure, 2 usage, 3 refused by ferryd (or the socket's permissions),
4 ferryd unreachable, 130 interrupted.
`;

export type Options = Record<
  string,
  { type: "string" | "boolean"; short?: string; multiple?: boolean }
>;

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

export const COMMANDS: Record<string, Options> = {
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
    "force-full": { type: "boolean" },
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

export const GLOBAL: Options = {
  socket: { type: "string" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean" },
};

/** Splits argv at the command word, honouring `--socket VALUE` before it. */
export function splitArgs(argv: string[]): { global: string[]; command?: string; rest: string[] } {
  let i = 0;
  while (i < argv.length) {
    const a = argv[i] as string;
    if (a === "--socket") i += 2;
    else if (a.startsWith("-")) i += 1;
    else break;
  }
  return { global: argv.slice(0, i), command: argv[i], rest: argv.slice(i + 1) };
}
