/*
 * registry.json and the revision files: loading, validation, writing,
 * verification on reload, metadata carry-over and snapshot sharing.
 */
#include "regtest.h"

#include "core/log.h"
#include "registry/registry_internal.h"

#include <fcntl.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct fixture {
    char *root;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->root = tu_tempdir("registry-file");
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    tu_remove_tree(f->root);
    free(f->root);
    free(f);
    return 0;
}

static char *registry_path(const struct fixture *f)
{
    return tu_path("%s/registry.json", f->root);
}

static void write_registry(const struct fixture *f, const char *text)
{
    char *path = registry_path(f);
    tu_write_text(path, text);
    free(path);
}

/* Writes <root>/<name>/<hex>/<name>.js with source; returns the hex. */
static void write_revision(const struct fixture *f, const char *name, const char *source,
                           char hex[HASH_HEX_LEN + 1])
{
    rt_hex_of(source, hex);
    char *dir = tu_path("%s/%s/%s", f->root, name, hex);
    struct err err = ERR_INIT;
    rt_assert_ok(fsutil_mkdirs(dir, 0755, &err), &err);
    char *path = tu_path("%s/%s.js", dir, name);
    tu_write_text(path, source);
    free(path);
    free(dir);
}

static void open_fails(const struct fixture *f, enum err_kind kind, const char *needle)
{
    struct catalog_options opts = {f->root, NULL, NULL, false};
    struct catalog *cat = (struct catalog *)1;
    struct err err = ERR_INIT;
    rt_assert_fails(catalog_open(&opts, &cat, &err), &err, kind);
    assert_null(cat);
    if (needle && !strstr(err.message, needle))
        fail_msg("message does not mention '%s': %s", needle, err.message);
    err_clear(&err);
}

/* Captures the log into a temporary file until log_capture_end. */
static int log_capture_begin(const struct fixture *f)
{
    char *path = tu_path("%s.log", f->root);
    int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    unlink(path);
    free(path);
    log_set_fd(fd);
    return fd;
}

static char *log_capture_end(int fd)
{
    log_set_fd(2);
    off_t size = lseek(fd, 0, SEEK_END);
    char *text = calloc(1, (size_t)size + 1);
    assert_int_equal(pread(fd, text, (size_t)size, 0), size);
    close(fd);
    return text;
}

/* ------------------------------------------------------------------ tests */

static void test_open_needs_a_root(void **state)
{
    (void)state;
    struct catalog_options opts = {NULL, NULL, NULL, false};
    struct catalog *cat = NULL;
    struct err err = ERR_INIT;
    rt_assert_fails(catalog_open(&opts, &cat, &err), &err, ERR_INVALID);
    err_clear(&err);
    opts.root = "";
    rt_assert_fails(catalog_open(&opts, &cat, &err), &err, ERR_INVALID);
    err_clear(&err);
    assert_null(cat);
}

static void test_missing_registry_is_empty(void **state)
{
    struct fixture *f = *state;
    char *root = tu_path("%s/deep/strategies", f->root);
    struct catalog *cat = rt_open(root);
    assert_string_equal(catalog_root(cat), root);
    assert_true(fsutil_is_dir(root));
    struct registry *reg = catalog_snapshot(cat);
    assert_int_equal(reg->nstrategies, 0);
    assert_true(reg->generation >= 1);
    json_t *doc = registry_to_json(reg);
    assert_int_equal(json_object_size(doc), 0);
    json_decref(doc);
    registry_release(reg);
    json_t *problems = NULL;
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_reload(cat, &problems, &err), &err);
    assert_int_equal(json_array_size(problems), 0);
    json_decref(problems);
    catalog_close(cat);
    /* opening writes nothing */
    char *registry = tu_path("%s/registry.json", root);
    assert_false(fsutil_exists(registry));
    free(registry);
    free(root);
}

/* The document as one strategy a line, each line what json_dumps writes
 * for the strategy's own tree (JSON_INDENT(0), insertion order). */
static char *jansson_lines(const json_t *doc)
{
    struct strbuf sb = STRBUF_INIT;
    strbuf_puts(&sb, "{\n");
    const char *name;
    json_t *strategy;
    size_t i = 0;
    json_object_foreach((json_t *)doc, name, strategy)
    {
        char *line = json_dumps(strategy, JSON_INDENT(0) | JSON_PRESERVE_ORDER);
        assert_non_null(line);
        strbuf_printf(&sb, "%s  \"%s\": %s", i++ ? ",\n" : "", name, line);
        free(line);
    }
    strbuf_puts(&sb, "\n}\n");
    return strbuf_detach(&sb, NULL);
}

