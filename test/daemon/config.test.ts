import assert from "node:assert/strict";
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { FerryError } from "../../src/core/errors.js";
import { assertConfigSafe, parseConfig } from "../../src/daemon/config.js";
import { isRoot } from "../helpers/proc.js";

const OK = `version = 1
socket = "/run/ferry/ferry.sock"

[apps.notes]
driver = "files"
paths = ["/var/lib/notes"]
owner = "root"
restore = true
`;

function errorOf(source: string): FerryError {
  try {
    parseConfig(source, "ferry.toml");
  } catch (err) {
    assert.ok(err instanceof FerryError);
    return err;
  }
  assert.fail("config was accepted");
}

describe("config validation", () => {
  test("a valid config parses, with defaults filled in and frozen", () => {
    const c = parseConfig(OK, "ferry.toml");
    assert.equal(c.socket, "/run/ferry/ferry.sock");
    assert.equal(c.stateDir, "/var/lib/ferry");
    assert.deepEqual(c.clients, []);
    const app = c.apps.get("notes");
    assert.equal(app?.restore, true);
    assert.deepEqual(app?.settings.paths, ["/var/lib/notes"]);
    assert.ok(Object.isFrozen(c));
  });

  test("an unknown key names the key and its line", () => {
    const e = errorOf(OK.replace('owner = "root"', 'owner = "root"\ncolour = "blue"'));
    assert.equal(e.code, "CONFIG_INVALID");
    assert.match(e.message, /^ferry\.toml:8: apps\.notes\.colour: unknown key$/m);
  });

  test("an unknown top-level key names its line", () => {
    const e = errorOf(`version = 1\nsokcet = "/x"\n`);
    assert.match(e.message, /^ferry\.toml:2: sokcet: unknown key$/m);
  });

  test("a wrong type names the key and line", () => {
    const e = errorOf(OK.replace("restore = true", 'restore = "yes"'));
    assert.match(e.message, /^ferry\.toml:8: apps\.notes\.restore: .*boolean/m);
  });

  test("a relative path is refused", () => {
    const e = errorOf(OK.replace('"/var/lib/notes"', '"var/lib/notes"'));
    assert.match(e.message, /^ferry\.toml:6: apps\.notes\.paths\[0\]: must be an absolute path/m);
  });

  test("a path with .. is refused", () => {
    const e = errorOf(OK.replace('"/var/lib/notes"', '"/var/lib/../../etc"'));
    assert.match(e.message, /apps\.notes\.paths\[0\]: must be a normalised path/);
  });

  test("an unknown user is refused", () => {
    const e = errorOf(OK.replace('owner = "root"', 'owner = "no-such-user-ferry"'));
    assert.match(
      e.message,
      /^ferry\.toml:7: apps\.notes\.owner: no such user "no-such-user-ferry"$/m,
    );
  });

  test("a bad application name is refused", () => {
    const e = errorOf(OK.replace("[apps.notes]", '[apps."Bad/Name"]'));
    assert.match(e.message, /^ferry\.toml:4: apps\.Bad\/Name: application names are/m);
  });

  test("an unknown driver lists the known ones", () => {
    const e = errorOf(OK.replace('driver = "files"', 'driver = "ftp"'));
    assert.match(
      e.message,
      /^ferry\.toml:5: apps\.notes\.driver: unknown driver "ftp"; one of: .*files/m,
    );
  });

  test("a missing required key names the table's line", () => {
    const e = errorOf(OK.replace('owner = "root"\n', ""));
    assert.match(e.message, /^ferry\.toml:4: apps\.notes\.owner: /m);
  });

  test("a TOML syntax error names its line", () => {
    const e = errorOf(`version = 1\n[apps.x\n`);
    assert.match(e.message, /^ferry\.toml:2: /);
  });

  test("version must be 1", () => {
    const e = errorOf(`version = 2\n`);
    assert.match(e.message, /^ferry\.toml:1: version: must be 1/m);
  });

  test("every problem is reported, not just the first", () => {
    const e = errorOf(OK.replace('owner = "root"', "owner = 5\nfoo = 1"));
    assert.match(e.message, /owner/);
    assert.match(e.message, /foo: unknown key/);
  });
});

describe("config safety (ferryd with capabilities)", {
  skip: isRoot ? false : "needs root to chown",
}, () => {
  test("a config owned or writable by ferryd's uid is refused; a root-owned one is fine", () => {
    const dir = mkdtempSync("/tmp/ferry-cfg-");
    try {
      const file = join(dir, "ferry.toml");
      writeFileSync(file, OK, { mode: 0o644 });
      assertConfigSafe(file, 12345, [12345]); // root-owned, 0644, under sticky /tmp: fine
      assert.throws(() => assertConfigSafe(file, 0, [0]), /CONFIG_UNSAFE|owned/);
      chmodSync(file, 0o666);
      assert.throws(
        () => assertConfigSafe(file, 12345, [12345]),
        (e: unknown) => e instanceof FerryError && e.code === "CONFIG_UNSAFE",
      );
      chmodSync(file, 0o644);
      const sub = join(dir, "open");
      mkdirSync(sub, { mode: 0o777 });
      chmodSync(sub, 0o777);
      writeFileSync(join(sub, "ferry.toml"), OK);
      assert.throws(
        () => assertConfigSafe(join(sub, "ferry.toml"), 12345, [12345]),
        (e: unknown) =>
          e instanceof FerryError && e.code === "CONFIG_UNSAFE" && e.message.includes(sub),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
