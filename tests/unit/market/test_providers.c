/*
 * The provider registry: create, update, delete, start, stop; request and
 * settings validation (every error names its field); the JSON views in the
 * contract's shapes; adapter metadata.
 */
#include "testsink.h"

#include "market/sim.h"

static struct tsink sink;

static int setup(void **state)
{
    tsink_init(&sink, 1u << EVENT_EXEC_REPORT, 0); /* count only */
    struct market *m = market_new(tsink_sink(&sink), NULL);
    assert_non_null(m);
    *state = m;
    return 0;
}

static int teardown(void **state)
{
    market_free(*state);
    tsink_destroy(&sink);
    return 0;
}

static json_t *request(const char *text)
{
    json_error_t jerr;
    json_t *v = json_loads(text, 0, &jerr);
    if (!v)
        fail_msg("bad test JSON %s: %s", text, jerr.text);
    return v;
}

static void assert_provider_shape(const json_t *p, bool detail)
{
    const char *required[] = {"name",     "adapter", "identifier", "instrumentCount",
                              "settings", "running", "status"};
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
        if (!json_object_get(p, required[i]))
            fail_msg("Provider lacks %s", required[i]);
    }
    assert_true(json_is_string(json_object_get(p, "adapter")));
    assert_true(json_is_integer(json_object_get(p, "instrumentCount")));
    assert_true(json_is_object(json_object_get(p, "settings")));
    assert_true(json_is_boolean(json_object_get(p, "running")));
    const char *status = json_string_value(json_object_get(p, "status"));
    const char *statuses[] = {"pending", "starting", "running", "stopped", "failed"};
    bool known = false;
    for (size_t i = 0; i < 5; i++)
        known = known || strcmp(status, statuses[i]) == 0;
    assert_true(known);
    json_t *instruments = json_object_get(p, "instruments");
    if (!detail) {
        assert_null(instruments);
        return;
    }
    assert_true(json_is_array(instruments));
    assert_int_equal(json_array_size(instruments),
                     json_integer_value(json_object_get(p, "instrumentCount")));
    size_t i;
    json_t *ins;
    json_array_foreach(instruments, i, ins)
    {
        assert_true(json_is_string(json_object_get(ins, "symbol")));
        assert_string_equal(json_string_value(json_object_get(ins, "type")), "spot");
        assert_true(json_is_string(json_object_get(ins, "baseAsset")));
        assert_true(json_is_string(json_object_get(ins, "quoteAsset")));
    }
}

