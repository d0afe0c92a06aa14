#include "testutil.h"

#include "core/clock.h"
#include "js/module.h"
#include "js/sandbox.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

#define FILE_JS "strat.js"

/* Compiles `src` and runs it as a global script in `sb` under its budget,
 * then its promise jobs. Returns the completion value, or JS_EXCEPTION with
 * the failure left for js_sandbox_take_exception(). */
static JSValue run(struct js_sandbox *sb, const char *src)
{
    struct js_bytecode *bc = NULL;
    struct err err = ERR_INIT;
    if (js_compile(src, strlen(src), FILE_JS, &bc, &err) < 0)
        fail_msg("compile failed: %s", err.message);
    js_sandbox_arm(sb, 0);
    JSValue fn = JS_ReadObject(sb->ctx, bc->data, bc->len, JS_READ_OBJ_BYTECODE);
    JSValue value = JS_IsException(fn) ? fn : JS_EvalFunction(sb->ctx, fn);
    if (!JS_IsException(value) && js_sandbox_run_jobs(sb) < 0) {
        JS_FreeValue(sb->ctx, value);
        value = JS_EXCEPTION;
    }
    js_sandbox_disarm(sb);
    js_bytecode_release(bc);
    return value;
}

/* The completion value of `src` as text; fails the test on an exception. */
static char *eval_text(struct js_sandbox *sb, const char *src)
{
    JSValue value = run(sb, src);
    if (JS_IsException(value)) {
        struct js_exception ex;
        js_sandbox_take_exception(sb, FILE_JS, &ex);
        fail_msg("unexpected exception %s: %s", ex.name, ex.message);
    }
    const char *text = JS_ToCString(sb->ctx, value);
    char *copy = strdup(text ? text : "(null)");
    JS_FreeCString(sb->ctx, text);
    JS_FreeValue(sb->ctx, value);
    return copy;
}

static void assert_eval(struct js_sandbox *sb, const char *src, const char *expected)
{
    char *text = eval_text(sb, src);
    if (strcmp(text, expected) != 0)
        fail_msg("%s\n  gave '%s', expected '%s'", src, text, expected);
    free(text);
}

/* Runs `src`, which must fail, and returns how. */
static void expect_failure(struct js_sandbox *sb, const char *src, struct js_exception *ex)
{
    JSValue value = run(sb, src);
    if (!JS_IsException(value))
        fail_msg("expected a failure from: %s", src);
    js_sandbox_take_exception(sb, FILE_JS, ex);
    assert_false(JS_HasException(sb->ctx));
}

static void init_sandbox(struct js_sandbox *sb, size_t memory, int64_t budget_ns)
{
    struct js_limits limits = {memory, 0, budget_ns};
    struct err err = ERR_INIT;
    if (js_sandbox_init(sb, &limits, &err) < 0)
        fail_msg("js_sandbox_init: %s", err.message);
}

/* assert_eval in a fresh sandbox under the defaults. */
static void assert_eval_fresh(const char *src, const char *expected)
{
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    assert_eval(&sb, src, expected);
    js_sandbox_free(&sb);
}

/* --------------------------------------------------------------- tests */

static void test_init_applies_defaults(void **state)
{
    (void)state;
    struct js_sandbox sb;
    struct err err = ERR_INIT;
    assert_int_equal(js_sandbox_init(&sb, NULL, &err), 0);
    assert_int_equal(sb.limits.memory_bytes, JS_SANDBOX_DEFAULT_MEMORY);
    assert_int_equal(sb.limits.stack_bytes, JS_SANDBOX_DEFAULT_STACK);
    assert_int_equal(sb.limits.budget_ns, JS_SANDBOX_DEFAULT_BUDGET_NS);
    assert_int_equal(sb.deadline_ns, 0);
    assert_false(sb.overran);
    JSMemoryUsage usage;
    JS_ComputeMemoryUsage(sb.rt, &usage);
    assert_true(js_sandbox_memory_used(&sb) > 0);
    assert_int_equal((int64_t)js_sandbox_memory_used(&sb), usage.malloc_size);
    assert_eval(&sb, "1 + 1", "2");
    js_sandbox_free(&sb);
    assert_null(sb.rt);
    js_sandbox_free(&sb); /* twice is harmless */
}

static void test_init_refuses_tiny_cap(void **state)
{
    (void)state;
    struct js_sandbox sb;
    struct js_limits limits = {16u << 10, 0, 0};
    struct err err = ERR_INIT;
    assert_int_equal(js_sandbox_init(&sb, &limits, &err), -1);
    assert_int_equal(err.kind, ERR_INVALID);
    assert_non_null(strstr(err.message, "fresh sandbox needs"));
    assert_null(sb.rt);
    err_clear(&err);
}

/* A sandbox built with the defaults takes another instance's limits
 * before any code runs in it, and they bind as if given at init. */
static void test_set_limits(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    struct err err = ERR_INIT;
    struct js_limits tiny = {16u << 10, 0, 0};
    assert_int_equal(js_sandbox_set_limits(&sb, &tiny, &err), -1);
    assert_int_equal(err.kind, ERR_INVALID);
    assert_non_null(strstr(err.message, "fresh sandbox needs"));
    assert_int_equal(sb.limits.memory_bytes, JS_SANDBOX_DEFAULT_MEMORY);
    err_clear(&err);
    struct js_limits limits = {2u << 20, 64u << 10, 7 * 1000 * 1000};
    assert_int_equal(js_sandbox_set_limits(&sb, &limits, &err), 0);
    assert_int_equal(sb.limits.memory_bytes, 2u << 20);
    assert_int_equal(sb.limits.stack_bytes, 64u << 10);
    assert_int_equal(sb.limits.budget_ns, 7 * 1000 * 1000);
    struct js_exception ex;
    /* one block the default cap would grant: refused before any byte is
     * touched, so the 7 ms budget cannot run out first, even under a
     * sanitizer on a loaded machine (filling the cap there took longer) */
    expect_failure(&sb, "new ArrayBuffer(4 << 20);", &ex);
    assert_int_equal(ex.failure, JS_FAILURE_MEMORY);
    js_exception_free(&ex);
    expect_failure(&sb, "function f(n) { return f(n + 1) + 1; } f(0);", &ex);
    assert_int_equal(ex.failure, JS_FAILURE_STACK);
    js_exception_free(&ex);
    expect_failure(&sb, "for (;;) {}", &ex);
    assert_int_equal(ex.failure, JS_FAILURE_BUDGET);
    js_exception_free(&ex);
    js_sandbox_free(&sb);
}

