/*
 * deadline: one thread sweeps a list of watched connections a few times per
 * limit (deadline.h). Connections number in the thousands at most and the
 * sweep is a walk under a mutex, so nothing finer is needed; the polling
 * threads only store a time and a flag, without the lock.
 */
#include "api/deadline.h"

#include "core/clock.h"
#include "core/log.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The sweep's period: a quarter of the limit, within these bounds. */
#define SWEEP_MIN_NS 50000000LL   /* 50 ms */
#define SWEEP_MAX_NS 1000000000LL /* 1 s */

#define CLAIMED (-1) /* since_ns of a connection being shut down */

/* The kernel's time of a socket's last data is kept in scheduler ticks
 * (4 or 10 ms) and read in whole milliseconds: data that came this close
 * after a wait began is taken for the previous request's (what comes next
 * tells). */
#define DATA_CLOCK_SLACK_MS 20

struct deadline_watch {
    struct deadline_watch *prev, *next; /* guarded by deadline.lock */
    int fd;                             /* our duplicate of the connection's */
    bool shut;                          /* shut down once; guarded by the lock */
    bool refused;                       /* given the grace instead of the limit */
    _Atomic int64_t since_ns;           /* receiving since; 0 while handling */
    /* The sweeps' own view of the wait that began at `waiting_since`,
     * guarded by the lock: the last sweep that found no byte of the
     * request yet, and when the request is reckoned to have begun (0: not
     * yet). */
    int64_t waiting_since, quiet_ns, began_ns;
};

struct deadline {
    pthread_mutex_t lock;
    pthread_cond_t wake;
    struct deadline_watch *head;
    bool quit;
    int64_t limit_ns, refused_limit_ns, period_ns;
    atomic_ullong closed, refused_closed;
    pthread_t thread;
};

/* Milliseconds since the connection last received data, from the
 * kernel's view of the socket; -1 when it cannot tell. */
static int64_t ms_since_data(int fd)
{
    struct tcp_info info;
    socklen_t len = sizeof info;
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &info, &len) != 0 ||
        len < offsetof(struct tcp_info, tcpi_last_data_recv) + sizeof info.tcpi_last_data_recv)
        return -1;
    return (int64_t)info.tcpi_last_data_recv;
}

/* When the request the connection waits for began, or 0 while none of it
 * has come. A pause between requests on a kept-alive connection is the
 * idle timeout's to bound, not the request's: the clock starts at the
 * last sweep that saw nothing arrive, at most a period before the first
 * byte (earlier, never later). Refused connections keep the time they
 * opened: their slot is wanted back. */
static int64_t request_began(struct deadline_watch *w, int64_t since, int64_t now)
{
    if (w->refused)
        return since;
    if (w->waiting_since != since) {
        w->waiting_since = since;
        w->quiet_ns = since;
        w->began_ns = 0;
    }
    if (!w->began_ns) {
        int64_t quiet_ms = ms_since_data(w->fd);
        if (quiet_ms >= 0 && (quiet_ms + DATA_CLOCK_SLACK_MS) * 1000000 >= now - since) {
            w->quiet_ns = now;
            return 0;
        }
        w->began_ns = quiet_ms >= 0 ? w->quiet_ns : since;
    }
    return w->began_ns;
}

/* Shuts down the connections past their limit; returns how many, those
 * refused anyway in `*refused`. */
static unsigned sweep(struct deadline *dl, int64_t now, unsigned *refused)
{
    unsigned n = 0;
    for (struct deadline_watch *w = dl->head; w; w = w->next) {
        int64_t since = atomic_load(&w->since_ns);
        if (w->shut || since <= 0)
            continue;
        int64_t began = request_began(w, since, now);
        int64_t limit = w->refused ? dl->refused_limit_ns : dl->limit_ns;
        if (!began || now - began < limit)
            continue;
        /* Claimed against deadline_handling(): either the request became
         * whole first and is answered, or the connection is shut down. */
        if (!atomic_compare_exchange_strong(&w->since_ns, &since, CLAIMED))
            continue;
        (void)shutdown(w->fd, SHUT_RDWR);
        w->shut = true;
        if (w->refused)
            ++*refused;
        else
            n++;
    }
    return n;
}

