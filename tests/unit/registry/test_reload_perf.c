/*
 * A catalogue of many revisions (2,000 files of about 5 KB in the suite;
 * STRATD_REGISTRY_PERF_REVISIONS=10000 for the full-size measurement, which
 * spends most of its time creating the tree): open, a reload that finds
 * nothing new, a single change, and a reload after another writer changed
 * one strategy.
 * The metadata callback must not run again for bytes already verified, and
 * unchanged strategies must be shared between snapshots. The times are
 * printed for whoever reads the log; make bench owns the targets.
 */
#include "regtest.h"

#include "core/clock.h"
#include "core/log.h"

#include <stdatomic.h>

#define STRATEGIES 100
#define FILE_SIZE 5000
#define DEFAULT_REVISIONS 2000

static atomic_int calls;

static json_t *describe(void *ctx, const char *name, const char *hex, const char *source,
                        size_t len, char **reason)
{
    (void)ctx;
    (void)hex;
    (void)source;
    (void)reason;
    atomic_fetch_add(&calls, 1);
    return json_pack("{s:s, s:i}", "name", name, "size", (int)len);
}

static char *make_source(const char *name, int n)
{
    char *source = malloc(FILE_SIZE + 1);
    int used = snprintf(source, FILE_SIZE + 1,
                        "module.exports = { metadata: { name: '%s', build: %d } };\n", name, n);
    for (int i = used; i < FILE_SIZE; i++)
        source[i] = (char)(i % 64 == 63 ? '\n' : 'a' + (i + n) % 26);
    source[FILE_SIZE] = '\0';
    return source;
}

/* Writes the tree directly (as a restore from backup would) rather than
 * through the catalogue, which would rewrite registry.json 10,000 times. */
static void build_tree(const char *root, int revisions)
{
    json_t *doc = json_object();
    char name[32], hex[HASH_HEX_LEN + 1], spelled[HASH_SPELLED_LEN + 1];
    for (int i = 0; i < revisions; i++) {
        snprintf(name, sizeof name, "strategy-%03d", i % STRATEGIES);
        char *source = make_source(name, i);
        hash_sha256_hex(source, FILE_SIZE, hex);
        char *dir = tu_path("%s/%s/%s", root, name, hex);
        struct err err = ERR_INIT;
        rt_assert_ok(fsutil_mkdirs(dir, 0755, &err), &err);
        char *path = tu_path("%s/%s.js", dir, name);
        tu_write_file(path, source, FILE_SIZE);
        json_t *st = json_object_get(doc, name);
        if (!st) {
            st = json_pack("{s:{}, s:{}}", "tags", "hashes");
            json_object_set_new(doc, name, st);
        }
        hash_spell(hex, spelled);
        char *tag = tu_path("v%d", i);
        char *rel = tu_path("%s/%s/%s.js", name, hex, name);
        json_object_set_new(json_object_get(st, "hashes"), spelled,
                            json_pack("{s:s, s:s}", "tag", tag, "path", rel));
        json_object_set_new(json_object_get(st, "tags"), tag, json_string(spelled));
        json_object_set_new(json_object_get(st, "tags"), "latest", json_string(spelled));
        free(rel);
        free(tag);
        free(path);
        free(dir);
        free(source);
    }
    char *text = jsonutil_dump_pretty(doc, NULL);
    char *path = tu_path("%s/registry.json", root);
    tu_write_text(path, text);
    free(path);
    free(text);
    json_decref(doc);
}

static double ms_since(int64_t start)
{
    return (double)(clock_mono_ns() - start) / 1e6;
}

static double timed_reload(struct catalog *cat)
{
    struct err err = ERR_INIT;
    int64_t start = clock_mono_ns();
    rt_assert_ok(catalog_reload(cat, NULL, &err), &err);
    return ms_since(start);
}

static void test_many_revisions(void **state)
{
    (void)state;
    log_set_level(LOG_LEVEL_WARN);
    const char *env = getenv("STRATD_REGISTRY_PERF_REVISIONS");
    int revisions = env ? atoi(env) : DEFAULT_REVISIONS;
    if (revisions < STRATEGIES)
        revisions = STRATEGIES;
    char *root = tu_tempdir("registry-perf");
    build_tree(root, revisions);

    struct catalog_options opts = {root, describe, NULL, false};
    struct catalog *cat = NULL;
    struct err err = ERR_INIT;
    int64_t start = clock_mono_ns();
    rt_assert_ok(catalog_open(&opts, &cat, &err), &err);
    double open_ms = ms_since(start);
    assert_int_equal(atomic_load(&calls), revisions);
    struct registry *first = catalog_snapshot(cat);
    assert_int_equal(first->nstrategies, STRATEGIES);

    double best = 1e9;
    for (int i = 0; i < 3; i++) {
        double ms = timed_reload(cat);
        best = ms < best ? ms : best;
    }
    assert_int_equal(atomic_load(&calls), revisions);
    struct registry *same = catalog_snapshot(cat);
    assert_ptr_equal(same, first);
    registry_release(same);

    /* one change copies one strategy and shares the other 99 */
    const struct registry_strategy *st0 = first->strategies[0];
    start = clock_mono_ns();
    rt_assert_ok(catalog_set_tag(cat, st0->name, "prod", st0->revisions[0].hex, NULL, &err), &err);
    double change_ms = ms_since(start);
    struct registry *second = catalog_snapshot(cat);
    for (size_t s = 1; s < STRATEGIES; s++)
        assert_ptr_equal(second->strategies[s], first->strategies[s]);
    assert_ptr_not_equal(second->strategies[0], first->strategies[0]);

    /* another writer changes one strategy: a reload re-hashes everything
     * but describes nothing again, and shares the untouched strategies */
    struct catalog *other = rt_open(root);
    const struct registry_strategy *st1 = first->strategies[1];
    rt_assert_ok(catalog_set_tag(other, st1->name, "prod", st1->revisions[0].hex, NULL, &err),
                 &err);
    catalog_close(other);
    double changed_ms = timed_reload(cat);
    assert_int_equal(atomic_load(&calls), revisions);
    struct registry *third = catalog_snapshot(cat);
    assert_ptr_equal(third->strategies[0], second->strategies[0]);
    assert_ptr_not_equal(third->strategies[1], second->strategies[1]);
    assert_ptr_equal(third->strategies[2], first->strategies[2]);
    assert_ptr_equal(third->strategies[1]->revisions[0].metadata,
                     first->strategies[1]->revisions[0].metadata);

    print_message("%d revisions: open %.1f ms, no-change reload %.1f ms, one change %.1f ms, "
                  "reload after another writer %.1f ms\n",
                  revisions, open_ms, best, change_ms, changed_ms);
    registry_release(third);
    registry_release(second);
    registry_release(first);
    catalog_close(cat);
    tu_remove_tree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_many_revisions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
