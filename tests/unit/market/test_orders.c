/*
 * Orders on the simulated exchange: market orders across book levels,
 * resting limit orders, cancels, each rejection reason, fees, balances,
 * dry runs and BalanceUpdate events.
 *
 * Most tests run a provider with tickRate 0.01: tick 0 happens at start and
 * the next one 100 s later, so the book published at tick 0 is the book the
 * orders meet.
 */
#include "testsink.h"

#define EXEC_MASK ((1u << EVENT_EXEC_REPORT) | (1u << EVENT_BALANCE_UPDATE))
#define FROZEN "{\"symbols\": [\"BTC-USDT\"], \"tickRate\": 0.01, \"seed\": 5"

struct fixture {
    struct tsink sink;
    struct market *m;
};

static struct fixture *fixture_new(const char *config)
{
    struct fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    tsink_init(&f->sink, EXEC_MASK, 0);
    f->m = market_new(tsink_sink(&f->sink), NULL);
    assert_non_null(f->m);
    tmarket_create(f->m, "sim", config, true);
    assert_true(tmarket_wait_running(f->m, "sim", 5000));
    assert_true(tsink_wait_kind(&f->sink, EVENT_BOOK_SNAPSHOT, 1, 5000));
    return f;
}

static void fixture_free(struct fixture *f)
{
    market_free(f->m);
    tsink_destroy(&f->sink);
    free(f);
}

static size_t execs_of(struct fixture *f, const char *client_id, struct event ***out)
{
    return tsink_execs(&f->sink, client_id, out);
}

static void test_market_buy_partial_fills_across_levels(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN "}");
    struct event *book = tsink_latest(&f->sink, EVENT_BOOK_SNAPSHOT);
    uint32_t depth = book->u.book.depth;
    const struct book_level *asks = book->u.book.levels + depth;
    double qty = asks[0].quantity + asks[1].quantity + asks[2].quantity / 2;
    struct order_request r = tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_MARKET, qty, 0, "m1");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "m1", EXEC_FILLED, 5000));

    struct event **ev;
    size_t n = execs_of(f, "m1", &ev);
    assert_int_equal(n, 4);
    assert_int_equal(ev[0]->u.exec.status, EXEC_ACKNOWLEDGED);
    assert_int_equal(ev[1]->u.exec.status, EXEC_PARTIAL_FILL);
    assert_int_equal(ev[2]->u.exec.status, EXEC_PARTIAL_FILL);
    assert_int_equal(ev[3]->u.exec.status, EXEC_FILLED);
    double notional = 0, fees = 0;
    for (size_t i = 1; i < 4; i++) {
        const struct event_exec *x = &ev[i]->u.exec;
        assert_true(tnear(x->last_price, asks[i - 1].price));
        assert_true(tnear(x->fee, 0.001 * x->last_quantity * x->last_price));
        assert_string_equal(x->fee_asset, "USDT");
        assert_int_equal(ev[i]->target, 7);
        assert_int_equal(ev[i]->kind, EVENT_EXEC_REPORT);
        assert_int_equal(ev[i]->symbol, intern_id("BTC-USDT"));
        assert_int_equal(ev[i]->provider, intern_id("sim"));
        notional += x->last_quantity * x->last_price;
        fees += x->fee;
    }
    const struct event_exec *last = &ev[3]->u.exec;
    assert_true(tnear(last->filled_quantity, qty));
    assert_true(tnear(last->remaining_quantity, 0));
    assert_true(tnear(last->average_price, notional / qty));
    assert_true(tnear(ev[3]->u.exec.last_quantity, asks[2].quantity / 2));
    assert_true(strncmp(last->order_id, "sim-", 4) == 0);
    for (size_t i = 1; i < 4; i++)
        assert_string_equal(ev[i]->u.exec.order_id, last->order_id);

    /* balances: the quote paid notional + fees, the base grew by qty */
    double avail;
    assert_true(tnear(tmarket_balance(f->m, "sim", "USDT", &avail), 100000 - notional - fees));
    assert_true(tnear(avail, 100000 - notional - fees));
    assert_true(tnear(tmarket_balance(f->m, "sim", "BTC", NULL), 1 + qty));
    free(ev);
    event_release(book);
    fixture_free(f);
}

static void test_market_order_beyond_depth_expires(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN ", \"balances\": {\"USDT\": 1e9, \"BTC\": 1000}}");
    struct event *book = tsink_latest(&f->sink, EVENT_BOOK_SNAPSHOT);
    uint32_t depth = book->u.book.depth;
    double bids = 0;
    for (uint32_t i = 0; i < depth; i++)
        bids += book->u.book.levels[i].quantity;
    struct order_request r =
        tmarket_order("sim", "BTC-USDT", SIDE_SELL, ORDER_MARKET, bids + 5, 0, "big");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "big", EXEC_EXPIRED, 5000));
    struct event **ev;
    size_t n = execs_of(f, "big", &ev);
    assert_int_equal(n, depth + 2); /* ack, one partial per level, expired */
    for (size_t i = 1; i <= depth; i++)
        assert_int_equal(ev[i]->u.exec.status, EXEC_PARTIAL_FILL);
    const struct event_exec *x = &ev[n - 1]->u.exec;
    assert_true(tnear(x->filled_quantity, bids));
    assert_true(fabs(x->remaining_quantity - 5) < 1e-6);
    assert_non_null(strstr(x->reason, "depth"));
    /* a second order in the same tick finds the bids taken */
    r = tmarket_order("sim", "BTC-USDT", SIDE_SELL, ORDER_MARKET, 1, 0, "again");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "again", EXEC_EXPIRED, 5000));
    free(ev);
    event_release(book);
    fixture_free(f);
}

