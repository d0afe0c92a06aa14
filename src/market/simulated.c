/*
 * simulated: the deterministic simulated exchange. One session (struct
 * sim) is one run of a provider: a thread that prices every symbol tick by
 * tick, publishes the market events, and handles the orders queued to it;
 * an order whose submitting thread finds the engine free is matched by
 * that thread at once (sim.h, Threads).
 *
 * Price process (per symbol, per tick, in symbol order)
 *   log price += volatility * N(0,1), reflected into [1e-4, 1e4] x start
 *   spread    = 2 bp of the mid (at least one tick); bid/ask around the mid
 *   book      = bookDepth levels a side, 1 bp apart (at least one tick),
 *               sizes random around 10000 quote units a level, larger deeper
 *   trade     = a buy at the ask or a sell at the bid, random side and size
 * Tick size is 10^(floor(log10(start)) - 6), lot size
 * 10^(floor(log10(10000 / start)) - 4); prices and sizes are whole ticks
 * and lots, computed as integer / power of ten so they print as decimals.
 *
 * Event cadence, tick n (n = 0, 1, ...), per symbol in settings order:
 *   Trade, then the ExecReports (and BalanceUpdates) of the resting
 *   orders that trade fills,
 *   Ticker (last, best bid/ask and their sizes, volume since start),
 *   BookSnapshot when n % SIM_BOOK_EVERY == 0 (so on the first tick),
 *   KlineSummary when (n + 1) % SIM_KLINE_EVERY == 0 (the window's ticks).
 * Before tick 0: an InstrumentUpdate per symbol (trading) and a
 * BalanceUpdate per asset; on stop: resting orders expire and an
 * InstrumentUpdate per symbol says trading stopped.
 *
 * Determinism: everything random comes from one splitmix64 stream seeded
 * by `seed`, drawn in a fixed order per tick (normal, book sizes, trade
 * side, trade size). Orders never draw from it and the simulated market
 * does not react to them (no market impact beyond the current tick's book
 * levels they consume), so the market data depend only on the settings.
 *
 * Pacing: with tickRate > 0, tick n is due at base + n * period, an
 * absolute deadline, so time spent publishing does not drift the rate. The
 * thread waits for it on a condition variable bound to CLOCK_MONOTONIC with
 * an absolute timeout (like clock_nanosleep with TIMER_ABSTIME), so a queued
 * order or a stop wakes it at once. Falling more than a second behind
 * (a slow sink) restarts the schedule instead of bursting to catch up.
 * With tickRate 0 there is no wait: the sink's publish blocking is the only
 * brake (back-pressure), and queued orders are handled between ticks.
 */
#include "market/risk.h"
#include "market/sim.h"

#include "core/clock.h"
#include "core/intern.h"
#include "core/log.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SPREAD_FRACTION 0.0002 /* 2 bp */
#define LEVEL_FRACTION 0.0001  /* 1 bp between levels */
#define LEVEL_NOTIONAL 10000.0 /* quote units of a typical level */
#define PRICE_BAND 1e4         /* the price stays within start / band .. start * band */
#define MAX_BEHIND_NS 1000000000LL

/* ------------------------------------------------------------------ PRNG */

void sim_rng_seed(struct sim_rng *r, uint64_t seed)
{
    *r = (struct sim_rng){.state = seed};
}

#define SPLITMIX_GAMMA 0x9E3779B97F4A7C15ULL

