/*
 * The retire workflow over HTTP and the bootstrap tool, end to end: export
 * GET /strategies/registry to a file, feed it to `stratd bootstrap --usage`
 * to list the revisions no instance runs, and delete them. The guards: a
 * revision (by hash or by tag) or a whole strategy pinned by a running
 * instance is a 409 naming the instances; stopped instances do not block,
 * and one pinned to a deleted revision re-resolves its name or tag selector
 * when started, or is refused as retired.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* "old": v1, v2 (latest), v3 (never run). Instances: x on old:v1 (running),
 * y pinned by hash to v1 (stopped), w on old (latest) while latest was v1,
 * ran and was stopped, z on old (v2, running). */
struct scene {
    char v1[65], v2[65], v3[65];
    char *export_path;
};

static void scene_start(struct tu_server *srv, struct scene *s)
{
    tu_server_start(srv, NULL);
    char *src = tu_module_source("old", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, NULL, 201, s->v1);
    free(src);
    json_decref(tu_instance_create(srv, "w", "old", NULL, "sim", "[\"ETH-USDT\"]"));
    tu_instance_start(srv, "w");
    tu_instance_stop(srv, "w");
    src = tu_module_source("old", "v2", "onTrade() {}, onTicker() {},");
    tu_upload_expect(srv, src, "{\"promoteLatest\": true}", 201, s->v2);
    free(src);
    src = tu_module_source("old", "v3", "onTicker() {},");
    tu_upload_expect(srv, src, NULL, 201, s->v3);
    free(src);
    char *pinned = tu_path("old@sha256:%s", s->v1);
    json_decref(tu_instance_create(srv, "x", "old:v1", NULL, "sim", "[\"BTC-USDT\"]"));
    json_decref(tu_instance_create(srv, "y", pinned, NULL, "sim", "[\"BTC-USDT\"]"));
    json_decref(tu_instance_create(srv, "z", "old", NULL, "sim", "[\"BTC-USDT\"]"));
    free(pinned);
    tu_instance_start(srv, "x");
    tu_instance_start(srv, "z");
    s->export_path = tu_path("%s/registry-export.json", srv->root);
}

/* GET /strategies/registry saved to the export file, as an operator's curl
 * would. */
static void export_to_file(struct tu_server *srv, const struct scene *s)
{
    struct tu_response res;
    tu_get(srv, &res, "/strategies/registry");
    tu_assert_status(&res, 200);
    tu_write_file(s->export_path, res.body, res.len);
    tu_response_free(&res);
}

/* `stratd bootstrap -root <strategies> --usage <export> --json`. */
static json_t *idle_report(struct tu_server *srv, const struct scene *s)
{
    char *out = NULL;
    int rc = tu_run(&out, "'%s' bootstrap -root '%s' --usage '%s' --json 2>&1", STRATD_BINARY,
                    srv->strategies_dir, s->export_path);
    if (rc != 0)
        fail_msg("bootstrap --usage exited %d:\n%s", rc, out);
    json_t *doc = json_loads(out, 0, NULL);
    if (!doc)
        fail_msg("bootstrap --usage --json printed no JSON:\n%s", out);
    free(out);
    return doc;
}

static const json_t *idle_entry(const json_t *report, const char *hex)
{
    size_t i;
    const json_t *e;
    json_array_foreach(json_object_get(report, "idle"), i, e)
    {
        if (strcmp(tu_jstr(e, "hash") + 7, hex) == 0)
            return e;
    }
    return NULL;
}

static void expect_conflict(struct tu_server *srv, const char *selector, const char *const *ids,
                            size_t n)
{
    char *escaped = tu_escape(selector);
    struct tu_response res;
    tu_delete(srv, &res, "/strategies/modules/%s", escaped);
    free(escaped);
    tu_assert_error(&res, 409);
    const json_t *list = tu_jget(res.json, "details.instances");
    if (json_array_size(list) != n) {
        fail_msg("DELETE %s: expected %zu pinning instances, got %s", selector, n, res.body);
    }
    for (size_t i = 0; i < n; i++)
        assert_string_equal(json_string_value(json_array_get(list, i)), ids[i]);
    tu_response_free(&res);
}

static void delete_ok(struct tu_server *srv, const char *selector)
{
    char *escaped = tu_escape(selector);
    struct tu_response res;
    tu_delete(srv, &res, "/strategies/modules/%s", escaped);
    free(escaped);
    tu_assert_status(&res, 204);
    tu_response_free(&res);
}

