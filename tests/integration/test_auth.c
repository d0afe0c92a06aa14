/*
 * Access control over HTTP: bearer tokens with the read and admin roles.
 *
 *   - every route of the API, by class (open, read, mutation, unknown), with
 *     no token, a wrong token, a read token and an admin token: 401 without
 *     a valid token (JSON body, WWW-Authenticate: Bearer), 403 for a read
 *     token on a mutation (and nothing changes), never 401/403 for admin;
 *   - /healthz is always open; /metrics is open unless
 *     auth.metrics_require_token;
 *   - with no tokens, on loopback, everything is open and the audit names
 *     "anonymous"; asked to listen on 0.0.0.0 without tokens the server
 *     refuses to start (exit status 2) and says why; with tokens it starts
 *     there;
 *   - audit entries of uploads, tag moves, deletes, instance changes and
 *     refreshes name the token that acted;
 *   - no secret ever reaches the server's log or the audit log;
 *   - a 401 is counted by reason and logged with the client's address, at
 *     most a line a second.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static const char ADMIN_SECRET[] = "adm1n-Secret-Zq7xP-4f1c9e";
static const char DEPLOY_SECRET[] = "d3ploy-Secret-Hn8vT-77a2b0";
static const char READ_SECRET[] = "r3ad-Secret-Lm4kW-0c55d1";
static const char WRONG_SECRET[] = "wr0ng-Secret-Yt2bQ-9e8f7a";

/* Three tokens: ops (admin), deployer (admin), viewer (read). */
static char *token_config(bool metrics_require_token, const char *extra)
{
    char ha[65], hd[65], hr[65];
    tu_sha256_hex(ADMIN_SECRET, strlen(ADMIN_SECRET), ha);
    tu_sha256_hex(DEPLOY_SECRET, strlen(DEPLOY_SECRET), hd);
    tu_sha256_hex(READ_SECRET, strlen(READ_SECRET), hr);
    return tu_path("auth:\n"
                   "  metrics_require_token: %s\n"
                   "  tokens:\n"
                   "    - {name: ops, sha256: %s, role: admin}\n"
                   "    - {name: deployer, sha256: %s, role: admin}\n"
                   "    - {name: viewer, sha256: %s, role: read}\n"
                   "%s",
                   metrics_require_token ? "true" : "false", ha, hd, hr, extra ? extra : "");
}

static void start_with_tokens(struct tu_server *srv, bool metrics_require_token)
{
    char *yaml = token_config(metrics_require_token, NULL);
    const char *const args[] = {"--log-level", "debug", NULL};
    struct tu_server_options opts = {.config_yaml = yaml, .extra_args = args};
    tu_server_start(srv, &opts);
    free(yaml);
}

/* One request with an optional bearer secret (and optional raw
 * Authorization header instead); fails the test on a transport error. */
static long call_auth(struct tu_server *srv, struct tu_response *res, const char *method,
                      const char *path, const char *authorization, const char *body)
{
    char *header = authorization ? tu_path("Authorization: %s", authorization) : NULL;
    const char *headers[] = {header, NULL};
    struct tu_request_options o = {
        .body = body, .body_len = body ? strlen(body) : 0, .headers = header ? headers : NULL};
    tu_request(srv, res, method, path, &o);
    free(header);
    return res->status;
}

static long call(struct tu_server *srv, struct tu_response *res, const char *method,
                 const char *path, const char *secret, const char *body)
{
    char *auth = secret ? tu_path("Bearer %s", secret) : NULL;
    long status = call_auth(srv, res, method, path, auth, body);
    free(auth);
    return status;
}

/* Sends, asserts the status, frees. */
static void expect(struct tu_server *srv, const char *method, const char *path, const char *secret,
                   const char *body, long status)
{
    struct tu_response res;
    call(srv, &res, method, path, secret, body);
    if (res.status != status)
        fail_msg("%s %s: expected %ld, got %ld: %.1000s", method, path, status, res.status,
                 res.body);
    tu_response_free(&res);
}

static json_t *call_json(struct tu_server *srv, const char *method, const char *path,
                         const char *secret, const char *body, long status)
{
    struct tu_response res;
    call(srv, &res, method, path, secret, body);
    if (res.status != status || !res.json)
        fail_msg("%s %s: expected %ld with JSON, got %ld: %.1000s", method, path, status,
                 res.status, res.body);
    json_t *out = json_incref(res.json);
    tu_response_free(&res);
    return out;
}

