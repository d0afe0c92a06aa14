/*
 * Resolution against a snapshot built by hand, so that hash prefixes can be
 * made to collide (two real SHA-256 values sharing 12 hex digits would take
 * years to find).
 */
#include "testutil.h"

#include "registry/registry.h"

#include <string.h>

#define Z52 "0000000000000000000000000000000000000000000000000000"
#define O52 "1111111111111111111111111111111111111111111111111111"
#define T48 "222222222222222222222222222222222222222222222222"
#define H48 "333333333333333333333333333333333333333333333333"
#define S52 "6666666666666666666666666666666666666666666666666666"
#define FIVES "5555555555555555555555555555555555555555555555555555555555555555"
#define NINES "9999999999999999999999999999999999999999999999999999999999999999"
#define EIGHTS "8888888888888888888888888888888888888888888888888888888888888888"

#define A1 "abcdef012345" Z52
#define A2 "abcdef012345" O52
#define B1 "abcdef0123450000" T48
#define B2 "0123456789abcdef" H48
#define B3 "cafebabecafe" S52
#define C1 FIVES
#define G1 NINES
#define G2 EIGHTS

static struct registry_revision alpha_revs[] = {
    {.hex = A1, .tag = "v1", .path = "alpha/" A1 "/alpha.js", .size = 10, .order = 1},
    {.hex = A2, .tag = "v2", .path = "alpha/" A2 "/alpha.js", .size = 11, .order = 2},
};
static struct registry_tag alpha_tags[] = {{"latest", A2}, {"prod", A1}, {"v1", A1}, {"v2", A2}};

static struct registry_revision beta_revs[] = {
    {.hex = B1, .tag = "latest", .path = "beta/" B1 "/beta.js", .order = 1},
    {.hex = B2, .tag = "latest", .path = "beta/" B2 "/beta.js", .order = 2},
    {.hex = B3, .tag = "x", .path = "beta/" B3 "/beta.js", .order = 3},
};
static struct registry_tag beta_tags[] = {{"latest", B2}, {"x", B3}};

static struct registry_revision cafe_revs[] = {
    {.hex = C1, .tag = "latest", .path = "cafebabecafe/" C1 "/cafebabecafe.js", .order = 1},
};
static struct registry_tag cafe_tags[] = {{"latest", C1}};

static struct registry_revision gamma_revs[] = {
    {.hex = G1,
     .tag = "broken",
     .path = "gamma/" G1 "/gamma.js",
     .order = 1,
     .invalid = true,
     .invalid_reason = "the file gamma/x/gamma.js is missing"},
    {.hex = G2, .tag = "latest", .path = "gamma/" G2 "/gamma.js", .order = 2},
};
static struct registry_tag gamma_tags[] = {{"broken", G1}, {"latest", G2}};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

#define STRATEGY(n, t, r)                                                                          \
    {                                                                                              \
        .refs = 1, .name = n, .tags = t, .ntags = COUNT(t), .revisions = r, .nrevisions = COUNT(r) \
    }
static struct registry_strategy alpha = STRATEGY("alpha", alpha_tags, alpha_revs);
static struct registry_strategy beta = STRATEGY("beta", beta_tags, beta_revs);
static struct registry_strategy cafe = STRATEGY("cafebabecafe", cafe_tags, cafe_revs);
static struct registry_strategy gamma_st = STRATEGY("gamma", gamma_tags, gamma_revs);
static struct registry_strategy *all[] = {&alpha, &beta, &cafe, &gamma_st};
static struct registry snapshot = {1, 7, all, COUNT(all)};

static struct registry_resolution resolve_ok(const char *text)
{
    struct registry_resolution r;
    struct err err = ERR_INIT;
    if (registry_resolve_text(&snapshot, text, &r, &err) != 0)
        fail_msg("'%s' did not resolve: %s", text, err.message);
    assert_non_null(r.strategy);
    assert_non_null(r.revision);
    return r;
}

static void resolves_to(const char *text, const char *name, const char *hex, const char *tag)
{
    struct registry_resolution r = resolve_ok(text);
    assert_string_equal(r.strategy->name, name);
    assert_string_equal(r.revision->hex, hex);
    if (tag)
        assert_string_equal(r.tag, tag);
    else
        assert_null(r.tag);
}

