/*
 * The strategy module catalogue over HTTP: uploads (POST /strategies/modules),
 * what they write to disk, tag rules on upload, validation failures with
 * their diagnostics, and the listings (GET /strategies, /strategies/{name},
 * /strategies/modules).
 *
 * Every test runs its own `stratd serve` on temporary directories.
 */
#include "testutil.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static char *spell(const char *hex)
{
    return tu_path("sha256:%s", hex);
}

static char *real_dir(const char *path)
{
    char buf[PATH_MAX];
    if (!realpath(path, buf))
        fail_msg("realpath %s failed", path);
    return strdup(buf);
}

static void assert_same_dir(const char *reported, const char *expected)
{
    char *a = real_dir(reported), *b = real_dir(expected);
    if (strcmp(a, b) != 0)
        fail_msg("strategyDirectory is '%s', expected the server's --strategies '%s'", reported,
                 expected);
    free(a);
    free(b);
}

/* A revision path is "<name>/<hex>/<name>.js", relative to the strategies
 * directory, or that file's absolute path. */
static void assert_rev_path(const struct tu_server *srv, const char *path, const char *name,
                            const char *hex)
{
    char *rel = tu_path("%s/%s/%s.js", name, hex, name);
    if (strcmp(path, rel) != 0) {
        char *root = real_dir(srv->strategies_dir);
        char *abs = tu_path("%s/%s", root, rel);
        char resolved[PATH_MAX];
        if (path[0] != '/' || !realpath(path, resolved) || strcmp(resolved, abs) != 0)
            fail_msg("revision path is '%s', expected '%s' (or %s)", path, rel, abs);
        free(abs);
        free(root);
    }
    free(rel);
}

static void assert_file_bytes(const struct tu_server *srv, const char *name, const char *hex,
                              const char *expected)
{
    char *path = tu_path("%s/%s/%s/%s.js", srv->strategies_dir, name, hex, name);
    size_t len = 0;
    char *bytes = tu_read_file(path, &len);
    if (!bytes)
        fail_msg("revision file %s does not exist", path);
    if (len != strlen(expected) || memcmp(bytes, expected, len) != 0)
        fail_msg("revision file %s does not hold the uploaded bytes", path);
    free(bytes);
    free(path);
}

static void assert_json_equal(const json_t *actual, const json_t *expected, const char *what)
{
    if (!json_equal((json_t *)actual, (json_t *)expected)) {
        char *a = json_dumps(actual, JSON_COMPACT | JSON_SORT_KEYS);
        char *e = json_dumps(expected, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("%s:\nexpected %s\nactual   %s", what, e, a ? a : "(null)");
    }
}

/* The tags object of a strategy in registry.json on disk. */
static json_t *disk_tags(const struct tu_server *srv, const char *name)
{
    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    json_t *tags = json_incref(json_object_get(json_object_get(reg, name), "tags"));
    json_decref(reg);
    if (!tags)
        fail_msg("registry.json has no strategy '%s'", name);
    return tags;
}

static void assert_tag(const struct tu_server *srv, const char *name, const char *tag,
                       const char *hex)
{
    json_t *tags = disk_tags(srv, name);
    const char *target = json_string_value(json_object_get(tags, tag));
    char *want = hex ? spell(hex) : NULL;
    if (want && (!target || strcmp(target, want) != 0))
        fail_msg("registry.json: %s:%s points at %s, expected %s", name, tag,
                 target ? target : "(nothing)", want);
    if (!want && target)
        fail_msg("registry.json: %s:%s points at %s, expected no such tag", name, tag, target);
    free(want);
    json_decref(tags);
}

/* module.hash of an upload answer, as 64 hex digits. */
static void take_hash(const json_t *body, char hex[65])
{
    const char *spelled = tu_jstr(body, "module.hash");
    if (strlen(spelled) != 71 || strncmp(spelled, "sha256:", 7) != 0)
        fail_msg("module.hash '%s' is not sha256:<64 hex>", spelled);
    memcpy(hex, spelled + 7, 65);
}

static json_t *upload_json(struct tu_server *srv, const char *source, const char *fields,
                           long status)
{
    struct tu_response res;
    tu_upload(srv, &res, source, fields);
    tu_assert_status(&res, status);
    json_t *out = json_incref(res.json);
    tu_response_free(&res);
    if (!out)
        fail_msg("upload answered without a JSON body");
    return out;
}

/* Uploads and expects 4xx/422 with the error shape; the catalogue must be
 * exactly as before. Returns the error body (new reference). */
static json_t *upload_refused(struct tu_server *srv, const char *source, const char *fields,
                              long status, const char *what)
{
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    struct tu_response res;
    tu_upload(srv, &res, source, fields);
    tu_assert_error(&res, status);
    json_t *body = json_incref(res.json);
    tu_response_free(&res);
    tu_catalog_expect_same(srv, &before, what);
    tu_catalog_state_free(&before);
    return body;
}

static long long revision_count(struct tu_server *srv, const char *name)
{
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/%s", name);
    long long n = (long long)json_array_size(tu_jget(m, "revisions"));
    json_decref(m);
    return n;
}

/* Files the server wrote ahead of uploads and has not taken or removed. */
static int upload_temps(const struct tu_server *srv)
{
    char *out = NULL;
    tu_run(&out, "cd '%s' && find . -name '.upload.*' | wc -l", srv->strategies_dir);
    int n = out ? atoi(out) : -1;
    free(out);
    return n;
}

/* A refused upload's file may still be in its writer's hands when the
 * answer comes; the writer removes it then. Waits up to 10 s. */
static void expect_upload_temps_gone(const struct tu_server *srv)
{
    for (int i = 0; i < 1000 && upload_temps(srv) != 0; i++)
        usleep(10000);
    assert_int_equal(upload_temps(srv), 0);
}

/* ------------------------------------------------------------- uploads */

static void test_first_upload_writes_file_and_registry(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *src = tu_module_source("alpha", "v1", NULL);
    char hex[65];
    tu_sha256_hex(src, strlen(src), hex);
    char *spelled = spell(hex);

    json_t *body = upload_json(srv, src, NULL, 201);
    assert_true(json_is_string(json_object_get(body, "status")));
    assert_same_dir(tu_jstr(body, "strategyDirectory"), srv->strategies_dir);
    assert_string_equal(tu_jstr(body, "module.name"), "alpha");
    assert_string_equal(tu_jstr(body, "module.hash"), spelled);
    assert_string_equal(tu_jstr(body, "module.tag"), "v1");
    assert_string_equal(tu_jstr(body, "module.file"), "alpha.js");
    assert_rev_path(srv, tu_jstr(body, "module.path"), "alpha", hex);
    json_decref(body);

    assert_file_bytes(srv, "alpha", hex, src);
    /* the file was written while the module validated, under another name */
    assert_int_equal(upload_temps(srv), 0);
    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    char *rel = tu_path("alpha/%s/alpha.js", hex);
    json_t *want = json_pack("{s:{s:{s:s, s:s}, s:{s:{s:s, s:s}}}}", "alpha", "tags", "latest",
                             spelled, "v1", spelled, "hashes", spelled, "tag", "v1", "path", rel);
    assert_json_equal(reg, want, "registry.json after the first upload");
    json_decref(want);
    json_decref(reg);

    /* The first revision of a strategy is its latest. */
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/alpha");
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), spelled);
    json_decref(m);

    free(rel);
    free(spelled);
    free(src);
    tu_server_stop(srv);
}

