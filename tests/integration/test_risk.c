/*
 * Runtime risk limits over HTTP (GET/PUT /risk/limits): the defaults in the
 * contract's RiskConfig shape; bad bodies refused with 400 naming the field
 * and nothing changed; a read token refused with 403; a PUT audited,
 * persisted and still in force after a restart. And enforcement: an
 * instance submitting orders on its trades sees them refused by
 * maxNotionalValue, allowedOrderTypes, killSwitchEnabled, maxPositionSize,
 * maxConcurrentOrders, priceBandPercent, circuitBreaker and orderThrottle
 * (an Error naming the limit; nothing reaches the order history; the
 * refusals counted in stratd_risk_rejections_total{limit}), and
 * maxRiskBreaches stops it with stopReason riskBreaches, counting from each
 * start.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char *const config_yaml = "workers: 2\n"
                                       "providers:\n"
                                       "  - name: sim\n"
                                       "    adapter: simulated\n"
                                       "    config:\n"
                                       "      symbols: [BTC-USDT, ETH-USDT]\n"
                                       "      seed: 11\n"
                                       "      tickRate: 50\n";

static const char defaults[] =
    "{\"maxPositionSize\": \"0\", \"maxNotionalValue\": \"0\", \"notionalCurrency\": \"\","
    " \"orderThrottle\": 0, \"orderBurst\": 0, \"maxConcurrentOrders\": 0,"
    " \"priceBandPercent\": 0, \"allowedOrderTypes\": [\"market\", \"limit\"],"
    " \"killSwitchEnabled\": false, \"maxRiskBreaches\": 0,"
    " \"circuitBreaker\": {\"enabled\": false, \"threshold\": 0, \"cooldown\": \"0s\"}}";

static void start_server(struct tu_server *srv)
{
    struct tu_server_options opts = {.config_yaml = config_yaml};
    tu_server_start(srv, &opts);
}

/* The defaults with some keys replaced: `changes` is a JSON object text. */
static char *limits_with(const char *changes)
{
    json_t *doc = json_loads(defaults, 0, NULL);
    json_t *delta = json_loads(changes, 0, NULL);
    assert_non_null(doc);
    assert_non_null(delta);
    json_object_update(doc, delta);
    json_decref(delta);
    char *text = json_dumps(doc, JSON_COMPACT);
    json_decref(doc);
    return text;
}

static void put_limits(struct tu_server *srv, const char *changes)
{
    char *body = limits_with(changes);
    json_t *answer = tu_call(srv, "PUT", "/risk/limits", 200, body);
    assert_string_equal(tu_jstr(answer, "status"), "applied");
    json_t *expected = json_loads(body, 0, NULL);
    assert_true(json_equal(expected, tu_jget(answer, "limits")));
    json_decref(expected);
    json_decref(answer);
    free(body);
}

static void expect_limits(struct tu_server *srv, const char *changes)
{
    char *text = limits_with(changes);
    json_t *expected = json_loads(text, 0, NULL);
    json_t *doc = tu_get_json(srv, 200, "/risk/limits");
    if (!json_equal(expected, tu_jget(doc, "limits"))) {
        char *got = json_dumps(doc, JSON_COMPACT);
        fail_msg("GET /risk/limits: expected {\"limits\": %s}, got %s", text, got);
    }
    json_decref(doc);
    json_decref(expected);
    free(text);
}

/* A trader: on each trade (one at a time when `sequential`: the next only
 * after the previous order's final report) a buy of `size`, market or
 * limit at `factor` times the trade's price. It catches every refusal,
 * logs the first 20 as refused {n, message} and each change of outcome as
 * outcome {m, ok, refused}. */
static const char *const trader_config = "[{name: 'type', type: 'string', default: 'market'},"
                                         " {name: 'size', type: 'float', default: 0.001},"
                                         " {name: 'factor', type: 'float', default: 1},"
                                         " {name: 'sequential', type: 'bool', default: true}]";

static const char *const trader_setup =
    "const cfg = env.config;\n"
    "let ok = 0, refused = 0, busy = false, last = '';\n"
    "const note = (m) => { if (m !== last) { last = m; h.log('outcome', {m, ok, refused}); } };\n"
    "const done = () => { busy = false; };\n";

static const char *const trader_handlers =
    "onTrade(ctx, evt, p) {\n"
    "  if (busy) return;\n"
    "  try {\n"
    "    if (cfg.type === 'limit')\n"
    "      rt.submitOrder(ctx.provider, 'buy', cfg.size, p.price * cfg.factor, ctx.symbol);\n"
    "    else\n"
    "      rt.submitMarketOrder(ctx.provider, 'buy', cfg.size, ctx.symbol);\n"
    "    ok++;\n"
    "    busy = cfg.sequential;\n"
    "    note('ok');\n"
    "  } catch (e) {\n"
    "    refused++;\n"
    "    if (refused <= 20) h.log('refused', {n: refused, message: e.message});\n"
    "    note(e.message);\n"
    "  }\n"
    "},\n"
    "onOrderFilled: done, onOrderExpired: done, onOrderRejected: done, onOrderCancelled: done,\n";

