/*
 * Crash safety of the registry: a client thread uploads revisions, moves
 * and deletes tags and deletes revisions as fast as the server answers,
 * while the test kills the server with SIGKILL at a different moment in
 * each cycle. After every kill:
 *
 *   - registry.json on disk is valid JSON in the registry format, every tag
 *     names a listed hash, and every hash names a file whose bytes hash to
 *     it (tu_assert_registry_sound);
 *   - every upload the server acknowledged (and that the client did not
 *     delete afterwards) is there, with its file;
 *   - the server starts again on the same directories and serves exactly
 *     that registry: the export equals the file, no revision is invalid, and
 *     every tag's source download hashes to the tag's target.
 *
 * Also: writes wait for the registry lock that other processes (the
 * bootstrap tool) take, and take their changes into account; concurrent
 * writers lose nothing.
 */
#include "testutil.h"

#include <curl/curl.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <time.h>
#include <unistd.h>

#define CYCLES 25
#define MAX_UPLOADS 4096

struct client {
    char base_url[64];
    int cycle;
    char base[2][65]; /* the two seed revisions, never deleted */
    atomic_bool stop;
    atomic_bool done; /* the client loop has ended */
    atomic_int acked; /* writes acknowledged in this cycle */
    /* Shared with the main thread only after join. */
    char (*uploaded)[65]; /* acknowledged uploads, over all cycles */
    size_t nuploaded;
    char (*deleting)[65]; /* revisions a delete was sent for (answered or not) */
    size_t ndeleting;
    char unexpected[1024]; /* the first answer that was not the expected one */
};

static int request(struct client *c, struct tu_response *res, const char *method, const char *path,
                   const char *body)
{
    char url[512];
    snprintf(url, sizeof url, "%s%s", c->base_url, path);
    struct tu_request_options o = {
        .body = body, .body_len = body ? strlen(body) : 0, .timeout_s = 30};
    return tu_http_try(res, method, url, &o);
}

/* Returns false when the loop should end: the server is gone, or it gave
 * an answer other than `expected` (recorded). */
static bool exchange(struct client *c, const char *method, const char *path, const char *body,
                     long expected)
{
    struct tu_response res;
    if (request(c, &res, method, path, body) != 0)
        return false;
    bool ok = res.status == expected;
    if (!ok && !c->unexpected[0])
        snprintf(c->unexpected, sizeof c->unexpected, "%s %s: expected %ld, got %ld: %.600s",
                 method, path, expected, res.status, res.body);
    tu_response_free(&res);
    if (ok)
        atomic_fetch_add(&c->acked, 1);
    return ok;
}

static bool upload(struct client *c, int i, char hex[65])
{
    char body_code[96];
    snprintf(body_code, sizeof body_code, "onTrade() { return %d; },", c->cycle * 100000 + i);
    char *source = tu_module_source("crash", NULL, body_code);
    char tag[32];
    snprintf(tag, sizeof tag, "c%d-%d", c->cycle, i);
    json_t *body = json_pack("{s:s, s:s, s:[s]}", "source", source, "tag", tag, "aliases", "hot");
    char *text = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    tu_sha256_hex(source, strlen(source), hex);
    bool ok = exchange(c, "POST", "/strategies/modules", text, 201);
    if (ok && c->nuploaded < MAX_UPLOADS)
        memcpy(c->uploaded[c->nuploaded++], hex, 65);
    free(text);
    free(source);
    return ok;
}

