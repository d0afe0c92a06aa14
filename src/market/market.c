/*
 * market: the provider registry, the providers' life cycle, the order path
 * into running sessions, and the JSON views.
 *
 * Locks, outermost first
 * - m->admin serialises the calls that change providers (create, update,
 *   delete, start, stop). It is held across a session's join, which may
 *   wait for the sink; nothing on a hot path takes it.
 * - m->lock guards the providers' fields for the views and lookups. It is
 *   never held across a join or a callback, so a consumer of events that
 *   asks market_has_provider() cannot deadlock against a stopping provider.
 * - p->session_lock guards p->session for the order path (submit, cancel,
 *   quote, trading_active) and p->instruments for instrument. The provider
 *   thread never takes it.
 *
 * Providers are never freed before market_free(): a deleted provider is
 * marked so and its node kept (and reused if the name comes back), which
 * lets the order path find providers by id by walking the list without a
 * lock while others are added.
 */
#include "market/market.h"

#include "core/clock.h"
#include "core/intern.h"
#include "core/jsonutil.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/names.h"
#include "market/risk.h"
#include "market/sim.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* One symbol's InstrumentUpdate payload as its provider announced it
 * (trading is decided when read). */
struct instrument_state {
    uint16_t symbol;
    struct event_instrument sizes;
};

enum provider_status {
    PROVIDER_PENDING,
    PROVIDER_STARTING,
    PROVIDER_RUNNING,
    PROVIDER_STOPPED,
    PROVIDER_FAILED,
};

struct provider {
    struct provider *next; /* immutable once published */
    uint16_t id;
    char name[NAMES_ID_MAX + 1];
    atomic_bool exists;
    /* a delete is asking for dependents: a start that counts as starting
     * by then is among them, one that does later asks
     * market_provider_leaving() and is refused (runtime's scope_present) */
    atomic_bool deleting;

    /* m->lock (and m->admin to change) */
    struct sim_settings *settings;
    json_t *settings_json;
    struct sim_account *account;
    enum provider_status status; /* when there is no session */
    char startup_error[ERR_MESSAGE_MAX];
    uint64_t next_order;

    /* changed under m->lock and session_lock; the order path reads it under
     * session_lock alone */
    pthread_mutex_t session_lock;
    struct sim *session;
    /* the instruments the latest session announced, kept once it stops (its
     * last InstrumentUpdate said they stopped trading); replaced when a
     * session starts, changed and read under session_lock */
    struct instrument_state *instruments;
    size_t ninstruments;

    /* written by the holder of a session's engine, one session at a time */
    struct sim_latency tick_to_order;
};

struct market {
    pthread_mutex_t admin;
    pthread_mutex_t lock;
    struct event_sink sink;
    struct store *store;
    struct risk *risk; /* the limits every order meets (risk.h) */
    _Atomic(struct provider *) providers;
    market_dependents_fn dependents; /* m->lock */
    void *dependents_ctx;
};

/* --------------------------------------------------------------- lookup */

static struct provider *find_named(struct market *m, const char *name)
{
    for (struct provider *p = atomic_load_explicit(&m->providers, memory_order_acquire); p;
         p = p->next) {
        if (strcmp(p->name, name) == 0)
            return p;
    }
    return NULL;
}

static struct provider *find_existing(struct market *m, const char *name)
{
    struct provider *p = name ? find_named(m, name) : NULL;
    return p && atomic_load(&p->exists) ? p : NULL;
}

static struct provider *find_id(struct market *m, uint16_t id)
{
    for (struct provider *p = atomic_load_explicit(&m->providers, memory_order_acquire); p;
         p = p->next) {
        if (p->id == id)
            return atomic_load(&p->exists) ? p : NULL;
    }
    return NULL;
}

static int not_found(struct err *err, const char *name)
{
    err_set(err, ERR_NOT_FOUND, "unknown provider '%s'", name ? name : "");
    err_add_detail(err, "provider", json_string(name ? name : ""));
    return -1;
}

/* ------------------------------------------------------------ lifecycle */

struct market *market_new(struct event_sink sink, struct store *store)
{
    struct market *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    if (pthread_mutex_init(&m->admin, NULL) != 0) {
        free(m);
        return NULL;
    }
    if (pthread_mutex_init(&m->lock, NULL) != 0) {
        pthread_mutex_destroy(&m->admin);
        free(m);
        return NULL;
    }
    m->sink = sink;
    m->store = store;
    atomic_init(&m->providers, NULL);
    m->risk = risk_new();
    if (!m->risk) {
        pthread_mutex_destroy(&m->lock);
        pthread_mutex_destroy(&m->admin);
        free(m);
        return NULL;
    }
    return m;
}

int market_load_risk(struct market *m, struct err *err)
{
    return risk_load(m->risk, m->store, err);
}

int64_t market_history_lost_ms(void)
{
    return sim_records_lost_ms();
}

