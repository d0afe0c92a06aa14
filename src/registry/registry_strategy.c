/*
 * One strategy of a snapshot: its tags and revisions, and the few edits a
 * change makes to a private copy before it is published.
 */
#include "registry/registry_internal.h"

#include "core/sorted.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct registry_strategy *registry__strategy_new(const char *name)
{
    struct registry_strategy *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    atomic_init(&st->refs, 1);
    snprintf(st->name, sizeof st->name, "%s", name);
    return st;
}

void registry__revision_clear(struct registry_revision *rev)
{
    free(rev->tag);
    free(rev->path);
    free(rev->invalid_reason);
    json_decref(rev->metadata);
    memset(rev, 0, sizeof *rev);
}

static void strategy_free(struct registry_strategy *st)
{
    /* a copy that failed half-way may lack either array */
    for (size_t i = 0; st->tags && i < st->ntags; i++)
        free(st->tags[i].tag);
    for (size_t i = 0; st->revisions && i < st->nrevisions; i++)
        registry__revision_clear(&st->revisions[i]);
    free(st->tags);
    free(st->revisions);
    free(st->text);
    free(st);
}

void registry__strategy_retain(struct registry_strategy *st)
{
    atomic_fetch_add_explicit(&st->refs, 1, memory_order_relaxed);
}

void registry__strategy_release(struct registry_strategy *st)
{
    if (st && atomic_fetch_sub_explicit(&st->refs, 1, memory_order_acq_rel) == 1)
        strategy_free(st);
}

static char *dup_or_null(const char *s, bool *failed)
{
    if (!s)
        return NULL;
    char *copy = strdup(s);
    if (!copy)
        *failed = true;
    return copy;
}

static bool copy_revision(struct registry_revision *dst, const struct registry_revision *src)
{
    bool failed = false;
    *dst = *src;
    dst->tag = dup_or_null(src->tag, &failed);
    dst->path = dup_or_null(src->path, &failed);
    dst->invalid_reason = dup_or_null(src->invalid_reason, &failed);
    dst->metadata = json_incref(src->metadata);
    return !failed;
}

struct registry_strategy *registry__strategy_copy(const struct registry_strategy *st)
{
    struct registry_strategy *copy = registry__strategy_new(st->name);
    if (!copy)
        return NULL;
    /* +1 so that an empty strategy still gets arrays, and a NULL can only
     * mean that the allocation failed. */
    copy->text_room = st->text_room;
    copy->tags = calloc(st->ntags + 1, sizeof *copy->tags);
    copy->revisions = calloc(st->nrevisions + 1, sizeof *copy->revisions);
    if (!copy->tags || !copy->revisions)
        goto fail;
    for (; copy->ntags < st->ntags; copy->ntags++) {
        struct registry_tag *t = &copy->tags[copy->ntags];
        t->tag = strdup(st->tags[copy->ntags].tag);
        if (!t->tag)
            goto fail;
        memcpy(t->hex, st->tags[copy->ntags].hex, sizeof t->hex);
    }
    for (; copy->nrevisions < st->nrevisions; copy->nrevisions++) {
        struct registry_revision *rev = &copy->revisions[copy->nrevisions];
        if (!copy_revision(rev, &st->revisions[copy->nrevisions])) {
            registry__revision_clear(rev);
            goto fail;
        }
    }
    return copy;
fail:
    strategy_free(copy);
    return NULL;
}

static const char *tag_at(const void *st, size_t i)
{
    return ((const struct registry_strategy *)st)->tags[i].tag;
}

/* Binary search: the index of tag, or where it would be inserted. */
static size_t tag_slot(const struct registry_strategy *st, const char *tag, bool *found)
{
    return sorted_find(st, st->ntags, tag_at, tag, found);
}

