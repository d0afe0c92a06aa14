/*
 * store.c: the connection, its life cycle and the helpers every table's
 * functions share (errors, cached statements, transactions, row collection).
 */
#include "store/store_internal.h"

#include "core/clock.h"
#include "core/fsutil.h"
#include "core/jsonutil.h"
#include "core/log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------- locking */

void store__lock(struct store *s)
{
    atomic_fetch_add_explicit(&s->lock_waiters, 1, memory_order_relaxed);
    int rc = pthread_mutex_lock(&s->lock);
    atomic_fetch_sub_explicit(&s->lock_waiters, 1, memory_order_relaxed);
    assert(rc == 0);
    (void)rc;
}

bool store__contended(struct store *s)
{
    return atomic_load_explicit(&s->lock_waiters, memory_order_relaxed) > 0;
}

void store__unlock(struct store *s)
{
    int rc = pthread_mutex_unlock(&s->lock);
    assert(rc == 0);
    (void)rc;
}

/* -------------------------------------------------------------- errors */

enum err_kind store__error_kind(int rc, int sys_errno)
{
    int primary = rc & 0xff;
    if (primary == SQLITE_FULL)
        return ERR_NO_SPACE;
    if (primary == SQLITE_IOERR && (sys_errno == ENOSPC || sys_errno == EDQUOT))
        return ERR_NO_SPACE;
    return ERR_INTERNAL;
}

int store__fail(struct store *s, int rc, struct err *err, const char *fmt, ...)
{
    char what[256];
    va_list ap;
    va_start(ap, fmt);
    (void)vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    const char *reason = s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
    int sys_errno = s->db ? sqlite3_system_errno(s->db) : 0;
    enum err_kind kind = store__error_kind(rc, sys_errno);
    err_set(err, kind, "%s: %s", what, reason);
    int primary = rc & 0xff;
    if (primary == SQLITE_FULL || primary == SQLITE_IOERR || primary == SQLITE_READONLY) {
        atomic_store(&s->write_failure_kind, (int)kind);
        atomic_store(&s->write_failed_ms, clock_wall_ms());
    }
    return -1;
}

int64_t store_last_write_failure_ms(struct store *store, bool *no_space)
{
    if (!store)
        return 0;
    if (no_space)
        *no_space = atomic_load(&store->write_failure_kind) == (int)ERR_NO_SPACE;
    return atomic_load(&store->write_failed_ms);
}

/* ---------------------------------------------------------- statements */

int store__exec(struct store *s, const char *sql, struct err *err)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK)
        return store__fail(s, rc, err, "cannot update %s", s->db_path);
    return 0;
}

sqlite3_stmt *store__stmt(struct store *s, enum store__stmt id, const char *sql, struct err *err)
{
    sqlite3_stmt *st = s->stmts[id];
    if (st) {
        /* Two call sites sharing an id with different SQL would be a bug. */
        assert(strcmp(sqlite3_sql(st), sql) == 0);
        return st;
    }
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        store__fail(s, rc, err, "cannot prepare a statement on %s", s->db_path);
        sqlite3_finalize(st);
        return NULL;
    }
    s->stmts[id] = st;
    return st;
}

void store__stmt_release(sqlite3_stmt *st)
{
    /* reset() repeats the last step's error, which the caller has reported. */
    (void)sqlite3_reset(st);
    (void)sqlite3_clear_bindings(st);
}

int store__step_done(struct store *s, sqlite3_stmt *st, const char *what, struct err *err)
{
    int rc = sqlite3_step(st);
    int result = 0;
    if (rc != SQLITE_DONE)
        result = store__fail(s, rc, err, "%s", what);
    store__stmt_release(st);
    return result;
}

/* -------------------------------------------------------- transactions */

int store__begin(struct store *s, struct err *err)
{
    sqlite3_stmt *st = store__stmt(s, STORE__BEGIN, "BEGIN IMMEDIATE", err);
    if (!st)
        return -1;
    char what[PATH_MAX + 64];
    (void)snprintf(what, sizeof what, "cannot begin a transaction on %s", s->db_path);
    return store__step_done(s, st, what, err);
}

void store__rollback(struct store *s)
{
    /* SQLite rolls back by itself after some errors (SQLITE_FULL, I/O). */
    if (sqlite3_get_autocommit(s->db))
        return;
    sqlite3_stmt *st = store__stmt(s, STORE__ROLLBACK, "ROLLBACK", NULL);
    if (st && store__step_done(s, st, "cannot roll back", NULL) == 0)
        return;
    /* A transaction left open would make every later BEGIN fail. */
    if (!sqlite3_get_autocommit(s->db) &&
        sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL) != SQLITE_OK)
        log_error("store", "cannot roll back on %s: %s", s->db_path, sqlite3_errmsg(s->db));
}

