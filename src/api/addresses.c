/*
 * addresses: an open-addressing table of (address, open connections),
 * linear probing, an entry emptied by shifting its followers back so that no
 * tombstones build up under clients that come and go (addresses.h).
 */
#include "api/addresses.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct address_slot {
    struct in6_addr addr;
    uint32_t open; /* 0: the slot is empty */
};

struct address_counts {
    pthread_mutex_t lock;
    size_t mask; /* slots - 1; slots a power of two */
    struct address_slot *slots;
};

struct address_counts *address_counts_new(size_t max_open)
{
    size_t slots = 16;
    /* at most half full, so that probes stay short */
    while (slots < max_open * 2)
        slots *= 2;
    struct address_counts *counts = calloc(1, sizeof *counts);
    if (!counts)
        return NULL;
    counts->slots = calloc(slots, sizeof *counts->slots);
    if (!counts->slots) {
        free(counts);
        return NULL;
    }
    counts->mask = slots - 1;
    pthread_mutex_init(&counts->lock, NULL);
    return counts;
}

void address_counts_free(struct address_counts *counts)
{
    if (!counts)
        return;
    pthread_mutex_destroy(&counts->lock);
    free(counts->slots);
    free(counts);
}

/* Addresses from one network differ in their last bytes, which come last in
 * network order: every word is mixed in, so that they spread over the
 * table. */
static size_t home_slot(const struct address_counts *counts, const struct in6_addr *addr)
{
    uint32_t words[4];
    memcpy(words, addr->s6_addr, sizeof words);
    uint32_t h = 0;
    for (int i = 0; i < 4; i++)
        h = (h ^ words[i]) * 0x9e3779b1u;
    return (size_t)(h ^ (h >> 16)) & counts->mask;
}

static bool same_address(const struct in6_addr *a, const struct in6_addr *b)
{
    return memcmp(a->s6_addr, b->s6_addr, sizeof a->s6_addr) == 0;
}

/* The slot holding `addr`, or the empty one where it would go; NULL when
 * the table is full without it. */
static struct address_slot *find_slot(struct address_counts *counts, const struct in6_addr *addr)
{
    size_t i = home_slot(counts, addr);
    for (size_t probes = 0; probes <= counts->mask; probes++) {
        struct address_slot *slot = &counts->slots[i];
        if (slot->open == 0 || same_address(&slot->addr, addr))
            return slot;
        i = (i + 1) & counts->mask;
    }
    return NULL;
}

unsigned address_counts_enter(struct address_counts *counts, const struct in6_addr *addr)
{
    pthread_mutex_lock(&counts->lock);
    struct address_slot *slot = find_slot(counts, addr);
    unsigned open = 0;
    if (slot) {
        slot->addr = *addr;
        open = ++slot->open;
    }
    pthread_mutex_unlock(&counts->lock);
    return open;
}

/* Empties slot `hole`, moving back each follower whose home lies at or
 * before the hole (cyclically), so that every entry stays reachable from its
 * home without crossing an empty slot. */
static void empty_slot(struct address_counts *counts, size_t hole)
{
    size_t i = hole;
    for (;;) {
        i = (i + 1) & counts->mask;
        struct address_slot *next = &counts->slots[i];
        if (next->open == 0)
            break;
        size_t home = home_slot(counts, &next->addr);
        /* distance travelled from home to i, against from the hole to i */
        if (((i - home) & counts->mask) >= ((i - hole) & counts->mask)) {
            counts->slots[hole] = *next;
            hole = i;
        }
    }
    counts->slots[hole].open = 0;
}

void address_counts_leave(struct address_counts *counts, const struct in6_addr *addr)
{
    pthread_mutex_lock(&counts->lock);
    struct address_slot *slot = find_slot(counts, addr);
    if (slot && slot->open > 0 && same_address(&slot->addr, addr) && --slot->open == 0)
        empty_slot(counts, (size_t)(slot - counts->slots));
    pthread_mutex_unlock(&counts->lock);
}
