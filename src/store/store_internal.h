/*
 * store_internal: what the store's source files share and nothing else
 * includes (the unit tests aside, which reach in to provoke failures).
 *
 * Locking: `lock` guards `db` and every cached statement; every store__
 * function that touches the database expects the caller to hold it. The
 * audit log has its own `audit_lock` so an fsync of the log never holds up
 * database calls.
 *
 * Statements: each is prepared once, on first use, and kept until
 * store_close(). After a use it is reset and its bindings cleared, so text
 * bound with SQLITE_STATIC only has to outlive the call that bound it.
 */
#ifndef STRATD_STORE_STORE_INTERNAL_H
#define STRATD_STORE_STORE_INTERNAL_H

#include "core/metrics.h"
#include "store/store.h"

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>

/* The newest schema this build knows; store_migrate.c checks that its last
 * step carries this number. */
#define STORE__SCHEMA_VERSION 4

/* How long a write waits for another process (the bootstrap tool) that holds
 * the database's write lock before it fails. */
#define STORE__BUSY_TIMEOUT_MS 5000

#define STORE__DEFAULT_LIMIT 100

enum store__stmt {
    STORE__BEGIN,
    STORE__COMMIT,
    STORE__ROLLBACK,
    STORE__INSTANCE_PUT,
    STORE__INSTANCE_DELETE,
    STORE__INSTANCE_LIST,
    STORE__USAGE_TOUCH,
    STORE__USAGE_FORGET,
    STORE__USAGE_LIST,
    STORE__METADATA_GET,
    STORE__METADATA_PUT,
    STORE__ORDER_PUT,
    STORE__ORDER_QUERY,
    STORE__ORDER_EXPIRE_OPEN,
    STORE__EXECUTION_PUT,
    STORE__EXECUTION_QUERY,
    STORE__BALANCE_PUT,
    STORE__BALANCE_QUERY,
    STORE__POSITION_QUERY,
    STORE__HISTORY_PRUNE_ORDERS,
    STORE__HISTORY_PRUNE_EXECUTIONS,
    STORE__PROVIDER_PUT,
    STORE__PROVIDER_DELETE,
    STORE__PROVIDER_LIST,
    STORE__SETTING_GET,
    STORE__SETTING_PUT,
    STORE__STMT_COUNT
};

/* Counts of syncs per bucket (bounds in store_vfs.c, the last +Inf) and
 * their total time: any thread adds, /metrics reads. */
#define STORE__SYNC_BUCKETS METRICS_SYNC_BUCKETS
struct store__sync_hist {
    _Atomic uint64_t buckets[STORE__SYNC_BUCKETS];
    _Atomic uint64_t sum_ns;
};

struct store {
    /* the wall-clock ms of the last write the disk refused (full, I/O
     * error, read-only), 0 if none; its kind (ERR_NO_SPACE or another) */
    _Atomic int64_t write_failed_ms;
    atomic_int write_failure_kind;
    pthread_mutex_t lock;
    atomic_int lock_waiters; /* threads inside store__lock, not yet holding it */
    bool lock_ready;
    sqlite3 *db;
    sqlite3_stmt *stmts[STORE__STMT_COUNT];
    char *dir;
    char *db_path;
    char *audit_path;
    char *lock_path;
    int lock_fd; /* flock on <state>/stratd.lock, held until store_close() */
    pthread_mutex_t audit_lock;
    bool audit_lock_ready;
    int audit_fd;
    /* group commit of the audit log: appends set audit_dirty (under
     * audit_lock) and wake the syncer, which fsyncs what accumulated */
    pthread_cond_t audit_wake;
    bool audit_wake_ready;
    pthread_t audit_syncer;
    bool audit_syncer_started;
    bool audit_dirty;
    bool audit_quit;
    bool audit_syncing; /* the syncer is in fsync on the fd it read */
    /* how long syncs took (store_vfs.c): the database's through its own
     * VFS, registered under vfs_name for this store's life; the audit
     * log's by its syncer */
    struct store__sync_hist sync_db, sync_audit;
    sqlite3_vfs vfs;
    sqlite3_vfs *vfs_base;
    char vfs_name[40];
    bool vfs_registered;
    /* the history's pruner (store_history.c): history_lock guards
     * history_quit and wakes it through history_wake */
    pthread_t history_thread;
    bool history_started;
    pthread_mutex_t history_lock;
    pthread_cond_t history_wake;
    bool history_sync_ready;
    bool history_quit;
    int64_t history_retention_ms;
    _Atomic uint64_t history_deleted[2]; /* orders, executions */
};

