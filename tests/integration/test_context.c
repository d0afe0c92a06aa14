/*
 * The context backup over HTTP: GET /context/backup exports the providers
 * (as ProviderRequests, sorted by name), the lambdas (InstanceSpecs, sorted
 * by id) and the risk config in the contract's shape; POST /context/backup
 * restores them. A backup restored into a fresh gateway with the same
 * modules exports the same document (and survives its restart), starts
 * nothing, and a second restore changes nothing. A restore adds and
 * updates and never deletes. A bad payload (a missing key, a bad provider
 * or lambda, an unknown selector, a bad risk config) is refused whole with
 * 400 naming the element, and a read token cannot restore.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One slow provider and one worker: the tests need events, not load. */
static const char *const base_config = "workers: 1\n"
                                       "providers:\n"
                                       "  - name: sim\n"
                                       "    adapter: simulated\n"
                                       "    config:\n"
                                       "      symbols: [BTC-USDT, ETH-USDT]\n"
                                       "      tickRate: 2\n";

static const char ADMIN_SECRET[] = "ctx-Admin-Secret-Qw3rT-81f0a2";
static const char READ_SECRET[] = "ctx-Read-Secret-Zx9cV-11b7e4";

/* Two servers per test: a fixture so that a failed test kills both. */
static int pair_setup(void **state)
{
    struct tu_server *pair = calloc(2, sizeof *pair);
    *state = pair;
    return pair ? 0 : -1;
}

static int pair_teardown(void **state)
{
    struct tu_server *pair = *state;
    for (int i = 0; pair && i < 2; i++) {
        tu_server_kill(&pair[i]);
        tu_server_cleanup(&pair[i]);
    }
    free(pair);
    *state = NULL;
    return 0;
}

static void start(struct tu_server *srv, const char *yaml)
{
    struct tu_server_options opts = {.config_yaml = yaml ? yaml : base_config};
    tu_server_start(srv, &opts);
}

/* Two revisions of strategy `ctx`: v1 tagged prod, v2 latest. The same
 * uploads on every server give the same hashes and tags. An instance whose
 * config says explode does not start. */
static void upload_modules(struct tu_server *srv, char v1[65], char v2[65])
{
    const char *config = "[{name: 'lookback', type: 'int', default: 5},"
                         " {name: 'explode', type: 'bool', default: false}]";
    const char *setup = "if (env.config.explode) throw new Error('boom');";
    char *one = tu_strategy_source("ctx", "['Trade']", config, setup, "onTrade() {}");
    char *two =
        tu_strategy_source("ctx", "['Trade']", config, "const version = 2;", "onTrade() {}");
    tu_upload_expect(srv, one, "{\"tag\": \"prod\"}", 201, v1);
    tu_upload_expect(srv, two, NULL, 201, v2);
    free(one);
    free(two);
}

static json_t *backup_of(struct tu_server *srv)
{
    return tu_get_json(srv, 200, "/context/backup");
}

static json_t *restore(struct tu_server *srv, const json_t *backup, long status)
{
    char *text = json_dumps(backup, JSON_COMPACT);
    assert_non_null(text);
    json_t *answer = tu_call(srv, "POST", "/context/backup", status, text);
    free(text);
    return answer;
}

static void expect_counts(const json_t *answer, const char *part, long long created,
                          long long updated, long long unchanged)
{
    char path[64];
    const long long want[3] = {created, updated, unchanged};
    const char *const names[3] = {"created", "updated", "unchanged"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s.%s", part, names[i]);
        if (tu_jint(answer, path) != want[i])
            fail_msg("%s: expected %lld, got %lld", path, want[i], tu_jint(answer, path));
    }
}

static void expect_restored(const json_t *answer)
{
    assert_string_equal(tu_jstr(answer, "status"), "restored");
    assert_string_equal(tu_jstr(answer, "risk"), "applied");
}