static void upload_trader(struct tu_server *srv)
{
    char *src =
        tu_strategy_source("trader", "['Trade']", trader_config, trader_setup, trader_handlers);
    free(tu_upload_hash(srv, src));
    free(src);
}

static void start_trader(struct tu_server *srv, const char *id, const char *config)
{
    json_decref(tu_instance_create(srv, id, "trader", config, NULL, NULL));
    tu_instance_start(srv, id);
}

/* How many values `id` logged under `tag` (the log spans the server's
 * restarts). */
static size_t logged(struct tu_server *srv, const char *id, const char *tag)
{
    json_t *values = tu_log_values(srv, id, tag);
    size_t n = json_array_size(values);
    json_decref(values);
    return n;
}

/* Waits for a value `id` logged under `tag`, past its first `skip`, whose
 * string `field` contains `text`; returns it. */
static json_t *wait_logged(struct tu_server *srv, const char *id, const char *tag,
                           const char *field, size_t skip, const char *text)
{
    for (int i = 0; i < TU_WAIT_S * 50; i++) {
        json_t *values = tu_log_values(srv, id, tag);
        size_t k;
        json_t *v;
        json_array_foreach(values, k, v)
        {
            const char *m = json_string_value(json_object_get(v, field));
            if (k >= skip && m && strstr(m, text)) {
                json_incref(v);
                json_decref(values);
                return v;
            }
        }
        json_decref(values);
        tu_sleep_ms(20);
    }
    char *log = tu_server_log(srv);
    fail_msg("instance %s never logged a '%s' whose %s contains '%s'; log:\n%s", id, tag, field,
             text, log);
    return NULL;
}

static size_t outcomes_logged(struct tu_server *srv, const char *id)
{
    return logged(srv, id, "outcome");
}

static json_t *wait_outcome_after(struct tu_server *srv, const char *id, size_t skip,
                                  const char *text)
{
    return wait_logged(srv, id, "outcome", "m", skip, text);
}

static json_t *wait_outcome(struct tu_server *srv, const char *id, const char *text)
{
    return wait_outcome_after(srv, id, 0, text);
}

static size_t orders_of(struct tu_server *srv, const char *id, const char *query)
{
    json_t *doc = tu_get_json(srv, 200, "/strategy/instances/%s/orders%s", id, query);
    size_t n = json_array_size(json_object_get(doc, "orders"));
    json_decref(doc);
    return n;
}

static double rejections(struct tu_server *srv, const char *limit)
{
    char *sample = tu_path("stratd_risk_rejections_total{limit=\"%s\"}", limit);
    double v = tu_metric(srv, sample);
    free(sample);
    return v;
}

/* ------------------------------------------------------------ the document */

static void expect_refused(struct tu_server *srv, const char *body, const char *field)
{
    json_t *err = tu_call(srv, "PUT", "/risk/limits", 400, body);
    const char *got = tu_jstr(err, "details.field");
    if (!got || strcmp(got, field) != 0)
        fail_msg("PUT %s: expected details.field %s, got %s (%s)", body, field, got ? got : "none",
                 tu_jstr(err, "error"));
    json_decref(err);
    expect_limits(srv, "{}"); /* nothing changed */
}

static void expect_refused_with(struct tu_server *srv, const char *changes, const char *field)
{
    char *body = limits_with(changes);
    expect_refused(srv, body, field);
    free(body);
}

