/*
 * Tags over HTTP: PUT /strategies/modules/{name}/tags/{tag} moves a tag,
 * DELETE removes one under the guards (the last tag on a revision needs
 * allowOrphan, `latest` never goes), every move and delete is in the audit
 * log, and PUT /strategies/modules/{selector} adds a revision that takes
 * over the selector's tags.
 */
#include "testutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZEROS64 "0000000000000000000000000000000000000000000000000000000000000000"

static char *spell(const char *hex)
{
    return tu_path("sha256:%s", hex);
}

/* The target of name:tag in registry.json on disk (NULL: no such tag),
 * checking the whole file's soundness on the way. Caller frees. */
static char *disk_tag(const struct tu_server *srv, const char *name, const char *tag)
{
    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    const char *v = json_string_value(
        json_object_get(json_object_get(json_object_get(reg, name), "tags"), tag));
    char *out = v ? strdup(v) : NULL;
    json_decref(reg);
    return out;
}

static void expect_disk_tag(const struct tu_server *srv, const char *name, const char *tag,
                            const char *spelled)
{
    char *v = disk_tag(srv, name, tag);
    if (spelled && (!v || strcmp(v, spelled) != 0))
        fail_msg("registry.json: %s:%s is %s, expected %s", name, tag, v ? v : "(absent)", spelled);
    if (!spelled && v)
        fail_msg("registry.json: %s:%s is %s, expected no such tag", name, tag, v);
    free(v);
}

static bool disk_has_hash(const struct tu_server *srv, const char *name, const char *spelled)
{
    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    bool has = json_object_get(json_object_get(json_object_get(reg, name), "hashes"), spelled);
    json_decref(reg);
    return has;
}

static void expect_selected(struct tu_server *srv, const char *selector, const char *spelled)
{
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/%s", selector);
    if (strcmp(tu_jstr(m, "selectedRevisionHash"), spelled) != 0)
        fail_msg("%s selects %s, expected %s", selector, tu_jstr(m, "selectedRevisionHash"),
                 spelled);
    json_decref(m);
}

static void put_tag(struct tu_server *srv, struct tu_response *res, const char *name,
                    const char *tag, const char *body)
{
    char *path = tu_path("/strategies/modules/%s/tags/%s", name, tag);
    struct tu_request_options o = {.body = body, .body_len = body ? strlen(body) : 0};
    tu_request(srv, res, "PUT", path, &o);
    free(path);
}

static json_t *put_tag_ok(struct tu_server *srv, const char *name, const char *tag,
                          const char *hash_text)
{
    char *body = tu_path("{\"hash\": \"%s\"}", hash_text);
    struct tu_response res;
    put_tag(srv, &res, name, tag, body);
    if (res.status != 200)
        fail_msg("PUT tag %s:%s -> %s: expected 200, got %ld: %s", name, tag, hash_text, res.status,
                 res.body);
    json_t *out = json_incref(res.json);
    assert_non_null(out);
    tu_response_free(&res);
    free(body);
    return out;
}

/* The revision entry of a listing, by spelled hash. */
static const json_t *listed_revision(const json_t *module, const char *spelled)
{
    size_t i;
    const json_t *rev;
    json_array_foreach(json_object_get(module, "revisions"), i, rev)
    {
        const char *h = json_string_value(json_object_get(rev, "hash"));
        if (h && strcmp(h, spelled) == 0)
            return rev;
    }
    char *dump = json_dumps(module, JSON_COMPACT);
    fail_msg("revision %s is not listed: %s", spelled, dump);
    return NULL;
}

/* ------------------------------------------------------------ tag PUT */

static void test_tag_put_moves_and_reports(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions t;
    tu_three_revisions_upload(srv, "trend", &t);

    json_t *r = put_tag_ok(srv, "trend", "prod", t.spelled[1]);
    assert_true(json_is_string(json_object_get(r, "status")));
    assert_string_equal(tu_jstr(r, "strategy"), "trend");
    assert_string_equal(tu_jstr(r, "tag"), "prod");
    assert_string_equal(tu_jstr(r, "hash"), t.spelled[1]);
    assert_true(json_is_false(json_object_get(r, "refresh")));
    json_t *prev = json_object_get(r, "previousHash");
    if (prev && !json_is_null(prev))
        fail_msg("a new tag reports previousHash %s", json_string_value(prev));
    json_decref(r);
    expect_disk_tag(srv, "trend", "prod", t.spelled[1]);
    expect_selected(srv, "trend:prod", t.spelled[1]);

    /* bare hex works as well as sha256:<hex> */
    r = put_tag_ok(srv, "trend", "prod", t.hex[2]);
    assert_string_equal(tu_jstr(r, "hash"), t.spelled[2]);
    assert_string_equal(tu_jstr(r, "previousHash"), t.spelled[1]);
    assert_string_equal(tu_jstr(r, "strategy"), "trend");
    assert_string_equal(tu_jstr(r, "tag"), "prod");
    json_decref(r);
    expect_disk_tag(srv, "trend", "prod", t.spelled[2]);
    expect_selected(srv, "trend:prod", t.spelled[2]);

    /* latest can be moved, and the strategy's metadata follows it */
    r = put_tag_ok(srv, "trend", "latest", t.spelled[2]);
    assert_string_equal(tu_jstr(r, "previousHash"), t.spelled[0]);
    json_decref(r);
    expect_disk_tag(srv, "trend", "latest", t.spelled[2]);
    expect_selected(srv, "trend", t.spelled[2]);

    /* refresh is echoed */
    char *body = tu_path("{\"hash\": \"%s\", \"refresh\": true}", t.spelled[0]);
    struct tu_response res;
    put_tag(srv, &res, "trend", "prod", body);
    tu_assert_status(&res, 200);
    assert_true(json_is_true(json_object_get(res.json, "refresh")));
    assert_string_equal(tu_jstr(res.json, "hash"), t.spelled[0]);
    assert_string_equal(tu_jstr(res.json, "previousHash"), t.spelled[2]);
    tu_response_free(&res);
    free(body);
    expect_disk_tag(srv, "trend", "prod", t.spelled[0]);

    /* versions tags did not move */
    expect_disk_tag(srv, "trend", "v1", t.spelled[0]);
    expect_disk_tag(srv, "trend", "v2", t.spelled[1]);
    expect_disk_tag(srv, "trend", "v3", t.spelled[2]);
    tu_three_revisions_free(&t);
    tu_server_stop(srv);
}

