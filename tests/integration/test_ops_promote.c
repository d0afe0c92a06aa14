/*
 * The promote workflow over HTTP, end to end: upload a revision with a tag
 * and an alias, find it by hash, refresh exactly the instances that follow
 * the alias, and watch strategy_revision_instances follow the fleet. A tag
 * move with refresh: true does the same in one request.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct fleet {
    char hex1[65], hex2[65], other[65];
    char *spelled1, *spelled2;
    char *pinned_selector; /* d's canonical selector, "trend@sha256:<hex1>" */
};

static void fleet_free(struct fleet *f)
{
    free(f->spelled1);
    free(f->spelled2);
    free(f->pinned_selector);
}

static void put_tag(struct tu_server *srv, const char *name, const char *tag, const char *hex)
{
    char *path = tu_path("/strategies/modules/%s/tags/%s", name, tag);
    char *body = tu_path("{\"hash\": \"sha256:%s\"}", hex);
    struct tu_response res;
    tu_send(srv, &res, "PUT", path, body);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    free(body);
    free(path);
}

static double gauge(const char *metrics, const char *strategy, const char *hex)
{
    char *hash = tu_path("sha256:%s", hex);
    double v = tu_ops_metric(metrics, "strategy_revision_instances", "strategy", strategy, "hash",
                             hash, NULL);
    free(hash);
    return v;
}

static double actions(const char *metrics, const char *strategy, const char *hex,
                      const char *action)
{
    char *hash = tu_path("sha256:%s", hex);
    double v = tu_ops_metric(metrics, "strategy_revision_instances_total", "strategy", strategy,
                             "hash", hash, "action", action, NULL);
    free(hash);
    return isnan(v) ? 0 : v;
}

static void expect_pin(struct tu_server *srv, const char *id, const char *hex, bool running)
{
    json_t *snap = tu_instance_get(srv, id);
    char *want = tu_path("sha256:%s", hex);
    if (strcmp(tu_jstr(snap, "strategy.hash"), want) != 0 ||
        json_is_true(json_object_get(snap, "running")) != running) {
        char *dump = json_dumps(snap, JSON_COMPACT);
        fail_msg("instance %s: expected %s on %s, got %s", id, running ? "running" : "stopped",
                 want, dump);
    }
    /* the embedded usage is the pinned revision's */
    assert_string_equal(tu_jstr(snap, "usage.hash"), want);
    free(want);
    json_decref(snap);
}

static void expect_result(const json_t *response, const char *id, const char *selector,
                          const char *reason, const char *hash, const char *previous)
{
    const json_t *r = tu_ops_refresh_result(response, id);
    if (!r) {
        char *dump = json_dumps(response, JSON_COMPACT);
        fail_msg("no refresh result for %s in %s", id, dump);
    }
    assert_string_equal(tu_jstr(r, "reason"), reason);
    assert_string_equal(tu_jstr(r, "selector"), selector);
    assert_string_equal(tu_jstr(r, "strategy"), "trend");
    assert_string_equal(tu_jstr(r, "hash"), hash);
    if (previous)
        assert_string_equal(tu_jstr(r, "previousHash"), previous);
    else
        assert_null(json_object_get(r, "previousHash"));
}

/* trend v1 (tags v1, latest, prod) and bystander v1 (tags v1, latest,
 * prod). Instances: a, b, c on trend:prod (c stays stopped), d pinned by
 * hash, e on trend (latest), f on bystander:prod; all but c running. */
