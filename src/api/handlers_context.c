/*
 * The context backup: GET /context/backup exports what an operator set up
 * on a gateway (providers, lambdas = instance specs, the risk config) as a
 * ContextBackupPayload; POST /context/backup restores one.
 *
 * A restore checks the whole payload before it changes anything: each
 * provider as POST /providers would, each lambda as POST
 * /strategy/instances would (its selector resolved now, its scope against
 * the providers as they will be once the backup's are in place). Only then
 * does it apply, in this order: the risk config (whose own check is its
 * application, so it goes first, while nothing else has changed), the
 * providers, the lambdas. It adds and updates; it never deletes, and it
 * starts nothing that did not run (a created instance is stopped, an
 * updated one keeps running or stays stopped). What already matches is
 * left alone, so a second restore of the same backup changes nothing.
 */
#include "api/internal.h"

#include "core/jsonutil.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ export */

/* The providers, sorted by name (market_providers_json's order). */
static json_t *export_providers(struct api *api, struct err *err)
{
    json_t *views = market_providers_json(api->opts.market);
    json_t *out = json_array();
    bool ok = views && out;
    size_t i;
    json_t *view;
    json_array_foreach(json_object_get(views, "providers"), i, view)
    {
        if (ok)
            ok = json_array_append_new(out, api_provider_request_of(view)) == 0;
    }
    json_decref(views);
    if (!ok) {
        json_decref(out);
        err_set(err, ERR_INTERNAL, "out of memory exporting the providers");
        return NULL;
    }
    return out;
}

/* An instance's InstanceSpec: the members of its snapshot that are its
 * spec. 0 with *spec NULL when the instance went away since the listing. */
static int lambda_of(struct api *api, const char *id, json_t **spec, struct err *err)
{
    struct err e = ERR_INIT;
    *spec = NULL;
    json_t *snap = runtime_instance_snapshot(api->opts.runtime, id, &e);
    if (!snap) {
        int rc = e.kind == ERR_NOT_FOUND ? 0 : -1;
        if (rc != 0)
            err_move(err, &e);
        err_clear(&e);
        return rc;
    }
    *spec = json_pack("{s:O, s:O, s:O}", "id", json_object_get(snap, "id"), "strategy",
                      json_object_get(snap, "strategy"), "scope", json_object_get(snap, "scope"));
    json_decref(snap);
    if (!*spec) {
        err_set(err, ERR_INTERNAL, "out of memory exporting instance %s", id);
        return -1;
    }
    return 0;
}

/* Every instance's spec, sorted by id (the listing's order). */
static json_t *export_lambdas(struct api *api, struct err *err)
{
    json_t *list = runtime_instances_json(api->opts.runtime);
    json_t *out = json_array();
    int rc = list && out ? 0 : -1;
    if (rc != 0)
        err_set(err, ERR_INTERNAL, "out of memory exporting the instances");
    size_t i;
    json_t *summary;
    json_array_foreach(json_object_get(list, "instances"), i, summary)
    {
        json_t *spec = NULL;
        if (rc == 0)
            rc = lambda_of(api, json_string_value(json_object_get(summary, "id")), &spec, err);
        if (rc == 0 && spec && json_array_append_new(out, spec) != 0) {
            err_set(err, ERR_INTERNAL, "out of memory exporting the instances");
            rc = -1;
        }
    }
    json_decref(list);
    if (rc != 0) {
        json_decref(out);
        return NULL;
    }
    return out;
}

static json_t *export_context(struct api *api, struct err *err)
{
    json_t *providers = export_providers(api, err);
    json_t *lambdas = providers ? export_lambdas(api, err) : NULL;
    json_t *risk = lambdas ? market_risk_json(api->opts.market) : NULL;
    if (lambdas && !risk)
        err_set(err, ERR_INTERNAL, "out of memory exporting the risk config");
    if (!risk) {
        json_decref(providers);
        json_decref(lambdas);
        return NULL;
    }
    json_t *doc =
        json_pack("{s:o, s:o, s:o}", "providers", providers, "lambdas", lambdas, "risk", risk);
    if (!doc)
        err_set(err, ERR_INTERNAL, "out of memory exporting the context");
    return doc;
}

