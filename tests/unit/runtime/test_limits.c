/*
 * Limits and failures: a strategy that loops, allocates without bound,
 * recurses without bound or keeps throwing is stopped with its reason, and
 * the other instances on the same worker notice nothing.
 */
#include "rtfixture.h"

#include "core/strbuf.h"

static const char *const GOOD = "    return { onTrade(ctx, evt, p) { "
                                "env.runtime.submitMarketOrder('sim', 'buy', evt.seq); } };";

static json_t *stored_record(struct fx *f, const char *id)
{
    struct err err = ERR_INIT;
    json_t *list = NULL;
    fx_ok(store_instance_list(f->store, &list, &err), &err);
    json_t *found = NULL;
    size_t i;
    json_t *rec;
    json_array_foreach(list, i, rec)
    {
        if (strcmp(json_string_value(json_object_get(rec, "id")), id) == 0)
            found = json_incref(rec);
    }
    json_decref(list);
    return found;
}

/* Runs `bad` (triggered by a trade at price 1000) next to a well-behaved
 * instance on one worker and checks the stop and the neighbour. */
static void expect_stop(const char *name, const char *body, const char *config, const char *reason)
{
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    char *src = fx_module(name, "['Trade']",
                          "[{name: 'cpu_budget_ms', type: 'int', default: 20},"
                          " {name: 'memory_limit_mb', type: 'int', default: 16}]",
                          body);
    fx_upload(&f, name, src, NULL, hex);
    free(src);
    fx_add_module(&f, "good", "['Trade']", NULL, GOOD, hex);
    fx_run(&f, "bad", name, config, NULL);
    fx_run(&f, "good", "good", NULL, NULL);
    fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    fx_trade(&f, "sim", "BTC-USDT", 1000, 1);
    for (int i = 0; i < 100; i++)
        fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait(fx_cond_stopped, &f, "bad", 10000));
    assert_true(fx_wait_delivered(&f, "good", 102, 10000));
    char got[32];
    assert_string_equal(fx_reason(&f, "bad", got, sizeof got), reason);
    assert_true(fx_running(&f, "good"));
    /* the neighbour saw every event, in order */
    size_t n = fx_order_count(&f.market);
    double last = 0;
    for (size_t i = 0; i < n; i++) {
        struct order_request r = fx_order(&f.market, i);
        if (strcmp(r.instance_id, "good") == 0) {
            assert_true(r.quantity == last + 1);
            last = r.quantity;
        }
    }
    assert_true(last == 102);
    json_t *snap = fx_snapshot(&f, "bad");
    assert_non_null(tu_jstr(snap, "lastError.message"));
    assert_string_equal(tu_jstr(snap, "lastError.handler"), "onTrade");
    json_decref(snap);
    json_t *rec = stored_record(&f, "bad");
    assert_true(json_is_false(json_object_get(rec, "desiredRunning")));
    assert_string_equal(tu_jstr(rec, "stopReason"), reason);
    json_decref(rec);
    struct strbuf out = STRBUF_INIT;
    runtime_metrics_write(f.rt, &out);
    char *line = tu_path("stratd_instance_stops_total{reason=\"%s\"} 1", reason);
    assert_non_null(strstr(strbuf_cstr(&out), line));
    free(line);
    strbuf_release(&out);
    /* stopped for good: it does not come back after a restart */
    fx_restart(&f);
    assert_false(fx_running(&f, "bad"));
    assert_true(fx_running(&f, "good"));
    fx_close(&f);
}

static void test_cpu_budget(void **state)
{
    (void)state;
    expect_stop("spin",
                "    return { onTrade(ctx, evt, p) {\n"
                "      if (p.price > 500) { try { while (true) {} } catch (e) {} }\n"
                "    } };",
                NULL, "cpuBudget");
}

static void test_memory_limit(void **state)
{
    (void)state;
    expect_stop("hog",
                "    const keep = [];\n"
                "    return { onTrade(ctx, evt, p) {\n"
                "      if (p.price > 500) for (;;) keep.push(new Array(4096).fill(evt.seq));\n"
                "    } };",
                "{\"cpu_budget_ms\": 5000}", "memoryLimit");
}

static void test_stack_overflow(void **state)
{
    (void)state;
    expect_stop("deep",
                "    function down(n) { return down(n + 1) + 1; }\n"
                "    return { onTrade(ctx, evt, p) { if (p.price > 500) down(0); } };",
                "{\"cpu_budget_ms\": 5000}", "stackOverflow");
}

/* A module's declared defaults may lower its limits but never lift them
 * above the gateway's: only the operator's instance config can. */
static void expect_capped(const char *body, const char *config, const char *reason)
{
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    char *src = fx_module("greedy", "['Trade']",
                          "[{name: 'cpu_budget_ms', type: 'int', default: 3600000},"
                          " {name: 'memory_limit_mb', type: 'int', default: 65536}]",
                          body);
    fx_upload(&f, "greedy", src, NULL, hex);
    free(src);
    fx_run(&f, "greedy", "greedy", config, NULL);
    fx_trade(&f, "sim", "BTC-USDT", 1000, 1);
    assert_true(fx_wait(fx_cond_stopped, &f, "greedy", 20000));
    char got[32];
    assert_string_equal(fx_reason(&f, "greedy", got, sizeof got), reason);
    fx_close(&f);
}

