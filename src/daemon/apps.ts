/**
 * What ferryd says about itself and its applications: `GET /v1/version`, and the summary
 * (`GET /v1/apps`) and detail (`GET /v1/apps/{app}`) of each declared application. A
 * driver's health check or description may start a helper or open a connection, so both
 * go through BoundedChecks (health.ts): one in flight per application, reused for 5 s,
 * waited for at most 15 s.
 */
import type { AppDetail, AppSummary, VersionInfo } from "../api/types.js";
import { API_VERSION } from "../api/types.js";
import { FerryError } from "../core/errors.js";
import { VERSION } from "../core/version.js";
import { drivers } from "../drivers/all.js";
import type { Health } from "../drivers/types.js";
import { APP_NAME, type AppConfig, type Config } from "./config.js";
import { BoundedChecks } from "./health.js";

/** Who ferryd runs as (reported by GET /v1/version). */
export interface Identity {
  uid: number;
  gid: number;
  user: string;
  capabilities: string[];
  privileged: boolean;
}

export function versionInfo(identity: Identity): VersionInfo {
  return {
    name: "ferryd",
    version: VERSION,
    api: API_VERSION,
    uid: identity.uid,
    gid: identity.gid,
    user: identity.user,
    capabilities: identity.capabilities,
    privileged: identity.privileged,
    drivers: [...drivers.values()].map((d) => d.type),
  };
}

/** The declared app named by a path segment; a malformed name is a 400, an unknown one a 404. */
export function findApp(config: Config, name: string): AppConfig {
  let decoded: string;
  try {
    decoded = decodeURIComponent(name);
  } catch {
    throw new FerryError("BAD_REQUEST", "malformed application name in the path");
  }
  if (!APP_NAME.test(decoded)) {
    throw new FerryError(
      "BAD_REQUEST",
      `${JSON.stringify(decoded)} is not a valid application name`,
    );
  }
  const app = config.apps.get(decoded);
  if (app === undefined) {
    throw new FerryError("APP_NOT_FOUND", `no application ${JSON.stringify(decoded)} is declared`);
  }
  return app;
}

/** Health results are reused for 5 s; a caller waits at most 15 s for one. */
const HEALTH_BOUNDS = { ttlMs: 5_000, timeoutMs: 15_000 };

/** Applications' health and descriptions, bounded. */
export class AppStatus {
  /** Health checks and descriptions: one in flight per app, cached briefly, bounded. */
  private readonly healthChecks = new BoundedChecks<Health>(HEALTH_BOUNDS);
  private readonly descriptions = new BoundedChecks<Record<string, unknown>>(HEALTH_BOUNDS);

  async summary(app: AppConfig): Promise<AppSummary> {
    const driver = app.impl;
    const health = await this.healthChecks.get(
      app,
      () => driver.health(app.settings),
      (s) => ({ ok: false, message: `the health check did not answer within ${s}s` }),
      (err) => ({ ok: false, message: (err as Error).message }),
    );
    return { name: app.name, driver: app.driver, restore: app.restore, health };
  }

  async detail(app: AppConfig): Promise<AppDetail> {
    const driver = app.impl;
    const description = await this.descriptions.get(
      app,
      () => driver.describe(app.settings),
      (s) => ({ error: `the description did not answer within ${s}s` }),
      (err) => ({ error: (err as Error).message }),
    );
    return { ...(await this.summary(app)), description };
  }
}
