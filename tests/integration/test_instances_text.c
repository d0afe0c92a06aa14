/*
 * Text a strategy hands the gateway, over HTTP: error messages, stacks and
 * log lines reach the snapshot's lastError and the log as valid UTF-8
 * whatever the JavaScript string held. A lone surrogate (a message cut in
 * the middle of an emoji) becomes one U+FFFD and no longer erases
 * lastError, even that of the stop it causes; a NUL is written as \u0000
 * and the text after it kept; a log line over 4096 bytes is cut at a
 * character boundary.
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const streak_config = "runtime:\n"
                                         "  max_consecutive_errors: 5\n"
                                         "providers:\n"
                                         "  - name: sim\n"
                                         "    adapter: simulated\n"
                                         "    config:\n"
                                         "      symbols: [BTC-USDT]\n"
                                         "      seed: 5\n"
                                         "      tickRate: 200\n";

static const char *const one_worker[] = {"--workers", "1", NULL};

static void start_server(struct tu_server *srv)
{
    struct tu_server_options opts = {.config_yaml = streak_config, .extra_args = one_worker};
    tu_server_start(srv, &opts);
}

/* One module whose handler throws or logs what its `mode` says. */
static void upload_thrower(struct tu_server *srv)
{
    char *src =
        tu_strategy_source("texts", "['Trade']", "[{name: 'mode', type: 'string', required: true}]",
                           "const mode = env.config.mode; let n = 0;",
                           "onTrade() {\n"
                           "  n++;\n"
                           "  if (mode === 'surrogate') {\n"
                           "    if (n < 3) throw new Error('first plain');\n"
                           "    throw new Error('x\\ud800y');\n"
                           "  }\n"
                           "  if (mode === 'nul') {\n"
                           "    if (n === 1) h.log('nul[\\0]after');\n"
                           "    throw new Error('a\\0b');\n"
                           "  }\n"
                           "},");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
}

static void run(struct tu_server *srv, const char *id, const char *mode)
{
    char config[64];
    snprintf(config, sizeof config, "{\"mode\": \"%s\"}", mode);
    json_decref(tu_instance_create(srv, id, "texts", config, NULL, NULL));
    tu_instance_start(srv, id);
}

/* The warn lines of the instance's handler errors. */
static json_t *error_lines(struct tu_server *srv, const char *id, const char *prefix)
{
    json_t *line = tu_wait_log(srv, id, prefix, TU_WAIT_S);
    json_decref(line);
    json_t *all = tu_log_entries(srv, id), *out = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(all, i, e)
    {
        const char *msg = json_string_value(json_object_get(e, "msg"));
        if (msg && strncmp(msg, prefix, strlen(prefix)) == 0)
            json_array_append(out, e);
    }
    json_decref(all);
    return out;
}

static void test_lone_surrogate_keeps_last_error(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    upload_thrower(srv);
    run(srv, "sur", "surrogate");
    json_t *snap = tu_instance_wait_stopped(srv, "sur", TU_WAIT_S);
    assert_string_equal(tu_jstr(snap, "stopReason"), "tooManyErrors");
    /* the stop's own lastError survives, with one U+FFFD for the surrogate */
    assert_true(json_is_object(tu_jget(snap, "lastError")));
    assert_string_equal(tu_jstr(snap, "lastError.message"),
                        "5 consecutive errors; last: Error: x\xEF\xBF\xBDy");
    assert_string_equal(tu_jstr(snap, "lastError.handler"), "onTrade");
    json_decref(snap);
    /* each error's log line carries the message and the stack */
    json_t *lines = error_lines(srv, "sur", "Error: x");
    assert_true(json_array_size(lines) >= 1);
    assert_string_equal(tu_jstr(lines, "0.msg"), "Error: x\xEF\xBF\xBDy");
    assert_non_null(strstr(tu_jstr(lines, "0.stack"), "onTrade"));
    json_decref(lines);
    json_t *line = tu_wait_log(srv, "sur", "instance stopped", TU_WAIT_S);
    assert_non_null(strstr(tu_jstr(line, "error"), "Error: x\xEF\xBF\xBDy"));
    json_decref(line);
    tu_server_stop(srv);
}

