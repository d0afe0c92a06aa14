/*
 * metadata_check: the metadata stage of validation. module.exports.metadata,
 * read as JSON, is checked field by field and normalised into the listing's
 * shape. Every problem is reported at once, without a position: validate.c
 * places each at the field its message names (locate.c).
 *
 * Besides the shape of each field, it refuses what would upload and then
 * misbehave without a word: a config field key it does not know (a
 * `defualt` would leave the field without a default), a top-level key so
 * close to a metadata field that it is surely that field misspelt (other
 * top-level keys are the author's own and are dropped), an enum option
 * listed twice, options on a field that is no enum, and a declaration of a
 * key the gateway reads (dry_run, memory_limit_mb, cpu_budget_ms,
 * max_orders_per_second) whose
 * type or default the gateway would refuse at every instance's start.
 */
#include "js/config.h"
#include "js/internal.h"
#include "js/validate.h"

#include "core/names.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* The event names metadata.events may list, in the order of the runtime's
 * event kinds. */
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

static const char *const metadata_keys[] = {"name", "displayName", "description",
                                            "tag",  "events",      "config"};
#define METADATA_KEYS_TEXT "name, displayName, description, tag, events and config"
static const char *const field_keys[] = {"name",    "type",     "description",
                                         "default", "required", "options"};
#define FIELD_KEYS_TEXT "name, type, description, default, required and options"
#define KEY_COUNT(keys) (sizeof(keys) / sizeof((keys)[0]))

/* ------------------------------------------------------- diagnostics */

/* The problems found, all of them at once so that an author fixes them in
 * one round, up to METADATA_PROBLEMS_MAX: metadata built by code can hold
 * any number of bad values (an array of 700,000 numbers as events), and
 * one diagnostic each made a 150-byte upload answer 390 MB. The rest are
 * only counted, and a last diagnostic says how many there were. */
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

/* ---------------------------------------------------------- misspellings */

/* Known keys are short; a key longer than this plus two is never close. */
#define KNOWN_KEY_MAX 16

static size_t min3(size_t a, size_t b, size_t c)
{
    size_t m = a < b ? a : b;
    return m < c ? m : c;
}

/* The edits (a character inserted, deleted or replaced, or two neighbours
 * swapped) that turn `key` into the known key `known`, or 3 when that is
 * more than two. Case counts: `Name` is one edit from `name`. */
