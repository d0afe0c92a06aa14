/*
 * What the store keeps: instances, usage, metadata, providers, settings,
 * orders, executions and balances; every filter, batches, bad input.
 */
#include "store_fixture.h"

#include "store/store_internal.h"

#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <unistd.h>

#define HEX_A "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HEX_A_UPPER "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
#define HEX_B "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"

/* ------------------------------------------------------------- helpers */

static json_t *query_orders(struct store *s, const struct store_order_query *q)
{
    struct err err = ERR_INIT;
    json_t *out = NULL;
    assert_ok(store_orders_query(s, q, &out, &err), &err);
    assert_true(json_is_array(out));
    return out;
}

static json_t *query_executions(struct store *s, const struct store_order_query *q)
{
    struct err err = ERR_INIT;
    json_t *out = NULL;
    assert_ok(store_executions_query(s, q, &out, &err), &err);
    assert_true(json_is_array(out));
    return out;
}

/* The "id" (or another string field) of each element, joined with ",". */
static char *ids(const json_t *list, const char *field)
{
    char *out = strdup("");
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        char *next =
            tu_path("%s%s%s", out, i ? "," : "", json_string_value(json_object_get(item, field)));
        free(out);
        out = next;
    }
    return out;
}

static void assert_ids(const json_t *list, const char *field, const char *expected)
{
    char *got = ids(list, field);
    if (strcmp(got, expected) != 0)
        fail_msg("expected %s [%s], got [%s]", field, expected, got);
    free(got);
}

static void expect_invalid(int rc, struct err *err, const char *needle)
{
    assert_int_equal(rc, -1);
    if (err->kind != ERR_INVALID)
        fail_msg("expected invalid, got %s: %s", err_kind_name(err->kind), err->message);
    if (needle && !strstr(err->message, needle))
        fail_msg("'%s' does not mention '%s'", err->message, needle);
    err_clear(err);
}

/* ----------------------------------------------------------- instances */

static void test_instances(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *spec_b = jparse("{\"id\": \"b\", \"strategy\": {\"identifier\": \"momentum\", "
                            "\"selector\": \"momentum:prod\", \"tag\": \"prod\", \"hash\": "
                            "\"sha256:" HEX_A "\", \"config\": {\"z\": 1, \"a\": [1.5, null]}}, "
                            "\"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    json_t *spec_a = jparse("{\"id\": \"a\", \"strategy\": {}, \"scope\": {}}");
    assert_ok(store_instance_put(f->store, "b", spec_b, true, NULL, &err), &err);
    assert_ok(store_instance_put(f->store, "a", spec_a, false, "retired", &err), &err);

    json_t *list = NULL;
    assert_ok(store_instance_list(f->store, &list, &err), &err);
    assert_ids(list, "id", "a,b");
    json_t *a = json_array_get(list, 0), *b = json_array_get(list, 1);
    assert_json_same(json_object_get(b, "spec"), spec_b);
    assert_true(json_is_true(json_object_get(b, "desiredRunning")));
    assert_true(json_is_null(json_object_get(b, "stopReason")));
    assert_true(json_is_false(json_object_get(a, "desiredRunning")));
    assert_string_equal(json_string_value(json_object_get(a, "stopReason")), "retired");
    json_int_t created = json_integer_value(json_object_get(a, "createdAt"));
    assert_true(created > 0);
    json_decref(list);

    /* An update keeps createdAt and replaces the rest. */
    assert_ok(store_instance_put(f->store, "a", spec_b, true, NULL, &err), &err);
    assert_ok(store_instance_list(f->store, &list, &err), &err);
    a = json_array_get(list, 0);
    assert_int_equal(json_integer_value(json_object_get(a, "createdAt")), created);
    assert_true(json_integer_value(json_object_get(a, "updatedAt")) >= created);
    assert_json_same(json_object_get(a, "spec"), spec_b);
    assert_true(json_is_null(json_object_get(a, "stopReason")));
    json_decref(list);

    assert_ok(store_instance_delete(f->store, "a", &err), &err);
    assert_ok(store_instance_delete(f->store, "a", &err), &err); /* absent: fine */
    assert_ok(store_instance_list(f->store, &list, &err), &err);
    assert_ids(list, "id", "b");
    json_decref(list);

    expect_invalid(store_instance_put(f->store, "", spec_a, true, NULL, &err), &err, NULL);
    expect_invalid(store_instance_put(f->store, "x", NULL, true, NULL, &err), &err, NULL);
    expect_invalid(store_instance_delete(f->store, NULL, &err), &err, NULL);
    json_decref(spec_a);
    json_decref(spec_b);
}

/* --------------------------------------------------------------- usage */

static void test_usage(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    assert_ok(store_usage_touch(f->store, "momentum", HEX_B, 100, &err), &err);
    assert_ok(store_usage_touch(f->store, "momentum", "sha256:" HEX_A, 200, &err), &err);
    assert_ok(store_usage_touch(f->store, "momentum", HEX_A, 300, &err), &err);
    assert_ok(store_usage_touch(f->store, "momentum", HEX_A, 250, &err), &err); /* older clock */
    assert_ok(store_usage_touch(f->store, "grid", HEX_A, 50, &err), &err);

    json_t *list = NULL;
    assert_ok(store_usage_list(f->store, &list, &err), &err);
    json_t *expected =
        jparse("[{\"strategy\": \"grid\", \"hash\": \"" HEX_A "\", \"firstSeen\": 50, "
               "\"lastSeen\": 50},"
               "{\"strategy\": \"momentum\", \"hash\": \"" HEX_A "\", \"firstSeen\": 200, "
               "\"lastSeen\": 300},"
               "{\"strategy\": \"momentum\", \"hash\": \"" HEX_B "\", \"firstSeen\": 100, "
               "\"lastSeen\": 100}]");
    assert_json_same(list, expected);
    json_decref(list);
    json_decref(expected);

    assert_ok(store_usage_forget(f->store, "momentum", "sha256:" HEX_A_UPPER, &err), &err);
    assert_ok(store_usage_forget(f->store, "momentum", HEX_A, &err), &err); /* absent: fine */
    assert_ok(store_usage_list(f->store, &list, &err), &err);
    assert_int_equal(json_array_size(list), 2);
    assert_ids(list, "strategy", "grid,momentum");
    json_decref(list);

    /* Touching again after forgetting starts a new firstSeen. */
    assert_ok(store_usage_touch(f->store, "momentum", HEX_A, 400, &err), &err);
    assert_ok(store_usage_list(f->store, &list, &err), &err);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(list, 1), "firstSeen")),
                     400);
    json_decref(list);

    expect_invalid(store_usage_touch(f->store, "momentum", "abc", 1, &err), &err, "abc");
    expect_invalid(store_usage_touch(f->store, "", HEX_A, 1, &err), &err, NULL);
    expect_invalid(store_usage_forget(f->store, "momentum", NULL, &err), &err, NULL);
}

