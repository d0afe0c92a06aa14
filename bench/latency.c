/*
 * Tick-to-order latency, in process: the real store, catalogue, simulated
 * market, runtime (worker pool and QuickJS instances) wired as
 * src/cmd/serve.c wires them, with two pass-through hooks at the
 * boundaries that serve.c also fills in:
 *
 *   event sink    (provider thread)  every event still goes to
 *                 runtime_publish(); an ExecReport "acknowledged" is
 *                 timestamped by the matching engine (sim_publish stamps
 *                 created_ns as the engine publishes it), so
 *                 ack.created_ns - trigger.created_ns is the time from the
 *                 Trade's creation at the provider to the order having been
 *                 accepted by the engine. It includes the engine's
 *                 validation of the order, so it bounds the time to reach
 *                 the engine from above.
 *   market_ops    (worker thread)    submit() is the real market's,
 *                 called through; the hook notes when the strategy's order
 *                 left the VM (order_request.created_ns) and which event
 *                 triggered it (trigger_created_ns).
 *
 * Two phases per run: unpaced (tickRate 0) to find the maximum Trade rate
 * the setup sustains, then (after the worker queues have drained) paced at
 * half of it while orders are timed.
 *
 * The machine's own noise floor is measured during the timed phase: a
 * thread that sleeps 200 us at a time (timer slack 1 ns) records how late
 * it wakes. On a shared machine its tail is time spent waiting for a CPU,
 * which every thread of the order path pays too.
 *
 * --market-store 0 gives the market no store (orders and executions are not
 * recorded), to show what recording them costs the order path (the copies
 * the provider thread queues, and the store writer's thread competing for
 * the cores); the runtime keeps its store either way. --event-poll-us sets
 * the runtime's event_poll_us (default: the gateway's, RUNTIME_EVENT_POLL_US;
 * 0: workers always sleep between events).
 *
 * Prints one JSON object.
 *
 * usage: bench_latency --dir DIR --strategy FILE.js [--background FILE.js
 *        --background-instances N] [--workers N] [--seconds S] [--max-seconds S]
 *        [--market-store 0|1] [--event-poll-us N] [--dump FILE]
 *
 * The exact tick-to-order figure comes from the market itself: its
 * stratd_tick_to_order_seconds histogram times every order from the
 * Trade's creation to the engine taking the order (from the submitting
 * worker, or off the provider's queue when a tick held the engine). Read
 * before and after the timed phase, it gives dequeue_orders, the share
 * that made it within 50 us (dequeue_within_50us: the target is met when
 * it is >= 0.99) and the bucket bounds holding the median and the 99th
 * percentile (us; null past 100 ms). The ack-based figures above stay as
 * the per-order split.
 *
 * --dump writes one line per timed order: seconds since the first, trade ->
 * order leaves the VM (us), order -> engine acknowledgement (us).
 */
#include "core/clock.h"
#include "core/err.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "js/validate.h"
#include "market/market.h"
#include "registry/registry.h"
#include "runtime/runtime.h"
#include "store/store.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define PROVIDER "lat"
#define SYMBOL "BTC-USDT"
#define MAX_ORDERS (1u << 20) /* order numbers remembered (a ring) */
#define MAX_RATE 100000.0     /* the simulated adapter's tickRate ceiling */
#define NOISE_SLEEP_NS 200000 /* the noise probe's sleep */

struct sample {
    int64_t trigger_ns; /* Trade created at the provider */
    int64_t submit_ns;  /* order left the VM */
};

/* One timed order, for --dump. */
struct timed {
    int64_t trigger_ns, submit_ns, ack_ns;
};

struct bench {
    struct store *store;
    struct catalog *catalog;
    struct market *market;
    struct runtime *runtime;
    struct market_ops real;
    atomic_uint_fast64_t trades; /* Trade events published */
    atomic_bool recording;
    struct sample *orders; /* by order number % MAX_ORDERS (worker writes, provider reads) */
    /* provider thread only, read after the provider stopped */
    int64_t *total, *to_submit, *to_engine;
    struct timed *timed;
    size_t n, cap;
    /* the noise probe's thread only, read after it was joined */
    int64_t *late;
    size_t nlate;
};