int store__commit(struct store *s, struct err *err)
{
    char what[PATH_MAX + 64];
    (void)snprintf(what, sizeof what, "cannot commit to %s", s->db_path);
    sqlite3_stmt *st = store__stmt(s, STORE__COMMIT, "COMMIT", err);
    if (st && store__step_done(s, st, what, err) == 0)
        return 0;
    store__rollback(s);
    return -1;
}

/* ------------------------------------------------------------- binding */

void store__bind_text(struct store__binder *b, int idx, const char *text)
{
    if (b->rc != SQLITE_OK)
        return;
    b->rc = text ? sqlite3_bind_text(b->st, idx, text, -1, SQLITE_STATIC)
                 : sqlite3_bind_null(b->st, idx);
}

void store__bind_int64(struct store__binder *b, int idx, int64_t value)
{
    if (b->rc == SQLITE_OK)
        b->rc = sqlite3_bind_int64(b->st, idx, value);
}

void store__bind_json(struct store__binder *b, int idx, const json_t *value)
{
    if (b->rc != SQLITE_OK)
        return;
    size_t len = 0;
    char *text = jsonutil_dump(value, &len);
    if (!text) {
        b->rc = SQLITE_NOMEM;
        return;
    }
    /* SQLite calls free() on the text even when the bind fails. */
    b->rc = sqlite3_bind_text64(b->st, idx, text, len, free, SQLITE_UTF8);
}

int store__bind_check(struct store__binder *b, const char *what, struct err *err)
{
    if (b->rc == SQLITE_OK)
        return 0;
    /* The connection's message belongs to an earlier call: bind errors
     * (range, memory, size) are described by their code alone. */
    err_set(err, store__error_kind(b->rc, 0), "%s: %s", what, sqlite3_errstr(b->rc));
    store__stmt_release(b->st);
    return -1;
}

/* ------------------------------------------------------------- reading */

json_t *store__column_json(sqlite3_stmt *st, int col, struct err *err)
{
    const char *text = (const char *)sqlite3_column_text(st, col);
    if (!text) {
        err_set(err, ERR_INTERNAL, "a stored record is missing (column %s)",
                sqlite3_column_name(st, col));
        return NULL;
    }
    size_t len = (size_t)sqlite3_column_bytes(st, col);
    json_error_t jerr;
    json_t *value = json_loadb(text, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    if (!value)
        err_set(err, ERR_INTERNAL, "a stored record does not parse (column %s): %s",
                sqlite3_column_name(st, col), jerr.text);
    return value;
}

json_t *store__column_string(sqlite3_stmt *st, int col)
{
    const char *text = (const char *)sqlite3_column_text(st, col);
    if (!text)
        return json_null();
    return jsonutil_string_lossy(text, (size_t)sqlite3_column_bytes(st, col));
}

int store__collect(struct store *s, sqlite3_stmt *st, store__row_fn row, const char *what,
                   json_t **out, struct err *err)
{
    json_t *list = json_array();
    if (!list) {
        store__stmt_release(st);
        err_set(err, ERR_INTERNAL, "%s: out of memory", what);
        return -1;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *item = row(st, err);
        if (!item || json_array_append_new(list, item) != 0) {
            if (item)
                err_set(err, ERR_INTERNAL, "%s: out of memory", what);
            goto fail;
        }
    }
    if (rc != SQLITE_DONE) {
        store__fail(s, rc, err, "%s", what);
        goto fail;
    }
    store__stmt_release(st);
    *out = list;
    return 0;
fail:
    store__stmt_release(st);
    json_decref(list);
    return -1;
}

int store__collect_one(struct store *s, sqlite3_stmt *st, store__row_fn row, const char *what,
                       json_t **out, struct err *err)
{
    json_t *list = NULL;
    if (store__collect(s, st, row, what, &list, err) != 0)
        return -1;
    *out = json_array_size(list) ? json_incref(json_array_get(list, 0)) : NULL;
    json_decref(list);
    return *out ? 0 : 1;
}

/* ----------------------------------------------------------- life cycle */

/* Creates the directory and proves it writable before SQLite gets a chance
 * to fail with a vaguer "unable to open database file". */
static int prepare_dir(const char *dir, struct err *err)
{
    struct err inner = ERR_INIT;
    if (fsutil_mkdirs(dir, 0750, &inner) != 0) {
        err_set(err, inner.kind, "cannot use state directory %s: %s", dir, inner.message);
        err_clear(&inner);
        return -1;
    }
    if (faccessat(AT_FDCWD, dir, W_OK | X_OK, AT_EACCESS) != 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "state directory %s is not writable", dir);
        return -1;
    }
    return 0;
}

