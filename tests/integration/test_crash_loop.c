/*
 * Crash safety of the whole server, over many SIGKILLs.
 *
 * Each iteration restarts the server on the same directories, lets a client
 * thread drive a random mix of uploads, tag moves, revision deletes,
 * instance creates, starts, stops and deletes, and refreshes for a random
 * 20-300 ms, and kills the server with SIGKILL wherever it is. The client
 * keeps a model of everything the server acknowledged with a 2xx (at most
 * one request, the one in flight at the kill, is uncertain). Then:
 *
 *   - registry.json is valid, in the registry format, and every tag names a
 *     listed hash whose file exists and hashes to it (read on disk);
 *   - `sqlite3 stratd.db 'PRAGMA integrity_check'` says ok;
 *   - the server starts again, serves exactly registry.json, and reflects
 *     every acknowledged change: revisions present or deleted, tags where
 *     they were put, instances present, running or stopped as left (the
 *     running ones are running again right after the restart); the request
 *     in flight either happened entirely or not at all;
 *   - at the end, the audit log parses and holds at least one entry per
 *     acknowledged change.
 *
 * STRATD_CRASH_ITERATIONS sets the number of iterations (default 200; 100 in
 * the sanitizer build, where STRATD_TEST_SANITIZED is set by CMake), and
 * STRATD_CRASH_SEED the random seed (printed).
 */
#include "testutil.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define NSTRATEGIES 2
#define MAX_REVS 8192
#define MAX_TAGS (MAX_REVS + 16)
#define MAX_INSTANCES 256
#define CUSTOM_TAGS 3
#define LIVE_INSTANCES_MAX 6
#define LIVE_REVS_MAX 10

static const char *const strategies[NSTRATEGIES] = {"crasha", "crashb"};

enum op_kind {
    OP_UPLOAD,
    OP_TAG,
    OP_DELETE_REV,
    OP_CREATE,
    OP_START,
    OP_STOP,
    OP_DELETE_INSTANCE,
    OP_REFRESH,
    OP_KINDS
};

static const char *const op_names[OP_KINDS] = {
    "upload",         "tag move",      "revision delete", "instance create",
    "instance start", "instance stop", "instance delete", "refresh"};
/* The audit action each acknowledged change leaves. */
static const char *const op_actions[OP_KINDS] = {
    "module.upload",  "tag.move",      "module.deleteRevision", "instance.create",
    "instance.start", "instance.stop", "instance.delete",       "refresh"};

struct rev {
    int strategy;
    char hex[65];
    char tag[24]; /* its primary tag "u<n>" */
    bool present;
};

struct tag {
    int strategy;
    char name[24];
    int rev; /* index into revs; -1: not tracked (gone or unknown) */
};

struct inst {
    char id[24];
    int strategy;
    bool exists;
    bool running;
};

struct op {
    enum op_kind kind;
    int rev;  /* upload, delete, tag target */
    int tag;  /* tag move */
    int inst; /* instance ops */
};

struct model {
    struct rev revs[MAX_REVS];
    int nrevs;
    struct tag tags[MAX_TAGS];
    int ntags;
    struct inst insts[MAX_INSTANCES];
    int ninsts;
    long acked[OP_KINDS];
    long answered; /* every 2xx, all iterations */
    int uploads;   /* counter for unique sources */
};

struct client {
    char base_url[64];
    struct model *m;
    unsigned seed;
    atomic_bool stop;
    bool inflight; /* the request the kill cut (its effect is unknown) */
    struct op pending;
    char unexpected[2048];
    int requests;
};

/* --------------------------------------------------------------- model */

static int find_tag(struct model *m, int strategy, const char *name)
{
    for (int i = 0; i < m->ntags; i++) {
        if (m->tags[i].strategy == strategy && strcmp(m->tags[i].name, name) == 0)
            return i;
    }
    return -1;
}

static int add_tag(struct model *m, int strategy, const char *name, int rev)
{
    int t = find_tag(m, strategy, name);
    if (t < 0) {
        assert_true(m->ntags < MAX_TAGS);
        t = m->ntags++;
        m->tags[t].strategy = strategy;
        /* memcpy, not snprintf: at -O2 gcc cannot rule out that name points
         * into the model and fails the build with -Werror=restrict. */
        size_t len = strnlen(name, sizeof m->tags[t].name - 1);
        memcpy(m->tags[t].name, name, len);
        m->tags[t].name[len] = '\0';
    }
    m->tags[t].rev = rev;
    return t;
}

