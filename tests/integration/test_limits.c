/*
 * The control plane's limits, each at its default and set through its
 * configuration key, each with its answer:
 *
 *   http.max_body_bytes        413 (Content-Length or chunked), connection closed
 *   http.max_header_bytes      431 (JSON; far beyond, libmicrohttpd's own 431)
 *   http.max_url_bytes         414 (JSON; far beyond, libmicrohttpd's own 414)
 *   http.max_connections       503 with Retry-After past the limit; a freed slot serves again
 *   http.max_connections_per_address  429 naming the address past it (off by default)
 *   http.threads               connections opened together are dealt out over the threads
 *   http.idle_timeout_seconds  a stalled client is dropped, and never delays others
 *   http.request_timeout_seconds  a request trickling in is cut; one being handled is not
 *   http.rate_limit_per_second 429 with Retry-After per token (off by default)
 *
 * After every refusal the server still serves. Raw sockets are used where
 * the client has to misbehave.
 */
#include "testutil.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static const char SECRET_A[] = "limits-token-A-51f0c2";
static const char SECRET_B[] = "limits-token-B-9d33e7";

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static void start(struct tu_server *srv, const char *yaml)
{
    struct tu_server_options opts = {.config_yaml = yaml};
    tu_server_start(srv, &opts);
}

static void expect_healthy(struct tu_server *srv)
{
    json_t *h = tu_get_json(srv, 200, "/healthz");
    json_decref(h);
}

/* ------------------------------------------------------------- sockets */

/* A connection from `source`, a loopback address of 127.0.0.0/8 (each is
 * another client address to the server), or 127.0.0.1 when NULL. */
/* A connection to the server's port on the loopback of the source's family
 * (an IPv6 source, "::1", reaches [::1]), bound to `source` when given. */
static int raw_connect_from(const struct tu_server *srv, const char *source)
{
    bool six = source && strchr(source, ':');
    int fd = socket(six ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        fail_msg("socket: %s", strerror(errno));
    struct sockaddr_storage from, to;
    memset(&from, 0, sizeof from);
    memset(&to, 0, sizeof to);
    socklen_t len = six ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
    struct sockaddr_in *from4 = (struct sockaddr_in *)&from, *to4 = (struct sockaddr_in *)&to;
    struct sockaddr_in6 *from6 = (struct sockaddr_in6 *)&from, *to6 = (struct sockaddr_in6 *)&to;
    if (six) {
        from6->sin6_family = to6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, source, &from6->sin6_addr), 1);
        to6->sin6_addr = in6addr_loopback;
        to6->sin6_port = htons((uint16_t)srv->port);
    } else {
        from4->sin_family = to4->sin_family = AF_INET;
        to4->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        to4->sin_port = htons((uint16_t)srv->port);
        if (source)
            assert_int_equal(inet_pton(AF_INET, source, &from4->sin_addr), 1);
    }
    if (source && bind(fd, (struct sockaddr *)&from, len) != 0)
        fail_msg("bind to %s: %s", source, strerror(errno));
    if (connect(fd, (struct sockaddr *)&to, len) != 0)
        fail_msg("connect: %s", strerror(errno));
    return fd;
}

static int raw_connect(const struct tu_server *srv)
{
    return raw_connect_from(srv, NULL);
}

static void raw_send(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fail_msg("send: %s", strerror(errno));
        data += n;
        len -= (size_t)n;
    }
}

/* Reads one response (headers, then Content-Length bytes). Returns NULL
 * when the connection closed or nothing came within timeout_ms. */
static char *raw_response(int fd, int timeout_ms)
{
    size_t cap = 8192, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        buf[len] = '\0';
        char *end = strstr(buf, "\r\n\r\n");
        if (end) {
            const char *cl = strcasestr(buf, "\r\nContent-Length:");
            size_t body = cl && cl < end ? strtoul(cl + 17, NULL, 10) : 0;
            if (len >= (size_t)(end + 4 - buf) + body)
                return buf;
        }
        int left = (int)(deadline - now_ms());
        struct pollfd pfd = {fd, POLLIN, 0};
        if (left <= 0 || poll(&pfd, 1, left) <= 0)
            break;
        if (len + 4097 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    if (len > 0 && strstr(buf, "\r\n\r\n"))
        return buf;
    free(buf);
    return NULL;
}

static int status_of(const char *response)
{
    return response && strncmp(response, "HTTP/1.", 7) == 0 ? atoi(response + 9) : -1;
}

/* Waits until the peer closes the connection; returns the milliseconds
 * waited, or -1 when it is still open after timeout_ms. Data that arrives
 * is read and dropped. */
static int64_t wait_closed(int fd, int timeout_ms)
{
    int64_t start = now_ms();
    for (;;) {
        int left = (int)(start + timeout_ms - now_ms());
        if (left <= 0)
            return -1;
        struct pollfd pfd = {fd, POLLIN, 0};
        if (poll(&pfd, 1, left) <= 0)
            continue;
        char buf[4096];
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
            return now_ms() - start;
    }
}

static bool still_open(int fd)
{
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, 0) == 0)
        return true;
    char c;
    ssize_t n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
    return n > 0 || (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK));
}

/* One keep-alive GET on an open socket; the status (-1: closed or none). */
static int raw_get(int fd, const char *path, int timeout_ms)
{
    char req[512];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
    raw_send(fd, req, (size_t)n);
    char *res = raw_response(fd, timeout_ms);
    int status = status_of(res);
    free(res);
    return status;
}

