/*
 * Providers and adapters over HTTP: the embedded default (`sim`, BTC-USDT
 * and ETH-USDT), GET /adapters and its settingsSchema, balances; a second
 * simulated market added, changed, stopped, started and deleted at run time
 * (refused while running instances use it), with every bad setting refused
 * naming its field. The simulated exchange itself: the same seed gives the
 * same market, and every event kind arrives in its documented cadence and
 * shape, in order.
 */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void expect_refused(struct tu_server *srv, const char *method, const char *path, long status,
                           const char *field, const char *body)
{
    json_t *err = tu_call(srv, method, path, status, body);
    if (field) {
        const char *named = json_string_value(tu_jget(err, "details.field"));
        if (!named || strcmp(named, field) != 0)
            fail_msg("%s %s with %s: expected details.field '%s', got %s", method, path,
                     body ? body : "", field, named ? named : "none");
    }
    json_decref(err);
}

static void check_provider_shape(const json_t *p)
{
    assert_true(json_is_string(json_object_get(p, "name")));
    assert_string_equal(tu_jstr(p, "adapter"), "simulated");
    assert_string_equal(tu_jstr(p, "identifier"), "simulated");
    assert_true(json_is_integer(json_object_get(p, "instrumentCount")));
    assert_true(json_is_object(json_object_get(p, "settings")));
    assert_true(json_is_boolean(json_object_get(p, "running")));
    const char *status = tu_jstr(p, "status");
    assert_true(strcmp(status, "pending") == 0 || strcmp(status, "starting") == 0 ||
                strcmp(status, "running") == 0 || strcmp(status, "stopped") == 0 ||
                strcmp(status, "failed") == 0);
}

/* The first provider reports "running": it starts on its own thread and may
 * still be "starting" when the server listens. */
static bool first_provider_running(void *srv)
{
    json_t *list = tu_get_json(srv, 200, "/providers");
    const char *status = json_string_value(tu_jget(list, "providers.0.status"));
    bool running = status && strcmp(status, "running") == 0;
    json_decref(list);
    return running;
}

static void test_default_provider_and_adapter(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    (void)tu_ops_wait_until(first_provider_running, srv, TU_WAIT_S);
    json_t *list = tu_get_json(srv, 200, "/providers");
    json_t *providers = json_object_get(list, "providers");
    assert_int_equal(json_array_size(providers), 1);
    json_t *sim = json_array_get(providers, 0);
    check_provider_shape(sim);
    assert_string_equal(tu_jstr(sim, "name"), "sim");
    assert_int_equal(tu_jint(sim, "instrumentCount"), 2);
    assert_string_equal(tu_jstr(sim, "settings.symbols.0"), "BTC-USDT");
    assert_string_equal(tu_jstr(sim, "settings.symbols.1"), "ETH-USDT");
    assert_true(json_is_true(json_object_get(sim, "running")));
    assert_string_equal(tu_jstr(sim, "status"), "running");
    assert_int_equal(tu_jint(sim, "dependentInstanceCount"), 0);
    assert_int_equal(json_array_size(json_object_get(sim, "dependentInstances")), 0);
    json_decref(list);

    json_t *detail = tu_get_json(srv, 200, "/providers/sim");
    check_provider_shape(detail);
    json_t *instruments = json_object_get(detail, "instruments");
    assert_int_equal(json_array_size(instruments), 2);
    assert_string_equal(tu_jstr(instruments, "0.symbol"), "BTC-USDT");
    assert_string_equal(tu_jstr(instruments, "0.baseAsset"), "BTC");
    assert_string_equal(tu_jstr(instruments, "0.quoteAsset"), "USDT");
    assert_string_equal(tu_jstr(instruments, "1.symbol"), "ETH-USDT");
    assert_true(json_is_string(tu_jget(instruments, "1.type")));
    /* the effective settings: every default filled in */
    json_t *settings = json_object_get(detail, "settings");
    assert_int_equal(tu_jint(settings, "seed"), 1);
    assert_true(json_number_value(json_object_get(settings, "tickRate")) == 10);
    assert_int_equal(tu_jint(settings, "bookDepth"), 10);
    assert_true(json_number_value(json_object_get(settings, "feeRate")) == 0.001);
    assert_true(json_number_value(json_object_get(settings, "volatility")) == 0.0005);
    assert_true(json_number_value(tu_jget(settings, "startPrices.BTC-USDT")) == 50000);
    assert_true(json_number_value(tu_jget(settings, "startPrices.ETH-USDT")) == 3000);
    json_decref(detail);

    json_t *adapters = tu_get_json(srv, 200, "/adapters");
    assert_int_equal(json_array_size(json_object_get(adapters, "adapters")), 1);
    json_t *adapter = tu_get_json(srv, 200, "/adapters/simulated");
    assert_true(json_equal(adapter, tu_jget(adapters, "adapters.0")));
    assert_string_equal(tu_jstr(adapter, "identifier"), "simulated");
    assert_true(json_is_string(json_object_get(adapter, "displayName")));
    assert_true(json_is_string(json_object_get(adapter, "venue")));
    assert_true(json_is_array(json_object_get(adapter, "capabilities")));
    static const char *const names[] = {"symbols",    "seed",        "tickRate",
                                        "volatility", "startPrices", "bookDepth",
                                        "balances",   "feeRate",     "strictIncrements"};
    json_t *schema = json_object_get(adapter, "settingsSchema");
    assert_int_equal(json_array_size(schema), 9);
    for (size_t i = 0; i < 9; i++) {
        json_t *field = json_array_get(schema, i);
        assert_string_equal(tu_jstr(field, "name"), names[i]);
        assert_true(json_is_string(json_object_get(field, "type")));
        assert_true(json_is_boolean(json_object_get(field, "required")));
        assert_non_null(json_object_get(field, "default"));
    }
    json_decref(adapter);
    json_decref(adapters);

    json_t *bal = tu_get_json(srv, 200, "/providers/sim/balances");
    json_t *records = json_object_get(bal, "balances");
    assert_int_equal(tu_jint(bal, "count"), (long long)json_array_size(records));
    size_t i;
    json_t *b;
    json_array_foreach(records, i, b)
    {
        const char *asset = tu_jstr(b, "asset");
        double total = strtod(tu_jstr(b, "total"), NULL);
        assert_string_equal(tu_jstr(b, "provider"), "sim");
        assert_true(json_is_string(json_object_get(b, "available")));
        assert_true(json_is_integer(json_object_get(b, "snapshotAt")));
        assert_true(json_is_integer(json_object_get(b, "createdAt")));
        assert_true(json_is_integer(json_object_get(b, "updatedAt")));
        if (strcmp(asset, "USDT") == 0)
            assert_true(total == 100000);
        else
            assert_true(total == 1);
    }
    assert_int_equal(json_array_size(records), 3);
    json_decref(bal);

    expect_refused(srv, "GET", "/adapters/binance", 404, NULL, NULL);
    expect_refused(srv, "GET", "/providers/nowhere", 404, NULL, NULL);
    expect_refused(srv, "GET", "/providers/nowhere/balances", 404, NULL, NULL);
    expect_refused(srv, "POST", "/providers/nowhere/start", 404, NULL, NULL);
    expect_refused(srv, "POST", "/providers/nowhere/stop", 404, NULL, NULL);
    expect_refused(srv, "DELETE", "/providers/nowhere", 404, NULL, NULL);
    tu_server_stop(srv);
}