static void expect_same(const json_t *a, const json_t *b, const char *what)
{
    if (json_equal(a, b))
        return;
    char *x = json_dumps(a, JSON_COMPACT | JSON_SORT_KEYS);
    char *y = json_dumps(b, JSON_COMPACT | JSON_SORT_KEYS);
    fail_msg("%s:\n%s\n!=\n%s", what, x, y);
}

/* ------------------------------------------------------------ shape */

static bool is_string_array(const json_t *a)
{
    size_t i;
    json_t *s;
    if (!json_is_array(a))
        return false;
    json_array_foreach(a, i, s)
    {
        if (!json_is_string(s))
            return false;
    }
    return true;
}

static void check_provider(const json_t *p)
{
    assert_true(json_is_string(json_object_get(p, "name")));
    assert_true(json_is_string(tu_jget(p, "adapter.identifier")));
    assert_true(json_is_object(tu_jget(p, "adapter.config")));
    assert_true(json_is_boolean(json_object_get(p, "enabled")));
}

static void check_lambda(const json_t *l)
{
    assert_true(json_is_string(json_object_get(l, "id")));
    const json_t *s = json_object_get(l, "strategy");
    assert_true(json_is_string(json_object_get(s, "identifier")));
    assert_true(json_is_object(json_object_get(s, "config")));
    assert_true(json_is_string(json_object_get(s, "selector")));
    assert_true(json_is_string(json_object_get(s, "tag")));
    assert_true(json_is_string(json_object_get(s, "hash")));
    const json_t *scope = json_object_get(l, "scope");
    assert_true(json_is_object(scope));
    const char *provider;
    json_t *symbols;
    json_object_foreach((json_t *)scope, provider, symbols)
        assert_true(is_string_array(json_object_get(symbols, "symbols")));
}

/* RiskConfig: every required member with its type. */
static void check_risk(const json_t *r)
{
    static const char *const strings[] = {"maxPositionSize", "maxNotionalValue",
                                          "notionalCurrency"};
    static const char *const integers[] = {"orderThrottle", "orderBurst", "maxConcurrentOrders",
                                           "maxRiskBreaches"};
    for (size_t i = 0; i < sizeof strings / sizeof *strings; i++)
        assert_true(json_is_string(json_object_get(r, strings[i])));
    for (size_t i = 0; i < sizeof integers / sizeof *integers; i++)
        assert_true(json_is_integer(json_object_get(r, integers[i])));
    assert_true(json_is_number(json_object_get(r, "priceBandPercent")));
    assert_true(is_string_array(json_object_get(r, "allowedOrderTypes")));
    assert_true(json_is_boolean(json_object_get(r, "killSwitchEnabled")));
    assert_true(json_is_boolean(tu_jget(r, "circuitBreaker.enabled")));
    assert_true(json_is_number(tu_jget(r, "circuitBreaker.threshold")));
    assert_true(json_is_string(tu_jget(r, "circuitBreaker.cooldown")));
}

/* The contract's ContextBackupPayload, in order: providers by name,
 * lambdas by id. */
static void check_backup_shape(const json_t *doc)
{
    const json_t *providers = json_object_get(doc, "providers");
    const json_t *lambdas = json_object_get(doc, "lambdas");
    assert_true(json_is_array(providers));
    assert_true(json_is_array(lambdas));
    assert_true(json_is_object(json_object_get(doc, "risk")));
    for (size_t i = 0; i < json_array_size(providers); i++) {
        check_provider(json_array_get(providers, i));
        if (i > 0)
            assert_true(strcmp(tu_jstr(json_array_get(providers, i - 1), "name"),
                               tu_jstr(json_array_get(providers, i), "name")) < 0);
    }
    for (size_t i = 0; i < json_array_size(lambdas); i++) {
        check_lambda(json_array_get(lambdas, i));
        if (i > 0)
            assert_true(strcmp(tu_jstr(json_array_get(lambdas, i - 1), "id"),
                               tu_jstr(json_array_get(lambdas, i), "id")) < 0);
    }
    check_risk(json_object_get(doc, "risk"));
}

/* ------------------------------------------------------------ fixtures */

