/* The catalogue endpoints: strategies, modules, sources, uploads, deletes. */
#include "api/internal.h"
#include "api/views.h"

#include "core/clock.h"
#include "core/hash.h"
#include "core/jsonutil.h"
#include "core/log.h"
#include "core/names.h"
#include "js/validate.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_TAG_LIST 64

/* ------------------------------------------------------------ listings */

int api_handle_strategies_list(struct api *api, struct api_request *req, struct api_response *res,
                               struct err *err)
{
    (void)req;
    (void)err;
    struct registry *reg = catalog_snapshot(api->opts.catalog);
    json_t *list = json_array();
    for (size_t i = 0; i < reg->nstrategies; i++) {
        const struct registry_strategy *st = reg->strategies[i];
        json_array_append_new(list, views_strategy_metadata(st, registry_latest(st)));
    }
    registry_release(reg);
    api_respond_json(res, 200, json_pack("{s:o}", "strategies", list));
    return 0;
}

int api_handle_strategy_get(struct api *api, struct api_request *req, struct api_response *res,
                            struct err *err)
{
    const char *name = req->params[0];
    if (!names_valid_strategy(name)) {
        err_set(err, ERR_INVALID, "'%s' is not a valid strategy name", name);
        return -1;
    }
    struct registry *reg = catalog_snapshot(api->opts.catalog);
    const struct registry_strategy *st = registry_find_strategy(reg, name);
    if (!st) {
        registry_release(reg);
        err_set(err, ERR_NOT_FOUND, "strategy '%s' not found", name);
        return -1;
    }
    api_respond_json(res, 200, views_strategy_metadata(st, registry_latest(st)));
    registry_release(reg);
    return 0;
}

struct listing_query {
    const char *strategy;
    char hex_prefix[HASH_HEX_LEN + 1];
    bool has_hash;
    bool running_only;
    long long limit; /* -1: none */
    long long offset;
};

static int parse_listing_query(const struct api_request *req, struct listing_query *q,
                               struct err *err)
{
    memset(q, 0, sizeof *q);
    q->limit = -1;
    q->strategy = api_query(req, "strategy");
    if (q->strategy && *q->strategy && !names_valid_strategy(q->strategy)) {
        err_set(err, ERR_INVALID, "query parameter 'strategy': '%s' is not a valid strategy name",
                q->strategy);
        err_add_detail(err, "parameter", json_string("strategy"));
        return -1;
    }
    const char *hash = api_query(req, "hash");
    if (hash && *hash) {
        if (strncmp(hash, HASH_PREFIX, HASH_PREFIX_LEN) == 0)
            hash += HASH_PREFIX_LEN;
        size_t n = strlen(hash);
        if (n == 0 || n > HASH_HEX_LEN || !hash_is_hex(hash, n)) {
            err_set(err, ERR_INVALID, "query parameter 'hash' must be sha256:<hex> or hex digits");
            err_add_detail(err, "parameter", json_string("hash"));
            return -1;
        }
        for (size_t i = 0; i < n; i++)
            q->hex_prefix[i] = (char)(hash[i] >= 'A' && hash[i] <= 'F' ? hash[i] + 32 : hash[i]);
        q->has_hash = true;
    }
    if (api_query_bool(req, "runningOnly", &q->running_only, err) != 0 ||
        api_query_int(req, "limit", 0, &q->limit, err) != 0 ||
        api_query_int(req, "offset", 0, &q->offset, err) != 0)
        return -1;
    return 0;
}

/* The page's closing members: `,"total":...,"strategyDirectory":...}`. */
static int append_page_trailer(struct api *api, const struct listing_query *q, long long total,
                               struct strbuf *sb)
{
    json_t *trailer = json_object();
    json_object_set_new(trailer, "total", json_integer(total));
    json_object_set_new(trailer, "offset", json_integer(q->offset));
    json_object_set_new(trailer, "limit", q->limit < 0 ? json_null() : json_integer(q->limit));
    json_object_set_new(trailer, "strategyDirectory", json_string(catalog_root(api->opts.catalog)));
    size_t len = 0;
    char *text = jsonutil_dump(trailer, &len);
    json_decref(trailer);
    if (!text || len < 2) {
        free(text);
        return -1;
    }
    strbuf_putc(sb, ',');
    strbuf_append(sb, text + 1, len - 1);
    free(text);
    return 0;
}