static struct bench B;

/* ------------------------------------------------------------ histogram */

/* The provider's stratd_tick_to_order_seconds as cumulative counts per
 * bucket, read from the market's exposition text (what GET /metrics
 * serves). */
#define HIST_MAX 32
struct hist {
    double le[HIST_MAX];
    double cumulative[HIST_MAX];
    size_t n;
};

static void hist_read(struct hist *h)
{
    static const char prefix[] =
        "stratd_tick_to_order_seconds_bucket{provider=\"" PROVIDER "\",le=\"";
    struct strbuf out = STRBUF_INIT;
    market_metrics_write(B.market, &out);
    h->n = 0;
    const char *text = strbuf_cstr(&out);
    for (const char *at = strstr(text, prefix); at && h->n < HIST_MAX;
         at = strstr(at + 1, prefix)) {
        char *end;
        const char *le = at + sizeof prefix - 1;
        h->le[h->n] = strncmp(le, "+Inf", 4) == 0 ? INFINITY : strtod(le, &end);
        const char *value = strstr(le, "} ");
        h->cumulative[h->n++] = value ? strtod(value + 2, NULL) : 0;
    }
    strbuf_release(&out);
}

/* Counts of the timed phase (end - start): the share of orders that reached
 * the engine within `bound` seconds, and the bucket bound under which the
 * fraction q of them fall (in us; INFINITY past the last bound). */
static double hist_within(const struct hist *a, const struct hist *b, double bound)
{
    if (a->n != b->n || a->n == 0)
        return NAN;
    double total = b->cumulative[b->n - 1] - a->cumulative[a->n - 1];
    for (size_t i = 0; i < b->n; i++) {
        if (b->le[i] >= bound - 1e-12)
            return total > 0 ? (b->cumulative[i] - a->cumulative[i]) / total : NAN;
    }
    return NAN;
}

static double hist_bound_us(const struct hist *a, const struct hist *b, double q)
{
    if (a->n != b->n || a->n == 0)
        return NAN;
    double total = b->cumulative[b->n - 1] - a->cumulative[a->n - 1];
    for (size_t i = 0; total > 0 && i < b->n; i++) {
        if (b->cumulative[i] - a->cumulative[i] >= q * total)
            return b->le[i] * 1e6;
    }
    return NAN;
}

/* A JSON number, or null for what the histogram cannot tell. */
static const char *json_num(char *buf, size_t size, double v)
{
    if (isfinite(v))
        snprintf(buf, size, "%.6g", v);
    else
        snprintf(buf, size, "null");
    return buf;
}

static double hist_count(const struct hist *a, const struct hist *b)
{
    return a->n && a->n == b->n ? b->cumulative[b->n - 1] - a->cumulative[a->n - 1] : 0;
}

/* ------------------------------------------------------------- hooks */

static uint64_t order_number(const char *client_order_id)
{
    const char *dash = strrchr(client_order_id, '-');
    return dash ? strtoull(dash + 1, NULL, 10) : 0;
}

static int hook_submit(void *ctx, const struct order_request *req, char *error, size_t size)
{
    (void)ctx;
    struct sample *s = &B.orders[order_number(req->client_order_id) % MAX_ORDERS];
    s->trigger_ns = req->trigger_created_ns;
    s->submit_ns = req->created_ns;
    return B.real.submit(B.real.ctx, req, error, size);
}

static void note_ack(const struct event *ev)
{
    const struct sample *s = &B.orders[order_number(ev->u.exec.client_order_id) % MAX_ORDERS];
    if (s->trigger_ns == 0 || B.n == B.cap)
        return;
    B.total[B.n] = ev->created_ns - s->trigger_ns;
    B.to_submit[B.n] = s->submit_ns - s->trigger_ns;
    B.to_engine[B.n] = ev->created_ns - s->submit_ns;
    B.timed[B.n] = (struct timed){s->trigger_ns, s->submit_ns, ev->created_ns};
    B.n++;
}

