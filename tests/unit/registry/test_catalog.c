/*
 * Changes to the catalogue: upload rules, tags, deletes, guards, other
 * writers, and failed writes that must leave everything as it was.
 */
#include "regtest.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------ write failures */

/* Renames onto a path ending in fail_rename_suffix fail with
 * fail_rename_errno. This stands in for a full disk or an I/O error even when
 * the tests run as root, for whom permissions block nothing. The definition
 * here takes the place of libc's for the whole test executable. */
static const char *fail_rename_suffix;
static int fail_rename_errno;

/* A process dies (as under SIGKILL: nothing of its own runs) when it
 * renames onto a path ending in crash_rename_suffix, just before the
 * rename or just after it. */
static const char *crash_rename_suffix;
static bool crash_after_rename;

static bool ends_with(const char *path, const char *suffix)
{
    size_t n = suffix ? strlen(suffix) : 0, len = strlen(path);
    return n && len >= n && strcmp(path + len - n, suffix) == 0;
}

int rename(const char *from, const char *to)
{
    if (ends_with(to, fail_rename_suffix)) {
        errno = fail_rename_errno;
        return -1;
    }
    return renameat(AT_FDCWD, from, AT_FDCWD, to);
}

/* The registry's writer exchanges names (fsutil_write_swap): the same. */
int renameat2(int from_dir, const char *from, int to_dir, const char *to, unsigned flags)
{
    if (ends_with(to, fail_rename_suffix)) {
        errno = fail_rename_errno;
        return -1;
    }
    bool crash = ends_with(to, crash_rename_suffix);
    if (crash && !crash_after_rename)
        _exit(9);
    int rc = (int)syscall(SYS_renameat2, from_dir, from, to_dir, to, flags);
    if (crash)
        _exit(9);
    return rc;
}

/* fsync of the directory with this inode fails with EIO while set: for the
 * strategies root, the registry's switch has happened by then (the
 * directory is synced after the rename). */
static ino_t fail_dir_fsync;

int fsync(int fd)
{
    struct stat st;
    if (fail_dir_fsync && fstat(fd, &st) == 0 && st.st_ino == fail_dir_fsync) {
        errno = EIO;
        return -1;
    }
    return (int)syscall(SYS_fsync, fd);
}

/* ------------------------------------------------------------ fixture */

struct fixture {
    char *root;
    struct catalog *cat;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    f->root = tu_tempdir("registry-catalog");
    f->cat = rt_open(f->root);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    fail_rename_suffix = NULL;
    fail_dir_fsync = 0;
    catalog_close(f->cat);
    tu_remove_tree(f->root);
    free(f->root);
    free(f);
    return 0;
}

static char *file_of(const struct fixture *f, const char *name, const char *hex)
{
    return tu_path("%s/%s/%s/%s.js", f->root, name, hex, name);
}

static char *registry_text(const struct fixture *f)
{
    char *path = tu_path("%s/registry.json", f->root);
    char *text = tu_read_file(path, NULL);
    free(path);
    return text;
}

static uint64_t generation(struct catalog *cat)
{
    struct registry *reg = catalog_snapshot(cat);
    uint64_t g = reg->generation;
    registry_release(reg);
    return g;
}

static int upload_full(struct catalog *cat, const char *name, const char *source, const char *tag,
                       const char *const *aliases, size_t naliases, const char *const *reassign,
                       size_t nreassign, bool promote, struct catalog_upload_result *result,
                       struct err *err)
{
    struct catalog_upload up = {
        .name = name,
        .source = source,
        .len = strlen(source),
        .tag = tag,
        .aliases = aliases,
        .naliases = naliases,
        .reassign = reassign,
        .nreassign = nreassign,
        .promote_latest = promote,
    };
    return catalog_add_revision(cat, &up, result, err);
}

/* -------------------------------------------------------------- uploads */

static void test_first_revision_becomes_latest(void **state)
{
    struct fixture *f = *state;
    char *source = rt_source("alpha", 1);
    struct catalog_upload_result result;
    struct err err = ERR_INIT;
    json_t *metadata = json_pack("{s:s}", "name", "alpha");
    struct catalog_upload up = {.name = "alpha",
                                .source = source,
                                .len = strlen(source),
                                .metadata = metadata,
                                .tag = "v1"};
    uint64_t g = generation(f->cat);
    rt_assert_ok(catalog_add_revision(f->cat, &up, &result, &err), &err);
    assert_true(result.created);
    assert_string_equal(result.tag, "v1");
    char expected[HASH_HEX_LEN + 1];
    rt_hex_of(source, expected);
    assert_string_equal(result.hex, expected);
    assert_int_equal(generation(f->cat), g + 1);

    struct registry *reg = catalog_snapshot(f->cat);
    const struct registry_strategy *st = registry_find_strategy(reg, "alpha");
    assert_string_equal(registry_tag_target(st, "latest"), result.hex);
    assert_string_equal(registry_tag_target(st, "v1"), result.hex);
    const struct registry_revision *rev = registry_latest(st);
    assert_string_equal(rev->tag, "v1");
    assert_int_equal(rev->size, strlen(source));
    assert_false(rev->invalid);
    assert_true(json_equal(rev->metadata, metadata));
    registry_release(reg);
    json_decref(metadata);

    char *path = file_of(f, "alpha", result.hex);
    char *on_disk = tu_read_file(path, NULL);
    assert_string_equal(on_disk, source);
    free(on_disk);
    free(path);
    char *out = NULL;
    size_t len = 0;
    rt_assert_ok(catalog_read_source(f->cat, "alpha", result.hex, &out, &len, &err), &err);
    assert_int_equal(len, strlen(source));
    assert_string_equal(out, source);
    free(out);
    free(source);

    /* a later revision does not take `latest` unless asked to */
    char h2[HASH_HEX_LEN + 1], h3[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 2, "v2", h2);
    rt_tag(f->cat, "alpha", "latest", h3);
    assert_string_equal(h3, result.hex);
    char *s3 = rt_source("alpha", 3);
    rt_assert_ok(upload_full(f->cat, "alpha", s3, "v3", NULL, 0, NULL, 0, true, &result, &err),
                 &err);
    rt_tag(f->cat, "alpha", "latest", h3);
    assert_string_equal(h3, result.hex);
    /* with no tag, the primary tag is `latest` itself */
    char *s4 = rt_source("alpha", 4);
    rt_assert_ok(rt_upload(f->cat, "alpha", s4, NULL, &result, &err), &err);
    assert_string_equal(result.tag, "latest");
    rt_tag(f->cat, "alpha", "latest", h3);
    assert_string_equal(h3, result.hex);
    free(s3);
    free(s4);
    rt_check_disk(f->root);
}