static void *client_main(void *arg)
{
    struct client *c = arg;
    char live[65] = "";   /* the newest upload still in the registry */
    char recent[65] = ""; /* the upload of this round of five */
    char path[256], body[256];
    for (int i = 0; !atomic_load(&c->stop); i++) {
        bool ok = true;
        int round = i / 5;
        switch (i % 5) {
        case 0:
            ok = upload(c, i, recent);
            if (ok)
                memcpy(live, recent, sizeof live);
            break;
        case 1: { /* prod moves between the seeds and the newest upload */
            const char *target = round % 3 == 2 && live[0] ? live : c->base[round % 2];
            snprintf(body, sizeof body, "{\"hash\": \"sha256:%s\"}", target);
            ok = exchange(c, "PUT", "/strategies/modules/crash/tags/prod", body, 200);
            break;
        }
        case 2:
            snprintf(body, sizeof body, "{\"hash\": \"%s\"}", live[0] ? live : c->base[0]);
            ok = exchange(c, "PUT", "/strategies/modules/crash/tags/latest", body, 200);
            break;
        case 3: /* the upload's own tag goes; "hot" or latest may still hold it */
            snprintf(path, sizeof path, "/strategies/modules/crash/tags/c%d-%d?allowOrphan=true",
                     c->cycle, i - 3);
            ok = exchange(c, "DELETE", path, NULL, 200);
            break;
        case 4: /* every other round, the upload goes entirely */
            if (round % 2 == 0) {
                if (c->ndeleting < MAX_UPLOADS)
                    memcpy(c->deleting[c->ndeleting++], recent, 65);
                snprintf(path, sizeof path, "/strategies/modules/crash@sha256:%s", recent);
                ok = exchange(c, "DELETE", path, NULL, 204);
                if (ok && strcmp(live, recent) == 0)
                    live[0] = '\0';
            }
            break;
        }
        if (!ok)
            break;
    }
    atomic_store(&c->done, true);
    return NULL;
}

static bool listed(char (*list)[65], size_t n, const char *hex)
{
    for (size_t i = 0; i < n; i++) {
        if (strcmp(list[i], hex) == 0)
            return true;
    }
    return false;
}

/* The files and registry.json as the kill left them. */
static void check_disk(const struct tu_server *srv, const struct client *c, int cycle)
{
    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    const json_t *hashes = json_object_get(json_object_get(reg, "crash"), "hashes");
    for (size_t i = 0; i < c->nuploaded; i++) {
        if (listed(c->deleting, c->ndeleting, c->uploaded[i]))
            continue;
        char spelled[80];
        snprintf(spelled, sizeof spelled, "sha256:%s", c->uploaded[i]);
        if (!json_object_get(hashes, spelled))
            fail_msg("cycle %d: the acknowledged upload %s is not in registry.json", cycle,
                     spelled);
    }
    for (int b = 0; b < 2; b++) {
        char spelled[80];
        snprintf(spelled, sizeof spelled, "sha256:%s", c->base[b]);
        if (!json_object_get(hashes, spelled))
            fail_msg("cycle %d: the seed revision %s is gone", cycle, spelled);
    }
    if (!json_object_get(reg, "steady"))
        fail_msg("cycle %d: the untouched strategy 'steady' is gone", cycle);
    json_decref(reg);
}

