/*
 * Changes to the catalogue. Each one follows the same steps:
 *
 *   1. validate the arguments (no lock needed);
 *   2. take change_mu and the flock, and reload if another process rewrote
 *      registry.json since the current snapshot was built;
 *   3. build the next snapshot from the current one, copying only the
 *      strategy that changes;
 *   4. write the revision file (a new revision) durably, then registry.json;
 *   5. publish, then remove files that the registry no longer names.
 *
 * The order of step 4 and 5 is what makes a crash harmless: the registry
 * never names a file that is not complete on disk, and a file is only
 * removed once no registry names it. If a write fails, nothing is published
 * and a file written for the failed change is removed again.
 */
#include "registry/registry_internal.h"

#include "core/jsonutil.h"
#include "core/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* --------------------------------------------------------- validation */

static int check_name(const char *name, struct err *err)
{
    if (!name || !names_valid_strategy(name)) {
        err_set(err, ERR_INVALID, "invalid strategy name '%.80s'", name ? name : "");
        return -1;
    }
    return 0;
}

static int check_tag(const char *tag, struct err *err)
{
    if (!tag || !names_valid_tag(tag)) {
        err_set(err, ERR_INVALID, "invalid tag '%.140s'", tag ? tag : "");
        return -1;
    }
    return 0;
}

static int check_hex(const char *text, char hex[HASH_HEX_LEN + 1], struct err *err)
{
    if (!text || !hash_parse_full(text, hex)) {
        err_set(err, ERR_INVALID, "'%.80s' is not a full sha256 hash", text ? text : "");
        return -1;
    }
    return 0;
}

static int check_tags(const char *const *tags, size_t n, struct err *err)
{
    for (size_t i = 0; i < n; i++) {
        if (check_tag(tags[i], err) != 0)
            return -1;
    }
    return 0;
}

static bool listed(const char *tag, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], tag) == 0)
            return true;
    }
    return false;
}

static int oom(struct err *err)
{
    err_set(err, ERR_INTERNAL, "out of memory changing the registry");
    return -1;
}

/* ----------------------------------------------------- the change frame */

/* True on the thread that has a batch open: it already holds the locks. */
static bool in_batch(const struct catalog *cat)
{
    return atomic_load_explicit(&cat->batch, memory_order_acquire) &&
           pthread_equal(cat->batch_owner, pthread_self());
}

static int change_begin(struct catalog *cat, struct fsutil_lock *lock, struct err *err)
{
    if (in_batch(cat))
        return 0;
    pthread_mutex_lock(&cat->change_mu);
    if (fsutil_lock_acquire(cat->lock_path, lock, err) != 0) {
        pthread_mutex_unlock(&cat->change_mu);
        return -1;
    }
    if (catalog__sync(cat, err) != 0) {
        fsutil_lock_release(lock);
        pthread_mutex_unlock(&cat->change_mu);
        return -1;
    }
    return 0;
}

static void change_end(struct catalog *cat, struct fsutil_lock *lock)
{
    if (in_batch(cat))
        return;
    fsutil_lock_release(lock);
    pthread_mutex_unlock(&cat->change_mu);
}

bool catalog_error_published(const struct err *err)
{
    return err && json_is_true(json_object_get(err->details, CATALOG_PUBLISHED));
}

void catalog_change_release(struct catalog_change *change)
{
    if (!change)
        return;
    registry_release(change->before);
    registry_release(change->after);
    change->before = change->after = NULL;
}

/* Under the change's lock, after change_begin (so that a reload of another
 * process's registry.json counts as before, not as this change). */
static void note_before(const struct catalog *cat, struct catalog_change *change)
{
    if (!change)
        return;
    registry_retain(cat->current);
    change->before = cat->current;
    change->after = NULL;
}

/* Under the same lock, once the change is published or refused. A change
 * whose write failed once registry.json held it (its directory's sync) is
 * published all the same, so it is noted too. */
static void note_after(const struct catalog *cat, struct catalog_change *change, int rc)
{
    if (!change)
        return;
    if (rc != 0 && cat->current->generation == change->before->generation) {
        catalog_change_release(change);
        return;
    }
    registry_retain(cat->current);
    change->after = cat->current;
}

static int range_order(const void *a, const void *b)
{
    size_t x = ((const struct fsutil_range *)a)->at, y = ((const struct fsutil_range *)b)->at;
    return (x > y) - (x < y);
}

/* Sorts and joins overlapping or touching ranges (a line changed by both
 * writes is written once); returns how many are left. */
static size_t merge_ranges(struct fsutil_range *r, size_t n)
{
    if (n < 2)
        return n;
    qsort(r, n, sizeof *r, range_order);
    size_t k = 0;
    for (size_t i = 1; i < n; i++) {
        if (r[i].at <= r[k].at + r[k].len) {
            size_t end = r[i].at + r[i].len;
            if (end > r[k].at + r[k].len)
                r[k].len = end - r[k].at;
        } else {
            r[++k] = r[i];
        }
    }
    return k + 1;
}

/* The ranges where the new text can differ from the spare: what the last
 * write changed (the spare holds the text before it) and what this one
 * changes, both in the same layout. False when that is not known. */
static bool spare_hint(const struct catalog *cat, struct fsutil_swap_hint *hint)
{
    const struct registry_text_buffer *buf = &cat->text;
    if (!cat->disk_matches || !cat->spare_known || buf->whole)
        return false;
    size_t n = cat->nspare_changed + buf->nchanged;
    struct fsutil_range *ranges = malloc((n ? n : 1) * sizeof *ranges);
    if (!ranges)
        return false;
    if (cat->nspare_changed)
        memcpy(ranges, cat->spare_changed, cat->nspare_changed * sizeof *ranges);
    if (buf->nchanged)
        memcpy(ranges + cat->nspare_changed, buf->changed, buf->nchanged * sizeof *ranges);
    *hint = (struct fsutil_swap_hint){ranges, merge_ranges(ranges, n), cat->spare_id};
    return true;
}

