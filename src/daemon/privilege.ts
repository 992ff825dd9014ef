/**
 * Becoming the service user: when ferryd is started as root with `--user NAME`, it replaces
 * itself (execve, same pid) with `setpriv`, which switches to NAME's uid, gid and groups,
 * keeps exactly the service capabilities as ambient capabilities (so they survive the exec
 * back into Node), drops every other capability from the bounding set and sets
 * no_new_privs. The result is a process with the backup user's identity and root's
 * operating rights for files — and nothing else.
 */
import koffi from "koffi";
import { SERVICE_CAPS } from "../core/caps.js";
import { FerryError } from "../core/errors.js";
import { libc } from "../core/libc.js";
import { setprivArgv } from "../core/setpriv.js";
import { closeRangeCloexec } from "../core/sys.js";
import type { UserInfo } from "../core/users.js";
import { listenFdCount } from "./systemd.js";

const execve = libc.func("int execve(const char *, const char **, const char **)");
const fcntl = libc.func("int fcntl(int, int, ...)");
const F_SETFD = 2;

export const DROPPED_ENV = "FERRYD_DROPPED";

/** Replaces this process with ferryd running as `user`; returns only on failure. */
export function execAsServiceUser(user: UserInfo, ferrydArgs: string[]): never {
  const argv = setprivArgv({ user, keep: SERVICE_CAPS, bounding: true }, [
    process.execPath,
    ...process.execArgv,
    ...ferrydArgs,
  ]);
  const setpriv = argv[0] as string;
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
  Object.assign(env, { [DROPPED_ENV]: "1", HOME: user.home, USER: user.name, LOGNAME: user.name });
  const envp = Object.entries(env).map(([k, v]) => `${k}=${v}`);
  // Node marks its inherited stdio close-on-exec at start-up; the new image needs them.
  // So are systemd's socket-activation descriptors (3…), which must survive the exec too.
  // Every other descriptor stays close-on-exec (markInheritedCloexec ran at start-up).
  const inherited = [0, 1, 2];
  for (let i = 0; i < listenFdCount(); i++) inherited.push(3 + i);
  for (const fd of inherited) fcntl(fd, F_SETFD, "int", 0);
  execve(setpriv, [...argv, null], [...envp, null]);
  throw new FerryError(
    "PRIVILEGE_SETUP_FAILED",
    `could not execute ${setpriv} (errno ${koffi.errno()}) to switch to user ${user.name}`,
  );
}

/**
 * Marks every descriptor ferryd inherited from 3 up close-on-exec, except systemd's
 * socket-activation descriptors (3 … 3+LISTEN_FDS-1): whatever the starting process
 * leaked must not reach a helper, which runs as an application's user. Call first thing
 * at start-up, before any descriptor of ferryd's own is opened.
 */
export function markInheritedCloexec(): void {
  closeRangeCloexec(3 + listenFdCount());
}
