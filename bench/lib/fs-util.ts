/** Small filesystem helpers for the cases: sizes and counts of trees. */
import { lstatSync, readdirSync } from "node:fs";
import { join } from "node:path";

/** Apparent size of every regular file below `root`, and how many there are. */
export function treeStats(root: string): { files: number; bytes: number } {
  let files = 0;
  let bytes = 0;
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (e.isFile()) {
        files++;
        bytes += lstatSync(p).size;
      }
    }
  };
  walk(root);
  return { files, bytes };
}