static void fleet_start(struct tu_server *srv, struct fleet *f)
{
    tu_server_start(srv, NULL);
    char *v1 = tu_module_source("trend", "v1", "onTrade() {},");
    char *other = tu_module_source("bystander", "v1", "onTrade() {},");
    tu_upload_expect(srv, v1, NULL, 201, f->hex1);
    tu_upload_expect(srv, other, NULL, 201, f->other);
    free(v1);
    free(other);
    put_tag(srv, "trend", "prod", f->hex1);
    put_tag(srv, "bystander", "prod", f->other);
    f->spelled1 = tu_path("sha256:%s", f->hex1);
    char *pinned = tu_path("trend@sha256:%s", f->hex1);
    json_decref(tu_instance_create(srv, "a", "trend:prod", NULL, "sim", "[\"BTC-USDT\"]"));
    json_decref(tu_instance_create(srv, "b", "trend:prod", NULL, "sim", "[\"ETH-USDT\"]"));
    json_decref(tu_instance_create(srv, "c", "trend:prod", NULL, "sim", "[\"BTC-USDT\"]"));
    json_decref(tu_instance_create(srv, "d", pinned, NULL, "sim", "[\"BTC-USDT\"]"));
    json_decref(tu_instance_create(srv, "e", "trend", NULL, "sim", "[\"BTC-USDT\"]"));
    json_decref(tu_instance_create(srv, "f", "bystander:prod", NULL, "sim", "[\"BTC-USDT\"]"));
    free(pinned);
    const char *run[] = {"a", "b", "d", "e", "f"};
    for (size_t i = 0; i < sizeof run / sizeof run[0]; i++)
        tu_instance_start(srv, run[i]);
    json_t *snap = tu_instance_get(srv, "d");
    f->pinned_selector = strdup(tu_jstr(snap, "strategy.selector"));
    json_decref(snap);
}

static void upload_v2(struct tu_server *srv, struct fleet *f)
{
    char *v2 = tu_module_source("trend", "v2", "onTrade() {}, onTicker() {},");
    struct tu_response res;
    tu_upload(srv, &res, v2, "{\"tag\": \"v2\", \"aliases\": [\"prod\"]}");
    tu_assert_status(&res, 201);
    assert_string_equal(tu_jstr(res.json, "status"), "created");
    assert_string_equal(tu_jstr(res.json, "module.tag"), "v2");
    assert_string_equal(tu_jstr(res.json, "module.aliases.0"), "prod");
    /* latest stayed where it was: the answer lists only what moved */
    assert_int_equal(json_array_size(tu_jget(res.json, "module.aliases")), 1);
    memcpy(f->hex2, tu_jstr(res.json, "module.hash") + 7, 65);
    f->spelled2 = tu_path("sha256:%s", f->hex2);
    tu_response_free(&res);
    free(v2);
}

/* ------------------------------------------------------------ the workflow */

