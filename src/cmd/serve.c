/*
 * stratd serve: wires the subsystems together and runs until SIGINT or
 * SIGTERM; SIGHUP reopens the audit log (log rotation) and reloads the
 * HTTPS certificate. A service manager hears each step (notify.h).
 *
 * Start-up order follows the dependencies: state (store), catalogue,
 * market (providers not yet started), runtime (given the market's order
 * hooks), providers, restored instances, and last the HTTP listener, so the
 * "listening on" line means everything behind it is ready. Shutdown runs in
 * the reverse order: no new requests, no new market events, instances
 * stopped, then the rest freed.
 */
#include "cmd/commands.h"
#include "cmd/config.h"
#include "cmd/notify.h"

#include "api/api.h"
#include "api/tls.h"
#include "core/clock.h"
#include "core/log.h"
#include "js/validate.h"
#include "market/market.h"
#include "registry/registry.h"
#include "runtime/runtime.h"
#include "store/store.h"

#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Metadata validated while the catalogue opens, saved once it has. */
struct pending_metadata {
    char hex[HASH_HEX_LEN + 1];
    json_t *metadata;
};

struct gateway {
    struct config cfg;
    struct store *store;
    struct catalog *catalog;
    struct market *market;
    struct runtime *runtime;
    struct api *api;
    struct api_tls *tls; /* loaded before anything opens; NULL: plain HTTP */
    /* While `batching`, revision_metadata (on the catalogue's verification
     * threads) collects what it validated instead of committing each entry:
     * a cold start over 10,000 revisions is then one transaction. */
    pthread_mutex_t pending_mu;
    bool batching;
    struct pending_metadata *pending;
    size_t npending, pending_cap;
    bool manager_deaf; /* a notification failed: said once, not again */
};

/* Room for the URL clients call: the host is an address literal or a short
 * name (config.c checks it). */
#define SERVE_URL_MAX 320

/* ------------------------------------------------------- command line */

static void serve_usage(FILE *out)
{
    fprintf(out,
            "usage: stratd serve [options]\n\n"
            "  --config FILE        YAML configuration (also STRATD_CONFIG)\n"
            "  --listen HOST:PORT   address to listen on (default 127.0.0.1:8880; an IPv6\n"
            "                       host in brackets, [::1]:8880; port 0 picks a free port)\n"
            "  --strategies DIR     strategy revisions and registry.json (default ./strategies)\n"
            "  --state DIR          database and audit log (default ./var)\n"
            "  --environment NAME   label for metrics (default dev)\n"
            "  --log-level LEVEL    debug, info, warn or error (default info)\n"
            "  --workers N          runtime worker threads (default: number of cores)\n"
            "  --check              read the configuration, the certificate and the\n"
            "                       catalogue as a start would, say what would be served\n"
            "                       and exit (0 as it is, 1 with problems, 2 refused),\n"
            "                       changing nothing; a running gateway may be serving\n"
            "                       the same directories\n");
}

struct flags {
    const char *config;
    const char *listen;
    const char *strategies;
    const char *state;
    const char *environment;
    const char *log_level;
    const char *workers;
    bool check;
};

static int parse_flags(int argc, char **argv, struct flags *f)
{
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"strategies", required_argument, NULL, 's'},
        {"state", required_argument, NULL, 'd'},
        {"environment", required_argument, NULL, 'e'},
        {"log-level", required_argument, NULL, 'v'},
        {"workers", required_argument, NULL, 'w'},
        {"check", no_argument, NULL, 'k'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    memset(f, 0, sizeof *f);
    f->config = getenv("STRATD_CONFIG");
    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'c':
            f->config = optarg;
            break;
        case 'l':
            f->listen = optarg;
            break;
        case 's':
            f->strategies = optarg;
            break;
        case 'd':
            f->state = optarg;
            break;
        case 'e':
            f->environment = optarg;
            break;
        case 'v':
            f->log_level = optarg;
            break;
        case 'w':
            f->workers = optarg;
            break;
        case 'k':
            f->check = true;
            break;
        case 'h':
            serve_usage(stdout);
            return 1;
        default:
            serve_usage(stderr);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "stratd serve: unexpected argument '%s'\n", argv[optind]);
        return -1;
    }
    return 0;
}

