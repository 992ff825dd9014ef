import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ERRORS } from "../../src/api/errors.js";
import { exitCodeFor } from "../../src/cli/exit-codes.js";
import { FerryError } from "../../src/core/errors.js";
import { ROOT } from "../helpers/proc.js";

test("every error code is documented in docs/errors.md with its HTTP status and exit code", () => {
  const doc = readFileSync(join(ROOT, "docs/errors.md"), "utf8");
  for (const [code, spec] of Object.entries(ERRORS)) {
    const exit = exitCodeFor(new FerryError(code as keyof typeof ERRORS, "x"));
    const row = new RegExp(`^\\| \`${code}\` \\| ${spec.status} \\| ${exit} \\|`, "m");
    assert.match(doc, row, `${code} is missing from docs/errors.md or its status/exit differ`);
  }
});

test("the API document lists every error code", () => {
  const api = readFileSync(join(ROOT, "docs/api.yaml"), "utf8");
  for (const code of Object.keys(ERRORS))
    assert.ok(api.includes(code), `${code} missing from docs/api.yaml`);
});