/* A revision that goes takes every tag pointing at it with it (latest moves
 * somewhere the model does not predict: it is no longer tracked). */
static void forget_rev(struct model *m, int rev)
{
    m->revs[rev].present = false;
    for (int i = 0; i < m->ntags; i++) {
        if (m->tags[i].rev == rev)
            m->tags[i].rev = -1;
    }
}

static int live_revs(const struct model *m, int strategy)
{
    int n = 0;
    for (int i = 0; i < m->nrevs; i++)
        n += m->revs[i].present && m->revs[i].strategy == strategy;
    return n;
}

static int live_instances(const struct model *m)
{
    int n = 0;
    for (int i = 0; i < m->ninsts; i++)
        n += m->insts[i].exists;
    return n;
}

/* A random present revision of the strategy (base revisions included when
 * allow_base), or -1. */
static int pick_rev(const struct model *m, int strategy, bool allow_base, unsigned *seed)
{
    int candidates[MAX_REVS];
    int n = 0;
    for (int i = 0; i < m->nrevs; i++) {
        if (m->revs[i].present && m->revs[i].strategy == strategy &&
            (allow_base || strncmp(m->revs[i].tag, "base", 4) != 0))
            candidates[n++] = i;
    }
    return n ? candidates[rand_r(seed) % (unsigned)n] : -1;
}

static int pick_inst(const struct model *m, int want_running, unsigned *seed)
{
    int candidates[MAX_INSTANCES];
    int n = 0;
    for (int i = 0; i < m->ninsts; i++) {
        if (m->insts[i].exists && (want_running < 0 || m->insts[i].running == (want_running > 0)))
            candidates[n++] = i;
    }
    return n ? candidates[rand_r(seed) % (unsigned)n] : -1;
}

/* -------------------------------------------------------------- client */

static int request(struct client *c, struct tu_response *res, const char *method, const char *path,
                   const char *body)
{
    char *url = tu_path("%s%s", c->base_url, path);
    struct tu_request_options o = {
        .body = body, .body_len = body ? strlen(body) : 0, .timeout_s = 60};
    int rc = tu_http_try(res, method, url, &o);
    free(url);
    return rc;
}

/* Chooses the next operation from the model (so that almost every request
 * is one the server should accept) and fills the request. */