static void expect_stop_reason(struct tu_server *srv, const char *id, const char *reason)
{
    json_t *snap = tu_instance_get(srv, id);
    const char *got = json_string_value(json_object_get(snap, "stopReason"));
    if (!got || strcmp(got, reason) != 0)
        fail_msg("instance %s: stopReason %s, expected %s", id, got ? got : "null", reason);
    json_decref(snap);
}

static void test_retire_with_bootstrap_report(void **state)
{
    struct tu_server *srv = *state;
    struct scene s = {0};
    scene_start(srv, &s);

    /* 1. the export lists v3 as never seen; v1 and v2 run */
    export_to_file(srv, &s);
    json_t *report = idle_report(srv, &s);
    assert_int_equal(tu_jint(report, "total"), 3);
    assert_int_equal(tu_jint(report, "running"), 2);
    assert_int_equal(json_array_size(json_object_get(report, "idle")), 1);
    const json_t *v3 = idle_entry(report, s.v3);
    assert_non_null(v3);
    assert_true(json_is_true(json_object_get(v3, "neverSeen")));
    char *selector3 = tu_path("old@sha256:%s", s.v3);
    assert_string_equal(tu_jstr(v3, "selector"), selector3);
    json_decref(report);

    /* the text report names the revision the way DELETE takes it */
    char *text = NULL;
    int rc = tu_run(&text, "'%s' bootstrap -root '%s' --usage '%s' 2>&1", STRATD_BINARY,
                    srv->strategies_dir, s.export_path);
    assert_int_equal(rc, 0);
    if (!strstr(text, selector3))
        fail_msg("the text report does not name %s:\n%s", selector3, text);
    if (!strstr(text, "1 of 3 revisions have no running instance"))
        fail_msg("unexpected text report:\n%s", text);
    free(text);

    /* 2. v1 is still pinned by x: by hash, by tag, by prefix */
    char *by_hash = tu_path("old@sha256:%s", s.v1);
    char *by_prefix = tu_path("old@%.12s", s.v1);
    const char *x[] = {"x"};
    expect_conflict(srv, by_hash, x, 1);
    expect_conflict(srv, "old:v1", x, 1);
    expect_conflict(srv, by_prefix, x, 1);
    /* the whole strategy: every running instance of any revision */
    const char *xz[] = {"x", "z"};
    expect_conflict(srv, "old", xz, 2);
    json_t *disk = tu_assert_registry_sound(srv->strategies_dir);
    assert_non_null(
        json_object_get(json_object_get(json_object_get(disk, "old"), "hashes"), by_hash + 4));
    json_decref(disk);

    /* 3. stop what remains on v1; the new export lists it as idle, seen */
    tu_instance_stop(srv, "x");
    export_to_file(srv, &s);
    report = idle_report(srv, &s);
    assert_int_equal(json_array_size(json_object_get(report, "idle")), 2);
    const json_t *v1 = idle_entry(report, s.v1);
    assert_non_null(v1);
    assert_false(json_is_true(json_object_get(v1, "neverSeen")));
    assert_true(json_is_string(json_object_get(v1, "lastSeen")));
    assert_non_null(idle_entry(report, s.v3));
    assert_null(idle_entry(report, s.v2));
    json_decref(report);

    /* 4. delete both; stopped instances (x, y, w) do not block */
    delete_ok(srv, by_hash);
    delete_ok(srv, selector3);
    disk = tu_assert_registry_sound(srv->strategies_dir);
    const json_t *hashes = json_object_get(json_object_get(disk, "old"), "hashes");
    assert_int_equal(json_object_size(hashes), 1);
    assert_null(json_object_get(json_object_get(json_object_get(disk, "old"), "tags"), "v1"));
    json_decref(disk);
    struct tu_response res;
    tu_get(srv, &res, "/strategies/modules/%s/usage", by_hash);
    tu_assert_error(&res, 404);
    tu_response_free(&res);
    /* the gauge series of a deleted revision goes away */
    char *m = tu_ops_metrics(srv);
    char *h1 = tu_path("sha256:%s", s.v1), *h2 = tu_path("sha256:%s", s.v2);
    assert_int_equal(tu_ops_metric_count(m, "strategy_revision_instances", "hash", h1, NULL), 0);
    assert_true(tu_ops_metric(m, "strategy_revision_instances", "hash", h2, NULL) == 1);
    free(m);
    /* the report after the deletes: only v2, running */
    export_to_file(srv, &s);
    report = idle_report(srv, &s);
    assert_int_equal(tu_jint(report, "total"), 1);
    assert_int_equal(json_array_size(json_object_get(report, "idle")), 0);
    json_decref(report);

    /* the stopped instances the deletes left unable to start say so at
     * once, as they will after a restart; w's name resolves again */
    expect_stop_reason(srv, "x", "retired");
    expect_stop_reason(srv, "y", "retired");
    expect_stop_reason(srv, "w", "stopped");

    /* 5. starting an instance pinned to the deleted revision: a name
     * selector re-resolves, a tag or hash that is gone is retired */
    tu_instance_start(srv, "w");
    json_t *snap = tu_instance_get(srv, "w");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), h2);
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    const char *retired[] = {"x", "y"};
    for (size_t i = 0; i < 2; i++) {
        json_t *err = tu_ops_action(srv, retired[i], "start", 409);
        assert_string_equal(tu_jstr(err, "details.reason"), "retired");
        json_decref(err);
        snap = tu_instance_get(srv, retired[i]);
        assert_false(json_is_true(json_object_get(snap, "running")));
        assert_string_equal(tu_jstr(snap, "strategy.hash"), h1);
        json_decref(snap);
    }
    m = tu_ops_metrics(srv);
    assert_true(tu_ops_metric(m, "strategy_revision_instances", "hash", h2, NULL) == 2);
    free(m);

    /* 6. the whole strategy goes once nothing runs it */
    const char *wz[] = {"w", "z"};
    expect_conflict(srv, "old:latest", wz, 2);
    expect_conflict(srv, "old", wz, 2);
    tu_instance_stop(srv, "w");
    tu_instance_stop(srv, "z");
    delete_ok(srv, "old");
    tu_get(srv, &res, "/strategies/modules/old");
    tu_assert_error(&res, 404);
    tu_response_free(&res);
    disk = tu_registry_disk(srv);
    assert_null(json_object_get(disk, "old"));
    json_decref(disk);
    m = tu_ops_metrics(srv);
    assert_int_equal(tu_ops_metric_count(m, "strategy_revision_instances", "strategy", "old", NULL),
                     0);
    free(m);
    /* and its instances are retired, across a restart too */
    json_t *err = tu_ops_action(srv, "z", "start", 409);
    assert_string_equal(tu_jstr(err, "details.reason"), "retired");
    json_decref(err);
    const char *all[] = {"w", "x", "y", "z"};
    for (size_t i = 0; i < 4; i++)
        expect_stop_reason(srv, all[i], "retired");
    tu_server_kill(srv);
    tu_server_restart(srv, NULL);
    for (size_t i = 0; i < 4; i++)
        expect_stop_reason(srv, all[i], "retired");

    free(h1);
    free(h2);
    free(by_hash);
    free(by_prefix);
    free(selector3);
    free(s.export_path);
    tu_server_stop(srv);
}