static void test_round_trip_and_order(void **state)
{
    struct fixture *f = *state;
    struct catalog *cat = rt_open(f->root);
    char z1[HASH_HEX_LEN + 1], z2[HASH_HEX_LEN + 1], a1[HASH_HEX_LEN + 1], m1[HASH_HEX_LEN + 1];
    rt_add(cat, "zeta", 1, "v1", z1);
    rt_add(cat, "alpha", 1, NULL, a1);
    rt_add(cat, "zeta", 2, "v2", z2);
    rt_add(cat, "mid", 1, "b", m1);
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_set_tag(cat, "zeta", "a-first", z2, NULL, &err), &err);
    rt_assert_ok(catalog_set_tag(cat, "zeta", "Zed", z1, NULL, &err), &err);

    char *path = registry_path(f);
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    /* one strategy a line, so two versions diff by strategy, each padded
     * with spaces after its comma; ends with a newline */
    assert_non_null(strstr(text, "{\n  \"alpha\": {\"tags\": {\"latest\": \"sha256:"));
    assert_non_null(strstr(text, "}}, "));
    assert_non_null(strstr(text, " \n  \"mid\": {\"tags\": {"));
    assert_non_null(strstr(text, "}} "));
    assert_non_null(strstr(text, " \n}\n"));
    assert_int_equal(text[len - 1], '\n');
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += text[i] == '\n';
    assert_int_equal(lines, 3 + 2);
    /* strategies sorted by name */
    assert_true(strstr(text, "\"alpha\"") < strstr(text, "\"mid\""));
    assert_true(strstr(text, "\"mid\"") < strstr(text, "\"zeta\""));
    json_t *doc = rt_load_json(path);
    json_t *zeta = json_object_get(doc, "zeta");
    /* tags sorted (byte order), hashes in the order they were added */
    const char *want_tags[] = {"Zed", "a-first", "latest", "v1", "v2"};
    size_t i = 0;
    const char *key;
    json_t *value;
    json_object_foreach(json_object_get(zeta, "tags"), key, value)
    {
        assert_true(i < 5);
        assert_string_equal(key, want_tags[i++]);
    }
    assert_int_equal(i, 5);
    char spelled[HASH_SPELLED_LEN + 1];
    i = 0;
    json_object_foreach(json_object_get(zeta, "hashes"), key, value)
    {
        hash_spell(i == 0 ? z1 : z2, spelled);
        assert_string_equal(key, spelled);
        char *expected_path = tu_path("zeta/%s/zeta.js", i == 0 ? z1 : z2);
        assert_string_equal(json_string_value(json_object_get(value, "path")), expected_path);
        assert_string_equal(json_string_value(json_object_get(value, "tag")), i == 0 ? "v1" : "v2");
        free(expected_path);
        i++;
    }
    hash_spell(a1, spelled);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(doc, "alpha"), "tags"), "latest")),
                        spelled);
    hash_spell(m1, spelled);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(doc, "mid"), "tags"), "b")),
                        spelled);

    /* a second catalogue loads the same model, and writes the same bytes */
    struct registry *first = catalog_snapshot(cat);
    json_t *first_json = registry_to_json(first);
    assert_true(json_equal(first_json, doc));
    struct catalog *again = rt_open(f->root);
    struct registry *second = catalog_snapshot(again);
    json_t *second_json = registry_to_json(second);
    assert_true(json_equal(first_json, second_json));
    assert_int_equal(registry_find_strategy(second, "zeta")->revisions[1].order,
                     registry_find_strategy(second, "zeta")->revisions[0].order + 1);
    char *dumped = registry_to_text(second, NULL);
    assert_string_equal(dumped, rt_unpadded(text));
    /* each line is the bytes jansson writes for the strategy's tree */
    char *expected = jansson_lines(second_json);
    assert_string_equal(dumped, expected);
    free(expected);
    free(dumped);
    json_decref(first_json);
    json_decref(second_json);
    registry_release(first);
    registry_release(second);
    catalog_close(again);
    json_decref(doc);
    free(text);
    free(path);
    catalog_close(cat);
    rt_check_disk(f->root);
}

static char *upper(const char *hex)
{
    char *out = strdup(hex);
    for (char *p = out; *p; p++)
        *p = (char)((*p >= 'a' && *p <= 'f') ? *p - 'a' + 'A' : *p);
    return out;
}

static void test_hand_written_file_is_normalised(void **state)
{
    struct fixture *f = *state;
    char b1[HASH_HEX_LEN + 1], a1[HASH_HEX_LEN + 1], a2[HASH_HEX_LEN + 1];
    write_revision(f, "beta", "b1", b1);
    write_revision(f, "alpha", "a1", a1);
    write_revision(f, "alpha", "a2", a2);
    char *a2_upper = upper(a2);
    /* unsorted strategies and tags, an uppercase hash, a bare-hex tag
     * target, and a2 listed before a1 */
    char *text = tu_path("{\"beta\": {\"tags\": {\"latest\": \"sha256:%s\"}, \"hashes\": "
                         "{\"sha256:%s\": {\"tag\": \"latest\", \"path\": \"beta/%s/beta.js\"}}},"
                         " \"alpha\": {\"tags\": {\"z\": \"%s\", \"latest\": \"sha256:%s\"}, "
                         "\"hashes\": {\"sha256:%s\": {\"tag\": \"z\", \"path\": "
                         "\"alpha/%s/alpha.js\"}, \"sha256:%s\": {\"tag\": \"latest\", \"path\": "
                         "\"alpha/%s/alpha.js\"}}}}",
                         b1, b1, b1, a2, a1, a2_upper, a2, a1, a1);
    write_registry(f, text);
    free(text);
    free(a2_upper);
    struct catalog *cat = rt_open(f->root);
    struct registry *reg = catalog_snapshot(cat);
    assert_int_equal(reg->nstrategies, 2);
    assert_string_equal(reg->strategies[0]->name, "alpha");
    const struct registry_strategy *alpha = reg->strategies[0];
    assert_string_equal(alpha->tags[0].tag, "latest");
    assert_string_equal(alpha->tags[1].tag, "z");
    assert_string_equal(alpha->tags[1].hex, a2);
    /* the hashes' order is the file's: a2 first, so a1 is the newest */
    assert_string_equal(alpha->revisions[0].hex, a2);
    assert_string_equal(alpha->revisions[1].hex, a1);
    assert_true(alpha->revisions[1].order > alpha->revisions[0].order);
    assert_false(alpha->revisions[0].invalid);
    assert_false(registry_find_strategy(reg, "beta")->revisions[0].invalid);
    registry_release(reg);
    /* the next write puts everything in order and spells hashes canonically */
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_set_tag(cat, "alpha", "y", a1, NULL, &err), &err);
    char *path = registry_path(f);
    char *written = tu_read_file(path, NULL);
    assert_true(strstr(written, "\"alpha\"") < strstr(written, "\"beta\""));
    const char *tags = strstr(written, "\"tags\"");
    assert_true(strstr(tags, "\"latest\"") < strstr(tags, "\"y\""));
    assert_true(strstr(tags, "\"y\"") < strstr(tags, "\"z\""));
    const char *hashes = strstr(written, "\"hashes\"");
    char *key1 = tu_path("\"sha256:%s\": {", a2);
    char *key2 = tu_path("\"sha256:%s\": {", a1);
    assert_non_null(strstr(hashes, key1));
    assert_true(strstr(hashes, key1) < strstr(hashes, key2));
    free(key1);
    free(key2);
    free(written);
    free(path);
    catalog_close(cat);
    rt_check_disk(f->root);
}

