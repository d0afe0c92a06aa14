/*
 * store_vfs.c: the store's files opened through a thin SQLite VFS of its
 * own that times every sync, so an operator can see what the disk makes a
 * durable commit wait (stratd_store_sync_seconds). Every other call goes
 * straight to the default VFS and its files.
 *
 * Each store registers its own VFS (a unique name, the store's histogram in
 * pAppData) before it opens the database and unregisters it after closing
 * it, so two stores in one process count apart. A file of that VFS is the
 * default VFS's file, placed right after a small header that points at it.
 */
#include "store/store_internal.h"

#include "core/clock.h"
#include "core/metrics.h"

#include <stdio.h>

/* Upper bounds in seconds; the last bucket is +Inf. */

void store__sync_observe(struct store__sync_hist *h, int64_t ns)
{
    size_t b = metrics_bucket_of(metrics_sync_bounds, STORE__SYNC_BUCKETS, ns);
    atomic_fetch_add_explicit(&h->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)(ns > 0 ? ns : 0), memory_order_relaxed);
}

struct timed_file {
    sqlite3_file base;
    sqlite3_file *real; /* the default VFS's file, in the same block */
    struct store__sync_hist *hist;
};

static sqlite3_file *real_of(sqlite3_file *f)
{
    return ((struct timed_file *)f)->real;
}

static int timed_close(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xClose(r);
}

static int timed_read(sqlite3_file *f, void *buf, int n, sqlite3_int64 at)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xRead(r, buf, n, at);
}

static int timed_write(sqlite3_file *f, const void *buf, int n, sqlite3_int64 at)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xWrite(r, buf, n, at);
}

static int timed_truncate(sqlite3_file *f, sqlite3_int64 size)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xTruncate(r, size);
}

static int timed_sync(sqlite3_file *f, int flags)
{
    struct timed_file *tf = (struct timed_file *)f;
    int64_t t0 = clock_mono_ns();
    int rc = tf->real->pMethods->xSync(tf->real, flags);
    store__sync_observe(tf->hist, clock_mono_ns() - t0);
    return rc;
}

static int timed_file_size(sqlite3_file *f, sqlite3_int64 *size)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xFileSize(r, size);
}

static int timed_lock(sqlite3_file *f, int level)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xLock(r, level);
}

static int timed_unlock(sqlite3_file *f, int level)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xUnlock(r, level);
}

static int timed_check_reserved(sqlite3_file *f, int *out)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xCheckReservedLock(r, out);
}

static int timed_file_control(sqlite3_file *f, int op, void *arg)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xFileControl(r, op, arg);
}

static int timed_sector_size(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xSectorSize(r);
}

static int timed_device_characteristics(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    return r->pMethods->xDeviceCharacteristics(r);
}

/* The shared-memory and mapping calls exist from version 2 and 3 of a
 * file's methods; the default VFS has both, a file without them answers
 * as SQLite expects of a file that lacks them. */
static int timed_shm_map(sqlite3_file *f, int region, int size, int extend, void volatile **pp)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion < 2)
        return SQLITE_IOERR_SHMMAP;
    return r->pMethods->xShmMap(r, region, size, extend, pp);
}

static int timed_shm_lock(sqlite3_file *f, int offset, int n, int flags)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion < 2)
        return SQLITE_IOERR_SHMLOCK;
    return r->pMethods->xShmLock(r, offset, n, flags);
}

static void timed_shm_barrier(sqlite3_file *f)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion >= 2)
        r->pMethods->xShmBarrier(r);
}

static int timed_shm_unmap(sqlite3_file *f, int delete_flag)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion < 2)
        return SQLITE_OK;
    return r->pMethods->xShmUnmap(r, delete_flag);
}

static int timed_fetch(sqlite3_file *f, sqlite3_int64 at, int n, void **pp)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion < 3) {
        *pp = NULL;
        return SQLITE_OK;
    }
    return r->pMethods->xFetch(r, at, n, pp);
}

static int timed_unfetch(sqlite3_file *f, sqlite3_int64 at, void *p)
{
    sqlite3_file *r = real_of(f);
    if (r->pMethods->iVersion < 3)
        return SQLITE_OK;
    return r->pMethods->xUnfetch(r, at, p);
}

static const sqlite3_io_methods timed_methods = {
    .iVersion = 3,
    .xClose = timed_close,
    .xRead = timed_read,
    .xWrite = timed_write,
    .xTruncate = timed_truncate,
    .xSync = timed_sync,
    .xFileSize = timed_file_size,
    .xLock = timed_lock,
    .xUnlock = timed_unlock,
    .xCheckReservedLock = timed_check_reserved,
    .xFileControl = timed_file_control,
    .xSectorSize = timed_sector_size,
    .xDeviceCharacteristics = timed_device_characteristics,
    .xShmMap = timed_shm_map,
    .xShmLock = timed_shm_lock,
    .xShmBarrier = timed_shm_barrier,
    .xShmUnmap = timed_shm_unmap,
    .xFetch = timed_fetch,
    .xUnfetch = timed_unfetch,
};

/* SQLite calls xClose whenever xOpen left pMethods set, failed or not, so
 * ours is set exactly when the default VFS set its own. */
static int timed_open(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags,
                      int *out_flags)
{
    struct store *s = vfs->pAppData;
    struct timed_file *tf = (struct timed_file *)f;
    tf->real = (sqlite3_file *)(tf + 1);
    tf->hist = &s->sync_db;
    int rc = s->vfs_base->xOpen(s->vfs_base, name, tf->real, flags, out_flags);
    tf->base.pMethods = tf->real->pMethods ? &timed_methods : NULL;
    return rc;
}

