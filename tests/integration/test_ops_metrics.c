/*
 * GET /metrics over HTTP: the exposition is clean under `promtool check
 * metrics` (with label values that need escaping), and the values say what
 * happened: the per-revision gauge (0 for an idle revision, following the
 * fleet, gone with the revision), starts and stops per revision, tag moves
 * and deletes, stops by reason, handler errors, events delivered (one per
 * instance reached), the handler histogram, orders, validation failures,
 * HTTP requests by route pattern (and how long they took), and the build.
 */
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* An environment name that needs every escape of the text format. */
#define ODD_ENV "qa \"blue\"\\green\nnext"

static char *spell(const char *hex)
{
    return tu_path("sha256:%s", hex);
}

/* The one finding promtool's linter has once a tag was deleted: the
 * contract spells the label allowOrphan (as the API's query parameter),
 * and the linter asks for snake_case label names. */
#define CAMEL_CASE_FINDING                                                                         \
    "strategy_tag_deleted_total label names should be written in 'snake_case' not 'camelCase'"

/* `promtool check metrics`: no finding at all, or (tag_deletes) only the
 * allowOrphan label's. */
static void check_promtool_findings(const char *metrics, bool tag_deletes)
{
    char *out = NULL;
    int rc = tu_ops_promtool(metrics, &out);
    bool clean = rc == 0;
    if (rc == 3 && tag_deletes) {
        clean = true;
        for (char *line = strtok(out, "\n"); line; line = strtok(NULL, "\n"))
            clean = clean && strcmp(line, CAMEL_CASE_FINDING) == 0;
    }
    if (!clean)
        fail_msg("promtool check metrics exited %d:\n%s\non:\n%.6000s", rc, out ? out : "",
                 metrics);
    free(out);
}

static void check_promtool(const char *metrics)
{
    check_promtool_findings(metrics, false);
}

static double gauge(const char *m, const char *strategy, const char *hex)
{
    char *hash = spell(hex);
    double v = tu_ops_metric(m, "strategy_revision_instances", "environment", ODD_ENV, "strategy",
                             strategy, "hash", hash, NULL);
    free(hash);
    return v;
}

static double actions(const char *m, const char *strategy, const char *hex, const char *action)
{
    char *hash = spell(hex);
    double v = tu_ops_metric(m, "strategy_revision_instances_total", "environment", ODD_ENV,
                             "strategy", strategy, "hash", hash, "action", action, NULL);
    free(hash);
    return isnan(v) ? 0 : v;
}

