/*
 * fsutil: durable file operations and the cross-process lock.
 *
 * Contract
 * - fsutil_write_atomic() leaves either the old or the new content at `path`
 *   whatever happens (crash, power loss, disk full): it writes a temporary
 *   file in the same directory, fsyncs it, renames it over `path` and fsyncs
 *   the directory. On failure the temporary file is removed.
 * - fsutil_write_atomic_keep() does the same and keeps the replaced file
 *   reachable under a hard link "<path>.old.<pid>.<n>" (*kept, malloc'ed;
 *   NULL when nothing was replaced or the link could not be made). Freeing
 *   a large file's blocks inside rename() costs milliseconds on ext4; the
 *   caller hands *kept to a reaper (below), even when the call failed after
 *   the rename. Anything named "<path>.old.*" is garbage once its writer is
 *   gone: a process that owns path may sweep it on start.
 * - fsutil_write_swap() has the outcome of fsutil_write_atomic() and keeps
 *   the version before last at `spare` (same directory), whose blocks the
 *   next call overwrites in place: nothing is allocated or freed. The spare
 *   is overwritten only while this process holds a write lease on it, which
 *   the kernel grants only when no one else has it open and which makes a
 *   concurrent open() wait for the complete bytes; a spare that is open
 *   elsewhere, has another link or is path itself loses its name to a new
 *   file instead. Then path and spare exchange names (RENAME_EXCHANGE) and
 *   the directory is fsynced. `before` (optional) is called once the new
 *   bytes are durable and before path changes: the caller waits there for
 *   other files that must be durable first; its failure stops the write.
 *   Without leases or RENAME_EXCHANGE (some file systems) the result is
 *   that of fsutil_write_atomic_keep(), with *kept as it sets it (kept may
 *   be NULL: the replaced file is then removed in the call). The spare is
 *   garbage to anyone but the writer; it must not be swept while a writer
 *   may run. Writers of one path must be serialised by the caller (the
 *   catalogue's lock): two at once would both write the spare.
 * - fsutil_reaper: removes files on a thread of its own, in the order they
 *   were handed over. fsutil_reaper_remove() takes ownership of `path`; with
 *   a NULL reaper, or when its thread cannot start, it removes the file in
 *   the caller. fsutil_reaper_destroy() removes what is still queued, then
 *   joins the thread. Removal is not durable (no directory fsync): what a
 *   crash leaves is swept by the owner on the next start.
 * - fsutil_lock_*: an exclusive advisory lock (flock) on a lock file. Other
 *   processes that take the same lock (the bootstrap tool, a second server)
 *   are serialised with this one; within a process two holders also exclude
 *   each other because each acquisition opens its own descriptor.
 * - Returned buffers are malloc'ed and owned by the caller.
 * - Errors: ERR_NOT_FOUND for a missing file, ERR_TOO_LARGE for a file over
 *   the caller's limit, ERR_NO_SPACE when the disk is full, ERR_INTERNAL for
 *   other I/O failures. Thread-safe.
 */
#ifndef STRATD_CORE_FSUTIL_H
#define STRATD_CORE_FSUTIL_H

#include "core/err.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

/* Reads a whole regular file; *data is NUL-terminated (not counted in
 * *len). Anything else (a folder, a FIFO, a device) is ERR_INVALID "... is
 * not a regular file", without waiting on it. */
int fsutil_read_file(const char *path, size_t max_len, char **data, size_t *len, struct err *err);
int fsutil_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                        struct err *err);
/* Creates (or truncates) path with data and fsyncs it, without the rename:
 * for a temporary the caller moves into place itself. On failure the file
 * is removed. The directory entry is not made durable. */
int fsutil_write_new(const char *path, const void *data, size_t len, mode_t mode, struct err *err);
int fsutil_write_atomic_keep(const char *path, const void *data, size_t len, mode_t mode,
                             char **kept, struct err *err);

/* A byte range of a file: [at, at + len). */
struct fsutil_range {
    size_t at, len;
};

struct fsutil_before_switch {
    int (*wait)(void *ctx, struct err *err);
    void *ctx;
};

int fsutil_write_swap(const char *path, const char *spare, const void *data, size_t len,
                      mode_t mode, const struct fsutil_before_switch *before, char **kept,
                      struct err *err);
int fsutil_fsync_dir(const char *dir, struct err *err);
/* fsync (data_only: fdatasync) of fd, timed into the process's sync
 * histogram of files or of directories; every sync the functions here make
 * goes through it. -1 with errno set. Any thread. */
int fsutil_sync_timed(int fd, bool data_only, bool directory);
/* stratd_file_sync_seconds{kind="file"|"directory"}: those syncs, in the
 * Prometheus text format. Any thread. */
