/*
 * Selectors: selector_parse() on arbitrary text, selector_format() of what
 * it accepts, and registry_resolve_text() against a small fixed snapshot
 * that has ambiguous prefixes, an invalid revision, a strategy whose name
 * looks like a hash prefix and one called "sha256".
 *
 * Invariants: parse either fails with ERR_INVALID and a zeroed selector, or
 * yields parts that are valid names, tags and lowercase hex; the canonical
 * spelling parses back to the same selector; resolution fails only with
 * ERR_INVALID, ERR_NOT_FOUND or ERR_CONFLICT and otherwise names a valid
 * revision of the strategy, tag or prefix the selector asked for.
 */
#include "fuzzutil.h"

#include "core/log.h"
#include "core/names.h"
#include "registry/registry_internal.h"
#include "registry/selector.h"

#include <strings.h>

#define HEX_A1 "aaaaaaaaaaaa1111111111111111111111111111111111111111111111111111"
#define HEX_A2 "aaaaaaaaaaaa2222222222222222222222222222222222222222222222222222"
#define HEX_A3 "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
#define HEX_G1 "deadbeef0000aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
#define HEX_G2 "abcdef012345bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
#define HEX_H1 "abcdef012345cccccccccccccccccccccccccccccccccccccccccccccccccccc"
#define HEX_S1 "5555555555555555555555555555555555555555555555555555555555555555"

static struct registry *snapshot;

static json_t *entry(const char *name, const char *hex, const char *tag, bool canonical)
{
    char path[REGISTRY__REL_PATH_MAX];
    if (canonical)
        registry__rel_path(name, hex, path);
    else
        snprintf(path, sizeof path, "elsewhere/%s.js", name);
    return json_pack("{s:s, s:s}", "tag", tag, "path", path);
}

static json_t *snapshot_document(void)
{
    json_t *doc = json_object();
    json_object_set_new(doc, "momentum",
                        json_pack("{s:{s:s, s:s, s:s, s:s, s:s}, s:{s:o, s:o, s:o}}", "tags",
                                  "latest", "sha256:" HEX_A2, "v1.0.0", "sha256:" HEX_A1, "v1.1.0",
                                  "sha256:" HEX_A2, "prod", "sha256:" HEX_A3, "stable",
                                  "sha256:" HEX_A1, "hashes", "sha256:" HEX_A1,
                                  entry("momentum", HEX_A1, "v1.0.0", true), "sha256:" HEX_A2,
                                  entry("momentum", HEX_A2, "v1.1.0", true), "sha256:" HEX_A3,
                                  entry("momentum", HEX_A3, "prod", false)));
    json_object_set_new(doc, "grid",
                        json_pack("{s:{s:s, s:s}, s:{s:o, s:o}}", "tags", "latest",
                                  "sha256:" HEX_G2, "old", "sha256:" HEX_G1, "hashes",
                                  "sha256:" HEX_G1, entry("grid", HEX_G1, "old", true),
                                  "sha256:" HEX_G2, entry("grid", HEX_G2, "latest", true)));
    json_object_set_new(doc, "abcdef012345",
                        json_pack("{s:{s:s}, s:{s:o}}", "tags", "latest", "sha256:" HEX_H1,
                                  "hashes", "sha256:" HEX_H1,
                                  entry("abcdef012345", HEX_H1, "latest", true)));
    json_object_set_new(doc, "sha256",
                        json_pack("{s:{s:s, s:s}, s:{s:o}}", "tags", "latest", "sha256:" HEX_S1,
                                  "beta", "sha256:" HEX_S1, "hashes", "sha256:" HEX_S1,
                                  entry("sha256", HEX_S1, "beta", true)));
    return doc;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LEVEL_ERROR);
    json_t *doc = snapshot_document();
    struct err err = ERR_INIT;
    snapshot = doc ? registry__from_json(doc, &err) : NULL;
    json_decref(doc);
    fuzz_check(snapshot && snapshot->nstrategies == 4, "fixed snapshot: %s", err.message);
    return 0;
}

static bool lower_hex(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    }
    return true;
}

