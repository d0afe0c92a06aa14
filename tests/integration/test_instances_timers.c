/*
 * Timers and promises in strategies, over HTTP: setTimeout/clearTimeout
 * and setInterval/clearInterval fire (in deadline order, with their
 * arguments) or not at all once cleared; helpers.sleep(ms) is a Promise;
 * async handlers and promise chains work. Nothing of that blocks a worker:
 * with one worker for everything, an instance sleeping in every handler
 * keeps receiving events while it sleeps, and so does its neighbour.
 * Timers set by a module's top level wait for create(env).
 */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const one_worker[] = {"--workers", "1", NULL};
static const char *const fast_config = "providers:\n"
                                       "  - name: sim\n"
                                       "    adapter: simulated\n"
                                       "    config:\n"
                                       "      symbols: [BTC-USDT]\n"
                                       "      seed: 9\n"
                                       "      tickRate: 200\n";

static void start_server(struct tu_server *srv)
{
    struct tu_server_options opts = {.config_yaml = fast_config, .extra_args = one_worker};
    tu_server_start(srv, &opts);
}

static void upload(struct tu_server *srv, const char *name, const char *setup, const char *handlers)
{
    char *src = tu_strategy_source(name, "['Trade']", "[]", setup, handlers);
    tu_upload_expect(srv, src, NULL, 201, NULL);
    free(src);
}

/* The tags an instance logged (the first word of each of its messages). */
static json_t *tags_of(struct tu_server *srv, const char *instance)
{
    json_t *entries = tu_log_entries(srv, instance);
    json_t *out = json_array();
    size_t i;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *msg = tu_jstr(e, "msg");
        const char *space = strchr(msg, ' ');
        json_array_append_new(out, json_stringn(msg, space ? (size_t)(space - msg) : strlen(msg)));
    }
    json_decref(entries);
    return out;
}

static size_t count_tag(const json_t *tags, const char *tag)
{
    size_t n = 0, i;
    json_t *t;
    json_array_foreach(tags, i, t) n += strcmp(json_string_value(t), tag) == 0;
    return n;
}

