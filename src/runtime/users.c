/*
 * users: how many running (or starting) instances each provider feeds,
 * kept as instances start, stop and change scope, so that the question a
 * health probe asks of every stopped provider costs a lookup, not a walk
 * over the fleet. An instance counts once it joins (running or starting)
 * and stops counting when it leaves; what it added is its scope_ids at
 * the join, which only rtx_apply_spec_locked replaces (leaving first).
 * An instance whose scope is not all in scope_ids, or a count that could
 * not be kept (out of memory), sends the question back to the walk.
 * Everything here runs under rt->lock.
 */
#include "runtime/internal.h"

#include "core/intern.h"

#include <stdlib.h>

static struct provider_users *entry_locked(struct runtime *rt, uint16_t id, bool create)
{
    for (size_t i = 0; i < rt->nprovider_users; i++) {
        if (rt->provider_users[i].id == id)
            return &rt->provider_users[i];
    }
    if (!create)
        return NULL;
    if (rt->nprovider_users == rt->provider_users_cap) {
        size_t cap = rt->provider_users_cap ? rt->provider_users_cap * 2 : 8;
        struct provider_users *grown = realloc(rt->provider_users, cap * sizeof *grown);
        if (!grown)
            return NULL;
        rt->provider_users = grown;
        rt->provider_users_cap = cap;
    }
    struct provider_users *e = &rt->provider_users[rt->nprovider_users++];
    *e = (struct provider_users){id, 0};
    return e;
}

static void add_locked(struct runtime *rt, const struct instance *inst, int delta)
{
    if (inst->scope_ids_partial)
        rt->users_unindexed = (size_t)((long long)rt->users_unindexed + delta);
    for (uint8_t i = 0; i < inst->nscope_ids; i++) {
        struct provider_users *e = entry_locked(rt, inst->scope_ids[i], delta > 0);
        if (!e || (delta < 0 && e->count == 0)) {
            rt->users_lost = true;
            continue;
        }
        e->count = (uint32_t)((long long)e->count + delta);
    }
}

void rtx_users_sync_locked(struct runtime *rt, struct instance *inst)
{
    bool active = inst->running || inst->starting;
    if (active == inst->users_joined)
        return;
    add_locked(rt, inst, active ? 1 : -1);
    inst->users_joined = active;
}

void rtx_users_rescope_locked(struct runtime *rt, struct instance *inst)
{
    rtx_users_leave_locked(rt, inst);
    inst->nscope_ids = 0;
    inst->scope_ids_partial = false;
    const char *provider;
    json_t *symbols;
    json_object_foreach(json_object_get(inst->spec, "scope"), provider, symbols)
    {
        uint16_t id = intern_id(provider);
        if (!id || inst->nscope_ids == RUNTIME_SCOPE_IDS) {
            inst->scope_ids_partial = true;
            break;
        }
        inst->scope_ids[inst->nscope_ids++] = id;
    }
    rtx_users_sync_locked(rt, inst);
}

void rtx_users_leave_locked(struct runtime *rt, struct instance *inst)
{
    if (!inst->users_joined)
        return;
    add_locked(rt, inst, -1);
    inst->users_joined = false;
}

/* Whether the running (or starting) instance's scope names the provider,
 * `id` its interned name (0: never interned, so no indexed scope has it). */
static bool uses_provider_locked(const struct instance *inst, uint16_t id, const char *provider)
{
    if (!inst->running && !inst->starting)
        return false;
    if (inst->scope_ids_partial)
        return json_object_get(json_object_get(inst->spec, "scope"), provider) != NULL;
    for (uint8_t i = 0; id && i < inst->nscope_ids; i++) {
        if (inst->scope_ids[i] == id)
            return true;
    }
    return false;
}

json_t *runtime_provider_dependents(struct runtime *rt, const char *provider)
{
    json_t *ids = json_array();
    uint16_t id = intern_lookup(provider);
    pthread_mutex_lock(&rt->lock);
    for (size_t i = 0; ids && i < rt->ninstances; i++) {
        const struct instance *inst = rt->instances[i];
        if (uses_provider_locked(inst, id, provider))
            json_array_append_new(ids, json_string(inst->id));
    }
    pthread_mutex_unlock(&rt->lock);
    return ids;
}

size_t runtime_provider_users(struct runtime *rt, const char *provider)
{
    size_t n = 0;
    uint16_t id = intern_lookup(provider);
    pthread_mutex_lock(&rt->lock);
    if (rt->users_unindexed == 0 && !rt->users_lost) {
        const struct provider_users *e = id ? entry_locked(rt, id, false) : NULL;
        n = e ? e->count : 0;
    } else {
        for (size_t i = 0; i < rt->ninstances; i++)
            n += uses_provider_locked(rt->instances[i], id, provider);
    }
    pthread_mutex_unlock(&rt->lock);
    return n;
}