static const char *const TREND_V1 =
    "module.exports = {\n"
    "  metadata: {\n"
    "    name: 'trend',\n"
    "    displayName: 'Trend follower',\n"
    "    description: 'Buys strength, sells weakness',\n"
    "    tag: 'v1',\n"
    "    events: ['Trade', 'Ticker'],\n"
    "    config: [\n"
    "      { name: 'window', type: 'int', default: 20 },\n"
    "      { name: 'symbol', type: 'string', required: true, description: 'Instrument' },\n"
    "      { name: 'mode', type: 'enum', options: ['fast', 'slow'], default: 'slow', required: "
    "false },\n"
    "    ],\n"
    "  },\n"
    "  create(env) {\n"
    "    return { onTrade() {} };\n"
    "  },\n"
    "};\n";

static const char *const TREND_V2 = "module.exports = {\n"
                                    "  metadata: {\n"
                                    "    name: 'trend',\n"
                                    "    displayName: 'Trend follower 2',\n"
                                    "    tag: 'v2',\n"
                                    "    events: ['Trade'],\n"
                                    "  },\n"
                                    "  create(env) {\n"
                                    "    return {};\n"
                                    "  },\n"
                                    "};\n";

static const char *const TREND_V3 = "module.exports = {\n"
                                    "  metadata: {\n"
                                    "    name: 'trend',\n"
                                    "    displayName: 'Trend follower 3',\n"
                                    "    tag: 'v3',\n"
                                    "    events: ['Ticker'],\n"
                                    "  },\n"
                                    "  create(env) {\n"
                                    "    return {};\n"
                                    "  },\n"
                                    "};\n";

static void assert_trend_v1_metadata(const json_t *meta)
{
    assert_string_equal(tu_jstr(meta, "name"), "trend");
    assert_string_equal(tu_jstr(meta, "displayName"), "Trend follower");
    assert_string_equal(tu_jstr(meta, "description"), "Buys strength, sells weakness");
    json_t *events = json_pack("[s, s]", "Trade", "Ticker");
    assert_json_equal(tu_jget(meta, "events"), events, "metadata.events");
    json_decref(events);
    json_t *config = tu_jget(meta, "config");
    assert_true(json_is_array(config));
    assert_int_equal(json_array_size(config), 3);
    assert_string_equal(tu_jstr(config, "0.name"), "window");
    assert_string_equal(tu_jstr(config, "0.type"), "int");
    assert_true(json_is_false(tu_jget(config, "0.required")));
    assert_int_equal(tu_jint(config, "0.default"), 20);
    assert_string_equal(tu_jstr(config, "1.name"), "symbol");
    assert_string_equal(tu_jstr(config, "1.type"), "string");
    assert_true(json_is_true(tu_jget(config, "1.required")));
    assert_string_equal(tu_jstr(config, "2.name"), "mode");
    assert_string_equal(tu_jstr(config, "2.type"), "enum");
    assert_true(json_is_false(tu_jget(config, "2.required")));
    assert_string_equal(tu_jstr(config, "2.default"), "slow");
}

static const json_t *find_strategy(const json_t *list, const char *name)
{
    size_t i;
    const json_t *item;
    json_array_foreach(list, i, item)
    {
        if (json_is_string(json_object_get(item, "name")) &&
            strcmp(json_string_value(json_object_get(item, "name")), name) == 0)
            return item;
    }
    return NULL;
}

static void test_strategy_metadata_is_that_of_latest(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    tu_upload_expect(srv, TREND_V1, NULL, 201, NULL);

    json_t *meta = tu_get_json(srv, 200, "/strategies/trend");
    assert_trend_v1_metadata(meta);
    json_decref(meta);
    json_t *list = tu_get_json(srv, 200, "/strategies");
    assert_true(json_is_array(tu_jget(list, "strategies")));
    assert_int_equal(json_array_size(tu_jget(list, "strategies")), 1);
    const json_t *item = find_strategy(tu_jget(list, "strategies"), "trend");
    if (!item)
        fail_msg("GET /strategies does not list 'trend'");
    assert_trend_v1_metadata(item);
    json_decref(list);

    /* A second revision with its own tag leaves latest where it was. */
    tu_upload_expect(srv, TREND_V2, NULL, 201, NULL);
    meta = tu_get_json(srv, 200, "/strategies/trend");
    assert_trend_v1_metadata(meta);
    json_decref(meta);

    /* promoteLatest moves latest, and with it the strategy's metadata. A
     * module without description or config still carries both. */
    tu_upload_expect(srv, TREND_V3, "{\"promoteLatest\": true}", 201, NULL);
    meta = tu_get_json(srv, 200, "/strategies/trend");
    assert_string_equal(tu_jstr(meta, "displayName"), "Trend follower 3");
    assert_true(json_is_string(tu_jget(meta, "description")));
    assert_true(json_is_array(tu_jget(meta, "config")));
    assert_int_equal(json_array_size(tu_jget(meta, "config")), 0);
    json_t *events = json_pack("[s]", "Ticker");
    assert_json_equal(tu_jget(meta, "events"), events, "metadata.events of v3");
    json_decref(events);
    json_decref(meta);

    struct tu_response res;
    tu_get(srv, &res, "/strategies/nosuch");
    tu_assert_error(&res, 404);
    tu_response_free(&res);
    tu_server_stop(srv);
}