static void test_module_defaults_cannot_lift_limits(void **state)
{
    (void)state;
    expect_capped("    return { onTrade(ctx, evt, p) { for (;;) {} } };", NULL, "cpuBudget");
    expect_capped("    const keep = [];\n"
                  "    return { onTrade(ctx, evt, p) {\n"
                  "      for (;;) keep.push(new Array(4096).fill(evt.seq));\n"
                  "    } };",
                  "{\"cpu_budget_ms\": 60000}", "memoryLimit");
}

static void test_microtask_loop(void **state)
{
    (void)state;
    expect_stop("ticks",
                "    const spin = () => Promise.resolve().then(spin);\n"
                "    return { onTrade(ctx, evt, p) { if (p.price > 500) spin(); } };",
                NULL, "cpuBudget");
}

static void test_too_many_errors(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    runtime_free(f.rt);
    f.opts.max_consecutive_errors = 5;
    fx_start_runtime(&f);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "oops", "['Trade']", NULL,
                  "    return { onTrade(ctx, evt) {\n"
                  "      if (ctx.symbol === 'ETH-USDT' && evt.seq % 2) return;\n"
                  "      null.boom;\n"
                  "    } };",
                  hex);
    fx_add_module(&f, "async", "['Trade']", NULL,
                  "    return { async onTrade() { throw new RangeError('async boom'); } };", hex);
    fx_run(&f, "always", "oops", NULL, NULL);
    fx_run(&f, "sometimes", "oops", NULL, "{\"sim\": {\"symbols\": [\"ETH-USDT\"]}}");
    fx_run(&f, "later", "async", NULL, "{\"sim\": {\"symbols\": [\"ETH-USDT\"]}}");
    for (int i = 0; i < 4; i++)
        fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait_delivered(&f, "always", 4, 2000));
    assert_true(fx_running(&f, "always"));
    fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait(fx_cond_stopped, &f, "always", 2000));
    char got[32];
    assert_string_equal(fx_reason(&f, "always", got, sizeof got), "tooManyErrors");
    json_t *snap = fx_snapshot(&f, "always");
    assert_int_equal(tu_jint(snap, "counters.handlerErrors"), 5);
    assert_non_null(strstr(tu_jstr(snap, "lastError.message"), "TypeError"));
    json_decref(snap);
    json_t *logs = fx_logs(&f, "always", "TypeError");
    assert_true(json_array_size(logs) >= 5);
    assert_string_equal(tu_jstr(logs, "0.handler"), "onTrade");
    assert_string_equal(tu_jstr(logs, "0.level"), "warn");
    assert_non_null(strstr(tu_jstr(logs, "0.stack"), "oops.js"));
    assert_true(tu_jint(logs, "0.line") > 0);
    json_decref(logs);

    /* an error every other call never makes a streak */
    for (int i = 0; i < 20; i++)
        fx_trade(&f, "sim", "ETH-USDT", 1, 1);
    assert_true(fx_wait_delivered(&f, "sometimes", 20, 2000));
    assert_true(fx_running(&f, "sometimes"));
    snap = fx_snapshot(&f, "sometimes");
    assert_int_equal(tu_jint(snap, "counters.handlerErrors"), 10);
    json_decref(snap);
    /* rejections of async handlers count as errors too */
    assert_true(fx_wait(fx_cond_stopped, &f, "later", 2000));
    snap = fx_snapshot(&f, "later");
    assert_true(tu_jint(snap, "counters.handlerErrors") >= 5);
    assert_non_null(strstr(tu_jstr(snap, "lastError.message"), "async boom"));
    json_decref(snap);
    char *hash = tu_path("stratd_handler_errors_total{strategy=\"oops\",hash=\"sha256:");
    struct strbuf out = STRBUF_INIT;
    runtime_metrics_write(f.rt, &out);
    assert_non_null(strstr(strbuf_cstr(&out), hash));
    strbuf_release(&out);
    free(hash);
    struct runtime_stats st;
    runtime_stats(f.rt, &st);
    assert_true(st.handler_errors >= 20);
    fx_close(&f);
}

static void test_timer_budget(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    char *src =
        fx_module("later", "['Trade']", "[{name: 'cpu_budget_ms', type: 'int', default: 20}]",
                  "    setTimeout(() => { for (;;) {} }, 20);\n"
                  "    return {};");
    fx_upload(&f, "later", src, NULL, hex);
    free(src);
    fx_add_module(&f, "good", "['Trade']", NULL, GOOD, hex);
    fx_run(&f, "late", "later", NULL, NULL);
    fx_run(&f, "good", "good", NULL, NULL);
    assert_true(fx_wait(fx_cond_stopped, &f, "late", 3000));
    char got[32];
    assert_string_equal(fx_reason(&f, "late", got, sizeof got), "cpuBudget");
    json_t *snap = fx_snapshot(&f, "late");
    assert_string_equal(tu_jstr(snap, "lastError.handler"), "timer");
    json_decref(snap);
    fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait_orders(&f, 1, 2000));
    fx_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cpu_budget),
        cmocka_unit_test(test_memory_limit),
        cmocka_unit_test(test_stack_overflow),
        cmocka_unit_test(test_module_defaults_cannot_lift_limits),
        cmocka_unit_test(test_microtask_loop),
        cmocka_unit_test(test_too_many_errors),
        cmocka_unit_test(test_timer_budget),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
