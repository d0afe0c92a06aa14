/* The audit log: who changed what, when, from what to what. */
#include "api/internal.h"
#include "api/views.h"

#include "core/clock.h"
#include "core/log.h"

#include <string.h>

void api_audit(struct api *api, const struct api_request *req, const char *action, json_t *fields)
{
    json_t *entry = json_object();
    json_object_set_new(entry, "actor", json_string(req->actor[0] ? req->actor : "anonymous"));
    json_object_set_new(entry, "action", json_string(action));
    if (fields)
        json_object_update(entry, fields);
    json_decref(fields);
    struct err err = ERR_INIT;
    /* The change is made by now: the entry is only told, and counted */
    if (api->opts.store && store_audit_append(api->opts.store, entry, &err) != 0) {
        atomic_fetch_add(&api->audit_failures, 1);
        atomic_store(&api->audit_failed_ms, clock_wall_ms());
        /* the entry itself goes to the log: the trail can be rebuilt from it */
        log_json(LOG_LEVEL_ERROR, "audit", "cannot append to the audit log",
                 json_pack("{s:s, s:O}", "error", err.message, "entry", entry));
        err_clear(&err);
    }
    json_decref(entry);
}

static const char *text_of(const json_t *r, const char *key)
{
    const char *s = json_string_value(json_object_get(r, key));
    return s ? s : "";
}

/* Results the audit can merge: same selector, strategy, hashes, reason,
 * and neither carries an error of its own. */
static bool same_change(const json_t *a, const json_t *b)
{
    static const char *const keys[] = {"selector", "strategy", "hash", "previousHash", "reason"};
    if (json_object_get(a, "error") || json_object_get(b, "error"))
        return false;
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        if (strcmp(text_of(a, keys[i]), text_of(b, keys[i])) != 0)
            return false;
    }
    return true;
}

/* Adds r to changes, into the last entry when it is the same change. */
static void add_change(json_t *changes, const json_t *r)
{
    json_t *last = json_array_get(changes, json_array_size(changes) - 1);
    if (last && same_change(last, r)) {
        json_array_extend(json_object_get(last, "instances"), json_object_get(r, "instances"));
        return;
    }
    json_t *copy = json_copy((json_t *)r);
    json_t *ids = json_copy(json_object_get(r, "instances"));
    if (copy && ids)
        json_object_set(copy, "instances", ids);
    json_decref(ids);
    json_array_append_new(changes, copy);
}

void api_audit_refresh(struct api *api, const struct api_request *req, const json_t *request,
                       const json_t *results)
{
    json_t *counts = json_object();
    json_t *changes = json_array();
    size_t i;
    json_t *r;
    json_array_foreach(results, i, r)
    {
        const char *reason = text_of(r, "reason");
        json_object_set_new(counts, reason,
                            json_integer(json_integer_value(json_object_get(counts, reason)) + 1));
        if (strcmp(reason, "alreadyPinned") != 0)
            add_change(changes, r);
    }
    api_audit(
        api, req, "refresh",
        json_pack("{s:O?, s:o, s:o}", "request", request, "counts", counts, "changes", changes));
}

static void audit_tag(struct api *api, const struct api_request *req, const char *name,
                      const char *tag, const char *from, const char *to)
{
    api_audit(api, req, to ? "tag.move" : "tag.delete",
              json_pack("{s:s, s:s, s:o, s:o}", "strategy", name, "tag", tag, "from",
                        from ? views_hash(from) : json_null(), "to",
                        to ? views_hash(to) : json_null()));
}

/* A tag that left one revision for another is a reassignment, whichever
 * request moved it (a tag PUT counts its own move): uploads that take a tag
 * over, PUT of a module, `latest` moving when its revision is deleted.
 * before and after must be the snapshots the catalogue reported around the
 * request's own change (struct catalog_change): snapshots taken around the
 * call from outside its lock can hold concurrent requests' moves, which
 * would then be audited under this request's actor and counted twice. */
void api_audit_tag_changes(struct api *api, const struct api_request *req,
                           const struct registry *before, const struct registry *after,
                           const char *name)
{
    const struct registry_strategy *b = registry_find_strategy(before, name);
    const struct registry_strategy *a = registry_find_strategy(after, name);
    for (size_t i = 0; a && i < a->ntags; i++) {
        const char *from = b ? registry_tag_target(b, a->tags[i].tag) : NULL;
        if (from && strcmp(from, a->tags[i].hex) == 0)
            continue;
        audit_tag(api, req, name, a->tags[i].tag, from, a->tags[i].hex);
        if (from) {
            const char *labels[] = {api->opts.environment, name, a->tags[i].tag};
            metrics_add(api->tag_reassigned, labels, 1);
        }
    }
    for (size_t i = 0; b && i < b->ntags; i++) {
        if (!a || !registry_tag_target(a, b->tags[i].tag))
            audit_tag(api, req, name, b->tags[i].tag, b->tags[i].hex, NULL);
    }
}
