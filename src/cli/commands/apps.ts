import type { AppSummary } from "../../api/types.js";
import type { FerryClient } from "../client.js";
import { EXIT } from "../exit-codes.js";

export async function appsCommand(client: FerryClient, json: boolean): Promise<number> {
  const { apps } = await client.json<{ apps: AppSummary[] }>("GET", "/v1/apps");
  if (json) {
    process.stdout.write(`${JSON.stringify(apps, null, 2)}\n`);
    return EXIT.OK;
  }
  if (apps.length === 0) {
    process.stdout.write("no applications are declared in ferryd's config\n");
    return EXIT.OK;
  }
  const rows = [
    ["APP", "DRIVER", "RESTORE", "HEALTH"],
    ...apps.map((a) => [
      a.name,
      a.driver,
      a.restore ? "yes" : "no",
      a.health.ok ? "ok" : `FAIL: ${a.health.message}`,
    ]),
  ];
  const widths = [0, 1, 2].map((i) => Math.max(...rows.map((r) => (r[i] as string).length)));
  for (const r of rows) {
    process.stdout.write(
      `${r.map((c, i) => (i < 3 ? c.padEnd((widths[i] as number) + 2) : c)).join("")}\n`,
    );
  }
  return EXIT.OK;
}