static void test_identical_reupload(void **state)
{
    struct fixture *f = *state;
    char *source = rt_source("alpha", 1);
    struct catalog_upload_result first, again;
    struct err err = ERR_INIT;
    rt_assert_ok(rt_upload(f->cat, "alpha", source, "v1", &first, &err), &err);
    char h2[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 2, NULL, h2);
    char *before = registry_text(f);
    uint64_t g = generation(f->cat);

    /* same bytes, same tag: nothing to do, nothing written */
    rt_assert_ok(rt_upload(f->cat, "alpha", source, "v1", &again, &err), &err);
    assert_false(again.created);
    assert_string_equal(again.hex, first.hex);
    assert_int_equal(generation(f->cat), g);
    char *after = registry_text(f);
    assert_string_equal(before, after);
    free(after);

    /* same bytes with aliases and promote: the tags still move */
    const char *aliases[] = {"prod"};
    rt_assert_ok(
        upload_full(f->cat, "alpha", source, "v1", aliases, 1, NULL, 0, true, &again, &err), &err);
    assert_false(again.created);
    char hex[HASH_HEX_LEN + 1];
    rt_tag(f->cat, "alpha", "prod", hex);
    assert_string_equal(hex, first.hex);
    rt_tag(f->cat, "alpha", "latest", hex);
    assert_string_equal(hex, first.hex);
    /* the primary tag recorded for the revision is the first one */
    struct registry *reg = catalog_snapshot(f->cat);
    const struct registry_strategy *st = registry_find_strategy(reg, "alpha");
    assert_int_equal(st->nrevisions, 2);
    assert_string_equal(registry_find_revision(st, first.hex)->tag, "v1");
    registry_release(reg);
    free(before);
    free(source);
}

static void test_version_tag_conflict(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    char *before = registry_text(f);
    uint64_t g = generation(f->cat);
    char *s2 = rt_source("alpha", 2);
    char h2[HASH_HEX_LEN + 1];
    rt_hex_of(s2, h2);
    const char *aliases[] = {"prod"};
    struct catalog_upload_result result;
    struct err err = ERR_INIT;
    rt_assert_fails(
        upload_full(f->cat, "alpha", s2, "v1", aliases, 1, NULL, 0, true, &result, &err), &err,
        ERR_CONFLICT);
    assert_string_equal(json_string_value(json_object_get(err.details, "tag")), "v1");
    char spelled[HASH_SPELLED_LEN + 1];
    hash_spell(h1, spelled);
    assert_string_equal(json_string_value(json_object_get(err.details, "hash")), spelled);
    err_clear(&err);
    /* the whole upload was refused: no tag moved, no file written */
    assert_int_equal(generation(f->cat), g);
    char *after = registry_text(f);
    assert_string_equal(before, after);
    free(after);
    char *dir = tu_path("%s/alpha/%s", f->root, h2);
    assert_false(fsutil_exists(dir));
    free(dir);
    char hex[HASH_HEX_LEN + 1];
    rt_tag(f->cat, "alpha", "prod", hex);
    assert_string_equal(hex, "");

    /* listed in reassign, it moves */
    const char *reassign[] = {"v1"};
    rt_assert_ok(
        upload_full(f->cat, "alpha", s2, "v1", aliases, 1, reassign, 1, false, &result, &err),
        &err);
    assert_true(result.created);
    rt_tag(f->cat, "alpha", "v1", hex);
    assert_string_equal(hex, h2);
    rt_tag(f->cat, "alpha", "prod", hex);
    assert_string_equal(hex, h2);
    rt_tag(f->cat, "alpha", "latest", hex);
    assert_string_equal(hex, h1);

    /* `latest` as the primary tag never conflicts */
    char *s3 = rt_source("alpha", 3);
    rt_assert_ok(rt_upload(f->cat, "alpha", s3, "latest", &result, &err), &err);
    rt_tag(f->cat, "alpha", "latest", hex);
    assert_string_equal(hex, result.hex);
    free(s3);
    free(s2);
    free(before);
    rt_check_disk(f->root);
}

static void test_aliases_move_in_one_write(void **state)
{
    struct fixture *f = *state;
    char *s1 = rt_source("alpha", 1), *s2 = rt_source("alpha", 2);
    const char *both[] = {"prod", "stable"};
    const char *prod[] = {"prod"};
    struct catalog_upload_result r1, r2;
    struct err err = ERR_INIT;
    rt_assert_ok(upload_full(f->cat, "alpha", s1, "v1", both, 2, NULL, 0, false, &r1, &err), &err);
    uint64_t g = generation(f->cat);
    rt_assert_ok(upload_full(f->cat, "alpha", s2, "v2", prod, 1, NULL, 0, true, &r2, &err), &err);
    assert_int_equal(generation(f->cat), g + 1);
    char hex[HASH_HEX_LEN + 1];
    rt_tag(f->cat, "alpha", "prod", hex);
    assert_string_equal(hex, r2.hex);
    rt_tag(f->cat, "alpha", "stable", hex);
    assert_string_equal(hex, r1.hex);
    rt_tag(f->cat, "alpha", "latest", hex);
    assert_string_equal(hex, r2.hex);
    rt_tag(f->cat, "alpha", "v2", hex);
    assert_string_equal(hex, r2.hex);
    /* an alias may be `latest` too */
    char *s3 = rt_source("alpha", 3);
    const char *latest[] = {"latest"};
    rt_assert_ok(upload_full(f->cat, "alpha", s3, "v3", latest, 1, NULL, 0, false, &r2, &err),
                 &err);
    rt_tag(f->cat, "alpha", "latest", hex);
    assert_string_equal(hex, r2.hex);
    free(s1);
    free(s2);
    free(s3);
}

static void test_upload_validation(void **state)
{
    struct fixture *f = *state;
    char *source = rt_source("x", 1);
    const char *bad_alias[] = {"ok", "../etc"};
    const char *bad_reassign[] = {"a b"};
    struct catalog_upload_result result;
    struct err err = ERR_INIT;
    rt_assert_fails(rt_upload(f->cat, "Bad", source, NULL, &result, &err), &err, ERR_INVALID);
    assert_non_null(strstr(err.message, "Bad"));
    err_clear(&err);
    rt_assert_fails(rt_upload(f->cat, "../x", source, NULL, &result, &err), &err, ERR_INVALID);
    err_clear(&err);
    for (size_t i = 0; i < 3; i++) {
        const char *reserved[] = {"modules", "registry", "refresh"};
        rt_assert_fails(rt_upload(f->cat, reserved[i], source, NULL, &result, &err), &err,
                        ERR_INVALID);
        assert_non_null(strstr(err.message, "reserved"));
        err_clear(&err);
    }
    rt_assert_fails(rt_upload(f->cat, "x", source, ".v1", &result, &err), &err, ERR_INVALID);
    err_clear(&err);
    rt_assert_fails(
        upload_full(f->cat, "x", source, "v1", bad_alias, 2, NULL, 0, false, &result, &err), &err,
        ERR_INVALID);
    assert_non_null(strstr(err.message, "../etc"));
    err_clear(&err);
    rt_assert_fails(
        upload_full(f->cat, "x", source, "v1", NULL, 0, bad_reassign, 1, false, &result, &err),
        &err, ERR_INVALID);
    err_clear(&err);
    free(source);
    char *ls = rt_ls(f->root);
    assert_string_equal(ls, ".registry.lock\n");
    free(ls);
}

static void test_reupload_repairs_a_damaged_file(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1], h2[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    rt_add(f->cat, "alpha", 2, "v2", h2);
    char *path = file_of(f, "alpha", h1);
    unlink(path);
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_reload(f->cat, NULL, &err), &err);
    char *source = rt_source("alpha", 1);
    struct catalog_upload_result result;
    rt_assert_ok(rt_upload(f->cat, "alpha", source, "v1", &result, &err), &err);
    assert_false(result.created);
    char *on_disk = tu_read_file(path, NULL);
    assert_string_equal(on_disk, source);
    struct registry *reg = catalog_snapshot(f->cat);
    assert_false(registry_find_revision(registry_find_strategy(reg, "alpha"), h1)->invalid);
    registry_release(reg);
    free(on_disk);
    free(source);
    free(path);
    rt_check_disk(f->root);
}

/* ----------------------------------------------------------------- tags */

