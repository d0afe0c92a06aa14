/*
 * Selectors over HTTP: every accepted form (name, name:tag,
 * name@sha256:<hex>, name@<hex>, hex prefixes of at least 12 digits),
 * ambiguous prefixes (409 with candidates), unknown selectors (404),
 * malformed ones (400, including URL-encoded path separators and ".."), and
 * the source download (exact bytes, Content-Type, ETag, If-None-Match).
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ZEROS64 "0000000000000000000000000000000000000000000000000000000000000000"

static char *spell(const char *hex)
{
    return tu_path("sha256:%s", hex);
}

/* Two revisions of "momo": a (tag v1, latest) and b (tag v2). */
struct momo {
    char *a, *b;
    char ha[65], hb[65];
};

static void momo_upload(struct tu_server *srv, struct momo *m)
{
    m->a = tu_module_source("momo", "v1", NULL);
    m->b = tu_module_source("momo", "v2", "onTrade() {},");
    tu_upload_expect(srv, m->a, NULL, 201, m->ha);
    tu_upload_expect(srv, m->b, NULL, 201, m->hb);
    /* The prefix tests below rely on the two hashes differing early. */
    assert_true(strncmp(m->ha, m->hb, 12) != 0);
}

static void momo_free(struct momo *m)
{
    free(m->a);
    free(m->b);
}

/* GET /strategies/modules/<sel> selects `hex`, and its source is `source`. */
static void expect_selects(struct tu_server *srv, const char *sel, const char *hex,
                           const char *source)
{
    struct tu_response res;
    tu_get(srv, &res, "/strategies/modules/%s", sel);
    if (res.status != 200)
        fail_msg("selector '%s': expected HTTP 200, got %ld: %s", sel, res.status, res.body);
    char *spelled = spell(hex);
    if (strcmp(tu_jstr(res.json, "selectedRevisionHash"), spelled) != 0)
        fail_msg("selector '%s' selected %s, expected %s", sel,
                 tu_jstr(res.json, "selectedRevisionHash"), spelled);
    assert_string_equal(tu_jstr(res.json, "name"), "momo");
    tu_response_free(&res);

    tu_get(srv, &res, "/strategies/modules/%s/source", sel);
    if (res.status != 200)
        fail_msg("source of '%s': expected HTTP 200, got %ld: %s", sel, res.status, res.body);
    if (res.len != strlen(source) || memcmp(res.body, source, res.len) != 0)
        fail_msg("source of '%s' is not the bytes of %s", sel, spelled);
    tu_response_free(&res);
    free(spelled);
}

static void test_every_selector_form(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct momo m;
    momo_upload(srv, &m);

    expect_selects(srv, "momo", m.ha, m.a);
    expect_selects(srv, "momo:latest", m.ha, m.a);
    expect_selects(srv, "momo:v1", m.ha, m.a);
    expect_selects(srv, "momo:v2", m.hb, m.b);
    expect_selects(srv, "momo%3Av2", m.hb, m.b);

    char *sel = tu_path("momo@sha256:%s", m.hb);
    expect_selects(srv, sel, m.hb, m.b);
    free(sel);
    sel = tu_path("momo@%s", m.hb);
    expect_selects(srv, sel, m.hb, m.b);
    free(sel);
    sel = tu_path("momo%%40%s", m.hb);
    expect_selects(srv, sel, m.hb, m.b);
    free(sel);
    sel = tu_path("momo@%.12s", m.hb);
    expect_selects(srv, sel, m.hb, m.b);
    free(sel);
    sel = tu_path("momo@sha256:%.12s", m.hb);
    expect_selects(srv, sel, m.hb, m.b);
    free(sel);
    sel = tu_path("momo@%.20s", m.ha);
    expect_selects(srv, sel, m.ha, m.a);
    free(sel);
    sel = tu_path("momo@%.63s", m.ha);
    expect_selects(srv, sel, m.ha, m.a);
    free(sel);

    /* The tag the selector went through is reported for a version tag. */
    json_t *mod = tu_get_json(srv, 200, "/strategies/modules/momo:v2");
    assert_string_equal(tu_jstr(mod, "selectedRevisionTag"), "v2");
    json_decref(mod);
    momo_free(&m);
    tu_server_stop(srv);
}