static void test_timers_fire_in_order_and_clear(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    upload(srv, "clock",
           "const ids = [];\n"
           "ids.push(setTimeout((a, b) => h.log('late', {a, b}), 60, 'x', 2));\n"
           "ids.push(setTimeout(() => h.log('early', {}), 10));\n"
           "ids.push(setTimeout(() => h.log('same1', {}), 30));\n"
           "ids.push(setTimeout(() => h.log('same2', {}), 30));\n"
           "const never = setTimeout(() => h.log('never', {}), 20);\n"
           "clearTimeout(never);\n"
           "clearTimeout(undefined); clearTimeout('nonsense'); clearInterval(12345);\n"
           "let n = 0;\n"
           "const every = setInterval(() => {\n"
           "  h.log('interval', {n: ++n});\n"
           "  if (n === 5) {\n"
           "    clearInterval(every);\n"
           "    setTimeout(() => h.log('after', {n}), 50);\n"
           "  }\n"
           "}, 5);\n"
           "let badType = null;\n"
           "try { setTimeout('code', 1); } catch (e) { badType = e.name; }\n"
           "const sleeping = h.sleep(15);\n"
           "h.log('setup', {ids: ids.map((i) => typeof i), distinct: new Set(ids).size,\n"
           "  badType, promise: sleeping instanceof Promise});\n"
           "sleeping.then((v) => h.log('slept', {undefinedValue: v === undefined}));\n"
           "(async () => {\n"
           "  const order = [];\n"
           "  await Promise.all([h.sleep(30).then(() => order.push(30)),\n"
           "                     h.sleep(5).then(() => order.push(5))]);\n"
           "  const value = await new Promise((resolve) => setTimeout(resolve, 1, 'done'));\n"
           "  h.log('chain', {order, value});\n"
           "})();\n",
           "async onTrade(ctx, evt) {\n"
           "  await null;\n"
           "  const v = await Promise.resolve(evt.seq);\n"
           "  if (v !== evt.seq) throw new Error('lost ' + v);\n"
           "},");
    json_decref(tu_instance_create(srv, "clock-1", "clock", NULL, NULL, NULL));
    tu_instance_start(srv, "clock-1");

    json_t *setup = tu_wait_log_values(srv, "clock-1", "setup", 1, TU_WAIT_S);
    for (int i = 0; i < 4; i++)
        assert_string_equal(json_string_value(json_array_get(tu_jget(setup, "0.ids"), (size_t)i)),
                            "number");
    assert_int_equal(tu_jint(setup, "0.distinct"), 4);
    assert_string_equal(tu_jstr(setup, "0.badType"), "TypeError");
    assert_true(json_is_true(tu_jget(setup, "0.promise")));
    json_decref(setup);

    json_decref(tu_wait_log_values(srv, "clock-1", "after", 1, TU_WAIT_S));
    json_decref(tu_wait_log_values(srv, "clock-1", "late", 1, TU_WAIT_S));
    json_t *chain = tu_wait_log_values(srv, "clock-1", "chain", 1, TU_WAIT_S);
    assert_int_equal(tu_jint(chain, "0.order.0"), 5);
    assert_int_equal(tu_jint(chain, "0.order.1"), 30);
    assert_string_equal(tu_jstr(chain, "0.value"), "done");
    json_decref(chain);
    json_t *slept = tu_wait_log_values(srv, "clock-1", "slept", 1, TU_WAIT_S);
    assert_true(json_is_true(tu_jget(slept, "0.undefinedValue")));
    json_decref(slept);
    json_t *late = tu_log_values(srv, "clock-1", "late");
    assert_string_equal(tu_jstr(late, "0.a"), "x");
    assert_int_equal(tu_jint(late, "0.b"), 2);
    json_decref(late);

    /* deadline order, FIFO among equal deadlines; the interval ran exactly
     * five times; the cleared timer never ran */
    json_t *tags = tags_of(srv, "clock-1");
    const char *order[] = {"early", "same1", "same2", "late"};
    size_t at[4];
    for (int k = 0; k < 4; k++) {
        at[k] = SIZE_MAX;
        size_t i;
        json_t *t;
        json_array_foreach(tags, i, t)
        {
            if (strcmp(json_string_value(t), order[k]) == 0 && at[k] == SIZE_MAX)
                at[k] = i;
        }
        assert_true(at[k] != SIZE_MAX);
        if (k > 0)
            assert_true(at[k] > at[k - 1]);
    }
    assert_int_equal(count_tag(tags, "interval"), 5);
    assert_int_equal(count_tag(tags, "never"), 0);
    json_decref(tags);
    json_t *after = tu_log_values(srv, "clock-1", "after");
    assert_int_equal(tu_jint(after, "0.n"), 5);
    json_decref(after);

    /* the async handler ran for every trade without an error */
    json_t *snap = tu_instance_wait_events(srv, "clock-1", 100, TU_WAIT_S);
    assert_int_equal(tu_jint(snap, "counters.handlerErrors"), 0);
    assert_true(json_is_true(json_object_get(snap, "running")));
    json_decref(snap);
    tags = tags_of(srv, "clock-1");
    assert_int_equal(count_tag(tags, "interval"), 5);
    assert_int_equal(count_tag(tags, "never"), 0);
    json_decref(tags);

    /* stopping with timers pending cancels them: nothing runs afterwards */
    tu_instance_stop(srv, "clock-1");
    tu_server_stop(srv);
}

/* A start loads the module while its intent is being made durable, and
 * calls create(env) after: timers the module's top level sets wait for
 * create(env), however short, and one it clears never runs. */