static bool plan(struct client *c, struct op *op, char *method, char *path, size_t path_size,
                 char **body)
{
    struct model *m = c->m;
    unsigned *seed = &c->seed;
    *body = NULL;
    int s = (int)(rand_r(seed) % NSTRATEGIES);
    for (int attempt = 0; attempt < 20; attempt++) {
        enum op_kind kind = (enum op_kind)(rand_r(seed) % OP_KINDS);
        memset(op, 0, sizeof *op);
        op->kind = kind;
        op->rev = op->tag = op->inst = -1;
        switch (kind) {
        case OP_UPLOAD: {
            if (live_revs(m, s) >= LIVE_REVS_MAX || m->nrevs >= MAX_REVS)
                continue;
            int n = ++m->uploads;
            char extra[96];
            snprintf(extra, sizeof extra, "onTrade() { return %d; },", n);
            char *source = tu_module_source(strategies[s], NULL, extra);
            struct rev *r = &m->revs[m->nrevs];
            memset(r, 0, sizeof *r);
            r->strategy = s;
            snprintf(r->tag, sizeof r->tag, "u%d", n);
            tu_sha256_hex(source, strlen(source), r->hex);
            json_t *j = json_pack("{s:s, s:s}", "source", source, "tag", r->tag);
            *body = json_dumps(j, JSON_COMPACT);
            json_decref(j);
            free(source);
            op->rev = m->nrevs; /* committed to the model when answered */
            strcpy(method, "POST");
            snprintf(path, path_size, "/strategies/modules");
            return true;
        }
        case OP_TAG: {
            int rev = pick_rev(m, s, true, seed);
            if (rev < 0)
                continue;
            char name[16];
            unsigned which = rand_r(seed) % (CUSTOM_TAGS + 1);
            if (which == CUSTOM_TAGS)
                snprintf(name, sizeof name, "latest");
            else
                snprintf(name, sizeof name, "t%u", which);
            op->rev = rev;
            op->tag = find_tag(m, s, name);
            if (op->tag < 0)
                op->tag = add_tag(m, s, name, -1); /* not there yet, or unknown */
            strcpy(method, "PUT");
            snprintf(path, path_size, "/strategies/modules/%s/tags/%s", strategies[s], name);
            *body = tu_path("{\"hash\": \"sha256:%s\"}", m->revs[rev].hex);
            return true;
        }
        case OP_DELETE_REV: {
            int rev = pick_rev(m, s, false, seed);
            if (rev < 0)
                continue;
            op->rev = rev;
            strcpy(method, "DELETE");
            snprintf(path, path_size, "/strategies/modules/%s@sha256:%s", strategies[s],
                     m->revs[rev].hex);
            return true;
        }
        case OP_CREATE: {
            if (live_instances(m) >= LIVE_INSTANCES_MAX || m->ninsts >= MAX_INSTANCES)
                continue;
            struct inst *in = &m->insts[m->ninsts];
            memset(in, 0, sizeof *in);
            snprintf(in->id, sizeof in->id, "i%d", m->ninsts);
            in->strategy = s;
            op->inst = m->ninsts;
            strcpy(method, "POST");
            snprintf(path, path_size, "/strategy/instances");
            *body = tu_path("{\"id\": \"%s\", \"strategy\": {\"selector\": \"%s\", \"config\": "
                            "{}}, \"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}",
                            in->id, strategies[s]);
            return true;
        }
        case OP_START:
        case OP_STOP: {
            int i = pick_inst(m, kind == OP_STOP, seed);
            if (i < 0)
                continue;
            op->inst = i;
            strcpy(method, "POST");
            snprintf(path, path_size, "/strategy/instances/%s/%s", m->insts[i].id,
                     kind == OP_START ? "start" : "stop");
            return true;
        }
        case OP_DELETE_INSTANCE: {
            int i = pick_inst(m, 0, seed);
            if (i < 0 || live_instances(m) < 3)
                continue;
            op->inst = i;
            strcpy(method, "DELETE");
            snprintf(path, path_size, "/strategy/instances/%s", m->insts[i].id);
            return true;
        }
        case OP_REFRESH:
            strcpy(method, "POST");
            snprintf(path, path_size, "/strategies/refresh");
            *body = rand_r(seed) % 2 ? strdup("{}")
                                     : tu_path("{\"strategies\": [\"%s\"]}", strategies[s]);
            return true;
        case OP_KINDS:
            break;
        }
    }
    return false;
}

/* Applies an answered request to the model; false when the status was not
 * one this request may get. */