static bool events_grow(const json_t *snap, const void *arg)
{
    return tu_jint(snap, "counters.eventsDelivered") >= *(const long long *)arg;
}

static void test_second_market_at_run_time(void **state)
{
    struct tu_server *srv = *state;
    struct tu_server_options opts = {.seed_examples = true};
    tu_server_start(srv, &opts);
    const char *alt = "{\"name\": \"alt\", \"adapter\": {\"identifier\": \"simulated\", "
                      "\"config\": {\"symbols\": [\"SOL-USDT\", \"ADA-USDT\"], \"seed\": 3, "
                      "\"tickRate\": 200, \"startPrices\": {\"SOL-USDT\": 150}, "
                      "\"balances\": {\"USDT\": 500, \"SOL\": 2}}}, \"enabled\": true}";
    json_t *detail = tu_call(srv, "POST", "/providers", 202, alt);
    check_provider_shape(detail);
    assert_string_equal(tu_jstr(detail, "name"), "alt");
    assert_int_equal(tu_jint(detail, "instrumentCount"), 2);
    assert_string_equal(tu_jstr(detail, "instruments.0.symbol"), "SOL-USDT");
    assert_string_equal(tu_jstr(detail, "instruments.1.symbol"), "ADA-USDT");
    assert_true(json_number_value(tu_jget(detail, "settings.startPrices.SOL-USDT")) == 150);
    assert_true(json_number_value(tu_jget(detail, "settings.startPrices.ADA-USDT")) == 100);
    assert_int_equal(tu_jint(detail, "settings.bookDepth"), 10);
    json_decref(detail);
    json_t *list = tu_get_json(srv, 200, "/providers");
    assert_int_equal(json_array_size(json_object_get(list, "providers")), 2);
    assert_string_equal(tu_jstr(list, "providers.0.name"), "alt");
    assert_string_equal(tu_jstr(list, "providers.1.name"), "sim");
    json_decref(list);
    json_t *bal = tu_get_json(srv, 200, "/providers/alt/balances?asset=SOL");
    assert_int_equal(tu_jint(bal, "count"), 1);
    assert_true(strtod(tu_jstr(bal, "balances.0.total"), NULL) == 2);
    json_decref(bal);

    /* every refusal names its field; nothing changes */
    expect_refused(srv, "POST", "/providers", 409, NULL, alt);
    expect_refused(srv, "POST", "/providers", 400, "adapter.config.tickRate",
                   "{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\", \"config\": "
                   "{\"tickRate\": -1}}}");
    expect_refused(srv, "POST", "/providers", 400, "adapter.config.speed",
                   "{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\", \"config\": "
                   "{\"speed\": 5}}}");
    expect_refused(srv, "POST", "/providers", 400, "adapter.config.symbols[1]",
                   "{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\", \"config\": "
                   "{\"symbols\": [\"BTC-USDT\", \"BTCUSDT\"]}}}");
    expect_refused(srv, "POST", "/providers", 400, "adapter.config.volatility",
                   "{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\", \"config\": "
                   "{\"volatility\": 2}}}");
    expect_refused(srv, "POST", "/providers", 400, "adapter.config.startPrices.XRP-USDT",
                   "{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\", \"config\": "
                   "{\"startPrices\": {\"XRP-USDT\": 1}}}}");
    expect_refused(srv, "POST", "/providers", 400, "config",
                   "{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\"}, "
                   "\"config\": {\"tickRate\": 1}}");
    expect_refused(srv, "POST", "/providers", 400, "adapter.config.startPrices.BTC-USDT",
                   "{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\", \"config\": "
                   "{\"startPrices\": {\"BTC-USDT\": 1e-30}}}}");
    expect_refused(srv, "POST", "/providers", 400, "adapter.config.bookDepth",
                   "{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\", \"config\": "
                   "{\"bookDepth\": 0}}}");
    expect_refused(srv, "POST", "/providers", 400, "adapter.config.feeRate",
                   "{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\", \"config\": "
                   "{\"feeRate\": \"low\"}}}");
    expect_refused(srv, "POST", "/providers", 400, "name",
                   "{\"name\": \"bad name\", \"adapter\": {\"identifier\": \"simulated\"}}");
    expect_refused(srv, "POST", "/providers", 404, NULL,
                   "{\"name\": \"x\", \"adapter\": {\"identifier\": \"binance\", \"config\": {}}}");
    expect_refused(srv, "PUT", "/providers/alt", 400, "name",
                   "{\"name\": \"other\", \"adapter\": {\"identifier\": \"simulated\", "
                   "\"config\": {}}}");
    expect_refused(srv, "GET", "/providers/x", 404, NULL, NULL);

    /* an instance across both markets hears both and trades on the new one */
    char *src = tu_strategy_source(
        "both", "['Trade', 'ExecReport']", "[]", "const seen = {}; let sent = false;",
        "onTrade(ctx) {\n"
        "  const key = ctx.provider + '/' + ctx.symbol;\n"
        "  seen[key] = (seen[key] || 0) + 1;\n"
        "  if (Object.keys(seen).length === 3 && !sent) {\n"
        "    sent = true;\n"
        "    h.log('seen', {keys: Object.keys(seen).sort(), providers: rt.providers(),\n"
        "      sol: rt.getLastPrice('SOL-USDT'), first: rt.getMarketState()});\n"
        "    rt.submitMarketOrder('alt', 'buy', 1, 'SOL-USDT');\n"
        "  }\n"
        "},\n"
        "onOrderFilled(ctx, evt, r) { h.log('filled', {provider: ctx.provider, symbol: "
        "ctx.symbol, id: r.clientOrderId}); },");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    expect_refused(srv, "POST", "/strategy/instances", 400, "scope.alt.symbols",
                   "{\"id\": \"both-1\", \"strategy\": {\"identifier\": \"both\", \"config\": "
                   "{}}, \"scope\": {\"alt\": {\"symbols\": [\"BTC-USDT\"]}}}");
    json_decref(tu_call(srv, "POST", "/strategy/instances", 201,
                        "{\"id\": \"both-1\", \"strategy\": {\"identifier\": \"both\", "
                        "\"config\": {\"dry_run\": false}}, \"scope\": {\"alt\": {\"symbols\": "
                        "[\"SOL-USDT\", \"ADA-USDT\"]}, \"sim\": {\"symbols\": [\"BTC-USDT\"]}}}"));
    tu_instance_start(srv, "both-1");
    json_t *seen = tu_wait_log_values(srv, "both-1", "seen", 1, TU_WAIT_S);
    assert_string_equal(tu_jstr(seen, "0.keys.0"), "alt/ADA-USDT");
    assert_string_equal(tu_jstr(seen, "0.keys.1"), "alt/SOL-USDT");
    assert_string_equal(tu_jstr(seen, "0.keys.2"), "sim/BTC-USDT");
    assert_int_equal(json_array_size(tu_jget(seen, "0.providers")), 2);
    double sol = json_number_value(tu_jget(seen, "0.sol"));
    assert_true(sol > 100 && sol < 200);
    /* the first scoped symbol is SOL-USDT */
    double first = json_number_value(tu_jget(seen, "0.first.last"));
    assert_true(first > 100 && first < 200);
    json_decref(seen);
    json_t *filled = tu_wait_log_values(srv, "both-1", "filled", 1, TU_WAIT_S);
    assert_string_equal(tu_jstr(filled, "0.provider"), "alt");
    assert_string_equal(tu_jstr(filled, "0.symbol"), "SOL-USDT");
    json_decref(filled);
    json_t *hist =
        tu_wait_list(srv, "/strategy/instances/both-1/orders?provider=alt", "orders", 1, TU_WAIT_S);
    assert_int_equal(tu_jint(hist, "count"), 1);
    assert_string_equal(tu_jstr(hist, "orders.0.provider"), "alt");
    json_decref(hist);
    hist = tu_get_json(srv, 200, "/strategy/instances/both-1/orders?provider=sim");
    assert_int_equal(tu_jint(hist, "count"), 0);
    json_decref(hist);
    /* the live buy moved alt's balances, not sim's */
    for (int tries = 0;; tries++) {
        bal = tu_get_json(srv, 200, "/providers/alt/balances?asset=SOL");
        double total = strtod(tu_jstr(bal, "balances.0.total"), NULL);
        json_decref(bal);
        if (total == 3)
            break;
        if (tries > TU_WAIT_S * 50)
            fail_msg("alt's SOL balance is %g, expected 3", total);
        tu_sleep_ms(20);
    }
    bal = tu_get_json(srv, 200, "/providers/sim/balances?asset=USDT");
    assert_true(strtod(tu_jstr(bal, "balances.0.total"), NULL) == 100000);
    json_decref(bal);

    /* dependents, and no delete while one runs */
    detail = tu_get_json(srv, 200, "/providers/alt");
    assert_int_equal(tu_jint(detail, "dependentInstanceCount"), 1);
    assert_string_equal(tu_jstr(detail, "dependentInstances.0"), "both-1");
    json_decref(detail);
    json_t *err = tu_call(srv, "DELETE", "/providers/alt", 409, NULL);
    assert_string_equal(tu_jstr(err, "details.instances.0"), "both-1");
    json_decref(err);

    /* stop and start: no events while stopped, events again after */
    detail = tu_call(srv, "POST", "/providers/sim/stop", 200, NULL);
    assert_true(json_is_false(json_object_get(detail, "running")));
    assert_string_equal(tu_jstr(detail, "status"), "stopped");
    json_decref(detail);
    detail = tu_call(srv, "POST", "/providers/alt/stop", 200, NULL);
    json_decref(detail);
    /* (events published before the stop may still be queued a moment) */
    tu_sleep_ms(300);
    json_t *snap = tu_instance_get(srv, "both-1");
    long long frozen = tu_jint(snap, "counters.eventsDelivered");
    json_decref(snap);
    tu_sleep_ms(300);
    snap = tu_instance_get(srv, "both-1");
    assert_int_equal(tu_jint(snap, "counters.eventsDelivered"), frozen);
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    /* a running instance fed by a stopped provider is a problem /healthz
     * names, until the provider runs again */
    json_t *health = tu_get_json(srv, 200, "/healthz");
    assert_string_equal(tu_jstr(health, "status"), "degraded");
    char *problems = json_dumps(json_object_get(health, "problems"), JSON_COMPACT);
    if (!strstr(problems, "provider 'alt' is stopped while 1 running instance uses it"))
        fail_msg("/healthz with provider alt stopped under both-1: %s", problems);
    free(problems);
    json_decref(health);
    detail = tu_call(srv, "POST", "/providers/alt/start", 202, NULL);
    assert_true(json_is_true(json_object_get(detail, "running")));
    json_decref(detail);
    health = tu_get_json(srv, 200, "/healthz");
    problems = json_dumps(json_object_get(health, "problems"), JSON_COMPACT);
    if (problems && strstr(problems, "'alt'"))
        fail_msg("/healthz still names alt once it runs again: %s", problems);
    free(problems);
    json_decref(health);
    long long more = frozen + 20;
    json_decref(tu_instance_wait(srv, "both-1", events_grow, &more, TU_WAIT_S, "events again"));

    /* an update restarts the market with its new settings */
    detail = tu_call(srv, "PUT", "/providers/sim", 200,
                     "{\"adapter\": {\"identifier\": \"simulated\", \"config\": {\"symbols\": "
                     "[\"BTC-USDT\", \"ETH-USDT\"], \"tickRate\": 300}}, \"enabled\": true}");
    assert_true(json_number_value(tu_jget(detail, "settings.tickRate")) == 300);
    assert_true(json_is_true(json_object_get(detail, "running")));
    json_decref(detail);

    /* once the instance stops, the market can go */
    tu_instance_stop(srv, "both-1");
    json_t *gone = tu_call(srv, "DELETE", "/providers/alt", 200, NULL);
    assert_string_equal(tu_jstr(gone, "status"), "deleted");
    assert_string_equal(tu_jstr(gone, "name"), "alt");
    json_decref(gone);
    expect_refused(srv, "GET", "/providers/alt", 404, NULL, NULL);
    /* the audit log says what the update and the delete replaced */
    json_t *audit = tu_audit_entries(srv);
    bool updated = false, deleted = false;
    size_t k;
    json_t *e;
    json_array_foreach(audit, k, e)
    {
        const char *action = tu_jstr(e, "action");
        if (strcmp(action, "provider.update") == 0) {
            assert_true(json_number_value(tu_jget(e, "from.adapter.config.tickRate")) != 300);
            assert_true(json_number_value(tu_jget(e, "spec.adapter.config.tickRate")) == 300);
            updated = true;
        } else if (strcmp(action, "provider.delete") == 0) {
            assert_string_equal(tu_jstr(e, "from.name"), "alt");
            deleted = true;
        }
    }
    assert_true(updated && deleted);
    json_decref(audit);
    /* an instance of a market that is gone does not start (it would hear
     * nothing); the refusal changes nothing */
    expect_refused(srv, "POST", "/strategy/instances/both-1/start", 400, "scope.alt", "{}");
    snap = tu_instance_get(srv, "both-1");
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "stopReason"), "stopped");
    json_decref(snap);
    list = tu_get_json(srv, 200, "/providers");
    assert_int_equal(json_array_size(json_object_get(list, "providers")), 1);
    json_decref(list);

    /* tickRate 0: unpaced, as fast as the consumers take the events (a
     * paced market at the default 10 ticks a second would need minutes) */
    json_decref(tu_call(srv, "POST", "/providers", 202,
                        "{\"name\": \"flood\", \"adapter\": {\"identifier\": \"simulated\", "
                        "\"config\": {\"symbols\": [\"BTC-USDT\"], \"tickRate\": 0}}, "
                        "\"enabled\": false}"));
    json_decref(tu_instance_create(srv, "drinker", "noop", NULL, "flood", NULL));
    tu_instance_start(srv, "drinker");
    json_decref(tu_call(srv, "POST", "/providers/flood/start", 202, NULL));
    json_decref(tu_instance_wait_events(srv, "drinker", 5000, TU_WAIT_S));
    tu_instance_stop(srv, "drinker");
    json_decref(tu_call(srv, "DELETE", "/providers/flood", 200, NULL));

    /* created disabled: there, not running, until started */
    detail = tu_call(srv, "POST", "/providers", 202,
                     "{\"name\": \"later\", \"adapter\": {\"identifier\": \"simulated\", "
                     "\"config\": {\"symbols\": [\"DOT-USDT\"]}}, \"enabled\": false}");
    assert_true(json_is_false(json_object_get(detail, "running")));
    json_decref(detail);
    detail = tu_call(srv, "POST", "/providers/later/start", 202, NULL);
    assert_true(json_is_true(json_object_get(detail, "running")));
    json_decref(detail);
    tu_server_stop(srv);
}