static void test_tag_put_errors_change_nothing(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions t;
    tu_three_revisions_upload(srv, "trend", &t);
    char *side = tu_module_source("side", "v1", NULL);
    char hs[65];
    tu_upload_expect(srv, side, NULL, 201, hs);

    char *good = tu_path("{\"hash\": \"%s\"}", t.spelled[1]);
    char *foreign = tu_path("{\"hash\": \"sha256:%s\"}", hs);
    char *refesh = tu_path("{\"hash\": \"%s\", \"refesh\": true}", t.spelled[1]);
    struct {
        const char *name, *tag, *body;
        long status;
    } cases[] = {
        {"trend", "prod", "{\"hash\": \"sha256:" ZEROS64 "\"}", 404},
        {"trend", "prod", foreign, 404}, /* a revision of another strategy */
        {"ghost", "prod", good, 404},
        {"trend", "prod", "{\"hash\": \"not-a-hash\"}", 400},
        {"trend", "prod", "{\"hash\": \"sha256:xyz\"}", 400},
        {"trend", "prod", "{\"hash\": 12}", 400},
        {"trend", "prod", "{\"hash\": null}", 400},
        {"trend", "prod", "{}", 400},
        {"trend", "prod", "{\"hash\": \"x\",}", 400},
        {"trend", "prod", "[]", 400},
        {"trend", "prod", "not json", 400},
        {"trend", "prod", NULL, 400},
        {"trend", "prod", "{\"hash\": \"sha256:0123\", \"refresh\": \"yes\"}", 400},
        {"trend", "prod", refesh, 400}, /* misspelled: refused, not a move without refresh */
        {"trend", "bad%20tag", good, 400},
        {"trend", "..", good, 400},
        {"trend", "%2E%2E", good, 400},
        {"trend", "a%2Fb", good, 400},
        {"trend", "-x", good, 400},
        {"Trend", "prod", good, 400},
        {"tr%2Fend", "prod", good, 400},
    };
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tu_response res;
        put_tag(srv, &res, cases[i].name, cases[i].tag, cases[i].body);
        if (res.status != cases[i].status)
            fail_msg("PUT /strategies/modules/%s/tags/%s with %s: expected %ld, got %ld: %s",
                     cases[i].name, cases[i].tag, cases[i].body ? cases[i].body : "no body",
                     cases[i].status, res.status, res.body);
        tu_assert_error(&res, cases[i].status);
        tu_response_free(&res);
    }
    tu_catalog_expect_same(srv, &before, "refused tag moves");
    tu_catalog_state_free(&before);
    free(good);
    free(foreign);
    free(refesh);
    free(side);
    tu_three_revisions_free(&t);
    tu_server_stop(srv);
}

/* --------------------------------------------------------- tag DELETE */

static void delete_tag(struct tu_server *srv, struct tu_response *res, const char *name,
                       const char *tag, const char *query)
{
    char *path = tu_path("/strategies/modules/%s/tags/%s%s", name, tag, query ? query : "");
    tu_request(srv, res, "DELETE", path, NULL);
    free(path);
}