static void test_create_defaults_and_views(void **state)
{
    struct market *m = *state;
    json_t *req = request("{\"name\": \"sim\", \"adapter\": {\"identifier\": \"simulated\", "
                          "\"config\": {}}}");
    json_t *detail = NULL;
    struct err err = ERR_INIT;
    assert_int_equal(market_provider_create(m, req, &detail, &err), 0);
    assert_provider_shape(detail, true);
    assert_string_equal(tu_jstr(detail, "name"), "sim");
    assert_string_equal(tu_jstr(detail, "adapter"), "simulated");
    assert_true(json_is_true(json_object_get(detail, "running")));
    assert_int_equal(tu_jint(detail, "instrumentCount"), 2);
    assert_string_equal(tu_jstr(detail, "instruments.0.symbol"), "BTC-USDT");
    assert_string_equal(tu_jstr(detail, "instruments.0.baseAsset"), "BTC");
    assert_string_equal(tu_jstr(detail, "instruments.1.quoteAsset"), "USDT");
    /* the effective settings carry every default */
    json_t *settings = json_object_get(detail, "settings");
    assert_int_equal(tu_jint(settings, "seed"), 1);
    assert_int_equal(tu_jint(settings, "tickRate"), 10);
    assert_int_equal(tu_jint(settings, "bookDepth"), 10);
    assert_int_equal(tu_jint(settings, "startPrices.BTC-USDT"), 50000);
    assert_int_equal(tu_jint(settings, "startPrices.ETH-USDT"), 3000);
    assert_int_equal(tu_jint(settings, "balances.USDT"), 100000);
    assert_int_equal(tu_jint(settings, "balances.ETH"), 1);
    assert_true(json_real_value(json_object_get(settings, "feeRate")) == 0.001);
    assert_true(json_real_value(json_object_get(settings, "volatility")) == 0.0005);
    json_decref(detail);

    assert_true(tmarket_wait_running(m, "sim", 5000));
    detail = market_provider_json(m, "sim", &err);
    assert_string_equal(tu_jstr(detail, "status"), "running");
    json_decref(detail);

    /* a duplicate is a conflict */
    assert_int_equal(market_provider_create(m, req, NULL, &err), -1);
    assert_int_equal(err.kind, ERR_CONFLICT);
    err_clear(&err);
    json_decref(req);

    tmarket_create(m, "alpha", "{\"symbols\": [\"SOL-USDC\"]}", false);
    json_t *list = market_providers_json(m);
    json_t *providers = json_object_get(list, "providers");
    assert_int_equal(json_array_size(providers), 2);
    assert_string_equal(tu_jstr(list, "providers.0.name"), "alpha"); /* by name */
    assert_string_equal(tu_jstr(list, "providers.0.status"), "pending");
    assert_true(json_is_false(tu_jget(list, "providers.0.running")));
    assert_int_equal(tu_jint(list, "providers.0.settings.startPrices.SOL-USDC"), 100);
    assert_int_equal(tu_jint(list, "providers.0.settings.balances.USDC"), 100000);
    size_t i;
    json_t *p;
    json_array_foreach(providers, i, p) assert_provider_shape(p, false);
    assert_null(json_object_get(json_array_get(providers, 0), "dependentInstances"));
    json_decref(list);

    assert_true(market_has_provider(m, "sim"));
    assert_false(market_has_provider(m, "nope"));
    assert_true(market_has_symbol(m, "alpha", "SOL-USDC"));
    assert_false(market_has_symbol(m, "alpha", "BTC-USDT"));
    assert_false(market_has_symbol(m, "nope", "BTC-USDT"));
    assert_null(market_provider_json(m, "nope", &err));
    assert_int_equal(err.kind, ERR_NOT_FOUND);
    err_clear(&err);
}

static void test_start_stop_update_delete(void **state)
{
    struct market *m = *state;
    struct err err = ERR_INIT;
    tmarket_create(m, "p1", "{\"tickRate\": 100}", false);
    json_t *d = NULL;
    assert_int_equal(market_provider_start(m, "p1", &d, &err), 0);
    assert_true(json_is_true(json_object_get(d, "running")));
    json_decref(d);
    assert_true(tmarket_wait_running(m, "p1", 5000));
    /* starting a running provider changes nothing */
    assert_int_equal(market_provider_start(m, "p1", NULL, &err), 0);

    assert_int_equal(market_provider_stop(m, "p1", &d, &err), 0);
    assert_true(json_is_false(json_object_get(d, "running")));
    assert_string_equal(tu_jstr(d, "status"), "stopped");
    json_decref(d);
    assert_int_equal(market_provider_stop(m, "p1", NULL, &err), 0);

    /* update a stopped provider: settings change, it stays stopped */
    json_t *req = request("{\"name\": \"p1\", \"adapter\": {\"identifier\": \"simulated\", "
                          "\"config\": {\"tickRate\": 5, \"symbols\": [\"ETH-BTC\"]}}}");
    assert_int_equal(market_provider_update(m, "p1", req, &d, &err), 0);
    assert_int_equal(tu_jint(d, "settings.tickRate"), 5);
    assert_int_equal(tu_jint(d, "instrumentCount"), 1);
    assert_true(json_is_false(json_object_get(d, "running")));
    /* BTC is the quote here, so it gets the quote default */
    assert_int_equal(tu_jint(d, "settings.balances.BTC"), 100000);
    json_decref(d);
    assert_true(market_has_symbol(m, "p1", "ETH-BTC"));

    /* update a running provider: it restarts with the new settings */
    assert_int_equal(market_provider_start(m, "p1", NULL, &err), 0);
    json_decref(req);
    req = request("{\"name\": \"p1\", \"adapter\": {\"identifier\": \"simulated\", "
                  "\"config\": {\"tickRate\": 7}}}");
    assert_int_equal(market_provider_update(m, "p1", req, &d, &err), 0);
    assert_true(json_is_true(json_object_get(d, "running")));
    assert_int_equal(tu_jint(d, "settings.tickRate"), 7);
    json_decref(d);
    /* enabled false stops it */
    json_object_set_new(req, "enabled", json_false());
    assert_int_equal(market_provider_update(m, "p1", req, &d, &err), 0);
    assert_true(json_is_false(json_object_get(d, "running")));
    json_decref(d);
    /* the path names the provider: a different body name is refused */
    assert_int_equal(market_provider_update(m, "other", req, NULL, &err), -1);
    assert_int_equal(err.kind, ERR_INVALID);
    err_clear(&err);
    json_object_set_new(req, "name", json_string("ghost"));
    assert_int_equal(market_provider_update(m, "ghost", req, NULL, &err), -1);
    assert_int_equal(err.kind, ERR_NOT_FOUND);
    err_clear(&err);
    json_decref(req);

    assert_int_equal(market_provider_start(m, "p1", NULL, &err), 0);
    assert_int_equal(market_provider_delete(m, "p1", &err), 0);
    assert_false(market_has_provider(m, "p1"));
    assert_int_equal(market_provider_delete(m, "p1", &err), -1);
    assert_int_equal(err.kind, ERR_NOT_FOUND);
    err_clear(&err);
    assert_int_equal(market_provider_start(m, "p1", NULL, &err), -1);
    assert_int_equal(err.kind, ERR_NOT_FOUND);
    err_clear(&err);
    assert_int_equal(market_provider_stop(m, "p1", NULL, &err), -1);
    err_clear(&err);
    /* the name can be used again */
    tmarket_create(m, "p1", "{}", true);
    assert_true(tmarket_wait_running(m, "p1", 5000));
}

