/*
 * Validation results by hash. The catalogue validates the registered
 * revisions when it opens (possibly on two threads), the scan validates
 * every file it finds; equal bytes give equal answers, so each distinct
 * byte sequence goes through the validator once.
 */
#include "cmd/bootstrap.h"

#include "core/sorted.h"
#include "js/validate.h"

#include <stdlib.h>
#include <string.h>

void bootstrap_checks_init(struct bootstrap_checks *checks)
{
    memset(checks, 0, sizeof *checks);
    pthread_mutex_init(&checks->mu, NULL);
}

static void check_free(struct bootstrap_check *check)
{
    if (!check)
        return;
    json_decref(check->metadata);
    json_decref(check->diagnostics);
    free(check->message);
    free(check);
}

void bootstrap_checks_free(struct bootstrap_checks *checks)
{
    for (size_t i = 0; i < checks->n; i++)
        check_free(checks->items[i]);
    free(checks->items);
    pthread_mutex_destroy(&checks->mu);
    memset(checks, 0, sizeof *checks);
}

static const char *check_hex_at(const void *checks, size_t i)
{
    return ((const struct bootstrap_checks *)checks)->items[i]->hex;
}

/* Index of hex, or of the slot where it belongs. */
static size_t find_slot(const struct bootstrap_checks *checks, const char *hex, bool *found)
{
    return sorted_find(checks, checks->n, check_hex_at, hex, found);
}

/* Runs the validator; the whole answer is kept, including diagnostics. */
static struct bootstrap_check *run_validator(const char *hex, const char *source, size_t len,
                                             const char *filename)
{
    struct bootstrap_check *check = calloc(1, sizeof *check);
    if (!check)
        return NULL;
    snprintf(check->hex, sizeof check->hex, "%s", hex);
    struct err err = ERR_INIT;
    check->metadata = js_validate(source, len, filename, NULL, &err);
    if (!check->metadata) {
        check->message = strdup(err.message[0] ? err.message : "the module does not validate");
        json_t *diags = err.details ? json_object_get(err.details, "diagnostics") : NULL;
        check->diagnostics = json_is_array(diags) ? json_incref(diags) : NULL;
        if (!check->message) {
            check_free(check);
            check = NULL;
        }
    }
    err_clear(&err);
    return check;
}

static int insert(struct bootstrap_checks *checks, size_t at, struct bootstrap_check *check)
{
    if (checks->n == checks->cap) {
        size_t cap = checks->cap ? checks->cap * 2 : 64;
        struct bootstrap_check **items = realloc(checks->items, cap * sizeof *items);
        if (!items)
            return -1;
        checks->items = items;
        checks->cap = cap;
    }
    memmove(&checks->items[at + 1], &checks->items[at], (checks->n - at) * sizeof *checks->items);
    checks->items[at] = check;
    checks->n++;
    return 0;
}

const struct bootstrap_check *bootstrap_checks_get(struct bootstrap_checks *checks, const char *hex,
                                                   const char *source, size_t len,
                                                   const char *filename)
{
    bool found;
    pthread_mutex_lock(&checks->mu);
    size_t at = find_slot(checks, hex, &found);
    struct bootstrap_check *hit = found ? checks->items[at] : NULL;
    pthread_mutex_unlock(&checks->mu);
    if (hit)
        return hit;
    /* Validation runs unlocked; two threads racing on the same bytes both
     * validate and the second answer is dropped. */
    struct bootstrap_check *check = run_validator(hex, source, len, filename);
    if (!check)
        return NULL;
    pthread_mutex_lock(&checks->mu);
    at = find_slot(checks, hex, &found);
    if (found) {
        hit = checks->items[at];
    } else if (insert(checks, at, check) == 0) {
        hit = check;
        check = NULL;
    }
    pthread_mutex_unlock(&checks->mu);
    check_free(check);
    return hit;
}

/* The same rules as the server's callback (cmd/serve.c): the module must
 * validate and its metadata.name must be the strategy it is filed under. */
json_t *bootstrap_catalog_metadata(void *ctx, const char *name, const char *hex, const char *source,
                                   size_t len, char **reason)
{
    char filename[NAMES_STRATEGY_MAX + 4];
    snprintf(filename, sizeof filename, "%s.js", name);
    const struct bootstrap_check *check = bootstrap_checks_get(ctx, hex, source, len, filename);
    if (!check) {
        *reason = strdup("out of memory validating the module");
        return NULL;
    }
    if (!check->metadata) {
        *reason = strdup(check->message);
        return NULL;
    }
    const char *declared = json_string_value(json_object_get(check->metadata, "name"));
    if (!declared || strcmp(declared, name) != 0) {
        char msg[256];
        snprintf(msg, sizeof msg, "metadata.name is '%s' but the revision is registered as '%s'",
                 declared ? declared : "", name);
        *reason = strdup(msg);
        return NULL;
    }
    /* A deep copy, so the snapshot never shares a reference count with the
     * cache across the catalogue's verification threads. */
    json_t *copy = json_deep_copy(check->metadata);
    if (!copy)
        *reason = strdup("out of memory copying metadata");
    return copy;
}