static void test_top_level_timers_wait_for_create(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    /* validation runs the top level without timers, so it asks first */
    const char *src =
        "let created = false, ticks = 0, ticksBeforeCreate = 0;\n"
        "const seen = [];\n"
        "const early = typeof setTimeout === 'function';\n"
        "if (early) {\n"
        "  setTimeout(() => seen.push({timer: 'zero', created}), 0);\n"
        "  const cleared = setTimeout(() => seen.push({timer: 'cleared', created}), 0);\n"
        "  clearTimeout(cleared);\n"
        "  setTimeout((x) => seen.push({timer: x, created}), 1, 'one');\n"
        "  const every = setInterval(() => {\n"
        "    ticks++;\n"
        "    if (!created) ticksBeforeCreate++;\n"
        "    if (ticks === 3) clearInterval(every);\n"
        "  }, 1);\n"
        "}\n"
        "module.exports = {\n"
        "  metadata: {name: 'early', displayName: 'Early timers', events: ['Trade'], config: []},\n"
        "  create(env) {\n"
        "    created = true;\n"
        "    const h = env.helpers;\n"
        "    setTimeout(() => h.log('report', {early, seen, ticks, ticksBeforeCreate}), 40);\n"
        "    return {onTrade() {}};\n"
        "  },\n"
        "};\n";
    tu_upload_expect(srv, src, NULL, 201, NULL);
    for (int round = 0; round < 3; round++) {
        char id[32];
        snprintf(id, sizeof id, "early-%d", round);
        json_decref(tu_instance_create(srv, id, "early", NULL, NULL, NULL));
        tu_instance_start(srv, id);
        json_t *report = tu_wait_log_values(srv, id, "report", 1, TU_WAIT_S);
        assert_true(json_is_true(tu_jget(report, "0.early")));
        const json_t *seen = tu_jget(report, "0.seen");
        if (json_array_size(seen) != 2)
            fail_msg("%s: expected the 'zero' and 'one' timers, saw %s", id,
                     json_dumps(seen, JSON_COMPACT));
        assert_string_equal(tu_jstr(report, "0.seen.0.timer"), "zero");
        assert_string_equal(tu_jstr(report, "0.seen.1.timer"), "one");
        for (size_t i = 0; i < 2; i++) {
            if (!json_is_true(json_object_get(json_array_get(seen, i), "created")))
                fail_msg("%s: a top-level timer ran before create(env): %s", id,
                         json_dumps(seen, JSON_COMPACT));
        }
        assert_int_equal(tu_jint(report, "0.ticks"), 3);
        assert_int_equal(tu_jint(report, "0.ticksBeforeCreate"), 0);
        json_decref(report);
    }
    tu_server_stop(srv);
}

static void test_sleep_blocks_neither_the_instance_nor_its_neighbour(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    /* each handler notes how many trades it had seen, sleeps 500 ms, and on
     * waking logs how many it has seen since: all of them arrived while it
     * slept */
    upload(srv, "sleeper", "let seen = 0, sleeping = 0;",
           "async onTrade(ctx, evt, p) {\n"
           "  const at = ++seen;\n"
           "  if (at > 3) return;\n"
           "  sleeping++;\n"
           "  h.log('sleep', {at, trade: p.tradeId});\n"
           "  await h.sleep(500);\n"
           "  h.log('woke', {at, seen, sleeping: sleeping--});\n"
           "},");
    upload(srv, "neighbour", "let n = 0;",
           "onTrade(ctx, evt, p) { if (++n % 10 === 0) h.log('beat', {trade: p.tradeId}); },");
    json_decref(tu_instance_create(srv, "nb", "neighbour", NULL, NULL, NULL));
    json_decref(tu_instance_create(srv, "zz", "sleeper", NULL, NULL, NULL));
    tu_instance_start(srv, "nb");
    tu_instance_start(srv, "zz");

    json_t *woke = tu_wait_log_values(srv, "zz", "woke", 3, TU_WAIT_S);
    for (size_t i = 0; i < 3; i++) {
        json_t *w = json_array_get(woke, i);
        long long at = tu_jint(w, "at"), seen = tu_jint(w, "seen");
        /* 500 ms at 200 trades a second: about a hundred trades while asleep;
         * a blocked worker would have delivered none */
        if (seen - at < 20)
            fail_msg("the sleeper saw only %lld trades while asleep", seen - at);
    }
    /* the three sleeps overlapped */
    assert_int_equal(tu_jint(woke, "0.sleeping"), 3);
    json_decref(woke);

    /* on the same worker, the neighbour went on between the sleeper's first
     * sleep and its first wake (log order is execution order there) */
    json_t *entries = tu_log_entries(srv, NULL);
    size_t i, beats = 0;
    bool asleep = false;
    json_t *e;
    json_array_foreach(entries, i, e)
    {
        const char *who = json_string_value(json_object_get(e, "instance"));
        const char *msg = json_string_value(json_object_get(e, "msg"));
        if (!who || !msg)
            continue;
        if (strcmp(who, "zz") == 0 && strncmp(msg, "sleep ", 6) == 0)
            asleep = true;
        if (strcmp(who, "zz") == 0 && strncmp(msg, "woke ", 5) == 0)
            break;
        if (asleep && strcmp(who, "nb") == 0 && strncmp(msg, "beat ", 5) == 0)
            beats++;
    }
    json_decref(entries);
    if (beats < 2)
        fail_msg("the neighbour logged %zu beats while the sleeper slept", beats);
    json_t *snap = tu_instance_get(srv, "nb");
    assert_int_equal(tu_jint(snap, "counters.handlerErrors"), 0);
    json_decref(snap);
    tu_server_stop(srv);
}

