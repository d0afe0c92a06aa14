/*
 * Faults from the environment:
 *
 *   - the disk under the strategies directory fills up (a small tmpfs):
 *     an upload whose file does not fit, and one whose file fits but whose
 *     registry.json does not, and a tag move, answer 507 (or 500) with
 *     registry.json, the files and the served catalogue exactly as before;
 *     once space is back, the same requests succeed;
 *   - the disk under the state directory fills up: an instance change
 *     answers 507 (or 500), nothing changes, and the server keeps serving;
 *   - a read-only state directory (a read-only tmpfs: root ignores modes):
 *     the server refuses to start and names the directory;
 *   - a second server on the same state directory refuses to start;
 *   - registry.json edited by hand into invalid JSON: a refresh answers 409
 *     saying why, the last good catalogue stays in service (instances keep
 *     running), a write refuses rather than overwrite the edit, and fixing
 *     the file brings everything back; a restart on the broken file refuses
 *     with a message naming it;
 *   - revision files corrupted or removed on disk: a refresh reports them as
 *     problems and they are shown invalid, never served.
 *
 * The mounts need root (CI and the development container run tests as
 * root); where mount(8) is refused the tests that need it are skipped with
 * a message.
 */
#include "testutil.h"

#include "core/fsutil.h"
#include "core/hash.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- mounts */

struct mount_fixture {
    struct tu_server srv;
    char *root;
    char *mnt; /* a tmpfs, or NULL */
};

static bool mount_tmpfs(const char *dir, const char *size)
{
    char *out = NULL;
    int rc = tu_run(&out, "mount -t tmpfs -o size=%s,mode=0755 tmpfs '%s' 2>&1", size, dir);
    if (rc != 0)
        print_message("mount -t tmpfs at %s failed (%d): %s", dir, rc, out ? out : "");
    free(out);
    return rc == 0;
}

static int fixture_setup(void **state)
{
    struct mount_fixture *f = calloc(1, sizeof *f);
    *state = f;
    return f ? 0 : -1;
}

static int fixture_teardown(void **state)
{
    struct mount_fixture *f = *state;
    if (!f)
        return 0;
    tu_server_kill(&f->srv);
    tu_server_cleanup(&f->srv);
    if (f->mnt) {
        char *out = NULL;
        tu_run(&out, "umount -l '%s' 2>&1", f->mnt);
        free(out);
        free(f->mnt);
    }
    if (f->root && !getenv("STRATD_TEST_KEEP"))
        tu_remove_tree(f->root);
    free(f->root);
    free(f);
    *state = NULL;
    return 0;
}

/* A tmpfs of `size` at <root>/fs; false (and the test skipped) when mounts
 * are not permitted here. */
static bool with_tmpfs(struct mount_fixture *f, const char *size)
{
    f->root = tu_tempdir("stratd-faults");
    f->mnt = tu_path("%s/fs", f->root);
    assert_int_equal(mkdir(f->mnt, 0755), 0);
    if (!mount_tmpfs(f->mnt, size)) {
        free(f->mnt);
        f->mnt = NULL;
        return false;
    }
    return true;
}

#define REQUIRE_TMPFS(f, size)                                                                     \
    do {                                                                                           \
        if (!with_tmpfs((f), (size))) {                                                            \
            print_message("skipped: cannot mount a tmpfs here (needs root and mount "              \
                          "permission)\n");                                                        \
            skip();                                                                                \
        }                                                                                          \
    } while (0)

/* Free blocks of the filesystem holding `dir`. */
static unsigned long free_blocks(const char *dir)
{
    struct statvfs sv;
    assert_int_equal(statvfs(dir, &sv), 0);
    return (unsigned long)sv.f_bavail;
}

/* Fills the filesystem of `dir` to the last byte with <dir>/filler, after
 * setting `keep_pages` pages aside in <dir>/spacer, which it then removes:
 * what is left free is those pages and nothing else. */
