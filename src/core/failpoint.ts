/**
 * Failpoints for crash and race tests, set through FERRY_FAILPOINTS (comma-separated):
 * - `NAME`: the process kills itself with SIGKILL at that point, exactly as a power cut
 *   or `kill -9` would (crash tests stop ferryd at a precise step of a restore);
 * - `NAME:pauseMS`: the process stops there for MS milliseconds (at most 10 s), holding
 *   a step open so that a racing test is sure to act during it.
 * Used only by the test suite; unset in production, where this is a single string lookup.
 */
export function failpoint(name: string): void {
  const list = process.env.FERRY_FAILPOINTS;
  if (list === undefined || list === "") return;
  for (const item of list.split(",")) {
    const [point, action] = item.split(":", 2);
    if (point !== name) continue;
    if (action === undefined) process.kill(process.pid, "SIGKILL");
    const pause = /^pause(\d{1,5})$/.exec(action ?? "");
    if (pause !== null) {
      const ms = Math.min(Number(pause[1]), 10_000);
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
    }
  }
}
