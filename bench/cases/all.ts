/**
 * Every case, in the order they run. repo-1pct changes the small tree, so it is last.
 */
import { exportCase } from "./export.js";
import { importCase } from "./import.js";
import { postgresCase } from "./postgres.js";
import { repoCase } from "./repo.js";
import { clientRssCase, rssCase } from "./rss.js";
import type { BenchCase } from "./types.js";

export const CASES: readonly BenchCase[] = [
  exportCase("big"),
  exportCase("small"),
  importCase("big"),
  importCase("small"),
  postgresCase,
  rssCase,
  clientRssCase,
  repoCase("first"),
  repoCase("unchanged"),
  repoCase("1pct"),
];