static const char *const alt_provider =
    "{\"name\": \"alt\", \"adapter\": {\"identifier\": \"simulated\", \"config\": "
    "{\"symbols\": [\"SOL-USDT\"], \"seed\": 7, \"tickRate\": 1}}}";
static const char *const idle_provider =
    "{\"name\": \"idle\", \"adapter\": {\"identifier\": \"simulated\", \"config\": "
    "{\"symbols\": [\"XRP-USDT\"]}}, \"enabled\": false}";

/* Server A's setup: two providers created over the API (one disabled), a
 * changed risk config, and three instances on three kinds of selector, two
 * of them running. */
static void build_fleet(struct tu_server *srv, const char *v1)
{
    json_decref(tu_call(srv, "POST", "/providers", 202, alt_provider));
    json_decref(tu_call(srv, "POST", "/providers", 202, idle_provider));
    json_decref(
        tu_instance_create(srv, "a1", "ctx:prod", "{\"lookback\": 3}", "sim", "[\"BTC-USDT\"]"));
    char *pinned = tu_path("ctx@sha256:%s", v1);
    json_decref(tu_instance_create(srv, "b2", pinned, "{}", "alt", "[\"SOL-USDT\"]"));
    free(pinned);
    json_decref(tu_instance_create(srv, "c3", "ctx", "{}", "sim", "[\"BTC-USDT\", \"ETH-USDT\"]"));
    tu_instance_start(srv, "a1");
    tu_instance_start(srv, "b2");

    /* the risk config changes only through a restore of the gateway's own
     * backup with two limits changed */
    json_t *doc = backup_of(srv);
    json_t *risk = json_object_get(doc, "risk");
    json_object_set_new(risk, "killSwitchEnabled",
                        json_boolean(!json_is_true(json_object_get(risk, "killSwitchEnabled"))));
    json_object_set_new(
        risk, "maxConcurrentOrders",
        json_integer(json_integer_value(json_object_get(risk, "maxConcurrentOrders")) + 1));
    json_t *answer = restore(srv, doc, 200);
    expect_restored(answer);
    expect_counts(answer, "providers", 0, 0, 3);
    expect_counts(answer, "lambdas", 0, 0, 3);
    json_decref(answer);
    json_t *after = backup_of(srv);
    expect_same(json_object_get(after, "risk"), risk, "the risk config after its restore");
    json_decref(after);
    json_decref(doc);
}

static bool running(struct tu_server *srv, const char *id)
{
    json_t *snap = tu_instance_get(srv, id);
    bool on = json_is_true(json_object_get(snap, "running"));
    json_decref(snap);
    return on;
}

/* ------------------------------------------------------------ tests */

