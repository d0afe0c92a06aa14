/*
 * Instance life cycle: create (selector resolution, config typing, scope
 * checks), start, stop, update, delete, persistence and restore, the delete
 * guard, retired revisions, usage and the listings.
 */
#include "rtfixture.h"

#include "core/strbuf.h"

#include <dirent.h>
#include <sched.h>

static const char *const ALPHA_CONFIG =
    "[{name: 'threshold', type: 'float', default: 1.5},"
    " {name: 'window', type: 'duration', default: '5s'},"
    " {name: 'mode', type: 'enum', options: ['fast', 'slow'], default: 'fast'}]";

static const char *const ALPHA_BODY =
    "    env.helpers.log('created', JSON.stringify(env.config));\n"
    "    return { onTrade(ctx, evt, p) {\n"
    "      env.runtime.submitOrder('sim', 'buy', evt.seq, p.price);\n"
    "    } };";

static void upload_alpha(struct fx *f, int version, const char *tag, char hex[HASH_HEX_LEN + 1])
{
    char *body = tu_path("    // revision %d\n%s", version, ALPHA_BODY);
    char *src = fx_module("alpha", "['Trade']", ALPHA_CONFIG, body);
    fx_upload(f, "alpha", src, tag, hex);
    free(src);
    free(body);
}

static json_t *stored_record(struct fx *f, const char *id)
{
    struct err err = ERR_INIT;
    json_t *list = NULL;
    fx_ok(store_instance_list(f->store, &list, &err), &err);
    json_t *found = NULL;
    size_t i;
    json_t *rec;
    json_array_foreach(list, i, rec)
    {
        if (strcmp(json_string_value(json_object_get(rec, "id")), id) == 0)
            found = json_incref(rec);
    }
    json_decref(list);
    return found;
}

static void test_create_resolves_and_snapshots(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char hex[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, "v1", hex);
    struct err err = ERR_INIT;
    json_t *spec = fx_spec("a1", "alpha:v1", "{\"threshold\": 2}", NULL);
    json_t *snap = NULL;
    fx_ok(runtime_instance_create(f.rt, spec, &snap, &err), &err);
    char *hash = tu_path("sha256:%s", hex);
    assert_string_equal(tu_jstr(snap, "id"), "a1");
    assert_string_equal(tu_jstr(snap, "strategy.identifier"), "alpha");
    assert_string_equal(tu_jstr(snap, "strategy.selector"), "alpha:v1");
    assert_string_equal(tu_jstr(snap, "strategy.tag"), "v1");
    assert_string_equal(tu_jstr(snap, "strategy.hash"), hash);
    assert_int_equal(tu_jint(snap, "strategy.config.threshold"), 2);
    assert_string_equal(tu_jstr(snap, "providers.0"), "sim");
    assert_string_equal(tu_jstr(snap, "aggregatedSymbols.0"), "BTC-USDT");
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_true(json_is_null(json_object_get(snap, "stopReason")));
    assert_true(json_is_null(json_object_get(snap, "lastError")));
    assert_int_equal(tu_jint(snap, "usage.count"), 0);
    assert_true(json_is_null(tu_jget(snap, "usage.firstSeen")));
    assert_string_equal(tu_jstr(snap, "links.self"), "/strategy/instances/a1");
    char *usage = tu_path("/strategies/modules/alpha%%40sha256%%3A%s/usage", hex);
    assert_string_equal(tu_jstr(snap, "links.usage"), usage);
    assert_non_null(tu_jget(snap, "counters.eventsDelivered"));
    assert_non_null(tu_jget(snap, "memory.bytes"));
    json_decref(snap);
    json_decref(spec);

    /* identifier + hash and identifier + tag forms, and a persisted record */
    char *text = tu_path("{\"id\": \"a2\", \"strategy\": {\"identifier\": \"alpha\", \"hash\": "
                         "\"%s\", \"config\": {}}, \"scope\": {\"sim\": {\"symbols\": "
                         "[\"ETH-USDT\", \"BTC-USDT\"]}, \"alt\": {\"symbols\": [\"SOL-USDT\"]}}}",
                         hash);
    spec = jsonutil_parse(text, strlen(text), &err);
    fx_ok(runtime_instance_create(f.rt, spec, &snap, &err), &err);
    char *pinned = tu_path("alpha@sha256:%s", hex);
    assert_string_equal(tu_jstr(snap, "strategy.selector"), pinned);
    assert_string_equal(tu_jstr(snap, "strategy.tag"), "v1");
    assert_string_equal(tu_jstr(snap, "providers.0"), "alt");
    assert_string_equal(tu_jstr(snap, "providers.1"), "sim");
    assert_int_equal(json_array_size(json_object_get(snap, "aggregatedSymbols")), 3);
    json_decref(snap);
    json_decref(spec);
    free(text);
    text = "{\"id\": \"a3\", \"strategy\": {\"identifier\": \"alpha\", \"tag\": \"v1\","
           " \"config\": {}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}";
    spec = jsonutil_parse(text, strlen(text), &err);
    fx_ok(runtime_instance_create(f.rt, spec, &snap, &err), &err);
    assert_string_equal(tu_jstr(snap, "strategy.selector"), "alpha:v1");
    json_decref(snap);
    json_decref(spec);
    json_t *rec = stored_record(&f, "a2");
    assert_non_null(rec);
    assert_true(json_is_false(json_object_get(rec, "desiredRunning")));
    assert_string_equal(tu_jstr(rec, "spec.strategy.hash"), hash);
    json_decref(rec);
    free(pinned);
    free(usage);
    free(hash);
    fx_close(&f);
}