static void test_set_tag(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1], h2[HASH_HEX_LEN + 1], prev[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    rt_add(f->cat, "alpha", 2, "v2", h2);
    struct err err = ERR_INIT;
    memset(prev, 'x', sizeof prev);
    rt_assert_ok(catalog_set_tag(f->cat, "alpha", "prod", h1, prev, &err), &err);
    assert_string_equal(prev, "");
    char *spelled = tu_path("sha256:%s", h2);
    rt_assert_ok(catalog_set_tag(f->cat, "alpha", "prod", spelled, prev, &err), &err);
    assert_string_equal(prev, h1);
    free(spelled);
    char hex[HASH_HEX_LEN + 1];
    rt_tag(f->cat, "alpha", "prod", hex);
    assert_string_equal(hex, h2);
    /* moving `latest` is allowed */
    rt_assert_ok(catalog_set_tag(f->cat, "alpha", "latest", h2, prev, &err), &err);
    assert_string_equal(prev, h1);
    /* setting what is already there changes nothing */
    uint64_t g = generation(f->cat);
    rt_assert_ok(catalog_set_tag(f->cat, "alpha", "prod", h2, prev, &err), &err);
    assert_string_equal(prev, h2);
    assert_int_equal(generation(f->cat), g);

    rt_assert_fails(catalog_set_tag(f->cat, "beta", "prod", h1, prev, &err), &err, ERR_NOT_FOUND);
    err_clear(&err);
    char other[HASH_HEX_LEN + 1];
    hash_sha256_hex("nope", 4, other);
    rt_assert_fails(catalog_set_tag(f->cat, "alpha", "prod", other, prev, &err), &err,
                    ERR_NOT_FOUND);
    err_clear(&err);
    rt_assert_fails(catalog_set_tag(f->cat, "alpha", "prod", "abcdef012345", prev, &err), &err,
                    ERR_INVALID);
    err_clear(&err);
    rt_assert_fails(catalog_set_tag(f->cat, "alpha", "a/b", h1, prev, &err), &err, ERR_INVALID);
    err_clear(&err);
    rt_assert_fails(catalog_set_tag(f->cat, "Alpha", "x", h1, prev, &err), &err, ERR_INVALID);
    err_clear(&err);
    assert_int_equal(generation(f->cat), g);
    rt_check_disk(f->root);
}

static void test_delete_tag(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1], h2[HASH_HEX_LEN + 1], prev[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    rt_add(f->cat, "alpha", 2, NULL, h2); /* takes `latest` off h1 */
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_set_tag(f->cat, "alpha", "prod", h1, NULL, &err), &err);

    rt_assert_fails(catalog_delete_tag(f->cat, "alpha", "latest", true, prev, &err), &err,
                    ERR_CONFLICT);
    assert_non_null(strstr(err.message, "reassign"));
    err_clear(&err);
    rt_assert_fails(catalog_delete_tag(f->cat, "alpha", "nope", false, prev, &err), &err,
                    ERR_NOT_FOUND);
    err_clear(&err);
    rt_assert_fails(catalog_delete_tag(f->cat, "beta", "v1", false, prev, &err), &err,
                    ERR_NOT_FOUND);
    err_clear(&err);
    rt_assert_fails(catalog_delete_tag(f->cat, "alpha", "..", false, prev, &err), &err,
                    ERR_INVALID);
    err_clear(&err);

    /* v1 shares h1 with prod: fine */
    rt_assert_ok(catalog_delete_tag(f->cat, "alpha", "v1", false, prev, &err), &err);
    assert_string_equal(prev, h1);
    /* prod is now h1's last tag */
    rt_assert_fails(catalog_delete_tag(f->cat, "alpha", "prod", false, prev, &err), &err,
                    ERR_CONFLICT);
    assert_string_equal(json_string_value(json_object_get(err.details, "tag")), "prod");
    err_clear(&err);
    char hex[HASH_HEX_LEN + 1];
    rt_tag(f->cat, "alpha", "prod", hex);
    assert_string_equal(hex, h1);
    rt_assert_ok(catalog_delete_tag(f->cat, "alpha", "prod", true, prev, &err), &err);
    assert_string_equal(prev, h1);
    rt_tag(f->cat, "alpha", "prod", hex);
    assert_string_equal(hex, "");
    /* the orphan revision stays, reachable by hash */
    struct registry *reg = catalog_snapshot(f->cat);
    struct registry_resolution r;
    char *sel = tu_path("alpha@%.12s", h1);
    rt_assert_ok(registry_resolve_text(reg, sel, &r, &err), &err);
    free(sel);
    registry_release(reg);
    rt_check_disk(f->root);
}

/* -------------------------------------------------------------- deletes */

struct guard_log {
    int calls;
    char name[NAMES_STRATEGY_MAX + 1];
    char hex[HASH_HEX_LEN + 1];
    bool saw_null_hex;
    bool veto;
    bool veto_silently;
};

static int guard(void *ctx, const char *name, const char *hex, struct err *err)
{
    struct guard_log *log = ctx;
    log->calls++;
    snprintf(log->name, sizeof log->name, "%s", name);
    snprintf(log->hex, sizeof log->hex, "%s", hex ? hex : "");
    log->saw_null_hex = hex == NULL;
    if (log->veto_silently)
        return -1;
    if (!log->veto)
        return 0;
    err_set(err, ERR_CONFLICT, "revision is pinned by 2 running instances");
    err_add_detail(err, "instances", json_pack("[s, s]", "i-1", "i-2"));
    return -1;
}

static void test_delete_revision_moves_latest(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1], h2[HASH_HEX_LEN + 1], h3[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    rt_add(f->cat, "alpha", 2, "v2", h2);
    char *s3 = rt_source("alpha", 3);
    const char *aliases[] = {"prod"};
    struct catalog_upload_result r3;
    struct err err = ERR_INIT;
    rt_assert_ok(upload_full(f->cat, "alpha", s3, "v3", aliases, 1, NULL, 0, true, &r3, &err),
                 &err);
    memcpy(h3, r3.hex, sizeof h3);
    free(s3);
    struct guard_log log = {0};
    rt_assert_ok(catalog_delete_revision(f->cat, "alpha", h3, guard, &log, &err), &err);
    assert_int_equal(log.calls, 1);
    assert_string_equal(log.name, "alpha");
    assert_string_equal(log.hex, h3);

    struct registry *reg = catalog_snapshot(f->cat);
    const struct registry_strategy *st = registry_find_strategy(reg, "alpha");
    assert_int_equal(st->nrevisions, 2);
    assert_string_equal(registry_tag_target(st, "latest"), h2);
    assert_null(registry_tag_target(st, "v3"));
    assert_null(registry_tag_target(st, "prod"));
    registry_release(reg);
    char *path = file_of(f, "alpha", h3);
    assert_false(fsutil_exists(path));
    free(path);
    char *dir = tu_path("%s/alpha/%s", f->root, h3);
    assert_false(fsutil_exists(dir));
    free(dir);

    /* deleting another revision leaves `latest` alone */
    rt_assert_ok(catalog_delete_revision(f->cat, "alpha", h1, NULL, NULL, &err), &err);
    char hex[HASH_HEX_LEN + 1];
    rt_tag(f->cat, "alpha", "latest", hex);
    assert_string_equal(hex, h2);
    /* a new revision is still newer than everything that is left */
    char h4[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 4, "v4", h4);
    rt_assert_ok(catalog_delete_revision(f->cat, "alpha", h2, NULL, NULL, &err), &err);
    rt_tag(f->cat, "alpha", "latest", hex);
    assert_string_equal(hex, h4);

    rt_assert_fails(catalog_delete_revision(f->cat, "alpha", h2, NULL, NULL, &err), &err,
                    ERR_NOT_FOUND);
    err_clear(&err);
    rt_assert_fails(catalog_delete_revision(f->cat, "beta", h2, NULL, NULL, &err), &err,
                    ERR_NOT_FOUND);
    err_clear(&err);
    rt_assert_fails(catalog_delete_revision(f->cat, "alpha", "1234", NULL, NULL, &err), &err,
                    ERR_INVALID);
    err_clear(&err);
    rt_check_disk(f->root);
}