static void hook_note(const struct event *ev)
{
    if (ev->kind == EVENT_TRADE)
        atomic_fetch_add_explicit(&B.trades, 1, memory_order_relaxed);
    else if (ev->kind == EVENT_EXEC_REPORT && ev->u.exec.status == EXEC_ACKNOWLEDGED &&
             atomic_load_explicit(&B.recording, memory_order_relaxed))
        note_ack(ev);
}

static void hook_publish(void *ctx, struct event *ev)
{
    (void)ctx;
    hook_note(ev);
    runtime_publish(B.runtime, ev);
}

static void hook_publish_run(void *ctx, struct event **evs, size_t n)
{
    (void)ctx;
    for (size_t i = 0; i < n; i++)
        hook_note(evs[i]);
    runtime_publish_run(B.runtime, evs, n);
}

static bool hook_wants(void *ctx, uint16_t provider, uint16_t symbol, enum event_kind kind)
{
    (void)ctx;
    return runtime_wants(B.runtime, provider, symbol, kind);
}

/* --------------------------------------------------- wiring (serve.c) */

static json_t *revision_metadata(void *ctx, const char *name, const char *hex, const char *source,
                                 size_t len, char **reason)
{
    (void)ctx;
    (void)hex;
    struct err err = ERR_INIT;
    json_t *metadata = js_validate(source, len, name, NULL, &err);
    if (!metadata)
        *reason = strdup(err.message);
    err_clear(&err);
    return metadata;
}

static bool scope_check(void *ctx, const char *provider, const char *symbol)
{
    (void)ctx;
    return symbol ? market_has_symbol(B.market, provider, symbol)
                  : market_has_provider(B.market, provider);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (text && fread(text, 1, (size_t)size, f) != (size_t)size) {
        free(text);
        text = NULL;
    }
    fclose(f);
    if (text) {
        text[size] = '\0';
        *len = (size_t)size;
    }
    return text;
}

/* Registers a module file; *name receives its strategy name. */
static int add_module(const char *path, char *name, size_t name_size, struct err *err)
{
    size_t len = 0;
    char *source = read_file(path, &len);
    if (!source) {
        err_set_errno(err, ERR_INVALID, errno, "cannot read %s", path);
        return -1;
    }
    json_t *metadata = js_validate(source, len, path, NULL, err);
    int rc = -1;
    if (metadata) {
        snprintf(name, name_size, "%s", json_string_value(json_object_get(metadata, "name")));
        struct catalog_upload up = {.name = name,
                                    .source = source,
                                    .len = len,
                                    .metadata = metadata,
                                    .promote_latest = true};
        struct catalog_upload_result result;
        rc = catalog_add_revision(B.catalog, &up, &result, err);
    }
    json_decref(metadata);
    free(source);
    return rc;
}

static int add_instances(const char *strategy, const char *prefix, int count, struct err *err)
{
    for (int i = 1; i <= count; i++) {
        char id[64];
        snprintf(id, sizeof id, "%s-%d", prefix, i);
        json_t *spec = json_pack("{s:s, s:{s:s}, s:{s:{s:[s]}}}", "id", id, "strategy", "selector",
                                 strategy, "scope", PROVIDER, "symbols", SYMBOL);
        int rc = runtime_instance_create(B.runtime, spec, NULL, err);
        json_decref(spec);
        if (rc != 0 || runtime_instance_start(B.runtime, id, err) != 0)
            return -1;
    }
    return 0;
}

static int set_rate(double tick_rate, struct err *err)
{
    json_t *req = json_pack("{s:s, s:{s:s, s:{s:[s], s:I, s:f}}, s:b}", "name", PROVIDER, "adapter",
                            "identifier", "simulated", "config", "symbols", SYMBOL, "seed",
                            (json_int_t)1, "tickRate", tick_rate, "enabled", 0);
    int rc = market_provider_update(B.market, PROVIDER, req, NULL, err);
    json_decref(req);
    return rc;
}

