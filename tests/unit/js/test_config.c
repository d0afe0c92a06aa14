#include "testutil.h"

#include "core/jsonutil.h"
#include "js/config.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

static json_t *parse(const char *text)
{
    if (strcmp(text, "null") == 0)
        return json_null(); /* jsonutil_parse wants an object or array */
    struct err err = ERR_INIT;
    json_t *value = jsonutil_parse(text, strlen(text), &err);
    if (!value)
        fail_msg("bad JSON in test: %s", err.message);
    return value;
}

/* Metadata with one config field of the given JSON description. */
static json_t *metadata_with(const char *fields_json)
{
    char *text = tu_path("{\"name\":\"x\",\"config\":%s}", fields_json);
    json_t *md = parse(text);
    free(text);
    return md;
}

/* Resolves `instance_json` (NULL for none) and compares the compact result. */
static void expect_resolved(const char *fields_json, const char *instance_json,
                            const char *expected_json)
{
    json_t *md = metadata_with(fields_json);
    json_t *instance = instance_json ? parse(instance_json) : NULL;
    struct err err = ERR_INIT;
    json_t *out = js_config_resolve(md, instance, &err);
    if (!out)
        fail_msg("resolve failed: %s\nfields %s\ninstance %s", err.message, fields_json,
                 instance_json ? instance_json : "(none)");
    char *text = jsonutil_dump(out, NULL);
    if (strcmp(text, expected_json) != 0)
        fail_msg("resolved %s\nexpected %s\nfields %s\ninstance %s", text, expected_json,
                 fields_json, instance_json ? instance_json : "(none)");
    free(text);
    json_decref(out);
    json_decref(instance);
    json_decref(md);
}

static void expect_error(const char *fields_json, const char *instance_json,
                         const char *expected_message)
{
    json_t *md = metadata_with(fields_json);
    json_t *instance = instance_json ? parse(instance_json) : NULL;
    struct err err = ERR_INIT;
    json_t *out = js_config_resolve(md, instance, &err);
    if (out) {
        char *text = jsonutil_dump(out, NULL);
        fail_msg("expected '%s', resolved %s", expected_message, text);
    }
    assert_int_equal(err.kind, ERR_INVALID);
    if (strcmp(err.message, expected_message) != 0)
        fail_msg("message '%s'\nexpected '%s'", err.message, expected_message);
    err_clear(&err);
    json_decref(instance);
    json_decref(md);
}

#define FIELD(type) "[{\"name\":\"f\",\"type\":\"" type "\"}]"

/* --------------------------------------------------------------- types */

static void test_string(void **state)
{
    (void)state;
    expect_resolved(FIELD("string"), "{\"f\":\"abc\"}", "{\"f\":\"abc\"}");
    expect_resolved(FIELD("string"), "{\"f\":\"\"}", "{\"f\":\"\"}");
    expect_error(FIELD("string"), "{\"f\":5}", "config.f: expected string, got int");
    expect_error(FIELD("string"), "{\"f\":true}", "config.f: expected string, got bool");
    expect_error(FIELD("string"), "{\"f\":[\"a\"]}", "config.f: expected string, got array");
    expect_error(FIELD("string"), "{\"f\":{}}", "config.f: expected string, got object");
}

static void test_int(void **state)
{
    (void)state;
    expect_resolved(FIELD("int"), "{\"f\":42}", "{\"f\":42}");
    expect_resolved(FIELD("int"), "{\"f\":-7}", "{\"f\":-7}");
    /* a float with an integral value is an int */
    expect_resolved(FIELD("int"), "{\"f\":5.0}", "{\"f\":5}");
    expect_resolved(FIELD("int"), "{\"f\":1e3}", "{\"f\":1000}");
    expect_error(FIELD("int"), "{\"f\":5.5}", "config.f: expected int, got float");
    expect_error(FIELD("int"), "{\"f\":1e300}", "config.f: expected int, got float");
    expect_error(FIELD("int"), "{\"f\":\"5\"}", "config.f: expected int, got string");
    expect_error(FIELD("int"), "{\"f\":false}", "config.f: expected int, got bool");
}

static void test_float(void **state)
{
    (void)state;
    expect_resolved(FIELD("float"), "{\"f\":0.25}", "{\"f\":0.25}");
    /* ints are floats too, and come out as numbers with a fraction */
    expect_resolved(FIELD("float"), "{\"f\":3}", "{\"f\":3.0}");
    expect_error(FIELD("float"), "{\"f\":\"0.5\"}", "config.f: expected float, got string");
    expect_error(FIELD("float"), "{\"f\":[]}", "config.f: expected float, got array");
}

