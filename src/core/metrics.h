/*
 * metrics: labelled counters and gauges for the Prometheus text exposition
 * format, for values that change at control-plane rates (HTTP requests, tag
 * moves, validation failures). Hot-path figures (events delivered) are plain
 * atomics in their owners and written with metrics_write_sample().
 *
 * Contract: a family is created once (at start-up) and lives until
 * metrics_family_free(). metrics_add() and metrics_family_write() are
 * thread-safe (a mutex per family). Label values are copied; they are
 * escaped on output, so any bytes are safe.
 */
#ifndef STRATD_CORE_METRICS_H
#define STRATD_CORE_METRICS_H

#include "core/strbuf.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum metrics_type { METRICS_COUNTER, METRICS_GAUGE };

struct metrics_family;

/* label_names: NULL-terminated list (may be empty). NULL if out of memory. */
struct metrics_family *metrics_family_new(const char *name, const char *help,
                                          enum metrics_type type, const char *const *label_names);
void metrics_family_free(struct metrics_family *family);
/* Adds `delta` to the series with these label values (one per label). */
void metrics_add(struct metrics_family *family, const char *const *label_values, double delta);
/* Sets a gauge series. */
void metrics_set(struct metrics_family *family, const char *const *label_values, double value);
/* Drops every series whose label `label` has the value `value`, so that
 * series about things that are gone (a deleted revision, a deleted
 * instance) do not pile up with churn. Returns how many went; an unknown
 * label removes nothing. */
size_t metrics_remove(struct metrics_family *family, const char *label, const char *value);
/* # HELP, # TYPE, then every series (in first-seen order). */
void metrics_family_write(struct metrics_family *family, struct strbuf *out);

/* Helpers for writers of their own families. */
void metrics_write_header(struct strbuf *out, const char *name, const char *help, const char *type);
/* name{l1="v1",...} value — names/values arrays of n entries. */
void metrics_write_sample(struct strbuf *out, const char *name, const char *const *label_names,
                          const char *const *label_values, size_t nlabels, double value);
void metrics_escape_label_value(struct strbuf *out, const char *value);
/* A family of one series without labels: its header, then `name value`. */
void metrics_write_scalar(struct strbuf *out, const char *name, const char *help, const char *type,
                          double value);
/* The series of one histogram with one label: name_bucket{label="value",
 * le="..."} for each of nbuckets buckets, cumulated (bounds holds the
 * nbuckets - 1 finite upper bounds; the last bucket is +Inf), then name_sum
 * (sum, in the histogram's unit) and name_count. */
/* The bucket a duration falls in, for bounds in seconds as above: the
 * first whose bound it does not exceed, nbuckets - 1 (+Inf) past them all.
 * Inline: handlers' durations are observed on the delivery path. */
static inline size_t metrics_bucket_of(const double *bounds, size_t nbuckets, int64_t ns)
{
    double seconds = (double)ns / 1e9;
    size_t b = 0;
    while (b + 1 < nbuckets && seconds > bounds[b])
        b++;
    return b;
}
/* The buckets of the gateway's sync histograms (the store's, the files'):
 * 25 us to 1 s, then +Inf. */
#define METRICS_SYNC_BUCKETS 15
extern const double metrics_sync_bounds[METRICS_SYNC_BUCKETS - 1];

void metrics_write_histogram(struct strbuf *out, const char *name, const char *label,
                             const char *value, const double *bounds, const uint64_t *buckets,
                             size_t nbuckets, double sum);
/* The same for a histogram with nlabels labels (at most 4) besides `le`. */
void metrics_write_histogram_labels(struct strbuf *out, const char *name,
                                    const char *const *label_names, const char *const *label_values,
                                    size_t nlabels, const double *bounds, const uint64_t *buckets,
                                    size_t nbuckets, double sum);

#endif
