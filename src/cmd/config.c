#include "cmd/config.h"

#include "market/market.h"

#include "core/fsutil.h"
#include "core/hash.h"
#include "core/jsonutil.h"
#include "core/log.h"
#include "core/names.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define CONFIG_MAX_BYTES (1u << 20)
#define YAML_MAX_DEPTH 32

/* ------------------------------------------------------------ defaults */

void config_init(struct config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->listen_host = strdup("127.0.0.1");
    cfg->listen_port = 8880;
    cfg->strategies_dir = strdup("./strategies");
    cfg->state_dir = strdup("./var");
    cfg->environment = strdup("dev");
    cfg->log_level = strdup("info");
    cfg->event_poll_us = RUNTIME_EVENT_POLL_US;
    cfg->history_retention_s = CONFIG_HISTORY_RETENTION_S;
    cfg->providers = json_array();
}

void config_free(struct config *cfg)
{
    free(cfg->listen_host);
    free(cfg->strategies_dir);
    free(cfg->state_dir);
    free(cfg->environment);
    free(cfg->log_level);
    free(cfg->tokens);
    free(cfg->tls_certificate_path);
    free(cfg->tls_key_path);
    json_decref(cfg->providers);
    memset(cfg, 0, sizeof *cfg);
}

/* --------------------------------------------------------- YAML -> JSON */

struct yaml_reader {
    yaml_parser_t parser;
    struct err *err;
};

static json_t *typed_scalar(const yaml_event_t *ev)
{
    const char *v = (const char *)ev->data.scalar.value;
    size_t len = ev->data.scalar.length;
    if (ev->data.scalar.style != YAML_PLAIN_SCALAR_STYLE)
        return jsonutil_string_lossy(v, len);
    if (len == 0 || strcmp(v, "~") == 0 || strcmp(v, "null") == 0)
        return json_null();
    if (strcmp(v, "true") == 0)
        return json_true();
    if (strcmp(v, "false") == 0)
        return json_false();
    char *end = NULL;
    errno = 0;
    long long i = strtoll(v, &end, 10);
    if (*end == '\0' && errno == 0)
        return json_integer(i);
    errno = 0;
    double d = strtod(v, &end);
    if (*end == '\0' && errno == 0 && isfinite(d))
        return json_real(d);
    return jsonutil_string_lossy(v, len);
}

static int next_event(struct yaml_reader *r, yaml_event_t *ev)
{
    if (yaml_parser_parse(&r->parser, ev))
        return 0;
    err_set(r->err, ERR_INVALID, "YAML error at line %zu, column %zu: %s",
            r->parser.problem_mark.line + 1, r->parser.problem_mark.column + 1,
            r->parser.problem ? r->parser.problem : "unknown");
    return -1;
}

static json_t *read_node(struct yaml_reader *r, yaml_event_t *ev, int depth);

static json_t *read_sequence(struct yaml_reader *r, int depth)
{
    json_t *arr = json_array();
    for (;;) {
        yaml_event_t ev;
        if (next_event(r, &ev) != 0)
            break;
        if (ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&ev);
            return arr;
        }
        json_t *item = read_node(r, &ev, depth + 1);
        yaml_event_delete(&ev);
        if (!item)
            break;
        json_array_append_new(arr, item);
    }
    json_decref(arr);
    return NULL;
}

static json_t *read_mapping(struct yaml_reader *r, int depth)
{
    json_t *obj = json_object();
    for (;;) {
        yaml_event_t key;
        if (next_event(r, &key) != 0)
            break;
        if (key.type == YAML_MAPPING_END_EVENT) {
            yaml_event_delete(&key);
            return obj;
        }
        if (key.type != YAML_SCALAR_EVENT) {
            err_set(r->err, ERR_INVALID, "YAML line %zu: mapping keys must be plain strings",
                    key.start_mark.line + 1);
            yaml_event_delete(&key);
            break;
        }
        char *name = strndup((const char *)key.data.scalar.value, key.data.scalar.length);
        size_t line = key.start_mark.line + 1;
        yaml_event_delete(&key);
        yaml_event_t value;
        json_t *v = NULL;
        if (name && next_event(r, &value) == 0) {
            v = read_node(r, &value, depth + 1);
            yaml_event_delete(&value);
        }
        if (v && json_object_get(obj, name)) {
            err_set(r->err, ERR_INVALID, "YAML line %zu: key '%s' appears twice", line, name);
            json_decref(v);
            v = NULL;
        }
        if (v)
            json_object_set_new(obj, name, v);
        free(name);
        if (!v)
            break;
    }
    json_decref(obj);
    return NULL;
}

