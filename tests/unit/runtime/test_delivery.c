/*
 * Event delivery: payload shapes for every kind, publication order, missing
 * handlers, subscribedEvents(), orders through the market, execution
 * reports routed to their instance, the host helpers, logging limits and
 * the sandbox's isolation.
 */
#include "rtfixture.h"

#include "core/strbuf.h"

#include <math.h>

#define ALL_EVENTS                                                                                 \
    "['Trade', 'Ticker', 'BookSnapshot', 'ExecReport', 'KlineSummary', 'InstrumentUpdate',"        \
    " 'BalanceUpdate', 'RiskControl', 'Extension']"

static const char *const RECORDER =
    "    let lastCtx = null;\n"
    "    const rec = (h) => function (ctx, evt, p) {\n"
    "      env.helpers.log('evt', { h, same: ctx === lastCtx, ctx, evt, p });\n"
    "      lastCtx = ctx;\n"
    "    };\n"
    "    const handlers = {};\n"
    "    for (const h of ['onTrade', 'onTicker', 'onBookSnapshot', 'onKlineSummary',\n"
    "        'onInstrumentUpdate', 'onBalanceUpdate', 'onOrderAcknowledged',\n"
    "        'onOrderPartialFill', 'onOrderFilled', 'onOrderCancelled', 'onOrderRejected',\n"
    "        'onOrderExpired', 'onRiskControl', 'onExtensionEvent'])\n"
    "      handlers[h] = rec(h);\n"
    "    return handlers;";

/* The JSON after "evt " in the n-th "evt" line of an instance. */
static json_t *evt_line(struct fx *f, const char *id, size_t n)
{
    json_t *logs = fx_logs(f, id, "evt ");
    const char *msg = json_string_value(json_object_get(json_array_get(logs, n), "msg"));
    if (!msg)
        fail_msg("no evt line %zu for %s", n, id);
    json_t *doc = json_loads(msg + 4, 0, NULL);
    json_decref(logs);
    assert_non_null(doc);
    return doc;
}

static double jnum(const json_t *root, const char *path)
{
    return json_number_value(tu_jget(root, path));
}

static void publish_all_kinds(struct fx *f)
{
    fx_trade(f, "sim", "BTC-USDT", 101.5, 0.25);
    struct event *ev = fx_event(f, EVENT_TICKER, "sim", "BTC-USDT", 0);
    ev->u.ticker = (struct event_ticker){100.5, 100.25, 100.75, 3, 4, 12345};
    runtime_publish(f->rt, ev);
    ev = fx_event(f, EVENT_BOOK_SNAPSHOT, "sim", "BTC-USDT", 4 * sizeof(struct book_level));
    ev->u.book.depth = 2;
    ev->u.book.levels[0] = (struct book_level){100, 1};
    ev->u.book.levels[1] = (struct book_level){99, 2};
    ev->u.book.levels[2] = (struct book_level){101, 3};
    ev->u.book.levels[3] = (struct book_level){102, 4};
    runtime_publish(f->rt, ev);
    ev = fx_event(f, EVENT_KLINE_SUMMARY, "sim", "BTC-USDT", 0);
    ev->u.kline = (struct event_kline){1000, 2000, 1, 4, 0.5, 2, 77, 9};
    runtime_publish(f->rt, ev);
    ev = fx_event(f, EVENT_BALANCE_UPDATE, "sim", NULL, 0);
    snprintf(ev->u.balance.asset, sizeof ev->u.balance.asset, "USDT");
    ev->u.balance.total = 1000;
    ev->u.balance.available = 750;
    runtime_publish(f->rt, ev);
    ev = fx_event(f, EVENT_INSTRUMENT_UPDATE, "sim", "BTC-USDT", 0);
    ev->u.instrument = (struct event_instrument){0.01, 0.001, 0.002, true};
    runtime_publish(f->rt, ev);
    ev = fx_event(f, EVENT_RISK_CONTROL, "sim", NULL, 0);
    snprintf(ev->u.risk.reason, sizeof ev->u.risk.reason, "daily loss limit");
    runtime_publish(f->rt, ev);
    ev = fx_event(f, EVENT_EXTENSION, "sim", "BTC-USDT", 0);
    runtime_publish(f->rt, ev);
    /* out of scope: another symbol, another provider */
    fx_trade(f, "sim", "ETH-USDT", 1, 1);
    fx_trade(f, "alt", "BTC-USDT", 1, 1);
}

static void test_payloads(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "rec", ALL_EVENTS, NULL, RECORDER, hex);
    fx_run(&f, "p1", "rec", NULL, NULL);
    publish_all_kinds(&f);
    assert_true(fx_wait_logs(&f, "p1", "evt ", 8, 3000));
    fx_sleep_ms(50);
    json_t *logs = fx_logs(&f, "p1", "evt ");
    assert_int_equal(json_array_size(logs), 8);
    json_decref(logs);
    char *hash = tu_path("sha256:%s", hex);

    json_t *d = evt_line(&f, "p1", 0);
    assert_string_equal(tu_jstr(d, "h"), "onTrade");
    assert_string_equal(tu_jstr(d, "ctx.instanceId"), "p1");
    assert_string_equal(tu_jstr(d, "ctx.strategy"), "rec");
    assert_string_equal(tu_jstr(d, "ctx.hash"), hash);
    assert_string_equal(tu_jstr(d, "ctx.provider"), "sim");
    assert_string_equal(tu_jstr(d, "ctx.symbol"), "BTC-USDT");
    assert_string_equal(tu_jstr(d, "evt.type"), "Trade");
    assert_string_equal(tu_jstr(d, "evt.provider"), "sim");
    assert_string_equal(tu_jstr(d, "evt.symbol"), "BTC-USDT");
    assert_int_equal(tu_jint(d, "evt.seq"), 1);
    assert_int_equal(tu_jint(d, "evt.ts"), 1700000000001);
    assert_true(jnum(d, "p.price") == 101.5);
    assert_true(jnum(d, "p.quantity") == 0.25);
    assert_string_equal(tu_jstr(d, "p.side"), "buy");
    assert_int_equal(tu_jint(d, "p.tradeId"), 7001);
    json_decref(d);

    d = evt_line(&f, "p1", 1);
    assert_string_equal(tu_jstr(d, "h"), "onTicker");
    assert_true(json_is_true(json_object_get(d, "same"))); /* one ctx per (provider, symbol) */
    assert_true(jnum(d, "p.last") == 100.5 && jnum(d, "p.bid") == 100.25);
    assert_true(jnum(d, "p.ask") == 100.75 && jnum(d, "p.bidSize") == 3);
    assert_true(jnum(d, "p.askSize") == 4 && jnum(d, "p.volume") == 12345);
    json_decref(d);

    d = evt_line(&f, "p1", 2);
    assert_string_equal(tu_jstr(d, "evt.type"), "BookSnapshot");
    assert_true(jnum(d, "p.bids.0.0") == 100 && jnum(d, "p.bids.1.1") == 2);
    assert_true(jnum(d, "p.asks.0.0") == 101 && jnum(d, "p.asks.1.1") == 4);
    json_decref(d);

    d = evt_line(&f, "p1", 3);
    assert_string_equal(tu_jstr(d, "h"), "onKlineSummary");
    assert_int_equal(tu_jint(d, "p.start"), 1000);
    assert_int_equal(tu_jint(d, "p.end"), 2000);
    assert_true(jnum(d, "p.open") == 1 && jnum(d, "p.high") == 4 && jnum(d, "p.low") == 0.5);
    assert_true(jnum(d, "p.close") == 2 && jnum(d, "p.volume") == 77);
    assert_int_equal(tu_jint(d, "p.trades"), 9);
    json_decref(d);

    d = evt_line(&f, "p1", 4);
    assert_string_equal(tu_jstr(d, "h"), "onBalanceUpdate");
    assert_true(json_is_null(tu_jget(d, "evt.symbol")));
    assert_string_equal(tu_jstr(d, "p.asset"), "USDT");
    assert_true(jnum(d, "p.total") == 1000 && jnum(d, "p.available") == 750);
    json_decref(d);

    d = evt_line(&f, "p1", 5);
    assert_string_equal(tu_jstr(d, "h"), "onInstrumentUpdate");
    assert_true(jnum(d, "p.tickSize") == 0.01 && json_is_true(tu_jget(d, "p.trading")));
    json_decref(d);
    d = evt_line(&f, "p1", 6);
    assert_string_equal(tu_jstr(d, "h"), "onRiskControl");
    assert_string_equal(tu_jstr(d, "p.reason"), "daily loss limit");
    json_decref(d);
    d = evt_line(&f, "p1", 7);
    assert_string_equal(tu_jstr(d, "h"), "onExtensionEvent");
    assert_int_equal(tu_jint(d, "evt.seq"), 8);
    json_decref(d);
    assert_true(fx_wait_delivered(&f, "p1", 8, 3000)); /* counted after the call's line */
    assert_int_equal(fx_delivered(&f, "p1"), 8);
    free(hash);
    fx_close(&f);
}

