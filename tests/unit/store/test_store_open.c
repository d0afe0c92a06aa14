/*
 * The store's life cycle: creating and migrating the database, refusing
 * what it must refuse, error kinds, the integrity check.
 */
#include "store_fixture.h"

#include "core/strbuf.h"
#include "store/store_internal.h"

#include <errno.h>
#include <signal.h>
#include <sqlite3.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------- helpers */

static sqlite3 *raw_open(const char *state)
{
    char *path = tu_path("%s/%s", state, STORE_DB_FILE);
    sqlite3 *db = NULL;
    if (sqlite3_open(path, &db) != SQLITE_OK)
        fail_msg("sqlite3_open %s: %s", path, db ? sqlite3_errmsg(db) : "?");
    free(path);
    return db;
}

static void raw_exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("%s: %s", sql, msg ? msg : "?");
}

static long long raw_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    long long v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static char *raw_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    char *v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("'%s' does not contain '%s'", haystack, needle);
}

static void expect_open_failure(const char *state, enum err_kind kind, const char *needle)
{
    struct err err = ERR_INIT;
    struct store *store = (struct store *)0x1;
    assert_int_equal(store_open(state, &store, &err), -1);
    assert_null(store);
    if (err.kind != kind)
        fail_msg("expected %s, got %s: %s", err_kind_name(kind), err_kind_name(err.kind),
                 err.message);
    assert_contains(err.message, needle);
    err_clear(&err);
}

/* --------------------------------------------------------------- tests */

static void test_open_creates_directory_and_schema(void **state)
{
    (void)state;
    char *root = tu_tempdir("store");
    char *dir = tu_path("%s/a/b/state", root);
    struct store *store = fixture_open(dir);
    struct err err = ERR_INIT;
    assert_ok(store_check_integrity(store, &err), &err);
    store_close(store);

    char *audit = tu_path("%s/%s", dir, STORE_AUDIT_FILE);
    assert_true(access(audit, F_OK) == 0);
    sqlite3 *db = raw_open(dir);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), STORE__SCHEMA_VERSION);
    char *mode = raw_text(db, "PRAGMA journal_mode");
    assert_string_equal(mode, "wal");
    const char *tables[] = {"instances", "usage",     "module_metadata", "orders",   "executions",
                            "balances",  "providers", "settings",        "positions"};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        char *sql = tu_path("SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = "
                            "'%s'",
                            tables[i]);
        if (raw_int(db, sql) != 1)
            fail_msg("table %s is missing", tables[i]);
        free(sql);
    }
    sqlite3_close(db);
    free(mode);
    free(audit);
    tu_remove_tree(root);
    free(dir);
    free(root);
}

static mode_t others_bits(const char *dir, const char *file)
{
    char *path = tu_path("%s/%s", dir, file);
    struct stat st;
    if (stat(path, &st) != 0)
        fail_msg("%s is missing", path);
    free(path);
    return st.st_mode & 0007;
}

/* The database holds every order, balance and instance config: it and its
 * -wal and -shm are for the gateway's user and group only, like the audit
 * log (SQLite made them 0644 less the umask), and a database an earlier
 * version left readable to all is tightened. */
static void test_state_files_are_private(void **state)
{
    (void)state;
    mode_t old_mask = umask(022);
    char *root = tu_tempdir("store");
    struct store *store = fixture_open(root);
    struct err err = ERR_INIT;
    json_t *spec = jparse("{\"id\": \"a\", \"strategy\": {}, \"scope\": {}}");
    assert_ok(store_instance_put(store, "a", spec, true, NULL, &err), &err);
    static const char *const files[] = {STORE_DB_FILE, STORE_DB_FILE "-wal", STORE_DB_FILE "-shm",
                                        STORE_AUDIT_FILE};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (others_bits(root, files[i]))
            fail_msg("%s is readable or writable by other users", files[i]);
    store_close(store);
    char *db_path = tu_path("%s/%s", root, STORE_DB_FILE);
    char *audit_path = tu_path("%s/%s", root, STORE_AUDIT_FILE);
    assert_int_equal(chmod(db_path, 0644), 0);
    assert_int_equal(chmod(audit_path, 0644), 0);
    store = fixture_open(root);
    assert_int_equal(others_bits(root, STORE_DB_FILE), 0);
    assert_int_equal(others_bits(root, STORE_AUDIT_FILE), 0);
    free(audit_path);
    store_close(store);
    umask(old_mask);
    json_decref(spec);
    tu_remove_tree(root);
    free(db_path);
    free(root);
}