static json_t *read_node(struct yaml_reader *r, yaml_event_t *ev, int depth)
{
    if (depth > YAML_MAX_DEPTH) {
        err_set(r->err, ERR_INVALID, "YAML nested deeper than %d levels", YAML_MAX_DEPTH);
        return NULL;
    }
    switch (ev->type) {
    case YAML_SCALAR_EVENT:
        return typed_scalar(ev);
    case YAML_SEQUENCE_START_EVENT:
        return read_sequence(r, depth);
    case YAML_MAPPING_START_EVENT:
        return read_mapping(r, depth);
    case YAML_ALIAS_EVENT:
        err_set(r->err, ERR_INVALID, "YAML line %zu: aliases are not supported",
                ev->start_mark.line + 1);
        return NULL;
    default:
        err_set(r->err, ERR_INVALID, "YAML line %zu: unexpected content", ev->start_mark.line + 1);
        return NULL;
    }
}

json_t *config_yaml_to_json(const char *text, size_t len, struct err *err)
{
    struct yaml_reader r = {.err = err};
    if (!yaml_parser_initialize(&r.parser)) {
        err_set(err, ERR_INTERNAL, "cannot start the YAML parser");
        return NULL;
    }
    yaml_parser_set_input_string(&r.parser, (const unsigned char *)text, len);
    json_t *doc = NULL;
    bool done = false;
    while (!done) {
        yaml_event_t ev;
        if (next_event(&r, &ev) != 0)
            break;
        switch (ev.type) {
        case YAML_STREAM_END_EVENT:
            done = true;
            break;
        case YAML_STREAM_START_EVENT:
        case YAML_DOCUMENT_START_EVENT:
        case YAML_DOCUMENT_END_EVENT:
            break;
        default:
            if (doc) {
                err_set(err, ERR_INVALID, "the configuration must be a single YAML document");
                json_decref(doc);
                doc = NULL;
                done = true;
                break;
            }
            doc = read_node(&r, &ev, 0);
            if (!doc)
                done = true;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&r.parser);
    if (json_is_null(doc)) {
        json_decref(doc);
        doc = json_object();
    }
    if (!doc && err && err->kind == ERR_NONE)
        doc = json_object(); /* an empty file */
    return doc;
}

/* ------------------------------------------------------ checked fields */

struct field {
    const char *key;
    enum { F_STRING, F_UINT, F_BOOL, F_SECTION, F_ANY } type;
};

static int check_keys(const json_t *obj, const char *path, const struct field *fields, size_t n,
                      struct err *err)
{
    if (!json_is_object(obj)) {
        err_set(err, ERR_INVALID, "%s: expected a mapping", path[0] ? path : "configuration");
        return -1;
    }
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        size_t i = 0;
        while (i < n && strcmp(fields[i].key, key) != 0)
            i++;
        const char *dot = path[0] ? "." : "";
        if (i == n) {
            err_set(err, ERR_INVALID, "%s%s%s: unknown setting", path, dot, key);
            return -1;
        }
        bool ok = true;
        switch (fields[i].type) {
        case F_STRING:
            ok = json_is_string(value);
            break;
        case F_UINT:
            ok = json_is_integer(value) && json_integer_value(value) >= 0;
            break;
        case F_BOOL:
            ok = json_is_boolean(value);
            break;
        case F_SECTION:
            ok = json_is_object(value);
            break;
        case F_ANY:
            break;
        }
        if (!ok) {
            static const char *const expected[] = {"a string", "a non-negative integer",
                                                   "true or false", "a mapping", ""};
            err_set(err, ERR_INVALID, "%s%s%s: expected %s", path, dot, key,
                    expected[fields[i].type]);
            return -1;
        }
    }
    return 0;
}