static void test_bool(void **state)
{
    (void)state;
    expect_resolved(FIELD("bool"), "{\"f\":true}", "{\"f\":true}");
    expect_resolved(FIELD("bool"), "{\"f\":false}", "{\"f\":false}");
    expect_error(FIELD("bool"), "{\"f\":1}", "config.f: expected bool, got int");
    expect_error(FIELD("bool"), "{\"f\":\"true\"}", "config.f: expected bool, got string");
}

#define DURATION                                                                                   \
    "duration such as \"250ms\", \"5s\", \"1h30m\" or a whole number of milliseconds not below 0"

static void test_duration(void **state)
{
    (void)state;
    static const struct {
        const char *given, *ms;
    } ok[] = {
        {"\"250ms\"", "250"},    {"\"5s\"", "5000"},        {"\"1m\"", "60000"},
        {"\"1h\"", "3600000"},   {"\"1h30m\"", "5400000"},  {"\"1m30s\"", "90000"},
        {"\"1s500ms\"", "1500"}, {"\"2h0m5s\"", "7205000"}, {"\"0s\"", "0"},
        {"\"750\"", "750"},      {"1500", "1500"},          {"0", "0"},
        {"2000.0", "2000"},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *instance = tu_path("{\"f\":%s}", ok[i].given);
        char *expected = tu_path("{\"f\":%s}", ok[i].ms);
        expect_resolved(FIELD("duration"), instance, expected);
        free(instance);
        free(expected);
    }
    static const char *const bad[] = {"\"\"",     "\"5\\u00a0s\"", "\"5x\"",   "\"s\"",
                                      "\"5 s\"",  "\"-5s\"",       "\"1.5s\"", "\"30m1h\"",
                                      "\"1m1m\"", "\"1h30\"",      "\"ms\""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *instance = tu_path("{\"f\":%s}", bad[i]);
        json_t *given = parse(instance);
        char *expected = tu_path("config.f: expected " DURATION ", got \"%s\"",
                                 json_string_value(json_object_get(given, "f")));
        expect_error(FIELD("duration"), instance, expected);
        json_decref(given);
        free(expected);
        free(instance);
    }
    /* a negative integer is named: an integer is a duration, this one is not */
    expect_error(FIELD("duration"), "{\"f\":-5}", "config.f: expected " DURATION ", got -5");
    expect_error(FIELD("duration"), "{\"f\":1.5}", "config.f: expected " DURATION ", got 1.5");
    expect_error(FIELD("duration"), "{\"f\":true}", "config.f: expected " DURATION ", got bool");
}

static void test_parse_duration(void **state)
{
    (void)state;
    long long ms = -1;
    assert_int_equal(js_config_parse_duration("250ms", &ms), 0);
    assert_int_equal(ms, 250);
    assert_int_equal(js_config_parse_duration("1h30m", &ms), 0);
    assert_int_equal(ms, 5400000);
    assert_int_equal(js_config_parse_duration("12", &ms), 0);
    assert_int_equal(ms, 12);
    assert_int_equal(js_config_parse_duration("1h1m1s1ms", &ms), 0);
    assert_int_equal(ms, 3661001);
    ms = -1;
    assert_int_equal(js_config_parse_duration("", &ms), -1);
    assert_int_equal(js_config_parse_duration(NULL, &ms), -1);
    assert_int_equal(js_config_parse_duration("1d", &ms), -1);
    assert_int_equal(js_config_parse_duration("5S", &ms), -1);
    assert_int_equal(js_config_parse_duration("99999999999999999999h", &ms), -1);
    assert_int_equal(js_config_parse_duration("9999999999999999999", &ms), -1);
    assert_int_equal(js_config_parse_duration("2562047788016h", &ms), -1); /* overflows ms */
    assert_int_equal(ms, -1);
}

static void test_enum(void **state)
{
    (void)state;
    const char *field = "[{\"name\":\"mode\",\"type\":\"enum\",\"options\":[\"fast\",\"slow\"]}]";
    expect_resolved(field, "{\"mode\":\"slow\"}", "{\"mode\":\"slow\"}");
    expect_error(field, "{\"mode\":\"medium\"}",
                 "config.mode: expected one of fast, slow, got \"medium\"");
    expect_error(field, "{\"mode\":\"Fast\"}",
                 "config.mode: expected one of fast, slow, got \"Fast\"");
    expect_error(field, "{\"mode\":1}", "config.mode: expected one of fast, slow, got int");
}

