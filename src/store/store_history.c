/*
 * store_history.c: the order history's retention.
 *
 * Orders and executions are written for as long as strategies trade, so
 * without a bound the database grows until its disk is full, and then every
 * durable write of the gateway fails. The pruner deletes what is older than
 * the retention in slices: each slice is one short transaction holding the
 * store's lock for about 5 ms (its size follows how long the last one
 * took), and the pruner lets go between slices, so the market's writer and
 * the control plane's commits wait for a slice at most, never for the
 * whole backlog. It runs at the normal
 * scheduling class: at the idle class a pruner preempted inside a slice
 * would hold the lock that a start's commit waits for.
 */
#include "store/store_internal.h"

#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

enum { HISTORY_ORDERS, HISTORY_EXECUTIONS };

/* A slice after a full one waits this long, so that the writers waiting
 * for the lock take it first. */
#define HISTORY_SLICE_GAP_NS 1000000L
/* Slices grow while they take less than this and shrink past twice it:
 * the lock is held about that long, whatever a row costs on this disk. */
#define HISTORY_SLICE_TARGET_NS 5000000L
#define HISTORY_SLICE_MAX (16 * STORE_HISTORY_SLICE)

static int prune_table(struct store *s, enum store__stmt id, const char *sql, int64_t before_ms,
                       int max_rows, int *deleted, struct err *err)
{
    sqlite3_stmt *st = store__stmt(s, id, sql, err);
    if (!st)
        return -1;
    struct store__binder b = {st, SQLITE_OK};
    store__bind_int64(&b, 1, before_ms);
    store__bind_int64(&b, 2, max_rows);
    if (store__bind_check(&b, "cannot prune the order history", err) != 0 ||
        store__step_done(s, st, "cannot prune the order history", err) != 0)
        return -1;
    *deleted = sqlite3_changes(s->db);
    return 0;
}

int store_history_prune(struct store *store, int64_t before_ms, int max_rows, int *deleted_orders,
                        int *deleted_executions, struct err *err)
{
    if (!store || max_rows <= 0) {
        err_set(err, ERR_INVALID, "pruning the history needs a store and a positive row count");
        return -1;
    }
    int orders = 0, executions = 0;
    store__lock(store);
    int rc = store__begin(store, err);
    if (rc == 0) {
        rc = prune_table(store, STORE__HISTORY_PRUNE_ORDERS,
                         "DELETE FROM orders WHERE rowid IN (SELECT rowid FROM orders"
                         " WHERE state IN ('filled', 'cancelled', 'rejected', 'expired')"
                         " AND updated_at < ?1 LIMIT ?2)",
                         before_ms, max_rows, &orders, err);
        if (rc == 0)
            rc = prune_table(store, STORE__HISTORY_PRUNE_EXECUTIONS,
                             "DELETE FROM executions WHERE rowid IN (SELECT rowid FROM"
                             " executions WHERE traded_at < ?1 LIMIT ?2)",
                             before_ms, max_rows, &executions, err);
        if (rc == 0)
            rc = store__commit(store, err); /* rolls back when it fails */
        else
            store__rollback(store);
    }
    store__unlock(store);
    if (rc != 0)
        return -1;
    if (deleted_orders)
        *deleted_orders = orders;
    if (deleted_executions)
        *deleted_executions = executions;
    return 0;
}

/* How often the pruner looks: a tenth of the retention, so nothing stays
 * much past it, within bounds that keep it neither busy nor asleep for
 * hours. */
static int64_t history_period_ns(int64_t retention_ms)
{
    int64_t ms = retention_ms / 10;
    if (ms < 100)
        ms = 100;
    if (ms > 60000)
        ms = 60000;
    return ms * 1000000;
}

/* Waits up to `ns` or until told to quit; true when told. history_lock
 * held. The condition runs on the monotonic clock, as the workers' and the
 * market's do, so a wall-clock step neither wakes it early nor late. */
static bool history_wait(struct store *s, int64_t ns)
{
    int64_t due = clock_mono_ns() + ns;
    struct timespec until = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
    while (!s->history_quit &&
           pthread_cond_timedwait(&s->history_wake, &s->history_lock, &until) != ETIMEDOUT)
        ;
    return s->history_quit;
}

static int history_sync_init(struct store *s, struct err *err)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0) {
        err_set(err, ERR_INTERNAL, "cannot start the history's pruner: no condition");
        return -1;
    }
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&s->history_wake, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0) {
        err_set(err, ERR_INTERNAL, "cannot start the history's pruner: no condition");
        return -1;
    }
    if (pthread_mutex_init(&s->history_lock, NULL) != 0) {
        pthread_cond_destroy(&s->history_wake);
        err_set(err, ERR_INTERNAL, "cannot start the history's pruner: no mutex");
        return -1;
    }
    s->history_sync_ready = true;
    return 0;
}

