/*
 * risk: the runtime risk limits (risk.h), their document and the state the
 * checks keep per instance, position and symbol.
 *
 * The limits in force are a plain struct published through a seqlock of
 * atomic words (as the quotes are, simulated.c): the writer marks the
 * sequence odd, stores the words with release and marks it even; a reader
 * loads them with acquire and retries when the sequence moved. An order
 * thus reads the limits without a lock and without a pointer it would have
 * to keep alive, and never sees half of an update.
 *
 * Per-instance, per-position and per-symbol state lives in lock-free hash
 * tables: a fixed array of buckets whose chains grow only at their head (a
 * compare-and-swap). A reader walks a chain without a lock; two threads
 * adding the same key meet at the compare-and-swap and the loser finds the
 * winner's entry. A deleted instance's entries are unlinked under the
 * risk's lock and freed by the caller after a grace period (risk_retire);
 * the rest are freed by risk_free().
 */
#include "market/risk.h"
#include "market/sim.h"

#include "core/clock.h"
#include "core/intern.h"
#include "core/jsonutil.h"
#include "core/log.h"
#include "core/metrics.h"
#include "core/sorted.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RISK_TEXT_MAX 32          /* characters of a decimal or a duration */
#define RISK_INT_MAX 1000000000LL /* integers of the document */
#define RISK_COOLDOWN_MAX_NS (7LL * 86400 * 1000000000LL)
/* Sums of fills and products of doubles miss a decimal limit by rounding
 * ("0.1" + "0.2" > "0.3"): a value within this share of a limit is in. */
#define RISK_SLACK 1e-9
#define RISK_BUCKET_BITS 10

/* The limits, indexes of stratd_risk_rejections_total's series. */
enum risk_limit {
    LIMIT_KILL,
    LIMIT_TYPES,
    LIMIT_BREAKER,
    LIMIT_BAND,
    LIMIT_NOTIONAL,
    LIMIT_POSITION,
    LIMIT_OPEN,
    LIMIT_THROTTLE,
    LIMIT_COUNT
};

static const char *const limit_names[LIMIT_COUNT] = {
    "killSwitchEnabled", "allowedOrderTypes", "circuitBreaker",      "priceBandPercent",
    "maxNotionalValue",  "maxPositionSize",   "maxConcurrentOrders", "orderThrottle",
};

/* What an order is checked against: plain values, copied whole out of the
 * seqlock. Zero means "no limit" throughout. */
struct risk_limits {
    double max_position; /* base units */
    double max_notional;
    double band_pct;
    double breaker_pct;
    int64_t cooldown_ns;
    uint32_t throttle; /* orders a second an instance */
    uint32_t burst;
    uint32_t max_open;
    uint32_t max_breaches;
    char currency[EVENT_ASSET_MAX]; /* "" = every symbol */
    bool allow[2];                  /* by enum order_type */
    bool kill;
    bool breaker;
    bool any; /* some check applies: false is the fast path */
};

#define RISK_WORDS ((sizeof(struct risk_limits) + 7) / 8)

/* A net position the store held when its provider first started. */
struct carried_position {
    char *instance;
    uint16_t symbol;
    double net;
    atomic_bool forgotten; /* the instance was deleted (risk_forget) */
};

/* A provider's carried positions, sorted by instance then symbol. */
struct carried {
    struct carried *next;
    uint16_t provider;
    size_t n;
    struct carried_position *entries;
};

/* An entry of one of the tables; each table uses its own fields. */
struct risk_node {
    /* set before the entry is published; changed later only by an unlink
     * (risk_retire), under the risk's lock */
    _Atomic(struct risk_node *) next;
    struct risk_node *retired; /* risk_retire's list */
    uint64_t key;
    /* instances: orders admitted and not final (submitters and engines) */
    _Atomic int64_t open;
    /* instances: the throttle bucket (the instance's submitting thread) */
    double tokens;
    int64_t refilled_ns; /* 0: never used, the bucket is full */
    /* positions: a double's bits (the provider's engine holder writes) */
    _Atomic uint64_t position;
    /* breakers: under `busy` */
    atomic_flag busy;
    double reference;
    int64_t window_ns; /* 0: no window open */
    int64_t halted_ns; /* 0: not halted; else orders refused until then */
    double move;       /* the move that halted it, in percent */
};

struct risk_table {
    _Atomic(struct risk_node *) buckets[1u << RISK_BUCKET_BITS];
    _Atomic int64_t entries; /* for stratd_risk_entries */
};

struct risk {
    atomic_uint seq;
    _Atomic uint64_t words[RISK_WORDS];
    atomic_bool breaker; /* the limits' breaker flag, for the trade path */

    pthread_mutex_t lock; /* writers; the document */
    json_t *doc;          /* the RiskConfig in force */

    struct risk_table instances; /* by instance key */
    struct risk_table positions; /* by instance key, provider, symbol */
    struct risk_table breakers;  /* by provider, symbol */
    /* positions stored before this start, one set per provider, pushed at
     * the head under `lock` and never changed */
    _Atomic(struct carried *) carried;

    _Atomic uint64_t rejections[LIMIT_COUNT];
    _Atomic uint64_t halts; /* the circuit breaker's, for stratd_risk_halts_total */
};

static const char default_doc[] =
    "{\"maxPositionSize\": \"0\", \"maxNotionalValue\": \"0\", \"notionalCurrency\": \"\","
    " \"orderThrottle\": 0, \"orderBurst\": 0, \"maxConcurrentOrders\": 0,"
    " \"priceBandPercent\": 0, \"allowedOrderTypes\": [\"market\", \"limit\"],"
    " \"killSwitchEnabled\": false, \"maxRiskBreaches\": 0,"
    " \"circuitBreaker\": {\"enabled\": false, \"threshold\": 0, \"cooldown\": \"0s\"}}";

