/*
 * The simulated market's event stream: determinism per seed, the cadence of
 * event kinds, pacing, back-pressure without loss, quotes, prompt stops.
 * Timing assertions are deliberately loose.
 */
#include "testsink.h"

#include "market/sim.h"

/* Runs a provider until the sink holds `n` events, then stops it. */
static void record_into(struct tsink *sink, struct event_sink to, const char *config, size_t n)
{
    tsink_init(sink, 0, n);
    struct market *m = market_new(to, NULL);
    assert_non_null(m);
    tmarket_create(m, "feed", config, true);
    assert_true(tsink_wait_n(sink, n, 30000));
    tsink_release(sink);
    market_free(m);
}

static void record_run(struct tsink *sink, const char *config, size_t n)
{
    record_into(sink, tsink_sink(sink), config, n);
}

/* Everything but the clocks. */
static bool same_event(const struct event *a, const struct event *b)
{
    if (a->kind != b->kind || a->symbol != b->symbol || a->seq != b->seq ||
        a->provider != b->provider || a->target != b->target)
        return false;
    switch (a->kind) {
    case EVENT_TRADE:
        return a->u.trade.price == b->u.trade.price && a->u.trade.quantity == b->u.trade.quantity &&
               a->u.trade.side == b->u.trade.side && a->u.trade.trade_id == b->u.trade.trade_id;
    case EVENT_TICKER:
        return memcmp(&a->u.ticker, &b->u.ticker, sizeof a->u.ticker) == 0;
    case EVENT_BOOK_SNAPSHOT:
        return a->u.book.depth == b->u.book.depth &&
               memcmp(a->u.book.levels, b->u.book.levels,
                      2 * a->u.book.depth * sizeof(struct book_level)) == 0;
    case EVENT_KLINE_SUMMARY:
        return a->u.kline.open == b->u.kline.open && a->u.kline.high == b->u.kline.high &&
               a->u.kline.low == b->u.kline.low && a->u.kline.close == b->u.kline.close &&
               a->u.kline.volume == b->u.kline.volume && a->u.kline.trades == b->u.kline.trades;
    case EVENT_BALANCE_UPDATE:
        return strcmp(a->u.balance.asset, b->u.balance.asset) == 0 &&
               a->u.balance.total == b->u.balance.total;
    default:
        return true;
    }
}

#define SEEDED(seed) "{\"tickRate\": 0, \"seed\": " #seed ", \"volatility\": 0.01}"

static void test_same_seed_same_sequence(void **state)
{
    (void)state;
    struct tsink a, b;
    record_run(&a, SEEDED(42), 2000);
    record_run(&b, SEEDED(42), 2000);
    for (size_t i = 0; i < 2000; i++) {
        if (!same_event(a.events[i], b.events[i]))
            fail_msg("runs differ at event %zu (%s vs %s)", i, event_kind_name(a.events[i]->kind),
                     event_kind_name(b.events[i]->kind));
    }
    tsink_destroy(&a);
    tsink_destroy(&b);
}

/* A sink that wants only trades, and those only in every other stretch of
 * its answers, gets trades equal to those a sink wanting everything gets
 * under the same sequence numbers: the events nobody wants are not built,
 * but take their sequence numbers and trade ids. */
static void test_unwanted_events_not_built(void **state)
{
    (void)state;
    enum { N = 300, ALL = 2400 };
    struct tsink all, only;
    record_run(&all, SEEDED(42), ALL);
    tsink_init(&only, 1u << EVENT_TRADE, N);
    only.wants_period = 40;
    struct market *m = market_new(tsink_sink_wanting(&only, 1u << EVENT_TRADE), NULL);
    assert_non_null(m);
    tmarket_create(m, "feed", SEEDED(42), true);
    assert_true(tsink_wait_n(&only, N, 30000));
    tsink_release(&only);
    market_free(m);
    size_t k = 0, skipped = 0;
    for (size_t t = 0; t < N; t++) {
        const struct event *got = only.events[t];
        while (k < all.n && all.events[k]->seq < got->seq)
            skipped += all.events[k++]->kind == EVENT_TRADE;
        if (k == all.n || !same_event(all.events[k], got))
            fail_msg("trade %zu (seq %llu) is not the trade of the full stream", t,
                     (unsigned long long)got->seq);
        k++;
    }
    assert_true(skipped > 0); /* trades went unwanted in between */
    assert_int_equal(only.counts[EVENT_TICKER], 0);
    assert_int_equal(only.counts[EVENT_BOOK_SNAPSHOT], 0);
    assert_int_equal(only.counts[EVENT_KLINE_SUMMARY], 0);
    tsink_destroy(&all);
    tsink_destroy(&only);
}