static const char *const ORDERER =
    "    return { onTrade(ctx, evt, p) {\n"
    "      env.runtime.submitOrder('sim', 'buy', evt.seq, p.price);\n"
    "    } };";

static void test_order_across_instances(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "seqs", "['Trade']", NULL, ORDERER, hex);
    fx_run(&f, "o1", "seqs", NULL, NULL);
    fx_run(&f, "o2", "seqs", NULL, NULL);
    fx_run(&f, "o3", "seqs", NULL, "{\"alt\": {\"symbols\": [\"BTC-USDT\"]}}");
    enum { N = 2000 };
    for (int i = 0; i < N; i++)
        fx_trade(&f, "sim", "BTC-USDT", 100 + i, 1);
    assert_true(fx_wait_orders(&f, 2 * N, 10000));
    fx_sleep_ms(20);
    assert_int_equal(fx_order_count(&f.market), 2 * N);
    double last[2] = {0, 0};
    for (size_t i = 0; i < 2 * N; i++) {
        struct order_request r = fx_order(&f.market, i);
        int who = strcmp(r.instance_id, "o1") == 0 ? 0 : 1;
        assert_true(strcmp(r.instance_id, "o3") != 0);
        assert_true(r.quantity == last[who] + 1); /* in publication order, none lost */
        last[who] = r.quantity;
    }
    assert_int_equal(fx_delivered(&f, "o1"), N);
    assert_int_equal(fx_delivered(&f, "o3"), 0);
    struct runtime_stats st;
    runtime_stats(f.rt, &st);
    assert_int_equal(st.events_delivered, 2 * N);
    fx_close(&f);
}

/* Publishers on several threads meet a queue of a few messages per worker,
 * so that they wait for room most of the time, in two rounds of threads so
 * that the second adopts the event pools the first left behind; half of
 * them publish in runs, some longer than the queue: every instance gets
 * every event once, and each publisher's in its order. */
enum { PUB_THREADS = 4, PUB_ROUNDS = 2, PUB_EVENTS = 3000 };

struct publisher {
    struct runtime *rt;
    int who;
    uint16_t provider, symbol;
    int runs; /* 0: one event at a time; else in runs of 1, 2, ... runs */
};

static void *publish_numbered(void *arg)
{
    const struct publisher *p = arg;
    struct event *run[64];
    int n = 0, size = 1;
    for (int i = 1; i <= PUB_EVENTS; i++) {
        struct event *ev = event_new(EVENT_TRADE, 0);
        if (!ev)
            return (void *)1;
        ev->provider = p->provider;
        ev->symbol = p->symbol;
        ev->seq = (uint64_t)(p->who * PUB_EVENTS + i);
        ev->created_ns = clock_mono_ns();
        ev->ts_ms = 1700000000000;
        ev->u.trade.price = i;
        ev->u.trade.quantity = p->who;
        if (!p->runs) {
            runtime_publish(p->rt, ev);
            continue;
        }
        run[n++] = ev;
        if (n == size || i == PUB_EVENTS) {
            runtime_publish_run(p->rt, run, (size_t)n);
            n = 0;
            size = size % p->runs + 1;
        }
    }
    return NULL;
}

static void test_publishers_share_a_full_queue(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    f.opts.queue_capacity = 6; /* rounded up to 8 */
    fx_restart(&f);
    enum { TOTAL = PUB_THREADS * PUB_ROUNDS * PUB_EVENTS };
    char body[512];
    snprintf(body, sizeof body,
             "    const last = {}; let n = 0, bad = 0;\n"
             "    return { onTrade(ctx, evt, p) {\n"
             "      if (p.price !== (last[p.quantity] || 0) + 1) bad++;\n"
             "      last[p.quantity] = p.price;\n"
             "      if (++n === %d) env.helpers.log('done ' + n + ' ' + bad);\n"
             "    } };",
             (int)TOTAL);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "nums", "['Trade']", NULL, body, hex);
    const char *ids[] = {"q1", "q2", "q3"};
    for (size_t i = 0; i < 3; i++)
        fx_run(&f, ids[i], "nums", NULL, NULL);
    for (int round = 0; round < PUB_ROUNDS; round++) {
        pthread_t threads[PUB_THREADS];
        struct publisher pubs[PUB_THREADS];
        for (int t = 0; t < PUB_THREADS; t++) {
            pubs[t] = (struct publisher){f.rt, round * PUB_THREADS + t + 1, intern_id("sim"),
                                         intern_id("BTC-USDT"), t % 2 ? 37 : 0};
            assert_int_equal(pthread_create(&threads[t], NULL, publish_numbered, &pubs[t]), 0);
        }
        for (int t = 0; t < PUB_THREADS; t++) {
            void *rc = NULL;
            pthread_join(threads[t], &rc);
            assert_null(rc);
        }
    }
    char expected[64];
    snprintf(expected, sizeof expected, "done %d 0", (int)TOTAL);
    for (size_t i = 0; i < 3; i++) {
        assert_true(fx_wait_logs(&f, ids[i], "done ", 1, 60000));
        json_t *logs = fx_logs(&f, ids[i], "done ");
        assert_string_equal(json_string_value(json_object_get(json_array_get(logs, 0), "msg")),
                            expected);
        json_decref(logs);
        /* the line is written inside the last call, the count after it */
        assert_true(fx_wait_delivered(&f, ids[i], TOTAL, 5000));
        assert_int_equal(fx_delivered(&f, ids[i]), TOTAL);
    }
    fx_close(&f);
}

/* A strategy that checks its trades' prices count 1, 2, 3, ... and logs
 * "done <n> <out of order>" at its `expect`th trade. */
static void add_in_order_counter(struct fx *f, const char *name, int expect)
{
    char body[512];
    snprintf(body, sizeof body,
             "    let last = 0, n = 0, bad = 0;\n"
             "    return { onTrade(ctx, evt, p) {\n"
             "      if (p.price !== last + 1) bad++;\n"
             "      last = p.price;\n"
             "      if (++n === %d) env.helpers.log('done ' + n + ' ' + bad);\n"
             "    } };",
             expect);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(f, name, "['Trade']", NULL, body, hex);
}

static void expect_counted_in_order(struct fx *f, const char *id, int expect)
{
    char expected[64];
    snprintf(expected, sizeof expected, "done %d 0", expect);
    assert_true(fx_wait_logs(f, id, "done ", 1, 30000));
    json_t *logs = fx_logs(f, id, "done ");
    assert_string_equal(tu_jstr(logs, "0.msg"), expected);
    json_decref(logs);
}

/* evs[0..n) in runs of 1, 2, ... longest, and again from 1. */
static void publish_in_runs(struct fx *f, struct event **evs, int n, int longest)
{
    for (int at = 0, size = 1; at < n; size = size % longest + 1) {
        int k = n - at < size ? n - at : size;
        runtime_publish_run(f->rt, evs + at, (size_t)k);
        at += k;
    }
}

