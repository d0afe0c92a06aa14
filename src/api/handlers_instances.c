/* Instances, providers and adapters: thin adapters from HTTP to the runtime
 * and the market, plus the order and execution history from the store. */
#include "api/internal.h"

#include "core/jsonutil.h"
#include "core/log.h"
#include "core/names.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ instances */

int api_handle_instances_list(struct api *api, struct api_request *req, struct api_response *res,
                              struct err *err)
{
    (void)req;
    (void)err;
    api_respond_json(res, 200, runtime_instances_json(api->opts.runtime));
    return 0;
}

int api_handle_instance_get(struct api *api, struct api_request *req, struct api_response *res,
                            struct err *err)
{
    size_t len = 0;
    char *text = runtime_instance_snapshot_text(api->opts.runtime, req->params[0], &len, err);
    if (!text)
        return -1;
    res->status = 200;
    res->body = text;
    res->body_len = len;
    res->content_type = "application/json";
    return 0;
}

int api_handle_instance_create(struct api *api, struct api_request *req, struct api_response *res,
                               struct err *err)
{
    json_t *body = NULL, *snap = NULL;
    if (api_body_object(req, false, &body, err) != 0)
        return -1;
    int rc = runtime_instance_create(api->opts.runtime, body, &snap, err);
    if (rc == 0) {
        api_audit(api, req, "instance.create", json_pack("{s:O}", "spec", body));
        api_respond_json(res, 201, snap);
    }
    json_decref(body);
    return rc;
}

int api_handle_instance_update(struct api *api, struct api_request *req, struct api_response *res,
                               struct err *err)
{
    json_t *body = NULL, *snap = NULL;
    if (api_body_object(req, false, &body, err) != 0)
        return -1;
    const char *id = req->params[0];
    const char *body_id = NULL;
    int rc = -1;
    if (jsonutil_get_string(body, "id", &body_id, err) < 0)
        goto out;
    if (body_id && strcmp(body_id, id) != 0) {
        err_set(err, ERR_INVALID, "id: the body names '%s' but the path names '%s'", body_id, id);
        err_add_detail(err, "field", json_string("id"));
        goto out;
    }
    /* for the audit: the revision and scope the update replaced */
    struct err ignored = ERR_INIT;
    json_t *before = runtime_instance_snapshot(api->opts.runtime, id, &ignored);
    err_clear(&ignored);
    rc = runtime_instance_update(api->opts.runtime, id, body, &snap, err);
    if (rc == 0) {
        api_audit(api, req, "instance.update",
                  json_pack("{s:s, s:{s:O?, s:O?}, s:O}", "id", id, "from", "strategy",
                            json_object_get(before, "strategy"), "scope",
                            json_object_get(before, "scope"), "spec", body));
        api_respond_json(res, 200, snap);
    }
    json_decref(before);
out:
    json_decref(body);
    return rc;
}

int api_handle_instance_delete(struct api *api, struct api_request *req, struct api_response *res,
                               struct err *err)
{
    const char *id = req->params[0];
    if (runtime_instance_delete(api->opts.runtime, id, err) != 0)
        return -1;
    api_audit(api, req, "instance.delete", json_pack("{s:s}", "id", id));
    api_respond_json(res, 200, json_pack("{s:s, s:s}", "status", "deleted", "id", id));
    return 0;
}

/* A stop's `cancelOrders` pulls the instance's resting orders too. */
static int instance_action(struct api *api, struct api_request *req, struct api_response *res,
                           bool start, struct err *err)
{
    const char *id = req->params[0];
    bool changed = false, cancel_orders = false;
    if (!start && api_query_bool(req, "cancelOrders", &cancel_orders, err) != 0)
        return -1;
    int rc = start ? runtime_instance_start_noting(api->opts.runtime, id, &changed, err)
             : cancel_orders
                 ? runtime_instance_stop_cancelling(api->opts.runtime, id, &changed, err)
                 : runtime_instance_stop_noting(api->opts.runtime, id, &changed, err);
    if (rc != 0)
        return -1;
    /* the audit log records changes: a start of a running instance is none */
    if (changed)
        api_audit(api, req, start ? "instance.start" : "instance.stop",
                  cancel_orders ? json_pack("{s:s, s:b}", "id", id, "cancelOrders", 1)
                                : json_pack("{s:s}", "id", id));
    api_respond_json(res, 200,
                     json_pack("{s:s, s:s, s:s}", "id", id, "status", start ? "running" : "stopped",
                               "action", start ? "start" : "stop"));
    return 0;
}

