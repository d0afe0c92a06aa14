/*
 * A loopback HTTP/1.1 client for the control-plane benchmarks that need
 * per-request timing of write requests (wrk drives the reads). One
 * keep-alive connection per client thread; every request is timed from the
 * first byte sent to the last byte of the response received.
 *
 *   bench_http fleet  --port P --prefix ID --count N --selector SEL
 *                     --provider NAME --symbol SYM [--start 0|1]
 *                     [--strategies S] [--connections C] [--pairs FILE]
 *       creates instances ID-1 .. ID-N (POST /strategy/instances) and, with
 *       --start 1, starts each right after creating it. A pair's latency is
 *       create + start, measured client-side. With --strategies S every
 *       "@S@" in the selector becomes i % S as three digits, e.g.
 *       "cat@S@:v1.0.3" -> "cat007:v1.0.3".
 *       --connections C splits the ids over C threads (for set-up speed;
 *       latency figures use 1). --pairs FILE writes one line per id: its
 *       number, when its create was sent (us since the first), the create's
 *       and the pair's latency in us (-1 when it failed).
 *   bench_http upload --port P --template FILE --count K [--first F]
 *       uploads K revisions (POST /strategies/modules): the template with
 *       every "@N@" replaced by F, F+1, ..., so each one is new bytes.
 *
 * Prints one JSON object: count, errors, mean_ms, p50_ms, p99_ms, max_ms,
 * seconds (wall time of the whole command); fleets add first_tenth_ms and
 * last_tenth_ms, the mean of the first and last tenth of the ids, which
 * shows whether a request's cost grows with the fleet, and tenths_ms, the
 * mean of each tenth in order, and with --start 1
 * create_mean_ms and start_mean_ms, the pair's mean split between its two
 * requests.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------ connection */

struct conn {
    int port;
    int fd;
    char *buf; /* response bytes */
    size_t len, cap;
};

static int conn_open(struct conn *c)
{
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    if (c->fd < 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)c->port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(c->fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        close(c->fd);
        c->fd = -1;
        return -1;
    }
    return 0;
}

static void conn_close(struct conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
}

static int send_parts(int fd, struct iovec *parts, int count)
{
    struct msghdr msg = {.msg_iov = parts, .msg_iovlen = (size_t)count};
    while (msg.msg_iovlen > 0) {
        ssize_t k = sendmsg(fd, &msg, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        size_t sent = (size_t)k;
        while (msg.msg_iovlen > 0 && sent >= msg.msg_iov->iov_len) {
            sent -= msg.msg_iov->iov_len;
            msg.msg_iov++;
            msg.msg_iovlen--;
        }
        if (msg.msg_iovlen > 0) {
            msg.msg_iov->iov_base = (char *)msg.msg_iov->iov_base + sent;
            msg.msg_iov->iov_len -= sent;
        }
    }
    return 0;
}

static int fill(struct conn *c)
{
    if (c->cap - c->len < 4096) {
        size_t cap = c->cap ? c->cap * 2 : 65536;
        char *grown = realloc(c->buf, cap);
        if (!grown)
            return -1;
        c->buf = grown;
        c->cap = cap;
    }
    for (;;) {
        ssize_t k = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            return -1;
        c->len += (size_t)k;
        c->buf[c->len] = '\0';
        return 0;
    }
}

/* The value of a header in [head, end), or NULL. */
static const char *header(const char *head, const char *end, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = strstr(head, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
            const char *v = p + 3 + n;
            while (*v == ' ')
                v++;
            return v;
        }
    }
    return NULL;
}

/* Sends one request and reads its response; returns the status, or -1 when
 * the connection failed (then it is closed and reopened next time). */