static void test_closed_to_host(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    static const char *const absent[] = {
        "require",
        "std",
        "os",
        "scriptArgs",
        "print",
        "console",
        "process",
        "module",
        "exports",
        "load",
        "setTimeout",
        "setInterval",
        "fetch",
        "XMLHttpRequest",
        "Worker",
        "bjson",
        "__loadScript",
        "globalThis.std",
        "globalThis.os",
        "Deno",
        "Bun",
    };
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
        char src[128];
        snprintf(src, sizeof(src), "typeof %s", absent[i]);
        assert_eval(&sb, src, "undefined");
    }
    js_sandbox_free(&sb);
}

static void test_builtins_present(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    static const char *const functions[] = {
        "Object",
        "Array",
        "Date",
        "RegExp",
        "Map",
        "Set",
        "WeakMap",
        "WeakSet",
        "Promise",
        "WeakRef",
        "FinalizationRegistry",
        "BigInt",
        "Proxy",
        "Symbol",
        "ArrayBuffer",
        "Uint8Array",
        "Float64Array",
        "DataView",
        "Error",
        "TypeError",
        "parseFloat",
    };
    for (size_t i = 0; i < sizeof(functions) / sizeof(functions[0]); i++) {
        char src[128];
        snprintf(src, sizeof(src), "typeof %s", functions[i]);
        assert_eval(&sb, src, "function");
    }
    assert_eval(&sb, "typeof JSON + typeof Math + typeof Reflect", "objectobjectobject");
    assert_eval(&sb, "JSON.stringify({a: [1, 2n].map(String)})", "{\"a\":[\"1\",\"2\"]}");
    assert_eval(&sb, "/b+/.exec('abbbc')[0] + new RegExp('c$').test('abc')", "bbbtrue");
    assert_eval(&sb, "typeof Date.now() + new Date(0).toISOString()",
                "number1970-01-01T00:00:00.000Z");
    js_sandbox_free(&sb);
}

/* normalize and localeCompare are there (code-point order after
 * canonical normalization: no locale data). */
static void test_normalize_and_locale_compare(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    assert_eval(&sb, "'e\\u0301'.normalize() === '\\u00e9'", "true");
    assert_eval(&sb, "'\\u00e9'.normalize('NFD').length", "2");
    assert_eval(&sb, "['b', 'c', 'a'].sort((x, y) => x.localeCompare(y)).join()", "a,b,c");
    assert_eval(&sb, "'e\\u0301'.localeCompare('\\u00e9')", "0");
    js_sandbox_free(&sb);
}

static void test_eval_and_function_constructor_refused(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    static const char *const attempts[] = {
        "eval('1 + 1')",
        "(0, eval)('1 + 1')",
        "new Function('return 1')()",
        "Function('return 1')()",
        "(function () {}).constructor('return 1')()",
    };
    for (size_t i = 0; i < sizeof(attempts) / sizeof(attempts[0]); i++) {
        struct js_exception ex;
        expect_failure(&sb, attempts[i], &ex);
        assert_int_equal(ex.failure, JS_FAILURE_EXCEPTION);
        js_exception_free(&ex);
    }
    js_sandbox_free(&sb);
}

static void test_module_loading_refused(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    /* Dynamic import compiles, then rejects: there is no module loader. */
    assert_eval(&sb,
                "var outcome = 'pending';"
                "import('os').then(() => { outcome = 'loaded'; },"
                "                  (e) => { outcome = 'refused: ' + e.message; });",
                "[object Promise]");
    assert_eval(&sb, "outcome", "refused: could not load module 'os'");
    assert_eval(&sb,
                "var outcome2 = 'pending';"
                "import('./strat.js').then(() => { outcome2 = 'loaded'; }, () => {"
                " outcome2 = 'refused'; });",
                "[object Promise]");
    assert_eval(&sb, "outcome2", "refused");
    js_sandbox_free(&sb);

    /* Static imports do not even compile: a strategy is a script. */
    static const char *const statics[] = {"import os from 'os';", "import * as std from 'std';",
                                          "export const x = 1;"};
    for (size_t i = 0; i < sizeof(statics) / sizeof(statics[0]); i++) {
        struct js_bytecode *bc = NULL;
        struct err err = ERR_INIT;
        assert_int_equal(js_compile(statics[i], strlen(statics[i]), FILE_JS, &bc, &err), -1);
        assert_int_equal(err.kind, ERR_UNPROCESSABLE);
        assert_null(bc);
        err_clear(&err);
    }
}

static void test_atomics_wait_refused(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    struct js_exception ex;
    expect_failure(&sb, "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 1000)", &ex);
    assert_int_equal(ex.failure, JS_FAILURE_EXCEPTION);
    assert_string_equal(ex.name, "TypeError");
    js_exception_free(&ex);
    js_sandbox_free(&sb);
}

static void test_budget_stops_endless_loop(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 30LL * 1000 * 1000);
    static const char *const loops[] = {
        "while (true) {}",
        "for (;;) { try { while (true) {} } catch (e) {} }",
        "try { while (true) {} } finally { while (true) {} }",
        "function spin() { for (;;) {} }\nspin();",
    };
    for (size_t i = 0; i < sizeof(loops) / sizeof(loops[0]); i++) {
        int64_t start = clock_mono_ns();
        struct js_exception ex;
        expect_failure(&sb, loops[i], &ex);
        int64_t took = clock_mono_ns() - start;
        assert_true(js_sandbox_overran(&sb));
        assert_int_equal(ex.failure, JS_FAILURE_BUDGET);
        assert_string_equal(ex.name, "InternalError");
        assert_string_equal(ex.message, "interrupted");
        assert_true(took >= 30LL * 1000 * 1000);
        assert_true(took < 2000LL * 1000 * 1000);
        js_exception_free(&ex);
        /* The next window starts clean and the sandbox still works. */
        assert_eval(&sb, "[1, 2, 3].reduce((a, b) => a + b)", "6");
        assert_false(js_sandbox_overran(&sb));
    }
    js_sandbox_free(&sb);
}

