/*
 * pages: whole rendered pages of the module listing, shared between
 * requests. A listing page is a pure function of its query, the catalogue
 * generation and the usage generation, except for the lastSeen of running
 * revisions (which is "now"); so a page is reused while both generations
 * stand, and a page rendered while anything ran is reused for at most
 * PAGES_LIVE_MS more. The gzip form of a page is made on the first request
 * that accepts it and kept with the page.
 *
 * Ownership: pages_put takes the body; every page returned is a reference
 * the caller gives back with page_release (a response holds it until
 * libmicrohttpd has sent the bytes). Bodies are read-only once published.
 * Thread-safe: one mutex guards the table; rendering and compression
 * happen outside it. Out of memory: pages_put still returns the page, just
 * not kept; page_gzip returns -1 (answer the identity form).
 */
#ifndef STRATD_API_PAGES_H
#define STRATD_API_PAGES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PAGES_LIVE_MS 1000

struct pages;
struct page;

/* budget_bytes: what the kept pages (both forms) may hold in all; a page
 * over a quarter of it is served but not kept. NULL out of memory. */
struct pages *pages_new(size_t budget_bytes);
void pages_free(struct pages *pages);

struct pages_key {
    const char *query; /* the normalised query: same text, same page */
    uint64_t catalog_generation;
    uint64_t usage_generation;
};

/* The kept page for key, or NULL (none, or stale: then it is dropped). */
struct page *pages_get(struct pages *pages, const struct pages_key *key, int64_t now_ms);
/* Publishes a freshly rendered body (malloc'ed, taken over even on
 * failure) and returns a reference to it; live: rendered while instances
 * ran (reused for PAGES_LIVE_MS at most). NULL only out of memory. */
struct page *pages_put(struct pages *pages, const struct pages_key *key, bool live, int64_t now_ms,
                       char *body, size_t len);

const char *page_body(const struct page *page, size_t *len);
/* The gzip form (made once, at compression level 3). -1 out of memory. */
int page_gzip(struct pages *pages, struct page *page, const char **data, size_t *len);
void page_retain(struct page *page);
void page_release(struct page *page);

#endif
