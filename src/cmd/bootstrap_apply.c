/*
 * -write: the steps, in plan order, through the catalogue API (the same
 * code, lock and durability the server uses). bootstrap_order.c explains
 * why the order makes every crash recoverable by a rerun.
 *
 * Nothing is removed on trust: an old copy is removed only after the
 * canonical file has been re-read and hashes to the revision and the
 * registry names it, and only if the copy itself still has the bytes it had
 * when the plan was made (an operator may have edited it since).
 */
#include "cmd/bootstrap.h"

#include "core/fsutil.h"
#include "core/jsonutil.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct applier {
    struct catalog *cat;
    const char *root;
    const struct bootstrap_plan *plan;
    const struct bootstrap_scan *scan;
    struct bootstrap_outcome *out;
};

static const char *const step_names[] = {
    [BOOTSTRAP_STEP_ADD] = "add",     [BOOTSTRAP_STEP_LATEST] = "latest",
    [BOOTSTRAP_STEP_DROP] = "drop",   [BOOTSTRAP_STEP_DEDUPE] = "dedupe",
    [BOOTSTRAP_STEP_STALE] = "stale", [BOOTSTRAP_STEP_RMDIR] = "rmdir",
};

/* One line on stderr and one entry in the outcome, per failed step. */
static void step_failed(struct applier *a, const struct bootstrap_step *step, const struct err *e)
{
    const char *what = step->path;
    char label[NAMES_STRATEGY_MAX + BOOTSTRAP_SHORT_HEX + 16] = "";
    json_t *entry = json_pack("{s:s, s:o}", "step", step_names[step->kind], "message",
                              jsonutil_string_lossy(e->message, strlen(e->message)));
    if (!what) {
        const struct bootstrap_revision *rev = &a->plan->revisions[step->revision];
        snprintf(label, sizeof label, "%s@%.*s", rev->name, BOOTSTRAP_SHORT_HEX, rev->hex);
        what = label;
        json_object_set_new(entry, "strategy", json_string(rev->name));
        json_object_set_new(entry, "hash", json_sprintf(HASH_PREFIX "%s", rev->hex));
    } else {
        (void)bootstrap_json_set_path(entry, "path", step->path);
    }
    fprintf(stderr, "stratd bootstrap: %s %s failed: %s\n", step_names[step->kind], what,
            e->message);
    json_array_append_new(a->out->errors, entry);
    a->out->failed++;
}

/* ------------------------------------------------------------- checks */

static char *abs_path(const struct applier *a, const char *rel, struct err *err)
{
    char *path = fsutil_join(a->root, rel);
    if (!path)
        err_set(err, ERR_INTERNAL, "out of memory");
    return path;
}

/* The file at rel, still holding exactly the bytes planned for. */
static int read_planned(const struct applier *a, const char *rel, const char *hex, char **data,
                        size_t *len, struct err *err)
{
    char *path = abs_path(a, rel, err);
    if (!path)
        return -1;
    int rc = fsutil_read_file(path, BOOTSTRAP_SOURCE_MAX, data, len, err);
    free(path);
    if (rc != 0)
        return -1;
    char actual[HASH_HEX_LEN + 1];
    hash_sha256_hex(*data, *len, actual);
    if (strcmp(actual, hex) == 0)
        return 0;
    free(*data);
    *data = NULL;
    err_set(err, ERR_CONFLICT, "%s changed since the plan was made; left as it is", rel);
    return -1;
}

static int has_bytes(const struct applier *a, const char *rel, const char *hex, struct err *err)
{
    char *path = abs_path(a, rel, err);
    if (!path)
        return -1;
    char actual[HASH_HEX_LEN + 1];
    uint64_t size = 0;
    int rc = hash_file_sha256(path, actual, &size, err);
    free(path);
    if (rc == 0 && strcmp(actual, hex) != 0) {
        err_set(err, ERR_CONFLICT, "%s does not hash to " HASH_PREFIX "%s", rel, hex);
        rc = -1;
    }
    return rc;
}