static void test_export_and_round_trip(void **state)
{
    struct tu_server *a = &((struct tu_server *)*state)[0];
    struct tu_server *b = &((struct tu_server *)*state)[1];
    char v1[65], v2[65];
    start(a, NULL);
    upload_modules(a, v1, v2);
    build_fleet(a, v1);

    json_t *doc = backup_of(a);
    check_backup_shape(doc);
    json_t *providers = json_object_get(doc, "providers");
    assert_int_equal(json_array_size(providers), 3);
    assert_string_equal(tu_jstr(providers, "0.name"), "alt");
    assert_string_equal(tu_jstr(providers, "0.adapter.identifier"), "simulated");
    assert_string_equal(tu_jstr(providers, "0.adapter.config.symbols.0"), "SOL-USDT");
    assert_int_equal(tu_jint(providers, "0.adapter.config.seed"), 7);
    assert_true(json_is_true(tu_jget(providers, "0.enabled")));
    assert_string_equal(tu_jstr(providers, "1.name"), "idle");
    assert_true(json_is_false(tu_jget(providers, "1.enabled")));
    assert_string_equal(tu_jstr(providers, "2.name"), "sim"); /* from the configuration file */
    json_t *lambdas = json_object_get(doc, "lambdas");
    assert_int_equal(json_array_size(lambdas), 3);
    assert_string_equal(tu_jstr(lambdas, "0.id"), "a1");
    assert_string_equal(tu_jstr(lambdas, "0.strategy.selector"), "ctx:prod");
    assert_string_equal(tu_jstr(lambdas, "0.strategy.tag"), "prod");
    assert_string_equal(tu_jstr(lambdas, "0.strategy.hash") + 7, v1);
    assert_int_equal(tu_jint(lambdas, "0.strategy.config.lookback"), 3);
    assert_string_equal(tu_jstr(lambdas, "0.scope.sim.symbols.0"), "BTC-USDT");
    assert_string_equal(tu_jstr(lambdas, "1.id"), "b2");
    assert_string_equal(tu_jstr(lambdas, "1.strategy.hash") + 7, v1);
    assert_string_equal(tu_jstr(lambdas, "2.id"), "c3");
    assert_string_equal(tu_jstr(lambdas, "2.strategy.hash") + 7, v2);
    assert_int_equal(json_array_size(tu_jget(lambdas, "2.scope.sim.symbols")), 2);

    /* into a fresh gateway with the same modules: the same document */
    char w1[65], w2[65];
    start(b, NULL);
    upload_modules(b, w1, w2);
    assert_string_equal(v1, w1);
    json_t *answer = restore(b, doc, 200);
    expect_restored(answer);
    expect_counts(answer, "providers", 2, 0, 1);
    expect_counts(answer, "lambdas", 3, 0, 0);
    json_decref(answer);
    json_t *copy = backup_of(b);
    expect_same(copy, doc, "B's backup after the restore of A's");
    json_decref(copy);
    /* created stopped, whatever ran on A */
    assert_false(running(b, "a1"));
    assert_false(running(b, "b2"));

    /* a second restore, on either side, changes nothing */
    answer = restore(b, doc, 200);
    expect_counts(answer, "providers", 0, 0, 3);
    expect_counts(answer, "lambdas", 0, 0, 3);
    json_decref(answer);
    answer = restore(a, doc, 200);
    expect_counts(answer, "providers", 0, 0, 3);
    expect_counts(answer, "lambdas", 0, 0, 3);
    json_decref(answer);
    assert_true(running(a, "a1"));
    assert_true(running(a, "b2"));

    /* audited, with what changed */
    json_t *audit = tu_audit_entries(b);
    size_t i;
    json_t *entry;
    int restores = 0;
    json_array_foreach(audit, i, entry)
    {
        if (strcmp(tu_jstr(entry, "action"), "context.restore") != 0)
            continue;
        if (restores++ == 0) {
            assert_int_equal(json_array_size(tu_jget(entry, "applied.providers.created")), 2);
            assert_int_equal(json_array_size(tu_jget(entry, "applied.lambdas.created")), 3);
        }
    }
    assert_int_equal(restores, 2);
    json_decref(audit);

    /* the providers and instances the restore made are persisted */
    tu_server_stop(b);
    struct tu_server_options opts = {.config_yaml = base_config};
    tu_server_restart(b, &opts);
    copy = backup_of(b);
    expect_same(json_object_get(copy, "providers"), providers, "providers after B's restart");
    expect_same(json_object_get(copy, "lambdas"), lambdas, "lambdas after B's restart");
    json_decref(copy);
    json_decref(doc);
    tu_server_stop(a);
    tu_server_stop(b);
}

