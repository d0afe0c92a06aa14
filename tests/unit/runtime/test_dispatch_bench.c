/*
 * Dispatch throughput and per-instance memory.
 *
 * The reference is a bare loop on one QuickJS sandbox that builds the same
 * three objects (ctx, evt, payload) per call and calls a trivial handler.
 * The runtime is measured end to end (events built and published by this
 * thread, queued, fanned out, delivered) for 1, 100 and 10,000 instances,
 * in deliveries per CPU second of the whole process. The figures are
 * printed, never asserted (timings belong to make bench); what is asserted
 * is that a fleet of 10,000 instances runs from one compilation.
 */
#include "rtfixture.h"

#include <sys/resource.h>

static int64_t process_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static long rss_kib(void)
{
    FILE *fp = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (fp) {
        if (fscanf(fp, "%ld %ld", &pages, &resident) != 2)
            resident = 0;
        fclose(fp);
    }
    return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ------------------------------------------------------------ baseline */

/* The same loop as bench/baseline_dispatch.c: a plain QuickJS runtime, atoms
 * interned once, properties defined directly, the same handler body. */
static const char BASELINE_HANDLER[] = "var count = 0, notional = 0;\n"
                                       "globalThis.onTrade = function (ctx, evt, payload) {\n"
                                       "  count++;\n"
                                       "  notional += payload.price * payload.quantity;\n"
                                       "};\n";

static void def(JSContext *ctx, JSValueConst obj, JSAtom atom, JSValue v)
{
    JS_DefinePropertyValue(ctx, obj, atom, v, JS_PROP_C_W_E);
}

/* Calls per CPU second of the bare loop. */
static double baseline_rate(long calls)
{
    JSRuntime *rt = JS_NewRuntime();
    JSContext *ctx = JS_NewContext(rt);
    JSValue r =
        JS_Eval(ctx, BASELINE_HANDLER, strlen(BASELINE_HANDLER), "bench.js", JS_EVAL_TYPE_GLOBAL);
    assert_false(JS_IsException(r));
    JS_FreeValue(ctx, r);
    JSValue global = JS_GetGlobalObject(ctx);
    JSValue fn = JS_GetPropertyStr(ctx, global, "onTrade");
    const char *names[] = {"instanceId", "strategy", "provider", "symbol", "type",   "seq",
                           "ts",         "price",    "quantity", "side",   "tradeId"};
    JSAtom a[11];
    for (int i = 0; i < 11; i++)
        a[i] = JS_NewAtom(ctx, names[i]);
    JSValue s_inst = JS_NewString(ctx, "bench-1"), s_strat = JS_NewString(ctx, "bench");
    JSValue s_prov = JS_NewString(ctx, "sim"), s_sym = JS_NewString(ctx, "BTC-USDT");
    JSValue s_type = JS_NewString(ctx, "Trade"), s_side = JS_NewString(ctx, "buy");
    int64_t t0 = process_cpu_ns();
    for (long i = 0; i < calls; i++) {
        JSValue args[3] = {JS_NewObject(ctx), JS_NewObject(ctx), JS_NewObject(ctx)};
        def(ctx, args[0], a[0], JS_DupValue(ctx, s_inst));
        def(ctx, args[0], a[1], JS_DupValue(ctx, s_strat));
        def(ctx, args[0], a[2], JS_DupValue(ctx, s_prov));
        def(ctx, args[0], a[3], JS_DupValue(ctx, s_sym));
        def(ctx, args[1], a[4], JS_DupValue(ctx, s_type));
        def(ctx, args[1], a[2], JS_DupValue(ctx, s_prov));
        def(ctx, args[1], a[3], JS_DupValue(ctx, s_sym));
        def(ctx, args[1], a[5], JS_NewInt64(ctx, i));
        def(ctx, args[1], a[6], JS_NewInt64(ctx, 1700000000000 + i));
        def(ctx, args[2], a[7], JS_NewFloat64(ctx, 50000.0 + (double)(i % 100)));
        def(ctx, args[2], a[8], JS_NewFloat64(ctx, 0.01));
        def(ctx, args[2], a[9], JS_DupValue(ctx, s_side));
        def(ctx, args[2], a[10], JS_NewInt64(ctx, i));
        JSValue ret = JS_Call(ctx, fn, JS_UNDEFINED, 3, args);
        JS_FreeValue(ctx, ret);
        for (int k = 0; k < 3; k++)
            JS_FreeValue(ctx, args[k]);
    }
    double rate = (double)calls / ((double)(process_cpu_ns() - t0) / 1e9);
    JSValue values[] = {s_inst, s_strat, s_prov, s_sym, s_type, s_side, fn, global};
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++)
        JS_FreeValue(ctx, values[i]);
    for (int i = 0; i < 11; i++)
        JS_FreeAtom(ctx, a[i]);
    JS_FreeContext(ctx);
    JS_FreeRuntime(rt);
    return rate;
}