static void expect_invalid(struct fx *f, json_t *spec, enum err_kind kind, const char *needle)
{
    struct err err = ERR_INIT;
    json_t *snap = NULL;
    fx_fails(runtime_instance_create(f->rt, spec, &snap, &err), &err, kind);
    if (needle && !strstr(err.message, needle))
        fail_msg("'%s' does not mention '%s'", err.message, needle);
    assert_null(snap);
    err_clear(&err);
    json_decref(spec);
}

#define NO_SCOPE "{\"id\": \"x1\", \"strategy\": {\"identifier\": \"alpha\"}}"

static void test_create_errors(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, NULL, hex);
    fx_create(&f, "dup", "alpha", NULL, NULL);
    expect_invalid(&f, fx_spec("dup", "alpha", NULL, NULL), ERR_CONFLICT, "dup");
    expect_invalid(&f, fx_spec("bad id", "alpha", NULL, NULL), ERR_INVALID, "id");
    expect_invalid(&f, fx_spec("x1", "nosuch", NULL, NULL), ERR_NOT_FOUND, NULL);
    expect_invalid(&f, fx_spec("x1", "alpha:nosuchtag", NULL, NULL), ERR_NOT_FOUND, NULL);
    expect_invalid(&f, fx_spec("x1", "alpha", "{\"threshold\": \"high\"}", NULL), ERR_INVALID,
                   "config.threshold");
    expect_invalid(&f, fx_spec("x1", "alpha", "{\"mode\": \"medium\"}", NULL), ERR_INVALID,
                   "config.mode");
    expect_invalid(&f, fx_spec("x1", "alpha", "{\"window\": true}", NULL), ERR_INVALID,
                   "config.window");
    expect_invalid(&f, fx_spec("x1", "alpha", NULL, "{}"), ERR_INVALID, "scope");
    expect_invalid(&f, fx_spec("x1", "alpha", NULL, "{\"nope\": {\"symbols\": [\"BTC-USDT\"]}}"),
                   ERR_INVALID, "unknown provider nope");
    expect_invalid(&f, fx_spec("x1", "alpha", NULL, "{\"sim\": {\"symbols\": [\"DOGE-USDT\"]}}"),
                   ERR_INVALID, "unknown symbol DOGE-USDT");
    expect_invalid(&f, fx_spec("x1", "alpha", NULL, "{\"sim\": {\"symbols\": []}}"), ERR_INVALID,
                   "scope.sim.symbols");
    struct err err = ERR_INIT;
    json_t *no_scope = jsonutil_parse(NO_SCOPE, strlen(NO_SCOPE), &err);
    assert_non_null(no_scope);
    expect_invalid(&f, no_scope, ERR_INVALID, "scope");
    json_t *mismatch = fx_spec("x1", "alpha", NULL, NULL);
    json_object_set_new(json_object_get(mismatch, "strategy"), "identifier", json_string("beta"));
    expect_invalid(&f, mismatch, ERR_INVALID, "strategy.identifier");
    struct runtime_stats st;
    runtime_stats(f.rt, &st);
    assert_int_equal(st.instances, 1);
    fx_close(&f);
}

static void test_start_stop_delete(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char hex[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, NULL, hex);
    fx_create(&f, "s1", "alpha", NULL, NULL);
    struct err err = ERR_INIT;
    fx_ok(runtime_instance_start(f.rt, "s1", &err), &err);
    fx_ok(runtime_instance_start(f.rt, "s1", &err), &err); /* idempotent */
    assert_true(fx_running(&f, "s1"));
    assert_int_equal(runtime_running_count(f.rt, "alpha", hex), 1);
    json_t *rec = stored_record(&f, "s1");
    assert_true(json_is_true(json_object_get(rec, "desiredRunning")));
    json_decref(rec);
    json_t *snap = fx_snapshot(&f, "s1");
    assert_int_equal(tu_jint(snap, "usage.count"), 1);
    /* the embedded usage leaves the ids to the usage endpoint */
    assert_true(json_is_null(tu_jget(snap, "usage.instances")));
    json_t *usage = runtime_usage_json(f.rt, "alpha", hex);
    assert_string_equal(tu_jstr(usage, "instances.0"), "s1");
    json_decref(usage);
    assert_true(json_is_true(tu_jget(snap, "usage.running")));
    assert_non_null(tu_jstr(snap, "usage.firstSeen"));
    assert_true(tu_jint(snap, "memory.bytes") > 0);
    json_decref(snap);
    /* the created log line carries the resolved config */
    assert_true(fx_wait_logs(&f, "s1", "created", 1, 2000));
    json_t *logs = fx_logs(&f, "s1", "created");
    const char *msg = tu_jstr(logs, "0.msg");
    assert_non_null(strstr(msg, "\"threshold\":1.5"));
    assert_non_null(strstr(msg, "\"window\":5000"));
    assert_string_equal(tu_jstr(logs, "0.strategy"), "alpha");
    json_decref(logs);

    fx_ok(runtime_instance_stop(f.rt, "s1", &err), &err);
    char reason[32];
    assert_string_equal(fx_reason(&f, "s1", reason, sizeof reason), "stopped");
    assert_false(fx_running(&f, "s1"));
    rec = stored_record(&f, "s1");
    assert_true(json_is_false(json_object_get(rec, "desiredRunning")));
    json_decref(rec);
    snap = fx_snapshot(&f, "s1");
    assert_int_equal(tu_jint(snap, "usage.count"), 0);
    assert_non_null(tu_jstr(snap, "usage.lastSeen"));
    json_decref(snap);
    fx_ok(runtime_instance_stop(f.rt, "s1", &err), &err);

    fx_start(&f, "s1");
    fx_ok(runtime_instance_delete(f.rt, "s1", &err), &err);
    assert_false(runtime_instance_exists(f.rt, "s1"));
    assert_null(stored_record(&f, "s1"));
    assert_int_equal(runtime_running_count(f.rt, "alpha", hex), 0);
    fx_fails(runtime_instance_start(f.rt, "s1", &err), &err, ERR_NOT_FOUND);
    err_clear(&err);
    fx_fails(runtime_instance_stop(f.rt, "s1", &err), &err, ERR_NOT_FOUND);
    err_clear(&err);
    fx_fails(runtime_instance_delete(f.rt, "s1", &err), &err, ERR_NOT_FOUND);
    err_clear(&err);
    assert_null(runtime_instance_snapshot(f.rt, "s1", &err));
    assert_int_equal(err.kind, ERR_NOT_FOUND);
    err_clear(&err);
    fx_close(&f);
}

