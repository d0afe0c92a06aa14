/*
 * refresh: move instances to the revision their own selector resolves to
 * now, and only the instances the operator names.
 *
 * Targets ({"hashes": [...], "strategies": [...]}) pick instances: a bare
 * name every instance of the strategy, name:tag those whose selector is
 * that, a hash (with or without name) those pinned to it. "strategies"
 * takes any selector form; "hashes" only hashes and prefixes of at least
 * 12 hex digits (a bare one read as a prefix even where a strategy has
 * that name), so a name or a typo there is a 400 and not a target.
 * A request with neither list (or none at all) means every instance; lists
 * given empty pick none. Each picked instance re-resolves its own
 * selector:
 *   another hash  re-pinned (persisted) and, when running, restarted on its
 *                 worker in one command (the old VM stops and the new one
 *                 starts between two events)           -> "refreshed"
 *   same hash     nothing to do                         -> "alreadyPinned"
 *   nothing       stopped                               -> "retired"
 *   its own hash, whose file is unusable now            -> "alreadyPinned"
 * An instance a failed start left stopped (startFailed) that moves is
 * started on its new pin ("started": true or false with "error"): it was
 * meant to run, and a rollback of a failed promotion brings it back.
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
    bool hash_only;        /* from "hashes": a bare hex string is a prefix, never a name */
    bool matched;
};

