/*
 * runtime internals shared by the files of src/runtime (not a public API).
 *
 *   runtime.c  the instance table and the control-plane calls
 *   spec.c     InstanceSpec parsing, selector resolution, launch plans
 *   worker.c   worker threads: queues, commands, subscriptions, timers
 *   vm.c       one instance's VM: start, event delivery, failures
 *   host.c     what strategies see: env, helpers, runtime.*, timers
 *   refresh.c  targeted refresh
 *   usage.c    per-revision usage
 *   metrics.c  Prometheus exposition
 *   map.c      a small integer-keyed hash map
 *
 * Locks, in the only order they may nest:
 *   rt->control   serialises control-plane calls (held while they wait for
 *                 workers; never taken by workers)
 *   rt->lock      the instance table, usage and instance state fields;
 *                 held briefly, never while waiting for a worker or calling
 *                 the catalogue (runtime_delete_guard runs under the
 *                 catalogue's lock and takes this one)
 *   rt->persist   orders store writes of instance records
 *   w->lock       one worker's queue
 *   rt->done      command completion
 * Workers take rt->lock and rt->persist only when an instance changes state
 * (start, stop, failure), never per event.
 */
#ifndef STRATD_RUNTIME_INTERNAL_H
#define STRATD_RUNTIME_INTERNAL_H

#include "core/hash.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/names.h"
#include "core/strbuf.h"
#include "js/module.h"
#include "registry/selector.h"
#include "runtime/runtime.h"

#include <pthread.h>
#include <stdalign.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* ------------------------------------------------------------ handlers */

enum handler_id {
    H_TRADE,
    H_TICKER,
    H_BOOK_SNAPSHOT,
    H_KLINE_SUMMARY,
    H_INSTRUMENT_UPDATE,
    H_BALANCE_UPDATE,
    H_ORDER_ACKNOWLEDGED,
    H_ORDER_PARTIAL_FILL,
    H_ORDER_FILLED,
    H_ORDER_CANCELLED,
    H_ORDER_REJECTED,
    H_ORDER_EXPIRED,
    H_RISK_CONTROL,
    H_EXTENSION,
    H_COUNT,
    H_TIMER = H_COUNT, /* timer callbacks, for the duration histogram */
    H_SLOTS
};

extern const char *const runtime_handler_names[H_SLOTS];
/* The handler a broadcast event of this kind goes to (-1: none). */
int runtime_handler_for_kind(enum event_kind kind);
/* The handler an event goes to (exec reports by status). */
int runtime_handler_for_event(const struct event *ev);

#define EVENT_MASK_ALL ((1u << EVENT_KIND_COUNT) - 1)

/* ------------------------------------------------------------ small map */

/* uint64 -> pointer, open addressing; key 0 is reserved (empty). */
struct rtmap {
    uint64_t *keys;
    void **vals;
    size_t cap; /* power of two, or 0 */
    size_t n;
};

void *rtmap_get(const struct rtmap *m, uint64_t key);
int rtmap_put(struct rtmap *m, uint64_t key, void *val);
void rtmap_del(struct rtmap *m, uint64_t key);
void rtmap_free(struct rtmap *m);

/* ------------------------------------------------------------ plans */

struct scope_entry {
    uint16_t provider;
    uint16_t symbol; /* 0: provider-wide events (balances) */
};

/* Everything a worker needs to start one VM, decided by the control plane.
 * Owned by the command until the VM takes it, then by the VM. */
struct vm_plan {
    char strategy[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
    char hash[HASH_SPELLED_LEN + 1];
    struct js_bytecode *bytecode; /* released once loaded */
    char *config_json;            /* resolved config; freed after start */
    char *metadata_json;          /* normalised metadata or "null"; freed after start */
    char filename[128];           /* the module's file name, for stack traces */
    uint32_t events;              /* metadata.events as a mask of enum event_kind */
    struct js_limits limits;
    uint32_t max_orders_per_second; /* 0: no limit */
    bool dry_run;
    int max_errors;
    int log_lines;
    /* every scoped (provider, symbol), in spec order, then one
     * (provider, 0) per provider; providers[] lists the providers */
    struct scope_entry *scope;
    uint16_t nscope;
    uint16_t *providers;
    uint16_t nproviders;
};

void runtime_plan_free(struct vm_plan *plan);

/* ------------------------------------------------------------ instances */

#define RUNTIME_REASON_MAX 24

struct open_order {
    uint64_t n; /* the <n> of "<instance>-<n>" */
    uint16_t provider;
};

struct vm;
struct worker;

#define RUNTIME_SCOPE_IDS 4

struct instance {
    /* fixed at creation */
    uint32_t key; /* event.target of its exec reports; selects the worker */
    struct worker *worker;
    char id[NAMES_ID_MAX + 1];

