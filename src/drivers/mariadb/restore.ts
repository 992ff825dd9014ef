/**
 * Restore of the mariadb driver. Each database of the archive is loaded, while the archive
 * streams in, by the `mariadb` client (with `--sandbox` where the client has it, and the
 * dump's own sandbox line kept) into a scratch database `NAME__ferry_restore_<id>`. Nothing
 * live is touched before `commit` (called after the archive's end record verified). Then,
 * per database:
 *
 * 1. Triggers block moving a table to another database (MariaDB: "Trigger in wrong
 *    schema"), so the scratch tables' triggers are recorded (SHOW CREATE TRIGGER) and
 *    dropped, and so are the live tables' triggers (recorded for a rollback).
 * 2. ONE `RENAME TABLE live.a TO old.a, …, scratch.a TO live.a, …` moves every live base
 *    table to `NAME__ferry_old_<id>` and every restored one into place; MariaDB executes a
 *    multi-table RENAME atomically (all or none, crash-safe since 10.6's atomic DDL).
 * 3. Views, routines and events cannot be renamed across databases: the live ones are
 *    dropped and the restored ones recreated in the live database from their SHOW CREATE
 *    text (the same statements that just succeeded in the scratch database), then the
 *    recorded triggers.
 * 4. The scratch and old databases are dropped.
 *
 * If step 1 or 2 fails, the live triggers are recreated and the live tables are untouched.
 * A failure in step 3 (not expected: the same definitions were just created) is reported
 * with the previous tables kept in `NAME__ferry_old_<id>`. Between step 1 and step 3 the
 * live tables have no triggers: writes in that window (milliseconds) do not fire them.
 * Several databases are swapped one after the other, not atomically together.
 *
 * The session (entries checked, scratch databases, cleanup) is the one shared with
 * postgres, src/drivers/db/restore.ts; this module brings what is MariaDB's.
 */
import { describeError, FerryError } from "../../core/errors.js";
import { cleanupSignal, type DbTarget, newRestoreId, openDbRestore } from "../db/restore.js";
import type { RestoreContext, RestoreSession } from "../types.js";
import { META_PATH } from "./backup.js";
import type { MariadbConfig } from "./config.js";
import {
  clientArgs,
  clientHasSandbox,
  mariadb,
  mariadbScript,
  myHelper,
  quoteIdent,
  quoteLiteral,
} from "./conn.js";

/** `NAME__ferry_<kind>_<id>`, NAME shortened so the whole fits MariaDB's 64 characters. */
export function stagingName(name: string, kind: "restore" | "old", id: string): string {
  const suffix = `__ferry_${kind}_${id}`;
  return [...name].slice(0, 64 - suffix.length).join("") + suffix;
}

interface Objects {
  tables: string[];
  views: string[];
  triggers: string[];
  routines: { name: string; type: string }[];
  events: string[];
}

