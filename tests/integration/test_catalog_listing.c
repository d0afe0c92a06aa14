/*
 * The module listing as clients read it over HTTP: identity and gzip bodies
 * carry the same document, Accept-Encoding is honoured as RFC 9110 says,
 * and a listing asked again after any change (upload, tag move, delete,
 * instance start or stop) shows the change, whichever encoding, page or
 * filter it is asked with.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A listing's raw answer, asked with an Accept-Encoding (NULL: none). */
static void get_listing(struct tu_server *srv, struct tu_response *res, const char *path,
                        const char *accept_encoding)
{
    char *header = accept_encoding ? tu_path("Accept-Encoding: %s", accept_encoding) : NULL;
    const char *headers[] = {header, NULL};
    struct tu_request_options opts = {.headers = header ? headers : NULL};
    tu_request(srv, res, "GET", path, &opts);
    free(header);
}

static bool has_header_value(const struct tu_response *res, const char *name, const char *value)
{
    char *got = tu_header(res, name);
    bool same = got && strcasecmp(got, value) == 0;
    free(got);
    return same;
}

/* The document of a listing asked in gzip, checked against the identity
 * answer asked right after: same bytes once decompressed. Returns it. */
static json_t *listing(struct tu_server *srv, const char *path)
{
    struct tu_response packed, plain;
    get_listing(srv, &packed, path, "gzip");
    get_listing(srv, &plain, path, NULL);
    tu_assert_status(&packed, 200);
    tu_assert_status(&plain, 200);
    assert_true(has_header_value(&packed, "Content-Encoding", "gzip"));
    assert_null(tu_header(&plain, "Content-Encoding"));
    assert_true(has_header_value(&packed, "Vary", "Accept-Encoding"));
    assert_true(has_header_value(&plain, "Vary", "Accept-Encoding"));
    size_t len = 0;
    char *text = tu_gunzip(packed.body, packed.len, &len);
    if (!text)
        fail_msg("%s: the gzip body (%zu bytes) does not decompress", path, packed.len);
    if (len > 1000) /* tiny pages may grow by gzip's own header */
        assert_true(packed.len < len);
    if (len != plain.len || memcmp(text, plain.body, len) != 0)
        fail_msg("%s: gzip and identity bodies differ:\n%s\n---\n%s", path, text, plain.body);
    json_error_t error;
    json_t *doc = json_loads(text, 0, &error);
    if (!doc)
        fail_msg("%s: not JSON: %s", path, error.text);
    free(text);
    tu_response_free(&packed);
    tu_response_free(&plain);
    return doc;
}

static void upload(struct tu_server *srv, const char *name, const char *tag, char hex[65])
{
    char *source = tu_module_source(name, tag, "onTrade() {},");
    char *fields = tu_path("{\"tag\": \"%s\"}", tag);
    tu_upload_expect(srv, source, fields, 201, hex);
    free(fields);
    free(source);
}

static const json_t *module_named(const json_t *doc, const char *name)
{
    const json_t *modules = json_object_get(doc, "modules");
    for (size_t i = 0; i < json_array_size(modules); i++) {
        const json_t *m = json_array_get(modules, i);
        if (strcmp(json_string_value(json_object_get(m, "name")), name) == 0)
            return m;
    }
    return NULL;
}

static size_t revision_count(const json_t *doc, const char *name)
{
    const json_t *m = module_named(doc, name);
    return m ? json_array_size(json_object_get(m, "revisions")) : 0;
}

static void test_gzip_and_identity_agree(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char hex[65];
    const char *names[] = {"alpha", "bravo", "charlie", "delta"};
    for (size_t i = 0; i < 4; i++) {
        upload(srv, names[i], "v1", hex);
        upload(srv, names[i], "v2", hex);
    }
    json_t *all = listing(srv, "/strategies/modules");
    assert_int_equal(tu_jint(all, "total"), 4);
    assert_int_equal(json_array_size(tu_jget(all, "modules")), 4);
    /* pages and filters are pages of their own */
    json_t *first = listing(srv, "/strategies/modules?limit=1");
    json_t *second = listing(srv, "/strategies/modules?limit=1&offset=1");
    assert_string_equal(tu_jstr(first, "modules.0.name"), "alpha");
    assert_string_equal(tu_jstr(second, "modules.0.name"), "bravo");
    json_t *one = listing(srv, "/strategies/modules?strategy=charlie");
    assert_int_equal(tu_jint(one, "total"), 1);
    char *by_hash = tu_path("/strategies/modules?hash=%.12s", hex);
    json_t *hashed = listing(srv, by_hash);
    assert_int_equal(tu_jint(hashed, "total"), 1);
    assert_int_equal(revision_count(hashed, "delta"), 1);
    json_decref(all);
    json_decref(first);
    json_decref(second);
    json_decref(one);
    json_decref(hashed);
    free(by_hash);
}