/* ------------------------------------------- metadata, providers, settings */

/* Several records and touches in one transaction: all land, or (one
 * invalid element) none does. */
static void test_instances_save(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *spec = jparse("{\"id\": \"a\", \"strategy\": {\"identifier\": \"momentum\"}}");
    struct store_instance_record records[] = {
        {"a", spec, true, NULL},
        {"b", spec, false, "retired"},
    };
    /* a batch's first touch is a new revision's firstSeen, its last the lastSeen */
    struct store_usage_record touches[] = {
        {"momentum", HEX_A, 90, 100},
        {"momentum", "sha256:" HEX_B, 0, 200},
    };
    assert_ok(store_instances_save(f->store, records, 2, touches, 2, &err), &err);
    assert_ok(store_instances_save(f->store, NULL, 0, NULL, 0, &err), &err);
    json_t *list = NULL;
    assert_ok(store_instance_list(f->store, &list, &err), &err);
    assert_ids(list, "id", "a,b");
    assert_true(json_is_true(json_object_get(json_array_get(list, 0), "desiredRunning")));
    assert_string_equal(tu_jstr(json_array_get(list, 1), "stopReason"), "retired");
    json_decref(list);
    assert_ok(store_usage_list(f->store, &list, &err), &err);
    assert_int_equal(json_array_size(list), 2);
    assert_int_equal(tu_jint(json_array_get(list, 0), "firstSeen"), 90);
    assert_int_equal(tu_jint(json_array_get(list, 0), "lastSeen"), 100);
    assert_int_equal(tu_jint(json_array_get(list, 1), "firstSeen"), 200);
    json_decref(list);

    struct store_instance_record more[] = {{"c", spec, true, NULL}};
    struct store_usage_record bad[] = {{"momentum", "abc", 0, 300}};
    expect_invalid(store_instances_save(f->store, more, 1, bad, 1, &err), &err, "abc");
    struct store_instance_record no_id[] = {{"d", spec, true, NULL}, {"", spec, true, NULL}};
    expect_invalid(store_instances_save(f->store, no_id, 2, NULL, 0, &err), &err, NULL);
    assert_ok(store_instance_list(f->store, &list, &err), &err);
    assert_ids(list, "id", "a,b");
    json_decref(list);
    json_decref(spec);
}

static void test_metadata_cache(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *got = (json_t *)0x1;
    assert_int_equal(store_metadata_get(f->store, HEX_A, &got, &err), 1);
    assert_null(got);

    json_t *meta = jparse("{\"name\": \"momentum\", \"config\": [{\"name\": \"size\", "
                          "\"required\": false, \"default\": 0.25}], \"description\": \"\"}");
    assert_ok(store_metadata_put(f->store, "sha256:" HEX_A, meta, &err), &err);
    assert_int_equal(store_metadata_get(f->store, HEX_A, &got, &err), 0);
    assert_json_same(got, meta);
    json_decref(got);

    json_t *newer = jparse("{\"name\": \"momentum\", \"config\": []}");
    assert_ok(store_metadata_put(f->store, HEX_A, newer, &err), &err);
    assert_int_equal(store_metadata_get(f->store, "sha256:" HEX_A, &got, &err), 0);
    assert_json_same(got, newer);
    json_decref(got);

    expect_invalid(store_metadata_put(f->store, "sha256:12", meta, &err), &err, "sha256:12");
    expect_invalid(store_metadata_get(f->store, HEX_A, NULL, &err), &err, NULL);
    json_decref(newer);
    json_decref(meta);
}

