/* Tag moves and deletes, refresh, health and metrics. */
#include "api/acceptor.h"
#include "api/deadline.h"
#include "api/internal.h"
#include "api/tls.h"
#include "api/views.h"

#include "core/clock.h"
#include "core/fsutil.h"
#include "core/hash.h"
#include "core/jsonutil.h"
#include "core/log.h"
#include "core/names.h"

#include <stdio.h>
#include <string.h>

static int check_name_and_tag(const struct api_request *req, struct err *err)
{
    if (!names_valid_strategy(req->params[0])) {
        err_set(err, ERR_INVALID, "'%s' is not a valid strategy name", req->params[0]);
        return -1;
    }
    if (!names_valid_tag(req->params[1])) {
        err_set(err, ERR_INVALID, "'%s' is not a valid tag", req->params[1]);
        return -1;
    }
    return 0;
}

/* The target of a tag move: any hash form of the strategy's revisions. */
static int resolve_target(struct api *api, const char *name, const char *hash,
                          char hex[HASH_HEX_LEN + 1], struct err *err)
{
    char text[SELECTOR_TEXT_MAX + 1];
    snprintf(text, sizeof text, "%s@%s", name, hash);
    struct registry *reg = catalog_snapshot(api->opts.catalog);
    struct registry_resolution r;
    int rc = registry_resolve_text(reg, text, &r, err);
    if (rc == 0)
        snprintf(hex, HASH_HEX_LEN + 1, "%s", r.revision->hex);
    registry_release(reg);
    return rc;
}

/* A tag's refresh moves the instances that follow that tag (`name:tag`;
 * for `latest` the bare name too), not the strategy's others: an instance
 * on another tag, perhaps staged for later, stays where it is. */
static json_t *tag_refresh_request(const char *name, const char *tag)
{
    return json_pack("{s:[s++]}", "strategies", name, ":", tag);
}

static json_t *refresh_tag(struct api *api, const char *name, const char *tag, struct err *err)
{
    json_t *request = tag_refresh_request(name, tag);
    json_t *response = NULL;
    int rc = request ? runtime_refresh(api->opts.runtime, request, &response, err) : -1;
    if (!request)
        err_set(err, ERR_INTERNAL, "out of memory");
    json_decref(request);
    return rc == 0 ? response : NULL;
}

/* Moves the tag to hex, audits it, and with `refresh` refreshes the
 * instances that follow it; answers 200. */
static int move_tag(struct api *api, struct api_request *req, struct api_response *res,
                    const char *hex, bool refresh, struct err *err)
{
    const char *name = req->params[0], *tag = req->params[1];
    char previous[HASH_HEX_LEN + 1] = "";
    int set = catalog_set_tag(api->opts.catalog, name, tag, hex, previous, err);
    if (set != 0 && !catalog_error_published(err))
        return -1;
    if (previous[0] && strcmp(previous, hex) != 0) { /* a move, not a new tag */
        const char *labels[] = {api->opts.environment, name, tag};
        metrics_add(api->tag_reassigned, labels, 1);
    }
    /* a tag put where it already is moves nothing: no entry, as no metric */
    if (strcmp(previous, hex) != 0)
        api_audit(api, req, "tag.move",
                  json_pack("{s:s, s:s, s:o, s:o}", "strategy", name, "tag", tag, "from",
                            previous[0] ? views_hash(previous) : json_null(), "to",
                            views_hash(hex)));
    if (set != 0)
        return -1;
    json_t *out = json_pack("{s:s, s:s, s:s, s:o, s:b}", "status", "ok", "strategy", name, "tag",
                            tag, "hash", views_hash(hex), "refresh", refresh);
    if (previous[0])
        json_object_set_new(out, "previousHash", views_hash(previous));
    if (refresh) {
        json_t *refreshed = refresh_tag(api, name, tag, err);
        if (!refreshed) {
            json_decref(out);
            return -1;
        }
        json_object_set(out, "results", json_object_get(refreshed, "results"));
        /* the instances it moved, as POST /strategies/refresh records them */
        json_t *request = tag_refresh_request(name, tag);
        api_audit_refresh(api, req, request, json_object_get(refreshed, "results"));
        json_decref(request);
        json_decref(refreshed);
    }
    api_respond_json(res, 200, out);
    return 0;
}

