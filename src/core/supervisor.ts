/**
 * The helper supervisor: a tiny process that runs as the application's user between
 * ferryd and each helper (dump tool, command, hook), so that ferryd can always stop what it
 * starts.
 *
 * Why it exists: ferryd runs as the backup user B and must not hold CAP_KILL (with it, B's
 * service could signal any process), and the kernel does not let uid B signal a process of
 * the application's uid. Nor does PR_SET_PDEATHSIG help: the kernel checks that signal
 * against the dying parent's credentials, so a helper of another uid outlives ferryd. The
 * supervisor has the helper's own uid, so it may signal it, and it listens to ferryd over a
 * pipe, which the kernel closes for ferryd whatever way ferryd ends.
 *
 * Protocol (docs/security.md, "ferryd can always stop what it starts"):
 * - started as `node supervisor.js [--stdin] -- PROGRAM ARGS…` (PROGRAM absolute),
 *   already running as the helper's user with no capabilities (setpriv does that);
 * - fd 0 is the control pipe from ferryd; fd 1 and 2 are the helper's stdout and stderr;
 *   with `--stdin`, fd 3 is the helper's stdin;
 * - the helper runs in a new session and process group; the control pipe never reaches it;
 * - a byte `T` on the control pipe sends SIGTERM to the helper's process group, `K`
 *   SIGKILL; end of file (ferryd closed it, or ferryd died) sends SIGKILL;
 * - when the helper exits, whatever is left of its process group is killed, and the
 *   supervisor ends the same way the helper did (same exit status, or same signal).
 *
 * It imports nothing but Node's built-ins, and is run from ferryd's own root-owned code.
 */
import { spawn } from "node:child_process";
import { closeSync } from "node:fs";
import { constants } from "node:os";

function main(): void {
  const args = process.argv.slice(2);
  const dashdash = args.indexOf("--");
  const flags = dashdash < 0 ? [] : args.slice(0, dashdash);
  const command = dashdash < 0 ? [] : args.slice(dashdash + 1);
  const [program, ...rest] = command;
  if (program === undefined || !program.startsWith("/")) {
    process.stderr.write("ferry supervisor: usage: supervisor [--stdin] -- /PROGRAM ARGS…\n");
    process.exit(127);
  }
  const withStdin = flags.includes("--stdin");

  const child = spawn(program, rest, {
    stdio: [withStdin ? 3 : "ignore", 1, 2],
    detached: true, // setsid(): the helper and its children form one process group
    env: process.env,
    cwd: process.cwd(),
  });
  // Our copy of the helper's stdin would keep it open after the helper exits.
  if (withStdin) closeSync(3);

  const group = (sig: NodeJS.Signals) => {
    if (child.pid === undefined) return;
    try {
      process.kill(-child.pid, sig);
    } catch {
      // ESRCH: nothing left of the group.
    }
  };

  let exited = false;
  process.stdin.on("data", (chunk: Buffer) => {
    if (exited) return;
    if (chunk.includes(0x4b /* K */)) group("SIGKILL");
    else if (chunk.includes(0x54 /* T */)) group("SIGTERM");
  });
  const ferrydGone = () => group("SIGKILL");
  process.stdin.on("end", ferrydGone);
  process.stdin.on("close", ferrydGone);
  process.stdin.on("error", ferrydGone);

  child.on("error", (err) => {
    process.stderr.write(`ferry supervisor: cannot start ${program}: ${err.message}\n`);
    process.exit(127);
  });
  child.on("exit", (code, signal) => {
    exited = true;
    group("SIGKILL"); // no process of the helper's outlives it
    if (signal !== null) {
      // End the way the helper ended, so ferryd reports the same thing; signals Node
      // ignores or handles itself fall back to the shell's convention.
      process.removeAllListeners(signal);
      try {
        process.kill(process.pid, signal);
      } catch {}
      setTimeout(() => process.exit(128 + (constants.signals[signal] ?? 0)), 200).unref();
      return;
    }
    process.exit(code ?? 1);
  });
}

main();