static void replace(char **slot, const char *value)
{
    if (!value)
        return;
    char *copy = strdup(value);
    if (copy) {
        free(*slot);
        *slot = copy;
    }
}

static int apply_flags(struct config *cfg, const struct flags *f, struct err *err)
{
    if (f->config && config_load_file(cfg, f->config, err) != 0)
        return -1;
    if (f->listen) {
        char *host = NULL;
        int port = 0;
        if (config_parse_listen(f->listen, &host, &port, err) != 0)
            return -1;
        free(cfg->listen_host);
        cfg->listen_host = host;
        cfg->listen_port = port;
    }
    replace(&cfg->strategies_dir, f->strategies);
    replace(&cfg->state_dir, f->state);
    replace(&cfg->environment, f->environment);
    replace(&cfg->log_level, f->log_level);
    if (f->workers) {
        char *end = NULL;
        long n = strtol(f->workers, &end, 10);
        if (*end || n < 0 || n > 256) {
            err_set(err, ERR_INVALID, "--workers must be an integer from 0 to 256");
            return -1;
        }
        cfg->workers = (int)n;
    }
    if (strcmp(cfg->listen_host, "localhost") == 0)
        replace(&cfg->listen_host, "127.0.0.1");
    return 0;
}

/* ------------------------------------------------------------ wiring */

/* Keeps one entry for flush_metadata; false when out of memory (the entry
 * is then saved on its own). */
static bool defer_metadata(struct gateway *gw, const char *hex, json_t *metadata)
{
    pthread_mutex_lock(&gw->pending_mu);
    bool ok = gw->npending < gw->pending_cap;
    if (!ok) {
        size_t cap = gw->pending_cap ? gw->pending_cap * 2 : 256;
        struct pending_metadata *grown = realloc(gw->pending, cap * sizeof *grown);
        if (grown) {
            gw->pending = grown;
            gw->pending_cap = cap;
            ok = true;
        }
    }
    if (ok) {
        struct pending_metadata *p = &gw->pending[gw->npending++];
        snprintf(p->hex, sizeof p->hex, "%s", hex);
        p->metadata = json_incref(metadata);
    }
    pthread_mutex_unlock(&gw->pending_mu);
    return ok;
}

/* Saves what defer_metadata collected in one transaction and stops
 * collecting. The table is a cache: a failure costs a validation at the
 * next start, so it is logged, not fatal. */
static void flush_metadata(struct gateway *gw)
{
    gw->batching = false;
    const char **hexes = calloc(gw->npending + 1, sizeof *hexes);
    json_t **values = calloc(gw->npending + 1, sizeof *values);
    struct err err = ERR_INIT;
    if (!hexes || !values)
        log_warn("serve", "metadata cache: out of memory saving %zu entries", gw->npending);
    for (size_t i = 0; hexes && values && i < gw->npending; i++) {
        hexes[i] = gw->pending[i].hex;
        values[i] = gw->pending[i].metadata;
    }
    if (hexes && values && gw->store &&
        store_metadata_put_many(gw->store, hexes, values, gw->npending, &err) != 0)
        log_warn("serve", "metadata cache: %s", err.message);
    err_clear(&err);
    for (size_t i = 0; i < gw->npending; i++)
        json_decref(gw->pending[i].metadata);
    free(hexes);
    free(values);
    free(gw->pending);
    gw->pending = NULL;
    gw->npending = gw->pending_cap = 0;
}

json_t *cmd_revision_metadata(struct store *store, const struct js_limits *limits, const char *name,
                              const char *hex, const char *source, size_t len, bool *validated,
                              char **reason)
{
    *validated = false;
    json_t *metadata = NULL;
    struct err err = ERR_INIT;
    if (store && store_metadata_get(store, hex, &metadata, &err) == 0 && metadata)
        return metadata;
    err_clear(&err);
    char filename[NAMES_STRATEGY_MAX + 4];
    snprintf(filename, sizeof filename, "%s.js", name);
    metadata = js_validate(source, len, filename, limits, &err);
    if (!metadata) {
        *reason = strdup(err.message);
        err_clear(&err);
        return NULL;
    }
    const char *declared = json_string_value(json_object_get(metadata, "name"));
    if (!declared || strcmp(declared, name) != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "metadata.name is '%s' but the revision is registered as '%s'",
                 declared ? declared : "", name);
        *reason = strdup(msg);
        json_decref(metadata);
        return NULL;
    }
    *validated = true;
    return metadata;
}

