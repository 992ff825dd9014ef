/**
 * ferryd as a long-running service: jobs and cancel, events, limits against idle, slow
 * and stalled clients, graceful shutdown, config reload and readiness notification.
 *
 * These run ferryd in user mode as the current user (with --allow-root when that is
 * root), so they need no privileges; the privileged variants are in
 * test/e2e/service-privileged.test.ts.
 *
 * Bounds: 500 idle connections; a 2 GiB sparse file (no disk blocks) for the stalled
 * reader; idle_timeout 2 s; every wait is bounded (at most ~20 s per test).
 */
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { once } from "node:events";
import {
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { request } from "node:http";
import { createConnection, type Socket } from "node:net";
import { userInfo } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { type RunningFerryd, startFerryd } from "../helpers/ferryd.js";
import { makeArchive } from "../helpers/files-app.js";
import { FERRY, isRoot, run } from "../helpers/proc.js";

const me = userInfo().username;

function get(
  socket: string,
  path: string,
  method = "GET",
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request(
      { socketPath: socket, path, method, headers: { Host: "ferry" }, agent: false },
      (res) => {
        let body = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          body += d;
        });
        res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on("error", reject);
    req.end();
  });
}

function vmKb(pid: number, field: "VmRSS" | "VmHWM"): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(
    readFileSync(`/proc/${pid}/status`, "utf8"),
  );
  return Number(m?.[1] ?? 0);
}

