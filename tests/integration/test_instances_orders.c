/*
 * Orders over HTTP: what strategies submit to the simulated exchange comes
 * back to them as execution reports and is visible in GET
 * /strategy/instances/{id}/orders and /executions with their filters.
 * Market orders fill against the book (partial fills across levels, the
 * rest expires), limit orders take what crosses and rest until a trade
 * crosses them, cancel works, invalid orders are rejected with a reason.
 * Dry-run orders never touch balances; live ones move them, hold what
 * resting orders need, are refused without the funds, and every change is
 * a BalanceUpdate to the provider's subscribers. Deleting an instance
 * cancels its resting orders, as does a stop for a failure (unless
 * configured otherwise) and a stop that asks (cancelOrders); the kill
 * switch cancels everyone's. The
 * history's retention deletes what is final and old, never an open order.
 */
#include "testutil.h"

#include <dirent.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Opened only once the traders listen, so that they see it from its first
 * trade: with seed 127 both symbols first rise (a buy 10 bp under the
 * first trade cannot fill on arrival) and then fall through that price
 * within a few hundred ticks, so such an order rests and later fills. */
static const char *const fast_config = "workers: 2\n"
                                       "providers:\n"
                                       "  - name: sim\n"
                                       "    adapter: simulated\n"
                                       "    enabled: false\n"
                                       "    config:\n"
                                       "      symbols: [BTC-USDT, ETH-USDT]\n"
                                       "      seed: 127\n"
                                       "      tickRate: 200\n"
                                       "      feeRate: 0.001\n";

/* The same market with a small USDT account, so that refusals for lack of
 * funds are unambiguous. */
static const char *const small_account_config = "workers: 2\n"
                                                "providers:\n"
                                                "  - name: sim\n"
                                                "    adapter: simulated\n"
                                                "    config:\n"
                                                "      symbols: [BTC-USDT, ETH-USDT]\n"
                                                "      seed: 5\n"
                                                "      tickRate: 200\n"
                                                "      feeRate: 0.001\n"
                                                "      balances: {USDT: 2000, BTC: 1}\n";

static void start_server(struct tu_server *srv, const char *config)
{
    struct tu_server_options opts = {.config_yaml = config};
    tu_server_start(srv, &opts);
}

/* Logs every execution report as report {kind, id, status, ...}. */
static const char *const report_setup =
    "const ids = {};\n"
    "let placed = false, trades = 0;\n"
    "const report = (kind) => (ctx, evt, r) => h.log('report', {kind, type: evt.type,\n"
    "  symbol: ctx.symbol, provider: ctx.provider, id: r.clientOrderId, order: r.orderId,\n"
    "  status: r.status, side: r.side, orderType: r.type, quantity: r.quantity, price: r.price,\n"
    "  filled: r.filledQuantity, last: r.lastQuantity, lastPrice: r.lastPrice,\n"
    "  remaining: r.remainingQuantity, average: r.averagePrice, fee: r.fee,\n"
    "  feeAsset: r.feeAsset, dryRun: r.dryRun, reason: r.reason});\n";

static const char *const report_handlers = "onOrderAcknowledged: report('acknowledged'),\n"
                                           "onOrderPartialFill: report('partial'),\n"
                                           "onOrderFilled: report('filled'),\n"
                                           "onOrderCancelled: report('cancelled'),\n"
                                           "onOrderRejected: report('rejected'),\n"
                                           "onOrderExpired: report('expired'),\n";

/* On its first trade: a market buy, a far limit buy (cancelled a little
 * later), a limit sell through the bid (fills at once), a limit buy 10 bp
 * under that trade (rests until a trade crosses it), a zero-size order
 * and a sell far larger than the book. */
static char *trader_source(void)
{
    char *setup = tu_path("%s", report_setup);
    char *handlers = tu_path(
        "%s"
        "onTrade(ctx, evt, p) {\n"
        "  if (placed) return;\n"
        "  placed = true;\n"
        "  const bid = rt.getBidPrice(), ask = rt.getAskPrice();\n"
        "  ids.market = rt.submitMarketOrder(ctx.provider, 'buy', 0.01);\n"
        "  ids.far = rt.submitOrder(ctx.provider, 'buy', 0.01, Math.round(bid / 2));\n"
        "  ids.cross = rt.submitOrder(ctx.provider, 'sell', 0.01, Math.round(bid * 0.99));\n"
        "  const rest = p.price * 0.999;\n"
        "  ids.rest = rt.submitOrder(ctx.provider, 'buy', 0.02, rest, ctx.symbol);\n"
        "  ids.zero = rt.submitMarketOrder(ctx.provider, 'buy', 0);\n"
        "  ids.huge = rt.submitMarketOrder(ctx.provider, 'sell', 1000, ctx.symbol);\n"
        "  h.log('placed', {ids, bid, ask, rest, symbol: ctx.symbol, dry: rt.isDryRun()});\n"
        "  setTimeout(() => h.log('cancel', {far: rt.cancelOrder(ids.far),\n"
        "    unknown: rt.cancelOrder('nonsense'), notString: rt.cancelOrder(42)}), 30);\n"
        "},\n",
        report_handlers);
    char *src = tu_strategy_source("trader", "['Trade', 'ExecReport']", "[]", setup, handlers);
    free(setup);
    free(handlers);
    return src;
}

static double num(const json_t *v)
{
    if (json_is_string(v))
        return strtod(json_string_value(v), NULL);
    if (!json_is_number(v))
        fail_msg("not a number: %s", v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY) : "NULL");
    return json_number_value(v);
}

static bool near(double a, double b)
{
    return fabs(a - b) <= 1e-9 * fmax(1, fmax(fabs(a), fabs(b)));
}

/* The reports an instance logged for one client order id, in order. */
static json_t *reports_of(const json_t *reports, const char *id)
{
    json_t *out = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(reports, i, r)
    {
        if (strcmp(tu_jstr(r, "id"), id) == 0)
            json_array_append(out, r);
    }
    return out;
}

/* Waits until the instance logged a report of `kind` for order `id`. */
static json_t *wait_report(struct tu_server *srv, const char *instance, const char *id,
                           const char *kind)
{
    for (size_t n = 1;; n++) {
        json_t *all = tu_wait_log_values(srv, instance, "report", n, TU_WAIT_S);
        json_t *mine = reports_of(all, id);
        json_decref(all);
        size_t i;
        json_t *r;
        json_array_foreach(mine, i, r)
        {
            if (strcmp(tu_jstr(r, "kind"), kind) == 0) {
                json_incref(r);
                json_decref(mine);
                return r;
            }
        }
        json_decref(mine);
    }
}

static const json_t *find_by(const json_t *list, const char *field, const char *value)
{
    size_t i;
    const json_t *item;
    json_array_foreach(list, i, item)
    {
        const char *v = json_string_value(json_object_get(item, field));
        if (v && strcmp(v, value) == 0)
            return item;
    }
    return NULL;
}

static void check_order_record(const json_t *o, const char *instance)
{
    static const char *const strings[] = {
        "id",   "provider", "strategyInstance", "clientOrderId", "symbol",
        "side", "type",     "quantity",         "state"};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        if (!json_is_string(json_object_get(o, strings[i])))
            fail_msg("OrderRecord without string '%s': %s", strings[i],
                     json_dumps(o, JSON_COMPACT));
    }
    static const char *const ints[] = {"placedAt", "createdAt", "updatedAt"};
    for (size_t i = 0; i < 3; i++) {
        if (!json_is_integer(json_object_get(o, ints[i])))
            fail_msg("OrderRecord without integer '%s': %s", ints[i], json_dumps(o, JSON_COMPACT));
    }
    assert_true(json_is_object(json_object_get(o, "metadata")));
    assert_string_equal(tu_jstr(o, "strategyInstance"), instance);
    assert_string_equal(tu_jstr(o, "provider"), "sim");
}

static void check_execution_record(const json_t *x, const char *instance)
{
    static const char *const strings[] = {"orderId",     "provider", "strategyInstance",
                                          "executionId", "quantity", "price"};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++) {
        if (!json_is_string(json_object_get(x, strings[i])))
            fail_msg("ExecutionRecord without string '%s': %s", strings[i],
                     json_dumps(x, JSON_COMPACT));
    }
    assert_true(json_is_integer(json_object_get(x, "tradedAt")));
    assert_true(json_is_integer(json_object_get(x, "createdAt")));
    assert_string_equal(tu_jstr(x, "strategyInstance"), instance);
}