static bool apply(struct model *m, const struct op *op, const struct tu_response *res)
{
    long st = res->status;
    switch (op->kind) {
    case OP_UPLOAD:
        if (st != 201)
            return false;
        m->revs[op->rev].present = true;
        m->nrevs = op->rev + 1;
        add_tag(m, m->revs[op->rev].strategy, m->revs[op->rev].tag, op->rev);
        break;
    case OP_TAG:
        if (st != 200)
            return false;
        m->tags[op->tag].rev = op->rev;
        break;
    case OP_DELETE_REV:
        /* 409: a running instance pins it. */
        if (st == 409)
            return true;
        if (st != 204)
            return false;
        forget_rev(m, op->rev);
        break;
    case OP_CREATE:
        if (st != 201)
            return false;
        m->insts[op->inst].exists = true;
        m->ninsts = op->inst + 1;
        break;
    case OP_START:
    case OP_STOP:
        /* 409 for a start: the revision it is pinned to was deleted while
         * it was stopped (reason retired). */
        if (op->kind == OP_START && st == 409)
            return true;
        if (st != 200)
            return false;
        m->insts[op->inst].running = op->kind == OP_START;
        break;
    case OP_DELETE_INSTANCE:
        if (st != 200)
            return false;
        m->insts[op->inst].exists = false;
        m->insts[op->inst].running = false;
        break;
    case OP_REFRESH: {
        if (st != 200)
            return false;
        /* Instances follow `latest`, which always resolves: a refresh may
         * restart a running instance but never stops one. */
        size_t i;
        json_t *r;
        json_array_foreach(json_object_get(res->json, "results"), i, r)
        {
            const char *reason = json_string_value(json_object_get(r, "reason"));
            if (!reason)
                return false;
            if (strcmp(reason, "retired") != 0 && !json_object_get(r, "error"))
                continue;
            size_t j;
            json_t *id;
            json_array_foreach(json_object_get(r, "instances"), j, id)
            {
                for (int k = 0; k < m->ninsts; k++) {
                    if (strcmp(m->insts[k].id, json_string_value(id)) == 0 && m->insts[k].running)
                        return false;
                }
            }
        }
        break;
    }
    case OP_KINDS:
        return false;
    }
    m->acked[op->kind]++;
    m->answered++;
    return true;
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    char method[8], path[512];
    while (!atomic_load(&c->stop)) {
        struct op op;
        char *body = NULL;
        if (!plan(c, &op, method, path, sizeof path, &body))
            continue;
        struct tu_response res;
        c->pending = op;
        c->inflight = true;
        int rc = request(c, &res, method, path, body);
        c->requests++;
        if (rc != 0) {
            free(body); /* the kill: pending stays uncertain */
            break;
        }
        c->inflight = false;
        if (!apply(c->m, &op, &res) && !c->unexpected[0])
            snprintf(c->unexpected, sizeof c->unexpected, "%s %.300s (%s): got %ld: %.600s", method,
                     path, op_names[op.kind], res.status, res.body);
        tu_response_free(&res);
        free(body);
        if (c->unexpected[0])
            break;
    }
    return NULL;
}

/* -------------------------------------------------------- verification */

static const json_t *strategy_doc(const json_t *reg, int s)
{
    return json_object_get(reg, strategies[s]);
}

static bool rev_on_disk(const json_t *reg, const struct rev *r)
{
    char spelled[80];
    snprintf(spelled, sizeof spelled, "sha256:%s", r->hex);
    return json_object_get(json_object_get(strategy_doc(reg, r->strategy), "hashes"), spelled) !=
           NULL;
}

static const char *tag_on_disk(const json_t *reg, int s, const char *tag)
{
    const char *v =
        json_string_value(json_object_get(json_object_get(strategy_doc(reg, s), "tags"), tag));
    return v && strlen(v) == 71 ? v + 7 : NULL;
}

/* The instance list as {id: running}. */
static json_t *instances_running(struct tu_server *srv)
{
    json_t *list = tu_get_json(srv, 200, "/strategy/instances");
    json_t *out = json_object();
    size_t i;
    json_t *inst;
    json_array_foreach(json_object_get(list, "instances"), i, inst)
    {
        json_object_set(out, json_string_value(json_object_get(inst, "id")),
                        json_object_get(inst, "running"));
    }
    json_decref(list);
    return out;
}

/* The request in flight at the kill happened entirely or not at all: the
 * model takes whichever is on disk, after checking it is one of the two. */
