/*
 * Load and soak: 100 running instances on a fast simulated market, a
 * constant mix of control-plane requests from client threads, and hostile
 * strategies injected while it runs.
 *
 * The instances run `seqcheck`, which checks every event it receives: per
 * (provider, symbol) the sequence number only grows (a repeat or a step
 * back is a duplicate) and trade ids follow each other (a jump is a lost
 * trade); per provider every sequence number arrives (a jump is a lost
 * event: the instances take every kind of market event the simulated
 * provider publishes, and nothing here places orders). It reports its
 * counters with helpers.log("seqcheck {events, gaps, dups}") every second
 * and each anomaly at once; the test reads the server's log.
 *
 * Phases: warm-up (with one round of hostile strategies, so the heap's
 * high-water mark is reached before RSS is compared), then windows without
 * and with hostile strategies. In a hostile window, rounds of four
 * instances (an endless loop, a memory bomb, an exception on every event,
 * unbounded recursion) are started one after the other and each must stop
 * with its reason (cpuBudget, memoryLimit, tooManyErrors, stackOverflow)
 * while the others keep running; a fifth, a storm of huge helpers.log
 * lines, runs through the window. Logging is not a fault: the storm is
 * never stopped, its lines are cut at 4 KiB and those over the instance's
 * rate (runtime.log_lines_per_second) are dropped and counted, one warning
 * a second saying how many.
 *
 * Asserted: zero 5xx and no transport error on the control plane; zero
 * gaps and duplicates; every checker still running; every hostile instance
 * stopped with its reason; RSS after warm-up flat within a tolerance; the
 * handler p99 (from the stratd_handler_duration_seconds histogram, bucket
 * deltas over each window, onTrade: the checkers' handler, which no hostile
 * strategy defines) reported per window, with and without hostile
 * strategies, and checked only loosely (within 10x, or under 1 ms); the
 * "within 2x" verdict is printed.
 *
 * Duration: about 80 s (about 50 s in the sanitizer build); with
 * STRATD_SOAK_SECONDS=N (make soak: 600) it runs N seconds, alternating
 * 60-second windows. STRATD_SOAK_TICK_RATE overrides the market's rate.
 */
#include "testutil.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define CHECKERS 100
#define NBUCKETS 12
#define MAX_SAMPLES 4096
#define MAX_WINDOWS 64

static const double bucket_bounds[NBUCKETS] = {1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 5e-4,
                                               1e-3, 5e-3, 1e-2, 5e-2, 1e-1, INFINITY};

/* ------------------------------------------------------------ modules */

static const char seqcheck_js[] =
    "module.exports = {\n"
    "  metadata: {\n"
    "    name: 'seqcheck', displayName: 'Sequence check',\n"
    "    events: ['Trade', 'Ticker', 'BookSnapshot', 'KlineSummary', 'InstrumentUpdate'],\n"
    "  },\n"
    "  create(env) {\n"
    "    const log = env.helpers.log;\n"
    "    const seqs = {}, trades = {}, provs = {};\n"
    "    let events = 0, gaps = 0, dups = 0, last = 0;\n"
    "    const anomaly = (what) => {\n"
    "      if (gaps + dups <= 20) log('seqcheck anomaly ' + JSON.stringify(what));\n"
    "    };\n"
    "    const check = (ctx, evt) => {\n"
    "      events++;\n"
    "      const key = evt.provider + '/' + evt.symbol;\n"
    "      const prev = seqs[key];\n"
    "      if (prev !== undefined && evt.seq <= prev) {\n"
    "        dups++;\n"
    "        anomaly({ kind: 'seq', key, seq: evt.seq, prev });\n"
    "      }\n"
    "      seqs[key] = evt.seq;\n"
    "      const p = provs[evt.provider];\n"
    "      if (p !== undefined && evt.seq > p + 1) {\n"
    "        gaps++;\n"
    "        anomaly({ kind: 'gap', provider: evt.provider, seq: evt.seq, prev: p });\n"
    "      }\n"
    "      if (p === undefined || evt.seq > p) provs[evt.provider] = evt.seq;\n"
    "      const now = Date.now();\n"
    "      if (now - last >= 1000) {\n"
    "        last = now;\n"
    "        log('seqcheck ' + JSON.stringify({ events, gaps, dups }));\n"
    "      }\n"
    "    };\n"
    "    return {\n"
    "      onTrade(ctx, evt, t) {\n"
    "        check(ctx, evt);\n"
    "        const key = evt.provider + '/' + evt.symbol;\n"
    "        const prev = trades[key];\n"
    "        if (prev !== undefined && t.tradeId !== prev + 1) {\n"
    "          if (t.tradeId <= prev) dups++; else gaps++;\n"
    "          anomaly({ kind: 'trade', key, id: t.tradeId, prev });\n"
    "        }\n"
    "        trades[key] = t.tradeId;\n"
    "      },\n"
    "      onTicker: check, onBookSnapshot: check, onKlineSummary: check,\n"
    "      onInstrumentUpdate: check,\n"
    "    };\n"
    "  },\n"
    "};\n";

