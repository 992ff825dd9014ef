/**
 * Restore of the postgres driver: every database of the archive is restored by
 * `pg_restore` into a new database `NAME__ferry_restore_<id>` while the archive streams in
 * (the dump parts are piped straight into pg_restore's stdin; nothing is spooled). Only
 * `commit`, called after the archive's end record verified, touches the live databases:
 * in ONE transaction it terminates the other sessions on each original database and swaps
 * names (`ALTER DATABASE NAME RENAME TO NAME__ferry_old_<id>`, then the restored one to
 * `NAME`), so either every database of the archive is swapped or none. The old databases
 * are dropped afterwards. Any failure before or during the swap drops the temporary
 * databases and leaves the originals as they were.
 *
 * Limits, documented: `pg_dumpall --globals-only` (roles, tablespaces) is not replayed,
 * since that would change live roles before commit; it stays in the archive for
 * `psql -f`. Database-level settings (`ALTER DATABASE … SET`, database ACLs) are not in a
 * pg_dump without --create; the new database takes the original's owner, encoding and
 * locale. A crash of ferryd mid-restore can leave a `*__ferry_restore_*` database behind
 * (never a half-swapped one: the swap is one transaction).
 *
 * The session (entries checked, scratch databases, cleanup) is the one shared with mariadb,
 * src/drivers/db/restore.ts; this module brings what is PostgreSQL's.
 */
import { describeError } from "../../core/errors.js";
import { parsePartPath } from "../db/dump-parts.js";
import { cleanupSignal, type DbTarget, newRestoreId, openDbRestore } from "../db/restore.js";
import type { RestoreContext, RestoreSession } from "../types.js";
import { GLOBALS_PREFIX, META_PATH, maintenanceDb } from "./backup.js";
import type { PostgresConfig } from "./config.js";
import { conninfo, pgHelper, psql, quoteIdent, quoteLiteral, serverInfo } from "./conn.js";

/** Cuts a name to at most `max` bytes of UTF-8 without splitting a character. */
function truncateBytes(s: string, max: number): string {
  let out = "";
  for (const ch of s) {
    if (Buffer.byteLength(out + ch) > max) break;
    out += ch;
  }
  return out;
}

/** `NAME__ferry_<kind>_<id>`, NAME shortened so the whole fits PostgreSQL's 63 bytes. */
export function stagingName(name: string, kind: "restore" | "old", id: string): string {
  const suffix = `__ferry_${kind}_${id}`;
  return truncateBytes(name, 63 - suffix.length) + suffix;
}

export async function openRestore(
  config: PostgresConfig,
  ctx: RestoreContext,
): Promise<RestoreSession> {
  const { signal } = ctx;
  const info = await serverInfo(config, maintenanceDb(config.databases), signal);
  const force = info.serverVersionNum >= 130000 ? " WITH (FORCE)" : "";
  /** The archive's databases so far: the maintenance connection avoids them. */
  const names: string[] = [];
  const adminDb = () => maintenanceDb(names);
  let globalsWarned = false;

  /** One transaction: terminate sessions on each original and swap the names. */
  async function swapNames(targets: readonly DbTarget[]): Promise<void> {
    const terminate = (name: string) =>
      `SELECT count(pg_terminate_backend(pid${info.serverVersionNum >= 140000 ? ", 5000" : ""})) FROM pg_stat_activity WHERE datname = ${quoteLiteral(name)} AND pid <> pg_backend_pid();`;
    const existing = new Set(
      (
        await psql(
          config,
          adminDb(),
          `SELECT datname FROM pg_database WHERE datname IN (${targets.map((t) => quoteLiteral(t.name)).join(", ")})`,
          signal,
        )
      ).map((r) => r[0]),
    );
    const sql = ["BEGIN;"];
    for (const t of targets) {
      if (existing.has(t.name)) {
        sql.push(terminate(t.name));
        sql.push(`ALTER DATABASE ${quoteIdent(t.name)} RENAME TO ${quoteIdent(t.old)};`);
      }
      sql.push(`ALTER DATABASE ${quoteIdent(t.temp)} RENAME TO ${quoteIdent(t.name)};`);
    }
    sql.push("COMMIT;");
    // A client can connect between the termination and the rename; try a few times.
    for (let attempt = 1; ; attempt++) {
      try {
        await psql(config, adminDb(), sql.join("\n"), signal);
        return;
      } catch (err) {
        const busy = /being accessed by other users/.test(describeError(err));
        if (!busy || attempt >= 5) throw err;
        await new Promise((r) => setTimeout(r, 200 * attempt));
      }
    }
  }

  const dropDatabase = (name: string, cleanup: AbortSignal) =>
    psql(config, adminDb(), `DROP DATABASE IF EXISTS ${quoteIdent(name)}${force}`, cleanup).then(
      () => {},
    );

  return openDbRestore(
    {
      driver: "postgres",
      ext: "pgdump",
      id: newRestoreId(),
      stagingName,
      declares: (name) =>
        config.all ? !name.includes("__ferry_") : config.databases.includes(name),

      otherEntry(path) {
        if (path === META_PATH) return true;
        if (parsePartPath(path, GLOBALS_PREFIX, "sql") === undefined) return false;
        if (!globalsWarned) {
          ctx.warnings.push(
            "roles and tablespaces (data/globals) are not restored automatically; extract them and apply with psql -f if needed",
          );
          globalsWarned = true;
        }
        return true;
      },

      async createScratch(t) {
        names.push(t.name);
        // The new database copies the original's owner, encoding and locale (including an ICU
        // locale provider, PostgreSQL 15+) when there is one. to_jsonb reads the row whatever
        // the server's catalogue columns are called (daticulocale became datlocale in 17).
        const rows = await psql(
          config,
          adminDb(),
          `SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), to_jsonb(d)::text FROM pg_database d WHERE datname = ${quoteLiteral(t.name)}`,
          signal,
        );
        const r = rows[0];
        let opts = "";
        if (r !== undefined) {
          const d = JSON.parse(r[2] ?? "{}") as Record<string, string | null>;
          opts = ` OWNER ${quoteIdent(r[0] ?? "")} ENCODING ${quoteLiteral(r[1] ?? "")} LC_COLLATE ${quoteLiteral(d.datcollate ?? "")} LC_CTYPE ${quoteLiteral(d.datctype ?? "")}`;
          const icu = d.datlocale ?? d.daticulocale;
          if (d.datlocprovider === "i" && typeof icu === "string") {
            opts += ` LOCALE_PROVIDER icu ICU_LOCALE ${quoteLiteral(icu)}`;
          }
        }
        await psql(
          config,
          adminDb(),
          `CREATE DATABASE ${quoteIdent(t.temp)} TEMPLATE template0${opts}`,
          signal,
        );
      },

      startLoad: (t) =>
        pgHelper(
          config,
          ["pg_restore", "--no-password", "--exit-on-error", `--dbname=${conninfo(t.temp)}`],
          { label: `pg_restore into ${t.temp}`, signal, stdin: "pipe", stdout: "ignore" },
        ),

      dropDatabase,

      async swap(targets) {
        await swapNames(targets);
        for (const t of targets) {
          t.swapped = true;
          t.created = false;
        }
        for (const t of targets) {
          try {
            await dropDatabase(t.old, cleanupSignal());
          } catch (err) {
            ctx.warnings.push(
              `restored ${t.name}, but could not drop the old database ${t.old}: ${describeError(err)}`,
            );
          }
        }
      },
    },
    ctx,
  );
}