static void fails_with(const char *text, enum err_kind kind, const char *needle, struct err *err)
{
    struct registry_resolution r;
    memset(&r, 0x5a, sizeof r);
    if (registry_resolve_text(&snapshot, text, &r, err) == 0)
        fail_msg("'%s' resolved, expected %s", text, err_kind_name(kind));
    if (err->kind != kind)
        fail_msg("'%s': expected %s, got %s: %s", text, err_kind_name(kind),
                 err_kind_name(err->kind), err->message);
    if (needle && !strstr(err->message, needle))
        fail_msg("'%s': message does not mention '%s': %s", text, needle, err->message);
    assert_null(r.strategy);
    assert_null(r.revision);
}

static void test_lookups(void **state)
{
    (void)state;
    assert_ptr_equal(registry_find_strategy(&snapshot, "beta"), &beta);
    assert_null(registry_find_strategy(&snapshot, "delta"));
    assert_null(registry_find_strategy(&snapshot, NULL));
    assert_ptr_equal(registry_find_revision(&alpha, A1), &alpha_revs[0]);
    assert_null(registry_find_revision(&alpha, B1));
    assert_null(registry_find_revision(&alpha, "abcdef012345"));
    assert_null(registry_find_revision(NULL, A1));
    assert_string_equal(registry_tag_target(&alpha, "prod"), A1);
    assert_null(registry_tag_target(&alpha, "nope"));
    assert_null(registry_tag_target(NULL, "latest"));
    assert_ptr_equal(registry_latest(&alpha), &alpha_revs[1]);
    json_t *tags = registry_tags_of(&alpha, A1);
    json_t *expected = json_pack("[s, s]", "prod", "v1");
    assert_true(json_equal(tags, expected));
    json_decref(tags);
    json_decref(expected);
    tags = registry_tags_of(&beta, B1);
    assert_int_equal(json_array_size(tags), 0);
    json_decref(tags);
}

static void test_name_and_tags(void **state)
{
    (void)state;
    resolves_to("alpha", "alpha", A2, "latest");
    resolves_to("alpha:latest", "alpha", A2, "latest");
    resolves_to("alpha:prod", "alpha", A1, "prod");
    resolves_to("beta:x", "beta", B3, "x");
    /* the tag pointer lives in the snapshot */
    struct registry_resolution r = resolve_ok("alpha:v1");
    assert_ptr_equal(r.tag, alpha_tags[2].tag);
}

static void test_hashes(void **state)
{
    (void)state;
    resolves_to("alpha@sha256:" A1, "alpha", A1, NULL);
    resolves_to("alpha@" A2, "alpha", A2, NULL);
    resolves_to("alpha@abcdef0123451", "alpha", A2, NULL);
    resolves_to("beta@abcdef0123450000", "beta", B1, NULL);
    resolves_to("alpha@abcdef0123450000", "alpha", A1, NULL);
    resolves_to("sha256:" B2, "beta", B2, NULL);
    resolves_to("sha256:0123456789ab", "beta", B2, NULL);
    /* a bare hex prefix that is no strategy's name */
    resolves_to("0123456789abcdef", "beta", B2, NULL);
    resolves_to("cafebabecafe66", "beta", B3, NULL);
    /* ... but a strategy of that name wins */
    resolves_to("cafebabecafe", "cafebabecafe", C1, "latest");
}

static void test_ambiguous_prefix(void **state)
{
    (void)state;
    struct err err = ERR_INIT;
    fails_with("alpha@abcdef012345", ERR_CONFLICT, "abcdef012345", &err);
    json_t *expected =
        json_pack("{s:[s, s]}", "candidates", "alpha@sha256:" A1, "alpha@sha256:" A2);
    assert_true(json_equal(err.details, expected));
    json_decref(expected);
    err_clear(&err);

    /* across strategies, when no name narrows it down */
    fails_with("sha256:abcdef0123450000", ERR_CONFLICT, NULL, &err);
    expected = json_pack("{s:[s, s]}", "candidates", "alpha@sha256:" A1, "beta@sha256:" B1);
    assert_true(json_equal(err.details, expected));
    json_decref(expected);
    err_clear(&err);

    fails_with("abcdef012345", ERR_CONFLICT, NULL, &err);
    assert_int_equal(json_array_size(json_object_get(err.details, "candidates")), 3);
    err_clear(&err);
}

