/*
 * Helpers shared by the registry's unit tests: sources, uploads, and a check
 * of the on-disk invariants (registry.json parses, every entry names a file
 * whose bytes hash to its name).
 */
#ifndef STRATD_TESTS_REGTEST_H
#define STRATD_TESTS_REGTEST_H

#include "testutil.h"

#include "core/err.h"
#include "core/fsutil.h"
#include "core/hash.h"
#include "core/jsonutil.h"
#include "registry/registry.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define rt_assert_ok(call, errp)                                                                   \
    do {                                                                                           \
        if ((call) != 0)                                                                           \
            fail_msg("%s failed: %s", #call, (errp)->message);                                     \
    } while (0)

#define rt_assert_fails(call, errp, expected)                                                      \
    do {                                                                                           \
        if ((call) == 0)                                                                           \
            fail_msg("%s succeeded, expected %s", #call, err_kind_name(expected));                 \
        if ((errp)->kind != (expected))                                                            \
            fail_msg("%s: expected %s, got %s: %s", #call, err_kind_name(expected),                \
                     err_kind_name((errp)->kind), (errp)->message);                                \
    } while (0)

/* A module source that differs for every (name, n). */
static inline char *rt_source(const char *name, int n)
{
    return tu_path("module.exports = {\n  metadata: { name: '%s', version: %d },\n"
                   "  create(env) { return {}; }\n};\n",
                   name, n);
}

static inline void rt_hex_of(const char *source, char hex[HASH_HEX_LEN + 1])
{
    hash_sha256_hex(source, strlen(source), hex);
}

static inline struct catalog *rt_open(const char *root)
{
    struct catalog_options opts = {root, NULL, NULL, false};
    struct catalog *cat = NULL;
    struct err err = ERR_INIT;
    rt_assert_ok(catalog_open(&opts, &cat, &err), &err);
    return cat;
}

/* Uploads source under name with a primary tag (NULL: latest) and no
 * aliases; returns 0 or -1 with err set. */
static inline int rt_upload(struct catalog *cat, const char *name, const char *source,
                            const char *tag, struct catalog_upload_result *result, struct err *err)
{
    struct catalog_upload up = {.name = name, .source = source, .len = strlen(source), .tag = tag};
    return catalog_add_revision(cat, &up, result, err);
}

/* Uploads revision n of name and returns its hex. */
static inline void rt_add(struct catalog *cat, const char *name, int n, const char *tag,
                          char hex[HASH_HEX_LEN + 1])
{
    char *source = rt_source(name, n);
    struct catalog_upload_result result;
    struct err err = ERR_INIT;
    rt_assert_ok(rt_upload(cat, name, source, tag, &result, &err), &err);
    memcpy(hex, result.hex, HASH_HEX_LEN + 1);
    free(source);
}

/* The hex a tag points at in the current snapshot, copied (or ""). */
static inline void rt_tag(struct catalog *cat, const char *name, const char *tag,
                          char hex[HASH_HEX_LEN + 1])
{
    struct registry *reg = catalog_snapshot(cat);
    const char *target = registry_tag_target(registry_find_strategy(reg, name), tag);
    snprintf(hex, HASH_HEX_LEN + 1, "%s", target ? target : "");
    registry_release(reg);
}

/* registry.json's text without the spaces each line is padded with, in
 * place: what registry_to_text() gives for the same snapshot. */
static inline char *rt_unpadded(char *text)
{
    char *out = text;
    for (const char *in = text; *in; in++) {
        if (*in == ' ' && in[strspn(in, " ")] == '\n')
            in += strspn(in, " ") - 1;
        else
            *out++ = *in;
    }
    *out = '\0';
    return text;
}

static inline json_t *rt_load_json(const char *path)
{
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    if (!text)
        return NULL;
    struct err err = ERR_INIT;
    json_t *doc = jsonutil_parse_object(text, len, &err);
    if (!doc)
        fail_msg("%s does not parse: %s", path, err.message);
    free(text);
    return doc;
}

/* The crash invariant: registry.json (when present) parses, every hash it
 * lists names <name>/<hex>/<name>.js whose bytes hash to it, and every tag
 * names one of the strategy's hashes. Returns the number of revisions. */
static inline size_t rt_check_disk(const char *root)
{
    char *path = tu_path("%s/registry.json", root);
    json_t *doc = rt_load_json(path);
    free(path);
    if (!doc)
        return 0;
    size_t revisions = 0;
    const char *name;
    json_t *st;
    json_object_foreach(doc, name, st)
    {
        json_t *hashes = json_object_get(st, "hashes");
        const char *key;
        json_t *entry;
        json_object_foreach(hashes, key, entry)
        {
            const char *rel = json_string_value(json_object_get(entry, "path"));
            assert_non_null(rel);
            assert_non_null(json_string_value(json_object_get(entry, "tag")));
            char *file = tu_path("%s/%s", root, rel);
            char hex[HASH_HEX_LEN + 1];
            struct err err = ERR_INIT;
            if (hash_file_sha256(file, hex, NULL, &err) != 0)
                fail_msg("%s lists %s but %s", name, key, err.message);
            assert_string_equal(hex, key + HASH_PREFIX_LEN);
            free(file);
            revisions++;
        }
        json_t *tags = json_object_get(st, "tags");
        assert_non_null(json_object_get(tags, "latest"));
        const char *tag;
        json_t *target;
        json_object_foreach(tags, tag, target)
        {
            if (!json_object_get(hashes, json_string_value(target)))
                fail_msg("tag %s:%s points at %s, which is not listed", name, tag,
                         json_string_value(target));
        }
    }
    json_decref(doc);
    return revisions;
}

/* The entries of dir, one a line (ls -A); "" when it is missing. */
static inline char *rt_ls(const char *dir)
{
    char *out = NULL;
    if (tu_run(&out, "LC_ALL=C ls -A '%s' 2>/dev/null", dir) != 0) {
        free(out);
        return strdup("");
    }
    return out;
}

#endif