static void test_start_failures(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "thrower", "['Trade']", NULL,
                  "    throw new TypeError('no config for ' + env.metadata.name);", hex);
    fx_add_module(&f, "scalar", "['Trade']", NULL, "    return 42;", hex);
    fx_add_module(&f, "spinner", "['Trade']", "[{name: 'cpu_budget_ms', type: 'int', default: 30}]",
                  "    for (;;) {}", hex);
    struct err err = ERR_INIT;
    fx_create(&f, "t1", "thrower", NULL, NULL);
    fx_fails(runtime_instance_start(f.rt, "t1", &err), &err, ERR_UNPROCESSABLE);
    assert_non_null(strstr(err.message, "no config for thrower"));
    assert_non_null(strstr(err.message, "TypeError"));
    err_clear(&err);
    json_t *snap = fx_snapshot(&f, "t1");
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "stopReason"), "startFailed");
    assert_non_null(strstr(tu_jstr(snap, "lastError.message"), "no config for thrower"));
    json_decref(snap);
    fx_create(&f, "t2", "scalar", NULL, NULL);
    fx_fails(runtime_instance_start(f.rt, "t2", &err), &err, ERR_UNPROCESSABLE);
    assert_non_null(strstr(err.message, "object of handlers"));
    err_clear(&err);
    fx_create(&f, "t3", "spinner", NULL, NULL);
    int64_t t0 = clock_mono_ns();
    fx_fails(runtime_instance_start(f.rt, "t3", &err), &err, ERR_UNPROCESSABLE);
    assert_non_null(strstr(err.message, "CPU budget"));
    assert_true(clock_mono_ns() - t0 < 2000000000);
    err_clear(&err);
    struct runtime_stats st;
    runtime_stats(f.rt, &st);
    assert_int_equal(st.running, 0);
    fx_close(&f);
}

/* A revision judged under older rules keeps its metadata (the catalogue
 * and the metadata cache reuse it), so a default the gateway refuses for
 * one of its own keys can still reach a create: the refusal says the
 * value is the module's, which the instance can only override. */
static void add_judged(struct fx *f, const char *name, const char *config_json)
{
    char *src = fx_module(name, "['Trade']", NULL, "    return {};");
    char *text = tu_path("{\"name\": \"%s\", \"displayName\": \"Test\", \"description\": \"\","
                         " \"events\": [\"Trade\"], \"config\": %s}",
                         name, config_json);
    struct err err = ERR_INIT;
    json_t *md = jsonutil_parse(text, strlen(text), &err);
    fx_ok(md ? 0 : -1, &err);
    struct catalog_upload up = {
        .name = name, .source = src, .len = strlen(src), .metadata = md, .promote_latest = true};
    struct catalog_upload_result result;
    fx_ok(catalog_add_revision(f->cat, &up, &result, &err), &err);
    json_decref(md);
    free(text);
    free(src);
}

static void expect_refused(struct fx *f, const char *selector, const char *config_json,
                           const char *message, const char *field)
{
    struct err err = ERR_INIT;
    json_t *spec = fx_spec("g1", selector, config_json, NULL);
    fx_fails(runtime_instance_create(f->rt, spec, NULL, &err), &err, ERR_INVALID);
    assert_string_equal(err.message, message);
    assert_string_equal(json_string_value(json_object_get(err.details, "field")), field);
    err_clear(&err);
    json_decref(spec);
}

static void test_module_default_the_gateway_refuses(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    add_judged(&f, "drystring",
               "[{\"name\": \"dry_run\", \"type\": \"string\", \"description\": \"\","
               " \"default\": \"true\", \"required\": false}]");
    add_judged(&f, "nomemory",
               "[{\"name\": \"memory_limit_mb\", \"type\": \"int\", \"description\": \"\","
               " \"default\": 0, \"required\": false}]");
    expect_refused(&f, "drystring", NULL,
                   "config.dry_run: expected bool, got \"true\", the module's own default (the "
                   "instance's config does not set it)",
                   "config.dry_run");
    expect_refused(&f, "nomemory", "{\"memory_limit_mb\": null}",
                   "config.memory_limit_mb: expected a number of MiB from 1 to 65536, got 0, the "
                   "module's own default (the instance's config does not set it)",
                   "config.memory_limit_mb");
    /* a value of the instance's own is the instance's */
    expect_refused(&f, "nomemory", "{\"memory_limit_mb\": 0}",
                   "config.memory_limit_mb: expected a number of MiB from 1 to 65536",
                   "config.memory_limit_mb");
    fx_run(&f, "g2", "nomemory", "{\"memory_limit_mb\": 16}", NULL);
    assert_true(fx_running(&f, "g2"));
    fx_close(&f);
}

