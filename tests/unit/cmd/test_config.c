/*
 * The YAML configuration as an operator writes it: values taken exactly,
 * and values the gateway would otherwise read as "use the default" (a 0
 * where 0 means nothing) refused with the setting's path, not replaced.
 */
#include "testutil.h"

#include "cmd/config.h"

#include <stdlib.h>
#include <string.h>

/* Applies `yaml`; returns 0 or -1 with the message in err. */
static int apply_text(struct config *cfg, const char *yaml, struct err *err)
{
    config_init(cfg);
    json_t *doc = config_yaml_to_json(yaml, strlen(yaml), err);
    int rc = doc ? config_apply(cfg, doc, err) : -1;
    json_decref(doc);
    return rc;
}

static void expect_refused(const char *yaml, const char *message)
{
    struct config cfg;
    struct err err = ERR_INIT;
    if (apply_text(&cfg, yaml, &err) == 0)
        fail_msg("accepted: %s", yaml);
    assert_int_equal(err.kind, ERR_INVALID);
    if (!strstr(err.message, message))
        fail_msg("'%s' refused with '%s', expected '%s'", yaml, err.message, message);
    err_clear(&err);
    config_free(&cfg);
}

static void test_zero_where_zero_means_nothing_is_refused(void **state)
{
    (void)state;
    static const char *const settings[][2] = {
        {"runtime:\n  cpu_budget_ms: 0\n", "runtime.cpu_budget_ms: at least 1"},
        {"runtime:\n  memory_limit_mb: 0\n", "runtime.memory_limit_mb: at least 1"},
        {"runtime:\n  stack_limit_kb: 0\n", "runtime.stack_limit_kb: at least 1"},
        {"runtime:\n  max_consecutive_errors: 0\n", "runtime.max_consecutive_errors: at least 1"},
        {"runtime:\n  log_lines_per_second: 0\n", "runtime.log_lines_per_second: at least 1"},
        {"runtime:\n  queue_capacity: 0\n", "runtime.queue_capacity: at least 1"},
        {"validation:\n  budget_ms: 0\n", "validation.budget_ms: at least 1"},
        {"validation:\n  memory_limit_mb: 0\n", "validation.memory_limit_mb: at least 1"},
        {"http:\n  max_body_bytes: 0\n", "http.max_body_bytes: at least 1"},
        {"http:\n  threads: 0\n", "http.threads: at least 1"},
        {"http:\n  max_connections: 0\n", "http.max_connections: at least 1"},
        {"http:\n  idle_timeout_seconds: 0\n", "http.idle_timeout_seconds: at least 1"},
        {"http:\n  request_timeout_seconds: 0\n", "http.request_timeout_seconds: at least 1"},
        {"runtime:\n  cpu_budget_ms: 3600001\n", "runtime.cpu_budget_ms: at most 3600000"},
        {"history:\n  retention_seconds: -1\n", "history.retention_seconds"},
        {"history:\n  retention_seconds: 1h\n", "history.retention_seconds"},
        {"history:\n  retention_seconds: 3162240001\n", "history.retention_seconds: at most"},
        {"history:\n  keep: 1\n", "history.keep"},
        {"runtime:\n  cancel_orders_on_failure: 0\n", "runtime.cancel_orders_on_failure"},
        {"runtime:\n  max_orders_per_second: -1\n", "runtime.max_orders_per_second"},
        {"runtime:\n  max_orders_per_second: 100000001\n",
         "runtime.max_orders_per_second: at most 100000000"},
        {"runtime:\n  cancel_orders_on_failure: no way\n", "runtime.cancel_orders_on_failure"},
        {"providers:\n  - name: p\n    adapter: {identifier: simulated}\n"
         "    config: {tickRate: 1}\n",
         "providers[0].config: with an adapter mapping the settings go in adapter.config"},
        /* providers are checked with the file, naming which one: they were
         * found only once the state was opened, without a place */
        {"providers:\n  - {name: s1, adapter: simulated}\n"
         "  - {name: s2, adapter: simulated, config: {tickRate: -1}}\n",
         "providers[1] (s2): adapter.config.tickRate"},
        {"providers:\n  - {name: s1, adapter: nosuch}\n", "providers[0] (s1): "},
        {"providers:\n  - {adapter: simulated}\n", "providers[0]: name"},
        {"providers:\n  - {name: s1, adapter: simulated}\n  - {name: s1, adapter: simulated}\n",
         "providers[1] (s1): the name s1 is taken by providers[0]"},
        {"state: ''\n", "state: must not be empty"},
        {"strategies: ''\n", "strategies: must not be empty"},
        {"environment: ''\n", "environment: must not be empty"},
        {"log_level: verbose\n", "log_level: 'verbose' is not a level"},
        /* below what any request of the API needs: every one would be refused */
        {"http:\n  max_url_bytes: 10\n", "http.max_url_bytes: at least 256"},
        {"http:\n  max_header_bytes: 10\n", "http.max_header_bytes: at least 1024"},
    };
    for (size_t i = 0; i < sizeof settings / sizeof settings[0]; i++)
        expect_refused(settings[i][0], settings[i][1]);
}

/* The two spellings of a provider: the settings beside a string adapter,
 * or inside an adapter mapping. */