/* A start, the delete of its provider and the create of another instance
 * on it, sent at once: whichever wins, a provider is never deleted from
 * under a running instance, and a delete that is refused refuses nothing
 * else. */
struct race_call {
    const char *method;
    char url[256];
    char body[256];
    long status;
};

static void *race_send(void *arg)
{
    struct race_call *c = arg;
    struct tu_response res;
    struct tu_request_options opts = {.body = c->method[0] == 'P' ? c->body : NULL,
                                      .body_len = c->method[0] == 'P' ? strlen(c->body) : 0};
    c->status = tu_http_try(&res, c->method, c->url, &opts) == 0 ? res.status : -1;
    tu_response_free(&res);
    return NULL;
}

static void test_delete_never_leaves_a_running_instance(void **state)
{
    struct tu_server *srv = *state;
    struct tu_server_options opts = {.seed_examples = true};
    tu_server_start(srv, &opts);
    int deleted = 0, refused = 0;
    for (int i = 0; i < 20; i++) {
        char name[32], id[32], body[256];
        snprintf(name, sizeof name, "race%d", i);
        snprintf(id, sizeof id, "race-i%d", i);
        snprintf(body, sizeof body,
                 "{\"name\": \"%s\", \"adapter\": {\"identifier\": \"simulated\", "
                 "\"config\": {\"symbols\": [\"BTC-USDT\"]}}}",
                 name);
        json_decref(tu_call(srv, "POST", "/providers", 202, body));
        json_decref(tu_instance_create(srv, id, "noop", NULL, name, NULL));
        struct race_call calls[3] = {
            {.method = "POST", .body = "{}"}, {.method = "DELETE"}, {.method = "POST"}};
        snprintf(calls[0].url, sizeof calls[0].url, "%s/strategy/instances/%s/start", srv->base_url,
                 id);
        snprintf(calls[1].url, sizeof calls[1].url, "%s/providers/%s", srv->base_url, name);
        snprintf(calls[2].url, sizeof calls[2].url, "%s/strategy/instances", srv->base_url);
        snprintf(calls[2].body, sizeof calls[2].body,
                 "{\"id\": \"%s-c\", \"strategy\": {\"selector\": \"noop\"}, "
                 "\"scope\": {\"%s\": {\"symbols\": [\"BTC-USDT\"]}}}",
                 id, name);
        pthread_t threads[3];
        for (int k = 0; k < 3; k++)
            assert_int_equal(pthread_create(&threads[k], NULL, race_send, &calls[k]), 0);
        for (int k = 0; k < 3; k++)
            pthread_join(threads[k], NULL);
        if (calls[1].status != 200 && calls[2].status != 201)
            fail_msg("round %d: the refused delete of %s refused a create on it too (%ld)", i, name,
                     calls[2].status);
        json_t *snap = tu_instance_get(srv, id);
        bool running = json_is_true(json_object_get(snap, "running"));
        json_decref(snap);
        if (calls[1].status == 200) {
            deleted++;
            if (running)
                fail_msg("round %d: %s runs on the deleted provider %s (start %ld)", i, id, name,
                         calls[0].status);
        } else {
            assert_int_equal(calls[1].status, 409);
            assert_true(running);
            refused++;
            tu_instance_stop(srv, id);
            char path[64];
            snprintf(path, sizeof path, "/providers/%s", name);
            json_decref(tu_call(srv, "DELETE", path, 200, NULL));
        }
    }
    print_message("deletes that won: %d, refused: %d\n", deleted, refused);
    tu_server_stop(srv);
}

