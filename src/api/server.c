/*
 * The libmicrohttpd side of the api: request life cycle (URI, headers, body
 * chunks, completion), limits, authentication, and turning a handler's
 * api_response into bytes on the wire.
 */
#include "api/internal.h"

#include "core/clock.h"
#include "core/hash.h"
#include "core/jsonutil.h"
#include "core/log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DEFAULT_MAX_BODY (1u << 20)
#define DEFAULT_MAX_HEADER (32u << 10)
#define DEFAULT_MAX_URL (8u << 10)
#define DEFAULT_MAX_CONNECTIONS 1024u
#define DEFAULT_IDLE_TIMEOUT 30u
#define DEFAULT_THREADS 4u

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

/* Decides who is calling. With no tokens configured everyone is admin (the
 * server refuses to listen beyond loopback in that case). */
static int authenticate(struct api *api, struct api_request *req, struct err *err)
{
    if (api->opts.ntokens == 0) {
        req->role = API_ROLE_ADMIN;
        snprintf(req->actor, sizeof req->actor, "anonymous");
        return 0;
    }
    const char *auth = MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, "Authorization");
    if (auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        const char *secret = auth + 7;
        while (*secret == ' ')
            secret++;
        char hex[HASH_HEX_LEN + 1];
        hash_sha256_hex(secret, strlen(secret), hex);
        for (size_t i = 0; i < api->opts.ntokens; i++) {
            const struct api_token *t = &api->opts.tokens[i];
            if (constant_time_equal(hex, t->sha256_hex, HASH_HEX_LEN)) {
                req->role = t->role;
                snprintf(req->actor, sizeof req->actor, "%s", t->name);
                break;
            }
        }
    }
    if (is_open_route(api, req->route))
        return 0;
    if (req->role == API_ROLE_NONE) {
        err_set(err, ERR_UNAUTHORIZED, "a valid bearer token is required");
        return -1;
    }
    bool mutation = strcmp(req->method, "GET") != 0 && strcmp(req->method, "HEAD") != 0;
    if (mutation && req->role != API_ROLE_ADMIN) {
        err_set(err, ERR_FORBIDDEN, "token '%s' has the read role; %s needs admin", req->actor,
                req->method);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ dispatch */

static void dispatch(struct api *api, struct api_request *req, struct api_response *res)
{
    struct err err = ERR_INIT;
    req->route = "unmatched";
    if (req->url_too_long) {
        err_set(&err, ERR_INVALID, "URL longer than %zu bytes", api->opts.limits.max_url_bytes);
        api_respond_error(res, &err);
        res->status = 414;
    } else if (req->body_too_large) {
        err_set(&err, ERR_TOO_LARGE, "request body over the limit of %zu bytes",
                api->opts.limits.max_body_bytes);
        err_add_detail(&err, "limit", json_integer((json_int_t)api->opts.limits.max_body_bytes));
        api_respond_error(res, &err);
    } else if (req->path_too_deep) {
        err_set(&err, ERR_NOT_FOUND, "no such route");
        api_respond_error(res, &err);
    } else {
        const struct api_route *route = api_route_match(req, res, &err);
        if (route)
            req->route = route->pattern;
        if (!route || authenticate(api, req, &err) != 0 ||
            route->handler(api, req, res, &err) != 0)
            api_respond_error(res, &err);
    }
    err_clear(&err);
}

static void count_request(struct api *api, const struct api_request *req, unsigned status)
{
    char code[8];
    snprintf(code, sizeof code, "%u", status);
    const char *labels[] = {req->route, req->method, code};
    metrics_add(api->http_requests, labels, 1);
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        double ms = (double)(clock_mono_ns() - req->started_ns) / 1e6;
        log_debug("http", "%s %s -> %u (%.3f ms)", req->method, req->raw_uri, status, ms);
    }
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
    struct MHD_Response *response =
        MHD_create_response_from_buffer(len, body ? body : (char *)"",
                                        body ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
    if (!response) {
        free(body);
        return MHD_NO;
    }
    if (len || res->json)
        MHD_add_response_header(response, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (res->etag[0])
        MHD_add_response_header(response, MHD_HTTP_HEADER_ETAG, res->etag);
    if (res->allow[0])
        MHD_add_response_header(response, MHD_HTTP_HEADER_ALLOW, res->allow);
    if (res->retry_after[0])
        MHD_add_response_header(response, MHD_HTTP_HEADER_RETRY_AFTER, res->retry_after);
    if (res->status == 401)
        MHD_add_response_header(response, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
    count_request(api, req, res->status);
    enum MHD_Result rc = MHD_queue_response(req->conn, res->status, response);
    MHD_destroy_response(response);
    return rc;
}

static bool content_length_over(struct api *api, struct MHD_Connection *conn)
{
    const char *cl = MHD_lookup_connection_value(conn, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (!cl)
        return false;
    char *end = NULL;
    unsigned long long n = strtoull(cl, &end, 10);
    return end != cl && n > api->opts.limits.max_body_bytes;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version,
                                  const char *upload_data, size_t *upload_data_size,
                                  void **con_cls)
{
    (void)url;
    (void)version;
    struct api *api = cls;
    struct api_request *req = *con_cls;
    if (!req)
        return MHD_NO;
    if (!req->method) {
        req->method = method;
        req->conn = conn;
        if (content_length_over(api, conn)) {
            /* Answer at once rather than reading a body we will refuse. */
            req->body_too_large = true;
            struct api_response res = {0};
            dispatch(api, req, &res);
            enum MHD_Result rc = send_response(api, req, &res);
            api_response_clear(&res);
            return rc;
        }
        return MHD_YES;
    }
    if (*upload_data_size) {
        if (!req->body_too_large) {
            if (req->body.len + *upload_data_size > api->opts.limits.max_body_bytes)
                req->body_too_large = true;
            else
                strbuf_append(&req->body, upload_data, *upload_data_size);
        }
        *upload_data_size = 0;
        return MHD_YES;
    }
    if (strbuf_failed(&req->body))
        req->body_too_large = true;
    struct api_response res = {0};
    dispatch(api, req, &res);
    enum MHD_Result rc = send_response(api, req, &res);
    api_response_clear(&res);
    return rc;
}

static void *on_uri(void *cls, const char *uri, struct MHD_Connection *conn)
{
    struct api *api = cls;
    (void)conn;
    struct api_request *req = calloc(1, sizeof *req);
    if (!req)
        return NULL;
    req->started_ns = clock_mono_ns();
    size_t len = strlen(uri);
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
    (void)cls;
    (void)conn;
    (void)toe;
    request_free(*con_cls);
    *con_cls = NULL;
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap)
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
    if (!l->threads)
        l->threads = DEFAULT_THREADS;
}

static int create_metrics(struct api *api)
{
    static const char *const http_labels[] = {"route", "method", "status", NULL};
    static const char *const tag_labels[] = {"environment", "strategy", "tag", NULL};
    static const char *const del_labels[] = {"environment", "strategy", "tag", "allowOrphan",
                                             NULL};
    static const char *const stage_labels[] = {"stage", NULL};
    api->http_requests = metrics_family_new("stratd_http_requests_total",
                                            "HTTP requests by route pattern, method and status.",
                                            METRICS_COUNTER, http_labels);
    api->tag_reassigned =
        metrics_family_new("strategy_tag_reassigned_total",
                           "Tag moves to another revision.", METRICS_COUNTER, tag_labels);
    api->tag_deleted = metrics_family_new("strategy_tag_deleted_total", "Tags removed.",
                                          METRICS_COUNTER, del_labels);
    api->validation_failures =
        metrics_family_new("stratd_module_validation_failures_total",
                           "Uploaded modules that did not validate, by failing stage.",
                           METRICS_COUNTER, stage_labels);
    return api->http_requests && api->tag_reassigned && api->tag_deleted &&
                   api->validation_failures
               ? 0
               : -1;
}

static void free_api(struct api *api)
{
    metrics_family_free(api->http_requests);
    metrics_family_free(api->tag_reassigned);
    metrics_family_free(api->tag_deleted);
    metrics_family_free(api->validation_failures);
    pthread_mutex_destroy(&api->audit_lock);
    free(api);
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
    if (create_metrics(api) != 0) {
        free_api(api);
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)opts->port);
    if (inet_pton(AF_INET, opts->host, &addr.sin_addr) != 1) {
        free_api(api);
        err_set(err, ERR_INVALID, "listen address '%s' is not an IPv4 address", opts->host);
        return -1;
    }
    const struct api_limits *l = &api->opts.limits;
    api->daemon = MHD_start_daemon(
        MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL | MHD_USE_ERROR_LOG, 0, NULL, NULL,
        on_request, api, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned int)l->threads, MHD_OPTION_CONNECTION_LIMIT,
        (unsigned int)l->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned int)l->idle_timeout_s, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)l->max_header_bytes + l->max_url_bytes, MHD_OPTION_URI_LOG_CALLBACK, on_uri, api,
        MHD_OPTION_NOTIFY_COMPLETED, on_completed, api, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        api, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!api->daemon) {
        free_api(api);
        err_set(err, ERR_INTERNAL, "cannot listen on %s:%d (address in use or not permitted)",
                opts->host, opts->port);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(api->daemon, MHD_DAEMON_INFO_BIND_PORT);
    api->port = info ? info->port : opts->port;
    *out = api;
    return 0;
}

int api_port(const struct api *api) { return api->port; }

void api_stop(struct api *api)
{
    if (!api)
        return;
    MHD_stop_daemon(api->daemon);
    free_api(api);
}
