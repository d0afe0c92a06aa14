/*
 * The libmicrohttpd side of the api: request life cycle (URI, headers, body
 * chunks, completion), limits, authentication, and turning a handler's
 * api_response into bytes on the wire.
 */
#include "api/acceptor.h"
#include "api/addresses.h"
#include "api/deadline.h"
#include "api/internal.h"
#include "api/offload.h"
#include "api/tls.h"
#include "api/views.h"

#include "core/clock.h"
#include "core/hash.h"
#include "core/jsonutil.h"
#include "core/log.h"
#include "js/validate.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>

#define DEFAULT_MAX_BODY (1u << 20)
#define DEFAULT_MAX_HEADER (32u << 10)
#define DEFAULT_MAX_URL (8u << 10)
#define DEFAULT_MAX_CONNECTIONS 1024u
#define DEFAULT_IDLE_TIMEOUT 30u
#define DEFAULT_REQUEST_TIMEOUT 30u
#define STOP_WAIT_MS 3000 /* for answers still being written at a stop */
#define DEFAULT_THREADS 4u
/* Rendered listing pages kept for reuse: a dozen pages of 100 modules with
 * ten revisions each (434 KB identity, 68 KB gzip) fit many times over. */
#define LISTING_PAGES_BUDGET (32u << 20)
/* Connections accepted beyond max_connections only to be answered 503: this
 * many plus an eighth of the limit. */
#define CONNECTION_RESERVE 16u
/* Per-connection memory beyond the header and URL limits (libmicrohttpd's
 * bookkeeping and the read buffer). */
#define CONNECTION_SLACK_BYTES (16u << 10)
/* Bodies announced over the limit by up to this factor are drained before
 * the 413 (see on_request). */
#define DRAIN_FACTOR 16u
/* Connections the kernel holds for the acceptor while it is busy or at the
 * connection cap. */
#define LISTEN_BACKLOG 1024u
/* Descriptors needed besides the connections. */
#define OTHER_FILES 256u

/* ---------------------------------------------------------- URI parsing */

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* Percent-decodes [s, s+len) into a new string; '+' is a space in queries.
 * A %00 or a malformed escape is kept literally so it fails validation
 * downstream instead of truncating the value. */
static char *decode(const char *s, size_t len, bool plus_is_space)
{
    char *out = malloc(len + 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '%' && i + 2 < len) {
            int hi = hex_value(s[i + 1]);
            int lo = hex_value(s[i + 2]);
            if (hi >= 0 && lo >= 0 && (hi | lo) != 0) {
                out[o++] = (char)(hi * 16 + lo);
                i += 2;
                continue;
            }
        }
        out[o++] = plus_is_space && s[i] == '+' ? ' ' : s[i];
    }
    out[o] = '\0';
    return out;
}

static int parse_path(struct api_request *req, const char *path, size_t len)
{
    size_t i = 0;
    while (i < len) {
        while (i < len && path[i] == '/')
            i++;
        if (i >= len)
            break;
        size_t start = i;
        while (i < len && path[i] != '/')
            i++;
        if (req->nsegments == API_MAX_SEGMENTS) {
            req->path_too_deep = true;
            return 0;
        }
        char *seg = decode(path + start, i - start, false);
        if (!seg)
            return -1;
        req->segments[req->nsegments++] = seg;
    }
    return 0;
}

static int parse_query(struct api_request *req, const char *query)
{
    for (const char *p = query; *p;) {
        const char *end = strchr(p, '&');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (len > 0) {
            const char *eq = memchr(p, '=', len);
            size_t klen = eq ? (size_t)(eq - p) : len;
            struct api_query_arg *grown =
                realloc(req->query, (req->nquery + 1) * sizeof *req->query);
            if (!grown)
                return -1;
            req->query = grown;
            struct api_query_arg *arg = &req->query[req->nquery];
            arg->key = decode(p, klen, true);
            arg->value = eq ? decode(eq + 1, len - klen - 1, true) : strdup("");
            if (!arg->key || !arg->value) {
                free(arg->key);
                free(arg->value);
                return -1;
            }
            req->nquery++;
        }
        p += len;
        if (*p == '&')
            p++;
    }
    return 0;
}

static int parse_uri(struct api_request *req)
{
    const char *q = strchr(req->raw_uri, '?');
    size_t path_len = q ? (size_t)(q - req->raw_uri) : strlen(req->raw_uri);
    if (parse_path(req, req->raw_uri, path_len) != 0)
        return -1;
    return q ? parse_query(req, q + 1) : 0;
}

static void request_free(struct api_request *req)
{
    if (!req)
        return;
    free(req->raw_uri);
    for (size_t i = 0; i < req->nsegments; i++)
        free(req->segments[i]);
    for (size_t i = 0; i < req->nquery; i++) {
        free(req->query[i].key);
        free(req->query[i].value);
    }
    free(req->query);
    strbuf_release(&req->body);
    if (req->response) {
        api_response_clear(req->response);
        free(req->response);
    }
    free(req);
}

/* ------------------------------------------------------ authentication */