/* Many entries in one transaction, all or nothing. */
static void test_metadata_put_many(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *a = jparse("{\"name\": \"a\", \"config\": []}");
    json_t *b = jparse("{\"name\": \"b\", \"config\": []}");
    const char *bad_hexes[] = {HEX_A, "sha256:12"};
    json_t *values[] = {a, b};
    expect_invalid(store_metadata_put_many(f->store, bad_hexes, values, 2, &err), &err,
                   "sha256:12");
    json_t *got = NULL;
    assert_int_equal(store_metadata_get(f->store, HEX_A, &got, &err), 1);

    const char *hexes[] = {"sha256:" HEX_A, HEX_B};
    assert_ok(store_metadata_put_many(f->store, hexes, values, 2, &err), &err);
    assert_ok(store_metadata_put_many(f->store, hexes, values, 0, &err), &err);
    assert_int_equal(store_metadata_get(f->store, HEX_A, &got, &err), 0);
    assert_json_same(got, a);
    json_decref(got);
    assert_int_equal(store_metadata_get(f->store, HEX_B, &got, &err), 0);
    assert_json_same(got, b);
    json_decref(got);
    json_decref(a);
    json_decref(b);
}

static void test_providers(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *sim2 = jparse("{\"name\": \"sim2\", \"adapter\": {\"identifier\": \"simulated\", "
                          "\"config\": {\"seed\": 7}}, \"enabled\": true}");
    json_t *alpha = jparse("{\"name\": \"alpha\", \"adapter\": {\"identifier\": \"simulated\"}}");
    assert_ok(store_provider_put(f->store, "sim2", sim2, &err), &err);
    assert_ok(store_provider_put(f->store, "alpha", alpha, &err), &err);
    assert_ok(store_provider_put(f->store, "alpha", sim2, &err), &err); /* replaces */

    json_t *list = NULL;
    assert_ok(store_provider_list(f->store, &list, &err), &err);
    assert_ids(list, "name", "alpha,sim2");
    assert_json_same(json_object_get(json_array_get(list, 0), "spec"), sim2);
    json_decref(list);

    assert_ok(store_provider_delete(f->store, "alpha", &err), &err);
    assert_ok(store_provider_delete(f->store, "nope", &err), &err);
    assert_ok(store_provider_list(f->store, &list, &err), &err);
    assert_ids(list, "name", "sim2");
    json_decref(list);

    json_t *scalar = json_integer(1);
    expect_invalid(store_provider_put(f->store, "x", scalar, &err), &err, NULL);
    expect_invalid(store_provider_put(f->store, "", sim2, &err), &err, NULL);
    expect_invalid(store_provider_delete(f->store, "", &err), &err, NULL);
    json_decref(scalar);
    json_decref(alpha);
    json_decref(sim2);
}

static void test_settings(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *value = (json_t *)0x1;
    assert_int_equal(store_setting_get(f->store, "risk.limits", &value, &err), 1);
    assert_null(value);

    json_t *limits = jparse("{\"maxOrderNotional\": \"10000\", \"maxOpenOrders\": 20}");
    json_t *number = json_integer(5);
    assert_ok(store_setting_put(f->store, "risk.limits", limits, &err), &err);
    assert_ok(store_setting_put(f->store, "workers", number, &err), &err);
    assert_int_equal(store_setting_get(f->store, "risk.limits", &value, &err), 0);
    assert_json_same(value, limits);
    json_decref(value);
    assert_int_equal(store_setting_get(f->store, "workers", &value, &err), 0);
    assert_json_same(value, number);
    json_decref(value);

    expect_invalid(store_setting_put(f->store, "", limits, &err), &err, NULL);
    expect_invalid(store_setting_get(f->store, "workers", NULL, &err), &err, NULL);
    json_decref(number);
    json_decref(limits);
}

/* -------------------------------------------------------------- orders */

static void test_order_round_trip_is_exact(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *o =
        jparse("{\"id\": \"o-1\", \"provider\": \"sim\", \"strategyInstance\": \"i1\", "
               "\"clientOrderId\": \"c-1\", \"symbol\": \"BTC-USDT\", \"side\": \"sell\", "
               "\"type\": \"limit\", \"quantity\": \"0.00100000\", \"price\": \"50000.10\", "
               "\"state\": \"acknowledged\", \"externalReference\": \"x-9\", "
               "\"placedAt\": 1764687000123, \"metadata\": {\"z\": [1, 2.5, \"\\u00e9\"], "
               "\"a\": {\"nested\": true}}, \"acknowledgedAt\": 1764687000200, "
               "\"completedAt\": null, \"createdAt\": 1764687000123, "
               "\"updatedAt\": 1764687000200}");
    assert_ok(store_orders_put(f->store, o, &err), &err);
    struct store_order_query q = {.instance_id = "i1"};
    json_t *out = query_orders(f->store, &q);
    assert_int_equal(json_array_size(out), 1);
    assert_json_same(json_array_get(out, 0), o);
    json_decref(out);

    /* Upsert by id: the new state replaces the record, still one row. */
    json_object_set_new(o, "state", json_string("filled"));
    json_object_set_new(o, "updatedAt", json_integer(1764687000300));
    assert_ok(store_orders_put(f->store, o, &err), &err);
    out = query_orders(f->store, &q);
    assert_int_equal(json_array_size(out), 1);
    assert_json_same(json_array_get(out, 0), o);
    json_decref(out);
    json_decref(o);
}