struct bad_case {
    const char *body;
    enum err_kind kind;
    const char *field; /* NULL: none expected */
};

static void test_invalid_requests_name_the_field(void **state)
{
    struct market *m = *state;
    static const struct bad_case cases[] = {
        {"[]", ERR_INVALID, "body"},
        {"{\"adapter\": {\"identifier\": \"simulated\", \"config\": {}}}", ERR_INVALID, "name"},
        {"{\"name\": \"bad name\", \"adapter\": {\"identifier\": \"simulated\"}}", ERR_INVALID,
         "name"},
        {"{\"name\": \"a-very-long-provider-name-over-30\", \"adapter\": {\"identifier\": "
         "\"simulated\"}}",
         ERR_INVALID, "name"},
        {"{\"name\": \"x\"}", ERR_INVALID, "adapter"},
        {"{\"name\": \"x\", \"adapter\": {}}", ERR_INVALID, "adapter.identifier"},
        {"{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\", \"config\": 3}}",
         ERR_INVALID, "adapter.config"},
        {"{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\"}, \"enabled\": \"yes\"}",
         ERR_INVALID, "enabled"},
        {"{\"name\": \"x\", \"adapter\": {\"identifier\": \"binance\", \"config\": {}}}",
         ERR_NOT_FOUND, NULL},
        /* an unknown member would be dropped without a word */
        {"{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\"}, \"zzz\": 1}", ERR_INVALID,
         "zzz"},
        {"{\"name\": \"x\", \"adapter\": {\"identifier\": \"simulated\", \"foo\": 1}}", ERR_INVALID,
         "adapter.foo"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *req = request(cases[i].body);
        struct err err = ERR_INIT;
        assert_int_equal(market_provider_create(m, req, NULL, &err), -1);
        if (err.kind != cases[i].kind)
            fail_msg("%s: kind %s (%s)", cases[i].body, err_kind_name(err.kind), err.message);
        if (cases[i].field) {
            assert_string_equal(json_string_value(json_object_get(err.details, "field")),
                                cases[i].field);
            assert_true(strncmp(err.message, cases[i].field, strlen(cases[i].field)) == 0);
        }
        err_clear(&err);
        json_decref(req);
    }
    assert_false(market_has_provider(m, "x"));
}

static void test_invalid_settings_name_the_field(void **state)
{
    struct market *m = *state;
    static const struct {
        const char *config;
        const char *field;
    } cases[] = {
        {"{\"tickRate\": -1}", "adapter.config.tickRate"},
        {"{\"tickRate\": \"fast\"}", "adapter.config.tickRate"},
        {"{\"tickRate\": 1e9}", "adapter.config.tickRate"},
        {"{\"seed\": 1.5}", "adapter.config.seed"},
        {"{\"seed\": -3}", "adapter.config.seed"},
        {"{\"volatility\": -0.1}", "adapter.config.volatility"},
        {"{\"volatility\": 2}", "adapter.config.volatility"},
        {"{\"bookDepth\": 0}", "adapter.config.bookDepth"},
        {"{\"bookDepth\": 2.5}", "adapter.config.bookDepth"},
        {"{\"bookDepth\": 1000}", "adapter.config.bookDepth"},
        {"{\"feeRate\": -0.01}", "adapter.config.feeRate"},
        {"{\"feeRate\": 1}", "adapter.config.feeRate"},
        {"{\"strictIncrements\": 1}", "adapter.config.strictIncrements"},
        {"{\"symbols\": \"BTC-USDT\"}", "adapter.config.symbols"},
        {"{\"symbols\": []}", "adapter.config.symbols"},
        {"{\"symbols\": [\"BTC-USDT\", 5]}", "adapter.config.symbols[1]"},
        {"{\"symbols\": [\"BTCUSDT\"]}", "adapter.config.symbols[0]"},
        {"{\"symbols\": [\"BTC-USDT\", \"BTC-USDT\"]}", "adapter.config.symbols[1]"},
        {"{\"symbols\": [\"A-B-C\"]}", "adapter.config.symbols[0]"},
        /* one asset for both legs: a sell of it credited price x quantity of it */
        {"{\"symbols\": [\"ETH-USDT\", \"BTC-BTC\"]}", "adapter.config.symbols[1]"},
        {"{\"startPrices\": []}", "adapter.config.startPrices"},
        {"{\"startPrices\": {\"BTC-USDT\": 0}}", "adapter.config.startPrices.BTC-USDT"},
        {"{\"startPrices\": {\"BTC-USDT\": \"1\"}}", "adapter.config.startPrices.BTC-USDT"},
        {"{\"startPrices\": {\"XRP-USDT\": 1}}", "adapter.config.startPrices.XRP-USDT"},
        {"{\"balances\": 5}", "adapter.config.balances"},
        {"{\"balances\": {\"USDT\": -1}}", "adapter.config.balances.USDT"},
        {"{\"balances\": {\"US DT\": 1}}", "adapter.config.balances.US DT"},
        {"{\"tickrate\": 5}", "adapter.config.tickrate"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *req = json_pack("{s:s, s:{s:s, s:o}}", "name", "bad", "adapter", "identifier",
                                "simulated", "config", request(cases[i].config));
        struct err err = ERR_INIT;
        assert_int_equal(market_provider_create(m, req, NULL, &err), -1);
        if (err.kind != ERR_INVALID ||
            strcmp(json_string_value(json_object_get(err.details, "field")), cases[i].field) != 0 ||
            strncmp(err.message, cases[i].field, strlen(cases[i].field)) != 0)
            fail_msg("%s: %s", cases[i].config, err.message);
        err_clear(&err);
        json_decref(req);
    }
    /* the example message of the contract */
    json_t *req = json_pack("{s:s, s:{s:s, s:{s:i}}}", "name", "bad", "adapter", "identifier",
                            "simulated", "config", "tickRate", -5);
    struct err err = ERR_INIT;
    assert_int_equal(market_provider_create(m, req, NULL, &err), -1);
    assert_string_equal(err.message, "adapter.config.tickRate: expected a number >= 0");
    err_clear(&err);
    json_decref(req);
    assert_false(market_has_provider(m, "bad"));
}

static void test_adapters(void **state)
{
    (void)state;
    json_t *all = market_adapters_json();
    assert_int_equal(json_array_size(json_object_get(all, "adapters")), 1);
    json_t *a = json_array_get(json_object_get(all, "adapters"), 0);
    const char *required[] = {"identifier", "displayName", "venue", "capabilities",
                              "settingsSchema"};
    for (size_t i = 0; i < 5; i++)
        assert_non_null(json_object_get(a, required[i]));
    assert_string_equal(tu_jstr(a, "identifier"), "simulated");
    const char *settings[] = {"symbols",   "seed",     "tickRate", "volatility",      "startPrices",
                              "bookDepth", "balances", "feeRate",  "strictIncrements"};
    json_t *schema = json_object_get(a, "settingsSchema");
    assert_int_equal(json_array_size(schema), 9);
    for (size_t i = 0; i < 9; i++) {
        json_t *e = json_array_get(schema, i);
        assert_string_equal(tu_jstr(e, "name"), settings[i]);
        assert_true(json_is_string(json_object_get(e, "type")));
        assert_true(json_is_string(json_object_get(e, "description")));
        assert_true(json_is_boolean(json_object_get(e, "required")));
        assert_non_null(json_object_get(e, "default"));
    }
    assert_int_equal(tu_jint(schema, "2.default"), 10);
    json_decref(all);

    struct err err = ERR_INIT;
    json_t *one = market_adapter_json("simulated", &err);
    assert_string_equal(tu_jstr(one, "displayName"), "Simulated exchange");
    json_decref(one);
    assert_null(market_adapter_json("binance", &err));
    assert_int_equal(err.kind, ERR_NOT_FOUND);
    err_clear(&err);
}

static json_t *users_of(void *ctx, const char *provider)
{
    (void)ctx;
    return strcmp(provider, "used") == 0 ? json_pack("[s]", "inst-1") : NULL;
}

static void test_dependents(void **state)
{
    struct market *m = *state;
    market_set_dependents(m, users_of, NULL);
    tmarket_create(m, "used", "{}", false);
    tmarket_create(m, "free", "{}", false);
    struct err err = ERR_INIT;
    json_t *d = market_provider_json(m, "used", &err);
    assert_int_equal(tu_jint(d, "dependentInstanceCount"), 1);
    assert_string_equal(tu_jstr(d, "dependentInstances.0"), "inst-1");
    json_decref(d);
    d = market_provider_json(m, "free", &err);
    assert_int_equal(tu_jint(d, "dependentInstanceCount"), 0);
    json_decref(d);
    assert_int_equal(market_provider_delete(m, "used", &err), -1);
    assert_int_equal(err.kind, ERR_CONFLICT);
    assert_string_equal(
        json_string_value(json_array_get(json_object_get(err.details, "instances"), 0)), "inst-1");
    err_clear(&err);
    assert_true(market_has_provider(m, "used"));
    assert_int_equal(market_provider_delete(m, "free", &err), 0);
}

/* The records' decimal strings: as written, without an exponent where
 * one is not needed; what is not a number says so. */
static void test_decimal_text(void **state)
{
    (void)state;
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0.3, "0.3"},
        {43210.07, "43210.07"},
        {0.1 + 0.2, "0.3"},
        {1.23456789e-7, "0.000000123456789"},
        {0.00001, "0.00001"},
        {-0.0, "0"},
        {1e15, "1000000000000000"},
        {2.5e20, "250000000000000000000"},
        {-1e-9, "-0.000000001"},
        {1e300, "1e+300"},
        {1e-300, "1e-300"},
        {NAN, "NaN"},
        {INFINITY, "Infinity"},
        {-INFINITY, "-Infinity"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char text[SIM_DECIMAL_MAX];
        sim_decimal_text(cases[i].v, text, sizeof text);
        if (strcmp(text, cases[i].text) != 0)
            fail_msg("%.17g printed as %s, expected %s", cases[i].v, text, cases[i].text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decimal_text),
        cmocka_unit_test_setup_teardown(test_create_defaults_and_views, setup, teardown),
        cmocka_unit_test_setup_teardown(test_start_stop_update_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_requests_name_the_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_settings_name_the_field, setup, teardown),
        cmocka_unit_test_setup_teardown(test_adapters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dependents, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
