/*
 * persist: the session's store writer.
 *
 * One SQLite transaction per order step would cap the matching engine at
 * the disk's fsync rate, and a batch committed by the matching engine
 * stalls ticks and orders for the length of the commit (milliseconds, the
 * largest part of the tick-to-order tail). So the engine only
 * copies each change into a queue; a writer thread waits until
 * SIM_BATCH_MAX changes are queued or the oldest has waited SIM_BATCH_NS,
 * takes the whole queue, writes each record's JSON text straight from the
 * C record and hands the rows to its committer, which puts them in the
 * store in one transaction
 * (store_rows_put; one sync per batch: the syncs and the writer's CPU are
 * what the provider and the workers feel of it, on two cores, hence its
 * pauses: give_way()). An order that changes state several times within a
 * batch is built and written once, in its latest state (likewise balances
 * per asset). A
 * session stops its writer after its provider thread, and the writer
 * commits everything queued before it exits, so a clean stop loses
 * nothing.
 *
 * A failed write is logged and dropped: the store is the history, the
 * events already told the strategies, and retrying forever would stall
 * the market.
 */
#include "market/sim.h"

#include "core/clock.h"
#include "core/log.h"
#include "core/metrics.h"

#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* --------------------------------------------------------------- writer */

/* One commit's rows. Orders and balances are keyed (by order id, by asset):
 * a later change in the batch takes the row of an earlier one, which keeps
 * its place, so each row's text is built once, from its latest change. The
 * rows point into the batch's records and own their texts; only the
 * writer thread touches them. */
struct rows {
    json_t *index; /* "o:<id>" / "b:<asset>" -> position in its array */
    struct store_order_row *orders;
    struct store_execution_row *executions;
    struct store_balance_row *balances;
    /* the change each row is built from */
    const struct sim_rec **order_src, **execution_src, **balance_src;
    char (*exec_ids)[EVENT_ORDER_ID_MAX + 16];
    size_t norders, nexecutions, nbalances;
    struct sim_batch *batch; /* whose writer builds these rows */
    size_t built;            /* rows built so far */
    bool failed;             /* out of memory */
};

/* The writer runs at the idle class (the committer as SCHED_BATCH,
 * sim.h), yet a scheduler tick can still hand either the core of a worker
 * that was polling for events, and it then keeps
 * that core until it blocks or the next tick (4 ms here): that was the
 * largest stall of tick-to-order. Neither yielding nor a sleep of a
 * microsecond gives the core back for sure (the sleep's timer has expired
 * before the thread would block), so the writer naps 20 us between slices
 * of STORE_ROWS_SLICE rows, built or inserted (about 0.1 ms of work):
 * a preempted worker gets its core back within a slice, and the writer
 * wakes on whichever core is idle. A crowded queue means the provider is
 * waiting for the writer: then it does not pause. */
static void give_way(void *arg)
{
    const struct sim_batch *b = arg;
    if (sim_batch_crowded(b))
        return;
    struct timespec nap = {0, 20000};
    (void)nanosleep(&nap, NULL);
}

/* The slot for `key` in an array of n rows: the one an earlier change of
 * the batch took, or the next (n grows by one). -1 when memory ran out. */
static long slot_for(struct rows *w, const char *prefix, const char *key, size_t *n)
{
    char name[EVENT_ORDER_ID_MAX + 8];
    snprintf(name, sizeof name, "%s%s", prefix, key);
    json_t *at = json_object_get(w->index, name);
    if (at)
        return (long)json_integer_value(at);
    if (json_object_set_new(w->index, name, json_integer((json_int_t)*n)) != 0)
        return -1;
    return (long)(*n)++;
}

/* Assigns the change its row; false when memory ran out. */
static bool place(struct rows *w, const struct sim_rec *c)
{
    long i;
    switch (c->kind) {
    case SIM_REC_ORDER:
        i = slot_for(w, "o:", c->u.o.order.order_id, &w->norders);
        if (i >= 0)
            w->order_src[i] = c;
        return i >= 0;
    case SIM_REC_BALANCE:
        i = slot_for(w, "b:", c->u.b.asset.asset, &w->nbalances);
        if (i >= 0)
            w->balance_src[i] = c;
        return i >= 0;
    case SIM_REC_EXECUTION:
    default:
        w->execution_src[w->nexecutions++] = c;
        return true;
    }
}