static void test_accept_encoding_is_honoured(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char hex[65];
    upload(srv, "alpha", "v1", hex);
    struct {
        const char *accept;
        bool gzip;
    } cases[] = {
        {"gzip", true},
        {"GZIP", true},
        {"x-gzip", true},
        {"deflate, gzip;q=1.0, br", true},
        {"br;q=0.9, *;q=0.1", true},
        {"gzip;q=0.001", true},
        {"gzip;q=0", false},
        {"gzip; q=0.000", false},
        {"*;q=0, gzip", true},
        {"*;q=0", false},
        {"gzip;q=0, *", false},
        {"identity", false},
        {"deflate, br", false},
        {"", false},
        {"gzipped", false},
    };
    struct tu_response plain;
    get_listing(srv, &plain, "/strategies/modules", NULL);
    tu_assert_status(&plain, 200);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tu_response res;
        get_listing(srv, &res, "/strategies/modules", cases[i].accept);
        tu_assert_status(&res, 200);
        bool packed = has_header_value(&res, "Content-Encoding", "gzip");
        if (packed != cases[i].gzip)
            fail_msg("Accept-Encoding: %s: expected %s, got %s", cases[i].accept,
                     cases[i].gzip ? "gzip" : "identity", packed ? "gzip" : "identity");
        if (!packed && (res.len != plain.len || memcmp(res.body, plain.body, res.len) != 0))
            fail_msg("Accept-Encoding: %s: identity body differs", cases[i].accept);
        tu_response_free(&res);
    }
    tu_response_free(&plain);
    /* a bad query is a plain JSON error whatever the client accepts */
    struct tu_response bad;
    get_listing(srv, &bad, "/strategies/modules?limit=-3", "gzip");
    tu_assert_status(&bad, 400);
    assert_null(tu_header(&bad, "Content-Encoding"));
    assert_non_null(tu_jstr(bad.json, "error"));
    tu_response_free(&bad);
    /* every query error names its parameter */
    static const char *const refused[][2] = {
        {"/strategies/modules?limit=-3", "limit"},
        {"/strategies/modules?strategy=TST", "strategy"},
        {"/strategies/modules?hash=zz", "hash"},
        {"/strategies/modules?runningOnly=maybe", "runningOnly"}};
    for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
        get_listing(srv, &bad, refused[i][0], NULL);
        tu_assert_status(&bad, 400);
        assert_string_equal(tu_jstr(bad.json, "details.parameter"), refused[i][1]);
        tu_response_free(&bad);
    }
}

static void put_tag(struct tu_server *srv, const char *name, const char *tag, const char *hex)
{
    char *path = tu_path("/strategies/modules/%s/tags/%s", name, tag);
    char *body = tu_path("{\"hash\": \"sha256:%s\"}", hex);
    json_decref(tu_call(srv, "PUT", path, 200, body));
    free(body);
    free(path);
}

static const char *tag_target(const json_t *doc, const char *name, const char *tag)
{
    const json_t *m = module_named(doc, name);
    return m ? json_string_value(json_object_get(json_object_get(m, "tagAliases"), tag)) : NULL;
}

static void test_listing_follows_catalogue_changes(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char v1[65], v2[65], other[65];
    upload(srv, "alpha", "v1", v1);
    upload(srv, "bravo", "v1", other);
    const char *path = "/strategies/modules?limit=10";
    json_t *before = listing(srv, path);
    json_t *again = listing(srv, path);
    assert_true(json_equal(before, again));
    assert_int_equal(revision_count(before, "alpha"), 1);

    upload(srv, "alpha", "v2", v2);
    json_t *uploaded = listing(srv, path);
    assert_int_equal(revision_count(uploaded, "alpha"), 2);
    char *spelled2 = tu_path("sha256:%s", v2);
    assert_string_equal(tag_target(uploaded, "alpha", "v2"), spelled2);

    put_tag(srv, "alpha", "prod", v1);
    json_t *tagged = listing(srv, path);
    char *spelled1 = tu_path("sha256:%s", v1);
    assert_string_equal(tag_target(tagged, "alpha", "prod"), spelled1);

    char *revision = tu_path("/strategies/modules/alpha@sha256:%s", v2);
    json_decref(tu_call(srv, "DELETE", revision, 204, NULL));
    json_t *deleted = listing(srv, path);
    assert_int_equal(revision_count(deleted, "alpha"), 1);
    json_decref(tu_call(srv, "DELETE", "/strategies/modules/bravo", 204, NULL));
    json_t *gone = listing(srv, path);
    assert_null(module_named(gone, "bravo"));
    assert_int_equal(tu_jint(gone, "total"), 1);

    json_t *docs[] = {before, again, uploaded, tagged, deleted, gone};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        json_decref(docs[i]);
    free(spelled1);
    free(spelled2);
    free(revision);
}

/* The running block of alpha's only revision in a listing: its count (0:
 * no block). */
static long long running_count(const json_t *doc)
{
    const json_t *m = module_named(doc, "alpha");
    const json_t *running = m ? json_object_get(m, "running") : NULL;
    if (!running || json_array_size(running) == 0)
        return 0;
    assert_int_equal(json_array_size(running), 1);
    assert_true(json_is_true(json_object_get(json_array_get(running, 0), "running")));
    return tu_jint(json_array_get(running, 0), "count");
}

