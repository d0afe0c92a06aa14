/*
 * --usage: which revisions could be retired. The input is the server's
 * GET /strategies/registry export (StrategyRegistryExport: "registry" and
 * "usage") or just {"usage": [ModuleRevisionUsage...]}; the revisions are
 * those of the registry as bootstrap leaves it (the tree on disk is the
 * truth about what exists, the export only says what runs). A revision with
 * no usage entry has never been seen running.
 */
#include "cmd/bootstrap.h"

#include "core/clock.h"
#include "core/fsutil.h"
#include "core/jsonutil.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#define USAGE_FILE_MAX ((size_t)256 << 20)

/* --------------------------------------------------------------- load */

static int compare_entries(const void *a, const void *b)
{
    const struct bootstrap_usage_entry *x = a, *y = b;
    int cmp = strcmp(x->strategy, y->strategy);
    return cmp ? cmp : strcmp(x->hex, y->hex);
}

static int bad_entry(const char *path, size_t index, const char *what, struct err *err)
{
    err_set(err, ERR_INVALID, "%s: usage[%zu]: %s", path, index, what);
    return -1;
}

static int read_entry(const char *path, size_t index, const json_t *item,
                      struct bootstrap_usage_entry *entry, struct err *err)
{
    const char *strategy = json_string_value(json_object_get(item, "strategy"));
    const char *hash = json_string_value(json_object_get(item, "hash"));
    const json_t *count = json_object_get(item, "count");
    const json_t *last = json_object_get(item, "lastSeen");
    if (!json_is_object(item))
        return bad_entry(path, index, "not an object", err);
    if (!strategy || !names_valid_strategy(strategy))
        return bad_entry(path, index, "\"strategy\" is not a strategy name", err);
    if (!hash || !hash_parse_full(hash, entry->hex))
        return bad_entry(path, index, "\"hash\" is not a sha256 hash", err);
    if (!json_is_integer(count) || json_integer_value(count) < 0)
        return bad_entry(path, index, "\"count\" is not a non-negative integer", err);
    int64_t when = 0;
    if (last && !json_is_null(last) &&
        (!json_is_string(last) || clock_parse_rfc3339(json_string_value(last), &when) != 0))
        return bad_entry(path, index, "\"lastSeen\" is neither a date-time nor null", err);
    entry->count = json_integer_value(count);
    entry->strategy = strdup(strategy);
    entry->last_seen = json_is_string(last) ? strdup(json_string_value(last)) : NULL;
    if (!entry->strategy || (json_is_string(last) && !entry->last_seen)) {
        err_set(err, ERR_INTERNAL, "out of memory reading %s", path);
        return -1;
    }
    return 0;
}

static int read_entries(const char *path, const json_t *list, struct bootstrap_usage *usage,
                        struct err *err)
{
    usage->entries = calloc(json_array_size(list) + 1, sizeof *usage->entries);
    if (!usage->entries) {
        err_set(err, ERR_INTERNAL, "out of memory reading %s", path);
        return -1;
    }
    for (size_t i = 0; i < json_array_size(list); i++) {
        if (read_entry(path, i, json_array_get(list, i), &usage->entries[usage->n], err) != 0) {
            free(usage->entries[usage->n].strategy);
            return -1;
        }
        usage->n++;
    }
    qsort(usage->entries, usage->n, sizeof *usage->entries, compare_entries);
    return 0;
}

static json_t *parse_file(const char *path, struct err *err)
{
    char *data = NULL;
    size_t len = 0;
    struct err e = ERR_INIT;
    if (fsutil_read_file(path, USAGE_FILE_MAX, &data, &len, &e) != 0) {
        err_set(err, e.kind == ERR_NOT_FOUND ? ERR_NOT_FOUND : ERR_INVALID, "cannot read %s: %s",
                path, e.message);
        err_clear(&e);
        return NULL;
    }
    json_t *doc = jsonutil_parse(data, len, &e);
    free(data);
    if (!doc) {
        err_set(err, ERR_INVALID, "%s: %s", path, e.message);
        err_clear(&e);
    }
    return doc;
}

