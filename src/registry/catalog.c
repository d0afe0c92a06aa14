/*
 * The catalogue: opening, reloading and serving snapshots, and noticing
 * when another process rewrote registry.json. The changes themselves live in
 * catalog_change.c.
 *
 * Locking: `snap_mu` is held only to swap or retain the current snapshot,
 * so readers never wait for disk I/O. `change_mu` serialises everything
 * that builds a new snapshot (reloads and changes) inside this process; the
 * flock on .registry.lock does the same between processes.
 */
#include "registry/registry_internal.h"

#include "core/clock.h"
#include "core/jsonutil.h"
#include "core/log.h"
#include "core/names.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *catalog__file_path(const struct catalog *cat, const char *name, const char *hex)
{
    return fsutil_format("%s/%s/%s/%s.js", cat->root, name, hex, name);
}

/* ---------------------------------------------------- registry.json */

struct disk_state {
    char *data; /* NULL when the file does not exist */
    size_t len;
    char hex[HASH_HEX_LEN + 1]; /* "" when the file does not exist */
    bool id_known;
    struct fsutil_identity id; /* taken before reading: never newer than data */
};

void catalog__note_disk(struct catalog *cat, const struct fsutil_identity *id)
{
    cat->disk_id_known = id != NULL;
    if (id)
        cat->disk_id = *id;
}

static int read_disk(const struct catalog *cat, struct disk_state *disk, struct err *err)
{
    struct err e = ERR_INIT;
    memset(disk, 0, sizeof *disk);
    disk->id_known = fsutil_identity_of(cat->registry_path, &disk->id) == 0;
    if (fsutil_read_file(cat->registry_path, REGISTRY__FILE_MAX, &disk->data, &disk->len, &e) ==
        0) {
        hash_sha256_hex(disk->data, disk->len, disk->hex);
        return 0;
    }
    if (e.kind == ERR_NOT_FOUND) {
        err_clear(&e);
        return 0;
    }
    err_move(err, &e);
    return -1;
}

/* After our own write disk_hex is "" (not taken, to keep a change cheap).
 * Outside a batch the file then holds exactly the text of `current` (a
 * reverification changes no part of that text), so its digest can be
 * computed from the snapshot when a comparison needs it. */
static void learn_written_hex(struct catalog *cat)
{
    size_t len = 0;
    char *text = registry__text_cached(cat->current, &cat->text, &len);
    if (text)
        hash_sha256_hex(text, len, cat->disk_hex);
}

/* Whether the bytes on disk are those `current` reflects. */
static bool same_disk(struct catalog *cat, const struct disk_state *disk)
{
    if (cat->disk_present && !cat->disk_hex[0] && cat->current)
        learn_written_hex(cat);
    return (disk->data != NULL) == cat->disk_present && strcmp(disk->hex, cat->disk_hex) == 0;
}

static json_t *parse_disk(const struct disk_state *disk, struct err *err)
{
    if (!disk->data) {
        json_t *empty = json_object();
        if (!empty)
            err_set(err, ERR_INTERNAL, "out of memory loading registry.json");
        return empty;
    }
    struct err e = ERR_INIT;
    json_t *doc = jsonutil_parse_object(disk->data, disk->len, &e);
    if (!doc) {
        char why[ERR_MESSAGE_MAX];
        memcpy(why, e.message, sizeof why);
        err_set(&e, ERR_INVALID, "registry.json: %s", why);
        err_move(err, &e);
    }
    return doc;
}

/* Replaces each strategy of fresh that equals the one in prev by prev's, so
 * an unchanged strategy is one shared object across snapshots. Returns true
 * when nothing at all changed. */
static bool share_unchanged(struct registry *fresh, const struct registry *prev)
{
    size_t shared = 0;
    for (size_t i = 0; prev && i < fresh->nstrategies; i++) {
        struct registry_strategy *old =
            (struct registry_strategy *)registry_find_strategy(prev, fresh->strategies[i]->name);
        if (!old || !registry__strategy_same(fresh->strategies[i], old))
            continue;
        registry__strategy_retain(old);
        registry__strategy_release(fresh->strategies[i]);
        fresh->strategies[i] = old;
        shared++;
    }
    return prev && shared == fresh->nstrategies && shared == prev->nstrategies;
}

