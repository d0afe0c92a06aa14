/*
 * config: the gateway's settings, from embedded defaults, then the YAML file
 * (--config or STRATD_CONFIG), then command-line flags, each overriding the
 * one before.
 *
 * The YAML file is read into a JSON tree (plain scalars typed as integer,
 * float, boolean or null when they look like one) and checked key by key:
 * an unknown key or a value of the wrong type is an error naming its path
 * ("http.max_body_bytes: expected a non-negative integer"), so a typo never
 * silently falls back to a default.
 *
 * Contract: config_init() sets defaults; config_load_file() may be called
 * once; config_free() releases everything. Single-threaded (start-up only).
 */
#ifndef STRATD_CMD_CONFIG_H
#define STRATD_CMD_CONFIG_H

#include "api/api.h"
#include "core/err.h"

#include <jansson.h>
#include <stdbool.h>

struct config {
    char *listen_host;
    int listen_port;
    char *strategies_dir;
    char *state_dir;
    char *environment;
    char *log_level;
    int workers;
    struct api_limits http;
    struct js_limits instance_limits;
    int max_consecutive_errors;
    size_t queue_capacity;
    int log_lines_per_second;
    int max_orders_per_second; /* runtime_options' meaning: 0 default, negative off */
    int event_poll_us;
    bool keep_orders_on_failure; /* runtime.cancel_orders_on_failure: false */
    struct js_limits validation_limits;
    struct api_token *tokens;
    size_t ntokens;
    bool metrics_require_token;
    json_t *providers;             /* array of ProviderRequest objects */
    long long history_retention_s; /* 0: the order history is kept whole */
    char *tls_certificate_path;    /* http.tls_certificate; NULL: plain HTTP */
    char *tls_key_path;            /* http.tls_key; set together with the certificate */
};

/* Orders and executions are kept 30 days by default (history.retention_seconds). */
#define CONFIG_HISTORY_RETENTION_S (30LL * 86400)

void config_init(struct config *cfg);
void config_free(struct config *cfg);
int config_load_file(struct config *cfg, const char *path, struct err *err);
/* Parses YAML text into JSON (exposed for tests and fuzzing). */
json_t *config_yaml_to_json(const char *text, size_t len, struct err *err);
/* Applies a JSON document already converted from YAML. */
int config_apply(struct config *cfg, const json_t *doc, struct err *err);
/* "HOST:PORT" or "[IPV6]:PORT" -> host (without the brackets) and port. */
int config_parse_listen(const char *text, char **host, int *port, struct err *err);
bool config_is_loopback(const char *host);

#endif