    /* under rt->lock */
    /* The persisted InstanceSpec, resolved fields included. Replaced whole
     * under rt->lock and never changed in place, so a reader may take a
     * reference under the lock and read it after. */
    json_t *spec;
    char strategy[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
    char selector[SELECTOR_TEXT_MAX + 1];
    bool running;  /* a VM exists (set by the worker) */
    bool desired;  /* should run after a restart */
    bool starting; /* a start is in flight: pins the revision for the guard */
    /* The revision a start or a refresh restart is about to run ("" when
     * none): the delete guard counts it as pinned, so a delete cannot slip
     * between resolving a revision and running it. */
    char pending_hex[HASH_HEX_LEN + 1];
    /* pending_hex's strategy (a PUT may move the instance to another) */
    char pending_strategy[NAMES_STRATEGY_MAX + 1];
    char stop_reason[RUNTIME_REASON_MAX]; /* "" when none */
    json_t *last_error;                   /* {message, handler, at} or NULL */
    /* The providers spec.scope names, interned, for the questions asked of
     * every instance at once (which ones use a provider); a scope of more
     * providers than fit, or a name the table refused, is read from the
     * spec instead (scope_ids_partial). */
    uint16_t scope_ids[RUNTIME_SCOPE_IDS];
    uint8_t nscope_ids;
    bool scope_ids_partial;
    bool users_joined; /* counted in rt->provider_users (users.c) */
    /* The snapshot's text up to "running" (spec, providers, symbols), made
     * on first use and dropped with the spec; NULL until then. */
    char *snapshot_head;
    size_t snapshot_head_len;
    uint64_t version; /* bumped by every persisted change */

    /* under rt->persist */
    uint64_t persisted;
    /* Its record was deleted: no write may bring it back (a worker that
     * stops the instance on a limit persists from its own thread, and can
     * do so between the delete of the record and the detach). */
    bool forgotten;

    /* owner worker's thread only (set before the first start) */
    struct vm *vm;
    struct vm *staged;       /* between CMD_STAGE and CMD_START or CMD_UNSTAGE */
    uint64_t next_order;     /* the last client order number handed out */
    uint64_t order_reserved; /* the highest number durably reserved */
    bool order_seq_loaded;   /* the two above read from the store (first order) */
    struct open_order *orders;
    uint32_t norders, orders_cap;
    /* Execution reports that came while the instance had no VM (an
     * operator's stop leaves its orders resting): its next start hears
     * them, oldest first. At most RUNTIME_HELD_REPORTS; later ones are
     * counted in held_dropped and said at that start. */
    struct event **held;
    uint32_t nheld, held_cap;
    uint64_t held_dropped;
    uint32_t risk_breaches; /* orders the risk limits refused since the VM launched */
    /* runtime_options.max_orders_per_second's bucket: tokens left, and when
     * it was last refilled (0: never, it is full) */
    double order_tokens;
    int64_t order_refilled_ns;
    /* the worker's timer pass that last ran one of its timers, and the
     * time its timers took in that pass (see worker_run_timers) */
    uint64_t timer_pass;
    int64_t timer_pass_ns;

    /* written by the owner worker, read by anyone */
    _Atomic uint64_t delivered;
    _Atomic uint64_t errors;
    _Atomic uint64_t memory;
};

#define RUNTIME_HELD_REPORTS 4096

/* Single-writer counters: a plain add, no locked instruction. */
static inline void counter_add(_Atomic uint64_t *c, uint64_t n)
{
    atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                          memory_order_relaxed);
}

static inline uint64_t counter_get(const _Atomic uint64_t *c)
{
    return atomic_load_explicit(c, memory_order_relaxed);
}

/* ------------------------------------------------------------ workers */

/* Why a worker polled instead of sleeping (see poll_deadline in worker.c). */
enum poll_reason { POLL_START, POLL_EVENTS, POLL_REASONS };
/* Where a starting instance's VM came from: the spares built ahead, or built
 * on the start's path because none was ready (the builder, at the idle
 * class, gets no CPU under full load). */
enum vm_source { VM_FROM_SPARE, VM_BUILT_ON_START, VM_SOURCES };

enum command_kind {
    CMD_STAGE,   /* build a VM from plan and load its module (vm_stage) */
    CMD_UNSTAGE, /* free the staged VM: the start did not go ahead */
    CMD_START,   /* run the staged VM, or build one from plan and run it */
    CMD_RESTART, /* build a VM from plan, then replace the running one */
    CMD_STOP,    /* free the VM */
    CMD_DETACH,  /* free the VM and forget the instance (delete) */
};

struct command {
    enum command_kind kind;
    struct instance *inst;
    struct vm_plan *plan;  /* START/RESTART: taken by the worker */
    json_t *spec;          /* RESTART: installed with the new VM (taken) */
    struct command *stage; /* START: the STAGE command posted before it, or NULL */
    bool keep_old;         /* RESTART: a failed start leaves the old VM running */
    /* results */
    _Atomic bool done; /* set under rt->done; read without it by a polling caller */
    bool was_running;  /* STOP/DETACH/RESTART: a VM existed */
    int rc;
    struct err err;
    struct command *next; /* the worker's command list */
};

struct msg {
    struct event *ev;
    struct command *cmd;
    size_t pos; /* an event's position in the worker's ring */
};

/* One slot of a worker's event ring: `seq` == position + 1 once filled,
 * position + capacity once emptied, ready for the next lap. */
struct queue_cell {
    _Atomic size_t seq;
    struct event *ev;
};

#define WORKER_INTEREST_SLOTS 1024
#define WORKER_BATCH 256
#define HIST_BUCKETS 12 /* including +Inf */

struct timer;

/* One subscriber of (provider, symbol, kind) on a worker. */
struct sub {
    struct vm *vm;
    uint16_t scope_index;
};

struct sublist {
    struct sub *items;
    uint32_t n, cap;
};

#define VM_SPARES 4
/* `lock` guards ready, count, failed and quit (the builder and the worker;
 * the worker only tries it). initialized, started and thread are the
 * owner's (vm_spares_start, vm_spares_stop). The VMs in `ready` are the
 * pool's until taken; they were built on the builder's thread and are
 * used on the worker's (js_sandbox_set_limits moves their stack limit). */
struct vm_spares {
    pthread_mutex_t lock;
    pthread_cond_t wake; /* the builder waits for room or quit */
    struct vm *ready[VM_SPARES];
    int count;
    bool failed; /* the last build ran out of memory */
    bool quit;
    bool initialized, started;
    pthread_t thread;
};

struct worker {
    struct runtime *rt;
    int index;
    pthread_t thread;
    bool thread_started;
    struct vm_spares spares;