static void assert_401(const struct tu_response *res, const char *what)
{
    if (res->status != 401)
        fail_msg("%s: expected 401, got %ld: %.500s", what, res->status, res->body);
    tu_assert_error(res, 401);
    char *www = tu_header(res, "WWW-Authenticate");
    if (!www || strncmp(www, "Bearer", 6) != 0)
        fail_msg("%s: 401 without 'WWW-Authenticate: Bearer' (got '%s')", what,
                 www ? www : "(none)");
    free(www);
}

/* Uploads with a token and returns the revision's 64 hex digits. */
static void upload_as(struct tu_server *srv, const char *secret, const char *source,
                      const char *tag, char hex[65])
{
    json_t *body = tag ? json_pack("{s:s, s:s}", "source", source, "tag", tag)
                       : json_pack("{s:s}", "source", source);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    json_t *doc = call_json(srv, "POST", "/strategies/modules", secret, text, 201);
    const char *spelled = tu_jstr(doc, "module.hash");
    assert_non_null(spelled);
    memcpy(hex, spelled + 7, 65);
    json_decref(doc);
    free(text);
}

/* ------------------------------------------------------- the route matrix */

enum route_class { OPEN, METRICS, READ, MUTATION, UNKNOWN };

struct route_case {
    enum route_class cls;
    const char *method;
    const char *path;
    const char *body;
};

/* Every route of the API. Mutations name things that do not exist or carry
 * bodies that do not validate, so an admin gets a 4xx from the handler (not
 * 401/403) and nothing changes whoever calls. */
static const struct route_case routes[] = {
    {OPEN, "GET", "/healthz", NULL},
    {METRICS, "GET", "/metrics", NULL},
    {READ, "GET", "/strategies", NULL},
    {READ, "GET", "/strategies/modules", NULL},
    {READ, "GET", "/strategies/registry", NULL},
    {READ, "GET", "/strategies/modules/alpha", NULL},
    {READ, "GET", "/strategies/modules/alpha/source", NULL},
    {READ, "GET", "/strategies/modules/alpha/usage", NULL},
    {READ, "GET", "/strategies/alpha", NULL},
    {READ, "GET", "/providers", NULL},
    {READ, "GET", "/providers/sim", NULL},
    {READ, "GET", "/providers/sim/balances", NULL},
    {READ, "GET", "/adapters", NULL},
    {READ, "GET", "/adapters/simulated", NULL},
    {READ, "GET", "/strategy/instances", NULL},
    {READ, "GET", "/strategy/instances/nosuch", NULL},
    {READ, "GET", "/strategy/instances/nosuch/orders", NULL},
    {READ, "GET", "/strategy/instances/nosuch/executions", NULL},
    {MUTATION, "POST", "/strategies/modules", "{}"},
    {MUTATION, "POST", "/strategies/refresh", "{\"strategies\": 7}"},
    {MUTATION, "PUT", "/strategies/modules/nosuch", "{}"},
    {MUTATION, "DELETE", "/strategies/modules/nosuch", NULL},
    {MUTATION, "PUT", "/strategies/modules/nosuch/tags/t1", "{\"hash\": \"sha256:00\"}"},
    {MUTATION, "DELETE", "/strategies/modules/nosuch/tags/t1", NULL},
    {MUTATION, "POST", "/providers", "{}"},
    {MUTATION, "PUT", "/providers/nosuch", "{}"},
    {MUTATION, "DELETE", "/providers/nosuch", NULL},
    {MUTATION, "POST", "/providers/nosuch/start", NULL},
    {MUTATION, "POST", "/providers/nosuch/stop", NULL},
    {MUTATION, "POST", "/strategy/instances", "{}"},
    {MUTATION, "PUT", "/strategy/instances/nosuch", "{}"},
    {MUTATION, "DELETE", "/strategy/instances/nosuch", NULL},
    {MUTATION, "POST", "/strategy/instances/nosuch/start", NULL},
    {MUTATION, "POST", "/strategy/instances/nosuch/stop", NULL},
    {UNKNOWN, "GET", "/nowhere", NULL},
    {UNKNOWN, "POST", "/strategies/modules/alpha/tags", "{}"},
    {UNKNOWN, "PATCH", "/strategies", "{}"},
};

