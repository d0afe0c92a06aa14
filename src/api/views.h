/*
 * views: the JSON documents the catalogue endpoints answer with, built from
 * a registry snapshot and the runtime's usage. Pure functions of their
 * inputs; safe on any thread holding the snapshot.
 */
#ifndef STRATD_API_VIEWS_H
#define STRATD_API_VIEWS_H

#include "core/strbuf.h"
#include "registry/registry.h"
#include "runtime/runtime.h"

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

/* Strategy metadata as the contract's Strategy: never NULL; a revision
 * without metadata gets a minimal document with empty config and events. */
json_t *views_strategy_metadata(const struct registry_strategy *st,
                                const struct registry_revision *rev);

/* The revisions running now, taken once per request as plain structs (one
 * pass over the runtime's usage entries, no JSON): a listing or a scrape
 * looks each revision up in O(log n). The full usage document of a running
 * revision is asked of the runtime only for the revisions a page shows. A
 * NULL runtime gives an empty index. Never NULL except out of memory. */
struct views_usage;
struct views_usage *views_usage_new(struct runtime *rt);
void views_usage_free(struct views_usage *usage);
/* The runtime's usage generation the index was taken at. */
uint64_t views_usage_generation(const struct views_usage *usage);
/* Whether any revision has running instances. */
bool views_usage_any(const struct views_usage *usage);
/* Running instances of {strategy, hex} (0 when unknown). */
int views_usage_running(const struct views_usage *usage, const char *strategy, const char *hex);
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

/* Module summaries as JSON text, kept per snapshot generation (snapshots
 * are immutable, so their text is too): a listing copies each module's
 * cached text and adds only what the request decides (which revisions a
 * filter lists, and the running usage). Thread-safe; one per API. */
struct views_cache;
struct views_cache *views_cache_new(void);
void views_cache_free(struct views_cache *cache);

/* The texts of reg's generation (a reference: views_texts_put it; it
 * retains reg). A new generation starts with the texts of the strategies
 * the change left alone. A snapshot older than the cache's newest gets
 * texts of its own, not shared. NULL only out of memory. */
struct views_texts;
struct views_texts *views_texts_get(struct views_cache *cache, struct registry *reg);
void views_texts_put(struct views_texts *texts);

/* Appends to sb the bytes jsonutil_dump() would write for
 * views_module_summary(reg->strategies[index], NULL, usage, filter); the
 * filter must leave a revision (views_module_passes). texts must come from
 * reg. -1 out of memory. */
/* Bytes views_module_text() writes for reg->strategies[index] without its
 * running usage: an upper bound of a filtered module's. 0 out of memory. */
size_t views_module_text_size(struct views_texts *texts, const struct registry *reg, size_t index);
int views_module_text(struct views_texts *texts, const struct registry *reg, size_t index,
                      const struct views_usage *usage, const struct views_module_filter *filter,
                      struct strbuf *sb);

/* "sha256:<hex>" as a new JSON string. */
json_t *views_hash(const char *hex);

#endif