static void test_delete_last_revision_removes_strategy(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1], b1[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    rt_add(f->cat, "beta", 1, NULL, b1);
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_delete_revision(f->cat, "alpha", h1, NULL, NULL, &err), &err);
    struct registry *reg = catalog_snapshot(f->cat);
    assert_null(registry_find_strategy(reg, "alpha"));
    assert_int_equal(reg->nstrategies, 1);
    registry_release(reg);
    char *dir = tu_path("%s/alpha", f->root);
    assert_false(fsutil_exists(dir));
    free(dir);
    char *text = registry_text(f);
    assert_null(strstr(text, "alpha"));
    free(text);
    /* the name can be used again, starting afresh */
    char h2[HASH_HEX_LEN + 1], hex[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 2, "v9", h2);
    rt_tag(f->cat, "alpha", "latest", hex);
    assert_string_equal(hex, h2);
    rt_check_disk(f->root);
}

static void test_delete_strategy(void **state)
{
    struct fixture *f = *state;
    char h[HASH_HEX_LEN + 1], b1[HASH_HEX_LEN + 1];
    for (int i = 0; i < 3; i++)
        rt_add(f->cat, "alpha", i, NULL, h);
    rt_add(f->cat, "beta", 1, NULL, b1);
    /* leftovers of an interrupted upload go with the folder */
    char *junk = tu_path("%s/alpha/%s/alpha.js.tmp.1.0", f->root, h);
    tu_write_text(junk, "partial");
    free(junk);
    struct guard_log log = {0};
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_delete_strategy(f->cat, "alpha", guard, &log, &err), &err);
    assert_int_equal(log.calls, 1);
    assert_true(log.saw_null_hex);
    char *dir = tu_path("%s/alpha", f->root);
    assert_false(fsutil_exists(dir));
    free(dir);
    rt_add(f->cat, "gamma", 1, NULL, h);
    /* files the catalogue never wrote stay, and the folders that hold them */
    char *paths[3] = {tu_path("%s/gamma/v2.0.0/gamma.js", f->root),
                      tu_path("%s/gamma/README.txt", f->root),
                      tu_path("%s/gamma/%s/notes.txt", f->root, h)};
    for (size_t i = 0; i < 3; i++) {
        char *parent = fsutil_dir_of(paths[i]);
        assert_int_equal(fsutil_mkdirs(parent, 0755, &err), 0);
        free(parent);
        tu_write_text(paths[i], "kept");
    }
    rt_assert_ok(catalog_delete_strategy(f->cat, "gamma", guard, &log, &err), &err);
    for (size_t i = 0; i < 3; i++) {
        assert_true(fsutil_exists(paths[i]));
        free(paths[i]);
    }
    char *module = tu_path("%s/gamma/%s/gamma.js", f->root, h);
    assert_false(fsutil_exists(module));
    free(module);
    struct registry *reg = catalog_snapshot(f->cat);
    assert_null(registry_find_strategy(reg, "alpha"));
    assert_non_null(registry_find_strategy(reg, "beta"));
    registry_release(reg);
    rt_assert_fails(catalog_delete_strategy(f->cat, "alpha", guard, &log, &err), &err,
                    ERR_NOT_FOUND);
    err_clear(&err);
    rt_assert_fails(catalog_delete_strategy(f->cat, "a/b", guard, &log, &err), &err, ERR_INVALID);
    err_clear(&err);
    assert_int_equal(log.calls, 2);
    rt_check_disk(f->root);
}

/* An update (existing_only) of a strategy that a delete removed meanwhile
 * is refused whole: the strategy does not come back, nothing is written. */
static void test_update_of_a_deleted_strategy_is_refused(void **state)
{
    struct fixture *f = *state;
    char h[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, NULL, h);
    struct guard_log log = {0};
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_delete_strategy(f->cat, "alpha", guard, &log, &err), &err);
    uint64_t g = generation(f->cat);
    char *source = rt_source("alpha", 2);
    struct catalog_upload up = {
        .name = "alpha", .source = source, .len = strlen(source), .existing_only = true};
    struct catalog_upload_result result;
    rt_assert_fails(catalog_add_revision(f->cat, &up, &result, &err), &err, ERR_NOT_FOUND);
    err_clear(&err);
    assert_int_equal(generation(f->cat), g);
    struct registry *reg = catalog_snapshot(f->cat);
    assert_null(registry_find_strategy(reg, "alpha"));
    registry_release(reg);
    char *dir = tu_path("%s/alpha", f->root);
    assert_false(fsutil_exists(dir));
    free(dir);
    /* the same upload of a strategy that exists goes through */
    rt_add(f->cat, "alpha", 1, NULL, h);
    rt_assert_ok(catalog_add_revision(f->cat, &up, &result, &err), &err);
    assert_true(result.created);
    free(source);
    rt_check_disk(f->root);
}

static void test_guard_veto_changes_nothing(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1], h2[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    rt_add(f->cat, "alpha", 2, "v2", h2);
    char *before = tu_tree_checksum(f->root);
    struct registry *snap = catalog_snapshot(f->cat);
    struct guard_log log = {.veto = true};
    struct err err = ERR_INIT;
    rt_assert_fails(catalog_delete_revision(f->cat, "alpha", h1, guard, &log, &err), &err,
                    ERR_CONFLICT);
    assert_non_null(strstr(err.message, "pinned"));
    assert_int_equal(json_array_size(json_object_get(err.details, "instances")), 2);
    err_clear(&err);
    rt_assert_fails(catalog_delete_strategy(f->cat, "alpha", guard, &log, &err), &err,
                    ERR_CONFLICT);
    err_clear(&err);
    log.veto_silently = true;
    rt_assert_fails(catalog_delete_revision(f->cat, "alpha", h2, guard, &log, &err), &err,
                    ERR_CONFLICT);
    err_clear(&err);
    assert_int_equal(log.calls, 3);
    char *after = tu_tree_checksum(f->root);
    assert_string_equal(before, after);
    struct registry *now = catalog_snapshot(f->cat);
    assert_ptr_equal(snap, now);
    registry_release(now);
    registry_release(snap);
    free(before);
    free(after);
}

/* -------------------------------------------------------- other writers */