struct hostile {
    const char *name;
    const char *events;
    const char *body; /* the body of create(env), with `log` in scope */
    const char *reason;
};

/* The four that must be stopped, and the log storm that must not. The
 * long-running misbehaviour starts from a timer or a handler other than
 * onTrade, so onTrade's histogram stays the checkers' own. */
static const struct hostile hostiles[] = {
    {"runaway", "['Ticker']", "setTimeout(() => { for (;;) {} }, 20); return {};", "cpuBudget"},
    {"membomb", "['Ticker']",
     "setTimeout(() => { const a = []; for (;;) a.push(new ArrayBuffer(1 << 24)); }, 20);\n"
     "    return {};",
     "memoryLimit"},
    {"throwstorm", "['Ticker']",
     "let n = 0;\n    return { onTicker() { throw new Error('boom ' + n++); } };", "tooManyErrors"},
    {"deeprec", "['Ticker']",
     "const r = (n) => r(n + 1) + 1;\n    setTimeout(() => r(0), 20);\n    return {};",
     "stackOverflow"},
};

static const char logstorm_body[] =
    "const line = 'x'.repeat(32 * 1024);\n"
    "    let n = 0;\n"
    "    return { onBookSnapshot() { for (let i = 0; i < 20; i++) log('storm ' + (n++) + ' ' + "
    "line); } };";

static const char churn_template[] =
    "module.exports = {\n"
    "  metadata: { name: 'churn', displayName: 'Churn', events: ['Trade'] },\n"
    "  create(env) { let n = 0; return { onTrade() { n += %d; } }; },\n"
    "};\n";

static char *module_text(const char *name, const char *events, const char *body)
{
    return tu_path("module.exports = {\n"
                   "  metadata: { name: '%s', displayName: '%s', events: %s },\n"
                   "  create(env) {\n"
                   "    const log = env.helpers.log;\n"
                   "    %s\n"
                   "  },\n"
                   "};\n",
                   name, name, events, body);
}

/* ------------------------------------------------------------ settings */

struct plan {
    int warmup_s;
    int window_s;
    int windows; /* baseline and hostile alternate, baseline first */
    int tick_rate;
    int sample_s;
    bool long_form;
};

static void make_plan(struct plan *p)
{
    bool sanitized = getenv("STRATD_TEST_SANITIZED") != NULL;
    const char *total = getenv("STRATD_SOAK_SECONDS");
    const char *rate = getenv("STRATD_SOAK_TICK_RATE");
    p->tick_rate = rate && *rate ? atoi(rate) : sanitized ? 20 : 500;
    if (total && *total && atoi(total) > 0) {
        int n = atoi(total);
        p->long_form = true;
        p->warmup_s = n / 10 > 60 ? 60 : (n / 10 < 10 ? 10 : n / 10);
        p->window_s = 60;
        p->windows = (n - p->warmup_s) / p->window_s;
        if (p->windows < 2) {
            p->window_s = (n - p->warmup_s) / 2 > 10 ? (n - p->warmup_s) / 2 : 10;
            p->windows = 2;
        }
        p->sample_s = 5;
    } else {
        p->warmup_s = sanitized ? 10 : 15;
        p->window_s = sanitized ? 12 : 25;
        p->windows = 2;
        p->sample_s = 2;
    }
}

/* ------------------------------------------------------------- samples */

enum phase { PH_SETUP, PH_WARMUP, PH_BASELINE, PH_HOSTILE, PH_DONE };
static const char *const phase_names[] = {"setup", "warm-up", "baseline", "hostile", "done"};

struct sample {
    double t; /* seconds since the start */
    int phase;
    int window;
    long rss_kb;
    double events;
    double trade[NBUCKETS]; /* cumulative counts, onTrade */
    double all[NBUCKETS];   /* every handler but timers */
    double http_5xx;
    double queue;
};

