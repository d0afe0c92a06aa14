/*
 * map: uint64 -> pointer with open addressing and linear probing. Used by
 * workers for instance keys and subscription keys; deletion shifts entries
 * back, so there are no tombstones and lookups stay short under churn.
 */
#include "runtime/internal.h"

#include <stdlib.h>

static size_t slot_of(const struct rtmap *m, uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> 17) & (m->cap - 1);
}

void *rtmap_get(const struct rtmap *m, uint64_t key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = slot_of(m, key);; i = (i + 1) & (m->cap - 1)) {
        if (m->keys[i] == key)
            return m->vals[i];
        if (m->keys[i] == 0)
            return NULL;
    }
}

static void insert_fresh(struct rtmap *m, uint64_t key, void *val)
{
    size_t i = slot_of(m, key);
    while (m->keys[i] != 0)
        i = (i + 1) & (m->cap - 1);
    m->keys[i] = key;
    m->vals[i] = val;
    m->n++;
}

static int grow(struct rtmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 8;
    uint64_t *keys = calloc(cap, sizeof *keys);
    void **vals = calloc(cap, sizeof *vals);
    if (!keys || !vals) {
        free(keys);
        free(vals);
        return -1;
    }
    struct rtmap old = *m;
    m->keys = keys;
    m->vals = vals;
    m->cap = cap;
    m->n = 0;
    for (size_t i = 0; i < old.cap; i++) {
        if (old.keys[i])
            insert_fresh(m, old.keys[i], old.vals[i]);
    }
    free(old.keys);
    free(old.vals);
    return 0;
}

int rtmap_put(struct rtmap *m, uint64_t key, void *val)
{
    if (m->cap) {
        for (size_t i = slot_of(m, key); m->keys[i]; i = (i + 1) & (m->cap - 1)) {
            if (m->keys[i] == key) {
                m->vals[i] = val;
                return 0;
            }
        }
    }
    /* keep the load under 3/4 */
    if ((m->n + 1) * 4 > m->cap * 3 && grow(m) != 0)
        return -1;
    insert_fresh(m, key, val);
    return 0;
}

void rtmap_del(struct rtmap *m, uint64_t key)
{
    if (m->cap == 0)
        return;
    size_t i = slot_of(m, key);
    while (m->keys[i] != key) {
        if (m->keys[i] == 0)
            return;
        i = (i + 1) & (m->cap - 1);
    }
    /* backward-shift: move later entries of the cluster into the hole when
     * their home slot does not lie between the hole and them */
    size_t hole = i;
    for (size_t j = (i + 1) & (m->cap - 1); m->keys[j]; j = (j + 1) & (m->cap - 1)) {
        size_t home = slot_of(m, m->keys[j]);
        bool movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
        if (movable) {
            m->keys[hole] = m->keys[j];
            m->vals[hole] = m->vals[j];
            hole = j;
        }
    }
    m->keys[hole] = 0;
    m->vals[hole] = NULL;
    m->n--;
}

void rtmap_free(struct rtmap *m)
{
    free(m->keys);
    free(m->vals);
    m->keys = NULL;
    m->vals = NULL;
    m->cap = m->n = 0;
}