static void test_other_writer_is_not_clobbered(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1], h2[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    rt_add(f->cat, "alpha", 2, "v2", h2);

    /* another process (the bootstrap tool) adds a tag and a strategy by
     * writing the files directly */
    const char *source = "module.exports = { other: true };\n";
    char b1[HASH_HEX_LEN + 1];
    rt_hex_of(source, b1);
    char *dir = tu_path("%s/bravo/%s", f->root, b1);
    struct err err = ERR_INIT;
    rt_assert_ok(fsutil_mkdirs(dir, 0755, &err), &err);
    char *file = tu_path("%s/bravo.js", dir);
    tu_write_text(file, source);
    char *path = tu_path("%s/registry.json", f->root);
    json_t *doc = rt_load_json(path);
    char spelled[HASH_SPELLED_LEN + 1];
    hash_spell(h1, spelled);
    json_object_set_new(json_object_get(json_object_get(doc, "alpha"), "tags"), "external",
                        json_string(spelled));
    hash_spell(b1, spelled);
    char *rel = tu_path("bravo/%s/bravo.js", b1);
    json_object_set_new(doc, "bravo",
                        json_pack("{s:{s:s}, s:{s:{s:s, s:s}}}", "tags", "latest", spelled,
                                  "hashes", spelled, "tag", "latest", "path", rel));
    char *text = jsonutil_dump_pretty(doc, NULL);
    tu_write_text(path, text);
    free(text);
    json_decref(doc);

    /* this catalogue's next change includes theirs */
    rt_assert_ok(catalog_set_tag(f->cat, "alpha", "prod", h2, NULL, &err), &err);
    doc = rt_load_json(path);
    json_t *tags = json_object_get(json_object_get(doc, "alpha"), "tags");
    assert_non_null(json_object_get(tags, "external"));
    assert_non_null(json_object_get(tags, "prod"));
    assert_non_null(json_object_get(doc, "bravo"));
    json_decref(doc);
    struct registry *reg = catalog_snapshot(f->cat);
    struct registry_resolution r;
    rt_assert_ok(registry_resolve_text(reg, "bravo", &r, &err), &err);
    rt_assert_ok(registry_resolve_text(reg, "alpha:external", &r, &err), &err);
    registry_release(reg);

    /* the same through a second catalogue on the same tree */
    struct catalog *other = rt_open(f->root);
    char h3[HASH_HEX_LEN + 1];
    rt_add(other, "alpha", 3, "v3", h3);
    rt_assert_ok(catalog_set_tag(f->cat, "alpha", "canary", h3, NULL, &err), &err);
    rt_assert_ok(catalog_set_tag(other, "alpha", "beta-users", h1, NULL, &err), &err);
    catalog_close(other);
    rt_assert_ok(catalog_reload(f->cat, NULL, &err), &err);
    char hex[HASH_HEX_LEN + 1];
    rt_tag(f->cat, "alpha", "canary", hex);
    assert_string_equal(hex, h3);
    rt_tag(f->cat, "alpha", "beta-users", hex);
    assert_string_equal(hex, h1);
    free(rel);
    free(path);
    free(file);
    free(dir);
    rt_check_disk(f->root);
}

/* -------------------------------------------------------- failed writes */

static void expect_untouched(const struct fixture *f, const char *checksum, struct registry *snap)
{
    char *now = tu_tree_checksum(f->root);
    assert_string_equal(now, checksum);
    free(now);
    struct registry *current = catalog_snapshot(f->cat);
    assert_ptr_equal(current, snap);
    registry_release(current);
}

static void test_failed_registry_write_keeps_everything(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    char *checksum = tu_tree_checksum(f->root);
    struct registry *snap = catalog_snapshot(f->cat);

    fail_rename_suffix = "/registry.json";
    fail_rename_errno = ENOSPC;
    char *s2 = rt_source("alpha", 2);
    struct catalog_upload_result result;
    struct err err = ERR_INIT;
    /* a new revision: its file was written first and must be taken back */
    rt_assert_fails(rt_upload(f->cat, "alpha", s2, "v2", &result, &err), &err, ERR_NO_SPACE);
    err_clear(&err);
    expect_untouched(f, checksum, snap);
    /* a new strategy: its folders go too */
    rt_assert_fails(rt_upload(f->cat, "bravo", s2, "v2", &result, &err), &err, ERR_NO_SPACE);
    err_clear(&err);
    expect_untouched(f, checksum, snap);
    fail_rename_errno = EIO;
    rt_assert_fails(catalog_set_tag(f->cat, "alpha", "prod", h1, NULL, &err), &err, ERR_INTERNAL);
    err_clear(&err);
    rt_assert_fails(catalog_delete_strategy(f->cat, "alpha", NULL, NULL, &err), &err, ERR_INTERNAL);
    err_clear(&err);
    expect_untouched(f, checksum, snap);

    /* a failed revision file write stops before the registry */
    fail_rename_suffix = "/alpha.js";
    rt_assert_fails(rt_upload(f->cat, "alpha", s2, "v2", &result, &err), &err, ERR_INTERNAL);
    err_clear(&err);
    expect_untouched(f, checksum, snap);

    fail_rename_suffix = NULL;
    rt_assert_ok(rt_upload(f->cat, "alpha", s2, "v2", &result, &err), &err);
    assert_true(result.created);
    registry_release(snap);
    free(checksum);
    free(s2);
    rt_check_disk(f->root);
}

/* The directory's sync fails after registry.json took the change: the
 * change is reported as failed, but the catalogue serves what the disk
 * says and every file a registry on disk names is still there. */
static void test_failed_sync_after_the_switch_keeps_the_files(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1], h2[HASH_HEX_LEN + 1], b1[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    rt_add(f->cat, "beta", 1, "v1", b1);
    char *s2 = rt_source("alpha", 2);
    rt_hex_of(s2, h2);
    struct catalog_upload_result result;
    struct err err = ERR_INIT;
    struct stat root;
    assert_int_equal(stat(f->root, &root), 0);
    fail_dir_fsync = root.st_ino;
    /* the change is reported as made, for the audit, though the call failed */
    struct catalog_change change = {NULL, NULL};
    struct catalog_upload up = {
        .name = "alpha", .source = s2, .len = strlen(s2), .tag = "v2", .change = &change};
    rt_assert_fails(catalog_add_revision(f->cat, &up, &result, &err), &err, ERR_INTERNAL);
    assert_true(catalog_error_published(&err));
    err_clear(&err);
    assert_string_equal(result.hex, h2);
    assert_non_null(change.before);
    assert_non_null(change.after);
    assert_null(registry_tag_target(registry_find_strategy(change.before, "alpha"), "v2"));
    assert_string_equal(registry_tag_target(registry_find_strategy(change.after, "alpha"), "v2"),
                        h2);
    catalog_change_release(&change);
    /* a batch that stops naming a strategy leaves its files to a later run */
    assert_int_equal(catalog_batch_begin(f->cat, &err), 0);
    rt_assert_ok(catalog_delete_strategy(f->cat, "beta", NULL, NULL, &err), &err);
    rt_assert_fails(catalog_batch_end(f->cat, &err), &err, ERR_INTERNAL);
    assert_true(catalog_error_published(&err));
    err_clear(&err);
    fail_dir_fsync = 0;
    char *file = file_of(f, "alpha", h2);
    assert_true(fsutil_exists(file));
    free(file);
    file = file_of(f, "beta", b1);
    assert_true(fsutil_exists(file));
    free(file);
    struct registry *reg = catalog_snapshot(f->cat);
    assert_true(registry_find_revision(registry_find_strategy(reg, "alpha"), h2) != NULL);
    assert_null(registry_find_strategy(reg, "beta"));
    registry_release(reg);
    assert_int_equal(rt_check_disk(f->root), 2);
    /* a refused change notes nothing, failing sync or not */
    fail_dir_fsync = root.st_ino;
    rt_assert_fails(catalog_delete_revision_noting(
                        f->cat, "alpha",
                        "0000000000000000000000000000000000000000000000000000000000000000", NULL,
                        NULL, &change, &err),
                    &err, ERR_NOT_FOUND);
    assert_false(catalog_error_published(&err));
    err_clear(&err);
    assert_null(change.before);
    assert_null(change.after);
    fail_dir_fsync = 0;
    /* the catalogue goes on from there */
    rt_assert_ok(catalog_set_tag(f->cat, "alpha", "prod", h2, NULL, &err), &err);
    assert_int_equal(catalog_reload(f->cat, NULL, &err), 0);
    reg = catalog_snapshot(f->cat);
    assert_string_equal(registry_tag_target(registry_find_strategy(reg, "alpha"), "prod"), h2);
    registry_release(reg);
    free(s2);
}

