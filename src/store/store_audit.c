/*
 * store_audit.c: the append-only audit log, one JSON object per line.
 *
 * Each entry is written with one write(2) on a descriptor opened with
 * O_APPEND before the call returns, so it survives the process being
 * killed. Syncing is a group commit: a syncer thread fsyncs whatever
 * accumulated, at most STORE__AUDIT_SYNC_MS after an append, so a burst of
 * appends (a fleet being created and started) costs one fsync rather than
 * one each; a power loss can lose the entries of that last window, never
 * the state they describe (SQLite syncs that on its own). A failed or short
 * write (disk full) is cut back off the file, and store_open() cuts off a
 * partial last line left by a crash, so a reader never meets a torn line in
 * the middle of the log.
 */
#include "store/store_internal.h"

#include "core/clock.h"
#include "core/jsonutil.h"
#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* The length of the file up to and including its last newline (0 if it
 * has none), reading backwards one block at a time. -1 on a read error. */
static off_t complete_length(int fd, off_t size)
{
    char block[4096];
    off_t end = size;
    while (end > 0) {
        size_t want = end < (off_t)sizeof block ? (size_t)end : sizeof block;
        off_t start = end - (off_t)want;
        ssize_t n = pread(fd, block, want, start);
        if (n != (ssize_t)want)
            return -1;
        for (size_t i = want; i > 0; i--) {
            if (block[i - 1] == '\n')
                return start + (off_t)i;
        }
        end = start;
    }
    return 0;
}

/* A process killed in the middle of write(2) can leave a partial last line
 * (a write spanning pages is not atomic against SIGKILL). That entry was
 * never acknowledged, so it is cut off before anything is appended after
 * it; otherwise the next entry would be glued to it. */
static int repair_tail(struct store *s, int fd, struct err *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot read audit log %s", s->audit_path);
        return -1;
    }
    if (st.st_size == 0)
        return 0;
    off_t keep = complete_length(fd, st.st_size);
    if (keep < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot read audit log %s", s->audit_path);
        return -1;
    }
    if (keep == st.st_size)
        return 0;
    int64_t t0 = clock_mono_ns();
    if (ftruncate(fd, keep) != 0 || fsync(fd) != 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot repair audit log %s", s->audit_path);
        return -1;
    }
    store__sync_observe(&s->sync_audit, clock_mono_ns() - t0);
    log_warn("store", "%s: removed an incomplete last entry (%lld bytes)", s->audit_path,
             (long long)(st.st_size - keep));
    return 0;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        continue;
}

/* Gathers appends for STORE__AUDIT_SYNC_MS, then syncs them with one fsync;
 * on quit it syncs what is left before it returns. */
static void *audit_syncer(void *arg)
{
    struct store *s = arg;
    pthread_mutex_lock(&s->audit_lock);
    for (;;) {
        while (!s->audit_dirty && !s->audit_quit)
            pthread_cond_wait(&s->audit_wake, &s->audit_lock);
        if (!s->audit_dirty)
            break;
        if (!s->audit_quit) {
            pthread_mutex_unlock(&s->audit_lock);
            sleep_ms(STORE__AUDIT_SYNC_MS);
            pthread_mutex_lock(&s->audit_lock);
        }
        s->audit_dirty = false;
        /* a reopen waits for this fsync before it closes the descriptor */
        s->audit_syncing = true;
        int fd = s->audit_fd;
        pthread_mutex_unlock(&s->audit_lock);
        int64_t t0 = clock_mono_ns();
        if (fsync(fd) != 0)
            log_error("store", "cannot sync audit log %s: %s", s->audit_path, strerror(errno));
        store__sync_observe(&s->sync_audit, clock_mono_ns() - t0);
        pthread_mutex_lock(&s->audit_lock);
        s->audit_syncing = false;
        pthread_cond_broadcast(&s->audit_wake);
    }
    pthread_mutex_unlock(&s->audit_lock);
    return NULL;
}

void store__audit_close(struct store *s)
{
    if (s->audit_syncer_started) {
        pthread_mutex_lock(&s->audit_lock);
        s->audit_quit = true;
        pthread_cond_broadcast(&s->audit_wake);
        pthread_mutex_unlock(&s->audit_lock);
        pthread_join(s->audit_syncer, NULL);
        s->audit_syncer_started = false;
    }
    if (s->audit_fd >= 0)
        close(s->audit_fd);
    s->audit_fd = -1;
}

/* Opens the audit log's path for appending, private; -1 with `doing` in
 * the message when it cannot. */
static int open_audit_file(struct store *s, const char *doing, struct err *err)
{
    /* O_RDWR rather than O_WRONLY: the repair reads the tail. */
    int fd = open(s->audit_path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot %s audit log %s", doing, s->audit_path);
        return -1;
    }
    store__keep_private(fd, s->audit_path);
    return fd;
}

