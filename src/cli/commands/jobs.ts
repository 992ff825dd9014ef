import type { JobInfo } from "../../api/types.js";
import type { FerryClient } from "../client.js";
import { EXIT } from "../exit-codes.js";
import { formatBytes } from "../progress.js";

export async function jobsCommand(client: FerryClient, json: boolean): Promise<number> {
  const { jobs } = await client.json<{ jobs: JobInfo[] }>("GET", "/v1/jobs");
  if (json) {
    process.stdout.write(`${JSON.stringify(jobs, null, 2)}\n`);
    return EXIT.OK;
  }
  if (jobs.length === 0) {
    process.stdout.write("no jobs\n");
    return EXIT.OK;
  }
  const rows = [
    ["ID", "KIND", "APP", "STATE", "BYTES", "STARTED", "PEER"],
    ...jobs.map((j) => [
      j.id,
      j.kind,
      j.app,
      j.error === undefined ? j.state : `${j.state} (${j.error.code})`,
      formatBytes(j.bytes),
      j.started.replace("T", " ").slice(0, 19),
      `uid ${j.peer.uid} pid ${j.peer.pid}`,
    ]),
  ];
  const widths =
    rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] as string).length))) ?? [];
  for (const r of rows) {
    process.stdout.write(
      `${r.map((c, i) => (i < r.length - 1 ? c.padEnd((widths[i] as number) + 2) : c)).join("")}\n`,
    );
  }
  return EXIT.OK;
}

export async function cancelCommand(client: FerryClient, id: string): Promise<number> {
  const job = await client.json<JobInfo & { cancelling: boolean }>(
    "DELETE",
    `/v1/jobs/${encodeURIComponent(id)}`,
  );
  process.stdout.write(
    job.cancelling
      ? `cancelling job ${job.id} (${job.kind} of ${job.app})\n`
      : `job ${job.id} (${job.kind} of ${job.app}) is not running: ${job.state}\n`,
  );
  return EXIT.OK;
}
