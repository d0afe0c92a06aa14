/*
 * The plan, part two: `latest`, and the order of the steps.
 *
 * `latest`. A strategy already in the registry keeps its `latest`: the
 * operator may have placed it on purpose, and bootstrap is not a deploy
 * tool. Only when the revision it names is gone (DROP) is it recomputed, the
 * way it is for a strategy bootstrap creates: the highest semantic version
 * among the tags each revision carries (tags that are not versions rank
 * below all versions), then the newest file, then the hash so the answer is
 * always the same.
 *
 * Order, per strategy, and why a crash anywhere is completed by a rerun:
 *
 *   1. ADD each revision. The catalogue writes the file before the registry
 *      entry that names it; bootstrap then re-reads and re-hashes the new
 *      file, and only then removes the old copies, then emptied folders.
 *        crash before the registry write: the new file is an unregistered
 *          current-layout copy, the old copy is still there; the rerun sees
 *          one revision with two copies and registers it (same tags, since
 *          the tags come from the old copy, which is still there).
 *        crash before the old copy is removed: the rerun sees a registered
 *          revision in place plus a copy, and removes the copy (DEDUPE).
 *        crash before the rmdir: the rerun removes the empty folder.
 *      For a new strategy the revision that should be `latest` is added
 *      first: the catalogue points `latest` at a new strategy's first
 *      revision, and from then on the strategy is "already registered", so
 *      a rerun keeps that `latest` - the right one. Later revisions follow in
 *      ascending rank, which a rerun reproduces for whatever remains.
 *   2. LATEST, only for a registered strategy whose `latest` is gone: after
 *      the adds (the winner may be one of them) and before the drops (a
 *      rerun that still sees the gone revision recomputes the same winner).
 *   3. DROP registry entries whose bytes are nowhere.
 *   4. DEDUPE extra copies of revisions already in place; then, for the
 *      whole tree, STALE temporary files of writers that died (a kill
 *      inside the catalogue's atomic write leaves one next to the file it
 *      was writing) and RMDIR folders an interrupted run left empty.
 */
#include "cmd/bootstrap.h"

#include "core/fsutil.h"

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int oom(struct err *err)
{
    err_set(err, ERR_INTERNAL, "out of memory planning the migration");
    return -1;
}

static int push_step(struct bootstrap_plan *plan, enum bootstrap_step_kind kind, size_t revision,
                     const char *path)
{
    if (plan->nsteps == plan->step_cap) {
        size_t cap = plan->step_cap ? plan->step_cap * 2 : 32;
        struct bootstrap_step *steps = realloc(plan->steps, cap * sizeof *steps);
        if (!steps)
            return -1;
        plan->steps = steps;
        plan->step_cap = cap;
    }
    plan->steps[plan->nsteps++] = (struct bootstrap_step){kind, revision, path};
    return 0;
}

/* ------------------------------------------------------------- rank */

static void consider(const char **best, const char *tag)
{
    if (!tag || strcmp(tag, REGISTRY_LATEST) == 0)
        return;
    if (!*best || bootstrap_semver_compare(tag, *best) > 0)
        *best = tag;
}

/* The highest tag a revision will carry: the registry's own for registered
 * revisions, the planned ones for new revisions. */
static void find_version(struct bootstrap_revision *rev, const struct registry_strategy *st)
{
    const char *best = NULL;
    for (size_t i = 0; st && i < st->ntags; i++) {
        if (strcmp(st->tags[i].hex, rev->hex) == 0)
            consider(&best, st->tags[i].tag);
    }
    if (rev->fate == BOOTSTRAP_ADD) {
        consider(&best, rev->tag);
        for (size_t i = 0; i < rev->naliases; i++)
            consider(&best, rev->aliases[i]);
    }
    rev->version = best;
}

static int compare_rank(const struct bootstrap_revision *x, const struct bootstrap_revision *y)
{
    int cmp = bootstrap_semver_compare(x->version, y->version);
    if (cmp != 0)
        return cmp;
    if (x->mtime_ns != y->mtime_ns)
        return x->mtime_ns < y->mtime_ns ? -1 : 1;
    return strcmp(x->hex, y->hex);
}

static int compare_rank_refs(const void *a, const void *b)
{
    return compare_rank(*(struct bootstrap_revision *const *)a,
                        *(struct bootstrap_revision *const *)b);
}

/* Revisions `latest` may point at once the plan is done. */
static bool can_be_latest(const struct bootstrap_revision *rev)
{
    return rev->fate == BOOTSTRAP_ADD ||
           (rev->fate == BOOTSTRAP_KEEP && rev->registered && !rev->registered->invalid);
}

/* -------------------------------------------------------- strategies */

struct range {
    struct bootstrap_plan *plan;
    const struct registry_strategy *st; /* NULL for a new strategy */
    size_t lo, hi;
};

/* NULL when `latest` stays where it is (or there is nothing to point at). */
static struct bootstrap_revision *latest_winner(const struct range *r)
{
    const char *current = r->st ? registry_tag_target(r->st, REGISTRY_LATEST) : NULL;
    const struct bootstrap_revision *held =
        current ? bootstrap_plan_find(r->plan, r->st->name, current) : NULL;
    if (held && held->fate != BOOTSTRAP_DROP)
        return NULL;
    struct bootstrap_revision *winner = NULL;
    for (size_t i = r->lo; i < r->hi; i++) {
        struct bootstrap_revision *rev = &r->plan->revisions[i];
        if (can_be_latest(rev) && (!winner || compare_rank(rev, winner) > 0))
            winner = rev;
    }
    return winner;
}