struct soak {
    struct tu_server *srv;
    struct plan plan;
    atomic_int phase;
    atomic_int window;
    atomic_bool stop;
    double t0;
    pthread_mutex_t lock;
    struct sample samples[MAX_SAMPLES];
    int nsamples;
    /* control plane */
    atomic_long requests, ok, client_4xx, client_5xx, transport;
    char first_5xx[1024];
    /* hostile rounds */
    int rounds;
    double stop_latency_max;
};

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_s(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static long rss_kb(pid_t pid)
{
    char *path = tu_path("/proc/%d/status", (int)pid);
    char *text = tu_read_file(path, NULL);
    free(path);
    long kb = -1;
    const char *line = text ? strstr(text, "\nVmRSS:") : NULL;
    if (line)
        kb = strtol(line + 7, NULL, 10);
    free(text);
    return kb;
}

/* Parses one exposition: the histogram of onTrade and of every handler,
 * the events delivered, 5xx answers, queued messages. */
static bool parse_metrics(const char *text, struct sample *s)
{
    bool any = false;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        const char *sp = memrchr(line, ' ', len);
        double v = sp ? strtod(sp + 1, NULL) : 0;
        if (strncmp(line, "stratd_handler_duration_seconds_bucket{", 39) == 0) {
            const char *le = strstr(line, "le=\"");
            bool trade = strncmp(line + 39, "handler=\"onTrade\"", 17) == 0;
            bool timer = strncmp(line + 39, "handler=\"timer\"", 15) == 0;
            if (le && le < line + len) {
                double bound = strncmp(le + 4, "+Inf", 4) == 0 ? INFINITY : strtod(le + 4, NULL);
                for (int b = 0; b < NBUCKETS; b++) {
                    if (bound == bucket_bounds[b] ||
                        (isfinite(bound) && fabs(bound - bucket_bounds[b]) < 1e-12)) {
                        if (trade)
                            s->trade[b] += v;
                        if (!timer)
                            s->all[b] += v;
                        any = true;
                    }
                }
            }
        } else if (strncmp(line, "stratd_events_delivered_total{", 30) == 0) {
            s->events += v;
        } else if (strncmp(line, "stratd_http_requests_total{", 27) == 0) {
            const char *st = strstr(line, "status=\"5");
            if (st && st < line + len)
                s->http_5xx += v;
        } else if (strncmp(line, "stratd_worker_queue_messages{", 29) == 0) {
            s->queue += v;
        }
        line = nl ? nl + 1 : NULL;
    }
    return any || s->events > 0;
}

static bool take_sample(struct soak *k, struct sample *s)
{
    memset(s, 0, sizeof *s);
    struct tu_response res;
    char *url = tu_path("%s/metrics", k->srv->base_url);
    struct tu_request_options o = {.timeout_s = 60};
    int rc = tu_http_try(&res, "GET", url, &o);
    free(url);
    if (rc != 0 || res.status != 200) {
        if (rc == 0)
            tu_response_free(&res);
        return false;
    }
    bool ok = parse_metrics(res.body, s);
    tu_response_free(&res);
    s->t = now_s() - k->t0;
    s->phase = atomic_load(&k->phase);
    s->window = atomic_load(&k->window);
    s->rss_kb = rss_kb(k->srv->pid);
    return ok;
}

static void *sampler_main(void *arg)
{
    struct soak *k = arg;
    while (!atomic_load(&k->stop)) {
        struct sample s;
        if (take_sample(k, &s)) {
            pthread_mutex_lock(&k->lock);
            if (k->nsamples < MAX_SAMPLES)
                k->samples[k->nsamples++] = s;
            pthread_mutex_unlock(&k->lock);
        }
        for (int i = 0; i < k->plan.sample_s * 10 && !atomic_load(&k->stop); i++)
            sleep_s(0.1);
    }
    return NULL;
}

/* p99 from the deltas of cumulative buckets: the bucket holding the 99th
 * percentile, linearly interpolated inside it. */
static double p99_of(const double *from, const double *to)
{
    double total = to[NBUCKETS - 1] - from[NBUCKETS - 1];
    if (total <= 0)
        return NAN;
    double rank = 0.99 * total;
    double below = 0, lower = 0;
    for (int b = 0; b < NBUCKETS; b++) {
        double cum = to[b] - from[b];
        if (cum >= rank) {
            double upper = isfinite(bucket_bounds[b]) ? bucket_bounds[b] : bucket_bounds[b - 1];
            double in = cum - below;
            double frac = in > 0 ? (rank - below) / in : 1;
            return lower + (upper - lower) * frac;
        }
        below = cum;
        lower = isfinite(bucket_bounds[b]) ? bucket_bounds[b] : lower;
    }
    return INFINITY;
}

/* ------------------------------------------------------- control plane */

static long control_call(struct soak *k, const char *method, const char *path, const char *body,
                         json_t **json)
{
    char *url = tu_path("%s%s", k->srv->base_url, path);
    struct tu_request_options o = {
        .body = body, .body_len = body ? strlen(body) : 0, .timeout_s = 120};
    struct tu_response res;
    int rc = tu_http_try(&res, method, url, &o);
    free(url);
    atomic_fetch_add(&k->requests, 1);
    if (json)
        *json = NULL;
    if (rc != 0) {
        atomic_fetch_add(&k->transport, 1);
        return -1;
    }
    long status = res.status;
    if (status >= 500) {
        if (atomic_fetch_add(&k->client_5xx, 1) == 0)
            snprintf(k->first_5xx, sizeof k->first_5xx, "%s %.200s: %ld %.600s", method, path,
                     status, res.body);
    } else if (status >= 400) {
        atomic_fetch_add(&k->client_4xx, 1);
    } else {
        atomic_fetch_add(&k->ok, 1);
    }
    if (json && res.json)
        *json = json_incref(res.json);
    tu_response_free(&res);
    return status;
}

