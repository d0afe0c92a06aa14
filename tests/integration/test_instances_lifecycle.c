/*
 * Strategy instances over HTTP, from creation to deletion: POST
 * /strategy/instances resolves the selector and pins the hash, creates the
 * instance stopped and answers its snapshot; the listing's summaries; start
 * and stop with their action bodies; PUT (a running instance restarts on
 * the new spec, a refused spec changes nothing); DELETE (a running instance
 * is stopped first); every refusal with its status and the field it names.
 * Then what a running strategy sees: env (config typed and merged with the
 * metadata defaults, metadata, events, helpers, runtime), handler arguments,
 * subscriptions, and exceptions that are logged, counted and survived.
 * Last, compile once: the 1,000th instance of a revision does not compile
 * its source again.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const fast_config = "workers: 2\n"
                                       "providers:\n"
                                       "  - name: sim\n"
                                       "    adapter: simulated\n"
                                       "    config:\n"
                                       "      symbols: [BTC-USDT, ETH-USDT]\n"
                                       "      seed: 11\n"
                                       "      tickRate: 200\n";

static void start_server(struct tu_server *srv)
{
    struct tu_server_options opts = {.config_yaml = fast_config, .seed_examples = true};
    tu_server_start(srv, &opts);
}

static long long events_of(const json_t *snap)
{
    return tu_jint(snap, "counters.eventsDelivered");
}

static size_t instance_count(struct tu_server *srv)
{
    json_t *list = tu_get_json(srv, 200, "/strategy/instances");
    size_t n = json_array_size(json_object_get(list, "instances"));
    json_decref(list);
    return n;
}

/* An error answer that names `field` in details.field. */
static void expect_refused(struct tu_server *srv, const char *method, const char *path, long status,
                           const char *field, const char *body)
{
    json_t *err = tu_call(srv, method, path, status, body);
    if (field) {
        const char *named = json_string_value(tu_jget(err, "details.field"));
        if (!named || strcmp(named, field) != 0)
            fail_msg("%s %s with %s: expected details.field '%s', got %s", method, path, body,
                     field, named ? named : "none");
        const char *message = tu_jstr(err, "error");
        if (!strstr(message, field))
            fail_msg("%s %s: the error '%s' does not name the field '%s'", method, path, message,
                     field);
    }
    json_decref(err);
}

static void expect_spec_refused(struct tu_server *srv, long status, const char *field,
                                const char *body)
{
    expect_refused(srv, "POST", "/strategy/instances", status, field, body);
}

static const char *momentum_hash(struct tu_server *srv)
{
    static char spelled[72];
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/momentum");
    snprintf(spelled, sizeof spelled, "%s", tu_jstr(m, "selectedRevisionHash"));
    json_decref(m);
    return spelled;
}

/* ------------------------------------------------------------ creation */

static void test_create_pins_hash_and_answers_snapshot(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    const char *hash = momentum_hash(srv);

    json_t *snap = tu_callf(srv, "POST", "/strategy/instances", 201,
                            "{\"id\": \"mom-1\", \"strategy\": {\"identifier\": \"momentum\", "
                            "\"config\": {\"lookback\": 6}}, \"scope\": {\"sim\": {\"symbols\": "
                            "[\"ETH-USDT\", \"BTC-USDT\"]}}}");
    assert_string_equal(tu_jstr(snap, "id"), "mom-1");
    assert_string_equal(tu_jstr(snap, "strategy.identifier"), "momentum");
    assert_string_equal(tu_jstr(snap, "strategy.selector"), "momentum");
    assert_string_equal(tu_jstr(snap, "strategy.tag"), "latest");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), hash);
    assert_int_equal(tu_jint(snap, "strategy.config.lookback"), 6);
    assert_int_equal(json_object_size(tu_jget(snap, "strategy.config")), 1);
    assert_string_equal(tu_jstr(snap, "scope.sim.symbols.0"), "ETH-USDT");
    assert_string_equal(tu_jstr(snap, "scope.sim.symbols.1"), "BTC-USDT");
    assert_int_equal(json_array_size(tu_jget(snap, "providers")), 1);
    assert_string_equal(tu_jstr(snap, "providers.0"), "sim");
    assert_int_equal(json_array_size(tu_jget(snap, "aggregatedSymbols")), 2);
    assert_string_equal(tu_jstr(snap, "aggregatedSymbols.0"), "BTC-USDT");
    assert_string_equal(tu_jstr(snap, "aggregatedSymbols.1"), "ETH-USDT");
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_true(json_is_null(json_object_get(snap, "stopReason")));
    assert_true(json_is_null(json_object_get(snap, "lastError")));
    assert_int_equal(tu_jint(snap, "counters.eventsDelivered"), 0);
    assert_int_equal(tu_jint(snap, "counters.handlerErrors"), 0);
    assert_string_equal(tu_jstr(snap, "links.self"), "/strategy/instances/mom-1");
    char *usage_link = tu_path("/strategies/modules/momentum%%40sha256%%3A%s/usage", hash + 7);
    assert_string_equal(tu_jstr(snap, "links.usage"), usage_link);
    assert_string_equal(tu_jstr(snap, "usage.strategy"), "momentum");
    assert_string_equal(tu_jstr(snap, "usage.hash"), hash);
    assert_true(json_is_null(tu_jget(snap, "usage.instances")));
    assert_int_equal(tu_jint(snap, "usage.count"), 0);
    json_decref(snap);

    /* the usage link works and knows the (stopped) pin */
    json_t *usage = tu_get_json(srv, 200, "%s?includeStopped=true", usage_link);
    assert_string_equal(tu_jstr(usage, "hash"), hash);
    json_decref(usage);
    free(usage_link);

    /* the same document comes back from GET */
    snap = tu_instance_get(srv, "mom-1");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), hash);
    assert_true(json_is_false(json_object_get(snap, "running")));
    json_decref(snap);

    /* by tag, and by a 12-digit hash prefix: the tag resolved through, or the
     * revision's primary tag, is stored */
    snap = tu_instance_create(srv, "mom-2", "momentum:v1.0.0", NULL, NULL, NULL);
    assert_string_equal(tu_jstr(snap, "strategy.selector"), "momentum:v1.0.0");
    assert_string_equal(tu_jstr(snap, "strategy.tag"), "v1.0.0");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), hash);
    json_decref(snap);
    char *prefix = tu_path("momentum@%.12s", hash + 7);
    snap = tu_instance_create(srv, "mom-3", prefix, NULL, NULL, NULL);
    assert_string_equal(tu_jstr(snap, "strategy.identifier"), "momentum");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), hash);
    assert_string_equal(tu_jstr(snap, "strategy.tag"), "v1.0.0");
    assert_non_null(strstr(tu_jstr(snap, "strategy.selector"), "momentum@"));
    json_decref(snap);
    free(prefix);

    /* summaries, sorted by id */
    json_t *list = tu_get_json(srv, 200, "/strategy/instances");
    json_t *items = json_object_get(list, "instances");
    assert_int_equal(json_array_size(items), 3);
    assert_string_equal(tu_jstr(items, "0.id"), "mom-1");
    assert_string_equal(tu_jstr(items, "1.id"), "mom-2");
    assert_string_equal(tu_jstr(items, "2.id"), "mom-3");
    json_t *first = json_array_get(items, 0);
    assert_string_equal(tu_jstr(first, "strategyIdentifier"), "momentum");
    assert_string_equal(tu_jstr(first, "strategyTag"), "latest");
    assert_string_equal(tu_jstr(first, "strategyHash"), hash);
    assert_string_equal(tu_jstr(first, "strategySelector"), "momentum");
    assert_string_equal(tu_jstr(first, "providers.0"), "sim");
    assert_string_equal(tu_jstr(first, "aggregatedSymbols.0"), "BTC-USDT");
    assert_string_equal(tu_jstr(first, "aggregatedSymbols.1"), "ETH-USDT");
    assert_true(json_is_false(json_object_get(first, "running")));
    assert_true(json_is_null(tu_jget(first, "usage.instances")));
    assert_string_equal(tu_jstr(first, "links.self"), "/strategy/instances/mom-1");
    assert_non_null(strstr(tu_jstr(first, "links.usage"), "/usage"));
    assert_string_equal(tu_jstr(items, "1.strategyTag"), "v1.0.0");
    assert_string_equal(tu_jstr(items, "1.strategySelector"), "momentum:v1.0.0");
    json_decref(list);
    tu_server_stop(srv);
}

