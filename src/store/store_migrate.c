/*
 * store_migrate.c: the schema, as an ordered list of steps.
 *
 * PRAGMA user_version holds the number of the last step applied. Each step
 * runs in its own transaction together with the bump of user_version, so a
 * crash leaves the file at one step or the next, never in between. Steps
 * are append-only: a released step is never edited; a change of schema is
 * a new step.
 *
 * Tables keep the full record as JSON text (what callers wrote, returned
 * as is) next to the few columns that queries filter and sort on.
 */
#include "store/store_internal.h"

#include "core/log.h"

#include <stdio.h>

struct migration {
    int version;
    const char *what;
    const char *sql;
};

/* An ExecutionRecord's symbol and signed quantity (a sell counts
 * negative), as the simulated exchange writes them (market/records.c). */
#define POSITION_SYMBOL(rec) "json_extract(" rec ", '$.metadata.symbol')"
#define POSITION_QTY(rec)                                                                          \
    "(CASE json_extract(" rec ", '$.metadata.side') WHEN 'sell' THEN -1.0 ELSE 1.0 END"            \
    " * CAST(json_extract(" rec ", '$.quantity') AS REAL))"
/* Adds (sign "") or takes away (sign "-") one row's fill. */
#define POSITION_MOVE(row, sign)                                                                   \
    " INSERT INTO positions (provider, instance_id, symbol, net)"                                  \
    " SELECT " row ".provider, " row ".instance_id, " POSITION_SYMBOL(row ".record") ", " sign     \
    POSITION_QTY(row ".record") " WHERE " POSITION_SYMBOL(                                         \
        row ".record") " IS NOT NULL"                                                              \
                       " ON CONFLICT (provider, instance_id, symbol) DO UPDATE SET net = net + "   \
                       "excluded.net;"

/* The execution `row` is of an instance that exists. */
#define POSITION_OWNED(row) "EXISTS (SELECT 1 FROM instances WHERE id = " row ".instance_id)"