static void put_filter_fixture(struct store *s)
{
    struct err err = ERR_INIT;
    json_t *batch = json_array();
    json_array_append_new(batch, order("o1", "i1", "p1", "new", 10));
    json_array_append_new(batch, order("o2", "i1", "p2", "filled", 20));
    json_array_append_new(batch, order("o3", "i1", "p1", "cancelled", 30));
    json_array_append_new(batch, order("o4", "i1", "p1", "filled", 30)); /* tie with o3 */
    json_array_append_new(batch, order("o5", "i2", "p1", "new", 50));
    assert_ok(store_orders_put(s, batch, &err), &err);
    json_decref(batch);
}

static void test_order_filters(void **state)
{
    struct fixture *f = *state;
    put_filter_fixture(f->store);

    struct store_order_query q = {.instance_id = "i1"};
    json_t *out = query_orders(f->store, &q);
    assert_ids(out, "id", "o4,o3,o2,o1"); /* newest first; the later write wins a tie */
    json_decref(out);

    q.provider = "p1";
    out = query_orders(f->store, &q);
    assert_ids(out, "id", "o4,o3,o1");
    json_decref(out);

    const char *filled[] = {"filled"};
    q.states = filled;
    q.nstates = 1;
    out = query_orders(f->store, &q);
    assert_ids(out, "id", "o4");
    json_decref(out);

    const char *two[] = {"new", "cancelled"};
    q.provider = NULL;
    q.states = two;
    q.nstates = 2;
    out = query_orders(f->store, &q);
    assert_ids(out, "id", "o3,o1");
    json_decref(out);

    q.states = NULL;
    q.nstates = 0;
    q.limit = 2;
    out = query_orders(f->store, &q);
    assert_ids(out, "id", "o4,o3");
    json_decref(out);

    struct store_order_query other = {.instance_id = "i2"};
    out = query_orders(f->store, &other);
    assert_ids(out, "id", "o5");
    json_decref(out);
    struct store_order_query none = {.instance_id = "i3"};
    out = query_orders(f->store, &none);
    assert_int_equal(json_array_size(out), 0);
    json_decref(out);
}

static void test_order_default_limit(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *batch = json_array();
    for (int i = 0; i < 130; i++) {
        char id[16];
        snprintf(id, sizeof id, "o%03d", i);
        json_array_append_new(batch, order(id, "i1", "p1", "new", 1000 + i));
    }
    assert_ok(store_orders_put(f->store, batch, &err), &err);
    json_decref(batch);
    struct store_order_query q = {.instance_id = "i1", .limit = 0};
    json_t *out = query_orders(f->store, &q);
    assert_int_equal(json_array_size(out), 100);
    assert_string_equal(json_string_value(json_object_get(json_array_get(out, 0), "id")), "o129");
    json_decref(out);
    q.limit = 500;
    out = query_orders(f->store, &q);
    assert_int_equal(json_array_size(out), 130);
    json_decref(out);
}

/* A batch is one transaction: a bad element leaves nothing behind. */
static void test_batch_is_all_or_nothing(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *batch = json_array();
    json_array_append_new(batch, order("o1", "i1", "p1", "new", 10));
    json_array_append_new(batch, order("o2", "i1", "p1", "new", 20));
    json_t *bad = order("o3", "i1", "p1", "new", 30);
    json_object_set_new(bad, "updatedAt", json_string("yesterday"));
    json_array_append_new(batch, bad);
    expect_invalid(store_orders_put(f->store, batch, &err), &err, "orders[2]");
    struct store_order_query q = {.instance_id = "i1"};
    json_t *out = query_orders(f->store, &q);
    assert_int_equal(json_array_size(out), 0);
    json_decref(out);

    json_array_remove(batch, 2);
    json_array_append_new(batch, json_string("not an object"));
    expect_invalid(store_orders_put(f->store, batch, &err), &err, "orders[2]");
    json_array_remove(batch, 2);
    assert_ok(store_orders_put(f->store, batch, &err), &err);
    out = query_orders(f->store, &q);
    assert_ids(out, "id", "o2,o1");
    json_decref(out);
    json_decref(batch);

    json_t *empty = json_array();
    assert_ok(store_orders_put(f->store, empty, &err), &err);
    json_decref(empty);
    json_t *scalar = json_integer(1);
    expect_invalid(store_orders_put(f->store, scalar, &err), &err, "orders");
    json_decref(scalar);
    expect_invalid(store_orders_put(f->store, NULL, &err), &err, "orders");
}

static void test_order_validation(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    const char *required[] = {"id",    "strategyInstance", "provider",
                              "state", "createdAt",        "updatedAt"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        json_t *o = order("o1", "i1", "p1", "new", 1);
        json_object_del(o, required[i]);
        assert_int_equal(store_orders_put(f->store, o, &err), -1);
        assert_int_equal(err.kind, ERR_INVALID);
        assert_string_equal(json_string_value(json_object_get(err.details, "field")), required[i]);
        assert_non_null(strstr(err.message, "order:"));
        err_clear(&err);
        json_decref(o);
    }
    json_t *o = order("o1", "i1", "p1", "new", 1);
    json_object_set_new(o, "clientOrderId", json_integer(3));
    expect_invalid(store_orders_put(f->store, o, &err), &err, "clientOrderId");
    json_object_del(o, "clientOrderId"); /* optional for the store */
    assert_ok(store_orders_put(f->store, o, &err), &err);
    json_decref(o);

    struct store_order_query q = {.instance_id = NULL};
    json_t *out = NULL;
    expect_invalid(store_orders_query(f->store, &q, &out, &err), &err, NULL);
    q.instance_id = "i1";
    q.nstates = 1;
    expect_invalid(store_orders_query(f->store, &q, &out, &err), &err, NULL);
    expect_invalid(store_executions_query(f->store, NULL, &out, &err), &err, NULL);
    assert_null(out);
}

