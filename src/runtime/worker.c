/*
 * worker: one thread, one FIFO queue, the VMs of the instances it owns, their
 * timers and the subscription index that routes events to them.
 *
 * The event path reads top to bottom here:
 *   runtime_publish   (provider thread) checks each worker's interest
 *                     counters and pushes the event into each interested
 *                     worker's ring, without a lock (push)
 *   worker_main       takes a batch off its ring, then for each event looks
 *                     (provider, symbol, kind) up in its own index and calls
 *                     vm_deliver for every subscriber
 * Commands wait in a list under the worker's lock, served before the next
 * batch and between two timer callbacks, so they take effect between two
 * events or two callbacks. A VM freed while its
 * subscriptions are being walked is only marked dead; its subscriptions are
 * removed after the walk (worker_reap).
 */
#include "runtime/internal.h"

#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Upper bounds, in seconds, of the handler duration histogram. */
const double runtime_hist_bounds[HIST_BUCKETS - 1] = {1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4,
                                                      1e-3, 5e-3, 1e-2, 5e-2, 1e-1};

/* QuickJS's stack cap is checked against the C stack: leave it ample room. */
#define WORKER_STACK_MARGIN (4u << 20)
/* The longest gap between events the poll's moving average counts. */
#define EVENTS_GAP_MAX_NS 1000000000
/* Timers looked at per pass (run or deferred), so a burst of due timers
 * cannot starve the queue. */
#define WORKER_TIMERS_PER_PASS 1024
/* The timer callbacks a pass runs before the queue's events get their turn
 * (and what one instance may take of a pass): light timers run by the
 * hundred in it, a heavy one alone. */
#define WORKER_TIMER_SLICE_NS (2LL * 1000 * 1000)
/* Distinct subscription lists a run may span before it is delivered event
 * by event instead. */
#define RUN_MAX_LISTS 8
/* Events runtime_publish_run routes together. */
#define RUNTIME_RUN_MAX 64
/* Workers a route can name: one bit each in a uint64_t. */
#define ROUTE_WORKERS_MAX 64

static size_t interest_slot(uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 40) & (WORKER_INTEREST_SLOTS - 1);
}

/* Whether the slot at `pos` holds the event published at that position
 * (acquire: its `ev` may then be read). */
static bool cell_filled(struct worker *w, size_t pos)
{
    return atomic_load_explicit(&w->ring[pos & w->mask].seq, memory_order_acquire) == pos + 1;
}

/* ------------------------------------------------------------ life cycle */

int worker_init(struct worker *w, struct runtime *rt, int index, size_t capacity, struct err *err)
{
    w->rt = rt;
    w->index = index;
    w->events_gap_ns = EVENTS_GAP_MAX_NS; /* no feed seen yet: nothing to poll for */
    size_t cap = 1;
    while (cap < capacity && cap < ((size_t)1 << 40))
        cap <<= 1;
    w->mask = cap - 1;
    w->ring = malloc(cap * sizeof *w->ring);
    if (!w->ring) {
        err_set(err, ERR_INTERNAL, "out of memory for a worker queue of %zu events", cap);
        return -1;
    }
    for (size_t i = 0; i < cap; i++) {
        atomic_init(&w->ring[i].seq, i);
        w->ring[i].ev = NULL;
    }
    atomic_init(&w->tail, 0);
    atomic_init(&w->taken, 0);
    atomic_init(&w->cmd_pending, false);
    atomic_init(&w->sleeping, 0);
    atomic_init(&w->nudged, false);
    atomic_init(&w->waiting, 0);
    atomic_init(&w->quit, false);
    for (size_t i = 0; i < WORKER_INTEREST_SLOTS; i++)
        atomic_init(&w->interest[i], 0);
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&w->lock, NULL);
    pthread_cond_init(&w->wake, &attr);
    pthread_cond_init(&w->room, NULL);
    pthread_condattr_destroy(&attr);
    return 0;
}

static void *worker_main(void *arg);

int worker_start(struct worker *w, struct err *err)
{
    if (vm_spares_start(&w->spares, w->index, err) != 0)
        return -1;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    size_t stack =
        w->rt->opts.limits.stack_bytes ? w->rt->opts.limits.stack_bytes : JS_SANDBOX_DEFAULT_STACK;
    pthread_attr_setstacksize(&attr, stack + WORKER_STACK_MARGIN);
    int rc = pthread_create(&w->thread, &attr, worker_main, w);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        err_set_errno(err, ERR_INTERNAL, rc, "cannot start worker %d", w->index);
        return -1;
    }
    w->thread_started = true;
    /* named so that top -H and perf tell workers from HTTP threads */
    char name[16];
    snprintf(name, sizeof name, "worker:%d", w->index % 10000);
    pthread_setname_np(w->thread, name);
    return 0;
}

/* Called with w->lock held after posting a command: whether to signal the
 * worker (it sleeps), and the flag a polling worker watches. */
static bool wants_wake(struct worker *w)
{
    if (w->polling)
        atomic_store_explicit(&w->nudged, true, memory_order_release);
    return atomic_load_explicit(&w->sleeping, memory_order_relaxed) != 0;
}

void worker_shutdown(struct worker *w)
{
    if (!w->thread_started)
        return;
    pthread_mutex_lock(&w->lock);
    atomic_store(&w->quit, true);
    (void)wants_wake(w);
    pthread_cond_signal(&w->wake);
    pthread_cond_broadcast(&w->room);
    pthread_mutex_unlock(&w->lock);
    pthread_join(w->thread, NULL);
    w->thread_started = false;
    vm_spares_stop(&w->spares);
}

void worker_destroy(struct worker *w)
{
    vm_spares_stop(&w->spares); /* a worker whose thread never started */
    if (!w->ring)
        return;
    /* events still queued when the worker quit */
    for (size_t pos = w->head; cell_filled(w, pos); pos++)
        event_release(w->ring[pos & w->mask].ev);
    free(w->ring);
    w->ring = NULL;
    for (size_t i = 0; i < w->subs.cap; i++) {
        struct sublist *list = w->subs.keys[i] ? w->subs.vals[i] : NULL;
        if (list) {
            free(list->items);
            free(list);
        }
    }
    rtmap_free(&w->subs);
    rtmap_free(&w->instances);
    free(w->heap);
    free(w->deferred);
    pthread_mutex_destroy(&w->lock);
    pthread_cond_destroy(&w->wake);
    pthread_cond_destroy(&w->room);
}

