/*
 * sim: internals of the `simulated` adapter, shared by the files of
 * src/market only (nothing outside this folder includes it).
 *
 *   adapters.c   settings: parsing with field-named errors, the effective
 *                settings JSON, the AdapterMetadata with settingsSchema
 *   simulated.c  the PRNG, the price process, event generation, the
 *                provider thread, its order queue and the quotes
 *   matching.c   orders: validation, matching against the book, resting
 *                limit orders, fees, the account (balances) and records
 *   records.c    the contract's order, execution and balance records as
 *                JSON text (any thread; pure functions of their arguments)
 *   persist.c    the store writer: records built and committed in batches
 *                on a thread of their own
 *
 * Threads
 * - A session (struct sim) is one run of a provider: one thread that
 *   prices the symbols and publishes every event. Everything below marked
 *   "engine" (the books, resting orders, the account's changes, the order
 *   numbers, the record queue, the event sequence) is touched only by the
 *   holder of the session's engine lock: the provider thread for each tick
 *   and each batch of queued orders, or a thread in sim_submit() or
 *   sim_cancel() that found the lock free.
 * - The order path: a submitting thread (a runtime worker) tries the engine
 *   lock and, when it is free, handles first whatever is queued and then
 *   its own order at once, so an order reaches the engine without waiting
 *   for the provider thread to wake up; when the lock is held (a tick is
 *   being published) the order is queued and the provider thread handles
 *   it right after. The submitter never blocks on the engine: it only
 *   tries, and what it matches publishes nothing itself: the reports it
 *   produces wait in the outbox, which the provider thread empties, woken,
 *   before any later event, so the sink is only ever called from the
 *   provider thread and in sequence order.
 * - Other threads touch a session only through sim_submit(), sim_cancel(),
 *   sim_quote(), sim_instrument() and sim_state(); the caller keeps the
 *   session alive (the market holds a per-provider lock around those calls
 *   and detaches the session under it before sim_stop()).
 * - With a store, a session also runs a store writer thread (persist.c)
 *   that sees only the copies the provider thread queues to it (and the
 *   settings' symbols, borrowed like the rest); sim_stop() joins the
 *   provider thread first, then the writer.
 * - The settings and the account are borrowed by a session for its whole
 *   life: the market never replaces them while a session runs.
 */
#ifndef STRATD_MARKET_SIM_H
#define STRATD_MARKET_SIM_H

#include "core/err.h"
#include "core/names.h"
#include "core/strbuf.h"
#include "runtime/event.h"
#include "store/store.h"

#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SIM_ADAPTER "simulated"
#define SIM_SYMBOL_MAX 64   /* characters in a symbol */
#define SIM_MAX_SYMBOLS 64  /* symbols per provider */
#define SIM_MAX_BALANCES 64 /* entries of the balances setting */
#define SIM_MAX_DEPTH 100   /* bookDepth upper bound */
#define SIM_MAX_TICK_RATE 100000.0
#define SIM_MAX_VOLATILITY 0.5
#define SIM_BOOK_EVERY 5   /* a BookSnapshot every 5th tick (from tick 0) */
#define SIM_KLINE_EVERY 50 /* a KlineSummary closing every 50 ticks */
#define SIM_DONE_RING 256  /* finished orders remembered for cancel replies */
#define SIM_RUN_MAX 32     /* events the provider thread publishes together */
#define SIM_RUN_TICKS 64   /* unpaced: ticks at most per hold of the engine */

struct risk;

/* ------------------------------------------------------------ settings */

struct sim_symbol_cfg {
    char symbol[SIM_SYMBOL_MAX + 1];
    char base[EVENT_ASSET_MAX];
    char quote[EVENT_ASSET_MAX];
    double start_price;
};

struct sim_balance_cfg {
    char asset[EVENT_ASSET_MAX];
    double amount;
};

struct sim_settings {
    struct sim_symbol_cfg *symbols;
    size_t nsymbols;
    uint64_t seed;
    double tick_rate; /* ticks per second; 0 = unpaced */
    double volatility;
    uint32_t book_depth;
    double fee_rate;
    struct sim_balance_cfg *balances;
    size_t nbalances;
    /* refuse orders off the symbol's tick or lot size, as venues do */
    bool strict_increments;
};

/* Parses adapter.config (NULL means {}); errors are ERR_INVALID and name
 * the field ("adapter.config.tickRate: expected a number >= 0", details
 * {"field"}). *out is the caller's, freed with sim_settings_free(). */