/* ---------------------------------------------------------- executions */

static void test_executions(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *batch = json_array();
    json_array_append_new(batch, execution("e1", "o1", "i1", "p1", 10));
    json_array_append_new(batch, execution("e2", "o1", "i1", "p1", 30));
    json_array_append_new(batch, execution("e3", "o2", "i1", "p2", 20));
    json_array_append_new(batch, execution("e1", "o9", "i1", "p2", 5)); /* other venue's e1 */
    json_array_append_new(batch, execution("e4", "o3", "i2", "p1", 40));
    assert_ok(store_executions_put(f->store, batch, &err), &err);

    struct store_order_query q = {.instance_id = "i1"};
    json_t *out = query_executions(f->store, &q);
    assert_ids(out, "executionId", "e2,e3,e1,e1");
    assert_json_same(json_array_get(out, 0), json_array_get(batch, 1));
    json_decref(out);

    q.provider = "p2";
    out = query_executions(f->store, &q);
    assert_ids(out, "orderId", "o2,o9");
    json_decref(out);

    q.provider = NULL;
    q.order_id = "o1";
    out = query_executions(f->store, &q);
    assert_ids(out, "executionId", "e2,e1");
    json_decref(out);

    q.order_id = NULL;
    q.limit = 1;
    out = query_executions(f->store, &q);
    assert_ids(out, "executionId", "e2");
    json_decref(out);

    /* Same provider and id: an update, not a second row. */
    json_t *again = execution("e1", "o1", "i1", "p1", 10);
    json_object_set_new(again, "fee", json_string("0.02"));
    assert_ok(store_executions_put(f->store, again, &err), &err);
    q.limit = 0;
    q.order_id = "o1";
    out = query_executions(f->store, &q);
    assert_int_equal(json_array_size(out), 2);
    assert_json_same(json_array_get(out, 1), again);
    json_decref(out);
    json_decref(again);

    json_t *bad = execution("e9", "o1", "i1", "p1", 10);
    json_object_del(bad, "tradedAt");
    expect_invalid(store_executions_put(f->store, bad, &err), &err, "tradedAt");
    json_decref(bad);
    json_decref(batch);
}

/* ----------------------------------------------------------- positions */

static json_t *fill(const char *id, const char *instance, const char *provider, const char *symbol,
                    const char *side, const char *qty)
{
    json_t *e = execution(id, "o1", instance, provider, 10);
    json_object_set_new(e, "quantity", json_string(qty));
    json_object_set_new(json_object_get(e, "metadata"), "symbol", json_string(symbol));
    json_object_set_new(json_object_get(e, "metadata"), "side", json_string(side));
    return e;
}

/* Fails unless `provider`'s positions are exactly `expected`: "instance
 * symbol net" lines joined by ';', nets to 1e-9. */
static void expect_positions(struct store *s, const char *provider, const char *expected)
{
    struct err err = ERR_INIT;
    json_t *out = NULL;
    assert_ok(store_positions_query(s, provider, &out, &err), &err);
    char got[1024] = "";
    size_t used = 0;
    size_t i;
    json_t *row;
    json_array_foreach(out, i, row)
    {
        double net = json_real_value(json_array_get(row, 2));
        double rounded = (double)llround(net * 1e9) / 1e9;
        used += (size_t)snprintf(got + used, sizeof got - used, "%s%s %s %.9g", i ? ";" : "",
                                 json_string_value(json_array_get(row, 0)),
                                 json_string_value(json_array_get(row, 1)), rounded);
    }
    if (strcmp(got, expected) != 0)
        fail_msg("positions of %s: got '%s', expected '%s'", provider, got, expected);
    json_decref(out);
}

/* The database sums each instance's fills per provider and symbol as they
 * are written: sells count negative, a rewritten execution moves its
 * position by the difference, a refused batch moves nothing, and an
 * execution without a symbol is no position. */
static void put_instance(struct store *s, const char *id)
{
    struct err err = ERR_INIT;
    json_t *spec = json_pack("{s:s, s:{}, s:{}}", "id", id, "strategy", "scope");
    assert_non_null(spec);
    assert_ok(store_instance_put(s, id, spec, true, NULL, &err), &err);
    json_decref(spec);
}

static void put_fill(struct store *s, const char *id, const char *instance, const char *qty)
{
    struct err err = ERR_INIT;
    json_t *e = fill(id, instance, "p1", "BTC-USDT", "buy", qty);
    assert_ok(store_executions_put(s, e, &err), &err);
    json_decref(e);
}

