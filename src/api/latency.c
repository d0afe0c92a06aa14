/*
 * latency.c: how long the control plane takes to answer, by route and
 * method: stratd_http_request_duration_seconds, from the request line to
 * the queued answer (a body's upload included, the sending of the answer
 * not).
 *
 * Every request of every polling thread lands here, the small GETs at
 * 100,000 a second and more, so a series is a row of atomic counters in a
 * table sized at start-up (every route by every method label, plus the
 * requests no route matched): no lock and no search. The method is one of
 * a fixed set of labels ("other" for the rest), since a client chooses the
 * method's bytes and must not be able to grow the exposition.
 */
#include "api/internal.h"

#include "core/metrics.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* 25 us (a cached GET) to 10 s (a refresh of a large fleet), then +Inf. */
#define LATENCY_BUCKETS 19
static const double latency_bounds[LATENCY_BUCKETS - 1] = {
    25e-6, 50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3,
    25e-3, 50e-3, 100e-3, 250e-3, 500e-3, 1.0,  2.5,    5.0,  10.0};

static const char *const method_labels[] = {"GET",    "HEAD",  "POST",    "PUT",
                                            "DELETE", "PATCH", "OPTIONS", "other"};
#define METHOD_LABELS (sizeof method_labels / sizeof method_labels[0])

struct latency_series {
    _Atomic uint64_t buckets[LATENCY_BUCKETS];
    _Atomic uint64_t sum_ns;
};

struct api_latency {
    size_t nslots; /* api_route_count routes, then the unmatched requests */
    struct latency_series series[];
};

static size_t method_index(const char *method)
{
    for (size_t i = 0; method && i + 1 < METHOD_LABELS; i++) {
        if (strcmp(method, method_labels[i]) == 0)
            return i;
    }
    return METHOD_LABELS - 1;
}

const char *api_method_label(const char *method)
{
    return method_labels[method_index(method)];
}

/* A label's row, by address: the caller has it from api_method_label. */
static size_t label_index(const char *label)
{
    size_t i = 0;
    while (i + 1 < METHOD_LABELS && method_labels[i] != label)
        i++;
    return i;
}

struct api_latency *api_latency_new(void)
{
    size_t nslots = api_route_count + 1;
    struct api_latency *l =
        calloc(1, sizeof *l + nslots * METHOD_LABELS * sizeof(struct latency_series));
    if (l)
        l->nslots = nslots;
    return l;
}

void api_latency_free(struct api_latency *latency)
{
    free(latency);
}

void api_latency_observe(struct api_latency *latency, const struct api_route *route,
                         const char *method_label, int64_t ns)
{
    if (!latency)
        return;
    size_t slot = route ? (size_t)(route - api_routes) : api_route_count;
    if (ns < 0)
        ns = 0;
    struct latency_series *s = &latency->series[slot * METHOD_LABELS + label_index(method_label)];
    size_t b = metrics_bucket_of(latency_bounds, LATENCY_BUCKETS, ns);
    atomic_fetch_add_explicit(&s->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&s->sum_ns, (uint64_t)ns, memory_order_relaxed);
}

void api_latency_write(struct api_latency *latency, struct strbuf *out)
{
    static const char *const names[] = {"route", "method"};
    static const char *const name = "stratd_http_request_duration_seconds";
    metrics_write_header(out, name,
                         "Time from the request line to the queued answer, by route pattern and "
                         "method.",
                         "histogram");
    for (size_t i = 0; latency && i < latency->nslots * METHOD_LABELS; i++) {
        struct latency_series *s = &latency->series[i];
        uint64_t buckets[LATENCY_BUCKETS], count = 0;
        for (size_t b = 0; b < LATENCY_BUCKETS; b++) {
            buckets[b] = atomic_load_explicit(&s->buckets[b], memory_order_relaxed);
            count += buckets[b];
        }
        if (count == 0)
            continue;
        size_t slot = i / METHOD_LABELS;
        const char *values[] = {slot < api_route_count ? api_routes[slot].pattern : "unmatched",
                                method_labels[i % METHOD_LABELS]};
        double sum = (double)atomic_load_explicit(&s->sum_ns, memory_order_relaxed) / 1e9;
        metrics_write_histogram_labels(out, name, names, values, 2, latency_bounds, buckets,
                                       LATENCY_BUCKETS, sum);
    }
}