/* After a write (left NULL: it failed): the replaced registry.json is the
 * spare now, and it holds the text before this write's changes when
 * registry.json held that text and the layout stayed. */
static void note_spare(struct catalog *cat, const struct fsutil_identity *left)
{
    struct registry_text_buffer *buf = &cat->text;
    bool known = left && left->ino != 0 && cat->disk_matches && !buf->whole;
    if (known && buf->nchanged > cat->spare_changed_cap) {
        struct fsutil_range *grown = realloc(cat->spare_changed, buf->nchanged * sizeof *grown);
        known = grown != NULL;
        if (grown) {
            cat->spare_changed = grown;
            cat->spare_changed_cap = buf->nchanged;
        }
    }
    if (known) {
        if (buf->nchanged)
            memcpy(cat->spare_changed, buf->changed, buf->nchanged * sizeof *buf->changed);
        cat->nspare_changed = buf->nchanged;
        cat->spare_id = *left;
    }
    cat->spare_known = known;
    cat->disk_matches = left != NULL;
    registry__text_forget_changes(buf);
}

/* The file is the concatenation of one cached line per strategy, so a
 * change costs a copy of the file, not a serialisation of the catalogue.
 * It goes over the spare (the version before last) and takes its place,
 * so that no blocks are allocated or freed on the change's path (2.8 MB
 * with 10,000 revisions: fdatasync 3.3 -> 2.3 ms, and no 1.5-1.9 ms of
 * freeing inside rename). Where the file system cannot do that, the
 * replaced file waits for catalog_housekeep instead. Its digest is left ""
 * (not taken): the identity noted after the switch stands for it until a
 * reload reads the file anyway (catalog.c). */
/* After a failed write: whether registry.json holds the new text anyway,
 * which happens when only the directory's sync after the switch failed. */
static bool disk_holds(const struct catalog *cat, const char *text, size_t len)
{
    char *data = NULL;
    size_t got = 0;
    struct err e = ERR_INIT;
    bool same = fsutil_read_file(cat->registry_path, len + 1, &data, &got, &e) == 0 && got == len &&
                memcmp(data, text, len) == 0;
    err_clear(&e);
    free(data);
    return same;
}

/* *switched tells a failure after registry.json took the new text (its
 * directory's sync) from one before it. */
static int write_registry(struct catalog *cat, struct registry *reg,
                          const struct fsutil_before_switch *before,
                          char written_hex[HASH_HEX_LEN + 1], bool *switched, struct err *err)
{
    *switched = false;
    size_t len = 0;
    char *text = registry__text_cached(reg, &cat->text, &len);
    if (!text) {
        catalog__forget_spare(cat);
        return oom(err);
    }
    written_hex[0] = '\0';
    char *replaced = NULL;
    struct fsutil_swap_hint hint = {0};
    bool hinted = spare_hint(cat, &hint);
    struct fsutil_identity left;
    int rc = fsutil_write_swap_hinted(cat->registry_path, cat->spare_path, text, len, 0644, before,
                                      hinted ? &hint : NULL, &left, &replaced, err);
    free((void *)hint.ranges);
    note_spare(cat, rc == 0 ? &left : NULL);
    if (replaced)
        fsutil_reaper_remove(cat->reaper, atomic_exchange(&cat->replaced, replaced));
    if (rc != 0)
        *switched = disk_holds(cat, text, len);
    return rc;
}

/* Publishes what write_registry put in registry.json; takes reg's
 * reference. A switch whose sync failed (rc != 0) still shows the change,
 * so the snapshot follows the disk and the caller keeps every file it
 * names. */
static void publish_written(struct catalog *cat, struct registry *reg, const char *written, int rc)
{
    if (rc != 0)
        log_error(REGISTRY__COMPONENT,
                  "registry.json holds the change but may not keep it through a power loss");
    catalog__publish(cat, reg, true, written);
    /* Taken after the rename, under the lock: the identity of our bytes. */
    struct fsutil_identity id;
    bool known = fsutil_identity_of(cat->registry_path, &id) == 0;
    catalog__note_disk(cat, known ? &id : NULL);
}

/* Publishes next without writing: registry.json still holds what it held. */
static void publish_unwritten(struct catalog *cat, struct registry *next)
{
    char disk_hex[HASH_HEX_LEN + 1];
    memcpy(disk_hex, cat->disk_hex, sizeof disk_hex);
    catalog__publish(cat, next, cat->disk_present, disk_hex);
}

/* Writes registry.json for `next` and publishes it; takes next's reference.
 * `before` as in fsutil_write_swap. Inside a batch the write waits for
 * catalog_batch_end. */
static int commit(struct catalog *cat, struct registry *next,
                  const struct fsutil_before_switch *before, struct err *err)
{
    if (in_batch(cat)) {
        publish_unwritten(cat, next);
        cat->batch_dirty = true;
        return 0;
    }
    char written[HASH_HEX_LEN + 1];
    bool switched = false;
    int rc = write_registry(cat, next, before, written, &switched, err);
    if (rc != 0 && !switched) {
        registry_release(next);
        return -1;
    }
    publish_written(cat, next, written, rc);
    if (rc != 0)
        err_add_detail(err, CATALOG_PUBLISHED, json_true());
    return rc;
}

/* Replaces (or removes, st == NULL) one strategy and commits; takes st. */
static int commit_strategy_after(struct catalog *cat, const char *name,
                                 struct registry_strategy *st,
                                 const struct fsutil_before_switch *before, struct err *err)
{
    struct registry *next = registry__with(cat->current, name, st);
    if (!next)
        return oom(err);
    return commit(cat, next, before, err);
}