/* The canonical file hashes right and the registry names it, valid. */
static int verify_registered(const struct applier *a, const struct bootstrap_revision *rev,
                             struct err *err)
{
    char rel[BOOTSTRAP_REL_MAX];
    bootstrap_canonical_rel(rev->name, rev->hex, rel);
    if (has_bytes(a, rel, rev->hex, err) != 0)
        return -1;
    struct registry *snap = catalog_snapshot(a->cat);
    const struct registry_revision *entry =
        registry_find_revision(registry_find_strategy(snap, rev->name), rev->hex);
    int rc = 0;
    if (!entry || entry->invalid) {
        err_set(err, ERR_INTERNAL, "%s@" HASH_PREFIX "%s is not a valid registry entry: %s",
                rev->name, rev->hex,
                entry && entry->invalid_reason ? entry->invalid_reason : "it is missing");
        rc = -1;
    }
    registry_release(snap);
    return rc;
}

/* ------------------------------------------------------------ removal */

static void remove_if_empty(const struct applier *a, const char *rel)
{
    char *path = fsutil_join(a->root, rel);
    if (!path)
        return;
    bool existed = fsutil_is_dir(path);
    fsutil_rmdir_if_empty(path);
    if (existed && !fsutil_is_dir(path))
        a->out->rmdirs++;
    free(path);
}

/* An emptied tag folder goes, and its strategy folder if that empties too. */
static void remove_parents(const struct applier *a, const struct bootstrap_file *f)
{
    if (f->layout != BOOTSTRAP_LAYOUT_TAG)
        return;
    char *tag_dir = fsutil_format("%s/%s", f->folder, f->sub);
    if (tag_dir)
        remove_if_empty(a, tag_dir);
    free(tag_dir);
    remove_if_empty(a, f->folder);
}

static int remove_copy(const struct applier *a, const struct bootstrap_file *f, const char *hex,
                       struct err *err)
{
    if (has_bytes(a, f->rel, hex, err) != 0)
        return -1;
    char *path = abs_path(a, f->rel, err);
    if (!path)
        return -1;
    int rc = fsutil_remove_durable(path, err);
    free(path);
    if (rc != 0)
        return -1;
    a->out->removed++;
    remove_parents(a, f);
    return 0;
}

/* Every legacy copy; a copy that fails stays, the others still go. */
static int remove_legacy(const struct applier *a, const struct bootstrap_revision *rev,
                         struct err *err)
{
    int rc = 0;
    for (size_t i = 0; i < rev->ncopies; i++) {
        const struct bootstrap_file *f = &a->scan->files[rev->copies[i]];
        struct err e = ERR_INIT;
        if (!bootstrap_file_is_legacy(f) || remove_copy(a, f, rev->hex, &e) == 0)
            continue;
        if (rc == 0)
            err_move(err, &e);
        err_clear(&e);
        rc = -1;
    }
    return rc;
}

/* -------------------------------------------------------------- steps */

/* The registry part of an ADD, inside the batch: the file is written
 * durably, the entry reaches registry.json with the batch. */
/* The plan gives a new revision a version tag that a revision it drops may
 * still hold: the drop comes later in the same batch, so the tag is let
 * move. A tag held by a revision that stays is refused, as it should be. */
static bool tag_held_by_drop(struct applier *a, const struct bootstrap_revision *rev)
{
    if (!rev->tag)
        return false;
    struct registry *snap = catalog_snapshot(a->cat);
    const struct registry_strategy *st = snap ? registry_find_strategy(snap, rev->name) : NULL;
    const char *holder = st ? registry_tag_target(st, rev->tag) : NULL;
    const struct bootstrap_revision *held =
        holder ? bootstrap_plan_find(a->plan, rev->name, holder) : NULL;
    bool dropped = held && held->fate == BOOTSTRAP_DROP;
    registry_release(snap);
    return dropped;
}

static int apply_add(struct applier *a, const struct bootstrap_revision *rev, struct err *err)
{
    const struct bootstrap_file *src = &a->scan->files[rev->source];
    char *data = NULL;
    size_t len = 0;
    if (read_planned(a, src->rel, rev->hex, &data, &len, err) != 0)
        return -1;
    const char *reassign[] = {rev->tag};
    struct catalog_upload up = {
        .name = rev->name,
        .source = data,
        .len = len,
        .metadata = rev->check ? rev->check->metadata : NULL,
        .tag = rev->tag,
        .aliases = (const char *const *)rev->aliases,
        .naliases = rev->naliases,
        .reassign = reassign,
        .nreassign = tag_held_by_drop(a, rev) ? 1 : 0,
    };
    struct catalog_upload_result result;
    int rc = catalog_add_revision(a->cat, &up, &result, err);
    free(data);
    return rc;
}

/* The rest of an ADD, once registry.json names the revision: old copies go
 * only after the canonical file and the registry have been checked. */