int api_handle_instance_start(struct api *api, struct api_request *req, struct api_response *res,
                              struct err *err)
{
    return instance_action(api, req, res, true, err);
}

int api_handle_instance_stop(struct api *api, struct api_request *req, struct api_response *res,
                             struct err *err)
{
    return instance_action(api, req, res, false, err);
}

#define PAGE_MAX 10000

/* `limit`: 100 by default, 1 to PAGE_MAX; above it a 400 that says `how`
 * to get more. */
static int page_limit(const struct api_request *req, const char *how, int *limit, struct err *err)
{
    long long value = 100;
    if (api_query_int(req, "limit", 1, &value, err) != 0)
        return -1;
    if (value > PAGE_MAX) {
        err_set(err, ERR_INVALID, "limit %lld is above %d: %s", value, PAGE_MAX, how);
        err_add_detail(err, "parameter", json_string("limit"));
        return -1;
    }
    *limit = (int)value;
    return 0;
}

static int history_query(struct api *api, struct api_request *req, struct store_order_query *q,
                         struct err *err)
{
    memset(q, 0, sizeof *q);
    q->instance_id = req->params[0];
    if (!runtime_instance_exists(api->opts.runtime, q->instance_id)) {
        err_set(err, ERR_NOT_FOUND, "instance '%s' not found", q->instance_id);
        return -1;
    }
    if (page_limit(req, "read on with the page's `next`", &q->limit, err) != 0)
        return -1;
    q->provider = api_query(req, "provider");
    q->order_id = api_query(req, "orderId");
    q->before = api_query(req, "before");
    return 0;
}

/* {<list>: records, count, next}: next is the `before` of the page after
 * this one, null at the end. */
static void respond_history(struct api_response *res, const char *list, json_t *records,
                            const char *next)
{
    api_respond_json(res, 200,
                     json_pack("{s:o, s:I, s:o}", list, records, "count",
                               (json_int_t)json_array_size(records), "next",
                               next[0] ? json_string(next) : json_null()));
}

/* A misspelt state would otherwise match nothing and read as "no orders". */
static int check_states(const char *const *states, size_t n, struct err *err)
{
    for (size_t i = 0; i < n; i++) {
        enum exec_status s = EXEC_ACKNOWLEDGED;
        while (s <= EXEC_EXPIRED && strcmp(states[i], event_exec_status_name(s)) != 0)
            s++;
        if (s > EXEC_EXPIRED) {
            err_set(err, ERR_INVALID,
                    "state '%s' is not an order state (acknowledged, partiallyFilled, filled, "
                    "cancelled, rejected, expired)",
                    states[i]);
            err_add_detail(err, "parameter", json_string("state"));
            return -1;
        }
    }
    return 0;
}

int api_handle_instance_orders(struct api *api, struct api_request *req, struct api_response *res,
                               struct err *err)
{
    struct store_order_query q;
    if (history_query(api, req, &q, err) != 0)
        return -1;
    const char *states[16];
    char states_text[256]; /* 16 of the longest state, partiallyFilled */
    int nstates = api_query_all(req, "state", states, 16, states_text, sizeof states_text, err);
    if (nstates < 0 || check_states(states, (size_t)nstates, err) != 0)
        return -1;
    q.states = states;
    q.nstates = (size_t)nstates;
    json_t *orders = NULL;
    char next[STORE_CURSOR_MAX];
    if (store_orders_page(api->opts.store, &q, &orders, next, err) != 0)
        return -1;
    respond_history(res, "orders", orders, next);
    return 0;
}

int api_handle_instance_executions(struct api *api, struct api_request *req,
                                   struct api_response *res, struct err *err)
{
    struct store_order_query q;
    if (history_query(api, req, &q, err) != 0)
        return -1;
    json_t *executions = NULL;
    char next[STORE_CURSOR_MAX];
    if (store_executions_page(api->opts.store, &q, &executions, next, err) != 0)
        return -1;
    respond_history(res, "executions", executions, next);
    return 0;
}

