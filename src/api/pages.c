/* The listing page cache: a small table of refcounted pages, least
 * recently used out first. */
#include "api/pages.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

/* A listing asked with a handful of query variants at a time (dashboards,
 * scripts) fits; anything else is rendered per request, as before. */
#define PAGES_SLOTS 16
/* Most of level 6's ratio at the speed of level 1 (434 KB page: 67.7 KB in
 * 2.2 ms, against 61.1 KB in 6.0 ms). */
#define PAGES_GZIP_LEVEL 3

struct page {
    atomic_int refs;
    char *query;
    uint64_t catalog_generation;
    uint64_t usage_generation;
    int64_t expires_ms; /* 0: while the generations stand */
    char *body;
    size_t len;
    char *gzip; /* set once, under the table's lock */
    size_t gzip_len;
    bool kept;     /* in the table (its bytes count against the budget) */
    uint64_t used; /* the table's clock at the last hit */
};

struct pages {
    pthread_mutex_t lock;
    struct page *slots[PAGES_SLOTS];
    size_t bytes;
    size_t budget;
    uint64_t clock;
};

struct pages *pages_new(size_t budget_bytes)
{
    struct pages *pages = calloc(1, sizeof *pages);
    if (!pages)
        return NULL;
    pthread_mutex_init(&pages->lock, NULL);
    pages->budget = budget_bytes;
    return pages;
}

static void page_destroy(struct page *page)
{
    free(page->query);
    free(page->body);
    free(page->gzip);
    free(page);
}

void page_retain(struct page *page)
{
    atomic_fetch_add_explicit(&page->refs, 1, memory_order_relaxed);
}

void page_release(struct page *page)
{
    if (page && atomic_fetch_sub_explicit(&page->refs, 1, memory_order_acq_rel) == 1)
        page_destroy(page);
}

static size_t page_bytes(const struct page *page)
{
    return page->len + page->gzip_len;
}

/* Under the lock. */
static void drop_slot(struct pages *pages, size_t i)
{
    struct page *page = pages->slots[i];
    pages->slots[i] = NULL;
    pages->bytes -= page_bytes(page);
    page->kept = false;
    page_release(page);
}

void pages_free(struct pages *pages)
{
    if (!pages)
        return;
    for (size_t i = 0; i < PAGES_SLOTS; i++)
        if (pages->slots[i])
            drop_slot(pages, i);
    pthread_mutex_destroy(&pages->lock);
    free(pages);
}

static bool page_current(const struct page *page, const struct pages_key *key, int64_t now_ms)
{
    return page->catalog_generation == key->catalog_generation &&
           page->usage_generation == key->usage_generation &&
           (page->expires_ms == 0 || now_ms < page->expires_ms);
}

struct page *pages_get(struct pages *pages, const struct pages_key *key, int64_t now_ms)
{
    struct page *found = NULL;
    pthread_mutex_lock(&pages->lock);
    for (size_t i = 0; i < PAGES_SLOTS; i++) {
        struct page *page = pages->slots[i];
        if (!page || strcmp(page->query, key->query) != 0)
            continue;
        if (page_current(page, key, now_ms)) {
            page->used = ++pages->clock;
            page_retain(page);
            found = page;
        } else {
            drop_slot(pages, i);
        }
        break;
    }
    pthread_mutex_unlock(&pages->lock);
    return found;
}

/* Under the lock: a free slot, made by dropping pages of the same query,
 * then the least recently used, until `need` more bytes fit. */
static size_t make_room(struct pages *pages, const char *query, size_t need)
{
    for (size_t i = 0; i < PAGES_SLOTS; i++)
        if (pages->slots[i] && strcmp(pages->slots[i]->query, query) == 0)
            drop_slot(pages, i);
    for (;;) {
        size_t free_slot = PAGES_SLOTS, oldest = PAGES_SLOTS;
        for (size_t i = 0; i < PAGES_SLOTS; i++) {
            if (!pages->slots[i]) {
                free_slot = free_slot < PAGES_SLOTS ? free_slot : i;
                continue;
            }
            if (oldest == PAGES_SLOTS || pages->slots[i]->used < pages->slots[oldest]->used)
                oldest = i;
        }
        if (free_slot < PAGES_SLOTS && pages->bytes + need <= pages->budget)
            return free_slot;
        if (oldest == PAGES_SLOTS)
            return PAGES_SLOTS;
        drop_slot(pages, oldest);
    }
}

struct page *pages_put(struct pages *pages, const struct pages_key *key, bool live, int64_t now_ms,
                       char *body, size_t len)
{
    struct page *page = calloc(1, sizeof *page);
    char *query = strdup(key->query);
    if (!page || !query) {
        free(page);
        free(query);
        free(body);
        return NULL;
    }
    atomic_init(&page->refs, 1);
    page->query = query;
    page->catalog_generation = key->catalog_generation;
    page->usage_generation = key->usage_generation;
    page->expires_ms = live ? now_ms + PAGES_LIVE_MS : 0;
    page->body = body;
    page->len = len;
    if (len > pages->budget / 4)
        return page;
    pthread_mutex_lock(&pages->lock);
    size_t slot = make_room(pages, key->query, len);
    if (slot < PAGES_SLOTS) {
        page_retain(page);
        page->kept = true;
        page->used = ++pages->clock;
        pages->slots[slot] = page;
        pages->bytes += len;
    }
    pthread_mutex_unlock(&pages->lock);
    return page;
}

const char *page_body(const struct page *page, size_t *len)
{
    *len = page->len;
    return page->body;
}

static int gzip_compress(const char *data, size_t len, char **out, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    /* window bits 15 + 16: a gzip wrapper, not zlib's */
    if (deflateInit2(&z, PAGES_GZIP_LEVEL, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong bound = deflateBound(&z, (uLong)len);
    char *buf = malloc(bound ? bound : 1);
    if (!buf) {
        deflateEnd(&z);
        return -1;
    }
    /* zlib's input pointer is not const but deflate only reads it */
    z.next_in = (Bytef *)(uintptr_t)data; // NOLINT(performance-no-int-to-ptr)
    z.avail_in = (uInt)len;
    z.next_out = (Bytef *)buf;
    z.avail_out = (uInt)bound;
    int rc = deflate(&z, Z_FINISH);
    size_t produced = (size_t)z.total_out;
    deflateEnd(&z);
    if (rc != Z_STREAM_END) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = produced;
    return 0;
}

int page_gzip(struct pages *pages, struct page *page, const char **data, size_t *len)
{
    pthread_mutex_lock(&pages->lock);
    bool ready = page->gzip != NULL;
    pthread_mutex_unlock(&pages->lock);
    if (!ready) {
        char *packed = NULL;
        size_t packed_len = 0;
        if (gzip_compress(page->body, page->len, &packed, &packed_len) != 0)
            return -1;
        pthread_mutex_lock(&pages->lock);
        if (page->gzip) { /* another request got there first */
            free(packed);
        } else {
            page->gzip = packed;
            page->gzip_len = packed_len;
            if (page->kept)
                pages->bytes += packed_len;
        }
        pthread_mutex_unlock(&pages->lock);
    }
    *data = page->gzip;
    *len = page->gzip_len;
    return 0;
}
