#include "testutil.h"

#include "core/hash.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* ------------------------------------------------------------------ files */

char *tu_path(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *out = NULL;
    if (vasprintf(&out, fmt, ap) < 0)
        fail_msg("out of memory");
    va_end(ap);
    return out;
}

char *tu_tempdir(const char *prefix)
{
    const char *base = getenv("TMPDIR");
    char *tmpl = tu_path("%s/%s-XXXXXX", base && *base ? base : "/tmp", prefix);
    if (!mkdtemp(tmpl))
        fail_msg("mkdtemp %s: %s", tmpl, strerror(errno));
    return tmpl;
}

int tu_run(char **output, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *cmd = NULL;
    if (vasprintf(&cmd, fmt, ap) < 0)
        fail_msg("out of memory");
    va_end(ap);
    FILE *p = popen(cmd, "r");
    free(cmd);
    if (!p)
        return -1;
    char *buf = NULL;
    size_t len = 0, cap = 0;
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, p)) > 0) {
        if (len + n + 1 > cap) {
            cap = (len + n + 1) * 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        memcpy(buf + len, chunk, n);
        len += n;
    }
    if (buf)
        buf[len] = '\0';
    int status = pclose(p);
    if (output)
        *output = buf ? buf : strdup("");
    else
        free(buf);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

void tu_remove_tree(const char *path)
{
    if (!path || !*path || strcmp(path, "/") == 0)
        return;
    char *cmd = tu_path("chmod -R u+w '%s' 2>/dev/null; rm -rf '%s'", path, path);
    if (system(cmd) != 0)
        fprintf(stderr, "warning: could not remove %s\n", path);
    free(cmd);
}

void tu_write_file(const char *path, const char *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        fail_msg("cannot write %s: %s", path, strerror(errno));
    if (len && fwrite(data, 1, len, f) != len)
        fail_msg("short write to %s", path);
    fclose(f);
}

void tu_write_text(const char *path, const char *text)
{
    tu_write_file(path, text, strlen(text));
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    char *buf = NULL;
    size_t used = 0, cap = 0;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (used + n + 1 > cap) {
            cap = (used + n + 1) * 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        memcpy(buf + used, chunk, n);
        used += n;
    }
    fclose(f);
    if (!buf)
        buf = calloc(1, 1);
    buf[used] = '\0';
    if (len)
        *len = used;
    return buf;
}

/* The registry writer's spare holds bytes that mean nothing (the version
 * before last, or those of a write that failed): not part of the state.
 * Nor is the padding at the end of registry.json's lines, whose width
 * depends on the catalogue's history, not on what it says. Nor is the file
 * written ahead of a refused upload: its writer removes it, after the answer
 * when the answer came first (test_catalog_upload.c waits for that). */
#define NOT_STATE "'.registry.json.spare' ! -name '.upload.*'"

char *tu_tree_checksum(const char *dir)
{
    char *out = NULL;
    int rc =
        tu_run(&out,
               /* a folder's size counts its entries, the spare's too */
               "cd '%s' && find . ! -name " NOT_STATE " -printf '%%p %%m %%y\\n' | LC_ALL=C sort | "
               "sha256sum | cut -c1-64 && "
               "{ find . -type f ! -name " NOT_STATE " ! -name registry.json -print0 | "
               "LC_ALL=C sort -z | xargs -0 -r sha256sum; "
               "find . -type f -name registry.json | LC_ALL=C sort | "
               "while read -r f; do printf '%%s ' \"$f\"; sed 's/ *$//' \"$f\" | sha256sum; "
               "done; } | sha256sum | cut -c1-64",
               dir);
    if (rc != 0)
        fail_msg("checksum of %s failed", dir);
    return out;
}

char *tu_example_source(const char *name)
{
    char *path = tu_path("%s/examples/strategies/%s.js", STRATD_SOURCE_DIR, name);
    char *src = tu_read_file(path, NULL);
    if (!src)
        fail_msg("no example strategy %s", path);
    free(path);
    return src;
}

char *tu_module_source(const char *name, const char *tag, const char *extra_body)
{
    return tu_path("module.exports = {\n"
                   "  metadata: {\n"
                   "    name: '%s',\n"
                   "    displayName: 'Test %s',\n"
                   "%s%s%s"
                   "    events: ['Trade'],\n"
                   "  },\n"
                   "  create(env) {\n"
                   "    return {\n"
                   "      %s\n"
                   "    };\n"
                   "  },\n"
                   "};\n",
                   name, name, tag ? "    tag: '" : "", tag ? tag : "", tag ? "',\n" : "",
                   extra_body ? extra_body : "");
}

void tu_three_revisions_upload(struct tu_server *srv, const char *name,
                               struct tu_three_revisions *r)
{
    r->src[0] = tu_module_source(name, "v1", NULL);
    r->src[1] = tu_module_source(name, "v2", "onTrade() {},");
    r->src[2] = tu_module_source(name, "v3", "onTicker() {},");
    for (int i = 0; i < 3; i++) {
        tu_upload_expect(srv, r->src[i], NULL, 201, r->hex[i]);
        r->spelled[i] = tu_path("sha256:%s", r->hex[i]);
    }
}

void tu_three_revisions_free(struct tu_three_revisions *r)
{
    for (int i = 0; i < 3; i++) {
        free(r->src[i]);
        free(r->spelled[i]);
    }
}

char *tu_alternation_source(int alternatives, const char *tail, size_t *len)
{
    size_t cap = (size_t)alternatives * 3 + strlen(tail) + 64;
    char *src = malloc(cap);
    assert_non_null(src);
    size_t n = (size_t)snprintf(src, cap, "'use strict';\nconst words = /^(?:a");
    for (int i = 0; i < alternatives; i++)
        n += (size_t)snprintf(src + n, cap - n, "|w%d", i % 10);
    n += (size_t)snprintf(src + n, cap - n, ")$/;\n%s", tail);
    *len = n;
    return src;
}

/* ----------------------------------------------------------------- server */

static char *server_binary(void)
{
    const char *env = getenv("STRATD_TEST_BINARY");
    return strdup(env && *env ? env : STRATD_BINARY);
}

int tu_serve_check(char **output, const char *args)
{
    char *binary = server_binary();
    int rc = tu_run(output, "'%s' serve --check %s 2>&1", binary, args);
    free(binary);
    return rc;
}

/* Runs `stratd serve` expecting it to exit by itself; its status and
 * stderr. */
int tu_serve_to_exit(const char *strategies, const char *state_dir, char **err_text)
{
    char *root = tu_tempdir("stratd-exit");
    char *err_path = tu_path("%s/stderr", root);
    char *binary = server_binary();
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int null = open("/dev/null", O_WRONLY);
        if (fd < 0 || null < 0)
            _exit(126);
        dup2(fd, STDERR_FILENO);
        dup2(null, STDOUT_FILENO);
        execl(binary, binary, "serve", "--listen", "127.0.0.1:0", "--strategies", strategies,
              "--state", state_dir, (char *)NULL);
        _exit(127);
    }
    char what[4096 + 32];
    snprintf(what, sizeof what, "stratd serve --state %s", state_dir);
    int status = tu_wait_child(pid, 60, what);
    *err_text = tu_read_file(err_path, NULL);
    if (!*err_text)
        *err_text = strdup("");
    tu_remove_tree(root);
    free(root);
    free(err_path);
    free(binary);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void spawn_server(struct tu_server *srv, const struct tu_server_options *opts)
{
    int out_pipe[2];
    if (pipe(out_pipe) != 0)
        fail_msg("pipe: %s", strerror(errno));
    char *binary = server_binary();
    const char *argv[64];
    int argc = 0;
    argv[argc++] = binary;
    argv[argc++] = "serve";
    argv[argc++] = "--listen";
    argv[argc++] = "127.0.0.1:0";
    argv[argc++] = "--strategies";
    argv[argc++] = srv->strategies_dir;
    argv[argc++] = "--state";
    argv[argc++] = srv->state_dir;
    if (srv->config_path) {
        argv[argc++] = "--config";
        argv[argc++] = srv->config_path;
    }
    for (int i = 0; opts && opts->extra_args && opts->extra_args[i] && argc < 62; i++)
        argv[argc++] = opts->extra_args[i];
    argv[argc] = NULL;

    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        int log_fd = open(srv->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
        dup2(out_pipe[1], STDOUT_FILENO);
        if (log_fd >= 0)
            dup2(log_fd, STDERR_FILENO);
        close(out_pipe[0]);
        close(out_pipe[1]);
        execv(binary, (char *const *)argv);
        _exit(127);
    }
    free(binary);
    close(out_pipe[1]);
    srv->pid = pid;

    /* Wait for the one line that says the server accepts connections. */
    char line[512];
    size_t used = 0;
    time_t deadline = time(NULL) + 120;
    while (time(NULL) < deadline) {
        struct pollfd pfd = {out_pipe[0], POLLIN, 0};
        int ready = poll(&pfd, 1, 500);
        if (ready <= 0)
            continue;
        ssize_t n = read(out_pipe[0], line + used, sizeof line - 1 - used);
        if (n <= 0) {
            char *log = tu_server_log(srv);
            fail_msg("server exited before listening; log:\n%s", log);
        }
        used += (size_t)n;
        line[used] = '\0';
        char *nl = strchr(line, '\n');
        if (!nl)
            continue;
        *nl = '\0';
        const char *prefix = "listening on http";
        char *at = strstr(line, prefix);
        bool tls = at && strncmp(at + strlen(prefix), "s://", 4) == 0;
        if (!at || (!tls && strncmp(at + strlen(prefix), "://", 3) != 0))
            fail_msg("unexpected first line from server: %s", line);
        char *colon = strrchr(at, ':');
        srv->port = atoi(colon + 1);
        /* an IPv6 loopback listener is called on its own address; any
         * other (127.0.0.1, or "::", which takes IPv4 too) on 127.0.0.1 */
        const char *host = strstr(at, "://[::1]:") ? "[::1]" : "127.0.0.1";
        snprintf(srv->base_url, sizeof srv->base_url, "%s://%s:%d", tls ? "https" : "http", host,
                 srv->port);
        close(out_pipe[0]);
        return;
    }
    kill(pid, SIGKILL);
    fail_msg("server did not start listening within 120 s");
}

void tu_server_start(struct tu_server *srv, const struct tu_server_options *opts)
{
    memset(srv, 0, sizeof *srv);
    srv->root = tu_tempdir("stratd-test");
    srv->own_root = true;
    srv->strategies_dir = opts && opts->strategies_dir ? strdup(opts->strategies_dir)
                                                       : tu_path("%s/strategies", srv->root);
    srv->state_dir =
        opts && opts->state_dir ? strdup(opts->state_dir) : tu_path("%s/var", srv->root);
    srv->log_path = tu_path("%s/server.log", srv->root);
    if (opts && opts->config_yaml) {
        srv->config_path = tu_path("%s/config.yaml", srv->root);
        tu_write_text(srv->config_path, opts->config_yaml);
    }
    spawn_server(srv, opts);
    if (opts && opts->seed_examples) {
        char *dir = tu_path("%s/examples/strategies", STRATD_SOURCE_DIR);
        DIR *d = opendir(dir);
        assert_non_null(d);
        struct dirent *e;
        while ((e = readdir(d))) {
            size_t n = strlen(e->d_name);
            if (n < 4 || strcmp(e->d_name + n - 3, ".js") != 0)
                continue;
            char *path = tu_path("%s/%s", dir, e->d_name);
            char *src = tu_read_file(path, NULL);
            struct tu_response res;
            tu_upload(srv, &res, src, NULL);
            if (res.status != 201 && res.status != 200)
                fail_msg("seeding %s: HTTP %ld %s", e->d_name, res.status, res.body);
            tu_response_free(&res);
            free(src);
            free(path);
        }
        closedir(d);
        free(dir);
    }
}

void tu_server_restart(struct tu_server *srv, const struct tu_server_options *opts)
{
    if (srv->pid > 0)
        tu_server_stop(srv);
    spawn_server(srv, opts);
}

void tu_server_stop(struct tu_server *srv)
{
    if (srv->pid <= 0)
        return;
    kill(srv->pid, SIGTERM);
    pid_t pid = srv->pid;
    srv->pid = 0;
    int status = tu_wait_child(pid, 60, "the server after SIGTERM");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *log = tu_server_log(srv);
        size_t n = strlen(log);
        fail_msg("server did not exit cleanly (status %d); log tail:\n%s", status,
                 n > 6000 ? log + n - 6000 : log);
    }
}

