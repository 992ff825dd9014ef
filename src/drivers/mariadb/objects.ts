/**
 * The schema objects of a MariaDB database beside its tables (views, triggers, routines,
 * events): listing them, reading their definitions (SHOW CREATE, with the session settings
 * each was defined under) and a client script that recreates them in another database.
 * The mariadb restore (restore.ts) needs them because only tables can be renamed across
 * databases.
 */
import { FerryError } from "../../core/errors.js";
import type { MariadbConfig } from "./config.js";
import { mariadb, quoteIdent, quoteLiteral } from "./conn.js";

export interface Objects {
  tables: string[];
  views: string[];
  triggers: string[];
  routines: { name: string; type: string }[];
  events: string[];
}

/** The tables, views, triggers, routines and events of `db`. */
export async function objectsOf(
  config: MariadbConfig,
  db: string,
  signal: AbortSignal,
): Promise<Objects> {
  const l = quoteLiteral(db);
  const rows = await mariadb(
    config,
    [
      `SELECT 'table', TABLE_NAME, '' FROM information_schema.TABLES WHERE TABLE_SCHEMA = ${l} AND TABLE_TYPE <> 'VIEW'`,
      `SELECT 'view', TABLE_NAME, '' FROM information_schema.VIEWS WHERE TABLE_SCHEMA = ${l}`,
      `SELECT 'trigger', TRIGGER_NAME, '' FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = ${l}`,
      `SELECT 'routine', ROUTINE_NAME, ROUTINE_TYPE FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = ${l}`,
      `SELECT 'event', EVENT_NAME, '' FROM information_schema.EVENTS WHERE EVENT_SCHEMA = ${l}`,
    ].join(" UNION ALL "),
    signal,
  );
  const o: Objects = { tables: [], views: [], triggers: [], routines: [], events: [] };
  for (const [kind, name = "", type = ""] of rows) {
    if (kind === "table") o.tables.push(name);
    else if (kind === "view") o.views.push(name);
    else if (kind === "trigger") o.triggers.push(name);
    else if (kind === "routine") o.routines.push({ name, type });
    else if (kind === "event") o.events.push(name);
  }
  return o;
}

/** A CREATE statement with the session settings it was defined under. */
export interface Definition {
  kind: string;
  name: string;
  sqlMode: string;
  charset: string;
  collation: string;
  create: string;
}

/** Where each SHOW CREATE … answer puts a field: its column layouts differ. */
interface ShowColumns {
  /** None for views: they keep no sql_mode. */
  sqlMode?: number;
  create: number;
  charset: number;
  collation: number;
}
/** SHOW CREATE TRIGGER, PROCEDURE and FUNCTION. */
const ROUTINE_COLUMNS: ShowColumns = { sqlMode: 1, create: 2, charset: 3, collation: 4 };
const SHOW_COLUMNS: Record<string, ShowColumns> = {
  VIEW: { create: 1, charset: 2, collation: 3 },
  EVENT: { sqlMode: 1, create: 3, charset: 4, collation: 5 },
};

/** SHOW CREATE … of every non-table object of `db` (views, triggers, routines, events). */
export async function definitionsOf(
  config: MariadbConfig,
  db: string,
  o: Objects,
  signal: AbortSignal,
): Promise<Definition[]> {
  const out: Definition[] = [];
  const show = async (kind: string, name: string, stmt: string) => {
    const r = (await mariadb(config, stmt, signal, db))[0] ?? [];
    const col = SHOW_COLUMNS[kind] ?? ROUTINE_COLUMNS;
    out.push({
      kind,
      name,
      sqlMode: (col.sqlMode === undefined ? undefined : r[col.sqlMode]) ?? "",
      charset: r[col.charset] ?? "utf8mb4",
      collation: r[col.collation] ?? "",
      create: r[col.create] ?? "",
    });
  };
  for (const v of o.views) await show("VIEW", v, `SHOW CREATE VIEW ${quoteIdent(v)}`);
  for (const t of o.triggers) await show("TRIGGER", t, `SHOW CREATE TRIGGER ${quoteIdent(t)}`);
  for (const r of o.routines)
    await show(r.type, r.name, `SHOW CREATE ${r.type} ${quoteIdent(r.name)}`);
  for (const e of o.events) await show("EVENT", e, `SHOW CREATE EVENT ${quoteIdent(e)}`);
  return out;
}

/** A script that recreates `defs` in `db`, with a delimiter that no definition contains. */
export function createScript(db: string, defs: Definition[], id: string): string {
  // The client keeps at most 15 characters of a delimiter.
  const delim = `$$${id}$$`;
  const lines = [`USE ${quoteIdent(db)};`, `DELIMITER ${delim}`];
  for (const d of defs) {
    if (d.create.includes(delim))
      throw new FerryError("INTERNAL", "a definition contains the script delimiter");
    const settings = [`character_set_client = ${quoteLiteral(d.charset)}`];
    if (d.collation !== "") settings.push(`collation_connection = ${quoteLiteral(d.collation)}`);
    if (d.kind !== "VIEW") settings.push(`sql_mode = ${quoteLiteral(d.sqlMode)}`);
    lines.push(`SET SESSION ${settings.join(", ")}${delim}`, `${d.create}${delim}`);
  }
  lines.push("DELIMITER ;");
  return `${lines.join("\n")}\n`;
}