/* ------------------------------------------------------------ the queue */

/* Publisher side, after filling a slot. Whichever of this read-modify-write
 * and the worker's setting `sleeping` (worker_sleep) comes second sees the
 * other: the worker then finds the event (the first synchronises with it),
 * or this finds it asleep and signals. The signal is sent under the lock,
 * which the worker holds from setting `sleeping` until it waits. */
static void wake_if_asleep(struct worker *w)
{
    if (atomic_fetch_add_explicit(&w->sleeping, 0, memory_order_acq_rel) == 0)
        return;
    pthread_mutex_lock(&w->lock);
    pthread_cond_signal(&w->wake);
    pthread_mutex_unlock(&w->lock);
}

/* True when the slot at `pos` is still full from the previous lap. */
static bool slot_busy(struct worker *w, size_t pos)
{
    size_t seq = atomic_load_explicit(&w->ring[pos & w->mask].seq, memory_order_acquire);
    return (ptrdiff_t)(seq - pos) < 0;
}

/* Waits until the worker frees the slot at `pos` or quits; false once it
 * has quit. The same handshake as wake_if_asleep, the other way round. */
static bool wait_for_room(struct worker *w, size_t pos)
{
    pthread_mutex_lock(&w->lock);
    atomic_fetch_add_explicit(&w->waiting, 1, memory_order_acq_rel);
    while (slot_busy(w, pos) && !atomic_load_explicit(&w->quit, memory_order_relaxed))
        pthread_cond_wait(&w->room, &w->lock);
    atomic_fetch_sub_explicit(&w->waiting, 1, memory_order_relaxed);
    bool quit = atomic_load_explicit(&w->quit, memory_order_relaxed);
    pthread_mutex_unlock(&w->lock);
    return !quit;
}

/* Appends an event, waiting while the queue is full. False once the worker
 * has quit. */
static bool push(struct worker *w, struct event *ev)
{
    size_t pos = atomic_load_explicit(&w->tail, memory_order_relaxed);
    for (;;) {
        if (atomic_load_explicit(&w->quit, memory_order_relaxed))
            return false;
        struct queue_cell *c = &w->ring[pos & w->mask];
        size_t seq = atomic_load_explicit(&c->seq, memory_order_acquire);
        ptrdiff_t lap = (ptrdiff_t)(seq - pos);
        if (lap == 0) {
            if (atomic_compare_exchange_weak_explicit(&w->tail, &pos, pos + 1, memory_order_relaxed,
                                                      memory_order_relaxed)) {
                c->ev = ev;
                atomic_store_explicit(&c->seq, pos + 1, memory_order_release);
                wake_if_asleep(w);
                return true;
            }
        } else if (lap < 0) {
            if (!wait_for_room(w, pos))
                return false;
            pos = atomic_load_explicit(&w->tail, memory_order_relaxed);
        } else {
            pos = atomic_load_explicit(&w->tail, memory_order_relaxed);
        }
    }
}

/* Appends evs[0..n) in order: in one reservation of the ring when the last
 * of their slots is free (the worker frees slots in order, so all before it
 * are), one at a time otherwise. One wake-up check for the lot, and the
 * worker meets several events per cache line it waits on. Returns how many
 * went in; fewer only once the worker has quit. */
static size_t push_run(struct worker *w, struct event **evs, size_t n)
{
    size_t pos = atomic_load_explicit(&w->tail, memory_order_relaxed);
    while (n > 1 && n <= w->mask + 1 && !atomic_load_explicit(&w->quit, memory_order_relaxed)) {
        size_t last = pos + n - 1;
        size_t seq = atomic_load_explicit(&w->ring[last & w->mask].seq, memory_order_acquire);
        ptrdiff_t lap = (ptrdiff_t)(seq - last);
        if (lap < 0)
            break; /* not room for all of them */
        if (lap > 0) {
            pos = atomic_load_explicit(&w->tail, memory_order_relaxed);
            continue;
        }
        if (atomic_compare_exchange_weak_explicit(&w->tail, &pos, pos + n, memory_order_relaxed,
                                                  memory_order_relaxed)) {
            for (size_t i = 0; i < n; i++) {
                struct queue_cell *c = &w->ring[(pos + i) & w->mask];
                c->ev = evs[i];
                atomic_store_explicit(&c->seq, pos + i + 1, memory_order_release);
            }
            wake_if_asleep(w);
            return n;
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!push(w, evs[i]))
            return i;
    }
    return n;
}

size_t worker_queue_depth(struct worker *w)
{
    size_t tail = atomic_load_explicit(&w->tail, memory_order_relaxed);
    size_t taken = atomic_load_explicit(&w->taken, memory_order_relaxed);
    return tail > taken ? tail - taken : 0;
}

/* The first worker from `from` on with a subscription in `slot`, or -1.
 * Relaxed: a subscription made while an event is published may miss it. */
static int next_interested(const struct runtime *rt, size_t slot, int from)
{
    for (int i = from; i < rt->nworkers; i++) {
        if (atomic_load_explicit(&rt->workers[i].interest[slot], memory_order_relaxed) != 0)
            return i;
    }
    return -1;
}

void runtime_publish(void *ctx, struct event *ev)
{
    struct runtime *rt = ctx;
    if (!ev)
        return;
    if (ev->target) {
        if (!push(runtime_worker_of(rt, ev->target), ev))
            event_release(ev);
        return;
    }
    /* The last interested worker gets the caller's reference: with one
     * worker interested the event's count is not touched here, after the
     * worker may already be reading it. */
    size_t slot = interest_slot(sub_key(ev->provider, ev->symbol, ev->kind));
    struct worker *last = NULL;
    for (int i = next_interested(rt, slot, 0); i >= 0; i = next_interested(rt, slot, i + 1)) {
        if (last) {
            event_retain(ev);
            if (!push(last, ev))
                event_release(ev);
        }
        last = &rt->workers[i];
    }
    if (!last || !push(last, ev))
        event_release(ev);
}