int bootstrap_usage_load(const char *path, struct bootstrap_usage *usage, struct err *err)
{
    memset(usage, 0, sizeof *usage);
    json_t *doc = parse_file(path, err);
    if (!doc)
        return -1;
    const json_t *list = json_object_get(doc, "usage");
    int rc = -1;
    if (!json_is_object(doc) || !json_is_array(list))
        err_set(err, ERR_INVALID,
                "%s: expected the GET /strategies/registry export, or an object with a "
                "\"usage\" array",
                path);
    else
        rc = read_entries(path, list, usage, err);
    json_decref(doc);
    if (rc != 0)
        bootstrap_usage_free(usage);
    return rc;
}

void bootstrap_usage_free(struct bootstrap_usage *usage)
{
    for (size_t i = 0; i < usage->n; i++) {
        free(usage->entries[i].strategy);
        free(usage->entries[i].last_seen);
    }
    free(usage->entries);
    memset(usage, 0, sizeof *usage);
}

/* The first entry not ordered before (strategy, hex). */
static size_t lower_bound(const struct bootstrap_usage *usage, const char *strategy,
                          const char *hex)
{
    struct bootstrap_usage_entry key = {.strategy = (char *)strategy};
    snprintf(key.hex, sizeof key.hex, "%s", hex);
    size_t lo = 0, hi = usage->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (compare_entries(&usage->entries[mid], &key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* Several entries for one revision (an export merged by hand): any running
 * instance counts, and the latest sighting wins. */
static void lookup(const struct bootstrap_usage *usage, const char *strategy, const char *hex,
                   long long *count, const char **last_seen)
{
    *count = 0;
    *last_seen = NULL;
    int64_t best = INT64_MIN;
    for (size_t i = lower_bound(usage, strategy, hex); i < usage->n; i++) {
        const struct bootstrap_usage_entry *e = &usage->entries[i];
        if (strcmp(e->strategy, strategy) != 0 || strcmp(e->hex, hex) != 0)
            break;
        /* Counts come from the file: saturate rather than overflow. */
        *count = e->count > LLONG_MAX - *count ? LLONG_MAX : *count + e->count;
        int64_t ms = INT64_MIN + 1; /* unparsable: still better than never */
        if (e->last_seen && clock_parse_rfc3339(e->last_seen, &ms) != 0)
            ms = INT64_MIN + 1;
        if (e->last_seen && ms > best) {
            best = ms;
            *last_seen = e->last_seen;
        }
    }
}

/* ------------------------------------------------------------- report */

struct idle {
    const char *strategy;
    char hex[HASH_HEX_LEN + 1];
    json_t *tags; /* sorted array of strings */
    const char *last_seen;
    uint64_t size;
};

struct tally {
    struct idle *idle;
    size_t nidle, total, running, never;
};

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static json_t *tags_of(const json_t *tags, const char *spelled)
{
    const char **names = malloc((json_object_size(tags) + 1) * sizeof *names);
    if (!names)
        return NULL;
    size_t n = 0;
    const char *tag;
    json_t *target;
    json_object_foreach((json_t *)tags, tag, target)
    {
        if (strcmp(json_string_value(target), spelled) == 0)
            names[n++] = tag;
    }
    qsort(names, n, sizeof *names, compare_strings);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++)
        json_array_append_new(list, json_string(names[i]));
    free(names);
    return list;
}

static int tally_strategy(struct tally *t, const struct bootstrap_usage *usage,
                          const struct bootstrap_plan *plan, const char *name)
{
    const json_t *obj = json_object_get(plan->after, name);
    const char *key;
    json_t *entry;
    json_object_foreach(json_object_get(obj, "hashes"), key, entry)
    {
        struct idle item = {.strategy = name};
        if (!hash_parse_full(key, item.hex))
            continue;
        long long count;
        lookup(usage, name, item.hex, &count, &item.last_seen);
        t->total++;
        if (count > 0) {
            t->running++;
            continue;
        }
        const struct bootstrap_revision *rev = bootstrap_plan_find(plan, name, item.hex);
        item.size = rev ? rev->size : 0;
        item.tags = tags_of(json_object_get(obj, "tags"), key);
        if (!item.tags)
            return -1;
        t->never += item.last_seen == NULL;
        t->idle[t->nidle++] = item;
    }
    return 0;
}

static size_t count_revisions(const json_t *after)
{
    size_t n = 0;
    const char *name;
    json_t *obj;
    json_object_foreach((json_t *)after, name, obj)
    {
        n += json_object_size(json_object_get(obj, "hashes"));
    }
    return n;
}

static int tally(struct tally *t, const struct bootstrap_usage *usage,
                 const struct bootstrap_plan *plan)
{
    memset(t, 0, sizeof *t);
    size_t nnames = json_object_size(plan->after);
    const char **names = malloc((nnames + 1) * sizeof *names);
    t->idle = calloc(count_revisions(plan->after) + 1, sizeof *t->idle);
    if (!names || !t->idle) {
        free(names);
        return -1;
    }
    size_t n = 0;
    const char *name;
    json_t *obj;
    json_object_foreach(plan->after, name, obj)
    {
        names[n++] = name;
    }
    qsort(names, n, sizeof *names, compare_strings);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = tally_strategy(t, usage, plan, names[i]);
    free(names);
    return rc;
}

static void tally_free(struct tally *t)
{
    for (size_t i = 0; i < t->nidle; i++)
        json_decref(t->idle[i].tags);
    free(t->idle);
}

/* Whether the usage entry names no revision under the root. */
static bool is_unknown(const struct bootstrap_usage_entry *entry, const struct bootstrap_plan *plan)
{
    const json_t *obj = json_object_get(plan->after, entry->strategy);
    char spelled[HASH_SPELLED_LEN + 1];
    hash_spell(entry->hex, spelled);
    return json_object_get(json_object_get(obj, "hashes"), spelled) == NULL;
}

static size_t unknown_entries(const struct bootstrap_usage *usage,
                              const struct bootstrap_plan *plan)
{
    size_t n = 0;
    for (size_t i = 0; i < usage->n; i++)
        n += is_unknown(&usage->entries[i], plan);
    return n;
}

/* The selectors of those entries, for --json; NULL if out of memory. */
static json_t *unknown_json(const struct bootstrap_usage *usage, const struct bootstrap_plan *plan)
{
    json_t *list = json_array();
    for (size_t i = 0; list && i < usage->n; i++) {
        const struct bootstrap_usage_entry *e = &usage->entries[i];
        if (is_unknown(e, plan) &&
            json_array_append_new(list,
                                  json_sprintf("%s@" HASH_PREFIX "%s", e->strategy, e->hex)) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    return list;
}

static void print_unknown(FILE *out, const struct bootstrap_usage *usage,
                          const struct bootstrap_plan *plan, size_t unknown)
{
    fprintf(out,
            "%zu usage entr%s name%s no revision under the root (deleted since it ran, as the "
            "gateway keeps the usage of deleted revisions, or an export of another root):\n",
            unknown, unknown == 1 ? "y" : "ies", unknown == 1 ? "s" : "");
    for (size_t i = 0; i < usage->n; i++) {
        const struct bootstrap_usage_entry *e = &usage->entries[i];
        if (is_unknown(e, plan))
            fprintf(out, "  %s@" HASH_PREFIX "%s\n", e->strategy, e->hex);
    }
}

static void format_size(uint64_t size, char *out, size_t cap)
{
    if (size < 1024)
        snprintf(out, cap, "%llu B", (unsigned long long)size);
    else if (size < (1u << 20))
        snprintf(out, cap, "%.1f KiB", (double)size / 1024.0);
    else
        snprintf(out, cap, "%.1f MiB", (double)size / (1024.0 * 1024.0));
}

static void join_tags(const json_t *tags, char *out, size_t cap)
{
    size_t used = 0;
    out[0] = '\0';
    for (size_t i = 0; i < json_array_size(tags) && used + 1 < cap; i++) {
        int n = snprintf(out + used, cap - used, "%s%s", i ? "," : "",
                         json_string_value(json_array_get(tags, i)));
        used += n > 0 ? (size_t)n : 0;
    }
    if (!out[0])
        snprintf(out, cap, "-");
}

static void print_text(FILE *out, const struct tally *t, const struct bootstrap_usage *usage,
                       const struct bootstrap_plan *plan, size_t pending)
{
    size_t unknown = unknown_entries(usage, plan);
    if (t->nidle == 0) {
        fprintf(out, "every revision has running instances (%zu revisions)\n", t->total);
    } else {
        fprintf(out, "%-16s  %-12s  %-20s  %-24s  %s\n", "STRATEGY", "HASH", "TAGS", "LAST SEEN",
                "SIZE");
        for (size_t i = 0; i < t->nidle; i++) {
            const struct idle *item = &t->idle[i];
            char tags[1024], size[32];
            join_tags(item->tags, tags, sizeof tags);
            format_size(item->size, size, sizeof size);
            fprintf(out, "%-16s  %.12s  %-20s  %-24s  %s\n", item->strategy, item->hex, tags,
                    item->last_seen ? item->last_seen : "never", size);
            fprintf(out, "  %s@" HASH_PREFIX "%s\n", item->strategy, item->hex);
        }
        fprintf(out,
                "\n%zu of %zu revisions have no running instance (%zu never seen); %zu "
                "running\n",
                t->nidle, t->total, t->never, t->running);
    }
    if (unknown)
        print_unknown(out, usage, plan, unknown);
    if (pending)
        fprintf(out,
                "note: the tree needs %zu bootstrap step%s; the list shows it as it will be "
                "(pass -write to apply)\n",
                pending, pending == 1 ? "" : "s");
}

static json_t *idle_json(const struct idle *item)
{
    char rel[BOOTSTRAP_REL_MAX];
    bootstrap_canonical_rel(item->strategy, item->hex, rel);
    return json_pack("{s:s, s:o, s:s%, s:o, s:O, s:s?, s:b, s:I, s:s}", "strategy", item->strategy,
                     "hash", json_sprintf(HASH_PREFIX "%s", item->hex), "shortHash", item->hex,
                     (size_t)BOOTSTRAP_SHORT_HEX, "selector",
                     json_sprintf("%s@" HASH_PREFIX "%s", item->strategy, item->hex), "tags",
                     item->tags, "lastSeen", item->last_seen, "neverSeen", !item->last_seen, "size",
                     (json_int_t)item->size, "path", rel);
}

static int print_json(FILE *out, const struct tally *t, const struct bootstrap_usage *usage,
                      const struct bootstrap_plan *plan, const char *root, size_t pending)
{
    size_t unknown = unknown_entries(usage, plan);
    json_t *list = json_array();
    for (size_t i = 0; list && i < t->nidle; i++) {
        if (json_array_append_new(list, idle_json(&t->idle[i])) != 0) {
            json_decref(list); /* a shorter list would disagree with the counts */
            list = NULL;
        }
    }
    json_t *doc = json_object();
    if (!doc || bootstrap_json_set_path(doc, "root", root) != 0 ||
        json_object_update_new(
            doc, json_pack("{s:o, s:I, s:I, s:I, s:I, s:o, s:I}", "idle", list, "total",
                           (json_int_t)t->total, "running", (json_int_t)t->running, "neverSeen",
                           (json_int_t)t->never, "unknownUsageEntries", (json_int_t)unknown,
                           "unknownUsage", unknown_json(usage, plan), "pendingSteps",
                           (json_int_t)pending)) != 0) {
        json_decref(doc);
        doc = NULL;
    }
    char *text = doc ? jsonutil_dump_pretty(doc, NULL) : NULL;
    json_decref(doc);
    if (!text)
        return -1;
    fputs(text, out);
    free(text);
    return 0;
}

int bootstrap_usage_report(FILE *out, const struct bootstrap_usage *usage,
                           const struct bootstrap_plan *plan, const char *root, bool json,
                           size_t pending, struct err *err)
{
    struct tally t;
    int rc = tally(&t, usage, plan);
    if (rc == 0 && json)
        rc = print_json(out, &t, usage, plan, root, pending);
    else if (rc == 0)
        print_text(out, &t, usage, plan, pending);
    tally_free(&t);
    if (rc != 0)
        err_set(err, ERR_INTERNAL, "out of memory writing the usage report");
    return rc;
}
