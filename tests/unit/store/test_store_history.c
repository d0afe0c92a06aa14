/*
 * The order history's retention: store_history_prune deletes final orders
 * and executions older than its cut-off, in slices, and leaves open orders,
 * newer rows and the risk limits' positions alone; the pruner thread of
 * store_history_start does it on its own and counts it in the metrics.
 */
#include "store_fixture.h"

#include "core/clock.h"
#include "core/strbuf.h"

#include <sqlite3.h>

static void put(struct store *s, json_t *orders, json_t *executions)
{
    struct err err = ERR_INIT;
    if (orders)
        assert_ok(store_orders_put(s, orders, &err), &err);
    if (executions)
        assert_ok(store_executions_put(s, executions, &err), &err);
    json_decref(orders);
    json_decref(executions);
}

/* A fill that moves instance `a`'s BTC-USDT position by `qty` (a buy). */
static json_t *fill(const char *id, const char *order_id, const char *qty, long long traded_at)
{
    json_t *e = execution(id, order_id, "a", "sim", traded_at);
    json_object_set_new(e, "quantity", json_string(qty));
    json_object_set_new(e, "metadata",
                        json_pack("{s:s, s:s}", "symbol", "BTC-USDT", "side", "buy"));
    return e;
}

static char *listed(struct store *s, bool orders)
{
    struct err err = ERR_INIT;
    struct store_order_query q = {.instance_id = "a"};
    json_t *out = NULL;
    assert_ok(orders ? store_orders_query(s, &q, &out, &err)
                     : store_executions_query(s, &q, &out, &err),
              &err);
    char *text = strdup("");
    size_t i;
    json_t *item;
    json_array_foreach(out, i, item)
    {
        const char *id = json_string_value(json_object_get(item, orders ? "id" : "executionId"));
        char *next = tu_path("%s%s%s", text, i ? "," : "", id);
        free(text);
        text = next;
    }
    json_decref(out);
    return text;
}

static void assert_listed(struct store *s, bool orders, const char *expected)
{
    char *got = listed(s, orders);
    if (strcmp(got, expected) != 0)
        fail_msg("%s: expected [%s], got [%s]", orders ? "orders" : "executions", expected, got);
    free(got);
}

static double position_of_a(struct store *s)
{
    struct err err = ERR_INIT;
    json_t *out = NULL;
    assert_ok(store_positions_query(s, "sim", &out, &err), &err);
    assert_int_equal(json_array_size(out), 1);
    double net = json_real_value(json_array_get(json_array_get(out, 0), 2));
    json_decref(out);
    return net;
}

static void test_prune_keeps_open_newer_and_positions(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *spec = jparse("{\"id\": \"a\", \"strategy\": {}, \"scope\": {}}");
    assert_ok(store_instance_put(f->store, "a", spec, true, NULL, &err), &err);
    json_decref(spec);
    const char *const final[] = {"filled", "cancelled", "rejected", "expired"};
    json_t *orders = json_array();
    for (size_t i = 0; i < 4; i++) {
        char id[16];
        snprintf(id, sizeof id, "old-%s", final[i]);
        json_array_append_new(orders, order(id, "a", "sim", final[i], 1000 + (long long)i));
    }
    json_array_append_new(orders, order("old-open", "a", "sim", "acknowledged", 900));
    json_array_append_new(orders, order("old-part", "a", "sim", "partiallyFilled", 901));
    json_array_append_new(orders, order("new-filled", "a", "sim", "filled", 5000));
    json_t *fills = json_array();
    json_array_append_new(fills, fill("e-old", "old-filled", "2", 1000));
    json_array_append_new(fills, fill("e-new", "new-filled", "0.5", 5000));
    put(f->store, orders, fills);
    assert_true(position_of_a(f->store) == 2.5);

    int deleted_orders = -1, deleted_executions = -1;
    assert_ok(store_history_prune(f->store, 2000, 500, &deleted_orders, &deleted_executions, &err),
              &err);
    assert_int_equal(deleted_orders, 4);
    assert_int_equal(deleted_executions, 1);
    assert_listed(f->store, true, "new-filled,old-part,old-open");
    assert_listed(f->store, false, "e-new");
    assert_true(position_of_a(f->store) == 2.5); /* the net of every fill, pruned or not */

    /* nothing left to prune before that cut-off; a later fill still moves */
    assert_ok(store_history_prune(f->store, 2000, 500, &deleted_orders, &deleted_executions, &err),
              &err);
    assert_int_equal(deleted_orders + deleted_executions, 0);
    put(f->store, NULL, fill("e-later", "new-filled", "1", 6000));
    assert_true(position_of_a(f->store) == 3.5);
}

