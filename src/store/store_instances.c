/*
 * store_instances.c: instance specs and revision usage.
 */
#include "store/store_internal.h"

#include "core/clock.h"
#include "core/hash.h"

#include <stdio.h>
#include <stdlib.h>

/* ----------------------------------------------------------- instances */

static int instance_put_locked(struct store *store, const struct store_instance_record *r,
                               int64_t now, struct err *err)
{
    sqlite3_stmt *st = store__stmt(
        store, STORE__INSTANCE_PUT,
        "INSERT INTO instances (id, spec, desired_running, stop_reason, created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?5)"
        " ON CONFLICT (id) DO UPDATE SET spec = excluded.spec,"
        " desired_running = excluded.desired_running, stop_reason = excluded.stop_reason,"
        " updated_at = excluded.updated_at",
        err);
    if (!st)
        return -1;
    struct store__binder b = {st, SQLITE_OK};
    store__bind_text(&b, 1, r->id);
    store__bind_json(&b, 2, r->spec);
    store__bind_int64(&b, 3, r->desired_running ? 1 : 0);
    store__bind_text(&b, 4, r->stop_reason);
    store__bind_int64(&b, 5, now);
    if (store__bind_check(&b, "cannot save an instance", err) != 0)
        return -1;
    return store__step_done(store, st, "cannot save an instance", err);
}

static int instance_valid(const struct store_instance_record *r, struct err *err)
{
    if (!r->id || !*r->id || !json_is_object(r->spec)) {
        err_set(err, ERR_INVALID, "an instance needs an id and a spec object");
        return -1;
    }
    return 0;
}

int store_instance_put(struct store *store, const char *id, const json_t *spec,
                       bool desired_running, const char *stop_reason, struct err *err)
{
    struct store_instance_record r = {id, spec, desired_running, stop_reason};
    if (!store) {
        err_set(err, ERR_INVALID, "an instance needs an id and a spec object");
        return -1;
    }
    if (instance_valid(&r, err) != 0)
        return -1;
    int64_t now = clock_wall_ms();
    store__lock(store);
    int rc = instance_put_locked(store, &r, now, err);
    store__unlock(store);
    return rc;
}

int store_instance_delete(struct store *store, const char *id, struct err *err)
{
    if (!store || !id || !*id) {
        err_set(err, ERR_INVALID, "deleting an instance needs its id");
        return -1;
    }
    store__lock(store);
    sqlite3_stmt *st =
        store__stmt(store, STORE__INSTANCE_DELETE, "DELETE FROM instances WHERE id = ?1", err);
    int rc = -1;
    if (st) {
        struct store__binder b = {st, SQLITE_OK};
        store__bind_text(&b, 1, id);
        if (store__bind_check(&b, "cannot delete an instance", err) == 0)
            rc = store__step_done(store, st, "cannot delete an instance", err);
    }
    store__unlock(store);
    return rc;
}

static json_t *instance_row(sqlite3_stmt *st, struct err *err)
{
    json_t *spec = store__column_json(st, 1, err);
    if (!spec)
        return NULL;
    json_t *row =
        json_pack("{s:o, s:o, s:b, s:o, s:I, s:I}", "id", store__column_string(st, 0), "spec", spec,
                  "desiredRunning", sqlite3_column_int(st, 2), "stopReason",
                  store__column_string(st, 3), "createdAt", (json_int_t)sqlite3_column_int64(st, 4),
                  "updatedAt", (json_int_t)sqlite3_column_int64(st, 5));
    if (!row)
        err_set(err, ERR_INTERNAL, "out of memory listing instances");
    return row;
}

int store_instance_list(struct store *store, json_t **out, struct err *err)
{
    if (!store || !out) {
        err_set(err, ERR_INVALID, "store_instance_list needs a store and an output");
        return -1;
    }
    store__lock(store);
    sqlite3_stmt *st = store__stmt(store, STORE__INSTANCE_LIST,
                                   "SELECT id, spec, desired_running, stop_reason, created_at,"
                                   " updated_at FROM instances ORDER BY id",
                                   err);
    int rc = st ? store__collect(store, st, instance_row, "cannot list instances", out, err) : -1;
    store__unlock(store);
    return rc;
}

/* --------------------------------------------------------------- usage */

/* Accepts "sha256:<hex>" or bare hex in either case and stores lowercase
 * hex, so every caller's spelling lands on the same row. */
static int usage_key(const char *strategy, const char *hex, char out[HASH_HEX_LEN + 1],
                     struct err *err)
{
    if (!strategy || !*strategy) {
        err_set(err, ERR_INVALID, "usage needs a strategy name");
        return -1;
    }
    if (!hex || !hash_parse_full(hex, out)) {
        err_set(err, ERR_INVALID, "'%s' is not a revision hash", hex ? hex : "(null)");
        return -1;
    }
    return 0;
}

static int usage_touch_locked(struct store *store, const char *strategy, const char *key,
                              int64_t first_ms, int64_t now_ms, struct err *err)
{
    sqlite3_stmt *st = store__stmt(
        store, STORE__USAGE_TOUCH,
        "INSERT INTO usage (strategy, hash, first_seen, last_seen) VALUES (?1, ?2, ?4, ?3)"
        " ON CONFLICT (strategy, hash) DO UPDATE SET"
        " last_seen = max(last_seen, excluded.last_seen)",
        err);
    if (!st)
        return -1;
    struct store__binder b = {st, SQLITE_OK};
    store__bind_text(&b, 1, strategy);
    store__bind_text(&b, 2, key);
    store__bind_int64(&b, 3, now_ms);
    store__bind_int64(&b, 4, first_ms > 0 && first_ms < now_ms ? first_ms : now_ms);
    if (store__bind_check(&b, "cannot record usage", err) != 0)
        return -1;
    return store__step_done(store, st, "cannot record usage", err);
}

