/*
 * views: the JSON documents the catalogue endpoints answer with, built from
 * a registry snapshot and the runtime's usage. Pure functions of their
 * inputs; safe on any thread holding the snapshot.
 */
#ifndef STRATD_API_VIEWS_H
#define STRATD_API_VIEWS_H

#include "registry/registry.h"
#include "runtime/runtime.h"

#include <jansson.h>
#include <stdbool.h>

/* Strategy metadata as the contract's Strategy: never NULL; a revision
 * without metadata gets a minimal document with empty config and events. */
json_t *views_strategy_metadata(const struct registry_strategy *st,
                                const struct registry_revision *rev);

/* The runtime's usage, taken once per request (one pass over the fleet)
 * and indexed by revision: a listing or a scrape looks each revision up in
 * O(log n) instead of scanning the instances per revision. A NULL runtime
 * gives an empty index. Never NULL except out of memory. */
struct views_usage;
struct views_usage *views_usage_new(struct runtime *rt);
void views_usage_free(struct views_usage *usage);
/* Running instances of {strategy, hex} (0 when unknown). */
int views_usage_running(const struct views_usage *usage, const char *strategy, const char *hex);
/* Its ModuleRevisionUsage document (borrowed; NULL when it never ran). */
const json_t *views_usage_doc(const struct views_usage *usage, const char *strategy,
                              const char *hex);

struct views_module_filter {
    const char *hex_prefix; /* only revisions whose hex starts with this */
    bool running_only;      /* only revisions with running instances */
};

/* Whether the filter leaves any revision of st (what a listing counts in
 * its total without building the module). */
bool views_module_passes(const struct registry_strategy *st, const struct views_usage *usage,
                         const struct views_module_filter *filter);

/* StrategyModuleSummary with `selected` as the selected revision (NULL:
 * latest), plus a `running` block: the usage of each listed revision that
 * has running instances. Returns NULL when the filter leaves no revision. */
json_t *views_module_summary(const struct registry_strategy *st,
                             const struct registry_revision *selected,
                             const struct views_usage *usage,
                             const struct views_module_filter *filter);

/* "sha256:<hex>" as a new JSON string. */
json_t *views_hash(const char *hex);

#endif
