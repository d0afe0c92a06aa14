/*
 * selector: parsing the strings operators use to name a revision.
 *
 *   name                 the revision tagged `latest`
 *   name:tag             the revision the tag points at
 *   name@sha256:<hex>    a revision by hash (64 hex, or a prefix of >= 12)
 *   name@<hex>           the same without the algorithm prefix
 *   sha256:<hex>         a revision by hash in any strategy (prefix >= 12)
 *   <hex>                a bare hex string of >= 12 digits that is not the
 *                        name of an existing strategy is a hash prefix across
 *                        all strategies (decided at resolution time)
 *
 * Contract: pure functions, thread-safe, no allocation. selector_parse()
 * rejects anything malformed (bad characters, path separators, "..", empty
 * parts, a tag or name over its length limit, a hash prefix under 12 hex
 * digits) with ERR_INVALID and a message naming the offending part, so names
 * and tags that pass it are safe to use as path components.
 */
#ifndef STRATD_REGISTRY_SELECTOR_H
#define STRATD_REGISTRY_SELECTOR_H

#include "core/err.h"
#include "core/hash.h"
#include "core/names.h"

#include <stdbool.h>
#include <stddef.h>

#define SELECTOR_MIN_PREFIX 12
#define SELECTOR_TEXT_MAX (NAMES_STRATEGY_MAX + 1 + HASH_SPELLED_LEN + NAMES_TAG_MAX + 1)

enum selector_kind {
    SELECTOR_LATEST, /* "name": tag is "latest" */
    SELECTOR_TAG,    /* "name:tag" */
    SELECTOR_HASH,   /* "name@..." or a hash without name; hex may be a prefix */
};

struct selector {
    enum selector_kind kind;
    char name[NAMES_STRATEGY_MAX + 1]; /* empty for a hash without a name */
    char tag[NAMES_TAG_MAX + 1];       /* LATEST: "latest"; TAG: the tag */
    char hex[HASH_HEX_LEN + 1];        /* HASH: lowercase hex digits */
    size_t hex_len;                    /* HASH: 12..64 */
    /* LATEST only: the name is also a plausible bare hash prefix; resolution
     * falls back to a hash lookup when no strategy has this name. */
    bool may_be_prefix;
};

int selector_parse(const char *text, struct selector *out, struct err *err);
/* Canonical spelling: "name", "name:tag", "name@sha256:<hex>". */
void selector_format(const struct selector *sel, char *out, size_t size);
/* True for "name@<64 hex>" forms, which refresh never moves. */
static inline bool selector_is_pinned_hash(const struct selector *sel)
{
    return sel->kind == SELECTOR_HASH && sel->hex_len == HASH_HEX_LEN;
}

#endif