static int request(struct conn *c, const char *method, const char *path, const char *body,
                   size_t body_len)
{
    if (c->fd < 0 && conn_open(c) != 0)
        return -1;
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     "Content-Length: %zu\r\n\r\n",
                     method, path, body_len);
    /* head and body in one write, as HTTP clients send a small request:
     * two writes would wake the server twice */
    struct iovec parts[2] = {{head, n > 0 ? (size_t)n : 0}, {(void *)body, body_len}};
    if (n < 0 || (size_t)n >= sizeof head || send_parts(c->fd, parts, 2) != 0) {
        conn_close(c);
        return -1;
    }
    c->len = 0;
    char *end = NULL;
    while (!end) {
        if (fill(c) != 0) {
            conn_close(c);
            return -1;
        }
        end = strstr(c->buf, "\r\n\r\n");
    }
    int status = atoi(c->buf + 9);
    const char *cl = header(c->buf, end, "Content-Length");
    size_t want = (size_t)(end + 4 - c->buf) + (cl ? (size_t)atol(cl) : 0);
    while (c->len < want) {
        if (fill(c) != 0) {
            conn_close(c);
            return -1;
        }
    }
    const char *connection = header(c->buf, strstr(c->buf, "\r\n\r\n"), "Connection");
    if (connection && strncasecmp(connection, "close", 5) == 0)
        conn_close(c);
    return status;
}

/* ---------------------------------------------------------------- stats */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static double pct_ms(const int64_t *v, size_t n, double q)
{
    if (n == 0)
        return 0;
    size_t k = (size_t)ceil(q * (double)n);
    return (double)v[k ? k - 1 : 0] / 1e6;
}

static double mean_ms(const int64_t *v, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)v[i];
    return n ? sum / (double)n / 1e6 : 0.0;
}

/* lat in request order; sorted here. */
/* extra: more members for the object ("" or ", \"name\": value, ..."). */
static void print_stats(int64_t *lat, size_t n, size_t errors, double seconds, const char *extra)
{
    size_t tenth = n / 10;
    double first = mean_ms(lat, tenth), last = mean_ms(lat + n - tenth, tenth);
    double mean = mean_ms(lat, n);
    char tenths[160] = "";
    for (size_t k = 0, used = 0; tenth > 0 && k < 10 && used < sizeof tenths; k++) {
        int w = snprintf(tenths + used, sizeof tenths - used, "%s%.4f", k ? ", " : "",
                         mean_ms(lat + k * tenth, tenth));
        used += w > 0 ? (size_t)w : 0;
    }
    qsort(lat, n, sizeof *lat, cmp_i64);
    printf("{\"count\": %zu, \"errors\": %zu, \"mean_ms\": %.4f, \"p50_ms\": %.4f, "
           "\"p99_ms\": %.4f, \"max_ms\": %.4f, \"first_tenth_ms\": %.4f, "
           "\"last_tenth_ms\": %.4f, \"tenths_ms\": [%s], \"seconds\": %.3f%s}\n",
           n, errors, mean, pct_ms(lat, n, 0.5), pct_ms(lat, n, 0.99), pct_ms(lat, n, 1.0), first,
           last, tenths, seconds, extra);
}

/* ---------------------------------------------------------------- fleet */

struct fleet {
    int port, count, strategies, connections;
    bool start;
    const char *prefix, *selector, *provider, *symbol;
    const char *pairs_path; /* --pairs: one line per id */
    int64_t t0;
    int64_t *lat;
    int64_t *sent;       /* when each pair's create was sent, since t0 */
    int64_t *create_lat; /* the create alone, of each pair */
    atomic_size_t errors;
};

struct slice {
    struct fleet *f;
    int first, step;
};

static void report_error(struct conn *c, const char *what, int status)
{
    fprintf(stderr, "bench_http: %s: status %d: %.300s\n", what, status,
            c->buf ? (strstr(c->buf, "\r\n\r\n") ? strstr(c->buf, "\r\n\r\n") + 4 : c->buf) : "");
}

