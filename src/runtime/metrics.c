/*
 * metrics: the runtime's Prometheus families. Control-plane-rate counters
 * live in core/metrics families; hot-path figures (deliveries, handler
 * durations) are per-worker single-writer counters summed at scrape time,
 * so the event path never takes a lock for them.
 */
#include "runtime/internal.h"

#include <stdio.h>

/* Per-worker counter arrays, summed at scrape time. */
static const _Atomic uint64_t *delivered_of(const struct worker *w)
{
    return w->delivered;
}

static const _Atomic uint64_t *poll_ns_of(const struct worker *w)
{
    return w->poll_ns;
}

static const _Atomic uint64_t *vm_sources_of(const struct worker *w)
{
    return w->vm_sources;
}

/* A family of one label whose n series are counters[k] summed over the
 * workers, divided by unit. */
static void write_worker_sums(struct runtime *rt, struct strbuf *out, const char *name,
                              const char *help, const char *label, const char *const *values, int n,
                              const _Atomic uint64_t *(*counters)(const struct worker *),
                              double unit)
{
    metrics_write_header(out, name, help, "counter");
    for (int k = 0; k < n; k++) {
        uint64_t sum = 0;
        for (int i = 0; i < rt->nworkers; i++)
            sum += counter_get(&counters(&rt->workers[i])[k]);
        metrics_write_sample(out, name, &label, &values[k], 1, (double)sum / unit);
    }
}

static void write_delivered(struct runtime *rt, struct strbuf *out)
{
    const char *kinds[EVENT_KIND_COUNT];
    for (int k = 0; k < EVENT_KIND_COUNT; k++)
        kinds[k] = event_kind_name((enum event_kind)k);
    write_worker_sums(rt, out, "stratd_events_delivered_total",
                      "Events delivered into strategy instances (one per instance reached).",
                      "event", kinds, EVENT_KIND_COUNT, delivered_of, 1);
}

static void write_histogram(struct runtime *rt, struct strbuf *out)
{
    metrics_write_header(out, "stratd_handler_duration_seconds",
                         "Duration of handler calls (one call in 16 is timed) and timer callbacks.",
                         "histogram");
    for (int h = 0; h < H_SLOTS; h++) {
        uint64_t buckets[HIST_BUCKETS] = {0}, sum_ns = 0, total = 0;
        for (int i = 0; i < rt->nworkers; i++) {
            for (int b = 0; b < HIST_BUCKETS; b++)
                buckets[b] += counter_get(&rt->workers[i].hist[h][b]);
            sum_ns += counter_get(&rt->workers[i].hist_sum_ns[h]);
        }
        for (int b = 0; b < HIST_BUCKETS; b++)
            total += buckets[b];
        if (total == 0)
            continue;
        metrics_write_histogram(out, "stratd_handler_duration_seconds", "handler",
                                runtime_handler_names[h], runtime_hist_bounds, buckets,
                                HIST_BUCKETS, (double)sum_ns / 1e9);
    }
}

static void write_queues(struct runtime *rt, struct strbuf *out)
{
    static const char *const labels[] = {"worker"};
    metrics_write_header(out, "stratd_worker_queue_messages",
                         "Events waiting in each worker's queue.", "gauge");
    for (int i = 0; i < rt->nworkers; i++) {
        char index[16];
        snprintf(index, sizeof index, "%d", i);
        const char *values[] = {index};
        metrics_write_sample(out, "stratd_worker_queue_messages", labels, values, 1,
                             (double)worker_queue_depth(&rt->workers[i]));
    }
}

static void write_polls(struct runtime *rt, struct strbuf *out)
{
    static const char *const reasons[POLL_REASONS] = {"start", "events"};
    write_worker_sums(rt, out, "stratd_worker_poll_seconds_total",
                      "Time workers spent polling instead of sleeping: for a staged start's "
                      "command, or for the next event of a feed faster than "
                      "runtime.event_poll_us.",
                      "reason", reasons, POLL_REASONS, poll_ns_of, 1e9);
}

static void write_vm_sources(struct runtime *rt, struct strbuf *out)
{
    static const char *const sources[VM_SOURCES] = {"spare", "built"};
    write_worker_sums(rt, out, "stratd_instance_vms_total",
                      "VMs given to starting instances: a spare built ahead, or one built on "
                      "the start's path because no spare was ready.",
                      "source", sources, VM_SOURCES, vm_sources_of, 1);
}

void runtime_metrics_write(struct runtime *rt, struct strbuf *out)
{
    metrics_family_write(rt->m_actions, out);
    write_delivered(rt, out);
    metrics_family_write(rt->m_errors, out);
    write_histogram(rt, out);
    metrics_family_write(rt->m_stops, out);
    metrics_family_write(rt->m_orders, out);
    metrics_write_scalar(out, "stratd_module_compilations_total",
                         "Strategy sources compiled to bytecode (once per revision).", "counter",
                         (double)js_bytecode_cache_compilations(rt->bytecode));
    write_queues(rt, out);
    write_polls(rt, out);
    write_vm_sources(rt, out);
}

size_t runtime_deepest_queue(struct runtime *rt, int *worker, size_t *capacity)
{
    size_t deepest = 0;
    *worker = 0;
    for (int i = 0; i < rt->nworkers; i++) {
        size_t depth = worker_queue_depth(&rt->workers[i]);
        if (depth > deepest) {
            deepest = depth;
            *worker = i;
        }
    }
    *capacity = rt->queue_capacity;
    return deepest;
}