static bool constant_time_equal(const char *a, const char *b, size_t n)
{
    unsigned char diff = 0;
    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static bool is_open_route(const struct api *api, const char *route)
{
    if (strcmp(route, "/healthz") == 0)
        return true;
    return strcmp(route, "/metrics") == 0 && !api->opts.metrics_need_token;
}

/* Decides who is calling, from the bearer token. With no tokens configured
 * everyone is the admin "anonymous" (the server refuses to listen beyond
 * loopback in that case). Every configured token is compared, so the time
 * taken does not say which one matched. */
static void identify(struct api *api, struct api_request *req)
{
    req->token = -1;
    if (api->opts.ntokens == 0) {
        req->role = API_ROLE_ADMIN;
        snprintf(req->actor, sizeof req->actor, "anonymous");
        return;
    }
    const char *auth = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Authorization");
    if (!auth || strncasecmp(auth, "Bearer ", 7) != 0)
        return;
    const char *secret = auth + 7;
    while (*secret == ' ')
        secret++;
    size_t len = strlen(secret);
    while (len > 0 && (secret[len - 1] == ' ' || secret[len - 1] == '\t'))
        len--;
    if (len == 0)
        return;
    req->bearer_presented = true;
    char hex[HASH_HEX_LEN + 1];
    hash_sha256_hex(secret, len, hex);
    for (size_t i = 0; i < api->opts.ntokens; i++) {
        const struct api_token *t = &api->opts.tokens[i];
        if (constant_time_equal(hex, t->sha256_hex, HASH_HEX_LEN) && req->token < 0) {
            req->token = (long)i;
            req->role = t->role;
            snprintf(req->actor, sizeof req->actor, "%s", t->name);
        }
    }
}

/* The optional rate limit: a token bucket per caller, one shared by the
 * callers without a valid token (all callers when no tokens are set; those
 * of an open /metrics otherwise, whose exposition is the dearest read).
 * Returns false (and the seconds until a request would pass) when the
 * bucket is empty. */
static bool rate_admit(struct api *api, const struct api_request *req, unsigned *retry_after)
{
    if (!api->buckets)
        return true;
    const struct api_limits *l = &api->opts.limits;
    double rate = (double)l->rate_per_second;
    double capacity = (double)(l->rate_burst ? l->rate_burst : l->rate_per_second);
    size_t index = req->token >= 0 ? (size_t)req->token : api->opts.ntokens;
    int64_t now = clock_mono_ns();
    pthread_mutex_lock(&api->rate_lock);
    struct api_rate_bucket *b = &api->buckets[index];
    if (now > b->refilled_ns) { /* threads may arrive here out of clock order */
        b->tokens += (double)(now - b->refilled_ns) / 1e9 * rate;
        b->refilled_ns = now;
    }
    if (b->tokens > capacity)
        b->tokens = capacity;
    bool admitted = b->tokens >= 1.0;
    if (admitted)
        b->tokens -= 1.0;
    double wait = admitted ? 0.0 : (1.0 - b->tokens) / rate;
    pthread_mutex_unlock(&api->rate_lock);
    if (!admitted) {
        unsigned seconds = (unsigned)wait;
        if ((double)seconds < wait)
            seconds++;
        *retry_after = seconds ? seconds : 1;
    }
    return admitted;
}

/* 401 without a valid token (on every route but the open ones, and also on
 * routes that do not exist), 429 over the rate limit. The role check (403)
 * comes after routing, in dispatch. */
/* Whether `host` (a Host header's or an origin's, port and brackets
 * included) names this machine's loopback. */
static bool loopback_host(const char *host, size_t len)
{
    const char *end = host + len;
    const char *colon = NULL;
    if (len > 0 && host[0] == '[') {
        const char *close = memchr(host, ']', len);
        return close && (size_t)(close - host) == 4 && memcmp(host, "[::1]", 5) == 0 &&
               (close + 1 == end || close[1] == ':');
    }
    colon = memchr(host, ':', len);
    size_t name = colon ? (size_t)(colon - host) : len;
    return (name == 9 && strncasecmp(host, "localhost", 9) == 0) ||
           (name >= 4 && strncmp(host, "127.", 4) == 0 && strspn(host, "0123456789.") == name);
}

/* With no tokens the API is every local client's, which a web page is not:
 * a browser can post to 127.0.0.1 from any site (its Origin says which),
 * and a name that resolves to 127.0.0.1 after a page loaded lets that page
 * read the answers too (its Host says which). Either is refused. Clients
 * such as curl send neither an Origin nor a foreign Host. */
static bool foreign_caller(const struct api *api, const struct api_request *req, const char **what)
{
    if (api->opts.ntokens > 0)
        return false;
    const char *host = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Host");
    if (host && !loopback_host(host, strlen(host))) {
        *what = "Host";
        return true;
    }
    const char *origin = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Origin");
    if (!origin)
        return false;
    const char *sep = strstr(origin, "://");
    *what = "Origin";
    if (!sep || (strncmp(origin, "http", (size_t)(sep - origin)) != 0 &&
                 strncmp(origin, "https", (size_t)(sep - origin)) != 0))
        return true;
    const char *at = sep + 3;
    return !loopback_host(at, strcspn(at, "/"));
}

/* The client's address as addresses.h keys it (an IPv4 one mapped into
 * IPv6); false when it has neither family. */
static bool client_key(struct MHD_Connection *conn, struct in6_addr *out)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
    if (!info || !info->client_addr)
        return false;
    if (info->client_addr->sa_family == AF_INET6) {
        *out = ((const struct sockaddr_in6 *)(const void *)info->client_addr)->sin6_addr;
        return true;
    }
    if (info->client_addr->sa_family != AF_INET)
        return false;
    memset(out, 0, sizeof *out);
    out->s6_addr[10] = 0xff;
    out->s6_addr[11] = 0xff;
    memcpy(&out->s6_addr[12],
           &((const struct sockaddr_in *)(const void *)info->client_addr)->sin_addr, 4);
    return true;
}

/* The client's address as text, for a refusal that names it: an IPv4
 * client as IPv4, whichever listener it came through. */
static void client_address(struct MHD_Connection *conn, char *out, size_t size)
{
    struct in6_addr addr;
    bool named = false;
    if (client_key(conn, &addr))
        named = IN6_IS_ADDR_V4MAPPED(&addr)
                    ? inet_ntop(AF_INET, &addr.s6_addr[12], out, (socklen_t)size) != NULL
                    : inet_ntop(AF_INET6, &addr, out, (socklen_t)size) != NULL;
    if (!named)
        snprintf(out, size, "?");
}

/* A request refused for its token: counted by reason, and logged at warn
 * level with the client's address at most once a second, so that a client
 * guessing tokens cannot flood the log; each line says how many refusals
 * went untold since the one before. Any polling thread. */
static void note_refused_token(struct api *api, const struct api_request *req)
{
    enum api_refusal kind = req->bearer_presented ? API_REFUSAL_UNKNOWN : API_REFUSAL_MISSING;
    atomic_fetch_add(&api->tokens_refused[kind], 1);
    int64_t now_ms = clock_mono_ns() / 1000000;
    int64_t last_ms = atomic_load(&api->refusal_logged_ms);
    if ((last_ms != 0 && now_ms - last_ms < 1000) ||
        !atomic_compare_exchange_strong(&api->refusal_logged_ms, &last_ms, now_ms)) {
        atomic_fetch_add(&api->refusals_unlogged, 1);
        return;
    }
    char addr[INET6_ADDRSTRLEN] = "?";
    client_address(req->conn, addr, sizeof addr);
    unsigned long long untold = atomic_exchange(&api->refusals_unlogged, 0);
    log_json(LOG_LEVEL_WARN, "http", "refused a request without a valid bearer token",
             json_pack("{s:s, s:s, s:s, s:s, s:I}", "reason",
                       kind == API_REFUSAL_UNKNOWN ? "a token no configured token matches"
                                                   : "no bearer token",
                       "client", addr, "method", req->method, "route", req->route, "untoldSince",
                       (json_int_t)untold));
}

