/*
 * adapters: the settings of the simulated adapter (parsing, defaults, the
 * effective settings view) and its AdapterMetadata.
 *
 * The defaults are defined once, by parsing an empty config; the
 * settingsSchema shows them from that parse, so the documentation cannot
 * drift from the behaviour.
 */
#include "market/sim.h"

#include "core/names.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FIELD_PREFIX "adapter.config"

/* ------------------------------------------------------------- errors */

__attribute__((format(printf, 3, 4))) static int bad_field(struct err *err, const char *field,
                                                           const char *fmt, ...)
{
    char why[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    err_set(err, ERR_INVALID, "%s: %s", field, why);
    err_add_detail(err, "field", json_string(field));
    return -1;
}

static void field_name(char *out, size_t size, const char *key)
{
    snprintf(out, size, FIELD_PREFIX ".%s", key);
}

/* --------------------------------------------------------- primitives */

static bool valid_asset(const char *s, size_t len)
{
    if (len == 0 || len >= EVENT_ASSET_MAX)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9')))
            return false;
    }
    return true;
}

bool sim_split_symbol(const char *symbol, char *base, char *quote)
{
    if (!names_valid_symbol(symbol))
        return false;
    const char *dash = strchr(symbol, '-');
    if (!dash || strchr(dash + 1, '-'))
        return false;
    size_t blen = (size_t)(dash - symbol), qlen = strlen(dash + 1);
    if (!valid_asset(symbol, blen) || !valid_asset(dash + 1, qlen))
        return false;
    memcpy(base, symbol, blen);
    base[blen] = '\0';
    memcpy(quote, dash + 1, qlen + 1);
    return true;
}

/* Drops the zeros that end a fraction, and the point with them. */
static void trim_fraction(char *text)
{
    char *end = text + strlen(text);
    while (end > text && end[-1] == '0')
        *--end = '\0';
    if (end > text && end[-1] == '.')
        end[-1] = '\0';
}

void sim_decimal_text(double v, char *out, size_t size)
{
    /* 15 significant digits: prices print as people wrote them, and
     * computed amounts (fees, averages) without binary noise such as
     * 0.49690850000000003. */
    if (isnan(v) || isinf(v)) {
        (void)snprintf(out, size, "%s", isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        return;
    }
    if (v == 0) {
        (void)snprintf(out, size, "0"); /* -0 too */
        return;
    }
    (void)snprintf(out, size, "%.15g", v);
    const char *e = strchr(out, 'e');
    if (!e)
        return;
    /* A decimal without an exponent where one fits: clients read the
     * records' strings as decimals, and many decimal parsers take no
     * exponent. */
    int exponent = atoi(e + 1);
    char plain[SIM_DECIMAL_MAX];
    int n = exponent < 0 ? snprintf(plain, sizeof plain, "%.*f", 14 - exponent, v)
                         : snprintf(plain, sizeof plain, "%.0f", v);
    if (n < 0 || (size_t)n >= sizeof plain || (size_t)n >= size)
        return; /* beyond any price or size: the exponent form stays */
    if (exponent < 0)
        trim_fraction(plain);
    memcpy(out, plain, strlen(plain) + 1);
}

/* Integral values print as integers ("tickRate": 10, not 10.0). */
static json_t *number_json(double v)
{
    if (v == floor(v) && fabs(v) < 9e15)
        return json_integer((json_int_t)v);
    return json_real(v);
}

/* ------------------------------------------------------------ parsing */

static const char *const known_keys[] = {"symbols",    "seed",        "tickRate",
                                         "volatility", "startPrices", "bookDepth",
                                         "balances",   "feeRate",     "strictIncrements"};

static int check_known_keys(const json_t *config, struct err *err)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)config, key, value)
    {
        bool known = false;
        for (size_t i = 0; i < sizeof known_keys / sizeof known_keys[0]; i++)
            known = known || strcmp(key, known_keys[i]) == 0;
        if (!known) {
            char field[300];
            field_name(field, sizeof field, key);
            return bad_field(err, field, "unknown setting of adapter '%s'", SIM_ADAPTER);
        }
    }
    return 0;
}

static double default_start_price(const char *base)
{
    if (strcmp(base, "BTC") == 0)
        return 50000;
    if (strcmp(base, "ETH") == 0)
        return 3000;
    return 100;
}