/* Handlers are read once, when create(env) returns: a handler of an event
 * the instance receives that is no function would never be called, so the
 * start fails naming it. Execution reports arrive whatever the instance
 * subscribed to; null means no handler. */
static void test_handlers_that_are_no_functions(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "deaf", "['Trade']", NULL, "    return { onTrade: 5 };", hex);
    fx_add_module(&f, "unfilled", "['Trade']", NULL,
                  "    return { onTrade() {}, onOrderFilled: { later: true } };", hex);
    fx_add_module(&f, "narrow", "['Trade', 'Ticker']", NULL,
                  "    return { subscribedEvents() { return ['Trade']; }, onTrade() {},\n"
                  "             onTicker: 'later', onKlineSummary: 1, onBookSnapshot: null,\n"
                  "             onOrderRejected: undefined, onOrderExpired: null };",
                  hex);
    struct err err = ERR_INIT;
    fx_create(&f, "d1", "deaf", NULL, NULL);
    fx_fails(runtime_instance_start(f.rt, "d1", &err), &err, ERR_UNPROCESSABLE);
    const char *deaf = "create(env) returned handlers whose onTrade is a number, not a function: "
                       "it would never be called";
    assert_string_equal(err.message, deaf);
    err_clear(&err);
    json_t *snap = fx_snapshot(&f, "d1");
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "stopReason"), "startFailed");
    assert_string_equal(tu_jstr(snap, "lastError.message"), deaf);
    assert_string_equal(tu_jstr(snap, "lastError.handler"), "create");
    json_decref(snap);
    fx_create(&f, "d2", "unfilled", NULL, NULL);
    fx_fails(runtime_instance_start(f.rt, "d2", &err), &err, ERR_UNPROCESSABLE);
    assert_string_equal(err.message, "create(env) returned handlers whose onOrderFilled is an "
                                     "object, not a function: it would never be called");
    err_clear(&err);
    /* events it does not receive, and null or undefined: nothing to call */
    fx_run(&f, "d3", "narrow", NULL, NULL);
    assert_true(fx_running(&f, "d3"));
    fx_close(&f);
}

static void test_update(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char hex[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, NULL, hex);
    fx_run(&f, "u1", "alpha", NULL, NULL);
    struct err err = ERR_INIT;
    json_t *snap = NULL;
    json_t *spec = fx_spec("u1", "alpha", "{\"threshold\": 7.25}", NULL);
    fx_ok(runtime_instance_update(f.rt, "u1", spec, &snap, &err), &err);
    json_decref(spec);
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    assert_true(fx_wait_logs(&f, "u1", "created", 2, 2000));
    json_t *logs = fx_logs(&f, "u1", "created");
    assert_non_null(strstr(tu_jstr(logs, "1.msg"), "\"threshold\":7.25"));
    json_decref(logs);
    /* a bad update changes nothing */
    spec = fx_spec("u1", "alpha", "{\"threshold\": []}", NULL);
    fx_fails(runtime_instance_update(f.rt, "u1", spec, &snap, &err), &err, ERR_INVALID);
    err_clear(&err);
    json_decref(spec);
    spec = fx_spec("other", "alpha", NULL, NULL);
    fx_fails(runtime_instance_update(f.rt, "u1", spec, &snap, &err), &err, ERR_INVALID);
    err_clear(&err);
    json_decref(spec);
    snap = fx_snapshot(&f, "u1");
    assert_true(json_real_value(tu_jget(snap, "strategy.config.threshold")) == 7.25);
    json_decref(snap);
    /* the stored spec follows */
    json_t *rec = stored_record(&f, "u1");
    char *dumped = json_dumps(tu_jget(rec, "spec"), 0);
    assert_non_null(strstr(dumped, "7.25"));
    free(dumped);
    json_decref(rec);
    /* the restarted instance still receives events */
    fx_trade(&f, "sim", "BTC-USDT", 100, 1);
    assert_true(fx_wait_orders(&f, 1, 2000));
    fx_close(&f);
}

static void expect_users(struct fx *f, const char *provider, size_t n)
{
    json_t *ids = runtime_provider_dependents(f->rt, provider);
    if (json_array_size(ids) != n || runtime_provider_users(f->rt, provider) != n)
        fail_msg("provider %s: %zu dependents, %zu counted, expected %zu", provider,
                 json_array_size(ids), runtime_provider_users(f->rt, provider), n);
    json_decref(ids);
}

/* The instances a provider feeds, counted as they start, stop, move to
 * another provider, fail to start and go, agree with a walk over them. */
