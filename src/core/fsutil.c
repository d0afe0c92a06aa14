#include "core/fsutil.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int fsutil_read_file(const char *path, size_t max_len, char **data, size_t *len, struct err *err)
{
    /* O_NONBLOCK: opening a FIFO would otherwise wait for a writer before
     * the check below could refuse it; it changes nothing for a regular
     * file's reads. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        err_set_errno(err, errno == ENOENT ? ERR_NOT_FOUND : ERR_INTERNAL, errno, "cannot open %s",
                      path);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot stat %s", path);
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        err_set(err, ERR_INVALID, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    if ((uint64_t)st.st_size > max_len) {
        err_set(err, ERR_TOO_LARGE, "%s is %lld bytes, over the limit of %zu", path,
                (long long)st.st_size, max_len);
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size;
    char *buf = malloc(cap + 1);
    if (!buf) {
        err_set(err, ERR_INTERNAL, "out of memory reading %s", path);
        close(fd);
        return -1;
    }
    size_t got = 0;
    while (got < cap) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            err_set_errno(err, ERR_INTERNAL, errno, "cannot read %s", path);
            free(buf);
            close(fd);
            return -1;
        }
        if (n == 0)
            break; /* the file shrank while we read it: keep what is there */
        got += (size_t)n;
    }
    close(fd);
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return 0;
}

int fsutil_pwrite_all(int fd, const void *data, size_t len, size_t at)
{
    const char *p = data;
    size_t done = 0;
    while (done < len) {
        ssize_t n = pwrite(fd, p + done, len - done, (off_t)(at + done));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

char *fsutil_dir_of(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return NULL;
    char *dir = strdup(dirname(copy));
    free(copy);
    return dir;
}

int fsutil_fsync_dir(const char *dir, struct err *err)
{
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot open directory %s", dir);
        return -1;
    }
    int rc = fsutil_sync_timed(fd, false, true);
    int saved = errno;
    close(fd);
    if (rc != 0) {
        err_set_errno(err, ERR_INTERNAL, saved, "cannot fsync directory %s", dir);
        return -1;
    }
    return 0;
}

/* Hard-links the file at path to "<path>.old.<pid>.<n>" and returns that
 * name (malloc'ed), or NULL when there is no file or it cannot be linked. */
static char *keep_replaced(const char *path, unsigned sequence)
{
    char *kept = fsutil_format("%s.old.%ld.%u", path, (long)getpid(), sequence);
    if (kept && link(path, kept) != 0) {
        free(kept);
        kept = NULL;
    }
    return kept;
}

int fsutil_write_new(const char *path, const void *data, size_t len, mode_t mode, struct err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot create %s", path);
        return -1;
    }
    if (fsutil_pwrite_all(fd, data, len, 0) != 0 || fsutil_sync_timed(fd, false, false) != 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot write %s", path);
        close(fd);
        unlink(path);
        return -1;
    }
    if (close(fd) != 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot write %s", path);
        unlink(path);
        return -1;
    }
    return 0;
}

/* One sequence for every temporary name of the process, so two writers of
 * one path never pick the same name. */
static atomic_uint temp_sequence;

char *fsutil_writer_name(const char *path, const char *kind)
{
    unsigned n = atomic_fetch_add(&temp_sequence, 1);
    return fsutil_format("%s.%s.%ld.%u", path, kind, (long)getpid(), n);
}

static int replace_file(const char *path, const void *data, size_t len, mode_t mode, char **kept,
                        struct err *err)
{
    unsigned n = atomic_fetch_add(&temp_sequence, 1);
    char *tmp = fsutil_format("%s.tmp.%ld.%u", path, (long)getpid(), n);
    char *dir = fsutil_dir_of(path);
    if (!tmp || !dir) {
        free(tmp);
        free(dir);
        err_set(err, ERR_INTERNAL, "out of memory writing %s", path);
        return -1;
    }
    int rc = -1;
    if (fsutil_write_new(tmp, data, len, mode, err) != 0)
        goto out;
    if (kept)
        *kept = keep_replaced(path, n);
    if (rename(tmp, path) != 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot rename %s over %s", tmp, path);
        unlink(tmp);
        if (kept && *kept) {
            unlink(*kept);
            free(*kept);
            *kept = NULL;
        }
        goto out;
    }
    rc = fsutil_fsync_dir(dir, err);
out:
    free(tmp);
    free(dir);
    return rc;
}