int store__audit_open(struct store *s, struct err *err)
{
    int fd = open_audit_file(s, "open", err);
    if (fd < 0)
        return -1;
    if (repair_tail(s, fd, err) != 0) {
        close(fd);
        return -1;
    }
    s->audit_fd = fd;
    int rc = pthread_create(&s->audit_syncer, NULL, audit_syncer, s);
    if (rc != 0) {
        err_set_errno(err, ERR_INTERNAL, rc, "cannot start the audit log's syncer");
        return -1;
    }
    s->audit_syncer_started = true;
    return 0;
}

int store_audit_reopen(struct store *store, struct err *err)
{
    int fd = open_audit_file(store, "reopen", err);
    if (fd < 0)
        return -1;
    pthread_mutex_lock(&store->audit_lock);
    while (store->audit_syncing)
        pthread_cond_wait(&store->audit_wake, &store->audit_lock);
    /* Under the lock: when the path is still the file open now (a SIGHUP
     * with no rotation), an append in progress must not be read as a torn
     * last line and cut. */
    if (repair_tail(store, fd, err) != 0) {
        pthread_mutex_unlock(&store->audit_lock);
        close(fd);
        return -1;
    }
    int old = store->audit_fd;
    store->audit_fd = fd;
    pthread_mutex_unlock(&store->audit_lock);
    if (old < 0)
        return 0;
    /* what went to the old file is synced here: the syncer now syncs the
     * new one only */
    int64_t t0 = clock_mono_ns();
    if (fsync(old) != 0)
        log_error("store", "cannot sync the audit log that %s was until its reopen: %s",
                  store->audit_path, strerror(errno));
    store__sync_observe(&store->sync_audit, clock_mono_ns() - t0);
    close(old);
    return 0;
}

/* {"ts": ..., then the entry's own fields}: the time comes first so the log
 * reads like the process log. A "ts" in the entry is replaced. */
static char *audit_line(const json_t *entry, size_t *len)
{
    char ts[32];
    clock_format_rfc3339(clock_wall_ms(), ts, sizeof ts);
    json_t *line = json_pack("{s:s}", "ts", ts);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)entry, key, value)
    {
        if (line && strcmp(key, "ts") != 0 && json_object_set(line, key, value) != 0) {
            json_decref(line);
            line = NULL;
        }
    }
    if (!line)
        return NULL;
    size_t n = 0;
    char *text = jsonutil_dump(line, &n);
    json_decref(line);
    char *with_newline = text ? realloc(text, n + 2) : NULL;
    if (!with_newline) {
        free(text);
        return NULL;
    }
    with_newline[n] = '\n';
    with_newline[n + 1] = '\0';
    *len = n + 1;
    return with_newline;
}

/* A regular file takes the whole line in one write unless the disk fills
 * mid-way; the loop then finds out why (usually ENOSPC). */
static int write_line(int fd, const char *line, size_t len)
{
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, line + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return n < 0 ? errno : ENOSPC;
        done += (size_t)n;
    }
    return 0;
}

/* Called with audit_lock held, so nothing else appends between the size
 * read here and the truncation after a failed write. The size comes from
 * lseek, not fstat: on Linux 6.13 and later a stat makes the file's next
 * write take a fine-grained timestamp, which moves the clock every other
 * file's modification time is read from, so each commit of SQLite's WAL
 * changed its mtime and (on ext4 without a journal) wrote its inode back in
 * fdatasync: an extra synchronous write per request. */
static int append_locked(struct store *s, const char *line, size_t len, struct err *err)
{
    off_t size = lseek(s->audit_fd, 0, SEEK_END);
    if (size < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot append to audit log %s", s->audit_path);
        return -1;
    }
    int errnum = write_line(s->audit_fd, line, len);
    if (errnum != 0) {
        if (ftruncate(s->audit_fd, size) != 0)
            log_error("store", "cannot cut a partial line off %s: %s", s->audit_path,
                      strerror(errno));
        err_set_errno(err, ERR_INTERNAL, errnum, "cannot append to audit log %s", s->audit_path);
        return -1;
    }
    if (!s->audit_dirty) {
        s->audit_dirty = true;
        /* a reopen may be waiting on the same condition */
        pthread_cond_broadcast(&s->audit_wake);
    }
    return 0;
}

int store_audit_append(struct store *store, const json_t *entry, struct err *err)
{
    if (!store || !json_is_object(entry)) {
        err_set(err, ERR_INVALID, "an audit entry must be a JSON object");
        return -1;
    }
    size_t len = 0;
    char *line = audit_line(entry, &len);
    if (!line) {
        err_set(err, ERR_INTERNAL, "out of memory writing the audit log");
        return -1;
    }
    pthread_mutex_lock(&store->audit_lock);
    int rc = append_locked(store, line, len, err);
    pthread_mutex_unlock(&store->audit_lock);
    free(line);
    return rc;
}
