/*
 * `stratd bootstrap`: migration of every legacy layout into the
 * content-addressed one, the merge with an existing registry.json, dry runs
 * that touch nothing, idempotence, invalid and conflicting files, recovery
 * from a crash at each step, the --usage report (against an export made by a
 * real server), and every bad input.
 *
 * Each test builds its trees in a temporary directory and runs the real
 * binary (STRATD_TEST_BINARY overrides STRATD_BINARY, as for the server).
 */
#include "testutil.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------ helpers */

static const char *binary(void)
{
    const char *env = getenv("STRATD_TEST_BINARY");
    return env && *env ? env : STRATD_BINARY;
}

/* Runs `stratd bootstrap <args>` with stdout and stderr in *out. */
static int bootstrap(char **out, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bootstrap(char **out, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *args = NULL;
    if (vasprintf(&args, fmt, ap) < 0)
        fail_msg("out of memory");
    va_end(ap);
    char *discard = NULL;
    int rc = tu_run(out ? out : &discard, "'%s' bootstrap %s 2>&1", binary(), args);
    free(discard);
    free(args);
    return rc;
}

/* The same with stdout and stderr apart. */
static int bootstrap_split(char **out, char **err, const char *args)
{
    char *dir = tu_tempdir("bootstrap-err");
    char *err_path = tu_path("%s/stderr", dir);
    int rc = tu_run(out, "'%s' bootstrap %s 2>'%s'", binary(), args, err_path);
    *err = tu_read_file(err_path, NULL);
    if (!*err)
        *err = strdup("");
    tu_remove_tree(dir);
    free(err_path);
    free(dir);
    return rc;
}

struct fixture {
    char *dir;  /* temporary directory, removed at the end */
    char *root; /* <dir>/strategies */
};

static void fixture_init(struct fixture *fx)
{
    fx->dir = tu_tempdir("bootstrap");
    fx->root = tu_path("%s/strategies", fx->dir);
    if (mkdir(fx->root, 0755) != 0)
        fail_msg("mkdir %s: %s", fx->root, strerror(errno));
}

static void fixture_free(struct fixture *fx)
{
    tu_remove_tree(fx->dir);
    free(fx->dir);
    free(fx->root);
}

static void make_parents(const char *path)
{
    char *copy = strdup(path);
    for (char *p = copy + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(copy, 0755) != 0 && errno != EEXIST)
            fail_msg("mkdir %s: %s", copy, strerror(errno));
        *p = '/';
    }
    free(copy);
}

static void put(const char *root, const char *rel, const char *text)
{
    char *path = tu_path("%s/%s", root, rel);
    make_parents(path);
    tu_write_text(path, text);
    free(path);
}

/* A valid module; `marker` makes its bytes unique. */
static char *module(const char *name, const char *tag, const char *marker)
{
    char *body = tu_path("/* %s */", marker);
    char *src = tu_module_source(name, tag, body);
    free(body);
    return src;
}

/* Writes a module at rel and returns its hash in hex. */
static void put_module(const char *root, const char *rel, const char *name, const char *tag,
                       const char *marker, char hex[65])
{
    char *src = module(name, tag, marker);
    put(root, rel, src);
    if (hex)
        tu_sha256_hex(src, strlen(src), hex);
    free(src);
}

static void set_mtime(const char *root, const char *rel, time_t when)
{
    char *path = tu_path("%s/%s", root, rel);
    struct timeval tv[2] = {{when, 0}, {when, 0}};
    if (utimes(path, tv) != 0)
        fail_msg("utimes %s: %s", path, strerror(errno));
    free(path);
}

static bool exists(const char *root, const char *rel)
{
    char *path = tu_path("%s/%s", root, rel);
    struct stat st;
    bool found = lstat(path, &st) == 0;
    free(path);
    return found;
}

static void assert_missing(const char *root, const char *rel)
{
    if (exists(root, rel))
        fail_msg("%s should be gone", rel);
}

static void assert_present(const char *root, const char *rel)
{
    if (!exists(root, rel))
        fail_msg("%s should exist", rel);
}

/* The file at rel holds exactly `text`. */
static void assert_bytes(const char *root, const char *rel, const char *text)
{
    char *path = tu_path("%s/%s", root, rel);
    char *data = tu_read_file(path, NULL);
    if (!data)
        fail_msg("%s is missing", rel);
    if (strcmp(data, text) != 0)
        fail_msg("%s does not hold the expected bytes", rel);
    free(data);
    free(path);
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!strstr(haystack, needle))
        fail_msg("expected to find \"%s\" in:\n%s", needle, haystack);
}

static void assert_lacks(const char *haystack, const char *needle)
{
    if (strstr(haystack, needle))
        fail_msg("did not expect \"%s\" in:\n%s", needle, haystack);
}

static void assert_checksum(const char *root, const char *expected, const char *what)
{
    char *now = tu_tree_checksum(root);
    if (strcmp(now, expected) != 0)
        fail_msg("%s changed the tree", what);
    free(now);
}

/* The hex a tag points at, or NULL. */
static const char *tag_target(const json_t *reg, const char *name, const char *tag)
{
    const char *spelled = json_string_value(
        json_object_get(json_object_get(json_object_get(reg, name), "tags"), tag));
    return spelled && strncmp(spelled, "sha256:", 7) == 0 ? spelled + 7 : NULL;
}

static void assert_tag(const json_t *reg, const char *name, const char *tag, const char *hex)
{
    const char *target = tag_target(reg, name, tag);
    if (!hex && target)
        fail_msg("%s:%s should not exist (points at %s)", name, tag, target);
    if (hex && (!target || strcmp(target, hex) != 0))
        fail_msg("%s:%s points at %s, expected %s", name, tag, target ? target : "nothing", hex);
}

static const json_t *hash_entry(const json_t *reg, const char *name, const char *hex)
{
    char *spelled = tu_path("sha256:%s", hex);
    const json_t *entry =
        json_object_get(json_object_get(json_object_get(reg, name), "hashes"), spelled);
    free(spelled);
    return entry;
}

/* The revision is registered with this primary tag, and its file holds
 * `text` at <name>/<hex>/<name>.js. */
static void assert_revision(const char *root, const json_t *reg, const char *name, const char *hex,
                            const char *primary, const char *text)
{
    const json_t *entry = hash_entry(reg, name, hex);
    if (!entry)
        fail_msg("%s@%s is not in registry.json", name, hex);
    const char *tag = json_string_value(json_object_get(entry, "tag"));
    if (!tag || strcmp(tag, primary) != 0)
        fail_msg("%s@%s has primary tag %s, expected %s", name, hex, tag ? tag : "none", primary);
    char *rel = tu_path("%s/%s/%s.js", name, hex, name);
    assert_string_equal(json_string_value(json_object_get(entry, "path")), rel);
    if (text)
        assert_bytes(root, rel, text);
    free(rel);
}

static size_t revision_count(const json_t *reg, const char *name)
{
    return json_object_size(json_object_get(json_object_get(reg, name), "hashes"));
}

static json_t *parse_json(const char *text)
{
    json_error_t error;
    json_t *doc = json_loads(text, 0, &error);
    if (!doc)
        fail_msg("not JSON (%s):\n%s", error.text, text);
    return doc;
}

/* A dry run: exits `status`, says so, and changes nothing. */
static char *dry_run(const char *root, int status)
{
    char *before = tu_tree_checksum(root);
    char *out = NULL;
    int rc = bootstrap(&out, "-root '%s'", root);
    if (rc != status)
        fail_msg("dry run exited %d, expected %d:\n%s", rc, status, out);
    assert_contains(out, "filesystem left untouched (pass -write to apply)");
    assert_checksum(root, before, "a dry run");
    free(before);
    return out;
}

static void write_run(const char *root, int status)
{
    char *out = NULL;
    int rc = bootstrap(&out, "-root '%s' -write", root);
    if (rc != status)
        fail_msg("-write exited %d, expected %d:\n%s", rc, status, out);
    free(out);
}

/* A second -write changes nothing, and neither does a dry run after it. */
static void assert_idempotent(const char *root, int status)
{
    char *before = tu_tree_checksum(root);
    char *out = NULL;
    int rc = bootstrap(&out, "-root '%s' -write", root);
    if (rc != status)
        fail_msg("second -write exited %d, expected %d:\n%s", rc, status, out);
    assert_contains(out, "nothing to do");
    assert_checksum(root, before, "a second -write");
    free(out);
    free(dry_run(root, status));
    free(before);
}

/* Only 64-hex folders (and nothing else) under <root>/<name>. */
static void assert_only_hash_folders(const char *root, const char *name)
{
    char *out = NULL;
    int rc = tu_run(&out, "cd '%s/%s' && ls -A | grep -Ev '^[0-9a-f]{64}$' || true", root, name);
    assert_int_equal(rc, 0);
    if (out[0])
        fail_msg("%s/ holds more than hash folders:\n%s", name, out);
    free(out);
}

/* ------------------------------------------------------- the layouts */

static void test_flat_layout(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char hm[65], hb[65];
    put_module(fx.root, "momentum.js", "momentum", "v1.2.0", "m", hm);
    put_module(fx.root, "breakout.js", "breakout", NULL, "b", hb);
    char *src_m = module("momentum", "v1.2.0", "m");

    char *out = dry_run(fx.root, 0);
    assert_contains(out, "ACTION");
    assert_contains(out, "migrate");
    assert_contains(out, "momentum.js");
    free(out);

    write_run(fx.root, 0);
    assert_missing(fx.root, "momentum.js");
    assert_missing(fx.root, "breakout.js");
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_revision(fx.root, reg, "momentum", hm, "v1.2.0", src_m);
    assert_tag(reg, "momentum", "v1.2.0", hm);
    assert_tag(reg, "momentum", "latest", hm);
    assert_revision(fx.root, reg, "breakout", hb, "v1.0.0", NULL); /* no tag: v1.0.0 */
    assert_tag(reg, "breakout", "latest", hb);
    json_decref(reg);
    assert_idempotent(fx.root, 0);
    free(src_m);
    fixture_free(&fx);
}