static void settle_inflight(struct model *m, const struct op *op, const json_t *reg,
                            const json_t *running, int iteration)
{
    switch (op->kind) {
    case OP_UPLOAD: {
        struct rev *r = &m->revs[op->rev];
        if (rev_on_disk(reg, r)) {
            r->present = true;
            m->nrevs = op->rev + 1;
            const char *t = tag_on_disk(reg, r->strategy, r->tag);
            if (!t || strcmp(t, r->hex) != 0)
                fail_msg("iteration %d: the interrupted upload of %s is there but its tag %s is "
                         "not",
                         iteration, r->hex, r->tag);
            add_tag(m, r->strategy, r->tag, op->rev);
        } else if (tag_on_disk(reg, r->strategy, r->tag)) {
            fail_msg("iteration %d: the interrupted upload's tag %s exists without it", iteration,
                     r->tag);
        }
        break;
    }
    case OP_TAG: {
        struct tag *t = &m->tags[op->tag];
        const char *now = tag_on_disk(reg, t->strategy, t->name);
        const char *before = t->rev >= 0 ? m->revs[t->rev].hex : NULL;
        if (now && strcmp(now, m->revs[op->rev].hex) == 0)
            t->rev = op->rev;
        else if (before && (!now || strcmp(now, before) != 0))
            fail_msg("iteration %d: tag %s:%s is %s, neither its old target %s nor the new %s",
                     iteration, strategies[t->strategy], t->name, now ? now : "(absent)", before,
                     m->revs[op->rev].hex);
        else if (!before)
            t->rev = -1; /* untracked before, and not moved: still unknown */
        break;
    }
    case OP_DELETE_REV:
        if (!rev_on_disk(reg, &m->revs[op->rev]))
            forget_rev(m, op->rev);
        break;
    case OP_CREATE: {
        struct inst *in = &m->insts[op->inst];
        json_t *r = json_object_get(running, in->id);
        if (r) {
            if (json_is_true(r))
                fail_msg("iteration %d: the instance %s whose creation was interrupted runs",
                         iteration, in->id);
            in->exists = true;
            m->ninsts = op->inst + 1;
        }
        break;
    }
    case OP_START:
    case OP_STOP:
        m->insts[op->inst].running = json_is_true(json_object_get(running, m->insts[op->inst].id));
        break;
    case OP_DELETE_INSTANCE:
        if (!json_object_get(running, m->insts[op->inst].id)) {
            m->insts[op->inst].exists = false;
            m->insts[op->inst].running = false;
        }
        break;
    case OP_REFRESH:
    case OP_KINDS:
        break;
    }
}

static void check_sqlite(const struct tu_server *srv, int iteration)
{
    char *out = NULL;
    int rc = tu_run(&out, "sqlite3 '%s/stratd.db' 'PRAGMA integrity_check' 2>&1", srv->state_dir);
    if (rc != 0 || strcmp(out, "ok\n") != 0)
        fail_msg("iteration %d: sqlite3 integrity_check (exit %d): %s", iteration, rc, out);
    free(out);
}

