/*
 * usage: which revisions carry traffic. Per {strategy, hash}: the running
 * instances (count and sorted ids), firstSeen and lastSeen. Timestamps are
 * kept in memory (loaded from the store at start, updated on every start
 * and stop, which also write them through to the store); lastSeen is "now"
 * while the revision runs. The entries are an array sorted by (strategy,
 * hash): lookups are binary searches, and a listing of every entry takes one
 * pass over the instances whatever the size of the fleet.
 */
#include "runtime/internal.h"

#include "core/clock.h"
#include "core/jsonutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* rt->usage is kept sorted by (strategy, hex), so a lookup is a binary
 * search and a new entry an insertion. Entries move when one is inserted:
 * a pointer returned here is good until the next call that may create. */
static int cmp_key(const struct usage_entry *u, const char *strategy, const char *hex)
{
    int c = strcmp(u->strategy, strategy);
    return c ? c : strcmp(u->hex, hex);
}

/* The index of the first entry not ordered before (strategy, hex). */
static size_t lower_bound_locked(const struct runtime *rt, const char *strategy, const char *hex)
{
    size_t lo = 0, hi = rt->nusage;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (cmp_key(&rt->usage[mid], strategy, hex) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

struct usage_entry *usage_find_locked(struct runtime *rt, const char *strategy, const char *hex,
                                      bool create)
{
    size_t at = lower_bound_locked(rt, strategy, hex);
    if (at < rt->nusage && cmp_key(&rt->usage[at], strategy, hex) == 0)
        return &rt->usage[at];
    if (!create)
        return NULL;
    if (rt->nusage == rt->usage_cap) {
        size_t cap = rt->usage_cap ? rt->usage_cap * 2 : 16;
        struct usage_entry *grown = realloc(rt->usage, cap * sizeof *grown);
        if (!grown)
            return NULL;
        rt->usage = grown;
        rt->usage_cap = cap;
    }
    memmove(&rt->usage[at + 1], &rt->usage[at], (rt->nusage - at) * sizeof *rt->usage);
    rt->nusage++;
    struct usage_entry *u = &rt->usage[at];
    memset(u, 0, sizeof *u);
    snprintf(u->strategy, sizeof u->strategy, "%s", strategy);
    snprintf(u->hex, sizeof u->hex, "%s", hex);
    return u;
}

static json_t *time_or_null(int64_t ms)
{
    if (ms <= 0)
        return json_null();
    char text[40];
    clock_format_rfc3339(ms, text, sizeof text);
    return json_string(text);
}

/* ids NULL: the brief form embedded in instance documents, whose ids are
 * one request away (links.usage); listing them in every instance would
 * make a fleet listing grow with the square of the fleet. */
static json_t *usage_doc(const struct usage_entry *u, const char *strategy, const char *hex,
                         json_t *ids)
{
    char hash[HASH_SPELLED_LEN + 1];
    hash_spell(hex, hash);
    size_t count = ids ? json_array_size(ids) : u && u->running > 0 ? (size_t)u->running : 0;
    int64_t first = u ? u->first_ms : 0;
    int64_t last = count > 0 ? clock_wall_ms() : u ? u->last_ms : 0;
    if (count > 0 && first <= 0)
        first = last;
    return json_pack("{s:s, s:s, s:o, s:I, s:o, s:o, s:b}", "strategy", strategy, "hash", hash,
                     "instances", ids ? ids : json_null(), "count", (json_int_t)count, "firstSeen",
                     time_or_null(first), "lastSeen", time_or_null(last), "running", count > 0);
}

static void time_text(struct strbuf *sb, int64_t ms)
{
    if (ms <= 0) {
        strbuf_puts(sb, "null");
        return;
    }
    char text[40];
    clock_format_rfc3339(ms, text, sizeof text);
    jsonutil_put_string(sb, text);
}

void usage_facts_locked(struct runtime *rt, const char *strategy, const char *hex,
                        struct usage_facts *facts)
{
    const struct usage_entry *u = usage_find_locked(rt, strategy, hex, false);
    facts->count = u && u->running > 0 ? u->running : 0;
    facts->first_ms = u ? u->first_ms : 0;
    facts->last_ms = u ? u->last_ms : 0;
}

void usage_facts_text(const struct usage_facts *facts, const char *strategy, const char *hex,
                      const struct strbuf *ids, struct strbuf *sb)
{
    int64_t first = facts->first_ms;
    int64_t last = facts->count > 0 ? clock_wall_ms() : facts->last_ms;
    if (facts->count > 0 && first <= 0)
        first = last;
    strbuf_puts(sb, "{\"strategy\":");
    jsonutil_put_string(sb, strategy);
    strbuf_printf(sb, ",\"hash\":\"" HASH_PREFIX "%s\",\"instances\":", hex);
    if (ids)
        strbuf_append(sb, strbuf_cstr(ids), ids->len);
    else
        strbuf_puts(sb, "null");
    strbuf_printf(sb, ",\"count\":%lld", facts->count);
    strbuf_puts(sb, ",\"firstSeen\":");
    time_text(sb, first);
    strbuf_puts(sb, ",\"lastSeen\":");
    time_text(sb, last);
    strbuf_puts(sb, facts->count > 0 ? ",\"running\":true}" : ",\"running\":false}");
}

/* The full form's facts, with the running instances' ids as a JSON array
 * in *ids: the count is theirs. */
static void usage_full_facts_locked(struct runtime *rt, const char *strategy, const char *hex,
                                    struct usage_facts *facts, struct strbuf *ids)
{
    usage_facts_locked(rt, strategy, hex, facts);
    size_t first_pin = 0;
    size_t npins = pins_range_locked(rt, strategy, hex, &first_pin);
    facts->count = 0;
    /* the range is sorted by id, so the ids come out sorted */
    strbuf_putc(ids, '[');
    for (size_t i = first_pin; i < first_pin + npins; i++) {
        if (!rt->pins[i]->running)
            continue;
        if (facts->count++ > 0)
            strbuf_putc(ids, ',');
        jsonutil_put_string(ids, rt->pins[i]->id);
    }
    strbuf_putc(ids, ']');
}

long long runtime_usage_text(struct runtime *rt, const char *strategy, const char *hex,
                             struct strbuf *sb)
{
    struct usage_facts facts;
    struct strbuf ids = STRBUF_INIT;
    pthread_mutex_lock(&rt->lock);
    usage_full_facts_locked(rt, strategy, hex, &facts, &ids);
    pthread_mutex_unlock(&rt->lock);
    usage_facts_text(&facts, strategy, hex, &ids, sb);
    bool failed = strbuf_failed(&ids) || strbuf_failed(sb);
    strbuf_release(&ids);
    return failed ? -1 : facts.count;
}

json_t *usage_facts_json(const struct usage_facts *facts, const char *strategy, const char *hex)
{
    struct usage_entry u = {
        .first_ms = facts->first_ms, .last_ms = facts->last_ms, .running = (int)facts->count};
    return usage_doc(&u, strategy, hex, NULL);
}

json_t *usage_brief_json_locked(struct runtime *rt, const char *strategy, const char *hex)
{
    return usage_doc(usage_find_locked(rt, strategy, hex, false), strategy, hex, NULL);
}

json_t *usage_json_locked(struct runtime *rt, const char *strategy, const char *hex)
{
    json_t *ids = json_array();
    size_t first;
    size_t n = pins_range_locked(rt, strategy, hex, &first);
    /* the range is sorted by id, so the ids come out sorted */
    for (size_t i = first; ids && i < first + n; i++) {
        const struct instance *inst = rt->pins[i];
        if (inst->running)
            json_array_append_new(ids, json_string(inst->id));
    }
    return usage_doc(usage_find_locked(rt, strategy, hex, false), strategy, hex,
                     ids ? ids : json_array());
}

json_t *runtime_usage_json(struct runtime *rt, const char *strategy, const char *hex)
{
    pthread_mutex_lock(&rt->lock);
    json_t *doc = usage_json_locked(rt, strategy, hex);
    pthread_mutex_unlock(&rt->lock);
    return doc;
}

/* One pass over the instances fills every entry's ids (each found by
 * binary search); the table is sorted by id and the entries by (strategy,
 * hash), so ids and entries come out sorted. */
json_t *runtime_usage_all_json(struct runtime *rt)
{
    json_t *out = json_array();
    pthread_mutex_lock(&rt->lock);
    size_t n = rt->nusage;
    json_t **ids = calloc(n ? n : 1, sizeof *ids);
    for (size_t i = 0; ids && i < rt->ninstances; i++) {
        const struct instance *inst = rt->instances[i];
        if (!inst->running)
            continue;
        size_t at = lower_bound_locked(rt, inst->strategy, inst->hex);
        if (at == n || cmp_key(&rt->usage[at], inst->strategy, inst->hex) != 0)
            continue;
        if (!ids[at])
            ids[at] = json_array();
        json_array_append_new(ids[at], json_string(inst->id));
    }
    for (size_t j = 0; ids && out && j < n; j++) {
        const struct usage_entry *u = &rt->usage[j];
        if (u->first_ms <= 0 && !ids[j])
            continue; /* never ran: no history to report */
        json_array_append_new(out,
                              usage_doc(u, u->strategy, u->hex, ids[j] ? ids[j] : json_array()));
        ids[j] = NULL;
    }
    pthread_mutex_unlock(&rt->lock);
    for (size_t j = 0; ids && j < n; j++)
        json_decref(ids[j]);
    free(ids);
    return out ? out : json_array();
}

uint64_t runtime_usage_generation(struct runtime *rt)
{
    pthread_mutex_lock(&rt->lock);
    uint64_t generation = rt->usage_generation;
    pthread_mutex_unlock(&rt->lock);
    return generation;
}

int runtime_usage_running(struct runtime *rt, struct runtime_usage_count **out, size_t *n,
                          uint64_t *generation)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&rt->lock);
    if (generation)
        *generation = rt->usage_generation;
    size_t live = 0;
    for (size_t i = 0; i < rt->nusage; i++)
        live += rt->usage[i].running > 0;
    struct runtime_usage_count *list = live ? malloc(live * sizeof *list) : NULL;
    if (live && !list) {
        pthread_mutex_unlock(&rt->lock);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; list && i < rt->nusage; i++) {
        const struct usage_entry *u = &rt->usage[i];
        if (u->running <= 0)
            continue;
        memcpy(list[k].strategy, u->strategy, sizeof list[k].strategy);
        memcpy(list[k].hex, u->hex, sizeof list[k].hex);
        list[k].running = u->running;
        k++;
    }
    pthread_mutex_unlock(&rt->lock);
    *out = list;
    *n = k;
    return 0;
}

int usage_load(struct runtime *rt, struct err *err)
{
    if (!rt->opts.store)
        return 0;
    json_t *list = NULL;
    if (store_usage_list(rt->opts.store, &list, err) != 0)
        return -1;
    size_t i;
    json_t *item;
    pthread_mutex_lock(&rt->lock);
    json_array_foreach(list, i, item)
    {
        const char *strategy = json_string_value(json_object_get(item, "strategy"));
        const char *hash = json_string_value(json_object_get(item, "hash"));
        char hex[HASH_HEX_LEN + 1];
        if (!strategy || !hash || !hash_parse_full(hash, hex))
            continue;
        struct usage_entry *u = usage_find_locked(rt, strategy, hex, true);
        if (u) {
            u->first_ms = (int64_t)json_integer_value(json_object_get(item, "firstSeen"));
            u->last_ms = (int64_t)json_integer_value(json_object_get(item, "lastSeen"));
        }
    }
    rt->usage_generation++;
    pthread_mutex_unlock(&rt->lock);
    json_decref(list);
    return 0;
}