static void test_create_refusals_name_the_field(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *plain = tu_strategy_source("plain", "['Trade']", "[]", NULL, "onTrade() {},");
    tu_upload_expect(srv, plain, NULL, 201, NULL);
    free(plain);
    json_decref(tu_instance_create(srv, "taken", "noop", NULL, NULL, NULL));

    expect_spec_refused(srv, 409, NULL,
                        "{\"id\": \"taken\", \"strategy\": {\"identifier\": \"noop\", "
                        "\"config\": {}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    /* unknown selectors */
    expect_spec_refused(srv, 404, NULL,
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"nosuch\", \"config\": "
                        "{}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 404, NULL,
                        "{\"id\": \"x\", \"strategy\": {\"selector\": \"momentum:v9\", "
                        "\"config\": {}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 404, NULL,
                        "{\"id\": \"x\", \"strategy\": {\"selector\": "
                        "\"momentum@aaaaaaaaaaaaaaaa\", \"config\": {}}, \"scope\": {\"sim\": "
                        "{\"symbols\": [\"BTC-USDT\"]}}}");
    /* a tag or hash beside the selector that names another revision, or
     * nothing: refused, not dropped (a snapshot put back with its tag
     * edited would otherwise stay where it was) */
    expect_spec_refused(srv, 400, "strategy.tag",
                        "{\"id\": \"x\", \"strategy\": {\"selector\": \"momentum:v1.0.0\", "
                        "\"tag\": \"nosuch\", \"config\": {}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "strategy.hash",
                        "{\"id\": \"x\", \"strategy\": {\"selector\": \"momentum\", "
                        "\"hash\": \"zz\", \"config\": {}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "strategy.hash",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"momentum\", "
                        "\"hash\": \"zz\", \"config\": {}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    /* scope */
    expect_spec_refused(srv, 400, "scope.elsewhere",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"noop\", \"config\": "
                        "{}}, \"scope\": {\"elsewhere\": {\"symbols\": [\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "scope.sim.symbols",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"noop\", \"config\": "
                        "{}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\", \"DOGE-USDT\"]}}}");
    expect_spec_refused(srv, 400, "scope.sim.symbols",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"noop\", \"config\": "
                        "{}}, \"scope\": {\"sim\": {\"symbols\": []}}}");
    expect_spec_refused(
        srv, 400, "scope",
        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"noop\", \"config\": {}}}");
    expect_spec_refused(srv, 400, "scope",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"noop\", \"config\": "
                        "{}}, \"scope\": {}}");
    /* a NUL would cut the selector to "momentum" (latest) and the id to
     * "nul": refused, with where it is */
    expect_spec_refused(srv, 400, NULL,
                        "{\"id\": \"x\", \"strategy\": {\"selector\": \"momentum\\u0000:v9\", "
                        "\"config\": {}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, NULL,
                        "{\"id\": \"nul\\u0000id\", \"strategy\": {\"identifier\": \"noop\", "
                        "\"config\": {}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    json_decref(tu_get_json(srv, 404, "/strategy/instances/nul"));
    /* id and strategy */
    expect_spec_refused(srv, 400, "id",
                        "{\"strategy\": {\"identifier\": \"noop\", \"config\": {}}, \"scope\": "
                        "{\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "id",
                        "{\"id\": \"no spaces\", \"strategy\": {\"identifier\": \"noop\", "
                        "\"config\": {}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "strategy",
                        "{\"id\": \"x\", \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "strategy.config",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"noop\", \"config\": "
                        "[1]}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    /* a misspelled member would have started the instance on its defaults */
    expect_spec_refused(srv, 400, "strategy.confg",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"momentum\", "
                        "\"confg\": {\"lookback\": 9}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    /* config typed by the metadata */
    expect_spec_refused(srv, 400, "config.lookback",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"momentum\", \"config\": "
                        "{\"lookback\": \"four\"}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "config.lookback",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"momentum\", \"config\": "
                        "{\"lookback\": 2.5}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "config.cooldown",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"momentum\", \"config\": "
                        "{\"cooldown\": \"soon\"}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "config.size",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"momentum\", \"config\": "
                        "{\"size\": true}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "config.dry_run",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"momentum\", \"config\": "
                        "{\"dry_run\": \"yes\"}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    /* the gateway's own keys are typed too, declared by the strategy or not */
    expect_spec_refused(srv, 400, "config.dry_run",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"plain\", \"config\": "
                        "{\"dry_run\": \"yes\"}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "config.memory_limit_mb",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"plain\", \"config\": "
                        "{\"memory_limit_mb\": \"lots\"}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "config.memory_limit_mb",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"plain\", \"config\": "
                        "{\"memory_limit_mb\": 0}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "config.cpu_budget_ms",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"plain\", \"config\": "
                        "{\"cpu_budget_ms\": -5}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    expect_spec_refused(srv, 400, "config.cpu_budget_ms",
                        "{\"id\": \"x\", \"strategy\": {\"identifier\": \"plain\", \"config\": "
                        "{\"cpu_budget_ms\": \"fast\"}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}");
    /* not JSON, not an object */
    struct tu_response res;
    tu_send(srv, &res, "POST", "/strategy/instances", "{\"id\": ");
    tu_assert_error(&res, 400);
    tu_response_free(&res);
    tu_send(srv, &res, "POST", "/strategy/instances", "[]");
    tu_assert_error(&res, 400);
    tu_response_free(&res);

    /* nothing of that was created */
    assert_int_equal(instance_count(srv), 1);
    tu_get(srv, &res, "/strategy/instances/x");
    tu_assert_error(&res, 404);
    tu_response_free(&res);

    /* the valid spellings of the same keys are accepted */
    json_t *snap = tu_instance_create(
        srv, "typed", "plain",
        "{\"dry_run\": true, \"memory_limit_mb\": 16, \"cpu_budget_ms\": 250}", NULL, NULL);
    assert_int_equal(tu_jint(snap, "strategy.config.memory_limit_mb"), 16);
    json_decref(snap);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ life cycle */

static void test_start_stop_and_unknown_ids(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    const char *hash = momentum_hash(srv);
    json_decref(tu_instance_create(srv, "life", "momentum", NULL, NULL, NULL));

    tu_instance_start(srv, "life");
    json_t *snap = tu_instance_wait_events(srv, "life", 5, TU_WAIT_S);
    assert_true(json_is_true(json_object_get(snap, "running")));
    assert_true(json_is_null(json_object_get(snap, "stopReason")));
    assert_int_equal(tu_jint(snap, "usage.count"), 1);
    assert_true(json_is_true(tu_jget(snap, "usage.running")));
    assert_true(tu_jint(snap, "memory.bytes") > 0);
    json_decref(snap);
    /* a second start is harmless */
    tu_instance_start(srv, "life");
    json_t *list = tu_get_json(srv, 200, "/strategy/instances");
    assert_true(json_is_true(tu_jget(list, "instances.0.running")));
    assert_int_equal(tu_jint(list, "instances.0.usage.count"), 1);
    json_decref(list);
    char *sample = tu_path("strategy_revision_instances{environment=\"dev\",strategy=\"momentum\","
                           "hash=\"%s\"}",
                           hash);
    assert_true(tu_metric(srv, sample) == 1);

    tu_instance_stop(srv, "life");
    snap = tu_instance_get(srv, "life");
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "stopReason"), "stopped");
    assert_int_equal(tu_jint(snap, "usage.count"), 0);
    assert_int_equal(tu_jint(snap, "memory.bytes"), 0); /* no VM, no heap */
    long long frozen = events_of(snap);
    json_decref(snap);
    assert_true(tu_metric(srv, sample) == 0);
    free(sample);
    /* a stopped instance receives nothing */
    tu_sleep_ms(300);
    snap = tu_instance_get(srv, "life");
    assert_int_equal(events_of(snap), frozen);
    json_decref(snap);
    tu_instance_stop(srv, "life");

    /* and runs again from where it was */
    tu_instance_start(srv, "life");
    snap = tu_instance_wait_events(srv, "life", frozen + 5, TU_WAIT_S);
    assert_true(json_is_true(json_object_get(snap, "running")));
    assert_true(json_is_null(json_object_get(snap, "stopReason")));
    json_decref(snap);

    /* unknown ids are 404 on every route */
    const char *spec = "{\"strategy\": {\"identifier\": \"noop\", \"config\": {}}, \"scope\": "
                       "{\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}";
    expect_refused(srv, "GET", "/strategy/instances/ghost", 404, NULL, NULL);
    expect_refused(srv, "PUT", "/strategy/instances/ghost", 404, NULL, spec);
    expect_refused(srv, "DELETE", "/strategy/instances/ghost", 404, NULL, NULL);
    expect_refused(srv, "POST", "/strategy/instances/ghost/start", 404, NULL, "{}");
    expect_refused(srv, "POST", "/strategy/instances/ghost/stop", 404, NULL, "{}");
    expect_refused(srv, "GET", "/strategy/instances/ghost/orders", 404, NULL, NULL);
    expect_refused(srv, "GET", "/strategy/instances/ghost/executions", 404, NULL, NULL);
    tu_server_stop(srv);
}

static void test_delete_stops_a_running_instance_first(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *src = tu_strategy_source("ticking", "['Trade']", "[]",
                                   "let n = 0; setInterval(() => h.log('tick', {n: ++n}), 20);",
                                   "onTrade() {},");
    char *hash = tu_upload_hash(srv, src);
    free(src);
    json_decref(tu_instance_create(srv, "doomed", "ticking", NULL, NULL, NULL));
    json_decref(tu_instance_create(srv, "keeper", "ticking", NULL, NULL, NULL));
    tu_instance_start(srv, "doomed");
    tu_instance_start(srv, "keeper");
    json_decref(tu_wait_log_values(srv, "doomed", "tick", 3, TU_WAIT_S));
    json_decref(tu_instance_wait_events(srv, "doomed", 3, TU_WAIT_S));

    json_t *body = tu_call(srv, "DELETE", "/strategy/instances/doomed", 200, NULL);
    assert_string_equal(tu_jstr(body, "status"), "deleted");
    assert_string_equal(tu_jstr(body, "id"), "doomed");
    json_decref(body);
    expect_refused(srv, "GET", "/strategy/instances/doomed", 404, NULL, NULL);
    json_t *list = tu_get_json(srv, 200, "/strategy/instances");
    assert_int_equal(json_array_size(json_object_get(list, "instances")), 1);
    assert_string_equal(tu_jstr(list, "instances.0.id"), "keeper");
    assert_int_equal(tu_jint(list, "instances.0.usage.count"), 1);
    json_decref(list);

    /* its VM is gone: its timer stopped with it, while the other's runs on */
    json_t *before = tu_log_values(srv, "doomed", "tick");
    json_t *kept = tu_log_values(srv, "keeper", "tick");
    json_decref(tu_wait_log_values(srv, "keeper", "tick", json_array_size(kept) + 5, TU_WAIT_S));
    json_t *after = tu_log_values(srv, "doomed", "tick");
    assert_int_equal(json_array_size(after), json_array_size(before));
    json_decref(before);
    json_decref(after);
    json_decref(kept);

    /* the id is free again */
    json_t *snap = tu_instance_create(srv, "doomed", "ticking", NULL, NULL, NULL);
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_int_equal(tu_jint(snap, "counters.eventsDelivered"), 0);
    json_decref(snap);
    body = tu_call(srv, "DELETE", "/strategy/instances/doomed", 200, NULL);
    json_decref(body);
    free(hash);
    tu_server_stop(srv);
}

/* A delete that lands while the instance's VM is inside a callback that
 * then fails (its CPU budget): the worker records the failure after the
 * record was deleted, and that write must not bring the record back, so
 * after a restart the instance is still gone. */
static void test_delete_during_a_failing_callback_stays_deleted(void **state)
{
    struct tu_server *srv = *state;
    struct tu_server_options opts = {.config_yaml = fast_config, .seed_examples = true};
    tu_server_start(srv, &opts);
    char *src =
        tu_strategy_source("doomspin", "['Trade']", "[]", "let armed = false;",
                           "onTrade() {\n"
                           "  if (armed) return;\n"
                           "  armed = true;\n"
                           "  setTimeout(() => { h.log('spinning', {}); for (;;) {} }, 0);\n"
                           "},");
    char *hash = tu_upload_hash(srv, src);
    free(src);
    /* a budget long enough for the delete to arrive inside the callback */
    json_decref(
        tu_instance_create(srv, "spinner", "doomspin", "{\"cpu_budget_ms\": 4000}", NULL, NULL));
    tu_instance_start(srv, "spinner");
    json_decref(tu_wait_log_values(srv, "spinner", "spinning", 1, TU_WAIT_S));

    json_decref(tu_call(srv, "DELETE", "/strategy/instances/spinner", 200, NULL));
    expect_refused(srv, "GET", "/strategy/instances/spinner", 404, NULL, NULL);
    /* the callback failed between the delete of the record and the detach */
    json_t *line = tu_wait_log(srv, "spinner", "instance stopped", TU_WAIT_S);
    assert_string_equal(tu_jstr(line, "reason"), "cpuBudget");
    json_decref(line);

    tu_server_restart(srv, &opts);
    expect_refused(srv, "GET", "/strategy/instances/spinner", 404, NULL, NULL);
    assert_int_equal(instance_count(srv), 0);
    free(hash);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ updates */

static const char *const echo_v1 = "h.log('created', {version: 1, config: env.config});";
static const char *const echo_v2 = "h.log('created', {version: 2, config: env.config});";
static const char *const echo_config =
    "[{name: 'label', type: 'string', default: 'none'}, {name: 'depth', type: 'int', default: 1}]";

static void test_update_replaces_spec_and_restarts_running(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *v1 = tu_strategy_source("echo", "['Trade']", echo_config, echo_v1, "onTrade() {},");
    char *h1 = tu_upload_hash(srv, v1);
    json_decref(tu_instance_create(srv, "e1", "echo", "{\"label\": \"first\"}", NULL, NULL));

    /* a stopped instance takes the new spec and stays stopped */
    json_t *snap = tu_callf(srv, "PUT", "/strategy/instances/e1", 200,
                            "{\"strategy\": {\"identifier\": \"echo\", \"config\": {\"label\": "
                            "\"second\"}}, \"scope\": {\"sim\": {\"symbols\": [\"ETH-USDT\"]}}}");
    assert_string_equal(tu_jstr(snap, "strategy.config.label"), "second");
    assert_string_equal(tu_jstr(snap, "scope.sim.symbols.0"), "ETH-USDT");
    assert_string_equal(tu_jstr(snap, "aggregatedSymbols.0"), "ETH-USDT");
    assert_true(json_is_false(json_object_get(snap, "running")));
    json_decref(snap);
    tu_instance_start(srv, "e1");
    json_t *created = tu_wait_log_values(srv, "e1", "created", 1, TU_WAIT_S);
    assert_string_equal(tu_jstr(created, "0.config.label"), "second");
    assert_int_equal(tu_jint(created, "0.config.depth"), 1);
    json_decref(created);

    /* a running one restarts with the new spec */
    snap = tu_callf(srv, "PUT", "/strategy/instances/e1", 200,
                    "{\"id\": \"e1\", \"strategy\": {\"identifier\": \"echo\", \"config\": "
                    "{\"label\": \"third\", \"depth\": 3}}, \"scope\": {\"sim\": {\"symbols\": "
                    "[\"ETH-USDT\"]}}}");
    assert_true(json_is_true(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "strategy.config.label"), "third");
    json_decref(snap);
    created = tu_wait_log_values(srv, "e1", "created", 2, TU_WAIT_S);
    assert_string_equal(tu_jstr(created, "1.config.label"), "third");
    assert_int_equal(tu_jint(created, "1.config.depth"), 3);
    json_decref(created);

    /* refused updates change nothing: bad type, another id, unknown symbol */
    expect_refused(srv, "PUT", "/strategy/instances/e1", 400, "config.depth",
                   "{\"strategy\": {\"identifier\": \"echo\", \"config\": {\"depth\": \"deep\"}}, "
                   "\"scope\": {\"sim\": {\"symbols\": [\"ETH-USDT\"]}}}");
    expect_refused(srv, "PUT", "/strategy/instances/e1", 400, "id",
                   "{\"id\": \"other\", \"strategy\": {\"identifier\": \"echo\", \"config\": {}}, "
                   "\"scope\": {\"sim\": {\"symbols\": [\"ETH-USDT\"]}}}");
    expect_refused(srv, "PUT", "/strategy/instances/e1", 400, "scope.sim.symbols",
                   "{\"strategy\": {\"identifier\": \"echo\", \"config\": {}}, "
                   "\"scope\": {\"sim\": {\"symbols\": [\"XRP-USDT\"]}}}");
    snap = tu_instance_get(srv, "e1");
    assert_true(json_is_true(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "strategy.config.label"), "third");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), h1);
    json_decref(snap);

    /* a revision whose create() throws is refused (422); the old VM runs on */
    char *broken = tu_strategy_source("echo", "['Trade']", echo_config,
                                      "throw new Error('will not start');", "onTrade() {},");
    char *hb = tu_upload_hash(srv, broken);
    char *body = tu_path("{\"strategy\": {\"selector\": \"echo@%s\", \"config\": {}}, "
                         "\"scope\": {\"sim\": {\"symbols\": [\"ETH-USDT\"]}}}",
                         hb);
    json_t *err = tu_call(srv, "PUT", "/strategy/instances/e1", 422, body);
    assert_non_null(strstr(tu_jstr(err, "error"), "will not start"));
    json_decref(err);
    free(body);
    snap = tu_instance_get(srv, "e1");
    assert_true(json_is_true(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "strategy.hash"), h1);
    long long events = events_of(snap);
    json_decref(snap);
    json_decref(tu_instance_wait_events(srv, "e1", events + 5, TU_WAIT_S));

    /* moving to another revision pins its hash and runs its code */
    char *v2 = tu_strategy_source("echo", "['Trade']", echo_config, echo_v2, "onTrade() {},");
    char *h2 = tu_upload_hash(srv, v2);
    body = tu_path("{\"strategy\": {\"selector\": \"echo@%s\", \"config\": {\"label\": "
                   "\"fourth\"}}, \"scope\": {\"sim\": {\"symbols\": [\"ETH-USDT\"]}}}",
                   h2);
    snap = tu_call(srv, "PUT", "/strategy/instances/e1", 200, body);
    free(body);
    assert_string_equal(tu_jstr(snap, "strategy.hash"), h2);
    assert_true(json_is_true(json_object_get(snap, "running")));
    assert_int_equal(tu_jint(snap, "usage.count"), 1);
    json_decref(snap);
    created = tu_wait_log_values(srv, "e1", "created", 3, TU_WAIT_S);
    assert_int_equal(tu_jint(created, "2.version"), 2);
    assert_string_equal(tu_jstr(created, "2.config.label"), "fourth");
    json_decref(created);
    /* the old revision no longer counts it */
    json_t *usage = tu_get_json(srv, 200, "/strategies/modules/echo@%s/usage", h1 + 7);
    assert_int_equal(tu_jint(usage, "usage.count"), 0);
    json_decref(usage);

    /* a snapshot put back whole, with a changed config, is an update: every
     * member it carries is one a spec may have */
    snap = tu_instance_get(srv, "e1");
    json_object_set_new(json_object_get(json_object_get(snap, "strategy"), "config"), "label",
                        json_string("fifth"));
    char *text = json_dumps(snap, JSON_COMPACT);
    json_decref(snap);
    snap = tu_call(srv, "PUT", "/strategy/instances/e1", 200, text);
    free(text);
    assert_string_equal(tu_jstr(snap, "strategy.config.label"), "fifth");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), h2);
    json_decref(snap);

    free(v1);
    free(v2);
    free(broken);
    free(h1);
    free(h2);
    free(hb);
    tu_server_stop(srv);
}

struct pending_put {
    char url[160];
    char *body;
    int rc;
    struct tu_response res;
};

static void *send_put(void *arg)
{
    struct pending_put *p = arg;
    struct tu_request_options o = {.body = p->body, .body_len = strlen(p->body)};
    p->rc = tu_http_try(&p->res, "PUT", p->url, &o);
    return NULL;
}

/* A PUT that moves a running instance onto another revision claims that
 * revision for its whole restart: a delete of it meanwhile (here while the
 * new VM's create() runs) is refused as pinned, and the instance ends on a
 * revision that still exists. */
static void test_update_pins_its_new_revision_against_deletes(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *a =
        tu_strategy_source("dual", "['Trade']", "[]", "h.log('created', {v: 1});", "onTrade() {},");
    char *b = tu_strategy_source("dual", "['Trade']", "[]",
                                 "h.log('creating', {v: 2});\n"
                                 "const until = Date.now() + 3000;\n"
                                 "while (Date.now() < until) {}",
                                 "onTrade() {},");
    char *ha = tu_upload_hash(srv, a);
    char *hb = tu_upload_hash(srv, b);
    char *on_a = tu_path("dual@%s", ha);
    json_decref(tu_instance_create(srv, "x", on_a, "{\"cpu_budget_ms\": 10000}", NULL, NULL));
    tu_instance_start(srv, "x");

    struct pending_put put = {.rc = -1};
    snprintf(put.url, sizeof put.url, "%s/strategy/instances/x", srv->base_url);
    put.body = tu_path("{\"strategy\": {\"selector\": \"dual@%s\", \"config\": "
                       "{\"cpu_budget_ms\": 10000}}, \"scope\": {\"sim\": {\"symbols\": "
                       "[\"BTC-USDT\"]}}}",
                       hb);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, send_put, &put), 0);
    json_decref(tu_wait_log_values(srv, "x", "creating", 1, TU_WAIT_S));
    char *path = tu_path("/strategies/modules/dual@%s", hb + 7);
    json_t *err = tu_call(srv, "DELETE", path, 409, NULL);
    assert_non_null(strstr(tu_jstr(err, "error"), "pinned"));
    assert_string_equal(tu_jstr(err, "details.instances.0"), "x");
    json_decref(err);
    pthread_join(thread, NULL);
    if (put.rc != 0)
        fail_msg("the PUT got no answer");
    tu_assert_status(&put.res, 200);
    tu_response_free(&put.res);

    json_t *snap = tu_instance_get(srv, "x");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), hb);
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    json_decref(tu_get_json(srv, 200, "%s", path));
    /* once the instance is stopped the revision can go */
    tu_instance_stop(srv, "x");
    json_decref(tu_call(srv, "DELETE", path, 204, NULL));
    free(path);
    free(put.body);
    free(on_a);
    free(a);
    free(b);
    free(ha);
    free(hb);
    tu_server_stop(srv);
}