static json_t *balances(struct tu_server *srv)
{
    return tu_get_json(srv, 200, "/providers/sim/balances");
}

static double balance_of(const json_t *doc, const char *asset, const char *field)
{
    const json_t *b = find_by(json_object_get(doc, "balances"), "asset", asset);
    if (!b)
        fail_msg("no balance of %s", asset);
    return num(json_object_get(b, field));
}

static bool settled(const json_t *orders, size_t n)
{
    if (json_array_size(orders) < n)
        return false;
    size_t i;
    const json_t *o;
    json_array_foreach(orders, i, o)
    {
        const char *st = json_string_value(json_object_get(o, "state"));
        if (!st || strcmp(st, "acknowledged") == 0 || strcmp(st, "partiallyFilled") == 0)
            return false;
    }
    return true;
}

/* The six orders of a trader once every one reached its final state (the
 * history is written in batches, a moment after the reports). */
static json_t *history_settled(struct tu_server *srv, const char *path)
{
    for (int tries = 0;; tries++) {
        json_t *doc = tu_get_json(srv, 200, "%s", path);
        if (settled(json_object_get(doc, "orders"), 6))
            return doc;
        if (tries > TU_WAIT_S * 50)
            fail_msg("GET %s never showed six settled orders: %s", path,
                     json_dumps(doc, JSON_COMPACT));
        json_decref(doc);
        tu_sleep_ms(20);
    }
}

struct fills_wait {
    struct tu_server *srv;
    const char *path;
    const char *order;
    double quantity;
};

static double fills_of(const json_t *doc)
{
    double sum = 0;
    size_t i;
    const json_t *o;
    json_array_foreach(json_object_get(doc, "executions"), i, o)
    {
        sum += num(json_object_get(o, "quantity"));
    }
    return sum;
}

static bool fills_complete(void *ctx)
{
    const struct fills_wait *w = ctx;
    json_t *doc = tu_get_json(w->srv, 200, "%s?orderId=%s", w->path, w->order);
    bool complete = near(fills_of(doc), w->quantity);
    json_decref(doc);
    return complete;
}

/* GET <path>?orderId=<order> once its fills add up to `quantity` (bounded
 * wait). */
static json_t *executions_totalling(struct tu_server *srv, const char *path, const char *order,
                                    double quantity)
{
    struct fills_wait w = {srv, path, order, quantity};
    (void)tu_ops_wait_until(fills_complete, &w, TU_WAIT_S);
    return tu_get_json(srv, 200, "%s?orderId=%s", path, order);
}

/* Everything one trader instance did, checked from its reports and from
 * the history endpoints. */
