/*
 * Orders, executions and balances reach the store (SQLite in a temporary
 * state directory), batched, and all of it is written by the time a stop
 * returns.
 */
#include "testsink.h"

#include "core/strbuf.h"
#include "market/sim.h"

/* A store in a temporary state directory and a sink that records the
 * execution reports, for each test. */
struct fixture {
    char *dir;
    struct store *store;
    struct tsink sink;
};

static int fixture_open(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    struct err err = ERR_INIT;
    if (!f)
        return -1;
    f->dir = tu_tempdir("market-store");
    if (store_open(f->dir, &f->store, &err) != 0)
        fail_msg("store_open: %s", err.message);
    tsink_init(&f->sink, 1u << EVENT_EXEC_REPORT, 0);
    *state = f;
    return 0;
}

static int fixture_close(void **state)
{
    struct fixture *f = *state;
    tsink_destroy(&f->sink);
    store_close(f->store);
    tu_remove_tree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* The members of obj, in order, are exactly `keys` (NULL-terminated). */
static void assert_members(const json_t *obj, const char *const *keys)
{
    size_t i = 0;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        if (!keys[i] || strcmp(keys[i], key) != 0)
            fail_msg("member %zu is '%s', expected '%s'", i, key, keys[i] ? keys[i] : "(none)");
        i++;
    }
    if (keys[i])
        fail_msg("member '%s' is missing", keys[i]);
}

/* The contract's records, member by member, as the writer writes them. */
static const char *const order_members[] = {"id",
                                            "provider",
                                            "strategyInstance",
                                            "clientOrderId",
                                            "symbol",
                                            "side",
                                            "type",
                                            "quantity",
                                            "price",
                                            "state",
                                            "externalReference",
                                            "placedAt",
                                            "metadata",
                                            "acknowledgedAt",
                                            "completedAt",
                                            "createdAt",
                                            "updatedAt",
                                            NULL};
static const char *const order_metadata_members[] = {"dryRun", "filledQuantity", "averagePrice",
                                                     "instanceKey", NULL};
static const char *const reasoned_metadata_members[] = {
    "dryRun", "filledQuantity", "averagePrice", "instanceKey", "reason", NULL};
static const char *const execution_members[] = {
    "orderId",  "provider",  "strategyInstance", "executionId", "quantity",  "price", "fee",
    "feeAsset", "liquidity", "tradedAt",         "metadata",    "createdAt", NULL};
static const char *const execution_metadata_members[] = {"symbol", "side", "dryRun", NULL};
static const char *const balance_members[] = {"provider",  "asset",      "total",
                                              "available", "snapshotAt", "metadata",
                                              "createdAt", "updatedAt",  NULL};