/* The page is built from one snapshot of the catalogue and one of the
 * usage: modules off the page are only tested against the filter (for the
 * total), never rendered; the modules on it are copied from text cached
 * per catalogue generation, with only the filter's revisions and the
 * running usage added per request. The body is written as text in the
 * member order of the jansson document it replaces. */
static int render_listing(struct api *api, struct registry *reg, const struct listing_query *q,
                          struct strbuf *sb, uint64_t *usage_generation, bool *live)
{
    struct views_module_filter filter = {q->has_hash ? q->hex_prefix : NULL, q->running_only};
    struct views_usage *usage = views_usage_new(api->opts.runtime);
    struct views_texts *texts = usage ? views_texts_get(api->views, reg) : NULL;
    size_t *shown = malloc((reg->nstrategies ? reg->nstrategies : 1) * sizeof *shown);
    size_t nshown = 0;
    long long total = 0;
    for (size_t i = 0; shown && i < reg->nstrategies; i++) {
        const struct registry_strategy *st = reg->strategies[i];
        if (q->strategy && *q->strategy && strcmp(st->name, q->strategy) != 0)
            continue;
        if (!views_module_passes(st, usage, &filter))
            continue;
        /* total - offset, not offset + limit: both may be near LLONG_MAX */
        if (total >= q->offset && (q->limit < 0 || total - q->offset < q->limit))
            shown[nshown++] = i;
        total++;
    }
    /* one allocation for the page: it runs to hundreds of kilobytes */
    size_t size = 256;
    for (size_t k = 0; k < nshown; k++)
        size += views_module_text_size(texts, reg, shown[k]);
    strbuf_reserve(sb, size);
    strbuf_puts(sb, "{\"modules\":[");
    int rc = texts && shown ? 0 : -1;
    for (size_t k = 0; rc == 0 && k < nshown; k++) {
        if (k > 0)
            strbuf_putc(sb, ',');
        rc = views_module_text(texts, reg, shown[k], usage, &filter, sb);
    }
    free(shown);
    views_texts_put(texts);
    *usage_generation = views_usage_generation(usage);
    *live = views_usage_any(usage);
    views_usage_free(usage);
    strbuf_putc(sb, ']');
    if (rc != 0 || append_page_trailer(api, q, total, sb) != 0 || strbuf_failed(sb))
        return -1;
    return 0;
}

/* A listing is a page shared with every request of the same query until
 * the catalogue or the running usage moves (pages.h). */
int api_handle_modules_list(struct api *api, struct api_request *req, struct api_response *res,
                            struct err *err)
{
    struct listing_query q;
    if (parse_listing_query(req, &q, err) != 0)
        return -1;
    char query[NAMES_STRATEGY_MAX + HASH_HEX_LEN + 64];
    snprintf(query, sizeof query, "%s|%s|%d|%lld|%lld", q.strategy ? q.strategy : "", q.hex_prefix,
             q.running_only, q.limit, q.offset);
    struct registry *reg = catalog_snapshot(api->opts.catalog);
    struct runtime *rt = api->opts.runtime;
    struct pages_key key = {query, reg->generation, rt ? runtime_usage_generation(rt) : 0};
    int64_t now_ms = clock_mono_ns() / 1000000;
    struct page *page = pages_get(api->pages, &key, now_ms);
    if (!page) {
        struct strbuf sb = STRBUF_INIT;
        bool live = false;
        if (render_listing(api, reg, &q, &sb, &key.usage_generation, &live) != 0) {
            strbuf_release(&sb);
            registry_release(reg);
            err_set(err, ERR_INTERNAL, "out of memory listing modules");
            return -1;
        }
        size_t len = 0;
        char *body = strbuf_detach(&sb, &len);
        page = pages_put(api->pages, &key, live, now_ms, body, len);
    }
    registry_release(reg);
    if (!page) {
        err_set(err, ERR_INTERNAL, "out of memory listing modules");
        return -1;
    }
    api_respond_page(api, req, res, page);
    return 0;
}

int api_handle_module_get(struct api *api, struct api_request *req, struct api_response *res,
                          struct err *err)
{
    struct registry *reg = catalog_snapshot(api->opts.catalog);
    struct registry_resolution r;
    if (registry_resolve_text(reg, req->params[0], &r, err) != 0) {
        registry_release(reg);
        return -1;
    }
    struct views_usage *usage = views_usage_new(api->opts.runtime);
    json_t *m = views_module_summary(r.strategy, r.revision, usage, NULL);
    views_usage_free(usage);
    registry_release(reg);
    api_respond_json(res, 200, m);
    return 0;
}