async function objectsOf(config: MariadbConfig, db: string, signal: AbortSignal): Promise<Objects> {
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
interface Definition {
  kind: string;
  name: string;
  sqlMode: string;
  charset: string;
  collation: string;
  create: string;
}

/** SHOW CREATE … of every non-table object of `db` (views, triggers, routines, events). */
async function definitionsOf(
  config: MariadbConfig,
  db: string,
  o: Objects,
  signal: AbortSignal,
): Promise<Definition[]> {
  const out: Definition[] = [];
  const show = async (kind: string, name: string, stmt: string) => {
    const r = (await mariadb(config, stmt, signal, db))[0] ?? [];
    // Column layouts differ per SHOW CREATE statement.
    if (kind === "VIEW") {
      out.push({
        kind,
        name,
        sqlMode: "",
        charset: r[2] ?? "utf8mb4",
        collation: r[3] ?? "",
        create: r[1] ?? "",
      });
    } else if (kind === "EVENT") {
      out.push({
        kind,
        name,
        sqlMode: r[1] ?? "",
        charset: r[4] ?? "utf8mb4",
        collation: r[5] ?? "",
        create: r[3] ?? "",
      });
    } else {
      out.push({
        kind,
        name,
        sqlMode: r[1] ?? "",
        charset: r[3] ?? "utf8mb4",
        collation: r[4] ?? "",
        create: r[2] ?? "",
      });
    }
  };
  for (const v of o.views) await show("VIEW", v, `SHOW CREATE VIEW ${quoteIdent(v)}`);
  for (const t of o.triggers) await show("TRIGGER", t, `SHOW CREATE TRIGGER ${quoteIdent(t)}`);
  for (const r of o.routines)
    await show(r.type, r.name, `SHOW CREATE ${r.type} ${quoteIdent(r.name)}`);
  for (const e of o.events) await show("EVENT", e, `SHOW CREATE EVENT ${quoteIdent(e)}`);
  return out;
}

/** A script that recreates `defs` in `db`, with a delimiter that no definition contains. */
function createScript(db: string, defs: Definition[], id: string): string {
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

/**
 * Steps 1 to 4 of the header for one database whose dump is loaded into `t.temp`.
 * Throws before step 3 with the live tables untouched (their triggers put back).
 */
async function swapDatabase(
  config: MariadbConfig,
  t: DbTarget,
  id: string,
  ctx: RestoreContext,
): Promise<void> {
  const { signal } = ctx;
  const S = quoteIdent(t.temp);
  const T = quoteIdent(t.name);
  const O = quoteIdent(t.old);
  const fresh = await objectsOf(config, t.temp, signal);
  const freshDefs = await definitionsOf(config, t.temp, fresh, signal);
  const exists =
    (
      await mariadb(
        config,
        `SELECT 1 FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ${quoteLiteral(t.name)}`,
        signal,
      )
    ).length > 0;
  const live = exists
    ? await objectsOf(config, t.name, signal)
    : { tables: [], views: [], triggers: [], routines: [], events: [] };
  const liveTriggers = definitionsOf(
    config,
    t.name,
    { ...live, views: [], routines: [], events: [] },
    signal,
  );
  const liveTriggerDefs = exists ? await liveTriggers : [];

  // Steps 1 and 2: one client run, stopping at the first error.
  const a = ["SET SESSION lock_wait_timeout = 60;"];
  if (!exists) a.push(`CREATE DATABASE ${T};`);
  a.push(`CREATE DATABASE ${O};`);
  for (const tr of fresh.triggers) a.push(`DROP TRIGGER ${S}.${quoteIdent(tr)};`);
  for (const tr of live.triggers) a.push(`DROP TRIGGER ${T}.${quoteIdent(tr)};`);
  const moves = [
    ...live.tables.map((x) => `${T}.${quoteIdent(x)} TO ${O}.${quoteIdent(x)}`),
    ...fresh.tables.map((x) => `${S}.${quoteIdent(x)} TO ${T}.${quoteIdent(x)}`),
  ];
  if (moves.length > 0) a.push(`RENAME TABLE ${moves.join(", ")};`);
  try {
    await mariadbScript(config, `${a.join("\n")}\n`, signal);
  } catch (err) {
    // The RENAME is all-or-nothing: put back the live triggers that were dropped.
    if (liveTriggerDefs.length > 0) {
      await mariadbScript(config, createScript(t.name, liveTriggerDefs, id), cleanupSignal(), {
        force: true,
      }).catch((e) =>
        ctx.warnings.push(`could not recreate the triggers of ${t.name}: ${describeError(e)}`),
      );
    }
    await mariadb(config, `DROP DATABASE IF EXISTS ${O}`, cleanupSignal()).catch(() => {});
    throw err;
  }

  // Step 3: views, routines, events and triggers of the restored database.
  try {
    const drops = [
      ...live.views.map((v) => `DROP VIEW IF EXISTS ${T}.${quoteIdent(v)};`),
      ...live.routines.map((r) => `DROP ${r.type} IF EXISTS ${T}.${quoteIdent(r.name)};`),
      ...live.events.map((e) => `DROP EVENT IF EXISTS ${T}.${quoteIdent(e)};`),
    ];
    if (drops.length > 0) await mariadbScript(config, `${drops.join("\n")}\n`, signal);
    // Views may use other views: create in passes until none is left or none succeeds.
    let views = freshDefs.filter((d) => d.kind === "VIEW");
    while (views.length > 0) {
      const failed: Definition[] = [];
      let lastErr: unknown;
      for (const v of views) {
        try {
          await mariadbScript(config, createScript(t.name, [v], id), signal);
        } catch (err) {
          failed.push(v);
          lastErr = err;
        }
      }
      if (failed.length === views.length) throw lastErr;
      views = failed;
    }
    const others = freshDefs.filter((d) => d.kind !== "VIEW");
    if (others.length > 0) await mariadbScript(config, createScript(t.name, others, id), signal);
  } catch (err) {
    throw new FerryError(
      "HELPER_FAILED",
      `${t.name}: the restored tables are live, but recreating its views, routines, events or triggers failed; the previous tables are kept in ${t.old}: ${describeError(err)}`,
    );
  }
  // Step 4.
  for (const db of [t.temp, t.old]) {
    await mariadb(config, `DROP DATABASE IF EXISTS ${quoteIdent(db)}`, cleanupSignal()).catch((e) =>
      ctx.warnings.push(`restored ${t.name}, but could not drop ${db}: ${describeError(e)}`),
    );
  }
  t.created = false;
}

export async function openRestore(
  config: MariadbConfig,
  ctx: RestoreContext,
): Promise<RestoreSession> {
  const { signal } = ctx;
  const id = newRestoreId();
  const sandbox = await clientHasSandbox(config, signal);
  return openDbRestore(
    {
      driver: "mariadb",
      ext: "sql",
      id,
      stagingName,
      declares: (name) => config.databases.includes(name),
      otherEntry: (path) => path === META_PATH,

      async createScratch(t) {
        const cs = (
          await mariadb(
            config,
            `SELECT DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = ${quoteLiteral(t.name)}`,
            signal,
          )
        )[0];
        const opts =
          cs === undefined
            ? ""
            : ` CHARACTER SET ${quoteLiteral(cs[0] ?? "")} COLLATE ${quoteLiteral(cs[1] ?? "")}`;
        await mariadb(config, `CREATE DATABASE ${quoteIdent(t.temp)}${opts}`, signal);
      },

      startLoad: (t) =>
        myHelper(
          config,
          [
            "mariadb",
            ...clientArgs(config),
            "--batch",
            ...(sandbox ? ["--sandbox"] : []),
            `--database=${t.temp}`,
          ],
          { label: `mariadb loading ${t.temp}`, signal, stdin: "pipe", stdout: "ignore" },
        ),

      dropDatabase: (name, cleanup) =>
        mariadb(config, `DROP DATABASE IF EXISTS ${quoteIdent(name)}`, cleanup).then(() => {}),

      // One database after the other: each swap is atomic, the set is not (see the header).
      async swap(targets) {
        for (const t of targets) {
          await swapDatabase(config, t, id, ctx);
          t.swapped = true;
        }
      },
    },
    ctx,
  );
}
