#include "core/intern.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic(const char *) names[INTERN_MAX + 1];
static atomic_uint count; /* ids 1..count are set */
static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;

uint16_t intern_lookup(const char *name)
{
    unsigned n = atomic_load_explicit(&count, memory_order_acquire);
    for (unsigned i = 1; i <= n; i++) {
        const char *s = atomic_load_explicit(&names[i], memory_order_acquire);
        if (s && strcmp(s, name) == 0)
            return (uint16_t)i;
    }
    return 0;
}

uint16_t intern_id(const char *name)
{
    uint16_t id = intern_lookup(name);
    if (id)
        return id;
    pthread_mutex_lock(&intern_lock);
    id = intern_lookup(name);
    unsigned n = atomic_load(&count);
    if (!id && n < INTERN_MAX) {
        char *copy = strdup(name);
        if (copy) {
            atomic_store_explicit(&names[n + 1], copy, memory_order_release);
            atomic_store_explicit(&count, n + 1, memory_order_release);
            id = (uint16_t)(n + 1);
        }
    }
    pthread_mutex_unlock(&intern_lock);
    return id;
}

const char *intern_name(uint16_t id)
{
    if (id == 0 || id > atomic_load_explicit(&count, memory_order_acquire))
        return "";
    const char *s = atomic_load_explicit(&names[id], memory_order_acquire);
    return s ? s : "";
}
