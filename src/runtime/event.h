/*
 * event: the market events that flow from providers into instances, and the
 * order requests that flow back.
 *
 * An event is created once by its provider and shared, read-only, by every
 * worker that delivers it: one Trade fanned out to 10,000 instances is one
 * allocation. Reference counting decides when it is freed.
 *
 * Contract
 * - event_new() returns an event with one reference, owned by the caller.
 *   Whoever passes an event to an event_sink hands over that reference.
 * - After it is published an event is immutable; any thread may read it and
 *   event_retain()/event_release() it.
 * - `provider` and `symbol` are core/intern.h ids; `symbol` is 0 for events
 *   that concern a whole provider (balances).
 * - `target` != 0 makes the event directed: it goes to the one instance with
 *   that key (execution reports), not to subscribers.
 */
#ifndef STRATD_RUNTIME_EVENT_H
#define STRATD_RUNTIME_EVENT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Same order as js_event_names (js/validate.h). */
enum event_kind {
    EVENT_TRADE,
    EVENT_TICKER,
    EVENT_BOOK_SNAPSHOT,
    EVENT_EXEC_REPORT,
    EVENT_KLINE_SUMMARY,
    EVENT_INSTRUMENT_UPDATE,
    EVENT_BALANCE_UPDATE,
    EVENT_RISK_CONTROL,
    EVENT_EXTENSION,
    EVENT_KIND_COUNT
};

enum order_side { SIDE_BUY, SIDE_SELL };
enum order_type { ORDER_MARKET, ORDER_LIMIT };

enum exec_status {
    EXEC_ACKNOWLEDGED,
    EXEC_PARTIAL_FILL,
    EXEC_FILLED,
    EXEC_CANCELLED,
    EXEC_REJECTED,
    EXEC_EXPIRED,
};

#define EVENT_ORDER_ID_MAX 48
#define EVENT_ASSET_MAX 16
#define EVENT_REASON_MAX 128

struct book_level {
    double price;
    double quantity;
};

struct event_trade {
    double price;
    double quantity;
    enum order_side side; /* the aggressor's side */
    uint64_t trade_id;
};

struct event_ticker {
    double last, bid, ask, bid_size, ask_size, volume;
};

/* levels[0..depth) are bids (best first), levels[depth..2*depth) asks. */
struct event_book {
    uint32_t depth;
    struct book_level levels[];
};

struct event_kline {
    int64_t start_ms, end_ms;
    double open, high, low, close, volume;
    uint32_t trades;
};

struct event_balance {
    char asset[EVENT_ASSET_MAX];
    double total, available;
};

struct event_exec {
    enum exec_status status;
    char client_order_id[EVENT_ORDER_ID_MAX];
    char order_id[EVENT_ORDER_ID_MAX];
    enum order_side side;
    enum order_type type;
    double quantity;      /* ordered */
    double price;         /* limit price, 0 for market orders */
    double last_quantity; /* this fill */
    double last_price;
    double filled_quantity; /* cumulative */
    double remaining_quantity;
    double average_price;
    double fee;
    char fee_asset[EVENT_ASSET_MAX];
    bool dry_run;
    char reason[EVENT_REASON_MAX]; /* rejections and cancels */
};

struct event_instrument {
    double tick_size, lot_size, min_quantity;
    bool trading;
};

struct event_risk {
    char reason[EVENT_REASON_MAX];
};

struct event {
    atomic_uint refs;
    uint8_t kind; /* enum event_kind */
    uint16_t provider;
    uint16_t symbol;
    uint32_t target;         /* instance key for directed events, 0 = broadcast */
    uint64_t seq;            /* per provider, strictly increasing */
    int64_t created_ns;      /* clock_mono_ns() at creation, for latency figures */
    int64_t ts_ms;           /* market time, ms since the epoch */
    struct event_pool *pool; /* event.c's alone: where it is recycled; NULL: malloc's */
    struct event *next_free; /* event.c's alone: its link once released */
    union {
        struct event_trade trade;
        struct event_ticker ticker;
        struct event_kline kline;
        struct event_balance balance;
        struct event_exec exec;
        struct event_instrument instrument;
        struct event_risk risk;
        struct event_book book; /* last: has a flexible array */
    } u;
};

/* `extra` bytes follow the event (book levels). NULL when out of memory.
 * Events without extra bytes are recycled through a pool of the creating
 * thread (event.c says why), so a release from any thread stays cheap. */
struct event *event_new(enum event_kind kind, size_t extra);
static inline void event_retain(struct event *ev)
{
    atomic_fetch_add_explicit(&ev->refs, 1, memory_order_relaxed);
}
void event_release(struct event *ev);
/* Lets each pool make up to `events` (never lowers the bound; 16,384 to
 * begin with): a runtime reserves what its queues can hold. Any thread. */
void event_pool_reserve(size_t events);
/* Hands the events this thread released since its last flush back to
 * their pools (releases are gathered and returned 64 at a time). A thread
 * that releases events calls it before it sleeps (a worker polling for its
 * next event does not); thread exit does it too. */
void event_flush_returns(void);

/* Canonical name ("Trade") and handler name ("onTrade"); for exec reports
 * the handler depends on the status (see event_exec_handler). */