/* sb's text as a row's record; false (and the batch failed) when memory
 * ran out. Gives way after every STORE_ROWS_SLICE rows. */
static bool take_text(struct rows *w, struct strbuf *sb, const char **record, size_t *len)
{
    if (strbuf_failed(sb)) {
        strbuf_release(sb);
        w->failed = true;
        return false;
    }
    *record = strbuf_detach(sb, len);
    if (++w->built % STORE_ROWS_SLICE == 0)
        give_way(w->batch);
    return true;
}

static void build_order(struct rows *w, const char *provider, size_t i)
{
    const struct sim_rec *r = w->order_src[i];
    const struct sim_order *o = &r->u.o.order;
    struct store_order_row *row = &w->orders[i];
    struct strbuf sb = STRBUF_INIT;
    sim_order_text(&sb, provider, o, r->u.o.reason);
    if (!take_text(w, &sb, &row->record, &row->record_len))
        return;
    row->id = o->order_id;
    row->instance = o->instance_id;
    row->provider = provider;
    row->state = event_exec_status_name(o->state);
    row->client_order_id = o->client_order_id;
    row->created_at = o->placed_ms;
    row->updated_at = o->updated_ms;
}

static void build_execution(struct rows *w, const char *provider, size_t i)
{
    const struct sim_rec *r = w->execution_src[i];
    const struct sim_order *o = &r->u.o.order;
    struct store_execution_row *row = &w->executions[i];
    char *id = w->exec_ids[i];
    (void)snprintf(id, sizeof w->exec_ids[0], "%s-%u", o->order_id, o->fills);
    struct strbuf sb = STRBUF_INIT;
    sim_execution_text(&sb, provider, r, id);
    if (!take_text(w, &sb, &row->record, &row->record_len))
        return;
    row->provider = provider;
    row->execution_id = id;
    row->order_id = o->order_id;
    row->instance = o->instance_id;
    row->traded_at = row->created_at = r->u.o.at_ms;
}

static void build_balance(struct rows *w, const char *provider, size_t i)
{
    const struct sim_rec *r = w->balance_src[i];
    const struct sim_asset *as = &r->u.b.asset;
    struct store_balance_row *row = &w->balances[i];
    struct strbuf sb = STRBUF_INIT;
    sim_balance_text(&sb, provider, as, r->u.b.created_ms);
    if (!take_text(w, &sb, &row->record, &row->record_len))
        return;
    row->provider = provider;
    row->asset = as->asset;
    row->snapshot_at = row->updated_at = as->updated_ms;
    row->created_at = r->u.b.created_ms;
}

/* Arrays for n records of any kind (a batch never holds more rows than records). */
static bool rows_init(struct rows *w, size_t n)
{
    size_t cap = n ? n : 1;
    w->index = json_object();
    w->orders = calloc(cap, sizeof *w->orders);
    w->executions = calloc(cap, sizeof *w->executions);
    w->balances = calloc(cap, sizeof *w->balances);
    w->order_src = calloc(cap, sizeof *w->order_src);
    w->execution_src = calloc(cap, sizeof *w->execution_src);
    w->balance_src = calloc(cap, sizeof *w->balance_src);
    w->exec_ids = calloc(cap, sizeof *w->exec_ids);
    return w->index && w->orders && w->executions && w->balances && w->order_src &&
           w->execution_src && w->balance_src && w->exec_ids;
}

static void rows_free(struct rows *w)
{
    for (size_t i = 0; i < w->norders; i++)
        free((char *)w->orders[i].record);
    for (size_t i = 0; i < w->nexecutions; i++)
        free((char *)w->executions[i].record);
    for (size_t i = 0; i < w->nbalances; i++)
        free((char *)w->balances[i].record);
    json_decref(w->index);
    free(w->orders);
    free(w->executions);
    free(w->balances);
    free(w->order_src);
    free(w->execution_src);
    free(w->balance_src);
    free(w->exec_ids);
}