static void test_promote_with_targeted_refresh(void **state)
{
    struct tu_server *srv = *state;
    struct fleet f = {0};
    fleet_start(srv, &f);

    char *m = tu_ops_metrics(srv);
    assert_true(gauge(m, "trend", f.hex1) == 4);
    assert_true(gauge(m, "bystander", f.other) == 1);
    double stops_before = actions(m, "trend", f.hex1, "stop");
    free(m);

    /* 1. upload the new revision with its version tag and the prod alias */
    upload_v2(srv, &f);
    json_t *mod = tu_get_json(srv, 200, "/strategies/modules/trend");
    assert_string_equal(tu_jstr(mod, "tagAliases.prod"), f.spelled2);
    assert_string_equal(tu_jstr(mod, "tagAliases.latest"), f.spelled1); /* latest stays */
    json_decref(mod);

    /* 2. find it by hash: a prefix, the full spelling, upper case */
    char prefix[13];
    memcpy(prefix, f.hex2, 12);
    prefix[12] = '\0';
    char upper[65];
    for (int i = 0; i < 65; i++)
        upper[i] = (char)(f.hex2[i] >= 'a' && f.hex2[i] <= 'f' ? f.hex2[i] - 32 : f.hex2[i]);
    const char *queries[] = {prefix, f.spelled2, upper};
    for (size_t q = 0; q < 3; q++) {
        json_t *found = tu_get_json(srv, 200, "/strategies/modules?hash=%s", queries[q]);
        assert_int_equal(tu_jint(found, "total"), 1);
        assert_int_equal(json_array_size(json_object_get(found, "modules")), 1);
        assert_string_equal(tu_jstr(found, "modules.0.name"), "trend");
        assert_int_equal(json_array_size(tu_jget(found, "modules.0.revisions")), 1);
        assert_string_equal(tu_jstr(found, "modules.0.revisions.0.hash"), f.spelled2);
        json_t *tags = tu_jget(found, "modules.0.revisions.0.tags");
        assert_int_equal(json_array_size(tags), 2);
        assert_string_equal(json_string_value(json_array_get(tags, 0)), "prod");
        assert_string_equal(json_string_value(json_array_get(tags, 1)), "v2");
        /* nothing runs it yet */
        assert_int_equal(json_array_size(tu_jget(found, "modules.0.running")), 0);
        json_decref(found);
    }
    json_t *none = tu_get_json(srv, 200, "/strategies/modules?hash=%s&strategy=bystander", prefix);
    assert_int_equal(tu_jint(none, "total"), 0);
    assert_int_equal(json_array_size(json_object_get(none, "modules")), 0);
    json_decref(none);

    /* 3. targeted refresh: exactly a, b and c follow trend:prod */
    json_t *r = tu_ops_refresh(srv, "{\"strategies\": [\"trend:prod\"]}", 200);
    assert_string_equal(tu_jstr(r, "status"), "ok");
    json_t *results = json_object_get(r, "results");
    assert_int_equal(json_array_size(results), 3);
    const char *order[] = {"a", "b", "c"};
    for (size_t i = 0; i < 3; i++) {
        assert_string_equal(json_string_value(tu_jget(json_array_get(results, i), "instances.0")),
                            order[i]);
        expect_result(r, order[i], "trend:prod", "refreshed", f.spelled2, f.spelled1);
    }
    json_decref(r);
    expect_pin(srv, "a", f.hex2, true);
    expect_pin(srv, "b", f.hex2, true);
    expect_pin(srv, "c", f.hex2, false); /* re-pinned, still stopped */
    expect_pin(srv, "d", f.hex1, true);  /* pinned by hash */
    expect_pin(srv, "e", f.hex1, true);  /* follows latest, not targeted */
    json_t *fsnap = tu_instance_get(srv, "f");
    assert_string_equal(tu_jstr(fsnap, "strategy.hash") + 7, f.other);
    json_decref(fsnap);

    /* 4. the gauge shows the fleet on the new hash */
    m = tu_ops_metrics(srv);
    assert_true(gauge(m, "trend", f.hex2) == 2);
    assert_true(gauge(m, "trend", f.hex1) == 2);
    assert_true(gauge(m, "bystander", f.other) == 1);
    assert_true(actions(m, "trend", f.hex1, "stop") == stops_before + 2);
    assert_true(actions(m, "trend", f.hex2, "start") == 2);
    assert_true(tu_ops_metric(m, "stratd_instance_stops_total", "reason", "refreshed", NULL) == 2);
    free(m);

    /* the listing's running block agrees */
    json_t *running = tu_get_json(srv, 200, "/strategies/modules?runningOnly=true&strategy=trend");
    assert_int_equal(tu_jint(running, "total"), 1);
    json_t *block = tu_jget(running, "modules.0.running");
    assert_int_equal(json_array_size(block), 2);
    size_t i;
    json_t *u;
    json_array_foreach(block, i, u)
    {
        const char *h = tu_jstr(u, "hash");
        bool is2 = strcmp(h, f.spelled2) == 0;
        assert_int_equal(tu_jint(u, "count"), 2);
        assert_true(json_is_true(json_object_get(u, "running")));
        assert_string_equal(tu_jstr(u, "instances.0"), is2 ? "a" : "d");
        assert_string_equal(tu_jstr(u, "instances.1"), is2 ? "b" : "e");
    }
    json_decref(running);

    /* 5. a second refresh has nothing to do */
    r = tu_ops_refresh(srv, "{\"strategies\": [\"trend:prod\"]}", 200);
    assert_int_equal(json_array_size(json_object_get(r, "results")), 3);
    for (size_t k = 0; k < 3; k++)
        expect_result(r, order[k], "trend:prod", "alreadyPinned", f.spelled2, NULL);
    json_decref(r);

    /* 6. the instances stayed put through it */
    m = tu_ops_metrics(srv);
    assert_true(gauge(m, "trend", f.hex2) == 2);
    assert_true(actions(m, "trend", f.hex2, "start") == 2);
    free(m);

    fleet_free(&f);
    tu_server_stop(srv);
}

/* Rolling back: PUT the tag onto the old revision with refresh: true moves
 * the instances that follow the tag in the same request (and only those:
 * the strategy's pinned and `latest` instances are not touched); the
 * response carries the results. */