/* ------------------------------------------------------------ seqlock */

static void limits_write(struct risk *r, const struct risk_limits *l)
{
    uint64_t buf[RISK_WORDS] = {0};
    memcpy(buf, l, sizeof *l);
    unsigned v = atomic_load_explicit(&r->seq, memory_order_relaxed);
    atomic_store_explicit(&r->seq, v + 1, memory_order_relaxed);
    for (size_t i = 0; i < RISK_WORDS; i++)
        atomic_store_explicit(&r->words[i], buf[i], memory_order_release);
    atomic_store_explicit(&r->seq, v + 2, memory_order_release);
    atomic_store_explicit(&r->breaker, l->breaker, memory_order_relaxed);
}

static void limits_read(struct risk *r, struct risk_limits *l)
{
    uint64_t buf[RISK_WORDS];
    for (;;) {
        unsigned a = atomic_load_explicit(&r->seq, memory_order_acquire);
        if (a & 1)
            continue; /* a writer is mid-update; it takes nanoseconds */
        for (size_t i = 0; i < RISK_WORDS; i++)
            buf[i] = atomic_load_explicit(&r->words[i], memory_order_acquire);
        if (atomic_load_explicit(&r->seq, memory_order_relaxed) == a)
            break;
    }
    memcpy(l, buf, sizeof *l);
}

/* ------------------------------------------------------------- tables */

