/*
 * The control plane's accepting thread (contract in acceptor.h).
 */
#include "api/acceptor.h"

#include "core/clock.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* At the connection cap, how often the count is looked at again. */
#define AT_CAP_RECHECK_MS 10
/* Out of descriptors or kernel memory: the pause before accepting again
 * (the pending connections wait in the backlog meanwhile). */
#define SHORTAGE_PAUSE_MS 100
#define SHORTAGE_WARN_EVERY_NS (10 * 1000000000LL)

/* An HTTPS client speaks first with a TLS record of this content type. */
#define TLS_HANDSHAKE_RECORD 0x16
/* How often connections waiting for their first byte are looked at for
 * the idle timeout. */
#define FIRST_BYTE_SWEEP_MS 1000
/* What is read of a plain-HTTP request before its answer, so that the
 * close does not reset the connection over unread bytes. */
#define PLAIN_DRAIN_BYTES 65536
#define EPOLL_BATCH 64

/* A connection to the HTTPS port that has not sent its first byte. */
struct first_byte_wait {
    int fd; /* -1: the slot is free */
    socklen_t len;
    int64_t since_ns;
    struct sockaddr_storage peer;
};

struct acceptor {
    int listen_fd;
    int stop_fd; /* an eventfd, written once by acceptor_stop */
    int port;
    struct MHD_Daemon *daemon;
    const atomic_uint *open;
    unsigned cap;
    int64_t warned_ns;
    pthread_t thread;
    /* HTTPS port: connections wait here for their first byte (acceptor.h) */
    bool first_byte;
    int epoll_fd;
    struct first_byte_wait *waits; /* cap slots */
    unsigned nwaiting;
    int64_t silent_limit_ns;
    int64_t swept_ns;
    atomic_uint_least64_t plain_refused;
    atomic_uint_least64_t silent_closed;
};

/* Waits for the stop signal, a pending connection when `listening`, and
 * a first byte when connections wait for one; false once the acceptor is
 * stopping. */
static bool wait_ready(struct acceptor *a, bool listening, int timeout_ms)
{
    struct pollfd fds[3] = {{.fd = a->stop_fd, .events = POLLIN},
                            {.fd = listening ? a->listen_fd : -1, .events = POLLIN},
                            {.fd = a->nwaiting ? a->epoll_fd : -1, .events = POLLIN}};
    if (a->nwaiting && (timeout_ms < 0 || timeout_ms > FIRST_BYTE_SWEEP_MS))
        timeout_ms = FIRST_BYTE_SWEEP_MS;
    int n = poll(fds, 3, timeout_ms);
    return !(n > 0 && (fds[0].revents & POLLIN));
}

static bool is_shortage(int errnum)
{
    return errnum == EMFILE || errnum == ENFILE || errnum == ENOBUFS || errnum == ENOMEM;
}

/* libmicrohttpd owns the socket from here, refused or not. */
static void hand_over(struct acceptor *a, int fd, struct sockaddr_storage *peer, socklen_t len)
{
    if (MHD_add_connection(a->daemon, fd, (struct sockaddr *)peer, len) != MHD_YES)
        log_debug("http", "a connection was refused: %s", strerror(errno));
}

/* ------------------------------------------------ the HTTPS port's first byte */

static void wait_for_first_byte(struct acceptor *a, int fd, struct sockaddr_storage *peer,
                                socklen_t len)
{
    unsigned slot = 0;
    while (slot < a->cap && a->waits[slot].fd >= 0)
        slot++;
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = slot};
    if (slot == a->cap || epoll_ctl(a->epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        hand_over(a, fd, peer, len); /* cannot wait: served as without the stage */
        return;
    }
    struct first_byte_wait *w = &a->waits[slot];
    w->fd = fd;
    w->len = len;
    w->peer = *peer;
    w->since_ns = clock_mono_ns();
    a->nwaiting++;
}

/* Takes the slot's connection out of the stage; its descriptor. */
static int stop_waiting(struct acceptor *a, struct first_byte_wait *w)
{
    int fd = w->fd;
    (void)epoll_ctl(a->epoll_fd, EPOLL_CTL_DEL, fd, NULL);
    w->fd = -1;
    a->nwaiting--;
    return fd;
}

/* A plain-HTTP request on the HTTPS port: a 400 that says so, in the
 * control plane's error shape, where GnuTLS would only close. */
