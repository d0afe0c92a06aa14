/*
 * The `runtime` object's arguments and answers, over HTTP: a symbol given
 * as anything but a string is a TypeError naming it, in the order
 * functions and the price getters alike (it had quietly meant the first
 * scoped symbol); absent, undefined or null it still means that symbol.
 * A side is exactly 'buy' or 'sell'.
 * subscribedEvents() may only narrow metadata.events. isTradingActive()
 * is false while the kill switch is on. A top level may set timers and
 * log, at upload as when it runs.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const market_config = "providers:\n"
                                         "  - name: sim\n"
                                         "    adapter: simulated\n"
                                         "    config:\n"
                                         "      symbols: [BTC-USDT, ETH-USDT]\n"
                                         "      seed: 9\n"
                                         "      tickRate: 200\n";

static void start_server(struct tu_server *srv)
{
    struct tu_server_options opts = {.config_yaml = market_config};
    tu_server_start(srv, &opts);
}

static const char *const dry_run_config = "[{name: 'dry_run', type: 'bool', default: true}]";

/* try_(label, fn): logs `call <label> {"ok": value}` or `{"error": "Name: message"}`. */
static const char *const try_setup =
    "const try_ = (label, fn) => {\n"
    "  try { h.log('call', {label, ok: fn()}); }\n"
    "  catch (e) { h.log('call', {label, error: e.name + ': ' + e.message}); }\n"
    "};\n";

/* Runs `calls` (try_ lines) on the instance's first trade and returns
 * the logged results by label (new reference). */
static json_t *run_calls(struct tu_server *srv, const char *name, const char *calls, size_t n)
{
    char *handlers = tu_path("onTrade() {\n  if (done) return;\n  done = true;\n%s},", calls);
    char *setup = tu_path("%slet done = false;", try_setup);
    char *src = tu_strategy_source(name, "['Trade']", dry_run_config, setup, handlers);
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    free(setup);
    free(handlers);
    json_decref(tu_instance_create(srv, name, name, NULL, NULL, "[\"BTC-USDT\"]"));
    tu_instance_start(srv, name);
    json_t *values = tu_wait_log_values(srv, name, "call", n, TU_WAIT_S);
    json_t *by_label = json_object();
    size_t i;
    json_t *v;
    json_array_foreach(values, i, v)
    {
        json_object_set(by_label, tu_jstr(v, "label"), v);
    }
    json_decref(values);
    return by_label;
}

static void expect_error(const json_t *results, const char *label, const char *error)
{
    const json_t *r = json_object_get(results, label);
    if (!r)
        fail_msg("no result for %s", label);
    const char *got = json_string_value(json_object_get(r, "error"));
    if (!got || strcmp(got, error) != 0)
        fail_msg("%s: expected error '%s', got %s", label, error, json_dumps(r, JSON_COMPACT));
}

static void expect_ok(const json_t *results, const char *label)
{
    const json_t *r = json_object_get(results, label);
    if (!r || json_object_get(r, "error"))
        fail_msg("%s: expected no error, got %s", label, r ? json_dumps(r, JSON_COMPACT) : "none");
}

/* side is exactly 'buy' or 'sell', as documented: 'SELL' and 'Sell' had
 * been taken as sells. */
static void test_side_is_exact(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    json_t *results =
        run_calls(srv, "sides",
                  "  try_('upper', () => rt.submitMarketOrder('sim', 'SELL', 0.001));\n"
                  "  try_('title', () => rt.submitOrder('sim', 'Buy', 0.001, 1));\n"
                  "  try_('buy', () => rt.submitMarketOrder('sim', 'buy', 0.001));\n"
                  "  try_('sell', () => rt.submitOrder('sim', 'sell', 0.001, 1e9));\n",
                  4);
    expect_error(results, "upper", "TypeError: side must be \"buy\" or \"sell\"");
    expect_error(results, "title", "TypeError: side must be \"buy\" or \"sell\"");
    expect_ok(results, "buy");
    expect_ok(results, "sell");
    json_decref(results);
    tu_server_stop(srv);
}