/* The catalogue's metadata callback: a new answer is cached, once per
 * batch while the catalogue loads. */
static json_t *revision_metadata(void *ctx, const char *name, const char *hex, const char *source,
                                 size_t len, char **reason)
{
    struct gateway *gw = ctx;
    bool validated = false;
    json_t *metadata = cmd_revision_metadata(gw->store, &gw->cfg.validation_limits, name, hex,
                                             source, len, &validated, reason);
    if (!metadata || !validated)
        return metadata;
    if (gw->batching && defer_metadata(gw, hex, metadata))
        return metadata;
    struct err err = ERR_INIT;
    if (gw->store && store_metadata_put(gw->store, hex, metadata, &err) != 0)
        log_warn("serve", "metadata cache: %s", err.message);
    err_clear(&err);
    return metadata;
}

static bool scope_check(void *ctx, const char *provider, const char *symbol)
{
    struct gateway *gw = ctx;
    return symbol ? market_has_symbol(gw->market, provider, symbol)
                  : market_has_provider(gw->market, provider);
}

static bool scope_leaving(void *ctx, const char *provider, const char *symbol)
{
    (void)symbol;
    struct gateway *gw = ctx;
    return market_provider_leaving(gw->market, provider);
}

static json_t *provider_dependents(void *ctx, const char *provider)
{
    struct gateway *gw = ctx;
    return gw->runtime ? runtime_provider_dependents(gw->runtime, provider) : NULL;
}

static json_t *default_providers(void)
{
    return json_pack("[{s:s, s:{s:s, s:{s:[s,s]}}, s:b}]", "name", "sim", "adapter", "identifier",
                     "simulated", "config", "symbols", "BTC-USDT", "ETH-USDT", "enabled", 1);
}

/* Providers from the configuration file (or the embedded `sim`), then those
 * created over the API and persisted, which win on a name clash. */
static int start_providers(struct gateway *gw, struct err *err)
{
    json_t *persisted = NULL;
    if (store_provider_list(gw->store, &persisted, err) != 0)
        return -1;
    json_t *configured =
        json_array_size(gw->cfg.providers) ? json_incref(gw->cfg.providers) : default_providers();
    int rc = 0;
    size_t i;
    json_t *p;
    json_array_foreach(configured, i, p)
    {
        const char *name = json_string_value(json_object_get(p, "name"));
        bool overridden = false;
        size_t j;
        json_t *q;
        json_array_foreach(persisted, j, q)
        {
            if (name && strcmp(json_string_value(json_object_get(q, "name")), name) == 0)
                overridden = true;
        }
        if (!overridden && market_provider_create(gw->market, p, NULL, err) != 0) {
            rc = -1;
            break;
        }
    }
    json_array_foreach(persisted, i, p)
    {
        if (rc == 0 && market_provider_create(gw->market, json_object_get(p, "spec"), NULL, err))
            rc = -1;
    }
    json_decref(configured);
    json_decref(persisted);
    return rc;
}

/* A strategies directory without registry.json beside a state that holds
 * instances is most likely the wrong directory (a mistyped --strategies, a
 * partial restore): served, it would retire every instance for good. */
static int check_strategies_dir(struct gateway *gw, struct err *err)
{
    char *path = NULL;
    if (asprintf(&path, "%s/registry.json", gw->cfg.strategies_dir) < 0) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    struct stat st;
    bool missing = lstat(path, &st) != 0 && errno == ENOENT;
    free(path);
    json_t *instances = NULL;
    if (!missing || store_instance_list(gw->store, &instances, err) != 0)
        return missing ? -1 : 0;
    size_t n = json_array_size(instances);
    json_decref(instances);
    if (n == 0)
        return 0;
    err_set(err, ERR_INVALID,
            "%s has no registry.json, but %s holds %zu instance%s pinned to revisions: is "
            "--strategies the right directory? Restore its registry.json, or build one from its "
            "revision folders with `stratd bootstrap -root %s -write`",
            gw->cfg.strategies_dir, gw->cfg.state_dir, n, n == 1 ? "" : "s",
            gw->cfg.strategies_dir);
    return -1;
}

