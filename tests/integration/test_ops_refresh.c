/*
 * Targeted refresh over HTTP: every reason code (refreshed, alreadyPinned,
 * retired for an instance and for a target that matched nothing), every
 * target form, the request's errors, and a refresh racing with the event
 * flow: a strategy turns each trade into an order priced at the trade's id,
 * so the order history shows that no trade reached both the old and the new
 * VM, none was lost between them, and the instance's orders (and its order
 * numbering) carried over.
 */
#include "testutil.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *spell(const char *hex)
{
    return tu_path("sha256:%s", hex);
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

static void create(struct tu_server *srv, const char *id, const char *selector)
{
    json_decref(tu_instance_create(srv, id, selector, NULL, "sim", "[\"BTC-USDT\"]"));
}

/* The result for instance id: its reason, hash and previousHash (NULL:
 * absent). */
static void expect(const json_t *response, const char *id, const char *selector, const char *reason,
                   const char *hex, const char *previous_hex)
{
    const json_t *r = tu_ops_refresh_result(response, id);
    if (!r) {
        char *dump = json_dumps(response, JSON_COMPACT);
        fail_msg("no result for instance %s in %s", id, dump);
    }
    if (strcmp(tu_jstr(r, "reason"), reason) != 0) {
        char *dump = json_dumps(r, JSON_COMPACT);
        fail_msg("instance %s: expected %s, got %s", id, reason, dump);
    }
    if (selector)
        assert_string_equal(tu_jstr(r, "selector"), selector);
    char *hash = hex ? spell(hex) : NULL;
    if (hash)
        assert_string_equal(tu_jstr(r, "hash"), hash);
    free(hash);
    if (previous_hex) {
        char *prev = spell(previous_hex);
        assert_string_equal(tu_jstr(r, "previousHash"), prev);
        free(prev);
    } else {
        assert_null(json_object_get(r, "previousHash"));
    }
}

/* The result for a target that matched no instance. */
static void expect_unmatched(const json_t *response, const char *selector)
{
    size_t i;
    const json_t *r;
    json_array_foreach(json_object_get(response, "results"), i, r)
    {
        if (strcmp(tu_jstr(r, "selector"), selector) != 0 ||
            json_array_size(json_object_get(r, "instances")) != 0)
            continue;
        assert_string_equal(tu_jstr(r, "reason"), "retired");
        /* omitted rather than null */
        assert_null(json_object_get(r, "hash"));
        assert_null(json_object_get(r, "previousHash"));
        assert_null(json_object_get(r, "strategy"));
        return;
    }
    char *dump = json_dumps(response, JSON_COMPACT);
    fail_msg("no unmatched result for %s in %s", selector, dump);
}

static size_t nresults(const json_t *response)
{
    return json_array_size(json_object_get(response, "results"));
}

/* Results are sorted by selector, then strategy, then instance. */
static void expect_sorted(const json_t *response)
{
    const json_t *list = json_object_get(response, "results");
    for (size_t i = 1; i < json_array_size(list); i++) {
        const json_t *a = json_array_get(list, i - 1), *b = json_array_get(list, i);
        int c = strcmp(tu_jstr(a, "selector"), tu_jstr(b, "selector"));
        if (c == 0) {
            const char *sa = json_string_value(json_object_get(a, "strategy"));
            const char *sb = json_string_value(json_object_get(b, "strategy"));
            c = strcmp(sa ? sa : "", sb ? sb : "");
        }
        if (c == 0) {
            const char *ia = json_string_value(tu_jget(a, "instances.0"));
            const char *ib = json_string_value(tu_jget(b, "instances.0"));
            c = strcmp(ia ? ia : "", ib ? ib : "");
        }
        if (c > 0) {
            char *dump = json_dumps(list, JSON_COMPACT);
            fail_msg("results are not sorted at %zu: %s", i, dump);
        }
    }
}

static void expect_state(struct tu_server *srv, const char *id, const char *hex, bool running,
                         const char *stop_reason)
{
    json_t *snap = tu_instance_get(srv, id);
    char *hash = spell(hex);
    if (strcmp(tu_jstr(snap, "strategy.hash"), hash) != 0 ||
        json_is_true(json_object_get(snap, "running")) != running ||
        (stop_reason && strcmp(json_string_value(json_object_get(snap, "stopReason"))
                                   ? json_string_value(json_object_get(snap, "stopReason"))
                                   : "",
                               stop_reason) != 0)) {
        char *dump = json_dumps(snap, JSON_COMPACT);
        fail_msg("instance %s: expected %s on %s (stopReason %s), got %s", id,
                 running ? "running" : "stopped", hash, stop_reason ? stop_reason : "any", dump);
    }
    free(hash);
    json_decref(snap);
}

/* ------------------------------------------------------------ reasons */

/* "s": v1 (tags v1, latest, prod, canary), v2 (tags v2). "t": v1.
 * Instances: run-prod, stop-prod on s:prod; run-canary on s:canary;
 * run-hash pinned to s v1 by hash; run-latest on s; t-1 on t. */
struct scene {
    char s1[65], s2[65], t1[65];
};

static void scene_start(struct tu_server *srv, struct scene *sc)
{
    tu_server_start(srv, NULL);
    char *src = tu_module_source("s", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, "{\"aliases\": [\"prod\", \"canary\"]}", 201, sc->s1);
    free(src);
    src = tu_module_source("s", "v2", "onTrade() {}, onTicker() {},");
    tu_upload_expect(srv, src, NULL, 201, sc->s2);
    free(src);
    src = tu_module_source("t", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, NULL, 201, sc->t1);
    free(src);
    char *pinned = tu_path("s@sha256:%s", sc->s1);
    create(srv, "run-prod", "s:prod");
    create(srv, "stop-prod", "s:prod");
    create(srv, "run-canary", "s:canary");
    create(srv, "run-hash", pinned);
    create(srv, "run-latest", "s");
    create(srv, "t-1", "t");
    free(pinned);
    const char *run[] = {"run-prod", "run-canary", "run-hash", "run-latest", "t-1"};
    for (size_t i = 0; i < 5; i++)
        tu_instance_start(srv, run[i]);
}

static void test_every_reason_code(void **state)
{
    struct tu_server *srv = *state;
    struct scene sc;
    scene_start(srv, &sc);
    char *pinned = tu_path("s@sha256:%s", sc.s1);

    /* nothing moved: every instance alreadyPinned, without a body */
    json_t *r = tu_ops_refresh(srv, NULL, 200);
    assert_string_equal(tu_jstr(r, "status"), "ok");
    assert_int_equal(nresults(r), 6);
    expect_sorted(r);
    expect(r, "run-prod", "s:prod", "alreadyPinned", sc.s1, NULL);
    expect(r, "stop-prod", "s:prod", "alreadyPinned", sc.s1, NULL);
    expect(r, "run-hash", pinned, "alreadyPinned", sc.s1, NULL);
    expect(r, "run-latest", "s", "alreadyPinned", sc.s1, NULL);
    expect(r, "t-1", "t", "alreadyPinned", sc.t1, NULL);
    json_decref(r);
    /* an empty object is the same as no body */
    r = tu_ops_refresh(srv, "{}", 200);
    assert_int_equal(nresults(r), 6);
    json_decref(r);

    /* refreshed: prod and latest move to v2; the running ones restart on
     * it, the stopped one is re-pinned and stays stopped */
    put_tag(srv, "s", "prod", sc.s2);
    put_tag(srv, "s", "latest", sc.s2);
    /* with them moved, a misspelled key is refused (without it the request
     * would name no target: the whole fleet), and empty lists name none */
    const char *misspelled[][3] = {
        {"{\"strategy\": [\"s:canary\"]}", "strategy", "unknown field"},
        {"{\"hashes\": [], \"instances\": [\"run-canary\"]}", "instances", "unknown field"},
        /* a client's unset list sent as null names no target either */
        {"{\"strategies\": null}", "strategies", "is null"},
        {"{\"strategies\": [\"t\"], \"hashes\": null}", "hashes", "is null"},
        /* a NUL would cut "s\u0000x" to "s", a target it does not name */
        {"{\"strategies\": [\"s\\u0000x\"]}", NULL, "\\u0000"}};
    for (size_t i = 0; i < sizeof misspelled / sizeof misspelled[0]; i++) {
        struct tu_response bad;
        tu_send(srv, &bad, "POST", "/strategies/refresh", misspelled[i][0]);
        tu_assert_error(&bad, 400);
        if (misspelled[i][1])
            assert_string_equal(tu_jstr(bad.json, "details.field"), misspelled[i][1]);
        if (!strstr(tu_jstr(bad.json, "error"), misspelled[i][2]))
            fail_msg("%s: %s", misspelled[i][0], tu_jstr(bad.json, "error"));
        tu_response_free(&bad);
    }
    const char *empty[] = {"{\"strategies\": []}", "{\"hashes\": [], \"strategies\": []}"};
    for (size_t i = 0; i < 2; i++) {
        r = tu_ops_refresh(srv, empty[i], 200);
        assert_int_equal(nresults(r), 0);
        json_decref(r);
    }
    expect_state(srv, "run-prod", sc.s1, true, NULL);
    expect_state(srv, "stop-prod", sc.s1, false, NULL);
    expect_state(srv, "run-latest", sc.s1, true, NULL);
    r = tu_ops_refresh(srv, NULL, 200);
    assert_int_equal(nresults(r), 6);
    expect_sorted(r);
    expect(r, "run-prod", "s:prod", "refreshed", sc.s2, sc.s1);
    expect(r, "stop-prod", "s:prod", "refreshed", sc.s2, sc.s1);
    expect(r, "run-latest", "s", "refreshed", sc.s2, sc.s1);
    expect(r, "run-canary", "s:canary", "alreadyPinned", sc.s1, NULL);
    /* pinned by name@hash: never moves */
    expect(r, "run-hash", pinned, "alreadyPinned", sc.s1, NULL);
    expect(r, "t-1", "t", "alreadyPinned", sc.t1, NULL);
    json_decref(r);
    expect_state(srv, "run-prod", sc.s2, true, NULL);
    expect_state(srv, "stop-prod", sc.s2, false, NULL);
    expect_state(srv, "run-latest", sc.s2, true, NULL);
    expect_state(srv, "run-hash", sc.s1, true, NULL);

    /* retired: the canary tag goes; its instance is stopped. A running
     * instance follows it, so the delete needs saying that the next
     * refresh is to retire it; without that it is refused and the tag
     * stays. */
    struct tu_response res;
    tu_delete(srv, &res, "/strategies/modules/s/tags/canary");
    tu_assert_error(&res, 409);
    assert_int_equal(json_array_size(tu_jget(res.json, "details.instances")), 1);
    assert_string_equal(
        json_string_value(json_array_get(tu_jget(res.json, "details.instances"), 0)), "run-canary");
    assert_non_null(strstr(tu_jstr(res.json, "error"), "followed by 1 running instance"));
    tu_response_free(&res);
    json_decref(tu_get_json(srv, 200, "/strategies/modules/s:canary"));
    /* latest is never deleted: that is the refusal, followers or not, with
     * no hint to retire them that would only lead to a second 409 */
    tu_delete(srv, &res, "/strategies/modules/s/tags/latest?retireFollowers=true");
    tu_assert_error(&res, 409);
    assert_non_null(strstr(tu_jstr(res.json, "error"), "cannot be deleted"));
    assert_null(tu_jget(res.json, "details.hint"));
    tu_response_free(&res);
    tu_delete(srv, &res, "/strategies/modules/s/tags/canary?retireFollowers=true");
    tu_assert_status(&res, 200);
    assert_string_equal(json_string_value(json_array_get(tu_jget(res.json, "followers"), 0)),
                        "run-canary");
    tu_response_free(&res);
    r = tu_ops_refresh(srv, "{\"strategies\": [\"s:canary\", \"s\"]}", 200);
    expect_sorted(r);
    /* s matches every instance of s (once each); s:canary matched one */
    assert_int_equal(nresults(r), 5);
    expect(r, "run-canary", "s:canary", "retired", sc.s1, NULL);
    expect(r, "run-prod", "s:prod", "alreadyPinned", sc.s2, NULL);
    json_decref(r);
    expect_state(srv, "run-canary", sc.s1, false, "retired");
    /* a target naming nothing: one retired result without hashes */
    r = tu_ops_refresh(srv, "{\"strategies\": [\"nosuch\", \"s:canary\"], \"hashes\": []}", 200);
    assert_int_equal(nresults(r), 2);
    expect_unmatched(r, "nosuch");
    /* the retired instance still matches s:canary (its own selector) */
    expect(r, "run-canary", "s:canary", "retired", sc.s1, NULL);
    json_decref(r);
    char *zeros = tu_path("sha256:%064d", 0);
    char *body = tu_path("{\"hashes\": [\"%s\"]}", zeros);
    r = tu_ops_refresh(srv, body, 200);
    free(body);
    assert_int_equal(nresults(r), 1);
    expect_unmatched(r, zeros);
    json_decref(r);
    free(zeros);

    /* a running instance whose revision is deleted under it cannot exist
     * (the delete is refused), but a stopped one can: retired on refresh */
    tu_instance_stop(srv, "run-hash");
    char *by_hash = tu_escape(pinned);
    tu_delete(srv, &res, "/strategies/modules/%s", by_hash);
    free(by_hash);
    tu_assert_status(&res, 204);
    tu_response_free(&res);
    body = tu_path("{\"hashes\": [\"%s\"]}", pinned);
    r = tu_ops_refresh(srv, body, 200);
    free(body);
    assert_int_equal(nresults(r), 2);
    expect(r, "run-hash", pinned, "retired", sc.s1, NULL);
    expect(r, "run-canary", "s:canary", "retired", sc.s1, NULL);
    json_decref(r);

    char *m = tu_ops_metrics(srv);
    assert_true(tu_ops_metric(m, "stratd_instance_stops_total", "reason", "retired", NULL) == 1);
    assert_true(tu_ops_metric(m, "stratd_instance_stops_total", "reason", "refreshed", NULL) == 2);
    free(m);
    free(pinned);
    /* the first refresh started two instances on s2 in one batch: its
     * firstSeen is the first start's, and reads back the same after a
     * restart */
    char *usage_path = tu_path("/strategies/modules/s@%s/usage", sc.s2);
    json_t *usage = tu_get_json(srv, 200, "%s", usage_path);
    char *first_seen = strdup(tu_jstr(usage, "usage.firstSeen"));
    json_decref(usage);
    tu_server_stop(srv);
    tu_server_restart(srv, NULL);
    usage = tu_get_json(srv, 200, "%s", usage_path);
    assert_string_equal(tu_jstr(usage, "usage.firstSeen"), first_seen);
    json_decref(usage);
    free(first_seen);
    free(usage_path);
    tu_server_stop(srv);
}

/* A request body with HEX, SHORT and THEX replaced by s v1's hash, its
 * first 12 digits and t v1's hash. */
static char *fill(const char *text, const struct scene *sc)
{
    char *out = strdup(text);
    const char *keys[] = {"THEX", "HEX", "SHORT", "SIX"};
    char shortened[13], six[7];
    memcpy(shortened, sc->s1, 12);
    shortened[12] = '\0';
    memcpy(six, sc->s1, 6);
    six[6] = '\0';
    const char *values[] = {sc->t1, sc->s1, shortened, six};
    for (size_t k = 0; k < 4; k++) {
        char *at;
        while ((at = strstr(out, keys[k])) != NULL) {
            *at = '\0';
            char *next = tu_path("%s%s%s", out, values[k], at + strlen(keys[k]));
            free(out);
            out = next;
        }
    }
    return out;
}

/* Every target form picks the instances it names. */
static void test_target_forms(void **state)
{
    struct tu_server *srv = *state;
    struct scene sc;
    scene_start(srv, &sc);
    char *pinned = tu_path("s@sha256:%s", sc.s1);

    struct {
        const char *body; /* HEX: s1's hex digits, SHORT: their first 12 */
        const char *ids[6];
    } cases[] = {
        /* a bare name: every instance of the strategy */
        {"{\"strategies\": [\"s\"]}",
         {"run-canary", "run-hash", "run-latest", "run-prod", "stop-prod", NULL}},
        /* name:tag: the instances created with that selector */
        {"{\"strategies\": [\"s:prod\"]}", {"run-prod", "stop-prod", NULL}},
        /* name:latest covers the bare name's followers */
        {"{\"strategies\": [\"s:latest\"]}", {"run-latest", NULL}},
        /* hashes in every spelling pick the instances pinned to it */
        {"{\"hashes\": [\"sha256:HEX\"]}",
         {"run-canary", "run-hash", "run-latest", "run-prod", "stop-prod", NULL}},
        {"{\"hashes\": [\"SHORT\"]}",
         {"run-canary", "run-hash", "run-latest", "run-prod", "stop-prod", NULL}},
        {"{\"hashes\": [\"s@HEX\"]}",
         {"run-canary", "run-hash", "run-latest", "run-prod", "stop-prod", NULL}},
        {"{\"strategies\": [\"t\"], \"hashes\": [\"t@sha256:THEX\"]}", {"t-1", NULL}},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        char *body = fill(cases[c].body, &sc);
        json_t *r = tu_ops_refresh(srv, body, 200);
        size_t n = 0;
        while (cases[c].ids[n])
            n++;
        if (nresults(r) != n) {
            char *dump = json_dumps(r, JSON_COMPACT);
            fail_msg("%s: expected %zu results, got %s", body, n, dump);
        }
        for (size_t i = 0; i < n; i++) {
            const json_t *res = tu_ops_refresh_result(r, cases[c].ids[i]);
            if (!res) {
                char *dump = json_dumps(r, JSON_COMPACT);
                fail_msg("%s: no result for %s in %s", body, cases[c].ids[i], dump);
            }
            assert_string_equal(tu_jstr(res, "reason"), "alreadyPinned");
        }
        expect_sorted(r);
        json_decref(r);
        free(body);
    }
    /* t:v1 is not s's: it does not pick s's instances even with the same
     * tag name */
    json_t *r = tu_ops_refresh(srv, "{\"strategies\": [\"t:v1\"]}", 200);
    assert_int_equal(nresults(r), 1);
    expect_unmatched(r, "t:v1");
    json_decref(r);

    /* malformed requests: 400, nothing refreshed */
    const char *bad[] = {
        "{\"strategies\": \"s\"}",
        "{\"hashes\": [1]}",
        "{\"strategies\": [\"Bad Name\"]}",
        "[\"s\"]",
        "{\"hashes\": {}}",
        "not json",
        "{\"strategies\": [\"s:\"]}",
        /* "hashes" takes hashes only: a name, a tag, a word that is not
         * hex and a prefix shorter than 12 digits would otherwise pick a
         * whole strategy or read as "retired" */
        "{\"hashes\": [\"s\"]}",
        "{\"hashes\": [\"s:prod\"]}",
        "{\"hashes\": [\"xyz\"]}",
        "{\"hashes\": [\"SIX\"]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *body = fill(bad[i], &sc);
        struct tu_response res;
        tu_send(srv, &res, "POST", "/strategies/refresh", body);
        tu_assert_error(&res, 400);
        if (strstr(body, "\"hashes\": [\""))
            assert_string_equal(tu_jstr(res.json, "details.field"), "hashes");
        tu_response_free(&res);
        free(body);
    }
    free(pinned);
    tu_server_stop(srv);
}

/* A refresh onto a revision whose create() throws: the instance is moved,
 * left stopped (startFailed), and the result carries the error. */
static void test_refresh_to_a_revision_that_does_not_start(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char good[65], bad[65];
    char *src = tu_module_source("fragile", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, "{\"aliases\": [\"prod\"]}", 201, good);
    free(src);
    src = tu_path(
        "module.exports = {\n"
        "  metadata: { name: 'fragile', displayName: 'Fragile', tag: 'v2', events: ['Trade'] },\n"
        "  create(env) { throw new Error('no start today'); },\n"
        "};\n");
    tu_upload_expect(srv, src, "{\"aliases\": [\"prod\"]}", 201, bad);
    free(src);
    put_tag(srv, "fragile", "prod", good);
    create(srv, "frag", "fragile:prod");
    tu_instance_start(srv, "frag");
    put_tag(srv, "fragile", "prod", bad);
    json_t *r = tu_ops_refresh(srv, "{\"strategies\": [\"fragile:prod\"]}", 200);
    expect(r, "frag", "fragile:prod", "refreshed", bad, good);
    const json_t *one = tu_ops_refresh_result(r, "frag");
    const char *error = json_string_value(json_object_get(one, "error"));
    if (!error || !strstr(error, "no start today"))
        fail_msg("the result does not carry the start error: %s", json_dumps(one, JSON_COMPACT));
    json_decref(r);
    expect_state(srv, "frag", bad, false, "startFailed");
    /* a failure stop like the others: logged at error and counted as
     * startFailed (the alert reads it), not as a refresh's restart */
    json_t *line = tu_wait_log(srv, "frag", "instance stopped", TU_WAIT_S);
    assert_string_equal(tu_jstr(line, "reason"), "startFailed");
    assert_string_equal(tu_jstr(line, "level"), "error");
    assert_non_null(strstr(tu_jstr(line, "error"), "no start today"));
    json_decref(line);
    char *m = tu_ops_metrics(srv);
    assert_true(tu_ops_metric(m, "stratd_instance_stops_total", "reason", "startFailed", NULL) ==
                1);
    assert_false(tu_ops_metric(m, "stratd_instance_stops_total", "reason", "refreshed", NULL) > 0);
    char *hash = spell(good);
    assert_true(tu_ops_metric(m, "strategy_revision_instances", "hash", hash, NULL) == 0);
    free(hash);
    hash = spell(bad);
    assert_true(tu_ops_metric(m, "strategy_revision_instances", "hash", hash, NULL) == 0);
    free(hash);
    free(m);
    /* moving the tag back and refreshing re-pins the instance the failed
     * start stopped and starts it: the rollback brings it back */
    put_tag(srv, "fragile", "prod", good);
    r = tu_ops_refresh(srv, "{\"strategies\": [\"fragile\"]}", 200);
    expect(r, "frag", "fragile:prod", "refreshed", good, bad);
    assert_true(json_is_true(json_object_get(tu_ops_refresh_result(r, "frag"), "started")));
    json_decref(r);
    expect_state(srv, "frag", good, true, NULL);
    json_t *snap = tu_instance_get(srv, "frag");
    assert_true(json_is_null(json_object_get(snap, "stopReason")));
    json_decref(snap);
    /* across a restart too: its desired state is running again */
    tu_server_stop(srv);
    tu_server_restart(srv, NULL);
    expect_state(srv, "frag", good, true, NULL);
    tu_server_stop(srv);
}

/* A revision still in the catalogue whose file is unusable for a moment
 * (moved away by hand): a refresh had stopped its running instances as
 * "retired", and a start then said the revision no longer existed. They
 * are alreadyPinned and run on (their code is loaded); a stopped one's
 * start names the revision's problem; once the file is back it starts. */
static void test_refresh_while_a_running_revision_file_is_away(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char h[65];
    char *src = tu_module_source("away", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, NULL, 201, h);
    free(src);
    create(srv, "away-run", "away");
    create(srv, "away-idle", "away");
    tu_instance_start(srv, "away-run");
    char *file = tu_path("%s/away/%s/away.js", srv->strategies_dir, h);
    char *kept = tu_path("%s/away.js.kept", srv->root);
    assert_int_equal(rename(file, kept), 0);
    json_t *r = tu_ops_refresh(srv, "{}", 200);
    expect(r, "away-run", "away", "alreadyPinned", h, NULL);
    expect(r, "away-idle", "away", "alreadyPinned", h, NULL);
    assert_true(json_array_size(json_object_get(r, "problems")) == 1);
    json_decref(r);
    expect_state(srv, "away-run", h, true, NULL);
    json_t *err = tu_call(srv, "POST", "/strategy/instances/away-idle/start", 409, "{}");
    if (!strstr(tu_jstr(err, "error"), "invalid") || strstr(tu_jstr(err, "error"), "no longer"))
        fail_msg("the start of an instance whose revision's file is away: %s",
                 tu_jstr(err, "error"));
    assert_string_equal(tu_jstr(err, "details.reason"), "invalidRevision");
    json_decref(err);
    assert_int_equal(rename(kept, file), 0);
    r = tu_ops_refresh(srv, "{}", 200);
    expect(r, "away-idle", "away", "alreadyPinned", h, NULL);
    json_decref(r);
    tu_instance_start(srv, "away-idle");
    expect_state(srv, "away-run", h, true, NULL);
    free(file);
    free(kept);
    tu_server_stop(srv);
}

/* A refresh picks a running instance whose new revision gives no launch
 * plan (a required config field it lacks), and the instance fails on its
 * own (its CPU budget) before the refresh's stop reaches its worker: the
 * stop is counted once, as the failure, not again as "refreshed". */
static void test_refresh_does_not_count_a_stop_that_did_not_happen(void **state)
{
    struct tu_server *srv = *state;
    const char *config = "providers:\n"
                         "  - name: sim\n"
                         "    adapter: simulated\n"
                         "    enabled: true\n"
                         "    config:\n"
                         "      symbols: [BTC-USDT]\n"
                         "      seed: 5\n"
                         "      tickRate: 200\n";
    struct tu_server_options opts = {.config_yaml = config};
    tu_server_start(srv, &opts);
    char a[65], b[65];
    char *src =
        tu_strategy_source("lapse", "['Trade']", "[]", "let armed = false;",
                           "onTrade() {\n"
                           "  if (armed) return;\n"
                           "  armed = true;\n"
                           "  setTimeout(() => { h.log('spinning', {}); for (;;) {} }, 0);\n"
                           "},");
    tu_upload_expect(srv, src, "{\"aliases\": [\"prod\"]}", 201, a);
    free(src);
    src = tu_strategy_source("lapse", "['Trade']",
                             "[{name: 'needed', type: 'string', required: true}]", NULL,
                             "onTrade() {},");
    tu_upload_expect(srv, src, NULL, 201, b);
    free(src);
    put_tag(srv, "lapse", "prod", a);
    /* a budget long enough for the refresh to arrive inside the callback */
    json_decref(tu_instance_create(srv, "lapse-1", "lapse:prod", "{\"cpu_budget_ms\": 4000}", "sim",
                                   "[\"BTC-USDT\"]"));
    tu_instance_start(srv, "lapse-1");
    json_decref(tu_wait_log_values(srv, "lapse-1", "spinning", 1, TU_WAIT_S));

    put_tag(srv, "lapse", "prod", b);
    json_t *r = tu_ops_refresh(srv, "{\"strategies\": [\"lapse:prod\"]}", 200);
    expect(r, "lapse-1", "lapse:prod", "refreshed", b, a);
    const char *error =
        json_string_value(json_object_get(tu_ops_refresh_result(r, "lapse-1"), "error"));
    if (!error || !strstr(error, "needed"))
        fail_msg("the result does not name the missing field: %s", json_dumps(r, JSON_COMPACT));
    json_decref(r);
    expect_state(srv, "lapse-1", b, false, "startFailed");
    /* the failure happened first, and is the only stop */
    json_t *line = tu_wait_log(srv, "lapse-1", "instance stopped", TU_WAIT_S);
    assert_string_equal(tu_jstr(line, "reason"), "cpuBudget");
    json_decref(line);
    char *m = tu_ops_metrics(srv);
    char *hash = spell(a);
    double refreshed = tu_ops_metric(m, "stratd_instance_stops_total", "reason", "refreshed", NULL);
    if (!isnan(refreshed) && refreshed != 0)
        fail_msg("a stop that did not happen was counted as refreshed (%g)", refreshed);
    assert_true(tu_ops_metric(m, "stratd_instance_stops_total", "reason", "cpuBudget", NULL) == 1);
    assert_true(tu_ops_metric(m, "strategy_revision_instances_total", "hash", hash, "action",
                              "stop", NULL) == 1);
    free(hash);
    free(m);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ a fleet */

#define FLEET 12
#define FLEET_RUNNING 10

/* A refresh moves many instances over both workers at once and answers
 * once every move is durable: after SIGKILL each is still on its new pin,
 * the running ones running again, and the usage of both revisions says
 * when they were last used. */
static void test_refresh_moves_a_fleet_durably(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char v1[65], v2[65];
    char *src = tu_module_source("s", "v1", "onTrade() {},");
    tu_upload_expect(srv, src, "{\"aliases\": [\"prod\"]}", 201, v1);
    free(src);
    src = tu_module_source("s", "v2", "onTrade() {}, onTicker() {},");
    tu_upload_expect(srv, src, NULL, 201, v2);
    free(src);
    char ids[FLEET][16];
    for (int i = 0; i < FLEET; i++) {
        snprintf(ids[i], sizeof ids[i], "f-%02d", i);
        create(srv, ids[i], "s:prod");
        if (i < FLEET_RUNNING)
            tu_instance_start(srv, ids[i]);
    }
    put_tag(srv, "s", "prod", v2);
    json_t *r = tu_ops_refresh(srv, "{\"strategies\": [\"s:prod\"]}", 200);
    assert_int_equal(nresults(r), FLEET);
    for (int i = 0; i < FLEET; i++)
        expect(r, ids[i], "s:prod", "refreshed", v2, v1);
    json_decref(r);
    for (int i = 0; i < FLEET; i++)
        expect_state(srv, ids[i], v2, i < FLEET_RUNNING, NULL);

    tu_server_kill(srv);
    tu_server_restart(srv, NULL);
    for (int i = 0; i < FLEET; i++)
        expect_state(srv, ids[i], v2, i < FLEET_RUNNING, NULL);
    /* a second refresh finds nothing to move */
    r = tu_ops_refresh(srv, "{\"strategies\": [\"s:prod\"]}", 200);
    for (int i = 0; i < FLEET; i++)
        expect(r, ids[i], "s:prod", "alreadyPinned", v2, NULL);
    json_decref(r);
    /* both revisions' usage survived: v1 was left, v2 taken */
    for (int v = 0; v < 2; v++) {
        json_t *u = tu_get_json(srv, 200, "/strategies/modules/s@sha256:%s/usage", v ? v2 : v1);
        assert_true(json_is_string(tu_jget(u, "usage.firstSeen")));
        assert_true(json_is_string(tu_jget(u, "usage.lastSeen")));
        assert_int_equal(tu_jint(u, "usage.count"), v ? FLEET_RUNNING : 0);
        json_decref(u);
    }
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ the race */

/* Records every trade of its symbol as a resting limit buy priced at the
 * trade's id (far below the market, so it never fills) with the VM's
 * version as the quantity. The second version also cancels the instance's
 * first order on its first trade: orders outlive the VM that placed them. */
static char *recorder_source(int version)
{
    return tu_path(
        "module.exports = {\n"
        "  metadata: {\n"
        "    name: 'recorder', displayName: 'Recorder', tag: 'v%d', events: ['Trade'],\n"
        "    config: [{ name: 'dry_run', type: 'bool', default: true }],\n"
        "  },\n"
        "  create({ runtime }) {\n"
        "    let cancelled = %s;\n"
        "    return {\n"
        "      onTrade(ctx, evt, trade) {\n"
        "        if (!cancelled) cancelled = runtime.cancelOrder(ctx.instanceId + '-1');\n"
        "        runtime.submitOrder(ctx.provider, 'buy', %d, trade.tradeId, ctx.symbol);\n"
        "      },\n"
        "    };\n"
        "  },\n"
        "};\n",
        version, version == 1 ? "true" : "false", version);
}

struct order_view {
    long long n;        /* of "<instance>-<n>" */
    long long trade_id; /* the price */
    int version;        /* the quantity */
    char state[32];
};

static int cmp_orders(const void *a, const void *b)
{
    const struct order_view *x = a, *y = b;
    return x->n < y->n ? -1 : x->n > y->n;
}

struct orders_ctx {
    struct tu_server *srv;
    const char *id;
    long long expected;
    json_t *orders;
};

/* True once the order history holds `expected` orders, none still
 * unacknowledged. */
static bool orders_settled(void *arg)
{
    struct orders_ctx *c = arg;
    json_decref(c->orders);
    c->orders = tu_get_json(c->srv, 200, "/strategy/instances/%s/orders?limit=10000", c->id);
    const json_t *list = json_object_get(c->orders, "orders");
    if ((long long)json_array_size(list) != c->expected)
        return false;
    size_t i;
    const json_t *o;
    json_array_foreach(list, i, o)
    {
        if (strcmp(tu_jstr(o, "state"), "acknowledged") != 0 &&
            strcmp(tu_jstr(o, "state"), "cancelled") != 0)
            return false;
    }
    return true;
}

static long long delivered_of(struct tu_server *srv, const char *id)
{
    json_t *snap = tu_instance_get(srv, id);
    long long n = tu_jint(snap, "counters.eventsDelivered");
    json_decref(snap);
    return n;
}

#define RACERS 2
static const char *const racers[RACERS] = {"rec-btc", "rec-eth"};

struct delivered_ctx {
    struct tu_server *srv;
    long long min[RACERS];
};

static bool delivered_at_least(void *arg)
{
    struct delivered_ctx *c = arg;
    for (int r = 0; r < RACERS; r++) {
        if (delivered_of(c->srv, racers[r]) < c->min[r])
            return false;
    }
    return true;
}

/* The order history of one racer, checked trade by trade. */
static void check_history(struct tu_server *srv, const char *id, int flips)
{
    /* one order per trade delivered (the counter counts handler calls, and
     * onTrade is the only handler); wait for the history to hold them all */
    long long delivered = delivered_of(srv, id);
    struct orders_ctx oc = {srv, id, delivered, NULL};
    if (!tu_ops_wait_until(orders_settled, &oc, TU_WAIT_S))
        fail_msg("%s: the order history did not settle at %lld orders: %zu listed", id, delivered,
                 json_array_size(json_object_get(oc.orders, "orders")));
    const json_t *list = json_object_get(oc.orders, "orders");
    size_t n = json_array_size(list);
    struct order_view *v = calloc(n, sizeof *v);
    size_t prefix = strlen(id);
    size_t i;
    const json_t *o;
    json_array_foreach(list, i, o)
    {
        const char *cid = tu_jstr(o, "clientOrderId");
        assert_true(strncmp(cid, id, prefix) == 0 && cid[prefix] == '-');
        assert_string_equal(tu_jstr(o, "strategyInstance"), id);
        v[i].n = atoll(cid + prefix + 1);
        v[i].trade_id = atoll(tu_jstr(o, "price"));
        v[i].version = atoi(tu_jstr(o, "quantity"));
        snprintf(v[i].state, sizeof v[i].state, "%s", tu_jstr(o, "state"));
    }
    qsort(v, n, sizeof *v, cmp_orders);

    /* numbering continued across every VM: 1..n without a gap */
    for (size_t k = 0; k < n; k++) {
        if (v[k].n != (long long)k + 1)
            fail_msg("%s: order numbers jump from %lld to %lld", id, k ? v[k - 1].n : 0, v[k].n);
    }
    /* one order per trade, trades consecutive: none delivered twice (to
     * the old and the new VM), none lost between them */
    int switches = 0;
    for (size_t k = 1; k < n; k++) {
        if (v[k].trade_id != v[k - 1].trade_id + 1)
            fail_msg("%s: trade %lld follows trade %lld (orders %lld and %lld, versions %d and "
                     "%d)",
                     id, v[k].trade_id, v[k - 1].trade_id, v[k - 1].n, v[k].n, v[k - 1].version,
                     v[k].version);
        if (v[k].version != v[k - 1].version)
            switches++;
    }
    /* the VM changed exactly once per refresh, and never back and forth */
    assert_int_equal(v[0].version, 1);
    assert_int_equal(switches, flips);
    /* the first order, placed by version 1, was cancelled by version 2 */
    assert_string_equal(v[0].state, "cancelled");
    for (size_t k = 1; k < n; k++)
        assert_string_equal(v[k].state, "acknowledged");
    print_message("%s: %zu trades, each handled once, over %d VMs (trades %lld to %lld)\n", id, n,
                  flips + 1, v[0].trade_id, v[n - 1].trade_id);
    free(v);
    json_decref(oc.orders);
}

static void test_refresh_races_with_events(void **state)
{
    struct tu_server *srv = *state;
    /* a fast feed, so that trades keep arriving while the VMs change */
    const char *config = "providers:\n"
                         "  - name: sim\n"
                         "    adapter: simulated\n"
                         "    enabled: true\n"
                         "    config:\n"
                         "      symbols: [BTC-USDT, ETH-USDT]\n"
                         "      seed: 7\n"
                         "      tickRate: 400\n";
    struct tu_server_options opts = {.config_yaml = config};
    tu_server_start(srv, &opts);
    char hex[2][65];
    for (int v = 0; v < 2; v++) {
        char *src = recorder_source(v + 1);
        tu_upload_expect(srv, src, "{\"aliases\": [\"live\"]}", 201, hex[v]);
        free(src);
    }
    put_tag(srv, "recorder", "live", hex[0]);
    json_decref(tu_instance_create(srv, racers[0], "recorder:live", NULL, "sim", "[\"BTC-USDT\"]"));
    json_decref(tu_instance_create(srv, racers[1], "recorder:live", NULL, "sim", "[\"ETH-USDT\"]"));
    for (int r = 0; r < RACERS; r++)
        tu_instance_start(srv, racers[r]);
    struct delivered_ctx d = {srv, {50, 50}};
    assert_true(tu_ops_wait_until(delivered_at_least, &d, TU_WAIT_S));

    /* flip the alias back and forth, each move refreshing in the same
     * request, while the trades flow */
    const int flips = 12;
    for (int i = 1; i <= flips; i++) {
        const char *target = hex[i % 2];
        char *body = tu_path("{\"hash\": \"sha256:%s\", \"refresh\": true}", target);
        struct tu_response res;
        tu_send(srv, &res, "PUT", "/strategies/modules/recorder/tags/live", body);
        free(body);
        tu_assert_status(&res, 200);
        for (int r = 0; r < RACERS; r++)
            expect(res.json, racers[r], "recorder:live", "refreshed", target, hex[(i + 1) % 2]);
        tu_response_free(&res);
        /* a few trades on each VM */
        for (int r = 0; r < RACERS; r++)
            d.min[r] = delivered_of(srv, racers[r]) + 5;
        assert_true(tu_ops_wait_until(delivered_at_least, &d, TU_WAIT_S));
    }
    for (int r = 0; r < RACERS; r++)
        tu_instance_stop(srv, racers[r]);
    for (int r = 0; r < RACERS; r++)
        check_history(srv, racers[r], flips);

    char *m = tu_ops_metrics(srv);
    assert_true(tu_ops_metric(m, "stratd_instance_stops_total", "reason", "refreshed", NULL) ==
                RACERS * flips);
    free(m);
    tu_server_stop(srv);
}

/* One request of the race, sent from a thread of its own. */
struct racer {
    const char *method;
    char url[256];
    char *body;
    pthread_barrier_t *go;
    long status;
    char answer[512];
};

static void *racer_main(void *arg)
{
    struct racer *r = arg;
    struct tu_request_options o = {.body = r->body, .body_len = r->body ? strlen(r->body) : 0};
    pthread_barrier_wait(r->go);
    struct tu_response res;
    r->status = tu_http_try(&res, r->method, r->url, &o) == 0 ? res.status : -1;
    if (r->status > 0) {
        snprintf(r->answer, sizeof r->answer, "%.500s", res.body ? res.body : "");
        tu_response_free(&res);
    }
    return NULL;
}

/* A tag move that refreshes, and a delete of the revision it moves to, sent
 * at once: the outcome must be one the two would have in some order (the
 * move and its refresh, then a 409 for the delete; or the delete, then a
 * 404 for the move), never the tag deleted between the move and its
 * refresh, which retired every instance that follows the tag. */
static void test_tag_move_with_refresh_races_a_delete(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char hex[65];
    char *first = tu_module_source("d", "u0", NULL);
    tu_upload_expect(srv, first, NULL, 201, hex);
    free(first);
    put_tag(srv, "d", "prod", hex);
    const char *ids[] = {"d-1", "d-2", "d-3"};
    for (size_t i = 0; i < 3; i++) {
        create(srv, ids[i], "d:prod");
        tu_instance_start(srv, ids[i]);
    }
    for (int round = 1; round <= 40; round++) {
        char tag[16], handler[48];
        snprintf(tag, sizeof tag, "u%d", round);
        snprintf(handler, sizeof handler, "onTicker() { return %d; },", round);
        char *src = tu_module_source("d", tag, handler);
        tu_upload_expect(srv, src, NULL, 201, hex);
        free(src);
        pthread_barrier_t go;
        pthread_barrier_init(&go, NULL, 2);
        struct racer move = {.method = "PUT", .go = &go}, del = {.method = "DELETE", .go = &go};
        snprintf(move.url, sizeof move.url, "%s/strategies/modules/d/tags/prod", srv->base_url);
        move.body = tu_path("{\"hash\": \"sha256:%s\", \"refresh\": true}", hex);
        snprintf(del.url, sizeof del.url, "%s/strategies/modules/d@sha256:%s", srv->base_url, hex);
        pthread_t t[2];
        pthread_create(&t[0], NULL, racer_main, &move);
        pthread_create(&t[1], NULL, racer_main, &del);
        pthread_join(t[0], NULL);
        pthread_join(t[1], NULL);
        pthread_barrier_destroy(&go);
        free(move.body);
        bool moved_first = move.status == 200 && del.status == 409;
        bool deleted_first = del.status == 204 && move.status == 404;
        if (!moved_first && !deleted_first)
            fail_msg("round %d: PUT %ld %s, DELETE %ld %s", round, move.status, move.answer,
                     del.status, del.answer);
        if (strstr(move.answer, "retired"))
            fail_msg("round %d: the move retired instances: %s", round, move.answer);
        for (size_t i = 0; i < 3; i++) {
            json_t *snap = tu_instance_get(srv, ids[i]);
            if (!json_is_true(json_object_get(snap, "running")))
                fail_msg("round %d: %s stopped (%s)", round, ids[i], tu_jstr(snap, "stopReason"));
            json_decref(snap);
        }
    }
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_reason_code, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_target_forms, tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_while_a_running_revision_file_is_away,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_to_a_revision_that_does_not_start,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_does_not_count_a_stop_that_did_not_happen,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_moves_a_fleet_durably, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_tag_move_with_refresh_races_a_delete, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_races_with_events, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