static void test_defaults_validation_audit(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    expect_limits(srv, "{}");

    expect_refused_with(srv, "{\"maxOrders\": 5}", "maxOrders");
    expect_refused_with(srv, "{\"orderThrottle\": \"5\"}", "orderThrottle");
    expect_refused_with(srv, "{\"orderThrottle\": 1.5}", "orderThrottle");
    expect_refused_with(srv, "{\"maxConcurrentOrders\": -1}", "maxConcurrentOrders");
    expect_refused_with(srv, "{\"maxRiskBreaches\": -3}", "maxRiskBreaches");
    expect_refused_with(srv, "{\"maxNotionalValue\": \"12abc\"}", "maxNotionalValue");
    expect_refused_with(srv, "{\"maxNotionalValue\": 5000}", "maxNotionalValue");
    expect_refused_with(srv, "{\"maxPositionSize\": \"-1\"}", "maxPositionSize");
    expect_refused_with(srv, "{\"maxPositionSize\": \"1.\"}", "maxPositionSize");
    /* a well-formed decimal that is too long says so, not that it is malformed */
    char *long_one =
        limits_with("{\"maxPositionSize\": \"99999999999999999999999999999999999999\"}");
    json_t *refusal = tu_call(srv, "PUT", "/risk/limits", 400, long_one);
    assert_string_equal(
        tu_jstr(refusal, "error"),
        "maxPositionSize: the decimal is 38 characters long; at most 32 are accepted");
    json_decref(refusal);
    free(long_one);
    expect_refused_with(srv, "{\"priceBandPercent\": -0.5}", "priceBandPercent");
    expect_refused_with(srv, "{\"priceBandPercent\": \"2\"}", "priceBandPercent");
    expect_refused_with(srv, "{\"killSwitchEnabled\": 1}", "killSwitchEnabled");
    expect_refused_with(srv, "{\"notionalCurrency\": 7}", "notionalCurrency");
    expect_refused_with(srv, "{\"allowedOrderTypes\": [\"market\", \"stop\"]}",
                        "allowedOrderTypes");
    expect_refused_with(srv, "{\"allowedOrderTypes\": \"market\"}", "allowedOrderTypes");
    expect_refused_with(srv, "{\"orderThrottle\": 5, \"orderBurst\": 0}", "orderBurst");
    expect_refused_with(srv,
                        "{\"circuitBreaker\": {\"enabled\": true, \"threshold\": 5, "
                        "\"cooldown\": \"30 seconds\"}}",
                        "circuitBreaker.cooldown");
    expect_refused_with(srv,
                        "{\"circuitBreaker\": {\"enabled\": true, \"threshold\": -5, "
                        "\"cooldown\": \"30s\"}}",
                        "circuitBreaker.threshold");
    expect_refused_with(srv,
                        "{\"circuitBreaker\": {\"enabled\": true, \"threshold\": 5, "
                        "\"cooldown\": \"30s\", \"window\": \"1m\"}}",
                        "circuitBreaker.window");
    expect_refused_with(srv, "{\"circuitBreaker\": {\"enabled\": true, \"threshold\": 5}}",
                        "circuitBreaker.cooldown");
    /* a missing key: PUT takes a whole RiskConfig */
    json_t *partial = json_loads(defaults, 0, NULL);
    json_object_del(partial, "orderBurst");
    char *text = json_dumps(partial, JSON_COMPACT);
    expect_refused(srv, text, "orderBurst");
    free(text);
    json_decref(partial);
    expect_refused(srv, "[1, 2]", "body");

    const char *applied = "{\"maxPositionSize\": \"2.5\", \"maxNotionalValue\": \"5000\","
                          " \"notionalCurrency\": \"USDT\", \"orderThrottle\": 10,"
                          " \"orderBurst\": 20, \"maxConcurrentOrders\": 7,"
                          " \"priceBandPercent\": 2.5, \"allowedOrderTypes\": [\"limit\"],"
                          " \"maxRiskBreaches\": 3, \"circuitBreaker\": {\"enabled\": true,"
                          " \"threshold\": 5, \"cooldown\": \"500ms\"}}";
    put_limits(srv, applied);
    expect_limits(srv, applied);

    /* audited with the limits before and after */
    json_t *entries = tu_audit_entries(srv);
    const json_t *found = NULL;
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        if (strcmp(tu_jstr(e, "action"), "risk.update") == 0)
            found = e;
    }
    assert_non_null(found);
    assert_string_equal(tu_jstr(found, "from.maxNotionalValue"), "0");
    assert_string_equal(tu_jstr(found, "to.maxNotionalValue"), "5000");
    assert_string_equal(tu_jstr(found, "to.circuitBreaker.cooldown"), "500ms");
    json_decref(entries);
    tu_server_stop(srv);
}

/* The limits survive a restart, and are enforced from the first order. */
static void test_persisted_across_restart(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    const char *applied = "{\"killSwitchEnabled\": true, \"maxNotionalValue\": \"123.45\","
                          " \"notionalCurrency\": \"USDT\", \"allowedOrderTypes\": [\"market\"]}";
    put_limits(srv, applied);
    tu_server_stop(srv);
    struct tu_server_options opts = {.config_yaml = config_yaml};
    tu_server_restart(srv, &opts);
    expect_limits(srv, applied);

    upload_trader(srv);
    start_trader(srv, "ks", "{\"dry_run\": true}");
    json_decref(wait_outcome(srv, "ks", "risk: killSwitchEnabled"));
    assert_true(rejections(srv, "killSwitchEnabled") >= 1);
    assert_int_equal(orders_of(srv, "ks", ""), 0);
    tu_instance_stop(srv, "ks");
    tu_server_stop(srv);
}

/* Runs SQL on the stopped gateway's state database. */
static void edit_state(struct tu_server *srv, const char *sql)
{
    char *script = tu_path("%s/edit.sql", srv->root);
    tu_write_text(script, sql);
    char *out = NULL;
    int rc = tu_run(&out, "sqlite3 '%s/stratd.db' < '%s' 2>&1", srv->state_dir, script);
    if (rc != 0)
        fail_msg("sqlite3 %s: exit %d: %s", sql, rc, out ? out : "");
    free(out);
    free(script);
}

/* Stored limits that no longer validate stop the start, naming what is
 * wrong, rather than leave the gateway trading with none (the kill switch
 * off); a key the stored limits lack (stored before it existed) takes its
 * default, the others hold. */