static double bits_double(uint64_t bits)
{
    double v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

static uint64_t double_bits(double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return bits;
}

static size_t slot_of(uint64_t key)
{
    return (size_t)((key * 0x9E3779B97F4A7C15ull) >> (64 - RISK_BUCKET_BITS));
}

static struct risk_node *table_find(struct risk_table *t, uint64_t key)
{
    struct risk_node *n = atomic_load_explicit(&t->buckets[slot_of(key)], memory_order_acquire);
    while (n && n->key != key)
        n = atomic_load_explicit(&n->next, memory_order_acquire);
    return n;
}

/* The entry of `key`, added when missing with `position`; NULL when out of
 * memory. */
static struct risk_node *table_get_from(struct risk_table *t, uint64_t key, double position)
{
    _Atomic(struct risk_node *) *head = &t->buckets[slot_of(key)];
    struct risk_node *first = atomic_load_explicit(head, memory_order_acquire);
    struct risk_node *fresh = NULL;
    for (;;) {
        for (struct risk_node *n = first; n;
             n = atomic_load_explicit(&n->next, memory_order_acquire)) {
            if (n->key == key) {
                free(fresh);
                return n;
            }
        }
        if (!fresh) {
            fresh = calloc(1, sizeof *fresh);
            if (!fresh)
                return NULL;
            fresh->key = key;
            atomic_init(&fresh->open, 0);
            atomic_init(&fresh->position, double_bits(position));
            atomic_flag_clear(&fresh->busy);
        }
        atomic_store_explicit(&fresh->next, first, memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(head, &first, fresh, memory_order_release,
                                                  memory_order_acquire)) {
            atomic_fetch_add_explicit(&t->entries, 1, memory_order_relaxed);
            return fresh;
        }
    }
}

static struct risk_node *table_get(struct risk_table *t, uint64_t key)
{
    return table_get_from(t, key, 0);
}

static void table_free(struct risk_table *t)
{
    for (size_t i = 0; i < sizeof t->buckets / sizeof t->buckets[0]; i++) {
        struct risk_node *n = atomic_load(&t->buckets[i]);
        while (n) {
            struct risk_node *next = atomic_load_explicit(&n->next, memory_order_relaxed);
            free(n);
            n = next;
        }
    }
}

/* Moves the entries whose key shifted right by `shift` is `owner` from the
 * table onto *list. Caller holds r->lock, so it is the only writer of a
 * published entry's `next`: inserts only swing a bucket's head, which is
 * why unlinking the head takes a compare-and-swap and any other entry a
 * store into its predecessor. An unlinked entry keeps its `next`, so a
 * reader standing on it walks on to the rest of its chain. */
static void table_unlink(struct risk_table *t, uint64_t owner, unsigned shift,
                         struct risk_node **list)
{
    for (size_t i = 0; i < sizeof t->buckets / sizeof t->buckets[0]; i++) {
        _Atomic(struct risk_node *) *link = &t->buckets[i];
        struct risk_node *n = atomic_load_explicit(link, memory_order_acquire);
        while (n) {
            struct risk_node *next = atomic_load_explicit(&n->next, memory_order_relaxed);
            if (n->key >> shift != owner) {
                link = &n->next;
                n = next;
                continue;
            }
            if (link != &t->buckets[i]) {
                atomic_store_explicit(link, next, memory_order_release);
            } else if (!atomic_compare_exchange_strong_explicit(
                           link, &n, next, memory_order_release, memory_order_acquire)) {
                continue; /* entries were pushed ahead: n is the new head */
            }
            atomic_fetch_sub_explicit(&t->entries, 1, memory_order_relaxed);
            n->retired = *list;
            *list = n;
            n = next;
        }
    }
}

static uint64_t position_key(uint32_t instance_key, uint16_t provider, uint16_t symbol)
{
    return (uint64_t)instance_key << 32 | (uint64_t)provider << 16 | symbol;
}

/* ---------------------------------------------------- carried positions */

static void carried_free(struct carried *c)
{
    for (size_t i = 0; c && i < c->n; i++)
        free(c->entries[i].instance);
    if (c)
        free(c->entries);
    free(c);
}

static int carried_compare(const void *a, const void *b)
{
    const struct carried_position *x = a, *y = b;
    int c = strcmp(x->instance, y->instance);
    return c ? c : (x->symbol > y->symbol) - (x->symbol < y->symbol);
}

/* The set carried for `provider`, or NULL when it has none (yet). */
static const struct carried *carried_for(struct risk *r, uint16_t provider)
{
    const struct carried *c = atomic_load_explicit(&r->carried, memory_order_acquire);
    while (c && c->provider != provider)
        c = c->next;
    return c;
}

/* The position `instance` held in `symbol` on `provider` before this start
 * (0 when none): what a position entry starts from. */
static double carried_net(struct risk *r, uint16_t provider, const char *instance, uint16_t symbol)
{
    const struct carried *c = carried_for(r, provider);
    struct carried_position key = {.instance = (char *)instance, .symbol = symbol};
    const struct carried_position *hit =
        c && c->n ? bsearch(&key, c->entries, c->n, sizeof key, carried_compare) : NULL;
    return hit && !atomic_load_explicit(&hit->forgotten, memory_order_acquire) ? hit->net : 0;
}

static const char *carried_instance_at(const void *entries, size_t i)
{
    return ((const struct carried_position *)entries)[i].instance;
}

void risk_forget(struct risk *r, const char *instance_id)
{
    pthread_mutex_lock(&r->lock);
    for (struct carried *c = atomic_load_explicit(&r->carried, memory_order_relaxed); c;
         c = c->next) {
        bool found;
        size_t at = sorted_find(c->entries, c->n, carried_instance_at, instance_id, &found);
        while (found && at > 0 && strcmp(c->entries[at - 1].instance, instance_id) == 0)
            at--;
        for (; at < c->n && strcmp(c->entries[at].instance, instance_id) == 0; at++)
            atomic_store_explicit(&c->entries[at].forgotten, true, memory_order_release);
    }
    pthread_mutex_unlock(&r->lock);
}

/* The store's rows [[instance, symbol, net], ...] as a set; NULL when out
 * of memory. Symbols the gateway cannot intern are left out (no order can
 * name them either). */
static struct carried *carried_of(uint16_t provider, const json_t *rows)
{
    struct carried *c = calloc(1, sizeof *c);
    size_t n = json_array_size(rows);
    if (!c || (n && !(c->entries = calloc(n, sizeof *c->entries)))) {
        free(c);
        return NULL;
    }
    c->provider = provider;
    for (size_t i = 0; i < n; i++) {
        const json_t *row = json_array_get(rows, i);
        uint16_t symbol = intern_id(json_string_value(json_array_get(row, 1)));
        const char *instance = json_string_value(json_array_get(row, 0));
        if (!symbol || !instance)
            continue;
        struct carried_position *e = &c->entries[c->n];
        if (!(e->instance = strdup(instance))) {
            carried_free(c);
            return NULL;
        }
        e->symbol = symbol;
        e->net = json_number_value(json_array_get(row, 2));
        c->n++;
    }
    if (c->n)
        qsort(c->entries, c->n, sizeof *c->entries, carried_compare);
    return c;
}

int risk_positions_load(struct risk *r, struct store *store, uint16_t provider,
                        const char *provider_name, struct err *err)
{
    if (!store)
        return 0;
    pthread_mutex_lock(&r->lock);
    int rc = 0;
    json_t *rows = NULL;
    if (!carried_for(r, provider)) {
        struct carried *c = NULL;
        rc = store_positions_query(store, provider_name, &rows, err);
        if (rc == 0 && !(c = carried_of(provider, rows))) {
            err_set(err, ERR_INTERNAL, "cannot load the positions of %s: out of memory",
                    provider_name);
            rc = -1;
        }
        if (c) {
            c->next = atomic_load_explicit(&r->carried, memory_order_relaxed);
            atomic_store_explicit(&r->carried, c, memory_order_release);
        }
    }
    pthread_mutex_unlock(&r->lock);
    json_decref(rows);
    return rc;
}

/* ------------------------------------------------------------ parsing */

static int invalid(struct err *err, const char *field, const char *why)
{
    err_set(err, ERR_INVALID, "%s: %s", field, why);
    err_add_detail(err, "field", json_string(field));
    return -1;
}

/* The length of the unsigned decimal number ("12", "0.25") s starts with,
 * or 0 when it does not start with one (a dot needs digits both sides). */
static size_t number_length(const char *s)
{
    size_t i = 0, whole = 0, frac = 1;
    while (s[i] >= '0' && s[i] <= '9')
        i++, whole++;
    if (s[i] == '.') {
        i++;
        for (frac = 0; s[i] >= '0' && s[i] <= '9'; i++)
            frac++;
    }
    return whole && frac ? i : 0;
}

static int parse_decimal(const json_t *v, const char *field, double *out, struct err *err)
{
    static const char why[] = "expected a decimal string >= 0 such as \"5000\" or \"0.25\"";
    const char *s = json_string_value(v);
    size_t i = s ? number_length(s) : 0;
    if (!i || s[i])
        return invalid(err, field, why);
    if (i > RISK_TEXT_MAX) {
        char too_long[96];
        snprintf(too_long, sizeof too_long,
                 "the decimal is %zu characters long; at most %d are accepted", i, RISK_TEXT_MAX);
        return invalid(err, field, too_long);
    }
    *out = strtod(s, NULL);
    return isfinite(*out) ? 0 : invalid(err, field, why);
}

/* A duration string: a decimal number then ms, s, m or h. */
static int parse_duration(const json_t *v, const char *field, int64_t *out_ns, struct err *err)
{
    static const char why[] = "expected a duration such as \"30s\", \"500ms\" or \"2m\"";
    static const struct {
        const char *unit;
        double ns;
    } units[] = {{"ms", 1e6}, {"s", 1e9}, {"m", 60e9}, {"h", 3600e9}};
    const char *s = json_string_value(v);
    size_t i = s && strlen(s) <= RISK_TEXT_MAX ? number_length(s) : 0;
    if (!i)
        return invalid(err, field, why);
    for (size_t u = 0; u < sizeof units / sizeof units[0]; u++) {
        if (strcmp(s + i, units[u].unit) != 0)
            continue;
        double ns = strtod(s, NULL) * units[u].ns;
        if (!isfinite(ns) || ns > (double)RISK_COOLDOWN_MAX_NS)
            return invalid(err, field, "must be at most 7 days (\"168h\")");
        *out_ns = (int64_t)ns;
        return 0;
    }
    return invalid(err, field, why);
}

static int parse_count(const json_t *v, const char *field, uint32_t *out, struct err *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > RISK_INT_MAX)
        return invalid(err, field, "expected an integer from 0 to 1000000000");
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

static int parse_percent(const json_t *v, const char *field, double *out, struct err *err)
{
    double d = json_number_value(v);
    if (!json_is_number(v) || !isfinite(d) || d < 0)
        return invalid(err, field, "expected a number >= 0 (a percentage)");
    *out = d;
    return 0;
}

static int parse_bool(const json_t *v, const char *field, bool *out, struct err *err)
{
    if (!json_is_boolean(v))
        return invalid(err, field, "expected true or false");
    *out = json_is_true(v);
    return 0;
}

static int parse_currency(const json_t *v, struct risk_limits *l, struct err *err)
{
    static const char why[] = "expected an asset name such as \"USDT\", or \"\" for every symbol";
    const char *s = json_string_value(v);
    if (!s || strlen(s) >= sizeof l->currency)
        return invalid(err, "notionalCurrency", why);
    for (const char *c = s; *c; c++) {
        bool alnum =
            (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9');
        if (!alnum)
            return invalid(err, "notionalCurrency", why);
    }
    snprintf(l->currency, sizeof l->currency, "%s", s);
    return 0;
}

static int parse_types(const json_t *v, struct risk_limits *l, struct err *err)
{
    static const char field[] = "allowedOrderTypes";
    if (!json_is_array(v))
        return invalid(err, field, "expected an array of \"market\" and \"limit\"");
    size_t i;
    const json_t *item;
    json_array_foreach(v, i, item)
    {
        const char *name = json_string_value(item);
        if (name && strcmp(name, "market") == 0) {
            l->allow[ORDER_MARKET] = true;
        } else if (name && strcmp(name, "limit") == 0) {
            l->allow[ORDER_LIMIT] = true;
        } else {
            err_set(err, ERR_INVALID, "%s: unknown order type '%s' (known: market, limit)", field,
                    name ? name : "(not a string)");
            err_add_detail(err, "field", json_string(field));
            return -1;
        }
    }
    return 0;
}

/* Refuses keys outside known[0..n) and missing ones; prefix names nested
 * fields ("circuitBreaker."). */
static int check_keys(const json_t *obj, const char *const *known, size_t n, const char *prefix,
                      struct err *err)
{
    char field[96];
    const char *key;
    const json_t *v;
    json_object_foreach((json_t *)obj, key, v)
    {
        bool found = false;
        for (size_t i = 0; i < n && !found; i++)
            found = strcmp(known[i], key) == 0;
        if (!found) {
            snprintf(field, sizeof field, "%s%s", prefix, key);
            return invalid(err, field, "unknown key");
        }
    }
    for (size_t i = 0; i < n; i++) {
        if (!json_object_get(obj, known[i])) {
            snprintf(field, sizeof field, "%s%s", prefix, known[i]);
            return invalid(err, field, "is required (PUT takes a whole RiskConfig)");
        }
    }
    return 0;
}

static int parse_breaker(const json_t *v, struct risk_limits *l, struct err *err)
{
    static const char *const keys[] = {"enabled", "threshold", "cooldown"};
    if (!json_is_object(v))
        return invalid(err, "circuitBreaker", "expected {enabled, threshold, cooldown}");
    if (check_keys(v, keys, 3, "circuitBreaker.", err) != 0 ||
        parse_bool(json_object_get(v, "enabled"), "circuitBreaker.enabled", &l->breaker, err) !=
            0 ||
        parse_percent(json_object_get(v, "threshold"), "circuitBreaker.threshold", &l->breaker_pct,
                      err) != 0)
        return -1;
    return parse_duration(json_object_get(v, "cooldown"), "circuitBreaker.cooldown",
                          &l->cooldown_ns, err);
}

/* A whole RiskConfig into *l; ERR_INVALID naming the first bad field. */
static int parse_limits(const json_t *doc, struct risk_limits *l, struct err *err)
{
    static const char *const keys[] = {
        "maxPositionSize",   "maxNotionalValue",    "notionalCurrency", "orderThrottle",
        "orderBurst",        "maxConcurrentOrders", "priceBandPercent", "allowedOrderTypes",
        "killSwitchEnabled", "maxRiskBreaches",     "circuitBreaker"};
    memset(l, 0, sizeof *l);
    if (!json_is_object(doc))
        return invalid(err, "body", "expected a RiskConfig object");
#define GET(k) json_object_get(doc, k)
    if (check_keys(doc, keys, sizeof keys / sizeof keys[0], "", err) != 0 ||
        parse_decimal(GET("maxPositionSize"), "maxPositionSize", &l->max_position, err) != 0 ||
        parse_decimal(GET("maxNotionalValue"), "maxNotionalValue", &l->max_notional, err) != 0 ||
        parse_currency(GET("notionalCurrency"), l, err) != 0 ||
        parse_count(GET("orderThrottle"), "orderThrottle", &l->throttle, err) != 0 ||
        parse_count(GET("orderBurst"), "orderBurst", &l->burst, err) != 0 ||
        parse_count(GET("maxConcurrentOrders"), "maxConcurrentOrders", &l->max_open, err) != 0 ||
        parse_percent(GET("priceBandPercent"), "priceBandPercent", &l->band_pct, err) != 0 ||
        parse_types(GET("allowedOrderTypes"), l, err) != 0 ||
        parse_bool(GET("killSwitchEnabled"), "killSwitchEnabled", &l->kill, err) != 0 ||
        parse_count(GET("maxRiskBreaches"), "maxRiskBreaches", &l->max_breaches, err) != 0 ||
        parse_breaker(GET("circuitBreaker"), l, err) != 0)
        return -1;
#undef GET
    if (l->throttle > 0 && l->burst < 1)
        return invalid(err, "orderBurst", "must be at least 1 when orderThrottle is above 0");
    l->any = l->kill || !l->allow[ORDER_MARKET] || !l->allow[ORDER_LIMIT] || l->breaker ||
             l->band_pct > 0 || l->max_notional > 0 || l->max_position > 0 || l->max_open > 0 ||
             l->throttle > 0;
    return 0;
}

/* ---------------------------------------------------------- lifecycle */

struct risk *risk_new(void)
{
    struct risk *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    if (pthread_mutex_init(&r->lock, NULL) != 0) {
        free(r);
        return NULL;
    }
    struct risk_limits l;
    struct err e = ERR_INIT;
    r->doc = jsonutil_parse(default_doc, sizeof default_doc - 1, &e);
    if (!r->doc || parse_limits(r->doc, &l, &e) != 0) {
        err_clear(&e);
        risk_free(r);
        return NULL;
    }
    limits_write(r, &l);
    return r;
}

void risk_free(struct risk *r)
{
    if (!r)
        return;
    for (struct carried *c = atomic_load(&r->carried), *next; c; c = next) {
        next = c->next;
        carried_free(c);
    }
    table_free(&r->instances);
    table_free(&r->positions);
    table_free(&r->breakers);
    json_decref(r->doc);
    pthread_mutex_destroy(&r->lock);
    free(r);
}

/* Installs a validated document and its limits; the caller holds r->lock. */
static void breakers_reset(struct risk *r);

static void install_locked(struct risk *r, json_t *doc, const struct risk_limits *l)
{
    limits_write(r, l);
    if (!l->breaker)
        breakers_reset(r);
    json_decref(r->doc);
    r->doc = doc;
}

/* A stored document from before a key existed lacks it: the key's default
 * (its limit off) fills in, as it did for that gateway, and is said. */
static int fill_missing_keys(json_t *doc, const json_t *defaults, struct err *err)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)defaults, key, value)
    {
        if (json_object_get(doc, key))
            continue;
        if (json_object_set(doc, key, value) != 0) {
            err_set(err, ERR_INTERNAL, "out of memory");
            return -1;
        }
        log_warn("market",
                 "the stored risk limits have no %s (stored before it existed): %s "
                 "applies until they are set again",
                 key, json_is_boolean(value) ? "false" : "off");
    }
    return 0;
}