static void test_tag_delete_guards(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions t;
    tu_three_revisions_upload(srv, "trend", &t);

    struct {
        const char *name, *tag, *query;
        long status;
    } refused[] = {
        {"trend", "v2", NULL, 409},                 /* the last tag on b */
        {"trend", "v2", "?allowOrphan=false", 409}, /* said explicitly */
        {"trend", "latest", NULL, 409},             /* never */
        {"trend", "latest", "?allowOrphan=true", 409},
        {"trend", "nosuch", NULL, 404},
        {"trend", "nosuch", "?allowOrphan=true", 404},
        {"ghost", "v1", NULL, 404},
        {"trend", "bad%20tag", NULL, 400},
        {"trend", "..", NULL, 400},
        {"trend", "v2", "?allowOrphan=maybe", 400},
    };
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        struct tu_response res;
        delete_tag(srv, &res, refused[i].name, refused[i].tag, refused[i].query);
        if (res.status != refused[i].status)
            fail_msg("DELETE tag %s:%s%s: expected %ld, got %ld: %s", refused[i].name,
                     refused[i].tag, refused[i].query ? refused[i].query : "", refused[i].status,
                     res.status, res.body);
        tu_assert_error(&res, refused[i].status);
        tu_response_free(&res);
    }
    tu_catalog_expect_same(srv, &before, "refused tag deletes");
    tu_catalog_state_free(&before);

    /* Orphaning b on purpose: the revision stays, retired, reachable by hash. */
    struct tu_response res;
    delete_tag(srv, &res, "trend", "v2", "?allowOrphan=true");
    tu_assert_status(&res, 200);
    assert_true(json_is_string(json_object_get(res.json, "status")));
    assert_string_equal(tu_jstr(res.json, "strategy"), "trend");
    assert_string_equal(tu_jstr(res.json, "tag"), "v2");
    tu_response_free(&res);
    expect_disk_tag(srv, "trend", "v2", NULL);
    assert_true(disk_has_hash(srv, "trend", t.spelled[1]));
    char *file = tu_path("%s/trend/%s/trend.js", srv->strategies_dir, t.hex[1]);
    char *bytes = tu_read_file(file, NULL);
    assert_non_null(bytes);
    free(bytes);
    free(file);
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/trend");
    const json_t *rev = listed_revision(m, t.spelled[1]);
    assert_true(json_is_true(json_object_get(rev, "retired")));
    assert_true(json_is_false(json_object_get(rev, "invalid")));
    assert_true(json_is_false(json_object_get(listed_revision(m, t.spelled[2]), "retired")));
    json_decref(m);
    char *by_hash = tu_path("trend@%s", t.hex[1]);
    expect_selected(srv, by_hash, t.spelled[1]);
    free(by_hash);
    tu_get(srv, &res, "/strategies/modules/trend:v2");
    tu_assert_error(&res, 404);
    tu_response_free(&res);

    /* A tag that is not the last one on its revision goes without asking. */
    json_decref(put_tag_ok(srv, "trend", "extra", t.spelled[2]));
    delete_tag(srv, &res, "trend", "v3", NULL);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    expect_disk_tag(srv, "trend", "v3", NULL);
    expect_disk_tag(srv, "trend", "extra", t.spelled[2]);
    delete_tag(srv, &res, "trend", "v1", NULL); /* a keeps latest */
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    expect_disk_tag(srv, "trend", "v1", NULL);
    expect_disk_tag(srv, "trend", "latest", t.spelled[0]);

    /* latest, now alone on a, still cannot go. */
    tu_catalog_capture(srv, &before);
    delete_tag(srv, &res, "trend", "latest", "?allowOrphan=true");
    tu_assert_error(&res, 409);
    tu_response_free(&res);
    tu_catalog_expect_same(srv, &before, "deleting latest");
    tu_catalog_state_free(&before);
    tu_three_revisions_free(&t);
    tu_server_stop(srv);
}

/* ---------------------------------------------------------------- audit */

#define NOT_FOUND ((size_t)-1)

/* The index of the first audit entry at or after `from` recording a change
 * of name:tag from `old` (NULL: none) to `new` (NULL: deleted), with ts,
 * actor and action; NOT_FOUND if there is none. */
static size_t find_audit(const json_t *entries, size_t from, const char *name, const char *tag,
                         const char *old, const char *new)
{
    for (size_t i = from; i < json_array_size(entries); i++) {
        const json_t *e = json_array_get(entries, i);
        const char *s = json_string_value(json_object_get(e, "strategy"));
        const char *tg = json_string_value(json_object_get(e, "tag"));
        if (!s || !tg || strcmp(s, name) != 0 || strcmp(tg, tag) != 0)
            continue;
        const json_t *f = json_object_get(e, "from"), *t = json_object_get(e, "to");
        bool from_ok =
            old ? json_is_string(f) && strcmp(json_string_value(f), old) == 0 : json_is_null(f);
        bool to_ok =
            new ? json_is_string(t) && strcmp(json_string_value(t), new) == 0 : json_is_null(t);
        if (!from_ok || !to_ok)
            continue;
        const char *keys[] = {"ts", "actor", "action"};
        for (int k = 0; k < 3; k++) {
            const json_t *v = json_object_get(e, keys[k]);
            if (!json_is_string(v) || json_string_length(v) == 0) {
                char *dump = json_dumps(e, JSON_COMPACT);
                fail_msg("audit entry has no non-empty '%s': %s", keys[k], dump);
            }
        }
        return i;
    }
    return NOT_FOUND;
}

/* The entries naming a tag, one per line (malloc'ed). */
static char *entries_about(const json_t *entries, const char *tag)
{
    char *about = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&about, &n);
    for (size_t i = 0; i < json_array_size(entries); i++) {
        const json_t *e = json_array_get(entries, i);
        const char *tg = json_string_value(json_object_get(e, "tag"));
        if (!tg || strcmp(tg, tag) != 0)
            continue;
        char *dump = json_dumps(e, JSON_COMPACT);
        fprintf(mem, " [%zu] %.400s\n", i, dump);
        free(dump);
    }
    fclose(mem);
    return about;
}

