/*
 * store_kv.c: the tables that map a key to one JSON value: module metadata
 * by revision hash, providers by name, settings by key.
 */
#include "store/store_internal.h"

#include "core/clock.h"
#include "core/hash.h"
#include "core/log.h"

#include <stdio.h>

/* ------------------------------------------------------ shared pattern */

/* One key -> JSON table, described by its two cached statements. The put
 * statement takes (?1 key, ?2 JSON text, ?3 now); the get statement takes
 * ?1 key and yields the JSON column. */
struct kv_table {
    enum store__stmt put_id;
    const char *put_sql;
    enum store__stmt get_id;
    const char *get_sql;
    const char *what; /* "module metadata", for messages */
    bool cache;       /* rows that can be derived again: see sync_relaxed */
};

/* A cache's rows are committed without waiting for fdatasync (WAL with
 * synchronous=NORMAL): a power cut may take the last few, which costs a
 * validation at the next start, and the next durable commit syncs them
 * anyway. A connection left at NORMAL would weaken every later commit, so
 * failing to restore FULL is logged loudly. */
static void sync_relaxed(struct store *s, bool relaxed)
{
    struct err e = ERR_INIT;
    if (store__exec(s, relaxed ? "PRAGMA synchronous=NORMAL" : "PRAGMA synchronous=FULL", &e) !=
            0 &&
        !relaxed)
        log_error("store", "commits may not be durable: %s", e.message);
    err_clear(&e);
}

static int kv_put(struct store *s, const struct kv_table *t, const char *key, const json_t *value,
                  struct err *err)
{
    char what[96];
    (void)snprintf(what, sizeof what, "cannot save %s '%s'", t->what, key);
    int64_t now = clock_wall_ms();
    store__lock(s);
    if (t->cache)
        sync_relaxed(s, true);
    sqlite3_stmt *st = store__stmt(s, t->put_id, t->put_sql, err);
    int rc = -1;
    if (st) {
        struct store__binder b = {st, SQLITE_OK};
        store__bind_text(&b, 1, key);
        store__bind_json(&b, 2, value);
        store__bind_int64(&b, 3, now);
        if (store__bind_check(&b, what, err) == 0)
            rc = store__step_done(s, st, what, err);
    }
    if (t->cache)
        sync_relaxed(s, false);
    store__unlock(s);
    return rc;
}

static json_t *kv_value_row(sqlite3_stmt *st, struct err *err)
{
    return store__column_json(st, 0, err);
}

static int kv_get(struct store *s, const struct kv_table *t, const char *key, json_t **out,
                  struct err *err)
{
    char what[96];
    (void)snprintf(what, sizeof what, "cannot read %s '%s'", t->what, key);
    store__lock(s);
    sqlite3_stmt *st = store__stmt(s, t->get_id, t->get_sql, err);
    int rc = -1;
    if (st) {
        struct store__binder b = {st, SQLITE_OK};
        store__bind_text(&b, 1, key);
        if (store__bind_check(&b, what, err) == 0)
            rc = store__collect_one(s, st, kv_value_row, what, out, err);
    }
    store__unlock(s);
    return rc;
}

/* ------------------------------------------------------------ metadata */

static const struct kv_table metadata_table = {
    STORE__METADATA_PUT,
    "INSERT INTO module_metadata (hash, metadata, updated_at) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (hash) DO UPDATE SET metadata = excluded.metadata,"
    " updated_at = excluded.updated_at",
    STORE__METADATA_GET,
    "SELECT metadata FROM module_metadata WHERE hash = ?1",
    "module metadata",
    true,
};

static int metadata_key(struct store *store, const char *hex, char out[HASH_HEX_LEN + 1],
                        struct err *err)
{
    if (!store) {
        err_set(err, ERR_INVALID, "module metadata needs a store");
        return -1;
    }
    if (!hex || !hash_parse_full(hex, out)) {
        err_set(err, ERR_INVALID, "'%s' is not a revision hash", hex ? hex : "(null)");
        return -1;
    }
    return 0;
}

int store_metadata_get(struct store *store, const char *hex, json_t **metadata, struct err *err)
{
    if (!metadata) {
        err_set(err, ERR_INVALID, "store_metadata_get needs an output");
        return -1;
    }
    *metadata = NULL;
    char key[HASH_HEX_LEN + 1];
    if (metadata_key(store, hex, key, err) != 0)
        return -1;
    return kv_get(store, &metadata_table, key, metadata, err);
}

int store_metadata_put(struct store *store, const char *hex, const json_t *metadata,
                       struct err *err)
{
    char key[HASH_HEX_LEN + 1];
    if (metadata_key(store, hex, key, err) != 0)
        return -1;
    if (!metadata) {
        err_set(err, ERR_INVALID, "module metadata for %s is missing", key);
        return -1;
    }
    return kv_put(store, &metadata_table, key, metadata, err);
}