/* A verified snapshot from the bytes on disk; *unchanged says it equals the
 * current one, which then stays published. */
static int build_from_disk(const struct catalog *cat, const struct disk_state *disk,
                           struct registry **out, bool *unchanged, struct err *err)
{
    int64_t started = clock_mono_ns();
    json_t *doc = parse_disk(disk, err);
    if (!doc)
        return -1;
    struct registry *fresh = registry__from_json(doc, err);
    json_decref(doc);
    if (!fresh)
        return -1;
    if (disk->data)
        registry__learn_rooms(fresh, disk->data, disk->len);
    if (catalog__verify(cat, fresh, cat->current, err) != 0) {
        registry_release(fresh);
        return -1;
    }
    *unchanged = share_unchanged(fresh, cat->current);
    *out = fresh;
    log_debug(REGISTRY__COMPONENT, "registry.json loaded: %zu strategies in %.1f ms",
              fresh->nstrategies, (double)(clock_mono_ns() - started) / 1e6);
    return 0;
}

void catalog__forget_spare(struct catalog *cat)
{
    cat->disk_matches = false;
    cat->spare_known = false;
}

void catalog__publish(struct catalog *cat, struct registry *reg, bool present, const char *disk_hex)
{
    cat->disk_present = present;
    snprintf(cat->disk_hex, sizeof cat->disk_hex, "%s", present ? disk_hex : "");
    if (reg == cat->current) {
        registry_release(reg);
        return;
    }
    reg->generation = ++cat->generation;
    pthread_mutex_lock(&cat->snap_mu);
    struct registry *old = cat->current;
    cat->current = reg;
    pthread_mutex_unlock(&cat->snap_mu);
    registry_release(old);
}

/* registry.json is what the current snapshot was built from: parsing it
 * again would give the same model, so only the files are checked again. */
static int reverify_current(struct catalog *cat, struct err *err)
{
    struct registry *next = NULL;
    if (catalog__reverify(cat, cat->current, &next, err) != 0)
        return -1;
    if (next) {
        char disk_hex[HASH_HEX_LEN + 1];
        memcpy(disk_hex, cat->disk_hex, sizeof disk_hex);
        catalog__publish(cat, next, cat->disk_present, disk_hex);
    }
    return 0;
}

/* Publishes what registry.json and the files say, unless that is what is
 * already published. */
static int load(struct catalog *cat, const struct disk_state *disk, struct err *err)
{
    if (cat->current && same_disk(cat, disk)) {
        if (reverify_current(cat, err) != 0)
            return -1;
        catalog__note_disk(cat, disk->id_known ? &disk->id : NULL);
        return 0;
    }
    catalog__forget_spare(cat); /* registry.json is not what we wrote */
    struct registry *fresh = NULL;
    bool unchanged = false;
    if (build_from_disk(cat, disk, &fresh, &unchanged, err) != 0)
        return -1;
    if (unchanged) {
        registry_release(fresh);
        registry_retain(cat->current);
        fresh = cat->current;
    }
    catalog__publish(cat, fresh, disk->data != NULL, disk->hex);
    catalog__note_disk(cat, disk->id_known ? &disk->id : NULL);
    return 0;
}

/* Every writer replaces registry.json by rename under the lock we hold, and
 * a hand edit in place moves mtime and ctime: an identity equal to the one
 * recorded with disk_hex means the file is the one we last read or wrote. */
static bool disk_untouched(const struct catalog *cat)
{
    struct fsutil_identity now;
    return cat->disk_id_known && fsutil_identity_of(cat->registry_path, &now) == 0 &&
           fsutil_identity_equal(&now, &cat->disk_id);
}

