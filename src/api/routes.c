/* The route table and matching: literal segments match exactly, a
 * "{name}" segment matches any one segment and is captured in order. */
#include "api/internal.h"

#include <stdio.h>
#include <string.h>

const struct api_route api_routes[] = {
    {"GET", "/healthz", api_handle_healthz, false},
    {"GET", "/metrics", api_handle_metrics, false},

    {"GET", "/strategies", api_handle_strategies_list, false},
    {"GET", "/strategies/modules", api_handle_modules_list, false},
    {"POST", "/strategies/modules", api_handle_module_upload, false},
    {"POST", "/strategies/refresh", api_handle_refresh, false},
    {"GET", "/strategies/registry", api_handle_registry_export, false},
    {"GET", "/strategies/modules/{selector}", api_handle_module_get, false},
    {"PUT", "/strategies/modules/{selector}", api_handle_module_put, false},
    {"DELETE", "/strategies/modules/{selector}", api_handle_module_delete, false},
    {"GET", "/strategies/modules/{selector}/source", api_handle_module_source, false},
    {"GET", "/strategies/modules/{selector}/usage", api_handle_module_usage, false},
    {"PUT", "/strategies/modules/{name}/tags/{tag}", api_handle_tag_put, false},
    {"DELETE", "/strategies/modules/{name}/tags/{tag}", api_handle_tag_delete, false},
    {"GET", "/strategies/{name}", api_handle_strategy_get, false},

    {"GET", "/providers", api_handle_providers_list, false},
    {"POST", "/providers", api_handle_provider_create, false},
    {"GET", "/providers/{name}", api_handle_provider_get, false},
    {"PUT", "/providers/{name}", api_handle_provider_update, false},
    {"DELETE", "/providers/{name}", api_handle_provider_delete, false},
    {"POST", "/providers/{name}/start", api_handle_provider_start, false},
    {"POST", "/providers/{name}/stop", api_handle_provider_stop, false},
    {"GET", "/providers/{name}/balances", api_handle_provider_balances, false},
    {"GET", "/adapters", api_handle_adapters_list, false},
    {"GET", "/adapters/{identifier}", api_handle_adapter_get, false},

    {"GET", "/strategy/instances", api_handle_instances_list, false},
    {"POST", "/strategy/instances", api_handle_instance_create, true},
    {"GET", "/strategy/instances/{id}", api_handle_instance_get, false},
    {"PUT", "/strategy/instances/{id}", api_handle_instance_update, false},
    {"DELETE", "/strategy/instances/{id}", api_handle_instance_delete, false},
    {"POST", "/strategy/instances/{id}/start", api_handle_instance_start, true},
    {"POST", "/strategy/instances/{id}/stop", api_handle_instance_stop, true},
    {"GET", "/strategy/instances/{id}/orders", api_handle_instance_orders, false},
    {"GET", "/strategy/instances/{id}/executions", api_handle_instance_executions, false},

    {"GET", "/risk/limits", api_handle_risk_get, false},
    {"PUT", "/risk/limits", api_handle_risk_put, false},

    {"GET", "/context/backup", api_handle_context_export, false},
    {"POST", "/context/backup", api_handle_context_restore, false},
};

const size_t api_route_count = sizeof api_routes / sizeof api_routes[0];

/* The n-th segment of a pattern: its start and length, or NULL. */
static const char *pattern_segment(const char *pattern, size_t n, size_t *len)
{
    const char *p = pattern;
    for (size_t i = 0;; i++) {
        if (*p == '/')
            p++;
        if (!*p)
            return NULL;
        const char *end = strchr(p, '/');
        *len = end ? (size_t)(end - p) : strlen(p);
        if (i == n)
            return p;
        p += *len;
    }
}

/* Whether some route spells `value` literally at segment `depth` under the
 * same leading segments: then a capture there must not take it, so
 * GET /strategies/refresh is "wrong method" rather than a strategy named
 * "refresh". */
static bool literal_elsewhere(const struct api_request *req, size_t depth)
{
    const char *value = req->segments[depth];
    for (size_t r = 0; r < api_route_count; r++) {
        size_t len = 0;
        const char *seg = pattern_segment(api_routes[r].pattern, depth, &len);
        if (!seg || seg[0] == '{' || strlen(value) != len || strncmp(seg, value, len) != 0)
            continue;
        bool same_prefix = true;
        for (size_t i = 0; i < depth && same_prefix; i++) {
            const char *p = pattern_segment(api_routes[r].pattern, i, &len);
            same_prefix = p && (p[0] == '{' || (strlen(req->segments[i]) == len &&
                                                strncmp(p, req->segments[i], len) == 0));
        }
        if (same_prefix)
            return true;
    }
    return false;
}

/* Matches the request's segments against one pattern, capturing params. */
static bool pattern_matches(const char *pattern, struct api_request *req, bool capture)
{
    size_t seg = 0, nparams = 0;
    const char *p = pattern;
    while (*p) {
        if (*p == '/')
            p++;
        const char *end = strchr(p, '/');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        if (seg >= req->nsegments)
            return false;
        const char *actual = req->segments[seg];
        if (p[0] == '{') {
            if (literal_elsewhere(req, seg))
                return false;
            if (capture && nparams < API_MAX_PARAMS)
                req->params[nparams] = actual;
            nparams++;
        } else if (strlen(actual) != len || strncmp(actual, p, len) != 0) {
            return false;
        }
        seg++;
        p += len;
    }
    return seg == req->nsegments;
}

const struct api_route *api_route_match(struct api_request *req, struct api_response *res,
                                        struct err *err)
{
    for (size_t i = 0; i < api_route_count; i++) {
        if (strcmp(api_routes[i].method, req->method) == 0 &&
            pattern_matches(api_routes[i].pattern, req, false)) {
            pattern_matches(api_routes[i].pattern, req, true);
            return &api_routes[i];
        }
    }
    /* Same path, other methods: 405 with the methods that exist (a GET
     * answers HEAD too, see server.c). */
    size_t used = 0;
    res->allow[0] = '\0';
    for (size_t i = 0; i < api_route_count; i++) {
        if (!pattern_matches(api_routes[i].pattern, req, false) ||
            strstr(res->allow, api_routes[i].method))
            continue;
        bool get = strcmp(api_routes[i].method, "GET") == 0;
        int n = snprintf(res->allow + used, sizeof res->allow - used, "%s%s%s", used ? ", " : "",
                         api_routes[i].method, get ? ", HEAD" : "");
        if (n > 0 && (size_t)n < sizeof res->allow - used)
            used += (size_t)n;
    }
    if (used) {
        err_set(err, ERR_METHOD, "method %s is not allowed here; allowed: %s", req->method,
                res->allow);
        err_add_detail(err, "allow", json_string(res->allow));
        return NULL;
    }
    err_set(err, ERR_NOT_FOUND, "no route for %s", req->raw_uri);
    return NULL;
}
