/*
 * The dispatch baseline: a bare QuickJS loop that builds the same three
 * argument objects the gateway passes to onTrade (ctx, evt, payload), with
 * property-name atoms interned once and properties defined directly, and
 * calls the same handler. Nothing of a gateway around it: no queues, no
 * routing, no budget checks. Prints calls per CPU second.
 *
 * The handler comes from a strategy module file (the same file the gateway
 * and the Node.js peers load): the module runs as CommonJS, create(env) is
 * called with the metadata's config defaults, and its onTrade is the
 * handler, called with `this` = the handlers object as the gateway does.
 *
 * The payload values come from EVENTS.bin (bench/events.c: the simulated
 * exchange's trades, replayed in a cycle) so the handler sees the numbers
 * the gateway delivers. Without it, prices are 50000 + i % 100: whole
 * numbers, which QuickJS stores as int32 values, and arithmetic mixing them
 * with the float quantity leaves the interpreter's fast paths, so that
 * loop measures a slower handler than the gateway runs.
 *
 * With "tuned", the loop also does the two things the gateway's delivery
 * does beyond the bare loop (src/runtime/vm.c): ctx is built once and
 * reused, and one object per prefix of the evt and payload layouts is kept
 * alive, so QuickJS finds every intermediate shape instead of creating and
 * freeing it per call (its objects die with the call and take their shapes
 * along). The gateway against the tuned loop is the cost of everything
 * else on its path.
 *
 * usage: baseline_dispatch MODULE.js [calls] [EVENTS.bin [tuned]]
 */
#include <quickjs.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Runs the module text between these two and returns create(env). */
static const char wrapper_head[] = "(function () {\n"
                                   "var module = { exports: {} };\n"
                                   "(function (module, exports) {\n";
static const char wrapper_tail[] =
    "\n})(module, module.exports);\n"
    "var m = module.exports, config = {};\n"
    "(m.metadata.config || []).forEach(function (f) { config[f.name] = f.default; });\n"
    "return m.create({ config: config, metadata: m.metadata,\n"
    "                  helpers: { log: function () {}, sleep: function () {} },\n"
    "                  runtime: {} });\n"
    "})()\n";

static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* The module wrapped so that evaluating it yields the handlers object. */
static char *read_wrapped(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    size_t head = sizeof wrapper_head - 1, tail = sizeof wrapper_tail - 1;
    char *text = size >= 0 ? malloc(head + (size_t)size + tail + 1) : NULL;
    if (!text || fread(text + head, 1, (size_t)size, f) != (size_t)size) {
        free(text);
        fclose(f);
        return NULL;
    }
    fclose(f);
    memcpy(text, wrapper_head, head);
    memcpy(text + head + (size_t)size, wrapper_tail, tail + 1);
    *len = head + (size_t)size + tail;
    return text;
}

/* EVENTS.bin: six float64 per trade (price, quantity, side, tradeId, seq,
 * ts). NULL when unreadable or empty. */
static double *read_events(const char *path, size_t *count)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    size_t n = size > 0 ? (size_t)size / (6 * sizeof(double)) : 0;
    double *rows = n ? malloc(n * 6 * sizeof(double)) : NULL;
    if (rows && fread(rows, sizeof(double), n * 6, f) != n * 6) {
        free(rows);
        rows = NULL;
    }
    fclose(f);
    *count = rows ? n : 0;
    return rows;
}

static void report_exception(JSContext *ctx)
{
    JSValue e = JS_GetException(ctx);
    const char *s = JS_ToCString(ctx, e);
    fprintf(stderr, "baseline_dispatch: %s\n", s ? s : "exception");
    JS_FreeCString(ctx, s);
    JS_FreeValue(ctx, e);
}

