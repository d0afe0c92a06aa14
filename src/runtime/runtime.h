/*
 * runtime: strategy instances, each in its own QuickJS sandbox, driven by a
 * fixed pool of worker threads.
 *
 * Threading model
 * - N workers (default: the number of cores). Every instance is owned by one
 *   worker; every touch of its VM (create, events, timers, stop, restart)
 *   runs on that worker's thread, so QuickJS is never entered concurrently.
 * - Each worker has one FIFO queue of messages: market events and commands.
 *   Delivery per instance is therefore in publication order, and a command
 *   (stop, restart on a new revision) takes effect between two events: an
 *   event goes to the old VM or to the new one, never both and never
 *   neither.
 * - runtime_publish() (the event_sink of every provider) runs on provider
 *   threads: it fans an event out to the workers with subscribers (one queue
 *   push per worker, not per instance) and blocks while a worker's queue is
 *   full (back-pressure). A directed event (event.target) goes to its
 *   instance's worker only.
 * - Control-plane calls (runtime_instance_*, runtime_refresh, listings) run
 *   on HTTP threads. They update the instance table under the runtime's
 *   lock, persist through the store, then post commands to workers and wait
 *   for their completion, so a 2xx means the change is durable and done.
 *
 * Limits and failures
 * - Each instance: memory cap (config `memory_limit_mb`, default 64), stack
 *   cap, CPU budget per callback (`cpu_budget_ms`, default 50). Exceeding one
 *   stops the instance with reason memoryLimit / cpuBudget / stackOverflow;
 *   max_consecutive_errors handler exceptions in a row (default 100) stop it
 *   with tooManyErrors. A stop is logged with strategy, hash and instance and
 *   shown in the snapshot (`stopReason`). Other instances are unaffected.
 * - Stop reasons: stopped (a stop call), cpuBudget, memoryLimit,
 *   stackOverflow, tooManyErrors, startFailed (create() failed; also after a
 *   refresh to a revision that does not start), retired (the selector no
 *   longer resolves). Limit stops clear the desired state, so a crashed
 *   strategy stays stopped after a restart. A stop for a failure (all but
 *   stopped and retired) cancels the instance's resting orders unless
 *   keep_orders_on_failure; an operator's stop and a retirement leave them
 *   for the next start to manage, unless the stop asks to cancel them
 *   (runtime_instance_stop_cancelling).
 * - Exceptions are logged under the instance's helpers.log rate limit
 *   (log_lines_per_second) so a throwing strategy cannot flood the log;
 *   every one is counted.
 *
 * Delivery
 * - handler(ctx, evt, payload) with `this` = the handlers object. A
 *   broadcast kind reaches an instance when it is in its subscribed events
 *   (metadata.events, narrowed by subscribedEvents()) and the strategy has
 *   the handler; execution reports (directed events) always reach the
 *   instance that placed the order, whatever it subscribed to.
 * - Under load a worker delivers a run of queued events instance by
 *   instance (every VM takes its events of the run before the next), which
 *   keeps each VM's memory in cache; each instance still sees its events in
 *   publication order.
 * - Client order ids are "<instance>-<n>", n counting from 1 per instance
 *   id and never reused for it, across stops, refreshes, gateway restarts
 *   (SIGKILL included) and a delete followed by a create of the same id,
 *   so an instance's order history never holds two orders under one id.
 *   Numbers are reserved in blocks recorded in the store (a write from the
 *   worker once per block); a crash skips the rest of a block. An instance
 *   id too long for EVENT_ORDER_ID_MAX is cut in the id and marked with a
 *   digest of the whole id ("<start>~<8 hex>-<n>"), so two ids that share
 *   their start still differ (reports are routed by instance key, not by
 *   id).
 *
 * Ownership: JSON returned is a new reference owned by the caller; JSON
 * passed in is borrowed. Errors: ERR_INVALID (bad spec or config, naming the
 * field), ERR_NOT_FOUND (unknown id or selector), ERR_CONFLICT (duplicate id;
 * start of a retired instance: details.reason = "retired"), ERR_UNPROCESSABLE
 * (the module failed to load or create() threw), ERR_INTERNAL.
 */
#ifndef STRATD_RUNTIME_RUNTIME_H
#define STRATD_RUNTIME_RUNTIME_H

#include "core/err.h"
#include "core/strbuf.h"
#include "js/sandbox.h"
#include "registry/registry.h"
#include "runtime/event.h"
#include "store/store.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Checks that a provider exists and carries a symbol (the market layer
 * supplies it; NULL accepts anything). symbol NULL asks only whether the
 * provider exists, so errors can name the unknown part. */