int tu_wait_child(pid_t pid, int timeout_s, const char *what)
{
    int status = 0;
    time_t deadline = time(NULL) + timeout_s;
    while (waitpid(pid, &status, WNOHANG) != pid) {
        if (time(NULL) > deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            fail_msg("%s did not exit within %d s", what, timeout_s);
        }
        usleep(10000);
    }
    return status;
}

void tu_server_kill(struct tu_server *srv)
{
    if (srv->pid <= 0)
        return;
    kill(srv->pid, SIGKILL);
    waitpid(srv->pid, NULL, 0);
    srv->pid = 0;
}

void tu_server_cleanup(struct tu_server *srv)
{
    if (srv->pid > 0)
        tu_server_stop(srv);
    if (srv->own_root && !getenv("STRATD_TEST_KEEP"))
        tu_remove_tree(srv->root);
    free(srv->root);
    free(srv->strategies_dir);
    free(srv->state_dir);
    free(srv->log_path);
    free(srv->config_path);
    memset(srv, 0, sizeof *srv);
}

char *tu_server_log(const struct tu_server *srv)
{
    char *log = tu_read_file(srv->log_path, NULL);
    return log ? log : strdup("");
}

/* ------------------------------------------------------------------- HTTP */

struct grow {
    char *data;
    size_t len;
};

