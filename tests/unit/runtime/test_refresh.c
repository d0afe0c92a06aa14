/*
 * Targeted refresh (reason codes, matching, unmatched targets), refresh
 * racing with a stream of events (no event lost or delivered twice), and
 * compile-once across many instances of a revision.
 */
#include "rtfixture.h"

/* Revision `version` of "alpha": one order per trade, quantity = seq and
 * price = version, so orders tell which VM handled which event. */
static void upload_version(struct fx *f, int version, const char *tag, char hex[HASH_HEX_LEN + 1])
{
    char *body = tu_path("    env.helpers.log('created', %d);\n"
                         "    return { onTrade(ctx, evt) {\n"
                         "      env.runtime.submitOrder('sim', 'buy', evt.seq, %d);\n"
                         "    } };",
                         version, version);
    char *src = fx_module("alpha", "['Trade']", NULL, body);
    fx_upload(f, "alpha", src, tag, hex);
    free(src);
    free(body);
}

static void set_tag(struct fx *f, const char *tag, const char *hex)
{
    struct err err = ERR_INIT;
    char previous[HASH_HEX_LEN + 1];
    fx_ok(catalog_set_tag(f->cat, "alpha", tag, hex, previous, &err), &err);
}

static json_t *refresh(struct fx *f, const char *request_json)
{
    struct err err = ERR_INIT;
    json_t *request = request_json ? json_loads(request_json, 0, NULL) : NULL;
    json_t *response = NULL;
    fx_ok(runtime_refresh(f->rt, request, &response, &err), &err);
    json_decref(request);
    assert_string_equal(tu_jstr(response, "status"), "ok");
    return response;
}

/* The result for an instance id (or NULL). */
static json_t *result_for(json_t *response, const char *id)
{
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(response, "results"), i, r)
    {
        const char *first = json_string_value(json_array_get(json_object_get(r, "instances"), 0));
        if (first && strcmp(first, id) == 0)
            return r;
    }
    return NULL;
}

static void expect_result(json_t *response, const char *id, const char *reason, const char *hex,
                          const char *previous)
{
    json_t *r = result_for(response, id);
    if (!r)
        fail_msg("no result for %s", id);
    assert_string_equal(tu_jstr(r, "reason"), reason);
    assert_string_equal(tu_jstr(r, "strategy"), "alpha");
    assert_non_null(tu_jstr(r, "selector"));
    char *hash = tu_path("sha256:%s", hex);
    assert_string_equal(tu_jstr(r, "hash"), hash);
    free(hash);
    if (previous) {
        char *prev = tu_path("sha256:%s", previous);
        assert_string_equal(tu_jstr(r, "previousHash"), prev);
        free(prev);
    } else {
        assert_null(json_object_get(r, "previousHash"));
    }
}

