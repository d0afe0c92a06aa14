/*
 * registry.json: jsonutil_parse() then registry__from_json() on arbitrary
 * text, the way catalog_open() and catalog_reload() read the file.
 *
 * Invariants: a refused document fails with ERR_INVALID and a message; an
 * accepted one gives a snapshot whose strategies and tags are sorted and
 * valid, whose every strategy has revisions and a `latest`, whose every tag
 * names one of its revisions, and whose revisions are unique, valid hashes
 * that are marked invalid exactly when their path is not the canonical one.
 * registry_to_json() of it loads again into the same snapshot and writes
 * the same document.
 */
#include "fuzzutil.h"

#include "core/jsonutil.h"
#include "core/log.h"
#include "core/names.h"
#include "registry/registry_internal.h"

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    /* Repairs are logged as warnings: too much noise at fuzzing speed. */
    log_set_level(LOG_LEVEL_ERROR);
    return 0;
}

static void check_revision(const struct registry_strategy *st, size_t i)
{
    const struct registry_revision *rev = &st->revisions[i];
    char canonical[REGISTRY__REL_PATH_MAX], parsed[HASH_HEX_LEN + 1];
    fuzz_check(strlen(rev->hex) == HASH_HEX_LEN && hash_parse_full(rev->hex, parsed) &&
                   strcmp(parsed, rev->hex) == 0,
               "%s: revision %zu has hash '%s'", st->name, i, rev->hex);
    fuzz_check(rev->tag && names_valid_tag(rev->tag), "%s@%s: bad primary tag", st->name, rev->hex);
    fuzz_check(rev->path != NULL, "%s@%s: no path", st->name, rev->hex);
    registry__rel_path(st->name, rev->hex, canonical);
    bool off_path = strcmp(rev->path, canonical) != 0;
    fuzz_check(rev->invalid == off_path && (rev->invalid_reason != NULL) == off_path,
               "%s@%s: invalid=%d for path '%s'", st->name, rev->hex, rev->invalid, rev->path);
    fuzz_check(!rev->metadata, "%s@%s: metadata out of nowhere", st->name, rev->hex);
    for (size_t j = 0; j < i; j++)
        fuzz_check(strcmp(st->revisions[j].hex, rev->hex) != 0, "%s: hash %s twice", st->name,
                   rev->hex);
    fuzz_check(registry_find_revision(st, rev->hex) == rev, "%s@%s: lookup finds another", st->name,
               rev->hex);
}

static void check_strategy(const struct registry *reg, size_t s)
{
    const struct registry_strategy *st = reg->strategies[s];
    fuzz_check(names_valid_strategy(st->name), "strategy name '%s'", st->name);
    fuzz_check(s == 0 || strcmp(reg->strategies[s - 1]->name, st->name) < 0,
               "strategies out of order at '%s'", st->name);
    fuzz_check(registry_find_strategy(reg, st->name) == st, "lookup of '%s' fails", st->name);
    fuzz_check(st->nrevisions > 0, "'%s' has no revisions", st->name);
    for (size_t i = 0; i < st->nrevisions; i++)
        check_revision(st, i);
    for (size_t i = 0; i < st->ntags; i++) {
        const struct registry_tag *t = &st->tags[i];
        fuzz_check(names_valid_tag(t->tag), "%s: tag '%s'", st->name, t->tag);
        fuzz_check(i == 0 || strcmp(st->tags[i - 1].tag, t->tag) < 0, "%s: tags out of order",
                   st->name);
        fuzz_check(registry_find_revision(st, t->hex) != NULL, "%s: tag %s dangles", st->name,
                   t->tag);
        fuzz_check(registry_tag_target(st, t->tag) == t->hex, "%s: tag %s not found", st->name,
                   t->tag);
    }
    fuzz_check(registry_latest(st) != NULL, "%s: no latest", st->name);
    json_t *tags = registry_tags_of(st, registry_latest(st)->hex);
    fuzz_check(json_array_size(tags) > 0, "%s: latest's revision has no tags", st->name);
    json_decref(tags);
}

