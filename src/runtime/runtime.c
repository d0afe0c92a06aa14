/*
 * runtime: the instance table and the control-plane calls.
 *
 * Every control-plane call holds rt->control for its whole length (calls are
 * serialised, so each one sees the effects of the previous), touches the
 * table under rt->lock briefly, persists, and hands VM work to the owning
 * worker through its queue, waiting for completion. A worker that stops an
 * instance on its own (a limit, an error streak) records the reason under
 * rt->lock and persists it from its thread; rtx_persist orders the two
 * writers by a version number so the store always ends with the newest
 * state.
 */
#include "runtime/internal.h"

#include "core/clock.h"
#include "core/intern.h"
#include "core/jsonutil.h"
#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_MAX_ERRORS 100
#define DEFAULT_LOG_LINES 200
#define DEFAULT_MAX_ORDERS_PER_SECOND 1000
/* At three million events a second a queue this deep is almost 3 ms of
 * work: room for any jitter, while a deeper one only adds latency and
 * memory under back-pressure. */
#define DEFAULT_QUEUE_CAPACITY 8192

/* ------------------------------------------------------------ table */

static int find_index_locked(struct runtime *rt, const char *id, bool *found)
{
    size_t lo = 0, hi = rt->ninstances;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(rt->instances[mid]->id, id);
        if (c == 0) {
            *found = true;
            return (int)mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return (int)lo;
}

struct instance *rtx_find_locked(struct runtime *rt, const char *id)
{
    bool found;
    int i = find_index_locked(rt, id, &found);
    return found ? rt->instances[i] : NULL;
}

static int insert_locked(struct runtime *rt, struct instance *inst)
{
    if (rt->ninstances == rt->instances_cap) {
        size_t cap = rt->instances_cap ? rt->instances_cap * 2 : 16;
        struct instance **grown = realloc(rt->instances, cap * sizeof *grown);
        if (!grown)
            return -1;
        rt->instances = grown;
        rt->instances_cap = cap;
    }
    if (pins_insert_locked(rt, inst) != 0)
        return -1;
    bool found;
    size_t i = (size_t)find_index_locked(rt, inst->id, &found);
    memmove(&rt->instances[i + 1], &rt->instances[i], (rt->ninstances - i) * sizeof *rt->instances);
    rt->instances[i] = inst;
    rt->ninstances++;
    inst->worker->assigned++;
    return 0;
}

static void remove_locked(struct runtime *rt, struct instance *inst)
{
    bool found;
    size_t i = (size_t)find_index_locked(rt, inst->id, &found);
    if (!found)
        return;
    pins_remove_locked(rt, inst);
    rtx_users_leave_locked(rt, inst);
    memmove(&rt->instances[i], &rt->instances[i + 1],
            (rt->ninstances - i - 1) * sizeof *rt->instances);
    rt->ninstances--;
    inst->worker->assigned--;
}

static void free_instance(struct instance *inst)
{
    if (!inst)
        return;
    json_decref(inst->spec);
    json_decref(inst->last_error);
    free(inst->snapshot_head);
    free(inst->orders);
    rtx_release_held(inst);
    free(inst);
}

/* A new record on the least-loaded worker. The key encodes the worker, so
 * directed events find it without any lookup. */
static struct instance *new_instance_locked(struct runtime *rt, const char *id, struct err *err)
{
    int best = 0;
    for (int i = 1; i < rt->nworkers; i++) {
        if (rt->workers[i].assigned < rt->workers[best].assigned)
            best = i;
    }
    uint64_t key = (uint64_t)rt->next_serial * (uint64_t)rt->nworkers + (uint64_t)best + 1;
    if (key > UINT32_MAX) {
        err_set(err, ERR_INTERNAL, "instance keys exhausted; restart the gateway");
        return NULL;
    }
    struct instance *inst = calloc(1, sizeof *inst);
    if (!inst) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    rt->next_serial++;
    inst->key = (uint32_t)key;
    inst->worker = &rt->workers[best];
    snprintf(inst->id, sizeof inst->id, "%s", id);
    atomic_init(&inst->delivered, 0);
    atomic_init(&inst->errors, 0);
    atomic_init(&inst->memory, 0);
    return inst;
}

void rtx_apply_spec_locked(struct runtime *rt, struct instance *inst, json_t *spec)
{
    if (!spec)
        return;
    /* re-filed under its new revision; the remove frees a slot, so the
     * insert below cannot fail */
    bool indexed = pins_remove_locked(rt, inst);
    json_decref(inst->spec);
    inst->spec = spec;
    rtx_users_rescope_locked(rt, inst);
    free(inst->snapshot_head);
    inst->snapshot_head = NULL;
    const json_t *strategy = json_object_get(spec, "strategy");
    const char *name = json_string_value(json_object_get(strategy, "identifier"));
    const char *hash = json_string_value(json_object_get(strategy, "hash"));
    const char *selector = spec_selector(spec);
    snprintf(inst->strategy, sizeof inst->strategy, "%s", name ? name : "");
    if (!hash || !hash_parse_full(hash, inst->hex))
        inst->hex[0] = '\0';
    snprintf(inst->selector, sizeof inst->selector, "%s", selector ? selector : inst->strategy);
    inst->version++;
    if (indexed)
        pins_insert_locked(rt, inst);
}

void rtx_set_running_locked(struct runtime *rt, struct instance *inst, bool running)
{
    if (inst->running == running)
        return;
    inst->running = running;
    rtx_users_sync_locked(rt, inst);
    rt->usage_generation++;
    struct usage_entry *u = usage_find_locked(rt, inst->strategy, inst->hex, true);
    if (u)
        u->running += running ? 1 : -1;
}

static void set_reason_locked(struct instance *inst, const char *reason)
{
    snprintf(inst->stop_reason, sizeof inst->stop_reason, "%s", reason ? reason : "");
}

static void set_error_locked(struct instance *inst, const char *handler, const char *message)
{
    json_decref(inst->last_error);
    inst->last_error = message ? json_pack("{s:s, s:s?, s:I}", "message", message, "handler",
                                           handler, "atMs", (json_int_t)clock_wall_ms())
                               : NULL;
}

/* ------------------------------------------------------------ persistence */

/* What one instance's record holds at one version, read under rt->lock. */
struct record_copy {
    struct instance *inst;
    uint64_t version;
    json_t *spec;
    bool desired;
    char reason[RUNTIME_REASON_MAX];
};

static struct record_copy *copy_records(struct runtime *rt, struct instance *const *insts, size_t n)
{
    struct record_copy *copies = calloc(n ? n : 1, sizeof *copies);
    if (!copies)
        return NULL;
    pthread_mutex_lock(&rt->lock);
    for (size_t i = 0; i < n; i++) {
        copies[i].inst = insts[i];
        copies[i].version = insts[i]->version;
        copies[i].spec = json_incref(insts[i]->spec);
        copies[i].desired = insts[i]->desired;
        snprintf(copies[i].reason, sizeof copies[i].reason, "%s", insts[i]->stop_reason);
    }
    pthread_mutex_unlock(&rt->lock);
    return copies;
}

/* Writes the records newer than what the store has, and the touches, in one
 * transaction; rt->persist held. */
static int save_copies(struct runtime *rt, struct record_copy *copies, size_t n,
                       const struct rtx_touches *touches, struct err *err)
{
    struct store_instance_record *records = calloc(n ? n : 1, sizeof *records);
    struct store_usage_record *usage =
        calloc(touches && touches->n ? touches->n : 1, sizeof *usage);
    if (!records || !usage) {
        free(records);
        free(usage);
        err_set(err, ERR_INTERNAL, "out of memory saving instances");
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        /* a deleted instance's record stays deleted, whatever its version */
        if (copies[i].version <= copies[i].inst->persisted || copies[i].inst->forgotten)
            continue;
        records[k++] =
            (struct store_instance_record){copies[i].inst->id, copies[i].spec, copies[i].desired,
                                           copies[i].reason[0] ? copies[i].reason : NULL};
    }
    size_t m = touches ? touches->n : 0;
    for (size_t i = 0; i < m; i++)
        usage[i] =
            (struct store_usage_record){touches->items[i].strategy, touches->items[i].hex,
                                        touches->items[i].first_ms, touches->items[i].now_ms};
    int rc = store_instances_save(rt->opts.store, records, k, usage, m, err);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (copies[i].version > copies[i].inst->persisted)
            copies[i].inst->persisted = copies[i].version;
    }
    free(records);
    free(usage);
    return rc;
}

int rtx_persist_batch(struct runtime *rt, struct instance *const *insts, size_t n,
                      const struct rtx_touches *touches, struct err *err)
{
    if (!rt->opts.store)
        return 0;
    struct record_copy *copies = copy_records(rt, insts, n);
    if (!copies) {
        err_set(err, ERR_INTERNAL, "out of memory saving instances");
        return -1;
    }
    pthread_mutex_lock(&rt->persist);
    int rc = save_copies(rt, copies, n, touches, err);
    pthread_mutex_unlock(&rt->persist);
    for (size_t i = 0; i < n; i++)
        json_decref(copies[i].spec);
    free(copies);
    return rc;
}

int rtx_persist(struct runtime *rt, struct instance *inst, struct err *err)
{
    return rtx_persist_batch(rt, &inst, 1, NULL, err);
}

static void persist_or_log(struct runtime *rt, struct instance *inst)
{
    struct err err = ERR_INIT;
    if (rtx_persist(rt, inst, &err) != 0)
        log_error("runtime", "cannot persist instance %s: %s", inst->id, err.message);
    err_clear(&err);
}

/* ------------------------------------------------------------ order numbers */

/* Order numbers are reserved durably in blocks so that ids stay unique
 * across restarts without a write per order. The write is synchronous on
 * the instance's worker (milliseconds with the sync), so blocks are large:
 * an instance pays it once per 65,536 orders, and a restart skips at most
 * one block of numbers. */
#define ORDER_SEQ_BLOCK 65536

static void order_seq_key(const char *id, char *out, size_t size)
{
    snprintf(out, size, "orderSeq/%s", id);
}

/* Read on the first order rather than at create or restore: most
 * instances of a fleet start without ordering at once, and a read per
 * instance was 6-12 us of each create and 10,000 reads of a restore. */
static void order_seq_load(struct runtime *rt, struct instance *inst)
{
    inst->order_seq_loaded = true;
    if (!rt->opts.store)
        return;
    char key[NAMES_ID_MAX + 16];
    order_seq_key(inst->id, key, sizeof key);
    json_t *value = NULL;
    struct err err = ERR_INIT;
    int rc = store_setting_get(rt->opts.store, key, &value, &err);
    if (rc < 0)
        log_warn("runtime", "instance %s: cannot read its order numbers: %s", inst->id,
                 err.message);
    if (rc == 0 && json_is_integer(value) && json_integer_value(value) > 0)
        inst->next_order = inst->order_reserved = (uint64_t)json_integer_value(value);
    json_decref(value);
    err_clear(&err);
}