typedef bool (*runtime_scope_fn)(void *ctx, const char *provider, const char *symbol);

/* The default of runtime_options.event_poll_us (and of the configuration's
 * runtime.event_poll_us): see docs/OPERATIONS.md for what it costs. */
#define RUNTIME_EVENT_POLL_US 100

struct runtime_options {
    int workers;                  /* 0: number of online CPUs */
    struct catalog *catalog;      /* borrowed; selectors and sources */
    struct store *store;          /* borrowed; may be NULL (nothing persists) */
    struct market_ops market;     /* orders and quotes */
    runtime_scope_fn scope_check; /* provider/symbol existence */
    void *scope_ctx;
    /* (scope_ctx, provider, NULL): true while the provider's delete is
     * deciding; asked only once a start counts as starting, so that either
     * the delete sees the start or the start sees the delete. NULL: never. */
    runtime_scope_fn scope_leaving;
    const char *environment;    /* metric label, e.g. "dev" */
    struct js_limits limits;    /* defaults per instance (0 fields: sandbox defaults) */
    int max_consecutive_errors; /* 0: 100 */
    size_t queue_capacity;      /* events per worker queue, rounded up to a power of two; 0: 8192 */
    int log_lines_per_second;   /* helpers.log rate limit per instance; 0: 200 */
    /* orders an instance may submit a second (and at once, after a quiet
     * second): beyond it the call throws and nothing reaches the market, so
     * one strategy's flood cannot slow everyone's market path; 0: 1000,
     * negative: no limit */
    int max_orders_per_second;
    int event_poll_us; /* a worker fed events closer together than this polls for
                        * the next one rather than sleep; 0: it always sleeps, as
                        * do workers that outnumber the online CPUs */
    /* false: an instance stopped for a failure (a limit, an error streak,
     * risk breaches, a start that failed) has its resting orders cancelled,
     * since nothing is left to manage them; true: they stay, as after an
     * operator's stop */
    bool keep_orders_on_failure;
};

struct runtime;

int runtime_new(const struct runtime_options *opts, struct runtime **out, struct err *err);
/* Stops every instance (without changing their desired state, so they run
 * again after a restart), joins the workers and frees everything. No
 * control-plane call may be in flight and providers must have stopped
 * publishing. */
void runtime_free(struct runtime *rt);

/* Loads the instances persisted in the store and starts those that were
 * running. Instances whose revision no longer resolves stay stopped with
 * reason "retired". */
int runtime_restore(struct runtime *rt, struct err *err);

/* The event sink for providers: ctx is the struct runtime. Takes over the
 * caller's reference to ev. runtime_publish_run: the same for n events, in
 * their order for every worker (see struct event_sink). runtime_wants:
 * whether any worker has a
 * subscriber for events of that provider, symbol and kind (false positives
 * possible, never a false negative for a subscription already made). */
void runtime_publish(void *ctx, struct event *ev);
void runtime_publish_run(void *ctx, struct event **evs, size_t n);
bool runtime_wants(void *ctx, uint16_t provider, uint16_t symbol, enum event_kind kind);
/* The sink of a market made before the runtime it feeds (the runtime
 * takes the market's order ops): it reads the runtime from *slot at every
 * call, so *slot must be set before any provider starts and outlive the
 * sink. */
struct event_sink runtime_event_sink_at(struct runtime **slot);

/* ---- instances (InstanceSpec / InstanceSnapshotResponse / InstanceSummary
 * shapes of the API contract) ---- */
/* snapshot may be NULL. Snapshots carry, beyond the contract's fields,
 * "stopReason" (string or null), "lastError" ({message, handler, at} or
 * null), "counters" {eventsDelivered, handlerErrors} and "memory" {bytes}
 * (the JS heap of the running VM; 0 when stopped). strategy.config is
 * stored as given; the metadata defaults are merged (and types checked)
 * when the instance is created, updated, started or refreshed, and so are
 * the gateway's own keys (dry_run bool, memory_limit_mb 1..65536,
 * cpu_budget_ms > 0, max_orders_per_second 1..1e8: js/config.h), whether
 * the metadata declares them or not. A start
 * (or refresh) checks the scope again: an instance whose provider or
 * symbol is gone does not start (ERR_INVALID naming the scope field; on a
 * restore, stopReason startFailed with the reason in lastError). */
int runtime_instance_create(struct runtime *rt, const json_t *spec, json_t **snapshot,
                            struct err *err);
