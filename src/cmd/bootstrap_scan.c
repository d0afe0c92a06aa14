/*
 * Discovery: every *.js file under the root, in whichever layout it sits.
 *
 *   <root>/<x>.js                   flat (oldest deployments)
 *   <root>/<folder>/<tag>/<x>.js     tag folders
 *   <root>/<folder>/<64 hex>/<x>.js  the current layout
 *
 * Anything else that ends in .js is recorded as "not in a known layout" so
 * the operator sees it; dot-files (the lock, temporary files, .git) are
 * never looked at, and symbolic links are never followed: a link could lead
 * out of the tree, and removing "an old copy" through it would delete
 * somebody else's file.
 */
#include "cmd/bootstrap.h"

#include "core/fsutil.h"

#include <dirent.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#define SCAN_MAX_DEPTH 6 /* components below the root that are still walked */

struct walker {
    const char *root;
    struct bootstrap_checks *checks;
    struct bootstrap_scan *scan;
};

/* ------------------------------------------------------------- records */

int bootstrap_file_conflict(struct bootstrap_file *file, const char *fmt, ...)
{
    if (file->state != BOOTSTRAP_FILE_OK)
        return 0;
    va_list ap;
    va_start(ap, fmt);
    char *problem = NULL;
    int n = vasprintf(&problem, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    file->state = BOOTSTRAP_FILE_CONFLICT;
    file->problem = problem;
    return 0;
}

const char *bootstrap_file_name(const struct bootstrap_file *file)
{
    if (!file->check || !file->check->metadata)
        return NULL;
    return json_string_value(json_object_get(file->check->metadata, "name"));
}

static struct bootstrap_file *new_file(struct bootstrap_scan *scan, const char *rel)
{
    if (scan->nfiles == scan->cap) {
        size_t cap = scan->cap ? scan->cap * 2 : 64;
        struct bootstrap_file *files = realloc(scan->files, cap * sizeof *files);
        if (!files)
            return NULL;
        scan->files = files;
        scan->cap = cap;
    }
    struct bootstrap_file *file = &scan->files[scan->nfiles];
    memset(file, 0, sizeof *file);
    file->rel = strdup(rel);
    if (!file->rel)
        return NULL;
    scan->nfiles++;
    return file;
}

static int add_path(struct bootstrap_paths *paths, const char *rel)
{
    if (paths->n == paths->cap) {
        size_t cap = paths->cap ? paths->cap * 2 : 16;
        char **items = realloc(paths->items, cap * sizeof *items);
        if (!items)
            return -1;
        paths->items = items;
        paths->cap = cap;
    }
    paths->items[paths->n] = strdup(rel);
    return paths->items[paths->n++] ? 0 : -1;
}

static void free_paths(struct bootstrap_paths *paths)
{
    for (size_t i = 0; i < paths->n; i++)
        free(paths->items[i]);
    free(paths->items);
}

void bootstrap_scan_free(struct bootstrap_scan *scan)
{
    for (size_t i = 0; i < scan->nfiles; i++) {
        struct bootstrap_file *f = &scan->files[i];
        free(f->rel);
        free(f->folder);
        free(f->sub);
        free(f->problem);
    }
    free(scan->files);
    free_paths(&scan->empty);
    free_paths(&scan->stale);
    memset(scan, 0, sizeof *scan);
}

/* -------------------------------------------------------- one .js file */

static bool ends_with_js(const char *name)
{
    size_t len = strlen(name);
    return len > 3 && strcmp(name + len - 3, ".js") == 0;
}

/* A temporary file of a registry.json or revision-file write whose writer
 * died: <root>/registry.json.tmp.<pid>.<n> (or the replaced registry.json
 * the classic write path keeps, registry.json.old.<pid>.<n>) or
 * <name>/<hex>/<name>.js.tmp.<pid>.<n>, exactly the names the writers make
 * (fsutil_is_writer_name) in a lower-case hash folder, as the catalogue's
 * own sweep matches them. Such a file only exists while its writer holds
 * the registry lock, so one seen under the lock is garbage
 * (bootstrap_apply.c removes it under the lock). */
static bool is_stale_temp(const char *rel, const char *name, int depth)
{
    if (depth == 0)
        return fsutil_is_writer_name(name, REGISTRY_FILE, "tmp") ||
               fsutil_is_writer_name(name, REGISTRY_FILE, "old");
    const char *first = strchr(rel, '/');
    const char *second = first ? strchr(first + 1, '/') : NULL;
    if (depth != 2 || !second || second - first - 1 != HASH_HEX_LEN ||
        strspn(first + 1, "0123456789abcdef") != HASH_HEX_LEN)
        return false;
    char base[NAMES_STRATEGY_MAX + 4];
    int n = snprintf(base, sizeof base, "%.*s.js", (int)(first - rel), rel);
    return n > 0 && (size_t)n < sizeof base &&
           (fsutil_is_writer_name(name, base, "tmp") ||
            fsutil_is_writer_name(name, base, CATALOG_PENDING_KIND));
}

/* Splits rel into its components: the layout follows from their count and
 * from whether the middle one is a 64-hex hash folder. */
static int classify(struct bootstrap_file *file)
{
    const char *first = strchr(file->rel, '/');
    if (!first) {
        file->layout = BOOTSTRAP_LAYOUT_FLAT;
        return 0;
    }
    const char *second = strchr(first + 1, '/');
    if (!second || strchr(second + 1, '/')) {
        file->layout = BOOTSTRAP_LAYOUT_UNKNOWN;
        return 0;
    }
    file->folder = strndup(file->rel, (size_t)(first - file->rel));
    file->sub = strndup(first + 1, (size_t)(second - first - 1));
    if (!file->folder || !file->sub)
        return -1;
    bool hashed = strlen(file->sub) == HASH_HEX_LEN && hash_is_hex(file->sub, HASH_HEX_LEN);
    file->layout = hashed ? BOOTSTRAP_LAYOUT_CURRENT : BOOTSTRAP_LAYOUT_TAG;
    return 0;
}

static int record_invalid(struct bootstrap_file *file)
{
    file->state = BOOTSTRAP_FILE_INVALID;
    file->problem = strdup(file->check->message);
    return file->problem ? 0 : -1;
}

/* Reads, hashes and validates one file. */
static int inspect(struct walker *w, struct bootstrap_file *file, const char *path,
                   const char *base)
{
    char *data = NULL;
    size_t len = 0;
    struct err e = ERR_INIT;
    if (fsutil_read_file(path, BOOTSTRAP_SOURCE_MAX, &data, &len, &e) != 0) {
        int rc = bootstrap_file_conflict(file, "cannot be read: %s", e.message);
        err_clear(&e);
        return rc;
    }
    hash_sha256_hex(data, len, file->hex);
    file->size = len;
    file->check = bootstrap_checks_get(w->checks, file->hex, data, len, base);
    free(data);
    if (!file->check)
        return -1;
    if (!file->check->metadata)
        return record_invalid(file);
    if (file->layout == BOOTSTRAP_LAYOUT_UNKNOWN)
        return bootstrap_file_conflict(file, "not in a known layout (<name>.js, "
                                             "<name>/<tag>/<name>.js or "
                                             "<name>/<hash>/<name>.js)");
    return 0;
}

static int visit_file(struct walker *w, const char *rel, const char *path, const char *base,
                      const struct stat *st)
{
    struct bootstrap_file *file = new_file(w->scan, rel);
    if (!file || classify(file) != 0)
        return -1;
    file->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    if (S_ISLNK(st->st_mode))
        return bootstrap_file_conflict(file, "a symbolic link; links are not followed");
    if (!S_ISREG(st->st_mode))
        return bootstrap_file_conflict(file, "not a regular file");
    return inspect(w, file, path, base);
}

/* ------------------------------------------------------------- folders */

static int walk(struct walker *w, const char *rel, int depth, struct err *err);

/* Empty folders below a strategy folder are what an interrupted migration
 * leaves (the old file removed, the crash came before the rmdir). Only
 * folders named like a strategy (and their children) are candidates, so a
 * mount point's lost+found is never touched. */
static bool cleanable(const char *rel, int depth)
{
    if (depth < 1 || depth > 2)
        return false;
    size_t first = strcspn(rel, "/");
    char name[NAMES_STRATEGY_MAX + 1];
    if (first >= sizeof name)
        return false;
    memcpy(name, rel, first);
    name[first] = '\0';
    return names_valid_strategy(name);
}

/* A file named like a module in another spelling (.JS, .mjs, .cjs): not
 * read, but reported, so the operator knows it was not migrated. */
static bool looks_like_module(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot && dot != name &&
           (strcasecmp(dot, ".js") == 0 || strcasecmp(dot, ".mjs") == 0 ||
            strcasecmp(dot, ".cjs") == 0);
}

/* Reports rel as left aside (a conflict), with the reason. */
static int skipped(struct walker *w, const char *rel, const char *why, struct err *err)
{
    struct bootstrap_file *file = new_file(w->scan, rel);
    if (!file || bootstrap_file_conflict(file, "%s", why) != 0) {
        err_set(err, ERR_INTERNAL, "out of memory scanning %s", rel);
        return -1;
    }
    file->layout = BOOTSTRAP_LAYOUT_UNKNOWN;
    return 0;
}

static int visit_entry(struct walker *w, const char *rel, const char *name, int depth,
                       struct err *err)
{
    char *path = fsutil_join(w->root, rel);
    if (!path) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    struct stat st;
    int rc = 0;
    if (lstat(path, &st) != 0) {
        rc = 0; /* vanished since readdir: nothing to do with it */
    } else if (S_ISDIR(st.st_mode)) {
        rc = depth + 1 < SCAN_MAX_DEPTH
                 ? walk(w, rel, depth + 1, err)
                 : skipped(w, rel,
                           "folder not looked into: it is deeper than any layout reaches, so "
                           "no module in it is migrated",
                           err);
    } else if (S_ISREG(st.st_mode) && is_stale_temp(rel, name, depth)) {
        rc = add_path(&w->scan->stale, rel);
        if (rc != 0)
            err_set(err, ERR_INTERNAL, "out of memory scanning %s", rel);
    } else if (ends_with_js(name) || (S_ISLNK(st.st_mode) && depth <= 1)) {
        /* A link where a strategy or tag folder belongs is reported too:
         * the operator may expect it to be migrated. */
        rc = visit_file(w, rel, path, name, &st);
        if (rc != 0)
            err_set(err, ERR_INTERNAL, "out of memory scanning %s", rel);
    } else if (S_ISREG(st.st_mode) && looks_like_module(name)) {
        rc = skipped(w, rel, "not read: a strategy module's file name ends in .js", err);
    }
    free(path);
    return rc;
}

static int read_folder(struct walker *w, DIR *dir, const char *rel, int depth, bool *empty,
                       struct err *err)
{
    struct dirent *entry;
    *empty = true;
    while ((entry = readdir(dir)) != NULL) {
        const char *name = entry->d_name;
        if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            continue;
        *empty = false;
        if (name[0] == '.')
            continue;
        char *child = rel[0] ? fsutil_format("%s/%s", rel, name) : strdup(name);
        if (!child) {
            err_set(err, ERR_INTERNAL, "out of memory");
            return -1;
        }
        int rc = visit_entry(w, child, name, depth, err);
        free(child);
        if (rc != 0)
            return -1;
    }
    return 0;
}

static int walk(struct walker *w, const char *rel, int depth, struct err *err)
{
    char *path = rel[0] ? fsutil_join(w->root, rel) : strdup(w->root);
    if (!path) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    DIR *dir = opendir(path);
    if (!dir) {
        int errnum = errno;
        free(path);
        if (depth == 0) {
            err_set_errno(err, ERR_INVALID, errnum, "cannot read the root '%s'", w->root);
            return -1;
        }
        /* A folder we cannot read is reported like a file we cannot read. */
        struct bootstrap_file *file = new_file(w->scan, rel);
        if (!file ||
            bootstrap_file_conflict(file, "folder cannot be read: %s", strerror(errnum)) != 0) {
            err_set(err, ERR_INTERNAL, "out of memory");
            return -1;
        }
        file->layout = BOOTSTRAP_LAYOUT_UNKNOWN;
        return 0;
    }
    free(path);
    bool empty = false;
    int rc = read_folder(w, dir, rel, depth, &empty, err);
    closedir(dir);
    if (rc == 0 && empty && cleanable(rel, depth) && add_path(&w->scan->empty, rel) != 0) {
        err_set(err, ERR_INTERNAL, "out of memory");
        rc = -1;
    }
    return rc;
}

static int compare_files(const void *a, const void *b)
{
    const struct bootstrap_file *x = a, *y = b;
    return strcmp(x->rel, y->rel);
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Whether a pending marker (listed among the stale files) sits in the
 * folder of file. */
static bool folder_marked(const struct bootstrap_scan *scan, const struct bootstrap_file *file)
{
    size_t dir_len = (size_t)(strrchr(file->rel, '/') - file->rel) + 1;
    const char *base = file->rel + dir_len;
    for (size_t i = 0; i < scan->stale.n; i++) {
        const char *item = scan->stale.items[i];
        if (strncmp(item, file->rel, dir_len) == 0 && !strchr(item + dir_len, '/') &&
            fsutil_is_writer_name(item + dir_len, base, CATALOG_PENDING_KIND))
            return true;
    }
    return false;
}

int bootstrap_scan_settle_marked(struct bootstrap_scan *scan, const struct registry *reg,
                                 struct err *err)
{
    size_t kept = 0;
    for (size_t i = 0; i < scan->nfiles; i++) {
        struct bootstrap_file *f = &scan->files[i];
        bool garbage = f->layout == BOOTSTRAP_LAYOUT_CURRENT && folder_marked(scan, f) &&
                       !registry_find_revision(registry_find_strategy(reg, f->folder), f->sub);
        if (garbage && add_path(&scan->stale, f->rel) != 0) {
            err_set(err, ERR_INTERNAL, "out of memory scanning %s", f->rel);
            return -1;
        }
        if (!garbage) {
            scan->files[kept++] = *f;
            continue;
        }
        free(f->rel);
        free(f->folder);
        free(f->sub);
        free(f->problem);
    }
    scan->nfiles = kept;
    if (scan->stale.n)
        qsort(scan->stale.items, scan->stale.n, sizeof *scan->stale.items, compare_strings);
    return 0;
}

int bootstrap_scan_tree(const char *root, struct bootstrap_checks *checks,
                        struct bootstrap_scan *scan, struct err *err)
{
    memset(scan, 0, sizeof *scan);
    struct walker w = {root, checks, scan};
    if (walk(&w, "", 0, err) != 0)
        return -1;
    /* readdir order is arbitrary; sorted input makes every plan and report
     * the same from one run to the next. */
    if (scan->nfiles)
        qsort(scan->files, scan->nfiles, sizeof *scan->files, compare_files);
    if (scan->empty.n)
        qsort(scan->empty.items, scan->empty.n, sizeof *scan->empty.items, compare_strings);
    if (scan->stale.n)
        qsort(scan->stale.items, scan->stale.n, sizeof *scan->stale.items, compare_strings);
    return 0;
}