static void check_route(struct tu_server *srv, const struct route_case *rc, bool metrics_closed)
{
    char what[256];
    struct tu_response res;
    bool open = rc->cls == OPEN || (rc->cls == METRICS && !metrics_closed);

    /* No token, a wrong one, malformed headers. */
    const char *bad[] = {NULL,
                         "Bearer wr0ng-Secret-Yt2bQ-9e8f7a",
                         "Bearer",
                         "Bearer   ",
                         "Basic b3BzOnBhc3N3b3Jk",
                         "adm1n-Secret-Zq7xP-4f1c9e",
                         "Token adm1n-Secret-Zq7xP-4f1c9e"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        snprintf(what, sizeof what, "%s %s with Authorization '%s'", rc->method, rc->path,
                 bad[i] ? bad[i] : "(none)");
        call_auth(srv, &res, rc->method, rc->path, bad[i], rc->body);
        if (open) {
            if (res.status != 200)
                fail_msg("%s: expected 200 on an open route, got %ld", what, res.status);
        } else {
            assert_401(&res, what);
        }
        tu_response_free(&res);
    }

    /* The read token. */
    snprintf(what, sizeof what, "%s %s as viewer (read)", rc->method, rc->path);
    call(srv, &res, rc->method, rc->path, READ_SECRET, rc->body);
    switch (rc->cls) {
    case OPEN:
    case METRICS:
        if (res.status != 200)
            fail_msg("%s: expected 200, got %ld", what, res.status);
        break;
    case READ:
        if (res.status != 200 && res.status != 404)
            fail_msg("%s: expected 200 or 404, got %ld: %.500s", what, res.status, res.body);
        break;
    case MUTATION:
        tu_assert_error(&res, 403);
        if (!strstr(tu_jstr(res.json, "error"), "read"))
            fail_msg("%s: the 403 does not say the role: %s", what, res.body);
        assert_string_equal(tu_jstr(res.json, "details.token"), "viewer");
        break;
    case UNKNOWN:
        if (res.status != 404 && res.status != 405)
            fail_msg("%s: expected 404 or 405, got %ld", what, res.status);
        tu_assert_error(&res, res.status);
        break;
    }
    tu_response_free(&res);

    /* Admin tokens: authorized everywhere (the handler decides). */
    const char *admins[] = {ADMIN_SECRET, DEPLOY_SECRET};
    for (size_t i = 0; i < 2; i++) {
        snprintf(what, sizeof what, "%s %s as admin %zu", rc->method, rc->path, i);
        call(srv, &res, rc->method, rc->path, admins[i], rc->body);
        if (res.status == 401 || res.status == 403 || res.status >= 500)
            fail_msg("%s: got %ld: %.500s", what, res.status, res.body);
        if (rc->cls == MUTATION && res.status < 400)
            fail_msg("%s: the probe was meant to be refused by the handler, got %ld", what,
                     res.status);
        tu_response_free(&res);
    }
}

static void test_every_route_and_role(void **state)
{
    struct tu_server *srv = *state;
    start_with_tokens(srv, false);
    char *src = tu_module_source("alpha", "v1", NULL);
    char hex[65];
    upload_as(srv, ADMIN_SECRET, src, NULL, hex);
    free(src);

    char *reg_path = tu_path("%s/registry.json", srv->strategies_dir);
    char *registry_before = tu_read_file(reg_path, NULL);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++)
        check_route(srv, &routes[i], false);
    char *registry_after = tu_read_file(reg_path, NULL);
    assert_string_equal(registry_before, registry_after);
    free(registry_before);
    free(registry_after);
    free(reg_path);

    /* The refused and unauthenticated calls left no audit entry; only the
     * upload is there. */
    json_t *audit = tu_audit_entries(srv);
    size_t i;
    json_t *e;
    json_array_foreach(audit, i, e)
    {
        const char *actor = json_string_value(json_object_get(e, "actor"));
        if (!actor || strcmp(actor, "ops") != 0)
            fail_msg("unexpected audit entry: %s", json_dumps(e, JSON_COMPACT));
    }
    json_decref(audit);

    /* Lower-case scheme and surrounding blanks are accepted. */
    struct tu_response res;
    call_auth(srv, &res, "GET", "/strategies", "bearer r3ad-Secret-Lm4kW-0c55d1  ", NULL);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    /* A token's hash is not a token. */
    char hr[65];
    tu_sha256_hex(READ_SECRET, strlen(READ_SECRET), hr);
    call(srv, &res, "GET", "/strategies", hr, NULL);
    assert_401(&res, "the hash of the read token used as a token");
    tu_response_free(&res);
    tu_server_stop(srv);
}

