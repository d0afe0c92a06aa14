/*
 * A revision file written ahead of its change. An upload spends most of its
 * time compiling the module; the file's fsync, the longest wait of the
 * change that follows, can happen meanwhile on another core. The bytes go to
 * a temporary in the root, outside every strategy's folder, so that nothing
 * a change or a delete does to those folders can meet it; the change renames
 * it into place under the catalogue's lock. Every way this can fail (no
 * thread, a full disk, a temporary swept by another process that opened the
 * catalogue) leaves the change to write the file itself, as without it.
 */
#include "registry/registry_internal.h"

#include "core/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Who frees the prewrite: the caller once the writer finished, or the
 * writer when the caller gave up on it first (an upload that does not
 * validate answers without waiting for an fsync it will not use). */
enum prewrite_state { PREWRITE_WRITING, PREWRITE_WRITTEN, PREWRITE_ABANDONED };

struct catalog_prewrite {
    struct catalog *cat; /* counts its running writers; outlives them */
    char *data;          /* a copy of the bytes: the writer may outlive the caller's */
    size_t len;
    char *tmp; /* <root>/.upload.<pid>.<n> */
    pthread_t thread;
    bool joined; /* by the caller, who then owns everything */
    bool taken;  /* renamed into place: nothing to remove */
    int rc;      /* the writer's outcome, read after the join */
    _Atomic int state;
};

static void discard(struct catalog_prewrite *pw)
{
    if (!pw->taken && pw->rc == 0)
        (void)unlink(pw->tmp); /* gone already when another process swept it */
    free(pw->data);
    free(pw->tmp);
    free(pw);
}

static void count_writers(struct catalog *cat, int delta)
{
    pthread_mutex_lock(&cat->prewrite_mu);
    cat->prewrites = delta > 0 ? cat->prewrites + 1 : cat->prewrites - 1;
    if (cat->prewrites == 0)
        pthread_cond_broadcast(&cat->prewrites_done);
    pthread_mutex_unlock(&cat->prewrite_mu);
}

static void *prewrite_main(void *arg)
{
    struct catalog_prewrite *pw = arg;
    struct err e = ERR_INIT;
    pw->rc = fsutil_write_new(pw->tmp, pw->data, pw->len, 0644, &e);
    if (pw->rc != 0)
        log_info(REGISTRY__COMPONENT, "writing ahead of a change failed (%s); the change writes",
                 e.message);
    err_clear(&e);
    struct catalog *cat = pw->cat;
    int writing = PREWRITE_WRITING;
    if (!atomic_compare_exchange_strong(&pw->state, &writing, PREWRITE_WRITTEN))
        discard(pw); /* abandoned, and detached: nobody else looks at it */
    count_writers(cat, -1);
    return NULL;
}

void catalog__prewrites_wait(struct catalog *cat)
{
    pthread_mutex_lock(&cat->prewrite_mu);
    while (cat->prewrites > 0)
        pthread_cond_wait(&cat->prewrites_done, &cat->prewrite_mu);
    pthread_mutex_unlock(&cat->prewrite_mu);
}

struct catalog_prewrite *catalog_prewrite_begin(struct catalog *cat, const char *source, size_t len)
{
    static atomic_uint sequence;
    struct catalog_prewrite *pw = cat ? calloc(1, sizeof *pw) : NULL;
    if (!pw)
        return NULL;
    pw->cat = cat;
    pw->data = malloc(len ? len : 1);
    pw->len = len;
    atomic_init(&pw->state, PREWRITE_WRITING);
    pw->tmp = fsutil_format("%s/" CATALOG__PREWRITE_PREFIX "%ld.%u", cat->root, (long)getpid(),
                            atomic_fetch_add(&sequence, 1));
    if (pw->data && len)
        memcpy(pw->data, source, len);
    count_writers(cat, +1);
    if (!pw->data || !pw->tmp || pthread_create(&pw->thread, NULL, prewrite_main, pw) != 0) {
        count_writers(cat, -1);
        free(pw->data);
        free(pw->tmp);
        free(pw);
        return NULL;
    }
    return pw;
}

static void join(struct catalog_prewrite *pw)
{
    if (!pw->joined) {
        pthread_join(pw->thread, NULL);
        pw->joined = true;
    }
}

bool catalog__prewrite_take(struct catalog_prewrite *pw, const char *source, size_t len,
                            const char *path)
{
    if (!pw || pw->taken || pw->len != len || (len && memcmp(pw->data, source, len) != 0))
        return false;
    join(pw);
    if (pw->rc != 0 || rename(pw->tmp, path) != 0)
        return false;
    pw->taken = true;
    return true;
}

void catalog_prewrite_end(struct catalog_prewrite *pw)
{
    if (!pw)
        return;
    if (!pw->joined) {
        pthread_t thread = pw->thread; /* pw may be freed by the writer from here on */
        int writing = PREWRITE_WRITING;
        if (atomic_compare_exchange_strong(&pw->state, &writing, PREWRITE_ABANDONED)) {
            pthread_detach(thread);
            return;
        }
        join(pw);
    }
    discard(pw);
}