const char *event_kind_name(enum event_kind kind);
const char *event_exec_handler(enum exec_status status);
const char *event_exec_status_name(enum exec_status status); /* "acknowledged" ... */
const char *order_side_name(enum order_side side);           /* "buy" | "sell" */
const char *order_type_name(enum order_type type);           /* "market" | "limit" */

/* Where a provider sends events. publish() takes over the caller's
 * reference. It may block while consumers are saturated (back-pressure):
 * that is how an unpaced simulated market runs "as fast as the consumers
 * take them". publish_run() (NULL: publish() each in turn) does the same
 * for `n` events in their order, which lets a consumer's queue take them
 * in one step; a provider that builds several events at once uses it. It
 * takes over the caller's reference to each event; the array itself stays
 * the caller's and is not written.
 * wants() (NULL: every event is wanted) says whether anyone
 * may take an event of that provider, symbol and kind, so a provider can
 * skip building one nobody would receive; a subscription that arrives
 * just after a false answer misses that one event, as if it had come
 * just after the event. All callable from any thread. */
struct event_sink {
    void *ctx;
    void (*publish)(void *ctx, struct event *ev);
    bool (*wants)(void *ctx, uint16_t provider, uint16_t symbol, enum event_kind kind);
    void (*publish_run)(void *ctx, struct event **evs, size_t n);
};

/* Publishes evs[0..n) through the sink's publish_run(), or one by one. */
void event_sink_publish_run(const struct event_sink *sink, struct event **evs, size_t n);

/* An order leaving an instance for a provider. */
struct order_request {
    uint32_t instance_key; /* where execution reports go (event.target) */
    char instance_id[129];
    uint16_t provider;
    uint16_t symbol;
    enum order_side side;
    enum order_type type;
    double quantity;
    double price; /* limit orders */
    char client_order_id[EVENT_ORDER_ID_MAX];
    bool dry_run;
    int64_t created_ns;         /* when the strategy submitted it */
    int64_t trigger_created_ns; /* created_ns of the event being handled, 0 if none */
    uint32_t risk_breaches;     /* the instance's orders refused by risk limits since its start */
};

struct market_quote {
    double last, bid, ask;
    bool valid; /* false until the provider has priced the symbol */
};

/* What market_ops.submit answers. 0: the order went to its provider.
 * MARKET_SUBMIT_REFUSED: refused at once for another reason (unknown or
 * stopped provider, out of memory). MARKET_SUBMIT_RISK: refused by the
 * gateway's risk limits, a breach the instance counts (`error` names the
 * limit: "risk: maxNotionalValue 5000 USDT exceeded (6021.5)").
 * MARKET_SUBMIT_RISK_STOP: the same, and with this breach the instance has
 * had maxRiskBreaches of them (req->risk_breaches + 1): stop it (reason
 * riskBreaches). Every non-zero answer is a refusal; nothing reached the
 * provider. */
enum market_submit_rc {
    MARKET_SUBMIT_OK = 0,
    MARKET_SUBMIT_REFUSED = -1,
    MARKET_SUBMIT_RISK = -2,
    MARKET_SUBMIT_RISK_STOP = -3,
};

/* What the runtime needs from markets, installed by whoever wires the
 * gateway (the market layer implements it; the runtime never includes
 * market headers). Every function is callable from any worker thread and
 * must not block for long: submit and cancel enqueue and return. Errors
 * that can be known at once (unknown provider, a risk limit) are returned
 * (submit: enum market_submit_rc); everything else (size, balance, unknown
 * symbol) comes back as a rejection report. Cancels are never refused by
 * risk limits. */
struct market_ops {
    void *ctx;
    int (*submit)(void *ctx, const struct order_request *req, char *error, size_t error_size);
    int (*cancel)(void *ctx, uint32_t instance_key, uint16_t provider, const char *client_order_id,
                  char *error, size_t error_size);
    bool (*quote)(void *ctx, uint16_t provider, uint16_t symbol, struct market_quote *out);
    /* Whether an order to the provider could be placed: its session runs
     * and the risk limits' kill switch is off. */
    bool (*trading_active)(void *ctx, uint16_t provider);
    /* The instance is deleted and will submit nothing more: its resting
     * orders on every running provider are cancelled and its position is
     * forgotten (an instance created later under the same id starts flat).
     * Unlike the calls above it blocks until every provider thread has run
     * the cancel: call it from a control thread once the instance's worker
     * has let go of it, never from a worker or a provider thread. May be
     * NULL. */
    void (*forget)(void *ctx, uint32_t instance_key, const char *instance_id);
    /* The instance stopped for a failure and nothing is left to manage its
     * orders: the cancel of its resting orders on every running provider is
     * queued, each reported with `reason` (a literal), behind the orders it
     * queued before. Returns without waiting, like submit: a worker calls it
     * once the failed VM is gone. May be NULL. */
    void (*abandon)(void *ctx, uint32_t instance_key, const char *instance_id, const char *reason);
    /* The symbol's instrument as the provider's InstrumentUpdates give it:
     * its sizes as last announced, and `trading` whether its session runs
     * now. It is a read of state the provider keeps, not an event, so it
     * takes nothing from the provider's event sequence: an instance that
     * started after the announcement asks for what it missed. false (*out
     * zeroed) when the provider has announced nothing yet (never started)
     * or does not carry the symbol. Takes only the provider's session lock,
     * as quote does. May be NULL. */
    bool (*instrument)(void *ctx, uint16_t provider, uint16_t symbol, struct event_instrument *out);
};

#endif