static void test_reason_codes(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char v1[HASH_HEX_LEN + 1], v2[HASH_HEX_LEN + 1];
    upload_version(&f, 1, "prod", v1);
    set_tag(&f, "beta", v1);
    char *pinned = tu_path("alpha@sha256:%s", v1);
    fx_run(&f, "r-latest", "alpha", NULL, NULL);
    fx_run(&f, "r-prod", "alpha:prod", NULL, NULL);
    fx_run(&f, "r-pinned", pinned, NULL, NULL);
    fx_run(&f, "r-beta", "alpha:beta", NULL, NULL);
    fx_create(&f, "r-stopped", "alpha:prod", NULL, NULL);
    upload_version(&f, 2, "v2", v2); /* latest moves too */
    set_tag(&f, "prod", v2);

    /* only the instances whose selector is alpha:prod move */
    json_t *resp = refresh(&f, "{\"strategies\": [\"alpha:prod\"]}");
    assert_int_equal(json_array_size(json_object_get(resp, "results")), 2);
    expect_result(resp, "r-prod", "refreshed", v2, v1);
    expect_result(resp, "r-stopped", "refreshed", v2, v1);
    json_decref(resp);
    assert_true(fx_running(&f, "r-prod"));
    assert_false(fx_running(&f, "r-stopped"));
    assert_true(fx_wait_logs(&f, "r-prod", "created 2", 1, 2000));
    assert_int_equal(runtime_running_count(f.rt, "alpha", v2), 1);
    assert_int_equal(runtime_running_count(f.rt, "alpha", v1), 3);
    json_t *snap = fx_snapshot(&f, "r-stopped");
    char *h2 = tu_path("sha256:%s", v2);
    assert_string_equal(tu_jstr(snap, "strategy.hash"), h2);
    assert_string_equal(tu_jstr(snap, "strategy.tag"), "prod");
    json_decref(snap);

    /* by hash: instances pinned to v1, each re-resolving its own selector */
    char *req = tu_path("{\"hashes\": [\"sha256:%s\"]}", v1);
    resp = refresh(&f, req);
    free(req);
    assert_int_equal(json_array_size(json_object_get(resp, "results")), 3);
    expect_result(resp, "r-latest", "refreshed", v2, v1);
    expect_result(resp, "r-pinned", "alreadyPinned", v1, NULL);
    expect_result(resp, "r-beta", "alreadyPinned", v1, NULL);
    json_decref(resp);

    /* a tag that went away retires its instances; unmatched targets */
    struct err err = ERR_INIT;
    char previous[HASH_HEX_LEN + 1];
    fx_ok(catalog_delete_tag(f.cat, "alpha", "beta", true, previous, &err), &err);
    resp = refresh(&f, "{\"strategies\": [\"alpha\", \"nosuch\", \"alpha:gone\"]}");
    json_t *results = json_object_get(resp, "results");
    assert_int_equal(json_array_size(results), 7);
    expect_result(resp, "r-beta", "retired", v1, NULL);
    expect_result(resp, "r-pinned", "alreadyPinned", v1, NULL);
    expect_result(resp, "r-latest", "alreadyPinned", v2, NULL);
    size_t unmatched = 0;
    const char *prev_sel = "";
    size_t i;
    json_t *r;
    json_array_foreach(results, i, r)
    {
        const char *sel = tu_jstr(r, "selector");
        assert_true(strcmp(prev_sel, sel) <= 0); /* sorted by selector */
        prev_sel = sel;
        if (json_array_size(json_object_get(r, "instances")) == 0) {
            unmatched++;
            assert_string_equal(tu_jstr(r, "reason"), "retired");
            assert_null(json_object_get(r, "hash"));
            assert_null(json_object_get(r, "previousHash"));
        }
    }
    assert_int_equal(unmatched, 2);
    json_decref(resp);
    char reason[32];
    assert_false(fx_running(&f, "r-beta"));
    assert_string_equal(fx_reason(&f, "r-beta", reason, sizeof reason), "retired");

    /* everything: the full-hash pin never moves */
    resp = refresh(&f, NULL);
    assert_int_equal(json_array_size(json_object_get(resp, "results")), 5);
    expect_result(resp, "r-pinned", "alreadyPinned", v1, NULL);
    expect_result(resp, "r-prod", "alreadyPinned", v2, NULL);
    json_decref(resp);
    /* the pins were persisted */
    fx_restart(&f);
    snap = fx_snapshot(&f, "r-latest");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), h2);
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    json_t *bad = json_loads("{\"strategies\": \"alpha\"}", 0, NULL);
    fx_fails(runtime_refresh(f.rt, bad, &resp, &err), &err, ERR_INVALID);
    json_decref(bad);
    err_clear(&err);
    free(h2);
    free(pinned);
    fx_close(&f);
}

struct stream {
    struct fx *f;
    int n;
};

static void *publish_stream(void *arg)
{
    struct stream *s = arg;
    for (int i = 0; i < s->n; i++) {
        fx_trade(s->f, "sim", "BTC-USDT", 1, 1);
        if (i % 64 == 0)
            fx_sleep_ms(1);
    }
    return NULL;
}