static sqlite3_vfs *base_of(sqlite3_vfs *vfs)
{
    return ((struct store *)vfs->pAppData)->vfs_base;
}

static int timed_delete(sqlite3_vfs *vfs, const char *name, int sync_dir)
{
    return base_of(vfs)->xDelete(base_of(vfs), name, sync_dir);
}

static int timed_access(sqlite3_vfs *vfs, const char *name, int flags, int *out)
{
    return base_of(vfs)->xAccess(base_of(vfs), name, flags, out);
}

static int timed_full_pathname(sqlite3_vfs *vfs, const char *name, int n, char *out)
{
    return base_of(vfs)->xFullPathname(base_of(vfs), name, n, out);
}

static void *timed_dl_open(sqlite3_vfs *vfs, const char *name)
{
    return base_of(vfs)->xDlOpen(base_of(vfs), name);
}

static void timed_dl_error(sqlite3_vfs *vfs, int n, char *out)
{
    base_of(vfs)->xDlError(base_of(vfs), n, out);
}

static void (*timed_dl_sym(sqlite3_vfs *vfs, void *handle, const char *symbol))(void)
{
    return base_of(vfs)->xDlSym(base_of(vfs), handle, symbol);
}

static void timed_dl_close(sqlite3_vfs *vfs, void *handle)
{
    base_of(vfs)->xDlClose(base_of(vfs), handle);
}

static int timed_randomness(sqlite3_vfs *vfs, int n, char *out)
{
    return base_of(vfs)->xRandomness(base_of(vfs), n, out);
}

static int timed_sleep(sqlite3_vfs *vfs, int us)
{
    return base_of(vfs)->xSleep(base_of(vfs), us);
}

static int timed_current_time(sqlite3_vfs *vfs, double *out)
{
    return base_of(vfs)->xCurrentTime(base_of(vfs), out);
}

static int timed_last_error(sqlite3_vfs *vfs, int n, char *out)
{
    return base_of(vfs)->xGetLastError(base_of(vfs), n, out);
}

static int timed_current_time_int64(sqlite3_vfs *vfs, sqlite3_int64 *out)
{
    return base_of(vfs)->xCurrentTimeInt64(base_of(vfs), out);
}

int store__vfs_register(struct store *s, struct err *err)
{
    sqlite3_vfs *base = sqlite3_vfs_find(NULL);
    if (!base) {
        err_set(err, ERR_INTERNAL, "cannot open database %s: SQLite has no default VFS",
                s->db_path);
        return -1;
    }
    s->vfs_base = base;
    (void)snprintf(s->vfs_name, sizeof s->vfs_name, "stratd-%p", (void *)s);
    /* version 2 adds xCurrentTimeInt64, offered only when the base has it */
    bool has_int64 = base->iVersion >= 2 && base->xCurrentTimeInt64;
    s->vfs = (sqlite3_vfs){
        .iVersion = has_int64 ? 2 : 1,
        .szOsFile = (int)sizeof(struct timed_file) + base->szOsFile,
        .mxPathname = base->mxPathname,
        .zName = s->vfs_name,
        .pAppData = s,
        .xOpen = timed_open,
        .xDelete = timed_delete,
        .xAccess = timed_access,
        .xFullPathname = timed_full_pathname,
        .xDlOpen = timed_dl_open,
        .xDlError = timed_dl_error,
        .xDlSym = timed_dl_sym,
        .xDlClose = timed_dl_close,
        .xRandomness = timed_randomness,
        .xSleep = timed_sleep,
        .xCurrentTime = timed_current_time,
        .xGetLastError = timed_last_error,
        .xCurrentTimeInt64 = has_int64 ? timed_current_time_int64 : NULL,
    };
    int rc = sqlite3_vfs_register(&s->vfs, 0);
    if (rc != SQLITE_OK)
        return store__fail(s, rc, err, "cannot open database %s", s->db_path);
    s->vfs_registered = true;
    return 0;
}

void store__vfs_unregister(struct store *s)
{
    if (s->vfs_registered)
        (void)sqlite3_vfs_unregister(&s->vfs);
    s->vfs_registered = false;
}

static void write_one(struct strbuf *out, const char *file, struct store__sync_hist *h)
{
    uint64_t buckets[STORE__SYNC_BUCKETS];
    for (size_t b = 0; b < STORE__SYNC_BUCKETS; b++)
        buckets[b] = atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
    double sum = (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9;
    metrics_write_histogram(out, "stratd_store_sync_seconds", "file", file, metrics_sync_bounds,
                            buckets, STORE__SYNC_BUCKETS, sum);
}

void store_metrics_write(struct store *store, struct strbuf *out)
{
    if (!store)
        return;
    metrics_write_header(out, "stratd_store_sync_seconds",
                         "Time each sync of the state database (its log and its file) and of the "
                         "audit log took: what a durable commit waits for on the disk.",
                         "histogram");
    write_one(out, "database", &store->sync_db);
    write_one(out, "audit", &store->sync_audit);
    store__history_metrics_write(store, out);
}

uint64_t store_sync_count(struct store *store, enum store_sync_file file)
{
    struct store__sync_hist *h = file == STORE_SYNC_AUDIT ? &store->sync_audit : &store->sync_db;
    uint64_t n = 0;
    for (size_t b = 0; b < STORE__SYNC_BUCKETS; b++)
        n += atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
    return n;
}