static void test_second_revision_keeps_latest_unless_promoted(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a = tu_module_source("alpha", "v1", NULL);
    char *b = tu_module_source("alpha", "v2", "onTrade() {},");
    char *c = tu_module_source("alpha", "v3", "onTicker() {},");
    char ha[65], hb[65], hc[65];
    tu_upload_expect(srv, a, NULL, 201, ha);
    tu_upload_expect(srv, b, NULL, 201, hb);
    assert_tag(srv, "alpha", "latest", ha);
    assert_tag(srv, "alpha", "v1", ha);
    assert_tag(srv, "alpha", "v2", hb);
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/alpha");
    char *sa = spell(ha);
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), sa);
    json_decref(m);

    tu_upload_expect(srv, c, "{\"promoteLatest\": true}", 201, hc);
    assert_tag(srv, "alpha", "latest", hc);
    assert_tag(srv, "alpha", "v1", ha);
    assert_tag(srv, "alpha", "v2", hb);
    assert_tag(srv, "alpha", "v3", hc);
    assert_int_equal(revision_count(srv, "alpha"), 3);
    assert_file_bytes(srv, "alpha", ha, a);
    assert_file_bytes(srv, "alpha", hb, b);
    assert_file_bytes(srv, "alpha", hc, c);
    free(sa);
    free(a);
    free(b);
    free(c);
    tu_server_stop(srv);
}

static void test_identical_bytes_answer_200_and_apply_tags(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *src = tu_module_source("alpha", "v1", NULL);
    char hex[65], again[65];
    tu_upload_expect(srv, src, NULL, 201, hex);

    json_t *body = upload_json(srv, src, "{\"aliases\": [\"stable\"]}", 200);
    char *spelled = spell(hex);
    assert_string_equal(tu_jstr(body, "module.hash"), spelled);
    assert_string_equal(tu_jstr(body, "module.name"), "alpha");
    json_decref(body);
    assert_tag(srv, "alpha", "stable", hex);
    assert_tag(srv, "alpha", "v1", hex);
    assert_tag(srv, "alpha", "latest", hex);

    tu_upload_expect(srv, src, NULL, 200, again);
    assert_string_equal(again, hex);
    assert_int_equal(revision_count(srv, "alpha"), 1);
    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    assert_int_equal(json_object_size(json_object_get(json_object_get(reg, "alpha"), "hashes")), 1);
    json_decref(reg);
    /* Tags on identical bytes follow the same rules as on new bytes. */
    char *other = tu_module_source("alpha", NULL, "onTrade() {},");
    char ho[65], same[65];
    tu_upload_expect(srv, other, "{\"tag\": \"rc\"}", 201, ho);
    assert_tag(srv, "alpha", "latest", hex);
    json_t *body2 = upload_json(srv, other, "{\"promoteLatest\": true}", 200);
    take_hash(body2, same);
    assert_string_equal(same, ho);
    json_decref(body2);
    assert_tag(srv, "alpha", "latest", ho);
    json_decref(upload_refused(srv, other, "{\"tag\": \"v1\"}", 409,
                               "identical bytes with a tag that names another revision"));
    tu_upload_expect(srv, other, "{\"tag\": \"v1\", \"reassignTags\": [\"v1\"]}", 200, same);
    assert_string_equal(same, ho);
    assert_tag(srv, "alpha", "v1", ho);
    assert_tag(srv, "alpha", "rc", ho);
    assert_int_equal(revision_count(srv, "alpha"), 2);
    free(other);
    free(spelled);
    free(src);
    tu_server_stop(srv);
}

static void test_tag_on_another_revision_needs_reassign(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a = tu_module_source("alpha", "v1", NULL);
    char *b = tu_module_source("alpha", "v1", "onTrade() {},");
    char *c = tu_module_source("alpha", NULL, "onTicker() {},");
    char ha[65], hb[65];
    tu_upload_expect(srv, a, NULL, 201, ha);

    /* metadata.tag v1 already names revision a */
    json_decref(upload_refused(srv, b, NULL, 409, "an upload whose metadata.tag is taken"));
    /* the same through the tag field */
    json_decref(upload_refused(srv, c, "{\"tag\": \"v1\"}", 409, "an upload whose tag is taken"));

    tu_upload_expect(srv, b, "{\"reassignTags\": [\"v1\"]}", 201, hb);
    assert_tag(srv, "alpha", "v1", hb);
    assert_tag(srv, "alpha", "latest", ha);
    assert_file_bytes(srv, "alpha", ha, a);
    assert_int_equal(revision_count(srv, "alpha"), 2);
    free(a);
    free(b);
    free(c);
    tu_server_stop(srv);
}

static void test_aliases_move_to_the_new_revision(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a = tu_module_source("alpha", "v1", NULL);
    char *b = tu_module_source("alpha", "v2", "onTrade() {},");
    char ha[65], hb[65];
    json_t *body = upload_json(srv, a, "{\"aliases\": [\"prod\", \"stable\"]}", 201);
    take_hash(body, ha);
    json_decref(body);
    tu_upload_expect(srv, b, "{\"aliases\": [\"prod\"]}", 201, hb);

    char *sa = spell(ha), *sb = spell(hb);
    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    json_t *want_tags = json_pack("{s:s, s:s, s:s, s:s, s:s}", "latest", sa, "v1", sa, "stable", sa,
                                  "prod", sb, "v2", sb);
    assert_json_equal(json_object_get(json_object_get(reg, "alpha"), "tags"), want_tags,
                      "tags after two uploads with aliases");
    json_t *hashes = json_object_get(json_object_get(reg, "alpha"), "hashes");
    assert_string_equal(json_string_value(json_object_get(json_object_get(hashes, sa), "tag")),
                        "v1");
    assert_string_equal(json_string_value(json_object_get(json_object_get(hashes, sb), "tag")),
                        "v2");
    json_decref(want_tags);
    json_decref(reg);
    free(sa);
    free(sb);
    free(a);
    free(b);
    tu_server_stop(srv);
}