    /* The event queue: a bounded ring many publishers fill without a lock
     * (a slot is claimed by advancing `tail`, filled, then published by
     * its sequence number) and the worker alone empties. Three cache
     * lines: what every push reads and nobody writes; what every publisher
     * writes; what the worker writes at every batch. A worker taking one
     * event at a time would otherwise take the first line from the
     * publisher at every event. */
    alignas(64) struct queue_cell *ring;
    size_t mask; /* capacity - 1, capacity a power of two */
    /* `sleeping` (1 while the worker sleeps or is about to) and `waiting`
     * (publishers waiting for room) are read by read-modify-writes on
     * either side, which is what orders them with the ring
     * (wake_if_asleep). */
    alignas(64) _Atomic size_t tail;
    atomic_int sleeping;
    alignas(64) atomic_int waiting; /* apart from `tail`: the worker reads it after every batch */
    size_t head;                    /* the worker's */
    _Atomic size_t taken;           /* mirrors `head` for readers of the depth */

    /* Sleeping and commands, under lock. */
    alignas(64) pthread_mutex_t lock;
    pthread_cond_t wake; /* the worker waits for messages */
    pthread_cond_t room; /* publishers wait for space */
    /* Commands wait in their own list, served before the next events: a
     * control-plane call must not wait behind a saturated event queue. */
    struct command *cmd_head, *cmd_tail;
    atomic_bool cmd_pending; /* cmd_head != NULL, for a look without the lock */
    bool polling;            /* the worker polls instead of sleeping */
    atomic_bool nudged;      /* set (under lock) for a polling worker by whoever posts a command */
    atomic_bool quit;
    /* the worker's thread only: what decides whether it polls for events */
    int64_t last_events_ns; /* when the last batch of events was taken */
    int64_t events_gap_ns;  /* moving average of the gaps between batches */

    /* read by publishers without a lock: how many subscriptions hash to
     * each slot of (provider, symbol, kind); false positives only cost a
     * queue push */
    atomic_uint interest[WORKER_INTEREST_SLOTS];

    int assigned; /* instances owned; under rt->lock */

    /* the worker's thread only */
    struct rtmap instances; /* key -> struct instance */
    struct rtmap subs;      /* (provider, symbol, kind) -> struct sublist */
    struct timer **heap;
    size_t nheap, heap_cap;
    uint64_t timer_seq;
    /* Due timers of instances that used their share of the current timer
     * pass, put back into the heap when the pass ends. */
    struct timer **deferred;
    size_t ndeferred, deferred_cap;
    /* numbers the timer passes */
    uint64_t timer_pass;
    struct vm *reap; /* VMs freed but still referenced by subscriptions */
    size_t nreap;
    int64_t now_ns;
    uint32_t sample_tick[H_COUNT]; /* per handler, so no handler is never sampled */
    uint64_t run_stamp;            /* numbers runs of events delivered instance by instance */
    uint32_t run_calls;            /* deliveries since the timers were last checked */
    bool walking;                  /* inside a subscription walk: reaping waits */
    uint32_t nstaged;              /* staged VMs awaiting their start command */

