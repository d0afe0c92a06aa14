/*
 * validator: fresh validation kits built, and used ones freed, on a thread
 * of their own (see validate.h). Building a kit (two runtimes and their
 * built-ins) and freeing a used one (the compiled module and the module
 * that ran) is about a third of a small module's validation; here it runs
 * beside the requests instead of in them.
 */
#include "js/validate.h"

#include "js/internal.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* Two uploads at once find theirs ready; more build their own. */
#define VALIDATOR_READY 2

struct js_validator {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    bool stopping;
    /* A kit could not be built (memory): retried after the next run, not
     * in a loop. */
    bool build_failed;
    struct js__validation_kit *ready; /* fresh kits */
    size_t nready;
    struct js__validation_kit *used; /* kits validations ran in, to free */
};

static void free_list(struct js__validation_kit *kit)
{
    while (kit) {
        struct js__validation_kit *next = kit->next;
        js__validation_kit_clear(kit);
        free(kit);
        kit = next;
    }
}

static struct js__validation_kit *build_kit(void)
{
    struct js__validation_kit *kit = calloc(1, sizeof *kit);
    struct err err = ERR_INIT;
    if (kit && js__validation_kit_build(kit, &err) != 0) {
        free(kit);
        kit = NULL;
    }
    err_clear(&err);
    return kit;
}

/* Frees what was used, then tops the ready list up; sleeps when neither
 * is needed. Locked except while building or freeing. */
static void *validator_main(void *arg)
{
    struct js_validator *v = arg;
    pthread_mutex_lock(&v->lock);
    while (!v->stopping) {
        if (v->used) {
            struct js__validation_kit *used = v->used;
            v->used = NULL;
            pthread_mutex_unlock(&v->lock);
            free_list(used);
            pthread_mutex_lock(&v->lock);
        } else if (v->nready < VALIDATOR_READY && !v->build_failed) {
            pthread_mutex_unlock(&v->lock);
            struct js__validation_kit *kit = build_kit();
            pthread_mutex_lock(&v->lock);
            if (kit) {
                kit->next = v->ready;
                v->ready = kit;
                v->nready++;
            } else {
                v->build_failed = true;
            }
        } else {
            pthread_cond_wait(&v->wake, &v->lock);
        }
    }
    pthread_mutex_unlock(&v->lock);
    return NULL;
}

int js_validator_new(struct js_validator **out, struct err *err)
{
    *out = NULL;
    struct js_validator *v = calloc(1, sizeof *v);
    if (!v) {
        err_set(err, ERR_INTERNAL, "out of memory for the validator");
        return -1;
    }
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->wake, NULL);
    int rc = pthread_create(&v->thread, NULL, validator_main, v);
    if (rc != 0) {
        pthread_cond_destroy(&v->wake);
        pthread_mutex_destroy(&v->lock);
        free(v);
        err_set(err, ERR_INTERNAL, "cannot start the validator's thread: %s", strerror(rc));
        return -1;
    }
    (void)pthread_setname_np(v->thread, "validator");
    *out = v;
    return 0;
}

static struct js__validation_kit *take_kit(struct js_validator *v)
{
    pthread_mutex_lock(&v->lock);
    struct js__validation_kit *kit = v->ready;
    if (kit) {
        v->ready = kit->next;
        v->nready--;
        kit->next = NULL;
        pthread_cond_signal(&v->wake);
    }
    pthread_mutex_unlock(&v->lock);
    return kit ? kit : calloc(1, sizeof *kit);
}

static void give_back(struct js_validator *v, struct js__validation_kit *kit)
{
    pthread_mutex_lock(&v->lock);
    kit->next = v->used;
    v->used = kit;
    v->build_failed = false;
    pthread_cond_signal(&v->wake);
    pthread_mutex_unlock(&v->lock);
}

json_t *js_validator_run(struct js_validator *v, const char *source, size_t len,
                         const char *filename, const struct js_limits *limits, struct err *err)
{
    if (!v)
        return js_validate(source, len, filename, limits, err);
    struct js__validation_kit *kit = take_kit(v);
    if (!kit) {
        err_set(err, ERR_INTERNAL, "out of memory for a validation");
        return NULL;
    }
    json_t *md = js__validate_in(kit, source, len, filename, limits, err);
    give_back(v, kit);
    return md;
}

void js_validator_free(struct js_validator *v)
{
    if (!v)
        return;
    pthread_mutex_lock(&v->lock);
    v->stopping = true;
    pthread_cond_signal(&v->wake);
    pthread_mutex_unlock(&v->lock);
    pthread_join(v->thread, NULL);
    free_list(v->ready);
    free_list(v->used);
    pthread_cond_destroy(&v->wake);
    pthread_mutex_destroy(&v->lock);
    free(v);
}