/* The workers an event goes to, one bit each (nworkers <= ROUTE_WORKERS_MAX). */
static uint64_t route_of(struct runtime *rt, const struct event *ev)
{
    if (ev->target)
        return 1ull << (runtime_worker_of(rt, ev->target) - rt->workers);
    size_t slot = interest_slot(sub_key(ev->provider, ev->symbol, ev->kind));
    uint64_t to = 0;
    for (int i = next_interested(rt, slot, 0); i >= 0; i = next_interested(rt, slot, i + 1))
        to |= 1ull << i;
    return to;
}

/* Each event's route is read once and it gets one reference per worker on
 * it before any is pushed (a worker may release its own at once); then
 * each worker takes its share of the run, in order, in one push_run. */
static void publish_chunk(struct runtime *rt, struct event **evs, size_t n)
{
    uint64_t to[RUNTIME_RUN_MAX], all = 0;
    for (size_t i = 0; i < n; i++) {
        to[i] = route_of(rt, evs[i]);
        all |= to[i];
        int refs = __builtin_popcountll(to[i]);
        if (refs == 0)
            event_release(evs[i]);
        for (int r = 1; r < refs; r++)
            event_retain(evs[i]);
    }
    for (int k = 0; k < rt->nworkers && (all >> k) != 0; k++) {
        struct event *share[RUNTIME_RUN_MAX];
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            if ((to[i] >> k) & 1)
                share[m++] = evs[i];
        }
        for (size_t done = m ? push_run(&rt->workers[k], share, m) : 0; done < m; done++)
            event_release(share[done]);
    }
}

void runtime_publish_run(void *ctx, struct event **evs, size_t n)
{
    struct runtime *rt = ctx;
    if (rt->nworkers > ROUTE_WORKERS_MAX) {
        for (size_t i = 0; i < n; i++)
            runtime_publish(rt, evs[i]);
        return;
    }
    for (size_t i = 0; i < n; i += RUNTIME_RUN_MAX)
        publish_chunk(rt, evs + i, n - i < RUNTIME_RUN_MAX ? n - i : RUNTIME_RUN_MAX);
}

bool runtime_wants(void *ctx, uint16_t provider, uint16_t symbol, enum event_kind kind)
{
    return next_interested(ctx, interest_slot(sub_key(provider, symbol, kind)), 0) >= 0;
}

static void publish_through(void *ctx, struct event *ev)
{
    runtime_publish(*(struct runtime **)ctx, ev);
}

static void publish_run_through(void *ctx, struct event **evs, size_t n)
{
    runtime_publish_run(*(struct runtime **)ctx, evs, n);
}

static bool wants_through(void *ctx, uint16_t provider, uint16_t symbol, enum event_kind kind)
{
    return runtime_wants(*(struct runtime **)ctx, provider, symbol, kind);
}

struct event_sink runtime_event_sink_at(struct runtime **slot)
{
    struct event_sink sink = {slot, publish_through, wants_through, publish_run_through};
    return sink;
}

/* The pause between two looks at a flag another core will set. */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#else
    __asm__ volatile("" ::: "memory");
#endif
}

/* Waking a sleeping thread costs tens of microseconds (30-50 us between
 * the vCPUs of a virtual machine), more than either of two waits a worker
 * can predict, so for those it polls instead (poll_queue: under w->lock on
 * entry and return; true when anything was queued meanwhile):
 *   - a staged VM's start command follows within a commit, a fraction of a
 *     millisecond: it polls up to STAGED_POLL_NS;
 *   - while events arrive closer together than the runtime's poll window,
 *     the next one is due sooner than a sleeper would wake: it polls up to
 *     that window, so a busy feed meets a running worker. A feed slower
 *     than the window never makes it poll; `event_poll_ns` 0 turns it off.
 * Either poll stops at the next timer. */
#define STAGED_POLL_NS 500000
/* Between two looks at the ring while polling: each look takes the slot's
 * cache line from the publisher writing the next slots beside it. */
#define POLL_LOOK_NS 250
static int64_t poll_deadline(const struct worker *w, int64_t now, enum poll_reason *reason)
{
    int64_t window = 0;
    if (w->nstaged > 0) {
        window = STAGED_POLL_NS;
        *reason = POLL_START;
    } else if (w->rt->event_poll_ns > 0 && w->events_gap_ns < w->rt->event_poll_ns &&
               now - w->last_events_ns < w->rt->event_poll_ns) {
        window = w->rt->event_poll_ns;
        *reason = POLL_EVENTS;
    }
    if (window == 0)
        return 0;
    int64_t until = now + window;
    if (w->nheap > 0 && w->heap[0]->deadline_ns < until)
        until = w->heap[0]->deadline_ns;
    return until;
}

/* Worker side: whether the next slot holds an event. */
static bool ring_ready(struct worker *w)
{
    return cell_filled(w, w->head);
}

/* Under w->lock. */
static bool has_work(struct worker *w)
{
    return ring_ready(w) || w->cmd_head || atomic_load_explicit(&w->quit, memory_order_relaxed);
}

static bool poll_queue(struct worker *w, int64_t now, int64_t until, enum poll_reason reason)
{
    w->polling = true;
    atomic_store_explicit(&w->nudged, false, memory_order_relaxed);
    pthread_mutex_unlock(&w->lock);
    int64_t t = now, looked = now;
    while (!atomic_load_explicit(&w->nudged, memory_order_acquire) && t < until) {
        cpu_relax();
        t = clock_mono_ns();
        if (t - looked >= POLL_LOOK_NS) {
            if (ring_ready(w))
                break;
            looked = t;
        }
    }
    counter_add(&w->poll_ns[reason], (uint64_t)(t - now));
    pthread_mutex_lock(&w->lock);
    w->polling = false;
    return has_work(w);
}

/* Under w->lock: sleeps until signalled, or until `due` when it is not 0.
 * The last look at the ring comes after `sleeping` is set (see
 * wake_if_asleep for the other half). */
static void worker_sleep(struct worker *w, int64_t due)
{
    /* the events it released go back to their pools before it sleeps; a
     * worker that only polls returns them in batches (see event.c) */
    event_flush_returns();
    atomic_exchange_explicit(&w->sleeping, 1, memory_order_acq_rel);
    if (!ring_ready(w)) {
        if (due > 0) {
            struct timespec ts = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
            pthread_cond_timedwait(&w->wake, &w->lock, &ts);
        } else {
            pthread_cond_wait(&w->wake, &w->lock);
        }
    }
    atomic_store_explicit(&w->sleeping, 0, memory_order_relaxed);
}

