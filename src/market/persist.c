/*
 * persist: the session's store writer.
 *
 * One SQLite transaction per order step would cap the matching engine at
 * the disk's fsync rate, and a batch committed by the matching engine
 * stalls ticks and orders for the length of the commit (milliseconds, the
 * largest part of the tick-to-order tail). So the engine only
 * copies each change into a queue; a writer thread waits until
 * SIM_BATCH_MAX changes are queued or the oldest has waited SIM_BATCH_NS,
 * takes the whole queue, builds the JSON records and writes them in one
 * transaction (one sync per batch: the syncs and the writer's CPU are
 * what the provider and the workers feel of it, on two cores). An order that changes state several
 * times within a batch is written once, in its latest state (likewise balances per asset). A
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
#include "core/intern.h"
#include "core/log.h"

#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* -------------------------------------------------------------- records */

static json_t *ms_or_null(int64_t ms)
{
    return ms ? json_integer(ms) : json_null();
}

static json_t *order_record(const char *provider, const struct sim_order *o, const char *reason)
{
    json_t *meta = json_pack("{s:b, s:o, s:o, s:I}", "dryRun", o->dry_run, "filledQuantity",
                             sim_decimal_json(o->filled), "averagePrice",
                             sim_decimal_json(o->filled > 0 ? o->notional / o->filled : 0),
                             "instanceKey", (json_int_t)o->instance_key);
    if (meta && reason && *reason)
        json_object_set_new(meta, "reason", json_string(reason));
    return json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:o, s:o, s:s, s:n, s:I, s:o*, s:o, s:o, s:I, s:I}",
        "id", o->order_id, "provider", provider, "strategyInstance", o->instance_id,
        "clientOrderId", o->client_order_id, "symbol", intern_name(o->symbol), "side",
        order_side_name(o->side), "type", order_type_name(o->type), "quantity",
        sim_decimal_json(o->quantity), "price",
        o->type == ORDER_LIMIT ? sim_decimal_json(o->price) : json_null(), "state",
        event_exec_status_name(o->state), "externalReference", "placedAt", (json_int_t)o->placed_ms,
        "metadata", meta, "acknowledgedAt", ms_or_null(o->acknowledged_ms), "completedAt",
        ms_or_null(o->completed_ms), "createdAt", (json_int_t)o->placed_ms, "updatedAt",
        (json_int_t)o->updated_ms);
}

static json_t *execution_record(const char *provider, const struct sim_rec *r)
{
    const struct sim_order *o = &r->u.o.order;
    const struct sim_symbol_cfg *cfg = r->u.o.cfg;
    char exec_id[EVENT_ORDER_ID_MAX + 16];
    snprintf(exec_id, sizeof exec_id, "%s-%u", o->order_id, o->fills);
    return json_pack("{s:s, s:s, s:s, s:s, s:o, s:o, s:o, s:s, s:s, s:I, s:{s:s, s:s, s:b}, s:I}",
                     "orderId", o->order_id, "provider", provider, "strategyInstance",
                     o->instance_id, "executionId", exec_id, "quantity",
                     sim_decimal_json(r->u.o.qty), "price", sim_decimal_json(r->u.o.price), "fee",
                     sim_decimal_json(r->u.o.fee), "feeAsset", cfg->quote, "liquidity",
                     r->u.o.maker ? "maker" : "taker", "tradedAt", (json_int_t)r->u.o.at_ms,
                     "metadata", "symbol", cfg->symbol, "side", order_side_name(o->side), "dryRun",
                     o->dry_run, "createdAt", (json_int_t)r->u.o.at_ms);
}

/* --------------------------------------------------------------- writer */

/* What one commit writes: {id: OrderRecord}, [ExecutionRecord],
 * {asset: BalanceRecord}. */
struct tables {
    json_t *orders, *executions, *balances;
};

