/*
 * The audit log: one valid JSON object per line, "ts" first, appended
 * (never truncated), whole lines even when threads append at once.
 */
#include "store_fixture.h"

#include "core/clock.h"

#include <pthread.h>
#include <signal.h>
#include <sys/resource.h>

#define THREADS 4
#define PER_THREAD 150

/* ------------------------------------------------------------- helpers */

static char *audit_path(const struct fixture *f)
{
    return tu_path("%s/%s", f->state, STORE_AUDIT_FILE);
}

/* Every line of the log, parsed; the test fails on a line that is not a
 * JSON object or on a missing final newline. */
static json_t *read_lines(const struct fixture *f)
{
    char *path = audit_path(f);
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    assert_non_null(text);
    json_t *lines = json_array();
    char *save = NULL;
    if (len > 0 && text[len - 1] != '\n')
        fail_msg("the audit log does not end with a newline");
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        json_error_t jerr;
        json_t *entry = json_loads(line, 0, &jerr);
        if (!json_is_object(entry))
            fail_msg("audit line is not a JSON object (%s): %s", jerr.text, line);
        json_array_append_new(lines, entry);
    }
    free(text);
    free(path);
    return lines;
}

static void append(struct store *s, json_t *entry)
{
    struct err err = ERR_INIT;
    assert_ok(store_audit_append(s, entry, &err), &err);
    json_decref(entry);
}

/* Appends {"n": n} and checks it became line `count` of the log. */
static void expect_appended_as_line(const struct fixture *f, int n, size_t count)
{
    append(f->store, json_pack("{s:i}", "n", n));
    json_t *lines = read_lines(f);
    assert_int_equal(json_array_size(lines), count);
    char path[32];
    snprintf(path, sizeof path, "%zu.n", count - 1);
    assert_int_equal(tu_jint(lines, path), n);
    json_decref(lines);
}

/* --------------------------------------------------------------- tests */

static void test_lines_are_json_with_ts(void **state)
{
    struct fixture *f = *state;
    int64_t before = clock_wall_ms();
    append(f->store, jparse("{\"action\": \"upload\", \"strategy\": \"momentum\", "
                            "\"details\": {\"tags\": [\"prod\", \"latest\"]}}"));
    append(f->store, jparse("{\"action\": \"note\", \"text\": \"two\\nlines \\\"quoted\\\"\"}"));
    append(f->store, jparse("{\"ts\": \"forged\", \"action\": \"delete\"}"));
    int64_t after = clock_wall_ms();

    json_t *lines = read_lines(f);
    assert_int_equal(json_array_size(lines), 3);
    size_t i;
    json_t *entry;
    json_array_foreach(lines, i, entry)
    {
        /* "ts" is the first key, RFC 3339, and within the calls' window. */
        void *first = json_object_iter(entry);
        assert_string_equal(json_object_iter_key(first), "ts");
        int64_t ts = 0;
        assert_int_equal(clock_parse_rfc3339(json_string_value(json_object_iter_value(first)), &ts),
                         0);
        assert_true(ts >= before && ts <= after);
    }
    json_t *first = json_array_get(lines, 0);
    assert_string_equal(tu_jstr(first, "details.tags.1"), "latest");
    assert_string_equal(tu_jstr(json_array_get(lines, 1), "text"), "two\nlines \"quoted\"");
    json_t *third = json_array_get(lines, 2);
    assert_string_not_equal(tu_jstr(third, "ts"), "forged");
    assert_int_equal(json_object_size(third), 2);
    json_decref(lines);
}

static void test_rejects_what_is_not_an_object(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *list = jparse("[1, 2]");
    assert_int_equal(store_audit_append(f->store, list, &err), -1);
    assert_int_equal(err.kind, ERR_INVALID);
    err_clear(&err);
    assert_int_equal(store_audit_append(f->store, NULL, &err), -1);
    assert_int_equal(err.kind, ERR_INVALID);
    err_clear(&err);
    assert_int_equal(store_audit_append(NULL, list, &err), -1);
    err_clear(&err);
    json_decref(list);
    json_t *lines = read_lines(f);
    assert_int_equal(json_array_size(lines), 0);
    json_decref(lines);
}

static void test_reopening_appends(void **state)
{
    struct fixture *f = *state;
    append(f->store, jparse("{\"n\": 1}"));
    store_close(f->store);
    f->store = fixture_open(f->state);
    append(f->store, jparse("{\"n\": 2}"));
    json_t *lines = read_lines(f);
    assert_int_equal(json_array_size(lines), 2);
    assert_int_equal(tu_jint(lines, "0.n"), 1);
    assert_int_equal(tu_jint(lines, "1.n"), 2);
    json_decref(lines);
}

