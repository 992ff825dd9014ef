/**
 * Bounded health checks and descriptions for `GET /v1/apps` and `GET /v1/apps/{app}`.
 *
 * A driver's health check may start a helper (psql, mariadb) or open a connection, and the
 * backup user can ask for the app list as often as it likes; an application whose server
 * accepts connections and never answers must not make ferryd pile up helpers or hang the
 * listing. So, per application (per loaded config: a reload starts afresh):
 * - at most one check is in flight; every caller shares it;
 * - a result is reused for `ttlMs`;
 * - a caller waits at most `timeoutMs`, then gets a "did not answer" result, while the
 *   check that is still running (bounded by the driver's own timeouts, and its helper by
 *   the supervisor) keeps the slot, so no second one starts beside it.
 */

export interface BoundedOptions {
  ttlMs: number;
  timeoutMs: number;
}

interface Slot<T> {
  value?: T;
  at: number;
  pending?: Promise<T>;
  started: number;
}

export class BoundedChecks<T> {
  private readonly slots = new WeakMap<object, Slot<T>>();

  constructor(private readonly opts: BoundedOptions) {}

  /**
   * The result of `run` for `key` (an application's config object), fresh within the TTL;
   * `late(seconds)` builds the answer for a caller who waited `timeoutMs` in vain, and
   * `failed(err)` the answer for a check that threw.
   */
  async get(
    key: object,
    run: () => Promise<T>,
    late: (seconds: number) => T,
    failed: (err: unknown) => T,
  ): Promise<T> {
    const now = Date.now();
    let slot = this.slots.get(key);
    if (slot === undefined) {
      slot = { at: 0, started: 0 };
      this.slots.set(key, slot);
    }
    if (slot.pending === undefined) {
      if (slot.value !== undefined && now - slot.at < this.opts.ttlMs) return slot.value;
      const s = slot;
      s.started = now;
      s.pending = run()
        .catch((err: unknown) => failed(err))
        .then((v) => {
          s.value = v;
          s.at = Date.now();
          s.pending = undefined;
          return v;
        });
    }
    const left = slot.started + this.opts.timeoutMs - now;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<T>((resolve) => {
      timer = setTimeout(
        () => resolve(late(Math.round(this.opts.timeoutMs / 1000))),
        Math.max(0, left),
      );
      timer.unref();
    });
    try {
      return await Promise.race([slot.pending as Promise<T>, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