/* A stop for the budget names the function the interrupt struck in and
 * where its caller called it, read from the stack QuickJS leaves (whose
 * innermost position, in a loop that calls nothing, is only the
 * function's first line); one for the stack names the recursion, and one
 * for the heap cap is placed as a budget's is. */
static void test_interrupt_placed_by_its_caller(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 30LL * 1000 * 1000);
    static const struct {
        const char *src, *starts, *ends;
    } cases[] = {
        {"function spin(n) {\n  let x = 0;\n  for (;;) x += n;\n}\n"
         "function onTrade() {\n  return spin(2);\n}\nonTrade();\n",
         "in spin, called at strat.js:6:3 (in onTrade)", ""},
        {"function fib(n) {\n  return n < 2 ? n : fib(n - 1) + fib(n - 2);\n}\n"
         "function onTrade() {\n  return fib(60);\n}\nonTrade();\n",
         "in fib, ", " calls deep, called at strat.js:5:3 (in onTrade)"},
        {"const hay = 'x'.repeat(1e6), needle = 'x'.repeat(5e5) + 'y';\n"
         "function onTrade() {\n  for (;;) hay.indexOf(needle);\n}\nonTrade();\n",
         "in indexOf (native), called at strat.js:3:23 (in onTrade)", ""},
        /* the loop of the outermost function: nothing to add */
        {"while (true) {}\n", "", ""},
        /* a recursion past the stack limit: its caller is beyond the stack kept */
        {"function down(n) {\n  return down(n + 1) + 1;\n}\nfunction onTrade() {\n"
         "  return down(0);\n}\nonTrade();\n",
         "in down, more than ", " calls deep"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        struct js_exception ex;
        expect_failure(&sb, cases[i].src, &ex);
        assert_int_equal(ex.failure, i == 4 ? JS_FAILURE_STACK : JS_FAILURE_BUDGET);
        char where[256];
        js_exception_where(&ex, FILE_JS, where, sizeof where);
        size_t n = strlen(where), tail = strlen(cases[i].ends);
        bool exact = !*cases[i].ends;
        if ((exact && strcmp(where, cases[i].starts) != 0) ||
            (!exact && (strncmp(where, cases[i].starts, strlen(cases[i].starts)) != 0 || n < tail ||
                        strcmp(where + n - tail, cases[i].ends) != 0)))
            fail_msg("interrupted '%s' for the stack\n%s\nof\n%s", where, ex.stack, cases[i].src);
        js_exception_free(&ex);
    }
    js_sandbox_free(&sb);
    /* the heap cap, the same way */
    init_sandbox(&sb, 8u << 20, 1000LL * 1000 * 1000);
    struct js_exception ex;
    expect_failure(
        &sb,
        "const keep = [];\nfunction grow() {\n  keep.push(new ArrayBuffer(1 << 20));\n}\n"
        "function onTrade() {\n  for (;;) grow();\n}\nonTrade();\n",
        &ex);
    assert_int_equal(ex.failure, JS_FAILURE_MEMORY);
    char where[256];
    js_exception_where(&ex, FILE_JS, where, sizeof where);
    assert_string_equal(where, "in grow, called at strat.js:6:16 (in onTrade)");
    js_exception_free(&ex);
    js_sandbox_free(&sb);
}

/* Runs `loop` (which counts its turns in globalThis.turns) to its budget
 * and returns how many turns it made. */
static long turns_to_budget(struct js_sandbox *sb, const char *loop)
{
    struct js_exception ex;
    expect_failure(sb, loop, &ex);
    assert_true(js_sandbox_overran(sb));
    assert_int_equal(ex.failure, JS_FAILURE_BUDGET);
    js_exception_free(&ex);
    char *turns = eval_text(sb, "String(globalThis.turns)");
    long n = strtol(turns, NULL, 10);
    free(turns);
    return n;
}

/* A loop whose every turn is one long native call polls QuickJS's
 * interrupt once or twice a turn; the budget must stop it within a few
 * turns of running out, not after the hundreds of turns a poll count
 * would let pass (as shipped, QuickJS calls the handler every 10,000 polls:
 * 3,300 turns of the first loop here; every 128 polls, about 130 of the
 * second). The second loop runs again after the budget's time base has
 * been idle long enough to sleep, and must be stopped as soon. */
static void test_budget_stops_native_heavy_loop(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 20LL * 1000 * 1000);
    long n = turns_to_budget(&sb, "globalThis.turns = 0;\n"
                                  "for (;;) { turns++; new Error(new Array(2e4).fill(1)); }");
    if (n <= 0 || n >= 1000)
        fail_msg("the array loop made %ld turns under a 20 ms budget", n);
    static const char replace_loop[] = "globalThis.turns = 0;\n"
                                       "{\n"
                                       "  const text = 'a'.repeat(2e5);\n"
                                       "  for (;;) { turns++; text.replaceAll('a', 'bb'); }\n"
                                       "}";
    n = turns_to_budget(&sb, replace_loop);
    if (n <= 0 || n > 24)
        fail_msg("the replace loop made %ld turns under a 20 ms budget", n);
    struct timespec idle = {1, 0};
    nanosleep(&idle, NULL);
    n = turns_to_budget(&sb, replace_loop);
    if (n <= 0 || n > 24)
        fail_msg("after an idle pause, the replace loop made %ld turns", n);
    js_sandbox_free(&sb);
}

/* Natives that walk a sparse array or an array-like index by index make no
 * call and no jump QuickJS would poll at: each of these is one call that,
 * unpolled, runs for hours. Each must stop at its budget like a loop. */
static void test_budget_stops_index_walks(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 20LL * 1000 * 1000);
    static const char *const walks[] = {
        "new Array(2 ** 32 - 1).indexOf(1);",
        "Array.prototype.includes.call({length: 2 ** 53 - 1}, 1);",
        "Array.prototype.lastIndexOf.call({length: 2 ** 53 - 1}, 1);",
        "Array.prototype.join.call({length: 2 ** 32 - 1}, '');",
        "new Array(2 ** 32 - 1).forEach(() => {});",
        "{ const a = []; a[2 ** 32 - 2] = 1; a.reverse(); }",
        "{ const a = []; a.length = 2 ** 32 - 2; a.unshift(1); }",
        "String.raw({raw: {length: 2 ** 32 - 1}});",
    };
    for (size_t i = 0; i < sizeof(walks) / sizeof(walks[0]); i++) {
        struct js_exception ex;
        expect_failure(&sb, walks[i], &ex);
        if (ex.failure != JS_FAILURE_BUDGET)
            fail_msg("%s: failed with %d (%s)", walks[i], (int)ex.failure, ex.message);
        js_exception_free(&ex);
    }
    js_sandbox_free(&sb);
}