static void test_migrates_an_empty_file(void **state)
{
    (void)state;
    char *root = tu_tempdir("store");
    char *db_path = tu_path("%s/%s", root, STORE_DB_FILE);
    tu_write_text(db_path, "");
    struct store *store = fixture_open(root);
    struct err err = ERR_INIT;
    json_t *spec = jparse("{\"id\": \"a\", \"strategy\": {}, \"scope\": {}}");
    assert_ok(store_instance_put(store, "a", spec, true, NULL, &err), &err);
    store_close(store);

    /* Reopening applies nothing again and keeps the data. */
    store = fixture_open(root);
    json_t *list = NULL;
    assert_ok(store_instance_list(store, &list, &err), &err);
    assert_int_equal(json_array_size(list), 1);
    store_close(store);
    sqlite3 *db = raw_open(root);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), STORE__SCHEMA_VERSION);
    sqlite3_close(db);

    json_decref(list);
    json_decref(spec);
    tu_remove_tree(root);
    free(db_path);
    free(root);
}

/* An empty database beside an audit log that records changes is a lost
 * state, not a new one: refused, naming both, until the log is moved away
 * (or the database restored). */
static void test_refuses_an_emptied_database(void **state)
{
    (void)state;
    char *root = tu_tempdir("store");
    struct store *store = fixture_open(root);
    struct err err = ERR_INIT;
    json_t *spec = jparse("{\"id\": \"a\", \"strategy\": {}, \"scope\": {}}");
    assert_ok(store_instance_put(store, "a", spec, true, NULL, &err), &err);
    json_t *entry = jparse("{\"actor\": \"ops\", \"action\": \"instance.create\"}");
    assert_ok(store_audit_append(store, entry, &err), &err);
    store_close(store);
    char *db_path = tu_path("%s/%s", root, STORE_DB_FILE);
    tu_write_text(db_path, "");
    expect_open_failure(root, ERR_INVALID, "the state was lost");
    expect_open_failure(root, ERR_INVALID, STORE_AUDIT_FILE);
    struct stat st;
    assert_int_equal(stat(db_path, &st), 0);
    assert_int_equal(st.st_size, 0); /* untouched */
    assert_int_equal(unlink(db_path), 0);
    expect_open_failure(root, ERR_INVALID, "is missing");

    char *audit = tu_path("%s/%s", root, STORE_AUDIT_FILE);
    char *aside = tu_path("%s.old", audit);
    assert_int_equal(rename(audit, aside), 0);
    store = fixture_open(root);
    json_t *list = NULL;
    assert_ok(store_instance_list(store, &list, &err), &err);
    assert_int_equal(json_array_size(list), 0);
    store_close(store);
    json_decref(list);
    json_decref(entry);
    json_decref(spec);
    tu_remove_tree(root);
    free(aside);
    free(audit);
    free(db_path);
    free(root);
}

static void test_refuses_a_newer_schema(void **state)
{
    (void)state;
    char *root = tu_tempdir("store");
    sqlite3 *db = raw_open(root);
    char *sql = tu_path("PRAGMA user_version = %d", STORE__SCHEMA_VERSION + 1);
    raw_exec(db, sql);
    sqlite3_close(db);

    expect_open_failure(root, ERR_INVALID, "state was written by a newer stratd");
    expect_open_failure(root, ERR_INVALID, STORE_DB_FILE);
    db = raw_open(root);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), STORE__SCHEMA_VERSION + 1);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema"), 0);
    sqlite3_close(db);
    free(sql);
    tu_remove_tree(root);
    free(root);
}

/* A state written at schema version 1 (before the positions table) gets
 * the positions of the executions it already holds for the instances it
 * still has (not those of "gone", deleted before), and later executions
 * move them. */