/* Replaces the spec; a running instance restarts with it (spec.id may be
 * omitted; another id is ERR_INVALID). If the new spec does not start, the
 * instance keeps running the old one and nothing changes (422). A running
 * instance's new revision is pinned against deletes for the whole restart;
 * one being deleted is ERR_CONFLICT, one deleted since the selector was
 * resolved ERR_NOT_FOUND. */
int runtime_instance_update(struct runtime *rt, const char *id, const json_t *spec,
                            json_t **snapshot, struct err *err);
/* Deletes the record durably, then the VM; no later write (a failure the
 * worker records meanwhile) brings the record back. Then the market forgets
 * the instance (market_ops.forget): its resting orders are cancelled and
 * its position is dropped. Its order history stays in the store. */
int runtime_instance_delete(struct runtime *rt, const char *id, struct err *err);
int runtime_instance_start(struct runtime *rt, const char *id, struct err *err);
int runtime_instance_stop(struct runtime *rt, const char *id, struct err *err);
/* The same; *changed (may be NULL) says whether the call changed anything:
 * false for a start of a running instance or a stop of a stopped one. */
int runtime_instance_start_noting(struct runtime *rt, const char *id, bool *changed,
                                  struct err *err);
int runtime_instance_stop_noting(struct runtime *rt, const char *id, bool *changed,
                                 struct err *err);
/* A stop that also cancels the instance's resting orders, once its VM has
 * ended (so none can follow), whatever keep_orders_on_failure says: the
 * operator asked. On a stopped instance it cancels the orders an earlier
 * stop left. Each is reported cancelled with RUNTIME_STOP_CANCEL_REASON;
 * *changed is true when any of it changed the instance or may have
 * changed the book. */
int runtime_instance_stop_cancelling(struct runtime *rt, const char *id, bool *changed,
                                     struct err *err);
#define RUNTIME_STOP_CANCEL_REASON "stopped: cancelled with the stop (cancelOrders)"
json_t *runtime_instance_snapshot(struct runtime *rt, const char *id, struct err *err);
/* The same snapshot as JSON text: the bytes jsonutil_dump() writes for
 * runtime_instance_snapshot(), written straight from the instance (the
 * spec's part is kept as text until the spec changes), so a GET builds and
 * copies no tree. malloc'ed (*len bytes, NUL-terminated); NULL with err
 * set (ERR_NOT_FOUND, or out of memory). */
char *runtime_instance_snapshot_text(struct runtime *rt, const char *id, size_t *len,
                                     struct err *err);
/* {"instances": [InstanceSummary...]} sorted by id. */
json_t *runtime_instances_json(struct runtime *rt);
bool runtime_instance_exists(struct runtime *rt, const char *id);
/* Sorted ids of the running instances whose scope names `provider` (a new
 * array): the market's dependents hook. */
json_t *runtime_provider_dependents(struct runtime *rt, const char *provider);
/* How many of them there are: a health probe's question, answered
 * without building the list. */
size_t runtime_provider_users(struct runtime *rt, const char *provider);

/* ---- revisions in use ---- */
/* ModuleRevisionUsage for {strategy, hex}: count, sorted instance ids,
 * firstSeen/lastSeen (RFC 3339 or null; lastSeen is now while running),
 * running. Never NULL except out of memory. */
json_t *runtime_usage_json(struct runtime *rt, const char *strategy, const char *hex);
/* The same document appended to sb as text (the bytes jsonutil_dump()
 * writes for it), with no tree built. Returns its count, -1 when sb has
 * failed (out of memory). */
long long runtime_usage_text(struct runtime *rt, const char *strategy, const char *hex,
                             struct strbuf *sb);
/* Every usage entry known (running now or recorded in the store), as an
 * array of ModuleRevisionUsage sorted by strategy then hash. */
