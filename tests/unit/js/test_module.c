#include "testutil.h"

#include "core/clock.h"
#include "js/internal.h"
#include "js/module.h"
#include "js/sandbox.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------- helpers */

static const char *const small_module = "module.exports = {\n"
                                        "  metadata: {\n"
                                        "    name: 'small',\n"
                                        "    displayName: 'Small',\n"
                                        "    events: ['Trade'],\n"
                                        "    config: [{ name: 'size', type: 'int', default: 1 }],\n"
                                        "  },\n"
                                        "  create(env) {\n"
                                        "    let trades = 0;\n"
                                        "    const prices = [];\n"
                                        "    return {\n"
                                        "      onTrade(trade) {\n"
                                        "        trades += 1;\n"
                                        "        prices.push(trade.price);\n"
                                        "        if (prices.length > 20) prices.shift();\n"
                                        "        return trades;\n"
                                        "      },\n"
                                        "    };\n"
                                        "  },\n"
                                        "};\n";

static struct js_bytecode *compile_ok(const char *src, const char *filename)
{
    struct js_bytecode *bc = NULL;
    struct err err = ERR_INIT;
    if (js_compile(src, strlen(src), filename, &bc, &err) < 0)
        fail_msg("compile failed: %s", err.message);
    return bc;
}

static void init_sandbox(struct js_sandbox *sb, size_t memory, int64_t budget_ns)
{
    struct js_limits limits = {memory, 0, budget_ns};
    struct err err = ERR_INIT;
    if (js_sandbox_init(sb, &limits, &err) < 0)
        fail_msg("js_sandbox_init: %s", err.message);
}

static JSValue load_ok(struct js_sandbox *sb, const struct js_bytecode *bc)
{
    JSValue exports = JS_UNDEFINED;
    struct err err = ERR_INIT;
    if (js_module_load(sb, bc, &exports, &err) < 0)
        fail_msg("load failed: %s", err.message);
    return exports;
}

/* Evaluates `expr` with `obj` bound to `this`, through a function the
 * module itself did not define: calls a method found by path. */
static char *property_text(JSContext *ctx, JSValueConst obj, const char *key)
{
    JSValue v = JS_GetPropertyStr(ctx, obj, key);
    const char *text = JS_ToCString(ctx, v);
    char *copy = strdup(text ? text : "(null)");
    JS_FreeCString(ctx, text);
    JS_FreeValue(ctx, v);
    return copy;
}

static json_t *diagnostic(const struct err *err)
{
    json_t *list = json_object_get(err->details, "diagnostics");
    assert_true(json_is_array(list));
    assert_int_equal(json_array_size(list), 1);
    return json_array_get(list, 0);
}

static void assert_diagnostic(const struct err *err, const char *stage, int line, int column,
                              const char *message_part)
{
    json_t *d = diagnostic(err);
    const char *stage_got = json_string_value(json_object_get(d, "stage"));
    const char *message = json_string_value(json_object_get(d, "message"));
    const char *hint = json_string_value(json_object_get(d, "hint"));
    long long l = json_integer_value(json_object_get(d, "line"));
    long long c = json_integer_value(json_object_get(d, "column"));
    /* line -1: any position (where an allocation fails at the cap depends on
     * the allocator's block sizes, which the sanitizers change) */
    bool position_ok = line < 0 || (l == line && c == column);
    if (strcmp(stage_got, stage) != 0 || !position_ok || !strstr(message, message_part))
        fail_msg("diagnostic %s %lld:%lld '%s', expected %s %d:%d containing '%s'", stage_got, l, c,
                 message, stage, line, column, message_part);
    assert_non_null(hint);
    assert_true(strlen(hint) > 10);
}

/* --------------------------------------------------- compile and load */

static void test_round_trip(void **state)
{
    (void)state;
    struct js_bytecode *bc = compile_ok(small_module, "small.js");
    assert_string_equal(bc->filename, "small.js");
    assert_true(bc->len > 0);
    assert_int_equal(atomic_load(&bc->refs), 1);
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    JSValue exports = load_ok(&sb, bc);
    assert_true(JS_IsObject(exports));
    JSValue md = JS_GetPropertyStr(sb.ctx, exports, "metadata");
    char *name = property_text(sb.ctx, md, "name");
    assert_string_equal(name, "small");
    free(name);
    JS_FreeValue(sb.ctx, md);
    JSValue create = JS_GetPropertyStr(sb.ctx, exports, "create");
    assert_true(JS_IsFunction(sb.ctx, create));
    JS_FreeValue(sb.ctx, create);
    JS_FreeValue(sb.ctx, exports);
    js_sandbox_free(&sb);
    js_bytecode_release(bc);
}