/* Under w->lock on entry and return: waits until an event or a command is
 * queued, the next timer is due or the worker must quit. */
static void wait_for_work(struct worker *w)
{
    bool polled = false; /* once per wait: then it sleeps */
    while (!has_work(w)) {
        if (!polled) {
            enum poll_reason reason = POLL_START;
            int64_t now = clock_mono_ns();
            int64_t until = poll_deadline(w, now, &reason);
            if (until > 0) {
                polled = true;
                if (poll_queue(w, now, until, reason))
                    break;
            }
        }
        int64_t due = 0;
        if (w->nheap > 0) {
            due = w->heap[0]->deadline_ns;
            if (due <= clock_mono_ns())
                break;
        }
        worker_sleep(w, due);
    }
}

/* Keeps the gap between batches of events (a moving average over about
 * eight) that decides whether the worker polls for the next one. */
static void note_events(struct worker *w)
{
    int64_t now = clock_mono_ns();
    int64_t gap = now - w->last_events_ns;
    if (gap > EVENTS_GAP_MAX_NS)
        gap = EVENTS_GAP_MAX_NS;
    w->events_gap_ns += (gap - w->events_gap_ns) / 8;
    w->last_events_ns = now;
}

/* Takes up to WORKER_BATCH events off the ring, without the lock, and
 * wakes publishers waiting for room. */
static size_t take_events(struct worker *w, struct msg *out)
{
    size_t k = 0;
    while (k < WORKER_BATCH && ring_ready(w)) {
        struct queue_cell *c = &w->ring[w->head & w->mask];
        out[k++] = (struct msg){c->ev, NULL, w->head};
        atomic_store_explicit(&c->seq, w->head + w->mask + 1, memory_order_release);
        w->head++;
    }
    if (k == 0)
        return 0;
    atomic_store_explicit(&w->taken, w->head, memory_order_relaxed);
    note_events(w);
    /* a read-modify-write, as wake_if_asleep's, the other way round */
    if (atomic_fetch_add_explicit(&w->waiting, 0, memory_order_acq_rel) > 0) {
        pthread_mutex_lock(&w->lock);
        pthread_cond_broadcast(&w->room);
        pthread_mutex_unlock(&w->lock);
    }
    return k;
}

/* The first queued command, now the caller's (NULL: none); w->lock held. */
static struct command *pop_command_locked(struct worker *w)
{
    struct command *cmd = w->cmd_head;
    if (cmd) {
        w->cmd_head = cmd->next;
        if (!w->cmd_head) {
            w->cmd_tail = NULL;
            atomic_store_explicit(&w->cmd_pending, false, memory_order_relaxed);
        }
    }
    return cmd;
}

/* Waits for messages (or the next timer) and takes one command or up to
 * WORKER_BATCH events. Returns false when the worker must quit; true with
 * *n == 0 when only a timer is due. */
static bool take_batch(struct worker *w, struct msg *out, size_t *n)
{
    if (!atomic_load_explicit(&w->cmd_pending, memory_order_acquire) &&
        !atomic_load_explicit(&w->quit, memory_order_relaxed)) {
        *n = take_events(w, out);
        if (*n > 0)
            return true;
    }
    pthread_mutex_lock(&w->lock);
    wait_for_work(w);
    if (atomic_load_explicit(&w->quit, memory_order_relaxed)) {
        pthread_mutex_unlock(&w->lock);
        return false;
    }
    struct command *cmd = pop_command_locked(w);
    pthread_mutex_unlock(&w->lock);
    if (cmd) {
        out[0] = (struct msg){NULL, cmd, 0};
        *n = 1;
        return true;
    }
    *n = take_events(w, out);
    return true;
}

/* ------------------------------------------------------------ commands */

static void complete(struct runtime *rt, struct command *cmd)
{
    pthread_mutex_lock(&rt->done);
    atomic_store_explicit(&cmd->done, true, memory_order_release);
    pthread_cond_broadcast(&rt->done_cond);
    pthread_mutex_unlock(&rt->done);
}

void worker_post(struct worker *w, struct command *cmd)
{
    cmd->done = false;
    cmd->next = NULL;
    pthread_mutex_lock(&w->lock);
    if (atomic_load_explicit(&w->quit, memory_order_relaxed)) {
        pthread_mutex_unlock(&w->lock);
        cmd->rc = -1;
        err_set(&cmd->err, ERR_UNAVAILABLE, "the runtime is shutting down");
        cmd->done = true;
        return;
    }
    if (w->cmd_tail)
        w->cmd_tail->next = cmd;
    else
        w->cmd_head = cmd;
    w->cmd_tail = cmd;
    atomic_store_explicit(&w->cmd_pending, true, memory_order_release);
    bool wake = wants_wake(w);
    pthread_mutex_unlock(&w->lock);
    if (wake)
        pthread_cond_signal(&w->wake);
}

void worker_wait(struct runtime *rt, struct command *cmd)
{
    pthread_mutex_lock(&rt->done);
    while (!cmd->done)
        pthread_cond_wait(&rt->done_cond, &rt->done);
    pthread_mutex_unlock(&rt->done);
}

/* Long enough for a start's install and a quick onStart; a longer one is
 * waited for asleep. */
#define CALL_POLL_NS 300000
void worker_call(struct worker *w, struct command *cmd)
{
    worker_post(w, cmd);
    if (cmd->stage) {
        /* its worker polls for this start: being woken would cost the
         * caller more than the wait (see poll_deadline) */
        int64_t until = clock_mono_ns() + CALL_POLL_NS;
        while (!atomic_load_explicit(&cmd->done, memory_order_acquire) && clock_mono_ns() < until)
            cpu_relax();
    }
    worker_wait(w->rt, cmd);
}

static void set_running(struct worker *w, struct instance *inst, bool running)
{
    pthread_mutex_lock(&w->rt->lock);
    rtx_set_running_locked(w->rt, inst, running);
    pthread_mutex_unlock(&w->rt->lock);
}