static void test_metrics_can_require_a_token(void **state)
{
    struct tu_server *srv = *state;
    start_with_tokens(srv, true);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        if (routes[i].cls == OPEN || routes[i].cls == METRICS)
            check_route(srv, &routes[i], true);
    }
    struct tu_response res;
    call(srv, &res, "GET", "/metrics", READ_SECRET, NULL);
    tu_assert_status(&res, 200);
    char *type = tu_header(&res, "Content-Type");
    assert_non_null(type);
    assert_true(strncmp(type, "text/plain", 10) == 0);
    free(type);
    assert_non_null(strstr(res.body, "stratd_http_requests_total"));
    tu_response_free(&res);
    tu_server_stop(srv);
}

/* ---------------------------------------------------------------- audit */

static bool audit_has(const json_t *audit, const char *action, const char *actor, const char *key,
                      const char *value)
{
    size_t i;
    json_t *e;
    json_array_foreach(audit, i, e)
    {
        const char *a = json_string_value(json_object_get(e, "action"));
        const char *who = json_string_value(json_object_get(e, "actor"));
        const char *v = key ? json_string_value(json_object_get(e, key)) : NULL;
        if (a && who && strcmp(a, action) == 0 && strcmp(who, actor) == 0 &&
            (!key || (v && strcmp(v, value) == 0)))
            return true;
    }
    return false;
}

static void expect_audit(const json_t *audit, const char *action, const char *actor,
                         const char *key, const char *value)
{
    if (!audit_has(audit, action, actor, key, value)) {
        char *text = json_dumps(audit, JSON_INDENT(1));
        fail_msg("no audit entry %s by %s%s%s%s; the log:\n%s", action, actor, key ? " with " : "",
                 key ? key : "", value ? value : "", text);
    }
}