static void test_positions(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    put_instance(f->store, "i1");
    put_instance(f->store, "i2");
    expect_positions(f->store, "p1", "");
    json_t *batch = json_array();
    json_array_append_new(batch, fill("e1", "i1", "p1", "BTC-USDT", "buy", "0.5"));
    json_array_append_new(batch, fill("e2", "i1", "p1", "BTC-USDT", "sell", "0.2"));
    json_array_append_new(batch, fill("e3", "i1", "p1", "ETH-USDT", "sell", "1.5"));
    json_array_append_new(batch, fill("e4", "i2", "p1", "BTC-USDT", "buy", "0.25"));
    json_array_append_new(batch, fill("e5", "i1", "p2", "BTC-USDT", "buy", "7"));
    json_array_append_new(batch, execution("e6", "o1", "i1", "p1", 10)); /* no symbol */
    assert_ok(store_executions_put(f->store, batch, &err), &err);
    json_decref(batch);
    expect_positions(f->store, "p1", "i1 BTC-USDT 0.3;i1 ETH-USDT -1.5;i2 BTC-USDT 0.25");
    expect_positions(f->store, "p2", "i1 BTC-USDT 7");

    json_t *again = fill("e2", "i1", "p1", "BTC-USDT", "sell", "0.1");
    assert_ok(store_executions_put(f->store, again, &err), &err);
    json_decref(again);
    expect_positions(f->store, "p1", "i1 BTC-USDT 0.4;i1 ETH-USDT -1.5;i2 BTC-USDT 0.25");

    batch = json_array();
    json_array_append_new(batch, fill("e7", "i2", "p1", "BTC-USDT", "buy", "3"));
    json_t *bad = fill("e8", "i2", "p1", "BTC-USDT", "buy", "3");
    json_object_del(bad, "tradedAt");
    json_array_append_new(batch, bad);
    expect_invalid(store_executions_put(f->store, batch, &err), &err, "tradedAt");
    json_decref(batch);
    expect_positions(f->store, "p1", "i1 BTC-USDT 0.4;i1 ETH-USDT -1.5;i2 BTC-USDT 0.25");

    json_t *out = (json_t *)0x1;
    expect_invalid(store_positions_query(f->store, "", &out, &err), &err, "provider");
}

/* A position is its instance's: the delete drops it, a fill written after
 * the delete (the market's writer lags) moves nothing, and an instance
 * created again under the id starts flat; the executions stay. */
static void test_positions_end_with_their_instance(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    put_instance(f->store, "keep");
    put_instance(f->store, "drop");
    put_fill(f->store, "e1", "keep", "1");
    put_fill(f->store, "e2", "drop", "2");
    expect_positions(f->store, "p1", "drop BTC-USDT 2;keep BTC-USDT 1");

    assert_ok(store_instance_delete(f->store, "drop", &err), &err);
    expect_positions(f->store, "p1", "keep BTC-USDT 1");
    put_fill(f->store, "e3", "drop", "4");
    expect_positions(f->store, "p1", "keep BTC-USDT 1");

    put_instance(f->store, "drop");
    expect_positions(f->store, "p1", "keep BTC-USDT 1");
    put_fill(f->store, "e4", "drop", "0.5");
    expect_positions(f->store, "p1", "drop BTC-USDT 0.5;keep BTC-USDT 1");

    json_t *out = NULL;
    struct store_order_query q = {.instance_id = "drop"};
    assert_ok(store_executions_query(f->store, &q, &out, &err), &err);
    assert_int_equal(json_array_size(out), 3);
    json_decref(out);
}

/* ------------------------------------------------------------ balances */

static json_t *balance(const char *provider, const char *asset, const char *total,
                       long long snapshot_at)
{
    json_t *b =
        json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I}", "provider", provider, "asset", asset,
                  "total", total, "available", total, "snapshotAt", (json_int_t)snapshot_at,
                  "createdAt", (json_int_t)snapshot_at, "updatedAt", (json_int_t)snapshot_at);
    assert_non_null(b);
    return b;
}

static json_t *query_balances(struct store *s, const char *provider, const char *asset, int limit)
{
    struct err err = ERR_INIT;
    json_t *out = NULL;
    assert_ok(store_balances_query(s, provider, asset, limit, &out, &err), &err);
    return out;
}

static void test_balances(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *batch = json_array();
    json_array_append_new(batch, balance("sim", "USDT", "100000", 100));
    json_array_append_new(batch, balance("sim", "BTC", "1", 200));
    json_array_append_new(batch, balance("other", "BTC", "5", 300));
    assert_ok(store_balances_put(f->store, batch, &err), &err);

    json_t *out = query_balances(f->store, "sim", NULL, 0);
    assert_ids(out, "asset", "BTC,USDT"); /* newest snapshot first */
    assert_json_same(json_array_get(out, 1), json_array_get(batch, 0));
    json_decref(out);

    /* A newer snapshot replaces; createdAt stays that of the first. */
    json_t *newer = balance("sim", "USDT", "90000", 400);
    assert_ok(store_balances_put(f->store, newer, &err), &err);
    out = query_balances(f->store, "sim", "USDT", 0);
    assert_int_equal(json_array_size(out), 1);
    json_t *got = json_array_get(out, 0);
    assert_string_equal(json_string_value(json_object_get(got, "total")), "90000");
    assert_int_equal(json_integer_value(json_object_get(got, "createdAt")), 100);
    assert_int_equal(json_integer_value(json_object_get(got, "updatedAt")), 400);
    json_decref(out);

    /* An older snapshot arriving late changes nothing. */
    json_t *late = balance("sim", "USDT", "1", 150);
    assert_ok(store_balances_put(f->store, late, &err), &err);
    out = query_balances(f->store, "sim", "USDT", 0);
    assert_string_equal(json_string_value(json_object_get(json_array_get(out, 0), "total")),
                        "90000");
    json_decref(out);

    out = query_balances(f->store, "sim", NULL, 1);
    assert_ids(out, "asset", "USDT");
    json_decref(out);
    out = query_balances(f->store, "nope", NULL, 0);
    assert_int_equal(json_array_size(out), 0);
    json_decref(out);

    /* createdAt and updatedAt default to now when left out. */
    json_t *bare = jparse("{\"provider\": \"sim\", \"asset\": \"ETH\", \"total\": \"2\", "
                          "\"available\": \"1.5\", \"snapshotAt\": 500}");
    assert_ok(store_balances_put(f->store, bare, &err), &err);
    out = query_balances(f->store, "sim", "ETH", 0);
    got = json_array_get(out, 0);
    assert_true(json_integer_value(json_object_get(got, "createdAt")) > 1000000000000LL);
    assert_true(json_integer_value(json_object_get(got, "updatedAt")) > 1000000000000LL);
    assert_string_equal(json_string_value(json_object_get(got, "available")), "1.5");
    json_decref(out);

    json_object_set_new(bare, "total", json_real(2.0));
    expect_invalid(store_balances_put(f->store, bare, &err), &err, "total");
    expect_invalid(store_balances_query(f->store, NULL, NULL, 0, &out, &err), &err, NULL);
    json_decref(bare);
    json_decref(late);
    json_decref(newer);
    json_decref(batch);
}

