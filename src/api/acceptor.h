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
 * Ownership and threads: acceptor_start() and acceptor_stop() are called by
 * the api's owner, one after the other; the daemon must outlive the
 * acceptor (stop the acceptor first). acceptor_port() may be called from
 * any thread.
 *
 * Errors: acceptor_start() returns -1 with ERR_INTERNAL when the address
 * (IPv4, or IPv6, which then takes IPv4 clients too) cannot be bound
 * (taken, not permitted) or the thread cannot start.
 */
#ifndef STRATD_API_ACCEPTOR_H
#define STRATD_API_ACCEPTOR_H

#include "core/err.h"

#include <stdatomic.h>
#include <sys/socket.h>

struct MHD_Daemon;
struct acceptor;

int acceptor_start(struct acceptor **out, const struct sockaddr_storage *addr, unsigned backlog,
                   struct MHD_Daemon *daemon, const atomic_uint *open, unsigned cap,
                   struct err *err);
/* The bound port (the kernel's choice when addr asked for port 0). */
int acceptor_port(const struct acceptor *acceptor);
/* Closes the listening socket and joins the thread; NULL is a no-op. */
void acceptor_stop(struct acceptor *acceptor);

#endif
