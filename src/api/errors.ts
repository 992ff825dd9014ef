/**
 * The one catalogue of Ferry's error codes. Every code that crosses the socket or ends a
 * command is listed here with its HTTP status, its CLI exit class and what it means;
 * test/api/errors.test.ts checks that each is documented in docs/errors.md.
 *
 * This module imports nothing else of Ferry. It is longer than 300 lines on purpose: it
 * is one table, read (and reviewed) as a whole, and docs/errors.md is generated from it.
 */

/** How a code ends a `ferry`/`ferryd` command; the numbers are in src/cli/exit-codes.ts. */
export type ExitClass = "failure" | "usage" | "refused" | "unreachable";

export interface ErrorSpec {
  status: number;
  exit: ExitClass;
  description: string;
}

export const ERRORS = {
  BAD_REQUEST: { status: 400, exit: "usage", description: "The request is malformed." },
  NOT_FOUND: { status: 404, exit: "failure", description: "No such API path." },
  METHOD_NOT_ALLOWED: {
    status: 405,
    exit: "failure",
    description: "The API path exists but not for this method.",
  },
  APP_NOT_FOUND: {
    status: 404,
    exit: "failure",
    description: "No application of that name is declared in ferryd's config.",
  },
  PEER_REJECTED: {
    status: 403,
    exit: "refused",
    description:
      "ferryd closed the connection because the peer's uid (SO_PEERCRED) is neither its own nor listed in `clients`.",
  },
  SOCKET_ACCESS_DENIED: {
    status: 403,
    exit: "refused",
    description: "The operating system refused access to ferryd's socket (its directory is 0700).",
  },
  SERVICE_UNREACHABLE: {
    status: 503,
    exit: "unreachable",
    description: "No ferryd answers on the socket.",
  },
  RESTORE_NOT_ALLOWED: {
    status: 403,
    exit: "refused",
    description: "The application's config does not say `restore = true`.",
  },
  APP_BUSY: {
    status: 409,
    exit: "failure",
    description: "A backup or restore of this application is already running.",
  },
  TOO_MANY_JOBS: {
    status: 503,
    exit: "failure",
    description: "ferryd already runs `limits.max_jobs` backups and restores; try again later.",
  },
  TOO_MANY_STREAMS: {
    status: 503,
    exit: "failure",
    description:
      "ferryd already serves the most `GET /v1/events` streams it allows (per peer uid, or in all); close one and try again.",
  },
  JOB_NOT_FOUND: {
    status: 404,
    exit: "failure",
    description: "No running or recently finished job has that id.",
  },
  JOB_TIMEOUT: {
    status: 504,
    exit: "failure",
    description: "The backup or restore ran past `limits.job_timeout` and was cancelled.",
  },
  CLIENT_TIMEOUT: {
    status: 408,
    exit: "failure",
    description:
      "The client stopped reading or sending for longer than `limits.idle_timeout`; the job was cancelled.",
  },
  PAYLOAD_TOO_LARGE: {
    status: 413,
    exit: "usage",
    description:
      "A request body over `limits.max_body_bytes` was sent to an endpoint that takes no archive.",
  },
  SHUTTING_DOWN: {
    status: 503,
    exit: "unreachable",
    description: "ferryd is stopping and takes no new work.",
  },
  CONFIG_INVALID: {
    status: 500,
    exit: "usage",
    description: "The config file is missing, unreadable or does not match the schema.",
  },
  CONFIG_UNSAFE: {
    status: 500,
    exit: "usage",
    description:
      "The config file or a directory on its path (the link's or the real one) is owned or writable by ferryd's own uid while ferryd holds capabilities; or a file the config names (password_file) is not a regular root-owned file with one link, writable only by root, in directories only root can write.",
  },
  CODE_UNSAFE: {
    status: 500,
    exit: "usage",
    description:
      "ferryd holds capabilities but its code (package directory, dist, node_modules, package.json, node, setpriv, or a directory above them) is owned by a user other than root or writable by group or others; install it root-owned as docs/ops.md shows.",
  },
  BAD_RESPONSE: {
    status: 502,
    exit: "failure",
    description:
      "ferry could not understand ferryd's answer (not JSON, too large, or an error code this ferry does not know: update ferry to ferryd's version).",
  },
  CONNECTION_LOST: {
    status: 502,
    exit: "unreachable",
    description:
      "The connection to ferryd closed before its answer was complete (ferryd stopped or restarted, or the inherited FERRY_FD connection was closed).",
  },
  STATE_DIR_UNSAFE: {
    status: 500,
    exit: "failure",
    description:
      "ferryd's state directory (journals, spools) or a directory above it is not root-owned 0700, or is owned or writable by ferryd's own uid, while ferryd holds capabilities.",
  },
  SOCKET_UNSAFE: {
    status: 500,
    exit: "failure",
    description:
      "The socket path or its directory is not ferryd's to use (wrong owner, not a socket, or a symlink).",
  },
  ROOT_REFUSED: {
    status: 500,
    exit: "usage",
    description: "ferryd would run as uid 0; start it with --user NAME, or pass --allow-root.",
  },
  PRIVILEGE_SETUP_FAILED: {
    status: 500,
    exit: "failure",
    description: "ferryd could not switch to the service user with its capabilities.",
  },
  SOURCE_UNREADABLE: {
    status: 500,
    exit: "failure",
    description: "A declared path could not be opened or read.",
  },
  SOURCE_CHANGED: {
    status: 500,
    exit: "failure",
    description:
      "A path was replaced (for example by a symlink) while ferryd read it; ferryd refused to follow it.",
  },
  BACKUP_FAILED: {
    status: 500,
    exit: "failure",
    description: "The backup failed after the archive started streaming; it has no end record.",
  },
  ARCHIVE_TRUNCATED: {
    status: 400,
    exit: "failure",
    description: "The archive ended before its end record: it is incomplete and must not be used.",
  },
  ARCHIVE_INVALID: {
    status: 400,
    exit: "failure",
    description: "The archive is not a well-formed Ferry archive (bad header, checksum or field).",
  },
  ARCHIVE_CHECKSUM_MISMATCH: {
    status: 400,
    exit: "failure",
    description: "The payload's SHA-256, length or entry count differs from the end record.",
  },
  HELPER_FAILED: {
    status: 502,
    exit: "failure",
    description:
      "A helper program (dump tool, command, hook; restic or borg for ferry's `--to`/`--from`) could not start (a program that is not installed is named with its Debian package), exited non-zero or produced no data; the message carries its stderr.",
  },
  HELPER_TIMEOUT: {
    status: 504,
    exit: "failure",
    description: "A helper program ran past the application's `timeout` and was killed.",
  },
  ARCHIVE_FOREIGN: {
    status: 400,
    exit: "failure",
    description:
      "The archive was made for another application, driver or set of paths; nothing was changed.",
  },
  ARCHIVE_UNSAFE: {
    status: 400,
    exit: "failure",
    description:
      "The archive names something a restore must never create (a path outside the application, '..', a link escaping it, a device node, a name over the limits…); nothing was changed.",
  },
  READ_ONLY_FILESYSTEM: {
    status: 500,
    exit: "failure",
    description:
      "ferryd could not write where a restore, journal or spool must (EROFS); the message names the directory. Under systemd the usual cause is a directory missing from ferryd.service's `ReadWritePaths=` (the parent of each restorable `paths` entry, the directory of each restorable sqlite `path`): add it in a drop-in and restart ferryd. Nothing was changed.",
  },
  PERMISSION_DENIED: {
    status: 500,
    exit: "failure",
    description:
      "ferryd was refused by the operating system (EACCES, EPERM) in the directory the message names: check that it holds its capabilities (`ferry doctor`), the directory's owner and mode, and immutable attributes. Nothing was changed.",
  },
  DISK_FULL: {
    status: 507,
    exit: "failure",
    description:
      "No space left (ENOSPC, or a quota: EDQUOT) on the filesystem of the directory the message names; a files restore needs room for a full copy beside the live data. Free space and try again; nothing was changed.",
  },
  OUTPUT_NOT_WRITABLE: {
    status: 400,
    exit: "usage",
    description:
      "`ferry export -o PATH`: PATH cannot be written (its directory is missing, read-only or not writable by you, or PATH is a directory where a file is needed); checked before anything is asked of ferryd, so no hook ran.",
  },
  INPUT_NOT_READABLE: {
    status: 400,
    exit: "usage",
    description:
      "`ferry import -i PATH`: PATH is missing, not a regular file, or not readable by you; checked before anything is sent to ferryd, so no hook ran.",
  },
  RESTORE_FAILED: {
    status: 500,
    exit: "failure",
    description: "The restore could not be completed; the live data was left as it was.",
  },
  AGENT_UNREACHABLE: {
    status: 502,
    exit: "failure",
    description:
      "The application's agent does not answer on its socket (no socket, nothing listening, or a symlink on the way, which ferryd never follows).",
  },
  AGENT_IMPOSTOR: {
    status: 502,
    exit: "failure",
    description:
      "The process on the agent socket does not run as the application's configured owner (SO_PEERCRED), or the socket belongs to someone else; nothing was sent to it or accepted from it.",
  },
  AGENT_TIMEOUT: {
    status: 504,
    exit: "failure",
    description:
      "The application's agent did not answer a protocol step in time; `finish` was still sent if `prepare` had succeeded.",
  },
  AGENT_FAILED: {
    status: 502,
    exit: "failure",
    description:
      "The application's agent reported an error (its code and message are in this message).",
  },
  AGENT_PROTOCOL_ERROR: {
    status: 502,
    exit: "failure",
    description:
      "The application's agent broke the agent protocol (docs/agent-protocol.md): a bad status, header, JSON body, tar stream or trailer.",
  },
  REPO_NOT_FOUND: {
    status: 404,
    exit: "failure",
    description:
      "No Ferry repository at the path given with --repo or FERRY_REPO (create one with `ferry init`).",
  },
  REPO_EXISTS: {
    status: 409,
    exit: "failure",
    description: "`ferry init` was pointed at a directory that already holds a repository.",
  },
  REPO_FORMAT_UNSUPPORTED: {
    status: 400,
    exit: "failure",
    description:
      "The repository (or one of its files) has a format version this ferry does not read; upgrade ferry (docs/repository.md).",
  },
  REPO_WRONG_PASSWORD: {
    status: 403,
    exit: "refused",
    description: "No key file of the repository opens with the password given.",
  },
  PASSWORD_REQUIRED: {
    status: 400,
    exit: "usage",
    description:
      "The repository is encrypted and no password was given (FERRY_PASSWORD, --password-file, --password-command, or a terminal).",
  },
  REPO_UNENCRYPTED: {
    status: 400,
    exit: "refused",
    description:
      "A password was given for a repository made with --insecure-no-password; ferry refuses rather than store data meant to be encrypted in plaintext.",
  },
  REPO_LOCKED: {
    status: 409,
    exit: "failure",
    description:
      "Another ferry holds a conflicting lock on the repository (prune needs it alone); stale locks of dead processes are removed automatically.",
  },
  REPO_CORRUPT: {
    status: 500,
    exit: "failure",
    description:
      "A repository file is damaged, missing, or fails authentication; `ferry check` names the affected snapshots.",
  },
  REPO_DELTA_UNRESOLVED: {
    status: 500,
    exit: "failure",
    description:
      "ferryd sent a delta (files unchanged since the app's latest snapshot) that the repository could not complete from that snapshot; nothing was stored. `ferry backup --force-full` asks for a full archive.",
  },
  SNAPSHOT_NOT_FOUND: {
    status: 404,
    exit: "failure",
    description: "No snapshot has that id (or id prefix), or the prefix is ambiguous.",
  },
  CANCELLED: { status: 499, exit: "failure", description: "The work was cancelled." },
  INTERNAL: {
    status: 500,
    exit: "failure",
    description: "An unexpected error; ferryd's log has the details.",
  },
} as const satisfies Record<string, ErrorSpec>;

export type ErrorCode = keyof typeof ERRORS;

/** The JSON body of every error response. */
export interface ErrorBody {
  error: { code: ErrorCode; message: string };
}

export function isErrorCode(code: unknown): code is ErrorCode {
  return typeof code === "string" && Object.hasOwn(ERRORS, code);
}