/* Waits until every event holds only the reference the test kept, then
 * drops it: a missing or extra reference never settles at 1. */
static void expect_only_our_references(struct event **evs, int n)
{
    int64_t deadline = clock_mono_ns() + 10LL * 1000 * 1000 * 1000;
    for (int i = 0; i < n; i++) {
        while (atomic_load(&evs[i]->refs) != 1 && clock_mono_ns() < deadline)
            fx_sleep_ms(1);
        if (atomic_load(&evs[i]->refs) != 1)
            fail_msg("event %d holds %u references after delivery", i,
                     (unsigned)atomic_load(&evs[i]->refs));
        event_release(evs[i]);
    }
}

/* Runs of every length from 1 to 100 (past the queue's 8 slots and the
 * runtime's chunk of 64) mixing two symbols with subscribers on either
 * worker and one without: each instance gets its symbol's events in order,
 * and every event ends with exactly the reference the test kept. */
static void test_runs_reach_each_worker_in_order(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    f.opts.queue_capacity = 8;
    fx_restart(&f);
    enum { N = 3000 };
    add_in_order_counter(&f, "runs", N / 3);
    const char *btc[] = {"r1", "r2", "r3"};
    for (size_t i = 0; i < 3; i++)
        fx_run(&f, btc[i], "runs", NULL, NULL);
    fx_run(&f, "e1", "runs", NULL, "{\"sim\": {\"symbols\": [\"ETH-USDT\"]}}");
    static struct event *evs[N];
    const char *symbols[] = {"BTC-USDT", "ETH-USDT", "SOL-USDT"};
    for (int i = 0; i < N; i++) {
        evs[i] = fx_event(&f, EVENT_TRADE, "sim", symbols[i % 3], 0);
        evs[i]->u.trade.price = i / 3 + 1;
        evs[i]->u.trade.quantity = 1;
        event_retain(evs[i]);
    }
    publish_in_runs(&f, evs, N, 100);
    const char *ids[] = {"r1", "r2", "r3", "e1"};
    for (size_t i = 0; i < 4; i++) {
        expect_counted_in_order(&f, ids[i], N / 3);
        assert_true(fx_wait_delivered(&f, ids[i], N / 3, 5000));
    }
    expect_only_our_references(evs, N);
    fx_close(&f);
}

/* Each trade's price of a VM, from its "<word> <price>" lines: every one of
 * 1..n exactly once, or fail. */
static void expect_each_price_once(struct fx *f, const char *id, const char *word, int n)
{
    char prefix[16];
    snprintf(prefix, sizeof prefix, "%s ", word);
    json_t *logs = fx_logs(f, id, prefix);
    int seen[64] = {0};
    assert_true(n <= 64);
    size_t i;
    json_t *line;
    json_array_foreach(logs, i, line)
    {
        int price = atoi(tu_jstr(line, "msg") + strlen(prefix));
        if (price < 1 || price > n)
            fail_msg("%s logged '%s'", id, tu_jstr(line, "msg"));
        seen[price - 1]++;
    }
    for (int p = 0; p < n; p++) {
        if (seen[p] != 1)
            fail_msg("%s's %s revision took trade %d %d times", id, word, p + 1, seen[p]);
    }
    json_decref(logs);
}

/* A run over many VMs serves the commands posted meanwhile between two VMs
 * instead of after its last: two instances moved to a new revision while
 * 100 slow VMs between them take a run of 32 trades. The one walked before
 * the move keeps the run in its old revision and its new one takes none;
 * the one walked after takes the run in its new revision only: no trade
 * twice, none lost, and the move did not wait for the run (after it, the
 * last instance's old revision would have taken the run). */
static void test_commands_served_inside_a_run(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    const char *const revisions[][2] = {{"v1", "old"}, {"v2", "new"}};
    for (size_t r = 0; r < 2; r++) {
        char body[256];
        snprintf(body, sizeof body,
                 "    return { onTrade(ctx, evt, p) { env.helpers.log('%s ' + p.price); } };",
                 revisions[r][1]);
        char *src = fx_module("mover", "['Trade']", NULL, body);
        fx_upload(&f, "mover", src, revisions[r][0], hex);
        free(src);
    }
    fx_add_module(&f, "slow", "['Trade']", NULL,
                  "    let x = 0;\n"
                  "    return { onTrade() { for (let i = 0; i < 5000; i++) x += i; } };",
                  hex);
    fx_run(&f, "first", "mover:v1", NULL, NULL);
    for (int i = 0; i < 100; i++) {
        char id[16];
        snprintf(id, sizeof id, "slow%03d", i);
        fx_run(&f, id, "slow", NULL, NULL);
    }
    fx_run(&f, "last", "mover:v1", NULL, NULL);

    enum { N = 32 };
    struct event *evs[N];
    for (int i = 0; i < N; i++) {
        evs[i] = fx_event(&f, EVENT_TRADE, "sim", "BTC-USDT", 0);
        evs[i]->u.trade.price = i + 1;
        evs[i]->u.trade.quantity = 1;
    }
    runtime_publish_run(f.rt, evs, N);
    /* the walk is past the first instance and into the slow ones */
    assert_true(fx_wait_logs(&f, "first", "old ", N, 30000));
    const char *const movers[] = {"first", "last"};
    for (size_t i = 0; i < 2; i++) {
        struct err err = ERR_INIT;
        json_t *spec = fx_spec(movers[i], "mover:v2", NULL, NULL);
        fx_ok(runtime_instance_update(f.rt, movers[i], spec, NULL, &err), &err);
        json_decref(spec);
    }
    assert_true(fx_wait_logs(&f, "last", NULL, N, 60000));
    expect_each_price_once(&f, "first", "old", N);
    expect_each_price_once(&f, "last", "new", N);
    json_t *none = fx_logs(&f, "first", "new ");
    assert_int_equal(json_array_size(none), 0);
    json_decref(none);
    none = fx_logs(&f, "last", "old ");
    assert_int_equal(json_array_size(none), 0);
    json_decref(none);
    fx_close(&f);
}

/* A route is a bit per worker: with 64 workers the last bit is used (exec
 * reports directed at every worker in turn, most to no instance), and with
 * 65 a run is published event by event. Either way the subscriber gets its
 * trades in order and every event ends with the test's reference alone. */
static void test_runs_over_many_workers(void **state)
{
    (void)state;
    enum { N = 600 };
    static struct event *evs[N];
    for (int workers = 64; workers <= 65; workers++) {
        struct fx f;
        fx_open(&f, workers);
        add_in_order_counter(&f, "wide", N / 3);
        fx_run(&f, "w1", "wide", NULL, NULL);
        for (int i = 0; i < N; i++) {
            if (i % 3 == 1) {
                evs[i] = fx_event(&f, EVENT_EXEC_REPORT, "sim", "BTC-USDT", 0);
                evs[i]->target = (uint32_t)(i / 3 % workers) + 1;
                evs[i]->u.exec.status = EXEC_ACKNOWLEDGED;
            } else {
                evs[i] = fx_event(&f, EVENT_TRADE, "sim", i % 3 ? "SOL-USDT" : "BTC-USDT", 0);
                evs[i]->u.trade.price = i / 3 + 1;
                evs[i]->u.trade.quantity = 1;
            }
            event_retain(evs[i]);
        }
        publish_in_runs(&f, evs, N, 70);
        expect_counted_in_order(&f, "w1", N / 3);
        expect_only_our_references(evs, N);
        fx_close(&f);
    }
}