static int add_symbol(struct sim_settings *s, const char *symbol, size_t index, struct err *err)
{
    char field[64];
    snprintf(field, sizeof field, FIELD_PREFIX ".symbols[%zu]", index);
    struct sim_symbol_cfg *c = &s->symbols[s->nsymbols];
    if (strlen(symbol) > SIM_SYMBOL_MAX || !sim_split_symbol(symbol, c->base, c->quote))
        return bad_field(err, field, "expected a symbol \"BASE-QUOTE\" (letters and digits)");
    /* one account entry would take both legs of every fill */
    if (strcmp(c->base, c->quote) == 0)
        return bad_field(err, field, "%s trades %s for itself: base and quote must differ", symbol,
                         c->base);
    for (size_t i = 0; i < s->nsymbols; i++) {
        if (strcmp(s->symbols[i].symbol, symbol) == 0)
            return bad_field(err, field, "duplicate symbol %s", symbol);
    }
    snprintf(c->symbol, sizeof c->symbol, "%s", symbol);
    c->start_price = default_start_price(c->base);
    s->nsymbols++;
    return 0;
}

static int parse_symbols(const json_t *config, struct sim_settings *s, struct err *err)
{
    static const char *const defaults[] = {"BTC-USDT", "ETH-USDT"};
    const json_t *list = json_object_get(config, "symbols");
    const char *field = FIELD_PREFIX ".symbols";
    if (list && !json_is_array(list))
        return bad_field(err, field, "expected an array of \"BASE-QUOTE\" strings");
    size_t n = list ? json_array_size(list) : 2;
    if (n == 0 || n > SIM_MAX_SYMBOLS)
        return bad_field(err, field, "expected between 1 and %d symbols", SIM_MAX_SYMBOLS);
    s->symbols = calloc(n, sizeof *s->symbols);
    if (!s->symbols) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const json_t *item = list ? json_array_get(list, i) : NULL;
        if (list && !json_is_string(item)) {
            char f[64];
            snprintf(f, sizeof f, "%s[%zu]", field, i);
            return bad_field(err, f, "expected a symbol \"BASE-QUOTE\" (letters and digits)");
        }
        if (add_symbol(s, item ? json_string_value(item) : defaults[i], i, err) < 0)
            return -1;
    }
    return 0;
}

/* A number setting within [min, max]; `min_open` excludes min itself. */
struct number_rule {
    const char *key;
    double min, max;
    bool min_open, max_open, integer;
};

static int parse_number(const json_t *config, const struct number_rule *r, double *out,
                        struct err *err)
{
    const json_t *v = json_object_get(config, r->key);
    if (!v)
        return 0;
    char field[64];
    field_name(field, sizeof field, r->key);
    const char *what = r->integer ? "an integer" : "a number";
    if (r->integer ? !json_is_integer(v) : !json_is_number(v))
        return bad_field(err, field, "expected %s %s %g", what, r->min_open ? ">" : ">=", r->min);
    double x = json_number_value(v);
    if (!isfinite(x) || (r->min_open ? x <= r->min : x < r->min))
        return bad_field(err, field, "expected %s %s %g", what, r->min_open ? ">" : ">=", r->min);
    if (r->max_open ? x >= r->max : x > r->max)
        return bad_field(err, field, "expected %s %s %g", what, r->max_open ? "<" : "<=", r->max);
    *out = x;
    return 0;
}

static int parse_scalars(const json_t *config, struct sim_settings *s, struct err *err)
{
    static const struct number_rule seed = {"seed", 0, 9007199254740991.0, false, false, true};
    static const struct number_rule rate = {"tickRate", 0, SIM_MAX_TICK_RATE, false, false, false};
    static const struct number_rule vol = {"volatility", 0,     SIM_MAX_VOLATILITY,
                                           false,        false, false};
    static const struct number_rule depth = {"bookDepth", 1, SIM_MAX_DEPTH, false, false, true};
    static const struct number_rule fee = {"feeRate", 0, 1, false, true, false};
    double seed_v = (double)s->seed, depth_v = s->book_depth;
    if (parse_number(config, &seed, &seed_v, err) < 0 ||
        parse_number(config, &rate, &s->tick_rate, err) < 0 ||
        parse_number(config, &vol, &s->volatility, err) < 0 ||
        parse_number(config, &depth, &depth_v, err) < 0 ||
        parse_number(config, &fee, &s->fee_rate, err) < 0)
        return -1;
    const json_t *strict = json_object_get(config, "strictIncrements");
    if (strict && !json_is_boolean(strict))
        return bad_field(err, FIELD_PREFIX ".strictIncrements", "expected true or false");
    s->strict_increments = json_is_true(strict);
    /* seed is an integer JSON value; read it exactly rather than via double */
    const json_t *sv = json_object_get(config, "seed");
    s->seed = sv ? (uint64_t)json_integer_value(sv) : s->seed;
    s->book_depth = (uint32_t)depth_v;
    return 0;
}