static int finish_add(struct applier *a, const struct bootstrap_revision *rev, struct err *err)
{
    if (verify_registered(a, rev, err) != 0)
        return -1;
    a->out->added++;
    return remove_legacy(a, rev, err);
}

static int apply_latest(struct applier *a, const struct bootstrap_revision *rev, struct err *err)
{
    char previous[HASH_HEX_LEN + 1];
    if (catalog_set_tag(a->cat, rev->name, REGISTRY_LATEST, rev->hex, previous, err) != 0)
        return -1;
    a->out->moved++;
    return 0;
}

/* The file may have come back since the plan: then the entry stays. */
static int apply_drop(struct applier *a, const struct bootstrap_revision *rev, struct err *err)
{
    char rel[BOOTSTRAP_REL_MAX];
    bootstrap_canonical_rel(rev->name, rev->hex, rel);
    char *path = abs_path(a, rel, err);
    if (!path)
        return -1;
    struct stat st;
    bool back = lstat(path, &st) == 0;
    free(path);
    if (back) {
        err_set(err, ERR_CONFLICT, "%s appeared since the plan was made; the entry stays", rel);
        return -1;
    }
    if (catalog_delete_revision(a->cat, rev->name, rev->hex, NULL, NULL, err) != 0)
        return -1;
    a->out->dropped++;
    return 0;
}

static int apply_dedupe(struct applier *a, const struct bootstrap_revision *rev, struct err *err)
{
    if (verify_registered(a, rev, err) != 0)
        return -1;
    return remove_legacy(a, rev, err);
}

/* A folder, then the folders above it up to the root, while they are
 * empty. */
static void remove_empty_chain(struct applier *a, const char *rel)
{
    char *dir = strdup(rel);
    while (dir && *dir) {
        remove_if_empty(a, dir);
        char *slash = strrchr(dir, '/');
        if (!slash)
            break;
        *slash = '\0';
    }
    free(dir);
}

/* An empty tag or hash folder, and its strategy folder if that empties. */
static int apply_rmdir(struct applier *a, const char *rel)
{
    remove_empty_chain(a, rel);
    return 0;
}

/* Runs under the registry lock (apply_file_steps): no writer is between
 * creating a temporary file and renaming it, so the file is a dead
 * writer's: removed, and the folders it leaves empty with it. */
static int apply_stale(struct applier *a, const char *rel, struct err *err)
{
    char *path = fsutil_join(a->root, rel);
    if (!path) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    int rc = fsutil_exists(path) ? fsutil_remove_durable(path, err) : 0;
    if (rc == 0 && !fsutil_exists(path))
        a->out->stale++;
    const char *slash = strrchr(rel, '/');
    char *parent = slash ? strndup(rel, (size_t)(slash - rel)) : NULL;
    if (parent)
        remove_empty_chain(a, parent);
    free(parent);
    free(path);
    return rc;
}

/* Steps that change the registry: they run inside the batch. */
static bool registry_step(enum bootstrap_step_kind kind)
{
    return kind == BOOTSTRAP_STEP_ADD || kind == BOOTSTRAP_STEP_LATEST ||
           kind == BOOTSTRAP_STEP_DROP;
}

static int apply_registry_step(struct applier *a, const struct bootstrap_step *step,
                               struct err *err)
{
    const struct bootstrap_revision *rev = &a->plan->revisions[step->revision];
    switch (step->kind) {
    case BOOTSTRAP_STEP_ADD:
        return apply_add(a, rev, err);
    case BOOTSTRAP_STEP_LATEST:
        return apply_latest(a, rev, err);
    default:
        return apply_drop(a, rev, err);
    }
}

/* Steps that remove files: they run once registry.json is written. An ADD
 * comes back here for its checks and the removal of its old copies. */
static int apply_file_step(struct applier *a, const struct bootstrap_step *step, struct err *err)
{
    if (step->kind == BOOTSTRAP_STEP_RMDIR)
        return apply_rmdir(a, step->path);
    if (step->kind == BOOTSTRAP_STEP_STALE)
        return apply_stale(a, step->path, err);
    const struct bootstrap_revision *rev = &a->plan->revisions[step->revision];
    if (step->kind == BOOTSTRAP_STEP_ADD)
        return finish_add(a, rev, err);
    return apply_dedupe(a, rev, err);
}

/* A new strategy whose first revision could not be added would get a
 * different `latest` from its next one; its remaining steps wait for a
 * rerun instead. */
