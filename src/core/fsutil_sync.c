/*
 * fsutil's syncs, timed (fsutil.h): what a durable write of the catalogue
 * (a revision file, registry.json, their folders) waits for on the disk,
 * beside the store's own stratd_store_sync_seconds.
 */
#include "core/clock.h"
#include "core/fsutil.h"
#include "core/metrics.h"

#include <stdatomic.h>
#include <unistd.h>

struct sync_hist {
    _Atomic uint64_t buckets[METRICS_SYNC_BUCKETS];
    _Atomic uint64_t sum_ns;
};

/* process-wide: the syncs belong to the disk, whoever asks for them */
static struct sync_hist hists[2]; /* [0] files, [1] directories */

int fsutil_sync_timed(int fd, bool data_only, bool directory)
{
    int64_t t0 = clock_mono_ns();
    int rc = data_only ? fdatasync(fd) : fsync(fd);
    int64_t ns = clock_mono_ns() - t0;
    struct sync_hist *h = &hists[directory];
    size_t b = metrics_bucket_of(metrics_sync_bounds, METRICS_SYNC_BUCKETS, ns);
    atomic_fetch_add_explicit(&h->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, (uint64_t)(ns > 0 ? ns : 0), memory_order_relaxed);
    return rc;
}

void fsutil_sync_metrics_write(struct strbuf *out)
{
    static const char name[] = "stratd_file_sync_seconds";
    metrics_write_header(out, name,
                         "Time each sync of a file written whole (a revision, registry.json) and "
                         "of its directory took: what a catalogue change waits for on the disk.",
                         "histogram");
    static const char *const kinds[2] = {"file", "directory"};
    for (int k = 0; k < 2; k++) {
        uint64_t buckets[METRICS_SYNC_BUCKETS];
        for (size_t b = 0; b < METRICS_SYNC_BUCKETS; b++)
            buckets[b] = atomic_load_explicit(&hists[k].buckets[b], memory_order_relaxed);
        double sum = (double)atomic_load_explicit(&hists[k].sum_ns, memory_order_relaxed) / 1e9;
        metrics_write_histogram(out, name, "kind", kinds[k], metrics_sync_bounds, buckets,
                                METRICS_SYNC_BUCKETS, sum);
    }
}
