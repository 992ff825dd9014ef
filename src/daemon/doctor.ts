/**
 * `POST /v1/apps/{app}/doctor`, for `ferry doctor`: an application checked the way its
 * next backup and restore will use it, each finding with the fix.
 *
 * - the driver's health check, which runs as the application's user where the backup does
 *   (sqlite3 as the database's owner, psql as `os_user`…);
 * - each hook program, as the user it runs as (`test -x` through the same helper runner);
 * - the driver's `doctor`: for a restorable files or sqlite application, a staging
 *   directory or file is made and removed exactly where a restore makes it, with the
 *   restore's rules (src/drivers/probe.ts), so a read-only parent (a path missing from
 *   ReadWritePaths=) fails here rather than at the restore.
 *
 * Probes run one at a time in all of ferryd (they use fixed names), each within a bound.
 */
import type { DoctorCheck, DoctorReport } from "../api/types.js";
import { findProgram, runHelper } from "../core/spawn.js";
import type { StateDir } from "../core/state-dir.js";
import type { CommonSettings } from "../drivers/common.js";
import { installHint } from "../drivers/inspect.js";
import type { AppConfig } from "./config.js";

/** How long one application's checks may take in all. */
const DOCTOR_TIMEOUT_MS = 45_000;
const HOOK_CHECK_TIMEOUT_MS = 10_000;

export class Doctor {
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly state: StateDir) {}

  /** The report for `app`, after any probe already running. */
  examine(app: AppConfig): Promise<DoctorReport> {
    const next = this.queue.then(() => examine(app, this.state));
    this.queue = next.catch(() => {});
    return next;
  }
}

async function examine(app: AppConfig, state: StateDir): Promise<DoctorReport> {
  const signal = AbortSignal.timeout(DOCTOR_TIMEOUT_MS);
  const checks: DoctorCheck[] = [];
  const driver = app.impl;
  try {
    const health = await driver.health(app.settings);
    // A helper that is not installed (findProgram's words): the package to install.
    const missing = /(?:^|\s)([A-Za-z0-9._+-]+) is not installed/.exec(health.message)?.[1];
    const fix = health.fix ?? (missing === undefined ? undefined : installHint(missing));
    checks.push(
      health.ok
        ? { level: "ok", message: health.message }
        : { level: "fail", message: health.message, ...(fix === undefined ? {} : { fix }) },
    );
  } catch (err) {
    checks.push({ level: "fail", message: `health check failed: ${(err as Error).message}` });
  }
  checks.push(...(await hookChecks(app, signal)));
  if (driver.doctor !== undefined) {
    try {
      checks.push(
        ...(await driver.doctor(app.settings, {
          app: app.name,
          restore: app.restore,
          state,
          signal,
        })),
      );
    } catch (err) {
      checks.push({ level: "fail", message: `probe failed: ${(err as Error).message}` });
    }
  }
  return { app: app.name, driver: app.driver, restore: app.restore, checks };
}

/** Each hook program is there and executable by the user it runs as. */
async function hookChecks(app: AppConfig, signal: AbortSignal): Promise<DoctorCheck[]> {
  const hooks = (app.settings as unknown as CommonSettings).hooks;
  if (hooks === undefined) return [];
  const out: DoctorCheck[] = [];
  for (const name of ["pre_backup", "post_backup", "pre_restore", "post_restore"] as const) {
    const argv = hooks[name];
    if (argv === undefined) continue;
    const program = argv[0] as string;
    let path: string;
    try {
      path = findProgram(program);
    } catch {
      out.push({
        level: "fail",
        message: `hooks.${name}: ${program} is not installed`,
        fix: installHint(program),
      });
      continue;
    }
    const h = runHelper({
      argv: ["test", "-f", path, "-a", "-x", path],
      user: hooks.user,
      timeoutMs: HOOK_CHECK_TIMEOUT_MS,
      signal,
      stdout: "ignore",
      label: `test -x ${path} as ${hooks.user.name}`,
    });
    try {
      await h.done;
      out.push({ level: "ok", message: `hooks.${name}: ${path} runs as ${hooks.user.name}` });
    } catch (err) {
      out.push({
        level: "fail",
        message: `hooks.${name}: ${hooks.user.name} cannot run ${path} (${(err as Error).message})`,
        fix: `make ${path} a regular file executable by ${hooks.user.name}, in directories ${hooks.user.name} can search`,
      });
    }
  }
  return out;
}
