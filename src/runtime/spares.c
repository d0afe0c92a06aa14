/*
 * spares.c: each worker's spare VMs, built ahead of starts by a thread of
 * their own at the idle scheduling class.
 *
 * Building a sandbox is most of a start's CPU (the runtime, the built-ins,
 * the host's globals) and owes nothing to the instance, so it is done
 * before a start asks. It used to run on the worker right after each
 * start: a quarter of a millisecond in which the worker held a core that
 * the HTTP thread (answering the start) and the client (sending the next
 * request) then waited for. At the idle class the builder takes only CPU
 * nothing else wants: it never delays a request, an event or a timer, and
 * under full load it does not run at all, so a start then builds its VM
 * itself (as when the spares run out). A spare has never run strategy code:
 * taking one is the same as building one, and the instance's limits are
 * applied when it is taken.
 *
 * A thread at the idle class must hold nothing a worker waits for while it
 * is preempted: the worker only tries the pool's lock, the budget ticker
 * is held by the runtime so the builder neither starts it (a thread it
 * created would inherit the idle class) nor takes its lock, and the
 * one-time class registration is done before the builder starts. What
 * remains is the C library's: a worker freeing a chunk of the builder's
 * malloc arena (a VM's teardown) takes that arena's lock, which a builder
 * preempted inside malloc holds until the scheduler gives it a turn; it
 * builds only while refilling after starts.
 */
#include "runtime/internal.h"

#include <sched.h>
#include <stdio.h>

/* glibc grows a thread's malloc arena by just the pages a request lacks,
 * with one mprotect() per growth: a VM's thousands of small allocations
 * cost some 30 system calls (a tenth of a build's CPU). One block of about
 * a VM's size, freed at once, grows the arena in one step; the free space
 * stays at the top of the arena (below the trim threshold) for the VM that
 * follows. Best effort: a failed malloc changes nothing. */
#define ARENA_HEADROOM ((size_t)112 << 10)

static void reserve_arena(void)
{
    void *block = malloc(ARENA_HEADROOM);
    if (block) {
        /* touching nothing: only the mapping is wanted, not the pages */
        __asm__ volatile("" : : "r"(block) : "memory");
        free(block);
    }
}

/* Under sp->lock. */
static bool wants_one(const struct vm_spares *sp)
{
    return sp->count < VM_SPARES && !sp->failed && !sp->quit;
}

static void *builder_main(void *arg)
{
    struct vm_spares *sp = arg;
    struct sched_param idle = {0};
    (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
    pthread_mutex_lock(&sp->lock);
    while (!sp->quit) {
        if (!wants_one(sp)) {
            pthread_cond_wait(&sp->wake, &sp->lock);
            continue;
        }
        pthread_mutex_unlock(&sp->lock);
        reserve_arena();
        struct vm *vm = vm_build(NULL);
        pthread_mutex_lock(&sp->lock);
        if (!vm)
            sp->failed = true; /* out of memory: no retry until a start succeeds */
        else
            sp->ready[sp->count++] = vm;
    }
    pthread_mutex_unlock(&sp->lock);
    return NULL;
}

int vm_spares_start(struct vm_spares *sp, int index, struct err *err)
{
    pthread_mutex_init(&sp->lock, NULL);
    pthread_cond_init(&sp->wake, NULL);
    /* the builder's sandboxes must not be the ones that start the ticker,
     * nor the builder the one that registers the classes */
    js_sandbox_hold_ticker();
    vm_classes_register();
    sp->initialized = true;
    int rc = pthread_create(&sp->thread, NULL, builder_main, sp);
    if (rc != 0) {
        err_set_errno(err, ERR_INTERNAL, rc, "cannot start the VM builder of worker %d", index);
        return -1;
    }
    sp->started = true;
    char name[16];
    snprintf(name, sizeof name, "spares:%d", index % 10000);
    pthread_setname_np(sp->thread, name);
    return 0;
}

/* The worker only tries the pool's lock: a builder at a low priority that
 * was preempted holding it would otherwise hold the worker up until the
 * scheduler next gives it a turn. A busy lock reads as an empty pool. */
struct vm *vm_spares_take(struct vm_spares *sp)
{
    if (!sp->started || pthread_mutex_trylock(&sp->lock) != 0)
        return NULL;
    struct vm *vm = sp->count > 0 ? sp->ready[--sp->count] : NULL;
    pthread_cond_signal(&sp->wake);
    pthread_mutex_unlock(&sp->lock);
    return vm;
}

void vm_spares_retry(struct vm_spares *sp)
{
    if (!sp->started || pthread_mutex_trylock(&sp->lock) != 0)
        return; /* the next start that succeeds tries again */
    if (sp->failed) {
        sp->failed = false;
        pthread_cond_signal(&sp->wake);
    }
    pthread_mutex_unlock(&sp->lock);
}

void vm_spares_stop(struct vm_spares *sp)
{
    if (!sp->initialized)
        return;
    if (sp->started) {
        pthread_mutex_lock(&sp->lock);
        sp->quit = true;
        pthread_cond_signal(&sp->wake);
        pthread_mutex_unlock(&sp->lock);
        pthread_join(sp->thread, NULL);
        sp->started = false;
    }
    while (sp->count > 0)
        vm_free_spare(sp->ready[--sp->count]);
    js_sandbox_release_ticker();
    pthread_mutex_destroy(&sp->lock);
    pthread_cond_destroy(&sp->wake);
    sp->initialized = false;
}
