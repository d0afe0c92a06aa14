/*
 * Snapshots: their life cycle, lookups, selector resolution and the
 * registry.json document. Everything here reads an immutable snapshot, so it
 * takes no locks.
 */
#include "registry/registry_internal.h"

#include "core/jsonutil.h"
#include "core/sorted.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ----------------------------------------------------------- life cycle */

struct registry *registry__new(size_t capacity)
{
    struct registry *reg = calloc(1, sizeof *reg);
    if (!reg)
        return NULL;
    reg->strategies = calloc(capacity ? capacity : 1, sizeof *reg->strategies);
    if (!reg->strategies) {
        free(reg);
        return NULL;
    }
    atomic_init(&reg->refs, 1);
    return reg;
}

void registry__append(struct registry *reg, struct registry_strategy *st)
{
    reg->strategies[reg->nstrategies++] = st;
}

void registry_retain(struct registry *reg)
{
    if (reg)
        atomic_fetch_add_explicit(&reg->refs, 1, memory_order_relaxed);
}

void registry_release(struct registry *reg)
{
    if (!reg || atomic_fetch_sub_explicit(&reg->refs, 1, memory_order_acq_rel) != 1)
        return;
    for (size_t i = 0; i < reg->nstrategies; i++)
        registry__strategy_release(reg->strategies[i]);
    free(reg->strategies);
    free(reg);
}

static const char *strategy_name_at(const void *reg, size_t i)
{
    return ((const struct registry *)reg)->strategies[i]->name;
}

/* Binary search over the sorted strategies: index of name or its slot. */
static size_t strategy_slot(const struct registry *reg, const char *name, bool *found)
{
    return sorted_find(reg, reg->nstrategies, strategy_name_at, name, found);
}

struct registry *registry__with(const struct registry *base, const char *name,
                                struct registry_strategy *st)
{
    bool found;
    size_t at = strategy_slot(base, name, &found);
    struct registry *reg = registry__new(base->nstrategies + 1);
    if (!reg) {
        registry__strategy_release(st);
        return NULL;
    }
    for (size_t i = 0; i < base->nstrategies; i++) {
        if (i == at && st)
            registry__append(reg, st);
        if (i == at && found)
            continue;
        registry__strategy_retain(base->strategies[i]);
        registry__append(reg, base->strategies[i]);
    }
    if (at == base->nstrategies && st)
        registry__append(reg, st);
    reg->generation = base->generation;
    return reg;
}

/* -------------------------------------------------------------- lookups */

const struct registry_strategy *registry_find_strategy(const struct registry *reg, const char *name)
{
    if (!reg || !name)
        return NULL;
    bool found;
    size_t at = strategy_slot(reg, name, &found);
    return found ? reg->strategies[at] : NULL;
}

const struct registry_revision *registry_find_revision(const struct registry_strategy *st,
                                                       const char *hex)
{
    if (!st || !hex || strlen(hex) != HASH_HEX_LEN)
        return NULL;
    long at = registry__revision_index(st, hex);
    return at < 0 ? NULL : &st->revisions[at];
}