/* One row of a batch, inside the caller's transaction. */
static int metadata_put_row(struct store *s, const char *hex, const json_t *metadata, int64_t now,
                            struct err *err)
{
    char key[HASH_HEX_LEN + 1];
    if (metadata_key(s, hex, key, err) != 0)
        return -1;
    if (!metadata) {
        err_set(err, ERR_INVALID, "module metadata for %s is missing", key);
        return -1;
    }
    char what[96];
    (void)snprintf(what, sizeof what, "cannot save module metadata '%s'", key);
    sqlite3_stmt *st = store__stmt(s, metadata_table.put_id, metadata_table.put_sql, err);
    if (!st)
        return -1;
    struct store__binder b = {st, SQLITE_OK};
    store__bind_text(&b, 1, key);
    store__bind_json(&b, 2, metadata);
    store__bind_int64(&b, 3, now);
    if (store__bind_check(&b, what, err) != 0)
        return -1;
    return store__step_done(s, st, what, err);
}

int store_metadata_put_many(struct store *store, const char *const *hexes, json_t *const *metadata,
                            size_t n, struct err *err)
{
    if (!store) {
        err_set(err, ERR_INVALID, "module metadata needs a store");
        return -1;
    }
    if (n == 0)
        return 0;
    int64_t now = clock_wall_ms();
    store__lock(store);
    sync_relaxed(store, true);
    int rc = store__begin(store, err);
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = metadata_put_row(store, hexes[i], metadata[i], now, err);
    if (rc == 0)
        rc = store__commit(store, err);
    else
        store__rollback(store);
    sync_relaxed(store, false);
    store__unlock(store);
    return rc;
}

/* ----------------------------------------------------------- providers */

static const struct kv_table provider_table = {
    STORE__PROVIDER_PUT,
    "INSERT INTO providers (name, spec, updated_at) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (name) DO UPDATE SET spec = excluded.spec, updated_at = excluded.updated_at",
    STORE__STMT_COUNT, /* providers are read as a list only */
    NULL,
    "providers",
    false,
};

int store_provider_put(struct store *store, const char *name, const json_t *spec, struct err *err)
{
    if (!store || !name || !*name || !json_is_object(spec)) {
        err_set(err, ERR_INVALID, "a provider needs a name and a spec object");
        return -1;
    }
    return kv_put(store, &provider_table, name, spec, err);
}

int store_provider_delete(struct store *store, const char *name, struct err *err)
{
    if (!store || !name || !*name) {
        err_set(err, ERR_INVALID, "deleting a provider needs its name");
        return -1;
    }
    store__lock(store);
    sqlite3_stmt *st =
        store__stmt(store, STORE__PROVIDER_DELETE, "DELETE FROM providers WHERE name = ?1", err);
    int rc = -1;
    if (st) {
        struct store__binder b = {st, SQLITE_OK};
        store__bind_text(&b, 1, name);
        if (store__bind_check(&b, "cannot delete a provider", err) == 0)
            rc = store__step_done(store, st, "cannot delete a provider", err);
    }
    store__unlock(store);
    return rc;
}

static json_t *provider_row(sqlite3_stmt *st, struct err *err)
{
    json_t *spec = store__column_json(st, 1, err);
    if (!spec)
        return NULL;
    json_t *row = json_pack("{s:o, s:o}", "name", store__column_string(st, 0), "spec", spec);
    if (!row)
        err_set(err, ERR_INTERNAL, "out of memory listing providers");
    return row;
}

int store_provider_list(struct store *store, json_t **out, struct err *err)
{
    if (!store || !out) {
        err_set(err, ERR_INVALID, "store_provider_list needs a store and an output");
        return -1;
    }
    store__lock(store);
    sqlite3_stmt *st = store__stmt(store, STORE__PROVIDER_LIST,
                                   "SELECT name, spec FROM providers ORDER BY name", err);
    int rc = st ? store__collect(store, st, provider_row, "cannot list providers", out, err) : -1;
    store__unlock(store);
    return rc;
}

/* ------------------------------------------------------------ settings */

static const struct kv_table setting_table = {
    STORE__SETTING_PUT,
    "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
    STORE__SETTING_GET,
    "SELECT value FROM settings WHERE key = ?1",
    "settings",
    false,
};

int store_setting_get(struct store *store, const char *key, json_t **value, struct err *err)
{
    if (!store || !key || !*key || !value) {
        err_set(err, ERR_INVALID, "reading a setting needs a key and an output");
        return -1;
    }
    *value = NULL;
    return kv_get(store, &setting_table, key, value, err);
}

int store_setting_put(struct store *store, const char *key, const json_t *value, struct err *err)
{
    if (!store || !key || !*key || !value) {
        err_set(err, ERR_INVALID, "a setting needs a key and a value");
        return -1;
    }
    return kv_put(store, &setting_table, key, value, err);
}