static void test_tag_field_and_metadata_tag_must_agree(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a = tu_module_source("alpha", "v1", NULL);
    char *b = tu_module_source("alpha", "v2", "onTrade() {},");
    char *c = tu_module_source("alpha", NULL, "onTicker() {},");
    char *d = tu_module_source("alpha", "v4", "onBalanceUpdate() {},");
    char ha[65], hc[65], hd[65];

    json_t *body = upload_json(srv, a, "{\"tag\": \"v1\"}", 201);
    assert_string_equal(tu_jstr(body, "module.tag"), "v1");
    take_hash(body, ha);
    json_decref(body);

    json_decref(upload_refused(srv, b, "{\"tag\": \"v3\"}", 400,
                               "an upload whose tag field contradicts metadata.tag"));

    body = upload_json(srv, c, "{\"tag\": \"rc1\"}", 201);
    assert_string_equal(tu_jstr(body, "module.tag"), "rc1");
    take_hash(body, hc);
    json_decref(body);

    body = upload_json(srv, d, NULL, 201);
    assert_string_equal(tu_jstr(body, "module.tag"), "v4");
    take_hash(body, hd);
    json_decref(body);

    assert_tag(srv, "alpha", "v1", ha);
    assert_tag(srv, "alpha", "rc1", hc);
    assert_tag(srv, "alpha", "v4", hd);
    assert_tag(srv, "alpha", "v3", NULL);
    assert_tag(srv, "alpha", "v2", NULL);
    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    json_t *hashes = json_object_get(json_object_get(reg, "alpha"), "hashes");
    char *sc = spell(hc);
    assert_string_equal(json_string_value(json_object_get(json_object_get(hashes, sc), "tag")),
                        "rc1");
    free(sc);
    json_decref(reg);
    free(a);
    free(b);
    free(c);
    free(d);
    tu_server_stop(srv);
}

static void test_untagged_upload_takes_latest(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a = tu_module_source("plain", NULL, NULL);
    char *b = tu_module_source("plain", NULL, "onTrade() {},");
    char ha[65], hb[65];

    json_t *body = upload_json(srv, a, NULL, 201);
    assert_string_equal(tu_jstr(body, "module.tag"), "latest");
    take_hash(body, ha);
    json_decref(body);
    char *sa = spell(ha);
    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    char *rel = tu_path("plain/%s/plain.js", ha);
    json_t *want = json_pack("{s:{s:{s:s}, s:{s:{s:s, s:s}}}}", "plain", "tags", "latest", sa,
                             "hashes", sa, "tag", "latest", "path", rel);
    assert_json_equal(reg, want, "registry.json after an untagged upload");
    json_decref(want);
    json_decref(reg);

    body = upload_json(srv, b, NULL, 201);
    assert_string_equal(tu_jstr(body, "module.tag"), "latest");
    take_hash(body, hb);
    json_decref(body);
    char *sb = spell(hb);
    reg = tu_assert_registry_sound(srv->strategies_dir);
    json_t *tags = json_pack("{s:s}", "latest", sb);
    assert_json_equal(json_object_get(json_object_get(reg, "plain"), "tags"), tags,
                      "tags after a second untagged upload");
    json_t *hashes = json_object_get(json_object_get(reg, "plain"), "hashes");
    assert_string_equal(json_string_value(json_object_get(json_object_get(hashes, sb), "tag")),
                        "latest");
    assert_non_null(json_object_get(hashes, sa)); /* the older revision stays */
    json_decref(tags);
    json_decref(reg);

    json_t *m = tu_get_json(srv, 200, "/strategies/modules/plain");
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), sb);
    json_decref(m);
    free(rel);
    free(sa);
    free(sb);
    free(a);
    free(b);
    tu_server_stop(srv);
}

static void test_reserved_and_mismatched_names_are_refused(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *ok = tu_module_source("alpha", "v1", NULL);
    tu_upload_expect(srv, ok, NULL, 201, NULL);

    const char *reserved[] = {"modules", "registry", "refresh"};
    for (size_t i = 0; i < 3; i++) {
        char *src = tu_module_source(reserved[i], "v1", NULL);
        char *what = tu_path("an upload of the reserved name '%s'", reserved[i]);
        json_decref(upload_refused(srv, src, NULL, 400, what));
        free(what);
        free(src);
    }
    char *other = tu_module_source("beta", "v1", NULL);
    json_decref(upload_refused(srv, other, "{\"name\": \"gamma\"}", 400,
                               "an upload whose name field differs from metadata.name"));
    json_decref(upload_refused(srv, other, "{\"name\": \"alpha\"}", 400,
                               "an upload named after another strategy"));
    /* a misspelled field is refused rather than dropped (the revision
     * would have gone in without its alias) */
    json_t *typo = upload_refused(srv, other, "{\"alias\": [\"prod\"]}", 400,
                                  "an upload with an unknown field");
    assert_string_equal(tu_jstr(typo, "details.field"), "alias");
    assert_non_null(strstr(tu_jstr(typo, "error"), "\"aliases\""));
    json_decref(typo);
    /* a matching name field is fine */
    tu_upload_expect(srv, other, "{\"name\": \"beta\"}", 201, NULL);
    free(other);
    free(ok);
    tu_server_stop(srv);
}

/* ---------------------------------------------------------- validation */

/* Asserts a 422 whose first diagnostic has the stage (and the position,
 * when line > 0), and returns it (borrowed from body). */
static const json_t *expect_diagnostic(const json_t *body, const char *stage, int line, int column)
{
    const json_t *diags = json_object_get(body, "diagnostics");
    if (!json_is_array(diags) || json_array_size(diags) == 0) {
        char *dump = json_dumps(body, JSON_COMPACT);
        fail_msg("422 body has no non-empty top-level \"diagnostics\" array: %s", dump);
    }
    const json_t *d = json_array_get(diags, 0);
    assert_string_equal(tu_jstr(d, "stage"), stage);
    assert_true(strlen(tu_jstr(d, "message")) > 0);
    assert_true(strlen(tu_jstr(d, "hint")) > 0);
    long long l = tu_jint(d, "line"), c = tu_jint(d, "column");
    if (line > 0 && (l != line || c != column)) {
        char *dump = json_dumps(d, JSON_COMPACT);
        fail_msg("diagnostic points at line %lld, column %lld; expected line %d, column %d: %s", l,
                 c, line, column, dump);
    }
    return d;
}

/* The character at a 1-based line and column of a fixture, to keep the
 * expected positions honest if a fixture is edited. */
static char char_at(const char *text, int line, int column)
{
    const char *p = text;
    for (int i = 1; i < line; i++) {
        p = strchr(p, '\n');
        assert_non_null(p);
        p++;
    }
    return p[column - 1];
}