/* ------------------------------------------------ defaults and required */

static void test_defaults_merge(void **state)
{
    (void)state;
    const char *fields = "[{\"name\":\"size\",\"type\":\"int\",\"default\":10},"
                         "{\"name\":\"window\",\"type\":\"duration\",\"default\":\"5s\"},"
                         "{\"name\":\"ratio\",\"type\":\"float\",\"default\":1},"
                         "{\"name\":\"live\",\"type\":\"bool\"},"
                         "{\"name\":\"mode\",\"type\":\"enum\",\"options\":[\"a\",\"b\"],"
                         "\"default\":\"b\"}]";
    /* no instance config: the defaults, converted; no value and no default: absent */
    expect_resolved(fields, NULL, "{\"size\":10,\"window\":5000,\"ratio\":1.0,\"mode\":\"b\"}");
    expect_resolved(fields, "null", "{\"size\":10,\"window\":5000,\"ratio\":1.0,\"mode\":\"b\"}");
    /* instance values win; declared fields in metadata order, then the rest */
    expect_resolved(fields, "{\"dry_run\":true,\"live\":true,\"size\":3,\"window\":\"1m\"}",
                    "{\"size\":3,\"window\":60000,\"ratio\":1.0,\"live\":true,\"mode\":\"b\","
                    "\"dry_run\":true}");
    /* null means "not given": the default applies */
    expect_resolved(fields, "{\"size\":null}",
                    "{\"size\":10,\"window\":5000,\"ratio\":1.0,\"mode\":\"b\"}");
}

static void test_unknown_keys_are_kept(void **state)
{
    (void)state;
    expect_resolved(FIELD("int"), "{\"dry_run\":true,\"extra\":{\"nested\":[1,2]},\"note\":null}",
                    "{\"dry_run\":true,\"extra\":{\"nested\":[1,2]},\"note\":null}");
    /* metadata without config: everything passes through */
    json_t *md = parse("{\"name\":\"x\"}");
    json_t *instance = parse("{\"a\":1}");
    struct err err = ERR_INIT;
    json_t *out = js_config_resolve(md, instance, &err);
    assert_non_null(out);
    assert_true(json_equal(out, instance));
    /* the result shares nothing with the input */
    assert_ptr_not_equal(json_object_get(out, "a"), json_object_get(instance, "a"));
    json_decref(out);
    out = js_config_resolve(md, NULL, &err);
    assert_int_equal(json_object_size(out), 0);
    json_decref(out);
    json_decref(instance);
    json_decref(md);
}

static void test_required(void **state)
{
    (void)state;
    const char *fields = "[{\"name\":\"key\",\"type\":\"string\",\"required\":true}]";
    expect_resolved(fields, "{\"key\":\"abc\"}", "{\"key\":\"abc\"}");
    expect_error(fields, NULL, "config.key: required, and has neither a value nor a default");
    expect_error(fields, "{\"key\":null}",
                 "config.key: required, and has neither a value nor a default");
    expect_error(fields, "{\"key\":1}", "config.key: expected string, got int");
    /* a default satisfies required */
    expect_resolved("[{\"name\":\"key\",\"type\":\"string\",\"required\":true,\"default\":\"d\"}]",
                    NULL, "{\"key\":\"d\"}");
}

static void test_error_details_name_the_field(void **state)
{
    (void)state;
    json_t *md = metadata_with(FIELD("int"));
    json_t *instance = parse("{\"f\":\"x\"}");
    struct err err = ERR_INIT;
    assert_null(js_config_resolve(md, instance, &err));
    assert_string_equal(json_string_value(json_object_get(err.details, "field")), "config.f");
    assert_int_equal(err_http_status(err.kind), 400);
    err_clear(&err);
    json_decref(instance);
    /* a bad default (validation refuses one; metadata validated under
     * older rules may hold it) is refused the same way, saying whose the
     * value is */
    json_decref(md);
    md = metadata_with("[{\"name\":\"f\",\"type\":\"int\",\"default\":\"x\"}]");
    assert_null(js_config_resolve(md, NULL, &err));
    assert_string_equal(err.message, "config.f: expected int, got string, the module's own "
                                     "default (the instance's config does not set it)");
    assert_string_equal(json_string_value(json_object_get(err.details, "field")), "config.f");
    err_clear(&err);
    /* the instance's own value is the instance's */
    instance = parse("{\"f\":\"y\"}");
    assert_null(js_config_resolve(md, instance, &err));
    assert_string_equal(err.message, "config.f: expected int, got string");
    err_clear(&err);
    json_decref(instance);
    json_decref(md);
}

