/**
 * The one place that builds a `setpriv` (util-linux) command line. ferryd changes
 * identity or sheds capabilities in three situations, all through this module:
 *
 * - becoming the service user at start (`execAsServiceUser`): switch to B, keep exactly
 *   the service capabilities as ambient (so they survive the exec back into Node), shrink
 *   the bounding set to them;
 * - starting a helper as an application's user (src/core/spawn.ts): switch to that user,
 *   keep no capability at all;
 * - `ferryd run -- COMMAND`: stay B, keep no capability at all.
 *
 * Every line ends in `--nnp` (no_new_privs: no set-uid or file-capability binary can give
 * anything back) and `--` before the command, so nothing of the command is read as an
 * option of setpriv.
 */
import { accessSync, constants } from "node:fs";
import { FerryError } from "./errors.js";

/** What the new process is. */
export interface DropSpec {
  /** Switch to this uid/gid with its supplementary groups; omitted: stay as we are. */
  user?: { uid: number; gid: number };
  /** Capabilities to keep as inheritable and ambient (names as in caps.ts); [] = none. */
  keep: readonly string[];
  /**
   * Also shrink the bounding set to `keep`. Needs CAP_SETPCAP, which only root has, so
   * only the root → service-user switch does it; with empty permitted, inheritable and
   * ambient sets and no_new_privs nothing can be regained anyway.
   */
  bounding?: boolean;
}

let found: string | undefined;

/** The setpriv binary (looked up once, in the system directories only). */
export function findSetpriv(): string {
  if (found !== undefined) return found;
  for (const p of ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv", "/sbin/setpriv"]) {
    try {
      accessSync(p, constants.X_OK);
      found = p;
      return p;
    } catch {}
  }
  throw new FerryError(
    "PRIVILEGE_SETUP_FAILED",
    "setpriv (util-linux) is not installed; ferryd needs it to change identity and drop capabilities",
  );
}

/** The full argv (setpriv first) that runs `command` as `spec` says. */
export function setprivArgv(spec: DropSpec, command: readonly string[]): string[] {
  const list = spec.keep.map((c) => `+${c}`).join(",");
  const keep = list === "" ? "-all" : `-all,${list}`;
  return [
    findSetpriv(),
    ...(spec.user === undefined
      ? []
      : [`--reuid=${spec.user.uid}`, `--regid=${spec.user.gid}`, "--init-groups"]),
    `--inh-caps=${keep}`,
    `--ambient-caps=${keep}`,
    ...(spec.bounding === true ? [`--bounding-set=${keep}`] : []),
    "--nnp",
    "--",
    ...command,
  ];
}
