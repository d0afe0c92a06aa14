/*
 * sorted: binary search over sequences kept in strcmp order of a string key
 * (the catalogue's strategies and tags, the bootstrap tool's checks by
 * hash). Pure functions; as thread-safe as the caller's sequence.
 */
#ifndef STRATD_CORE_SORTED_H
#define STRATD_CORE_SORTED_H

#include <stdbool.h>
#include <stddef.h>

/* The key of element i of seq. */
typedef const char *sorted_key_fn(const void *seq, size_t i);

/* The index of `key` among the n keys key_at gives (*found true), or the
 * index where it would be inserted to keep the order (*found false). */
size_t sorted_find(const void *seq, size_t n, sorted_key_fn *key_at, const char *key, bool *found);

#endif