static void refuse_plain_http(struct acceptor *a, int fd)
{
    static const char body[] =
        "{\"error\":\"this port speaks HTTPS only and the request came in plain HTTP: call it "
        "with an https:// URL\",\"details\":{}}\n";
    char answer[512];
    int n = snprintf(answer, sizeof answer,
                     "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     sizeof body - 1, body);
    char drain[4096];
    for (size_t drained = 0; drained < PLAIN_DRAIN_BYTES;) {
        ssize_t got = recv(fd, drain, sizeof drain, MSG_DONTWAIT);
        if (got <= 0)
            break;
        drained += (size_t)got;
    }
    if (n > 0)
        (void)send(fd, answer, (size_t)n, MSG_NOSIGNAL | MSG_DONTWAIT);
    (void)shutdown(fd, SHUT_WR);
    close(fd);
    atomic_fetch_add(&a->plain_refused, 1);
    log_debug("http", "answered a plain-HTTP request on the HTTPS port with 400");
}

/* Reads the first byte of a waiting connection without taking it: a TLS
 * handshake goes to libmicrohttpd, anything else is answered 400, a
 * connection closed first is closed. */
static void look_at_first_byte(struct acceptor *a, struct first_byte_wait *w)
{
    unsigned char first = 0;
    ssize_t n = recv(w->fd, &first, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return;
    struct sockaddr_storage peer = w->peer;
    socklen_t len = w->len;
    int fd = stop_waiting(a, w);
    if (n == 1 && first == TLS_HANDSHAKE_RECORD)
        hand_over(a, fd, &peer, len);
    else if (n == 1)
        refuse_plain_http(a, fd);
    else
        close(fd);
}

static void serve_first_bytes(struct acceptor *a)
{
    struct epoll_event events[EPOLL_BATCH];
    int n = epoll_wait(a->epoll_fd, events, EPOLL_BATCH, 0);
    for (int i = 0; i < n; i++) {
        struct first_byte_wait *w = &a->waits[events[i].data.u32];
        if (w->fd >= 0)
            look_at_first_byte(a, w);
    }
}

/* A connection silent for the idle timeout is closed, as libmicrohttpd
 * would close it. */
static void close_silent(struct acceptor *a)
{
    int64_t now = clock_mono_ns();
    if (now - a->swept_ns < (int64_t)FIRST_BYTE_SWEEP_MS * 1000000)
        return;
    a->swept_ns = now;
    for (unsigned i = 0; i < a->cap && a->nwaiting > 0; i++) {
        struct first_byte_wait *w = &a->waits[i];
        if (w->fd >= 0 && now - w->since_ns >= a->silent_limit_ns) {
            close(stop_waiting(a, w));
            atomic_fetch_add(&a->silent_closed, 1);
        }
    }
}

/* ------------------------------------------------------------- accepting */

/* Open connections and those waiting for their first byte. */
static unsigned held(const struct acceptor *a)
{
    return atomic_load(a->open) + a->nwaiting;
}

/* Accepts until the backlog is empty or the cap is reached; false when the
 * process ran out of descriptors or memory for one more. */
static bool accept_pending(struct acceptor *a)
{
    while (held(a) < a->cap) {
        struct sockaddr_storage peer;
        socklen_t len = sizeof peer;
        int fd =
            accept4(a->listen_fd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if (!is_shortage(errno))
                return true;
            int64_t now = clock_mono_ns();
            if (now - a->warned_ns >= SHORTAGE_WARN_EVERY_NS) {
                a->warned_ns = now;
                log_warn("http", "cannot accept connections: %s (they wait until it passes)",
                         strerror(errno));
            }
            return false;
        }
        if (a->first_byte)
            wait_for_first_byte(a, fd, &peer, len);
        else
            hand_over(a, fd, &peer, len);
    }
    return true;
}

static void *acceptor_main(void *arg)
{
    struct acceptor *a = arg;
    for (;;) {
        bool full = held(a) >= a->cap;
        if (!wait_ready(a, !full, full ? AT_CAP_RECHECK_MS : -1))
            return NULL;
        if (a->nwaiting) {
            serve_first_bytes(a);
            close_silent(a);
        }
        if (!full && !accept_pending(a) && !wait_ready(a, false, SHORTAGE_PAUSE_MS))
            return NULL;
    }
}

/* The port of an IPv4 or IPv6 socket address, in host order. */
static int port_of(const struct sockaddr_storage *addr)
{
    if (addr->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)(const void *)addr)->sin6_port);
    return ntohs(((const struct sockaddr_in *)(const void *)addr)->sin_port);
}

/* "host:port", an IPv6 host in brackets, for a message. */
static void format_address(const struct sockaddr_storage *addr, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    if (addr->ss_family == AF_INET6) {
        (void)inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)addr)->sin6_addr,
                        host, sizeof host);
        snprintf(out, size, "[%s]:%d", host, port_of(addr));
    } else {
        (void)inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)addr)->sin_addr, host,
                        sizeof host);
        snprintf(out, size, "%s:%d", host, port_of(addr));
    }
}

