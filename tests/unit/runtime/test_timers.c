/*
 * Timers: helpers.sleep and the set/clear Timeout/Interval globals run on
 * the worker's timer heap, never block it, and die with their instance.
 */
#include "rtfixture.h"

static const char *const GOOD =
    "    return { onTrade(ctx, evt) { env.runtime.submitMarketOrder('sim', 'buy', evt.seq); } };";

static void test_sleep_does_not_block(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    char *src =
        fx_module("sleeper", "['Trade']", NULL,
                  "    return { async onTrade(ctx, evt) {\n"
                  "      if (evt.seq !== 1) { env.helpers.log('trade', evt.seq); return; }\n"
                  "      const t0 = Date.now();\n"
                  "      await env.helpers.sleep(200);\n"
                  "      env.helpers.log('woke', Date.now() - t0);\n"
                  "    } };");
    fx_upload(&f, "sleeper", src, NULL, hex);
    free(src);
    fx_add_module(&f, "good", "['Trade']", NULL, GOOD, hex);
    fx_run(&f, "s1", "sleeper", NULL, NULL);
    fx_run(&f, "g1", "good", NULL, NULL);
    int64_t t0 = clock_mono_ns();
    for (int i = 0; i < 50; i++)
        fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait_orders(&f, 50, 2000));
    int64_t busy_ms = (clock_mono_ns() - t0) / 1000000;
    assert_true(busy_ms < 150); /* the neighbour did not wait for the sleep */
    assert_true(fx_wait_logs(&f, "s1", "trade", 49, 2000));
    json_t *woke = fx_logs(&f, "s1", "woke");
    assert_int_equal(json_array_size(woke), 0); /* still asleep while others ran */
    json_decref(woke);
    assert_true(fx_wait_logs(&f, "s1", "woke", 1, 2000));
    woke = fx_logs(&f, "s1", "woke");
    long elapsed = strtol(tu_jstr(woke, "0.msg") + 5, NULL, 10);
    assert_true(elapsed >= 195 && elapsed < 1000);
    json_decref(woke);
    fx_close(&f);
}

static const char *const TICKER =
    "    let ticks = 0;\n"
    "    const id = setInterval(() => {\n"
    "      ticks++;\n"
    "      env.helpers.log('tick', ticks);\n"
    "      if (ticks === 5) clearInterval(id);\n"
    "    }, 10);\n"
    "    setTimeout((a, b) => env.helpers.log('args', a, b), 5, 'x', 42);\n"
    "    const never = setTimeout(() => env.helpers.log('never'), 30);\n"
    "    clearTimeout(never);\n"
    "    let flips = 0;\n"
    "    const other = setInterval(() => { flips++; if (flips === 3) throw new Error('flip'); }, "
    "5);\n"
    "    setTimeout(() => { clearInterval(other); env.helpers.log('flips', flips); }, 100);\n"
    "    return {};";

static void test_intervals(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "ticker", "['Trade']", NULL, TICKER, hex);
    fx_run(&f, "i1", "ticker", NULL, NULL);
    assert_true(fx_wait_logs(&f, "i1", "flips", 1, 2000));
    fx_sleep_ms(100);
    json_t *logs = fx_logs(&f, "i1", "tick");
    assert_int_equal(json_array_size(logs), 5);
    assert_string_equal(tu_jstr(logs, "4.msg"), "tick 5");
    json_decref(logs);
    logs = fx_logs(&f, "i1", "args");
    assert_string_equal(tu_jstr(logs, "0.msg"), "args x 42");
    json_decref(logs);
    logs = fx_logs(&f, "i1", "never");
    assert_int_equal(json_array_size(logs), 0);
    json_decref(logs);
    /* an interval that threw once kept running; the error was counted */
    logs = fx_logs(&f, "i1", "flips");
    assert_true(strtol(tu_jstr(logs, "0.msg") + 6, NULL, 10) > 3);
    json_decref(logs);
    json_t *snap = fx_snapshot(&f, "i1");
    assert_int_equal(tu_jint(snap, "counters.handlerErrors"), 1);
    assert_string_equal(tu_jstr(snap, "lastError.handler"), "timer");
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    fx_close(&f);
}

static void test_timers_die_with_instance(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    char *src = fx_module("pending", "['Trade']", "[]",
                          "    for (let i = 0; i < 100; i++) setTimeout(() => {}, 3600000 + i);\n"
                          "    setInterval(() => env.helpers.log('alive'), 5);\n"
                          "    env.helpers.sleep(3600000).then(() => env.helpers.log('late'));\n"
                          "    let refused = 'no';\n"
                          "    try { for (let i = 0; i < 20000; i++) setTimeout(() => {}, 1e9); }\n"
                          "    catch (e) { refused = e.name; }\n"
                          "    env.helpers.log('limit', refused);\n"
                          "    return { onTrade() {} };");
    fx_upload(&f, "pending", src, NULL, hex);
    free(src);
    fx_run(&f, "p1", "pending", "{\"cpu_budget_ms\": 5000}", NULL);
    assert_true(fx_wait_logs(&f, "p1", "alive", 2, 2000));
    json_t *logs = fx_logs(&f, "p1", "limit");
    assert_string_equal(tu_jstr(logs, "0.msg"), "limit RangeError");
    json_decref(logs);
    struct err err = ERR_INIT;
    fx_ok(runtime_instance_stop(f.rt, "p1", &err), &err);
    fx_sleep_ms(30);
    size_t alive = json_array_size(logs = fx_logs(&f, "p1", "alive"));
    json_decref(logs);
    fx_sleep_ms(50);
    logs = fx_logs(&f, "p1", "alive");
    assert_int_equal(json_array_size(logs), alive);
    json_decref(logs);
    /* and a fresh start gets fresh timers */
    fx_start(&f, "p1");
    assert_true(fx_wait_logs(&f, "p1", "alive", alive + 2, 2000));
    fx_ok(runtime_instance_delete(f.rt, "p1", &err), &err);
    fx_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sleep_does_not_block),
        cmocka_unit_test(test_intervals),
        cmocka_unit_test(test_timers_die_with_instance),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