static int open_gateway(struct gateway *gw, struct err *err)
{
    if (store_open(gw->cfg.state_dir, &gw->store, err) != 0 || check_strategies_dir(gw, err) != 0 ||
        store_history_start(gw->store, gw->cfg.history_retention_s * 1000, err) != 0)
        return -1;
    struct catalog_options copts = {gw->cfg.strategies_dir, revision_metadata, gw, false};
    gw->batching = true;
    int rc = catalog_open(&copts, &gw->catalog, err);
    flush_metadata(gw);
    if (rc != 0)
        return -1;
    /* providers start only once the runtime exists */
    gw->market = market_new(runtime_event_sink_at(&gw->runtime), gw->store);
    if (!gw->market) {
        err_set(err, ERR_INTERNAL, "cannot create the market");
        return -1;
    }
    if (market_load_risk(gw->market, err) != 0)
        return -1;
    struct runtime_options ropts = {
        .workers = gw->cfg.workers,
        .catalog = gw->catalog,
        .store = gw->store,
        .market = market_runtime_ops(gw->market),
        .scope_check = scope_check,
        .scope_ctx = gw,
        .scope_leaving = scope_leaving,
        .environment = gw->cfg.environment,
        .limits = gw->cfg.instance_limits,
        .max_consecutive_errors = gw->cfg.max_consecutive_errors,
        .queue_capacity = gw->cfg.queue_capacity,
        .log_lines_per_second = gw->cfg.log_lines_per_second,
        .max_orders_per_second = gw->cfg.max_orders_per_second,
        .event_poll_us = gw->cfg.event_poll_us,
        .keep_orders_on_failure = gw->cfg.keep_orders_on_failure,
    };
    if (runtime_new(&ropts, &gw->runtime, err) != 0)
        return -1;
    market_set_dependents(gw->market, provider_dependents, gw);
    if (start_providers(gw, err) != 0 || runtime_restore(gw->runtime, err) != 0)
        return -1;
    struct api_options aopts = {
        .host = gw->cfg.listen_host,
        .port = gw->cfg.listen_port,
        .limits = gw->cfg.http,
        .tokens = gw->cfg.tokens,
        .ntokens = gw->cfg.ntokens,
        .metrics_need_token = gw->cfg.metrics_require_token,
        .catalog = gw->catalog,
        .runtime = gw->runtime,
        .market = gw->market,
        .store = gw->store,
        .environment = gw->cfg.environment,
        .validation_limits = gw->cfg.validation_limits,
        .tls = gw->tls,
    };
    return api_start(&aopts, &gw->api, err);
}

static void stop_providers(struct market *market)
{
    json_t *list = market_providers_json(market);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(list, "providers"), i, p)
    {
        struct err err = ERR_INIT;
        market_provider_stop(market, json_string_value(json_object_get(p, "name")), NULL, &err);
        err_clear(&err);
    }
    json_decref(list);
}

static void close_gateway(struct gateway *gw)
{
    api_stop(gw->api);
    if (gw->market)
        stop_providers(gw->market);
    runtime_free(gw->runtime);
    market_free(gw->market);
    if (gw->catalog)
        catalog_close(gw->catalog);
    store_close(gw->store);
    config_free(&gw->cfg);
    api_tls_free(gw->tls);
    pthread_mutex_destroy(&gw->pending_mu);
}

/* ------------------------------------------------------------- running */

static int check_exposure(const struct config *cfg, struct err *err)
{
    if (cfg->ntokens == 0 && !config_is_loopback(cfg->listen_host)) {
        err_set(err, ERR_INVALID,
                "refusing to listen on %s without API tokens: configure auth.tokens, or listen "
                "on 127.0.0.1",
                cfg->listen_host);
        return -1;
    }
    return 0;
}

/* The certificate and key, read and checked before anything opens. */
static int load_tls(struct gateway *gw, struct err *err)
{
    if (!gw->cfg.tls_certificate_path)
        return 0;
    return api_tls_load(&gw->tls, gw->cfg.tls_certificate_path, gw->cfg.tls_key_path, err);
}

