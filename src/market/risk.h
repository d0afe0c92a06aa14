/*
 * risk: the gateway's runtime risk limits (the contract's RiskConfig,
 * GET/PUT /risk/limits), internal to src/market.
 *
 * The limits are gateway-wide: every order any instance submits meets them
 * in ops_submit (market.c), on the submitting thread, before its provider
 * sees it. A refused order never reaches the engine or the store; the
 * market answers MARKET_SUBMIT_RISK (or MARKET_SUBMIT_RISK_STOP once the
 * instance has had maxRiskBreaches refusals, runtime/event.h) with a
 * message that names the limit, and counts it in
 * stratd_risk_rejections_total{limit}. Cancels never meet the limits.
 * docs/OPERATIONS.md ("Risk limits") gives each limit's exact meaning.
 *
 * What the checks need besides the order
 * - the symbol's last trade price: the session's quote (sim_quote);
 * - each symbol's circuit breaker, moved by its trades (risk_trade);
 * - each instance's open orders: counted here, +1 when an order is
 *   admitted, -1 when the engine reports its final state (risk_order_done);
 * - each instance's net filled position per provider and symbol: summed
 *   from the engine's fills (risk_fill), starting from the position the
 *   store held for the instance's id when the provider first started
 *   (risk_positions_load: the store sums every execution it records);
 * - each instance's throttle bucket.
 * Those live in lock-free tables the order path reads without a lock; an
 * instance's entries leave them when it is deleted (risk_retire), the
 * breakers stay until risk_free().
 *
 * Threads
 * - risk_update(), risk_json(): any thread; serialised on the risk's own
 *   lock, which the order path never takes.
 * - risk_admit(), risk_unadmit(): the instance's submitting thread (one
 *   worker per instance), holding the provider's session lock so that the
 *   session stays alive. The limits are read through a seqlock (an order
 *   sees the old limits or the new, never a mix); with every limit off an
 *   order costs that read and its open-order count, no lock. A circuit
 *   breaker, when enabled, takes its symbol's spin lock for a few loads.
 * - risk_order_done(), risk_fill(), risk_trade(): the holder of a
 *   session's engine.
 * - risk_metrics_write(): any thread.
 */
#ifndef STRATD_MARKET_RISK_H
#define STRATD_MARKET_RISK_H

#include "core/err.h"
#include "core/strbuf.h"
#include "runtime/event.h"
#include "store/store.h"

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

struct risk;
struct sim;

/* The setting key of the persisted RiskConfig (store_setting_*). */
#define RISK_SETTING "risk"

/* Every limit off (the contract's defaults). NULL when out of memory. */
struct risk *risk_new(void);
/* Frees everything; no order may be in flight. */
void risk_free(struct risk *r);

/* Applies the RiskConfig stored under RISK_SETTING, if any; call it before
 * any order can arrive. A key the stored document lacks (stored before the
 * key existed) takes its default, with a warning. A document that does not
 * validate, or cannot be read, fails (ERR_INVALID, or the store's error)
 * and leaves the defaults in place: the caller must not trade on them. */
int risk_load(struct risk *r, struct store *store, struct err *err);

/* Validates a whole RiskConfig, persists it (store may be NULL) and
 * applies it. ERR_INVALID with details.field naming the first bad key
 * (unknown keys, missing keys, wrong types, negative numbers, bad decimals
 * or durations, unknown order types); nothing changes on failure, nor when
 * the store refuses the write. *previous (if non-NULL) receives the limits
 * this call replaced, taken under the same lock (a new reference; NULL
 * when out of memory or on failure). */
int risk_update(struct risk *r, const json_t *config, struct store *store, json_t **previous,
                struct err *err);
/* The RiskConfig in force (new reference); NULL when out of memory. */
json_t *risk_json(struct risk *r);

/* Checks an order against the limits in force. 0: admitted (counted open
 * until risk_order_done or risk_unadmit); MARKET_SUBMIT_RISK or
 * MARKET_SUBMIT_RISK_STOP with `error` naming the limit; and
 * MARKET_SUBMIT_REFUSED when out of memory. `s` is the order's running
 * session (its quotes), kept alive by the caller. */