static void test_missing_handlers_cost_nothing(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "quiet", "['Trade', 'Ticker']", NULL,
                  "    return { onTicker() { env.helpers.log('ticker'); } };", hex);
    fx_add_module(&f, "empty", "['Trade', 'Ticker']", NULL, "    return {};", hex);
    fx_run(&f, "q1", "quiet", NULL, NULL);
    fx_run(&f, "q2", "empty", NULL, NULL);
    for (int i = 0; i < 100; i++)
        fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    struct event *ev = fx_event(&f, EVENT_TICKER, "sim", "BTC-USDT", 0);
    runtime_publish(f.rt, ev);
    assert_true(fx_wait_delivered(&f, "q1", 1, 2000));
    fx_sleep_ms(20);
    assert_int_equal(fx_delivered(&f, "q1"), 1);
    assert_int_equal(fx_delivered(&f, "q2"), 0);
    struct runtime_stats st;
    runtime_stats(f.rt, &st);
    assert_int_equal(st.events_delivered, 1);
    fx_close(&f);
}

static void test_subscribed_events(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "picky", "['Trade', 'Ticker']", NULL,
                  "    env.helpers.log('events-before', env.events);\n"
                  "    return {\n"
                  "      subscribedEvents() { return ['Ticker']; },\n"
                  "      onTrade() { env.helpers.log('trade'); },\n"
                  "      onTicker() { env.helpers.log('ticker', env.events); },\n"
                  "      onBookSnapshot() { env.helpers.log('book'); },\n"
                  "    };",
                  hex);
    fx_add_module(&f, "wrongsub", "['Trade']", NULL,
                  "    return { subscribedEvents() { return ['Trades']; }, onTrade() {} };", hex);
    fx_run(&f, "e1", "picky", NULL, NULL);
    fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    runtime_publish(f.rt, fx_event(&f, EVENT_BOOK_SNAPSHOT, "sim", "BTC-USDT", 0));
    runtime_publish(f.rt, fx_event(&f, EVENT_TICKER, "sim", "BTC-USDT", 0));
    assert_true(fx_wait_logs(&f, "e1", "ticker", 1, 2000));
    fx_sleep_ms(20);
    json_t *logs = fx_logs(&f, "e1", "ticker");
    assert_string_equal(tu_jstr(logs, "0.msg"), "ticker [\"Ticker\"]");
    json_decref(logs);
    logs = fx_logs(&f, "e1", "events-before");
    assert_string_equal(tu_jstr(logs, "0.msg"), "events-before [\"Trade\",\"Ticker\"]");
    json_decref(logs);
    logs = fx_logs(&f, "e1", "trade");
    assert_int_equal(json_array_size(logs), 0);
    json_decref(logs);
    logs = fx_logs(&f, "e1", "book");
    assert_int_equal(json_array_size(logs), 0);
    json_decref(logs);
    fx_create(&f, "e2", "wrongsub", NULL, NULL);
    struct err err = ERR_INIT;
    fx_fails(runtime_instance_start(f.rt, "e2", &err), &err, ERR_UNPROCESSABLE);
    assert_non_null(strstr(err.message, "Trades"));
    err_clear(&err);
    /* a real event that metadata.events does not declare fails the start
     * too: the instance would never hear it */
    fx_add_module(&f, "undeclared", "['Trade']", NULL,
                  "    return { subscribedEvents() { return ['Trade', 'BookSnapshot']; } };", hex);
    fx_create(&f, "e3", "undeclared", NULL, NULL);
    fx_fails(runtime_instance_start(f.rt, "e3", &err), &err, ERR_UNPROCESSABLE);
    assert_non_null(strstr(err.message, "BookSnapshot is not in metadata.events"));
    err_clear(&err);
    fx_close(&f);
}

static const char *const TRADER =
    "    let n = 0, same = 0, reported = 0;\n"
    "    return {\n"
    "      onTrade(ctx, evt, p) {\n"
    "        n++;\n"
    "        if (n === 1) {\n"
    "          const a = env.runtime.submitOrder('sim', 'buy', 2, 101.5);\n"
    "          const b = env.runtime.submitMarketOrder('sim', 'sell', 0.5, 'ETH-USDT');\n"
    "          env.helpers.log('ids', a, b, env.runtime.isDryRun());\n"
    "        } else if (n === 2) {\n"
    "          env.helpers.log('cancel', env.runtime.cancelOrder(ctx.instanceId + '-1'),\n"
    "              env.runtime.cancelOrder('nope-1'), env.runtime.cancelOrder(42));\n"
    "          try { env.runtime.submitOrder('alt', 'buy', 1, 1); }\n"
    "          catch (e) { env.helpers.log('scope', e.name, e.message); }\n"
    "          try { env.runtime.submitOrder('sim', 'hold', 1, 1); }\n"
    "          catch (e) { env.helpers.log('side', e.name); }\n"
    "          try { env.runtime.submitMarketOrder('sim', 'buy', 1, 'SOL-USDT'); }\n"
    "          catch (e) { env.helpers.log('symbol', e.name); }\n"
    "        } else {\n"
    "          try { env.runtime.submitMarketOrder('sim', 'buy', 1); }\n"
    "          catch (e) { env.helpers.log('refused', e.name, e.message); }\n"
    "        }\n"
    "      },\n"
    "      onOrderFilled(ctx, evt, p) { env.helpers.log('filled', { ctx, evt, p }); },\n"
    "      onOrderAcknowledged(ctx, evt, p) { env.helpers.log('ack', p.clientOrderId); },\n"
    "    };";