/* The restarted server serves exactly what is on disk. */
static void check_served(struct tu_server *srv, int cycle)
{
    json_t *disk = tu_assert_registry_sound(srv->strategies_dir);
    json_t *exp = tu_get_json(srv, 200, "/strategies/registry");
    if (!json_equal(json_object_get(exp, "registry"), disk)) {
        char *a = json_dumps(json_object_get(exp, "registry"), JSON_COMPACT | JSON_SORT_KEYS);
        char *b = json_dumps(disk, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("cycle %d: after the restart the export differs from registry.json:\nexport %s\n"
                 "disk   %s",
                 cycle, a, b);
    }
    json_decref(exp);

    json_t *listing = tu_get_json(srv, 200, "/strategies/modules");
    size_t i, j;
    const json_t *module, *rev;
    json_array_foreach(json_object_get(listing, "modules"), i, module)
    {
        json_array_foreach(json_object_get(module, "revisions"), j, rev)
        {
            if (!json_is_false(json_object_get(rev, "invalid"))) {
                char *dump = json_dumps(rev, JSON_COMPACT);
                fail_msg("cycle %d: after the restart a revision is not valid: %s", cycle, dump);
            }
        }
    }
    assert_int_equal(tu_jint(listing, "total"), (long long)json_object_size(disk));
    json_decref(listing);

    const char *name;
    const json_t *strategy;
    json_object_foreach(disk, name, strategy)
    {
        const char *tag;
        const json_t *target;
        json_object_foreach(json_object_get(strategy, "tags"), tag, target)
        {
            struct tu_response res;
            tu_get(srv, &res, "/strategies/modules/%s:%s/source", name, tag);
            if (res.status != 200)
                fail_msg("cycle %d: source of %s:%s: HTTP %ld %s", cycle, name, tag, res.status,
                         res.body);
            char hex[65];
            tu_sha256_hex(res.body, res.len, hex);
            if (strcmp(hex, json_string_value(target) + 7) != 0)
                fail_msg("cycle %d: %s:%s serves bytes hashing to %s, the tag says %s", cycle, name,
                         tag, hex, json_string_value(target));
            tu_response_free(&res);
        }
    }
    json_decref(disk);
}

static void test_sigkill_while_writing_never_tears_the_registry(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct client *c = calloc(1, sizeof *c);
    c->uploaded = calloc(MAX_UPLOADS, sizeof *c->uploaded);
    c->deleting = calloc(MAX_UPLOADS, sizeof *c->deleting);
    assert_non_null(c->uploaded);
    assert_non_null(c->deleting);
    char *a = tu_module_source("crash", "v1", NULL);
    char *b = tu_module_source("crash", "v2", "onTicker() {},");
    char *steady = tu_module_source("steady", "v1", NULL);
    tu_upload_expect(srv, a, NULL, 201, c->base[0]);
    tu_upload_expect(srv, b, NULL, 201, c->base[1]);
    tu_upload_expect(srv, steady, NULL, 201, NULL);

    int total_acked = 0;
    for (int cycle = 0; cycle < CYCLES; cycle++) {
        if (cycle > 0) {
            tu_server_restart(srv, NULL);
            check_served(srv, cycle);
        }
        snprintf(c->base_url, sizeof c->base_url, "%s", srv->base_url);
        c->cycle = cycle;
        atomic_store(&c->stop, false);
        atomic_store(&c->done, false);
        atomic_store(&c->acked, 0);
        pthread_t thread;
        assert_int_equal(pthread_create(&thread, NULL, client_main, c), 0);

        /* Let the client get going, then kill at a moment that differs from
         * cycle to cycle. */
        int want = 2 + cycle % 6;
        time_t deadline = time(NULL) + 120;
        while (atomic_load(&c->acked) < want && !atomic_load(&c->done) && time(NULL) < deadline)
            usleep(500);
        usleep((useconds_t)((cycle * 7919) % 60000));
        tu_server_kill(srv);
        atomic_store(&c->stop, true);
        pthread_join(thread, NULL);
        if (c->unexpected[0])
            fail_msg("cycle %d: %s", cycle, c->unexpected);
        total_acked += atomic_load(&c->acked);
        check_disk(srv, c, cycle);
    }
    /* The client did real work, and the last state is served and survives
     * a clean stop. */
    print_message("%d cycles, %d acknowledged writes, %zu acknowledged uploads, %zu revision "
                  "deletes sent\n",
                  CYCLES, total_acked, c->nuploaded, c->ndeleting);
    assert_true(total_acked >= CYCLES * 2);
    assert_true(c->nuploaded > 0);
    tu_server_restart(srv, NULL);
    check_served(srv, CYCLES);
    tu_server_stop(srv);
    json_decref(tu_assert_registry_sound(srv->strategies_dir));

    free(a);
    free(b);
    free(steady);
    free(c->uploaded);
    free(c->deleting);
    free(c);
}

/* ------------------------------------------------------ the file lock */

struct pending {
    char url[128];
    char *body;
    atomic_bool done;
    int rc;
    struct tu_response res;
};

static void *send_pending(void *arg)
{
    struct pending *p = arg;
    struct tu_request_options o = {.body = p->body, .body_len = strlen(p->body)};
    p->rc = tu_http_try(&p->res, "POST", p->url, &o);
    atomic_store(&p->done, true);
    return NULL;
}

static void test_writes_wait_for_the_registry_lock(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *a = tu_module_source("locked", "v1", NULL);
    char *b = tu_module_source("locked", "v2", "onTrade() {},");
    char ha[65], hb[65];
    tu_upload_expect(srv, a, NULL, 201, ha);
    tu_sha256_hex(b, strlen(b), hb);

    /* Another process (the bootstrap tool) holds the lock ... */
    char *lock_path = tu_path("%s/.registry.lock", srv->strategies_dir);
    int fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(flock(fd, LOCK_EX), 0);
    char *reg_path = tu_path("%s/registry.json", srv->strategies_dir);
    char *before = tu_read_file(reg_path, NULL);
    assert_non_null(before);

    struct pending *p = calloc(1, sizeof *p);
    snprintf(p->url, sizeof p->url, "%s/strategies/modules", srv->base_url);
    json_t *body = json_pack("{s:s}", "source", b);
    p->body = json_dumps(body, JSON_COMPACT);
    json_decref(body);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, send_pending, p), 0);
    usleep(300000);
    if (atomic_load(&p->done))
        fail_msg("an upload completed (HTTP %ld) while another process held %s", p->res.status,
                 lock_path);
    char *during = tu_read_file(reg_path, NULL);
    assert_string_equal(during, before);
    free(during);

    /* ... and changes registry.json under it: a tag the server does not
     * know about yet. */
    json_t *reg = tu_registry_disk(srv);
    char *sa = tu_path("sha256:%s", ha);
    json_object_set_new(json_object_get(json_object_get(reg, "locked"), "tags"), "external",
                        json_string(sa));
    char *tmp = tu_path("%s/registry.json.bootstrap", srv->strategies_dir);
    assert_int_equal(json_dump_file(reg, tmp, JSON_INDENT(2)), 0);
    assert_int_equal(rename(tmp, reg_path), 0);
    json_decref(reg);
    assert_int_equal(flock(fd, LOCK_UN), 0);
    close(fd);

    pthread_join(thread, NULL);
    if (p->rc != 0)
        fail_msg("the upload got no answer after the lock was released");
    tu_assert_status(&p->res, 201);
    tu_response_free(&p->res);

    /* Both changes are there: the upload did not overwrite the other
     * process's edit. */
    reg = tu_assert_registry_sound(srv->strategies_dir);
    const json_t *st = json_object_get(reg, "locked");
    char *sb = tu_path("sha256:%s", hb);
    const char *ext = json_string_value(json_object_get(json_object_get(st, "tags"), "external"));
    if (!ext || strcmp(ext, sa) != 0)
        fail_msg("the tag written under the lock by another process was lost: %s",
                 ext ? ext : "(gone)");
    assert_non_null(json_object_get(json_object_get(st, "hashes"), sb));
    json_decref(reg);
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/locked:external");
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), sa);
    json_decref(m);

    free(sb);
    free(tmp);
    free(sa);
    free(p->body);
    free(p);
    free(before);
    free(reg_path);
    free(lock_path);
    free(a);
    free(b);
    tu_server_stop(srv);
}