int api_handle_tag_put(struct api *api, struct api_request *req, struct api_response *res,
                       struct err *err)
{
    if (check_name_and_tag(req, err) != 0)
        return -1;
    json_t *body = NULL;
    if (api_body_object(req, false, &body, err) != 0)
        return -1;
    const char *hash = NULL;
    bool refresh = false;
    int rc = -1;
    static const char *const keys[] = {"hash", "refresh"};
    if (api_body_known_keys(body, keys, 2, "a tag assignment", err) != 0 ||
        jsonutil_get_string(body, "hash", &hash, err) < 0 ||
        jsonutil_get_bool(body, "refresh", &refresh, err) < 0)
        goto out;
    if (!hash) {
        err_set(err, ERR_INVALID, "field 'hash' is required");
        err_add_detail(err, "field", json_string("hash"));
        goto out;
    }
    const char *name = req->params[0];
    char hex[HASH_HEX_LEN + 1];
    if (resolve_target(api, name, hash, hex, err) != 0)
        goto out;
    /* A delete let through between the move and its refresh would take the
     * tag with it, and the refresh would then retire every instance that
     * follows the tag: the revision is held from the delete until then. */
    if (refresh && runtime_hold_revision(api->opts.runtime, name, hex, err) != 0)
        goto out;
    rc = move_tag(api, req, res, hex, refresh, err);
    if (refresh)
        runtime_release_revision(api->opts.runtime, name, hex);
out:
    json_decref(body);
    return rc;
}

/* The running instances that follow the tag: a 409 naming them unless the
 * operator means them to be retired by the next refresh (`retire`), when
 * *followers receives their ids. */
static int tag_followers(struct api *api, const char *name, const char *tag, bool retire,
                         json_t **followers, struct err *err)
{
    struct err guard = ERR_INIT;
    if (runtime_tag_guard(api->opts.runtime, name, tag, &guard) == 0) {
        *followers = json_array();
        return 0;
    }
    if (guard.kind != ERR_CONFLICT || !retire) {
        if (guard.kind == ERR_CONFLICT)
            err_add_detail(&guard, "hint",
                           json_string("?retireFollowers=true deletes it all the same, and the "
                                       "next refresh of these instances stops them"));
        err_move(err, &guard);
        return -1;
    }
    *followers = json_incref(json_object_get(guard.details, "instances"));
    err_clear(&guard);
    return 0;
}

int api_handle_tag_delete(struct api *api, struct api_request *req, struct api_response *res,
                          struct err *err)
{
    if (check_name_and_tag(req, err) != 0)
        return -1;
    const char *name = req->params[0], *tag = req->params[1];
    bool allow_orphan = false, retire_followers = false;
    if (api_query_bool(req, "allowOrphan", &allow_orphan, err) != 0 ||
        api_query_bool(req, "retireFollowers", &retire_followers, err) != 0)
        return -1;
    json_t *followers = NULL;
    /* latest is never deleted (the catalogue says so): its followers are not
     * the obstacle, and a hint to retire them would lead to a second 409 */
    if (strcmp(tag, REGISTRY_LATEST) == 0)
        followers = json_array();
    else if (tag_followers(api, name, tag, retire_followers, &followers, err) != 0)
        return -1;
    char previous[HASH_HEX_LEN + 1] = "";
    int rc = catalog_delete_tag(api->opts.catalog, name, tag, allow_orphan, previous, err);
    if (rc != 0 && !catalog_error_published(err)) {
        json_decref(followers);
        return -1;
    }
    const char *labels[] = {api->opts.environment, name, tag, allow_orphan ? "true" : "false"};
    metrics_add(api->tag_deleted, labels, 1);
    api_audit(api, req, "tag.delete",
              json_pack("{s:s, s:s, s:o, s:n, s:b, s:O}", "strategy", name, "tag", tag, "from",
                        views_hash(previous), "to", "allowOrphan", allow_orphan, "followers",
                        followers));
    if (rc != 0) {
        json_decref(followers);
        return -1;
    }
    api_respond_json(res, 200,
                     json_pack("{s:s, s:s, s:s, s:o, s:b, s:o}", "status", "deleted", "strategy",
                               name, "tag", tag, "previousHash", views_hash(previous),
                               "allowOrphan", allow_orphan, "followers", followers));
    return 0;
}

/* A misspelled key would otherwise leave a request with no targets, which
 * refreshes every instance: refused instead. */
static int check_refresh_request(const json_t *body, struct err *err)
{
    static const char *const keys[] = {"hashes", "strategies"};
    if (api_body_known_keys(body, keys, 2, "a refresh", err) != 0)
        return -1;
    for (size_t k = 0; k < 2; k++) {
        /* a client's unset list sent as null must not widen the refresh
         * to every instance either */
        if (json_is_null(json_object_get(body, keys[k]))) {
            err_set(err, ERR_INVALID,
                    "field '%s' is null: give a list ([] names nothing) or leave the field out "
                    "to refresh every instance",
                    keys[k]);
            err_add_detail(err, "field", json_string(keys[k]));
            return -1;
        }
        const json_t *list = NULL;
        if (jsonutil_get_string_array(body, keys[k], &list, err) < 0)
            return -1;
    }
    return 0;
}