static void test_orders_and_exec_reports(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 2);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "trader", "['Trade', 'ExecReport']", NULL, TRADER, hex);
    const char *scope = "{\"sim\": {\"symbols\": [\"BTC-USDT\", \"ETH-USDT\"]}}";
    fx_run(&f, "t1", "trader", "{\"dry_run\": true}", scope);
    fx_run(&f, "t2", "trader", NULL, scope);
    int64_t before = clock_mono_ns();
    fx_trade(&f, "sim", "BTC-USDT", 100, 1);
    assert_true(fx_wait_orders(&f, 4, 2000));
    struct order_request mine[2];
    size_t found = 0;
    for (size_t i = 0; i < 4; i++) {
        struct order_request r = fx_order(&f.market, i);
        if (strcmp(r.instance_id, "t1") == 0)
            mine[found++] = r;
    }
    assert_int_equal(found, 2);
    assert_string_equal(mine[0].client_order_id, "t1-1");
    assert_int_equal(mine[0].type, ORDER_LIMIT);
    assert_int_equal(mine[0].side, SIDE_BUY);
    assert_true(mine[0].quantity == 2 && mine[0].price == 101.5);
    assert_int_equal(mine[0].provider, intern_lookup("sim"));
    assert_int_equal(mine[0].symbol, intern_lookup("BTC-USDT"));
    assert_true(mine[0].dry_run);
    assert_true(mine[0].trigger_created_ns >= before);
    assert_true(mine[0].created_ns >= mine[0].trigger_created_ns);
    assert_string_equal(mine[1].client_order_id, "t1-2");
    assert_int_equal(mine[1].type, ORDER_MARKET);
    assert_int_equal(mine[1].side, SIDE_SELL);
    assert_int_equal(mine[1].symbol, intern_lookup("ETH-USDT"));
    assert_true(fx_wait_logs(&f, "t1", "ids", 1, 2000));
    json_t *logs = fx_logs(&f, "t1", "ids");
    assert_string_equal(tu_jstr(logs, "0.msg"), "ids t1-1 t1-2 true");
    json_decref(logs);
    /* t2 runs on the other worker: its line is not ordered with t1's */
    assert_true(fx_wait_logs(&f, "t2", "ids", 1, 2000));
    logs = fx_logs(&f, "t2", "ids");
    assert_string_equal(tu_jstr(logs, "0.msg"), "ids t2-1 t2-2 false");
    json_decref(logs);

    /* reports go to the owning instance only */
    uint32_t key = mine[0].instance_key;
    fx_exec(&f, key, "sim", "BTC-USDT", EXEC_ACKNOWLEDGED, "t1-1");
    fx_exec(&f, key, "sim", "BTC-USDT", EXEC_FILLED, "t1-2");
    assert_true(fx_wait_logs(&f, "t1", "filled", 1, 2000));
    json_t *line = fx_logs(&f, "t1", "filled");
    json_t *d = json_loads(tu_jstr(line, "0.msg") + 7, 0, NULL);
    json_decref(line);
    assert_string_equal(tu_jstr(d, "evt.type"), "ExecReport");
    assert_string_equal(tu_jstr(d, "ctx.symbol"), "BTC-USDT");
    assert_string_equal(tu_jstr(d, "p.clientOrderId"), "t1-2");
    assert_string_equal(tu_jstr(d, "p.status"), "filled");
    assert_string_equal(tu_jstr(d, "p.side"), "sell");
    assert_string_equal(tu_jstr(d, "p.type"), "limit");
    assert_string_equal(tu_jstr(d, "p.feeAsset"), "USDT");
    assert_true(json_is_true(tu_jget(d, "p.dryRun")));
    assert_true(json_number_value(tu_jget(d, "p.averagePrice")) == 101.25);
    assert_true(json_number_value(tu_jget(d, "p.remainingQuantity")) == 1);
    json_decref(d);
    logs = fx_logs(&f, "t1", "ack");
    assert_string_equal(tu_jstr(logs, "0.msg"), "ack t1-1");
    json_decref(logs);
    logs = fx_logs(&f, "t2", "filled");
    assert_int_equal(json_array_size(logs), 0);
    json_decref(logs);

    /* cancel: t1-1 is open (only acknowledged), t1-2 filled */
    fx_trade(&f, "sim", "BTC-USDT", 100, 1);
    assert_true(fx_wait_logs(&f, "t1", "cancel", 1, 2000));
    logs = fx_logs(&f, "t1", "cancel");
    assert_string_equal(tu_jstr(logs, "0.msg"), "cancel true false false");
    json_decref(logs);
    assert_true(fx_wait_logs(&f, "t1", "symbol", 1, 2000));
    assert_true(fx_wait_logs(&f, "t2", "symbol", 1, 2000));
    logs = fx_logs(&f, "t1", "scope");
    assert_non_null(strstr(tu_jstr(logs, "0.msg"), "TypeError"));
    assert_non_null(strstr(tu_jstr(logs, "0.msg"), "alt"));
    json_decref(logs);
    logs = fx_logs(&f, "t1", "side");
    assert_string_equal(tu_jstr(logs, "0.msg"), "side TypeError");
    json_decref(logs);
    pthread_mutex_lock(&f.market.lock);
    assert_int_equal(f.market.ncancels, 2);
    f.market.refuse = true;
    pthread_mutex_unlock(&f.market.lock);
    fx_trade(&f, "sim", "BTC-USDT", 100, 1);
    assert_true(fx_wait_logs(&f, "t1", "refused", 1, 2000));
    logs = fx_logs(&f, "t1", "refused");
    assert_string_equal(tu_jstr(logs, "0.msg"), "refused Error provider sim is closed");
    json_decref(logs);

    /* stratd_orders_total counts reports by state */
    struct strbuf out = STRBUF_INIT;
    runtime_metrics_write(f.rt, &out);
    assert_non_null(
        strstr(strbuf_cstr(&out), "stratd_orders_total{provider=\"sim\",state=\"filled\"} 1"));
    strbuf_release(&out);
    fx_close(&f);
}

static const char *const HELPERS =
    "    return { onTrade(ctx) {\n"
    "      const r = env.runtime;\n"
    "      env.helpers.log('state', r.providers(), r.selectProvider('abc') === "
    "r.selectProvider('abc'),\n"
    "          r.providers().includes(r.selectProvider(7)), r.isTradingActive(),\n"
    "          r.getLastPrice(), r.getBidPrice('BTC-USDT'), r.getAskPrice(),\n"
    "          r.getMarketState(), 1.5, 'text', null, undefined, { a: [1, 'x'] });\n"
    "    } };";

static void test_host_helpers(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "helpers", "['Trade']", NULL, HELPERS, hex);
    fx_run(&f, "h1", "helpers", NULL,
           "{\"sim\": {\"symbols\": [\"BTC-USDT\"]}, \"alt\": {\"symbols\": [\"BTC-USDT\"]}}");
    fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait_logs(&f, "h1", "state", 1, 2000));
    pthread_mutex_lock(&f.market.lock);
    f.market.quote = (struct market_quote){100, 99, 101, true};
    f.market.trading = false;
    pthread_mutex_unlock(&f.market.lock);
    fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait_logs(&f, "h1", "state", 2, 2000));
    json_t *logs = fx_logs(&f, "h1", "state");
    assert_string_equal(tu_jstr(logs, "0.msg"),
                        "state [\"sim\",\"alt\"] true true true null null null null 1.5 text null "
                        "undefined {\"a\":[1,\"x\"]}");
    assert_string_equal(tu_jstr(logs, "1.msg"),
                        "state [\"sim\",\"alt\"] true true false 100 99 101 "
                        "{\"last\":100,\"bid\":99,\"ask\":101,\"spread\":2,\"spreadPct\":2} 1.5 "
                        "text null undefined {\"a\":[1,\"x\"]}");
    assert_string_equal(tu_jstr(logs, "0.level"), "info");
    assert_string_equal(tu_jstr(logs, "0.instance"), "h1");
    json_decref(logs);
    fx_close(&f);
}

static const char *const PROBE =
    "    const kinds = () => [typeof require, typeof std, typeof os, typeof process,\n"
    "        typeof scriptArgs, typeof print].join(',');\n"
    "    env.helpers.log('create', kinds());\n"
    "    return { onTrade() {\n"
    "      let dyn = 'none';\n"
    "      try { import('os').then(() => env.helpers.log('imported'),\n"
    "                              (e) => env.helpers.log('import-failed', e.name)); }\n"
    "      catch (e) { dyn = e.name; }\n"
    "      let ev = 'ok';\n"
    "      try { eval('1 + 1'); } catch (e) { ev = e.name; }\n"
    "      env.helpers.log('handler', kinds(), dyn, ev);\n"
    "    } };";

static void test_sandbox_isolation(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "probe", "['Trade']", NULL, PROBE, hex);
    fx_run(&f, "x1", "probe", NULL, NULL);
    fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait_logs(&f, "x1", "handler", 1, 2000));
    fx_sleep_ms(20);
    json_t *logs = fx_logs(&f, "x1", "create");
    assert_string_equal(tu_jstr(logs, "0.msg"),
                        "create undefined,undefined,undefined,undefined,undefined,undefined");
    json_decref(logs);
    logs = fx_logs(&f, "x1", "handler");
    const char *msg = tu_jstr(logs, "0.msg");
    assert_non_null(strstr(msg, "handler undefined,undefined,undefined,undefined,undefined,"
                                "undefined"));
    assert_null(strstr(msg, " ok")); /* eval compiles nothing */
    json_decref(logs);
    logs = fx_logs(&f, "x1", "imported");
    assert_int_equal(json_array_size(logs), 0);
    json_decref(logs);
    fx_close(&f);
}

/* Starts take sandboxes built ahead of time: none may carry anything from
 * an instance that ran before, on the same worker, whether it stopped or
 * failed to start. */
static const char *const POLLUTER = "    globalThis.leak = 'x';\n"
                                    "    Object.prototype.polluted = 1;\n"
                                    "    Array.prototype.push = null;\n"
                                    "    JSON.stringify = () => 'hijacked';\n"
                                    "    if (env.config.fail) throw new Error('after polluting');\n"
                                    "    return { onTrade() { globalThis.leak2 = 'y'; } };";

static const char *const OBSERVER =
    "    env.helpers.log('create', [typeof leak, typeof leak2, ({}).polluted,\n"
    "        typeof [].push, JSON.stringify({a: 1})].join(','));\n"
    "    return { onTrade() {} };";

static void expect_pristine(struct fx *f, const char *id)
{
    fx_run(f, id, "observer", NULL, NULL);
    assert_true(fx_wait_logs(f, id, "create", 1, 2000));
    json_t *logs = fx_logs(f, id, "create");
    assert_string_equal(tu_jstr(logs, "0.msg"), "create undefined,undefined,,function,{\"a\":1}");
    json_decref(logs);
}