static int admit(struct api *api, struct api_request *req, struct api_response *res,
                 struct err *err)
{
    const char *what = NULL;
    if (foreign_caller(api, req, &what)) {
        err_set(err, ERR_FORBIDDEN,
                "refused: the request's %s is not this machine's loopback; with no auth.tokens the "
                "API serves only local clients, not web pages or other hosts (configure tokens to "
                "serve them)",
                what);
        err_add_detail(err, "header", json_string(what));
        return -1;
    }
    if (strcmp(req->route, "/healthz") == 0)
        return 0;
    bool open = is_open_route(api, req->route);
    if (!open && req->role == API_ROLE_NONE) {
        note_refused_token(api, req);
        err_set(err, ERR_UNAUTHORIZED, "a valid bearer token is required");
        return -1;
    }
    unsigned retry = 0;
    if (!rate_admit(api, req, &retry)) {
        const struct api_limits *l = &api->opts.limits;
        err_set(err, ERR_RATE_LIMITED,
                "'%s' is over the rate limit of %u requests per second; retry in %u s",
                req->actor[0] ? req->actor : "anonymous", l->rate_per_second, retry);
        err_add_detail(err, "limit", json_integer((json_int_t)l->rate_per_second));
        err_add_detail(
            err, "burst",
            json_integer((json_int_t)(l->rate_burst ? l->rate_burst : l->rate_per_second)));
        err_add_detail(err, "retryAfterSeconds", json_integer((json_int_t)retry));
        snprintf(res->retry_after, sizeof res->retry_after, "%u", retry);
        return -1;
    }
    return 0;
}

