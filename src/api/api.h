/*
 * api: the HTTP control plane (libmicrohttpd), following
 * reference/control-plane-openapi.yaml.
 *
 * Threading: libmicrohttpd runs a small pool of polling threads (epoll);
 * handlers run on them and may block briefly (validation, a worker
 * completing a command, a durable write). One accepting thread hands each
 * new connection to the pool (acceptor.h), so that connections opened
 * together are spread over the threads. A slow client costs a socket, not
 * a thread: bodies are read incrementally and every connection has an idle
 * timeout.
 *
 * Limits (each with its answer; the error bodies are JSON):
 * - URL over max_url_bytes: 414. Request line and headers over
 *   max_header_bytes: 431. Both are checked by stratd on the parsed request;
 *   libmicrohttpd keeps a per-connection buffer of max_header_bytes +
 *   max_url_bytes + 16 KiB, and a request that does not even fit in it is
 *   answered by libmicrohttpd itself (431 or 414 with an HTML body) and the
 *   connection is closed.
 * - Body over max_body_bytes: 413 and the connection closed. The body is
 *   read (and dropped past the limit) to its end and then answered, so the
 *   client reads the 413 rather than a connection reset; a body still
 *   arriving idle_timeout_s seconds after it passed the limit has its
 *   connection cut unanswered, and one whose Content-Length is over 16
 *   times the limit is answered at once, unread.
 * - Connections: up to max_connections are served. The next ones (up to
 *   max_connections / 8 + 16 more) get 503 with Retry-After and are closed;
 *   beyond that the acceptor stops accepting and further connections wait
 *   in the kernel's listen backlog until a slot frees. The soft limit on
 *   open files is raised to fit when the hard limit allows.
 * - Connections per client address (optional, max_connections_per_address):
 *   the ones past it get 429 with Retry-After and are closed. A connection
 *   refused either way that sends no request is closed unanswered after
 *   DEADLINE_REFUSED_GRACE_S (2 s), so that a client cannot hold the slots
 *   of its refused connections for the request timeout.
 * - A connection with no traffic for idle_timeout_s seconds (a client that
 *   stalls half-way through a request included) is closed without an
 *   answer. Connections are multiplexed over `threads` epoll threads, so a
 *   stalled client holds a socket and a little memory, never a thread.
 * - A request whose headers and body have not all arrived request_timeout_s
 *   seconds after its first byte has its connection closed without an
 *   answer, however steadily its bytes trickle in (deadline.h); the pause
 *   before that byte is bounded by idle_timeout_s.
 * - HTTPS (optional, options.tls): TLS 1.2 and 1.3 only, with the
 *   certificate and key tls.h checked; a plain-HTTP client is closed.
 * - Rate (optional): a token bucket per token name, and one shared bucket
 *   for "anonymous": every caller when no tokens are configured, the
 *   callers without a valid token of an open /metrics otherwise; refilled
 *   at rate_per_second and holding rate_burst requests; a request finding
 *   it empty gets 429 with Retry-After (seconds). /healthz is never
 *   limited.
 *
 * Authentication: with tokens configured, every route but /healthz (and
 * /metrics unless metrics_need_token) needs "Authorization: Bearer
 * <secret>" whose SHA-256 matches a token: 401 otherwise (also for routes
 * that do not exist, so that probing reveals nothing), 403 for a read token
 * on anything but GET/HEAD. The secret is never stored or logged; the
 * token's name is the actor of audit entries.
 *
 * Contract: api_start() binds and listens before it returns (so the caller
 * may announce the address); api_stop() stops accepting, waits for the
 * handlers in flight and for their answers to be written out (up to 3 s),
 * and frees everything. The subsystems passed in are
 * borrowed and must outlive the api. Every error response is JSON
 * {"error": "...", "details": {...}} with the status of its err kind.
 */
#ifndef STRATD_API_API_H
#define STRATD_API_API_H

#include "core/err.h"
#include "js/sandbox.h"
#include "market/market.h"
#include "registry/registry.h"
#include "runtime/runtime.h"
#include "store/store.h"

#include <stdbool.h>
#include <stddef.h>

struct api_tls;

struct api_limits {
    size_t max_body_bytes;                /* 413 above; default 1 MiB */
    size_t max_header_bytes;              /* request line and headers; 431 above; default 32 KiB */
    size_t max_url_bytes;                 /* 414 above; default 8 KiB */
    unsigned max_connections;             /* open connections; 503 above; default 1024 */
    unsigned max_connections_per_address; /* 429 above; 0 (the default): no limit */
    unsigned idle_timeout_s;              /* a connection idle this long is closed; default 30 */
    unsigned request_timeout_s;           /* a request must arrive whole within this; default 30 */
    unsigned threads;                     /* polling threads; default 4 */
    unsigned rate_per_second;             /* requests per second per token; 0: no rate limit */
    unsigned rate_burst;                  /* bucket size; 0: rate_per_second */
};

enum api_role { API_ROLE_NONE, API_ROLE_READ, API_ROLE_ADMIN };

struct api_token {
    char name[64];       /* shown in the audit log, never the secret */
    char sha256_hex[65]; /* hash of the bearer secret */
    enum api_role role;
};

struct api_options {
    const char *host; /* an IPv4 or IPv6 address: "127.0.0.1", "::" (either family) */
    int port;         /* 0 picks a free port */
    struct api_limits limits;
    const struct api_token *tokens; /* none: open access (loopback only) */
    size_t ntokens;
    bool metrics_need_token;
    struct catalog *catalog;
    struct runtime *runtime;
    struct market *market;
    struct store *store;
    const char *environment;
    struct js_limits validation_limits;
    /* HTTPS with this certificate and key (tls.h); NULL: plain HTTP. The
     * caller's, kept until api_stop() returns; the caller may reload it
     * meanwhile. */
    struct api_tls *tls;
};

struct api;

int api_start(const struct api_options *opts, struct api **out, struct err *err);
/* The port actually bound (useful with port 0). */
int api_port(const struct api *api);
void api_stop(struct api *api);

#endif
