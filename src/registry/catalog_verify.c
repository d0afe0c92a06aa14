/*
 * Verification of revision files: every file a snapshot names is hashed
 * again when the catalogue is loaded or reloaded, because a hand edit, a
 * restore from backup or a bad disk can change bytes under a name that
 * promises them.
 *
 * With thousands of revisions this is the cost of a reload, so it runs on a
 * small pool (the calling thread plus helpers), opens files relative to the
 * root and reads each in one call. Every file is read and hashed: no
 * timestamp can vouch for bytes a bad disk or a restore changed. It reuses
 * what the previous snapshot learned: a revision that verified before and still hashes the
 * same keeps its metadata, and the metadata callback (a validator run) is
 * only made for bytes the catalogue has not judged yet.
 *
 * Each job computes a verdict (validity, reason, size, metadata) without
 * touching any snapshot; the verdicts are then applied to a snapshot being
 * built (catalog__verify) or compared with the published one
 * (catalog__reverify), which copies only the strategies whose files changed.
 */
#include "registry/registry_internal.h"

#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define VERIFY_HELPERS 1       /* threads besides the caller */
#define VERIFY_MIN_PARALLEL 64 /* below this a thread costs more than it saves */

/* Reasons this file writes start with FILE_PROBLEM; those written by the
 * loader start with PATH_PROBLEM. Any other reason came from the metadata
 * callback: the bytes were verified and the module was refused. */
#define FILE_PROBLEM "the file "
#define PATH_PROBLEM "registry.json gives "

struct verify_job {
    const char *name;
    const char *hex;
    const struct registry_revision *prev; /* same name and hash before, or NULL */
    size_t strategy, revision;            /* where the verdict goes */
    /* the verdict */
    bool invalid;
    char *reason;
    uint64_t size;
    json_t *metadata;
    bool oom;
};

struct verify_run {
    const struct catalog *cat;
    int root_fd; /* the root, so that opens walk two components; -1: use paths */
    struct verify_job *jobs;
    size_t njobs;
    atomic_size_t next;
};

/* ------------------------------------------------------------ one file */