/* journal_mode answers with the mode in force, which stays "delete" when
 * WAL is impossible (some network filesystems): refuse that rather than run
 * with different crash guarantees than documented. */
static int enable_wal(struct store *s, struct err *err)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(st);
    int result = 0;
    if (rc != SQLITE_ROW) {
        result = store__fail(s, rc, err, "cannot open database %s", s->db_path);
    } else {
        const char *mode = (const char *)sqlite3_column_text(st, 0);
        if (!mode || strcmp(mode, "wal") != 0) {
            err_set(err, ERR_INTERNAL, "cannot open database %s: WAL journal mode unavailable",
                    s->db_path);
            result = -1;
        }
    }
    sqlite3_finalize(st);
    return result;
}

/* An empty or missing database file beside an audit log that records
 * changes is a state that was lost (a truncation, a careless copy), not a
 * new one:
 * SQLite would take it as a fresh database and every instance would be
 * forgotten without a word. */
static int check_not_emptied(const struct store *s, struct err *err)
{
    struct stat db, audit;
    bool missing = stat(s->db_path, &db) != 0;
    if ((!missing && db.st_size != 0) || (missing && errno != ENOENT) ||
        stat(s->audit_path, &audit) != 0 || audit.st_size == 0)
        return 0;
    err_set(err, ERR_INVALID,
            "%s is %s, but %s records %lld bytes of changes: the state was lost. Restore "
            "stratd.db from a backup (docs/OPERATIONS.md), or move the audit log away to start "
            "with an empty state",
            s->db_path, missing ? "missing" : "empty", s->audit_path, (long long)audit.st_size);
    return -1;
}

/* The state holds every order, balance and instance config: its files are
 * for the gateway's user and group only, like the audit log. SQLite would
 * create the database 0644 (less the umask), and gives its -wal and -shm
 * files the database file's mode, so the file is made (or, made by an
 * earlier version, tightened) before SQLite opens it. */
static int make_db_private(const struct store *s, struct err *err)
{
    int fd = open(s->db_path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot create database %s", s->db_path);
        return -1;
    }
    store__keep_private(fd, s->db_path);
    close(fd);
    return 0;
}

void store__keep_private(int fd, const char *path)
{
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 0007) && fchmod(fd, st.st_mode & 0770) == 0)
        log_info("store", "%s was open to other users; now to its owner and group only", path);
}

static int open_db(struct store *s, struct err *err)
{
    if (check_not_emptied(s, err) != 0 || make_db_private(s, err) != 0)
        return -1;
    int flags =
        SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_EXRESCODE;
    if (store__vfs_register(s, err) != 0)
        return -1;
    int rc = sqlite3_open_v2(s->db_path, &s->db, flags, s->vfs_name);
    if (rc != SQLITE_OK)
        return store__fail(s, rc, err, "cannot open database %s", s->db_path);
    sqlite3_busy_timeout(s->db, STORE__BUSY_TIMEOUT_MS);
    if (enable_wal(s, err) != 0)
        return -1;
    return store__exec(s, "PRAGMA synchronous=FULL", err);
}

static struct store *store_alloc(const char *state_dir)
{
    struct store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->audit_fd = -1;
    s->lock_fd = -1;
    atomic_init(&s->lock_waiters, 0);
    s->lock_ready = pthread_mutex_init(&s->lock, NULL) == 0;
    s->audit_lock_ready = pthread_mutex_init(&s->audit_lock, NULL) == 0;
    s->audit_wake_ready = pthread_cond_init(&s->audit_wake, NULL) == 0;
    s->dir = strdup(state_dir);
    s->db_path = fsutil_join(state_dir, STORE_DB_FILE);
    s->audit_path = fsutil_join(state_dir, STORE_AUDIT_FILE);
    s->lock_path = fsutil_join(state_dir, STORE_LOCK_FILE);
    if (!s->lock_ready || !s->audit_lock_ready || !s->audit_wake_ready || !s->dir || !s->db_path ||
        !s->audit_path || !s->lock_path) {
        store_close(s);
        return NULL;
    }
    return s;
}

/* The pid the holder of the state lock wrote, or 0. */
static long lock_holder(int fd)
{
    char text[32];
    ssize_t n = pread(fd, text, sizeof text - 1, 0);
    if (n <= 0)
        return 0;
    text[n] = '\0';
    char *end = NULL;
    long pid = strtol(text, &end, 10);
    return end != text && pid > 0 ? pid : 0;
}

/* One process per state directory: two servers sharing one would both
 * write the same instances, orders and audit log. */