/* Like find_audit, but fails listing the entries about the tag. */
static size_t expect_audit(const json_t *entries, size_t from, const char *name, const char *tag,
                           const char *old, const char *new)
{
    size_t at = find_audit(entries, from, name, tag, old, new);
    if (at == NOT_FOUND)
        fail_msg("audit.log: no entry {strategy %s, tag %s, from %s, to %s} (\"to\" present) from "
                 "entry %zu on; entries naming the tag:\n%s",
                 name, tag, old ? old : "null", new ? new : "null", from,
                 entries_about(entries, tag));
    return at;
}

static void test_tag_moves_and_deletes_are_audited(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions t;
    tu_three_revisions_upload(srv, "trend", &t);

    json_decref(put_tag_ok(srv, "trend", "prod", t.spelled[1]));
    json_decref(put_tag_ok(srv, "trend", "prod", t.spelled[2]));
    json_decref(put_tag_ok(srv, "trend", "latest", t.spelled[1]));
    struct tu_response res;
    delete_tag(srv, &res, "trend", "v3", "?allowOrphan=true"); /* prod is on c too */
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    delete_tag(srv, &res, "trend", "prod", "?allowOrphan=true");
    tu_assert_status(&res, 200);
    tu_response_free(&res);

    json_t *entries = tu_audit_entries(srv);
    size_t at = expect_audit(entries, 0, "trend", "prod", NULL, t.spelled[1]);
    at = expect_audit(entries, at + 1, "trend", "prod", t.spelled[1], t.spelled[2]);
    at = expect_audit(entries, at + 1, "trend", "latest", t.spelled[0], t.spelled[1]);
    at = expect_audit(entries, at + 1, "trend", "v3", t.spelled[2], NULL);
    expect_audit(entries, at + 1, "trend", "prod", t.spelled[2], NULL);
    json_decref(entries);
    tu_three_revisions_free(&t);
    tu_server_stop(srv);
}

/* Tags also move and go through uploads (aliases, reassignTags), module
 * PUTs and revision deletes; each of those changes is audited too. All the
 * missing entries are reported together. */
static void test_implicit_tag_changes_are_audited(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a = tu_module_source("trend", "v1", NULL);
    char *b = tu_module_source("trend", "v2", "onTrade() {},");
    char *c = tu_module_source("trend", NULL, "onTicker() {},");
    char *d = tu_module_source("trend", NULL, "onBalanceUpdate() {},");
    char ha[65], hb[65], hc[65], hd[65];
    tu_upload_expect(srv, a, NULL, 201, ha);
    char *sa = spell(ha);
    json_decref(put_tag_ok(srv, "trend", "prod", sa));

    /* aliases move prod from a to b */
    tu_upload_expect(srv, b, "{\"aliases\": [\"prod\"]}", 201, hb);
    char *sb = spell(hb);
    expect_disk_tag(srv, "trend", "prod", sb);
    /* reassignTags moves v1 from a to c */
    tu_upload_expect(srv, c, "{\"tag\": \"v1\", \"reassignTags\": [\"v1\"]}", 201, hc);
    char *sc = spell(hc);
    expect_disk_tag(srv, "trend", "v1", sc);
    /* PUT by name moves latest from a to d */
    json_t *body = json_pack("{s:s}", "source", d);
    struct tu_response res;
    tu_send_json(srv, &res, "PUT", "/strategies/modules/trend", body);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    tu_sha256_hex(d, strlen(d), hd);
    char *sd = spell(hd);
    expect_disk_tag(srv, "trend", "latest", sd);
    /* deleting d moves latest to the newest remaining revision, c */
    char *path = tu_path("/strategies/modules/trend@%s", hd);
    tu_request(srv, &res, "DELETE", path, NULL);
    tu_assert_status(&res, 204);
    tu_response_free(&res);
    free(path);
    expect_disk_tag(srv, "trend", "latest", sc);
    /* deleting b takes v2 and prod with it */
    path = tu_path("/strategies/modules/trend@%s", hb);
    tu_request(srv, &res, "DELETE", path, NULL);
    tu_assert_status(&res, 204);
    tu_response_free(&res);
    free(path);
    expect_disk_tag(srv, "trend", "prod", NULL);

    struct {
        const char *what, *tag, *from, *to;
    } changes[] = {
        {"upload with aliases", "prod", sa, sb},
        {"upload with reassignTags", "v1", sa, sc},
        {"PUT /strategies/modules/trend", "latest", sa, sd},
        {"DELETE of the revision latest was on", "latest", sd, sc},
        {"DELETE of a revision (its tag v2)", "v2", sb, NULL},
        {"DELETE of a revision (its tag prod)", "prod", sb, NULL},
    };
    json_t *entries = tu_audit_entries(srv);
    char *report = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&report, &n);
    int missing = 0;
    for (size_t i = 0; i < sizeof changes / sizeof changes[0]; i++) {
        if (find_audit(entries, 0, "trend", changes[i].tag, changes[i].from, changes[i].to) !=
            NOT_FOUND)
            continue;
        missing++;
        fprintf(mem, "  %s: {tag %s, from %.19s..., to %.19s%s}\n", changes[i].what, changes[i].tag,
                changes[i].from, changes[i].to ? changes[i].to : "null",
                changes[i].to ? "..." : "");
    }
    fclose(mem);
    if (missing)
        fail_msg("%d of %zu tag changes have no audit entry with from/to:\n%s", missing,
                 sizeof changes / sizeof changes[0], report);
    free(report);
    json_decref(entries);
    free(sa);
    free(sb);
    free(sc);
    free(sd);
    free(a);
    free(b);
    free(c);
    free(d);
    tu_server_stop(srv);
}