static void test_unwritable_tree_keeps_everything(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    char *s2 = rt_source("alpha", 2);
    char h2[HASH_HEX_LEN + 1];
    rt_hex_of(s2, h2);
    /* a file where the revision's folder must go blocks mkdir, as root too:
     * the tree's state, a conflict that names the revision and not the path */
    char *blocker = tu_path("%s/alpha/%s", f->root, h2);
    tu_write_text(blocker, "in the way");
    char *checksum = tu_tree_checksum(f->root);
    struct registry *snap = catalog_snapshot(f->cat);
    struct catalog_upload_result result;
    struct err err = ERR_INIT;
    rt_assert_fails(rt_upload(f->cat, "alpha", s2, "v2", &result, &err), &err, ERR_CONFLICT);
    assert_non_null(strstr(err.message, h2));
    assert_null(strstr(err.message, f->root));
    err_clear(&err);
    expect_untouched(f, checksum, snap);
    unlink(blocker);
    free(checksum);

    /* permissions, where they apply (not to root) */
    if (geteuid() != 0) {
        checksum = tu_tree_checksum(f->root);
        chmod(f->root, 0555);
        rt_assert_fails(catalog_set_tag(f->cat, "alpha", "prod", h1, NULL, &err), &err,
                        ERR_INTERNAL);
        err_clear(&err);
        rt_assert_fails(rt_upload(f->cat, "bravo", s2, NULL, &result, &err), &err, ERR_INTERNAL);
        err_clear(&err);
        chmod(f->root, 0755);
        expect_untouched(f, checksum, snap);
        free(checksum);
    }
    registry_release(snap);
    free(blocker);
    free(s2);
}

/* --------------------------------------------------------------- source */

static void test_read_source(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    char *source = NULL;
    size_t len = 0;
    struct err err = ERR_INIT;
    char *spelled = tu_path("sha256:%s", h1);
    rt_assert_ok(catalog_read_source(f->cat, "alpha", spelled, &source, &len, &err), &err);
    char *expected = rt_source("alpha", 1);
    assert_int_equal(len, strlen(expected));
    assert_memory_equal(source, expected, len);
    free(source);
    free(spelled);
    /* tampered bytes are caught at read time, before any reload */
    char *path = file_of(f, "alpha", h1);
    tu_write_text(path, "module.exports = {};");
    rt_assert_fails(catalog_read_source(f->cat, "alpha", h1, &source, &len, &err), &err,
                    ERR_CONFLICT);
    assert_null(source);
    err_clear(&err);
    unlink(path);
    rt_assert_fails(catalog_read_source(f->cat, "alpha", h1, &source, &len, &err), &err,
                    ERR_CONFLICT);
    err_clear(&err);
    tu_write_text(path, expected);
    rt_assert_ok(catalog_read_source(f->cat, "alpha", h1, &source, &len, &err), &err);
    free(source);
    char other[HASH_HEX_LEN + 1];
    hash_sha256_hex("x", 1, other);
    rt_assert_fails(catalog_read_source(f->cat, "alpha", other, &source, &len, &err), &err,
                    ERR_NOT_FOUND);
    err_clear(&err);
    rt_assert_fails(catalog_read_source(f->cat, "zulu", h1, &source, &len, &err), &err,
                    ERR_NOT_FOUND);
    err_clear(&err);
    rt_assert_fails(catalog_read_source(f->cat, "../alpha", h1, &source, &len, &err), &err,
                    ERR_INVALID);
    err_clear(&err);
    rt_assert_fails(catalog_read_source(f->cat, "alpha", "abc", &source, &len, &err), &err,
                    ERR_INVALID);
    err_clear(&err);
    free(path);
    free(expected);
}

static size_t revisions_of(struct catalog *cat, const char *name)
{
    struct registry *reg = catalog_snapshot(cat);
    const struct registry_strategy *st = registry_find_strategy(reg, name);
    size_t n = st ? st->nrevisions : 0;
    registry_release(reg);
    return n;
}

/* Every change of a batch lands in one registry.json write at its end;
 * files are written at once and removed only after that write. */
static void test_batch_writes_once(void **state)
{
    struct fixture *f = *state;
    char a1[HASH_HEX_LEN + 1], a2[HASH_HEX_LEN + 1], b1[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", a1);
    rt_add(f->cat, "beta", 1, NULL, b1);
    char *before = registry_text(f);
    char *a2_file = NULL, *b1_file = file_of(f, "beta", b1);
    struct err err = ERR_INIT;

    rt_assert_ok(catalog_batch_begin(f->cat, &err), &err);
    rt_add(f->cat, "alpha", 2, "v2", a2);
    rt_assert_ok(catalog_delete_strategy(f->cat, "beta", NULL, NULL, &err), &err);
    a2_file = file_of(f, "alpha", a2);
    assert_true(fsutil_exists(a2_file));
    assert_true(fsutil_exists(b1_file));
    char *during = registry_text(f);
    assert_string_equal(during, before);
    assert_int_equal(revisions_of(f->cat, "alpha"), 2);
    assert_int_equal(revisions_of(f->cat, "beta"), 0);
    rt_assert_ok(catalog_batch_end(f->cat, &err), &err);

    char *after = registry_text(f);
    struct registry *reg = catalog_snapshot(f->cat);
    char *expected = registry_to_text(reg, NULL);
    char *after_text = rt_unpadded(strdup(after));
    assert_string_equal(after_text, expected);
    free(after_text);
    assert_null(strstr(after, "\"beta\""));
    assert_false(fsutil_exists(b1_file));
    registry_release(reg);
    free(expected);

    /* A batch whose write fails changes nothing and removes nothing. */
    char g1[HASH_HEX_LEN + 1];
    rt_assert_ok(catalog_batch_begin(f->cat, &err), &err);
    rt_add(f->cat, "gamma", 1, NULL, g1);
    rt_assert_ok(catalog_delete_revision(f->cat, "alpha", a1, NULL, NULL, &err), &err);
    fail_rename_suffix = "/" REGISTRY_FILE;
    fail_rename_errno = EIO;
    rt_assert_fails(catalog_batch_end(f->cat, &err), &err, ERR_INTERNAL);
    fail_rename_suffix = NULL;
    char *a1_file = file_of(f, "alpha", a1);
    assert_true(fsutil_exists(a1_file));
    assert_int_equal(revisions_of(f->cat, "alpha"), 2);
    assert_int_equal(revisions_of(f->cat, "gamma"), 0);
    char *unchanged = registry_text(f);
    assert_string_equal(unchanged, after);

    /* and the catalogue goes on as usual */
    char d1[HASH_HEX_LEN + 1];
    rt_add(f->cat, "delta", 1, NULL, d1);
    assert_int_equal(revisions_of(f->cat, "delta"), 1);
    rt_check_disk(f->root);
    free(a1_file);
    free(unchanged);
    free(after);
    free(during);
    free(before);
    free(a2_file);
    free(b1_file);
}

/* ------------------------------------------------- bytes written ahead */

/* The names in the root that start with ".upload.", the temporaries of
 * catalog_prewrite_begin; the first one's inode goes to *ino and its path
 * (malloc'ed) to *path, when asked for. */
static size_t upload_temps(const struct fixture *f, ino_t *ino, char **path)
{
    DIR *dir = opendir(f->root);
    assert_non_null(dir);
    size_t n = 0;
    struct dirent *entry;
    while ((entry = readdir(dir)) != NULL) {
        if (strncmp(entry->d_name, ".upload.", 8) != 0 || n++ > 0)
            continue;
        if (ino)
            *ino = entry->d_ino;
        if (path)
            *path = tu_path("%s/%s", f->root, entry->d_name);
    }
    closedir(dir);
    return n;
}

/* Waits (up to 10 s) until no temporary is left: a writer that was still
 * busy when its prewrite ended removes its file itself. */
static void wait_for_no_temps(const struct fixture *f)
{
    for (int i = 0; i < 10000 && upload_temps(f, NULL, NULL) != 0; i++)
        usleep(1000);
    assert_int_equal(upload_temps(f, NULL, NULL), 0);
}

/* Waits (up to 10 s) for the writer to create its temporary. */
static ino_t wait_for_temp(const struct fixture *f)
{
    ino_t ino = 0;
    for (int i = 0; i < 10000 && upload_temps(f, &ino, NULL) == 0; i++)
        usleep(1000);
    assert_int_equal(upload_temps(f, &ino, NULL), 1);
    return ino;
}

static struct catalog_upload prewritten_upload(const char *name, const char *source,
                                               struct catalog_prewrite *pw)
{
    return (struct catalog_upload){
        .name = name, .source = source, .len = strlen(source), .prewritten = pw};
}

static void assert_file_holds(const struct fixture *f, const char *name, const char *hex,
                              const char *source, ino_t *ino)
{
    char *path = file_of(f, name, hex);
    char *text = tu_read_file(path, NULL);
    assert_non_null(text);
    assert_string_equal(text, source);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0644);
    if (ino)
        *ino = st.st_ino;
    free(text);
    free(path);
}