/* splitmix64 (Steele, Lea, Flood): a Weyl sequence through a mixer. */
static uint64_t splitmix_mix(uint64_t z)
{
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static double uniform_of(uint64_t bits)
{
    return (double)(bits >> 11) * 0x1.0p-53;
}

uint64_t sim_rng_next(struct sim_rng *r)
{
    return splitmix_mix(r->state += SPLITMIX_GAMMA);
}

double sim_rng_uniform(struct sim_rng *r)
{
    return uniform_of(sim_rng_next(r));
}

void sim_rng_skip(struct sim_rng *r, uint64_t n)
{
    r->state += n * SPLITMIX_GAMMA; /* wraps as n single steps would */
}

double sim_rng_uniform_at(uint64_t from, uint64_t i)
{
    return uniform_of(splitmix_mix(from + (i + 1) * SPLITMIX_GAMMA));
}

/* Box-Muller: each pair of uniforms gives two independent normals; the
 * second is kept for the next call, which halves the logarithms, square
 * roots and cosines a tick pays for. */
double sim_rng_normal(struct sim_rng *r)
{
    if (r->has_spare) {
        r->has_spare = false;
        return r->spare_normal;
    }
    double u1 = 1.0 - sim_rng_uniform(r); /* (0, 1]: log stays finite */
    double u2 = sim_rng_uniform(r);
    double radius = sqrt(-2.0 * log(u1)), angle = 2.0 * M_PI * u2;
    r->spare_normal = radius * sin(angle);
    r->has_spare = true;
    return radius * cos(angle);
}

/* -------------------------------------------------------------- decimals */

/* 10^n for n <= 22: every one is exactly representable, so the literals
 * are exact (a table: the tick computes dozens of prices and sizes). */
static const double pow10_table[] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,
                                     1e8,  1e9,  1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
                                     1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

static double pow10_exact(int n)
{
    return pow10_table[n < 0 ? -n : n];
}

/* llround() for |v| < 2^62 without the library call: v - trunc(v) is
 * exact in binary floating point, so the comparison with one half decides
 * as llround does (halves away from zero). */
static long long round_units(double v)
{
    long long n = (long long)v;
    double frac = v - (double)n;
    /* no branches: the halves fall at random, a branch would mispredict */
    return n + (frac >= 0.5) - (frac <= -0.5);
}

/* units * 10^exp as the double nearest to that decimal. */
static double from_units(int64_t units, int exp)
{
    return exp < 0 ? (double)units / pow10_exact(-exp) : (double)units * pow10_exact(exp);
}

static int clamp_exp(double v)
{
    int e = (int)floor(log10(v));
    return e < -16 ? -16 : e > 16 ? 16 : e;
}

/* --------------------------------------------------------------- markets */

static int market_init(struct sim_market *mk, const struct sim_symbol_cfg *cfg, uint32_t depth)
{
    mk->cfg = cfg;
    mk->id = intern_id(cfg->symbol);
    mk->tick_exp = clamp_exp(cfg->start_price) - 6;
    mk->tick_size = from_units(1, mk->tick_exp);
    mk->base_qty = LEVEL_NOTIONAL / cfg->start_price;
    mk->lot_exp = clamp_exp(mk->base_qty) - 4;
    mk->lot_size = from_units(1, mk->lot_exp);
    mk->log_price = log(cfg->start_price);
    mk->log_lo = log(cfg->start_price / PRICE_BAND);
    mk->log_hi = log(cfg->start_price * PRICE_BAND);
    mk->depth = depth;
    mk->bids = calloc(depth, sizeof *mk->bids);
    mk->asks = calloc(depth, sizeof *mk->asks);
    return mk->id && mk->bids && mk->asks ? 0 : -1;
}

static double lots(const struct sim_market *mk, double qty)
{
    long long n = round_units(qty / mk->lot_size);
    return from_units(n < 1 ? 1 : n, mk->lot_exp);
}

/* Keeps a long random walk inside the band by reflecting at its edges, so
 * prices never overflow the tick arithmetic or reach zero. */
static void walk_price(struct sim *s, struct sim_market *mk)
{
    double lo = mk->log_lo, hi = mk->log_hi;
    mk->log_price += s->cfg->volatility * sim_rng_normal(&s->rng);
    if (mk->log_price > hi)
        mk->log_price = 2 * hi - mk->log_price;
    if (mk->log_price < lo)
        mk->log_price = 2 * lo - mk->log_price;
}

/* Level i of both sides from the tick's draws. */
static void book_level(struct sim_market *mk, uint32_t i)
{
    long long b = mk->bid_ticks - (long long)i * mk->step_ticks;
    double deeper = 1.0 + 0.25 * i;
    uint64_t draw = 2 * (uint64_t)i; /* two draws a level: bid, then ask */
    double bid_draw = sim_rng_uniform_at(mk->draws_from, draw);
    double ask_draw = sim_rng_uniform_at(mk->draws_from, draw + 1);
    mk->bids[i].price = from_units(b < 1 ? 1 : b, mk->tick_exp);
    mk->bids[i].quantity = lots(mk, mk->base_qty * (0.5 + bid_draw) * deeper);
    mk->asks[i].price = from_units(mk->ask_ticks + (long long)i * mk->step_ticks, mk->tick_exp);
    mk->asks[i].quantity = lots(mk, mk->base_qty * (0.5 + ask_draw) * deeper);
}

/* Prices the best level at once (bid, ask, the ticker's sizes) and only
 * reserves the deeper ones' draws: most ticks publish no BookSnapshot and
 * meet no order, so sim_book_fill() prices them when one of those needs
 * them. The stream moves past every level's draws either way, so the
 * market data do not depend on who looked at the book. */
static void build_book(struct sim *s, struct sim_market *mk)
{
    double mid_ticks = exp(mk->log_price) / mk->tick_size;
    long long spread = round_units(mid_ticks * SPREAD_FRACTION);
    long long step = round_units(mid_ticks * LEVEL_FRACTION);
    spread = spread < 1 ? 1 : spread;
    mk->step_ticks = step < 1 ? 1 : step;
    long long bid = round_units(mid_ticks) - spread / 2;
    mk->bid_ticks = bid < 1 ? 1 : bid;
    mk->ask_ticks = mk->bid_ticks + spread;
    mk->draws_from = s->rng.state;
    sim_rng_skip(&s->rng, 2 * (uint64_t)mk->depth);
    book_level(mk, 0);
    mk->priced = 1;
    mk->bid = mk->bids[0].price;
    mk->ask = mk->asks[0].price;
}

void sim_book_fill(struct sim_market *mk)
{
    for (; mk->priced < mk->depth; mk->priced++)
        book_level(mk, mk->priced);
}

/* ---------------------------------------------------------------- quotes */

/* The seqlock without fences (so thread sanitizers can follow it): the
 * writer marks the sequence odd, then stores the data with release, so a
 * reader that sees any new datum also sees the odd mark; the reader loads
 * the data with acquire, so its second look at the sequence cannot move
 * before them. A reader that saw a torn update finds the sequence moved. */
static void store_double(_Atomic uint64_t *slot, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    atomic_store_explicit(slot, bits, memory_order_release);
}

static double load_double(_Atomic uint64_t *slot)
{
    uint64_t bits = atomic_load_explicit(slot, memory_order_acquire);
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static void quote_write(struct sim_quote *q, double last, double bid, double ask)
{
    unsigned v = atomic_load_explicit(&q->seq, memory_order_relaxed);
    atomic_store_explicit(&q->seq, v + 1, memory_order_relaxed);
    store_double(&q->last, last);
    store_double(&q->bid, bid);
    store_double(&q->ask, ask);
    atomic_store_explicit(&q->seq, v + 2, memory_order_release);
    atomic_store_explicit(&q->valid, true, memory_order_release);
}

static void quote_read(struct sim_quote *q, struct market_quote *out)
{
    for (;;) {
        unsigned a = atomic_load_explicit(&q->seq, memory_order_acquire);
        if (a & 1)
            continue; /* the writer is mid-update; it takes nanoseconds */
        out->last = load_double(&q->last);
        out->bid = load_double(&q->bid);
        out->ask = load_double(&q->ask);
        if (atomic_load_explicit(&q->seq, memory_order_relaxed) == a)
            break;
    }
    out->valid = atomic_load_explicit(&q->valid, memory_order_acquire);
}

bool sim_quote(struct sim *s, uint16_t symbol, struct market_quote *out)
{
    for (size_t i = 0; i < s->nmarkets; i++) {
        if (s->markets[i].id == symbol) {
            quote_read(&s->markets[i].quote, out);
            return out->valid;
        }
    }
    return false;
}

/* ---------------------------------------------------------------- events */

/* Out of memory drops the one report, as new_event() does. */
static void outbox_put(struct sim *s, struct event *ev)
{
    if (s->nout == s->outcap) {
        size_t cap = s->outcap ? s->outcap * 2 : 16;
        struct event **grown = realloc(s->outbox, cap * sizeof(struct event *));
        if (!grown) {
            log_error("market", "provider %s: out of memory, dropping a report", s->provider);
            event_release(ev);
            return;
        }
        s->outbox = grown;
        s->outcap = cap;
    }
    s->outbox[s->nout++] = ev;
}

/* Provider thread: publishes the events of this hold so far. */
static void flush_run(struct sim *s)
{
    event_sink_publish_run(&s->sink, s->run, s->nrun);
    s->nrun = 0;
}

void sim_publish(struct sim *s, struct event *ev, uint16_t symbol)
{
    ev->provider = s->provider_id;
    ev->symbol = symbol;
    ev->seq = ++s->seq;
    if (!ev->created_ns)
        ev->created_ns = clock_mono_ns();
    if (!ev->ts_ms)
        ev->ts_ms = clock_wall_ms();
    if (s->direct) {
        outbox_put(s, ev);
        return;
    }
    s->run[s->nrun++] = ev;
    if (s->nrun == SIM_RUN_MAX)
        flush_run(s);
}

/* Provider thread, taking the engine: what submitting threads matched is
 * published before anything newer. */
static void engine_take(struct sim *s)
{
    pthread_mutex_lock(&s->engine);
    event_sink_publish_run(&s->sink, s->outbox, s->nout);
    s->nout = 0;
}

/* Provider thread: what it published under the engine goes out before a
 * submitting thread can take the engine and publish anything newer. */
static void engine_give(struct sim *s)
{
    flush_run(s);
    pthread_mutex_unlock(&s->engine);
}

/* Whether anyone may take an event of this kind for the market. When
 * nobody would, the event is not built, but its sequence number is taken
 * all the same: the numbers every event carries do not depend on what
 * anyone subscribed to. */
static bool wanted(struct sim *s, const struct sim_market *mk, enum event_kind kind)
{
    if (!s->sink.wants || s->sink.wants(s->sink.ctx, s->provider_id, mk->id, kind))
        return true;
    ++s->seq;
    return false;
}

/* Out of memory drops the one event (seq is only taken when publishing,
 * so the sequence stays gap-free) and says so once per session. */
static struct event *new_event(struct sim *s, enum event_kind kind, size_t extra)
{
    struct event *ev = event_new(kind, extra);
    static _Thread_local bool warned;
    if (!ev && !warned) {
        warned = true;
        log_error("market", "provider %s: out of memory, dropping events", s->provider);
    }
    return ev;
}

static void publish_trade(struct sim *s, struct sim_market *mk, enum order_side side, double qty,
                          int64_t ts)
{
    if (!wanted(s, mk, EVENT_TRADE)) {
        ++mk->trade_id; /* as the sequence number */
        return;
    }
    struct event *ev = new_event(s, EVENT_TRADE, 0);
    if (!ev)
        return;
    ev->ts_ms = ts;
    ev->created_ns = s->tick_ns;
    ev->u.trade = (struct event_trade){mk->last, qty, side, ++mk->trade_id};
    sim_publish(s, ev, mk->id);
}

static void publish_ticker(struct sim *s, struct sim_market *mk, int64_t ts)
{
    if (!wanted(s, mk, EVENT_TICKER))
        return;
    struct event *ev = new_event(s, EVENT_TICKER, 0);
    if (!ev)
        return;
    ev->ts_ms = ts;
    ev->created_ns = s->tick_ns;
    ev->u.ticker = (struct event_ticker){
        mk->last, mk->bid, mk->ask, mk->bids[0].quantity, mk->asks[0].quantity, mk->volume};
    sim_publish(s, ev, mk->id);
}

static void publish_book(struct sim *s, struct sim_market *mk, int64_t ts)
{
    if (!wanted(s, mk, EVENT_BOOK_SNAPSHOT))
        return;
    uint32_t depth = s->cfg->book_depth;
    sim_book_fill(mk);
    struct event *ev =
        new_event(s, EVENT_BOOK_SNAPSHOT, 2 * (size_t)depth * sizeof(struct book_level));
    if (!ev)
        return;
    ev->ts_ms = ts;
    ev->created_ns = s->tick_ns;
    ev->u.book.depth = depth;
    memcpy(ev->u.book.levels, mk->bids, depth * sizeof(struct book_level));
    memcpy(ev->u.book.levels + depth, mk->asks, depth * sizeof(struct book_level));
    sim_publish(s, ev, mk->id);
}

static void kline_add(struct sim *s, struct sim_market *mk, double qty, int64_t ts)
{
    struct sim_kline *k = &mk->kline;
    if (s->tick % SIM_KLINE_EVERY == 0)
        *k = (struct sim_kline){ts, mk->last, mk->last, mk->last, mk->last, 0, 0};
    k->high = fmax(k->high, mk->last);
    k->low = fmin(k->low, mk->last);
    k->close = mk->last;
    k->volume += qty;
    k->trades++;
    if ((s->tick + 1) % SIM_KLINE_EVERY != 0 || !wanted(s, mk, EVENT_KLINE_SUMMARY))
        return;
    struct event *ev = new_event(s, EVENT_KLINE_SUMMARY, 0);
    if (!ev)
        return;
    ev->ts_ms = ts;
    ev->created_ns = s->tick_ns;
    ev->u.kline = (struct event_kline){k->start_ms, ts,       k->open,   k->high,
                                       k->low,      k->close, k->volume, k->trades};
    sim_publish(s, ev, mk->id);
}

uint16_t sim_instrument(const struct sim *s, size_t i, bool trading, struct event_instrument *out)
{
    const struct sim_market *mk = &s->markets[i];
    *out = (struct event_instrument){mk->tick_size, mk->lot_size, mk->lot_size, trading};
    return mk->id;
}

static void publish_instruments(struct sim *s, bool trading)
{
    for (size_t i = 0; i < s->nmarkets; i++) {
        struct event *ev = new_event(s, EVENT_INSTRUMENT_UPDATE, 0);
        if (!ev)
            continue;
        uint16_t symbol = sim_instrument(s, i, trading, &ev->u.instrument);
        sim_publish(s, ev, symbol);
    }
}

/* A RiskControl event for `symbol` (0: the whole provider), which every
 * subscriber is sent whatever `wants` says: it is rare and must not be
 * missed. */
static void publish_risk_control(struct sim *s, uint16_t symbol, const char *reason)
{
    struct event *ev = new_event(s, EVENT_RISK_CONTROL, 0);
    if (!ev)
        return;
    ev->created_ns = clock_mono_ns();
    (void)snprintf(ev->u.risk.reason, sizeof ev->u.risk.reason, "%s", reason);
    sim_publish(s, ev, symbol);
}

/* The gateway's circuit breaker watches every trade; a halt and its end
 * are told to the symbol's subscribers and to the operator's log. */
static void watch_breaker(struct sim *s, const struct sim_market *mk)
{
    char reason[EVENT_REASON_MAX];
    enum risk_trade_effect effect =
        risk_trade(s->risk, s->provider_id, mk->id, mk->last, s->tick_ns, reason, sizeof reason);
    if (effect == RISK_TRADE_QUIET)
        return;
    if (effect == RISK_TRADE_HALTED)
        log_warn("market", "provider %s: %s", s->provider, reason);
    else
        log_info("market", "provider %s: %s", s->provider, reason);
    publish_risk_control(s, mk->id, reason);
}

/* ------------------------------------------------------------------ tick */

static void tick_market(struct sim *s, struct sim_market *mk, int64_t ts)
{
    walk_price(s, mk);
    build_book(s, mk);
    enum order_side side = sim_rng_uniform(&s->rng) < 0.5 ? SIDE_BUY : SIDE_SELL;
    double qty = lots(mk, mk->base_qty * (0.01 + 0.2 * sim_rng_uniform(&s->rng)));
    mk->last = side == SIDE_BUY ? mk->ask : mk->bid;
    mk->volume += qty;
    /* The quote changes before the events go out, so a strategy that reads
     * it while handling this Trade sees the same market. */
    quote_write(&mk->quote, mk->last, mk->bid, mk->ask);
    watch_breaker(s, mk);
    publish_trade(s, mk, side, qty, ts);
    sim_orders_on_trade(s, mk, mk->last, qty);
    publish_ticker(s, mk, ts);
    if (s->tick % SIM_BOOK_EVERY == 0)
        publish_book(s, mk, ts);
    kline_add(s, mk, qty, ts);
}

/* The market time of the tick starting at s->tick_ns: the wall clock read
 * once a second and advanced by the monotonic clock in between, so a tick
 * reads one clock, not two. Between two readings it can differ from the
 * wall clock by the clock's slew over a second (well under a millisecond);
 * it never goes back. */
static int64_t tick_wall_ms(struct sim *s)
{
    if (s->tick_ns >= s->wall_next_ns) {
        s->wall_ms = clock_wall_ms();
        s->wall_at_ns = s->tick_ns;
        s->wall_next_ns = s->tick_ns + 1000000000LL;
    }
    int64_t ts = s->wall_ms + (s->tick_ns - s->wall_at_ns) / 1000000;
    if (ts < s->last_ts_ms)
        ts = s->last_ts_ms;
    s->last_ts_ms = ts;
    return ts;
}

/* Its events share the tick's clock reading, `now`. */
static void tick(struct sim *s, int64_t now)
{
    s->tick_ns = now;
    int64_t ts = tick_wall_ms(s);
    for (size_t i = 0; i < s->nmarkets; i++)
        tick_market(s, &s->markets[i], ts);
    s->tick++;
}

/* The provider thread's tick: under the engine, after what submitting
 * threads matched since the last one. Unpaced, one hold runs ticks until
 * a run of events is half full (or SIM_RUN_TICKS, or until an order or
 * cancel waits), so consumers take the events several at a time. The
 * hold's ticks share the clock read at its start (a reading per tick took
 * an eighth of the thread's time): a hold's events carry its start as
 * their creation, so an order's tick-to-order counts from up to a hold's
 * length (a few microseconds) before its event was made, never after. */
static void engine_tick(struct sim *s)
{
    engine_take(s);
    int64_t now = clock_mono_ns();
    tick(s, now);
    for (int n = 1; s->period_ns <= 0 && n < SIM_RUN_TICKS && s->nrun < SIM_RUN_MAX / 2 &&
                    !atomic_load_explicit(&s->pending, memory_order_relaxed);
         n++)
        tick(s, now);
    engine_give(s);
}

/* ----------------------------------------------------------------- queue */

static void note_tick_to_order(struct sim *s, const struct order_request *req)
{
    if (s->tick_to_order && req->trigger_created_ns > 0)
        sim_latency_add(s->tick_to_order, clock_mono_ns() - req->trigger_created_ns);
}

static void signal_done(struct sim_signal *signal)
{
    pthread_mutex_lock(&signal->lock);
    signal->done = true;
    pthread_cond_signal(&signal->cond);
    pthread_mutex_unlock(&signal->lock);
}

static void run_command(struct sim *s, const struct sim_cmd *c)
{
    switch (c->kind) {
    case SIM_CMD_SUBMIT:
        note_tick_to_order(s, &c->req);
        sim_order_submit(s, &c->req);
        break;
    case SIM_CMD_CANCEL:
        sim_order_cancel(s, c->req.instance_key, c->req.client_order_id);
        break;
    case SIM_CMD_CANCEL_INSTANCE:
        sim_orders_cancel_instance(s, c->req.instance_key, c->cancel_reason);
        break;
    case SIM_CMD_NOTICE:
        publish_risk_control(s, 0, c->notice);
        if (c->cancel_reason)
            sim_orders_cancel_all(s, c->cancel_reason);
        break;
    }
    if (c->signal)
        signal_done(c->signal);
}

/* The engine's holder: runs and frees a list of queued commands. */
static void run_commands(struct sim *s, struct sim_cmd *c)
{
    while (c) {
        struct sim_cmd *next = c->next;
        run_command(s, c);
        free(c);
        c = next;
    }
}

static struct timespec to_timespec(int64_t ns)
{
    return (struct timespec){(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
}

/* Waits until `until` (0: no wait) or until something is pending (a
 * command, reports in the outbox, a stop); says whether something is.
 * Unpaced, most ticks find nothing pending: the flag answers that without
 * the lock or a clock read. */
static bool wait_pending(struct sim *s, int64_t until)
{
    bool pending = atomic_load_explicit(&s->pending, memory_order_acquire);
    if (pending || !until)
        return pending;
    pthread_mutex_lock(&s->lock);
    if (!atomic_load_explicit(&s->pending, memory_order_relaxed) && until > clock_mono_ns()) {
        struct timespec ts = to_timespec(until);
        pthread_cond_timedwait(&s->wake, &s->lock, &ts);
    }
    pending = atomic_load_explicit(&s->pending, memory_order_relaxed);
    pthread_mutex_unlock(&s->lock);
    return pending;
}

/* Takes the queued commands, when anything is pending; *stopping says
 * whether a stop was asked for. Called holding the engine: a command taken
 * off the queue is run before any a submitting thread runs directly, which
 * keeps an instance's order ahead of its cancel. */
static struct sim_cmd *take_commands(struct sim *s, bool *stopping)
{
    *stopping = false;
    if (!atomic_load_explicit(&s->pending, memory_order_acquire))
        return NULL;
    pthread_mutex_lock(&s->lock);
    struct sim_cmd *cmds = s->head;
    s->head = s->tail = NULL;
    *stopping = s->stopping;
    atomic_store_explicit(&s->pending, s->stopping, memory_order_relaxed);
    pthread_mutex_unlock(&s->lock);
    return cmds;
}

/* Provider thread: publishes the outbox and handles the queued commands
 * under the engine, when anything was pending. */
static bool serve_queue(struct sim *s, int64_t until)
{
    if (!wait_pending(s, until))
        return true;
    bool stopping;
    engine_take(s);
    run_commands(s, take_commands(s, &stopping));
    engine_give(s);
    return !stopping;
}

/* Handles orders until the next tick is due. Returns false once a stop was
 * asked for (after handling the orders queued before it). */
static bool wait_next_tick(struct sim *s)
{
    if (s->period_ns <= 0)
        return serve_queue(s, 0);
    s->sched_n++;
    int64_t due = s->sched_base + (int64_t)((double)s->sched_n * s->period_ns);
    for (;;) {
        if (!serve_queue(s, due))
            return false;
        int64_t now = clock_mono_ns();
        if (now < due)
            continue;
        if (now - due > MAX_BEHIND_NS) {
            s->sched_base = now;
            s->sched_n = 0;
        }
        return true;
    }
}

static void *sim_main(void *arg)
{
    struct sim *s = arg;
    /* Running before the first trade is published, so that its handlers
     * see an active market and may order; a submitter's order meets the
     * engine only once this thread lets go of it after the first tick. */
    engine_take(s);
    publish_instruments(s, true);
    sim_balances_publish(s, true);
    s->sched_base = clock_mono_ns();
    atomic_store(&s->state, SIM_RUNNING);
    tick(s, clock_mono_ns());
    engine_give(s);
    while (wait_next_tick(s))
        engine_tick(s);
    /* Nothing can be queued any more: the market detached the session. */
    bool stopping;
    engine_take(s);
    run_commands(s, take_commands(s, &stopping));
    sim_orders_expire_all(s, "provider stopped");
    publish_instruments(s, false);
    engine_give(s);
    return NULL;
}

/* -------------------------------------------------------------- sessions */

static void sim_free(struct sim *s)
{
    for (size_t i = 0; s->markets && i < s->nmarkets; i++) {
        free(s->markets[i].bids);
        free(s->markets[i].asks);
    }
    free(s->markets);
    free(s->outbox);
    free(s);
}

static int sim_init_sync(struct sim *s)
{
    pthread_condattr_t attr;
    if (pthread_condattr_init(&attr) != 0)
        return -1;
    int rc = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    if (rc == 0)
        rc = pthread_cond_init(&s->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (rc != 0)
        return -1;
    if (pthread_mutex_init(&s->lock, NULL) != 0) {
        pthread_cond_destroy(&s->wake);
        return -1;
    }
    if (pthread_mutex_init(&s->engine, NULL) != 0) {
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->wake);
        return -1;
    }
    return 0;
}

static struct sim *sim_new(const struct sim_config *cfg)
{
    struct sim *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    snprintf(s->provider, sizeof s->provider, "%s", cfg->provider);
    s->provider_id = cfg->provider_id;
    s->cfg = cfg->settings;
    s->account = cfg->account;
    s->sink = cfg->sink;
    s->next_order = cfg->next_order;
    atomic_init(&s->state, SIM_STARTING);
    s->tick_to_order = cfg->tick_to_order;
    s->risk = cfg->risk;
    s->period_ns = cfg->settings->tick_rate > 0 ? 1e9 / cfg->settings->tick_rate : 0;
    atomic_init(&s->pending, false);
    sim_rng_seed(&s->rng, cfg->settings->seed);
    s->nmarkets = cfg->settings->nsymbols;
    s->markets = calloc(s->nmarkets, sizeof *s->markets);
    bool ok = s->markets != NULL;
    for (size_t i = 0; ok && i < s->nmarkets; i++)
        ok =
            market_init(&s->markets[i], &cfg->settings->symbols[i], cfg->settings->book_depth) == 0;
    if (!ok) {
        sim_free(s);
        return NULL;
    }
    return s;
}

static void destroy_sync(struct sim *s)
{
    pthread_mutex_destroy(&s->engine);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->wake);
}

struct sim *sim_start(const struct sim_config *cfg, struct err *err)
{
    struct sim *s = sim_new(cfg);
    if (!s) {
        err_set(err, ERR_INTERNAL, "provider %s: out of memory", cfg->provider);
        return NULL;
    }
    if (sim_init_sync(s) < 0) {
        sim_free(s);
        err_set(err, ERR_INTERNAL, "provider %s: cannot create its locks", cfg->provider);
        return NULL;
    }
    if (sim_batch_start(&s->batch, cfg->store, s->provider, err) < 0) {
        destroy_sync(s);
        sim_free(s);
        return NULL;
    }
    int rc = pthread_create(&s->thread, NULL, sim_main, s);
    if (rc != 0) {
        sim_batch_stop(&s->batch);
        destroy_sync(s);
        sim_free(s);
        err_set_errno(err, ERR_INTERNAL, rc, "provider %s: cannot start its thread", cfg->provider);
        return NULL;
    }
    /* "prov:<name>" within the 15 characters a thread name may have, so
     * per-thread profiles tell providers from workers. */
    char name[16];
    snprintf(name, sizeof name, "prov:%.10s", s->provider);
    pthread_setname_np(s->thread, name);
    return s;
}

uint64_t sim_stop(struct sim *s)
{
    pthread_mutex_lock(&s->lock);
    s->stopping = true;
    atomic_store_explicit(&s->pending, true, memory_order_release);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    /* After the provider thread: its last records (expiries) are queued. */
    sim_batch_stop(&s->batch);
    uint64_t next = s->next_order;
    destroy_sync(s);
    sim_free(s);
    return next;
}

static int enqueue(struct sim *s, struct sim_cmd *c, char *error, size_t size)
{
    pthread_mutex_lock(&s->lock);
    bool stopping = s->stopping;
    if (!stopping) {
        if (s->tail)
            s->tail->next = c;
        else
            s->head = c;
        s->tail = c;
        atomic_store_explicit(&s->pending, true, memory_order_release);
        pthread_cond_signal(&s->wake);
    }
    pthread_mutex_unlock(&s->lock);
    if (stopping) {
        free(c);
        if (error && size)
            (void)snprintf(error, size, "provider '%s' is stopping", s->provider);
        return -1;
    }
    return 0;
}

/* Tells the provider thread that the outbox has reports to publish. */
static void notify(struct sim *s)
{
    pthread_mutex_lock(&s->lock);
    atomic_store_explicit(&s->pending, true, memory_order_release);
    pthread_cond_signal(&s->wake);
    pthread_mutex_unlock(&s->lock);
}

/* A submitting thread: when the engine is free, handles what is queued and
 * then `c` itself, publishing into the outbox. False (nothing done) when
 * the engine is busy, the session not running yet, or the record queue
 * crowded, so the caller never waits here. */
static bool run_direct(struct sim *s, const struct sim_cmd *c)
{
    if (sim_state(s) != SIM_RUNNING || sim_batch_crowded(&s->batch) ||
        pthread_mutex_trylock(&s->engine) != 0)
        return false;
    bool stopping;
    s->direct = true;
    run_commands(s, take_commands(s, &stopping));
    run_command(s, c);
    s->direct = false;
    bool reports = s->nout > 0;
    pthread_mutex_unlock(&s->engine);
    if (reports)
        notify(s);
    return true;
}

static int fail_with(char *error, size_t size, const char *why)
{
    if (error && size)
        (void)snprintf(error, size, "%s", why);
    return -1;
}

static int submit_command(struct sim *s, const struct sim_cmd *cmd, char *error, size_t size)
{
    if (run_direct(s, cmd))
        return 0;
    struct sim_cmd *c = malloc(sizeof *c);
    if (!c)
        return fail_with(error, size, "out of memory");
    *c = *cmd;
    return enqueue(s, c, error, size);
}

int sim_submit(struct sim *s, const struct order_request *req, char *error, size_t size)
{
    struct sim_cmd c = {.req = *req};
    return submit_command(s, &c, error, size);
}

int sim_cancel(struct sim *s, uint32_t instance_key, const char *client_order_id, char *error,
               size_t size)
{
    struct sim_cmd c = {.kind = SIM_CMD_CANCEL, .req.instance_key = instance_key};
    (void)snprintf(c.req.client_order_id, sizeof c.req.client_order_id, "%s",
                   client_order_id ? client_order_id : "");
    return submit_command(s, &c, error, size);
}

/* Submits *c and waits until it has run. */
static int submit_and_wait(struct sim *s, struct sim_cmd *c, char *error, size_t size)
{
    struct sim_signal signal = {.done = false};
    if (pthread_mutex_init(&signal.lock, NULL) != 0)
        return fail_with(error, size, "cannot make a lock");
    if (pthread_cond_init(&signal.cond, NULL) != 0) {
        pthread_mutex_destroy(&signal.lock);
        return fail_with(error, size, "cannot make a condition");
    }
    c->signal = &signal;
    int rc = submit_command(s, c, error, size);
    pthread_mutex_lock(&signal.lock);
    while (rc == 0 && !signal.done)
        pthread_cond_wait(&signal.cond, &signal.lock);
    pthread_mutex_unlock(&signal.lock);
    pthread_cond_destroy(&signal.cond);
    pthread_mutex_destroy(&signal.lock);
    c->signal = NULL;
    return rc;
}

int sim_cancel_instance(struct sim *s, uint32_t instance_key, char *error, size_t size)
{
    struct sim_cmd c = {.kind = SIM_CMD_CANCEL_INSTANCE,
                        .req.instance_key = instance_key,
                        .cancel_reason = "the instance was deleted"};
    return submit_and_wait(s, &c, error, size);
}

int sim_abandon_instance(struct sim *s, uint32_t instance_key, const char *reason, char *error,
                         size_t size)
{
    struct sim_cmd c = {
        .kind = SIM_CMD_CANCEL_INSTANCE, .req.instance_key = instance_key, .cancel_reason = reason};
    return submit_command(s, &c, error, size);
}

int sim_notice(struct sim *s, const char *reason, const char *cancel_reason, char *error,
               size_t size)
{
    struct sim_cmd c = {.kind = SIM_CMD_NOTICE, .notice = reason, .cancel_reason = cancel_reason};
    return submit_and_wait(s, &c, error, size);
}

void sim_engine_pass(struct sim *s)
{
    pthread_mutex_lock(&s->engine);
    pthread_mutex_unlock(&s->engine);
}