static void *fleet_worker(void *arg)
{
    struct slice *s = arg;
    struct fleet *f = s->f;
    struct conn c = {f->port, -1, NULL, 0, 0};
    for (int i = s->first; i <= f->count; i += s->step) {
        char id[128], selector[256], path[256];
        snprintf(id, sizeof id, "%s-%d", f->prefix, i);
        snprintf(selector, sizeof selector, "%s", f->selector);
        char *at = f->strategies > 0 ? strstr(selector, "@S@") : NULL;
        if (at) {
            char rest[256];
            snprintf(rest, sizeof rest, "%s", at + 3);
            snprintf(at, sizeof selector - (size_t)(at - selector), "%03d%s", i % f->strategies,
                     rest);
        }
        json_t *spec = json_pack("{s:s, s:{s:s}, s:{s:{s:[s]}}}", "id", id, "strategy", "selector",
                                 selector, "scope", f->provider, "symbols", f->symbol);
        char *body = json_dumps(spec, JSON_COMPACT);
        json_decref(spec);
        int64_t t0 = now_ns();
        f->sent[i - 1] = t0 - f->t0;
        int status = body ? request(&c, "POST", "/strategy/instances", body, strlen(body)) : -1;
        free(body);
        if (status != 201 && status != 200) {
            report_error(&c, id, status);
            atomic_fetch_add(&f->errors, 1);
            f->lat[i - 1] = -1;
            continue;
        }
        f->create_lat[i - 1] = now_ns() - t0;
        if (f->start) {
            snprintf(path, sizeof path, "/strategy/instances/%s/start", id);
            status = request(&c, "POST", path, "", 0);
            if (status != 200 && status != 202) {
                report_error(&c, path, status);
                atomic_fetch_add(&f->errors, 1);
                f->lat[i - 1] = -1;
                continue;
            }
        }
        f->lat[i - 1] = now_ns() - t0;
    }
    conn_close(&c);
    free(c.buf);
    return NULL;
}

/* "id sent_us create_us pair_us" per line, -1 for a failed pair: where in
 * the run the slow pairs fall. */
static int write_pairs(const struct fleet *f)
{
    FILE *fp = fopen(f->pairs_path, "w");
    if (!fp)
        return -1;
    for (int i = 0; i < f->count; i++)
        fprintf(fp, "%d %lld %lld %lld\n", i + 1, (long long)(f->sent[i] / 1000),
                (long long)(f->create_lat[i] / 1000),
                (long long)(f->lat[i] < 0 ? -1 : f->lat[i] / 1000));
    return fclose(fp) == 0 ? 0 : -1;
}

static int cmd_fleet(struct fleet *f)
{
    if (f->count <= 0 || !f->prefix || !f->selector || !f->provider || !f->symbol)
        return 2;
    f->lat = calloc((size_t)f->count, sizeof *f->lat);
    f->create_lat = calloc((size_t)f->count, sizeof *f->create_lat);
    f->sent = calloc((size_t)f->count, sizeof *f->sent);
    int nthreads = f->connections > 0 ? f->connections : 1;
    pthread_t *threads = calloc((size_t)nthreads, sizeof *threads);
    struct slice *slices = calloc((size_t)nthreads, sizeof *slices);
    if (!f->lat || !f->create_lat || !f->sent || !threads || !slices)
        return 1;
    int64_t t0 = now_ns();
    f->t0 = t0;
    for (int t = 0; t < nthreads; t++) {
        slices[t] = (struct slice){f, t + 1, nthreads};
        pthread_create(&threads[t], NULL, fleet_worker, &slices[t]);
    }
    for (int t = 0; t < nthreads; t++)
        pthread_join(threads[t], NULL);
    double seconds = (double)(now_ns() - t0) / 1e9;
    if (f->pairs_path && write_pairs(f) != 0)
        fprintf(stderr, "bench_http: cannot write %s\n", f->pairs_path);
    size_t n = 0;
    int64_t created = 0;
    for (int i = 0; i < f->count; i++) {
        if (f->lat[i] >= 0) {
            created += f->create_lat[i];
            f->lat[n++] = f->lat[i];
        }
    }
    /* with --start 1: how the pair's mean splits between its two requests */
    char extra[128] = "";
    if (f->start && n > 0) {
        double create_ms = (double)created / (double)n / 1e6;
        snprintf(extra, sizeof extra, ", \"create_mean_ms\": %.4f, \"start_mean_ms\": %.4f",
                 create_ms, mean_ms(f->lat, n) - create_ms);
    }
    print_stats(f->lat, n, atomic_load(&f->errors), seconds, extra);
    free(f->lat);
    free(f->create_lat);
    free(f->sent);
    free(threads);
    free(slices);
    return atomic_load(&f->errors) ? 1 : 0;
}