static void test_tag_folder_layout(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char h100[65], h190[65], h1100[65], hstable[65], hmeta[65];
    put_module(fx.root, "trend/v1.0.0/trend.js", "trend", NULL, "1.0", h100);
    put_module(fx.root, "trend/v1.9.0/trend.js", "trend", NULL, "1.9", h190);
    put_module(fx.root, "trend/v1.10.0/trend.js", "trend", NULL, "1.10", h1100);
    put_module(fx.root, "trend/stable/trend.js", "trend", NULL, "stable", hstable);
    /* metadata.tag wins over the folder */
    put_module(fx.root, "trend/v0.1.0/trend.js", "trend", "v1.5.0", "meta", hmeta);
    char hrc1[65], hrc2[65], hrc10[65], hpre100[65];
    put_module(fx.root, "pre/v2.0.0-rc.1/pre.js", "pre", NULL, "rc1", hrc1);
    put_module(fx.root, "pre/v2.0.0-rc.2/pre.js", "pre", NULL, "rc2", hrc2);
    put_module(fx.root, "pre/v2.0.0-rc.10/pre.js", "pre", NULL, "rc10", hrc10);
    put_module(fx.root, "pre/1.0.0/pre.js", "pre", NULL, "one", hpre100);

    free(dry_run(fx.root, 0));
    write_run(fx.root, 0);
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_int_equal(revision_count(reg, "trend"), 5);
    assert_revision(fx.root, reg, "trend", h100, "v1.0.0", NULL);
    assert_revision(fx.root, reg, "trend", h190, "v1.9.0", NULL);
    assert_revision(fx.root, reg, "trend", h1100, "v1.10.0", NULL);
    assert_revision(fx.root, reg, "trend", hstable, "stable", NULL);
    assert_revision(fx.root, reg, "trend", hmeta, "v1.5.0", NULL);
    assert_tag(reg, "trend", "v0.1.0", NULL);
    /* 1.10 > 1.9 numerically; `stable` is not a version */
    assert_tag(reg, "trend", "latest", h1100);
    /* rc.10 > rc.2 > rc.1 > 1.0.0 */
    assert_tag(reg, "pre", "latest", hrc10);
    assert_revision(fx.root, reg, "pre", hpre100, "1.0.0", NULL);
    assert_only_hash_folders(fx.root, "trend");
    assert_only_hash_folders(fx.root, "pre");
    json_decref(reg);
    assert_idempotent(fx.root, 0);
    fixture_free(&fx);
}

static void test_current_layout(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char *s1 = module("momentum", "v1.0.0", "one"), *s2 = module("momentum", "v2.0.0", "two");
    char h1[65], h2[65];
    tu_sha256_hex(s1, strlen(s1), h1);
    tu_sha256_hex(s2, strlen(s2), h2);
    char *r1 = tu_path("momentum/%s/momentum.js", h1), *r2 = tu_path("momentum/%s/momentum.js", h2);
    put(fx.root, r1, s1);
    put(fx.root, r2, s2);

    /* No registry.json: the files are in place and only need registering. */
    char *out = dry_run(fx.root, 0);
    assert_contains(out, "register");
    assert_contains(out, "(in place)");
    assert_lacks(out, "migrate ");
    free(out);
    write_run(fx.root, 0);
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_revision(fx.root, reg, "momentum", h1, "v1.0.0", s1);
    assert_revision(fx.root, reg, "momentum", h2, "v2.0.0", s2);
    assert_tag(reg, "momentum", "latest", h2);
    json_decref(reg);
    assert_idempotent(fx.root, 0);

    out = dry_run(fx.root, 0);
    assert_contains(out, "2 revisions already in place");
    free(out);
    free(r1);
    free(r2);
    free(s1);
    free(s2);
    fixture_free(&fx);
}

static void test_mixed_layout(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char ha[65], hb[65], hg[65], hm1[65], hm2[65], hm3[65];
    put_module(fx.root, "alpha.js", "alpha", "v1.0.0", "a", ha);
    put_module(fx.root, "beta/v2.1.0/beta.js", "beta", NULL, "b", hb);
    char *sg = module("gamma", "v3.0.0", "g");
    tu_sha256_hex(sg, strlen(sg), hg);
    char *rg = tu_path("gamma/%s/gamma.js", hg);
    put(fx.root, rg, sg);
    put_module(fx.root, "momentum.js", "momentum", "v1.0.0", "m1", hm1);
    put_module(fx.root, "momentum/v1.1.0/momentum.js", "momentum", NULL, "m2", hm2);
    char *sm3 = module("momentum", "v0.9.0", "m3");
    tu_sha256_hex(sm3, strlen(sm3), hm3);
    char *rm3 = tu_path("momentum/%s/momentum.js", hm3);
    put(fx.root, rm3, sm3);

    free(dry_run(fx.root, 0));
    write_run(fx.root, 0);
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_revision(fx.root, reg, "alpha", ha, "v1.0.0", NULL);
    assert_revision(fx.root, reg, "beta", hb, "v2.1.0", NULL);
    assert_revision(fx.root, reg, "gamma", hg, "v3.0.0", sg);
    assert_revision(fx.root, reg, "momentum", hm1, "v1.0.0", NULL);
    assert_revision(fx.root, reg, "momentum", hm2, "v1.1.0", NULL);
    assert_revision(fx.root, reg, "momentum", hm3, "v0.9.0", sm3);
    assert_tag(reg, "momentum", "latest", hm2);
    assert_missing(fx.root, "alpha.js");
    assert_missing(fx.root, "momentum.js");
    assert_missing(fx.root, "beta/v2.1.0");
    assert_only_hash_folders(fx.root, "momentum");
    json_decref(reg);
    assert_idempotent(fx.root, 0);
    free(rg);
    free(sg);
    free(rm3);
    free(sm3);
    fixture_free(&fx);
}

/* ------------------------------------------------ merge with a registry */

/* Writes <root>/<name>/<hex>/<name>.js for a module, returning its hex. */
static void put_canonical(const char *root, const char *name, const char *tag, const char *marker,
                          char hex[65])
{
    char *src = module(name, tag, marker);
    tu_sha256_hex(src, strlen(src), hex);
    char *rel = tu_path("%s/%s/%s.js", name, hex, name);
    put(root, rel, src);
    free(rel);
    free(src);
}

static void test_merge_existing_registry(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char m1[65], m2[65], t1[65];
    put_canonical(fx.root, "momentum", "v1.0.0", "m1", m1);
    put_canonical(fx.root, "momentum", "v1.1.0", "m2", m2);
    put_canonical(fx.root, "trend", "v1.0.0", "t1", t1);
    const char *gone = "1111111111111111111111111111111111111111111111111111111111111111";
    const char *tgone = "2222222222222222222222222222222222222222222222222222222222222222";
    const char *nowhere = "3333333333333333333333333333333333333333333333333333333333333333";
    /* An operator's registry: `latest` deliberately on the older revision,
     * aliases prod and old, a tag naming a hash that is not listed, and
     * entries whose files are gone. */
    char *doc = tu_path(
        "{\"momentum\": {\"tags\": {\"v1.0.0\": \"sha256:%s\", \"v1.1.0\": \"sha256:%s\", "
        "\"latest\": \"sha256:%s\", \"prod\": \"sha256:%s\", \"old\": \"sha256:%s\", "
        "\"canary\": \"sha256:%s\"}, \"hashes\": {"
        "\"sha256:%s\": {\"tag\": \"v1.0.0\", \"path\": \"momentum/%s/momentum.js\"}, "
        "\"sha256:%s\": {\"tag\": \"v1.1.0\", \"path\": \"momentum/%s/momentum.js\"}, "
        "\"sha256:%s\": {\"tag\": \"v0.9.0\", \"path\": \"momentum/%s/momentum.js\"}}}, "
        "\"trend\": {\"tags\": {\"v1.0.0\": \"sha256:%s\", \"latest\": \"sha256:%s\"}, "
        "\"hashes\": {\"sha256:%s\": {\"tag\": \"v1.0.0\", \"path\": \"trend/%s/trend.js\"}, "
        "\"sha256:%s\": {\"tag\": \"v0.5.0\", \"path\": \"trend/%s/trend.js\"}}}}",
        m1, m2, m1, m1, gone, nowhere, m1, m1, m2, m2, gone, gone, t1, tgone, t1, t1, tgone, tgone);
    put(fx.root, "registry.json", doc);
    char m3[65], t15[65];
    put_module(fx.root, "momentum.js", "momentum", "v2.0.0", "m3", m3);
    put_module(fx.root, "trend/v1.5.0/trend.js", "trend", NULL, "t15", t15);

    char *out = dry_run(fx.root, 0);
    assert_contains(out, "drop");
    assert_contains(out, "registry changes:");
    free(out);
    write_run(fx.root, 0);
    json_t *reg = tu_assert_registry_sound(fx.root);
    /* kept: the operator's aliases and `latest` (its revision still exists) */
    assert_tag(reg, "momentum", "prod", m1);
    assert_tag(reg, "momentum", "latest", m1);
    assert_tag(reg, "momentum", "v1.1.0", m2);
    /* added */
    assert_revision(fx.root, reg, "momentum", m3, "v2.0.0", NULL);
    assert_tag(reg, "momentum", "v2.0.0", m3);
    /* gone with the revisions they named */
    assert_null(hash_entry(reg, "momentum", gone));
    assert_tag(reg, "momentum", "old", NULL);
    assert_tag(reg, "momentum", "canary", NULL);
    assert_int_equal(revision_count(reg, "momentum"), 3);
    /* trend's `latest` named a gone revision: recomputed by version */
    assert_null(hash_entry(reg, "trend", tgone));
    assert_tag(reg, "trend", "latest", t15);
    assert_tag(reg, "trend", "v1.0.0", t1);
    json_decref(reg);
    assert_idempotent(fx.root, 0);
    free(doc);
    fixture_free(&fx);
}

