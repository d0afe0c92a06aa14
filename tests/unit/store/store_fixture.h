/*
 * Shared by the store's unit tests (header-only: every test_*.c file is its
 * own executable). A fixture is a fresh state directory with an open store.
 */
#ifndef STRATD_TESTS_UNIT_STORE_FIXTURE_H
#define STRATD_TESTS_UNIT_STORE_FIXTURE_H

#include "testutil.h"

#include "core/jsonutil.h"
#include "store/store.h"

#include <stdlib.h>
#include <string.h>

struct fixture {
    char *root;  /* temporary directory, removed at teardown */
    char *state; /* <root>/state, created by store_open */
    struct store *store;
};

/* Fails the test with the store's message when `call` does not return 0. */
#define assert_ok(call, errp)                                                                      \
    do {                                                                                           \
        if ((call) != 0)                                                                           \
            fail_msg("%s failed: %s", #call, (errp)->message);                                     \
    } while (0)

static inline struct store *fixture_open(const char *state)
{
    struct err err = ERR_INIT;
    struct store *store = NULL;
    if (store_open(state, &store, &err) != 0)
        fail_msg("store_open %s: %s", state, err.message);
    return store;
}

static inline int fixture_setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->root = tu_tempdir("store");
    f->state = tu_path("%s/state", f->root);
    f->store = fixture_open(f->state);
    *state = f;
    return 0;
}

static inline int fixture_teardown(void **state)
{
    struct fixture *f = *state;
    store_close(f->store);
    tu_remove_tree(f->root);
    free(f->root);
    free(f->state);
    free(f);
    return 0;
}

/* Parses test JSON (any value); the test fails on a typo. */
static inline json_t *jparse(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY, &jerr);
    if (!v)
        fail_msg("bad JSON in test (%s): %s", jerr.text, text);
    return v;
}

/* An OrderRecord and an ExecutionRecord of the contract, every field set. */
static inline json_t *order(const char *id, const char *instance, const char *provider,
                            const char *state, long long updated_at)
{
    json_t *o = json_pack(
        "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:n, s:s, s:n, s:I, s:{}, "
        "s:n, s:n, s:I, s:I}",
        "id", id, "provider", provider, "strategyInstance", instance, "clientOrderId", id, "symbol",
        "BTC-USDT", "side", "buy", "type", "limit", "quantity", "0.5", "price", "state", state,
        "externalReference", "placedAt", (json_int_t)updated_at, "metadata", "acknowledgedAt",
        "completedAt", "createdAt", (json_int_t)updated_at, "updatedAt", (json_int_t)updated_at);
    assert_non_null(o);
    return o;
}

static inline json_t *execution(const char *id, const char *order_id, const char *instance,
                                const char *provider, long long traded_at)
{
    json_t *e = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:n, s:I, s:{}, s:I}",
                          "orderId", order_id, "provider", provider, "strategyInstance", instance,
                          "executionId", id, "quantity", "0.1", "price", "50000.5", "fee", "0.01",
                          "feeAsset", "USDT", "liquidity", "tradedAt", (json_int_t)traded_at,
                          "metadata", "createdAt", (json_int_t)traded_at);
    assert_non_null(e);
    return e;
}

/* Equal as text, so key order and number spelling count too. */
static inline void assert_json_same(const json_t *actual, const json_t *expected)
{
    char *a = jsonutil_dump(actual, NULL);
    char *e = jsonutil_dump(expected, NULL);
    assert_non_null(a);
    assert_non_null(e);
    if (strcmp(a, e) != 0)
        fail_msg("JSON differs:\n  actual:   %s\n  expected: %s", a, e);
    free(a);
    free(e);
}

#endif
