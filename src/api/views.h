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

struct views_module_filter {
    const char *hex_prefix; /* only revisions whose hex starts with this */
    bool running_only;      /* only revisions with running instances */
};

/* StrategyModuleSummary with `selected` as the selected revision (NULL:
 * latest), plus a `running` block. Returns NULL when the filter leaves no
 * revision. */
json_t *views_module_summary(const struct registry_strategy *st,
                             const struct registry_revision *selected, struct runtime *rt,
                             const struct views_module_filter *filter);

/* "sha256:<hex>" as a new JSON string. */
json_t *views_hash(const char *hex);

#endif