static int authorize(const struct api *api, const struct api_request *req, struct err *err)
{
    if (is_open_route(api, req->route))
        return 0;
    bool mutation = strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0;
    if (mutation && req->role != API_ROLE_ADMIN) {
        err_set(err, ERR_FORBIDDEN, "token '%s' has the read role; %s needs admin", req->actor,
                req->method);
        err_add_detail(err, "token", json_string(req->actor));
        err_add_detail(err, "role", json_string("read"));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ dispatch */

/* More query parameters than any route reads (`state` repeats up to 16).
 * libmicrohttpd parses each into the connection's small pool, and past
 * about 850 it drops the request without a word, and without the calls
 * that would free what this callback allocated: such a request gets no
 * allocation here, only this marker, and a 400 if it gets a handler. */
#define API_MAX_QUERY_PARAMS 64
static char too_many_params_marker;

static size_t query_params(const char *uri)
{
    const char *q = strchr(uri, '?');
    if (!q)
        return 0;
    size_t n = 1;
    for (q++; *q; q++)
        n += *q == '&';
    return n;
}

/* The request a marked one gets when libmicrohttpd does call the handler. */
static struct api_request *marked_request(void)
{
    struct api_request *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->started_ns = clock_mono_ns();
    req->token = -1;
    req->too_many_params = true;
    req->raw_uri = strdup("/");
    if (!req->raw_uri) {
        free(req);
        return NULL;
    }
    return req;
}

/* Answers for requests refused before their body is read; true if one
 * applies. */
static bool refuse_early(struct api *api, struct api_request *req, struct api_response *res)
{
    const struct api_limits *l = &api->opts.limits;
    struct err err = ERR_INIT;
    unsigned status = 0;
    if (req->over_capacity) {
        err_set(&err, ERR_UNAVAILABLE, "too many connections (the limit is %u); retry later",
                l->max_connections);
        err_add_detail(&err, "limit", json_integer((json_int_t)l->max_connections));
        snprintf(res->retry_after, sizeof res->retry_after, "1");
    } else if (req->over_address_limit) {
        char addr[INET6_ADDRSTRLEN] = "?";
        client_address(req->conn, addr, sizeof addr);
        err_set(&err, ERR_RATE_LIMITED,
                "too many connections from %s (the limit is %u per address); close one or "
                "retry later",
                addr, l->max_connections_per_address);
        err_add_detail(&err, "limit", json_integer((json_int_t)l->max_connections_per_address));
        err_add_detail(&err, "address", json_string(addr));
        snprintf(res->retry_after, sizeof res->retry_after, "1");
    } else if (req->too_many_params) {
        err_set(&err, ERR_INVALID, "more than %d query parameters", API_MAX_QUERY_PARAMS);
        err_add_detail(&err, "limit", json_integer(API_MAX_QUERY_PARAMS));
    } else if (req->bad_framing) {
        err_set(&err, ERR_INVALID, "%s", req->bad_framing);
    } else if (req->nul_in_target) {
        err_set(&err, ERR_INVALID,
                "the request target holds a NUL byte, which would end every name and selector "
                "in it there (send %%00 to mean a NUL)");
    } else if (req->url_too_long) {
        err_set(&err, ERR_INVALID, "URL longer than %zu bytes", l->max_url_bytes);
        err_add_detail(&err, "limit", json_integer((json_int_t)l->max_url_bytes));
        status = 414;
    } else if (req->headers_too_large) {
        err_set(&err, ERR_TOO_LARGE, "request line and headers over the limit of %zu bytes",
                l->max_header_bytes);
        err_add_detail(&err, "limit", json_integer((json_int_t)l->max_header_bytes));
        status = 431;
    } else if (req->body_too_large) {
        err_set(&err, ERR_TOO_LARGE, "request body over the limit of %zu bytes", l->max_body_bytes);
        err_add_detail(&err, "limit", json_integer((json_int_t)l->max_body_bytes));
    } else {
        return false;
    }
    api_respond_error(res, &err);
    if (status)
        res->status = status;
    res->close_connection = true;
    err_clear(&err);
    return true;
}

/* HEAD is GET without the body (RFC 9110 9.3.2), and libmicrohttpd leaves
 * the body out itself: a HEAD routes to the GET handler of its path. A path
 * without a GET is matched as HEAD, so its 404 or 405 names the method the
 * client sent. */
static const struct api_route *match_route(struct api_request *req, struct api_response *res,
                                           struct err *err)
{
    const char *method = req->method;
    if (strcmp(method, MHD_HTTP_METHOD_HEAD) == 0) {
        struct err as_get_err = ERR_INIT;
        req->method = MHD_HTTP_METHOD_GET;
        const struct api_route *route = api_route_match(req, res, &as_get_err);
        req->method = method;
        err_clear(&as_get_err);
        if (route)
            return route;
    }
    return api_route_match(req, res, err);
}

static void dispatch(struct api *api, struct api_request *req, struct api_response *res)
{
    req->route = "unmatched";
    /* refused before any route was looked at: the labels say which way */
    if (refuse_early(api, req, res)) {
        req->route = req->over_capacity        ? "overCapacity"
                     : req->over_address_limit ? "overAddressLimit"
                                               : "refusedEarly";
        return;
    }
    struct err err = ERR_INIT;
    if (req->path_too_deep) {
        identify(api, req);
        if (admit(api, req, res, &err) == 0)
            err_set(&err, ERR_NOT_FOUND, "no such route");
        api_respond_error(res, &err);
        err_clear(&err);
        return;
    }
    struct err route_err = ERR_INIT;
    const struct api_route *route = match_route(req, res, &route_err);
    if (route) {
        req->route = route->pattern;
        req->matched = route;
    }
    identify(api, req);
    if (admit(api, req, res, &err) != 0) {
        res->allow[0] = '\0';
        api_respond_error(res, &err);
    } else if (!route) {
        api_respond_error(res, &route_err);
    } else if (authorize(api, req, &err) != 0 || route->handler(api, req, res, &err) != 0) {
        api_respond_error(res, &err);
    }
    err_clear(&route_err);
    err_clear(&err);
}

static void count_request(struct api *api, const struct api_request *req, unsigned status)
{
    char code[8];
    snprintf(code, sizeof code, "%u", status);
    const char *method = api_method_label(req->method);
    const char *labels[] = {req->route, method, code};
    metrics_add(api->http_requests, labels, 1);
    int64_t took_ns = clock_mono_ns() - req->started_ns;
    api_latency_observe(api->latency, req->matched, method, took_ns);
    if (log_enabled(LOG_LEVEL_DEBUG))
        log_debug("http", "%s %s -> %u (%.3f ms)", req->method, req->raw_uri, status,
                  (double)took_ns / 1e6);
}

enum connection_refusal {
    ADMITTED,
    REFUSED_OVER_CAPACITY,      /* over max_connections: 503 */
    REFUSED_OVER_ADDRESS_LIMIT, /* over max_connections_per_address: 429 */
};

/* A connection's socket context. One that could not get its own (out of
 * memory) shares `unkept_connection` and is refused. */
struct connection_state {
    enum connection_refusal refusal;
    bool counted;                 /* entered in api.addresses under `address` */
    struct in6_addr address;      /* the client's, as addresses.h keys it */
    struct deadline_watch *watch; /* NULL: unwatched */
};

static struct connection_state unkept_connection = {.refusal = REFUSED_OVER_CAPACITY};

static struct connection_state *connection_state(struct MHD_Connection *conn)
{
    const union MHD_ConnectionInfo *info =
        conn ? MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT) : NULL;
    return info ? info->socket_context : NULL;
}

static enum connection_refusal connection_refusal(struct MHD_Connection *conn)
{
    const struct connection_state *cs = connection_state(conn);
    return cs ? cs->refusal : ADMITTED;
}

static struct deadline_watch *connection_watch(struct MHD_Connection *conn)
{
    const struct connection_state *cs = connection_state(conn);
    return cs ? cs->watch : NULL;
}

/* A request handed to a handler thread, or answered, holds up api_stop()
 * until its answer is written out (on_completed), so that a stop never
 * drops the answer of a change it let finish; and it is whole, so its
 * connection's deadline waits for the next one. A body past the limit
 * whose 413 could not be queued yet is still arriving, and still timed. */
static void hold_stop(struct api *api, struct api_request *req)
{
    deadline_handling(connection_watch(req->conn));
    if (!req->holds_stop) {
        req->holds_stop = true;
        atomic_fetch_add(&api->answers_unsent, 1);
    }
}

static void release_page(void *cls)
{
    page_release(cls);
}

static enum MHD_Result send_response(struct api *api, struct api_request *req,
                                     struct api_response *res)
{
    char *body = NULL;
    size_t len = 0;
    const char *type = "application/json";
    if (res->json) {
        body = jsonutil_dump(res->json, &len);
        if (!body) {
            res->status = 500;
            body = strdup("{\"error\":\"out of memory\",\"details\":{}}");
            len = body ? strlen(body) : 0;
        }
    } else if (res->body) {
        body = res->body;
        len = res->body_len;
        res->body = NULL;
        type = res->content_type ? res->content_type : "application/octet-stream";
    }
    struct MHD_Response *response = NULL;
    if (!body && res->shared) {
        type = res->content_type;
        /* libmicrohttpd never writes to the buffer; the page's reference
         * goes with the response and comes back through release_page */
        response = MHD_create_response_from_buffer_with_free_callback_cls(
            res->body_len,
            (void *)(uintptr_t)res->shared_body, // NOLINT(performance-no-int-to-ptr)
            release_page, res->shared);
        if (response)
            res->shared = NULL;
    } else {
        response = MHD_create_response_from_buffer(
            len, body ? body : (char *)"", body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
        if (!response)
            free(body);
    }
    if (!response)
        return MHD_NO;
    if (res->content_encoding)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_ENCODING, res->content_encoding);
    if (res->vary_encoding)
        MHD_add_response_header(response, MHD_HTTP_HEADER_VARY, MHD_HTTP_HEADER_ACCEPT_ENCODING);
    if (len || res->json || res->body_len)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (res->etag[0])
        MHD_add_response_header(response, MHD_HTTP_HEADER_ETAG, res->etag);
    if (res->allow[0])
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, res->allow);
    if (res->retry_after[0])
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, res->retry_after);
    if (res->status == 401)
        MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    if (res->close_connection)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result rc = MHD_queue_response(req->conn, res->status, response);
    MHD_destroy_response(response);
    if (rc == MHD_YES) {
        req->answered = true;
        count_request(api, req, res->status);
        hold_stop(api, req);
    }
    return rc;
}