static void test_listing_follows_running_instances(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char hex[65];
    upload(srv, "alpha", "v1", hex);
    json_decref(tu_instance_create(srv, "one", "alpha", NULL, "sim", "[\"BTC-USDT\"]"));
    json_decref(tu_instance_create(srv, "two", "alpha", NULL, "sim", "[\"ETH-USDT\"]"));
    const char *path = "/strategies/modules";
    const char *only = "/strategies/modules?runningOnly=true";
    json_t *idle = listing(srv, path);
    json_t *idle_only = listing(srv, only);
    assert_int_equal(running_count(idle), 0);
    assert_int_equal(tu_jint(idle_only, "total"), 0);

    tu_instance_start(srv, "one");
    json_t *one = listing(srv, path);
    json_t *one_only = listing(srv, only);
    assert_int_equal(running_count(one), 1);
    assert_int_equal(tu_jint(one_only, "total"), 1);
    assert_int_equal(running_count(one_only), 1);

    tu_instance_start(srv, "two");
    json_t *two = listing(srv, path);
    assert_int_equal(running_count(two), 2);

    tu_instance_stop(srv, "one");
    tu_instance_stop(srv, "two");
    json_t *stopped = listing(srv, path);
    json_t *stopped_only = listing(srv, only);
    assert_int_equal(running_count(stopped), 0);
    assert_int_equal(tu_jint(stopped_only, "total"), 0);

    json_t *docs[] = {idle, idle_only, one, one_only, two, stopped, stopped_only};
    for (size_t i = 0; i < sizeof docs / sizeof docs[0]; i++)
        json_decref(docs[i]);
}

/* The hash of alpha's only running block in a listing, or NULL. */
static const char *running_hash(const json_t *doc)
{
    const json_t *m = module_named(doc, "alpha");
    const json_t *running = m ? json_object_get(m, "running") : NULL;
    if (json_array_size(running) != 1)
        return NULL;
    return json_string_value(json_object_get(json_array_get(running, 0), "hash"));
}

/* A listing asked after a tag moved but before the refresh, then after it:
 * the refresh alone (no catalogue change) must show in the next listing. */
static void test_listing_follows_refresh(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char v1[65], v2[65];
    char *source = tu_module_source("alpha", "v1", "onTrade() {},");
    tu_upload_expect(srv, source, NULL, 201, v1);
    free(source);
    json_decref(tu_instance_create(srv, "one", "alpha", NULL, "sim", "[\"BTC-USDT\"]"));
    tu_instance_start(srv, "one");
    source = tu_module_source("alpha", NULL, "onTrade() {}, onTicker() {},");
    tu_upload_expect(srv, source, NULL, 201, v2); /* untagged: latest moves */
    free(source);
    char *spelled1 = tu_path("sha256:%s", v1);
    char *spelled2 = tu_path("sha256:%s", v2);
    const char *path = "/strategies/modules";
    json_t *before = listing(srv, path);
    assert_string_equal(tag_target(before, "alpha", "latest"), spelled2);
    assert_non_null(running_hash(before));
    assert_string_equal(running_hash(before), spelled1);
    json_decref(tu_call(srv, "POST", "/strategies/refresh", 200, NULL));
    json_t *after = listing(srv, path);
    assert_non_null(running_hash(after));
    assert_string_equal(running_hash(after), spelled2);
    json_decref(before);
    json_decref(after);
    free(spelled1);
    free(spelled2);
}

/* A limit or offset near LLONG_MAX pages like any other: the page's end is
 * never computed as offset + limit, which would wrap. */
static void test_huge_limit_and_offset_page(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char hex[65];
    const char *names[] = {"alpha", "bravo", "charlie"};
    for (size_t i = 0; i < 3; i++)
        upload(srv, names[i], "v1", hex);
    json_t *page = listing(srv, "/strategies/modules?limit=9223372036854775807&offset=1");
    assert_int_equal(tu_jint(page, "total"), 3);
    assert_int_equal(tu_jint(page, "offset"), 1);
    if (json_array_size(tu_jget(page, "modules")) != 2)
        fail_msg("limit=LLONG_MAX&offset=1 of 3 modules shows %zu of them, expected 2",
                 json_array_size(tu_jget(page, "modules")));
    assert_string_equal(tu_jstr(page, "modules.0.name"), "bravo");
    assert_string_equal(tu_jstr(page, "modules.1.name"), "charlie");
    json_decref(page);
    page = listing(srv, "/strategies/modules?limit=9223372036854775806&offset=2");
    assert_int_equal(json_array_size(tu_jget(page, "modules")), 1);
    assert_string_equal(tu_jstr(page, "modules.0.name"), "charlie");
    json_decref(page);
    page = listing(srv, "/strategies/modules?limit=1&offset=9223372036854775807");
    assert_int_equal(tu_jint(page, "total"), 3);
    assert_int_equal(json_array_size(tu_jget(page, "modules")), 0);
    json_decref(page);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_gzip_and_identity_agree, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_accept_encoding_is_honoured, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_listing_follows_catalogue_changes, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_listing_follows_running_instances, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_listing_follows_refresh, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_huge_limit_and_offset_page, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