describe("ferryd as a service (user mode)", () => {
  let dir: string;
  let config: string;
  let socket: string;
  let daemon: RunningFerryd;
  const extra = isRoot ? ["--allow-root"] : [];

  const writeConfig = (apps: string, limits = "idle_timeout = 2\nshutdown_grace = 1\n") =>
    writeFileSync(
      config,
      `version = 1\nsocket = "${socket}"\nstate_dir = "${dir}/state"\n\n[limits]\n${limits}\n${apps}`,
    );
  const appsToml = () => `
[apps.big]
driver = "files"
paths = ["${dir}/big"]
owner = "${me}"
restore = true
allow_root = true

[apps.slow]
driver = "command"
os_user = "${me}"
allow_root = true
backup_command = ["sleep", "31.4159"]
restore_command = ["true"]
hooks = { post_backup = ["touch", "${dir}/post-backup-ran"] }
`;

  before(async () => {
    dir = mkdtempSync("/tmp/ferry-service-");
    mkdirSync(join(dir, "big"));
    // 2 GiB that take no disk: the stalled-reader test must not depend on disk speed.
    execFileSync("truncate", ["-s", "2G", join(dir, "big/sparse.bin")]);
    writeFileSync(join(dir, "big/small.txt"), "small\n");
    config = join(dir, "ferry.toml");
    socket = join(dir, "run/ferry.sock");
    writeConfig(appsToml());
    daemon = await startFerryd({ config, extraArgs: extra });
  });
  after(async () => {
    await daemon?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  test("jobs: a running backup is listed, cancelled with ferry cancel; the helper dies and the post hook runs", async () => {
    const exporting = run([
      process.execPath,
      FERRY,
      "--socket",
      socket,
      "export",
      "slow",
      "-o",
      join(dir, "slow.tar"),
    ]);
    let id: string | undefined;
    for (let i = 0; i < 100 && id === undefined; i++) {
      const jobs = JSON.parse((await get(socket, "/v1/jobs")).body).jobs as {
        id: string;
        state: string;
        app: string;
      }[];
      id = jobs.find((j) => j.app === "slow" && j.state === "running")?.id;
      if (id === undefined) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(id !== undefined, "the backup never showed up as a running job");
    for (let i = 0; i < 50 && !processRunning("sleep 31.4159"); i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.ok(processRunning("sleep 31.4159"), "the helper did not start");

    const listed = await run([process.execPath, FERRY, "--socket", socket, "jobs"]);
    assert.match(listed.stdout.toString(), new RegExp(`${id}\\s+backup\\s+slow\\s+running`));
    const cancel = await run([process.execPath, FERRY, "--socket", socket, "cancel", id]);
    assert.equal(cancel.code, 0, cancel.stderr);
    assert.match(cancel.stdout.toString(), /cancelling job .* \(backup of slow\)/);

    const r = await exporting;
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /\[CANCELLED\]/);
    assert.ok(!existsSync(join(dir, "slow.tar")), "a cancelled export left its output file");
    for (let i = 0; i < 50 && processRunning("sleep 31.4159"); i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.ok(!processRunning("sleep 31.4159"), "the helper survived the cancel");
    assert.ok(existsSync(join(dir, "post-backup-ran")), "the post_backup hook did not run");
    const job = JSON.parse((await get(socket, `/v1/jobs/${id}`)).body);
    assert.equal(job.state, "cancelled");
  });

  test("events: GET /v1/events streams job and audit events as NDJSON", async () => {
    const lines: string[] = [];
    const req = request({
      socketPath: socket,
      path: "/v1/events",
      headers: { Host: "ferry" },
      agent: false,
    });
    req.end();
    const [res] = (await once(req, "response")) as [import("node:http").IncomingMessage];
    res.setEncoding("utf8");
    let buf = "";
    res.on("data", (d: string) => {
      buf += d;
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
    });
    const r = await run(
      [process.execPath, FERRY, "--socket", socket, "export", "big", "-o", "/dev/null"],
      { timeoutMs: 120_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    // -o onto something that is not a regular file writes to it; it is never replaced.
    assert.ok(
      lstatSync("/dev/null").isCharacterDevice(),
      "ferry export -o /dev/null replaced /dev/null",
    );
    await new Promise((r) => setTimeout(r, 200));
    req.destroy();
    const events = lines.map(
      (l) => JSON.parse(l) as { type: string; job?: { app: string; state: string } },
    );
    assert.equal(events[0]?.type, "hello");
    assert.ok(events.some((e) => e.type === "job.started" && e.job?.app === "big"));
    assert.ok(
      events.some(
        (e) => e.type === "job.finished" && e.job?.app === "big" && e.job.state === "succeeded",
      ),
    );
    assert.ok(events.some((e) => e.type === "audit"));
  });

  test("limits: 500 idle connections do not stop GET /v1/version from answering within 100 ms", async () => {
    const idle: Socket[] = [];
    try {
      for (let i = 0; i < 500; i++) {
        const s = createConnection(socket);
        s.on("error", () => {});
        idle.push(s);
      }
      let closed = 0;
      for (const s of idle) s.once("close", () => closed++);
      await Promise.all(idle.map((s) => once(s, "connect")));
      await new Promise((r) => setTimeout(r, 100));
      const times: number[] = [];
      for (let i = 0; i < 5; i++) {
        const t = performance.now();
        const v = await get(socket, "/v1/version");
        times.push(performance.now() - t);
        assert.equal(v.status, 200);
      }
      // The 500 were all still open while the times were measured: ferryd held them
      // (its own descriptors) and none of ours was closed.
      const held = readdirSync(`/proc/${daemon.pid}/fd`).filter((fd) => {
        try {
          return readlinkSync(`/proc/${daemon.pid}/fd/${fd}`).startsWith("socket:");
        } catch {
          return false;
        }
      }).length;
      assert.equal(closed, 0, `${closed} idle connections were closed during the measurement`);
      assert.ok(
        idle.every((s) => !s.destroyed && s.readyState === "open"),
        "an idle connection is no longer open",
      );
      assert.ok(held >= 500, `ferryd holds only ${held} sockets`);
      times.sort((a, b) => a - b);
      assert.ok((times[2] as number) < 100, `median ${times[2]} ms`);
    } finally {
      for (const s of idle) s.destroy();
    }
  });

  test("limits: a client sending one byte per second is disconnected at the idle timeout", async () => {
    const s = createConnection(socket);
    await once(s, "connect");
    const started = Date.now();
    const request =
      "GET /v1/version HTTP/1.1\r\nHost: ferry\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let sent = 0;
    const closed = new Promise<number>((resolve) =>
      s.on("close", () => resolve(Date.now() - started)),
    );
    s.on("error", () => {});
    let answer = "";
    s.on("data", (d: Buffer) => {
      answer += d.toString("latin1");
    });
    let lastByteAt = 0;
    const timer = setInterval(() => {
      if (sent < request.length && !s.destroyed) {
        s.write(request[sent++] as string);
        lastByteAt = Date.now() - started;
      }
    }, 1000);
    const ms = await Promise.race([
      closed,
      new Promise<number>((r) => setTimeout(() => r(-1), 15_000)),
    ]);
    clearInterval(timer);
    s.destroy();
    assert.ok(ms > 0, "the slow client was never disconnected");
    assert.ok(ms >= 1500 && ms < 6000, `disconnected after ${ms} ms (idle_timeout 2 s)`);
    // The client was still trickling bytes when it was cut off: each byte arrived well
    // within idle_timeout of the previous one, so a timer reset by every byte would
    // never have fired. The timeout bounds the whole request, and nothing was answered.
    assert.ok(sent >= 1, "no byte was sent before the disconnect");
    assert.ok(ms - lastByteAt < 2000, `the last byte was ${ms - lastByteAt} ms before the cut`);
    assert.doesNotMatch(answer, /^HTTP\/1\.1 200/, "the slow request was answered");
  });

  test("limits: a client that stops reading a 2 GiB backup is dropped, ferryd's memory stays flat", async () => {
    const before = vmKb(daemon.pid, "VmRSS");
    const req = request({
      socketPath: socket,
      path: "/v1/apps/big/backup",
      method: "POST",
      headers: { Host: "ferry" },
      agent: false,
    });
    req.on("error", () => {});
    req.end();
    const [res] = (await once(req, "response")) as [import("node:http").IncomingMessage];
    assert.equal(res.statusCode, 200);
    let got = 0;
    // Read 8 MiB, then stop reading for good.
    await new Promise<void>((resolve) => {
      res.on("data", (d: Buffer) => {
        got += d.length;
        if (got > 8 * 1024 * 1024) {
          res.pause();
          resolve();
        }
      });
    });
    // A paused client does not notice its socket closing, so ask ferryd how the job ended.
    let peak = 0;
    let state = "running";
    const deadline = Date.now() + 15_000;
    while (state === "running" && Date.now() < deadline) {
      peak = Math.max(peak, vmKb(daemon.pid, "VmRSS"));
      const jobs = JSON.parse((await get(socket, "/v1/jobs")).body).jobs as {
        app: string;
        state: string;
        error?: { code: string };
      }[];
      const job = jobs.find((j) => j.app === "big" && j.state !== "succeeded");
      state =
        job === undefined
          ? "running"
          : job.state === "running"
            ? "running"
            : `${job.state} ${job.error?.code}`;
      await new Promise((r) => setTimeout(r, 100));
    }
    req.destroy();
    assert.equal(state, "failed CLIENT_TIMEOUT", "the stalled client was never dropped");
    assert.ok(peak < 200 * 1024, `ferryd's RSS peaked at ${peak} kB`);
    assert.ok(peak - before < 100 * 1024, `ferryd's RSS grew by ${peak - before} kB`);
    assert.ok(vmKb(daemon.pid, "VmHWM") < 200 * 1024, "ferryd's peak RSS (VmHWM) is over 200 MB");
    assert.match(daemon.log(), /"code":"CLIENT_TIMEOUT"/);
  });

  test("limits: a large body on an endpoint that takes none is refused with 413", async () => {
    const r = await new Promise<number>((resolve, reject) => {
      const req = request(
        {
          socketPath: socket,
          path: "/v1/version",
          method: "GET",
          headers: { Host: "ferry", "Content-Length": 10_000_000 },
          agent: false,
        },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on("error", reject);
      req.write(Buffer.alloc(1024));
    });
    assert.equal(r, 413);
  });

  test("SIGHUP: a broken config is refused and the old one keeps serving; a good one is taken", async () => {
    writeFileSync(config, "version = 1\n[apps.broken\n");
    process.kill(daemon.pid, "SIGHUP");
    await new Promise((r) => setTimeout(r, 500));
    assert.match(daemon.log(), /config reload failed; keeping the current config/);
    const apps = JSON.parse((await get(socket, "/v1/apps")).body).apps.map(
      (a: { name: string }) => a.name,
    );
    assert.deepEqual(apps.sort(), ["big", "slow"]);

    writeConfig(
      `${appsToml()}\n[apps.extra]\ndriver = "files"\npaths = ["${dir}/big"]\nowner = "${me}"\n`,
    );
    process.kill(daemon.pid, "SIGHUP");
    await new Promise((r) => setTimeout(r, 500));
    const after = JSON.parse((await get(socket, "/v1/apps")).body).apps.map(
      (a: { name: string }) => a.name,
    );
    assert.deepEqual(after.sort(), ["big", "extra", "slow"]);
  });

  test("SIGTERM during a restore: the restore is rolled back, ferryd exits 0", async () => {
    const live = join(dir, "big");
    const beforeNames = readdirSync(live).sort();
    const entries: Record<string, unknown>[] = [{ name: "data/0/", type: "dir" }];
    for (let i = 0; i < 200; i++) entries.push({ name: `data/0/f${i}`, data: "x".repeat(1000) });
    const archive = makeArchive({ app: "big", paths: [live], entries });
    // Upload the first part, then stall: the restore is in progress when SIGTERM comes.
    const half = archive.subarray(0, 64 * 1024);
    const req = request({
      socketPath: socket,
      path: "/v1/apps/big/restore",
      method: "POST",
      headers: { Host: "ferry" },
      agent: false,
    });
    req.on("error", () => {});
    req.write(half);
    const staging = () => readdirSync(dir).filter((n) => n.startsWith(".big.ferry-restore-"));
    for (let i = 0; i < 100 && staging().length === 0; i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.equal(staging().length, 1, "the restore did not start staging");
    const stopAsked = Date.now();
    daemon.child.kill("SIGTERM");
    const [code] = (await once(daemon.child, "exit")) as [number | null];
    assert.equal(code, 0);
    assert.ok(Date.now() - stopAsked < 15_000, "the cancelled restore held up the shutdown");
    assert.match(daemon.log(), /waiting for running jobs/);
    assert.deepEqual(readdirSync(live).sort(), beforeNames);
    assert.deepEqual(
      readdirSync(dir).filter((n) => n.includes("ferry-restore")),
      [],
    );
    assert.deepEqual(readdirSync(join(dir, "state/journal")), []);
    req.destroy();
    daemon = await startFerryd({ config, extraArgs: extra });
  });

  test("Type=notify: READY=1 is sent to NOTIFY_SOCKET once ferryd listens, STOPPING=1 on SIGTERM", async () => {
    await daemon.stop();
    const notify = join(dir, "notify.sock");
    const listener = spawn("/usr/bin/python3", [
      "-c",
      `import socket,sys\ns=socket.socket(socket.AF_UNIX,socket.SOCK_DGRAM)\ns.bind(${JSON.stringify(notify)})\nprint("bound",flush=True)\nfor _ in range(2):\n  print(s.recv(4096).decode().replace("\\n","|"),flush=True)\n`,
    ]);
    let out = "";
    listener.stdout.on("data", (d: Buffer) => {
      out += d.toString();
    });
    for (let i = 0; i < 50 && !out.includes("bound"); i++)
      await new Promise((r) => setTimeout(r, 100));
    daemon = await startFerryd({ config, extraArgs: extra, env: { NOTIFY_SOCKET: notify } });
    for (let i = 0; i < 50 && !out.includes("READY=1"); i++)
      await new Promise((r) => setTimeout(r, 100));
    assert.match(out, new RegExp(`READY=1\\|MAINPID=${daemon.pid}`));
    const listenerExit = once(listener, "exit");
    await daemon.stop();
    await listenerExit;
    assert.match(out, /STOPPING=1/);
    daemon = await startFerryd({ config, extraArgs: extra });
  });
});

function processRunning(pattern: string): boolean {
  try {
    execFileSync("pgrep", ["-f", pattern], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}