/* ------------------------------------------------------------ providers */

int api_handle_providers_list(struct api *api, struct api_request *req, struct api_response *res,
                              struct err *err)
{
    (void)req;
    (void)err;
    api_respond_json(res, 200, market_providers_json(api->opts.market));
    return 0;
}

int api_handle_provider_get(struct api *api, struct api_request *req, struct api_response *res,
                            struct err *err)
{
    json_t *p = market_provider_json(api->opts.market, req->params[0], err);
    if (!p)
        return -1;
    api_respond_json(res, 200, p);
    return 0;
}

static int persist_provider(struct api *api, const char *name, const json_t *spec, struct err *err)
{
    if (!api->opts.store)
        return 0;
    return spec ? store_provider_put(api->opts.store, name, spec, err)
                : store_provider_delete(api->opts.store, name, err);
}

json_t *api_provider_request_of(const json_t *view)
{
    return json_pack("{s:O, s:{s:O, s:O}, s:b}", "name", json_object_get(view, "name"), "adapter",
                     "identifier", json_object_get(view, "identifier"), "config",
                     json_object_get(view, "settings"), "enabled",
                     json_is_true(json_object_get(view, "running")));
}

/* The request that brings the provider back as it is now, or NULL. */
static json_t *current_request(struct api *api, const char *name)
{
    struct err ignored = ERR_INIT;
    json_t *view = market_provider_json(api->opts.market, name, &ignored);
    err_clear(&ignored);
    json_t *request = view ? api_provider_request_of(view) : NULL;
    json_decref(view);
    return request;
}

enum provider_change { PROVIDER_CREATED, PROVIDER_UPDATED, PROVIDER_DELETED };

/* Puts the market back after a change the store would not record, so that
 * what runs is what a restart brings back. previous: the request of the
 * provider before the change (NULL for a creation). */
static void undo_provider(struct api *api, const char *name, const json_t *previous,
                          enum provider_change change)
{
    struct err e = ERR_INIT;
    int rc = -1;
    if (change == PROVIDER_CREATED)
        rc = market_provider_delete(api->opts.market, name, &e);
    else if (previous && change == PROVIDER_UPDATED)
        rc = market_provider_update(api->opts.market, name, previous, NULL, &e);
    else if (previous)
        rc = market_provider_create(api->opts.market, previous, NULL, &e);
    if (rc != 0)
        log_error("api", "provider %s differs from the stored one until a restart: %s", name,
                  e.message);
    err_clear(&e);
}

int api_provider_put(struct api *api, const char *name, const json_t *request, bool create,
                     json_t **detail, struct err *err)
{
    json_t *previous = create ? NULL : current_request(api, name);
    int rc = create ? market_provider_create(api->opts.market, request, detail, err)
                    : market_provider_update(api->opts.market, name, request, detail, err);
    if (rc == 0 && persist_provider(api, name, request, err) != 0) {
        undo_provider(api, name, previous, create ? PROVIDER_CREATED : PROVIDER_UPDATED);
        if (detail) {
            json_decref(*detail);
            *detail = NULL;
        }
        rc = -1;
    }
    json_decref(previous);
    return rc;
}

int api_handle_provider_create(struct api *api, struct api_request *req, struct api_response *res,
                               struct err *err)
{
    json_t *body = NULL, *detail = NULL;
    if (api_body_object(req, false, &body, err) != 0)
        return -1;
    const char *name = json_string_value(json_object_get(body, "name"));
    int rc = api_provider_put(api, name, body, true, &detail, err);
    if (rc == 0) {
        api_audit(api, req, "provider.create", json_pack("{s:O}", "spec", body));
        api_respond_json(res, 202, detail);
    }
    json_decref(body);
    return rc;
}

