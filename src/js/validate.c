/*
 * validate: compile, execute, metadata, create; the first failing stage
 * ends it and says where. The module runs exactly as it will in production
 * (js_compile, then js_module_load into a fresh sandbox), so a module that
 * validates also loads.
 */
#include "js/validate.h"

#include "core/names.h"
#include "js/internal.h"
#include "js/module.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

const char *const js_event_names[] = {
    "Trade",         "Ticker",       "BookSnapshot",
    "ExecReport",    "KlineSummary", "InstrumentUpdate",
    "BalanceUpdate", "RiskControl",  "Extension",
};
const size_t js_event_count = sizeof(js_event_names) / sizeof(js_event_names[0]);

int js_event_index(const char *name)
{
    for (size_t i = 0; name && i < js_event_count; i++) {
        if (strcmp(name, js_event_names[i]) == 0)
            return (int)i;
    }
    return -1;
}

#define DISPLAY_NAME_MAX 80
#define HINT_NAME                                                                                  \
    "set metadata.name to the strategy's name: 1 to 64 characters among a-z, 0-9, '_' and '-', "   \
    "starting with a letter or digit (e.g. 'momentum')"
#define HINT_DISPLAY_NAME "add metadata.displayName: a string of 1 to 80 characters"
#define HINT_TAG                                                                                   \
    "set metadata.tag to 1 to 128 characters among letters, digits, '.', '_' and '-', starting "   \
    "with a letter or digit (e.g. 'v1.2.0'), or remove it"
#define HINT_CONFIG_TYPE "set type to one of string, int, float, bool, duration, enum"
#define HINT_EXPORTS                                                                               \
    "export the strategy as module.exports = { metadata: { name, displayName, events }, "          \
    "create(env) { return handlers; } }"

/* ------------------------------------------------------- diagnostics */

/* The problems found in the metadata stage, all of them at once so that an
 * author fixes them in one round, up to METADATA_PROBLEMS_MAX: metadata
 * built by code can hold any number of bad values (an array of 700,000
 * numbers as events), and one diagnostic each made a 150-byte upload
 * answer 390 MB. The rest are only counted, and a last diagnostic says how
 * many there were. */
#define METADATA_PROBLEMS_MAX 20
struct problems {
    json_t *list;
    size_t omitted;     /* problems past the cap, counted but not listed */
    bool out_of_memory; /* a value could not be built: the result is incomplete */
};

static void put(struct problems *p, json_t *obj, const char *key, json_t *value)
{
    if (json_object_set_new(obj, key, value) < 0)
        p->out_of_memory = true;
}

static void push(struct problems *p, json_t *array, json_t *value)
{
    if (json_array_append_new(array, value) < 0)
        p->out_of_memory = true;
}

__attribute__((format(printf, 3, 4))) static void problem(struct problems *p, const char *hint,
                                                          const char *fmt, ...)
{
    char message[512];
    va_list ap;
    if (json_array_size(p->list) >= METADATA_PROBLEMS_MAX) {
        p->omitted++;
        return;
    }
    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    push(p, p->list, js__diagnostic("metadata", message, 0, 0, hint));
}

/* The last diagnostic of a list that was cut at the cap. */
static void note_omitted(struct problems *p)
{
    char message[128];
    if (p->omitted == 0)
        return;
    snprintf(message, sizeof(message), "and %zu more problem%s not listed", p->omitted,
             p->omitted == 1 ? "" : "s");
    push(p, p->list,
         js__diagnostic("metadata", message, 0, 0,
                        "fix the problems listed above and upload again to see the rest"));
}

static void fail_with(struct err *err, json_t *list, size_t omitted, const char *filename)
{
    const char *first = json_string_value(json_object_get(json_array_get(list, 0), "message"));
    /* the note on what was omitted is not a problem of its own */
    size_t more = json_array_size(list) - 1 - (omitted > 0) + omitted;
    if (more > 0)
        js__fail(err, list, "%s: %s (and %zu more problem%s)", filename, first ? first : "", more,
                 more == 1 ? "" : "s");
    else
        js__fail(err, list, "%s: %s", filename, first ? first : "");
}

static void fail_one(struct err *err, const char *filename, const char *stage, const char *hint,
                     const char *message)
{
    json_t *diag = js__diagnostic(stage, message, 0, 0, hint);
    js__fail(err, diag ? json_pack("[o]", diag) : NULL, "%s: %s", filename, message);
}