static void test_nul_is_escaped_not_a_cut(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    upload_thrower(srv);
    run(srv, "nul", "nul");
    json_t *snap = tu_instance_wait_stopped(srv, "nul", TU_WAIT_S);
    assert_string_equal(tu_jstr(snap, "stopReason"), "tooManyErrors");
    assert_string_equal(tu_jstr(snap, "lastError.message"),
                        "5 consecutive errors; last: Error: a\\u0000b");
    json_decref(snap);
    json_t *lines = error_lines(srv, "nul", "Error: a");
    assert_string_equal(tu_jstr(lines, "0.msg"), "Error: a\\u0000b");
    json_decref(lines);
    lines = error_lines(srv, "nul", "nul[");
    assert_string_equal(tu_jstr(lines, "0.msg"), "nul[\\u0000]after");
    json_decref(lines);
    tu_server_stop(srv);
}

/* The line as logged: cut, marked, valid UTF-8 without U+FFFD, and of
 * the expected bytes. */
static void expect_cut(const json_t *line, const char *unit, size_t units, const char *head)
{
    const char *msg = tu_jstr(line, "msg");
    assert_true(json_is_true(tu_jget(line, "truncated")));
    assert_null(strstr(msg, "\xEF\xBF\xBD"));
    assert_true(strlen(msg) <= 4096);
    size_t hlen = strlen(head), ulen = strlen(unit);
    assert_int_equal(strlen(msg), hlen + units * ulen);
    assert_memory_equal(msg, head, hlen);
    for (size_t i = 0; i < units; i++)
        assert_memory_equal(msg + hlen + i * ulen, unit, ulen);
}

static void test_long_lines_are_cut_at_a_character(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *src = tu_strategy_source("cuts", "['Trade']", "[]",
                                   "h.log('A' + '\\u20ac'.repeat(2000));\n"
                                   "h.log('B' + '\\u{1F600}'.repeat(2000));\n"
                                   "h.log('C' + 'x'.repeat(4094) + '\\u20ac');\n",
                                   "");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    json_decref(tu_instance_create(srv, "cut", "cuts", NULL, NULL, NULL));
    tu_instance_start(srv, "cut");
    json_t *a = tu_wait_log(srv, "cut", "A", TU_WAIT_S);
    json_t *b = tu_wait_log(srv, "cut", "B", TU_WAIT_S);
    json_t *c = tu_wait_log(srv, "cut", "C", TU_WAIT_S);
    expect_cut(a, "\xE2\x82\xAC", 1365, "A");     /* 1 + 4095 bytes */
    expect_cut(b, "\xF0\x9F\x98\x80", 1023, "B"); /* 1 + 4092 */
    expect_cut(c, "x", 4094, "C");                /* the euro would end at 4098 */
    json_decref(a);
    json_decref(b);
    json_decref(c);
    tu_server_stop(srv);
}

/* A file whose lines end in CR alone has, at run time, the lines its
 * author sees: in a handler's error (log line and stack) and in a start
 * that create(env) fails. */
static void test_cr_only_file_positions_at_run_time(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    static const char *const sources[] = {
        "module.exports = {\r"
        "  metadata: { name: 'crs', displayName: 'CR', events: ['Trade'] },\r"
        "  create() {\r"
        "    return {\r"
        "      onTrade() {\r"
        "        throw new Error('boom');\r"
        "      },\r"
        "    };\r"
        "  },\r"
        "};\r",
        "module.exports = {\r"
        "  metadata: { name: 'crc', displayName: 'CR', events: ['Trade'] },\r"
        "  create() {\r"
        "    null.x = 1;\r"
        "  },\r"
        "};\r",
    };
    for (size_t i = 0; i < 2; i++)
        tu_upload_expect(srv, sources[i], NULL, 201, NULL);
    json_decref(tu_instance_create(srv, "crs", "crs", NULL, NULL, NULL));
    tu_instance_start(srv, "crs");
    json_t *line = tu_wait_log(srv, "crs", "Error: boom", TU_WAIT_S);
    assert_int_equal(tu_jint(line, "line"), 6);
    assert_int_equal(tu_jint(line, "column"), 24); /* QuickJS places it at the call */
    assert_non_null(strstr(tu_jstr(line, "stack"), "crs.js:6:24"));
    json_decref(line);

    json_decref(tu_instance_create(srv, "crc", "crc", NULL, NULL, NULL));
    json_t *err = tu_call(srv, "POST", "/strategy/instances/crc/start", 422, "{}");
    assert_int_equal(tu_jint(err, "details.line"), 4);
    assert_int_equal(tu_jint(err, "details.column"), 9); /* at the dot */
    json_decref(err);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_lone_surrogate_keeps_last_error, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_nul_is_escaped_not_a_cut, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_long_lines_are_cut_at_a_character, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_cr_only_file_positions_at_run_time, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