int api_handle_context_export(struct api *api, struct api_request *req, struct api_response *res,
                              struct err *err)
{
    (void)req;
    json_t *doc = export_context(api, err);
    if (!doc)
        return -1;
    api_respond_json(res, 200, doc);
    return 0;
}

/* ------------------------------------------------------------ the plan */

enum restore_action { RESTORE_CREATE, RESTORE_UPDATE, RESTORE_UNCHANGED };

/* One provider or lambda of the backup: its name or id, the spec to apply
 * (checked and in the gateway's own form) and what it takes. */
struct restore_item {
    const char *key; /* inside spec */
    json_t *spec;
    enum restore_action action;
};

struct restore_list {
    struct restore_item *items;
    size_t n;
};

struct restore_plan {
    struct restore_list providers, lambdas;
    const json_t *risk; /* borrowed from the body */
};

static void list_free(struct restore_list *l)
{
    for (size_t i = 0; i < l->n; i++)
        json_decref(l->items[i].spec);
    free(l->items);
    *l = (struct restore_list){0};
}

static void plan_free(struct restore_plan *p)
{
    list_free(&p->providers);
    list_free(&p->lambdas);
}

static int list_alloc(struct restore_list *l, size_t n, struct err *err)
{
    l->items = calloc(n ? n : 1, sizeof *l->items);
    if (!l->items) {
        err_set(err, ERR_INTERNAL, "out of memory planning the restore");
        return -1;
    }
    return 0;
}

/* The index of key in the first n items, or n. */
static size_t list_find(const struct restore_list *l, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(l->items[i].key, key) == 0)
            return i;
    }
    return n;
}

/* Restates a failure of element `where` ("lambdas[3]") for the restore,
 * with details.field the element's path to the offending member: the
 * member the check named appended to `where`, else `fallback` appended.
 * The check's message loses its own "field: " prefix, which the path
 * replaces. The other details stay. A check's refusal is the payload's
 * fault (400) whatever its own status; failures of the gateway (out of
 * memory, a disk) and, when keep_kind, every failure keep their kind. */
static int element_error(struct err *err, struct err *inner, const char *where,
                         const char *fallback, bool keep_kind)
{
    enum err_kind kind = inner->kind;
    if (!keep_kind && kind != ERR_INTERNAL && kind != ERR_NO_SPACE && kind != ERR_UNAVAILABLE)
        kind = ERR_INVALID;
    const char *field = json_string_value(json_object_get(inner->details, "field"));
    char path[256];
    snprintf(path, sizeof path, "%s%s%s", where, field ? "." : "", field ? field : fallback);
    const char *message = inner->message;
    size_t len = field ? strlen(field) : 0;
    if (field && strncmp(message, field, len) == 0 && strncmp(message + len, ": ", 2) == 0)
        message += len + 2;
    json_t *details = inner->details ? json_deep_copy(inner->details) : json_object();
    json_object_set_new(details, "field", json_string(path));
    err_set(err, kind, "%s: %s", path, message);
    err_set_details(err, details);
    err_clear(inner);
    return -1;
}

static int shape_error(struct err *err, const char *field, const char *why)
{
    err_set(err, ERR_INVALID, "%s: %s", field, why);
    err_add_detail(err, "field", json_string(field));
    return -1;
}

static int check_shape(const json_t *body, struct err *err)
{
    /* a section this gateway does not restore is refused, not dropped */
    static const char *const sections[] = {"providers", "lambdas", "risk"};
    if (api_body_known_keys(body, sections, 3, "a backup", err) != 0)
        return -1;
    if (!json_is_array(json_object_get(body, "providers")))
        return shape_error(err, "providers", "required array of ProviderRequest");
    if (!json_is_array(json_object_get(body, "lambdas")))
        return shape_error(err, "lambdas", "required array of InstanceSpec");
    if (!json_is_object(json_object_get(body, "risk")))
        return shape_error(err, "risk", "required RiskConfig object");
    return 0;
}