static void provider_clear(struct provider *p)
{
    pthread_mutex_lock(&p->session_lock);
    struct instrument_state *instruments = p->instruments;
    p->instruments = NULL;
    p->ninstruments = 0;
    pthread_mutex_unlock(&p->session_lock);
    free(instruments);
    sim_settings_free(p->settings);
    sim_account_free(p->account);
    json_decref(p->settings_json);
    p->settings = NULL;
    p->account = NULL;
    p->settings_json = NULL;
}

/* Detaches the session (so the order path stops finding it), then stops
 * and joins it with only m->admin held. */
static void provider_halt(struct market *m, struct provider *p)
{
    pthread_mutex_lock(&m->lock);
    pthread_mutex_lock(&p->session_lock);
    struct sim *s = p->session;
    p->session = NULL;
    pthread_mutex_unlock(&p->session_lock);
    if (s)
        p->status = PROVIDER_STOPPED;
    pthread_mutex_unlock(&m->lock);
    if (!s)
        return;
    uint64_t next = sim_stop(s);
    pthread_mutex_lock(&m->lock);
    p->next_order = next;
    pthread_mutex_unlock(&m->lock);
}

/* A new session starts with an empty book: orders that a previous session
 * left resting in the records (the gateway was killed before it could
 * expire them) can never fill, so they are closed before it runs. */
static void expire_leftover_orders(struct market *m, const struct provider *p)
{
    if (!m->store)
        return;
    int count = 0;
    struct err e = ERR_INIT;
    if (store_orders_expire_open(m->store, p->name, "the provider restarted; its book was lost",
                                 clock_wall_ms(), &count, &e) != 0)
        log_warn("market", "provider %s: cannot expire the open orders of an earlier session: %s",
                 p->name, e.message);
    else if (count > 0)
        log_info("market", "provider %s: %d order(s) left open by an earlier session expired",
                 p->name, count);
    err_clear(&e);
}

/* The risk limits' positions go on from the fills of earlier starts. */
static void carry_positions(struct market *m, const struct provider *p)
{
    struct err e = ERR_INIT;
    if (risk_positions_load(m->risk, m->store, p->id, p->name, &e) != 0)
        log_error("market", "provider %s: positions start from zero for maxPositionSize: %s",
                  p->name, e.message);
    err_clear(&e);
}

/* Puts the new session's instruments in `table` (room for each of the
 * settings' symbols, one market of the session each) in place of the
 * previous session's; returns the table replaced. The caller holds
 * session_lock. */
static struct instrument_state *instruments_install(struct provider *p, const struct sim *s,
                                                    struct instrument_state *table)
{
    size_t n = p->settings->nsymbols;
    for (size_t i = 0; i < n; i++)
        table[i].symbol = sim_instrument(s, i, false, &table[i].sizes);
    struct instrument_state *old = p->instruments;
    p->instruments = table;
    p->ninstruments = n;
    return old;
}

static int provider_run(struct market *m, struct provider *p, struct err *err)
{
    expire_leftover_orders(m, p);
    carry_positions(m, p);
    struct sim_config cfg = {p->name,  p->id,         p->settings,       p->account, m->sink,
                             m->store, p->next_order, &p->tick_to_order, m->risk};
    struct err e = ERR_INIT;
    struct instrument_state *table = calloc(p->settings->nsymbols, sizeof *table);
    if (!table)
        err_set(&e, ERR_INTERNAL, "out of memory");
    /* The session reaches the order path before its thread can publish a
     * first event: a strategy handling that event can already quote and
     * order (and read its instruments). The locks are those of every write
     * of p->session; the new thread takes neither, so it never waits for
     * them. */
    pthread_mutex_lock(&m->lock);
    pthread_mutex_lock(&p->session_lock);
    struct sim *s = table ? sim_start(&cfg, &e) : NULL;
    p->session = s;
    if (s)
        table = instruments_install(p, s, table);
    pthread_mutex_unlock(&p->session_lock);
    free(table);
    if (s) {
        p->startup_error[0] = '\0';
    } else {
        p->status = PROVIDER_FAILED;
        snprintf(p->startup_error, sizeof p->startup_error, "%s", e.message);
        log_error("market", "provider %s failed to start: %s", p->name, e.message);
    }
    pthread_mutex_unlock(&m->lock);
    if (!s)
        err_move(err, &e);
    err_clear(&e);
    return s ? 0 : -1;
}

void market_free(struct market *m)
{
    if (!m)
        return;
    struct provider *p = atomic_load(&m->providers);
    while (p) {
        struct provider *next = p->next;
        provider_halt(m, p);
        provider_clear(p);
        pthread_mutex_destroy(&p->session_lock);
        free(p);
        p = next;
    }
    risk_free(m->risk); /* every session has stopped: no order is in flight */
    pthread_mutex_destroy(&m->lock);
    pthread_mutex_destroy(&m->admin);
    free(m);
}