/* ------------------------------------------------------- module PUT */

static void put_module(struct tu_server *srv, struct tu_response *res, const char *selector,
                       const char *source)
{
    json_t *body = json_pack("{s:s}", "source", source);
    char *path = tu_path("/strategies/modules/%s", selector);
    tu_send_json(srv, res, "PUT", path, body);
    free(path);
}

static void put_module_ok(struct tu_server *srv, const char *selector, const char *source,
                          char hex[65])
{
    struct tu_response res;
    put_module(srv, &res, selector, source);
    if (res.status != 200)
        fail_msg("PUT /strategies/modules/%s: expected 200, got %ld: %s", selector, res.status,
                 res.body);
    tu_sha256_hex(source, strlen(source), hex);
    char *spelled = spell(hex);
    assert_string_equal(tu_jstr(res.json, "module.hash"), spelled);
    assert_string_equal(tu_jstr(res.json, "module.name"), "trend");
    assert_true(json_is_string(json_object_get(res.json, "status")));
    assert_true(json_is_string(json_object_get(res.json, "strategyDirectory")));
    free(spelled);
    tu_response_free(&res);
}

/* "trend" with s1 (tag v1, latest); returns the spelled hash of s1. */
static char *put_fixture(struct tu_server *srv, char *src[4], char hex[4][65])
{
    src[0] = tu_module_source("trend", NULL, NULL);
    src[1] = tu_module_source("trend", NULL, "onTrade() {},");
    src[2] = tu_module_source("trend", NULL, "onTicker() {},");
    src[3] = tu_module_source("trend", NULL, "onBalanceUpdate() {},");
    for (int i = 0; i < 4; i++)
        tu_sha256_hex(src[i], strlen(src[i]), hex[i]);
    tu_upload_expect(srv, src[0], "{\"tag\": \"v1\"}", 201, NULL);
    return spell(hex[0]);
}

static void put_fixture_free(char *src[4])
{
    for (int i = 0; i < 4; i++)
        free(src[i]);
}

static void expect_retired(struct tu_server *srv, const char *spelled, bool retired)
{
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/trend");
    const json_t *rev = listed_revision(m, spelled);
    if (json_is_true(json_object_get(rev, "retired")) != retired)
        fail_msg("revision %s: retired should be %s", spelled, retired ? "true" : "false");
    json_decref(m);
}

static void test_module_put_by_name_moves_latest(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *src[4], hex[4][65], got[65];
    char *sp1 = put_fixture(srv, src, hex);

    put_module_ok(srv, "trend", src[1], got);
    char *sp2 = spell(hex[1]);
    expect_disk_tag(srv, "trend", "latest", sp2);
    expect_disk_tag(srv, "trend", "v1", sp1);
    assert_true(disk_has_hash(srv, "trend", sp1));
    expect_selected(srv, "trend", sp2);
    expect_selected(srv, "trend:v1", sp1);
    expect_retired(srv, sp1, false);

    /* The same bytes again: 200, same hash. */
    put_module_ok(srv, "trend", src[1], got);
    assert_string_equal(got, hex[1]);
    free(sp1);
    free(sp2);
    put_fixture_free(src);
    tu_server_stop(srv);
}

static void test_module_put_by_tag_moves_that_tag(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *src[4], hex[4][65], got[65];
    char *sp1 = put_fixture(srv, src, hex);

    put_module_ok(srv, "trend:v1", src[2], got);
    char *sp3 = spell(hex[2]);
    expect_disk_tag(srv, "trend", "v1", sp3);
    expect_disk_tag(srv, "trend", "latest", sp1);
    assert_true(disk_has_hash(srv, "trend", sp1));
    expect_selected(srv, "trend:v1", sp3);
    free(sp1);
    free(sp3);
    put_fixture_free(src);
    tu_server_stop(srv);
}

static void test_module_put_by_hash_moves_every_tag_on_it(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *src[4], hex[4][65], got[65];
    char *sp1 = put_fixture(srv, src, hex);
    /* s2 takes latest by upload; s1 keeps v1 and gets prod */
    tu_upload_expect(srv, src[1], "{\"promoteLatest\": true}", 201, NULL);
    char *sp2 = spell(hex[1]);
    json_decref(put_tag_ok(srv, "trend", "prod", sp1));

    char *sel = tu_path("trend@%s", hex[0]);
    put_module_ok(srv, sel, src[3], got);
    free(sel);
    char *sp4 = spell(hex[3]);
    expect_disk_tag(srv, "trend", "v1", sp4);
    expect_disk_tag(srv, "trend", "prod", sp4);
    expect_disk_tag(srv, "trend", "latest", sp2);
    assert_true(disk_has_hash(srv, "trend", sp1));
    expect_retired(srv, sp1, true);
    expect_selected(srv, "trend:prod", sp4);
    free(sp1);
    free(sp2);
    free(sp4);
    put_fixture_free(src);
    tu_server_stop(srv);
}