/* The keys the gateway reads, with the values it takes: the runtime
 * checks instances' values with these, validation modules' defaults. */
static void test_gateway_keys(void **state)
{
    (void)state;
    assert_string_equal(js_config_gateway_key(0), "dry_run");
    assert_string_equal(js_config_gateway_key(1), "memory_limit_mb");
    assert_string_equal(js_config_gateway_key(2), "cpu_budget_ms");
    assert_string_equal(js_config_gateway_key(3), "max_orders_per_second");
    assert_null(js_config_gateway_key(4));
    struct {
        const char *key, *value_json, *expected; /* expected NULL: accepted */
    } cases[] = {
        {"dry_run", "true", NULL},
        {"dry_run", "false", NULL},
        {"dry_run", "null", NULL},
        {"dry_run", "\"true\"", "bool"},
        {"dry_run", "1", "bool"},
        {"memory_limit_mb", "1", NULL},
        {"memory_limit_mb", "65536", NULL},
        {"memory_limit_mb", "16.5", NULL},
        {"memory_limit_mb", "0", "a number of MiB from 1 to 65536"},
        {"memory_limit_mb", "0.5", "a number of MiB from 1 to 65536"},
        {"memory_limit_mb", "65537", "a number of MiB from 1 to 65536"},
        {"memory_limit_mb", "\"8\"", "a number of MiB from 1 to 65536"},
        {"cpu_budget_ms", "0.001", NULL},
        {"cpu_budget_ms", "3600000", NULL},
        {"cpu_budget_ms", "0", "a number of milliseconds above 0 and at most 3600000"},
        {"cpu_budget_ms", "-5", "a number of milliseconds above 0 and at most 3600000"},
        {"cpu_budget_ms", "3600001", "a number of milliseconds above 0 and at most 3600000"},
        {"cpu_budget_ms", "true", "a number of milliseconds above 0 and at most 3600000"},
        {"max_orders_per_second", "1", NULL},
        {"max_orders_per_second", "100000000", NULL},
        {"max_orders_per_second", "0", "a whole number of orders a second from 1 to 100000000"},
        {"max_orders_per_second", "2.5", "a whole number of orders a second from 1 to 100000000"},
        {"max_orders_per_second", "100000001",
         "a whole number of orders a second from 1 to 100000000"},
        {"size", "\"anything\"", NULL},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = tu_path("[%s]", cases[i].value_json);
        json_t *wrapped = parse(text);
        char expected[128] = "";
        bool ok = js_config_gateway_accepts(cases[i].key, json_array_get(wrapped, 0), expected,
                                            sizeof expected);
        if (ok != !cases[i].expected || (!ok && strcmp(expected, cases[i].expected) != 0))
            fail_msg("%s = %s: %s '%s', expected %s", cases[i].key, cases[i].value_json,
                     ok ? "accepted" : "refused", expected,
                     cases[i].expected ? cases[i].expected : "accepted");
        json_decref(wrapped);
        free(text);
    }
    assert_true(js_config_gateway_accepts("dry_run", NULL, NULL, 0));
}

static void test_instance_config_must_be_object(void **state)
{
    (void)state;
    json_t *md = metadata_with(FIELD("int"));
    json_t *instance = parse("[1]");
    struct err err = ERR_INIT;
    assert_null(js_config_resolve(md, instance, &err));
    assert_int_equal(err.kind, ERR_INVALID);
    assert_string_equal(err.message, "config: expected object, got array");
    err_clear(&err);
    json_decref(instance);
    json_decref(md);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_string),
        cmocka_unit_test(test_int),
        cmocka_unit_test(test_float),
        cmocka_unit_test(test_bool),
        cmocka_unit_test(test_duration),
        cmocka_unit_test(test_parse_duration),
        cmocka_unit_test(test_enum),
        cmocka_unit_test(test_defaults_merge),
        cmocka_unit_test(test_unknown_keys_are_kept),
        cmocka_unit_test(test_required),
        cmocka_unit_test(test_error_details_name_the_field),
        cmocka_unit_test(test_instance_config_must_be_object),
        cmocka_unit_test(test_gateway_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