static void test_restore_adds_and_updates(void **state)
{
    struct tu_server *srv = *state;
    char v1[65], v2[65];
    start(srv, NULL);
    upload_modules(srv, v1, v2);
    /* the gateway: alt with another seed, a provider and an instance the
     * backup does not know, and a1 running with another config */
    json_decref(tu_call(srv, "POST", "/providers", 202,
                        "{\"name\": \"alt\", \"adapter\": {\"identifier\": \"simulated\", "
                        "\"config\": {\"symbols\": [\"SOL-USDT\"], \"seed\": 8}}}"));
    json_decref(tu_call(srv, "POST", "/providers", 202,
                        "{\"name\": \"extra\", \"adapter\": {\"identifier\": \"simulated\", "
                        "\"config\": {\"symbols\": [\"ADA-USDT\"], \"tickRate\": 1}}}"));
    json_decref(
        tu_instance_create(srv, "a1", "ctx:prod", "{\"lookback\": 9}", "sim", "[\"BTC-USDT\"]"));
    json_decref(tu_instance_create(srv, "z9", "ctx", "{}", "extra", "[\"ADA-USDT\"]"));
    tu_instance_start(srv, "a1");

    /* a backup written by hand: no enabled, no tag or hash, symbols
     * repeated; the risk config as the gateway has it */
    json_t *current = backup_of(srv);
    char *risk = json_dumps(json_object_get(current, "risk"), JSON_COMPACT);
    char *text = tu_path(
        "{\"providers\": [%s, {\"name\": \"alt\", \"adapter\": {\"identifier\": \"simulated\", "
        "\"config\": {\"symbols\": [\"SOL-USDT\"], \"seed\": 7}}}],"
        " \"lambdas\": ["
        "{\"id\": \"a1\", \"strategy\": {\"identifier\": \"ctx\", \"tag\": \"prod\", "
        "\"config\": {\"lookback\": 3}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}},"
        "{\"id\": \"n1\", \"strategy\": {\"selector\": \"ctx\", \"config\": {}}, "
        "\"scope\": {\"idle\": {\"symbols\": [\"XRP-USDT\", \"XRP-USDT\"]}}},"
        "{\"id\": \"n2\", \"strategy\": {\"selector\": \"ctx@%s\", \"config\": {}}, "
        "\"scope\": {\"alt\": {\"symbols\": [\"SOL-USDT\"]}}}],"
        " \"risk\": %s}",
        idle_provider, v1, risk);
    free(risk);
    json_decref(current);
    json_t *answer = tu_call(srv, "POST", "/context/backup", 200, text);
    expect_restored(answer);
    expect_counts(answer, "providers", 1, 1, 0);
    expect_counts(answer, "lambdas", 2, 1, 0);
    json_decref(answer);

    json_t *doc = backup_of(srv);
    check_backup_shape(doc);
    json_t *providers = json_object_get(doc, "providers");
    assert_int_equal(json_array_size(providers), 4); /* alt, extra, idle, sim */
    assert_string_equal(tu_jstr(providers, "0.name"), "alt");
    assert_int_equal(tu_jint(providers, "0.adapter.config.seed"), 7);
    assert_string_equal(tu_jstr(providers, "1.name"), "extra");
    assert_string_equal(tu_jstr(providers, "2.name"), "idle");
    json_t *lambdas = json_object_get(doc, "lambdas");
    assert_int_equal(json_array_size(lambdas), 4); /* a1, n1, n2, z9 */
    assert_string_equal(tu_jstr(lambdas, "0.id"), "a1");
    assert_int_equal(tu_jint(lambdas, "0.strategy.config.lookback"), 3);
    assert_string_equal(tu_jstr(lambdas, "0.strategy.selector"), "ctx:prod");
    assert_string_equal(tu_jstr(lambdas, "1.id"), "n1");
    assert_int_equal(json_array_size(tu_jget(lambdas, "1.scope.idle.symbols")), 1);
    assert_string_equal(tu_jstr(lambdas, "3.id"), "z9");
    /* the update went the PUT way: a1 restarted on its new spec and runs */
    assert_true(running(srv, "a1"));
    assert_false(running(srv, "n1"));

    /* the same hand-written backup again: nothing to do */
    answer = tu_call(srv, "POST", "/context/backup", 200, text);
    expect_counts(answer, "providers", 0, 0, 2);
    expect_counts(answer, "lambdas", 0, 0, 3);
    json_decref(answer);
    json_t *again = backup_of(srv);
    expect_same(again, doc, "the backup after a restore that changed nothing");
    json_decref(again);
    free(text);

    /* a failure while applying (a1's new spec does not start, which only
     * a start finds) stops there and says what was applied before it */
    json_t *payload = json_deep_copy(doc);
    json_array_append_new(json_object_get(payload, "providers"),
                          json_loads("{\"name\": \"late\", \"adapter\": {\"identifier\": "
                                     "\"simulated\", \"config\": {\"symbols\": "
                                     "[\"DOT-USDT\"]}}, \"enabled\": false}",
                                     0, NULL));
    json_object_set_new(tu_jget(payload, "lambdas.0.strategy.config"), "explode", json_true());
    char *body = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);
    json_t *err = tu_call(srv, "POST", "/context/backup", 422, body);
    free(body);
    assert_string_equal(tu_jstr(err, "details.field"), "lambdas[0]");
    assert_true(json_is_true(tu_jget(err, "details.applied.risk")));
    assert_string_equal(tu_jstr(err, "details.applied.providers.created.0"), "late");
    assert_int_equal(json_array_size(tu_jget(err, "details.applied.lambdas.created")), 0);
    assert_int_equal(json_array_size(tu_jget(err, "details.applied.lambdas.updated")), 0);
    json_decref(err);
    json_t *snap = tu_instance_get(srv, "a1");
    assert_true(json_is_true(json_object_get(snap, "running")));
    assert_null(tu_jget(snap, "strategy.config.explode"));
    json_decref(snap);
    json_t *audit = tu_audit_entries(srv);
    const json_t *last = json_array_get(audit, json_array_size(audit) - 1);
    assert_string_equal(tu_jstr(last, "action"), "context.restore");
    assert_string_equal(tu_jstr(last, "applied.providers.created.0"), "late");
    assert_true(json_is_string(json_object_get(last, "error")));
    json_decref(audit);
    json_decref(doc);
    tu_server_stop(srv);
}