int risk_load(struct risk *r, struct store *store, struct err *err)
{
    json_t *doc = NULL;
    struct err e = ERR_INIT;
    /* 0: found, 1: absent (the defaults stay), -1: error */
    int rc = store ? store_setting_get(store, RISK_SETTING, &doc, &e) : 1;
    struct risk_limits l;
    if (rc < 0) {
        err_set(err, e.kind, "cannot read the stored risk limits: %s", e.message);
    } else if (rc == 0 && json_is_object(doc) && fill_missing_keys(doc, r->doc, err) != 0) {
        rc = -1;
    } else if (rc == 0 && parse_limits(doc, &l, &e) != 0) {
        /* Trading on without them would lift every limit and the kill
         * switch the operator set: the start stops instead. */
        err_set(err, ERR_INVALID,
                "the stored risk limits do not validate: %s; correct them in the state database "
                "(settings, key '%s'), or delete that row to start with none",
                e.message, RISK_SETTING);
        rc = -1;
    } else if (rc == 0) {
        pthread_mutex_lock(&r->lock);
        install_locked(r, doc, &l);
        pthread_mutex_unlock(&r->lock);
        doc = NULL;
        log_info("market", "risk limits loaded from the store");
    }
    json_decref(doc);
    err_clear(&e);
    return rc < 0 ? -1 : 0;
}

