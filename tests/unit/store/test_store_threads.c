/*
 * Concurrent use: several threads write and read every table through one
 * store at once. Each thread checks its own reads as it goes; at the end
 * everything written is there and the database is sound.
 */
#include "store_fixture.h"

#include <pthread.h>
#include <stdio.h>

#define THREADS 6
#define ROUNDS 40
#define HEX "cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"

struct worker {
    struct store *store;
    int id;
    char failure[ERR_MESSAGE_MAX + 64]; /* first failure, empty if none */
};

static void record_failure(struct worker *w, const char *what, const struct err *err)
{
    if (!w->failure[0])
        snprintf(w->failure, sizeof w->failure, "%s: %s", what, err ? err->message : "");
}

static json_t *make_order(const char *instance, int round, int n)
{
    char id[64];
    snprintf(id, sizeof id, "%s-o%d-%d", instance, round, n);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "id", id, "provider", "sim",
                     "strategyInstance", instance, "clientOrderId", id, "state", "new", "createdAt",
                     (json_int_t)round, "updatedAt", (json_int_t)round);
}

static json_t *make_execution(const char *instance, int round)
{
    char id[64], order_id[64];
    snprintf(id, sizeof id, "%s-e%d", instance, round);
    snprintf(order_id, sizeof order_id, "%s-o%d-0", instance, round);
    return json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:I, s:I}", "orderId", order_id, "provider",
                     "sim", "strategyInstance", instance, "executionId", id, "quantity", "1",
                     "price", "2", "tradedAt", (json_int_t)round, "createdAt", (json_int_t)round);
}

/* Two orders per round, in one batch, then a read that must see them. */
static void orders_round(struct worker *w, const char *instance, int round)
{
    struct err err = ERR_INIT;
    json_t *batch =
        json_pack("[o, o]", make_order(instance, round, 0), make_order(instance, round, 1));
    if (!batch || store_orders_put(w->store, batch, &err) != 0)
        record_failure(w, "orders_put", &err);
    json_decref(batch);
    json_t *out = NULL;
    struct store_order_query q = {.instance_id = instance, .limit = 1000};
    if (store_orders_query(w->store, &q, &out, &err) != 0)
        record_failure(w, "orders_query", &err);
    else if (json_array_size(out) != (size_t)(2 * (round + 1)))
        record_failure(w, "orders_query saw a wrong count", NULL);
    json_decref(out);
    err_clear(&err);
}

static void other_tables_round(struct worker *w, const char *instance, int round)
{
    struct err err = ERR_INIT;
    json_t *spec =
        json_pack("{s:s, s:{}, s:{}, s:i}", "id", instance, "strategy", "scope", "round", round);
    if (store_instance_put(w->store, instance, spec, true, NULL, &err) != 0)
        record_failure(w, "instance_put", &err);
    if (store_usage_touch(w->store, "momentum", HEX, round, &err) != 0)
        record_failure(w, "usage_touch", &err);
    json_t *exec = make_execution(instance, round);
    if (store_executions_put(w->store, exec, &err) != 0)
        record_failure(w, "executions_put", &err);
    if (store_setting_put(w->store, instance, spec, &err) != 0)
        record_failure(w, "setting_put", &err);
    json_t *list = NULL;
    if (store_instance_list(w->store, &list, &err) != 0)
        record_failure(w, "instance_list", &err);
    json_decref(list);
    json_decref(exec);
    json_decref(spec);
    err_clear(&err);
}

static void *work(void *arg)
{
    struct worker *w = arg;
    char instance[32];
    snprintf(instance, sizeof instance, "t%d", w->id);
    for (int round = 0; round < ROUNDS; round++) {
        orders_round(w, instance, round);
        other_tables_round(w, instance, round);
    }
    return NULL;
}

static void check_worker_results(struct store *s, int id)
{
    struct err err = ERR_INIT;
    char instance[32];
    snprintf(instance, sizeof instance, "t%d", id);
    struct store_order_query q = {.instance_id = instance, .limit = 1000};
    json_t *out = NULL;
    assert_ok(store_orders_query(s, &q, &out, &err), &err);
    assert_int_equal(json_array_size(out), 2 * ROUNDS);
    json_decref(out);
    assert_ok(store_executions_query(s, &q, &out, &err), &err);
    assert_int_equal(json_array_size(out), ROUNDS);
    json_decref(out);
    json_t *setting = NULL;
    assert_int_equal(store_setting_get(s, instance, &setting, &err), 0);
    assert_int_equal(json_integer_value(json_object_get(setting, "round")), ROUNDS - 1);
    json_decref(setting);
}

static void test_threads_share_one_store(void **state)
{
    struct fixture *f = *state;
    pthread_t threads[THREADS];
    struct worker workers[THREADS];
    for (int t = 0; t < THREADS; t++) {
        workers[t] = (struct worker){.store = f->store, .id = t};
        assert_int_equal(pthread_create(&threads[t], NULL, work, &workers[t]), 0);
    }
    for (int t = 0; t < THREADS; t++) {
        pthread_join(threads[t], NULL);
        if (workers[t].failure[0])
            fail_msg("thread %d: %s", t, workers[t].failure);
    }
    for (int t = 0; t < THREADS; t++)
        check_worker_results(f->store, t);

    struct err err = ERR_INIT;
    json_t *list = NULL;
    assert_ok(store_instance_list(f->store, &list, &err), &err);
    assert_int_equal(json_array_size(list), THREADS);
    json_decref(list);
    assert_ok(store_usage_list(f->store, &list, &err), &err);
    assert_int_equal(json_array_size(list), 1);
    assert_int_equal(tu_jint(list, "0.firstSeen"), 0);
    assert_int_equal(tu_jint(list, "0.lastSeen"), ROUNDS - 1);
    json_decref(list);
    assert_ok(store_check_integrity(f->store, &err), &err);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_threads_share_one_store, fixture_setup,
                                        fixture_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