static void check_resolves(const struct registry *reg)
{
    for (size_t s = 0; s < reg->nstrategies; s++) {
        const struct registry_strategy *st = reg->strategies[s];
        struct registry_resolution r;
        struct err err = ERR_INIT;
        int rc = registry_resolve_text(reg, st->name, &r, &err);
        const struct registry_revision *latest = registry_latest(st);
        if (latest->invalid)
            fuzz_check(rc != 0 && err.kind == ERR_CONFLICT, "%s: invalid latest resolves",
                       st->name);
        else
            fuzz_check(rc == 0 && r.revision == latest, "%s: latest does not resolve: %s", st->name,
                       err.message);
        err_clear(&err);
    }
}

static void check_snapshot(const struct registry *reg)
{
    for (size_t s = 0; s < reg->nstrategies; s++)
        check_strategy(reg, s);
    check_resolves(reg);
}

static void check_round_trip(const struct registry *reg)
{
    json_t *doc = registry_to_json(reg);
    fuzz_check(doc != NULL, "registry_to_json failed");
    struct err err = ERR_INIT;
    struct registry *again = registry__from_json(doc, &err);
    fuzz_check(again != NULL, "the written registry.json does not load: %s", err.message);
    fuzz_check(again->nstrategies == reg->nstrategies, "strategies lost on reload");
    for (size_t s = 0; s < reg->nstrategies; s++)
        fuzz_check(registry__strategy_same(reg->strategies[s], again->strategies[s]),
                   "'%s' changed on reload", reg->strategies[s]->name);
    json_t *doc2 = registry_to_json(again);
    fuzz_check(doc2 && json_equal(doc, doc2), "the reloaded registry writes another document");
    char *a = registry_to_text(reg, NULL), *b = registry_to_text(again, NULL);
    fuzz_check(a && b && strcmp(a, b) == 0, "the reloaded registry writes other text");
    /* the text the catalogue writes is the document, whatever the names,
     * tags and paths hold */
    json_t *parsed = a ? jsonutil_parse(a, strlen(a), &err) : NULL;
    fuzz_check(parsed && json_equal(parsed, doc), "registry.json text is not its document");
    json_decref(parsed);
    free(a);
    free(b);
    json_decref(doc);
    json_decref(doc2);
    registry_release(again);
}

/* The catalogue's own text: each line padded to the width the input gives
 * it (registry__learn_rooms), whatever that is, and still the document. */
static void check_padded_text(struct registry *reg, const uint8_t *data, size_t size)
{
    registry__learn_rooms(reg, (const char *)data, size);
    struct registry_text_buffer buf = {0};
    size_t len = 0;
    char *text = registry__text_cached(reg, &buf, &len);
    fuzz_check(text != NULL, "registry__text_cached failed");
    struct err err = ERR_INIT;
    json_t *parsed = jsonutil_parse(text, len, &err);
    json_t *doc = registry_to_json(reg);
    fuzz_check(parsed && doc && json_equal(parsed, doc),
               "padded registry.json is not its document");
    err_clear(&err);
    json_decref(parsed);
    json_decref(doc);
    registry__text_buffer_free(&buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct err err = ERR_INIT;
    json_t *doc = jsonutil_parse((const char *)data, size, &err);
    if (!doc) {
        fuzz_check_err(&err, "jsonutil_parse", FUZZ_KIND(ERR_INVALID));
        err_clear(&err);
        return 0;
    }
    struct registry *reg = registry__from_json(doc, &err);
    json_decref(doc);
    if (!reg) {
        fuzz_check_err(&err, "registry__from_json", FUZZ_KIND(ERR_INVALID));
        err_clear(&err);
        return 0;
    }
    check_snapshot(reg);
    check_round_trip(reg);
    check_padded_text(reg, data, size);
    registry_release(reg);
    return 0;
}