static void raise_open_files(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

/* -------------------------------------------------------------- helpers */

static char *filled(size_t n, char c)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static long send_body(struct tu_server *srv, struct tu_response *res, size_t len, bool chunked)
{
    char *body = filled(len, ' ');
    body[0] = '{';
    body[len - 1] = '}';
    struct tu_request_options o = {.body = body, .body_len = len, .chunked = chunked};
    tu_request(srv, res, "POST", "/strategies/modules", &o);
    free(body);
    return res->status;
}

static void expect_limit_error(const struct tu_response *res, long status, long long limit)
{
    tu_assert_error(res, status);
    if (tu_jint(res->json, "details.limit") != limit)
        fail_msg("HTTP %ld: details.limit is %lld, expected %lld: %s", status,
                 tu_jint(res->json, "details.limit"), limit, res->body);
}

/* ----------------------------------------------------------------- body */

static void check_body_limit(struct tu_server *srv, size_t limit)
{
    struct tu_response res;
    for (int chunked = 0; chunked < 2; chunked++) {
        send_body(srv, &res, limit + 1, chunked);
        expect_limit_error(&res, 413, (long long)limit);
        char *conn = tu_header(&res, "Connection");
        if (!conn || strcasecmp(conn, "close") != 0)
            fail_msg("413 without Connection: close (%s)", conn ? conn : "none");
        free(conn);
        tu_response_free(&res);
        /* At the limit the body is read and judged on its content. */
        send_body(srv, &res, limit, chunked);
        if (res.status == 413)
            fail_msg("a body of exactly %zu bytes was refused as too large", limit);
        tu_response_free(&res);
    }
    /* A body announced far over the limit is answered before it is sent. */
    int fd = raw_connect(srv);
    const char *head = "POST /strategies/modules HTTP/1.1\r\nHost: localhost\r\n"
                       "Content-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n";
    raw_send(fd, head, strlen(head));
    char *answer = raw_response(fd, 30000);
    if (status_of(answer) != 413 || !strstr(answer, "\"limit\""))
        fail_msg("a 10 GB Content-Length: expected an immediate 413, got: %.300s",
                 answer ? answer : "(nothing)");
    free(answer);
    if (wait_closed(fd, 30000) < 0)
        fail_msg("the connection was not closed after the 413");
    close(fd);
    expect_healthy(srv);
}

static void test_body_limit_default(void **state)
{
    struct tu_server *srv = *state;
    start(srv, NULL);
    check_body_limit(srv, 1u << 20);
    tu_server_stop(srv);
}

static void test_body_limit_configured(void **state)
{
    struct tu_server *srv = *state;
    start(srv, "http:\n  max_body_bytes: 4096\n");
    check_body_limit(srv, 4096);
    /* A chunked body far past the limit is still answered 413. */
    struct tu_response res;
    send_body(srv, &res, 200000, true);
    expect_limit_error(&res, 413, 4096);
    tu_response_free(&res);
    expect_healthy(srv);
    tu_server_stop(srv);
}

/* -------------------------------------------------------------- headers */

static long get_with_header(struct tu_server *srv, struct tu_response *res, size_t value_len)
{
    char *value = filled(value_len, 'h');
    char *header = tu_path("X-Filler: %s", value);
    const char *headers[] = {header, NULL};
    struct tu_request_options o = {.headers = headers};
    char *url = tu_path("%s/strategies", srv->base_url);
    if (tu_http_try(res, "GET", url, &o) != 0)
        memset(res, 0, sizeof *res); /* status 0: the connection was cut */
    free(url);
    free(header);
    free(value);
    return res->status;
}

static void check_header_limit(struct tu_server *srv, size_t limit)
{
    struct tu_response res;
    get_with_header(srv, &res, limit - 512);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    get_with_header(srv, &res, limit + 16);
    expect_limit_error(&res, 431, (long long)limit);
    tu_response_free(&res);
    /* Far beyond anything the connection buffers: libmicrohttpd answers
     * 431 itself (an HTML page) and closes. */
    get_with_header(srv, &res, limit * 8 + 200000);
    if (res.status != 431)
        fail_msg("a %zu-byte header: expected 431, got %ld", limit * 8 + 200000, res.status);
    tu_response_free(&res);
    expect_healthy(srv);
}

static void test_header_limit_default(void **state)
{
    struct tu_server *srv = *state;
    start(srv, NULL);
    check_header_limit(srv, 32768);
    tu_server_stop(srv);
}

static void test_header_limit_configured(void **state)
{
    struct tu_server *srv = *state;
    start(srv, "http:\n  max_header_bytes: 2048\n");
    check_header_limit(srv, 2048);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------------ URL */

static long get_url_of(struct tu_server *srv, struct tu_response *res, size_t len)
{
    const char *prefix = "/strategies/modules?name=";
    char *tail = filled(len - strlen(prefix), 'u');
    char *path = tu_path("%s%s", prefix, tail);
    char *url = tu_path("%s%s", srv->base_url, path);
    struct tu_request_options o = {.path_as_is = true};
    if (tu_http_try(res, "GET", url, &o) != 0)
        memset(res, 0, sizeof *res);
    free(url);
    free(path);
    free(tail);
    return res->status;
}

static void check_url_limit(struct tu_server *srv, size_t limit)
{
    struct tu_response res;
    get_url_of(srv, &res, limit);
    if (res.status == 414 || res.status >= 500 || res.status == 0)
        fail_msg("a URL of exactly %zu bytes: got %ld", limit, res.status);
    tu_response_free(&res);
    get_url_of(srv, &res, limit + 1);
    expect_limit_error(&res, 414, (long long)limit);
    tu_response_free(&res);
    get_url_of(srv, &res, limit * 4 + 100000);
    if (res.status != 414)
        fail_msg("a %zu-byte URL: expected 414, got %ld", limit * 4 + 100000, res.status);
    tu_response_free(&res);
    expect_healthy(srv);
}

static void test_url_limit_default(void **state)
{
    struct tu_server *srv = *state;
    start(srv, NULL);
    check_url_limit(srv, 8192);
    tu_server_stop(srv);
}

static void test_url_limit_configured(void **state)
{
    struct tu_server *srv = *state;
    start(srv, "http:\n  max_url_bytes: 1024\n");
    check_url_limit(srv, 1024);
    tu_server_stop(srv);
}

/* A raw NUL byte in the request target would end the target there for
 * every name and selector in it: `DELETE /strategies/modules/bare<NUL>:tag`
 * deleted the whole strategy `bare`. Refused (400, JSON), nothing changed;
 * the target with the rest of a line still serves. */
static void test_nul_in_the_request_target(void **state)
{
    struct tu_server *srv = *state;
    start(srv, NULL);
    char *src = tu_strategy_source("bare", "['Trade']", "[]", NULL, "onTrade() {},");
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    static const char *const targets[] = {"DELETE /strategies/modules/bare\0:nosuch",
                                          "GET /strategies/modules/bare\0x",
                                          "GET /strategies/modules?limit=1\0"};
    static const size_t lengths[] = {sizeof "DELETE /strategies/modules/bare\0:nosuch" - 1,
                                     sizeof "GET /strategies/modules/bare\0x" - 1,
                                     sizeof "GET /strategies/modules?limit=1\0" - 1};
    static const char rest[] = " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    for (size_t i = 0; i < 3; i++) {
        int fd = raw_connect(srv);
        raw_send(fd, targets[i], lengths[i]);
        raw_send(fd, rest, sizeof rest - 1);
        char *res = raw_response(fd, 30000);
        if (status_of(res) != 400 || !strstr(res, "application/json") || !strstr(res, "NUL byte"))
            fail_msg("%s: expected a JSON 400 naming the NUL byte, got: %.400s", targets[i],
                     res ? res : "(nothing)");
        free(res);
        close(fd);
    }
    json_decref(tu_get_json(srv, 200, "/strategies/modules/bare"));
    /* the same line without the NUL is served as before */
    int fd = raw_connect(srv);
    static const char plain[] = "GET /strategies/modules/bare HTTP/1.1\r\nHost: localhost\r\n\r\n";
    raw_send(fd, plain, sizeof plain - 1);
    char *res = raw_response(fd, 30000);
    assert_int_equal(status_of(res), 200);
    free(res);
    close(fd);
    tu_server_stop(srv);
}

/* ---------------------------------------------------------- connections */

/* Fills `limit` keep-alive connections (each answered), then checks that
 * the next ones get 503 and that a freed slot serves again. */
static void check_connection_limit(struct tu_server *srv, unsigned limit)
{
    raise_open_files();
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < (rlim_t)limit + 64) {
        print_message("skipped: %u connections need more open files than the limit of %llu "
                      "(ulimit -n)\n",
                      limit, (unsigned long long)rl.rlim_cur);
        tu_server_stop(srv);
        skip();
    }
    int *fds = calloc(limit, sizeof *fds);
    assert_non_null(fds);
    for (unsigned i = 0; i < limit; i++) {
        fds[i] = raw_connect(srv);
        int status = raw_get(fds[i], "/healthz", 30000);
        if (status != 200)
            fail_msg("connection %u of %u: expected 200, got %d", i + 1, limit, status);
    }
    for (int k = 0; k < 3; k++) {
        int fd = raw_connect(srv);
        raw_send(fd, "GET /strategies HTTP/1.1\r\nHost: localhost\r\n\r\n", 46);
        char *res = raw_response(fd, 30000);
        if (status_of(res) != 503)
            fail_msg("connection %u: expected 503, got: %.300s", limit + 1 + (unsigned)k,
                     res ? res : "(nothing)");
        if (!strcasestr(res, "\r\nRetry-After:") || !strcasestr(res, "\r\nConnection: close") ||
            !strstr(res, "\"error\""))
            fail_msg("the 503 lacks Retry-After, Connection: close or a JSON error:\n%s", res);
        free(res);
        if (wait_closed(fd, 30000) < 0)
            fail_msg("the connection answered 503 was not closed");
        close(fd);
    }
    /* Existing connections keep working. */
    assert_int_equal(raw_get(fds[0], "/healthz", 30000), 200);
    /* Free one slot: a new connection is served again (the server notices
     * the close asynchronously, hence the retries). */
    close(fds[limit - 1]);
    int status = -1;
    for (int attempt = 0; attempt < 200 && status != 200; attempt++) {
        int fd = raw_connect(srv);
        status = raw_get(fd, "/healthz", 30000);
        close(fd);
        if (status != 200)
            sleep_ms(50);
    }
    if (status != 200)
        fail_msg("after a slot was freed, new connections still get %d", status);
    for (unsigned i = 0; i + 1 < limit; i++)
        close(fds[i]);
    free(fds);
    /* Once they are gone, the server is back to normal. */
    for (int attempt = 0; attempt < 200; attempt++) {
        struct tu_response res;
        char *url = tu_path("%s/strategies", srv->base_url);
        int rc = tu_http_try(&res, "GET", url, NULL);
        free(url);
        long got = rc == 0 ? res.status : 0;
        tu_response_free(&res);
        if (got == 200) {
            /* the refusals were counted as such, not as unknown routes */
            assert_true(tu_metric(srv, "stratd_http_requests_total{route=\"overCapacity\","
                                       "method=\"GET\",status=\"503\"}") >= 3);
            return;
        }
        sleep_ms(50);
    }
    fail_msg("the server did not serve again after the connections closed");
}

