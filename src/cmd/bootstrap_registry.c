/*
 * The plan, part three: registry.json as the steps will leave it, and the
 * tag changes that shows. The steps are replayed on a copy of the
 * snapshot's document with the catalogue's own rules (a new strategy's
 * first revision gets `latest`; an upload moves its primary tag and aliases;
 * dropping `latest`'s revision moves it to the newest remaining one), so the
 * dry run shows what -write will do. The --usage report reads it too.
 */
#include "cmd/bootstrap.h"

#include <stdlib.h>
#include <string.h>

static int oom(struct err *err)
{
    err_set(err, ERR_INTERNAL, "out of memory planning the registry");
    return -1;
}

/* The strategy's object in doc, created empty when missing (*created). */
static json_t *strategy_object(json_t *doc, const char *name, bool *created)
{
    json_t *obj = json_object_get(doc, name);
    *created = obj == NULL;
    if (obj)
        return obj;
    obj = json_pack("{s:{}, s:{}}", "tags", "hashes");
    if (!obj || json_object_set_new(doc, name, obj) != 0)
        return NULL;
    return obj;
}

static int set_tag(json_t *obj, const char *tag, const char *spelled)
{
    return json_object_set_new(json_object_get(obj, "tags"), tag, json_string(spelled));
}

static int replay_add(json_t *doc, const struct bootstrap_revision *rev, const char *spelled)
{
    bool created = false;
    json_t *obj = strategy_object(doc, rev->name, &created);
    if (!obj)
        return -1;
    char rel[BOOTSTRAP_REL_MAX];
    bootstrap_canonical_rel(rev->name, rev->hex, rel);
    json_t *hashes = json_object_get(obj, "hashes");
    json_t *entry = json_object_get(hashes, spelled);
    if (entry) {
        if (json_object_set_new(entry, "path", json_string(rel)) != 0)
            return -1;
    } else if (json_object_set_new(hashes, spelled,
                                   json_pack("{s:s, s:s}", "tag", rev->tag, "path", rel)) != 0) {
        return -1;
    }
    int rc = set_tag(obj, rev->tag, spelled);
    for (size_t i = 0; rc == 0 && i < rev->naliases; i++)
        rc = set_tag(obj, rev->aliases[i], spelled);
    if (rc == 0 && created)
        rc = set_tag(obj, REGISTRY_LATEST, spelled);
    return rc;
}

static void replay_drop(json_t *doc, const struct bootstrap_revision *rev, const char *spelled)
{
    json_t *obj = json_object_get(doc, rev->name);
    json_t *hashes = json_object_get(obj, "hashes");
    json_t *tags = json_object_get(obj, "tags");
    json_object_del(hashes, spelled);
    const char *tag;
    json_t *target;
    void *tmp;
    json_object_foreach_safe(tags, tmp, tag, target)
    {
        if (strcmp(json_string_value(target), spelled) == 0)
            json_object_del(tags, tag);
    }
    if (json_object_size(hashes) == 0) {
        json_object_del(doc, rev->name);
        return;
    }
    if (!json_object_get(tags, REGISTRY_LATEST)) {
        const char *newest = NULL, *key;
        json_t *value;
        json_object_foreach(hashes, key, value)
        {
            newest = key;
        }
        json_object_set_new(tags, REGISTRY_LATEST, json_string(newest));
    }
}

/* Only the steps that change registry.json are replayed: a dedupe removes
 * copies of a revision already registered, and a stale temporary or an
 * empty folder names no revision at all (its `revision` field is 0, which
 * is some other revision's index). */
static int replay_step(struct bootstrap_plan *plan, const struct bootstrap_step *step)
{
    if (step->kind != BOOTSTRAP_STEP_ADD && step->kind != BOOTSTRAP_STEP_LATEST &&
        step->kind != BOOTSTRAP_STEP_DROP)
        return 0;
    const struct bootstrap_revision *rev = &plan->revisions[step->revision];
    char spelled[HASH_SPELLED_LEN + 1];
    hash_spell(rev->hex, spelled);
    if (step->kind == BOOTSTRAP_STEP_ADD)
        return replay_add(plan->after, rev, spelled);
    if (step->kind == BOOTSTRAP_STEP_LATEST)
        return set_tag(json_object_get(plan->after, rev->name), REGISTRY_LATEST, spelled);
    replay_drop(plan->after, rev, spelled);
    return 0;
}

int bootstrap_plan_registry(struct bootstrap_plan *plan, struct err *err)
{
    plan->after = json_deep_copy(plan->before);
    if (!plan->after)
        return oom(err);
    for (size_t i = 0; i < plan->nsteps; i++) {
        if (replay_step(plan, &plan->steps[i]) != 0)
            return oom(err);
    }
    return 0;
}

/* ------------------------------------------------------------- diff */

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* The keys of a and b together, sorted, without duplicates. */
static const char **union_keys(const json_t *a, const json_t *b, size_t *n)
{
    size_t cap = json_object_size(a) + json_object_size(b) + 1;
    const char **keys = malloc(cap * sizeof *keys);
    if (!keys)
        return NULL;
    size_t count = 0;
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)a, key, value)
    {
        keys[count++] = key;
    }
    json_object_foreach((json_t *)b, key, value)
    {
        if (!json_object_get(a, key))
            keys[count++] = key;
    }
    qsort(keys, count, sizeof *keys, compare_strings);
    *n = count;
    return keys;
}

static void hex_of(const json_t *target, char out[HASH_HEX_LEN + 1])
{
    const char *text = json_string_value(target);
    if (!text || !hash_parse_full(text, out))
        out[0] = '\0';
}

static int push_change(struct bootstrap_plan *plan, const char *strategy, const char *tag,
                       const char *before, const char *after)
{
    if (plan->nchanges == plan->change_cap) {
        size_t cap = plan->change_cap ? plan->change_cap * 2 : 16;
        struct bootstrap_tag_change *changes = realloc(plan->changes, cap * sizeof *changes);
        if (!changes)
            return -1;
        plan->changes = changes;
        plan->change_cap = cap;
    }
    struct bootstrap_tag_change *c = &plan->changes[plan->nchanges];
    c->strategy = strdup(strategy);
    c->tag = strdup(tag);
    memcpy(c->before, before, sizeof c->before);
    memcpy(c->after, after, sizeof c->after);
    if (!c->strategy || !c->tag) {
        free(c->strategy);
        free(c->tag);
        return -1;
    }
    plan->nchanges++;
    return 0;
}

static int diff_strategy(struct bootstrap_plan *plan, const char *name)
{
    const json_t *old_tags = json_object_get(json_object_get(plan->before, name), "tags");
    const json_t *new_tags = json_object_get(json_object_get(plan->after, name), "tags");
    size_t n = 0;
    const char **tags = union_keys(old_tags, new_tags, &n);
    if (!tags)
        return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        char before[HASH_HEX_LEN + 1], after[HASH_HEX_LEN + 1];
        hex_of(json_object_get(old_tags, tags[i]), before);
        hex_of(json_object_get(new_tags, tags[i]), after);
        if (strcmp(before, after) != 0)
            rc = push_change(plan, name, tags[i], before, after);
    }
    free(tags);
    return rc;
}

int bootstrap_plan_diff(struct bootstrap_plan *plan, struct err *err)
{
    size_t n = 0;
    const char **names = union_keys(plan->before, plan->after, &n);
    if (!names)
        return oom(err);
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = diff_strategy(plan, names[i]);
    free(names);
    return rc == 0 ? 0 : oom(err);
}
