/*
 * Restart recovery over HTTP: after a clean stop (SIGTERM) or a SIGKILL,
 * every instance is back, pinned to the same hash with the same spec; the
 * ones that were running run again (and receive events), the stopped ones
 * stay stopped with their reason, an instance a limit stopped does not come
 * back in a loop. Order history, providers created over the API and the
 * instances scoped to them survive too, and client order ids stay unique
 * per instance across restarts.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const fast_config = "workers: 2\n"
                                       "providers:\n"
                                       "  - name: sim\n"
                                       "    adapter: simulated\n"
                                       "    config:\n"
                                       "      symbols: [BTC-USDT, ETH-USDT]\n"
                                       "      seed: 21\n"
                                       "      tickRate: 200\n";

static const struct tu_server_options options = {.config_yaml = fast_config};

/* Logs which revision runs, and places one dry-run market order on its
 * first trade after every start. */
static char *revision_source(int version)
{
    char *setup = tu_path("h.log('code', {v: %d, config: env.config}); let sent = false;", version);
    char *src = tu_strategy_source(
        "phoenix", "['Trade', 'ExecReport']", "[]", setup,
        "onTrade(ctx) {\n"
        "  if (sent) return;\n"
        "  sent = true;\n"
        "  h.log('order', {id: rt.submitMarketOrder(ctx.provider, 'buy', 0.01)});\n"
        "},\n"
        "onOrderFilled(ctx, evt, r) { h.log('filled', {id: r.clientOrderId}); },");
    free(setup);
    return src;
}

struct fleet {
    char *h1, *h2;
};

/* v1 then v2 of "phoenix" and a runaway; instances:
 *   old      pinned to v1 (created before v2 moved latest), running
 *   run      v2, running, with config
 *   idle     v2, never started
 *   halted   v2, started then stopped
 *   crashed  a runaway stopped by its CPU budget
 *   far      v2 on a provider created over the API, running */
static void build_fleet(struct tu_server *srv, struct fleet *f)
{
    char *v1 = revision_source(1), *v2 = revision_source(2);
    f->h1 = tu_upload_hash(srv, v1);
    json_decref(tu_instance_create(srv, "old", "phoenix", NULL, NULL, NULL));
    f->h2 = tu_upload_hash(srv, v2);
    free(v1);
    free(v2);
    char *spin =
        tu_strategy_source("spinner", "['Trade']", "[]", NULL, "onTrade() { for (;;) {} },");
    tu_upload_expect(srv, spin, NULL, 201, NULL);
    free(spin);
    json_decref(tu_call(srv, "POST", "/providers", 202,
                        "{\"name\": \"far\", \"adapter\": {\"identifier\": \"simulated\", "
                        "\"config\": {\"symbols\": [\"SOL-USDT\"], \"seed\": 8, \"tickRate\": "
                        "200}}, \"enabled\": true}"));

    json_decref(tu_instance_create(srv, "run", "phoenix", "{\"note\": \"kept\"}", NULL,
                                   "[\"ETH-USDT\", \"BTC-USDT\"]"));
    json_decref(tu_instance_create(srv, "idle", "phoenix", NULL, NULL, NULL));
    json_decref(tu_instance_create(srv, "halted", "phoenix", NULL, NULL, NULL));
    json_decref(tu_instance_create(srv, "crashed", "spinner", NULL, NULL, NULL));
    json_decref(tu_instance_create(srv, "far-1", "phoenix", NULL, "far", "[\"SOL-USDT\"]"));
    static const char *const started[] = {"old", "run", "halted", "crashed", "far-1"};
    for (int i = 0; i < 5; i++)
        tu_instance_start(srv, started[i]);
    tu_instance_stop(srv, "halted");
    json_t *snap = tu_instance_wait_stopped(srv, "crashed", TU_WAIT_S);
    assert_string_equal(tu_jstr(snap, "stopReason"), "cpuBudget");
    json_decref(snap);
    /* every running one placed its order and saw it filled */
    static const char *const running[] = {"old", "run", "far-1"};
    for (int i = 0; i < 3; i++) {
        json_decref(tu_wait_log_values(srv, running[i], "filled", 1, TU_WAIT_S));
        /* the history is written in batches, a moment after the report: wait
         * for it, so that a SIGKILL finds it on disk */
        char *path = tu_path("/strategy/instances/%s/orders?state=filled", running[i]);
        json_decref(tu_wait_list(srv, path, "orders", 1, TU_WAIT_S));
        free(path);
    }
}

static void fleet_free(struct fleet *f)
{
    free(f->h1);
    free(f->h2);
}