/* Places every change, then builds each row once. */
static void build_rows(struct rows *w, const char *provider, const struct sim_rec *r)
{
    size_t placed = 0;
    for (const struct sim_rec *c = r; c && !w->failed; c = c->next) {
        w->failed = !place(w, c);
        if (++placed % (8 * (size_t)STORE_ROWS_SLICE) == 0)
            give_way(w->batch);
    }
    for (size_t i = 0; i < w->norders && !w->failed; i++)
        build_order(w, provider, i);
    for (size_t i = 0; i < w->nexecutions && !w->failed; i++)
        build_execution(w, provider, i);
    for (size_t i = 0; i < w->nbalances && !w->failed; i++)
        build_balance(w, provider, i);
}

/* Orders, executions and balances every writer failed to record, and when
 * the last of them was lost (wall-clock ms). */
static _Atomic uint64_t records_lost;
static _Atomic int64_t records_lost_ms;

uint64_t sim_records_lost(void)
{
    return atomic_load_explicit(&records_lost, memory_order_relaxed);
}

int64_t sim_records_lost_ms(void)
{
    return atomic_load_explicit(&records_lost_ms, memory_order_relaxed);
}

static void count_lost(size_t n)
{
    atomic_fetch_add_explicit(&records_lost, n, memory_order_relaxed);
    atomic_store_explicit(&records_lost_ms, clock_wall_ms(), memory_order_relaxed);
}

/* Hands the rows to the committer and waits for their commit. */
static int commit(struct sim_batch *b, const struct store_rows *rows, struct err *err)
{
    pthread_mutex_lock(&b->lock);
    b->commit_rows = rows;
    b->commit_err = err;
    pthread_cond_signal(&b->commit_wake);
    while (b->commit_rows)
        pthread_cond_wait(&b->committed, &b->lock);
    int rc = b->commit_rc;
    pthread_mutex_unlock(&b->lock);
    return rc;
}

