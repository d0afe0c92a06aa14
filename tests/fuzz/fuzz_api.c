/*
 * Every JSON request body of the control plane, through the real handlers:
 * a gateway wired as `stratd serve` wires it (store and catalogue in a
 * temporary directory, the market with the simulated providers `sim` and
 * `paper` at one tick a second, a runtime with one worker, the api on
 * 127.0.0.1 with a free port) starts once, and each input is one HTTP
 * request over loopback (libcurl):
 *
 *   byte 0   the route, among the endpoints that take a JSON body (risk
 *            limits and the context restore included)
 *   byte 1   the path parameters, from a small table per route (existing
 *            and unknown selectors, tags, instances and providers)
 *   rest     the body, sent as is
 *
 * Invariants: the server answers (no hang, no dropped connection); no
 * status is 5xx but 507; every 4xx body is JSON with an "error" string and
 * a "details" object; every 2xx body is JSON.
 *
 * State is kept small: a provider the input created is deleted at once, a
 * provider it changed is put back, risk limits it set are turned off again,
 * a restore is followed by a reset, and every RESET_EVERY inputs (or when
 * instances pile up) instances and strategies are deleted and the seeds
 * uploaded again.
 */
#include "fuzzutil.h"

#include "api/api.h"
#include "cmd/commands.h"
#include "cmd/config.h"
#include "core/hash.h"
#include "core/log.h"
#include "js/validate.h"
#include "market/market.h"
#include "registry/registry.h"
#include "runtime/runtime.h"
#include "store/store.h"

#include <curl/curl.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#define RESET_EVERY 200
#define MAX_INSTANCES 8

/* ------------------------------------------------------------ gateway */

struct gateway {
    struct config cfg;
    struct store *store;
    struct catalog *catalog;
    struct market *market;
    struct runtime *runtime;
    struct api *api;
};

static struct gateway gw;
static char root[256];
static char base_url[64];
static CURL *curl;
static unsigned long inputs;
static bool verbose; /* FUZZ_API_VERBOSE=1: one line per request */

static const char alpha_source[] =
    "module.exports = {\n"
    "  metadata: {\n"
    "    name: 'alpha', displayName: 'Alpha', tag: 'v1.0.0', events: ['Trade', 'Ticker'],\n"
    "    config: [\n"
    "      {name: 'size', type: 'float', default: 1},\n"
    "      {name: 'period', type: 'duration', default: '5s'},\n"
    "      {name: 'mode', type: 'enum', options: ['fast', 'slow'], default: 'fast'},\n"
    "      {name: 'limit', type: 'int', required: true, default: 3},\n"
    "    ],\n"
    "  },\n"
    "  create(env) { return { onTrade(t) {}, onTicker(t) {} }; },\n"
    "};\n";

static const char beta_source[] =
    "module.exports = {\n"
    "  metadata: { name: 'beta', displayName: 'Beta', tag: 'v2.0.0', events: ['Trade'] },\n"
    "  create(env) { return {}; },\n"
    "};\n";

static char alpha_hex[HASH_HEX_LEN + 1];

/* The same metadata as `stratd serve` loads: the store's cache by hash,
 * else the validator. */
static json_t *revision_metadata(void *ctx, const char *name, const char *hex, const char *source,
                                 size_t len, char **reason)
{
    struct gateway *g = ctx;
    bool validated = false;
    json_t *metadata = cmd_revision_metadata(g->store, &g->cfg.validation_limits, name, hex, source,
                                             len, &validated, reason);
    struct err err = ERR_INIT;
    if (metadata && validated && g->store)
        store_metadata_put(g->store, hex, metadata, &err);
    err_clear(&err);
    return metadata;
}

static bool scope_check(void *ctx, const char *provider, const char *symbol)
{
    struct gateway *g = ctx;
    return symbol ? market_has_symbol(g->market, provider, symbol)
                  : market_has_provider(g->market, provider);
}

static json_t *provider_spec(const char *name, bool enabled)
{
    return json_pack("{s:s, s:{s:s, s:{s:[s,s], s:f, s:i}}, s:b}", "name", name, "adapter",
                     "identifier", "simulated", "config", "symbols", "BTC-USDT", "ETH-USDT",
                     "tickRate", 1.0, "seed", 7, "enabled", enabled);
}