/* The only registered revision's file is gone, and a not yet migrated
 * version in a tag folder carries the tag that revision held: the new one
 * takes the tag, the gone one is dropped, and nothing else in the folder
 * is touched. */
static void test_tag_of_a_dropped_revision(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    const char *gone = "4444444444444444444444444444444444444444444444444444444444444444";
    char *doc = tu_path("{\"foo\": {\"tags\": {\"v1.0.0\": \"sha256:%s\", \"latest\": "
                        "\"sha256:%s\"}, \"hashes\": {\"sha256:%s\": {\"tag\": \"v1.0.0\", "
                        "\"path\": \"foo/%s/foo.js\"}}}}",
                        gone, gone, gone, gone);
    put(fx.root, "registry.json", doc);
    char h[65];
    put_module(fx.root, "foo/v1.0.0/foo.js", "foo", NULL, "new", h);
    put(fx.root, "foo/README.txt", "the operator's notes");
    free(dry_run(fx.root, 0));
    write_run(fx.root, 0);
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_revision(fx.root, reg, "foo", h, "v1.0.0", NULL);
    assert_tag(reg, "foo", "latest", h);
    assert_null(hash_entry(reg, "foo", gone));
    assert_int_equal(revision_count(reg, "foo"), 1);
    assert_bytes(fx.root, "foo/README.txt", "the operator's notes");
    assert_missing(fx.root, "foo/v1.0.0");
    json_decref(reg);
    assert_idempotent(fx.root, 0);
    free(doc);
    fixture_free(&fx);
}

/* An older deployment's registry.json names files in the tag-folder
 * layout; the catalogue refuses to open such paths, bootstrap moves the
 * files and repairs the entries, keeping every tag. */
static void test_legacy_registry_paths(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char h1[65], h2[65];
    put_module(fx.root, "momentum/v1.0.0/momentum.js", "momentum", NULL, "1", h1);
    put_module(fx.root, "momentum/v1.1.0/momentum.js", "momentum", NULL, "2", h2);
    char *doc = tu_path(
        "{\"momentum\": {\"tags\": {\"v1.0.0\": \"sha256:%s\", \"v1.1.0\": \"sha256:%s\", "
        "\"prod\": \"sha256:%s\", \"latest\": \"sha256:%s\"}, \"hashes\": {"
        "\"sha256:%s\": {\"tag\": \"v1.0.0\", \"path\": \"momentum/v1.0.0/momentum.js\"}, "
        "\"sha256:%s\": {\"tag\": \"v1.1.0\", \"path\": \"momentum/v1.1.0/momentum.js\"}}}}",
        h1, h2, h1, h1, h1, h2);
    put(fx.root, "registry.json", doc);
    free(dry_run(fx.root, 0));
    write_run(fx.root, 0);
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_revision(fx.root, reg, "momentum", h1, "v1.0.0", NULL);
    assert_revision(fx.root, reg, "momentum", h2, "v1.1.0", NULL);
    assert_tag(reg, "momentum", "prod", h1);
    assert_tag(reg, "momentum", "latest", h1); /* the operator's choice stays */
    assert_int_equal(revision_count(reg, "momentum"), 2);
    assert_only_hash_folders(fx.root, "momentum");
    json_decref(reg);
    assert_idempotent(fx.root, 0);
    free(doc);
    fixture_free(&fx);
}

/* --------------------------------------------- invalid and duplicates */

static void test_invalid_modules(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char hv[65];
    put_module(fx.root, "valid.js", "valid", NULL, "v", hv);
    const char *broken = "module.exports = {\n  metadata: { name: 'broken', \n";
    const char *nometa = "module.exports = { create(env) { return {}; } };\n";
    const char *badevents = "module.exports = { metadata: { name: 'badevents', displayName: 'B', "
                            "events: ['Bogus'] }, create(env) { return {}; } };\n";
    const char *throws = "throw new Error('boom');\n";
    put(fx.root, "broken.js", broken);
    put(fx.root, "nometa.js", nometa);
    put(fx.root, "badevents/v1.0.0/badevents.js", badevents);
    put(fx.root, "throws.js", throws);

    char *out = dry_run(fx.root, 1);
    assert_contains(out, "invalid modules (left in place):");
    assert_contains(out, "broken.js");
    assert_contains(out, "compile 3:");
    assert_contains(out, "nometa.js");
    assert_contains(out, "metadata ");
    assert_contains(out, "badevents/v1.0.0/badevents.js");
    assert_contains(out, "throws.js");
    free(out);

    write_run(fx.root, 1);
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_revision(fx.root, reg, "valid", hv, "v1.0.0", NULL);
    assert_int_equal(json_object_size(reg), 1);
    json_decref(reg);
    assert_bytes(fx.root, "broken.js", broken);
    assert_bytes(fx.root, "nometa.js", nometa);
    assert_bytes(fx.root, "badevents/v1.0.0/badevents.js", badevents);
    assert_bytes(fx.root, "throws.js", throws);
    assert_idempotent(fx.root, 1);

    /* --json carries the diagnostics for scripts */
    int rc = bootstrap(&out, "-root '%s' --json 2>/dev/null", fx.root);
    assert_int_equal(rc, 1);
    json_t *doc = parse_json(out);
    json_t *invalid = json_object_get(doc, "invalid");
    assert_int_equal(json_array_size(invalid), 4);
    bool seen_compile = false;
    for (size_t i = 0; i < json_array_size(invalid); i++) {
        json_t *item = json_array_get(invalid, i);
        if (strcmp(tu_jstr(item, "path"), "broken.js") != 0)
            continue;
        assert_string_equal(tu_jstr(item, "diagnostics.0.stage"), "compile");
        assert_true(tu_jint(item, "diagnostics.0.line") > 0);
        seen_compile = true;
    }
    assert_true(seen_compile);
    json_decref(doc);
    free(out);
    fixture_free(&fx);
}

static void test_duplicate_bytes(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    /* The same bytes three times: one revision. */
    char hd[65];
    put_module(fx.root, "dup.js", "dup", NULL, "same", hd);
    put_module(fx.root, "dup/v1.0.0/dup.js", "dup", NULL, "same", NULL);
    put_module(fx.root, "dup/stable/dup.js", "dup", NULL, "same", NULL);
    char *out = dry_run(fx.root, 0);
    assert_contains(out, "dedupe");
    free(out);
    write_run(fx.root, 0);
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_int_equal(revision_count(reg, "dup"), 1);
    assert_revision(fx.root, reg, "dup", hd, "v1.0.0", NULL);
    assert_tag(reg, "dup", "stable", hd);
    assert_tag(reg, "dup", "latest", hd);
    json_decref(reg);
    assert_missing(fx.root, "dup.js");
    assert_only_hash_folders(fx.root, "dup");
    assert_idempotent(fx.root, 0);

    /* A stray copy of a revision already registered is only removed; the
     * registry is not rewritten. */
    char *registry_before = tu_path("%s/registry.json", fx.root);
    char *bytes_before = tu_read_file(registry_before, NULL);
    put_module(fx.root, "dup.js", "dup", NULL, "same", NULL);
    out = dry_run(fx.root, 0);
    assert_contains(out, "dedupe");
    assert_contains(out, "registry changes: none");
    free(out);
    write_run(fx.root, 0);
    assert_missing(fx.root, "dup.js");
    char *bytes_after = tu_read_file(registry_before, NULL);
    assert_string_equal(bytes_before, bytes_after);
    free(bytes_before);
    free(bytes_after);
    free(registry_before);
    fixture_free(&fx);
}

/* The plan's --json lists `path` among the conflicts, with `text` in its
 * message. */
static void assert_conflict(const json_t *plan, const char *path, const char *text)
{
    const json_t *list = json_object_get(plan, "conflicts");
    for (size_t i = 0; i < json_array_size(list); i++) {
        const json_t *item = json_array_get(list, i);
        if (strcmp(tu_jstr(item, "path"), path) != 0)
            continue;
        assert_contains(tu_jstr(item, "message"), text);
        return;
    }
    fail_msg("%s is not listed among the conflicts", path);
}