/* How long the served certificate has left, at the level that fits;
 * `served` says what the gateway does with it. */
static void log_certificate(const struct api_tls *tls, const char *served)
{
    char until[32], subject[API_TLS_SUBJECT_MAX];
    int64_t not_after_s = api_tls_not_after(tls);
    api_tls_subject(tls, subject, sizeof subject);
    clock_format_rfc3339(not_after_s * 1000, until, sizeof until);
    int64_t left_s = not_after_s - clock_wall_ms() / 1000;
    if (left_s <= 0)
        log_error("serve", "%s the TLS certificate %s, which expired at %s: clients will refuse it",
                  served, subject, until);
    else if (left_s < CMD_CERTIFICATE_WARN_S)
        log_warn("serve",
                 "%s the TLS certificate %s, which expires at %s, in %lld days and %lld "
                 "hours",
                 served, subject, until, (long long)(left_s / 86400),
                 (long long)(left_s % 86400 / 3600));
    else
        log_info("serve", "%s the TLS certificate %s, valid until %s", served, subject, until);
}

/* What an operator should hear about the transport before anything else. */
static void warn_about_transport(const struct gateway *gw)
{
    if (!gw->tls) {
        if (!config_is_loopback(gw->cfg.listen_host))
            log_warn("serve",
                     "listening on %s over plain HTTP: API tokens cross the network in clear; set "
                     "http.tls_certificate and http.tls_key, or put a TLS proxy in front",
                     gw->cfg.listen_host);
        return;
    }
    log_certificate(gw->tls, "serving HTTPS with");
}

/* SIGHUP: a rotation moved the audit log away (or means to). A failure
 * leaves it on the file it had, so no entry is lost; the log says why.
 * Returns the outcome in a few words, for the service manager's status. */
static const char *reopen_audit_log(struct gateway *gw)
{
    struct err err = ERR_INIT;
    if (store_audit_reopen(gw->store, &err) != 0) {
        log_error("serve", "SIGHUP: %s; the audit log stays on the file it had", err.message);
        err_clear(&err);
        return "the audit log could not be reopened (see the log)";
    }
    log_info("serve", "SIGHUP: reopened the audit log %s/%s", gw->cfg.state_dir, STORE_AUDIT_FILE);
    return "the audit log reopened";
}

/* SIGHUP: a renewed certificate is served to the handshakes from now on;
 * the connections open keep theirs. A pair that cannot be served leaves
 * the one served before. Returns the outcome as reopen_audit_log does
 * (NULL without HTTPS). */
static const char *reload_tls(struct gateway *gw)
{
    if (!gw->tls)
        return NULL;
    struct err err = ERR_INIT;
    int rc = api_tls_reload(gw->tls, &err);
    if (rc < 0) {
        char subject[API_TLS_SUBJECT_MAX];
        api_tls_subject(gw->tls, subject, sizeof subject);
        log_error("serve", "SIGHUP: %s; still serving the TLS certificate %s", err.message,
                  subject);
        err_clear(&err);
        return "the TLS certificate and key refused, the pair before still served (see the log)";
    }
    if (rc == 0) {
        log_info("serve", "SIGHUP: the TLS certificate and key are unchanged");
        return "the TLS certificate unchanged";
    }
    log_certificate(gw->tls, "SIGHUP: now serving");
    return "the TLS certificate renewed";
}

/* Tells the service manager, if there is one (notify.h); a manager that
 * cannot be told is logged once, and the gateway goes on. */