void market_set_dependents(struct market *m, market_dependents_fn fn, void *ctx)
{
    pthread_mutex_lock(&m->lock);
    m->dependents = fn;
    m->dependents_ctx = ctx;
    pthread_mutex_unlock(&m->lock);
}

/* ------------------------------------------------------------- requests */

struct provider_request {
    const char *name;
    const json_t *config;
    int enabled; /* -1 absent */
};

static int bad_request(struct err *err, const char *field, const char *why)
{
    err_set(err, ERR_INVALID, "%s: %s", field, why);
    err_add_detail(err, "field", json_string(field));
    return -1;
}

/* ProviderRequest: {name, adapter: {identifier, config}, enabled}. */
static int parse_request(const json_t *body, struct provider_request *out, struct err *err)
{
    if (!json_is_object(body))
        return bad_request(err, "body", "expected a ProviderRequest object");
    const json_t *name = json_object_get(body, "name");
    if (!json_is_string(name) || !names_valid_id(json_string_value(name)) ||
        strlen(json_string_value(name)) > MARKET_PROVIDER_NAME_MAX)
        return bad_request(err, "name",
                           "expected a provider name matching [A-Za-z0-9][A-Za-z0-9._-]{0,29}");
    const json_t *adapter = json_object_get(body, "adapter");
    if (!json_is_object(adapter))
        return bad_request(err, "adapter", "expected an object {identifier, config}");
    /* a likely slip that would otherwise run the defaults unannounced */
    if (json_object_get(body, "config"))
        return bad_request(err, "config", "the settings go in adapter.config");
    /* any other unknown member would be dropped as silently */
    static const char *const members[] = {"name", "adapter", "enabled"};
    static const char *const adapter_members[] = {"identifier", "config"};
    const char *unknown = jsonutil_unknown_key(body, members, 3);
    if (unknown) {
        char field[72];
        snprintf(field, sizeof field, "%.64s", unknown);
        return bad_request(err, field, "unknown member: a provider takes name, adapter, enabled");
    }
    if ((unknown = jsonutil_unknown_key(adapter, adapter_members, 2)) != NULL) {
        char field[80];
        snprintf(field, sizeof field, "adapter.%.64s", unknown);
        return bad_request(err, field, "unknown member: an adapter takes identifier, config");
    }
    const json_t *id = json_object_get(adapter, "identifier");
    if (!json_is_string(id))
        return bad_request(err, "adapter.identifier", "expected a string");
    const json_t *config = json_object_get(adapter, "config");
    if (config && !json_is_null(config) && !json_is_object(config))
        return bad_request(err, "adapter.config", "expected an object");
    const json_t *enabled = json_object_get(body, "enabled");
    if (enabled && !json_is_null(enabled) && !json_is_boolean(enabled))
        return bad_request(err, "enabled", "expected a boolean");
    if (strcmp(json_string_value(id), SIM_ADAPTER) != 0) {
        err_set(err, ERR_NOT_FOUND, "unknown adapter '%s'", json_string_value(id));
        err_add_detail(err, "adapter", json_string(json_string_value(id)));
        return -1;
    }
    out->name = json_string_value(name);
    out->config = json_is_object(config) ? config : NULL;
    out->enabled = json_is_boolean(enabled) ? json_is_true(enabled) : -1;
    return 0;
}

/* The parsed pieces a provider is made of, built before any lock. */
struct provider_parts {
    struct sim_settings *settings;
    json_t *settings_json;
    struct sim_account *account;
};

static void parts_free(struct provider_parts *parts)
{
    sim_settings_free(parts->settings);
    json_decref(parts->settings_json);
    sim_account_free(parts->account);
    *parts = (struct provider_parts){0};
}