int sim_settings_parse(const json_t *config, struct sim_settings **out, struct err *err);
void sim_settings_free(struct sim_settings *s);
/* The effective settings, every default filled in (new reference). */
json_t *sim_settings_json(const struct sim_settings *s);
/* "BTC-USDT" -> "BTC", "USDT"; false unless exactly BASE-QUOTE. */
bool sim_split_symbol(const char *symbol, char *base, char *quote);
/* AdapterMetadata of the simulated adapter (new reference). */
json_t *sim_adapter_json(void);

/* The text of a decimal-as-string record field: `v` at 15 significant
 * digits, so a price reads back as written, without an exponent (0.0000001,
 * not 1e-07) unless it would take more than SIM_DECIMAL_MAX - 1 characters;
 * -0 is "0", and a size or price that is not a number (a rejected order's)
 * "NaN", "Infinity" or "-Infinity". */
#define SIM_DECIMAL_MAX 40
void sim_decimal_text(double v, char *out, size_t size);

/* ----------------------------------------------------------------- PRNG */

/* splitmix64: tiny, fast, and fully determined by the seed. */
struct sim_rng {
    uint64_t state;
    double spare_normal; /* the second normal of the last pair drawn */
    bool has_spare;
};

void sim_rng_seed(struct sim_rng *r, uint64_t seed);
uint64_t sim_rng_next(struct sim_rng *r);
double sim_rng_uniform(struct sim_rng *r); /* [0, 1) */
double sim_rng_normal(struct sim_rng *r);  /* standard normal */
/* Moves the stream past `n` draws without making them (the state is a
 * counter), so a tick can reserve draws it may never need. */
void sim_rng_skip(struct sim_rng *r, uint64_t n);
/* The uniform the `i`-th draw after state `from` gives (i counts from 0):
 * the same value sim_rng_uniform() would have returned then. */
double sim_rng_uniform_at(uint64_t from, uint64_t i);

/* -------------------------------------------------------------- account */

struct sim_asset {
    char asset[EVENT_ASSET_MAX];
    double total;
    double available; /* total less what open limit orders hold */
    int64_t updated_ms;
    bool dirty; /* changed since the last BalanceUpdate (engine) */
};

/* A provider's balances. The engine's holder changes them under `lock`;
 * any thread may read them under it. Assets are fixed at creation: every
 * configured asset plus both assets of every symbol. */
struct sim_account {
    pthread_mutex_t lock;
    struct sim_asset *assets;
    size_t nassets;
    int64_t created_ms;
};

struct sim_account *sim_account_new(const struct sim_settings *s);
void sim_account_free(struct sim_account *a);
/* BalanceRecords, newest first, filtered by asset (NULL: all), at most
 * `limit` (<= 0: all). New reference, NULL if out of memory. */
json_t *sim_account_json(struct sim_account *a, const char *provider, const char *asset, int limit);
/* One BalanceRecord (sim_balance_text, parsed); the caller holds a->lock or
 * owns the account. NULL if out of memory. */
json_t *sim_balance_record(const struct sim_account *a, const struct sim_asset *as,
                           const char *provider);

/* ---------------------------------------------------------------- quote */

/* A seqlock: the engine's holder writes, readers retry on a torn read, so
 * a reader never blocks the writer. Doubles travel as their bits. */
struct sim_quote {
    atomic_uint seq;
    _Atomic uint64_t last, bid, ask;
    atomic_bool valid;
};

/* --------------------------------------------------------------- orders */

struct sim_order {
    struct sim_order *next; /* the market's resting list */
    char order_id[EVENT_ORDER_ID_MAX];
    char client_order_id[EVENT_ORDER_ID_MAX];
    char instance_id[129];
    uint32_t instance_key;
    uint16_t symbol;
    size_t market; /* index into sim.markets, SIZE_MAX if unknown */
    enum order_side side;
    enum order_type type;
    enum exec_status state;
    double quantity, price;
    double filled, remaining, notional; /* cumulative but remaining */
    double reserved;                    /* still held of the account for this order */
    unsigned fills;
    bool dry_run;
    int64_t placed_ms, acknowledged_ms, completed_ms, updated_ms;
};

/* What a cancel needs to tell "already filled" from "unknown". */
struct sim_done {
    uint32_t instance_key;
    uint16_t symbol;
    enum exec_status state;
    char client_order_id[EVENT_ORDER_ID_MAX];
    char order_id[EVENT_ORDER_ID_MAX];
};

/* -------------------------------------------------------------- markets */

struct sim_kline {
    int64_t start_ms;
    double open, high, low, close, volume;
    uint32_t trades;
};