/* ------------------------------------------------- concurrent writers */

#define WRITERS 4
#define WRITES 8

struct writer {
    char base_url[64];
    int id;
    char hex[WRITES][65];
    char failure[512];
};

static void *writer_main(void *arg)
{
    struct writer *w = arg;
    for (int i = 0; i < WRITES && !w->failure[0]; i++) {
        char code[64], tag[32], url[160];
        snprintf(code, sizeof code, "onTrade() { return %d; },", w->id * 1000 + i);
        snprintf(tag, sizeof tag, "w%d-%d", w->id, i);
        char *source = tu_module_source("busy", NULL, code);
        tu_sha256_hex(source, strlen(source), w->hex[i]);
        json_t *body = json_pack("{s:s, s:s}", "source", source, "tag", tag);
        char *text = json_dumps(body, JSON_COMPACT);
        json_decref(body);
        snprintf(url, sizeof url, "%s/strategies/modules", w->base_url);
        struct tu_request_options o = {.body = text, .body_len = strlen(text)};
        struct tu_response res;
        if (tu_http_try(&res, "POST", url, &o) != 0)
            snprintf(w->failure, sizeof w->failure, "upload %s: no answer", tag);
        else if (res.status != 201)
            snprintf(w->failure, sizeof w->failure, "upload %s: HTTP %ld %.300s", tag, res.status,
                     res.body);
        tu_response_free(&res);
        free(text);
        free(source);
        if (w->failure[0])
            break;
        /* The writer's own tag follows its newest upload. */
        char tag_body[128];
        snprintf(tag_body, sizeof tag_body, "{\"hash\": \"sha256:%s\"}", w->hex[i]);
        snprintf(url, sizeof url, "%s/strategies/modules/busy/tags/own-%d", w->base_url, w->id);
        struct tu_request_options t = {.body = tag_body, .body_len = strlen(tag_body)};
        if (tu_http_try(&res, "PUT", url, &t) != 0)
            snprintf(w->failure, sizeof w->failure, "tag own-%d: no answer", w->id);
        else if (res.status != 200)
            snprintf(w->failure, sizeof w->failure, "tag own-%d: HTTP %ld %.300s", w->id,
                     res.status, res.body);
        tu_response_free(&res);
    }
    return NULL;
}