static void test_records_reach_the_store(void **state)
{
    struct fixture *f = *state;
    struct store *store = f->store;
    struct tsink *sink = &f->sink;
    struct err err = ERR_INIT;
    struct market *m = market_new(tsink_sink(sink), store);
    tmarket_create(m, "rec", "{\"symbols\": [\"BTC-USDT\"], \"tickRate\": 0.01}", true);
    assert_true(tsink_wait_kind(sink, EVENT_BOOK_SNAPSHOT, 1, 5000));
    struct event *book = tsink_latest(sink, EVENT_BOOK_SNAPSHOT);
    const struct book_level *asks = book->u.book.levels + book->u.book.depth;
    double qty = asks[0].quantity + asks[1].quantity / 2;
    event_release(book);

    struct order_request r = tmarket_order("rec", "BTC-USDT", SIDE_BUY, ORDER_MARKET, qty, 0, "a");
    tmarket_submit(m, &r);
    r = tmarket_order("rec", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.1, 1000, "b");
    tmarket_submit(m, &r);
    r = tmarket_order("rec", "BTC-USDT", SIDE_SELL, ORDER_MARKET, -1, 0, "c");
    tmarket_submit(m, &r);
    assert_true(tsink_wait_exec(sink, "c", EXEC_REJECTED, 5000));
    assert_int_equal(market_provider_stop(m, "rec", NULL, &err), 0);

    json_t *orders = NULL;
    struct store_order_query q = {.instance_id = "inst-7", .provider = "rec"};
    assert_int_equal(store_orders_query(store, &q, &orders, &err), 0);
    assert_int_equal(json_array_size(orders), 3);
    size_t i;
    json_t *o;
    int seen = 0;
    json_array_foreach(orders, i, o)
    {
        const char *client = tu_jstr(o, "clientOrderId");
        const char *st = tu_jstr(o, "state");
        assert_string_equal(tu_jstr(o, "strategyInstance"), "inst-7");
        assert_string_equal(tu_jstr(o, "symbol"), "BTC-USDT");
        assert_true(json_is_string(json_object_get(o, "quantity")));
        assert_members(o, order_members);
        assert_members(json_object_get(o, "metadata"), strcmp(st, "filled") != 0
                                                           ? reasoned_metadata_members
                                                           : order_metadata_members);
        assert_true(json_is_null(json_object_get(o, "externalReference")));
        if (strcmp(client, "a") == 0) {
            char text[40];
            snprintf(text, sizeof text, "%.15g", qty);
            assert_string_equal(tu_jstr(o, "quantity"), text);
            assert_string_equal(tu_jstr(o, "metadata.filledQuantity"), text);
            assert_string_equal(st, "filled");
            assert_true(json_is_null(json_object_get(o, "price")));
            assert_true(json_is_integer(json_object_get(o, "completedAt")));
            seen |= 1;
        } else if (strcmp(client, "b") == 0) {
            /* resting until the stop expired it */
            assert_string_equal(st, "expired");
            assert_string_equal(tu_jstr(o, "price"), "1000");
            seen |= 2;
        } else {
            assert_string_equal(st, "rejected");
            assert_non_null(strstr(tu_jstr(o, "metadata.reason"), "quantity"));
            seen |= 4;
        }
    }
    assert_int_equal(seen, 7);
    json_decref(orders);

    json_t *execs = NULL;
    assert_int_equal(store_executions_query(store, &q, &execs, &err), 0);
    assert_int_equal(json_array_size(execs), 2); /* two levels */
    json_array_foreach(execs, i, o)
    {
        assert_members(o, execution_members);
        assert_members(json_object_get(o, "metadata"), execution_metadata_members);
        assert_string_equal(tu_jstr(o, "metadata.symbol"), "BTC-USDT");
        assert_true(json_is_false(json_object_get(json_object_get(o, "metadata"), "dryRun")));
        assert_string_equal(tu_jstr(o, "feeAsset"), "USDT");
        assert_string_equal(tu_jstr(o, "liquidity"), "taker");
        assert_true(strncmp(tu_jstr(o, "executionId"), tu_jstr(o, "orderId"),
                            strlen(tu_jstr(o, "orderId"))) == 0);
    }
    json_decref(execs);

    json_t *balances = NULL;
    assert_int_equal(store_balances_query(store, "rec", "BTC", 0, &balances, &err), 0);
    assert_int_equal(json_array_size(balances), 1);
    assert_members(json_array_get(balances, 0), balance_members);
    double btc = strtod(tu_jstr(balances, "0.total"), NULL);
    assert_true(tnear(btc, 1 + qty));
    assert_true(tnear(btc, tmarket_balance(m, "rec", "BTC", NULL)));
    json_decref(balances);

    market_free(m);
}

static size_t stored_orders(struct store *store)
{
    json_t *orders = NULL;
    struct err err = ERR_INIT;
    struct store_order_query q = {.instance_id = "inst-7"};
    assert_int_equal(store_orders_query(store, &q, &orders, &err), 0);
    size_t n = json_array_size(orders);
    json_decref(orders);
    return n;
}

/* A quiet provider (one tick per 100 s) still writes its batch within the
 * batch delay: the thread wakes for the flush, not only for ticks. */
static void test_batches_flush_while_running(void **state)
{
    struct fixture *f = *state;
    struct store *store = f->store;
    struct tsink *sink = &f->sink;
    struct market *m = market_new(tsink_sink(sink), store);
    tmarket_create(m, "quiet", "{\"symbols\": [\"BTC-USDT\"], \"tickRate\": 0.01}", true);
    assert_true(tsink_wait_kind(sink, EVENT_BOOK_SNAPSHOT, 1, 5000));
    struct order_request r =
        tmarket_order("quiet", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 0.001, 0, "q1");
    tmarket_submit(m, &r);
    assert_true(tsink_wait_exec(sink, "q1", EXEC_FILLED, 5000));
    int64_t until = tsink_deadline(5000);
    while (stored_orders(store) == 0 && clock_mono_ns() < until)
        usleep(10000);
    assert_int_equal(stored_orders(store), 1);
    market_free(m);
}