/* One symbol's live market, owned by the engine (quote aside). */
struct sim_market {
    const struct sim_symbol_cfg *cfg;
    uint16_t id;
    int tick_exp, lot_exp; /* tick size 10^tick_exp, lot size 10^lot_exp */
    double tick_size, lot_size, base_qty;
    double log_price, bid, ask, last;
    double log_lo, log_hi; /* the price band, as log prices */
    int64_t bid_ticks, ask_ticks, step_ticks;
    uint32_t depth;                 /* levels a side */
    uint32_t priced;                /* levels of this tick's book priced so far */
    uint64_t draws_from;            /* the stream before this tick's size draws (two a level) */
    struct book_level *bids, *asks; /* depth each; matching consumes them */
    uint64_t trade_id;
    double volume;
    struct sim_kline kline;
    struct sim_quote quote;
    struct sim_order *resting; /* open limit orders, oldest first */
};

/* ---------------------------------------------------------- persistence */

/* The store writer (persist.c): the engine's holder hands each change over
 * as plain data, copied; a writer thread of the session builds the records
 * (JSON) and commits them, so the matching engine never waits for a
 * commit. A change is committed at most SIM_BATCH_NS after it was handed
 * over (plus the commit itself), or sooner once SIM_BATCH_MAX are pending.
 * Orders and balances are keyed (by order id, by asset) so a batch writes
 * only the latest version of each. */

enum sim_rec_kind { SIM_REC_ORDER, SIM_REC_EXECUTION, SIM_REC_BALANCE };

struct sim_rec {
    struct sim_rec *next;
    enum sim_rec_kind kind;
    union {
        struct {
            struct sim_order order;           /* a copy; `next` is not followed */
            const struct sim_symbol_cfg *cfg; /* NULL for an unknown symbol */
            double qty, price, fee;           /* executions */
            bool maker;                       /* executions */
            int64_t at_ms;                    /* executions */
            char reason[EVENT_REASON_MAX];    /* orders */
        } o;
        struct {
            struct sim_asset asset;
            int64_t created_ms;
        } b;
    } u;
};

/* The contract's records as compact JSON text appended to sb (records.c):
 * an OrderRecord of an order's state (reason, if any, in its metadata),
 * the ExecutionRecord of an execution change `r` under the id `exec_id`,
 * and a BalanceRecord. A failed append shows in strbuf_failed(sb). */
void sim_order_text(struct strbuf *sb, const char *provider, const struct sim_order *o,
                    const char *reason);
void sim_execution_text(struct strbuf *sb, const char *provider, const struct sim_rec *r,
                        const char *exec_id);
void sim_balance_text(struct strbuf *sb, const char *provider, const struct sim_asset *as,
                      int64_t created_ms);

struct sim_batch {
    struct store *store; /* NULL: nothing is recorded, no thread runs */
    const char *provider;
    pthread_t thread;    /* the writer: builds each batch's rows */
    pthread_t committer; /* commits them (below) */
    pthread_mutex_t lock;
    pthread_cond_t wake; /* the writer: records arrived, or stop */
    pthread_cond_t room; /* the provider: the queue fell below SIM_WRITER_MAX */
    struct sim_rec *head, *tail;
    size_t count;
    atomic_size_t queued; /* count, for sim_batch_crowded() */
    int64_t first_ns;     /* when the oldest queued record arrived */
    bool stopping;
    /* The writer builds rows at the idle scheduling class; the store's
     * lock is taken by the committer, which gets the normal share of the
     * CPU (SCHED_BATCH), since a writer starved of CPU while holding it
     * would hold up the control plane. The four below are under `lock`. */
    pthread_cond_t commit_wake;           /* the committer: rows handed over, or stop */
    pthread_cond_t committed;             /* the writer: the rows handed over are done */
    const struct store_rows *commit_rows; /* handed over; NULL: none */
    struct err *commit_err;
    int commit_rc;
    bool commit_stopping;
};

/* Records per commit: a busy market fills a batch within its deadline, so
 * this bounds the commits per second (each a sync) rather than the delay. */
#define SIM_BATCH_MAX 4096
#define SIM_BATCH_NS 100000000LL /* oldest record waits at most 100 ms */
/* Records queued before the engine's holder waits for the writer: a store
 * slower than the market brakes the market, as a blocking commit did,
 * instead of growing memory without bound (about 8 MB). */
#define SIM_WRITER_MAX 16384

/* Starts the writer thread when store is non-NULL; -1 + err (ERR_INTERNAL)
 * on failure. `provider` is borrowed for the writer's life. */
int sim_batch_start(struct sim_batch *b, struct store *store, const char *provider,
                    struct err *err);
/* How many changes (orders, executions, balances) the writers of every
 * provider could not record since the process began. Any thread. */