/* Keeps a report for the instance's next start (its VM is gone). */
static void hold_report(struct instance *inst, struct event *ev)
{
    if (inst->nheld == RUNTIME_HELD_REPORTS) {
        inst->held_dropped++;
        return;
    }
    if (inst->nheld == inst->held_cap) {
        uint32_t cap = inst->held_cap ? inst->held_cap * 2 : 16;
        struct event **grown = realloc(inst->held, cap * sizeof *grown);
        if (!grown) {
            inst->held_dropped++;
            return;
        }
        inst->held = grown;
        inst->held_cap = cap;
    }
    event_retain(ev);
    inst->held[inst->nheld++] = ev;
}

void rtx_release_held(struct instance *inst)
{
    for (uint32_t i = 0; i < inst->nheld; i++)
        event_release(inst->held[i]);
    free(inst->held);
    inst->held = NULL;
    inst->nheld = inst->held_cap = 0;
    inst->held_dropped = 0;
}

/* A start hears, before anything else, what its orders did while the
 * instance was stopped. A VM that fails on one of them stops the instance;
 * the rest wait for the start after. */
static void deliver_held(struct worker *w, struct instance *inst)
{
    if (inst->held_dropped > 0)
        log_warn("runtime",
                 "instance %s: %llu execution reports of its orders came while it was stopped, "
                 "beyond the %d kept for its start; its order history has them",
                 inst->id, (unsigned long long)inst->held_dropped, RUNTIME_HELD_REPORTS);
    inst->held_dropped = 0;
    uint32_t i = 0;
    struct vm *vm = inst->vm;
    while (i < inst->nheld && inst->vm == vm) {
        vm_deliver(w, vm, -1, inst->held[i]);
        event_release(inst->held[i]);
        i++;
    }
    memmove(inst->held, inst->held + i, (inst->nheld - i) * sizeof *inst->held);
    inst->nheld -= i;
}

/* The instance's staged VM, now the caller's (NULL when it has none). */
static struct vm *take_staged(struct worker *w, struct instance *inst)
{
    struct vm *vm = inst->staged;
    if (vm) {
        inst->staged = NULL;
        w->nstaged--;
    }
    return vm;
}

static void drop_staged(struct worker *w, struct instance *inst)
{
    struct vm *vm = take_staged(w, inst);
    if (vm)
        vm_unstage(w, vm);
}

/* Frees the instance's VM (if any) without touching its desired state. */
static void drop_vm(struct worker *w, struct instance *inst)
{
    drop_staged(w, inst);
    if (!inst->vm)
        return;
    vm_destroy(w, inst->vm);
    inst->vm = NULL;
    atomic_store_explicit(&inst->memory, 0, memory_order_relaxed); /* no heap any more */
    set_running(w, inst, false);
}

/* The worker's map routes the instance's directed events (exec reports). */
static int attach(struct worker *w, struct command *cmd)
{
    if (rtmap_put(&w->instances, cmd->inst->key, cmd->inst) == 0)
        return 0;
    runtime_plan_free(cmd->plan);
    cmd->plan = NULL;
    err_set(&cmd->err, ERR_INTERNAL, "out of memory");
    cmd->rc = -1;
    return -1;
}

static void cmd_stage(struct worker *w, struct command *cmd)
{
    struct instance *inst = cmd->inst;
    if (attach(w, cmd) != 0)
        return;
    struct vm_plan *plan = cmd->plan;
    cmd->plan = NULL;
    drop_staged(w, inst); /* never run a module staged for another start */
    if (inst->vm) {
        runtime_plan_free(plan);
        return;
    }
    struct vm *vm = NULL;
    if (vm_stage(w, inst, plan, &vm, &cmd->err) != 0) {
        cmd->rc = -1;
        return;
    }
    inst->staged = vm;
    w->nstaged++;
}

/* The VM a start runs: the one its STAGE command loaded, or one built now. */
static struct vm *launch(struct worker *w, struct command *cmd)
{
    struct instance *inst = cmd->inst;
    struct vm *vm = NULL;
    if (!cmd->stage) {
        struct vm_plan *plan = cmd->plan;
        cmd->plan = NULL;
        return vm_start(w, inst, plan, &vm, &cmd->err) == 0 ? vm : NULL;
    }
    if (cmd->stage->rc != 0) {
        err_move(&cmd->err, &cmd->stage->err);
        return NULL;
    }
    vm = take_staged(w, inst);
    if (!vm) {
        err_set(&cmd->err, ERR_INTERNAL, "instance %s has no staged VM", inst->id);
        return NULL;
    }
    return vm_launch(w, vm, &cmd->err) == 0 ? vm : NULL;
}

/* The start's VM is gone; the instance ends stopped (startFailed) once the
 * caller sees the failure, and create() may have placed orders. */
static void start_failed(struct worker *w, struct command *cmd)
{
    cmd->rc = -1;
    rtx_abandon_orders(w->rt, cmd->inst, "startFailed");
}

static void cmd_start(struct worker *w, struct command *cmd)
{
    struct instance *inst = cmd->inst;
    if (attach(w, cmd) != 0)
        return;
    if (inst->vm) {
        runtime_plan_free(cmd->plan);
        cmd->plan = NULL;
        drop_staged(w, inst);
        return;
    }
    struct vm *vm = launch(w, cmd);
    if (!vm) {
        start_failed(w, cmd);
        return;
    }
    /* not a visit of the run under way, if any: its events were taken
     * before this start */
    vm->visit = w->run_stamp;
    if (worker_subscribe(w, vm) != 0) {
        vm_destroy(w, vm);
        err_set(&cmd->err, ERR_INTERNAL, "out of memory while subscribing instance %s", inst->id);
        start_failed(w, cmd);
        return;
    }
    /* Commands are served ahead of the events already queued: those were
     * published before the subscription, and while no VM of this worker
     * wanted a kind its publisher skipped the worker for it, so delivering
     * the queued ones would hand the new VM a stream with holes in it. It
     * takes what is published from its subscription on. */
    vm->birth = atomic_load_explicit(&w->tail, memory_order_acquire);
    inst->vm = vm;
    set_running(w, inst, true);
    if (inst->nheld > 0 || inst->held_dropped > 0)
        deliver_held(w, inst);
}

/* Builds the new VM first, then retires the old one: events queued before
 * this command went to the old VM, those after it go to the new one. The
 * new VM subscribes before the old one unsubscribes, so the interest
 * counters never drop to zero in between and no publisher skips us. */