/* Runs `src` in a sandbox of its own under `budget_ns`, which must stop it;
 * returns the global `phase` it had reached (the caller frees it) and how
 * it failed in `ex` (the caller frees it with js_exception_free). */
static char *phase_when_stopped(const char *src, int64_t budget_ns, struct js_exception *ex)
{
    struct js_sandbox sb;
    init_sandbox(&sb, 256 << 20, budget_ns);
    JSValue value = run(&sb, src);
    if (!JS_IsException(value))
        fail_msg("the program ran to its end past a %lld ms budget: %s",
                 (long long)(budget_ns / 1000000), src);
    js_sandbox_take_exception(&sb, FILE_JS, ex);
    char *phase = eval_text(&sb, "String(globalThis.phase)");
    js_sandbox_free(&sb);
    return phase;
}

/* Runs `build` then `call` under a budget that starts small and doubles
 * while the build alone spends it; the budget must stop the program while
 * it is in `phase` (the call's), on a fast machine as on a slow one. */
static void expect_stopped_while(const char *build, const char *call, const char *phase)
{
    char *src = tu_path("%s%s", build, call);
    for (int64_t budget = 10LL * 1000 * 1000;; budget *= 2) {
        struct js_exception ex;
        char *reached = phase_when_stopped(src, budget, &ex);
        bool retry = strcmp(reached, "building") == 0 && budget < 3200LL * 1000 * 1000;
        if (!retry && (ex.failure != JS_FAILURE_BUDGET || strcmp(reached, phase) != 0))
            fail_msg("%s: failed with %d (%s) while %s", call, (int)ex.failure, ex.message,
                     reached);
        free(reached);
        js_exception_free(&ex);
        if (!retry)
            break;
    }
    free(src);
}

/* A sort is one native call that, unpolled, runs for seconds inside the
 * memory cap (a typed array of 60 MiB: about 2 s). Each program records
 * its phase; the budget must stop it while it sorts. The budget starts
 * small and doubles while building the input alone spends it, so the sort
 * always starts with less budget left than it needs (each sort takes three
 * or more times as long as its build) on a fast machine as on a slow one. */
static void test_budget_stops_sorts(void **state)
{
    (void)state;
    static const char typed[] = "globalThis.phase = 'building';\n"
                                "const a = new Uint16Array(30 << 20);\n"
                                "for (let i = 0; i < 4096; i++) a[i] = (i * 40503) & 65535;\n"
                                "for (let n = 4096; n < a.length; n *= 2) a.copyWithin(n, 0, n);\n"
                                "phase = 'sorting';\n";
    static const char strings[] = "globalThis.phase = 'building';\n"
                                  "const a = Object.keys(new Int8Array(1 << 20)).reverse();\n"
                                  "phase = 'sorting';\n";
    static const char *const sorts[][2] = {
        {typed, "a.sort(); phase = 'sorted';"},
        {typed, "a.toSorted(); phase = 'sorted';"},
        {strings, "a.sort(); phase = 'sorted';"},
        {strings, "a.toSorted(); phase = 'sorted';"},
    };
    for (size_t i = 0; i < sizeof(sorts) / sizeof(sorts[0]); i++)
        expect_stopped_while(sorts[i][0], sorts[i][1], "sorting");
}

/* Searching a string for another compares the needle at each position: one
 * call that, unpolled, runs for seconds (for minutes with a needle of half a
 * million characters); replacing 25 million one-character matches is one
 * call of about 2 s. Converting a BigInt of a million bits to decimal is
 * one call of about a second, compiling a regular expression of 300,000
 * alternatives one of several. Each must stop at its budget. */
static void test_budget_stops_searches(void **state)
{
    (void)state;
    static const char strings[] =
        "globalThis.phase = 'building';\n"
        "const hay = 'x'.repeat(100000), needle = 'x'.repeat(20000) + 'y';\n"
        "phase = 'searching';\n";
    static const char wide[] = "globalThis.phase = 'building';\n"
                               "const hay = '\\u0100'.repeat(100000);\n"
                               "const needle = '\\u0100'.repeat(20000) + 'y';\n"
                               "phase = 'searching';\n";
    static const char bigint[] = "globalThis.phase = 'building';\n"
                                 "const big = (1n << 1000000n) - 1n;\n"
                                 "phase = 'searching';\n";
    static const char pattern[] = "globalThis.phase = 'building';\n"
                                  "const source = '^(?:a' + '|w1'.repeat(300000) + ')$';\n"
                                  "phase = 'searching';\n";
    static const char matches[] = "globalThis.phase = 'building';\n"
                                  "const hay = 'a'.repeat(25000000);\n"
                                  "phase = 'searching';\n";
    static const char *const searches[][2] = {
        {strings, "hay.indexOf(needle); phase = 'done';"},
        {wide, "hay.indexOf(needle); phase = 'done';"},
        {strings, "hay.lastIndexOf(needle); phase = 'done';"},
        {strings, "hay.includes(needle); phase = 'done';"},
        {strings, "hay.split(needle); phase = 'done';"},
        {strings, "hay.replace(needle, ''); phase = 'done';"},
        {strings, "hay.replaceAll(needle, ''); phase = 'done';"},
        {matches, "hay.replaceAll('a', ''); phase = 'done';"},
        {matches, "hay.replaceAll('a', 'bc').length; phase = 'done';"},
        {bigint, "big.toString(); phase = 'done';"},
        {pattern, "new RegExp(source); phase = 'done';"},
    };
    for (size_t i = 0; i < sizeof(searches) / sizeof(searches[0]); i++)
        expect_stopped_while(searches[i][0], searches[i][1], "searching");
}

