/*
 * ticker: the time base of the sandboxes' CPU budgets.
 *
 * QuickJS is built to look at every poll (each call and backward jump), so
 * that a loop whose turns are long native calls (a join of a large array, a
 * BigInt power) is looked at after each turn, not after a hundred of them.
 * Reading a clock at every poll would cost more than many of the bytecodes
 * it follows (40 ns for the monotonic clock on the machines measured), so a
 * thread of its own advances a shared count every millisecond, and QuickJS
 * (its interrupt gate, see sandbox.c) calls the handler, which reads the
 * clocks, only when the count has moved: one shared word per poll, the
 * clocks once per millisecond.
 *
 * The thread runs while sandboxes exist and something was armed or checked
 * in the last fifth of a second; otherwise it sleeps on a condition
 * variable, so an idle gateway does not wake a thousand times a second. A
 * running callback keeps it awake: each of its checks (once per tick)
 * counts as activity.
 */
#include "js/internal.h"

#include "core/log.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>

enum { TICK_NS = 1000000, TICKS_PER_ROUND = 200 };

_Atomic uint32_t js__ticker_count;

/* `life` serialises starting and stopping the thread (hold, release); the
 * thread itself only ever takes `lock`. A hold while others hold, and a
 * release that is not the last, only move the count: a thread at the idle
 * scheduling class (a spare builder) creating or freeing a sandbox then
 * holds no lock another thread could wait on while it is preempted. */
static struct {
    pthread_mutex_t life;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    pthread_t thread;
    _Atomic int holders; /* live sandboxes and runtimes' holds; 0 -> 1 under life */
    bool running;        /* the thread exists; under life */
    _Atomic bool stop;
    _Atomic bool active; /* armed or checked since the thread last looked */
    _Atomic bool asleep; /* the thread waits for activity */
} ticker = {
    .life = PTHREAD_MUTEX_INITIALIZER,
    .lock = PTHREAD_MUTEX_INITIALIZER,
    .wake = PTHREAD_COND_INITIALIZER,
};

static void tick_for_a_round(void)
{
    struct timespec pause = {0, TICK_NS};
    for (int i = 0;
         i < TICKS_PER_ROUND && !atomic_load_explicit(&ticker.stop, memory_order_relaxed); i++) {
        nanosleep(&pause, NULL);
        atomic_fetch_add_explicit(&js__ticker_count, 1, memory_order_relaxed);
    }
}

/* `asleep` is stored before `active` is read, and js__ticker_wake stores
 * `active` before it reads `asleep` (both sequentially consistent): one of
 * the two sees the other, so a wake is never lost. */
static void *ticker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&ticker.lock);
    while (!atomic_load(&ticker.stop)) {
        atomic_store(&ticker.asleep, true);
        while (!atomic_load(&ticker.active) && !atomic_load(&ticker.stop))
            pthread_cond_wait(&ticker.wake, &ticker.lock);
        atomic_store(&ticker.asleep, false);
        atomic_store(&ticker.active, false);
        pthread_mutex_unlock(&ticker.lock);
        tick_for_a_round();
        pthread_mutex_lock(&ticker.lock);
    }
    pthread_mutex_unlock(&ticker.lock);
    return NULL;
}

/* Moves `holders` from a value above `floor` by `step`; false when it was
 * at or below it (the caller then takes `life`). */
static bool move_holders(int floor, int step)
{
    int seen = atomic_load(&ticker.holders);
    while (seen > floor) {
        if (atomic_compare_exchange_weak(&ticker.holders, &seen, seen + step))
            return true;
    }
    return false;
}

void js__ticker_hold(void)
{
    if (move_holders(0, 1))
        return; /* running, or being started by the holder before */
    pthread_mutex_lock(&ticker.life);
    atomic_fetch_add(&ticker.holders, 1);
    if (!ticker.running) {
        atomic_store(&ticker.stop, false);
        int rc = pthread_create(&ticker.thread, NULL, ticker_main, NULL);
        if (rc == 0) {
            (void)pthread_setname_np(ticker.thread, "js:ticker");
            ticker.running = true;
        } else {
            /* Not fatal: the handler still looks at the clocks every
             * JS__POLLS_PER_CHECK polls. */
            log_warn("js", "cannot start the budget ticker (%s); budgets are checked by poll count",
                     strerror(rc));
        }
    }
    pthread_mutex_unlock(&ticker.life);
}

void js__ticker_release(void)
{
    if (move_holders(1, -1))
        return; /* not the last */
    pthread_mutex_lock(&ticker.life);
    if (atomic_fetch_sub(&ticker.holders, 1) == 1 && ticker.running) {
        /* Under the thread's lock, so it is either before its check of
         * `stop` or waiting, and the signal is not lost. */
        pthread_mutex_lock(&ticker.lock);
        atomic_store(&ticker.stop, true);
        pthread_cond_signal(&ticker.wake);
        pthread_mutex_unlock(&ticker.lock);
        pthread_join(ticker.thread, NULL);
        ticker.running = false;
    }
    pthread_mutex_unlock(&ticker.life);
}

void js__ticker_wake(void)
{
    if (atomic_load_explicit(&ticker.active, memory_order_relaxed))
        return;
    atomic_store(&ticker.active, true);
    if (atomic_load(&ticker.asleep)) {
        pthread_mutex_lock(&ticker.lock);
        pthread_cond_signal(&ticker.wake);
        pthread_mutex_unlock(&ticker.lock);
    }
}