static void test_pin_holds_when_latest_moves(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *v1 =
        tu_strategy_source("pinned", "['Trade']", "[]", "h.log('code', {v: 1});", "onTrade() {},");
    char *v2 =
        tu_strategy_source("pinned", "['Trade']", "[]", "h.log('code', {v: 2});", "onTrade() {},");
    char *h1 = tu_upload_hash(srv, v1);
    json_decref(tu_instance_create(srv, "p1", "pinned", NULL, NULL, NULL));
    char *h2 = tu_upload_hash(srv, v2);
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/pinned");
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), h2);
    json_decref(m);

    tu_instance_start(srv, "p1");
    json_t *code = tu_wait_log_values(srv, "p1", "code", 1, TU_WAIT_S);
    assert_int_equal(tu_jint(code, "0.v"), 1);
    json_decref(code);
    json_t *snap = tu_instance_get(srv, "p1");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), h1);
    assert_string_equal(tu_jstr(snap, "strategy.selector"), "pinned");
    json_decref(snap);
    /* a new instance of the same selector pins the new latest */
    snap = tu_instance_create(srv, "p2", "pinned", NULL, NULL, NULL);
    assert_string_equal(tu_jstr(snap, "strategy.hash"), h2);
    json_decref(snap);
    free(v1);
    free(v2);
    free(h1);
    free(h2);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ what strategies see */