static void test_concurrent_writers_lose_nothing(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *seed = tu_module_source("busy", "v1", NULL);
    tu_upload_expect(srv, seed, NULL, 201, NULL);
    struct writer *w = calloc(WRITERS, sizeof *w);
    pthread_t threads[WRITERS];
    for (int k = 0; k < WRITERS; k++) {
        snprintf(w[k].base_url, sizeof w[k].base_url, "%s", srv->base_url);
        w[k].id = k;
        assert_int_equal(pthread_create(&threads[k], NULL, writer_main, &w[k]), 0);
    }
    for (int k = 0; k < WRITERS; k++)
        pthread_join(threads[k], NULL);
    for (int k = 0; k < WRITERS; k++) {
        if (w[k].failure[0])
            fail_msg("writer %d: %s", k, w[k].failure);
    }

    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    const json_t *st = json_object_get(reg, "busy");
    const json_t *tags = json_object_get(st, "tags");
    assert_int_equal(json_object_size(json_object_get(st, "hashes")), 1 + WRITERS * WRITES);
    for (int k = 0; k < WRITERS; k++) {
        for (int i = 0; i < WRITES; i++) {
            char tag[32], spelled[80];
            snprintf(tag, sizeof tag, "w%d-%d", k, i);
            snprintf(spelled, sizeof spelled, "sha256:%s", w[k].hex[i]);
            const char *target = json_string_value(json_object_get(tags, tag));
            if (!target || strcmp(target, spelled) != 0)
                fail_msg("busy:%s is %s, expected %s", tag, target ? target : "(lost)", spelled);
        }
        char own[32], spelled[80];
        snprintf(own, sizeof own, "own-%d", k);
        snprintf(spelled, sizeof spelled, "sha256:%s", w[k].hex[WRITES - 1]);
        const char *target = json_string_value(json_object_get(tags, own));
        if (!target || strcmp(target, spelled) != 0)
            fail_msg("busy:%s is %s, expected %s", own, target ? target : "(lost)", spelled);
    }
    json_t *exp = tu_get_json(srv, 200, "/strategies/registry");
    assert_true(json_equal(json_object_get(exp, "registry"), reg));
    json_decref(exp);
    json_decref(reg);
    free(w);
    free(seed);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_sigkill_while_writing_never_tears_the_registry,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_writes_wait_for_the_registry_lock, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_concurrent_writers_lose_nothing, tu_server_setup,
                                        tu_server_teardown),
    };
    /* The tests use libcurl from several threads. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    curl_global_cleanup();
    return rc;
}