static void test_unknown(void **state)
{
    (void)state;
    struct err err = ERR_INIT;
    fails_with("delta", ERR_NOT_FOUND, "delta", &err);
    err_clear(&err);
    fails_with("delta:v1", ERR_NOT_FOUND, "delta", &err);
    err_clear(&err);
    fails_with("alpha:v9", ERR_NOT_FOUND, "v9", &err);
    err_clear(&err);
    fails_with("alpha@" B2, ERR_NOT_FOUND, B2, &err);
    err_clear(&err);
    fails_with("delta@" A1, ERR_NOT_FOUND, "delta", &err);
    err_clear(&err);
    fails_with("sha256:fedcba987654", ERR_NOT_FOUND, "fedcba987654", &err);
    err_clear(&err);
    fails_with("fedcba987654", ERR_NOT_FOUND, "fedcba987654", &err);
    err_clear(&err);
    fails_with("alpha@sha256:", ERR_INVALID, NULL, &err);
    err_clear(&err);
    fails_with("alpha/..", ERR_INVALID, NULL, &err);
    err_clear(&err);
}

static void test_invalid_revision_is_never_resolved(void **state)
{
    (void)state;
    struct err err = ERR_INIT;
    fails_with("gamma:broken", ERR_CONFLICT, "is missing", &err);
    assert_string_equal(json_string_value(json_object_get(err.details, "hash")), "sha256:" G1);
    assert_string_equal(json_string_value(json_object_get(err.details, "strategy")), "gamma");
    assert_non_null(strstr(json_string_value(json_object_get(err.details, "reason")), "missing"));
    err_clear(&err);
    fails_with("gamma@" G1, ERR_CONFLICT, "invalid", &err);
    err_clear(&err);
    fails_with("sha256:999999999999", ERR_CONFLICT, "invalid", &err);
    err_clear(&err);
    resolves_to("gamma", "gamma", G2, "latest");
}

static void test_resolve_parsed(void **state)
{
    (void)state;
    struct selector sel;
    struct err err = ERR_INIT;
    assert_int_equal(selector_parse("beta:x", &sel, &err), 0);
    struct registry_resolution r;
    assert_int_equal(registry_resolve(&snapshot, &sel, &r, &err), 0);
    assert_string_equal(r.revision->hex, B3);
}

static void test_to_json_order(void **state)
{
    (void)state;
    json_t *doc = registry_to_json(&snapshot);
    assert_non_null(doc);
    char *text = json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER);
    /* strategies sorted, tags sorted, hashes in the order they were added */
    const char *order[] = {"\"alpha\"", "\"beta\"", "\"cafebabecafe\"", "\"gamma\""};
    const char *prev = text;
    for (size_t i = 0; i < COUNT(order); i++) {
        const char *at = strstr(text, order[i]);
        assert_non_null(at);
        assert_true(at >= prev);
        prev = at;
    }
    json_t *beta_json = json_object_get(doc, "beta");
    const char *key;
    json_t *value;
    size_t i = 0;
    const char *expected[] = {"sha256:" B1, "sha256:" B2, "sha256:" B3};
    json_object_foreach(json_object_get(beta_json, "hashes"), key, value)
    {
        assert_string_equal(key, expected[i++]);
        assert_string_equal(json_string_value(json_object_get(value, "path")),
                            beta_revs[i - 1].path);
    }
    assert_string_equal(json_string_value(json_object_get(json_object_get(beta_json, "tags"), "x")),
                        "sha256:" B3);
    free(text);
    json_decref(doc);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lookups),
        cmocka_unit_test(test_name_and_tags),
        cmocka_unit_test(test_hashes),
        cmocka_unit_test(test_ambiguous_prefix),
        cmocka_unit_test(test_unknown),
        cmocka_unit_test(test_invalid_revision_is_never_resolved),
        cmocka_unit_test(test_resolve_parsed),
        cmocka_unit_test(test_to_json_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