/* The certificate HTTPS requests trust (tu_trust_certificate); NULL: the
 * system's. */
static char *trusted_ca_file;

void tu_trust_certificate(const char *pem_path)
{
    free(trusted_ca_file);
    trusted_ca_file = pem_path ? strdup(pem_path) : NULL;
}

static size_t collect(char *ptr, size_t size, size_t nmemb, void *userdata)
{
    struct grow *g = userdata;
    size_t n = size * nmemb;
    char *data = realloc(g->data, g->len + n + 1);
    if (!data)
        return 0;
    memcpy(data + g->len, ptr, n);
    g->data = data;
    g->len += n;
    g->data[g->len] = '\0';
    return n;
}

void tu_http(struct tu_response *res, const char *method, const char *url, const char *body,
             size_t body_len, const char *const *extra_headers)
{
    memset(res, 0, sizeof *res);
    CURL *curl = curl_easy_init();
    assert_non_null(curl);
    struct grow body_buf = {NULL, 0}, head_buf = {NULL, 0};
    struct curl_slist *headers = NULL;
    bool has_content_type = false;
    for (int i = 0; extra_headers && extra_headers[i]; i++) {
        headers = curl_slist_append(headers, extra_headers[i]);
        if (strncasecmp(extra_headers[i], "Content-Type:", 13) == 0)
            has_content_type = true;
    }
    if (body && !has_content_type)
        headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (trusted_ca_file)
        curl_easy_setopt(curl, CURLOPT_CAINFO, trusted_ca_file);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body_buf);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &head_buf);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 120L);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    if (body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len);
    }
    CURLcode rc = curl_easy_perform(curl);
    if (rc != CURLE_OK)
        fail_msg("%s %s: %s", method, url, curl_easy_strerror(rc));
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &res->status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    res->body = body_buf.data ? body_buf.data : calloc(1, 1);
    res->len = body_buf.len;
    res->headers = head_buf.data ? head_buf.data : calloc(1, 1);
    if (res->len)
        res->json = json_loadb(res->body, res->len, 0, NULL);
}

static void request_path(struct tu_server *srv, struct tu_response *res, const char *method,
                         const char *fmt, va_list ap)
{
    char *path = NULL;
    if (vasprintf(&path, fmt, ap) < 0)
        fail_msg("out of memory");
    char *url = tu_path("%s%s", srv->base_url, path);
    tu_http(res, method, url, NULL, 0, NULL);
    free(url);
    free(path);
}

void tu_get(struct tu_server *srv, struct tu_response *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    request_path(srv, res, "GET", fmt, ap);
    va_end(ap);
}

void tu_delete(struct tu_server *srv, struct tu_response *res, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    request_path(srv, res, "DELETE", fmt, ap);
    va_end(ap);
}

void tu_send(struct tu_server *srv, struct tu_response *res, const char *method, const char *path,
             const char *json_body)
{
    char *url = tu_path("%s%s", srv->base_url, path);
    tu_http(res, method, url, json_body, json_body ? strlen(json_body) : 0, NULL);
    free(url);
}

void tu_send_json(struct tu_server *srv, struct tu_response *res, const char *method,
                  const char *path, json_t *body)
{
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    assert_non_null(text);
    tu_send(srv, res, method, path, text);
    free(text);
}

void tu_response_free(struct tu_response *res)
{
    free(res->body);
    free(res->headers);
    json_decref(res->json);
    memset(res, 0, sizeof *res);
}

char *tu_header(const struct tu_response *res, const char *name)
{
    size_t n = strlen(name);
    for (const char *line = res->headers; line && *line;) {
        const char *end = strstr(line, "\r\n");
        if (!end)
            end = line + strlen(line);
        if ((size_t)(end - line) > n && strncasecmp(line, name, n) == 0 && line[n] == ':') {
            const char *v = line + n + 1;
            while (*v == ' ')
                v++;
            return strndup(v, (size_t)(end - v));
        }
        line = *end ? end + 2 : end;
    }
    return NULL;
}

char *tu_escape(const char *segment)
{
    CURL *curl = curl_easy_init();
    char *tmp = curl_easy_escape(curl, segment, 0);
    char *out = strdup(tmp);
    curl_free(tmp);
    curl_easy_cleanup(curl);
    return out;
}

void tu_upload(struct tu_server *srv, struct tu_response *res, const char *source,
               const char *fields_json)
{
    json_t *body = fields_json ? json_loads(fields_json, 0, NULL) : json_object();
    if (!body)
        fail_msg("bad fields JSON in test: %s", fields_json);
    json_object_set_new(body, "source", json_string(source));
    tu_send_json(srv, res, "POST", "/strategies/modules", body);
}

/* ------------------------------------------------------------ assertions */

json_t *tu_jget(const json_t *root, const char *path)
{
    char *copy = strdup(path);
    const json_t *cur = root;
    char *save = NULL;
    for (char *part = strtok_r(copy, ".", &save); part && cur; part = strtok_r(NULL, ".", &save)) {
        if (json_is_array(cur)) {
            char *end;
            long idx = strtol(part, &end, 10);
            cur = *end ? NULL : json_array_get(cur, (size_t)idx);
        } else {
            cur = json_object_get(cur, part);
        }
    }
    free(copy);
    return (json_t *)cur;
}

const char *tu_jstr(const json_t *root, const char *path)
{
    json_t *v = tu_jget(root, path);
    if (!json_is_string(v)) {
        char *dump = root ? json_dumps(root, JSON_COMPACT) : NULL;
        fail_msg("no string at '%s' in %s", path, dump ? dump : "(null)");
    }
    return json_string_value(v);
}

long long tu_jint(const json_t *root, const char *path)
{
    json_t *v = tu_jget(root, path);
    if (!json_is_integer(v)) {
        char *dump = root ? json_dumps(root, JSON_COMPACT) : NULL;
        fail_msg("no integer at '%s' in %s", path, dump ? dump : "(null)");
    }
    return json_integer_value(v);
}

/* ---------------------------------------------------------- raw requests */

struct body_reader {
    const char *data;
    size_t len;
    size_t at;
};

static size_t read_body(char *buffer, size_t size, size_t nitems, void *userdata)
{
    struct body_reader *r = userdata;
    size_t n = size * nitems;
    /* Small pieces, so that a chunked body really arrives in many chunks. */
    if (n > 16384)
        n = 16384;
    if (n > r->len - r->at)
        n = r->len - r->at;
    memcpy(buffer, r->data + r->at, n);
    r->at += n;
    return n;
}

