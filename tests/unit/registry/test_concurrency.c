/*
 * Readers take snapshots and resolve selectors on several threads while one
 * thread changes the catalogue and another reloads it. Every snapshot a
 * reader sees must be internally consistent, and generations never go back.
 */
#include "regtest.h"

#include "core/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <unistd.h>

#define READERS 4
#define WRITES 120

struct shared {
    struct catalog *cat;
    atomic_bool stop;
    atomic_long reads;
    atomic_int failures;
    char first_error[1024];
    pthread_mutex_t error_mu;
};

__attribute__((format(printf, 2, 3))) static void report(struct shared *sh, const char *fmt, ...)
{
    pthread_mutex_lock(&sh->error_mu);
    if (atomic_fetch_add(&sh->failures, 1) == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(sh->first_error, sizeof sh->first_error, fmt, ap);
        va_end(ap);
    }
    pthread_mutex_unlock(&sh->error_mu);
}

/* Sorted tags, each naming a revision; orders increasing; `latest` set. */
static void check_snapshot(struct shared *sh, const struct registry *reg)
{
    for (size_t s = 0; s < reg->nstrategies; s++) {
        const struct registry_strategy *st = reg->strategies[s];
        if (s > 0 && strcmp(reg->strategies[s - 1]->name, st->name) >= 0)
            report(sh, "strategies out of order at %s", st->name);
        if (!registry_latest(st))
            report(sh, "%s has no latest", st->name);
        for (size_t t = 0; t < st->ntags; t++) {
            if (t > 0 && strcmp(st->tags[t - 1].tag, st->tags[t].tag) >= 0)
                report(sh, "tags of %s out of order at %s", st->name, st->tags[t].tag);
            if (!registry_find_revision(st, st->tags[t].hex))
                report(sh, "tag %s:%s names no revision", st->name, st->tags[t].tag);
        }
        for (size_t r = 1; r < st->nrevisions; r++) {
            if (st->revisions[r].order <= st->revisions[r - 1].order)
                report(sh, "revisions of %s out of order", st->name);
        }
    }
}

static void read_once(struct shared *sh, uint64_t *last_generation, long i)
{
    struct registry *reg = catalog_snapshot(sh->cat);
    if (reg->generation < *last_generation)
        report(sh, "generation went back");
    *last_generation = reg->generation;
    check_snapshot(sh, reg);
    const char *selectors[] = {"alpha", "alpha:prod", "beta", "alpha:v1"};
    for (size_t k = 0; k < 4; k++) {
        struct registry_resolution r;
        struct err err = ERR_INIT;
        if (registry_resolve_text(reg, selectors[k], &r, &err) != 0)
            report(sh, "%s: %s", selectors[k], err.message);
        else if (r.revision->invalid || strcmp(r.strategy->name, k == 2 ? "beta" : "alpha") != 0)
            report(sh, "%s resolved to the wrong place", selectors[k]);
        err_clear(&err);
    }
    if (i % 16 == 0) {
        json_t *doc = registry_to_json(reg);
        json_t *tags =
            registry_tags_of(registry_find_strategy(reg, "alpha"),
                             registry_tag_target(registry_find_strategy(reg, "alpha"), "latest"));
        if (!doc || json_array_size(tags) == 0)
            report(sh, "export failed");
        json_decref(tags);
        json_decref(doc);
    }
    registry_release(reg);
}

static void *reader(void *arg)
{
    struct shared *sh = arg;
    uint64_t last = 0;
    for (long i = 0; !atomic_load(&sh->stop); i++) {
        read_once(sh, &last, i);
        atomic_fetch_add(&sh->reads, 1);
    }
    return NULL;
}

static void *reloader(void *arg)
{
    struct shared *sh = arg;
    while (!atomic_load(&sh->stop)) {
        struct err err = ERR_INIT;
        if (catalog_reload(sh->cat, NULL, &err) != 0)
            report(sh, "reload: %s", err.message);
        err_clear(&err);
        usleep(2000);
    }
    return NULL;
}

/* The oldest alpha revision that no fixed tag needs, or "". */
static void pick_victim(struct catalog *cat, char hex[HASH_HEX_LEN + 1])
{
    struct registry *reg = catalog_snapshot(cat);
    const struct registry_strategy *st = registry_find_strategy(reg, "alpha");
    hex[0] = '\0';
    for (size_t r = 0; st->nrevisions > 4 && r < st->nrevisions; r++) {
        json_t *tags = registry_tags_of(st, st->revisions[r].hex);
        bool free_to_go = json_array_size(tags) == 0;
        json_decref(tags);
        if (free_to_go) {
            memcpy(hex, st->revisions[r].hex, HASH_HEX_LEN + 1);
            break;
        }
    }
    registry_release(reg);
}