int fsutil_write_atomic(const char *path, const void *data, size_t len, mode_t mode,
                        struct err *err)
{
    return replace_file(path, data, len, mode, NULL, err);
}

int fsutil_write_atomic_keep(const char *path, const void *data, size_t len, mode_t mode,
                             char **kept, struct err *err)
{
    *kept = NULL;
    return replace_file(path, data, len, mode, kept, err);
}

int fsutil_mkdirs(const char *path, mode_t mode, struct err *err)
{
    char *copy = strdup(path);
    if (!copy) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    for (char *p = copy + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char saved = *p;
        *p = '\0';
        if (mkdir(copy, mode) != 0 && errno != EEXIST) {
            err_set_errno(err, ERR_INTERNAL, errno, "cannot create directory %s", copy);
            free(copy);
            return -1;
        }
        *p = saved;
        if (saved == '\0')
            break;
    }
    free(copy);
    if (!fsutil_is_dir(path)) {
        err_set(err, ERR_INTERNAL, "%s exists and is not a directory", path);
        return -1;
    }
    return 0;
}

bool fsutil_is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool fsutil_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int fsutil_remove_durable(const char *path, struct err *err)
{
    if (unlink(path) != 0 && errno != ENOENT) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot remove %s", path);
        return -1;
    }
    char *dir = fsutil_dir_of(path);
    if (!dir) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    int rc = fsutil_fsync_dir(dir, err);
    free(dir);
    return rc;
}

void fsutil_rmdir_if_empty(const char *path)
{
    (void)rmdir(path);
}

/* 1 to 20 decimal digits (a pid or a sequence number), then `end`. */
static const char *skip_number(const char *p, char end)
{
    size_t digits = strspn(p, "0123456789");
    return digits > 0 && digits <= 20 && p[digits] == end ? p + digits + 1 : NULL;
}

bool fsutil_is_writer_name(const char *name, const char *base, const char *kind)
{
    size_t base_len = strlen(base), kind_len = strlen(kind);
    if (strncmp(name, base, base_len) != 0 || name[base_len] != '.' ||
        strncmp(name + base_len + 1, kind, kind_len) != 0 || name[base_len + 1 + kind_len] != '.')
        return false;
    const char *p = skip_number(name + base_len + kind_len + 2, '.');
    return p && skip_number(p, '\0') != NULL;
}

char *fsutil_join(const char *a, const char *b)
{
    return fsutil_format("%s/%s", a, b);
}

char *fsutil_format(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    int n = vasprintf(&out, fmt, ap);
    va_end(ap);
    return n < 0 ? NULL : out;
}

int fsutil_lock_acquire(const char *lock_path, struct fsutil_lock *lock, struct err *err)
{
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot open lock %s", lock_path);
        return -1;
    }
    while (flock(fd, LOCK_EX) != 0) {
        if (errno == EINTR)
            continue;
        err_set_errno(err, ERR_INTERNAL, errno, "cannot lock %s", lock_path);
        close(fd);
        return -1;
    }
    lock->fd = fd;
    return 0;
}

void fsutil_lock_release(struct fsutil_lock *lock)
{
    if (lock->fd >= 0) {
        flock(lock->fd, LOCK_UN);
        close(lock->fd);
        lock->fd = -1;
    }
}

void fsutil_identity_from_stat(const struct stat *st, struct fsutil_identity *out)
{
    out->dev = (uint64_t)st->st_dev;
    out->ino = (uint64_t)st->st_ino;
    out->size = (uint64_t)st->st_size;
    out->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    out->ctime_ns = (int64_t)st->st_ctim.tv_sec * 1000000000 + st->st_ctim.tv_nsec;
}

int fsutil_identity_of(const char *path, struct fsutil_identity *out)
{
    return fsutil_identity_at(AT_FDCWD, path, out);
}

int fsutil_identity_at(int dirfd, const char *rel, struct fsutil_identity *out)
{
    struct stat st;
    if (fstatat(dirfd, rel, &st, 0) != 0)
        return -1;
    fsutil_identity_from_stat(&st, out);
    return 0;
}

bool fsutil_identity_equal(const struct fsutil_identity *a, const struct fsutil_identity *b)
{
    return a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime_ns == b->mtime_ns && a->ctime_ns == b->ctime_ns;
}
