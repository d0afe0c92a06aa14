/*
 * Helpers shared by the runtime's unit tests: a real catalogue (revisions
 * validated by js_validate) and a real store in a temporary directory, a
 * fake market that records orders, hand-made events, and a log capture.
 *
 * Providers known to the fake scope check: "sim" (BTC-USDT, ETH-USDT) and
 * "alt" (BTC-USDT, SOL-USDT).
 */
#ifndef STRATD_TESTS_RTFIXTURE_H
#define STRATD_TESTS_RTFIXTURE_H

#include "testutil.h"

#include "core/clock.h"
#include "core/err.h"
#include "core/intern.h"
#include "core/jsonutil.h"
#include "core/log.h"
#include "js/validate.h"
#include "registry/registry.h"
#include "runtime/runtime.h"
#include "store/store.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define fx_ok(call, errp)                                                                          \
    do {                                                                                           \
        if ((call) != 0)                                                                           \
            fail_msg("%s failed: %s", #call, (errp)->message);                                     \
    } while (0)

#define fx_fails(call, errp, expected)                                                             \
    do {                                                                                           \
        if ((call) == 0)                                                                           \
            fail_msg("%s succeeded, expected %s", #call, err_kind_name(expected));                 \
        if ((errp)->kind != (expected))                                                            \
            fail_msg("%s: expected %s, got %s: %s", #call, err_kind_name(expected),                \
                     err_kind_name((errp)->kind), (errp)->message);                                \
    } while (0)

/* ------------------------------------------------------------ fake market */

#define FX_MAX_ORDERS 20000

struct fx_market {
    pthread_mutex_t lock;
    struct order_request *orders;
    size_t norders;
    char cancels[64][EVENT_ORDER_ID_MAX];
    size_t ncancels;
    struct market_quote quote;
    bool trading;
    bool refuse; /* submit fails at once */
};

static inline int fx_submit(void *ctx, const struct order_request *req, char *error,
                            size_t error_size)
{
    struct fx_market *m = ctx;
    pthread_mutex_lock(&m->lock);
    int rc = 0;
    if (m->refuse) {
        snprintf(error, error_size, "provider %s is closed", intern_name(req->provider));
        rc = -1;
    } else if (m->norders < FX_MAX_ORDERS) {
        m->orders[m->norders++] = *req;
    }
    pthread_mutex_unlock(&m->lock);
    return rc;
}

static inline int fx_cancel(void *ctx, uint32_t key, uint16_t provider, const char *id, char *error,
                            size_t error_size)
{
    (void)key;
    (void)provider;
    (void)error;
    (void)error_size;
    struct fx_market *m = ctx;
    pthread_mutex_lock(&m->lock);
    if (m->ncancels < 64)
        snprintf(m->cancels[m->ncancels++], EVENT_ORDER_ID_MAX, "%s", id);
    pthread_mutex_unlock(&m->lock);
    return 0;
}

static inline bool fx_quote(void *ctx, uint16_t provider, uint16_t symbol, struct market_quote *q)
{
    (void)provider;
    (void)symbol;
    struct fx_market *m = ctx;
    pthread_mutex_lock(&m->lock);
    *q = m->quote;
    pthread_mutex_unlock(&m->lock);
    return q->valid;
}

static inline bool fx_trading(void *ctx, uint16_t provider)
{
    (void)provider;
    struct fx_market *m = ctx;
    pthread_mutex_lock(&m->lock);
    bool t = m->trading;
    pthread_mutex_unlock(&m->lock);
    return t;
}

static inline size_t fx_order_count(struct fx_market *m)
{
    pthread_mutex_lock(&m->lock);
    size_t n = m->norders;
    pthread_mutex_unlock(&m->lock);
    return n;
}

static inline struct order_request fx_order(struct fx_market *m, size_t i)
{
    pthread_mutex_lock(&m->lock);
    struct order_request r = m->orders[i];
    pthread_mutex_unlock(&m->lock);
    return r;
}

static inline bool fx_scope(void *ctx, const char *provider, const char *symbol)
{
    (void)ctx;
    static const char *const known[][3] = {{"sim", "BTC-USDT", "ETH-USDT"},
                                           {"alt", "BTC-USDT", "SOL-USDT"}};
    for (size_t i = 0; i < 2; i++) {
        if (strcmp(known[i][0], provider) != 0)
            continue;
        return !symbol || strcmp(symbol, known[i][1]) == 0 || strcmp(symbol, known[i][2]) == 0;
    }
    return false;
}

/* ------------------------------------------------------------ fixture */

struct fx {
    char *dir;
    char *log_path;
    int log_fd;
    struct catalog *cat;
    struct store *store;
    struct runtime *rt;
    struct fx_market market;
    struct runtime_options opts;
    uint64_t seq;
};

static inline json_t *fx_metadata(void *ctx, const char *name, const char *hex, const char *source,
                                  size_t len, char **reason)
{
    (void)ctx;
    (void)hex;
    struct err err = ERR_INIT;
    char filename[80];
    snprintf(filename, sizeof filename, "%s.js", name);
    json_t *md = js_validate(source, len, filename, NULL, &err);
    if (!md)
        *reason = strdup(err.message);
    err_clear(&err);
    return md;
}

static inline void fx_start_runtime(struct fx *f)
{
    struct err err = ERR_INIT;
    fx_ok(runtime_new(&f->opts, &f->rt, &err), &err);
}

/* workers: 0 for the default. */
static inline void fx_open(struct fx *f, int workers)
{
    memset(f, 0, sizeof *f);
    f->dir = tu_tempdir("runtime");
    char *strategies = tu_path("%s/strategies", f->dir);
    char *state = tu_path("%s/state", f->dir);
    f->log_path = tu_path("%s/log.jsonl", f->dir);
    f->log_fd = open(f->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    assert_true(f->log_fd >= 0);
    log_set_fd(f->log_fd);
    struct err err = ERR_INIT;
    struct catalog_options copts = {strategies, fx_metadata, NULL, false};
    fx_ok(catalog_open(&copts, &f->cat, &err), &err);
    fx_ok(store_open(state, &f->store, &err), &err);
    free(strategies);
    free(state);
    pthread_mutex_init(&f->market.lock, NULL);
    f->market.orders = calloc(FX_MAX_ORDERS, sizeof *f->market.orders);
    f->market.trading = true;
    f->opts = (struct runtime_options){
        .workers = workers,
        .catalog = f->cat,
        .store = f->store,
        .market = {&f->market, fx_submit, fx_cancel, fx_quote, fx_trading},
        .scope_check = fx_scope,
        .environment = "test",
        .log_lines_per_second = 100000,
        /* these suites order on every event, far faster than the default
         * allows; test_limits.c checks the limit itself */
        .max_orders_per_second = -1,
        .event_poll_us = RUNTIME_EVENT_POLL_US,
    };
    fx_start_runtime(f);
}

/* A new runtime over the same catalogue and store (a gateway restart). */
static inline void fx_restart(struct fx *f)
{
    runtime_free(f->rt);
    f->rt = NULL;
    fx_start_runtime(f);
    struct err err = ERR_INIT;
    fx_ok(runtime_restore(f->rt, &err), &err);
}

static inline void fx_close(struct fx *f)
{
    runtime_free(f->rt);
    store_close(f->store);
    catalog_close(f->cat);
    log_set_fd(STDERR_FILENO);
    close(f->log_fd);
    free(f->market.orders);
    pthread_mutex_destroy(&f->market.lock);
    tu_remove_tree(f->dir);
    free(f->dir);
    free(f->log_path);
}

/* ------------------------------------------------------------ revisions */

/* Uploads a source (its metadata.name must be `name`); hex receives its
 * hash. */
static inline void fx_upload(struct fx *f, const char *name, const char *source, const char *tag,
                             char hex[HASH_HEX_LEN + 1])
{
    struct err err = ERR_INIT;
    char *reason = NULL;
    json_t *md = fx_metadata(NULL, name, NULL, source, strlen(source), &reason);
    if (!md)
        fail_msg("%s does not validate: %s", name, reason);
    struct catalog_upload up = {.name = name,
                                .source = source,
                                .len = strlen(source),
                                .metadata = md,
                                .tag = tag,
                                .promote_latest = true};
    struct catalog_upload_result result;
    fx_ok(catalog_add_revision(f->cat, &up, &result, &err), &err);
    json_decref(md);
    memcpy(hex, result.hex, HASH_HEX_LEN + 1);
}

/* module.exports = {metadata: {name, displayName, events, config}, create(env) {body}} */
static inline char *fx_module(const char *name, const char *events, const char *config,
                              const char *body)
{
    return tu_path("module.exports = {\n"
                   "  metadata: { name: '%s', displayName: 'Test %s', events: %s, config: %s },\n"
                   "  create(env) {\n%s\n  },\n"
                   "};\n",
                   name, name, events, config ? config : "[]", body);
}

/* fx_module's module, uploaded as `name` (hex: its revision). */
static inline void fx_add_module(struct fx *f, const char *name, const char *events,
                                 const char *config, const char *body, char hex[HASH_HEX_LEN + 1])
{
    char *src = fx_module(name, events, config, body);
    fx_upload(f, name, src, NULL, hex);
    free(src);
}

/* ------------------------------------------------------------ instances */

static inline json_t *fx_spec(const char *id, const char *selector, const char *config_json,
                              const char *scope_json)
{
    struct err err = ERR_INIT;
    const char *config = config_json ? config_json : "{}";
    const char *scope = scope_json ? scope_json : "{\"sim\": {\"symbols\": [\"BTC-USDT\"]}}";
    char *text = tu_path("{\"id\": \"%s\", \"strategy\": {\"selector\": \"%s\", \"config\": %s},"
                         " \"scope\": %s}",
                         id, selector, config, scope);
    json_t *spec = jsonutil_parse(text, strlen(text), &err);
    if (!spec)
        fail_msg("bad test spec %s: %s", text, err.message);
    free(text);
    return spec;
}

static inline void fx_create(struct fx *f, const char *id, const char *selector,
                             const char *config_json, const char *scope_json)
{
    struct err err = ERR_INIT;
    json_t *spec = fx_spec(id, selector, config_json, scope_json);
    fx_ok(runtime_instance_create(f->rt, spec, NULL, &err), &err);
    json_decref(spec);
}

static inline void fx_start(struct fx *f, const char *id)
{
    struct err err = ERR_INIT;
    fx_ok(runtime_instance_start(f->rt, id, &err), &err);
}

static inline void fx_run(struct fx *f, const char *id, const char *selector,
                          const char *config_json, const char *scope_json)
{
    fx_create(f, id, selector, config_json, scope_json);
    fx_start(f, id);
}

static inline json_t *fx_snapshot(struct fx *f, const char *id)
{
    struct err err = ERR_INIT;
    json_t *snap = runtime_instance_snapshot(f->rt, id, &err);
    if (!snap)
        fail_msg("snapshot %s: %s", id, err.message);
    return snap;
}

static inline long long fx_delivered(struct fx *f, const char *id)
{
    json_t *snap = fx_snapshot(f, id);
    long long n = tu_jint(snap, "counters.eventsDelivered");
    json_decref(snap);
    return n;
}

static inline bool fx_running(struct fx *f, const char *id)
{
    json_t *snap = fx_snapshot(f, id);
    bool running = json_is_true(json_object_get(snap, "running"));
    json_decref(snap);
    return running;
}

/* The stop reason, or "" (copied into out). */
static inline const char *fx_reason(struct fx *f, const char *id, char *out, size_t size)
{
    json_t *snap = fx_snapshot(f, id);
    const char *r = json_string_value(json_object_get(snap, "stopReason"));
    snprintf(out, size, "%s", r ? r : "");
    json_decref(snap);
    return out;
}

/* ------------------------------------------------------------ events */

static inline struct event *fx_event(struct fx *f, enum event_kind kind, const char *provider,
                                     const char *symbol, size_t extra)
{
    struct event *ev = event_new(kind, extra);
    assert_non_null(ev);
    ev->provider = intern_id(provider);
    ev->symbol = symbol ? intern_id(symbol) : 0;
    ev->seq = ++f->seq;
    ev->created_ns = clock_mono_ns();
    ev->ts_ms = 1700000000000 + (int64_t)f->seq;
    return ev;
}

static inline uint64_t fx_trade(struct fx *f, const char *provider, const char *symbol,
                                double price, double quantity)
{
    struct event *ev = fx_event(f, EVENT_TRADE, provider, symbol, 0);
    ev->u.trade.price = price;
    ev->u.trade.quantity = quantity;
    ev->u.trade.side = SIDE_BUY;
    ev->u.trade.trade_id = 7000 + ev->seq;
    uint64_t seq = ev->seq;
    runtime_publish(f->rt, ev);
    return seq;
}

static inline void fx_exec(struct fx *f, uint32_t target, const char *provider, const char *symbol,
                           enum exec_status status, const char *client_id)
{
    struct event *ev = fx_event(f, EVENT_EXEC_REPORT, provider, symbol, 0);
    ev->target = target;
    ev->u.exec.status = status;
    snprintf(ev->u.exec.client_order_id, sizeof ev->u.exec.client_order_id, "%s", client_id);
    snprintf(ev->u.exec.order_id, sizeof ev->u.exec.order_id, "ord-%llu",
             (unsigned long long)ev->seq);
    ev->u.exec.side = SIDE_SELL;
    ev->u.exec.type = ORDER_LIMIT;
    ev->u.exec.quantity = 2;
    ev->u.exec.price = 101.5;
    ev->u.exec.last_quantity = 1;
    ev->u.exec.last_price = 101.25;
    ev->u.exec.filled_quantity = 1;
    ev->u.exec.remaining_quantity = 1;
    ev->u.exec.average_price = 101.25;
    ev->u.exec.fee = 0.1;
    snprintf(ev->u.exec.fee_asset, sizeof ev->u.exec.fee_asset, "USDT");
    ev->u.exec.dry_run = true;
    runtime_publish(f->rt, ev);
}

/* ------------------------------------------------------------ waiting */

static inline void fx_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Polls until cond(arg) or timeout_ms; returns the last cond value. */
static inline bool fx_wait(bool (*cond)(struct fx *, const void *), struct fx *f, const void *arg,
                           int timeout_ms)
{
    int64_t deadline = clock_mono_ns() + (int64_t)timeout_ms * 1000000;
    while (!cond(f, arg)) {
        if (clock_mono_ns() > deadline)
            return cond(f, arg);
        fx_sleep_ms(1);
    }
    return true;
}

static inline bool fx_cond_orders(struct fx *f, const void *arg)
{
    return fx_order_count(&f->market) >= *(const size_t *)arg;
}

static inline bool fx_cond_stopped(struct fx *f, const void *arg)
{
    return !fx_running(f, arg);
}

static inline bool fx_wait_orders(struct fx *f, size_t n, int timeout_ms)
{
    return fx_wait(fx_cond_orders, f, &n, timeout_ms);
}

struct fx_count {
    const char *id;
    long long n;
};

static inline bool fx_cond_delivered(struct fx *f, const void *arg)
{
    const struct fx_count *c = arg;
    return fx_delivered(f, c->id) >= c->n;
}

static inline bool fx_wait_delivered(struct fx *f, const char *id, long long n, int timeout_ms)
{
    struct fx_count c = {id, n};
    return fx_wait(fx_cond_delivered, f, &c, timeout_ms);
}

/* ------------------------------------------------------------ logs */

/* Log lines (parsed) of component "strategy" for the instance (NULL: any),
 * whose msg starts with prefix (NULL: any). */
static inline json_t *fx_logs(struct fx *f, const char *instance, const char *prefix)
{
    size_t len = 0;
    char *text = tu_read_file(f->log_path, &len);
    json_t *out = json_array();
    for (char *line = text; line && *line;) {
        char *nl = strchr(line, '\n');
        if (nl)
            *nl = '\0';
        json_t *j = json_loads(line, 0, NULL);
        const char *comp = json_string_value(json_object_get(j, "component"));
        const char *inst = json_string_value(json_object_get(j, "instance"));
        const char *msg = json_string_value(json_object_get(j, "msg"));
        if (j && comp && strcmp(comp, "strategy") == 0 &&
            (!instance || (inst && strcmp(inst, instance) == 0)) &&
            (!prefix || (msg && strncmp(msg, prefix, strlen(prefix)) == 0)))
            json_array_append(out, j);
        json_decref(j);
        line = nl ? nl + 1 : NULL;
    }
    free(text);
    return out;
}

struct fx_logwait {
    const char *instance, *prefix;
    size_t n;
};

static inline bool fx_cond_logs(struct fx *f, const void *arg)
{
    const struct fx_logwait *w = arg;
    json_t *logs = fx_logs(f, w->instance, w->prefix);
    bool ok = json_array_size(logs) >= w->n;
    json_decref(logs);
    return ok;
}

static inline bool fx_wait_logs(struct fx *f, const char *instance, const char *prefix, size_t n,
                                int timeout_ms)
{
    struct fx_logwait w = {instance, prefix, n};
    return fx_wait(fx_cond_logs, f, &w, timeout_ms);
}

#endif