int risk_update(struct risk *r, const json_t *config, struct store *store, json_t **previous,
                struct err *err)
{
    if (previous)
        *previous = NULL;
    struct risk_limits l;
    if (parse_limits(config, &l, err) != 0)
        return -1;
    json_t *doc = json_deep_copy(config);
    if (!doc) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    /* persisted before it applies, under the writers' lock, so the stored
     * and the applied limits are the same whichever of two PUTs wins */
    pthread_mutex_lock(&r->lock);
    int rc = store ? store_setting_put(store, RISK_SETTING, doc, err) : 0;
    if (rc == 0 && previous)
        *previous = json_deep_copy(r->doc);
    if (rc == 0)
        install_locked(r, doc, &l);
    pthread_mutex_unlock(&r->lock);
    if (rc != 0)
        json_decref(doc);
    return rc;
}

json_t *risk_json(struct risk *r)
{
    pthread_mutex_lock(&r->lock);
    json_t *copy = json_deep_copy(r->doc);
    pthread_mutex_unlock(&r->lock);
    return copy;
}

/* ------------------------------------------------------------- checks */

__attribute__((format(printf, 3, 4))) static void say(char *error, size_t size, const char *fmt,
                                                      ...)
{
    if (!error || !size)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error, size, fmt, ap);
    va_end(ap);
}