static void test_limit_order_rests_then_fills_on_cross(void **state)
{
    (void)state;
    /* volatility 0 keeps bid and ask fixed while ticks make trades */
    struct fixture *f = fixture_new("{\"symbols\": [\"BTC-USDT\"], \"tickRate\": 200, "
                                    "\"volatility\": 0, \"seed\": 9}");
    struct event *tk = NULL;
    while (!(tk = tsink_latest(&f->sink, EVENT_TICKER)))
        usleep(1000);
    double bid = tk->u.ticker.bid, ask = tk->u.ticker.ask;
    event_release(tk);
    assert_true(bid < ask);
    /* at the bid: not marketable, fills when a sell trades at the bid;
     * large enough to need several trades */
    struct order_request r =
        tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.08, bid, "lim");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "lim", EXEC_FILLED, 20000));
    struct event **ev;
    size_t n = execs_of(f, "lim", &ev);
    assert_true(n >= 2);
    assert_int_equal(ev[0]->u.exec.status, EXEC_ACKNOWLEDGED);
    double sum = 0;
    for (size_t i = 1; i < n; i++) {
        assert_true(tnear(ev[i]->u.exec.last_price, bid));
        assert_int_equal(ev[i]->u.exec.status, i + 1 == n ? EXEC_FILLED : EXEC_PARTIAL_FILL);
        sum += ev[i]->u.exec.last_quantity;
    }
    assert_true(tnear(sum, 0.08));
    assert_true(tnear(ev[n - 1]->u.exec.average_price, bid));
    free(ev);

    /* the reservation is gone once filled: available == total */
    double avail, total = tmarket_balance(f->m, "sim", "USDT", &avail);
    assert_true(tnear(avail, total));
    assert_true(tnear(total, 100000 - 0.08 * bid * 1.001));
    fixture_free(f);
}

static void test_marketable_limit_takes_book(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN "}");
    struct event *book = tsink_latest(&f->sink, EVENT_BOOK_SNAPSHOT);
    const struct book_level *asks = book->u.book.levels + book->u.book.depth;
    /* a limit at the second ask takes two levels, then rests the rest */
    double qty = asks[0].quantity + asks[1].quantity + 0.01;
    struct order_request r =
        tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, qty, asks[1].price, "mlim");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_execs(&f->sink, "mlim", 3, 5000));
    usleep(20000); /* nothing more may come: the rest rests */
    struct event **ev;
    size_t n = execs_of(f, "mlim", &ev);
    assert_int_equal(n, 3);
    assert_int_equal(ev[1]->u.exec.status, EXEC_PARTIAL_FILL);
    assert_int_equal(ev[2]->u.exec.status, EXEC_PARTIAL_FILL);
    assert_true(tnear(ev[2]->u.exec.remaining_quantity, 0.01));
    /* the rest holds 0.01 * limit * (1 + fee) of the quote */
    double avail, total = tmarket_balance(f->m, "sim", "USDT", &avail);
    assert_true(tnear(total - avail, 0.01 * asks[1].price * 1.001));
    free(ev);
    event_release(book);
    fixture_free(f);
}

static void test_cancel(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN "}");
    struct market_ops ops = market_runtime_ops(f->m);
    struct order_request r =
        tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.5, 20000, "c1");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "c1", EXEC_ACKNOWLEDGED, 5000));
    double avail, total = tmarket_balance(f->m, "sim", "USDT", &avail);
    assert_true(tnear(total - avail, 0.5 * 20000 * 1.001));

    char error[128];
    assert_int_equal(ops.cancel(ops.ctx, 7, intern_id("sim"), "c1", error, sizeof error), 0);
    assert_true(tsink_wait_exec(&f->sink, "c1", EXEC_CANCELLED, 5000));
    total = tmarket_balance(f->m, "sim", "USDT", &avail);
    assert_true(tnear(avail, total));
    assert_true(tnear(total, 100000));

    /* cancelling it again, an order never seen, a filled order: the order's
     * own final report is the outcome, and no report claims a rejection.
     * Reports come in order, so once a later order's acknowledgement is in,
     * none of these can still come. */
    assert_int_equal(ops.cancel(ops.ctx, 7, intern_id("sim"), "c1", error, sizeof error), 0);
    assert_int_equal(ops.cancel(ops.ctx, 7, intern_id("sim"), "nope", error, sizeof error), 0);
    r = tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 0.001, 0, "f1");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "f1", EXEC_FILLED, 5000));
    assert_int_equal(ops.cancel(ops.ctx, 7, intern_id("sim"), "f1", error, sizeof error), 0);
    r = tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.5, 20000, "marker");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "marker", EXEC_ACKNOWLEDGED, 5000));
    struct event **ev;
    assert_int_equal(execs_of(f, "c1", &ev), 2);
    assert_int_equal(ev[1]->u.exec.status, EXEC_CANCELLED);
    free(ev);
    assert_int_equal(execs_of(f, "nope", &ev), 0);
    free(ev);
    size_t n = execs_of(f, "f1", &ev);
    assert_int_equal(ev[n - 1]->u.exec.status, EXEC_FILLED);
    free(ev);
    fixture_free(f);
}