static void fill_leaving(const char *dir, unsigned long keep_pages)
{
    char *spacer = tu_path("%s/spacer", dir);
    char *filler = tu_path("%s/filler", dir);
    if (keep_pages) {
        char *page = calloc(1, 4096);
        int fd = open(spacer, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        assert_true(fd >= 0);
        for (unsigned long i = 0; i < keep_pages; i++)
            assert_int_equal(write(fd, page, 4096), 4096);
        close(fd);
        free(page);
    }
    int fd = open(filler, O_WRONLY | O_CREAT | O_APPEND, 0644);
    assert_true(fd >= 0);
    char block[4096];
    memset(block, 'f', sizeof block);
    while (write(fd, block, sizeof block) > 0)
        ;
    while (write(fd, block, 1) > 0)
        ;
    assert_int_equal(errno, ENOSPC);
    close(fd);
    if (keep_pages)
        assert_int_equal(unlink(spacer), 0);
    free(spacer);
    free(filler);
}

static void unfill(const char *dir)
{
    char *filler = tu_path("%s/filler", dir);
    unlink(filler);
    free(filler);
}

/* ---------------------------------------------------------- requests */

static void upload_status(struct tu_server *srv, const char *source, const char *fields,
                          long *status, json_t **json)
{
    struct tu_response res;
    tu_upload(srv, &res, source, fields);
    *status = res.status;
    *json = res.json ? json_incref(res.json) : NULL;
    if (res.status >= 400)
        tu_assert_error(&res, res.status);
    tu_response_free(&res);
}

static void expect_disk_full(long status, const json_t *body, const char *what)
{
    if (status != 507 && status != 500) {
        char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
        fail_msg("%s on a full disk: expected 507 (or 500), got %ld: %s", what, status,
                 text ? text : "");
    }
    print_message("%s on a full disk: %ld %s\n", what, status,
                  json_string_value(json_object_get(body, "error")));
}

/* A source of about `bytes` bytes. */
static char *sized_source(const char *name, int n, size_t bytes)
{
    size_t pad = bytes > 400 ? bytes - 400 : 1;
    char *filler = malloc(pad + 1);
    memset(filler, 'p', pad);
    filler[pad] = '\0';
    char *extra = tu_path("onTrade() { return '%d %s'; },", n, filler);
    char *src = tu_module_source(name, NULL, extra);
    free(extra);
    free(filler);
    return src;
}

/* -------------------------------------------------- disk full: catalogue */

static void test_strategies_disk_full(void **state)
{
    struct mount_fixture *f = *state;
    REQUIRE_TMPFS(f, "600k");
    char *strategies = tu_path("%s/strategies", f->mnt);
    struct tu_server_options opts = {.strategies_dir = strategies};
    tu_server_start(&f->srv, &opts);
    struct tu_server *srv = &f->srv;

    /* Enough revisions for registry.json to need several pages. */
    char first[65];
    for (int i = 0; i < 60; i++) {
        char *src = sized_source(i % 2 ? "fullb" : "fulla", i, 600);
        char *fields = tu_path("{\"tag\": \"v%d\"}", i);
        tu_upload_expect(srv, src, fields, 201, i == 0 ? first : NULL);
        free(fields);
        free(src);
    }
    char *reg_path = tu_path("%s/registry.json", strategies);
    struct stat st;
    assert_int_equal(stat(reg_path, &st), 0);
    print_message("registry.json is %lld bytes\n", (long long)st.st_size);
    assert_true(st.st_size > 3 * 4096);

    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);

    /* 1. Nothing free: the revision file itself does not fit. */
    fill_leaving(f->mnt, 0);
    long status;
    json_t *body;
    char *big = sized_source("fulla", 100, 3000);
    upload_status(srv, big, "{\"tag\": \"big\"}", &status, &body);
    expect_disk_full(status, body, "an upload");
    json_decref(body);
    tu_catalog_expect_same(srv, &before, "an upload on a full disk");

    /* 2. A tag move needs no new space: registry.json is written over the
     * blocks of the version before last (the spare), and only its changed
     * pages at that. */
    char *move = tu_path("{\"hash\": \"sha256:%s\"}", first);
    struct tu_response res;
    tu_send(srv, &res, "PUT", "/strategies/modules/fulla/tags/prod", move);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    json_t *moved = tu_get_json(srv, 200, "/strategies/modules/fulla:prod");
    char spelled[80];
    snprintf(spelled, sizeof spelled, "sha256:%s", first);
    assert_string_equal(tu_jstr(moved, "selectedRevisionHash"), spelled);
    json_decref(moved);
    json_decref(tu_assert_registry_sound(strategies));
    tu_catalog_state_free(&before);
    tu_catalog_capture(srv, &before);

    /* 3. A reader holds the spare open, as a slow reader of an older
     * registry.json would: it is not written under the reader, so a change
     * needs a whole new file, which does not fit. */
    char *spare_path = tu_path("%s/.registry.json.spare", strategies);
    int reader = open(spare_path, O_RDONLY);
    assert_true(reader >= 0);
    char *stage = tu_path("{\"hash\": \"sha256:%s\"}", first);
    tu_send(srv, &res, "PUT", "/strategies/modules/fulla/tags/stage", stage);
    expect_disk_full(res.status, res.json, "a tag move that needs a new file");
    tu_assert_error(&res, res.status);
    tu_response_free(&res);
    tu_catalog_expect_same(srv, &before, "a tag move on a full disk");

    /* Room for the revision file (one page) but not for registry.json: the
     * file must not be left behind. */
    unfill(f->mnt);
    fill_leaving(f->mnt, 2);
    char *small = sized_source("fulla", 101, 1000);
    upload_status(srv, small, "{\"tag\": \"small\"}", &status, &body);
    expect_disk_full(status, body, "an upload whose registry.json does not fit");
    json_decref(body);
    tu_catalog_expect_same(srv, &before, "an upload whose registry.json does not fit");
    assert_true(free_blocks(f->mnt) >= 2);
    close(reader);
    free(spare_path);
    free(stage);

    /* 4. The server keeps serving reads throughout. */
    json_decref(tu_get_json(srv, 200, "/healthz"));
    json_t *src = tu_get_json(srv, 200, "/strategies/modules/fulla:v0");
    json_decref(src);

    /* Space back: the same requests now succeed. */
    unfill(f->mnt);
    tu_upload_expect(srv, small, "{\"tag\": \"small\"}", 201, NULL);
    tu_send(srv, &res, "PUT", "/strategies/modules/fulla/tags/prod", move);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    tu_upload_expect(srv, big, "{\"tag\": \"big\"}", 201, NULL);
    json_decref(tu_assert_registry_sound(strategies));

    /* And a restart serves what is on disk. */
    tu_server_stop(srv);
    tu_server_restart(srv, &opts);
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/fulla:prod");
    assert_string_equal(tu_jstr(m, "selectedRevisionHash"), spelled);
    json_decref(m);
    tu_server_stop(srv);

    tu_catalog_state_free(&before);
    free(move);
    free(big);
    free(small);
    free(reg_path);
    free(strategies);
}