/* Reads: listings, snapshots, the export, usage, metrics. */
static void *reader_main(void *arg)
{
    struct soak *k = arg;
    static const char *const paths[] = {
        "/strategies/modules",
        "/strategies/modules?runningOnly=true",
        "/strategy/instances",
        "/strategies/registry",
        "/strategies/seqcheck",
        "/strategies/modules/seqcheck/usage",
        "/providers",
        "/metrics",
        "/strategies/modules/churn:prod",
    };
    unsigned seed = 7;
    while (!atomic_load(&k->stop)) {
        size_t i = (size_t)rand_r(&seed) % (sizeof paths / sizeof paths[0] + 1);
        if (i == sizeof paths / sizeof paths[0]) {
            char path[64];
            snprintf(path, sizeof path, "/strategy/instances/c%u", rand_r(&seed) % CHECKERS);
            control_call(k, "GET", path, NULL, NULL);
        } else {
            control_call(k, "GET", paths[i], NULL, NULL);
        }
        sleep_s(0.02);
    }
    return NULL;
}

/* Writes: uploads and deletes of `churn` revisions, tag moves, targeted and
 * full refreshes, churn instances created, started, stopped, deleted. The
 * checkers' selector never moves, so refreshes leave them alone. */
static void *writer_main(void *arg)
{
    struct soak *k = arg;
    char live[16][72];
    int nlive = 0, n = 0, instances = 0;
    unsigned seed = 11;
    char path[256], body[512];
    while (!atomic_load(&k->stop)) {
        n++;
        switch (n % 8) {
        case 0:
        case 4: { /* upload, then prod -> it */
            char *src = tu_path(churn_template, n);
            json_t *j = json_pack("{s:s, s:o}", "source", src, "tag", json_sprintf("c%d", n));
            char *text = json_dumps(j, JSON_COMPACT);
            json_t *res = NULL;
            if (control_call(k, "POST", "/strategies/modules", text, &res) == 201) {
                const char *h = tu_jstr(res, "module.hash");
                if (h && nlive < 16)
                    snprintf(live[nlive++], sizeof live[0], "%s", h);
                snprintf(body, sizeof body, "{\"hash\": \"%s\"}", h);
                control_call(k, "PUT", "/strategies/modules/churn/tags/prod", body, NULL);
            }
            json_decref(res);
            free(text);
            json_decref(j);
            free(src);
            break;
        }
        case 1:
            control_call(k, "POST", "/strategies/refresh", "{\"strategies\": [\"churn:prod\"]}",
                         NULL);
            break;
        case 2:
            if (instances < 5) {
                snprintf(body, sizeof body,
                         "{\"id\": \"churn%d\", \"strategy\": {\"selector\": \"churn:prod\", "
                         "\"config\": {}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}",
                         instances);
                if (control_call(k, "POST", "/strategy/instances", body, NULL) == 201) {
                    snprintf(path, sizeof path, "/strategy/instances/churn%d/start", instances);
                    control_call(k, "POST", path, NULL, NULL);
                    instances++;
                }
            } else {
                int i = (int)(rand_r(&seed) % 5);
                snprintf(path, sizeof path, "/strategy/instances/churn%d/%s", i,
                         rand_r(&seed) % 2 ? "stop" : "start");
                control_call(k, "POST", path, NULL, NULL);
            }
            break;
        case 3:
            if (n % 24 == 3)
                control_call(k, "POST", "/strategies/refresh", "{}", NULL);
            break;
        case 5:
        case 6:
            /* Keep the catalogue small: the oldest revisions go (409 while
             * a running churn instance pins one). */
            if (nlive > 6) {
                snprintf(path, sizeof path, "/strategies/modules/churn@%s", live[0]);
                long st = control_call(k, "DELETE", path, NULL, NULL);
                if (st == 204 || st == 404 || nlive >= 16) {
                    memmove(live[0], live[1], (size_t)(nlive - 1) * sizeof live[0]);
                    nlive--;
                }
            }
            break;
        case 7:
            if (instances == 5 && rand_r(&seed) % 4 == 0) {
                int i = (int)(rand_r(&seed) % 5);
                snprintf(path, sizeof path, "/strategy/instances/churn%d/stop", i);
                control_call(k, "POST", path, NULL, NULL);
                snprintf(path, sizeof path, "/strategy/instances/churn%d", i);
                if (control_call(k, "DELETE", path, NULL, NULL) == 200) {
                    snprintf(body, sizeof body,
                             "{\"id\": \"churn%d\", \"strategy\": {\"selector\": "
                             "\"churn:prod\", \"config\": {}}, \"scope\": {\"sim\": "
                             "{\"symbols\": [\"ETH-USDT\"]}}}",
                             i);
                    control_call(k, "POST", "/strategy/instances", body, NULL);
                    snprintf(path, sizeof path, "/strategy/instances/churn%d/start", i);
                    control_call(k, "POST", path, NULL, NULL);
                }
            }
            break;
        }
        sleep_s(0.05);
    }
    return NULL;
}