static int push_adds(const struct range *r, const struct bootstrap_revision *winner)
{
    struct bootstrap_plan *plan = r->plan;
    struct bootstrap_revision **adds = calloc(r->hi - r->lo + 1, sizeof *adds);
    if (!adds)
        return -1;
    size_t n = 0;
    for (size_t i = r->lo; i < r->hi; i++) {
        if (plan->revisions[i].fate == BOOTSTRAP_ADD)
            adds[n++] = &plan->revisions[i];
    }
    qsort(adds, n, sizeof *adds, compare_rank_refs);
    int rc = 0;
    if (!r->st && winner)
        rc = push_step(plan, BOOTSTRAP_STEP_ADD, (size_t)(winner - plan->revisions), NULL);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (r->st || adds[i] != winner)
            rc = push_step(plan, BOOTSTRAP_STEP_ADD, (size_t)(adds[i] - plan->revisions), NULL);
    }
    free(adds);
    return rc;
}

/* True when some file (not just empty folders) lies below path. */
static bool holds_files(const char *path, int depth)
{
    DIR *dir = opendir(path);
    if (!dir)
        return false;
    bool found = false;
    struct dirent *entry;
    while (!found && (entry = readdir(dir)) != NULL) {
        if (strcmp(entry->d_name, ".") == 0 || strcmp(entry->d_name, "..") == 0)
            continue;
        char *child = fsutil_join(path, entry->d_name);
        struct stat st;
        if (!child || lstat(child, &st) != 0 || !S_ISDIR(st.st_mode) || depth > 8)
            found = true; /* in doubt, it holds something */
        else
            found = holds_files(child, depth + 1);
        free(child);
    }
    closedir(dir);
    return found;
}

static bool remains(const struct bootstrap_revision *rev)
{
    return rev->fate == BOOTSTRAP_KEEP || rev->fate == BOOTSTRAP_ADD ||
           (rev->fate == BOOTSTRAP_CONFLICT && rev->registered);
}

/* Dropping a strategy's last revision deletes the strategy, and the
 * catalogue then removes its whole folder. Files bootstrap leaves alone
 * (invalid modules, conflicts, anything else) may live there, so in that
 * case the entries stay and the operator is told why. */
static int guard_last_drop(const struct range *r)
{
    struct bootstrap_plan *plan = r->plan;
    for (size_t i = r->lo; i < r->hi; i++) {
        if (remains(&plan->revisions[i]))
            return 0;
    }
    char *folder = fsutil_join(plan->root, plan->revisions[r->lo].name);
    if (!folder)
        return -1;
    bool unsafe = holds_files(folder, 0);
    free(folder);
    for (size_t i = r->lo; unsafe && i < r->hi; i++) {
        struct bootstrap_revision *rev = &plan->revisions[i];
        if (rev->fate != BOOTSTRAP_DROP)
            continue;
        rev->fate = BOOTSTRAP_KEEP;
        if (bootstrap_plan_note(plan, rev->registered->path,
                                "registry entry of %s@" HASH_PREFIX "%.12s... kept although its "
                                "file is missing: removing the strategy's last revision would "
                                "delete the folder %s/, which holds other files",
                                rev->name, rev->hex, rev->name) != 0)
            return -1;
    }
    return 0;
}

static int push_kind(const struct range *r, enum bootstrap_fate fate, enum bootstrap_step_kind kind,
                     const struct bootstrap_scan *scan)
{
    for (size_t i = r->lo; i < r->hi; i++) {
        const struct bootstrap_revision *rev = &r->plan->revisions[i];
        if (rev->fate != fate)
            continue;
        bool legacy = false;
        for (size_t c = 0; c < rev->ncopies; c++)
            legacy = legacy || bootstrap_file_is_legacy(&scan->files[rev->copies[c]]);
        if (kind == BOOTSTRAP_STEP_DEDUPE && !legacy)
            continue;
        if (push_step(r->plan, kind, i, NULL) != 0)
            return -1;
    }
    return 0;
}

static int order_strategy(const struct range *r, const struct bootstrap_scan *scan)
{
    for (size_t i = r->lo; i < r->hi; i++)
        find_version(&r->plan->revisions[i], r->st);
    struct bootstrap_revision *winner = latest_winner(r);
    if (push_adds(r, winner) != 0)
        return -1;
    if (r->st && winner &&
        push_step(r->plan, BOOTSTRAP_STEP_LATEST, (size_t)(winner - r->plan->revisions), NULL))
        return -1;
    if (guard_last_drop(r) != 0 || push_kind(r, BOOTSTRAP_DROP, BOOTSTRAP_STEP_DROP, scan) != 0)
        return -1;
    return push_kind(r, BOOTSTRAP_KEEP, BOOTSTRAP_STEP_DEDUPE, scan);
}

int bootstrap_plan_order(struct bootstrap_plan *plan, const struct registry *snapshot,
                         const struct bootstrap_scan *scan, struct err *err)
{
    for (size_t lo = 0; lo < plan->nrevisions;) {
        size_t hi = lo + 1;
        while (hi < plan->nrevisions &&
               strcmp(plan->revisions[hi].name, plan->revisions[lo].name) == 0)
            hi++;
        struct range r = {plan, registry_find_strategy(snapshot, plan->revisions[lo].name), lo, hi};
        if (order_strategy(&r, scan) != 0)
            return oom(err);
        lo = hi;
    }
    for (size_t i = 0; i < scan->stale.n; i++) {
        if (push_step(plan, BOOTSTRAP_STEP_STALE, 0, scan->stale.items[i]) != 0)
            return oom(err);
    }
    for (size_t i = 0; i < scan->empty.n; i++) {
        if (push_step(plan, BOOTSTRAP_STEP_RMDIR, 0, scan->empty.items[i]) != 0)
            return oom(err);
    }
    return 0;
}
