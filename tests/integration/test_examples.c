/*
 * The example strategies trading on a seeded simulated market, each shown
 * doing what its description says. Every scenario creates its own market
 * (fixed seed, tick rate and volatility) disabled, starts the strategy and a
 * recorder ("tape") on it, then opens the market: both see every event from
 * the first one, so what the strategy did can be recomputed from the tape.
 *   noop            receives trades, places nothing
 *   logging         periodic per-symbol summaries, balances
 *   momentum        first order a buy, right after a rising run of
 *                   `lookback` trades; later a sell after a falling run
 *   mean_reversion  first order a buy below mean - bands * stddev of the
 *                   rolling window; later a sell above the mean
 *   grid            limit orders `spacing_pct` apart on both sides of the
 *                   first price; a fill puts the opposite order one step away
 *   market_making   two-sided quotes spread_bps apart around the mid, then
 *                   cancelled and re-quoted when the mid moves
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ the market */

static void start_server(struct tu_server *srv)
{
    struct tu_server_options opts = {.seed_examples = true};
    tu_server_start(srv, &opts);
    char *tape = tu_strategy_source(
        "tape", "['Trade', 'Ticker']", "[]",
        "const trades = [], tickers = [];\n"
        "const flush = (kind, list) => {\n"
        "  if (list.length % 50 === 0)\n"
        "    h.log('tape', {kind, from: list.length - 50, values: list.slice(-50)});\n"
        "};",
        "onTrade(ctx, evt, p) { trades.push(p.price); flush('trade', trades); },\n"
        "onTicker(ctx, evt, p) { tickers.push([p.bid, p.ask]); flush('ticker', tickers); },");
    tu_upload_expect(srv, tape, NULL, 201, NULL);
    free(tape);
}

/* A disabled market "mkt" trading BTC-USDT. */
static void create_market(struct tu_server *srv, int seed, double volatility)
{
    char *body = tu_path("{\"name\": \"mkt\", \"adapter\": {\"identifier\": \"simulated\", "
                         "\"config\": {\"symbols\": [\"BTC-USDT\"], \"seed\": %d, \"tickRate\": "
                         "500, \"volatility\": %g}}, \"enabled\": false}",
                         seed, volatility);
    json_decref(tu_call(srv, "POST", "/providers", 202, body));
    free(body);
}

/* Starts `id` (of `selector`, with config) and the tape, then opens the
 * market. */
static void run_on_market(struct tu_server *srv, const char *id, const char *selector,
                          const char *config)
{
    json_decref(tu_instance_create(srv, id, selector, config, "mkt", NULL));
    json_decref(tu_instance_create(srv, "tape", "tape", NULL, "mkt", NULL));
    tu_instance_start(srv, "tape");
    tu_instance_start(srv, id);
    json_decref(tu_call(srv, "POST", "/providers/mkt/start", 202, NULL));
}

/* The first n trade prices ("trade") or [bid, ask] tickers ("ticker") the
 * tape recorded, waiting for them; chunks arrive in order. */
static json_t *tape(struct tu_server *srv, const char *kind, size_t n)
{
    for (size_t chunks = 1;; chunks++) {
        json_t *all = tu_wait_log_values(srv, "tape", "tape", chunks, TU_WAIT_S);
        json_t *out = json_array();
        size_t i;
        json_t *c;
        json_array_foreach(all, i, c)
        {
            if (strcmp(tu_jstr(c, "kind"), kind) != 0)
                continue;
            assert_int_equal(tu_jint(c, "from"), (long long)json_array_size(out));
            json_array_extend(out, json_object_get(c, "values"));
        }
        json_decref(all);
        if (json_array_size(out) >= n)
            return out;
        json_decref(out);
    }
}

static double at(const json_t *list, size_t i)
{
    return json_number_value(json_array_get(list, i));
}

static double round2(double price)
{
    return round(price * 100) / 100; /* Math.round(price * 100) / 100 for positive prices */
}