int tu_http_try(struct tu_response *res, const char *method, const char *url,
                const struct tu_request_options *opts)
{
    static const struct tu_request_options none = {0};
    if (!opts)
        opts = &none;
    memset(res, 0, sizeof *res);
    CURL *curl = curl_easy_init();
    if (!curl)
        return -1;
    struct grow body_buf = {NULL, 0}, head_buf = {NULL, 0};
    struct curl_slist *headers = NULL;
    bool has_content_type = false;
    for (int i = 0; opts->headers && opts->headers[i]; i++) {
        headers = curl_slist_append(headers, opts->headers[i]);
        if (strncasecmp(opts->headers[i], "Content-Type:", 13) == 0)
            has_content_type = true;
    }
    if (opts->body && !has_content_type)
        headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    struct body_reader reader = {opts->body, opts->body_len, 0};
    long timeout = opts->timeout_s > 0 ? opts->timeout_s : 120L;
    curl_easy_setopt(curl, CURLOPT_URL, url);
    if (trusted_ca_file)
        curl_easy_setopt(curl, CURLOPT_CAINFO, trusted_ca_file);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, &body_buf);
    curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_HEADERDATA, &head_buf);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, timeout);
    curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT, timeout);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_PATH_AS_IS, opts->path_as_is ? 1L : 0L);
    if (strcmp(method, "HEAD") == 0)
        curl_easy_setopt(curl, CURLOPT_NOBODY, 1L);
    if (opts->body && opts->chunked) {
        headers = curl_slist_append(headers, "Transfer-Encoding: chunked");
        curl_easy_setopt(curl, CURLOPT_POST, 1L);
        curl_easy_setopt(curl, CURLOPT_READFUNCTION, read_body);
        curl_easy_setopt(curl, CURLOPT_READDATA, &reader);
    } else if (opts->body) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, opts->body);
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)opts->body_len);
    }
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    CURLcode rc = curl_easy_perform(curl);
    if (rc == CURLE_OK)
        curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &res->status);
    curl_slist_free_all(headers);
    curl_easy_cleanup(curl);
    if (rc != CURLE_OK) {
        free(body_buf.data);
        free(head_buf.data);
        memset(res, 0, sizeof *res);
        return -1;
    }
    res->body = body_buf.data ? body_buf.data : calloc(1, 1);
    res->len = body_buf.len;
    res->headers = head_buf.data ? head_buf.data : calloc(1, 1);
    if (res->len)
        res->json = json_loadb(res->body, res->len, 0, NULL);
    return 0;
}

void tu_request(struct tu_server *srv, struct tu_response *res, const char *method,
                const char *path, const struct tu_request_options *opts)
{
    struct tu_request_options o = {0};
    if (opts)
        o = *opts;
    o.path_as_is = true;
    char *url = tu_path("%s%s", srv->base_url, path);
    if (tu_http_try(res, method, url, &o) != 0)
        fail_msg("%s %s: no response (transport error)", method, url);
    free(url);
}

/* ---------------------------------------------------------------- hashes */

char *tu_gunzip(const void *data, size_t len, size_t *out_len)
{
    z_stream z;
    memset(&z, 0, sizeof z);
    if (inflateInit2(&z, 15 + 16) != Z_OK) /* gzip wrapper only */
        return NULL;
    size_t cap = len * 4 + 64, used = 0;
    char *out = malloc(cap);
    z.next_in = (Bytef *)(uintptr_t)data;
    z.avail_in = (uInt)len;
    int rc = Z_OK;
    while (out && rc == Z_OK) {
        if (cap - used < 2) {
            char *grown = realloc(out, cap * 2);
            if (!grown) {
                free(out);
                out = NULL;
                break;
            }
            out = grown;
            cap *= 2;
        }
        z.next_out = (Bytef *)out + used;
        z.avail_out = (uInt)(cap - used - 1);
        rc = inflate(&z, Z_NO_FLUSH);
        used = (size_t)z.total_out;
    }
    /* one member, ending exactly where the data does */
    bool whole = rc == Z_STREAM_END && z.avail_in == 0;
    inflateEnd(&z);
    if (!out || !whole) {
        free(out);
        return NULL;
    }
    out[used] = '\0';
    *out_len = used;
    return out;
}

void tu_sha256_hex(const void *data, size_t len, char hex[65])
{
    hash_sha256_hex(data, len, hex);
}

/* -------------------------------------------------------- error bodies */

void tu_check_error(const struct tu_response *res, long expected, const char *file, int line)
{
    int shown = (int)(res->len > 2000 ? 2000 : res->len);
    const char *body = res->body ? res->body : "";
    if (res->status != expected)
        fail_msg("%s:%d: expected HTTP %ld, got %ld: %.*s", file, line, expected, res->status,
                 shown, body);
    if (!json_is_object(res->json))
        fail_msg("%s:%d: HTTP %ld error body is not a JSON object: %.*s", file, line, res->status,
                 shown, body);
    const json_t *error = json_object_get(res->json, "error");
    if (!json_is_string(error) || json_string_length(error) == 0)
        fail_msg("%s:%d: HTTP %ld error body has no non-empty \"error\" string: %.*s", file, line,
                 res->status, shown, body);
    if (!json_is_object(json_object_get(res->json, "details")))
        fail_msg("%s:%d: HTTP %ld error body has no \"details\" object: %.*s", file, line,
                 res->status, shown, body);
    char *type = tu_header(res, "Content-Type");
    if (!type || strncmp(type, "application/json", 16) != 0)
        fail_msg("%s:%d: HTTP %ld error has Content-Type '%s', expected application/json", file,
                 line, res->status, type ? type : "(none)");
    free(type);
}

/* ------------------------------------------------- the catalogue on disk */

json_t *tu_registry_disk(const struct tu_server *srv)
{
    char *path = tu_path("%s/registry.json", srv->strategies_dir);
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    json_t *doc = NULL;
    if (text) {
        json_error_t jerr;
        doc = json_loadb(text, len, 0, &jerr);
        if (!doc)
            fail_msg("%s is not JSON (line %d, column %d: %s):\n%s", path, jerr.line, jerr.column,
                     jerr.text, text);
    }
    free(text);
    free(path);
    return doc;
}

static bool all_hex_lower(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return true;
}

static bool spelled_hash(const char *s)
{
    return s && strlen(s) == 71 && strncmp(s, "sha256:", 7) == 0 && all_hex_lower(s + 7, 64);
}

static bool strategy_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 64 || !((s[0] >= 'a' && s[0] <= 'z') || (s[0] >= '0' && s[0] <= '9')))
        return false;
    for (size_t i = 1; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool tag_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
        if (!alnum && (i == 0 || (c != '.' && c != '_' && c != '-')))
            return false;
    }
    return true;
}