static void sleep_seconds(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - floor(s)) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Waits until no event has been delivered for 200 ms: the worker queues
 * are empty (the provider must be stopped). */
static void drain(void)
{
    struct runtime_stats st;
    runtime_stats(B.runtime, &st);
    uint64_t last = st.events_delivered;
    for (int quiet = 0; quiet < 4;) {
        sleep_seconds(0.05);
        runtime_stats(B.runtime, &st);
        quiet = st.events_delivered == last ? quiet + 1 : 0;
        last = st.events_delivered;
    }
}

static void *noise_probe(void *arg)
{
    (void)arg;
    prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
    while (atomic_load(&B.recording) && B.nlate < B.cap) {
        int64_t t0 = clock_mono_ns();
        struct timespec ts = {0, NOISE_SLEEP_NS};
        nanosleep(&ts, NULL);
        B.late[B.nlate++] = clock_mono_ns() - t0 - NOISE_SLEEP_NS;
    }
    return NULL;
}

/* What the machine did besides this process: CPU seconds of everything
 * (user, nice, system, irq, softirq) and stolen by the hypervisor, from
 * /proc/stat. */
struct machine {
    double busy, steal, self;
};

static void machine_read(struct machine *m)
{
    unsigned long long v[8] = {0};
    FILE *f = fopen("/proc/stat", "r");
    if (f) {
        if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
                   &v[4], &v[5], &v[6], &v[7]) != 8)
            memset(v, 0, sizeof v);
        fclose(f);
    }
    double hz = (double)sysconf(_SC_CLK_TCK);
    m->busy = (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / hz;
    m->steal = (double)v[7] / hz;
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    m->self = (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ figures */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_us(int64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)ceil(q * (double)n);
    return (double)v[k ? k - 1 : 0] / 1e3;
}

/* ---------------------------------------------------------------- main */

struct args {
    const char *dir, *strategy, *background;
    int background_instances, workers, event_poll_us;
    double seconds, max_seconds;
    bool market_store;
    const char *dump;
};

static int parse_args(int argc, char **argv, struct args *a)
{
    *a = (struct args){NULL, NULL, NULL, 0, 2, RUNTIME_EVENT_POLL_US, 10, 3, true, NULL};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (strcmp(k, "--dir") == 0)
            a->dir = v;
        else if (strcmp(k, "--strategy") == 0)
            a->strategy = v;
        else if (strcmp(k, "--background") == 0)
            a->background = v;
        else if (strcmp(k, "--background-instances") == 0)
            a->background_instances = atoi(v);
        else if (strcmp(k, "--workers") == 0)
            a->workers = atoi(v);
        else if (strcmp(k, "--seconds") == 0)
            a->seconds = atof(v);
        else if (strcmp(k, "--max-seconds") == 0)
            a->max_seconds = atof(v);
        else if (strcmp(k, "--market-store") == 0)
            a->market_store = atoi(v) != 0;
        else if (strcmp(k, "--event-poll-us") == 0)
            a->event_poll_us = atoi(v);
        else if (strcmp(k, "--dump") == 0)
            a->dump = v;
        else
            return -1;
    }
    return a->dir && a->strategy ? 0 : -1;
}

