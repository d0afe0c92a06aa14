/*
 * config: instance configuration typed by the strategy's metadata.
 */
#include "js/config.h"

#include "js/internal.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ duration */

static long long unit_ms(const char *unit, size_t len)
{
    if (len == 2 && memcmp(unit, "ms", 2) == 0)
        return 1;
    if (len == 1 && unit[0] == 's')
        return 1000;
    if (len == 1 && unit[0] == 'm')
        return 60LL * 1000;
    if (len == 1 && unit[0] == 'h')
        return 60LL * 60 * 1000;
    return 0;
}

/* Reads one "<digits><unit>" component; units must strictly decrease
 * ("1h30m", not "30m1h" or "1m1m"). Returns the position after it or NULL. */
static const char *parse_component(const char *p, long long *total, long long *last_unit)
{
    long long n = 0;
    const char *digits = p;
    while (*p >= '0' && *p <= '9') {
        if (n > (LLONG_MAX - 9) / 10)
            return NULL;
        n = n * 10 + (*p++ - '0');
    }
    const char *unit = p;
    while ((*p >= 'a' && *p <= 'z'))
        p++;
    long long ms = unit_ms(unit, (size_t)(p - unit));
    if (p == digits || unit == digits || ms == 0 || ms >= *last_unit)
        return NULL;
    if (n > (LLONG_MAX - *total) / ms)
        return NULL;
    *total += n * ms;
    *last_unit = ms;
    return p;
}

int js_config_parse_duration(const char *text, long long *ms)
{
    if (!text || !*text)
        return -1;
    const char *p = text;
    while (*p >= '0' && *p <= '9')
        p++;
    if (*p == '\0') { /* plain milliseconds */
        if (p - text > 18)
            return -1;
        *ms = strtoll(text, NULL, 10);
        return 0;
    }
    long long total = 0, last_unit = LLONG_MAX;
    for (p = text; *p;) {
        p = parse_component(p, &total, &last_unit);
        if (!p)
            return -1;
    }
    *ms = total;
    return 0;
}

/* ------------------------------------------------------------- typing */

const char *js__json_type_name(const json_t *value)
{
    if (!value)
        return "missing";
    switch (json_typeof(value)) {
    case JSON_STRING:
        return "string";
    case JSON_INTEGER:
        return "int";
    case JSON_REAL:
        return "float";
    case JSON_TRUE:
    case JSON_FALSE:
        return "bool";
    case JSON_NULL:
        return "null";
    case JSON_OBJECT:
        return "object";
    case JSON_ARRAY:
        return "array";
    }
    return "value";
}

static const char *const config_types[] = {"string", "int", "float", "bool", "duration", "enum"};

int js__config_type_valid(const char *type)
{
    for (size_t i = 0; type && i < sizeof(config_types) / sizeof(config_types[0]); i++) {
        if (strcmp(type, config_types[i]) == 0)
            return 1;
    }
    return 0;
}

/* 2^63 as a double: the first value that no long long holds. */
#define LLONG_LIMIT 9223372036854775808.0

static bool integral_real(const json_t *value, long long *out)
{
    double d = json_real_value(value);
    if (!isfinite(d) || floor(d) != d || d >= LLONG_LIMIT || d < -LLONG_LIMIT)
        return false;
    *out = (long long)d;
    return true;
}

/* Each coerce_* returns false when `value` does not have the type, else
 * true with *out set (NULL only if out of memory). */
static bool coerce_int(const json_t *value, json_t **out)
{
    long long n = 0;
    if (json_is_integer(value))
        n = json_integer_value(value);
    else if (!json_is_real(value) || !integral_real(value, &n))
        return false;
    *out = json_integer(n);
    return true;
}

/* Milliseconds from an integer, an integral real or a duration string. */
static bool duration_ms(const json_t *value, long long *ms)
{
    if (json_is_integer(value)) {
        *ms = json_integer_value(value);
        return true;
    }
    if (json_is_real(value))
        return integral_real(value, ms);
    return json_is_string(value) && js_config_parse_duration(json_string_value(value), ms) == 0;
}

static bool coerce_duration(const json_t *value, json_t **out)
{
    long long ms = -1;
    if (!duration_ms(value, &ms) || ms < 0)
        return false;
    *out = json_integer(ms);
    return true;
}

static bool enum_allows(const json_t *options, const char *text)
{
    size_t i;
    const json_t *option;
    json_array_foreach(options, i, option)
    {
        if (json_is_string(option) && strcmp(json_string_value(option), text) == 0)
            return true;
    }
    return false;
}

static void describe_enum(const json_t *options, char *out, size_t size)
{
    size_t used = (size_t)snprintf(out, size, "one of");
    size_t i;
    const json_t *option;
    json_array_foreach(options, i, option)
    {
        if (used >= size || !json_is_string(option))
            continue;
        used += (size_t)snprintf(out + used, size - used, "%s %s", i ? "," : "",
                                 json_string_value(option));
    }
}