static bool near(double a, double b)
{
    return fabs(a - b) <= 1e-9 * fmax(1, fmax(fabs(a), fabs(b)));
}

static double num(const json_t *v)
{
    return json_is_string(v) ? strtod(json_string_value(v), NULL) : json_number_value(v);
}

/* Orders of `id` by client order id "<id>-<n>", once at least n exist. */
static json_t *orders_by_number(struct tu_server *srv, const char *id, size_t n)
{
    char *path = tu_path("/strategy/instances/%s/orders?limit=1000", id);
    json_t *doc = tu_wait_list(srv, path, "orders", n, TU_WAIT_S);
    free(path);
    json_t *out = json_object();
    size_t i;
    json_t *o;
    json_array_foreach(json_object_get(doc, "orders"), i, o)
    {
        const char *client = tu_jstr(o, "clientOrderId");
        json_object_set(out, client + strlen(id) + 1, o);
    }
    json_decref(doc);
    return out;
}

static const json_t *order_n(const json_t *orders, int n)
{
    char key[16];
    snprintf(key, sizeof key, "%d", n);
    const json_t *o = json_object_get(orders, key);
    if (!o)
        fail_msg("no order number %d in %s", n, json_dumps(orders, JSON_COMPACT));
    return o;
}

/* Log lines of `id` whose message starts with prefix, e.g. "momentum buy ". */
static json_t *lines_starting(struct tu_server *srv, const char *id, const char *prefix, size_t n)
{
    for (int tries = 0;; tries++) {
        json_t *lines = tu_log_lines(srv, id, prefix);
        json_t *out = json_array();
        size_t i;
        json_t *e;
        json_array_foreach(lines, i, e)
        {
            const char *msg = json_string_value(json_object_get(e, "msg"));
            json_array_append_new(out, json_string(msg + strlen(prefix)));
        }
        json_decref(lines);
        if (json_array_size(out) >= n)
            return out;
        if (tries > TU_WAIT_S * 50)
            fail_msg("%s never logged %zu lines starting '%s'", id, n, prefix);
        json_decref(out);
        tu_sleep_ms(20);
    }
}

/* The JSON object at the end of a log message ("BTC-USDT {...}"). */
static json_t *trailing_json(const char *text)
{
    const char *brace = strchr(text, '{');
    json_t *v = brace ? json_loads(brace, 0, NULL) : NULL;
    if (!v)
        fail_msg("no JSON object in '%s'", text);
    return v;
}

/* ------------------------------------------------------------ noop, logging */

static void test_noop_receives_and_places_nothing(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    create_market(srv, 1, 0.0005);
    run_on_market(srv, "quiet", "noop", "{}");
    json_t *snap = tu_instance_wait_events(srv, "quiet", 300, TU_WAIT_S);
    assert_int_equal(tu_jint(snap, "counters.handlerErrors"), 0);
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    /* the market ran; the strategy placed and logged nothing */
    json_decref(tape(srv, "trade", 300));
    json_t *orders = tu_get_json(srv, 200, "/strategy/instances/quiet/orders");
    assert_int_equal(tu_jint(orders, "count"), 0);
    json_decref(orders);
    json_t *lines = tu_log_entries(srv, "quiet");
    assert_int_equal(json_array_size(lines), 0);
    json_decref(lines);
    tu_server_stop(srv);
}