/* ---------------------------------------------------- metadata fields */

static size_t utf8_length(const char *text)
{
    size_t n = 0;
    for (; *text; text++)
        n += ((unsigned char)*text & 0xC0) != 0x80;
    return n;
}

/* 'text' for strings, the JSON type otherwise: for messages. */
static void describe_value(const json_t *value, char *out, size_t size)
{
    if (json_is_string(value))
        snprintf(out, size, "'%.80s'", json_string_value(value));
    else
        snprintf(out, size, "a value of type %s", js__json_type_name(value));
}

static void check_name(struct problems *p, const json_t *md, json_t *out)
{
    const json_t *v = json_object_get(md, "name");
    char got[128];
    if (!v || json_is_null(v)) {
        problem(p, HINT_NAME, "metadata.name is missing");
    } else if (!json_is_string(v) || !names_valid_strategy(json_string_value(v))) {
        describe_value(v, got, sizeof(got));
        problem(p, HINT_NAME, "metadata.name %s is not a valid strategy name", got);
    } else {
        put(p, out, "name", json_string(json_string_value(v)));
    }
}

static void check_display_name(struct problems *p, const json_t *md, json_t *out)
{
    const json_t *v = json_object_get(md, "displayName");
    if (!v || json_is_null(v)) {
        problem(p, HINT_DISPLAY_NAME, "metadata.displayName is missing");
        return;
    }
    if (!json_is_string(v)) {
        problem(p, HINT_DISPLAY_NAME, "metadata.displayName must be a string, got %s",
                js__json_type_name(v));
        return;
    }
    size_t n = utf8_length(json_string_value(v));
    if (n == 0 || n > DISPLAY_NAME_MAX)
        problem(p, HINT_DISPLAY_NAME,
                "metadata.displayName must be 1 to 80 characters long, got %zu", n);
    else
        put(p, out, "displayName", json_string(json_string_value(v)));
}

static void check_description(struct problems *p, const json_t *md, json_t *out)
{
    const json_t *v = json_object_get(md, "description");
    if (v && !json_is_null(v) && !json_is_string(v)) {
        problem(p, "make metadata.description a string, or remove it",
                "metadata.description must be a string, got %s", js__json_type_name(v));
        return;
    }
    put(p, out, "description", json_string(json_is_string(v) ? json_string_value(v) : ""));
}

static void check_tag(struct problems *p, const json_t *md, json_t *out)
{
    const json_t *v = json_object_get(md, "tag");
    char got[128];
    if (!v || json_is_null(v))
        return;
    if (!json_is_string(v) || !names_valid_tag(json_string_value(v))) {
        describe_value(v, got, sizeof(got));
        problem(p, HINT_TAG, "metadata.tag %s is not a valid tag", got);
        return;
    }
    put(p, out, "tag", json_string(json_string_value(v)));
}

static void events_hint(char *out, size_t size, const char *lead)
{
    size_t used = (size_t)snprintf(out, size, "%s", lead);
    for (size_t i = 0; i < js_event_count && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i ? ", " : "", js_event_names[i]);
}

/* Whether `name` is already in `list`, the events accepted so far: at most
 * one of each event name, so a duplicate is found in a few compares however
 * many elements (of any kind) came before it. */
static bool listed_before(const json_t *list, const char *name)
{
    size_t i;
    const json_t *earlier;
    json_array_foreach(list, i, earlier)
    {
        if (strcmp(json_string_value(earlier), name) == 0)
            return true;
    }
    return false;
}

static void check_event(struct problems *p, const json_t *events, size_t i, json_t *list)
{
    char hint[320], got[128];
    const json_t *v = json_array_get(events, i);
    if (!json_is_string(v) || js_event_index(json_string_value(v)) < 0) {
        describe_value(v, got, sizeof(got));
        events_hint(hint, sizeof(hint), "use the exact event names (case matters): ");
        problem(p, hint, "metadata.events[%zu] %s is not an event name", i, got);
    } else if (listed_before(list, json_string_value(v))) {
        problem(p, "list each event once", "metadata.events[%zu] '%s' is listed twice", i,
                json_string_value(v));
    } else {
        push(p, list, json_string(json_string_value(v)));
    }
}