int api_handle_refresh(struct api *api, struct api_request *req, struct api_response *res,
                       struct err *err)
{
    json_t *body = NULL;
    if (api_body_object(req, true, &body, err) != 0 ||
        (body && check_refresh_request(body, err) != 0)) {
        json_decref(body);
        return -1;
    }
    json_t *problems = NULL;
    if (catalog_reload(api->opts.catalog, &problems, err) != 0) {
        /* The last good catalogue stays in service; say why the new one was
         * not taken. A registry.json that does not parse or is not in the
         * format (or is too large to be one) conflicts with the request;
         * running out of memory, an I/O error or a full disk is the
         * gateway's failure and keeps its own status (500, 507). */
        if (err->kind == ERR_INVALID || err->kind == ERR_TOO_LARGE)
            err->kind = ERR_CONFLICT;
        err_add_detail(err, "servingPrevious", json_true());
        json_decref(body);
        return -1;
    }
    json_t *response = NULL;
    int rc = runtime_refresh(api->opts.runtime, body, &response, err);
    if (rc == 0) {
        json_object_set_new(response, "problems", problems ? problems : json_array());
        problems = NULL;
        api_audit_refresh(api, req, body, json_object_get(response, "results"));
        api_respond_json(res, 200, response);
    }
    json_decref(problems);
    json_decref(body);
    return rc;
}

/* Failures this recent make the gateway "degraded". */
#define HEALTH_WINDOW_MS 60000

static void add_problem(json_t *problems, int64_t at_ms, int64_t now_ms, const char *what)
{
    if (at_ms > 0 && now_ms - at_ms < HEALTH_WINDOW_MS)
        json_array_append_new(
            problems, json_sprintf("%s %llds ago", what, (long long)((now_ms - at_ms) / 1000)));
}

/* Up is 200 always (a liveness probe); `status` says whether it is fit to
 * take changes: "degraded", with the problems, when the state disk refused
 * a write, the audit log or the history lost something in the last minute,
 * or a worker does not keep up with its events. */
/* A provider that is not running while running instances use it: they
 * get no events and their orders go nowhere, yet every instance says
 * running. Only a provider that is down has its instances counted (a
 * walk over interned ids, a few nanoseconds an instance). */
static void add_stopped_providers(struct api *api, json_t *problems)
{
    json_t *down = market_providers_down(api->opts.market);
    size_t i;
    json_t *p;
    json_array_foreach(down, i, p)
    {
        const char *name = json_string_value(json_object_get(p, "name"));
        json_int_t users =
            api->opts.runtime ? (json_int_t)runtime_provider_users(api->opts.runtime, name) : 0;
        if (users <= 0)
            continue;
        const char *why = json_string_value(json_object_get(p, "startupError"));
        json_array_append_new(
            problems, json_sprintf("provider '%s' is %s while %lld running instance%s use%s it%s%s",
                                   name, json_string_value(json_object_get(p, "status")),
                                   (long long)users, users == 1 ? "" : "s", users == 1 ? "s" : "",
                                   why ? ": " : "", why ? why : ""));
    }
    json_decref(down);
}

int api_handle_healthz(struct api *api, struct api_request *req, struct api_response *res,
                       struct err *err)
{
    (void)req;
    (void)err;
    json_t *problems = json_array();
    int64_t now = clock_wall_ms();
    bool full = false;
    int64_t store_at = store_last_write_failure_ms(api->opts.store, &full);
    add_problem(problems, store_at, now,
                full ? "the state disk was full: a write of the state database was refused"
                     : "a write of the state database failed");
    add_problem(problems, atomic_load(&api->audit_failed_ms), now,
                "an audit entry could not be written");
    add_problem(problems, market_history_lost_ms(), now,
                "orders or executions could not be written to the history");
    if (api->opts.market)
        add_stopped_providers(api, problems);
    int worker = 0;
    size_t capacity = 0;
    size_t deepest =
        api->opts.runtime ? runtime_deepest_queue(api->opts.runtime, &worker, &capacity) : 0;
    if (capacity > 0 && deepest > capacity / 2)
        json_array_append_new(problems,
                              json_sprintf("worker %d holds %zu of %zu queued messages: it does "
                                           "not keep up with its events",
                                           worker, deepest, capacity));
    bool ok = json_array_size(problems) == 0;
    json_t *body = json_pack("{s:s}", "status", ok ? "ok" : "degraded");
    if (ok)
        json_decref(problems);
    else
        json_object_set_new(body, "problems", problems);
    api_respond_json(res, 200, body);
    return 0;
}

/* strategy_revision_instances: one series per known revision, 0 when idle,
 * so a dashboard sees a revision from upload until delete. One snapshot of
 * the usage serves every revision. */