static void take_string(const json_t *obj, const char *key, char **slot)
{
    const char *v = json_string_value(json_object_get(obj, key));
    if (v) {
        char *copy = strdup(v);
        if (copy) {
            free(*slot);
            *slot = copy;
        }
    }
}

static long long uint_or(const json_t *obj, const char *key, long long fallback)
{
    json_t *v = json_object_get(obj, key);
    return json_is_integer(v) ? json_integer_value(v) : fallback;
}

/* An integer setting above `max` is refused rather than wrapped. */
/* A value below min would otherwise reach code that reads 0 as "use the
 * default": refused, like one above max. */
static int check_range(const json_t *obj, const char *path, const char *key, long long min,
                       long long max, struct err *err)
{
    json_t *v = json_object_get(obj, key);
    if (json_is_integer(v) && json_integer_value(v) > max) {
        err_set(err, ERR_INVALID, "%s.%s: at most %lld", path, key, max);
        return -1;
    }
    if (json_is_integer(v) && json_integer_value(v) < min) {
        err_set(err, ERR_INVALID, "%s.%s: at least %lld", path, key, min);
        return -1;
    }
    return 0;
}

struct bound {
    const char *key;
    long long min, max;
};

static int check_bounds(const json_t *obj, const char *path, const struct bound *bounds, size_t n,
                        struct err *err)
{
    for (size_t i = 0; i < n; i++) {
        if (check_range(obj, path, bounds[i].key, bounds[i].min, bounds[i].max, err) != 0)
            return -1;
    }
    return 0;
}

/* http.tls_certificate and http.tls_key: both or neither, each a path. */
static int apply_tls(struct config *cfg, const json_t *http, struct err *err)
{
    const char *cert = json_string_value(json_object_get(http, "tls_certificate"));
    const char *key = json_string_value(json_object_get(http, "tls_key"));
    if ((cert && !*cert) || (key && !*key)) {
        err_set(err, ERR_INVALID, "http.%s: must not be empty",
                cert && !*cert ? "tls_certificate" : "tls_key");
        return -1;
    }
    if (!cert != !key) {
        err_set(err, ERR_INVALID,
                "http.%s is set without http.%s: HTTPS needs both the certificate and its key",
                cert ? "tls_certificate" : "tls_key", cert ? "tls_key" : "tls_certificate");
        return -1;
    }
    take_string(http, "tls_certificate", &cfg->tls_certificate_path);
    take_string(http, "tls_key", &cfg->tls_key_path);
    return 0;
}

static int apply_http(struct config *cfg, const json_t *http, struct err *err)
{
    static const struct field fields[] = {
        {"max_body_bytes", F_UINT},          {"max_header_bytes", F_UINT},
        {"max_url_bytes", F_UINT},           {"max_connections", F_UINT},
        {"idle_timeout_seconds", F_UINT},    {"threads", F_UINT},
        {"rate_limit_per_second", F_UINT},   {"rate_limit_burst", F_UINT},
        {"request_timeout_seconds", F_UINT}, {"max_connections_per_address", F_UINT},
        {"tls_certificate", F_STRING},       {"tls_key", F_STRING},
    };
    static const struct bound bounds[] = {
        {"max_body_bytes", 1, 1LL << 30},      {"max_header_bytes", 1024, 1LL << 20},
        {"max_url_bytes", 256, 1LL << 20},     {"max_connections", 1, 1000000},
        {"idle_timeout_seconds", 1, 86400},    {"threads", 1, 256},
        {"rate_limit_per_second", 0, 1000000}, {"rate_limit_burst", 0, 1000000},
        {"request_timeout_seconds", 1, 86400}, {"max_connections_per_address", 0, 1000000},
    };
    if (check_keys(http, "http", fields, sizeof fields / sizeof fields[0], err) != 0 ||
        check_bounds(http, "http", bounds, sizeof bounds / sizeof bounds[0], err) != 0 ||
        apply_tls(cfg, http, err) != 0)
        return -1;
    struct api_limits *l = &cfg->http;
    l->max_body_bytes = (size_t)uint_or(http, "max_body_bytes", (long long)l->max_body_bytes);
    l->max_header_bytes = (size_t)uint_or(http, "max_header_bytes", (long long)l->max_header_bytes);
    l->max_url_bytes = (size_t)uint_or(http, "max_url_bytes", (long long)l->max_url_bytes);
    l->max_connections = (unsigned)uint_or(http, "max_connections", l->max_connections);
    l->max_connections_per_address =
        (unsigned)uint_or(http, "max_connections_per_address", l->max_connections_per_address);
    l->idle_timeout_s = (unsigned)uint_or(http, "idle_timeout_seconds", l->idle_timeout_s);
    l->request_timeout_s = (unsigned)uint_or(http, "request_timeout_seconds", l->request_timeout_s);
    l->threads = (unsigned)uint_or(http, "threads", l->threads);
    l->rate_per_second = (unsigned)uint_or(http, "rate_limit_per_second", l->rate_per_second);
    l->rate_burst = (unsigned)uint_or(http, "rate_limit_burst", l->rate_burst);
    return 0;
}