static void test_provider_users(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char hex[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, NULL, hex);
    static const char *const alt = "{\"alt\": {\"symbols\": [\"BTC-USDT\"]}}";
    fx_create(&f, "p1", "alpha", NULL, NULL);
    fx_create(&f, "p2", "alpha", NULL, alt);
    fx_create(&f, "both", "alpha", NULL,
              "{\"sim\": {\"symbols\": [\"BTC-USDT\"]}, \"alt\": {\"symbols\": "
              "[\"SOL-USDT\"]}}");
    expect_users(&f, "sim", 0);
    expect_users(&f, "alt", 0);
    fx_start(&f, "p1");
    fx_start(&f, "p2");
    fx_start(&f, "both");
    expect_users(&f, "sim", 2);
    expect_users(&f, "alt", 2);
    struct err err = ERR_INIT;
    json_t *snap = NULL;
    json_t *spec = fx_spec("p1", "alpha", NULL, alt);
    fx_ok(runtime_instance_update(f.rt, "p1", spec, &snap, &err), &err);
    json_decref(spec);
    json_decref(snap);
    expect_users(&f, "sim", 1);
    expect_users(&f, "alt", 3);
    fx_ok(runtime_instance_stop(f.rt, "both", &err), &err);
    expect_users(&f, "sim", 0);
    expect_users(&f, "alt", 2);
    /* a start that fails counted while it ran, and no longer */
    char thrower[HASH_HEX_LEN + 1];
    fx_add_module(&f, "thrower", "['Trade']", NULL, "    throw new Error('no');", thrower);
    fx_create(&f, "lost", "thrower", NULL, NULL);
    fx_fails(runtime_instance_start(f.rt, "lost", &err), &err, ERR_UNPROCESSABLE);
    err_clear(&err);
    expect_users(&f, "sim", 0);
    expect_users(&f, "nowhere", 0);
    fx_ok(runtime_instance_delete(f.rt, "p1", &err), &err);
    expect_users(&f, "alt", 1);
    fx_start(&f, "both");
    expect_users(&f, "sim", 1);
    expect_users(&f, "alt", 2);
    fx_close(&f);
}

static void test_restore(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char hex[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, NULL, hex);
    fx_run(&f, "r1", "alpha", NULL, NULL);
    fx_run(&f, "r2", "alpha", NULL, NULL);
    fx_create(&f, "r3", "alpha", NULL, NULL);
    fx_restart(&f);
    struct runtime_stats st;
    runtime_stats(f.rt, &st);
    assert_int_equal(st.instances, 3);
    assert_int_equal(st.running, 2);
    assert_true(fx_running(&f, "r1"));
    assert_true(fx_running(&f, "r2"));
    assert_false(fx_running(&f, "r3"));
    fx_trade(&f, "sim", "BTC-USDT", 100, 1);
    assert_true(fx_wait_orders(&f, 2, 2000));
    json_t *snap = fx_snapshot(&f, "r1");
    assert_non_null(tu_jstr(snap, "usage.firstSeen"));
    json_decref(snap);
    fx_close(&f);
}

static void test_delete_guard_and_retired(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char v1[HASH_HEX_LEN + 1], v2[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, "v1", v1);
    upload_alpha(&f, 2, "v2", v2);
    char *pinned = tu_path("alpha@sha256:%s", v1);
    fx_run(&f, "g2", pinned, NULL, NULL);
    fx_run(&f, "g1", "alpha:v1", NULL, NULL);
    fx_run(&f, "g3", "alpha", NULL, NULL); /* latest = v2 */
    struct err err = ERR_INIT;
    fx_fails(catalog_delete_revision(f.cat, "alpha", v1, runtime_delete_guard, f.rt, &err), &err,
             ERR_CONFLICT);
    json_t *ids = json_object_get(err.details, "instances");
    assert_int_equal(json_array_size(ids), 2);
    assert_string_equal(json_string_value(json_array_get(ids, 0)), "g1");
    assert_string_equal(json_string_value(json_array_get(ids, 1)), "g2");
    err_clear(&err);
    fx_fails(catalog_delete_strategy(f.cat, "alpha", runtime_delete_guard, f.rt, &err), &err,
             ERR_CONFLICT);
    assert_int_equal(json_array_size(json_object_get(err.details, "instances")), 3);
    err_clear(&err);
    fx_ok(runtime_instance_stop(f.rt, "g1", &err), &err);
    fx_ok(runtime_instance_stop(f.rt, "g2", &err), &err);
    fx_ok(catalog_delete_revision(f.cat, "alpha", v1, runtime_delete_guard, f.rt, &err), &err);
    /* a full-hash pin is retired; a name:tag... the tag went with its revision */
    fx_fails(runtime_instance_start(f.rt, "g2", &err), &err, ERR_CONFLICT);
    assert_string_equal(json_string_value(json_object_get(err.details, "reason")), "retired");
    err_clear(&err);
    fx_fails(runtime_instance_start(f.rt, "g1", &err), &err, ERR_CONFLICT);
    err_clear(&err);
    /* a name selector re-resolves: move g3 to a stale pin first */
    fx_ok(runtime_instance_stop(f.rt, "g3", &err), &err);
    upload_alpha(&f, 3, "v3", v1);
    fx_ok(catalog_delete_revision(f.cat, "alpha", v2, runtime_delete_guard, f.rt, &err), &err);
    fx_ok(runtime_instance_start(f.rt, "g3", &err), &err);
    json_t *snap = fx_snapshot(&f, "g3");
    char *hash = tu_path("sha256:%s", v1);
    assert_string_equal(tu_jstr(snap, "strategy.hash"), hash);
    json_decref(snap);
    free(hash);
    free(pinned);
    fx_close(&f);
}

/* Between a guard that let a delete through and the end of that delete,
 * nothing may start on the revision: the delete is being written. */