static void cmd_restart(struct worker *w, struct command *cmd)
{
    struct instance *inst = cmd->inst;
    struct vm_plan *plan = cmd->plan;
    cmd->plan = NULL;
    struct vm *old = inst->vm;
    cmd->was_running = old != NULL;
    if (!old) {
        runtime_plan_free(plan);
        return;
    }
    struct vm *fresh = NULL;
    int rc = vm_start(w, inst, plan, &fresh, &cmd->err);
    /* within a run under way, the new VM takes its events only if the old
     * one had not: none twice, none lost */
    if (rc == 0) {
        fresh->visit = old->visit;
        fresh->birth = old->birth; /* the old VM's stream, continued */
    }
    if (rc == 0 && worker_subscribe(w, fresh) != 0) {
        vm_destroy(w, fresh);
        err_set(&cmd->err, ERR_INTERNAL, "out of memory while subscribing instance %s", inst->id);
        rc = -1;
    }
    if (rc != 0) {
        cmd->rc = -1;
        if (cmd->keep_old)
            return;
        drop_vm(w, inst);
        rtx_abandon_orders(w->rt, inst, "startFailed");
        pthread_mutex_lock(&w->rt->lock);
        rtx_apply_spec_locked(w->rt, inst, cmd->spec);
        pthread_mutex_unlock(&w->rt->lock);
        cmd->spec = NULL;
        return;
    }
    vm_destroy(w, old);
    inst->vm = fresh;
    /* the running count moves from the old revision to the new one */
    pthread_mutex_lock(&w->rt->lock);
    rtx_set_running_locked(w->rt, inst, false);
    rtx_apply_spec_locked(w->rt, inst, cmd->spec);
    rtx_set_running_locked(w->rt, inst, true);
    pthread_mutex_unlock(&w->rt->lock);
    cmd->spec = NULL;
}

static void run_command(struct worker *w, struct command *cmd)
{
    struct instance *inst = cmd->inst;
    cmd->rc = 0;
    switch (cmd->kind) {
    case CMD_STAGE:
        cmd_stage(w, cmd);
        break;
    case CMD_UNSTAGE:
        drop_staged(w, inst);
        break;
    case CMD_START:
        cmd_start(w, cmd);
        break;
    case CMD_RESTART:
        cmd_restart(w, cmd);
        break;
    case CMD_STOP:
        cmd->was_running = inst->vm != NULL;
        drop_vm(w, inst);
        break;
    case CMD_DETACH:
        cmd->was_running = inst->vm != NULL;
        drop_vm(w, inst);
        rtmap_del(&w->instances, inst->key);
        rtx_release_held(inst);
        break;
    }
    worker_reap(w);
    complete(w->rt, cmd);
}

/* Runs every command queued so far: between batches, or between two VMs of
 * a run's walk (deliver_run says why that is safe). */
static void serve_commands(struct worker *w)
{
    for (;;) {
        pthread_mutex_lock(&w->lock);
        struct command *cmd = pop_command_locked(w);
        pthread_mutex_unlock(&w->lock);
        if (!cmd)
            return;
        run_command(w, cmd);
    }
}

/* ------------------------------------------------------------ events */

static void forget_order(struct instance *inst, const struct event *ev)
{
    enum exec_status st = ev->u.exec.status;
    if (st == EXEC_ACKNOWLEDGED || st == EXEC_PARTIAL_FILL)
        return;
    const char *id = ev->u.exec.client_order_id;
    const char *dash = strrchr(id, '-');
    if (!dash)
        return;
    uint64_t n = strtoull(dash + 1, NULL, 10);
    for (uint32_t i = inst->norders; i-- > 0;) {
        if (inst->orders[i].n == n) {
            inst->orders[i] = inst->orders[--inst->norders];
            return;
        }
    }
}

static void deliver_directed(struct worker *w, struct event *ev)
{
    struct instance *inst = rtmap_get(&w->instances, ev->target);
    if (!inst)
        return;
    if (ev->kind == EVENT_EXEC_REPORT) {
        rtx_count_order(w->rt, ev->provider, ev->u.exec.status);
        forget_order(inst, ev);
        if (!inst->vm)
            hold_report(inst, ev);
    }
    if (inst->vm)
        vm_deliver(w, inst->vm, -1, ev);
}

static void handle_event(struct worker *w, struct event *ev, size_t pos)
{
    if (ev->target) {
        deliver_directed(w, ev);
    } else {
        struct sublist *list = rtmap_get(&w->subs, sub_key(ev->provider, ev->symbol, ev->kind));
        /* the list cannot grow during the walk: only commands subscribe */
        w->walking = true;
        for (uint32_t i = 0; list && i < list->n; i++) {
            struct vm *vm = list->items[i].vm;
            if (pos >= vm->birth)
                vm_deliver(w, vm, list->items[i].scope_index, ev);
        }
        w->walking = false;
    }
    event_release(ev);
    if (w->nreap)
        worker_reap(w);
}

/* ------------------------------------------------------------ runs */

static int scope_index_for(const struct vm *vm, uint64_t key)
{
    for (uint32_t i = 0; i < vm->nsubs; i++) {
        if (vm->sub_keys[i] == key)
            return vm->sub_index[i];
    }
    return -1;
}

/* Checks the timers now and then during a long run. */
static void run_tick(struct worker *w)
{
    if (++w->run_calls < 256)
        return;
    w->run_calls = 0;
    w->now_ns = clock_mono_ns();
    if (w->nheap > 0 && w->heap[0]->deadline_ns <= w->now_ns)
        worker_run_timers(w);
}

static uint64_t event_key(const struct event *ev)
{
    return sub_key(ev->provider, ev->symbol, ev->kind);
}

/* Under load a batch holds many broadcast events in a row. Delivering them
 * instance by instance (each VM takes all of its events of the run before
 * the next VM) keeps one VM's memory in cache for many calls instead of
 * walking thousands of cold VMs per event. Each VM still sees its events in
 * publication order; runs never cross a command or a directed event.
 *
 * A run over thousands of VMs lasts milliseconds, so commands posted
 * meanwhile run between two VMs rather than after the run. That is safe
 * because the walk re-reads each list as it goes and a list only grows
 * until the walk ends: a VM stopped meanwhile stays in its lists, marked
 * dead, until worker_reap() after the walk, and no list is ever freed. A
 * VM started meanwhile is appended and marked visited (cmd_start); one
 * that replaces a VM takes the run's events only where the old one had
 * not (cmd_restart). */
