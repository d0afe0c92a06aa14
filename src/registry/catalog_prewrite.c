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

struct catalog_prewrite {
    const char *source; /* the caller's bytes, borrowed until catalog_prewrite_end */
    size_t len;
    char *tmp; /* <root>/.upload.<pid>.<n> */
    pthread_t thread;
    bool running; /* the thread is not joined yet */
    bool taken;   /* renamed into place: nothing to remove */
    int rc;       /* the writer's outcome, read after the join */
};

static void *prewrite_main(void *arg)
{
    struct catalog_prewrite *pw = arg;
    struct err e = ERR_INIT;
    pw->rc = fsutil_write_new(pw->tmp, pw->source, pw->len, 0644, &e);
    if (pw->rc != 0)
        log_info(REGISTRY__COMPONENT, "writing ahead of a change failed (%s); the change writes",
                 e.message);
    err_clear(&e);
    return NULL;
}

struct catalog_prewrite *catalog_prewrite_begin(struct catalog *cat, const char *source, size_t len)
{
    static atomic_uint sequence;
    struct catalog_prewrite *pw = calloc(1, sizeof *pw);
    if (!pw)
        return NULL;
    pw->source = source;
    pw->len = len;
    pw->tmp = fsutil_format("%s/" CATALOG__PREWRITE_PREFIX "%ld.%u", cat->root, (long)getpid(),
                            atomic_fetch_add(&sequence, 1));
    if (!pw->tmp || pthread_create(&pw->thread, NULL, prewrite_main, pw) != 0) {
        free(pw->tmp);
        free(pw);
        return NULL;
    }
    pw->running = true;
    return pw;
}

static void join(struct catalog_prewrite *pw)
{
    if (pw->running) {
        pthread_join(pw->thread, NULL);
        pw->running = false;
    }
}

bool catalog__prewrite_take(struct catalog_prewrite *pw, const char *source, size_t len,
                            const char *path)
{
    if (!pw || pw->taken || pw->source != source || pw->len != len)
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
    join(pw);
    if (!pw->taken && pw->rc == 0)
        (void)unlink(pw->tmp); /* gone already when another process swept it */
    free(pw->tmp);
    free(pw);
}