/* Records, from the first event on, the kinds and trade prices per
 * provider; at the 100th trade of a provider it logs what it saw. */
static const char *const recorder_setup =
    "const per = {};\n"
    "const get = (ctx) => per[ctx.provider] ??\n"
    "  (per[ctx.provider] = {kinds: {}, prices: [], first: {}, seqOk: true, seq: 0});\n"
    "const note = (ctx, evt, payload) => {\n"
    "  const p = get(ctx);\n"
    "  p.kinds[evt.type] = (p.kinds[evt.type] || 0) + 1;\n"
    "  if (!(evt.type in p.first)) p.first[evt.type] = {ctx, payload};\n"
    "  if (evt.seq <= p.seq) p.seqOk = false;\n"
    "  p.seq = evt.seq;\n"
    "  return p;\n"
    "};\n";

static const char *const recorder_handlers =
    "onTrade(ctx, evt, payload) {\n"
    "  const p = note(ctx, evt, payload);\n"
    "  p.prices.push(payload.price);\n"
    "  if (p.prices.length === 100)\n"
    "    h.log('record', {provider: ctx.provider, kinds: p.kinds, prices: p.prices,\n"
    "      first: p.first, seqOk: p.seqOk});\n"
    "},\n"
    "onTicker: note, onBookSnapshot: note, onKlineSummary: note,\n"
    "onInstrumentUpdate: note, onBalanceUpdate: note,\n";