static void test_fresh_sandbox_per_start(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "polluter", "['Trade']", "[{name: 'fail', type: 'bool', default: false}]",
                  POLLUTER, hex);
    fx_add_module(&f, "observer", "['Trade']", NULL, OBSERVER, hex);
    fx_run(&f, "p1", "polluter", NULL, NULL);
    fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait_delivered(&f, "p1", 1, 2000));
    struct err err = ERR_INIT;
    fx_ok(runtime_instance_stop(f.rt, "p1", &err), &err);
    fx_create(&f, "p2", "polluter", "{\"fail\": true}", NULL);
    assert_int_equal(runtime_instance_start(f.rt, "p2", &err), -1);
    err_clear(&err);
    /* more starts than a worker keeps spare sandboxes, so both kinds are seen */
    char id[16];
    for (int i = 0; i < 10; i++) {
        snprintf(id, sizeof id, "o%d", i);
        expect_pristine(&f, id);
        if (i == 4)
            fx_start(&f, "p1");
    }
    fx_close(&f);
}

/* evt and the trade and ticker payloads are built lazily (see vm.c): every
 * way of looking at them, and every change, must give what a plain object
 * with the same properties gives. Each event takes one scenario; the
 * strategy runs it on the argument and on a plain copy and logs whether
 * the observations agree. */
static const char *const LAZY_PROBE =
    "    const t = (f) => { try { return String(f()); } catch (e) { return 'throws ' + e.name; } "
    "};\n"
    "    const look = (o) => [JSON.stringify(o), Object.keys(o).join('|'),\n"
    "      JSON.stringify({...o}), JSON.stringify(Object.assign({}, o)),\n"
    "      JSON.stringify(Object.entries(o)), JSON.stringify(Object.values(o)),\n"
    "      (() => { const ks = []; for (const k in o) ks.push(k); return ks.join('|'); })(),\n"
    "      Object.getOwnPropertyNames(o).join('|'), Reflect.ownKeys(o).join('|'),\n"
    "      JSON.stringify(Object.getOwnPropertyDescriptors(o)),\n"
    "      'price' in o, 'seq' in o, 'last' in o, 'nope' in o, "
    "Object.prototype.hasOwnProperty.call(o, 'type'),\n"
    "      Object.prototype.propertyIsEnumerable.call(o, 'seq'),\n"
    "      Object.getPrototypeOf(o) === Object.prototype, Object.prototype.toString.call(o),\n"
    "      Object.isExtensible(o), Object.isFrozen(o), Object.isSealed(o), typeof o,\n"
    "      o instanceof Object, t(() => String(o)), t(() => structuredClone(o))].join('\\n');\n"
    "    const scenarios = [\n"
    "      (o, k) => look(o),\n"
    "      (o, k) => [t(() => { o[k] = 42; return o[k]; }), t(() => { o.extra = 'e'; return "
    "o.extra; }),\n"
    "        look(o), t(() => delete o[k]), t(() => delete o.nope), look(o),\n"
    "        t(() => Object.defineProperty(o, 'hidden', {value: 1}).hidden),\n"
    "        t(() => Object.defineProperty(o, k, {get() { return 'g'; }})[k]), "
    "look(o)].join('\\n'),\n"
    "      (o, k) => [t(() => Object.freeze(o) === o), t(() => { o[k] = 1; return o[k]; }),\n"
    "        t(() => { o.more = 1; return o.more; }), t(() => delete o[k]), look(o)].join('\\n'),\n"
    "      (o, k) => [t(() => Object.preventExtensions(o) === o), t(() => { o[k] = 9; return o[k]; "
    "}),\n"
    "        t(() => { o.more = 1; return o.more; }), t(() => delete o[k]), look(o)].join('\\n'),\n"
    "      (o, k) => [t(() => Object.seal(o) === o), t(() => { o[k] = 8; return o[k]; }),\n"
    "        t(() => delete o[k]), t(() => Object.setPrototypeOf(o, null) === o), "
    "look(o)].join('\\n'),\n"
    "      (o, k) => [t(() => Object.setPrototypeOf(o, {inherited: 1}) === o), o.inherited,\n"
    "        t(() => { o[k] += 1; return o[k]; }), look(o)].join('\\n'),\n"
    "    ];\n"
    "    const kept = [];\n"
    "    let n = 0, same = 0, reported = 0;\n"
    "    const check = (evt, p, copyP, k) => {\n"
    "      const copyE = {type: evt.type, provider: evt.provider, symbol: evt.symbol,\n"
    "                     seq: evt.seq, ts: evt.ts};\n"
    "      const plainP = copyP(p);\n"
    "      const s = scenarios[n++ % scenarios.length];\n"
    "      const a = s(evt, 'seq') + '\\n' + s(p, k);\n"
    "      const b = s(copyE, 'seq') + '\\n' + s(plainP, k);\n"
    "      kept.push([evt, p]);\n"
    "      const al = a.split('\\n'), bl = b.split('\\n');\n"
    "      const i = al.findIndex((line, j) => line !== bl[j]);\n"
    "      if (a === b) same++;\n"
    "      else if (!reported++) env.helpers.log('differs',\n"
    "        `scenario ${(n - 1) % scenarios.length} line ${i}: ${al[i]} <> ${bl[i]}`);\n"
    "      if (n === 24) env.helpers.log('done', same, kept[0][0].type, kept[0][1].price);\n"
    "    };\n"
    "    return {\n"
    "      onTrade(ctx, evt, p) {\n"
    "        check(evt, p, (o) => ({price: o.price, quantity: o.quantity, side: o.side,\n"
    "                               tradeId: o.tradeId}), 'price');\n"
    "      },\n"
    "      onTicker(ctx, evt, p) {\n"
    "        check(evt, p, (o) => ({last: o.last, bid: o.bid, ask: o.ask, bidSize: o.bidSize,\n"
    "                               askSize: o.askSize, volume: o.volume}), 'last');\n"
    "      },\n"
    "    };";

static void test_lazy_event_objects(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "lazyprobe", "['Trade', 'Ticker']", NULL, LAZY_PROBE, hex);
    fx_run(&f, "l1", "lazyprobe", NULL, NULL);
    for (int i = 0; i < 12; i++) {
        fx_trade(&f, "sim", "BTC-USDT", 100.5 + i, 0.25);
        struct event *ev = fx_event(&f, EVENT_TICKER, "sim", "BTC-USDT", 0);
        ev->u.ticker = (struct event_ticker){100.5, 100.25, 100.75, 3, 4, 12345};
        runtime_publish(f.rt, ev);
    }
    assert_true(fx_wait_delivered(&f, "l1", 24, 5000));
    assert_true(fx_wait_logs(&f, "l1", "done", 1, 5000));
    json_t *logs = fx_logs(&f, "l1", "differs");
    if (json_array_size(logs) > 0)
        fail_msg("%s", tu_jstr(logs, "0.msg"));
    json_decref(logs);
    logs = fx_logs(&f, "l1", "done");
    assert_string_equal(tu_jstr(logs, "0.msg"), "done 24 Trade 100.5");
    json_decref(logs);
    assert_true(fx_running(&f, "l1"));
    fx_close(&f);
}

/* Keeps evt and the payload of some deliveries (both, one or the other)
 * and drops the rest, logging what each delivery read; at the end it reads
 * the kept objects again. */
static const char *const LAZY_KEEPER =
    "    const kept = [];\n"
    "    let n = 0;\n"
    "    const seen = (evt, p, value) => {\n"
    "      env.helpers.log('d', evt.type, evt.seq, value, evt.provider, evt.symbol);\n"
    "      const k = n++ % 4;\n"
    "      if (k === 0) kept.push([evt.seq, evt, p]);\n"
    "      if (k === 1) kept.push([evt.seq, null, p]);\n"
    "      if (k === 2) kept.push([evt.seq, evt, null]);\n"
    "      if (n === 40) env.helpers.log('kept', JSON.stringify(kept.map(([s, e, q]) =>\n"
    "        [s, e && [e.type, e.seq, e.symbol], q && (q.price ?? q.last)])));\n"
    "    };\n"
    "    return {\n"
    "      onTrade(ctx, evt, p) { seen(evt, p, p.price); },\n"
    "      onTicker(ctx, evt, p) { seen(evt, p, p.last); },\n"
    "    };";