static void *committer_main(void *arg)
{
    struct sim_batch *b = arg;
    /* The normal class's share of the CPU, without its wake-up
     * preemption: a batch handed over waits for the core's turn instead of
     * taking it from a worker that is polling for events. */
    struct sched_param batch = {0};
    (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &batch);
    pthread_mutex_lock(&b->lock);
    for (;;) {
        while (!b->commit_rows && !b->commit_stopping)
            pthread_cond_wait(&b->commit_wake, &b->lock);
        if (!b->commit_rows)
            break;
        const struct store_rows *rows = b->commit_rows;
        struct err *err = b->commit_err;
        pthread_mutex_unlock(&b->lock);
        int rc = store_rows_put(b->store, rows, err);
        pthread_mutex_lock(&b->lock);
        b->commit_rc = rc;
        b->commit_rows = NULL;
        pthread_cond_signal(&b->committed);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* Builds and commits one batch (one transaction for the three tables, so
 * one sync), freeing its records. */
static void write_batch(struct sim_batch *b, struct sim_rec *r)
{
    size_t n = 0;
    for (const struct sim_rec *c = r; c; c = c->next)
        n++;
    struct rows w = {.batch = b};
    w.failed = !rows_init(&w, n);
    if (!w.failed)
        build_rows(&w, b->provider, r);
    struct store_rows rows = {w.orders,   w.norders,   w.executions, w.nexecutions,
                              w.balances, w.nbalances, give_way,     b};
    struct err err = ERR_INIT;
    /* the reports reached the instances; the history lost them: counted, so
     * that an alert can say so (a full state disk is the likely cause) */
    if (w.failed) {
        count_lost(n);
        log_error("market", "provider %s: %zu changes not recorded: out of memory", b->provider, n);
    } else if (commit(b, &rows, &err) < 0) {
        count_lost(n);
        log_error("market", "provider %s: %zu changes not recorded: %s", b->provider, n,
                  err.message);
    }
    err_clear(&err);
    rows_free(&w);
    while (r) {
        struct sim_rec *next = r->next;
        free(r);
        r = next;
    }
}

static bool batch_due(const struct sim_batch *b)
{
    return b->count >= SIM_BATCH_MAX || b->stopping ||
           clock_mono_ns() >= b->first_ns + SIM_BATCH_NS;
}

/* Waits, with b->lock held, until there is a batch to write or nothing
 * more will come; false in the latter case. */
static bool wait_batch(struct sim_batch *b)
{
    for (;;) {
        if (b->count == 0) {
            if (b->stopping)
                return false;
            pthread_cond_wait(&b->wake, &b->lock);
            continue;
        }
        if (batch_due(b))
            return true;
        int64_t due = b->first_ns + SIM_BATCH_NS;
        struct timespec ts = {(time_t)(due / 1000000000), (long)(due % 1000000000)};
        pthread_cond_timedwait(&b->wake, &b->lock, &ts);
    }
}

static void *writer_main(void *arg)
{
    struct sim_batch *b = arg;
    /* The records are history, not the order path: the writer builds
     * rows only with CPU that no worker or provider wants, so that never
     * preempts them on a machine with as many busy threads as cores. Under
     * saturation its queue fills and the provider waits for it
     * (back-pressure), which hands the writer the CPU it needs. The
     * commit, which holds the store's lock, is the committer's (sim.h). */
    struct sched_param idle = {0};
    (void)pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
    pthread_mutex_lock(&b->lock);
    while (wait_batch(b)) {
        struct sim_rec *list = b->head;
        b->head = b->tail = NULL;
        b->count = 0;
        atomic_store_explicit(&b->queued, 0, memory_order_relaxed);
        b->first_ns = 0;
        pthread_cond_signal(&b->room);
        pthread_mutex_unlock(&b->lock);
        write_batch(b, list);
        pthread_mutex_lock(&b->lock);
    }
    pthread_mutex_unlock(&b->lock);
    return NULL;
}

/* --------------------------------------------------------------- public */

static int init_sync(struct sim_batch *b)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&b->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        return -1;
    if (pthread_cond_init(&b->room, NULL) != 0) {
        pthread_cond_destroy(&b->wake);
        return -1;
    }
    if (pthread_mutex_init(&b->lock, NULL) != 0) {
        pthread_cond_destroy(&b->room);
        pthread_cond_destroy(&b->wake);
        return -1;
    }
    if (pthread_cond_init(&b->commit_wake, NULL) != 0) {
        pthread_mutex_destroy(&b->lock);
        pthread_cond_destroy(&b->room);
        pthread_cond_destroy(&b->wake);
        return -1;
    }
    if (pthread_cond_init(&b->committed, NULL) != 0) {
        pthread_cond_destroy(&b->commit_wake);
        pthread_mutex_destroy(&b->lock);
        pthread_cond_destroy(&b->room);
        pthread_cond_destroy(&b->wake);
        return -1;
    }
    return 0;
}

static void destroy_sync(struct sim_batch *b)
{
    pthread_cond_destroy(&b->committed);
    pthread_cond_destroy(&b->commit_wake);
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->room);
    pthread_cond_destroy(&b->wake);
}

/* Stops and joins the committer, once the writer has nothing more for it. */
static void stop_committer(struct sim_batch *b)
{
    pthread_mutex_lock(&b->lock);
    b->commit_stopping = true;
    pthread_cond_signal(&b->commit_wake);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->committer, NULL);
}

int sim_batch_start(struct sim_batch *b, struct store *store, const char *provider, struct err *err)
{
    *b = (struct sim_batch){.provider = provider};
    if (!store)
        return 0;
    if (init_sync(b) < 0) {
        err_set(err, ERR_INTERNAL, "provider %s: cannot create the store writer's locks", provider);
        return -1;
    }
    b->store = store; /* the committer reads it */
    int rc = pthread_create(&b->committer, NULL, committer_main, b);
    if (rc == 0) {
        rc = pthread_create(&b->thread, NULL, writer_main, b);
        if (rc != 0)
            stop_committer(b);
    }
    if (rc != 0) {
        destroy_sync(b);
        b->store = NULL;
        err_set_errno(err, ERR_INTERNAL, rc, "provider %s: cannot start the store writer",
                      provider);
        return -1;
    }
    char name[16];
    snprintf(name, sizeof name, "rec:%.11s", provider);
    pthread_setname_np(b->thread, name);
    snprintf(name, sizeof name, "commit:%.8s", provider);
    pthread_setname_np(b->committer, name);
    return 0;
}