static void test_seeded_markets_are_deterministic(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *src = tu_strategy_source(
        "recorder",
        "['Trade', 'Ticker', 'BookSnapshot', 'KlineSummary', 'InstrumentUpdate', "
        "'BalanceUpdate']",
        "[]", recorder_setup, recorder_handlers);
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    static const char *const names[] = {"twin-a", "twin-b", "other"};
    static const int seeds[] = {42, 42, 43};
    for (int i = 0; i < 3; i++) {
        char *body = tu_path("{\"name\": \"%s\", \"adapter\": {\"identifier\": \"simulated\", "
                             "\"config\": {\"symbols\": [\"BTC-USDT\"], \"seed\": %d, "
                             "\"tickRate\": 500, \"volatility\": 0.001, \"bookDepth\": 4}}, "
                             "\"enabled\": false}",
                             names[i], seeds[i]);
        json_decref(tu_call(srv, "POST", "/providers", 202, body));
        free(body);
    }
    /* the recorder listens before the markets open, so it sees them from
     * their first event */
    json_decref(tu_call(srv, "POST", "/strategy/instances", 201,
                        "{\"id\": \"rec\", \"strategy\": {\"identifier\": \"recorder\", "
                        "\"config\": {}}, \"scope\": {\"twin-a\": {\"symbols\": [\"BTC-USDT\"]}, "
                        "\"twin-b\": {\"symbols\": [\"BTC-USDT\"]}, \"other\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}"));
    tu_instance_start(srv, "rec");
    for (int i = 0; i < 3; i++) {
        char *path = tu_path("/providers/%s/start", names[i]);
        json_decref(tu_call(srv, "POST", path, 202, NULL));
        free(path);
    }
    json_t *records = tu_wait_log_values(srv, "rec", "record", 3, TU_WAIT_S);
    const json_t *by[3] = {NULL, NULL, NULL};
    size_t i;
    json_t *r;
    json_array_foreach(records, i, r)
    {
        for (int k = 0; k < 3; k++) {
            if (strcmp(tu_jstr(r, "provider"), names[k]) == 0)
                by[k] = r;
        }
    }
    for (int k = 0; k < 3; k++) {
        if (!by[k])
            fail_msg("no record from %s", names[k]);
        const json_t *rec = by[k];
        assert_true(json_is_true(json_object_get(rec, "seqOk")));
        /* the documented cadence, up to the 100th trade (tick 99): an
         * InstrumentUpdate and one BalanceUpdate per asset first, then per
         * tick a Trade and a Ticker, a BookSnapshot every 5th tick from tick
         * 0, a KlineSummary closing every 50 ticks */
        assert_int_equal(tu_jint(rec, "kinds.Trade"), 100);
        assert_int_equal(tu_jint(rec, "kinds.Ticker"), 99);
        assert_int_equal(tu_jint(rec, "kinds.BookSnapshot"), 20);
        assert_int_equal(tu_jint(rec, "kinds.KlineSummary"), 1);
        assert_int_equal(tu_jint(rec, "kinds.InstrumentUpdate"), 1);
        assert_int_equal(tu_jint(rec, "kinds.BalanceUpdate"), 2);
        /* shapes */
        const json_t *f = json_object_get(rec, "first");
        assert_string_equal(tu_jstr(f, "Ticker.ctx.symbol"), "BTC-USDT");
        double bid = json_number_value(tu_jget(f, "Ticker.payload.bid"));
        double ask = json_number_value(tu_jget(f, "Ticker.payload.ask"));
        assert_true(bid > 0 && ask > bid);
        assert_true(json_is_number(tu_jget(f, "Ticker.payload.bidSize")));
        assert_true(json_is_number(tu_jget(f, "Ticker.payload.askSize")));
        assert_true(json_is_number(tu_jget(f, "Ticker.payload.volume")));
        const json_t *bids = tu_jget(f, "BookSnapshot.payload.bids");
        const json_t *asks = tu_jget(f, "BookSnapshot.payload.asks");
        assert_int_equal(json_array_size(bids), 4);
        assert_int_equal(json_array_size(asks), 4);
        for (size_t l = 1; l < 4; l++) {
            assert_true(json_number_value(json_array_get(json_array_get(bids, l), 0)) <
                        json_number_value(json_array_get(json_array_get(bids, l - 1), 0)));
            assert_true(json_number_value(json_array_get(json_array_get(asks, l), 0)) >
                        json_number_value(json_array_get(json_array_get(asks, l - 1), 0)));
        }
        assert_true(json_number_value(json_array_get(json_array_get(bids, 0), 0)) <
                    json_number_value(json_array_get(json_array_get(asks, 0), 0)));
        assert_int_equal(tu_jint(f, "KlineSummary.payload.trades"), 50);
        assert_true(json_number_value(tu_jget(f, "KlineSummary.payload.high")) >=
                    json_number_value(tu_jget(f, "KlineSummary.payload.low")));
        assert_true(json_is_integer(tu_jget(f, "KlineSummary.payload.start")));
        assert_true(json_is_true(tu_jget(f, "InstrumentUpdate.payload.trading")));
        assert_true(json_number_value(tu_jget(f, "InstrumentUpdate.payload.tickSize")) > 0);
        assert_true(json_is_null(tu_jget(f, "BalanceUpdate.ctx.symbol")));
        assert_true(json_is_string(tu_jget(f, "BalanceUpdate.payload.asset")));
        assert_true(json_is_number(tu_jget(f, "BalanceUpdate.payload.total")));
        assert_true(json_number_value(tu_jget(f, "Trade.payload.price")) > 0);
    }
    /* the same seed, the same market; another seed, another market */
    assert_true(json_equal(json_object_get(by[0], "prices"), json_object_get(by[1], "prices")));
    assert_false(json_equal(json_object_get(by[0], "prices"), json_object_get(by[2], "prices")));
    /* and the prices do move */
    const json_t *prices = json_object_get(by[0], "prices");
    double lo = INFINITY, hi = -INFINITY;
    json_t *p;
    json_array_foreach(prices, i, p)
    {
        lo = fmin(lo, json_number_value(p));
        hi = fmax(hi, json_number_value(p));
    }
    assert_true(hi > lo);
    json_decref(records);
    tu_server_stop(srv);
}