static int parse_start_prices(const json_t *config, struct sim_settings *s, struct err *err)
{
    const json_t *obj = json_object_get(config, "startPrices");
    if (!obj)
        return 0;
    if (!json_is_object(obj))
        return bad_field(err, FIELD_PREFIX ".startPrices", "expected an object {symbol: price}");
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        char field[128];
        snprintf(field, sizeof field, FIELD_PREFIX ".startPrices.%.64s", key);
        struct sim_symbol_cfg *c = NULL;
        for (size_t i = 0; i < s->nsymbols && !c; i++)
            c = strcmp(s->symbols[i].symbol, key) == 0 ? &s->symbols[i] : NULL;
        if (!c)
            return bad_field(err, field, "not one of the provider's symbols");
        /* the tick and lot sizes derive from the price's decade; beyond
         * these decades their integer arithmetic no longer holds */
        double p = json_is_number(value) ? json_number_value(value) : -1;
        if (!(p >= 1e-12) || !isfinite(p) || p > 1e12)
            return bad_field(err, field, "expected a number from 1e-12 to 1e12");
        c->start_price = p;
    }
    return 0;
}

static int add_balance(struct sim_settings *s, const char *asset, double amount)
{
    for (size_t i = 0; i < s->nbalances; i++) {
        if (strcmp(s->balances[i].asset, asset) == 0) {
            s->balances[i].amount = amount;
            return 0;
        }
    }
    struct sim_balance_cfg *b = &s->balances[s->nbalances++];
    snprintf(b->asset, sizeof b->asset, "%s", asset);
    b->amount = amount;
    return 0;
}

/* Default: one unit of every base asset, 100000 of every quote asset (a
 * quote asset wins when an asset is both). */
static void default_balances(struct sim_settings *s)
{
    for (size_t i = 0; i < s->nsymbols; i++)
        add_balance(s, s->symbols[i].base, 1);
    for (size_t i = 0; i < s->nsymbols; i++)
        add_balance(s, s->symbols[i].quote, 100000);
}

static int parse_balances(const json_t *config, struct sim_settings *s, struct err *err)
{
    const json_t *obj = json_object_get(config, "balances");
    size_t cap = json_is_object(obj) ? json_object_size(obj) : 2 * s->nsymbols;
    if (obj && (!json_is_object(obj) || cap > SIM_MAX_BALANCES))
        return bad_field(err, FIELD_PREFIX ".balances",
                         "expected an object {asset: amount} of at most %d assets",
                         SIM_MAX_BALANCES);
    s->balances = calloc(cap ? cap : 1, sizeof *s->balances);
    if (!s->balances) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    if (!obj) {
        default_balances(s);
        return 0;
    }
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value)
    {
        char field[128];
        snprintf(field, sizeof field, FIELD_PREFIX ".balances.%.64s", key);
        if (!valid_asset(key, strlen(key)))
            return bad_field(err, field, "expected an asset name of letters and digits");
        double a = json_is_number(value) ? json_number_value(value) : -1;
        if (!(a >= 0) || !isfinite(a))
            return bad_field(err, field, "expected a number >= 0");
        add_balance(s, key, a);
    }
    return 0;
}