json_t *tu_assert_registry_sound(const char *strategies_dir)
{
    char *path = tu_path("%s/registry.json", strategies_dir);
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    if (!text)
        fail_msg("%s does not exist", path);
    json_error_t jerr;
    json_t *doc = json_loadb(text, len, 0, &jerr);
    if (!doc)
        fail_msg("%s is not valid JSON (line %d, column %d: %s); %zu bytes:\n%.4000s", path,
                 jerr.line, jerr.column, jerr.text, len, text);
    if (!json_is_object(doc))
        fail_msg("%s: the top level is not an object:\n%.4000s", path, text);
    const char *name;
    json_t *entry;
    json_object_foreach(doc, name, entry)
    {
        if (!strategy_name_ok(name))
            fail_msg("%s: '%s' is not a valid strategy name", path, name);
        json_t *tags = json_object_get(entry, "tags");
        json_t *hashes = json_object_get(entry, "hashes");
        if (!json_is_object(entry) || json_object_size(entry) != 2 || !json_is_object(tags) ||
            !json_is_object(hashes))
            fail_msg("%s: strategy '%s' is not {\"tags\": {...}, \"hashes\": {...}}:\n%.4000s",
                     path, name, text);
        if (json_object_size(hashes) == 0)
            fail_msg("%s: strategy '%s' has no revision", path, name);
        if (!json_is_string(json_object_get(tags, "latest")))
            fail_msg("%s: strategy '%s' has no 'latest' tag", path, name);
        const char *tag;
        json_t *target;
        json_object_foreach(tags, tag, target)
        {
            const char *h = json_string_value(target);
            if (!tag_ok(tag))
                fail_msg("%s: strategy '%s' has the malformed tag '%s'", path, name, tag);
            if (!spelled_hash(h))
                fail_msg("%s: tag %s:%s is not sha256:<64 hex>: %s", path, name, tag,
                         h ? h : "(not a string)");
            if (!json_object_get(hashes, h))
                fail_msg("%s: tag %s:%s points at %s, which is not in hashes", path, name, tag, h);
        }
        const char *spelled;
        json_t *rev;
        json_object_foreach(hashes, spelled, rev)
        {
            if (!spelled_hash(spelled))
                fail_msg("%s: strategy '%s' has the malformed hash key '%s'", path, name, spelled);
            const char *rev_tag = json_string_value(json_object_get(rev, "tag"));
            const char *rel = json_string_value(json_object_get(rev, "path"));
            if (!json_is_object(rev) || !rev_tag || !rel)
                fail_msg("%s: %s@%s is not {\"tag\": ..., \"path\": ...}", path, name, spelled);
            if (!tag_ok(rev_tag))
                fail_msg("%s: %s@%s has the malformed primary tag '%s'", path, name, spelled,
                         rev_tag);
            char *want = tu_path("%s/%s/%s.js", name, spelled + 7, name);
            if (strcmp(rel, want) != 0)
                fail_msg("%s: %s@%s has path '%s', expected '%s'", path, name, spelled, rel, want);
            free(want);
            char *file = tu_path("%s/%s", strategies_dir, rel);
            size_t flen = 0;
            char *bytes = tu_read_file(file, &flen);
            if (!bytes)
                fail_msg("%s: %s@%s names %s, which does not exist", path, name, spelled, file);
            char hex[65];
            tu_sha256_hex(bytes, flen, hex);
            if (strcmp(hex, spelled + 7) != 0)
                fail_msg("%s: %s holds bytes hashing to %s, not %s", path, file, hex, spelled);
            free(bytes);
            free(file);
        }
    }
    free(text);
    free(path);
    return doc;
}

static char *get_canonical(struct tu_server *srv, const char *path)
{
    struct tu_response res;
    tu_get(srv, &res, "%s", path);
    if (res.status != 200 || !res.json)
        fail_msg("GET %s: HTTP %ld %.*s", path, res.status, (int)(res.len > 2000 ? 2000 : res.len),
                 res.body);
    char *text = json_dumps(res.json, JSON_COMPACT | JSON_SORT_KEYS);
    tu_response_free(&res);
    assert_non_null(text);
    return text;
}

void tu_catalog_capture(struct tu_server *srv, struct tu_catalog_state *st)
{
    char *path = tu_path("%s/registry.json", srv->strategies_dir);
    st->registry = tu_read_file(path, NULL);
    if (!st->registry)
        st->registry = strdup("");
    free(path);
    st->tree = tu_tree_checksum(srv->strategies_dir);
    st->listing = get_canonical(srv, "/strategies/modules");
    st->export_doc = get_canonical(srv, "/strategies/registry");
}

void tu_catalog_expect_same(struct tu_server *srv, const struct tu_catalog_state *before,
                            const char *what)
{
    struct tu_catalog_state now;
    tu_catalog_capture(srv, &now);
    if (strcmp(now.registry, before->registry) != 0)
        fail_msg("after %s, registry.json changed:\nbefore: %.3000s\nafter:  %.3000s", what,
                 before->registry, now.registry);
    if (strcmp(now.tree, before->tree) != 0) {
        char *listing = NULL;
        tu_run(&listing, "cd '%s' && find . | LC_ALL=C sort", srv->strategies_dir);
        fail_msg("after %s, the strategies directory changed; it now holds:\n%s", what,
                 listing ? listing : "");
    }
    if (strcmp(now.listing, before->listing) != 0)
        fail_msg("after %s, GET /strategies/modules changed:\nbefore: %.3000s\nafter:  %.3000s",
                 what, before->listing, now.listing);
    if (strcmp(now.export_doc, before->export_doc) != 0)
        fail_msg("after %s, GET /strategies/registry changed:\nbefore: %.3000s\nafter:  %.3000s",
                 what, before->export_doc, now.export_doc);
    tu_catalog_state_free(&now);
}

void tu_catalog_state_free(struct tu_catalog_state *st)
{
    free(st->registry);
    free(st->tree);
    free(st->listing);
    free(st->export_doc);
    memset(st, 0, sizeof *st);
}

json_t *tu_audit_entries(const struct tu_server *srv)
{
    char *path = tu_path("%s/audit.log", srv->state_dir);
    char *text = tu_read_file(path, NULL);
    json_t *out = json_array();
    int line = 0;
    for (char *p = text; p && *p;) {
        char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        line++;
        if (n > 0) {
            json_error_t jerr;
            json_t *entry = json_loadb(p, n, 0, &jerr);
            if (!json_is_object(entry))
                fail_msg("%s line %d is not a JSON object: %.*s", path, line, (int)n, p);
            json_array_append_new(out, entry);
        }
        p += n;
        if (*p == '\n')
            p++;
    }
    free(text);
    free(path);
    return out;
}

void tu_upload_expect(struct tu_server *srv, const char *source, const char *fields_json,
                      long status, char hex[65])
{
    struct tu_response res;
    tu_upload(srv, &res, source, fields_json);
    if (res.status != status)
        fail_msg("upload (fields %s): expected HTTP %ld, got %ld: %.*s",
                 fields_json ? fields_json : "{}", status, res.status,
                 (int)(res.len > 2000 ? 2000 : res.len), res.body);
    if (hex) {
        const char *spelled = tu_jstr(res.json, "module.hash");
        if (!spelled_hash(spelled))
            fail_msg("upload answered module.hash '%s', expected sha256:<64 hex>", spelled);
        memcpy(hex, spelled + 7, 65);
    }
    tu_response_free(&res);
}