/* The store's VFS (store_vfs.c): registered before the database opens,
 * unregistered after it closes. */
int store__vfs_register(struct store *s, struct err *err);
void store__vfs_unregister(struct store *s);
void store__sync_observe(struct store__sync_hist *h, int64_t ns);

/* Takes the other users' bits off a file of the state the gateway opened
 * (an earlier version, or an operator, made it readable to all). */
void store__keep_private(int fd, const char *path);
void store__lock(struct store *s);
void store__unlock(struct store *s);
/* Whether another thread waits for the lock (its holder does not count). */
bool store__contended(struct store *s);

/* ERR_NO_SPACE for SQLITE_FULL and for an I/O error caused by ENOSPC or
 * EDQUOT; ERR_INTERNAL for everything else. */
enum err_kind store__error_kind(int rc, int sys_errno);
/* Fills err from a failed SQLite call: "<what>: <SQLite's message>", kind
 * from store__error_kind(). Returns -1. */
__attribute__((format(printf, 4, 5))) int store__fail(struct store *s, int rc, struct err *err,
                                                      const char *fmt, ...);

/* Runs SQL text without result rows (pragmas, migrations). */
int store__exec(struct store *s, const char *sql, struct err *err);
/* The cached statement `id`, prepared from `sql` on first use. */
sqlite3_stmt *store__stmt(struct store *s, enum store__stmt id, const char *sql, struct err *err);
/* Steps a write to completion, then resets it and clears its bindings. */
int store__step_done(struct store *s, sqlite3_stmt *st, const char *what, struct err *err);
/* Resets and clears bindings without stepping (after a failed bind). */
void store__stmt_release(sqlite3_stmt *st);

/* BEGIN IMMEDIATE / COMMIT / ROLLBACK. Immediate, so the write lock is taken
 * up front and a transaction never fails half-way on a lock upgrade. */
int store__begin(struct store *s, struct err *err);
/* On failure the transaction is rolled back. */
int store__commit(struct store *s, struct err *err);
void store__rollback(struct store *s);

/* Sticky binding, like strbuf: after the first failure later binds do
 * nothing and `rc` keeps the first error. */
struct store__binder {
    sqlite3_stmt *st;
    int rc;
};
void store__bind_text(struct store__binder *b, int idx, const char *text);
void store__bind_int64(struct store__binder *b, int idx, int64_t value);
/* Binds the compact serialisation of `value` (any JSON value). */
void store__bind_json(struct store__binder *b, int idx, const json_t *value);
/* 0, or fills err, releases the statement and returns -1. */
int store__bind_check(struct store__binder *b, const char *what, struct err *err);

/* Parses a column written by store__bind_json; ERR_INTERNAL if it does not
 * parse (a damaged row). */
json_t *store__column_json(sqlite3_stmt *st, int col, struct err *err);
/* A text column as a new JSON string, or JSON null for SQL NULL. */
json_t *store__column_string(sqlite3_stmt *st, int col);

/* Steps a query to the end, turning each row into an array element with
 * `row`; the statement is released afterwards. *out receives the array. */
typedef json_t *(*store__row_fn)(sqlite3_stmt *st, struct err *err);
int store__collect(struct store *s, sqlite3_stmt *st, store__row_fn row, const char *what,
                   json_t **out, struct err *err);
/* Steps a query expected to give zero or one row: 1 and *out NULL when no
 * row, 0 and *out the row's value otherwise. */
int store__collect_one(struct store *s, sqlite3_stmt *st, store__row_fn row, const char *what,
                       json_t **out, struct err *err);

/* Brings the schema up to STORE__SCHEMA_VERSION (store_migrate.c). */
int store__migrate(struct store *s, struct err *err);

/* Extends SQLite's write-ahead log with zeros to the size it reaches
 * between checkpoints, so that commits overwrite blocks instead of
 * appending (store_wal.c). Best effort: logs a warning
 * when it cannot; the store works without. Called once, after migration. */
void store__wal_prepare(struct store *s);

/* Opens <state>/audit.log for appending and starts its syncer thread
 * (store_audit.c). */
int store__audit_open(struct store *s, struct err *err);
/* Syncs what is pending, stops the syncer and closes the log. */
void store__audit_close(struct store *s);

/* Stops the history's pruner if it runs (store_history.c). */
void store__history_stop(struct store *s);
/* The history's counters and the database's size, for store_metrics_write. */
void store__history_metrics_write(struct store *s, struct strbuf *out);

/* How long the audit syncer gathers appends before one fsync: the most an
 * appended entry waits to be durable against power loss. */
#define STORE__AUDIT_SYNC_MS 10

#endif