/* Replaces every @H in text with a hash and every @U with the same hash in
 * uppercase, which names the same revision. */
static char *with_hashes(const char *text)
{
    char lower[HASH_SPELLED_LEN + 1], upper_hash[HASH_SPELLED_LEN + 1];
    memcpy(lower, "sha256:", 7);
    memcpy(upper_hash, "sha256:", 7);
    for (int i = 0; i < HASH_HEX_LEN; i++) {
        lower[7 + i] = i % 2 ? 'b' : 'a';
        upper_hash[7 + i] = i % 2 ? 'B' : 'A';
    }
    lower[HASH_SPELLED_LEN] = upper_hash[HASH_SPELLED_LEN] = '\0';
    char *out = calloc(1, strlen(text) * 40 + 1);
    char *w = out;
    for (const char *p = text; *p; p++) {
        if (p[0] == '@' && (p[1] == 'H' || p[1] == 'U')) {
            const char *h = p[1] == 'H' ? lower : upper_hash;
            memcpy(w, h, strlen(h));
            w += strlen(h);
            p++;
        } else {
            *w++ = *p;
        }
    }
    return out;
}

static void test_malformed_registry_is_refused(void **state)
{
    struct fixture *f = *state;
    struct {
        const char *text;
        const char *needle;
    } cases[] = {
        {"{", "registry.json"},
        {"[]", "object"},
        {"{\"Bad/Name\": {}}", "Bad/Name"},
        {"{\"..\": {}}", "'..'"},
        {"{\"a\": []}", "'a'"},
        {"{\"a\": {\"hashes\": []}}", "hashes"},
        {"{\"a\": {\"tags\": \"x\"}}", "tags"},
        {"{\"a\": {\"hashes\": {\"sha256:xyz\": {\"tag\": \"v\", \"path\": \"p\"}}}}", "xyz"},
        {"{\"a\": {\"hashes\": {\"@H\": {\"path\": \"p\"}}}}", "tag"},
        {"{\"a\": {\"hashes\": {\"@H\": {\"tag\": \"../x\", \"path\": \"p\"}}}}", "tag"},
        {"{\"a\": {\"hashes\": {\"@H\": \"p\"}}}", "tag"},
        {"{\"a\": {\"tags\": {\".x\": \"@H\"}, \"hashes\": {}}}", ".x"},
        {"{\"a\": {\"tags\": {\"x\": \"sha256:12\"}, \"hashes\": {}}}", "'x'"},
        {"{\"a\": {\"tags\": {\"x\": 5}, \"hashes\": {}}}", "'x'"},
        {"{\"a\": {\"hashes\": {\"@H\": {\"tag\": \"v\", \"path\": \"p\"}, \"@U\": {\"tag\": "
         "\"v\", \"path\": \"p\"}}}}",
         "twice"},
        {"{\"a\": {}, \"a\": {}}", "registry.json"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *text = with_hashes(cases[i].text);
        write_registry(f, text);
        open_fails(f, ERR_INVALID, cases[i].needle);
        free(text);
    }
}

static void test_tags_and_latest_repaired_on_load(void **state)
{
    struct fixture *f = *state;
    char a1[HASH_HEX_LEN + 1], a2[HASH_HEX_LEN + 1];
    write_revision(f, "alpha", "one", a1);
    write_revision(f, "alpha", "two", a2);
    const char *unknown = "1111111111111111111111111111111111111111111111111111111111111111";
    char *text = tu_path("{\"alpha\": {\"tags\": {\"prod\": \"sha256:%s\", \"v1\": \"sha256:%s\"}, "
                         "\"hashes\": {\"sha256:%s\": {\"tag\": \"v1\", \"path\": "
                         "\"alpha/%s/alpha.js\"}, \"sha256:%s\": {\"tag\": \"v2\", \"path\": "
                         "\"alpha/%s/alpha.js\"}}}, \"empty\": {\"tags\": {}, \"hashes\": {}}}",
                         unknown, a1, a1, a1, a2, a2);
    write_registry(f, text);
    free(text);
    int fd = log_capture_begin(f);
    struct catalog *cat = rt_open(f->root);
    char *log = log_capture_end(fd);
    struct registry *reg = catalog_snapshot(cat);
    assert_int_equal(reg->nstrategies, 1); /* a strategy without revisions does not exist */
    const struct registry_strategy *alpha = registry_find_strategy(reg, "alpha");
    assert_null(registry_tag_target(alpha, "prod"));
    assert_string_equal(registry_tag_target(alpha, "v1"), a1);
    /* no `latest`: the newest revision gets it */
    assert_string_equal(registry_tag_target(alpha, "latest"), a2);
    assert_non_null(strstr(log, "\"component\":\"registry\""));
    assert_non_null(strstr(log, unknown));
    assert_non_null(strstr(log, "latest"));
    free(log);
    registry_release(reg);
    catalog_close(cat);
}

static void test_bad_path_is_never_opened(void **state)
{
    struct fixture *f = *state;
    char a1[HASH_HEX_LEN + 1], a2[HASH_HEX_LEN + 1];
    write_revision(f, "alpha", "good", a1);
    write_revision(f, "alpha", "elsewhere", a2);
    /* the bytes at the odd path do hash to the name: still refused */
    char *odd = tu_path("%s/alpha/%s/copy.js", f->root, a2);
    tu_write_text(odd, "elsewhere");
    free(odd);
    char *text = tu_path("{\"alpha\": {\"tags\": {\"latest\": \"sha256:%s\", \"odd\": "
                         "\"sha256:%s\"}, \"hashes\": {\"sha256:%s\": {\"tag\": \"latest\", "
                         "\"path\": \"alpha/%s/alpha.js\"}, \"sha256:%s\": {\"tag\": \"odd\", "
                         "\"path\": \"alpha/%s/copy.js\"}}}}",
                         a1, a2, a1, a1, a2, a2);
    write_registry(f, text);
    free(text);
    struct catalog *cat = rt_open(f->root);
    struct registry *reg = catalog_snapshot(cat);
    const struct registry_revision *rev =
        registry_find_revision(registry_find_strategy(reg, "alpha"), a2);
    assert_true(rev->invalid);
    assert_non_null(strstr(rev->invalid_reason, "copy.js"));
    struct registry_resolution r;
    struct err err = ERR_INIT;
    rt_assert_fails(registry_resolve_text(reg, "alpha:odd", &r, &err), &err, ERR_CONFLICT);
    err_clear(&err);
    char *source = NULL;
    size_t len = 0;
    rt_assert_fails(catalog_read_source(cat, "alpha", a2, &source, &len, &err), &err, ERR_CONFLICT);
    assert_null(source);
    err_clear(&err);
    /* the path is written back as found, so the operator sees it */
    rt_assert_ok(catalog_set_tag(cat, "alpha", "x", a1, NULL, &err), &err);
    char *path = registry_path(f);
    char *written = tu_read_file(path, NULL);
    assert_non_null(strstr(written, "copy.js"));
    free(written);
    free(path);
    registry_release(reg);
    catalog_close(cat);
}

static void test_wrong_bytes_detected_on_reload(void **state)
{
    struct fixture *f = *state;
    struct catalog *cat = rt_open(f->root);
    char h1[HASH_HEX_LEN + 1], h2[HASH_HEX_LEN + 1], b1[HASH_HEX_LEN + 1];
    rt_add(cat, "alpha", 1, "v1", h1);
    rt_add(cat, "alpha", 2, "v2", h2);
    rt_add(cat, "beta", 1, NULL, b1);
    struct registry *untouched = catalog_snapshot(cat);
    char *file = tu_path("%s/alpha/%s/alpha.js", f->root, h1);
    char *original = tu_read_file(file, NULL);
    tu_write_text(file, "module.exports = { hacked: true };\n");

    int fd = log_capture_begin(f);
    json_t *problems = NULL;
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_reload(cat, &problems, &err), &err);
    char *log = log_capture_end(fd);
    assert_int_equal(json_array_size(problems), 1);
    json_t *p = json_array_get(problems, 0);
    assert_string_equal(json_string_value(json_object_get(p, "strategy")), "alpha");
    char spelled[HASH_SPELLED_LEN + 1];
    hash_spell(h1, spelled);
    assert_string_equal(json_string_value(json_object_get(p, "hash")), spelled);
    assert_non_null(strstr(json_string_value(json_object_get(p, "message")), "hashes to"));
    json_decref(problems);
    assert_non_null(strstr(log, "\"level\":\"warn\""));
    assert_non_null(strstr(log, "\"component\":\"registry\""));
    assert_non_null(strstr(log, spelled));
    free(log);

    struct registry *reg = catalog_snapshot(cat);
    const struct registry_revision *rev =
        registry_find_revision(registry_find_strategy(reg, "alpha"), h1);
    assert_true(rev->invalid);
    assert_non_null(rev->invalid_reason);
    /* only the strategy whose file changed was copied */
    assert_true(reg->generation > untouched->generation);
    assert_ptr_equal(registry_find_strategy(reg, "beta"),
                     registry_find_strategy(untouched, "beta"));
    assert_false(registry_find_revision(registry_find_strategy(untouched, "alpha"), h1)->invalid);
    registry_release(untouched);
    struct registry_resolution r;
    char *sel = tu_path("alpha@%s", h1);
    rt_assert_fails(registry_resolve_text(reg, sel, &r, &err), &err, ERR_CONFLICT);
    err_clear(&err);
    rt_assert_fails(registry_resolve_text(reg, "alpha:v1", &r, &err), &err, ERR_CONFLICT);
    err_clear(&err);
    registry_release(reg);
    free(sel);
    rt_assert_fails(catalog_set_tag(cat, "alpha", "prod", h1, NULL, &err), &err, ERR_CONFLICT);
    err_clear(&err);
    char *source = NULL;
    size_t len = 0;
    rt_assert_fails(catalog_read_source(cat, "alpha", h1, &source, &len, &err), &err, ERR_CONFLICT);
    err_clear(&err);

    /* a missing file is reported too */
    char *file2 = tu_path("%s/alpha/%s/alpha.js", f->root, h2);
    unlink(file2);
    rt_assert_ok(catalog_reload(cat, &problems, &err), &err);
    assert_int_equal(json_array_size(problems), 2);
    assert_non_null(strstr(
        json_string_value(json_object_get(json_array_get(problems, 1), "message")), "missing"));
    json_decref(problems);

    /* putting the bytes back heals it */
    tu_write_text(file, original);
    rt_assert_ok(catalog_reload(cat, &problems, &err), &err);
    assert_int_equal(json_array_size(problems), 1);
    json_decref(problems);
    reg = catalog_snapshot(cat);
    assert_false(registry_find_revision(registry_find_strategy(reg, "alpha"), h1)->invalid);
    rt_assert_ok(registry_resolve_text(reg, "alpha:v1", &r, &err), &err);
    registry_release(reg);
    free(file2);
    free(original);
    free(file);
    catalog_close(cat);
}

