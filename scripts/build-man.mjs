#!/usr/bin/env node
/**
 * Builds the man pages: each docs/man/NAME.SECTION.md (the one source of that page)
 * through marked-man (a devDependency, pinned in npm-shrinkwrap.json) into
 * dist/man/NAME.SECTION (or OUTDIR/NAME.SECTION with `node scripts/build-man.mjs OUTDIR`).
 * `npm run man`; `npm pack` runs it (prepack), and so does `npm run deb`, which ships them
 * under /usr/share/man.
 *
 * The page's date is SOURCE_DATE_EPOCH when set (reproducible builds), else the time of
 * the last commit, else now; its version is package.json's.
 */
import { execFileSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = join(dirname(fileURLToPath(import.meta.url)), "..");
const src = join(root, "docs", "man");
const out = process.argv[2] ?? join(root, "dist", "man");
const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const markedMan = join(
  dirname(createRequire(import.meta.url).resolve("marked-man/package.json")),
  "bin",
  "marked-man.js",
);

function sourceDate() {
  if (process.env.SOURCE_DATE_EPOCH) return process.env.SOURCE_DATE_EPOCH;
  try {
    return execFileSync("git", ["log", "-1", "--format=%ct"], {
      cwd: root,
      encoding: "utf8",
      stdio: ["ignore", "pipe", "ignore"],
    }).trim();
  } catch {
    return String(Math.floor(Date.now() / 1000));
  }
}

const epoch = sourceDate();
mkdirSync(out, { recursive: true });
const pages = readdirSync(src).filter((f) => /^[a-z.]+\.[1-8]\.md$/.test(f));
if (pages.length === 0) throw new Error(`no man page sources in ${src}`);
for (const page of pages.sort()) {
  const target = join(out, page.slice(0, -".md".length));
  execFileSync(
    process.execPath,
    [
      markedMan,
      "--version",
      version,
      "--manual",
      "Ferry Manual",
      "--no-breaks",
      "-o",
      target,
      join(src, page),
    ],
    { env: { ...process.env, SOURCE_DATE_EPOCH: epoch }, stdio: ["ignore", "inherit", "inherit"] },
  );
  if (statSync(target).size === 0) throw new Error(`${target}: empty man page`);
  process.stdout.write(`${target}\n`);
}