/* Whether an If-None-Match value names `etag` (RFC 9110 13.1.2): "*", or a
 * comma-separated list of entity-tags, one of which equals it by the weak
 * comparison a GET uses (a W/ prefix is ignored; the quoted text must be
 * the same). A value that merely contains the hash matches nothing; an item
 * that is not an entity-tag is skipped. */
static bool if_none_match_names(const char *value, const char *etag)
{
    size_t etag_len = strlen(etag);
    const char *p = value;
    while (*p) {
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        if (*p == '*' && (p[1] == '\0' || p[1] == ',' || p[1] == ' ' || p[1] == '\t'))
            return true;
        if (p[0] == 'W' && p[1] == '/')
            p += 2;
        if (*p == '"') {
            /* a quoted entity-tag may hold commas: it ends at its quote */
            const char *close = strchr(p + 1, '"');
            if (!close)
                return false;
            if ((size_t)(close + 1 - p) == etag_len && memcmp(p, etag, etag_len) == 0)
                return true;
            p = close + 1;
        }
        while (*p && *p != ',')
            p++;
    }
    return false;
}

/* The strategy and revision a selector names in the catalogue now. */
static int resolve_revision(struct api *api, const char *selector,
                            char name[NAMES_STRATEGY_MAX + 1], char hex[HASH_HEX_LEN + 1],
                            struct err *err)
{
    struct registry *reg = catalog_snapshot(api->opts.catalog);
    struct registry_resolution r;
    int rc = registry_resolve_text(reg, selector, &r, err);
    if (rc == 0) {
        snprintf(name, NAMES_STRATEGY_MAX + 1, "%s", r.strategy->name);
        snprintf(hex, HASH_HEX_LEN + 1, "%s", r.revision->hex);
    }
    registry_release(reg);
    return rc;
}