int registry__strategy_set_tag(struct registry_strategy *st, const char *tag, const char *hex)
{
    bool found;
    size_t at = tag_slot(st, tag, &found);
    if (found) {
        memcpy(st->tags[at].hex, hex, HASH_HEX_LEN + 1);
        return 0;
    }
    char *name = strdup(tag);
    struct registry_tag *grown = name ? realloc(st->tags, (st->ntags + 1) * sizeof *grown) : NULL;
    if (!grown) {
        free(name);
        return -1;
    }
    st->tags = grown;
    memmove(&st->tags[at + 1], &st->tags[at], (st->ntags - at) * sizeof *grown);
    st->tags[at].tag = name;
    memcpy(st->tags[at].hex, hex, HASH_HEX_LEN + 1);
    st->ntags++;
    return 0;
}

static void remove_tag_at(struct registry_strategy *st, size_t at)
{
    free(st->tags[at].tag);
    memmove(&st->tags[at], &st->tags[at + 1], (st->ntags - at - 1) * sizeof st->tags[0]);
    st->ntags--;
}

void registry__strategy_remove_tag(struct registry_strategy *st, const char *tag)
{
    bool found;
    size_t at = tag_slot(st, tag, &found);
    if (found)
        remove_tag_at(st, at);
}

static int compare_tags(const void *a, const void *b)
{
    return strcmp(((const struct registry_tag *)a)->tag, ((const struct registry_tag *)b)->tag);
}

void registry__strategy_sort_tags(struct registry_strategy *st)
{
    if (st->ntags > 1)
        qsort(st->tags, st->ntags, sizeof st->tags[0], compare_tags);
}

int registry__strategy_push_revision(struct registry_strategy *st, struct registry_revision *rev)
{
    struct registry_revision *grown =
        realloc(st->revisions, (st->nrevisions + 1) * sizeof *st->revisions);
    if (!grown)
        return -1;
    st->revisions = grown;
    st->revisions[st->nrevisions++] = *rev;
    memset(rev, 0, sizeof *rev);
    return 0;
}

void registry__strategy_remove_revision(struct registry_strategy *st, size_t index)
{
    const char *hex = st->revisions[index].hex;
    for (size_t i = st->ntags; i-- > 0;) {
        if (strcmp(st->tags[i].hex, hex) == 0)
            remove_tag_at(st, i);
    }
    registry__revision_clear(&st->revisions[index]);
    memmove(&st->revisions[index], &st->revisions[index + 1],
            (st->nrevisions - index - 1) * sizeof st->revisions[0]);
    st->nrevisions--;
}

long registry__revision_index(const struct registry_strategy *st, const char *hex)
{
    for (size_t i = 0; i < st->nrevisions; i++) {
        if (memcmp(st->revisions[i].hex, hex, HASH_HEX_LEN) == 0)
            return (long)i;
    }
    return -1;
}

static bool same_text(const char *a, const char *b)
{
    if (!a || !b)
        return a == b;
    return strcmp(a, b) == 0;
}

static bool same_revision(const struct registry_revision *a, const struct registry_revision *b)
{
    return strcmp(a->hex, b->hex) == 0 && same_text(a->tag, b->tag) &&
           same_text(a->path, b->path) && a->size == b->size && a->invalid == b->invalid &&
           same_text(a->invalid_reason, b->invalid_reason) &&
           (a->metadata == b->metadata || json_equal(a->metadata, b->metadata));
}

bool registry__strategy_same(const struct registry_strategy *a, const struct registry_strategy *b)
{
    if (strcmp(a->name, b->name) != 0 || a->ntags != b->ntags || a->nrevisions != b->nrevisions)
        return false;
    for (size_t i = 0; i < a->ntags; i++) {
        if (strcmp(a->tags[i].tag, b->tags[i].tag) != 0 ||
            strcmp(a->tags[i].hex, b->tags[i].hex) != 0)
            return false;
    }
    for (size_t i = 0; i < a->nrevisions; i++) {
        if (!same_revision(&a->revisions[i], &b->revisions[i]))
            return false;
    }
    return true;
}

void registry__rel_path(const char *name, const char *hex, char out[REGISTRY__REL_PATH_MAX])
{
    snprintf(out, REGISTRY__REL_PATH_MAX, "%s/%s/%s.js", name, hex, name);
}