/* lastSeen never moves backwards, so a late touch with an older clock
 * reading cannot hide a newer one. */
int store_usage_touch(struct store *store, const char *strategy, const char *hex, int64_t now_ms,
                      struct err *err)
{
    if (!store) {
        err_set(err, ERR_INVALID, "store_usage_touch needs a store");
        return -1;
    }
    char key[HASH_HEX_LEN + 1];
    if (usage_key(strategy, hex, key, err) != 0)
        return -1;
    store__lock(store);
    int rc = usage_touch_locked(store, strategy, key, now_ms, now_ms, err);
    store__unlock(store);
    return rc;
}

static int validate_batch(const struct store_instance_record *instances, size_t ninstances,
                          const struct store_usage_record *touches, size_t ntouches,
                          char (*keys)[HASH_HEX_LEN + 1], struct err *err)
{
    for (size_t i = 0; i < ninstances; i++) {
        if (instance_valid(&instances[i], err) != 0)
            return -1;
    }
    for (size_t i = 0; i < ntouches; i++) {
        if (usage_key(touches[i].strategy, touches[i].hex, keys[i], err) != 0)
            return -1;
    }
    return 0;
}

static int save_locked(struct store *store, const struct store_instance_record *instances,
                       size_t ninstances, const struct store_usage_record *touches, size_t ntouches,
                       char (*keys)[HASH_HEX_LEN + 1], struct err *err)
{
    if (store__begin(store, err) != 0)
        return -1;
    int64_t now = clock_wall_ms();
    for (size_t i = 0; i < ninstances; i++) {
        if (instance_put_locked(store, &instances[i], now, err) != 0) {
            store__rollback(store);
            return -1;
        }
    }
    for (size_t i = 0; i < ntouches; i++) {
        if (usage_touch_locked(store, touches[i].strategy, keys[i], touches[i].first_ms,
                               touches[i].now_ms, err) != 0) {
            store__rollback(store);
            return -1;
        }
    }
    return store__commit(store, err);
}

int store_instances_save(struct store *store, const struct store_instance_record *instances,
                         size_t ninstances, const struct store_usage_record *touches,
                         size_t ntouches, struct err *err)
{
    if (!store) {
        err_set(err, ERR_INVALID, "store_instances_save needs a store");
        return -1;
    }
    if (ninstances == 0 && ntouches == 0)
        return 0;
    char(*keys)[HASH_HEX_LEN + 1] = calloc(ntouches ? ntouches : 1, sizeof *keys);
    if (!keys) {
        err_set(err, ERR_INTERNAL, "out of memory saving instances");
        return -1;
    }
    int rc = validate_batch(instances, ninstances, touches, ntouches, keys, err);
    if (rc == 0) {
        store__lock(store);
        rc = save_locked(store, instances, ninstances, touches, ntouches, keys, err);
        store__unlock(store);
    }
    free(keys);
    return rc;
}

int store_usage_forget(struct store *store, const char *strategy, const char *hex, struct err *err)
{
    if (!store) {
        err_set(err, ERR_INVALID, "store_usage_forget needs a store");
        return -1;
    }
    char key[HASH_HEX_LEN + 1];
    if (usage_key(strategy, hex, key, err) != 0)
        return -1;
    store__lock(store);
    sqlite3_stmt *st = store__stmt(store, STORE__USAGE_FORGET,
                                   "DELETE FROM usage WHERE strategy = ?1 AND hash = ?2", err);
    int rc = -1;
    if (st) {
        struct store__binder b = {st, SQLITE_OK};
        store__bind_text(&b, 1, strategy);
        store__bind_text(&b, 2, key);
        if (store__bind_check(&b, "cannot forget usage", err) == 0)
            rc = store__step_done(store, st, "cannot forget usage", err);
    }
    store__unlock(store);
    return rc;
}

static json_t *usage_row(sqlite3_stmt *st, struct err *err)
{
    json_t *row =
        json_pack("{s:o, s:o, s:I, s:I}", "strategy", store__column_string(st, 0), "hash",
                  store__column_string(st, 1), "firstSeen", (json_int_t)sqlite3_column_int64(st, 2),
                  "lastSeen", (json_int_t)sqlite3_column_int64(st, 3));
    if (!row)
        err_set(err, ERR_INTERNAL, "out of memory listing usage");
    return row;
}

int store_usage_list(struct store *store, json_t **out, struct err *err)
{
    if (!store || !out) {
        err_set(err, ERR_INVALID, "store_usage_list needs a store and an output");
        return -1;
    }
    store__lock(store);
    sqlite3_stmt *st = store__stmt(
        store, STORE__USAGE_LIST,
        "SELECT strategy, hash, first_seen, last_seen FROM usage ORDER BY strategy, hash", err);
    int rc = st ? store__collect(store, st, usage_row, "cannot list usage", out, err) : -1;
    store__unlock(store);
    return rc;
}
