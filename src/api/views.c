#include "api/views.h"

#include "core/hash.h"
#include "core/jsonutil.h"

#include <pthread.h>
#include <stdatomic.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

json_t *views_hash(const char *hex)
{
    char spelled[HASH_SPELLED_LEN + 1];
    hash_spell(hex, spelled);
    return json_string(spelled);
}

json_t *views_strategy_metadata(const struct registry_strategy *st,
                                const struct registry_revision *rev)
{
    if (rev && rev->metadata)
        return json_deep_copy(rev->metadata);
    return json_pack("{s:s, s:s, s:s, s:[], s:[]}", "name", st->name, "displayName", st->name,
                     "description", "", "config", "events");
}

/* ------------------------------------------------------------ usage index */

struct views_usage {
    struct runtime *rt;
    struct runtime_usage_count *live; /* revisions running now, sorted */
    size_t n;
    uint64_t generation;
};

struct views_usage *views_usage_new(struct runtime *rt)
{
    struct views_usage *u = calloc(1, sizeof *u);
    if (!u)
        return NULL;
    u->rt = rt;
    if (rt && runtime_usage_running(rt, &u->live, &u->n, &u->generation) != 0) {
        free(u);
        return NULL;
    }
    return u;
}

uint64_t views_usage_generation(const struct views_usage *u)
{
    return u ? u->generation : 0;
}

bool views_usage_any(const struct views_usage *u)
{
    return u && u->n > 0;
}

void views_usage_free(struct views_usage *u)
{
    if (!u)
        return;
    free(u->live);
    free(u);
}