static void test_no_start_while_deleting(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char v1[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, "v1", v1);
    fx_run(&f, "d1", "alpha:v1", NULL, NULL);
    struct err err = ERR_INIT;
    fx_ok(runtime_instance_stop(f.rt, "d1", &err), &err);
    fx_ok(runtime_delete_guard(f.rt, "alpha", v1, &err), &err);
    fx_fails(runtime_instance_start(f.rt, "d1", &err), &err, ERR_CONFLICT);
    assert_string_equal(json_string_value(json_object_get(err.details, "reason")), "retired");
    err_clear(&err);
    assert_false(fx_running(&f, "d1"));
    /* the delete failed or finished: the revision may run again */
    runtime_delete_finished(f.rt, "alpha", v1);
    fx_ok(runtime_instance_start(f.rt, "d1", &err), &err);
    assert_true(fx_running(&f, "d1"));
    /* a whole-strategy delete in flight blocks every revision */
    fx_ok(runtime_instance_stop(f.rt, "d1", &err), &err);
    fx_ok(runtime_delete_guard(f.rt, "alpha", NULL, &err), &err);
    fx_fails(runtime_instance_start(f.rt, "d1", &err), &err, ERR_CONFLICT);
    err_clear(&err);
    runtime_delete_finished(f.rt, "alpha", NULL);
    fx_ok(runtime_instance_start(f.rt, "d1", &err), &err);
    fx_close(&f);
}

static void test_restore_retired(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char v1[HASH_HEX_LEN + 1], v2[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, "v1", v1);
    upload_alpha(&f, 2, "v2", v2);
    char *pinned = tu_path("alpha@sha256:%s", v1);
    fx_run(&f, "p1", pinned, NULL, NULL);
    fx_run(&f, "p2", "alpha:v2", NULL, NULL);
    runtime_free(f.rt);
    f.rt = NULL;
    struct err err = ERR_INIT;
    fx_ok(catalog_delete_revision(f.cat, "alpha", v1, NULL, NULL, &err), &err);
    fx_start_runtime(&f);
    fx_ok(runtime_restore(f.rt, &err), &err);
    char reason[32];
    assert_false(fx_running(&f, "p1"));
    assert_string_equal(fx_reason(&f, "p1", reason, sizeof reason), "retired");
    assert_true(fx_running(&f, "p2"));
    json_t *rec = stored_record(&f, "p1");
    assert_string_equal(tu_jstr(rec, "stopReason"), "retired");
    json_decref(rec);
    free(pinned);
    fx_close(&f);
}

static void test_listings_and_usage(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char v1[HASH_HEX_LEN + 1], v2[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, "v1", v1);
    upload_alpha(&f, 2, "v2", v2);
    fx_run(&f, "l2", "alpha:v1", NULL, NULL);
    fx_run(&f, "l1", "alpha:v1", NULL, NULL);
    fx_create(&f, "l3", "alpha:v1", NULL, NULL);
    fx_run(&f, "l4", "alpha:v2", NULL, NULL);
    json_t *u = runtime_usage_json(f.rt, "alpha", v1);
    assert_int_equal(tu_jint(u, "count"), 2);
    assert_string_equal(tu_jstr(u, "instances.0"), "l1");
    assert_string_equal(tu_jstr(u, "instances.1"), "l2");
    assert_true(json_is_true(json_object_get(u, "running")));
    json_decref(u);
    json_t *all = runtime_usage_all_json(f.rt);
    assert_int_equal(json_array_size(all), 2);
    json_decref(all);
    json_t *pins = runtime_instances_pinning(f.rt, "alpha", v1, false);
    assert_int_equal(json_array_size(pins), 2);
    json_decref(pins);
    pins = runtime_instances_pinning(f.rt, "alpha", v1, true);
    assert_int_equal(json_array_size(pins), 3);
    assert_string_equal(tu_jstr(pins, "2.id"), "l3");
    json_decref(pins);
    json_t *list = runtime_instances_json(f.rt);
    assert_int_equal(json_array_size(json_object_get(list, "instances")), 4);
    assert_string_equal(tu_jstr(list, "instances.0.id"), "l1");
    assert_string_equal(tu_jstr(list, "instances.0.strategyIdentifier"), "alpha");
    assert_string_equal(tu_jstr(list, "instances.0.strategySelector"), "alpha:v1");
    assert_string_equal(tu_jstr(list, "instances.0.strategyTag"), "v1");
    assert_int_equal(tu_jint(list, "instances.0.usage.count"), 2);
    assert_true(json_is_false(tu_jget(list, "instances.2.running")));
    json_decref(list);
    assert_int_equal(runtime_running_count(f.rt, "alpha", NULL), 3);
    json_t *none = runtime_usage_json(
        f.rt, "alpha", "0000000000000000000000000000000000000000000000000000000000000000");
    assert_int_equal(tu_jint(none, "count"), 0);
    assert_true(json_is_null(json_object_get(none, "lastSeen")));
    json_decref(none);
    /* usage outlives a restart through the store */
    struct err err = ERR_INIT;
    fx_ok(runtime_instance_stop(f.rt, "l4", &err), &err);
    fx_restart(&f);
    u = runtime_usage_json(f.rt, "alpha", v2);
    assert_int_equal(tu_jint(u, "count"), 0);
    assert_non_null(tu_jstr(u, "firstSeen"));
    assert_non_null(tu_jstr(u, "lastSeen"));
    json_decref(u);
    fx_close(&f);
}

/* The text a GET answers with is byte for byte the dump of the jansson
 * snapshot, in every state (usage never seen, stopped with history, start
 * failed with lastError, several providers, moved to another revision). */