static void check_events(struct problems *p, const json_t *md, json_t *out)
{
    const json_t *v = json_object_get(md, "events");
    char hint[320];
    events_hint(hint, sizeof(hint),
                "add metadata.events: a non-empty array of the events the strategy handles, "
                "e.g. ['Trade']; the events are ");
    if (!v || json_is_null(v)) {
        problem(p, hint, "metadata.events is missing");
        return;
    }
    if (!json_is_array(v) || json_array_size(v) == 0) {
        problem(p, hint, "metadata.events must be a non-empty array of event names, got %s",
                json_is_array(v) ? "an empty array" : js__json_type_name(v));
        return;
    }
    json_t *list = json_array();
    for (size_t i = 0; i < json_array_size(v); i++)
        check_event(p, v, i, list);
    put(p, out, "events", list);
}

/* ------------------------------------------------------ config fields */

/* "metadata.config[2] (size)" or "metadata.config[2]" when unnamed. */
static void field_label(size_t i, const char *name, char *out, size_t size)
{
    if (name)
        snprintf(out, size, "metadata.config[%zu] (%.64s)", i, name);
    else
        snprintf(out, size, "metadata.config[%zu]", i);
}

static bool check_options(struct problems *p, const char *label, const json_t *options)
{
    const char *hint = "give the enum its options: a non-empty array of strings, e.g. "
                       "['fast', 'slow']";
    if (!json_is_array(options) || json_array_size(options) == 0) {
        problem(p, hint, "%s is an enum without options", label);
        return false;
    }
    for (size_t i = 0; i < json_array_size(options); i++) {
        if (!json_is_string(json_array_get(options, i))) {
            problem(p, hint, "%s.options[%zu] must be a string, got %s", label, i,
                    js__json_type_name(json_array_get(options, i)));
            return false;
        }
    }
    return true;
}

static void check_default(struct problems *p, const char *label, const char *type,
                          const json_t *field, json_t *entry)
{
    const json_t *def = json_object_get(field, "default");
    if (!def || json_is_null(def))
        return;
    json_t *resolved = NULL;
    char expected[256], hint[320];
    int rc = js__config_coerce(type, json_object_get(field, "options"), def, &resolved, expected,
                               sizeof(expected));
    json_decref(resolved);
    if (rc == -1) {
        if (strcmp(type, expected) == 0)
            snprintf(hint, sizeof(hint), "make the default a value of type %s, or remove it", type);
        else
            snprintf(hint, sizeof(hint), "make the default %s%s, or remove it",
                     strcmp(type, "duration") == 0 ? "a " : "", expected);
        char got[128];
        if (json_is_string(def) && strcmp(type, "string") != 0)
            describe_value(def, got, sizeof(got));
        else if (json_is_number(def) && strcmp(type, "duration") == 0)
            snprintf(got, sizeof(got), "%.17g", json_number_value(def)); /* -5: an int, refused */
        else
            snprintf(got, sizeof(got), "%s", js__json_type_name(def));
        problem(p, hint, "%s.default: expected %s, got %s", label, expected, got);
        return;
    }
    put(p, entry, "default", json_deep_copy(def));
}

/* Name and type; NULL when either is unusable (the problem is recorded). */
static const char *check_field_head(struct problems *p, size_t i, const json_t *field,
                                    const json_t *names, char *label, size_t label_size)
{
    const json_t *name = json_object_get(field, "name");
    const char *text = json_string_value(name);
    field_label(i, text, label, label_size);
    if (!text || !*text) {
        problem(p, "give each config field a name: a non-empty string",
                "%s.name must be a non-empty string", label);
        return NULL;
    }
    if (json_object_get(names, text)) {
        problem(p, "give each config field a unique name",
                "%s.name '%.64s' is declared more than once", label, text);
        return NULL;
    }
    const json_t *type_value = json_object_get(field, "type");
    const char *type = json_string_value(type_value);
    if (!js__config_type_valid(type)) {
        char got[128] = "(missing)";
        if (type_value)
            describe_value(type_value, got, sizeof(got));
        problem(p, HINT_CONFIG_TYPE, "%s.type %s is not a config type", label, got);
        return NULL;
    }
    return type;
}

/* description and required: optional, typed. Sets the description on
 * the entry and returns whether the field is required. */
