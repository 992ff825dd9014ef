#!/usr/bin/env node
/**
 * ferryd's entry point. With capabilities (or as root), whoever can change the code ferryd
 * loads gets those rights, so the code is checked (src/daemon/code-check.ts) before any
 * other module of ferryd is loaded: this file and the check import nothing but Node's
 * built-ins, and the rest of ferryd (src/cli/ferryd-main.ts) is imported only once the
 * check passed. A check that ran after the imports would be too late: a planted module
 * would already have run, as root in the instance that then switches to the backup user.
 */
import { fstatSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { assertCodeSafe, CodeUnsafeError } from "../daemon/code-check.js";

/** Root, or any effective capability (read from the kernel's own report). */
function privileged(): boolean {
  if (process.getuid?.() === 0) return true;
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync("/proc/self/status", "utf8"));
    return m !== null && BigInt(`0x${m[1]}`) !== 0n;
  } catch {
    return true; // cannot tell: check
  }
}

/**
 * `<3>` (error) when stderr is the journal stream systemd announced (src/core/journal-stream.ts
 * has the rule; this file may import nothing of Ferry's before the check).
 */
function journalPrefix(): string {
  const m = /^(\d+):(\d+)$/.exec(process.env.JOURNAL_STREAM ?? "");
  if (m === null) return "";
  try {
    const st = fstatSync(2, { bigint: true });
    return st.dev === BigInt(m[1] as string) && st.ino === BigInt(m[2] as string) ? "<3>" : "";
  } catch {
    return "";
  }
}

if (privileged()) {
  // CommonJS require() also searches $HOME/.node_modules, $HOME/.node_libraries and
  // $NODE_PATH when a package is missing (debug, under ioredis, probes for supports-color):
  // with HOME the backup user's (systemd's User=, or the --user switch), the backup user
  // could plant a module that ferryd would run with its capabilities. Those search paths
  // are recomputed from root's own home here, before anything else loads; the environment
  // itself is left as it was (a `ferryd run` command keeps its HOME).
  const saved = { HOME: process.env.HOME, NODE_PATH: process.env.NODE_PATH };
  process.env.HOME = "/";
  delete process.env.NODE_PATH;
  (createRequire(import.meta.url)("node:module") as { _initPaths(): void })._initPaths();
  for (const [k, v] of Object.entries(saved)) if (v !== undefined) process.env[k] = v;
  try {
    assertCodeSafe(process.getuid?.() ?? -1);
  } catch (err) {
    const code = err instanceof CodeUnsafeError ? err.code : "INTERNAL";
    process.stderr.write(`${journalPrefix()}ferryd: ${(err as Error).message} [${code}]\n`);
    // CODE_UNSAFE is a setup problem, like an invalid config: exit 2 (src/api/errors.ts).
    process.exit(err instanceof CodeUnsafeError ? 2 : 1);
  }
}
await import("./ferryd-main.js");