static void test_audit_names_the_token(void **state)
{
    struct tu_server *srv = *state;
    start_with_tokens(srv, false);
    char *v1 = tu_module_source("alpha", "v1", "onTrade() {},");
    char *v2 = tu_module_source("alpha", "v2", "onTrade() { return 2; },");
    char h1[65], h2[65];
    upload_as(srv, ADMIN_SECRET, v1, NULL, h1);
    upload_as(srv, DEPLOY_SECRET, v2, NULL, h2);

    char *body = tu_path("{\"hash\": \"sha256:%s\"}", h1);
    expect(srv, "PUT", "/strategies/modules/alpha/tags/prod", DEPLOY_SECRET, body, 200);
    free(body);
    expect(srv, "DELETE", "/strategies/modules/alpha/tags/v2?allowOrphan=true", ADMIN_SECRET, NULL,
           200);

    const char *spec = "{\"id\": \"inst-1\", \"strategy\": {\"selector\": \"alpha:prod\", "
                       "\"config\": {}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}";
    json_decref(call_json(srv, "POST", "/strategy/instances", ADMIN_SECRET, spec, 201));
    json_decref(
        call_json(srv, "POST", "/strategy/instances/inst-1/start", DEPLOY_SECRET, NULL, 200));
    /* requests that change nothing leave no entry: a start of a running
     * instance, a tag put where it is */
    json_decref(
        call_json(srv, "POST", "/strategy/instances/inst-1/start", ADMIN_SECRET, NULL, 200));
    body = tu_path("{\"hash\": \"sha256:%s\"}", h1);
    expect(srv, "PUT", "/strategies/modules/alpha/tags/prod", ADMIN_SECRET, body, 200);
    free(body);
    /* prod moves to v2, the refresh moves the instance. */
    body = tu_path("{\"hash\": \"sha256:%s\"}", h2);
    expect(srv, "PUT", "/strategies/modules/alpha/tags/prod", ADMIN_SECRET, body, 200);
    free(body);
    json_t *refresh = call_json(srv, "POST", "/strategies/refresh", DEPLOY_SECRET,
                                "{\"strategies\": [\"alpha:prod\"]}", 200);
    json_decref(refresh);
    json_decref(call_json(srv, "POST", "/strategy/instances/inst-1/stop", ADMIN_SECRET, NULL, 200));
    json_decref(
        call_json(srv, "POST", "/strategy/instances/inst-1/stop", DEPLOY_SECRET, NULL, 200));
    const char *update = "{\"strategy\": {\"selector\": \"alpha:prod\", \"config\": {}}, "
                         "\"scope\": {\"sim\": {\"symbols\": [\"ETH-USDT\"]}}}";
    json_decref(call_json(srv, "PUT", "/strategy/instances/inst-1", DEPLOY_SECRET, update, 200));
    json_decref(call_json(srv, "DELETE", "/strategy/instances/inst-1", ADMIN_SECRET, NULL, 200));
    char *del = tu_path("/strategies/modules/alpha@sha256:%s", h1);
    expect(srv, "DELETE", del, DEPLOY_SECRET, NULL, 204);
    free(del);
    /* A read token's refused attempts leave nothing. */
    expect(srv, "POST", "/strategies/refresh", READ_SECRET, "{}", 403);
    expect(srv, "DELETE", "/strategies/modules/alpha", READ_SECRET, NULL, 403);

    json_t *audit = tu_audit_entries(srv);
    expect_audit(audit, "module.upload", "ops", "strategy", "alpha");
    expect_audit(audit, "module.upload", "deployer", "strategy", "alpha");
    expect_audit(audit, "tag.move", "deployer", "tag", "prod");
    expect_audit(audit, "tag.move", "ops", "tag", "prod");
    expect_audit(audit, "tag.delete", "ops", "tag", "v2");
    expect_audit(audit, "instance.create", "ops", NULL, NULL);
    expect_audit(audit, "instance.start", "deployer", "id", "inst-1");
    expect_audit(audit, "refresh", "deployer", NULL, NULL);
    expect_audit(audit, "instance.stop", "ops", "id", "inst-1");
    expect_audit(audit, "instance.update", "deployer", "id", "inst-1");
    expect_audit(audit, "instance.delete", "ops", "id", "inst-1");
    expect_audit(audit, "module.deleteRevision", "deployer", "strategy", "alpha");
    assert_false(audit_has(audit, "instance.start", "ops", "id", "inst-1"));
    assert_false(audit_has(audit, "instance.stop", "deployer", "id", "inst-1"));
    size_t i;
    json_t *e;
    size_t moves = 0;
    json_array_foreach(audit, i, e)
    {
        const char *action = json_string_value(json_object_get(e, "action"));
        moves += action && strcmp(action, "tag.move") == 0 &&
                 strcmp(json_string_value(json_object_get(e, "tag")), "prod") == 0;
    }
    assert_int_equal(moves, 2); /* to v1, then to v2: the put in place is none */
    /* an update says what it replaced */
    json_array_foreach(audit, i, e)
    {
        const char *action = json_string_value(json_object_get(e, "action"));
        if (!action || strcmp(action, "instance.update") != 0)
            continue;
        assert_string_equal(tu_jstr(e, "from.scope.sim.symbols.0"), "BTC-USDT");
        assert_string_equal(tu_jstr(e, "from.strategy.selector"), "alpha:prod");
        assert_string_equal(tu_jstr(e, "spec.scope.sim.symbols.0"), "ETH-USDT");
    }
    json_array_foreach(audit, i, e)
    {
        const char *actor = json_string_value(json_object_get(e, "actor"));
        if (!actor || (strcmp(actor, "ops") != 0 && strcmp(actor, "deployer") != 0))
            fail_msg("audit entry with actor '%s': %s", actor ? actor : "(none)",
                     json_dumps(e, JSON_COMPACT));
        if (!json_is_string(json_object_get(e, "ts")))
            fail_msg("audit entry without ts: %s", json_dumps(e, JSON_COMPACT));
    }
    json_decref(audit);
    free(v1);
    free(v2);
    tu_server_stop(srv);
}

/* ----------------------------------------------------- secrets in logs */

static void expect_no_secret(const char *text, const char *where)
{
    const char *secrets[] = {ADMIN_SECRET, DEPLOY_SECRET, READ_SECRET, WRONG_SECRET};
    for (size_t i = 0; i < 4; i++) {
        /* Also a recognisable part of it, in case it was cut. */
        char part[12];
        snprintf(part, sizeof part, "%.10s", secrets[i]);
        if (strstr(text, secrets[i]) || strstr(text, part))
            fail_msg("the secret '%s' appears in %s", secrets[i], where);
    }
}