uint64_t sim_records_lost(void);
/* When the last of them was lost: wall-clock ms, 0 if none. */
int64_t sim_records_lost_ms(void);
/* The engine's holder. Each copies what it records; out of memory drops
 * the record (logged). They may wait while SIM_WRITER_MAX records are
 * queued, so a submitting thread takes the engine only while the queue is
 * not crowded (half of that): then the provider thread alone waits. */
void sim_batch_order(struct sim_batch *b, const struct sim_order *o,
                     const struct sim_symbol_cfg *cfg, const char *reason);
void sim_batch_execution(struct sim_batch *b, const struct sim_order *o,
                         const struct sim_symbol_cfg *cfg, double qty, double price, double fee,
                         bool maker, int64_t at_ms);
void sim_batch_balance(struct sim_batch *b, const struct sim_asset *as, int64_t created_ms);
/* Any thread, no lock: SIM_WRITER_MAX / 2 records or more are queued. */
bool sim_batch_crowded(const struct sim_batch *b);
/* Commits everything queued, then stops and joins the writer. Called once
 * the provider thread has finished; a no-op for a batch never started. */
void sim_batch_stop(struct sim_batch *b);

/* -------------------------------------------------------------- latency */

/* The tick-to-order histogram of a provider (stratd_tick_to_order_seconds):
 * from the creation of the event an order reacted to (its
 * trigger_created_ns) to the matching engine taking the order (from
 * its submitting thread, or off its queue). The engine's holder is the only writer; any thread may
 * read. The buckets are those of stratd_handler_duration_seconds. */
#define SIM_LATENCY_BUCKETS 12 /* including +Inf */
extern const double sim_latency_bounds[SIM_LATENCY_BUCKETS - 1];

struct sim_latency {
    _Atomic uint64_t buckets[SIM_LATENCY_BUCKETS];
    _Atomic uint64_t sum_ns;
};

void sim_latency_add(struct sim_latency *h, int64_t ns);

/* -------------------------------------------------------------- session */

enum sim_state { SIM_STARTING, SIM_RUNNING };

/* What a session borrows from its provider. */
struct sim_config {
    const char *provider; /* copied */
    uint16_t provider_id;
    const struct sim_settings *settings;
    struct sim_account *account;
    struct event_sink sink;
    struct store *store;
    uint64_t next_order;               /* first exchange order number */
    struct sim_latency *tick_to_order; /* may be NULL; outlives the session */
    struct risk *risk;                 /* may be NULL; outlives the session (risk.h) */
};

enum sim_cmd_kind {
    SIM_CMD_SUBMIT,
    SIM_CMD_CANCEL,          /* req: instance_key and client_order_id */
    SIM_CMD_CANCEL_INSTANCE, /* req: instance_key; every resting order of it, with
                              * cancel_reason */
    SIM_CMD_NOTICE,          /* notice: a provider-wide RiskControl event; then, with
                              * cancel_reason, every resting order cancelled */
};

/* What a caller waiting for its command to be run waits on. */
struct sim_signal {
    pthread_mutex_t lock;
    pthread_cond_t cond;
    bool done;
};

struct sim_cmd {
    struct sim_cmd *next;
    enum sim_cmd_kind kind;
    struct order_request req;
    struct sim_signal *signal; /* NULL: nobody waits */
    const char *notice;        /* SIM_CMD_NOTICE, the waiting caller's */
    /* SIM_CMD_NOTICE (may be NULL) and SIM_CMD_CANCEL_INSTANCE: the waiting
     * caller's, or a literal when nobody waits */
    const char *cancel_reason;
};

struct sim {
    char provider[NAMES_ID_MAX + 1];
    uint16_t provider_id;
    const struct sim_settings *cfg;
    struct sim_account *account;
    struct event_sink sink;
    pthread_t thread;
    atomic_int state; /* enum sim_state */

    /* the order queue (MPSC): any thread pushes, the engine's holder pops */
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct sim_cmd *head, *tail;
    bool stopping;
    atomic_bool pending; /* commands, reports to publish or a stop may wait */

    /* the engine: what its holder touches (see Threads) */
    pthread_mutex_t engine;
    bool direct;           /* the holder is a submitting thread: publish to the outbox */
    struct event **outbox; /* reports of orders matched by submitting threads */
    size_t nout, outcap;
    /* the provider thread's events of this hold of the engine, published
     * together when it lets go (or when full) */
    struct event *run[SIM_RUN_MAX];
    size_t nrun;

