/*
 * market: providers (markets) and the adapters that implement them. The
 * embedded adapter is `simulated`: a deterministic exchange with a price
 * process, an order book and a matching engine.
 *
 * A provider is a named instance of an adapter with settings, e.g. `sim`
 * (adapter simulated, symbols BTC-USDT and ETH-USDT). Each running provider
 * has its own thread: it produces market events into the event sink given at
 * market_new() (the runtime's router); only that thread calls the sink.
 * Orders from any worker are handled in order: by the submitting worker
 * itself when the provider's matching engine is free (no wait for the
 * provider thread to wake), queued to the provider thread when it is busy;
 * their reports are published by the provider thread either way.
 *
 * Simulated adapter settings (ProviderRequest adapter.config, YAML config):
 *   symbols      list of "BASE-QUOTE" symbols            (default BTC-USDT, ETH-USDT)
 *   seed         integer; same settings => same event sequence (default 1)
 *   tickRate     ticks per second per symbol (each tick is at least a Trade
 *                and a Ticker); 0 = unpaced, as fast as consumers take
 *                them (default 10)
 *   volatility   per-tick standard deviation of log price (default 0.0005)
 *   startPrices  {symbol: price}      (default 100 per symbol, BTC 50000, ETH 3000)
 *   bookDepth    levels per side in BookSnapshot           (default 10)
 *   balances     {asset: amount}      (default 100000 of each quote asset, e.g. USDT,
 *                                      and one unit of each base asset)
 *   feeRate      fee per fill as a fraction of its notional (default 0.001)
 * Unknown settings are refused (a misspelt one would otherwise be ignored).
 * Per tick and symbol it emits a Trade and a Ticker; every 5th tick a
 * BookSnapshot; every 50th tick a KlineSummary (the cadence is documented in
 * simulated.c). Orders: market orders fill against the book, across levels
 * (partial fills); limit orders rest and fill when a trade crosses their
 * price; cancel works; unknown symbol, size <= 0 or not a finite number,
 * price <= 0 for a limit, insufficient balance are rejected with a reason.
 * Each step is an ExecReport directed to the owning instance. Dry-run orders
 * are matched the same way but never touch or check balances. Every order
 * and execution is recorded in the store; balances changes are stored and
 * published as BalanceUpdate events to the provider's subscribers.
 *
 * Contract
 * - struct market is thread-safe: any thread may call any function. Calls
 *   that change providers serialise on the market's lock; the order path
 *   (market_ops submit/cancel/quote) takes no market-wide lock.
 * - JSON returned is a new reference in the contract's shapes (Provider,
 *   ProviderDetail, AdapterMetadata, BalanceRecord).
 * - Errors: ERR_INVALID (bad settings, naming the field), ERR_NOT_FOUND
 *   (unknown provider/adapter), ERR_CONFLICT (duplicate name; deleting a
 *   provider that running instances use: details.instances).
 */
#ifndef STRATD_MARKET_MARKET_H
#define STRATD_MARKET_MARKET_H

#include "core/err.h"
#include "core/strbuf.h"
#include "runtime/event.h"
#include "store/store.h"

#include <jansson.h>
#include <stdbool.h>

struct market;

/* Provider names follow names_valid_id() but are at most this long, so an
 * exchange order id "<provider>-<n>" fits EVENT_ORDER_ID_MAX. */
#define MARKET_PROVIDER_NAME_MAX 30
/* Limit orders one instance may have resting on a simulated provider; a
 * limit order beyond them is rejected (see market/matching.c). */
#define MARKET_SIM_MAX_RESTING 1000

/* store may be NULL (tests): nothing is recorded. */
struct market *market_new(struct event_sink sink, struct store *store);
/* Applies the risk limits stored in the store (setting "risk"), before any
 * provider starts, so that the first order meets them. Fails when they
 * cannot be read or no longer validate (see risk_load): a gateway must not
 * start trading without the limits its operator set. Main thread. */
int market_load_risk(struct market *m, struct err *err);
/* When a provider last failed to write orders, executions or balances to
 * the history (wall-clock ms, 0 if never): for readiness checks. Any
 * thread. */
int64_t market_history_lost_ms(void);
/* Stops every provider thread and frees everything. */
void market_free(struct market *m);

/* The hooks the runtime calls (submit, cancel, quote, trading_active,
 * instrument, forget, abandon). */
struct market_ops market_runtime_ops(struct market *m);

/* Creates a provider from a ProviderRequest ({name, adapter: {identifier,
 * config}, enabled}); starts it unless enabled is false. *detail (if
 * non-NULL) receives its ProviderDetail. */