static void open_gateway(void)
{
    struct err err = ERR_INIT;
    char strategies[320], state[320];
    snprintf(strategies, sizeof strategies, "%s/strategies", root);
    snprintf(state, sizeof state, "%s/state", root);
    config_init(&gw.cfg);
    gw.cfg.workers = 1;
    gw.cfg.http.threads = 2;
    gw.cfg.instance_limits.memory_bytes = 16u << 20;
    gw.cfg.validation_limits.budget_ns = 200LL * 1000 * 1000;
    fuzz_check(store_open(state, &gw.store, &err) == 0, "store_open: %s", err.message);
    struct catalog_options copts = {strategies, revision_metadata, &gw, false};
    fuzz_check(catalog_open(&copts, &gw.catalog, &err) == 0, "catalog_open: %s", err.message);
    gw.market = market_new(runtime_event_sink_at(&gw.runtime), gw.store);
    fuzz_check(gw.market != NULL, "market_new failed");
    struct runtime_options ropts = {
        .workers = gw.cfg.workers,
        .catalog = gw.catalog,
        .store = gw.store,
        .market = market_runtime_ops(gw.market),
        .scope_check = scope_check,
        .scope_ctx = &gw,
        .environment = gw.cfg.environment,
        .limits = gw.cfg.instance_limits,
    };
    fuzz_check(runtime_new(&ropts, &gw.runtime, &err) == 0, "runtime_new: %s", err.message);
    const char *providers[] = {"sim", "paper"};
    for (size_t i = 0; i < 2; i++) {
        json_t *spec = provider_spec(providers[i], i == 0);
        fuzz_check(market_provider_create(gw.market, spec, NULL, &err) == 0,
                   "market_provider_create: %s", err.message);
        json_decref(spec);
    }
    fuzz_check(runtime_restore(gw.runtime, &err) == 0, "runtime_restore: %s", err.message);
    struct api_options aopts = {
        .host = "127.0.0.1",
        .port = 0,
        .limits = gw.cfg.http,
        .catalog = gw.catalog,
        .runtime = gw.runtime,
        .market = gw.market,
        .store = gw.store,
        .environment = gw.cfg.environment,
        .validation_limits = gw.cfg.validation_limits,
    };
    fuzz_check(api_start(&aopts, &gw.api, &err) == 0, "api_start: %s", err.message);
    snprintf(base_url, sizeof base_url, "http://127.0.0.1:%d", api_port(gw.api));
}

/* Stops everything before the process exits, so that no thread runs while
 * the libraries' exit handlers do, and leaks are checked on a quiet heap. */
static void close_gateway(void)
{
    curl_easy_cleanup(curl);
    curl_global_cleanup();
    api_stop(gw.api);
    json_t *list = market_providers_json(gw.market);
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(list, "providers"), i, p)
    {
        struct err err = ERR_INIT;
        market_provider_stop(gw.market, json_string_value(json_object_get(p, "name")), NULL, &err);
        err_clear(&err);
    }
    json_decref(list);
    runtime_free(gw.runtime);
    market_free(gw.market);
    catalog_close(gw.catalog);
    store_close(gw.store);
    config_free(&gw.cfg);
    char command[320];
    snprintf(command, sizeof command, "rm -rf '%s'", root);
    if (system(command) != 0)
        fprintf(stderr, "fuzz_api: could not remove %s\n", root);
}

/* --------------------------------------------------------------- HTTP */

struct reply {
    long status;
    char *body;
    size_t len;
};

static size_t collect(char *data, size_t size, size_t nmemb, void *ctx)
{
    struct reply *r = ctx;
    size_t n = size * nmemb;
    char *grown = realloc(r->body, r->len + n + 1);
    if (!grown)
        return 0;
    memcpy(grown + r->len, data, n);
    r->body = grown;
    r->len += n;
    r->body[r->len] = '\0';
    return n;
}

static void request(const char *method, const char *path, const char *body, size_t len,
                    struct reply *r)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", base_url, path);
    memset(r, 0, sizeof *r);
    struct curl_slist *headers = curl_slist_append(NULL, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Expect:");
    curl_easy_reset(curl);
    curl_easy_setopt(curl, CURLOPT_URL, url);
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method);
    curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
    curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(curl, CURLOPT_TIMEOUT, 60L);
    curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(curl, CURLOPT_WRITEDATA, r);
    if (strcmp(method, "GET") != 0 && strcmp(method, "DELETE") != 0) {
        curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body ? body : "");
        curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
    }
    CURLcode rc = curl_easy_perform(curl);
    curl_slist_free_all(headers);
    fuzz_check(rc == CURLE_OK, "%s %s: %s", method, path, curl_easy_strerror(rc));
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
    if (verbose)
        fprintf(stderr, "%s %s -> %ld %.*s\n", method, path, r->status, 300,
                r->body ? r->body : "");
}

