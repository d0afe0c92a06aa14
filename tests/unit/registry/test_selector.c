#include "testutil.h"

#include "registry/selector.h"

#include <string.h>

#define HEX64 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEX64_UPPER "0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF"

static struct selector parse_ok(const char *text)
{
    struct selector sel;
    struct err err = ERR_INIT;
    if (selector_parse(text, &sel, &err) != 0)
        fail_msg("'%s' did not parse: %s", text, err.message);
    return sel;
}

/* Parses text, expects ERR_INVALID, and checks the message mentions `part`. */
static void parse_bad(const char *text, const char *part)
{
    struct selector sel;
    struct err err = ERR_INIT;
    memset(&sel, 0x5a, sizeof sel);
    if (selector_parse(text, &sel, &err) == 0)
        fail_msg("'%s' parsed, expected an error", text ? text : "(null)");
    assert_int_equal(err.kind, ERR_INVALID);
    if (part && !strstr(err.message, part))
        fail_msg("message for '%s' does not mention '%s': %s", text, part, err.message);
    assert_null(err.details);
    /* Nothing half-parsed is left behind for a careless caller. */
    assert_string_equal(sel.name, "");
    assert_int_equal(sel.hex_len, 0);
    err_clear(&err);
}

static void format_is(const char *text, const char *expected)
{
    struct selector sel = parse_ok(text);
    char out[SELECTOR_TEXT_MAX + 1];
    selector_format(&sel, out, sizeof out);
    assert_string_equal(out, expected);
}

static void test_name_means_latest(void **state)
{
    (void)state;
    struct selector sel = parse_ok("momentum");
    assert_int_equal(sel.kind, SELECTOR_LATEST);
    assert_string_equal(sel.name, "momentum");
    assert_string_equal(sel.tag, "latest");
    assert_false(sel.may_be_prefix);
    assert_false(selector_is_pinned_hash(&sel));
    sel = parse_ok("mean_reversion-2");
    assert_int_equal(sel.kind, SELECTOR_LATEST);
    /* short hex-looking names are names, not prefixes */
    sel = parse_ok("deadbeef");
    assert_int_equal(sel.kind, SELECTOR_LATEST);
    assert_false(sel.may_be_prefix);
}

static void test_name_and_tag(void **state)
{
    (void)state;
    struct selector sel = parse_ok("momentum:v1.2.0");
    assert_int_equal(sel.kind, SELECTOR_TAG);
    assert_string_equal(sel.name, "momentum");
    assert_string_equal(sel.tag, "v1.2.0");
    sel = parse_ok("momentum:Release_2-rc.1");
    assert_string_equal(sel.tag, "Release_2-rc.1");
    sel = parse_ok("momentum:latest");
    assert_int_equal(sel.kind, SELECTOR_TAG);
    assert_string_equal(sel.tag, "latest");
    /* a strategy may be called sha256 as long as its tag is not all hex */
    sel = parse_ok("sha256:prod");
    assert_int_equal(sel.kind, SELECTOR_TAG);
    assert_string_equal(sel.name, "sha256");
}

static void test_name_at_hash(void **state)
{
    (void)state;
    struct selector sel = parse_ok("momentum@sha256:" HEX64);
    assert_int_equal(sel.kind, SELECTOR_HASH);
    assert_string_equal(sel.name, "momentum");
    assert_string_equal(sel.hex, HEX64);
    assert_int_equal(sel.hex_len, 64);
    assert_true(selector_is_pinned_hash(&sel));
    sel = parse_ok("momentum@" HEX64_UPPER);
    assert_string_equal(sel.hex, HEX64);
    assert_true(selector_is_pinned_hash(&sel));
    sel = parse_ok("momentum@0123456789ab");
    assert_int_equal(sel.kind, SELECTOR_HASH);
    assert_int_equal(sel.hex_len, 12);
    assert_string_equal(sel.hex, "0123456789ab");
    assert_false(selector_is_pinned_hash(&sel));
    sel = parse_ok("momentum@sha256:0123456789ABCDEF0");
    assert_string_equal(sel.hex, "0123456789abcdef0");
    assert_int_equal(sel.hex_len, 17);
}

static void test_hash_without_name(void **state)
{
    (void)state;
    struct selector sel = parse_ok("sha256:" HEX64);
    assert_int_equal(sel.kind, SELECTOR_HASH);
    assert_string_equal(sel.name, "");
    assert_int_equal(sel.hex_len, 64);
    sel = parse_ok("sha256:0123456789ab");
    assert_int_equal(sel.hex_len, 12);
    /* uppercase hex is no strategy name, so it can only be a prefix */
    sel = parse_ok("0123456789ABCDEF");
    assert_int_equal(sel.kind, SELECTOR_HASH);
    assert_string_equal(sel.name, "");
    assert_string_equal(sel.hex, "0123456789abcdef");
}