int catalog__sync(struct catalog *cat, struct err *err)
{
    if (disk_untouched(cat))
        return 0;
    struct disk_state disk;
    if (read_disk(cat, &disk, err) != 0)
        return -1;
    int rc = 0;
    if (!same_disk(cat, &disk)) {
        log_info(REGISTRY__COMPONENT, "registry.json was changed by another writer; reloading");
        struct err e = ERR_INIT;
        rc = load(cat, &disk, &e);
        if (rc != 0) {
            /* Not the caller's input that is wrong: the shared file is, and
             * the last good catalogue stays in service (as for a refresh). */
            char why[ERR_MESSAGE_MAX];
            memcpy(why, e.message, sizeof why);
            err_set(&e, e.kind == ERR_INVALID ? ERR_CONFLICT : e.kind,
                    "registry.json was changed on disk and cannot be loaded, so no change is "
                    "made: %.400s",
                    why);
            err_add_detail(&e, "servingPrevious", json_true());
            err_move(err, &e);
        }
    }
    free(disk.data);
    return rc;
}

/* ------------------------------------------------------------- locking */

/* Reads do not need the lock (writes are atomic renames) but take it when
 * they can, so a reload never sees another writer's registry before the
 * files it names. A read-only tree is still served. */
static bool lock_for_reading(const struct catalog *cat, struct fsutil_lock *lock)
{
    struct err e = ERR_INIT;
    if (fsutil_lock_acquire(cat->lock_path, lock, &e) == 0)
        return true;
    log_warn(REGISTRY__COMPONENT, "reading the registry without its lock: %s", e.message);
    err_clear(&e);
    return false;
}

/* A leftover of a dead writer in a folder: the name (one of fsutil's or
 * the prewrite's, matched exactly) and that it is a regular file, so a
 * folder or link an operator named alike is never taken for one. */
