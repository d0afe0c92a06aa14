/*
 * The bootstrap usage file (`stratd bootstrap --usage FILE`): the input is
 * written to a file and read with bootstrap_usage_load(), then reported,
 * as text and as JSON, against a registry made of the export's own
 * "registry" (when it is a valid registry.json) plus one revision for each
 * usage entry, so that every entry is looked up.
 *
 * Invariants: a refused file fails with ERR_INVALID and a message; an
 * accepted one gives entries sorted by (strategy, hash) with valid names,
 * lowercase 64-hex hashes and non-negative counts, one per element of the
 * "usage" array; the report succeeds.
 */
#include "fuzzutil.h"

#include "cmd/bootstrap.h"
#include "core/jsonutil.h"
#include "core/log.h"
#include "registry/registry_internal.h"

#include <unistd.h>

static char usage_path[512];
static FILE *sink;

static void remove_usage_path(void)
{
    unlink(usage_path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    log_set_level(LOG_LEVEL_ERROR);
    snprintf(usage_path, sizeof usage_path, "%s/stratd-fuzz-usage-XXXXXX", fuzz_tmpdir());
    int fd = mkstemp(usage_path);
    fuzz_check(fd >= 0, "cannot create %s", usage_path);
    close(fd);
    atexit(remove_usage_path);
    sink = fopen("/dev/null", "w");
    fuzz_check(sink != NULL, "cannot open /dev/null");
    return 0;
}

static void check_entries(const struct bootstrap_usage *usage, const json_t *doc)
{
    size_t expected = json_array_size(json_object_get(doc, "usage"));
    fuzz_check(usage->n == expected, "%zu entries from a list of %zu", usage->n, expected);
    for (size_t i = 0; i < usage->n; i++) {
        const struct bootstrap_usage_entry *e = &usage->entries[i];
        char hex[HASH_HEX_LEN + 1];
        fuzz_check(e->strategy && names_valid_strategy(e->strategy), "entry %zu: strategy", i);
        fuzz_check(hash_parse_full(e->hex, hex) && strcmp(hex, e->hex) == 0, "entry %zu: hash", i);
        fuzz_check(e->count >= 0, "entry %zu: count %lld", i, e->count);
        if (i > 0) {
            const struct bootstrap_usage_entry *p = &usage->entries[i - 1];
            int cmp = strcmp(p->strategy, e->strategy);
            fuzz_check(cmp < 0 || (cmp == 0 && strcmp(p->hex, e->hex) <= 0),
                       "entries out of order at %zu", i);
        }
    }
}

/* registry.json as bootstrap would leave it: the export's registry when it
 * loads, plus a revision for every usage entry. */
static json_t *plan_after(const struct bootstrap_usage *usage, const json_t *doc)
{
    json_t *after = NULL;
    struct err err = ERR_INIT;
    json_t *exported = json_deep_copy(json_object_get(doc, "registry"));
    struct registry *reg = json_is_object(exported) ? registry__from_json(exported, &err) : NULL;
    json_decref(exported);
    err_clear(&err);
    if (reg) {
        after = registry_to_json(reg);
        registry_release(reg);
    }
    if (!after)
        after = json_object();
    for (size_t i = 0; i < usage->n; i++) {
        const struct bootstrap_usage_entry *e = &usage->entries[i];
        json_t *st = json_object_get(after, e->strategy);
        if (!st) {
            st = json_pack("{s:{}, s:{}}", "tags", "hashes");
            json_object_set_new(after, e->strategy, st);
        }
        char spelled[HASH_SPELLED_LEN + 1], rel[BOOTSTRAP_REL_MAX];
        hash_spell(e->hex, spelled);
        bootstrap_canonical_rel(e->strategy, e->hex, rel);
        json_t *hashes = json_object_get(st, "hashes");
        if (!json_object_get(hashes, spelled))
            json_object_set_new(hashes, spelled, json_pack("{s:s, s:s}", "tag", "v1", "path", rel));
        json_t *tags = json_object_get(st, "tags");
        if (!json_object_get(tags, "latest"))
            json_object_set_new(tags, "latest", json_string(spelled));
    }
    return after;
}

static void report(const struct bootstrap_usage *usage, const json_t *doc)
{
    struct bootstrap_plan plan;
    memset(&plan, 0, sizeof plan);
    plan.root = "/nonexistent";
    plan.after = plan_after(usage, doc);
    for (int json = 0; json < 2; json++) {
        struct err err = ERR_INIT;
        int rc = bootstrap_usage_report(sink, usage, &plan, plan.root, json == 1,
                                        (size_t)usage->n % 3, &err);
        fuzz_check(rc == 0, "bootstrap_usage_report: %s", err.message);
        err_clear(&err);
    }
    fflush(sink);
    json_decref(plan.after);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(usage_path, "wb");
    fuzz_check(f && fwrite(data, 1, size, f) == size && fclose(f) == 0, "cannot write %s",
               usage_path);
    struct bootstrap_usage usage;
    struct err err = ERR_INIT;
    if (bootstrap_usage_load(usage_path, &usage, &err) != 0) {
        fuzz_check_err(&err, "bootstrap_usage_load", FUZZ_KIND(ERR_INVALID));
        fuzz_check(usage.n == 0 && !usage.entries, "a refused file left entries");
        err_clear(&err);
        return 0;
    }
    /* The file parsed, so the same bytes parse here too. */
    json_t *doc = jsonutil_parse((const char *)data, size, &err);
    fuzz_check(doc != NULL, "the loader accepted what jsonutil_parse refuses: %s", err.message);
    check_entries(&usage, doc);
    report(&usage, doc);
    json_decref(doc);
    bootstrap_usage_free(&usage);
    return 0;
}