static void test_migration_sums_earlier_executions(void **state)
{
    (void)state;
    char *root = tu_tempdir("store");
    struct store *store = fixture_open(root);
    struct err err = ERR_INIT;
    json_t *fills = jparse(
        "[{\"orderId\": \"o1\", \"provider\": \"sim\", \"strategyInstance\": \"a\","
        "  \"executionId\": \"e1\", \"quantity\": \"2.5\", \"tradedAt\": 1, \"createdAt\": 1,"
        "  \"metadata\": {\"symbol\": \"BTC-USDT\", \"side\": \"buy\"}},"
        " {\"orderId\": \"o2\", \"provider\": \"sim\", \"strategyInstance\": \"a\","
        "  \"executionId\": \"e2\", \"quantity\": \"1\", \"tradedAt\": 2, \"createdAt\": 2,"
        "  \"metadata\": {\"symbol\": \"BTC-USDT\", \"side\": \"sell\"}},"
        " {\"orderId\": \"o3\", \"provider\": \"sim\", \"strategyInstance\": \"gone\","
        "  \"executionId\": \"e9\", \"quantity\": \"4\", \"tradedAt\": 3, \"createdAt\": 3,"
        "  \"metadata\": {\"symbol\": \"BTC-USDT\", \"side\": \"buy\"}}]");
    json_t *spec = jparse("{\"id\": \"a\", \"strategy\": {}, \"scope\": {}}");
    assert_ok(store_instance_put(store, "a", spec, true, NULL, &err), &err);
    json_decref(spec);
    assert_ok(store_executions_put(store, fills, &err), &err);
    json_array_remove(fills, 2);
    store_close(store);
    sqlite3 *db = raw_open(root);
    raw_exec(db, "DROP TRIGGER positions_add; DROP TRIGGER positions_move;"
                 " DROP TRIGGER positions_forget; DROP TABLE positions;"
                 " DROP INDEX orders_done_by_update; DROP INDEX executions_by_trade;"
                 " PRAGMA user_version = 1");
    sqlite3_close(db);

    store = fixture_open(root);
    json_t *out = NULL;
    assert_ok(store_positions_query(store, "sim", &out, &err), &err);
    assert_int_equal(json_array_size(out), 1);
    assert_string_equal(json_string_value(json_array_get(json_array_get(out, 0), 0)), "a");
    assert_true(json_real_value(json_array_get(json_array_get(out, 0), 2)) == 1.5);
    json_decref(out);
    json_object_set_new(json_array_get(fills, 1), "executionId", json_string("e3"));
    assert_ok(store_executions_put(store, json_array_get(fills, 1), &err), &err);
    assert_ok(store_positions_query(store, "sim", &out, &err), &err);
    assert_true(json_real_value(json_array_get(json_array_get(out, 0), 2)) == 0.5);
    json_decref(out);
    store_close(store);
    db = raw_open(root);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), STORE__SCHEMA_VERSION);
    sqlite3_close(db);
    json_decref(fills);
    tu_remove_tree(root);
    free(root);
}

/* A step that fails leaves the file at the version before it, with none of
 * the step's tables: each step is one transaction. */
static void test_failed_migration_rolls_back(void **state)
{
    (void)state;
    char *root = tu_tempdir("store");
    sqlite3 *db = raw_open(root);
    raw_exec(db, "CREATE TABLE usage (unrelated TEXT)");
    sqlite3_close(db);

    expect_open_failure(root, ERR_INTERNAL, "schema version 1");
    db = raw_open(root);
    assert_int_equal(raw_int(db, "PRAGMA user_version"), 0);
    assert_int_equal(raw_int(db, "SELECT count(*) FROM sqlite_schema WHERE name = 'instances'"), 0);
    sqlite3_close(db);
    tu_remove_tree(root);
    free(root);
}

static void test_refuses_a_file_that_is_not_a_database(void **state)
{
    (void)state;
    char *root = tu_tempdir("store");
    char *db_path = tu_path("%s/%s", root, STORE_DB_FILE);
    char junk[8192];
    memset(junk, 'x', sizeof junk);
    tu_write_file(db_path, junk, sizeof junk);
    expect_open_failure(root, ERR_INTERNAL, db_path);
    free(db_path);
    tu_remove_tree(root);
    free(root);
}

/* Root may write anywhere, but not below a regular file. */
static void test_unusable_state_directory(void **state)
{
    (void)state;
    char *root = tu_tempdir("store");
    char *file = tu_path("%s/file", root);
    tu_write_text(file, "not a directory\n");
    char *dir = tu_path("%s/state", file);
    expect_open_failure(dir, ERR_INTERNAL, dir);
    expect_open_failure(file, ERR_INTERNAL, file);
    free(dir);
    free(file);
    tu_remove_tree(root);
    free(root);
}

