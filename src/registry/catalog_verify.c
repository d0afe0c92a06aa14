/*
 * Verification of revision files: every file a snapshot names is hashed
 * again when the catalogue is loaded or reloaded, because a hand edit, a
 * restore from backup or a bad disk can change bytes under a name that
 * promises them.
 *
 * With thousands of revisions this is the cost of a reload, so it runs on a
 * small pool (the calling thread plus helpers) and reuses what the previous
 * snapshot learned: a revision that verified before and still hashes the
 * same keeps its metadata, and the metadata callback (a validator run) is
 * only made for bytes the catalogue has not seen valid.
 */
#include "registry/registry_internal.h"

#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define VERIFY_HELPERS 1       /* threads besides the caller */
#define VERIFY_MIN_PARALLEL 64 /* below this a thread costs more than it saves */

struct verify_job {
    const char *name;
    struct registry_revision *rev;        /* in the snapshot being built */
    const struct registry_revision *prev; /* same name and hash before, or NULL */
    bool oom;
};

struct verify_run {
    const struct catalog *cat;
    struct verify_job *jobs;
    size_t njobs;
    atomic_size_t next;
};

/* ----------------------------------------------- the previous snapshot */

struct prev_ref {
    const char *name;
    const struct registry_revision *rev;
};

static int compare_refs(const void *a, const void *b)
{
    const struct prev_ref *x = a, *y = b;
    int cmp = strcmp(x->rev->hex, y->rev->hex);
    return cmp ? cmp : strcmp(x->name, y->name);
}

/* Every revision of prev, sorted by (hash, strategy) for bsearch. */
static struct prev_ref *index_prev(const struct registry *prev, size_t *count)
{
    size_t n = 0;
    for (size_t s = 0; prev && s < prev->nstrategies; s++)
        n += prev->strategies[s]->nrevisions;
    struct prev_ref *refs = malloc((n ? n : 1) * sizeof *refs);
    if (!refs)
        return NULL;
    n = 0;
    for (size_t s = 0; prev && s < prev->nstrategies; s++) {
        const struct registry_strategy *st = prev->strategies[s];
        for (size_t r = 0; r < st->nrevisions; r++)
            refs[n++] = (struct prev_ref){st->name, &st->revisions[r]};
    }
    qsort(refs, n, sizeof *refs, compare_refs);
    *count = n;
    return refs;
}

static const struct registry_revision *find_prev(const struct prev_ref *refs, size_t n,
                                                 const char *name,
                                                 const struct registry_revision *rev)
{
    struct prev_ref key = {name, rev};
    const struct prev_ref *hit = bsearch(&key, refs, n, sizeof *refs, compare_refs);
    return hit ? hit->rev : NULL;
}

/* ------------------------------------------------------------ one file */

static void mark_invalid(struct verify_job *job, char *reason)
{
    job->rev->invalid = true;
    job->rev->invalid_reason = reason;
    job->oom = reason == NULL;
}

static void file_failed(struct verify_job *job, const struct err *e)
{
    char rel[REGISTRY__REL_PATH_MAX];
    registry__rel_path(job->name, job->rev->hex, rel);
    if (e->kind == ERR_NOT_FOUND)
        mark_invalid(job, fsutil_format("the file %s is missing", rel));
    else
        mark_invalid(job, fsutil_format("the file %s cannot be read: %s", rel, e->message));
}

/* True when the bytes hash to the revision's name; marks it invalid if not. */
static bool check_hash(struct verify_job *job, const char *actual)
{
    if (strcmp(actual, job->rev->hex) == 0)
        return true;
    mark_invalid(
        job, fsutil_format("the file's bytes hash to " HASH_PREFIX "%s, not to its name", actual));
    return false;
}

static void hash_only(struct verify_job *job, const char *path, bool reuse)
{
    char actual[HASH_HEX_LEN + 1];
    uint64_t size = 0;
    struct err e = ERR_INIT;
    if (hash_file_sha256(path, actual, &size, &e) != 0) {
        file_failed(job, &e);
        err_clear(&e);
        return;
    }
    job->rev->size = size;
    if (check_hash(job, actual) && reuse)
        job->rev->metadata = json_incref(job->prev->metadata);
}

static void read_and_describe(const struct catalog *cat, struct verify_job *job, const char *path)
{
    char *data = NULL;
    size_t len = 0;
    struct err e = ERR_INIT;
    if (fsutil_read_file(path, REGISTRY__SOURCE_MAX, &data, &len, &e) != 0) {
        file_failed(job, &e);
        err_clear(&e);
        return;
    }
    char actual[HASH_HEX_LEN + 1];
    hash_sha256_hex(data, len, actual);
    job->rev->size = len;
    if (check_hash(job, actual)) {
        char *reason = NULL;
        job->rev->metadata =
            cat->metadata(cat->metadata_ctx, job->name, job->rev->hex, data, len, &reason);
        if (!job->rev->metadata)
            mark_invalid(job, reason ? reason : strdup("the module does not validate"));
        else
            free(reason);
    }
    free(data);
}