/* Searches still find what they look for, polled or not. */
static void test_searches_answer_as_before(void **state)
{
    (void)state;
    /* The answers matter here, not the time: the default 50 ms budget is
     * too short for these searches under the sanitizers on a loaded
     * machine. */
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 60LL * 1000 * 1000 * 1000);
    assert_eval(
        &sb,
        "const hay = 'ab'.repeat(50000) + 'needle' + 'ab'.repeat(50000);\n"
        "[hay.indexOf('needle'), hay.lastIndexOf('ab'), hay.includes('bneedlea'),\n"
        " hay.split('needle').length, hay.replace('needle', '').length,\n"
        " hay.replaceAll('ba', '').length, hay.indexOf('needle', 100001),\n"
        " String((1n << 4000n) - 1n).slice(0, 6), String((1n << 4000n) - 1n).slice(-6),\n"
        " 'xabcx'.match(/(?<=xab)c|q|z/).index, /^(?:q|w|e|r|t|y)+$/.test('qwerty')].join()",
        "100000,200004,true,2,200000,10,-1,131820,949375,3,true");
    js_sandbox_free(&sb);
}

/* `x++` and `x--` outside a function's own locals take the build's integer
 * fast path (scripts/install-deps.sh): at the int32 limits, on non-integers,
 * strings, objects, BigInts and undefined they must answer as the language
 * says, value before and after alike. */
static void test_post_increments_answer_as_before(void **state)
{
    (void)state;
    assert_eval_fresh(
        "const box = {a: 2147483646, b: -2147483647, c: 1.5, d: '7', e: 10n, f: undefined,\n"
        "             g: {valueOf() { return 41; }}, h: -0, i: 0};\n"
        "const out = [];\n"
        "for (let k = 0; k < 2; k++) out.push(box.a++, box.b--);\n"
        "out.push(box.a, box.b, box.c++, box.c, box.d++, box.d, box.e--, box.e, box.f++,\n"
        "         box.f, box.g++, box.g, Object.is(box.h--, -0), box.h, box.i--, box.i);\n"
        "let n = 0; const count = () => n++; for (let k = 0; k < 1000; k++) count();\n"
        "out.push(n, typeof box.a, typeof box.e);\n"
        "out.join()",
        "2147483646,-2147483647,2147483647,-2147483648,2147483648,-2147483649,1.5,2.5,7,8,"
        "10,9,NaN,NaN,41,42,true,-1,0,-1,1000,number,bigint");
}

/* A call that needs about a fifth of its budget in CPU, on a CPU shared
 * with three busy threads, takes longer than its budget in wall time and
 * must still finish: the budget counts the strategy's CPU, not the time
 * others took. A loop that never ends is still stopped under the same
 * contention. */
static void test_budget_counts_cpu_not_contention(void **state)
{
    (void)state;
    cpu_set_t one, saved;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (sched_getaffinity(0, sizeof saved, &saved) != 0 || !CPU_ISSET(0, &saved) ||
        sched_setaffinity(0, sizeof one, &one) != 0) {
        skip();
        return;
    }
    const int64_t budget = 100LL * 1000 * 1000;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, budget);
    /* calibrate a loop to ~20 ms of CPU while the CPU is ours */
    long iterations = 100000;
    for (;;) {
        char *src = tu_path("var x = 0; for (var i = 0; i < %ld; i++) x += i; x > 0", iterations);
        int64_t t0 = clock_thread_cpu_ns();
        assert_eval(&sb, src, "true");
        int64_t used = clock_thread_cpu_ns() - t0;
        free(src);
        if (used >= budget / 5 || iterations > 1000000000L)
            break;
        iterations *= 2;
    }
    tu_busy_threads_start(3);
    char *src = tu_path("var y = 0; for (var j = 0; j < %ld; j++) y += j; y > 0", iterations);
    int64_t start = clock_mono_ns();
    assert_eval(&sb, src, "true");
    int64_t wall = clock_mono_ns() - start;
    free(src);
    struct js_exception ex;
    expect_failure(&sb, "while (true) {}", &ex);
    assert_int_equal(ex.failure, JS_FAILURE_BUDGET);
    js_exception_free(&ex);
    tu_busy_threads_stop();
    sched_setaffinity(0, sizeof saved, &saved);
    print_message("contended call: %.1f ms of wall time for ~%lld ms of CPU\n", (double)wall / 1e6,
                  (long long)(budget / 5 / 1000000));
    js_sandbox_free(&sb);
}

static void test_budget_covers_promise_jobs(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 30LL * 1000 * 1000);
    static const char *const loops[] = {
        "Promise.resolve().then(() => { for (;;) {} }); 1",
        "async function f() { for (;;) await null; }\nf(); 1",
    };
    for (size_t i = 0; i < sizeof(loops) / sizeof(loops[0]); i++) {
        struct js_exception ex;
        expect_failure(&sb, loops[i], &ex);
        assert_int_equal(ex.failure, JS_FAILURE_BUDGET);
        js_exception_free(&ex);
    }
    js_sandbox_free(&sb);
}

/* A BigInt power whose product outgrows the largest BigInt throws a
 * RangeError; a strategy may catch it and go on. Each throw must give back
 * the power computed so far: QuickJS as shipped leaks it (up to 128 KB a
 * time, past the end of the sandbox). */
static void test_failed_bigint_power_frees_what_it_built(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 10LL * 1000 * 1000 * 1000);
    assert_eval(
        &sb,
        "globalThis.tooLarge = () => { try { 7n ** 600002n; } catch (e) { return e.name; } }; 0",
        "0");
    assert_eval(&sb, "tooLarge()", "RangeError");
    size_t before = js_sandbox_memory_used(&sb);
    assert_eval(&sb,
                "let names = new Set(); for (let i = 0; i < 20; i++) names.add(tooLarge()); "
                "[...names].join()",
                "RangeError");
    size_t after = js_sandbox_memory_used(&sb);
    if (after > before + ((size_t)1 << 20))
        fail_msg("20 failed powers kept %zu bytes", after - before);
    js_sandbox_free(&sb);
}