/* ------------------------------------------------------ disk full: state */

static json_t *instance_ids(struct tu_server *srv)
{
    json_t *list = tu_get_json(srv, 200, "/strategy/instances");
    json_t *ids = json_array();
    size_t i;
    json_t *inst;
    json_array_foreach(json_object_get(list, "instances"), i, inst)
    {
        json_array_append(ids, json_object_get(inst, "id"));
    }
    json_decref(list);
    return ids;
}

static const char *instance_spec(const char *id)
{
    static char buf[256];
    snprintf(buf, sizeof buf,
             "{\"id\": \"%s\", \"strategy\": {\"selector\": \"statefull\", \"config\": {}}, "
             "\"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}",
             id);
    return buf;
}

/* Provider changes on a full state disk, and what each answer implies:
 * a refused change is not in the running market either. */
struct provider_outcome {
    bool created;     /* "pfull" */
    long spare_ticks; /* the tickRate "spare" has */
    bool deleted;     /* "spare" */
};

static long tick_rate(struct tu_server *srv, const char *name)
{
    char path[64];
    snprintf(path, sizeof path, "/providers/%s", name);
    json_t *detail = tu_get_json(srv, 200, "%s", path);
    long rate = (long)json_number_value(tu_jget(detail, "settings.tickRate"));
    json_decref(detail);
    return rate;
}

static void expect_providers(struct tu_server *srv, const struct provider_outcome *o)
{
    struct tu_response res;
    tu_get(srv, &res, "/providers/pfull");
    tu_assert_status(&res, o->created ? 200 : 404);
    tu_response_free(&res);
    tu_get(srv, &res, "/providers/spare");
    tu_assert_status(&res, o->deleted ? 404 : 200);
    tu_response_free(&res);
    if (!o->deleted)
        assert_int_equal(tick_rate(srv, "spare"), o->spare_ticks);
}

static void change_providers_on_full_disk(struct tu_server *srv, struct provider_outcome *o)
{
    struct tu_response res;
    *o = (struct provider_outcome){.spare_ticks = 5};
    tu_send(srv, &res, "POST", "/providers",
            "{\"name\": \"pfull\", \"adapter\": {\"identifier\": \"simulated\", "
            "\"config\": {}}, \"enabled\": false}");
    o->created = res.status == 202;
    if (!o->created)
        expect_disk_full(res.status, res.json, "a provider create");
    long created = res.status;
    tu_response_free(&res);
    tu_send(srv, &res, "PUT", "/providers/spare",
            "{\"adapter\": {\"identifier\": \"simulated\", \"config\": {\"tickRate\": 7}}, "
            "\"enabled\": false}");
    o->spare_ticks = res.status == 200 ? 7 : 5;
    if (res.status != 200)
        expect_disk_full(res.status, res.json, "a provider update");
    long updated = res.status;
    tu_response_free(&res);
    expect_providers(srv, o);
    tu_delete(srv, &res, "/providers/spare");
    o->deleted = res.status == 200;
    if (!o->deleted)
        expect_disk_full(res.status, res.json, "a provider delete");
    print_message("on the full disk: provider create %ld, update %ld, delete %ld\n", created,
                  updated, res.status);
    tu_response_free(&res);
    expect_providers(srv, o);
}