static bool check_field_flags(struct problems *p, const char *label, const json_t *field,
                              json_t *entry)
{
    const json_t *desc = json_object_get(field, "description");
    const json_t *req = json_object_get(field, "required");
    if (desc && !json_is_null(desc) && !json_is_string(desc))
        problem(p, "make the description a string, or remove it",
                "%s.description must be a string, got %s", label, js__json_type_name(desc));
    if (req && !json_is_null(req) && !json_is_boolean(req))
        problem(p, "set required to true or false, or remove it",
                "%s.required must be true or false, got %s", label, js__json_type_name(req));
    put(p, entry, "description", json_string(json_is_string(desc) ? json_string_value(desc) : ""));
    return json_is_true(req);
}

/* The listing's key order: name, type, description, default, required,
 * options (enum only). */
static json_t *check_field(struct problems *p, size_t i, const json_t *field, const json_t *names)
{
    char label[128];
    if (!json_is_object(field)) {
        problem(p, "describe each config field as an object such as {name: 'size', type: 'int'}",
                "metadata.config[%zu] must be an object, got %s", i, js__json_type_name(field));
        return NULL;
    }
    const char *type = check_field_head(p, i, field, names, label, sizeof(label));
    if (!type)
        return NULL;
    json_t *entry = json_pack("{s:s, s:s}", "name",
                              json_string_value(json_object_get(field, "name")), "type", type);
    if (!entry) {
        p->out_of_memory = true;
        return NULL;
    }
    bool required = check_field_flags(p, label, field, entry);
    const json_t *options = json_object_get(field, "options");
    bool is_enum = strcmp(type, "enum") == 0;
    bool options_ok = !is_enum || check_options(p, label, options);
    if (options_ok)
        check_default(p, label, type, field, entry);
    put(p, entry, "required", json_boolean(required));
    if (is_enum && options_ok)
        put(p, entry, "options", json_deep_copy(options));
    return entry;
}

static void check_config(struct problems *p, const json_t *md, json_t *out)
{
    const json_t *v = json_object_get(md, "config");
    json_t *fields = json_array();
    if (v && !json_is_null(v) && !json_is_array(v))
        problem(p, "make metadata.config an array of fields such as {name: 'size', type: 'int'}",
                "metadata.config must be an array, got %s", js__json_type_name(v));
    /* the names taken so far, as keys: a lookup per field, not a walk */
    json_t *names = json_object();
    if (!names)
        p->out_of_memory = true;
    for (size_t i = 0; json_is_array(v) && i < json_array_size(v); i++) {
        json_t *entry = check_field(p, i, json_array_get(v, i), names);
        if (!entry)
            continue;
        put(p, names, json_string_value(json_object_get(entry, "name")), json_true());
        push(p, fields, entry);
    }
    json_decref(names);
    put(p, out, "config", fields);
}

/* Field order is the listing's: name, displayName, description, tag,
 * events, config. */
static json_t *normalise_metadata(const json_t *md, struct problems *p)
{
    json_t *out = json_object();
    if (!out)
        return NULL;
    check_name(p, md, out);
    check_display_name(p, md, out);
    check_description(p, md, out);
    check_tag(p, md, out);
    check_events(p, md, out);
    check_config(p, md, out);
    return out;
}

/* ------------------------------------------------- reading the exports */

/* metadata as JSON text, through JSON.stringify in the sandbox (which
 * drops functions and undefined, as a listing would). */
static json_t *metadata_json(JSContext *ctx, JSValueConst md)
{
    JSValue text = JS_JSONStringify(ctx, md, JS_UNDEFINED, JS_UNDEFINED);
    json_t *out = NULL;
    if (JS_IsString(text)) {
        size_t len = 0;
        const char *s = JS_ToCStringLen(ctx, &len, text);
        if (s)
            out = json_loadb(s, len, 0, NULL);
        JS_FreeCString(ctx, s);
    }
    JS_FreeValue(ctx, text);
    return out;
}

/* The text of the pending JS exception, for a diagnostic. */
static void exception_message(struct js_sandbox *sb, const char *filename, char *out, size_t size)
{
    struct js_exception ex;
    js_sandbox_take_exception(sb, filename, &ex);
    snprintf(out, size, "%s: %s", js__text(ex.name), js__text(ex.message));
    js_exception_free(&ex);
}

