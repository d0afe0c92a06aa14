/*
 * The rest of a revision's life over HTTP: deleting revisions and whole
 * strategies (DELETE /strategies/modules/{selector}), hand edits picked up
 * by POST /strategies/refresh and by a restart (a file whose bytes no
 * longer match its hash is reported and never selected), and the registry
 * export (GET /strategies/registry).
 */
#include "testutil.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char *spell(const char *hex)
{
    return tu_path("sha256:%s", hex);
}

static char *rev_file(const struct tu_server *srv, const char *name, const char *hex)
{
    return tu_path("%s/%s/%s/%s.js", srv->strategies_dir, name, hex, name);
}

static bool exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static json_t *disk_strategy(const struct tu_server *srv, const char *name)
{
    json_t *reg = tu_assert_registry_sound(srv->strategies_dir);
    json_t *st = json_incref(json_object_get(reg, name));
    json_decref(reg);
    return st;
}

static void expect_disk_tags(const struct tu_server *srv, const char *name, json_t *want)
{
    json_t *st = disk_strategy(srv, name);
    if (!st)
        fail_msg("registry.json has no strategy '%s'", name);
    if (!json_equal(json_object_get(st, "tags"), want)) {
        char *a = json_dumps(json_object_get(st, "tags"), JSON_COMPACT | JSON_SORT_KEYS);
        char *e = json_dumps(want, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("registry.json tags of %s:\nexpected %s\nactual   %s", name, e, a);
    }
    json_decref(st);
    json_decref(want);
}

static void expect_selected(struct tu_server *srv, const char *selector, const char *spelled)
{
    json_t *m = tu_get_json(srv, 200, "/strategies/modules/%s", selector);
    if (strcmp(tu_jstr(m, "selectedRevisionHash"), spelled) != 0)
        fail_msg("%s selects %s, expected %s", selector, tu_jstr(m, "selectedRevisionHash"),
                 spelled);
    json_decref(m);
}

static void expect_status(struct tu_server *srv, const char *method, const char *path, long status)
{
    struct tu_response res;
    tu_request(srv, &res, method, path, NULL);
    if (res.status != status)
        fail_msg("%s %s: expected %ld, got %ld: %s", method, path, status, res.status, res.body);
    if (status >= 400)
        tu_assert_error(&res, status);
    else if (status == 204 && res.len != 0)
        fail_msg("%s %s: 204 with a body: %s", method, path, res.body);
    tu_response_free(&res);
}

/* -------------------------------------------------------------- deletes */

static void test_delete_revision_by_hash(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions m;
    tu_three_revisions_upload(srv, "momo", &m);
    struct tu_response res;
    char *body = tu_path("{\"hash\": \"%s\"}", m.spelled[1]);
    tu_send(srv, &res, "PUT", "/strategies/modules/momo/tags/prod", body);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    free(body);

    char *path = tu_path("/strategies/modules/momo@sha256:%s", m.hex[1]);
    expect_status(srv, "DELETE", path, 204);
    free(path);

    char *file = rev_file(srv, "momo", m.hex[1]);
    assert_false(exists(file));
    free(file);
    char *dir = tu_path("%s/momo/%s", srv->strategies_dir, m.hex[1]);
    assert_false(exists(dir));
    free(dir);
    json_t *st = disk_strategy(srv, "momo");
    assert_null(json_object_get(json_object_get(st, "hashes"), m.spelled[1]));
    assert_int_equal(json_object_size(json_object_get(st, "hashes")), 2);
    json_decref(st);
    expect_disk_tags(srv, "momo",
                     json_pack("{s:s, s:s, s:s}", "latest", m.spelled[0], "v1", m.spelled[0], "v3",
                               m.spelled[2]));
    for (int i = 0; i < 3; i += 2) {
        char *f = rev_file(srv, "momo", m.hex[i]);
        assert_true(exists(f));
        free(f);
    }
    path = tu_path("/strategies/modules/momo@%s", m.hex[1]);
    expect_status(srv, "GET", path, 404);
    free(path);
    expect_status(srv, "GET", "/strategies/modules/momo:v2", 404);
    expect_status(srv, "GET", "/strategies/modules/momo:prod", 404);
    expect_selected(srv, "momo", m.spelled[0]);
    json_t *mod = tu_get_json(srv, 200, "/strategies/modules/momo");
    assert_int_equal(json_array_size(json_object_get(mod, "revisions")), 2);
    json_decref(mod);

    /* A hash prefix of 12 digits selects a revision to delete just as well. */
    path = tu_path("/strategies/modules/momo@%.12s", m.hex[2]);
    expect_status(srv, "DELETE", path, 204);
    free(path);
    file = rev_file(srv, "momo", m.hex[2]);
    assert_false(exists(file));
    free(file);
    expect_disk_tags(srv, "momo",
                     json_pack("{s:s, s:s}", "latest", m.spelled[0], "v1", m.spelled[0]));
    tu_three_revisions_free(&m);
    tu_server_stop(srv);
}

static void test_delete_latest_by_tag_moves_latest_to_newest(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions m;
    tu_three_revisions_upload(srv, "momo", &m);

    expect_status(srv, "DELETE", "/strategies/modules/momo:v1", 204);
    char *file = rev_file(srv, "momo", m.hex[0]);
    assert_false(exists(file));
    free(file);
    expect_disk_tags(srv, "momo",
                     json_pack("{s:s, s:s, s:s}", "latest", m.spelled[2], "v2", m.spelled[1], "v3",
                               m.spelled[2]));
    expect_selected(srv, "momo", m.spelled[2]);
    json_t *meta = tu_get_json(srv, 200, "/strategies/momo");
    assert_string_equal(tu_jstr(meta, "name"), "momo");
    json_decref(meta);

    /* by name:latest too: latest moves to b, the only one left */
    expect_status(srv, "DELETE", "/strategies/modules/momo:latest", 204);
    expect_disk_tags(srv, "momo",
                     json_pack("{s:s, s:s}", "latest", m.spelled[1], "v2", m.spelled[1]));
    tu_three_revisions_free(&m);
    tu_server_stop(srv);
}

static void test_delete_whole_strategy_and_last_revision(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions m;
    tu_three_revisions_upload(srv, "momo", &m);
    char *keep = tu_module_source("keep", "v1", NULL);
    char *single = tu_module_source("single", "v1", NULL);
    char hk[65], hs[65];
    tu_upload_expect(srv, keep, NULL, 201, hk);
    tu_upload_expect(srv, single, NULL, 201, hs);

    expect_status(srv, "DELETE", "/strategies/modules/momo", 204);
    char *dir = tu_path("%s/momo", srv->strategies_dir);
    assert_false(exists(dir));
    free(dir);
    json_t *st = disk_strategy(srv, "momo");
    assert_null(st);
    expect_status(srv, "GET", "/strategies/momo", 404);
    expect_status(srv, "GET", "/strategies/modules/momo", 404);
    json_t *page = tu_get_json(srv, 200, "/strategies/modules?strategy=momo");
    assert_int_equal(tu_jint(page, "total"), 0);
    json_decref(page);

    /* Deleting a strategy's only revision deletes the strategy, and only
     * the files the gateway wrote: a version not migrated yet and the
     * operator's notes stay where they are. */
    char *pending = tu_path("%s/single/v2.0.0/single.js", srv->strategies_dir);
    char *notes = tu_path("%s/single/README.txt", srv->strategies_dir);
    dir = tu_path("%s/single/v2.0.0", srv->strategies_dir);
    assert_int_equal(mkdir(dir, 0755), 0);
    free(dir);
    tu_write_text(pending, single);
    tu_write_text(notes, "notes");
    char *path = tu_path("/strategies/modules/single@%s", hs);
    expect_status(srv, "DELETE", path, 204);
    free(path);
    assert_null(disk_strategy(srv, "single"));
    expect_status(srv, "GET", "/strategies/single", 404);
    dir = tu_path("%s/single/%s", srv->strategies_dir, hs);
    assert_false(exists(dir));
    free(dir);
    assert_true(exists(pending));
    assert_true(exists(notes));
    free(pending);
    free(notes);

    /* The other strategy is untouched. */
    char *f = rev_file(srv, "keep", hk);
    assert_true(exists(f));
    free(f);
    json_t *all = tu_get_json(srv, 200, "/strategies/modules");
    assert_int_equal(tu_jint(all, "total"), 1);
    assert_string_equal(tu_jstr(all, "modules.0.name"), "keep");
    json_decref(all);
    json_t *list = tu_get_json(srv, 200, "/strategies");
    assert_int_equal(json_array_size(json_object_get(list, "strategies")), 1);
    json_decref(list);

    /* A deleted strategy can be uploaded again from scratch. */
    tu_upload_expect(srv, m.src[1], NULL, 201, NULL);
    expect_selected(srv, "momo", m.spelled[1]);
    free(keep);
    free(single);
    tu_three_revisions_free(&m);
    tu_server_stop(srv);
}

/* Files under `dir`, any depth, that are not folders. */
static int files_under(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *path = tu_path("%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
            n += files_under(path);
        else
            n++;
        free(path);
    }
    closedir(d);
    return n;
}

/* A strategy folder that is a symbolic link to one kept elsewhere is
 * served through the link, so its deletes go through it too: they had
 * answered 204, removed nothing, left a change's marker in the linked
 * folder, and the next bootstrap registered the files again. */
static void test_delete_through_a_linked_folder(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    char *v1 = tu_module_source("linked", "v1", NULL);
    char *v2 = tu_module_source("linked", "v2", "onTrade() { return 2; },");
    char h1[65], h2[65];
    tu_upload_expect(srv, v1, NULL, 201, h1);
    tu_upload_expect(srv, v2, NULL, 201, h2);
    tu_server_stop(srv);
    char *outside = tu_tempdir("linked");
    char *kept = tu_path("%s/linked", outside);
    char *link = tu_path("%s/linked", srv->strategies_dir);
    assert_int_equal(rename(link, kept), 0);
    assert_int_equal(symlink(kept, link), 0);
    tu_server_restart(srv, NULL);
    expect_status(srv, "GET", "/strategies/modules/linked:v1/source", 200);

    char *path = tu_path("/strategies/modules/linked@%s", h1);
    expect_status(srv, "DELETE", path, 204);
    free(path);
    char *gone = tu_path("%s/%s", kept, h1);
    assert_false(exists(gone));
    free(gone);
    assert_int_equal(files_under(kept), 1); /* v2's module, nothing else */
    expect_status(srv, "DELETE", "/strategies/modules/linked", 204);
    if (files_under(kept) != 0)
        fail_msg("%d files left in the linked folder after its strategy was deleted",
                 files_under(kept));
    struct stat st;
    assert_int_equal(lstat(link, &st), 0); /* the operator's link stays */
    assert_true(S_ISLNK(st.st_mode));
    expect_status(srv, "GET", "/strategies/linked", 404);
    tu_server_stop(srv);
    tu_server_restart(srv, NULL); /* and nothing comes back */
    expect_status(srv, "GET", "/strategies/linked", 404);
    tu_server_stop(srv);
    tu_remove_tree(outside);
    free(link);
    free(kept);
    free(outside);
    free(v1);
    free(v2);
}

static void test_refused_deletes_change_nothing(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions m;
    tu_three_revisions_upload(srv, "momo", &m);
    struct tu_catalog_state before;
    tu_catalog_capture(srv, &before);
    expect_status(srv, "DELETE", "/strategies/modules/momo:nosuch", 404);
    expect_status(srv, "DELETE", "/strategies/modules/ghost", 404);
    expect_status(srv, "DELETE", "/strategies/modules/ghost:v1", 404);
    expect_status(srv, "DELETE",
                  "/strategies/modules/"
                  "momo@0000000000000000000000000000000000000000000000000000000000000000",
                  404);
    expect_status(srv, "DELETE", "/strategies/modules/momo%2F..", 400);
    expect_status(srv, "DELETE", "/strategies/modules/..", 400);
    expect_status(srv, "DELETE", "/strategies/modules/momo%3A", 400);
    expect_status(srv, "DELETE", "/strategies/modules/momo%40abc", 400);
    expect_status(srv, "DELETE", "/strategies/modules/MOMO", 400);
    tu_catalog_expect_same(srv, &before, "refused deletes");
    tu_catalog_state_free(&before);
    tu_three_revisions_free(&m);
    tu_server_stop(srv);
}

/* ------------------------------------------------------- hand edits */

static const json_t *listed_revision(const json_t *module, const char *spelled)
{
    size_t i;
    const json_t *rev;
    json_array_foreach(json_object_get(module, "revisions"), i, rev)
    {
        const char *h = json_string_value(json_object_get(rev, "hash"));
        if (h && strcmp(h, spelled) == 0)
            return rev;
    }
    char *dump = json_dumps(module, JSON_COMPACT);
    fail_msg("revision %s is not listed: %s", spelled, dump);
    return NULL;
}

static void expect_invalid(struct tu_server *srv, const struct tu_three_revisions *m, int bad)
{
    json_t *mod = tu_get_json(srv, 200, "/strategies/modules?strategy=momo");
    const json_t *summary = json_array_get(json_object_get(mod, "modules"), 0);
    assert_non_null(summary);
    assert_int_equal(json_array_size(json_object_get(summary, "revisions")), 3);
    for (int i = 0; i < 3; i++) {
        const json_t *rev = listed_revision(summary, m->spelled[i]);
        if (i == bad) {
            assert_true(json_is_true(json_object_get(rev, "invalid")));
            const json_t *reason = json_object_get(rev, "invalidReason");
            if (!json_is_string(reason) || json_string_length(reason) == 0)
                fail_msg("an invalid revision has no invalidReason");
        } else {
            assert_true(json_is_false(json_object_get(rev, "invalid")));
        }
    }
    json_decref(mod);
}

/* Every way of reaching the damaged revision must fail. */
static void expect_not_selectable(struct tu_server *srv, const struct tu_three_revisions *m,
                                  int bad, const char *tag)
{
    char *selectors[] = {tu_path("momo@%s", m->hex[bad]), tu_path("momo@sha256:%s", m->hex[bad]),
                         tu_path("momo:%s", tag), tu_path("momo@%.12s", m->hex[bad])};
    for (int i = 0; i < 4; i++) {
        const char *suffix[] = {"", "/source"};
        for (int s = 0; s < 2; s++) {
            struct tu_response res;
            tu_get(srv, &res, "/strategies/modules/%s%s", selectors[i], suffix[s]);
            if (res.status != 404 && res.status != 409)
                fail_msg("GET /strategies/modules/%s%s of a revision whose bytes do not match "
                         "its hash: expected 404 or 409, got %ld: %.300s",
                         selectors[i], suffix[s], res.status, res.body);
            tu_assert_error(&res, res.status);
            tu_response_free(&res);
        }
        free(selectors[i]);
    }
    /* Nor can a tag be pointed at it. */
    char *body = tu_path("{\"hash\": \"%s\"}", m->spelled[bad]);
    struct tu_response res;
    tu_send(srv, &res, "PUT", "/strategies/modules/momo/tags/prod", body);
    if (res.status != 404 && res.status != 409)
        fail_msg("moving a tag onto a revision whose bytes do not match: expected 404 or 409, got "
                 "%ld: %s",
                 res.status, res.body);
    tu_assert_error(&res, res.status);
    tu_response_free(&res);
    free(body);
}

static void tamper(const struct tu_server *srv, const struct tu_three_revisions *m, int which)
{
    char *file = rev_file(srv, "momo", m->hex[which]);
    char *text = tu_path("%s// edited by hand\n", m->src[which]);
    tu_write_text(file, text);
    free(text);
    free(file);
}

static void expect_logged(const struct tu_server *srv, const char *spelled)
{
    char *log = tu_server_log(srv);
    if (!strstr(log, spelled)) {
        size_t n = strlen(log);
        fail_msg("the server log does not mention %s; its tail:\n%s", spelled,
                 n > 4000 ? log + n - 4000 : log);
    }
    free(log);
}

static void test_refresh_reports_a_hand_edited_file(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions m;
    tu_three_revisions_upload(srv, "momo", &m);
    tamper(srv, &m, 1);

    struct tu_response res;
    tu_request(srv, &res, "POST", "/strategies/refresh", NULL);
    tu_assert_status(&res, 200);
    assert_true(json_is_string(json_object_get(res.json, "status")));
    const json_t *results = json_object_get(res.json, "results");
    assert_true(json_is_array(results));
    assert_int_equal(json_array_size(results), 0);
    const json_t *problems = json_object_get(res.json, "problems");
    if (!json_is_array(problems) || json_array_size(problems) != 1)
        fail_msg("refresh should report exactly the one damaged revision: %s", res.body);
    char *dump = json_dumps(problems, JSON_COMPACT);
    if (!strstr(dump, m.hex[1]))
        fail_msg("the problem does not name %s: %s", m.spelled[1], dump);
    free(dump);
    tu_response_free(&res);

    expect_invalid(srv, &m, 1);
    expect_not_selectable(srv, &m, 1, "v2");
    expect_logged(srv, m.spelled[1]);
    /* The rest is served as before. */
    expect_selected(srv, "momo", m.spelled[0]);
    expect_selected(srv, "momo:v3", m.spelled[2]);
    tu_get(srv, &res, "/strategies/modules/momo:v3/source");
    tu_assert_status(&res, 200);
    assert_int_equal(res.len, strlen(m.src[2]));
    tu_response_free(&res);

    /* Putting the bytes back and refreshing heals it. */
    char *file = rev_file(srv, "momo", m.hex[1]);
    tu_write_text(file, m.src[1]);
    free(file);
    tu_request(srv, &res, "POST", "/strategies/refresh", NULL);
    tu_assert_status(&res, 200);
    assert_int_equal(json_array_size(json_object_get(res.json, "problems")), 0);
    tu_response_free(&res);
    expect_selected(srv, "momo:v2", m.spelled[1]);
    expect_invalid(srv, &m, -1);
    tu_three_revisions_free(&m);
    tu_server_stop(srv);
}

static void test_load_reports_a_hand_edited_file(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions m;
    tu_three_revisions_upload(srv, "momo", &m);
    tu_server_stop(srv);
    tamper(srv, &m, 2);
    tu_server_restart(srv, NULL);

    expect_invalid(srv, &m, 2);
    expect_not_selectable(srv, &m, 2, "v3");
    expect_logged(srv, m.spelled[2]);
    expect_selected(srv, "momo:v2", m.spelled[1]);
    tu_three_revisions_free(&m);
    tu_server_stop(srv);
}

static void test_damaged_latest_is_not_selected(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions m;
    tu_three_revisions_upload(srv, "momo", &m);
    tamper(srv, &m, 0); /* a: v1 and latest */
    struct tu_response res;
    tu_request(srv, &res, "POST", "/strategies/refresh", NULL);
    tu_assert_status(&res, 200);
    tu_response_free(&res);
    expect_invalid(srv, &m, 0);
    expect_not_selectable(srv, &m, 0, "latest");
    const char *by_name[] = {"/strategies/modules/momo", "/strategies/modules/momo/source"};
    for (int i = 0; i < 2; i++) {
        tu_get(srv, &res, "%s", by_name[i]);
        if (res.status != 404 && res.status != 409)
            fail_msg("GET %s while latest's file is damaged: expected 404 or 409, got %ld: %.300s",
                     by_name[i], res.status, res.body);
        tu_assert_error(&res, res.status);
        tu_response_free(&res);
    }
    /* The listing still works, and the good revisions are still served. */
    json_decref(tu_get_json(srv, 200, "/strategies/modules"));
    expect_selected(srv, "momo:v2", m.spelled[1]);
    tu_three_revisions_free(&m);
    tu_server_stop(srv);
}

static void test_refresh_reports_a_missing_file(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions m;
    tu_three_revisions_upload(srv, "momo", &m);
    char *file = rev_file(srv, "momo", m.hex[2]);
    assert_int_equal(unlink(file), 0);
    free(file);

    struct tu_response res;
    tu_request(srv, &res, "POST", "/strategies/refresh", NULL);
    tu_assert_status(&res, 200);
    const json_t *problems = json_object_get(res.json, "problems");
    char *dump = json_dumps(problems, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!json_is_array(problems) || json_array_size(problems) != 1 || !strstr(dump, m.hex[2]))
        fail_msg("refresh should report exactly the revision whose file is gone: %s", res.body);
    free(dump);
    tu_response_free(&res);
    expect_invalid(srv, &m, 2);
    expect_not_selectable(srv, &m, 2, "v3");
    expect_selected(srv, "momo", m.spelled[0]);
    tu_three_revisions_free(&m);
    tu_server_stop(srv);
}

static void test_refresh_picks_up_registry_edits(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions m;
    tu_three_revisions_upload(srv, "momo", &m);

    /* By hand: v1 moves to c, and a new revision d arrives with tag "hand". */
    char *d = tu_module_source("momo", NULL, "onOrderFilled() {},");
    char hd[65];
    tu_sha256_hex(d, strlen(d), hd);
    char *sd = spell(hd);
    char *dir = tu_path("%s/momo/%s", srv->strategies_dir, hd);
    assert_int_equal(mkdir(dir, 0755), 0);
    char *file = rev_file(srv, "momo", hd);
    tu_write_text(file, d);
    json_t *reg = tu_registry_disk(srv);
    json_t *st = json_object_get(reg, "momo");
    json_object_set_new(json_object_get(st, "tags"), "v1", json_string(m.spelled[2]));
    json_object_set_new(json_object_get(st, "tags"), "hand", json_string(sd));
    char *rel = tu_path("momo/%s/momo.js", hd);
    json_object_set_new(json_object_get(st, "hashes"), sd,
                        json_pack("{s:s, s:s}", "tag", "hand", "path", rel));
    char *path = tu_path("%s/registry.json", srv->strategies_dir);
    assert_int_equal(json_dump_file(reg, path, JSON_INDENT(2)), 0);
    json_decref(reg);

    struct tu_response res;
    tu_request(srv, &res, "POST", "/strategies/refresh", NULL);
    tu_assert_status(&res, 200);
    assert_int_equal(json_array_size(json_object_get(res.json, "problems")), 0);
    tu_response_free(&res);

    expect_selected(srv, "momo:v1", m.spelled[2]);
    expect_selected(srv, "momo:hand", sd);
    tu_get(srv, &res, "/strategies/modules/momo:hand/source");
    tu_assert_status(&res, 200);
    assert_int_equal(res.len, strlen(d));
    assert_memory_equal(res.body, d, res.len);
    tu_response_free(&res);
    json_t *mod = tu_get_json(srv, 200, "/strategies/modules/momo");
    assert_int_equal(json_array_size(json_object_get(mod, "revisions")), 4);
    json_decref(mod);

    /* The export is the edited registry. */
    json_t *exp = tu_get_json(srv, 200, "/strategies/registry");
    json_t *disk = tu_registry_disk(srv);
    assert_true(json_equal(json_object_get(exp, "registry"), disk));
    json_decref(disk);
    json_decref(exp);

    free(path);
    free(rel);
    free(file);
    free(dir);
    free(sd);
    free(d);
    tu_three_revisions_free(&m);
    tu_server_stop(srv);
}

static void test_refresh_keeps_serving_when_registry_is_broken(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    struct tu_three_revisions m;
    tu_three_revisions_upload(srv, "momo", &m);
    json_t *listing = tu_get_json(srv, 200, "/strategies/modules");

    char *path = tu_path("%s/registry.json", srv->strategies_dir);
    tu_write_text(path, "{\"momo\": {\"tags\": {\"latest\": ");
    struct tu_response res;
    tu_request(srv, &res, "POST", "/strategies/refresh", NULL);
    if (res.status < 400 || res.status >= 500)
        fail_msg("refresh over a registry.json that is not JSON: expected a 4xx error, got %ld: "
                 "%s",
                 res.status, res.body);
    tu_assert_error(&res, res.status);
    tu_response_free(&res);

    /* The last good catalogue is still served. */
    json_t *now = tu_get_json(srv, 200, "/strategies/modules");
    if (!json_equal(now, listing)) {
        char *a = json_dumps(now, JSON_COMPACT), *b = json_dumps(listing, JSON_COMPACT);
        fail_msg("the listing changed after a failed refresh:\nbefore %s\nafter  %s", b, a);
    }
    json_decref(now);
    json_decref(listing);
    expect_selected(srv, "momo:v2", m.spelled[1]);
    free(path);
    tu_three_revisions_free(&m);
    tu_server_stop(srv);
}

/* --------------------------------------------------------------- export */

static void test_registry_export_is_registry_json(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);

    json_t *exp = tu_get_json(srv, 200, "/strategies/registry");
    assert_true(json_is_object(json_object_get(exp, "registry")));
    assert_int_equal(json_object_size(json_object_get(exp, "registry")), 0);
    assert_true(json_is_array(json_object_get(exp, "usage")));
    json_decref(exp);

    struct tu_three_revisions m;
    tu_three_revisions_upload(srv, "momo", &m);
    char *other = tu_module_source("other", NULL, NULL);
    tu_upload_expect(srv, other, "{\"aliases\": [\"prod\"]}", 201, NULL);

    exp = tu_get_json(srv, 200, "/strategies/registry");
    json_t *disk = tu_assert_registry_sound(srv->strategies_dir);
    if (!json_equal(json_object_get(exp, "registry"), disk)) {
        char *a = json_dumps(json_object_get(exp, "registry"), JSON_COMPACT | JSON_SORT_KEYS);
        char *b = json_dumps(disk, JSON_COMPACT | JSON_SORT_KEYS);
        fail_msg("GET /strategies/registry differs from registry.json:\nexport %s\ndisk   %s", a,
                 b);
    }
    const json_t *usage = json_object_get(exp, "usage");
    assert_true(json_is_array(usage));
    assert_int_equal(json_array_size(usage), 0);
    json_decref(disk);
    json_decref(exp);
    free(other);
    tu_three_revisions_free(&m);
    tu_server_stop(srv);
}

