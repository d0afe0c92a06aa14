/*
 * refresh: move instances to the revision their own selector resolves to
 * now, and only the instances the operator names.
 *
 * Targets ({"hashes": [...], "strategies": [...]}, any selector form) pick
 * instances: a bare name every instance of the strategy, name:tag those
 * whose selector is that, a hash (with or without name) those pinned to it.
 * No targets means every instance. Each picked instance re-resolves its own
 * selector:
 *   another hash  re-pinned (persisted) and, when running, restarted on its
 *                 worker in one command (the old VM stops and the new one
 *                 starts between two events)           -> "refreshed"
 *   same hash     nothing to do                         -> "alreadyPinned"
 *   nothing       stopped                               -> "retired"
 * A "name@sha256:<64 hex>" selector never moves. A target that picked no
 * instance gets one "retired" result with no hash. Targets are matched
 * against the catalogue as the refresh begins; each picked instance
 * re-resolves against the catalogue current at its turn.
 */
#include "runtime/internal.h"

#include "core/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct target {
    const char *text;
    struct selector sel;
    bool name_is_strategy; /* LATEST: a strategy of that name exists */
    bool matched;
};

struct candidate {
    struct instance *inst;
    char strategy[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
    char selector[SELECTOR_TEXT_MAX + 1];
    bool running;
};

/* ------------------------------------------------------------ targets */

static int add_targets(const json_t *request, const char *key, struct target *out, size_t *n,
                       size_t max, struct err *err)
{
    const json_t *list = json_object_get(request, key);
    if (!list || json_is_null(list))
        return 0;
    if (!json_is_array(list)) {
        err_set(err, ERR_INVALID, "%s: must be an array of selectors", key);
        return -1;
    }
    size_t i;
    json_t *item;
    json_array_foreach(list, i, item)
    {
        const char *text = json_string_value(item);
        if (!text) {
            err_set(err, ERR_INVALID, "%s[%zu]: must be a selector string", key, i);
            return -1;
        }
        if (*n == max)
            return 0;
        struct target *t = &out[*n];
        memset(t, 0, sizeof *t);
        t->text = text;
        if (selector_parse(text, &t->sel, err) != 0) {
            err_add_detail(err, "field", json_string(key));
            return -1;
        }
        (*n)++;
    }
    return 0;
}

static bool matches(const struct target *t, const struct candidate *c)
{
    const struct selector *s = &t->sel;
    switch (s->kind) {
    case SELECTOR_LATEST:
        if (strcmp(s->name, c->strategy) == 0)
            return true;
        /* a bare hex string that names no strategy is a hash prefix */
        return s->may_be_prefix && !t->name_is_strategy &&
               strncmp(c->hex, s->name, strlen(s->name)) == 0;
    case SELECTOR_TAG: {
        struct selector own;
        struct err ignored = ERR_INIT;
        bool ok = selector_parse(c->selector, &own, &ignored) == 0;
        err_clear(&ignored);
        if (!ok || strcmp(own.name, s->name) != 0)
            return false;
        if (own.kind == SELECTOR_TAG)
            return strcmp(own.tag, s->tag) == 0;
        return own.kind == SELECTOR_LATEST && strcmp(s->tag, REGISTRY_LATEST) == 0;
    }
    case SELECTOR_HASH:
        return (!s->name[0] || strcmp(s->name, c->strategy) == 0) &&
               strncmp(c->hex, s->hex, s->hex_len) == 0;
    }
    return false;
}

/* ------------------------------------------------------------ results */

static json_t *result(const char *selector, const struct candidate *c, const char *hex,
                      const char *previous, const char *reason)
{
    json_t *r = json_pack("{s:s, s:s, s:[s], s:s}", "selector", selector, "strategy", c->strategy,
                          "instances", c->inst->id, "reason", reason);
    char hash[HASH_SPELLED_LEN + 1];
    if (r && hex && *hex) {
        hash_spell(hex, hash);
        json_object_set_new(r, "hash", json_string(hash));
    }
    if (r && previous && *previous) {
        hash_spell(previous, hash);
        json_object_set_new(r, "previousHash", json_string(hash));
    }
    return r;
}

static const char *field(const json_t *r, const char *key)
{
    const char *s = json_string_value(json_object_get(r, key));
    return s ? s : "";
}

static const char *first_instance(const json_t *r)
{
    const char *s = json_string_value(json_array_get(json_object_get(r, "instances"), 0));
    return s ? s : "";
}

static int cmp_results(const void *a, const void *b)
{
    const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
    int c = strcmp(field(x, "selector"), field(y, "selector"));
    if (c == 0)
        c = strcmp(field(x, "strategy"), field(y, "strategy"));
    if (c == 0)
        c = strcmp(first_instance(x), first_instance(y));
    return c;
}

static json_t *sorted(json_t *results)
{
    size_t n = json_array_size(results);
    json_t **items = calloc(n ? n : 1, sizeof *items);
    json_t *out = json_array();
    if (!items || !out) {
        free(items);
        json_decref(out);
        return results;
    }
    for (size_t i = 0; i < n; i++)
        items[i] = json_array_get(results, i);
    qsort(items, n, sizeof *items, cmp_results);
    for (size_t i = 0; i < n; i++)
        json_array_append(out, items[i]);
    free(items);
    json_decref(results);
    return out;
}

/* ------------------------------------------------------------ one instance */

static void stopped_locked(struct instance *inst, const char *reason, const char *message)
{
    inst->desired = false;
    snprintf(inst->stop_reason, sizeof inst->stop_reason, "%s", reason);
    if (message) {
        json_decref(inst->last_error);
        inst->last_error = json_pack("{s:s, s:s}", "message", message, "handler", "create");
    }
    inst->version++;
}

static json_t *retire(struct runtime *rt, const struct candidate *c)
{
    struct err err = ERR_INIT;
    int was_running = c->running ? rtx_stop_vm(rt, c->inst, &err) : 0;
    err_clear(&err);
    pthread_mutex_lock(&rt->lock);
    stopped_locked(c->inst, "retired", NULL);
    pthread_mutex_unlock(&rt->lock);
    if (rtx_persist(rt, c->inst, &err) != 0)
        log_error("runtime", "cannot persist instance %s: %s", c->inst->id, err.message);
    err_clear(&err);
    if (was_running > 0)
        rtx_note_stop(rt, c->strategy, c->hex, "retired");
    return result(c->selector, c, c->hex, NULL, "retired");
}

/* Restarts a running instance on its new revision. A new VM that does not
 * start leaves the instance stopped (startFailed) on the new pin. */
static int restart(struct runtime *rt, const struct candidate *c, json_t *spec,
                   const struct registry_resolution *res, struct err *err)
{
    struct vm_plan *plan = NULL;
    int rc =
        spec_plan(rt, spec, c->strategy, res->revision->hex, res->revision->metadata, &plan, err);
    if (rc != 0) {
        struct err ignored = ERR_INIT;
        rtx_stop_vm(rt, c->inst, &ignored);
        err_clear(&ignored);
        pthread_mutex_lock(&rt->lock);
        rtx_apply_spec_locked(rt, c->inst, json_incref(spec));
        pthread_mutex_unlock(&rt->lock);
        rtx_note_stop(rt, c->strategy, c->hex, "refreshed");
        return -1;
    }
    struct command cmd = {.kind = CMD_RESTART,
                          .inst = c->inst,
                          .plan = plan,
                          .spec = json_incref(spec),
                          .keep_old = false,
                          .err = ERR_INIT};
    worker_call(c->inst->worker, &cmd);
    runtime_plan_free(cmd.plan);
    if (cmd.spec) { /* not running any more: the pin moves all the same */
        pthread_mutex_lock(&rt->lock);
        rtx_apply_spec_locked(rt, c->inst, cmd.spec);
        pthread_mutex_unlock(&rt->lock);
    }
    if (cmd.was_running) {
        rtx_note_stop(rt, c->strategy, c->hex, "refreshed");
        if (cmd.rc == 0)
            rtx_note_start(rt, c->strategy, res->revision->hex);
    }
    if (cmd.rc != 0) {
        err_move(err, &cmd.err);
        return -1;
    }
    err_clear(&cmd.err);
    return 0;
}

static json_t *refresh_one(struct runtime *rt, const struct registry *reg,
                           const struct candidate *c)
{
    struct registry_resolution res;
    struct err err = ERR_INIT;
    if (spec_reresolve(reg, c->selector, &res, &err) != 0) {
        err_clear(&err);
        return retire(rt, c);
    }
    if (strcmp(res.revision->hex, c->hex) == 0)
        return result(c->selector, c, c->hex, NULL, "alreadyPinned");
    pthread_mutex_lock(&rt->lock);
    json_t *spec =
        spec_repin(c->inst->spec, res.revision->hex, res.tag ? res.tag : res.revision->tag);
    pthread_mutex_unlock(&rt->lock);
    if (!spec)
        return NULL;
    int rc = 0;
    if (c->running) {
        /* the new revision is being deleted: it no longer resolves */
        if (rtx_claim_pending(rt, c->inst, res.revision->hex, &err) != 0) {
            json_decref(spec);
            err_clear(&err);
            return retire(rt, c);
        }
        rc = restart(rt, c, spec, &res, &err);
        rtx_release_pending(rt, c->inst);
    } else {
        pthread_mutex_lock(&rt->lock);
        rtx_apply_spec_locked(rt, c->inst, json_incref(spec));
        pthread_mutex_unlock(&rt->lock);
    }
    json_decref(spec);
    if (rc != 0) {
        pthread_mutex_lock(&rt->lock);
        stopped_locked(c->inst, "startFailed", err.message);
        pthread_mutex_unlock(&rt->lock);
    }
    json_t *r = result(c->selector, c, res.revision->hex, c->hex, "refreshed");
    if (r && rc != 0)
        json_object_set_new(r, "error", json_string(err.message));
    err_clear(&err);
    if (rtx_persist(rt, c->inst, &err) != 0)
        log_error("runtime", "cannot persist instance %s: %s", c->inst->id, err.message);
    err_clear(&err);
    return r;
}

/* ------------------------------------------------------------ entry */

static struct candidate *candidates(struct runtime *rt, size_t *n)
{
    pthread_mutex_lock(&rt->lock);
    struct candidate *list = calloc(rt->ninstances ? rt->ninstances : 1, sizeof *list);
    *n = list ? rt->ninstances : 0;
    for (size_t i = 0; i < *n; i++) {
        struct instance *inst = rt->instances[i];
        list[i].inst = inst;
        list[i].running = inst->running;
        snprintf(list[i].strategy, sizeof list[i].strategy, "%s", inst->strategy);
        snprintf(list[i].hex, sizeof list[i].hex, "%s", inst->hex);
        snprintf(list[i].selector, sizeof list[i].selector, "%s", inst->selector);
    }
    pthread_mutex_unlock(&rt->lock);
    return list;
}

static size_t count_targets(const json_t *request)
{
    return json_array_size(json_object_get(request, "hashes")) +
           json_array_size(json_object_get(request, "strategies"));
}

int runtime_refresh(struct runtime *rt, const json_t *request, json_t **response, struct err *err)
{
    *response = NULL;
    if (request && !json_is_object(request)) {
        err_set(err, ERR_INVALID, "a refresh request must be a JSON object");
        return -1;
    }
    size_t max = request ? count_targets(request) : 0, ntargets = 0;
    struct target *targets = calloc(max ? max : 1, sizeof *targets);
    if (!targets) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    if (request && (add_targets(request, "hashes", targets, &ntargets, max, err) != 0 ||
                    add_targets(request, "strategies", targets, &ntargets, max, err) != 0)) {
        free(targets);
        return -1;
    }
    pthread_mutex_lock(&rt->control);
    struct registry *reg = catalog_snapshot(rt->opts.catalog);
    for (size_t t = 0; t < ntargets; t++)
        targets[t].name_is_strategy = registry_find_strategy(reg, targets[t].sel.name) != NULL;
    size_t n = 0;
    struct candidate *list = candidates(rt, &n);
    json_t *results = json_array();
    for (size_t i = 0; list && i < n; i++) {
        bool picked = ntargets == 0;
        for (size_t t = 0; t < ntargets; t++) {
            if (matches(&targets[t], &list[i])) {
                targets[t].matched = true;
                picked = true;
            }
        }
        if (!picked)
            continue;
        /* Each instance re-resolves against the catalogue as it is now, not
         * as it was when the refresh began: restarting a large fleet takes
         * a while, and a revision deleted meanwhile (its guard saw no
         * instance on it yet) must not be started. */
        struct registry *now = catalog_snapshot(rt->opts.catalog);
        json_array_append_new(results, refresh_one(rt, now, &list[i]));
        registry_release(now);
    }
    for (size_t t = 0; t < ntargets; t++) {
        if (!targets[t].matched)
            json_array_append_new(results,
                                  json_pack("{s:s, s:[], s:s}", "selector", targets[t].text,
                                            "instances", "reason", "retired"));
    }
    registry_release(reg);
    pthread_mutex_unlock(&rt->control);
    free(list);
    free(targets);
    *response = json_pack("{s:s, s:o}", "status", "ok", "results", sorted(results));
    if (!*response) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    return 0;
}