static int run(const struct args *a, struct err *err)
{
    char path[4096];
    mkdir(a->dir, 0755);
    snprintf(path, sizeof path, "%s/state", a->dir);
    if (store_open(path, &B.store, err) != 0)
        return -1;
    snprintf(path, sizeof path, "%s/strategies", a->dir);
    struct catalog_options copts = {path, revision_metadata, NULL, false};
    if (catalog_open(&copts, &B.catalog, err) != 0)
        return -1;
    struct event_sink sink = {NULL, hook_publish, hook_wants, hook_publish_run};
    B.market = market_new(sink, a->market_store ? B.store : NULL);
    if (!B.market) {
        err_set(err, ERR_INTERNAL, "cannot create the market");
        return -1;
    }
    B.real = market_runtime_ops(B.market);
    struct market_ops ops = B.real;
    ops.submit = hook_submit;
    struct runtime_options ropts = {
        .workers = a->workers,
        .catalog = B.catalog,
        .store = B.store,
        .market = ops,
        .scope_check = scope_check,
        .environment = "bench",
        .event_poll_us = a->event_poll_us,
        /* order.js orders up to one in 50 trades, 2,000 a second at the
         * rate used, over the gateway's default; the bucket is still taken */
        .max_orders_per_second = 100000,
    };
    if (runtime_new(&ropts, &B.runtime, err) != 0)
        return -1;
    json_t *provider = json_pack("{s:s, s:{s:s, s:{s:[s], s:I, s:f}}, s:b}", "name", PROVIDER,
                                 "adapter", "identifier", "simulated", "config", "symbols", SYMBOL,
                                 "seed", (json_int_t)1, "tickRate", 0.0, "enabled", 0);
    int rc = market_provider_create(B.market, provider, NULL, err);
    json_decref(provider);
    char name[128], background[128] = "";
    if (rc != 0 || add_module(a->strategy, name, sizeof name, err) != 0 ||
        (a->background && add_module(a->background, background, sizeof background, err) != 0))
        return -1;
    if ((a->background && add_instances(background, "bg", a->background_instances, err) != 0) ||
        add_instances(name, "lat", 1, err) != 0)
        return -1;

    /* phase 1: unpaced, the maximum Trade rate */
    if (market_provider_start(B.market, PROVIDER, NULL, err) != 0)
        return -1;
    sleep_seconds(1);
    uint64_t t0 = atomic_load(&B.trades);
    int64_t w0 = clock_mono_ns();
    sleep_seconds(a->max_seconds);
    double max_rate =
        (double)(atomic_load(&B.trades) - t0) / ((double)(clock_mono_ns() - w0) / 1e9);
    if (market_provider_stop(B.market, PROVIDER, NULL, err) != 0)
        return -1;

    drain();

    /* phase 2: paced at half of it, orders timed */
    double rate = fmin(max_rate / 2, MAX_RATE);
    if (set_rate(rate, err) != 0 || market_provider_start(B.market, PROVIDER, NULL, err) != 0)
        return -1;
    sleep_seconds(1);
    t0 = atomic_load(&B.trades);
    w0 = clock_mono_ns();
    atomic_store(&B.recording, true);
    pthread_t probe;
    bool probing = pthread_create(&probe, NULL, noise_probe, NULL) == 0;
    struct machine m0, m1;
    struct hist h0, h1;
    hist_read(&h0);
    machine_read(&m0);
    sleep_seconds(a->seconds);
    machine_read(&m1);
    hist_read(&h1);
    atomic_store(&B.recording, false);
    if (probing)
        pthread_join(probe, NULL);
    double wall = (double)(clock_mono_ns() - w0) / 1e9;
    double self_cores = (m1.self - m0.self) / wall;
    /* the two clocks tick differently: an idle machine can read slightly below 0 */
    double other_cores = fmax(0.0, (m1.busy - m0.busy) / wall - self_cores);
    double steal_cores = (m1.steal - m0.steal) / wall;
    double paced = (double)(atomic_load(&B.trades) - t0) / ((double)(clock_mono_ns() - w0) / 1e9);
    if (market_provider_stop(B.market, PROVIDER, NULL, err) != 0)
        return -1;

    FILE *dump = a->dump ? fopen(a->dump, "w") : NULL;
    for (size_t i = 0; dump && i < B.n; i++)
        fprintf(dump, "%.6f %.1f %.1f\n",
                (double)(B.timed[i].trigger_ns - B.timed[0].trigger_ns) / 1e9,
                (double)(B.timed[i].submit_ns - B.timed[i].trigger_ns) / 1e3,
                (double)(B.timed[i].ack_ns - B.timed[i].submit_ns) / 1e3);
    if (dump)
        fclose(dump);
    char n1[32], n2[32], n3[32];
    qsort(B.total, B.n, sizeof *B.total, cmp_i64);
    qsort(B.to_submit, B.n, sizeof *B.to_submit, cmp_i64);
    qsort(B.to_engine, B.n, sizeof *B.to_engine, cmp_i64);
    qsort(B.late, B.nlate, sizeof *B.late, cmp_i64);
    printf("{\"max_rate\": %.0f, \"target_rate\": %.0f, \"rate\": %.0f, \"orders\": %zu, "
           "\"background_instances\": %d, \"market_store\": %s, \"event_poll_us\": %d, "
           "\"self_cores\": %.2f, \"other_cores\": %.2f, \"steal_cores\": %.2f, "
           "\"noise_p50_us\": %.1f, \"noise_p99_us\": %.1f, \"noise_p999_us\": %.1f, "
           "\"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, "
           "\"submit_p50_us\": %.1f, \"submit_p99_us\": %.1f, \"submit_p999_us\": %.1f, "
           "\"engine_p50_us\": %.1f, \"engine_p99_us\": %.1f, \"engine_p999_us\": %.1f, "
           "\"dequeue_orders\": %.0f, \"dequeue_within_50us\": %s, "
           "\"dequeue_p50_bucket_us\": %s, \"dequeue_p99_bucket_us\": %s}\n",
           max_rate, rate, paced, B.n, a->background ? a->background_instances : 0,
           a->market_store ? "true" : "false", a->event_poll_us, self_cores, other_cores,
           steal_cores, pct_us(B.late, B.nlate, 0.5), pct_us(B.late, B.nlate, 0.99),
           pct_us(B.late, B.nlate, 0.999), pct_us(B.total, B.n, 0.5), pct_us(B.total, B.n, 0.99),
           pct_us(B.total, B.n, 0.999), pct_us(B.total, B.n, 1.0), pct_us(B.to_submit, B.n, 0.5),
           pct_us(B.to_submit, B.n, 0.99), pct_us(B.to_submit, B.n, 0.999),
           pct_us(B.to_engine, B.n, 0.5), pct_us(B.to_engine, B.n, 0.99),
           pct_us(B.to_engine, B.n, 0.999), hist_count(&h0, &h1),
           json_num(n1, sizeof n1, hist_within(&h0, &h1, 50e-6)),
           json_num(n2, sizeof n2, hist_bound_us(&h0, &h1, 0.5)),
           json_num(n3, sizeof n3, hist_bound_us(&h0, &h1, 0.99)));
    return 0;
}