static void check_served(struct tu_server *srv, const json_t *disk, int iteration)
{
    json_t *exp = tu_get_json(srv, 200, "/strategies/registry");
    if (!json_equal(json_object_get(exp, "registry"), disk)) {
        char *a = json_dumps(json_object_get(exp, "registry"), JSON_COMPACT | JSON_SORT_KEYS);
        char *b = json_dumps(disk, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("iteration %d: the restarted server serves another registry:\nserved %s\ndisk   "
                 "%s",
                 iteration, a, b);
    }
    json_decref(exp);
}

static void verify(struct tu_server *srv, struct model *m, const struct client *c, int iteration)
{
    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    check_sqlite(srv, iteration);
    tu_server_restart(srv, NULL);
    check_served(srv, reg, iteration);
    json_t *running = instances_running(srv);
    if (c->inflight)
        settle_inflight(m, &c->pending, reg, running, iteration);

    for (int i = 0; i < m->nrevs; i++) {
        const struct rev *r = &m->revs[i];
        if (r->present != rev_on_disk(reg, r))
            fail_msg("iteration %d: revision %s:%s (%s) should be %s", iteration,
                     strategies[r->strategy], r->hex, r->tag, r->present ? "there" : "gone");
    }
    for (int i = 0; i < m->ntags; i++) {
        const struct tag *t = &m->tags[i];
        if (t->rev < 0)
            continue;
        const char *now = tag_on_disk(reg, t->strategy, t->name);
        if (!now || strcmp(now, m->revs[t->rev].hex) != 0)
            fail_msg("iteration %d: tag %s:%s is %s, acknowledged at %s", iteration,
                     strategies[t->strategy], t->name, now ? now : "(absent)", m->revs[t->rev].hex);
    }
    size_t expected = 0;
    for (int i = 0; i < m->ninsts; i++) {
        const struct inst *in = &m->insts[i];
        json_t *r = json_object_get(running, in->id);
        if (!in->exists) {
            if (r)
                fail_msg("iteration %d: the deleted instance %s is back", iteration, in->id);
            continue;
        }
        expected++;
        if (!r)
            fail_msg("iteration %d: the instance %s is gone", iteration, in->id);
        if (json_is_true(r) != in->running) {
            json_t *snap = tu_get_json(srv, 200, "/strategy/instances/%s", in->id);
            fail_msg("iteration %d: instance %s is %s after the restart, acknowledged %s: %s",
                     iteration, in->id, json_is_true(r) ? "running" : "stopped",
                     in->running ? "running" : "stopped", json_dumps(snap, JSON_COMPACT));
        }
    }
    if (json_object_size(running) != expected)
        fail_msg("iteration %d: %zu instances listed, %zu expected", iteration,
                 json_object_size(running), expected);
    json_decref(running);
    json_decref(reg);
}

static void check_audit(struct tu_server *srv, const struct model *m)
{
    json_t *audit = tu_audit_entries(srv);
    long found[OP_KINDS] = {0};
    size_t i;
    json_t *e;
    json_array_foreach(audit, i, e)
    {
        const char *action = json_string_value(json_object_get(e, "action"));
        for (int k = 0; action && k < OP_KINDS; k++) {
            /* An upload's tag moves are audited as tag.move too. */
            if (strcmp(action, op_actions[k]) == 0)
                found[k]++;
        }
    }
    for (int k = 0; k < OP_KINDS; k++) {
        print_message("  %-16s acknowledged %5ld, audited %5ld\n", op_names[k], m->acked[k],
                      found[k]);
        if (found[k] < m->acked[k])
            fail_msg("%ld acknowledged %s but only %ld audit entries %s", m->acked[k], op_names[k],
                     found[k], op_actions[k]);
    }
    json_decref(audit);
}

/* ---------------------------------------------------------------- test */

static int iterations(void)
{
    const char *env = getenv("STRATD_CRASH_ITERATIONS");
    if (env && *env)
        return atoi(env);
    return getenv("STRATD_TEST_SANITIZED") ? 100 : 200;
}

static void seed_strategies(struct tu_server *srv, struct model *m)
{
    for (int s = 0; s < NSTRATEGIES; s++) {
        char *source = tu_module_source(strategies[s], NULL, "onTrade() {},");
        char hex[65];
        tu_upload_expect(srv, source, "{\"tag\": \"base\"}", 201, hex);
        struct rev *r = &m->revs[m->nrevs];
        r->strategy = s;
        snprintf(r->tag, sizeof r->tag, "base");
        memcpy(r->hex, hex, 65);
        r->present = true;
        add_tag(m, s, "base", m->nrevs);
        m->nrevs++;
        free(source);
    }
}

static void test_sigkill_loop(void **state)
{
    struct tu_server *srv = *state;
    int n = iterations();
    const char *seed_env = getenv("STRATD_CRASH_SEED");
    unsigned seed = seed_env && *seed_env ? (unsigned)strtoul(seed_env, NULL, 10)
                                          : (unsigned)time(NULL) ^ (unsigned)getpid();
    print_message("%d iterations, seed %u (STRATD_CRASH_SEED to repeat)\n", n, seed);
    struct model *m = calloc(1, sizeof *m);
    assert_non_null(m);
    tu_server_start(srv, NULL);
    seed_strategies(srv, m);
    long requests = 0, uncertain = 0;
    time_t started = time(NULL);
    for (int it = 1; it <= n; it++) {
        struct client c;
        memset(&c, 0, sizeof c);
        snprintf(c.base_url, sizeof c.base_url, "%s", srv->base_url);
        c.m = m;
        c.seed = seed + (unsigned)it * 7919u;
        pthread_t thread;
        assert_int_equal(pthread_create(&thread, NULL, client_main, &c), 0);
        unsigned delay_ms = 20 + (unsigned)(rand_r(&seed) % 281);
        struct timespec ts = {0, (long)delay_ms * 1000000L};
        nanosleep(&ts, NULL);
        tu_server_kill(srv);
        atomic_store(&c.stop, true);
        pthread_join(thread, NULL);
        if (c.unexpected[0])
            fail_msg("iteration %d: %s", it, c.unexpected);
        requests += c.requests;
        uncertain += c.inflight;
        verify(srv, m, &c, it);
        if (it % 20 == 0 || it == n)
            print_message("iteration %d: %ld requests, %ld acknowledged, %ld cut by the kill, "
                          "%d revisions and %d instances live (%lds)\n",
                          it, requests, m->answered, uncertain, live_revs(m, 0) + live_revs(m, 1),
                          live_instances(m), (long)(time(NULL) - started));
    }
    check_audit(srv, m);
    tu_server_stop(srv);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sigkill_loop, tu_server_setup, tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