static void enqueue(struct sim_batch *b, struct sim_rec *r)
{
    pthread_mutex_lock(&b->lock);
    while (b->count >= SIM_WRITER_MAX)
        pthread_cond_wait(&b->room, &b->lock);
    if (b->tail)
        b->tail->next = r;
    else
        b->head = r;
    b->tail = r;
    /* The writer sleeps without a deadline while the queue is empty and
     * with the batch's deadline otherwise: wake it to start the clock and
     * when the batch is full, not for every record. */
    atomic_store_explicit(&b->queued, b->count + 1, memory_order_relaxed);
    if (++b->count == 1) {
        b->first_ns = clock_mono_ns();
        pthread_cond_signal(&b->wake);
    } else if (b->count == SIM_BATCH_MAX) {
        pthread_cond_signal(&b->wake);
    }
    pthread_mutex_unlock(&b->lock);
}

bool sim_batch_crowded(const struct sim_batch *b)
{
    return atomic_load_explicit(&b->queued, memory_order_relaxed) >= SIM_WRITER_MAX / 2;
}

static struct sim_rec *new_rec(struct sim_batch *b, enum sim_rec_kind kind)
{
    struct sim_rec *r = malloc(sizeof *r);
    static _Thread_local bool warned;
    if (!r && !warned) {
        warned = true;
        log_error("market", "provider %s: out of memory, dropping store records", b->provider);
    }
    if (r) {
        r->next = NULL;
        r->kind = kind;
    }
    return r;
}

void sim_batch_order(struct sim_batch *b, const struct sim_order *o,
                     const struct sim_symbol_cfg *cfg, const char *reason)
{
    struct sim_rec *r = b->store ? new_rec(b, SIM_REC_ORDER) : NULL;
    if (!r)
        return;
    r->u.o.order = *o;
    r->u.o.cfg = cfg;
    snprintf(r->u.o.reason, sizeof r->u.o.reason, "%s", reason ? reason : "");
    enqueue(b, r);
}

void sim_batch_execution(struct sim_batch *b, const struct sim_order *o,
                         const struct sim_symbol_cfg *cfg, double qty, double price, double fee,
                         bool maker, int64_t at_ms)
{
    struct sim_rec *r = b->store ? new_rec(b, SIM_REC_EXECUTION) : NULL;
    if (!r)
        return;
    r->u.o.order = *o;
    r->u.o.cfg = cfg;
    r->u.o.qty = qty;
    r->u.o.price = price;
    r->u.o.fee = fee;
    r->u.o.maker = maker;
    r->u.o.at_ms = at_ms;
    r->u.o.reason[0] = '\0';
    enqueue(b, r);
}

void sim_batch_balance(struct sim_batch *b, const struct sim_asset *as, int64_t created_ms)
{
    struct sim_rec *r = b->store ? new_rec(b, SIM_REC_BALANCE) : NULL;
    if (!r)
        return;
    r->u.b.asset = *as;
    r->u.b.created_ms = created_ms;
    enqueue(b, r);
}

void sim_batch_stop(struct sim_batch *b)
{
    if (!b->store)
        return;
    pthread_mutex_lock(&b->lock);
    b->stopping = true;
    pthread_cond_signal(&b->wake);
    pthread_mutex_unlock(&b->lock);
    pthread_join(b->thread, NULL);
    stop_committer(b);
    destroy_sync(b);
    b->store = NULL;
}

/* -------------------------------------------------------------- latency */

const double sim_latency_bounds[SIM_LATENCY_BUCKETS - 1] = {1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4,
                                                            1e-3, 5e-3, 1e-2, 5e-2, 1e-1};

void sim_latency_add(struct sim_latency *h, int64_t ns)
{
    if (ns < 0)
        ns = 0;
    size_t b = metrics_bucket_of(sim_latency_bounds, SIM_LATENCY_BUCKETS, ns);
    /* single writer: a relaxed load and store are enough */
    atomic_store_explicit(&h->buckets[b],
                          atomic_load_explicit(&h->buckets[b], memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->sum_ns,
                          atomic_load_explicit(&h->sum_ns, memory_order_relaxed) + (uint64_t)ns,
                          memory_order_relaxed);
}
