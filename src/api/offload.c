/*
 * offload: a fixed set of threads taking jobs from one FIFO list under a
 * mutex (offload.h). Jobs are few (the control plane's changes) and each
 * lasts from a fraction of a millisecond to a second, so one lock and a
 * condition variable are all the coordination needed.
 */
#include "api/offload.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

struct job {
    struct job *next;
    offload_fn *fn;
    void *arg;
};

struct offload {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct job *head, *tail;
    bool quit;
    unsigned nthreads;
    pthread_t *threads;
};

/* The next job, waiting for one; NULL once the pool quits with none left. */
static struct job *next_job(struct offload *o)
{
    pthread_mutex_lock(&o->lock);
    while (!o->head && !o->quit)
        pthread_cond_wait(&o->wake, &o->lock);
    struct job *j = o->head;
    if (j) {
        o->head = j->next;
        if (!o->head)
            o->tail = NULL;
    }
    pthread_mutex_unlock(&o->lock);
    return j;
}

static void *run_jobs(void *arg)
{
    struct offload *o = arg;
    struct job *j;
    while ((j = next_job(o))) {
        j->fn(j->arg);
        free(j);
    }
    return NULL;
}

static void stop_threads(struct offload *o, unsigned started)
{
    pthread_mutex_lock(&o->lock);
    o->quit = true;
    pthread_cond_broadcast(&o->wake);
    pthread_mutex_unlock(&o->lock);
    for (unsigned i = 0; i < started; i++)
        pthread_join(o->threads[i], NULL);
    o->nthreads = 0;
}

void offload_free(struct offload *o)
{
    if (!o)
        return;
    pthread_cond_destroy(&o->wake);
    pthread_mutex_destroy(&o->lock);
    free(o->threads);
    free(o);
}

int offload_start(unsigned threads, struct offload **out, struct err *err)
{
    struct offload *o = calloc(1, sizeof *o);
    if (!o || !(o->threads = calloc(threads ? threads : 1, sizeof *o->threads))) {
        free(o);
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    o->nthreads = threads ? threads : 1;
    pthread_mutex_init(&o->lock, NULL);
    pthread_cond_init(&o->wake, NULL);
    for (unsigned i = 0; i < o->nthreads; i++) {
        if (pthread_create(&o->threads[i], NULL, run_jobs, o) != 0) {
            stop_threads(o, i);
            offload_free(o);
            err_set(err, ERR_INTERNAL, "cannot start the HTTP server's handler threads");
            return -1;
        }
    }
    *out = o;
    return 0;
}

int offload_submit(struct offload *o, offload_fn *fn, void *arg)
{
    struct job *j = malloc(sizeof *j);
    if (!j)
        return -1;
    *j = (struct job){NULL, fn, arg};
    pthread_mutex_lock(&o->lock);
    if (o->quit) {
        pthread_mutex_unlock(&o->lock);
        free(j);
        return -1;
    }
    if (o->tail)
        o->tail->next = j;
    else
        o->head = j;
    o->tail = j;
    pthread_cond_signal(&o->wake);
    pthread_mutex_unlock(&o->lock);
    return 0;
}

void offload_drain(struct offload *o)
{
    if (o)
        stop_threads(o, o->nthreads);
}
