/**
 * The code check (sshd's StrictModes, for ferryd's own code): with capabilities, ferryd
 * refuses to start when anyone but root could change the code it runs — its package
 * directory, `package.json`, `dist/` and `node_modules/` (recursively, and every
 * dependency wherever it was installed), the `node` binary, `setpriv`, and every directory
 * above each of them. Whoever can write any of these can make ferryd run their code with
 * its capabilities: started from a clone owned by the backup user, ferryd would hand that
 * user root's file rights.
 *
 * Each path is judged with lstat: it must be owned by root and writable by no group and
 * no other. A sticky directory (like /tmp) above is fine when the entry below is root's.
 * A symlink is not judged itself (nobody can change a link, only replace it, which its
 * directory's rule already covers); its target is judged like the rest. POSIX ACLs are not
 * consulted.
 */
import {
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  realpathSync,
  type Stats,
} from "node:fs";
import { createRequire } from "node:module";
import { dirname, join, sep } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The check's own error. This module runs before any other module of ferryd is loaded
 * (src/cli/ferryd.ts), so it imports nothing but Node's built-ins: anything else it
 * imported would run before it could be checked. The entry point reports it the way
 * every ferryd error is reported, with the catalogue's code CODE_UNSAFE.
 */
export class CodeUnsafeError extends Error {
  readonly code = "CODE_UNSAFE";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CodeUnsafeError";
  }
}

/** Where setpriv may be (src/core/setpriv.ts looks in the same places). */
const SETPRIV = ["/usr/bin/setpriv", "/bin/setpriv", "/usr/sbin/setpriv", "/sbin/setpriv"];

const ADVICE =
  "Anyone who can change ferryd's code gets its capabilities. Install ferryd root-owned and " +
  "not writable by group or others, as docs/ops.md shows (the Debian package does; for a tarball install " +
  "`chown -R root:root /usr/local/lib/ferry && chmod -R go-w /usr/local/lib/ferry`, and node from a " +
  "root-owned package), then start it again.";

/** The directory holding ferryd's package.json (found from this module's own location). */
export function packageDir(from: string = fileURLToPath(import.meta.url)): string {
  let dir = dirname(from);
  for (;;) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "dist"))) return dir;
    const up = dirname(dir);
    if (up === dir) {
      throw new CodeUnsafeError(`cannot find ferryd's package directory above ${from}`);
    }
    dir = up;
  }
}

class Checker {
  private readonly done = new Set<string>();
  private readonly trees: string[] = [];
  checked = 0;

  constructor(private readonly uid: number) {}

  private reason(st: Stats, childOwner?: number): string | undefined {
    if (st.isSymbolicLink()) return undefined;
    if (st.uid !== 0) {
      return st.uid === this.uid
        ? `owned by ferryd's own uid ${st.uid}`
        : `owned by uid ${st.uid}, not root`;
    }
    if ((st.mode & 0o022) !== 0) {
      const shielded = st.isDirectory() && (st.mode & 0o1000) !== 0 && childOwner === 0;
      if (!shielded) {
        return `writable by its group or by everyone (mode ${(st.mode & 0o7777).toString(8)})`;
      }
    }
    return undefined;
  }

  private fail(path: string, why: string): never {
    throw new CodeUnsafeError(`refusing to run with capabilities: ${path} is ${why}. ${ADVICE}`);
  }

  private lstat(path: string): Stats {
    try {
      return lstatSync(path);
    } catch (err) {
      throw new CodeUnsafeError(
        `cannot check ferryd's code at ${path}: ${(err as Error).message}`,
        { cause: err },
      );
    }
  }

  /** Every directory above `path` (from `/`), judged with the owner of the entry below. */
  private ancestors(path: string): void {
    let child = this.lstat(path);
    let p = path;
    while (p !== "/") {
      const up = dirname(p);
      const st = this.lstat(up);
      const why = this.reason(st, child.uid);
      if (why !== undefined) this.fail(up, why);
      child = st;
      p = up;
    }
  }