static bool safe_component(const char *s)
{
    return !strchr(s, '/') && !strchr(s, '\\') && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

static void check_parsed(const struct selector *sel, const char *text)
{
    fuzz_check(sel->kind == SELECTOR_LATEST || sel->kind == SELECTOR_TAG ||
                   sel->kind == SELECTOR_HASH,
               "'%s': bad kind %d", text, (int)sel->kind);
    if (sel->name[0] || sel->kind != SELECTOR_HASH)
        fuzz_check(names_valid_strategy(sel->name) && safe_component(sel->name),
                   "'%s': invalid name '%s'", text, sel->name);
    switch (sel->kind) {
    case SELECTOR_LATEST:
        fuzz_check(strcmp(sel->tag, "latest") == 0, "'%s': latest without the tag", text);
        break;
    case SELECTOR_TAG:
        fuzz_check(names_valid_tag(sel->tag) && safe_component(sel->tag), "'%s': bad tag '%s'",
                   text, sel->tag);
        break;
    case SELECTOR_HASH:
        fuzz_check(sel->tag[0] == '\0', "'%s': a hash selector with a tag", text);
        break;
    }
    if (sel->kind == SELECTOR_HASH || sel->may_be_prefix) {
        fuzz_check(sel->hex_len >= SELECTOR_MIN_PREFIX && sel->hex_len <= HASH_HEX_LEN &&
                       strlen(sel->hex) == sel->hex_len && lower_hex(sel->hex, sel->hex_len),
                   "'%s': bad hex '%s' (%zu)", text, sel->hex, sel->hex_len);
    } else {
        fuzz_check(sel->hex_len == 0 && sel->hex[0] == '\0', "'%s': stray hex", text);
    }
    if (sel->may_be_prefix)
        fuzz_check(sel->kind == SELECTOR_LATEST && strlen(sel->name) == sel->hex_len &&
                       strncasecmp(sel->name, sel->hex, sel->hex_len) == 0,
                   "'%s': may_be_prefix on '%s'", text, sel->name);
}

static bool same_selector(const struct selector *a, const struct selector *b)
{
    return a->kind == b->kind && strcmp(a->name, b->name) == 0 && strcmp(a->tag, b->tag) == 0 &&
           strcmp(a->hex, b->hex) == 0 && a->hex_len == b->hex_len &&
           a->may_be_prefix == b->may_be_prefix;
}

static void check_round_trip(const struct selector *sel, const char *text)
{
    char spelled[2 * SELECTOR_TEXT_MAX], again[2 * SELECTOR_TEXT_MAX];
    selector_format(sel, spelled, sizeof spelled);
    fuzz_check(strlen(spelled) > 0 && strlen(spelled) <= SELECTOR_TEXT_MAX,
               "'%s': canonical spelling '%s' is empty or too long", text, spelled);
    struct selector back;
    struct err err = ERR_INIT;
    fuzz_check(selector_parse(spelled, &back, &err) == 0, "'%s': '%s' does not parse back: %s",
               text, spelled, err.message);
    fuzz_check(same_selector(sel, &back), "'%s': '%s' parses to another selector", text, spelled);
    selector_format(&back, again, sizeof again);
    fuzz_check(strcmp(spelled, again) == 0, "'%s': spelled '%s' then '%s'", text, spelled, again);
    /* Short buffers are cut, never overrun, and always terminated. */
    for (size_t size = 1; size < 8; size += 3) {
        char small[8];
        memset(small, 'x', sizeof small);
        selector_format(sel, small, size);
        fuzz_check(memchr(small, '\0', size) != NULL, "'%s': unterminated in %zu bytes", text,
                   size);
    }
    err_clear(&err);
}

static void check_resolution(const struct selector *sel, bool parsed, const char *text)
{
    struct registry_resolution r;
    struct err err = ERR_INIT;
    if (registry_resolve_text(snapshot, text, &r, &err) != 0) {
        fuzz_check_err(&err, "registry_resolve_text",
                       FUZZ_KIND(ERR_INVALID) | FUZZ_KIND(ERR_NOT_FOUND) | FUZZ_KIND(ERR_CONFLICT));
        fuzz_check(parsed || err.kind == ERR_INVALID, "'%s': did not parse, yet %s", text,
                   err_kind_name(err.kind));
        fuzz_check(!r.strategy && !r.revision, "'%s': a failed resolution names a revision", text);
        err_clear(&err);
        return;
    }
    fuzz_check(parsed, "'%s' resolves but does not parse", text);
    const struct registry_strategy *st = r.strategy;
    fuzz_check(st && r.revision && registry_find_strategy(snapshot, st->name) == st &&
                   r.revision >= st->revisions && r.revision < st->revisions + st->nrevisions,
               "'%s': resolution outside the snapshot", text);
    fuzz_check(!r.revision->invalid, "'%s' resolved to an invalid revision", text);
    if (sel->name[0] && !(sel->may_be_prefix && !registry_find_strategy(snapshot, sel->name)))
        fuzz_check(strcmp(st->name, sel->name) == 0, "'%s' resolved into strategy %s", text,
                   st->name);
    if (sel->kind == SELECTOR_HASH || (sel->may_be_prefix && strcmp(st->name, sel->name) != 0))
        fuzz_check(strncmp(r.revision->hex, sel->hex, sel->hex_len) == 0 && !r.tag,
                   "'%s' resolved to %s", text, r.revision->hex);
    else
        fuzz_check(r.tag && strcmp(r.tag, sel->tag) == 0 &&
                       strcmp(registry_tag_target(st, r.tag), r.revision->hex) == 0,
                   "'%s': tag resolution went astray", text);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = fuzz_cstr(data, size);
    struct selector sel;
    struct err err = ERR_INIT;
    bool parsed = selector_parse(text, &sel, &err) == 0;
    if (parsed) {
        check_parsed(&sel, text);
        check_round_trip(&sel, text);
    } else {
        fuzz_check_err(&err, "selector_parse", FUZZ_KIND(ERR_INVALID));
        struct selector zero;
        memset(&zero, 0, sizeof zero);
        fuzz_check(memcmp(&sel, &zero, sizeof sel) == 0, "a failed parse left parts behind");
    }
    err_clear(&err);
    check_resolution(&sel, parsed, text);
    free(text);
    return 0;
}
