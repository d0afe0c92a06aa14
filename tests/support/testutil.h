/*
 * Test helpers shared by unit and integration tests: temporary trees, files,
 * a real `stratd serve` child process, and an HTTP client (libcurl).
 *
 * Every function aborts the test (cmocka fail_msg) on an unexpected failure
 * of the machinery itself, so tests read as a list of assertions about
 * stratd's behaviour. Strings returned are malloc'ed and owned by the caller.
 */
#ifndef STRATD_TESTS_TESTUTIL_H
#define STRATD_TESTS_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
/* cmocka needs the three above first */
#include <cmocka.h>
#include <jansson.h>
#include <stdbool.h>
#include <sys/types.h>

/* ---- files ---- */
char *tu_tempdir(const char *prefix);
void tu_remove_tree(const char *path);
void tu_write_file(const char *path, const char *data, size_t len);
void tu_write_text(const char *path, const char *text);
char *tu_read_file(const char *path, size_t *len); /* NULL if missing */
char *tu_path(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* SHA-256 over every path, mode and content under dir (the registry
 * writer's spare and the padding of registry.json's lines excepted): equal
 * strings mean an untouched tree. */
char *tu_tree_checksum(const char *dir);
/* The contents of examples/strategies/<name>.js. */
char *tu_example_source(const char *name);
/* Runs a shell command; returns its exit status (or -1). Output goes to
 * *output when non-NULL. */
int tu_run(char **output, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Runs `stratd serve --check ARGS` (ARGS as a shell would split them);
 * its exit status, and in *output (malloc'd) its standard output followed
 * by its standard error. */
int tu_serve_check(char **output, const char *args);

/* ---- a service manager (systemd's notification protocol) ---- */
/* A datagram socket for the server to notify: a path under dir, or
 * (abstract) a name in the abstract namespace; *name (malloc'd) is what
 * NOTIFY_SOCKET is set to. */
int tu_manager_socket(const char *dir, bool abstract, char **name);
/* The next notification on fd, within TU_WAIT_S (malloc'd). */
char *tu_manager_hears(int fd);
/* The value of `key` in a notification's lines (malloc'd), or NULL. */
char *tu_notification_value(const char *message, const char *key);

/* ---- a real server ---- */
struct tu_server {
    pid_t pid;
    int port;
    char base_url[64];
    char *root;           /* temporary directory owning the two below */
    char *strategies_dir; /* --strategies */
    char *state_dir;      /* --state */
    char *log_path;       /* the server's stderr */
    char *config_path;    /* --config, or NULL */
    bool own_root;
};

struct tu_server_options {
    const char *strategies_dir; /* reuse a tree (NULL: a fresh temporary one) */
    const char *state_dir;
    const char *config_yaml;       /* written to a file and passed as --config */
    const char *const *extra_args; /* NULL-terminated */
    bool seed_examples;            /* copy examples/strategies into the tree first */
};

/* Runs `stratd serve` on the two directories expecting it to exit by
 * itself (a refusal to start); returns its exit status (-1 when killed) and
 * its stderr in *err_text (malloc'ed). */
int tu_serve_to_exit(const char *strategies, const char *state_dir, char **err_text);
void tu_server_start(struct tu_server *srv, const struct tu_server_options *opts);
/* Starts again on the same directories (after stop or kill). */
void tu_server_restart(struct tu_server *srv, const struct tu_server_options *opts);
/* SIGTERM and wait; asserts a clean exit (status 0). */
void tu_server_stop(struct tu_server *srv);
/* SIGKILL and wait. */
void tu_server_kill(struct tu_server *srv);
/* Waits up to timeout_s for child `pid` to exit and returns its wait status;
 * past that it is killed and the test fails, naming `what`. */
int tu_wait_child(pid_t pid, int timeout_s, const char *what);
/* Stops if running and removes the temporary tree. */
void tu_server_cleanup(struct tu_server *srv);
/* The server's log so far. */
char *tu_server_log(const struct tu_server *srv);

/* ---- HTTP ---- */
struct tu_response {
    long status;
    char *body;
    size_t len;
    json_t *json; /* parsed body when it is JSON, else NULL */
    char *headers;
};

/* Sends a request; extra_headers is a NULL-terminated list or NULL. */
void tu_http(struct tu_response *res, const char *method, const char *url, const char *body,
             size_t body_len, const char *const *extra_headers);
void tu_get(struct tu_server *srv, struct tu_response *res, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void tu_delete(struct tu_server *srv, struct tu_response *res, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Body is JSON text; method is POST, PUT, ... */
void tu_send(struct tu_server *srv, struct tu_response *res, const char *method, const char *path,
             const char *json_body);
/* Same, with the body built from a jansson value (stolen). */
void tu_send_json(struct tu_server *srv, struct tu_response *res, const char *method,
                  const char *path, json_t *body);
void tu_response_free(struct tu_response *res);
/* A header's value (case-insensitive name), malloc'ed, or NULL. */
char *tu_header(const struct tu_response *res, const char *name);
/* URL-escapes a path segment. */
char *tu_escape(const char *segment);

/* Uploads a module source; returns the response (status 200/201 or error). */
void tu_upload(struct tu_server *srv, struct tu_response *res, const char *source,
               const char *fields_json);

/* ---- assertions ---- */
#define tu_assert_status(res, expected)                                                            \
    do {                                                                                           \
        if ((res)->status != (expected))                                                           \
            fail_msg("expected HTTP %d, got %ld: %.*s", (int)(expected), (res)->status,            \
                     (int)((res)->len > 2000 ? 2000 : (res)->len),                                 \
                     (res)->body ? (res)->body : "");                                              \
    } while (0)

/* The string at a JSON path like "module.hash" or "modules.0.name". */
const char *tu_jstr(const json_t *root, const char *path);
json_t *tu_jget(const json_t *root, const char *path);
long long tu_jint(const json_t *root, const char *path);
/* Sets a env-style source module text for a strategy with the given name. */
char *tu_module_source(const char *name, const char *tag, const char *extra_body);

/* Three revisions of strategy `name` uploaded in order, each answered 201:
 * v1 (which takes latest), v2 with an onTrade handler, v3 with onTicker;
 * their sources, hashes and "sha256:<hex>" spellings. */
struct tu_three_revisions {
    char *src[3];
    char hex[3][65];
    char *spelled[3];
};
void tu_three_revisions_upload(struct tu_server *srv, const char *name,
                               struct tu_three_revisions *r);
void tu_three_revisions_free(struct tu_three_revisions *r);
/* "'use strict';" then, on line 2 from column 15, a regular expression
 * literal `words` of `alternatives` alternatives, then `tail`: a source
 * whose compile time grows with the square of `alternatives`. */
char *tu_alternation_source(int alternatives, const char *tail, size_t *len);

/* ---- raw requests ---- */
struct tu_request_options {
    const char *body; /* sent as is (with Content-Type: application/json unless a
                         Content-Type header is given) */
    size_t body_len;
    const char *const *headers; /* NULL-terminated, or NULL */
    bool path_as_is;            /* keep "." and ".." segments instead of squashing them */
    bool chunked;               /* Transfer-Encoding: chunked instead of Content-Length */
    long timeout_s;             /* 0: 120 s */
};

/* Like tu_http, but never fails the test and may be called from any thread:
 * returns 0 when a response arrived, or -1 on a transport error (refused,
 * reset, timeout), with *res zeroed. */
int tu_http_try(struct tu_response *res, const char *method, const char *url,
                const struct tu_request_options *opts);
/* A request to the server with the path sent byte for byte; fails the test on
 * a transport error. opts may be NULL. */
void tu_request(struct tu_server *srv, struct tu_response *res, const char *method,
                const char *path, const struct tu_request_options *opts);

/* ---- hashes ---- */
/* 64 lowercase hex digits of SHA-256 over data. */
void tu_sha256_hex(const void *data, size_t len, char hex[65]);
/* The bytes a gzip member decompresses to (malloc'ed, NUL-terminated;
 * *out_len without the NUL), or NULL when `data` is not one whole, valid
 * gzip member. */
char *tu_gunzip(const void *data, size_t len, size_t *out_len);

/* ---- error responses ---- */
/* Asserts an error response: the status, Content-Type application/json, and a
 * JSON object body whose "error" is a non-empty string and whose "details" is
 * an object. */
#define tu_assert_error(res, expected) tu_check_error((res), (expected), __FILE__, __LINE__)
void tu_check_error(const struct tu_response *res, long expected, const char *file, int line);

/* ---- the catalogue on disk and over HTTP ---- */
/* <strategies>/registry.json parsed; NULL when it does not exist. Fails the
 * test when it exists but is not JSON. */
json_t *tu_registry_disk(const struct tu_server *srv);
/* Checks <dir>/registry.json against the format {name: {tags: {tag:
 * "sha256:<hex>"}, hashes: {"sha256:<hex>": {tag, path}}}}: names and tags
 * well formed, every tag naming a listed hash, `latest` present, every path
 * "<name>/<hex>/<name>.js" naming a file whose bytes hash to <hex>. Returns the
 * document (new reference). */
json_t *tu_assert_registry_sound(const char *strategies_dir);

/* Everything a refused request must leave alone: registry.json's bytes, the
 * strategies tree, the module listing and the registry export. */
struct tu_catalog_state {
    char *registry; /* "" when registry.json does not exist */
    char *tree;
    char *listing;
    char *export_doc;
};
void tu_catalog_capture(struct tu_server *srv, struct tu_catalog_state *st);
/* Fails, naming `what`, when the catalogue differs from `before`. */
void tu_catalog_expect_same(struct tu_server *srv, const struct tu_catalog_state *before,
                            const char *what);
void tu_catalog_state_free(struct tu_catalog_state *st);

/* Every line of <state>/audit.log as an array of objects (empty when the
 * file does not exist); fails on a line that is not a JSON object. */
json_t *tu_audit_entries(const struct tu_server *srv);

/* Uploads, asserts the status, and copies the 64 hex digits of module.hash
 * into hex (when non-NULL). */
void tu_upload_expect(struct tu_server *srv, const char *source, const char *fields_json,
                      long status, char hex[65]);

/* GET that asserts the status and returns the JSON body (new reference;
 * fails when the body is not JSON). */
json_t *tu_get_json(struct tu_server *srv, long status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* cmocka fixtures for tests that run one server each: setup allocates a
 * struct tu_server into *state; teardown kills whatever still runs (a test
 * that failed half-way) and removes the temporary tree. A test that reaches
 * its end calls tu_server_stop() itself, so that a clean exit is asserted. */
int tu_server_setup(void **state);
int tu_server_teardown(void **state);

/* ---- strategy instances, providers and the server's log ---- */

/* Deadline for "eventually" conditions in the instance tests: generous, so
 * that a loaded machine or a sanitizer build is slower but never wrong. */
#define TU_WAIT_S 90

/* A strategy module named `name`: metadata {name, displayName, events,
 * config} (events and config are JS expressions such as "['Trade']" and
 * "[]"), and create(env) that runs `setup` with `env`, `h` (env.helpers) and
 * `rt` (env.runtime) in scope, then returns { handlers }. */
char *tu_strategy_source(const char *name, const char *events, const char *config,
                         const char *setup, const char *handlers);
/* Uploads a module and returns its "sha256:<hex>" (malloc'ed). */
char *tu_upload_hash(struct tu_server *srv, const char *source);

/* Sends a request (body NULL: none), asserts the status and returns the
 * parsed body (new reference; NULL when the body is not JSON). */
json_t *tu_call(struct tu_server *srv, const char *method, const char *path, long status,
                const char *body);
json_t *tu_callf(struct tu_server *srv, const char *method, const char *path, long status,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* POST /strategy/instances {id, strategy: {selector, config}, scope:
 * {provider: {symbols}}}, config and symbols as JSON text ("{}", "[\"BTC-USDT\"]");
 * asserts 201 and returns the snapshot. */
json_t *tu_instance_create(struct tu_server *srv, const char *id, const char *selector,
                           const char *config, const char *provider, const char *symbols);
/* POST .../start or .../stop, asserting 200 and {id, status, action}. */
void tu_instance_start(struct tu_server *srv, const char *id);
void tu_instance_stop(struct tu_server *srv, const char *id);
/* PUT /risk/limits with the current limits and killSwitchEnabled = on,
 * asserting 200. */
void tu_set_kill_switch(struct tu_server *srv, bool on);
/* GET /strategy/instances/{id}, asserting 200. */
json_t *tu_instance_get(struct tu_server *srv, const char *id);

/* Polls the snapshot of `id` until pred holds (every 20 ms, up to
 * timeout_s) and returns it; fails naming `what` with the last snapshot. */
typedef bool (*tu_snapshot_pred)(const json_t *snapshot, const void *arg);
json_t *tu_instance_wait(struct tu_server *srv, const char *id, tu_snapshot_pred pred,
                         const void *arg, int timeout_s, const char *what);
/* ... until counters.eventsDelivered >= min. */
json_t *tu_instance_wait_events(struct tu_server *srv, const char *id, long long min,
                                int timeout_s);
/* ... until running is false. */
json_t *tu_instance_wait_stopped(struct tu_server *srv, const char *id, int timeout_s);

/* GET path polled until the array at json path `list` (e.g. "orders") has
 * at least n items; returns the body. */
json_t *tu_wait_list(struct tu_server *srv, const char *path, const char *list, size_t n,
                     int timeout_s);

/* HTTPS requests of this process trust the certificate in `pem_path` (a
 * copy of the path is kept; NULL goes back to the system's). */
void tu_trust_certificate(const char *pem_path);

/* The server's log lines as an array of objects; instance non-NULL keeps
 * the lines whose "instance" field is that id. */
json_t *tu_log_entries(const struct tu_server *srv, const char *instance);
/* Messages a strategy logged as helpers.log('<tag>', value): the values
 * (the rest of the message parsed as JSON), in order. */
json_t *tu_log_values(const struct tu_server *srv, const char *instance, const char *tag);
/* Waits until at least n such values exist; returns them all. */
json_t *tu_wait_log_values(struct tu_server *srv, const char *instance, const char *tag, size_t n,
                           int timeout_s);
/* Waits for a log line of `instance` (NULL: any) whose msg starts with
 * `prefix`; returns it (new reference). */
json_t *tu_wait_log(struct tu_server *srv, const char *instance, const char *prefix, int timeout_s);
/* Starts `n` threads that spin at the normal scheduling class until
 * tu_busy_threads_stop(), which is safe to call when none run (a test's
 * teardown). One set at a time. */
void tu_busy_threads_start(size_t n);
void tu_busy_threads_stop(void);
/* The server's log lines (of `instance`; NULL: all) whose message starts
 * with `prefix`, as objects in order (new reference), and how many of all
 * there are. */
json_t *tu_log_lines(const struct tu_server *srv, const char *instance, const char *prefix);
size_t tu_log_count(const struct tu_server *srv, const char *prefix);
/* Sends SIGHUP and waits for the nth log line starting with `says`. */
void tu_hangup_and_wait(struct tu_server *srv, const char *says, size_t nth);

/* A sample of GET /metrics, given exactly as exposed ("name{labels}" or
 * "name"); -1 when absent. */
double tu_metric(struct tu_server *srv, const char *sample);
/* Waits until the sample reads `value` (a stop's counter is bumped just
 * after the snapshot and the log show the stop). */
void tu_wait_metric(struct tu_server *srv, const char *sample, double value);

/* Sleeps for ms milliseconds (for polling loops). */
void tu_sleep_ms(int ms);

/* ---- refresh, metrics and waits (the operations suites) ---- */
/* POST /strategy/instances/{id}/{action} ("start" or "stop"); asserts the
 * status (an error status: a JSON error body) and returns the body (new
 * reference). */
json_t *tu_ops_action(struct tu_server *srv, const char *id, const char *action, long status);
/* POST /strategies/refresh with body (NULL: no body at all); asserts the
 * status and returns the body (new reference). */
json_t *tu_ops_refresh(struct tu_server *srv, const char *body, long status);
/* The refresh result of one instance (results[i].instances == [id]), or
 * NULL. */
const json_t *tu_ops_refresh_result(const json_t *response, const char *id);
/* GET /metrics: asserts 200 and a text/plain Content-Type; the body. */
char *tu_ops_metrics(struct tu_server *srv);
/* The sum of the samples of metric `name` (in the exposition `text`) whose
 * labels include every ("label", "value") pair given, then NULL; label
 * values are compared unescaped. NAN when no sample matches. */
double tu_ops_metric(const char *text, const char *name, ...) __attribute__((sentinel));
/* How many samples of `name` carry every given pair (same arguments). */
int tu_ops_metric_count(const char *text, const char *name, ...) __attribute__((sentinel));
/* Runs `promtool check metrics` over text; returns its exit status (-1 when
 * promtool cannot run) and its output in *output (when non-NULL). */
int tu_ops_promtool(const char *text, char **output);
/* Calls until(ctx) every 20 ms until it returns true or `seconds` pass;
 * returns its last answer. Waits are bounded and never asserted as
 * timings. */
bool tu_ops_wait_until(bool (*until)(void *ctx), void *ctx, int seconds);

#endif