int api_handle_module_source(struct api *api, struct api_request *req, struct api_response *res,
                             struct err *err)
{
    char name[NAMES_STRATEGY_MAX + 1], hex[HASH_HEX_LEN + 1];
    if (resolve_revision(api, req->params[0], name, hex, err) != 0)
        return -1;
    snprintf(res->etag, sizeof res->etag, "\"" HASH_PREFIX "%s\"", hex);
    const char *inm =
        MHD_lookup_connection_value(req->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    if (inm && if_none_match_names(inm, res->etag)) {
        res->status = 304;
        return 0;
    }
    char *source = NULL;
    size_t len = 0;
    if (catalog_read_source(api->opts.catalog, name, hex, &source, &len, err) != 0)
        return -1;
    res->status = 200;
    res->body = source;
    res->body_len = len;
    res->content_type = "application/javascript";
    return 0;
}

int api_handle_module_usage(struct api *api, struct api_request *req, struct api_response *res,
                            struct err *err)
{
    bool include_stopped = false;
    long long limit = -1, offset = 0;
    if (api_query_bool(req, "includeStopped", &include_stopped, err) != 0 ||
        api_query_int(req, "limit", 0, &limit, err) != 0 ||
        api_query_int(req, "offset", 0, &offset, err) != 0)
        return -1;
    char name[NAMES_STRATEGY_MAX + 1], hex[HASH_HEX_LEN + 1];
    if (resolve_revision(api, req->params[0], name, hex, err) != 0)
        return -1;
    json_t *all = runtime_instances_pinning(api->opts.runtime, name, hex, include_stopped);
    json_t *page = json_array();
    size_t total = json_array_size(all);
    /* i - offset, not offset + limit: both may be near LLONG_MAX */
    for (size_t i = (size_t)offset; i < total && (limit < 0 || i - (size_t)offset < (size_t)limit);
         i++)
        json_array_append(page, json_array_get(all, i));
    json_decref(all);
    /* written as text in the member order of the document: the usage
     * document comes from the runtime as text, the rest from jansson */
    json_t *head = json_object();
    json_object_set_new(head, "selector", json_string(req->params[0]));
    json_object_set_new(head, "strategy", json_string(name));
    json_object_set_new(head, "hash", views_hash(hex));
    json_t *tail = json_object();
    json_object_set_new(tail, "total", json_integer((json_int_t)total));
    json_object_set_new(tail, "offset", json_integer(offset));
    json_object_set_new(tail, "limit", limit < 0 ? json_null() : json_integer(limit));
    size_t head_len = 0, page_len = 0, tail_len = 0;
    char *head_text = jsonutil_dump(head, &head_len);
    char *page_text = jsonutil_dump(page, &page_len);
    char *tail_text = jsonutil_dump(tail, &tail_len);
    json_decref(head);
    json_decref(page);
    json_decref(tail);
    struct strbuf sb = STRBUF_INIT;
    int rc = head_text && page_text && tail_text && head_len > 1 && tail_len > 1 ? 0 : -1;
    if (rc == 0) {
        strbuf_append(&sb, head_text, head_len - 1);
        strbuf_puts(&sb, ",\"usage\":");
        rc = runtime_usage_text(api->opts.runtime, name, hex, &sb) < 0 ? -1 : 0;
        strbuf_puts(&sb, ",\"instances\":");
        strbuf_append(&sb, page_text, page_len);
        strbuf_putc(&sb, ',');
        strbuf_append(&sb, tail_text + 1, tail_len - 1);
    }
    free(head_text);
    free(page_text);
    free(tail_text);
    return api_respond_text(res, &sb, rc == 0, "application/json", "writing a usage page", err);
}

int api_handle_registry_export(struct api *api, struct api_request *req, struct api_response *res,
                               struct err *err)
{
    (void)req;
    (void)err;
    struct registry *reg = catalog_snapshot(api->opts.catalog);
    json_t *body = json_object();
    json_object_set_new(body, "registry", registry_to_json(reg));
    registry_release(reg);
    json_object_set_new(body, "usage", runtime_usage_all_json(api->opts.runtime));
    api_respond_json(res, 200, body);
    return 0;
}

/* ------------------------------------------------------------- uploads */

struct upload_request {
    json_t *body;
    const char *source;
    size_t source_len;
    const char *name;
    const char *tag;
    const char *aliases[MAX_TAG_LIST];
    size_t naliases;
    const char *reassign[MAX_TAG_LIST];
    size_t nreassign;
    bool promote_latest;
    struct catalog_prewrite *prewrite; /* the source's file, written while it validates */
};

static int read_tag_list(const json_t *body, const char *key, const char **out, size_t *n,
                         struct err *err)
{
    const json_t *list = NULL;
    int rc = jsonutil_get_string_array(body, key, &list, err);
    if (rc != 0)
        return rc < 0 ? -1 : 0;
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        const char *tag = json_string_value(item);
        if (!names_valid_tag(tag)) {
            err_set(err, ERR_INVALID, "%s[%zu]: '%s' is not a valid tag", key, i, tag);
            err_add_detail(err, "field", json_string(key));
            return -1;
        }
        if (*n == MAX_TAG_LIST) {
            err_set(err, ERR_INVALID, "%s: at most %d tags", key, MAX_TAG_LIST);
            return -1;
        }
        out[(*n)++] = tag;
    }
    return 0;
}

static int parse_upload(const struct api_request *req, struct upload_request *up, struct err *err)
{
    memset(up, 0, sizeof *up);
    if (api_body_object_lifting(req, "source", &up->body, err) != 0)
        return -1;
    json_t *source = json_object_get(up->body, "source");
    if (!json_is_string(source)) {
        err_set(err, ERR_INVALID, "field 'source' is required and must be a string");
        err_add_detail(err, "field", json_string("source"));
        return -1;
    }
    up->source = json_string_value(source);
    up->source_len = json_string_length(source);
    static const char *const keys[] = {"source",        "name",    "tag",
                                       "promoteLatest", "aliases", "reassignTags"};
    if (api_body_known_keys(up->body, keys, sizeof keys / sizeof keys[0], "an upload", err) != 0 ||
        jsonutil_get_string(up->body, "name", &up->name, err) < 0 ||
        jsonutil_get_string(up->body, "tag", &up->tag, err) < 0 ||
        jsonutil_get_bool(up->body, "promoteLatest", &up->promote_latest, err) < 0 ||
        read_tag_list(up->body, "aliases", up->aliases, &up->naliases, err) != 0 ||
        read_tag_list(up->body, "reassignTags", up->reassign, &up->nreassign, err) != 0)
        return -1;
    if (up->tag && !names_valid_tag(up->tag)) {
        err_set(err, ERR_INVALID, "field 'tag': '%s' is not a valid tag", up->tag);
        err_add_detail(err, "field", json_string("tag"));
        return -1;
    }
    return 0;
}