static void test_memory_cap(void **state)
{
    (void)state;
    struct js_sandbox sb;
    /* a budget that cannot run out first, even in a sanitizer build */
    init_sandbox(&sb, 4u << 20, 20000LL * 1000 * 1000);
    static const char *const bombs[] = {
        "var a = []; for (;;) a.push('x'.repeat(64) + a.length);",
        "var b = []; for (;;) b.push({k: b.length, v: [b.length]});",
        /* catching the failure does not hide it */
        "var c = []; try { for (;;) c.push(new Float64Array(1024)); } catch (e) {"
        " c = null; throw new Error('swallowed'); }",
    };
    for (size_t i = 0; i < sizeof(bombs) / sizeof(bombs[0]); i++) {
        struct js_exception ex;
        expect_failure(&sb, bombs[i], &ex);
        assert_int_equal(ex.failure, JS_FAILURE_MEMORY);
        assert_true(sb.out_of_memory);
        assert_true(js_sandbox_memory_used(&sb) <= (4u << 20) + (1u << 20));
        js_exception_free(&ex);
        /* free the global that holds the heap, so the next bomb starts low */
        JSValue global = JS_GetGlobalObject(sb.ctx);
        JS_SetPropertyStr(sb.ctx, global, i == 0 ? "a" : i == 1 ? "b" : "c", JS_NULL);
        JS_FreeValue(sb.ctx, global);
        JS_RunGC(sb.rt);
    }
    assert_eval(&sb, "'still ' + 'alive'", "still alive");
    js_sandbox_free(&sb);
}

/* QuickJS 2025-04-26 crashes when an allocation fails while it builds the
 * backtrace of the out-of-memory error (a use after free); which caps hit
 * that depends on the exact allocation sequence. A sweep of caps 8 bytes
 * apart crosses it many times: every run must end as a memory failure. */
static void test_memory_cap_sweep_never_crashes(void **state)
{
    (void)state;
    const char *bomb = "var keep = [];\nfor (;;) keep.push(new Array(256).fill(keep.length));\n";
    struct js_bytecode *bc = NULL;
    struct err err = ERR_INIT;
    assert_int_equal(js_compile(bomb, strlen(bomb), FILE_JS, &bc, &err), 0);
    for (size_t cap = 1u << 20; cap < (1u << 20) + 8 * 256; cap += 8) {
        struct js_sandbox sb;
        init_sandbox(&sb, cap, 20000LL * 1000 * 1000);
        js_sandbox_arm(&sb, 0);
        JSValue fn = JS_ReadObject(sb.ctx, bc->data, bc->len, JS_READ_OBJ_BYTECODE);
        JSValue value = JS_IsException(fn) ? fn : JS_EvalFunction(sb.ctx, fn);
        assert_true(JS_IsException(value));
        struct js_exception ex;
        js_sandbox_take_exception(&sb, FILE_JS, &ex);
        assert_int_equal(ex.failure, JS_FAILURE_MEMORY);
        js_exception_free(&ex);
        js_sandbox_free(&sb);
    }
    js_bytecode_release(bc);
}

static void test_stack_overflow(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    struct js_exception ex;
    expect_failure(&sb, "function down(n) { return down(n + 1) + 1; }\ndown(0);", &ex);
    assert_int_equal(ex.failure, JS_FAILURE_STACK);
    assert_string_equal(ex.name, "InternalError");
    assert_string_equal(ex.message, "stack overflow");
    assert_int_equal(ex.line, 1);
    assert_true(strlen(ex.stack) <= JS_EXCEPTION_STACK_MAX);
    assert_non_null(strstr(ex.stack, "at down (strat.js:1:"));
    js_exception_free(&ex);
    /* Bounded recursion well inside the limit works, and the sandbox lives on. */
    assert_eval(&sb, "function d(n) { return n ? d(n - 1) + 1 : 0; }\nd(200)", "200");
    js_sandbox_free(&sb);
}

