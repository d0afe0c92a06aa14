/*
 * spec: InstanceSpec documents in, resolved specs and launch plans out.
 *
 * A spec names its strategy by selector (strategy.selector, else
 * strategy.identifier narrowed by strategy.hash or strategy.tag). Creating
 * or updating an instance resolves that selector once and pins the hash;
 * the stored spec then carries identifier, selector (canonical spelling),
 * tag (the tag resolved through, or the revision's primary tag) and hash
 * ("sha256:<hex>"). The instance's own config is stored as given; the
 * metadata defaults are merged in (and types checked) whenever a plan is
 * built, so a refresh to a revision with new defaults picks them up.
 */
#include "runtime/internal.h"

#include "core/intern.h"
#include "core/jsonutil.h"
#include "js/config.h"
#include "js/validate.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPEC_MAX_SYMBOLS 4096

__attribute__((format(printf, 3, 4))) static int invalid(struct err *err, const char *field,
                                                         const char *fmt, ...)
{
    char text[ERR_MESSAGE_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    err_set(err, ERR_INVALID, "%s: %s", field, text);
    err_add_detail(err, "field", json_string(field));
    return -1;
}

/* ------------------------------------------------------------ selector */

static int selector_text(const json_t *strategy, char *out, size_t size, struct err *err)
{
    const char *identifier = NULL, *selector = NULL, *tag = NULL, *hash = NULL;
    if (jsonutil_get_string(strategy, "identifier", &identifier, err) < 0 ||
        jsonutil_get_string(strategy, "selector", &selector, err) < 0 ||
        jsonutil_get_string(strategy, "tag", &tag, err) < 0 ||
        jsonutil_get_string(strategy, "hash", &hash, err) < 0)
        return -1;
    int n;
    if (selector && *selector)
        n = snprintf(out, size, "%s", selector);
    else if (!identifier || !*identifier)
        return invalid(err, "strategy.identifier", "required (or strategy.selector)");
    else if (hash && *hash)
        n = snprintf(out, size, "%s@%s", identifier, hash);
    else if (tag && *tag)
        n = snprintf(out, size, "%s:%s", identifier, tag);
    else
        n = snprintf(out, size, "%s", identifier);
    if (n < 0 || (size_t)n >= size)
        return invalid(err, "strategy.selector", "too long");
    return 0;
}

/* A bare hex name that resolved as a hash prefix is a hash selector. */
static void canonical_selector(struct selector *sel, const struct registry_resolution *res,
                               char *out, size_t size)
{
    if (sel->kind == SELECTOR_LATEST && strcmp(sel->name, res->strategy->name) != 0) {
        size_t len = strlen(sel->name);
        sel->kind = SELECTOR_HASH;
        memcpy(sel->hex, sel->name, len + 1);
        sel->hex_len = len;
    }
    if (!sel->name[0] || sel->kind == SELECTOR_HASH)
        snprintf(sel->name, sizeof sel->name, "%s", res->strategy->name);
    selector_format(sel, out, size);
}

int spec_reresolve(const struct registry *reg, const char *selector,
                   struct registry_resolution *out, struct err *err)
{
    return registry_resolve_text(reg, selector, out, err);
}

/* ------------------------------------------------------------ scope */

static int check_symbols(const struct runtime_options *opts, const char *provider,
                         const json_t *symbols, json_t *out, struct err *err)
{
    char field[NAMES_ID_MAX + 32];
    snprintf(field, sizeof field, "scope.%s.symbols", provider);
    if (!json_is_array(symbols) || json_array_size(symbols) == 0)
        return invalid(err, field, "must be a non-empty array of symbols");
    size_t i;
    json_t *s;
    json_array_foreach(symbols, i, s)
    {
        const char *sym = json_string_value(s);
        if (!sym || !names_valid_symbol(sym))
            return invalid(err, field, "invalid symbol %s", sym ? sym : "(not a string)");
        if (opts->scope_check && !opts->scope_check(opts->scope_ctx, provider, sym))
            return invalid(err, field, "unknown symbol %s", sym);
        bool seen = false;
        for (size_t j = 0; j < json_array_size(out); j++)
            seen |= strcmp(json_string_value(json_array_get(out, j)), sym) == 0;
        if (!seen && json_array_append_new(out, json_string(sym)) != 0)
            return invalid(err, field, "out of memory");
    }
    return 0;
}

static int check_scope(const struct runtime_options *opts, const json_t *scope, json_t **out,
                       struct err *err)
{
    if (!scope)
        return invalid(err, "scope", "required: {\"<provider>\": {\"symbols\": [...]}}");
    if (!json_is_object(scope))
        return invalid(err, "scope", "must be an object of provider -> {symbols: [...]}");
    if (json_object_size(scope) == 0)
        return invalid(err, "scope", "must name at least one provider");
    json_t *result = json_object();
    const char *provider;
    json_t *value;
    size_t total = 0;
    json_object_foreach((json_t *)scope, provider, value)
    {
        char field[NAMES_ID_MAX + 16];
        snprintf(field, sizeof field, "scope.%s", provider);
        json_t *symbols = json_array();
        int rc = 0;
        if (!names_valid_id(provider))
            rc = invalid(err, "scope", "invalid provider name %s", provider);
        else if (opts->scope_check && !opts->scope_check(opts->scope_ctx, provider, NULL))
            rc = invalid(err, field, "unknown provider %s", provider);
        else if (!json_is_object(value))
            rc = invalid(err, field, "must be an object {\"symbols\": [...]}");
        else
            rc = check_symbols(opts, provider, json_object_get(value, "symbols"), symbols, err);
        total += json_array_size(symbols);
        if (rc == 0 && total > SPEC_MAX_SYMBOLS)
            rc = invalid(err, "scope", "more than %d symbols", SPEC_MAX_SYMBOLS);
        if (rc != 0) {
            json_decref(symbols);
            json_decref(result);
            return -1;
        }
        json_object_set_new(result, provider, json_pack("{s:o}", "symbols", symbols));
    }
    *out = result;
    return 0;
}

/* ------------------------------------------------------------ gateway keys */

/* Config keys the gateway itself reads, whether or not the strategy's
 * metadata declares them (js/config.h lists them): typed here so a wrong
 * value is refused when the spec is stored instead of being silently
 * ignored at start (a dry_run of "yes" would otherwise trade for real).
 * JSON null means absent. `config` is resolved (the module's defaults
 * merged in), `given` the instance's own: a value the instance does not
 * set is the module's default, which the message says, since no change
 * to the instance's other keys can mend it. */
static int check_gateway_keys(const json_t *config, const json_t *given, struct err *err)
{
    const char *key;
    for (size_t i = 0; (key = js_config_gateway_key(i)) != NULL; i++) {
        const json_t *value = json_object_get(config, key);
        char expected[128], field[64];
        if (js_config_gateway_accepts(key, value, expected, sizeof expected))
            continue;
        snprintf(field, sizeof field, "config.%s", key);
        const json_t *own = json_object_get(given, key);
        if (own && !json_is_null(own))
            return invalid(err, field, "expected %s", expected);
        char *text = json_dumps(value, JSON_ENCODE_ANY | JSON_COMPACT);
        invalid(err, field,
                "expected %s, got %.64s, the module's own default (the instance's config does "
                "not set it)",
                expected, text ? text : "a value");
        free(text);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ resolve */

static int check_id(const json_t *in, const char *forced_id, const char **id, struct err *err)
{
    const char *given = NULL;
    if (jsonutil_get_string(in, "id", &given, err) < 0)
        return -1;
    if (forced_id) {
        if (given && strcmp(given, forced_id) != 0)
            return invalid(err, "id", "does not match the instance %s", forced_id);
        *id = forced_id;
        return 0;
    }
    if (!given)
        return invalid(err, "id", "required");
    if (!names_valid_id(given))
        return invalid(err, "id", "must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}, got %s", given);
    *id = given;
    return 0;
}

/* The strategy object's members are the contract's, all of which a
 * snapshot carries back: any other is a misspelling (a "confg" would start
 * the instance on its defaults), refused. */
static int check_strategy_keys(const json_t *strategy, struct err *err)
{
    static const char *const known[] = {"identifier", "selector", "tag", "hash", "config"};
    const char *key = jsonutil_unknown_key(strategy, known, sizeof known / sizeof known[0]);
    if (!key)
        return 0;
    char field[64];
    snprintf(field, sizeof field, "strategy.%.40s", key);
    return invalid(err, field,
                   "unknown field: a strategy takes identifier, selector, tag, hash and config");
}

static bool given(const json_t *strategy, const char *key)
{
    const char *v = json_string_value(json_object_get(strategy, key));
    return v && *v;
}

/* The member the selector text came from, for the field of its errors. */
static const char *selector_source(const json_t *strategy)
{
    if (given(strategy, "selector"))
        return "strategy.selector";
    if (given(strategy, "hash"))
        return "strategy.hash";
    return given(strategy, "tag") ? "strategy.tag" : "strategy.identifier";
}

/* Whether `hash` (sha256:<hex> or hex, whole or a prefix of at least 12
 * digits) names the revision `hex`. */
static bool hash_names(const char *hash, const char *hex)
{
    if (strncmp(hash, HASH_PREFIX, HASH_PREFIX_LEN) == 0)
        hash += HASH_PREFIX_LEN;
    size_t len = strlen(hash);
    return len >= SELECTOR_MIN_PREFIX && len <= HASH_HEX_LEN && hash_is_hex(hash, len) &&
           strncmp(hash, hex, len) == 0;
}

/* identifier, hash and tag given beside the member the selector came from
 * must name what it resolved to: a snapshot put back with one of them
 * edited would otherwise be answered 200 and the edit dropped. */
static int check_agreement(const json_t *strategy, const char *text,
                           const struct registry_resolution *res, struct err *err)
{
    const char *identifier = json_string_value(json_object_get(strategy, "identifier"));
    if (identifier && *identifier && strcmp(identifier, res->strategy->name) != 0)
        return invalid(err, "strategy.identifier", "does not match the selector's strategy %s",
                       res->strategy->name);
    const char *hash = json_string_value(json_object_get(strategy, "hash"));
    if (hash && *hash && !hash_names(hash, res->revision->hex))
        return invalid(err, "strategy.hash",
                       "does not name the revision %s resolves to (sha256:%s); to move the "
                       "instance, change strategy.selector",
                       text, res->revision->hex);
    const char *tag = json_string_value(json_object_get(strategy, "tag"));
    if (!tag || !*tag)
        return 0;
    const char *target = registry_tag_target(res->strategy, tag);
    bool primary = res->revision->tag && strcmp(res->revision->tag, tag) == 0;
    if (!primary && !(target && strcmp(target, res->revision->hex) == 0))
        return invalid(err, "strategy.tag",
                       "'%s' does not name the revision %s resolves to (sha256:%s); to move the "
                       "instance, change strategy.selector",
                       tag, text, res->revision->hex);
    return 0;
}

static int resolve_strategy(const struct registry *reg, const json_t *strategy,
                            struct spec_resolved *out, struct registry_resolution *res,
                            struct err *err)
{
    char text[SELECTOR_TEXT_MAX + HASH_SPELLED_LEN + 2];
    if (selector_text(strategy, text, sizeof text, err) != 0)
        return -1;
    struct selector sel;
    struct err parse = ERR_INIT;
    if (selector_parse(text, &sel, &parse) != 0) {
        const char *field = selector_source(strategy);
        invalid(err, field, "%s", parse.message);
        err_clear(&parse);
        return -1;
    }
    if (registry_resolve(reg, &sel, res, err) != 0)
        return -1;
    if (check_agreement(strategy, text, res, err) != 0)
        return -1;
    canonical_selector(&sel, res, out->selector, sizeof out->selector);
    snprintf(out->strategy, sizeof out->strategy, "%s", res->strategy->name);
    snprintf(out->hex, sizeof out->hex, "%s", res->revision->hex);
    snprintf(out->tag, sizeof out->tag, "%s",
             res->tag             ? res->tag
             : res->revision->tag ? res->revision->tag
                                  : "");
    out->metadata = res->revision->metadata;
    return 0;
}

int spec_resolve(const struct runtime_options *opts, const struct registry *reg, const json_t *in,
                 const char *forced_id, struct spec_resolved *out, struct err *err)
{
    memset(out, 0, sizeof *out);
    if (!json_is_object(in)) {
        err_set(err, ERR_INVALID, "an instance spec must be a JSON object");
        return -1;
    }
    const char *id = NULL;
    if (check_id(in, forced_id, &id, err) != 0)
        return -1;
    const json_t *strategy = json_object_get(in, "strategy");
    if (!json_is_object(strategy))
        return invalid(err, "strategy", "required object {identifier, config}");
    if (check_strategy_keys(strategy, err) != 0)
        return -1;
    const json_t *config = json_object_get(strategy, "config");
    if (config && !json_is_object(config) && !json_is_null(config))
        return invalid(err, "strategy.config", "must be an object");
    struct registry_resolution res;
    if (resolve_strategy(reg, strategy, out, &res, err) != 0)
        return -1;
    json_t *scope = NULL;
    if (check_scope(opts, json_object_get(in, "scope"), &scope, err) != 0)
        return -1;
    out->config = out->metadata ? js_config_resolve(out->metadata,
                                                    json_is_object(config) ? config : NULL, err)
                                : (json_is_object(config) ? json_deep_copy(config) : json_object());
    if (!out->config) {
        json_decref(scope);
        if (err && err->kind == ERR_NONE)
            err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    if (check_gateway_keys(out->config, json_is_object(config) ? config : NULL, err) != 0) {
        json_decref(scope);
        spec_resolved_clear(out);
        return -1;
    }
    char hash[HASH_SPELLED_LEN + 1];
    hash_spell(out->hex, hash);
    out->spec =
        json_pack("{s:s, s:{s:s, s:s, s:s, s:s, s:o}, s:o}", "id", id, "strategy", "identifier",
                  out->strategy, "selector", out->selector, "tag", out->tag, "hash", hash, "config",
                  json_is_object(config) ? json_deep_copy(config) : json_object(), "scope", scope);
    if (!out->spec) {
        spec_resolved_clear(out);
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    return 0;
}

void spec_resolved_clear(struct spec_resolved *r)
{
    json_decref(r->spec);
    json_decref(r->config);
    r->spec = r->config = NULL;
}

json_t *spec_repin(const json_t *spec, const char *hex, const char *tag)
{
    json_t *copy = json_deep_copy(spec);
    json_t *strategy = json_object_get(copy, "strategy");
    if (!strategy) {
        json_decref(copy);
        return NULL;
    }
    char hash[HASH_SPELLED_LEN + 1];
    hash_spell(hex, hash);
    json_object_set_new(strategy, "hash", json_string(hash));
    if (tag && *tag)
        json_object_set_new(strategy, "tag", json_string(tag));
    return copy;
}

const char *spec_selector(const json_t *spec)
{
    const json_t *strategy = json_object_get(spec, "strategy");
    const char *s = json_string_value(json_object_get(strategy, "selector"));
    return s ? s : json_string_value(json_object_get(strategy, "identifier"));
}

/* ------------------------------------------------------------ plans */

void runtime_plan_free(struct vm_plan *plan)
{
    if (!plan)
        return;
    if (plan->bytecode)
        js_bytecode_release(plan->bytecode);
    free(plan->config_json);
    free(plan->metadata_json);
    free(plan->scope);
    free(plan->providers);
    free(plan);
}

struct source_ctx {
    struct runtime *rt;
    const char *strategy;
};

static int read_source(void *ctx, const char *hex, char **source, size_t *len, char *filename,
                       size_t filename_size, struct err *err)
{
    struct source_ctx *sc = ctx;
    snprintf(filename, filename_size, "%s.js", sc->strategy);
    return catalog_read_source(sc->rt->opts.catalog, sc->strategy, hex, source, len, err);
}

static uint32_t events_of(const json_t *metadata)
{
    const json_t *events = json_object_get(metadata, "events");
    if (!json_is_array(events))
        return EVENT_MASK_ALL;
    uint32_t mask = 0;
    size_t i;
    json_t *e;
    json_array_foreach(events, i, e)
    {
        int k = json_string_value(e) ? js_event_index(json_string_value(e)) : -1;
        if (k >= 0)
            mask |= 1u << k;
    }
    return mask;
}

/* One limit: the operator's value when the instance's own config gives one
 * (read as resolved, so that a `duration` given as "5s" counts as its
 * milliseconds: it had counted as not given); else the gateway's default,
 * which a module's declared default may lower but never raise (a strategy
 * must not lift its own cap). */
static double limit_value(const json_t *given, const json_t *merged, const char *key,
                          double fallback, double low, double high)
{
    double v = json_number_value(json_object_get(merged, key));
    if (json_object_get(given, key) && v >= low && v <= high)
        return v;
    return v >= low && v < fallback ? v : fallback;
}

/* Limits (memory_limit_mb, cpu_budget_ms) from the instance's config as
 * given (`given`) and with the module's defaults merged (`merged`). */
static void limits_of(struct runtime *rt, const json_t *given, const json_t *merged,
                      struct js_limits *out)
{
    *out = rt->opts.limits;
    if (!out->memory_bytes)
        out->memory_bytes = JS_SANDBOX_DEFAULT_MEMORY;
    if (!out->budget_ns)
        out->budget_ns = JS_SANDBOX_DEFAULT_BUDGET_NS;
    double mb =
        limit_value(given, merged, "memory_limit_mb", (double)out->memory_bytes / (1024.0 * 1024.0),
                    1, JS_CONFIG_MEMORY_LIMIT_MB_MAX);
    double ms = limit_value(given, merged, "cpu_budget_ms", (double)out->budget_ns / 1e6, 1e-6,
                            JS_CONFIG_CPU_BUDGET_MS_MAX);
    out->memory_bytes = (size_t)(mb * 1024 * 1024);
    out->budget_ns = (int64_t)(ms * 1e6);
}

/* The instance's order rate: as the limits above, its own config's value
 * when it gives one, else the gateway's, which a module's default may only
 * lower. With the gateway's off (0), only a value the instance or its
 * module gives applies. */
static uint32_t order_rate_of(const struct runtime *rt, const json_t *given, const json_t *merged)
{
    double gateway = rt->max_orders_per_second ? (double)rt->max_orders_per_second
                                               : JS_CONFIG_ORDERS_PER_SECOND_MAX + 1.0;
    double rate = limit_value(given, merged, "max_orders_per_second", gateway, 1,
                              JS_CONFIG_ORDERS_PER_SECOND_MAX);
    return rate > JS_CONFIG_ORDERS_PER_SECOND_MAX ? 0 : (uint32_t)rate;
}

static int plan_scope(struct vm_plan *plan, const json_t *scope, struct err *err)
{
    size_t nproviders = json_object_size(scope), nsymbols = 0;
    const char *provider;
    json_t *value;
    json_object_foreach((json_t *)scope, provider, value) nsymbols +=
        json_array_size(json_object_get(value, "symbols"));
    if (nproviders == 0 || nsymbols + nproviders > UINT16_MAX) {
        err_set(err, ERR_INVALID, "scope: must name 1 to %d providers and symbols", UINT16_MAX);
        return -1;
    }
    plan->providers = calloc(nproviders, sizeof *plan->providers);
    plan->scope = calloc(nsymbols + nproviders, sizeof *plan->scope);
    if (!plan->providers || !plan->scope) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    json_object_foreach((json_t *)scope, provider, value)
    {
        uint16_t p = intern_id(provider);
        if (!p) {
            err_set(err, ERR_INTERNAL, "too many provider and symbol names");
            return -1;
        }
        plan->providers[plan->nproviders++] = p;
        size_t i;
        json_t *sym;
        json_array_foreach(json_object_get(value, "symbols"), i, sym)
        {
            uint16_t s = json_string_value(sym) ? intern_id(json_string_value(sym)) : 0;
            if (!s) {
                err_set(err, ERR_INTERNAL, "too many provider and symbol names");
                return -1;
            }
            plan->scope[plan->nscope++] = (struct scope_entry){p, s};
        }
    }
    for (uint16_t i = 0; i < plan->nproviders; i++)
        plan->scope[plan->nscope++] = (struct scope_entry){plan->providers[i], 0};
    return 0;
}

static int plan_config(struct runtime *rt, struct vm_plan *plan, const json_t *spec,
                       const json_t *metadata, struct err *err)
{
    const json_t *given = json_object_get(json_object_get(spec, "strategy"), "config");
    json_t *config = metadata
                         ? js_config_resolve(metadata, json_is_object(given) ? given : NULL, err)
                         : (json_is_object(given) ? json_deep_copy(given) : json_object());
    if (!config) {
        if (err && err->kind == ERR_NONE)
            err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    if (check_gateway_keys(config, json_is_object(given) ? given : NULL, err) != 0) {
        json_decref(config);
        return -1;
    }
    plan->dry_run = json_is_true(json_object_get(config, "dry_run"));
    limits_of(rt, json_is_object(given) ? given : NULL, config, &plan->limits);
    plan->max_orders_per_second = order_rate_of(rt, json_is_object(given) ? given : NULL, config);
    plan->config_json = jsonutil_dump(config, NULL);
    json_decref(config);
    plan->metadata_json = metadata ? jsonutil_dump(metadata, NULL) : strdup("null");
    if (!plan->config_json || !plan->metadata_json) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    plan->events = metadata ? events_of(metadata) : EVENT_MASK_ALL;
    return 0;
}

int spec_plan(struct runtime *rt, const json_t *spec, const char *strategy, const char *hex,
              const json_t *metadata, struct vm_plan **out, struct err *err)
{
    /* the scope was valid when the spec was stored, but a provider may have
     * gone since (deleted while the instance was stopped, or dropped from
     * the configuration): a VM on it would run and never hear a thing */
    json_t *scope = NULL;
    if (check_scope(&rt->opts, json_object_get(spec, "scope"), &scope, err) != 0)
        return -1;
    json_decref(scope);
    struct vm_plan *plan = calloc(1, sizeof *plan);
    if (!plan) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    snprintf(plan->strategy, sizeof plan->strategy, "%s", strategy);
    snprintf(plan->hex, sizeof plan->hex, "%s", hex);
    hash_spell(hex, plan->hash);
    plan->max_errors = rt->max_errors;
    plan->log_lines = rt->log_lines;
    struct source_ctx sc = {rt, strategy};
    if (plan_config(rt, plan, spec, metadata, err) != 0 ||
        plan_scope(plan, json_object_get(spec, "scope"), err) != 0 ||
        js_bytecode_cache_get(rt->bytecode, hex, read_source, &sc, &plan->bytecode, err) != 0) {
        runtime_plan_free(plan);
        return -1;
    }
    snprintf(plan->filename, sizeof plan->filename, "%s", plan->bytecode->filename);
    *out = plan;
    return 0;
}