    /* statistics, written by the worker only */
    _Atomic uint64_t delivered[EVENT_KIND_COUNT];
    _Atomic uint64_t errors;
    _Atomic uint64_t hist[H_SLOTS][HIST_BUCKETS];
    _Atomic uint64_t hist_sum_ns[H_SLOTS];
    _Atomic uint64_t poll_ns[POLL_REASONS];  /* time spent polling, by enum poll_reason */
    _Atomic uint64_t vm_sources[VM_SOURCES]; /* VMs given to starts, by enum vm_source */
};

extern const double runtime_hist_bounds[HIST_BUCKETS - 1];

int worker_init(struct worker *w, struct runtime *rt, int index, size_t capacity, struct err *err);
int worker_start(struct worker *w, struct err *err);
/* Stops every VM it owns (no state change), joins the thread. */
void worker_shutdown(struct worker *w);
void worker_destroy(struct worker *w);
/* Posts a command and waits for the worker to complete it. For the start
 * of a staged VM (`stage` set), which its worker polls for and ends within
 * a fraction of a millisecond, the caller polls for the completion for up
 * to 0.3 ms of its own CPU before it sleeps. */
void worker_call(struct worker *w, struct command *cmd);
/* The same in two steps, so a caller can post many commands (to several
 * workers, which then work in parallel) before waiting for them. Each
 * worker runs its commands in the order posted. A command stays the
 * caller's and must not move or be freed until worker_wait returned. */
void worker_post(struct worker *w, struct command *cmd);
void worker_wait(struct runtime *rt, struct command *cmd);
size_t worker_queue_depth(struct worker *w);

/* Worker thread only. */
int worker_subscribe(struct worker *w, struct vm *vm);
void worker_retire_vm(struct worker *w, struct vm *vm);
void worker_reap(struct worker *w);

enum timer_kind { TIMER_JS, TIMER_SLEEP, TIMER_LOG_FLUSH };

struct timer {
    int64_t deadline_ns;
    int64_t interval_ns; /* 0: one shot */
    uint64_t seq;        /* FIFO among equal deadlines */
    size_t heap_index;   /* SIZE_MAX when not in the heap */
    struct vm *vm;
    struct timer *prev, *next; /* the VM's timers */
    uint32_t id;
    uint8_t kind;
    bool firing, cancelled;
    /* held for the next timer pass: heap_index is its place in w->deferred */
    bool deferred;
    JSValue fn; /* callback, or the resolve function of a sleep */
    int argc;
    /* the callback's arguments, allocated in the VM's sandbox heap (under
     * its memory cap): vm_free_timer frees them, and release_js frees every
     * timer before the sandbox */
    JSValue *argv;
};

int worker_timer_schedule(struct worker *w, struct timer *t);
void worker_timer_unschedule(struct worker *w, struct timer *t);
void worker_run_timers(struct worker *w);

/* ------------------------------------------------------------ VMs */

/* Property names every VM interns once, so event objects are built with
 * JS_DefinePropertyValue on atoms (no string hashing per event) and share
 * shapes. */
#define VM_ATOMS(X)                                                                                \
    X(TYPE, "type")                                                                                \
    X(PROVIDER, "provider")                                                                        \
    X(SYMBOL, "symbol")                                                                            \
    X(SEQ, "seq")                                                                                  \
    X(TS, "ts")                                                                                    \
    X(PRICE, "price")                                                                              \
    X(QUANTITY, "quantity")                                                                        \
    X(SIDE, "side")                                                                                \
    X(TRADE_ID, "tradeId")                                                                         \
    X(LAST, "last")                                                                                \
    X(BID, "bid")                                                                                  \
    X(ASK, "ask")                                                                                  \
    X(BID_SIZE, "bidSize")                                                                         \
    X(ASK_SIZE, "askSize")                                                                         \
    X(VOLUME, "volume")                                                                            \
    X(BIDS, "bids")                                                                                \
    X(ASKS, "asks")                                                                                \
    X(START, "start")                                                                              \
    X(END, "end")                                                                                  \
    X(OPEN, "open")                                                                                \
    X(HIGH, "high")                                                                                \
    X(LOW, "low")                                                                                  \
    X(CLOSE, "close")                                                                              \
    X(TRADES, "trades")                                                                            \
    X(ASSET, "asset")                                                                              \
    X(TOTAL, "total")                                                                              \
    X(AVAILABLE, "available")                                                                      \
    X(CLIENT_ORDER_ID, "clientOrderId")                                                            \
    X(ORDER_ID, "orderId")                                                                         \
    X(STATUS, "status")                                                                            \
    X(LAST_QUANTITY, "lastQuantity")                                                               \
    X(LAST_PRICE, "lastPrice")                                                                     \
    X(FILLED_QUANTITY, "filledQuantity")                                                           \
    X(REMAINING_QUANTITY, "remainingQuantity")                                                     \
    X(AVERAGE_PRICE, "averagePrice")                                                               \
    X(FEE, "fee")                                                                                  \
    X(FEE_ASSET, "feeAsset")                                                                       \
    X(DRY_RUN, "dryRun")                                                                           \
    X(REASON, "reason")                                                                            \
    X(TICK_SIZE, "tickSize")                                                                       \
    X(LOT_SIZE, "lotSize")                                                                         \
    X(MIN_QUANTITY, "minQuantity")                                                                 \
    X(TRADING, "trading")                                                                          \
    X(INSTANCE_ID, "instanceId")                                                                   \
    X(STRATEGY, "strategy")                                                                        \
    X(HASH, "hash")                                                                                \
    X(SPREAD, "spread")                                                                            \
    X(SPREAD_PCT, "spreadPct")

#define VM_ATOM_ENUM(id, text) A_##id,
enum vm_atom { VM_ATOMS(VM_ATOM_ENUM) A_COUNT };
#undef VM_ATOM_ENUM

/* Cached per (provider, symbol) of the scope: the ctx argument and the
 * names as JS strings, created on first use. */
struct vm_scope {
    JSValue ctx;
    JSValue provider;
    JSValue symbol; /* JS_NULL for provider-wide entries */
};

#define VM_STATUS_COUNT 6
/* Object layouts whose shapes a VM keeps alive: evt, then one payload
 * layout per event kind. */
#define VM_LAYOUTS (1 + EVENT_KIND_COUNT)

/* QuickJS frees a shape with the last object using it, and finds shapes
 * again only through live objects with each intermediate shape. A VM keeps
 * one object per prefix of a hot layout ({type}, {type, provider}, ...), so
 * building the next event object walks existing shapes instead of creating
 * and hashing new ones property by property. */
struct vm_layout {
    JSValue *prefixes; /* one object per prefix length; NULL until first use */
    uint32_t n;
};

struct lazy;
#define VM_SPARE_LAZY 2   /* a delivery's evt and payload */
#define VM_LAZY_LAYOUTS 3 /* evt, Trade, Ticker (see vm.c) */

/* A VM is the instance's sandbox plus what the host caches in it. Owned by
 * the instance's worker; only that thread touches it. */
struct vm {
    struct js_sandbox sb;
    struct instance *inst;
    struct vm_plan *plan;
    bool dead;   /* JS side freed; the shell waits for worker_reap */
    bool staged; /* module loaded, create(env) not yet run: timers are held */
    struct vm *reap_next;
    uint64_t *sub_keys;  /* what worker_subscribe added */
    uint16_t *sub_index; /* the scope index of each of those */
    uint32_t nsubs;
    uint64_t visit; /* the worker's run stamp when last visited */
    /* the ring's fill when the VM subscribed: a broadcast event queued
     * before it (published before the subscription existed) is not its */
    size_t birth;
    uint32_t events; /* subscribed events (env.events) */
    uint32_t mask;   /* kinds delivered: events with a handler */
    int64_t budget_ns;
    int64_t trigger_ns; /* created_ns of the event being handled, 0 if none */
    int consecutive_errors;
    JSValue handlers;
    JSValue exports;     /* module.exports while staged */
    JSValue env;         /* create(env)'s argument, built while staged */
    JSValue fn[H_COUNT]; /* JS_UNDEFINED when the strategy has none */
    JSAtom atoms[A_COUNT];
    JSValue kind_names[EVENT_KIND_COUNT];
    JSValue side_names[2];
    JSValue status_names[VM_STATUS_COUNT];
    JSValue type_names[2];
    struct vm_scope *scope; /* plan->nscope entries */
    struct vm_layout layouts[VM_LAYOUTS];
    /* timers */
    struct timer *timers;
    uint32_t ntimers;
    uint32_t next_timer_id;
    /* helpers.log rate limit: lines in the current one-second window */
    int64_t log_window;
    uint32_t log_lines;
    uint64_t log_dropped;
    bool log_flush_armed;
    /* unhandled promise rejections during the current call */
    uint32_t unhandled;
    JSValue rejection;
    /* the class hooks of lazy event objects (see vm.c): per VM because
     * one of them is switched off while it runs */
    JSClassExoticMethods lazy_hooks;
    /* the C halves of lazy objects that died with their delivery, kept
     * for the next one (see free_arg in vm.c) */
    struct lazy *spare_lazy[VM_SPARE_LAZY];
    uint8_t nspare_lazy;
    /* whole lazy objects, one per layout, that no script can tell from a
     * new one, kept for the next delivery (owned references; an object
     * tag only when present) */
    JSValue spare_obj[VM_LAZY_LAYOUTS];
};

/* A start in two steps, so that the first can run while the start's intent
 * is being made durable: vm_stage takes a spare, applies the plan (taken)
 * and runs the module's top level, which can log and set timers but reach
 * nothing outside the VM (the timers are held); vm_launch calls create(env)
 * and releases the held timers. Both free the VM when they fail; a staged
 * VM that is not launched goes with vm_unstage. vm_start does both. */
int vm_stage(struct worker *w, struct instance *inst, struct vm_plan *plan, struct vm **out,
             struct err *err);
int vm_launch(struct worker *w, struct vm *vm, struct err *err);
void vm_unstage(struct worker *w, struct vm *vm);
int vm_start(struct worker *w, struct instance *inst, struct vm_plan *plan, struct vm **out,
             struct err *err);
/* A VM with its sandbox, names and host globals but no instance yet (any
 * thread; the caller owns it; NULL when out of memory). */
struct vm *vm_build(struct err *err);
/* Registers the VM's own JavaScript classes once per process (any thread;
 * vm_build does it too). */
void vm_classes_register(void);
/* Frees a VM from vm_build that never ran an instance. */
void vm_free_spare(struct vm *vm);

/* Spare VMs of one worker, built ahead of starts by a thread of its own at
 * the idle scheduling class (spares.c). Start and stop are the worker's
 * owner's (runtime.c); take and retry are the worker thread's. */
int vm_spares_start(struct vm_spares *sp, int index, struct err *err);
/* A ready spare (the caller owns it), or NULL: the caller builds one. */
struct vm *vm_spares_take(struct vm_spares *sp);
/* After a start that succeeded: building may be tried again after it ran
 * out of memory. */
void vm_spares_retry(struct vm_spares *sp);
/* Joins the builder and frees the spares it left; safe when never started. */
void vm_spares_stop(struct vm_spares *sp);
/* Frees the JS side at once and hands the shell to worker_retire_vm. */
void vm_destroy(struct worker *w, struct vm *vm);
void vm_free_shell(struct vm *vm);
/* The VM's subscription keys (provider, symbol, kind) with scope indexes. */
size_t vm_subscriptions(const struct vm *vm, uint64_t *keys, uint16_t *scope_index, size_t max);

/* Delivers one event; stops the instance itself if the call broke a limit.
 * scope_index < 0 looks the (provider, symbol) up. */
void vm_deliver(struct worker *w, struct vm *vm, int scope_index, const struct event *ev);
void vm_fire_timer(struct worker *w, struct timer *t);
void vm_free_timer(struct vm *vm, struct timer *t);
/* Defines the InstrumentUpdate payload's fields on `o`, so that the event
 * and runtime.getInstrument() carry the same ones; non-zero when a
 * definition failed. Worker thread. */
int vm_put_instrument(struct vm *vm, JSContext *ctx, JSValueConst o,
                      const struct event_instrument *i);

static inline uint64_t sub_key(uint16_t provider, uint16_t symbol, unsigned kind)
{
    return ((uint64_t)provider << 32) | ((uint64_t)symbol << 16) | kind;
}

/* ------------------------------------------------------------ host */

struct vm_host; /* host state inside struct vm */

/* Installs the globals (timers, console) before the module loads. */
int host_install_globals(struct vm *vm);
/* The canonical names of the kinds in mask, as a JS array. */
JSValue host_event_names(JSContext *ctx, uint32_t mask);
/* Builds env for create(env); a new value. */
JSValue host_make_env(struct vm *vm);
/* The instance whose JS is running on this thread. */
struct vm *host_current(void);
void host_enter(struct vm *vm);
void host_leave(void);
/* After an entry into `vm`: true (once) when one of its orders during that
 * entry brought its instance to maxRiskBreaches; `why` then says so. The
 * caller stops the instance with reason riskBreaches. Worker thread. */
bool host_risk_stop_due(struct vm *vm, char *why, size_t size);
/* helpers.log's rate limiter; true when one more line may be written. */
bool host_log_admit(struct worker *w, struct vm *vm);
void host_log_flush(struct vm *vm);
/* Logs with strategy, hash and instance fields (steals extra). */
void host_log(struct vm *vm, enum log_level level, const char *msg, json_t *extra);

/* ------------------------------------------------------------ runtime */

struct usage_entry {
    char strategy[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
    int64_t first_ms; /* 0: never seen */
    int64_t last_ms;
    int running;
};

/* {strategy, hex} pairs, hex "" meaning the whole strategy; a pair may be
 * listed more than once (one entry per holder). Guarded by rt->lock. */
struct revision_mark {
    char strategy[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
};
struct revision_marks {
    struct revision_mark *items;
    size_t n, cap;
};

/* Running or starting instances whose scope names the provider `id`. */
struct provider_users {
    uint16_t id;
    uint32_t count;
};

struct runtime {
    struct runtime_options opts;
    char *environment;
    int max_errors;
    int log_lines;
    uint32_t max_orders_per_second; /* 0: no limit */
    size_t queue_capacity;
    int64_t event_poll_ns; /* runtime_options.event_poll_us, 0 when workers never poll for
                            * events; set before the workers start, read-only after */