/* How many storm callbacks have run so far. */
static size_t storm_ran(struct tu_server *srv)
{
    json_t *ran = tu_log_values(srv, "storm", "ran");
    size_t n = json_array_size(ran);
    json_decref(ran);
    return n;
}

#define STORM 500

/* One trade arms STORM timers of 40 ms of work each, all due at once: 20 s
 * of callbacks, each within the CPU budget. They take turns with the rest
 * of the worker: the neighbour's events go on, and a stop of either
 * instance is served between two callbacks instead of after the storm. */
static void test_a_timer_storm_takes_turns(void **state)
{
    struct tu_server *srv = *state;
    start_server(srv);
    char *storm_src = tu_path("let armed = false, ran = 0;\n"
                              "const work = () => {\n"
                              "  h.log('ran', {n: ++ran});\n"
                              "  const until = Date.now() + 40;\n"
                              "  while (Date.now() < until) {}\n"
                              "};");
    char *arm = tu_path("onTrade() {\n"
                        "  if (armed) return;\n"
                        "  armed = true;\n"
                        "  for (let i = 0; i < %d; i++) setTimeout(work, 0);\n"
                        "},",
                        STORM);
    upload(srv, "storm", storm_src, arm);
    free(storm_src);
    free(arm);
    upload(srv, "calm", NULL, "onTrade() {},");
    json_decref(tu_instance_create(srv, "nb", "calm", NULL, NULL, NULL));
    json_decref(tu_instance_create(srv, "storm", "storm", NULL, NULL, NULL));
    tu_instance_start(srv, "nb");
    json_decref(tu_instance_wait_events(srv, "nb", 5, TU_WAIT_S));
    tu_instance_start(srv, "storm");
    json_decref(tu_wait_log_values(srv, "storm", "ran", 1, TU_WAIT_S));

    /* the neighbour's events go on while the storm runs */
    json_t *snap = tu_instance_get(srv, "nb");
    long long seen = tu_jint(snap, "counters.eventsDelivered");
    json_decref(snap);
    json_decref(tu_instance_wait_events(srv, "nb", seen + 20, TU_WAIT_S));
    size_t ran = storm_ran(srv);
    if (ran >= STORM)
        fail_msg("the neighbour got its events only after all %d storm callbacks", STORM);

    /* a stop of the neighbour, then of the storm, each served between two
     * callbacks */
    tu_instance_stop(srv, "nb");
    ran = storm_ran(srv);
    if (ran >= STORM)
        fail_msg("the neighbour's stop waited for all %d storm callbacks", STORM);
    tu_instance_stop(srv, "storm");
    ran = storm_ran(srv);
    if (ran >= STORM)
        fail_msg("the storm's stop waited for all %d of its callbacks", STORM);
    snap = tu_instance_get(srv, "storm");
    assert_true(json_is_false(json_object_get(snap, "running")));
    assert_string_equal(tu_jstr(snap, "stopReason"), "stopped");
    json_decref(snap);

    /* its remaining timers went with it: nothing runs after the stop */
    tu_instance_start(srv, "nb");
    snap = tu_instance_get(srv, "nb");
    seen = tu_jint(snap, "counters.eventsDelivered");
    json_decref(snap);
    json_decref(tu_instance_wait_events(srv, "nb", seen + 20, TU_WAIT_S));
    assert_int_equal(storm_ran(srv), ran);
    tu_server_stop(srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_timers_fire_in_order_and_clear, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_top_level_timers_wait_for_create, tu_server_setup,
                                        tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_sleep_blocks_neither_the_instance_nor_its_neighbour,
                                        tu_server_setup, tu_server_teardown),
        cmocka_unit_test_setup_teardown(test_a_timer_storm_takes_turns, tu_server_setup,
                                        tu_server_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