/* Runs the validator and checks the result agrees with the request. The
 * revision file is written meanwhile, on the other core: most uploads are
 * valid, and the file's fsync is the longest wait of the change after. */
static json_t *validate_upload(struct api *api, struct upload_request *up, struct err *err)
{
    up->prewrite = catalog_prewrite_begin(api->opts.catalog, up->source, up->source_len);
    char filename[NAMES_STRATEGY_MAX + 4] = "module.js";
    if (up->name && names_valid_strategy(up->name))
        snprintf(filename, sizeof filename, "%s.js", up->name);
    json_t *metadata = js_validator_run(api->validator, up->source, up->source_len, filename,
                                        &api->opts.validation_limits, err);
    if (!metadata) {
        json_t *diags = err->details ? json_object_get(err->details, "diagnostics") : NULL;
        json_t *first = json_array_get(diags, 0);
        const char *stage = first ? json_string_value(json_object_get(first, "stage")) : NULL;
        const char *labels[] = {stage ? stage : "unknown"};
        metrics_add(api->validation_failures, labels, 1);
        return NULL;
    }
    const char *name = json_string_value(json_object_get(metadata, "name"));
    const char *meta_tag = json_string_value(json_object_get(metadata, "tag"));
    if (up->name && strcmp(up->name, name) != 0) {
        err_set(err, ERR_INVALID, "field 'name' is '%s' but metadata.name is '%s'", up->name, name);
        err_add_detail(err, "field", json_string("name"));
    } else if (names_reserved_strategy(name)) {
        err_set(err, ERR_INVALID, "strategy name '%s' is reserved (it collides with an API path)",
                name);
    } else if (up->tag && meta_tag && strcmp(up->tag, meta_tag) != 0) {
        err_set(err, ERR_INVALID, "field 'tag' is '%s' but metadata.tag is '%s'", up->tag,
                meta_tag);
        err_add_detail(err, "field", json_string("tag"));
    } else {
        return metadata;
    }
    json_decref(metadata);
    return NULL;
}

static void upload_release(struct upload_request *up)
{
    catalog_prewrite_end(up->prewrite);
    json_decref(up->body);
}

struct upload_plan {
    const char *tag;
    const char **aliases;
    size_t naliases;
    const char **reassign;
    size_t nreassign;
    bool existing_only; /* a PUT: the strategy must still exist */
    bool latest_moved;  /* out: the upload moved latest onto its revision */
};

/* Whether the change moved latest onto `hex`, a revision whose own tag is
 * another. */
static bool latest_moved_to(const struct catalog_change *change, const char *name, const char *tag,
                            const char *hex)
{
    const struct registry_strategy *a = registry_find_strategy(change->after, name);
    const struct registry_strategy *b = registry_find_strategy(change->before, name);
    const char *now = a ? registry_tag_target(a, REGISTRY_LATEST) : NULL;
    const char *was = b ? registry_tag_target(b, REGISTRY_LATEST) : NULL;
    return now && strcmp(now, hex) == 0 && (!was || strcmp(was, hex) != 0) &&
           strcmp(tag, REGISTRY_LATEST) != 0;
}

static int store_upload(struct api *api, struct api_request *req, const struct upload_request *up,
                        json_t *metadata, struct upload_plan *plan,
                        struct catalog_upload_result *result, struct err *err)
{
    const char *name = json_string_value(json_object_get(metadata, "name"));
    /* the tag moves of this upload alone, as the catalogue saw them */
    struct catalog_change change = {NULL, NULL};
    struct catalog_upload cu = {
        .name = name,
        .source = up->source,
        .len = up->source_len,
        .metadata = metadata,
        .tag = plan->tag,
        .aliases = plan->aliases,
        .naliases = plan->naliases,
        .reassign = plan->reassign,
        .nreassign = plan->nreassign,
        .promote_latest = up->promote_latest,
        .existing_only = plan->existing_only,
        .prewritten = up->prewrite,
        .change = &change,
    };
    /* a change published though its write failed is audited too */
    int rc = catalog_add_revision(api->opts.catalog, &cu, result, err);
    if (rc != 0 && !catalog_error_published(err))
        return -1;
    api_audit_tag_changes(api, req, change.before, change.after, name);
    plan->latest_moved = latest_moved_to(&change, name, result->tag, result->hex);
    catalog_change_release(&change);
    struct err cache_err = ERR_INIT;
    if (api->opts.store && store_metadata_put(api->opts.store, result->hex, metadata, &cache_err))
        log_warn("api", "metadata cache: %s", cache_err.message);
    err_clear(&cache_err);
    json_t *aliases = json_array();
    for (size_t i = 0; i < plan->naliases; i++)
        json_array_append_new(aliases, json_string(plan->aliases[i]));
    api_audit(api, req, "module.upload",
              json_pack("{s:s, s:o, s:s, s:o, s:b}", "strategy", name, "hash",
                        views_hash(result->hex), "tag", result->tag, "aliases", aliases, "created",
                        result->created));
    return rc;
}