static void test_connection_limit_default(void **state)
{
    struct tu_server *srv = *state;
    start(srv, NULL);
    check_connection_limit(srv, 1024);
    tu_server_stop(srv);
}

static void test_connection_limit_configured(void **state)
{
    struct tu_server *srv = *state;
    start(srv, "http:\n  max_connections: 8\n");
    check_connection_limit(srv, 8);
    tu_server_stop(srv);
}

/* A GET on a new connection from `source`: the whole response, or NULL. */
static char *get_from(struct tu_server *srv, const char *source, const char *path, int *fd_out)
{
    int fd = raw_connect_from(srv, source);
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n", path);
    raw_send(fd, req, (size_t)n);
    char *res = raw_response(fd, 30000);
    *fd_out = fd;
    return res;
}

/* One address past http.max_connections_per_address gets 429 naming it
 * and the limit, closed; a connection of it that sends nothing is closed
 * long before the request timeout; other addresses are served meanwhile,
 * and a closed connection gives its address a slot back. */
static void test_connections_per_address(void **state)
{
    struct tu_server *srv = *state;
    start(srv, "http:\n  max_connections_per_address: 4\n  request_timeout_seconds: 120\n");
    int held[4];
    for (int i = 0; i < 4; i++) {
        held[i] = raw_connect_from(srv, "127.0.0.1");
        assert_int_equal(raw_get(held[i], "/healthz", 30000), 200);
    }
    int fd = -1;
    char *res = get_from(srv, "127.0.0.1", "/strategies", &fd);
    if (status_of(res) != 429 || !strcasestr(res, "\r\nRetry-After:") ||
        !strcasestr(res, "\r\nConnection: close") || !strstr(res, "\"limit\":4") ||
        !strstr(res, "\"address\":\"127.0.0.1\"") || !strstr(res, "from 127.0.0.1"))
        fail_msg("a fifth connection from 127.0.0.1: expected 429 naming the address and the "
                 "limit of 4, with Retry-After and Connection: close; got:\n%s",
                 res ? res : "(nothing)");
    free(res);
    if (wait_closed(fd, 30000) < 0)
        fail_msg("the connection answered 429 was not closed");
    close(fd);
    /* another address is another client: served, up to its own four */
    int other[4];
    for (int i = 0; i < 4; i++) {
        other[i] = raw_connect_from(srv, "127.0.0.2");
        assert_int_equal(raw_get(other[i], "/healthz", 30000), 200);
    }
    /* a refused connection that sends nothing does not keep its slot for
     * the 120 s request timeout */
    int silent = raw_connect_from(srv, "127.0.0.1");
    if (wait_closed(silent, 30000) < 0)
        fail_msg("a refused connection that sent nothing was still open after 30 s");
    close(silent);
    /* the ones admitted keep working */
    assert_int_equal(raw_get(held[0], "/strategies", 30000), 200);
    assert_int_equal(raw_get(other[3], "/strategies", 30000), 200);
    /* a slot freed is the address's again (the close is noticed
     * asynchronously, hence the retries) */
    close(held[3]);
    int status = -1;
    for (int attempt = 0; attempt < 200 && status != 200; attempt++) {
        char *again = get_from(srv, "127.0.0.1", "/healthz", &fd);
        status = status_of(again);
        free(again);
        close(fd);
        if (status != 200)
            sleep_ms(50);
    }
    if (status != 200)
        fail_msg("after one of its connections closed, 127.0.0.1 still gets %d", status);
    for (int i = 0; i < 4; i++) {
        if (i < 3)
            close(held[i]);
        close(other[i]);
    }
    /* counted under their own route label; the silent one is not counted
     * as a request that arrived too slowly */
    res = get_from(srv, "127.0.0.3", "/metrics", &fd);
    const char *series = "stratd_http_requests_total{route=\"overAddressLimit\",method=\"GET\","
                         "status=\"429\"} ";
    const char *at = res ? strstr(res, series) : NULL;
    if (status_of(res) != 200 || !at || atoi(at + strlen(series)) < 1 ||
        !strstr(res, "\nstratd_http_requests_timed_out_total 0\n") ||
        !strstr(res, "\nstratd_http_refused_connections_dropped_total 1\n"))
        fail_msg("the metrics do not count the 429s under overAddressLimit and the silent refused "
                 "connection dropped, or count a timed-out request:\n%s",
                 res ? res : "(nothing)");
    free(res);
    close(fd);
    tu_server_stop(srv);
}