/* ------------------------------------------------------------ runtime */

/* A strategy of about 5 KB, written the way strategies are: indicator
 * classes, state per symbol, a few handlers. onTrade stays trivial so the
 * figure measures dispatch, not the strategy. */
static const char FIVE_KB_STRATEGY[] =
    "// bench: rolling statistics, EMA and RSI per symbol; trades only counted.\n"
    "class Rolling {\n"
    "  constructor(size) { this.values = new Float64Array(size); this.next = 0; this.filled = 0; "
    "}\n"
    "  push(v) {\n"
    "    this.values[this.next] = v;\n"
    "    this.next = (this.next + 1) % this.values.length;\n"
    "    this.filled = Math.min(this.filled + 1, this.values.length);\n"
    "  }\n"
    "  get ready() { return this.filled === this.values.length; }\n"
    "  get mean() {\n"
    "    let sum = 0;\n"
    "    for (let i = 0; i < this.filled; i++) sum += this.values[i];\n"
    "    return this.filled ? sum / this.filled : 0;\n"
    "  }\n"
    "  get stddev() {\n"
    "    const m = this.mean;\n"
    "    let sq = 0;\n"
    "    for (let i = 0; i < this.filled; i++) sq += (this.values[i] - m) ** 2;\n"
    "    return this.filled ? Math.sqrt(sq / this.filled) : 0;\n"
    "  }\n"
    "}\n"
    "class Ema {\n"
    "  constructor(period) { this.k = 2 / (period + 1); this.value = null; }\n"
    "  push(v) { this.value = this.value === null ? v : v * this.k + this.value * (1 - this.k); }\n"
    "}\n"
    "class Rsi {\n"
    "  constructor(period) { this.period = period; this.gain = 0; this.loss = 0; this.last = null;"
    " this.n = 0; }\n"
    "  push(v) {\n"
    "    if (this.last !== null) {\n"
    "      const d = v - this.last;\n"
    "      const g = Math.max(d, 0), l = Math.max(-d, 0);\n"
    "      this.n = Math.min(this.n + 1, this.period);\n"
    "      this.gain += (g - this.gain) / this.n;\n"
    "      this.loss += (l - this.loss) / this.n;\n"
    "    }\n"
    "    this.last = v;\n"
    "  }\n"
    "  get value() { return this.loss === 0 ? 100 : 100 - 100 / (1 + this.gain / this.loss); }\n"
    "}\n"
    "function signal(state, price, config) {\n"
    "  const { stats, fast, slow, rsi } = state;\n"
    "  if (!stats.ready || fast.value === null || slow.value === null) return null;\n"
    "  const band = config.bands * stats.stddev;\n"
    "  if (price < stats.mean - band && fast.value > slow.value && rsi.value < config.oversold)\n"
    "    return 'buy';\n"
    "  if (price > stats.mean + band && fast.value < slow.value && rsi.value > config.overbought)\n"
    "    return 'sell';\n"
    "  return null;\n"
    "}\n"
    "class Vwap {\n"
    "  constructor() { this.volume = 0; this.notional = 0; }\n"
    "  push(price, quantity) { this.volume += quantity; this.notional += price * quantity; }\n"
    "  get value() { return this.volume ? this.notional / this.volume : null; }\n"
    "  reset() { this.volume = 0; this.notional = 0; }\n"
    "}\n"
    "function describe(state) {\n"
    "  return { mean: state.stats.mean, stddev: state.stats.stddev, fast: state.fast.value,\n"
    "           slow: state.slow.value, rsi: state.rsi.value, position: state.position };\n"
    "}\n"
    "module.exports = {\n"
    "  metadata: {\n"
    "    name: 'bench',\n"
    "    displayName: 'Dispatch benchmark',\n"
    "    description: 'Indicator state per symbol; counts trades and sizes nothing.',\n"
    "    events: ['Trade', 'Ticker', 'ExecReport'],\n"
    "    config: [\n"
    "      { name: 'window', type: 'int', default: 50, description: 'Rolling window.' },\n"
    "      { name: 'fast', type: 'int', default: 12, description: 'Fast EMA period.' },\n"
    "      { name: 'slow', type: 'int', default: 26, description: 'Slow EMA period.' },\n"
    "      { name: 'period', type: 'int', default: 14, description: 'RSI period.' },\n"
    "      { name: 'bands', type: 'float', default: 2, description: 'Deviations.' },\n"
    "      { name: 'oversold', type: 'float', default: 30, description: 'RSI floor.' },\n"
    "      { name: 'overbought', type: 'float', default: 70, description: 'RSI ceiling.' },\n"
    "      { name: 'size', type: 'float', default: 0.01, description: 'Order size.' },\n"
    "      { name: 'cooldown', type: 'duration', default: '5s', description: 'Pause.' },\n"
    "    ],\n"
    "  },\n"
    "  create(env) {\n"
    "    const { config, runtime, helpers } = env;\n"
    "    const states = new Map();\n"
    "    const pending = new Set();\n"
    "    let count = 0, notional = 0, lastOrder = 0;\n"
    "    const stateOf = (symbol) => {\n"
    "      let s = states.get(symbol);\n"
    "      if (!s) {\n"
    "        s = { stats: new Rolling(config.window), fast: new Ema(config.fast),\n"
    "              slow: new Ema(config.slow), rsi: new Rsi(config.period), position: 0 };\n"
    "        states.set(symbol, s);\n"
    "      }\n"
    "      return s;\n"
    "    };\n"
    "    const evaluate = (ctx, price) => {\n"
    "      const s = stateOf(ctx.symbol);\n"
    "      for (const ind of [s.stats, s.fast, s.slow, s.rsi]) ind.push(price);\n"
    "      const side = signal(s, price, config);\n"
    "      if (!side || pending.has(ctx.symbol) || Date.now() - lastOrder < config.cooldown) "
    "return;\n"
    "      pending.add(ctx.symbol);\n"
    "      lastOrder = Date.now();\n"
    "      runtime.submitMarketOrder(ctx.provider, side, config.size, ctx.symbol);\n"
    "      helpers.log('bench', side, ctx.symbol, describe(s));\n"
    "    };\n"
    "    return {\n"
    "      onTrade(ctx, evt, payload) {\n"
    "        count++;\n"
    "        notional += payload.price * payload.quantity;\n"
    "        if (count < 0) stateOf(ctx.symbol).vwap.push(payload.price, payload.quantity);\n"
    "      },\n"
    "      onTicker(ctx, evt, t) { evaluate(ctx, (t.bid + t.ask) / 2); },\n"
    "      onOrderFilled(ctx, evt, r) {\n"
    "        const s = stateOf(ctx.symbol);\n"
    "        s.position += r.side === 'buy' ? r.filledQuantity : -r.filledQuantity;\n"
    "        pending.delete(ctx.symbol);\n"
    "      },\n"
    "      onOrderRejected(ctx) { pending.delete(ctx.symbol); },\n"
    "      onOrderCancelled(ctx) { pending.delete(ctx.symbol); },\n"
    "    };\n"
    "  },\n"
    "};\n";