static void test_unknown_selectors_are_404(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct momo m;
    momo_upload(srv, &m);
    char *other = tu_module_source("other", "v1", NULL);
    char ho[65];
    tu_upload_expect(srv, other, NULL, 201, ho);
    assert_true(strncmp(m.ha, "000000000000", 12) != 0 && strncmp(m.hb, "000000000000", 12) != 0 &&
                strncmp(ho, "000000000000", 12) != 0);

    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    char *unknown[] = {
        strdup("nosuch"),
        strdup("nosuch:v1"),
        strdup("momo:v9"),
        strdup("momo@" ZEROS64),
        strdup("momo@sha256:" ZEROS64),
        strdup("momo@000000000000"),
        tu_path("momo@%s", ho), /* a revision, but of another strategy */
        tu_path("nosuch@%s", m.ha),
    };
    for (size_t i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
        struct tu_response res;
        tu_get(srv, &res, "/strategies/modules/%s", unknown[i]);
        if (res.status != 404)
            fail_msg("GET /strategies/modules/%s: expected 404, got %ld: %s", unknown[i],
                     res.status, res.body);
        tu_assert_error(&res, 404);
        tu_response_free(&res);
        tu_get(srv, &res, "/strategies/modules/%s/source", unknown[i]);
        if (res.status != 404)
            fail_msg("GET /strategies/modules/%s/source: expected 404, got %ld: %s", unknown[i],
                     res.status, res.body);
        tu_assert_error(&res, 404);
        tu_response_free(&res);
        tu_delete(srv, &res, "/strategies/modules/%s", unknown[i]);
        if (res.status != 404)
            fail_msg("DELETE /strategies/modules/%s: expected 404, got %ld: %s", unknown[i],
                     res.status, res.body);
        tu_assert_error(&res, 404);
        tu_response_free(&res);
        free(unknown[i]);
    }
    tu_catalog_expect_same(srv, &before, "requests for unknown selectors");
    tu_catalog_state_free(&before);
    free(other);
    momo_free(&m);
    tu_server_stop(srv);
}

/* Each is one path segment as sent on the wire. */
static void test_malformed_selectors_are_400(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct momo m;
    momo_upload(srv, &m);
    char *put_body = NULL;
    {
        json_t *b = json_pack("{s:s}", "source", m.b);
        put_body = json_dumps(b, JSON_COMPACT);
        json_decref(b);
    }
    char long_name[80];
    memset(long_name, 'a', 65);
    long_name[65] = '\0';

    char *bad[] = {
        strdup("Momo"),                      /* upper case */
        strdup("mo%24mo"),                   /* '$' */
        strdup("momo%20v1"),                 /* space */
        strdup("momo%2Fv1"),                 /* encoded '/' */
        strdup("momo%5Cv1"),                 /* encoded '\' */
        strdup("..%2Fmomo"),                 /* ../momo */
        strdup(".."),                        /* sent as is */
        strdup("%2E%2E"),                    /* encoded ".." */
        strdup("momo%3A.."),                 /* momo:.. */
        strdup("momo%3Av1%2F..%2F..%2Fetc"), /* momo:v1/../../etc */
        strdup("momo%3A"),                   /* empty tag */
        strdup("%3Av1"),                     /* empty name */
        strdup("momo%40"),                   /* empty hash */
        strdup("momo%40sha256%3A"),          /* empty hash after the algorithm */
        tu_path("%%40%s", m.ha),             /* empty name before a hash */
        strdup("momo%40xyz123456789abc"),    /* not hex */
        tu_path("momo%%40%.11s", m.ha),      /* prefix under 12 digits */
        tu_path("momo%%40%s0", m.ha),        /* 65 hex digits */
        tu_path("momo%%40%.12s%%2F..", m.ha),
        strdup("-momo"),
        strdup(long_name), /* 65 characters */
        strdup("momo%00"),
    };
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        const char *suffix[] = {"", "/source"};
        for (int s = 0; s < 2; s++) {
            char *path = tu_path("/strategies/modules/%s%s", bad[i], suffix[s]);
            struct tu_response res;
            tu_request(srv, &res, "GET", path, NULL);
            if (res.status != 400)
                fail_msg("GET %s: expected 400, got %ld: %s", path, res.status, res.body);
            tu_assert_error(&res, 400);
            tu_response_free(&res);
            free(path);
        }
        char *path = tu_path("/strategies/modules/%s", bad[i]);
        struct tu_response res;
        tu_request(srv, &res, "DELETE", path, NULL);
        if (res.status != 400)
            fail_msg("DELETE %s: expected 400, got %ld: %s", path, res.status, res.body);
        tu_assert_error(&res, 400);
        tu_response_free(&res);
        struct tu_request_options put = {.body = put_body, .body_len = strlen(put_body)};
        tu_request(srv, &res, "PUT", path, &put);
        if (res.status != 400)
            fail_msg("PUT %s: expected 400, got %ld: %s", path, res.status, res.body);
        tu_assert_error(&res, 400);
        tu_response_free(&res);
        free(path);
        free(bad[i]);
    }
    tu_catalog_expect_same(srv, &before, "requests with malformed selectors");
    tu_catalog_state_free(&before);
    free(put_body);
    momo_free(&m);
    tu_server_stop(srv);
}