struct candidate {
    struct instance *inst;
    char strategy[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
    char selector[SELECTOR_TEXT_MAX + 1];
    bool running;
    bool start_failed; /* stopped because its last start failed */
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
        t->hash_only = strcmp(key, "hashes") == 0;
        if (t->hash_only && t->sel.kind != SELECTOR_HASH && !t->sel.may_be_prefix) {
            err_set(err, ERR_INVALID,
                    "hashes[%zu]: '%s' is not a hash: give sha256:<hex> or at least %d hex "
                    "digits, with or without name@ (strategies and tags go in \"strategies\")",
                    i, text, SELECTOR_MIN_PREFIX);
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
        if (!t->hash_only && strcmp(s->name, c->strategy) == 0)
            return true;
        /* a bare hex string that names no strategy is a hash prefix */
        return s->may_be_prefix && (t->hash_only || !t->name_is_strategy) &&
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

/* A result with the keys it is sorted by (selector, then strategy, then
 * instance), taken from the candidate rather than looked up in the JSON. */
struct keyed {
    const char *selector;
    const char *strategy;
    const char *id;
    json_t *result;
};

static int cmp_keyed(const void *a, const void *b)
{
    const struct keyed *x = a, *y = b;
    int c = strcmp(x->selector, y->selector);
    if (c == 0)
        c = strcmp(x->strategy, y->strategy);
    if (c == 0)
        c = strcmp(x->id, y->id);
    return c;
}

/* Sorts the n results and moves them into a new array (NULL when out of
 * memory; the results are released either way). */
static json_t *sorted(struct keyed *items, size_t n)
{
    qsort(items, n, sizeof *items, cmp_keyed);
    json_t *out = json_array();
    for (size_t i = 0; i < n; i++) {
        if (out && json_array_append_new(out, items[i].result) != 0) {
            json_decref(out);
            out = NULL;
        } else if (!out) {
            json_decref(items[i].result);
        }
    }
    return out;
}

/* ------------------------------------------------------------ one instance */

/* A refresh handles every picked instance in three passes: prepare (resolve,
 * re-pin, post the worker command at once, so both workers restart in
 * parallel while the next instances are prepared), finish (after waiting
 * for every command: the bookkeeping of each outcome), then one store
 * transaction for every record and usage touch. */
enum move_kind {
    MOVE_DONE,    /* result known in the prepare pass, nothing to wait for */
    MOVE_REPIN,   /* not running: re-pinned in the prepare pass */
    MOVE_RESTART, /* CMD_RESTART posted */
    MOVE_RETIRE,  /* stopped (CMD_STOP posted when running) */
    MOVE_NO_PLAN, /* the new revision gave no launch plan: CMD_STOP posted */
};

struct move {
    const struct candidate *c;
    enum move_kind kind;
    bool posted;  /* cmd went to the worker */
    bool claimed; /* pending_hex set */
    char hex[HASH_HEX_LEN + 1];
    json_t *spec; /* the spec on the new pin */
    struct command cmd;
    struct err err; /* MOVE_NO_PLAN: why */
    json_t *result;
};

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

static void apply_spec(struct runtime *rt, struct instance *inst, json_t *spec)
{
    pthread_mutex_lock(&rt->lock);
    rtx_apply_spec_locked(rt, inst, spec);
    pthread_mutex_unlock(&rt->lock);
}

static void post(struct move *m, enum command_kind kind, struct vm_plan *plan, json_t *spec)
{
    m->cmd = (struct command){
        .kind = kind, .inst = m->c->inst, .plan = plan, .spec = spec, .err = ERR_INIT};
    worker_post(m->c->inst->worker, &m->cmd);
    m->posted = true;
}

static void prepare_retire(struct move *m)
{
    m->kind = MOVE_RETIRE;
    if (m->c->running)
        post(m, CMD_STOP, NULL, NULL);
}

/* A running instance: claims the new revision against deletes, plans the
 * new VM and posts the restart. */
static void prepare_restart(struct runtime *rt, struct move *m,
                            const struct registry_resolution *res)
{
    const struct candidate *c = m->c;
    struct err err = ERR_INIT;
    /* the new revision is being deleted, or was deleted entirely after the
     * snapshot it was resolved in (no mark left for the claim to see): it
     * no longer resolves */
    bool claimed = rtx_claim_pending(rt, c->inst, c->strategy, m->hex, &err) == 0;
    err_clear(&err);
    if (claimed && !rtx_revision_exists(rt, c->strategy, m->hex)) {
        rtx_release_pending(rt, c->inst);
        claimed = false;
    }
    if (!claimed) {
        json_decref(m->spec);
        m->spec = NULL;
        prepare_retire(m);
        return;
    }
    m->claimed = true;
    struct vm_plan *plan = NULL;
    if (spec_plan(rt, m->spec, c->strategy, m->hex, res->revision->metadata, &plan, &m->err) != 0) {
        m->kind = MOVE_NO_PLAN;
        post(m, CMD_STOP, NULL, NULL);
        return;
    }
    m->kind = MOVE_RESTART;
    post(m, CMD_RESTART, plan, json_incref(m->spec));
}

/* The selector resolves to the instance's own revision, which is still in
 * the catalogue but whose file cannot be used now (moved away, not a
 * file, edited): nothing was deleted, and a running instance has its code
 * loaded, so it stays as it is; the refresh's problems name the file. */
static bool own_revision_invalid(const struct err *err, const char *hex)
{
    const char *bad = json_string_value(json_object_get(err->details, "hash"));
    return err->kind == ERR_CONFLICT && bad && strncmp(bad, HASH_PREFIX, HASH_PREFIX_LEN) == 0 &&
           strcmp(bad + HASH_PREFIX_LEN, hex) == 0;
}

static void prepare(struct runtime *rt, const struct registry *reg, struct move *m)
{
    const struct candidate *c = m->c;
    struct registry_resolution res;
    struct err err = ERR_INIT;
    if (spec_reresolve(reg, c->selector, &res, &err) != 0) {
        bool own = own_revision_invalid(&err, c->hex);
        err_clear(&err);
        if (own) {
            m->kind = MOVE_DONE;
            m->result = result(c->selector, c, c->hex, NULL, "alreadyPinned");
            return;
        }
        prepare_retire(m);
        return;
    }
    m->kind = MOVE_DONE;
    if (strcmp(res.revision->hex, c->hex) == 0) {
        m->result = result(c->selector, c, c->hex, NULL, "alreadyPinned");
        return;
    }
    snprintf(m->hex, sizeof m->hex, "%s", res.revision->hex);
    pthread_mutex_lock(&rt->lock);
    m->spec = spec_repin(c->inst->spec, m->hex, res.tag ? res.tag : res.revision->tag);
    pthread_mutex_unlock(&rt->lock);
    if (!m->spec)
        return;
    if (c->running) {
        prepare_restart(rt, m, &res);
        return;
    }
    m->kind = MOVE_REPIN;
    apply_spec(rt, c->inst, json_incref(m->spec));
    m->result = result(c->selector, c, m->hex, c->hex, "refreshed");
}

static void finish_retire(struct runtime *rt, struct move *m, struct rtx_touches *touches)
{
    const struct candidate *c = m->c;
    bool was_running = m->posted && m->cmd.rc == 0 && m->cmd.was_running;
    pthread_mutex_lock(&rt->lock);
    stopped_locked(c->inst, "retired", NULL);
    pthread_mutex_unlock(&rt->lock);
    if (was_running)
        rtx_note_stop_into(rt, c->strategy, c->hex, "retired", touches);
    m->result = result(c->selector, c, c->hex, NULL, "retired");
}

/* A running instance the refresh stopped and could not start again: a
 * failure stop like those the workers make (counted as startFailed, logged
 * at error), not a restart. */
static void note_failed_start(struct runtime *rt, const struct move *m, const char *message,
                              struct rtx_touches *touches)
{
    const struct candidate *c = m->c;
    char hash[HASH_SPELLED_LEN + 1];
    hash_spell(m->hex, hash);
    log_json(LOG_LEVEL_ERROR, "runtime", "instance stopped",
             json_pack("{s:s, s:s, s:s, s:s, s:s, s:s}", "strategy", c->strategy, "hash", hash,
                       "instance", c->inst->id, "reason", "startFailed", "handler", "create",
                       "error", message));
    rtx_note_stop_into(rt, c->strategy, c->hex, "startFailed", touches);
}

/* The pin moves all the same; the instance stays stopped (startFailed). */
static void finish_no_plan(struct runtime *rt, struct move *m, struct rtx_touches *touches)
{
    const struct candidate *c = m->c;
    apply_spec(rt, c->inst, json_incref(m->spec));
    /* the instance may have stopped on its own (a limit) since it was
     * picked: that stop was counted when it happened */
    if (m->cmd.rc == 0 && m->cmd.was_running)
        note_failed_start(rt, m, m->err.message, touches);
    /* the old VM stopped (the command was waited for) and the new code
     * cannot run: nothing manages the orders */
    rtx_abandon_orders(rt, c->inst, "startFailed");
    pthread_mutex_lock(&rt->lock);
    stopped_locked(c->inst, "startFailed", m->err.message);
    pthread_mutex_unlock(&rt->lock);
    m->result = result(c->selector, c, m->hex, c->hex, "refreshed");
    if (m->result)
        json_object_set_new(m->result, "error", json_string(m->err.message));
}

/* A new VM that did not start leaves the instance stopped (startFailed) on
 * the new pin. */
static void finish_restart(struct runtime *rt, struct move *m, struct rtx_touches *touches)
{
    const struct candidate *c = m->c;
    struct command *cmd = &m->cmd;
    runtime_plan_free(cmd->plan);
    cmd->plan = NULL;
    if (cmd->spec) { /* not running any more: the pin moves all the same */
        apply_spec(rt, c->inst, cmd->spec);
        cmd->spec = NULL;
    }
    if (cmd->was_running && cmd->rc == 0) {
        rtx_note_stop_into(rt, c->strategy, c->hex, "refreshed", touches);
        rtx_note_start_into(rt, c->strategy, m->hex, touches);
    } else if (cmd->was_running) {
        note_failed_start(rt, m, cmd->err.message, touches);
    }
    if (cmd->rc != 0) {
        pthread_mutex_lock(&rt->lock);
        stopped_locked(c->inst, "startFailed", cmd->err.message);
        pthread_mutex_unlock(&rt->lock);
    }
    m->result = result(c->selector, c, m->hex, c->hex, "refreshed");
    if (m->result && cmd->rc != 0)
        json_object_set_new(m->result, "error", json_string(cmd->err.message));
}

static void finish(struct runtime *rt, struct move *m, struct rtx_touches *touches)
{
    if (m->posted)
        worker_wait(rt, &m->cmd);
    switch (m->kind) {
    case MOVE_DONE:
    case MOVE_REPIN:
        break;
    case MOVE_RESTART:
        finish_restart(rt, m, touches);
        break;
    case MOVE_RETIRE:
        finish_retire(rt, m, touches);
        break;
    case MOVE_NO_PLAN:
        finish_no_plan(rt, m, touches);
        break;
    }
    if (m->claimed)
        rtx_release_pending(rt, m->c->inst);
    json_decref(m->spec);
    m->spec = NULL;
    err_clear(&m->cmd.err);
    err_clear(&m->err);
}

/* Every changed record and usage touch in one transaction. */
static void persist_moves(struct runtime *rt, struct move *moves, size_t n,
                          const struct rtx_touches *touches)
{
    struct instance **insts = calloc(n ? n : 1, sizeof *insts);
    size_t k = 0;
    for (size_t i = 0; insts && i < n; i++) {
        if (moves[i].kind != MOVE_DONE)
            insts[k++] = moves[i].c->inst;
    }
    struct err err = ERR_INIT;
    if (!insts)
        err_set(&err, ERR_INTERNAL, "out of memory");
    if (!insts || rtx_persist_batch(rt, insts, k, touches, &err) != 0)
        log_error("runtime", "cannot persist the refreshed instances: %s", err.message);
    err_clear(&err);
    free(insts);
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
        list[i].start_failed = !inst->running && strcmp(inst->stop_reason, "startFailed") == 0;
        snprintf(list[i].strategy, sizeof list[i].strategy, "%s", inst->strategy);
        snprintf(list[i].hex, sizeof list[i].hex, "%s", inst->hex);
        snprintf(list[i].selector, sizeof list[i].selector, "%s", inst->selector);
    }
    pthread_mutex_unlock(&rt->lock);
    return list;
}

/* Whether the request names its targets (an empty list names none). */
static bool is_targeted(const json_t *request)
{
    return request && (json_is_array(json_object_get(request, "hashes")) ||
                       json_is_array(json_object_get(request, "strategies")));
}

static size_t count_targets(const json_t *request)
{
    return json_array_size(json_object_get(request, "hashes")) +
           json_array_size(json_object_get(request, "strategies"));
}

/* Picks the candidates the targets name and prepares each (see struct
 * move); returns how many moves were filled. */
static size_t prepare_all(struct runtime *rt, bool targeted, struct target *targets,
                          size_t ntargets, const struct candidate *list, size_t n,
                          struct move *moves)
{
    size_t nmoves = 0;
    for (size_t i = 0; i < n; i++) {
        bool picked = !targeted;
        for (size_t t = 0; t < ntargets; t++) {
            if (matches(&targets[t], &list[i])) {
                targets[t].matched = true;
                picked = true;
            }
        }
        if (!picked)
            continue;
        /* Each instance re-resolves against the catalogue as it is now, not
         * as it was when the refresh began, and claims its new revision at
         * once: a revision deleted meanwhile (its guard saw no instance on
         * it yet) must not be started. */
        struct move *m = &moves[nmoves++];
        m->c = &list[i];
        m->err = (struct err)ERR_INIT;
        struct registry *now = catalog_snapshot(rt->opts.catalog);
        prepare(rt, now, m);
        registry_release(now);
    }
    return nmoves;
}

/* Waits for every posted command, then persists everything at once. */
static void finish_all(struct runtime *rt, struct move *moves, size_t nmoves)
{
    struct rtx_touches touches = {0};
    for (size_t i = 0; i < nmoves; i++)
        finish(rt, &moves[i], &touches);
    persist_moves(rt, moves, nmoves, &touches);
    rtx_touches_free(&touches);
}

/* An instance stopped because a start failed (a refresh onto a revision
 * whose create() threw, say) was meant to run: a refresh that moves it
 * starts it on its new pin, so that rolling a failed promotion back brings
 * the fleet back. Each result says whether it started. rt->control held. */
static void start_repinned(struct runtime *rt, struct move *moves, size_t nmoves)
{
    for (size_t i = 0; i < nmoves; i++) {
        struct move *m = &moves[i];
        if (m->kind != MOVE_REPIN || !m->c->start_failed)
            continue;
        struct err err = ERR_INIT;
        int rc = rtx_start(rt, m->c->inst->id, true, &err);
        if (m->result) {
            json_object_set_new(m->result, "started", json_boolean(rc == 0));
            if (rc != 0)
                json_object_set_new(m->result, "error", json_string(err.message));
        }
        err_clear(&err);
    }
}

/* Every move's result, then one "retired" result with no instance for each
 * target that picked none; returns how many. */
static size_t collect(struct move *moves, size_t nmoves, const struct target *targets,
                      size_t ntargets, struct keyed *out)
{
    size_t n = 0;
    for (size_t i = 0; i < nmoves; i++) {
        const struct candidate *c = moves[i].c;
        if (moves[i].result)
            out[n++] = (struct keyed){c->selector, c->strategy, c->inst->id, moves[i].result};
        moves[i].result = NULL;
    }
    for (size_t t = 0; t < ntargets; t++) {
        if (targets[t].matched)
            continue;
        json_t *r = json_pack("{s:s, s:[], s:s}", "selector", targets[t].text, "instances",
                              "reason", "retired");
        if (r)
            out[n++] = (struct keyed){targets[t].text, "", "", r};
    }
    return n;
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
    struct move *moves = calloc(n ? n : 1, sizeof *moves);
    struct keyed *items = calloc(n + ntargets + 1, sizeof *items);
    if (!list || !moves || !items) {
        registry_release(reg);
        pthread_mutex_unlock(&rt->control);
        free(list);
        free(moves);
        free(items);
        free(targets);
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    size_t nmoves = prepare_all(rt, is_targeted(request), targets, ntargets, list, n, moves);
    finish_all(rt, moves, nmoves);
    start_repinned(rt, moves, nmoves);
    size_t nitems = collect(moves, nmoves, targets, ntargets, items);
    /* the keys point into list, targets and the instances (which a delete
     * may free once rt->control is released) */
    json_t *results = sorted(items, nitems);
    registry_release(reg);
    pthread_mutex_unlock(&rt->control);
    free(items);
    free(moves);
    free(list);
    free(targets);
    *response = results ? json_pack("{s:s, s:o}", "status", "ok", "results", results) : NULL;
    if (!*response) {
        err_set(err, ERR_INTERNAL, "out of memory");
        return -1;
    }
    return 0;
}
