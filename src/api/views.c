#include "api/views.h"

#include "core/hash.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *views_hash(const char *hex)
{
    char spelled[HASH_SPELLED_LEN + 1];
    hash_spell(hex, spelled);
    return json_string(spelled);
}

json_t *views_strategy_metadata(const struct registry_strategy *st,
                                const struct registry_revision *rev)
{
    if (rev && rev->metadata)
        return json_deep_copy(rev->metadata);
    return json_pack("{s:s, s:s, s:s, s:[], s:[]}", "name", st->name, "displayName", st->name,
                     "description", "", "config", "events");
}

/* ------------------------------------------------------------ usage index */

struct views_usage {
    json_t *docs;         /* runtime_usage_all_json() */
    const json_t **items; /* its documents sorted by (strategy, hash) */
    size_t n;
};

static const char *doc_field(const json_t *doc, const char *key)
{
    const char *s = json_string_value(json_object_get(doc, key));
    return s ? s : "";
}

static int cmp_docs(const void *a, const void *b)
{
    const json_t *x = *(const json_t *const *)a, *y = *(const json_t *const *)b;
    int c = strcmp(doc_field(x, "strategy"), doc_field(y, "strategy"));
    return c ? c : strcmp(doc_field(x, "hash"), doc_field(y, "hash"));
}

struct views_usage *views_usage_new(struct runtime *rt)
{
    struct views_usage *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->docs = rt ? runtime_usage_all_json(rt) : json_array();
    size_t n = json_array_size(u->docs);
    u->items = calloc(n ? n : 1, sizeof *u->items);
    if (!u->docs || !u->items) {
        views_usage_free(u);
        return NULL;
    }
    for (size_t i = 0; i < n; i++)
        u->items[i] = json_array_get(u->docs, i);
    u->n = n;
    qsort(u->items, n, sizeof *u->items, cmp_docs); /* usually sorted already */
    return u;
}

void views_usage_free(struct views_usage *u)
{
    if (!u)
        return;
    json_decref(u->docs);
    free(u->items);
    free(u);
}

const json_t *views_usage_doc(const struct views_usage *u, const char *strategy, const char *hex)
{
    if (!u)
        return NULL;
    char hash[HASH_SPELLED_LEN + 1];
    hash_spell(hex, hash);
    size_t lo = 0, hi = u->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(doc_field(u->items[mid], "strategy"), strategy);
        if (c == 0)
            c = strcmp(doc_field(u->items[mid], "hash"), hash);
        if (c == 0)
            return u->items[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

int views_usage_running(const struct views_usage *u, const char *strategy, const char *hex)
{
    const json_t *doc = views_usage_doc(u, strategy, hex);
    return doc ? (int)json_integer_value(json_object_get(doc, "count")) : 0;
}

/* ------------------------------------------------------------ modules */

static bool revision_passes(const struct registry_strategy *st, const struct registry_revision *rev,
                            const struct views_usage *usage,
                            const struct views_module_filter *filter)
{
    if (filter && filter->hex_prefix &&
        strncmp(rev->hex, filter->hex_prefix, strlen(filter->hex_prefix)) != 0)
        return false;
    if (filter && filter->running_only && views_usage_running(usage, st->name, rev->hex) == 0)
        return false;
    return true;
}

bool views_module_passes(const struct registry_strategy *st, const struct views_usage *usage,
                         const struct views_module_filter *filter)
{
    for (size_t i = 0; i < st->nrevisions; i++) {
        if (revision_passes(st, &st->revisions[i], usage, filter))
            return true;
    }
    return false;
}

static json_t *revision_json(const struct registry_strategy *st,
                             const struct registry_revision *rev)
{
    json_t *tags = registry_tags_of(st, rev->hex);
    json_t *r = json_object();
    json_object_set_new(r, "hash", views_hash(rev->hex));
    json_object_set_new(r, "tag", json_string(rev->tag ? rev->tag : ""));
    json_object_set_new(r, "path", json_string(rev->path ? rev->path : ""));
    json_object_set_new(r, "size", json_integer((json_int_t)rev->size));
    /* A revision no tag points at can only be reached by hash: retired. */
    json_object_set_new(r, "retired", json_boolean(json_array_size(tags) == 0));
    json_object_set_new(r, "invalid", json_boolean(rev->invalid));
    if (rev->invalid_reason)
        json_object_set_new(r, "invalidReason", json_string(rev->invalid_reason));
    json_object_set_new(r, "tags", tags);
    return r;
}

json_t *views_module_summary(const struct registry_strategy *st,
                             const struct registry_revision *selected,
                             const struct views_usage *usage,
                             const struct views_module_filter *filter)
{
    if (!selected)
        selected = registry_latest(st);
    json_t *revisions = json_array();
    json_t *running = json_array();
    for (size_t i = 0; i < st->nrevisions; i++) {
        const struct registry_revision *rev = &st->revisions[i];
        if (!revision_passes(st, rev, usage, filter))
            continue;
        json_array_append_new(revisions, revision_json(st, rev));
        const json_t *doc = views_usage_doc(usage, st->name, rev->hex);
        if (doc && json_integer_value(json_object_get(doc, "count")) > 0)
            json_array_append_new(running, json_deep_copy(doc));
    }
    if (json_array_size(revisions) == 0) {
        json_decref(revisions);
        json_decref(running);
        return NULL;
    }
    json_t *tags = json_array();
    json_t *aliases = json_object();
    for (size_t i = 0; i < st->ntags; i++) {
        json_array_append_new(tags, json_string(st->tags[i].tag));
        json_object_set_new(aliases, st->tags[i].tag, views_hash(st->tags[i].hex));
    }
    char file[NAMES_STRATEGY_MAX + 4];
    snprintf(file, sizeof file, "%s.js", st->name);
    json_t *m = json_object();
    json_object_set_new(m, "name", json_string(st->name));
    json_object_set_new(m, "file", json_string(file));
    json_object_set_new(m, "path", json_string(selected && selected->path ? selected->path : ""));
    json_object_set_new(m, "selectedRevisionHash",
                        selected ? views_hash(selected->hex) : json_string(""));
    json_object_set_new(m, "selectedRevisionTag",
                        json_string(selected && selected->tag ? selected->tag : ""));
    json_object_set_new(m, "tags", tags);
    json_object_set_new(m, "tagAliases", aliases);
    json_object_set_new(m, "revisions", revisions);
    json_object_set_new(m, "size", json_integer(selected ? (json_int_t)selected->size : 0));
    json_object_set_new(m, "metadata", views_strategy_metadata(st, selected));
    json_object_set_new(m, "running", running);
    return m;
}