static void assert_text_is_dump(struct fx *f, const char *id)
{
    struct err err = ERR_INIT;
    json_t *snap = runtime_instance_snapshot(f->rt, id, &err);
    assert_non_null(snap);
    size_t want_len = 0, got_len = 0;
    char *want = jsonutil_dump(snap, &want_len);
    char *got = runtime_instance_snapshot_text(f->rt, id, &got_len, &err);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(got_len, want_len);
    free(want);
    free(got);
    json_decref(snap);
}

/* The same while the revision runs, when lastSeen is the time of each call:
 * equal documents once lastSeen is left out. */
static void assert_text_equals_snapshot(struct fx *f, const char *id)
{
    struct err err = ERR_INIT;
    json_t *snap = runtime_instance_snapshot(f->rt, id, &err);
    size_t len = 0;
    char *text = runtime_instance_snapshot_text(f->rt, id, &len, &err);
    assert_non_null(snap);
    assert_non_null(text);
    json_t *parsed = jsonutil_parse(text, len, &err);
    assert_non_null(parsed);
    assert_non_null(tu_jstr(parsed, "usage.lastSeen"));
    json_object_del(json_object_get(parsed, "usage"), "lastSeen");
    json_object_del(json_object_get(snap, "usage"), "lastSeen");
    assert_true(json_equal(parsed, snap));
    json_decref(parsed);
    json_decref(snap);
    free(text);
}

static size_t pinned(struct fx *f, const char *hex, bool include_stopped)
{
    json_t *list = runtime_instances_pinning(f->rt, "alpha", hex, include_stopped);
    size_t n = json_array_size(list);
    json_decref(list);
    return n;
}

static void test_snapshot_text_and_pins(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char v1[HASH_HEX_LEN + 1], v2[HASH_HEX_LEN + 1], bad[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, "v1", v1);
    upload_alpha(&f, 2, "v2", v2);
    fx_add_module(&f, "thrower", "['Trade']", NULL, "    throw new TypeError('nope');", bad);
    struct err err = ERR_INIT;
    fx_create(&f, "p3", "alpha:v1", NULL, NULL);
    fx_run(&f, "p1", "alpha:v1", NULL,
           "{\"sim\": {\"symbols\": [\"ETH-USDT\", \"BTC-USDT\"]},"
           " \"alt\": {\"symbols\": [\"SOL-USDT\", \"BTC-USDT\"]}}");
    fx_run(&f, "p2", "alpha:v1", NULL, NULL);
    fx_create(&f, "t1", "thrower", NULL, NULL);
    fx_fails(runtime_instance_start(f.rt, "t1", &err), &err, ERR_UNPROCESSABLE);
    err_clear(&err);
    assert_int_equal(pinned(&f, v1, false), 2);
    assert_int_equal(pinned(&f, v1, true), 3);
    assert_int_equal(pinned(&f, NULL, true), 3);
    assert_text_equals_snapshot(&f, "p3"); /* its revision runs: lastSeen is now */
    fx_ok(runtime_instance_stop(f.rt, "p1", &err), &err);
    fx_ok(runtime_instance_stop(f.rt, "p2", &err), &err);
    assert_int_equal(pinned(&f, v1, false), 0);
    assert_text_is_dump(&f, "p1");
    assert_text_is_dump(&f, "p2");
    assert_text_is_dump(&f, "t1");
    json_t *doc = runtime_usage_json(f.rt, "alpha", v1);
    char *want = jsonutil_dump(doc, NULL);
    struct strbuf sb = STRBUF_INIT;
    assert_int_equal(runtime_usage_text(f.rt, "alpha", v1, &sb), 0);
    assert_string_equal(strbuf_cstr(&sb), want);
    strbuf_release(&sb);
    free(want);
    json_decref(doc);
    /* moving an instance moves it in the index and drops its cached text */
    json_t *spec = fx_spec("p2", "alpha:v2", NULL, NULL);
    fx_ok(runtime_instance_update(f.rt, "p2", spec, NULL, &err), &err);
    json_decref(spec);
    assert_int_equal(pinned(&f, v1, true), 2);
    assert_int_equal(pinned(&f, v2, true), 1);
    json_t *ids = runtime_instances_pinning(f.rt, "alpha", NULL, true);
    assert_string_equal(tu_jstr(ids, "0.id"), "p1");
    assert_string_equal(tu_jstr(ids, "1.id"), "p2");
    assert_string_equal(tu_jstr(ids, "2.id"), "p3");
    json_decref(ids);
    assert_text_is_dump(&f, "p2");
    fx_start(&f, "p2");
    json_t *u = runtime_usage_json(f.rt, "alpha", v2);
    assert_string_equal(tu_jstr(u, "instances.0"), "p2");
    assert_int_equal(runtime_usage_text(f.rt, "alpha", v2, &sb), 1);
    json_t *parsed = jsonutil_parse(strbuf_cstr(&sb), sb.len, &err);
    assert_non_null(parsed);
    json_object_del(parsed, "lastSeen");
    json_object_del(u, "lastSeen");
    assert_true(json_equal(parsed, u));
    json_decref(parsed);
    strbuf_release(&sb);
    json_decref(u);
    fx_ok(runtime_instance_delete(f.rt, "p2", &err), &err);
    assert_int_equal(pinned(&f, v2, true), 0);
    size_t len = 0;
    assert_null(runtime_instance_snapshot_text(f.rt, "p2", &len, &err));
    assert_int_equal(err.kind, ERR_NOT_FOUND);
    err_clear(&err);
    fx_restart(&f);
    assert_int_equal(pinned(&f, v1, true), 2);
    assert_text_is_dump(&f, "p1");
    fx_close(&f);
}