static const char *const env_setup =
    "const names = (o) => Object.getOwnPropertyNames(o).sort();\n"
    "h.log('env', {config: env.config, metadataName: env.metadata.name,\n"
    "  metadataEvents: env.metadata.events, events: env.events,\n"
    "  helpers: names(env.helpers), runtime: names(env.runtime),\n"
    "  dryRun: rt.isDryRun(), trading: rt.isTradingActive(), providers: rt.providers(),\n"
    "  selected: rt.selectProvider('seed'), again: rt.selectProvider('seed'),\n"
    "  timers: [typeof setTimeout, typeof clearTimeout, typeof setInterval,\n"
    "           typeof clearInterval]});\n"
    "let handlers;\n"
    "let trades = 0;\n";

static const char *const env_handlers =
    "subscribedEvents() { return ['Trade', 'KlineSummary']; },\n"
    "onTrade(ctx, evt, payload, extra) {\n"
    "  if (++trades > 3) return;\n"
    "  h.log('trade', {ctx, evt, payload, extra: extra === undefined,\n"
    "    self: this === handlers, events: env.events,\n"
    "    state: rt.getMarketState(), last: rt.getLastPrice(),\n"
    "    bid: rt.getBidPrice(), ask: rt.getAskPrice(),\n"
    "    eth: rt.getMarketState('ETH-USDT'), none: rt.getMarketState('XRP-USDT')});\n"
    "},\n"
    "onTicker() { h.log('ticker', {}); },\n";

