/*
 * The drift scan over HTTP, end to end: which revisions carry traffic
 * (GET /strategies/modules?runningOnly=true with its filters and paging),
 * who runs one of them (GET /strategies/modules/{selector}/usage, with and
 * without the stopped instances that still pin it), and the tag -> hash
 * snapshot with every usage entry (GET /strategies/registry). Usage
 * outlives a restart, so a dormant revision keeps its history.
 */
#include "testutil.h"

#include "core/clock.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* alpha: v1 and v2 (latest); beta: v1; gamma: v1 (never run); delta: v1.
 * alpha-a runs alpha:v1, alpha-b runs alpha (v2), alpha-c pins alpha:v1
 * stopped (never ran), beta-a ran beta and was stopped, delta-a runs
 * delta. */
struct scene {
    char alpha1[65], alpha2[65], beta[65], gamma[65], delta[65];
};

static void upload(struct tu_server *srv, const char *name, const char *tag, const char *body,
                   const char *fields, char hex[65])
{
    char *src = tu_module_source(name, tag, body);
    tu_upload_expect(srv, src, fields, 201, hex);
    free(src);
}

static void create(struct tu_server *srv, const char *id, const char *selector, const char *symbol)
{
    char *symbols = tu_path("[\"%s\"]", symbol);
    json_decref(tu_instance_create(srv, id, selector, NULL, "sim", symbols));
    free(symbols);
}

static void scene_start(struct tu_server *srv, struct scene *s)
{
    tu_server_start(srv, NULL);
    upload(srv, "alpha", "v1", "onTrade() {},", NULL, s->alpha1);
    upload(srv, "alpha", "v2", "onTrade() {}, onTicker() {},", "{\"promoteLatest\": true}",
           s->alpha2);
    upload(srv, "beta", "v1", "onTrade() {},", NULL, s->beta);
    upload(srv, "gamma", "v1", "onTrade() {},", NULL, s->gamma);
    upload(srv, "delta", "v1", "onTrade() {},", NULL, s->delta);
    create(srv, "alpha-a", "alpha:v1", "BTC-USDT");
    create(srv, "alpha-b", "alpha", "ETH-USDT");
    create(srv, "alpha-c", "alpha:v1", "BTC-USDT");
    create(srv, "beta-a", "beta", "BTC-USDT");
    create(srv, "delta-a", "delta", "BTC-USDT");
    tu_instance_start(srv, "alpha-a");
    tu_instance_start(srv, "alpha-b");
    tu_instance_start(srv, "beta-a");
    tu_instance_start(srv, "delta-a");
    tu_instance_stop(srv, "beta-a");
}

static const char *str_at(const json_t *list, size_t i)
{
    return json_string_value(json_array_get(list, i));
}

static int64_t ms_of(const json_t *doc, const char *field)
{
    const char *text = tu_jstr(doc, field);
    int64_t ms = 0;
    if (clock_parse_rfc3339(text, &ms) != 0)
        fail_msg("%s '%s' is not an RFC 3339 date-time", field, text);
    return ms;
}

/* A ModuleRevisionUsage document: strategy, hash, count, running, ids. */
static void expect_usage(const json_t *u, const char *strategy, const char *hex, int count,
                         const char *const *ids)
{
    char *hash = tu_path("sha256:%s", hex);
    assert_string_equal(tu_jstr(u, "strategy"), strategy);
    assert_string_equal(tu_jstr(u, "hash"), hash);
    assert_int_equal(tu_jint(u, "count"), count);
    assert_int_equal(json_is_true(json_object_get(u, "running")), count > 0);
    if (ids) {
        const json_t *list = json_object_get(u, "instances");
        assert_int_equal(json_array_size(list), count);
        for (int i = 0; i < count; i++)
            assert_string_equal(str_at(list, (size_t)i), ids[i]);
    }
    free(hash);
}

/* ------------------------------------------------------------ listing */

