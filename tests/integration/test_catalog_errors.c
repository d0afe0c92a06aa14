/*
 * Bad input to the catalogue API: every one gets a clear JSON error
 * {"error": "...", "details": {...}} with the right status, and none of them
 * changes anything (registry.json, the strategies tree, the listing and the
 * export are compared before and after).
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MIB (1024u * 1024u)

/* A catalogue to protect: "momo" with two revisions and a prod tag. */
static void seed(struct tu_server *srv)
{
    char *a = tu_module_source("momo", "v1", NULL);
    char *b = tu_module_source("momo", "v2", "onTrade() {},");
    tu_upload_expect(srv, a, NULL, 201, NULL);
    tu_upload_expect(srv, b, "{\"aliases\": [\"prod\"]}", 201, NULL);
    free(a);
    free(b);
}

static void send_raw(struct tu_server *srv, struct tu_response *res, const char *method,
                     const char *path, const char *body)
{
    struct tu_request_options o = {.body = body, .body_len = body ? strlen(body) : 0};
    tu_request(srv, res, method, path, &o);
}

/* ------------------------------------------------------------ bad JSON */

/* The second ',' on line 3 is at column 15. */
static const char *const BAD_JSON = "{\n"
                                    "  \"source\": \"x\",\n"
                                    "  \"tag\": \"v1\",,\n"
                                    "}";

static void expect_position(const struct tu_response *res, int line, int column, const char *what)
{
    const char *error = json_string_value(json_object_get(res->json, "error"));
    const json_t *details = json_object_get(res->json, "details");
    json_t *l = json_object_get(details, "line"), *c = json_object_get(details, "column");
    bool in_details = json_is_integer(l) && json_is_integer(c) && json_integer_value(l) == line &&
                      json_integer_value(c) == column;
    char want_line[32], want_column[32];
    snprintf(want_line, sizeof want_line, "line %d", line);
    snprintf(want_column, sizeof want_column, "column %d", column);
    bool in_message = error && strstr(error, want_line) && strstr(error, want_column);
    if (!in_details && !in_message)
        fail_msg("%s: the error does not say line %d, column %d: %s", what, line, column,
                 res->body);
}

static void test_invalid_json_says_where(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    seed(srv);
    struct {
        const char *method, *path;
    } endpoints[] = {
        {"POST", "/strategies/modules"},        {"PUT", "/strategies/modules/momo"},
        {"PUT", "/strategies/modules/momo:v1"}, {"PUT", "/strategies/modules/momo/tags/prod"},
        {"POST", "/strategies/refresh"},
    };
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    for (size_t i = 0; i < sizeof endpoints / sizeof endpoints[0]; i++) {
        char *what = tu_path("%s %s with invalid JSON", endpoints[i].method, endpoints[i].path);
        struct tu_response res;
        send_raw(srv, &res, endpoints[i].method, endpoints[i].path, BAD_JSON);
        tu_assert_error(&res, 400);
        expect_position(&res, 3, 15, what);
        tu_response_free(&res);

        /* cut short, and not UTF-8 */
        send_raw(srv, &res, endpoints[i].method, endpoints[i].path, "{\"source\": \"abc");
        tu_assert_error(&res, 400);
        tu_response_free(&res);
        send_raw(srv, &res, endpoints[i].method, endpoints[i].path, "{\"source\": \"\xff\xfe\"}");
        tu_assert_error(&res, 400);
        tu_response_free(&res);
        free(what);
    }
    tu_catalog_expect_same(srv, &before, "requests with invalid JSON");
    tu_catalog_state_free(&before);
    tu_server_stop(srv);
}

/* ----------------------------------------------------- bad upload bodies */