/* A refused restore: 400, details.field `field` (a prefix of it when
 * `prefix`), and the gateway unchanged. */
static void expect_refused(struct tu_server *srv, const json_t *before, json_t *payload,
                           const char *field, bool prefix)
{
    json_t *err = restore(srv, payload, 400);
    json_decref(payload);
    const char *named = json_string_value(tu_jget(err, "details.field"));
    if (!named || (prefix ? strncmp(named, field, strlen(field)) != 0 : strcmp(named, field) != 0))
        fail_msg("expected details.field %s'%s', got %s (%s)", prefix ? "starting " : "", field,
                 named ? named : "none", tu_jstr(err, "error"));
    if (!strstr(tu_jstr(err, "error"), named))
        fail_msg("the error '%s' does not name '%s'", tu_jstr(err, "error"), named);
    assert_null(tu_jget(err, "details.applied"));
    json_decref(err);
    json_t *after = backup_of(srv);
    expect_same(after, before, field);
    json_decref(after);
}

/* A valid payload that would change everything: a new provider and a new
 * instance on it, changed risk. Each refusal below spoils one part. */
static json_t *good_payload(const json_t *current)
{
    json_t *p = json_deep_copy(current);
    json_array_append_new(json_object_get(p, "providers"), json_loads(alt_provider, 0, NULL));
    json_array_append_new(
        json_object_get(p, "lambdas"),
        json_loads("{\"id\": \"new\", \"strategy\": {\"selector\": \"ctx\", \"config\": {}}, "
                   "\"scope\": {\"alt\": {\"symbols\": [\"SOL-USDT\"]}}}",
                   0, NULL));
    json_t *risk = json_object_get(p, "risk");
    json_object_set_new(risk, "killSwitchEnabled",
                        json_boolean(!json_is_true(json_object_get(risk, "killSwitchEnabled"))));
    return p;
}

static json_t *with(json_t *p, const char *list, const char *json)
{
    json_array_append_new(json_object_get(p, list), json_loads(json, 0, NULL));
    return p;
}