struct rejection {
    const char *client_id;
    const char *symbol;
    enum order_side side;
    enum order_type type;
    double qty, price;
    const char *reason;
};

/* Each order is rejected with one report, to instance key 7, naming its
 * reason. */
static void expect_rejected(struct fixture *f, const struct rejection *cases, size_t ncases)
{
    for (size_t i = 0; i < ncases; i++) {
        const struct rejection *c = &cases[i];
        struct order_request r =
            tmarket_order("sim", c->symbol, c->side, c->type, c->qty, c->price, c->client_id);
        tmarket_submit(f->m, &r);
        assert_true(tsink_wait_exec(&f->sink, c->client_id, EXEC_REJECTED, 5000));
        struct event **ev;
        size_t n = execs_of(f, c->client_id, &ev);
        if (n != 1 || !strstr(ev[0]->u.exec.reason, c->reason))
            fail_msg("%s: %zu reports, reason '%s'", c->client_id, n,
                     n ? ev[0]->u.exec.reason : "");
        assert_int_equal(ev[0]->target, 7);
        assert_true(ev[0]->u.exec.order_id[0] != '\0');
        free(ev);
    }
}

static void test_rejections(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN "}");
    const struct rejection cases[] = {
        {"r-symbol", "XRP-USDT", SIDE_BUY, ORDER_MARKET, 1, 0, "unknown symbol"},
        {"r-zero", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 0, 0, "quantity"},
        {"r-neg", "BTC-USDT", SIDE_SELL, ORDER_MARKET, -1, 0, "quantity"},
        {"r-nan", "BTC-USDT", SIDE_BUY, ORDER_MARKET, NAN, 0, "quantity"},
        {"r-inf", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, INFINITY, 100, "quantity"},
        {"r-price0", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 1, 0, "limit price"},
        {"r-priceneg", "BTC-USDT", SIDE_SELL, ORDER_LIMIT, 1, -5, "limit price"},
        {"r-pricenan", "BTC-USDT", SIDE_SELL, ORDER_LIMIT, 1, NAN, "limit price"},
        {"r-buyfunds", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 3, 0, "insufficient balance"},
        {"r-limitfunds", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 1, 200000, "insufficient balance"},
        {"r-sellfunds", "BTC-USDT", SIDE_SELL, ORDER_MARKET, 2, 0, "insufficient balance"},
        /* more than the book holds: priced on the book, and said so */
        {"r-deep", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 1e6, 0, "for the whole visible book"},
    };
    expect_rejected(f, cases, sizeof cases / sizeof cases[0]);
    /* nothing moved */
    assert_true(tnear(tmarket_balance(f->m, "sim", "USDT", NULL), 100000));
    assert_true(tnear(tmarket_balance(f->m, "sim", "BTC", NULL), 1));

    /* a duplicate client id among open orders */
    struct order_request r =
        tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.1, 1000, "dup");
    tmarket_submit(f->m, &r);
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "dup", EXEC_REJECTED, 5000));

    /* errors known at once are returned, not reported */
    struct market_ops ops = market_runtime_ops(f->m);
    char error[128] = "";
    r = tmarket_order("nosuch", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 1, 0, "x");
    assert_int_equal(ops.submit(ops.ctx, &r, error, sizeof error), -1);
    assert_non_null(strstr(error, "unknown provider"));
    fixture_free(f);
}

/* strictIncrements: BTC-USDT starting at 50000 trades in ticks of 0.01
 * and lots of 0.00001; an order off either is rejected, one on both is
 * taken (0.3 and 1000.07 are whole numbers of them though their doubles'
 * quotients are not), and without the setting the same off-tick order rests. */