json_t *tu_get_json(struct tu_server *srv, long status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *path = NULL;
    if (vasprintf(&path, fmt, ap) < 0)
        fail_msg("out of memory");
    va_end(ap);
    struct tu_response res;
    tu_get(srv, &res, "%s", path);
    if (res.status != status || !res.json)
        fail_msg("GET %s: expected HTTP %ld with a JSON body, got %ld: %.*s", path, status,
                 res.status, (int)(res.len > 2000 ? 2000 : res.len), res.body);
    json_t *out = json_incref(res.json);
    tu_response_free(&res);
    free(path);
    return out;
}

int tu_server_setup(void **state)
{
    struct tu_server *srv = calloc(1, sizeof *srv);
    *state = srv;
    return srv ? 0 : -1;
}

int tu_server_teardown(void **state)
{
    struct tu_server *srv = *state;
    if (srv) {
        tu_server_kill(srv);
        tu_server_cleanup(srv);
        free(srv);
    }
    *state = NULL;
    return 0;
}

/* ------------------------------------- instances, providers and the log */

char *tu_strategy_source(const char *name, const char *events, const char *config,
                         const char *setup, const char *handlers)
{
    return tu_path("module.exports = {\n"
                   "  metadata: {\n"
                   "    name: '%s',\n"
                   "    displayName: 'Test %s',\n"
                   "    events: %s,\n"
                   "    config: %s,\n"
                   "  },\n"
                   "  create(env) {\n"
                   "    const h = env.helpers;\n"
                   "    const rt = env.runtime;\n"
                   "    %s\n"
                   "    return {\n"
                   "      %s\n"
                   "    };\n"
                   "  },\n"
                   "};\n",
                   name, name, events ? events : "['Trade']", config ? config : "[]",
                   setup ? setup : "", handlers ? handlers : "");
}

char *tu_upload_hash(struct tu_server *srv, const char *source)
{
    char hex[65];
    tu_upload_expect(srv, source, NULL, 201, hex);
    return tu_path("sha256:%s", hex);
}

json_t *tu_call(struct tu_server *srv, const char *method, const char *path, long status,
                const char *body)
{
    struct tu_response res;
    tu_send(srv, &res, method, path, body);
    if (res.status != status)
        fail_msg("%s %s: expected HTTP %ld, got %ld: %.*s", method, path, status, res.status,
                 (int)(res.len > 3000 ? 3000 : res.len), res.body);
    if (status >= 400)
        tu_assert_error(&res, status);
    json_t *out = json_incref(res.json);
    tu_response_free(&res);
    return out;
}

json_t *tu_callf(struct tu_server *srv, const char *method, const char *path, long status,
                 const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *body = NULL;
    if (vasprintf(&body, fmt, ap) < 0)
        fail_msg("out of memory");
    va_end(ap);
    json_t *out = tu_call(srv, method, path, status, body);
    free(body);
    return out;
}

json_t *tu_instance_create(struct tu_server *srv, const char *id, const char *selector,
                           const char *config, const char *provider, const char *symbols)
{
    return tu_callf(srv, "POST", "/strategy/instances", 201,
                    "{\"id\": \"%s\", \"strategy\": {\"selector\": \"%s\", \"config\": %s}, "
                    "\"scope\": {\"%s\": {\"symbols\": %s}}}",
                    id, selector, config ? config : "{}", provider ? provider : "sim",
                    symbols ? symbols : "[\"BTC-USDT\"]");
}

static void instance_action(struct tu_server *srv, const char *id, const char *action)
{
    char *path = tu_path("/strategy/instances/%s/%s", id, action);
    json_t *body = tu_call(srv, "POST", path, 200, "{}");
    const char *status = strcmp(action, "start") == 0 ? "running" : "stopped";
    if (!json_is_object(body) || !json_is_string(json_object_get(body, "id")) ||
        strcmp(tu_jstr(body, "id"), id) != 0 || strcmp(tu_jstr(body, "status"), status) != 0 ||
        strcmp(tu_jstr(body, "action"), action) != 0) {
        char *dump = body ? json_dumps(body, JSON_COMPACT) : NULL;
        fail_msg("POST %s answered %s, expected {id: %s, status: %s, action: %s}", path,
                 dump ? dump : "(not JSON)", id, status, action);
    }
    json_decref(body);
    free(path);
}

void tu_instance_start(struct tu_server *srv, const char *id)
{
    instance_action(srv, id, "start");
}

void tu_instance_stop(struct tu_server *srv, const char *id)
{
    instance_action(srv, id, "stop");
}

json_t *tu_instance_get(struct tu_server *srv, const char *id)
{
    return tu_get_json(srv, 200, "/strategy/instances/%s", id);
}

void tu_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

json_t *tu_instance_wait(struct tu_server *srv, const char *id, tu_snapshot_pred pred,
                         const void *arg, int timeout_s, const char *what)
{
    double deadline = now_s() + timeout_s;
    for (;;) {
        json_t *snap = tu_instance_get(srv, id);
        if (pred(snap, arg))
            return snap;
        if (now_s() > deadline) {
            char *dump = json_dumps(snap, JSON_COMPACT);
            fail_msg("instance %s: %s did not happen within %d s; last snapshot: %s", id, what,
                     timeout_s, dump ? dump : "");
        }
        json_decref(snap);
        tu_sleep_ms(20);
    }
}

static bool has_events(const json_t *snap, const void *arg)
{
    json_t *n = tu_jget(snap, "counters.eventsDelivered");
    return json_is_integer(n) && json_integer_value(n) >= *(const long long *)arg;
}

json_t *tu_instance_wait_events(struct tu_server *srv, const char *id, long long min, int timeout_s)
{
    char what[64];
    snprintf(what, sizeof what, "delivering %lld events", min);
    return tu_instance_wait(srv, id, has_events, &min, timeout_s, what);
}

static bool is_stopped(const json_t *snap, const void *arg)
{
    (void)arg;
    return json_is_false(json_object_get(snap, "running"));
}

json_t *tu_instance_wait_stopped(struct tu_server *srv, const char *id, int timeout_s)
{
    return tu_instance_wait(srv, id, is_stopped, NULL, timeout_s, "stopping");
}

json_t *tu_wait_list(struct tu_server *srv, const char *path, const char *list, size_t n,
                     int timeout_s)
{
    double deadline = now_s() + timeout_s;
    for (;;) {
        json_t *body = tu_get_json(srv, 200, "%s", path);
        if (json_array_size(tu_jget(body, list)) >= n)
            return body;
        if (now_s() > deadline) {
            char *dump = json_dumps(body, JSON_COMPACT);
            fail_msg("GET %s: '%s' did not reach %zu items within %d s; last: %.3000s", path, list,
                     n, timeout_s, dump ? dump : "");
        }
        json_decref(body);
        tu_sleep_ms(20);
    }
}

