#include "api/views.h"

#include "core/hash.h"

#include <stdio.h>
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

static bool revision_passes(const struct registry_strategy *st,
                            const struct registry_revision *rev, struct runtime *rt,
                            const struct views_module_filter *filter)
{
    if (filter && filter->hex_prefix &&
        strncmp(rev->hex, filter->hex_prefix, strlen(filter->hex_prefix)) != 0)
        return false;
    if (filter && filter->running_only && (!rt || runtime_running_count(rt, st->name, rev->hex) == 0))
        return false;
    return true;
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
                             const struct registry_revision *selected, struct runtime *rt,
                             const struct views_module_filter *filter)
{
    if (!selected)
        selected = registry_latest(st);
    json_t *revisions = json_array();
    json_t *running = json_array();
    for (size_t i = 0; i < st->nrevisions; i++) {
        const struct registry_revision *rev = &st->revisions[i];
        if (!revision_passes(st, rev, rt, filter))
            continue;
        json_array_append_new(revisions, revision_json(st, rev));
        if (rt && runtime_running_count(rt, st->name, rev->hex) > 0)
            json_array_append_new(running, runtime_usage_json(rt, st->name, rev->hex));
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