int risk_admit(struct risk *r, struct sim *s, const struct order_request *req, char *error,
               size_t size);
/* An admitted order that its provider did not take after all. */
void risk_unadmit(struct risk *r, uint32_t instance_key);
/* Whether the kill switch is on (every new order refused). Any thread; a
 * read of the limits, no lock. */
bool risk_kill_switch(struct risk *r);

/* What a trade did to its symbol's circuit breaker. */
enum risk_trade_effect {
    RISK_TRADE_QUIET,
    RISK_TRADE_HALTED,  /* it moved the price beyond the threshold: halted */
    RISK_TRADE_RESUMED, /* the first trade after a halt ended */
};
/* Engine, for every trade its provider prints: moves the symbol's circuit
 * breaker, when enabled, with the trade's price at `now_ns` (monotonic).
 * For HALTED and RESUMED `reason` receives the words of the RiskControl
 * event the provider publishes. Costs a relaxed load while the breaker is
 * off. */
enum risk_trade_effect risk_trade(struct risk *r, uint16_t provider, uint16_t symbol, double price,
                                  int64_t now_ns, char *reason, size_t size);

/* Engine: an order of `instance_key` reached its final state. */
void risk_order_done(struct risk *r, uint32_t instance_key);
/* Engine: a fill of `qty` (negative for a sell) moved the instance's net
 * position in (provider, symbol). */
void risk_fill(struct risk *r, uint32_t instance_key, const char *instance_id, uint16_t provider,
               uint16_t symbol, double qty);

/* Reads the net positions the store holds for `provider` (store may be
 * NULL: none), once per provider in the gateway's life, before its first
 * session runs: an instance's position then starts from its fills before
 * this start. Later sessions of the provider read nothing, since every
 * fill since is counted here already. Any thread (under the risk's lock).
 * -1 with `err` when the store cannot be read or memory runs out;
 * the positions then start from zero. */
int risk_positions_load(struct risk *r, struct store *store, uint16_t provider,
                        const char *provider_name, struct err *err);

/* The instance `instance_id` is deleted: a position entry made from now
 * on for that id starts flat instead of from the position carried over
 * from before this start. Any thread (under the risk's lock). */
void risk_forget(struct risk *r, const char *instance_id);

/* A symbol its circuit breaker halts now (risk_halts). */
struct risk_halt {
    uint16_t provider, symbol;
    int64_t remaining_ns; /* until orders are accepted again */
    double move;          /* the move that halted it, in percent */
};
/* Calls `fn` for each symbol halted at `now_ns` (monotonic); none while the
 * breaker is off. Any thread; `fn` runs on the caller's thread with no lock
 * of the risk's held. */
void risk_halts(struct risk *r, int64_t now_ns, void (*fn)(void *ctx, const struct risk_halt *h),
                void *ctx);

/* Entries of a deleted instance, unlinked from the tables (risk_retire). */
struct risk_node;
/* Unlinks what the checks keep for the instance (its open orders, throttle
 * and positions) and returns it. Call only once nothing can submit, cancel
 * or fill for the key any more; an order path or engine that found an entry
 * before may still be reading it, so the caller frees the list with
 * risk_release() once every such reader is done (market.c passes through
 * every session's locks). Any thread (under the risk's lock). */
struct risk_node *risk_retire(struct risk *r, uint32_t instance_key);
void risk_release(struct risk_node *retired);

/* stratd_risk_rejections_total{limit}, every limit always present;
 * stratd_risk_entries{table}, the entries the checks keep;
 * stratd_risk_halts_total and stratd_risk_halted_symbols, the circuit
 * breaker's halts begun and in force. Any thread; takes no lock of the
 * risk's but each breaker's, briefly, to read its halt. */
void risk_metrics_write(struct risk *r, struct strbuf *out);

#endif
