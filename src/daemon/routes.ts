/**
 * API v1's routes: one table of paths, methods and handlers (docs/api.yaml documents the
 * same). The server (src/daemon/server.ts) matches a request against it and calls the
 * handler; handlers see ferryd only through `RouteHost`.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { API_VERSION } from "../api/types.js";
import { FerryError } from "../core/errors.js";
import { type AppStatus, findApp, type Identity, versionInfo } from "./apps.js";
import { streamBackup } from "./backup.js";
import type { Doctor } from "./doctor.js";
import type { EventStreams } from "./events.js";
import type { JobHandler, JobHost, RequestContext } from "./job-request.js";
import { handleRestore } from "./restore.js";

/** What route handlers need of ferryd. */
export interface RouteHost extends JobHost {
  readonly stopping: boolean;
  readonly identity: Identity;
  /** Applications' health and descriptions (apps.ts). */
  readonly apps: AppStatus;
  /** `GET /v1/events` subscribers (events.ts). */
  readonly events: EventStreams;
  /** `ferry doctor`'s checks of one application (doctor.ts). */
  readonly doctor: Doctor;
}

type Handler = (
  host: RouteHost,
  req: IncomingMessage,
  res: ServerResponse,
  ctx: RequestContext,
  params: Record<string, string>,
) => void | Promise<void>;

export interface Route {
  /** Path segments after /v1/; `:name` segments are parameters. */
  path: string[];
  /**
   * "small": a JSON request whose body (if any) is bounded by limits.max_body_bytes;
   * "stream": a body that is an archive, or a response that is a stream.
   */
  body: "small" | "stream";
  methods: Partial<Record<string, Handler>>;
}

const archiveJob =
  (run: JobHandler): Handler =>
  (host, req, res, ctx, p) => {
    if (host.stopping) throw new FerryError("SHUTTING_DOWN", "ferryd is shutting down");
    return run(host, findApp(host.config, p.app as string), req, res, ctx);
  };

export const ROUTES: readonly Route[] = [
  {
    path: ["version"],
    body: "small",
    methods: {
      GET: (h, req, res, ctx) => h.audit.reply(req, res, ctx, 200, versionInfo(h.identity)),
    },
  },
  {
    path: ["apps"],
    body: "small",
    methods: {
      GET: async (h, req, res, ctx) => {
        const apps = await Promise.all([...h.config.apps.values()].map((a) => h.apps.summary(a)));
        h.audit.reply(req, res, ctx, 200, { apps });
      },
    },
  },
  {
    path: ["apps", ":app"],
    body: "small",
    methods: {
      GET: async (h, req, res, ctx, p) =>
        h.audit.reply(req, res, ctx, 200, await h.apps.detail(findApp(h.config, p.app as string))),
    },
  },
  {
    path: ["apps", ":app", "doctor"],
    body: "small",
    methods: {
      POST: async (h, req, res, ctx, p) =>
        h.audit.reply(
          req,
          res,
          ctx,
          200,
          await h.doctor.examine(findApp(h.config, p.app as string)),
        ),
    },
  },
  { path: ["apps", ":app", "backup"], body: "stream", methods: { POST: archiveJob(streamBackup) } },
  {
    path: ["apps", ":app", "restore"],
    body: "stream",
    methods: { POST: archiveJob(handleRestore) },
  },
  {
    path: ["jobs"],
    body: "small",
    methods: {
      GET: (h, req, res, ctx) => h.audit.reply(req, res, ctx, 200, { jobs: h.jobs.list() }),
    },
  },
  {
    path: ["jobs", ":id"],
    body: "small",
    methods: {
      GET: (h, req, res, ctx, p) => h.audit.reply(req, res, ctx, 200, jobOf(h, p.id as string)),
      DELETE: (h, req, res, ctx, p) => {
        const job = jobOf(h, p.id as string);
        const cancelled = h.jobs.cancel(job.id, `cancelled by uid ${ctx.peer.uid}`);
        h.audit.reply(req, res, ctx, cancelled ? 202 : 200, { ...job, cancelling: cancelled });
      },
    },
  },
  {
    path: ["events"],
    body: "stream",
    methods: { GET: (h, req, res, ctx) => h.events.stream(req, res, ctx) },
  },
];

function jobOf(h: RouteHost, id: string) {
  const job = h.jobs.get(id);
  if (job === undefined) throw new FerryError("JOB_NOT_FOUND", `no job ${JSON.stringify(id)}`);
  return job;
}

/** The route and parameters for a path, or NOT_FOUND. */
export function matchRoute(pathname: string): { route: Route; params: Record<string, string> } {
  const parts = pathname.split("/").filter((p) => p !== "");
  if (parts[0] === API_VERSION) {
    const rest = parts.slice(1);
    for (const route of ROUTES) {
      if (route.path.length !== rest.length) continue;
      const params: Record<string, string> = {};
      if (
        route.path.every((seg, i) => {
          if (seg.startsWith(":")) {
            params[seg.slice(1)] = rest[i] as string;
            return true;
          }
          return seg === rest[i];
        })
      ) {
        return { route, params };
      }
    }
  }
  throw new FerryError("NOT_FOUND", `no such path ${pathname}`);
}