static void test_bad_upload_fields_are_400(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    seed(srv);
    /* A module that would be accepted, so that only the field is at fault. */
    char *src = tu_module_source("momo", NULL, "onTicker() {},");
    json_t *s = json_string(src);
    char *q = json_dumps(s, JSON_ENCODE_ANY);
    json_decref(s);
    const char *fields[] = {
        "\"tag\": 5",
        "\"tag\": \"bad tag\"",
        "\"tag\": \"../x\"",
        "\"tag\": \"a/b\"",
        "\"tag\": \"\"",
        "\"tag\": \".hidden\"",
        "\"aliases\": \"prod\"",
        "\"aliases\": [1]",
        "\"aliases\": [\"ok\", \"bad tag\"]",
        "\"aliases\": [\"..\"]",
        "\"reassignTags\": {\"v1\": true}",
        "\"reassignTags\": [\"a/b\"]",
        "\"promoteLatest\": \"yes\"",
        "\"promoteLatest\": 1",
        "\"name\": 7",
        "\"name\": \"Momo\"",
        "\"name\": \"other\"",
        /* a NUL would cut them to "prod" and "v9": refused, not cut */
        "\"aliases\": [\"prod\\u0000evil\"]",
        "\"tag\": \"v9\\u0000x\"",
    };
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        char *body = tu_path("{\"source\": %s, %s}", q, fields[i]);
        struct tu_response res;
        send_raw(srv, &res, "POST", "/strategies/modules", body);
        if (res.status != 400)
            fail_msg("upload with {%s}: expected 400, got %ld: %s", fields[i], res.status,
                     res.body);
        tu_assert_error(&res, 400);
        tu_response_free(&res);
        send_raw(srv, &res, "PUT", "/strategies/modules/momo", body);
        if (res.status != 400)
            fail_msg("PUT /strategies/modules/momo with {%s}: expected 400, got %ld: %s", fields[i],
                     res.status, res.body);
        tu_assert_error(&res, 400);
        tu_response_free(&res);
        free(body);
    }
    const char *bodies[] = {
        "",
        "   ",
        "[]",
        "\"text\"",
        "null",
        "42",
        "{}",
        "{\"source\": 42}",
        "{\"source\": null}",
        "{\"source\": [\"a\"]}",
        "{\"name\": \"momo\"}",
    };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        struct tu_response res;
        send_raw(srv, &res, "POST", "/strategies/modules", bodies[i]);
        if (res.status != 400)
            fail_msg("upload with body '%s': expected 400, got %ld: %s", bodies[i], res.status,
                     res.body);
        tu_assert_error(&res, 400);
        /* valid JSON that is not an object is said to be that, not invalid */
        bool scalar = bodies[i][0] == '[' || bodies[i][0] == '"' || bodies[i][0] == 'n' ||
                      bodies[i][0] == '4';
        if (scalar &&
            !strstr(tu_jstr(res.json, "error"), "expected a JSON object at the top level"))
            fail_msg("upload with body '%s': %s", bodies[i], tu_jstr(res.json, "error"));
        tu_response_free(&res);
    }
    /* No body at all. */
    struct tu_response res;
    tu_request(srv, &res, "POST", "/strategies/modules", NULL);
    tu_assert_error(&res, 400);
    tu_response_free(&res);
    /* a tag that contradicts the source's own names the field */
    char *tagged = tu_module_source("momo", "v7", "onTicker() {},");
    tu_send_json(srv, &res, "POST", "/strategies/modules",
                 json_pack("{s:s, s:s}", "source", tagged, "tag", "v8"));
    tu_assert_error(&res, 400);
    assert_string_equal(tu_jstr(res.json, "details.field"), "tag");
    tu_response_free(&res);
    free(tagged);
    tu_catalog_expect_same(srv, &before, "uploads with bad fields");
    tu_catalog_state_free(&before);

    /* The same module with good fields is accepted. */
    char *body = tu_path("{\"source\": %s, \"tag\": \"v3\", \"aliases\": [\"ok\"]}", q);
    send_raw(srv, &res, "POST", "/strategies/modules", body);
    tu_assert_status(&res, 201);
    tu_response_free(&res);
    free(body);
    free(q);
    free(src);
    tu_server_stop(srv);
}

/* -------------------------------------------------------- body limits */

/* An upload body of exactly `size` bytes carrying a valid module padded
 * with a comment. */
static char *sized_upload(size_t size)
{
    char *module = tu_module_source("big", "v1", NULL);
    json_t *probe = json_pack("{s:s}", "source", module);
    char *text = json_dumps(probe, JSON_COMPACT);
    /* "// " + padding + "\n" adds 3 + pad + 2 (the newline is escaped). */
    size_t base = strlen(text) + 5;
    json_decref(probe);
    free(text);
    assert_true(size > base);
    size_t pad = size - base;
    char *padding = malloc(pad + 1);
    memset(padding, 'a', pad);
    padding[pad] = '\0';
    char *source = tu_path("%s// %s\n", module, padding);
    json_t *body = json_pack("{s:s}", "source", source);
    text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    assert_int_equal(strlen(text), size);
    free(source);
    free(padding);
    free(module);
    return text;
}