static const struct registry_tag *find_tag(const struct registry_strategy *st, const char *tag)
{
    size_t lo = 0, hi = st->ntags;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(st->tags[mid].tag, tag);
        if (cmp == 0)
            return &st->tags[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const char *registry_tag_target(const struct registry_strategy *st, const char *tag)
{
    if (!st || !tag)
        return NULL;
    const struct registry_tag *t = find_tag(st, tag);
    return t ? t->hex : NULL;
}

const struct registry_revision *registry_latest(const struct registry_strategy *st)
{
    return registry_find_revision(st, registry_tag_target(st, REGISTRY_LATEST));
}

json_t *registry_tags_of(const struct registry_strategy *st, const char *hex)
{
    json_t *tags = json_array();
    if (!tags || !st || !hex)
        return tags;
    for (size_t i = 0; i < st->ntags; i++) {
        if (strcmp(st->tags[i].hex, hex) == 0 &&
            json_array_append_new(tags, json_string(st->tags[i].tag)) != 0) {
            json_decref(tags);
            return NULL;
        }
    }
    return tags;
}

/* ----------------------------------------------------------- resolution */

static void spell_candidate(const struct registry_strategy *st, const char *hex, char *out,
                            size_t size)
{
    snprintf(out, size, "%s@" HASH_PREFIX "%s", st->name, hex);
}

/* The last step of every resolution: an invalid revision is refused with
 * its reason, so no caller can run bytes that do not match their name. */
static int accept(const struct registry_strategy *st, const struct registry_revision *rev,
                  const char *tag, struct registry_resolution *out, struct err *err)
{
    if (rev->invalid) {
        char spelled[NAMES_STRATEGY_MAX + HASH_SPELLED_LEN + 2];
        spell_candidate(st, rev->hex, spelled, sizeof spelled);
        const char *reason = rev->invalid_reason ? rev->invalid_reason : "unknown reason";
        err_set(err, ERR_CONFLICT, "revision %s is invalid and cannot be used: %s", spelled,
                reason);
        err_add_detail(err, "strategy", json_string(st->name));
        err_add_detail(err, "hash", json_sprintf(HASH_PREFIX "%s", rev->hex));
        err_add_detail(err, "reason", jsonutil_string_lossy(reason, strlen(reason)));
        return -1;
    }
    out->strategy = st;
    out->revision = rev;
    out->tag = tag;
    return 0;
}

static bool hex_matches(const struct registry_revision *rev, const struct selector *sel)
{
    return memcmp(rev->hex, sel->hex, sel->hex_len) == 0;
}

static void ambiguous(const struct registry *reg, const struct registry_strategy *only,
                      const struct selector *sel, size_t count, struct err *err)
{
    json_t *candidates = json_array();
    for (size_t s = 0; s < reg->nstrategies; s++) {
        const struct registry_strategy *st = reg->strategies[s];
        if (only && st != only)
            continue;
        for (size_t r = 0; r < st->nrevisions; r++) {
            if (!hex_matches(&st->revisions[r], sel))
                continue;
            char spelled[NAMES_STRATEGY_MAX + HASH_SPELLED_LEN + 2];
            spell_candidate(st, st->revisions[r].hex, spelled, sizeof spelled);
            json_array_append_new(candidates, json_string(spelled));
        }
    }
    err_set(err, ERR_CONFLICT, "hash prefix %s matches %zu revisions; use more digits", sel->hex,
            count);
    err_add_detail(err, "candidates", candidates);
}

/* Looks for sel->hex among the revisions of `only` (or of every strategy). */
static int resolve_hash(const struct registry *reg, const struct registry_strategy *only,
                        const struct selector *sel, struct registry_resolution *out,
                        struct err *err)
{
    const struct registry_strategy *hit_st = NULL;
    const struct registry_revision *hit = NULL;
    size_t count = 0;
    for (size_t s = 0; s < reg->nstrategies; s++) {
        const struct registry_strategy *st = reg->strategies[s];
        if (only && st != only)
            continue;
        for (size_t r = 0; r < st->nrevisions; r++) {
            if (hex_matches(&st->revisions[r], sel) && count++ == 0) {
                hit_st = st;
                hit = &st->revisions[r];
            }
        }
    }
    if (count == 0) {
        if (only)
            err_set(err, ERR_NOT_FOUND, "strategy '%s' has no revision " HASH_PREFIX "%s",
                    only->name, sel->hex);
        else
            err_set(err, ERR_NOT_FOUND, "no revision matches " HASH_PREFIX "%s", sel->hex);
        return -1;
    }
    if (count > 1) {
        ambiguous(reg, only, sel, count, err);
        return -1;
    }
    return accept(hit_st, hit, NULL, out, err);
}

static int resolve_tag(const struct registry_strategy *st, const char *tag_name,
                       struct registry_resolution *out, struct err *err)
{
    const struct registry_tag *tag = find_tag(st, tag_name);
    const struct registry_revision *rev = tag ? registry_find_revision(st, tag->hex) : NULL;
    if (!rev) {
        err_set(err, ERR_NOT_FOUND, "strategy '%s' has no tag '%s'", st->name, tag_name);
        return -1;
    }
    return accept(st, rev, tag->tag, out, err);
}

int registry_resolve(const struct registry *reg, const struct selector *sel,
                     struct registry_resolution *out, struct err *err)
{
    memset(out, 0, sizeof *out);
    if (sel->kind == SELECTOR_HASH && !sel->name[0])
        return resolve_hash(reg, NULL, sel, out, err);
    const struct registry_strategy *st = registry_find_strategy(reg, sel->name);
    if (!st && sel->kind == SELECTOR_LATEST && sel->may_be_prefix) {
        int rc = resolve_hash(reg, NULL, sel, out, err);
        if (rc != 0 && err && err->kind == ERR_NOT_FOUND)
            err_set(err, ERR_NOT_FOUND,
                    "no strategy is called '%s' and no revision hash starts "
                    "with it",
                    sel->name);
        return rc;
    }
    if (!st) {
        err_set(err, ERR_NOT_FOUND, "unknown strategy '%s'", sel->name);
        return -1;
    }
    if (sel->kind == SELECTOR_HASH)
        return resolve_hash(reg, st, sel, out, err);
    return resolve_tag(st, sel->kind == SELECTOR_LATEST ? REGISTRY_LATEST : sel->tag, out, err);
}

int registry_resolve_text(const struct registry *reg, const char *selector_text,
                          struct registry_resolution *out, struct err *err)
{
    struct selector sel;
    if (selector_parse(selector_text, &sel, err) != 0) {
        memset(out, 0, sizeof *out);
        return -1;
    }
    return registry_resolve(reg, &sel, out, err);
}

/* --------------------------------------------------------- registry.json */

static json_t *revision_to_json(const struct registry_revision *rev)
{
    json_t *entry = json_object();
    if (!entry || json_object_set_new(entry, "tag", json_string(rev->tag)) != 0 ||
        json_object_set_new(entry, "path", json_string(rev->path)) != 0) {
        json_decref(entry);
        return NULL;
    }
    return entry;
}

static json_t *strategy_to_json(const struct registry_strategy *st)
{
    json_t *doc = json_object();
    json_t *tags = json_object();
    json_t *hashes = json_object();
    if (!doc || !tags || !hashes) {
        json_decref(doc);
        json_decref(tags);
        json_decref(hashes);
        return NULL;
    }
    if (json_object_set_new(doc, "tags", tags) != 0) {
        json_decref(hashes);
        goto fail;
    }
    if (json_object_set_new(doc, "hashes", hashes) != 0)
        goto fail;
    char spelled[HASH_SPELLED_LEN + 1];
    for (size_t i = 0; i < st->ntags; i++) {
        hash_spell(st->tags[i].hex, spelled);
        if (json_object_set_new(tags, st->tags[i].tag, json_string(spelled)) != 0)
            goto fail;
    }
    for (size_t i = 0; i < st->nrevisions; i++) {
        hash_spell(st->revisions[i].hex, spelled);
        if (json_object_set_new(hashes, spelled, revision_to_json(&st->revisions[i])) != 0)
            goto fail;
    }
    return doc;
fail:
    json_decref(doc);
    return NULL;
}

json_t *registry_to_json(const struct registry *reg)
{
    json_t *doc = json_object();
    if (!doc)
        return NULL;
    for (size_t i = 0; i < reg->nstrategies; i++) {
        const struct registry_strategy *st = reg->strategies[i];
        if (json_object_set_new(doc, st->name, strategy_to_json(st)) != 0) {
            json_decref(doc);
            return NULL;
        }
    }
    return doc;
}

/* `"name": {...}` on one line: the bytes json_dumps writes for
 * strategy_to_json with JSON_INDENT(0) | JSON_PRESERVE_ORDER, without
 * building the tree (a strategy's line is written on every change to it).
 * Strategy names need no escaping (their charset is [a-z0-9_-]). */
static char *strategy_text(const struct registry_strategy *st, size_t *len)
{
    struct strbuf sb = STRBUF_INIT;
    char spelled[HASH_SPELLED_LEN + 1];
    strbuf_printf(&sb, "\"%s\": {\"tags\": {", st->name);
    for (size_t i = 0; i < st->ntags; i++) {
        hash_spell(st->tags[i].hex, spelled);
        if (i)
            strbuf_puts(&sb, ", ");
        jsonutil_put_string(&sb, st->tags[i].tag);
        strbuf_printf(&sb, ": \"%s\"", spelled);
    }
    strbuf_puts(&sb, "}, \"hashes\": {");
    bool complete = true;
    for (size_t i = 0; i < st->nrevisions; i++) {
        const struct registry_revision *rev = &st->revisions[i];
        complete = complete && rev->tag && rev->path;
        if (!complete)
            break;
        hash_spell(rev->hex, spelled);
        strbuf_printf(&sb, "%s\"%s\": {\"tag\": ", i ? ", " : "", spelled);
        jsonutil_put_string(&sb, rev->tag);
        strbuf_puts(&sb, ", \"path\": ");
        jsonutil_put_string(&sb, rev->path);
        strbuf_putc(&sb, '}');
    }
    strbuf_puts(&sb, "}}");
    if (!complete || strbuf_failed(&sb)) {
        strbuf_release(&sb);
        return NULL;
    }
    return strbuf_detach(&sb, len);
}

/* The width a line of len bytes gets in the file: a quarter more, so that
 * a few more revisions fit before the lines after it have to move, and
 * twice as much for a line that outgrew its room (a strategy that is
 * being worked on). */
static size_t line_room(size_t len, bool outgrown)
{
    size_t slack = outgrown ? len : len / 4;
    return (len + slack + 256 + 63) & ~(size_t)63;
}

/* One line of the document at out: indent, the strategy, its comma, spaces
 * up to its room (0: none) and the newline. Returns its length. */
static size_t put_line(char *out, const char *text, size_t len, size_t room, bool comma)
{
    size_t at = 0;
    out[at++] = ' ';
    out[at++] = ' ';
    memcpy(out + at, text, len);
    at += len;
    if (comma)
        out[at++] = ',';
    size_t end = 2 + (room > len + comma ? room : len + comma);
    memset(out + at, ' ', end - at);
    out[end] = '\n';
    return end + 1;
}

/* Joins the strategies' lines into one document, each padded with spaces
 * after its comma to rooms[i] (0: no padding). texts[i] may be NULL when
 * lens says how long the cached st->text is. */
static char *join_lines(const struct registry *reg, char *const *texts, const size_t *lens,
                        const size_t *rooms, struct registry_text_buffer *buf, size_t *len)
{
    size_t total = 4; /* "{\n" and "}\n" */
    for (size_t i = 0; i < reg->nstrategies; i++)
        total += (rooms[i] > lens[i] ? rooms[i] : lens[i]) + 4; /* indent, comma, newline */
    if (!buf->data || buf->cap < total + 1) {
        char *grown = realloc(buf->data, total + total / 8 + 1);
        if (!grown)
            return NULL;
        buf->data = grown;
        buf->cap = total + total / 8 + 1;
    }
    char *out = buf->data;
    size_t at = 0;
    out[at++] = '{';
    if (reg->nstrategies)
        out[at++] = '\n';
    for (size_t i = 0; i < reg->nstrategies; i++) {
        const char *text = texts[i] ? texts[i] : reg->strategies[i]->text;
        at += put_line(out + at, text, lens[i], rooms[i], i + 1 < reg->nstrategies);
    }
    out[at++] = '}';
    out[at++] = '\n';
    out[at] = '\0';
    *len = at;
    return out;
}

/* Keeps st's serialised line (taking text), growing its room when the
 * line no longer fits it. */
static void keep_line(struct registry_strategy *st, char *text, size_t len)
{
    st->text = text;
    st->text_len = len;
    if (st->text_room < len + 1)
        st->text_room = line_room(len, st->text_room != 0);
}

/* The document, serialising each strategy that has no cached line. With
 * `keep` (the catalogue's own file) those lines are kept in the strategies
 * and padded to their room; without it nothing in reg changes and nothing
 * is padded. */
static char *registry_text(struct registry *reg, bool keep, struct registry_text_buffer *buf,
                           size_t *len)
{
    size_t n = reg->nstrategies;
    char **texts = calloc(n ? n : 1, sizeof *texts);
    size_t *lens = calloc(n ? n : 1, sizeof *lens);
    size_t *rooms = calloc(n ? n : 1, sizeof *rooms);
    char *out = NULL;
    if (!texts || !lens || !rooms)
        goto done;
    for (size_t i = 0; i < n; i++) {
        struct registry_strategy *st = reg->strategies[i];
        if (keep && st->text) {
            lens[i] = st->text_len;
            rooms[i] = st->text_room;
            continue;
        }
        texts[i] = strategy_text(st, &lens[i]);
        if (!texts[i])
            goto done;
        if (keep) {
            keep_line(st, texts[i], lens[i]);
            rooms[i] = st->text_room;
            texts[i] = NULL;
        }
    }
    out = join_lines(reg, texts, lens, rooms, buf, len);
done:
    for (size_t i = 0; texts && i < n; i++)
        free(texts[i]);
    free(texts);
    free(lens);
    free(rooms);
    return out;
}

void registry__learn_rooms(struct registry *reg, const char *text, size_t len)
{
    const char *end = text + len;
    for (const char *line = text; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        if (!nl)
            break;
        size_t width = (size_t)(nl - line);
        const char *name = line + 3;
        const char *quote =
            width > 4 && memcmp(line, "  \"", 3) == 0 ? memchr(name, '"', width - 3) : NULL;
        size_t name_len = quote ? (size_t)(quote - name) : 0;
        if (quote && name_len <= NAMES_STRATEGY_MAX) {
            char key[NAMES_STRATEGY_MAX + 1];
            memcpy(key, name, name_len);
            key[name_len] = '\0';
            struct registry_strategy *st =
                (struct registry_strategy *)registry_find_strategy(reg, key);
            if (st && !st->text)
                st->text_room = width - 2;
        }
        line = nl + 1;
    }
}

char *registry_to_text(const struct registry *reg, size_t *len)
{
    size_t ignored;
    struct registry_text_buffer buf = {0};
    /* With keep unset nothing in reg is written. */
    char *text = registry_text((struct registry *)reg, false, &buf, len ? len : &ignored);
    if (!text)
        free(buf.data);
    return text;
}

/* Whether reg's lines sit where those of `of` (whose text the buffer
 * holds) do: the same strategies in the same order, each replaced one with
 * the room of the one it replaces. */
static bool same_places(const struct registry *of, const struct registry *reg)
{
    if (of->nstrategies != reg->nstrategies)
        return false;
    for (size_t i = 0; i < reg->nstrategies; i++) {
        const struct registry_strategy *was = of->strategies[i], *now = reg->strategies[i];
        if (was != now && (was->text_room == 0 || now->text_room != was->text_room ||
                           strcmp(was->name, now->name) != 0))
            return false;
    }
    return true;
}

/* Serialises the replaced strategies; false when one no longer fits its
 * room (it has a larger one now) or memory runs out. */
static bool lines_fit(struct registry *reg, const struct registry *of)
{
    for (size_t i = 0; i < reg->nstrategies; i++) {
        struct registry_strategy *st = reg->strategies[i];
        if (st == of->strategies[i] || st->text)
            continue;
        size_t n = 0;
        char *text = strategy_text(st, &n);
        if (!text)
            return false;
        keep_line(st, text, n);
        if (st->text_room != of->strategies[i]->text_room)
            return false;
    }
    return true;
}

static void note_change(struct registry_text_buffer *buf, size_t at, size_t len)
{
    if (buf->whole)
        return; /* ranges that touch are joined by the writer's caller */
    if (buf->nchanged == buf->changed_cap) {
        size_t cap = buf->changed_cap ? buf->changed_cap * 2 : 16;
        struct fsutil_range *grown = realloc(buf->changed, cap * sizeof *grown);
        if (!grown) {
            buf->whole = true; /* an account we cannot keep: everything may differ */
            return;
        }
        buf->changed = grown;
        buf->changed_cap = cap;
    }
    buf->changed[buf->nchanged++] = (struct fsutil_range){at, len};
}

/* Rewrites, in place, the lines of the strategies that differ from `of`. */
static void update_lines(struct registry *reg, struct registry_text_buffer *buf)
{
    size_t at = reg->nstrategies ? 2 : 1; /* after "{\n" */
    for (size_t i = 0; i < reg->nstrategies; i++) {
        const struct registry_strategy *st = reg->strategies[i];
        size_t width = 3 + st->text_room;
        if (st != buf->of->strategies[i]) {
            put_line(buf->data + at, st->text, st->text_len, st->text_room,
                     i + 1 < reg->nstrategies);
            note_change(buf, at, width);
        }
        at += width;
    }
}

char *registry__text_cached(struct registry *reg, struct registry_text_buffer *buf, size_t *len)
{
    if (buf->of && buf->data && same_places(buf->of, reg) && lines_fit(reg, buf->of)) {
        update_lines(reg, buf);
    } else {
        registry_release(buf->of);
        buf->of = NULL;
        if (!registry_text(reg, true, buf, &buf->len))
            return NULL;
        buf->whole = true;
    }
    registry_retain(reg);
    registry_release(buf->of);
    buf->of = reg;
    *len = buf->len;
    return buf->data;
}

void registry__text_forget_changes(struct registry_text_buffer *buf)
{
    buf->nchanged = 0;
    buf->whole = false;
}

void registry__text_buffer_free(struct registry_text_buffer *buf)
{
    registry_release(buf->of);
    free(buf->changed);
    free(buf->data);
    *buf = (struct registry_text_buffer){0};
}