/* Overwrites one byte of path in place: same inode, same size. With
 * keep_mtime, the modification time is put back as tools that preserve it
 * do; the change time cannot be put back. */
static void edit_in_place(const char *path, bool keep_mtime)
{
    struct stat before;
    assert_int_equal(stat(path, &before), 0);
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "#", 1, 0), 1);
    if (keep_mtime) {
        struct timespec times[2] = {before.st_atim, before.st_mtim};
        assert_int_equal(futimens(fd, times), 0);
    }
    close(fd);
    struct stat after;
    assert_int_equal(stat(path, &after), 0);
    assert_int_equal(after.st_size, before.st_size);
    assert_int_equal(after.st_ino, before.st_ino);
}

static void assert_reload_finds(struct catalog *cat, const char *name, const char *hex,
                                size_t nproblems, bool invalid)
{
    json_t *problems = NULL;
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_reload(cat, &problems, &err), &err);
    assert_int_equal(json_array_size(problems), nproblems);
    json_decref(problems);
    struct registry *reg = catalog_snapshot(cat);
    const struct registry_revision *rev =
        registry_find_revision(registry_find_strategy(reg, name), hex);
    assert_int_equal(rev->invalid, invalid);
    if (invalid)
        assert_non_null(strstr(rev->invalid_reason, "hashes to"));
    registry_release(reg);
}