static int build_parts(const struct provider_request *req, struct provider_parts *parts,
                       struct err *err)
{
    *parts = (struct provider_parts){0};
    if (sim_settings_parse(req->config, &parts->settings, err) < 0)
        return -1;
    parts->settings_json = sim_settings_json(parts->settings);
    parts->account = sim_account_new(parts->settings);
    if (!parts->settings_json || !parts->account) {
        parts_free(parts);
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    return 0;
}

/* Installs new parts (the old ones go back in `parts` to be freed). The
 * balances start over only when the symbols or the balances changed. */
static void install_parts(struct market *m, struct provider *p, struct provider_parts *parts)
{
    bool keep_account = p->account && p->settings_json &&
                        json_equal(json_object_get(p->settings_json, "symbols"),
                                   json_object_get(parts->settings_json, "symbols")) &&
                        json_equal(json_object_get(p->settings_json, "balances"),
                                   json_object_get(parts->settings_json, "balances"));
    pthread_mutex_lock(&m->lock);
    struct provider_parts old = {p->settings, p->settings_json, p->account};
    p->settings = parts->settings;
    p->settings_json = parts->settings_json;
    if (keep_account) {
        old.account = parts->account;
    } else {
        p->account = parts->account;
    }
    pthread_mutex_unlock(&m->lock);
    *parts = old;
}

static struct provider *provider_new(struct market *m, const char *name, struct err *err)
{
    uint16_t id = intern_id(name);
    struct provider *p = id ? calloc(1, sizeof *p) : NULL;
    if (!p || pthread_mutex_init(&p->session_lock, NULL) != 0) {
        free(p);
        err_set(err, ERR_INTERNAL, "cannot create provider '%s': out of memory", name);
        return NULL;
    }
    p->id = id;
    snprintf(p->name, sizeof p->name, "%s", name);
    /* Order ids must stay unique across restarts of the gateway (the store
     * upserts by id), so numbering starts from the clock. */
    p->next_order = (uint64_t)clock_wall_ms() * 1000;
    atomic_init(&p->exists, false);
    atomic_init(&p->deleting, false);
    p->next = atomic_load(&m->providers);
    atomic_store_explicit(&m->providers, p, memory_order_release);
    return p;
}

/* ----------------------------------------------------------------- views */

static const char *status_name(const struct provider *p)
{
    static const char *const names[] = {"pending", "starting", "running", "stopped", "failed"};
    if (p->session)
        return sim_state(p->session) == SIM_RUNNING ? "running" : "starting";
    return names[p->status];
}

static json_t *instruments_json(const struct sim_settings *s)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < s->nsymbols; i++) {
        const struct sim_symbol_cfg *c = &s->symbols[i];
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "symbol",
                                              c->symbol, "type", "spot", "baseAsset", c->base,
                                              "quoteAsset", c->quote, "baseCurrency", c->base,
                                              "quoteCurrency", c->quote, "venue", "SIMULATED"));
    }
    return list;
}

/* Provider (or ProviderDetail) of one provider; the caller holds m->lock. */
static json_t *provider_view(const struct provider *p, bool detail)
{
    json_t *v = json_pack(
        "{s:s, s:s, s:s, s:I, s:o, s:b, s:s}", "name", p->name, "adapter", SIM_ADAPTER,
        "identifier", SIM_ADAPTER, "instrumentCount", (json_int_t)p->settings->nsymbols, "settings",
        json_deep_copy(p->settings_json), "running", p->session != NULL, "status", status_name(p));
    if (v && p->startup_error[0] && !p->session)
        json_object_set_new(v, "startupError", json_string(p->startup_error));
    if (v && detail)
        json_object_set_new(v, "instruments", instruments_json(p->settings));
    return v;
}

/* Adds dependentInstances/Count; called with no market lock held. */
static void add_dependents(struct market *m, json_t *view)
{
    pthread_mutex_lock(&m->lock);
    market_dependents_fn fn = m->dependents;
    void *ctx = m->dependents_ctx;
    pthread_mutex_unlock(&m->lock);
    if (!fn || !view)
        return;
    json_t *ids = fn(ctx, json_string_value(json_object_get(view, "name")));
    if (!json_is_array(ids)) {
        json_decref(ids);
        ids = json_array();
    }
    json_object_set_new(view, "dependentInstanceCount",
                        json_integer((json_int_t)json_array_size(ids)));
    json_object_set_new(view, "dependentInstances", ids);
}

static json_t *detail_of(struct market *m, struct provider *p)
{
    pthread_mutex_lock(&m->lock);
    json_t *v = atomic_load(&p->exists) ? provider_view(p, true) : NULL;
    pthread_mutex_unlock(&m->lock);
    add_dependents(m, v);
    return v;
}

static int by_name(const void *a, const void *b)
{
    const json_t *x = *(const json_t *const *)a, *y = *(const json_t *const *)b;
    return strcmp(json_string_value(json_object_get(x, "name")),
                  json_string_value(json_object_get(y, "name")));
}

json_t *market_providers_json(struct market *m)
{
    size_t n = 0, cap = 0;
    json_t **views = NULL;
    bool failed = false;
    pthread_mutex_lock(&m->lock);
    for (struct provider *p = atomic_load(&m->providers); p && !failed; p = p->next) {
        if (!atomic_load(&p->exists))
            continue;
        if (n == cap) {
            json_t **grown = realloc(views, (cap ? cap * 2 : 8) * sizeof *grown);
            failed = !grown;
            views = grown ? grown : views;
            cap = grown ? (cap ? cap * 2 : 8) : cap;
        }
        if (!failed)
            views[n++] = provider_view(p, false);
    }
    pthread_mutex_unlock(&m->lock);
    json_t *list = json_array();
    if (n)
        qsort(views, n, sizeof *views, by_name);
    for (size_t i = 0; i < n; i++) {
        add_dependents(m, views[i]);
        json_array_append_new(list, views[i]);
    }
    free(views);
    if (failed || !list) {
        json_decref(list);
        return NULL;
    }
    return json_pack("{s:o}", "providers", list);
}