static double stops(const char *m, const char *reason)
{
    double v = tu_ops_metric(m, "stratd_instance_stops_total", "reason", reason, NULL);
    return isnan(v) ? 0 : v;
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

static void delete_tag(struct tu_server *srv, const char *name, const char *tag, const char *query,
                       long status)
{
    struct tu_response res;
    tu_delete(srv, &res, "/strategies/modules/%s/tags/%s%s", name, tag, query);
    tu_assert_status(&res, status);
    tu_response_free(&res);
}

static void start_server(struct tu_server *srv)
{
    static const char *const args[] = {"--environment", ODD_ENV, NULL};
    struct tu_server_options opts = {
        .extra_args = args,
        .config_yaml = "runtime:\n"
                       "  max_consecutive_errors: 3\n"
                       "  cpu_budget_ms: 20\n"
                       "providers:\n"
                       "  - name: sim\n"
                       "    adapter: simulated\n"
                       "    enabled: true\n"
                       "    config:\n"
                       "      symbols: [BTC-USDT, ETH-USDT]\n"
                       "      tickRate: 50\n",
    };
    tu_server_start(srv, &opts);
}

struct wait_stop {
    struct tu_server *srv;
    const char *id;
};

static bool stopped(void *arg)
{
    struct wait_stop *w = arg;
    json_t *snap = tu_instance_get(w->srv, w->id);
    bool done = !json_is_true(json_object_get(snap, "running"));
    json_decref(snap);
    return done;
}

struct wait_events {
    struct tu_server *srv;
    const char *id;
    long long min;
};

static bool delivered(void *arg)
{
    struct wait_events *w = arg;
    json_t *snap = tu_instance_get(w->srv, w->id);
    bool done = tu_jint(snap, "counters.eventsDelivered") >= w->min;
    json_decref(snap);
    return done;
}

/* The trader's two orders were reported to it: acknowledged, then filled. */
static bool orders_reported(void *arg)
{
    char *m = tu_ops_metrics(arg);
    double acks = tu_ops_metric(m, "stratd_orders_total", "state", "acknowledged", NULL);
    double fills = tu_ops_metric(m, "stratd_orders_total", "state", "filled", NULL);
    free(m);
    return acks == 2 && fills == 2;
}

/* ------------------------------------------------------------ the fleet */

static void test_revision_gauge_follows_the_fleet(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char idle[65], v1[65], v2[65];
    char *src = tu_module_source("idle", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, NULL, 201, idle);
    free(src);
    src = tu_module_source("fleet", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, "{\"aliases\": [\"prod\"]}", 201, v1);
    free(src);
    src = tu_module_source("fleet", "v2", "onTrade() {}, onTicker() {},");
    tu_upload_expect(srv, src, NULL, 201, v2);
    free(src);

    /* every revision is reported from its upload on, 0 while idle */
    char *m = tu_ops_metrics(srv);
    check_promtool(m);
    assert_true(gauge(m, "idle", idle) == 0);
    assert_true(gauge(m, "fleet", v1) == 0);
    assert_true(gauge(m, "fleet", v2) == 0);
    assert_int_equal(tu_ops_metric_count(m, "strategy_revision_instances", NULL), 3);
    free(m);

    const char *ids[] = {"f1", "f2", "f3"};
    for (size_t i = 0; i < 3; i++) {
        json_decref(tu_instance_create(srv, ids[i], "fleet:prod", NULL, "sim", "[\"BTC-USDT\"]"));
        tu_instance_start(srv, ids[i]);
    }
    m = tu_ops_metrics(srv);
    assert_true(gauge(m, "fleet", v1) == 3);
    assert_true(gauge(m, "fleet", v2) == 0);
    assert_true(actions(m, "fleet", v1, "start") == 3);
    assert_true(actions(m, "fleet", v1, "stop") == 0);
    free(m);

    /* one stops */
    tu_instance_stop(srv, "f3");
    m = tu_ops_metrics(srv);
    assert_true(gauge(m, "fleet", v1) == 2);
    assert_true(actions(m, "fleet", v1, "stop") == 1);
    assert_true(stops(m, "stopped") == 1);
    free(m);

    /* the alias moves and the fleet follows it */
    put_tag(srv, "fleet", "prod", v2);
    json_decref(tu_ops_refresh(srv, "{\"strategies\": [\"fleet:prod\"]}", 200));
    m = tu_ops_metrics(srv);
    check_promtool(m);
    assert_true(gauge(m, "fleet", v1) == 0);
    assert_true(gauge(m, "fleet", v2) == 2);
    assert_true(actions(m, "fleet", v1, "stop") == 3);
    assert_true(actions(m, "fleet", v2, "start") == 2);
    assert_true(stops(m, "refreshed") == 2);
    free(m);

    /* a deleted instance and a deleted revision */
    json_decref(tu_call(srv, "DELETE", "/strategy/instances/f1", 200, NULL));
    struct tu_response res;
    tu_delete(srv, &res, "/strategies/modules/fleet@%s", v1);
    tu_assert_status(&res, 204);
    tu_response_free(&res);
    m = tu_ops_metrics(srv);
    assert_true(gauge(m, "fleet", v2) == 1);
    assert_true(stops(m, "deleted") == 1);
    char *h1 = spell(v1);
    assert_int_equal(tu_ops_metric_count(m, "strategy_revision_instances", "hash", h1, NULL), 0);
    /* its counters go with it, so a churning catalogue does not grow /metrics */
    assert_int_equal(tu_ops_metric_count(m, "strategy_revision_instances_total", "hash", h1, NULL),
                     0);
    free(h1);
    assert_true(gauge(m, "idle", idle) == 0);
    check_promtool(m);
    free(m);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ tags */

static void test_tag_counters(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char a[65], b[65];
    char *src = tu_module_source("tagged", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, "{\"aliases\": [\"prod\", \"canary\"]}", 201, a);
    free(src);
    src = tu_module_source("tagged", "v2", "onTicker() {},");
    tu_upload_expect(srv, src, NULL, 201, b);
    free(src);

    char *m = tu_ops_metrics(srv);
    assert_int_equal(tu_ops_metric_count(m, "strategy_tag_reassigned_total", NULL), 0);
    assert_int_equal(tu_ops_metric_count(m, "strategy_tag_deleted_total", NULL), 0);
    free(m);

    put_tag(srv, "tagged", "prod", b);  /* a move */
    put_tag(srv, "tagged", "prod", b);  /* already there: no move */
    put_tag(srv, "tagged", "prod", a);  /* a move back */
    put_tag(srv, "tagged", "fresh", b); /* a new tag: not a move */
    /* an upload that takes a tag over moves it too */
    src = tu_module_source("tagged", "v3", "onTrade() {}, onTicker() {},");
    tu_upload_expect(srv, src, "{\"aliases\": [\"canary\"]}", 201, NULL);
    free(src);
    m = tu_ops_metrics(srv);
    check_promtool(m);
    assert_true(tu_ops_metric(m, "strategy_tag_reassigned_total", "environment", ODD_ENV,
                              "strategy", "tagged", "tag", "prod", NULL) == 2);
    assert_true(tu_ops_metric(m, "strategy_tag_reassigned_total", "strategy", "tagged", "tag",
                              "canary", NULL) == 1);
    assert_int_equal(tu_ops_metric_count(m, "strategy_tag_reassigned_total", "tag", "fresh", NULL),
                     0);
    free(m);

    /* deletes, labelled by allowOrphan: prod, fresh and v3 each leave
     * another tag on their revision; canary is then v3's last tag (refused
     * without allowOrphan); latest can never go */
    delete_tag(srv, "tagged", "prod", "", 200);
    delete_tag(srv, "tagged", "fresh", "?allowOrphan=false", 200);
    delete_tag(srv, "tagged", "v3", "", 200);
    delete_tag(srv, "tagged", "canary", "", 409);
    delete_tag(srv, "tagged", "canary", "?allowOrphan=true", 200);
    delete_tag(srv, "tagged", "latest", "?allowOrphan=true", 409);
    m = tu_ops_metrics(srv);
    check_promtool_findings(m, true);
    assert_true(tu_ops_metric(m, "strategy_tag_deleted_total", "environment", ODD_ENV, "strategy",
                              "tagged", "allowOrphan", "false", NULL) == 3);
    assert_true(tu_ops_metric(m, "strategy_tag_deleted_total", "strategy", "tagged", "tag",
                              "canary", "allowOrphan", "true", NULL) == 1);
    assert_true(tu_ops_metric(m, "strategy_tag_deleted_total", "tag", "prod", "allowOrphan",
                              "false", NULL) == 1);
    /* refused deletes count nothing */
    assert_int_equal(tu_ops_metric_count(m, "strategy_tag_deleted_total", "tag", "latest", NULL),
                     0);
    free(m);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ the runtime */

static const char *const THROWER =
    "module.exports = {\n"
    "  metadata: { name: 'thrower', displayName: 'Thrower', tag: 'v1', events: ['Trade'] },\n"
    "  create() { return { onTrade() { throw new Error('boom'); } }; },\n"
    "};\n";

static const char *const SPINNER =
    "module.exports = {\n"
    "  metadata: { name: 'spinner', displayName: 'Spinner', tag: 'v1', events: ['Trade'] },\n"
    "  create() { return { onTrade() { for (;;) {} } }; },\n"
    "};\n";

/* One dry-run market order on its first trade of each symbol. */
static const char *const TRADER =
    "module.exports = {\n"
    "  metadata: { name: 'trader', displayName: 'Trader', tag: 'v1',\n"
    "    events: ['Trade', 'ExecReport'],\n"
    "    config: [{ name: 'dry_run', type: 'bool', default: true }] },\n"
    "  create({ runtime }) {\n"
    "    const done = new Set();\n"
    "    return {\n"
    "      onTrade(ctx) {\n"
    "        if (done.has(ctx.symbol)) return;\n"
    "        done.add(ctx.symbol);\n"
    "        runtime.submitMarketOrder(ctx.provider, 'buy', 0.001, ctx.symbol);\n"
    "      },\n"
    "      onOrderAcknowledged() {},\n"
    "      onOrderFilled() {},\n"
    "    };\n"
    "  },\n"
    "};\n";

static const char *const QUIET =
    "module.exports = {\n"
    "  metadata: { name: 'quiet', displayName: 'Quiet', tag: 'v1', events: ['Trade', 'Ticker'] },\n"
    "  create() { return { onTrade() {}, onTicker() {} }; },\n"
    "};\n";

/* A histogram's series for label=value: count, +Inf bucket and sum
 * present and consistent. Returns the count. */
static double consistent_histogram(const char *m, const char *name, const char *label,
                                   const char *value)
{
    char *count_name = tu_path("%s_count", name), *bucket_name = tu_path("%s_bucket", name),
         *sum_name = tu_path("%s_sum", name);
    double count = tu_ops_metric(m, count_name, label, value, NULL);
    double inf = tu_ops_metric(m, bucket_name, label, value, "le", "+Inf", NULL);
    double sum = tu_ops_metric(m, sum_name, label, value, NULL);
    if (!(count >= 0) || inf != count || !(sum >= 0))
        fail_msg("%s{%s=\"%s\"}: count %g, +Inf bucket %g, sum %g", name, label, value, count, inf,
                 sum);
    free(count_name);
    free(bucket_name);
    free(sum_name);
    return count;
}

static void test_runtime_counters(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char thrower[65], spinner[65], trader[65], quiet[65];
    tu_upload_expect(srv, THROWER, NULL, 201, thrower);
    tu_upload_expect(srv, SPINNER, NULL, 201, spinner);
    tu_upload_expect(srv, TRADER, NULL, 201, trader);
    tu_upload_expect(srv, QUIET, NULL, 201, quiet);
    json_decref(tu_instance_create(srv, "thrower-1", "thrower", NULL, "sim", "[\"BTC-USDT\"]"));
    json_decref(tu_instance_create(srv, "spinner-1", "spinner", NULL, "sim", "[\"BTC-USDT\"]"));
    json_decref(
        tu_instance_create(srv, "trader-1", "trader", NULL, "sim", "[\"BTC-USDT\", \"ETH-USDT\"]"));
    json_decref(
        tu_instance_create(srv, "quiet-1", "quiet", NULL, "sim", "[\"BTC-USDT\", \"ETH-USDT\"]"));
    json_decref(tu_instance_create(srv, "quiet-2", "quiet", NULL, "sim", "[\"BTC-USDT\"]"));
    const char *all[] = {"thrower-1", "spinner-1", "trader-1", "quiet-1", "quiet-2"};
    for (size_t i = 0; i < 5; i++)
        tu_instance_start(srv, all[i]);

    /* the limits stop two of them on their own */
    struct wait_stop ws = {srv, "thrower-1"};
    assert_true(tu_ops_wait_until(stopped, &ws, TU_WAIT_S));
    ws.id = "spinner-1";
    assert_true(tu_ops_wait_until(stopped, &ws, TU_WAIT_S));
    /* enough calls for the sampled histogram, and the trader's orders */
    struct wait_events we = {srv, "quiet-1", 200};
    assert_true(tu_ops_wait_until(delivered, &we, TU_WAIT_S));
    /* both orders acknowledged and filled, as the trader saw them */
    assert_true(tu_ops_wait_until(orders_reported, srv, TU_WAIT_S));
    for (size_t i = 2; i < 5; i++)
        tu_instance_stop(srv, all[i]);

    char *m = tu_ops_metrics(srv);
    check_promtool(m);
    assert_true(stops(m, "tooManyErrors") == 1);
    assert_true(stops(m, "cpuBudget") == 1);
    assert_true(stops(m, "stopped") == 3);
    /* one VM a start, a spare or one built then: which, the builder's
     * timing decides */
    double spare = tu_ops_metric(m, "stratd_instance_vms_total", "source", "spare", NULL);
    double built = tu_ops_metric(m, "stratd_instance_vms_total", "source", "built", NULL);
    if (!(spare + built == 5))
        fail_msg("five starts took %g spare and built %g VMs", spare, built);
    char *hash = spell(thrower);
    assert_true(tu_ops_metric(m, "stratd_handler_errors_total", "strategy", "thrower", "hash", hash,
                              NULL) == 3);
    free(hash);
    /* a CPU budget stop is a stop, not a handler exception */
    hash = spell(spinner);
    assert_int_equal(tu_ops_metric_count(m, "stratd_handler_errors_total", "hash", hash, NULL), 0);
    free(hash);
    assert_true(tu_ops_metric(m, "stratd_orders_total", "provider", "sim", "state", "acknowledged",
                              NULL) == 2);
    assert_true(
        tu_ops_metric(m, "stratd_orders_total", "provider", "sim", "state", "filled", NULL) == 2);

    /* events delivered: one per instance reached, summed over the fleet */
    double metric_sum = 0;
    const char *kinds[] = {"Trade",         "Ticker",       "BookSnapshot",
                           "ExecReport",    "KlineSummary", "InstrumentUpdate",
                           "BalanceUpdate", "RiskControl",  "Extension"};
    for (size_t k = 0; k < 9; k++) {
        double v = tu_ops_metric(m, "stratd_events_delivered_total", "event", kinds[k], NULL);
        if (isnan(v))
            fail_msg("stratd_events_delivered_total{event=\"%s\"} is missing", kinds[k]);
        metric_sum += v;
    }
    double instance_sum = 0;
    for (size_t i = 0; i < 5; i++) {
        json_t *snap = tu_instance_get(srv, all[i]);
        instance_sum += (double)tu_jint(snap, "counters.eventsDelivered");
        json_decref(snap);
    }
    if (metric_sum != instance_sum)
        fail_msg("stratd_events_delivered_total sums to %g, the instances' counters to %g",
                 metric_sum, instance_sum);
    assert_true(tu_ops_metric(m, "stratd_events_delivered_total", "event", "Ticker", NULL) > 0);
    assert_true(tu_ops_metric(m, "stratd_events_delivered_total", "event", "ExecReport", NULL) >=
                2);

    /* the histogram (one call in 16 is timed, so a handler may have no
     * series yet): every series consistent, and some calls timed */
    const char *handlers[] = {"onTrade", "onTicker", "onOrderAcknowledged", "onOrderFilled"};
    double timed = 0;
    for (size_t h = 0; h < 4; h++) {
        double count =
            tu_ops_metric(m, "stratd_handler_duration_seconds_count", "handler", handlers[h], NULL);
        if (isnan(count))
            continue;
        double inf = tu_ops_metric(m, "stratd_handler_duration_seconds_bucket", "handler",
                                   handlers[h], "le", "+Inf", NULL);
        double sum =
            tu_ops_metric(m, "stratd_handler_duration_seconds_sum", "handler", handlers[h], NULL);
        if (!(count > 0) || inf != count || !(sum >= 0))
            fail_msg("histogram of %s: count %g, +Inf bucket %g, sum %g", handlers[h], count, inf,
                     sum);
        assert_true(tu_ops_metric_count(m, "stratd_handler_duration_seconds_bucket", "handler",
                                        handlers[h], NULL) >= 2);
        timed += count;
    }
    assert_true(timed > 0);

    /* the workers' polling, by reason: both series from the start, never negative */
    const char *reasons[] = {"start", "events"};
    for (size_t r = 0; r < 2; r++) {
        double v = tu_ops_metric(m, "stratd_worker_poll_seconds_total", "reason", reasons[r], NULL);
        if (!(v >= 0))
            fail_msg("stratd_worker_poll_seconds_total{reason=\"%s\"} is %g", reasons[r], v);
    }

    /* the disk: every durable commit above synced the database, each one
     * timed; both series present, consistent */
    const char *files[] = {"database", "audit"};
    for (size_t i = 0; i < 2; i++)
        consistent_histogram(m, "stratd_store_sync_seconds", "file", files[i]);
    assert_true(tu_ops_metric(m, "stratd_store_sync_seconds_count", "file", "database", NULL) >=
                10);

    /* the build */
    assert_true(tu_ops_metric(m, "stratd_build_info", "version", STRATD_VERSION, NULL) == 1);
    free(m);
    tu_server_stop(srv);
}

/* The catalogue's syncs: an upload syncs its revision file and
 * registry.json, and their folders; each is timed, and the histogram of
 * each kind is consistent. */
static void expect_file_syncs(const char *m, double *file, double *directory)
{
    const char *kinds[] = {"file", "directory"};
    double *counts[] = {file, directory};
    for (size_t i = 0; i < 2; i++)
        *counts[i] = consistent_histogram(m, "stratd_file_sync_seconds", "kind", kinds[i]);
}

static void test_catalogue_syncs_are_timed(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *m = tu_ops_metrics(srv);
    double files0, dirs0, files1, dirs1;
    expect_file_syncs(m, &files0, &dirs0);
    free(m);
    char hex[65];
    char *src = tu_module_source("synced", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, NULL, 201, hex);
    free(src);
    m = tu_ops_metrics(srv);
    expect_file_syncs(m, &files1, &dirs1);
    check_promtool_findings(m, false);
    free(m);
    if (!(files1 - files0 >= 2) || !(dirs1 - dirs0 >= 1))
        fail_msg("an upload timed %g file and %g directory syncs", files1 - files0, dirs1 - dirs0);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ HTTP */

#define DURATION "stratd_http_request_duration_seconds"

static const char *next_line(const char *text)
{
    const char *end = strchr(text, '\n');
    return end && end[1] ? end + 1 : NULL;
}

/* The bucket samples of one route's duration histogram, in the order
 * written: there must be some, each at least the one before, and the last
 * (+Inf) must equal the series' count. Returns the count. */
static double check_duration_series(const char *m, const char *route, const char *method)
{
    char *prefix = tu_path(DURATION "_bucket{route=\"%s\",method=\"%s\",le=", route, method);
    double previous = 0, last = NAN;
    int n = 0;
    for (const char *line = m; line; line = next_line(line)) {
        if (strncmp(line, prefix, strlen(prefix)) != 0)
            continue;
        const char *value = strchr(line + strlen(prefix), ' ');
        assert_non_null(value);
        last = strtod(value + 1, NULL);
        if (last < previous)
            fail_msg("%s %s: a bucket holds fewer than the one before:\n%s", method, route, m);
        previous = last;
        n++;
    }
    free(prefix);
    if (n < 2)
        fail_msg("%s %s: %d duration buckets in:\n%.6000s", method, route, n, m);
    double count = tu_ops_metric(m, DURATION "_count", "route", route, "method", method, NULL);
    double inf =
        tu_ops_metric(m, DURATION "_bucket", "route", route, "method", method, "le", "+Inf", NULL);
    double sum = tu_ops_metric(m, DURATION "_sum", "route", route, "method", method, NULL);
    assert_true(inf == count && last == count);
    assert_true(sum > 0);
    return count;
}

static void test_http_requests_by_route(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char hex[65];
    char *src = tu_module_source("routed", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, NULL, 201, hex);
    free(src);
    /* an upload that does not validate */
    src = tu_path("module.exports = { metadata: { name: 'broken', tag: 'v1' }, create() {} };");
    tu_upload_expect(srv, src, NULL, 422, NULL);
    free(src);
    tu_upload_expect(srv, "module.exports = {", NULL, 422, NULL);

    for (int i = 0; i < 3; i++)
        json_decref(tu_get_json(srv, 200, "/strategies/modules/routed/usage"));
    json_decref(tu_get_json(srv, 200, "/strategies/modules/routed@%s/usage", hex));
    struct tu_response res;
    tu_get(srv, &res, "/strategies/modules/nosuch/usage");
    tu_assert_error(&res, 404);
    tu_response_free(&res);
    tu_get(srv, &res, "/no/such/path");
    tu_assert_error(&res, 404);
    tu_response_free(&res);
    /* a client spells the method as it likes: every one it invents is
     * counted under "other", so none of them can grow the exposition */
    for (int i = 0; i < 30; i++) {
        char method[16];
        snprintf(method, sizeof method, "INVENT%02d", i);
        tu_request(srv, &res, method, i % 2 ? "/healthz" : "/no/such/path", NULL);
        assert_true(res.status == 404 || res.status == 405);
        tu_response_free(&res);
    }

    char *m = tu_ops_metrics(srv);
    check_promtool(m);
    const char *route = "/strategies/modules/{selector}/usage";
    assert_true(tu_ops_metric(m, "stratd_http_requests_total", "route", route, "method", "GET",
                              "status", "200", NULL) == 4);
    assert_true(tu_ops_metric(m, "stratd_http_requests_total", "route", route, "method", "GET",
                              "status", "404", NULL) == 1);
    assert_true(tu_ops_metric(m, "stratd_http_requests_total", "route", "/strategies/modules",
                              "method", "POST", "status", "201", NULL) == 1);
    assert_true(tu_ops_metric(m, "stratd_http_requests_total", "route", "/strategies/modules",
                              "method", "POST", "status", "422", NULL) == 2);
    /* never the raw path */
    assert_int_equal(tu_ops_metric_count(m, "stratd_http_requests_total", "route",
                                         "/strategies/modules/routed/usage", NULL),
                     0);
    assert_int_equal(
        tu_ops_metric_count(m, "stratd_http_requests_total", "route", "/no/such/path", NULL), 0);
    assert_true(tu_ops_metric(m, "stratd_http_requests_total", "method", "other", NULL) == 30);
    assert_int_equal(
        tu_ops_metric_count(m, "stratd_http_requests_total", "method", "INVENT00", NULL), 0);
    assert_int_equal(tu_ops_metric_count(m, DURATION "_count", "method", "INVENT01", NULL), 0);
    /* durations: one series per route and method, counting every answer
     * whatever its status (the usage route answered 200 four times and
     * 404 once, the upload route 201 once and 422 twice) */
    assert_true(check_duration_series(m, route, "GET") == 5);
    assert_true(check_duration_series(m, "/strategies/modules", "POST") == 3);
    assert_true(check_duration_series(m, "unmatched", "GET") == 1);
    assert_true(check_duration_series(m, "unmatched", "other") == 30);
    assert_int_equal(tu_ops_metric_count(m, DURATION "_count", "route", "/no/such/path", NULL), 0);
    /* validation failures by stage */
    assert_true(tu_ops_metric(m, "stratd_module_validation_failures_total", "stage", "metadata",
                              NULL) == 1);
    assert_true(tu_ops_metric(m, "stratd_module_validation_failures_total", NULL) == 2);
    free(m);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_revision_gauge_follows_the_fleet, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_tag_counters, tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_catalogue_syncs_are_timed, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_runtime_counters, tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_http_requests_by_route, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