static void test_read_only_state_directory(void **state)
{
    (void)state;
    if (geteuid() == 0)
        skip(); /* permissions do not bind root; covered by the test above */
    char *root = tu_tempdir("store");
    char *dir = tu_path("%s/state", root);
    assert_int_equal(mkdir(dir, 0500), 0);
    expect_open_failure(dir, ERR_INTERNAL, dir);
    expect_open_failure(dir, ERR_INTERNAL, "not writable");
    free(dir);
    tu_remove_tree(root);
    free(root);
}

static void test_bad_arguments(void **state)
{
    (void)state;
    struct err err = ERR_INIT;
    struct store *store = NULL;
    assert_int_equal(store_open(NULL, &store, &err), -1);
    assert_int_equal(err.kind, ERR_INVALID);
    err_clear(&err);
    assert_int_equal(store_open("", &store, &err), -1);
    assert_int_equal(err.kind, ERR_INVALID);
    err_clear(&err);
    assert_int_equal(store_check_integrity(NULL, &err), -1);
    assert_int_equal(err.kind, ERR_INVALID);
    err_clear(&err);
    store_close(NULL);
}

static void test_error_kinds(void **state)
{
    (void)state;
    assert_int_equal(store__error_kind(SQLITE_FULL, 0), ERR_NO_SPACE);
    assert_int_equal(store__error_kind(SQLITE_IOERR_WRITE, ENOSPC), ERR_NO_SPACE);
    assert_int_equal(store__error_kind(SQLITE_IOERR_FSYNC, EDQUOT), ERR_NO_SPACE);
    assert_int_equal(store__error_kind(SQLITE_IOERR_WRITE, EIO), ERR_INTERNAL);
    assert_int_equal(store__error_kind(SQLITE_CORRUPT, ENOSPC), ERR_INTERNAL);
    assert_int_equal(store__error_kind(SQLITE_BUSY, 0), ERR_INTERNAL);
}

static json_t *big_order(int i)
{
    char id[32], pad[2048];
    snprintf(id, sizeof id, "o-%d", i);
    memset(pad, 'p', sizeof pad - 1);
    pad[sizeof pad - 1] = '\0';
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:{s:s}}", "id", id, "provider", "sim",
                     "strategyInstance", "i1", "state", "new", "createdAt", (json_int_t)1,
                     "updatedAt", (json_int_t)1, "metadata", "pad", pad);
}

/* A database that cannot grow (here capped with max_page_count, the same
 * SQLITE_FULL a full disk gives) reports ERR_NO_SPACE, writes nothing of
 * the batch and keeps working once there is room again. */
static void test_full_database_is_no_space(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *batch = json_array();
    for (int i = 0; i < 64; i++)
        json_array_append_new(batch, big_order(i));
    store__lock(f->store);
    long long pages = 0;
    sqlite3_stmt *st = NULL;
    assert_int_equal(sqlite3_prepare_v2(f->store->db, "PRAGMA page_count", -1, &st, NULL), 0);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    pages = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    char *cap = tu_path("PRAGMA max_page_count = %lld", pages);
    assert_ok(store__exec(f->store, cap, &err), &err);
    store__unlock(f->store);

    assert_int_equal(store_orders_put(f->store, batch, &err), -1);
    assert_int_equal(err.kind, ERR_NO_SPACE);
    assert_contains(err.message, "full");
    err_clear(&err);

    store__lock(f->store);
    assert_ok(store__exec(f->store, "PRAGMA max_page_count = 1073741823", &err), &err);
    store__unlock(f->store);
    struct store_order_query q = {.instance_id = "i1", .limit = 1000};
    json_t *out = NULL;
    assert_ok(store_orders_query(f->store, &q, &out, &err), &err);
    assert_int_equal(json_array_size(out), 0);
    json_decref(out);
    assert_ok(store_orders_put(f->store, batch, &err), &err);
    assert_ok(store_orders_query(f->store, &q, &out, &err), &err);
    assert_int_equal(json_array_size(out), 64);
    json_decref(out);
    free(cap);
    json_decref(batch);
}

/* ---------------------------------------------------- write-ahead log */

/* The size SQLite's log reaches between checkpoints: 1,000 frames of a
 * 4 KiB page and its 24-byte header. */