static int lock_state_dir(struct store *s, struct err *err)
{
    int fd = open(s->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot open the state lock %s", s->lock_path);
        return -1;
    }
    int rc;
    while ((rc = flock(fd, LOCK_EX | LOCK_NB)) != 0 && errno == EINTR)
        ;
    if (rc != 0) {
        int saved = errno;
        if (saved == EWOULDBLOCK) {
            long pid = lock_holder(fd);
            char who[48] = "";
            if (pid)
                (void)snprintf(who, sizeof who, " (pid %ld)", pid);
            err_set(err, ERR_CONFLICT,
                    "state directory %s is in use by another process%s: it holds %s; stop it or "
                    "use another --state directory",
                    s->dir, who, s->lock_path);
        } else {
            err_set_errno(err, ERR_INTERNAL, saved, "cannot lock %s", s->lock_path);
        }
        close(fd);
        return -1;
    }
    /* Best effort: the pid only makes the message above more helpful. */
    char pid[32];
    int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid, (size_t)n, 0) != (ssize_t)n)
        log_warn("store", "cannot record the pid in %s", s->lock_path);
    s->lock_fd = fd;
    return 0;
}

int store_open(const char *state_dir, struct store **out, struct err *err)
{
    if (!out || !state_dir || !*state_dir) {
        err_set(err, ERR_INVALID, "store_open needs a state directory");
        return -1;
    }
    *out = NULL;
    if (prepare_dir(state_dir, err) != 0)
        return -1;
    struct store *s = store_alloc(state_dir);
    if (!s) {
        err_set(err, ERR_INTERNAL, "out of memory opening the store in %s", state_dir);
        return -1;
    }
    /* The directory is synced last so the new files' entries are durable. */
    if (lock_state_dir(s, err) != 0 || open_db(s, err) != 0 || store__migrate(s, err) != 0) {
        store_close(s);
        return -1;
    }
    store__wal_prepare(s);
    if (store__audit_open(s, err) != 0 || fsutil_fsync_dir(s->dir, err) != 0) {
        store_close(s);
        return -1;
    }
    *out = s;
    return 0;
}

void store_close(struct store *store)
{
    if (!store)
        return;
    store__history_stop(store); /* it uses the statements and the lock */
    for (int i = 0; i < STORE__STMT_COUNT; i++)
        sqlite3_finalize(store->stmts[i]);
    /* Every statement is finalized above, so close cannot be left busy;
     * should it fail all the same, the files stay open on the store's VFS,
     * which then stays registered and the store allocated. */
    if (store->db && sqlite3_close(store->db) != SQLITE_OK) {
        log_error("store", "closing %s: %s", store->db_path, sqlite3_errmsg(store->db));
        return;
    }
    store__vfs_unregister(store);
    store__audit_close(store);
    if (store->lock_fd >= 0)
        close(store->lock_fd); /* releases the flock */
    if (store->lock_ready)
        pthread_mutex_destroy(&store->lock);
    if (store->audit_lock_ready)
        pthread_mutex_destroy(&store->audit_lock);
    if (store->audit_wake_ready)
        pthread_cond_destroy(&store->audit_wake);
    free(store->dir);
    free(store->db_path);
    free(store->audit_path);
    free(store->lock_path);
    free(store);
}

/* ------------------------------------------------------------ integrity */

static json_t *integrity_row(sqlite3_stmt *st, struct err *err)
{
    json_t *line = store__column_string(st, 0);
    if (!line)
        err_set(err, ERR_INTERNAL, "out of memory checking the database");
    return line;
}

static int integrity_verdict(struct store *s, json_t *rows, struct err *err)
{
    const char *first = json_string_value(json_array_get(rows, 0));
    if (json_array_size(rows) == 1 && first && strcmp(first, "ok") == 0)
        return 0;
    err_set(err, ERR_INTERNAL, "database %s failed the integrity check: %s", s->db_path,
            first ? first : "no verdict");
    err_add_detail(err, "problems", json_incref(rows));
    return -1;
}

int store_check_integrity(struct store *store, struct err *err)
{
    if (!store) {
        err_set(err, ERR_INVALID, "store_check_integrity needs a store");
        return -1;
    }
    store__lock(store);
    sqlite3_stmt *st = NULL;
    /* Ten problems are enough to diagnose; the full list can be huge. */
    int rc = sqlite3_prepare_v2(store->db, "PRAGMA integrity_check(10)", -1, &st, NULL);
    json_t *rows = NULL;
    int result = -1;
    if (rc != SQLITE_OK)
        store__fail(store, rc, err, "cannot check %s", store->db_path);
    else if (store__collect(store, st, integrity_row, "cannot check the database", &rows, err) == 0)
        result = integrity_verdict(store, rows, err);
    sqlite3_finalize(st);
    store__unlock(store);
    json_decref(rows);
    return result;
}