/* The scheduling policy of this process's thread named `name`, or -1 when
 * there is none. */
static int policy_of_thread(const char *name)
{
    DIR *dir = opendir("/proc/self/task");
    assert_non_null(dir);
    int policy = -1;
    struct dirent *e;
    while (policy < 0 && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char *path = tu_path("/proc/self/task/%s/comm", e->d_name);
        char *comm = tu_read_file(path, NULL);
        free(path);
        if (comm && strncmp(comm, name, strlen(name)) == 0 && comm[strlen(name)] == '\n')
            policy = sched_getscheduler((pid_t)atoi(e->d_name));
        free(comm);
    }
    closedir(dir);
    return policy;
}

static bool cond_builders_idle(struct fx *f, const void *arg)
{
    (void)f;
    (void)arg;
    return policy_of_thread("spares:0") == SCHED_IDLE && policy_of_thread("spares:1") == SCHED_IDLE;
}

/* Each worker's spare sandboxes are built by a thread of its own at the
 * idle scheduling class, so building one never takes a core from a
 * request, an event or a timer, and the budget ticker keeps the normal
 * class; starts take the spares (and build their own once they run out)
 * on either worker. */
static void test_spares_built_at_idle_class(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    (void)fx_wait(cond_builders_idle, &f, NULL, 5000);
    assert_int_equal(policy_of_thread("spares:0"), SCHED_IDLE);
    assert_int_equal(policy_of_thread("spares:1"), SCHED_IDLE);
    assert_int_equal(policy_of_thread("worker:0"), SCHED_OTHER);
    /* the budget ticker, running while sandboxes exist, keeps the normal
     * class whoever built the first sandbox */
    assert_int_equal(policy_of_thread("js:ticker"), SCHED_OTHER);
    char hex[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, NULL, hex);
    char id[16];
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof id, "sp%d", i);
        fx_run(&f, id, "alpha", NULL, NULL);
    }
    for (int i = 0; i < 12; i++) {
        snprintf(id, sizeof id, "sp%d", i);
        assert_true(fx_running(&f, id));
    }
    assert_int_equal(runtime_running_count(f.rt, "alpha", hex), 12);
    fx_close(&f);
}

static void test_metrics_text(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char hex[HASH_HEX_LEN + 1];
    upload_alpha(&f, 1, NULL, hex);
    fx_run(&f, "m1", "alpha", NULL, NULL);
    fx_trade(&f, "sim", "BTC-USDT", 100, 1);
    if (!fx_wait_orders(&f, 1, 2000)) {
        char *log = tu_read_file(f.log_path, NULL);
        fail_msg("no order; log: %s", log);
    }
    struct err err = ERR_INIT;
    fx_ok(runtime_instance_stop(f.rt, "m1", &err), &err);
    struct strbuf out = STRBUF_INIT;
    runtime_metrics_write(f.rt, &out);
    const char *text = strbuf_cstr(&out);
    char *start = tu_path("strategy_revision_instances_total{environment=\"test\","
                          "strategy=\"alpha\",hash=\"sha256:%s\",action=\"start\"} 1",
                          hex);
    char *stop = tu_path("strategy_revision_instances_total{environment=\"test\","
                         "strategy=\"alpha\",hash=\"sha256:%s\",action=\"stop\"} 1",
                         hex);
    assert_non_null(strstr(text, start));
    assert_non_null(strstr(text, stop));
    assert_non_null(strstr(text, "stratd_events_delivered_total{event=\"Trade\"} 1"));
    assert_non_null(strstr(text, "stratd_instance_stops_total{reason=\"stopped\"} 1"));
    assert_non_null(strstr(text, "stratd_module_compilations_total 1"));
    assert_non_null(strstr(text, "# TYPE stratd_handler_duration_seconds histogram"));
    free(start);
    free(stop);
    /* promtool, when installed, checks the whole exposition */
    char *path = tu_path("%s/metrics.txt", f.dir);
    tu_write_text(path, text);
    if (tu_run(NULL, "command -v promtool >/dev/null") == 0) {
        char *output = NULL;
        int rc = tu_run(&output, "promtool check metrics < %s 2>&1", path);
        if (rc != 0)
            fail_msg("promtool: %s", output ? output : "");
        free(output);
    }
    free(path);
    strbuf_release(&out);
    fx_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_resolves_and_snapshots),
        cmocka_unit_test(test_create_errors),
        cmocka_unit_test(test_start_stop_delete),
        cmocka_unit_test(test_start_failures),
        cmocka_unit_test(test_module_default_the_gateway_refuses),
        cmocka_unit_test(test_handlers_that_are_no_functions),
        cmocka_unit_test(test_update),
        cmocka_unit_test(test_provider_users),
        cmocka_unit_test(test_restore),
        cmocka_unit_test(test_delete_guard_and_retired),
        cmocka_unit_test(test_no_start_while_deleting),
        cmocka_unit_test(test_restore_retired),
        cmocka_unit_test(test_listings_and_usage),
        cmocka_unit_test(test_snapshot_text_and_pins),
        cmocka_unit_test(test_spares_built_at_idle_class),
        cmocka_unit_test(test_metrics_text),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