static int next_slice(int slice, int64_t took_ns)
{
    if (took_ns < HISTORY_SLICE_TARGET_NS && slice < HISTORY_SLICE_MAX)
        return slice * 2;
    if (took_ns > 2 * HISTORY_SLICE_TARGET_NS && slice > STORE_HISTORY_SLICE)
        return slice / 2;
    return slice;
}

/* Prunes slice after slice until a slice comes back short; false when a
 * slice failed (logged; the next pass tries again). */
static bool history_pass(struct store *s)
{
    int64_t before = clock_wall_ms() - s->history_retention_ms;
    int slice = STORE_HISTORY_SLICE;
    for (;;) {
        int orders = 0, executions = 0;
        struct err err = ERR_INIT;
        int64_t began = clock_mono_ns();
        if (store_history_prune(s, before, slice, &orders, &executions, &err) != 0) {
            log_warn("store", "pruning the order history: %s", err.message);
            err_clear(&err);
            return false;
        }
        atomic_fetch_add_explicit(&s->history_deleted[HISTORY_ORDERS], (uint64_t)orders,
                                  memory_order_relaxed);
        atomic_fetch_add_explicit(&s->history_deleted[HISTORY_EXECUTIONS], (uint64_t)executions,
                                  memory_order_relaxed);
        if (orders < slice && executions < slice)
            return true;
        slice = next_slice(slice, clock_mono_ns() - began);
        pthread_mutex_lock(&s->history_lock);
        bool quit = history_wait(s, HISTORY_SLICE_GAP_NS);
        pthread_mutex_unlock(&s->history_lock);
        if (quit)
            return true;
    }
}

static void *history_main(void *arg)
{
    struct store *s = arg;
    pthread_setname_np(pthread_self(), "history");
    int64_t period = history_period_ns(s->history_retention_ms);
    pthread_mutex_lock(&s->history_lock);
    while (!s->history_quit) {
        pthread_mutex_unlock(&s->history_lock);
        history_pass(s);
        pthread_mutex_lock(&s->history_lock);
        history_wait(s, period);
    }
    pthread_mutex_unlock(&s->history_lock);
    return NULL;
}

int store_history_start(struct store *store, int64_t retention_ms, struct err *err)
{
    if (!store || retention_ms < 0 || store->history_started) {
        err_set(err, ERR_INVALID,
                "the history's pruner needs a store it does not run for yet"
                " and a retention of 0 or more");
        return -1;
    }
    if (retention_ms == 0)
        return 0;
    if (!store->history_sync_ready && history_sync_init(store, err) != 0)
        return -1;
    store->history_retention_ms = retention_ms;
    store->history_quit = false;
    int rc = pthread_create(&store->history_thread, NULL, history_main, store);
    if (rc != 0) {
        err_set(err, ERR_INTERNAL, "cannot start the history's pruner: %s", strerror(rc));
        return -1;
    }
    store->history_started = true;
    return 0;
}

void store__history_stop(struct store *s)
{
    if (s->history_started) {
        pthread_mutex_lock(&s->history_lock);
        s->history_quit = true;
        pthread_cond_signal(&s->history_wake);
        pthread_mutex_unlock(&s->history_lock);
        pthread_join(s->history_thread, NULL);
        s->history_started = false;
    }
    if (s->history_sync_ready) {
        pthread_cond_destroy(&s->history_wake);
        pthread_mutex_destroy(&s->history_lock);
        s->history_sync_ready = false;
    }
}

/* The database and its log as they are on disk: the history's growth, or
 * its end once the retention holds it. */
static int64_t file_bytes(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (int64_t)st.st_size : 0;
}

void store__history_metrics_write(struct store *s, struct strbuf *out)
{
    static const char deleted[] = "stratd_history_deleted_total";
    static const char *const label[] = {"table"};
    static const char *const tables[] = {"orders", "executions"};
    metrics_write_header(out, deleted,
                         "Rows of the order history deleted past history.retention_seconds.",
                         "counter");
    for (size_t i = 0; i < 2; i++) {
        uint64_t n = atomic_load_explicit(&s->history_deleted[i], memory_order_relaxed);
        metrics_write_sample(out, deleted, label, &tables[i], 1, (double)n);
    }
    static const char bytes[] = "stratd_state_database_bytes";
    metrics_write_header(out, bytes, "Size of the state database and its write-ahead log.",
                         "gauge");
    char wal[4096];
    snprintf(wal, sizeof wal, "%s-wal", s->db_path);
    metrics_write_sample(out, bytes, NULL, NULL, 0,
                         (double)(file_bytes(s->db_path) + file_bytes(wal)));
}
