/*
 * The control plane's accepting thread (contract in acceptor.h).
 */
#include "api/acceptor.h"

#include "core/clock.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
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
        struct sockaddr_in peer;
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

static int open_listener(struct acceptor *a, const struct sockaddr_in *addr, unsigned backlog,
                         struct err *err)
{
    a->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (a->listen_fd < 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot open a listening socket");
        return -1;
    }
    int on = 1;
    (void)setsockopt(a->listen_fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    char host[INET_ADDRSTRLEN] = "?";
    (void)inet_ntop(AF_INET, &addr->sin_addr, host, sizeof host);
    if (bind(a->listen_fd, (const struct sockaddr *)addr, sizeof *addr) != 0 ||
        listen(a->listen_fd, (int)backlog) != 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot listen on %s:%u", host,
                      (unsigned)ntohs(addr->sin_port));
        return -1;
    }
    struct sockaddr_in bound = {0};
    socklen_t len = sizeof bound;
    if (getsockname(a->listen_fd, (struct sockaddr *)&bound, &len) != 0) {
        err_set_errno(err, ERR_INTERNAL, errno, "cannot read the listening address");
        return -1;
    }
    a->port = ntohs(bound.sin_port);
    return 0;
}

static void close_fds(struct acceptor *a)
{
    if (a->listen_fd >= 0)
        close(a->listen_fd);
    if (a->stop_fd >= 0)
        close(a->stop_fd);
}

int acceptor_start(struct acceptor **out, const struct sockaddr_in *addr, unsigned backlog,
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
