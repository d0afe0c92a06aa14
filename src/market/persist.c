/*
 * persist: the provider thread's store writes, batched.
 *
 * One SQLite transaction per order step would cap the matching engine at
 * the disk's fsync rate, so records wait here until SIM_BATCH_MAX of them
 * are pending or the oldest has waited SIM_BATCH_NS, then go to the store
 * in one call per table. An order that changes state several times within
 * a batch is written once, in its latest state (likewise balances per
 * asset). The session flushes on stop, so a clean stop loses nothing.
 *
 * A failed write is logged and dropped: the store is the history, the
 * events already told the strategies, and retrying forever would stall
 * the market.
 */
#include "market/sim.h"

#include "core/clock.h"
#include "core/log.h"

#include <stdint.h>

void sim_batch_init(struct sim_batch *b, struct store *store, const char *provider)
{
    *b = (struct sim_batch){.store = store, .provider = provider};
}

static void note_record(struct sim_batch *b)
{
    b->count++;
    if (!b->first_ns)
        b->first_ns = clock_mono_ns();
    if (b->count >= SIM_BATCH_MAX)
        sim_batch_flush(b, true);
}

/* Keyed records replace an earlier version in the same batch. */
static void put_keyed(struct sim_batch *b, json_t **table, const char *key_field, json_t *record)
{
    if (!b->store || !record) {
        json_decref(record);
        return;
    }
    const char *key = json_string_value(json_object_get(record, key_field));
    if (!*table)
        *table = json_object();
    if (!*table || !key || json_object_set_new(*table, key, record) < 0)
        return; /* set_new released the record on failure */
    note_record(b);
}

void sim_batch_order(struct sim_batch *b, json_t *record)
{
    put_keyed(b, &b->orders, "id", record);
}

void sim_batch_balance(struct sim_batch *b, json_t *record)
{
    put_keyed(b, &b->balances, "asset", record);
}

void sim_batch_execution(struct sim_batch *b, json_t *record)
{
    if (!b->store || !record) {
        json_decref(record);
        return;
    }
    if (!b->executions)
        b->executions = json_array();
    if (!b->executions || json_array_append_new(b->executions, record) < 0)
        return;
    note_record(b);
}

int64_t sim_batch_deadline(const struct sim_batch *b)
{
    return b->count ? b->first_ns + SIM_BATCH_NS : INT64_MAX;
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

typedef int (*store_put_fn)(struct store *, const json_t *, struct err *);

static void write_table(struct sim_batch *b, json_t **table, bool keyed, store_put_fn put,
                        const char *what)
{
    if (!*table)
        return;
    json_t *list = keyed ? values_of(*table) : json_incref(*table);
    struct err err = ERR_INIT;
    if (!list || (json_array_size(list) > 0 && put(b->store, list, &err) < 0))
        log_warn("market", "provider %s: %zu %s not recorded: %s", b->provider,
                 list ? json_array_size(list) : 0, what, list ? err.message : "out of memory");
    err_clear(&err);
    json_decref(list);
    json_decref(*table);
    *table = NULL;
}

void sim_batch_flush(struct sim_batch *b, bool force)
{
    if (!b->count ||
        (!force && b->count < SIM_BATCH_MAX && clock_mono_ns() < sim_batch_deadline(b)))
        return;
    /* Orders first: an execution refers to its order. */
    write_table(b, &b->orders, true, store_orders_put, "order updates");
    write_table(b, &b->executions, false, store_executions_put, "executions");
    write_table(b, &b->balances, true, store_balances_put, "balance snapshots");
    b->count = 0;
    b->first_ns = 0;
}

void sim_batch_free(struct sim_batch *b)
{
    json_decref(b->orders);
    json_decref(b->executions);
    json_decref(b->balances);
    *b = (struct sim_batch){0};
}
