/*
 * registry.json -> an unverified snapshot.
 *
 * The file may have been edited by hand or written by an older tool, so
 * every string in it is checked before it can become a path component or a
 * lookup key. Structural damage (a bad name, tag or hash) refuses the whole
 * file: serving half of a registry would silently drop revisions. Damage
 * confined to one entry is repaired or fenced off instead, loudly: a path
 * that is not the canonical one marks that revision invalid (it is never
 * opened), a tag naming an unknown hash is dropped, a missing `latest` is
 * put on the newest revision.
 */
#include "registry/registry_internal.h"

#include "core/log.h"

#include <stdlib.h>
#include <string.h>

#define QUOTE_MAX 80

static int quote_len(const char *s)
{
    size_t len = strlen(s);
    return (int)(len > QUOTE_MAX ? QUOTE_MAX : len);
}

static void warn_entry(const char *msg, const char *name, const char *key, const char *value,
                       const char *hex)
{
    json_t *fields = json_object();
    json_object_set_new(fields, "strategy", json_string(name));
    if (key)
        json_object_set_new(fields, key, json_string(value));
    if (hex)
        json_object_set_new(fields, "hash", json_sprintf(HASH_PREFIX "%s", hex));
    log_json(LOG_LEVEL_WARN, REGISTRY__COMPONENT, msg, fields);
}

