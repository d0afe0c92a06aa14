#include "runtime/event.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/*
 * Events of the plain size (no book levels) are recycled through a pool per
 * creating thread. Without it a provider's events were malloc'ed in its
 * arena and freed by the workers into that same arena, so both threads took
 * the arena's lock for every event and, at a million events a second, met
 * on it in the kernel. An event remembers its pool. The owner's own
 * releases go straight to `spare`; another thread's gather with others of
 * the same pool and go onto the pool's lock-free `returned` stack as one
 * chain (event_flush_returns); the owner takes the whole stack when
 * `spare` runs dry. Taking the whole stack with one exchange, never
 * popping single entries, is what keeps the stack free of ABA.
 *
 * A pool outlives its thread: events may still be queued when a provider
 * stops. The thread's exit marks it orphaned and the next thread that
 * creates events adopts it, so there are never more pools than threads
 * that create events at once.
 */
/* Events a pool makes at most, raised by event_pool_reserve; beyond, while
 * that many are queued or spare, events come from malloc alone. Bounding
 * what it makes, rather than what it keeps, means a pool never frees a
 * long list at once on its owner's thread, a provider's. */
static _Atomic size_t pool_max = 16384;

struct event_pool {
    _Atomic(struct event *) returned; /* pushed by any thread */
    struct event *spare;              /* owner only */
    size_t made;                      /* owner only: alive, queued or spare */
    struct event_pool *next;          /* every pool ever made: under pools_lock */
    bool orphan;                      /* under pools_lock */
};

/* Releases by a thread that does not own the event's pool gather here and
 * go back in one push of the chain: one compare-and-swap per
 * EVENT_RETURN_BATCH events rather than per event. */
#define EVENT_RETURN_BATCH 64
struct event_returns {
    struct event_pool *pool;
    struct event *head, *tail;
    unsigned n;
    bool registered; /* its thread's exit flushes it */
};

static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static struct event_pool *pools;
static pthread_once_t pools_once = PTHREAD_ONCE_INIT;
static pthread_key_t pools_key, returns_key;
static bool pools_key_ok, returns_key_ok;
static _Thread_local struct event_pool *own_pool;
static _Thread_local struct event_returns returns;

static size_t free_list(struct event *ev)
{
    size_t n = 0;
    for (; ev; n++) {
        struct event *next = ev->next_free;
        free(ev);
        ev = next;
    }
    return n;
}

/* Thread exit: the spares go back to malloc, returns keep arriving. */
static void pool_orphan(void *arg)
{
    struct event_pool *pool = arg;
    own_pool = NULL;
    pool->made -= free_list(pool->spare);
    pool->spare = NULL;
    pthread_mutex_lock(&pools_lock);
    pool->orphan = true;
    pthread_mutex_unlock(&pools_lock);
}

static void returns_at_exit(void *arg)
{
    (void)arg;
    event_flush_returns();
}

static void pools_init(void)
{
    pools_key_ok = pthread_key_create(&pools_key, pool_orphan) == 0;
    returns_key_ok = pthread_key_create(&returns_key, returns_at_exit) == 0;
}

/* NULL (events then come from malloc alone) when out of memory. */
static struct event_pool *pool_of_thread(void)
{
    if (own_pool)
        return own_pool;
    pthread_once(&pools_once, pools_init);
    if (!pools_key_ok)
        return NULL;
    pthread_mutex_lock(&pools_lock);
    struct event_pool *pool = pools;
    while (pool && !pool->orphan)
        pool = pool->next;
    if (pool) {
        pool->orphan = false;
    } else if ((pool = calloc(1, sizeof *pool)) != NULL) {
        atomic_init(&pool->returned, NULL);
        pool->next = pools;
        pools = pool;
    }
    pthread_mutex_unlock(&pools_lock);
    if (pool && pthread_setspecific(pools_key, pool) != 0) {
        pthread_mutex_lock(&pools_lock);
        pool->orphan = true;
        pthread_mutex_unlock(&pools_lock);
        pool = NULL;
    }
    own_pool = pool;
    return pool;
}

/* Owner only: a spare, refilled from the returned stack when it is empty,
 * else a new event while the pool has made fewer than its bound. */
static struct event *pool_take(struct event_pool *pool)
{
    if (!pool->spare)
        pool->spare = atomic_exchange_explicit(&pool->returned, NULL, memory_order_acquire);
    struct event *ev = pool->spare;
    if (ev) {
        pool->spare = ev->next_free;
        return ev;
    }
    if (pool->made >= atomic_load_explicit(&pool_max, memory_order_relaxed))
        return NULL;
    ev = malloc(sizeof *ev);
    if (ev)
        pool->made++;
    return ev;
}