static int apply_runtime(struct config *cfg, const json_t *rt, struct err *err)
{
    static const struct field fields[] = {
        {"memory_limit_mb", F_UINT},        {"cpu_budget_ms", F_UINT},
        {"max_consecutive_errors", F_UINT}, {"queue_capacity", F_UINT},
        {"log_lines_per_second", F_UINT},   {"stack_limit_kb", F_UINT},
        {"event_poll_us", F_UINT},          {"cancel_orders_on_failure", F_BOOL},
        {"max_orders_per_second", F_UINT},
    };
    /* The same ceilings as an instance's own memory_limit_mb and
     * cpu_budget_ms; none lets a value wrap when scaled or narrowed. */
    static const struct bound bounds[] = {
        {"memory_limit_mb", 1, 65536},
        {"cpu_budget_ms", 1, 3600LL * 1000},
        {"max_consecutive_errors", 1, INT_MAX},
        {"queue_capacity", 1, 1LL << 24},
        {"log_lines_per_second", 1, INT_MAX},
        {"stack_limit_kb", 1, 1LL << 16},
        {"event_poll_us", 0, 10000},
        {"max_orders_per_second", 0, 100000000},
    };
    if (check_keys(rt, "runtime", fields, sizeof fields / sizeof fields[0], err) != 0 ||
        check_bounds(rt, "runtime", bounds, sizeof bounds / sizeof bounds[0], err) != 0)
        return -1;
    struct js_limits *l = &cfg->instance_limits;
    l->memory_bytes = (size_t)uint_or(rt, "memory_limit_mb", (long long)(l->memory_bytes >> 20))
                      << 20;
    l->stack_bytes = (size_t)uint_or(rt, "stack_limit_kb", (long long)(l->stack_bytes >> 10)) << 10;
    l->budget_ns = uint_or(rt, "cpu_budget_ms", l->budget_ns / 1000000) * 1000000;
    cfg->max_consecutive_errors =
        (int)uint_or(rt, "max_consecutive_errors", cfg->max_consecutive_errors);
    cfg->queue_capacity = (size_t)uint_or(rt, "queue_capacity", (long long)cfg->queue_capacity);
    cfg->log_lines_per_second = (int)uint_or(rt, "log_lines_per_second", cfg->log_lines_per_second);
    cfg->event_poll_us = (int)uint_or(rt, "event_poll_us", cfg->event_poll_us);
    /* 0 in the file turns the limit off; the runtime reads 0 as its default */
    const json_t *rate = json_object_get(rt, "max_orders_per_second");
    if (rate)
        cfg->max_orders_per_second =
            json_integer_value(rate) > 0 ? (int)json_integer_value(rate) : -1;
    const json_t *cancel = json_object_get(rt, "cancel_orders_on_failure");
    if (cancel)
        cfg->keep_orders_on_failure = json_is_false(cancel);
    return 0;
}