static int open_listener(struct acceptor *a, const struct sockaddr_storage *addr, unsigned backlog,
                         struct err *err)
{
    bool six = addr->ss_family == AF_INET6;
    a->listen_fd = socket(six ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->listen_fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot open a listening socket");
        return -1;
    }
    int on = 1, off = 0;
    (void)setsockopt(a->listen_fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    /* "::" serves IPv4 clients too, whatever the host's default */
    if (six)
        (void)setsockopt(a->listen_fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
    socklen_t len = six ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    if (bind(a->listen_fd, (const struct sockaddr *)addr, len) != 0 ||
        listen(a->listen_fd, (int)backlog) != 0) {
        char where[INET6_ADDRSTRLEN + 16];
        format_address(addr, where, sizeof where);
        err_set_errno(err, ERR_INTERNAL, errno, "cannot listen on %s", where);
        return -1;
    }
    struct sockaddr_storage bound;
    memset(&bound, 0, sizeof bound);
    len = sizeof bound;
    if (getsockname(a->listen_fd, (struct sockaddr *)&bound, &len) != 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot read the listening address");
        return -1;
    }
    a->port = port_of(&bound);
    return 0;
}

static void close_fds(struct acceptor *a)
{
    if (a->listen_fd >= 0)
        close(a->listen_fd);
    if (a->stop_fd >= 0)
        close(a->stop_fd);
    for (unsigned i = 0; a->waits && i < a->cap; i++)
        if (a->waits[i].fd >= 0)
            close(a->waits[i].fd);
    free(a->waits);
    if (a->epoll_fd >= 0)
        close(a->epoll_fd);
}

/* The HTTPS port's stage for first bytes. */
static int open_first_byte_stage(struct acceptor *a, struct err *err)
{
    a->waits = calloc(a->cap, sizeof *a->waits);
    if (!a->waits) {
        err_set(err, ERR_INTERNAL, "out of memory for the listener");
        return -1;
    }
    for (unsigned i = 0; i < a->cap; i++)
        a->waits[i].fd = -1;
    a->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
    if (a->epoll_fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot create the listener's epoll");
        return -1;
    }
    return 0;
}

int acceptor_start(struct acceptor **out, const struct acceptor_config *config,
                   struct MHD_Daemon *daemon, const atomic_uint *open, struct err *err)
{
    *out = NULL;
    struct acceptor *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(err, ERR_INTERNAL, "out of memory for the listener");
        return -1;
    }
    a->listen_fd = -1;
    a->epoll_fd = -1;
    a->daemon = daemon;
    a->open = open;
    a->cap = config->cap;
    a->warned_ns = INT64_MIN / 2;
    a->first_byte = config->tls;
    a->silent_limit_ns = (int64_t)config->idle_timeout_s * 1000000000;
    int rc;
    a->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (a->stop_fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot create the listener's stop signal");
        goto fail;
    }
    if ((a->first_byte && open_first_byte_stage(a, err) != 0) ||
        open_listener(a, &config->addr, config->backlog, err) != 0)
        goto fail;
    /* published before the thread starts: the requests of the connections
     * it hands over may read it (the HTTPS metrics) */
    *out = a;
    rc = pthread_create(&a->thread, NULL, acceptor_main, a);
    if (rc != 0) {
        *out = NULL;
        err_set(err, ERR_INTERNAL, "cannot start the accepting thread: %s", strerror(rc));
        goto fail;
    }
    (void)pthread_setname_np(a->thread, "http:accept");
    return 0;
fail:
    close_fds(a);
    free(a);
    return -1;
}

uint64_t acceptor_plain_refused(const struct acceptor *acceptor)
{
    return atomic_load(&acceptor->plain_refused);
}

uint64_t acceptor_silent_closed(const struct acceptor *acceptor)
{
    return atomic_load(&acceptor->silent_closed);
}

int acceptor_port(const struct acceptor *acceptor)
{
    return acceptor->port;
}

void acceptor_stop(struct acceptor *acceptor)
{
    if (!acceptor)
        return;
    uint64_t one = 1;
    while (write(acceptor->stop_fd, &one, sizeof one) < 0 && errno == EINTR) {
    }
    pthread_join(acceptor->thread, NULL);
    close_fds(acceptor);
    acceptor->waits = NULL;
    acceptor->listen_fd = acceptor->stop_fd = acceptor->epoll_fd = -1;
}

void acceptor_free(struct acceptor *acceptor)
{
    free(acceptor);
}
