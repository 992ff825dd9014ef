import { readFileSync } from "node:fs";

/** Ferry's version, from package.json (dist/src/core → package root). */
export const VERSION: string = (() => {
  try {
    const url = new URL("../../../package.json", import.meta.url);
    return (JSON.parse(readFileSync(url, "utf8")) as { version: string }).version;
  } catch {
    return "0.0.0";
  }
})();