static void test_state_disk_full(void **state)
{
    struct mount_fixture *f = *state;
    REQUIRE_TMPFS(f, "2m");
    char *state_dir = tu_path("%s/var", f->mnt);
    struct tu_server_options opts = {.state_dir = state_dir};
    tu_server_start(&f->srv, &opts);
    struct tu_server *srv = &f->srv;
    char *src = tu_module_source("statefull", NULL, "onTrade() {},");
    char hex[65];
    tu_upload_expect(srv, src, NULL, 201, hex);
    free(src);
    struct tu_response res;
    tu_send(srv, &res, "POST", "/strategy/instances", instance_spec("keep"));
    tu_assert_status(&res, 201);
    tu_response_free(&res);
    tu_send(srv, &res, "POST", "/strategy/instances/keep/start", NULL);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    tu_send(srv, &res, "POST", "/strategy/instances", instance_spec("idle"));
    tu_assert_status(&res, 201);
    tu_response_free(&res);
    json_t *before = instance_ids(srv);
    tu_send(srv, &res, "POST", "/providers",
            "{\"name\": \"spare\", \"adapter\": {\"identifier\": \"simulated\", "
            "\"config\": {\"tickRate\": 5}}, \"enabled\": false}");
    tu_assert_status(&res, 202);
    tu_response_free(&res);

    fill_leaving(f->mnt, 0);
    /* Several attempts: SQLite may still have room in pages it holds. */
    long status = 0;
    for (int i = 0; i < 200 && (status == 0 || status == 201); i++) {
        char id[16];
        snprintf(id, sizeof id, "more%d", i);
        tu_send(srv, &res, "POST", "/strategy/instances", instance_spec(id));
        status = res.status;
        if (status != 201) {
            expect_disk_full(status, res.json, "an instance create");
            tu_assert_error(&res, status);
        } else {
            json_array_append_new(before, json_string(id));
        }
        tu_response_free(&res);
    }
    assert_true(status != 201);
    /* a tag move needs nothing of the state's disk but its audit entry:
     * made, and the entry that could not be written is counted */
    assert_true(tu_metric(srv, "stratd_audit_failures_total") == 0);
    /* (the log's last block may hold a few more entries first) */
    for (int i = 0; i < 64 && tu_metric(srv, "stratd_audit_failures_total") == 0; i++) {
        char path[64];
        snprintf(path, sizeof path, "/strategies/modules/statefull/tags/t%d", i);
        json_decref(tu_callf(srv, "PUT", path, 200, "{\"hash\": \"sha256:%s\"}", hex));
    }
    assert_true(tu_metric(srv, "stratd_audit_failures_total") >= 1);
    /* readiness says so: up (200), degraded, and why */
    json_t *health = tu_get_json(srv, 200, "/healthz");
    assert_string_equal(tu_jstr(health, "status"), "degraded");
    char *problems = json_dumps(tu_jget(health, "problems"), JSON_COMPACT);
    if (!strstr(problems, "state disk was full") || !strstr(problems, "audit entry"))
        fail_msg("/healthz problems: %s", problems);
    free(problems);
    json_decref(health);
    /* the entry that could not be written is in the gateway's log */
    json_t *lost = tu_wait_log(srv, NULL, "cannot append to the audit log", TU_WAIT_S);
    assert_string_equal(tu_jstr(lost, "entry.action"), "tag.move");
    assert_string_equal(tu_jstr(lost, "entry.strategy"), "statefull");
    json_decref(lost);
    json_t *after = instance_ids(srv);
    if (!json_equal(before, after))
        fail_msg("a refused create changed the instance list: %s -> %s",
                 json_dumps(before, JSON_COMPACT), json_dumps(after, JSON_COMPACT));
    json_decref(after);
    /* A start cannot make its intent durable: refused, and the module it
     * loaded meanwhile is gone with it (the sanitizer run checks the VM is
     * freed) */
    tu_send(srv, &res, "POST", "/strategy/instances/idle/start", NULL);
    expect_disk_full(res.status, res.json, "an instance start");
    tu_assert_error(&res, res.status);
    tu_response_free(&res);
    json_t *snap = tu_get_json(srv, 200, "/strategy/instances/idle");
    assert_false(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    /* Still serving, and the running instance still runs. */
    snap = tu_get_json(srv, 200, "/strategy/instances/keep");
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    struct provider_outcome providers;
    change_providers_on_full_disk(srv, &providers);

    unfill(f->mnt);
    tu_send(srv, &res, "POST", "/strategy/instances/idle/start", NULL);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    tu_send(srv, &res, "POST", "/strategy/instances", instance_spec("later"));
    tu_assert_status(&res, 201);
    tu_response_free(&res);
    tu_server_stop(srv);
    char *out = NULL;
    int rc = tu_run(&out, "sqlite3 '%s/stratd.db' 'PRAGMA integrity_check' 2>&1", state_dir);
    if (rc != 0 || strcmp(out, "ok\n") != 0)
        fail_msg("integrity_check after the full disk: %s", out);
    free(out);
    tu_server_restart(srv, &opts);
    health = tu_get_json(srv, 200, "/healthz");
    assert_string_equal(tu_jstr(health, "status"), "ok");
    assert_null(json_object_get(health, "problems"));
    json_decref(health);
    snap = tu_get_json(srv, 200, "/strategy/instances/later");
    json_decref(snap);
    snap = tu_get_json(srv, 200, "/strategy/instances/keep");
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    snap = tu_get_json(srv, 200, "/strategy/instances/idle");
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    expect_providers(srv, &providers); /* what was answered is what came back */
    tu_server_stop(srv);
    json_decref(before);
    free(state_dir);
}

/* ------------------------------------------------- refusing to start */

static void expect_refusal(const char *strategies, const char *state_dir, const char *needle,
                           const char *what)
{
    char *err_text = NULL;
    int code = tu_serve_to_exit(strategies, state_dir, &err_text);
    print_message("%s: exit %d: %s", what, code, err_text);
    if (code == 0 || code == -1)
        fail_msg("%s: exit status %d, expected a refusal", what, code);
    if (!strstr(err_text, needle))
        fail_msg("%s: the message does not name '%s':\n%s", what, needle, err_text);
    free(err_text);
}

static void test_read_only_state_directory(void **state)
{
    struct mount_fixture *f = *state;
    REQUIRE_TMPFS(f, "4m");
    char *state_dir = tu_path("%s/var", f->mnt);
    char *strategies = tu_path("%s/strategies", f->root);
    struct tu_server_options opts = {.strategies_dir = strategies, .state_dir = state_dir};
    tu_server_start(&f->srv, &opts);
    char *src = tu_module_source("readonly", NULL, NULL);
    tu_upload_expect(&f->srv, src, NULL, 201, NULL);
    free(src);
    tu_server_stop(&f->srv);

    char *out = NULL;
    int rc = tu_run(&out, "mount -o remount,ro '%s' 2>&1", f->mnt);
    if (rc != 0)
        fail_msg("remount read-only: %s", out);
    free(out);
    /* An existing state directory on a read-only filesystem. */
    expect_refusal(strategies, state_dir, state_dir, "an existing read-only state directory");
    /* One that does not exist yet and cannot be created. */
    char *fresh = tu_path("%s/fresh/var", f->mnt);
    expect_refusal(strategies, fresh, "/fresh", "a state directory that cannot be created");
    free(fresh);

    rc = tu_run(&out, "mount -o remount,rw '%s' 2>&1", f->mnt);
    assert_int_equal(rc, 0);
    free(out);
    tu_server_restart(&f->srv, &opts);
    json_decref(tu_get_json(&f->srv, 200, "/strategies/modules/readonly"));
    tu_server_stop(&f->srv);
    free(strategies);
    free(state_dir);
}

static void test_second_server_on_a_state_directory(void **state)
{
    struct mount_fixture *f = *state;
    tu_server_start(&f->srv, NULL);
    char *other = tu_tempdir("stratd-second");
    char *strategies = tu_path("%s/strategies", other);
    expect_refusal(strategies, f->srv.state_dir, "in use by another process",
                   "a second server on the same state directory");
    char *lock = tu_path("%s/stratd.lock", f->srv.state_dir);
    expect_refusal(strategies, f->srv.state_dir, lock, "the message names the lock");
    char *pid = tu_path("pid %d", (int)f->srv.pid);
    expect_refusal(strategies, f->srv.state_dir, pid, "the message names the holder");
    free(pid);
    free(lock);
    /* The first one is untouched. */
    json_decref(tu_get_json(&f->srv, 200, "/healthz"));
    /* SIGKILL leaves no stale lock: a new server starts at once. */
    tu_server_kill(&f->srv);
    tu_server_restart(&f->srv, NULL);
    json_decref(tu_get_json(&f->srv, 200, "/healthz"));
    tu_server_stop(&f->srv);
    tu_remove_tree(other);
    free(other);
    free(strategies);
}

/* A strategies directory without registry.json beside a state that holds
 * instances (a mistyped --strategies, a partial restore) is refused and not
 * created: served, it would retire every instance for good. The right
 * directory afterwards finds the fleet as it was. */
static void test_strategies_directory_without_registry(void **state)
{
    struct mount_fixture *f = *state;
    tu_server_start(&f->srv, NULL);
    char *src = tu_module_source("kept", NULL, NULL);
    tu_upload_expect(&f->srv, src, NULL, 201, NULL);
    free(src);
    json_decref(tu_instance_create(&f->srv, "k-1", "kept", NULL, NULL, NULL));
    tu_instance_start(&f->srv, "k-1");
    tu_server_stop(&f->srv);

    char *typo = tu_path("%sz", f->srv.strategies_dir);
    expect_refusal(typo, f->srv.state_dir, "has no registry.json", "a mistyped --strategies");
    expect_refusal(typo, f->srv.state_dir, "1 instance", "the message counts the instances");
    struct stat st;
    assert_true(stat(typo, &st) != 0 && errno == ENOENT);
    free(typo);

    tu_server_restart(&f->srv, NULL);
    json_t *snap = tu_instance_get(&f->srv, "k-1");
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    tu_server_stop(&f->srv);
}

/* ------------------------------------------------ registry.json by hand */

/* Removes `key` at every depth (lastSeen is "now" while an instance runs). */
static void strip_key(json_t *value, const char *key)
{
    if (json_is_object(value)) {
        json_object_del(value, key);
        const char *k;
        json_t *v;
        json_object_foreach(value, k, v) strip_key(v, key);
    } else if (json_is_array(value)) {
        size_t i;
        json_t *v;
        json_array_foreach(value, i, v) strip_key(v, key);
    }
}

static void test_registry_edited_into_invalid_json(void **state)
{
    struct mount_fixture *f = *state;
    tu_server_start(&f->srv, NULL);
    struct tu_server *srv = &f->srv;
    char *a = tu_module_source("handedit", "v1", "onTrade() {},");
    char *b = tu_module_source("handedit", "v2", "onTrade() { return 2; },");
    char ha[65], hb[65];
    tu_upload_expect(srv, a, NULL, 201, ha);
    tu_upload_expect(srv, b, "{\"aliases\": [\"prod\"]}", 201, hb);
    struct tu_response res;
    tu_send(srv, &res, "POST", "/strategy/instances",
            "{\"id\": \"live\", \"strategy\": {\"selector\": \"handedit:prod\", \"config\": {}}, "
            "\"scope\": {\"sim\": {\"symbols\": [\"BTC-USDT\"]}}}");
    tu_assert_status(&res, 201);
    tu_response_free(&res);
    tu_send(srv, &res, "POST", "/strategy/instances/live/start", NULL);
    tu_assert_status(&res, 200);
    tu_response_free(&res);

    json_t *listing = tu_get_json(srv, 200, "/strategies/modules");
    json_t *exported = tu_get_json(srv, 200, "/strategies/registry");
    char *reg_path = tu_path("%s/registry.json", srv->strategies_dir);
    char *good = tu_read_file(reg_path, NULL);
    /* An operator's edit gone wrong: a trailing comma and a cut. */
    size_t n = strlen(good);
    char *broken = tu_path("%.*s,\n  \"oops\": {\"tags\": ", (int)(n - 3), good);
    tu_write_text(reg_path, broken);

    tu_send(srv, &res, "POST", "/strategies/refresh", "{}");
    tu_assert_error(&res, 409);
    print_message("refresh on a broken registry.json: %s\n", res.body);
    assert_true(json_is_true(tu_jget(res.json, "details.servingPrevious")));
    if (!strstr(tu_jstr(res.json, "error"), "registry.json"))
        fail_msg("the refresh error does not name registry.json: %s", res.body);
    tu_response_free(&res);

    /* The last good catalogue is served, the instance runs. */
    json_t *now = tu_get_json(srv, 200, "/strategies/modules");
    strip_key(now, "lastSeen");
    strip_key(listing, "lastSeen");
    if (!json_equal(now, listing))
        fail_msg("the listing changed:\nbefore %.3000s\nafter  %.3000s",
                 json_dumps(listing, JSON_COMPACT), json_dumps(now, JSON_COMPACT));
    json_decref(now);
    now = tu_get_json(srv, 200, "/strategies/registry");
    assert_true(
        json_equal(json_object_get(now, "registry"), json_object_get(exported, "registry")));
    json_decref(now);
    tu_get(srv, &res, "/strategies/modules/handedit:prod/source");
    tu_assert_status(&res, 200);
    assert_int_equal(res.len, strlen(b));
    tu_response_free(&res);
    json_t *snap = tu_get_json(srv, 200, "/strategy/instances/live");
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);

    /* A write does not overwrite the operator's edit. */
    char *move = tu_path("{\"hash\": \"sha256:%s\"}", ha);
    tu_send(srv, &res, "PUT", "/strategies/modules/handedit/tags/prod", move);
    print_message("tag move on a broken registry.json: %ld %s\n", res.status, res.body);
    /* The registry answers 500 here (the shared file is at fault, not the
     * request); 409 would match the refresh. Either way: refused, saying
     * why, and the file left alone. */
    if (res.status != 409 && res.status != 500)
        fail_msg("a tag move over a broken registry.json: expected 409 or 500, got %ld: %s",
                 res.status, res.body);
    tu_assert_error(&res, res.status);
    if (!strstr(tu_jstr(res.json, "error"), "registry.json"))
        fail_msg("the refusal does not name registry.json: %s", res.body);
    tu_response_free(&res);
    char *still = tu_read_file(reg_path, NULL);
    assert_string_equal(still, broken);
    free(still);
    char *c = tu_module_source("handedit", "v3", "onTrade() { return 3; },");
    long status;
    json_t *body;
    upload_status(srv, c, NULL, &status, &body);
    if (status != 409 && status != 500)
        fail_msg("an upload over a broken registry.json: expected 409 or 500, got %ld", status);
    json_decref(body);
    still = tu_read_file(reg_path, NULL);
    assert_string_equal(still, broken);
    free(still);

    /* Fixed by hand: everything works again. */
    tu_write_text(reg_path, good);
    tu_send(srv, &res, "POST", "/strategies/refresh", "{}");
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    tu_send(srv, &res, "PUT", "/strategies/modules/handedit/tags/prod", move);
    tu_assert_status(&res, 200);
    tu_response_free(&res);

    /* A restart on a broken file refuses, naming it. */
    tu_server_stop(srv);
    tu_write_text(reg_path, broken);
    expect_refusal(srv->strategies_dir, srv->state_dir, "registry.json",
                   "a start on a broken registry.json");
    tu_write_text(reg_path, good);

    json_decref(listing);
    json_decref(exported);
    free(move);
    free(reg_path);
    free(good);
    free(broken);
    free(a);
    free(b);
    free(c);
}