/* A market that has just opened serves quotes and orders to the strategies
 * handling its very first events; execution reports reach the instance
 * that ordered, even though it subscribed to trades only. */
static void test_first_events_can_quote_and_order(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *src = tu_strategy_source(
        "opener", "['Trade']", "[]", "let first = true;",
        "onTrade(ctx, evt, p) {\n"
        "  if (!first) return;\n"
        "  first = false;\n"
        "  let order;\n"
        "  try { order = rt.submitMarketOrder(ctx.provider, 'buy', 0.01); }\n"
        "  catch (e) { order = String(e); }\n"
        "  h.log('first', {trade: p.tradeId, active: rt.isTradingActive(),\n"
        "    last: rt.getLastPrice(), state: rt.getMarketState(), order});\n"
        "},\n"
        "onOrderFilled(ctx, evt, r) { h.log('filled', {id: r.clientOrderId}); },");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    for (int i = 0; i < 6; i++) {
        char *body =
            tu_path("{\"name\": \"open%d\", \"adapter\": {\"identifier\": "
                    "\"simulated\", \"config\": {\"symbols\": [\"BTC-USDT\"], \"seed\": %d, "
                    "\"tickRate\": 200}}, \"enabled\": false}",
                    i, i + 1);
        json_decref(tu_call(srv, "POST", "/providers", 202, body));
        free(body);
        char id[16], provider[16];
        snprintf(id, sizeof id, "opener-%d", i);
        snprintf(provider, sizeof provider, "open%d", i);
        json_decref(tu_instance_create(srv, id, "opener", NULL, provider, NULL));
        tu_instance_start(srv, id);
    }
    for (int i = 0; i < 6; i++) {
        char *path = tu_path("/providers/open%d/start", i);
        json_decref(tu_call(srv, "POST", path, 202, NULL));
        free(path);
    }
    for (int i = 0; i < 6; i++) {
        char id[16];
        snprintf(id, sizeof id, "opener-%d", i);
        json_t *first = tu_wait_log_values(srv, id, "first", 1, TU_WAIT_S);
        json_t *f = json_array_get(first, 0);
        assert_int_equal(tu_jint(f, "trade"), 1);
        assert_true(json_is_true(json_object_get(f, "active")));
        assert_true(json_number_value(json_object_get(f, "last")) > 0);
        assert_true(json_is_object(json_object_get(f, "state")));
        char *expected = tu_path("%s-1", id);
        if (!json_is_string(json_object_get(f, "order")) ||
            strcmp(tu_jstr(f, "order"), expected) != 0)
            fail_msg("%s could not order on the market's first trade: %s", id,
                     json_dumps(f, JSON_COMPACT));
        free(expected);
        json_decref(first);
        json_decref(tu_wait_log_values(srv, id, "filled", 1, TU_WAIT_S));
    }
    tu_server_stop(srv);
}