static void test_conflicts(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    put_module(fx.root, "wrong/v1.0.0/right.js", "right", NULL, "w", NULL);
    /* Two different files claim clash:v1.0.0; the newer one gets it. */
    char hold[65], hnew[65];
    put_module(fx.root, "clash.js", "clash", "v1.0.0", "old", hold);
    put_module(fx.root, "clash/v1.0.0/clash.js", "clash", "v1.0.0", "new", hnew);
    set_mtime(fx.root, "clash.js", time(NULL) - 3600);
    set_mtime(fx.root, "clash/v1.0.0/clash.js", time(NULL) - 60);
    put_module(fx.root, "deep/a/b/c.js", "deep", NULL, "d", NULL);
    put_module(fx.root, "lost/notes.js", "lost", NULL, "l", NULL);
    char *target = tu_path("%s/wrong/v1.0.0/right.js", fx.root);
    char *link = tu_path("%s/link.js", fx.root);
    if (symlink(target, link) != 0)
        fail_msg("symlink: %s", strerror(errno));
    const char *wronghex = "4444444444444444444444444444444444444444444444444444444444444444";
    char *misfiled = tu_path("mis/%s/mis.js", wronghex);
    put_module(fx.root, misfiled, "mis", NULL, "mis", NULL);

    char *out = dry_run(fx.root, 1);
    assert_contains(out, "conflicts (left in place):");
    free(out);
    assert_int_equal(bootstrap(&out, "-root '%s' --json 2>/dev/null", fx.root), 1);
    json_t *plan = parse_json(out);
    assert_conflict(plan, "wrong/v1.0.0/right.js", "its folder 'wrong' does not match");
    assert_conflict(plan, "clash.js", "tag 'v1.0.0' of strategy 'clash' already names");
    assert_conflict(plan, "deep/a/b/c.js", "not in a known layout");
    assert_conflict(plan, "lost/notes.js", "not in a known layout");
    assert_conflict(plan, "link.js", "a symbolic link");
    assert_conflict(plan, misfiled, "not to the name of its folder");
    json_decref(plan);
    free(out);

    write_run(fx.root, 1);
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_revision(fx.root, reg, "clash", hnew, "v1.0.0", NULL);
    assert_null(hash_entry(reg, "clash", hold));
    assert_null(json_object_get(reg, "right"));
    assert_null(json_object_get(reg, "mis"));
    json_decref(reg);
    assert_present(fx.root, "clash.js");
    assert_present(fx.root, "wrong/v1.0.0/right.js");
    assert_present(fx.root, "deep/a/b/c.js");
    assert_present(fx.root, "link.js");
    assert_present(fx.root, misfiled);
    assert_idempotent(fx.root, 1);
    free(misfiled);
    free(target);
    free(link);
    fixture_free(&fx);
}

/* A registered revision's canonical file edited in place is a conflict
 * "left in place"; an old copy of the revision's bytes elsewhere must not
 * be written over it. The copy stays too, saying why, and once the edited
 * file is moved aside a rerun restores the revision from the copy. */
static void test_conflict_is_never_overwritten(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char h[65];
    put_module(fx.root, "flat.js", "flat", "v1.0.0", "f", h);
    char *original = module("flat", "v1.0.0", "f");
    write_run(fx.root, 0);
    char *canonical = tu_path("flat/%s/flat.js", h);
    char *edited = tu_path("%s// operator hot-fix\n", original);
    put(fx.root, canonical, edited);
    put(fx.root, "flat.js", original);

    char *out = dry_run(fx.root, 1);
    assert_contains(out, "conflicts (left in place):");
    assert_contains(out, "no files to move");
    free(out);
    char *err = NULL;
    char *args = tu_path("-root '%s' --json", fx.root);
    assert_int_equal(bootstrap_split(&out, &err, args), 1);
    json_t *plan = parse_json(out);
    assert_conflict(plan, canonical, "not to the name of its folder");
    assert_conflict(plan, "flat.js", "already exists and does not hold these bytes");
    assert_int_equal(json_array_size(json_object_get(plan, "actions")), 0);
    json_decref(plan);
    free(out);
    free(err);

    write_run(fx.root, 1);
    assert_bytes(fx.root, canonical, edited);
    assert_bytes(fx.root, "flat.js", original);

    /* the operator moves the edited file aside: the copy is migrated */
    char *from = tu_path("%s/%s", fx.root, canonical);
    char *aside = tu_path("%s/flat-hot-fix.js.txt", fx.dir);
    assert_int_equal(rename(from, aside), 0);
    write_run(fx.root, 0);
    assert_bytes(fx.root, canonical, original);
    assert_missing(fx.root, "flat.js");
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_revision(fx.root, reg, "flat", h, "v1.0.0", original);
    json_decref(reg);

    free(args);
    free(aside);
    free(from);
    free(edited);
    free(canonical);
    free(original);
    fixture_free(&fx);
}

static char *write_usage(const char *dir, const char *name, const char *text);

/* The entry of `list` whose pathKey is `path` as given lossily, holding
 * its exact bytes in pathKey + "Hex". */
static const json_t *find_hex_entry(const json_t *list, const char *key, const char *lossy,
                                    const char *hex)
{
    char *hex_key = tu_path("%sHex", key);
    const json_t *found = NULL;
    for (size_t i = 0; !found && i < json_array_size(list); i++) {
        const json_t *item = json_array_get(list, i);
        const char *text = json_string_value(json_object_get(item, key));
        const char *bytes = json_string_value(json_object_get(item, hex_key));
        if (text && bytes && strcmp(text, lossy) == 0 && strcmp(bytes, hex) == 0)
            found = item;
    }
    if (!found)
        fail_msg("no entry with %s \"%s\" and %s %s", key, lossy, hex_key, hex);
    free(hex_key);
    return found;
}

/* Names in another encoding than UTF-8 are in the --json documents as the
 * table shows them (each invalid byte U+FFFD) with their exact bytes in hex:
 * no entry is dropped, and a root so named gives its report, before and
 * after -write, and --usage's. */
static void test_json_non_utf8_names(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    put_module(fx.root, "z\xfe.js", "flatbad", "v2.0.0", "f", NULL);
    put_module(fx.root, "bad\xff/v1/badname.js", "badname", "", "b", NULL);
    put_module(fx.root, "wrong\xff/v1.0.0/right.js", "right", NULL, "w", NULL);
    char *out = NULL, *err = NULL;
    char *args = tu_path("-root '%s' --json", fx.root);
    assert_int_equal(bootstrap_split(&out, &err, args), 1);
    json_t *plan = parse_json(out);
    const json_t *summary = json_object_get(plan, "summary");
    const json_t *actions = json_object_get(plan, "actions");
    assert_int_equal(json_array_size(actions), 1);
    assert_int_equal(tu_jint(summary, "migrate"), 1);
    find_hex_entry(actions, "from", "z\xef\xbf\xbd.js", "7afe2e6a73");
    const json_t *invalid = json_object_get(plan, "invalid");
    assert_int_equal(json_array_size(invalid), (size_t)tu_jint(summary, "invalid"));
    find_hex_entry(invalid, "path", "bad\xef\xbf\xbd/v1/badname.js",
                   "626164ff2f76312f6261646e616d652e6a73");
    const json_t *conflicts = json_object_get(plan, "conflicts");
    assert_int_equal(json_array_size(conflicts), (size_t)tu_jint(summary, "conflicts"));
    const json_t *wrong = find_hex_entry(conflicts, "path", "wrong\xef\xbf\xbd/v1.0.0/right.js",
                                         "77726f6e67ff2f76312e302e302f72696768742e6a73");
    assert_contains(tu_jstr(wrong, "message"), "its folder 'wrong\xef\xbf\xbd' does not match");
    json_decref(plan);
    free(out);
    free(err);
    free(args);

    /* a root whose own name is not UTF-8 */
    char *root = tu_path("%s/root\xff", fx.dir);
    assert_int_equal(mkdir(root, 0755), 0);
    put_module(root, "r1.js", "r1", "v1.0.0", "r", NULL);
    char *root_hex = NULL;
    assert_int_equal(tu_run(&root_hex, "printf '%%s' '%s' | od -An -tx1 | tr -d ' \\n'", root), 0);
    for (int write = 0; write < 2; write++) {
        args = tu_path("-root '%s' --json%s", root, write ? " -write" : "");
        int rc = bootstrap_split(&out, &err, args);
        if (rc != 0)
            fail_msg("exited %d: %s", rc, err);
        plan = parse_json(out);
        assert_string_equal(tu_jstr(plan, "rootHex"), root_hex);
        assert_int_equal(json_array_size(json_object_get(plan, "actions")), 1);
        if (write)
            assert_int_equal(tu_jint(plan, "outcome.added"), 1);
        json_decref(plan);
        free(out);
        free(err);
        free(args);
    }
    assert_missing(root, "r1.js");
    char *usage = write_usage(fx.dir, "usage.json", "{\"usage\": []}");
    args = tu_path("-root '%s' --usage '%s' --json", root, usage);
    assert_int_equal(bootstrap_split(&out, &err, args), 0);
    json_t *report = parse_json(out);
    assert_string_equal(tu_jstr(report, "rootHex"), root_hex);
    assert_int_equal(tu_jint(report, "total"), 1);
    json_decref(report);
    free(out);
    free(err);
    free(args);
    free(usage);
    free(root_hex);
    free(root);
    fixture_free(&fx);
}

/* What the scan does not read is reported, never skipped in silence: a
 * folder deeper than any layout, a module named .JS, .mjs or .cjs. */
static void test_skipped_files_reported(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    put_module(fx.root, "a/b/c/d/e/f/g/deep.js", "deep", "v1.0.0", "d", NULL);
    put_module(fx.root, "Up.JS", "up", "v1.0.0", "u", NULL);
    put_module(fx.root, "mm.mjs", "mm", "v1.0.0", "m", NULL);
    put_module(fx.root, "cc.cjs", "cc", "v1.0.0", "c", NULL);
    put(fx.root, "notes.txt", "not a module\n");
    free(dry_run(fx.root, 1));
    char *out = NULL, *err = NULL;
    char *args = tu_path("-root '%s' --json", fx.root);
    assert_int_equal(bootstrap_split(&out, &err, args), 1);
    json_t *plan = parse_json(out);
    assert_conflict(plan, "a/b/c/d/e/f", "folder not looked into");
    assert_conflict(plan, "Up.JS", "file name ends in .js");
    assert_conflict(plan, "mm.mjs", "file name ends in .js");
    assert_conflict(plan, "cc.cjs", "file name ends in .js");
    assert_int_equal(json_array_size(json_object_get(plan, "conflicts")), 4);
    json_decref(plan);
    free(out);
    free(err);
    free(args);
    write_run(fx.root, 1);
    assert_present(fx.root, "a/b/c/d/e/f/g/deep.js");
    assert_present(fx.root, "Up.JS");
    fixture_free(&fx);
}