static const char *const SYNTAX_ERROR = "module.exports = {\n"
                                        "  metadata: {\n"
                                        "    name: 'broken',\n"
                                        "    displayName: 'Broken',\n"
                                        "    events: ['Trade'],\n"
                                        "  },\n"
                                        "  create(env) {\n"
                                        "    const limit = (env.config.limit + ) * 2;\n"
                                        "    return { limit };\n"
                                        "  },\n"
                                        "};\n";

static void test_syntax_error_points_at_the_token(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *ok = tu_module_source("broken", "v1", NULL);
    tu_upload_expect(srv, ok, NULL, 201, NULL);

    /* The offending token is the ')' on line 8, column 39. */
    assert_int_equal(char_at(SYNTAX_ERROR, 8, 39), ')');
    json_t *body = upload_refused(srv, SYNTAX_ERROR, NULL, 422, "an upload that does not parse");
    expect_diagnostic(body, "compile", 8, 39);
    json_decref(body);
    expect_upload_temps_gone(srv);
    free(ok);
    tu_server_stop(srv);
}

/* A module whose regular expression literal takes seconds to compile (the
 * compiler's time grows with the square of the alternatives) is refused
 * within its compile budget, pointing at the literal, and the gateway
 * takes the next upload as usual. */
static void test_regexp_too_costly_to_compile_is_refused(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    size_t len = 0;
    char *src = tu_alternation_source(
        280000,
        "module.exports = { metadata: { name: 'words', displayName: 'Words', events: ['Trade'] "
        "}, create() { return { onTrade() { words.test('w1'); } }; } };\n",
        &len);
    assert_int_equal(char_at(src, 2, 15), '/');
    json_t *body = upload_refused(srv, src, NULL, 422, "an upload whose regexp compiles too long");
    const json_t *d = expect_diagnostic(body, "compile", 2, 15);
    if (!strstr(tu_jstr(d, "message"), "compile budget"))
        fail_msg("the diagnostic does not say what stopped the compile: %s", tu_jstr(d, "message"));
    json_decref(body);
    expect_upload_temps_gone(srv);
    free(src);
    char *ok = tu_module_source("words", "v1", NULL);
    tu_upload_expect(srv, ok, NULL, 201, NULL);
    free(ok);
    tu_server_stop(srv);
}

static const char *const TOP_LEVEL_THROW = "const limits = { minimum: 5 };\n"
                                           "if (limits.minimum > 1) {\n"
                                           "  throw new Error('top level refuses to load');\n"
                                           "}\n"
                                           "module.exports = {\n"
                                           "  metadata: {\n"
                                           "    name: 'thrower',\n"
                                           "    displayName: 'Thrower',\n"
                                           "    events: ['Trade'],\n"
                                           "  },\n"
                                           "  create() {\n"
                                           "    return {};\n"
                                           "  },\n"
                                           "};\n";

static void test_top_level_throw_points_at_the_statement(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    /* The throwing statement starts on line 3, column 3. */
    assert_int_equal(char_at(TOP_LEVEL_THROW, 3, 3), 't');
    json_t *body =
        upload_refused(srv, TOP_LEVEL_THROW, NULL, 422, "an upload whose top level throws");
    const json_t *d = expect_diagnostic(body, "execute", 3, 3);
    if (!strstr(tu_jstr(d, "message"), "top level refuses to load"))
        fail_msg("the diagnostic does not carry the thrown message: %s", tu_jstr(d, "message"));
    json_decref(body);
    /* Nothing was created. */
    struct tu_response res;
    tu_get(srv, &res, "/strategies/thrower");
    tu_assert_error(&res, 404);
    tu_response_free(&res);
    tu_server_stop(srv);
}

/* A statement that throws without a throw keyword, and a thrown value
 * that is not an Error: the position is still the statement's. */
static const char *const TOP_LEVEL_TYPE_ERROR = "const settings = null;\n"
                                                "if (settings === null) {\n"
                                                "  settings.window;\n"
                                                "}\n"
                                                "module.exports = {};\n";

static const char *const TOP_LEVEL_THROW_STRING = "const ready = false;\n"
                                                  "if (!ready) {\n"
                                                  "  throw 'not ready';\n"
                                                  "}\n"
                                                  "module.exports = {};\n";

static void test_top_level_type_error_points_at_the_statement(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    /* "settings.window;" starts on line 3, column 3. */
    assert_int_equal(char_at(TOP_LEVEL_TYPE_ERROR, 3, 3), 's');
    json_t *body = upload_refused(srv, TOP_LEVEL_TYPE_ERROR, NULL, 422,
                                  "an upload whose top level reads a property of null");
    expect_diagnostic(body, "execute", 3, 3);
    json_decref(body);
    tu_server_stop(srv);
}

static void test_top_level_thrown_string_points_at_the_statement(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    assert_int_equal(char_at(TOP_LEVEL_THROW_STRING, 3, 3), 't');
    json_t *body = upload_refused(srv, TOP_LEVEL_THROW_STRING, NULL, 422,
                                  "an upload whose top level throws a string");
    const json_t *d = expect_diagnostic(body, "execute", 3, 3);
    if (!strstr(tu_jstr(d, "message"), "not ready"))
        fail_msg("the diagnostic does not carry the thrown value: %s", tu_jstr(d, "message"));
    json_decref(body);
    tu_server_stop(srv);
}

static void test_metadata_and_create_stages(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *ok = tu_module_source("staged", "v1", NULL);
    tu_upload_expect(srv, ok, NULL, 201, NULL);

    json_t *body = upload_refused(srv,
                                  "module.exports = {\n"
                                  "  create() {\n"
                                  "    return {};\n"
                                  "  },\n"
                                  "};\n",
                                  NULL, 422, "an upload without metadata");
    expect_diagnostic(body, "metadata", 0, 0);
    json_decref(body);

    body = upload_refused(srv,
                          "module.exports = {\n"
                          "  metadata: { name: 'staged', displayName: 'S', events: ['Trades'] },\n"
                          "  create() {\n"
                          "    return {};\n"
                          "  },\n"
                          "};\n",
                          NULL, 422, "an upload with an unknown event");
    expect_diagnostic(body, "metadata", 0, 0);
    json_decref(body);

    body = upload_refused(srv,
                          "module.exports = {\n"
                          "  metadata: { name: 'staged', displayName: 'S', events: ['Trade'] },\n"
                          "  create: 42,\n"
                          "};\n",
                          NULL, 422, "an upload whose create is not a function");
    expect_diagnostic(body, "create", 0, 0);
    json_decref(body);
    free(ok);
    tu_server_stop(srv);
}