/* Whether the request's handler may block for long: a change whose time
 * a module or the fleet decides (an upload validates, a refresh restarts
 * instances, a restore creates them), so it runs on a handler thread.
 * Reads answer from caches, and refusals at once, on the polling thread;
 * so do the routes marked runs_inline (api_route). */

static bool may_block(struct api_request *req)
{
    if (strcmp(req->method, MHD_HTTP_METHOD_GET) == 0 ||
        strcmp(req->method, MHD_HTTP_METHOD_HEAD) == 0 || req->over_capacity ||
        req->over_address_limit || req->url_too_long || req->nul_in_target || req->bad_framing ||
        req->too_many_params || req->headers_too_large || req->body_too_large || req->path_too_deep)
        return false;
    struct api_response scratch = {0};
    struct err err = ERR_INIT;
    const struct api_route *route = api_route_match(req, &scratch, &err);
    err_clear(&err);
    return route && !route->runs_inline;
}

/* Offload thread: the connection is suspended, so nothing else touches the
 * request until the resume makes libmicrohttpd call on_request again,
 * which sends what the handler answered. */
static void run_offloaded(void *arg)
{
    struct api_request *req = arg;
    dispatch(req->api, req, req->response);
    MHD_resume_connection(req->conn);
}

/* Suspends the connection and hands the request to an offload thread. */
static enum MHD_Result offload_request(struct api *api, struct api_request *req)
{
    req->response = calloc(1, sizeof *req->response);
    if (!req->response)
        return MHD_NO;
    req->api = api;
    req->offloaded = true;
    hold_stop(api, req);
    MHD_suspend_connection(req->conn);
    if (offload_submit(api->offload, run_offloaded, req) != 0)
        run_offloaded(req); /* out of memory or stopping: here, then */
    return MHD_YES;
}

static enum MHD_Result answer(struct api *api, struct api_request *req)
{
    if (req->offloaded) /* resumed: the handler has answered */
        return send_response(api, req, req->response);
    if (may_block(req))
        return offload_request(api, req);
    struct api_response res = {0};
    dispatch(api, req, &res);
    enum MHD_Result rc = send_response(api, req, &res);
    api_response_clear(&res);
    return rc;
}