static bool is_leftover(int dir_fd, const char *name, const char *base, const char *const *kinds)
{
    bool named = false;
    for (size_t i = 0; kinds[i] && !named; i++)
        named = fsutil_is_writer_name(name, base, kinds[i]);
    struct stat st;
    return named && fstatat(dir_fd, name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

/* Runs once, at the first leftover a walk meets, before anything goes; a
 * non-zero return keeps every file of the folder. */
struct first_leftover {
    int (*run)(void *ctx);
    void *ctx;
};

/* Removes the files of `dir` named "<base>.<kind>.<pid>.<n>" for each of
 * `kinds` (NULL-terminated); `where` names the folder in the log; `first`
 * may be NULL. Returns how many went. */
static size_t remove_leftovers_in(int dir_fd, const char *base, const char *const *kinds,
                                  const char *where, const struct first_leftover *first)
{
    int fd = dup(dir_fd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir) {
        if (fd >= 0)
            close(fd);
        return 0;
    }
    rewinddir(dir); /* a dup shares the offset of an earlier walk */
    size_t removed = 0;
    bool met = false;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (!is_leftover(dirfd(dir), entry->d_name, base, kinds))
            continue;
        if (!met && first && first->run(first->ctx) != 0)
            break;
        met = true;
        if (unlinkat(dirfd(dir), entry->d_name, 0) != 0)
            continue;
        removed++;
        log_info(REGISTRY__COMPONENT, "removed a stale temporary file %s%s", where, entry->d_name);
    }
    closedir(dir);
    return removed;
}

/* Followed where a folder is a symbolic link, as the catalogue's reads and
 * deletes follow it; the walk is two levels deep, so no loop can form. */
static int open_dir_at(int parent, const char *name)
{
    return openat(parent, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
}

/* A revision's folder as the catalogue names it: 64 lower-case hex digits. */
static bool is_hash_folder(const char *name)
{
    size_t len = strspn(name, "0123456789abcdef");
    return len == HASH_HEX_LEN && name[len] == '\0';
}

/* What the sweep consults in a folder a change had marked pending:
 * registry.json as read under the lock, parsed on the first such folder
 * (almost never). */
struct sweep {
    const struct catalog *cat;
    const struct disk_state *disk;
    struct registry *named;
    bool unreadable;
};

/* 1 when registry.json names name@hex, 0 when not, -1 when it cannot be
 * told (the open then fails on the same file; the sweep keeps the folder). */
static int sweep_names(struct sweep *sw, const char *name, const char *hex)
{
    if (!sw->named && !sw->unreadable) {
        struct err e = ERR_INIT;
        json_t *doc = parse_disk(sw->disk, &e);
        sw->named = doc ? registry__from_json(doc, &e) : NULL;
        json_decref(doc);
        err_clear(&e);
        sw->unreadable = sw->named == NULL;
    }
    if (sw->unreadable)
        return -1;
    return registry_find_revision(registry_find_strategy(sw->named, name), hex) != NULL;
}

static bool has_marker(int hash_fd, const char *file)
{
    static const char *const kinds[] = {CATALOG_PENDING_KIND, NULL};
    /* an open of its own: a dup would share the offset of the caller's walk */
    int fd = openat(hash_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir) {
        if (fd >= 0)
            close(fd);
        return false;
    }
    bool found = false;
    struct dirent *entry;
    while (!found && (entry = readdir(dir)) != NULL)
        found = is_leftover(dirfd(dir), entry->d_name, file, kinds);
    closedir(dir);
    return found;
}

struct marked_folder {
    struct sweep *sw;
    int hash_fd;
    const char *name;
    const char *hex;
    const char *file;
};

/* A change a crash interrupted marked this folder (CATALOG_PENDING_KIND):
 * its file stays only if registry.json names the revision. Runs before the
 * markers are swept, so a crash in here leaves them to the next open. */
static int settle_marked(void *ctx)
{
    const struct marked_folder *at = ctx;
    if (!has_marker(at->hash_fd, at->file))
        return 0;
    int named = sweep_names(at->sw, at->name, at->hex);
    if (named != 0)
        return named < 0 ? -1 : 0;
    if (unlinkat(at->hash_fd, at->file, 0) == 0) {
        (void)fsync(at->hash_fd);
        log_info(REGISTRY__COMPONENT,
                 "removed %s/%s/%s: a change a crash interrupted had written or was deleting "
                 "it, and registry.json does not name it",
                 at->name, at->hex, at->file);
    } else if (errno != ENOENT) {
        log_warn(REGISTRY__COMPONENT, "cannot remove %s/%s/%s: %s", at->name, at->hex, at->file,
                 strerror(errno));
        return -1;
    }
    return 0;
}

/* In <name>/<hash>/: <name>.js.tmp.<pid>.<n>, a revision write killed
 * before its rename, and <name>.js.pending.<pid>.<n>, the marker of a
 * change killed before it settled (settle_marked first). A hash folder
 * they leave empty goes too, and so does the strategy's folder when that
 * leaves it empty; any other folder, and a folder holding anything else,
 * stays. */
static void remove_revision_temps(struct sweep *sw, int root_fd, const char *name)
{
    static const char *const kinds[] = {"tmp", CATALOG_PENDING_KIND, NULL};
    int strategy_fd = open_dir_at(root_fd, name);
    DIR *dir = strategy_fd >= 0 ? fdopendir(strategy_fd) : NULL;
    if (!dir) {
        if (strategy_fd >= 0)
            close(strategy_fd);
        return;
    }
    char file[NAMES_STRATEGY_MAX + 4], where[NAMES_STRATEGY_MAX + 72];
    snprintf(file, sizeof file, "%.64s.js", name);
    bool emptied = false;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (!is_hash_folder(entry->d_name))
            continue;
        int hash_fd = open_dir_at(dirfd(dir), entry->d_name);
        if (hash_fd < 0)
            continue;
        snprintf(where, sizeof where, "%.64s/%.64s/", name, entry->d_name);
        struct marked_folder at = {sw, hash_fd, name, entry->d_name, file};
        struct first_leftover first = {settle_marked, &at};
        size_t removed = remove_leftovers_in(hash_fd, file, kinds, where, &first);
        close(hash_fd);
        if (removed > 0 && unlinkat(dirfd(dir), entry->d_name, AT_REMOVEDIR) == 0)
            emptied = true; /* the rmdir fails unless the folder is empty */
    }
    closedir(dir);
    /* the first upload of a strategy killed mid-way leaves its folder with
     * nothing but that revision's: it goes the same way (an upload that
     * fails while running removes both) */
    if (emptied)
        (void)unlinkat(root_fd, name, AT_REMOVEDIR);
}

/* A writer killed between creating a temporary file and renaming it leaves
 * the temporary behind: registry.json's in the root (and, on the classic
 * write path, the replaced registry.json kept for the reaper), a
 * revision's in its hash folder. Under the lock nobody else is between the
 * two steps (the server and the bootstrap tool write under it), so what is
 * left is garbage. Bytes written ahead of an upload (catalog_prewrite_begin)
 * are written without the lock: one that a running server still waits for
 * is removed too, which only makes that upload write its file itself. Only
 * names of exactly the shapes these writers make are removed. */
static void remove_stale_temps(const struct catalog *cat, const struct disk_state *disk)
{
    struct sweep sw = {cat, disk, NULL, false};
    static const char *const registry_kinds[] = {"tmp", "old", NULL};
    static const char *const upload_kinds[] = {CATALOG__PREWRITE_KIND, NULL};
    int root_fd = open(cat->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        return;
    (void)remove_leftovers_in(root_fd, REGISTRY_FILE, registry_kinds, "", NULL);
    (void)remove_leftovers_in(root_fd, "", upload_kinds, "", NULL);
    int fd = dup(root_fd);
    DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
    if (!dir && fd >= 0)
        close(fd);
    if (dir)
        rewinddir(dir); /* the walks above moved the shared offset */
    struct dirent *entry;
    while (dir && (entry = readdir(dir)) != NULL) {
        if (names_valid_strategy(entry->d_name))
            remove_revision_temps(&sw, root_fd, entry->d_name);
    }
    if (dir)
        closedir(dir);
    close(root_fd);
    registry_release(sw.named);
}

/* ---------------------------------------------------------- open/close */

static struct catalog *catalog_new(const struct catalog_options *opts, struct err *err)
{
    struct catalog *cat = calloc(1, sizeof *cat);
    if (!cat) {
        err_set(err, ERR_INTERNAL, "out of memory opening the catalogue");
        return NULL;
    }
    cat->root = strdup(opts->root);
    cat->registry_path = fsutil_join(opts->root, REGISTRY_FILE);
    cat->lock_path = fsutil_join(opts->root, REGISTRY_LOCK_FILE);
    cat->spare_path = fsutil_join(opts->root, REGISTRY_SPARE_FILE);
    cat->metadata = opts->metadata;
    cat->metadata_ctx = opts->metadata_ctx;
    pthread_mutex_init(&cat->change_mu, NULL);
    pthread_mutex_init(&cat->snap_mu, NULL);
    pthread_mutex_init(&cat->prewrite_mu, NULL);
    pthread_cond_init(&cat->prewrites_done, NULL);
    atomic_init(&cat->batch, false);
    cat->batch_lock.fd = -1;
    atomic_init(&cat->replaced, NULL);
    cat->reaper = fsutil_reaper_create();
    if (!cat->root || !cat->registry_path || !cat->lock_path || !cat->spare_path) {
        catalog_close(cat);
        err_set(err, ERR_INTERNAL, "out of memory opening the catalogue");
        return NULL;
    }
    return cat;
}

static void log_opened(const struct catalog *cat, int64_t started)
{
    size_t revisions = 0, invalid = 0;
    for (size_t s = 0; s < cat->current->nstrategies; s++) {
        const struct registry_strategy *st = cat->current->strategies[s];
        revisions += st->nrevisions;
        for (size_t r = 0; r < st->nrevisions; r++)
            invalid += st->revisions[r].invalid;
    }
    json_int_t ms = (json_int_t)((clock_mono_ns() - started) / 1000000);
    json_t *fields = json_pack("{s:s, s:I, s:I, s:I, s:I}", "root", cat->root, "strategies",
                               (json_int_t)cat->current->nstrategies, "revisions",
                               (json_int_t)revisions, "invalid", (json_int_t)invalid, "ms", ms);
    log_json(LOG_LEVEL_INFO, REGISTRY__COMPONENT, "catalogue opened", fields);
}

int catalog_open(const struct catalog_options *opts, struct catalog **out, struct err *err)
{
    *out = NULL;
    if (!opts || !opts->root || !opts->root[0]) {
        err_set(err, ERR_INVALID, "the catalogue needs a strategies directory");
        return -1;
    }
    if (fsutil_mkdirs(opts->root, 0755, err) != 0)
        return -1;
    int64_t started = clock_mono_ns();
    struct catalog *cat = catalog_new(opts, err);
    if (!cat)
        return -1;
    struct fsutil_lock lock = FSUTIL_LOCK_INIT;
    bool locked = lock_for_reading(cat, &lock);
    struct disk_state disk;
    int rc = read_disk(cat, &disk, err);
    if (rc == 0 && locked && !opts->no_sweep)
        remove_stale_temps(cat, &disk);
    if (rc == 0)
        rc = load(cat, &disk, err);
    free(disk.data);
    fsutil_lock_release(&lock);
    if (rc != 0) {
        catalog_close(cat);
        return -1;
    }
    log_opened(cat, started);
    *out = cat;
    return 0;
}

void catalog_close(struct catalog *cat)
{
    if (!cat)
        return;
    catalog__prewrites_wait(cat);
    catalog_housekeep(cat);
    fsutil_reaper_destroy(cat->reaper);
    registry_release(cat->current);
    if (atomic_load(&cat->batch)) { /* left open by a caller that gave up */
        fsutil_lock_release(&cat->batch_lock);
        pthread_mutex_unlock(&cat->change_mu);
    }
    registry_release(cat->batch_base);
    free(cat->removals);
    pthread_mutex_destroy(&cat->change_mu);
    pthread_mutex_destroy(&cat->snap_mu);
    pthread_mutex_destroy(&cat->prewrite_mu);
    pthread_cond_destroy(&cat->prewrites_done);
    free(cat->root);
    free(cat->registry_path);
    free(cat->lock_path);
    free(cat->spare_path);
    registry__text_buffer_free(&cat->text);
    free(cat->spare_changed);
    free(cat);
}

void catalog_housekeep(struct catalog *cat)
{
    if (atomic_load_explicit(&cat->replaced, memory_order_relaxed))
        fsutil_reaper_remove(cat->reaper, atomic_exchange(&cat->replaced, NULL));
}

const char *catalog_root(const struct catalog *cat)
{
    return cat->root;
}

struct registry *catalog_snapshot(struct catalog *cat)
{
    pthread_mutex_lock(&cat->snap_mu);
    struct registry *reg = cat->current;
    registry_retain(reg);
    pthread_mutex_unlock(&cat->snap_mu);
    return reg;
}

/* -------------------------------------------------------------- reload */

static json_t *collect_problems(const struct registry *reg)
{
    json_t *problems = json_array();
    for (size_t s = 0; problems && s < reg->nstrategies; s++) {
        const struct registry_strategy *st = reg->strategies[s];
        for (size_t r = 0; r < st->nrevisions; r++) {
            const struct registry_revision *rev = &st->revisions[r];
            if (!rev->invalid)
                continue;
            json_t *item = json_pack("{s:s, s:o, s:s}", "strategy", st->name, "hash",
                                     json_sprintf(HASH_PREFIX "%s", rev->hex), "message",
                                     rev->invalid_reason ? rev->invalid_reason : "invalid");
            json_array_append_new(problems, item);
        }
    }
    return problems;
}

int catalog_reload(struct catalog *cat, json_t **problems, struct err *err)
{
    if (problems)
        *problems = NULL;
    pthread_mutex_lock(&cat->change_mu);
    struct fsutil_lock lock = FSUTIL_LOCK_INIT;
    lock_for_reading(cat, &lock);
    struct disk_state disk;
    int rc = read_disk(cat, &disk, err);
    if (rc == 0)
        rc = load(cat, &disk, err);
    free(disk.data);
    fsutil_lock_release(&lock);
    if (rc == 0 && problems)
        *problems = collect_problems(cat->current);
    pthread_mutex_unlock(&cat->change_mu);
    if (rc == 0 && problems && !*problems) {
        err_set(err, ERR_INTERNAL, "out of memory listing registry problems");
        return -1;
    }
    return rc;
}

/* --------------------------------------------------------- read source */

/* Only a revision whose registry entry names the canonical path is opened. */
static int find_for_read(const struct registry *reg, const char *name, const char *hex,
                         struct err *err)
{
    const struct registry_strategy *st = registry_find_strategy(reg, name);
    const struct registry_revision *rev = registry_find_revision(st, hex);
    if (!st) {
        err_set(err, ERR_NOT_FOUND, "unknown strategy '%s'", name);
        return -1;
    }
    if (!rev) {
        err_set(err, ERR_NOT_FOUND, "strategy '%s' has no revision " HASH_PREFIX "%s", name, hex);
        return -1;
    }
    char canonical[REGISTRY__REL_PATH_MAX];
    registry__rel_path(name, hex, canonical);
    if (strcmp(rev->path, canonical) != 0) {
        err_set(err, ERR_CONFLICT, "revision %s@" HASH_PREFIX "%s is invalid: %s", name, hex,
                rev->invalid_reason ? rev->invalid_reason : "its path is not canonical");
        return -1;
    }
    return 0;
}

static int read_verified(const struct catalog *cat, const char *name, const char *hex,
                         char **source, size_t *len, struct err *err)
{
    char *path = catalog__file_path(cat, name, hex);
    if (!path) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    struct err e = ERR_INIT;
    int rc = fsutil_read_file(path, REGISTRY__SOURCE_MAX, source, len, &e);
    free(path);
    if (rc != 0) {
        /* The client learns which revision is broken, not where the
         * strategies live on the server: the path goes to the log. */
        if (e.kind == ERR_NOT_FOUND) {
            err_set(err, ERR_CONFLICT, "the file of revision %s@" HASH_PREFIX "%s is missing", name,
                    hex);
        } else {
            log_warn("catalog", "revision %s@" HASH_PREFIX "%s: %s", name, hex, e.message);
            err_set(err, e.kind == ERR_INTERNAL ? ERR_INTERNAL : ERR_CONFLICT,
                    "the file of revision %s@" HASH_PREFIX "%s %s", name, hex,
                    e.kind == ERR_INVALID     ? "is not a regular file"
                    : e.kind == ERR_TOO_LARGE ? "is over the size limit of a revision"
                                              : "cannot be read (the gateway's log says why)");
        }
        err_clear(&e);
        return -1;
    }
    char actual[HASH_HEX_LEN + 1];
    hash_sha256_hex(*source, *len, actual);
    if (strcmp(actual, hex) != 0) {
        free(*source);
        *source = NULL;
        *len = 0;
        err_set(err, ERR_CONFLICT,
                "the file of revision %s@" HASH_PREFIX "%s no longer matches its hash (its bytes "
                "hash to " HASH_PREFIX "%s)",
                name, hex, actual);
        return -1;
    }
    return 0;
}

int catalog_read_source(struct catalog *cat, const char *name, const char *hex_text, char **source,
                        size_t *len, struct err *err)
{
    *source = NULL;
    *len = 0;
    char hex[HASH_HEX_LEN + 1];
    if (!name || !names_valid_strategy(name)) {
        err_set(err, ERR_INVALID, "invalid strategy name '%.80s'", name ? name : "");
        return -1;
    }
    if (!hex_text || !hash_parse_full(hex_text, hex)) {
        err_set(err, ERR_INVALID, "'%.80s' is not a full sha256 hash", hex_text ? hex_text : "");
        return -1;
    }
    struct registry *reg = catalog_snapshot(cat);
    int rc = find_for_read(reg, name, hex, err);
    registry_release(reg);
    if (rc != 0)
        return -1;
    return read_verified(cat, name, hex, source, len, err);
}