static void test_stored_limits_that_do_not_validate(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    const char *applied = "{\"killSwitchEnabled\": true, \"maxRiskBreaches\": 3}";
    put_limits(srv, applied);
    tu_server_stop(srv);

    edit_state(srv, "UPDATE settings SET value = json_remove(value, '$.maxRiskBreaches')"
                    " WHERE key = 'risk'");
    struct tu_server_options opts = {.config_yaml = config_yaml};
    tu_server_restart(srv, &opts);
    expect_limits(srv, "{\"killSwitchEnabled\": true}");
    json_t *line = tu_wait_log(srv, NULL, "the stored risk limits have no maxRiskBreaches", 5);
    json_decref(line);
    tu_server_stop(srv);

    static const char *const broken[][2] = {
        {"json_set(value, '$.orderThrottle', -5)", "orderThrottle"},
        {"json_set(value, '$.circuitBreaker.cooldown', 'forever')", "cooldown"},
        {"'not json'", "risk limits"},
    };
    for (size_t i = 0; i < sizeof broken / sizeof broken[0]; i++) {
        char *sql = tu_path("UPDATE settings SET value = %s WHERE key = 'risk'", broken[i][0]);
        edit_state(srv, sql);
        free(sql);
        char *err_text = NULL;
        int code = tu_serve_to_exit(srv->strategies_dir, srv->state_dir, &err_text);
        if (code == 0 || code == -1 || !strstr(err_text, "the stored risk limits") ||
            !strstr(err_text, broken[i][1]))
            fail_msg("stored limits broken by %s: exit %d: %s", broken[i][0], code, err_text);
        free(err_text);
        /* back to what was stored, for the next case */
        char *restore = limits_with(applied);
        sql = tu_path("UPDATE settings SET value = '%s' WHERE key = 'risk'", restore);
        edit_state(srv, sql);
        free(sql);
        free(restore);
    }
    tu_server_restart(srv, &opts);
    expect_limits(srv, applied);
    tu_server_stop(srv);
}

/* Notional, order types and the kill switch, changed while the instance
 * runs; refused orders never reach the history. Then the defaults again:
 * orders go through. */
static void test_limits_refuse_orders(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    upload_trader(srv);
    put_limits(srv, "{\"maxNotionalValue\": \"10\", \"notionalCurrency\": \"USDT\"}");
    start_trader(srv, "t1", "{\"dry_run\": true}");
    json_t *o = wait_outcome(srv, "t1", "risk: maxNotionalValue 10 USDT exceeded (");
    assert_int_equal(tu_jint(o, "ok"), 0);
    json_decref(o);
    assert_true(rejections(srv, "maxNotionalValue") >= 1);

    /* a notional limit for another currency leaves BTC-USDT alone */
    put_limits(srv, "{\"maxNotionalValue\": \"10\", \"notionalCurrency\": \"EUR\","
                    " \"allowedOrderTypes\": [\"limit\"]}");
    json_decref(wait_outcome(srv, "t1", "risk: allowedOrderTypes: market orders are not allowed"));
    assert_true(rejections(srv, "allowedOrderTypes") >= 1);

    assert_true(tu_metric(srv, "stratd_risk_kill_switch_enabled") == 0);
    put_limits(srv, "{\"killSwitchEnabled\": true}");
    assert_true(tu_metric(srv, "stratd_risk_kill_switch_enabled") == 1);
    json_decref(wait_outcome(srv, "t1", "risk: killSwitchEnabled"));
    assert_int_equal(orders_of(srv, "t1", ""), 0); /* nothing reached the engine */

    put_limits(srv, "{}");
    assert_true(tu_metric(srv, "stratd_risk_kill_switch_enabled") == 0);
    o = wait_outcome(srv, "t1", "ok");
    assert_true(tu_jint(o, "refused") >= 3);
    json_decref(o);
    /* the refused orders took no client order number: the first that went
     * is the instance's first */
    json_t *orders =
        tu_wait_list(srv, "/strategy/instances/t1/orders?limit=10000", "orders", 1, TU_WAIT_S);
    const json_t *list = json_object_get(orders, "orders");
    const json_t *first = json_array_get(list, json_array_size(list) - 1);
    assert_string_equal(tu_jstr(first, "clientOrderId"), "t1-1");
    json_decref(orders);
    tu_instance_stop(srv, "t1");

    /* an uncaught refusal is the instance's lastError like any other */
    put_limits(srv, "{\"killSwitchEnabled\": true}");
    char *src = tu_strategy_source("naive", "['Trade']", "[]", "",
                                   "onTrade(ctx) { rt.submitMarketOrder(ctx.provider, 'buy', "
                                   "0.001, ctx.symbol); },");
    free(tu_upload_hash(srv, src));
    free(src);
    json_decref(tu_instance_create(srv, "n1", "naive", "{\"dry_run\": true}", NULL, NULL));
    tu_instance_start(srv, "n1");
    for (int i = 0; i < TU_WAIT_S * 50; i++) {
        json_t *snap = tu_instance_get(srv, "n1");
        const char *m = json_string_value(tu_jget(snap, "lastError.message"));
        bool seen = m && strstr(m, "risk: killSwitchEnabled");
        json_decref(snap);
        if (seen)
            break;
        assert_true(i + 1 < TU_WAIT_S * 50);
        tu_sleep_ms(20);
    }
    tu_instance_stop(srv, "n1");
    tu_server_stop(srv);
}