/* The body length announced by Content-Length (0 when there is none). */
static unsigned long long content_length(struct MHD_Connection *conn)
{
    const char *cl =
        MHD_lookup_connection_value(conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return 0;
    char *end = NULL;
    unsigned long long n = strtoull(cl, &end, 10);
    return end != cl ? n : 0;
}

static enum MHD_Result add_header_bytes(void *cls, enum MHD_ValueKind kind, const char *key,
                                        const char *value)
{
    (void)kind;
    size_t *total = cls;
    *total += strlen(key) + (value ? strlen(value) : 0) + 4; /* ": " and CRLF */
    return MHD_YES;
}

/* The request line and the header lines as they came, give or take the
 * whitespace around values. */
static size_t header_bytes(struct MHD_Connection *conn, const char *method, const char *uri,
                           const char *version)
{
    size_t total = strlen(method) + strlen(uri) + strlen(version) + 4;
    MHD_get_connection_values(conn, MHD_HEADER_KIND, add_header_bytes, &total);
    return total;
}

/* libmicrohttpd hands the target over as a C string, so a raw NUL byte in
 * it cut the target short (`DELETE /strategies/modules/x<NUL>:tag` deleted
 * strategy x), and it does not refuse one itself. It splits the request
 * line in place: the version follows the target's terminator, one byte
 * after it when the target holds no NUL, further on when one cut it. A
 * version anywhere else (none given; another layout) is not taken for
 * one. */
static bool nul_in_target(const struct api *api, const struct api_request *req, const char *version)
{
    uintptr_t v = (uintptr_t)version;
    return req->target_end && v > req->target_end + 1 &&
           v - req->target_end <= api->opts.limits.max_url_bytes + 1;
}

/* What the headers say about the message's framing and its host. */
struct framing {
    unsigned content_lengths, hosts, transfer_encodings;
    const char *content_length;
    bool lengths_differ, spaced_name, unknown_coding;
};

static enum MHD_Result count_framing(void *cls, enum MHD_ValueKind kind, const char *key,
                                     const char *value)
{
    (void)kind;
    struct framing *f = cls;
    if (strcasecmp(key, "Content-Length") == 0) {
        if (f->content_lengths++ > 0 && strcmp(f->content_length, value ? value : "") != 0)
            f->lengths_differ = true;
        f->content_length = value ? value : "";
    } else if (strcasecmp(key, "Host") == 0) {
        f->hosts++;
    } else if (strcasecmp(key, "Transfer-Encoding") == 0) {
        f->transfer_encodings++;
        /* The only coding libmicrohttpd frames, spelled as it compares it:
         * given another ("gzip", "chunked, identity", "chunked " with a
         * trailing space) it waited for a body it could not frame until
         * the connection timed out, unanswered. */
        if (!value || strcasecmp(value, "chunked") != 0)
            f->unknown_coding = true;
    }
    if (strpbrk(key, " \t"))
        f->spaced_name = true;
    return MHD_YES;
}

/* Framing that two parsers could read two ways: a proxy in front that
 * frames by the other rule forwards one request where the gateway would
 * run two, the second past the proxy's own checks (RFC 9112 says reject or
 * close). Refused, and the connection closed. NULL when there is none. */
/* libmicrohttpd parses the request line and header section in place, ending
 * each name and value with a NUL where its separator or line end was, and
 * keeps only what it made of the fields: a raw NUL in a value cut it short
 * (`Bearer <token>\0junk` was `<token>`), and a field folded over two lines
 * (obsolete, and read by a proxy in front as its name and value) became a
 * name of both lines' text, out of that section, with an empty value: a
 * folded `Transfer-Encoding` framed nothing here while the proxy framed the
 * body by it. So the fields must tile the section: between the end of one
 * and the name of the next, only line ends and blanks. A section whose
 * fields all lie elsewhere (another layout) is not judged. */
struct layout {
    const char *start, *end; /* the request line and header section */
    const char *prev;        /* the end of the last field seen in it */
    bool inside, outside, stray, bare_cr;
};

static bool only_separators(const char *from, const char *to)
{
    for (const char *p = from; p < to; p++)
        if (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\r' && *p != '\n' && *p != ':')
            return false;
    return true;
}

static bool in_section(const struct layout *l, const char *p)
{
    return p >= l->start && p < l->end;
}

static enum MHD_Result check_layout(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value)
{
    (void)kind;
    struct layout *l = cls;
    if (!in_section(l, key) || (value && !in_section(l, value))) {
        l->outside = true;
        return MHD_YES;
    }
    l->inside = true;
    /* a CR that ends no line: libmicrohttpd keeps it in the field, where a
     * proxy may have ended a line (`X: a<CR>Content-Length: 2`) */
    if (strchr(key, '\r') || (value && strchr(value, '\r')))
        l->bare_cr = true;
    if (key >= l->prev && !only_separators(l->prev, key))
        l->stray = true;
    const char *end = key + strlen(key);
    if (value && value >= end) {
        if (!only_separators(end, value))
            l->stray = true;
        end = value + strlen(value);
    }
    if (end > l->prev)
        l->prev = end;
    return MHD_YES;
}

static const char *layout_problem(struct MHD_Connection *conn, const char *method,
                                  const char *version)
{
    const union MHD_ConnectionInfo *info =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_REQUEST_HEADER_SIZE);
    if (!info || !method || !version)
        return NULL;
    struct layout l = {method, method + info->header_size, NULL, false, false, false, false};
    if (!in_section(&l, version))
        return NULL;
    l.prev = version + strlen(version);
    MHD_get_connection_values(conn, MHD_HEADER_KIND, check_layout, &l);
    if (!l.inside)
        return NULL;
    if (l.outside)
        return "a header field folded over two lines (obsolete line folding)";
    if (l.bare_cr)
        return "a CR in a header field that ends no line";
    if (l.stray || !only_separators(l.prev, l.end))
        return "a NUL byte in a header field";
    return NULL;
}

static const char *framing_problem(struct MHD_Connection *conn, const char *method,
                                   const char *version)
{
    const char *layout = layout_problem(conn, method, version);
    if (layout)
        return layout;
    struct framing f = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, count_framing, &f);
    if (f.unknown_coding)
        return "a transfer coding other than chunked: the body's length is unclear";
    if (f.lengths_differ)
        return "two Content-Length fields that differ: the body's length is unclear";
    if (f.transfer_encodings > 0 && f.content_lengths > 0)
        return "both Transfer-Encoding and Content-Length: the body's length is unclear";
    if (f.spaced_name)
        return "a header name with white space in it (as before its colon)";
    if (f.hosts > 1)
        return "more than one Host field";
    if (f.hosts == 0 && version && strcmp(version, MHD_HTTP_VERSION_1_1) == 0)
        return "an HTTP/1.1 request without a Host field";
    return NULL;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    (void)url;
    struct api *api = cls;
    if (*con_cls == &too_many_params_marker)
        *con_cls = marked_request();
    struct api_request *req = *con_cls;
    if (!req)
        return MHD_NO;
    if (req->answered) {
        /* Refused before its body: whatever still arrives is dropped. */
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (req->offloaded)
        return answer(api, req);
    if (!req->method) {
        req->method = method;
        req->conn = conn;
        enum connection_refusal refusal = connection_refusal(conn);
        if (refusal == REFUSED_OVER_CAPACITY)
            req->over_capacity = true;
        else if (refusal == REFUSED_OVER_ADDRESS_LIMIT)
            req->over_address_limit = true;
        else if (nul_in_target(api, req, version))
            req->nul_in_target = true;
        else
            req->bad_framing = framing_problem(conn, method, version);
        bool refused =
            refusal != ADMITTED || req->nul_in_target || req->bad_framing || req->too_many_params;
        if (!refused && !req->url_too_long &&
            header_bytes(conn, method, req->raw_uri, version) > api->opts.limits.max_header_bytes)
            req->headers_too_large = true;
        if (refused || req->url_too_long || req->headers_too_large)
            return answer(api, req);
        unsigned long long announced = content_length(conn);
        size_t limit = api->opts.limits.max_body_bytes;
        if (announced > limit) {
            /* Closing on a client still sending makes the kernel reset the
             * connection, and the client may never read the 413: a body
             * up to DRAIN_FACTOR times the limit is read and dropped, and
             * answered at its end. A larger one is answered at once. */
            req->body_too_large = true;
            req->over_limit_ns = clock_mono_ns();
            if (announced / DRAIN_FACTOR > limit)
                return answer(api, req);
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        bool was_over = req->body_too_large;
        if (!req->body_too_large) {
            if (req->body.len + *upload_data_size > api->opts.limits.max_body_bytes)
                req->body_too_large = true;
            else
                strbuf_append(&req->body, upload_data, *upload_data_size);
        }
        *upload_data_size = 0;
        if (req->body_too_large) {
            /* A body past the limit (chunked, or announced and drained).
             * Answer now and close if libmicrohttpd lets a response be
             * queued before the body ends (0.9.75 does not); otherwise the
             * rest is read and dropped, and a body still arriving
             * idle_timeout seconds after it passed the limit has its
             * connection cut without an answer. */
            if (!was_over) {
                req->over_limit_ns = clock_mono_ns();
                strbuf_release(&req->body);
                if (answer(api, req) == MHD_YES)
                    return MHD_YES;
            }
            int64_t grace = (int64_t)api->opts.limits.idle_timeout_s * 1000000000;
            if (clock_mono_ns() - req->over_limit_ns > grace) {
                log_debug("http",
                          "%s %s: body still arriving %u s past the limit, connection "
                          "closed",
                          req->method, req->raw_uri, api->opts.limits.idle_timeout_s);
                return MHD_NO;
            }
        }
        return MHD_YES;
    }
    if (strbuf_failed(&req->body))
        req->body_too_large = true;
    return answer(api, req);
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct api *api = cls;
    (void)conn;
    if (query_params(uri) > API_MAX_QUERY_PARAMS)
        return &too_many_params_marker;
    struct api_request *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->started_ns = clock_mono_ns();
    req->token = -1;
    size_t len = strlen(uri);
    req->target_end = (uintptr_t)uri + len;
    if (len > api->opts.limits.max_url_bytes) {
        req->url_too_long = true;
        req->raw_uri = strdup("/");
    } else {
        req->raw_uri = strdup(uri);
    }
    if (!req->raw_uri || (!req->url_too_long && parse_uri(req) != 0)) {
        request_free(req);
        return NULL;
    }
    return req;
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe)
{
    struct api *api = cls;
    struct api_request *req = *con_cls;
    (void)toe;
    deadline_receiving(connection_watch(conn));
    if (*con_cls == &too_many_params_marker) {
        *con_cls = NULL;
        return;
    }
    if (req && req->holds_stop)
        atomic_fetch_sub(&api->answers_unsent, 1);
    /* A change's leftovers are cleared once its answer is out. */
    if (req && req->method && strcmp(req->method, "GET") != 0 && api->opts.catalog)
        catalog_housekeep(api->opts.catalog);
    request_free(req);
    *con_cls = NULL;
}

/* Counts the connection against its address's limit, if there is one;
 * false when it is over. */
static bool enter_address(struct api *api, struct MHD_Connection *conn, struct connection_state *cs)
{
    if (!api->addresses || !client_key(conn, &cs->address))
        return true;
    unsigned open = address_counts_enter(api->addresses, &cs->address);
    cs->counted = open > 0;
    return open > 0 && open <= api->opts.limits.max_connections_per_address;
}

/* Counts open connections, marks those accepted over max_connections (503
 * on their first request) and watches each for its requests' deadline. */
static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode code)
{
    struct api *api = cls;
    if (code == MHD_CONNECTION_NOTIFY_STARTED) {
        unsigned open = atomic_fetch_add(&api->connections, 1) + 1;
        struct connection_state *cs = calloc(1, sizeof *cs);
        if (!cs) {
            *socket_context = &unkept_connection;
            return;
        }
        if (open > api->opts.limits.max_connections)
            cs->refusal = REFUSED_OVER_CAPACITY;
        else if (!enter_address(api, conn, cs))
            cs->refusal = REFUSED_OVER_ADDRESS_LIMIT;
        const union MHD_ConnectionInfo *info =
            MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        if (info)
            cs->watch = deadline_watch(api->deadline, info->connect_fd, cs->refusal != ADMITTED);
        /* one that cannot be watched (no descriptor left) could trickle on
         * for ever: refused like one over the limit */
        if (!cs->watch)
            cs->refusal = REFUSED_OVER_CAPACITY;
        *socket_context = cs;
    } else if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
        atomic_fetch_sub(&api->connections, 1);
        struct connection_state *cs = *socket_context;
        if (cs && cs != &unkept_connection) {
            if (cs->counted)
                address_counts_leave(api->addresses, &cs->address);
            deadline_forget(api->deadline, cs->watch);
            free(cs);
        }
        *socket_context = NULL;
    }
}