static bool coerce(const char *type, const json_t *options, const json_t *value, json_t **out)
{
    if (strcmp(type, "int") == 0)
        return coerce_int(value, out);
    if (strcmp(type, "duration") == 0)
        return coerce_duration(value, out);
    if (strcmp(type, "float") == 0 && json_is_number(value))
        *out = json_real(json_number_value(value));
    else if (strcmp(type, "bool") == 0 && json_is_boolean(value))
        *out = json_boolean(json_is_true(value));
    else if (json_is_string(value) &&
             (strcmp(type, "string") == 0 ||
              (strcmp(type, "enum") == 0 && enum_allows(options, json_string_value(value)))))
        *out = json_deep_copy(value);
    else
        return false;
    return true;
}

static void describe_expected(const char *type, const json_t *options, char *out, size_t size)
{
    if (strcmp(type, "enum") == 0)
        describe_enum(options, out, size);
    else if (strcmp(type, "duration") == 0)
        snprintf(out, size,
                 "duration such as \"250ms\", \"5s\", \"1h30m\" or a whole number "
                 "of milliseconds not below 0");
    else if (js__config_type_valid(type))
        snprintf(out, size, "%s", type);
    else
        snprintf(out, size, "one of the config types");
}

int js__config_coerce(const char *type, const json_t *options, const json_t *value, json_t **out,
                      char *expected, size_t expected_size)
{
    *out = NULL;
    if (!js__config_type_valid(type) || !coerce(type, options, value, out)) {
        describe_expected(type ? type : "", options, expected, expected_size);
        return -1;
    }
    return *out ? 0 : -2;
}

/* -------------------------------------------------------- gateway keys */

/* The keys the gateway reads (config.h), in one table for the runtime,
 * which checks the values, and validation, which checks a module's
 * declarations. `types` are the config types whose resolved values a key
 * can take: a duration resolves to milliseconds, right for cpu_budget_ms
 * and wrong for memory_limit_mb. */
struct gateway_key {
    const char *name;
    const char *types[3];
    const char *types_text; /* as a hint lists them */
    const char *unit;       /* NULL for a bool; else a number of `unit` */
    double low, high;       /* a number's range: from low, or above it when low_open */
    bool low_open;
    bool whole; /* a count: an integer only */
};

static const struct gateway_key gateway_keys[] = {
    {"dry_run", {"bool"}, "bool", NULL, 0, 0, false, false},
    {"memory_limit_mb",
     {"int", "float"},
     "int or float",
     "MiB",
     1,
     JS_CONFIG_MEMORY_LIMIT_MB_MAX,
     false,
     false},
    {"cpu_budget_ms",
     {"int", "float", "duration"},
     "int, float or duration",
     "milliseconds",
     0,
     JS_CONFIG_CPU_BUDGET_MS_MAX,
     true,
     false},
    {"max_orders_per_second",
     {"int"},
     "int",
     "orders a second",
     1,
     JS_CONFIG_ORDERS_PER_SECOND_MAX,
     false,
     true},
};
#define GATEWAY_KEY_COUNT (sizeof(gateway_keys) / sizeof(gateway_keys[0]))

static const struct gateway_key *gateway_key(const char *name)
{
    for (size_t i = 0; name && i < GATEWAY_KEY_COUNT; i++) {
        if (strcmp(name, gateway_keys[i].name) == 0)
            return &gateway_keys[i];
    }
    return NULL;
}

const char *js_config_gateway_key(size_t i)
{
    return i < GATEWAY_KEY_COUNT ? gateway_keys[i].name : NULL;
}

static void gateway_expected(const struct gateway_key *k, char *out, size_t size)
{
    if (!k->unit)
        snprintf(out, size, "bool");
    else if (k->whole)
        snprintf(out, size, "a whole number of %s from %.0f to %.0f", k->unit, k->low, k->high);
    else if (k->low_open)
        snprintf(out, size, "a number of %s above %.0f and at most %.0f", k->unit, k->low, k->high);
    else
        snprintf(out, size, "a number of %s from %.0f to %.0f", k->unit, k->low, k->high);
}

bool js_config_gateway_accepts(const char *key, const json_t *value, char *expected,
                               size_t expected_size)
{
    const struct gateway_key *k = gateway_key(key);
    if (!k || !value || json_is_null(value))
        return true;
    double v = json_number_value(value);
    bool ok = !k->unit ? json_is_boolean(value)
                       : (k->whole ? json_is_integer(value) : json_is_number(value)) &&
                             (k->low_open ? v > k->low : v >= k->low) && v <= k->high;
    if (!ok)
        gateway_expected(k, expected, expected_size);
    return ok;
}