static void test_strict_increments(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN ", \"strictIncrements\": true}");
    const struct rejection cases[] = {
        {"s-lot", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.000015, 1000,
         "whole number of lots of 1e-05"},
        {"s-lotm", "BTC-USDT", SIDE_SELL, ORDER_MARKET, 0.1234567, 0, "whole number of lots"},
        {"s-tick", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.1, 1000.005,
         "whole number of ticks of 0.01"},
        /* no lot at all, and a millionth of a lot off: a fixed tolerance
         * of a millionth of a step passed both */
        {"s-zero", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 1e-12, 0, "at least one"},
        {"s-zerol", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 1e-12, 1000, "at least one"},
        {"s-near", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.00001000001, 1000,
         "quantity 1.000001e-05 is not a whole number of lots"},
        {"s-tick0", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.1, 0.001, "whole number of ticks"},
    };
    expect_rejected(f, cases, sizeof cases / sizeof cases[0]);
    struct order_request r =
        tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.3, 1000.07, "s-ok");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "s-ok", EXEC_ACKNOWLEDGED, 5000));
    r = tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 0.00123, 0, "s-okm");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "s-okm", EXEC_FILLED, 5000));
    /* whole numbers of lots as an author writes them, from one lot up */
    static const char *const whole[] = {"0.00001", "0.00003", "0.00029",
                                        "0.01001", "0.99999", "2.34567"};
    for (size_t i = 0; i < sizeof whole / sizeof whole[0]; i++) {
        char id[16];
        snprintf(id, sizeof id, "s-w%zu", i);
        r = tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_MARKET, strtod(whole[i], NULL), 0, id);
        r.dry_run = true;
        tmarket_submit(f->m, &r);
        if (!tsink_wait_exec(&f->sink, id, EXEC_FILLED, 5000))
            fail_msg("a market order of %s BTC (a whole number of lots) did not fill", whole[i]);
    }
    fixture_free(f);

    f = fixture_new(FROZEN "}");
    r = tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.000015, 1000.005, "loose");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "loose", EXEC_ACKNOWLEDGED, 5000));
    fixture_free(f);
}

static void test_dry_run_leaves_balances(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN "}");
    size_t balance_events = 0;
    pthread_mutex_lock(&f->sink.lock);
    balance_events = f->sink.counts[EVENT_BALANCE_UPDATE];
    pthread_mutex_unlock(&f->sink.lock);
    assert_int_equal(balance_events, 2); /* BTC and USDT at start */

    /* 1.5 BTC is more than the account holds: dry runs do not check */
    struct order_request r =
        tmarket_order("sim", "BTC-USDT", SIDE_SELL, ORDER_MARKET, 1.5, 0, "dry");
    r.dry_run = true;
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "dry", EXEC_FILLED, 5000));
    struct event **ev;
    size_t n = execs_of(f, "dry", &ev);
    for (size_t i = 0; i < n; i++)
        assert_true(ev[i]->u.exec.dry_run);
    free(ev);
    assert_true(tnear(tmarket_balance(f->m, "sim", "USDT", NULL), 100000));
    assert_true(tnear(tmarket_balance(f->m, "sim", "BTC", NULL), 1));
    pthread_mutex_lock(&f->sink.lock);
    balance_events = f->sink.counts[EVENT_BALANCE_UPDATE];
    pthread_mutex_unlock(&f->sink.lock);
    assert_int_equal(balance_events, 2);
    fixture_free(f);
}

/* A dry-run order sees the book but takes nothing from it: a real order
 * after it fills exactly as if it had not been there. */
static void test_dry_run_leaves_the_book(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN "}");
    struct event *book = tsink_latest(&f->sink, EVENT_BOOK_SNAPSHOT);
    const struct book_level *asks = book->u.book.levels + book->u.book.depth;
    struct order_request r = tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_MARKET,
                                           asks[0].quantity + asks[1].quantity, 0, "dry");
    r.dry_run = true;
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "dry", EXEC_FILLED, 5000));
    r = tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_MARKET, asks[0].quantity, 0, "real");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "real", EXEC_FILLED, 5000));
    struct event **ev;
    assert_int_equal(execs_of(f, "real", &ev), 2);
    assert_true(tnear(ev[1]->u.exec.last_price, asks[0].price));
    assert_true(tnear(ev[1]->u.exec.last_quantity, asks[0].quantity));
    free(ev);
    event_release(book);
    fixture_free(f);
}

static bool two_more_balances(struct tsink *s, const void *arg)
{
    return s->counts[EVENT_BALANCE_UPDATE] >= *(const size_t *)arg;
}

