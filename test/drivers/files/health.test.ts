/**
 * The files driver's health(): every declared path is opened as ferryd would open it for a
 * backup; a missing path, a file where a directory is declared, or a symlinked root is
 * reported with its path (ok: false), never thrown. Needs no privileges.
 */
import assert from "node:assert/strict";
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { filesDriver } from "../../../src/drivers/files/index.js";
import { settingsOf } from "../suite.js";

describe("files driver health", () => {
  let dir: string;
  const me = String(process.getuid?.());
  const health = (paths: string[]) =>
    filesDriver.health(settingsOf(filesDriver, { paths, owner: me, allow_root: true }) as never);
  before(() => {
    dir = mkdtempSync("/tmp/ferry-files-health-");
    mkdirSync(join(dir, "a"));
    mkdirSync(join(dir, "b"));
    writeFileSync(join(dir, "plain"), "x");
    symlinkSync(join(dir, "a"), join(dir, "link"));
  });
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("readable paths: ok, with how many", async () => {
    assert.deepEqual(await health([join(dir, "a"), join(dir, "b")]), {
      ok: true,
      message: "2 path(s) readable",
    });
  });

  test("a missing path, a file and a symlinked root are each reported by path", async () => {
    const r = await health([
      join(dir, "a"),
      join(dir, "missing"),
      join(dir, "plain"),
      join(dir, "link"),
    ]);
    assert.equal(r.ok, false);
    assert.match(r.message, new RegExp(`${join(dir, "missing")}: no such file`));
    assert.match(r.message, new RegExp(`${join(dir, "plain")}`));
    assert.match(r.message, new RegExp(`${join(dir, "link")}`));
    assert.doesNotMatch(r.message, new RegExp(`${join(dir, "a")}\\b`));
  });
});
