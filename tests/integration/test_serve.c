/*
 * `stratd serve` as a process: it prints exactly one line, "listening on
 * http://HOST:PORT", on standard output, serves on that port, exits 0 on
 * SIGTERM, and a restart on the same directories serves the same catalogue.
 * A service manager (NOTIFY_SOCKET) hears when it is ready, reloading and
 * stopping.
 */
#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A server whose standard output goes to a file, so that everything it
 * ever prints there can be read back after it exits. */
struct captured {
    pid_t pid;
    char *root, *strategies, *state, *out_path, *err_path;
};

static void captured_start(struct captured *cap)
{
    memset(cap, 0, sizeof *cap);
    cap->root = tu_tempdir("stratd-serve");
    /* Neither directory exists yet: the server creates them. */
    cap->strategies = tu_path("%s/strategies", cap->root);
    cap->state = tu_path("%s/var", cap->root);
    cap->out_path = tu_path("%s/stdout", cap->root);
    cap->err_path = tu_path("%s/stderr", cap->root);
    const char *env = getenv("STRATD_TEST_BINARY");
    const char *binary = env && *env ? env : STRATD_BINARY;
    pid_t pid = fork();
    if (pid < 0)
        fail_msg("fork: %s", strerror(errno));
    if (pid == 0) {
        int out = open(cap->out_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        int err = open(cap->err_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        if (out < 0 || err < 0)
            _exit(126);
        dup2(out, STDOUT_FILENO);
        dup2(err, STDERR_FILENO);
        close(out);
        close(err);
        execl(binary, binary, "serve", "--listen", "127.0.0.1:0", "--strategies", cap->strategies,
              "--state", cap->state, (char *)NULL);
        _exit(127);
    }
    cap->pid = pid;
}

/* Waits for the first complete line of standard output. */
static char *captured_first_line(struct captured *cap)
{
    time_t deadline = time(NULL) + 120;
    while (time(NULL) < deadline) {
        char *out = tu_read_file(cap->out_path, NULL);
        char *nl = out ? strchr(out, '\n') : NULL;
        if (nl) {
            *nl = '\0';
            return out;
        }
        free(out);
        int status;
        if (waitpid(cap->pid, &status, WNOHANG) == cap->pid) {
            cap->pid = 0;
            char *err = tu_read_file(cap->err_path, NULL);
            fail_msg("the server exited (status %d) before printing a line; stderr:\n%s", status,
                     err ? err : "");
        }
        usleep(10000);
    }
    fail_msg("the server printed no line within 120 s");
    return NULL;
}

/* SIGTERM, then the exit status (-1 if it did not exit normally). */
static int captured_stop(struct captured *cap)
{
    kill(cap->pid, SIGTERM);
    int status = 0;
    time_t deadline = time(NULL) + 60;
    for (;;) {
        pid_t r = waitpid(cap->pid, &status, WNOHANG);
        if (r == cap->pid)
            break;
        if (time(NULL) > deadline) {
            kill(cap->pid, SIGKILL);
            waitpid(cap->pid, &status, 0);
            cap->pid = 0;
            fail_msg("the server did not exit within 60 s of SIGTERM");
        }
        usleep(10000);
    }
    cap->pid = 0;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void captured_free(struct captured *cap)
{
    if (cap->pid > 0) {
        kill(cap->pid, SIGKILL);
        waitpid(cap->pid, NULL, 0);
    }
    if (cap->root && !getenv("STRATD_TEST_KEEP"))
        tu_remove_tree(cap->root);
    free(cap->root);
    free(cap->strategies);
    free(cap->state);
    free(cap->out_path);
    free(cap->err_path);
    memset(cap, 0, sizeof *cap);
}

static int captured_setup(void **state)
{
    struct captured *cap = calloc(1, sizeof *cap);
    *state = cap;
    return cap ? 0 : -1;
}

static int captured_teardown(void **state)
{
    struct captured *cap = *state;
    if (cap) {
        captured_free(cap);
        free(cap);
    }
    return 0;
}

static void test_prints_one_line_and_exits_0_on_sigterm(void **state)
{
    struct captured *cap = *state;
    captured_start(cap);
    char *line = captured_first_line(cap);
    const char *prefix = "listening on http://127.0.0.1:";
    if (strncmp(line, prefix, strlen(prefix)) != 0)
        fail_msg("first line is '%s', expected 'listening on http://127.0.0.1:PORT'", line);
    const char *digits = line + strlen(prefix);
    char *end = NULL;
    long port = strtol(digits, &end, 10);
    if (end == digits || *end != '\0' || port < 1 || port > 65535)
        fail_msg("first line '%s' does not end in a port number", line);

    /* It serves on that port, and created its directories. */
    struct tu_server srv = {0};
    srv.port = (int)port;
    snprintf(srv.base_url, sizeof srv.base_url, "http://127.0.0.1:%ld", port);
    json_t *health = tu_get_json(&srv, 200, "/healthz");
    const json_t *status = json_object_get(health, "status");
    if (!json_is_string(status) || json_string_length(status) == 0)
        fail_msg("/healthz has no status string");
    json_decref(health);
    struct stat st;
    assert_int_equal(stat(cap->strategies, &st), 0);
    assert_true(S_ISDIR(st.st_mode));
    assert_int_equal(stat(cap->state, &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    /* Some work, so that anything printed along the way would show. */
    char *src = tu_module_source("alpha", "v1", NULL);
    tu_upload_expect(&srv, src, NULL, 201, NULL);
    json_decref(tu_get_json(&srv, 200, "/strategies/modules"));
    struct tu_response res;
    tu_get(&srv, &res, "/strategies/modules/nosuch");
    tu_assert_error(&res, 404);
    tu_response_free(&res);
    free(src);

    int code = captured_stop(cap);
    if (code != 0) {
        char *err = tu_read_file(cap->err_path, NULL);
        size_t n = err ? strlen(err) : 0;
        fail_msg("exit status after SIGTERM is %d, expected 0; stderr tail:\n%s", code,
                 err ? (n > 4000 ? err + n - 4000 : err) : "");
    }
    char *expected = tu_path("listening on http://127.0.0.1:%ld\n", port);
    char *out = tu_read_file(cap->out_path, NULL);
    if (!out || strcmp(out, expected) != 0)
        fail_msg("standard output should be exactly '%s', it is '%s'", expected, out ? out : "");
    free(out);
    free(expected);
    free(line);
}

static void test_empty_catalogue(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    json_t *page = tu_get_json(srv, 200, "/strategies/modules");
    assert_true(json_is_array(json_object_get(page, "modules")));
    assert_int_equal(json_array_size(json_object_get(page, "modules")), 0);
    assert_int_equal(tu_jint(page, "total"), 0);
    assert_int_equal(tu_jint(page, "offset"), 0);
    assert_true(json_is_null(json_object_get(page, "limit")));
    assert_true(json_is_string(json_object_get(page, "strategyDirectory")));
    json_decref(page);
    json_t *list = tu_get_json(srv, 200, "/strategies");
    assert_int_equal(json_array_size(json_object_get(list, "strategies")), 0);
    json_decref(list);
    json_t *exp = tu_get_json(srv, 200, "/strategies/registry");
    assert_true(json_is_object(json_object_get(exp, "registry")));
    assert_int_equal(json_object_size(json_object_get(exp, "registry")), 0);
    assert_true(json_is_array(json_object_get(exp, "usage")));
    json_decref(exp);
    struct tu_response res;
    tu_request(srv, &res, "POST", "/strategies/refresh", NULL);
    tu_assert_status(&res, 200);
    assert_true(json_is_array(json_object_get(res.json, "results")));
    assert_true(json_is_array(json_object_get(res.json, "problems")));
    tu_response_free(&res);
    tu_server_stop(srv);
}

static void test_restart_serves_the_same_catalogue(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a = tu_module_source("alpha", "v1", NULL);
    char *b = tu_module_source("alpha", "v2", "onTrade() {},");
    char ha[65], hb[65];
    tu_upload_expect(srv, a, NULL, 201, ha);
    tu_upload_expect(srv, b, "{\"aliases\": [\"prod\"]}", 201, hb);
    json_t *listing = tu_get_json(srv, 200, "/strategies/modules");
    json_t *exported = tu_get_json(srv, 200, "/strategies/registry");
    tu_server_stop(srv);

    tu_server_restart(srv, NULL);
    json_t *again = tu_get_json(srv, 200, "/strategies/modules");
    if (!json_equal(listing, again)) {
        char *x = json_dumps(listing, JSON_COMPACT), *y = json_dumps(again, JSON_COMPACT);
        fail_msg("the listing changed across a restart:\nbefore %s\nafter  %s", x, y);
    }
    json_decref(again);
    again = tu_get_json(srv, 200, "/strategies/registry");
    assert_true(json_equal(exported, again));
    json_decref(again);
    struct tu_response res;
    tu_get(srv, &res, "/strategies/modules/alpha:prod/source");
    tu_assert_status(&res, 200);
    assert_int_equal(res.len, strlen(b));
    assert_memory_equal(res.body, b, res.len);
    tu_response_free(&res);

    /* And it keeps working: a change after the restart lands. */
    char *body = tu_path("{\"hash\": \"sha256:%s\"}", ha);
    tu_send(srv, &res, "PUT", "/strategies/modules/alpha/tags/prod", body);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    free(body);
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/alpha:prod");
    char *sa = tu_path("sha256:%s", ha);
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), sa);
    json_decref(m);
    free(sa);
    json_decref(listing);
    json_decref(exported);
    free(a);
    free(b);
    tu_server_stop(srv);
}

/* The registry is the source of truth: with the state directory gone, a
 * restart re-validates the files and serves the same catalogue. */
static void test_restart_with_a_fresh_state_directory(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a = tu_module_source("alpha", "v1", NULL);
    tu_upload_expect(srv, a, "{\"aliases\": [\"prod\"]}", 201, NULL);
    json_t *listing = tu_get_json(srv, 200, "/strategies/modules");
    tu_server_stop(srv);
    tu_remove_tree(srv->state_dir);
    tu_server_restart(srv, NULL);
    json_t *again = tu_get_json(srv, 200, "/strategies/modules");
    if (!json_equal(listing, again)) {
        char *x = json_dumps(listing, JSON_COMPACT), *y = json_dumps(again, JSON_COMPACT);
        fail_msg("the listing changed with a fresh state directory:\nbefore %s\nafter  %s", x, y);
    }
    json_decref(again);
    json_decref(listing);
    json_t *meta = tu_get_json(srv, 200, "/strategies/alpha");
    assert_string_equal(tu_jstr(meta, "displayName"), "Test alpha");
    json_decref(meta);
    free(a);
    tu_server_stop(srv);
}

/* The module names of the upload entries in an audit log file, in order,
 * as one comma-separated string ("" when none or no file). */
static char *uploads_in(const char *path)
{
    char *text = tu_read_file(path, NULL);
    char *out = strdup("");
    assert_non_null(out);
    for (char *line = text ? strtok(text, "\n") : NULL; line; line = strtok(NULL, "\n")) {
        json_t *entry = json_loads(line, 0, NULL);
        if (!json_is_object(entry))
            fail_msg("%s holds a line that is not a JSON object: %s", path, line);
        const char *action = json_string_value(json_object_get(entry, "action"));
        if (action && strcmp(action, "module.upload") == 0) {
            char *more = tu_path("%s%s%s", out, *out ? "," : "", tu_jstr(entry, "strategy"));
            free(out);
            out = more;
        }
        json_decref(entry);
    }
    free(text);
    return out;
}

static void upload_named(struct tu_server *srv, const char *name)
{
    char *src = tu_module_source(name, NULL, NULL);
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
}

static void expect_uploads(const char *path, const char *names)
{
    char *got = uploads_in(path);
    if (strcmp(got, names) != 0)
        fail_msg("%s records the uploads [%s], expected [%s]", path, got, names);
    free(got);
}

/* Log rotation: SIGHUP reopens the audit log, so entries before a move stay
 * in the moved file and the next go to a new audit.log, private like the
 * first. A path that cannot be opened (a directory put there) leaves the
 * log on the file it had, losing nothing, and the log says why; once the
 * path is usable the next SIGHUP moves on, and one with nothing moved goes
 * on with the same file. The gateway serves throughout. */
static void test_sighup_reopens_the_audit_log(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *live = tu_path("%s/audit.log", srv->state_dir);
    char *first = tu_path("%s/audit.log.1", srv->state_dir);
    char *second = tu_path("%s/audit.log.2", srv->state_dir);
    upload_named(srv, "before");
    assert_int_equal(rename(live, first), 0);
    tu_hangup_and_wait(srv, "SIGHUP: reopened the audit log", 1);
    upload_named(srv, "after");
    expect_uploads(first, "before");
    expect_uploads(live, "after");
    struct stat st;
    assert_int_equal(stat(live, &st), 0);
    assert_int_equal(st.st_mode & 0007, 0);

    assert_int_equal(rename(live, second), 0);
    assert_int_equal(mkdir(live, 0700), 0);
    tu_hangup_and_wait(srv, "SIGHUP: cannot reopen audit log", 1);
    upload_named(srv, "kept");
    expect_uploads(second, "after,kept");
    assert_int_equal(rmdir(live), 0);
    tu_hangup_and_wait(srv, "SIGHUP: reopened the audit log", 2);
    upload_named(srv, "last");
    expect_uploads(second, "after,kept");
    expect_uploads(live, "last");
    /* a SIGHUP with nothing moved goes on with the same file, whole */
    tu_hangup_and_wait(srv, "SIGHUP: reopened the audit log", 3);
    upload_named(srv, "same");
    expect_uploads(live, "last,same");
    json_decref(tu_get_json(srv, 200, "/healthz"));
    free(live);
    free(first);
    free(second);
    tu_server_stop(srv);
}

static void expect_field(const char *message, const char *key, const char *expected)
{
    char *value = tu_notification_value(message, key);
    if (!value || strcmp(value, expected) != 0)
        fail_msg("expected %s=%s in the notification '%s'", key, expected, message);
    free(value);
}

/* Starts the server with NOTIFY_SOCKET set to name and waits for READY=1;
 * the gateway answers at the URL its STATUS names at once, without waiting
 * for anything else. */
static void start_told(struct captured *cap, const char *name, int fd)
{
    setenv("NOTIFY_SOCKET", name, 1);
    captured_start(cap);
    unsetenv("NOTIFY_SOCKET");
    char *ready = tu_manager_hears(fd);
    expect_field(ready, "READY", "1");
    char *status = tu_notification_value(ready, "STATUS");
    const char *prefix = "listening on ";
    if (!status || strncmp(status, prefix, strlen(prefix)) != 0)
        fail_msg("READY=1 came with the status '%s'", status ? status : "(none)");
    char *url = tu_path("%s/healthz", status + strlen(prefix));
    struct tu_response res;
    tu_http(&res, "GET", url, NULL, 0, NULL);
    assert_int_equal(res.status, 200);
    tu_response_free(&res);
    free(url);
    free(status);
    free(ready);
}

/* A service manager (systemd's notification protocol, here a socket of the
 * test's own) hears READY=1 once the gateway answers, RELOADING=1 and then
 * READY=1 around a SIGHUP's work with its outcome in STATUS, and STOPPING=1
 * at SIGTERM; an abstract socket name works the same. */
static void test_tells_the_service_manager(void **state)
{
    struct captured *cap = *state;
    char *dir = tu_tempdir("stratd-notify");
    for (int abstract = 0; abstract <= 1; abstract++) {
        char *name = NULL;
        int fd = tu_manager_socket(dir, abstract, &name);
        start_told(cap, name, fd);
        kill(cap->pid, SIGHUP);
        char *reloading = tu_manager_hears(fd);
        expect_field(reloading, "RELOADING", "1");
        char *monotonic = tu_notification_value(reloading, "MONOTONIC_USEC");
        struct timespec now;
        clock_gettime(CLOCK_MONOTONIC, &now);
        long long then_us = monotonic ? atoll(monotonic) : 0;
        long long now_us = (long long)now.tv_sec * 1000000 + now.tv_nsec / 1000;
        if (then_us <= 0 || then_us > now_us || now_us - then_us > 120000000LL)
            fail_msg("RELOADING=1 came with MONOTONIC_USEC '%s', the clock is at %lld",
                     monotonic ? monotonic : "(none)", now_us);
        char *reloaded = tu_manager_hears(fd);
        expect_field(reloaded, "READY", "1");
        char *status = tu_notification_value(reloaded, "STATUS");
        if (!status || !strstr(status, "SIGHUP at ") || !strstr(status, ": the audit log reopened"))
            fail_msg("READY=1 after the SIGHUP came with the status '%s'", status ? status : "");
        assert_int_equal(captured_stop(cap), 0);
        char *stopping = tu_manager_hears(fd);
        expect_field(stopping, "STOPPING", "1");
        expect_field(stopping, "STATUS", "shutting down (SIGTERM)");
        free(stopping);
        free(status);
        free(reloaded);
        free(monotonic);
        free(reloading);
        close(fd);
        free(name);
        captured_free(cap);
    }
    tu_remove_tree(dir);
    free(dir);
}

/* A NOTIFY_SOCKET nobody listens on, or one that cannot be an address, is
 * warned about once, at the first notification; the gateway serves, and
 * reloads and stops as it would without it. */
static void test_a_deaf_service_manager_changes_nothing(void **state)
{
    struct captured *cap = *state;
    const char *names[] = {"/nonexistent/notify.sock", "relative/notify.sock"};
    const char *says[] = {"cannot tell the service manager at NOTIFY_SOCKET /nonexistent/",
                          "NOTIFY_SOCKET 'relative/notify.sock' is neither"};
    for (size_t i = 0; i < 2; i++) {
        setenv("NOTIFY_SOCKET", names[i], 1);
        captured_start(cap);
        unsetenv("NOTIFY_SOCKET");
        char *line = captured_first_line(cap);
        kill(cap->pid, SIGHUP);
        time_t deadline = time(NULL) + 120;
        char *log = NULL;
        while (!(log && strstr(log, "SIGHUP: reopened the audit log"))) {
            if (time(NULL) > deadline)
                fail_msg("no SIGHUP in the log within 120 s:\n%s", log ? log : "");
            free(log);
            tu_sleep_ms(20);
            log = tu_read_file(cap->err_path, NULL);
        }
        assert_int_equal(captured_stop(cap), 0);
        free(log);
        log = tu_read_file(cap->err_path, NULL);
        const char *first = strstr(log, says[i]);
        if (!first || strstr(first + 1, says[i]))
            fail_msg("expected one warning '%s' in the log:\n%s", says[i], log);
        free(log);
        free(line);
        captured_free(cap);
    }
}

static void expect_in(const char *output, const char *text)
{
    if (!strstr(output, text))
        fail_msg("expected '%s' in:\n%s", text, output);
}

/* `serve --check` beside a gateway serving the same directories: it says
 * what a start would serve (the catalogue read and hashed as a start reads
 * it) and exits 0, 1 with a revision's problem named, 2 with the reason a
 * start would stop; it changes nothing on disk, creates no directory, and
 * the gateway serves on. */
static void test_check_says_what_a_start_would_serve(void **state)
{
    struct tu_server *srv = *state;
    struct tu_server_options opts = {.seed_examples = true};
    tu_server_start(srv, &opts);
    char *alpha = tu_module_source("alpha", "v1", NULL);
    char *hash = tu_upload_hash(srv, alpha);
    const char *hex = hash + strlen("sha256:");
    char *args = tu_path("--strategies '%s' --state '%s'", srv->strategies_dir, srv->state_dir);
    char *before = tu_tree_checksum(srv->strategies_dir);
    char *out = NULL;
    assert_int_equal(tu_serve_check(&out, args), 0);
    expect_in(out, ": 7 strategies, 7 revisions, 0 with a problem\n");
    expect_in(out, "\nok\n");
    free(out);

    /* one revision's bytes changed on disk: named, and still served around */
    char *file = tu_path("%s/alpha/%s/alpha.js", srv->strategies_dir, hex);
    size_t len = 0;
    char *source = tu_read_file(file, &len);
    tu_write_text(file, "module.exports = {};\n");
    assert_int_equal(tu_serve_check(&out, args), 1);
    char *problem =
        tu_path("problem: alpha@sha256:%s: the file alpha/%s/alpha.js hashes to", hex, hex);
    expect_in(out, problem);
    expect_in(out, ": 7 strategies, 7 revisions, 1 with a problem\n");
    expect_in(out, "served, with the problems above\n");
    free(out);
    tu_write_file(file, source, len);
    char *after = tu_tree_checksum(srv->strategies_dir);
    assert_string_equal(before, after);
    json_decref(tu_get_json(srv, 200, "/healthz"));

    /* what a start would refuse */
    char *plain = tu_path("%s/plain-file", srv->root);
    tu_write_text(plain, "");
    char *missing = tu_path("%s/not-yet", srv->root);
    char *refusing = tu_path("--strategies '%s' --state '%s'", srv->strategies_dir, plain);
    assert_int_equal(tu_serve_check(&out, refusing), 2);
    expect_in(out, "refused: the state directory ");
    expect_in(out, "plain-file is not a directory");
    free(out);
    char *fresh = tu_path("--strategies '%s/s' --state '%s/v'", missing, missing);
    assert_int_equal(tu_serve_check(&out, fresh), 0);
    expect_in(out, "not-yet/s: does not exist yet, created empty at the start");
    expect_in(out, "not-yet/v: does not exist yet, created at the start");
    free(out);
    struct stat st;
    assert_int_equal(stat(missing, &st), -1);
    char *broken = tu_path("%s/broken", srv->root);
    assert_int_equal(mkdir(broken, 0755), 0);
    char *registry = tu_path("%s/registry.json", broken);
    tu_write_text(registry, "{\"momentum\": ");
    char *unreadable = tu_path("--strategies '%s' --state '%s'", broken, missing);
    assert_int_equal(tu_serve_check(&out, unreadable), 2);
    expect_in(out, "refused: registry.json: invalid JSON");
    free(out);
    char *config = tu_path("%s/bad.yaml", srv->root);
    tu_write_text(config, "http:\n  max_conections: 10\n");
    char *configured = tu_path("--config '%s' --state '%s'", config, missing);
    assert_int_equal(tu_serve_check(&out, configured), 2);
    expect_in(out, "max_conections");
    free(out);

    json_decref(tu_get_json(srv, 200, "/healthz"));
    tu_server_stop(srv);
    free(configured);
    free(config);
    free(unreadable);
    free(registry);
    free(broken);
    free(fresh);
    free(refusing);
    free(missing);
    free(plain);
    free(after);
    free(problem);
    free(source);
    free(file);
    free(before);
    free(args);
    free(hash);
    free(alpha);
}

/* A strategies directory laid out by hand (an existing deployment) is
 * served as it is. */
static void test_serves_a_tree_written_by_hand(void **state)
{
    struct tu_server *srv = *state;
    char *root = tu_tempdir("stratd-hand");
    char *dir = tu_path("%s/strategies", root);
    char *a = tu_module_source("handmade", "v1", NULL);
    char *b = tu_module_source("handmade", NULL, "onTrade() {},");
    char ha[65], hb[65];
    tu_sha256_hex(a, strlen(a), ha);
    tu_sha256_hex(b, strlen(b), hb);
    const char *srcs[] = {a, b};
    const char *hexes[] = {ha, hb};
    for (int i = 0; i < 2; i++) {
        char *rev = tu_path("%s/handmade/%s", dir, hexes[i]);
        assert_int_equal(tu_run(NULL, "mkdir -p '%s'", rev), 0);
        char *file = tu_path("%s/handmade.js", rev);
        tu_write_text(file, srcs[i]);
        free(file);
        free(rev);
    }
    char *sa = tu_path("sha256:%s", ha), *sb = tu_path("sha256:%s", hb);
    char *pa = tu_path("handmade/%s/handmade.js", ha), *pb = tu_path("handmade/%s/handmade.js", hb);
    json_t *reg = json_pack("{s:{s:{s:s, s:s, s:s}, s:{s:{s:s, s:s}, s:{s:s, s:s}}}}", "handmade",
                            "tags", "latest", sb, "v1", sa, "edge", sb, "hashes", sa, "tag", "v1",
                            "path", pa, sb, "tag", "edge", "path", pb);
    char *reg_path = tu_path("%s/registry.json", dir);
    assert_int_equal(json_dump_file(reg, reg_path, JSON_INDENT(2)), 0);

    struct tu_server_options opts = {.strategies_dir = dir};
    tu_server_start(srv, &opts);
    json_t *exp = tu_get_json(srv, 200, "/strategies/registry");
    assert_true(json_equal(json_object_get(exp, "registry"), reg));
    json_decref(exp);
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/handmade");
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), sb);
    assert_int_equal(json_array_size(json_object_get(m, "revisions")), 2);
    json_decref(m);
    m = tu_get_json(srv, 200, "/strategies/modules/handmade:v1");
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), sa);
    json_decref(m);
    struct tu_response res;
    tu_get(srv, &res, "/strategies/modules/handmade:v1/source");
    tu_assert_status(&res, 200);
    assert_int_equal(res.len, strlen(a));
    assert_memory_equal(res.body, a, res.len);
    tu_response_free(&res);
    tu_server_stop(srv);

    json_decref(reg);
    free(reg_path);
    free(pa);
    free(pb);
    free(sa);
    free(sb);
    free(a);
    free(b);
    if (!getenv("STRATD_TEST_KEEP"))
        tu_remove_tree(root);
    free(dir);
    free(root);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_prints_one_line_and_exits_0_on_sigterm, captured_setup,
                                        captured_teardown),
        cmocka_unit_test_setup_teardown(test_empty_catalogue, tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_restart_serves_the_same_catalogue, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_restart_with_a_fresh_state_directory, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_sighup_reopens_the_audit_log, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_tells_the_service_manager, captured_setup,
                                        captured_teardown),
        cmocka_unit_test_setup_teardown(test_a_deaf_service_manager_changes_nothing, captured_setup,
                                        captured_teardown),
        cmocka_unit_test_setup_teardown(test_check_says_what_a_start_would_serve, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_serves_a_tree_written_by_hand, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
