/*
 * Typed instance config: js_config_resolve() on a fuzzed document
 * {"metadata": M, "config": C}. M is what a listing's metadata looks like,
 * but arbitrary here: the store's metadata cache is read back from disk, so
 * resolution must hold up to anything. Also js_config_parse_duration() on
 * every string of the document.
 *
 * Invariants: failures are ERR_INVALID; a result is an object in which each
 * declared field that has a value carries its type (durations as
 * non-negative milliseconds, enums among their options), each undeclared
 * key of C is an equal copy (shared with nothing), and nothing is shared
 * with the inputs.
 */
#include "fuzzutil.h"

#include "core/jsonutil.h"
#include "js/config.h"

#include <limits.h>

static const json_t *declared_field(const json_t *fields, const char *key)
{
    size_t i;
    const json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *name = json_string_value(json_object_get(f, "name"));
        if (name && strcmp(name, key) == 0)
            return f;
    }
    return NULL;
}

static bool in_options(const json_t *options, const char *text)
{
    size_t i;
    const json_t *o;
    json_array_foreach(options, i, o)
    {
        if (json_is_string(o) && strcmp(json_string_value(o), text) == 0)
            return true;
    }
    return false;
}

static bool has_type(const json_t *field, const json_t *value)
{
    const char *type = json_string_value(json_object_get(field, "type"));
    if (!type)
        return false;
    if (strcmp(type, "int") == 0)
        return json_is_integer(value);
    if (strcmp(type, "float") == 0)
        return json_is_real(value);
    if (strcmp(type, "bool") == 0)
        return json_is_boolean(value);
    if (strcmp(type, "string") == 0)
        return json_is_string(value);
    if (strcmp(type, "duration") == 0)
        return json_is_integer(value) && json_integer_value(value) >= 0;
    if (strcmp(type, "enum") == 0)
        return json_is_string(value) &&
               in_options(json_object_get(field, "options"), json_string_value(value));
    return false;
}

/* Metadata may declare a name twice: the value must fit one of them. */
static void check_typed(const char *key, const json_t *fields, const json_t *value)
{
    size_t i;
    const json_t *f;
    json_array_foreach(fields, i, f)
    {
        const char *name = json_string_value(json_object_get(f, "name"));
        if (name && strcmp(name, key) == 0 && has_type(f, value))
            return;
    }
    fuzz_fail("%s: a %d value fits no declaration", key, (int)json_typeof(value));
}

static bool shares(const json_t *a, const json_t *b)
{
    return a && a == b && (json_is_object(a) || json_is_array(a));
}

static void check_result(const json_t *metadata, const json_t *config, const json_t *result)
{
    fuzz_check(json_is_object(result), "the result is not an object");
    const json_t *fields = json_object_get(metadata, "config");
    if (!json_is_array(fields))
        fields = NULL;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)result, key, value)
    {
        const json_t *field = declared_field(fields, key);
        const json_t *given = json_is_object(config) ? json_object_get(config, key) : NULL;
        if (field) {
            check_typed(key, fields, value);
            fuzz_check(!shares(value, json_object_get(field, "default")), "%s: shares the default",
                       key);
        } else {
            fuzz_check(given && json_equal(given, value), "%s: undeclared key changed", key);
        }
        fuzz_check(!shares(value, given), "%s: shares the given value", key);
    }
    if (json_is_object(config)) {
        json_object_foreach((json_t *)config, key, value)
        {
            if (!declared_field(fields, key))
                fuzz_check(json_object_get(result, key), "undeclared key %s dropped", key);
        }
    }
}

/* Durations: whatever parses is non-negative, and plain digits read as
 * milliseconds. */
static void check_durations(const json_t *value, int depth)
{
    if (depth > 64)
        return;
    if (json_is_string(value)) {
        const char *text = json_string_value(value);
        long long ms = -1;
        if (js_config_parse_duration(text, &ms) == 0) {
            fuzz_check(ms >= 0, "duration '%s' is %lld", text, ms);
            if (strspn(text, "0123456789") == strlen(text))
                fuzz_check(ms == strtoll(text, NULL, 10), "'%s' read as %lld", text, ms);
        }
        return;
    }
    size_t i;
    const char *key;
    json_t *item;
    if (json_is_array(value))
        json_array_foreach(value, i, item) check_durations(item, depth + 1);
    if (json_is_object(value))
        json_object_foreach((json_t *)value, key, item) check_durations(item, depth + 1);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err err = ERR_INIT;
    json_t *doc = jsonutil_parse((const char *)data, size, &err);
    err_clear(&err);
    if (!doc)
        return 0;
    check_durations(doc, 0);
    const json_t *metadata = json_object_get(doc, "metadata");
    const json_t *config = json_object_get(doc, "config");
    json_t *result = js_config_resolve(metadata, config, &err);
    if (result) {
        fuzz_check(!config || json_is_object(config) || json_is_null(config),
                   "a config of type %d was accepted", json_typeof(config));
        check_result(metadata, config, result);
    } else {
        fuzz_check_err(&err, "js_config_resolve", FUZZ_KIND(ERR_INVALID));
    }
    json_decref(result);
    json_decref(doc);
    err_clear(&err);
    return 0;
}