static void test_balance_update_events(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN "}");
    struct order_request r =
        tmarket_order("sim", "BTC-USDT", SIDE_SELL, ORDER_MARKET, 0.01, 0, "s1");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "s1", EXEC_FILLED, 5000));
    size_t want = 4; /* 2 at start, then BTC and USDT once each */
    assert_true(tsink_wait(&f->sink, two_more_balances, &want, 5000));
    pthread_mutex_lock(&f->sink.lock);
    double btc = -1, usdt = -1;
    for (size_t i = 0; i < f->sink.n; i++) {
        struct event *ev = f->sink.events[i];
        if (ev->kind != EVENT_BALANCE_UPDATE)
            continue;
        assert_int_equal(ev->symbol, 0);
        assert_int_equal(ev->target, 0);
        assert_int_equal(ev->provider, intern_id("sim"));
        if (strcmp(ev->u.balance.asset, "BTC") == 0)
            btc = ev->u.balance.total;
        else if (strcmp(ev->u.balance.asset, "USDT") == 0)
            usdt = ev->u.balance.total;
    }
    assert_int_equal(f->sink.counts[EVENT_BALANCE_UPDATE], 4);
    pthread_mutex_unlock(&f->sink.lock);
    assert_true(tnear(btc, 0.99));
    assert_true(usdt > 100000);
    assert_true(tnear(usdt, tmarket_balance(f->m, "sim", "USDT", NULL)));

    /* the balances view: BalanceRecords, newest first */
    struct err err = ERR_INIT;
    json_t *b = market_balances_json(f->m, "sim", NULL, 0, &err);
    assert_non_null(b);
    assert_int_equal(json_integer_value(json_object_get(b, "count")), 2);
    json_t *rec;
    size_t i;
    json_array_foreach(json_object_get(b, "balances"), i, rec)
    {
        const char *keys[] = {"provider",   "asset",     "total",    "available",
                              "snapshotAt", "createdAt", "updatedAt"};
        for (size_t k = 0; k < sizeof keys / sizeof keys[0]; k++)
            assert_non_null(json_object_get(rec, keys[k]));
        assert_true(json_is_string(json_object_get(rec, "total")));
    }
    json_decref(b);
    b = market_balances_json(f->m, "sim", "BTC", 1, &err);
    assert_int_equal(json_integer_value(json_object_get(b, "count")), 1);
    json_decref(b);
    assert_null(market_balances_json(f->m, "zzz", NULL, 0, &err));
    assert_int_equal(err.kind, ERR_NOT_FOUND);
    err_clear(&err);
    fixture_free(f);
}

/* A dry-run buy limit of 0.001 BTC far below the market, for instance `key`. */
static void rest_far_below(struct fixture *f, uint32_t key, const char *id, double price)
{
    struct order_request r =
        tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_LIMIT, 0.001, price, id);
    r.dry_run = true;
    r.instance_key = key;
    tmarket_submit(f->m, &r);
}

/* Dry-run limit orders far from the market reserve nothing and never fill:
 * an instance may keep MARKET_SIM_MAX_RESTING of them resting, the
 * next is rejected saying why, another instance is not held back, and a
 * cancel makes room again. */
static void test_resting_orders_per_instance_are_bounded(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN "}");
    char id[32];
    for (int i = 0; i < MARKET_SIM_MAX_RESTING; i++) {
        snprintf(id, sizeof id, "low-%d", i);
        rest_far_below(f, 7, id, 1 + i % 100);
    }
    assert_true(tsink_wait_exec(&f->sink, id, EXEC_ACKNOWLEDGED, 5000));

    rest_far_below(f, 7, "over", 5);
    assert_true(tsink_wait_exec(&f->sink, "over", EXEC_REJECTED, 5000));
    struct event **ev;
    size_t n = execs_of(f, "over", &ev);
    assert_int_equal(n, 1);
    if (!strstr(ev[0]->u.exec.reason, "too many open orders: 1000 rest on 'sim'"))
        fail_msg("reason: %s", ev[0]->u.exec.reason);
    free(ev);

    rest_far_below(f, 8, "other", 5);
    assert_true(tsink_wait_exec(&f->sink, "other", EXEC_ACKNOWLEDGED, 5000));

    struct market_ops ops = market_runtime_ops(f->m);
    char error[128] = "";
    assert_int_equal(ops.cancel(ops.ctx, 7, intern_id("sim"), "low-0", error, sizeof error), 0);
    assert_true(tsink_wait_exec(&f->sink, "low-0", EXEC_CANCELLED, 5000));
    rest_far_below(f, 7, "again", 5);
    assert_true(tsink_wait_exec(&f->sink, "again", EXEC_ACKNOWLEDGED, 5000));
    fixture_free(f);
}

static void test_stop_expires_resting_orders(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN "}");
    struct order_request r =
        tmarket_order("sim", "BTC-USDT", SIDE_SELL, ORDER_LIMIT, 0.5, 90000, "rest");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "rest", EXEC_ACKNOWLEDGED, 5000));
    double avail;
    tmarket_balance(f->m, "sim", "BTC", &avail);
    assert_true(tnear(avail, 0.5));
    struct err err = ERR_INIT;
    assert_int_equal(market_provider_stop(f->m, "sim", NULL, &err), 0);
    assert_true(tsink_wait_exec(&f->sink, "rest", EXEC_EXPIRED, 1000));
    tmarket_balance(f->m, "sim", "BTC", &avail);
    assert_true(tnear(avail, 1));
    /* a stopped provider refuses orders at once */
    struct market_ops ops = market_runtime_ops(f->m);
    char error[128] = "";
    assert_int_equal(ops.submit(ops.ctx, &r, error, sizeof error), -1);
    assert_non_null(strstr(error, "not running"));
    assert_false(ops.trading_active(ops.ctx, intern_id("sim")));
    fixture_free(f);
}