static void test_env_and_handler_arguments(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *setup = tu_path("%s", env_setup);
    /* the handlers object remembers itself for the `this` check */
    char *src = tu_path(
        "module.exports = {\n"
        "  metadata: {name: 'seer', displayName: 'Seer',\n"
        "    events: ['Trade', 'Ticker', 'KlineSummary'],\n"
        "    config: [{name: 'window', type: 'duration', default: '1m30s'},\n"
        "             {name: 'ratio', type: 'float', default: 0.5},\n"
        "             {name: 'mode', type: 'enum', options: ['fast', 'slow'], default: 'slow'},\n"
        "             {name: 'count', type: 'int', default: 4}]},\n"
        "  create(env) {\n"
        "    const h = env.helpers, rt = env.runtime;\n"
        "    %s\n"
        "    handlers = {\n"
        "      %s\n"
        "    };\n"
        "    return handlers;\n"
        "  },\n"
        "};\n",
        setup, env_handlers);
    char *hash = tu_upload_hash(srv, src);
    free(src);
    free(setup);
    json_decref(tu_instance_create(srv, "seer-1", "seer",
                                   "{\"window\": \"250ms\", \"mode\": \"fast\", \"dry_run\": true, "
                                   "\"extra\": [1, 2]}",
                                   NULL, "[\"BTC-USDT\", \"ETH-USDT\"]"));
    tu_instance_start(srv, "seer-1");

    /* helpers.log lines carry the strategy, hash and instance */
    json_t *line = tu_wait_log(srv, "seer-1", "env ", TU_WAIT_S);
    assert_string_equal(tu_jstr(line, "component"), "strategy");
    assert_string_equal(tu_jstr(line, "level"), "info");
    assert_string_equal(tu_jstr(line, "strategy"), "seer");
    assert_string_equal(tu_jstr(line, "hash"), hash);
    assert_string_equal(tu_jstr(line, "instance"), "seer-1");
    json_decref(line);
    json_t *env = tu_wait_log_values(srv, "seer-1", "env", 1, TU_WAIT_S);
    json_t *e = json_array_get(env, 0);
    /* defaults merged, instance values win, types resolved (duration -> ms) */
    assert_int_equal(tu_jint(e, "config.window"), 250);
    assert_true(json_is_real(tu_jget(e, "config.ratio")) ||
                json_is_integer(tu_jget(e, "config.ratio")));
    assert_true(json_number_value(tu_jget(e, "config.ratio")) == 0.5);
    assert_string_equal(tu_jstr(e, "config.mode"), "fast");
    assert_int_equal(tu_jint(e, "config.count"), 4);
    assert_true(json_is_true(tu_jget(e, "config.dry_run")));
    assert_int_equal(tu_jint(e, "config.extra.1"), 2);
    assert_string_equal(tu_jstr(e, "metadataName"), "seer");
    assert_int_equal(json_array_size(tu_jget(e, "metadataEvents")), 3);
    assert_int_equal(json_array_size(tu_jget(e, "events")), 3);
    assert_string_equal(tu_jstr(e, "helpers.0"), "log");
    assert_string_equal(tu_jstr(e, "helpers.1"), "sleep");
    const char *expected_runtime[] = {
        "cancelOrder",  "getAskPrice",    "getBidPrice",       "getInstrument",
        "getLastPrice", "getMarketState", "isDryRun",          "isTradingActive",
        "providers",    "selectProvider", "submitMarketOrder", "submitOrder",
    };
    json_t *runtime = tu_jget(e, "runtime");
    assert_int_equal(json_array_size(runtime), 12);
    for (size_t i = 0; i < 12; i++)
        assert_string_equal(json_string_value(json_array_get(runtime, i)), expected_runtime[i]);
    assert_true(json_is_true(tu_jget(e, "dryRun")));
    assert_true(json_is_boolean(tu_jget(e, "trading")));
    assert_string_equal(tu_jstr(e, "providers.0"), "sim");
    assert_string_equal(tu_jstr(e, "selected"), "sim");
    assert_string_equal(tu_jstr(e, "again"), "sim");
    for (size_t i = 0; i < 4; i++)
        assert_string_equal(json_string_value(json_array_get(tu_jget(e, "timers"), i)), "function");
    json_decref(env);

    json_t *trades = tu_wait_log_values(srv, "seer-1", "trade", 3, TU_WAIT_S);
    json_t *t = json_array_get(trades, 0);
    assert_string_equal(tu_jstr(t, "ctx.instanceId"), "seer-1");
    assert_string_equal(tu_jstr(t, "ctx.provider"), "sim");
    assert_string_equal(tu_jstr(t, "ctx.strategy"), "seer");
    assert_string_equal(tu_jstr(t, "ctx.hash"), hash);
    const char *symbol = tu_jstr(t, "ctx.symbol");
    assert_true(strcmp(symbol, "BTC-USDT") == 0 || strcmp(symbol, "ETH-USDT") == 0);
    assert_string_equal(tu_jstr(t, "evt.type"), "Trade");
    assert_string_equal(tu_jstr(t, "evt.provider"), "sim");
    assert_string_equal(tu_jstr(t, "evt.symbol"), symbol);
    assert_true(json_is_integer(tu_jget(t, "evt.seq")));
    assert_true(json_is_integer(tu_jget(t, "evt.ts")));
    assert_true(json_number_value(tu_jget(t, "payload.price")) > 0);
    assert_true(json_number_value(tu_jget(t, "payload.quantity")) > 0);
    const char *side = tu_jstr(t, "payload.side");
    assert_true(strcmp(side, "buy") == 0 || strcmp(side, "sell") == 0);
    assert_true(json_is_integer(tu_jget(t, "payload.tradeId")));
    assert_true(json_is_true(tu_jget(t, "extra")));
    assert_true(json_is_true(tu_jget(t, "self")));
    /* subscribedEvents() narrowed what the metadata declared */
    assert_int_equal(json_array_size(tu_jget(t, "events")), 2);
    assert_string_equal(tu_jstr(t, "events.0"), "Trade");
    assert_string_equal(tu_jstr(t, "events.1"), "KlineSummary");
    /* quotes: of the first scoped symbol unless one is named */
    double last = json_number_value(tu_jget(t, "state.last"));
    double bid = json_number_value(tu_jget(t, "state.bid"));
    double ask = json_number_value(tu_jget(t, "state.ask"));
    assert_true(bid > 10000 && ask > bid && last >= bid && last <= ask);
    assert_true(json_number_value(tu_jget(t, "state.spread")) > 0);
    double pct = json_number_value(tu_jget(t, "state.spreadPct"));
    assert_true(pct > 0 && pct < 1);
    assert_true(json_number_value(tu_jget(t, "last")) > 10000);
    assert_true(json_number_value(tu_jget(t, "bid")) > 10000);
    assert_true(json_number_value(tu_jget(t, "ask")) > 10000);
    double eth = json_number_value(tu_jget(t, "eth.last"));
    assert_true(eth > 100 && eth < 10000);
    assert_true(json_is_null(tu_jget(t, "none")));
    json_decref(trades);

    /* onTicker exists but Ticker was narrowed away: never called */
    json_t *tickers = tu_log_values(srv, "seer-1", "ticker");
    assert_int_equal(json_array_size(tickers), 0);
    json_decref(tickers);
    json_t *snap = tu_instance_get(srv, "seer-1");
    assert_int_equal(tu_jint(snap, "counters.handlerErrors"), 0);
    json_decref(snap);
    free(hash);
    tu_server_stop(srv);
}