/* Unpaced, the provider hands its events over in runs (several ticks to a
 * run): a sink taking them so gets the same stream, event for event, as
 * one taking them one at a time, and every run is within the bound. */
static void test_runs_carry_the_same_stream(void **state)
{
    (void)state;
    enum { N = 3000 };
    const char *config = "{\"tickRate\": 0, \"seed\": 42, \"volatility\": 0.01, "
                         "\"symbols\": [\"BTC-USDT\", \"ETH-USDT\"]}";
    struct tsink one, runs;
    record_run(&one, config, N);
    record_into(&runs, tsink_sink_in_runs(&runs), config, N);
    for (size_t i = 0; i < N; i++) {
        if (!same_event(one.events[i], runs.events[i]))
            fail_msg("the streams differ at event %zu (%s vs %s)", i,
                     event_kind_name(one.events[i]->kind), event_kind_name(runs.events[i]->kind));
    }
    assert_true(runs.runs > 0);
    assert_true(runs.run_max > 1);
    assert_true(runs.run_max <= SIM_RUN_MAX);
    tsink_destroy(&one);
    tsink_destroy(&runs);
}

/* A tick reserves its book's size draws and makes them only when the book
 * is looked at: skipping n draws must leave the stream where n draws
 * would, and the reserved ones must be the values those draws gave. */
static void test_reserved_draws_are_the_skipped_ones(void **state)
{
    (void)state;
    enum { RESERVED = 20 };
    struct sim_rng drawn, skipped;
    sim_rng_seed(&drawn, 42);
    sim_rng_seed(&skipped, 42);
    (void)sim_rng_next(&drawn); /* not from the seed's own start */
    (void)sim_rng_next(&skipped);
    uint64_t from = skipped.state;
    sim_rng_skip(&skipped, RESERVED);
    for (uint64_t i = 0; i < RESERVED; i++) {
        double u = sim_rng_uniform(&drawn);
        assert_true(u >= 0.0 && u < 1.0);
        assert_true(u == sim_rng_uniform_at(from, i));
    }
    assert_true(drawn.state == skipped.state);
    assert_true(sim_rng_next(&drawn) == sim_rng_next(&skipped));
}

/* The price walk's normals come in pairs (one kept for the next call):
 * both halves must be standard normal and independent of each other. */
static void test_normals_are_standard_and_independent(void **state)
{
    (void)state;
    enum { N = 200000 };
    struct sim_rng r;
    sim_rng_seed(&r, 7);
    double sum = 0, squares = 0, lagged = 0, previous = 0;
    size_t tails = 0;
    for (int i = 0; i < N; i++) {
        double x = sim_rng_normal(&r);
        sum += x;
        squares += x * x;
        lagged += x * previous;
        tails += fabs(x) > 2.0;
        previous = x;
    }
    double mean = sum / N, variance = squares / N - mean * mean;
    /* bounds at about five standard errors of each estimate */
    if (fabs(mean) > 0.012 || fabs(variance - 1.0) > 0.016 || fabs(lagged / N) > 0.012)
        fail_msg("mean %.4f, variance %.4f, lag-1 correlation %.4f", mean, variance, lagged / N);
    double tail_share = (double)tails / N; /* 4.55% beyond two deviations */
    if (fabs(tail_share - 0.0455) > 0.0025)
        fail_msg("%.4f of the normals beyond 2, not 0.0455", tail_share);
}

static void test_different_seeds_differ(void **state)
{
    (void)state;
    struct tsink a, b;
    record_run(&a, SEEDED(42), 500);
    record_run(&b, SEEDED(43), 500);
    size_t differing = 0;
    for (size_t i = 0; i < 500; i++)
        differing += a.events[i]->kind == EVENT_TRADE && !same_event(a.events[i], b.events[i]);
    assert_true(differing > 50);
    tsink_destroy(&a);
    tsink_destroy(&b);
}