static void test_refused_module_puts_change_nothing(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *src[4], hex[4][65];
    char *sp1 = put_fixture(srv, src, hex);

    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    char *other = tu_module_source("other", NULL, NULL);
    struct tu_response res;
    put_module(srv, &res, "trend", other);
    tu_assert_error(&res, 400);
    tu_response_free(&res);
    put_module(srv, &res, "trend:v1", other);
    tu_assert_error(&res, 400);
    tu_response_free(&res);
    char *sel = tu_path("trend@%s", hex[0]);
    put_module(srv, &res, sel, other);
    tu_assert_error(&res, 400);
    tu_response_free(&res);
    free(sel);
    /* an unknown revision of the strategy, and a tag it does not have (a
     * misspelt "v1" would otherwise be created while v1 stays) */
    char *trend = tu_module_source("trend", NULL, "onOrderFilled() {},");
    put_module(srv, &res, "trend@" ZEROS64, trend);
    tu_assert_error(&res, 404);
    tu_response_free(&res);
    put_module(srv, &res, "trend:vl", trend);
    tu_assert_error(&res, 404);
    assert_non_null(strstr(tu_jstr(res.json, "error"), "has no tag 'vl'"));
    tu_response_free(&res);
    free(trend);
    /* PUT updates an existing module: a strategy that does not exist is
     * unknown whatever the selector's form, and is not created */
    char *gamma = tu_module_source("gamma", NULL, NULL);
    const char *unknown[] = {"gamma", "gamma:prod", "gamma:latest", "gamma@" ZEROS64};
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        put_module(srv, &res, unknown[i], gamma);
        if (res.status != 404)
            fail_msg("PUT /strategies/modules/%s (no strategy gamma): expected 404, got %ld: %s",
                     unknown[i], res.status, res.body);
        tu_assert_error(&res, 404);
        tu_response_free(&res);
    }
    json_decref(tu_get_json(srv, 404, "/strategies/gamma"));
    free(gamma);
    tu_send(srv, &res, "PUT", "/strategies/modules/trend", "{}");
    tu_assert_error(&res, 400);
    tu_response_free(&res);
    tu_send(srv, &res, "PUT", "/strategies/modules/trend", "{\"source\": 5}");
    tu_assert_error(&res, 400);
    tu_response_free(&res);
    put_module(srv, &res, "trend", "module.exports = {\n  metadata: {\n    name: 'trend',,\n");
    tu_assert_error(&res, 422);
    tu_response_free(&res);
    tu_catalog_expect_same(srv, &before, "refused module PUTs");
    tu_catalog_state_free(&before);
    free(other);
    free(sp1);
    put_fixture_free(src);
    tu_server_stop(srv);
}

/* The strings of a JSON array, comma-separated (malloc'ed). */
static char *joined(const json_t *list)
{
    char *out = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&out, &n);
    for (size_t i = 0; i < json_array_size(list); i++) {
        const char *v = json_string_value(json_array_get(list, i));
        fprintf(mem, "%s%s", i ? "," : "", v ? v : "(not a string)");
    }
    fclose(mem);
    return out;
}

/* An upload's answer lists latest among the tags it moved when it moved
 * it: on the strategy's first upload and with promoteLatest, not when latest
 * stays or already named the bytes. */
static void test_upload_answer_lists_a_latest_move(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    static const struct {
        const char *tag, *fields;
        long status;
        const char *aliases;
    } steps[] = {
        {"v1", "{}", 201, "latest"},
        {"v2", "{}", 201, ""},
        {"v3", "{\"promoteLatest\": true, \"aliases\": [\"prod\"]}", 201, "prod,latest"},
        {"v3", "{\"promoteLatest\": true}", 200, ""},
    };
    for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
        char *src = tu_module_source("fresh", steps[i].tag, "onTrade() {},");
        struct tu_response res;
        tu_upload(srv, &res, src, steps[i].fields);
        tu_assert_status(&res, steps[i].status);
        char *got = joined(tu_jget(res.json, "module.aliases"));
        if (strcmp(got, steps[i].aliases) != 0)
            fail_msg("upload %zu (%s %s): module.aliases [%s], expected [%s]", i, steps[i].tag,
                     steps[i].fields, got, steps[i].aliases);
        free(got);
        tu_response_free(&res);
        free(src);
    }
    tu_server_stop(srv);
}

/* A PUT's body `aliases` move to its revision as an upload's do, listed
 * once with the selector's own tags, in the answer too. */