static int commit_strategy(struct catalog *cat, const char *name, struct registry_strategy *st,
                           struct err *err)
{
    return commit_strategy_after(cat, name, st, NULL, err);
}

/* ------------------------------------------------------ revision files */

struct staged_file {
    char *name_dir;
    char *hex_dir;
    char *path;
    char *marker; /* CATALOG_PENDING_KIND; NULL inside a batch */
    bool new_hex_dir;
    bool new_name_dir;
    bool written;
};

/* Marks hex_dir (which exists) as disagreeing with the registry for a
 * while; *marker is the marker's path (malloc'ed). Its entry becomes
 * durable with the caller's next fsync of hex_dir. */
static int mark_pending(const char *file_path, char **marker, struct err *err)
{
    *marker = fsutil_writer_name(file_path, CATALOG_PENDING_KIND);
    if (!*marker)
        return oom(err);
    int fd = open(*marker, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0 || close(fd) != 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot create %s", *marker);
        free(*marker);
        *marker = NULL;
        return -1;
    }
    return 0;
}

/* The registry has said its last word on the marked folder. */
static void unmark(char **marker)
{
    if (*marker && unlink(*marker) != 0 && errno != ENOENT)
        log_warn(REGISTRY__COMPONENT, "cannot remove %s: %s", *marker, strerror(errno));
    free(*marker);
    *marker = NULL;
}

/* A commit whose switch happened but whose sync failed may yet be undone
 * by a power cut: the marker stays for the next open to settle. */
static void keep_marker(char **marker)
{
    free(*marker);
    *marker = NULL;
}

static void staged_free(struct staged_file *f)
{
    unmark(&f->marker);
    free(f->name_dir);
    free(f->hex_dir);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* Takes back a file written for a change that did not happen. */
static void staged_undo(struct staged_file *f)
{
    if (!f->path)
        return;
    if (f->written && unlink(f->path) != 0)
        log_warn(REGISTRY__COMPONENT, "cannot remove %s after a failed change", f->path);
    unmark(&f->marker);
    if (f->new_hex_dir)
        fsutil_rmdir_if_empty(f->hex_dir);
    if (f->new_name_dir)
        fsutil_rmdir_if_empty(f->name_dir);
}

/* The client learns which revision could not be written and why, in the
 * system's words; where the strategies live on the server goes to the log
 * only. A path that something else occupies (a directory where the file
 * goes, a strategy folder linked to nowhere) is the tree's state, for an
 * operator to mend: 409, not a fault of the gateway. */
static void name_write_failure(const char *name, const char *hex, int cause, struct err *err)
{
    log_warn(REGISTRY__COMPONENT, "revision %s@" HASH_PREFIX "%s: %s", name, hex, err->message);
    bool occupied = cause == EISDIR || cause == ENOTDIR || cause == ENOENT || cause == ELOOP ||
                    cause == EEXIST || cause == ENOTEMPTY;
    if (err->kind == ERR_NO_SPACE && cause != EDQUOT)
        cause = ENOSPC; /* the failing call's own errno, should a later call have moved it */
    /* a full disk (ENOSPC, EDQUOT) is ERR_NO_SPACE whatever the kind given */
    err_set_errno(err, occupied ? ERR_CONFLICT : ERR_INTERNAL, cause,
                  "the file of revision %s@" HASH_PREFIX "%s cannot be written%s (the gateway's "
                  "log names the path)",
                  name, hex, occupied ? ": its place in the strategies folder is blocked" : "");
}

/* mkdir -p <root>/<name>/<hex>, mark it pending (outside a batch, whose
 * removals and additions the registry's one write settles), write the file
 * atomically, and fsync the parents so that the new directory entries
 * survive a power cut too. The marker goes when the staging ends, after
 * the commit. */
static int stage_file(const struct catalog *cat, const char *name, const char *hex,
                      const char *source, size_t len, struct catalog_prewrite *prewritten,
                      bool mark, struct staged_file *f, struct err *err)
{
    memset(f, 0, sizeof *f);
    f->name_dir = fsutil_join(cat->root, name);
    f->hex_dir = f->name_dir ? fsutil_join(f->name_dir, hex) : NULL;
    f->path = catalog__file_path(cat, name, hex);
    if (!f->name_dir || !f->hex_dir || !f->path)
        return oom(err);
    f->new_name_dir = !fsutil_is_dir(f->name_dir);
    f->new_hex_dir = !fsutil_is_dir(f->hex_dir);
    if (fsutil_mkdirs(f->hex_dir, 0755, err) != 0 ||
        (mark && mark_pending(f->path, &f->marker, err) != 0))
        goto undo;
    /* Bytes written ahead are durable already; their new name is not. The
     * hash folder's sync makes the marker's entry durable with it. */
    bool moved = catalog__prewrite_take(prewritten, source, len, f->path);
    if (!moved && fsutil_write_atomic(f->path, source, len, 0644, err) != 0)
        goto undo;
    f->written = true;
    /* The root changes only when the strategy's folder is new. */
    if ((moved && fsutil_fsync_dir(f->hex_dir, err) != 0) ||
        fsutil_fsync_dir(f->name_dir, err) != 0 ||
        (f->new_name_dir && fsutil_fsync_dir(cat->root, err) != 0))
        goto undo;
    return 0;
undo:;
    int cause = errno;
    staged_undo(f);
    name_write_failure(name, hex, cause, err);
    return -1;
}

/* A revision file written on a thread of its own while registry.json is
 * written: both are mostly waits for fsync, and only the switch to the new
 * registry.json has to wait for the file (fsutil_before_switch). */
struct staging {
    const struct catalog *cat;
    const char *name;
    const char *hex;
    const char *source;
    size_t len;
    struct catalog_prewrite *prewritten;
    bool mark;
    struct staged_file file;
    pthread_t thread;
    bool running;
    int rc;
    struct err err;
};

static void *staging_main(void *arg)
{
    struct staging *s = arg;
    s->rc = stage_file(s->cat, s->name, s->hex, s->source, s->len, s->prewritten, s->mark, &s->file,
                       &s->err);
    return NULL;
}

/* Inside a batch the snapshot is published before anything is written, so
 * the file is written first, in the caller; so it is when no thread can be
 * had. */
static int staging_start(struct staging *s, bool batch, struct err *err)
{
    s->mark = !batch;
    if (!batch && pthread_create(&s->thread, NULL, staging_main, s) == 0) {
        s->running = true;
        return 0;
    }
    staging_main(s);
    if (s->rc != 0)
        err_move(err, &s->err);
    return s->rc;
}

/* Joins the writer; the failure's message goes to err (when given) once. */
static int staging_wait(void *ctx, struct err *err)
{
    struct staging *s = ctx;
    if (s->running) {
        pthread_join(s->thread, NULL);
        s->running = false;
    }
    if (s->rc != 0 && err && s->err.kind != ERR_NONE)
        err_move(err, &s->err);
    return s->rc;
}

static void staging_end(struct staging *s)
{
    staged_free(&s->file);
    err_clear(&s->err);
}

/* What the catalogue writes in a revision's folder besides <name>.js: the
 * temporaries of writes a crash interrupted (fsutil_write_atomic names
 * them <name>.js.tmp.<pid>.<n>) and the markers of changes. */
static bool written_by_catalogue(const char *entry, const char *file_name)
{
    return fsutil_is_writer_name(entry, file_name, "tmp") ||
           fsutil_is_writer_name(entry, file_name, CATALOG_PENDING_KIND);
}

/* The module first, durably, and only then the markers and temporaries: a
 * marker must outlive the file it speaks for. Folders are followed where
 * they are symbolic links, as the catalogue's reads and its markers follow
 * them: an operator's link to a strategy kept elsewhere is that strategy's
 * folder for a delete too. A link in the module's place is removed, not
 * what it points to. */
static void empty_revision_folder(int name_fd, const char *hex, const char *file_name)
{
    int fd = openat(name_fd, hex, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir) {
        if (fd >= 0)
            close(fd);
        return;
    }
    if (unlinkat(fd, file_name, 0) == 0)
        (void)fsync(fd);
    else if (errno != ENOENT)
        log_warn(REGISTRY__COMPONENT, "revision file left behind: %s/%s: %s", hex, file_name,
                 strerror(errno));
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (written_by_catalogue(entry->d_name, file_name) && unlinkat(fd, entry->d_name, 0) != 0)
            log_warn(REGISTRY__COMPONENT, "cannot remove %s/%s: %s", hex, entry->d_name,
                     strerror(errno));
    }
    closedir(dir);
    (void)unlinkat(name_fd, hex, AT_REMOVEDIR); /* fails, as it should, when not empty */
}