/* Modules that would upload and then never run, or run otherwise than
 * written: a dry_run declared as a string made every instance create a
 * 400, and a misspelt `defualt` left the field without a default. Both
 * are refused at upload, at the key that is wrong. */
static const char *const NEVER_RUNS =
    "module.exports = {\n"
    "  metadata: {\n"
    "    name: 'neverruns', displayName: 'N', events: ['Trade'],\n"
    "    config: [\n"
    "      { name: 'dry_run', type: 'string', default: 'true' },\n"
    "      { name: 'size', type: 'float', defualt: 0.5 },\n"
    "    ],\n"
    "  },\n"
    "  create() { return {}; },\n"
    "};\n";

static void test_modules_that_could_never_run_are_refused(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    assert_int_equal(char_at(NEVER_RUNS, 5, 26), 't');
    assert_int_equal(char_at(NEVER_RUNS, 6, 38), 'd');
    json_t *body = upload_refused(srv, NEVER_RUNS, NULL, 422, "an upload that could never run");
    const json_t *d = expect_diagnostic(body, "metadata", 5, 26);
    assert_string_equal(tu_jstr(d, "message"),
                        "metadata.config[0] (dry_run).type 'string': the gateway reads dry_run "
                        "as bool");
    const json_t *typo = json_array_get(json_object_get(body, "diagnostics"), 1);
    assert_string_equal(tu_jstr(typo, "message"),
                        "metadata.config[1] (size).defualt is not a config field key");
    assert_string_equal(tu_jstr(typo, "hint"), "did you mean 'default'? A config field takes "
                                               "name, type, description, default, required and "
                                               "options");
    assert_int_equal(tu_jint(typo, "line"), 6);
    assert_int_equal(tu_jint(typo, "column"), 38);
    assert_int_equal(json_array_size(json_object_get(body, "diagnostics")), 2);
    assert_string_equal(tu_jstr(body, "error"),
                        "module.js:5:26: metadata.config[0] (dry_run).type 'string': the "
                        "gateway reads dry_run as bool (and 1 more problem)");
    json_decref(body);
    expect_upload_temps_gone(srv);
    tu_server_stop(srv);
}

/* Metadata built by code can hold any number of bad values: the answer
 * lists the first problems and says how many more there were, whatever
 * the top level allocated (one diagnostic each had made this 150-byte
 * upload a 390 MB answer). */
static void test_many_metadata_problems_make_a_small_answer(void **state)
{
    struct tu_server *srv = *state;
    /* The top level's loop takes longer than the default second of
     * validation under the sanitizers on a loaded machine. */
    const struct tu_server_options unhurried = {.config_yaml = "validation:\n"
                                                               "  budget_ms: 60000\n"};
    tu_server_start(srv, &unhurried);
    struct tu_response res;
    tu_upload(srv, &res,
              "var a = [];\n"
              "for (var i = 0; i < 700000; i++) a.push(i);\n"
              "module.exports = { metadata: { name: 'vh', displayName: 'V', events: a },"
              " create() {} };\n",
              NULL);
    tu_assert_error(&res, 422);
    assert_true(res.len < 64 * 1024);
    const json_t *diags = tu_jget(res.json, "diagnostics");
    assert_int_equal(json_array_size(diags), 21);
    expect_diagnostic(res.json, "metadata", 0, 0);
    const json_t *last = json_array_get(diags, 20);
    assert_string_equal(tu_jstr(last, "stage"), "metadata");
    assert_string_equal(tu_jstr(last, "message"), "and 699980 more problems not listed");
    assert_int_equal(tu_jint(last, "line"), 0);
    assert_int_equal(json_array_size(tu_jget(res.json, "details.diagnostics")), 21);
    assert_non_null(strstr(tu_jstr(res.json, "error"), "(and 699999 more problems)"));
    tu_response_free(&res);
    tu_server_stop(srv);
}

static void test_runaway_top_level_is_stopped(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    json_t *body = upload_refused(srv,
                                  "for (;;) {}\n"
                                  "module.exports = {\n"
                                  "  metadata: { name: 'spin', displayName: 'S', events: "
                                  "['Trade'] },\n"
                                  "  create() {\n"
                                  "    return {};\n"
                                  "  },\n"
                                  "};\n",
                                  NULL, 422, "an upload whose top level never ends");
    expect_diagnostic(body, "execute", 0, 0);
    json_decref(body);
    json_t *health = tu_get_json(srv, 200, "/healthz");
    json_decref(health);
    tu_server_stop(srv);
}

/* A top level that hits a limit and catches its error would start with its
 * state half-built: refused like one that lets the error through. */
static void test_top_level_catching_a_limit_is_refused(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    static const char *const tops[] = {
        "function down(n) { return down(n + 1) + 1; }\n"
        "try { down(0); } catch (e) {}\n",
        "const keep = [];\n"
        "try { for (;;) keep.push(new Array(1e5).fill(1)); } catch (e) { keep.length = 0; }\n",
    };
    static const char *const expected[] = {"caught the stack overflow error",
                                           "caught the out-of-memory error"};
    for (size_t i = 0; i < 2; i++) {
        char *src =
            tu_path("%s"
                    "module.exports = {\n"
                    "  metadata: { name: 'catches', displayName: 'C', events: ['Trade'] },\n"
                    "  create() { return {}; },\n"
                    "};\n",
                    tops[i]);
        json_t *body = upload_refused(srv, src, NULL, 422, "a top level that caught a limit");
        const json_t *d = expect_diagnostic(body, "execute", 0, 0);
        if (!strstr(tu_jstr(d, "message"), expected[i]))
            fail_msg("diagnostic %s does not say '%s'", tu_jstr(d, "message"), expected[i]);
        json_decref(body);
        free(src);
    }
    tu_server_stop(srv);
}

/* ES2023 (and earlier) syntax and built-ins, all exercised at the top level
 * so that the execute stage runs them; the display name records the
 * results. */