static bool strategy_missing(struct catalog *cat, const char *name)
{
    struct registry *snap = catalog_snapshot(cat);
    bool missing = registry_find_strategy(snap, name) == NULL;
    registry_release(snap);
    return missing;
}

/* After a failed add, the strategy's drops wait for the rerun that retries
 * it: the plan counted on the added revision to stay, and dropping the last
 * registered one would delete the strategy in the meantime. */
static const char *hold_back_after(struct applier *a, const struct bootstrap_revision *rev)
{
    if (rev->new_strategy && strategy_missing(a->cat, rev->name)) {
        fprintf(stderr,
                "stratd bootstrap: the other revisions of the new strategy '%s' are left for a "
                "rerun\n",
                rev->name);
        return rev->name;
    }
    return NULL;
}

/* Phase one, inside the batch. done[i] says which registry steps worked;
 * steps of a held-back strategy stay undone, and so do the drops of a
 * strategy one of whose adds failed. */
static void apply_registry_steps(struct applier *a, bool *done)
{
    const char *held_back = NULL, *add_failed = NULL;
    for (size_t i = 0; i < a->plan->nsteps; i++) {
        const struct bootstrap_step *step = &a->plan->steps[i];
        if (!registry_step(step->kind))
            continue;
        const struct bootstrap_revision *rev = &a->plan->revisions[step->revision];
        if ((held_back && strcmp(rev->name, held_back) == 0) ||
            (step->kind == BOOTSTRAP_STEP_DROP && add_failed && strcmp(rev->name, add_failed) == 0))
            continue;
        struct err e = ERR_INIT;
        done[i] = apply_registry_step(a, step, &e) == 0;
        if (!done[i]) {
            step_failed(a, step, &e);
            if (step->kind == BOOTSTRAP_STEP_ADD) {
                add_failed = rev->name;
                held_back = hold_back_after(a, rev);
            }
        }
        err_clear(&e);
    }
}

/* Phase two, after the write: the removals, in plan order. They hold the
 * registry lock, so that no writer (a running server) is between creating
 * a folder and writing into it when an empty-looking folder goes. */
static void apply_file_steps(struct applier *a, const bool *done)
{
    char *lock_path = fsutil_join(a->root, REGISTRY_LOCK_FILE);
    struct fsutil_lock lock = FSUTIL_LOCK_INIT;
    struct err lock_err = ERR_INIT;
    if (!lock_path || fsutil_lock_acquire(lock_path, &lock, &lock_err) != 0) {
        fprintf(stderr, "stratd bootstrap: old copies and empty folders are left for a rerun: %s\n",
                lock_path ? lock_err.message : "out of memory");
        err_clear(&lock_err);
        free(lock_path);
        return;
    }
    for (size_t i = 0; i < a->plan->nsteps; i++) {
        const struct bootstrap_step *step = &a->plan->steps[i];
        bool is_registry = registry_step(step->kind);
        if ((is_registry && step->kind != BOOTSTRAP_STEP_ADD) || (is_registry && !done[i]))
            continue;
        struct err e = ERR_INIT;
        if (apply_file_step(a, step, &e) != 0)
            step_failed(a, step, &e);
        err_clear(&e);
    }
    fsutil_lock_release(&lock);
    free(lock_path);
}

/* The registry changes of the whole run land in one registry.json write
 * (a catalogue batch); files are removed only after it, so a crash before
 * it leaves the old registry and every old copy, which a rerun completes
 * (bootstrap_order.c). */
int bootstrap_apply(struct catalog *cat, const char *root, struct bootstrap_plan *plan,
                    const struct bootstrap_scan *scan, struct bootstrap_outcome *out,
                    struct err *err)
{
    memset(out, 0, sizeof *out);
    out->errors = json_array();
    bool *done = calloc(plan->nsteps + 1, sizeof *done);
    if (!out->errors || !done) {
        free(done);
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    struct applier a = {cat, root, plan, scan, out};
    if (catalog_batch_begin(cat, err) != 0) {
        free(done);
        return -1;
    }
    apply_registry_steps(&a, done);
    if (catalog_batch_end(cat, err) != 0) {
        free(done);
        return -1;
    }
    apply_file_steps(&a, done);
    free(done);
    return 0;
}

void bootstrap_outcome_free(struct bootstrap_outcome *out)
{
    json_decref(out->errors);
    memset(out, 0, sizeof *out);
}