static const struct migration migrations[] = {
    {1, "initial schema",
     /* Instances: spec is the InstanceSpec; times are wall-clock ms. */
     "CREATE TABLE instances ("
     "  id TEXT PRIMARY KEY,"
     "  spec TEXT NOT NULL,"
     "  desired_running INTEGER NOT NULL,"
     "  stop_reason TEXT,"
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL);"
     "CREATE TABLE usage ("
     "  strategy TEXT NOT NULL,"
     "  hash TEXT NOT NULL,"
     "  first_seen INTEGER NOT NULL,"
     "  last_seen INTEGER NOT NULL,"
     "  PRIMARY KEY (strategy, hash));"
     "CREATE TABLE module_metadata ("
     "  hash TEXT PRIMARY KEY,"
     "  metadata TEXT NOT NULL,"
     "  updated_at INTEGER NOT NULL);"
     /* Orders are listed per instance, newest first. */
     "CREATE TABLE orders ("
     "  id TEXT PRIMARY KEY,"
     "  instance_id TEXT NOT NULL,"
     "  provider TEXT NOT NULL,"
     "  state TEXT NOT NULL,"
     "  client_order_id TEXT,"
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL,"
     "  record TEXT NOT NULL);"
     "CREATE INDEX orders_by_instance ON orders (instance_id, updated_at DESC);"
     /* Execution ids come from the venue, so they are unique per provider. */
     "CREATE TABLE executions ("
     "  provider TEXT NOT NULL,"
     "  execution_id TEXT NOT NULL,"
     "  order_id TEXT NOT NULL,"
     "  instance_id TEXT NOT NULL,"
     "  traded_at INTEGER NOT NULL,"
     "  created_at INTEGER NOT NULL,"
     "  record TEXT NOT NULL,"
     "  PRIMARY KEY (provider, execution_id));"
     "CREATE INDEX executions_by_instance ON executions (instance_id, traded_at DESC);"
     "CREATE INDEX executions_by_order ON executions (order_id);"
     "CREATE TABLE balances ("
     "  provider TEXT NOT NULL,"
     "  asset TEXT NOT NULL,"
     "  snapshot_at INTEGER NOT NULL,"
     "  created_at INTEGER NOT NULL,"
     "  updated_at INTEGER NOT NULL,"
     "  record TEXT NOT NULL,"
     "  PRIMARY KEY (provider, asset));"
     "CREATE TABLE providers ("
     "  name TEXT PRIMARY KEY,"
     "  spec TEXT NOT NULL,"
     "  updated_at INTEGER NOT NULL);"
     "CREATE TABLE settings ("
     "  key TEXT PRIMARY KEY,"
     "  value TEXT NOT NULL,"
     "  updated_at INTEGER NOT NULL);"},
    /* Net positions for the risk limits, kept by triggers as executions
     * are written: a start reads one row per instance and symbol instead of
     * parsing every execution (a million took 2.3 s). */
    {2, "net positions",
     "CREATE TABLE positions ("
     "  provider TEXT NOT NULL,"
     "  instance_id TEXT NOT NULL,"
     "  symbol TEXT NOT NULL,"
     "  net REAL NOT NULL,"
     "  PRIMARY KEY (provider, instance_id, symbol)) WITHOUT ROWID;"
     "INSERT INTO positions (provider, instance_id, symbol, net)"
     "  SELECT provider, instance_id, " POSITION_SYMBOL("record") ", SUM(" POSITION_QTY(
         "record") ")"
                   "  FROM executions WHERE " POSITION_SYMBOL(
                       "record") " IS NOT NULL GROUP BY 1, 2, 3;"
                                 "CREATE TRIGGER positions_add AFTER INSERT ON executions"
                                 "  WHEN " POSITION_SYMBOL(
                                     "NEW.record") " IS NOT NULL "
                                                   "BEGIN" POSITION_MOVE(
                                                       "NEW",
                                                       "") "END;"
                                                           "CREATE TRIGGER "
                                                           "positions_move "
                                                           "AFTER UPDATE OF "
                                                           "record ON "
                                                           "executions "
                                                           "BEGI"
                                                           "N" POSITION_MOVE("OLD", "-")
                                                               POSITION_MOVE("NEW",
                                                                             "") "END;"
                                                                                 "CREAT"
                                                                                 "E "
                                                                                 "TRIGG"
                                                                                 "ER "
                                                                                 "posit"
                                                                                 "ions_"
                                                                                 "remov"
                                                                                 "e "
                                                                                 "AFTER"
                                                                                 " DELE"
                                                                                 "TE "
                                                                                 "ON "
                                                                                 "execu"
                                                                                 "tions"
                                                                                 " BEGI"
                                                                                 "N" POSITION_MOVE(
                                                                                     "O"
                                                                                     "L"
                                                                                     "D",
                                                                                     "-") "END;"},
    /* A position belongs to an instance while it exists: deleting it drops
     * its rows, and fills written after the delete (the market writes in
     * batches) no longer move any, so an instance created later under the
     * same id starts flat. The executions stay. */
    {3, "positions end with their instance",
     "DROP TRIGGER positions_add;"
     "DROP TRIGGER positions_move;"
     "DROP TRIGGER positions_remove;"
     "DELETE FROM positions WHERE instance_id NOT IN (SELECT id FROM instances);"
     "CREATE INDEX positions_by_instance ON positions (instance_id);"
     "CREATE TRIGGER positions_forget AFTER DELETE ON instances"
     " BEGIN DELETE FROM positions WHERE instance_id = OLD.id; END;"
     "CREATE TRIGGER positions_add AFTER INSERT ON executions"
     "  WHEN " POSITION_SYMBOL("NEW.record") " IS NOT NULL AND " POSITION_OWNED(
         "NEW") " BEGIN" POSITION_MOVE("NEW",
                                       "") " END;"
                                           "CREATE TRIGGER positions_move AFTER UPDATE OF record "
                                           "ON executions"
                                           "  WHEN " POSITION_OWNED("NEW") " BEGIN" POSITION_MOVE(
                                               "OLD", "-")
                                               POSITION_MOVE(
                                                   "NEW",
                                                   "") " END;"
                                                       "CREATE TRIGGER positions_remove AFTER "
                                                       "DELETE ON executions"
                                                       "  WHEN " POSITION_OWNED(
                                                           "OLD") " BEGIN" POSITION_MOVE("OLD",
                                                                                         "-") " END"
                                                                                              ";"},
    /* The order history is pruned by age (store_history_prune): indexes to
     * find what is old, and a position no longer follows an execution's
     * delete, so it stays the net of every fill the instance had. */
    {4, "history retention",
     "DROP TRIGGER positions_remove;"
     "CREATE INDEX orders_done_by_update ON orders (updated_at)"
     " WHERE state IN ('filled', 'cancelled', 'rejected', 'expired');"
     "CREATE INDEX executions_by_trade ON executions (traded_at);"},
};