static void test_logging_summarises_periodically(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    create_market(srv, 2, 0.0005);
    run_on_market(srv, "chatty", "logging", "{\"interval\": \"200ms\"}");
    /* the opening balances, once per asset */
    json_t *balances = lines_starting(srv, "chatty", "balance ", 2);
    bool usdt = false, btc = false;
    size_t i;
    json_t *b;
    json_array_foreach(balances, i, b)
    {
        usdt = usdt || strcmp(json_string_value(b), "USDT 100000") == 0;
        btc = btc || strcmp(json_string_value(b), "BTC 1") == 0;
    }
    assert_true(usdt && btc);
    json_decref(balances);
    /* periodic summaries per provider/symbol, counts growing */
    json_t *summaries = lines_starting(srv, "chatty", "events mkt/BTC-USDT ", 3);
    long long prev_trades = 0, first_trades = -1;
    json_array_foreach(summaries, i, b)
    {
        json_t *counts = trailing_json(json_string_value(b));
        long long trades = tu_jint(counts, "Trade");
        assert_true(trades >= prev_trades && trades > 0);
        if (first_trades < 0)
            first_trades = trades;
        prev_trades = trades;
        assert_true(json_is_integer(json_object_get(counts, "Ticker")));
        json_decref(counts);
    }
    json_t *last = trailing_json(json_string_value(json_array_get(summaries, 2)));
    assert_true(tu_jint(last, "BookSnapshot") >= 1);
    if (prev_trades == first_trades) { /* a stalled machine: give it one more period */
        json_t *more = lines_starting(srv, "chatty", "events mkt/BTC-USDT ", 6);
        json_t *later = trailing_json(json_string_value(json_array_get(more, 5)));
        assert_true(tu_jint(later, "Trade") > first_trades);
        json_decref(later);
        json_decref(more);
    }
    json_decref(last);
    json_decref(summaries);
    /* the provider-wide balances are counted under their own key */
    json_decref(lines_starting(srv, "chatty", "events mkt/- ", 1));
    json_t *orders = tu_get_json(srv, 200, "/strategy/instances/chatty/orders");
    assert_int_equal(tu_jint(orders, "count"), 0);
    json_decref(orders);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ momentum */

/* RunDetector of momentum.js over prices[0..n). */
static int run_after(const json_t *prices, size_t n)
{
    int run = 0;
    for (size_t i = 1; i < n; i++) {
        if (at(prices, i) > at(prices, i - 1))
            run = run > 0 ? run + 1 : 1;
        else if (at(prices, i) < at(prices, i - 1))
            run = run < 0 ? run - 1 : -1;
    }
    return run;
}

static void test_momentum_buys_after_a_rising_run(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    create_market(srv, 7, 0.0005);
    run_on_market(srv, "mom", "momentum",
                  "{\"lookback\": 4, \"cooldown\": \"0ms\", \"size\": 0.01}");

    json_t *buys = lines_starting(srv, "mom", "momentum buy BTC-USDT ", 1);
    json_t *logged = trailing_json(json_string_value(json_array_get(buys, 0)));
    json_decref(buys);
    assert_int_equal(tu_jint(logged, "run"), 4);
    assert_string_equal(tu_jstr(logged, "order"), "mom-1");
    /* the first trade that ends a rising run of four, on the tape */
    json_t *prices = tape(srv, "trade", 1000);
    size_t first = SIZE_MAX;
    for (size_t i = 1; i <= json_array_size(prices) && first == SIZE_MAX; i++) {
        if (run_after(prices, i) >= 4)
            first = i - 1;
    }
    assert_true(first != SIZE_MAX && first >= 4);
    assert_true(at(prices, first) == json_number_value(json_object_get(logged, "price")));
    for (size_t k = first - 3; k <= first; k++)
        assert_true(at(prices, k) > at(prices, k - 1));
    json_decref(logged);

    /* the first order is that market buy; it filled */
    json_t *orders = orders_by_number(srv, "mom", 1);
    const json_t *o = order_n(orders, 1);
    assert_string_equal(tu_jstr(o, "side"), "buy");
    assert_string_equal(tu_jstr(o, "type"), "market");
    assert_true(near(num(json_object_get(o, "quantity")), 0.01));
    assert_true(json_is_true(tu_jget(o, "metadata.dryRun")));
    json_decref(orders);
    json_decref(
        tu_wait_list(srv, "/strategy/instances/mom/orders?state=filled", "orders", 1, TU_WAIT_S));

    /* holding, it sells after a falling run of four */
    json_t *sells = lines_starting(srv, "mom", "momentum sell BTC-USDT ", 1);
    logged = trailing_json(json_string_value(json_array_get(sells, 0)));
    json_decref(sells);
    assert_int_equal(tu_jint(logged, "run"), -4);
    assert_string_equal(tu_jstr(logged, "order"), "mom-2");
    double price = json_number_value(json_object_get(logged, "price"));
    json_decref(prices);
    prices = tape(srv, "trade", 2000);
    bool found = false;
    for (size_t j = first + 1; j < json_array_size(prices) && !found; j++)
        found = at(prices, j) == price && run_after(prices, j + 1) == -4;
    assert_true(found);
    json_decref(logged);
    json_decref(prices);
    orders = orders_by_number(srv, "mom", 2);
    assert_string_equal(tu_jstr(order_n(orders, 2), "side"), "sell");
    json_decref(orders);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ mean reversion */

/* RollingStats of mean_reversion.js: a ring summed in ring order. */
struct rolling {
    double values[64];
    size_t size, next, filled;
};

static void rolling_push(struct rolling *r, double v)
{
    r->values[r->next] = v;
    r->next = (r->next + 1) % r->size;
    r->filled = r->filled + 1 < r->size ? r->filled + 1 : r->size;
}

static double rolling_mean(const struct rolling *r)
{
    double sum = 0;
    for (size_t i = 0; i < r->filled; i++)
        sum += r->values[i];
    return sum / (double)r->filled;
}

static double rolling_stddev(const struct rolling *r)
{
    double mean = rolling_mean(r), sq = 0;
    for (size_t i = 0; i < r->filled; i++)
        sq += pow(r->values[i] - mean, 2);
    return sqrt(sq / (double)r->filled);
}

static void test_mean_reversion_buys_below_the_band(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    create_market(srv, 5, 0.0008);
    run_on_market(srv, "mr", "mean_reversion", "{\"window\": 20, \"bands\": 1.5, \"size\": 0.01}");
    json_t *buys = lines_starting(srv, "mr", "mean_reversion buy BTC-USDT ", 1);
    json_t *logged = trailing_json(json_string_value(json_array_get(buys, 0)));
    json_decref(buys);
    double price = json_number_value(json_object_get(logged, "price"));
    double mean = json_number_value(json_object_get(logged, "mean"));
    double stddev = json_number_value(json_object_get(logged, "stddev"));
    assert_true(price < mean - 1.5 * stddev);

    /* the first trade of the tape below its band is that one */
    json_t *prices = tape(srv, "trade", 1000);
    struct rolling r = {.size = 20};
    size_t first = SIZE_MAX;
    for (size_t i = 0; i < json_array_size(prices) && first == SIZE_MAX; i++) {
        rolling_push(&r, at(prices, i));
        if (r.filled < r.size)
            continue;
        double m = rolling_mean(&r), s = rolling_stddev(&r);
        if (at(prices, i) < m - 1.5 * s) {
            first = i;
            assert_true(m == mean);
            assert_true(s == stddev);
        }
    }
    assert_true(first != SIZE_MAX && first >= 19);
    assert_true(at(prices, first) == price);
    json_decref(prices);
    json_decref(logged);

    json_t *orders = orders_by_number(srv, "mr", 1);
    const json_t *o = order_n(orders, 1);
    assert_string_equal(tu_jstr(o, "side"), "buy");
    assert_string_equal(tu_jstr(o, "type"), "market");
    json_decref(orders);
    /* then it sells the position once the price is back above the mean */
    json_t *sells = lines_starting(srv, "mr", "mean_reversion sell BTC-USDT ", 1);
    logged = trailing_json(json_string_value(json_array_get(sells, 0)));
    json_decref(sells);
    assert_true(json_number_value(json_object_get(logged, "price")) >
                json_number_value(json_object_get(logged, "mean")));
    json_decref(logged);
    orders = orders_by_number(srv, "mr", 2);
    o = order_n(orders, 2);
    assert_string_equal(tu_jstr(o, "side"), "sell");
    assert_true(near(num(json_object_get(o, "quantity")), 0.01));
    json_decref(orders);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ grid */

/* A refused order (the kill switch here; the order rate alike) throws and no
 * report follows: the examples that wait for a report before ordering again
 * must not wait for ever. Once the switch is off, momentum orders again and
 * the grid places the levels that were refused. */
static void test_examples_trade_on_after_a_refused_order(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    create_market(srv, 7, 0.0005);
    tu_set_kill_switch(srv, true);
    json_decref(tu_instance_create(srv, "grid-r", "grid", "{\"levels\": 2}", "mkt", NULL));
    tu_instance_start(srv, "grid-r");
    run_on_market(srv, "mom-r", "momentum", "{\"lookback\": 1, \"cooldown\": \"0ms\"}");
    json_decref(lines_starting(srv, "mom-r", "momentum refused ", 1));
    json_decref(lines_starting(srv, "grid-r", "grid order refused ", 4));
    tu_set_kill_switch(srv, false);
    json_decref(lines_starting(srv, "mom-r", "momentum buy BTC-USDT ", 1));
    json_decref(tu_wait_list(srv, "/strategy/instances/grid-r/orders?state=acknowledged", "orders",
                             4, TU_WAIT_S));
    tu_server_stop(srv);
}

static void test_grid_places_levels_and_replaces_fills(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    create_market(srv, 11, 0.0005);
    run_on_market(srv, "grid-1", "grid", "{\"levels\": 3, \"spacing_pct\": 0.05, \"size\": 0.01}");
    json_t *prices = tape(srv, "trade", 50);
    double center = at(prices, 0);
    json_decref(prices);
    double step = center * (0.05 / 100);
    json_t *placed = lines_starting(srv, "grid-1", "grid placed BTC-USDT ", 1);
    json_t *logged = trailing_json(json_string_value(json_array_get(placed, 0)));
    assert_true(json_number_value(json_object_get(logged, "center")) == center);
    assert_int_equal(tu_jint(logged, "levels"), 3);
    json_decref(logged);
    json_decref(placed);

    /* three buys below and three sells above, one step apart */
    json_t *orders = orders_by_number(srv, "grid-1", 6);
    for (int i = 1; i <= 3; i++) {
        const json_t *buy = order_n(orders, 2 * i - 1), *sell = order_n(orders, 2 * i);
        assert_string_equal(tu_jstr(buy, "side"), "buy");
        assert_string_equal(tu_jstr(sell, "side"), "sell");
        assert_string_equal(tu_jstr(buy, "type"), "limit");
        assert_string_equal(tu_jstr(sell, "type"), "limit");
        assert_true(near(num(json_object_get(buy, "price")), round2(center - i * step)));
        assert_true(near(num(json_object_get(sell, "price")), round2(center + i * step)));
        assert_true(near(num(json_object_get(buy, "quantity")), 0.01));
    }
    json_decref(orders);

    /* a level fills: the opposite order goes one step further */
    orders = orders_by_number(srv, "grid-1", 7);
    const json_t *next = order_n(orders, 7);
    double next_price = num(json_object_get(next, "price"));
    const char *next_side = tu_jstr(next, "side");
    bool explained = false;
    for (int n = 1; n <= 6; n++) {
        const json_t *o = order_n(orders, n);
        if (strcmp(tu_jstr(o, "state"), "filled") != 0)
            continue;
        int level = (n + 1) / 2 * (n % 2 ? -1 : 1); /* -1 .. -3 buys, 1 .. 3 sells */
        bool was_buy = n % 2 == 1;
        int target = was_buy ? level + 1 : level - 1;
        if (strcmp(next_side, was_buy ? "sell" : "buy") == 0 &&
            near(next_price, round2(center + target * step)))
            explained = true;
    }
    if (!explained)
        fail_msg("order 7 (%s at %.2f) is not the opposite of a filled level: %s", next_side,
                 next_price, json_dumps(orders, JSON_COMPACT));
    json_decref(orders);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ market making */

static void test_market_making_quotes_and_requotes(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    create_market(srv, 13, 0.0005);
    run_on_market(srv, "mm", "market_making",
                  "{\"spread_bps\": 10, \"requote_bps\": 5, \"size\": 0.01, "
                  "\"max_inventory\": 0.05}");
    json_t *tickers = tape(srv, "ticker", 200);
    const json_t *first = json_array_get(tickers, 0);
    double mid = (at(first, 0) + at(first, 1)) / 2;
    double half = mid * 10 / 20000;

    json_t *orders = orders_by_number(srv, "mm", 4);
    const json_t *bid = order_n(orders, 1), *ask = order_n(orders, 2);
    assert_string_equal(tu_jstr(bid, "side"), "buy");
    assert_string_equal(tu_jstr(ask, "side"), "sell");
    assert_string_equal(tu_jstr(bid, "type"), "limit");
    assert_true(near(num(json_object_get(bid, "price")), round2(mid - half)));
    assert_true(near(num(json_object_get(ask, "price")), round2(mid + half)));
    /* spread_bps apart around the mid */
    double width = num(json_object_get(ask, "price")) - num(json_object_get(bid, "price"));
    assert_true(fabs(width - mid * 10 / 10000) <= 0.011);

    /* the first mid that moved more than requote_bps re-quotes both sides */
    size_t k = SIZE_MAX;
    for (size_t i = 1; i < json_array_size(tickers) && k == SIZE_MAX; i++) {
        const json_t *t = json_array_get(tickers, i);
        double m = (at(t, 0) + at(t, 1)) / 2;
        if (fabs(m - mid) / mid * 10000 > 5)
            k = i;
    }
    assert_true(k != SIZE_MAX);
    const json_t *t = json_array_get(tickers, k);
    double mid2 = (at(t, 0) + at(t, 1)) / 2, half2 = mid2 * 10 / 20000;
    const json_t *bid2 = order_n(orders, 3), *ask2 = order_n(orders, 4);
    assert_string_equal(tu_jstr(bid2, "side"), "buy");
    assert_string_equal(tu_jstr(ask2, "side"), "sell");
    assert_true(near(num(json_object_get(bid2, "price")), round2(mid2 - half2)));
    assert_true(near(num(json_object_get(ask2, "price")), round2(mid2 + half2)));
    json_decref(orders);
    json_decref(tickers);

    /* each first quote was cancelled when replaced, unless hit before */
    for (int tries = 0;; tries++) {
        orders = orders_by_number(srv, "mm", 6);
        const char *s1 = tu_jstr(order_n(orders, 1), "state");
        const char *s2 = tu_jstr(order_n(orders, 2), "state");
        bool done = (strcmp(s1, "cancelled") == 0 || strcmp(s1, "filled") == 0) &&
                    (strcmp(s2, "cancelled") == 0 || strcmp(s2, "filled") == 0);
        json_decref(orders);
        /* both may have been hit before the re-quote; neither may stay open */
        if (done)
            break;
        if (tries > TU_WAIT_S * 50)
            fail_msg("the first quotes are %s and %s", s1, s2);
        tu_sleep_ms(20);
    }
    json_t *hist =
        tu_wait_list(srv, "/strategy/instances/mm/orders?state=cancelled", "orders", 2, TU_WAIT_S);
    json_decref(hist);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_noop_receives_and_places_nothing, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_logging_summarises_periodically, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_momentum_buys_after_a_rising_run, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_mean_reversion_buys_below_the_band, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_examples_trade_on_after_a_refused_order,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_grid_places_levels_and_replaces_fills, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_market_making_quotes_and_requotes, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