/* The current specs by name or id, to compare the backup's with. */
static json_t *index_by(const json_t *list, const char *key)
{
    json_t *index = json_object();
    size_t i;
    json_t *item;
    bool ok = index != NULL;
    json_array_foreach(list, i, item)
    {
        if (ok)
            ok = json_object_set(index, json_string_value(json_object_get(item, key)), item) == 0;
    }
    if (!ok) {
        json_decref(index);
        return NULL;
    }
    return index;
}

static enum restore_action action_for(const json_t *current, const json_t *spec)
{
    if (!current)
        return RESTORE_CREATE;
    return json_equal(current, spec) ? RESTORE_UNCHANGED : RESTORE_UPDATE;
}

/* Checks providers[i]: a ProviderRequest, its name not repeated. */
static int plan_provider(const json_t *request, size_t i, const json_t *current,
                         struct restore_list *l, struct err *err)
{
    char where[48];
    snprintf(where, sizeof where, "providers[%zu]", i);
    struct err e = ERR_INIT;
    json_t *spec = json_is_object(request) ? market_provider_request_canonical(request, &e) : NULL;
    if (!spec && !json_is_object(request))
        return shape_error(err, where, "expected a ProviderRequest object");
    if (!spec) {
        /* an unknown adapter is named in details.adapter, not details.field */
        bool adapter = json_object_get(e.details, "adapter") != NULL;
        return element_error(err, &e, where, adapter ? ".adapter.identifier" : "", false);
    }
    struct restore_item *item = &l->items[l->n];
    item->spec = spec;
    item->key = json_string_value(json_object_get(spec, "name"));
    size_t first = list_find(l, l->n, item->key);
    if (first < l->n) {
        json_decref(spec);
        item->spec = NULL;
        char field[64];
        snprintf(field, sizeof field, "%s.name", where);
        err_set(err, ERR_INVALID, "%s: provider '%s' is already providers[%zu]", field,
                json_string_value(json_object_get(request, "name")), first);
        err_add_detail(err, "field", json_string(field));
        return -1;
    }
    item->action = action_for(json_object_get(current, item->key), spec);
    l->n++;
    return 0;
}

static int plan_providers(struct api *api, const json_t *requests, struct restore_list *l,
                          struct err *err)
{
    json_t *exported = export_providers(api, err);
    json_t *current = exported ? index_by(exported, "name") : NULL;
    json_decref(exported);
    if (!current) {
        err_set(err, ERR_INTERNAL, "out of memory planning the restore");
        return -1;
    }
    int rc = list_alloc(l, json_array_size(requests), err);
    size_t i;
    json_t *request;
    json_array_foreach(requests, i, request)
    {
        if (rc == 0)
            rc = plan_provider(request, i, current, l, err);
    }
    json_decref(current);
    return rc;
}

/* The providers a lambda's scope will meet: the backup's (their canonical
 * config lists their symbols), else the gateway's. */
struct future_providers {
    struct market *market;
    const struct restore_list *backup;
};

static bool future_scope(void *ctx, const char *provider, const char *symbol)
{
    const struct future_providers *f = ctx;
    size_t i = list_find(f->backup, f->backup->n, provider);
    if (i == f->backup->n)
        return symbol ? market_has_symbol(f->market, provider, symbol)
                      : market_has_provider(f->market, provider);
    if (!symbol)
        return true;
    const json_t *config =
        json_object_get(json_object_get(f->backup->items[i].spec, "adapter"), "config");
    size_t j;
    json_t *s;
    json_array_foreach(json_object_get(config, "symbols"), j, s)
    {
        if (strcmp(json_string_value(s), symbol) == 0)
            return true;
    }
    return false;
}

/* Where a failure of lambdas[i] is: the runtime names the members of the
 * strategy's config from the strategy object ("config.lookback"), the rest
 * from the spec ("strategy.selector", "scope.sim.symbols"). */
static void lambda_where(char *where, size_t size, size_t i, const struct err *inner)
{
    const char *field = json_string_value(json_object_get(inner->details, "field"));
    bool config = field && strncmp(field, "config", 6) == 0 && (!field[6] || field[6] == '.');
    snprintf(where, size, "lambdas[%zu]%s", i, config ? ".strategy" : "");
}

