/*
 * A recording event_sink for the market tests, plus order helpers.
 *
 * The sink keeps every published event whose kind is in `record_mask`
 * (all kinds when the mask is 0) in an array under a mutex and counts every
 * kind; the latest event of each kind is kept too. With `limit` set, publish
 * blocks once that many events are recorded (back-pressure, as a saturated
 * runtime would), until tsink_release(); after that events are dropped.
 * `delay_us` makes it a slow consumer. tsink_sink_in_runs() also takes
 * runs of events, counting them.
 */
#ifndef STRATD_TESTS_MARKET_TESTSINK_H
#define STRATD_TESTS_MARKET_TESTSINK_H

#include "testutil.h"

#include "core/clock.h"
#include "core/intern.h"
#include "market/market.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct tsink {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    struct event **events;
    size_t n, cap;
    unsigned record_mask; /* 1u << kind; 0 = every kind */
    size_t limit;         /* block when n reaches it (0 = never) */
    bool released;
    int delay_us;
    unsigned wants_mask;  /* what wants() answers yes to (tsink_sink_wanting) */
    size_t wants_period;  /* if set, yes only in every other run of this many calls */
    _Atomic size_t asked; /* wants() calls */
    size_t runs, run_max; /* publish_run() calls and the longest (tsink_sink_in_runs) */
    size_t counts[EVENT_KIND_COUNT];
    struct event *latest[EVENT_KIND_COUNT];
};

static inline void tsink_init(struct tsink *s, unsigned record_mask, size_t limit)
{
    memset(s, 0, sizeof *s);
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->cond, NULL);
    s->record_mask = record_mask;
    s->limit = limit;
}

static inline void tsink_publish(void *ctx, struct event *ev)
{
    struct tsink *s = ctx;
    if (s->delay_us)
        usleep((useconds_t)s->delay_us);
    pthread_mutex_lock(&s->lock);
    while (s->limit && s->n >= s->limit && !s->released)
        pthread_cond_wait(&s->cond, &s->lock);
    if (s->released && s->limit) {
        pthread_mutex_unlock(&s->lock);
        event_release(ev);
        return;
    }
    s->counts[ev->kind]++;
    event_release(s->latest[ev->kind]);
    event_retain(ev);
    s->latest[ev->kind] = ev;
    if (s->record_mask && !(s->record_mask & (1u << ev->kind))) {
        pthread_mutex_unlock(&s->lock);
        event_release(ev);
        return;
    }
    if (s->n == s->cap) {
        s->cap = s->cap ? s->cap * 2 : 256;
        s->events = realloc(s->events, s->cap * sizeof *s->events);
        assert_non_null(s->events);
    }
    s->events[s->n++] = ev;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static inline struct event_sink tsink_sink(struct tsink *s)
{
    return (struct event_sink){s, tsink_publish, NULL, NULL};
}

static inline bool tsink_wants(void *ctx, uint16_t provider, uint16_t symbol, enum event_kind kind)
{
    struct tsink *s = ctx;
    (void)provider;
    (void)symbol;
    size_t n = atomic_fetch_add(&s->asked, 1);
    if (s->wants_period && (n / s->wants_period) % 2 == 1)
        return false;
    return (s->wants_mask & (1u << kind)) != 0;
}

/* A sink that says which kinds it wants: those in `mask`. */
static inline struct event_sink tsink_sink_wanting(struct tsink *s, unsigned mask)
{
    s->wants_mask = mask;
    return (struct event_sink){s, tsink_publish, tsink_wants, NULL};
}

static inline void tsink_publish_run(void *ctx, struct event **evs, size_t n)
{
    struct tsink *s = ctx;
    pthread_mutex_lock(&s->lock);
    s->runs++;
    s->run_max = n > s->run_max ? n : s->run_max;
    pthread_mutex_unlock(&s->lock);
    for (size_t i = 0; i < n; i++)
        tsink_publish(s, evs[i]);
}

/* A sink that takes a provider's events in runs, as the runtime does. */
static inline struct event_sink tsink_sink_in_runs(struct tsink *s)
{
    return (struct event_sink){s, tsink_publish, NULL, tsink_publish_run};
}

/* Unblocks a limited sink for good (call before stopping its provider). */
static inline void tsink_release(struct tsink *s)
{
    pthread_mutex_lock(&s->lock);
    s->released = true;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->lock);
}

static inline void tsink_destroy(struct tsink *s)
{
    for (size_t i = 0; i < s->n; i++)
        event_release(s->events[i]);
    for (int k = 0; k < EVENT_KIND_COUNT; k++)
        event_release(s->latest[k]);
    free(s->events);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
}

static inline int64_t tsink_deadline(int timeout_ms)
{
    return clock_mono_ns() + timeout_ms * 1000000LL;
}

/* Waits (polling under the lock's condition) until `done(s, arg)` holds. */
static inline bool tsink_wait(struct tsink *s, bool (*done)(struct tsink *, const void *),
                              const void *arg, int timeout_ms)
{
    int64_t until = tsink_deadline(timeout_ms);
    pthread_mutex_lock(&s->lock);
    bool ok;
    while (!(ok = done(s, arg)) && clock_mono_ns() < until) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 10 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&s->cond, &s->lock, &ts);
    }
    pthread_mutex_unlock(&s->lock);
    return ok;
}

static inline bool tsink_has_n(struct tsink *s, const void *arg)
{
    return s->n >= *(const size_t *)arg;
}

static inline bool tsink_wait_n(struct tsink *s, size_t n, int timeout_ms)
{
    return tsink_wait(s, tsink_has_n, &n, timeout_ms);
}

struct tsink_kind_n {
    enum event_kind kind;
    size_t n;
};