__attribute__((format(printf, 2, 3))) static void tell_manager(struct gateway *gw, const char *fmt,
                                                               ...)
{
    char message[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    struct err err = ERR_INIT;
    if (notify_send(message, &err) != 0) {
        if (!gw->manager_deaf)
            log_warn("serve", "%s", err.message);
        gw->manager_deaf = true;
        err_clear(&err);
    }
}

/* The URL clients call: an IPv6 host in brackets, as a URL writes it. */
static void gateway_url(const struct gateway *gw, int port, char *out, size_t size)
{
    bool six = strchr(gw->cfg.listen_host, ':') != NULL;
    snprintf(out, size, "%s://%s%s%s:%d", gw->tls ? "https" : "http", six ? "[" : "",
             gw->cfg.listen_host, six ? "]" : "", port);
}

/* The signal loop: SIGHUP's work between RELOADING=1 and READY=1, so that
 * `systemctl reload` returns once it is done; any other signal ends it. */
static int serve_until_stopped(struct gateway *gw, const sigset_t *signals, const char *url)
{
    int sig = 0;
    while (sigwait(signals, &sig) == 0 && sig == SIGHUP) {
        tell_manager(gw, "RELOADING=1\nMONOTONIC_USEC=%lld\nSTATUS=reloading (SIGHUP)",
                     (long long)(clock_mono_ns() / 1000));
        const char *audit = reopen_audit_log(gw);
        const char *tls = reload_tls(gw);
        char at[32];
        clock_format_rfc3339(clock_wall_ms(), at, sizeof at);
        tell_manager(gw, "READY=1\nSTATUS=listening on %s; SIGHUP at %s: %s%s%s", url, at, audit,
                     tls ? "; " : "", tls ? tls : "");
    }
    return sig;
}

int cmd_serve(int argc, char **argv)
{
    struct flags flags;
    int rc = parse_flags(argc, argv, &flags);
    if (rc != 0)
        return rc > 0 ? 0 : 2;

    /* Every thread created from here on inherits the blocked mask, so the
     * signals are taken only by sigwait below. */
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    sigaddset(&signals, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &signals, NULL);
    (void)signal(SIGPIPE, SIG_IGN);

    struct gateway gw;
    memset(&gw, 0, sizeof gw);
    config_init(&gw.cfg);
    struct err err = ERR_INIT;
    enum log_level level;
    if (apply_flags(&gw.cfg, &flags, &err) != 0 || check_exposure(&gw.cfg, &err) != 0 ||
        load_tls(&gw, &err) != 0) {
        fprintf(stderr, "stratd serve: %s\n", err.message);
        err_clear(&err);
        config_free(&gw.cfg);
        return 2;
    }
    if (log_parse_level(gw.cfg.log_level, &level) != 0) {
        fprintf(stderr, "stratd serve: log_level: '%s' is not a level (debug, info, warn, error)\n",
                gw.cfg.log_level);
        config_free(&gw.cfg);
        api_tls_free(gw.tls);
        return 2;
    }
    if (flags.check) { /* what a start would say, no more */
        /* interruptible, as a command run by hand should be: nothing to
         * shut down in order */
        pthread_sigmask(SIG_UNBLOCK, &signals, NULL);
        log_set_level(level > LOG_LEVEL_WARN ? level : LOG_LEVEL_WARN);
        char url[SERVE_URL_MAX];
        gateway_url(&gw, gw.cfg.listen_port, url, sizeof url);
        rc = cmd_serve_check(&gw.cfg, gw.tls, url);
        api_tls_free(gw.tls);
        config_free(&gw.cfg);
        return rc;
    }
    log_set_level(level);
    warn_about_transport(&gw);
    pthread_mutex_init(&gw.pending_mu, NULL);
    if (open_gateway(&gw, &err) != 0) {
        fprintf(stderr, "stratd serve: %s\n", err.message);
        log_error("serve", "start-up failed: %s", err.message);
        err_clear(&err);
        close_gateway(&gw);
        return 1;
    }
    char url[SERVE_URL_MAX];
    gateway_url(&gw, api_port(gw.api), url, sizeof url);
    printf("listening on %s\n", url);
    fflush(stdout);
    log_info("serve", "listening on %s (strategies %s, state %s, environment %s)", url,
             gw.cfg.strategies_dir, gw.cfg.state_dir, gw.cfg.environment);
    tell_manager(&gw, "READY=1\nSTATUS=listening on %s", url);

    int sig = serve_until_stopped(&gw, &signals, url);
    const char *name = sig == SIGINT ? "SIGINT" : "SIGTERM";
    log_info("serve", "received %s, shutting down", name);
    tell_manager(&gw, "STOPPING=1\nSTATUS=shutting down (%s)", name);
    close_gateway(&gw);
    return 0;
}