static void verify_one(const struct catalog *cat, struct verify_job *job)
{
    char *path = catalog__file_path(cat, job->name, job->rev->hex);
    if (!path) {
        job->oom = true;
        return;
    }
    /* Metadata learned from these very bytes is still right; a revision
     * that was invalid before gets a fresh look. */
    bool reuse = job->prev && !job->prev->invalid && (job->prev->metadata || !cat->metadata);
    if (reuse || !cat->metadata)
        hash_only(job, path, reuse);
    else
        read_and_describe(cat, job, path);
    free(path);
}

static void *verify_worker(void *arg)
{
    struct verify_run *run = arg;
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&run->next, 1, memory_order_relaxed);
        if (i >= run->njobs)
            return NULL;
        verify_one(run->cat, &run->jobs[i]);
    }
}

static void run_jobs(struct verify_run *run)
{
    pthread_t helpers[VERIFY_HELPERS];
    size_t started = 0;
    if (run->njobs >= VERIFY_MIN_PARALLEL) {
        /* A helper that cannot start only makes the run slower. */
        while (started < VERIFY_HELPERS &&
               pthread_create(&helpers[started], NULL, verify_worker, run) == 0)
            started++;
    }
    verify_worker(run);
    for (size_t i = 0; i < started; i++)
        pthread_join(helpers[i], NULL);
}

/* ----------------------------------------------------------- reporting */

static void log_invalid(const char *name, const struct registry_revision *rev)
{
    json_t *fields = json_object();
    json_object_set_new(fields, "strategy", json_string(name));
    json_object_set_new(fields, "hash", json_sprintf(HASH_PREFIX "%s", rev->hex));
    json_object_set_new(fields, "reason", json_string(rev->invalid_reason));
    log_json(LOG_LEVEL_WARN, REGISTRY__COMPONENT, "revision is invalid and will not be served",
             fields);
}

/* Logs the revisions that are invalid now and were not (for the same
 * reason) before, so a reload does not repeat known problems. */
static void report(const struct registry *fresh, const struct prev_ref *refs, size_t nrefs)
{
    for (size_t s = 0; s < fresh->nstrategies; s++) {
        const struct registry_strategy *st = fresh->strategies[s];
        for (size_t r = 0; r < st->nrevisions; r++) {
            const struct registry_revision *rev = &st->revisions[r];
            if (!rev->invalid)
                continue;
            const struct registry_revision *prev = find_prev(refs, nrefs, st->name, rev);
            if (!prev || !prev->invalid || !prev->invalid_reason ||
                strcmp(prev->invalid_reason, rev->invalid_reason) != 0)
                log_invalid(st->name, rev);
        }
    }
}

/* --------------------------------------------------------------- entry */

static size_t count_checkable(const struct registry *fresh)
{
    size_t n = 0;
    for (size_t s = 0; s < fresh->nstrategies; s++) {
        const struct registry_strategy *st = fresh->strategies[s];
        for (size_t r = 0; r < st->nrevisions; r++)
            n += !st->revisions[r].invalid;
    }
    return n;
}

static void plan_jobs(struct verify_run *run, struct registry *fresh, const struct prev_ref *refs,
                      size_t nrefs)
{
    for (size_t s = 0; s < fresh->nstrategies; s++) {
        struct registry_strategy *st = fresh->strategies[s];
        for (size_t r = 0; r < st->nrevisions; r++) {
            struct registry_revision *rev = &st->revisions[r];
            /* Revisions already fenced off (a path that is not canonical)
             * are never opened. */
            if (rev->invalid)
                continue;
            run->jobs[run->njobs++] =
                (struct verify_job){st->name, rev, find_prev(refs, nrefs, st->name, rev), false};
        }
    }
}

int catalog__verify(const struct catalog *cat, struct registry *fresh, const struct registry *prev,
                    struct err *err)
{
    size_t nrefs = 0;
    struct prev_ref *refs = index_prev(prev, &nrefs);
    size_t n = count_checkable(fresh);
    struct verify_run run = {.cat = cat, .jobs = malloc((n ? n : 1) * sizeof *run.jobs)};
    if (!refs || !run.jobs) {
        free(refs);
        free(run.jobs);
        err_set(err, ERR_INTERNAL, "out of memory verifying revisions");
        return -1;
    }
    atomic_init(&run.next, 0);
    plan_jobs(&run, fresh, refs, nrefs);
    run_jobs(&run);
    int rc = 0;
    for (size_t i = 0; i < run.njobs; i++) {
        if (run.jobs[i].oom)
            rc = -1;
    }
    if (rc == 0)
        report(fresh, refs, nrefs);
    else
        err_set(err, ERR_INTERNAL, "out of memory verifying revisions");
    free(refs);
    free(run.jobs);
    return rc;
}