static void order_seq_reserve(struct runtime *rt, struct instance *inst, uint64_t n)
{
    if (n <= inst->order_reserved)
        return;
    /* reserved even if the write fails: one warning, not one per order */
    inst->order_reserved = n + ORDER_SEQ_BLOCK - 1;
    if (!rt->opts.store)
        return;
    char key[NAMES_ID_MAX + 16];
    order_seq_key(inst->id, key, sizeof key);
    json_t *value = json_integer((json_int_t)inst->order_reserved);
    struct err err = ERR_INIT;
    if (!value || store_setting_put(rt->opts.store, key, value, &err) != 0)
        log_warn("runtime", "instance %s: cannot reserve order numbers: %s", inst->id,
                 value ? err.message : "out of memory");
    json_decref(value);
    err_clear(&err);
}

uint64_t rtx_order_seq_next(struct runtime *rt, struct instance *inst)
{
    if (!inst->order_seq_loaded)
        order_seq_load(rt, inst);
    uint64_t n = ++inst->next_order;
    order_seq_reserve(rt, inst, n);
    return n;
}

/* ------------------------------------------------------------ side effects */

static void touch_memory(struct runtime *rt, const char *strategy, const char *hex, int64_t now)
{
    pthread_mutex_lock(&rt->lock);
    struct usage_entry *u = usage_find_locked(rt, strategy, hex, true);
    if (u) {
        if (!u->first_ms) {
            u->first_ms = now;
            rt->usage_generation++;
        }
        u->last_ms = now;
    }
    pthread_mutex_unlock(&rt->lock);
}

static void touch_store(struct runtime *rt, const char *strategy, const char *hex, int64_t now)
{
    if (!rt->opts.store)
        return;
    struct err err = ERR_INIT;
    if (store_usage_touch(rt->opts.store, strategy, hex, now, &err) != 0)
        log_warn("runtime", "cannot record usage of %s@sha256:%s: %s", strategy, hex, err.message);
    err_clear(&err);
}

/* A refresh moves many instances between the same few revisions: one touch
 * per revision, at the latest time, says the same as one per instance. */
static struct rtx_touch *touch_slot(struct rtx_touches *t, const char *strategy, const char *hex)
{
    for (size_t i = t->n; i > 0; i--) {
        struct rtx_touch *e = &t->items[i - 1];
        if (strcmp(e->hex, hex) == 0 && strcmp(e->strategy, strategy) == 0)
            return e;
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 8;
        struct rtx_touch *items = realloc(t->items, cap * sizeof *items);
        if (!items)
            return NULL;
        t->items = items;
        t->cap = cap;
    }
    struct rtx_touch *e = &t->items[t->n++];
    snprintf(e->strategy, sizeof e->strategy, "%s", strategy);
    snprintf(e->hex, sizeof e->hex, "%s", hex);
    e->first_ms = 0;
    e->now_ms = 0;
    return e;
}

int rtx_touch_add(struct rtx_touches *t, const char *strategy, const char *hex, int64_t now_ms)
{
    struct rtx_touch *e = touch_slot(t, strategy, hex);
    if (!e)
        return -1;
    if (now_ms > e->now_ms)
        e->now_ms = now_ms;
    /* the memory's firstSeen is the batch's first start: the store keeps
     * the same, so that it reads back the same after a restart */
    if (e->first_ms == 0 || now_ms < e->first_ms)
        e->first_ms = now_ms;
    return 0;
}

void rtx_touches_free(struct rtx_touches *t)
{
    free(t->items);
    *t = (struct rtx_touches){0};
}

/* The store's part goes into `into` when given (written later with the
 * instance records), else straight to the store. */
static void touch_usage(struct runtime *rt, const char *strategy, const char *hex,
                        struct rtx_touches *into)
{
    int64_t now = clock_wall_ms();
    if (!into || !rt->opts.store || rtx_touch_add(into, strategy, hex, now) != 0)
        touch_store(rt, strategy, hex, now);
    touch_memory(rt, strategy, hex, now);
}

static void count_action(struct runtime *rt, const char *strategy, const char *hex,
                         const char *action)
{
    char hash[HASH_SPELLED_LEN + 1];
    hash_spell(hex, hash);
    const char *labels[] = {rt->environment, strategy, hash, action};
    metrics_add(rt->m_actions, labels, 1);
}

void rtx_note_start_into(struct runtime *rt, const char *strategy, const char *hex,
                         struct rtx_touches *into)
{
    touch_usage(rt, strategy, hex, into);
    count_action(rt, strategy, hex, "start");
}

void rtx_note_stop_into(struct runtime *rt, const char *strategy, const char *hex,
                        const char *reason, struct rtx_touches *into)
{
    touch_usage(rt, strategy, hex, into);
    count_action(rt, strategy, hex, "stop");
    const char *labels[] = {reason};
    metrics_add(rt->m_stops, labels, 1);
}

void rtx_note_start(struct runtime *rt, const char *strategy, const char *hex)
{
    rtx_note_start_into(rt, strategy, hex, NULL);
}

void rtx_note_stop(struct runtime *rt, const char *strategy, const char *hex, const char *reason)
{
    rtx_note_stop_into(rt, strategy, hex, reason, NULL);
}

void rtx_count_order(struct runtime *rt, uint16_t provider, enum exec_status status)
{
    const char *labels[] = {intern_name(provider), event_exec_status_name(status)};
    metrics_add(rt->m_orders, labels, 1);
}

void rtx_count_error(struct runtime *rt, const char *strategy, const char *hash)
{
    const char *labels[] = {strategy, hash};
    metrics_add(rt->m_errors, labels, 1);
}

/* Literals, since the market reads them after the call returns. */
static const char *abandon_reason(const char *stop_reason)
{
    static const char *const texts[][2] = {
        {"cpuBudget", "cpuBudget: cancelled as the instance stopped"},
        {"memoryLimit", "memoryLimit: cancelled as the instance stopped"},
        {"stackOverflow", "stackOverflow: cancelled as the instance stopped"},
        {"tooManyErrors", "tooManyErrors: cancelled as the instance stopped"},
        {"riskBreaches", "riskBreaches: cancelled as the instance stopped"},
        {"startFailed", "startFailed: cancelled as the instance stopped"},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        if (strcmp(texts[i][0], stop_reason) == 0)
            return texts[i][1];
    }
    return "cancelled as the instance stopped";
}

void rtx_abandon_orders(struct runtime *rt, const struct instance *inst, const char *reason)
{
    if (rt->opts.keep_orders_on_failure || !rt->opts.market.abandon)
        return;
    rt->opts.market.abandon(rt->opts.market.ctx, inst->key, inst->id, abandon_reason(reason));
}

void rtx_instance_failed(struct runtime *rt, struct instance *inst, const char *reason,
                         const char *handler, const char *message)
{
    char strategy[NAMES_STRATEGY_MAX + 1], hex[HASH_HEX_LEN + 1], hash[HASH_SPELLED_LEN + 1];
    pthread_mutex_lock(&rt->lock);
    rtx_set_running_locked(rt, inst, false);
    /* a crashed strategy must not come back in a loop after a restart */
    inst->desired = false;
    set_reason_locked(inst, reason);
    set_error_locked(inst, handler, message);
    inst->version++;
    snprintf(strategy, sizeof strategy, "%s", inst->strategy);
    snprintf(hex, sizeof hex, "%s", inst->hex);
    pthread_mutex_unlock(&rt->lock);
    hash_spell(hex, hash);
    log_json(LOG_LEVEL_ERROR, "runtime", "instance stopped",
             json_pack("{s:s, s:s, s:s, s:s, s:s?, s:s?}", "strategy", strategy, "hash", hash,
                       "instance", inst->id, "reason", reason, "handler", handler, "error",
                       message));
    persist_or_log(rt, inst);
    rtx_note_stop(rt, strategy, hex, reason);
}

/* ------------------------------------------------------------ new / free */

static int make_families(struct runtime *rt)
{
    static const char *const actions[] = {"environment", "strategy", "hash", "action", NULL};
    static const char *const errors[] = {"strategy", "hash", NULL};
    static const char *const stops[] = {"reason", NULL};
    static const char *const orders[] = {"provider", "state", NULL};
    rt->m_actions = metrics_family_new("strategy_revision_instances_total",
                                       "Instance starts and stops per strategy revision.",
                                       METRICS_COUNTER, actions);
    rt->m_errors = metrics_family_new("stratd_handler_errors_total",
                                      "Exceptions thrown by strategy handlers and timers.",
                                      METRICS_COUNTER, errors);
    rt->m_stops = metrics_family_new("stratd_instance_stops_total", "Instance stops by reason.",
                                     METRICS_COUNTER, stops);
    rt->m_orders = metrics_family_new("stratd_orders_total",
                                      "Execution reports delivered to instances, by order state.",
                                      METRICS_COUNTER, orders);
    return rt->m_actions && rt->m_errors && rt->m_stops && rt->m_orders ? 0 : -1;
}

static int start_workers(struct runtime *rt, struct err *err)
{
    /* aligned: a worker keeps its queue's tail on a cache line of its own */
    size_t bytes = (size_t)rt->nworkers * sizeof *rt->workers;
    rt->workers = aligned_alloc(alignof(struct worker), bytes);
    if (!rt->workers) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    memset(rt->workers, 0, bytes);
    for (int i = 0; i < rt->nworkers; i++) {
        if (worker_init(&rt->workers[i], rt, i, rt->queue_capacity, err) != 0)
            return -1;
    }
    for (int i = 0; i < rt->nworkers; i++) {
        if (worker_start(&rt->workers[i], err) != 0)
            return -1;
    }
    return 0;
}

