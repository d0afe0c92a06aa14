#include "testutil.h"

#include "core/hash.h"

#include <curl/curl.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

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

void tu_write_text(const char *path, const char *text) { tu_write_file(path, text, strlen(text)); }

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

char *tu_tree_checksum(const char *dir)
{
    char *out = NULL;
    int rc = tu_run(&out,
                    "cd '%s' && find . -print0 | LC_ALL=C sort -z | "
                    "xargs -0 stat -c '%%n %%a %%s %%F' | sha256sum | cut -c1-64 && "
                    "find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum | sha256sum "
                    "| cut -c1-64",
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

/* ----------------------------------------------------------------- server */

static char *server_binary(void)
{
    const char *env = getenv("STRATD_TEST_BINARY");
    return strdup(env && *env ? env : STRATD_BINARY);
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
        const char *prefix = "listening on http://";
        char *at = strstr(line, prefix);
        if (!at)
            fail_msg("unexpected first line from server: %s", line);
        char *colon = strrchr(at, ':');
        srv->port = atoi(colon + 1);
        snprintf(srv->base_url, sizeof srv->base_url, "http://127.0.0.1:%d", srv->port);
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
    srv->state_dir = opts && opts->state_dir ? strdup(opts->state_dir)
                                             : tu_path("%s/var", srv->root);
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
    int status = 0;
    time_t deadline = time(NULL) + 60;
    for (;;) {
        pid_t r = waitpid(srv->pid, &status, WNOHANG);
        if (r == srv->pid)
            break;
        if (time(NULL) > deadline) {
            kill(srv->pid, SIGKILL);
            waitpid(srv->pid, &status, 0);
            srv->pid = 0;
            fail_msg("server did not stop within 60 s of SIGTERM");
        }
        usleep(10000);
    }
    srv->pid = 0;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        char *log = tu_server_log(srv);
        size_t n = strlen(log);
        fail_msg("server did not exit cleanly (status %d); log tail:\n%s", status,
                 n > 6000 ? log + n - 6000 : log);
    }
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
    for (char *part = strtok_r(copy, ".", &save); part && cur;
         part = strtok_r(NULL, ".", &save)) {
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
