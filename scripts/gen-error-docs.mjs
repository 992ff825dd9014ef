#!/usr/bin/env node
// Regenerates docs/errors.md and the error-code enum in docs/api.yaml from the one
// catalogue (src/api/errors.ts, built to dist/). Run after adding a code: npm run build &&
// node scripts/gen-error-docs.mjs. test/api/errors.test.ts fails until the docs match.
import { readFileSync, writeFileSync } from "node:fs";

const { ERRORS } = await import("../dist/src/api/errors.js");
const { exitCodeFor } = await import("../dist/src/cli/exit-codes.js");
const { FerryError } = await import("../dist/src/core/errors.js");

let md = `# Error codes

Every error ferryd sends is \`{"error":{"code":"…","message":"…"}}\` with the HTTP status
below; \`ferry\` and \`ferryd\` print \`PROGRAM: message [CODE]\` on stderr and exit with the
exit code below. Codes are stable: scripts may match on them. An exit code a script does
not know means failure. (Generated from src/api/errors.ts by scripts/gen-error-docs.mjs.)

| code | HTTP status | exit code | meaning |
|---|---|---|---|
`;
for (const [code, spec] of Object.entries(ERRORS)) {
  md += `| \`${code}\` | ${spec.status} | ${exitCodeFor(new FerryError(code, "x"))} | ${spec.description} |\n`;
}
md += `
Exit codes: 0 success; 1 failure; 2 usage or config error; 3 refused (peer check, socket
permissions, restore not allowed); 4 ferryd unreachable; 130 interrupted.
`;
writeFileSync("docs/errors.md", md);

const api = readFileSync("docs/api.yaml", "utf8");
const enumLines = Object.keys(ERRORS)
  .map((c) => `                - ${c}`)
  .join("\n");
const next = api.replace(/( {14}enum:\n)(?: {16}- [A-Z_]+\n)+/, `$1${enumLines}\n`);
writeFileSync("docs/api.yaml", next);