/* ------------------------------------------------------------- hostile */

static json_t *snapshot(struct soak *k, const char *id)
{
    json_t *snap = NULL;
    char path[192];
    snprintf(path, sizeof path, "/strategy/instances/%s", id);
    long st = control_call(k, "GET", path, NULL, &snap);
    if (st != 200)
        fail_msg("GET %s: %ld", path, st);
    return snap;
}

static void create_and_start(struct soak *k, const char *id, const char *selector,
                             const char *symbols, const char *config)
{
    char body[512], path[192];
    snprintf(body, sizeof body,
             "{\"id\": \"%s\", \"strategy\": {\"selector\": \"%s\", \"config\": %s}, \"scope\": "
             "{\"sim\": {\"symbols\": %s}}}",
             id, selector, config ? config : "{}", symbols);
    long st = control_call(k, "POST", "/strategy/instances", body, NULL);
    if (st != 201)
        fail_msg("creating %s: %ld", id, st);
    snprintf(path, sizeof path, "/strategy/instances/%s/start", id);
    st = control_call(k, "POST", path, NULL, NULL);
    if (st != 200)
        fail_msg("starting %s: %ld", id, st);
}

static void delete_instance(struct soak *k, const char *id)
{
    char path[192];
    snprintf(path, sizeof path, "/strategy/instances/%s", id);
    long st = control_call(k, "DELETE", path, NULL, NULL);
    if (st != 200)
        fail_msg("deleting %s: %ld", id, st);
}

/* Starts the four and waits until each has stopped with its reason. */
static void hostile_round(struct soak *k)
{
    int round = ++k->rounds;
    char ids[4][32];
    double started = now_s();
    for (int i = 0; i < 4; i++) {
        snprintf(ids[i], sizeof ids[i], "h%d-%s", round, hostiles[i].name);
        create_and_start(k, ids[i], hostiles[i].name, "[\"BTC-USDT\"]",
                         "{\"memory_limit_mb\": 16}");
    }
    bool stopped[4] = {false};
    int left = 4;
    while (left > 0) {
        if (now_s() - started > 120)
            fail_msg("hostile round %d: %d instance(s) still running after 120 s", round, left);
        for (int i = 0; i < 4; i++) {
            if (stopped[i])
                continue;
            json_t *snap = snapshot(k, ids[i]);
            if (!json_is_true(json_object_get(snap, "running"))) {
                const char *reason = json_string_value(json_object_get(snap, "stopReason"));
                if (!reason || strcmp(reason, hostiles[i].reason) != 0)
                    fail_msg("hostile %s stopped with reason %s, expected %s: %s", ids[i],
                             reason ? reason : "(none)", hostiles[i].reason,
                             json_dumps(snap, JSON_COMPACT));
                stopped[i] = true;
                left--;
                double latency = now_s() - started;
                if (latency > k->stop_latency_max)
                    k->stop_latency_max = latency;
            }
            json_decref(snap);
        }
        sleep_s(0.05);
    }
    for (int i = 0; i < 4; i++)
        delete_instance(k, ids[i]);
}

/* ------------------------------------------------------------- checks */

struct checker_total {
    long long events, gaps, dups;
    int reported;
    int anomalies;
};

static void read_checkers(const struct tu_server *srv, struct checker_total *t, size_t *log_bytes,
                          size_t *longest, long *storm_lines, long *storm_dropped_warnings)
{
    memset(t, 0, sizeof *t);
    char *log = tu_server_log(srv);
    *log_bytes = strlen(log);
    *longest = 0;
    *storm_lines = 0;
    *storm_dropped_warnings = 0;
    long long events[CHECKERS] = {0}, gaps[CHECKERS] = {0}, dups[CHECKERS] = {0};
    bool seen[CHECKERS] = {false};
    for (char *line = log; line && *line;) {
        char *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        if (len > *longest)
            *longest = len;
        if (nl)
            *nl = '\0';
        if (strstr(line, "\"msg\":\"storm "))
            (*storm_lines)++;
        else if (strstr(line, "log lines over the rate limit") && strstr(line, "logstorm"))
            (*storm_dropped_warnings)++;
        else if (strstr(line, "\"msg\":\"seqcheck ")) {
            json_t *entry = json_loads(line, 0, NULL);
            const char *msg = json_string_value(json_object_get(entry, "msg"));
            const char *inst = json_string_value(json_object_get(entry, "instance"));
            if (msg && strncmp(msg, "seqcheck anomaly", 16) == 0) {
                t->anomalies++;
                if (t->anomalies <= 10)
                    print_message("ANOMALY %s: %s\n", inst ? inst : "?", msg);
            } else if (msg && inst && inst[0] == 'c') {
                int i = atoi(inst + 1);
                json_t *c = json_loads(msg + 9, 0, NULL);
                if (i >= 0 && i < CHECKERS && c) {
                    seen[i] = true;
                    events[i] = json_integer_value(json_object_get(c, "events"));
                    gaps[i] = json_integer_value(json_object_get(c, "gaps"));
                    dups[i] = json_integer_value(json_object_get(c, "dups"));
                }
                json_decref(c);
            }
            json_decref(entry);
        }
        line = nl ? nl + 1 : NULL;
    }
    for (int i = 0; i < CHECKERS; i++) {
        if (!seen[i])
            continue;
        t->reported++;
        t->events += events[i];
        t->gaps += gaps[i];
        t->dups += dups[i];
    }
    free(log);
}

