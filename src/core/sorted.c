/*
 * sorted: binary search by string key (sorted.h).
 */
#include "core/sorted.h"

#include <string.h>

size_t sorted_find(const void *seq, size_t n, sorted_key_fn *key_at, const char *key, bool *found)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(key_at(seq, mid), key);
        if (cmp == 0) {
            *found = true;
            return mid;
        }
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}