static void test_bad_payloads_change_nothing(void **state)
{
    struct tu_server *srv = *state;
    char v1[65], v2[65];
    start(srv, NULL);
    upload_modules(srv, v1, v2);
    json_decref(tu_instance_create(srv, "a1", "ctx:prod", "{}", "sim", "[\"BTC-USDT\"]"));
    json_t *before = backup_of(srv);
    json_t *audit = tu_audit_entries(srv);
    size_t audited = json_array_size(audit);
    json_decref(audit);

    /* the good payload is good: checked on a copy of the gateway's state
     * at the end, after every refusal */
    json_t *p = good_payload(before);
    json_object_del(p, "risk");
    expect_refused(srv, before, p, "risk", false);
    p = good_payload(before);
    json_object_set_new(p, "lambdas", json_object());
    expect_refused(srv, before, p, "lambdas", false);
    p = good_payload(before);
    json_object_del(p, "providers");
    expect_refused(srv, before, p, "providers", false);
    /* a section this gateway does not restore is refused, not dropped */
    p = good_payload(before);
    json_object_set_new(p, "tags", json_object());
    expect_refused(srv, before, p, "tags", false);

    /* providers: a bad setting, an unknown adapter, a repeated name */
    expect_refused(srv, before,
                   with(good_payload(before), "providers",
                        "{\"name\": \"bad\", \"adapter\": {\"identifier\": \"simulated\", "
                        "\"config\": {\"tickRate\": \"fast\"}}}"),
                   "providers[2].adapter.config.tickRate", false);
    expect_refused(srv, before,
                   with(good_payload(before), "providers",
                        "{\"name\": \"bad\", \"adapter\": {\"identifier\": \"binance\", "
                        "\"config\": {}}}"),
                   "providers[2].adapter.identifier", false);
    expect_refused(srv, before, with(good_payload(before), "providers", alt_provider),
                   "providers[2].name", false);
    expect_refused(srv, before, with(good_payload(before), "providers", "[]"), "providers[2]",
                   false);

    /* lambdas: no strategy, a misspelt member, a wrong config type, an
     * unknown symbol, a repeated id, an unknown selector, a hash its
     * selector does not resolve to */
    expect_refused(srv, before,
                   with(good_payload(before), "lambdas",
                        "{\"id\": \"x\", \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}"),
                   "lambdas[2].strategy", false);
    expect_refused(srv, before,
                   with(good_payload(before), "lambdas",
                        "{\"id\": \"x\", \"strategy\": {\"selector\": \"ctx\", \"confg\": {}}, "
                        "\"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}"),
                   "lambdas[2].strategy.confg", false);
    expect_refused(srv, before,
                   with(good_payload(before), "lambdas",
                        "{\"id\": \"x\", \"strategy\": {\"selector\": \"ctx\", \"config\": "
                        "{\"lookback\": \"many\"}}, \"scope\": {\"sim\": {\"symbols\": "
                        "[\"BTC-USDT\"]}}}"),
                   "lambdas[2].strategy.config.lookback", false);
    expect_refused(srv, before,
                   with(good_payload(before), "lambdas",
                        "{\"id\": \"x\", \"strategy\": {\"selector\": \"ctx\", \"config\": {}}, "
                        "\"scope\": {\"alt\": {\"symbols\": [\"BTC-USDT\"]}}}"),
                   "lambdas[2].scope.alt.symbols", false);
    expect_refused(srv, before,
                   with(good_payload(before), "lambdas",
                        "{\"id\": \"new\", \"strategy\": {\"selector\": \"ctx\", \"config\": {}}, "
                        "\"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}"),
                   "lambdas[2].id", false);
    expect_refused(srv, before,
                   with(good_payload(before), "lambdas",
                        "{\"id\": \"x\", \"strategy\": {\"selector\": \"nosuch:prod\", "
                        "\"config\": {}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}"),
                   "lambdas[2].strategy", false);
    char *mismatch = tu_path("{\"id\": \"x\", \"strategy\": {\"selector\": \"ctx:prod\", "
                             "\"hash\": \"sha256:%s\", \"config\": {}}, "
                             "\"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}",
                             v2);
    expect_refused(srv, before, with(good_payload(before), "lambdas", mismatch),
                   "lambdas[2].strategy.hash", false);
    free(mismatch);

    /* risk: a member of the wrong type; the providers and lambdas that
     * come after it in the order of application are not applied either */
    p = good_payload(before);
    json_object_set_new(json_object_get(p, "risk"), "orderThrottle", json_string("often"));
    expect_refused(srv, before, p, "risk", true);

    audit = tu_audit_entries(srv);
    assert_int_equal(json_array_size(audit), audited);
    json_decref(audit);

    /* and the good payload restores */
    json_t *answer = restore(srv, p = good_payload(before), 200);
    json_decref(p);
    expect_counts(answer, "providers", 1, 0, 1);
    expect_counts(answer, "lambdas", 1, 0, 1);
    json_decref(answer);
    json_decref(before);
    tu_server_stop(srv);
}