static void writer(struct shared *sh, const char *h1, const char *h2)
{
    struct err err = ERR_INIT;
    for (int i = 0; i < WRITES; i++) {
        if (i % 3 == 2) {
            char *source = rt_source("alpha", 1000 + i);
            const char *aliases[] = {"canary"};
            const char *reassign[] = {"build"};
            struct catalog_upload up = {.name = "alpha",
                                        .source = source,
                                        .len = strlen(source),
                                        .tag = "build",
                                        .aliases = aliases,
                                        .naliases = 1,
                                        .reassign = reassign,
                                        .nreassign = 1,
                                        .promote_latest = i % 2 == 0};
            struct catalog_upload_result result;
            rt_assert_ok(catalog_add_revision(sh->cat, &up, &result, &err), &err);
            free(source);
        } else {
            rt_assert_ok(catalog_set_tag(sh->cat, "alpha", "prod", i % 2 ? h1 : h2, NULL, &err),
                         &err);
        }
        char victim[HASH_HEX_LEN + 1];
        pick_victim(sh->cat, victim);
        if (i % 5 == 0 && victim[0])
            rt_assert_ok(catalog_delete_revision(sh->cat, "alpha", victim, NULL, NULL, &err), &err);
    }
}

static void test_readers_while_writing(void **state)
{
    (void)state;
    log_set_level(LOG_LEVEL_WARN);
    char *root = tu_tempdir("registry-threads");
    struct shared sh = {.cat = rt_open(root)};
    pthread_mutex_init(&sh.error_mu, NULL);
    char h1[HASH_HEX_LEN + 1], h2[HASH_HEX_LEN + 1], b1[HASH_HEX_LEN + 1];
    rt_add(sh.cat, "alpha", 1, "v1", h1);
    rt_add(sh.cat, "alpha", 2, "v2", h2);
    rt_add(sh.cat, "beta", 1, NULL, b1);
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_set_tag(sh.cat, "alpha", "prod", h1, NULL, &err), &err);

    pthread_t threads[READERS + 1];
    for (int i = 0; i < READERS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, reader, &sh), 0);
    assert_int_equal(pthread_create(&threads[READERS], NULL, reloader, &sh), 0);
    writer(&sh, h1, h2);
    atomic_store(&sh.stop, true);
    for (int i = 0; i <= READERS; i++)
        pthread_join(threads[i], NULL);

    if (atomic_load(&sh.failures))
        fail_msg("%d inconsistent reads; first: %s", atomic_load(&sh.failures), sh.first_error);
    assert_true(atomic_load(&sh.reads) > READERS);
    print_message("%ld snapshot reads during %d writes\n", atomic_load(&sh.reads), WRITES);
    struct registry *reg = catalog_snapshot(sh.cat);
    assert_true(reg->generation > WRITES / 2);
    registry_release(reg);
    catalog_close(sh.cat);
    rt_check_disk(root);
    pthread_mutex_destroy(&sh.error_mu);
    tu_remove_tree(root);
    free(root);
}

/* ------------------------------------------------- each change's report */

#define MOVERS 4
#define MOVES 8

/* What one upload reported: where `latest` was before and after it. */
struct move_report {
    char hex[HASH_HEX_LEN + 1];
    char from[HASH_HEX_LEN + 1];
    char to[HASH_HEX_LEN + 1];
};

struct mover {
    struct catalog *cat;
    int index;
    struct move_report moves[MOVES];
};

static void latest_of(const struct registry *reg, char hex[HASH_HEX_LEN + 1])
{
    const char *target = registry_tag_target(registry_find_strategy(reg, "alpha"), "latest");
    snprintf(hex, HASH_HEX_LEN + 1, "%s", target ? target : "");
}

static void *mover_main(void *arg)
{
    struct mover *m = arg;
    for (int i = 0; i < MOVES; i++) {
        char *source = rt_source("alpha", 100 * (m->index + 1) + i);
        struct catalog_change change = {NULL, NULL};
        struct catalog_upload up = {.name = "alpha",
                                    .source = source,
                                    .len = strlen(source),
                                    .promote_latest = true,
                                    .change = &change};
        struct catalog_upload_result result;
        struct err err = ERR_INIT;
        struct move_report *r = &m->moves[i];
        if (catalog_add_revision(m->cat, &up, &result, &err) == 0 && change.before &&
            change.after) {
            memcpy(r->hex, result.hex, sizeof r->hex);
            latest_of(change.before, r->from);
            latest_of(change.after, r->to);
        }
        catalog_change_release(&change);
        err_clear(&err);
        free(source);
    }
    return NULL;
}