/* A write in place that keeps the size is found by the next reload, right
 * after the file was written (same timestamp tick) and long after. */
static void test_same_size_edit_in_place_detected(void **state)
{
    struct fixture *f = *state;
    struct catalog *cat = rt_open(f->root);
    char fresh[HASH_HEX_LEN + 1], quiet[HASH_HEX_LEN + 1];
    rt_add(cat, "fresh", 1, NULL, fresh);
    rt_add(cat, "quiet", 1, NULL, quiet);

    char *fresh_file = tu_path("%s/fresh/%s/fresh.js", f->root, fresh);
    assert_reload_finds(cat, "fresh", fresh, 0, false);
    edit_in_place(fresh_file, true);
    assert_reload_finds(cat, "fresh", fresh, 1, true);

    /* long after its last write, and after reloads that found it intact */
    struct timespec pause = {1, 200000000};
    nanosleep(&pause, NULL);
    char *quiet_file = tu_path("%s/quiet/%s/quiet.js", f->root, quiet);
    assert_reload_finds(cat, "quiet", quiet, 1, false);
    assert_reload_finds(cat, "quiet", quiet, 1, false);
    edit_in_place(quiet_file, true);
    assert_reload_finds(cat, "quiet", quiet, 2, true);
    free(fresh_file);
    free(quiet_file);
    catalog_close(cat);
}

/* registry.json rewritten in place right after the catalogue wrote it
 * (same inode, same size, likely the same timestamp tick): a reload still
 * compares its bytes and loads the edit. */
static void test_registry_edit_in_place_after_write(void **state)
{
    struct fixture *f = *state;
    struct catalog *cat = rt_open(f->root);
    char h1[HASH_HEX_LEN + 1];
    rt_add(cat, "alpha", 1, "v1", h1);
    char *path = registry_path(f);
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    for (char *p = strstr(text, "\"v1\""); p; p = strstr(p, "\"v1\""))
        p[2] = '9';
    int fd = open(path, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, text, len, 0), (ssize_t)len);
    close(fd);
    json_t *problems = NULL;
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_reload(cat, &problems, &err), &err);
    json_decref(problems);
    char hex[HASH_HEX_LEN + 1];
    rt_tag(cat, "alpha", "v9", hex);
    assert_string_equal(hex, h1);
    rt_tag(cat, "alpha", "v1", hex);
    assert_string_equal(hex, "");
    free(text);
    free(path);
    catalog_close(cat);
}

static void test_invalid_json_keeps_last_good_snapshot(void **state)
{
    struct fixture *f = *state;
    struct catalog *cat = rt_open(f->root);
    char h1[HASH_HEX_LEN + 1], h2[HASH_HEX_LEN + 1];
    rt_add(cat, "alpha", 1, "v1", h1);
    rt_add(cat, "alpha", 2, "v2", h2);
    struct registry *before = catalog_snapshot(cat);
    write_registry(f, "{\"alpha\": {\"tags\": ");
    json_t *problems = (json_t *)1;
    struct err err = ERR_INIT;
    rt_assert_fails(catalog_reload(cat, &problems, &err), &err, ERR_INVALID);
    assert_null(problems);
    assert_non_null(strstr(err.message, "registry.json"));
    assert_non_null(strstr(err.message, "line"));
    err_clear(&err);
    struct registry *after = catalog_snapshot(cat);
    assert_ptr_equal(before, after);
    struct registry_resolution r;
    rt_assert_ok(registry_resolve_text(after, "alpha:v2", &r, &err), &err);
    registry_release(after);

    /* a change refuses to overwrite a file it cannot understand */
    rt_assert_fails(catalog_set_tag(cat, "alpha", "prod", h1, NULL, &err), &err, ERR_CONFLICT);
    assert_true(json_is_true(json_object_get(err.details, "servingPrevious")));
    err_clear(&err);
    char *path = registry_path(f);
    char *text = tu_read_file(path, NULL);
    assert_string_equal(text, "{\"alpha\": {\"tags\": ");
    free(text);
    free(path);
    after = catalog_snapshot(cat);
    assert_ptr_equal(before, after);
    registry_release(after);

    /* a format error is refused the same way */
    write_registry(f, "{\"alpha\": {\"tags\": {\"../x\": \"y\"}}}");
    rt_assert_fails(catalog_reload(cat, NULL, &err), &err, ERR_INVALID);
    err_clear(&err);

    /* once the file is fixed, everything works again */
    json_t *doc = registry_to_json(before);
    char *good = jsonutil_dump_pretty(doc, NULL);
    write_registry(f, good);
    free(good);
    json_decref(doc);
    rt_assert_ok(catalog_reload(cat, NULL, &err), &err);
    rt_assert_ok(catalog_set_tag(cat, "alpha", "prod", h1, NULL, &err), &err);
    registry_release(before);
    catalog_close(cat);
    rt_check_disk(f->root);
}

/* Sets a tag on alpha and checks that every byte from bravo's line on is
 * where and what it was, and that the file kept its size; returns the new
 * text. */
static char *tag_keeps_lines_after(struct catalog *cat, const char *path, const char *tag,
                                   const char *hex)
{
    size_t len = 0, len_after = 0;
    char *before = tu_read_file(path, &len);
    const char *bravo = strstr(before, "\n  \"bravo\"");
    assert_non_null(bravo);
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_set_tag(cat, "alpha", tag, hex, NULL, &err), &err);
    char *after = tu_read_file(path, &len_after);
    assert_int_equal(len_after, len);
    size_t at = (size_t)(bravo - before);
    assert_memory_equal(after + at, before + at, len - at);
    assert_memory_not_equal(after, before, at);
    free(before);
    return after;
}