static json_t *read_metadata(struct js_sandbox *sb, JSValueConst exports, const char *filename,
                             struct err *err)
{
    JSContext *ctx = sb->ctx;
    char message[JS_EXCEPTION_MESSAGE_MAX + 128], why[JS_EXCEPTION_MESSAGE_MAX + 64];
    if (!JS_IsObject(exports)) {
        fail_one(err, filename, "metadata", HINT_EXPORTS, "module.exports is not an object");
        return NULL;
    }
    JSValue md = JS_GetPropertyStr(ctx, exports, "metadata");
    json_t *json = NULL;
    if (JS_IsException(md)) {
        exception_message(sb, filename, why, sizeof(why));
        snprintf(message, sizeof(message), "reading module.exports.metadata threw %s", why);
        fail_one(err, filename, "metadata", HINT_EXPORTS, message);
    } else if (!JS_IsObject(md) || JS_IsArray(ctx, md) > 0 || JS_IsFunction(ctx, md)) {
        fail_one(err, filename, "metadata", HINT_EXPORTS,
                 JS_IsUndefined(md) || JS_IsNull(md) ? "module.exports.metadata is missing"
                                                     : "module.exports.metadata is not an object");
    } else if (!(json = metadata_json(ctx, md))) {
        if (JS_HasException(ctx))
            exception_message(sb, filename, why, sizeof(why));
        else
            snprintf(why, sizeof(why), "it does not convert to a JSON object");
        snprintf(message, sizeof(message), "module.exports.metadata is not plain data (%s)", why);
        fail_one(err, filename, "metadata",
                 "keep metadata to strings, numbers, booleans, arrays and objects", message);
    }
    JS_FreeValue(ctx, md);
    return json;
}

static int check_create(struct js_sandbox *sb, JSValueConst exports, const char *filename,
                        struct err *err)
{
    JSValue create = JS_GetPropertyStr(sb->ctx, exports, "create");
    int rc = 0;
    if (!JS_IsFunction(sb->ctx, create)) {
        char message[256];
        const char *what = JS_IsException(create) ? "cannot be read" : "is not a function";
        snprintf(message, sizeof(message), "module.exports.create %s", what);
        if (JS_IsException(create))
            JS_FreeValue(sb->ctx, JS_GetException(sb->ctx));
        fail_one(err, filename, "create",
                 "give module.exports a create(env) { return { onTrade(ctx, evt, payload) { ... } "
                 "}; }: the function the runtime calls to start each instance, returning its "
                 "handlers",
                 message);
        rc = -1;
    }
    JS_FreeValue(sb->ctx, create);
    return rc;
}

static json_t *check_exports(struct js_sandbox *sb, JSValueConst exports, const char *filename,
                             struct err *err)
{
    json_t *raw = read_metadata(sb, exports, filename, err);
    if (!raw)
        return NULL;
    struct problems p = {json_array(), 0, false};
    json_t *md = p.list ? normalise_metadata(raw, &p) : NULL;
    json_decref(raw);
    if (p.list)
        note_omitted(&p);
    if (!md || p.out_of_memory || json_array_size(p.list) > 0) {
        if (!md || !p.list || p.out_of_memory)
            err_set(err, ERR_INTERNAL, "%s: out of memory while validating", filename);
        else
            fail_with(err, json_incref(p.list), p.omitted, filename);
        json_decref(p.list);
        json_decref(md);
        return NULL;
    }
    json_decref(p.list);
    if (check_create(sb, exports, filename, err) < 0) {
        json_decref(md);
        return NULL;
    }
    return md;
}

/* ------------------------------------------------ pointing at a throw */

static bool ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '$';
}

static size_t skip_space_back(const char *line, size_t off)
{
    while (off > 0 && (line[off - 1] == ' ' || line[off - 1] == '\t'))
        off--;
    return off;
}

/* Whether `word` ends at `off` as a whole word; moves `off` to its start. */
static bool word_before(const char *line, size_t *off, const char *word)
{
    size_t n = strlen(word);
    if (*off < n || memcmp(line + *off - n, word, n) != 0)
        return false;
    if (*off > n && ident_char(line[*off - n - 1]))
        return false;
    *off -= n;
    return true;
}

/* QuickJS places an Error's frame at the call that built it: the '(' of
 * `throw new Error(...)`. When the text before that column on the same
 * line is exactly `throw [new] Name[.Name]`, the statement starts at
 * `throw`, which is where an author looks. */
static int throw_column(const char *line, size_t len, int column)
{
    size_t off = skip_space_back(line, js__column_offset(line, len, column));
    size_t name_end = off;
    while (off > 0 && (ident_char(line[off - 1]) || line[off - 1] == '.'))
        off--;
    if (off == name_end)
        return column;
    off = skip_space_back(line, off);
    size_t before_new = off;
    if (word_before(line, &off, "new"))
        off = skip_space_back(line, off);
    else
        off = before_new;
    if (!word_before(line, &off, "throw"))
        return column;
    return js__offset_column(line, off);
}