static void *sweep_main(void *arg)
{
    struct deadline *dl = arg;
    pthread_mutex_lock(&dl->lock);
    while (!dl->quit) {
        int64_t until = clock_mono_ns() + dl->period_ns;
        struct timespec ts = {.tv_sec = until / 1000000000, .tv_nsec = until % 1000000000};
        if (pthread_cond_timedwait(&dl->wake, &dl->lock, &ts) != ETIMEDOUT)
            continue;
        unsigned refused = 0;
        unsigned n = sweep(dl, clock_mono_ns(), &refused);
        if (refused) {
            atomic_fetch_add(&dl->refused_closed, refused);
            log_info("http", "closed %u refused connection(s) that sent no request within %lld s",
                     refused, (long long)(dl->refused_limit_ns / 1000000000));
        }
        if (n) {
            atomic_fetch_add(&dl->closed, n);
            log_warn("http",
                     "closed %u connection(s) whose request had not arrived whole %lld s after "
                     "its first byte (http.request_timeout_seconds)",
                     n, (long long)(dl->limit_ns / 1000000000));
        }
    }
    pthread_mutex_unlock(&dl->lock);
    return NULL;
}

int deadline_start(struct deadline **out, int64_t limit_ns, struct err *err)
{
    struct deadline *dl = calloc(1, sizeof *dl);
    if (!dl) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    dl->limit_ns = limit_ns;
    dl->refused_limit_ns = DEADLINE_REFUSED_GRACE_S * 1000000000LL;
    if (dl->refused_limit_ns > limit_ns)
        dl->refused_limit_ns = limit_ns;
    dl->period_ns = limit_ns / 4;
    if (dl->period_ns < SWEEP_MIN_NS)
        dl->period_ns = SWEEP_MIN_NS;
    if (dl->period_ns > SWEEP_MAX_NS)
        dl->period_ns = SWEEP_MAX_NS;
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&dl->lock, NULL);
    pthread_cond_init(&dl->wake, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&dl->thread, NULL, sweep_main, dl) != 0) {
        pthread_cond_destroy(&dl->wake);
        pthread_mutex_destroy(&dl->lock);
        free(dl);
        err_set(err, ERR_INTERNAL, "cannot start the request deadline's thread");
        return -1;
    }
    (void)pthread_setname_np(dl->thread, "http:deadline");
    *out = dl;
    return 0;
}

void deadline_stop(struct deadline *dl)
{
    if (!dl)
        return;
    pthread_mutex_lock(&dl->lock);
    dl->quit = true;
    pthread_cond_signal(&dl->wake);
    pthread_mutex_unlock(&dl->lock);
    pthread_join(dl->thread, NULL);
    while (dl->head)
        deadline_forget(dl, dl->head);
    pthread_cond_destroy(&dl->wake);
    pthread_mutex_destroy(&dl->lock);
    free(dl);
}

struct deadline_watch *deadline_watch(struct deadline *dl, int fd, bool refused)
{
    struct deadline_watch *w = calloc(1, sizeof *w);
    if (!w)
        return NULL;
    w->fd = dup(fd);
    if (w->fd < 0) {
        free(w);
        return NULL;
    }
    w->refused = refused;
    atomic_init(&w->since_ns, clock_mono_ns());
    pthread_mutex_lock(&dl->lock);
    w->next = dl->head;
    if (dl->head)
        dl->head->prev = w;
    dl->head = w;
    pthread_mutex_unlock(&dl->lock);
    return w;
}

void deadline_receiving(struct deadline_watch *w)
{
    int64_t since = w ? atomic_load_explicit(&w->since_ns, memory_order_relaxed) : CLAIMED;
    if (since != CLAIMED)
        atomic_store_explicit(&w->since_ns, clock_mono_ns(), memory_order_relaxed);
}

void deadline_handling(struct deadline_watch *w)
{
    if (w)
        (void)atomic_exchange(&w->since_ns, 0);
}

void deadline_forget(struct deadline *dl, struct deadline_watch *w)
{
    if (!w)
        return;
    pthread_mutex_lock(&dl->lock);
    if (w->prev)
        w->prev->next = w->next;
    else
        dl->head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    pthread_mutex_unlock(&dl->lock);
    close(w->fd);
    free(w);
}

uint64_t deadline_closed(const struct deadline *dl)
{
    return dl ? atomic_load(&dl->closed) : 0;
}

uint64_t deadline_refused_closed(const struct deadline *dl)
{
    return dl ? atomic_load(&dl->refused_closed) : 0;
}