static const char *const MODERN =
    "#!/usr/bin/env stratd\n"
    "'use strict';\n"
    "class Window {\n"
    "  #values = [];\n"
    "  static #pushes = 0;\n"
    "  static kind;\n"
    "  static {\n"
    "    Window.kind = 'sliding';\n"
    "  }\n"
    "  push(v) {\n"
    "    this.#values.push(v);\n"
    "    Window.#pushes++;\n"
    "    return this;\n"
    "  }\n"
    "  get last() {\n"
    "    return this.#values.at(-1);\n"
    "  }\n"
    "  static isWindow(o) {\n"
    "    return #values in o;\n"
    "  }\n"
    "}\n"
    "const w = new Window().push(3).push(1).push(2);\n"
    "const sorted = [3, 1, 2].toSorted();\n"
    "const found = sorted.findLast((v) => v < 3);\n"
    "const opts = { limit: null, nested: undefined };\n"
    "opts.limit \?\?= 1_000;\n"
    "const depth = opts?.nested?.depth \?\? 2;\n"
    "let big = 2n ** 64n;\n"
    "try {\n"
    "  JSON.parse('{');\n"
    "} catch {\n"
    "  big += 1n;\n"
    "}\n"
    "const own = Object.hasOwn(opts, 'limit') && Window.isWindow(w);\n"
    "const spliced = sorted.toSpliced(0, 1).with(0, 9).join('');\n"
    "module.exports = {\n"
    "  metadata: {\n"
    "    name: 'modern',\n"
    "    displayName: `Modern ${Window.kind} ${w.last} ${found} ${opts.limit} ${depth} "
    "${spliced} ${own} ${big % 10n}`,\n"
    "    events: ['Trade'],\n"
    "  },\n"
    "  create(env) {\n"
    "    return {\n"
    "      async onTrade(trade) {\n"
    "        await null;\n"
    "        return trade?.price;\n"
    "      },\n"
    "    };\n"
    "  },\n"
    "};\n";

static void test_es2023_module_is_accepted(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    tu_upload_expect(srv, MODERN, NULL, 201, NULL);
    json_t *meta = tu_get_json(srv, 200, "/strategies/modern");
    assert_string_equal(tu_jstr(meta, "displayName"), "Modern sliding 2 2 1000 2 93 true 7");
    json_decref(meta);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------ listings */

static const json_t *find_revision(const json_t *module, const char *hex)
{
    char *spelled = spell(hex);
    size_t i;
    const json_t *rev, *found = NULL;
    json_array_foreach(json_object_get(module, "revisions"), i, rev)
    {
        if (json_is_string(json_object_get(rev, "hash")) &&
            strcmp(json_string_value(json_object_get(rev, "hash")), spelled) == 0)
            found = rev;
    }
    if (!found) {
        char *dump = json_dumps(module, JSON_COMPACT);
        fail_msg("revision %s is not listed: %s", spelled, dump);
    }
    free(spelled);
    return found;
}

static void assert_revision(const struct tu_server *srv, const json_t *module, const char *name,
                            const char *hex, const char *tag, size_t size)
{
    const json_t *rev = find_revision(module, hex);
    assert_string_equal(tu_jstr(rev, "tag"), tag);
    assert_rev_path(srv, tu_jstr(rev, "path"), name, hex);
    assert_int_equal(tu_jint(rev, "size"), (long long)size);
    assert_true(json_is_false(json_object_get(rev, "retired")));
    assert_true(json_is_false(json_object_get(rev, "invalid")));
}

static void assert_page(const json_t *page, size_t count, long long total, long long offset,
                        long long limit)
{
    assert_true(json_is_array(tu_jget(page, "modules")));
    assert_int_equal(json_array_size(tu_jget(page, "modules")), count);
    assert_int_equal(tu_jint(page, "total"), total);
    assert_int_equal(tu_jint(page, "offset"), offset);
    if (limit < 0) {
        if (!json_is_null(json_object_get(page, "limit")))
            fail_msg("limit is not null when no limit was asked for");
    } else {
        assert_int_equal(tu_jint(page, "limit"), limit);
    }
}

static void test_module_listing_and_filters(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a1 = tu_module_source("alpha", "v1", NULL);
    char *a2 = tu_module_source("alpha", "v2", "onTrade() {},");
    char *b1 = tu_module_source("beta", "v1", NULL);
    char *g1 = tu_module_source("gamma", NULL, NULL);
    char ha1[65], ha2[65], hb1[65], hg1[65];
    tu_upload_expect(srv, a1, NULL, 201, ha1);
    tu_upload_expect(srv, a2, NULL, 201, ha2);
    tu_upload_expect(srv, b1, NULL, 201, hb1);
    tu_upload_expect(srv, g1, NULL, 201, hg1);

    json_t *all = tu_get_json(srv, 200, "/strategies/modules");
    assert_page(all, 3, 3, 0, -1);
    assert_same_dir(tu_jstr(all, "strategyDirectory"), srv->strategies_dir);
    const json_t *alpha = find_strategy(tu_jget(all, "modules"), "alpha");
    assert_non_null(alpha);
    assert_non_null(find_strategy(tu_jget(all, "modules"), "beta"));
    assert_non_null(find_strategy(tu_jget(all, "modules"), "gamma"));

    /* The summary of alpha: latest is the first revision. */
    char *sa1 = spell(ha1), *sa2 = spell(ha2);
    assert_string_equal(tu_jstr(alpha, "file"), "alpha.js");
    assert_rev_path(srv, tu_jstr(alpha, "path"), "alpha", ha1);
    assert_string_equal(tu_jstr(alpha, "selectedRevisionHash"), sa1);
    assert_string_equal(tu_jstr(alpha, "selectedRevisionTag"), "v1");
    assert_int_equal(tu_jint(alpha, "size"), (long long)strlen(a1));
    json_t *aliases = json_pack("{s:s, s:s, s:s}", "latest", sa1, "v1", sa1, "v2", sa2);
    assert_json_equal(tu_jget(alpha, "tagAliases"), aliases, "alpha tagAliases");
    json_decref(aliases);
    const json_t *tags = tu_jget(alpha, "tags");
    assert_true(json_is_array(tags));
    assert_int_equal(json_array_size(tags), 3);
    assert_int_equal(json_array_size(tu_jget(alpha, "revisions")), 2);
    assert_revision(srv, alpha, "alpha", ha1, "v1", strlen(a1));
    assert_revision(srv, alpha, "alpha", ha2, "v2", strlen(a2));
    assert_string_equal(tu_jstr(alpha, "metadata.name"), "alpha");
    assert_string_equal(tu_jstr(alpha, "metadata.displayName"), "Test alpha");
    assert_true(json_is_string(tu_jget(alpha, "metadata.description")));
    assert_true(json_is_array(tu_jget(alpha, "metadata.config")));
    if (!json_object_get(alpha, "running"))
        fail_msg("module summary has no 'running' field");
    json_decref(all);

    /* The selected revision follows the selector. */
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/alpha:v2");
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), sa2);
    assert_string_equal(tu_jstr(m, "selectedRevisionTag"), "v2");
    assert_rev_path(srv, tu_jstr(m, "path"), "alpha", ha2);
    assert_int_equal(tu_jint(m, "size"), (long long)strlen(a2));
    json_decref(m);

    json_t *page = tu_get_json(srv, 200, "/strategies/modules?strategy=beta");
    assert_page(page, 1, 1, 0, -1);
    assert_string_equal(tu_jstr(page, "modules.0.name"), "beta");
    json_decref(page);

    page = tu_get_json(srv, 200, "/strategies/modules?strategy=nosuch");
    assert_page(page, 0, 0, 0, -1);
    json_decref(page);

    /* Pages partition the listing. */
    json_t *first = tu_get_json(srv, 200, "/strategies/modules?limit=2");
    assert_page(first, 2, 3, 0, 2);
    json_t *rest = tu_get_json(srv, 200, "/strategies/modules?offset=2");
    assert_page(rest, 1, 3, 2, -1);
    const char *names[3] = {tu_jstr(first, "modules.0.name"), tu_jstr(first, "modules.1.name"),
                            tu_jstr(rest, "modules.0.name")};
    for (int i = 0; i < 3; i++) {
        for (int j = i + 1; j < 3; j++) {
            if (strcmp(names[i], names[j]) == 0)
                fail_msg("'%s' is on two pages", names[i]);
        }
    }
    json_decref(first);
    json_decref(rest);

    page = tu_get_json(srv, 200, "/strategies/modules?limit=0");
    assert_page(page, 0, 3, 0, 0);
    json_decref(page);
    page = tu_get_json(srv, 200, "/strategies/modules?limit=1&offset=1");
    assert_page(page, 1, 3, 1, 1);
    json_decref(page);
    page = tu_get_json(srv, 200, "/strategies/modules?strategy=alpha&offset=1");
    assert_page(page, 0, 1, 1, -1);
    json_decref(page);

    page = tu_get_json(srv, 200, "/strategies/modules?hash=%s", sa2);
    assert_page(page, 1, 1, 0, -1);
    assert_string_equal(tu_jstr(page, "modules.0.name"), "alpha");
    find_revision(json_array_get(tu_jget(page, "modules"), 0), ha2);
    json_decref(page);
    page = tu_get_json(srv, 200, "/strategies/modules?hash=%s", hb1);
    assert_page(page, 1, 1, 0, -1);
    assert_string_equal(tu_jstr(page, "modules.0.name"), "beta");
    json_decref(page);

    /* Nothing runs. */
    page = tu_get_json(srv, 200, "/strategies/modules?runningOnly=true");
    assert_page(page, 0, 0, 0, -1);
    json_decref(page);
    page = tu_get_json(srv, 200, "/strategies/modules?runningOnly=false");
    assert_page(page, 3, 3, 0, -1);
    json_decref(page);

    free(sa1);
    free(sa2);
    free(a1);
    free(a2);
    free(b1);
    free(g1);
    tu_server_stop(srv);
}

