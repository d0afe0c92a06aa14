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
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* At the connection cap, how often the count is looked at again. */
#define AT_CAP_RECHECK_MS 10
/* Out of descriptors or kernel memory: the pause before accepting again
 * (the pending connections wait in the backlog meanwhile). */
#define SHORTAGE_PAUSE_MS 100
#define SHORTAGE_WARN_EVERY_NS (10 * 1000000000LL)

struct acceptor {
    int listen_fd;
    int stop_fd; /* an eventfd, written once by acceptor_stop */
    int port;
    struct MHD_Daemon *daemon;
    const atomic_uint *open;
    unsigned cap;
    int64_t warned_ns;
    pthread_t thread;
};

/* Waits for the stop signal and, when `listening`, a pending connection;
 * false once the acceptor is stopping. */
static bool wait_ready(struct acceptor *a, bool listening, int timeout_ms)
{
    struct pollfd fds[2] = {{.fd = a->stop_fd, .events = POLLIN},
                            {.fd = a->listen_fd, .events = POLLIN}};
    int n = poll(fds, listening ? 2 : 1, timeout_ms);
    return !(n > 0 && (fds[0].revents & POLLIN));
}

static bool is_shortage(int errnum)
{
    return errnum == EMFILE || errnum == ENFILE || errnum == ENOBUFS || errnum == ENOMEM;
}

/* Accepts until the backlog is empty or the cap is reached; false when the
 * process ran out of descriptors or memory for one more. */
static bool accept_pending(struct acceptor *a)
{
    while (atomic_load(a->open) < a->cap) {
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
        /* libmicrohttpd owns the socket from here, refused or not */
        if (MHD_add_connection(a->daemon, fd, (struct sockaddr *)&peer, len) != MHD_YES)
            log_debug("http", "a connection was refused: %s", strerror(errno));
    }
    return true;
}

static void *acceptor_main(void *arg)
{
    struct acceptor *a = arg;
    for (;;) {
        bool full = atomic_load(a->open) >= a->cap;
        if (!wait_ready(a, !full, full ? AT_CAP_RECHECK_MS : -1))
            return NULL;
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
}

int acceptor_start(struct acceptor **out, const struct sockaddr_storage *addr, unsigned backlog,
                   struct MHD_Daemon *daemon, const atomic_uint *open, unsigned cap,
                   struct err *err)
{
    *out = NULL;
    struct acceptor *a = calloc(1, sizeof *a);
    if (!a) {
        err_set(err, ERR_INTERNAL, "out of memory for the listener");
        return -1;
    }
    a->listen_fd = -1;
    a->daemon = daemon;
    a->open = open;
    a->cap = cap;
    a->warned_ns = INT64_MIN / 2;
    int rc;
    a->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (a->stop_fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot create the listener's stop signal");
        goto fail;
    }
    if (open_listener(a, addr, backlog, err) != 0)
        goto fail;
    rc = pthread_create(&a->thread, NULL, acceptor_main, a);
    if (rc != 0) {
        err_set(err, ERR_INTERNAL, "cannot start the accepting thread: %s", strerror(rc));
        goto fail;
    }
    (void)pthread_setname_np(a->thread, "http:accept");
    *out = a;
    return 0;
fail:
    close_fds(a);
    free(a);
    return -1;
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
    free(acceptor);
}