__attribute__((format(printf, 2, 0))) static void on_mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    log_debug("http", "%s", msg);
}

/* ------------------------------------------------------------ lifecycle */

static void apply_defaults(struct api_limits *l)
{
    if (!l->max_body_bytes)
        l->max_body_bytes = DEFAULT_MAX_BODY;
    if (!l->max_header_bytes)
        l->max_header_bytes = DEFAULT_MAX_HEADER;
    if (!l->max_url_bytes)
        l->max_url_bytes = DEFAULT_MAX_URL;
    if (!l->max_connections)
        l->max_connections = DEFAULT_MAX_CONNECTIONS;
    if (!l->idle_timeout_s)
        l->idle_timeout_s = DEFAULT_IDLE_TIMEOUT;
    if (!l->request_timeout_s)
        l->request_timeout_s = DEFAULT_REQUEST_TIMEOUT;
    if (!l->threads)
        l->threads = DEFAULT_THREADS;
}

/* Every connection is two descriptors (deadline.h): raise the soft limit on
 * open files so that max_connections (and the reserve answered with 503)
 * fit beside the database, the registry and the log, as far as the hard
 * limit allows. */
static void fit_open_files(unsigned connections)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return;
    rlim_t want = (rlim_t)connections * 2 + OTHER_FILES;
    if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= want)
        return;
    rlim_t target = rl.rlim_max != RLIM_INFINITY && rl.rlim_max < want ? rl.rlim_max : want;
    if (target > rl.rlim_cur) {
        rl.rlim_cur = target;
        (void)setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (target < want)
        log_warn("http",
                 "%u connections need about %llu open files but the hard limit is %llu: lower "
                 "http.max_connections or raise the limit (ulimit -n)",
                 connections, (unsigned long long)want, (unsigned long long)rl.rlim_max);
}

static int create_metrics(struct api *api)
{
    static const char *const http_labels[] = {"route", "method", "status", NULL};
    static const char *const tag_labels[] = {"environment", "strategy", "tag", NULL};
    static const char *const del_labels[] = {"environment", "strategy", "tag", "allowOrphan", NULL};
    static const char *const stage_labels[] = {"stage", NULL};
    api->http_requests = metrics_family_new("stratd_http_requests_total",
                                            "HTTP requests by route pattern, method and status.",
                                            METRICS_COUNTER, http_labels);
    api->tag_reassigned =
        metrics_family_new("strategy_tag_reassigned_total", "Tag moves to another revision.",
                           METRICS_COUNTER, tag_labels);
    api->tag_deleted = metrics_family_new("strategy_tag_deleted_total", "Tags removed.",
                                          METRICS_COUNTER, del_labels);
    api->validation_failures = metrics_family_new(
        "stratd_module_validation_failures_total",
        "Uploaded modules that did not validate, by failing stage.", METRICS_COUNTER, stage_labels);
    api->latency = api_latency_new();
    return api->http_requests && api->tag_reassigned && api->tag_deleted &&
                   api->validation_failures && api->latency
               ? 0
               : -1;
}

static void free_api(struct api *api)
{
    metrics_family_free(api->http_requests);
    metrics_family_free(api->tag_reassigned);
    metrics_family_free(api->tag_deleted);
    metrics_family_free(api->validation_failures);
    api_latency_free(api->latency);
    pthread_mutex_destroy(&api->audit_lock);
    pthread_mutex_destroy(&api->rate_lock);
    views_cache_free(api->views);
    pages_free(api->pages);
    js_validator_free(api->validator);
    offload_drain(api->offload);
    offload_free(api->offload);
    deadline_stop(api->deadline);
    address_counts_free(api->addresses);
    acceptor_free(api->acceptor);
    if (api->opts.tls)
        api_tls_detach(api->opts.tls);
    free(api->buckets);
    free(api);
}