static double window_p99(const struct soak *k, int window, bool trade, double *events_rate,
                         double *seconds)
{
    const struct sample *first = NULL, *last = NULL;
    for (int i = 0; i < k->nsamples; i++) {
        if (k->samples[i].window != window)
            continue;
        if (!first)
            first = &k->samples[i];
        last = &k->samples[i];
    }
    if (!first || first == last)
        return NAN;
    *seconds = last->t - first->t;
    *events_rate = (last->events - first->events) / *seconds;
    return trade ? p99_of(first->trade, last->trade) : p99_of(first->all, last->all);
}

/* ---------------------------------------------------------------- test */

static char *soak_config(int tick_rate)
{
    return tu_path("runtime:\n"
                   "  queue_capacity: 1024\n"
                   "  log_lines_per_second: 20\n"
                   "providers:\n"
                   "  - name: sim\n"
                   "    adapter: simulated\n"
                   "    config: {symbols: [BTC-USDT, ETH-USDT], seed: 3, tickRate: %d}\n",
                   tick_rate);
}

static void upload_source(struct tu_server *srv, const char *source)
{
    tu_upload_expect(srv, source, NULL, 201, NULL);
}

static void run_window(struct soak *k, enum phase phase, int window, int seconds)
{
    atomic_store(&k->window, window);
    atomic_store(&k->phase, phase);
    double end = now_s() + seconds;
    if (phase == PH_HOSTILE) {
        char storm[32];
        snprintf(storm, sizeof storm, "storm%d", window);
        create_and_start(k, storm, "logstorm", "[\"BTC-USDT\", \"ETH-USDT\"]", NULL);
        while (now_s() < end)
            hostile_round(k);
        json_t *snap = snapshot(k, storm);
        if (!json_is_true(json_object_get(snap, "running")))
            fail_msg("the log storm was stopped: %s", json_dumps(snap, JSON_COMPACT));
        json_decref(snap);
        char path[64];
        snprintf(path, sizeof path, "/strategy/instances/%s/stop", storm);
        control_call(k, "POST", path, NULL, NULL);
        delete_instance(k, storm);
    } else {
        while (now_s() < end)
            sleep_s(0.2);
    }
}