#define POSITION_REFUSED "risk: maxPositionSize 0.0025 exceeded (0.003 BTC-USDT"

/* Instance "pos" buys 0.001 at a time, one after the other, under a
 * position limit of 0.0025: two fill, the third would make 0.003. */
static void trade_to_position_limit(struct tu_server *srv)
{
    put_limits(srv, "{\"maxPositionSize\": \"0.0025\"}");
    start_trader(srv, "pos", "{\"dry_run\": true}");
    json_t *o = wait_outcome(srv, "pos", POSITION_REFUSED);
    assert_int_equal(tu_jint(o, "ok"), 2);
    json_decref(o);
    tu_instance_stop(srv, "pos");
}

/* Positions from fills, open orders, the price band and the breaker. */
static void test_position_open_band_breaker(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    upload_trader(srv);

    trade_to_position_limit(srv);
    json_decref(
        tu_wait_list(srv, "/strategy/instances/pos/orders?state=filled", "orders", 2, TU_WAIT_S));
    assert_int_equal(orders_of(srv, "pos", ""), 2);
    assert_true(rejections(srv, "maxPositionSize") >= 1);

    /* limit buys at half the price rest: three are admitted */
    put_limits(srv, "{\"maxConcurrentOrders\": 3}");
    start_trader(
        srv, "open",
        "{\"dry_run\": true, \"type\": \"limit\", \"factor\": 0.5, \"sequential\": false}");
    json_t *o = wait_outcome(srv, "open", "risk: maxConcurrentOrders 3 reached (3 open)");
    assert_int_equal(tu_jint(o, "ok"), 3);
    json_decref(o);
    json_decref(tu_wait_list(srv, "/strategy/instances/open/orders", "orders", 3, TU_WAIT_S));
    assert_int_equal(orders_of(srv, "open", ""), 3);

    /* the same orders, 50% from the last trade, outside a 1% band */
    put_limits(srv, "{\"priceBandPercent\": 1}");
    json_decref(wait_outcome(srv, "open", "risk: priceBandPercent 1% exceeded"));
    assert_true(rejections(srv, "priceBandPercent") >= 1);
    tu_instance_stop(srv, "open");

    /* every tick moves the price more than 0.0001%: the second trade of a
     * window trips the breaker, and the symbol stays halted */
    put_limits(srv, "{\"circuitBreaker\": {\"enabled\": true, \"threshold\": 0.0001,"
                    " \"cooldown\": \"1h\"}}");
    start_trader(srv, "cb", "{\"dry_run\": true}");
    o = wait_outcome(srv, "cb", "risk: circuitBreaker: BTC-USDT moved");
    if (!strstr(tu_jstr(o, "m"), "(threshold 0.0001%); halted for another"))
        fail_msg("refusal: %s", tu_jstr(o, "m"));
    json_decref(o);
    assert_true(rejections(srv, "circuitBreaker") >= 1);
    /* the halts are in the limits' view, an hour ahead: both symbols trade,
     * so both trip (the breaker watches trades, not orders); turned off,
     * they are gone */
    json_t *doc = tu_get_json(srv, 200, "/risk/limits");
    const json_t *halts = tu_jget(doc, "halts");
    assert_int_equal(json_array_size(halts), 2);
    bool seen[2] = {false, false};
    size_t k;
    const json_t *h;
    json_array_foreach(halts, k, h)
    {
        assert_string_equal(tu_jstr(h, "provider"), "sim");
        seen[strcmp(tu_jstr(h, "symbol"), "BTC-USDT") == 0 ? 0 : 1] = true;
        long long ahead_ms = tu_jint(h, "until") - (long long)time(NULL) * 1000LL;
        assert_true(ahead_ms > 3500000 && ahead_ms <= 3601000);
        assert_true(json_number_value(tu_jget(h, "move")) > 0.0001);
    }
    assert_true(seen[0] && seen[1]);
    json_decref(doc);
    /* and in the metrics: both in force, each begun once (an hour long) */
    assert_true(tu_metric(srv, "stratd_risk_halted_symbols") == 2);
    assert_true(tu_metric(srv, "stratd_risk_halts_total") == 2);
    put_limits(srv, "{}");
    doc = tu_get_json(srv, 200, "/risk/limits");
    assert_int_equal(json_array_size(tu_jget(doc, "halts")), 0);
    json_decref(doc);
    assert_true(tu_metric(srv, "stratd_risk_halted_symbols") == 0);
    assert_true(tu_metric(srv, "stratd_risk_halts_total") == 2);
    tu_instance_stop(srv, "cb");
    tu_server_stop(srv);
}

