/**
 * Failpoints for crash tests: when FERRY_FAILPOINTS (comma-separated) names a point, the
 * process kills itself with SIGKILL there, exactly as a power cut or `kill -9` would.
 * Used only by the test suite to stop ferryd at a precise step of a restore; unset in
 * production, where this is a single string lookup.
 */
export function failpoint(name: string): void {
  const list = process.env.FERRY_FAILPOINTS;
  if (list === undefined || list === "") return;
  if (list.split(",").includes(name)) process.kill(process.pid, "SIGKILL");
}