/* Each strategy's line is padded to a room: a change that stays within
 * it leaves every other line at its offset (so the writer rewrites the
 * changed pages only), and one that outgrows it moves the lines after it
 * and gets a larger room. Every version parses to the same model. */
static void test_lines_keep_their_place(void **state)
{
    struct fixture *f = *state;
    struct catalog *cat = rt_open(f->root);
    char a1[HASH_HEX_LEN + 1], h[HASH_HEX_LEN + 1];
    rt_add(cat, "alpha", 1, "v1", a1);
    rt_add(cat, "bravo", 1, "v1", h);
    rt_add(cat, "charlie", 1, "v1", h);
    char *path = registry_path(f);
    char *after = tag_keeps_lines_after(cat, path, "prod", a1);
    size_t len1 = strlen(after);

    /* alpha grows past its room: the lines after it move */
    int n = 2;
    size_t len2 = len1;
    while (len2 == len1) {
        char tag[16];
        snprintf(tag, sizeof tag, "v%d", n);
        rt_add(cat, "alpha", n++, tag, h);
        free(tu_read_file(path, &len2));
        assert_true(n < 40);
    }
    assert_true(len2 > len1);

    /* a new process takes the rooms from the file: its first change keeps
     * the other lines in place too */
    catalog_close(cat);
    cat = rt_open(f->root);
    char *changed = tag_keeps_lines_after(cat, path, "stage", a1);
    assert_non_null(strstr(changed, "\"stage\""));
    free(changed);
    struct registry *snap = catalog_snapshot(cat);
    json_t *written = rt_load_json(path);
    json_t *model = registry_to_json(snap);
    assert_true(json_equal(written, model));
    json_decref(written);
    json_decref(model);
    registry_release(snap);
    free(after);
    free(path);
    catalog_close(cat);
    rt_check_disk(f->root);
}

/* registry.json must hold exactly the text of the published snapshot: the
 * whole document built afresh from the snapshot's lines and rooms. */
static void expect_file_is_snapshot(struct catalog *cat, const char *path)
{
    struct registry *snap = catalog_snapshot(cat);
    struct registry_text_buffer fresh = {0};
    size_t want_len = 0, got_len = 0;
    const char *want = registry__text_cached(snap, &fresh, &want_len);
    assert_non_null(want);
    char *got = tu_read_file(path, &got_len);
    assert_int_equal(got_len, want_len);
    assert_memory_equal(got, want, want_len);
    free(got);
    registry__text_buffer_free(&fresh);
    registry_release(snap);
}

/* Same-size edit of the spare behind the catalogue's back, late enough for
 * its times to move. */
static void scribble_on_spare(const struct fixture *f)
{
    char *spare = tu_path("%s/.registry.json.spare", f->root);
    usleep(20000);
    int fd = open(spare, O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, "#", 1, 3), 1);
    close(fd);
    free(spare);
}

/* A change that keeps the layout rewrites only the changed lines of the
 * spare (it holds the version before last); whatever the mix of changes
 * (several strategies, a line that outgrows its room, a new strategy, a
 * failed write, a reopened catalogue, a spare edited by someone else), the
 * file is byte for byte the snapshot's text after every one. */
static void test_every_write_is_the_whole_text(void **state)
{
    struct fixture *f = *state;
    struct catalog *cat = rt_open(f->root);
    char *path = registry_path(f);
    char ha[HASH_HEX_LEN + 1], hb[HASH_HEX_LEN + 1], hc[HASH_HEX_LEN + 1];
    rt_add(cat, "alpha", 1, "v1", ha);
    rt_add(cat, "bravo", 1, "v1", hb);
    rt_add(cat, "delta", 1, "v1", hc);
    struct err err = ERR_INIT;
    const char *names[] = {"alpha", "bravo", "delta"};
    const char *hexes[] = {ha, hb, hc};
    for (int i = 0; i < 12; i++) {
        char tag[16];
        snprintf(tag, sizeof tag, "t%d", i);
        rt_assert_ok(catalog_set_tag(cat, names[i % 3], tag, hexes[i % 3], NULL, &err), &err);
        expect_file_is_snapshot(cat, path);
        if (i == 4)
            scribble_on_spare(f);
        if (i == 7) {
            char hx[HASH_HEX_LEN + 1];
            rt_add(cat, "charlie", 1, "v1", hx); /* a new line between two */
            expect_file_is_snapshot(cat, path);
        }
    }
    for (int n = 2; n < 30; n++) { /* bravo outgrows its room on the way */
        char tag[16], hx[HASH_HEX_LEN + 1];
        snprintf(tag, sizeof tag, "v%d", n);
        rt_add(cat, "bravo", n, tag, hx);
        expect_file_is_snapshot(cat, path);
        snprintf(tag, sizeof tag, "m%d", n); /* alpha grows too */
        rt_assert_ok(catalog_set_tag(cat, "alpha", tag, ha, NULL, &err), &err);
        expect_file_is_snapshot(cat, path);
    }
    /* a refused change (unknown revision) writes nothing and breaks nothing */
    assert_int_equal(catalog_set_tag(cat, "alpha", "bad", "00", NULL, &err), -1);
    err_clear(&err);
    rt_assert_ok(catalog_set_tag(cat, "delta", "after", hc, NULL, &err), &err);
    expect_file_is_snapshot(cat, path);
    catalog_close(cat);
    cat = rt_open(f->root);
    for (int i = 0; i < 4; i++) {
        rt_assert_ok(catalog_set_tag(cat, names[i % 3], "again", hexes[i % 3], NULL, &err), &err);
        expect_file_is_snapshot(cat, path);
    }
    free(path);
    catalog_close(cat);
    rt_check_disk(f->root);
}