int sim_settings_parse(const json_t *config, struct sim_settings **out, struct err *err)
{
    json_t *empty = NULL;
    if (!config)
        config = empty = json_object();
    if (!config || !json_is_object(config)) {
        json_decref(empty);
        return bad_field(err, FIELD_PREFIX, "expected an object");
    }
    struct sim_settings *s = calloc(1, sizeof *s);
    if (!s) {
        json_decref(empty);
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    s->seed = 1;
    s->tick_rate = 10;
    s->volatility = 0.0005;
    s->book_depth = 10;
    s->fee_rate = 0.001;
    int rc = -1;
    if (check_known_keys(config, err) == 0 && parse_symbols(config, s, err) == 0 &&
        parse_scalars(config, s, err) == 0 && parse_start_prices(config, s, err) == 0 &&
        parse_balances(config, s, err) == 0)
        rc = 0;
    json_decref(empty);
    if (rc < 0) {
        sim_settings_free(s);
        return -1;
    }
    *out = s;
    return 0;
}

void sim_settings_free(struct sim_settings *s)
{
    if (!s)
        return;
    free(s->symbols);
    free(s->balances);
    free(s);
}

json_t *sim_settings_json(const struct sim_settings *s)
{
    json_t *symbols = json_array(), *prices = json_object(), *balances = json_object();
    for (size_t i = 0; i < s->nsymbols; i++) {
        json_array_append_new(symbols, json_string(s->symbols[i].symbol));
        json_object_set_new(prices, s->symbols[i].symbol, number_json(s->symbols[i].start_price));
    }
    for (size_t i = 0; i < s->nbalances; i++)
        json_object_set_new(balances, s->balances[i].asset, number_json(s->balances[i].amount));
    return json_pack("{s:o, s:I, s:o, s:o, s:o, s:I, s:o, s:o, s:b}", "symbols", symbols, "seed",
                     (json_int_t)s->seed, "tickRate", number_json(s->tick_rate), "volatility",
                     number_json(s->volatility), "startPrices", prices, "bookDepth",
                     (json_int_t)s->book_depth, "balances", balances, "feeRate",
                     number_json(s->fee_rate), "strictIncrements", s->strict_increments);
}

/* ----------------------------------------------------------- metadata */

struct setting_doc {
    const char *name;
    const char *type;
    const char *description;
};

static const struct setting_doc setting_docs[] = {
    {"symbols", "array", "Symbols traded, each \"BASE-QUOTE\" (e.g. BTC-USDT); 1 to 64 of them."},
    {"seed", "integer",
     "Seed of the price process: the same settings produce the same event sequence."},
    {"tickRate", "number",
     "Ticks per second per symbol (each tick emits a Trade and a Ticker); 0 runs unpaced, "
     "as fast as consumers take the events."},
    {"volatility", "number", "Per-tick standard deviation of the log price (0 to 0.5)."},
    {"startPrices", "object",
     "Starting price per symbol {symbol: price}; BTC starts at 50000, ETH at 3000, others at "
     "100."},
    {"bookDepth", "integer", "Price levels per side in BookSnapshot events (1 to 100)."},
    {"balances", "object",
     "Starting balances {asset: amount}; by default 100000 of each quote asset and 1 of each "
     "base asset."},
    {"feeRate", "number", "Fee per fill as a fraction of its notional, in the quote asset."},
    {"strictIncrements", "boolean",
     "Reject orders whose quantity is not a whole number of lots or whose limit price is not a "
     "whole number of ticks (the sizes each symbol's InstrumentUpdate gives), as venues do; off "
     "by default."},
};

static json_t *settings_schema(void)
{
    struct sim_settings *defaults = NULL;
    if (sim_settings_parse(NULL, &defaults, NULL) < 0)
        return NULL;
    json_t *values = sim_settings_json(defaults);
    sim_settings_free(defaults);
    json_t *schema = json_array();
    for (size_t i = 0; i < sizeof setting_docs / sizeof setting_docs[0]; i++) {
        const struct setting_doc *d = &setting_docs[i];
        json_array_append_new(schema,
                              json_pack("{s:s, s:s, s:O*, s:s, s:b}", "name", d->name, "type",
                                        d->type, "default", json_object_get(values, d->name),
                                        "description", d->description, "required", 0));
    }
    json_decref(values);
    return schema;
}

json_t *sim_adapter_json(void)
{
    return json_pack("{s:s, s:s, s:s, s:s, s:[sssssss], s:o*}", "identifier", SIM_ADAPTER,
                     "displayName", "Simulated exchange", "venue", "SIMULATED", "description",
                     "A deterministic simulated spot exchange: a seeded random-walk price, a "
                     "synthetic order book, market and limit orders with fees and balances.",
                     "capabilities", "trades", "ticker", "orderBook", "klines", "orders",
                     "balances", "dryRun", "settingsSchema", settings_schema());
}
