/*
 * pins: the instance table again, ordered by (strategy, hex, id), so the
 * instances pinned to one revision (or one strategy) are a contiguous range
 * found by binary search instead of a scan with string compares over the
 * whole fleet. Maintained with the table: insert_locked / remove_locked add
 * and drop an instance, rtx_apply_spec_locked moves it when its revision
 * changes. Everything here runs under rt->lock.
 */
#include "runtime/internal.h"

#include <stdlib.h>
#include <string.h>

static int cmp_pin(const struct instance *inst, const char *strategy, const char *hex,
                   const char *id)
{
    int c = strcmp(inst->strategy, strategy);
    if (c == 0 && hex)
        c = strcmp(inst->hex, hex);
    if (c == 0 && id)
        c = strcmp(inst->id, id);
    return c;
}

/* The first position not ordered before the key; a NULL part of the key
 * matches every value, so (strategy, NULL, NULL) finds the strategy's
 * first instance. */
static size_t lower_bound(const struct runtime *rt, const char *strategy, const char *hex,
                          const char *id)
{
    size_t lo = 0, hi = rt->npins;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_pin(rt->pins[mid], strategy, hex, id) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

int pins_insert_locked(struct runtime *rt, struct instance *inst)
{
    if (rt->npins == rt->pins_cap) {
        size_t cap = rt->pins_cap ? rt->pins_cap * 2 : 16;
        struct instance **grown = realloc(rt->pins, cap * sizeof *grown);
        if (!grown)
            return -1;
        rt->pins = grown;
        rt->pins_cap = cap;
    }
    size_t at = lower_bound(rt, inst->strategy, inst->hex, inst->id);
    memmove(&rt->pins[at + 1], &rt->pins[at], (rt->npins - at) * sizeof *rt->pins);
    rt->pins[at] = inst;
    rt->npins++;
    return 0;
}

bool pins_remove_locked(struct runtime *rt, struct instance *inst)
{
    size_t at = lower_bound(rt, inst->strategy, inst->hex, inst->id);
    if (at == rt->npins || rt->pins[at] != inst)
        return false;
    memmove(&rt->pins[at], &rt->pins[at + 1], (rt->npins - at - 1) * sizeof *rt->pins);
    rt->npins--;
    return true;
}

/* A range is usually a handful of instances, sometimes thousands: its end
 * is found by galloping from its start (steps of 1, 2, 4, ... then a
 * binary search in the last step), a few compares either way. */
size_t pins_range_locked(const struct runtime *rt, const char *strategy, const char *hex,
                         size_t *first)
{
    size_t lo = lower_bound(rt, strategy, hex, NULL);
    *first = lo;
    size_t inside = lo, step = 1; /* inside: the last position known to match, +1 */
    size_t beyond = rt->npins;    /* a position known not to match (or the end) */
    while (inside < rt->npins) {
        size_t probe = inside + step - 1;
        if (probe >= rt->npins || cmp_pin(rt->pins[probe], strategy, hex, NULL) != 0) {
            beyond = probe < rt->npins ? probe : rt->npins;
            break;
        }
        inside = probe + 1;
        step *= 2;
    }
    while (inside < beyond) { /* first non-matching position in [inside, beyond) */
        size_t mid = inside + (beyond - inside) / 2;
        if (cmp_pin(rt->pins[mid], strategy, hex, NULL) == 0)
            inside = mid + 1;
        else
            beyond = mid;
    }
    return inside - lo;
}

void pins_free(struct runtime *rt)
{
    free(rt->pins);
    rt->pins = NULL;
    rt->npins = rt->pins_cap = 0;
}
