/**
 * The public surface of `ferry/agent`, checked twice: at compile time (the types below stop
 * compiling if a signature changes) and at run time through the package's own export map,
 * exactly as an application imports it.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import type {
  Agent,
  AgentErrorCode,
  AgentInfo,
  AgentOptions,
  BackupWriter,
  FinishContext,
  RestoreEntry,
  RestorePayload,
} from "ferry/agent";
import * as sdk from "ferry/agent";

type Equal<A, B> =
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(_ok: T): void {}

expectType<Equal<typeof sdk.createAgent, (options: AgentOptions) => Agent>>(true);
expectType<Equal<Agent["listen"], () => Promise<void>>>(true);
expectType<Equal<Agent["close"], (graceMs?: number) => Promise<void>>>(true);
expectType<Equal<Parameters<AgentOptions["backup"]>[0], BackupWriter>>(true);
expectType<Equal<Parameters<NonNullable<AgentOptions["restore"]>>[0], RestorePayload>>(true);
expectType<Equal<FinishContext["outcome"], "ok" | "error" | "cancelled" | "expired">>(true);
expectType<Equal<RestoreEntry["type"], "file" | "dir" | "symlink">>(true);
expectType<Equal<AgentInfo["name"], string>>(true);
expectType<
  Equal<
    keyof BackupWriter,
    "addBuffer" | "addJSON" | "addDir" | "addFile" | "addDirectory" | "signal"
  >
>(true);
expectType<Equal<keyof RestorePayload, "entryCount" | "bytes" | "entries" | "get" | "extractTo">>(
  true,
);
expectType<
  Equal<
    AgentErrorCode,
    | "BAD_REQUEST"
    | "NOT_FOUND"
    | "METHOD_NOT_ALLOWED"
    | "UNSUPPORTED_PROTOCOL"
    | "BUSY"
    | "NOT_SUPPORTED"
    | "PAYLOAD_INVALID"
    | "BACKUP_FAILED"
    | "RESTORE_FAILED"
    | "INTERNAL"
  >
>(true);

// Misuse must not compile.
// @ts-expect-error backup is required
sdk.createAgent({ socket: "/run/x.sock", info: { name: "x", version: "1" } });
// @ts-expect-error info.version is required
sdk.createAgent({ socket: "/run/x.sock", info: { name: "x" }, backup: async () => {} });

test("ferry/agent exports exactly the documented values", () => {
  assert.deepEqual(Object.keys(sdk).sort(), ["AgentError", "PROTOCOL_VERSION", "createAgent"]);
  assert.equal(sdk.PROTOCOL_VERSION, 1);
  const e = new sdk.AgentError("BUSY", "x");
  assert.equal(e.status, 409);
  assert.ok(e instanceof Error);
});

test("createAgent checks its options before anything listens", () => {
  assert.throws(
    () =>
      sdk.createAgent({
        socket: "relative.sock",
        info: { name: "x", version: "1" },
        backup: async () => {},
      }),
    /absolute path/,
  );
});