static inline bool tsink_has_kind(struct tsink *s, const void *arg)
{
    const struct tsink_kind_n *k = arg;
    return s->counts[k->kind] >= k->n;
}

static inline bool tsink_wait_kind(struct tsink *s, enum event_kind kind, size_t n, int timeout_ms)
{
    struct tsink_kind_n k = {kind, n};
    return tsink_wait(s, tsink_has_kind, &k, timeout_ms);
}

/* Exec reports of one client order id, in order; the caller frees the
 * array (the events stay owned by the sink). */
static inline size_t tsink_execs(struct tsink *s, const char *client_id, struct event ***out)
{
    pthread_mutex_lock(&s->lock);
    struct event **list = calloc(s->n + 1, sizeof *list);
    assert_non_null(list);
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        struct event *ev = s->events[i];
        if (ev->kind == EVENT_EXEC_REPORT && strcmp(ev->u.exec.client_order_id, client_id) == 0)
            list[k++] = ev;
    }
    pthread_mutex_unlock(&s->lock);
    *out = list;
    return k;
}

struct tsink_exec_wait {
    const char *client_id;
    enum exec_status status;
};

static inline bool tsink_has_exec(struct tsink *s, const void *arg)
{
    const struct tsink_exec_wait *w = arg;
    for (size_t i = 0; i < s->n; i++) {
        struct event *ev = s->events[i];
        if (ev->kind == EVENT_EXEC_REPORT && ev->u.exec.status == w->status &&
            strcmp(ev->u.exec.client_order_id, w->client_id) == 0)
            return true;
    }
    return false;
}

static inline bool tsink_wait_exec(struct tsink *s, const char *client_id, enum exec_status status,
                                   int timeout_ms)
{
    struct tsink_exec_wait w = {client_id, status};
    return tsink_wait(s, tsink_has_exec, &w, timeout_ms);
}

struct tsink_execs_n {
    const char *client_id;
    size_t n;
};

static inline bool tsink_has_execs(struct tsink *s, const void *arg)
{
    const struct tsink_execs_n *w = arg;
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        struct event *ev = s->events[i];
        k += ev->kind == EVENT_EXEC_REPORT && strcmp(ev->u.exec.client_order_id, w->client_id) == 0;
    }
    return k >= w->n;
}

/* Waits until a client order id has at least n reports. */
static inline bool tsink_wait_execs(struct tsink *s, const char *client_id, size_t n,
                                    int timeout_ms)
{
    struct tsink_execs_n w = {client_id, n};
    return tsink_wait(s, tsink_has_execs, &w, timeout_ms);
}

/* A copy of the latest event of a kind (NULL if none yet); release it. */
static inline struct event *tsink_latest(struct tsink *s, enum event_kind kind)
{
    pthread_mutex_lock(&s->lock);
    struct event *ev = s->latest[kind];
    if (ev)
        event_retain(ev);
    pthread_mutex_unlock(&s->lock);
    return ev;
}

/* ---- providers and orders ---- */

/* Creates provider `name` from a JSON config text; fails the test on error. */
static inline void tmarket_create(struct market *m, const char *name, const char *config_json,
                                  bool enabled)
{
    json_error_t jerr;
    json_t *config = json_loads(config_json, 0, &jerr);
    if (!config)
        fail_msg("bad test config %s: %s", config_json, jerr.text);
    json_t *req = json_pack("{s:s, s:{s:s, s:o}, s:b}", "name", name, "adapter", "identifier",
                            "simulated", "config", config, "enabled", enabled);
    struct err err = ERR_INIT;
    if (market_provider_create(m, req, NULL, &err) != 0)
        fail_msg("create %s: %s", name, err.message);
    json_decref(req);
}

static inline struct order_request tmarket_order(const char *provider, const char *symbol,
                                                 enum order_side side, enum order_type type,
                                                 double qty, double price, const char *client_id)
{
    struct order_request r;
    memset(&r, 0, sizeof r);
    r.instance_key = 7;
    snprintf(r.instance_id, sizeof r.instance_id, "inst-7");
    r.provider = intern_id(provider);
    r.symbol = intern_id(symbol);
    r.side = side;
    r.type = type;
    r.quantity = qty;
    r.price = price;
    snprintf(r.client_order_id, sizeof r.client_order_id, "%s", client_id);
    r.created_ns = clock_mono_ns();
    return r;
}

static inline void tmarket_submit(struct market *m, const struct order_request *r)
{
    struct market_ops ops = market_runtime_ops(m);
    char error[256] = "";
    if (ops.submit(ops.ctx, r, error, sizeof error) != 0)
        fail_msg("submit %s: %s", r->client_order_id, error);
}

static inline bool tmarket_wait_running(struct market *m, const char *provider, int timeout_ms)
{
    struct market_ops ops = market_runtime_ops(m);
    int64_t until = tsink_deadline(timeout_ms);
    while (!ops.trading_active(ops.ctx, intern_id(provider))) {
        if (clock_mono_ns() > until)
            return false;
        usleep(1000);
    }
    return true;
}

/* The balance of one asset from market_balances_json. */
static inline double tmarket_balance(struct market *m, const char *provider, const char *asset,
                                     double *available)
{
    struct err err = ERR_INIT;
    json_t *b = market_balances_json(m, provider, asset, 0, &err);
    assert_non_null(b);
    json_t *rec = json_array_get(json_object_get(b, "balances"), 0);
    assert_non_null(rec);
    double total = strtod(json_string_value(json_object_get(rec, "total")), NULL);
    if (available)
        *available = strtod(json_string_value(json_object_get(rec, "available")), NULL);
    json_decref(b);
    return total;
}

static inline bool tnear(double a, double b)
{
    return fabs(a - b) <= 1e-9 * fmax(1, fabs(b));
}

#endif