    /* provider thread (pacing) and engine (the rest) */
    struct sim_rng rng;
    uint64_t seq;
    uint64_t tick;
    int64_t tick_ns; /* the current tick's monotonic time, its events' created_ns */
    int64_t wall_ms, wall_at_ns, wall_next_ns, last_ts_ms; /* market time (tick_wall_ms) */
    double period_ns;                                      /* between ticks; 0 = unpaced */
    struct sim_latency *tick_to_order;
    struct risk *risk;  /* told of fills and of orders reaching a final state */
    int64_t sched_base; /* pacing: tick n is due at sched_base + n * period */
    uint64_t sched_n;
    struct sim_market *markets;
    size_t nmarkets;
    uint64_t next_order;
    struct sim_done done[SIM_DONE_RING];
    size_t ndone;
    struct sim_batch batch;
};

/* Starts a session's thread. NULL + err (ERR_INTERNAL) on failure. */
struct sim *sim_start(const struct sim_config *cfg, struct err *err);
/* Asks the thread to stop, joins it and frees the session. Orders still
 * queued are handled first; resting orders expire. Returns the next
 * exchange order number so a restart continues the sequence. */
uint64_t sim_stop(struct sim *s);
static inline enum sim_state sim_state(struct sim *s)
{
    return (enum sim_state)atomic_load(&s->state);
}
/* Queue an order or a cancel; -1 with a message when out of memory. */
int sim_submit(struct sim *s, const struct order_request *req, char *error, size_t size);
int sim_cancel(struct sim *s, uint32_t instance_key, const char *client_order_id, char *error,
               size_t size);
/* Cancels every order the instance has resting, each reported cancelled
 * with the reason "the instance was deleted", and returns once that is
 * done. Orders the instance queued earlier are handled first (the queue
 * keeps its order), so none of them is left resting. -1 with a message
 * when out of memory or stopping. Not on the provider thread. */
int sim_cancel_instance(struct sim *s, uint32_t instance_key, char *error, size_t size);
/* Queues the cancel of every order the instance has resting, each reported
 * cancelled with `reason` (a literal: it is read after the call returns),
 * and returns without waiting for it, so a worker may call it. Orders the
 * instance queued earlier are handled first. -1 with a message when out of
 * memory or stopping. */
int sim_abandon_instance(struct sim *s, uint32_t instance_key, const char *reason, char *error,
                         size_t size);
/* Publishes a RiskControl event for the whole provider with `reason` (its
 * subscribers hear of a gateway-wide change, the kill switch) after what
 * is queued, then, when `cancel_reason` is not NULL, cancels every resting
 * order of every instance with that reason; returns once that is done, so
 * an order queued before the call rests no longer. -1 as
 * sim_cancel_instance. */
int sim_notice(struct sim *s, const char *reason, const char *cancel_reason, char *error,
               size_t size);
/* Returns once whoever held the session's engine when it was called has let
 * go of it. Not on the provider thread, nor holding the engine. */
void sim_engine_pass(struct sim *s);
bool sim_quote(struct sim *s, uint16_t symbol, struct market_quote *out);
/* The InstrumentUpdate payload of the session's i-th symbol (i below its
 * nmarkets), `trading` as given; returns the symbol's id. The sizes are
 * fixed before the session's thread starts, so any thread that keeps the
 * session alive may read them. */
uint16_t sim_instrument(const struct sim *s, size_t i, bool trading, struct event_instrument *out);

/* Engine: stamps provider, symbol, seq and ts_ms, then hands the event to
 * the sink (provider thread) or to the outbox (a submitting thread). */
void sim_publish(struct sim *s, struct event *ev, uint16_t symbol);

/* Prices the levels of the current tick's book not priced yet (only the
 * best is priced by the tick). Call before reading bids/asks beyond [0].
 * Provider thread. */
void sim_book_fill(struct sim_market *mk);

/* matching.c, the engine's holder only */
void sim_order_submit(struct sim *s, const struct order_request *req);
void sim_order_cancel(struct sim *s, uint32_t instance_key, const char *client_order_id);
void sim_orders_cancel_instance(struct sim *s, uint32_t instance_key, const char *reason);
void sim_orders_cancel_all(struct sim *s, const char *reason);
/* Resting limit orders that a trade at `price` crosses fill, up to `qty`
 * per side, best limit first, then oldest. */
void sim_orders_on_trade(struct sim *s, struct sim_market *mk, double price, double qty);
/* Every resting order expires with `reason` (on stop). */
void sim_orders_expire_all(struct sim *s, const char *reason);
/* Publishes a BalanceUpdate (and a record) for every changed asset. */
void sim_balances_publish(struct sim *s, bool all);

#endif