/* One request to /context/backup with a bearer secret (NULL: none);
 * returns the status, and the JSON body in *body when asked. */
static long call_with(struct tu_server *srv, const char *method, const char *secret,
                      const char *text, json_t **body)
{
    char *header = secret ? tu_path("Authorization: Bearer %s", secret) : NULL;
    const char *headers[] = {header, NULL};
    struct tu_request_options o = {
        .body = text, .body_len = text ? strlen(text) : 0, .headers = header ? headers : NULL};
    struct tu_response res;
    tu_request(srv, &res, method, "/context/backup", &o);
    free(header);
    long status = res.status;
    if (status >= 400)
        tu_assert_error(&res, status);
    if (body)
        *body = json_incref(res.json);
    tu_response_free(&res);
    return status;
}

static void test_tokens(void **state)
{
    struct tu_server *srv = *state;
    char ha[65], hr[65];
    tu_sha256_hex(ADMIN_SECRET, strlen(ADMIN_SECRET), ha);
    tu_sha256_hex(READ_SECRET, strlen(READ_SECRET), hr);
    char *yaml = tu_path("%sauth:\n"
                         "  tokens:\n"
                         "    - {name: ops, sha256: %s, role: admin}\n"
                         "    - {name: viewer, sha256: %s, role: read}\n",
                         base_config, ha, hr);
    start(srv, yaml);
    free(yaml);

    json_t *before = NULL;
    assert_int_equal(call_with(srv, "GET", NULL, NULL, NULL), 401);
    assert_int_equal(call_with(srv, "GET", READ_SECRET, NULL, &before), 200);
    check_backup_shape(before);
    /* the gateway's own backup with one more provider */
    json_t *payload = json_deep_copy(before);
    json_array_append_new(json_object_get(payload, "providers"),
                          json_loads(idle_provider, 0, NULL));
    char *text = json_dumps(payload, JSON_COMPACT);
    json_decref(payload);

    assert_int_equal(call_with(srv, "POST", NULL, text, NULL), 401);
    assert_int_equal(call_with(srv, "POST", READ_SECRET, text, NULL), 403);
    json_t *after = NULL;
    assert_int_equal(call_with(srv, "GET", ADMIN_SECRET, NULL, &after), 200);
    expect_same(after, before, "the backup after a refused restore");
    json_decref(after);
    assert_int_equal(call_with(srv, "POST", ADMIN_SECRET, text, NULL), 200);
    assert_int_equal(call_with(srv, "GET", READ_SECRET, NULL, &after), 200);
    assert_int_equal(json_array_size(json_object_get(after, "providers")), 2);
    json_decref(after);
    free(text);
    json_decref(before);
    json_t *audit = tu_audit_entries(srv);
    const json_t *last = json_array_get(audit, json_array_size(audit) - 1);
    assert_string_equal(tu_jstr(last, "action"), "context.restore");
    assert_string_equal(tu_jstr(last, "actor"), "ops");
    json_decref(audit);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_export_and_round_trip, pair_setup, pair_teardown),
        cmocka_unit_test_setup_teardown(test_restore_adds_and_updates, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_bad_payloads_change_nothing, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_tokens, tu_server_setup, tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