struct expected {
    const char *id;
    bool running;
    const char *reason; /* NULL: null */
    int version;        /* 1 or 2; 0: not phoenix */
};

static const struct expected expected_fleet[] = {
    {"crashed", false, "cpuBudget", 0}, {"far-1", true, NULL, 2}, {"halted", false, "stopped", 2},
    {"idle", false, NULL, 2},           {"old", true, NULL, 1},   {"run", true, NULL, 2},
};

static bool running_with_events(const json_t *snap, const void *arg)
{
    (void)arg;
    return json_is_true(json_object_get(snap, "running")) &&
           tu_jint(snap, "counters.eventsDelivered") >= 5;
}

/* The fleet as it was: same ids, hashes, specs, states and reasons; the
 * running ones receive events; each ran its own revision again. */
static void check_fleet(struct tu_server *srv, const struct fleet *f, json_t *before)
{
    json_t *list = tu_get_json(srv, 200, "/strategy/instances");
    json_t *items = json_object_get(list, "instances");
    assert_int_equal(json_array_size(items), 6);
    for (size_t i = 0; i < 6; i++) {
        const struct expected *e = &expected_fleet[i];
        json_t *item = json_array_get(items, i);
        assert_string_equal(tu_jstr(item, "id"), e->id);
        json_t *snap = e->running ? tu_instance_wait(srv, e->id, running_with_events, NULL,
                                                     TU_WAIT_S, "running again")
                                  : tu_instance_get(srv, e->id);
        assert_true(json_is_boolean(json_object_get(snap, "running")));
        if (json_is_true(json_object_get(snap, "running")) != e->running)
            fail_msg("after the restart %s is %s", e->id, e->running ? "stopped" : "running");
        json_t *reason = json_object_get(snap, "stopReason");
        if (e->reason)
            assert_string_equal(json_string_value(reason), e->reason);
        else
            assert_true(json_is_null(reason));
        if (e->version)
            assert_string_equal(tu_jstr(snap, "strategy.hash"), e->version == 1 ? f->h1 : f->h2);
        /* the whole spec, as it was */
        json_t *was = json_array_get(json_object_get(before, "instances"), i);
        static const char *const keys[] = {"id", "strategy", "scope", "providers",
                                           "aggregatedSymbols"};
        for (int k = 0; k < 5; k++) {
            if (!json_equal(json_object_get(snap, keys[k]), json_object_get(was, keys[k])))
                fail_msg("%s: '%s' changed across the restart: %s -> %s", e->id, keys[k],
                         json_dumps(json_object_get(was, keys[k]), JSON_COMPACT),
                         json_dumps(json_object_get(snap, keys[k]), JSON_COMPACT));
        }
        json_decref(snap);
    }
    json_decref(list);
    /* the running ones ran their pinned code again; the others did not run */
    json_t *code = tu_wait_log_values(srv, "old", "code", 2, TU_WAIT_S);
    assert_int_equal(tu_jint(code, "1.v"), 1);
    json_decref(code);
    code = tu_wait_log_values(srv, "run", "code", 2, TU_WAIT_S);
    assert_int_equal(tu_jint(code, "1.v"), 2);
    assert_string_equal(tu_jstr(code, "1.config.note"), "kept");
    json_decref(code);
    json_t *none = tu_log_values(srv, "halted", "code");
    assert_int_equal(json_array_size(none), 1);
    json_decref(none);
    none = tu_log_values(srv, "idle", "code");
    assert_int_equal(json_array_size(none), 0);
    json_decref(none);

    /* the provider created over the API is back with its settings */
    json_t *far = tu_get_json(srv, 200, "/providers/far");
    assert_string_equal(tu_jstr(far, "instruments.0.symbol"), "SOL-USDT");
    assert_true(json_is_true(json_object_get(far, "running")));
    json_decref(far);

    /* each running instance ordered again after the restart, under a new
     * client order id: history keeps both, distinct */
    static const char *const running[] = {"old", "run", "far-1"};
    for (int i = 0; i < 3; i++) {
        json_t *orders = tu_wait_log_values(srv, running[i], "order", 2, TU_WAIT_S);
        const char *first = tu_jstr(orders, "0.id");
        const char *second = tu_jstr(orders, "1.id");
        if (strcmp(first, second) == 0)
            fail_msg("instance %s reused the client order id %s after the restart", running[i],
                     first);
        json_decref(tu_wait_log_values(srv, running[i], "filled", 2, TU_WAIT_S));
        char *path = tu_path("/strategy/instances/%s/orders?state=filled", running[i]);
        json_t *hist = tu_wait_list(srv, path, "orders", 2, TU_WAIT_S);
        const char *a = tu_jstr(hist, "orders.0.clientOrderId");
        const char *b = tu_jstr(hist, "orders.1.clientOrderId");
        assert_string_not_equal(a, b);
        assert_string_not_equal(tu_jstr(hist, "orders.0.id"), tu_jstr(hist, "orders.1.id"));
        json_decref(hist);
        free(path);
        json_decref(orders);
    }
}