static void test_module_put_applies_aliases(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *src[4], hex[4][65];
    char *sp1 = put_fixture(srv, src, hex);
    json_decref(put_tag_ok(srv, "trend", "prod", sp1));

    json_t *body = json_pack("{s:s, s:[sss]}", "source", src[1], "aliases", "prod", "v1", "canary");
    struct tu_response res;
    tu_send_json(srv, &res, "PUT", "/strategies/modules/trend:v1", body);
    tu_assert_status(&res, 200);
    char *sp2 = spell(hex[1]);
    assert_string_equal(tu_jstr(res.json, "module.hash"), sp2);
    char *aliases = joined(tu_jget(res.json, "module.aliases"));
    if (strcmp(aliases, "v1,prod,canary") != 0)
        fail_msg("PUT trend:v1 with aliases [prod, v1, canary] answers module.aliases [%s], "
                 "expected [v1,prod,canary]",
                 aliases);
    free(aliases);
    tu_response_free(&res);
    expect_disk_tag(srv, "trend", "v1", sp2);
    expect_disk_tag(srv, "trend", "prod", sp2);
    expect_disk_tag(srv, "trend", "canary", sp2);
    expect_disk_tag(srv, "trend", "latest", sp1);
    expect_selected(srv, "trend:prod", sp2);
    json_t *entries = tu_audit_entries(srv);
    expect_audit(entries, 0, "trend", "prod", sp1, sp2);
    expect_audit(entries, 0, "trend", "canary", NULL, sp2);
    json_decref(entries);

    /* The selector's tags count within the bound of one list: 64 aliases
     * and the selector's tag are one too many, and change nothing. */
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    json_t *many = json_array();
    for (int i = 0; i < 64; i++) {
        char tag[16];
        snprintf(tag, sizeof tag, "a%d", i);
        json_array_append_new(many, json_string(tag));
    }
    tu_send_json(srv, &res, "PUT", "/strategies/modules/trend:v1",
                 json_pack("{s:s, s:o}", "source", src[2], "aliases", many));
    tu_assert_error(&res, 400);
    assert_string_equal(tu_jstr(res.json, "details.field"), "aliases");
    tu_response_free(&res);
    tu_catalog_expect_same(srv, &before, "a PUT with too many aliases");
    tu_catalog_state_free(&before);
    free(sp1);
    free(sp2);
    put_fixture_free(src);
    tu_server_stop(srv);
}

/* ------------------------------------------------ concurrent uploads */

#define RACE_WRITERS 8
#define RACE_ROUNDS 2
#define RACE_UPLOADS (RACE_WRITERS * RACE_ROUNDS)

/* One client thread with a token of its own, so that each audit entry
 * names the request that made it. */
struct race_writer {
    const char *base_url;
    int index;
    char name[16];
    char secret[48];
    char hex[RACE_ROUNDS][65];
    long status[RACE_ROUNDS];
    char error[256];
};

static void race_upload(struct race_writer *w, int round)
{
    char handler[64];
    snprintf(handler, sizeof handler, "onTicker() { return %d; },", w->index * RACE_ROUNDS + round);
    char *src = tu_module_source("race", NULL, handler);
    tu_sha256_hex(src, strlen(src), w->hex[round]);
    json_t *body =
        json_pack("{s:s, s:b, s:[s]}", "source", src, "promoteLatest", 1, "aliases", "prod");
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    char url[128], auth[96];
    snprintf(url, sizeof url, "%s/strategies/modules", w->base_url);
    snprintf(auth, sizeof auth, "Authorization: Bearer %s", w->secret);
    const char *headers[] = {auth, NULL};
    struct tu_request_options o = {
        .body = text, .body_len = text ? strlen(text) : 0, .headers = headers};
    struct tu_response res;
    w->status[round] = text && tu_http_try(&res, "POST", url, &o) == 0 ? res.status : -1;
    if (w->status[round] > 0) {
        snprintf(w->error, sizeof w->error, "%.200s", res.body ? res.body : "");
        tu_response_free(&res);
    }
    free(text);
    json_decref(body);
    free(src);
}

static void *race_writer_main(void *arg)
{
    struct race_writer *w = arg;
    for (int r = 0; r < RACE_ROUNDS; r++)
        race_upload(w, r);
    return NULL;
}

/* The writer (by token name) of the upload whose revision is hex. */
static const char *race_owner(const struct race_writer *w, const char *spelled)
{
    for (int i = 0; i < RACE_WRITERS; i++) {
        for (int r = 0; r < RACE_ROUNDS; r++) {
            if (strcmp(spelled + strlen("sha256:"), w[i].hex[r]) == 0)
                return w[i].name;
        }
    }
    return NULL;
}

/* The tag.move entries of race:<tag> must be the moves the uploads made,
 * one each, under the actor that made it: every upload's revision is the
 * `to` of exactly one entry, which its writer made, and every `from` is
 * left exactly once (the tag went from the first to the last revision
 * through all of them). */
