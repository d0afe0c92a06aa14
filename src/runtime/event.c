#include "runtime/event.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/*
 * Events of the plain size (no book levels) are recycled through a pool per
 * creating thread. Without it a provider's events were malloc'ed in its
 * arena and freed by the workers into that same arena, so both threads took
 * the arena's lock for every event and, at a million events a second, met
 * on it in the kernel. An event remembers its pool; whoever releases it
 * last pushes it on the pool's lock-free `returned` stack (or straight on
 * `spare` when that is the owner), and the owner takes the whole stack at
 * once when `spare` runs dry. Taking the whole stack with one exchange,
 * never popping single entries, is what keeps the stack free of ABA.
 *
 * A pool outlives its thread: events may still be queued when a provider
 * stops. The thread's exit marks it orphaned and the next thread that
 * creates events adopts it, so there are never more pools than threads
 * that create events at once.
 */
#define EVENT_POOL_KEEP 4096 /* spares a pool keeps; the rest go back to malloc */

struct event_pool {
    _Atomic(struct event *) returned; /* pushed by any thread */
    struct event *spare;              /* owner only */
    size_t nspare;
    struct event_pool *next; /* every pool ever made: under pools_lock */
    bool orphan;             /* under pools_lock */
};

static pthread_mutex_t pools_lock = PTHREAD_MUTEX_INITIALIZER;
static struct event_pool *pools;
static pthread_once_t pools_once = PTHREAD_ONCE_INIT;
static pthread_key_t pools_key;
static bool pools_key_ok;
static _Thread_local struct event_pool *own_pool;

static void free_list(struct event *ev)
{
    while (ev) {
        struct event *next = ev->next_free;
        free(ev);
        ev = next;
    }
}

/* Thread exit: the spares go back to malloc, returns keep arriving. */
static void pool_orphan(void *arg)
{
    struct event_pool *pool = arg;
    own_pool = NULL;
    free_list(pool->spare);
    pool->spare = NULL;
    pool->nspare = 0;
    pthread_mutex_lock(&pools_lock);
    pool->orphan = true;
    pthread_mutex_unlock(&pools_lock);
}

static void pools_init(void)
{
    pools_key_ok = pthread_key_create(&pools_key, pool_orphan) == 0;
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

/* Owner only. Refills `spare` from the returned stack when it is empty,
 * keeping at most EVENT_POOL_KEEP. */
static struct event *pool_take(struct event_pool *pool)
{
    if (!pool->spare) {
        struct event *list = atomic_exchange_explicit(&pool->returned, NULL, memory_order_acquire);
        size_t kept = 0;
        for (struct event *ev = list; ev && kept < EVENT_POOL_KEEP; ev = ev->next_free) {
            if (++kept == EVENT_POOL_KEEP) {
                free_list(ev->next_free);
                ev->next_free = NULL;
            }
        }
        pool->spare = list;
        pool->nspare = kept;
    }
    struct event *ev = pool->spare;
    if (ev) {
        pool->spare = ev->next_free;
        pool->nspare--;
    }
    return ev;
}

static void pool_give(struct event_pool *pool, struct event *ev)
{
    if (pool == own_pool) {
        if (pool->nspare >= EVENT_POOL_KEEP) {
            free(ev);
            return;
        }
        ev->next_free = pool->spare;
        pool->spare = ev;
        pool->nspare++;
        return;
    }
    struct event *head = atomic_load_explicit(&pool->returned, memory_order_relaxed);
    do
        ev->next_free = head;
    while (!atomic_compare_exchange_weak_explicit(&pool->returned, &head, ev, memory_order_release,
                                                  memory_order_relaxed));
}

struct event *event_new(enum event_kind kind, size_t extra)
{
    struct event_pool *pool = extra == 0 ? pool_of_thread() : NULL;
    struct event *ev = pool ? pool_take(pool) : NULL;
    if (!ev)
        ev = malloc(sizeof *ev + extra);
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