static void test_refresh_races_events(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char v1[HASH_HEX_LEN + 1], v2[HASH_HEX_LEN + 1];
    upload_version(&f, 1, "prod", v1);
    upload_version(&f, 2, "v2", v2);
    set_tag(&f, "prod", v1);
    enum { INSTANCES = 3, EVENTS = 6000 };
    const char *ids[INSTANCES] = {"w1", "w2", "w3"};
    for (int i = 0; i < INSTANCES; i++)
        fx_run(&f, ids[i], "alpha:prod", NULL, NULL);
    struct stream s = {&f, EVENTS};
    pthread_t publisher;
    assert_int_equal(pthread_create(&publisher, NULL, publish_stream, &s), 0);
    int refreshes = 0;
    for (int round = 0; round < 10; round++) {
        fx_sleep_ms(5);
        set_tag(&f, "prod", round % 2 ? v1 : v2);
        json_t *resp = refresh(&f, "{\"strategies\": [\"alpha:prod\"]}");
        assert_string_equal(tu_jstr(resp, "results.0.reason"), "refreshed");
        json_decref(resp);
        refreshes++;
    }
    pthread_join(publisher, NULL);
    assert_true(fx_wait_orders(&f, (size_t)INSTANCES * EVENTS, 20000));
    fx_sleep_ms(20);
    assert_int_equal(fx_order_count(&f.market), (size_t)INSTANCES * EVENTS);
    for (int k = 0; k < INSTANCES; k++) {
        double last = 0, version = 1;
        int switches = 0;
        for (size_t i = 0; i < fx_order_count(&f.market); i++) {
            struct order_request r = fx_order(&f.market, i);
            if (strcmp(r.instance_id, ids[k]) != 0)
                continue;
            assert_true(r.quantity == last + 1); /* each event once, in order */
            last = r.quantity;
            if (r.price != version) {
                switches++;
                version = r.price;
            }
        }
        assert_true(last == EVENTS);
        assert_true(switches <= refreshes);
        assert_true(fx_running(&f, ids[k]));
    }
    struct runtime_stats st;
    runtime_stats(f.rt, &st);
    assert_int_equal(st.events_delivered, (uint64_t)INSTANCES * EVENTS);
    assert_int_equal(st.compilations, 2);
    fx_close(&f);
}

/* Instances stopped, deleted and recreated while events stream in; reports
 * for a deleted instance are dropped. Nothing crashes or leaks (the
 * sanitizer build checks). */
static void test_churn_under_stream(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char v1[HASH_HEX_LEN + 1];
    upload_version(&f, 1, NULL, v1);
    fx_run(&f, "keep", "alpha", NULL, NULL);
    struct stream s = {&f, 4000};
    pthread_t publisher;
    assert_int_equal(pthread_create(&publisher, NULL, publish_stream, &s), 0);
    struct err err = ERR_INIT;
    for (int round = 0; round < 20; round++) {
        char id[16];
        snprintf(id, sizeof id, "churn%d", round % 3);
        if (runtime_instance_exists(f.rt, id)) {
            if (round % 2)
                fx_ok(runtime_instance_stop(f.rt, id, &err), &err);
            fx_ok(runtime_instance_delete(f.rt, id, &err), &err);
        }
        fx_run(&f, id, "alpha", NULL, NULL);
        json_t *spec = fx_spec(id, "alpha", "{\"dry_run\": true}", NULL);
        fx_ok(runtime_instance_update(f.rt, id, spec, NULL, &err), &err);
        json_decref(spec);
        fx_sleep_ms(2);
    }
    pthread_join(publisher, NULL);
    /* a report for an instance that no longer exists */
    struct order_request last;
    size_t i = fx_order_count(&f.market);
    do
        last = fx_order(&f.market, --i);
    while (strcmp(last.instance_id, "keep") == 0 && i > 0);
    assert_string_not_equal(last.instance_id, "keep");
    fx_ok(runtime_instance_delete(f.rt, last.instance_id, &err), &err);
    fx_exec(&f, last.instance_key, "sim", "BTC-USDT", EXEC_FILLED, last.client_order_id);
    assert_true(fx_wait_delivered(&f, "keep", 4000, 10000));
    assert_true(fx_running(&f, "keep"));
    fx_close(&f);
}

static void test_compile_once(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    runtime_free(f.rt);
    f.opts.store = NULL; /* a thousand fsyncs would only slow the test down */
    fx_start_runtime(&f);
    char v1[HASH_HEX_LEN + 1];
    upload_version(&f, 1, NULL, v1);
    enum { N = 1000 };
    for (int i = 0; i < N; i++) {
        char id[32];
        snprintf(id, sizeof id, "c%04d", i);
        fx_run(&f, id, "alpha", NULL, NULL);
    }
    struct runtime_stats st;
    runtime_stats(f.rt, &st);
    assert_int_equal(st.compilations, 1);
    assert_int_equal(st.running, N);
    fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait_orders(&f, N, 10000));
    char v2[HASH_HEX_LEN + 1];
    upload_version(&f, 2, NULL, v2);
    json_t *resp = refresh(&f, NULL);
    assert_int_equal(json_array_size(json_object_get(resp, "results")), N);
    json_decref(resp);
    runtime_stats(f.rt, &st);
    assert_int_equal(st.compilations, 2);
    assert_int_equal(runtime_running_count(f.rt, "alpha", v2), N);
    fx_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reason_codes),
        cmocka_unit_test(test_refresh_races_events),
        cmocka_unit_test(test_churn_under_stream),
        cmocka_unit_test(test_compile_once),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