/* A position is the instance's fills of every start: after a restart its
 * first order meets the position its earlier fills made. */
static void test_position_survives_restart(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    upload_trader(srv);
    trade_to_position_limit(srv);
    size_t before = outcomes_logged(srv, "pos");
    tu_server_stop(srv);

    struct tu_server_options opts = {.config_yaml = config_yaml};
    tu_server_restart(srv, &opts);
    tu_instance_start(srv, "pos");
    json_t *o = wait_outcome_after(srv, "pos", before, POSITION_REFUSED);
    assert_int_equal(tu_jint(o, "ok"), 0);
    json_decref(o);
    assert_int_equal(orders_of(srv, "pos", ""), 2);
    tu_instance_stop(srv, "pos");
    tu_server_stop(srv);
}

/* A position is its instance's: after "pos" is deleted, an instance created
 * under the id starts flat, both when the old position was carried over a
 * restart and at the next restart, which carries the new fills alone. */
static void test_deleted_instance_starts_flat(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    upload_trader(srv);
    trade_to_position_limit(srv);
    tu_server_stop(srv);
    struct tu_server_options opts = {.config_yaml = config_yaml};
    tu_server_restart(srv, &opts);

    json_decref(tu_call(srv, "DELETE", "/strategy/instances/pos", 200, NULL));
    size_t before = outcomes_logged(srv, "pos");
    start_trader(srv, "pos", "{\"dry_run\": true}");
    json_t *o = wait_outcome_after(srv, "pos", before, POSITION_REFUSED);
    assert_int_equal(tu_jint(o, "ok"), 2);
    json_decref(o);
    tu_instance_stop(srv, "pos");
    json_decref(
        tu_wait_list(srv, "/strategy/instances/pos/orders?state=filled", "orders", 4, TU_WAIT_S));

    before = outcomes_logged(srv, "pos");
    tu_server_stop(srv);
    tu_server_restart(srv, &opts);
    tu_instance_start(srv, "pos");
    o = wait_outcome_after(srv, "pos", before, POSITION_REFUSED);
    assert_int_equal(tu_jint(o, "ok"), 0);
    json_decref(o);
    tu_instance_stop(srv, "pos");
    tu_server_stop(srv);
}

static double entries(struct tu_server *srv, const char *table)
{
    char *sample = tu_path("stratd_risk_entries{table=\"%s\"}", table);
    double v = tu_metric(srv, sample);
    free(sample);
    return v;
}

/* What the checks keep for an instance (its open orders and throttle, a
 * position per symbol it filled in) is freed when it is deleted, so a
 * gateway that creates and deletes instances all day does not grow. */
static void test_deleted_instance_state_freed(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    upload_trader(srv);
    assert_true(entries(srv, "instances") == 0 && entries(srv, "positions") == 0);
    const char *const ids[] = {"t1", "t2", "t3"};
    for (size_t i = 0; i < 3; i++)
        start_trader(srv, ids[i], "{\"dry_run\": true}");
    for (size_t i = 0; i < 3; i++) {
        char path[96];
        snprintf(path, sizeof path, "/strategy/instances/%s/orders?state=filled", ids[i]);
        json_decref(tu_wait_list(srv, path, "orders", 1, TU_WAIT_S));
    }
    assert_true(entries(srv, "instances") == 3 && entries(srv, "positions") == 3);

    for (size_t i = 0; i < 3; i++) {
        char path[64];
        snprintf(path, sizeof path, "/strategy/instances/%s", ids[i]);
        json_decref(tu_call(srv, "DELETE", path, 200, NULL));
        assert_true(entries(srv, "instances") == (double)(2 - i));
        assert_true(entries(srv, "positions") == (double)(2 - i));
    }
    /* a trader created again under a deleted id starts its own */
    start_trader(srv, "t1", "{\"dry_run\": true}");
    for (int i = 0; i < TU_WAIT_S * 50 && entries(srv, "positions") < 1; i++)
        tu_sleep_ms(20);
    assert_true(entries(srv, "instances") == 1 && entries(srv, "positions") == 1);
    tu_instance_stop(srv, "t1");
    tu_server_stop(srv);
}

/* A watcher logs each RiskControl event: its reason and evt's symbol. */
static const char *const watcher_handlers =
    "onRiskControl(ctx, evt, p) { h.log('risk', {reason: p.reason, symbol: evt.symbol}); },\n";

/* `id`'s first RiskControl event past its first `skip` whose reason
 * contains `text`. */
static json_t *wait_risk_event(struct tu_server *srv, const char *id, size_t skip, const char *text)
{
    return wait_logged(srv, id, "risk", "reason", skip, text);
}

static size_t risk_events(struct tu_server *srv, const char *id)
{
    return logged(srv, id, "risk");
}