/* --------------------------------------------------------------- upload */

static char *read_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return NULL;
    fseek(fp, 0, SEEK_END);
    long size = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    char *text = size >= 0 ? malloc((size_t)size + 1) : NULL;
    if (text && fread(text, 1, (size_t)size, fp) != (size_t)size) {
        free(text);
        text = NULL;
    }
    fclose(fp);
    if (text)
        text[size] = '\0';
    return text;
}

/* The template with every "@N@" replaced by n. */
static char *instantiate(const char *tmpl, int n)
{
    size_t len = strlen(tmpl), count = 0;
    for (const char *p = strstr(tmpl, "@N@"); p; p = strstr(p + 3, "@N@"))
        count++;
    char *out = malloc(len + count * 16 + 1);
    if (!out)
        return NULL;
    char *o = out;
    for (const char *p = tmpl;;) {
        const char *at = strstr(p, "@N@");
        if (!at) {
            strcpy(o, p);
            break;
        }
        memcpy(o, p, (size_t)(at - p));
        o += at - p;
        o += sprintf(o, "%d", n);
        p = at + 3;
    }
    return out;
}

static int cmd_upload(int port, const char *template_path, int count, int first)
{
    char *tmpl = read_file(template_path);
    int64_t *lat = calloc(count > 0 ? (size_t)count : 1, sizeof *lat);
    if (!tmpl || !lat || count <= 0)
        return 2;
    struct conn c = {port, -1, NULL, 0, 0};
    size_t n = 0, errors = 0;
    int64_t t0 = now_ns();
    for (int k = 0; k < count; k++) {
        char *source = instantiate(tmpl, first + k);
        json_t *doc = json_pack("{s:s}", "source", source ? source : "");
        char *body = json_dumps(doc, JSON_COMPACT);
        json_decref(doc);
        free(source);
        int64_t s0 = now_ns();
        int status = body ? request(&c, "POST", "/strategies/modules", body, strlen(body)) : -1;
        int64_t took = now_ns() - s0;
        free(body);
        if (status != 201) {
            report_error(&c, "upload", status);
            errors++;
            continue;
        }
        lat[n++] = took;
    }
    print_stats(lat, n, errors, (double)(now_ns() - t0) / 1e9, "");
    conn_close(&c);
    free(c.buf);
    free(lat);
    free(tmpl);
    return errors ? 1 : 0;
}

/* ----------------------------------------------------------------- main */

static const char *opt(int argc, char **argv, const char *name, const char *fallback)
{
    for (int i = 2; i + 1 < argc; i++) {
        if (strcmp(argv[i], name) == 0)
            return argv[i + 1];
    }
    return fallback;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_http fleet|upload --port P ...\n");
        return 2;
    }
    int port = atoi(opt(argc, argv, "--port", "0"));
    if (strcmp(argv[1], "fleet") == 0) {
        struct fleet f = {
            .port = port,
            .count = atoi(opt(argc, argv, "--count", "0")),
            .strategies = atoi(opt(argc, argv, "--strategies", "0")),
            .connections = atoi(opt(argc, argv, "--connections", "1")),
            .start = atoi(opt(argc, argv, "--start", "1")) != 0,
            .prefix = opt(argc, argv, "--prefix", NULL),
            .selector = opt(argc, argv, "--selector", NULL),
            .provider = opt(argc, argv, "--provider", NULL),
            .symbol = opt(argc, argv, "--symbol", NULL),
            .pairs_path = opt(argc, argv, "--pairs", NULL),
        };
        return cmd_fleet(&f);
    }
    if (strcmp(argv[1], "upload") == 0)
        return cmd_upload(port, opt(argc, argv, "--template", ""),
                          atoi(opt(argc, argv, "--count", "0")),
                          atoi(opt(argc, argv, "--first", "1")));
    fprintf(stderr, "bench_http: unknown command %s\n", argv[1]);
    return 2;
}