const char *js__config_gateway_types(const char *key, const char *type, char *reads_as,
                                     size_t reads_as_size)
{
    const struct gateway_key *k = gateway_key(key);
    if (!k)
        return NULL;
    for (size_t i = 0; i < sizeof(k->types) / sizeof(k->types[0]); i++) {
        if (k->types[i] && type && strcmp(type, k->types[i]) == 0)
            return NULL;
    }
    gateway_expected(k, reads_as, reads_as_size);
    return k->types_text;
}

/* ------------------------------------------------------------- resolve */

/* "got string" or, for enum and duration, the offending text itself. */
static void describe_got(const char *type, const json_t *value, char *out, size_t size)
{
    bool quote = json_is_string(value) && (!strcmp(type, "enum") || !strcmp(type, "duration"));
    if (quote)
        snprintf(out, size, "\"%.100s\"", json_string_value(value));
    else if (json_is_number(value) && !strcmp(type, "duration"))
        snprintf(out, size, "%.17g", json_number_value(value)); /* -5 is an int, yet refused */
    else
        snprintf(out, size, "%s", js__json_type_name(value));
}

static int field_error(struct err *err, const char *name)
{
    err_add_detail(err, "field", json_sprintf("config.%s", name));
    return -1;
}

static int resolve_field(const json_t *field, const json_t *given, json_t *result, struct err *err)
{
    const char *name = json_string_value(json_object_get(field, "name"));
    const char *type = json_string_value(json_object_get(field, "type"));
    if (!name || !type)
        return 0; /* not a field the metadata declares properly: nothing to check */
    bool from_default = !given || json_is_null(given);
    const json_t *value = from_default ? json_object_get(field, "default") : given;
    if (!value || json_is_null(value)) {
        if (!json_is_true(json_object_get(field, "required")))
            return 0;
        err_set(err, ERR_INVALID, "config.%s: required, and has neither a value nor a default",
                name);
        return field_error(err, name);
    }
    json_t *resolved = NULL;
    char expected[256], got[128];
    int rc = js__config_coerce(type, json_object_get(field, "options"), value, &resolved, expected,
                               sizeof(expected));
    if (rc == -1) {
        /* validation refuses such a default; a revision validated under
         * older rules may still carry one, and the instance's config alone
         * cannot be blamed */
        describe_got(type, value, got, sizeof(got));
        err_set(err, ERR_INVALID, "config.%s: expected %s, got %s%s", name, expected, got,
                from_default ? ", the module's own default (the instance's config does not set it)"
                             : "");
        return field_error(err, name);
    }
    if (rc < 0 || json_object_set_new(result, name, resolved) < 0) {
        err_set(err, ERR_INTERNAL, "config.%s: out of memory", name);
        return -1;
    }
    return 0;
}

static bool declares(const json_t *fields, const char *key)
{
    size_t i;
    const json_t *field;
    json_array_foreach(fields, i, field)
    {
        const char *name = json_string_value(json_object_get(field, "name"));
        if (name && strcmp(name, key) == 0)
            return true;
    }
    return false;
}

/* Declared fields come first, in metadata order; a declared field with no
 * value, no default and not required stays absent. */
static int resolve_declared(const json_t *fields, const json_t *instance, json_t *result,
                            struct err *err)
{
    size_t i;
    const json_t *field;
    json_array_foreach(fields, i, field)
    {
        const char *name = json_string_value(json_object_get(field, "name"));
        const json_t *given = name && instance ? json_object_get(instance, name) : NULL;
        if (resolve_field(field, given, result, err) < 0)
            return -1;
    }
    return 0;
}

/* Keys the metadata does not declare (gateway keys such as dry_run) pass
 * through as given; copies, so the result shares nothing with the input. */
static int copy_undeclared(const json_t *fields, const json_t *instance, json_t *result,
                           struct err *err)
{
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)instance, key, value)
    {
        if (declares(fields, key))
            continue;
        if (json_object_set_new(result, key, json_deep_copy(value)) < 0) {
            err_set(err, ERR_INTERNAL, "config: out of memory");
            return -1;
        }
    }
    return 0;
}

json_t *js_config_resolve(const json_t *metadata, const json_t *instance_config, struct err *err)
{
    if (instance_config && !json_is_object(instance_config) && !json_is_null(instance_config)) {
        err_set(err, ERR_INVALID, "config: expected object, got %s",
                js__json_type_name(instance_config));
        return NULL;
    }
    const json_t *instance = json_is_object(instance_config) ? instance_config : NULL;
    const json_t *fields = json_object_get(metadata, "config");
    if (!json_is_array(fields))
        fields = NULL;
    json_t *result = json_object();
    if (!result) {
        err_set(err, ERR_INTERNAL, "config: out of memory");
        return NULL;
    }
    if ((fields && resolve_declared(fields, instance, result, err) < 0) ||
        (instance && copy_undeclared(fields, instance, result, err) < 0)) {
        json_decref(result);
        return NULL;
    }
    return result;
}