static void expect_race_moves(const json_t *entries, const struct race_writer *w, const char *tag,
                              const char *first)
{
    json_t *tos = json_object(), *froms = json_object();
    size_t moves = 0;
    for (size_t i = 0; i < json_array_size(entries); i++) {
        const json_t *e = json_array_get(entries, i);
        const char *action = json_string_value(json_object_get(e, "action"));
        const char *st = json_string_value(json_object_get(e, "strategy"));
        const char *tg = json_string_value(json_object_get(e, "tag"));
        const char *to = json_string_value(json_object_get(e, "to"));
        if (!action || strcmp(action, "tag.move") != 0 || !st || strcmp(st, "race") != 0 || !tg ||
            strcmp(tg, tag) != 0 || (to && strcmp(to, first) == 0))
            continue; /* (the first upload's own `latest`) */
        moves++;
        const json_t *fv = json_object_get(e, "from");
        const char *from = json_is_null(fv) ? "null" : json_string_value(fv);
        const char *actor = json_string_value(json_object_get(e, "actor"));
        const char *owner = to ? race_owner(w, to) : NULL;
        char *dump = json_dumps(e, JSON_COMPACT);
        if (!owner || !actor || strcmp(owner, actor) != 0)
            fail_msg("race:%s: %s is audited under %s, but %s uploaded it: %s", tag,
                     to ? to : "(no to)", actor ? actor : "(none)", owner ? owner : "nobody", dump);
        if (json_object_get(tos, to) || (from && json_object_get(froms, from)))
            fail_msg("race:%s: a second entry moves the tag %s: %s (entries naming it:\n%s)", tag,
                     json_object_get(tos, to) ? "to the same revision" : "off the same one", dump,
                     entries_about(entries, tag));
        free(dump);
        json_object_set_new(tos, to, json_true());
        json_object_set_new(froms, from ? from : "?", json_true());
    }
    if (moves != RACE_UPLOADS)
        fail_msg("race:%s: %zu tag.move entries for %d uploads that each moved it once:\n%s", tag,
                 moves, RACE_UPLOADS, entries_about(entries, tag));
    if (!json_object_get(froms, first))
        fail_msg("race:%s: no entry moves the tag off %s", tag, first);
    json_decref(tos);
    json_decref(froms);
}

/* Uploads of one strategy at once, each taking `latest` and `prod`: each
 * request audits and counts exactly the tag moves its own upload made. */
static void test_concurrent_uploads_audit_their_own_moves(void **state)
{
    struct tu_server *srv = *state;
    struct race_writer w[RACE_WRITERS];
    char *yaml = strdup("auth:\n  tokens:\n");
    for (int i = 0; i < RACE_WRITERS; i++) {
        memset(&w[i], 0, sizeof w[i]);
        w[i].index = i;
        snprintf(w[i].name, sizeof w[i].name, "writer%d", i);
        snprintf(w[i].secret, sizeof w[i].secret, "race-Secret-%d-Kq8vZ-3e1f7d", i);
        char digest[65];
        tu_sha256_hex(w[i].secret, strlen(w[i].secret), digest);
        char *more =
            tu_path("%s    - {name: %s, sha256: %s, role: admin}\n", yaml, w[i].name, digest);
        free(yaml);
        yaml = more;
    }
    struct tu_server_options opts = {.config_yaml = yaml};
    tu_server_start(srv, &opts);
    free(yaml);
    /* the first revision, which every move starts from */
    char *src = tu_module_source("race", NULL, NULL);
    char first[65];
    tu_sha256_hex(src, strlen(src), first);
    char *auth = tu_path("Authorization: Bearer %s", w[0].secret);
    const char *headers[] = {auth, NULL};
    json_t *body = json_pack("{s:s}", "source", src);
    char *text = json_dumps(body, JSON_COMPACT);
    struct tu_request_options o = {.body = text, .body_len = strlen(text), .headers = headers};
    struct tu_response res;
    tu_request(srv, &res, "POST", "/strategies/modules", &o);
    tu_assert_status(&res, 201);
    tu_response_free(&res);

    pthread_t threads[RACE_WRITERS];
    for (int i = 0; i < RACE_WRITERS; i++) {
        w[i].base_url = srv->base_url;
        assert_int_equal(pthread_create(&threads[i], NULL, race_writer_main, &w[i]), 0);
    }
    for (int i = 0; i < RACE_WRITERS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < RACE_WRITERS; i++) {
        for (int r = 0; r < RACE_ROUNDS; r++) {
            if (w[i].status[r] != 201)
                fail_msg("%s's upload %d: expected 201, got %ld: %s", w[i].name, r, w[i].status[r],
                         w[i].error);
        }
    }

    json_t *entries = tu_audit_entries(srv);
    char *spelled_first = spell(first);
    expect_race_moves(entries, w, "latest", spelled_first);
    expect_race_moves(entries, w, "prod", "null");
    json_decref(entries);
    /* every move but prod's first (a new tag) is a reassignment, counted once */
    tu_request(srv, &res, "GET", "/metrics", &(struct tu_request_options){.headers = headers});
    tu_assert_status(&res, 200);
    double latest = tu_ops_metric(res.body, "strategy_tag_reassigned_total", "strategy", "race",
                                  "tag", "latest", NULL);
    double prod = tu_ops_metric(res.body, "strategy_tag_reassigned_total", "strategy", "race",
                                "tag", "prod", NULL);
    tu_response_free(&res);
    if (latest != RACE_UPLOADS || prod != RACE_UPLOADS - 1)
        fail_msg("strategy_tag_reassigned_total: latest %g (expected %d), prod %g (expected %d)",
                 latest, RACE_UPLOADS, prod, RACE_UPLOADS - 1);
    free(spelled_first);
    free(text);
    json_decref(body);
    free(auth);
    free(src);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_tag_put_moves_and_reports, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_tag_put_errors_change_nothing, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_tag_delete_guards, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_tag_moves_and_deletes_are_audited, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_implicit_tag_changes_are_audited, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_module_put_by_name_moves_latest, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_module_put_by_tag_moves_that_tag, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_upload_answer_lists_a_latest_move, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_module_put_by_hash_moves_every_tag_on_it,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refused_module_puts_change_nothing, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_module_put_applies_aliases, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_uploads_audit_their_own_moves,
                                        tu_server_setup, tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