/* Holds `n` served connections from `source` in held[]; the next one from
 * it must be refused with a 429 naming `named` (the address as the gateway
 * writes it). */
static void fill_address(struct tu_server *srv, const char *source, const char *named, int *held,
                         int n)
{
    for (int i = 0; i < n; i++) {
        held[i] = raw_connect_from(srv, source);
        assert_int_equal(raw_get(held[i], "/healthz", 30000), 200);
    }
    int fd = -1;
    char *res = get_from(srv, source, "/healthz", &fd);
    char *says = tu_path("\"address\":\"%s\"", named);
    if (status_of(res) != 429 || !strstr(res, says))
        fail_msg("connection %d from %s: expected 429 naming %s; got:\n%s", n + 1, source, named,
                 res ? res : "(nothing)");
    free(says);
    free(res);
    close(fd);
}

/* `--listen [::1]:PORT`: the control plane serves IPv6 clients, the first
 * line names the address in brackets as a URL writes it, calls with a
 * body work (a Host of [::1] is loopback), and the per-address limit
 * counts and names IPv6 clients. */
static void test_ipv6_listener(void **state)
{
    struct tu_server *srv = *state;
    const char *const args[] = {"--listen", "[::1]:0", NULL};
    struct tu_server_options opts = {.config_yaml = "http:\n  max_connections_per_address: 2\n",
                                     .extra_args = args};
    tu_server_start(srv, &opts);
    assert_int_equal(strncmp(srv->base_url, "http://[::1]:", 13), 0);
    expect_healthy(srv);
    char *src = tu_module_source("six", NULL, NULL);
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
    json_t *line = tu_wait_log(srv, NULL, "listening on http://[::1]:", TU_WAIT_S);
    json_decref(line);
    int held[2];
    fill_address(srv, "::1", "::1", held, 2);
    close(held[0]);
    close(held[1]);
    tu_server_stop(srv);
}

/* `--listen [::]:PORT` takes IPv4 clients too (whatever the host's
 * bindv6only says); an IPv4 client is counted and named as IPv4, apart from
 * the IPv6 ones. Beyond loopback, so with tokens. */
static void test_dual_stack_listener(void **state)
{
    struct tu_server *srv = *state;
    char hash[65];
    tu_sha256_hex("dual-stack-secret", strlen("dual-stack-secret"), hash);
    char *yaml = tu_path("http:\n  max_connections_per_address: 2\n"
                         "auth:\n  tokens:\n    - {name: ops, sha256: %s, role: admin}\n",
                         hash);
    const char *const args[] = {"--listen", "[::]:0", NULL};
    struct tu_server_options opts = {.config_yaml = yaml, .extra_args = args};
    tu_server_start(srv, &opts);
    free(yaml);
    int four[2], six[2];
    fill_address(srv, "127.0.0.1", "127.0.0.1", four, 2);
    fill_address(srv, "::1", "::1", six, 2);
    for (int i = 0; i < 2; i++) {
        close(four[i]);
        close(six[i]);
    }
    tu_server_stop(srv);
}

/* stratd_http_connections, read over a connection of its own. */
static double open_connections(struct tu_server *srv)
{
    char *m = tu_ops_metrics(srv);
    double open = tu_ops_metric(m, "stratd_http_connections", NULL);
    free(m);
    return open;
}

struct gauge_wait {
    struct tu_server *srv;
    double at_most;
};

static bool connections_down(void *ctx)
{
    struct gauge_wait *w = ctx;
    return open_connections(w->srv) <= w->at_most;
}

/* The open connections' gauge follows the clients: up with six that each
 * got an answer, down again once they close (the server notices a close
 * asynchronously, hence the wait). */
static void test_open_connections_gauge(void **state)
{
    struct tu_server *srv = *state;
    start(srv, NULL);
    int fds[6];
    for (size_t i = 0; i < 6; i++) {
        fds[i] = raw_connect(srv);
        assert_int_equal(raw_get(fds[i], "/healthz", 30000), 200);
    }
    double open = open_connections(srv);
    if (!(open >= 7)) /* the six and the one asking */
        fail_msg("stratd_http_connections is %g with seven connections open", open);
    for (size_t i = 0; i < 6; i++)
        close(fds[i]);
    struct gauge_wait w = {srv, open - 6};
    if (!tu_ops_wait_until(connections_down, &w, 30))
        fail_msg("stratd_http_connections stayed above %g after six connections closed", w.at_most);
    tu_server_stop(srv);
}

/* Idle connections past a polling thread's share of libmicrohttpd's limit
 * (the acceptor still under its own) locked that thread for good: once the
 * clients left nothing was answered again. Twice 40 idle connections against
 * a limit of 16, then the server serves, and its gauge comes down. */
static void test_idle_connections_past_a_threads_share(void **state)
{
    struct tu_server *srv = *state;
    start(srv, "http:\n  max_connections: 16\n  idle_timeout_seconds: 2\n");
    for (int round = 0; round < 2; round++) {
        int fds[40];
        for (int i = 0; i < 40; i++)
            fds[i] = raw_connect(srv);
        sleep_ms(3000); /* past the idle timeout */
        for (int i = 0; i < 40; i++)
            close(fds[i]);
        sleep_ms(200);
    }
    int status = -1;
    for (int attempt = 0; attempt < 200 && status != 200; attempt++) {
        int fd = raw_connect(srv);
        status = raw_get(fd, "/healthz", 5000);
        close(fd);
        if (status != 200)
            sleep_ms(50);
    }
    if (status != 200)
        fail_msg("after idle connections came and went, /healthz answers %d", status);
    struct gauge_wait w = {srv, 1};
    if (!tu_ops_wait_until(connections_down, &w, 30))
        fail_msg("stratd_http_connections stayed up after the idle connections left");
    tu_server_stop(srv); /* and it stops: no polling thread is stuck */
}

/* A query of more parameters than any route reads is a 400; one of so many
 * that libmicrohttpd drops it unanswered leaves nothing allocated behind
 * (the sanitizer run's clean stop says so). */