static void test_throw_non_error_values(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    static const struct {
        const char *src, *name, *message;
    } cases[] = {
        {"\n   throw 42;", "number", "42"},
        {"throw 'boom'", "string", "boom"},
        {"throw {code: 7, why: 'x'}", "object", "{\"code\":7,\"why\":\"x\"}"},
        {"throw null", "null", "null"},
        {"throw undefined", "undefined", "undefined"},
        {"throw Symbol('s')", "symbol", "Symbol(s)"},
        {"throw 12n", "bigint", "12"},
        {"throw [1, 2]", "object", "[1,2]"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct js_exception ex;
        expect_failure(&sb, cases[i].src, &ex);
        assert_int_equal(ex.failure, JS_FAILURE_EXCEPTION);
        assert_string_equal(ex.name, cases[i].name);
        assert_string_equal(ex.message, cases[i].message);
        assert_string_equal(ex.stack, "");
        assert_int_equal(ex.line, 0);
        assert_int_equal(ex.column, 0);
        js_exception_free(&ex);
    }
    js_sandbox_free(&sb);
}

static void test_type_error_location(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    struct js_exception ex;
    expect_failure(&sb,
                   "function check(x) {\n"
                   "  if (!x) throw new TypeError('bad input');\n"
                   "}\n"
                   "check(0);\n",
                   &ex);
    assert_int_equal(ex.failure, JS_FAILURE_EXCEPTION);
    assert_string_equal(ex.name, "TypeError");
    assert_string_equal(ex.message, "bad input");
    /* QuickJS places the frame at the constructor call's '(' */
    assert_int_equal(ex.line, 2);
    assert_int_equal(ex.column, 30);
    assert_non_null(strstr(ex.stack, "at check (strat.js:2:30)"));
    assert_non_null(strstr(ex.stack, "(strat.js:4:6)"));
    js_exception_free(&ex);

    expect_failure(&sb, "var o = null;\nvar a = 1;\n  o.price;\n", &ex);
    assert_string_equal(ex.name, "TypeError");
    assert_string_equal(ex.message, "cannot read property 'price' of null");
    assert_int_equal(ex.line, 3);
    assert_int_equal(ex.column, 4);
    js_exception_free(&ex);

    expect_failure(&sb,
                   "class StrategyError extends Error {\n"
                   "  constructor(m) { super(m); this.name = 'StrategyError'; }\n"
                   "}\n"
                   "throw new StrategyError('custom');\n",
                   &ex);
    assert_string_equal(ex.name, "StrategyError");
    assert_string_equal(ex.message, "custom");
    assert_int_equal(ex.line, 2);
    js_exception_free(&ex);
    js_sandbox_free(&sb);
}

static void test_innermost_frame_in_file(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    const char *src = "var a = 1;\n"
                      "var b = 2;\n"
                      "  JSON.parse('{');\n";
    struct js_exception ex;
    /* The first frames are JSON's own ("<input>:1:2", "parse (native)"). */
    expect_failure(&sb, src, &ex);
    assert_string_equal(ex.name, "SyntaxError");
    assert_int_equal(ex.line, 3);
    assert_int_equal(ex.column, 13);
    assert_non_null(strstr(ex.stack, "at parse (native)"));
    js_exception_free(&ex);
    /* With no file named, the innermost frame with a location wins. */
    JSValue value = run(&sb, src);
    assert_true(JS_IsException(value));
    js_sandbox_take_exception(&sb, NULL, &ex);
    assert_int_equal(ex.line, 1);
    assert_int_equal(ex.column, 2);
    js_exception_free(&ex);
    /* Another file name matches no frame. */
    value = run(&sb, src);
    assert_true(JS_IsException(value));
    js_sandbox_take_exception(&sb, "other.js", &ex);
    assert_int_equal(ex.line, 0);
    assert_int_equal(ex.column, 0);
    js_exception_free(&ex);
    js_sandbox_free(&sb);
}

/* Reading a hostile thrown object must neither hang nor change the state
 * the caller sees. */
static void test_hostile_thrown_objects(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    static const char *const hostile[] = {
        "throw { toJSON() { for (;;) {} }, toString() { for (;;) {} } }",
        "throw { toJSON() { throw 1; }, toString() { throw 2; } }",
        "var e = new Error('m'); Object.defineProperty(e, 'message',"
        " { get() { for (;;) {} } }); throw e;",
        "var e = new Error('m'); Object.defineProperty(e, 'name',"
        " { get() { throw new Error('again'); } }); throw e;",
    };
    for (size_t i = 0; i < sizeof(hostile) / sizeof(hostile[0]); i++) {
        int64_t start = clock_mono_ns();
        struct js_exception ex;
        expect_failure(&sb, hostile[i], &ex);
        assert_true(clock_mono_ns() - start < 1000LL * 1000 * 1000);
        assert_int_equal(ex.failure, JS_FAILURE_EXCEPTION);
        assert_non_null(ex.name);
        assert_non_null(ex.message);
        assert_false(sb.overran);
        assert_int_equal(sb.deadline_ns, 0);
        js_exception_free(&ex);
    }
    js_sandbox_free(&sb);
}

static void test_take_without_pending_exception(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    struct js_exception ex;
    js_sandbox_take_exception(&sb, FILE_JS, &ex);
    assert_int_equal(ex.failure, JS_FAILURE_EXCEPTION);
    assert_string_equal(ex.message, "no exception was pending");
    js_exception_free(&ex);
    js_exception_free(&ex); /* idempotent */
    js_sandbox_free(&sb);
}

static void test_long_messages_are_cut(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    struct js_exception ex;
    expect_failure(&sb, "throw new Error('\\u00e9'.repeat(5000))", &ex);
    assert_true(strlen(ex.message) <= JS_EXCEPTION_MESSAGE_MAX);
    assert_true(strlen(ex.message) >= JS_EXCEPTION_MESSAGE_MAX - 1);
    /* cut on a character boundary: every character is two bytes */
    assert_int_equal(strlen(ex.message) % 2, 0);
    js_exception_free(&ex);
    js_sandbox_free(&sb);
}

static void test_arm_and_disarm(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    js_sandbox_arm(&sb, 0);
    assert_int_equal(sb.armed_budget_ns, JS_SANDBOX_DEFAULT_BUDGET_NS);
    js_sandbox_arm(&sb, 5);
    assert_int_equal(sb.armed_budget_ns, 5);
    assert_int_not_equal(sb.deadline_ns, 0);
    js_sandbox_disarm(&sb);
    assert_int_equal(sb.deadline_ns, 0);
    /* Unarmed, the interrupt handler never fires: nothing is cut short. */
    assert_eval(&sb, "let n = 0; for (let i = 0; i < 200000; i++) n += i; n", "19999900000");
    js_sandbox_free(&sb);
}

/* QuickJS as built here (scripts/install-deps.sh, "interrupt gate"): with
 * a gate word, a poll calls the interrupt handler only once the word has
 * moved since the last call, or after the gate's count of polls. The
 * sandboxes' budgets rest on both halves: the word is the ticker's, and
 * the count is the bound when the ticker lags. */
struct gate_probe {
    uint32_t word;
    int calls;
    int stop_at; /* the handler interrupts at this call; 0: never */
};

static int gate_handler(JSRuntime *rt, void *opaque)
{
    (void)rt;
    struct gate_probe *g = opaque;
    return ++g->calls == g->stop_at;
}

static JSValue gate_bump(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    (void)argc;
    (void)argv;
    struct gate_probe *g = JS_GetRuntimeOpaque(JS_GetRuntime(ctx));
    __atomic_add_fetch(&g->word, 1, __ATOMIC_RELAXED);
    return JS_UNDEFINED;
}

/* Evaluates `src` in a fresh runtime, gated on probe->word every `polls`
 * polls when `gated`; returns whether it completed (false: interrupted). */
static bool gate_eval(struct gate_probe *probe, int polls, const char *src, bool gated)
{
    JSRuntime *rt = JS_NewRuntime();
    assert_non_null(rt);
    JSContext *ctx = JS_NewContext(rt);
    assert_non_null(ctx);
    JS_SetRuntimeOpaque(rt, probe);
    JS_SetInterruptHandler(rt, gate_handler, probe);
    JSValue global = JS_GetGlobalObject(ctx);
    JS_SetPropertyStr(ctx, global, "bump", JS_NewCFunction(ctx, gate_bump, "bump", 0));
    JS_FreeValue(ctx, global);
    if (gated)
        JS_SetInterruptGate(rt, &probe->word, polls);
    probe->calls = 0;
    JSValue r = JS_Eval(ctx, src, strlen(src), "<gate>", JS_EVAL_TYPE_GLOBAL);
    bool completed = !JS_IsException(r);
    if (!completed)
        JS_FreeValue(ctx, JS_GetException(ctx));
    JS_FreeValue(ctx, r);
    JS_FreeContext(ctx);
    JS_FreeRuntime(rt);
    return completed;
}

static void test_interrupt_gate(void **state)
{
    (void)state;
    static const char loop[] = "for (let i = 0; i < 64000; i++) {}";
    /* without a gate, every poll calls the handler, as QuickJS does built so */
    struct gate_probe plain = {0};
    assert_true(gate_eval(&plain, 0, loop, false));
    int polls = plain.calls;
    assert_true(polls >= 64000);
    /* the word stands still: one call per 128 polls */
    struct gate_probe probe = {0};
    assert_true(gate_eval(&probe, 128, loop, true));
    if (probe.calls < polls / 128 - 2 || probe.calls > polls / 128 + 2)
        fail_msg("%d handler calls for %d polls at one per 128", probe.calls, polls);
    /* the word moves at every turn: the handler hears of every move */
    assert_true(gate_eval(&probe, 128, "for (let i = 0; i < 5000; i++) bump();", true));
    if (probe.calls < 5000)
        fail_msg("%d handler calls for 5,000 moves of the word", probe.calls);
    /* a handler that says stop still stops an endless loop when the word
     * never moves (the ticker lagging): at its third call */
    struct gate_probe stopping = {.stop_at = 3};
    assert_false(gate_eval(&stopping, 128, "for (;;) {}", true));
    assert_int_equal(stopping.calls, 3);
}

struct handoff {
    struct js_sandbox *sb;
    char *result;
};

static void *run_elsewhere(void *arg)
{
    struct handoff *h = arg;
    h->result = eval_text(h->sb, "function r(n) { return n ? r(n - 1) + 1 : 0; }\n"
                                 "counter += 1; r(100) + counter");
    return NULL;
}

/* A sandbox may move between threads between calls (arm updates the stack
 * top the overflow check measures from). */
static void test_sandbox_moves_between_threads(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    assert_eval(&sb, "var counter = 1; counter", "1");
    for (int i = 0; i < 3; i++) {
        struct handoff h = {&sb, NULL};
        pthread_t thread;
        assert_int_equal(pthread_create(&thread, NULL, run_elsewhere, &h), 0);
        pthread_join(thread, NULL);
        char expected[16];
        snprintf(expected, sizeof(expected), "%d", 100 + i + 2);
        assert_string_equal(h.result, expected);
        free(h.result);
    }
    assert_eval(&sb, "counter", "4");
    js_sandbox_free(&sb);
}

/* js_text_clean: valid UTF-8 kept, a lone surrogate (QuickJS's three
 * bytes) one U+FFFD, another invalid byte one U+FFFD each, NUL escaped,
 * cut at a character boundary; js_text_fit drops a cut character. */
static void expect_clean(const char *in, size_t len, size_t max, const char *want, bool want_cut)
{
    bool cut = !want_cut;
    char *out = js_text_clean(in, len, max, &cut);
    assert_non_null(out);
    assert_string_equal(out, want);
    assert_true(cut == want_cut);
    free(out);
}

static void test_text_clean(void **state)
{
    (void)state;
    expect_clean("plain \xE2\x82\xAC \xF0\x9F\x98\x80", 14, 100,
                 "plain \xE2\x82\xAC \xF0\x9F\x98\x80", false);
    expect_clean("x\xED\xA0\x80y", 5, 100, "x\xEF\xBF\xBDy", false);
    expect_clean("x\xED\xBF\xBFy", 5, 100, "x\xEF\xBF\xBDy", false);
    expect_clean("a\xFF"
                 "b\xC0\xAF",
                 5, 100,
                 "a\xEF\xBF\xBD"
                 "b\xEF\xBF\xBD\xEF\xBF\xBD",
                 false);
    expect_clean("a\0b", 3, 100, "a\\u0000b", false);
    expect_clean("\xE2\x82\xAC\xE2\x82\xAC", 6, 5, "\xE2\x82\xAC", true);
    expect_clean("ab\0", 3, 7, "ab", true);
    expect_clean("", 0, 0, "", false);
    /* an incomplete sequence at the end is invalid, not a character */
    expect_clean("a\xE2\x82", 3, 100, "a\xEF\xBF\xBD\xEF\xBF\xBD", false);

    char text[16];
    snprintf(text, sizeof text, "ab\xE2\x82");
    js_text_fit(text);
    assert_string_equal(text, "ab");
    snprintf(text, sizeof text, "ab\xF0\x9F\x98");
    js_text_fit(text);
    assert_string_equal(text, "ab");
    snprintf(text, sizeof text, "ab\xE2\x82\xAC");
    js_text_fit(text);
    assert_string_equal(text, "ab\xE2\x82\xAC");
    snprintf(text, sizeof text, "abc");
    js_text_fit(text);
    assert_string_equal(text, "abc");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_applies_defaults),
        cmocka_unit_test(test_init_refuses_tiny_cap),
        cmocka_unit_test(test_set_limits),
        cmocka_unit_test(test_closed_to_host),
        cmocka_unit_test(test_builtins_present),
        cmocka_unit_test(test_normalize_and_locale_compare),
        cmocka_unit_test(test_eval_and_function_constructor_refused),
        cmocka_unit_test(test_module_loading_refused),
        cmocka_unit_test(test_atomics_wait_refused),
        cmocka_unit_test(test_budget_stops_endless_loop),
        cmocka_unit_test(test_interrupt_placed_by_its_caller),
        cmocka_unit_test(test_budget_stops_native_heavy_loop),
        cmocka_unit_test(test_budget_stops_index_walks),
        cmocka_unit_test(test_budget_stops_sorts),
        cmocka_unit_test(test_budget_stops_searches),
        cmocka_unit_test(test_searches_answer_as_before),
        cmocka_unit_test(test_post_increments_answer_as_before),
        cmocka_unit_test(test_budget_counts_cpu_not_contention),
        cmocka_unit_test(test_budget_covers_promise_jobs),
        cmocka_unit_test(test_failed_bigint_power_frees_what_it_built),
        cmocka_unit_test(test_memory_cap),
        cmocka_unit_test(test_memory_cap_sweep_never_crashes),
        cmocka_unit_test(test_stack_overflow),
        cmocka_unit_test(test_throw_non_error_values),
        cmocka_unit_test(test_type_error_location),
        cmocka_unit_test(test_innermost_frame_in_file),
        cmocka_unit_test(test_hostile_thrown_objects),
        cmocka_unit_test(test_take_without_pending_exception),
        cmocka_unit_test(test_long_messages_are_cut),
        cmocka_unit_test(test_arm_and_disarm),
        cmocka_unit_test(test_interrupt_gate),
        cmocka_unit_test(test_sandbox_moves_between_threads),
        cmocka_unit_test(test_text_clean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
