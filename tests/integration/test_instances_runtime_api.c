/*
 * The `runtime` object's arguments and answers, over HTTP: a symbol given
 * as anything but a string is a TypeError naming it, in the order
 * functions and the price getters alike (it had quietly meant the first
 * scoped symbol); absent, undefined or null it still means that symbol.
 * A side is exactly 'buy' or 'sell'.
 * subscribedEvents() may only narrow metadata.events. isTradingActive()
 * is false while the kill switch is on. getInstrument() gives an instance
 * started while its provider runs the sizes it never heard announced, and
 * null outside its scope. A top level may set timers and log, at upload as
 * when it runs.
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

/* A NUL character in a string argument makes it no name at all: C would
 * read "sim\0x" as sim, and an id with a tail as the id. */
static void test_nul_in_string_arguments(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    json_t *results = run_calls(
        srv, "nuls",
        "  try_('provider', () => rt.submitMarketOrder('sim\\0x', 'buy', 0.001));\n"
        "  try_('symbol', () => rt.submitOrder('sim', 'buy', 0.001, 1, 'BTC-USDT\\0x'));\n"
        "  try_('side', () => rt.submitMarketOrder('sim', 'buy\\0', 0.001));\n"
        "  try_('last', () => rt.getLastPrice('BTC-USDT\\0zz'));\n"
        "  try_('placed', () => rt.submitOrder('sim', 'buy', 0.001, 1));\n"
        "  try_('cancel', () => rt.cancelOrder('nuls-1\\0tail'));\n"
        "  try_('cancelled', () => rt.cancelOrder('nuls-1'));\n",
        7);
    expect_error(results, "provider",
                 "TypeError: provider must be a string without a NUL character");
    expect_error(results, "symbol", "TypeError: symbol must not hold a NUL character");
    expect_error(results, "side", "TypeError: side must be \"buy\" or \"sell\"");
    expect_error(results, "last", "TypeError: symbol must not hold a NUL character");
    assert_string_equal(tu_jstr(results, "placed.ok"), "nuls-1");
    assert_true(json_is_false(tu_jget(results, "cancel.ok")));
    assert_true(json_is_true(tu_jget(results, "cancelled.ok")));
    json_decref(results);
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
    /* a list where the function belongs would narrow nothing: refused too */
    src = tu_strategy_source("listed", "['Trade', 'Ticker']", "[]", "",
                             "subscribedEvents: ['Trade'],\n"
                             "onTrade() {},");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    json_decref(tu_instance_create(srv, "listed", "listed", NULL, NULL, NULL));
    err = tu_call(srv, "POST", "/strategy/instances/listed/start", 422, "{}");
    assert_non_null(strstr(tu_jstr(err, "error"), "subscribedEvents is an array, not a function"));
    json_decref(err);
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

/* A provider off until the instances below exist, that refuses orders off
 * its increments. Its two symbols start in decades so far apart that they
 * share neither tick nor lot size (the simulated exchange derives both from
 * the start price), so a size read for the wrong symbol shows. */
static const char *const strict_provider =
    "{\"name\": \"strict\", \"adapter\": {\"identifier\": \"simulated\", \"config\": "
    "{\"symbols\": [\"BTC-USDT\", \"ETH-USDT\"], \"seed\": 5, \"tickRate\": 200, "
    "\"startPrices\": {\"BTC-USDT\": 43210, \"ETH-USDT\": 2.5}, \"strictIncrements\": true}}, "
    "\"enabled\": false}";

/* read(...args): runtime.getInstrument(...args), or what it threw as text,
 * so that a failure shows in the log at once instead of as a wait. */
static const char *const read_setup = "const read = (...a) => {\n"
                                      "  try { return rt.getInstrument(...a); }\n"
                                      "  catch (e) { return e.name + ': ' + e.message; }\n"
                                      "};\n";

static void expect_same_sizes(const json_t *a, const json_t *b, const char *what)
{
    static const char *const fields[] = {"tickSize", "lotSize", "minQuantity"};
    for (size_t i = 0; i < 3; i++) {
        const json_t *x = json_object_get(a, fields[i]), *y = json_object_get(b, fields[i]);
        if (!json_is_number(x) || !json_is_number(y) ||
            json_number_value(x) != json_number_value(y))
            fail_msg("%s: %s differs: %s vs %s", what, fields[i], json_dumps(a, JSON_COMPACT),
                     json_dumps(b, JSON_COMPACT));
    }
}

/* The `heard` value a witness logged for `symbol`. */
static const json_t *heard_for(const json_t *heard, const char *symbol)
{
    size_t i;
    const json_t *v;
    json_array_foreach(heard, i, v)
    {
        if (strcmp(tu_jstr(v, "symbol"), symbol) == 0)
            return v;
    }
    fail_msg("no InstrumentUpdate of %s heard", symbol);
    return NULL;
}

/* A witness listening before the provider starts hears its InstrumentUpdates;
 * an instance created and started once it runs never does, yet reads the
 * same sizes with getInstrument(), rounds its order to them and has it
 * taken under strictIncrements, where the unrounded ones are rejected. Once
 * the provider stops, the read says trading stopped, as the event does. */
static void test_instrument_read_by_a_late_start(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    json_decref(tu_call(srv, "POST", "/providers", 202, strict_provider));
    char *setup = tu_path("%sh.log('before', {btc: read('BTC-USDT')});", read_setup);
    char *src =
        tu_strategy_source("witness", "['InstrumentUpdate']", "[]", setup,
                           "onInstrumentUpdate(ctx, evt, p) {\n"
                           "  h.log('heard', {symbol: ctx.symbol, p, read: read(ctx.symbol)});\n"
                           "},");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    free(setup);
    json_decref(tu_instance_create(srv, "witness", "witness", NULL, "strict",
                                   "[\"BTC-USDT\", \"ETH-USDT\"]"));
    tu_instance_start(srv, "witness");
    json_t *before = tu_wait_log_values(srv, "witness", "before", 1, TU_WAIT_S);
    assert_true(json_is_null(tu_jget(before, "0.btc"))); /* nothing announced yet */
    json_decref(before);
    json_decref(tu_call(srv, "POST", "/providers/strict/start", 202, NULL));
    json_t *heard = tu_wait_log_values(srv, "witness", "heard", 2, TU_WAIT_S);
    const json_t *btc = heard_for(heard, "BTC-USDT"), *eth = heard_for(heard, "ETH-USDT");
    assert_true(json_is_true(tu_jget(btc, "p.trading")));
    /* the configured start prices give the symbols sizes of their own */
    assert_true(json_number_value(tu_jget(btc, "p.tickSize")) !=
                json_number_value(tu_jget(eth, "p.tickSize")));
    assert_true(json_number_value(tu_jget(btc, "p.lotSize")) !=
                json_number_value(tu_jget(eth, "p.lotSize")));
    /* read while the event is handled, getInstrument() agrees with it */
    expect_same_sizes(json_object_get(btc, "read"), json_object_get(btc, "p"), "witness read");
    assert_true(json_is_true(tu_jget(btc, "read.trading")));

    src = tu_strategy_source(
        "late", "['Trade', 'InstrumentUpdate', 'ExecReport']", dry_run_config, read_setup,
        "onTrade(ctx, evt, p) {\n"
        "  if (this.done) return;\n"
        "  this.done = true;\n"
        "  const i = read('BTC-USDT');\n"
        "  h.log('instrument', {i, first: read()});\n"
        "  if (typeof i !== 'object' || i === null) return;\n"
        "  const round = (v, step) => Math.round(v / step) * step;\n"
        "  const size = i.lotSize * 7.37;\n"
        "  const price = Math.floor(p.price * 0.98 / i.tickSize) * i.tickSize + i.tickSize * "
        "0.37;\n"
        "  h.log('ids', {\n"
        "    offLot: rt.submitOrder(ctx.provider, 'buy', size, round(price, i.tickSize)),\n"
        "    offTick: rt.submitOrder(ctx.provider, 'buy', round(size, i.lotSize), price),\n"
        "    rounded: rt.submitOrder(ctx.provider, 'buy', round(size, i.lotSize),\n"
        "      round(price, i.tickSize)),\n"
        "  });\n"
        "},\n"
        "onInstrumentUpdate(ctx, evt, p) { h.log('heard', {p, read: read('BTC-USDT')}); },\n"
        "onOrderAcknowledged(ctx, evt, r) { h.log('order', {id: r.clientOrderId, status: "
        "r.status}); },\n"
        "onOrderRejected(ctx, evt, r) { h.log('order', {id: r.clientOrderId, status: r.status,\n"
        "  reason: r.reason}); },");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    json_decref(tu_instance_create(srv, "late", "late", NULL, "strict", "[\"BTC-USDT\"]"));
    tu_instance_start(srv, "late");
    json_t *read = tu_wait_log_values(srv, "late", "instrument", 1, TU_WAIT_S);
    const json_t *i = tu_jget(read, "0.i");
    if (!json_is_object(i))
        fail_msg("getInstrument('BTC-USDT') gave %s", json_dumps(i, JSON_ENCODE_ANY));
    assert_string_equal(tu_jstr(i, "provider"), "strict");
    assert_string_equal(tu_jstr(i, "symbol"), "BTC-USDT");
    assert_true(json_is_true(json_object_get(i, "trading")));
    expect_same_sizes(i, json_object_get(btc, "p"), "late read");
    assert_true(json_equal(i, tu_jget(read, "0.first"))); /* no symbol: the first scoped */

    json_t *ids = tu_wait_log_values(srv, "late", "ids", 1, TU_WAIT_S);
    json_t *orders = tu_wait_log_values(srv, "late", "order", 3, TU_WAIT_S);
    static const char *const labels[] = {"offLot", "offTick", "rounded"};
    static const char *const outcomes[] = {"whole number of lots", "whole number of ticks", NULL};
    for (size_t k = 0; k < 3; k++) {
        char path[16];
        snprintf(path, sizeof path, "0.%s", labels[k]);
        const char *id = tu_jstr(ids, path);
        const json_t *o = NULL, *v;
        size_t n;
        json_array_foreach(orders, n, v)
        {
            if (strcmp(tu_jstr(v, "id"), id) == 0)
                o = v;
        }
        if (!o)
            fail_msg("no report of the %s order", labels[k]);
        if (outcomes[k]) {
            assert_string_equal(tu_jstr(o, "status"), "rejected");
            assert_non_null(strstr(tu_jstr(o, "reason"), outcomes[k]));
        } else {
            assert_string_equal(tu_jstr(o, "status"), "acknowledged");
        }
    }
    json_decref(orders);
    json_decref(ids);
    /* it learnt the sizes by reading them: no InstrumentUpdate reached it */
    json_t *late_heard = tu_log_values(srv, "late", "heard");
    assert_int_equal(json_array_size(late_heard), 0);
    json_decref(late_heard);

    /* the stop's InstrumentUpdate and the read agree: trading stopped, same sizes */
    json_decref(tu_call(srv, "POST", "/providers/strict/stop", 200, NULL));
    late_heard = tu_wait_log_values(srv, "late", "heard", 1, TU_WAIT_S);
    assert_true(json_is_false(tu_jget(late_heard, "0.p.trading")));
    assert_true(json_is_false(tu_jget(late_heard, "0.read.trading")));
    expect_same_sizes(tu_jget(late_heard, "0.read"), i, "read after the stop");
    json_decref(late_heard);
    /* and an instance started while it is stopped reads the last announcement */
    json_decref(tu_instance_create(srv, "witness-2", "witness", NULL, "strict", NULL));
    tu_instance_start(srv, "witness-2");
    before = tu_wait_log_values(srv, "witness-2", "before", 1, TU_WAIT_S);
    assert_true(json_is_false(tu_jget(before, "0.btc.trading")));
    expect_same_sizes(tu_jget(before, "0.btc"), i, "read while stopped");
    json_decref(before);
    json_decref(read);
    json_decref(heard);
    tu_server_stop(srv);
}

/* getInstrument(symbol): null for a symbol outside the instance's scope,
 * even one its provider carries and has announced, and for one no provider
 * has; a symbol that is not a string is a TypeError, as for the price
 * getters; none, undefined or null mean the first scoped symbol. */
static void test_instrument_arguments(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    json_t *results = run_calls(srv, "instruments",
                                "  try_('named', () => rt.getInstrument('BTC-USDT'));\n"
                                "  try_('none', () => rt.getInstrument());\n"
                                "  try_('undef', () => rt.getInstrument(undefined));\n"
                                "  try_('null', () => rt.getInstrument(null));\n"
                                "  try_('unscoped', () => rt.getInstrument('ETH-USDT'));\n"
                                "  try_('unknown', () => rt.getInstrument('XRP-USDT'));\n"
                                "  try_('empty', () => rt.getInstrument(''));\n"
                                "  try_('number', () => rt.getInstrument(42));\n"
                                "  try_('object', () => rt.getInstrument({symbol: 'BTC-USDT'}));\n"
                                "  try_('boxed', () => rt.getInstrument(new String('BTC-USDT')));\n"
                                "  try_('bool', () => rt.getInstrument(true));\n"
                                "  try_('eth-price', () => rt.getLastPrice('ETH-USDT'));\n",
                                12);
    const json_t *named = tu_jget(results, "named.ok");
    if (!json_is_object(named))
        fail_msg("getInstrument('BTC-USDT') gave %s",
                 json_dumps(json_object_get(results, "named"), JSON_COMPACT));
    assert_string_equal(tu_jstr(named, "provider"), "sim");
    assert_string_equal(tu_jstr(named, "symbol"), "BTC-USDT");
    assert_true(json_number_value(json_object_get(named, "tickSize")) > 0);
    assert_true(json_is_true(json_object_get(named, "trading")));
    assert_true(json_equal(named, tu_jget(results, "none.ok")));
    assert_true(json_equal(named, tu_jget(results, "undef.ok")));
    assert_true(json_equal(named, tu_jget(results, "null.ok")));
    static const char *const nulls[] = {"unscoped", "unknown", "empty"};
    for (size_t i = 0; i < 3; i++) {
        expect_ok(results, nulls[i]);
        const json_t *r = json_object_get(results, nulls[i]);
        if (!json_is_null(json_object_get(r, "ok")))
            fail_msg("%s: expected null, got %s", nulls[i], json_dumps(r, JSON_COMPACT));
    }
    /* the provider carries ETH-USDT and quotes it: only the scope keeps it out */
    assert_true(json_number_value(tu_jget(results, "eth-price.ok")) > 0);
    expect_error(results, "number", "TypeError: symbol must be a string, got number");
    expect_error(results, "object", "TypeError: symbol must be a string, got object");
    expect_error(results, "boxed", "TypeError: symbol must be a string, got object");
    expect_error(results, "bool", "TypeError: symbol must be a string, got boolean");
    json_decref(results);
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
        cmocka_unit_test_setup_teardown(test_nul_in_string_arguments, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_subscribed_event_must_be_declared, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_trading_inactive_under_kill_switch, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_instrument_read_by_a_late_start, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_instrument_arguments, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_top_level_timer_uploads_and_runs, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