static void check_trader(struct tu_server *srv, const char *instance, const char *symbol)
{
    json_t *placed = tu_wait_log_values(srv, instance, "placed", 1, TU_WAIT_S);
    json_t *p = json_array_get(placed, 0);
    assert_true(json_is_true(tu_jget(p, "dry")));
    assert_string_equal(tu_jstr(p, "symbol"), symbol);
    const char *ids[6];
    static const char *const names[] = {"market", "far", "cross", "rest", "zero", "huge"};
    for (int i = 0; i < 6; i++) {
        char path[32];
        snprintf(path, sizeof path, "ids.%s", names[i]);
        ids[i] = tu_jstr(p, path);
        char *expected = tu_path("%s-%d", instance, i + 1);
        assert_string_equal(ids[i], expected);
        free(expected);
    }
    double bid = num(tu_jget(p, "bid"));
    double rest_price = num(tu_jget(p, "rest"));

    /* market buy: acknowledged, then filled */
    json_t *r = wait_report(srv, instance, ids[0], "filled");
    assert_string_equal(tu_jstr(r, "type"), "ExecReport");
    assert_string_equal(tu_jstr(r, "symbol"), symbol);
    assert_string_equal(tu_jstr(r, "provider"), "sim");
    assert_string_equal(tu_jstr(r, "status"), "filled");
    assert_string_equal(tu_jstr(r, "side"), "buy");
    assert_string_equal(tu_jstr(r, "orderType"), "market");
    assert_true(near(num(tu_jget(r, "filled")), 0.01));
    assert_true(near(num(tu_jget(r, "remaining")), 0));
    assert_true(num(tu_jget(r, "average")) > bid * 0.99);
    assert_true(near(num(tu_jget(r, "fee")),
                     num(tu_jget(r, "last")) * num(tu_jget(r, "lastPrice")) * 0.001));
    assert_string_equal(tu_jstr(r, "feeAsset"), "USDT");
    assert_true(json_is_true(tu_jget(r, "dryRun")));
    json_decref(r);
    /* the far limit rests, then is cancelled on request */
    json_decref(wait_report(srv, instance, ids[1], "acknowledged"));
    r = wait_report(srv, instance, ids[1], "cancelled");
    assert_non_null(strstr(tu_jstr(r, "reason"), "cancel"));
    json_decref(r);
    json_t *cancel = tu_wait_log_values(srv, instance, "cancel", 1, TU_WAIT_S);
    assert_true(json_is_true(tu_jget(cancel, "0.far")));
    assert_true(json_is_false(tu_jget(cancel, "0.unknown")));
    assert_true(json_is_false(tu_jget(cancel, "0.notString")));
    json_decref(cancel);
    /* the crossing limit sell fills at once, at the book's bid or better */
    r = wait_report(srv, instance, ids[2], "filled");
    assert_true(num(tu_jget(r, "average")) >= bid * 0.99);
    json_decref(r);
    /* zero size: rejected with a reason */
    r = wait_report(srv, instance, ids[4], "rejected");
    assert_non_null(strstr(tu_jstr(r, "reason"), "quantity"));
    json_decref(r);
    /* larger than the book: partial fills across levels, the rest expires */
    r = wait_report(srv, instance, ids[5], "expired");
    assert_non_null(strstr(tu_jstr(r, "reason"), "book"));
    double filled = num(tu_jget(r, "filled"));
    assert_true(filled > 0 && filled < 1000);
    assert_true(near(num(tu_jget(r, "remaining")), 1000 - filled));
    json_decref(r);
    json_t *all = tu_log_values(srv, instance, "report");
    json_t *huge = reports_of(all, ids[5]);
    json_decref(all);
    size_t nhuge = json_array_size(huge);
    assert_true(nhuge >= 4); /* acknowledged, >= 2 partial fills, expired */
    assert_string_equal(tu_jstr(huge, "0.kind"), "acknowledged");
    double prev_price = INFINITY, sum = 0;
    for (size_t i = 1; i + 1 < nhuge; i++) {
        json_t *fill = json_array_get(huge, i);
        assert_string_equal(tu_jstr(fill, "kind"), "partial");
        double price = num(tu_jget(fill, "lastPrice"));
        assert_true(price < prev_price); /* a sell walks the bids down */
        prev_price = price;
        sum += num(tu_jget(fill, "last"));
        assert_true(near(num(tu_jget(fill, "filled")), sum));
    }
    assert_true(near(sum, filled));
    json_decref(huge);
    /* the limit buy under the market rests and fills when a trade crosses
     * it, at its own price */
    r = wait_report(srv, instance, ids[3], "filled");
    assert_true(near(num(tu_jget(r, "lastPrice")), rest_price));
    assert_true(near(num(tu_jget(r, "filled")), 0.02));
    json_decref(r);

    /* ---- the same story in the history ---- */
    char *path = tu_path("/strategy/instances/%s/orders", instance);
    json_t *doc = history_settled(srv, path);
    json_t *orders = json_object_get(doc, "orders");
    assert_int_equal(json_array_size(orders), 6);
    assert_int_equal(tu_jint(doc, "count"), 6);
    size_t i;
    json_t *o;
    json_array_foreach(orders, i, o)
    {
        check_order_record(o, instance);
        assert_string_equal(tu_jstr(o, "symbol"), symbol);
        assert_true(json_is_true(tu_jget(o, "metadata.dryRun")));
    }
    static const char *const states[] = {"filled", "cancelled", "filled",
                                         "filled", "rejected",  "expired"};
    static const char *const sides[] = {"buy", "buy", "sell", "buy", "buy", "sell"};
    static const char *const types[] = {"market", "limit", "limit", "limit", "market", "market"};
    for (int k = 0; k < 6; k++) {
        const json_t *rec = find_by(orders, "clientOrderId", ids[k]);
        if (!rec)
            fail_msg("no order record for %s", ids[k]);
        assert_string_equal(tu_jstr(rec, "state"), states[k]);
        assert_string_equal(tu_jstr(rec, "side"), sides[k]);
        assert_string_equal(tu_jstr(rec, "type"), types[k]);
        if (strcmp(types[k], "market") == 0)
            assert_true(json_is_null(json_object_get(rec, "price")));
        else
            assert_true(json_is_string(json_object_get(rec, "price")));
        if (strcmp(states[k], "rejected") == 0)
            assert_non_null(strstr(tu_jstr(rec, "metadata.reason"), "quantity"));
    }
    const json_t *rest = find_by(orders, "clientOrderId", ids[3]);
    assert_true(near(num(json_object_get(rest, "price")), rest_price));
    assert_true(json_is_integer(json_object_get(rest, "completedAt")));
    char *rest_order = strdup(tu_jstr(rest, "id"));
    char *huge_order = strdup(tu_jstr(find_by(orders, "clientOrderId", ids[5]), "id"));
    json_decref(doc);

    /* filters: state (repeatable), provider, limit */
    doc = tu_get_json(srv, 200, "%s?state=filled", path);
    assert_int_equal(tu_jint(doc, "count"), 3);
    json_decref(doc);
    doc = tu_get_json(srv, 200, "%s?state=cancelled&state=rejected", path);
    assert_int_equal(tu_jint(doc, "count"), 2);
    assert_non_null(find_by(json_object_get(doc, "orders"), "clientOrderId", ids[1]));
    assert_non_null(find_by(json_object_get(doc, "orders"), "clientOrderId", ids[4]));
    json_decref(doc);
    /* the comma form means the same as the repeated one, and both mix */
    doc = tu_get_json(srv, 200, "%s?state=cancelled,rejected", path);
    if (tu_jint(doc, "count") != 2)
        fail_msg("?state=cancelled,rejected matches %lld orders, expected 2",
                 tu_jint(doc, "count"));
    assert_non_null(find_by(json_object_get(doc, "orders"), "clientOrderId", ids[1]));
    assert_non_null(find_by(json_object_get(doc, "orders"), "clientOrderId", ids[4]));
    json_decref(doc);
    doc = tu_get_json(srv, 200, "%s?state=filled,cancelled&state=expired,", path);
    assert_int_equal(tu_jint(doc, "count"), 5);
    json_decref(doc);
    doc = tu_get_json(srv, 200, "%s?state=partiallyFilled", path);
    assert_int_equal(tu_jint(doc, "count"), 0);
    json_decref(doc);
    /* a misspelt state is refused rather than read as "no orders" */
    {
        struct tu_response typo;
        tu_get(srv, &typo, "%s?state=filled,filed", path);
        tu_assert_error(&typo, 400);
        assert_string_equal(tu_jstr(typo.json, "details.parameter"), "state");
        assert_non_null(strstr(tu_jstr(typo.json, "error"), "'filed'"));
        tu_response_free(&typo);
    }
    /* more states than the filter takes (16) is refused, not cut short */
    {
        struct tu_response many;
        char *list = tu_path("%s?state=filled", path);
        for (int k = 0; k < 16; k++) {
            char *longer = tu_path("%s%s", list, k % 2 ? "&state=expired" : ",rejected");
            free(list);
            list = longer;
        }
        tu_get(srv, &many, "%s", list);
        tu_assert_error(&many, 400);
        assert_string_equal(tu_jstr(many.json, "details.parameter"), "state");
        tu_response_free(&many);
        free(list);
    }
    doc = tu_get_json(srv, 200, "%s?provider=sim&limit=2", path);
    assert_int_equal(json_array_size(json_object_get(doc, "orders")), 2);
    assert_int_equal(tu_jint(doc, "count"), 2);
    json_decref(doc);
    doc = tu_get_json(srv, 200, "%s?provider=elsewhere", path);
    assert_int_equal(tu_jint(doc, "count"), 0);
    json_decref(doc);
    struct tu_response res;
    char *bad = tu_path("%s?limit=0", path);
    tu_get(srv, &res, "%s", bad);
    tu_assert_error(&res, 400);
    tu_response_free(&res);
    free(bad);
    free(path);

    /* executions: every fill, filterable by order */
    path = tu_path("/strategy/instances/%s/executions", instance);
    doc = tu_wait_list(srv, path, "executions", 5, TU_WAIT_S);
    json_t *execs = json_object_get(doc, "executions");
    json_array_foreach(execs, i, o) check_execution_record(o, instance);
    json_decref(doc);
    doc = executions_totalling(srv, path, huge_order, filled);
    execs = json_object_get(doc, "executions");
    assert_int_equal(json_array_size(execs), nhuge - 2);
    sum = 0;
    json_array_foreach(execs, i, o)
    {
        assert_string_equal(tu_jstr(o, "orderId"), huge_order);
        assert_string_equal(tu_jstr(o, "liquidity"), "taker");
        assert_string_equal(tu_jstr(o, "feeAsset"), "USDT");
        assert_true(
            near(num(json_object_get(o, "fee")),
                 num(json_object_get(o, "quantity")) * num(json_object_get(o, "price")) * 0.001));
        sum += num(json_object_get(o, "quantity"));
    }
    assert_true(near(sum, filled));
    json_decref(doc);
    /* the resting buy filled as a maker at its price, possibly over several
     * trades (each fills at most the trade's size); its fills are recorded
     * by the market's writer thread, so they may trail the order's state */
    doc = executions_totalling(srv, path, rest_order, 0.02);
    execs = json_object_get(doc, "executions");
    assert_true(json_array_size(execs) >= 1);
    sum = 0;
    json_array_foreach(execs, i, o)
    {
        assert_string_equal(tu_jstr(o, "liquidity"), "maker");
        assert_true(near(num(json_object_get(o, "price")), rest_price));
        sum += num(json_object_get(o, "quantity"));
    }
    assert_true(near(sum, 0.02));
    json_decref(doc);
    doc = tu_get_json(srv, 200, "%s?limit=1", path);
    assert_int_equal(tu_jint(doc, "count"), 1);
    json_decref(doc);
    doc = tu_get_json(srv, 200, "%s?provider=elsewhere", path);
    assert_int_equal(tu_jint(doc, "count"), 0);
    json_decref(doc);
    doc = tu_get_json(srv, 200, "%s?provider=sim&orderId=%s", path, huge_order);
    assert_int_equal(tu_jint(doc, "count"), (long long)nhuge - 2);
    json_decref(doc);
    free(path);
    free(rest_order);
    free(huge_order);
    json_decref(placed);
}

/* A sample of the provider's tick-to-order histogram in GET /metrics,
 * -1 when the series is missing. */
static double tick_to_order_sample(struct tu_server *srv, const char *series)
{
    struct tu_response res;
    tu_get(srv, &res, "/metrics");
    assert_int_equal(res.status, 200);
    assert_non_null(strstr(res.body, "# TYPE stratd_tick_to_order_seconds histogram"));
    const char *at = strstr(res.body, series);
    double v = at ? strtod(at + strlen(series), NULL) : -1;
    tu_response_free(&res);
    return v;
}

static void test_orders_fills_and_history(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv, fast_config);
    json_t *before = balances(srv);
    char *src = trader_source();
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    /* two instances: each sees only its own reports and history */
    json_decref(tu_instance_create(srv, "tr-btc", "trader", "{\"dry_run\": true}", NULL, NULL));
    json_decref(
        tu_instance_create(srv, "tr-eth", "trader", "{\"dry_run\": true}", NULL, "[\"ETH-USDT\"]"));
    tu_instance_start(srv, "tr-btc");
    tu_instance_start(srv, "tr-eth");
    json_decref(tu_call(srv, "POST", "/providers/sim/start", 202, NULL));
    check_trader(srv, "tr-btc", "BTC-USDT");
    check_trader(srv, "tr-eth", "ETH-USDT");
    /* every one of the twelve orders was placed from onTrade, so each was
     * timed from its trade to the matching engine */
    assert_true(
        tick_to_order_sample(srv, "stratd_tick_to_order_seconds_count{provider=\"sim\"} ") == 12);
    assert_true(tick_to_order_sample(
                    srv, "stratd_tick_to_order_seconds_bucket{provider=\"sim\",le=\"+Inf\"} ") ==
                12);
    json_t *reports = tu_log_values(srv, "tr-btc", "report");
    size_t i;
    json_t *r;
    json_array_foreach(reports, i, r) assert_int_equal(strncmp(tu_jstr(r, "id"), "tr-btc-", 7), 0);
    json_decref(reports);

    /* dry-run orders never touched the balances */
    json_t *after = balances(srv);
    static const char *const assets[] = {"USDT", "BTC", "ETH"};
    for (int k = 0; k < 3; k++) {
        assert_true(
            near(balance_of(after, assets[k], "total"), balance_of(before, assets[k], "total")));
        assert_true(near(balance_of(after, assets[k], "available"),
                         balance_of(before, assets[k], "available")));
    }
    assert_true(near(balance_of(after, "USDT", "total"), 100000));
    assert_true(near(balance_of(after, "BTC", "total"), 1));
    json_decref(before);
    json_decref(after);
    tu_server_stop(srv);
}