static void test_no_temporary_files_left(void **state)
{
    struct fixture *f = *state;
    struct catalog *cat = rt_open(f->root);
    char h[HASH_HEX_LEN + 1];
    for (int i = 0; i < 5; i++)
        rt_add(cat, "alpha", i, NULL, h);
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_delete_revision(cat, "alpha", h, NULL, NULL, &err), &err);
    /* each replaced registry.json is removed off the writer's path, and
     * closing waits for that */
    catalog_close(cat);
    char *out = NULL;
    assert_int_equal(tu_run(&out, "find '%s' -name '*.tmp*' -o -name '*.old.*' | wc -l", f->root),
                     0);
    assert_string_equal(out, "0\n");
    free(out);
    /* the version before last stays as the next write's spare */
    char *ls = rt_ls(f->root);
    assert_string_equal(ls, ".registry.json.spare\n.registry.lock\nalpha\nregistry.json\n");
    free(ls);

    /* a temporary registry left by a writer that died is cleared on open,
     * and so is a replaced one it had not removed yet */
    char *stale = tu_path("%s/registry.json.tmp.99999.3", f->root);
    tu_write_text(stale, "{\"partial");
    char *replaced = tu_path("%s/registry.json.old.99999.2", f->root);
    tu_write_text(replaced, "{}");
    /* and so are those of uploads killed before their rename: in a
     * registered revision's folder (the revision stays), and in the folder
     * of a revision that never made it into registry.json (the folder goes) */
    char live[HASH_HEX_LEN + 1];
    cat = rt_open(f->root);
    assert_false(fsutil_exists(stale));
    assert_false(fsutil_exists(replaced));
    free(replaced);
    rt_add(cat, "beta", 1, NULL, live);
    catalog_close(cat);
    char *beside = tu_path("%s/beta/%s/beta.js.tmp.4242.0", f->root, live);
    tu_write_text(beside, "partial");
    char *orphan_dir = tu_path("%s/beta/%064d", f->root, 7);
    char *orphan = tu_path("%s/beta.js.tmp.4242.1", orphan_dir);
    rt_assert_ok(fsutil_mkdirs(orphan_dir, 0755, &err), &err);
    tu_write_text(orphan, "partial");
    char *foreign = tu_path("%s/beta/%s/notes.txt.tmp.1.1", f->root, live);
    tu_write_text(foreign, "not a temporary of ours");
    cat = rt_open(f->root);
    assert_false(fsutil_exists(stale));
    assert_false(fsutil_exists(beside));
    assert_false(fsutil_exists(orphan));
    assert_false(fsutil_exists(orphan_dir));
    assert_true(fsutil_exists(foreign));
    struct registry *reg = catalog_snapshot(cat);
    const struct registry_revision *rev =
        registry_find_revision(registry_find_strategy(reg, "beta"), live);
    assert_non_null(rev);
    assert_false(rev->invalid);
    registry_release(reg);
    free(stale);
    free(beside);
    free(orphan_dir);
    free(orphan);
    free(foreign);
    catalog_close(cat);
}

/* The sweep on open takes only names of exactly the shapes the writers
 * make, and a hash folder only when it removed a leftover from it and
 * nothing else is left: an operator's backups that merely start like one
 * (in an old-layout tag folder, in the root), a folder or link named like
 * one, a file in a folder that is not a hash folder, all stay. */
static void test_sweep_takes_only_what_writers_leave(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    const char *keep[] = {
        "registry.json.old.2022",
        "registry.json.tmp.orig",
        "registry.json.tmp.1.2.3",
        "registry.json.tmp..1",
        "registry.json.tmp.12",
        "registry.json.tmp.5.6/inside",
        "registry.json.tmp.3.4x",
        ".upload.notes",
        ".upload.1",
        "momentum/v1.0.0/momentum.js",
        "momentum/v1.0.0/momentum.js.old.2023-01-01",
        "momentum/v0.9/momentum.js.old.keep",
        "momentum/v0.9/momentum.js.tmp.1.2",
        "momentum/"
        "0000000000000000000000000000000000000000000000000000000000000001"
        "/momentum.js.old.1.2",
        "momentum/"
        "0000000000000000000000000000000000000000000000000000000000000002"
        "/momentum.js.tmp.x",
        "momentum/"
        "000000000000000000000000000000000000000000000000000000000000000A"
        "/momentum.js.tmp.1.2",
        "momentum/"
        "0000000000000000000000000000000000000000000000000000000000000003"
        "/notes.txt",
        "other_name/"
        "0000000000000000000000000000000000000000000000000000000000000004"
        "/momentum.js.tmp.1.2",
    };
    const char *gone[] = {
        "registry.json.tmp.123.4",
        "registry.json.old.5.6",
        ".upload.77.8",
        "momentum/"
        "0000000000000000000000000000000000000000000000000000000000000003"
        "/momentum.js.tmp.9.10",
        "momentum/"
        "0000000000000000000000000000000000000000000000000000000000000005"
        "/momentum.js.tmp.11.12",
    };
    for (size_t i = 0; i < sizeof keep / sizeof *keep + sizeof gone / sizeof *gone; i++) {
        size_t nkeep = sizeof keep / sizeof *keep;
        char *path = tu_path("%s/%s", f->root, i < nkeep ? keep[i] : gone[i - nkeep]);
        char *dir = fsutil_dir_of(path);
        rt_assert_ok(fsutil_mkdirs(dir, 0755, &err), &err);
        tu_write_text(path, "an operator's bytes");
        free(dir);
        free(path);
    }
    char *empty = tu_path("%s/momentum/%064d", f->root, 6);
    rt_assert_ok(fsutil_mkdirs(empty, 0755, &err), &err);
    char *link = tu_path("%s/registry.json.tmp.7.8", f->root);
    assert_int_equal(symlink("registry.json.old.2022", link), 0);

    catalog_close(rt_open(f->root));

    for (size_t i = 0; i < sizeof keep / sizeof *keep; i++) {
        char *path = tu_path("%s/%s", f->root, keep[i]);
        if (!fsutil_exists(path))
            fail_msg("%s was removed", keep[i]);
        free(path);
    }
    for (size_t i = 0; i < sizeof gone / sizeof *gone; i++) {
        char *path = tu_path("%s/%s", f->root, gone[i]);
        if (fsutil_exists(path))
            fail_msg("%s was left", gone[i]);
        free(path);
    }
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(fsutil_is_dir(empty));
    char *swept = tu_path("%s/momentum/%064d", f->root, 5);
    assert_false(fsutil_exists(swept));
    free(swept);
    free(link);
    free(empty);
}