/* The value of one sample of market_metrics_write()'s output, -1 if absent. */
static double metric_sample(struct market *m, const char *series)
{
    struct strbuf out = STRBUF_INIT;
    market_metrics_write(m, &out);
    assert_false(strbuf_failed(&out));
    size_t len;
    char *text = strbuf_detach(&out, &len);
    assert_non_null(strstr(text, "# TYPE stratd_tick_to_order_seconds histogram"));
    const char *at = strstr(text, series);
    double v = at ? strtod(at + strlen(series), NULL) : -1;
    free(text);
    return v;
}

/* Orders that carry the creation time of the event they reacted to are
 * timed from it to the matching engine; orders without one are not. */
static void test_tick_to_order_histogram(void **state)
{
    (void)state;
    struct fixture *f = fixture_new(FROZEN "}");
    const char *count = "stratd_tick_to_order_seconds_count{provider=\"sim\"} ";
    const char *inf = "stratd_tick_to_order_seconds_bucket{provider=\"sim\",le=\"+Inf\"} ";
    const char *slow = "stratd_tick_to_order_seconds_bucket{provider=\"sim\",le=\"0.1\"} ";
    assert_true(metric_sample(f->m, count) == 0);
    struct order_request r =
        tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 0.0001, 0, "untimed");
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "untimed", EXEC_FILLED, 5000));
    assert_true(metric_sample(f->m, count) == 0);

    r = tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 0.0001, 0, "timed");
    r.trigger_created_ns = clock_mono_ns();
    tmarket_submit(f->m, &r);
    r = tmarket_order("sim", "BTC-USDT", SIDE_SELL, ORDER_MARKET, 0.0001, 0, "old");
    r.trigger_created_ns = clock_mono_ns() - 2000000000LL; /* an event 2 s old */
    tmarket_submit(f->m, &r);
    assert_true(tsink_wait_exec(&f->sink, "old", EXEC_FILLED, 5000));
    assert_true(metric_sample(f->m, count) == 2);
    assert_true(metric_sample(f->m, inf) == 2);
    assert_true(metric_sample(f->m, slow) == 1); /* only the 2 s one is above 100 ms */
    assert_true(metric_sample(f->m, "stratd_tick_to_order_seconds_sum{provider=\"sim\"} ") >= 2);
    fixture_free(f);
}

/* A sink whose publish can be held shut, to keep the provider thread inside
 * a tick (holding the engine) for as long as a test needs. */
struct gate {
    struct tsink sink;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool shut, held; /* held: the provider waits at the gate */
    pthread_t publisher;
    size_t publishers; /* distinct threads seen calling publish */
};

static void gate_publish(void *ctx, struct event *ev)
{
    struct gate *g = ctx;
    pthread_mutex_lock(&g->lock);
    while (g->shut) {
        g->held = true;
        pthread_cond_broadcast(&g->cond);
        pthread_cond_wait(&g->cond, &g->lock);
    }
    g->held = false;
    if (g->publishers == 0 || !pthread_equal(g->publisher, pthread_self())) {
        g->publisher = pthread_self();
        g->publishers++;
    }
    pthread_mutex_unlock(&g->lock);
    tsink_publish(&g->sink, ev);
}

static struct market *gate_market(struct gate *g, const char *config)
{
    *g = (struct gate){.shut = false};
    pthread_mutex_init(&g->lock, NULL);
    pthread_cond_init(&g->cond, NULL);
    tsink_init(&g->sink, EXEC_MASK, 0);
    struct market *m = market_new((struct event_sink){g, gate_publish, NULL, NULL}, NULL);
    assert_non_null(m);
    tmarket_create(m, "sim", config, true);
    assert_true(tmarket_wait_running(m, "sim", 5000));
    assert_true(tsink_wait_kind(&g->sink, EVENT_BOOK_SNAPSHOT, 1, 5000));
    return m;
}

static void gate_free(struct gate *g, struct market *m)
{
    market_free(m);
    tsink_destroy(&g->sink);
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->lock);
}

static void gate_set(struct gate *g, bool shut)
{
    pthread_mutex_lock(&g->lock);
    g->shut = shut;
    pthread_cond_broadcast(&g->cond);
    while (shut && !g->held)
        pthread_cond_wait(&g->cond, &g->lock);
    pthread_mutex_unlock(&g->lock);
}

/* Orders that arrive while the engine is busy wait in the queue, and every
 * order is handled in the order it was submitted, whichever thread (the
 * provider's, or a later submitter that finds the engine free) runs it. */