    pthread_mutex_t control;
    pthread_mutex_t lock;
    pthread_mutex_t persist;
    pthread_mutex_t done;
    pthread_cond_t done_cond;

    struct instance **instances; /* sorted by id */
    size_t ninstances, instances_cap;
    struct instance **pins; /* the same, sorted by (strategy, hex, id): pins.c */
    size_t npins, pins_cap;
    uint32_t next_serial;

    struct usage_entry *usage;
    size_t nusage, usage_cap;
    /* users.c: per provider, kept as instances join and leave */
    struct provider_users *provider_users;
    size_t nprovider_users, provider_users_cap;
    size_t users_unindexed; /* joined instances whose scope_ids are partial */
    bool users_lost;        /* a count could not be kept: walk instead */
    /* Moves whenever a revision's running count or firstSeen changes: what
     * a rendered page of the module listing depends on. */
    uint64_t usage_generation;

    /* Deletes the guard let through and that have not finished: a start or
     * restart onto one of these revisions is refused (hex "" = the whole
     * strategy). */
    struct revision_marks deleting;
    /* Revisions a tag move will refresh instances onto: the guard refuses
     * their delete, as it does a running instance's revision, until the
     * refresh has them pinned (runtime_hold_revision). */
    struct revision_marks holding;

    struct worker *workers;
    int nworkers;