static void test_symbol_must_be_a_string(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    json_t *results = run_calls(
        srv, "symbols",
        "  try_('market-42', () => rt.submitMarketOrder('sim', 'buy', 0.001, 42));\n"
        "  try_('market-obj', () => rt.submitMarketOrder('sim', 'buy', 0.001, {s: 'ETH-USDT'}));\n"
        "  try_('market-boxed', () => rt.submitMarketOrder('sim', 'buy', 0.001,\n"
        "    new String('BTC-USDT')));\n"
        "  try_('limit-42', () => rt.submitOrder('sim', 'buy', 0.001, 1, 42));\n"
        "  try_('last-42', () => rt.getLastPrice(42));\n"
        "  try_('bid-obj', () => rt.getBidPrice({}));\n"
        "  try_('ask-true', () => rt.getAskPrice(true));\n"
        "  try_('state-42', () => rt.getMarketState(42));\n"
        "  try_('market-none', () => rt.submitMarketOrder('sim', 'buy', 0.001));\n"
        "  try_('market-undef', () => rt.submitMarketOrder('sim', 'buy', 0.001, undefined));\n"
        "  try_('market-null', () => rt.submitMarketOrder('sim', 'buy', 0.001, null));\n"
        "  try_('market-named', () => rt.submitMarketOrder('sim', 'buy', 0.001, 'BTC-USDT'));\n"
        "  try_('last-none', () => rt.getLastPrice());\n"
        "  try_('state-null', () => rt.getMarketState(null));\n",
        14);
    expect_error(results, "market-42", "TypeError: symbol must be a string, got number");
    expect_error(results, "market-obj", "TypeError: symbol must be a string, got object");
    expect_error(results, "market-boxed", "TypeError: symbol must be a string, got object");
    expect_error(results, "limit-42", "TypeError: symbol must be a string, got number");
    expect_error(results, "last-42", "TypeError: symbol must be a string, got number");
    expect_error(results, "bid-obj", "TypeError: symbol must be a string, got object");
    expect_error(results, "ask-true", "TypeError: symbol must be a string, got boolean");
    expect_error(results, "state-42", "TypeError: symbol must be a string, got number");
    expect_ok(results, "market-none");
    expect_ok(results, "market-undef");
    expect_ok(results, "market-null");
    expect_ok(results, "market-named");
    expect_ok(results, "last-none");
    expect_ok(results, "state-null");
    assert_string_equal(tu_jstr(results, "market-none.ok"), "symbols-1");
    assert_string_equal(tu_jstr(results, "market-named.ok"), "symbols-4");
    json_decref(results);
    /* the refused calls placed nothing: four orders, all on BTC-USDT */
    json_t *doc = tu_wait_list(srv, "/strategy/instances/symbols/orders", "orders", 4, TU_WAIT_S);
    assert_int_equal(json_array_size(json_object_get(doc, "orders")), 4);
    json_decref(doc);
    tu_server_stop(srv);
}

/* subscribedEvents() naming an event metadata.events lacks fails the
 * start (it gave an instance that never heard it), with the event named. */
static void test_subscribed_event_must_be_declared(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *src = tu_strategy_source("narrow", "['Trade']", "[]", "",
                                   "subscribedEvents() { return ['Ticker']; },\n"
                                   "onTicker() {},");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    json_decref(tu_instance_create(srv, "narrow", "narrow", NULL, NULL, NULL));
    json_t *err = tu_call(srv, "POST", "/strategy/instances/narrow/start", 422, "{}");
    assert_non_null(strstr(tu_jstr(err, "error"), "Ticker is not in metadata.events"));
    json_decref(err);
    json_t *snap = tu_instance_get(srv, "narrow");
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "stopReason"), "startFailed");
    assert_string_equal(tu_jstr(snap, "lastError.handler"), "create");
    assert_non_null(strstr(tu_jstr(snap, "lastError.message"), "Ticker"));
    json_decref(snap);
    tu_server_stop(srv);
}

/* isTradingActive() is false while the kill switch refuses every order,
 * from the RiskControl event that says it turned on, and true again once
 * it is off. */
static void test_trading_inactive_under_kill_switch(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *src =
        tu_strategy_source("watcher", "['Trade', 'RiskControl']", "[]", "let seen = false;",
                           "onTrade() {\n"
                           "  if (!seen) h.log('trading', {active: rt.isTradingActive()});\n"
                           "  seen = true;\n"
                           "},\n"
                           "onRiskControl(ctx, evt, p) {\n"
                           "  h.log('risk', {active: rt.isTradingActive()});\n"
                           "},");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    json_decref(tu_instance_create(srv, "watcher", "watcher", NULL, NULL, NULL));
    tu_instance_start(srv, "watcher");
    json_t *v = tu_wait_log_values(srv, "watcher", "trading", 1, TU_WAIT_S);
    assert_true(json_is_true(tu_jget(v, "0.active")));
    json_decref(v);
    tu_set_kill_switch(srv, true);
    v = tu_wait_log_values(srv, "watcher", "risk", 1, TU_WAIT_S);
    assert_true(json_is_false(tu_jget(v, "0.active")));
    json_decref(v);
    tu_set_kill_switch(srv, false);
    v = tu_wait_log_values(srv, "watcher", "risk", 2, TU_WAIT_S);
    assert_true(json_is_true(tu_jget(v, "1.active")));
    json_decref(v);
    tu_server_stop(srv);
}

/* A top level that sets a timer and logs, unguarded, uploads (validation
 * gives it inert ones) and, started, runs the timer after create(). */
static void test_top_level_timer_uploads_and_runs(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    const char *src = "let created = false;\n"
                      "console.log('loading');\n"
                      "setTimeout((tag) => console.log('fired', JSON.stringify({tag, created})), 0,"
                      " 'x');\n"
                      "module.exports = {\n"
                      "  metadata: { name: 'early', displayName: 'E', events: ['Trade'] },\n"
                      "  create() { created = true; return {}; },\n"
                      "};\n";
    tu_upload_expect(srv, src, NULL, 201, NULL);
    json_decref(tu_instance_create(srv, "early", "early", NULL, NULL, NULL));
    tu_instance_start(srv, "early");
    json_t *v = tu_wait_log_values(srv, "early", "fired", 1, TU_WAIT_S);
    assert_string_equal(tu_jstr(v, "0.tag"), "x");
    assert_true(json_is_true(tu_jget(v, "0.created")));
    json_decref(v);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_symbol_must_be_a_string, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_side_is_exact, tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_subscribed_event_must_be_declared, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_trading_inactive_under_kill_switch, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_top_level_timer_uploads_and_runs, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