static void test_secrets_never_logged(void **state)
{
    struct tu_server *srv = *state;
    start_with_tokens(srv, true);
    const char *secrets[] = {ADMIN_SECRET, DEPLOY_SECRET, READ_SECRET, WRONG_SECRET, NULL};
    char *src = tu_module_source("alpha", "v1", NULL);
    char hex[65];
    upload_as(srv, ADMIN_SECRET, src, NULL, hex);
    for (size_t i = 0; i < sizeof routes / sizeof routes[0]; i++) {
        for (size_t k = 0; k < 5; k++) {
            struct tu_response res;
            call(srv, &res, routes[i].method, routes[i].path, secrets[k], routes[i].body);
            tu_response_free(&res);
        }
    }
    /* Malformed requests: a bad Content-Length, a header without a colon,
     * a huge header carrying the secret. */
    struct tu_response res;
    char *big = calloc(1, 40000);
    memset(big, 'x', 39000);
    char *hdr = tu_path("X-Note: %s %s", ADMIN_SECRET, big);
    const char *headers[] = {hdr, "Authorization: Bearer wr0ng-Secret-Yt2bQ-9e8f7a", NULL};
    struct tu_request_options o = {.headers = headers};
    tu_request(srv, &res, "GET", "/strategies", &o);
    if (res.status != 431)
        fail_msg("a 39 KB header: expected 431, got %ld", res.status);
    tu_response_free(&res);
    free(hdr);
    free(big);
    char *url = tu_path("/strategies/modules?token=%s", "x");
    call(srv, &res, "GET", url, READ_SECRET, NULL);
    tu_response_free(&res);
    free(url);
    tu_server_stop(srv);

    char *log = tu_server_log(srv);
    assert_non_null(strstr(log, "\"level\":\"debug\"")); /* the debug log was on */
    expect_no_secret(log, "the server log");
    free(log);
    char *audit_path = tu_path("%s/audit.log", srv->state_dir);
    char *audit = tu_read_file(audit_path, NULL);
    assert_non_null(audit);
    expect_no_secret(audit, "the audit log");
    free(audit);
    free(audit_path);
    char *cfg = tu_read_file(srv->config_path, NULL);
    expect_no_secret(cfg, "the configuration file");
    free(cfg);
    free(src);
}

/* A 401 is counted by its reason and logged at warn level with the
 * client's address and the route, never the secret; a client guessing
 * tokens gets at most a line a second, each saying how many refusals went
 * untold since the one before, so that told and untold add up to every
 * refusal. A valid token is neither counted nor logged. */