static bool listed_alias(const struct upload_plan *plan, const char *tag)
{
    for (size_t i = 0; i < plan->naliases; i++) {
        if (strcmp(plan->aliases[i], tag) == 0)
            return true;
    }
    return false;
}

static json_t *upload_response(struct api *api, const char *name,
                               const struct catalog_upload_result *result, const char *alias,
                               const struct upload_plan *plan)
{
    char file[NAMES_STRATEGY_MAX + 4], path[NAMES_STRATEGY_MAX * 2 + HASH_HEX_LEN + 8];
    snprintf(file, sizeof file, "%s.js", name);
    snprintf(path, sizeof path, "%s/%s/%s.js", name, result->hex, name);
    json_t *aliases = json_array();
    for (size_t i = 0; i < plan->naliases; i++)
        json_array_append_new(aliases, json_string(plan->aliases[i]));
    /* latest moves on a strategy's first upload and with promoteLatest: the
     * answer lists it with the aliases that moved, as a PUT's does */
    if (plan->latest_moved && !listed_alias(plan, REGISTRY_LATEST))
        json_array_append_new(aliases, json_string(REGISTRY_LATEST));
    json_t *module =
        json_pack("{s:s, s:o, s:s, s:s, s:s, s:o}", "name", name, "hash", views_hash(result->hex),
                  "tag", result->tag, "file", file, "path", path, "aliases", aliases);
    if (alias)
        json_object_set_new(module, "alias", json_string(alias));
    return json_pack("{s:s, s:s, s:o}", "status", result->created ? "created" : "unchanged",
                     "strategyDirectory", catalog_root(api->opts.catalog), "module", module);
}

/* The upload's body parsed into *up and its source validated: the module's
 * metadata, or NULL with *up released. */
static json_t *parsed_and_validated(struct api *api, struct api_request *req,
                                    struct upload_request *up, struct err *err)
{
    json_t *metadata = parse_upload(req, up, err) == 0 ? validate_upload(api, up, err) : NULL;
    if (!metadata)
        upload_release(up);
    return metadata;
}

int api_handle_module_upload(struct api *api, struct api_request *req, struct api_response *res,
                             struct err *err)
{
    struct upload_request up;
    json_t *metadata = parsed_and_validated(api, req, &up, err);
    if (!metadata)
        return -1;
    const char *tag = up.tag ? up.tag : json_string_value(json_object_get(metadata, "tag"));
    struct upload_plan plan = {tag,          up.aliases, up.naliases, up.reassign,
                               up.nreassign, false,      false};
    struct catalog_upload_result result;
    int rc = store_upload(api, req, &up, metadata, &plan, &result, err);
    if (rc == 0) {
        const char *name = json_string_value(json_object_get(metadata, "name"));
        json_t *body =
            upload_response(api, name, &result, up.naliases ? up.aliases[0] : NULL, &plan);
        api_respond_json(res, result.created ? 201 : 200, body);
    }
    json_decref(metadata);
    upload_release(&up);
    return rc;
}

/* PUT updates an existing module (the contract): a selector whose strategy
 * does not exist is unknown, 404, and never creates one; POST does that. A
 * hash without a name is left to resolution, which says 404 itself. */
static int check_put_strategy(const struct registry *reg, const struct selector *sel,
                              struct err *err)
{
    if (!sel->name[0])
        return 0;
    const struct registry_strategy *st = registry_find_strategy(reg, sel->name);
    if (!st) {
        err_set(err, ERR_NOT_FOUND,
                "strategy '%s' not found: PUT updates an existing module (POST "
                "/strategies/modules adds a strategy)",
                sel->name);
        return -1;
    }
    /* a misspelt tag would otherwise be created while the one meant stays */
    if (sel->kind == SELECTOR_TAG && !registry_tag_target(st, sel->tag)) {
        err_set(err, ERR_NOT_FOUND,
                "strategy '%s' has no tag '%s': PUT moves an existing tag (a new one is added "
                "with the body's aliases)",
                sel->name, sel->tag);
        return -1;
    }
    return 0;
}

