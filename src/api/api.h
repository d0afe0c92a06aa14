/*
 * api: the HTTP control plane (libmicrohttpd), following
 * reference/control-plane-openapi.yaml.
 *
 * Threading: libmicrohttpd runs a small pool of polling threads (epoll);
 * handlers run on them and may block briefly (validation, a worker
 * completing a command, a durable write). A slow client costs a socket, not
 * a thread: bodies are read incrementally and every connection has an idle
 * timeout.
 *
 * Contract: api_start() binds and listens before it returns (so the caller
 * may announce the address); api_stop() stops accepting, waits for the
 * handlers in flight and frees everything. The subsystems passed in are
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

struct api_limits {
    size_t max_body_bytes;      /* 413 above; default 1 MiB */
    size_t max_header_bytes;    /* per-connection header memory; default 32 KiB */
    size_t max_url_bytes;       /* 414 above; default 8 KiB */
    unsigned max_connections;   /* default 1024; refused above */
    unsigned idle_timeout_s;    /* a connection idle this long is closed; default 30 */
    unsigned threads;           /* polling threads; default 4 */
};

enum api_role { API_ROLE_NONE, API_ROLE_READ, API_ROLE_ADMIN };

struct api_token {
    char name[64];              /* shown in the audit log, never the secret */
    char sha256_hex[65];        /* hash of the bearer secret */
    enum api_role role;
};

struct api_options {
    const char *host;           /* e.g. "127.0.0.1" */
    int port;                   /* 0 picks a free port */
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
};

struct api;

int api_start(const struct api_options *opts, struct api **out, struct err *err);
/* The port actually bound (useful with port 0). */
int api_port(const struct api *api);
void api_stop(struct api *api);

#endif