static void test_running_only_listing(void **state)
{
    struct tu_server *srv = *state;
    struct scene s;
    scene_start(srv, &s);

    /* every module, then only those with running instances */
    json_t *all = tu_get_json(srv, 200, "/strategies/modules");
    assert_int_equal(tu_jint(all, "total"), 4);
    json_decref(all);
    json_t *r = tu_get_json(srv, 200, "/strategies/modules?runningOnly=true");
    assert_int_equal(tu_jint(r, "total"), 2);
    assert_true(json_is_null(json_object_get(r, "limit")));
    assert_int_equal(tu_jint(r, "offset"), 0);
    const json_t *mods = json_object_get(r, "modules");
    assert_int_equal(json_array_size(mods), 2);
    assert_string_equal(tu_jstr(r, "modules.0.name"), "alpha");
    assert_string_equal(tu_jstr(r, "modules.1.name"), "delta");
    /* alpha: both revisions run, each listed in the running block */
    const json_t *alpha = json_array_get(mods, 0);
    assert_int_equal(json_array_size(json_object_get(alpha, "revisions")), 2);
    const json_t *block = json_object_get(alpha, "running");
    assert_int_equal(json_array_size(block), 2);
    for (size_t i = 0; i < 2; i++) {
        const json_t *u = json_array_get(block, i);
        bool v1 = strcmp(tu_jstr(u, "hash") + 7, s.alpha1) == 0;
        const char *ids[] = {v1 ? "alpha-a" : "alpha-b"};
        expect_usage(u, "alpha", v1 ? s.alpha1 : s.alpha2, 1, ids);
        assert_true(json_is_string(json_object_get(u, "firstSeen")));
        assert_true(json_is_string(json_object_get(u, "lastSeen")));
    }
    json_decref(r);

    /* filters combine: runningOnly with a hash prefix keeps that revision */
    char prefix[13];
    memcpy(prefix, s.alpha1, 12);
    prefix[12] = '\0';
    r = tu_get_json(srv, 200, "/strategies/modules?runningOnly=true&hash=%s", prefix);
    assert_int_equal(tu_jint(r, "total"), 1);
    assert_int_equal(json_array_size(tu_jget(r, "modules.0.revisions")), 1);
    assert_string_equal(tu_jstr(r, "modules.0.revisions.0.hash") + 7, s.alpha1);
    assert_int_equal(json_array_size(tu_jget(r, "modules.0.running")), 1);
    assert_string_equal(tu_jstr(r, "modules.0.running.0.hash") + 7, s.alpha1);
    json_decref(r);
    /* ... with a strategy that has stopped instances only: nothing */
    r = tu_get_json(srv, 200, "/strategies/modules?runningOnly=true&strategy=beta");
    assert_int_equal(tu_jint(r, "total"), 0);
    assert_int_equal(json_array_size(json_object_get(r, "modules")), 0);
    json_decref(r);
    /* ... a revision that runs with a strategy filter */
    r = tu_get_json(srv, 200, "/strategies/modules?runningOnly=true&strategy=delta&hash=%s",
                    s.delta);
    assert_int_equal(tu_jint(r, "total"), 1);
    assert_string_equal(tu_jstr(r, "modules.0.name"), "delta");
    json_decref(r);
    /* ... a hash that does not run */
    r = tu_get_json(srv, 200, "/strategies/modules?runningOnly=true&hash=sha256:%s", s.gamma);
    assert_int_equal(tu_jint(r, "total"), 0);
    json_decref(r);
    /* without runningOnly the running block is still there (empty when idle) */
    r = tu_get_json(srv, 200, "/strategies/modules?strategy=gamma");
    assert_int_equal(tu_jint(r, "total"), 1);
    assert_true(json_is_array(tu_jget(r, "modules.0.running")));
    assert_int_equal(json_array_size(tu_jget(r, "modules.0.running")), 0);
    json_decref(r);

    /* paging: total counts after the filters, pages cut the sorted list */
    const char *names[] = {"alpha", "beta", "delta", "gamma"};
    for (int offset = 0; offset <= 4; offset++) {
        for (int limit = 0; limit <= 3; limit++) {
            r = tu_get_json(srv, 200, "/strategies/modules?limit=%d&offset=%d", limit, offset);
            assert_int_equal(tu_jint(r, "total"), 4);
            assert_int_equal(tu_jint(r, "limit"), limit);
            assert_int_equal(tu_jint(r, "offset"), offset);
            const json_t *page = json_object_get(r, "modules");
            int expect = offset >= 4 ? 0 : (4 - offset < limit ? 4 - offset : limit);
            assert_int_equal(json_array_size(page), expect);
            for (int i = 0; i < expect; i++)
                assert_string_equal(tu_jstr(json_array_get(page, (size_t)i), "name"),
                                    names[offset + i]);
            json_decref(r);
        }
    }
    r = tu_get_json(srv, 200, "/strategies/modules?runningOnly=true&limit=1&offset=1");
    assert_int_equal(tu_jint(r, "total"), 2);
    assert_int_equal(json_array_size(json_object_get(r, "modules")), 1);
    assert_string_equal(tu_jstr(r, "modules.0.name"), "delta");
    json_decref(r);
    r = tu_get_json(srv, 200, "/strategies/modules?runningOnly=1&limit=0");
    assert_int_equal(tu_jint(r, "total"), 2);
    assert_int_equal(json_array_size(json_object_get(r, "modules")), 0);
    json_decref(r);

    /* malformed parameters are 400s */
    const char *bad[] = {"runningOnly=maybe", "limit=-1", "offset=x", "hash=xyz",
                         "strategy=Not%20A%20Name"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        struct tu_response res;
        tu_get(srv, &res, "/strategies/modules?%s", bad[i]);
        tu_assert_error(&res, 400);
        tu_response_free(&res);
    }
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ drill-down */

static void test_usage_drill_down(void **state)
{
    struct tu_server *srv = *state;
    struct scene s;
    scene_start(srv, &s);
    int64_t before = clock_wall_ms();

    /* every selector form names the same revision */
    char *forms[5];
    forms[0] = tu_path("alpha:v1");
    forms[1] = tu_path("alpha@sha256:%s", s.alpha1);
    forms[2] = tu_path("alpha@%s", s.alpha1);
    forms[3] = tu_path("alpha@%.12s", s.alpha1);
    forms[4] = tu_escape(forms[1]);
    for (size_t i = 0; i < 5; i++) {
        json_t *u = tu_get_json(srv, 200, "/strategies/modules/%s/usage", forms[i]);
        /* the selector as given (decoded) */
        assert_string_equal(tu_jstr(u, "selector"), i == 4 ? forms[1] : forms[i]);
        assert_string_equal(tu_jstr(u, "strategy"), "alpha");
        assert_string_equal(tu_jstr(u, "hash") + 7, s.alpha1);
        const char *ids[] = {"alpha-a"};
        expect_usage(json_object_get(u, "usage"), "alpha", s.alpha1, 1, ids);
        /* lastSeen is now while the revision runs */
        assert_true(ms_of(u, "usage.lastSeen") >= before);
        assert_true(ms_of(u, "usage.firstSeen") <= ms_of(u, "usage.lastSeen"));
        assert_int_equal(tu_jint(u, "total"), 1);
        assert_int_equal(tu_jint(u, "offset"), 0);
        assert_true(json_is_null(json_object_get(u, "limit")));
        const json_t *inst = tu_jget(u, "instances.0");
        assert_string_equal(tu_jstr(inst, "id"), "alpha-a");
        assert_true(json_is_true(json_object_get(inst, "running")));
        assert_string_equal(tu_jstr(inst, "strategyIdentifier"), "alpha");
        assert_string_equal(tu_jstr(inst, "strategyHash") + 7, s.alpha1);
        /* the summaries embed the revision's usage without the id list */
        assert_true(json_is_null(tu_jget(inst, "usage.instances")));
        assert_int_equal(tu_jint(inst, "usage.count"), 1);
        json_decref(u);
    }
    for (size_t i = 0; i < 5; i++)
        free(forms[i]);
    json_t *latest = tu_get_json(srv, 200, "/strategies/modules/alpha/usage");
    assert_string_equal(tu_jstr(latest, "hash") + 7, s.alpha2);
    assert_string_equal(tu_jstr(latest, "instances.0.id"), "alpha-b");
    json_decref(latest);

    /* the stopped instance that still pins alpha v1 */
    json_t *u = tu_get_json(srv, 200, "/strategies/modules/alpha:v1/usage?includeStopped=true");
    assert_int_equal(tu_jint(u, "total"), 2);
    assert_string_equal(tu_jstr(u, "instances.0.id"), "alpha-a");
    assert_string_equal(tu_jstr(u, "instances.1.id"), "alpha-c");
    assert_false(json_is_true(tu_jget(u, "instances.1.running")));
    /* usage counts running instances only */
    assert_int_equal(tu_jint(u, "usage.count"), 1);
    json_decref(u);
    /* paging */
    u = tu_get_json(srv, 200,
                    "/strategies/modules/alpha:v1/usage?includeStopped=true&limit=1&offset=1");
    assert_int_equal(tu_jint(u, "total"), 2);
    assert_int_equal(tu_jint(u, "limit"), 1);
    assert_int_equal(tu_jint(u, "offset"), 1);
    assert_int_equal(json_array_size(json_object_get(u, "instances")), 1);
    assert_string_equal(tu_jstr(u, "instances.0.id"), "alpha-c");
    json_decref(u);
    u = tu_get_json(srv, 200, "/strategies/modules/alpha:v1/usage?includeStopped=true&offset=5");
    assert_int_equal(tu_jint(u, "total"), 2);
    assert_int_equal(json_array_size(json_object_get(u, "instances")), 0);
    json_decref(u);
    /* a limit near LLONG_MAX is "all the rest": offset + limit would wrap */
    u = tu_get_json(srv, 200,
                    "/strategies/modules/alpha:v1/usage?includeStopped=true"
                    "&limit=9223372036854775807&offset=1");
    assert_int_equal(json_array_size(json_object_get(u, "instances")), 1);
    assert_string_equal(tu_jstr(u, "instances.0.id"), "alpha-c");
    json_decref(u);
    u = tu_get_json(srv, 200,
                    "/strategies/modules/alpha:v1/usage?includeStopped=true"
                    "&limit=2&offset=9223372036854775807");
    assert_int_equal(json_array_size(json_object_get(u, "instances")), 0);
    json_decref(u);

    /* a dormant revision: stopped, with history */
    u = tu_get_json(srv, 200, "/strategies/modules/beta/usage");
    expect_usage(json_object_get(u, "usage"), "beta", s.beta, 0, NULL);
    assert_int_equal(tu_jint(u, "total"), 0);
    assert_true(ms_of(u, "usage.firstSeen") <= ms_of(u, "usage.lastSeen"));
    json_decref(u);
    u = tu_get_json(srv, 200, "/strategies/modules/beta/usage?includeStopped=1");
    assert_int_equal(tu_jint(u, "total"), 1);
    assert_string_equal(tu_jstr(u, "instances.0.id"), "beta-a");
    assert_string_equal(tu_jstr(u, "instances.0.stopReason"), "stopped");
    json_decref(u);
    /* a revision never run */
    u = tu_get_json(srv, 200, "/strategies/modules/gamma/usage?includeStopped=true");
    expect_usage(json_object_get(u, "usage"), "gamma", s.gamma, 0, NULL);
    assert_true(json_is_null(tu_jget(u, "usage.firstSeen")));
    assert_true(json_is_null(tu_jget(u, "usage.lastSeen")));
    assert_int_equal(json_array_size(tu_jget(u, "usage.instances")), 0);
    assert_int_equal(tu_jint(u, "total"), 0);
    json_decref(u);

    /* errors: unknown, malformed, bad parameters */
    struct tu_response res;
    tu_get(srv, &res, "/strategies/modules/nosuch/usage");
    tu_assert_error(&res, 404);
    tu_response_free(&res);
    tu_get(srv, &res, "/strategies/modules/alpha:v9/usage");
    tu_assert_error(&res, 404);
    tu_response_free(&res);
    tu_get(srv, &res, "/strategies/modules/Bad%%20Name/usage");
    tu_assert_error(&res, 400);
    tu_response_free(&res);
    tu_get(srv, &res, "/strategies/modules/alpha/usage?includeStopped=perhaps");
    tu_assert_error(&res, 400);
    tu_response_free(&res);
    tu_get(srv, &res, "/strategies/modules/alpha/usage?limit=-2");
    tu_assert_error(&res, 400);
    tu_response_free(&res);

    tu_server_stop(srv);
}

/* Instance documents link to their revision's usage; following the link
 * answers for that revision. */
static void test_instances_link_to_usage(void **state)
{
    struct tu_server *srv = *state;
    struct scene s;
    scene_start(srv, &s);

    json_t *snap = tu_instance_get(srv, "alpha-a");
    const char *link = tu_jstr(snap, "links.usage");
    char *want = tu_path("/strategies/modules/alpha%%40sha256%%3A%s/usage", s.alpha1);
    assert_string_equal(link, want);
    free(want);
    assert_true(json_is_null(tu_jget(snap, "usage.instances")));
    assert_int_equal(tu_jint(snap, "usage.count"), 1);
    assert_true(json_is_true(tu_jget(snap, "usage.running")));
    assert_string_equal(tu_jstr(snap, "links.self"), "/strategy/instances/alpha-a");
    json_t *u = tu_get_json(srv, 200, "%s", link);
    assert_string_equal(tu_jstr(u, "hash") + 7, s.alpha1);
    assert_string_equal(tu_jstr(u, "usage.instances.0"), "alpha-a");
    json_decref(u);
    json_decref(snap);

    /* a stopped instance's embedded usage is its pinned revision's */
    snap = tu_instance_get(srv, "beta-a");
    assert_int_equal(tu_jint(snap, "usage.count"), 0);
    assert_false(json_is_true(tu_jget(snap, "usage.running")));
    assert_true(json_is_string(tu_jget(snap, "usage.lastSeen")));
    json_decref(snap);

    /* the fleet listing: one summary per instance, each with usage */
    json_t *list = tu_get_json(srv, 200, "/strategy/instances");
    const json_t *items = json_object_get(list, "instances");
    assert_int_equal(json_array_size(items), 5);
    size_t i;
    const json_t *item;
    json_array_foreach(items, i, item)
    {
        assert_true(json_is_null(tu_jget(item, "usage.instances")));
        assert_string_equal(tu_jstr(item, "usage.hash"), tu_jstr(item, "strategyHash"));
        json_t *follow = tu_get_json(srv, 200, "%s", tu_jstr(item, "links.usage"));
        assert_string_equal(tu_jstr(follow, "hash"), tu_jstr(item, "strategyHash"));
        json_decref(follow);
    }
    json_decref(list);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ export */

static const json_t *usage_entry(const json_t *doc, const char *strategy, const char *hex)
{
    size_t i;
    const json_t *u;
    json_array_foreach(json_object_get(doc, "usage"), i, u)
    {
        if (strcmp(tu_jstr(u, "strategy"), strategy) == 0 &&
            strcmp(tu_jstr(u, "hash") + 7, hex) == 0)
            return u;
    }
    return NULL;
}

static void expect_export(struct tu_server *srv, const struct scene *s, bool alpha_a_running)
{
    json_t *doc = tu_get_json(srv, 200, "/strategies/registry");
    /* the registry as on disk */
    json_t *disk = tu_assert_registry_sound(srv->strategies_dir);
    assert_true(json_equal(json_object_get(doc, "registry"), disk));
    json_decref(disk);
    char *v1 = tu_path("sha256:%s", s->alpha1);
    assert_string_equal(tu_jstr(doc, "registry.alpha.tags.v1"), v1);
    free(v1);
    /* every usage entry, sorted by strategy then hash; gamma never ran */
    const json_t *list = json_object_get(doc, "usage");
    assert_int_equal(json_array_size(list), 4);
    for (size_t i = 1; i < json_array_size(list); i++) {
        const json_t *a = json_array_get(list, i - 1), *b = json_array_get(list, i);
        int c = strcmp(tu_jstr(a, "strategy"), tu_jstr(b, "strategy"));
        assert_true(c < 0 || (c == 0 && strcmp(tu_jstr(a, "hash"), tu_jstr(b, "hash")) < 0));
    }
    const char *a_ids[] = {"alpha-a"};
    expect_usage(usage_entry(doc, "alpha", s->alpha1), "alpha", s->alpha1, alpha_a_running ? 1 : 0,
                 alpha_a_running ? a_ids : NULL);
    const char *b_ids[] = {"alpha-b"};
    expect_usage(usage_entry(doc, "alpha", s->alpha2), "alpha", s->alpha2, 1, b_ids);
    const char *none[] = {NULL};
    expect_usage(usage_entry(doc, "beta", s->beta), "beta", s->beta, 0, none);
    assert_null(usage_entry(doc, "gamma", s->gamma));
    const json_t *beta = usage_entry(doc, "beta", s->beta);
    assert_true(json_is_string(json_object_get(beta, "firstSeen")));
    assert_true(json_is_string(json_object_get(beta, "lastSeen")));
    json_decref(doc);
}

static void test_registry_export_and_restart(void **state)
{
    struct tu_server *srv = *state;
    struct scene s;
    scene_start(srv, &s);
    expect_export(srv, &s, true);

    /* alpha v1 goes dormant; its history is kept */
    tu_instance_stop(srv, "alpha-a");
    json_t *u = tu_get_json(srv, 200, "/strategies/modules/alpha:v1/usage");
    int64_t first = ms_of(u, "usage.firstSeen"), last = ms_of(u, "usage.lastSeen");
    assert_true(first <= last);
    assert_int_equal(tu_jint(u, "usage.count"), 0);
    json_decref(u);
    json_t *beta = tu_get_json(srv, 200, "/strategies/modules/beta/usage");
    char *beta_first = strdup(tu_jstr(beta, "usage.firstSeen"));
    char *beta_last = strdup(tu_jstr(beta, "usage.lastSeen"));
    json_decref(beta);
    expect_export(srv, &s, false);

    /* a restart keeps every entry and restores the running instances */
    tu_server_restart(srv, NULL);
    u = tu_get_json(srv, 200, "/strategies/modules/alpha:v1/usage");
    assert_int_equal(ms_of(u, "usage.firstSeen"), first);
    assert_int_equal(ms_of(u, "usage.lastSeen"), last);
    assert_int_equal(tu_jint(u, "usage.count"), 0);
    json_decref(u);
    beta = tu_get_json(srv, 200, "/strategies/modules/beta/usage");
    assert_string_equal(tu_jstr(beta, "usage.firstSeen"), beta_first);
    assert_string_equal(tu_jstr(beta, "usage.lastSeen"), beta_last);
    json_decref(beta);
    free(beta_first);
    free(beta_last);
    u = tu_get_json(srv, 200, "/strategies/modules/alpha/usage");
    const char *ids[] = {"alpha-b"};
    expect_usage(json_object_get(u, "usage"), "alpha", s.alpha2, 1, ids);
    json_decref(u);
    expect_export(srv, &s, false);
    json_t *r = tu_get_json(srv, 200, "/strategies/modules?runningOnly=true");
    assert_int_equal(tu_jint(r, "total"), 2);
    assert_int_equal(json_array_size(tu_jget(r, "modules.0.running")), 1);
    json_decref(r);

    /* and a crash: every start and stop was written through */
    tu_server_kill(srv);
    tu_server_restart(srv, NULL);
    u = tu_get_json(srv, 200, "/strategies/modules/alpha:v1/usage");
    assert_int_equal(ms_of(u, "usage.firstSeen"), first);
    assert_int_equal(ms_of(u, "usage.lastSeen"), last);
    json_decref(u);
    expect_export(srv, &s, false);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_running_only_listing, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_usage_drill_down, tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_instances_link_to_usage, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_registry_export_and_restart, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