json_t *market_providers_down(struct market *m)
{
    json_t *down = json_array();
    pthread_mutex_lock(&m->lock);
    for (struct provider *p = atomic_load(&m->providers); down && p; p = p->next) {
        if (!atomic_load(&p->exists) || p->session)
            continue;
        json_t *entry = json_pack("{s:s, s:s}", "name", p->name, "status", status_name(p));
        if (entry && p->startup_error[0])
            json_object_set_new(entry, "startupError", json_string(p->startup_error));
        json_array_append_new(down, entry);
    }
    pthread_mutex_unlock(&m->lock);
    return down;
}

json_t *market_provider_json(struct market *m, const char *name, struct err *err)
{
    struct provider *p = find_existing(m, name);
    json_t *v = p ? detail_of(m, p) : NULL;
    if (!v)
        not_found(err, name);
    return v;
}

json_t *market_balances_json(struct market *m, const char *name, const char *asset, int limit,
                             struct err *err)
{
    pthread_mutex_lock(&m->lock);
    struct provider *p = find_existing(m, name);
    json_t *list = p ? sim_account_json(p->account, p->name, asset, limit) : NULL;
    pthread_mutex_unlock(&m->lock);
    if (!p) {
        not_found(err, name);
        return NULL;
    }
    if (!list) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return NULL;
    }
    return json_pack("{s:o, s:I}", "balances", list, "count", (json_int_t)json_array_size(list));
}

json_t *market_adapters_json(void)
{
    return json_pack("{s:[o]}", "adapters", sim_adapter_json());
}

json_t *market_adapter_json(const char *identifier, struct err *err)
{
    if (!identifier || strcmp(identifier, SIM_ADAPTER) != 0) {
        err_set(err, ERR_NOT_FOUND, "unknown adapter '%s'", identifier ? identifier : "");
        err_add_detail(err, "adapter", json_string(identifier ? identifier : ""));
        return NULL;
    }
    return sim_adapter_json();
}

bool market_has_provider(struct market *m, const char *name)
{
    return find_existing(m, name) != NULL;
}

bool market_provider_leaving(struct market *m, const char *name)
{
    const struct provider *p = find_existing(m, name);
    return p && atomic_load(&p->deleting);
}

bool market_has_symbol(struct market *m, const char *provider, const char *symbol)
{
    bool found = false;
    pthread_mutex_lock(&m->lock);
    struct provider *p = find_existing(m, provider);
    for (size_t i = 0; p && symbol && i < p->settings->nsymbols && !found; i++)
        found = strcmp(p->settings->symbols[i].symbol, symbol) == 0;
    pthread_mutex_unlock(&m->lock);
    return found;
}

/* ------------------------------------------------------------ mutations */

static int finish(struct market *m, struct provider *p, json_t **detail, struct err *err)
{
    if (!detail)
        return 0;
    *detail = detail_of(m, p);
    if (!*detail) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    return 0;
}

int market_provider_create(struct market *m, const json_t *request, json_t **detail,
                           struct err *err)
{
    struct provider_request req;
    struct provider_parts parts;
    if (parse_request(request, &req, err) < 0 || build_parts(&req, &parts, err) < 0)
        return -1;
    pthread_mutex_lock(&m->admin);
    struct provider *p = find_named(m, req.name);
    int rc = -1;
    if (p && atomic_load(&p->exists)) {
        err_set(err, ERR_CONFLICT, "provider '%s' already exists", req.name);
        err_add_detail(err, "provider", json_string(req.name));
    } else if (p || (p = provider_new(m, req.name, err)) != NULL) {
        install_parts(m, p, &parts);
        pthread_mutex_lock(&m->lock);
        p->status = PROVIDER_PENDING;
        p->startup_error[0] = '\0';
        atomic_store(&p->exists, true);
        pthread_mutex_unlock(&m->lock);
        /* a failed start leaves the provider in status failed, as the API
         * accepts creation asynchronously (202) */
        struct err ignored = ERR_INIT;
        if (req.enabled != 0)
            provider_run(m, p, &ignored);
        err_clear(&ignored);
        rc = finish(m, p, detail, err);
    }
    pthread_mutex_unlock(&m->admin);
    parts_free(&parts);
    return rc;
}

int market_provider_update(struct market *m, const char *name, const json_t *request,
                           json_t **detail, struct err *err)
{
    struct provider_request req;
    struct provider_parts parts;
    if (parse_request(request, &req, err) < 0)
        return -1;
    if (name && strcmp(req.name, name) != 0)
        return bad_request(err, "name", "does not match the provider being updated");
    if (build_parts(&req, &parts, err) < 0)
        return -1;
    pthread_mutex_lock(&m->admin);
    struct provider *p = find_existing(m, name);
    int rc = -1;
    if (!p) {
        not_found(err, name);
    } else {
        bool was_running = p->session != NULL;
        provider_halt(m, p);
        install_parts(m, p, &parts);
        rc = 0;
        if (req.enabled == 1 || (req.enabled == -1 && was_running))
            rc = provider_run(m, p, err);
        if (rc == 0)
            rc = finish(m, p, detail, err);
    }
    pthread_mutex_unlock(&m->admin);
    parts_free(&parts);
    return rc;
}