static void test_bare_hex_may_be_prefix(void **state)
{
    (void)state;
    struct selector sel = parse_ok("0123456789ab");
    assert_int_equal(sel.kind, SELECTOR_LATEST);
    assert_string_equal(sel.name, "0123456789ab");
    assert_true(sel.may_be_prefix);
    assert_int_equal(sel.hex_len, 12);
    assert_string_equal(sel.hex, "0123456789ab");
    sel = parse_ok(HEX64);
    assert_int_equal(sel.kind, SELECTOR_LATEST);
    assert_true(sel.may_be_prefix);
    assert_int_equal(sel.hex_len, 64);
    sel = parse_ok("0123456789a");
    assert_false(sel.may_be_prefix);
}

static void test_limits(void **state)
{
    (void)state;
    char name[NAMES_STRATEGY_MAX + 2];
    memset(name, 'a', NAMES_STRATEGY_MAX);
    name[NAMES_STRATEGY_MAX] = '\0';
    struct selector sel = parse_ok(name);
    assert_int_equal(strlen(sel.name), NAMES_STRATEGY_MAX);
    name[NAMES_STRATEGY_MAX] = 'a';
    name[NAMES_STRATEGY_MAX + 1] = '\0';
    parse_bad(name, "longer than 64");

    char text[NAMES_TAG_MAX + 16];
    memcpy(text, "s:", 2);
    memset(text + 2, 'T', NAMES_TAG_MAX);
    text[2 + NAMES_TAG_MAX] = '\0';
    sel = parse_ok(text);
    assert_int_equal(strlen(sel.tag), NAMES_TAG_MAX);
    text[2 + NAMES_TAG_MAX] = 'T';
    text[3 + NAMES_TAG_MAX] = '\0';
    parse_bad(text, "longer than 128");

    char huge[SELECTOR_TEXT_MAX + 10];
    memset(huge, 'a', sizeof huge - 1);
    huge[sizeof huge - 1] = '\0';
    parse_bad(huge, "selector");
}

static void test_malformed_names(void **state)
{
    (void)state;
    parse_bad(NULL, "empty");
    parse_bad("", "empty");
    parse_bad("Momentum", "Momentum");
    parse_bad("-momentum", "-momentum");
    parse_bad("a/b", "path separator");
    parse_bad("a\\b", "path separator");
    parse_bad("../etc/passwd", "path separator");
    parse_bad("..", "'..'");
    parse_bad("a..b", "'..'");
    parse_bad("na me", "' '");
    parse_bad("caf\xc3\xa9", "0xc3");
    parse_bad("a.b", "'.'");
    parse_bad(":tag", "empty strategy name");
    parse_bad("@0123456789ab", "empty strategy name");
    parse_bad("../x:tag", "path separator");
    parse_bad("x/y@0123456789ab", "path separator");
}

static void test_malformed_tags(void **state)
{
    (void)state;
    parse_bad("momentum:", "empty tag");
    parse_bad("momentum:.hidden", ".hidden");
    parse_bad("momentum:v1/x", "path separator");
    parse_bad("momentum:../x", "path separator");
    parse_bad("momentum:a b", "' '");
    parse_bad("momentum:v1:v2", "':'");
    parse_bad("momentum:v1@0123456789ab", "'@'");
}

static void test_malformed_hashes(void **state)
{
    (void)state;
    parse_bad("momentum@", "empty hash");
    parse_bad("momentum@sha256:", "empty hash");
    parse_bad("momentum@0123456789a", "shorter than 12");
    parse_bad("momentum@sha256:abc", "'abc'");
    parse_bad("sha256:0123456789a", "shorter than 12");
    parse_bad("momentum@xyz456789abcdef", "'x'");
    parse_bad("momentum@0123456789ab/cd", "path separator");
    parse_bad("momentum@" HEX64 "0", "longer than 64");
    parse_bad("sha256:" HEX64 "00", "longer than 64");
    parse_bad("momentum@@0123456789ab", "'@'");
    parse_bad("momentum@sha1:0123456789ab", "'s'");
    parse_bad("momentum@01234567 89ab", "' '");
}

static void test_format(void **state)
{
    (void)state;
    format_is("momentum", "momentum");
    format_is("momentum:v1", "momentum:v1");
    format_is("momentum@" HEX64_UPPER, "momentum@sha256:" HEX64);
    format_is("momentum@0123456789ab", "momentum@sha256:0123456789ab");
    format_is("sha256:0123456789AB", "sha256:0123456789ab");
    format_is("0123456789ab", "0123456789ab");
    /* formatting then parsing again gives the same selector */
    struct selector a = parse_ok("momentum@" HEX64_UPPER);
    char out[SELECTOR_TEXT_MAX + 1];
    selector_format(&a, out, sizeof out);
    struct selector b = parse_ok(out);
    assert_memory_equal(&a, &b, sizeof a);
    /* a short buffer is cut, not overrun */
    char small[5];
    selector_format(&a, small, sizeof small);
    assert_string_equal(small, "mome");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_means_latest),      cmocka_unit_test(test_name_and_tag),
        cmocka_unit_test(test_name_at_hash),           cmocka_unit_test(test_hash_without_name),
        cmocka_unit_test(test_bare_hex_may_be_prefix), cmocka_unit_test(test_limits),
        cmocka_unit_test(test_malformed_names),        cmocka_unit_test(test_malformed_tags),
        cmocka_unit_test(test_malformed_hashes),       cmocka_unit_test(test_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