struct strbuf;
void fsutil_sync_metrics_write(struct strbuf *out);
/* pwrite() of all len bytes at offset `at`, through short writes and EINTR;
 * -1 with errno set. */
int fsutil_pwrite_all(int fd, const void *data, size_t len, size_t at);
/* The directory part of path (dirname), malloc'ed; NULL if out of memory. */
char *fsutil_dir_of(const char *path);
/* mkdir -p; existing directories are fine. */
int fsutil_mkdirs(const char *path, mode_t mode, struct err *err);
bool fsutil_is_dir(const char *path);
bool fsutil_exists(const char *path);
/* Removes a file, then fsyncs its directory. A missing file is not an error. */
int fsutil_remove_durable(const char *path, struct err *err);
/* Removes an empty directory; a missing or non-empty directory is left. */
void fsutil_rmdir_if_empty(const char *path);
/* Whether name is exactly "<base>.<kind>.<pid>.<n>" with pid and n all
 * decimal digits: the shape of the names this module gives the files it
 * writes beside base, the temporary of fsutil_write_atomic() (kind "tmp")
 * and the replaced file fsutil_write_atomic_keep() keeps (kind "old").
 * A sweep of a dead writer's leftovers matches names with this and nothing
 * looser, so a file that merely starts like one is never taken for one. */
bool fsutil_is_writer_name(const char *name, const char *base, const char *kind);
/* A fresh name of the writer shape beside path, "<path>.<kind>.<pid>.<n>"
 * (malloc'ed; NULL if out of memory), for a caller's own marker or
 * temporary that a start-up sweep must recognise (fsutil_is_writer_name). */
char *fsutil_writer_name(const char *path, const char *kind);
/* "a" + "/" + "b", malloc'ed; NULL if out of memory. */
char *fsutil_join(const char *a, const char *b);
/* A printf-formatted path, malloc'ed; NULL if out of memory. */
__attribute__((format(printf, 1, 2))) char *fsutil_format(const char *fmt, ...);

/* What the kernel says about a file without reading it. Any write through
 * the file system changes mtime and ctime (ctime cannot be set from user
 * space), and a replacement by rename changes the inode, so an equal
 * identity means the bytes were not changed through the file system since
 * it was taken. Media corruption under the file system is not seen. */
struct fsutil_identity {
    uint64_t dev;
    uint64_t ino;
    uint64_t size;
    int64_t mtime_ns;
    int64_t ctime_ns;
};

/* The identity in a stat() result, for callers that fstat an open file. */
void fsutil_identity_from_stat(const struct stat *st, struct fsutil_identity *out);
/* stat() of path. -1 (errno set, no err) when it cannot be taken. */
int fsutil_identity_of(const char *path, struct fsutil_identity *out);
/* The same for a path relative to the directory dirfd (fstatat). */
int fsutil_identity_at(int dirfd, const char *rel, struct fsutil_identity *out);
bool fsutil_identity_equal(const struct fsutil_identity *a, const struct fsutil_identity *b);

/* What a caller knows of the spare of fsutil_write_swap(): that the new
 * bytes differ from the spare's only within `ranges`, as long as the spare
 * still has the identity `spare` (what `left` said after the previous
 * call). */
struct fsutil_swap_hint {
    const struct fsutil_range *ranges;
    size_t nranges;
    struct fsutil_identity spare;
};
/* fsutil_write_swap() that, given a hint (may be NULL) whose identity and
 * size still hold, writes only the hint's ranges instead of comparing the
 * whole file page by page; with any doubt it compares as usual. *left (may
 * be NULL) receives the identity of the spare after the switch, which then
 * holds the replaced version; all zero when there is no such spare (the
 * classic path ran, or there was no file at path). */
int fsutil_write_swap_hinted(const char *path, const char *spare, const void *data, size_t len,
                             mode_t mode, const struct fsutil_before_switch *before,
                             const struct fsutil_swap_hint *hint, struct fsutil_identity *left,
                             char **kept, struct err *err);

struct fsutil_reaper;

/* NULL when out of memory; the thread starts with the first removal. */
struct fsutil_reaper *fsutil_reaper_create(void);
void fsutil_reaper_remove(struct fsutil_reaper *reaper, char *path);
/* Blocks until everything handed over so far is removed. */
void fsutil_reaper_flush(struct fsutil_reaper *reaper);
void fsutil_reaper_destroy(struct fsutil_reaper *reaper);

struct fsutil_lock {
    int fd;
};

#define FSUTIL_LOCK_INIT                                                                           \
    {                                                                                              \
        -1                                                                                         \
    }

/* Blocks until the lock is held. Creates the lock file if needed. */
int fsutil_lock_acquire(const char *lock_path, struct fsutil_lock *lock, struct err *err);
void fsutil_lock_release(struct fsutil_lock *lock);

#endif