enum {
    A_INSTANCE,
    A_STRATEGY,
    A_PROVIDER,
    A_SYMBOL,
    A_TYPE,
    A_SEQ,
    A_TS,
    A_PRICE,
    A_QUANTITY,
    A_SIDE,
    A_TRADE_ID,
    A_COUNT
};

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: baseline_dispatch MODULE.js [calls] [EVENTS.bin [tuned]]\n");
        return 2;
    }
    long calls = argc > 2 ? atol(argv[2]) : 2000000;
    size_t nevents = 0;
    double *events = argc > 3 ? read_events(argv[3], &nevents) : NULL;
    if (argc > 3 && !events) {
        fprintf(stderr, "baseline_dispatch: cannot read %s\n", argv[3]);
        return 1;
    }
    size_t len = 0;
    char *source = read_wrapped(argv[1], &len);
    if (!source) {
        fprintf(stderr, "baseline_dispatch: cannot read %s\n", argv[1]);
        return 1;
    }
    JSRuntime *rt = JS_NewRuntime();
    JSContext *ctx = JS_NewContext(rt);
    JSValue handlers = JS_Eval(ctx, source, len, argv[1], JS_EVAL_TYPE_GLOBAL);
    free(source);
    if (JS_IsException(handlers)) {
        report_exception(ctx);
        return 1;
    }
    JSValue handler = JS_GetPropertyStr(ctx, handlers, "onTrade");
    if (!JS_IsFunction(ctx, handler)) {
        fprintf(stderr, "baseline_dispatch: %s has no onTrade handler\n", argv[1]);
        return 1;
    }
    static const char *const names[A_COUNT] = {"instanceId", "strategy", "provider", "symbol",
                                               "type",       "seq",      "ts",       "price",
                                               "quantity",   "side",     "tradeId"};
    JSAtom atoms[A_COUNT];
    for (int i = 0; i < A_COUNT; i++)
        atoms[i] = JS_NewAtom(ctx, names[i]);
    JSValue s_instance = JS_NewString(ctx, "bench-1"), s_strategy = JS_NewString(ctx, "bench");
    JSValue s_provider = JS_NewString(ctx, "sim"), s_symbol = JS_NewString(ctx, "BTC-USDT");
    JSValue s_trade = JS_NewString(ctx, "Trade"), s_buy = JS_NewString(ctx, "buy");
    JSValue s_sell = JS_NewString(ctx, "sell");
    const int flags = JS_PROP_C_W_E;
    bool tuned = argc > 4 && strcmp(argv[4], "tuned") == 0;
    JSValue ctx_once = JS_UNDEFINED;
    JSValue prefixes[9];
    int nprefixes = 0;
    if (tuned) {
        ctx_once = JS_NewObject(ctx);
        JS_DefinePropertyValue(ctx, ctx_once, atoms[A_INSTANCE], JS_DupValue(ctx, s_instance),
                               flags);
        JS_DefinePropertyValue(ctx, ctx_once, atoms[A_STRATEGY], JS_DupValue(ctx, s_strategy),
                               flags);
        JS_DefinePropertyValue(ctx, ctx_once, atoms[A_PROVIDER], JS_DupValue(ctx, s_provider),
                               flags);
        JS_DefinePropertyValue(ctx, ctx_once, atoms[A_SYMBOL], JS_DupValue(ctx, s_symbol), flags);
        static const int evt_layout[] = {A_TYPE, A_PROVIDER, A_SYMBOL, A_SEQ, A_TS};
        static const int payload_layout[] = {A_PRICE, A_QUANTITY, A_SIDE, A_TRADE_ID};
        for (int k = 1; k <= 5; k++) {
            JSValue o = JS_NewObject(ctx);
            for (int j = 0; j < k; j++)
                JS_DefinePropertyValue(ctx, o, atoms[evt_layout[j]], JS_UNDEFINED, flags);
            prefixes[nprefixes++] = o;
        }
        for (int k = 1; k <= 4; k++) {
            JSValue o = JS_NewObject(ctx);
            for (int j = 0; j < k; j++)
                JS_DefinePropertyValue(ctx, o, atoms[payload_layout[j]], JS_UNDEFINED, flags);
            prefixes[nprefixes++] = o;
        }
    }

    double start = cpu_seconds();
    for (long i = 0; i < calls; i++) {
        /* price, quantity, side, tradeId, seq, ts */
        double synthetic[6] = {50000.0 + (double)(i % 100), 0.01, 0, (double)i, (double)i,
                               1700000000000.0 + (double)i};
        const double *e = events ? &events[(size_t)i % nevents * 6] : synthetic;
        JSValue args[3];
        if (tuned) {
            args[0] = JS_DupValue(ctx, ctx_once);
        } else {
            args[0] = JS_NewObject(ctx);
            JS_DefinePropertyValue(ctx, args[0], atoms[A_INSTANCE], JS_DupValue(ctx, s_instance),
                                   flags);
            JS_DefinePropertyValue(ctx, args[0], atoms[A_STRATEGY], JS_DupValue(ctx, s_strategy),
                                   flags);
            JS_DefinePropertyValue(ctx, args[0], atoms[A_PROVIDER], JS_DupValue(ctx, s_provider),
                                   flags);
            JS_DefinePropertyValue(ctx, args[0], atoms[A_SYMBOL], JS_DupValue(ctx, s_symbol),
                                   flags);
        }
        args[1] = JS_NewObject(ctx);
        JS_DefinePropertyValue(ctx, args[1], atoms[A_TYPE], JS_DupValue(ctx, s_trade), flags);
        JS_DefinePropertyValue(ctx, args[1], atoms[A_PROVIDER], JS_DupValue(ctx, s_provider),
                               flags);
        JS_DefinePropertyValue(ctx, args[1], atoms[A_SYMBOL], JS_DupValue(ctx, s_symbol), flags);
        JS_DefinePropertyValue(ctx, args[1], atoms[A_SEQ], JS_NewInt64(ctx, (int64_t)e[4]), flags);
        JS_DefinePropertyValue(ctx, args[1], atoms[A_TS], JS_NewInt64(ctx, (int64_t)e[5]), flags);
        args[2] = JS_NewObject(ctx);
        JS_DefinePropertyValue(ctx, args[2], atoms[A_PRICE], JS_NewFloat64(ctx, e[0]), flags);
        JS_DefinePropertyValue(ctx, args[2], atoms[A_QUANTITY], JS_NewFloat64(ctx, e[1]), flags);
        JS_DefinePropertyValue(ctx, args[2], atoms[A_SIDE],
                               JS_DupValue(ctx, e[2] == 0 ? s_buy : s_sell), flags);
        JS_DefinePropertyValue(ctx, args[2], atoms[A_TRADE_ID], JS_NewInt64(ctx, (int64_t)e[3]),
                               flags);
        JSValue ret = JS_Call(ctx, handler, handlers, 3, (JSValueConst *)args);
        if (JS_IsException(ret))
            report_exception(ctx);
        JS_FreeValue(ctx, ret);
        for (int k = 0; k < 3; k++)
            JS_FreeValue(ctx, args[k]);
    }
    double elapsed = cpu_seconds() - start;
    printf("%.0f\n", (double)calls / elapsed);

    for (int i = 0; i < nprefixes; i++)
        JS_FreeValue(ctx, prefixes[i]);
    JS_FreeValue(ctx, ctx_once);
    for (int i = 0; i < A_COUNT; i++)
        JS_FreeAtom(ctx, atoms[i]);
    JSValue strings[] = {s_instance, s_strategy, s_provider, s_symbol, s_trade, s_buy, s_sell};
    for (size_t i = 0; i < sizeof strings / sizeof strings[0]; i++)
        JS_FreeValue(ctx, strings[i]);
    JS_FreeValue(ctx, handler);
    JS_FreeValue(ctx, handlers);
    JS_FreeContext(ctx);
    JS_FreeRuntime(rt);
    free(events);
    return 0;
}