static bool over(double value, double limit)
{
    return !(value <= limit * (1 + RISK_SLACK));
}

/* Whether the symbol is quoted in the notional currency ("" = every). */
static bool notional_applies(const struct risk_limits *l, uint16_t symbol, char *quote)
{
    char base[EVENT_ASSET_MAX];
    quote[0] = '\0';
    bool split = sim_split_symbol(intern_name(symbol), base, quote);
    if (!l->currency[0])
        return true;
    return split && strcasecmp(quote, l->currency) == 0;
}

/* Takes a token of the instance's bucket (refilled at `throttle` a second
 * up to `burst`); false when none is left. */
static bool take_token(struct risk_node *inst, const struct risk_limits *l, int64_t now)
{
    double burst = (double)l->burst;
    if (inst->refilled_ns == 0) {
        inst->tokens = burst;
    } else {
        double earned = (double)(now - inst->refilled_ns) / 1e9 * (double)l->throttle;
        inst->tokens = fmin(burst, inst->tokens + (earned > 0 ? earned : 0));
    }
    inst->refilled_ns = now;
    if (inst->tokens < 1)
        return false;
    inst->tokens -= 1;
    return true;
}

static void breaker_lock(struct risk_node *b)
{
    while (atomic_flag_test_and_set_explicit(&b->busy, memory_order_acquire))
        ;
}

static void breaker_unlock(struct risk_node *b)
{
    atomic_flag_clear_explicit(&b->busy, memory_order_release);
}

/* Calls `visit` on every breaker; it takes the breaker's spin lock
 * itself. The breakers' entries are never unlinked, so the walk needs no
 * other lock. */
static void breakers_each(struct risk *r, void (*visit)(struct risk_node *b, void *ctx), void *ctx)
{
    for (size_t i = 0; i < sizeof r->breakers.buckets / sizeof r->breakers.buckets[0]; i++) {
        struct risk_node *b = atomic_load_explicit(&r->breakers.buckets[i], memory_order_acquire);
        for (; b; b = atomic_load_explicit(&b->next, memory_order_acquire))
            visit(b, ctx);
    }
}

static void breaker_clear(struct risk_node *b, void *ctx)
{
    (void)ctx;
    breaker_lock(b);
    b->halted_ns = 0;
    b->window_ns = 0;
    breaker_unlock(b);
}

/* A breaker turned off forgets its windows and halts, so that turned on
 * again it starts afresh instead of ending a halt from before. */
static void breakers_reset(struct risk *r)
{
    breakers_each(r, breaker_clear, NULL);
}

struct halts_walk {
    int64_t now_ns;
    void (*fn)(void *ctx, const struct risk_halt *h);
    void *ctx;
};

/* `fn` is called after the spin lock is let go: it may allocate. */
static void breaker_report(struct risk_node *b, void *ctx)
{
    const struct halts_walk *w = ctx;
    breaker_lock(b);
    struct risk_halt h = {(uint16_t)(b->key >> 16), (uint16_t)(b->key & 0xffff),
                          b->halted_ns - w->now_ns, b->move};
    bool halted = b->halted_ns && w->now_ns < b->halted_ns;
    breaker_unlock(b);
    if (halted)
        w->fn(w->ctx, &h);
}

void risk_halts(struct risk *r, int64_t now_ns, void (*fn)(void *ctx, const struct risk_halt *h),
                void *ctx)
{
    struct halts_walk w = {now_ns, fn, ctx};
    if (atomic_load_explicit(&r->breaker, memory_order_relaxed))
        breakers_each(r, breaker_report, &w);
}

/* The symbol's circuit breaker, moved by every trade: the trade's price is
 * compared with the reference taken when the current window opened (a
 * window lasts the cooldown); a move beyond the threshold halts the symbol
 * for the cooldown, and the first trade after the halt opens a new window.
 * Orders only read whether the symbol is halted. */
enum risk_trade_effect risk_trade(struct risk *r, uint16_t provider, uint16_t symbol, double price,
                                  int64_t now_ns, char *reason, size_t size)
{
    if (!r || !atomic_load_explicit(&r->breaker, memory_order_relaxed) || !(price > 0))
        return RISK_TRADE_QUIET;
    struct risk_limits l;
    limits_read(r, &l);
    struct risk_node *b = table_get(&r->breakers, (uint64_t)provider << 16 | symbol);
    if (!l.breaker || !b)
        return RISK_TRADE_QUIET; /* out of memory: the breaker cannot watch this symbol */
    enum risk_trade_effect effect = RISK_TRADE_QUIET;
    breaker_lock(b);
    if (b->halted_ns && now_ns < b->halted_ns) {
        /* halted: the window opens after */
    } else if (b->halted_ns) {
        b->halted_ns = 0;
        b->window_ns = now_ns;
        b->reference = price;
        effect = RISK_TRADE_RESUMED;
        say(reason, size, "circuitBreaker: %s halt ended; orders are accepted again",
            intern_name(symbol));
    } else if (b->window_ns == 0 || now_ns - b->window_ns >= l.cooldown_ns) {
        b->window_ns = now_ns;
        b->reference = price;
    } else if ((b->move = fabs(price - b->reference) / b->reference * 100) > l.breaker_pct) {
        b->halted_ns = now_ns + l.cooldown_ns;
        b->window_ns = 0;
        effect = RISK_TRADE_HALTED;
        atomic_fetch_add_explicit(&r->halts, 1, memory_order_relaxed);
        say(reason, size,
            "circuitBreaker: %s moved %.4g%% (threshold %g%%); orders refused for %.3g s",
            intern_name(symbol), b->move, l.breaker_pct, (double)l.cooldown_ns / 1e9);
    }
    breaker_unlock(b);
    return effect;
}