static int apply_validation(struct config *cfg, const json_t *v, struct err *err)
{
    static const struct field fields[] = {{"memory_limit_mb", F_UINT}, {"budget_ms", F_UINT}};
    static const struct bound bounds[] = {{"memory_limit_mb", 1, 65536},
                                          {"budget_ms", 1, 3600LL * 1000}};
    if (check_keys(v, "validation", fields, 2, err) != 0 ||
        check_bounds(v, "validation", bounds, 2, err) != 0)
        return -1;
    struct js_limits *l = &cfg->validation_limits;
    l->memory_bytes = (size_t)uint_or(v, "memory_limit_mb", (long long)(l->memory_bytes >> 20))
                      << 20;
    l->budget_ns = uint_or(v, "budget_ms", l->budget_ns / 1000000) * 1000000;
    return 0;
}

static int apply_history(struct config *cfg, const json_t *h, struct err *err)
{
    static const struct field fields[] = {{"retention_seconds", F_UINT}};
    static const struct bound bounds[] = {{"retention_seconds", 0, 100LL * 366 * 86400}};
    if (check_keys(h, "history", fields, 1, err) != 0 ||
        check_bounds(h, "history", bounds, 1, err) != 0)
        return -1;
    cfg->history_retention_s = uint_or(h, "retention_seconds", cfg->history_retention_s);
    return 0;
}

static int parse_token(const json_t *t, size_t index, struct api_token *out, struct err *err)
{
    static const struct field fields[] = {
        {"name", F_STRING}, {"sha256", F_STRING}, {"role", F_STRING}};
    char path[48];
    snprintf(path, sizeof path, "auth.tokens[%zu]", index);
    if (check_keys(t, path, fields, 3, err) != 0)
        return -1;
    const char *name = json_string_value(json_object_get(t, "name"));
    const char *sha = json_string_value(json_object_get(t, "sha256"));
    const char *role = json_string_value(json_object_get(t, "role"));
    if (!name || !names_valid_id(name)) {
        err_set(err, ERR_INVALID, "%s.name: required, letters, digits, '.', '_' or '-'", path);
        return -1;
    }
    if (!sha || !hash_parse_full(sha, out->sha256_hex)) {
        err_set(err, ERR_INVALID,
                "%s.sha256: required, the SHA-256 of the token in hex "
                "(printf %%s \"$TOKEN\" | sha256sum)",
                path);
        return -1;
    }
    if (!role || (strcmp(role, "read") != 0 && strcmp(role, "admin") != 0)) {
        err_set(err, ERR_INVALID, "%s.role: must be read or admin", path);
        return -1;
    }
    snprintf(out->name, sizeof out->name, "%s", name);
    out->role = strcmp(role, "admin") == 0 ? API_ROLE_ADMIN : API_ROLE_READ;
    return 0;
}

static int apply_auth(struct config *cfg, const json_t *auth, struct err *err)
{
    static const struct field fields[] = {{"tokens", F_ANY}, {"metrics_require_token", F_BOOL}};
    if (check_keys(auth, "auth", fields, 2, err) != 0)
        return -1;
    cfg->metrics_require_token = json_is_true(json_object_get(auth, "metrics_require_token"));
    json_t *tokens = json_object_get(auth, "tokens");
    if (!tokens)
        return 0;
    if (!json_is_array(tokens)) {
        err_set(err, ERR_INVALID, "auth.tokens: expected a list");
        return -1;
    }
    size_t n = json_array_size(tokens);
    struct api_token *list = calloc(n ? n : 1, sizeof *list);
    if (!list) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        if (parse_token(json_array_get(tokens, i), i, &list[i], err) != 0) {
            free(list);
            return -1;
        }
    }
    free(cfg->tokens);
    cfg->tokens = list;
    cfg->ntokens = n;
    return 0;
}

/* A provider of the file checked as the API would create it, before
 * anything is opened, its errors naming where it is in the file; a name
 * given twice is refused here too. */