static void check_reply(const char *method, const char *path, const struct reply *r)
{
    const char *text = r->body ? r->body : "";
    fuzz_check(r->status >= 200 && (r->status < 500 || r->status == 507), "%s %s -> %ld: %.*s",
               method, path, r->status, 2000, text);
    json_error_t jerr;
    json_t *doc = r->len ? json_loadb(text, r->len, 0, &jerr) : NULL;
    if (r->status >= 400) {
        fuzz_check(json_is_object(doc), "%s %s -> %ld: the body is not a JSON object: %.*s", method,
                   path, r->status, 2000, text);
        fuzz_check(json_is_string(json_object_get(doc, "error")),
                   "%s %s -> %ld: no \"error\" string: %.*s", method, path, r->status, 2000, text);
        fuzz_check(json_is_object(json_object_get(doc, "details")),
                   "%s %s -> %ld: no \"details\" object: %.*s", method, path, r->status, 2000,
                   text);
    } else if (r->status != 204) {
        fuzz_check(doc != NULL, "%s %s -> %ld: the body is not JSON: %.*s", method, path, r->status,
                   2000, text);
    }
    json_decref(doc);
}

/* A request the harness makes for itself: it must succeed. */
static json_t *call(const char *method, const char *path, const char *body)
{
    struct reply r;
    request(method, path, body, body ? strlen(body) : 0, &r);
    check_reply(method, path, &r);
    json_t *doc = r.len ? json_loadb(r.body, r.len, 0, NULL) : NULL;
    fuzz_check(r.status < 300, "%s %s -> %ld: %s", method, path, r.status, r.body ? r.body : "");
    free(r.body);
    return doc;
}

static char *escape(const char *segment)
{
    char *e = curl_easy_escape(curl, segment, 0);
    fuzz_check(e != NULL, "curl_easy_escape failed");
    char *copy = strdup(e);
    curl_free(e);
    return copy;
}

/* -------------------------------------------------------------- state */

static void upload(const char *source)
{
    json_t *body = json_pack("{s:s}", "source", source);
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(call("POST", "/strategies/modules", text));
    free(text);
    json_decref(body);
}

static void seed(void)
{
    upload(alpha_source);
    upload(beta_source);
    json_decref(call("POST", "/strategy/instances",
                     "{\"id\":\"i1\",\"strategy\":{\"identifier\":\"alpha\",\"config\":{}},"
                     "\"scope\":{\"sim\":{\"symbols\":[\"BTC-USDT\"]}}}"));
}

static void delete_named(const char *prefix, const char *name)
{
    char *e = escape(name);
    char path[512];
    snprintf(path, sizeof path, "%s/%s", prefix, e);
    free(e);
    json_decref(call("DELETE", path, NULL));
}

static size_t instance_count(void)
{
    json_t *list = call("GET", "/strategy/instances", NULL);
    size_t n = json_array_size(json_object_get(list, "instances"));
    json_decref(list);
    return n;
}

static void reset(void)
{
    json_t *list = call("GET", "/strategy/instances", NULL);
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(list, "instances"), i, item)
        delete_named("/strategy/instances", json_string_value(json_object_get(item, "id")));
    json_decref(list);
    list = call("GET", "/strategies", NULL);
    json_array_foreach(json_object_get(list, "strategies"), i, item)
        delete_named("/strategies/modules", json_string_value(json_object_get(item, "name")));
    json_decref(list);
    seed();
}

/* Puts the seeded providers back and removes any other. */
static void restore_providers(void)
{
    json_t *list = call("GET", "/providers", NULL);
    size_t i;
    json_t *item;
    json_array_foreach(json_object_get(list, "providers"), i, item)
    {
        const char *name = json_string_value(json_object_get(item, "name"));
        if (strcmp(name, "sim") != 0 && strcmp(name, "paper") != 0)
            delete_named("/providers", name);
    }
    json_decref(list);
    const char *seeded[] = {"sim", "paper"};
    for (size_t k = 0; k < 2; k++) {
        json_t *spec = provider_spec(seeded[k], k == 0);
        char *text = json_dumps(spec, JSON_COMPACT);
        char path[64];
        snprintf(path, sizeof path, "/providers/%s", seeded[k]);
        json_decref(call("PUT", path, text));
        free(text);
        json_decref(spec);
    }
}

/* The risk limits an input's PUT or restore is followed by: all off. */
static const char default_risk[] =
    "{\"maxPositionSize\": \"0\", \"maxNotionalValue\": \"0\", \"notionalCurrency\": \"\", "
    "\"orderThrottle\": 0, \"orderBurst\": 0, \"maxConcurrentOrders\": 0, "
    "\"priceBandPercent\": 0, \"allowedOrderTypes\": [\"market\", \"limit\"], "
    "\"killSwitchEnabled\": false, \"maxRiskBreaches\": 0, "
    "\"circuitBreaker\": {\"enabled\": false, \"threshold\": 0, \"cooldown\": \"0s\"}}";

/* ------------------------------------------------------------- routes */