/* The number of registry.json.old.* files (replaced registries kept for
 * removal after the answer) in the strategies folder. */
static int replaced_registries(const struct tu_server *srv)
{
    char *out = NULL;
    assert_int_equal(tu_run(&out, "find '%s' -maxdepth 1 -name 'registry.json.old.*' | wc -l",
                            srv->strategies_dir),
                     0);
    int n = atoi(out);
    free(out);
    return n;
}

static bool no_replaced_registry(void *srv)
{
    return replaced_registries(srv) == 0;
}

/* Each change replaces registry.json by rename and removes the replaced
 * file once the change is answered: nothing accumulates, and what a killed
 * server leaves behind is swept on the next start. */
static void test_replaced_registries_are_removed(void **state)
{
    struct tu_server *srv = *state;
    tu_server_start(srv, NULL);
    for (int i = 0; i < 6; i++) {
        char tag[16];
        snprintf(tag, sizeof tag, "v1.%d", i);
        char *src = tu_module_source("churn", tag, NULL);
        tu_upload_expect(srv, src, NULL, 201, NULL);
        free(src);
    }
    (void)tu_ops_wait_until(no_replaced_registry, srv, TU_WAIT_S);
    assert_int_equal(replaced_registries(srv), 0);
    json_decref(tu_assert_registry_sound(srv->strategies_dir));
    tu_server_stop(srv);

    char *left = tu_path("%s/registry.json.old.4242.7", srv->strategies_dir);
    char *registry = tu_path("%s/registry.json", srv->strategies_dir);
    assert_int_equal(link(registry, left), 0); /* as a kill -9 after a change leaves it */
    tu_server_restart(srv, NULL);
    assert_int_equal(replaced_registries(srv), 0);
    json_t *disk = tu_assert_registry_sound(srv->strategies_dir);
    assert_int_equal(json_object_size(tu_jget(disk, "churn.hashes")), 6);
    json_decref(disk);
    json_t *listing = tu_get_json(srv, 200, "/strategies/modules/churn");
    assert_string_equal(tu_jstr(listing, "name"), "churn");
    json_decref(listing);
    free(left);
    free(registry);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_delete_revision_by_hash, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_delete_latest_by_tag_moves_latest_to_newest,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_delete_whole_strategy_and_last_revision,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_delete_through_a_linked_folder, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refused_deletes_change_nothing, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_reports_a_hand_edited_file, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_load_reports_a_hand_edited_file, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_damaged_latest_is_not_selected, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_reports_a_missing_file, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_picks_up_registry_edits, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_refresh_keeps_serving_when_registry_is_broken,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_replaced_registries_are_removed, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_registry_export_is_registry_json, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