static void test_busy_engine_queues_in_order(void **state)
{
    (void)state;
    struct gate g;
    struct market *m = gate_market(&g, "{\"symbols\": [\"BTC-USDT\"], \"tickRate\": 200}");
    double btc = tmarket_balance(m, "sim", "BTC", NULL);

    gate_set(&g, true); /* the provider now waits inside a tick */
    const char *ids[] = {"q-0", "q-1", "q-2", "q-3"};
    for (int i = 0; i < 4; i++) {
        struct order_request r = tmarket_order("sim", "BTC-USDT", i % 2 ? SIDE_SELL : SIDE_BUY,
                                               ORDER_MARKET, 0.0001 * (i + 1), 0, ids[i]);
        tmarket_submit(m, &r);
    }
    assert_true(tnear(tmarket_balance(m, "sim", "BTC", NULL), btc)); /* all queued */
    gate_set(&g, false);
    struct order_request later =
        tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 0.0005, 0, "q-4");
    tmarket_submit(m, &later);
    assert_true(tsink_wait_exec(&g.sink, "q-4", EXEC_FILLED, 5000));

    uint64_t last_seq = 0;
    for (int i = 0; i < 5; i++) {
        char id[8];
        snprintf(id, sizeof id, "q-%d", i);
        assert_true(tsink_wait_exec(&g.sink, id, EXEC_FILLED, 5000));
        struct event **ev;
        size_t n = tsink_execs(&g.sink, id, &ev);
        assert_true(n >= 2);
        assert_int_equal(ev[0]->u.exec.status, EXEC_ACKNOWLEDGED);
        assert_true(ev[0]->seq > last_seq); /* acknowledged after the order before it */
        last_seq = ev[n - 1]->seq;
        free(ev);
    }
    /* buys 1 + 3 + 5, sells 2 + 4 (x 0.0001) */
    assert_true(tnear(tmarket_balance(m, "sim", "BTC", NULL), btc + 0.0003));
    gate_free(&g, m);
}

/* While the provider thread sleeps between ticks the submitting thread may
 * match its order itself, but the sink still hears every event from the
 * provider thread alone (the runtime's router relies on it), reports in
 * order, and the account agrees with them once the fill is reported. */
static void test_sink_hears_only_the_provider_thread(void **state)
{
    (void)state;
    struct gate g;
    struct market *m = gate_market(&g, FROZEN "}");
    double btc = tmarket_balance(m, "sim", "BTC", NULL);
    for (int i = 0; i < 5; i++) {
        char id[16];
        snprintf(id, sizeof id, "idle-%d", i);
        usleep(5000);
        struct order_request r = tmarket_order("sim", "BTC-USDT", i % 2 ? SIDE_SELL : SIDE_BUY,
                                               ORDER_MARKET, 0.0001, 0, id);
        tmarket_submit(m, &r);
        assert_true(tsink_wait_exec(&g.sink, id, EXEC_FILLED, 5000));
        struct event **ev;
        size_t n = tsink_execs(&g.sink, id, &ev);
        assert_int_equal(n, 2);
        assert_int_equal(ev[0]->u.exec.status, EXEC_ACKNOWLEDGED);
        assert_true(ev[0]->seq < ev[1]->seq);
        free(ev);
        btc += i % 2 ? -0.0001 : 0.0001;
        assert_true(tnear(tmarket_balance(m, "sim", "BTC", NULL), btc));
    }
    pthread_mutex_lock(&g.lock);
    assert_int_equal(g.publishers, 1);
    assert_false(pthread_equal(g.publisher, pthread_self()));
    pthread_mutex_unlock(&g.lock);
    gate_free(&g, m);
}

/* A sink that asks the market, on the first trade it hears, whether
 * trading is active: what a strategy handling that trade is told. */
struct first_trade {
    struct tsink sink;
    struct market *m;
    atomic_int answer; /* 0 no trade yet, 1 active, 2 not active */
};

static void first_trade_publish(void *ctx, struct event *ev)
{
    struct first_trade *ft = ctx;
    if (ev->kind == EVENT_TRADE && atomic_load(&ft->answer) == 0) {
        struct market_ops ops = market_runtime_ops(ft->m);
        atomic_store(&ft->answer, ops.trading_active(ops.ctx, intern_id("sim")) ? 1 : 2);
    }
    tsink_publish(&ft->sink, ev);
}

/* The market is active for the handlers of its very first trade (they may
 * quote and order on it), before that first tick has ended. */
static void test_active_from_the_first_trade(void **state)
{
    (void)state;
    struct first_trade ft = {.answer = 0};
    tsink_init(&ft.sink, 0, 0);
    ft.m = market_new((struct event_sink){&ft, first_trade_publish, NULL, NULL}, NULL);
    assert_non_null(ft.m);
    tmarket_create(ft.m, "sim", FROZEN "}", true);
    assert_true(tsink_wait_kind(&ft.sink, EVENT_TRADE, 1, 5000));
    assert_int_equal(atomic_load(&ft.answer), 1);
    market_free(ft.m);
    tsink_destroy(&ft.sink);
}

static void test_orders_from_many_threads(void **state);
static void test_forget_while_others_order(void **state);

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_market_buy_partial_fills_across_levels),
        cmocka_unit_test(test_market_order_beyond_depth_expires),
        cmocka_unit_test(test_limit_order_rests_then_fills_on_cross),
        cmocka_unit_test(test_marketable_limit_takes_book),
        cmocka_unit_test(test_cancel),
        cmocka_unit_test(test_rejections),
        cmocka_unit_test(test_strict_increments),
        cmocka_unit_test(test_dry_run_leaves_balances),
        cmocka_unit_test(test_dry_run_leaves_the_book),
        cmocka_unit_test(test_balance_update_events),
        cmocka_unit_test(test_stop_expires_resting_orders),
        cmocka_unit_test(test_resting_orders_per_instance_are_bounded),
        cmocka_unit_test(test_orders_from_many_threads),
        cmocka_unit_test(test_tick_to_order_histogram),
        cmocka_unit_test(test_sink_hears_only_the_provider_thread),
        cmocka_unit_test(test_active_from_the_first_trade),
        cmocka_unit_test(test_busy_engine_queues_in_order),
        cmocka_unit_test(test_forget_while_others_order),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* Submitters on several threads at once: every order gets its reports, and
 * the account ends consistent with the fills. */
