/**
 * The man pages ferry(1), ferryd(8) and ferry.toml(5): each is built from its one source,
 * docs/man/NAME.SECTION.md, by scripts/build-man.mjs (marked-man, pinned); the result is
 * valid roff that groff renders without a warning, with the right title, section and
 * version; and the pages document every command and option the programs' --help shows.
 * The Debian package ships them (test/deploy/deb.test.ts).
 *
 * Needs groff (Debian package groff-base, installed by .ci/run). Bounds: three pages.
 */
import assert from "node:assert/strict";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { VERSION } from "../../src/core/version.js";
import { FERRY, FERRYD, ROOT } from "../helpers/proc.js";

/** Each page and its title as the roff source spells it (a dot escaped). */
const PAGES = { "ferry.1": "FERRY", "ferryd.8": "FERRYD", "ferry.toml.5": "FERRY\\.TOML" };
const groff = spawnSync("groff", ["--version"], { encoding: "utf8" });
const noGroff =
  groff.status === 0
    ? false
    : "groff is not installed (Debian package groff-base); man page checks skipped";

describe("man pages", () => {
  let out = "";
  before(() => {
    out = mkdtempSync(join(tmpdir(), "ferry-man-"));
    execFileSync(process.execPath, [join(ROOT, "scripts/build-man.mjs"), out], {
      stdio: ["ignore", "ignore", "pipe"],
      env: { ...process.env, SOURCE_DATE_EPOCH: "1700000000" },
    });
  });
  after(() => {
    if (out !== "") rmSync(out, { recursive: true, force: true });
  });

  test("one page per source, each with its title, section, date and version", () => {
    assert.deepEqual(readdirSync(out).sort(), Object.keys(PAGES).sort());
    for (const [page, title] of Object.entries(PAGES)) {
      const section = page.slice(page.lastIndexOf(".") + 1);
      const first = readFileSync(join(out, page), "utf8").split("\n")[0];
      assert.equal(
        first,
        `.TH "${title}" "${section}" "November 2023" "${VERSION}" "Ferry Manual"`,
      );
    }
  });

  for (const page of Object.keys(PAGES)) {
    test(`${page}: groff renders it without a warning, with NAME, SYNOPSIS and SEE ALSO`, {
      skip: noGroff,
    }, () => {
      const r = spawnSync(
        "groff", // Plain text: no SGR escapes, no overstriking (grotty's -c -b -u).
        ["-man", "-Tutf8", "-ww", "-P-c", "-P-b", "-P-u", join(out, page)],
        {
          encoding: "utf8",
          env: { ...process.env, LC_ALL: "C.UTF-8" },
        },
      );
      assert.equal(r.status, 0, r.stderr);
      assert.equal(r.stderr, "", "groff's warnings");
      const text = r.stdout;
      for (const h of ["NAME", "SYNOPSIS", "DESCRIPTION", "SEE ALSO"]) {
        assert.match(text, new RegExp(`^${h}$`, "m"), `${page} has ${h}`);
      }
    });
  }

  /** The words a program's --help lists: `  WORD …` lines (commands) or --options. */
  function help(program: string): string {
    return execFileSync(process.execPath, [program, "--help"], { encoding: "utf8" });
  }

  test("ferry(1) documents every command and global option of ferry --help", () => {
    const source = readFileSync(join(ROOT, "docs/man/ferry.1.md"), "utf8");
    const text = help(FERRY);
    const commands = [...text.matchAll(/^ {2}([a-z]+)\b/gm)].map((m) => m[1] as string);
    assert.ok(commands.length >= 15, commands.join(" "));
    for (const c of commands) assert.match(source, new RegExp(`^\\* \`${c}\``, "m"), `ferry ${c}`);
    for (const o of new Set([...text.matchAll(/(--[a-z][a-z-]+)/g)].map((m) => m[1] as string))) {
      assert.ok(source.includes(o), `ferry ${o}`);
    }
  });

  test("ferryd(8) documents every option of ferryd --help", () => {
    const source = readFileSync(join(ROOT, "docs/man/ferryd.8.md"), "utf8");
    const options = new Set(
      [...help(FERRYD).matchAll(/(--[a-z][a-z-]+)/g)].map((m) => m[1] as string),
    );
    assert.ok(options.has("--check-config"));
    for (const o of options) assert.ok(source.includes(`\`${o}\``), `ferryd ${o}`);
  });
});