/* A strategy may freeze what create(env) receives: the start does not
 * write to env unless subscribedEvents() narrows the events, and then a
 * frozen env keeps the declared list rather than fail the start. */
static void test_frozen_env_starts(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *src = tu_strategy_source("frozen", "['Trade', 'Ticker']", "[]",
                                   "Object.freeze(env); const seen = env.events.join(',');",
                                   "onTrade() { h.log('events', {seen}); },");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    src = tu_strategy_source("frozen-narrow", "['Trade', 'Ticker']", "[]", "Object.freeze(env);",
                             "subscribedEvents() { return ['Trade']; },\n"
                             "onTrade() { h.log('events', {seen: env.events.join(',')}); },\n"
                             "onTicker() { throw new Error('not subscribed'); },");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    static const char *const ids[] = {"frozen", "frozen-narrow"};
    for (size_t i = 0; i < 2; i++) {
        json_decref(tu_instance_create(srv, ids[i], ids[i], NULL, NULL, NULL));
        tu_instance_start(srv, ids[i]);
        json_t *values = tu_wait_log_values(srv, ids[i], "events", 1, TU_WAIT_S);
        assert_string_equal(tu_jstr(json_array_get(values, 0), "seen"), "Trade,Ticker");
        json_decref(values);
    }
    json_t *snap = tu_instance_wait_events(srv, "frozen-narrow", 20, TU_WAIT_S);
    assert_int_equal(tu_jint(snap, "counters.handlerErrors"), 0);
    json_decref(snap);
    tu_server_stop(srv);
}