static int check_provider(const json_t *earlier, const json_t *req, const char *path,
                          struct err *err)
{
    const char *name = json_string_value(json_object_get(req, "name"));
    char where[96];
    snprintf(where, sizeof where, "%s%s%.40s%s", path, name ? " (" : "", name ? name : "",
             name ? ")" : "");
    struct err why = ERR_INIT;
    json_t *canonical = market_provider_request_canonical(req, &why);
    if (!canonical) {
        err_set(err, ERR_INVALID, "%s: %s", where, why.message);
        err_clear(&why);
        return -1;
    }
    json_decref(canonical);
    size_t i;
    json_t *p;
    json_array_foreach(earlier, i, p)
    {
        const char *other = json_string_value(json_object_get(p, "name"));
        if (name && other && strcmp(name, other) == 0) {
            err_set(err, ERR_INVALID, "%s: the name %s is taken by providers[%zu]", where, name, i);
            return -1;
        }
    }
    return 0;
}

/* Providers in the file use the API's ProviderRequest shape, with
 * `adapter` also accepted as a bare identifier string. */
static int apply_providers(struct config *cfg, const json_t *providers, struct err *err)
{
    if (!json_is_array(providers)) {
        err_set(err, ERR_INVALID, "providers: expected a list");
        return -1;
    }
    json_t *list = json_array();
    size_t i;
    json_t *p;
    json_array_foreach(providers, i, p)
    {
        static const struct field fields[] = {
            {"name", F_STRING}, {"adapter", F_ANY}, {"enabled", F_BOOL}, {"config", F_SECTION}};
        char path[32];
        snprintf(path, sizeof path, "providers[%zu]", i);
        if (check_keys(p, path, fields, 4, err) != 0) {
            json_decref(list);
            return -1;
        }
        if (json_is_object(json_object_get(p, "adapter")) && json_object_get(p, "config")) {
            /* it would otherwise be dropped, and the defaults run instead */
            err_set(err, ERR_INVALID,
                    "%s.config: with an adapter mapping the settings go in adapter.config", path);
            json_decref(list);
            return -1;
        }
        json_t *req = json_deep_copy(p);
        if (!req) {
            err_set(err, ERR_INTERNAL, "out of memory");
            json_decref(list);
            return -1;
        }
        json_t *adapter = json_object_get(req, "adapter");
        if (json_is_string(adapter)) {
            json_t *config = json_object_get(req, "config");
            json_t *a = json_pack("{s:O, s:O}", "identifier", adapter, "config",
                                  config ? config : json_object());
            if (!config)
                json_decref(json_object_get(a, "config"));
            json_object_set_new(req, "adapter", a);
            json_object_del(req, "config");
        }
        if (check_provider(list, req, path, err) != 0) {
            json_decref(req);
            json_decref(list);
            return -1;
        }
        json_array_append_new(list, req);
    }
    json_decref(cfg->providers);
    cfg->providers = list;
    return 0;
}

/* The top-level texts that must say something: a directory, the label of
 * every series, a level the log knows. */
static int check_texts(const json_t *doc, struct err *err)
{
    static const char *const named[] = {"strategies", "state", "environment"};
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        const char *v = json_string_value(json_object_get(doc, named[i]));
        if (v && !*v) {
            err_set(err, ERR_INVALID, "%s: must not be empty", named[i]);
            return -1;
        }
    }
    const char *level = json_string_value(json_object_get(doc, "log_level"));
    enum log_level parsed;
    if (level && log_parse_level(level, &parsed) != 0) {
        err_set(err, ERR_INVALID, "log_level: '%.40s' is not a level (debug, info, warn, error)",
                level);
        return -1;
    }
    return 0;
}