int api_handle_provider_update(struct api *api, struct api_request *req, struct api_response *res,
                               struct err *err)
{
    json_t *body = NULL, *detail = NULL;
    if (api_body_object(req, false, &body, err) != 0)
        return -1;
    const char *name = req->params[0];
    const char *body_name = NULL;
    int rc = -1;
    if (jsonutil_get_string(body, "name", &body_name, err) < 0)
        goto out;
    if (body_name && strcmp(body_name, name) != 0) {
        err_set(err, ERR_INVALID, "name: the body names '%s' but the path names '%s'", body_name,
                name);
        err_add_detail(err, "field", json_string("name"));
        goto out;
    }
    if (!body_name)
        json_object_set_new(body, "name", json_string(name));
    json_t *from = current_request(api, name); /* for the audit: what the update replaced */
    rc = api_provider_put(api, name, body, false, &detail, err);
    if (rc == 0) {
        api_audit(api, req, "provider.update",
                  json_pack("{s:o, s:O}", "from", from ? from : json_null(), "spec", body));
        from = NULL;
        api_respond_json(res, 200, detail);
    }
    json_decref(from);
out:
    json_decref(body);
    return rc;
}

/* The market refuses while running instances use the provider, so it goes
 * first; a store that then cannot forget it gets it back in the market. */
int api_handle_provider_delete(struct api *api, struct api_request *req, struct api_response *res,
                               struct err *err)
{
    const char *name = req->params[0];
    json_t *previous = current_request(api, name);
    int rc = market_provider_delete(api->opts.market, name, err);
    if (rc == 0 && persist_provider(api, name, NULL, err) != 0) {
        undo_provider(api, name, previous, PROVIDER_DELETED);
        rc = -1;
    }
    if (rc != 0) {
        json_decref(previous);
        return -1;
    }
    api_audit(api, req, "provider.delete",
              json_pack("{s:s, s:o}", "name", name, "from", previous ? previous : json_null()));
    api_respond_json(res, 200, json_pack("{s:s, s:s}", "status", "deleted", "name", name));
    return 0;
}

/* Starts or stops the provider now, for good: the state keeps its spec with
 * `enabled` as it now is, so that a restart brings it back running or
 * stopped as the operator left it (a stop had lasted until the next start
 * of the gateway). One the store would not record is put back as it was. */
static int provider_action(struct api *api, struct api_request *req, struct api_response *res,
                           bool start, struct err *err)
{
    json_t *detail = NULL;
    const char *name = req->params[0];
    json_t *before = current_request(api, name);
    bool was_running = json_is_true(json_object_get(before, "enabled"));
    json_decref(before);
    int rc = start ? market_provider_start(api->opts.market, name, &detail, err)
                   : market_provider_stop(api->opts.market, name, &detail, err);
    if (rc != 0)
        return -1;
    json_t *now = current_request(api, name);
    if (now && persist_provider(api, name, now, err) != 0) {
        struct err e = ERR_INIT;
        if (was_running != start)
            rc = start ? market_provider_stop(api->opts.market, name, NULL, &e)
                       : market_provider_start(api->opts.market, name, NULL, &e);
        if (rc != 0)
            log_error("api", "provider %s differs from the stored one until a restart: %s", name,
                      e.message);
        err_clear(&e);
        json_decref(now);
        json_decref(detail);
        return -1;
    }
    json_decref(now);
    api_audit(api, req, start ? "provider.start" : "provider.stop",
              json_pack("{s:s}", "name", name));
    api_respond_json(res, start ? 202 : 200, detail);
    return 0;
}

int api_handle_provider_start(struct api *api, struct api_request *req, struct api_response *res,
                              struct err *err)
{
    return provider_action(api, req, res, true, err);
}

int api_handle_provider_stop(struct api *api, struct api_request *req, struct api_response *res,
                             struct err *err)
{
    return provider_action(api, req, res, false, err);
}

int api_handle_provider_balances(struct api *api, struct api_request *req, struct api_response *res,
                                 struct err *err)
{
    int limit;
    if (page_limit(req, "filter by asset", &limit, err) != 0)
        return -1;
    json_t *body =
        market_balances_json(api->opts.market, req->params[0], api_query(req, "asset"), limit, err);
    if (!body)
        return -1;
    api_respond_json(res, 200, body);
    return 0;
}

int api_handle_adapters_list(struct api *api, struct api_request *req, struct api_response *res,
                             struct err *err)
{
    (void)api;
    (void)req;
    (void)err;
    api_respond_json(res, 200, market_adapters_json());
    return 0;
}

int api_handle_adapter_get(struct api *api, struct api_request *req, struct api_response *res,
                           struct err *err)
{
    (void)api;
    json_t *a = market_adapter_json(req->params[0], err);
    if (!a)
        return -1;
    api_respond_json(res, 200, a);
    return 0;
}