/* A stopped instance whose tag now names another revision keeps its pin
 * until it is started or refreshed; deleting its old revision does not wait
 * for it, and the start then follows the tag. */
static void test_stopped_tag_follower_restarts_on_new_target(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char v1[65], v2[65];
    char *src = tu_module_source("flip", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, "{\"aliases\": [\"prod\"]}", 201, v1);
    free(src);
    json_decref(tu_instance_create(srv, "p", "flip:prod", NULL, "sim", "[\"BTC-USDT\"]"));
    tu_instance_start(srv, "p");
    tu_instance_stop(srv, "p");
    src = tu_module_source("flip", "v2", "onTicker() {},");
    tu_upload_expect(srv, src, "{\"aliases\": [\"prod\"]}", 201, v2);
    free(src);
    char *old = tu_path("flip@%s", v1);
    delete_ok(srv, old);
    free(old);
    tu_instance_start(srv, "p");
    json_t *snap = tu_instance_get(srv, "p");
    assert_string_equal(tu_jstr(snap, "strategy.hash") + 7, v2);
    assert_string_equal(tu_jstr(snap, "strategy.selector"), "flip:prod");
    json_decref(snap);
    /* the pin was persisted: a restart keeps it */
    tu_server_restart(srv, NULL);
    snap = tu_instance_get(srv, "p");
    assert_string_equal(tu_jstr(snap, "strategy.hash") + 7, v2);
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_retire_with_bootstrap_report, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_stopped_tag_follower_restarts_on_new_target,
                                        tu_server_setup, tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