static void test_soak(void **state)
{
    struct tu_server *srv = *state;
    struct soak *k = calloc(1, sizeof *k);
    assert_non_null(k);
    k->srv = srv;
    make_plan(&k->plan);
    pthread_mutex_init(&k->lock, NULL);
    const struct plan *p = &k->plan;
    print_message("soak: %s form, %d checkers, tickRate %d per symbol x 2 symbols, warm-up %d s, "
                  "%d windows of %d s\n",
                  p->long_form ? "long" : "short", CHECKERS, p->tick_rate, p->warmup_s, p->windows,
                  p->window_s);

    char *yaml = soak_config(p->tick_rate);
    struct tu_server_options opts = {.config_yaml = yaml};
    tu_server_start(srv, &opts);
    free(yaml);
    k->t0 = now_s();
    upload_source(srv, seqcheck_js);
    for (size_t i = 0; i < sizeof hostiles / sizeof hostiles[0]; i++) {
        char *src = module_text(hostiles[i].name, hostiles[i].events, hostiles[i].body);
        upload_source(srv, src);
        free(src);
    }
    char *storm_src = module_text("logstorm", "['BookSnapshot']", logstorm_body);
    upload_source(srv, storm_src);
    free(storm_src);
    char *churn = tu_path(churn_template, 0);
    tu_upload_expect(srv, churn, "{\"aliases\": [\"prod\"]}", 201, NULL);
    free(churn);
    for (int i = 0; i < CHECKERS; i++) {
        char id[16];
        snprintf(id, sizeof id, "c%d", i);
        /* The CPU budget is measured in wall-clock time: on a machine
         * crowded by other processes, a worker preempted in the middle of
         * a 5 us handler can pass 50 ms and the instance is stopped for
         * cpuBudget (seen once in 10^8 calls). The checkers get room;
         * the hostile instances keep the default. */
        create_and_start(k, id, "seqcheck", "[\"BTC-USDT\", \"ETH-USDT\"]",
                         "{\"cpu_budget_ms\": 1000}");
    }
    print_message("%d checkers running after %.1f s\n", CHECKERS, now_s() - k->t0);

    pthread_t sampler, reader, writer;
    atomic_store(&k->window, 0);
    atomic_store(&k->phase, PH_WARMUP);
    assert_int_equal(pthread_create(&sampler, NULL, sampler_main, k), 0);
    assert_int_equal(pthread_create(&reader, NULL, reader_main, k), 0);
    assert_int_equal(pthread_create(&writer, NULL, writer_main, k), 0);

    /* Warm-up, with one round of everything hostile. */
    double warm_end = now_s() + p->warmup_s;
    create_and_start(k, "storm0", "logstorm", "[\"BTC-USDT\"]", NULL);
    hostile_round(k);
    control_call(k, "POST", "/strategy/instances/storm0/stop", NULL, NULL);
    delete_instance(k, "storm0");
    while (now_s() < warm_end)
        sleep_s(0.2);

    for (int w = 1; w <= p->windows; w++)
        run_window(k, w % 2 ? PH_BASELINE : PH_HOSTILE, w, p->window_s);
    atomic_store(&k->phase, PH_DONE);
    atomic_store(&k->window, p->windows + 1);
    sleep_s(p->sample_s + 0.5);
    atomic_store(&k->stop, true);
    pthread_join(writer, NULL);
    pthread_join(reader, NULL);
    pthread_join(sampler, NULL);

    /* Every checker still runs; their last reports are in the log. */
    json_t *list = tu_get_json(srv, 200, "/strategy/instances");
    int running = 0;
    size_t i;
    json_t *inst;
    json_array_foreach(json_object_get(list, "instances"), i, inst)
    {
        const char *id = json_string_value(json_object_get(inst, "id"));
        if (!id || id[0] != 'c' || id[1] < '0' || id[1] > '9')
            continue;
        if (json_is_true(json_object_get(inst, "running"))) {
            running++;
            continue;
        }
        json_t *snap = tu_get_json(srv, 200, "/strategy/instances/%s", id);
        char *last = json_dumps(json_object_get(snap, "lastError"), JSON_ENCODE_ANY);
        print_message("STOPPED checker %s: stopReason %s, lastError %s\n", id,
                      json_string_value(json_object_get(snap, "stopReason")), last);
        free(last);
        json_decref(snap);
    }
    json_decref(list);
    sleep_s(1.5); /* one more report from each */
    struct sample final;
    assert_true(take_sample(k, &final));
    tu_server_stop(srv);

    struct checker_total t;
    size_t log_bytes = 0, longest = 0;
    long storm_lines = 0, storm_warnings = 0;
    read_checkers(srv, &t, &log_bytes, &longest, &storm_lines, &storm_warnings);

    /* ------------------------------------------------------ figures */
    double elapsed = final.t;
    print_message("---- soak figures (%.0f s) ----\n", elapsed);
    print_message("events delivered: %.0f total, %.0f/s overall\n", final.events,
                  final.events / elapsed);
    print_message("checkers: %d running, %d reporting, %lld events seen, %lld gaps, %lld "
                  "duplicates, %d anomaly lines\n",
                  running, t.reported, t.events, t.gaps, t.dups, t.anomalies);
    print_message("control plane: %ld requests, %ld 2xx, %ld 4xx, %ld 5xx, %ld transport "
                  "errors; server-side 5xx %.0f\n",
                  atomic_load(&k->requests), atomic_load(&k->ok), atomic_load(&k->client_4xx),
                  atomic_load(&k->client_5xx), atomic_load(&k->transport), final.http_5xx);
    print_message("hostile: %d rounds of 4, each stopped with its reason; slowest round %.2f s\n",
                  k->rounds, k->stop_latency_max);
    print_message("log storm: %ld lines logged, %ld 'dropped ... over the rate limit' warnings; "
                  "longest log line %zu bytes; log %zu bytes\n",
                  storm_lines, storm_warnings, longest, log_bytes);
    print_message("RSS (MiB) by sample:");
    for (int s = 0; s < k->nsamples; s++)
        print_message("%s%.1f%s", s % 16 == 0 ? "\n  " : " ", (double)k->samples[s].rss_kb / 1024,
                      k->samples[s].phase == PH_HOSTILE ? "*" : "");
    print_message("\n  (* = hostile window)\n");
    double base_trade[MAX_WINDOWS], host_trade[MAX_WINDOWS];
    int nb = 0, nh = 0;
    print_message("window  phase     seconds  events/s    p99 onTrade   p99 all handlers\n");
    for (int w = 0; w <= p->windows && w < MAX_WINDOWS; w++) {
        double rate = 0, secs = 0, rate2 = 0, secs2 = 0;
        double pt = window_p99(k, w, true, &rate, &secs);
        double pa = window_p99(k, w, false, &rate2, &secs2);
        int ph = w == 0 ? PH_WARMUP : w % 2 ? PH_BASELINE : PH_HOSTILE;
        print_message("%6d  %-8s  %7.1f  %8.0f  %10.1f us  %13.1f us\n", w, phase_names[ph], secs,
                      rate, pt * 1e6, pa * 1e6);
        if (w > 0 && isfinite(pt)) {
            if (ph == PH_BASELINE)
                base_trade[nb++] = pt;
            else
                host_trade[nh++] = pt;
        }
    }

    /* ------------------------------------------------------- verdicts */
    if (atomic_load(&k->client_5xx) > 0 || final.http_5xx > 0)
        fail_msg("%ld 5xx answers (server counts %.0f); the first: %s", atomic_load(&k->client_5xx),
                 final.http_5xx, k->first_5xx);
    if (atomic_load(&k->transport) > 0)
        fail_msg("%ld control-plane requests got no answer", atomic_load(&k->transport));
    if (running != CHECKERS)
        fail_msg("%d of %d checkers still running", running, CHECKERS);
    if (t.reported != CHECKERS)
        fail_msg("%d of %d checkers reported", t.reported, CHECKERS);
    if (t.gaps || t.dups || t.anomalies)
        fail_msg("lost or duplicated events: %lld gaps, %lld duplicates, %d anomalies", t.gaps,
                 t.dups, t.anomalies);
    if (t.events <= 0)
        fail_msg("the checkers saw no events");
    if (storm_warnings == 0)
        fail_msg("the log storm left no 'dropped' warning: it was not rate-limited");
    if (longest > 16384)
        fail_msg("a log line of %zu bytes: lines should be cut at 4 KiB", longest);

    /* RSS after warm-up: the mean of the last fifth against the first. */
    int first = -1, n_after = 0;
    for (int s = 0; s < k->nsamples; s++) {
        if (k->samples[s].window >= 1 && k->samples[s].window <= p->windows) {
            if (first < 0)
                first = s;
            n_after++;
        }
    }
    if (n_after >= 5) {
        int part = n_after / 5 > 0 ? n_after / 5 : 1;
        double head = 0, tail = 0;
        for (int s = 0; s < part; s++) {
            head += (double)k->samples[first + s].rss_kb;
            tail += (double)k->samples[first + n_after - 1 - s].rss_kb;
        }
        head /= part;
        tail /= part;
        double growth = (tail - head) / 1024;
        /* AddressSanitizer keeps freed memory in quarantine (256 MiB by
         * default) before reusing it: RSS climbs towards that in a
         * sanitized build whatever the program does. */
        double allowed =
            fmax(24.0, head / 1024 * 0.25) + (getenv("STRATD_TEST_SANITIZED") ? 256.0 : 0.0);
        print_message("RSS after warm-up: %.1f MiB -> %.1f MiB (%+.1f MiB; allowed %.1f)\n",
                      head / 1024, tail / 1024, growth, allowed);
        if (growth > allowed)
            fail_msg("RSS grew by %.1f MiB after warm-up (%.1f -> %.1f MiB)", growth, head / 1024,
                     tail / 1024);
    }

    /* p99: reported by the suite's short form, which never asserts timings;
     * the long form (make soak, on a quiet machine) holds the 2x bound. */
    if (nb > 0 && nh > 0) {
        double b = 0, h = 0;
        for (int s = 0; s < nb; s++)
            b = fmax(b, base_trade[s]);
        for (int s = 0; s < nh; s++)
            h = fmax(h, host_trade[s]);
        double ratio = h / b;
        print_message("onTrade p99: %.1f us without hostile strategies, %.1f us with them "
                      "(x%.2f: %s 2x)\n",
                      b * 1e6, h * 1e6, ratio, ratio <= 2.0 ? "within" : "NOT within");
        if (p->long_form && !(h <= fmax(2 * b, 1e-4)))
            fail_msg("onTrade p99 with hostile strategies %.1f us against %.1f us without", h * 1e6,
                     b * 1e6);
        if (p->long_form && nb > 1 && !(base_trade[nb - 1] <= fmax(2 * base_trade[0], 1e-4)))
            fail_msg("onTrade p99 drifted from %.1f us to %.1f us", base_trade[0] * 1e6,
                     base_trade[nb - 1] * 1e6);
    }
    pthread_mutex_destroy(&k->lock);
    free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_soak, tu_server_setup, tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