static bool provider_running(struct tu_server *srv, const char *name)
{
    json_t *p = tu_get_json(srv, 200, "/providers/%s", name);
    bool running = json_is_true(json_object_get(p, "running"));
    json_decref(p);
    return running;
}

/* A provider stopped over the API (answered and audited) ran again after
 * any restart of the gateway: the stop now lasts until a start, for a
 * provider of the configuration as for one created over the API. */
static void test_stop_and_start_outlast_a_restart(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    json_decref(tu_call(srv, "POST", "/providers", 202,
                        "{\"name\": \"p2\", \"adapter\": {\"identifier\": \"simulated\", "
                        "\"config\": {\"symbols\": [\"BTC-USDT\"]}}, \"enabled\": true}"));
    json_decref(tu_call(srv, "POST", "/providers/p2/stop", 200, NULL));
    json_decref(tu_call(srv, "POST", "/providers/sim/stop", 200, NULL));
    tu_server_stop(srv);
    tu_server_restart(srv, NULL);
    assert_false(provider_running(srv, "p2"));
    assert_false(provider_running(srv, "sim"));
    json_t *backup = tu_get_json(srv, 200, "/context/backup");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(backup, "providers"), i, p)
    {
        if (!json_is_false(json_object_get(p, "enabled")))
            fail_msg("provider %s is enabled in the backup after its stop and a restart",
                     tu_jstr(p, "name"));
    }
    json_decref(backup);
    json_decref(tu_call(srv, "POST", "/providers/p2/start", 202, NULL));
    tu_server_kill(srv);
    tu_server_restart(srv, NULL);
    assert_true(provider_running(srv, "p2"));
    assert_false(provider_running(srv, "sim"));
    tu_server_stop(srv);
}

