/**
 * The one registration list of drivers. Adding a driver means adding it here; a second
 * registration of the same name is a programming error and throws at start-up.
 */
import { agentDriver } from "./agent/index.js";
import { commandDriver } from "./command/index.js";
import { filesDriver } from "./files/index.js";
import { mariadbDriver } from "./mariadb/index.js";
import { postgresDriver } from "./postgres/index.js";
import { redisDriver } from "./redis/index.js";
import { sqliteDriver } from "./sqlite/index.js";
import type { Driver } from "./types.js";

// biome-ignore lint/suspicious/noExplicitAny: each driver carries its own config type
const registered: Driver<any>[] = [
  filesDriver,
  postgresDriver,
  mariadbDriver,
  sqliteDriver,
  redisDriver,
  commandDriver,
  agentDriver,
];

// biome-ignore lint/suspicious/noExplicitAny: see above
export const drivers: ReadonlyMap<string, Driver<any>> = (() => {
  // biome-ignore lint/suspicious/noExplicitAny: see above
  const map = new Map<string, Driver<any>>();
  for (const d of registered) {
    if (map.has(d.name)) throw new Error(`driver ${d.name} is registered twice`);
    map.set(d.name, d);
  }
  return map;
})();