/* ------------------------------------------------ corrupted revisions */

static void test_corrupted_files_reported_invalid(void **state)
{
    struct mount_fixture *f = *state;
    tu_server_start(&f->srv, NULL);
    struct tu_server *srv = &f->srv;
    char *a = tu_module_source("corrupt", "v1", "onTrade() {},");
    char *b = tu_module_source("corrupt", "v2", "onTrade() { return 2; },");
    char *c = tu_module_source("corrupt", "v3", "onTrade() { return 3; },");
    char ha[65], hb[65], hc[65];
    tu_upload_expect(srv, a, NULL, 201, ha);
    tu_upload_expect(srv, b, NULL, 201, hb);
    tu_upload_expect(srv, c, NULL, 201, hc);

    char *fb = tu_path("%s/corrupt/%s/corrupt.js", srv->strategies_dir, hb);
    char *fc = tu_path("%s/corrupt/%s/corrupt.js", srv->strategies_dir, hc);
    char *tampered = tu_path("%s// tampered\n", b);
    tu_write_text(fb, tampered);
    assert_int_equal(unlink(fc), 0);

    struct tu_response res;
    tu_send(srv, &res, "POST", "/strategies/refresh", "{}");
    tu_assert_status(&res, 200);
    json_t *problems = json_object_get(res.json, "problems");
    char *text = json_dumps(problems, JSON_COMPACT);
    print_message("problems: %s\n", text);
    free(text);
    assert_int_equal(json_array_size(problems), 2);
    bool seen_b = false, seen_c = false;
    size_t i;
    json_t *p;
    json_array_foreach(problems, i, p)
    {
        const char *h = json_string_value(json_object_get(p, "hash"));
        assert_non_null(json_string_value(json_object_get(p, "message")));
        assert_string_equal(json_string_value(json_object_get(p, "strategy")), "corrupt");
        seen_b |= h && strstr(h, hb);
        seen_c |= h && strstr(h, hc);
    }
    assert_true(seen_b && seen_c);
    tu_response_free(&res);

    /* Never served: the selectors refuse, the source is not handed out. */
    const char *bad[] = {"corrupt:v2", "corrupt:v3"};
    for (int k = 0; k < 2; k++) {
        char *path = tu_path("/strategies/modules/%s/source", bad[k]);
        tu_get(srv, &res, "%s", path);
        if (res.status == 200)
            fail_msg("GET %s served a corrupted revision", path);
        tu_assert_error(&res, res.status);
        tu_response_free(&res);
        free(path);
    }
    tu_get(srv, &res, "/strategies/modules/corrupt:v1/source");
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    /* The listing shows them invalid. */
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/corrupt");
    int invalid = 0;
    json_array_foreach(json_object_get(m, "revisions"), i, p)
    {
        invalid += json_is_true(json_object_get(p, "invalid")) ||
                   json_is_string(json_object_get(p, "invalidReason"));
    }
    if (invalid != 2)
        fail_msg("expected 2 revisions shown invalid: %s", json_dumps(m, JSON_COMPACT));
    json_decref(m);

    /* A FIFO in a revision's place (or a link to one) is refused as not a
     * regular file: its open blocked until a writer came, holding a refresh,
     * the start and the shutdown */
    char *d = tu_module_source("corrupt", "v4", "onTrade() { return 4; },");
    char hd[65];
    tu_upload_expect(srv, d, NULL, 201, hd);
    char *fifo = tu_path("%s/corrupt/%s/corrupt.js", srv->strategies_dir, hd);
    assert_int_equal(unlink(fifo), 0);
    assert_int_equal(mkfifo(fifo, 0644), 0);
    /* Read before any refresh notices: a conflict naming the revision, not
     * a client error naming the server's paths */
    tu_get(srv, &res, "/strategies/modules/corrupt:v4/source");
    tu_assert_error(&res, 409);
    const char *why = tu_jstr(res.json, "error");
    if (!strstr(why, "corrupt@sha256:") || !strstr(why, "not a regular file") ||
        strstr(why, srv->strategies_dir))
        fail_msg("the source of a revision whose file is a FIFO: %s", why);
    tu_response_free(&res);
    tu_send(srv, &res, "POST", "/strategies/refresh", "{}");
    tu_assert_status(&res, 200);
    bool seen_d = false;
    json_array_foreach(json_object_get(res.json, "problems"), i, p)
    {
        const char *h = json_string_value(json_object_get(p, "hash"));
        if (h && strstr(h, hd)) {
            seen_d = true;
            assert_non_null(strstr(tu_jstr(p, "message"), "not a regular file"));
        }
    }
    assert_true(seen_d);
    tu_response_free(&res);
    tu_server_stop(srv);
    tu_server_restart(srv, NULL); /* listens: the start reads past it too */
    json_decref(tu_get_json(srv, 200, "/healthz"));
    tu_server_stop(srv);
    free(fifo);
    free(d);
    free(fb);
    free(fc);
    free(tampered);
    free(a);
    free(b);
    free(c);
}