static void test_body_over_one_mib_is_413(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    seed(srv);
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);

    char *over = sized_upload(MIB + 1);
    struct tu_request_options o = {.body = over, .body_len = strlen(over)};
    struct tu_response res;
    tu_request(srv, &res, "POST", "/strategies/modules", &o);
    tu_assert_error(&res, 413);
    tu_response_free(&res);

    o.chunked = true;
    tu_request(srv, &res, "POST", "/strategies/modules", &o);
    tu_assert_error(&res, 413);
    tu_response_free(&res);

    char *far = sized_upload(3 * MIB);
    struct tu_request_options f = {.body = far, .body_len = strlen(far), .chunked = true};
    tu_request(srv, &res, "PUT", "/strategies/modules/momo", &f);
    tu_assert_error(&res, 413);
    tu_response_free(&res);
    tu_catalog_expect_same(srv, &before, "bodies over 1 MiB");
    tu_catalog_state_free(&before);

    /* The server still answers, and exactly 1 MiB is within the limit. */
    json_decref(tu_get_json(srv, 200, "/healthz"));
    char *limit = sized_upload(MIB);
    struct tu_request_options l = {.body = limit, .body_len = strlen(limit)};
    tu_request(srv, &res, "POST", "/strategies/modules", &l);
    tu_assert_status(&res, 201);
    tu_response_free(&res);
    free(limit);
    free(far);
    free(over);
    tu_server_stop(srv);
}

/* -------------------------------------------------------------- routes */

static void test_unknown_routes_are_404(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    seed(srv);
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    struct {
        const char *method, *path;
    } cases[] = {
        {"GET", "/nope"},
        {"POST", "/nope"},
        {"GET", "/strategies/momo/extra"},
        {"GET", "/strategies/modules/momo/nothing"},
        {"GET", "/strategies/modules/momo/tags"},
        {"DELETE", "/strategies/modules/momo/tags/v1/more"},
        {"GET", "/strategies/modules/momo/source/more"},
        {"GET", "/strategiesx"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tu_response res;
        tu_request(srv, &res, cases[i].method, cases[i].path, NULL);
        if (res.status != 404)
            fail_msg("%s %s: expected 404, got %ld: %s", cases[i].method, cases[i].path, res.status,
                     res.body);
        tu_assert_error(&res, 404);
        tu_response_free(&res);
    }
    tu_catalog_expect_same(srv, &before, "requests for unknown routes");
    tu_catalog_state_free(&before);
    tu_server_stop(srv);
}

/* Fails unless the Allow header lists exactly the methods (any order). */
static void expect_allow(const struct tu_response *res, const char *const *methods,
                         const char *what)
{
    char *allow = tu_header(res, "Allow");
    if (!allow)
        fail_msg("%s: 405 without an Allow header", what);
    size_t want = 0, got = 0;
    while (methods[want])
        want++;
    char *save = NULL;
    for (char *part = strtok_r(allow, ",", &save); part; part = strtok_r(NULL, ",", &save)) {
        while (*part == ' ')
            part++;
        size_t n = strlen(part);
        while (n > 0 && part[n - 1] == ' ')
            part[--n] = '\0';
        bool known = false;
        for (size_t i = 0; i < want; i++)
            known = known || strcmp(part, methods[i]) == 0;
        if (!known)
            fail_msg("%s: Allow lists '%s', which is not allowed there", what, part);
        got++;
    }
    if (got != want)
        fail_msg("%s: Allow lists %zu methods, expected %zu", what, got, want);
    free(allow);
}

static void test_wrong_method_is_405_with_allow(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    seed(srv);
    static const char *const get[] = {"GET", "HEAD", NULL};
    static const char *const get_post[] = {"GET", "HEAD", "POST", NULL};
    static const char *const put_delete[] = {"PUT", "DELETE", NULL};
    static const char *const get_put_delete[] = {"GET", "HEAD", "PUT", "DELETE", NULL};
    struct {
        const char *method, *path;
        const char *const *allow;
    } cases[] = {
        {"DELETE", "/strategies", get},
        {"POST", "/strategies", get},
        {"PATCH", "/strategies/modules", get_post},
        {"PUT", "/strategies/modules", get_post},
        {"DELETE", "/strategies/modules", get_post},
        {"POST", "/healthz", get},
        {"POST", "/strategies/registry", get},
        {"PUT", "/strategies/momo", get},
        {"POST", "/strategies/modules/momo", get_put_delete},
        {"PATCH", "/strategies/modules/momo", get_put_delete},
        {"POST", "/strategies/modules/momo/source", get},
        {"DELETE", "/strategies/modules/momo/source", get},
        {"GET", "/strategies/modules/momo/tags/prod", put_delete},
        {"POST", "/strategies/modules/momo/tags/prod", put_delete},
    };
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *what = tu_path("%s %s", cases[i].method, cases[i].path);
        struct tu_response res;
        tu_request(srv, &res, cases[i].method, cases[i].path, NULL);
        if (res.status != 405)
            fail_msg("%s: expected 405, got %ld: %s", what, res.status, res.body);
        tu_assert_error(&res, 405);
        expect_allow(&res, cases[i].allow, what);
        tu_response_free(&res);
        free(what);
    }
    tu_catalog_expect_same(srv, &before, "requests with the wrong method");
    tu_catalog_state_free(&before);
    tu_server_stop(srv);
}