static int compare_hex_refs(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The revisions' hashes, sorted, for duplicate checks and tag lookups that
 * stay fast with thousands of revisions. */
static const char **sorted_hexes(const struct registry_strategy *st)
{
    const char **index = malloc((st->nrevisions ? st->nrevisions : 1) * sizeof *index);
    if (!index)
        return NULL;
    for (size_t i = 0; i < st->nrevisions; i++)
        index[i] = st->revisions[i].hex;
    qsort(index, st->nrevisions, sizeof *index, compare_hex_refs);
    return index;
}

static bool index_has(const char **index, size_t n, const char *hex)
{
    return bsearch(&hex, index, n, sizeof *index, compare_hex_refs) != NULL;
}

static int mark_bad_path(struct registry_revision *rev, const char *canonical)
{
    rev->invalid = true;
    if (rev->path[0])
        rev->invalid_reason = fsutil_format("registry.json gives the path '%.*s' instead of '%s'; "
                                            "the file was not opened",
                                            quote_len(rev->path), rev->path, canonical);
    else
        rev->invalid_reason =
            fsutil_format("registry.json gives no path (expected '%s')", canonical);
    return rev->invalid_reason ? 0 : -1;
}

static int load_revision(const char *name, const char *key, json_t *entry, size_t order,
                         struct registry_revision *rev, struct err *err)
{
    if (!hash_parse_full(key, rev->hex)) {
        err_set(err, ERR_INVALID, "registry.json: strategy '%s' lists an invalid hash '%.*s'", name,
                quote_len(key), key);
        return -1;
    }
    json_t *tag = json_object_get(entry, "tag");
    if (!json_is_object(entry) || !json_is_string(tag) ||
        !names_valid_tag(json_string_value(tag))) {
        err_set(err, ERR_INVALID,
                "registry.json: strategy '%s', hash %s: needs an object with a valid \"tag\"", name,
                key);
        return -1;
    }
    json_t *path = json_object_get(entry, "path");
    rev->order = order;
    rev->tag = strdup(json_string_value(tag));
    rev->path = strdup(json_is_string(path) ? json_string_value(path) : "");
    if (!rev->tag || !rev->path)
        goto oom;
    char canonical[REGISTRY__REL_PATH_MAX];
    registry__rel_path(name, rev->hex, canonical);
    if (strcmp(rev->path, canonical) != 0 && mark_bad_path(rev, canonical) != 0)
        goto oom;
    return 0;
oom:
    err_set(err, ERR_INTERNAL, "out of memory loading registry.json");
    return -1;
}

static int load_revisions(struct registry_strategy *st, json_t *hashes, struct err *err)
{
    size_t n = json_object_size(hashes);
    st->revisions = calloc(n ? n : 1, sizeof *st->revisions);
    if (!st->revisions) {
        err_set(err, ERR_INTERNAL, "out of memory loading registry.json");
        return -1;
    }
    const char *key;
    json_t *entry;
    json_object_foreach(hashes, key, entry)
    {
        struct registry_revision *rev = &st->revisions[st->nrevisions];
        if (load_revision(st->name, key, entry, st->nrevisions + 1, rev, err) != 0) {
            registry__revision_clear(rev);
            return -1;
        }
        st->nrevisions++;
    }
    return 0;
}

static int check_duplicates(const struct registry_strategy *st, const char **index, struct err *err)
{
    for (size_t i = 1; i < st->nrevisions; i++) {
        if (strcmp(index[i - 1], index[i]) == 0) {
            err_set(err, ERR_INVALID, "registry.json: strategy '%s' lists hash %s twice", st->name,
                    index[i]);
            return -1;
        }
    }
    return 0;
}

static int load_tags(struct registry_strategy *st, json_t *tags, const char **index,
                     struct err *err)
{
    size_t n = json_object_size(tags);
    /* +1 leaves room for a `latest` added below. */
    st->tags = calloc(n + 1, sizeof *st->tags);
    if (!st->tags) {
        err_set(err, ERR_INTERNAL, "out of memory loading registry.json");
        return -1;
    }
    const char *tag;
    json_t *target;
    json_object_foreach(tags, tag, target)
    {
        struct registry_tag *t = &st->tags[st->ntags];
        if (!names_valid_tag(tag)) {
            err_set(err, ERR_INVALID, "registry.json: strategy '%s' has an invalid tag '%.*s'",
                    st->name, quote_len(tag), tag);
            return -1;
        }
        if (!json_is_string(target) || !hash_parse_full(json_string_value(target), t->hex)) {
            err_set(err, ERR_INVALID, "registry.json: strategy '%s', tag '%s': not a sha256 hash",
                    st->name, tag);
            return -1;
        }
        if (!index_has(index, st->nrevisions, t->hex)) {
            warn_entry("registry.json: tag points at an unknown hash; dropped", st->name, "tag",
                       tag, t->hex);
            continue;
        }
        t->tag = strdup(tag);
        if (!t->tag) {
            err_set(err, ERR_INTERNAL, "out of memory loading registry.json");
            return -1;
        }
        st->ntags++;
    }
    registry__strategy_sort_tags(st);
    return 0;
}

static int ensure_latest(struct registry_strategy *st, struct err *err)
{
    if (registry_tag_target(st, REGISTRY_LATEST))
        return 0;
    const char *newest = st->revisions[st->nrevisions - 1].hex;
    warn_entry("registry.json: strategy has no `latest`; using its newest revision", st->name, NULL,
               NULL, newest);
    if (registry__strategy_set_tag(st, REGISTRY_LATEST, newest) != 0) {
        err_set(err, ERR_INTERNAL, "out of memory loading registry.json");
        return -1;
    }
    return 0;
}

/* An optional member that must be an object when present. */
static int member_object(const char *name, json_t *value, const char *key, json_t **out,
                         struct err *err)
{
    *out = json_object_get(value, key);
    if (!*out || json_is_null(*out)) {
        *out = NULL;
        return 0;
    }
    if (json_is_object(*out))
        return 0;
    err_set(err, ERR_INVALID, "registry.json: strategy '%s': \"%s\" must be an object", name, key);
    return -1;
}

static int fill_strategy(struct registry_strategy *st, json_t *value, struct err *err)
{
    json_t *hashes, *tags;
    if (member_object(st->name, value, "hashes", &hashes, err) != 0 ||
        member_object(st->name, value, "tags", &tags, err) != 0)
        return -1;
    if (hashes && load_revisions(st, hashes, err) != 0)
        return -1;
    const char **index = sorted_hexes(st);
    if (!index) {
        err_set(err, ERR_INTERNAL, "out of memory loading registry.json");
        return -1;
    }
    int rc = check_duplicates(st, index, err);
    if (rc == 0 && tags)
        rc = load_tags(st, tags, index, err);
    free(index);
    if (rc == 0 && st->nrevisions > 0)
        rc = ensure_latest(st, err);
    return rc;
}

/* Builds one strategy; *out stays NULL for a strategy without revisions,
 * which cannot exist (its last revision took it away) and is skipped. */
static int load_strategy(const char *name, json_t *value, struct registry_strategy **out,
                         struct err *err)
{
    *out = NULL;
    if (!names_valid_strategy(name)) {
        err_set(err, ERR_INVALID, "registry.json: '%.*s' is not a valid strategy name",
                quote_len(name), name);
        return -1;
    }
    if (!json_is_object(value)) {
        err_set(err, ERR_INVALID, "registry.json: strategy '%s' must be an object", name);
        return -1;
    }
    struct registry_strategy *st = registry__strategy_new(name);
    if (!st) {
        err_set(err, ERR_INTERNAL, "out of memory loading registry.json");
        return -1;
    }
    if (fill_strategy(st, value, err) != 0) {
        registry__strategy_release(st);
        return -1;
    }
    if (st->nrevisions == 0) {
        warn_entry("registry.json: strategy has no revisions; ignored", name, NULL, NULL, NULL);
        registry__strategy_release(st);
        return 0;
    }
    *out = st;
    return 0;
}

static int compare_strategies(const void *a, const void *b)
{
    const struct registry_strategy *x = *(struct registry_strategy *const *)a;
    const struct registry_strategy *y = *(struct registry_strategy *const *)b;
    return strcmp(x->name, y->name);
}

struct registry *registry__from_json(json_t *doc, struct err *err)
{
    if (!json_is_object(doc)) {
        err_set(err, ERR_INVALID, "registry.json: expected an object at the top level");
        return NULL;
    }
    struct registry *reg = registry__new(json_object_size(doc));
    if (!reg) {
        err_set(err, ERR_INTERNAL, "out of memory loading registry.json");
        return NULL;
    }
    const char *name;
    json_t *value;
    json_object_foreach(doc, name, value)
    {
        struct registry_strategy *st;
        if (load_strategy(name, value, &st, err) != 0) {
            registry_release(reg);
            return NULL;
        }
        if (st)
            registry__append(reg, st);
    }
    qsort(reg->strategies, reg->nstrategies, sizeof *reg->strategies, compare_strategies);
    return reg;
}