/* A crash in the middle of an append can leave a partial line; the next
 * open cuts it off so new lines do not get glued to it, and times the
 * repair's sync with the audit log's others. */
static void test_partial_last_line_is_removed(void **state)
{
    struct fixture *f = *state;
    append(f->store, jparse("{\"n\": 1}"));
    store_close(f->store);
    f->store = NULL;
    char *path = audit_path(f);
    char *text = tu_read_file(path, NULL);
    char *torn = tu_path("%s{\"n\": 2, \"pad\": \"abc", text);
    tu_write_text(path, torn);

    f->store = fixture_open(f->state);
    assert_int_equal(store_sync_count(f->store, STORE_SYNC_AUDIT), 1); /* the repair's */
    size_t len = 0;
    char *repaired = tu_read_file(path, &len);
    assert_string_equal(repaired, text);
    expect_appended_as_line(f, 3, 2);

    /* A log holding only a partial line is emptied. */
    store_close(f->store);
    f->store = NULL;
    tu_write_text(path, "{\"partial");
    f->store = fixture_open(f->state);
    free(repaired);
    repaired = tu_read_file(path, &len);
    assert_int_equal(len, 0);
    free(repaired);
    free(torn);
    free(text);
    free(path);
}

/* An append the disk cannot take whole (here the file size limit, as a
 * full disk would) fails with a message naming the log and leaves no
 * partial line behind: the lines before it stay, and the next append after
 * the disk frees up is a line of its own. */
static void test_failed_append_leaves_the_log_whole(void **state)
{
    struct fixture *f = *state;
    append(f->store, jparse("{\"n\": 1}"));
    char *path = audit_path(f);
    size_t before_len = 0;
    char *before = tu_read_file(path, &before_len);

    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN); /* EFBIG instead */
    struct rlimit tight = {(rlim_t)before_len + 16, saved.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &tight), 0);
    struct err err = ERR_INIT;
    json_t *entry = jparse("{\"n\": 2, \"pad\": \"a line longer than sixteen bytes\"}");
    int rc = store_audit_append(f->store, entry, &err);
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, old_handler);
    json_decref(entry);

    assert_int_equal(rc, -1);
    assert_non_null(strstr(err.message, "cannot append to audit log"));
    err_clear(&err);
    size_t after_len = 0;
    char *after = tu_read_file(path, &after_len);
    assert_int_equal(after_len, before_len);
    assert_string_equal(after, before);

    expect_appended_as_line(f, 3, 2);
    free(after);
    free(before);
    free(path);
}

struct writer {
    struct store *store;
    int id;
    int failures;
};

static void *write_many(void *arg)
{
    struct writer *w = arg;
    char pad[512];
    memset(pad, 'a' + w->id, sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    for (int i = 0; i < PER_THREAD; i++) {
        struct err err = ERR_INIT;
        json_t *entry = json_pack("{s:i, s:i, s:s}", "thread", w->id, "seq", i, "pad", pad);
        if (!entry || store_audit_append(w->store, entry, &err) != 0)
            w->failures++;
        err_clear(&err);
        json_decref(entry);
    }
    return NULL;
}

/* Lines from threads appending at once never interleave: each is whole,
 * and each thread's lines appear once, in its own order. */
static void test_concurrent_appends_stay_whole(void **state)
{
    struct fixture *f = *state;
    pthread_t threads[THREADS];
    struct writer writers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        writers[t] = (struct writer){f->store, t, 0};
        assert_int_equal(pthread_create(&threads[t], NULL, write_many, &writers[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        assert_int_equal(writers[t].failures, 0);
    }
    json_t *lines = read_lines(f);
    assert_int_equal(json_array_size(lines), THREADS * PER_THREAD);
    int next[THREADS] = {0};
    size_t i;
    json_t *entry;
    json_array_foreach(lines, i, entry)
    {
        int t = (int)json_integer_value(json_object_get(entry, "thread"));
        assert_true(t >= 0 && t < THREADS);
        assert_int_equal(json_integer_value(json_object_get(entry, "seq")), next[t]);
        assert_int_equal(strlen(json_string_value(json_object_get(entry, "pad"))), 511);
        next[t]++;
    }
    json_decref(lines);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, fixture_setup, fixture_teardown)
    const struct CMUnitTest tests[] = {
        T(test_lines_are_json_with_ts),
        T(test_rejects_what_is_not_an_object),
        T(test_reopening_appends),
        T(test_partial_last_line_is_removed),
        T(test_failed_append_leaves_the_log_whole),
        T(test_concurrent_appends_stay_whole),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