static void deliver_run(struct worker *w, struct event **evs, const size_t *pos, size_t n)
{
    struct sublist *lists[WORKER_BATCH];
    struct sublist *distinct[RUN_MAX_LISTS];
    size_t ndistinct = 0;
    for (size_t i = 0; i < n; i++) {
        bool same = i > 0 && event_key(evs[i]) == event_key(evs[i - 1]);
        lists[i] = same ? lists[i - 1] : rtmap_get(&w->subs, event_key(evs[i]));
        bool seen = lists[i] == NULL;
        for (size_t d = 0; d < ndistinct && !seen; d++)
            seen = distinct[d] == lists[i];
        if (!seen && ndistinct == RUN_MAX_LISTS) {
            for (size_t k = 0; k < n; k++)
                handle_event(w, evs[k], pos[k]);
            return;
        }
        if (!seen)
            distinct[ndistinct++] = lists[i];
    }
    uint64_t stamp = ++w->run_stamp;
    w->walking = true;
    for (size_t d = 0; d < ndistinct; d++) {
        struct sublist *list = distinct[d];
        for (uint32_t s = 0; s < list->n; s++) {
            struct vm *vm = list->items[s].vm;
            if (vm->visit == stamp)
                continue;
            vm->visit = stamp;
            for (size_t i = 0; i < n && !vm->dead; i++) {
                if (pos[i] < vm->birth)
                    continue;
                if (lists[i] == list) {
                    vm_deliver(w, vm, list->items[s].scope_index, evs[i]);
                } else if (lists[i]) {
                    int index = scope_index_for(vm, event_key(evs[i]));
                    if (index >= 0)
                        vm_deliver(w, vm, index, evs[i]);
                }
            }
            run_tick(w);
            if (atomic_load_explicit(&w->cmd_pending, memory_order_acquire))
                serve_commands(w);
        }
    }
    w->walking = false;
    for (size_t i = 0; i < n; i++)
        event_release(evs[i]);
    if (w->nreap)
        worker_reap(w);
}

/* ------------------------------------------------------------ subscriptions */

static int sub_add(struct worker *w, uint64_t key, struct vm *vm, uint16_t scope_index)
{
    struct sublist *list = rtmap_get(&w->subs, key);
    if (!list) {
        list = calloc(1, sizeof *list);
        if (!list || rtmap_put(&w->subs, key, list) != 0) {
            free(list);
            return -1;
        }
    }
    if (list->n == list->cap) {
        uint32_t cap = list->cap ? list->cap * 2 : 4;
        struct sub *items = realloc(list->items, cap * sizeof *items);
        if (!items)
            return -1;
        list->items = items;
        list->cap = cap;
    }
    list->items[list->n].vm = vm;
    list->items[list->n].scope_index = scope_index;
    list->n++;
    atomic_fetch_add_explicit(&w->interest[interest_slot(key)], 1, memory_order_release);
    return 0;
}

static void sub_remove(struct worker *w, uint64_t key, const struct vm *vm)
{
    struct sublist *list = rtmap_get(&w->subs, key);
    for (uint32_t i = 0; list && i < list->n; i++) {
        if (list->items[i].vm == vm) {
            memmove(&list->items[i], &list->items[i + 1], (list->n - i - 1) * sizeof *list->items);
            list->n--;
            atomic_fetch_sub_explicit(&w->interest[interest_slot(key)], 1, memory_order_relaxed);
            return;
        }
    }
}

int worker_subscribe(struct worker *w, struct vm *vm)
{
    size_t n = vm_subscriptions(vm, NULL, NULL, 0);
    if (n == 0)
        return 0;
    uint64_t *keys = malloc(n * sizeof *keys);
    uint16_t *index = malloc(n * sizeof *index);
    if (!keys || !index) {
        free(keys);
        free(index);
        return -1;
    }
    vm_subscriptions(vm, keys, index, n);
    for (size_t i = 0; i < n; i++) {
        if (sub_add(w, keys[i], vm, index[i]) != 0) {
            while (i-- > 0)
                sub_remove(w, keys[i], vm);
            free(keys);
            free(index);
            return -1;
        }
    }
    vm->sub_keys = keys;
    vm->sub_index = index;
    vm->nsubs = (uint32_t)n;
    return 0;
}

void worker_retire_vm(struct worker *w, struct vm *vm)
{
    if (vm->nsubs == 0) {
        vm_free_shell(vm);
        return;
    }
    vm->reap_next = w->reap;
    w->reap = vm;
    w->nreap++;
}

void worker_reap(struct worker *w)
{
    if (w->walking)
        return; /* the walk in progress still reads the subscription lists */
    while (w->reap) {
        struct vm *vm = w->reap;
        w->reap = vm->reap_next;
        for (uint32_t i = 0; i < vm->nsubs; i++)
            sub_remove(w, vm->sub_keys[i], vm);
        vm_free_shell(vm);
    }
    w->nreap = 0;
}

/* ------------------------------------------------------------ timers */

static bool timer_before(const struct timer *a, const struct timer *b)
{
    return a->deadline_ns < b->deadline_ns || (a->deadline_ns == b->deadline_ns && a->seq < b->seq);
}

static void heap_set(struct worker *w, size_t i, struct timer *t)
{
    w->heap[i] = t;
    t->heap_index = i;
}

static void sift_up(struct worker *w, size_t i)
{
    struct timer *t = w->heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_before(t, w->heap[parent]))
            break;
        heap_set(w, i, w->heap[parent]);
        i = parent;
    }
    heap_set(w, i, t);
}

static void sift_down(struct worker *w, size_t i)
{
    struct timer *t = w->heap[i];
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= w->nheap)
            break;
        if (child + 1 < w->nheap && timer_before(w->heap[child + 1], w->heap[child]))
            child++;
        if (!timer_before(w->heap[child], t))
            break;
        heap_set(w, i, w->heap[child]);
        i = child;
    }
    heap_set(w, i, t);
}

/* Into the heap, keeping its seq (its place among equal deadlines). */
static void heap_push(struct worker *w, struct timer *t)
{
    w->heap[w->nheap] = t;
    t->heap_index = w->nheap++;
    sift_up(w, t->heap_index);
}