/* Uploads on several threads at once, each moving `latest`: each one's
 * report shows its own move and no other, so the moves chain from the
 * first revision to the last with every upload's revision once. */
static void test_each_change_reports_its_own_moves(void **state)
{
    (void)state;
    log_set_level(LOG_LEVEL_WARN);
    char *root = tu_tempdir("registry-change-reports");
    struct catalog *cat = rt_open(root);
    char base[HASH_HEX_LEN + 1];
    rt_add(cat, "alpha", 1, NULL, base);
    struct mover movers[MOVERS];
    pthread_t threads[MOVERS];
    for (int i = 0; i < MOVERS; i++) {
        memset(&movers[i], 0, sizeof movers[i]);
        movers[i].cat = cat;
        movers[i].index = i;
        assert_int_equal(pthread_create(&threads[i], NULL, mover_main, &movers[i]), 0);
    }
    for (int i = 0; i < MOVERS; i++)
        pthread_join(threads[i], NULL);

    char final[HASH_HEX_LEN + 1];
    rt_tag(cat, "alpha", "latest", final);
    size_t from_base = 0;
    for (int i = 0; i < MOVERS * MOVES; i++) {
        const struct move_report *r = &movers[i / MOVES].moves[i % MOVES];
        if (!r->hex[0])
            fail_msg("upload %d failed or reported no change", i);
        if (strcmp(r->to, r->hex) != 0)
            fail_msg("upload %d reports latest -> %.12s, not its own %.12s", i, r->to, r->hex);
        from_base += strcmp(r->from, base) == 0;
        /* every `from` is the revision of exactly one other upload (or the base) */
        size_t sources = strcmp(r->from, base) == 0;
        for (int j = 0; j < MOVERS * MOVES; j++)
            sources += strcmp(movers[j / MOVES].moves[j % MOVES].to, r->from) == 0;
        if (sources != 1 || strcmp(r->from, r->hex) == 0)
            fail_msg("upload %d reports latest from %.12s, which %zu moves led to", i, r->from,
                     sources);
        for (int j = i + 1; j < MOVERS * MOVES; j++) {
            if (strcmp(movers[j / MOVES].moves[j % MOVES].from, r->from) == 0)
                fail_msg("uploads %d and %d both report latest leaving %.12s", i, j, r->from);
        }
    }
    assert_int_equal(from_base, 1);

    /* A delete reports its own move too; a no-op upload reports none. */
    struct catalog_change change = {NULL, NULL};
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_delete_revision_noting(cat, "alpha", final, NULL, NULL, &change, &err),
                 &err);
    char from[HASH_HEX_LEN + 1], to[HASH_HEX_LEN + 1];
    latest_of(change.before, from);
    latest_of(change.after, to);
    assert_string_equal(from, final);
    assert_non_null(registry_find_strategy(change.after, "alpha"));
    assert_null(registry_find_revision(registry_find_strategy(change.after, "alpha"), final));
    assert_string_not_equal(to, final);
    catalog_change_release(&change);
    assert_null(change.before);
    /* the base again, where latest already is: nothing to change */
    rt_assert_ok(catalog_set_tag(cat, "alpha", "latest", base, NULL, &err), &err);
    char *again = rt_source("alpha", 1);
    struct catalog_upload up = {
        .name = "alpha", .source = again, .len = strlen(again), .change = &change};
    struct catalog_upload_result result;
    rt_assert_ok(catalog_add_revision(cat, &up, &result, &err), &err);
    assert_ptr_equal(change.before, change.after);
    catalog_change_release(&change);
    rt_assert_ok(catalog_delete_strategy_noting(cat, "alpha", NULL, NULL, &change, &err), &err);
    assert_non_null(registry_find_strategy(change.before, "alpha"));
    assert_null(registry_find_strategy(change.after, "alpha"));
    catalog_change_release(&change);
    /* a refused change reports nothing */
    rt_assert_fails(catalog_delete_strategy_noting(cat, "alpha", NULL, NULL, &change, &err), &err,
                    ERR_NOT_FOUND);
    assert_null(change.before);
    assert_null(change.after);
    err_clear(&err);
    free(again);
    catalog_close(cat);
    tu_remove_tree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_readers_while_writing),
        cmocka_unit_test(test_each_change_reports_its_own_moves),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