/* Answers 404 before the upload is validated (and its file written ahead). */
static int check_put_target(struct api *api, const struct selector *sel, struct err *err)
{
    struct registry *reg = catalog_snapshot(api->opts.catalog);
    int rc = check_put_strategy(reg, sel, err);
    registry_release(reg);
    return rc;
}

/* The tags the selector names, which the new revision takes over: name ->
 * latest, name:tag -> tag, name@hash -> every tag on the hash. The pointers
 * live as long as reg. */
static int put_selected_tags(const struct registry *reg, const struct selector *sel,
                             const char *name, const char **moved, size_t *nmoved, struct err *err)
{
    *nmoved = 0;
    if (sel->name[0] && strcmp(sel->name, name) != 0) {
        err_set(err, ERR_INVALID, "the source's metadata.name '%s' does not match '%s'", name,
                sel->name);
        return -1;
    }
    /* checked again: the strategy may have gone while the upload validated */
    if (check_put_strategy(reg, sel, err) != 0)
        return -1;
    if (sel->kind != SELECTOR_HASH) {
        moved[(*nmoved)++] = sel->tag;
        return 0;
    }
    struct registry_resolution r;
    if (registry_resolve(reg, sel, &r, err) != 0)
        return -1;
    for (size_t i = 0; i < r.strategy->ntags && *nmoved < MAX_TAG_LIST; i++) {
        if (strcmp(r.strategy->tags[i].hex, r.revision->hex) == 0)
            moved[(*nmoved)++] = r.strategy->tags[i].tag;
    }
    return 0;
}

static bool tag_listed(const char *tag, const char *const *list, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], tag) == 0)
            return true;
    }
    return false;
}

/* The aliases of a PUT, as POST applies them: the selector's tags, then the
 * body's `aliases` that are not among them, within one tag list's bound. */
static int put_aliases(const char *const *moved, size_t nmoved, const struct upload_request *up,
                       const char **aliases, size_t *naliases, struct err *err)
{
    *naliases = 0;
    for (size_t i = 0; i < nmoved; i++)
        aliases[(*naliases)++] = moved[i];
    for (size_t i = 0; i < up->naliases; i++) {
        if (tag_listed(up->aliases[i], aliases, *naliases))
            continue;
        if (*naliases == MAX_TAG_LIST) {
            err_set(err, ERR_INVALID,
                    "aliases: at most %d tags, counting the %zu the selector moves", MAX_TAG_LIST,
                    nmoved);
            err_add_detail(err, "field", json_string("aliases"));
            return -1;
        }
        aliases[(*naliases)++] = up->aliases[i];
    }
    return 0;
}

/* PUT /strategies/modules/{selector}: a new revision of an existing strategy
 * that takes over the selector's tag(s) (put_selected_tags) and the body's
 * aliases. */
int api_handle_module_put(struct api *api, struct api_request *req, struct api_response *res,
                          struct err *err)
{
    struct selector sel;
    if (selector_parse(req->params[0], &sel, err) != 0 || check_put_target(api, &sel, err) != 0)
        return -1;
    struct upload_request up;
    json_t *metadata = parsed_and_validated(api, req, &up, err);
    if (!metadata)
        return -1;
    const char *name = json_string_value(json_object_get(metadata, "name"));
    struct registry *reg = catalog_snapshot(api->opts.catalog);
    const char *moved[MAX_TAG_LIST], *aliases[MAX_TAG_LIST];
    size_t nmoved = 0, naliases = 0;
    int rc = -1;
    if (put_selected_tags(reg, &sel, name, moved, &nmoved, err) != 0 ||
        put_aliases(moved, nmoved, &up, aliases, &naliases, err) != 0)
        goto out;
    const char *meta_tag = json_string_value(json_object_get(metadata, "tag"));
    const char *tag = up.tag ? up.tag : meta_tag ? meta_tag : nmoved ? moved[0] : NULL;
    /* The selector's tags move by definition of PUT: allow them to leave
     * their revision, along with any the request lists. */
    const char *reassign[2 * MAX_TAG_LIST];
    size_t nreassign = 0;
    for (size_t i = 0; i < up.nreassign; i++)
        reassign[nreassign++] = up.reassign[i];
    for (size_t i = 0; i < nmoved; i++)
        reassign[nreassign++] = moved[i];
    struct upload_plan plan = {tag, aliases, naliases, reassign, nreassign, true, false};
    struct catalog_upload_result result;
    rc = store_upload(api, req, &up, metadata, &plan, &result, err);
    if (rc == 0)
        api_respond_json(res, 200,
                         upload_response(api, name, &result, nmoved ? moved[0] : NULL, &plan));
out:
    registry_release(reg);
    json_decref(metadata);
    upload_release(&up);
    return rc;
}