json_t *tu_log_entries(const struct tu_server *srv, const char *instance)
{
    char *text = tu_server_log(srv);
    json_t *out = json_array();
    for (char *p = text; *p;) {
        char *nl = strchr(p, '\n');
        size_t n = nl ? (size_t)(nl - p) : strlen(p);
        if (!nl)
            break; /* a line still being written */
        json_t *entry = n ? json_loadb(p, n, 0, NULL) : NULL;
        const char *owner = json_string_value(json_object_get(entry, "instance"));
        if (json_is_object(entry) && (!instance || (owner && strcmp(owner, instance) == 0)))
            json_array_append(out, entry);
        json_decref(entry);
        p = nl + 1;
    }
    free(text);
    return out;
}

json_t *tu_log_values(const struct tu_server *srv, const char *instance, const char *tag)
{
    json_t *entries = tu_log_entries(srv, instance);
    json_t *out = json_array();
    size_t tlen = strlen(tag);
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *msg = json_string_value(json_object_get(e, "msg"));
        if (!msg || strncmp(msg, tag, tlen) != 0 || msg[tlen] != ' ' ||
            strcmp(json_string_value(json_object_get(e, "component")), "strategy") != 0)
            continue;
        json_error_t jerr;
        json_t *v = json_loads(msg + tlen + 1, JSON_DECODE_ANY, &jerr);
        if (!v)
            fail_msg("log line of %s tagged '%s' does not carry JSON: %s", instance, tag, msg);
        json_array_append_new(out, v);
    }
    json_decref(entries);
    return out;
}

json_t *tu_wait_log_values(struct tu_server *srv, const char *instance, const char *tag, size_t n,
                           int timeout_s)
{
    double deadline = now_s() + timeout_s;
    for (;;) {
        json_t *values = tu_log_values(srv, instance, tag);
        if (json_array_size(values) >= n)
            return values;
        if (now_s() > deadline) {
            char *log = tu_server_log(srv);
            size_t len = strlen(log);
            fail_msg("instance %s logged %zu '%s' values within %d s, expected %zu; log tail:\n%s",
                     instance, json_array_size(values), tag, timeout_s, n,
                     len > 4000 ? log + len - 4000 : log);
        }
        json_decref(values);
        tu_sleep_ms(20);
    }
}

json_t *tu_wait_log(struct tu_server *srv, const char *instance, const char *prefix, int timeout_s)
{
    double deadline = now_s() + timeout_s;
    size_t plen = strlen(prefix);
    for (;;) {
        json_t *entries = tu_log_entries(srv, instance);
        size_t i;
        json_t *e;
        json_array_foreach(entries, i, e)
        {
            const char *msg = json_string_value(json_object_get(e, "msg"));
            if (msg && strncmp(msg, prefix, plen) == 0) {
                json_incref(e);
                json_decref(entries);
                return e;
            }
        }
        json_decref(entries);
        if (now_s() > deadline) {
            char *log = tu_server_log(srv);
            size_t len = strlen(log);
            fail_msg("no log line of %s starting with '%s' within %d s; log tail:\n%s",
                     instance ? instance : "any instance", prefix, timeout_s,
                     len > 4000 ? log + len - 4000 : log);
        }
        tu_sleep_ms(20);
    }
}

double tu_metric(struct tu_server *srv, const char *sample)
{
    struct tu_response res;
    tu_get(srv, &res, "/metrics");
    tu_assert_status(&res, 200);
    size_t n = strlen(sample);
    double value = -1;
    for (const char *line = res.body; line && *line;) {
        const char *nl = strchr(line, '\n');
        if (strncmp(line, sample, n) == 0 && line[n] == ' ') {
            value = strtod(line + n + 1, NULL);
            break;
        }
        line = nl ? nl + 1 : NULL;
    }
    tu_response_free(&res);
    return value;
}

void tu_wait_metric(struct tu_server *srv, const char *sample, double value)
{
    for (int tries = 0; tu_metric(srv, sample) != value; tries++) {
        if (tries > TU_WAIT_S * 50)
            fail_msg("%s never reached %g", sample, value);
        tu_sleep_ms(20);
    }
}

/* ------------------------------ refresh, metrics and waits (operations) */

json_t *tu_ops_action(struct tu_server *srv, const char *id, const char *action, long status)
{
    char *path = tu_path("/strategy/instances/%s/%s", id, action);
    struct tu_response res;
    tu_send(srv, &res, "POST", path, NULL);
    if (status >= 400)
        tu_assert_error(&res, status);
    else if (res.status != status || !res.json)
        fail_msg("POST %s: expected HTTP %ld with a JSON body, got %ld: %s", path, status,
                 res.status, res.body);
    json_t *out = json_incref(res.json);
    tu_response_free(&res);
    free(path);
    return out;
}

json_t *tu_ops_refresh(struct tu_server *srv, const char *body, long status)
{
    struct tu_response res;
    tu_send(srv, &res, "POST", "/strategies/refresh", body);
    if (res.status != status || !res.json)
        fail_msg("POST /strategies/refresh %s: expected HTTP %ld with a JSON body, got %ld: %s",
                 body ? body : "(no body)", status, res.status, res.body);
    json_t *out = json_incref(res.json);
    tu_response_free(&res);
    return out;
}

const json_t *tu_ops_refresh_result(const json_t *response, const char *id)
{
    size_t i;
    const json_t *r;
    json_array_foreach(json_object_get(response, "results"), i, r)
    {
        const json_t *ids = json_object_get(r, "instances");
        const char *first = json_string_value(json_array_get(ids, 0));
        if (json_array_size(ids) == 1 && first && strcmp(first, id) == 0)
            return r;
    }
    return NULL;
}

char *tu_ops_metrics(struct tu_server *srv)
{
    struct tu_response res;
    tu_get(srv, &res, "/metrics");
    if (res.status != 200)
        fail_msg("GET /metrics: HTTP %ld %s", res.status, res.body);
    char *type = tu_header(&res, "Content-Type");
    if (!type || strncmp(type, "text/plain", 10) != 0)
        fail_msg("GET /metrics: Content-Type '%s', expected text/plain", type ? type : "(none)");
    free(type);
    char *text = strdup(res.body);
    tu_response_free(&res);
    return text;
}

/* One sample line: its name, its labels unescaped, its value. */
struct ops_sample {
    char name[256];
    char *keys[16];
    char *values[16];
    size_t n;
    double value;
};

static void ops_sample_free(struct ops_sample *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->keys[i]);
        free(s->values[i]);
    }
    s->n = 0;
}