static size_t edits_between(const char *key, const char *known)
{
    size_t n = strnlen(key, KNOWN_KEY_MAX + 3), m = strlen(known);
    if (m > KNOWN_KEY_MAX || n > m + 2 || m > n + 2)
        return 3;
    size_t d[KNOWN_KEY_MAX + 3][KNOWN_KEY_MAX + 1];
    for (size_t i = 0; i <= n; i++)
        d[i][0] = i;
    for (size_t j = 0; j <= m; j++)
        d[0][j] = j;
    for (size_t i = 1; i <= n; i++) {
        for (size_t j = 1; j <= m; j++) {
            size_t cost = key[i - 1] != known[j - 1];
            d[i][j] = min3(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
            if (i > 1 && j > 1 && key[i - 1] == known[j - 2] && key[i - 2] == known[j - 1] &&
                d[i - 2][j - 2] + 1 < d[i][j])
                d[i][j] = d[i - 2][j - 2] + 1;
        }
    }
    return d[n][m] < 3 ? d[n][m] : 3;
}

/* The known key that `key` is most likely a misspelling of: at most two
 * edits away, or one for a known key of four letters or fewer (`note` is
 * not taken for `name`, nor `age` for `tag`); NULL when none is. */
static const char *misspelt(const char *key, const char *const *known, size_t count)
{
    const char *best = NULL;
    size_t best_edits = 3;
    for (size_t i = 0; i < count; i++) {
        size_t edits = edits_between(key, known[i]);
        size_t allowed = strlen(known[i]) <= 4 ? 1 : 2;
        if (edits <= allowed && edits < best_edits) {
            best = known[i];
            best_edits = edits;
        }
    }
    return best;
}

static bool is_known(const char *key, const char *const *known, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        if (strcmp(key, known[i]) == 0)
            return true;
    }
    return false;
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

/* Keys beside the metadata fields are the author's own and are dropped
 * (the listing shows the fields only), so a module may carry data of its
 * own there. One within a typo of a field is that field misspelt, which
 * would otherwise be dropped in silence: `evnets` leaves metadata.events
 * missing, but `tga` would leave the revision untagged. */
static void check_top_level_keys(struct problems *p, const json_t *md)
{
    const char *key;
    const json_t *value;
    char hint[320];
    json_object_foreach((json_t *)md, key, value)
    {
        if (is_known(key, metadata_keys, KEY_COUNT(metadata_keys)))
            continue;
        const char *meant = misspelt(key, metadata_keys, KEY_COUNT(metadata_keys));
        if (!meant)
            continue;
        snprintf(hint, sizeof(hint),
                 "did you mean '%s'? Correct it: a key of the strategy's own may sit beside the "
                 "metadata fields (" METADATA_KEYS_TEXT "), but not one typo away from one",
                 meant);
        problem(p, hint, "metadata.%.64s is not a metadata field", key);
    }
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

/* Every key of a config field is one the gateway reads: any other is a
 * misspelling (`defualt`) or a setting it does not have (`min`), and
 * either would change nothing without a word. */
static void check_field_keys(struct problems *p, const char *label, const json_t *field)
{
    const char *key;
    const json_t *value;
    char hint[256];
    json_object_foreach((json_t *)field, key, value)
    {
        if (is_known(key, field_keys, KEY_COUNT(field_keys)))
            continue;
        const char *meant = misspelt(key, field_keys, KEY_COUNT(field_keys));
        if (meant)
            snprintf(hint, sizeof(hint), "did you mean '%s'? A config field takes " FIELD_KEYS_TEXT,
                     meant);
        else
            snprintf(hint, sizeof(hint), "remove it: a config field takes " FIELD_KEYS_TEXT);
        problem(p, hint, "%s.%.64s is not a config field key", label, key);
    }
}

/* Options are strings, each listed once: a repeated option is a slip (a
 * value meant to be another), and would list twice in the listing. */
static bool check_options(struct problems *p, const char *label, const json_t *options)
{
    const char *hint = "give the enum its options: a non-empty array of strings, e.g. "
                       "['fast', 'slow']";
    if (!json_is_array(options) || json_array_size(options) == 0) {
        problem(p, hint, "%s is an enum without options", label);
        return false;
    }
    /* the options seen so far, as keys: a lookup per option, not a walk */
    json_t *seen = json_object();
    bool ok = seen != NULL;
    if (!seen)
        p->out_of_memory = true;
    for (size_t i = 0; ok && i < json_array_size(options); i++) {
        const json_t *option = json_array_get(options, i);
        const char *text = json_string_value(option);
        if (!text) {
            problem(p, hint, "%s.options[%zu] must be a string, got %s", label, i,
                    js__json_type_name(option));
            ok = false;
        } else if (json_object_get(seen, text)) {
            problem(p, "list each option once", "%s.options[%zu] '%.80s' is listed twice", label, i,
                    text);
            ok = false;
        } else {
            put(p, seen, text, json_true());
        }
    }
    json_decref(seen);
    return ok;
}

/* A default the field's type takes may still be one the gateway refuses
 * for its own key (a memory_limit_mb of 0): every instance's start would
 * fail on it. */
static void check_gateway_default(struct problems *p, const char *label, const char *name,
                                  const json_t *def, const json_t *resolved)
{
    char expected[128], hint[256], got[128];
    if (js_config_gateway_accepts(name, resolved, expected, sizeof(expected)))
        return;
    if (json_is_number(def))
        snprintf(got, sizeof(got), "%.17g", json_number_value(def));
    else
        describe_value(def, got, sizeof(got));
    snprintf(hint, sizeof(hint),
             "make the default %s, or remove it: the gateway reads %s whether the metadata "
             "declares it or not",
             expected, name);
    problem(p, hint, "%s.default: expected %s, got %s", label, expected, got);
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
    if (rc == 0)
        check_gateway_default(p, label, json_string_value(json_object_get(field, "name")), def,
                              resolved);
    json_decref(resolved);
    if (rc == -2)
        p->out_of_memory = true;
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

/* A field named after a key the gateway reads feeds the gateway: a type
 * whose values it refuses (a dry_run declared as a string) makes a module
 * no instance of which can be created. */
static bool check_gateway_type(struct problems *p, const char *label, const char *name,
                               const char *type)
{
    char reads_as[128], hint[256];
    const char *types = js__config_gateway_types(name, type, reads_as, sizeof(reads_as));
    if (!types)
        return true;
    snprintf(hint, sizeof(hint),
             "declare %s with type %s, or give the field another name: the gateway reads %s "
             "whether the metadata declares it or not",
             name, types, name);
    problem(p, hint, "%s.type '%s': the gateway reads %s as %s", label, type, name, reads_as);
    return false;
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
    return check_gateway_type(p, label, text, type) ? type : NULL;
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

/* Options belong to an enum; on another field they would be listed and
 * never enforced. False when they are wrong (the problem is recorded). */
static bool check_field_options(struct problems *p, const char *label, const char *type,
                                const json_t *options)
{
    if (strcmp(type, "enum") == 0)
        return check_options(p, label, options);
    if (options && !json_is_null(options)) {
        problem(p, "make the field's type 'enum', or remove its options",
                "%s.options: only an enum takes options, and this field is of type %s", label,
                type);
        return false;
    }
    return true;
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
    check_field_keys(p, label, field);
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
    bool options_ok = check_field_options(p, label, type, options);
    if (options_ok)
        check_default(p, label, type, field, entry);
    put(p, entry, "required", json_boolean(required));
    if (strcmp(type, "enum") == 0 && options_ok)
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
    check_top_level_keys(p, md);
    return out;
}

json_t *js__check_metadata(const json_t *raw, json_t **problems, size_t *omitted)
{
    struct problems p = {json_array(), 0, false};
    json_t *md = p.list ? normalise_metadata(raw, &p) : NULL;
    *problems = NULL;
    *omitted = 0;
    if (p.list)
        note_omitted(&p);
    if (md && p.list && !p.out_of_memory && json_array_size(p.list) == 0) {
        json_decref(p.list);
        return md;
    }
    json_decref(md);
    if (p.list && !p.out_of_memory) {
        *problems = p.list;
        *omitted = p.omitted;
    } else {
        json_decref(p.list);
    }
    return NULL;
}