static void test_provider_settings_in_either_spelling(void **state)
{
    (void)state;
    struct config cfg;
    struct err err = ERR_INIT;
    const char *yaml = "providers:\n"
                       "  - name: a\n    adapter: simulated\n    config: {tickRate: 3}\n"
                       "  - name: b\n    adapter: {identifier: simulated, config: {tickRate: 4}}\n";
    if (apply_text(&cfg, yaml, &err) != 0)
        fail_msg("refused: %s", err.message);
    assert_int_equal(json_array_size(cfg.providers), 2);
    for (size_t i = 0; i < 2; i++) {
        const json_t *p = json_array_get(cfg.providers, i);
        assert_string_equal(tu_jstr(p, "adapter.identifier"), "simulated");
        assert_int_equal(tu_jint(p, "adapter.config.tickRate"), (json_int_t)(3 + i));
        assert_null(json_object_get(p, "config"));
    }
    config_free(&cfg);
}

static void test_documented_zeros_and_small_values_are_taken(void **state)
{
    (void)state;
    struct config cfg;
    struct err err = ERR_INIT;
    if (apply_text(&cfg, "{}", &err) != 0)
        fail_msg("refused: %s", err.message);
    assert_true(cfg.history_retention_s == 30LL * 86400); /* kept 30 days unless told */
    assert_false(cfg.keep_orders_on_failure);       /* a failed instance's orders are cancelled */
    assert_int_equal(cfg.max_orders_per_second, 0); /* the runtime's default */
    config_free(&cfg);
    if (apply_text(&cfg, "runtime:\n  max_orders_per_second: 25\n", &err) != 0)
        fail_msg("refused: %s", err.message);
    assert_int_equal(cfg.max_orders_per_second, 25);
    config_free(&cfg);
    if (apply_text(&cfg, "runtime:\n  cancel_orders_on_failure: true\n", &err) != 0)
        fail_msg("refused: %s", err.message);
    assert_false(cfg.keep_orders_on_failure);
    config_free(&cfg);
    const char *yaml = "workers: 0\n"
                       "history:\n  retention_seconds: 0\n"
                       "http:\n  rate_limit_per_second: 0\n  rate_limit_burst: 0\n  threads: 1\n"
                       "runtime:\n  event_poll_us: 0\n  cpu_budget_ms: 1\n  memory_limit_mb: 1\n"
                       "  cancel_orders_on_failure: false\n  max_orders_per_second: 0\n"
                       "validation:\n  budget_ms: 1\n";
    if (apply_text(&cfg, yaml, &err) != 0)
        fail_msg("refused: %s", err.message);
    assert_int_equal(cfg.workers, 0);
    assert_int_equal(cfg.http.rate_per_second, 0);
    assert_int_equal(cfg.http.threads, 1);
    assert_int_equal(cfg.event_poll_us, 0);
    assert_int_equal(cfg.instance_limits.budget_ns, 1000000);
    assert_int_equal(cfg.instance_limits.memory_bytes, 1u << 20);
    assert_int_equal(cfg.validation_limits.budget_ns, 1000000);
    assert_true(cfg.history_retention_s == 0); /* the whole history kept */
    assert_true(cfg.keep_orders_on_failure);
    assert_true(cfg.max_orders_per_second < 0); /* no limit at all */
    config_free(&cfg);
}

/* The listen address: HOST:PORT, an IPv6 host in brackets (without them
 * in the host taken); an IPv6 address without brackets is ambiguous and
 * refused with the spelling to use. */
static void test_listen_addresses(void **state)
{
    (void)state;
    const struct {
        const char *text, *host;
        int port;
    } good[] = {
        {"127.0.0.1:8880", "127.0.0.1", 8880}, {"0.0.0.0:0", "0.0.0.0", 0},
        {"[::1]:8880", "::1", 8880},           {"[::]:65535", "::", 65535},
        {"[fd00::2]:80", "fd00::2", 80},
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        char *host = NULL;
        int port = -1;
        struct err err = ERR_INIT;
        if (config_parse_listen(good[i].text, &host, &port, &err) != 0)
            fail_msg("'%s' refused: %s", good[i].text, err.message);
        assert_string_equal(host, good[i].host);
        assert_int_equal(port, good[i].port);
        free(host);
    }
    const struct {
        const char *text, *says;
    } bad[] = {
        {"::1:8880", "write an IPv6 address in brackets, as [::1]:8880"},
        {"[::1]", "must be [IPV6]:PORT"},
        {"[::1:8880", "must be [IPV6]:PORT"},
        {"[]:8880", "must be [IPV6]:PORT"},
        {"[::1]:", "must be HOST:PORT"},
        {"[::1]:65536", "must be HOST:PORT"},
        {"127.0.0.1", "must be HOST:PORT"},
        {":8880", "must be HOST:PORT"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char *host = NULL;
        int port = -1;
        struct err err = ERR_INIT;
        if (config_parse_listen(bad[i].text, &host, &port, &err) == 0)
            fail_msg("'%s' taken as host '%s', port %d", bad[i].text, host, port);
        assert_int_equal(err.kind, ERR_INVALID);
        if (!strstr(err.message, bad[i].says))
            fail_msg("'%s' refused with '%s', expected '%s'", bad[i].text, err.message,
                     bad[i].says);
        assert_null(host);
        err_clear(&err);
    }
    expect_refused("listen: '::1:8880'\n", "write an IPv6 address in brackets");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_where_zero_means_nothing_is_refused),
        cmocka_unit_test(test_documented_zeros_and_small_values_are_taken),
        cmocka_unit_test(test_provider_settings_in_either_spelling),
        cmocka_unit_test(test_listen_addresses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