static void test_too_many_query_parameters(void **state)
{
    struct tu_server *srv = *state;
    start(srv, NULL);
    char *query = NULL;
    size_t n = 0;
    FILE *q = open_memstream(&query, &n);
    for (int i = 0; i < 100; i++)
        fprintf(q, "%sa%d=1", i ? "&" : "", i);
    fclose(q);
    struct tu_response res;
    tu_get(srv, &res, "/strategies/modules?%s", query);
    tu_assert_error(&res, 400);
    assert_non_null(strstr(tu_jstr(res.json, "error"), "query parameters"));
    tu_response_free(&res);
    free(query);
    query = NULL;
    q = open_memstream(&query, &n);
    fprintf(q, "GET /healthz?");
    for (int i = 0; i < 900; i++)
        fprintf(q, "%sa%d=1", i ? "&" : "", i);
    fprintf(q, " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    fclose(q);
    for (int k = 0; k < 20; k++) {
        int fd = raw_connect(srv);
        raw_send(fd, query, n);
        free(raw_response(fd, 200)); /* libmicrohttpd answers nothing */
        close(fd);
    }
    free(query);
    expect_healthy(srv);
    tu_server_stop(srv);
}

/* Opens n connections at once (non-blocking connects, then waits for each),
 * the way a client with a connection pool does. */
static void connect_together(const struct tu_server *srv, int *fds, int n)
{
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)srv->port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fds[i] < 0)
            fail_msg("socket: %s", strerror(errno));
        if (connect(fds[i], (struct sockaddr *)&addr, sizeof addr) != 0 && errno != EINPROGRESS)
            fail_msg("connect: %s", strerror(errno));
    }
    for (int i = 0; i < n; i++) {
        struct pollfd p = {.fd = fds[i], .events = POLLOUT};
        int err = 0;
        socklen_t len = sizeof err;
        if (poll(&p, 1, 30000) != 1 || getsockopt(fds[i], SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
            err != 0)
            fail_msg("connection %d of %d did not open: %s", i + 1, n, strerror(err));
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) & ~O_NONBLOCK);
    }
}

