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
import { createScript, type Definition, definitionsOf, objectsOf } from "./objects.js";

/** `NAME__ferry_<kind>_<id>`, NAME shortened so the whole fits MariaDB's 64 characters. */
export function stagingName(name: string, kind: "restore" | "old", id: string): string {
  const suffix = `__ferry_${kind}_${id}`;
  return [...name].slice(0, 64 - suffix.length).join("") + suffix;
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