    struct js_bytecode_cache *bytecode;

    struct metrics_family *m_actions; /* strategy_revision_instances_total */
    struct metrics_family *m_errors;  /* stratd_handler_errors_total */
    struct metrics_family *m_stops;   /* stratd_instance_stops_total */
    struct metrics_family *m_orders;  /* stratd_orders_total */
};

static inline struct worker *runtime_worker_of(struct runtime *rt, uint32_t key)
{
    return &rt->workers[(key - 1) % (uint32_t)rt->nworkers];
}

/* Instance table (caller holds rt->lock). */
struct instance *rtx_find_locked(struct runtime *rt, const char *id);
/* Replaces spec and the fields derived from it; bumps the version. Takes spec. */
void rtx_apply_spec_locked(struct runtime *rt, struct instance *inst, json_t *spec);
void rtx_set_running_locked(struct runtime *rt, struct instance *inst, bool running);
/* users.c: counts the instance for the providers of its scope while it runs
 * or starts (call after changing either), or no longer (before its scope
 * changes or it goes). */
void rtx_users_sync_locked(struct runtime *rt, struct instance *inst);
void rtx_users_leave_locked(struct runtime *rt, struct instance *inst);
/* Re-reads scope_ids from the new spec's scope, leaving and rejoining. */
void rtx_users_rescope_locked(struct runtime *rt, struct instance *inst);

/* Writes the instance's record if it changed since the last write. */
int rtx_persist(struct runtime *rt, struct instance *inst, struct err *err);
/* A worker stopped an instance on a limit or error streak: records the
 * reason (desired state off), persists, counts and logs. */
void rtx_instance_failed(struct runtime *rt, struct instance *inst, const char *reason,
                         const char *handler, const char *message);
/* The instance stopped for a failure (`reason`: its stop reason) with no VM
 * left: unless runtime.keep_orders_on_failure, its resting orders are
 * cancelled (queued; the call does not wait). Any thread, once the failed
 * VM is gone and before the instance can start again. */
void rtx_abandon_orders(struct runtime *rt, const struct instance *inst, const char *reason);
/* Releases the reports held for the instance's next start (worker.c): its
 * owner worker once it is detached, or whoever frees it. */
void rtx_release_held(struct instance *inst);
/* Usage touches gathered to be written with instance records in one
 * transaction (rtx_persist_batch); one entry per revision. */
struct rtx_touch {
    char strategy[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
    int64_t first_ms; /* the earliest touch: a new usage row's firstSeen */
    int64_t now_ms;   /* the latest */
};
struct rtx_touches {
    struct rtx_touch *items;
    size_t n, cap;
};
/* -1 when out of memory (nothing added). */
int rtx_touch_add(struct rtx_touches *t, const char *strategy, const char *hex, int64_t now_ms);
void rtx_touches_free(struct rtx_touches *t);

/* Writes the records of insts that changed since their last write, and
 * touches (may be NULL), in one store transaction: all or nothing. */
int rtx_persist_batch(struct runtime *rt, struct instance *const *insts, size_t n,
                      const struct rtx_touches *touches, struct err *err);

/* Side effects of a start or stop: usage timestamps and counters. The
 * _into forms leave the store's usage write in `into` (NULL: write now). */
void rtx_note_start(struct runtime *rt, const char *strategy, const char *hex);
void rtx_note_stop(struct runtime *rt, const char *strategy, const char *hex, const char *reason);
void rtx_note_start_into(struct runtime *rt, const char *strategy, const char *hex,
                         struct rtx_touches *into);
void rtx_note_stop_into(struct runtime *rt, const char *strategy, const char *hex,
                        const char *reason, struct rtx_touches *into);
/* The instance's next client order number, never reused for its id; on its
 * worker's thread. Numbers are reserved in blocks recorded in the store: the
 * first call continues after the last block an earlier instance of the id
 * reserved, and a number past the block records the next, so a crash skips
 * at most one block. */
uint64_t rtx_order_seq_next(struct runtime *rt, struct instance *inst);
/* Counts an exec report for stratd_orders_total. */
void rtx_count_order(struct runtime *rt, uint16_t provider, enum exec_status status);
void rtx_count_error(struct runtime *rt, const char *strategy, const char *hash);

/* spec.c */
struct spec_resolved {
    json_t *spec;     /* the InstanceSpec to store (new reference) */
    json_t *metadata; /* borrowed from the snapshot's revision (may be NULL) */
    json_t *config;   /* resolved (new reference) */
    char strategy[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
    char selector[SELECTOR_TEXT_MAX + 1];
    char tag[NAMES_TAG_MAX + 1];
};

/* Validates an InstanceSpec and resolves its selector against reg. */
int spec_resolve(const struct runtime_options *opts, const struct registry *reg, const json_t *in,
                 const char *forced_id, struct spec_resolved *out, struct err *err);
void spec_resolved_clear(struct spec_resolved *r);
/* A copy of spec pinned to another revision (hash, tag). */
json_t *spec_repin(const json_t *spec, const char *hex, const char *tag);
/* The selector text an instance's spec resolves through. */
const char *spec_selector(const json_t *spec);
/* Builds the launch plan for spec pinned to {strategy, hex} with metadata. */
int spec_plan(struct runtime *rt, const json_t *spec, const char *strategy, const char *hex,
              const json_t *metadata, struct vm_plan **out, struct err *err);
/* Re-resolves an existing instance's selector: the revision it should run. */
int spec_reresolve(const struct registry *reg, const char *selector,
                   struct registry_resolution *out, struct err *err);

/* runtime.c: whether a delete of {strategy, hex} is in flight (rt->lock
 * held); and the pending pin around a start or restart. */
bool rtx_deleting_locked(const struct runtime *rt, const char *strategy, const char *hex);
/* Claims {strategy, hex} as the instance's pending revision; ERR_CONFLICT
 * when a delete of it is in flight. The caller resolved the revision
 * against a catalogue snapshot; a delete that ran to its end between that
 * snapshot and the claim left no mark to see, so after claiming the caller
 * checks rtx_revision_exists() against the catalogue as it is now. */
int rtx_claim_pending(struct runtime *rt, struct instance *inst, const char *strategy,
                      const char *hex, struct err *err);
void rtx_release_pending(struct runtime *rt, struct instance *inst);
/* Whether {strategy, hex} is a valid revision of the current catalogue
 * (takes a snapshot; no runtime lock held). */
bool rtx_revision_exists(struct runtime *rt, const char *strategy, const char *hex);

/* pins.c (caller holds rt->lock): the table by (strategy, hex, id). */
int pins_insert_locked(struct runtime *rt, struct instance *inst);
/* false when inst was not in the index (not yet inserted in the table) */
bool pins_remove_locked(struct runtime *rt, struct instance *inst);
/* The instances pinned to {strategy, hex} (hex NULL: to any revision of
 * strategy) are rt->pins[*first .. *first + n), n returned; sorted by id
 * when hex is given. */
size_t pins_range_locked(const struct runtime *rt, const char *strategy, const char *hex,
                         size_t *first);
void pins_free(struct runtime *rt);

/* usage.c (caller holds rt->lock unless said otherwise) */
struct usage_entry *usage_find_locked(struct runtime *rt, const char *strategy, const char *hex,
                                      bool create);
json_t *usage_json_locked(struct runtime *rt, const char *strategy, const char *hex);
/* The same without the instance ids ("instances": null): what instance
 * snapshots and summaries embed. */
json_t *usage_brief_json_locked(struct runtime *rt, const char *strategy, const char *hex);
/* What a usage document says, read under rt->lock and written out after
 * it (so that the lock is held for the reading only). */
struct usage_facts {
    long long count; /* running instances */
    int64_t first_ms, last_ms;
};
void usage_facts_locked(struct runtime *rt, const char *strategy, const char *hex,
                        struct usage_facts *facts);
/* The document as text, the bytes jsonutil_dump() writes for it; ids is the
 * "instances" array's text, NULL for the brief form ("instances": null).
 * Needs no lock. */
void usage_facts_text(const struct usage_facts *facts, const char *strategy, const char *hex,
                      const struct strbuf *ids, struct strbuf *sb);
/* The brief form as a jansson object (the instance summaries'). */
json_t *usage_facts_json(const struct usage_facts *facts, const char *strategy, const char *hex);
int usage_load(struct runtime *rt, struct err *err);

/* runtime.c helpers used by usage.c / refresh.c */
json_t *rtx_summary_locked(struct runtime *rt, struct instance *inst, json_t *usage);
/* Starts an instance from the control plane (rt->control held). A user
 * request persists the desired state first and clears it if the start
 * fails; a restore leaves it as it was. */
int rtx_start(struct runtime *rt, const char *id, bool user_request, struct err *err);
/* Stops an instance's VM from the control plane (rt->control held):
 * 1 if it was running, 0 if not, -1 on failure. */
int rtx_stop_vm(struct runtime *rt, struct instance *inst, struct err *err);

#endif