/* evt.seq numbers the events of a provider's session: it only grows
 * while the provider runs, and starts again at the provider's next start,
 * whose first events (its instruments) carry the session's first numbers. */
static void test_seq_numbers_a_provider_session(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    json_decref(tu_call(srv, "POST", "/providers", 202,
                        "{\"name\": \"seqp\", \"adapter\": {\"identifier\": \"simulated\", "
                        "\"config\": {\"symbols\": [\"BTC-USDT\"], \"tickRate\": 200}}, "
                        "\"enabled\": true}"));
    char *src = tu_strategy_source(
        "sequenced", "['Trade', 'InstrumentUpdate']", "[]", "let last = 0, trades = 0;",
        "onTrade(ctx, evt) {\n"
        "  if (evt.seq <= last) h.log('back', {before: last, now: evt.seq, type: evt.type});\n"
        "  last = evt.seq;\n"
        "  if (++trades % 20 === 0) h.log('trades', {seq: evt.seq});\n"
        "},\n"
        "onInstrumentUpdate(ctx, evt, p) {\n"
        "  if (evt.seq <= last) h.log('back', {before: last, now: evt.seq, type: evt.type,\n"
        "    trading: p.trading});\n"
        "  last = evt.seq;\n"
        "},\n");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    json_decref(tu_instance_create(srv, "seq-1", "sequenced", NULL, "seqp", NULL));
    tu_instance_start(srv, "seq-1");
    json_decref(tu_wait_log_values(srv, "seq-1", "trades", 1, TU_WAIT_S));
    json_decref(tu_call(srv, "POST", "/providers/seqp/stop", 200, NULL));
    json_decref(tu_call(srv, "POST", "/providers/seqp/start", 202, NULL));
    json_t *back = tu_wait_log_values(srv, "seq-1", "back", 1, TU_WAIT_S);
    json_t *b = json_array_get(back, 0);
    if (strcmp(tu_jstr(b, "type"), "InstrumentUpdate") != 0 ||
        !json_is_true(json_object_get(b, "trading")) || tu_jint(b, "now") < 1 ||
        tu_jint(b, "now") >= 20 || tu_jint(b, "before") < 20)
        fail_msg("the restarted provider's first event is not where its numbers start again: %s",
                 json_dumps(b, JSON_COMPACT));
    json_decref(back);
    /* ...and from there they grow again */
    json_t *trades = tu_wait_log_values(srv, "seq-1", "trades", 3, TU_WAIT_S);
    json_decref(trades);
    back = tu_log_values(srv, "seq-1", "back");
    assert_int_equal(json_array_size(back), 1);
    json_decref(back);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_default_provider_and_adapter, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_second_market_at_run_time, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_delete_never_leaves_a_running_instance,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_seeded_markets_are_deterministic, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_first_events_can_quote_and_order, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_stop_and_start_outlast_a_restart, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_seq_numbers_a_provider_session, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
