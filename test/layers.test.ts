/**
 * The layers of docs/design.md, enforced over the import graph of src/ (static imports,
 * `export … from` and dynamic `import("…")`, read from the TypeScript sources):
 *
 *   api < core < agent < drivers < daemon, repo < cli
 *
 * A module may import its own folder's modules and any lower layer, never a higher one;
 * daemon and repo never import each other. And `ferry` (src/cli/ferry.ts) never loads a
 * module of the daemon or of a driver: the backup software's client must not carry
 * ferryd's code (or its dependencies) with it.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { test } from "node:test";
import { ROOT } from "./helpers/proc.js";

const SRC = join(ROOT, "src");
const RANK: Record<string, number> = {
  api: 0,
  core: 1,
  agent: 2,
  drivers: 3,
  daemon: 4,
  repo: 4,
  cli: 5,
};

function sources(dir: string): string[] {
  const out: string[] = [];
  for (const n of readdirSync(dir)) {
    const p = join(dir, n);
    if (statSync(p).isDirectory()) out.push(...sources(p));
    else if (n.endsWith(".ts")) out.push(p);
  }
  return out;
}

/** src-relative path → the src-relative paths of the Ferry modules it imports. */
function graph(): Map<string, string[]> {
  const g = new Map<string, string[]>();
  const spec =
    /(?:^|[\s;])(?:import|export)\s[^"'`;]*?from\s+["']([^"']+)["']|import\(\s*["']([^"']+)["']\s*\)|^import\s+["']([^"']+)["']/gm;
  for (const file of sources(SRC)) {
    const text = readFileSync(file, "utf8");
    const deps: string[] = [];
    for (const m of text.matchAll(spec)) {
      const s = m[1] ?? m[2] ?? m[3];
      if (s === undefined || !s.startsWith(".")) continue;
      deps.push(relative(SRC, normalize(join(dirname(file), s))).replace(/\.js$/, ".ts"));
    }
    g.set(relative(SRC, file), deps);
  }
  return g;
}

const layerOf = (p: string) => p.split("/")[0] as string;

test("layers point downwards only (cli → daemon/repo → drivers → agent → core → api)", () => {
  const problems: string[] = [];
  for (const [from, deps] of graph()) {
    const a = layerOf(from);
    for (const to of deps) {
      const b = layerOf(to);
      if (a === b) continue;
      if ((RANK[b] ?? 99) >= (RANK[a] ?? -1)) problems.push(`${from} imports ${to}`);
    }
  }
  assert.deepEqual(problems, []);
});

test("ferry loads no module of the daemon or of a driver", () => {
  const g = graph();
  const seen = new Set<string>();
  const todo = ["cli/ferry.ts"];
  const path = new Map<string, string>();
  while (todo.length > 0) {
    const m = todo.pop() as string;
    if (seen.has(m)) continue;
    seen.add(m);
    for (const d of g.get(m) ?? []) {
      if (!path.has(d)) path.set(d, m);
      todo.push(d);
    }
  }
  assert.ok(seen.size > 5, `the walk found only ${[...seen].join(", ")}`);
  const bad = [...seen].filter((m) => ["daemon", "drivers"].includes(layerOf(m)));
  const chain = (m: string): string => (path.has(m) ? `${chain(path.get(m) as string)} → ${m}` : m);
  assert.deepEqual(bad.map(chain), []);
});