static void test_refused_tokens_are_logged_and_counted(void **state)
{
    struct tu_server *srv = *state;
    start_with_tokens(srv, false);
    struct tu_response res;
    assert_int_equal(call(srv, &res, "GET", "/strategies/modules", NULL, NULL), 401);
    tu_response_free(&res);
    json_t *first =
        tu_wait_log(srv, NULL, "refused a request without a valid bearer token", TU_WAIT_S);
    assert_string_equal(tu_jstr(first, "level"), "warn");
    assert_string_equal(tu_jstr(first, "reason"), "no bearer token");
    assert_string_equal(tu_jstr(first, "client"), "127.0.0.1");
    assert_string_equal(tu_jstr(first, "route"), "/strategies/modules");
    assert_int_equal(tu_jint(first, "untoldSince"), 0);
    json_decref(first);

    enum { GUESSES = 300 };
    tu_sleep_ms(1100);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    for (int i = 0; i < GUESSES; i++) {
        assert_int_equal(call(srv, &res, "GET", "/strategy/instances", WRONG_SECRET, NULL), 401);
        tu_response_free(&res);
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(call(srv, &res, "GET", "/strategy/instances", READ_SECRET, NULL), 200);
    tu_response_free(&res);
    tu_sleep_ms(1100);
    assert_int_equal(call(srv, &res, "GET", "/strategy/instances", WRONG_SECRET, NULL), 401);
    tu_response_free(&res);
    tu_wait_metric(srv, "stratd_http_token_refusals_total{reason=\"unknown\"}", GUESSES + 1);
    assert_true(tu_metric(srv, "stratd_http_token_refusals_total{reason=\"missing\"}") == 1.0);

    json_t *lines = tu_log_lines(srv, NULL, "refused a request without a valid bearer token");
    size_t told = json_array_size(lines);
    long long untold = 0;
    for (size_t i = 0; i < told; i++) {
        const json_t *line = json_array_get(lines, i);
        untold += tu_jint(line, "untoldSince");
        if (i > 0)
            assert_string_equal(tu_jstr(line, "reason"), "a token no configured token matches");
    }
    /* the flood's first refusal and the last one, a second later, are told;
     * in between, at most one a second */
    double flood_s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    if (told < 3 || (double)told > 3.0 + flood_s + 1.0)
        fail_msg("%zu refusal lines for %d guesses over %.2f s", told, GUESSES, flood_s);
    assert_int_equal((long long)told + untold, GUESSES + 2);
    const json_t *last = json_array_get(lines, told - 1);
    assert_string_equal(tu_jstr(last, "route"), "/strategy/instances");
    json_decref(lines);
    tu_server_stop(srv);
    char *log = tu_server_log(srv);
    expect_no_secret(log, "the server log");
    free(log);
}

/* ---------------------------------------------------- open and exposure */

static void test_open_on_loopback_without_tokens(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *src = tu_module_source("alpha", "v1", NULL);
    char hex[65];
    upload_as(srv, NULL, src, NULL, hex);
    free(src);
    /* Any Authorization header is ignored when no token is configured. */
    expect(srv, "GET", "/strategies", WRONG_SECRET, NULL, 200);
    char *body = tu_path("{\"hash\": \"sha256:%s\"}", hex);
    expect(srv, "PUT", "/strategies/modules/alpha/tags/prod", NULL, body, 200);
    free(body);
    expect(srv, "GET", "/metrics", NULL, NULL, 200);
    json_t *audit = tu_audit_entries(srv);
    assert_true(json_array_size(audit) > 0);
    expect_audit(audit, "tag.move", "anonymous", "tag", "prod");
    expect_audit(audit, "module.upload", "anonymous", "strategy", "alpha");
    json_decref(audit);
    tu_server_stop(srv);
}

/* Runs `stratd serve` expecting it to exit by itself; returns the exit
 * status and its stderr. */
static int run_serve_to_exit(const char *root, const char *listen, const char *config,
                             char **err_text)
{
    char *strategies = tu_path("%s/strategies", root);
    char *state = tu_path("%s/var", root);
    char *err_path = tu_path("%s/stderr", root);
    const char *env = getenv("STRATD_TEST_BINARY");
    const char *binary = env && *env ? env : STRATD_BINARY;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int null = open("/dev/null", O_WRONLY);
        if (fd < 0 || null < 0)
            _exit(126);
        dup2(fd, STDERR_FILENO);
        dup2(null, STDOUT_FILENO);
        if (config)
            execl(binary, binary, "serve", "--listen", listen, "--strategies", strategies,
                  "--state", state, "--config", config, (char *)NULL);
        else
            execl(binary, binary, "serve", "--listen", listen, "--strategies", strategies,
                  "--state", state, (char *)NULL);
        _exit(127);
    }
    char what[160];
    snprintf(what, sizeof what, "stratd serve --listen %s", listen);
    int status = tu_wait_child(pid, 60, what);
    *err_text = tu_read_file(err_path, NULL);
    if (!*err_text)
        *err_text = strdup("");
    free(strategies);
    free(state);
    free(err_path);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Sends with one extra header; returns the status. */
static long send_with_header(struct tu_server *srv, const char *method, const char *path,
                             const char *header, const char *body)
{
    const char *headers[] = {header, NULL};
    struct tu_request_options o = {
        .body = body, .body_len = body ? strlen(body) : 0, .headers = headers};
    struct tu_response res;
    tu_request(srv, &res, method, path, &o);
    long status = res.status;
    if (status == 403 && !strstr(tu_jstr(res.json, "error"), "loopback"))
        fail_msg("%s %s with %s: a 403 that does not say why: %s", method, path, header, res.body);
    tu_response_free(&res);
    return status;
}

/* Without tokens the API is the local clients': a web page posting from
 * another site (its Origin) or through a name rebound to 127.0.0.1 (its
 * Host) is refused and changes nothing; this machine's own origins and
 * clients that send neither pass. With tokens, the token decides. */
static void test_web_pages_refused_without_tokens(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *src = tu_module_source("alpha", "v1", NULL);
    free(tu_upload_hash(srv, src));
    free(src);
    const char *spec = "{\"id\": \"csrf\", \"strategy\": {\"selector\": \"alpha\"}, "
                       "\"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}";
    char *rebound = tu_path("Host: evil.example:%d", srv->port);
    assert_int_equal(
        send_with_header(srv, "POST", "/strategy/instances", "Origin: http://evil.example", spec),
        403);
    assert_int_equal(send_with_header(srv, "POST", "/strategy/instances", rebound, spec), 403);
    assert_int_equal(send_with_header(srv, "GET", "/strategies", rebound, NULL), 403);
    assert_int_equal(send_with_header(srv, "POST", "/strategy/instances", "Origin: null", spec),
                     403);
    json_decref(tu_get_json(srv, 404, "/strategy/instances/csrf"));
    char *own = tu_path("Origin: http://localhost:%d", srv->port);
    assert_int_equal(send_with_header(srv, "POST", "/strategy/instances", own, spec), 201);
    free(own);
    own = tu_path("Host: [::1]:%d", srv->port);
    assert_int_equal(send_with_header(srv, "GET", "/strategies", own, NULL), 200);
    free(own);
    free(rebound);
    tu_server_stop(srv);
}

/* With tokens the token decides: a dashboard on another origin, behind a
 * proxy's name, is served. */
static void test_web_pages_served_with_tokens(void **state)
{
    struct tu_server *srv = *state;
    start_with_tokens(srv, false);
    char *rebound = tu_path("Host: gateway.example:%d", srv->port);
    char *auth = tu_path("Authorization: Bearer %s", READ_SECRET);
    const char *headers[] = {auth, "Origin: http://dashboard.example", rebound, NULL};
    struct tu_request_options o = {.headers = headers};
    struct tu_response res;
    tu_request(srv, &res, "GET", "/strategies", &o);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    free(auth);
    free(rebound);
    tu_server_stop(srv);
}

static void test_refuses_wildcard_without_tokens(void **state)
{
    (void)state;
    char *root = tu_tempdir("stratd-auth");
    const char *addresses[] = {"0.0.0.0:0", "10.1.2.3:0"};
    for (size_t i = 0; i < 2; i++) {
        char *err_text = NULL;
        int code = run_serve_to_exit(root, addresses[i], NULL, &err_text);
        if (code != 2)
            fail_msg("--listen %s without tokens: exit status %d, expected 2; stderr:\n%s",
                     addresses[i], code, err_text);
        if (!strstr(err_text, "refusing to listen on") || !strstr(err_text, "auth.tokens"))
            fail_msg("--listen %s without tokens: the message does not say why:\n%s", addresses[i],
                     err_text);
        free(err_text);
    }
    /* An empty token list is no token at all. */
    char *cfg = tu_path("%s/empty.yaml", root);
    tu_write_text(cfg, "auth:\n  tokens: []\n");
    char *err_text = NULL;
    int code = run_serve_to_exit(root, "0.0.0.0:0", cfg, &err_text);
    if (code != 2 || !strstr(err_text, "refusing to listen on 0.0.0.0"))
        fail_msg("tokens: [] on 0.0.0.0: exit %d, stderr:\n%s", code, err_text);
    free(err_text);
    free(cfg);
    if (!getenv("STRATD_TEST_KEEP"))
        tu_remove_tree(root);
    free(root);
}

static void test_listens_on_wildcard_with_tokens(void **state)
{
    struct tu_server *srv = *state;
    char *yaml = token_config(false, NULL);
    const char *const args[] = {"--listen", "0.0.0.0:0", NULL};
    struct tu_server_options opts = {.config_yaml = yaml, .extra_args = args};
    tu_server_start(srv, &opts);
    free(yaml);
    expect(srv, "GET", "/healthz", NULL, NULL, 200);
    expect(srv, "GET", "/strategies", NULL, NULL, 401);
    expect(srv, "GET", "/strategies", READ_SECRET, NULL, 200);
    expect(srv, "POST", "/strategies/refresh", READ_SECRET, "{}", 403);
    expect(srv, "POST", "/strategies/refresh", ADMIN_SECRET, "{}", 200);
    char *log = tu_server_log(srv);
    assert_non_null(strstr(log, "listening on http://0.0.0.0:"));
    free(log);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_route_and_role, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_metrics_can_require_a_token, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_audit_names_the_token, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_secrets_never_logged, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refused_tokens_are_logged_and_counted, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_open_on_loopback_without_tokens, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_web_pages_refused_without_tokens, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_web_pages_served_with_tokens, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test(test_refuses_wildcard_without_tokens),
        cmocka_unit_test_setup_teardown(test_listens_on_wildcard_with_tokens, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
