/*
 * store_orders.c: orders, executions and balances: the trading records.
 *
 * These are the hot writes (every order step of every instance), so they
 * use cached statements and accept batches: one call with an array writes
 * every element in one transaction, one fsync for the lot. A batch is all
 * or nothing; an invalid element rolls the whole batch back and the message
 * names it ("orders[3]: field 'id' ...").
 */
#include "store/store_internal.h"

#include "core/clock.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------- field validation */

static int field_error(const char *label, const char *key, const char *expected, struct err *err)
{
    err_set(err, ERR_INVALID, "%s: field '%s' must be %s", label, key, expected);
    err_add_detail(err, "field", json_string(key));
    return -1;
}

static int need_string(const json_t *rec, const char *key, const char *label, const char **out,
                       struct err *err)
{
    const char *v = json_string_value(json_object_get(rec, key));
    if (!v || !*v)
        return field_error(label, key, "a non-empty string", err);
    *out = v;
    return 0;
}

/* Absent and null both store SQL NULL. */
static int opt_string(const json_t *rec, const char *key, const char *label, const char **out,
                      struct err *err)
{
    json_t *v = json_object_get(rec, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return field_error(label, key, "a string or null", err);
    *out = json_string_value(v);
    return 0;
}

static int need_int(const json_t *rec, const char *key, const char *label, int64_t *out,
                    struct err *err)
{
    json_t *v = json_object_get(rec, key);
    if (!json_is_integer(v))
        return field_error(label, key, "an integer (ms since the epoch)", err);
    *out = (int64_t)json_integer_value(v);
    return 0;
}

/* Absent leaves *out untouched (the caller's default). */
static int opt_int(const json_t *rec, const char *key, const char *label, int64_t *out,
                   struct err *err)
{
    if (!json_object_get(rec, key))
        return 0;
    return need_int(rec, key, label, out, err);
}

/* ------------------------------------------------------- batch writing */

/* How one kind of record is written: its upsert statement and a function
 * that validates a JSON record and binds it (returning -1 with err set
 * when the record is invalid; SQLite bind failures stay in the binder). */
struct record_kind {
    const char *singular;
    const char *plural;
    enum store__stmt stmt;
    const char *sql;
    int (*bind_json)(struct store__binder *b, const json_t *rec, const char *label,
                     struct err *err);
};

struct batch;
/* Validates and binds item i of a batch, as bind_json does. */
typedef int (*item_binder)(struct store__binder *b, const struct batch *bt, size_t i,
                           const char *label, struct err *err);

/* n items of one kind: JSON records (one object when `single`, labelled by
 * the kind's singular name) or the market writer's rows. */
struct batch {
    const struct record_kind *kind;
    item_binder bind;
    const void *items;
    size_t n;
    bool single;
};

/* The caller's pause between slices of rows (struct store_rows) and the
 * rows the transaction has written so far. */
struct slices {
    void (*between)(void *arg);
    void *arg;
    size_t rows;
};

/* A pause is skipped while a request waits: it must never hold one up. */
static void end_of_row(struct store *s, struct slices *sl)
{
    if (sl && sl->between && ++sl->rows % STORE_ROWS_SLICE == 0 && !store__contended(s))
        sl->between(sl->arg);
}

static int put_items(struct store *s, const struct batch *bt, struct slices *sl, struct err *err)
{
    const struct record_kind *k = bt->kind;
    sqlite3_stmt *st = store__stmt(s, k->stmt, k->sql, err);
    if (!st)
        return -1;
    for (size_t i = 0; i < bt->n; i++) {
        char label[48], what[96];
        if (bt->single)
            (void)snprintf(label, sizeof label, "%s", k->singular);
        else
            (void)snprintf(label, sizeof label, "%s[%zu]", k->plural, i);
        struct store__binder b = {st, SQLITE_OK};
        if (bt->bind(&b, bt, i, label, err) != 0) {
            store__stmt_release(st);
            return -1;
        }
        (void)snprintf(what, sizeof what, "cannot save %s", label);
        if (store__bind_check(&b, what, err) != 0 || store__step_done(s, st, what, err) != 0)
            return -1;
        end_of_row(s, sl);
    }
    return 0;
}

/* One transaction over n batches; empty ones are skipped. sl may be NULL. */
static int put_batches(struct store *s, const struct batch *batches, size_t n, struct slices *sl,
                       struct err *err)
{
    size_t total = 0;
    for (size_t i = 0; i < n; i++)
        total += batches[i].n;
    if (total == 0)
        return 0;
    store__lock(s);
    int rc = store__begin(s, err);
    for (size_t i = 0; rc == 0 && i < n; i++)
        if (batches[i].n && put_items(s, &batches[i], sl, err) != 0) {
            store__rollback(s);
            rc = -1;
        }
    if (rc == 0)
        rc = store__commit(s, err);
    store__unlock(s);
    return rc;
}

static int bind_json_item(struct store__binder *b, const struct batch *bt, size_t i,
                          const char *label, struct err *err)
{
    const json_t *rec = bt->single ? bt->items : json_array_get(bt->items, i);
    if (!json_is_object(rec)) {
        err_set(err, ERR_INVALID, "%s must be a JSON object", label);
        return -1;
    }
    return bt->kind->bind_json(b, rec, label, err);
}

/* A JSON object or an array of them, in one transaction. */
static int put_batch(struct store *s, const struct record_kind *k, const json_t *records,
                     struct err *err)
{
    if (!s || !(json_is_object(records) || json_is_array(records))) {
        err_set(err, ERR_INVALID, "%s must be a JSON object or an array of them", k->plural);
        return -1;
    }
    bool single = json_is_object(records);
    struct batch bt = {k, bind_json_item, records, single ? 1 : json_array_size(records), single};
    return put_batches(s, &bt, 1, NULL, err);
}

/* -------------------------------------------------------------- orders */

static void bind_order_columns(struct store__binder *b, const struct store_order_row *r)
{
    store__bind_text(b, 1, r->id);
    store__bind_text(b, 2, r->instance);
    store__bind_text(b, 3, r->provider);
    store__bind_text(b, 4, r->state);
    store__bind_text(b, 5, r->client_order_id);
    store__bind_int64(b, 6, r->created_at);
    store__bind_int64(b, 7, r->updated_at);
}

static int bind_order(struct store__binder *b, const json_t *rec, const char *label,
                      struct err *err)
{
    struct store_order_row r = {0};
    if (need_string(rec, "id", label, &r.id, err) != 0 ||
        need_string(rec, "strategyInstance", label, &r.instance, err) != 0 ||
        need_string(rec, "provider", label, &r.provider, err) != 0 ||
        need_string(rec, "state", label, &r.state, err) != 0 ||
        opt_string(rec, "clientOrderId", label, &r.client_order_id, err) != 0 ||
        need_int(rec, "createdAt", label, &r.created_at, err) != 0 ||
        need_int(rec, "updatedAt", label, &r.updated_at, err) != 0)
        return -1;
    bind_order_columns(b, &r);
    store__bind_json(b, 8, rec);
    return 0;
}

static const struct record_kind order_kind = {
    "order",
    "orders",
    STORE__ORDER_PUT,
    "INSERT INTO orders (id, instance_id, provider, state, client_order_id, created_at,"
    " updated_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
    " ON CONFLICT (id) DO UPDATE SET instance_id = excluded.instance_id,"
    " provider = excluded.provider, state = excluded.state,"
    " client_order_id = excluded.client_order_id, created_at = excluded.created_at,"
    " updated_at = excluded.updated_at, record = excluded.record",
    bind_order,
};

int store_orders_put(struct store *store, const json_t *orders, struct err *err)
{
    return put_batch(store, &order_kind, orders, err);
}

/* ---------------------------------------------------------- executions */

static void bind_execution_columns(struct store__binder *b, const struct store_execution_row *r)
{
    store__bind_text(b, 1, r->provider);
    store__bind_text(b, 2, r->execution_id);
    store__bind_text(b, 3, r->order_id);
    store__bind_text(b, 4, r->instance);
    store__bind_int64(b, 5, r->traded_at);
    store__bind_int64(b, 6, r->created_at);
}

static int bind_execution(struct store__binder *b, const json_t *rec, const char *label,
                          struct err *err)
{
    struct store_execution_row r = {0};
    if (need_string(rec, "provider", label, &r.provider, err) != 0 ||
        need_string(rec, "executionId", label, &r.execution_id, err) != 0 ||
        need_string(rec, "orderId", label, &r.order_id, err) != 0 ||
        need_string(rec, "strategyInstance", label, &r.instance, err) != 0 ||
        need_int(rec, "tradedAt", label, &r.traded_at, err) != 0 ||
        need_int(rec, "createdAt", label, &r.created_at, err) != 0)
        return -1;
    bind_execution_columns(b, &r);
    store__bind_json(b, 7, rec);
    return 0;
}

static const struct record_kind execution_kind = {
    "execution",
    "executions",
    STORE__EXECUTION_PUT,
    "INSERT INTO executions (provider, execution_id, order_id, instance_id, traded_at,"
    " created_at, record) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    " ON CONFLICT (provider, execution_id) DO UPDATE SET order_id = excluded.order_id,"
    " instance_id = excluded.instance_id, traded_at = excluded.traded_at,"
    " created_at = excluded.created_at, record = excluded.record",
    bind_execution,
};

int store_executions_put(struct store *store, const json_t *executions, struct err *err)
{
    return put_batch(store, &execution_kind, executions, err);
}

/* ------------------------------------------------------------ balances */

/* createdAt and updatedAt are filled in when the caller leaves them out;
 * the JSON copy exists only to carry those two fields into the text. */
static void bind_balance_columns(struct store__binder *b, const struct store_balance_row *r)
{
    store__bind_text(b, 1, r->provider);
    store__bind_text(b, 2, r->asset);
    store__bind_int64(b, 3, r->snapshot_at);
    store__bind_int64(b, 4, r->created_at);
    store__bind_int64(b, 5, r->updated_at);
}

static int bind_balance(struct store__binder *b, const json_t *rec, const char *label,
                        struct err *err)
{
    const char *total, *available;
    int64_t now = clock_wall_ms();
    struct store_balance_row r = {.created_at = now, .updated_at = now};
    if (need_string(rec, "provider", label, &r.provider, err) != 0 ||
        need_string(rec, "asset", label, &r.asset, err) != 0 ||
        need_string(rec, "total", label, &total, err) != 0 ||
        need_string(rec, "available", label, &available, err) != 0 ||
        need_int(rec, "snapshotAt", label, &r.snapshot_at, err) != 0 ||
        opt_int(rec, "createdAt", label, &r.created_at, err) != 0 ||
        opt_int(rec, "updatedAt", label, &r.updated_at, err) != 0)
        return -1;
    json_t *stored = json_copy((json_t *)rec);
    if (!stored || json_object_set_new(stored, "createdAt", json_integer(r.created_at)) != 0 ||
        json_object_set_new(stored, "updatedAt", json_integer(r.updated_at)) != 0) {
        json_decref(stored);
        b->rc = b->rc == SQLITE_OK ? SQLITE_NOMEM : b->rc;
        return 0;
    }
    bind_balance_columns(b, &r);
    store__bind_json(b, 6, stored);
    json_decref(stored);
    return 0;
}

/* Only a snapshot at least as recent as the stored one replaces it, so
 * reports that arrive out of order never roll a balance back. createdAt
 * stays the time the (provider, asset) row was first written. */
static const struct record_kind balance_kind = {
    "balance",
    "balances",
    STORE__BALANCE_PUT,
    "INSERT INTO balances (provider, asset, snapshot_at, created_at, updated_at, record)"
    " VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
    " ON CONFLICT (provider, asset) DO UPDATE SET snapshot_at = excluded.snapshot_at,"
    " updated_at = excluded.updated_at,"
    " record = json_set(excluded.record, '$.createdAt', balances.created_at)"
    " WHERE excluded.snapshot_at >= balances.snapshot_at",
    bind_balance,
};

int store_balances_put(struct store *store, const json_t *balances, struct err *err)
{
    return put_batch(store, &balance_kind, balances, err);
}

/* ----------------------------------------------------------------- rows */

static int need_text(const char *value, const char *label, const char *key, struct err *err)
{
    return value && *value ? 0 : field_error(label, key, "a non-empty string", err);
}

static int need_record(const char *text, size_t len, const char *label, struct err *err)
{
    if (text && len > 0)
        return 0;
    err_set(err, ERR_INVALID, "%s: the record's text is missing", label);
    return -1;
}

/* The record's text, copied by SQLite (the caller keeps its rows). */
static void bind_record(struct store__binder *b, int idx, const char *text, size_t len)
{
    if (b->rc == SQLITE_OK)
        b->rc = sqlite3_bind_text64(b->st, idx, text, len, SQLITE_TRANSIENT, SQLITE_UTF8);
}

static int bind_order_row(struct store__binder *b, const struct batch *bt, size_t i,
                          const char *label, struct err *err)
{
    const struct store_order_row *r = (const struct store_order_row *)bt->items + i;
    if (need_text(r->id, label, "id", err) != 0 ||
        need_text(r->instance, label, "strategyInstance", err) != 0 ||
        need_text(r->provider, label, "provider", err) != 0 ||
        need_text(r->state, label, "state", err) != 0 ||
        need_record(r->record, r->record_len, label, err) != 0)
        return -1;
    bind_order_columns(b, r);
    bind_record(b, 8, r->record, r->record_len);
    return 0;
}

static int bind_execution_row(struct store__binder *b, const struct batch *bt, size_t i,
                              const char *label, struct err *err)
{
    const struct store_execution_row *r = (const struct store_execution_row *)bt->items + i;
    if (need_text(r->provider, label, "provider", err) != 0 ||
        need_text(r->execution_id, label, "executionId", err) != 0 ||
        need_text(r->order_id, label, "orderId", err) != 0 ||
        need_text(r->instance, label, "strategyInstance", err) != 0 ||
        need_record(r->record, r->record_len, label, err) != 0)
        return -1;
    bind_execution_columns(b, r);
    bind_record(b, 7, r->record, r->record_len);
    return 0;
}

static int bind_balance_row(struct store__binder *b, const struct batch *bt, size_t i,
                            const char *label, struct err *err)
{
    const struct store_balance_row *r = (const struct store_balance_row *)bt->items + i;
    if (need_text(r->provider, label, "provider", err) != 0 ||
        need_text(r->asset, label, "asset", err) != 0 ||
        need_record(r->record, r->record_len, label, err) != 0)
        return -1;
    bind_balance_columns(b, r);
    bind_record(b, 6, r->record, r->record_len);
    return 0;
}

int store_rows_put(struct store *store, const struct store_rows *rows, struct err *err)
{
    if (!store || !rows) {
        err_set(err, ERR_INVALID, "store_rows_put needs a store and rows");
        return -1;
    }
    const struct batch batches[] = {
        {&order_kind, bind_order_row, rows->orders, rows->norders, false},
        {&execution_kind, bind_execution_row, rows->executions, rows->nexecutions, false},
        {&balance_kind, bind_balance_row, rows->balances, rows->nbalances, false},
    };
    struct slices sl = {rows->between, rows->between_arg, 0};
    return put_batches(store, batches, 3, &sl, err);
}

/* ------------------------------------------------------------- queries */

static json_t *record_row(sqlite3_stmt *st, struct err *err)
{
    return store__column_json(st, 0, err);
}

static int64_t query_limit(int limit)
{
    return limit > 0 ? limit : STORE__DEFAULT_LIMIT;
}

static int check_query(struct store *store, const struct store_order_query *q, json_t **out,
                       struct err *err)
{
    if (!store || !q || !out || !q->instance_id || !*q->instance_id) {
        err_set(err, ERR_INVALID, "a query needs an instance id");
        return -1;
    }
    if (q->nstates > 0 && !q->states) {
        err_set(err, ERR_INVALID, "a query with states needs the list of states");
        return -1;
    }
    for (size_t i = 0; i < q->nstates; i++) {
        if (!q->states[i]) {
            err_set(err, ERR_INVALID, "state %zu of the query is missing", i);
            return -1;
        }
    }
    return 0;
}

/* The states travel as one JSON array bound to a single parameter (read
 * back with json_each), so one cached statement serves any number. */
static json_t *states_array(const struct store_order_query *q)
{
    json_t *states = json_array();
    for (size_t i = 0; states && i < q->nstates; i++) {
        if (json_array_append_new(states, json_string(q->states[i])) != 0) {
            json_decref(states);
            return NULL;
        }
    }
    return states;
}

/* A cursor is the last record's sort key, "<at>.<rowid>": the next page
 * starts below it in the order every query sorts by. */
static int parse_cursor(const char *text, int64_t *at, int64_t *rowid, struct err *err)
{
    *at = *rowid = INT64_MAX;
    if (!text)
        return 0;
    long long a, r;
    int used = 0;
    if (sscanf(text, "%lld.%lld%n", &a, &r, &used) != 2 || text[used] != '\0' || a < 0 || r < 1 ||
        strspn(text, "0123456789.") != strlen(text)) {
        err_set(err, ERR_INVALID,
                "before '%.64s' is not a cursor: pass the `next` of the page before", text);
        err_add_detail(err, "parameter", json_string("before"));
        return -1;
    }
    *at = a;
    *rowid = r;
    return 0;
}

/* Steps a page query (record, key, rowid per row) into an array, and
 * leaves in `next` the key of its last row when the page is full. */
static int collect_page(struct store *s, sqlite3_stmt *st, int64_t limit, const char *what,
                        json_t **out, char *next, struct err *err)
{
    json_t *list = json_array();
    int64_t at = 0, rowid = 0;
    int rc = list ? SQLITE_OK : SQLITE_NOMEM;
    while (list && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *item = record_row(st, err);
        if (!item)
            goto fail;
        if (json_array_append_new(list, item) != 0) {
            err_set(err, ERR_INTERNAL, "%s: out of memory", what);
            goto fail;
        }
        at = sqlite3_column_int64(st, 1);
        rowid = sqlite3_column_int64(st, 2);
    }
    if (rc != SQLITE_DONE) {
        store__fail(s, rc, err, "%s", what);
        goto fail;
    }
    store__stmt_release(st);
    if (next)
        next[0] = '\0';
    if (next && (int64_t)json_array_size(list) == limit)
        snprintf(next, STORE_CURSOR_MAX, "%lld.%lld", (long long)at, (long long)rowid);
    *out = list;
    return 0;
fail:
    store__stmt_release(st);
    json_decref(list);
    return -1;
}

static int run_order_query(struct store *s, const struct store_order_query *q, const json_t *states,
                           json_t **out, char *next, struct err *err)
{
    int64_t at, rowid;
    if (parse_cursor(q->before, &at, &rowid, err) != 0)
        return -1;
    sqlite3_stmt *st =
        store__stmt(s, STORE__ORDER_QUERY,
                    "SELECT record, updated_at, rowid FROM orders WHERE instance_id = ?1"
                    " AND (?2 IS NULL OR provider = ?2)"
                    " AND (?3 IS NULL OR state IN (SELECT value FROM json_each(?3)))"
                    " AND (updated_at, rowid) < (?5, ?6)"
                    " ORDER BY updated_at DESC, rowid DESC LIMIT ?4",
                    err);
    if (!st)
        return -1;
    struct store__binder b = {st, SQLITE_OK};
    store__bind_text(&b, 1, q->instance_id);
    store__bind_text(&b, 2, q->provider);
    if (states)
        store__bind_json(&b, 3, states);
    else
        store__bind_text(&b, 3, NULL);
    store__bind_int64(&b, 4, query_limit(q->limit));
    store__bind_int64(&b, 5, at);
    store__bind_int64(&b, 6, rowid);
    if (store__bind_check(&b, "cannot list orders", err) != 0)
        return -1;
    return collect_page(s, st, query_limit(q->limit), "cannot list orders", out, next, err);
}

int store_orders_page(struct store *store, const struct store_order_query *q, json_t **out,
                      char next[STORE_CURSOR_MAX], struct err *err)
{
    if (check_query(store, q, out, err) != 0)
        return -1;
    json_t *states = NULL;
    if (q->nstates > 0 && !(states = states_array(q))) {
        err_set(err, ERR_INTERNAL, "out of memory listing orders");
        return -1;
    }
    store__lock(store);
    int rc = run_order_query(store, q, states, out, next, err);
    store__unlock(store);
    json_decref(states);
    return rc;
}

int store_orders_query(struct store *store, const struct store_order_query *q, json_t **out,
                       struct err *err)
{
    return store_orders_page(store, q, out, NULL, err);
}

static int run_execution_query(struct store *s, const struct store_order_query *q, json_t **out,
                               char *next, struct err *err)
{
    int64_t at, rowid;
    if (parse_cursor(q->before, &at, &rowid, err) != 0)
        return -1;
    sqlite3_stmt *st =
        store__stmt(s, STORE__EXECUTION_QUERY,
                    "SELECT record, traded_at, rowid FROM executions WHERE instance_id = ?1"
                    " AND (?2 IS NULL OR provider = ?2) AND (?3 IS NULL OR order_id = ?3)"
                    " AND (traded_at, rowid) < (?5, ?6)"
                    " ORDER BY traded_at DESC, rowid DESC LIMIT ?4",
                    err);
    if (!st)
        return -1;
    struct store__binder b = {st, SQLITE_OK};
    store__bind_text(&b, 1, q->instance_id);
    store__bind_text(&b, 2, q->provider);
    store__bind_text(&b, 3, q->order_id);
    store__bind_int64(&b, 4, query_limit(q->limit));
    store__bind_int64(&b, 5, at);
    store__bind_int64(&b, 6, rowid);
    if (store__bind_check(&b, "cannot list executions", err) != 0)
        return -1;
    return collect_page(s, st, query_limit(q->limit), "cannot list executions", out, next, err);
}

int store_executions_page(struct store *store, const struct store_order_query *q, json_t **out,
                          char next[STORE_CURSOR_MAX], struct err *err)
{
    if (check_query(store, q, out, err) != 0)
        return -1;
    store__lock(store);
    int rc = run_execution_query(store, q, out, next, err);
    store__unlock(store);
    return rc;
}

int store_executions_query(struct store *store, const struct store_order_query *q, json_t **out,
                           struct err *err)
{
    return store_executions_page(store, q, out, NULL, err);
}

int store_balances_query(struct store *store, const char *provider, const char *asset, int limit,
                         json_t **out, struct err *err)
{
    if (!store || !out || !provider || !*provider) {
        err_set(err, ERR_INVALID, "a balance query needs a provider");
        return -1;
    }
    store__lock(store);
    sqlite3_stmt *st =
        store__stmt(store, STORE__BALANCE_QUERY,
                    "SELECT record FROM balances WHERE provider = ?1 AND (?2 IS NULL OR asset = ?2)"
                    " ORDER BY snapshot_at DESC, asset LIMIT ?3",
                    err);
    int rc = -1;
    if (st) {
        struct store__binder b = {st, SQLITE_OK};
        store__bind_text(&b, 1, provider);
        store__bind_text(&b, 2, asset);
        store__bind_int64(&b, 3, query_limit(limit));
        if (store__bind_check(&b, "cannot list balances", err) == 0)
            rc = store__collect(store, st, record_row, "cannot list balances", out, err);
    }
    store__unlock(store);
    return rc;
}

int store_orders_expire_open(struct store *store, const char *provider, const char *reason,
                             int64_t now_ms, int *count, struct err *err)
{
    if (!store || !provider || !*provider || !reason || !count) {
        err_set(err, ERR_INVALID, "expiring open orders needs a provider, a reason and a count");
        return -1;
    }
    *count = 0;
    store__lock(store);
    sqlite3_stmt *st =
        store__stmt(store, STORE__ORDER_EXPIRE_OPEN,
                    "UPDATE orders SET state = 'expired', updated_at = ?2,"
                    " record = json_set(record, '$.state', 'expired', '$.updatedAt', ?2,"
                    " '$.completedAt', ?2, '$.metadata.reason', ?3)"
                    " WHERE provider = ?1 AND state IN ('acknowledged', 'partiallyFilled')",
                    err);
    int rc = -1;
    if (st) {
        struct store__binder b = {st, SQLITE_OK};
        store__bind_text(&b, 1, provider);
        store__bind_int64(&b, 2, now_ms);
        store__bind_text(&b, 3, reason);
        if (store__bind_check(&b, "cannot expire open orders", err) == 0 &&
            (rc = store__step_done(store, st, "cannot expire open orders", err)) == 0)
            *count = sqlite3_changes(store->db);
    }
    store__unlock(store);
    return rc;
}

static json_t *position_row(sqlite3_stmt *st, struct err *err)
{
    const char *instance = (const char *)sqlite3_column_text(st, 0);
    const char *symbol = (const char *)sqlite3_column_text(st, 1);
    json_t *row = json_pack("[ssf]", instance ? instance : "", symbol ? symbol : "",
                            sqlite3_column_double(st, 2));
    if (!row)
        err_set(err, ERR_INTERNAL, "cannot list positions: out of memory");
    return row;
}

int store_positions_query(struct store *store, const char *provider, json_t **out, struct err *err)
{
    if (!store || !out || !provider || !*provider) {
        err_set(err, ERR_INVALID, "a position query needs a provider");
        return -1;
    }
    store__lock(store);
    sqlite3_stmt *st = store__stmt(store, STORE__POSITION_QUERY,
                                   "SELECT instance_id, symbol, net FROM positions"
                                   " WHERE provider = ?1 ORDER BY instance_id, symbol",
                                   err);
    int rc = -1;
    if (st) {
        struct store__binder b = {st, SQLITE_OK};
        store__bind_text(&b, 1, provider);
        if (store__bind_check(&b, "cannot list positions", err) == 0)
            rc = store__collect(store, st, position_row, "cannot list positions", out, err);
    }
    store__unlock(store);
    return rc;
}