/* Rows as a market's writer gives them: columns, and the record's text. */
static struct store_order_row order_row(const json_t *rec)
{
    size_t len = 0;
    char *text = jsonutil_dump(rec, &len);
    assert_non_null(text);
    return (struct store_order_row){json_string_value(json_object_get(rec, "id")),
                                    json_string_value(json_object_get(rec, "strategyInstance")),
                                    json_string_value(json_object_get(rec, "provider")),
                                    json_string_value(json_object_get(rec, "state")),
                                    json_string_value(json_object_get(rec, "clientOrderId")),
                                    json_integer_value(json_object_get(rec, "createdAt")),
                                    json_integer_value(json_object_get(rec, "updatedAt")),
                                    text,
                                    len};
}

static struct store_execution_row execution_row(const json_t *rec)
{
    size_t len = 0;
    char *text = jsonutil_dump(rec, &len);
    assert_non_null(text);
    return (struct store_execution_row){json_string_value(json_object_get(rec, "provider")),
                                        json_string_value(json_object_get(rec, "executionId")),
                                        json_string_value(json_object_get(rec, "orderId")),
                                        json_string_value(json_object_get(rec, "strategyInstance")),
                                        json_integer_value(json_object_get(rec, "tradedAt")),
                                        json_integer_value(json_object_get(rec, "createdAt")),
                                        text,
                                        len};
}

static struct store_balance_row balance_row(const json_t *rec)
{
    size_t len = 0;
    char *text = jsonutil_dump(rec, &len);
    assert_non_null(text);
    return (struct store_balance_row){json_string_value(json_object_get(rec, "provider")),
                                      json_string_value(json_object_get(rec, "asset")),
                                      json_integer_value(json_object_get(rec, "snapshotAt")),
                                      json_integer_value(json_object_get(rec, "createdAt")),
                                      json_integer_value(json_object_get(rec, "updatedAt")),
                                      text,
                                      len};
}

/* A market's batch: the three tables in one commit, all or nothing; the
 * texts are copied (the caller frees its rows before anything is read). */
static void test_rows_put_is_one_transaction(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *o1 = order("o1", "i1", "p1", "filled", 10);
    json_t *e1 = execution("e1", "o1", "i1", "p1", 10);
    json_t *e2 = execution("e2", "o1", "i1", "p1", 11);
    json_t *usdt = balance("p1", "USDT", "99990", 10);
    struct store_order_row orders[] = {order_row(o1)};
    struct store_execution_row executions[] = {execution_row(e1), execution_row(e2)};
    struct store_balance_row balances[] = {balance_row(usdt)};
    struct store_rows rows = {orders, 1, executions, 2, balances, 1, NULL, NULL};

    /* An invalid execution leaves the valid order and balance unwritten. */
    executions[1].order_id = "";
    expect_invalid(store_rows_put(f->store, &rows, &err), &err, "executions[1]: field 'orderId'");
    struct store_order_query q = {.instance_id = "i1"};
    json_t *out = query_orders(f->store, &q);
    assert_int_equal(json_array_size(out), 0);
    json_decref(out);
    out = query_balances(f->store, "p1", NULL, 0);
    assert_int_equal(json_array_size(out), 0);
    json_decref(out);
    /* so does a row without its text */
    executions[1].order_id = "o1";
    const char *text = executions[1].record;
    executions[1].record = NULL;
    expect_invalid(store_rows_put(f->store, &rows, &err), &err, "executions[1]");
    executions[1].record = text;

    assert_ok(store_rows_put(f->store, &rows, &err), &err);
    free((char *)orders[0].record);
    free((char *)executions[0].record);
    free((char *)executions[1].record);
    free((char *)balances[0].record);
    out = query_orders(f->store, &q);
    assert_ids(out, "id", "o1");
    assert_json_same(json_array_get(out, 0), o1);
    json_decref(out);
    out = query_executions(f->store, &q);
    assert_int_equal(json_array_size(out), 2);
    json_decref(out);
    out = query_balances(f->store, "p1", "USDT", 0);
    assert_json_same(json_array_get(out, 0), usdt);
    json_decref(out);

    /* nothing to write is not an error */
    struct store_rows none = {0};
    assert_ok(store_rows_put(f->store, &none, &err), &err);
    json_decref(o1);
    json_decref(e1);
    json_decref(e2);
    json_decref(usdt);
}

