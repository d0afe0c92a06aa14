/*
 * acceptor: the control plane's listening socket and the one thread that
 * accepts on it, handing each connection to libmicrohttpd's polling pool.
 *
 * Why not libmicrohttpd's own accept: every polling thread of its pool
 * watches the shared listening socket, and the first to wake accepts up to
 * ten connections in a row, so a client that opens its connections together
 * finds most of them on one thread. Measured with wrk's 16 connections over
 * four polling threads: all 16 on one thread in some runs (the server then
 * on one core, 73,000 module pages a second against 108,000 when spread).
 * A socket handed over with MHD_add_connection is placed by its descriptor
 * number across the pool, so connections opened together spread evenly.
 *
 * Admission: while `*open` (the connections libmicrohttpd has started and
 * not yet closed, counted by the caller) is at `cap`, the acceptor stops
 * accepting and new connections wait in the kernel's backlog; a burst that
 * arrives before those counts catch up is refused by libmicrohttpd's own
 * limit (the same cap), which closes the socket.
 *
 * The HTTPS port (config.tls): a client that speaks plain HTTP there would
 * meet a TLS handshake that fails and a closed connection, with nothing to
 * say why. So each accepted connection waits (in an epoll set of the
 * acceptor's, within the cap) for its first byte, read without taking it:
 * a TLS handshake record goes to libmicrohttpd, anything else is answered
 * a 400 in the control plane's error shape and closed; a connection silent
 * for the idle timeout is closed, as libmicrohttpd would close it.
 *
 * Ownership and threads: acceptor_start(), acceptor_stop() and
 * acceptor_free() are called by the api's owner, in that order; the daemon
 * must outlive the acceptor's thread (stop the acceptor first), and the
 * struct the daemon's requests (free it once the daemon has stopped, since a
 * request may read its counters). acceptor_port() and the counters may be
 * called from any thread.
 *
 * Errors: acceptor_start() returns -1 with ERR_INTERNAL when the address
 * (IPv4, or IPv6, which then takes IPv4 clients too) cannot be bound
 * (taken, not permitted) or the thread cannot start.
 */
#ifndef STRATD_API_ACCEPTOR_H
#define STRATD_API_ACCEPTOR_H

#include "core/err.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct MHD_Daemon;
struct acceptor;

struct acceptor_config {
    struct sockaddr_storage addr; /* IPv4 or IPv6 */
    unsigned backlog;
    unsigned cap;            /* connections held at once (above) */
    bool tls;                /* the port speaks HTTPS (the first byte's stage) */
    unsigned idle_timeout_s; /* a silent connection's limit in that stage */
};

int acceptor_start(struct acceptor **out, const struct acceptor_config *config,
                   struct MHD_Daemon *daemon, const atomic_uint *open, struct err *err);
/* Plain-HTTP requests answered 400 on the HTTPS port, and connections
 * closed there for sending nothing; any thread. */
uint64_t acceptor_plain_refused(const struct acceptor *acceptor);
uint64_t acceptor_silent_closed(const struct acceptor *acceptor);
/* The bound port (the kernel's choice when addr asked for port 0). */
int acceptor_port(const struct acceptor *acceptor);
/* Closes the listening socket and joins the thread; NULL is a no-op. */
void acceptor_stop(struct acceptor *acceptor);
/* Frees what acceptor_stop() left (its counters); NULL is a no-op. */
void acceptor_free(struct acceptor *acceptor);

#endif