/* `host` (an IPv4 or IPv6 address, without brackets) and `port` as a
 * socket address. */
static int listen_address(const char *host, int port, struct sockaddr_storage *out)
{
    memset(out, 0, sizeof *out);
    struct sockaddr_in *v4 = (struct sockaddr_in *)(void *)out;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)(void *)out;
    if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)port);
        return 0;
    }
    if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)port);
        return 0;
    }
    return -1;
}

int api_start(const struct api_options *opts, struct api **out, struct err *err)
{
    struct api *api = calloc(1, sizeof *api);
    if (!api) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    api->opts = *opts;
    apply_defaults(&api->opts.limits);
    pthread_mutex_init(&api->audit_lock, NULL);
    pthread_mutex_init(&api->rate_lock, NULL);
    if (api->opts.limits.rate_per_second) {
        api->buckets = calloc(api->opts.ntokens + 1, sizeof *api->buckets);
        if (!api->buckets) {
            free_api(api);
            err_set(err, ERR_INTERNAL, "out of memory");
            return -1;
        }
        const struct api_limits *rl = &api->opts.limits;
        int64_t now = clock_mono_ns();
        for (size_t i = 0; i <= api->opts.ntokens; i++) {
            api->buckets[i].tokens =
                (double)(rl->rate_burst ? rl->rate_burst : rl->rate_per_second);
            api->buckets[i].refilled_ns = now;
        }
    }
    api->views = views_cache_new();
    api->pages = pages_new(LISTING_PAGES_BUDGET);
    if (!api->views || !api->pages || create_metrics(api) != 0) {
        free_api(api);
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    if (js_validator_new(&api->validator, err) != 0 ||
        offload_start(api->opts.limits.threads, &api->offload, err) != 0 ||
        deadline_start(&api->deadline, (int64_t)api->opts.limits.request_timeout_s * 1000000000,
                       err) != 0) {
        free_api(api);
        return -1;
    }
    struct sockaddr_storage addr;
    if (listen_address(opts->host, opts->port, &addr) != 0) {
        free_api(api);
        err_set(err, ERR_INVALID, "listen address '%s' is not an IPv4 or IPv6 address", opts->host);
        return -1;
    }
    const struct api_limits *l = &api->opts.limits;
    /* A reserve beyond max_connections is accepted, so that those
     * connections get a 503 from on_connection's mark instead of waiting
     * unanswered. libmicrohttpd splits its own limit between the polling
     * threads and deals connections by descriptor, so one thread can be at
     * its share while the total is below the acceptor's cap: a connection
     * it refuses then locked that thread for good. Its limit is the cap
     * times the threads, so that only the acceptor's count ever binds. */
    unsigned cap = l->max_connections + l->max_connections / 8 + CONNECTION_RESERVE;
    if (cap < l->threads * 2)
        cap = l->threads * 2;
    api->connection_cap = cap;
    if (l->max_connections_per_address) {
        /* every connection libmicrohttpd may hold (its limit, below) */
        api->addresses = address_counts_new((size_t)cap * l->threads);
        if (!api->addresses) {
            free_api(api);
            err_set(err, ERR_INTERNAL, "out of memory");
            return -1;
        }
    }
    fit_open_files(cap * 2); /* each connection's and the deadline's duplicate of it */
    struct api_tls *tls = opts->tls;
    /* handshakes ask tls.c for the pair, which a reload can replace */
    if (tls && api_tls_attach(tls, err) != 0) {
        free_api(api);
        return -1;
    }
    struct MHD_OptionItem tls_options[] = {
        {MHD_OPTION_HTTPS_CERT_CALLBACK, 0, (void *)api_tls_retrieve},
        {MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)API_TLS_PRIORITIES},
        {MHD_OPTION_END, 0, NULL},
    };
    struct MHD_OptionItem *no_options = &tls_options[sizeof tls_options / sizeof *tls_options - 1];
    /* No listening socket of its own: the acceptor hands it every
     * connection (acceptor.h says why). */
    api->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ITC | MHD_USE_NO_LISTEN_SOCKET |
            MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG | (tls ? MHD_USE_TLS : 0),
        0, NULL, NULL, on_request, api, MHD_OPTION_ARRAY, tls ? tls_options : no_options,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)l->threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)(cap * l->threads), MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)l->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)l->max_header_bytes + l->max_url_bytes + CONNECTION_SLACK_BYTES,
        MHD_OPTION_URI_LOG_CALLBACK, on_uri, api, MHD_OPTION_NOTIFY_COMPLETED, on_completed, api,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, api, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        api, MHD_OPTION_END);
    if (!api->daemon) {
        free_api(api);
        err_set(err, ERR_INTERNAL, "cannot start the HTTP server's polling threads");
        return -1;
    }
    struct acceptor_config accepting = {.addr = addr,
                                        .backlog = LISTEN_BACKLOG,
                                        .cap = cap,
                                        .tls = tls != NULL,
                                        .idle_timeout_s = l->idle_timeout_s};
    if (acceptor_start(&api->acceptor, &accepting, api->daemon, &api->connections, err) != 0) {
        MHD_stop_daemon(api->daemon);
        free_api(api);
        return -1;
    }
    api->port = acceptor_port(api->acceptor);
    *out = api;
    return 0;
}

int api_port(const struct api *api)
{
    return api->port;
}

void api_stop(struct api *api)
{
    if (!api)
        return;
    acceptor_stop(api->acceptor);
    /* the handlers under way finish and resume their connections first:
     * libmicrohttpd must not be stopped with a connection suspended (a
     * change that arrives meanwhile runs on its polling thread) */
    offload_drain(api->offload);
    /* ...and libmicrohttpd's polling threads write their answers out: a
     * connection resumed a moment ago is not yet written, and stopping the
     * daemon now would close it unanswered though its change was made */
    for (int waited_ms = 0; atomic_load(&api->answers_unsent) > 0 && waited_ms < STOP_WAIT_MS;
         waited_ms++) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    MHD_stop_daemon(api->daemon);
    free_api(api);
}