static void test_commonjs_forms(void **state)
{
    (void)state;
    static const struct {
        const char *src, *key, *expected;
    } cases[] = {
        {"exports.answer = 42;", "answer", "42"},
        {"module.exports.answer = 'a';", "answer", "a"},
        {"module.exports = { answer: typeof module + typeof exports };", "answer", "objectobject"},
        {"const exportsBefore = exports;\nmodule.exports = { same: exportsBefore === exports };",
         "same", "true"},
        {"var local = 5;\nmodule.exports = { answer: local * 2 };", "answer", "10"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct js_bytecode *bc = compile_ok(cases[i].src, "forms.js");
        struct js_sandbox sb;
        init_sandbox(&sb, 0, 0);
        JSValue exports = load_ok(&sb, bc);
        char *text = property_text(sb.ctx, exports, cases[i].key);
        assert_string_equal(text, cases[i].expected);
        free(text);
        JS_FreeValue(sb.ctx, exports);
        js_sandbox_free(&sb);
        js_bytecode_release(bc);
    }
    /* module.exports may be a function */
    struct js_bytecode *bc = compile_ok("module.exports = function () { return 1; };", "f.js");
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    JSValue exports = load_ok(&sb, bc);
    assert_true(JS_IsFunction(sb.ctx, exports));
    JS_FreeValue(sb.ctx, exports);
    js_sandbox_free(&sb);
    js_bytecode_release(bc);
}

/* No wrapper: an error in a handler reports the file's own line/column. */
static void test_handler_errors_report_file_positions(void **state)
{
    (void)state;
    const char *src = "module.exports = {\n"
                      "  create(env) {\n"
                      "    return {\n"
                      "      onTrade(t) {\n"
                      "        return t.missing.price;\n"
                      "      },\n"
                      "    };\n"
                      "  },\n"
                      "};\n";
    struct js_bytecode *bc = compile_ok(src, "pos.js");
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    JSValue exports = load_ok(&sb, bc);
    JSValue create = JS_GetPropertyStr(sb.ctx, exports, "create");
    js_sandbox_arm(&sb, 0);
    JSValue handlers = JS_Call(sb.ctx, create, exports, 0, NULL);
    JSValue on_trade = JS_GetPropertyStr(sb.ctx, handlers, "onTrade");
    JSValue trade = JS_NewObject(sb.ctx);
    JSValue rv = JS_Call(sb.ctx, on_trade, handlers, 1, &trade);
    assert_true(JS_IsException(rv));
    struct js_exception ex;
    js_sandbox_take_exception(&sb, "pos.js", &ex);
    js_sandbox_disarm(&sb);
    assert_string_equal(ex.name, "TypeError");
    assert_int_equal(ex.line, 5);
    assert_int_equal(ex.column, 25);
    assert_non_null(strstr(ex.stack, "at onTrade (pos.js:5:25)"));
    js_exception_free(&ex);
    JS_FreeValue(sb.ctx, trade);
    JS_FreeValue(sb.ctx, on_trade);
    JS_FreeValue(sb.ctx, handlers);
    JS_FreeValue(sb.ctx, create);
    JS_FreeValue(sb.ctx, exports);
    js_sandbox_free(&sb);
    js_bytecode_release(bc);
}

static void test_one_bytecode_many_sandboxes(void **state)
{
    (void)state;
    enum { N = 24 };
    const char *src = "var loads = (globalThis.loads || 0) + 1;\n"
                      "module.exports = { bump() { return ++loads; } };\n";
    struct js_bytecode *bc = compile_ok(src, "many.js");
    struct js_sandbox sbs[N];
    JSValue exports[N];
    for (int i = 0; i < N; i++) {
        init_sandbox(&sbs[i], 0, 0);
        js_bytecode_retain(bc);
        exports[i] = load_ok(&sbs[i], bc);
    }
    assert_int_equal(atomic_load(&bc->refs), N + 1);
    /* Each sandbox has its own state: bumping one leaves the others. */
    for (int k = 0; k < 3; k++) {
        JSValue bump = JS_GetPropertyStr(sbs[0].ctx, exports[0], "bump");
        js_sandbox_arm(&sbs[0], 0);
        JS_FreeValue(sbs[0].ctx, JS_Call(sbs[0].ctx, bump, exports[0], 0, NULL));
        JS_FreeValue(sbs[0].ctx, bump);
    }
    for (int i = 0; i < N; i++) {
        JSValue bump = JS_GetPropertyStr(sbs[i].ctx, exports[i], "bump");
        js_sandbox_arm(&sbs[i], 0);
        JSValue n = JS_Call(sbs[i].ctx, bump, exports[i], 0, NULL);
        int32_t value = 0;
        JS_ToInt32(sbs[i].ctx, &value, n);
        assert_int_equal(value, i == 0 ? 5 : 2);
        JS_FreeValue(sbs[i].ctx, n);
        JS_FreeValue(sbs[i].ctx, bump);
        JS_FreeValue(sbs[i].ctx, exports[i]);
        js_sandbox_free(&sbs[i]);
        js_bytecode_release(bc);
    }
    assert_int_equal(atomic_load(&bc->refs), 1);
    js_bytecode_release(bc);
}

static void test_compile_errors_point_at_the_token(void **state)
{
    (void)state;
    static const struct {
        const char *src;
        int line, column;
        const char *message, *hint;
    } cases[] = {
        /* missing closing brace: the file ends inside the object */
        {"module.exports = {\n  create() {\n    return 1;\n  },\n", 5, 1, "end of input",
         "close every"},
        /* unexpected token in the middle of a line */
        {"var a = 1;\nvar b = 2;\n  var c = a b;\n", 3, 13, "expecting ';'", "statement"},
        /* unterminated string: the literal's opening quote */
        {"var x = 1;\nvar s = 'abc;\nvar y = 2;\n", 2, 9, "unexpected end of string", "quote"},
        /* missing comma between members */
        {"module.exports = {\n  metadata: { name: 'x' }\n  create() {}\n};\n", 3, 3,
         "expecting '}'", "','"},
        /* missing parenthesis */
        {"function f(a) {\n  if (a > 1 {\n    return 2;\n  }\n}\n", 2, 13, "expecting ')'",
         "parenthesis"},
        /* columns count characters, not bytes */
        {"var s = '\xc3\xa9\xe2\x82\xac';\n  var t = 1 2;\n", 2, 13, "expecting ';'", "statement"},
        {"var s = '\xc3\xa9\xe2\x82\xac'; var t = 1 2;\n", 1, 25, "expecting ';'", "statement"},
        /* ES modules are not strategies */
        {"import os from 'os';\nmodule.exports = {};\n", 1, 8, "SyntaxError", "CommonJS"},
        {"let x = 1;\n\nlet x = 2;\n", 3, 7, "redefinition", "fix"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct js_bytecode *bc = NULL;
        struct err err = ERR_INIT;
        assert_int_equal(js_compile(cases[i].src, strlen(cases[i].src), "bad.js", &bc, &err), -1);
        assert_null(bc);
        assert_int_equal(err.kind, ERR_UNPROCESSABLE);
        assert_diagnostic(&err, "compile", cases[i].line, cases[i].column, cases[i].message);
        const char *hint = json_string_value(json_object_get(diagnostic(&err), "hint"));
        if (!strstr(hint, cases[i].hint))
            fail_msg("case %zu: hint '%s' lacks '%s'", i, hint, cases[i].hint);
        char prefix[64];
        snprintf(prefix, sizeof(prefix), "bad.js:%d:%d: ", cases[i].line, cases[i].column);
        assert_memory_equal(err.message, prefix, strlen(prefix));
        err_clear(&err);
    }
}

/* Nesting deep enough to exhaust the parser's stack is a diagnostic, not a
 * crash. */
static void test_compile_deep_nesting(void **state)
{
    (void)state;
    enum { DEPTH = 100000 };
    char *src = malloc(2 * DEPTH + 16);
    assert_non_null(src);
    size_t n = 0;
    n += (size_t)sprintf(src, "var x = ");
    memset(src + n, '[', DEPTH);
    n += DEPTH;
    memset(src + n, ']', DEPTH);
    n += DEPTH;
    struct js_bytecode *bc = NULL;
    struct err err = ERR_INIT;
    assert_int_equal(js_compile(src, n, "deep.js", &bc, &err), -1);
    assert_int_equal(err.kind, ERR_UNPROCESSABLE);
    json_t *d = diagnostic(&err);
    assert_string_equal(json_string_value(json_object_get(d, "stage")), "compile");
    assert_non_null(strstr(json_string_value(json_object_get(d, "message")), "stack overflow"));
    assert_non_null(strstr(json_string_value(json_object_get(d, "hint")), "nested too deeply"));
    err_clear(&err);
    free(src);
}

/* A module of `functions` functions, f<i>() returning i * k, with a
 * string and an array literal each so that the compile allocates atoms,
 * strings and growing bytecode buffers. Returned malloc'ed. */
static char *generated_module(int functions, int k, size_t *len)
{
    size_t cap = (size_t)functions * 160 + 256;
    char *src = malloc(cap);
    assert_non_null(src);
    size_t n = 0;
    for (int i = 0; i < functions; i++)
        n += (size_t)snprintf(src + n, cap - n,
                              "function f%d() { const tag = 'entry %d'; const xs = [%d, %d, %d];\n"
                              "  return tag.length > 0 ? xs[0] * %d : -1; }\n",
                              i, i, i, i + 1, i + 2, k);
    n += (size_t)snprintf(src + n, cap - n,
                          "module.exports = { at(i) { return globalThis['f' + i](); } };\n");
    *len = n;
    return src;
}

static int64_t call_at(struct js_sandbox *sb, JSValueConst exports, int i)
{
    JSValue at = JS_GetPropertyStr(sb->ctx, exports, "at");
    JSValue arg = JS_NewInt32(sb->ctx, i);
    js_sandbox_arm(sb, 0);
    JSValue got = JS_Call(sb->ctx, at, exports, 1, &arg);
    int64_t value = -2;
    if (JS_ToInt64(sb->ctx, &value, got) < 0)
        value = -3;
    JS_FreeValue(sb->ctx, got);
    JS_FreeValue(sb->ctx, at);
    return value;
}

/* A compile allocates far more than one scratch block holds here (about
 * 25 times the source): what does not fit goes to the C library, and the
 * module is the same whatever its blocks came from. */
static void test_compile_larger_than_its_scratch(void **state)
{
    (void)state;
    enum { FUNCTIONS = 6000, K = 3 };
    size_t len = 0;
    char *src = generated_module(FUNCTIONS, K, &len);
    assert_true(len > 400000);
    struct js_bytecode *first = NULL, *again = NULL;
    struct err err = ERR_INIT;
    assert_int_equal(js_compile(src, len, "large.js", &first, &err), 0);
    struct js_bytecode *small = compile_ok(small_module, "small.js"); /* a recycled block */
    assert_int_equal(js_compile(src, len, "large.js", &again, &err), 0);
    assert_int_equal(first->len, again->len);
    assert_memory_equal(first->data, again->data, first->len);
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    JSValue exports = load_ok(&sb, again);
    for (int i = 0; i < FUNCTIONS; i += 1499)
        assert_int_equal(call_at(&sb, exports, i), (int64_t)i * K);
    assert_int_equal(call_at(&sb, exports, FUNCTIONS - 1), (int64_t)(FUNCTIONS - 1) * K);
    JS_FreeValue(sb.ctx, exports);
    js_sandbox_free(&sb);
    js_bytecode_release(first);
    js_bytecode_release(again);
    js_bytecode_release(small);
    free(src);
}

/* The cap binds a compiler sandbox as any other: a compile past it fails
 * with a memory diagnostic, and the sandbox still frees cleanly. */
static void test_compile_memory_cap(void **state)
{
    (void)state;
    size_t len = 0;
    char *src = generated_module(6000, 1, &len);
    struct js_sandbox sb;
    struct js_limits limits = {(size_t)1 << 20, 0, 0};
    struct err err = ERR_INIT;
    assert_int_equal(js__sandbox_init_profile(&sb, &limits, JS__PROFILE_COMPILER, &err), 0);
    struct js_bytecode *bc = NULL;
    assert_int_equal(js__compile_source(&sb, src, len, "capped.js", NULL, &bc, &err), -1);
    assert_null(bc);
    assert_int_equal(err.kind, ERR_UNPROCESSABLE);
    json_t *d = diagnostic(&err);
    assert_string_equal(json_string_value(json_object_get(d, "stage")), "compile");
    assert_non_null(strstr(json_string_value(json_object_get(d, "message")), "out of memory"));
    assert_true(js_sandbox_memory_used(&sb) <= limits.memory_bytes + ((size_t)1 << 20));
    err_clear(&err);
    js_sandbox_free(&sb);
    free(src);
}

/* Compiling a regular expression literal takes time that grows with the
 * square of its alternatives (seconds for a few hundred thousand): the
 * compile's budget stops it, and the author hears where and why. */
static void test_compile_budget_stops_regexp_literal(void **state)
{
    (void)state;
    size_t len = 0;
    char *src = tu_alternation_source(2000, "module.exports = { words };\n", &len);
    struct js_bytecode *bc = NULL;
    struct err err = ERR_INIT;
    assert_int_equal(js_compile(src, len, "words.js", &bc, &err), 0);
    js_bytecode_release(bc);
    free(src);

    src = tu_alternation_source(300000, "module.exports = { words };\n", &len);
    bc = NULL;
    assert_int_equal(js_compile(src, len, "words.js", &bc, &err), -1);
    assert_null(bc);
    assert_int_equal(err.kind, ERR_UNPROCESSABLE);
    json_t *d = diagnostic(&err);
    assert_string_equal(json_string_value(json_object_get(d, "stage")), "compile");
    assert_int_equal(json_integer_value(json_object_get(d, "line")), 2);
    assert_int_equal(json_integer_value(json_object_get(d, "column")), 15);
    const char *message = json_string_value(json_object_get(d, "message"));
    if (!strstr(message, "compiling ran past the module's compile budget of 1.2 s"))
        fail_msg("unexpected message: %s", message);
    assert_non_null(strstr(json_string_value(json_object_get(d, "hint")), "regular expression"));
    err_clear(&err);
    free(src);
}

/* Names resolve by walking every name in scope, so thousands of them in one
 * destructuring or one class compile in time that grows with their square
 * (50,000 names: 5-11 s): the budget stops those too. */
static void test_compile_budget_stops_name_lookups(void **state)
{
    (void)state;
    static const char *const heads[] = {"function f(obj) { const {", "class C {"};
    static const char *const tails[] = {"} = obj; }\n", "}\n"};
    for (size_t k = 0; k < 2; k++) {
        size_t cap = 50000 * 64 + 256, n = 0;
        char *src = malloc(cap);
        assert_non_null(src);
        n += (size_t)snprintf(src + n, cap - n, "%s", heads[k]);
        for (int i = 0; i < 50000; i++)
            n += k == 0 ? (size_t)snprintf(src + n, cap - n, "d%d, ", i)
                        : (size_t)snprintf(src + n, cap - n,
                                           "#f%d = 1; m%d() { return this.#f%d; }\n", i, i, i);
        n += (size_t)snprintf(src + n, cap - n, "%s", tails[k]);
        struct js_bytecode *bc = NULL;
        struct err err = ERR_INIT;
        assert_int_equal(js_compile(src, n, "names.js", &bc, &err), -1);
        assert_int_equal(err.kind, ERR_UNPROCESSABLE);
        json_t *d = diagnostic(&err);
        const char *message = json_string_value(json_object_get(d, "message"));
        if (!strstr(message, "compiling ran past the module's compile budget"))
            fail_msg("form %zu: unexpected message: %s", k, message);
        /* Stopped while resolving names, no token is at hand: then there is
         * no position, and the message reads like every other one without
         * a position (no "0:0"). A slower build may be stopped still
         * parsing, at a token: then the message leads with its place. */
        json_int_t line = json_integer_value(json_object_get(d, "line"));
        json_int_t column = json_integer_value(json_object_get(d, "column"));
        char *lead = line > 0 ? tu_path("names.js:%lld:%lld: InternalError: compiling ran past",
                                        (long long)line, (long long)column)
                              : tu_path("names.js: InternalError: compiling ran past");
        if (line == 0)
            assert_int_equal(column, 0);
        if (strncmp(err.message, lead, strlen(lead)) != 0)
            fail_msg("form %zu: unexpected error message: %s", k, err.message);
        free(lead);
        err_clear(&err);
        free(src);
    }
}

struct own_compile {
    int index;
    int failures;
};

/* Compiles a module of its own many times and checks what each returns:
 * two threads handed the same scratch block would corrupt each other. */
static void *compile_own_module(void *arg)
{
    struct own_compile *job = arg;
    size_t len = 0;
    char *src = generated_module(100 + job->index * 40, job->index + 2, &len);
    for (int round = 0; round < 15; round++) {
        struct js_bytecode *bc = NULL;
        struct err err = ERR_INIT;
        if (js_compile(src, len, "own.js", &bc, &err) != 0) {
            job->failures++;
            err_clear(&err);
            continue;
        }
        struct js_sandbox sb;
        struct js_limits limits = {0, 0, 0};
        JSValue exports = JS_UNDEFINED;
        if (js_sandbox_init(&sb, &limits, &err) != 0 ||
            js_module_load(&sb, bc, &exports, &err) != 0) {
            job->failures++;
        } else if (call_at(&sb, exports, 99) != 99 * (job->index + 2)) {
            job->failures++;
        }
        if (sb.ctx)
            JS_FreeValue(sb.ctx, exports);
        js_sandbox_free(&sb);
        js_bytecode_release(bc);
        err_clear(&err);
    }
    free(src);
    return NULL;
}

static void test_compiles_on_many_threads_keep_apart(void **state)
{
    (void)state;
    enum { THREADS = 8 }; /* more than the scratch blocks kept for reuse */
    struct own_compile jobs[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (struct own_compile){i, 0};
        assert_int_equal(pthread_create(&threads[i], NULL, compile_own_module, &jobs[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(jobs[i].failures, 0);
    }
}

static void test_compile_takes_length_not_nul(void **state)
{
    (void)state;
    const char buffer[] = "module.exports = { n: 1 };GARBAGE(";
    struct js_bytecode *bc = NULL;
    struct err err = ERR_INIT;
    assert_int_equal(js_compile(buffer, 26, "len.js", &bc, &err), 0);
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    JSValue exports = load_ok(&sb, bc);
    char *n = property_text(sb.ctx, exports, "n");
    assert_string_equal(n, "1");
    free(n);
    JS_FreeValue(sb.ctx, exports);
    js_sandbox_free(&sb);
    js_bytecode_release(bc);
}

static void test_compile_file_names(void **state)
{
    (void)state;
    struct js_bytecode *bc = NULL;
    struct err err = ERR_INIT;
    char long_name[200];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    assert_int_equal(js_compile("1", 1, long_name, &bc, &err), -1);
    assert_int_equal(err.kind, ERR_INVALID);
    err_clear(&err);
    assert_int_equal(js_compile("1", 1, NULL, &bc, &err), 0);
    assert_string_equal(bc->filename, "module.js");
    js_bytecode_release(bc);
    js_bytecode_release(NULL);
}

static void expect_load_failure(const char *src, size_t memory, int64_t budget_ns, int line,
                                int column, const char *message_part)
{
    struct js_bytecode *bc = compile_ok(src, "load.js");
    struct js_sandbox sb;
    init_sandbox(&sb, memory, budget_ns);
    JSValue exports = JS_UNDEFINED;
    struct err err = ERR_INIT;
    assert_int_equal(js_module_load(&sb, bc, &exports, &err), -1);
    assert_true(JS_IsUndefined(exports));
    assert_int_equal(err.kind, ERR_UNPROCESSABLE);
    assert_non_null(strstr(err.message, message_part));
    assert_diagnostic(&err, "execute", line, column, message_part);
    assert_int_equal(sb.deadline_ns, 0);
    err_clear(&err);
    js_sandbox_free(&sb);
    js_bytecode_release(bc);
}

static void test_load_failures(void **state)
{
    (void)state;
    expect_load_failure("var a = 1;\nif (a) {\n  throw new RangeError('top');\n}\n", 0, 0, 3, 23,
                        "the top level threw RangeError: top");
    expect_load_failure("module.exports = {};\nmissing();\n", 0, 0, 2, 1,
                        "ReferenceError: 'missing' is not defined");
    expect_load_failure("var x = 1;\n\nthrow 42;\n", 0, 0, 0, 0, "the top level threw number: 42");
    expect_load_failure("module.exports = {};\nwhile (true) {}\n", 0, 20LL * 1000 * 1000, 0, 0,
                        "ran past its budget of 20 ms");
    expect_load_failure("var keep = [];\nfor (;;) keep.push(new Array(256).fill(keep.length));\n",
                        4u << 20, 20000LL * 1000 * 1000, -1, -1,
                        "the top level hit the memory cap of 4 MiB");
    expect_load_failure("function f(n) {\n  return f(n + 1) * 2;\n}\nf(1);\n", 0, 0, 2, 11,
                        "recursed past the stack limit");
    /* A rejected promise is not a load failure; an endless job is. */
    expect_load_failure("Promise.resolve().then(() => { for (;;) {} });\n", 0, 20LL * 1000 * 1000,
                        0, 0, "ran past its budget of 20 ms");
}

static void test_unhandled_rejection_is_not_a_failure(void **state)
{
    (void)state;
    struct js_bytecode *bc = compile_ok(
        "async function f() { throw new Error('later'); }\nf();\nmodule.exports = { ok: 1 };",
        "rej.js");
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    JSValue exports = load_ok(&sb, bc);
    char *ok = property_text(sb.ctx, exports, "ok");
    assert_string_equal(ok, "1");
    free(ok);
    JS_FreeValue(sb.ctx, exports);
    js_sandbox_free(&sb);
    js_bytecode_release(bc);
}

/* ---------------------------------------------------------- footprint */

#if !defined(STRATD_SANITIZE) && !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
static long rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, resident = 0;
    if (!f)
        return -1;
    if (fscanf(f, "%ld %ld", &pages, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident * sysconf(_SC_PAGESIZE);
}
#endif

static void test_memory_footprint(void **state)
{
    (void)state;
    struct js_sandbox sb;
    init_sandbox(&sb, 0, 0);
    JSMemoryUsage fresh;
    JS_ComputeMemoryUsage(sb.rt, &fresh);
    struct js_bytecode *bc = compile_ok(small_module, "small.js");
    JSValue exports = load_ok(&sb, bc);
    /* create(env) and a few events: the strategy's own objects */
    JSValue create = JS_GetPropertyStr(sb.ctx, exports, "create");
    js_sandbox_arm(&sb, 0);
    JSValue handlers = JS_Call(sb.ctx, create, exports, 0, NULL);
    JSValue on_trade = JS_GetPropertyStr(sb.ctx, handlers, "onTrade");
    for (int i = 0; i < 30; i++) {
        JSValue trade = JS_NewObject(sb.ctx);
        JS_SetPropertyStr(sb.ctx, trade, "price", JS_NewFloat64(sb.ctx, 100.5 + i));
        JS_FreeValue(sb.ctx, JS_Call(sb.ctx, on_trade, handlers, 1, &trade));
        JS_FreeValue(sb.ctx, trade);
    }
    JS_RunGC(sb.rt);
    JSMemoryUsage loaded;
    JS_ComputeMemoryUsage(sb.rt, &loaded);
    print_message("memory: fresh sandbox %lld bytes in %lld blocks; with the small module "
                  "(bytecode %zu bytes), create() and 30 events %lld bytes in %lld blocks\n",
                  (long long)fresh.malloc_size, (long long)fresh.malloc_count, bc->len,
                  (long long)loaded.malloc_size, (long long)loaded.malloc_count);
    assert_true(fresh.malloc_size < 96 * 1024);
    assert_true(loaded.malloc_size < 120 * 1024);
    JS_FreeValue(sb.ctx, on_trade);
    JS_FreeValue(sb.ctx, handlers);
    JS_FreeValue(sb.ctx, create);
    JS_FreeValue(sb.ctx, exports);
    js_sandbox_free(&sb);
    js_bytecode_release(bc);
}

/* Resident memory per idle instance, measured the way an operator would:
 * many sandboxes with the module loaded and its handlers created. */
static void test_resident_memory_per_instance(void **state)
{
    (void)state;
#if defined(STRATD_SANITIZE) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    skip(); /* the sanitizers' shadow memory and redzones dwarf the figure */
#else
    enum { N = 400 };
    struct js_bytecode *bc = compile_ok(small_module, "small.js");
    struct js_sandbox *sbs = calloc(N, sizeof(*sbs));
    JSValue *handlers = calloc(N, sizeof(*handlers));
    assert_non_null(sbs);
    assert_non_null(handlers);
    long before = rss_bytes();
    for (int i = 0; i < N; i++) {
        init_sandbox(&sbs[i], 0, 0);
        JSValue exports = load_ok(&sbs[i], bc);
        JSValue create = JS_GetPropertyStr(sbs[i].ctx, exports, "create");
        js_sandbox_arm(&sbs[i], 0);
        handlers[i] = JS_Call(sbs[i].ctx, create, exports, 0, NULL);
        js_sandbox_disarm(&sbs[i]);
        JS_FreeValue(sbs[i].ctx, create);
        JS_FreeValue(sbs[i].ctx, exports);
    }
    long after = rss_bytes();
    long per = (after - before) / N;
    print_message("resident memory: %ld bytes per idle instance over %d instances\n", per, N);
    assert_true(per <= 120 * 1024);
    for (int i = 0; i < N; i++) {
        JS_FreeValue(sbs[i].ctx, handlers[i]);
        js_sandbox_free(&sbs[i]);
    }
    free(handlers);
    free(sbs);
    js_bytecode_release(bc);
#endif
}

/* --------------------------------------------------------------- cache */

struct fake_source {
    atomic_int calls;
    int delay_ms;
    const char *text; /* NULL: the revision is missing */
};

static int fake_source_fn(void *ctx, const char *hex, char **source, size_t *len, char *filename,
                          size_t filename_size, struct err *err)
{
    struct fake_source *fs = ctx;
    atomic_fetch_add(&fs->calls, 1);
    if (fs->delay_ms)
        usleep((useconds_t)fs->delay_ms * 1000);
    if (!fs->text) {
        err_set(err, ERR_NOT_FOUND, "no revision %s", hex);
        return -1;
    }
    *source = strdup(fs->text);
    *len = strlen(fs->text);
    snprintf(filename, filename_size, "rev-%.8s.js", hex);
    return 0;
}

static void test_cache_compiles_once(void **state)
{
    (void)state;
    struct js_bytecode_cache *cache = js_bytecode_cache_new();
    struct fake_source fs = {0, 0, small_module};
    struct js_bytecode *a = NULL, *b = NULL;
    struct err err = ERR_INIT;
    assert_int_equal(js_bytecode_cache_get(cache, "aaaa1111", fake_source_fn, &fs, &a, &err), 0);
    assert_int_equal(js_bytecode_cache_get(cache, "aaaa1111", fake_source_fn, &fs, &b, &err), 0);
    assert_ptr_equal(a, b);
    assert_string_equal(a->filename, "rev-aaaa1111.js");
    assert_int_equal(js_bytecode_cache_compilations(cache), 1);
    assert_int_equal(atomic_load(&fs.calls), 1);
    assert_int_equal(atomic_load(&a->refs), 3); /* cache + a + b */
    /* forget drops the cache's reference only */
    js_bytecode_cache_forget(cache, "aaaa1111");
    assert_int_equal(atomic_load(&a->refs), 2);
    struct js_bytecode *c = NULL;
    assert_int_equal(js_bytecode_cache_get(cache, "aaaa1111", fake_source_fn, &fs, &c, &err), 0);
    assert_ptr_not_equal(c, a);
    assert_int_equal(js_bytecode_cache_compilations(cache), 2);
    js_bytecode_cache_forget(cache, "not-there");
    js_bytecode_release(a);
    js_bytecode_release(b);
    js_bytecode_release(c);
    js_bytecode_cache_free(cache);
}

static void test_cache_failures_are_not_kept(void **state)
{
    (void)state;
    struct js_bytecode_cache *cache = js_bytecode_cache_new();
    struct fake_source missing = {0, 0, NULL};
    struct js_bytecode *bc = NULL;
    struct err err = ERR_INIT;
    assert_int_equal(js_bytecode_cache_get(cache, "bbbb", fake_source_fn, &missing, &bc, &err), -1);
    assert_int_equal(err.kind, ERR_NOT_FOUND);
    assert_null(bc);
    err_clear(&err);
    assert_int_equal(js_bytecode_cache_compilations(cache), 0);
    /* the revision appears: the next call fetches it */
    struct fake_source present = {0, 0, small_module};
    assert_int_equal(js_bytecode_cache_get(cache, "bbbb", fake_source_fn, &present, &bc, &err), 0);
    js_bytecode_release(bc);
    /* a source that does not compile is unprocessable, and tried again next time */
    struct fake_source broken = {0, 0, "var = ;"};
    assert_int_equal(js_bytecode_cache_get(cache, "cccc", fake_source_fn, &broken, &bc, &err), -1);
    assert_int_equal(err.kind, ERR_UNPROCESSABLE);
    err_clear(&err);
    assert_int_equal(js_bytecode_cache_get(cache, "cccc", fake_source_fn, &broken, &bc, &err), -1);
    err_clear(&err);
    assert_int_equal(atomic_load(&broken.calls), 2);
    assert_int_equal(js_bytecode_cache_compilations(cache), 3);
    js_bytecode_cache_free(cache);
}

struct getter {
    struct js_bytecode_cache *cache;
    struct fake_source *source;
    const char *hex;
    struct js_bytecode *bc;
    int rc;
};

static void *get_in_thread(void *arg)
{
    struct getter *g = arg;
    struct err err = ERR_INIT;
    g->rc = js_bytecode_cache_get(g->cache, g->hex, fake_source_fn, g->source, &g->bc, &err);
    err_clear(&err);
    return NULL;
}

static void test_cache_concurrent_getters_compile_once(void **state)
{
    (void)state;
    enum { THREADS = 8 };
    struct js_bytecode_cache *cache = js_bytecode_cache_new();
    struct fake_source slow = {0, 100, small_module};
    struct getter getters[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        getters[i] = (struct getter){cache, &slow, "dddd", NULL, -1};
        assert_int_equal(pthread_create(&threads[i], NULL, get_in_thread, &getters[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(threads[i], NULL);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(getters[i].rc, 0);
        assert_ptr_equal(getters[i].bc, getters[0].bc);
    }
    assert_int_equal(atomic_load(&slow.calls), 1);
    assert_int_equal(js_bytecode_cache_compilations(cache), 1);
    assert_int_equal(atomic_load(&getters[0].bc->refs), THREADS + 1);
    for (int i = 0; i < THREADS; i++)
        js_bytecode_release(getters[i].bc);
    js_bytecode_cache_free(cache);
}

static void test_cache_distinct_revisions_in_parallel(void **state)
{
    (void)state;
    enum { THREADS = 6 };
    static const char *const hexes[THREADS] = {"e1", "e2", "e3", "e4", "e5", "e6"};
    struct js_bytecode_cache *cache = js_bytecode_cache_new();
    struct fake_source source = {0, 20, small_module};
    struct getter getters[THREADS];
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        getters[i] = (struct getter){cache, &source, hexes[i], NULL, -1};
        assert_int_equal(pthread_create(&threads[i], NULL, get_in_thread, &getters[i]), 0);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(threads[i], NULL);
        assert_int_equal(getters[i].rc, 0);
        js_bytecode_release(getters[i].bc);
    }
    assert_int_equal(js_bytecode_cache_compilations(cache), THREADS);
    js_bytecode_cache_free(cache);
}

static void test_cache_forget_while_compiling(void **state)
{
    (void)state;
    struct js_bytecode_cache *cache = js_bytecode_cache_new();
    struct fake_source slow = {0, 150, small_module};
    struct getter g = {cache, &slow, "ffff", NULL, -1};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, get_in_thread, &g), 0);
    while (atomic_load(&slow.calls) == 0)
        usleep(1000);
    js_bytecode_cache_forget(cache, "ffff");
    pthread_join(thread, NULL);
    assert_int_equal(g.rc, 0);
    assert_int_equal(atomic_load(&g.bc->refs), 1); /* the caller's only: not kept */
    js_bytecode_release(g.bc);
    struct fake_source fast = {0, 0, small_module};
    struct js_bytecode *bc = NULL;
    struct err err = ERR_INIT;
    assert_int_equal(js_bytecode_cache_get(cache, "ffff", fake_source_fn, &fast, &bc, &err), 0);
    assert_int_equal(atomic_load(&fast.calls), 1);
    js_bytecode_release(bc);
    js_bytecode_cache_free(cache);
}

static void test_cache_many_revisions(void **state)
{
    (void)state;
    struct js_bytecode_cache *cache = js_bytecode_cache_new();
    struct fake_source source = {0, 0, "module.exports = {};"};
    enum { N = 300 };
    struct err err = ERR_INIT;
    for (int round = 0; round < 2; round++) {
        for (int i = 0; i < N; i++) {
            char hex[72];
            snprintf(hex, sizeof(hex), "%064x", i);
            struct js_bytecode *bc = NULL;
            assert_int_equal(js_bytecode_cache_get(cache, hex, fake_source_fn, &source, &bc, &err),
                             0);
            js_bytecode_release(bc);
        }
    }
    assert_int_equal(js_bytecode_cache_compilations(cache), N);
    for (int i = 0; i < N; i += 2) {
        char hex[72];
        snprintf(hex, sizeof(hex), "%064x", i);
        js_bytecode_cache_forget(cache, hex);
    }
    js_bytecode_cache_free(cache);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_commonjs_forms),
        cmocka_unit_test(test_handler_errors_report_file_positions),
        cmocka_unit_test(test_one_bytecode_many_sandboxes),
        cmocka_unit_test(test_compile_errors_point_at_the_token),
        cmocka_unit_test(test_compile_deep_nesting),
        cmocka_unit_test(test_compile_takes_length_not_nul),
        cmocka_unit_test(test_compile_larger_than_its_scratch),
        cmocka_unit_test(test_compile_memory_cap),
        cmocka_unit_test(test_compile_budget_stops_regexp_literal),
        cmocka_unit_test(test_compile_budget_stops_name_lookups),
        cmocka_unit_test(test_compiles_on_many_threads_keep_apart),
        cmocka_unit_test(test_compile_file_names),
        cmocka_unit_test(test_load_failures),
        cmocka_unit_test(test_unhandled_rejection_is_not_a_failure),
        cmocka_unit_test(test_memory_footprint),
        cmocka_unit_test(test_resident_memory_per_instance),
        cmocka_unit_test(test_cache_compiles_once),
        cmocka_unit_test(test_cache_failures_are_not_kept),
        cmocka_unit_test(test_cache_concurrent_getters_compile_once),
        cmocka_unit_test(test_cache_distinct_revisions_in_parallel),
        cmocka_unit_test(test_cache_forget_while_compiling),
        cmocka_unit_test(test_cache_many_revisions),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