static void write_revision_gauge(struct api *api, struct strbuf *out)
{
    static const char *const labels[] = {"environment", "strategy", "hash"};
    metrics_write_header(out, "strategy_revision_instances",
                         "Running instances per strategy revision.", "gauge");
    struct views_usage *usage = views_usage_new(api->opts.runtime);
    struct registry *reg = catalog_snapshot(api->opts.catalog);
    for (size_t i = 0; i < reg->nstrategies; i++) {
        const struct registry_strategy *st = reg->strategies[i];
        for (size_t j = 0; j < st->nrevisions; j++) {
            char spelled[HASH_SPELLED_LEN + 1];
            hash_spell(st->revisions[j].hex, spelled);
            const char *values[] = {api->opts.environment, st->name, spelled};
            int n = views_usage_running(usage, st->name, st->revisions[j].hex);
            metrics_write_sample(out, "strategy_revision_instances", labels, values, 3, n);
        }
    }
    registry_release(reg);
    views_usage_free(usage);
}

/* The HTTPS port's series, exported only when it speaks HTTPS. */
static void write_https_metrics(const struct api *api, struct strbuf *out)
{
    metrics_write_scalar(out, "stratd_tls_certificate_expiry_timestamp_seconds",
                         "When the control plane's TLS certificate stops being valid (Unix time).",
                         "gauge", (double)api_tls_not_after(api->opts.tls));
    metrics_write_scalar(out, "stratd_tls_certificate_reload_failures_total",
                         "Reloads of the TLS certificate and key (SIGHUP) refused; the pair served "
                         "before goes on.",
                         "counter", (double)api_tls_reload_failures(api->opts.tls));
    metrics_write_scalar(out, "stratd_http_plain_requests_on_https_total",
                         "Plain-HTTP requests on the HTTPS port, answered 400.", "counter",
                         (double)acceptor_plain_refused(api->acceptor));
    metrics_write_scalar(out, "stratd_http_silent_connections_closed_total",
                         "Connections to the HTTPS port closed for sending nothing within "
                         "http.idle_timeout_seconds.",
                         "counter", (double)acceptor_silent_closed(api->acceptor));
}

int api_handle_metrics(struct api *api, struct api_request *req, struct api_response *res,
                       struct err *err)
{
    (void)req;
    struct strbuf out = STRBUF_INIT;
    static const char *const build_labels[] = {"version"};
    const char *build_values[] = {STRATD_VERSION};
    metrics_write_header(&out, "stratd_build_info", "Build information.", "gauge");
    metrics_write_sample(&out, "stratd_build_info", build_labels, build_values, 1, 1);
    write_revision_gauge(api, &out);
    metrics_family_write(api->tag_reassigned, &out);
    metrics_family_write(api->tag_deleted, &out);
    metrics_family_write(api->validation_failures, &out);
    metrics_family_write(api->http_requests, &out);
    api_latency_write(api->latency, &out);
    metrics_write_scalar(&out, "stratd_http_connections",
                         "Control-plane connections open now (http.max_connections admits).",
                         "gauge", (double)atomic_load(&api->connections));
    if (api->opts.tls)
        write_https_metrics(api, &out);
    metrics_write_scalar(&out, "stratd_http_requests_timed_out_total",
                         "Connections closed because a request had not arrived whole within "
                         "http.request_timeout_seconds.",
                         "counter", (double)deadline_closed(api->deadline));
    metrics_write_scalar(&out, "stratd_http_refused_connections_dropped_total",
                         "Connections refused over a connection limit that sent no request within "
                         "the grace and were closed unanswered.",
                         "counter", (double)deadline_refused_closed(api->deadline));
    static const char *const reason_label[] = {"reason"};
    static const char *const reasons[API_REFUSAL_KINDS][1] = {
        [API_REFUSAL_MISSING] = {"missing"}, [API_REFUSAL_UNKNOWN] = {"unknown"}};
    metrics_write_header(&out, "stratd_http_token_refusals_total",
                         "Requests answered 401: without a bearer token (missing), or with one "
                         "no configured token matches (unknown).",
                         "counter");
    for (int i = 0; i < API_REFUSAL_KINDS; i++)
        metrics_write_sample(&out, "stratd_http_token_refusals_total", reason_label, reasons[i], 1,
                             (double)atomic_load(&api->tokens_refused[i]));
    metrics_write_scalar(&out, "stratd_audit_failures_total",
                         "Audit entries that could not be written; the changes they record were "
                         "made.",
                         "counter", (double)atomic_load(&api->audit_failures));
    runtime_metrics_write(api->opts.runtime, &out);
    if (api->opts.market)
        market_metrics_write(api->opts.market, &out);
    store_metrics_write(api->opts.store, &out);
    fsutil_sync_metrics_write(&out);
    return api_respond_text(res, &out, true, "text/plain; version=0.0.4; charset=utf-8",
                            "writing metrics", err);
}
