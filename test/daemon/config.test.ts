import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  chownSync,
  linkSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { join } from "node:path";
import { describe, test } from "node:test";
import { FerryError } from "../../src/core/errors.js";
import { readTrustedText } from "../../src/core/secret-file.js";
import { loadConfig, parseConfig } from "../../src/daemon/config.js";
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
  const B = { uid: 12345, gids: [12345], privileged: true };
  const unsafe = (fragment: string) => (e: unknown) =>
    e instanceof FerryError && e.code === "CONFIG_UNSAFE" && e.message.includes(fragment);

  test("a config owned or writable by ferryd's uid is refused; a root-owned one is fine", () => {
    const dir = mkdtempSync("/tmp/ferry-cfg-");
    try {
      const file = join(dir, "ferry.toml");
      writeFileSync(file, OK, { mode: 0o644 });
      // root-owned, 0644, under sticky /tmp: fine
      assert.equal(loadConfig(file, B).apps.size, 1);
      chownSync(file, 12345, 12345);
      assert.throws(
        () => loadConfig(file, B),
        unsafe("owned by uid 12345, a user other than root"),
      );
      chownSync(file, 0, 0);
      chmodSync(file, 0o666);
      assert.throws(() => loadConfig(file, B), unsafe("writable by its group or by everyone"));
      chmodSync(file, 0o644);
      const sub = join(dir, "open");
      mkdirSync(sub, { mode: 0o777 });
      chmodSync(sub, 0o777);
      writeFileSync(join(sub, "ferry.toml"), OK);
      assert.throws(() => loadConfig(join(sub, "ferry.toml"), B), unsafe(sub));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("config-in-app-owner-dir: a config an application's owner could change is refused too", () => {
    const dir = mkdtempSync("/tmp/ferry-cfg-");
    try {
      // Not the backup user's (12345), but another user's (an application's owner):
      // they could declare /etc as an application, or themselves as a client.
      const owned = join(dir, "app-owner");
      mkdirSync(owned, { mode: 0o755 });
      writeFileSync(join(owned, "ferry.toml"), OK, { mode: 0o644 });
      chownSync(owned, 54321, 54321);
      assert.throws(() => loadConfig(join(owned, "ferry.toml"), B), unsafe(owned));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("user mode (no capabilities): a config the user owns is fine", () => {
    const dir = mkdtempSync("/tmp/ferry-cfg-");
    try {
      const file = join(dir, "ferry.toml");
      writeFileSync(file, OK, { mode: 0o644 });
      chownSync(dir, 12345, 12345);
      chownSync(file, 12345, 12345);
      assert.equal(loadConfig(file, { ...B, privileged: false }).apps.size, 1);
      assert.throws(() => loadConfig(file, B), unsafe(dir));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("config-link-into-backup-user-dir: judged by the directories it really lives in", () => {
    const dir = mkdtempSync("/tmp/ferry-cfg-");
    try {
      // /tmp/x/etc (root 0755) holds ferry.toml -> /tmp/x/b/ferry.toml; b is B's.
      const etc = join(dir, "etc");
      const b = join(dir, "b");
      mkdirSync(etc, { mode: 0o755 });
      mkdirSync(b, { mode: 0o755 });
      writeFileSync(join(b, "ferry.toml"), OK, { mode: 0o644 });
      chownSync(b, 12345, 12345);
      symlinkSync(join(b, "ferry.toml"), join(etc, "ferry.toml"));
      assert.throws(
        () => loadConfig(join(etc, "ferry.toml"), B),
        unsafe(`directory ${b} is owned by uid 12345, a user other than root`),
      );
      // A relative link through .. is followed the same way.
      rmSync(join(etc, "ferry.toml"));
      symlinkSync("../b/ferry.toml", join(etc, "ferry.toml"));
      assert.throws(() => loadConfig(join(etc, "ferry.toml"), B), unsafe(b));
      // Root-owned target directory: the link is fine.
      chownSync(b, 0, 0);
      assert.equal(loadConfig(join(etc, "ferry.toml"), B).apps.size, 1);
      // The link's own directory counts too: B could re-point the link.
      chownSync(etc, 12345, 12345);
      assert.throws(() => loadConfig(join(etc, "ferry.toml"), B), unsafe(etc));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("a FIFO or directory in place of the config is refused without blocking", () => {
    const dir = mkdtempSync("/tmp/ferry-cfg-");
    try {
      const fifo = join(dir, "ferry.toml");
      execFileSync("mkfifo", [fifo]);
      assert.throws(
        () => loadConfig(fifo, B),
        (e: unknown) => e instanceof FerryError && /not a regular file/.test(e.message),
      );
      assert.throws(
        () => loadConfig(dir, B),
        (e: unknown) => e instanceof FerryError && e.code === "CONFIG_INVALID",
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("files the config names (password_file)", {
  skip: isRoot ? false : "needs root to chown",
}, () => {
  const ROOT_ONLY = { kind: "root-only", owners: [0] } as const;
  const code = (c: string, fragment: string) => (e: unknown) =>
    e instanceof FerryError && e.code === c && e.message.includes(fragment);

  test("root-owned 0600, one link, root directories: read; every weaker variant refused", () => {
    const dir = mkdtempSync("/tmp/ferry-secret-");
    try {
      const file = join(dir, "pw");
      writeFileSync(file, "s3cret\n", { mode: 0o600 });
      assert.equal(readTrustedText(file, "password_file", ROOT_ONLY), "s3cret\n");
      chownSync(file, 12345, 12345);
      assert.throws(
        () => readTrustedText(file, "password_file", ROOT_ONLY),
        code("CONFIG_UNSAFE", "owned by uid 12345"),
      );
      // User mode: ferryd's own uid may own it.
      assert.equal(
        readTrustedText(file, "password_file", { kind: "root-only", owners: [0, 12345] }),
        "s3cret\n",
      );
      chownSync(file, 0, 0);
      chmodSync(file, 0o620);
      assert.throws(
        () => readTrustedText(file, "password_file", ROOT_ONLY),
        code("CONFIG_UNSAFE", "writable by its group"),
      );
      chmodSync(file, 0o600);
      linkSync(file, join(dir, "second"));
      assert.throws(
        () => readTrustedText(file, "password_file", ROOT_ONLY),
        code("CONFIG_UNSAFE", "2 hard links"),
      );
      rmSync(join(dir, "second"));
      symlinkSync(file, join(dir, "link"));
      assert.throws(
        () => readTrustedText(join(dir, "link"), "password_file", ROOT_ONLY),
        code("CONFIG_UNSAFE", "a symlink"),
      );
      const owned = join(dir, "owned");
      mkdirSync(owned);
      chownSync(owned, 12345, 12345);
      writeFileSync(join(owned, "pw"), "x\n", { mode: 0o600 });
      assert.throws(
        () => readTrustedText(join(owned, "pw"), "password_file", ROOT_ONLY),
        code("CONFIG_UNSAFE", `directory ${owned}`),
      );
      assert.throws(
        () => readTrustedText(join(dir, "missing"), "password_file", ROOT_ONLY),
        code("CONFIG_INVALID", "no such file"),
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("--check-config's loadConfig names the key and line of a bad password_file", () => {
    const dir = mkdtempSync("/tmp/ferry-secret-");
    try {
      const pw = join(dir, "pw");
      writeFileSync(pw, "x\n", { mode: 0o644 });
      chownSync(pw, 12345, 12345);
      const file = join(dir, "ferry.toml");
      writeFileSync(
        file,
        `version = 1\n\n[apps.cache]\ndriver = "redis"\nhost = "127.0.0.1"\npassword_file = "${pw}"\n`,
      );
      assert.throws(
        () => loadConfig(file, { uid: 54321, gids: [54321], privileged: true }),
        code(
          "CONFIG_UNSAFE",
          `${file}:6: apps.cache.password_file: ${pw}: the file is owned by uid 12345`,
        ),
      );
      chownSync(pw, 0, 0);
      assert.equal(loadConfig(file, { uid: 54321, gids: [54321], privileged: true }).apps.size, 1);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