/* An unpaced market taking hundreds of orders queues records faster than
 * one batch holds; a stop (here market_free) still leaves every order and
 * execution in the store. */
static void test_stop_writes_everything_queued(void **state)
{
    struct fixture *f = *state;
    struct store *store = f->store;
    struct tsink *sink = &f->sink;
    struct err err = ERR_INIT;
    struct market *m = market_new(tsink_sink(sink), store);
    tmarket_create(m, "busy", "{\"symbols\": [\"BTC-USDT\"], \"tickRate\": 0}", true);
    enum { N = 600 };
    for (int i = 0; i < N; i++) {
        char id[16];
        snprintf(id, sizeof id, "o%d", i);
        struct order_request r = tmarket_order("busy", "BTC-USDT", i % 2 ? SIDE_SELL : SIDE_BUY,
                                               ORDER_MARKET, 0.0001, 0, id);
        r.dry_run = true;
        tmarket_submit(m, &r);
    }
    assert_true(tsink_wait_exec(sink, "o599", EXEC_FILLED, 10000));
    market_free(m);

    json_t *orders = NULL;
    struct store_order_query q = {.instance_id = "inst-7", .provider = "busy", .limit = 10000};
    assert_int_equal(store_orders_query(store, &q, &orders, &err), 0);
    assert_int_equal(json_array_size(orders), N);
    size_t i;
    json_t *o;
    json_array_foreach(orders, i, o) assert_string_equal(tu_jstr(o, "state"), "filled");
    json_decref(orders);
    json_t *execs = NULL;
    assert_int_equal(store_executions_query(store, &q, &execs, &err), 0);
    assert_true(json_array_size(execs) >= N);
    json_decref(execs);
}

/* Records the store refuses (here a trigger that aborts every insert of an
 * order, as a full disk would fail the commit) are counted as lost, so that
 * an alert can fire; the reports reached the sink all the same. */
static void test_records_the_store_refuses_are_counted(void **state)
{
    struct fixture *f = *state;
    char *out = NULL;
    int rc = tu_run(&out,
                    "sqlite3 '%s/stratd.db' \"CREATE TRIGGER refuse BEFORE INSERT ON orders "
                    "BEGIN SELECT RAISE(ABORT, 'refused'); END;\" 2>&1",
                    f->dir);
    if (rc != 0)
        fail_msg("sqlite3: %s", out ? out : "");
    free(out);
    uint64_t before = sim_records_lost();
    struct market *m = market_new(tsink_sink(&f->sink), f->store);
    tmarket_create(m, "lossy", "{\"symbols\": [\"BTC-USDT\"], \"tickRate\": 0}", true);
    struct order_request r =
        tmarket_order("lossy", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 0.0001, 0, "gone");
    r.dry_run = true;
    tmarket_submit(m, &r);
    assert_true(tsink_wait_exec(&f->sink, "gone", EXEC_FILLED, 5000));
    market_free(m); /* writes, or fails to write, what is queued */
    assert_true(sim_records_lost() > before);
    struct strbuf text = STRBUF_INIT;
    m = market_new(tsink_sink(&f->sink), NULL);
    market_metrics_write(m, &text);
    market_free(m);
    assert_non_null(strstr(strbuf_cstr(&text), "\nstratd_history_records_lost_total "));
    strbuf_release(&text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_records_reach_the_store, fixture_open, fixture_close),
        cmocka_unit_test_setup_teardown(test_batches_flush_while_running, fixture_open,
                                        fixture_close),
        cmocka_unit_test_setup_teardown(test_records_the_store_refuses_are_counted, fixture_open,
                                        fixture_close),
        cmocka_unit_test_setup_teardown(test_stop_writes_everything_queued, fixture_open,
                                        fixture_close),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
