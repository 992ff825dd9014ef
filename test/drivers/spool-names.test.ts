/**
 * Stale spools left by a killed ferryd are removed at start-up whatever their entries are
 * called: names are passed to the kernel as the bytes read from the directory, so a name
 * that is not UTF-8 (or latin1-decodable back to itself) never leaves a spool behind.
 */
import assert from "node:assert/strict";
import { mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { createLogger } from "../../src/core/log.js";
import { removeStaleSpools, SPOOL_DIR, spoolRoot } from "../../src/drivers/spool.js";
import { testState } from "../helpers/state.js";

test("bom-name-spool: stale spools with U+FEFF and non-UTF-8 names are removed", () => {
  const state = testState();
  spoolRoot(state);
  const root = join(state.path, SPOOL_DIR);
  const names = [Buffer.from("\ufeffspool"), Buffer.from([0x73, 0xff, 0xfe]), Buffer.from("é")];
  for (const n of names) {
    const d = Buffer.concat([Buffer.from(`${root}/`), n]);
    mkdirSync(d);
    const inner = Buffer.concat([d, Buffer.from("/"), n]);
    writeFileSync(inner, "dump");
  }
  removeStaleSpools(state, createLogger("test", "silent"));
  assert.deepEqual(readdirSync(root), [], "a stale spool was left");
});