int main(int argc, char **argv)
{
    struct args a;
    if (parse_args(argc, argv, &a) != 0) {
        fprintf(stderr,
                "usage: bench_latency --dir DIR --strategy FILE.js [--background FILE.js "
                "--background-instances N] [--workers N] [--seconds S] "
                "[--max-seconds S] [--market-store 0|1] [--event-poll-us N] [--dump FILE]\n");
        return 2;
    }
    B.orders = calloc(MAX_ORDERS, sizeof *B.orders);
    B.cap = 1u << 22;
    B.total = malloc(B.cap * sizeof *B.total);
    B.to_submit = malloc(B.cap * sizeof *B.to_submit);
    B.to_engine = malloc(B.cap * sizeof *B.to_engine);
    B.late = malloc(B.cap * sizeof *B.late);
    B.timed = malloc(B.cap * sizeof *B.timed);
    if (!B.orders || !B.total || !B.to_submit || !B.to_engine || !B.late || !B.timed)
        return 1;
    log_set_level(LOG_LEVEL_ERROR);
    struct err err = ERR_INIT;
    int rc = run(&a, &err);
    if (rc != 0)
        fprintf(stderr, "bench_latency: %s\n", err.message);
    err_clear(&err);
    if (B.market) {
        struct err e = ERR_INIT;
        market_provider_stop(B.market, PROVIDER, NULL, &e);
        err_clear(&e);
    }
    runtime_free(B.runtime);
    market_free(B.market);
    if (B.catalog)
        catalog_close(B.catalog);
    store_close(B.store);
    free(B.orders);
    free(B.total);
    free(B.to_submit);
    free(B.to_engine);
    free(B.late);
    free(B.timed);
    return rc == 0 ? 0 : 1;
}