/* Every module of a listing is the document GET /strategies/modules/{name}
 * answers (the listing is written from text kept per catalogue generation,
 * the single GET from the registry): after uploads and tag moves too. */
static void assert_listing_matches_gets(struct tu_server *srv, size_t count)
{
    json_t *page = tu_get_json(srv, 200, "/strategies/modules");
    assert_page(page, count, (long long)count, 0, -1);
    size_t i;
    json_t *m;
    json_array_foreach(tu_jget(page, "modules"), i, m)
    {
        json_t *one = tu_get_json(srv, 200, "/strategies/modules/%s", tu_jstr(m, "name"));
        if (!json_equal(m, one)) {
            char *a = json_dumps(m, JSON_COMPACT), *b = json_dumps(one, JSON_COMPACT);
            fail_msg("listing has %s\nmodule GET has %s", a, b);
        }
        json_decref(one);
    }
    json_decref(page);
}

static void test_listing_follows_the_catalogue(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a1 = tu_module_source("alpha", "v1", NULL);
    char *a2 = tu_module_source("alpha", "v2", "onTrade() {},");
    char *b1 = tu_module_source("beta", "v1", NULL);
    char ha1[65], ha2[65], hb1[65];
    tu_upload_expect(srv, a1, NULL, 201, ha1);
    assert_listing_matches_gets(srv, 1);
    tu_upload_expect(srv, b1, NULL, 201, hb1);
    assert_listing_matches_gets(srv, 2);
    tu_upload_expect(srv, a2, NULL, 201, ha2);
    assert_listing_matches_gets(srv, 2);
    json_t *page = tu_get_json(srv, 200, "/strategies/modules?strategy=alpha");
    assert_int_equal(json_array_size(tu_jget(page, "modules.0.revisions")), 2);
    json_decref(page);
    json_t *moved = tu_callf(srv, "PUT", "/strategies/modules/alpha/tags/prod", 200,
                             "{\"hash\": \"sha256:%s\"}", ha1);
    json_decref(moved);
    assert_listing_matches_gets(srv, 2);
    page = tu_get_json(srv, 200, "/strategies/modules?strategy=alpha");
    char *spelled = tu_path("sha256:%s", ha1);
    assert_string_equal(tu_jstr(page, "modules.0.tagAliases.prod"), spelled);
    free(spelled);
    json_decref(page);
    free(a1);
    free(a2);
    free(b1);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_first_upload_writes_file_and_registry, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_strategy_metadata_is_that_of_latest, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_second_revision_keeps_latest_unless_promoted,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_identical_bytes_answer_200_and_apply_tags,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_tag_on_another_revision_needs_reassign,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_aliases_move_to_the_new_revision, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_tag_field_and_metadata_tag_must_agree, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_untagged_upload_takes_latest, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_reserved_and_mismatched_names_are_refused,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_syntax_error_points_at_the_token, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_regexp_too_costly_to_compile_is_refused,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_top_level_throw_points_at_the_statement,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_top_level_type_error_points_at_the_statement,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_top_level_thrown_string_points_at_the_statement,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_metadata_and_create_stages, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_modules_that_could_never_run_are_refused,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_many_metadata_problems_make_a_small_answer,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_runaway_top_level_is_stopped, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_top_level_catching_a_limit_is_refused, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_es2023_module_is_accepted, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_module_listing_and_filters, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_listing_follows_the_catalogue, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