struct run {
    double rate;        /* deliveries per process CPU second */
    double worker_rate; /* deliveries per CPU second outside the publishing thread */
};

static struct run measure(struct fx *f, int instances, long deliveries)
{
    long events = deliveries / instances;
    struct runtime_stats st;
    runtime_stats(f->rt, &st);
    uint64_t start = st.events_delivered;
    uint64_t target = start + (uint64_t)events * (uint64_t)instances;
    int64_t cpu0 = process_cpu_ns(), self0 = clock_thread_cpu_ns();
    for (long i = 0; i < events; i++)
        fx_trade(f, "sim", "BTC-USDT", 100.5, 0.25);
    int64_t self = clock_thread_cpu_ns() - self0;
    do {
        fx_sleep_ms(1);
        runtime_stats(f->rt, &st);
    } while (st.events_delivered < target);
    /* the 1 ms polls cost this thread almost nothing */
    int64_t cpu = process_cpu_ns() - cpu0;
    struct run r;
    r.rate = (double)(st.events_delivered - start) / ((double)cpu / 1e9);
    r.worker_rate = (double)(st.events_delivered - start) / ((double)(cpu - self) / 1e9);
    return r;
}

static void test_dispatch_throughput(void **state)
{
    (void)state;
#ifdef STRATD_SANITIZE
    const int big = 500;
    const long deliveries = 100000;
#else
    const char *env = getenv("STRATD_BENCH_INSTANCES");
    const int big = env && atoi(env) > 100 ? atoi(env) : 10000;
    const long deliveries = 2000000;
#endif
    double base = baseline_rate(deliveries);
    struct fx f;
    fx_open(&f, 1);
    runtime_free(f.rt);
    f.opts.store = NULL;
    fx_start_runtime(&f);
    char hex[HASH_HEX_LEN + 1];
    fx_upload(&f, "bench", FIVE_KB_STRATEGY, NULL, hex);
    size_t src_len = strlen(FIVE_KB_STRATEGY);
    const int sizes[] = {1, 100, big};
    int created = 0;
    printf("baseline (bare loop, same three objects): %.0f calls per CPU second\n", base);
    for (size_t k = 0; k < 3; k++) {
        long rss0 = rss_kib();
        for (; created < sizes[k]; created++) {
            char id[32];
            snprintf(id, sizeof id, "b%05d", created);
            fx_run(&f, id, "bench", NULL, NULL);
        }
        long rss1 = rss_kib();
        if (k == 2) {
            json_t *snap = fx_snapshot(&f, "b00000");
            printf("%d instances of a %zu-byte strategy: %.1f KiB RSS each (JS heap %.1f KiB)\n",
                   sizes[k] - sizes[k - 1], src_len,
                   (double)(rss1 - rss0) / (sizes[k] - sizes[k - 1]),
                   (double)tu_jint(snap, "memory.bytes") / 1024);
            json_decref(snap);
        }
        struct run r = measure(&f, sizes[k], deliveries);
        printf("%5d instance(s): %.0f deliveries per process CPU second (%.2fx), "
               "%.0f per worker CPU second (%.2fx)\n",
               sizes[k], r.rate, r.rate / base, r.worker_rate, r.worker_rate / base);
    }
    struct runtime_stats st;
    runtime_stats(f.rt, &st);
    assert_int_equal(st.compilations, 1);
    assert_int_equal(st.running, big);
    fx_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_dispatch_throughput),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