static json_t *capture(struct tu_server *srv)
{
    json_t *full = json_array();
    for (size_t k = 0; k < 6; k++)
        json_array_append_new(full, tu_instance_get(srv, expected_fleet[k].id));
    return json_pack("{s:o}", "instances", full);
}

static void test_clean_restart_restores_every_instance(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, &options);
    struct fleet f;
    build_fleet(srv, &f);
    json_t *doc = capture(srv);
    tu_server_restart(srv, &options);
    check_fleet(srv, &f, doc);
    json_decref(doc);
    fleet_free(&f);
    tu_server_stop(srv);
}

static void test_sigkill_restores_every_instance(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, &options);
    struct fleet f;
    build_fleet(srv, &f);
    json_t *doc = capture(srv);
    tu_server_kill(srv);
    tu_server_restart(srv, &options);
    check_fleet(srv, &f, doc);
    json_decref(doc);

    /* and once more, killed while everything runs */
    doc = capture(srv);
    tu_server_kill(srv);
    tu_server_restart(srv, &options);
    json_t *list = tu_get_json(srv, 200, "/strategy/instances");
    assert_int_equal(json_array_size(json_object_get(list, "instances")), 6);
    json_decref(list);
    for (size_t k = 0; k < 6; k++) {
        const struct expected *e = &expected_fleet[k];
        json_t *snap = e->running ? tu_instance_wait(srv, e->id, running_with_events, NULL,
                                                     TU_WAIT_S, "running again")
                                  : tu_instance_get(srv, e->id);
        json_t *was = json_array_get(json_object_get(doc, "instances"), k);
        assert_true(
            json_equal(json_object_get(snap, "strategy"), json_object_get(was, "strategy")));
        assert_true(json_is_true(json_object_get(snap, "running")) == e->running);
        json_decref(snap);
    }
    json_decref(doc);
    fleet_free(&f);
    tu_server_stop(srv);
}

/* A start answered 2xx survives a SIGKILL that follows at once; so do a
 * create, a stop, an update and a delete. */
static void test_acknowledged_changes_survive_sigkill(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, &options);
    char *src = revision_source(1);
    char *hash = tu_upload_hash(srv, src);
    free(src);
    json_decref(tu_instance_create(srv, "a", "phoenix", NULL, NULL, NULL));
    json_decref(tu_instance_create(srv, "b", "phoenix", NULL, NULL, NULL));
    json_decref(tu_instance_create(srv, "c", "phoenix", NULL, NULL, NULL));
    json_decref(tu_instance_create(srv, "gone", "phoenix", NULL, NULL, NULL));
    tu_instance_start(srv, "b");
    tu_instance_start(srv, "c");
    tu_instance_start(srv, "a");
    tu_instance_stop(srv, "b");
    json_decref(tu_call(srv, "PUT", "/strategy/instances/c", 200,
                        "{\"strategy\": {\"identifier\": \"phoenix\", \"config\": {\"x\": 1}}, "
                        "\"scope\": {\"sim\": {\"symbols\": [\"ETH-USDT\"]}}}"));
    json_decref(tu_call(srv, "DELETE", "/strategy/instances/gone", 200, NULL));
    tu_server_kill(srv);

    tu_server_restart(srv, &options);
    json_t *list = tu_get_json(srv, 200, "/strategy/instances");
    json_t *items = json_object_get(list, "instances");
    assert_int_equal(json_array_size(items), 3);
    assert_string_equal(tu_jstr(items, "0.id"), "a");
    assert_string_equal(tu_jstr(items, "1.id"), "b");
    assert_string_equal(tu_jstr(items, "2.id"), "c");
    json_decref(list);
    json_t *snap = tu_instance_wait(srv, "a", running_with_events, NULL, TU_WAIT_S, "running");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), hash);
    json_decref(snap);
    snap = tu_instance_get(srv, "b");
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "stopReason"), "stopped");
    json_decref(snap);
    snap = tu_instance_wait(srv, "c", running_with_events, NULL, TU_WAIT_S, "running");
    assert_int_equal(tu_jint(snap, "strategy.config.x"), 1);
    assert_string_equal(tu_jstr(snap, "scope.sim.symbols.0"), "ETH-USDT");
    json_decref(snap);
    free(hash);
    tu_server_stop(srv);
}