/* Other exceptions point at the failing operation (a property read of null
 * points at the property name). Authors look for the statement: it starts
 * after the last ';' before that column on the line, or else at the line's
 * first non-blank character. Braces are not boundaries: without a parser a
 * block cannot be told from an object literal. */
static int statement_column(const char *line, size_t len, int column)
{
    size_t off = js__column_offset(line, len, column);
    size_t start = off;
    while (start > 0 && line[start - 1] != ';')
        start--;
    while (start < off && (line[start] == ' ' || line[start] == '\t'))
        start++;
    return js__offset_column(line, start);
}

/* A thrown string or number carries no position in QuickJS. When exactly
 * one `throw` in the source throws that literal, that is the statement. */
static bool literal_follows(const char *p, const char *end, const char *value, bool is_string)
{
    size_t n = strlen(value);
    if (is_string) {
        char quote = p < end ? *p : '\0';
        if (quote != '\'' && quote != '"' && quote != '`')
            return false;
        p++;
        return (size_t)(end - p) > n && memcmp(p, value, n) == 0 && p[n] == quote;
    }
    return (size_t)(end - p) >= n && memcmp(p, value, n) == 0 &&
           ((size_t)(end - p) == n || !ident_char(p[n]));
}

static bool locate_literal_throw(const char *source, size_t len, const char *value, bool is_string,
                                 int *line, int *column)
{
    const char *end = source + len;
    int matches = 0, cur_line = 1;
    const char *line_start = source;
    for (const char *p = source; p + 5 <= end; p++) {
        if (*p == '\n') {
            cur_line++;
            line_start = p + 1;
            continue;
        }
        if (memcmp(p, "throw", 5) != 0 || (p > source && ident_char(p[-1])) ||
            (p + 5 < end && ident_char(p[5])))
            continue;
        const char *q = p + 5;
        while (q < end && (*q == ' ' || *q == '\t'))
            q++;
        if (!literal_follows(q, end, value, is_string))
            continue;
        if (++matches > 1)
            return false;
        *line = cur_line;
        *column = js__offset_column(line_start, (size_t)(p - line_start));
    }
    return matches == 1;
}

static void point_at_literal_throw(struct err *err, json_t *diag, const char *source, size_t len,
                                   const char *filename)
{
    static const char *const prefixes[] = {"the top level threw string: ",
                                           "the top level threw number: "};
    const char *message = json_string_value(json_object_get(diag, "message"));
    for (size_t i = 0; message && i < 2; i++) {
        size_t n = strlen(prefixes[i]);
        int line = 0, column = 0;
        if (strncmp(message, prefixes[i], n) != 0 ||
            !locate_literal_throw(source, len, message + n, i == 0, &line, &column))
            continue;
        json_object_set_new(diag, "line", json_integer(line));
        json_object_set_new(diag, "column", json_integer(column));
        err_set(err, ERR_UNPROCESSABLE, "%s:%d:%d: %s", filename, line, column, message);
        return;
    }
}

/* Moves an execute diagnostic from the failing operation (or the Error's
 * construction) to the statement that threw, and the message with it. */
static void point_at_throw(struct err *err, const char *source, size_t len, const char *filename)
{
    json_t *diag = json_array_get(json_object_get(err->details, "diagnostics"), 0);
    const char *stage = json_string_value(json_object_get(diag, "stage"));
    int line = (int)json_integer_value(json_object_get(diag, "line"));
    int column = (int)json_integer_value(json_object_get(diag, "column"));
    if (stage && strcmp(stage, "execute") == 0 && line == 0) {
        point_at_literal_throw(err, diag, source, len, filename);
        return;
    }
    size_t line_len = 0;
    const char *text = js__source_line(source, len, line, &line_len);
    if (!stage || strcmp(stage, "execute") != 0 || !text || column < 1)
        return;
    int moved = throw_column(text, line_len, column);
    const char *message = json_string_value(json_object_get(diag, "message"));
    bool exception = message && strncmp(message, "the top level threw ", 20) == 0;
    if (moved == column && exception)
        moved = statement_column(text, line_len, column);
    if (moved == column)
        return;
    json_object_set_new(diag, "column", json_integer(moved));
    err_set(err, ERR_UNPROCESSABLE, "%s:%d:%d: %s", filename, line, moved,
            json_string_value(json_object_get(diag, "message")));
}