static bool starts_with(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool refused_by_module(const struct registry_revision *rev)
{
    return rev->invalid && rev->invalid_reason && !starts_with(rev->invalid_reason, FILE_PROBLEM) &&
           !starts_with(rev->invalid_reason, PATH_PROBLEM);
}

static void mark_invalid(struct verify_job *job, char *reason)
{
    job->invalid = true;
    job->reason = reason;
    job->oom = reason == NULL;
}

static void file_failed(struct verify_job *job, const struct err *e)
{
    char rel[REGISTRY__REL_PATH_MAX];
    registry__rel_path(job->name, job->hex, rel);
    if (e->kind == ERR_NOT_FOUND)
        mark_invalid(job, fsutil_format(FILE_PROBLEM "%s is missing", rel));
    else
        mark_invalid(job, fsutil_format(FILE_PROBLEM "%s cannot be read: %s", rel, e->message));
}

/* True when the bytes hash to the revision's name; marks it invalid if not. */
static bool check_hash(struct verify_job *job, const char *actual)
{
    if (strcmp(actual, job->hex) == 0)
        return true;
    char rel[REGISTRY__REL_PATH_MAX];
    registry__rel_path(job->name, job->hex, rel);
    mark_invalid(job, fsutil_format(FILE_PROBLEM "%s hashes to " HASH_PREFIX "%s, not to its name",
                                    rel, actual));
    return false;
}

/* The previous verdict on these exact bytes still holds: the metadata of a
 * valid revision, or the module's refusal of an invalid one. */
static void carry_over(struct verify_job *job)
{
    if (!job->prev->invalid) {
        job->metadata = json_incref(job->prev->metadata);
        return;
    }
    mark_invalid(job, strdup(job->prev->invalid_reason));
}

/* Opens the revision file relative to the root (or by its full path when
 * the root could not be opened) and reads it whole. *id is taken before
 * reading, so it never describes newer bytes than the ones returned. Never
 * blocking: a FIFO in a revision's place (or a link to one) would hold the
 * open until a writer came, and with it the start or a refresh; it is
 * refused as not a regular file instead. */
static int open_revision(const struct verify_run *run, const struct verify_job *job,
                         const char *rel)
{
    if (run->root_fd >= 0)
        return openat(run->root_fd, rel, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    char *path = catalog__file_path(run->cat, job->name, job->hex);
    if (!path) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    free(path);
    return fd;
}

static int read_all(int fd, char *buf, size_t cap, size_t *got)
{
    *got = 0;
    for (;;) {
        /* one byte of room past the size seen: a file that grew is noticed */
        ssize_t n = read(fd, buf + *got, cap + 1 - *got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (n == 0 || (*got += (size_t)n) > cap)
            return 0;
    }
}

static int read_revision(const struct verify_run *run, const struct verify_job *job, char **data,
                         size_t *len, struct err *err)
{
    char rel[REGISTRY__REL_PATH_MAX];
    registry__rel_path(job->name, job->hex, rel);
    int fd = open_revision(run, job, rel);
    if (fd < 0) {
        err_set_errno(err, errno == ENOENT ? ERR_NOT_FOUND : ERR_INTERNAL, errno, "cannot open %s",
                      rel);
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size > REGISTRY__SOURCE_MAX) {
        err_set(err, ERR_INTERNAL, "%s is not a regular file of at most %zu bytes", rel,
                REGISTRY__SOURCE_MAX);
        close(fd);
        return -1;
    }
    size_t cap = (size_t)st.st_size, got = 0;
    char *buf = malloc(cap + 1);
    int rc = buf ? read_all(fd, buf, cap, &got) : -1;
    if (rc != 0)
        err_set_errno(err, ERR_INTERNAL, buf ? errno : ENOMEM, "cannot read %s", rel);
    else if (got > cap)
        err_set(err, ERR_INTERNAL, "%s grew while it was read", rel);
    close(fd);
    if (rc != 0 || got > cap) {
        free(buf);
        return -1;
    }
    buf[got] = '\0';
    *data = buf;
    *len = got;
    return 0;
}

/* Reads and hashes the file; NULL (and the job marked) when it does not match. */
static char *read_checked(const struct verify_run *run, struct verify_job *job, size_t *len)
{
    char *data = NULL;
    struct err e = ERR_INIT;
    if (read_revision(run, job, &data, len, &e) != 0) {
        file_failed(job, &e);
        err_clear(&e);
        return NULL;
    }
    char actual[HASH_HEX_LEN + 1];
    hash_sha256_hex(data, *len, actual);
    job->size = *len;
    if (!check_hash(job, actual)) {
        free(data);
        return NULL;
    }
    return data;
}

static void hash_only(const struct verify_run *run, struct verify_job *job, bool reuse)
{
    size_t len = 0;
    char *data = read_checked(run, job, &len);
    if (data && reuse)
        carry_over(job);
    free(data);
}

static void read_and_describe(const struct verify_run *run, struct verify_job *job)
{
    size_t len = 0;
    char *data = read_checked(run, job, &len);
    if (!data)
        return;
    const struct catalog *cat = run->cat;
    char *reason = NULL;
    job->metadata = cat->metadata(cat->metadata_ctx, job->name, job->hex, data, len, &reason);
    if (!job->metadata)
        mark_invalid(job, reason ? reason : strdup("the module does not validate"));
    else
        free(reason);
    free(data);
}

static bool can_reuse(const struct catalog *cat, const struct registry_revision *prev)
{
    if (!prev)
        return false;
    if (!cat->metadata)
        return !prev->invalid;
    return prev->invalid ? refused_by_module(prev) : prev->metadata != NULL;
}

static void verify_one(const struct verify_run *run, struct verify_job *job)
{
    bool reuse = can_reuse(run->cat, job->prev);
    if (reuse || !run->cat->metadata)
        hash_only(run, job, reuse);
    else
        read_and_describe(run, job);
}

static void *verify_worker(void *arg)
{
    struct verify_run *run = arg;
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&run->next, 1, memory_order_relaxed);
        if (i >= run->njobs)
            return NULL;
        verify_one(run, &run->jobs[i]);
    }
}

static void run_jobs(struct verify_run *run)
{
    pthread_t helpers[VERIFY_HELPERS];
    size_t started = 0;
    atomic_init(&run->next, 0);
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

/* ------------------------------------------------------------ verdicts */

static void job_discard(struct verify_job *job)
{
    free(job->reason);
    json_decref(job->metadata);
    job->reason = NULL;
    job->metadata = NULL;
}

/* Moves the verdict into rev, replacing what rev said before. */
static void job_apply(struct verify_job *job, struct registry_revision *rev)
{
    free(rev->invalid_reason);
    json_decref(rev->metadata);
    rev->invalid = job->invalid;
    rev->invalid_reason = job->reason;
    rev->size = job->size;
    rev->metadata = job->metadata;
    job->reason = NULL;
    job->metadata = NULL;
}

static bool same_reason(const char *a, const char *b)
{
    return a && b ? strcmp(a, b) == 0 : a == b;
}

static bool job_matches(const struct verify_job *job, const struct registry_revision *rev)
{
    return job->invalid == rev->invalid && same_reason(job->reason, rev->invalid_reason) &&
           job->size == rev->size && job->metadata == rev->metadata;
}

static void log_invalid(const char *name, const char *hex, const char *reason)
{
    json_t *fields = json_object();
    json_object_set_new(fields, "strategy", json_string(name));
    json_object_set_new(fields, "hash", json_sprintf(HASH_PREFIX "%s", hex));
    json_object_set_new(fields, "reason", json_string(reason));
    log_json(LOG_LEVEL_WARN, REGISTRY__COMPONENT, "revision is invalid and will not be served",
             fields);
}

/* Logs a revision that is invalid now and was not (for the same reason)
 * before, so a reload does not repeat known problems. */
static void log_if_new(const char *name, const char *hex, bool invalid, const char *reason,
                       const struct registry_revision *prev)
{
    if (invalid && (!prev || !prev->invalid || !same_reason(prev->invalid_reason, reason)))
        log_invalid(name, hex, reason);
}

static int finish_run(struct verify_run *run, struct err *err)
{
    for (size_t i = 0; i < run->njobs; i++) {
        if (run->jobs[i].oom) {
            for (size_t j = 0; j < run->njobs; j++)
                job_discard(&run->jobs[j]);
            err_set(err, ERR_INTERNAL, "out of memory verifying revisions");
            return -1;
        }
    }
    for (size_t i = 0; i < run->njobs; i++) {
        const struct verify_job *job = &run->jobs[i];
        log_if_new(job->name, job->hex, job->invalid, job->reason, job->prev);
    }
    return 0;
}

static size_t count_revisions(const struct registry *reg)
{
    size_t n = 0;
    for (size_t s = 0; reg && s < reg->nstrategies; s++)
        n += reg->strategies[s]->nrevisions;
    return n;
}

static int start_run(struct verify_run *run, const struct catalog *cat, size_t capacity,
                     struct err *err)
{
    run->cat = cat;
    run->njobs = 0;
    run->jobs = calloc(capacity ? capacity : 1, sizeof *run->jobs);
    if (!run->jobs) {
        err_set(err, ERR_INTERNAL, "out of memory verifying revisions");
        return -1;
    }
    run->root_fd = open(cat->root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    return 0;
}

static void end_run(struct verify_run *run)
{
    free(run->jobs);
    if (run->root_fd >= 0)
        close(run->root_fd);
}

static void add_job(struct verify_run *run, const struct registry_strategy *st, size_t s, size_t r,
                    const struct registry_revision *prev)
{
    struct verify_job *job = &run->jobs[run->njobs++];
    job->name = st->name;
    job->hex = st->revisions[r].hex;
    job->prev = prev;
    job->strategy = s;
    job->revision = r;
}

/* ------------------------------------- a snapshot built from new bytes */

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
    struct prev_ref *refs = malloc((count_revisions(prev) + 1) * sizeof *refs);
    if (!refs)
        return NULL;
    size_t n = 0;
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

int catalog__verify(const struct catalog *cat, struct registry *fresh, const struct registry *prev,
                    struct err *err)
{
    size_t nrefs = 0;
    struct prev_ref *refs = index_prev(prev, &nrefs);
    struct verify_run run;
    if (!refs || start_run(&run, cat, count_revisions(fresh), err) != 0) {
        free(refs);
        err_set(err, ERR_INTERNAL, "out of memory verifying revisions");
        return -1;
    }
    for (size_t s = 0; s < fresh->nstrategies; s++) {
        const struct registry_strategy *st = fresh->strategies[s];
        for (size_t r = 0; r < st->nrevisions; r++) {
            const struct registry_revision *rev = &st->revisions[r];
            const struct registry_revision *before = find_prev(refs, nrefs, st->name, rev);
            /* Revisions the loader fenced off (a path that is not the
             * canonical one) are never opened. */
            if (rev->invalid)
                log_if_new(st->name, rev->hex, true, rev->invalid_reason, before);
            else
                add_job(&run, st, s, r, before);
        }
    }
    run_jobs(&run);
    int rc = finish_run(&run, err);
    for (size_t i = 0; rc == 0 && i < run.njobs; i++) {
        struct verify_job *job = &run.jobs[i];
        job_apply(job, &fresh->strategies[job->strategy]->revisions[job->revision]);
    }
    end_run(&run);
    free(refs);
    return rc;
}

/* ------------------------------- the published snapshot, files re-read */

static bool canonical_path(const struct registry_strategy *st, const struct registry_revision *rev)
{
    char rel[REGISTRY__REL_PATH_MAX];
    registry__rel_path(st->name, rev->hex, rel);
    return strcmp(rev->path, rel) == 0;
}

/* A copy of current's strategy s with the verdicts of jobs[first..end). */
static struct registry_strategy *apply_to_copy(const struct registry *current, size_t s,
                                               struct verify_job *jobs, size_t first, size_t end)
{
    struct registry_strategy *copy = registry__strategy_copy(current->strategies[s]);
    for (size_t i = first; copy && i < end; i++)
        job_apply(&jobs[i], &copy->revisions[jobs[i].revision]);
    return copy;
}

/* Builds the snapshot that differs from current only by the verdicts that
 * changed; NULL in *out when none did. */
static int collect_changes(const struct registry *current, struct verify_run *run,
                           struct registry **out, struct err *err)
{
    struct registry *next = NULL;
    size_t i = 0;
    for (size_t s = 0; s < current->nstrategies; s++) {
        size_t first = i;
        bool changed = false;
        for (; i < run->njobs && run->jobs[i].strategy == s; i++) {
            const struct registry_strategy *st = current->strategies[s];
            changed |= !job_matches(&run->jobs[i], &st->revisions[run->jobs[i].revision]);
        }
        if (!changed)
            continue;
        struct registry_strategy *copy = apply_to_copy(current, s, run->jobs, first, i);
        struct registry *with =
            copy ? registry__with(next ? next : current, current->strategies[s]->name, copy) : NULL;
        registry_release(next);
        next = with;
        if (!next) {
            err_set(err, ERR_INTERNAL, "out of memory verifying revisions");
            return -1;
        }
    }
    *out = next;
    return 0;
}

int catalog__reverify(const struct catalog *cat, const struct registry *current,
                      struct registry **out, struct err *err)
{
    *out = NULL;
    struct verify_run run;
    if (start_run(&run, cat, count_revisions(current), err) != 0)
        return -1;
    for (size_t s = 0; s < current->nstrategies; s++) {
        const struct registry_strategy *st = current->strategies[s];
        for (size_t r = 0; r < st->nrevisions; r++) {
            if (canonical_path(st, &st->revisions[r]))
                add_job(&run, st, s, r, &st->revisions[r]);
        }
    }
    run_jobs(&run);
    int rc = finish_run(&run, err);
    if (rc == 0)
        rc = collect_changes(current, &run, out, err);
    for (size_t i = 0; i < run.njobs; i++)
        job_discard(&run.jobs[i]);
    end_run(&run);
    return rc;
}
