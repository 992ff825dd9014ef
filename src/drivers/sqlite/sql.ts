/** Names and quoting shared by the sqlite driver's backup and restore. */

export const SQLITE_ENTRY = "data/database.sqlite";
export const SPOOL_NAME = "database.sqlite";

/** An SQLite URI filename for an absolute path (`%`, `?` and `#` escaped). */
export function sqliteUri(path: string, params: string): string {
  const escaped = path.replace(
    /[%?#]/g,
    (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
  return `file:${escaped}?${params}`;
}

/** A string literal for SQL. */
export function sqlString(s: string): string {
  return `'${s.replaceAll("'", "''")}'`;
}