/* Keyed records replace an earlier version in the same batch. */
static void put_keyed(json_t **table, const char *key, json_t *record)
{
    if (!record)
        return;
    if (!*table)
        *table = json_object();
    if (*table)
        json_object_set_new(*table, key, record); /* releases the record on failure */
    else
        json_decref(record);
}

static void put_execution(struct tables *t, json_t *record)
{
    if (!record)
        return;
    if (!t->executions)
        t->executions = json_array();
    if (t->executions)
        json_array_append_new(t->executions, record);
    else
        json_decref(record);
}

static void add_record(struct sim_batch *b, struct tables *t, const struct sim_rec *r)
{
    switch (r->kind) {
    case SIM_REC_ORDER:
        put_keyed(&t->orders, r->u.o.order.order_id,
                  order_record(b->provider, &r->u.o.order, r->u.o.reason));
        break;
    case SIM_REC_EXECUTION:
        put_execution(t, execution_record(b->provider, r));
        break;
    case SIM_REC_BALANCE:
        put_keyed(&t->balances, r->u.b.asset.asset,
                  sim_balance_json(&r->u.b.asset, r->u.b.created_ms, b->provider));
        break;
    }
}

static json_t *values_of(json_t *table)
{
    json_t *list = json_array();
    const char *key;
    json_t *value;
    json_object_foreach(table, key, value)
    {
        json_array_append(list, value);
    }
    return list;
}

/* Builds and commits one batch (one transaction for the three tables, so
 * one sync), freeing its records. */
static void write_batch(struct sim_batch *b, struct sim_rec *r)
{
    struct tables t = {0};
    size_t n = 0;
    while (r) {
        struct sim_rec *next = r->next;
        add_record(b, &t, r);
        free(r);
        r = next;
        n++;
    }
    json_t *orders = t.orders ? values_of(t.orders) : NULL;
    json_t *balances = t.balances ? values_of(t.balances) : NULL;
    struct store_records lists = {orders, t.executions, balances};
    struct err err = ERR_INIT;
    if ((t.orders && !orders) || (t.balances && !balances))
        log_warn("market", "provider %s: %zu changes not recorded: out of memory", b->provider, n);
    else if (store_records_put(b->store, &lists, &err) < 0)
        log_warn("market", "provider %s: %zu changes not recorded: %s", b->provider, n,
                 err.message);
    err_clear(&err);
    json_decref(orders);
    json_decref(balances);
    json_decref(t.orders);
    json_decref(t.executions);
    json_decref(t.balances);
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
    /* The records are history, not the order path: the writer takes only
     * CPU that no worker or provider wants, so a commit never preempts
     * them on a machine with as many busy threads as cores. Under
     * saturation its queue fills and the provider waits for it
     * (back-pressure), which hands the writer the CPU it needs. */
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
    return 0;
}

static void destroy_sync(struct sim_batch *b)
{
    pthread_mutex_destroy(&b->lock);
    pthread_cond_destroy(&b->room);
    pthread_cond_destroy(&b->wake);
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
    int rc = pthread_create(&b->thread, NULL, writer_main, b);
    if (rc != 0) {
        destroy_sync(b);
        err_set_errno(err, ERR_INTERNAL, rc, "provider %s: cannot start the store writer",
                      provider);
        return -1;
    }
    char name[16];
    snprintf(name, sizeof name, "rec:%.11s", provider);
    pthread_setname_np(b->thread, name);
    b->store = store;
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
    double seconds = (double)ns / 1e9;
    int b = 0;
    while (b < SIM_LATENCY_BUCKETS - 1 && seconds > sim_latency_bounds[b])
        b++;
    /* single writer: a relaxed load and store are enough */
    atomic_store_explicit(&h->buckets[b],
                          atomic_load_explicit(&h->buckets[b], memory_order_relaxed) + 1,
                          memory_order_relaxed);
    atomic_store_explicit(&h->sum_ns,
                          atomic_load_explicit(&h->sum_ns, memory_order_relaxed) + (uint64_t)ns,
                          memory_order_relaxed);
}