/* The file written ahead becomes the revision file (the same inode, so the
 * change did not write it again), and nothing is left in the root. */
static void test_prewritten_file_moves_into_place(void **state)
{
    struct fixture *f = *state;
    char *source = rt_source("alpha", 1);
    struct catalog_prewrite *pw = catalog_prewrite_begin(f->cat, source, strlen(source));
    assert_non_null(pw);
    ino_t written = wait_for_temp(f);
    struct catalog_upload up = prewritten_upload("alpha", source, pw);
    struct catalog_upload_result result;
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_add_revision(f->cat, &up, &result, &err), &err);
    catalog_prewrite_end(pw);
    assert_true(result.created);
    ino_t placed = 0;
    assert_file_holds(f, "alpha", result.hex, source, &placed);
    assert_int_equal(placed, written);
    assert_int_equal(upload_temps(f, NULL, NULL), 0);
    assert_int_equal(rt_check_disk(f->root), 1);
    free(source);
}

/* A temporary that vanished (another process opening the catalogue sweeps
 * them), bytes that are not the upload's, and a prewrite nothing took: the
 * change writes the file itself and no temporary outlives its end. */
static void test_prewrite_is_only_a_head_start(void **state)
{
    struct fixture *f = *state;
    struct catalog_upload_result result;
    struct err err = ERR_INIT;

    char *a1 = rt_source("alpha", 1);
    struct catalog_prewrite *pw = catalog_prewrite_begin(f->cat, a1, strlen(a1));
    assert_non_null(pw);
    wait_for_temp(f);
    char *temp = NULL;
    assert_int_equal(upload_temps(f, NULL, &temp), 1);
    assert_int_equal(unlink(temp), 0);
    struct catalog_upload up = prewritten_upload("alpha", a1, pw);
    rt_assert_ok(catalog_add_revision(f->cat, &up, &result, &err), &err);
    catalog_prewrite_end(pw);
    assert_file_holds(f, "alpha", result.hex, a1, NULL);

    char *a2 = rt_source("alpha", 2), *other = strdup(a2);
    other[strlen(other) - 3] = ' '; /* same length, other bytes */
    pw = catalog_prewrite_begin(f->cat, other, strlen(other));
    assert_non_null(pw);
    up = prewritten_upload("alpha", a2, pw);
    rt_assert_ok(catalog_add_revision(f->cat, &up, &result, &err), &err);
    catalog_prewrite_end(pw);
    assert_file_holds(f, "alpha", result.hex, a2, NULL);

    pw = catalog_prewrite_begin(f->cat, a2, strlen(a2));
    assert_non_null(pw);
    wait_for_temp(f);
    catalog_prewrite_end(pw); /* the upload did not validate */
    wait_for_no_temps(f);
    assert_int_equal(rt_check_disk(f->root), 2);
    free(temp);
    free(other);
    free(a2);
    free(a1);
}

/* A prewrite given up at once: the caller frees its bytes right away (the
 * writer works on its own copy; the sanitizer run would see a read of freed
 * memory) and the writer, finishing later, removes what it wrote; closing
 * the catalogue waits for such writers, so nothing of theirs is left. Many
 * at once, so that most end while their writer is still busy. */
static void test_abandoned_prewrites_clean_up(void **state)
{
    struct fixture *f = *state;
    for (int i = 0; i < 50; i++) {
        char *source = rt_source("alpha", 100 + i);
        struct catalog_prewrite *pw = catalog_prewrite_begin(f->cat, source, strlen(source));
        assert_non_null(pw);
        memset(source, 'x', strlen(source));
        free(source);
        catalog_prewrite_end(pw);
    }
    catalog_close(f->cat);
    assert_int_equal(upload_temps(f, NULL, NULL), 0);
    f->cat = rt_open(f->root);
    assert_int_equal(revisions_of(f->cat, "alpha"), 0);
}

/* When moving the file into place fails, the upload fails like any other
 * failed write: nothing is published and no file or temporary is left. */