/* The client is told which revision could not be written and that its
 * place is blocked, not where the strategies live. */
static void expect_blocked(struct tu_server *srv, const char *source, const char *revision)
{
    struct tu_response res;
    tu_upload(srv, &res, source, NULL);
    tu_assert_error(&res, 409);
    const char *why = tu_jstr(res.json, "error");
    if (!strstr(why, revision) || !strstr(why, "is blocked") || strstr(why, srv->strategies_dir))
        fail_msg("an upload onto a blocked place: %s", why);
    tu_response_free(&res);
}

/* A place that something else holds (a directory left where the file
 * goes, a strategy folder linked to nowhere) is the tree's state for an
 * operator to mend, not a fault of the gateway: 409, nothing kept, and the
 * same upload lands once the place is cleared. */
static void test_blocked_revision_places_refused(void **state)
{
    struct mount_fixture *f = *state;
    tu_server_start(&f->srv, NULL);
    struct tu_server *srv = &f->srv;
    char *src = tu_module_source("blocked", "v1", "onTrade() {},");
    char hex[HASH_HEX_LEN + 1], landed[65];
    hash_sha256_hex(src, strlen(src), hex);
    char *place = tu_path("%s/blocked/%s/blocked.js", srv->strategies_dir, hex);
    assert_int_equal(fsutil_mkdirs(place, 0755, NULL), 0);
    char *revision = tu_path("blocked@sha256:%s", hex);
    expect_blocked(srv, src, revision);
    json_decref(tu_call(srv, "GET", "/strategies/modules/blocked", 404, NULL));
    assert_true(fsutil_is_dir(place));
    assert_int_equal(rmdir(place), 0);
    tu_upload_expect(srv, src, NULL, 201, landed);
    assert_string_equal(landed, hex);

    char *other = tu_module_source("nowhere", "v1", "onTrade() {},");
    hash_sha256_hex(other, strlen(other), hex);
    char *link = tu_path("%s/nowhere", srv->strategies_dir);
    assert_int_equal(symlink("/nonexistent/stratd-test", link), 0);
    char *other_revision = tu_path("nowhere@sha256:%s", hex);
    expect_blocked(srv, other, other_revision);
    assert_int_equal(unlink(link), 0);
    tu_upload_expect(srv, other, NULL, 201, landed);
    json_decref(tu_call(srv, "GET", "/strategies/modules/blocked:v1/source", 200, NULL));
    free(other_revision);
    free(link);
    free(other);
    free(revision);
    free(place);
    free(src);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_strategies_disk_full, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_state_disk_full, fixture_setup, fixture_teardown),
        cmocka_unit_test_setup_teardown(test_read_only_state_directory, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_strategies_directory_without_registry, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_second_server_on_a_state_directory, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_registry_edited_into_invalid_json, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_corrupted_files_reported_invalid, fixture_setup,
                                        fixture_teardown),
        cmocka_unit_test_setup_teardown(test_blocked_revision_places_refused, fixture_setup,
                                        fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