static void test_live_orders_move_balances(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv, small_account_config);
    char *setup = tu_path("%s", report_setup);
    char *handlers =
        tu_path("%s"
                "onTrade(ctx) {\n"
                "  trades++;\n"
                "  if (placed) {\n"
                "    if (trades === 100) h.log('cancel', {hold: rt.cancelOrder(ids.hold)});\n"
                "    return;\n"
                "  }\n"
                "  placed = true;\n"
                "  const bid = rt.getBidPrice();\n"
                "  ids.buy = rt.submitMarketOrder(ctx.provider, 'buy', 0.01);\n"
                "  ids.poor = rt.submitMarketOrder(ctx.provider, 'buy', 100);\n"
                "  ids.oversell = rt.submitMarketOrder(ctx.provider, 'sell', 5);\n"
                "  ids.hold = rt.submitOrder(ctx.provider, 'buy', 0.01, Math.round(bid / 2));\n"
                "  ids.unaffordable = rt.submitOrder(ctx.provider, 'buy', 1, Math.round(bid));\n"
                "  h.log('placed', {ids, hold: Math.round(bid / 2), dry: rt.isDryRun()});\n"
                "},\n"
                "onBalanceUpdate(ctx, evt, b) {\n"
                "  h.log('balance', {provider: ctx.provider, symbol: ctx.symbol, type: evt.type,\n"
                "    asset: b.asset, total: b.total, available: b.available});\n"
                "},\n",
                report_handlers);
    char *src = tu_strategy_source("live", "['Trade', 'ExecReport', 'BalanceUpdate']", "[]", setup,
                                   handlers);
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    free(setup);
    free(handlers);
    json_decref(tu_instance_create(srv, "live-1", "live", "{\"dry_run\": false}", NULL, NULL));
    tu_instance_start(srv, "live-1");

    json_t *placed = tu_wait_log_values(srv, "live-1", "placed", 1, TU_WAIT_S);
    assert_true(json_is_false(tu_jget(placed, "0.dry")));
    double hold_price = num(tu_jget(placed, "0.hold"));
    json_t *r = wait_report(srv, "live-1", "live-1-1", "filled");
    assert_true(json_is_false(tu_jget(r, "dryRun")));
    double notional = num(tu_jget(r, "average")) * 0.01;
    json_decref(r);
    r = wait_report(srv, "live-1", "live-1-2", "rejected");
    assert_non_null(strstr(tu_jstr(r, "reason"), "insufficient balance"));
    json_decref(r);
    r = wait_report(srv, "live-1", "live-1-3", "rejected");
    assert_non_null(strstr(tu_jstr(r, "reason"), "insufficient balance"));
    json_decref(r);
    r = wait_report(srv, "live-1", "live-1-5", "rejected");
    assert_non_null(strstr(tu_jstr(r, "reason"), "insufficient balance"));
    json_decref(r);
    json_decref(wait_report(srv, "live-1", "live-1-4", "acknowledged"));

    /* the fill moved the balances: BTC +0.01, USDT -(notional + fee); the
     * resting buy holds its worst case out of `available` */
    json_t *doc = balances(srv);
    assert_true(near(balance_of(doc, "BTC", "total"), 1.01));
    assert_true(near(balance_of(doc, "BTC", "available"), 1.01));
    double usdt = 2000 - notional * 1.001;
    assert_true(fabs(balance_of(doc, "USDT", "total") - usdt) < 1e-6);
    double held = 0.01 * hold_price * 1.001;
    json_t *record = (json_t *)find_by(json_object_get(doc, "balances"), "asset", "USDT");
    assert_string_equal(tu_jstr(record, "provider"), "sim");
    assert_true(json_is_integer(json_object_get(record, "snapshotAt")));
    double available = balance_of(doc, "USDT", "available");
    json_decref(doc);
    /* unless the cancel already went through */
    json_t *cancels = tu_log_values(srv, "live-1", "cancel");
    if (json_array_size(cancels) == 0)
        assert_true(fabs(available - (usdt - held)) < 1e-6 || fabs(available - usdt) < 1e-6);
    json_decref(cancels);
    doc = tu_get_json(srv, 200, "/providers/sim/balances?asset=BTC&limit=5");
    assert_int_equal(tu_jint(doc, "count"), 1);
    assert_string_equal(tu_jstr(doc, "balances.0.asset"), "BTC");
    json_decref(doc);

    /* cancelling gives the hold back */
    json_t *cancel = tu_wait_log_values(srv, "live-1", "cancel", 1, TU_WAIT_S);
    assert_true(json_is_true(tu_jget(cancel, "0.hold")));
    json_decref(cancel);
    json_decref(wait_report(srv, "live-1", "live-1-4", "cancelled"));
    doc = balances(srv);
    assert_true(fabs(balance_of(doc, "USDT", "available") - usdt) < 1e-6);
    assert_true(fabs(balance_of(doc, "USDT", "total") - usdt) < 1e-6);
    json_decref(doc);

    /* the strategy heard every change as a provider-wide BalanceUpdate */
    double btc = 0, last_usdt_total = 0, last_usdt_available = 0;
    for (size_t n = 1;; n++) {
        json_t *updates = tu_wait_log_values(srv, "live-1", "balance", n, TU_WAIT_S);
        size_t i;
        json_t *u;
        json_array_foreach(updates, i, u)
        {
            assert_string_equal(tu_jstr(u, "provider"), "sim");
            assert_true(json_is_null(tu_jget(u, "symbol")));
            assert_string_equal(tu_jstr(u, "type"), "BalanceUpdate");
            if (strcmp(tu_jstr(u, "asset"), "BTC") == 0)
                btc = num(tu_jget(u, "total"));
            if (strcmp(tu_jstr(u, "asset"), "USDT") == 0) {
                last_usdt_total = num(tu_jget(u, "total"));
                last_usdt_available = num(tu_jget(u, "available"));
            }
        }
        json_decref(updates);
        if (near(btc, 1.01) && fabs(last_usdt_total - usdt) < 1e-6 &&
            fabs(last_usdt_available - usdt) < 1e-6)
            break;
    }
    json_decref(placed);

    /* history: one filled buy, three rejections, one cancelled */
    json_t *hist = tu_wait_list(srv, "/strategy/instances/live-1/orders?state=rejected", "orders",
                                3, TU_WAIT_S);
    assert_int_equal(tu_jint(hist, "count"), 3);
    json_t *o;
    size_t i;
    json_array_foreach(json_object_get(hist, "orders"), i, o)
    {
        assert_true(json_is_false(tu_jget(o, "metadata.dryRun")));
        assert_non_null(strstr(tu_jstr(o, "metadata.reason"), "insufficient balance"));
    }
    json_decref(hist);
    tu_server_stop(srv);
}

/* A "rester": on its first trade a buy at half the bid, which rests;
 * `filled_first`: a market buy before it, which fills. */
static void upload_rester_named(struct tu_server *srv, const char *name, bool filled_first)
{
    char *handlers = tu_path(
        "%s"
        "onTrade(ctx) {\n"
        "  if (placed) return;\n"
        "  placed = true;\n"
        "%s"
        "  ids.far = rt.submitOrder(ctx.provider, 'buy', 0.01,\n"
        "    Math.round(rt.getBidPrice() / 2));\n"
        "},\n",
        report_handlers,
        filled_first ? "  ids.market = rt.submitMarketOrder(ctx.provider, 'buy', 0.01);\n" : "");
    char *src = tu_strategy_source(name, "['Trade', 'ExecReport']", "[]", report_setup, handlers);
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    free(handlers);
}

static void upload_rester(struct tu_server *srv)
{
    upload_rester_named(srv, "rester", false);
}