static void test_failed_move_keeps_everything(void **state)
{
    struct fixture *f = *state;
    char a1[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", a1);
    char *before = registry_text(f);
    char *source = rt_source("alpha", 2);
    char hex[HASH_HEX_LEN + 1];
    rt_hex_of(source, hex);
    struct catalog_prewrite *pw = catalog_prewrite_begin(f->cat, source, strlen(source));
    assert_non_null(pw);
    wait_for_temp(f);
    fail_rename_suffix = "/alpha.js";
    fail_rename_errno = ENOSPC;
    struct catalog_upload up = prewritten_upload("alpha", source, pw);
    struct catalog_upload_result result;
    struct err err = ERR_INIT;
    rt_assert_fails(catalog_add_revision(f->cat, &up, &result, &err), &err, ERR_NO_SPACE);
    fail_rename_suffix = NULL;
    catalog_prewrite_end(pw);
    char *path = file_of(f, "alpha", hex);
    assert_false(fsutil_exists(path));
    assert_int_equal(upload_temps(f, NULL, NULL), 0);
    assert_int_equal(revisions_of(f->cat, "alpha"), 1);
    char *after = registry_text(f);
    assert_string_equal(after, before);
    err_clear(&err);
    free(after);
    free(path);
    free(source);
    free(before);
}

/* Temporaries a crash left in the root go when the catalogue opens; other
 * names there stay. */
static void test_open_sweeps_upload_temps(void **state)
{
    struct fixture *f = *state;
    char a1[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, NULL, a1);
    char *stale = tu_path("%s/.upload.999999.7", f->root);
    char *kept = tu_path("%s/.uploaded-notes", f->root);
    struct err err = ERR_INIT;
    rt_assert_ok(fsutil_write_atomic(stale, "half", 4, 0644, &err), &err);
    rt_assert_ok(fsutil_write_atomic(kept, "mine", 4, 0644, &err), &err);
    catalog_close(f->cat);
    f->cat = rt_open(f->root);
    assert_false(fsutil_exists(stale));
    assert_true(fsutil_exists(kept));
    assert_int_equal(revisions_of(f->cat, "alpha"), 1);
    free(kept);
    free(stale);
}

/* The first upload of a strategy killed before its rename leaves the
 * strategy's folder holding only that revision's temporary: the open
 * removes the folder with it, and keeps a strategy folder that holds
 * anything else. */
static void test_open_removes_the_folder_of_a_killed_first_upload(void **state)
{
    struct fixture *f = *state;
    static const char hex[] = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    char *dir = tu_path("%s/newbie/%s", f->root, hex);
    char *temp = tu_path("%s/newbie.js.tmp.999999.3", dir);
    char *other = tu_path("%s/keeper/%s", f->root, hex);
    char *other_temp = tu_path("%s/keeper.js.tmp.999999.4", other);
    char *notes = tu_path("%s/keeper/NOTES", f->root);
    struct err err = ERR_INIT;
    rt_assert_ok(fsutil_mkdirs(dir, 0755, &err), &err);
    rt_assert_ok(fsutil_mkdirs(other, 0755, &err), &err);
    rt_assert_ok(fsutil_write_atomic(temp, "half", 4, 0644, &err), &err);
    rt_assert_ok(fsutil_write_atomic(other_temp, "half", 4, 0644, &err), &err);
    rt_assert_ok(fsutil_write_atomic(notes, "mine", 4, 0644, &err), &err);
    catalog_close(f->cat);
    f->cat = rt_open(f->root);
    char *folder = tu_path("%s/newbie", f->root);
    assert_false(fsutil_exists(folder));
    assert_false(fsutil_exists(other_temp));
    assert_false(fsutil_exists(other));
    assert_true(fsutil_exists(notes));
    free(folder);
    free(notes);
    free(other_temp);
    free(other);
    free(temp);
    free(dir);
}

/* ------------------------------------------------ crashes mid-change */

/* Every file and folder under root, one a line, sorted: what a crash left. */
static char *tree_of(const char *root)
{
    char *out = NULL;
    if (tu_run(&out, "cd '%s' && LC_ALL=C find . -mindepth 1 ! -name '.registry*' | sort", root) !=
        0)
        fail_msg("cannot list %s", root);
    return out;
}

enum crash_change { CRASH_UPLOAD, CRASH_DELETE_REVISION, CRASH_DELETE_STRATEGY };

/* A child process makes the change on its own catalogue and dies at the
 * switch of registry.json, before or after it; the parent reopens. */
static void crash_during(struct fixture *f, enum crash_change what, const char *hex, bool after)
{
    catalog_close(f->cat);
    f->cat = NULL;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct catalog *cat = rt_open(f->root);
        crash_rename_suffix = "/" REGISTRY_FILE;
        crash_after_rename = after;
        struct err err = ERR_INIT;
        char *source = rt_source("alpha", 2);
        struct catalog_upload_result result;
        if (what == CRASH_UPLOAD)
            (void)rt_upload(cat, "alpha", source, "v2", &result, &err);
        else if (what == CRASH_DELETE_REVISION)
            (void)catalog_delete_revision(cat, "alpha", hex, NULL, NULL, &err);
        else
            (void)catalog_delete_strategy(cat, "alpha", NULL, NULL, &err);
        _exit(3); /* the change did not reach the switch */
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 9);
    f->cat = rt_open(f->root);
}

static void test_crash_at_the_switch_leaves_no_unnamed_file(void **state)
{
    struct fixture *f = *state;
    char h1[HASH_HEX_LEN + 1], h2[HASH_HEX_LEN + 1];
    rt_add(f->cat, "alpha", 1, "v1", h1);
    char *s2 = rt_source("alpha", 2);
    rt_hex_of(s2, h2);
    free(s2);
    char *before = tree_of(f->root);

    /* an upload that never reached registry.json leaves nothing */
    crash_during(f, CRASH_UPLOAD, NULL, false);
    assert_int_equal(revisions_of(f->cat, "alpha"), 1);
    char *now = tree_of(f->root);
    assert_string_equal(now, before);
    free(now);

    /* one that did is whole, file and all, and carries no marker */
    crash_during(f, CRASH_UPLOAD, NULL, true);
    assert_int_equal(revisions_of(f->cat, "alpha"), 2);
    assert_int_equal(rt_check_disk(f->root), 2);
    char *with_h2 = tree_of(f->root);
    assert_null(strstr(with_h2, ".pending."));
    assert_non_null(strstr(with_h2, h2));

    /* a delete that never reached registry.json changes nothing */
    crash_during(f, CRASH_DELETE_REVISION, h2, false);
    assert_int_equal(revisions_of(f->cat, "alpha"), 2);
    now = tree_of(f->root);
    assert_string_equal(now, with_h2);
    free(now);

    /* one that did takes the file and its folder */
    crash_during(f, CRASH_DELETE_REVISION, h2, true);
    assert_int_equal(revisions_of(f->cat, "alpha"), 1);
    now = tree_of(f->root);
    assert_string_equal(now, before);
    free(now);

    /* so does a whole strategy's, but an operator's file beside it stays */
    char *notes = tu_path("%s/alpha/NOTES", f->root);
    struct err err = ERR_INIT;
    rt_assert_ok(fsutil_write_atomic(notes, "mine", 4, 0644, &err), &err);
    crash_during(f, CRASH_DELETE_STRATEGY, NULL, true);
    assert_int_equal(revisions_of(f->cat, "alpha"), 0);
    now = tree_of(f->root);
    assert_string_equal(now, "./alpha\n./alpha/NOTES\n./registry.json\n");
    free(now);
    free(notes);
    free(with_h2);
    free(before);
}

int main(void)
{
#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_first_revision_becomes_latest),
        T(test_identical_reupload),
        T(test_version_tag_conflict),
        T(test_aliases_move_in_one_write),
        T(test_upload_validation),
        T(test_reupload_repairs_a_damaged_file),
        T(test_set_tag),
        T(test_delete_tag),
        T(test_delete_revision_moves_latest),
        T(test_delete_last_revision_removes_strategy),
        T(test_delete_strategy),
        T(test_update_of_a_deleted_strategy_is_refused),
        T(test_guard_veto_changes_nothing),
        T(test_other_writer_is_not_clobbered),
        T(test_failed_registry_write_keeps_everything),
        T(test_failed_sync_after_the_switch_keeps_the_files),
        T(test_unwritable_tree_keeps_everything),
        T(test_read_source),
        T(test_batch_writes_once),
        T(test_prewritten_file_moves_into_place),
        T(test_prewrite_is_only_a_head_start),
        T(test_abandoned_prewrites_clean_up),
        T(test_failed_move_keeps_everything),
        T(test_open_sweeps_upload_temps),
        T(test_open_removes_the_folder_of_a_killed_first_upload),
        T(test_crash_at_the_switch_leaves_no_unnamed_file),
    };
#undef T
    return cmocka_run_group_tests(tests, NULL, NULL);
}