/* Control characters in names reach the table as \xNN: a newline does not
 * break a row, an escape sequence does not reach the terminal. --json
 * gives the names as they are. */
static void test_control_characters_escaped(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    put_module(fx.root, "x\ny.js", "xy", "v1.0.0", "x", NULL);
    put_module(fx.root, "e\x1b[31m/v1.0.0/e.js", "e", NULL, "e", NULL);
    char *out = dry_run(fx.root, 1);
    assert_contains(out, "x\\x0ay.js");
    assert_contains(out, "e\\x1b[31m/v1.0.0/e.js");
    assert_contains(out, "its folder 'e\\x1b[31m' does not match");
    assert_lacks(out, "\x1b");
    assert_lacks(out, "x\ny");
    free(out);
    char *err = NULL;
    char *args = tu_path("-root '%s' --json", fx.root);
    assert_int_equal(bootstrap_split(&out, &err, args), 1);
    json_t *plan = parse_json(out);
    assert_string_equal(tu_jstr(plan, "actions.0.from"), "x\ny.js");
    json_decref(plan);
    free(out);
    free(err);
    free(args);
    fixture_free(&fx);
}

/* ------------------------------------------------------ crash and rerun */

/* The tree of the crash tests: three revisions of two strategies. */
static void crash_fixture(const char *root, bool breakout, bool m1, bool m2)
{
    if (breakout)
        put_module(root, "breakout.js", "breakout", NULL, "b", NULL);
    if (m1)
        put_module(root, "momentum/v1.0.0/momentum.js", "momentum", NULL, "m1", NULL);
    if (m2)
        put_module(root, "momentum/v2.0.0/momentum.js", "momentum", NULL, "m2", NULL);
}

/* Reruns -write on a constructed crash state and checks that it converges
 * to the tree an uninterrupted run leaves. */
static void assert_converges(const char *root, const char *expected, const char *state_name)
{
    char *out = NULL;
    int rc = bootstrap(&out, "-root '%s' -write", root);
    if (rc != 0)
        fail_msg("rerun after '%s' exited %d:\n%s", state_name, rc, out);
    char *now = tu_tree_checksum(root);
    if (strcmp(now, expected) != 0) {
        char *reg = tu_path("%s/registry.json", root);
        char *text = tu_read_file(reg, NULL);
        fail_msg("rerun after '%s' left a different tree; output:\n%s\nregistry.json:\n%s",
                 state_name, out, text ? text : "(none)");
    }
    free(now);
    free(out);
    assert_idempotent(root, 0);
}

static char *reference_tree(struct fixture *fx)
{
    crash_fixture(fx->root, true, true, true);
    write_run(fx->root, 0);
    return tu_tree_checksum(fx->root);
}

static void copy_canonical(const char *from_root, const char *to_root, const char *name,
                           const char *marker, const char *tag)
{
    char hex[65];
    char *src = module(name, tag, marker);
    tu_sha256_hex(src, strlen(src), hex);
    char *rel = tu_path("%s/%s/%s.js", name, hex, name);
    assert_present(from_root, rel);
    put(to_root, rel, src);
    free(rel);
    free(src);
}

static void test_crash_and_rerun(void **state)
{
    (void)state;
    struct fixture ref;
    fixture_init(&ref);
    char *expected = reference_tree(&ref);

    /* 1. breakout done; momentum's first revision (v2.0.0, the future
     * `latest`) written but not registered; nothing removed yet. */
    struct fixture s1;
    fixture_init(&s1);
    crash_fixture(s1.root, true, false, false);
    write_run(s1.root, 0);
    crash_fixture(s1.root, false, true, true);
    copy_canonical(ref.root, s1.root, "momentum", "m2", NULL);
    assert_converges(s1.root, expected, "written, not registered");

    /* 2. v2.0.0 registered, its old copy not yet removed. */
    struct fixture s2;
    fixture_init(&s2);
    crash_fixture(s2.root, true, false, true);
    write_run(s2.root, 0);
    crash_fixture(s2.root, false, true, true);
    assert_converges(s2.root, expected, "registered, old copy left");

    /* 3. v2.0.0's old copy removed, its emptied folder not yet; plus the
     * temporary file of a registry write that was killed before its rename. */
    struct fixture s3;
    fixture_init(&s3);
    crash_fixture(s3.root, true, false, true);
    write_run(s3.root, 0);
    crash_fixture(s3.root, false, true, false);
    char *empty = tu_path("%s/momentum/v2.0.0", s3.root);
    assert_int_equal(mkdir(empty, 0755), 0);
    put(s3.root, "registry.json.tmp.99999.0", "{\"torn\": ");
    assert_converges(s3.root, expected, "old copy removed, folder left");

    /* 4. The second revision written but not registered. */
    struct fixture s4;
    fixture_init(&s4);
    crash_fixture(s4.root, true, false, true);
    write_run(s4.root, 0);
    crash_fixture(s4.root, false, true, false);
    copy_canonical(ref.root, s4.root, "momentum", "m1", NULL);
    assert_converges(s4.root, expected, "second revision written, not registered");

    /* 5. Killed inside the catalogue's atomic write of the second revision's
     * file: its hash folder holds only the temporary file. */
    struct fixture s5;
    fixture_init(&s5);
    crash_fixture(s5.root, true, false, true);
    write_run(s5.root, 0);
    crash_fixture(s5.root, false, true, false);
    char hm1[65];
    char *sm1 = module("momentum", NULL, "m1");
    tu_sha256_hex(sm1, strlen(sm1), hm1);
    char *temp = tu_path("momentum/%s/momentum.js.tmp.99999.7", hm1);
    put(s5.root, temp, "module.exports = { metad");
    char *out = dry_run(s5.root, 0);
    assert_contains(out, "stale");
    free(out);
    assert_converges(s5.root, expected, "killed inside a revision write");

    free(temp);
    free(sm1);
    free(empty);
    free(expected);
    fixture_free(&ref);
    fixture_free(&s1);
    fixture_free(&s2);
    fixture_free(&s3);
    fixture_free(&s4);
    fixture_free(&s5);
}

/* Files an operator keeps whose names merely start like a writer's
 * leftovers, and folders holding only such files: neither -write nor a
 * gateway starting on the tree may touch them. */
static const char *const operator_files[] = {
    "momentum/v1.0.0/momentum.js.old.2023-01-01",
    "momentum/v0.9/momentum.js.old.keep",
    "momentum/v0.9/momentum.js.tmp.1.2",
    "registry.json.old.2022",
    "registry.json.tmp.orig",
};

static void put_operator_files(const char *root)
{
    for (size_t i = 0; i < sizeof operator_files / sizeof *operator_files; i++)
        put(root, operator_files[i], "// kept by the operator\n");
}

static void assert_operator_files(const char *root, const char *after)
{
    for (size_t i = 0; i < sizeof operator_files / sizeof *operator_files; i++) {
        if (!exists(root, operator_files[i]))
            fail_msg("%s removed %s", after, operator_files[i]);
        assert_bytes(root, operator_files[i], "// kept by the operator\n");
    }
}

/* Only what a killed writer leaves is swept, by -write and by a gateway's
 * start alike: registry.json.tmp|old.<pid>.<n> in the root and
 * <name>.js.tmp.<pid>.<n> in a hash folder (which goes when it is empty). */
static void test_operator_files_survive(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char hm[65];
    put_module(fx.root, "momentum/v1.0.0/momentum.js", "momentum", NULL, "m1", hm);
    put_operator_files(fx.root);
    char *dead = tu_path("momentum/%064d/momentum.js.tmp.99999.1", 7);
    put(fx.root, dead, "module.exports = { meta");
    put(fx.root, "registry.json.tmp.99999.2", "{\"torn\": ");

    char *out = dry_run(fx.root, 0);
    assert_contains(out, "2 stale temporary files");
    free(out);
    write_run(fx.root, 0);
    assert_operator_files(fx.root, "-write");
    assert_missing(fx.root, dead);
    assert_missing(fx.root, "registry.json.tmp.99999.2");
    char *hash_dir = tu_path("momentum/%064d", 7);
    assert_missing(fx.root, hash_dir);
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_revision(fx.root, reg, "momentum", hm, "v1.0.0", NULL);
    json_decref(reg);

    /* a gateway killed mid-write on the migrated tree, then started */
    char *live = tu_path("momentum/%s/momentum.js.tmp.4242.0", hm);
    put(fx.root, live, "module.exports = { meta");
    put(fx.root, "registry.json.old.4242.1", "{}");
    put(fx.root, ".upload.4242.2", "module.exports = {");
    struct tu_server srv;
    struct tu_server_options opts = {.strategies_dir = fx.root};
    tu_server_start(&srv, &opts);
    tu_server_stop(&srv);
    assert_operator_files(fx.root, "a gateway start");
    assert_missing(fx.root, live);
    assert_missing(fx.root, "registry.json.old.4242.1");
    assert_missing(fx.root, ".upload.4242.2");
    char *file = tu_path("momentum/%s/momentum.js", hm);
    assert_present(fx.root, file);

    tu_server_cleanup(&srv);
    free(file);
    free(live);
    free(hash_dir);
    free(dead);
    fixture_free(&fx);
}

