/*
 * metrics: the runtime's Prometheus families. Control-plane-rate counters
 * live in core/metrics families; hot-path figures (deliveries, handler
 * durations) are per-worker single-writer counters summed at scrape time,
 * so the event path never takes a lock for them.
 */
#include "runtime/internal.h"

#include <stdio.h>

static void write_delivered(struct runtime *rt, struct strbuf *out)
{
    static const char *const labels[] = {"event"};
    metrics_write_header(out, "stratd_events_delivered_total",
                         "Events delivered into strategy instances (one per instance reached).",
                         "counter");
    for (int k = 0; k < EVENT_KIND_COUNT; k++) {
        uint64_t n = 0;
        for (int i = 0; i < rt->nworkers; i++)
            n += counter_get(&rt->workers[i].delivered[k]);
        const char *values[] = {event_kind_name((enum event_kind)k)};
        metrics_write_sample(out, "stratd_events_delivered_total", labels, values, 1, (double)n);
    }
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
    static const char *const labels[] = {"reason"};
    static const char *const reasons[POLL_REASONS] = {"start", "events"};
    metrics_write_header(out, "stratd_worker_poll_seconds_total",
                         "Time workers spent polling instead of sleeping: for a staged start's "
                         "command, or for the next event of a feed faster than "
                         "runtime.event_poll_us.",
                         "counter");
    for (int r = 0; r < POLL_REASONS; r++) {
        uint64_t ns = 0;
        for (int i = 0; i < rt->nworkers; i++)
            ns += counter_get(&rt->workers[i].poll_ns[r]);
        const char *values[] = {reasons[r]};
        metrics_write_sample(out, "stratd_worker_poll_seconds_total", labels, values, 1,
                             (double)ns / 1e9);
    }
}

static void write_vm_sources(struct runtime *rt, struct strbuf *out)
{
    static const char *const labels[] = {"source"};
    static const char *const sources[VM_SOURCES] = {"spare", "built"};
    metrics_write_header(out, "stratd_instance_vms_total",
                         "VMs given to starting instances: a spare built ahead, or one built on "
                         "the start's path because no spare was ready.",
                         "counter");
    for (int s = 0; s < VM_SOURCES; s++) {
        uint64_t n = 0;
        for (int i = 0; i < rt->nworkers; i++)
            n += counter_get(&rt->workers[i].vm_sources[s]);
        const char *values[] = {sources[s]};
        metrics_write_sample(out, "stratd_instance_vms_total", labels, values, 1, (double)n);
    }
}

void runtime_metrics_write(struct runtime *rt, struct strbuf *out)
{
    metrics_family_write(rt->m_actions, out);
    write_delivered(rt, out);
    metrics_family_write(rt->m_errors, out);
    write_histogram(rt, out);
    metrics_family_write(rt->m_stops, out);
    metrics_family_write(rt->m_orders, out);
    metrics_write_header(out, "stratd_module_compilations_total",
                         "Strategy sources compiled to bytecode (once per revision).", "counter");
    metrics_write_sample(out, "stratd_module_compilations_total", NULL, NULL, 0,
                         (double)js_bytecode_cache_compilations(rt->bytecode));
    write_queues(rt, out);
    write_polls(rt, out);
    write_vm_sources(rt, out);
}