int runtime_new(const struct runtime_options *opts, struct runtime **out, struct err *err)
{
    *out = NULL;
    if (!opts || !opts->catalog) {
        err_set(err, ERR_INVALID, "the runtime needs a catalog");
        return -1;
    }
    struct runtime *rt = calloc(1, sizeof *rt);
    if (!rt) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    rt->opts = *opts;
    rt->environment = strdup(opts->environment ? opts->environment : "default");
    rt->max_errors =
        opts->max_consecutive_errors > 0 ? opts->max_consecutive_errors : DEFAULT_MAX_ERRORS;
    rt->log_lines = opts->log_lines_per_second > 0 ? opts->log_lines_per_second : DEFAULT_LOG_LINES;
    rt->max_orders_per_second = opts->max_orders_per_second > 0
                                    ? (uint32_t)opts->max_orders_per_second
                                : opts->max_orders_per_second == 0 ? DEFAULT_MAX_ORDERS_PER_SECOND
                                                                   : 0;
    rt->queue_capacity = opts->queue_capacity ? opts->queue_capacity : DEFAULT_QUEUE_CAPACITY;
    rt->event_poll_ns = opts->event_poll_us > 0 ? (int64_t)opts->event_poll_us * 1000 : 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    rt->nworkers = opts->workers > 0 ? opts->workers : (cpus > 0 ? (int)cpus : 1);
    /* every event its queues can hold can then come from its publisher's pool */
    event_pool_reserve(rt->queue_capacity * (size_t)rt->nworkers);
    /* Workers that outnumber the cores and poll would take turns holding
     * them while the ones with events queued wait for a turn (measured: p50
     * and p99 several times worse with 6 on 2): they sleep instead. */
    if (rt->event_poll_ns > 0 && cpus > 0 && rt->nworkers > cpus) {
        log_info("runtime",
                 "%d workers on %ld CPUs: workers sleep between events "
                 "(runtime.event_poll_us applies only with no more workers than CPUs)",
                 rt->nworkers, cpus);
        rt->event_poll_ns = 0;
    }
    rt->next_serial = 0;
    pthread_mutex_init(&rt->control, NULL);
    /* Held for a microsecond or less by each reader of the control plane:
     * a waiter spins for it before it sleeps. */
    pthread_mutexattr_t adaptive;
    pthread_mutexattr_init(&adaptive);
    (void)pthread_mutexattr_settype(&adaptive, PTHREAD_MUTEX_ADAPTIVE_NP);
    pthread_mutex_init(&rt->lock, &adaptive);
    pthread_mutexattr_destroy(&adaptive);
    pthread_mutex_init(&rt->persist, NULL);
    pthread_mutex_init(&rt->done, NULL);
    pthread_cond_init(&rt->done_cond, NULL);
    rt->bytecode = js_bytecode_cache_new();
    if (!rt->environment || !rt->bytecode || make_families(rt) != 0) {
        err_set(err, ERR_INTERNAL, "out of memory");
        runtime_free(rt);
        return -1;
    }
    if (usage_load(rt, err) != 0 || start_workers(rt, err) != 0) {
        runtime_free(rt);
        return -1;
    }
    *out = rt;
    return 0;
}

/* lastSeen of every revision still running, once per revision. */
static void touch_running_revisions(struct runtime *rt)
{
    pthread_mutex_lock(&rt->lock);
    size_t n = 0;
    struct usage_entry *live = calloc(rt->nusage ? rt->nusage : 1, sizeof *live);
    for (size_t i = 0; live && i < rt->nusage; i++) {
        if (rt->usage[i].running > 0)
            live[n++] = rt->usage[i];
    }
    pthread_mutex_unlock(&rt->lock);
    struct rtx_touches touches = {0};
    for (size_t i = 0; i < n; i++)
        touch_usage(rt, live[i].strategy, live[i].hex, &touches);
    free(live);
    struct err err = ERR_INIT;
    if (rtx_persist_batch(rt, NULL, 0, &touches, &err) != 0)
        log_warn("runtime", "cannot record the usage of running revisions: %s", err.message);
    err_clear(&err);
    rtx_touches_free(&touches);
}

void runtime_free(struct runtime *rt)
{
    if (!rt)
        return;
    if (rt->workers) {
        touch_running_revisions(rt);
        for (int i = 0; i < rt->nworkers; i++)
            worker_shutdown(&rt->workers[i]);
        for (int i = 0; i < rt->nworkers; i++)
            worker_destroy(&rt->workers[i]);
        free(rt->workers);
    }
    for (size_t i = 0; i < rt->ninstances; i++)
        free_instance(rt->instances[i]);
    free(rt->instances);
    pins_free(rt);
    free(rt->usage);
    free(rt->provider_users);
    free(rt->deleting.items);
    free(rt->holding.items);
    if (rt->bytecode)
        js_bytecode_cache_free(rt->bytecode);
    metrics_family_free(rt->m_actions);
    metrics_family_free(rt->m_errors);
    metrics_family_free(rt->m_stops);
    metrics_family_free(rt->m_orders);
    pthread_mutex_destroy(&rt->control);
    pthread_mutex_destroy(&rt->lock);
    pthread_mutex_destroy(&rt->persist);
    pthread_mutex_destroy(&rt->done);
    pthread_cond_destroy(&rt->done_cond);
    free(rt->environment);
    free(rt);
}

/* ------------------------------------------------------------ JSON views */

/* "/strategies/modules/<name%40sha256%3Ahex>/usage" */
static json_t *usage_link(const char *strategy, const char *hex)
{
    char text[NAMES_STRATEGY_MAX + HASH_SPELLED_LEN + 2];
    snprintf(text, sizeof text, "%s@sha256:%s", strategy, hex);
    struct strbuf sb = STRBUF_INIT;
    strbuf_puts(&sb, "/strategies/modules/");
    for (const char *p = text; *p; p++) {
        unsigned char c = (unsigned char)*p;
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '-' || c == '.' || c == '_' || c == '~';
        if (plain)
            strbuf_putc(&sb, (char)c);
        else
            strbuf_printf(&sb, "%%%02X", c);
    }
    strbuf_puts(&sb, "/usage");
    json_t *link = strbuf_failed(&sb) ? NULL : json_string(strbuf_cstr(&sb));
    strbuf_release(&sb);
    return link;
}

static json_t *links_json(const char *id, const char *strategy, const char *hex)
{
    char self[NAMES_ID_MAX + 32];
    snprintf(self, sizeof self, "/strategy/instances/%s", id);
    return json_pack("{s:s, s:o*}", "self", self, "usage", usage_link(strategy, hex));
}

static json_t *links_of(const struct instance *inst)
{
    return links_json(inst->id, inst->strategy, inst->hex);
}

static int cmp_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Sorted providers and the sorted union of their symbols. */
static void scope_lists(const json_t *spec, json_t **providers, json_t **symbols)
{
    const json_t *scope = json_object_get(spec, "scope");
    size_t np = json_object_size(scope), ns = 0;
    const char *name;
    json_t *value;
    json_object_foreach((json_t *)scope, name, value) ns +=
        json_array_size(json_object_get(value, "symbols"));
    const char **p = calloc(np ? np : 1, sizeof *p);
    const char **s = calloc(ns ? ns : 1, sizeof *s);
    *providers = json_array();
    *symbols = json_array();
    if (!p || !s) {
        free(p);
        free(s);
        return;
    }
    size_t ip = 0, is = 0;
    json_object_foreach((json_t *)scope, name, value)
    {
        p[ip++] = name;
        size_t i;
        json_t *sym;
        json_array_foreach(json_object_get(value, "symbols"), i, sym)
        {
            if (json_string_value(sym))
                s[is++] = json_string_value(sym);
        }
    }
    qsort(p, ip, sizeof *p, cmp_strings);
    qsort(s, is, sizeof *s, cmp_strings);
    for (size_t i = 0; i < ip; i++)
        json_array_append_new(*providers, json_string(p[i]));
    for (size_t i = 0; i < is; i++) {
        if (i == 0 || strcmp(s[i], s[i - 1]) != 0)
            json_array_append_new(*symbols, json_string(s[i]));
    }
    free(p);
    free(s);
}

static json_t *reason_of(const struct instance *inst)
{
    return inst->stop_reason[0] ? json_string(inst->stop_reason) : json_null();
}

static json_t *last_error_of(const struct instance *inst)
{
    if (!inst->last_error)
        return json_null();
    json_t *e = json_deep_copy(inst->last_error);
    json_t *at = json_object_get(e, "atMs");
    if (json_is_integer(at)) {
        char ts[40];
        clock_format_rfc3339((int64_t)json_integer_value(at), ts, sizeof ts);
        json_object_set_new(e, "at", json_string(ts));
        json_object_del(e, "atMs");
    }
    return e;
}

static json_t *snapshot_locked(struct runtime *rt, struct instance *inst)
{
    json_t *snap = json_deep_copy(inst->spec);
    if (!snap)
        return NULL;
    json_t *providers, *symbols;
    scope_lists(inst->spec, &providers, &symbols);
    json_object_set_new(snap, "providers", providers);
    json_object_set_new(snap, "aggregatedSymbols", symbols);
    json_object_set_new(snap, "running", json_boolean(inst->running));
    json_object_set_new(snap, "usage", usage_brief_json_locked(rt, inst->strategy, inst->hex));
    json_object_set_new(snap, "links", links_of(inst));
    json_object_set_new(snap, "stopReason", reason_of(inst));
    json_object_set_new(snap, "lastError", last_error_of(inst));
    json_object_set_new(snap, "counters",
                        json_pack("{s:I, s:I}", "eventsDelivered",
                                  (json_int_t)counter_get(&inst->delivered), "handlerErrors",
                                  (json_int_t)counter_get(&inst->errors)));
    json_object_set_new(snap, "memory",
                        json_pack("{s:I}", "bytes", (json_int_t)counter_get(&inst->memory)));
    return snap;
}

/* What both an instance's summary and its document show of it beyond its
 * spec, copied under rt->lock so that their text is written after it. */