enum route_kind {
    ROUTE_UPLOAD,
    ROUTE_MODULE_PUT,
    ROUTE_TAG_PUT,
    ROUTE_REFRESH,
    ROUTE_INSTANCE_CREATE,
    ROUTE_INSTANCE_UPDATE,
    ROUTE_PROVIDER_CREATE,
    ROUTE_PROVIDER_UPDATE,
    ROUTE_RISK_PUT,
    ROUTE_CONTEXT_RESTORE,
    ROUTE_COUNT,
};

static const char *const selectors[] = {
    "alpha",       "alpha:v1.0.0", "alpha:prod", "beta",
    "beta:latest", "gamma",        NULL,         "alpha@0000000000000",
};
static const char *const names[] = {"alpha", "beta", "gamma", "Bad"};
static const char *const tags[] = {"prod", "canary", "latest", "v1.0.0"};
static const char *const instances[] = {"i1", "i2", "fz", "nope.1"};
static const char *const providers[] = {"sim", "paper", "fz", "nope"};

/* The method and path of a route; param picks the path parameters. */
static const char *route_path(enum route_kind route, uint8_t param, char *path, size_t size)
{
    switch (route) {
    case ROUTE_UPLOAD:
        snprintf(path, size, "/strategies/modules");
        return "POST";
    case ROUTE_MODULE_PUT: {
        const char *sel = selectors[param % 8];
        char pinned[HASH_SPELLED_LEN + 16];
        if (!sel) {
            snprintf(pinned, sizeof pinned, "alpha@sha256:%s", alpha_hex);
            sel = pinned;
        }
        char *e = escape(sel);
        snprintf(path, size, "/strategies/modules/%s", e);
        free(e);
        return "PUT";
    }
    case ROUTE_TAG_PUT:
        snprintf(path, size, "/strategies/modules/%s/tags/%s", names[param % 4],
                 tags[(param / 4) % 4]);
        return "PUT";
    case ROUTE_REFRESH:
        snprintf(path, size, "/strategies/refresh");
        return "POST";
    case ROUTE_INSTANCE_CREATE:
        snprintf(path, size, "/strategy/instances");
        return "POST";
    case ROUTE_INSTANCE_UPDATE:
        snprintf(path, size, "/strategy/instances/%s", instances[param % 4]);
        return "PUT";
    case ROUTE_PROVIDER_CREATE:
        snprintf(path, size, "/providers");
        return "POST";
    case ROUTE_RISK_PUT:
        snprintf(path, size, "/risk/limits");
        return "PUT";
    case ROUTE_CONTEXT_RESTORE:
        snprintf(path, size, "/context/backup");
        return "POST";
    case ROUTE_PROVIDER_UPDATE:
    case ROUTE_COUNT:
        break;
    }
    snprintf(path, size, "/providers/%s", providers[param % 4]);
    return "PUT";
}

/* ------------------------------------------------------------ libFuzzer */

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    signal(SIGPIPE, SIG_IGN);
    verbose = getenv("FUZZ_API_VERBOSE") && strcmp(getenv("FUZZ_API_VERBOSE"), "1") == 0;
    log_set_level(LOG_LEVEL_ERROR);
    snprintf(root, sizeof root, "%s/stratd-fuzz-api-XXXXXX", fuzz_tmpdir());
    fuzz_check(mkdtemp(root) != NULL, "mkdtemp failed");
    hash_sha256_hex(alpha_source, strlen(alpha_source), alpha_hex);
    fuzz_check(curl_global_init(CURL_GLOBAL_DEFAULT) == 0, "curl_global_init failed");
    curl = curl_easy_init();
    fuzz_check(curl != NULL, "curl_easy_init failed");
    open_gateway();
    atexit(close_gateway);
    seed();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    enum route_kind route = (enum route_kind)(data[0] % ROUTE_COUNT);
    char path[512];
    const char *method = route_path(route, data[1], path, sizeof path);
    struct reply r;
    request(method, path, (const char *)data + 2, size - 2, &r);
    check_reply(method, path, &r);
    bool changed = r.status >= 200 && r.status < 300;
    free(r.body);

    if (changed && (route == ROUTE_RISK_PUT || route == ROUTE_CONTEXT_RESTORE))
        json_decref(call("PUT", "/risk/limits", default_risk));
    if (changed && (route == ROUTE_PROVIDER_CREATE || route == ROUTE_PROVIDER_UPDATE ||
                    route == ROUTE_CONTEXT_RESTORE))
        restore_providers();
    if (++inputs % RESET_EVERY == 0 || (changed && route == ROUTE_CONTEXT_RESTORE) ||
        (changed && route == ROUTE_INSTANCE_CREATE && instance_count() > MAX_INSTANCES))
        reset();
    return 0;
}