static void test_prune_in_slices(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *orders = json_array();
    json_t *fills = json_array();
    for (int i = 0; i < 1200; i++) {
        char id[16], exec_id[16];
        snprintf(id, sizeof id, "o%d", i);
        snprintf(exec_id, sizeof exec_id, "e%d", i);
        json_array_append_new(orders, order(id, "a", "sim", "filled", 100 + i));
        if (i < 700)
            json_array_append_new(fills, execution(exec_id, id, "a", "sim", 100 + i));
    }
    put(f->store, orders, fills);
    const int expected[][2] = {{500, 500}, {500, 200}, {200, 0}, {0, 0}};
    for (size_t i = 0; i < 4; i++) {
        int o = -1, e = -1;
        assert_ok(store_history_prune(f->store, 1000000, 500, &o, &e, &err), &err);
        assert_int_equal(o, expected[i][0]);
        assert_int_equal(e, expected[i][1]);
    }
}

/* The deletes find what is old through their indexes, not by reading the
 * whole history. */
static void test_prune_uses_indexes(void **state)
{
    struct fixture *f = *state;
    char *path = tu_path("%s/%s", f->state, STORE_DB_FILE);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    free(path);
    static const char *const queries[][2] = {
        {"EXPLAIN QUERY PLAN SELECT rowid FROM orders WHERE state IN ('filled', 'cancelled',"
         " 'rejected', 'expired') AND updated_at < 5 LIMIT 10",
         "orders_done_by_update"},
        {"EXPLAIN QUERY PLAN SELECT rowid FROM executions WHERE traded_at < 5 LIMIT 10",
         "executions_by_trade"},
    };
    for (size_t i = 0; i < 2; i++) {
        sqlite3_stmt *st = NULL;
        assert_int_equal(sqlite3_prepare_v2(db, queries[i][0], -1, &st, NULL), SQLITE_OK);
        bool uses = false;
        while (sqlite3_step(st) == SQLITE_ROW) {
            const char *detail = (const char *)sqlite3_column_text(st, 3);
            uses = uses || (detail && strstr(detail, queries[i][1]));
        }
        sqlite3_finalize(st);
        if (!uses)
            fail_msg("%s does not use %s", queries[i][0], queries[i][1]);
    }
    sqlite3_close(db);
}

static void test_bad_arguments(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    assert_int_equal(store_history_prune(f->store, 1, 0, NULL, NULL, &err), -1);
    assert_int_equal(err.kind, ERR_INVALID);
    err_clear(&err);
    assert_int_equal(store_history_prune(NULL, 1, 10, NULL, NULL, &err), -1);
    err_clear(&err);
    assert_int_equal(store_history_start(f->store, -1, &err), -1);
    assert_int_equal(err.kind, ERR_INVALID);
    err_clear(&err);
    assert_ok(store_history_start(f->store, 0, &err), &err); /* keeps everything: no thread */
}

static double metric(struct store *s, const char *sample)
{
    struct strbuf out = STRBUF_INIT;
    store_metrics_write(s, &out);
    char *line = tu_path("\n%s", sample); /* a sample, not its HELP line */
    const char *at = strstr(strbuf_cstr(&out), line);
    double v = at ? strtod(at + strlen(line), NULL) : -1;
    free(line);
    strbuf_release(&out);
    return v;
}

/* The pruner finds the old rows on its own, counts them, and stops with
 * the store; a second start is refused. */
static void test_pruner_thread(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    long long now = clock_wall_ms(), day = 86400000;
    json_t *orders = json_array();
    json_array_append_new(orders, order("stale", "a", "sim", "cancelled", now - 2 * day));
    json_array_append_new(orders, order("fresh", "a", "sim", "cancelled", now));
    json_t *fills = json_array();
    json_array_append_new(fills, execution("e-stale", "stale", "a", "sim", now - 2 * day));
    put(f->store, orders, fills);
    assert_true(metric(f->store, "stratd_history_deleted_total{table=\"orders\"} ") == 0);
    assert_true(metric(f->store, "stratd_state_database_bytes ") > 0);

    assert_ok(store_history_start(f->store, day, &err), &err);
    assert_int_equal(store_history_start(f->store, day, &err), -1);
    err_clear(&err);
    for (int i = 0;
         i < 500 && metric(f->store, "stratd_history_deleted_total{table=\"executions\"} ") < 1;
         i++)
        tu_sleep_ms(10);
    assert_true(metric(f->store, "stratd_history_deleted_total{table=\"orders\"} ") == 1);
    assert_true(metric(f->store, "stratd_history_deleted_total{table=\"executions\"} ") == 1);
    assert_listed(f->store, true, "fresh");
    assert_listed(f->store, false, "");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prune_keeps_open_newer_and_positions, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_prune_in_slices, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_prune_uses_indexes, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_bad_arguments, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_pruner_thread, fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