int market_provider_create(struct market *m, const json_t *request, json_t **detail,
                           struct err *err);
/* Replaces a provider's settings (restarting it if it ran). */
int market_provider_update(struct market *m, const char *name, const json_t *request,
                           json_t **detail, struct err *err);
int market_provider_delete(struct market *m, const char *name, struct err *err);
int market_provider_start(struct market *m, const char *name, json_t **detail, struct err *err);
int market_provider_stop(struct market *m, const char *name, json_t **detail, struct err *err);

/* {"providers": [Provider...]} */
json_t *market_providers_json(struct market *m);
/* [{name, status, startupError?}] of the providers that do not run now,
 * without their dependents (a health probe's question: cheap while every
 * provider runs). A new array; NULL when out of memory. */
json_t *market_providers_down(struct market *m);
/* ProviderDetail with instruments; NULL + ERR_NOT_FOUND if unknown. */
json_t *market_provider_json(struct market *m, const char *name, struct err *err);
/* {"balances": [BalanceRecord...], "count"} newest first. */
json_t *market_balances_json(struct market *m, const char *name, const char *asset, int limit,
                             struct err *err);

/* {"adapters": [AdapterMetadata...]} and one AdapterMetadata. */
json_t *market_adapters_json(void);
json_t *market_adapter_json(const char *identifier, struct err *err);

/* Runtime risk limits (the contract's RiskConfig), gateway-wide: every
 * order any instance submits meets them on the submitting thread before
 * its provider sees it (market/risk.h; docs/OPERATIONS.md "Risk limits").
 * Loaded from the store (setting "risk") by market_load_risk(). Any thread.
 * market_risk_json: the RiskConfig in force, a new reference (NULL when out
 * of memory). market_risk_set: validates a whole RiskConfig, persists it
 * and applies it atomically (an order sees the old limits or the new);
 * ERR_INVALID with details.field on bad input, nothing changed then. */
json_t *market_risk_json(struct market *m);
/* The symbols the circuit breaker halts now: [{provider, symbol, until
 * (wall-clock ms), move (percent)}], a new reference (NULL when out of
 * memory). Any thread. */
json_t *market_risk_halts_json(struct market *m);
/* *previous (if non-NULL): the limits the call replaced (risk_update). */
int market_risk_set(struct market *m, const json_t *config, json_t **previous, struct err *err);

/* Appends the market's Prometheus families to `out`:
 * stratd_tick_to_order_seconds{provider}, a histogram per existing
 * provider of the time from the creation of the event an order reacted to
 * (order_request.trigger_created_ns) until the provider's matching engine
 * takes the order (on the submitting thread, or off its queue). Orders without a triggering event
 * are not counted; and stratd_risk_rejections_total{limit}, the orders
 * the risk limits refused, by limit. Any thread. */
void market_metrics_write(struct market *m, struct strbuf *out);

bool market_has_provider(struct market *m, const char *name);
bool market_has_symbol(struct market *m, const char *provider, const char *symbol);

/* Who uses a provider, asked of the layer that owns instances: returns a
 * new JSON array of the ids of the running (or starting) instances scoped
 * to `provider`
 * (NULL means none). Called on the thread that called the market
 * function, holding at most the lock that serialises provider changes
 * (never the one the views, market_has_provider() and the order path
 * take), so it may take the runtime's own locks.
 * With a hook installed, Provider views carry dependentInstances and
 * dependentInstanceCount, and market_provider_delete() refuses
 * (ERR_CONFLICT, details.instances) while the list is not empty. Without
 * one those fields are left out and delete never refuses. */
typedef json_t *(*market_dependents_fn)(void *ctx, const char *provider);
void market_set_dependents(struct market *m, market_dependents_fn fn, void *ctx);
/* True while a delete of the provider asks for its dependents (before it
 * has decided): an instance that asks once it counts as starting is either
 * among the dependents or refused. Other scope checks keep seeing the
 * provider until the delete has succeeded. Any thread. */
bool market_provider_leaving(struct market *m, const char *name);

/* Checks a ProviderRequest as market_provider_create() would and creates
 * nothing. Returns it in the form that recreates the provider it describes:
 * {name, adapter: {identifier, config: every setting, defaults filled in
 * (a Provider view's `settings`)}, enabled (absent: true)}, so two requests
 * for the same provider compare equal with json_equal(). New reference;
 * NULL with err (ERR_INVALID naming the field, ERR_NOT_FOUND for an
 * unknown adapter). Any thread. */
json_t *market_provider_request_canonical(const json_t *request, struct err *err);

#endif