json_t *runtime_usage_all_json(struct runtime *rt);
/* A revision with running instances, as runtime_usage_running lists it. */
struct runtime_usage_count {
    char strategy[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
    int running;
};
/* Every revision with running instances now, sorted by strategy then hex:
 * a copy taken under the lock in one pass over the usage entries (no
 * instance is visited, no JSON built). *out is malloc'ed (free() it, NULL
 * when *n is 0); *generation (if not NULL) is the usage generation the copy
 * belongs to. -1 only out of memory. */
int runtime_usage_running(struct runtime *rt, struct runtime_usage_count **out, size_t *n,
                          uint64_t *generation);
/* A number that changes whenever any revision's running count or firstSeen
 * changes (lastSeen of a running revision is "now" and is not counted):
 * equal numbers mean equal running blocks. Any thread. */
uint64_t runtime_usage_generation(struct runtime *rt);
/* InstanceSummary array of instances pinned to {strategy, hex};
 * include_stopped adds stopped ones. Sorted by id. */
json_t *runtime_instances_pinning(struct runtime *rt, const char *strategy, const char *hex,
                                  bool include_stopped);
/* Number of running instances per revision, for listings and metrics. */
int runtime_running_count(struct runtime *rt, const char *strategy, const char *hex);
/* The deepest worker queue (messages waiting), which worker holds it and
 * the queues' capacity: a readiness check's view of a worker that does not
 * keep up. Any thread; a moment's reading. */
size_t runtime_deepest_queue(struct runtime *rt, int *worker, size_t *capacity);

/* The catalog guard: refuses deleting a revision (or a whole strategy when
 * hex is NULL) that a running instance pins (ERR_CONFLICT,
 * details.instances). ctx is the struct runtime. */
int runtime_delete_guard(void *ctx, const char *name, const char *hex, struct err *err);
/* Refuses deleting `tag` of strategy `name` while running (or starting)
 * instances follow it, their selector `name:tag` (the bare name follows
 * `latest`): the next refresh would find nothing there and stop them all.
 * ERR_CONFLICT, details.instances (sorted ids). Any thread. */
int runtime_tag_guard(struct runtime *rt, const char *name, const char *tag, struct err *err);
/* Ends what a passing guard began: until this call, starting or
 * refreshing an instance onto that revision (or strategy, hex NULL) is
 * refused, so nothing starts on a revision while its delete is written.
 * Call it once after every catalog delete that was given the guard,
 * whether the delete succeeded or not. */
void runtime_delete_finished(struct runtime *rt, const char *name, const char *hex);
/* Keeps the guard from letting a delete of the revision through (409) until
 * runtime_release_revision, for a change that will refresh instances onto
 * it after a step of its own (a tag move with refresh). ERR_NOT_FOUND while
 * a delete of it is under way; ERR_INTERNAL out of memory. Any thread;
 * every successful hold is released once. */
int runtime_hold_revision(struct runtime *rt, const char *name, const char *hex, struct err *err);
void runtime_release_revision(struct runtime *rt, const char *name, const char *hex);
/* After a revision (or, hex NULL, a whole strategy) is gone: the stopped
 * instances it leaves unable to start (pinned to that hash, or of that
 * strategy) show stopReason "retired", as they would after a restart; its
 * metric series and compiled bytecode go, so a catalogue that churns does
 * not grow /metrics or memory without bound. A control-plane call. */
void runtime_forget_revision(struct runtime *rt, const char *name, const char *hex);

/* Targeted refresh. request may be NULL (every instance) or
 * {"hashes": [...], "strategies": [...]} of selectors; with neither list it
 * picks every instance, with empty lists none. *response receives
 * {"status": "ok", "results": [{selector, strategy, hash, previousHash,
 * instances, reason}]} sorted; reasons refreshed / alreadyPinned / retired.
 * A refreshed instance whose new revision does not start is left stopped
 * (startFailed) on the new pin and its result carries "error". */
int runtime_refresh(struct runtime *rt, const json_t *request, json_t **response, struct err *err);

/* ---- observability ---- */
/* Appends the runtime's metrics in Prometheus text format. */
struct strbuf;
void runtime_metrics_write(struct runtime *rt, struct strbuf *out);
/* Counters for tests and benchmarks. */
struct runtime_stats {
    uint64_t events_delivered; /* handler calls for events, all instances */
    uint64_t handler_errors;
    uint64_t compilations;
    uint64_t event_poll_ns; /* workers' time polling for the next event */
    int instances;
    int running;
};
void runtime_stats(struct runtime *rt, struct runtime_stats *out);

/* ---- checks ahead of a batch (the context restore) ---- */
/* Resolves an InstanceSpec as runtime_instance_create() would (the selector
 * against the current catalogue, the config against the revision's
 * metadata, the gateway's keys, the scope) and changes nothing. scope_check
 * (with scope_ctx), when not NULL, stands in for the runtime's own provider
 * check, so that a batch can be checked against providers it is about to
 * create. *resolved receives the spec an instance created from it now
 * would store (new reference). Errors as runtime_instance_create(). Any
 * thread. */
int runtime_instance_spec_resolve(struct runtime *rt, const json_t *spec,
                                  runtime_scope_fn scope_check, void *scope_ctx, json_t **resolved,
                                  struct err *err);

#endif