/* Two modules whose SHA-256 hashes share their first 12 hex digits
 * (74a3860efc04...), found by a birthday search over the nonce. */
static char *twin_source(unsigned nonce)
{
    return tu_path("module.exports = {\n"
                   "  metadata: { name: 'twins', displayName: 'Twins', events: ['Trade'] },\n"
                   "  create() {\n"
                   "    return {};\n"
                   "  },\n"
                   "};\n"
                   "// nonce %010u\n",
                   nonce);
}

static bool mentions(const json_t *value, const char *hex)
{
    char *dump = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    bool found = dump && strstr(dump, hex);
    free(dump);
    return found;
}

static void test_ambiguous_prefix_is_409_with_candidates(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a = twin_source(7878112u), *b = twin_source(7916840u);
    char ha[65], hb[65];
    tu_sha256_hex(a, strlen(a), ha);
    tu_sha256_hex(b, strlen(b), hb);
    assert_true(strncmp(ha, "74a3860efc04", 12) == 0 && strncmp(hb, "74a3860efc04", 12) == 0);
    assert_true(ha[12] != hb[12]);
    tu_upload_expect(srv, a, "{\"tag\": \"one\"}", 201, NULL);
    tu_upload_expect(srv, b, "{\"tag\": \"two\"}", 201, NULL);

    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    const char *ambiguous[] = {"twins@74a3860efc04", "twins@sha256:74a3860efc04"};
    for (size_t i = 0; i < 2; i++) {
        const char *suffix[] = {"", "/source"};
        for (int s = 0; s < 2; s++) {
            struct tu_response res;
            tu_get(srv, &res, "/strategies/modules/%s%s", ambiguous[i], suffix[s]);
            tu_assert_error(&res, 409);
            const json_t *candidates = tu_jget(res.json, "details.candidates");
            if (!json_is_array(candidates) || json_array_size(candidates) != 2 ||
                !mentions(candidates, ha) || !mentions(candidates, hb))
                fail_msg("GET %s%s: details.candidates should list both revisions: %s",
                         ambiguous[i], suffix[s], res.body);
            tu_response_free(&res);
        }
        struct tu_response res;
        tu_delete(srv, &res, "/strategies/modules/%s", ambiguous[i]);
        tu_assert_error(&res, 409);
        tu_response_free(&res);
    }
    tu_catalog_expect_same(srv, &before, "requests with an ambiguous prefix");
    tu_catalog_state_free(&before);

    /* One more digit decides. */
    char *sel = tu_path("twins@%.13s", ha);
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/%s", sel);
    char *sa = spell(ha);
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), sa);
    json_decref(m);
    free(sel);
    sel = tu_path("twins@%.13s", hb);
    m = tu_get_json(srv, 200, "/strategies/modules/%s", sel);
    char *sb = spell(hb);
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), sb);
    json_decref(m);
    free(sel);
    free(sa);
    free(sb);
    free(a);
    free(b);
    tu_server_stop(srv);
}

/* CRLF line ends, tabs, multi-byte UTF-8, trailing blanks, no final
 * newline: the download must give back exactly these bytes. */
#define BYTES_DISPLAY                                                                              \
    "Bytes \xe2\x80\x94 \xc2\xab"                                                                  \
    "exact\xc2\xbb \xe2\x9c\x93 \xf0\x9f\x9a\x80"

static const char *const BYTES_SOURCE = "module.exports = {\r\n"
                                        "  metadata: {\r\n"
                                        "\tname: 'bytes',\r\n"
                                        "\tdisplayName: '" BYTES_DISPLAY "',\r\n"
                                        "\tevents: ['Trade'],\r\n"
                                        "  },\r\n"
                                        "  create() { return {}; },   \r\n"
                                        "};  // no newline at the end";