/* A stale temporary is no registry change: the plan's registry, its tag
 * changes and the --usage report keep every revision (its step names no
 * revision, and was once replayed as a drop of the first one). */
static void test_stale_temp_keeps_the_registry(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    put_module(fx.root, "alpha.js", "alpha", "v1.0.0", "a", NULL);
    put_module(fx.root, "beta.js", "beta", "v1.0.0", "b", NULL);
    write_run(fx.root, 0);
    put(fx.root, "registry.json.tmp.123.4", "junk");

    char *out = dry_run(fx.root, 0);
    assert_contains(out, "registry changes: none");
    assert_contains(out, "1 stale temporary file");
    free(out);
    char *err = NULL;
    char *args = tu_path("-root '%s' --json", fx.root);
    assert_int_equal(bootstrap_split(&out, &err, args), 0);
    free(args);
    free(err);
    json_t *plan = parse_json(out);
    json_t *disk = tu_assert_registry_sound(fx.root);
    assert_true(json_equal(json_object_get(plan, "registry"), disk));
    assert_int_equal(json_array_size(json_object_get(plan, "registryChanges")), 0);
    json_decref(disk);
    json_decref(plan);
    free(out);

    char *usage = write_usage(fx.dir, "usage.json", "{\"usage\": []}");
    args = tu_path("-root '%s' --usage '%s' --json", fx.root, usage);
    assert_int_equal(bootstrap_split(&out, &err, args), 0);
    free(args);
    free(err);
    json_t *report = parse_json(out);
    assert_int_equal(tu_jint(report, "total"), 2);
    assert_int_equal(json_array_size(json_object_get(report, "idle")), 2);
    json_decref(report);
    free(out);
    free(usage);
    fixture_free(&fx);
}

/* A gateway killed in the middle of an upload or a delete leaves the
 * revision's folder marked pending: its file is garbage when registry.json
 * does not name it, and a dry run plans what -write then does. */
static void test_marked_folder_of_an_interrupted_change(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    put_module(fx.root, "alpha.js", "alpha", "v1.0.0", "a", NULL);
    write_run(fx.root, 0);
    char named[65], unnamed[65];
    json_t *reg = tu_assert_registry_sound(fx.root);
    snprintf(named, sizeof named, "%s", tag_target(reg, "alpha", "v1.0.0"));
    json_decref(reg);
    put_canonical(fx.root, "alpha", "v2.0.0", "b", unnamed);
    char *named_marker = tu_path("alpha/%s/alpha.js.pending.4242.1", named);
    char *unnamed_marker = tu_path("alpha/%s/alpha.js.pending.4242.2", unnamed);
    char *unnamed_file = tu_path("alpha/%s/alpha.js", unnamed);
    char *named_file = tu_path("alpha/%s/alpha.js", named);
    put(fx.root, named_marker, "");
    put(fx.root, unnamed_marker, "");

    char *out = dry_run(fx.root, 0);
    assert_contains(out, "registry changes: none");
    assert_contains(out, "3 stale temporary files");
    assert_lacks(out, "v2.0.0");
    free(out);

    write_run(fx.root, 0);
    assert_missing(fx.root, unnamed_file);
    assert_missing(fx.root, unnamed_marker);
    char *folder = tu_path("alpha/%s", unnamed);
    assert_missing(fx.root, folder);
    assert_missing(fx.root, named_marker);
    assert_present(fx.root, named_file);
    reg = tu_assert_registry_sound(fx.root);
    assert_int_equal(revision_count(reg, "alpha"), 1);
    json_decref(reg);
    assert_idempotent(fx.root, 0);
    free(folder);
    free(named_file);
    free(unnamed_file);
    free(unnamed_marker);
    free(named_marker);
    fixture_free(&fx);
}

static void big_fixture(const char *root)
{
    for (int i = 0; i < 60; i++) {
        char name[16], rel[64];
        snprintf(name, sizeof name, "s%02d", i);
        snprintf(rel, sizeof rel, "%s.js", name);
        put_module(root, rel, name, "v0.9.0", "flat", NULL);
        snprintf(rel, sizeof rel, "%s/v1.0.0/%s.js", name, name);
        put_module(root, rel, name, NULL, "one", NULL);
        snprintf(rel, sizeof rel, "%s/v1.1.0/%s.js", name, name);
        put_module(root, rel, name, NULL, "two", NULL);
    }
}

/* Real crashes: SIGKILL at several points of a long run, then a rerun. */
static void test_killed_midway(void **state)
{
    (void)state;
    struct fixture ref, fx;
    fixture_init(&ref);
    fixture_init(&fx);
    big_fixture(ref.root);
    write_run(ref.root, 0);
    char *expected = tu_tree_checksum(ref.root);
    big_fixture(fx.root);
    const char *delays[] = {"0.2", "0.5", "0.9", "1.4", "2.0", "2.7"};
    for (size_t i = 0; i < sizeof delays / sizeof delays[0]; i++) {
        char *out = NULL;
        int rc = tu_run(&out, "timeout -s KILL %s '%s' bootstrap -root '%s' -write 2>&1", delays[i],
                        binary(), fx.root);
        free(out);
        assert_true(rc == 0 || rc == 137 || rc == -1);
    }
    assert_converges(fx.root, expected, "SIGKILL");
    free(expected);
    fixture_free(&ref);
    fixture_free(&fx);
}

/* ------------------------------------------------------------- --usage */

static char *write_usage(const char *dir, const char *name, const char *text)
{
    char *path = tu_path("%s/%s", dir, name);
    tu_write_text(path, text);
    return path;
}

static void test_usage_bare_file(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char h1[65], h2[65];
    put_module(fx.root, "momentum/v1.0.0/momentum.js", "momentum", NULL, "1", h1);
    put_module(fx.root, "momentum/v2.0.0/momentum.js", "momentum", NULL, "2", h2);
    write_run(fx.root, 0);
    char *text = tu_path("{\"usage\": [{\"strategy\": \"momentum\", \"hash\": \"sha256:%s\", "
                         "\"count\": 1, \"instances\": [\"a\"], \"lastSeen\": "
                         "\"2026-01-02T03:04:05Z\"}, {\"strategy\": \"ghost\", \"hash\": "
                         "\"sha256:%064d\", \"count\": 0, \"lastSeen\": null}]}",
                         h2, 0);
    char *file = write_usage(fx.dir, "usage.json", text);
    char *before = tu_tree_checksum(fx.root);
    char *out = NULL;
    assert_int_equal(bootstrap(&out, "-root '%s' --usage '%s'", fx.root, file), 0);
    assert_contains(out, "LAST SEEN");
    assert_contains(out, "never");
    char *selector = tu_path("momentum@sha256:%s", h1);
    assert_contains(out, selector);
    char *short1 = tu_path("%.12s", h1);
    assert_contains(out, short1);
    char *running = tu_path("%.12s", h2);
    assert_lacks(out, running);
    char *ghost_selector = tu_path("ghost@sha256:%064d", 0);
    char *ghost =
        tu_path("1 usage entry names no revision under the root (deleted since it ran, as the "
                "gateway keeps the usage of deleted revisions, or an export of another "
                "root):\n  %s\n",
                ghost_selector);
    assert_contains(out, ghost);
    free(out);

    char *err = NULL;
    char *args = tu_path("-root '%s' --usage '%s' --json", fx.root, file);
    assert_int_equal(bootstrap_split(&out, &err, args), 0);
    json_t *doc = parse_json(out);
    assert_int_equal(json_array_size(json_object_get(doc, "idle")), 1);
    char *spelled = tu_path("sha256:%s", h1);
    assert_string_equal(tu_jstr(doc, "idle.0.hash"), spelled);
    assert_string_equal(tu_jstr(doc, "idle.0.shortHash"), short1);
    assert_string_equal(tu_jstr(doc, "idle.0.tags.0"), "v1.0.0");
    assert_true(json_is_null(tu_jget(doc, "idle.0.lastSeen")));
    assert_true(json_is_true(tu_jget(doc, "idle.0.neverSeen")));
    assert_true(tu_jint(doc, "idle.0.size") > 0);
    assert_int_equal(tu_jint(doc, "running"), 1);
    assert_int_equal(tu_jint(doc, "unknownUsageEntries"), 1);
    assert_string_equal(tu_jstr(doc, "unknownUsage.0"), ghost_selector);
    json_decref(doc);
    assert_checksum(fx.root, before, "--usage");
    free(spelled);
    free(args);
    free(err);
    free(out);
    free(selector);
    free(short1);
    free(running);
    free(ghost);
    free(ghost_selector);
    free(before);
    free(file);
    free(text);
    fixture_free(&fx);
}

static void post_ok(struct tu_server *srv, const char *path, const char *body)
{
    struct tu_response res;
    tu_send(srv, &res, "POST", path, body);
    if (res.status < 200 || res.status > 299)
        fail_msg("POST %s: HTTP %ld %s", path, res.status, res.body);
    tu_response_free(&res);
}

/* The retire workflow against a real server: export, report, and the
 * report's idle revisions are exactly those nothing runs. */