/* POST /strategies/modules with `source` on a raw socket. */
static void send_upload(int fd, const char *source)
{
    json_t *body = json_pack("{s:s}", "source", source);
    char *json = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    assert_non_null(json);
    char head[256];
    int n = snprintf(head, sizeof head,
                     "POST /strategies/modules HTTP/1.1\r\nHost: localhost\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     strlen(json));
    raw_send(fd, head, (size_t)n);
    raw_send(fd, json, strlen(json));
    free(json);
}

static void send_spinning_upload(int fd)
{
    send_upload(fd, "for (;;) {}\n"
                    "module.exports = { metadata: { name: 'spin', displayName: 'S', "
                    "events: ['Trade'] }, create() { return {}; } };\n");
}

/* An upload whose top level works for `ms` before it exports a module. */
static void send_slow_upload(int fd, int ms, int n)
{
    char *source = tu_path("const until = Date.now() + %d;\n"
                           "while (Date.now() < until) {}\n"
                           "module.exports = { metadata: { name: 'slow', displayName: 'S', "
                           "tag: 'v%d', events: ['Trade'] }, create() { return {}; } };\n",
                           ms, n);
    send_upload(fd, source);
    free(source);
}

/* A stop (SIGTERM) lets the changes under way finish, and their answers
 * go out before the server exits: the answer of a change a handler thread
 * had just finished was dropped at random when the daemon stopped before
 * its polling thread wrote it (the client could not tell the change was
 * made; the upload is there after the restart). */
static void test_stop_answers_the_changes_it_finishes(void **state)
{
    struct tu_server *srv = *state;
    static const int delays_ms[] = {100, 250, 400, 550};
    for (size_t i = 0; i < sizeof delays_ms / sizeof delays_ms[0]; i++) {
        if (i == 0)
            start(srv, "validation:\n  budget_ms: 3000\n");
        else
            tu_server_restart(srv, NULL);
        int fd = raw_connect(srv);
        send_slow_upload(fd, 700, (int)i);
        sleep_ms(delays_ms[i]);
        tu_server_stop(srv);
        char *res = raw_response(fd, 5000);
        if (status_of(res) != 201)
            fail_msg("an upload under way at a stop %d ms into it: %.300s", delays_ms[i],
                     res ? res : "(no answer)");
        free(res);
        close(fd);
    }
    tu_server_restart(srv, NULL);
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/slow");
    assert_int_equal(json_array_size(json_object_get(m, "revisions")), 4);
    json_decref(m);
    tu_server_stop(srv);
}

/* A change runs on a handler thread, not on the polling thread that read
 * it: an upload whose top level spins for the whole validation budget
 * holds up none of the other connections, even with one polling thread for
 * all of them (each of the fifteen GETs is answered before the upload). */
static void test_slow_request_holds_up_nobody(void **state)
{
    struct tu_server *srv = *state;
    start(srv, "http:\n  threads: 1\nvalidation:\n  budget_ms: 3000\n");
    enum { CONNECTIONS = 16 };
    int fds[CONNECTIONS];
    bool answered[CONNECTIONS] = {false};
    connect_together(srv, fds, CONNECTIONS);
    send_spinning_upload(fds[0]);
    static const char healthz[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    for (int i = 1; i < CONNECTIONS; i++)
        raw_send(fds[i], healthz, sizeof healthz - 1);
    int before_upload = -1, done = 0;
    while (done < CONNECTIONS) {
        struct pollfd p[CONNECTIONS];
        for (int i = 0; i < CONNECTIONS; i++)
            p[i] = (struct pollfd){.fd = answered[i] ? -1 : fds[i], .events = POLLIN};
        if (poll(p, CONNECTIONS, 60000) <= 0)
            fail_msg("%d of %d connections still unanswered after 60 s", CONNECTIONS - done,
                     CONNECTIONS);
        for (int i = 0; i < CONNECTIONS; i++) {
            if (answered[i] || !p[i].revents)
                continue;
            char *res = raw_response(fds[i], 30000);
            int want = i == 0 ? 422 : 200;
            if (status_of(res) != want)
                fail_msg("connection %d: expected %d, got: %.300s", i, want,
                         res ? res : "(nothing)");
            free(res);
            answered[i] = true;
            if (i == 0)
                before_upload = done;
            done++;
        }
    }
    if (before_upload != CONNECTIONS - 1)
        fail_msg("only %d of the %d requests were answered while the upload validated",
                 before_upload, CONNECTIONS - 1);
    for (int i = 0; i < CONNECTIONS; i++)
        close(fds[i]);
    expect_healthy(srv);
    tu_server_stop(srv);
}

/* --------------------------------------------------------- idle timeout */

/* Half a request line, headers without their end, and a body cut short:
 * three ways to stall. */
static const char *const stalls[] = {
    "GET /strategies HTT",
    "GET /strategies HTTP/1.1\r\nHost: localhost\r\nX-Slow: 1\r\n",
    "POST /strategies/refresh HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
    "Content-Length: 100\r\n\r\n{\"strategies\"",
};

static void test_stalled_clients_are_dropped_and_block_nobody(void **state)
{
    struct tu_server *srv = *state;
    start(srv, "http:\n  idle_timeout_seconds: 6\n  threads: 2\n");
    raise_open_files();
    /* Many more stalled clients than polling threads. */
    enum { STALLED = 48 };
    int fds[STALLED];
    for (int i = 0; i < STALLED; i++) {
        fds[i] = raw_connect(srv);
        const char *s = stalls[i % 3];
        raw_send(fds[i], s, strlen(s));
    }
    int64_t stalled_at = now_ms();
    /* Everyone else is served meanwhile, on new and on kept-alive
     * connections. */
    int keep = raw_connect(srv);
    for (int i = 0; i < 20; i++) {
        struct tu_response res;
        tu_get(srv, &res, "/strategies/modules");
        tu_assert_status(&res, 200);
        tu_response_free(&res);
        assert_int_equal(raw_get(keep, "/healthz", 30000), 200);
    }
    int64_t served_in = now_ms() - stalled_at;
    int still = 0;
    for (int i = 0; i < STALLED; i++)
        still += still_open(fds[i]);
    print_message("40 requests served in %lld ms beside %d stalled connections (%d still open)\n",
                  (long long)served_in, STALLED, still);
    if (served_in < 3000 && still != STALLED)
        fail_msg("stalled connections were dropped before their idle timeout (%d of %d open "
                 "after %lld ms)",
                 still, STALLED, (long long)served_in);
    /* Every stalled connection goes once idle for the timeout. */
    for (int i = 0; i < STALLED; i++) {
        int64_t waited = wait_closed(fds[i], 120000);
        if (waited < 0)
            fail_msg("stalled connection %d is still open 120 s after it stalled", i);
        close(fds[i]);
    }
    int64_t dropped_after = now_ms() - stalled_at;
    print_message("stalled connections dropped after %lld ms (idle timeout 6 s)\n",
                  (long long)dropped_after);
    if (dropped_after < 3000)
        fail_msg("stalled connections dropped after %lld ms, before the 6 s idle timeout",
                 (long long)dropped_after);
    close(keep);
    expect_healthy(srv);
    tu_server_stop(srv);
}

static void test_idle_timeout_default(void **state)
{
    struct tu_server *srv = *state;
    start(srv, NULL);
    int fd = raw_connect(srv);
    raw_send(fd, stalls[1], strlen(stalls[1]));
    int64_t t0 = now_ms();
    sleep_ms(3000);
    if (!still_open(fd))
        fail_msg("a stalled connection was dropped within 3 s; the default idle timeout is 30 s");
    int64_t waited = wait_closed(fd, 150000);
    if (waited < 0)
        fail_msg("a stalled connection is still open 150 s later");
    int64_t total = now_ms() - t0;
    print_message("stalled connection dropped after %lld ms (default idle timeout 30 s)\n",
                  (long long)total);
    if (total < 20000)
        fail_msg("dropped after %lld ms, well before the 30 s default", (long long)total);
    close(fd);
    expect_healthy(srv);
    tu_server_stop(srv);
}

/* Sends one byte every `gap_ms` until the server closes the connection or
 * `give_up_ms` passes; returns the milliseconds it took to be closed, -1
 * when still open. */
static int64_t trickle_until_closed(int fd, int gap_ms, int give_up_ms)
{
    int64_t t0 = now_ms();
    while (now_ms() - t0 < give_up_ms) {
        if (wait_closed(fd, gap_ms) >= 0)
            return now_ms() - t0;
        if (send(fd, "x", 1, MSG_NOSIGNAL) != 1)
            return now_ms() - t0;
    }
    return -1;
}

/* libmicrohttpd's timeout counts silence only: a client sending a byte
 * before each idle timeout held its connection for as long as its headers
 * fit (days), with no token needed. A request must now arrive whole within
 * http.request_timeout_seconds of its first byte: headers and bodies that
 * trickle in are cut, kept-alive connections that carry whole requests are
 * served however long they pause between them, and a request that has
 * arrived is answered however long its handler takes (an upload spinning
 * through a 3 s validation budget with a 1 s limit). */
static void test_request_deadline_cuts_trickling_clients(void **state)
{
    struct tu_server *srv = *state;
    start(srv, "http:\n  idle_timeout_seconds: 8\n  request_timeout_seconds: 1\n"
               "  max_body_bytes: 1024\nvalidation:\n  budget_ms: 3000\n");
    static const char *const partial[] = {
        "GET /strategies HTTP/1.1\r\nHost: localhost\r\nX-Slow: ",
        "POST /strategies/refresh HTTP/1.1\r\nHost: localhost\r\n"
        "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
    };
    for (size_t i = 0; i < sizeof partial / sizeof partial[0]; i++) {
        int fd = raw_connect(srv);
        raw_send(fd, partial[i], strlen(partial[i]));
        int64_t took = trickle_until_closed(fd, 400, 10000);
        close(fd);
        print_message("trickling request %zu cut after %lld ms\n", i, (long long)took);
        if (took < 0)
            fail_msg("a request trickling a byte every 0.4 s is still open after 10 s with "
                     "request_timeout_seconds: 1 (%s...)",
                     partial[i]);
        if (took < 700)
            fail_msg("a trickling request was cut after %lld ms, before its 1 s", (long long)took);
    }
    /* A chunked body past max_body_bytes is read to its end before its 413,
     * and stays timed while it trickles (it had left the deadline for the
     * idle timeout's grace) */
    static const char chunked[] = "POST /strategies/modules HTTP/1.1\r\nHost: localhost\r\n"
                                  "Transfer-Encoding: chunked\r\n\r\n";
    int fd = raw_connect(srv);
    raw_send(fd, chunked, sizeof chunked - 1);
    char big[2048 + 16];
    int n = snprintf(big, sizeof big, "800\r\n");
    memset(big + n, 'x', 2048);
    memcpy(big + n + 2048, "\r\n", 2);
    raw_send(fd, big, (size_t)n + 2050);
    int64_t took = -1;
    for (int64_t t0 = now_ms(); now_ms() - t0 < 10000;) {
        if (wait_closed(fd, 400) >= 0 || send(fd, "1\r\nx\r\n", 6, MSG_NOSIGNAL) != 6) {
            took = now_ms() - t0;
            break;
        }
    }
    close(fd);
    print_message("a chunked body past the limit, trickling, cut after %lld ms\n", (long long)took);
    if (took < 0 || took > 5000)
        fail_msg("a chunked body past the limit trickled on for %lld ms with a 1 s request timeout "
                 "(8 s idle)",
                 (long long)took);
    double timed_out = tu_metric(srv, "stratd_http_requests_timed_out_total");
    if (timed_out < 3)
        fail_msg("stratd_http_requests_timed_out_total reads %g after three cuts", timed_out);
    /* The clock starts at a request's first byte: a kept-alive connection
     * may pause between requests for longer than the request timeout (the
     * idle timeout bounds that), and so may a new one before its first */
    int keep = raw_connect(srv);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(raw_get(keep, "/healthz", 5000), 200);
        sleep_ms(2500);
    }
    if (raw_get(keep, "/healthz", 5000) != 200)
        fail_msg("a kept-alive connection was cut in a 2.5 s pause between requests with "
                 "request_timeout_seconds: 1 (8 s idle)");
    int late = raw_connect(srv);
    sleep_ms(2500);
    if (raw_get(late, "/healthz", 5000) != 200)
        fail_msg("a connection that sent its first request 2.5 s after it opened was cut with "
                 "request_timeout_seconds: 1 (8 s idle)");
    close(late);
    /* ...and a request that trickles after such a pause is still cut */
    raw_send(keep, partial[0], strlen(partial[0]));
    int64_t cut = trickle_until_closed(keep, 400, 10000);
    close(keep);
    print_message("a request trickling after a 2.5 s pause cut after %lld ms\n", (long long)cut);
    if (cut < 0)
        fail_msg("a request trickling after a pause is still open after 10 s with "
                 "request_timeout_seconds: 1");
    timed_out++;
    fd = raw_connect(srv);
    send_spinning_upload(fd);
    char *res = raw_response(fd, 30000);
    if (status_of(res) != 422)
        fail_msg("an upload handled for longer than the request timeout was not answered: %.300s",
                 res ? res : "(nothing)");
    free(res);
    close(fd);
    assert_true(tu_metric(srv, "stratd_http_requests_timed_out_total") == timed_out);
    expect_healthy(srv);
    tu_server_stop(srv);
}

/* ------------------------------------------------------------------ rate */

static char *rate_config(const char *rate_lines)
{
    char ha[65], hb[65];
    tu_sha256_hex(SECRET_A, strlen(SECRET_A), ha);
    tu_sha256_hex(SECRET_B, strlen(SECRET_B), hb);
    return tu_path("%s"
                   "auth:\n"
                   "  tokens:\n"
                   "    - {name: alice, sha256: %s, role: admin}\n"
                   "    - {name: bob, sha256: %s, role: read}\n",
                   rate_lines ? rate_lines : "", ha, hb);
}

static long get_as(struct tu_server *srv, struct tu_response *res, const char *path,
                   const char *secret)
{
    char *auth = tu_path("Authorization: Bearer %s", secret);
    const char *headers[] = {auth, NULL};
    struct tu_request_options o = {.headers = headers};
    tu_request(srv, res, "GET", path, &o);
    free(auth);
    return res->status;
}

/* Framing two parsers could read two ways (a request smuggled past a
 * proxy that frames by the other rule), or that libmicrohttpd cannot read
 * at all, is a 400 and the connection closes: one answer, the bytes after
 * it never run as a request. */
static void test_ambiguous_framing_refused(void **state)
{
    struct tu_server *srv = *state;
    char *yaml = rate_config(NULL);
    start(srv, yaml);
    free(yaml);
    char *auth = tu_path("Authorization: Bearer %s\r\n", SECRET_A);
    static const char tail[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n";
    static const struct {
        const char *head, *body, *says;
        size_t head_len; /* 0: strlen(head) */
    } cases[] = {
        {"POST /strategies/refresh HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n"
         "Content-Length: 40\r\n",
         "{}", "two Content-Length", 0},
        {"POST /strategies/refresh HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n"
         "Transfer-Encoding: chunked\r\n",
         "0\r\n\r\n", "both Transfer-Encoding and Content-Length", 0},
        {"GET /strategies HTTP/1.1\r\n", "", "without a Host", 0},
        {"GET /strategies HTTP/1.1\r\nHost: localhost\r\nHost: other\r\n", "", "more than one Host",
         0},
        {"POST /strategies/refresh HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding : chunked\r\n",
         "2\r\n{}\r\n0\r\n\r\n", "white space", 0},
        /* codings libmicrohttpd cannot frame: it waited for the connection
         * to time out, unanswered */
        {"POST /strategies/refresh HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: xchunked\r\n",
         "{}", "transfer coding other than chunked", 0},
        {"POST /strategies/refresh HTTP/1.1\r\nHost: localhost\r\n"
         "Transfer-Encoding: chunked, identity\r\n",
         "2\r\n{}\r\n0\r\n\r\n", "transfer coding other than chunked", 0},
        {"GET /strategies HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: gzip\r\n", "",
         "transfer coding other than chunked", 0},
        /* a field folded over two lines: libmicrohttpd made one name of both
         * lines and framed by Content-Length, a proxy that unfolds by the
         * chunked coding */
        {"POST /strategies/refresh HTTP/1.1\r\nHost: localhost\r\nContent-Length: 4\r\n"
         "Transfer-Encoding:\r\n chunked\r\n",
         "3a\r\n", "folded", 0},
        {"POST /strategies/refresh HTTP/1.1\r\nHost: localhost\r\nContent-Length:\r\n 2\r\n", "{}",
         "folded", 0},
        {"POST /strategies/refresh HTTP/1.1\r\nHost: localhost\r\nX-Note: a\rContent-Length: 2\r\n",
         "{}", "a CR in a header field", 0},
        /* a NUL cut the value short, so a token followed by anything passed */
        {"GET /strategies HTTP/1.1\r\nHost: localhost\r\nX-Note: a\0junk\r\n", "",
         "NUL byte in a header",
         sizeof "GET /strategies HTTP/1.1\r\nHost: localhost\r\nX-Note: a\0junk\r\n" - 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        /* sent in one write: sent piecemeal, a piece after the refusal
         * could meet the closed connection */
        size_t head_len = cases[i].head_len ? cases[i].head_len : strlen(cases[i].head);
        char *rest = tu_path("%s\r\n%s%s", auth, cases[i].body, tail);
        size_t len = head_len + strlen(rest);
        char *whole = malloc(len);
        assert_non_null(whole);
        memcpy(whole, cases[i].head, head_len);
        memcpy(whole + head_len, rest, strlen(rest));
        int fd = raw_connect(srv);
        raw_send(fd, whole, len);
        free(whole);
        free(rest);
        char *res = raw_response(fd, 30000);
        if (status_of(res) != 400 || !strstr(res, cases[i].says))
            fail_msg("case %zu: expected a 400 saying '%s', got: %.300s", i, cases[i].says,
                     res ? res : "(nothing)");
        free(res);
        if (wait_closed(fd, 30000) < 0)
            fail_msg("case %zu: the connection stayed open after the refusal", i);
        close(fd);
    }
    /* `Bearer <token><NUL>junk` had passed as the token */
    char *nul_token = tu_path("GET /strategies HTTP/1.1\r\nHost: localhost\r\n"
                              "Authorization: Bearer %s#junk\r\n\r\n",
                              SECRET_A);
    *strchr(nul_token, '#') = '\0';
    int fd = raw_connect(srv);
    raw_send(fd, nul_token, strlen(nul_token) + 1 + strlen(strchr(nul_token, '\0') + 1));
    char *res = raw_response(fd, 30000);
    if (status_of(res) != 400)
        fail_msg("a token followed by a NUL and more: %.300s", res ? res : "(nothing)");
    free(res);
    close(fd);
    free(nul_token);
    free(auth);
    expect_healthy(srv);
    tu_server_stop(srv);
}

static void test_rate_limit_off_by_default(void **state)
{
    struct tu_server *srv = *state;
    char *yaml = rate_config(NULL);
    start(srv, yaml);
    free(yaml);
    for (int i = 0; i < 300; i++) {
        struct tu_response res;
        get_as(srv, &res, "/strategies", SECRET_A);
        tu_assert_status(&res, 200);
        tu_response_free(&res);
    }
    tu_server_stop(srv);
}

static void test_rate_limit_per_token(void **state)
{
    struct tu_server *srv = *state;
    char *yaml = rate_config("http:\n  rate_limit_per_second: 2\n  rate_limit_burst: 5\n");
    start(srv, yaml);
    free(yaml);
    /* The bucket starts full: the first five pass whatever the timing. */
    int ok = 0, limited = 0;
    char *retry = NULL;
    for (int i = 0; i < 30; i++) {
        struct tu_response res;
        long status = get_as(srv, &res, "/strategies", SECRET_A);
        if (i < 5 && status != 200)
            fail_msg("request %d of a fresh bucket of 5: got %ld", i + 1, status);
        if (status == 200) {
            ok++;
        } else {
            tu_assert_error(&res, 429);
            limited++;
            if (!retry) {
                retry = tu_header(&res, "Retry-After");
                if (!retry || atoi(retry) < 1)
                    fail_msg("429 without a Retry-After in seconds: %s", retry ? retry : "none");
                assert_int_equal(tu_jint(res.json, "details.limit"), 2);
                assert_int_equal(tu_jint(res.json, "details.burst"), 5);
                assert_true(tu_jint(res.json, "details.retryAfterSeconds") >= 1);
                assert_non_null(strstr(tu_jstr(res.json, "error"), "alice"));
            }
        }
        tu_response_free(&res);
    }
    print_message("30 quick requests at 2/s, burst 5: %d passed, %d limited\n", ok, limited);
    assert_true(limited > 0);
    /* Another token has its own bucket; /healthz is never limited. */
    struct tu_response res;
    get_as(srv, &res, "/strategies", SECRET_B);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    for (int i = 0; i < 20; i++) {
        get_as(srv, &res, "/healthz", SECRET_A);
        tu_assert_status(&res, 200);
        tu_response_free(&res);
    }
    /* The callers of the open /metrics without a valid token share one
     * bucket (they were never limited). */
    int anonymous_limited = 0;
    for (int i = 0; i < 12; i++) {
        if (i % 2)
            get_as(srv, &res, "/metrics", "not-a-token");
        else
            tu_get(srv, &res, "/metrics");
        if (res.status == 429) {
            anonymous_limited++;
            assert_non_null(strstr(tu_jstr(res.json, "error"), "anonymous"));
        } else {
            tu_assert_status(&res, 200);
        }
        tu_response_free(&res);
    }
    if (anonymous_limited == 0)
        fail_msg("12 quick scrapes of /metrics without a token at 2/s, burst 5: none limited");
    get_as(srv, &res, "/strategies", SECRET_B);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    /* Mutations count too, and a 429 changes nothing. */
    char *url = tu_path("%s/strategies/refresh", srv->base_url);
    char *auth = tu_path("Authorization: Bearer %s", SECRET_A);
    const char *headers[] = {auth, NULL};
    struct tu_request_options o = {.headers = headers, .body = "{}", .body_len = 2};
    assert_int_equal(tu_http_try(&res, "POST", url, &o), 0);
    if (res.status != 429)
        fail_msg("a refresh from a drained bucket: expected 429, got %ld", res.status);
    tu_response_free(&res);
    /* After Retry-After, the token passes again. */
    sleep_ms(atoi(retry) * 1000 + 600);
    get_as(srv, &res, "/strategies", SECRET_A);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    json_t *audit = tu_audit_entries(srv);
    assert_int_equal(json_array_size(audit), 0);
    json_decref(audit);
    free(url);
    free(auth);
    free(retry);
    tu_server_stop(srv);
}

static void test_rate_limit_without_tokens(void **state)
{
    struct tu_server *srv = *state;
    start(srv, "http:\n  rate_limit_per_second: 1\n  rate_limit_burst: 3\n");
    int limited = 0;
    for (int i = 0; i < 10; i++) {
        struct tu_response res;
        tu_get(srv, &res, "/strategies");
        if (i < 3)
            tu_assert_status(&res, 200);
        else if (res.status == 429)
            limited++;
        tu_response_free(&res);
    }
    assert_true(limited > 0);
    expect_healthy(srv);
    tu_server_stop(srv);
}

/* --------------------------------------------------------------- config */

static void test_limits_are_checked_in_the_config(void **state)
{
    (void)state;
    char *root = tu_tempdir("stratd-limits");
    const struct {
        const char *yaml, *key;
    } bad[] = {
        {"http:\n  max_connections: -1\n", "http.max_connections"},
        {"http:\n  max_connections: 99999999999\n", "http.max_connections"},
        {"http:\n  max_connections_per_address: -4\n", "http.max_connections_per_address"},
        {"http:\n  max_connections_per_address: 2000000\n", "http.max_connections_per_address"},
        {"http:\n  threads: 100000\n", "http.threads"},
        {"http:\n  rate_limit_per_second: fast\n", "http.rate_limit_per_second"},
        {"http:\n  rate_limit: 5\n", "http.rate_limit"},
        {"runtime:\n  event_poll_us: 10001\n", "runtime.event_poll_us"},
        {"runtime:\n  event_poll_us: -1\n", "runtime.event_poll_us"},
        {"runtime:\n  event_poll_us: soon\n", "runtime.event_poll_us"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *cfg = tu_path("%s/c%zu.yaml", root, i);
        tu_write_text(cfg, bad[i].yaml);
        char *out = NULL;
        int code =
            tu_run(&out,
                   "'%s' serve --listen 127.0.0.1:0 --strategies '%s/s' --state "
                   "'%s/v%zu' --config '%s' 2>&1",
                   getenv("STRATD_TEST_BINARY") ? getenv("STRATD_TEST_BINARY") : STRATD_BINARY,
                   root, root, i, cfg);
        if (code == 0 || !strstr(out, bad[i].key))
            fail_msg("config %s: exit %d, output (should name %s):\n%s", bad[i].yaml, code,
                     bad[i].key, out);
        free(out);
        free(cfg);
    }
    if (!getenv("STRATD_TEST_KEEP"))
        tu_remove_tree(root);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_body_limit_default, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_body_limit_configured, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_header_limit_default, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_header_limit_configured, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_url_limit_default, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_url_limit_configured, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_idle_connections_past_a_threads_share, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_too_many_query_parameters, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_nul_in_the_request_target, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_connection_limit_default, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_connection_limit_configured, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_open_connections_gauge, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_connections_per_address, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_ipv6_listener, tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_dual_stack_listener, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_slow_request_holds_up_nobody, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_stop_answers_the_changes_it_finishes, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_stalled_clients_are_dropped_and_block_nobody,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_idle_timeout_default, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_request_deadline_cuts_trickling_clients,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_ambiguous_framing_refused, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_off_by_default, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_per_token, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_rate_limit_without_tokens, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test(test_limits_are_checked_in_the_config),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