/* n executions e0..e<n-1> of one order as JSON and as rows (ids holds
 * their ids); free_executions releases both. */
static void make_executions(int n, json_t **recs, struct store_execution_row *rows, char (*ids)[16])
{
    for (int i = 0; i < n; i++) {
        (void)snprintf(ids[i], sizeof ids[i], "e%d", i);
        recs[i] = execution(ids[i], "o1", "i1", "p1", 10 + i);
        rows[i] = execution_row(recs[i]);
    }
}

static void free_executions(int n, json_t **recs, struct store_execution_row *rows)
{
    for (int i = 0; i < n; i++) {
        free((char *)rows[i].record);
        json_decref(recs[i]);
    }
}

/* What the market's writer hands in between slices of rows: a second
 * connection, reading the file meanwhile, must see none of the batch. */
struct between_probe {
    sqlite3 *reader;
    int calls;
    long long seen; /* executions the reader saw at each call, summed */
};

static void count_between(void *arg)
{
    struct between_probe *p = arg;
    sqlite3_stmt *st = NULL;
    assert_int_equal(
        sqlite3_prepare_v2(p->reader, "SELECT count(*) FROM executions", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    p->seen += sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    p->calls++;
}

/* The hook runs after every STORE_ROWS_SLICE rows, inside the transaction
 * (nothing is visible to another reader yet), and every row lands. */
static void test_rows_put_calls_between_inside_the_transaction(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    enum { N = 2 * STORE_ROWS_SLICE + 5 };
    json_t *recs[N];
    struct store_execution_row executions[N];
    char ids_text[N][16];
    make_executions(N, recs, executions, ids_text);
    char *path = tu_path("%s/%s", f->state, STORE_DB_FILE);
    struct between_probe probe = {0};
    assert_int_equal(sqlite3_open(path, &probe.reader), SQLITE_OK);
    free(path);
    struct store_rows rows = {NULL, 0, executions, N, NULL, 0, count_between, &probe};
    assert_ok(store_rows_put(f->store, &rows, &err), &err);
    assert_int_equal(probe.calls, N / STORE_ROWS_SLICE);
    assert_int_equal(probe.seen, 0);

    struct store_order_query q = {.instance_id = "i1", .limit = N + 10};
    json_t *out = query_executions(f->store, &q);
    assert_int_equal(json_array_size(out), N);
    json_decref(out);
    sqlite3_close(probe.reader);
    free_executions(N, recs, executions);
}

/* A request waiting for the store while the writer's rows go in. */
struct waiting_reader {
    struct store *store;
    pthread_t thread;
    int calls;
    int rc;
};

static void *read_setting(void *arg)
{
    struct waiting_reader *r = arg;
    struct err err = ERR_INIT;
    json_t *value = NULL;
    r->rc = store_setting_get(r->store, "risk", &value, &err);
    json_decref(value);
    err_clear(&err);
    return NULL;
}

/* At its first call the hook starts a reader and returns once the reader
 * waits for the store's lock. */
static void start_reader_once(void *arg)
{
    struct waiting_reader *r = arg;
    if (r->calls++ > 0)
        return;
    assert_int_equal(pthread_create(&r->thread, NULL, read_setting, r), 0);
    for (int waited_ms = 0; !store__contended(r->store) && waited_ms < 10000; waited_ms++)
        usleep(1000);
    assert_true(store__contended(r->store));
}

/* While another thread waits for the store, the hook is skipped: a pause
 * between slices would hold that request up for nothing. */
static void test_rows_put_skips_between_while_the_store_is_wanted(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    enum { N = 3 * STORE_ROWS_SLICE };
    json_t *recs[N];
    struct store_execution_row executions[N];
    char ids_text[N][16];
    make_executions(N, recs, executions, ids_text);
    struct waiting_reader reader = {.store = f->store, .rc = -2};
    struct store_rows rows = {NULL, 0, executions, N, NULL, 0, start_reader_once, &reader};
    assert_ok(store_rows_put(f->store, &rows, &err), &err);
    assert_int_equal(reader.calls, 1); /* not after the 64th and 96th rows */
    assert_int_equal(pthread_join(reader.thread, NULL), 0);
    assert_int_equal(reader.rc, 1); /* the setting is absent: the read went through */
    assert_false(store__contended(f->store));
    free_executions(N, recs, executions);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)
    const struct CMUnitTest tests[] = {
        T(test_instances),
        T(test_usage),
        T(test_instances_save),
        T(test_metadata_cache),
        T(test_metadata_put_many),
        T(test_providers),
        T(test_settings),
        T(test_order_round_trip_is_exact),
        T(test_order_filters),
        T(test_order_default_limit),
        T(test_batch_is_all_or_nothing),
        T(test_order_validation),
        T(test_executions),
        T(test_positions),
        T(test_positions_end_with_their_instance),
        T(test_balances),
        T(test_rows_put_is_one_transaction),
        T(test_rows_put_calls_between_inside_the_transaction),
        T(test_rows_put_skips_between_while_the_store_is_wanted),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