/* Per symbol: Trade, Ticker each tick; BookSnapshot on ticks 0, 5, ...;
 * KlineSummary after ticks 49, 99, ...; an InstrumentUpdate per symbol and
 * a BalanceUpdate per asset first. */
static void test_cadence(void **state)
{
    (void)state;
    struct tsink s;
    record_run(&s, "{\"tickRate\": 0, \"symbols\": [\"BTC-USDT\", \"ETH-USDT\"]}", 3000);
    assert_int_equal(s.events[0]->kind, EVENT_INSTRUMENT_UPDATE);
    assert_int_equal(s.events[1]->kind, EVENT_INSTRUMENT_UPDATE);
    for (size_t i = 2; i < 5; i++)
        assert_int_equal(s.events[i]->kind, EVENT_BALANCE_UPDATE);
    uint16_t btc = intern_id("BTC-USDT"), eth = intern_id("ETH-USDT");
    size_t trades[2] = {0, 0}, i = 5;
    while (i + 4 < s.n) {
        const struct event *t = s.events[i];
        assert_int_equal(t->kind, EVENT_TRADE);
        int k = t->symbol == btc ? 0 : 1;
        assert_int_equal(t->symbol, k ? eth : btc);
        size_t tick = trades[k]++;
        assert_int_equal(s.events[++i]->kind, EVENT_TICKER);
        if (tick % 5 == 0)
            assert_int_equal(s.events[++i]->kind, EVENT_BOOK_SNAPSHOT);
        if ((tick + 1) % 50 == 0) {
            const struct event *kl = s.events[++i];
            assert_int_equal(kl->kind, EVENT_KLINE_SUMMARY);
            assert_int_equal(kl->u.kline.trades, 50);
            assert_true(kl->u.kline.low <= kl->u.kline.high);
        }
        i++;
    }
    assert_true(trades[0] > 100 && trades[1] > 100);
    const struct event *book = NULL;
    for (size_t j = 0; j < s.n && !book; j++)
        book = s.events[j]->kind == EVENT_BOOK_SNAPSHOT ? s.events[j] : NULL;
    assert_int_equal(book->u.book.depth, 10);
    const struct book_level *lv = book->u.book.levels;
    for (uint32_t j = 1; j < 10; j++) {
        assert_true(lv[j].price < lv[j - 1].price);           /* bids descend */
        assert_true(lv[10 + j].price > lv[10 + j - 1].price); /* asks ascend */
    }
    assert_true(lv[0].price < lv[10].price);
    tsink_destroy(&s);
}

/* A slow consumer on an unpaced market: publish blocks, nothing is lost. */
static void test_unpaced_slow_sink_loses_nothing(void **state)
{
    (void)state;
    struct tsink s;
    tsink_init(&s, 0, 1500);
    s.delay_us = 200;
    struct market *m = market_new(tsink_sink(&s), NULL);
    tmarket_create(m, "slow", "{\"tickRate\": 0}", true);
    assert_true(tsink_wait_n(&s, 1500, 30000));
    tsink_release(&s);
    market_free(m);
    for (size_t i = 0; i < s.n; i++) {
        assert_int_equal(s.events[i]->seq, i + 1);
        assert_int_equal(s.events[i]->provider, intern_id("slow"));
        assert_true(s.events[i]->created_ns > 0 && s.events[i]->ts_ms > 0);
    }
    tsink_destroy(&s);
}