struct instance_facts {
    char id[NAMES_ID_MAX + 1];
    char strategy[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
    char stop_reason[RUNTIME_REASON_MAX];
    bool running;
    struct usage_facts usage;
};

static void copy_facts_locked(struct runtime *rt, const struct instance *inst,
                              struct instance_facts *f)
{
    snprintf(f->id, sizeof f->id, "%s", inst->id);
    snprintf(f->strategy, sizeof f->strategy, "%s", inst->strategy);
    snprintf(f->hex, sizeof f->hex, "%s", inst->hex);
    snprintf(f->stop_reason, sizeof f->stop_reason, "%s", inst->stop_reason);
    f->running = inst->running;
    usage_facts_locked(rt, inst->strategy, inst->hex, &f->usage);
}

/* A summary's copy: the facts and a reference to the spec (see
 * instance.spec for why the reference may outlive the lock). */
struct summary_copy {
    json_t *spec;
    struct instance_facts f;
};

static void copy_summary_locked(struct runtime *rt, const struct instance *inst,
                                struct summary_copy *c)
{
    c->spec = json_incref(inst->spec);
    copy_facts_locked(rt, inst, &c->f);
}

static json_t *summary_json(const struct summary_copy *c, json_t *usage)
{
    const struct instance_facts *f = &c->f;
    const json_t *strategy = json_object_get(c->spec, "strategy");
    json_t *providers, *symbols;
    scope_lists(c->spec, &providers, &symbols);
    return json_pack(
        "{s:s, s:s, s:O?, s:O?, s:O?, s:o, s:o, s:b, s:O?, s:o, s:o}", "id", f->id,
        "strategyIdentifier", f->strategy, "strategyTag", json_object_get(strategy, "tag"),
        "strategyHash", json_object_get(strategy, "hash"), "strategySelector",
        json_object_get(strategy, "selector"), "providers", providers, "aggregatedSymbols", symbols,
        "running", f->running, "usage", usage, "links", links_json(f->id, f->strategy, f->hex),
        "stopReason", f->stop_reason[0] ? json_string(f->stop_reason) : json_null());
}

json_t *rtx_summary_locked(struct runtime *rt, struct instance *inst, json_t *usage)
{
    struct summary_copy c;
    copy_summary_locked(rt, inst, &c);
    json_t *summary = summary_json(&c, usage);
    json_decref(c.spec);
    return summary;
}

json_t *runtime_instance_snapshot(struct runtime *rt, const char *id, struct err *err)
{
    pthread_mutex_lock(&rt->lock);
    struct instance *inst = rtx_find_locked(rt, id);
    json_t *snap = inst ? snapshot_locked(rt, inst) : NULL;
    pthread_mutex_unlock(&rt->lock);
    if (!inst)
        err_set(err, ERR_NOT_FOUND, "instance %s not found", id);
    else if (!snap)
        err_set(err, ERR_INTERNAL, "out of memory");
    return snap;
}

/* ------------------------------------------------------------ snapshot text */

/* Members a snapshot adds to the spec; a spec carrying one of them is
 * written through jansson, whose set replaces the member in place. */
static const char *const snapshot_members[] = {
    "providers",  "aggregatedSymbols", "running",  "usage",  "links",
    "stopReason", "lastError",         "counters", "memory",
};

/* The spec with providers and aggregatedSymbols, without its closing
 * brace; NULL when the spec needs the jansson path. */
static char *snapshot_head_text(const struct instance *inst, size_t *len)
{
    for (size_t i = 0; i < sizeof snapshot_members / sizeof *snapshot_members; i++) {
        if (json_object_get(inst->spec, snapshot_members[i]))
            return NULL;
    }
    json_t *head = json_deep_copy(inst->spec);
    if (!head)
        return NULL;
    json_t *providers, *symbols;
    scope_lists(inst->spec, &providers, &symbols);
    json_object_set_new(head, "providers", providers);
    json_object_set_new(head, "aggregatedSymbols", symbols);
    size_t n = 0;
    char *text = jsonutil_dump(head, &n);
    json_decref(head);
    if (text && (n < 2 || text[n - 1] != '}')) {
        free(text);
        return NULL;
    }
    if (text) {
        text[n - 1] = '\0';
        *len = n - 1;
    }
    return text;
}

/* What an instance document needs from under rt->lock beyond its cached
 * head, copied out so that the rest of the text is written after it. */
struct snapshot_copy {
    struct instance_facts f;
    struct strbuf last_error; /* its text; empty when there is none */
    long long delivered, errors, memory;
};

static void append_links(struct strbuf *sb, const char *id, const char *strategy, const char *hex)
{
    strbuf_puts(sb, ",\"links\":{\"self\":");
    char self[NAMES_ID_MAX + 32];
    snprintf(self, sizeof self, "/strategy/instances/%s", id);
    jsonutil_put_string(sb, self);
    json_t *usage = usage_link(strategy, hex);
    if (usage) {
        strbuf_puts(sb, ",\"usage\":");
        jsonutil_put_string(sb, json_string_value(usage));
    }
    json_decref(usage);
    strbuf_putc(sb, '}');
}

static int copy_snapshot_locked(struct runtime *rt, const struct instance *inst,
                                struct snapshot_copy *c)
{
    copy_facts_locked(rt, inst, &c->f);
    c->delivered = (long long)counter_get(&inst->delivered);
    c->errors = (long long)counter_get(&inst->errors);
    c->memory = (long long)counter_get(&inst->memory);
    if (!inst->last_error)
        return 0;
    json_t *e = last_error_of(inst);
    size_t len = 0;
    char *text = e ? jsonutil_dump(e, &len) : NULL;
    json_decref(e);
    if (text)
        strbuf_append(&c->last_error, text, len);
    free(text);
    return text && !strbuf_failed(&c->last_error) ? 0 : -1;
}

/* The text of snapshot_locked() after the head, from the copy. */
static void write_snapshot_tail(const struct snapshot_copy *c, struct strbuf *sb)
{
    const struct instance_facts *f = &c->f;
    strbuf_puts(sb, f->running ? ",\"running\":true,\"usage\":" : ",\"running\":false,\"usage\":");
    usage_facts_text(&f->usage, f->strategy, f->hex, NULL, sb);
    append_links(sb, f->id, f->strategy, f->hex);
    strbuf_puts(sb, ",\"stopReason\":");
    if (f->stop_reason[0])
        jsonutil_put_string(sb, f->stop_reason);
    else
        strbuf_puts(sb, "null");
    strbuf_puts(sb, ",\"lastError\":");
    if (c->last_error.len)
        strbuf_append(sb, strbuf_cstr(&c->last_error), c->last_error.len);
    else
        strbuf_puts(sb, "null");
    strbuf_printf(sb, ",\"counters\":{\"eventsDelivered\":%lld,\"handlerErrors\":%lld}",
                  c->delivered, c->errors);
    strbuf_printf(sb, ",\"memory\":{\"bytes\":%lld}}", c->memory);
}

/* Under rt->lock: the instance's head into sb and the rest into *c; 1 when
 * the instance has no cached head (a spec naming a member the runtime adds)
 * and sb holds its whole document instead, -1 when out of memory. */
static int read_snapshot_locked(struct runtime *rt, struct instance *inst, struct strbuf *sb,
                                struct snapshot_copy *c)
{
    if (!inst->snapshot_head)
        inst->snapshot_head = snapshot_head_text(inst, &inst->snapshot_head_len);
    if (!inst->snapshot_head) {
        json_t *snap = snapshot_locked(rt, inst);
        size_t len = 0;
        char *text = snap ? jsonutil_dump(snap, &len) : NULL;
        json_decref(snap);
        if (text)
            strbuf_append(sb, text, len);
        free(text);
        return text ? 1 : -1;
    }
    strbuf_append(sb, inst->snapshot_head, inst->snapshot_head_len);
    return copy_snapshot_locked(rt, inst, c);
}

/* Room for a typical document, taken before the lock so that the appends
 * under it do not reallocate. */
#define SNAPSHOT_TEXT_RESERVE 2048

char *runtime_instance_snapshot_text(struct runtime *rt, const char *id, size_t *len,
                                     struct err *err)
{
    struct strbuf sb = STRBUF_INIT;
    struct snapshot_copy copy = {.last_error = STRBUF_INIT};
    (void)strbuf_reserve(&sb, SNAPSHOT_TEXT_RESERVE);
    pthread_mutex_lock(&rt->lock);
    struct instance *inst = rtx_find_locked(rt, id);
    int rc = inst ? read_snapshot_locked(rt, inst, &sb, &copy) : -1;
    pthread_mutex_unlock(&rt->lock);
    if (rc == 0)
        write_snapshot_tail(&copy, &sb);
    strbuf_release(&copy.last_error);
    if (!inst)
        err_set(err, ERR_NOT_FOUND, "instance %s not found", id);
    else if (rc < 0 || strbuf_failed(&sb))
        err_set(err, ERR_INTERNAL, "out of memory");
    if (!inst || rc < 0 || strbuf_failed(&sb)) {
        strbuf_release(&sb);
        return NULL;
    }
    char *text = strbuf_detach(&sb, len);
    if (!text)
        err_set(err, ERR_INTERNAL, "out of memory");
    return text;
}

/* Usage documents built once per revision within one listing. */
struct usage_cache {
    struct {
        const char *strategy, *hex;
        json_t *usage;
    } items[64];
    size_t n;
};

static json_t *usage_cache_get(const struct usage_cache *c, const char *strategy, const char *hex)
{
    for (size_t i = 0; i < c->n; i++) {
        if (strcmp(c->items[i].hex, hex) == 0 && strcmp(c->items[i].strategy, strategy) == 0)
            return c->items[i].usage;
    }
    return NULL;
}

/* Keeps u (taken over) under the key; the keys must outlive the cache. */
static json_t *usage_cache_put(struct usage_cache *c, const char *strategy, const char *hex,
                               json_t *u)
{
    if (c->n == sizeof c->items / sizeof c->items[0]) {
        json_decref(c->items[0].usage); /* evict the oldest */
        memmove(&c->items[0], &c->items[1], (c->n - 1) * sizeof c->items[0]);
        c->n--;
    }
    c->items[c->n].strategy = strategy;
    c->items[c->n].hex = hex;
    c->items[c->n].usage = u;
    c->n++;
    return u;
}

static json_t *cached_usage_locked(struct runtime *rt, struct usage_cache *c,
                                   const struct instance *inst)
{
    json_t *u = usage_cache_get(c, inst->strategy, inst->hex);
    return u ? u
             : usage_cache_put(c, inst->strategy, inst->hex,
                               usage_brief_json_locked(rt, inst->strategy, inst->hex));
}

static void usage_cache_clear(struct usage_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        json_decref(c->items[i].usage);
    c->n = 0;
}

/* The usage document of a copy's revision, built once per revision within
 * one listing (the cache's keys point into the copies). */
static json_t *cached_usage_of_copy(struct usage_cache *c, const struct summary_copy *copy)
{
    const struct instance_facts *f = &copy->f;
    json_t *u = usage_cache_get(c, f->strategy, f->hex);
    return u ? u
             : usage_cache_put(c, f->strategy, f->hex,
                               usage_facts_json(&f->usage, f->strategy, f->hex));
}

/* The whole fleet's summaries: the lock is held only to copy what they show
 * (5,000 instances built under it had held it for 20-35 ms, stalling every
 * other request and every worker's state change meanwhile). */
json_t *runtime_instances_json(struct runtime *rt)
{
    json_t *list = json_array();
    struct summary_copy *copies = NULL;
    size_t n = 0;
    pthread_mutex_lock(&rt->lock);
    if (rt->ninstances)
        copies = malloc(rt->ninstances * sizeof *copies);
    for (size_t i = 0; copies && i < rt->ninstances; i++)
        copy_summary_locked(rt, rt->instances[i], &copies[n++]);
    bool copied = copies || !rt->ninstances;
    pthread_mutex_unlock(&rt->lock);
    struct usage_cache cache = {.n = 0};
    for (size_t i = 0; i < n; i++) {
        if (list)
            json_array_append_new(
                list, summary_json(&copies[i], cached_usage_of_copy(&cache, &copies[i])));
        json_decref(copies[i].spec);
    }
    usage_cache_clear(&cache);
    free(copies);
    if (!copied) {
        json_decref(list);
        list = NULL;
    }
    return json_pack("{s:o}", "instances", list ? list : json_array());
}

static int cmp_instance_ids(const void *a, const void *b)
{
    return strcmp((*(struct instance *const *)a)->id, (*(struct instance *const *)b)->id);
}

/* The instances come from the pin index (a range, no scan of the fleet);
 * with hex NULL the range is ordered by revision first, hence the sort. */
json_t *runtime_instances_pinning(struct runtime *rt, const char *strategy, const char *hex,
                                  bool include_stopped)
{
    json_t *list = json_array();
    struct usage_cache cache = {.n = 0};
    pthread_mutex_lock(&rt->lock);
    size_t first;
    size_t n = pins_range_locked(rt, strategy, hex, &first);
    struct instance **picked = calloc(n ? n : 1, sizeof *picked);
    size_t npicked = 0;
    for (size_t i = first; picked && i < first + n; i++) {
        if (include_stopped || rt->pins[i]->running)
            picked[npicked++] = rt->pins[i];
    }
    if (!hex && picked)
        qsort(picked, npicked, sizeof *picked, cmp_instance_ids);
    for (size_t i = 0; list && i < npicked; i++)
        json_array_append_new(
            list, rtx_summary_locked(rt, picked[i], cached_usage_locked(rt, &cache, picked[i])));
    pthread_mutex_unlock(&rt->lock);
    free(picked);
    usage_cache_clear(&cache);
    if (!picked) {
        json_decref(list);
        return NULL;
    }
    return list;
}

bool runtime_instance_exists(struct runtime *rt, const char *id)
{
    pthread_mutex_lock(&rt->lock);
    bool found = rtx_find_locked(rt, id) != NULL;
    pthread_mutex_unlock(&rt->lock);
    return found;
}

/* ------------------------------------------------------------ create / update */

int runtime_instance_create(struct runtime *rt, const json_t *spec, json_t **snapshot,
                            struct err *err)
{
    if (snapshot)
        *snapshot = NULL;
    pthread_mutex_lock(&rt->control);
    struct registry *reg = catalog_snapshot(rt->opts.catalog);
    struct spec_resolved r;
    int rc = spec_resolve(&rt->opts, reg, spec, NULL, &r, err);
    registry_release(reg);
    if (rc != 0) {
        pthread_mutex_unlock(&rt->control);
        return -1;
    }
    const char *id = json_string_value(json_object_get(r.spec, "id"));
    pthread_mutex_lock(&rt->lock);
    struct instance *inst = NULL;
    if (rtx_find_locked(rt, id)) {
        err_set(err, ERR_CONFLICT, "instance %s already exists", id);
        err_add_detail(err, "id", json_string(id));
    } else if ((inst = new_instance_locked(rt, id, err)) != NULL) {
        rtx_apply_spec_locked(rt, inst, json_incref(r.spec));
        if (insert_locked(rt, inst) != 0) {
            free_instance(inst);
            inst = NULL;
            err_set(err, ERR_INTERNAL, "out of memory");
        }
    }
    pthread_mutex_unlock(&rt->lock);
    spec_resolved_clear(&r);
    rc = inst ? rtx_persist(rt, inst, err) : -1;
    if (inst && rc != 0) {
        pthread_mutex_lock(&rt->lock);
        remove_locked(rt, inst);
        pthread_mutex_unlock(&rt->lock);
        free_instance(inst);
    } else if (inst && snapshot) {
        *snapshot = runtime_instance_snapshot(rt, inst->id, err);
    }
    pthread_mutex_unlock(&rt->control);
    return rc;
}

/* The restart itself, the new revision claimed. */
static int restart_claimed(struct runtime *rt, struct instance *inst, struct spec_resolved *r,
                           bool *applied, struct err *err)
{
    struct vm_plan *plan = NULL;
    if (spec_plan(rt, r->spec, r->strategy, r->hex, r->metadata, &plan, err) != 0)
        return -1;
    char old_strategy[NAMES_STRATEGY_MAX + 1], old_hex[HASH_HEX_LEN + 1];
    pthread_mutex_lock(&rt->lock);
    snprintf(old_strategy, sizeof old_strategy, "%s", inst->strategy);
    snprintf(old_hex, sizeof old_hex, "%s", inst->hex);
    pthread_mutex_unlock(&rt->lock);
    struct command cmd = {.kind = CMD_RESTART,
                          .inst = inst,
                          .plan = plan,
                          .spec = json_incref(r->spec),
                          .keep_old = true,
                          .err = ERR_INIT};
    worker_call(inst->worker, &cmd);
    runtime_plan_free(cmd.plan);
    json_decref(cmd.spec); /* still ours unless the worker installed it */
    if (cmd.rc != 0) {
        err_move(err, &cmd.err);
        return -1;
    }
    err_clear(&cmd.err);
    *applied = cmd.was_running;
    if (cmd.was_running) {
        rtx_note_stop(rt, old_strategy, old_hex, "restarted");
        rtx_note_start(rt, r->strategy, r->hex);
    }
    return 0;
}

/* Claims {strategy, hex} against deletes (rtx_claim_pending), then checks
 * that the revision is still there: one deleted after the caller resolved
 * it fails with `gone` (409 retired or 404), the claim released. */
static int claim_revision(struct runtime *rt, struct instance *inst, const char *strategy,
                          const char *hex, enum err_kind gone, struct err *err)
{
    if (rtx_claim_pending(rt, inst, strategy, hex, err) != 0)
        return -1;
    if (rtx_revision_exists(rt, strategy, hex))
        return 0;
    rtx_release_pending(rt, inst);
    err_set(err, gone, "%s@sha256:%s no longer exists", strategy, hex);
    err_add_detail(err, "reason", json_string("retired"));
    return -1;
}

/* Restarts a running instance on a new spec; the old VM keeps running if
 * the new one does not start. The new revision is claimed from before its
 * plan until the worker has switched the instance onto it, so a delete of
 * it meanwhile is refused as pinned. */
static int restart_with(struct runtime *rt, struct instance *inst, struct spec_resolved *r,
                        bool *applied, struct err *err)
{
    if (claim_revision(rt, inst, r->strategy, r->hex, ERR_NOT_FOUND, err) != 0)
        return -1;
    int rc = restart_claimed(rt, inst, r, applied, err);
    rtx_release_pending(rt, inst);
    return rc;
}

/* Takes rt->control for a change to instance `id` and returns it; NULL
 * (ERR_NOT_FOUND, control released) when there is none. An instance found
 * under control stays until control is released: only a holder deletes. */
static struct instance *control_instance(struct runtime *rt, const char *id, struct err *err)
{
    pthread_mutex_lock(&rt->control);
    pthread_mutex_lock(&rt->lock);
    struct instance *inst = rtx_find_locked(rt, id);
    pthread_mutex_unlock(&rt->lock);
    if (!inst) {
        err_set(err, ERR_NOT_FOUND, "instance %s not found", id);
        pthread_mutex_unlock(&rt->control);
    }
    return inst;
}

int runtime_instance_update(struct runtime *rt, const char *id, const json_t *spec,
                            json_t **snapshot, struct err *err)
{
    if (snapshot)
        *snapshot = NULL;
    struct instance *inst = control_instance(rt, id, err);
    if (!inst)
        return -1;
    pthread_mutex_lock(&rt->lock);
    bool running = inst->running;
    pthread_mutex_unlock(&rt->lock);
    struct registry *reg = catalog_snapshot(rt->opts.catalog);
    struct spec_resolved r;
    int rc = spec_resolve(&rt->opts, reg, spec, id, &r, err);
    bool applied = false;
    if (rc == 0 && running)
        rc = restart_with(rt, inst, &r, &applied, err);
    registry_release(reg);
    if (rc == 0 && !applied) {
        pthread_mutex_lock(&rt->lock);
        rtx_apply_spec_locked(rt, inst, json_incref(r.spec));
        pthread_mutex_unlock(&rt->lock);
    }
    spec_resolved_clear(&r); /* safe after a failed resolve too */
    if (rc == 0)
        rc = rtx_persist(rt, inst, err);
    if (rc == 0 && snapshot)
        *snapshot = runtime_instance_snapshot(rt, id, err);
    pthread_mutex_unlock(&rt->control);
    return rc;
}

/* ------------------------------------------------------------ start / stop */

static int retired_error(struct err *err, const char *id, const char *hex)
{
    err_set(err, ERR_CONFLICT,
            "instance %s is pinned to revision sha256:%s, which no longer exists", id, hex);
    err_add_detail(err, "reason", json_string("retired"));
    return -1;
}

/* The revision a start should run: the pinned one while it exists, else a
 * name or tag selector is resolved again (and *repinned set). */
static int start_revision(const struct registry *reg, const struct instance *inst,
                          const char *selector, const char *hex, json_t **spec,
                          const json_t **metadata, char *new_hex, struct err *err)
{
    const struct registry_strategy *st = registry_find_strategy(reg, inst->strategy);
    const struct registry_revision *rev = st ? registry_find_revision(st, hex) : NULL;
    if (rev && !rev->invalid) {
        *metadata = rev->metadata;
        snprintf(new_hex, HASH_HEX_LEN + 1, "%s", hex);
        return 0;
    }
    struct selector sel;
    struct registry_resolution res;
    struct err ignored = ERR_INIT;
    bool moves = selector_parse(selector, &sel, &ignored) == 0 && !selector_is_pinned_hash(&sel);
    bool resolved = moves && spec_reresolve(reg, selector, &res, &ignored) == 0;
    err_clear(&ignored);
    if (!resolved && rev) {
        /* still in the catalogue, its file unusable (moved, not a file,
         * edited): that, not a deletion, is what keeps it from starting */
        err_set(err, ERR_CONFLICT,
                "instance %s is pinned to revision %s@sha256:%s, which is invalid: %s", inst->id,
                inst->strategy, hex, rev->invalid_reason ? rev->invalid_reason : "unknown reason");
        err_add_detail(err, "reason", json_string("invalidRevision"));
        return -1;
    }
    if (!resolved)
        return retired_error(err, inst->id, hex);
    json_t *repinned = spec_repin(*spec, res.revision->hex, res.tag ? res.tag : res.revision->tag);
    if (!repinned) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    json_decref(*spec);
    *spec = repinned;
    *metadata = res.revision->metadata;
    snprintf(new_hex, HASH_HEX_LEN + 1, "%s", res.revision->hex);
    return 0;
}

static void start_failed_locked(struct instance *inst, bool clear_desired, const char *message)
{
    if (clear_desired)
        inst->desired = false;
    set_reason_locked(inst, "startFailed");
    set_error_locked(inst, "create", message);
    inst->version++;
}

/* What a start runs, decided before any state changes. */
struct start_job {
    struct vm_plan *plan;
    json_t *repinned; /* the spec on its new pin, or NULL when the pin holds */
    char strategy[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
};

static int start_prepare(struct runtime *rt, struct instance *inst, struct start_job *job,
                         struct err *err)
{
    char selector[SELECTOR_TEXT_MAX + 1], hex[HASH_HEX_LEN + 1];
    pthread_mutex_lock(&rt->lock);
    json_t *spec = json_incref(inst->spec);
    snprintf(job->strategy, sizeof job->strategy, "%s", inst->strategy);
    snprintf(hex, sizeof hex, "%s", inst->hex);
    snprintf(selector, sizeof selector, "%s", inst->selector);
    pthread_mutex_unlock(&rt->lock);
    json_t *original = spec;
    const json_t *metadata = NULL;
    struct registry *reg = catalog_snapshot(rt->opts.catalog);
    int rc = start_revision(reg, inst, selector, hex, &spec, &metadata, job->hex, err);
    if (rc == 0)
        rc = spec_plan(rt, spec, job->strategy, job->hex, metadata, &job->plan, err);
    registry_release(reg);
    if (rc == 0 && spec != original)
        job->repinned = json_incref(spec);
    json_decref(spec);
    return rc;
}

/* Whether the provider is there once any delete of it has decided: one
 * that is deciding now counts this start among its dependents (it is
 * starting) and will refuse, or it saw no start and will succeed. It
 * decides in a moment (a count under the runtime's lock, which this thread
 * does not hold); waiting for it keeps both from failing at once. */
static bool provider_decided(struct runtime *rt, const char *provider)
{
    for (int waited_ms = 0;
         rt->opts.scope_leaving && rt->opts.scope_leaving(rt->opts.scope_ctx, provider, NULL);
         waited_ms++) {
        if (waited_ms == 5000)
            return false;
        nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    return rt->opts.scope_check(rt->opts.scope_ctx, provider, NULL);
}

/* Whether every provider of the instance's scope is still there. Asked
 * once the instance counts as starting: a provider's delete first makes
 * the scope check fail and then asks for dependents (which include
 * starting instances), so one of the two always sees the other. */
static bool scope_present(struct runtime *rt, struct instance *inst, struct err *err)
{
    if (!rt->opts.scope_check)
        return true;
    pthread_mutex_lock(&rt->lock);
    json_t *spec = json_incref(inst->spec);
    pthread_mutex_unlock(&rt->lock);
    const char *provider;
    json_t *value;
    bool present = true;
    json_object_foreach(json_object_get(spec, "scope"), provider, value)
    {
        if (present && !provider_decided(rt, provider)) {
            /* as spec_plan says it of a provider gone before the start */
            err_set(err, ERR_INVALID, "scope.%s: unknown provider %s", provider, provider);
            err_add_detail(err, "field", json_sprintf("scope.%s", provider));
            present = false;
        }
    }
    json_decref(spec);
    return present;
}

/* Records the intent (desired, pin) and, for a user's start, makes it
 * durable before the VM runs, together with the revision's usage touch (one
 * transaction): a 2xx start survives a crash. */
static int start_mark(struct runtime *rt, struct instance *inst, struct start_job *job,
                      bool user_request, const struct rtx_touches *touches, struct err *err)
{
    pthread_mutex_lock(&rt->lock);
    rtx_apply_spec_locked(rt, inst, job->repinned);
    job->repinned = NULL;
    bool was_desired = inst->desired;
    inst->desired = true;
    inst->starting = true; /* pins the revision for the delete guard */
    rtx_users_sync_locked(rt, inst);
    set_reason_locked(inst, NULL);
    set_error_locked(inst, NULL, NULL);
    inst->version++;
    pthread_mutex_unlock(&rt->lock);
    if (scope_present(rt, inst, err) &&
        (!user_request || rtx_persist_batch(rt, &inst, 1, touches, err) == 0))
        return 0;
    pthread_mutex_lock(&rt->lock);
    inst->desired = was_desired;
    inst->starting = false;
    rtx_users_sync_locked(rt, inst);
    inst->version++;
    pthread_mutex_unlock(&rt->lock);
    return -1;
}

/* The start did not go ahead: frees what its STAGE command loaded. */
static void unstage(struct instance *inst, struct command *stage)
{
    struct command cmd = {.kind = CMD_UNSTAGE, .inst = inst, .err = ERR_INIT};
    worker_call(inst->worker, &cmd); /* after the STAGE command: same queue */
    err_clear(&cmd.err);
    runtime_plan_free(stage->plan);
    err_clear(&stage->err);
}

/* Makes the intent durable (a user's start) and runs the VM: cmd->rc says
 * how the VM went; -1 when the intent could not be recorded. A user's
 * start stages the VM first, so the module loads while the commit syncs. */
static int start_run(struct runtime *rt, struct instance *inst, struct start_job *job,
                     bool user_request, const struct rtx_touches *touches, struct command *cmd,
                     struct err *err)
{
    struct command stage = {.kind = CMD_STAGE, .inst = inst, .err = ERR_INIT};
    if (user_request) {
        stage.plan = job->plan;
        job->plan = NULL;
        worker_post(inst->worker, &stage);
    }
    if (start_mark(rt, inst, job, user_request, touches, err) != 0) {
        if (user_request)
            unstage(inst, &stage);
        runtime_plan_free(job->plan);
        return -1;
    }
    cmd->plan = job->plan;
    cmd->stage = user_request ? &stage : NULL;
    worker_call(inst->worker, cmd);
    cmd->stage = NULL;
    runtime_plan_free(cmd->plan);
    runtime_plan_free(stage.plan); /* when the worker never took it */
    err_clear(&stage.err);
    return 0;
}

int rtx_start(struct runtime *rt, const char *id, bool user_request, struct err *err)
{
    pthread_mutex_lock(&rt->lock);
    struct instance *inst = rtx_find_locked(rt, id);
    bool running = inst && inst->running;
    pthread_mutex_unlock(&rt->lock);
    if (!inst) {
        err_set(err, ERR_NOT_FOUND, "instance %s not found", id);
        return -1;
    }
    if (running)
        return 0;
    struct start_job job = {0};
    if (start_prepare(rt, inst, &job, err) != 0) {
        /* a refused user request changes nothing (the answer says why); a
         * restore has no one to answer, so the snapshot says it */
        if (!user_request) {
            pthread_mutex_lock(&rt->lock);
            start_failed_locked(inst, false, err ? err->message : "the start was refused");
            pthread_mutex_unlock(&rt->lock);
            persist_or_log(rt, inst);
        }
        json_decref(job.repinned);
        runtime_plan_free(job.plan);
        return -1;
    }
    if (claim_revision(rt, inst, job.strategy, job.hex, ERR_CONFLICT, err) != 0) {
        json_decref(job.repinned);
        runtime_plan_free(job.plan);
        return -1;
    }
    struct rtx_touches touches = {0};
    int64_t now = clock_wall_ms();
    if (user_request && rtx_touch_add(&touches, job.strategy, job.hex, now) != 0)
        rtx_touches_free(&touches); /* then touched on its own after the start */
    struct command cmd = {.kind = CMD_START, .inst = inst, .err = ERR_INIT};
    if (start_run(rt, inst, &job, user_request, &touches, &cmd, err) != 0) {
        rtx_touches_free(&touches);
        rtx_release_pending(rt, inst);
        json_decref(job.repinned);
        return -1;
    }
    pthread_mutex_lock(&rt->lock);
    inst->starting = false;
    rtx_users_sync_locked(rt, inst);
    inst->pending_hex[0] = '\0';
    if (cmd.rc != 0)
        start_failed_locked(inst, user_request, cmd.err.message);
    pthread_mutex_unlock(&rt->lock);
    persist_or_log(rt, inst);
    if (cmd.rc != 0) {
        /* answered to the caller, and in the log for whoever watches it */
        char hash[HASH_SPELLED_LEN + 1];
        hash_spell(job.hex, hash);
        log_json(LOG_LEVEL_WARN, "runtime", "start failed",
                 json_pack("{s:s, s:s, s:s, s:s}", "strategy", job.strategy, "hash", hash,
                           "instance", inst->id, "error", cmd.err.message));
        rtx_touches_free(&touches);
        err_move(err, &cmd.err);
        return -1;
    }
    err_clear(&cmd.err);
    if (touches.n) {
        /* the store's touch went with the intent: memory gets the same time */
        touch_memory(rt, job.strategy, job.hex, now);
        count_action(rt, job.strategy, job.hex, "start");
    } else {
        rtx_note_start(rt, job.strategy, job.hex);
    }
    rtx_touches_free(&touches);
    return 0;
}

int runtime_instance_start_noting(struct runtime *rt, const char *id, bool *changed,
                                  struct err *err)
{
    pthread_mutex_lock(&rt->control);
    pthread_mutex_lock(&rt->lock);
    const struct instance *inst = rtx_find_locked(rt, id);
    bool was_running = inst && inst->running;
    pthread_mutex_unlock(&rt->lock);
    int rc = rtx_start(rt, id, true, err);
    pthread_mutex_unlock(&rt->control);
    if (changed)
        *changed = rc == 0 && !was_running;
    return rc;
}

int runtime_instance_start(struct runtime *rt, const char *id, struct err *err)
{
    return runtime_instance_start_noting(rt, id, NULL, err);
}

int rtx_stop_vm(struct runtime *rt, struct instance *inst, struct err *err)
{
    (void)rt;
    struct command cmd = {.kind = CMD_STOP, .inst = inst, .err = ERR_INIT};
    worker_call(inst->worker, &cmd);
    if (cmd.rc != 0) {
        err_move(err, &cmd.err);
        return -1;
    }
    return cmd.was_running ? 1 : 0;
}

static int stop_instance(struct runtime *rt, const char *id, bool cancel_orders, bool *changed,
                         struct err *err)
{
    if (changed)
        *changed = false;
    struct instance *inst = control_instance(rt, id, err);
    if (!inst)
        return -1;
    int was_running = rtx_stop_vm(rt, inst, err);
    if (was_running < 0) {
        pthread_mutex_unlock(&rt->control);
        return -1;
    }
    char strategy[NAMES_STRATEGY_MAX + 1], hex[HASH_HEX_LEN + 1];
    pthread_mutex_lock(&rt->lock);
    if (changed)
        *changed = inst->desired || was_running;
    if (inst->desired || was_running) {
        inst->desired = false;
        if (was_running)
            set_reason_locked(inst, "stopped");
        inst->version++;
    }
    snprintf(strategy, sizeof strategy, "%s", inst->strategy);
    snprintf(hex, sizeof hex, "%s", inst->hex);
    pthread_mutex_unlock(&rt->lock);
    int rc = rtx_persist(rt, inst, err);
    if (was_running)
        rtx_note_stop(rt, strategy, hex, "stopped");
    /* the VM has ended: no order of it can follow the cancels */
    if (rc == 0 && cancel_orders && rt->opts.market.abandon) {
        rt->opts.market.abandon(rt->opts.market.ctx, inst->key, inst->id,
                                RUNTIME_STOP_CANCEL_REASON);
        if (changed)
            *changed = true;
    }
    pthread_mutex_unlock(&rt->control);
    return rc;
}

int runtime_instance_stop_noting(struct runtime *rt, const char *id, bool *changed, struct err *err)
{
    return stop_instance(rt, id, false, changed, err);
}

int runtime_instance_stop_cancelling(struct runtime *rt, const char *id, bool *changed,
                                     struct err *err)
{
    return stop_instance(rt, id, true, changed, err);
}

int runtime_instance_stop(struct runtime *rt, const char *id, struct err *err)
{
    return runtime_instance_stop_noting(rt, id, NULL, err);
}

int runtime_instance_delete(struct runtime *rt, const char *id, struct err *err)
{
    struct instance *inst = control_instance(rt, id, err);
    if (!inst)
        return -1;
    /* Forgotten durably first: a crash after this leaves no instance. The
     * VM runs until the detach below, and if it fails meanwhile its worker
     * persists the failure: `forgotten`, set in the same rt->persist hold
     * as the delete, makes that write (and any later one) a no-op instead
     * of an upsert that brings the record back. */
    int rc = 0;
    pthread_mutex_lock(&rt->persist);
    inst->forgotten = true;
    if (rt->opts.store)
        rc = store_instance_delete(rt->opts.store, id, err);
    if (rc != 0)
        inst->forgotten = false;
    pthread_mutex_unlock(&rt->persist);
    if (rc != 0) {
        pthread_mutex_unlock(&rt->control);
        return -1;
    }
    struct command cmd = {.kind = CMD_DETACH, .inst = inst, .err = ERR_INIT};
    worker_call(inst->worker, &cmd);
    err_clear(&cmd.err);
    /* only now: the detach ended the VM, so no order of it can follow */
    if (rt->opts.market.forget)
        rt->opts.market.forget(rt->opts.market.ctx, inst->key, inst->id);
    pthread_mutex_lock(&rt->lock);
    rtx_set_running_locked(rt, inst, false);
    remove_locked(rt, inst);
    pthread_mutex_unlock(&rt->lock);
    if (cmd.was_running)
        rtx_note_stop(rt, inst->strategy, inst->hex, "deleted");
    free_instance(inst);
    pthread_mutex_unlock(&rt->control);
    return 0;
}

/* ------------------------------------------------------------ restore */

/* An instance that was running a revision now gone or invalid is not moved
 * to whatever its selector names now: an instance moves only when an
 * operator refreshes it (or starts it). It stays stopped, and says why. */
static void keep_unmoved(struct runtime *rt, struct instance *inst, const char *what)
{
    char message[ERR_MESSAGE_MAX], hash[HASH_SPELLED_LEN + 1];
    hash_spell(inst->hex, hash);
    snprintf(message, sizeof message,
             "its revision %s is %s: it was not moved to what '%s' names now; refresh or start "
             "it to move it",
             hash, what, inst->selector);
    pthread_mutex_lock(&rt->lock);
    inst->desired = false;
    set_reason_locked(inst, "startFailed");
    set_error_locked(inst, NULL, message);
    inst->version++;
    pthread_mutex_unlock(&rt->lock);
    log_json(LOG_LEVEL_ERROR, "runtime", "instance not restarted",
             json_pack("{s:s, s:s}", "instance", inst->id, "error", message));
    persist_or_log(rt, inst);
}

/* Rebuilds one record; for a revision that is gone the selector is
 * resolved again: nothing found leaves the instance stopped as "retired";
 * else the instance keeps its pin, stopped or (keep_unmoved) one that was
 * running, until a start or a refresh moves it. */
static void restore_one(struct runtime *rt, const struct registry *reg, const json_t *record)
{
    const char *id = json_string_value(json_object_get(record, "id"));
    const json_t *spec = json_object_get(record, "spec");
    if (!id || !json_is_object(spec) || !names_valid_id(id)) {
        log_warn("runtime", "skipping a malformed instance record %s", id ? id : "(no id)");
        return;
    }
    struct err err = ERR_INIT;
    pthread_mutex_lock(&rt->lock);
    struct instance *inst = rtx_find_locked(rt, id) ? NULL : new_instance_locked(rt, id, &err);
    if (inst) {
        rtx_apply_spec_locked(rt, inst, json_deep_copy(spec));
        inst->desired = json_is_true(json_object_get(record, "desiredRunning"));
        set_reason_locked(inst, json_string_value(json_object_get(record, "stopReason")));
        inst->persisted = inst->version;
        if (insert_locked(rt, inst) != 0) {
            free_instance(inst);
            inst = NULL;
        }
    }
    pthread_mutex_unlock(&rt->lock);
    err_clear(&err);
    if (!inst)
        return;
    const struct registry_strategy *st = registry_find_strategy(reg, inst->strategy);
    const struct registry_revision *rev = st ? registry_find_revision(st, inst->hex) : NULL;
    if (rev && !rev->invalid)
        return;
    json_t *copy = json_incref(inst->spec);
    const json_t *metadata;
    char hex[HASH_HEX_LEN + 1];
    int rc = start_revision(reg, inst, inst->selector, inst->hex, &copy, &metadata, hex, &err);
    if (rc == 0 && inst->desired) {
        json_decref(copy);
        err_clear(&err);
        keep_unmoved(rt, inst, rev ? "invalid" : "missing");
        return;
    }
    json_decref(copy);
    err_clear(&err);
    /* A stopped instance whose selector still resolves keeps its pin: its
     * start, or a refresh, moves it and says so (the restart had moved it
     * without a word). One whose selector resolves to nothing is retired. */
    if (rc == 0)
        return;
    pthread_mutex_lock(&rt->lock);
    inst->desired = false;
    set_reason_locked(inst, "retired");
    inst->version++;
    pthread_mutex_unlock(&rt->lock);
    persist_or_log(rt, inst);
}

int runtime_restore(struct runtime *rt, struct err *err)
{
    if (!rt->opts.store)
        return 0;
    pthread_mutex_lock(&rt->control);
    json_t *records = NULL;
    if (store_instance_list(rt->opts.store, &records, err) != 0) {
        pthread_mutex_unlock(&rt->control);
        return -1;
    }
    struct registry *reg = catalog_snapshot(rt->opts.catalog);
    size_t i;
    json_t *record;
    json_array_foreach(records, i, record) restore_one(rt, reg, record);
    registry_release(reg);
    json_array_foreach(records, i, record)
    {
        const char *id = json_string_value(json_object_get(record, "id"));
        pthread_mutex_lock(&rt->lock);
        struct instance *inst = id ? rtx_find_locked(rt, id) : NULL;
        bool start = inst && inst->desired && !inst->running;
        pthread_mutex_unlock(&rt->lock);
        struct err failure = ERR_INIT;
        if (start && rtx_start(rt, id, false, &failure) != 0)
            log_warn("runtime", "instance %s did not start: %s", id, failure.message);
        err_clear(&failure);
    }
    json_decref(records);
    pthread_mutex_unlock(&rt->control);
    return 0;
}

/* ------------------------------------------------------------ guard, counts */

static bool mark_matches(const struct revision_mark *m, const char *strategy, const char *hex)
{
    return strcmp(m->strategy, strategy) == 0 && (!m->hex[0] || !hex || strcmp(m->hex, hex) == 0);
}

static bool marks_find(const struct revision_marks *marks, const char *strategy, const char *hex)
{
    for (size_t i = 0; i < marks->n; i++) {
        if (mark_matches(&marks->items[i], strategy, hex))
            return true;
    }
    return false;
}

static int marks_add(struct revision_marks *marks, const char *strategy, const char *hex)
{
    if (marks->n == marks->cap) {
        size_t cap = marks->cap ? marks->cap * 2 : 4;
        struct revision_mark *grown = realloc(marks->items, cap * sizeof *grown);
        if (!grown)
            return -1;
        marks->items = grown;
        marks->cap = cap;
    }
    struct revision_mark *m = &marks->items[marks->n++];
    snprintf(m->strategy, sizeof m->strategy, "%s", strategy);
    snprintf(m->hex, sizeof m->hex, "%s", hex ? hex : "");
    return 0;
}

/* Removes one entry for exactly {strategy, hex}. */
static void marks_remove(struct revision_marks *marks, const char *strategy, const char *hex)
{
    for (size_t i = 0; i < marks->n; i++) {
        const struct revision_mark *m = &marks->items[i];
        if (strcmp(m->strategy, strategy) == 0 && strcmp(m->hex, hex ? hex : "") == 0) {
            marks->items[i] = marks->items[--marks->n];
            return;
        }
    }
}

bool rtx_deleting_locked(const struct runtime *rt, const char *strategy, const char *hex)
{
    return marks_find(&rt->deleting, strategy, hex);
}

int rtx_claim_pending(struct runtime *rt, struct instance *inst, const char *strategy,
                      const char *hex, struct err *err)
{
    pthread_mutex_lock(&rt->lock);
    bool deleting = rtx_deleting_locked(rt, strategy, hex);
    if (!deleting) {
        snprintf(inst->pending_strategy, sizeof inst->pending_strategy, "%s", strategy);
        snprintf(inst->pending_hex, sizeof inst->pending_hex, "%s", hex);
    }
    pthread_mutex_unlock(&rt->lock);
    if (!deleting)
        return 0;
    err_set(err, ERR_CONFLICT, "%s@sha256:%s is being deleted", strategy, hex);
    err_add_detail(err, "reason", json_string("retired"));
    return -1;
}

bool rtx_revision_exists(struct runtime *rt, const char *strategy, const char *hex)
{
    struct registry *reg = catalog_snapshot(rt->opts.catalog);
    const struct registry_strategy *st = reg ? registry_find_strategy(reg, strategy) : NULL;
    const struct registry_revision *rev = st ? registry_find_revision(st, hex) : NULL;
    bool exists = rev && !rev->invalid;
    registry_release(reg);
    return exists;
}

void rtx_release_pending(struct runtime *rt, struct instance *inst)
{
    pthread_mutex_lock(&rt->lock);
    inst->pending_hex[0] = '\0';
    pthread_mutex_unlock(&rt->lock);
}

static bool pins_locked(const struct instance *inst, const char *name, const char *hex)
{
    bool current = (inst->running || inst->starting) && strcmp(inst->strategy, name) == 0 &&
                   (!hex || strcmp(inst->hex, hex) == 0);
    bool pending = inst->pending_hex[0] && strcmp(inst->pending_strategy, name) == 0 &&
                   (!hex || strcmp(inst->pending_hex, hex) == 0);
    return current || pending;
}

int runtime_delete_guard(void *ctx, const char *name, const char *hex, struct err *err)
{
    struct runtime *rt = ctx;
    json_t *ids = json_array();
    pthread_mutex_lock(&rt->lock);
    for (size_t i = 0; i < rt->ninstances; i++) {
        if (pins_locked(rt->instances[i], name, hex))
            json_array_append_new(ids, json_string(rt->instances[i]->id));
    }
    size_t n = json_array_size(ids);
    bool held = n == 0 && marks_find(&rt->holding, name, hex);
    int marked = n == 0 && !held ? marks_add(&rt->deleting, name, hex) : 0;
    pthread_mutex_unlock(&rt->lock);
    if (held) {
        json_decref(ids);
        err_set(err, ERR_CONFLICT,
                "%s%s%s is the target of a tag move that is refreshing its instances onto it; "
                "try again once it has answered",
                name, hex ? "@sha256:" : "", hex ? hex : "");
        err_add_detail(err, "instances", json_array());
        return -1;
    }
    if (n == 0) {
        json_decref(ids);
        if (marked != 0)
            err_set(err, ERR_INTERNAL, "out of memory");
        return marked;
    }
    if (hex)
        err_set(err, ERR_CONFLICT, "%s@sha256:%s is pinned by %zu running instance%s", name, hex, n,
                n == 1 ? "" : "s");
    else
        err_set(err, ERR_CONFLICT, "strategy %s is pinned by %zu running instance%s", name, n,
                n == 1 ? "" : "s");
    err_add_detail(err, "instances", ids);
    return -1;
}

static bool follows_tag_locked(const struct instance *inst, const char *name, const char *tag)
{
    if (!(inst->running || inst->starting))
        return false;
    struct selector sel;
    struct err ignored = ERR_INIT;
    bool parsed = selector_parse(inst->selector, &sel, &ignored) == 0;
    err_clear(&ignored);
    if (!parsed || strcmp(sel.name, name) != 0)
        return false;
    if (sel.kind == SELECTOR_TAG)
        return strcmp(sel.tag, tag) == 0;
    return sel.kind == SELECTOR_LATEST && strcmp(tag, REGISTRY_LATEST) == 0;
}

int runtime_tag_guard(struct runtime *rt, const char *name, const char *tag, struct err *err)
{
    pthread_mutex_lock(&rt->lock);
    size_t first;
    size_t n = pins_range_locked(rt, name, NULL, &first);
    struct instance **picked = calloc(n ? n : 1, sizeof *picked);
    size_t npicked = 0;
    for (size_t i = first; picked && i < first + n; i++) {
        if (follows_tag_locked(rt->pins[i], name, tag))
            picked[npicked++] = rt->pins[i];
    }
    json_t *ids = npicked ? json_array() : NULL;
    if (npicked)
        qsort(picked, npicked, sizeof *picked, cmp_instance_ids);
    for (size_t i = 0; ids && i < npicked; i++)
        json_array_append_new(ids, json_string(picked[i]->id));
    pthread_mutex_unlock(&rt->lock);
    bool out_of_memory = !picked || (npicked && !ids);
    free(picked);
    if (out_of_memory) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    if (npicked == 0)
        return 0;
    const char *them = npicked == 1 ? "it" : "them";
    err_set(err, ERR_CONFLICT,
            "tag '%s' of %s is followed by %zu running instance%s: the next refresh would stop "
            "%s; move the tag instead, or stop %s or give %s another selector first",
            tag, name, npicked, npicked == 1 ? "" : "s", them, them, them);
    err_add_detail(err, "instances", ids);
    return -1;
}

void runtime_delete_finished(struct runtime *rt, const char *name, const char *hex)
{
    pthread_mutex_lock(&rt->lock);
    marks_remove(&rt->deleting, name, hex);
    pthread_mutex_unlock(&rt->lock);
}

int runtime_hold_revision(struct runtime *rt, const char *name, const char *hex, struct err *err)
{
    pthread_mutex_lock(&rt->lock);
    bool deleting = marks_find(&rt->deleting, name, hex);
    int rc = deleting ? -1 : marks_add(&rt->holding, name, hex);
    pthread_mutex_unlock(&rt->lock);
    if (deleting)
        err_set(err, ERR_NOT_FOUND, "%s@sha256:%s is being deleted", name, hex);
    else if (rc != 0)
        err_set(err, ERR_INTERNAL, "out of memory");
    return rc;
}

void runtime_release_revision(struct runtime *rt, const char *name, const char *hex)
{
    pthread_mutex_lock(&rt->lock);
    marks_remove(&rt->holding, name, hex);
    pthread_mutex_unlock(&rt->lock);
}

/* Whether the stopped instance, pinned to what the delete of {name, hex}
 * (hex NULL: the whole strategy) took, can never start again: its selector
 * names that hash, or no longer resolves (start_revision's test). */
static bool stranded_locked(const struct instance *inst, const struct registry *reg,
                            const char *name, const char *hex)
{
    if (inst->running || inst->starting || strcmp(inst->strategy, name) != 0 ||
        (hex && strcmp(inst->hex, hex) != 0) || strcmp(inst->stop_reason, "retired") == 0)
        return false;
    struct selector sel;
    struct registry_resolution res;
    struct err ignored = ERR_INIT;
    bool moves =
        selector_parse(inst->selector, &sel, &ignored) == 0 && !selector_is_pinned_hash(&sel);
    bool resolved = moves && spec_reresolve(reg, inst->selector, &res, &ignored) == 0;
    err_clear(&ignored);
    return !resolved;
}

/* Marks "retired" the instances the delete left unable to start, as a
 * restart would find them, and saves them in one transaction. */
static void retire_stranded(struct runtime *rt, const char *name, const char *hex)
{
    pthread_mutex_lock(&rt->control);
    struct registry *reg = catalog_snapshot(rt->opts.catalog);
    pthread_mutex_lock(&rt->lock);
    struct instance **marked = calloc(rt->ninstances ? rt->ninstances : 1, sizeof *marked);
    size_t n = 0;
    for (size_t i = 0; marked && i < rt->ninstances; i++) {
        struct instance *inst = rt->instances[i];
        if (stranded_locked(inst, reg, name, hex)) {
            set_reason_locked(inst, "retired");
            inst->version++;
            marked[n++] = inst;
        }
    }
    pthread_mutex_unlock(&rt->lock);
    registry_release(reg);
    struct err err = ERR_INIT;
    if (!marked || (n > 0 && rtx_persist_batch(rt, marked, n, NULL, &err) != 0))
        log_error("runtime", "cannot save the instances retired with %s: %s", name,
                  marked ? err.message : "out of memory");
    err_clear(&err);
    free(marked);
    pthread_mutex_unlock(&rt->control);
}

void runtime_forget_revision(struct runtime *rt, const char *name, const char *hex)
{
    retire_stranded(rt, name, hex);
    if (!hex) {
        metrics_remove(rt->m_actions, "strategy", name);
        metrics_remove(rt->m_errors, "strategy", name);
        return;
    }
    char spelled[HASH_SPELLED_LEN + 1];
    hash_spell(hex, spelled);
    metrics_remove(rt->m_actions, "hash", spelled);
    metrics_remove(rt->m_errors, "hash", spelled);
    js_bytecode_cache_forget(rt->bytecode, hex);
}

int runtime_running_count(struct runtime *rt, const char *strategy, const char *hex)
{
    int n = 0;
    pthread_mutex_lock(&rt->lock);
    if (hex) {
        const struct usage_entry *u = usage_find_locked(rt, strategy, hex, false);
        n = u ? u->running : 0;
    } else {
        for (size_t i = 0; i < rt->nusage; i++) {
            if (strcmp(rt->usage[i].strategy, strategy) == 0)
                n += rt->usage[i].running;
        }
    }
    pthread_mutex_unlock(&rt->lock);
    return n;
}

void runtime_stats(struct runtime *rt, struct runtime_stats *out)
{
    memset(out, 0, sizeof *out);
    for (int i = 0; i < rt->nworkers; i++) {
        struct worker *w = &rt->workers[i];
        for (int k = 0; k < EVENT_KIND_COUNT; k++)
            out->events_delivered += counter_get(&w->delivered[k]);
        out->handler_errors += counter_get(&w->errors);
        out->event_poll_ns += counter_get(&w->poll_ns[POLL_EVENTS]);
    }
    out->compilations = js_bytecode_cache_compilations(rt->bytecode);
    pthread_mutex_lock(&rt->lock);
    out->instances = (int)rt->ninstances;
    for (size_t i = 0; i < rt->ninstances; i++)
        out->running += rt->instances[i]->running;
    pthread_mutex_unlock(&rt->lock);
}

/* ------------------------------------------------------------ batch checks */

int runtime_instance_spec_resolve(struct runtime *rt, const json_t *spec,
                                  runtime_scope_fn scope_check, void *scope_ctx, json_t **resolved,
                                  struct err *err)
{
    *resolved = NULL;
    /* a copy of the options with another scope check answers for providers
     * that do not exist yet, without changing what other threads read */
    struct runtime_options opts = rt->opts;
    if (scope_check) {
        opts.scope_check = scope_check;
        opts.scope_ctx = scope_ctx;
    }
    struct registry *reg = catalog_snapshot(rt->opts.catalog);
    struct spec_resolved r;
    int rc = spec_resolve(&opts, reg, spec, NULL, &r, err);
    registry_release(reg);
    if (rc != 0)
        return -1;
    *resolved = json_incref(r.spec);
    spec_resolved_clear(&r);
    return 0;
}