/* A provider dropped from the configuration while the gateway was down:
 * the instances that ran on it do not run on nothing; their snapshot says
 * why, and they run again once the provider is back. */
static void test_instances_of_a_dropped_provider(void **state)
{
    struct tu_server *srv = *state;
    const char *with = "providers:\n"
                       "  - name: sim\n"
                       "    adapter: simulated\n"
                       "    config: {symbols: [BTC-USDT], tickRate: 200}\n"
                       "  - name: extra\n"
                       "    adapter: simulated\n"
                       "    config: {symbols: [XRP-USDT], tickRate: 200}\n";
    const char *without = "providers:\n"
                          "  - name: sim\n"
                          "    adapter: simulated\n"
                          "    config: {symbols: [BTC-USDT], tickRate: 200}\n";
    struct tu_server_options opts = {.config_yaml = with};
    tu_server_start(srv, &opts);
    char *src = revision_source(1);
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    json_decref(tu_instance_create(srv, "stranded", "phoenix", NULL, "extra", "[\"XRP-USDT\"]"));
    json_decref(tu_instance_create(srv, "fine", "phoenix", NULL, "sim", NULL));
    tu_instance_start(srv, "stranded");
    tu_instance_start(srv, "fine");
    json_decref(tu_instance_wait_events(srv, "stranded", 5, TU_WAIT_S));
    tu_server_stop(srv);

    tu_write_text(srv->config_path, without);
    tu_server_restart(srv, NULL);
    json_t *snap = tu_instance_wait(srv, "fine", running_with_events, NULL, TU_WAIT_S, "running");
    json_decref(snap);
    snap = tu_instance_get(srv, "stranded");
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "stopReason"), "startFailed");
    assert_non_null(strstr(tu_jstr(snap, "lastError.message"), "extra"));
    json_decref(snap);
    tu_server_stop(srv);

    /* the provider is back: so is the instance */
    tu_write_text(srv->config_path, with);
    tu_server_restart(srv, NULL);
    snap = tu_instance_wait(srv, "stranded", running_with_events, NULL, TU_WAIT_S, "running");
    assert_true(json_is_null(json_object_get(snap, "stopReason")));
    json_decref(snap);
    tu_server_stop(srv);
}

/* An instance whose revision's file no longer holds its bytes at a restart
 * is not moved to what its tag names now (a revision staged under the tag
 * without a refresh), running or stopped: it stays pinned, stopped, and
 * says why; a start moves it. */
static void test_invalid_revision_is_not_replaced_at_restart(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, &options);
    char *v1 = revision_source(1), *v2 = revision_source(2);
    char h1[65], h2[65];
    tu_upload_expect(srv, v1, "{\"tag\": \"v1\", \"aliases\": [\"prod\"]}", 201, h1);
    json_decref(tu_instance_create(srv, "fenix", "phoenix:prod", NULL, NULL, NULL));
    tu_instance_start(srv, "fenix");
    tu_upload_expect(srv, v2, "{\"tag\": \"v2\", \"aliases\": [\"prod\"]}", 201, h2);
    tu_server_stop(srv);

    char *file = tu_path("%s/phoenix/%s/phoenix.js", srv->strategies_dir, h1);
    char *tampered = tu_path("%s// tampered\n", v1);
    tu_write_text(file, tampered);
    tu_server_restart(srv, &options);
    json_t *snap = tu_instance_get(srv, "fenix");
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "stopReason"), "startFailed");
    assert_non_null(strstr(tu_jstr(snap, "strategy.hash"), h1));
    assert_non_null(strstr(tu_jstr(snap, "lastError.message"), "not moved"));
    json_decref(snap);
    tu_server_restart(srv, &options); /* and it stays so */
    snap = tu_instance_get(srv, "fenix");
    assert_true(json_is_false(json_object_get(snap, "running")));
    /* stopped now, it is still not moved by a restart (that had re-pinned
     * it to v2 without a refresh result or an audit entry): its start is
     * what moves it */
    assert_non_null(strstr(tu_jstr(snap, "strategy.hash"), h1));
    json_decref(snap);
    tu_instance_start(srv, "fenix");
    snap = tu_instance_get(srv, "fenix");
    assert_non_null(strstr(tu_jstr(snap, "strategy.hash"), h2));
    json_decref(snap);
    tu_server_stop(srv);
    free(tampered);
    free(file);
    free(v1);
    free(v2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_clean_restart_restores_every_instance, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_sigkill_restores_every_instance, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_acknowledged_changes_survive_sigkill, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_invalid_revision_is_not_replaced_at_restart,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_instances_of_a_dropped_provider, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