/* "file: message (and N more problems)" becomes "file:line:column: ...". */
static void place_message(struct err *err, const char *filename, int line, int column)
{
    char rest[ERR_MESSAGE_MAX];
    size_t n = strlen(filename);
    if (strncmp(err->message, filename, n) != 0 || strncmp(err->message + n, ": ", 2) != 0)
        return;
    snprintf(rest, sizeof(rest), "%s", err->message + n + 2);
    err_set(err, ERR_UNPROCESSABLE, "%s:%d:%d: %s", filename, line, column, rest);
}

/* Metadata problems are found in the value, which keeps no positions:
 * each is placed at the field as the source spells it (locate.c), the
 * error's message at the first. A bounded number is placed, since each
 * looks through the source once. */
#define METADATA_POSITIONS_MAX 32
static void point_at_metadata(struct err *err, const char *source, size_t len, const char *filename)
{
    json_t *list = json_object_get(err->details, "diagnostics");
    for (size_t i = 0; i < json_array_size(list) && i < METADATA_POSITIONS_MAX; i++) {
        json_t *diag = json_array_get(list, i);
        const char *stage = json_string_value(json_object_get(diag, "stage"));
        const char *message = json_string_value(json_object_get(diag, "message"));
        int line = 0, column = 0;
        if (!stage || strcmp(stage, "metadata") != 0 || !message ||
            !js__locate_metadata(source, len, message, &line, &column))
            continue;
        json_object_set_new(diag, "line", json_integer(line));
        json_object_set_new(diag, "column", json_integer(column));
        if (i == 0)
            place_message(err, filename, line, column);
    }
}

/* ------------------------------------------------------------ validate */

static struct js_limits validation_limits(const struct js_limits *limits)
{
    struct js_limits out = limits ? *limits : (struct js_limits){0, 0, 0};
    if (out.memory_bytes == 0)
        out.memory_bytes = JS_VALIDATE_DEFAULT_MEMORY;
    if (out.budget_ns <= 0)
        out.budget_ns = JS_VALIDATE_DEFAULT_BUDGET_NS;
    return out;
}

/* ---------------------------------------------- timers and console */

/* The top level of an instance may set timers (held until create(env) has
 * run) and log; validating it without them refused every module whose top
 * level did either. A validation gets inert ones: timers that never fire
 * (a callback must still be a function, as at run time) and a console that
 * writes nothing. */
static JSValue inert_timer(JSContext *ctx, const char *name, int argc, JSValueConst *argv)
{
    static _Thread_local uint32_t next_id;
    if (argc < 1 || !JS_IsFunction(ctx, argv[0]))
        return JS_ThrowTypeError(ctx, "%s: the callback must be a function", name);
    next_id = next_id % INT32_MAX + 1;
    return JS_NewInt32(ctx, (int32_t)next_id);
}

static JSValue inert_set_timeout(JSContext *ctx, JSValueConst this_val, int argc,
                                 JSValueConst *argv)
{
    (void)this_val;
    return inert_timer(ctx, "setTimeout", argc, argv);
}

static JSValue inert_set_interval(JSContext *ctx, JSValueConst this_val, int argc,
                                  JSValueConst *argv)
{
    (void)this_val;
    return inert_timer(ctx, "setInterval", argc, argv);
}

static JSValue inert_call(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)ctx;
    (void)this_val;
    (void)argc;
    (void)argv;
    return JS_UNDEFINED;
}

static int define_function(JSContext *ctx, JSValueConst obj, const char *name, JSCFunction *fn,
                           int length)
{
    JSValue f = JS_NewCFunction(ctx, fn, name, length);
    if (JS_IsException(f))
        return -1;
    return JS_DefinePropertyValueStr(ctx, obj, name, f, JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
}

static int install_inert_host(JSContext *ctx, struct err *err)
{
    static const char *const timers[] = {"setTimeout", "setInterval"};
    static JSCFunction *const setters[] = {inert_set_timeout, inert_set_interval};
    static const char *const clears[] = {"clearTimeout", "clearInterval"};
    static const char *const levels[] = {"log", "info", "debug", "warn", "error"};
    JSValue global = JS_GetGlobalObject(ctx), console = JS_NewObject(ctx);
    int rc = JS_IsException(console) ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < 2; i++) {
        rc = define_function(ctx, global, timers[i], setters[i], 2) < 0 ||
                     define_function(ctx, global, clears[i], inert_call, 1) < 0
                 ? -1
                 : 0;
    }
    for (size_t i = 0; rc == 0 && i < sizeof(levels) / sizeof(levels[0]); i++)
        rc = define_function(ctx, console, levels[i], inert_call, 0) < 0 ? -1 : 0;
    if (rc == 0)
        rc = JS_DefinePropertyValueStr(ctx, global, "console", JS_DupValue(ctx, console),
                                       JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE) < 0
                 ? -1
                 : 0;
    JS_FreeValue(ctx, console);
    JS_FreeValue(ctx, global);
    if (rc != 0) {
        if (JS_HasException(ctx))
            JS_FreeValue(ctx, JS_GetException(ctx));
        err_set(err, ERR_INTERNAL, "out of memory while preparing the validation sandbox");
    }
    return rc;
}