/* The revision a delete names. Unlike resolution for use, an invalid
 * revision (missing file, wrong bytes) can be named: deleting it is how an
 * operator cleans it up. */
static int find_for_delete(const struct registry *reg, const struct selector *sel,
                           char name[NAMES_STRATEGY_MAX + 1], char hex[HASH_HEX_LEN + 1],
                           struct err *err)
{
    struct registry_resolution r;
    struct err resolve_err = ERR_INIT;
    if (registry_resolve(reg, sel, &r, &resolve_err) == 0) {
        snprintf(name, NAMES_STRATEGY_MAX + 1, "%s", r.strategy->name);
        snprintf(hex, HASH_HEX_LEN + 1, "%s", r.revision->hex);
        return 0;
    }
    const struct registry_strategy *st =
        sel->name[0] ? registry_find_strategy(reg, sel->name) : NULL;
    const char *found = NULL;
    size_t matches = 0;
    if (st && sel->kind == SELECTOR_TAG) {
        found = registry_tag_target(st, sel->tag);
        matches = found ? 1 : 0;
    } else if (st && sel->kind == SELECTOR_HASH) {
        for (size_t i = 0; i < st->nrevisions; i++) {
            if (strncmp(st->revisions[i].hex, sel->hex, sel->hex_len) == 0) {
                found = st->revisions[i].hex;
                matches++;
            }
        }
    }
    if (matches != 1 || resolve_err.kind != ERR_CONFLICT) {
        err_move(err, &resolve_err);
        return -1;
    }
    err_clear(&resolve_err);
    snprintf(name, NAMES_STRATEGY_MAX + 1, "%s", st->name);
    snprintf(hex, HASH_HEX_LEN + 1, "%s", found);
    return 0;
}

int api_handle_module_delete(struct api *api, struct api_request *req, struct api_response *res,
                             struct err *err)
{
    struct selector sel;
    if (selector_parse(req->params[0], &sel, err) != 0)
        return -1;
    struct registry *reg = catalog_snapshot(api->opts.catalog);
    char name[NAMES_STRATEGY_MAX + 1], hex[HASH_HEX_LEN + 1] = "";
    /* the tags this delete took or moved, as the catalogue saw them */
    struct catalog_change change = {NULL, NULL};
    int rc;
    bool whole = sel.kind == SELECTOR_LATEST &&
                 !(sel.may_be_prefix && !registry_find_strategy(reg, sel.name));
    if (whole) {
        snprintf(name, sizeof name, "%s", sel.name);
        registry_release(reg);
        rc = catalog_delete_strategy_noting(api->opts.catalog, name, runtime_delete_guard,
                                            api->opts.runtime, &change, err);
        runtime_delete_finished(api->opts.runtime, name, NULL);
        if (rc == 0 || catalog_error_published(err))
            runtime_forget_revision(api->opts.runtime, name, NULL);
    } else {
        rc = find_for_delete(reg, &sel, name, hex, err);
        registry_release(reg);
        if (rc == 0) {
            rc = catalog_delete_revision_noting(api->opts.catalog, name, hex, runtime_delete_guard,
                                                api->opts.runtime, &change, err);
            runtime_delete_finished(api->opts.runtime, name, hex);
            if (rc == 0 || catalog_error_published(err))
                runtime_forget_revision(api->opts.runtime, name, hex);
        }
    }
    /* a delete published though its write failed is audited too */
    if (rc != 0 && !catalog_error_published(err))
        return -1;
    api_audit(api, req, hex[0] ? "module.deleteRevision" : "module.deleteStrategy",
              hex[0] ? json_pack("{s:s, s:o}", "strategy", name, "hash", views_hash(hex))
                     : json_pack("{s:s}", "strategy", name));
    api_audit_tag_changes(api, req, change.before, change.after, name);
    catalog_change_release(&change);
    res->status = 204;
    return rc;
}