static bool breaker_refuses(struct risk *r, const struct risk_limits *l,
                            const struct order_request *req, int64_t now, char *error, size_t size)
{
    struct risk_node *b = table_find(&r->breakers, (uint64_t)req->provider << 16 | req->symbol);
    if (!b)
        return false;
    breaker_lock(b);
    int64_t halted_ns = b->halted_ns;
    double move = b->move;
    breaker_unlock(b);
    if (!halted_ns || now >= halted_ns)
        return false;
    say(error, size,
        "risk: circuitBreaker: %s moved %.4g%% (threshold %g%%); halted for another %.3g s",
        intern_name(req->symbol), move, l->breaker_pct, (double)(halted_ns - now) / 1e9);
    return true;
}

static int check_price(const struct risk_limits *l, const struct order_request *req,
                       const struct market_quote *q, char *error, size_t size)
{
    if (l->band_pct <= 0 || req->type != ORDER_LIMIT)
        return -1;
    if (!q->valid || q->last <= 0) {
        say(error, size, "risk: priceBandPercent: %s has no last trade price yet",
            intern_name(req->symbol));
        return LIMIT_BAND;
    }
    double off = fabs(req->price - q->last) / q->last * 100;
    if (!over(off, l->band_pct))
        return -1;
    say(error, size,
        "risk: priceBandPercent %g%% exceeded: limit price %.10g is %.4g%% from the last trade "
        "%.10g",
        l->band_pct, req->price, off, q->last);
    return LIMIT_BAND;
}

static int check_notional(const struct risk_limits *l, const struct order_request *req,
                          const struct market_quote *q, char *error, size_t size)
{
    char quote[EVENT_ASSET_MAX];
    if (l->max_notional <= 0 || !notional_applies(l, req->symbol, quote))
        return -1;
    const char *unit = l->currency[0] ? l->currency : quote;
    double price = req->type == ORDER_LIMIT ? req->price : q->last;
    if (req->type == ORDER_MARKET && (!q->valid || q->last <= 0)) {
        say(error, size, "risk: maxNotionalValue: %s has no last trade price to value the order",
            intern_name(req->symbol));
        return LIMIT_NOTIONAL;
    }
    double notional = req->quantity * price;
    if (!over(notional, l->max_notional))
        return -1;
    say(error, size, "risk: maxNotionalValue %.10g %s exceeded (%.10g)", l->max_notional, unit,
        notional);
    return LIMIT_NOTIONAL;
}

static int check_position(struct risk *r, const struct risk_limits *l,
                          const struct order_request *req, char *error, size_t size)
{
    if (l->max_position <= 0)
        return -1;
    struct risk_node *n =
        table_find(&r->positions, position_key(req->instance_key, req->provider, req->symbol));
    double now = n ? bits_double(atomic_load_explicit(&n->position, memory_order_acquire))
                   : carried_net(r, req->provider, req->instance_id, req->symbol);
    double next = now + (req->side == SIDE_BUY ? req->quantity : -req->quantity);
    if (!over(fabs(next), l->max_position))
        return -1;
    say(error, size, "risk: maxPositionSize %.10g exceeded (%.10g %s after this order)",
        l->max_position, next, intern_name(req->symbol));
    return LIMIT_POSITION;
}

/* The first limit the order breaks (its message in `error`), or -1. */
static int check(struct risk *r, const struct risk_limits *l, struct risk_node *inst, struct sim *s,
                 const struct order_request *req, char *error, size_t size)
{
    if (l->kill) {
        say(error, size, "risk: killSwitchEnabled: every new order is refused");
        return LIMIT_KILL;
    }
    if (!l->allow[req->type]) {
        say(error, size, "risk: allowedOrderTypes: %s orders are not allowed",
            order_type_name(req->type));
        return LIMIT_TYPES;
    }
    struct market_quote q = {0};
    if (l->band_pct > 0 || l->max_notional > 0)
        sim_quote(s, req->symbol, &q);
    int64_t now = clock_mono_ns();
    if (l->breaker && breaker_refuses(r, l, req, now, error, size))
        return LIMIT_BREAKER;
    /* a size or price the engine will reject anyway is its to explain */
    bool valued = isfinite(req->quantity) && req->quantity > 0 &&
                  (req->type == ORDER_MARKET || (isfinite(req->price) && req->price > 0));
    int hit = -1;
    if (valued && (hit = check_price(l, req, &q, error, size)) >= 0)
        return hit;
    if (valued && (hit = check_notional(l, req, &q, error, size)) >= 0)
        return hit;
    if (valued && (hit = check_position(r, l, req, error, size)) >= 0)
        return hit;
    int64_t open = atomic_load_explicit(&inst->open, memory_order_relaxed);
    if (l->max_open > 0 && open >= (int64_t)l->max_open) {
        say(error, size, "risk: maxConcurrentOrders %u reached (%lld open)", l->max_open,
            (long long)open);
        return LIMIT_OPEN;
    }
    /* last: an order another limit refused takes no token */
    if (l->throttle > 0 && !take_token(inst, l, now)) {
        say(error, size, "risk: orderThrottle %u orders/s (burst %u) exceeded", l->throttle,
            l->burst);
        return LIMIT_THROTTLE;
    }
    return -1;
}