static void remove_revision_file(const struct catalog *cat, const char *name, const char *hex)
{
    char *name_dir = fsutil_join(cat->root, name);
    char *file_name = fsutil_format("%s.js", name);
    int fd = name_dir && file_name ? open(name_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    if (fd >= 0) {
        empty_revision_folder(fd, hex, file_name);
        close(fd);
    }
    free(file_name);
    free(name_dir);
}

/* Marks the folders of the revisions a delete removes (every revision of
 * the strategy when hex is NULL) before the registry stops naming them;
 * outside a batch only. A folder that is gone needs no marker. */
struct doomed {
    char **markers;
    size_t n;
};

static void doomed_clear(struct doomed *d)
{
    for (size_t i = 0; i < d->n; i++)
        unmark(&d->markers[i]);
    free(d->markers);
    memset(d, 0, sizeof *d);
}

/* After the commit: a delete that went through leaves its markers to the
 * removal (they go after the files); one that did not happen takes them
 * back; one whose switch happened but not durably leaves them for the next
 * open, with the files. */
static void doomed_settle(struct doomed *d, bool still_named)
{
    for (size_t i = 0; i < d->n; i++) {
        if (still_named)
            unmark(&d->markers[i]);
        else
            keep_marker(&d->markers[i]);
    }
    doomed_clear(d);
}

static int doom_one(struct catalog *cat, const char *name, const char *hex, struct doomed *d,
                    struct err *err)
{
    char *path = catalog__file_path(cat, name, hex);
    char *dir = path ? fsutil_dir_of(path) : NULL;
    char **grown = dir ? realloc(d->markers, (d->n + 1) * sizeof *grown) : NULL;
    int rc = grown ? 0 : oom(err);
    if (grown)
        d->markers = grown;
    if (rc == 0 && fsutil_is_dir(dir)) {
        rc = mark_pending(path, &d->markers[d->n], err);
        if (rc == 0 && fsutil_fsync_dir(dir, err) != 0)
            rc = -1;
        if (d->markers[d->n] || rc == 0)
            d->n++; /* the marker, even when its sync failed, goes in doomed_clear */
    }
    free(dir);
    free(path);
    return rc;
}

static int doom(struct catalog *cat, const char *name, const char *hex, struct doomed *d,
                struct err *err)
{
    memset(d, 0, sizeof *d);
    if (in_batch(cat))
        return 0;
    const struct registry_strategy *st = registry_find_strategy(cat->current, name);
    size_t n = hex ? 1 : st ? st->nrevisions : 0;
    for (size_t i = 0; i < n; i++) {
        if (doom_one(cat, name, hex ? hex : st->revisions[i].hex, d, err) != 0) {
            doomed_clear(d);
            return -1;
        }
    }
    return 0;
}

/* Only what the catalogue wrote goes with a deleted strategy: each <hex>/
 * folder's module and temporaries. Anything else in the strategy's folder
 * (a version bootstrap has not migrated yet, an invalid module it left in
 * place, an operator's notes) stays, and so does the folder around it. The
 * name was validated, so the path cannot leave the root. */
static void remove_strategy_folder(const struct catalog *cat, const char *name)
{
    char *dir_path = fsutil_join(cat->root, name);
    char *file_name = fsutil_format("%s.js", name);
    int fd = dir_path ? open(dir_path, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
    DIR *dir = fd >= 0 && file_name ? fdopendir(fd) : NULL;
    if (dir) {
        struct dirent *entry;
        while ((entry = readdir(dir)) != NULL) {
            if (strlen(entry->d_name) == HASH_HEX_LEN && hash_is_hex(entry->d_name, HASH_HEX_LEN))
                empty_revision_folder(dirfd(dir), entry->d_name, file_name);
        }
        struct err e = ERR_INIT;
        if (fsutil_fsync_dir(dir_path, &e) != 0)
            log_warn(REGISTRY__COMPONENT, "%s", e.message);
        err_clear(&e);
        closedir(dir);
        fsutil_rmdir_if_empty(dir_path);
        struct stat st;
        if (lstat(dir_path, &st) == 0 && S_ISLNK(st.st_mode))
            log_info(REGISTRY__COMPONENT,
                     "strategy '%s' deleted; its folder is a symbolic link, which stays with the "
                     "folder it points to",
                     name);
        else if (fsutil_exists(dir_path))
            log_info(REGISTRY__COMPONENT,
                     "strategy '%s' deleted; its folder stays: it holds files the catalogue did "
                     "not write",
                     name);
    } else if (fd >= 0) {
        close(fd);
    }
    struct err e = ERR_INIT;
    if (fsutil_fsync_dir(cat->root, &e) != 0)
        log_warn(REGISTRY__COMPONENT, "%s", e.message);
    err_clear(&e);
    free(file_name);
    free(dir_path);
}

/* A file (hex) or a strategy folder (hex NULL) the registry no longer
 * names: removed now, or inside a batch once the registry is on disk. A
 * removal that cannot be recorded leaves the file, which names nothing. */
static void remove_unnamed(struct catalog *cat, const char *name, const char *hex)
{
    if (!in_batch(cat)) {
        if (hex)
            remove_revision_file(cat, name, hex);
        else
            remove_strategy_folder(cat, name);
        return;
    }
    if (cat->nremovals == cat->removals_cap) {
        size_t cap = cat->removals_cap ? cat->removals_cap * 2 : 16;
        struct catalog__removal *grown = realloc(cat->removals, cap * sizeof *grown);
        if (!grown) {
            log_warn(REGISTRY__COMPONENT, "out of memory: %s is left on disk", name);
            return;
        }
        cat->removals = grown;
        cat->removals_cap = cap;
    }
    struct catalog__removal *r = &cat->removals[cat->nremovals++];
    snprintf(r->name, sizeof r->name, "%s", name);
    snprintf(r->hex, sizeof r->hex, "%s", hex ? hex : "");
}

/* After the batch's write: what the batch stopped naming, unless a later
 * change of the same batch named it again. */
static void run_removals(struct catalog *cat)
{
    for (size_t i = 0; i < cat->nremovals; i++) {
        const struct catalog__removal *r = &cat->removals[i];
        const struct registry_strategy *st = registry_find_strategy(cat->current, r->name);
        if (!r->hex[0] && !st)
            remove_strategy_folder(cat, r->name);
        else if (r->hex[0] && !registry_find_revision(st, r->hex))
            remove_revision_file(cat, r->name, r->hex);
    }
    free(cat->removals);
    cat->removals = NULL;
    cat->nremovals = cat->removals_cap = 0;
}

/* ------------------------------------------------------------- lookups */

static const struct registry_strategy *existing_strategy(const struct catalog *cat,
                                                         const char *name, struct err *err)
{
    const struct registry_strategy *st = registry_find_strategy(cat->current, name);
    if (!st)
        err_set(err, ERR_NOT_FOUND, "unknown strategy '%s'", name);
    return st;
}

static long existing_revision(const struct registry_strategy *st, const char *hex, struct err *err)
{
    long at = registry__revision_index(st, hex);
    if (at < 0)
        err_set(err, ERR_NOT_FOUND, "strategy '%s' has no revision " HASH_PREFIX "%s", st->name,
                hex);
    return at;
}

static int ask_guard(catalog_guard_fn guard, void *ctx, const char *name, const char *hex,
                     struct err *err)
{
    if (!guard)
        return 0;
    struct err veto = ERR_INIT;
    if (guard(ctx, name, hex, &veto) == 0) {
        err_clear(&veto);
        return 0;
    }
    if (veto.kind == ERR_NONE)
        err_set(&veto, ERR_CONFLICT, "deleting %s%s%s was refused", name, hex ? "@sha256:" : "",
                hex ? hex : "");
    err_move(err, &veto);
    return -1;
}

/* --------------------------------------------------------------- upload */

static int check_upload(const struct catalog_upload *up, const char *tag, struct err *err)
{
    if (check_name(up->name, err) != 0)
        return -1;
    if (names_reserved_strategy(up->name)) {
        err_set(err, ERR_INVALID, "the strategy name '%s' is reserved", up->name);
        return -1;
    }
    if (!up->source && up->len > 0) {
        err_set(err, ERR_INVALID, "the upload has no source");
        return -1;
    }
    if (up->len > REGISTRY__SOURCE_MAX) {
        err_set(err, ERR_TOO_LARGE, "the source is %zu bytes, over the limit of %zu", up->len,
                REGISTRY__SOURCE_MAX);
        return -1;
    }
    if (check_tag(tag, err) != 0 || check_tags(up->aliases, up->naliases, err) != 0 ||
        check_tags(up->reassign, up->nreassign, err) != 0)
        return -1;
    return 0;
}

/* A version tag never silently moves off the revision it names. */
static int check_primary(const struct registry_strategy *base, const struct catalog_upload *up,
                         const char *tag, const char *hex, struct err *err)
{
    const char *current = base ? registry_tag_target(base, tag) : NULL;
    if (!current || strcmp(current, hex) == 0 || strcmp(tag, REGISTRY_LATEST) == 0 ||
        listed(tag, up->reassign, up->nreassign))
        return 0;
    err_set(err, ERR_CONFLICT,
            "tag '%s' of strategy '%s' already points at " HASH_PREFIX "%s; list it in "
            "reassignTags to move it",
            tag, up->name, current);
    err_add_detail(err, "tag", json_string(tag));
    err_add_detail(err, "hash", json_sprintf(HASH_PREFIX "%s", current));
    return -1;
}

static int fill_revision(struct registry_revision *rev, const struct catalog_upload *up,
                         const char *tag)
{
    char rel[REGISTRY__REL_PATH_MAX];
    registry__rel_path(up->name, rev->hex, rel);
    char *tag_copy = rev->tag ? NULL : strdup(tag);
    char *path = strdup(rel);
    if ((!rev->tag && !tag_copy) || !path) {
        free(tag_copy);
        free(path);
        return -1;
    }
    if (tag_copy)
        rev->tag = tag_copy;
    free(rev->path);
    rev->path = path;
    free(rev->invalid_reason);
    rev->invalid_reason = NULL;
    rev->invalid = false;
    rev->size = up->len;
    if (up->metadata) {
        json_decref(rev->metadata);
        rev->metadata = json_incref(up->metadata);
    }
    return 0;
}

/* Adds the revision to st, or repairs it when the registry knew these bytes
 * but their file was missing or damaged. Sets *write_file when the file
 * must be (re)written. */
static int place_revision(struct registry_strategy *st, const struct catalog_upload *up,
                          const char *tag, const char *hex, bool *write_file)
{
    long at = registry__revision_index(st, hex);
    if (at >= 0) {
        *write_file = st->revisions[at].invalid;
        return *write_file ? fill_revision(&st->revisions[at], up, tag) : 0;
    }
    struct registry_revision rev = {0};
    memcpy(rev.hex, hex, sizeof rev.hex);
    rev.order = st->nrevisions ? st->revisions[st->nrevisions - 1].order + 1 : 1;
    *write_file = true;
    if (fill_revision(&rev, up, tag) != 0 || registry__strategy_push_revision(st, &rev) != 0) {
        registry__revision_clear(&rev);
        return -1;
    }
    return 0;
}

static int move_tags(struct registry_strategy *st, const struct catalog_upload *up, const char *tag,
                     const char *hex, bool first)
{
    int rc = registry__strategy_set_tag(st, tag, hex);
    for (size_t i = 0; rc == 0 && i < up->naliases; i++)
        rc = registry__strategy_set_tag(st, up->aliases[i], hex);
    if (rc == 0 && (first || up->promote_latest))
        rc = registry__strategy_set_tag(st, REGISTRY_LATEST, hex);
    return rc;
}

/* Whether the published snapshot names the revision: a failed commit may
 * still have switched registry.json (see commit). */
static bool named_now(const struct catalog *cat, const char *name, const char *hex)
{
    const struct registry_strategy *st = registry_find_strategy(cat->current, name);
    return st && registry__revision_index(st, hex) >= 0;
}

static int add_locked(struct catalog *cat, const struct catalog_upload *up, const char *tag,
                      const char *hex, bool *created, struct err *err)
{
    const struct registry_strategy *base = registry_find_strategy(cat->current, up->name);
    if (!base && up->existing_only) {
        err_set(err, ERR_NOT_FOUND, "strategy '%s' not found", up->name);
        return -1;
    }
    if (check_primary(base, up, tag, hex, err) != 0)
        return -1;
    *created = !base || registry__revision_index(base, hex) < 0;
    struct registry_strategy *st =
        base ? registry__strategy_copy(base) : registry__strategy_new(up->name);
    bool write_file = false;
    if (!st || place_revision(st, up, tag, hex, &write_file) != 0 ||
        move_tags(st, up, tag, hex, base == NULL) != 0) {
        registry__strategy_release(st);
        return oom(err);
    }
    if (base && registry__strategy_same(st, base)) {
        registry__strategy_release(st); /* identical bytes, tags already there */
        return 0;
    }
    struct staging stage = {.cat = cat,
                            .name = up->name,
                            .hex = hex,
                            .source = up->source,
                            .len = up->len,
                            .prewritten = up->prewritten,
                            .err = ERR_INIT};
    if (write_file && staging_start(&stage, in_batch(cat), err) != 0) {
        registry__strategy_release(st);
        staging_end(&stage);
        return -1;
    }
    struct fsutil_before_switch before = {staging_wait, &stage};
    int rc = commit_strategy_after(cat, up->name, st, write_file ? &before : NULL, err);
    /* joins the writer when the commit failed before it waited */
    if (write_file && staging_wait(&stage, rc == 0 ? err : NULL) != 0)
        rc = -1;
    if (rc != 0 && *created && !named_now(cat, up->name, hex))
        staged_undo(&stage.file);
    else if (rc != 0)
        keep_marker(&stage.file.marker);
    staging_end(&stage);
    return rc;
}

int catalog_add_revision(struct catalog *cat, const struct catalog_upload *up,
                         struct catalog_upload_result *result, struct err *err)
{
    memset(result, 0, sizeof *result);
    if (up->change)
        *up->change = (struct catalog_change){NULL, NULL};
    const char *tag = up->tag ? up->tag : REGISTRY_LATEST;
    if (check_upload(up, tag, err) != 0)
        return -1;
    char hex[HASH_HEX_LEN + 1];
    hash_sha256_hex(up->source ? up->source : "", up->len, hex);
    struct fsutil_lock lock = FSUTIL_LOCK_INIT;
    if (change_begin(cat, &lock, err) != 0)
        return -1;
    note_before(cat, up->change);
    bool created = false;
    uint64_t was = cat->current->generation;
    int rc = add_locked(cat, up, tag, hex, &created, err);
    bool published = cat->current->generation != was;
    note_after(cat, up->change, rc);
    change_end(cat, &lock);
    if (rc != 0 && !published)
        return -1;
    memcpy(result->hex, hex, sizeof result->hex);
    result->created = created;
    snprintf(result->tag, sizeof result->tag, "%s", tag);
    return rc;
}

/* ----------------------------------------------------------------- tags */

static int set_tag_locked(struct catalog *cat, const char *name, const char *tag, const char *hex,
                          char *previous, struct err *err)
{
    const struct registry_strategy *base = existing_strategy(cat, name, err);
    if (!base)
        return -1;
    long at = existing_revision(base, hex, err);
    if (at < 0)
        return -1;
    const struct registry_revision *rev = &base->revisions[at];
    if (rev->invalid) {
        err_set(err, ERR_CONFLICT,
                "revision %s@" HASH_PREFIX "%s is invalid (%s); no tag can "
                "point at it",
                name, hex, rev->invalid_reason ? rev->invalid_reason : "unknown");
        return -1;
    }
    const char *current = registry_tag_target(base, tag);
    if (current)
        memcpy(previous, current, HASH_HEX_LEN + 1);
    if (current && strcmp(current, hex) == 0)
        return 0;
    struct registry_strategy *st = registry__strategy_copy(base);
    if (!st || registry__strategy_set_tag(st, tag, hex) != 0) {
        registry__strategy_release(st);
        return oom(err);
    }
    return commit_strategy(cat, name, st, err);
}

int catalog_set_tag(struct catalog *cat, const char *name, const char *tag, const char *hex_text,
                    char previous_hex[HASH_HEX_LEN + 1], struct err *err)
{
    char previous[HASH_HEX_LEN + 1] = "";
    char hex[HASH_HEX_LEN + 1];
    if (check_name(name, err) != 0 || check_tag(tag, err) != 0 ||
        check_hex(hex_text, hex, err) != 0)
        return -1;
    struct fsutil_lock lock = FSUTIL_LOCK_INIT;
    if (change_begin(cat, &lock, err) != 0)
        return -1;
    int rc = set_tag_locked(cat, name, tag, hex, previous, err);
    change_end(cat, &lock);
    if (rc == 0 && previous_hex)
        memcpy(previous_hex, previous, sizeof previous);
    return rc;
}

static size_t tags_on(const struct registry_strategy *st, const char *hex)
{
    size_t n = 0;
    for (size_t i = 0; i < st->ntags; i++)
        n += strcmp(st->tags[i].hex, hex) == 0;
    return n;
}

static int delete_tag_locked(struct catalog *cat, const char *name, const char *tag,
                             bool allow_orphan, char *previous, struct err *err)
{
    const struct registry_strategy *base = existing_strategy(cat, name, err);
    if (!base)
        return -1;
    const char *current = registry_tag_target(base, tag);
    if (!current) {
        err_set(err, ERR_NOT_FOUND, "strategy '%s' has no tag '%s'", name, tag);
        return -1;
    }
    memcpy(previous, current, HASH_HEX_LEN + 1);
    if (!allow_orphan && tags_on(base, current) == 1) {
        err_set(err, ERR_CONFLICT,
                "tag '%s' is the last tag on %s@" HASH_PREFIX "%s; deleting it "
                "would leave the revision without a tag (allow orphans to do it anyway)",
                tag, name, current);
        err_add_detail(err, "tag", json_string(tag));
        err_add_detail(err, "hash", json_sprintf(HASH_PREFIX "%s", current));
        return -1;
    }
    struct registry_strategy *st = registry__strategy_copy(base);
    if (!st)
        return oom(err);
    registry__strategy_remove_tag(st, tag);
    return commit_strategy(cat, name, st, err);
}

int catalog_delete_tag(struct catalog *cat, const char *name, const char *tag, bool allow_orphan,
                       char previous_hex[HASH_HEX_LEN + 1], struct err *err)
{
    char previous[HASH_HEX_LEN + 1] = "";
    if (check_name(name, err) != 0 || check_tag(tag, err) != 0)
        return -1;
    if (strcmp(tag, REGISTRY_LATEST) == 0) {
        err_set(err, ERR_CONFLICT,
                "the tag 'latest' cannot be deleted; reassign it to another revision instead");
        err_add_detail(err, "tag", json_string(tag));
        return -1;
    }
    struct fsutil_lock lock = FSUTIL_LOCK_INIT;
    if (change_begin(cat, &lock, err) != 0)
        return -1;
    int rc = delete_tag_locked(cat, name, tag, allow_orphan, previous, err);
    change_end(cat, &lock);
    if (rc == 0 && previous_hex)
        memcpy(previous_hex, previous, sizeof previous);
    return rc;
}

/* ------------------------------------------------------------- deletes */

/* `latest` moves to the newest remaining revision, preferring one that
 * verified so that the strategy stays usable. st keeps at least one
 * revision: deleting the last one deletes the strategy. */
static const char *newest_remaining(const struct registry_strategy *st)
{
    const struct registry_revision *best = &st->revisions[0];
    for (size_t i = 1; i < st->nrevisions; i++) {
        const struct registry_revision *rev = &st->revisions[i];
        if ((best->invalid && !rev->invalid) ||
            (best->invalid == rev->invalid && rev->order > best->order))
            best = rev;
    }
    return best->hex;
}

static int delete_strategy_locked(struct catalog *cat, const char *name, struct err *err)
{
    struct doomed marks;
    if (doom(cat, name, NULL, &marks, err) != 0)
        return -1;
    int rc = commit_strategy(cat, name, NULL, err);
    doomed_settle(&marks, registry_find_strategy(cat->current, name) != NULL);
    if (rc != 0)
        return -1;
    remove_unnamed(cat, name, NULL);
    return 0;
}

static int delete_revision_locked(struct catalog *cat, const char *name, const char *hex,
                                  catalog_guard_fn guard, void *guard_ctx, struct err *err)
{
    const struct registry_strategy *base = existing_strategy(cat, name, err);
    if (!base)
        return -1;
    long at = existing_revision(base, hex, err);
    if (at < 0 || ask_guard(guard, guard_ctx, name, hex, err) != 0)
        return -1;
    if (base->nrevisions == 1)
        return delete_strategy_locked(cat, name, err);
    const char *latest = registry_tag_target(base, REGISTRY_LATEST);
    bool moves_latest = !latest || strcmp(latest, hex) == 0;
    struct registry_strategy *st = registry__strategy_copy(base);
    if (!st)
        return oom(err);
    registry__strategy_remove_revision(st, (size_t)at);
    if (moves_latest &&
        registry__strategy_set_tag(st, REGISTRY_LATEST, newest_remaining(st)) != 0) {
        registry__strategy_release(st);
        return oom(err);
    }
    struct doomed marks;
    if (doom(cat, name, hex, &marks, err) != 0) {
        registry__strategy_release(st);
        return -1;
    }
    int rc = commit_strategy(cat, name, st, err);
    doomed_settle(&marks, named_now(cat, name, hex));
    if (rc != 0)
        return -1;
    remove_unnamed(cat, name, hex);
    return 0;
}

int catalog_delete_revision_noting(struct catalog *cat, const char *name, const char *hex_text,
                                   catalog_guard_fn guard, void *guard_ctx,
                                   struct catalog_change *change, struct err *err)
{
    if (change)
        *change = (struct catalog_change){NULL, NULL};
    char hex[HASH_HEX_LEN + 1];
    if (check_name(name, err) != 0 || check_hex(hex_text, hex, err) != 0)
        return -1;
    struct fsutil_lock lock = FSUTIL_LOCK_INIT;
    if (change_begin(cat, &lock, err) != 0)
        return -1;
    note_before(cat, change);
    int rc = delete_revision_locked(cat, name, hex, guard, guard_ctx, err);
    note_after(cat, change, rc);
    change_end(cat, &lock);
    return rc;
}

int catalog_delete_revision(struct catalog *cat, const char *name, const char *hex_text,
                            catalog_guard_fn guard, void *guard_ctx, struct err *err)
{
    return catalog_delete_revision_noting(cat, name, hex_text, guard, guard_ctx, NULL, err);
}

int catalog_delete_strategy_noting(struct catalog *cat, const char *name, catalog_guard_fn guard,
                                   void *guard_ctx, struct catalog_change *change, struct err *err)
{
    if (change)
        *change = (struct catalog_change){NULL, NULL};
    if (check_name(name, err) != 0)
        return -1;
    struct fsutil_lock lock = FSUTIL_LOCK_INIT;
    if (change_begin(cat, &lock, err) != 0)
        return -1;
    note_before(cat, change);
    int rc = -1;
    if (existing_strategy(cat, name, err) && ask_guard(guard, guard_ctx, name, NULL, err) == 0)
        rc = delete_strategy_locked(cat, name, err);
    note_after(cat, change, rc);
    change_end(cat, &lock);
    return rc;
}

int catalog_delete_strategy(struct catalog *cat, const char *name, catalog_guard_fn guard,
                            void *guard_ctx, struct err *err)
{
    return catalog_delete_strategy_noting(cat, name, guard, guard_ctx, NULL, err);
}

/* --------------------------------------------------------------- batches */

int catalog_batch_begin(struct catalog *cat, struct err *err)
{
    if (in_batch(cat)) {
        err_set(err, ERR_INTERNAL, "a batch is already open on this catalogue");
        return -1;
    }
    struct fsutil_lock lock = FSUTIL_LOCK_INIT;
    if (change_begin(cat, &lock, err) != 0)
        return -1;
    cat->batch_lock = lock;
    cat->batch_base = catalog_snapshot(cat);
    cat->batch_dirty = false;
    cat->batch_owner = pthread_self();
    atomic_store_explicit(&cat->batch, true, memory_order_release);
    return 0;
}

/* The one write of the batch; on failure the snapshot of begin is what is
 * published again, since it is what registry.json still says. */
static int write_batch(struct catalog *cat, struct err *err)
{
    char written[HASH_HEX_LEN + 1];
    bool switched = false;
    int rc = write_registry(cat, cat->current, NULL, written, &switched, err);
    if (rc != 0 && !switched) {
        registry_retain(cat->batch_base);
        publish_unwritten(cat, cat->batch_base);
    } else {
        registry_retain(cat->current);
        publish_written(cat, cat->current, written, rc);
        if (rc != 0)
            err_add_detail(err, CATALOG_PUBLISHED, json_true());
    }
    /* After a failed sync the old registry may come back with a power loss,
     * and it names the files the batch stopped naming: they stay. */
    if (rc == 0)
        run_removals(cat);
    free(cat->removals);
    cat->removals = NULL;
    cat->nremovals = cat->removals_cap = 0;
    return rc;
}

int catalog_batch_end(struct catalog *cat, struct err *err)
{
    if (!in_batch(cat)) {
        err_set(err, ERR_INTERNAL, "no batch is open on this thread");
        return -1;
    }
    int rc = cat->batch_dirty ? write_batch(cat, err) : 0;
    if (!cat->batch_dirty)
        run_removals(cat);
    registry_release(cat->batch_base);
    cat->batch_base = NULL;
    atomic_store_explicit(&cat->batch, false, memory_order_release);
    change_end(cat, &cat->batch_lock);
    cat->batch_lock.fd = -1;
    return rc;
}