#define MIGRATION_COUNT (sizeof migrations / sizeof migrations[0])

_Static_assert(MIGRATION_COUNT == STORE__SCHEMA_VERSION,
               "one migration step per schema version, numbered from 1");

static int read_user_version(struct store *s, int *version, struct err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA user_version", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int result = 0;
    if (rc == SQLITE_ROW)
        *version = sqlite3_column_int(st, 0);
    else
        result = store__fail(s, rc, err, "cannot read the schema version of %s", s->db_path);
    sqlite3_finalize(st);
    return result;
}

static int refuse_newer(struct store *s, int version, struct err *err)
{
    err_set(err, ERR_INVALID,
            "state was written by a newer stratd: %s has schema version %d, this build knows "
            "versions up to %d",
            s->db_path, version, STORE__SCHEMA_VERSION);
    err_add_detail(err, "schemaVersion", json_integer(version));
    err_add_detail(err, "supportedVersion", json_integer(STORE__SCHEMA_VERSION));
    return -1;
}

static int apply_step(struct store *s, const struct migration *m, struct err *err)
{
    char bump[64];
    (void)snprintf(bump, sizeof bump, "PRAGMA user_version = %d", m->version);
    int rc = sqlite3_exec(s->db, m->sql, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(s->db, bump, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return store__fail(s, rc, err, "cannot migrate %s to schema version %d (%s)", s->db_path,
                           m->version, m->what);
    return 0;
}

/* The version is read again inside the write transaction: another process
 * opening the same state directory may have applied the step meanwhile. */
static int migrate_step(struct store *s, const struct migration *m, struct err *err)
{
    if (store__exec(s, "BEGIN IMMEDIATE", err) != 0)
        return -1;
    int version = 0;
    int rc = read_user_version(s, &version, err);
    if (rc == 0 && version > STORE__SCHEMA_VERSION)
        rc = refuse_newer(s, version, err);
    else if (rc == 0 && version < m->version)
        rc = apply_step(s, m, err);
    if (rc == 0)
        rc = store__exec(s, "COMMIT", err);
    if (rc != 0) {
        if (!sqlite3_get_autocommit(s->db))
            (void)sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (version < m->version)
        log_info("store", "%s: applied schema version %d (%s)", s->db_path, m->version, m->what);
    return 0;
}

int store__migrate(struct store *s, struct err *err)
{
    int version = 0;
    if (read_user_version(s, &version, err) != 0)
        return -1;
    if (version > STORE__SCHEMA_VERSION)
        return refuse_newer(s, version, err);
    for (size_t i = 0; i < MIGRATION_COUNT; i++) {
        if (migrations[i].version <= version)
            continue;
        if (migrate_step(s, &migrations[i], err) != 0)
            return -1;
    }
    return 0;
}