/* /strategies/refresh, /strategies/registry and /strategies/modules are
 * paths of their own, not strategies named so: a method they do not have
 * is a 405 naming only theirs. */
static void test_reserved_paths_are_not_strategy_names(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    seed(srv);
    struct {
        const char *method, *path, *allow;
    } cases[] = {
        {"GET", "/strategies/refresh", "POST"},
        {"DELETE", "/strategies/refresh", "POST"},
        {"PUT", "/strategies/refresh", "POST"},
        {"DELETE", "/strategies/registry", "GET, HEAD"},
        {"PUT", "/strategies/registry", "GET, HEAD"},
    };
    /* Every case is tried; the failures are reported together. */
    char *report = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&report, &n);
    int failures = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tu_response res;
        tu_request(srv, &res, cases[i].method, cases[i].path, NULL);
        char *allow = tu_header(&res, "Allow");
        bool allow_ok = allow && strcmp(allow, cases[i].allow) == 0;
        if (res.status != 405 || !allow_ok) {
            fprintf(mem, "  %s %s: expected 405 with Allow: %s, got %ld (Allow: %s) %.200s\n",
                    cases[i].method, cases[i].path, cases[i].allow, res.status,
                    allow ? allow : "none", res.body);
            failures++;
        } else {
            tu_assert_error(&res, 405);
        }
        free(allow);
        tu_response_free(&res);
    }
    fclose(mem);
    if (failures)
        fail_msg("%d of %zu requests for a method a reserved path does not have:\n%s", failures,
                 sizeof cases / sizeof cases[0], report);
    free(report);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------------ HEAD */

/* HEAD is GET without the body (RFC 9110 9.3.2) on every path with a GET:
 * same status and headers, no body; a path without a GET answers HEAD as
 * any other method it does not have. */