/* Checks lambdas[i]: an InstanceSpec whose selector resolves now and whose
 * scope names providers and symbols that will exist, its id not repeated.
 * A lambda equal to the instance's stored spec is left as it is without a
 * check: it is what the gateway runs (its selector may have moved on since
 * it was pinned, which a new resolution would refuse). */
static int plan_lambda(struct api *api, const json_t *spec, size_t i, const json_t *current,
                       struct future_providers *future, struct restore_list *l, struct err *err)
{
    char where[48];
    snprintf(where, sizeof where, "lambdas[%zu]", i);
    if (!json_is_object(spec))
        return shape_error(err, where, "expected an InstanceSpec object");
    const char *id = json_string_value(json_object_get(spec, "id"));
    const json_t *stored = id ? json_object_get(current, id) : NULL;
    json_t *resolved = NULL;
    if (stored && json_equal(stored, spec)) {
        resolved = json_incref((json_t *)stored);
    } else {
        struct err e = ERR_INIT;
        if (runtime_instance_spec_resolve(api->opts.runtime, spec, future_scope, future, &resolved,
                                          &e) != 0) {
            lambda_where(where, sizeof where, i, &e);
            return element_error(err, &e, where, ".strategy", false);
        }
    }
    struct restore_item *item = &l->items[l->n];
    item->spec = resolved;
    item->key = json_string_value(json_object_get(resolved, "id"));
    size_t first = list_find(l, l->n, item->key);
    if (first < l->n) {
        char field[64];
        snprintf(field, sizeof field, "%s.id", where);
        err_set(err, ERR_INVALID, "%s: instance '%s' is already lambdas[%zu]", field, item->key,
                first);
        err_add_detail(err, "field", json_string(field));
        json_decref(resolved);
        item->spec = NULL;
        return -1;
    }
    item->action = action_for(json_object_get(current, item->key), resolved);
    l->n++;
    return 0;
}

static int plan_lambdas(struct api *api, const json_t *specs, struct restore_plan *p,
                        struct err *err)
{
    json_t *exported = export_lambdas(api, err);
    if (!exported)
        return -1;
    json_t *current = index_by(exported, "id");
    json_decref(exported);
    if (!current) {
        err_set(err, ERR_INTERNAL, "out of memory planning the restore");
        return -1;
    }
    struct future_providers future = {api->opts.market, &p->providers};
    int rc = list_alloc(&p->lambdas, json_array_size(specs), err);
    size_t i;
    json_t *spec;
    json_array_foreach(specs, i, spec)
    {
        if (rc == 0)
            rc = plan_lambda(api, spec, i, current, &future, &p->lambdas, err);
    }
    json_decref(current);
    return rc;
}

