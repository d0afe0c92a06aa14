/*
 * Module metadata extraction: js_validate() on arbitrary source text, as an
 * upload runs it, then js_config_resolve() of the metadata it returns with
 * no instance config (what an instance without config gets).
 *
 * The time budget is shorter than the product's default so that endless
 * top levels cost 200 ms rather than a second; nothing else differs.
 *
 * Invariants: a module that does not validate fails with ERR_UNPROCESSABLE
 * (never ERR_INTERNAL: no allocation fails here) and details.diagnostics,
 * a non-empty array of {stage, message, line, column, hint} with a known
 * stage; one that validates yields the normalised metadata described in
 * js/validate.h, whose defaults all resolve.
 */
#include "fuzzutil.h"

#include "core/log.h"
#include "core/names.h"
#include "js/config.h"
#include "js/validate.h"

static const struct js_limits limits = {JS_VALIDATE_DEFAULT_MEMORY, 0, 200LL * 1000 * 1000};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LEVEL_ERROR);
    return 0;
}

static bool is_string_or_absent(const json_t *obj, const char *key, bool required)
{
    const json_t *v = json_object_get(obj, key);
    return v ? json_is_string(v) : !required;
}

static void check_diagnostics(const struct err *err)
{
    fuzz_check_err(err, "js_validate", FUZZ_KIND(ERR_UNPROCESSABLE));
    const json_t *diags = json_object_get(err->details, "diagnostics");
    fuzz_check(json_is_array(diags) && json_array_size(diags) > 0, "no diagnostics: %s",
               err->message);
    size_t i;
    const json_t *d;
    json_array_foreach(diags, i, d)
    {
        const char *stage = json_string_value(json_object_get(d, "stage"));
        fuzz_check(stage && (strcmp(stage, "compile") == 0 || strcmp(stage, "execute") == 0 ||
                             strcmp(stage, "metadata") == 0 || strcmp(stage, "create") == 0),
                   "diagnostic %zu: stage '%s'", i, stage ? stage : "(none)");
        fuzz_check(is_string_or_absent(d, "message", true) && is_string_or_absent(d, "hint", true),
                   "diagnostic %zu: message or hint missing", i);
        const json_t *line = json_object_get(d, "line"), *column = json_object_get(d, "column");
        fuzz_check(json_is_integer(line) && json_integer_value(line) >= 0 &&
                       json_is_integer(column) && json_integer_value(column) >= 0,
                   "diagnostic %zu: bad position", i);
    }
}

static void check_field(const json_t *field, size_t i)
{
    const char *name = json_string_value(json_object_get(field, "name"));
    const char *type = json_string_value(json_object_get(field, "type"));
    fuzz_check(name && *name && type, "config[%zu]: name or type missing", i);
    fuzz_check(is_string_or_absent(field, "description", true), "config[%zu]: description", i);
    fuzz_check(json_is_boolean(json_object_get(field, "required")), "config[%zu]: required", i);
    const json_t *options = json_object_get(field, "options");
    if (strcmp(type, "enum") == 0)
        fuzz_check(json_is_array(options) && json_array_size(options) > 0,
                   "config[%zu]: an enum without options", i);
    else
        fuzz_check(!options, "config[%zu]: options on a %s", i, type);
}

static void check_metadata(const json_t *md)
{
    fuzz_check(json_is_object(md), "metadata is not an object");
    const char *name = json_string_value(json_object_get(md, "name"));
    fuzz_check(name && names_valid_strategy(name), "metadata.name");
    fuzz_check(is_string_or_absent(md, "displayName", true), "metadata.displayName");
    fuzz_check(is_string_or_absent(md, "description", true), "metadata.description");
    const char *tag = json_string_value(json_object_get(md, "tag"));
    fuzz_check(!json_object_get(md, "tag") || (tag && names_valid_tag(tag)), "metadata.tag");
    const json_t *events = json_object_get(md, "events");
    fuzz_check(json_is_array(events) && json_array_size(events) > 0, "metadata.events");
    for (size_t i = 0; i < json_array_size(events); i++) {
        const char *ev = json_string_value(json_array_get(events, i));
        fuzz_check(ev && js_event_index(ev) >= 0, "metadata.events[%zu]", i);
        for (size_t j = 0; j < i; j++)
            fuzz_check(strcmp(json_string_value(json_array_get(events, j)), ev) != 0,
                       "metadata.events[%zu] repeats", i);
    }
    const json_t *config = json_object_get(md, "config");
    fuzz_check(json_is_array(config), "metadata.config");
    for (size_t i = 0; i < json_array_size(config); i++)
        check_field(json_array_get(config, i), i);

    struct err err = ERR_INIT;
    json_t *resolved = js_config_resolve(md, NULL, &err);
    if (!resolved) {
        /* Only a required field without a default may refuse an empty config. */
        fuzz_check_err(&err, "js_config_resolve", FUZZ_KIND(ERR_INVALID));
        const char *field = json_string_value(json_object_get(err.details, "field"));
        fuzz_check(field && strncmp(field, "config.", 7) == 0, "no field named: %s", err.message);
        bool explained = false;
        for (size_t i = 0; i < json_array_size(config); i++) {
            const json_t *f = json_array_get(config, i);
            explained |= strcmp(json_string_value(json_object_get(f, "name")), field + 7) == 0 &&
                         json_is_true(json_object_get(f, "required")) &&
                         !json_object_get(f, "default");
        }
        fuzz_check(explained, "the defaults do not resolve: %s", err.message);
        err_clear(&err);
    }
    json_decref(resolved);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err err = ERR_INIT;
    json_t *md = js_validate((const char *)data, size, "fuzz.js", &limits, &err);
    if (md)
        check_metadata(md);
    else
        check_diagnostics(&err);
    json_decref(md);
    err_clear(&err);
    return 0;
}