static void test_missing_handlers_and_subscriptions(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    /* declares Trade and Ticker but handles only Ticker: trades are no-ops */
    char *src = tu_strategy_source("partial", "['Trade', 'Ticker', 'BookSnapshot']", "[]", NULL,
                                   "onTicker(ctx, evt) { if (evt.type !== 'Ticker') "
                                   "throw new Error('got ' + evt.type); },\n"
                                   "onKlineSummary() { throw new Error('not subscribed'); },\n"
                                   "onTrades() { throw new Error('never called'); },");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    json_decref(tu_instance_create(srv, "part", "partial", NULL, NULL, NULL));
    tu_instance_start(srv, "part");
    json_t *snap = tu_instance_wait_events(srv, "part", 300, TU_WAIT_S);
    assert_int_equal(tu_jint(snap, "counters.handlerErrors"), 0);
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    /* every delivery was a Ticker: as many as the Ticker metric */
    double tickers = tu_metric(srv, "stratd_events_delivered_total{event=\"Ticker\"}");
    double trades = tu_metric(srv, "stratd_events_delivered_total{event=\"Trade\"}");
    double klines = tu_metric(srv, "stratd_events_delivered_total{event=\"KlineSummary\"}");
    assert_true(tickers >= 300);
    assert_true(trades == 0);
    assert_true(klines == 0);
    /* a function named like a handler that no event calls is named in the
     * instance's log at its start, with the handler it may have meant */
    json_t *line = tu_wait_log(srv, "part", "create(env) returned onTrades", TU_WAIT_S);
    assert_string_equal(tu_jstr(line, "level"), "warn");
    assert_non_null(strstr(tu_jstr(line, "msg"), "did you mean onTrade?"));
    json_decref(line);
    tu_server_stop(srv);
}