void event_pool_reserve(size_t events)
{
    size_t now = atomic_load_explicit(&pool_max, memory_order_relaxed);
    while (now < events && !atomic_compare_exchange_weak_explicit(
                               &pool_max, &now, events, memory_order_relaxed, memory_order_relaxed))
        ;
}

void event_flush_returns(void)
{
    struct event *first = returns.head;
    if (!first)
        return;
    struct event_pool *pool = returns.pool;
    struct event *head = atomic_load_explicit(&pool->returned, memory_order_relaxed);
    do
        returns.tail->next_free = head;
    while (!atomic_compare_exchange_weak_explicit(&pool->returned, &head, first,
                                                  memory_order_release, memory_order_relaxed));
    returns.head = returns.tail = NULL;
    returns.n = 0;
}

/* A thread that never created an event registers its exit here, so that
 * what it gathered is not lost with it. */
static void returns_register(void)
{
    pthread_once(&pools_once, pools_init);
    if (returns_key_ok && pthread_setspecific(returns_key, &returns) == 0)
        returns.registered = true;
}

static void pool_give(struct event_pool *pool, struct event *ev)
{
    if (pool == own_pool) {
        ev->next_free = pool->spare;
        pool->spare = ev;
        return;
    }
    if (!returns.registered)
        returns_register();
    if (returns.pool != pool)
        event_flush_returns();
    returns.pool = pool;
    ev->next_free = returns.head;
    if (!returns.head)
        returns.tail = ev;
    returns.head = ev;
    if (++returns.n >= EVENT_RETURN_BATCH || !returns.registered)
        event_flush_returns();
}

struct event *event_new(enum event_kind kind, size_t extra)
{
    struct event_pool *pool = extra == 0 ? pool_of_thread() : NULL;
    struct event *ev = pool ? pool_take(pool) : NULL;
    if (!ev) {
        pool = NULL;
        ev = malloc(sizeof *ev + extra);
    }
    if (!ev)
        return NULL;
    memset(ev, 0, sizeof *ev);
    atomic_init(&ev->refs, 1);
    ev->kind = (uint8_t)kind;
    ev->pool = pool;
    return ev;
}

void event_release(struct event *ev)
{
    if (!ev || atomic_fetch_sub_explicit(&ev->refs, 1, memory_order_acq_rel) != 1)
        return;
    if (ev->pool)
        pool_give(ev->pool, ev);
    else
        free(ev);
}

void event_sink_publish_run(const struct event_sink *sink, struct event **evs, size_t n)
{
    if (n == 0)
        return;
    if (sink->publish_run) {
        sink->publish_run(sink->ctx, evs, n);
        return;
    }
    for (size_t i = 0; i < n; i++)
        sink->publish(sink->ctx, evs[i]);
}

const char *event_kind_name(enum event_kind kind)
{
    static const char *const names[EVENT_KIND_COUNT] = {
        "Trade",         "Ticker",       "BookSnapshot",
        "ExecReport",    "KlineSummary", "InstrumentUpdate",
        "BalanceUpdate", "RiskControl",  "Extension",
    };
    return (unsigned)kind < EVENT_KIND_COUNT ? names[kind] : "Unknown";
}

const char *event_exec_handler(enum exec_status status)
{
    switch (status) {
    case EXEC_ACKNOWLEDGED:
        return "onOrderAcknowledged";
    case EXEC_PARTIAL_FILL:
        return "onOrderPartialFill";
    case EXEC_FILLED:
        return "onOrderFilled";
    case EXEC_CANCELLED:
        return "onOrderCancelled";
    case EXEC_REJECTED:
        return "onOrderRejected";
    case EXEC_EXPIRED:
        return "onOrderExpired";
    }
    return "onOrderRejected";
}

const char *event_exec_status_name(enum exec_status status)
{
    switch (status) {
    case EXEC_ACKNOWLEDGED:
        return "acknowledged";
    case EXEC_PARTIAL_FILL:
        return "partiallyFilled";
    case EXEC_FILLED:
        return "filled";
    case EXEC_CANCELLED:
        return "cancelled";
    case EXEC_REJECTED:
        return "rejected";
    case EXEC_EXPIRED:
        return "expired";
    }
    return "rejected";
}

const char *order_side_name(enum order_side side)
{
    return side == SIDE_BUY ? "buy" : "sell";
}

const char *order_type_name(enum order_type type)
{
    return type == ORDER_MARKET ? "market" : "limit";
}