int risk_admit(struct risk *r, struct sim *s, const struct order_request *req, char *error,
               size_t size)
{
    struct risk_node *inst = table_get(&r->instances, req->instance_key);
    if (!inst) {
        say(error, size, "risk: out of memory");
        return MARKET_SUBMIT_REFUSED;
    }
    struct risk_limits l;
    limits_read(r, &l);
    int hit = l.any ? check(r, &l, inst, s, req, error, size) : -1;
    if (hit >= 0) {
        atomic_fetch_add_explicit(&r->rejections[hit], 1, memory_order_relaxed);
        bool stop = l.max_breaches > 0 && (uint64_t)req->risk_breaches + 1 >= l.max_breaches;
        return stop ? MARKET_SUBMIT_RISK_STOP : MARKET_SUBMIT_RISK;
    }
    atomic_fetch_add_explicit(&inst->open, 1, memory_order_relaxed);
    return 0;
}

bool risk_kill_switch(struct risk *r)
{
    struct risk_limits l;
    limits_read(r, &l);
    return l.kill;
}

void risk_unadmit(struct risk *r, uint32_t instance_key)
{
    risk_order_done(r, instance_key);
}

/* ------------------------------------------------------------- engine */

void risk_order_done(struct risk *r, uint32_t instance_key)
{
    struct risk_node *inst = r ? table_find(&r->instances, instance_key) : NULL;
    if (inst)
        atomic_fetch_sub_explicit(&inst->open, 1, memory_order_relaxed);
}

void risk_fill(struct risk *r, uint32_t instance_key, const char *instance_id, uint16_t provider,
               uint16_t symbol, double qty)
{
    if (!r)
        return;
    uint64_t key = position_key(instance_key, provider, symbol);
    struct risk_node *n = table_find(&r->positions, key);
    /* one writer per provider creates its entries: none races this seed */
    if (!n)
        n = table_get_from(&r->positions, key, carried_net(r, provider, instance_id, symbol));
    if (!n) {
        log_error("market",
                  "out of memory: a fill of instance key %u is missing from its "
                  "risk position",
                  (unsigned)instance_key);
        return;
    }
    /* one writer per provider (its engine's holder): no read-modify-write */
    double now = bits_double(atomic_load_explicit(&n->position, memory_order_relaxed));
    atomic_store_explicit(&n->position, double_bits(now + qty), memory_order_release);
}

/* ------------------------------------------------------------ retire */

struct risk_node *risk_retire(struct risk *r, uint32_t instance_key)
{
    struct risk_node *list = NULL;
    pthread_mutex_lock(&r->lock);
    table_unlink(&r->instances, instance_key, 0, &list);
    table_unlink(&r->positions, instance_key, 32, &list);
    pthread_mutex_unlock(&r->lock);
    return list;
}

void risk_release(struct risk_node *retired)
{
    while (retired) {
        struct risk_node *next = retired->retired;
        free(retired);
        retired = next;
    }
}

/* ------------------------------------------------------------ metrics */

static void count_halt(void *ctx, const struct risk_halt *h)
{
    (void)h;
    (*(size_t *)ctx)++;
}

/* A halt is the breaker's own act, not an order's refusal: an operator
 * alerts on these rather than on the refusals, which only come if a
 * strategy orders while halted. */
static void halts_metrics_write(struct risk *r, struct strbuf *out)
{
    static const char total[] = "stratd_risk_halts_total";
    metrics_write_header(out, total, "Halts the circuit breaker began, over every symbol.",
                         "counter");
    uint64_t began = atomic_load_explicit(&r->halts, memory_order_relaxed);
    metrics_write_sample(out, total, NULL, NULL, 0, (double)began);
    static const char now[] = "stratd_risk_halted_symbols";
    metrics_write_header(
        out, now, "Symbols the circuit breaker halts now (GET /risk/limits names them).", "gauge");
    size_t halted = 0;
    risk_halts(r, clock_mono_ns(), count_halt, &halted);
    metrics_write_sample(out, now, NULL, NULL, 0, (double)halted);
}

void risk_metrics_write(struct risk *r, struct strbuf *out)
{
    static const char name[] = "stratd_risk_rejections_total";
    static const char *const labels[] = {"limit"};
    metrics_write_header(out, name, "Orders refused by the gateway's risk limits, by limit.",
                         "counter");
    for (int i = 0; i < LIMIT_COUNT; i++) {
        const char *values[] = {limit_names[i]};
        uint64_t n = atomic_load_explicit(&r->rejections[i], memory_order_relaxed);
        metrics_write_sample(out, name, labels, values, 1, (double)n);
    }
    static const char entries[] = "stratd_risk_entries";
    static const char *const table_label[] = {"table"};
    metrics_write_header(out, entries,
                         "State the risk checks keep: per instance, per instance and symbol "
                         "position, per symbol breaker.",
                         "gauge");
    const struct {
        const char *name;
        struct risk_table *table;
    } tables[] = {
        {"instances", &r->instances}, {"positions", &r->positions}, {"breakers", &r->breakers}};
    for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
        const char *values[] = {tables[i].name};
        int64_t n = atomic_load_explicit(&tables[i].table->entries, memory_order_relaxed);
        metrics_write_sample(out, entries, table_label, values, 1, (double)n);
    }
    halts_metrics_write(r, out);
    static const char kill[] = "stratd_risk_kill_switch_enabled";
    metrics_write_header(out, kill, "1 while the kill switch refuses every new order, else 0.",
                         "gauge");
    struct risk_limits l;
    limits_read(r, &l);
    metrics_write_sample(out, kill, NULL, NULL, 0, l.kill ? 1 : 0);
}