/* Two resters with their configs, started with the provider; returns
 * once each has its order resting. */
static void start_resters(struct tu_server *srv, const char *const ids[2],
                          const char *const configs[2])
{
    upload_rester(srv);
    for (size_t i = 0; i < 2; i++) {
        json_decref(tu_instance_create(srv, ids[i], "rester", configs[i], NULL, NULL));
        tu_instance_start(srv, ids[i]);
    }
    json_decref(tu_call(srv, "POST", "/providers/sim/start", 202, NULL));
    for (size_t i = 0; i < 2; i++) {
        char path[96];
        snprintf(path, sizeof path, "/strategy/instances/%s/orders?state=acknowledged", ids[i]);
        json_decref(tu_wait_list(srv, path, "orders", 1, TU_WAIT_S));
    }
}

static size_t orders_count(struct tu_server *srv, const char *id, const char *query)
{
    json_t *doc = tu_get_json(srv, 200, "/strategy/instances/%s/orders%s", id, query);
    size_t n = json_array_size(json_object_get(doc, "orders"));
    json_decref(doc);
    return n;
}

static double usdt_held(struct tu_server *srv)
{
    json_t *doc = balances(srv);
    double held = balance_of(doc, "USDT", "total") - balance_of(doc, "USDT", "available");
    json_decref(doc);
    return held;
}

/* Waits until the USDT held by resting orders is below `level` (released
 * asynchronously); returns what is held then, or at the wait's end. */
static double usdt_held_below(struct tu_server *srv, double level)
{
    double held = usdt_held(srv);
    for (int i = 0; i < TU_WAIT_S * 50 && held >= level; i++) {
        tu_sleep_ms(20);
        held = usdt_held(srv);
    }
    return held;
}

/* Deleting an instance cancels what it has resting, since nothing could
 * manage those orders any more: the funds they held come back, and the
 * history (seen through an instance created again under the id) records
 * them cancelled with the reason. Another instance's order stays. */
static void test_delete_cancels_resting_orders(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv, fast_config);
    const char *const ids[] = {"gone", "stays"};
    start_resters(srv, ids, (const char *const[]){NULL, NULL});
    double held_by_both = usdt_held(srv);
    assert_true(held_by_both > 0);

    json_decref(tu_call(srv, "DELETE", "/strategy/instances/gone", 200, NULL));
    double held = usdt_held_below(srv, held_by_both);
    assert_true(held > 0 && held < held_by_both);

    json_decref(tu_instance_create(srv, "gone", "rester", NULL, NULL, NULL));
    json_t *doc = tu_wait_list(srv, "/strategy/instances/gone/orders?state=cancelled", "orders", 1,
                               TU_WAIT_S);
    const json_t *o = json_array_get(json_object_get(doc, "orders"), 0);
    assert_string_equal(tu_jstr(o, "clientOrderId"), "gone-1");
    assert_string_equal(tu_jstr(o, "metadata.reason"), "the instance was deleted");
    json_decref(doc);
    assert_int_equal(orders_count(srv, "gone", ""), 1);
    assert_int_equal(orders_count(srv, "stays", "?state=acknowledged"), 1);

    /* the instance created again numbers its orders past the block the
     * deleted one had reserved, so no client order id comes back */
    tu_instance_start(srv, "gone");
    doc = tu_wait_list(srv, "/strategy/instances/gone/orders?state=acknowledged", "orders", 1,
                       TU_WAIT_S);
    assert_string_equal(tu_jstr(doc, "orders.0.clientOrderId"), "gone-65537");
    json_decref(doc);
    tu_server_stop(srv);
}

/* The kill switch cancels every resting order, live or dry-run, since one
 * left on the book would go on trading while every new order is refused:
 * each instance hears its order cancelled with the reason, the history
 * records it, the funds come back. Turned off, nothing comes back. */
static void test_kill_switch_cancels_resting_orders(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv, fast_config);
    const char *const ids[] = {"k-live", "k-dry"};
    start_resters(srv, ids, (const char *const[]){NULL, "{\"dry_run\": true}"});
    assert_true(usdt_held(srv) > 0);

    tu_set_kill_switch(srv, true);
    static const char reason[] = "killSwitchEnabled: cancelled with every resting order";
    for (size_t i = 0; i < 2; i++) {
        char order[64], path[96];
        snprintf(order, sizeof order, "%s-1", ids[i]);
        json_t *r = wait_report(srv, ids[i], order, "cancelled");
        assert_string_equal(tu_jstr(r, "reason"), reason);
        json_decref(r);
        snprintf(path, sizeof path, "/strategy/instances/%s/orders?state=cancelled", ids[i]);
        json_t *doc = tu_wait_list(srv, path, "orders", 1, TU_WAIT_S);
        assert_string_equal(tu_jstr(doc, "orders.0.metadata.reason"), reason);
        json_decref(doc);
    }
    double held = usdt_held_below(srv, 1e-9);
    assert_true(held == 0);

    tu_set_kill_switch(srv, false);
    tu_sleep_ms(200); /* trades go on: nothing rests again */
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(orders_count(srv, ids[i], "?state=acknowledged"), 0);
        assert_int_equal(orders_count(srv, ids[i], ""), 1);
    }
    assert_true(usdt_held(srv) == 0);
    tu_server_stop(srv);
}

/* A "crasher": a buy at half the bid on its first trade, which rests; once
 * it is acknowledged, the next trade's handler loops past the budget. */
static void upload_crasher(struct tu_server *srv)
{
    char *handlers = tu_path("%s"
                             "onTrade(ctx) {\n"
                             "  if (ids.acked) for (;;) {}\n"
                             "  if (placed) return;\n"
                             "  placed = true;\n"
                             "  ids.far = rt.submitOrder(ctx.provider, 'buy', 0.01,\n"
                             "    Math.round(rt.getBidPrice() / 2));\n"
                             "},\n",
                             "onOrderAcknowledged() { ids.acked = true; },\n");
    char *src =
        tu_strategy_source("crasher", "['Trade', 'ExecReport']", "[]", report_setup, handlers);
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    free(handlers);
}

/* Waits for the instance's stop and checks its reason. */
static void expect_stopped(struct tu_server *srv, const char *id, const char *reason)
{
    json_t *snap = tu_instance_wait_stopped(srv, id, TU_WAIT_S);
    assert_string_equal(tu_jstr(snap, "stopReason"), reason);
    json_decref(snap);
}

static void expect_cancelled(struct tu_server *srv, const char *id, const char *reason)
{
    char path[96];
    snprintf(path, sizeof path, "/strategy/instances/%s/orders?state=cancelled", id);
    json_t *doc = tu_wait_list(srv, path, "orders", 1, TU_WAIT_S);
    assert_int_equal(json_array_size(json_object_get(doc, "orders")), 1);
    assert_string_equal(tu_jstr(doc, "orders.0.metadata.reason"), reason);
    json_decref(doc);
}

/* An instance the gateway stops for what it did has nothing left to manage
 * its orders: a live and a dry-run instance that overran their budget have
 * their resting orders cancelled with the reason and the funds come back,
 * as does an order a failing create() placed; an operator's stop leaves
 * its instance's order resting for the next start. */
/* Orders an operator's stop left resting go on changing while the
 * instance is stopped; its next start hears those reports first (here
 * the kill switch's cancels), so that its code can account for them. An
 * instance deleted while stopped takes its held reports with it. */
static void test_stopped_instance_hears_its_orders_at_start(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv, fast_config);
    const char *const ids[] = {"h-live", "h-dry"};
    start_resters(srv, ids, (const char *const[]){NULL, "{\"dry_run\": true}"});
    json_decref(tu_instance_create(srv, "h-gone", "rester", NULL, NULL, NULL));
    tu_instance_start(srv, "h-gone");
    json_decref(tu_wait_list(srv, "/strategy/instances/h-gone/orders?state=acknowledged", "orders",
                             1, TU_WAIT_S));
    for (size_t i = 0; i < 2; i++)
        tu_instance_stop(srv, ids[i]);
    tu_instance_stop(srv, "h-gone");

    tu_set_kill_switch(srv, true);
    for (size_t i = 0; i < 2; i++) {
        char path[96];
        snprintf(path, sizeof path, "/strategy/instances/%s/orders?state=cancelled", ids[i]);
        json_decref(tu_wait_list(srv, path, "orders", 1, TU_WAIT_S));
    }
    json_decref(tu_wait_list(srv, "/strategy/instances/h-gone/orders?state=cancelled", "orders", 1,
                             TU_WAIT_S));
    tu_set_kill_switch(srv, false);
    json_decref(tu_call(srv, "DELETE", "/strategy/instances/h-gone", 200, NULL));

    for (size_t i = 0; i < 2; i++) {
        tu_instance_start(srv, ids[i]);
        char order[64];
        snprintf(order, sizeof order, "%s-1", ids[i]);
        json_t *r = wait_report(srv, ids[i], order, "cancelled");
        assert_string_equal(tu_jstr(r, "reason"),
                            "killSwitchEnabled: cancelled with every resting order");
        json_decref(r);
    }
    tu_server_stop(srv);
}