#define WAL_WORKING_BYTES (1000LL * (4096 + 24))

static struct stat wal_stat(const char *state_dir)
{
    char *wal = tu_path("%s/%s-wal", state_dir, STORE_DB_FILE);
    struct stat st;
    if (stat(wal, &st) != 0)
        fail_msg("stat %s: %s", wal, strerror(errno));
    free(wal);
    return st;
}

static void put_settings(struct store *store, int from, int count)
{
    struct err err = ERR_INIT;
    for (int i = from; i < from + count; i++) {
        char key[32];
        (void)snprintf(key, sizeof key, "k%05d", i);
        json_t *value = json_integer(i);
        assert_ok(store_setting_put(store, key, value, &err), &err);
        json_decref(value);
    }
}

static void expect_settings(struct store *store, int count)
{
    struct err err = ERR_INIT;
    for (int i = 0; i < count; i++) {
        char key[32];
        (void)snprintf(key, sizeof key, "k%05d", i);
        json_t *value = NULL;
        assert_ok(store_setting_get(store, key, &value, &err), &err);
        if (!json_is_integer(value) || json_integer_value(value) != i)
            fail_msg("setting %s lost after a reopen", key);
        json_decref(value);
    }
}

/* A new state's log is written out (blocks behind every byte, not a sparse
 * file) before the first commit, so commits overwrite instead of growing
 * the file; it keeps that size through more commits than one checkpoint
 * holds. A clean close leaves no log beside stratd.db (a copy of that file
 * is the whole state), and the reopen writes it out again. */
static void test_write_ahead_log_is_written_out(void **state)
{
    struct fixture *f = *state;
    struct stat fresh = wal_stat(f->state);
    assert_true(fresh.st_size >= WAL_WORKING_BYTES);
    assert_true((long long)fresh.st_blocks * 512 >= fresh.st_size);

    put_settings(f->store, 0, 1500);
    assert_int_equal(wal_stat(f->state).st_size, fresh.st_size);
    store_close(f->store);
    f->store = NULL;
    char *wal = tu_path("%s/%s-wal", f->state, STORE_DB_FILE);
    assert_int_equal(access(wal, F_OK), -1);
    free(wal);

    f->store = fixture_open(f->state);
    assert_int_equal(wal_stat(f->state).st_size, fresh.st_size);
    expect_settings(f->store, 1500);
    put_settings(f->store, 1500, 10);
    expect_settings(f->store, 1510);
    assert_int_equal(wal_stat(f->state).st_size, fresh.st_size);
    struct err err = ERR_INIT;
    assert_ok(store_check_integrity(f->store, &err), &err);
}

/* A disk that cannot take the whole log (here the file size limit, as a
 * nearly full disk would) costs only the head start: the store opens,
 * commits and reads back as before. */
static void test_log_that_cannot_be_written_out_still_works(void **state)
{
    (void)state;
    char *root = tu_tempdir("store");
    char *dir = tu_path("%s/state", root);
    struct rlimit saved;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &saved), 0);
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN); /* EFBIG instead */
    struct rlimit tight = {(rlim_t)(1024 * 1024), saved.rlim_max};
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &tight), 0);
    struct err err = ERR_INIT;
    struct store *store = NULL;
    int rc = store_open(dir, &store, &err);
    if (rc == 0) {
        put_settings(store, 0, 50);
        expect_settings(store, 50);
    }
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &saved), 0);
    signal(SIGXFSZ, old_handler);
    if (rc != 0)
        fail_msg("store_open under a 1 MiB file size limit: %s", err.message);
    assert_true(wal_stat(dir).st_size < WAL_WORKING_BYTES);
    store_close(store);

    store = fixture_open(dir);
    expect_settings(store, 50);
    store_close(store);
    tu_remove_tree(root);
    free(dir);
    free(root);
}

static void test_integrity_check_passes(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    assert_ok(store_check_integrity(f->store, &err), &err);
}

/* Points an index at the wrong column behind SQLite's back, so the index
 * no longer matches its table: a corruption integrity_check must report. */