static void test_exceptions_are_logged_counted_and_survived(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    /* throws on every other trade: never 100 in a row */
    char *src = tu_strategy_source("flaky", "['Trade']", "[]", "let n = 0;",
                                   "onTrade(ctx, evt) {\n"
                                   "  n++;\n"
                                   "  if (n % 2) throw new RangeError('odd trade ' + n);\n"
                                   "},");
    char *hash = tu_upload_hash(srv, src);
    free(src);
    json_decref(tu_instance_create(srv, "flaky-1", "flaky", NULL, NULL, NULL));
    tu_instance_start(srv, "flaky-1");
    json_t *snap = tu_instance_wait_events(srv, "flaky-1", 400, TU_WAIT_S);
    assert_true(json_is_true(json_object_get(snap, "running")));
    long long errors = tu_jint(snap, "counters.handlerErrors");
    long long events = events_of(snap);
    assert_true(errors >= events / 2 - 1 && errors <= events / 2 + 1);
    assert_string_equal(tu_jstr(snap, "lastError.handler"), "onTrade");
    assert_non_null(strstr(tu_jstr(snap, "lastError.message"), "RangeError: odd trade"));
    assert_true(json_is_string(tu_jget(snap, "lastError.at")));
    assert_true(json_is_null(json_object_get(snap, "stopReason")));
    json_decref(snap);

    /* each exception is a log line with strategy, hash, instance, handler and
     * the JS stack */
    json_t *line = tu_wait_log(srv, "flaky-1", "RangeError: odd trade 1", TU_WAIT_S);
    assert_string_equal(tu_jstr(line, "strategy"), "flaky");
    assert_string_equal(tu_jstr(line, "hash"), hash);
    assert_string_equal(tu_jstr(line, "instance"), "flaky-1");
    assert_string_equal(tu_jstr(line, "handler"), "onTrade");
    assert_non_null(strstr(tu_jstr(line, "stack"), "at onTrade (flaky.js:"));
    json_decref(line);
    char *sample = tu_path("stratd_handler_errors_total{strategy=\"flaky\",hash=\"%s\"}", hash);
    assert_true(tu_metric(srv, sample) >= (double)errors);
    free(sample);
    free(hash);
    tu_server_stop(srv);
}

/* A create(env) that fails, plain or async, says where: the start's 422
 * (its details and its text) and the instance's lastError, which keeps
 * only the text (an async one had no position at all, and its kind was
 * lost in "unhandled promise rejection"). */
static void test_failed_creates_say_where(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    static const char *const names[] = {"plainfail", "asyncfail"};
    for (int i = 0; i < 2; i++) {
        char *src = tu_path("module.exports = {\n"
                            "  metadata: { name: '%s', displayName: 'F', events: ['Trade'] },\n"
                            "  %screate(env) {\n"
                            "    %s\n"
                            "    return setup();\n"
                            "  },\n"
                            "};\n"
                            "function setup() {\n"
                            "  const table = undefined;\n"
                            "  return table.rows;\n"
                            "}\n",
                            names[i], i ? "async " : "", i ? "await null;" : "");
        tu_upload_expect(srv, src, NULL, 201, NULL);
        free(src);
        json_decref(tu_instance_create(srv, names[i], names[i], NULL, NULL, NULL));
        char *path = tu_path("/strategy/instances/%s/start", names[i]);
        json_t *err = tu_call(srv, "POST", path, 422, "{}");
        free(path);
        char *where = tu_path("(%s.js:10:", names[i]);
        const char *text = tu_jstr(err, "error");
        if (!strstr(text, "TypeError") || !strstr(text, where))
            fail_msg("the failed start of %s: %s", names[i], text);
        assert_int_equal(tu_jint(err, "details.line"), 10);
        json_decref(err);
        json_t *snap = tu_instance_get(srv, names[i]);
        assert_non_null(strstr(tu_jstr(snap, "lastError.message"), where));
        json_decref(snap);
        free(where);
    }
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ compile once */

static void test_thousandth_instance_is_not_compiled_again(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *src = tu_strategy_source("dense", "['Trade']", "[]", NULL, "");
    char *hash = tu_upload_hash(srv, src);
    free(src);
    const char *metric = "stratd_module_compilations_total";
    double before = tu_metric(srv, metric);
    assert_true(before >= 0);
    json_decref(tu_instance_create(srv, "dense-0000", "dense", NULL, NULL, NULL));
    tu_instance_start(srv, "dense-0000");
    double once = tu_metric(srv, metric);
    assert_true(once == before + 1);
    for (int i = 1; i < 1000; i++) {
        char id[32];
        snprintf(id, sizeof id, "dense-%04d", i);
        json_decref(tu_instance_create(srv, id, "dense", NULL, NULL, NULL));
        tu_instance_start(srv, id);
    }
    assert_true(tu_metric(srv, metric) == once);
    char *sample = tu_path(
        "strategy_revision_instances{environment=\"dev\",strategy=\"dense\",hash=\"%s\"}", hash);
    assert_true(tu_metric(srv, sample) == 1000);
    free(sample);
    json_t *snap = tu_instance_get(srv, "dense-0999");
    assert_true(json_is_true(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "strategy.hash"), hash);
    json_decref(snap);
    free(hash);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_create_pins_hash_and_answers_snapshot, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_create_refusals_name_the_field, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_start_stop_and_unknown_ids, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_delete_stops_a_running_instance_first, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_delete_during_a_failing_callback_stays_deleted,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_update_replaces_spec_and_restarts_running,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_update_pins_its_new_revision_against_deletes,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_pin_holds_when_latest_moves, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_env_and_handler_arguments, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_frozen_env_starts, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_missing_handlers_and_subscriptions, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_failed_creates_say_where, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_exceptions_are_logged_counted_and_survived,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_thousandth_instance_is_not_compiled_again,
                                        tu_server_setup, tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