static void test_tick_rate_paces(void **state)
{
    (void)state;
    struct tsink s;
    tsink_init(&s, 1u << EVENT_TRADE, 0);
    struct market *m = market_new(tsink_sink(&s), NULL);
    tmarket_create(m, "paced", "{\"tickRate\": 50, \"symbols\": [\"BTC-USDT\"]}", true);
    /* Ticks are due on an absolute schedule, so a thread that started late
     * catches up in a burst: count from the fifth trade, over a second, so
     * that neither a late start nor a busy machine moves the rate out of
     * the bounds. */
    assert_true(tsink_wait_kind(&s, EVENT_TRADE, 5, 5000));
    int64_t t0 = clock_mono_ns();
    pthread_mutex_lock(&s.lock);
    size_t c0 = s.counts[EVENT_TRADE];
    pthread_mutex_unlock(&s.lock);
    usleep(1000000);
    pthread_mutex_lock(&s.lock);
    size_t c1 = s.counts[EVENT_TRADE];
    pthread_mutex_unlock(&s.lock);
    double secs = (double)(clock_mono_ns() - t0) / 1e9;
    market_free(m);
    double rate = (double)(c1 - c0) / secs;
    if (rate < 15 || rate > 80)
        fail_msg("%.1f ticks/s at tickRate 50", rate);
    tsink_destroy(&s);
}

static void test_stop_is_prompt(void **state)
{
    (void)state;
    struct tsink s;
    tsink_init(&s, 1u << EVENT_EXEC_REPORT, 0); /* count, keep nothing */
    struct market *m = market_new(tsink_sink(&s), NULL);
    /* one tick per 100 s: a stop must not wait for the next one */
    tmarket_create(m, "sleepy", "{\"tickRate\": 0.01}", true);
    assert_true(tmarket_wait_running(m, "sleepy", 5000));
    int64_t t0 = clock_mono_ns();
    struct err err = ERR_INIT;
    assert_int_equal(market_provider_stop(m, "sleepy", NULL, &err), 0);
    assert_true(clock_mono_ns() - t0 < 2000000000LL);
    /* and an unpaced one */
    tmarket_create(m, "busy", "{\"tickRate\": 0}", true);
    assert_true(tmarket_wait_running(m, "busy", 5000));
    t0 = clock_mono_ns();
    assert_int_equal(market_provider_stop(m, "busy", NULL, &err), 0);
    assert_true(clock_mono_ns() - t0 < 2000000000LL);
    market_free(m);
    tsink_destroy(&s);
}

static void test_quotes_and_trading_active(void **state)
{
    (void)state;
    struct tsink s;
    tsink_init(&s, 1u << EVENT_INSTRUMENT_UPDATE, 0);
    struct market *m = market_new(tsink_sink(&s), NULL);
    struct market_ops ops = market_runtime_ops(m);
    struct market_quote q;
    tmarket_create(m, "q", "{\"tickRate\": 1000}", false);
    assert_false(ops.trading_active(ops.ctx, intern_id("q")));
    assert_false(ops.quote(ops.ctx, intern_id("q"), intern_id("BTC-USDT"), &q));
    assert_false(q.valid);
    struct err err = ERR_INIT;
    assert_int_equal(market_provider_start(m, "q", NULL, &err), 0);
    assert_true(tmarket_wait_running(m, "q", 5000));
    assert_true(tsink_wait_kind(&s, EVENT_TICKER, 1, 5000));
    for (int i = 0; i < 200; i++) {
        assert_true(ops.quote(ops.ctx, intern_id("q"), intern_id("ETH-USDT"), &q));
        assert_true(q.valid);
        assert_true(q.bid > 0 && q.bid < q.ask);
        assert_true(q.last == q.bid || q.last == q.ask);
        assert_true(q.bid > 1000 && q.ask < 10000); /* ETH starts at 3000 */
    }
    assert_false(ops.quote(ops.ctx, intern_id("q"), intern_id("XRP-USDT"), &q));
    assert_int_equal(market_provider_stop(m, "q", NULL, &err), 0);
    assert_false(ops.trading_active(ops.ctx, intern_id("q")));
    /* the stop says trading stopped */
    struct event *ev = tsink_latest(&s, EVENT_INSTRUMENT_UPDATE);
    assert_false(ev->u.instrument.trading);
    assert_true(ev->u.instrument.tick_size > 0 && ev->u.instrument.lot_size > 0);
    event_release(ev);
    market_free(m);
    tsink_destroy(&s);
}