static json_t *run_and_check(struct js_sandbox *sb, const struct js_bytecode *bc,
                             const char *source, size_t len, struct err *err)
{
    JSValue exports = JS_UNDEFINED;
    if (install_inert_host(sb->ctx, err) < 0)
        return NULL;
    if (js_module_load(sb, bc, &exports, err) < 0) {
        if (err && err->kind == ERR_UNPROCESSABLE)
            point_at_throw(err, source, len, bc->filename);
        return NULL;
    }
    /* Reading metadata may run getters: under the same budget as the top level. */
    js_sandbox_arm(sb, 0);
    json_t *md = check_exports(sb, exports, bc->filename, err);
    js_sandbox_disarm(sb);
    if (!md && err && err->kind == ERR_UNPROCESSABLE)
        point_at_metadata(err, source, len, bc->filename);
    JS_FreeValue(sb->ctx, exports);
    return md;
}

/* The kit's compiler sandbox, built now if it was not built ahead. */
static int compiler_sandbox(struct js__validation_kit *kit, struct err *err)
{
    if (!kit->has_compiler) {
        kit->compiled = JS_UNDEFINED;
        kit->has_compiler = js__compiler_init(&kit->compiler, err) == 0;
    }
    return kit->has_compiler ? 0 : -1;
}

/* The kit's module sandbox under `lim`: limits set on one built ahead,
 * or built now. */
static int module_sandbox(struct js__validation_kit *kit, const struct js_limits *lim,
                          struct err *err)
{
    if (kit->has_module)
        return js_sandbox_set_limits(&kit->module, lim, err);
    kit->has_module = js_sandbox_init(&kit->module, lim, err) == 0;
    return kit->has_module ? 0 : -1;
}

int js__validation_kit_build(struct js__validation_kit *kit, struct err *err)
{
    struct js_limits lim = validation_limits(NULL);
    if (compiler_sandbox(kit, err) == 0 && module_sandbox(kit, &lim, err) == 0)
        return 0;
    js__validation_kit_clear(kit);
    return -1;
}

void js__validation_kit_clear(struct js__validation_kit *kit)
{
    if (kit->has_compiler) {
        JS_FreeValue(kit->compiler.ctx, kit->compiled);
        js_sandbox_free(&kit->compiler);
    }
    if (kit->has_module)
        js_sandbox_free(&kit->module);
    struct js__validation_kit *next = kit->next;
    *kit = (struct js__validation_kit){.compiled = JS_UNDEFINED, .next = next};
}

json_t *js__validate_in(struct js__validation_kit *kit, const char *source, size_t len,
                        const char *filename, const struct js_limits *limits, struct err *err)
{
    struct js_limits lim = validation_limits(limits);
    struct js_bytecode *bc = NULL;
    js__skip_byte_order_mark(&source, &len);
    if (compiler_sandbox(kit, err) != 0 ||
        js__compile_source(&kit->compiler, source, len, filename, &kit->compiled, &bc, err) < 0)
        return NULL;
    json_t *md = NULL;
    if (module_sandbox(kit, &lim, err) == 0)
        md = run_and_check(&kit->module, bc, source, len, err);
    js_bytecode_release(bc);
    return md;
}

json_t *js_validate(const char *source, size_t len, const char *filename,
                    const struct js_limits *limits, struct err *err)
{
    struct js__validation_kit kit = {.compiled = JS_UNDEFINED};
    json_t *md = js__validate_in(&kit, source, len, filename, limits, err);
    js__validation_kit_clear(&kit);
    return md;
}