/* Refuses while running instances use the provider (hook installed). */
static int check_unused(struct market *m, const char *name, struct err *err)
{
    pthread_mutex_lock(&m->lock);
    market_dependents_fn fn = m->dependents;
    void *ctx = m->dependents_ctx;
    pthread_mutex_unlock(&m->lock);
    json_t *ids = fn ? fn(ctx, name) : NULL;
    if (!json_is_array(ids) || json_array_size(ids) == 0) {
        json_decref(ids);
        return 0;
    }
    err_set(err, ERR_CONFLICT, "provider '%s' is used by %zu running instance(s)", name,
            json_array_size(ids));
    err_add_detail(err, "instances", ids);
    return -1;
}

int market_provider_delete(struct market *m, const char *name, struct err *err)
{
    pthread_mutex_lock(&m->admin);
    struct provider *p = find_existing(m, name);
    int rc = -1;
    if (!p) {
        not_found(err, name);
    } else {
        atomic_store(&p->deleting, true);
        if (check_unused(m, name, err) == 0) {
            provider_halt(m, p);
            pthread_mutex_lock(&m->lock);
            atomic_store(&p->exists, false);
            provider_clear(p);
            pthread_mutex_unlock(&m->lock);
            rc = 0;
        }
        atomic_store(&p->deleting, false);
    }
    pthread_mutex_unlock(&m->admin);
    return rc;
}

int market_provider_start(struct market *m, const char *name, json_t **detail, struct err *err)
{
    pthread_mutex_lock(&m->admin);
    struct provider *p = find_existing(m, name);
    int rc = p ? 0 : not_found(err, name);
    if (p && !p->session)
        rc = provider_run(m, p, err);
    if (rc == 0)
        rc = finish(m, p, detail, err);
    pthread_mutex_unlock(&m->admin);
    return rc;
}

int market_provider_stop(struct market *m, const char *name, json_t **detail, struct err *err)
{
    pthread_mutex_lock(&m->admin);
    struct provider *p = find_existing(m, name);
    int rc = p ? 0 : not_found(err, name);
    if (p) {
        provider_halt(m, p);
        rc = finish(m, p, detail, err);
    }
    pthread_mutex_unlock(&m->admin);
    return rc;
}

/* ------------------------------------------------------------ order path */

__attribute__((format(printf, 3, 4))) static int fail(char *error, size_t size, const char *fmt,
                                                      ...)
{
    if (error && size) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(error, size, fmt, ap);
        va_end(ap);
    }
    return -1;
}

/* The risk limits come first, on this thread: a refused order never
 * reaches the engine, the store or the provider thread. */
static int ops_submit(void *ctx, const struct order_request *req, char *error, size_t size)
{
    struct market *m = ctx;
    struct provider *p = find_id(m, req->provider);
    if (!p)
        return fail(error, size, "unknown provider '%s'", intern_name(req->provider));
    pthread_mutex_lock(&p->session_lock);
    int rc = MARKET_SUBMIT_REFUSED;
    if (!p->session)
        fail(error, size, "provider '%s' is not running", p->name);
    else if ((rc = risk_admit(m->risk, p->session, req, error, size)) == 0 &&
             (rc = sim_submit(p->session, req, error, size)) != 0)
        risk_unadmit(m->risk, req->instance_key);
    pthread_mutex_unlock(&p->session_lock);
    return rc;
}

static int ops_cancel(void *ctx, uint32_t instance_key, uint16_t provider,
                      const char *client_order_id, char *error, size_t size)
{
    struct provider *p = find_id(ctx, provider);
    if (!p)
        return fail(error, size, "unknown provider '%s'", intern_name(provider));
    pthread_mutex_lock(&p->session_lock);
    int rc = p->session ? sim_cancel(p->session, instance_key, client_order_id, error, size)
                        : fail(error, size, "provider '%s' is not running", p->name);
    pthread_mutex_unlock(&p->session_lock);
    return rc;
}

static bool ops_quote(void *ctx, uint16_t provider, uint16_t symbol, struct market_quote *out)
{
    struct provider *p = find_id(ctx, provider);
    *out = (struct market_quote){0};
    if (!p)
        return false;
    pthread_mutex_lock(&p->session_lock);
    bool ok = p->session && sim_quote(p->session, symbol, out);
    pthread_mutex_unlock(&p->session_lock);
    return ok;
}