/* The recorded InstrumentUpdates from `from` on: each symbol and payload. */
static size_t recorded_instruments(struct tsink *s, size_t from, uint16_t *symbols,
                                   struct event_instrument *out, size_t cap)
{
    size_t n = 0;
    pthread_mutex_lock(&s->lock);
    for (size_t i = from; i < s->n && n < cap; i++, n++) {
        symbols[n] = s->events[i]->symbol;
        out[n] = s->events[i]->u.instrument;
    }
    pthread_mutex_unlock(&s->lock);
    return n;
}

static void expect_read(struct market_ops *ops, uint16_t provider, uint16_t symbol,
                        const struct event_instrument *announced)
{
    struct event_instrument in;
    assert_true(ops->instrument(ops->ctx, provider, symbol, &in));
    assert_true(in.tick_size == announced->tick_size);
    assert_true(in.lot_size == announced->lot_size);
    assert_true(in.min_quantity == announced->min_quantity);
    assert_true(in.trading == announced->trading);
}

/* What the runtime reads of a provider's instruments: nothing before its
 * first start, what each symbol's InstrumentUpdate said while it runs, the
 * same sizes with trading false once it stops (as its last InstrumentUpdate
 * said), nothing for a symbol it does not carry or once it is deleted. The
 * reads take no event: the announcements stay two a session. */
static void test_instrument_reads(void **state)
{
    (void)state;
    struct tsink s;
    tsink_init(&s, 1u << EVENT_INSTRUMENT_UPDATE, 0);
    struct market *m = market_new(tsink_sink(&s), NULL);
    struct market_ops ops = market_runtime_ops(m);
    uint16_t id = intern_id("inst");
    uint16_t btc = intern_id("BTC-USDT");
    struct event_instrument in;
    tmarket_create(m, "inst", "{\"tickRate\": 1000, \"startPrices\": {\"ETH-USDT\": 2.5}}", false);
    assert_false(ops.instrument(ops.ctx, id, btc, &in));
    assert_false(in.trading);
    struct err err = ERR_INIT;
    assert_int_equal(market_provider_start(m, "inst", NULL, &err), 0);
    assert_true(tmarket_wait_running(m, "inst", 5000));
    assert_true(tsink_wait_kind(&s, EVENT_INSTRUMENT_UPDATE, 2, 5000));
    uint16_t symbols[4];
    struct event_instrument announced[4];
    assert_int_equal(recorded_instruments(&s, 0, symbols, announced, 4), 2);
    assert_true(announced[0].tick_size != announced[1].tick_size);
    for (size_t i = 0; i < 2; i++) {
        assert_true(announced[i].trading);
        for (int k = 0; k < 100; k++)
            expect_read(&ops, id, symbols[i], &announced[i]);
    }
    assert_false(ops.instrument(ops.ctx, id, intern_id("XRP-USDT"), &in));
    assert_false(ops.instrument(ops.ctx, intern_id("nowhere"), btc, &in));
    assert_int_equal(market_provider_stop(m, "inst", NULL, &err), 0);
    assert_int_equal(recorded_instruments(&s, 2, symbols, announced, 4), 2);
    for (size_t i = 0; i < 2; i++) {
        assert_false(announced[i].trading);
        expect_read(&ops, id, symbols[i], &announced[i]);
    }
    assert_int_equal(market_provider_delete(m, "inst", &err), 0);
    assert_false(ops.instrument(ops.ctx, id, btc, &in));
    /* a provider made again under the name has announced nothing yet */
    tmarket_create(m, "inst", "{}", false);
    assert_false(ops.instrument(ops.ctx, id, btc, &in));
    market_free(m);
    tsink_destroy(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_same_seed_same_sequence),
        cmocka_unit_test(test_unwanted_events_not_built),
        cmocka_unit_test(test_runs_carry_the_same_stream),
        cmocka_unit_test(test_different_seeds_differ),
        cmocka_unit_test(test_reserved_draws_are_the_skipped_ones),
        cmocka_unit_test(test_normals_are_standard_and_independent),
        cmocka_unit_test(test_cadence),
        cmocka_unit_test(test_unpaced_slow_sink_loses_nothing),
        cmocka_unit_test(test_tick_rate_paces),
        cmocka_unit_test(test_stop_is_prompt),
        cmocka_unit_test(test_quotes_and_trading_active),
        cmocka_unit_test(test_instrument_reads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