int worker_timer_schedule(struct worker *w, struct timer *t)
{
    /* room for the deferred timers too, so putting them back never
     * allocates */
    if (w->nheap + w->ndeferred == w->heap_cap) {
        size_t cap = w->heap_cap ? w->heap_cap * 2 : 64;
        struct timer **heap = realloc(w->heap, cap * sizeof *heap);
        if (!heap)
            return -1;
        w->heap = heap;
        w->heap_cap = cap;
    }
    t->seq = ++w->timer_seq;
    heap_push(w, t);
    return 0;
}

/* Holds a due timer (out of the heap) until the pass ends; -1 when out of
 * memory (then it runs now). */
static int defer_timer(struct worker *w, struct timer *t)
{
    if (w->ndeferred == w->deferred_cap) {
        size_t cap = w->deferred_cap ? w->deferred_cap * 2 : 64;
        struct timer **grown = realloc(w->deferred, cap * sizeof *grown);
        if (!grown)
            return -1;
        w->deferred = grown;
        w->deferred_cap = cap;
    }
    t->deferred = true;
    t->heap_index = w->ndeferred;
    w->deferred[w->ndeferred++] = t;
    return 0;
}

/* A deferred timer cancelled or freed with its VM during the pass (a
 * command served between two timers). */
static void undefer_timer(struct worker *w, struct timer *t)
{
    size_t i = t->heap_index;
    struct timer *last = w->deferred[--w->ndeferred];
    if (i != w->ndeferred) {
        w->deferred[i] = last;
        last->heap_index = i;
    }
    t->deferred = false;
    t->heap_index = SIZE_MAX;
}

static void restore_deferred(struct worker *w)
{
    while (w->ndeferred > 0) {
        struct timer *t = w->deferred[--w->ndeferred];
        t->deferred = false;
        heap_push(w, t);
    }
}

void worker_timer_unschedule(struct worker *w, struct timer *t)
{
    size_t i = t->heap_index;
    if (i == SIZE_MAX)
        return;
    if (t->deferred) {
        undefer_timer(w, t);
        return;
    }
    t->heap_index = SIZE_MAX;
    struct timer *last = w->heap[--w->nheap];
    if (i == w->nheap)
        return;
    heap_set(w, i, last);
    if (i > 0 && timer_before(last, w->heap[(i - 1) / 2]))
        sift_up(w, i);
    else
        sift_down(w, i);
}

/* Whether the instance has used its share of this pass: WORKER_TIMER_SLICE_NS
 * in timer callbacks. Its later due timers then wait for the next pass,
 * after the queue's events and commands, so a strategy that keeps its
 * worker busy in timer callbacks (each within its budget) holds its
 * neighbours' events for one callback at a time, not for the sum of its
 * budget's worth of them. */
static bool over_share(struct worker *w, const struct timer *t)
{
    struct instance *inst = t->vm->inst;
    if (inst->timer_pass != w->timer_pass) {
        inst->timer_pass = w->timer_pass;
        inst->timer_pass_ns = 0;
    }
    return inst->timer_pass_ns >= WORKER_TIMER_SLICE_NS;
}

/* Runs the timers due when the pass begins (those set meanwhile wait for
 * the next). Commands queued meanwhile run between two timers, so a stop
 * takes effect before the instance's next callback and a control-plane
 * call waits for one callback at most; inside a subscription walk the pass
 * ends instead, and the walk serves them (deliver_run). */
void worker_run_timers(struct worker *w)
{
    w->timer_pass++;
    int64_t now = clock_mono_ns(), spent = 0;
    /* a pass ends once its callbacks took a slice: the events queued
     * meanwhile go first, then the next pass */
    for (int n = 0; n < WORKER_TIMERS_PER_PASS && w->nheap > 0 && spent < WORKER_TIMER_SLICE_NS;
         n++) {
        if (atomic_load_explicit(&w->cmd_pending, memory_order_acquire)) {
            if (w->walking)
                break;
            serve_commands(w);
            if (w->nheap == 0)
                break;
        }
        struct timer *t = w->heap[0];
        if (t->deadline_ns > now)
            break;
        worker_timer_unschedule(w, t);
        if (over_share(w, t) && defer_timer(w, t) == 0)
            continue;
        /* the instance outlives the call (only a command frees it); the
         * VM may not */
        struct instance *inst = t->vm->inst;
        int64_t t0 = clock_mono_ns();
        vm_fire_timer(w, t);
        int64_t took = clock_mono_ns() - t0;
        inst->timer_pass_ns += took;
        spent += took;
        if (w->nreap)
            worker_reap(w);
    }
    restore_deferred(w);
}

/* ------------------------------------------------------------ the thread */

static void stop_all(struct worker *w)
{
    for (size_t i = 0; i < w->instances.cap; i++) {
        struct instance *inst = w->instances.keys[i] ? w->instances.vals[i] : NULL;
        if (inst)
            drop_staged(w, inst);
        if (inst && inst->vm) {
            vm_destroy(w, inst->vm);
            inst->vm = NULL;
        }
    }
    worker_reap(w);
}

/* Splits a batch into commands, directed events and runs of broadcast
 * events. */
static void process_batch(struct worker *w, struct msg *batch, size_t n)
{
    struct event *run[WORKER_BATCH];
    size_t run_pos[WORKER_BATCH];
    for (size_t i = 0; i < n;) {
        if (batch[i].cmd) {
            run_command(w, batch[i++].cmd);
        } else if (batch[i].ev->target) {
            handle_event(w, batch[i].ev, batch[i].pos);
            i++;
        } else {
            size_t k = 0;
            while (i < n && batch[i].ev && !batch[i].ev->target) {
                run_pos[k] = batch[i].pos;
                run[k++] = batch[i++].ev;
            }
            if (k == 1)
                handle_event(w, run[0], run_pos[0]);
            else
                deliver_run(w, run, run_pos, k);
        }
        /* keep timers punctual under a long batch of heavy events */
        w->now_ns = clock_mono_ns();
        if (w->nheap > 0 && w->heap[0]->deadline_ns <= w->now_ns)
            worker_run_timers(w);
    }
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct msg batch[WORKER_BATCH];
    size_t n = 0;
    while (take_batch(w, batch, &n)) {
        process_batch(w, batch, n);
        w->now_ns = clock_mono_ns();
        worker_run_timers(w);
    }
    stop_all(w);
    return NULL;
}
