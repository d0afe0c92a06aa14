#include "core/fsutil.h"
#include "core/log.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct reaper_item {
    struct reaper_item *next;
    char *path;
};

struct fsutil_reaper {
    pthread_mutex_t mu;
    pthread_cond_t wake; /* work queued, or stopping */
    pthread_cond_t idle; /* the queue ran dry */
    struct reaper_item *head, **tail;
    bool started, failed, stopping, busy;
    pthread_t thread;
};

static void remove_now(char *path)
{
    if (unlink(path) != 0 && errno != ENOENT)
        log_warn("fsutil", "cannot remove %s: %s", path, strerror(errno));
    free(path);
}

static struct reaper_item *take_all(struct fsutil_reaper *r)
{
    struct reaper_item *items = r->head;
    r->head = NULL;
    r->tail = &r->head;
    return items;
}

static void remove_items(struct reaper_item *items)
{
    while (items) {
        struct reaper_item *next = items->next;
        remove_now(items->path);
        free(items);
        items = next;
    }
}

static void *reaper_main(void *arg)
{
    struct fsutil_reaper *r = arg;
    pthread_mutex_lock(&r->mu);
    for (;;) {
        while (!r->head && !r->stopping)
            pthread_cond_wait(&r->wake, &r->mu);
        if (!r->head)
            break;
        struct reaper_item *items = take_all(r);
        r->busy = true;
        pthread_mutex_unlock(&r->mu);
        remove_items(items);
        pthread_mutex_lock(&r->mu);
        r->busy = false;
        if (!r->head)
            pthread_cond_broadcast(&r->idle);
    }
    pthread_mutex_unlock(&r->mu);
    return NULL;
}

struct fsutil_reaper *fsutil_reaper_create(void)
{
    struct fsutil_reaper *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->wake, NULL);
    pthread_cond_init(&r->idle, NULL);
    r->tail = &r->head;
    return r;
}

/* Called with mu held: true when the thread runs (started now or before). */
static bool ensure_started(struct fsutil_reaper *r)
{
    if (!r->started && !r->failed) {
        r->started = pthread_create(&r->thread, NULL, reaper_main, r) == 0;
        r->failed = !r->started;
    }
    return r->started;
}

void fsutil_reaper_remove(struct fsutil_reaper *reaper, char *path)
{
    if (!path)
        return;
    struct reaper_item *item = reaper ? malloc(sizeof *item) : NULL;
    if (!item) {
        remove_now(path);
        return;
    }
    item->next = NULL;
    item->path = path;
    pthread_mutex_lock(&reaper->mu);
    if (!ensure_started(reaper)) {
        pthread_mutex_unlock(&reaper->mu);
        free(item);
        remove_now(path);
        return;
    }
    *reaper->tail = item;
    reaper->tail = &item->next;
    pthread_cond_signal(&reaper->wake);
    pthread_mutex_unlock(&reaper->mu);
}

void fsutil_reaper_flush(struct fsutil_reaper *reaper)
{
    if (!reaper)
        return;
    pthread_mutex_lock(&reaper->mu);
    while (reaper->started && (reaper->head || reaper->busy))
        pthread_cond_wait(&reaper->idle, &reaper->mu);
    pthread_mutex_unlock(&reaper->mu);
}

void fsutil_reaper_destroy(struct fsutil_reaper *reaper)
{
    if (!reaper)
        return;
    pthread_mutex_lock(&reaper->mu);
    reaper->stopping = true;
    pthread_cond_signal(&reaper->wake);
    bool started = reaper->started;
    pthread_mutex_unlock(&reaper->mu);
    if (started)
        pthread_join(reaper->thread, NULL);
    remove_items(take_all(reaper)); /* nothing is left unless the thread never ran */
    pthread_cond_destroy(&reaper->idle);
    pthread_cond_destroy(&reaper->wake);
    pthread_mutex_destroy(&reaper->mu);
    free(reaper);
}