static void test_tag_move_with_refresh_rolls_back(void **state)
{
    struct tu_server *srv = *state;
    struct fleet f = {0};
    fleet_start(srv, &f);
    upload_v2(srv, &f);
    json_decref(tu_ops_refresh(srv, "{\"strategies\": [\"trend:prod\"]}", 200));

    char *body = tu_path("{\"hash\": \"%s\", \"refresh\": true}", f.spelled1);
    struct tu_response res;
    tu_send(srv, &res, "PUT", "/strategies/modules/trend/tags/prod", body);
    free(body);
    tu_assert_status(&res, 200);
    assert_string_equal(tu_jstr(res.json, "hash"), f.spelled1);
    assert_string_equal(tu_jstr(res.json, "previousHash"), f.spelled2);
    assert_true(json_is_true(json_object_get(res.json, "refresh")));
    /* the instances on trend:prod, sorted by instance */
    json_t *results = json_object_get(res.json, "results");
    assert_int_equal(json_array_size(results), 3);
    const char *order[] = {"a", "b", "c"};
    for (size_t i = 0; i < 3; i++)
        assert_string_equal(json_string_value(tu_jget(json_array_get(results, i), "instances.0")),
                            order[i]);
    expect_result(res.json, "a", "trend:prod", "refreshed", f.spelled1, f.spelled2);
    expect_result(res.json, "b", "trend:prod", "refreshed", f.spelled1, f.spelled2);
    expect_result(res.json, "c", "trend:prod", "refreshed", f.spelled1, f.spelled2);
    assert_null(tu_ops_refresh_result(res.json, "d")); /* pinned by hash */
    assert_null(tu_ops_refresh_result(res.json, "e")); /* on trend's latest */
    assert_null(tu_ops_refresh_result(res.json, "f")); /* another strategy */
    tu_response_free(&res);

    /* the audit log has the move and the refresh it caused, in that order */
    json_t *audit = tu_audit_entries(srv);
    size_t n = json_array_size(audit);
    assert_true(n >= 2);
    const json_t *move = json_array_get(audit, n - 2), *refresh = json_array_get(audit, n - 1);
    assert_string_equal(tu_jstr(move, "action"), "tag.move");
    assert_string_equal(tu_jstr(move, "tag"), "prod");
    assert_string_equal(tu_jstr(move, "to"), f.spelled1);
    assert_string_equal(tu_jstr(refresh, "action"), "refresh");
    assert_string_equal(tu_jstr(refresh, "request.strategies.0"), "trend:prod");
    /* a summary: counts by reason, and the changes with every moved id */
    assert_int_equal(tu_jint(refresh, "counts.refreshed"), 3);
    assert_null(tu_jget(refresh, "counts.alreadyPinned"));
    const json_t *changes = json_object_get(refresh, "changes");
    assert_int_equal(json_array_size(changes), 1);
    assert_string_equal(tu_jstr(refresh, "changes.0.selector"), "trend:prod");
    assert_string_equal(tu_jstr(refresh, "changes.0.hash"), f.spelled1);
    assert_string_equal(tu_jstr(refresh, "changes.0.previousHash"), f.spelled2);
    assert_string_equal(tu_jstr(refresh, "changes.0.instances.0"), "a");
    assert_string_equal(tu_jstr(refresh, "changes.0.instances.2"), "c");
    assert_null(json_object_get(refresh, "results"));
    json_decref(audit);

    expect_pin(srv, "a", f.hex1, true);
    expect_pin(srv, "c", f.hex1, false);
    char *m = tu_ops_metrics(srv);
    assert_true(gauge(m, "trend", f.hex1) == 4);
    assert_true(gauge(m, "trend", f.hex2) == 0); /* idle, still reported */
    /* prod moved twice: by the upload's alias, then by the PUT */
    assert_true(tu_ops_metric(m, "strategy_tag_reassigned_total", "strategy", "trend", "tag",
                              "prod", NULL) == 2);
    free(m);

    /* without refresh the tag moves and nothing else */
    body = tu_path("{\"hash\": \"%s\"}", f.spelled2);
    tu_send(srv, &res, "PUT", "/strategies/modules/trend/tags/prod", body);
    free(body);
    tu_assert_status(&res, 200);
    assert_false(json_is_true(json_object_get(res.json, "refresh")));
    assert_null(json_object_get(res.json, "results"));
    tu_response_free(&res);
    expect_pin(srv, "a", f.hex1, true);

    fleet_free(&f);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_promote_with_targeted_refresh, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_tag_move_with_refresh_rolls_back, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