static void test_usage_from_server_export(void **state)
{
    (void)state;
    struct tu_server srv;
    tu_server_start(&srv, NULL);
    char *s1 = module("momentum", NULL, "v1"), *s2 = module("momentum", NULL, "v2");
    char *s3 = module("momentum", NULL, "v3");
    char h1[65], h2[65], h3[65];
    tu_upload_expect(&srv, s1, "{\"tag\": \"v1.0.0\", \"aliases\": [\"old\"]}", 201, h1);
    tu_upload_expect(&srv, s2, "{\"tag\": \"v2.0.0\", \"promoteLatest\": true}", 201, h2);
    post_ok(&srv, "/strategy/instances",
            "{\"id\": \"run-v2\", \"strategy\": {\"identifier\": \"momentum\", \"selector\": "
            "\"momentum:v2.0.0\", \"config\": {}}, \"scope\": {\"sim\": {\"symbols\": "
            "[\"BTC-USDT\"]}}}");
    struct tu_response res;
    tu_send(&srv, &res, "POST", "/strategy/instances/run-v2/start", "{}");
    assert_true(res.status == 200 || res.status == 409);
    tu_response_free(&res);

    tu_get(&srv, &res, "/strategies/registry");
    tu_assert_status(&res, 200);
    char *file = write_usage(srv.root, "export.json", res.body);
    tu_response_free(&res);
    /* uploaded after the export: never seen by it */
    tu_upload_expect(&srv, s3, "{\"tag\": \"v3.0.0\"}", 201, h3);

    char *out = NULL, *err = NULL;
    char *args = tu_path("-root '%s' --usage '%s' --json", srv.strategies_dir, file);
    int rc = bootstrap_split(&out, &err, args);
    if (rc != 0)
        fail_msg("--usage exited %d: %s", rc, err);
    json_t *doc = parse_json(out);
    json_t *idle = json_object_get(doc, "idle");
    assert_int_equal(json_array_size(idle), 2);
    char *sp1 = tu_path("sha256:%s", h1), *sp3 = tu_path("sha256:%s", h3);
    assert_string_equal(tu_jstr(idle, "0.hash"), sp1);
    assert_string_equal(tu_jstr(idle, "0.tags.0"), "old");
    assert_string_equal(tu_jstr(idle, "0.tags.1"), "v1.0.0");
    assert_string_equal(tu_jstr(idle, "1.hash"), sp3);
    assert_true(json_is_true(tu_jget(idle, "1.neverSeen")));
    assert_int_equal(tu_jint(doc, "running"), 1);
    json_decref(doc);
    free(out);
    free(err);

    assert_int_equal(bootstrap(&out, "-root '%s' --usage '%s'", srv.strategies_dir, file), 0);
    char *short2 = tu_path("%.12s", h2);
    assert_lacks(out, short2);
    assert_contains(out, "never");
    free(out);
    free(short2);
    free(sp1);
    free(sp3);
    free(args);
    free(file);
    free(s1);
    free(s2);
    free(s3);
    tu_server_stop(&srv);
    tu_server_cleanup(&srv);
}

/* Against a live server's directory: the server sees the migration after
 * POST /strategies/refresh. */
static void test_live_server_refresh(void **state)
{
    (void)state;
    struct tu_server srv;
    tu_server_start(&srv, NULL);
    char hu[65];
    char *su = module("uploaded", NULL, "u");
    tu_upload_expect(&srv, su, "{\"tag\": \"v1.0.0\"}", 201, hu);
    char hl[65];
    put_module(srv.strategies_dir, "legacy/v1.3.0/legacy.js", "legacy", NULL, "l", hl);
    char *out = NULL;
    int rc = bootstrap(&out, "-root '%s' -write", srv.strategies_dir);
    if (rc != 0)
        fail_msg("-write on a live tree exited %d:\n%s", rc, out);
    free(out);
    post_ok(&srv, "/strategies/refresh", "{}");
    json_t *listing = tu_get_json(&srv, 200, "/strategies/modules/legacy:v1.3.0");
    char *spelled = tu_path("sha256:%s", hl);
    char *text = json_dumps(listing, 0);
    assert_contains(text, spelled);
    free(text);
    json_decref(listing);
    json_t *reg = tu_assert_registry_sound(srv.strategies_dir);
    assert_tag(reg, "uploaded", "v1.0.0", hu);
    assert_tag(reg, "legacy", "latest", hl);
    json_decref(reg);
    free(spelled);
    free(su);
    tu_server_stop(&srv);
    tu_server_cleanup(&srv);
}

/* ------------------------------------------------- command line, input */

static void assert_bad_input(const char *args, const char *reason)
{
    char *out = NULL, *err = NULL;
    int rc = bootstrap_split(&out, &err, args);
    if (rc != 2)
        fail_msg("'%s' exited %d, expected 2; stderr: %s", args, rc, err);
    size_t lines = 0;
    for (const char *p = err; *p; p++)
        lines += *p == '\n';
    if (lines != 1)
        fail_msg("'%s' should say why in one line on stderr, got:\n%s", args, err);
    assert_contains(err, reason);
    free(out);
    free(err);
}

static void test_bad_input(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    put_module(fx.root, "momentum.js", "momentum", NULL, "m", NULL);
    char *before = tu_tree_checksum(fx.root);
    char *missing = tu_path("%s/nope", fx.dir);
    char *file = write_usage(fx.dir, "file.txt", "not a directory");
    char *bad_json = write_usage(fx.dir, "bad.json", "{\"usage\": [");
    char *no_usage = write_usage(fx.dir, "nousage.json", "{\"registry\": {}}");
    char *bad_entry = write_usage(fx.dir, "entry.json",
                                  "{\"usage\": [{\"strategy\": "
                                  "\"momentum\", \"hash\": \"x\", "
                                  "\"count\": 0}]}");
    char *bad_seen = write_usage(fx.dir, "seen.json",
                                 "{\"usage\": [{\"strategy\": \"momentum\", \"hash\": "
                                 "\"sha256:"
                                 "0000000000000000000000000000000000000000000000000000000000000000"
                                 "\", \"count\": 0, \"lastSeen\": \"garbage\"}]}");
    char *unreadable = write_usage(fx.dir, "secret.json", "{\"usage\": []}");
    chmod(unreadable, 0);

    assert_bad_input("", "missing -root");
    assert_bad_input("-write", "missing -root");
    assert_bad_input("-root", "needs a value");
    char *args = tu_path("-root '%s'", missing);
    assert_bad_input(args, "does not exist");
    free(args);
    args = tu_path("-root '%s'", file);
    assert_bad_input(args, "not a directory");
    free(args);
    args = tu_path("-root '%s' -frobnicate", fx.root);
    assert_bad_input(args, "unknown flag");
    free(args);
    args = tu_path("-root '%s' stray", fx.root);
    assert_bad_input(args, "unexpected argument");
    free(args);
    args = tu_path("-root '%s' --usage '%s/none.json'", fx.root, fx.dir);
    assert_bad_input(args, "cannot read");
    free(args);
    args = tu_path("-root '%s' --usage '%s'", fx.root, bad_json);
    assert_bad_input(args, "invalid JSON");
    free(args);
    args = tu_path("-root '%s' --usage '%s'", fx.root, no_usage);
    assert_bad_input(args, "\"usage\" array");
    free(args);
    args = tu_path("-root '%s' --usage '%s'", fx.root, bad_entry);
    assert_bad_input(args, "usage[0]");
    free(args);
    args = tu_path("-root '%s' --usage '%s'", fx.root, bad_seen);
    assert_bad_input(args, "usage[0]: \"lastSeen\" is neither a date-time nor null");
    free(args);
    free(bad_seen);
    if (geteuid() != 0) { /* root reads anything */
        args = tu_path("-root '%s' --usage '%s'", fx.root, unreadable);
        assert_bad_input(args, "cannot read");
        free(args);
    }
    args = tu_path("-root '%s' -write --usage", fx.root);
    assert_bad_input(args, "needs a value");
    free(args);
    args = tu_path("-root '%s' -root='%s'", fx.root, fx.dir);
    assert_bad_input(args, "-root is given twice");
    free(args);
    /* a registry.json that is not JSON: nothing is merged into it */
    put(fx.root, "registry.json", "{\"momentum\": ");
    char *with_bad_registry = tu_tree_checksum(fx.root);
    args = tu_path("-root '%s' -write", fx.root);
    assert_bad_input(args, "registry.json");
    free(args);
    assert_checksum(fx.root, with_bad_registry, "a bad registry.json");
    char *reg = tu_path("%s/registry.json", fx.root);
    unlink(reg);
    free(reg);
    assert_checksum(fx.root, before, "bad input");
    free(with_bad_registry);
    free(before);
    free(missing);
    free(file);
    free(bad_json);
    free(no_usage);
    free(bad_entry);
    free(unreadable);
    fixture_free(&fx);
}

static void test_flag_forms(void **state)
{
    (void)state;
    const char *forms[] = {"-root ", "--root ", "-root=", "--root="};
    const char *writes[] = {"-write", "--write"};
    for (size_t f = 0; f < 4; f++) {
        struct fixture fx;
        fixture_init(&fx);
        put_module(fx.root, "momentum.js", "momentum", NULL, "m", NULL);
        char *root_arg = tu_path("%s'%s'", forms[f], fx.root);
        char *out = NULL;
        assert_int_equal(bootstrap(&out, "%s", root_arg), 0);
        assert_contains(out, "filesystem left untouched");
        free(out);
        assert_int_equal(bootstrap(&out, "%s %s", writes[f % 2], root_arg), 0);
        free(out);
        assert_missing(fx.root, "momentum.js");
        char *usage = write_usage(fx.dir, "u.json", "{\"usage\": []}");
        assert_int_equal(bootstrap(&out, "%s -usage='%s' -json", root_arg, usage), 0);
        json_t *doc = parse_json(out);
        assert_int_equal(json_array_size(json_object_get(doc, "idle")), 1);
        json_decref(doc);
        free(out);
        assert_int_equal(bootstrap(&out, "%s --usage '%s' --json", root_arg, usage), 0);
        free(out);
        free(usage);
        free(root_arg);
        fixture_free(&fx);
    }
    char *out = NULL;
    assert_int_equal(bootstrap(&out, "--help"), 0);
    assert_contains(out, "-root");
    free(out);
}