/* Every fifth event is for another symbol: a kept evt meets new names. */
static const char *lazy_symbol(int i)
{
    return i % 5 == 4 ? "ETH-USDT" : "BTC-USDT";
}

/* The C half of evt and of a Trade or Ticker payload is reused once the
 * object dies with its delivery: every delivery must still read its own
 * event, and an object the strategy kept must keep reading its own. */
static void test_lazy_objects_dropped_or_kept(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "lazykeeper", "['Trade', 'Ticker']", NULL, LAZY_KEEPER, hex);
    fx_run(&f, "k1", "lazykeeper", NULL, "{\"sim\": {\"symbols\": [\"BTC-USDT\", \"ETH-USDT\"]}}");
    uint64_t seqs[40];
    for (int i = 0; i < 40; i++) {
        if (i % 3 == 2) {
            struct event *ev = fx_event(&f, EVENT_TICKER, "sim", lazy_symbol(i), 0);
            ev->u.ticker = (struct event_ticker){500 + i, 1, 2, 3, 4, 5};
            seqs[i] = ev->seq;
            runtime_publish(f.rt, ev);
        } else {
            seqs[i] = fx_trade(&f, "sim", lazy_symbol(i), 100 + i, 0.25);
        }
    }
    assert_true(fx_wait_delivered(&f, "k1", 40, 5000));
    assert_true(fx_wait_logs(&f, "k1", "kept", 1, 5000));
    json_t *logs = fx_logs(&f, "k1", "d ");
    assert_int_equal(json_array_size(logs), 40);
    struct strbuf want = STRBUF_INIT;
    for (int i = 0; i < 40; i++) {
        bool ticker = i % 3 == 2;
        strbuf_reset(&want);
        strbuf_printf(&want, "d %s %llu %d sim %s", ticker ? "Ticker" : "Trade",
                      (unsigned long long)seqs[i], (ticker ? 500 : 100) + i, lazy_symbol(i));
        json_t *line = json_object_get(json_array_get(logs, (size_t)i), "msg");
        assert_string_equal(json_string_value(line), strbuf_cstr(&want));
    }
    json_decref(logs);
    strbuf_reset(&want);
    strbuf_puts(&want, "kept [");
    for (int i = 0; i < 40; i++) {
        int k = i % 4;
        if (k == 3)
            continue;
        bool ticker = i % 3 == 2;
        char e[96] = "null", q[16] = "null";
        if (k != 1)
            snprintf(e, sizeof e, "[\"%s\",%llu,\"%s\"]", ticker ? "Ticker" : "Trade",
                     (unsigned long long)seqs[i], lazy_symbol(i));
        if (k != 2)
            snprintf(q, sizeof q, "%d", (ticker ? 500 : 100) + i);
        strbuf_printf(&want, "%s[%llu,%s,%s]", want.len > 6 ? "," : "", (unsigned long long)seqs[i],
                      e, q);
    }
    strbuf_puts(&want, "]");
    assert_false(strbuf_failed(&want));
    logs = fx_logs(&f, "k1", "kept");
    assert_string_equal(tu_jstr(logs, "0.msg"), strbuf_cstr(&want));
    json_decref(logs);
    strbuf_release(&want);
    assert_true(fx_running(&f, "k1"));
    fx_close(&f);
}

/* Holds on to evt and the payload only in ways that keep no strong
 * reference (a WeakSet, a WeakMap, a WeakRef, a FinalizationRegistry, a
 * private field stamped on with a constructor's return override) or changes
 * what a new object would show (its prototype, a property added and
 * deleted), one way per delivery and argument, and counts every later
 * argument that such a hold recognises or that does not look new, and the
 * weakly held arguments still alive (QuickJS frees an object with its last
 * reference, so none unless one was kept for reuse). */
static const char *const UNOBSERVED_PROBE =
    "    class Base { constructor(o) { return o; } }\n"
    "    class Stamp extends Base { #mark = 1; static has(o) { return #mark in o; } }\n"
    "    const set = new WeakSet(), map = new WeakMap(), refs = [];\n"
    "    const registry = new FinalizationRegistry(() => {});\n"
    "    const holds = [\n"
    "      (o) => set.add(o),\n"
    "      (o) => map.set(o, 1),\n"
    "      (o) => refs.push([new WeakRef(o), o.seq ?? o.price ?? o.last]),\n"
    "      (o) => registry.register(o, 1),\n"
    "      (o) => new Stamp(o),\n"
    "      (o) => Object.setPrototypeOf(o, {marked: 1}),\n"
    "      (o) => { o.extra = 1; delete o.extra; },\n"
    "      (o) => {},\n"
    "    ];\n"
    "    let n = 0, recognised = 0, alive = 0;\n"
    "    const look = (o) => {\n"
    "      if (set.has(o) || map.has(o) || Stamp.has(o) || 'marked' in o || 'extra' in o ||\n"
    "          Object.getPrototypeOf(o) !== Object.prototype || !Object.isExtensible(o))\n"
    "        recognised++;\n"
    "    };\n"
    "    return {\n"
    "      onTrade(ctx, evt, p) {\n"
    "        look(evt); look(p);\n"
    "        for (const [r, v] of refs) {\n"
    "          const o = r.deref();\n"
    "          if (o && (o === evt || o === p || (o.seq ?? o.price ?? o.last) !== v)) "
    "recognised++;\n"
    "          if (o) alive++;\n"
    "        }\n"
    "        holds[n % holds.length](evt);\n"
    "        holds[(n + 3) % holds.length](p);\n"
    "        if (++n === 64) env.helpers.log('done', n, recognised, alive);\n"
    "      },\n"
    "    };";

/* evt and the payload are handed on to the next delivery when the
 * strategy kept nothing of them (see free_arg in vm.c): no script may be
 * able to tell, whatever it kept short of a reference. */
static void test_reused_objects_unobservable(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "unobserved", "['Trade']", NULL, UNOBSERVED_PROBE, hex);
    fx_run(&f, "u1", "unobserved", NULL, NULL);
    for (int i = 0; i < 64; i++)
        fx_trade(&f, "sim", "BTC-USDT", 100 + i, 0.25);
    assert_true(fx_wait_delivered(&f, "u1", 64, 5000));
    assert_true(fx_wait_logs(&f, "u1", "done", 1, 5000));
    json_t *logs = fx_logs(&f, "u1", "done");
    assert_string_equal(tu_jstr(logs, "0.msg"), "done 64 0 0");
    json_decref(logs);
    assert_true(fx_running(&f, "u1"));
    fx_close(&f);
}

/* Orders once per trade, quantity = the trade's price, so the orders'
 * sequence is checkable; the second form also orders once per tick of a
 * 1 ms interval (side 'sell'): a worker polling for its next event must
 * still run its timers, and one without timers must still be woken. */
#define PACED_HANDLER                                                                              \
    "    return { onTrade(ctx, evt, p) {\n"                                                        \
    "      env.runtime.submitOrder('sim', 'buy', p.price, p.price);\n"                             \
    "    } };"
static const char *const PACED_ORDERER = PACED_HANDLER;
static const char *const PACED_TICKING_ORDERER =
    "    setInterval(() => env.runtime.submitOrder('sim', 'sell', 1, 1), 1);\n" PACED_HANDLER;

/* Busy-waits: a pause shorter than any sleep the scheduler would grant. */
static void spin_us(int us)
{
    int64_t until = clock_mono_ns() + (int64_t)us * 1000;
    while (clock_mono_ns() < until)
        ;
}

