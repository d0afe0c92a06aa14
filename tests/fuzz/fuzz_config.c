/*
 * The YAML configuration: config_yaml_to_json() and config_apply() on a
 * fresh struct config, then config_load_file() on the same bytes written to
 * a file (the path `stratd serve --config` takes).
 *
 * Invariants: failures are ERR_INVALID with a message; both paths agree; a
 * configuration that applies holds exactly the values it gave (a number is
 * refused rather than wrapped or cut), and leaves every string set.
 */
#include "fuzzutil.h"

#include "cmd/config.h"
#include "core/log.h"

#include <unistd.h>

static char config_path[512];

static void remove_config_path(void)
{
    unlink(config_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LEVEL_ERROR);
    snprintf(config_path, sizeof config_path, "%s/stratd-fuzz-config-XXXXXX", fuzz_tmpdir());
    int fd = mkstemp(config_path);
    fuzz_check(fd >= 0, "cannot create %s", config_path);
    close(fd);
    atexit(remove_config_path);
    return 0;
}

static void write_config(const uint8_t *data, size_t size)
{
    FILE *f = fopen(config_path, "wb");
    fuzz_check(f && fwrite(data, 1, size, f) == size && fclose(f) == 0, "cannot write %s",
               config_path);
}

/* The integer a section gave for key, or -1 when absent. */
static long long given(const json_t *doc, const char *section, const char *key)
{
    const json_t *obj = section ? json_object_get(doc, section) : doc;
    const json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? json_integer_value(v) : -1;
}

static void check_taken(const char *what, long long given_value, long long taken)
{
    fuzz_check(given_value < 0 || given_value == taken, "%s: %lld became %lld", what, given_value,
               taken);
}

static void check_applied(const struct config *cfg, const json_t *doc)
{
    fuzz_check(cfg->listen_host && cfg->strategies_dir && cfg->state_dir && cfg->environment &&
                   cfg->log_level,
               "a string setting is unset");
    fuzz_check(cfg->listen_port >= 0 && cfg->listen_port <= 65535, "port %d", cfg->listen_port);
    fuzz_check(json_is_array(cfg->providers), "providers is not a list");
    fuzz_check(cfg->ntokens == 0 || cfg->tokens, "tokens lost");
    check_taken("workers", given(doc, NULL, "workers"), cfg->workers);
    const struct api_limits *h = &cfg->http;
    check_taken("http.max_body_bytes", given(doc, "http", "max_body_bytes"),
                (long long)h->max_body_bytes);
    check_taken("http.max_header_bytes", given(doc, "http", "max_header_bytes"),
                (long long)h->max_header_bytes);
    check_taken("http.max_url_bytes", given(doc, "http", "max_url_bytes"),
                (long long)h->max_url_bytes);
    check_taken("http.max_connections", given(doc, "http", "max_connections"), h->max_connections);
    check_taken("http.idle_timeout_seconds", given(doc, "http", "idle_timeout_seconds"),
                h->idle_timeout_s);
    check_taken("http.request_timeout_seconds", given(doc, "http", "request_timeout_seconds"),
                h->request_timeout_s);
    check_taken("http.threads", given(doc, "http", "threads"), h->threads);
    const struct js_limits *rt = &cfg->instance_limits;
    check_taken("runtime.memory_limit_mb", given(doc, "runtime", "memory_limit_mb"),
                (long long)(rt->memory_bytes >> 20));
    fuzz_check(rt->memory_bytes % (1u << 20) == 0, "runtime memory is not whole MiB");
    check_taken("runtime.stack_limit_kb", given(doc, "runtime", "stack_limit_kb"),
                (long long)(rt->stack_bytes >> 10));
    fuzz_check(rt->budget_ns >= 0 && rt->budget_ns % 1000000 == 0, "runtime budget %lld",
               (long long)rt->budget_ns);
    check_taken("runtime.cpu_budget_ms", given(doc, "runtime", "cpu_budget_ms"),
                rt->budget_ns / 1000000);
    check_taken("runtime.max_consecutive_errors", given(doc, "runtime", "max_consecutive_errors"),
                cfg->max_consecutive_errors);
    check_taken("runtime.queue_capacity", given(doc, "runtime", "queue_capacity"),
                (long long)cfg->queue_capacity);
    check_taken("runtime.log_lines_per_second", given(doc, "runtime", "log_lines_per_second"),
                cfg->log_lines_per_second);
    check_taken("runtime.event_poll_us", given(doc, "runtime", "event_poll_us"),
                cfg->event_poll_us);
    const struct js_limits *v = &cfg->validation_limits;
    check_taken("validation.memory_limit_mb", given(doc, "validation", "memory_limit_mb"),
                (long long)(v->memory_bytes >> 20));
    fuzz_check(v->budget_ns >= 0, "validation budget %lld", (long long)v->budget_ns);
    check_taken("validation.budget_ms", given(doc, "validation", "budget_ms"),
                v->budget_ns / 1000000);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err err = ERR_INIT;
    struct config cfg;
    config_init(&cfg);
    json_t *doc = config_yaml_to_json((const char *)data, size, &err);
    int rc = -1;
    if (!doc) {
        fuzz_check_err(&err, "config_yaml_to_json", FUZZ_KIND(ERR_INVALID));
    } else {
        rc = config_apply(&cfg, doc, &err);
        if (rc == 0)
            check_applied(&cfg, doc);
        else
            fuzz_check_err(&err, "config_apply", FUZZ_KIND(ERR_INVALID));
    }
    json_decref(doc);
    config_free(&cfg);
    err_clear(&err);

    write_config(data, size);
    config_init(&cfg);
    int file_rc = config_load_file(&cfg, config_path, &err);
    if (file_rc != 0)
        fuzz_check_err(&err, "config_load_file", FUZZ_KIND(ERR_INVALID));
    fuzz_check(file_rc == rc, "config_load_file says %d, the text says %d", file_rc, rc);
    config_free(&cfg);
    err_clear(&err);
    return 0;
}
