/* The audit log: who changed what, when, from what to what. */
#include "api/internal.h"
#include "api/views.h"

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
    if (api->opts.store && store_audit_append(api->opts.store, entry, &err) != 0) {
        log_error("audit", "cannot append to the audit log: %s", err.message);
        err_clear(&err);
    }
    json_decref(entry);
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
 * over, PUT of a module, `latest` moving when its revision is deleted. */
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
