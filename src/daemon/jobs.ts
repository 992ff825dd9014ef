/**
 * Jobs: every backup and restore is a job with an id, app, peer, start time, progress and
 * state. The registry enforces the job limits (global and per application), lets a job be
 * cancelled (its AbortController: helpers are killed, post hooks run, a backup stream ends
 * without its end record, a restore rolls back), and publishes progress and audit events
 * to `GET /v1/events` subscribers.
 *
 * Finished jobs are kept (the last KEEP_FINISHED) so that `GET /v1/jobs/{id}` can report
 * how a job ended.
 */

import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import type { JobInfo, JobKind } from "../api/types.js";
import { FerryError } from "../core/errors.js";
import type { PeerCred } from "../core/sys.js";

export interface Job {
  readonly info: JobInfo;
  readonly controller: AbortController;
  readonly signal: AbortSignal;
  progress(bytes: number, entries: number): void;
  finish(error?: FerryError): void;
}

const KEEP_FINISHED = 100;
const PROGRESS_EVERY_MS = 500;

export interface JobLimits {
  max_jobs: number;
  max_jobs_per_app: number;
  job_timeout: number;
}

export class JobRegistry extends EventEmitter {
  private readonly running = new Map<string, Job>();
  private readonly finished: JobInfo[] = [];

  constructor(private limits: JobLimits) {
    super();
    this.setMaxListeners(0);
  }

  setLimits(limits: JobLimits): void {
    this.limits = limits;
  }

  /** Starts a job, or throws APP_BUSY / TOO_MANY_JOBS. */
  start(kind: JobKind, app: string, peer: PeerCred): Job {
    const forApp = [...this.running.values()].filter((j) => j.info.app === app).length;
    if (forApp >= this.limits.max_jobs_per_app) {
      throw new FerryError(
        "APP_BUSY",
        `a backup or restore of ${app} is already running; try again later`,
      );
    }
    if (this.running.size >= this.limits.max_jobs) {
      throw new FerryError(
        "TOO_MANY_JOBS",
        `ferryd is already running ${this.running.size} jobs (limits.max_jobs); try again later`,
      );
    }
    const controller = new AbortController();
    const info: JobInfo = {
      id: randomBytes(6).toString("hex"),
      kind,
      app,
      peer: { uid: peer.uid, gid: peer.gid, pid: peer.pid },
      started: new Date().toISOString(),
      state: "running",
      bytes: 0,
      entries: 0,
    };
    const timer = setTimeout(() => {
      controller.abort(
        new FerryError(
          "JOB_TIMEOUT",
          `the ${kind} of ${app} ran past limits.job_timeout (${this.limits.job_timeout}s)`,
        ),
      );
    }, this.limits.job_timeout * 1000);
    timer.unref();
    let lastEvent = 0;
    const job: Job = {
      info,
      controller,
      signal: controller.signal,
      progress: (bytes, entries) => {
        info.bytes = bytes;
        info.entries = entries;
        const now = Date.now();
        if (now - lastEvent >= PROGRESS_EVERY_MS) {
          lastEvent = now;
          this.publish({ type: "job.progress", job: { ...info } });
        }
      },
      finish: (error) => {
        if (info.state !== "running") return;
        clearTimeout(timer);
        info.finished = new Date().toISOString();
        info.state =
          error === undefined ? "succeeded" : error.code === "CANCELLED" ? "cancelled" : "failed";
        if (error !== undefined) info.error = { code: error.code, message: error.message };
        this.running.delete(info.id);
        this.finished.push({ ...info });
        if (this.finished.length > KEEP_FINISHED) this.finished.shift();
        this.publish({ type: "job.finished", job: { ...info } });
      },
    };
    this.running.set(info.id, job);
    this.publish({ type: "job.started", job: { ...info } });
    return job;
  }

  list(): JobInfo[] {
    return [
      ...[...this.running.values()].map((j) => ({ ...j.info })),
      ...this.finished.map((j) => ({ ...j })),
    ];
  }

  get(id: string): JobInfo | undefined {
    const j = this.running.get(id);
    if (j !== undefined) return { ...j.info };
    const f = this.finished.find((x) => x.id === id);
    return f === undefined ? undefined : { ...f };
  }

  /** Cancels a running job; returns false if it is not running. */
  cancel(id: string, reason = "cancelled by request"): boolean {
    const j = this.running.get(id);
    if (j === undefined) return false;
    j.controller.abort(new FerryError("CANCELLED", reason));
    return true;
  }

  runningCount(): number {
    return this.running.size;
  }

  cancelAll(reason: string): void {
    for (const id of [...this.running.keys()]) this.cancel(id, reason);
  }

  /** Resolves when no job runs any more, or after `ms`. */
  async drain(ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (this.running.size > 0 && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 50));
    return this.running.size === 0;
  }

  publish(event: Record<string, unknown>): void {
    this.emit("event", { time: new Date().toISOString(), ...event });
  }
}