/* ------------------------------------------------------ metadata callback */

static atomic_int metadata_calls;

static json_t *describe(void *ctx, const char *name, const char *hex, const char *source,
                        size_t len, char **reason)
{
    (void)ctx;
    atomic_fetch_add(&metadata_calls, 1);
    char check[HASH_HEX_LEN + 1];
    hash_sha256_hex(source, len, check);
    assert_string_equal(check, hex);
    if (memmem(source, len, "BROKEN", 6)) {
        *reason = strdup("SyntaxError: unexpected token at line 1");
        return NULL;
    }
    return json_pack("{s:s, s:i}", "name", name, "length", (int)len);
}

static struct catalog *open_described(const struct fixture *f)
{
    struct catalog_options opts = {f->root, describe, NULL, false};
    struct catalog *cat = NULL;
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_open(&opts, &cat, &err), &err);
    return cat;
}

static void test_metadata_carried_over(void **state)
{
    struct fixture *f = *state;
    struct catalog *plain = rt_open(f->root);
    char h[HASH_HEX_LEN + 1], broken[HASH_HEX_LEN + 1];
    for (int i = 0; i < 100; i++)
        rt_add(plain, i % 2 ? "odd" : "even", i, NULL, h);
    struct catalog_upload_result result;
    struct err err = ERR_INIT;
    rt_assert_ok(rt_upload(plain, "odd", "BROKEN(", "bad", &result, &err), &err);
    memcpy(broken, result.hex, sizeof broken);
    catalog_close(plain);

    atomic_store(&metadata_calls, 0);
    struct catalog *cat = open_described(f);
    assert_int_equal(atomic_load(&metadata_calls), 101);
    struct registry *first = catalog_snapshot(cat);
    const struct registry_strategy *odd = registry_find_strategy(first, "odd");
    const struct registry_revision *bad = registry_find_revision(odd, broken);
    assert_true(bad->invalid);
    assert_non_null(strstr(bad->invalid_reason, "SyntaxError"));
    assert_int_equal(json_integer_value(json_object_get(registry_latest(odd)->metadata, "length")),
                     (json_int_t)registry_latest(odd)->size);

    /* nothing changed: no callback, and the same snapshot stays */
    rt_assert_ok(catalog_reload(cat, NULL, &err), &err);
    assert_int_equal(atomic_load(&metadata_calls), 101);
    struct registry *second = catalog_snapshot(cat);
    assert_ptr_equal(first, second);
    registry_release(second);

    /* another writer adds a revision to `even`: `odd` is shared untouched */
    struct catalog *other = rt_open(f->root);
    rt_add(other, "even", 1000, "new", h);
    catalog_close(other);
    rt_assert_ok(catalog_reload(cat, NULL, &err), &err);
    assert_int_equal(atomic_load(&metadata_calls), 102);
    second = catalog_snapshot(cat);
    assert_true(second->generation > first->generation);
    assert_ptr_equal(registry_find_strategy(second, "odd"), odd);
    assert_ptr_not_equal(registry_find_strategy(second, "even"),
                         registry_find_strategy(first, "even"));
    /* metadata is the same object, not a new callback result */
    assert_ptr_equal(registry_find_strategy(second, "even")->revisions[0].metadata,
                     registry_find_strategy(first, "even")->revisions[0].metadata);
    registry_release(second);
    registry_release(first);
    catalog_close(cat);
}

static void test_changes_share_unchanged_strategies(void **state)
{
    struct fixture *f = *state;
    struct catalog *cat = rt_open(f->root);
    char a1[HASH_HEX_LEN + 1], a2[HASH_HEX_LEN + 1], b1[HASH_HEX_LEN + 1];
    rt_add(cat, "alpha", 1, "v1", a1);
    rt_add(cat, "alpha", 2, "v2", a2);
    rt_add(cat, "beta", 1, NULL, b1);
    struct registry *s1 = catalog_snapshot(cat);
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_set_tag(cat, "alpha", "prod", a1, NULL, &err), &err);
    struct registry *s2 = catalog_snapshot(cat);
    assert_int_equal(s2->generation, s1->generation + 1);
    assert_ptr_equal(registry_find_strategy(s1, "beta"), registry_find_strategy(s2, "beta"));
    assert_ptr_not_equal(registry_find_strategy(s1, "alpha"), registry_find_strategy(s2, "alpha"));
    /* the old snapshot never changes */
    assert_null(registry_tag_target(registry_find_strategy(s1, "alpha"), "prod"));
    assert_string_equal(registry_tag_target(registry_find_strategy(s2, "alpha"), "prod"), a1);
    registry_release(s1);
    /* beta outlives s1 through s2 */
    assert_string_equal(registry_find_strategy(s2, "beta")->name, "beta");
    registry_release(s2);
    catalog_close(cat);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_needs_a_root),
        cmocka_unit_test_setup_teardown(test_missing_registry_is_empty, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_and_order, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hand_written_file_is_normalised, setup, teardown),
        cmocka_unit_test_setup_teardown(test_malformed_registry_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tags_and_latest_repaired_on_load, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_path_is_never_opened, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_bytes_detected_on_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_same_size_edit_in_place_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_registry_edit_in_place_after_write, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_json_keeps_last_good_snapshot, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_lines_keep_their_place, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_write_is_the_whole_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_temporary_files_left, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sweep_takes_only_what_writers_leave, setup, teardown),
        cmocka_unit_test_setup_teardown(test_metadata_carried_over, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_share_unchanged_strategies, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