/* Strategies subscribed to RiskControl hear the circuit breaker halt their
 * symbol and the halt end (the breaker watches every trade, whether or not
 * anyone orders), and the kill switch turn on and off for the whole
 * provider; a change of another limit is no event. */
static void test_risk_control_events(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *src = tu_strategy_source("watcher", "['RiskControl']", "[]", "", watcher_handlers);
    free(tu_upload_hash(srv, src));
    free(src);
    json_decref(tu_instance_create(srv, "w", "watcher", NULL, NULL, NULL));
    tu_instance_start(srv, "w");

    put_limits(srv, "{\"circuitBreaker\": {\"enabled\": true, \"threshold\": 0.0001,"
                    " \"cooldown\": \"300ms\"}}");
    json_t *e = wait_risk_event(srv, "w", 0, "circuitBreaker: BTC-USDT moved");
    assert_string_equal(tu_jstr(e, "symbol"), "BTC-USDT");
    if (!strstr(tu_jstr(e, "reason"), "(threshold 0.0001%); orders refused for 0.3 s"))
        fail_msg("reason: %s", tu_jstr(e, "reason"));
    json_decref(e);
    e = wait_risk_event(srv, "w", 0, "circuitBreaker: BTC-USDT halt ended");
    assert_string_equal(tu_jstr(e, "symbol"), "BTC-USDT");
    json_decref(e);
    /* halted again, and turned off (below) within the 300 ms */
    json_decref(wait_risk_event(srv, "w", risk_events(srv, "w"), "circuitBreaker: BTC-USDT moved"));

    put_limits(srv, "{\"killSwitchEnabled\": true}");
    e = wait_risk_event(srv, "w", 0, "killSwitchEnabled: every new order is refused");
    assert_true(json_is_null(tu_jget(e, "symbol")));
    json_decref(e);
    /* events come in order: the breaker's, then this one */
    size_t before = risk_events(srv, "w");
    put_limits(srv, "{\"killSwitchEnabled\": true, \"maxNotionalValue\": \"100\"}");
    put_limits(srv, "{\"maxNotionalValue\": \"100\"}");
    json_decref(wait_risk_event(srv, "w", before, "killSwitchEnabled off"));
    assert_int_equal(risk_events(srv, "w"), before + 1);

    /* the breaker was turned off while halted: turned on again it starts
     * afresh, no halt of before ends. The kill switch marks the end of the
     * trades it saw. */
    static const char wide[] =
        "\"circuitBreaker\": {\"enabled\": true, \"threshold\": 50, \"cooldown\": \"1h\"}";
    char *changes = tu_path("{%s}", wide);
    put_limits(srv, changes);
    free(changes);
    tu_sleep_ms(500); /* trades past the end of the halt of before */
    changes = tu_path("{\"killSwitchEnabled\": true, %s}", wide);
    put_limits(srv, changes);
    free(changes);
    json_decref(wait_risk_event(srv, "w", before + 1, "killSwitchEnabled: every new order"));
    assert_int_equal(risk_events(srv, "w"), before + 2);
    tu_instance_stop(srv, "w");
    tu_server_stop(srv);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* 2 orders a second after a burst of 3: the count stays within what the
 * bucket can have given in the time the instance ran. */
static void test_throttle_bounds_orders(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    upload_trader(srv);
    put_limits(srv, "{\"orderThrottle\": 2, \"orderBurst\": 3}");
    double t0 = now_s();
    start_trader(srv, "th", "{\"dry_run\": true, \"sequential\": false}");
    json_decref(wait_outcome(srv, "th", "risk: orderThrottle 2 orders/s (burst 3) exceeded"));
    tu_sleep_ms(1500);
    tu_instance_stop(srv, "th");
    double elapsed = now_s() - t0;
    json_t *refused = tu_log_values(srv, "th", "refused");
    assert_true(json_array_size(refused) >= 1);
    json_decref(refused);
    assert_true(rejections(srv, "orderThrottle") >= 1);
    /* every accepted order is recorded within 100 ms plus a commit */
    json_decref(tu_wait_list(srv, "/strategy/instances/th/orders", "orders", 3, TU_WAIT_S));
    tu_sleep_ms(500);
    size_t n = orders_of(srv, "th", "?limit=1000");
    double bound = 3 + 2 * elapsed + 1;
    if ((double)n > bound)
        fail_msg("%zu orders passed a throttle of 2/s, burst 3, in %.2f s", n, elapsed);
    tu_server_stop(srv);
}

/* The fifth refusal stops the instance; a new start counts from zero. */
static void test_max_breaches_stop(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    upload_trader(srv);
    put_limits(srv, "{\"killSwitchEnabled\": true, \"maxRiskBreaches\": 5}");
    start_trader(srv, "br", "{\"dry_run\": true}");
    for (int run = 1; run <= 2; run++) {
        json_t *snap = tu_instance_wait_stopped(srv, "br", TU_WAIT_S);
        assert_string_equal(tu_jstr(snap, "stopReason"), "riskBreaches");
        const char *m = tu_jstr(snap, "lastError.message");
        assert_non_null(strstr(m, "maxRiskBreaches"));
        assert_non_null(strstr(m, "risk: killSwitchEnabled"));
        json_decref(snap);
        json_t *line = tu_wait_log(srv, "br", "instance stopped", TU_WAIT_S);
        assert_string_equal(tu_jstr(line, "reason"), "riskBreaches");
        json_decref(line);
        json_t *refused = tu_log_values(srv, "br", "refused");
        assert_int_equal(json_array_size(refused), (size_t)(5 * run));
        assert_int_equal(tu_jint(json_array_get(refused, json_array_size(refused) - 1), "n"), 5);
        json_decref(refused);
        if (run == 1)
            tu_instance_start(srv, "br");
    }
    tu_wait_metric(srv, "stratd_instance_stops_total{reason=\"riskBreaches\"}", 2);

    /* orders refused in create() count too: reaching the limit there fails
     * the start, naming the limit, and the instance does not run */
    char *src =
        tu_strategy_source("eager", "['Trade']", "[{name: 'dry_run', type: 'bool', default: true}]",
                           "for (let i = 0; i < 6; i++) {\n"
                           "  try { rt.submitMarketOrder('sim', 'buy', 0.001, 'BTC-USDT'); }\n"
                           "  catch (e) { h.log('refused', {n: i + 1, message: e.message}); }\n"
                           "}\n",
                           "onTrade() {},\n");
    free(tu_upload_hash(srv, src));
    free(src);
    json_decref(tu_instance_create(srv, "eager", "eager", NULL, NULL, NULL));
    json_t *err = tu_call(srv, "POST", "/strategy/instances/eager/start", 409, "{}");
    assert_non_null(strstr(tu_jstr(err, "error"), "maxRiskBreaches"));
    json_decref(err);
    json_t *snap = tu_instance_get(srv, "eager");
    assert_true(json_is_false(json_object_get(snap, "running")));
    json_decref(snap);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ tokens */

static const char ADMIN_SECRET[] = "risk-Adm1n-Secret-9xQ2";
static const char READ_SECRET[] = "risk-R3ad-Secret-4kL7";

/* A request to /risk/limits with a bearer secret; returns the status and,
 * when `doc` is non-NULL, the JSON body (new reference). */
static long call_as(struct tu_server *srv, const char *method, const char *secret, const char *body,
                    json_t **doc)
{
    char *header = tu_path("Authorization: Bearer %s", secret);
    const char *headers[] = {header, NULL};
    struct tu_request_options o = {
        .body = body, .body_len = body ? strlen(body) : 0, .headers = headers};
    struct tu_response res;
    tu_request(srv, &res, method, "/risk/limits", &o);
    long status = res.status;
    if (status == 403)
        tu_assert_error(&res, 403);
    if (doc)
        *doc = json_incref(res.json);
    tu_response_free(&res);
    free(header);
    return status;
}

static void test_read_token_forbidden(void **state)
{
    struct tu_server *srv = *state;
    char ha[65], hr[65];
    tu_sha256_hex(ADMIN_SECRET, strlen(ADMIN_SECRET), ha);
    tu_sha256_hex(READ_SECRET, strlen(READ_SECRET), hr);
    char *yaml = tu_path("auth:\n"
                         "  tokens:\n"
                         "    - {name: ops, sha256: %s, role: admin}\n"
                         "    - {name: viewer, sha256: %s, role: read}\n",
                         ha, hr);
    struct tu_server_options opts = {.config_yaml = yaml};
    tu_server_start(srv, &opts);
    char *body = limits_with("{\"killSwitchEnabled\": true}");
    json_t *expected = json_loads(defaults, 0, NULL);
    json_t *doc = NULL;
    assert_int_equal(call_as(srv, "PUT", READ_SECRET, body, NULL), 403);
    assert_int_equal(call_as(srv, "GET", READ_SECRET, NULL, &doc), 200);
    assert_true(json_equal(expected, json_object_get(doc, "limits"))); /* nothing changed */
    json_decref(doc);
    json_decref(expected);

    expected = json_loads(body, 0, NULL);
    assert_int_equal(call_as(srv, "PUT", ADMIN_SECRET, body, NULL), 200);
    assert_int_equal(call_as(srv, "GET", READ_SECRET, NULL, &doc), 200);
    assert_true(json_equal(expected, json_object_get(doc, "limits")));
    json_decref(doc);
    json_decref(expected);
    free(body);
    free(yaml);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults_validation_audit, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_position_survives_restart, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_deleted_instance_starts_flat, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_deleted_instance_state_freed, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_risk_control_events, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_persisted_across_restart, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_stored_limits_that_do_not_validate, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_limits_refuse_orders, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_position_open_band_breaker, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_throttle_bounds_orders, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_max_breaches_stop, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_read_token_forbidden, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