struct submitter {
    struct market *m;
    int index;
};

static void *submit_many(void *arg)
{
    struct submitter *s = arg;
    for (int i = 0; i < 50; i++) {
        char id[32];
        snprintf(id, sizeof id, "t%d-%d", s->index, i);
        struct order_request r = tmarket_order("sim", "BTC-USDT", i % 2 ? SIDE_SELL : SIDE_BUY,
                                               ORDER_MARKET, 0.0001, 0, id);
        tmarket_submit(s->m, &r);
    }
    return NULL;
}

static bool all_done(struct tsink *s, const void *arg)
{
    size_t finals = 0;
    for (size_t i = 0; i < s->n; i++) {
        struct event *ev = s->events[i];
        finals += ev->kind == EVENT_EXEC_REPORT &&
                  (ev->u.exec.status == EXEC_FILLED || ev->u.exec.status == EXEC_EXPIRED ||
                   ev->u.exec.status == EXEC_REJECTED);
    }
    return finals >= *(const size_t *)arg;
}

static void test_orders_from_many_threads(void **state)
{
    (void)state;
    struct fixture *f = fixture_new("{\"symbols\": [\"BTC-USDT\"], \"tickRate\": 500}");
    pthread_t t[4];
    struct submitter sub[4];
    for (int i = 0; i < 4; i++) {
        sub[i] = (struct submitter){f->m, i};
        assert_int_equal(pthread_create(&t[i], NULL, submit_many, &sub[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    size_t want = 200;
    assert_true(tsink_wait(&f->sink, all_done, &want, 10000));
    double avail, total = tmarket_balance(f->m, "sim", "BTC", &avail);
    assert_true(tnear(avail, total));
    assert_true(fabs(total - 1) < 1e-9); /* as many buys as sells of 0.0001 */
    fixture_free(f);
}

/* Forgetting deleted instances while others order from other threads: each
 * forgotten instance's resting order is cancelled by the time forget
 * returns, and what the risk checks kept for it is freed (the others'
 * entries stay), with the order paths and the engine reading the same
 * chains meanwhile. */
static atomic_bool forgetting;

static void *submit_long(void *arg)
{
    struct submitter *s = arg;
    for (int i = 0; i < 100 || (atomic_load(&forgetting) && i < 4000); i++) {
        char id[32];
        snprintf(id, sizeof id, "k%d-%d", s->index, i);
        struct order_request r = tmarket_order("sim", "BTC-USDT", i % 2 ? SIDE_SELL : SIDE_BUY,
                                               ORDER_MARKET, 0.0001, 0, id);
        r.instance_key = (uint32_t)s->index;
        r.dry_run = true;
        tmarket_submit(s->m, &r);
        usleep(50); /* keeps the sink's record small while the forgets run */
    }
    return NULL;
}

static void test_forget_while_others_order(void **state)
{
    (void)state;
    struct fixture *f = fixture_new("{\"symbols\": [\"BTC-USDT\"], \"tickRate\": 500}");
    struct market_ops ops = market_runtime_ops(f->m);
    pthread_t t[2];
    struct submitter sub[2];
    atomic_store(&forgetting, true);
    for (int i = 0; i < 2; i++) {
        sub[i] = (struct submitter){f->m, i + 1};
        assert_int_equal(pthread_create(&t[i], NULL, submit_long, &sub[i]), 0);
    }
    char id[32];
    for (uint32_t key = 100; key < 160; key++) {
        snprintf(id, sizeof id, "far-%u", key);
        rest_far_below(f, key, id, 5);
        struct order_request r =
            tmarket_order("sim", "BTC-USDT", SIDE_BUY, ORDER_MARKET, 0.0001, 0, "fill");
        r.instance_key = key;
        r.dry_run = true;
        tmarket_submit(f->m, &r);
        ops.forget(ops.ctx, key, id);
        assert_true(tsink_wait_exec(&f->sink, id, EXEC_CANCELLED, 5000));
    }
    atomic_store(&forgetting, false);
    for (int i = 0; i < 2; i++)
        pthread_join(t[i], NULL);
    struct event **ev;
    size_t n = execs_of(f, "far-100", &ev);
    assert_string_equal(ev[n - 1]->u.exec.reason, "the instance was deleted");
    free(ev);
    assert_true(metric_sample(f->m, "stratd_risk_entries{table=\"instances\"} ") == 2);
    assert_true(metric_sample(f->m, "stratd_risk_entries{table=\"positions\"} ") == 2);
    fixture_free(f);
}