static void test_head_is_get_without_the_body(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    seed(srv);
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    struct {
        const char *path;
        long status;
    } cases[] = {
        {"/healthz", 200},
        {"/strategies", 200},
        {"/strategies/momo", 200},
        {"/strategies/modules", 200},
        {"/strategies/modules/momo:prod", 200},
        {"/strategies/modules/momo/source", 200},
        {"/strategies/modules/momo/usage", 200},
        {"/strategies/registry", 200},
        {"/strategies/modules/nosuch", 404},
        {"/strategies/modules/Bad%20Name", 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct tu_response get, head;
        tu_request(srv, &get, "GET", cases[i].path, NULL);
        tu_request(srv, &head, "HEAD", cases[i].path, NULL);
        if (head.status != cases[i].status || get.status != cases[i].status)
            fail_msg("HEAD %s: %ld (GET: %ld), expected %ld", cases[i].path, head.status,
                     get.status, cases[i].status);
        if (head.len != 0)
            fail_msg("HEAD %s came with a body of %zu bytes", cases[i].path, head.len);
        char *head_type = tu_header(&head, "Content-Type");
        char *get_type = tu_header(&get, "Content-Type");
        char *length = tu_header(&head, "Content-Length");
        if (!head_type || !get_type || strcmp(head_type, get_type) != 0)
            fail_msg("HEAD %s: Content-Type '%s', GET's is '%s'", cases[i].path,
                     head_type ? head_type : "(none)", get_type ? get_type : "(none)");
        if (!length || strtoul(length, NULL, 10) != get.len)
            fail_msg("HEAD %s: Content-Length %s, GET's body is %zu bytes", cases[i].path,
                     length ? length : "(none)", get.len);
        free(head_type);
        free(get_type);
        free(length);
        tu_response_free(&get);
        tu_response_free(&head);
    }
    struct tu_response res;
    tu_request(srv, &res, "HEAD", "/metrics", NULL);
    tu_assert_status(&res, 200);
    assert_int_equal(res.len, 0);
    tu_response_free(&res);
    /* a path without a GET: 405 with its own methods; no path: 404 */
    tu_request(srv, &res, "HEAD", "/strategies/refresh", NULL);
    tu_assert_status(&res, 405);
    char *allow = tu_header(&res, "Allow");
    assert_non_null(allow);
    assert_string_equal(allow, "POST");
    free(allow);
    tu_response_free(&res);
    tu_request(srv, &res, "HEAD", "/nowhere", NULL);
    tu_assert_status(&res, 404);
    tu_response_free(&res);
    tu_catalog_expect_same(srv, &before, "HEAD requests");
    tu_catalog_state_free(&before);
    tu_server_stop(srv);
}

/* ---------------------------------------------------- refresh failures */

/* A refresh whose registry.json cannot be taken keeps the last good
 * catalogue in service either way, but says whose fault it is: a file that
 * does not parse conflicts with the request (409), a file that cannot even
 * be read (here a symlink loop, ELOOP) is the gateway's failure (500). */
static void test_refresh_failure_statuses(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    seed(srv);
    char *reg = tu_path("%s/registry.json", srv->strategies_dir);
    char *kept = tu_path("%s/registry.json.kept", srv->root);
    assert_int_equal(rename(reg, kept), 0);

    assert_int_equal(symlink("registry.json", reg), 0);
    json_t *r = tu_ops_refresh(srv, "{}", 500);
    assert_true(json_is_true(tu_jget(r, "details.servingPrevious")));
    json_decref(r);
    json_decref(tu_get_json(srv, 200, "/strategies/modules/momo:prod"));
    assert_int_equal(unlink(reg), 0);

    tu_write_text(reg, "{\"momo\": ");
    r = tu_ops_refresh(srv, "{}", 409);
    assert_true(json_is_true(tu_jget(r, "details.servingPrevious")));
    json_decref(r);
    json_decref(tu_get_json(srv, 200, "/strategies/modules/momo:prod"));

    assert_int_equal(rename(kept, reg), 0);
    json_decref(tu_ops_refresh(srv, "{}", 200));
    free(kept);
    free(reg);
    tu_server_stop(srv);
}

/* --------------------------------------------------- strategy names */

static void test_bad_strategy_names_are_400(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    seed(srv);
    const char *names[] = {"Momo", "mo%24mo", "momo%2Fv1", "%2E%2E", "..", "-momo", "momo%00"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        char *path = tu_path("/strategies/%s", names[i]);
        struct tu_response res;
        tu_request(srv, &res, "GET", path, NULL);
        if (res.status != 400)
            fail_msg("GET %s: expected 400, got %ld: %s", path, res.status, res.body);
        tu_assert_error(&res, 400);
        tu_response_free(&res);
        free(path);
    }
    tu_server_stop(srv);
}

/* ---------------------------------------------------- query parameters */

static void test_bad_listing_parameters_are_400(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    seed(srv);
    const char *queries[] = {
        "limit=-1", "limit=abc",         "limit=1.5", "offset=-1",
        "offset=x", "runningOnly=maybe", "hash=xyz",  "hash=sha256:zz",
    };
    for (size_t i = 0; i < sizeof queries / sizeof queries[0]; i++) {
        struct tu_response res;
        tu_get(srv, &res, "/strategies/modules?%s", queries[i]);
        if (res.status != 400)
            fail_msg("GET /strategies/modules?%s: expected 400, got %ld: %s", queries[i],
                     res.status, res.body);
        tu_assert_error(&res, 400);
        tu_response_free(&res);
    }
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_invalid_json_says_where, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_bad_upload_fields_are_400, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_body_over_one_mib_is_413, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_unknown_routes_are_404, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_wrong_method_is_405_with_allow, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_reserved_paths_are_not_strategy_names, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_bad_strategy_names_are_400, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_bad_listing_parameters_are_400, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_head_is_get_without_the_body, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_failure_statuses, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