static void test_source_download_is_byte_exact_with_etag(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char hex[65];
    tu_upload_expect(srv, BYTES_SOURCE, NULL, 201, hex);
    char *etag = tu_path("\"sha256:%s\"", hex);

    const char *selectors[] = {"bytes", "bytes:latest", NULL};
    char *by_hash = tu_path("bytes@%s", hex);
    for (int i = 0; i < 3; i++) {
        const char *sel = selectors[i] ? selectors[i] : by_hash;
        struct tu_response res;
        tu_get(srv, &res, "/strategies/modules/%s/source", sel);
        tu_assert_status(&res, 200);
        if (res.len != strlen(BYTES_SOURCE) || memcmp(res.body, BYTES_SOURCE, res.len) != 0)
            fail_msg("the source of %s differs from the upload (%zu bytes, uploaded %zu)", sel,
                     res.len, strlen(BYTES_SOURCE));
        char *type = tu_header(&res, "Content-Type");
        if (!type || strncmp(type, "application/javascript", 22) != 0 ||
            (type[22] != '\0' && type[22] != ';'))
            fail_msg("Content-Type of the source is '%s', expected application/javascript",
                     type ? type : "(none)");
        free(type);
        char *got = tu_header(&res, "ETag");
        if (!got || strcmp(got, etag) != 0)
            fail_msg("ETag is '%s', expected '%s'", got ? got : "(none)", etag);
        free(got);
        tu_response_free(&res);
    }

    char *inm = tu_path("If-None-Match: %s", etag);
    const char *headers[] = {inm, NULL};
    char *url = tu_path("%s/strategies/modules/bytes/source", srv->base_url);
    struct tu_response res;
    tu_http(&res, "GET", url, NULL, 0, headers);
    tu_assert_status(&res, 304);
    assert_int_equal(res.len, 0);
    tu_response_free(&res);

    const char *other[] = {"If-None-Match: \"sha256:" ZEROS64 "\"", NULL};
    tu_http(&res, "GET", url, NULL, 0, other);
    tu_assert_status(&res, 200);
    assert_int_equal(res.len, strlen(BYTES_SOURCE));
    tu_response_free(&res);

    /* If-None-Match is a list of entity-tags (RFC 9110 13.1.2): "*", a weak
     * tag (GET compares weakly) and a list holding ours match... */
    char *matching[] = {
        tu_path("If-None-Match: *"),
        tu_path("If-None-Match: W/%s", etag),
        tu_path("If-None-Match: \"sha256:" ZEROS64 "\", %s", etag),
        tu_path("If-None-Match: \"a,b\",W/\"x\" ,\t%s  ", etag),
    };
    for (size_t i = 0; i < sizeof matching / sizeof matching[0]; i++) {
        const char *h[] = {matching[i], NULL};
        tu_http(&res, "GET", url, NULL, 0, h);
        if (res.status != 304)
            fail_msg("'%s': expected 304, got %ld", matching[i], res.status);
        tu_response_free(&res);
        free(matching[i]);
    }
    /* ...but a value that merely contains the hash names another tag */
    char *containing[] = {
        tu_path("If-None-Match: \"x-sha256:%s\"", hex),
        tu_path("If-None-Match: \"sha256:%s-gzip\"", hex),
        tu_path("If-None-Match: sha256:%s", hex),
        tu_path("If-None-Match: %s", hex),
        tu_path("If-None-Match: \"*\""),
    };
    for (size_t i = 0; i < sizeof containing / sizeof containing[0]; i++) {
        const char *h[] = {containing[i], NULL};
        tu_http(&res, "GET", url, NULL, 0, h);
        if (res.status != 200)
            fail_msg("'%s': expected 200, got %ld", containing[i], res.status);
        assert_int_equal(res.len, strlen(BYTES_SOURCE));
        tu_response_free(&res);
        free(containing[i]);
    }

    /* The metadata kept the UTF-8 text intact too. */
    json_t *meta = tu_get_json(srv, 200, "/strategies/bytes");
    assert_string_equal(tu_jstr(meta, "displayName"), BYTES_DISPLAY);
    json_decref(meta);

    /* And the file on disk is the same bytes. */
    char *path = tu_path("%s/bytes/%s/bytes.js", srv->strategies_dir, hex);
    size_t len = 0;
    char *disk = tu_read_file(path, &len);
    assert_non_null(disk);
    assert_int_equal(len, strlen(BYTES_SOURCE));
    assert_memory_equal(disk, BYTES_SOURCE, len);
    free(disk);
    free(path);
    free(url);
    free(inm);
    free(by_hash);
    free(etag);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_every_selector_form, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_selectors_are_404, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_malformed_selectors_are_400, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_ambiguous_prefix_is_409_with_candidates,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_source_download_is_byte_exact_with_etag,
                                        tu_server_setup, tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