static void test_integrity_check_finds_damage(void **state)
{
    struct fixture *f = *state;
    struct err err = ERR_INIT;
    json_t *batch = json_array();
    for (int i = 0; i < 20; i++)
        json_array_append_new(batch, big_order(i));
    assert_ok(store_orders_put(f->store, batch, &err), &err);
    json_decref(batch);
    store_close(f->store);

    sqlite3 *db = raw_open(f->state);
    raw_exec(db, "PRAGMA writable_schema = ON");
    raw_exec(db, "UPDATE sqlite_schema SET sql = replace(sql, 'instance_id', 'provider')"
                 " WHERE name = 'orders_by_instance'");
    sqlite3_close(db);

    f->store = fixture_open(f->state);
    assert_int_equal(store_check_integrity(f->store, &err), -1);
    assert_int_equal(err.kind, ERR_INTERNAL);
    assert_contains(err.message, "integrity");
    assert_true(json_array_size(json_object_get(err.details, "problems")) > 0);
    err_clear(&err);
}

/* The +Inf bucket and the count of one file's series in the exposition. */
static void exposed_counts(struct store *store, const char *file, double *inf, double *count)
{
    struct strbuf out = STRBUF_INIT;
    store_metrics_write(store, &out);
    assert_false(strbuf_failed(&out));
    char needle[128];
    (void)snprintf(needle, sizeof needle,
                   "stratd_store_sync_seconds_bucket{file=\"%s\",le=\"+Inf\"} ", file);
    const char *at = strstr(strbuf_cstr(&out), needle);
    assert_non_null(at);
    *inf = strtod(at + strlen(needle), NULL);
    (void)snprintf(needle, sizeof needle, "stratd_store_sync_seconds_count{file=\"%s\"} ", file);
    at = strstr(strbuf_cstr(&out), needle);
    assert_non_null(at);
    *count = strtod(at + strlen(needle), NULL);
    strbuf_release(&out);
}

/* Every sync is timed, per store: each durable write adds to its store's
 * database count and to no other store's, a group commit of the audit log
 * to the audit count, and the exposition says the same. */
static void test_syncs_are_timed(void **state)
{
    struct fixture *f = *state;
    char *other_dir = tu_path("%s/other", f->root);
    struct store *other = fixture_open(other_dir);
    uint64_t db0 = store_sync_count(f->store, STORE_SYNC_DATABASE);
    uint64_t other0 = store_sync_count(other, STORE_SYNC_DATABASE);
    put_settings(f->store, 0, 20);
    uint64_t db1 = store_sync_count(f->store, STORE_SYNC_DATABASE);
    if (db1 < db0 + 20)
        fail_msg("20 durable writes timed %llu syncs", (unsigned long long)(db1 - db0));
    assert_int_equal(store_sync_count(other, STORE_SYNC_DATABASE), other0);

    struct err err = ERR_INIT;
    json_t *entry = json_pack("{s:s}", "action", "test");
    assert_ok(store_audit_append(f->store, entry, &err), &err);
    json_decref(entry);
    for (int i = 0; i < 5000 && store_sync_count(f->store, STORE_SYNC_AUDIT) == 0; i++)
        usleep(1000);
    assert_true(store_sync_count(f->store, STORE_SYNC_AUDIT) >= 1);
    assert_int_equal(store_sync_count(other, STORE_SYNC_AUDIT), 0);

    double inf = 0, count = 0;
    exposed_counts(f->store, "database", &inf, &count);
    assert_true(inf == count && count >= (double)db1);
    exposed_counts(f->store, "audit", &inf, &count);
    assert_true(inf == count && count >= 1);
    store_close(other);
    tu_remove_tree(other_dir);
    free(other_dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_open_creates_directory_and_schema),
        cmocka_unit_test(test_state_files_are_private),
        cmocka_unit_test(test_migrates_an_empty_file),
        cmocka_unit_test(test_refuses_an_emptied_database),
        cmocka_unit_test(test_refuses_a_newer_schema),
        cmocka_unit_test(test_migration_sums_earlier_executions),
        cmocka_unit_test(test_failed_migration_rolls_back),
        cmocka_unit_test(test_refuses_a_file_that_is_not_a_database),
        cmocka_unit_test(test_unusable_state_directory),
        cmocka_unit_test(test_read_only_state_directory),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_error_kinds),
        cmocka_unit_test_setup_teardown(test_full_database_is_no_space, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_write_ahead_log_is_written_out, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test(test_log_that_cannot_be_written_out_still_works),
        cmocka_unit_test_setup_teardown(test_integrity_check_passes, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_integrity_check_finds_damage, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_syncs_are_timed, fixture_setup, fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