/* The last audit entry with `action` for instance `id`, or NULL. */
static json_t *last_audit(struct tu_server *srv, const char *action, const char *id)
{
    json_t *audit = tu_audit_entries(srv);
    json_t *found = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(audit, i, e)
    {
        const char *a = json_string_value(json_object_get(e, "action"));
        const char *who = json_string_value(json_object_get(e, "id"));
        if (a && who && strcmp(a, action) == 0 && strcmp(who, id) == 0)
            found = e;
    }
    json_incref(found);
    json_decref(audit);
    return found;
}

/* A stop with cancelOrders pulls the instance's resting orders once its
 * code can place no more: each cancelled with the reason, the funds back,
 * another instance's order untouched; on a stopped instance it pulls what
 * an earlier stop left; a value that is not a flag is a 400 that names the
 * parameter and changes nothing. The audit entry says the orders went. */
static void test_stop_can_cancel_resting_orders(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv, fast_config);
    const char *const ids[] = {"c-pull", "c-keep"};
    start_resters(srv, ids, (const char *const[]){NULL, NULL});
    double held_by_both = usdt_held(srv);
    assert_true(held_by_both > 0);

    json_t *err =
        tu_call(srv, "POST", "/strategy/instances/c-keep/stop?cancelOrders=maybe", 400, NULL);
    assert_string_equal(tu_jstr(err, "details.parameter"), "cancelOrders");
    json_decref(err);
    json_t *snap = tu_instance_get(srv, "c-keep");
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);

    json_t *res =
        tu_call(srv, "POST", "/strategy/instances/c-pull/stop?cancelOrders=true", 200, NULL);
    assert_string_equal(tu_jstr(res, "status"), "stopped");
    json_decref(res);
    expect_cancelled(srv, "c-pull", "stopped: cancelled with the stop (cancelOrders)");
    double held = usdt_held_below(srv, held_by_both);
    assert_true(held > 0 && held < held_by_both);
    assert_int_equal(orders_count(srv, "c-keep", "?state=acknowledged"), 1);
    json_t *entry = last_audit(srv, "instance.stop", "c-pull");
    assert_non_null(entry);
    assert_true(json_is_true(json_object_get(entry, "cancelOrders")));
    json_decref(entry);

    /* a plain stop leaves the order; a second stop, asking, pulls it */
    tu_instance_stop(srv, "c-keep");
    assert_int_equal(orders_count(srv, "c-keep", "?state=acknowledged"), 1);
    entry = last_audit(srv, "instance.stop", "c-keep");
    assert_non_null(entry);
    assert_null(json_object_get(entry, "cancelOrders"));
    json_decref(entry);
    json_decref(tu_call(srv, "POST", "/strategy/instances/c-keep/stop?cancelOrders=1", 200, NULL));
    expect_cancelled(srv, "c-keep", "stopped: cancelled with the stop (cancelOrders)");
    held = usdt_held_below(srv, 1e-9);
    assert_true(held == 0);
    entry = last_audit(srv, "instance.stop", "c-keep");
    assert_true(json_is_true(json_object_get(entry, "cancelOrders")));
    json_decref(entry);
    tu_server_stop(srv);
}

/* Ids too long for a client order id share their start: the ids of their
 * orders still differ (the cut id carries a digest of the whole one), and
 * each instance manages its own. */
static void test_long_instance_ids_keep_order_ids_apart(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv, fast_config);
    char a[80], b[80];
    memset(a, 'x', 60);
    memcpy(b, a, 60);
    strcpy(a + 60, "-alpha");
    strcpy(b + 60, "-beta");
    const char *const ids[] = {a, b};
    start_resters(srv, ids, (const char *const[]){NULL, NULL});
    char *seen[2];
    for (size_t i = 0; i < 2; i++) {
        char path[160];
        snprintf(path, sizeof path, "/strategy/instances/%s/orders", ids[i]);
        json_t *doc = tu_get_json(srv, 200, "%s", path);
        const char *id = tu_jstr(doc, "orders.0.clientOrderId");
        assert_true(strlen(id) < 48);
        assert_non_null(strchr(id, '~'));
        assert_string_equal(id + strlen(id) - 2, "-1");
        seen[i] = strdup(id);
        json_decref(doc);
    }
    assert_string_not_equal(seen[0], seen[1]);
    free(seen[0]);
    free(seen[1]);
    tu_server_stop(srv);
}

static void test_failure_cancels_resting_orders(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv, fast_config);
    upload_crasher(srv);
    upload_rester(srv);
    const char *const ids[] = {"f-live", "f-dry"};
    const char *const configs[] = {"{\"cpu_budget_ms\": 20}",
                                   "{\"cpu_budget_ms\": 20, \"dry_run\": true}"};
    for (size_t i = 0; i < 2; i++) {
        json_decref(tu_instance_create(srv, ids[i], "crasher", configs[i], NULL, NULL));
        tu_instance_start(srv, ids[i]);
    }
    json_decref(tu_instance_create(srv, "op", "rester", "{\"dry_run\": true}", NULL, NULL));
    tu_instance_start(srv, "op");
    json_decref(tu_call(srv, "POST", "/providers/sim/start", 202, NULL));
    json_decref(tu_wait_list(srv, "/strategy/instances/op/orders?state=acknowledged", "orders", 1,
                             TU_WAIT_S));
    tu_instance_stop(srv, "op");

    for (size_t i = 0; i < 2; i++) {
        expect_stopped(srv, ids[i], "cpuBudget");
        expect_cancelled(srv, ids[i], "cpuBudget: cancelled as the instance stopped");
    }
    double held = usdt_held_below(srv, 1e-9);
    assert_true(held == 0);
    assert_int_equal(orders_count(srv, "op", "?state=acknowledged"), 1);

    /* create() places an order, then throws: the start fails (422) */
    char *src = tu_strategy_source(
        "broken", "['Trade']", "[]",
        "rt.submitOrder('sim', 'buy', 0.01, 1);\nthrow new Error('not today');", "");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    json_decref(tu_instance_create(srv, "b", "broken", NULL, NULL, NULL));
    json_decref(tu_call(srv, "POST", "/strategy/instances/b/start", 422, NULL));
    expect_cancelled(srv, "b", "startFailed: cancelled as the instance stopped");
    assert_int_equal(orders_count(srv, "b", ""), 1);
    tu_server_stop(srv);
}

/* runtime.cancel_orders_on_failure: false leaves a failed instance's order
 * resting, as an operator's stop does. */
static void test_failure_keeps_orders_when_configured(void **state)
{
    struct tu_server *srv = *state;
    char *config = tu_path("%sruntime:\n  cancel_orders_on_failure: false\n", fast_config);
    start_server(srv, config);
    free(config);
    upload_crasher(srv);
    json_decref(tu_instance_create(srv, "kept", "crasher", "{\"cpu_budget_ms\": 20}", NULL, NULL));
    tu_instance_start(srv, "kept");
    json_decref(tu_call(srv, "POST", "/providers/sim/start", 202, NULL));
    expect_stopped(srv, "kept", "cpuBudget");
    tu_sleep_ms(500); /* trades go on; a cancel would have been queued before the stop */
    assert_int_equal(orders_count(srv, "kept", "?state=acknowledged"), 1);
    assert_int_equal(orders_count(srv, "kept", ""), 1);
    assert_true(usdt_held(srv) > 0);
    tu_server_stop(srv);
}

/* The history kept for a second: a filled order and its fill go once they
 * are older than that, the order still resting stays whatever its age, and
 * the metrics count what went. */
/* One callback's flood: how many orders went, and what the first refusal
 * said. */