static void test_plan_json(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char hm[65];
    put_module(fx.root, "momentum/v1.0.0/momentum.js", "momentum", NULL, "m", hm);
    char *out = NULL;
    assert_int_equal(bootstrap(&out, "-root '%s' --json", fx.root), 0);
    json_t *doc = parse_json(out);
    assert_false(json_is_true(json_object_get(doc, "write")));
    assert_string_equal(tu_jstr(doc, "actions.0.action"), "migrate");
    assert_string_equal(tu_jstr(doc, "actions.0.from"), "momentum/v1.0.0/momentum.js");
    char *to = tu_path("momentum/%s/momentum.js", hm);
    assert_string_equal(tu_jstr(doc, "actions.0.to"), to);
    char *spelled = tu_path("sha256:%s", hm);
    assert_string_equal(tu_jstr(doc, "registry.momentum.tags.latest"), spelled);
    json_decref(doc);
    free(out);
    assert_int_equal(bootstrap(&out, "-root '%s' --json -write", fx.root), 0);
    doc = parse_json(out);
    assert_int_equal(tu_jint(doc, "outcome.added"), 1);
    assert_int_equal(tu_jint(doc, "outcome.failed"), 0);
    json_decref(doc);
    free(out);
    free(to);
    free(spelled);
    fixture_free(&fx);
}

/* A registry.json that is a FIFO is refused as bad input, as a folder is,
 * and never waited on: by a dry run, by -write, and by a gateway start. */
static void test_registry_fifo(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    put_module(fx.root, "momentum.js", "momentum", "v1.0.0", "m", NULL);
    char *fifo = tu_path("%s/registry.json", fx.root);
    assert_int_equal(mkfifo(fifo, 0644), 0);
    const char *modes[] = {"", " -write", " --json"};
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++) {
        char *out = NULL;
        int rc = tu_run(&out, "timeout 20 '%s' bootstrap -root '%s'%s 2>&1", binary(), fx.root,
                        modes[i]);
        if (rc != 2)
            fail_msg("bootstrap%s on a FIFO registry.json exited %d:\n%s", modes[i], rc, out);
        assert_contains(out, "registry.json is not a regular file");
        free(out);
    }
    assert_present(fx.root, "momentum.js");
    char *state_dir = tu_path("%s/state", fx.dir);
    char *out = NULL;
    int rc = tu_run(&out,
                    "timeout 20 '%s' serve --listen 127.0.0.1:0 --strategies '%s' "
                    "--state '%s' 2>&1",
                    binary(), fx.root, state_dir);
    if (rc == 124 || rc == 0)
        fail_msg("serve on a FIFO registry.json exited %d:\n%s", rc, out);
    assert_contains(out, "registry.json is not a regular file");
    free(out);
    free(state_dir);
    free(fifo);
    fixture_free(&fx);
}

/* A dry run stopped by SIGTERM or SIGINT removes its private view of the
 * registry (a copy of registry.json and one link per strategy folder) from
 * $TMPDIR before it dies of the signal; the root is untouched. */
static void test_interrupted_dry_run(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    for (int i = 0; i < 600; i++) {
        char name[16], rel[32];
        snprintf(name, sizeof name, "s%03d", i);
        snprintf(rel, sizeof rel, "%s.js", name);
        put_module(fx.root, rel, name, "v1.0.0", "s", NULL);
    }
    write_run(fx.root, 0);
    for (int i = 0; i < 300; i++) { /* unmigrated: the dry run validates them */
        char name[16], rel[32];
        snprintf(name, sizeof name, "f%03d", i);
        snprintf(rel, sizeof rel, "%s.js", name);
        put_module(fx.root, rel, name, "v1.0.0", "f", NULL);
    }
    char *before = tu_tree_checksum(fx.root);
    char *tmp = tu_path("%s/tmp", fx.dir);
    assert_int_equal(mkdir(tmp, 0700), 0);
    const char *signals[] = {"TERM", "INT"};
    for (size_t i = 0; i < 2; i++) {
        /* the signal goes once the view exists, while the run validates; a
         * shell starts a background command with SIGINT ignored, which a
         * terminal's Ctrl-C to a foreground run never is: perl (Essential in
         * Debian) puts the default back before the exec */
        char *out = NULL;
        int rc = tu_run(&out,
                        "TMPDIR='%s' perl -e '$SIG{INT} = \"DEFAULT\"; exec @ARGV or die' "
                        "'%s' bootstrap -root '%s' >/dev/null 2>&1 & p=$!; "
                        "until [ -n \"$(ls -A '%s')\" ]; do kill -0 $p 2>/dev/null || break; done; "
                        "kill -%s $p; wait $p; echo \"status $?\"; ls -A '%s'",
                        tmp, binary(), fx.root, tmp, signals[i], tmp);
        assert_int_equal(rc, 0);
        char *expected = tu_path("status %d\n", 128 + (i == 0 ? SIGTERM : SIGINT));
        if (strcmp(out, expected) != 0)
            fail_msg("SIG%s: expected \"%s\", got:\n%s", signals[i], expected, out);
        free(expected);
        free(out);
    }
    assert_checksum(fx.root, before, "an interrupted dry run");
    free(tmp);
    free(before);
    fixture_free(&fx);
}

/* -write that cannot take the registry's lock applies nothing and says so
 * with its own status (3), distinct from "applied, with files left aside"
 * (1); once the lock can be taken a rerun migrates. */
static void test_nothing_applied(void **state)
{
    (void)state;
    struct fixture fx;
    fixture_init(&fx);
    char hm[65];
    put_module(fx.root, "momentum.js", "momentum", "v1.0.0", "m", hm);
    char *lock = tu_path("%s/.registry.lock", fx.root);
    assert_int_equal(mkdir(lock, 0755), 0); /* no one, not even root, locks a folder */
    char *before = tu_tree_checksum(fx.root);
    char *out = NULL, *err = NULL;
    char *args = tu_path("-root '%s' -write", fx.root);
    assert_int_equal(bootstrap_split(&out, &err, args), 3);
    assert_contains(err, "nothing was applied: cannot open lock");
    assert_lacks(out, "applied:");
    assert_checksum(fx.root, before, "-write without the lock");
    free(out);
    free(err);
    assert_int_equal(rmdir(lock), 0);
    write_run(fx.root, 0);
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_revision(fx.root, reg, "momentum", hm, "v1.0.0", NULL);
    json_decref(reg);
    free(args);
    free(before);
    free(lock);
    fixture_free(&fx);
}

/* A report written to a full disk: the command says so on stderr and exits
 * 1, so a script does not take the empty file for a plan; the work it was
 * asked to do is still done (a dry run changes nothing, -write migrates). */
static void test_report_to_full_disk(void **state)
{
    (void)state;
    if (access("/dev/full", W_OK) != 0)
        skip();
    struct fixture fx;
    fixture_init(&fx);
    char hm[65];
    put_module(fx.root, "momentum.js", "momentum", "v1.2.0", "m", hm);
    char *before = tu_tree_checksum(fx.root);
    char *err = NULL;
    int rc = tu_run(&err, "'%s' bootstrap -root '%s' --json 2>&1 >/dev/full", binary(), fx.root);
    assert_int_equal(rc, 1);
    assert_contains(err, "writing standard output failed: No space left on device");
    assert_checksum(fx.root, before, "a dry run whose report was lost");
    free(err);

    rc = tu_run(&err, "'%s' bootstrap -root '%s' -write 2>&1 >/dev/full", binary(), fx.root);
    assert_int_equal(rc, 1);
    assert_contains(err, "writing standard output failed");
    free(err);
    assert_missing(fx.root, "momentum.js");
    json_t *reg = tu_assert_registry_sound(fx.root);
    assert_tag(reg, "momentum", "v1.2.0", hm);
    json_decref(reg);
    assert_idempotent(fx.root, 0);

    rc = tu_run(&err, "'%s' version 2>&1 >/dev/full", binary());
    assert_int_equal(rc, 1);
    assert_contains(err, "writing standard output failed");
    free(err);
    free(before);
    fixture_free(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_flat_layout),
        cmocka_unit_test(test_tag_folder_layout),
        cmocka_unit_test(test_current_layout),
        cmocka_unit_test(test_mixed_layout),
        cmocka_unit_test(test_merge_existing_registry),
        cmocka_unit_test(test_tag_of_a_dropped_revision),
        cmocka_unit_test(test_legacy_registry_paths),
        cmocka_unit_test(test_invalid_modules),
        cmocka_unit_test(test_duplicate_bytes),
        cmocka_unit_test(test_conflicts),
        cmocka_unit_test(test_conflict_is_never_overwritten),
        cmocka_unit_test(test_json_non_utf8_names),
        cmocka_unit_test(test_control_characters_escaped),
        cmocka_unit_test(test_skipped_files_reported),
        cmocka_unit_test(test_crash_and_rerun),
        cmocka_unit_test(test_killed_midway),
        cmocka_unit_test(test_operator_files_survive),
        cmocka_unit_test(test_stale_temp_keeps_the_registry),
        cmocka_unit_test(test_marked_folder_of_an_interrupted_change),
        cmocka_unit_test(test_usage_bare_file),
        cmocka_unit_test(test_bad_input),
        cmocka_unit_test(test_flag_forms),
        cmocka_unit_test(test_plan_json),
        cmocka_unit_test(test_report_to_full_disk),
        cmocka_unit_test(test_nothing_applied),
        cmocka_unit_test(test_registry_fifo),
        cmocka_unit_test(test_interrupted_dry_run),
        cmocka_unit_test(test_usage_from_server_export),
        cmocka_unit_test(test_live_server_refresh),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