/* What the provider's InstrumentUpdates said of the symbol, with trading
 * as it is now: the sizes stay those of the latest session, so a stopped
 * provider's read as its last announcement gave them. */
static bool ops_instrument(void *ctx, uint16_t provider, uint16_t symbol,
                           struct event_instrument *out)
{
    struct provider *p = find_id(ctx, provider);
    *out = (struct event_instrument){0};
    if (!p)
        return false;
    bool found = false;
    pthread_mutex_lock(&p->session_lock);
    for (size_t i = 0; i < p->ninstruments && !found; i++) {
        found = p->instruments[i].symbol == symbol;
        if (found)
            *out = p->instruments[i].sizes;
    }
    out->trading = found && p->session && sim_state(p->session) == SIM_RUNNING;
    pthread_mutex_unlock(&p->session_lock);
    return found;
}

/* The provider's session runs and the kill switch is off: an order could
 * be placed. */
static bool ops_trading_active(void *ctx, uint16_t provider)
{
    struct market *m = ctx;
    struct provider *p = find_id(ctx, provider);
    if (!p || risk_kill_switch(m->risk))
        return false;
    pthread_mutex_lock(&p->session_lock);
    bool active = p->session && sim_state(p->session) == SIM_RUNNING;
    pthread_mutex_unlock(&p->session_lock);
    return active;
}

/* Calls `fn` for every provider's running session. The caller holds
 * m->admin, which every session's start and stop holds, so each session
 * stays running until the caller lets go; p->session_lock is held only to
 * read the pointer, never while `fn` runs (fn may wait for the provider
 * thread, which may be publishing to workers that wait for that lock). */
static void sessions_each(struct market *m,
                          void (*fn)(struct provider *p, struct sim *s, void *ctx), void *ctx)
{
    for (struct provider *p = atomic_load_explicit(&m->providers, memory_order_acquire); p;
         p = p->next) {
        pthread_mutex_lock(&p->session_lock);
        struct sim *s = p->session;
        pthread_mutex_unlock(&p->session_lock);
        if (s)
            fn(p, s, ctx);
    }
}

struct forgotten {
    uint32_t key;
    const char *id;
};

/* A cancel that cannot be run (out of memory) leaves the orders to the
 * provider's stop, which expires them. */
static void cancel_forgotten(struct provider *p, struct sim *s, void *ctx)
{
    const struct forgotten *f = ctx;
    char error[EVENT_REASON_MAX] = "";
    if (sim_cancel_instance(s, f->key, error, sizeof error) != 0)
        log_warn("market", "provider %s: cannot cancel the orders of deleted instance %s: %s",
                 p->name, f->id, error);
}

static void pass_engine(struct provider *p, struct sim *s, void *ctx)
{
    (void)p;
    (void)ctx;
    sim_engine_pass(s);
}

/* Called after the instance's worker let go of it, so no order of it can
 * follow. Once its resting orders are cancelled, nothing can reach its
 * risk entries but an order path or engine that found one already; passing
 * every session's lock (taken by sessions_each) and engine waits those out,
 * after which the entries are freed. */
static void ops_forget(void *ctx, uint32_t instance_key, const char *instance_id)
{
    struct market *m = ctx;
    struct forgotten f = {instance_key, instance_id};
    risk_forget(m->risk, instance_id);
    pthread_mutex_lock(&m->admin);
    sessions_each(m, cancel_forgotten, &f);
    struct risk_node *retired = risk_retire(m->risk, instance_key);
    sessions_each(m, pass_engine, NULL);
    pthread_mutex_unlock(&m->admin);
    risk_release(retired);
}

/* A worker's call (or an operator's stop's, on its request thread): each
 * session's lock is held only to queue the cancels, as an order's submit
 * holds it, so a session stopping meanwhile is either still there to take
 * them or already expired every order. */
static void ops_abandon(void *ctx, uint32_t instance_key, const char *instance_id,
                        const char *reason)
{
    struct market *m = ctx;
    for (struct provider *p = atomic_load_explicit(&m->providers, memory_order_acquire); p;
         p = p->next) {
        char error[EVENT_REASON_MAX] = "";
        pthread_mutex_lock(&p->session_lock);
        int rc = p->session
                     ? sim_abandon_instance(p->session, instance_key, reason, error, sizeof error)
                     : 0;
        pthread_mutex_unlock(&p->session_lock);
        if (rc != 0)
            log_warn("market", "provider %s: cannot cancel the resting orders of instance %s: %s",
                     p->name, instance_id, error);
    }
}

struct market_ops market_runtime_ops(struct market *m)
{
    return (struct market_ops){m,           ops_submit,         ops_cancel,
                               ops_quote,   ops_trading_active, ops_forget,
                               ops_abandon, ops_instrument};
}

/* -------------------------------------------------------------- metrics */