static bool ops_parse_sample(const char *line, size_t len, struct ops_sample *s)
{
    memset(s, 0, sizeof *s);
    size_t i = 0;
    while (i < len && line[i] != '{' && line[i] != ' ')
        i++;
    if (i == 0 || i >= sizeof s->name)
        return false;
    memcpy(s->name, line, i);
    if (i < len && line[i] == '{') {
        i++;
        while (i < len && line[i] != '}') {
            size_t k = i;
            while (i < len && line[i] != '=')
                i++;
            if (i + 1 >= len || line[i + 1] != '"' || s->n == 16)
                return false;
            char *key = strndup(line + k, i - k);
            i += 2;
            char *value = malloc(len + 1);
            size_t v = 0;
            while (i < len && line[i] != '"') {
                if (line[i] == '\\' && i + 1 < len) {
                    i++;
                    value[v++] = line[i] == 'n' ? '\n' : line[i];
                } else {
                    value[v++] = line[i];
                }
                i++;
            }
            value[v] = '\0';
            s->keys[s->n] = key;
            s->values[s->n] = value;
            s->n++;
            i++; /* closing quote */
            if (i < len && line[i] == ',')
                i++;
        }
        i++; /* closing brace */
    }
    while (i < len && line[i] == ' ')
        i++;
    char *number = strndup(line + i, len - i);
    char *end = NULL;
    s->value = strtod(number, &end);
    bool ok = end != number;
    free(number);
    return ok;
}

static bool ops_sample_has(const struct ops_sample *s, const char *key, const char *value)
{
    for (size_t i = 0; i < s->n; i++) {
        if (strcmp(s->keys[i], key) == 0)
            return strcmp(s->values[i], value) == 0;
    }
    return false;
}

/* Sums and counts the matching samples. */
static int ops_metric_scan(const char *text, const char *name, va_list ap, double *sum)
{
    const char *pairs[32];
    size_t npairs = 0;
    for (const char *k; (k = va_arg(ap, const char *)) != NULL && npairs < 30;) {
        pairs[npairs++] = k;
        pairs[npairs++] = va_arg(ap, const char *);
    }
    int matches = 0;
    *sum = 0;
    for (const char *p = text; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        struct ops_sample s = {.n = 0};
        if (len && p[0] != '#' && ops_parse_sample(p, len, &s)) {
            bool ok = strcmp(s.name, name) == 0;
            for (size_t i = 0; ok && i < npairs; i += 2)
                ok = ops_sample_has(&s, pairs[i], pairs[i + 1]);
            if (ok) {
                matches++;
                *sum += s.value;
            }
        }
        ops_sample_free(&s);
        p = nl ? nl + 1 : p + len;
    }
    return matches;
}

double tu_ops_metric(const char *text, const char *name, ...)
{
    va_list ap;
    va_start(ap, name);
    double sum;
    int n = ops_metric_scan(text, name, ap, &sum);
    va_end(ap);
    return n ? sum : NAN;
}

int tu_ops_metric_count(const char *text, const char *name, ...)
{
    va_list ap;
    va_start(ap, name);
    double sum;
    int n = ops_metric_scan(text, name, ap, &sum);
    va_end(ap);
    return n;
}

int tu_ops_promtool(const char *text, char **output)
{
    char *dir = tu_tempdir("stratd-promtool");
    char *path = tu_path("%s/metrics.txt", dir);
    tu_write_text(path, text);
    int rc = tu_run(output, "promtool check metrics < '%s' 2>&1", path);
    tu_remove_tree(dir);
    free(path);
    free(dir);
    return rc;
}

bool tu_ops_wait_until(bool (*until)(void *ctx), void *ctx, int seconds)
{
    time_t deadline = time(NULL) + seconds;
    for (;;) {
        if (until(ctx))
            return true;
        if (time(NULL) > deadline)
            return until(ctx);
        tu_sleep_ms(20);
    }
}

void tu_set_kill_switch(struct tu_server *srv, bool on)
{
    json_t *doc = tu_get_json(srv, 200, "/risk/limits");
    json_t *limits = json_incref(json_object_get(doc, "limits"));
    json_decref(doc);
    json_object_set_new(limits, "killSwitchEnabled", json_boolean(on));
    char *body = json_dumps(limits, JSON_COMPACT);
    json_decref(limits);
    json_decref(tu_call(srv, "PUT", "/risk/limits", 200, body));
    free(body);
}

json_t *tu_log_lines(const struct tu_server *srv, const char *instance, const char *prefix)
{
    json_t *entries = tu_log_entries(srv, instance);
    json_t *out = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *msg = json_string_value(json_object_get(e, "msg"));
        if (msg && strncmp(msg, prefix, strlen(prefix)) == 0)
            json_array_append(out, e);
    }
    json_decref(entries);
    return out;
}

size_t tu_log_count(const struct tu_server *srv, const char *prefix)
{
    json_t *lines = tu_log_lines(srv, NULL, prefix);
    size_t n = json_array_size(lines);
    json_decref(lines);
    return n;
}

void tu_hangup_and_wait(struct tu_server *srv, const char *says, size_t nth)
{
    assert_int_equal(kill(srv->pid, SIGHUP), 0);
    for (int i = 0; i < TU_WAIT_S * 50 && tu_log_count(srv, says) < nth; i++)
        tu_sleep_ms(20);
    if (tu_log_count(srv, says) < nth)
        fail_msg("no log line '%s...' (the %zuth) after SIGHUP", says, nth);
}

static atomic_bool busy_run;
static pthread_t *busy;
static size_t nbusy;

static void *spin(void *arg)
{
    (void)arg;
    volatile unsigned long n = 0;
    while (atomic_load(&busy_run))
        n++;
    return NULL;
}

void tu_busy_threads_start(size_t n)
{
    busy = calloc(n, sizeof *busy);
    assert_non_null(busy);
    nbusy = n;
    atomic_store(&busy_run, true);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(pthread_create(&busy[i], NULL, spin, NULL), 0);
}

void tu_busy_threads_stop(void)
{
    atomic_store(&busy_run, false);
    for (size_t i = 0; busy && i < nbusy; i++)
        pthread_join(busy[i], NULL);
    free(busy);
    busy = NULL;
    nbusy = 0;
}

/* ---- a service manager ---- */

int tu_manager_socket(const char *dir, bool abstract, char **name)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    *name = abstract ? tu_path("@stratd-test-%ld-%ld", (long)getpid(), (long)time(NULL))
                     : tu_path("%s/notify.sock", dir);
    size_t n = strlen(*name);
    assert_true(n < sizeof addr.sun_path);
    memcpy(addr.sun_path, *name, n);
    if (abstract) /* the abstract namespace: a leading NUL, no terminator */
        addr.sun_path[0] = '\0';
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (abstract ? 0 : 1));
    if (bind(fd, (struct sockaddr *)&addr, len) != 0)
        fail_msg("bind %s: %s", *name, strerror(errno));
    return fd;
}

char *tu_manager_hears(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, TU_WAIT_S * 1000) != 1)
        fail_msg("the service manager heard nothing within %d s", TU_WAIT_S);
    char buf[4096];
    ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
    assert_true(n > 0);
    buf[n] = '\0';
    char *copy = strdup(buf);
    assert_non_null(copy);
    return copy;
}

char *tu_notification_value(const char *message, const char *key)
{
    size_t klen = strlen(key);
    for (const char *line = message; line && *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (len > klen && strncmp(line, key, klen) == 0 && line[klen] == '=')
            return strndup(line + klen + 1, len - klen - 1);
        line = end ? end + 1 : NULL;
    }
    return NULL;
}