int views_usage_running(const struct views_usage *u, const char *strategy, const char *hex)
{
    if (!u)
        return 0;
    size_t lo = 0, hi = u->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(u->live[mid].strategy, strategy);
        if (c == 0)
            c = strcmp(u->live[mid].hex, hex);
        if (c == 0)
            return u->live[mid].running;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* The full ModuleRevisionUsage of a revision the index saw running, asked
 * of the runtime now (its ids come from the runtime's pin index); NULL when
 * it stopped in between, as if the index had been taken a moment later. */
static json_t *running_doc(const struct views_usage *u, const char *strategy, const char *hex)
{
    if (!u || !u->rt || views_usage_running(u, strategy, hex) == 0)
        return NULL;
    json_t *doc = runtime_usage_json(u->rt, strategy, hex);
    if (doc && json_integer_value(json_object_get(doc, "count")) > 0)
        return doc;
    json_decref(doc);
    return NULL;
}

/* ------------------------------------------------------------ modules */

static bool revision_passes(const struct registry_strategy *st, const struct registry_revision *rev,
                            const struct views_usage *usage,
                            const struct views_module_filter *filter)
{
    if (filter && filter->hex_prefix &&
        strncmp(rev->hex, filter->hex_prefix, strlen(filter->hex_prefix)) != 0)
        return false;
    if (filter && filter->running_only && views_usage_running(usage, st->name, rev->hex) == 0)
        return false;
    return true;
}

bool views_module_passes(const struct registry_strategy *st, const struct views_usage *usage,
                         const struct views_module_filter *filter)
{
    for (size_t i = 0; i < st->nrevisions; i++) {
        if (revision_passes(st, &st->revisions[i], usage, filter))
            return true;
    }
    return false;
}

static json_t *revision_json(const struct registry_strategy *st,
                             const struct registry_revision *rev)
{
    json_t *tags = registry_tags_of(st, rev->hex);
    json_t *r = json_object();
    json_object_set_new(r, "hash", views_hash(rev->hex));
    json_object_set_new(r, "tag", json_string(rev->tag ? rev->tag : ""));
    json_object_set_new(r, "path", json_string(rev->path ? rev->path : ""));
    json_object_set_new(r, "size", json_integer((json_int_t)rev->size));
    /* A revision no tag points at can only be reached by hash: retired. */
    json_object_set_new(r, "retired", json_boolean(json_array_size(tags) == 0));
    json_object_set_new(r, "invalid", json_boolean(rev->invalid));
    if (rev->invalid_reason)
        json_object_set_new(r, "invalidReason", json_string(rev->invalid_reason));
    json_object_set_new(r, "tags", tags);
    return r;
}

/* The members before "revisions": name ... tagAliases. */
static json_t *module_head_json(const struct registry_strategy *st,
                                const struct registry_revision *selected)
{
    json_t *tags = json_array();
    json_t *aliases = json_object();
    for (size_t i = 0; i < st->ntags; i++) {
        json_array_append_new(tags, json_string(st->tags[i].tag));
        json_object_set_new(aliases, st->tags[i].tag, views_hash(st->tags[i].hex));
    }
    char file[NAMES_STRATEGY_MAX + 4];
    snprintf(file, sizeof file, "%s.js", st->name);
    json_t *m = json_object();
    json_object_set_new(m, "name", json_string(st->name));
    json_object_set_new(m, "file", json_string(file));
    json_object_set_new(m, "path", json_string(selected && selected->path ? selected->path : ""));
    json_object_set_new(m, "selectedRevisionHash",
                        selected ? views_hash(selected->hex) : json_string(""));
    json_object_set_new(m, "selectedRevisionTag",
                        json_string(selected && selected->tag ? selected->tag : ""));
    json_object_set_new(m, "tags", tags);
    json_object_set_new(m, "tagAliases", aliases);
    return m;
}

/* The members between "revisions" and "running": size, metadata. */
static void module_add_tail(json_t *m, const struct registry_strategy *st,
                            const struct registry_revision *selected)
{
    json_object_set_new(m, "size", json_integer(selected ? (json_int_t)selected->size : 0));
    json_object_set_new(m, "metadata", views_strategy_metadata(st, selected));
}

json_t *views_module_summary(const struct registry_strategy *st,
                             const struct registry_revision *selected,
                             const struct views_usage *usage,
                             const struct views_module_filter *filter)
{
    if (!selected)
        selected = registry_latest(st);
    json_t *revisions = json_array();
    json_t *running = json_array();
    for (size_t i = 0; i < st->nrevisions; i++) {
        const struct registry_revision *rev = &st->revisions[i];
        if (!revision_passes(st, rev, usage, filter))
            continue;
        json_array_append_new(revisions, revision_json(st, rev));
        json_t *doc = running_doc(usage, st->name, rev->hex);
        if (doc)
            json_array_append_new(running, doc);
    }
    if (json_array_size(revisions) == 0) {
        json_decref(revisions);
        json_decref(running);
        return NULL;
    }
    json_t *m = module_head_json(st, selected);
    json_object_set_new(m, "revisions", revisions);
    module_add_tail(m, st, selected);
    json_object_set_new(m, "running", running);
    return m;
}

/* ------------------------------------------------------------ module text */

/* One module's summary (latest revision selected) as JSON text, cut where
 * the request decides: which revisions are listed and which usage is
 * running. head is `{"name":...,"tagAliases":{...},"revisions":[`, revs[i]
 * the text of revision i, tail `],"size":...,"metadata":{...},"running":[`;
 * the module is head, the listed revs joined by commas, tail, the running
 * usage documents, and `]}`. Built once per snapshot generation: the
 * snapshot is immutable, so the text is too. */
struct module_text {
    atomic_int refs; /* generations whose strategy is the same object share it */
    char *head, *tail;
    size_t head_len, tail_len;
    struct piece {
        char *text;
        size_t len;
    } * revs;
    size_t nrevs;
};

static void module_text_free(struct module_text *t)
{
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    free(t->head);
    free(t->tail);
    for (size_t i = 0; t->revs && i < t->nrevs; i++)
        free(t->revs[i].text);
    free(t->revs);
    free(t);
}

/* The text of obj without its closing brace, then suffix. */
static char *open_object_text(json_t *obj, const char *suffix, size_t *len)
{
    size_t n = 0;
    char *text = obj ? jsonutil_dump(obj, &n) : NULL;
    json_decref(obj);
    if (!text || n < 2)
        goto fail;
    size_t extra = strlen(suffix);
    char *grown = realloc(text, n + extra);
    if (!grown)
        goto fail;
    memcpy(grown + n - 1, suffix, extra + 1);
    *len = n - 1 + extra;
    return grown;
fail:
    free(text);
    return NULL;
}

static char *tail_text(const struct registry_strategy *st, const struct registry_revision *selected,
                       size_t *len)
{
    json_t *obj = json_object();
    if (obj)
        module_add_tail(obj, st, selected);
    size_t n = 0;
    char *inner = open_object_text(obj, ",\"running\":[", &n);
    if (!inner)
        return NULL;
    /* `{"size":...` becomes `],"size":...` */
    char *text = malloc(n + 2);
    if (text) {
        text[0] = ']';
        text[1] = ',';
        memcpy(text + 2, inner + 1, n); /* with its NUL */
        *len = n + 1;
    }
    free(inner);
    return text;
}

static struct module_text *module_text_build(const struct registry_strategy *st)
{
    const struct registry_revision *selected = registry_latest(st);
    struct module_text *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    atomic_init(&t->refs, 1);
    t->revs = calloc(st->nrevisions ? st->nrevisions : 1, sizeof *t->revs);
    t->head = open_object_text(module_head_json(st, selected), ",\"revisions\":[", &t->head_len);
    t->tail = tail_text(st, selected, &t->tail_len);
    bool ok = t->revs && t->head && t->tail;
    for (size_t i = 0; ok && i < st->nrevisions; i++) {
        json_t *r = revision_json(st, &st->revisions[i]);
        t->revs[i].text = r ? jsonutil_dump(r, &t->revs[i].len) : NULL;
        json_decref(r);
        ok = t->revs[i].text != NULL;
        t->nrevs = i + 1;
    }
    if (!ok) {
        module_text_free(t);
        return NULL;
    }
    return t;
}

/* The texts of one snapshot generation, one slot per strategy (in the
 * snapshot's order), each filled on first use by whichever thread gets
 * there first. */
struct views_texts {
    atomic_int refs;
    struct registry *reg; /* retained: keeps its strategies alive for carry_over */
    uint64_t generation;
    size_t n;
    struct module_text *_Atomic *slots;
};

struct views_cache {
    pthread_mutex_t lock;
    struct views_texts *current; /* the newest generation seen */
};

static void texts_release(struct views_texts *t)
{
    if (!t || atomic_fetch_sub(&t->refs, 1) != 1)
        return;
    for (size_t i = 0; i < t->n; i++)
        module_text_free(atomic_load(&t->slots[i]));
    free(t->slots);
    registry_release(t->reg);
    free(t);
}

/* A strategy a change left alone is the same object in the next snapshot
 * (snapshots share unchanged strategies; both snapshots are retained here,
 * so equal pointers are the same strategy): its text moves to the new
 * generation instead of being rendered again. Both lists are sorted by
 * name. */
static void carry_over(struct views_texts *to, const struct views_texts *from)
{
    size_t j = 0;
    for (size_t i = 0; i < to->n && j < from->n; i++) {
        const struct registry_strategy *st = to->reg->strategies[i];
        while (j < from->n && strcmp(from->reg->strategies[j]->name, st->name) < 0)
            j++;
        if (j == from->n || from->reg->strategies[j] != st)
            continue;
        struct module_text *m = atomic_load(&from->slots[j]);
        if (m) {
            atomic_fetch_add(&m->refs, 1);
            atomic_store(&to->slots[i], m);
        }
    }
}

static struct views_texts *texts_new(struct registry *reg)
{
    struct views_texts *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->slots = calloc(reg->nstrategies ? reg->nstrategies : 1, sizeof *t->slots);
    if (!t->slots) {
        free(t);
        return NULL;
    }
    atomic_init(&t->refs, 1);
    registry_retain(reg);
    t->reg = reg;
    t->generation = reg->generation;
    t->n = reg->nstrategies;
    for (size_t i = 0; i < t->n; i++)
        atomic_init(&t->slots[i], NULL);
    return t;
}

struct views_cache *views_cache_new(void)
{
    struct views_cache *c = calloc(1, sizeof *c);
    if (c)
        pthread_mutex_init(&c->lock, NULL);
    return c;
}

void views_cache_free(struct views_cache *c)
{
    if (!c)
        return;
    texts_release(c->current);
    pthread_mutex_destroy(&c->lock);
    free(c);
}

struct views_texts *views_texts_get(struct views_cache *c, struct registry *reg)
{
    pthread_mutex_lock(&c->lock);
    struct views_texts *t = c->current;
    if (t && t->generation == reg->generation) {
        atomic_fetch_add(&t->refs, 1);
    } else if ((t = texts_new(reg)) != NULL) {
        /* an older snapshot (a request that started before a change) gets
         * texts of its own rather than evicting the newer generation */
        if (!c->current || c->current->generation < reg->generation) {
            if (c->current)
                carry_over(t, c->current);
            texts_release(c->current);
            c->current = t;
            atomic_fetch_add(&t->refs, 1);
        }
    }
    pthread_mutex_unlock(&c->lock);
    return t;
}

void views_texts_put(struct views_texts *t)
{
    texts_release(t);
}

static const struct module_text *texts_slot(struct views_texts *t, const struct registry *reg,
                                            size_t index)
{
    struct module_text *m = atomic_load(&t->slots[index]);
    if (m)
        return m;
    struct module_text *built = module_text_build(reg->strategies[index]);
    if (!built)
        return NULL;
    struct module_text *expected = NULL;
    if (atomic_compare_exchange_strong(&t->slots[index], &expected, built))
        return built;
    module_text_free(built); /* another thread filled it first */
    return expected;
}

/* The usage documents of the listed revisions that run, written by the
 * runtime straight into the page; one that stopped since the index was
 * taken is left out, as in running_doc(). */
static void append_running(struct strbuf *sb, const struct registry_strategy *st,
                           const struct views_usage *usage,
                           const struct views_module_filter *filter)
{
    bool first = true;
    for (size_t i = 0; usage && usage->rt && usage->n && i < st->nrevisions; i++) {
        const struct registry_revision *rev = &st->revisions[i];
        if (!revision_passes(st, rev, usage, filter) ||
            views_usage_running(usage, st->name, rev->hex) == 0)
            continue;
        size_t mark = sb->len;
        if (!first)
            strbuf_putc(sb, ',');
        long long count = runtime_usage_text(usage->rt, st->name, rev->hex, sb);
        if (count < 0)
            return;
        if (count == 0) {
            sb->len = mark;
            sb->data[mark] = '\0';
            continue;
        }
        first = false;
    }
}

size_t views_module_text_size(struct views_texts *t, const struct registry *reg, size_t index)
{
    const struct module_text *m =
        t && t->generation == reg->generation && index < t->n ? texts_slot(t, reg, index) : NULL;
    size_t n = m ? m->head_len + m->tail_len + 2 : 0;
    for (size_t i = 0; m && i < m->nrevs; i++)
        n += m->revs[i].len + 1;
    return n;
}

int views_module_text(struct views_texts *t, const struct registry *reg, size_t index,
                      const struct views_usage *usage, const struct views_module_filter *filter,
                      struct strbuf *sb)
{
    const struct registry_strategy *st = reg->strategies[index];
    const struct module_text *m =
        t && t->generation == reg->generation && index < t->n ? texts_slot(t, reg, index) : NULL;
    if (!m)
        return -1;
    strbuf_append(sb, m->head, m->head_len);
    bool first = true;
    for (size_t i = 0; i < st->nrevisions; i++) {
        if (!revision_passes(st, &st->revisions[i], usage, filter))
            continue;
        if (!first)
            strbuf_putc(sb, ',');
        strbuf_append(sb, m->revs[i].text, m->revs[i].len);
        first = false;
    }
    strbuf_append(sb, m->tail, m->tail_len);
    append_running(sb, st, usage, filter);
    strbuf_puts(sb, "]}");
    return strbuf_failed(sb) ? -1 : 0;
}
