/*
 * The listing page cache: a page is shared while its query and both
 * generations match, a live page only until PAGES_LIVE_MS after it was
 * rendered; the byte budget is kept by dropping the least recently used
 * page; a page too large to keep is still served; references outlive
 * eviction; the gzip form decompresses to the page.
 */
#include "api/pages.h"
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *text(const char *s)
{
    char *copy = strdup(s);
    assert_non_null(copy);
    return copy;
}

static struct page *put(struct pages *pages, const char *query, uint64_t cg, uint64_t ug, bool live,
                        int64_t now, const char *body)
{
    struct pages_key key = {query, cg, ug};
    struct page *page = pages_put(pages, &key, live, now, text(body), strlen(body));
    assert_non_null(page);
    return page;
}

static struct page *get(struct pages *pages, const char *query, uint64_t cg, uint64_t ug,
                        int64_t now)
{
    struct pages_key key = {query, cg, ug};
    return pages_get(pages, &key, now);
}

static void expect_body(const struct page *page, const char *body)
{
    size_t len = 0;
    const char *got = page_body(page, &len);
    assert_int_equal(len, strlen(body));
    assert_memory_equal(got, body, len);
}

static void test_shared_while_generations_stand(void **state)
{
    (void)state;
    struct pages *pages = pages_new(1 << 20);
    page_release(put(pages, "a", 1, 1, false, 0, "page a"));
    page_release(put(pages, "b", 1, 1, false, 0, "page b"));
    struct page *hit = get(pages, "a", 1, 1, 5000000);
    assert_non_null(hit);
    expect_body(hit, "page a");
    page_release(hit);
    assert_null(get(pages, "c", 1, 1, 0));
    /* another catalogue or usage generation: a miss, and the stale page
     * goes (asking the old generations again misses too) */
    assert_null(get(pages, "a", 2, 1, 0));
    assert_null(get(pages, "a", 1, 1, 0));
    assert_null(get(pages, "b", 1, 2, 0));
    assert_null(get(pages, "b", 1, 1, 0));
    pages_free(pages);
}

static void test_live_pages_expire(void **state)
{
    (void)state;
    struct pages *pages = pages_new(1 << 20);
    page_release(put(pages, "a", 1, 1, true, 1000, "live"));
    struct page *hit = get(pages, "a", 1, 1, 1000 + PAGES_LIVE_MS - 1);
    assert_non_null(hit);
    page_release(hit);
    assert_null(get(pages, "a", 1, 1, 1000 + PAGES_LIVE_MS));
    pages_free(pages);
}

static void test_budget_drops_least_recently_used(void **state)
{
    (void)state;
    char body[151];
    memset(body, 'x', 150);
    body[150] = '\0';
    body[100] = '\0'; /* 100 bytes: a quarter of the budget */
    struct pages *pages = pages_new(400);
    const char *queries[] = {"a", "b", "c", "d"};
    for (size_t i = 0; i < 4; i++)
        page_release(put(pages, queries[i], 1, 1, false, 0, body));
    page_release(get(pages, "a", 1, 1, 0)); /* a is now more recent than b */
    page_release(put(pages, "e", 1, 1, false, 0, body));
    assert_null(get(pages, "b", 1, 1, 0));
    const char *kept[] = {"a", "c", "d", "e"};
    for (size_t i = 0; i < 4; i++) {
        struct page *page = get(pages, kept[i], 1, 1, 0);
        if (!page)
            fail_msg("page %s should still be kept", kept[i]);
        page_release(page);
    }
    /* over a quarter of the budget: served, not kept */
    body[100] = 'x';
    struct page *big = put(pages, "big", 1, 1, false, 0, body);
    expect_body(big, body);
    page_release(big);
    assert_null(get(pages, "big", 1, 1, 0));
    pages_free(pages);
}

static void test_references_outlive_eviction(void **state)
{
    (void)state;
    struct pages *pages = pages_new(1 << 20);
    struct page *held = put(pages, "a", 1, 1, false, 0, "first render");
    page_release(put(pages, "a", 1, 1, false, 0, "second render")); /* replaces it */
    assert_null(get(pages, "a", 2, 1, 0));                          /* and drops that */
    pages_free(pages);
    expect_body(held, "first render"); /* still readable: a response holds it */
    page_release(held);
}

static void test_gzip_form(void **state)
{
    (void)state;
    struct pages *pages = pages_new(1 << 20);
    char *body = malloc(64 * 1024 + 1);
    assert_non_null(body);
    for (size_t i = 0; i < 64 * 1024; i++)
        body[i] = "{\"modules\":[],\"total\":0}"[i % 24];
    body[64 * 1024] = '\0';
    struct page *page = put(pages, "a", 1, 1, false, 0, body);
    const char *packed = NULL, *again = NULL;
    size_t packed_len = 0, again_len = 0;
    assert_int_equal(page_gzip(pages, page, &packed, &packed_len), 0);
    assert_int_equal(page_gzip(pages, page, &again, &again_len), 0);
    assert_ptr_equal(packed, again); /* compressed once */
    assert_true(packed_len < 64 * 1024 / 10);
    size_t len = 0;
    char *plain = tu_gunzip(packed, packed_len, &len);
    assert_non_null(plain);
    assert_int_equal(len, 64 * 1024);
    assert_memory_equal(plain, body, len);
    free(plain);
    free(body);
    page_release(page);
    pages_free(pages);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_shared_while_generations_stand),
        cmocka_unit_test(test_live_pages_expire),
        cmocka_unit_test(test_budget_drops_least_recently_used),
        cmocka_unit_test(test_references_outlive_eviction),
        cmocka_unit_test(test_gzip_form),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
