/*
 * deadline: a bound on the time a request may take to arrive.
 *
 * Why: libmicrohttpd's connection timeout counts silence only, so a client
 * that sends one header byte just before each timeout held its connection
 * for as long as its headers fit in their buffer (days), and a few hundred
 * such clients, needing no token since authentication waits for whole
 * headers, kept every other client out. Here each connection is watched
 * from its opening, and again from the end of each answer it carries: a
 * request whose headers and body have not all arrived `limit` after its
 * first byte has its connection shut down, unanswered. A pause before that
 * byte (a kept-alive connection between requests) is the idle timeout's to
 * bound. The first byte is known from the kernel's time of the socket's
 * last data, read at each sweep: the clock starts at the last sweep that
 * saw nothing arrive, at most a sweep's period before that byte, never
 * after it. While a request is handled and answered it is not watched (a
 * handler may take as long as it needs).
 * A connection accepted only to be refused (over a connection limit) is
 * given DEADLINE_REFUSED_GRACE_S for its request instead: its answer is
 * known already, and its slot is wanted back.
 *
 * How: a watch holds its own duplicate of the connection's descriptor, so
 * the sweeping thread's shutdown() can never land on a descriptor number
 * the server has meanwhile closed and reused; libmicrohttpd then reads the
 * end of the stream and closes the connection its usual way.
 *
 * Ownership and threads: deadline_start() and deadline_stop() are called by
 * the api's owner; every watch must be forgotten before deadline_stop().
 * deadline_watch() and deadline_forget() are called by the connection's
 * polling thread when it opens and closes; deadline_receiving() and
 * deadline_handling() by whichever thread holds the connection's request.
 * deadline_closed() and deadline_refused_closed() from any thread.
 *
 * Errors: deadline_start() returns -1 with ERR_INTERNAL when memory or the
 * thread is missing. deadline_watch() returns NULL when memory or a
 * descriptor is missing: that connection goes unwatched (its idle timeout
 * still applies).
 */
#ifndef STRATD_API_DEADLINE_H
#define STRATD_API_DEADLINE_H

#include "core/err.h"

#include <stdbool.h>
#include <stdint.h>

struct deadline;
struct deadline_watch;

int deadline_start(struct deadline **out, int64_t limit_ns, struct err *err);
/* Joins the sweeping thread and frees; NULL is a no-op. */
void deadline_stop(struct deadline *dl);

/* Seconds a refused connection has to send its request. */
#define DEADLINE_REFUSED_GRACE_S 2

/* Watches the connection on `fd` (not taken: it is duplicated), as
 * receiving from now; `refused`: within the grace above (or the limit, if
 * shorter). */
struct deadline_watch *deadline_watch(struct deadline *dl, int fd, bool refused);
/* A new request may be arriving from now on (the previous one answered). */
void deadline_receiving(struct deadline_watch *w);
/* The request has arrived whole: unwatched until deadline_receiving(). */
void deadline_handling(struct deadline_watch *w);
/* Stops watching and frees the watch; NULL is a no-op. */
void deadline_forget(struct deadline *dl, struct deadline_watch *w);

/* Connections shut down for a request that arrived too slowly (refused
 * ones not counted). */
uint64_t deadline_closed(const struct deadline *dl);
/* Refused connections shut down for sending no request within the grace. */
uint64_t deadline_refused_closed(const struct deadline *dl);

#endif