static void upload_flooder(struct tu_server *srv, const char *name, const char *config)
{
    const char *handlers =
        "onTrade(ctx) {\n"
        "  if (placed) return;\n"
        "  placed = true;\n"
        "  let sent = 0, refusal = null;\n"
        "  const began = Date.now();\n"
        "  for (let i = 0; i < 3000; i++) {\n"
        "    try { rt.submitMarketOrder(ctx.provider, 'buy', 0.0001); sent++; }\n"
        "    catch (e) { if (!refusal) refusal = e.name + ': ' + e.message; }\n"
        "  }\n"
        "  h.log('flood', {sent, refusal, ms: Date.now() - began});\n"
        "},\n";
    char *src = tu_strategy_source(name, "['Trade']", config, report_setup, handlers);
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
}

/* Runs the flooder once (config: the instance's own, or NULL) and checks
 * that `low` of its orders went, and at most what the bucket refilled
 * while the loop ran (`low` a second) besides, refused with the limit's
 * text for `low`. */
static void flood_once(struct tu_server *srv, const char *id, const char *selector,
                       const char *config, json_int_t low)
{
    json_decref(tu_instance_create(srv, id, selector, config, NULL, NULL));
    tu_instance_start(srv, id);
    json_t *logged = tu_wait_log_values(srv, id, "flood", 1, TU_WAIT_S);
    json_int_t sent = json_integer_value(json_object_get(json_array_get(logged, 0), "sent"));
    json_int_t ms = json_integer_value(json_object_get(json_array_get(logged, 0), "ms"));
    json_int_t refilled = low * (ms + 1) / 1000 + 1;
    const char *said = json_string_value(json_object_get(json_array_get(logged, 0), "refusal"));
    char *refusal = tu_path("RangeError: orderRate: over %lld orders a second from this instance "
                            "(max_orders_per_second); the order was not sent",
                            (long long)low);
    if (!said || strcmp(said, refusal) != 0)
        fail_msg("the refusal said '%s', expected '%s'", said ? said : "(nothing)", refusal);
    free(refusal);
    json_decref(logged);
    if (sent < low || sent > low + refilled)
        fail_msg("%s: %lld orders went in %lld ms, expected %lld and at most %lld refilled", id,
                 (long long)sent, (long long)ms, (long long)low, (long long)refilled);
    /* what was refused never reached the market: the history has the rest */
    char path[96];
    snprintf(path, sizeof path, "/strategy/instances/%s/orders?limit=5000", id);
    json_decref(tu_wait_list(srv, path, "orders", (size_t)sent, TU_WAIT_S));
    assert_int_equal(orders_count(srv, id, "?limit=5000"), (size_t)sent);
    snprintf(path, sizeof path, "/strategy/instances/%s/stop", id);
    json_decref(tu_call(srv, "POST", path, 200, NULL));
}

/* A strategy that orders in a loop gets max_orders_per_second orders a
 * second (one second's worth at once) and a RangeError for the rest, which
 * never reach the market, so it cannot flood the market path every
 * instance shares. The gateway's runtime.max_orders_per_second (1,000 by
 * default) holds unless the instance's own config says otherwise. */
static void test_order_rate_limit(void **state)
{
    struct tu_server *srv = *state;
    char *config = tu_path("%sruntime:\n  max_orders_per_second: 40\n", fast_config);
    start_server(srv, config);
    free(config);
    upload_flooder(srv, "flooder", "[]");
    /* a module's default may lower the gateway's limit, never raise it */
    upload_flooder(srv, "flooder-low",
                   "[{name: 'max_orders_per_second', type: 'int', default: 10}]");
    upload_flooder(srv, "flooder-high",
                   "[{name: 'max_orders_per_second', type: 'int', default: 5000}]");
    json_decref(tu_call(srv, "POST", "/providers/sim/start", 202, NULL));
    flood_once(srv, "fl", "flooder", NULL, 40);
    flood_once(srv, "fl-module-low", "flooder-low", NULL, 10);
    flood_once(srv, "fl-module-high", "flooder-high", NULL, 40);
    /* the operator's value in the instance's own config holds either way */
    flood_once(srv, "fl-low", "flooder", "{\"max_orders_per_second\": 25}", 25);
    flood_once(srv, "fl-high", "flooder-low", "{\"max_orders_per_second\": 60}", 60);
    /* not a count of orders: refused when stored, nothing created */
    json_t *refused = tu_call(srv, "POST", "/strategy/instances", 400,
                              "{\"id\": \"fl-bad\", \"strategy\": {\"selector\": \"flooder\", "
                              "\"config\": {\"max_orders_per_second\": 0}}, "
                              "\"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    assert_string_equal(tu_jstr(refused, "details.field"), "config.max_orders_per_second");
    json_decref(refused);
    json_decref(tu_call(srv, "GET", "/strategy/instances/fl-bad", 404, NULL));

    tu_server_stop(srv);
    tu_write_text(srv->config_path, fast_config); /* the gateway's default this time */
    tu_server_restart(srv, NULL);
    json_decref(tu_call(srv, "POST", "/providers/sim/start", 202, NULL));
    /* a thousand orders through the market take longer than the default
     * 50 ms budget under the sanitizers: the budget is not what is tested */
    flood_once(srv, "fl2", "flooder", "{\"cpu_budget_ms\": 20000}", 1000);
}

/* A failed assertion must not leave the cores busy for the next test. */
static int stop_busy_teardown(void **state)
{
    tu_busy_threads_stop();
    return tu_server_teardown(state);
}

/* The scheduling policy (/proc's field 41) of the server's thread named
 * `name`; -1 when it has none of that name. */
static int thread_policy(const struct tu_server *srv, const char *name)
{
    char *dir = tu_path("/proc/%d/task", (int)srv->pid);
    DIR *d = opendir(dir);
    assert_non_null(d);
    int policy = -1;
    struct dirent *e;
    while (policy < 0 && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *comm_path = tu_path("%s/%s/comm", dir, e->d_name);
        char *stat_path = tu_path("%s/%s/stat", dir, e->d_name);
        char *comm = tu_read_file(comm_path, NULL), *stat = tu_read_file(stat_path, NULL);
        if (comm && stat && strncmp(comm, name, strlen(name)) == 0 && comm[strlen(name)] == '\n') {
            const char *field = strrchr(stat, ')'); /* the fields after the name */
            for (int i = 2; field && i < 41; i++)
                field = strchr(field + 1, ' ');
            policy = field ? atoi(field + 1) : -1;
        }
        free(comm);
        free(stat);
        free(comm_path);
        free(stat_path);
    }
    closedir(d);
    free(dir);
    return policy;
}

/* The history is built with the CPU that nothing else wants, but the
 * store's lock is never held at that class (a writer starved while holding
 * it had held up every request that touches the store for as long as the
 * cores stayed busy): with twice as many busy threads as cores, a flood's
 * orders are placed, and the listing, a create, a start and a stop answer;
 * the history, which may lag meanwhile, has every order once the cores are
 * free again. */
static void test_history_is_written_with_every_core_busy(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv, fast_config);
    upload_flooder(srv, "flooder", "[]");
    json_decref(tu_call(srv, "POST", "/providers/sim/start", 202, NULL));
    assert_int_equal(thread_policy(srv, "rec:sim"), SCHED_IDLE);
    assert_int_equal(thread_policy(srv, "commit:sim"), SCHED_BATCH);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    tu_busy_threads_start((size_t)(cores > 0 ? cores : 1) * 2);
    json_decref(
        tu_instance_create(srv, "busy", "flooder", "{\"cpu_budget_ms\": 20000}", NULL, NULL));
    tu_instance_start(srv, "busy");
    json_t *logged = tu_wait_log_values(srv, "busy", "flood", 1, TU_WAIT_S);
    json_int_t sent = json_integer_value(json_object_get(json_array_get(logged, 0), "sent"));
    json_decref(logged);
    assert_true(sent >= 1000);
    for (int i = 0; i < 3; i++) {
        json_t *page = tu_get_json(srv, 200, "/strategy/instances/busy/orders?limit=5000");
        json_decref(page);
        tu_sleep_ms(200);
    }
    json_decref(tu_instance_create(srv, "other", "flooder", NULL, NULL, NULL));
    tu_instance_start(srv, "other");
    json_decref(tu_call(srv, "POST", "/strategy/instances/other/stop", 200, NULL));
    tu_busy_threads_stop();
    json_decref(tu_wait_list(srv, "/strategy/instances/busy/orders?limit=5000", "orders",
                             (size_t)sent, TU_WAIT_S));
    assert_int_equal(orders_count(srv, "busy", "?limit=5000"), (size_t)sent);
    tu_server_stop(srv);
}