/* One feed through the phases a worker's wait can take: a burst, events
 * further apart than the poll window (it sleeps between them), a burst
 * again, and events closer together than the window (it polls), the last
 * of them arriving while it polls. */
/* The last stretch's spacing: under the sanitizers a delivery can take
 * longer than 20 us (under ThreadSanitizer on a loaded machine, longer
 * than 50), and a worker never idle between events never polls. */
#ifdef STRATD_SANITIZE
#define PACED_SPACING_US 200
#else
#define PACED_SPACING_US 20
#endif

static int paced_feed(struct fx *f)
{
    int price = 0;
    for (int i = 0; i < 300; i++)
        fx_trade(f, "sim", "BTC-USDT", ++price, 1);
    for (int i = 0; i < 40; i++) {
        fx_trade(f, "sim", "BTC-USDT", ++price, 1);
        fx_sleep_ms(2);
    }
    for (int i = 0; i < 300; i++)
        fx_trade(f, "sim", "BTC-USDT", ++price, 1);
    for (int i = 0; i < 2000; i++) {
        spin_us(PACED_SPACING_US);
        fx_trade(f, "sim", "BTC-USDT", ++price, 1);
    }
    return price;
}

struct paced_orders {
    int trades[2], ticks[2];
    bool in_order;
};

static struct paced_orders count_paced_orders(struct fx *f)
{
    struct paced_orders c = {{0, 0}, {0, 0}, true};
    double last[2] = {0, 0};
    size_t n = fx_order_count(&f->market);
    for (size_t i = 0; i < n; i++) {
        struct order_request r = fx_order(&f->market, i);
        int who = strcmp(r.instance_id, "p1") == 0 ? 0 : 1;
        if (r.side == SIDE_SELL) {
            c.ticks[who]++;
            continue;
        }
        c.in_order = c.in_order && r.quantity == last[who] + 1;
        last[who] = r.quantity;
        c.trades[who]++;
    }
    return c;
}

/* One paced feed into a runtime of `workers` workers polling up to
 * `poll_us`: every event reaches every instance, in order, timers keep
 * running, and the workers polled for events exactly when they should. */
static void run_paced_feed(int workers, int poll_us)
{
    struct fx f;
    fx_open(&f, workers);
    runtime_free(f.rt);
    f.opts.event_poll_us = poll_us;
    fx_start_runtime(&f);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "ticking", "['Trade']", NULL, PACED_TICKING_ORDERER, hex);
    fx_add_module(&f, "paced", "['Trade']", NULL, PACED_ORDERER, hex);
    /* one on each of two workers: the second has no timer to wake it */
    fx_run(&f, "p1", "ticking", NULL, NULL);
    fx_run(&f, "p2", "paced", NULL, NULL);
    int n = paced_feed(&f);
    if (!fx_wait_delivered(&f, "p1", n, 10000) || !fx_wait_delivered(&f, "p2", n, 10000))
        fail_msg("%d workers, event_poll_us %d: %lld and %lld of %d trades delivered", workers,
                 poll_us, fx_delivered(&f, "p1"), fx_delivered(&f, "p2"), n);
    struct paced_orders c = count_paced_orders(&f);
    if (!c.in_order || c.trades[0] != n || c.trades[1] != n)
        fail_msg("%d workers, event_poll_us %d: orders for %d and %d of %d trades (in order: %d)",
                 workers, poll_us, c.trades[0], c.trades[1], n, c.in_order);
    /* the feed lasts well over 100 ms: a 1 ms interval that fired a
     * handful of times or not at all was starved by the worker */
    if (c.ticks[0] < 10 || c.ticks[1] != 0)
        fail_msg("%d workers, event_poll_us %d: the interval ticked %d times (and %d)", workers,
                 poll_us, c.ticks[0], c.ticks[1]);
    struct runtime_stats st;
    runtime_stats(f.rt, &st);
    bool polls = poll_us > 0 && workers <= sysconf(_SC_NPROCESSORS_ONLN);
    if (polls != (st.event_poll_ns > 0))
        fail_msg("%d workers on %ld CPUs, event_poll_us %d: polled for events %.3f ms", workers,
                 sysconf(_SC_NPROCESSORS_ONLN), poll_us, (double)st.event_poll_ns / 1e6);
    fx_close(&f);
}

/* Whether a worker sleeps between events or polls for the next one
 * (runtime.event_poll_us), a feed arrives whole and in order. */
/* The default window, or under the sanitizers one their slower deliveries
 * fit in: batches a sanitized worker takes can lie further apart than
 * 100 us, and then it rightly never polls. */
#ifdef STRATD_SANITIZE
#define PACED_WINDOW_US 1000
#else
#define PACED_WINDOW_US RUNTIME_EVENT_POLL_US
#endif

static void test_paced_feed_under_each_poll_setting(void **state)
{
    (void)state;
    const int settings[] = {0, PACED_WINDOW_US, 10000};
    for (size_t k = 0; k < sizeof settings / sizeof settings[0]; k++)
        run_paced_feed(2, settings[k]);
}

/* Workers that outnumber the CPUs sleep between events whatever the
 * setting: polling, they would hold the cores the others need. */
static void test_workers_beyond_the_cores_sleep(void **state)
{
    (void)state;
    run_paced_feed((int)sysconf(_SC_NPROCESSORS_ONLN) + 1, RUNTIME_EVENT_POLL_US);
}

static void test_log_limits(void **state)
{
    (void)state;
    struct fx f;
    fx_open(&f, 1);
    runtime_free(f.rt);
    f.opts.log_lines_per_second = 5;
    fx_start_runtime(&f);
    char hex[HASH_HEX_LEN + 1];
    fx_add_module(&f, "chatty", "['Trade']", NULL,
                  "    return { onTrade(ctx, evt) {\n"
                  "      if (evt.seq === 1) env.helpers.log('x'.repeat(10000));\n"
                  "      else for (let i = 0; i < 50; i++) env.helpers.log('line', i);\n"
                  "    } };",
                  hex);
    fx_run(&f, "c1", "chatty", NULL, NULL);
    fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait_logs(&f, "c1", "xxxx", 1, 2000));
    json_t *logs = fx_logs(&f, "c1", "xxxx");
    assert_int_equal(strlen(tu_jstr(logs, "0.msg")), LOG_MESSAGE_MAX);
    assert_true(json_is_true(tu_jget(logs, "0.truncated")));
    json_decref(logs);
    fx_sleep_ms(1100); /* a fresh one-second window */
    fx_trade(&f, "sim", "BTC-USDT", 1, 1);
    assert_true(fx_wait_logs(&f, "c1", "dropped", 1, 3000));
    logs = fx_logs(&f, "c1", "line");
    assert_true(json_array_size(logs) >= 5 && json_array_size(logs) <= 10);
    json_decref(logs);
    logs = fx_logs(&f, "c1", "dropped");
    assert_non_null(strstr(tu_jstr(logs, "0.msg"), "log lines"));
    json_decref(logs);
    fx_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_payloads),
        cmocka_unit_test(test_order_across_instances),
        cmocka_unit_test(test_publishers_share_a_full_queue),
        cmocka_unit_test(test_runs_reach_each_worker_in_order),
        cmocka_unit_test(test_runs_over_many_workers),
        cmocka_unit_test(test_commands_served_inside_a_run),
        cmocka_unit_test(test_missing_handlers_cost_nothing),
        cmocka_unit_test(test_subscribed_events),
        cmocka_unit_test(test_orders_and_exec_reports),
        cmocka_unit_test(test_host_helpers),
        cmocka_unit_test(test_sandbox_isolation),
        cmocka_unit_test(test_fresh_sandbox_per_start),
        cmocka_unit_test(test_lazy_event_objects),
        cmocka_unit_test(test_lazy_objects_dropped_or_kept),
        cmocka_unit_test(test_reused_objects_unobservable),
        cmocka_unit_test(test_log_limits),
        cmocka_unit_test(test_paced_feed_under_each_poll_setting),
        cmocka_unit_test(test_workers_beyond_the_cores_sleep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