  private covered(path: string): boolean {
    return this.trees.some((t) => path === t || path.startsWith(t + sep));
  }

  /**
   * A place Node may load code from that does not exist (yet): whoever can create it
   * could plant a module there, so its nearest existing directory and everything above
   * must be root's alone.
   */
  checkAbsent(path: string): void {
    let p = path;
    while (!existsSync(p)) p = dirname(p);
    const why = this.reason(this.lstat(p));
    if (why !== undefined) this.fail(p, why);
    this.ancestors(p);
  }

  /** `path` (file or whole tree) and the directories above it. */
  check(path: string): void {
    const real = realpathSync(path);
    if (this.covered(real)) return;
    this.ancestors(real);
    this.trees.push(real);
    this.walk(real);
  }

  private walk(path: string): void {
    if (this.done.has(path)) return;
    this.done.add(path);
    const st = this.lstat(path);
    this.checked++;
    if (st.isSymbolicLink()) {
      let target: string;
      try {
        target = realpathSync(path);
      } catch {
        return; // a dangling link loads nothing
      }
      if (!this.covered(target)) this.check(target);
      return;
    }
    const why = this.reason(st);
    if (why !== undefined) this.fail(path, why);
    if (!st.isDirectory()) return;
    for (const name of readdirSync(path)) this.walk(join(path, name));
  }
}

/** The package directories of ferryd's runtime dependencies, wherever node resolves them. */
function dependencyDirs(pkg: string): string[] {
  let deps: Record<string, string> = {};
  try {
    deps = JSON.parse(readFileSync(join(pkg, "package.json"), "utf8")).dependencies ?? {};
  } catch (err) {
    throw new CodeUnsafeError(`cannot read ${join(pkg, "package.json")}: ${err}`, {
      cause: err,
    });
  }
  const out: string[] = [];
  for (const name of Object.keys(deps)) {
    let file: string;
    try {
      file = fileURLToPath(import.meta.resolve(name));
    } catch {
      continue; // not installed: ferryd would fail to load it anyway
    }
    for (let dir = dirname(file); dir !== dirname(dir); dir = dirname(dir)) {
      if (existsSync(join(dir, "package.json"))) {
        try {
          if (JSON.parse(readFileSync(join(dir, "package.json"), "utf8")).name === name) {
            out.push(dir);
            break;
          }
        } catch {
          // not the package's own package.json; keep going up
        }
      }
    }
  }
  return out;
}

/**
 * Refuses (CODE_UNSAFE) when ferryd's code, node, setpriv or a directory above any of them
 * is owned by a uid other than root or writable by group or others. `uid` is ferryd's own
 * (named in the message when it is the owner). Returns how many paths were checked.
 */
export function assertCodeSafe(uid: number, pkg: string = packageDir()): number {
  const c = new Checker(uid);
  c.check(join(pkg, "package.json"));
  for (const sub of ["dist", "node_modules"]) {
    if (existsSync(join(pkg, sub))) c.check(join(pkg, sub));
  }
  // (The package directory itself was judged as the directory above package.json.)
  for (const dep of dependencyDirs(pkg)) c.check(dep);
  c.check(process.execPath);
  for (const p of SETPRIV) if (existsSync(p)) c.check(p);
  // The folders CommonJS require() searches when a package is not found in node_modules
  // ($HOME/.node_modules, $HOME/.node_libraries, $PREFIX/lib/node): a dependency that
  // probes for an optional module (debug → supports-color) would load a planted one.
  // src/cli/ferryd.ts resets them to root's before anything loads; they are judged too.
  for (const p of (createRequire(import.meta.url)("node:module") as { globalPaths: string[] })
    .globalPaths) {
    if (existsSync(p)) c.check(p);
    else c.checkAbsent(p);
  }
  return c.checked;
}