/* The ids of a history list, in order, as one array. */
static json_t *history_ids(const json_t *doc, const char *list, const char *key)
{
    json_t *ids = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(doc, list), i, r)
        json_array_append_new(ids, json_string(tu_jstr(r, key)));
    return ids;
}

/* Walks a history `page` records at a time through `next`, and returns the
 * ids in the order read. Every page but the last is full and points on;
 * the last says there is no more. */
static json_t *walk_history(struct tu_server *srv, const char *path, const char *list,
                            const char *key, int page)
{
    json_t *all = json_array();
    char *before = NULL;
    for (int pages = 0;; pages++) {
        if (pages > 1000)
            fail_msg("%s: the walk does not end", path);
        json_t *doc = before ? tu_get_json(srv, 200, "%s?limit=%d&before=%s", path, page, before)
                             : tu_get_json(srv, 200, "%s?limit=%d", path, page);
        json_t *ids = history_ids(doc, list, key);
        assert_int_equal(tu_jint(doc, "count"), (long long)json_array_size(ids));
        json_array_extend(all, ids);
        json_decref(ids);
        free(before);
        before = NULL;
        const json_t *next = json_object_get(doc, "next");
        if (json_is_null(next)) {
            assert_true(tu_jint(doc, "count") <= page);
            json_decref(doc);
            return all;
        }
        assert_int_equal(tu_jint(doc, "count"), page);
        before = strdup(json_string_value(next));
        json_decref(doc);
    }
}

/* The whole history read page by page is the history read at once: each
 * record once, newest first. */
static void expect_pages_match(struct tu_server *srv, const char *path, const char *list,
                               const char *key, int page)
{
    for (int attempt = 0;; attempt++) {
        json_t *doc = tu_get_json(srv, 200, "%s?limit=10000", path);
        json_t *whole = history_ids(doc, list, key);
        json_decref(doc);
        json_t *walked = walk_history(srv, path, list, key, page);
        doc = tu_get_json(srv, 200, "%s?limit=10000", path);
        json_t *after = history_ids(doc, list, key);
        json_decref(doc);
        bool still = json_equal(whole, after);
        bool same = json_equal(whole, walked);
        size_t n = json_array_size(whole);
        json_decref(whole);
        json_decref(after);
        json_decref(walked);
        if (still) {
            if (!same)
                fail_msg("%s read %d at a time differs from the %zu records read at once", path,
                         page, n);
            assert_true(n > (size_t)page);
            return;
        }
        if (attempt == 20) /* the market's writer may still be adding fills */
            fail_msg("%s kept changing", path);
        usleep(200 * 1000);
    }
}

/* The order and execution history can be read to its end a page at a
 * time; a limit above the largest page and a cursor the gateway never gave
 * are refused, naming the parameter. */
static void test_history_pages(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv, fast_config);
    upload_flooder(srv, "pager", "[{name: 'max_orders_per_second', type: 'int', default: 230}]");
    json_decref(tu_call(srv, "POST", "/providers/sim/start", 202, NULL));
    flood_once(srv, "pg", "pager", NULL, 230);
    expect_pages_match(srv, "/strategy/instances/pg/orders", "orders", "id", 40);
    expect_pages_match(srv, "/strategy/instances/pg/orders", "orders", "id", 1);
    expect_pages_match(srv, "/strategy/instances/pg/executions", "executions", "executionId", 33);

    static const char *const bad[] = {
        "/strategy/instances/pg/orders?limit=10001",
        "/strategy/instances/pg/executions?limit=20000",
        "/strategy/instances/pg/orders?before=yesterday",
        "/strategy/instances/pg/orders?before=12.-3",
        "/strategy/instances/pg/executions?before=1.2.3",
    };
    static const char *const field[] = {"limit", "limit", "before", "before", "before"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct tu_response res;
        tu_get(srv, &res, "%s", bad[i]);
        tu_assert_error(&res, 400);
        assert_string_equal(tu_jstr(res.json, "details.parameter"), field[i]);
        tu_response_free(&res);
    }
    tu_server_stop(srv);
}

static void test_history_retention(void **state)
{
    struct tu_server *srv = *state;
    char *config = tu_path("%shistory:\n  retention_seconds: 1\n", fast_config);
    start_server(srv, config);
    free(config);
    upload_rester_named(srv, "keeper", true);
    json_decref(tu_instance_create(srv, "kept", "keeper", "{\"dry_run\": true}", NULL, NULL));
    tu_instance_start(srv, "kept");
    json_decref(tu_call(srv, "POST", "/providers/sim/start", 202, NULL));
    json_decref(wait_report(srv, "kept", "kept-1", "filled"));
    json_decref(wait_report(srv, "kept", "kept-2", "acknowledged"));

    for (int i = 0; i < TU_WAIT_S * 50 && orders_count(srv, "kept", "") != 1; i++)
        tu_sleep_ms(20);
    json_t *doc = tu_get_json(srv, 200, "/strategy/instances/kept/orders");
    assert_int_equal(json_array_size(json_object_get(doc, "orders")), 1);
    assert_string_equal(tu_jstr(doc, "orders.0.clientOrderId"), "kept-2");
    assert_string_equal(tu_jstr(doc, "orders.0.state"), "acknowledged");
    json_decref(doc);
    doc = tu_get_json(srv, 200, "/strategy/instances/kept/executions");
    assert_int_equal(json_array_size(json_object_get(doc, "executions")), 0);
    json_decref(doc);
    assert_true(tu_metric(srv, "stratd_history_deleted_total{table=\"orders\"}") >= 1);
    assert_true(tu_metric(srv, "stratd_history_deleted_total{table=\"executions\"}") >= 1);
    assert_true(tu_metric(srv, "stratd_state_database_bytes") > 0);
    tu_sleep_ms(1500); /* older than the retention now, and still open */
    assert_int_equal(orders_count(srv, "kept", "?state=acknowledged"), 1);
    tu_server_stop(srv);
}

/* A resting order outlives neither its book nor a SIGKILL: when the
 * provider's next session starts (with an empty book) the order that the
 * killed gateway left open in the records is expired with a reason. */
static void test_open_order_expired_after_sigkill(void **state)
{
    struct tu_server *srv = *state;
    struct tu_server_options opts = {.config_yaml = fast_config};
    tu_server_start(srv, &opts);
    upload_rester(srv);
    json_decref(tu_instance_create(srv, "rest-1", "rester", "{\"dry_run\": true}", NULL, NULL));
    tu_instance_start(srv, "rest-1");
    json_decref(tu_call(srv, "POST", "/providers/sim/start", 202, NULL));
    json_decref(wait_report(srv, "rest-1", "rest-1-1", "acknowledged"));
    json_decref(tu_wait_list(srv, "/strategy/instances/rest-1/orders?state=acknowledged", "orders",
                             1, TU_WAIT_S));

    tu_server_kill(srv);
    /* the provider started over the API starts again with the gateway (the
     * configuration has it enabled: false), and its new session expires
     * the order the killed one left open */
    tu_server_restart(srv, &opts);
    json_t *doc = tu_wait_list(srv, "/strategy/instances/rest-1/orders?state=expired", "orders", 1,
                               TU_WAIT_S);
    assert_int_equal(json_array_size(json_object_get(doc, "orders")), 1);
    const json_t *o = json_array_get(json_object_get(doc, "orders"), 0);
    check_order_record(o, "rest-1");
    assert_string_equal(tu_jstr(o, "clientOrderId"), "rest-1-1");
    assert_non_null(strstr(tu_jstr(o, "metadata.reason"), "restarted"));
    assert_true(json_is_integer(json_object_get(o, "completedAt")));
    assert_true(tu_jint(o, "updatedAt") >= tu_jint(o, "placedAt"));
    json_decref(doc);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_orders_fills_and_history, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_live_orders_move_balances, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_open_order_expired_after_sigkill, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_delete_cancels_resting_orders, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_kill_switch_cancels_resting_orders, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_history_retention, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_stopped_instance_hears_its_orders_at_start,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_long_instance_ids_keep_order_ids_apart,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_stop_can_cancel_resting_orders, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_failure_cancels_resting_orders, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_failure_keeps_orders_when_configured, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_order_rate_limit, tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_history_is_written_with_every_core_busy,
                                        tu_server_setup, stop_busy_teardown),
        cmocka_unit_test_setup_teardown(test_history_pages, tu_server_setup, tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