int config_apply(struct config *cfg, const json_t *doc, struct err *err)
{
    static const struct field fields[] = {
        {"listen", F_STRING},      {"strategies", F_STRING}, {"state", F_STRING},
        {"environment", F_STRING}, {"log_level", F_STRING},  {"workers", F_UINT},
        {"http", F_SECTION},       {"runtime", F_SECTION},   {"validation", F_SECTION},
        {"auth", F_SECTION},       {"providers", F_ANY},     {"history", F_SECTION},
    };
    if (check_keys(doc, "", fields, sizeof fields / sizeof fields[0], err) != 0)
        return -1;
    /* As --workers. */
    const json_t *workers = json_object_get(doc, "workers");
    if (json_is_integer(workers) && json_integer_value(workers) > 256) {
        err_set(err, ERR_INVALID, "workers: at most 256");
        return -1;
    }
    const char *listen = json_string_value(json_object_get(doc, "listen"));
    if (listen) {
        char *host = NULL;
        int port = 0;
        if (config_parse_listen(listen, &host, &port, err) != 0)
            return -1;
        free(cfg->listen_host);
        cfg->listen_host = host;
        cfg->listen_port = port;
    }
    if (check_texts(doc, err) != 0)
        return -1;
    take_string(doc, "strategies", &cfg->strategies_dir);
    take_string(doc, "state", &cfg->state_dir);
    take_string(doc, "environment", &cfg->environment);
    take_string(doc, "log_level", &cfg->log_level);
    cfg->workers = (int)uint_or(doc, "workers", cfg->workers);
    json_t *v;
    if ((v = json_object_get(doc, "http")) && apply_http(cfg, v, err) != 0)
        return -1;
    if ((v = json_object_get(doc, "runtime")) && apply_runtime(cfg, v, err) != 0)
        return -1;
    if ((v = json_object_get(doc, "validation")) && apply_validation(cfg, v, err) != 0)
        return -1;
    if ((v = json_object_get(doc, "auth")) && apply_auth(cfg, v, err) != 0)
        return -1;
    if ((v = json_object_get(doc, "history")) && apply_history(cfg, v, err) != 0)
        return -1;
    if ((v = json_object_get(doc, "providers")) && apply_providers(cfg, v, err) != 0)
        return -1;
    return 0;
}

int config_load_file(struct config *cfg, const char *path, struct err *err)
{
    char *text = NULL;
    size_t len = 0;
    if (fsutil_read_file(path, CONFIG_MAX_BYTES, &text, &len, err) != 0)
        return -1;
    json_t *doc = config_yaml_to_json(text, len, err);
    free(text);
    if (!doc) {
        char msg[ERR_MESSAGE_MAX];
        snprintf(msg, sizeof msg, "%s", err ? err->message : "");
        err_set(err, ERR_INVALID, "%s: %s", path, msg);
        return -1;
    }
    int rc = config_apply(cfg, doc, err);
    json_decref(doc);
    if (rc != 0 && err) {
        char msg[ERR_MESSAGE_MAX];
        snprintf(msg, sizeof msg, "%s", err->message);
        err_set(err, ERR_INVALID, "%s: %s", path, msg);
    }
    return rc;
}

int config_parse_listen(const char *text, char **host, int *port, struct err *err)
{
    const char *colon = strrchr(text, ':');
    const char *name = text;
    size_t name_len = colon ? (size_t)(colon - text) : 0;
    bool bracketed = text[0] == '[';
    if (bracketed) { /* [IPv6]:port */
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || close == text + 1) {
            err_set(err, ERR_INVALID,
                    "listen address '%s' must be [IPV6]:PORT with the address in brackets", text);
            return -1;
        }
        name = text + 1;
        name_len = (size_t)(close - name);
        colon = close + 1;
    } else if (colon && memchr(text, ':', name_len)) {
        err_set(err, ERR_INVALID,
                "listen address '%s': write an IPv6 address in brackets, as [::1]:8880", text);
        return -1;
    }
    char *end = NULL;
    long p = colon ? strtol(colon + 1, &end, 10) : -1;
    if (!colon || name_len == 0 || !end || *end || colon[1] == '\0' || p < 0 || p > 65535) {
        err_set(err, ERR_INVALID, "listen address '%s' must be HOST:PORT (port 0-65535)", text);
        return -1;
    }
    *host = strndup(name, name_len);
    if (!*host) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    *port = (int)p;
    return 0;
}

bool config_is_loopback(const char *host)
{
    return strncmp(host, "127.", 4) == 0 || strcmp(host, "localhost") == 0 ||
           strcmp(host, "::1") == 0;
}