static void write_latency(struct strbuf *out, const char *provider, struct sim_latency *h)
{
    uint64_t buckets[SIM_LATENCY_BUCKETS];
    for (int b = 0; b < SIM_LATENCY_BUCKETS; b++)
        buckets[b] = atomic_load_explicit(&h->buckets[b], memory_order_relaxed);
    double sum = (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9;
    metrics_write_histogram(out, "stratd_tick_to_order_seconds", "provider", provider,
                            sim_latency_bounds, buckets, SIM_LATENCY_BUCKETS, sum);
}

void market_metrics_write(struct market *m, struct strbuf *out)
{
    metrics_write_header(out, "stratd_tick_to_order_seconds",
                         "From the creation of the event an order reacted to until the "
                         "provider's matching engine takes the order.",
                         "histogram");
    for (struct provider *p = atomic_load_explicit(&m->providers, memory_order_acquire); p;
         p = p->next) {
        if (atomic_load(&p->exists))
            write_latency(out, p->name, &p->tick_to_order);
    }
    metrics_write_scalar(out, "stratd_history_records_lost_total",
                         "Orders, executions and balances the market could not write to the "
                         "history (they reached the instances).",
                         "counter", (double)sim_records_lost());
    risk_metrics_write(m->risk, out);
}

/* ---------------------------------------------------------- risk limits */

json_t *market_risk_json(struct market *m)
{
    return risk_json(m->risk);
}

struct halts_view {
    struct market *m;
    json_t *list;
    int64_t now_wall_ms;
};

static void add_halt(void *ctx, const struct risk_halt *h)
{
    struct halts_view *v = ctx;
    struct provider *p = find_id(v->m, h->provider);
    json_int_t until = (json_int_t)v->now_wall_ms + (json_int_t)(h->remaining_ns / 1000000);
    json_t *item = json_pack("{s:s, s:s, s:I, s:f}", "provider", p ? p->name : "", "symbol",
                             intern_name(h->symbol), "until", until, "move", h->move);
    if (!item || json_array_append_new(v->list, item) != 0)
        v->list = NULL; /* out of memory: the caller sees NULL */
}

json_t *market_risk_halts_json(struct market *m)
{
    json_t *list = json_array();
    struct halts_view v = {m, list, clock_wall_ms()};
    if (list)
        risk_halts(m->risk, clock_mono_ns(), add_halt, &v);
    if (!v.list)
        json_decref(list);
    return v.list;
}

struct kill_notice {
    const char *reason;
    const char *cancel_reason; /* NULL: the resting orders stay */
};

static void notify_kill_switch(struct provider *p, struct sim *s, void *ctx)
{
    const struct kill_notice *k = ctx;
    char error[EVENT_REASON_MAX] = "";
    if (sim_notice(s, k->reason, k->cancel_reason, error, sizeof error) != 0)
        log_error("market", "provider %s: cannot announce the kill switch%s: %s", p->name,
                  k->cancel_reason ? " nor cancel its resting orders" : "", error);
}

/* The kill switch concerns every strategy: each running provider tells its
 * subscribers when it turns on or off. Turned on, it also cancels every
 * resting order, as a kill switch is expected to: a limit order left on the
 * book would go on trading after every new order is refused. */
static void announce_kill_switch(struct market *m, const json_t *before, const json_t *after)
{
    bool was = json_is_true(json_object_get(before, "killSwitchEnabled"));
    bool is = json_is_true(json_object_get(after, "killSwitchEnabled"));
    if (!before || was == is)
        return;
    struct kill_notice on = {"killSwitchEnabled: every new order is refused and every resting "
                             "order cancelled",
                             "killSwitchEnabled: cancelled with every resting order"};
    struct kill_notice off = {"killSwitchEnabled off: orders are accepted again", NULL};
    pthread_mutex_lock(&m->admin);
    sessions_each(m, notify_kill_switch, is ? &on : &off);
    pthread_mutex_unlock(&m->admin);
}

int market_risk_set(struct market *m, const json_t *config, json_t **previous, struct err *err)
{
    json_t *before = NULL;
    int rc = risk_update(m->risk, config, m->store, &before, err);
    if (rc == 0)
        announce_kill_switch(m, before, config);
    if (previous)
        *previous = before;
    else
        json_decref(before);
    return rc;
}

/* ------------------------------------------------------------ requests, checked */

json_t *market_provider_request_canonical(const json_t *request, struct err *err)
{
    struct provider_request req;
    struct provider_parts parts;
    if (parse_request(request, &req, err) < 0 || build_parts(&req, &parts, err) < 0)
        return NULL;
    json_t *out =
        json_pack("{s:s, s:{s:s, s:O}, s:b}", "name", req.name, "adapter", "identifier",
                  SIM_ADAPTER, "config", parts.settings_json, "enabled", req.enabled != 0);
    parts_free(&parts);
    if (!out)
        err_set(err, ERR_INTERNAL, "out of memory");
    return out;
}