/* Everything the restore checks before it changes anything. */
static int plan_restore(struct api *api, const json_t *body, struct restore_plan *p,
                        struct err *err)
{
    *p = (struct restore_plan){0};
    if (check_shape(body, err) != 0)
        return -1;
    p->risk = json_object_get(body, "risk");
    if (plan_providers(api, json_object_get(body, "providers"), &p->providers, err) != 0 ||
        plan_lambdas(api, json_object_get(body, "lambdas"), p, err) != 0) {
        plan_free(p);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------ applying */

/* How far the restore got: risk applied, then providers[0..providers) and
 * lambdas[0..lambdas) dealt with. */
struct restore_progress {
    bool risk;
    size_t providers, lambdas;
};

/* {created: [keys], updated: [keys], unchanged: n} of the first `done`
 * items, for the audit and for an error's details. */
static json_t *list_changes(const struct restore_list *l, size_t done)
{
    json_t *created = json_array(), *updated = json_array();
    json_int_t unchanged = 0;
    for (size_t i = 0; i < done; i++) {
        const struct restore_item *item = &l->items[i];
        if (item->action == RESTORE_UNCHANGED)
            unchanged++;
        else
            json_array_append_new(item->action == RESTORE_CREATE ? created : updated,
                                  json_string(item->key));
    }
    return json_pack("{s:o, s:o, s:I}", "created", created, "updated", updated, "unchanged",
                     unchanged);
}

static json_t *progress_json(const struct restore_plan *p, const struct restore_progress *done)
{
    return json_pack("{s:b, s:o, s:o}", "risk", done->risk, "providers",
                     list_changes(&p->providers, done->providers), "lambdas",
                     list_changes(&p->lambdas, done->lambdas));
}

/* Creates or updates one provider as POST or PUT /providers would,
 * persisted so that it survives a restart. */
static int apply_provider(struct api *api, const struct restore_item *item, struct err *err)
{
    if (item->action == RESTORE_UNCHANGED)
        return 0;
    return api_provider_put(api, item->key, item->spec, item->action != RESTORE_UPDATE, NULL, err);
}

/* Creates (stopped) or updates one instance as POST or PUT
 * /strategy/instances would. The resolved spec pins the hash checked in
 * the plan: a tag moved since then is refused rather than followed. */
static int apply_lambda(struct api *api, const struct restore_item *item, struct err *err)
{
    struct runtime *rt = api->opts.runtime;
    if (item->action == RESTORE_UNCHANGED)
        return 0;
    if (item->action == RESTORE_UPDATE)
        return runtime_instance_update(rt, item->key, item->spec, NULL, err);
    return runtime_instance_create(rt, item->spec, NULL, err);
}

/* Applies risk, providers, lambdas; on a failure err says where (details
 * field), and `done` what was applied before it. */
static int apply_restore(struct api *api, const struct restore_plan *p,
                         struct restore_progress *done, struct err *err)
{
    struct err e = ERR_INIT;
    if (market_risk_set(api->opts.market, p->risk, NULL, &e) != 0)
        return element_error(err, &e, "risk", "", false);
    done->risk = true;
    char where[48];
    for (; done->providers < p->providers.n; done->providers++) {
        if (apply_provider(api, &p->providers.items[done->providers], &e) != 0) {
            snprintf(where, sizeof where, "providers[%zu]", done->providers);
            return element_error(err, &e, where, "", true);
        }
    }
    for (; done->lambdas < p->lambdas.n; done->lambdas++) {
        if (apply_lambda(api, &p->lambdas.items[done->lambdas], &e) != 0) {
            lambda_where(where, sizeof where, done->lambdas, &e);
            return element_error(err, &e, where, "", true);
        }
    }
    return 0;
}

static json_t *counts_json(const struct restore_list *l)
{
    json_int_t n[3] = {0, 0, 0};
    for (size_t i = 0; i < l->n; i++)
        n[l->items[i].action]++;
    return json_pack("{s:I, s:I, s:I}", "created", n[RESTORE_CREATE], "updated", n[RESTORE_UPDATE],
                     "unchanged", n[RESTORE_UNCHANGED]);
}

/* Two restores at once would each plan against a gateway the other is
 * changing (both creating the same provider, say): one at a time. */
static pthread_mutex_t restore_lock = PTHREAD_MUTEX_INITIALIZER;

int api_handle_context_restore(struct api *api, struct api_request *req, struct api_response *res,
                               struct err *err)
{
    json_t *body = NULL;
    if (api_body_object(req, false, &body, err) != 0)
        return -1;
    pthread_mutex_lock(&restore_lock);
    struct restore_plan plan;
    struct restore_progress done = {0};
    int rc = plan_restore(api, body, &plan, err);
    if (rc == 0)
        rc = apply_restore(api, &plan, &done, err);
    if (rc != 0 && done.risk) {
        /* changed, but not all: say what, to the client and the audit */
        err_add_detail(err, "applied", progress_json(&plan, &done));
        api_audit(api, req, "context.restore",
                  json_pack("{s:o, s:O, s:s}", "applied", progress_json(&plan, &done), "risk",
                            plan.risk, "error", err->message));
    } else if (rc == 0) {
        done.providers = plan.providers.n;
        done.lambdas = plan.lambdas.n;
        api_audit(
            api, req, "context.restore",
            json_pack("{s:o, s:O}", "applied", progress_json(&plan, &done), "risk", plan.risk));
        api_respond_json(res, 200,
                         json_pack("{s:s, s:o, s:o, s:s}", "status", "restored", "providers",
                                   counts_json(&plan.providers), "lambdas",
                                   counts_json(&plan.lambdas), "risk", "applied"));
    }
    plan_free(&plan);
    pthread_mutex_unlock(&restore_lock);
    json_decref(body);
    return rc;
}
