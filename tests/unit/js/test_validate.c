#include "testutil.h"

#include "core/clock.h"
#include "core/jsonutil.h"
#include "core/strbuf.h"
#include "js/module.h"
#include "js/validate.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- helpers */

#define MS (1000LL * 1000)

/* Every test runs twice: once through js_validate (each validation builds
 * its sandboxes) and once through a validator (sandboxes built ahead on
 * its thread, used ones freed there): both must give the same answers. */
static struct js_validator *validator;

static json_t *validate(const char *src, size_t len, const char *filename,
                        const struct js_limits *limits, struct err *err)
{
    return js_validator_run(validator, src, len, filename, limits, err);
}

static const char *const create_fn = "  create(env) { return { onTrade(t) {} }; },\n";

/* A module with the given metadata literal and a create function. */
static char *module_with(const char *metadata_literal)
{
    return tu_path("module.exports = {\n  metadata: %s,\n%s};\n", metadata_literal, create_fn);
}

/* Validates and expects failure; returns the diagnostics (owned by err). */
static json_t *expect_invalid(const char *src, const struct js_limits *limits, struct err *err)
{
    json_t *md = validate(src, strlen(src), "strat.js", limits, err);
    if (md) {
        char *text = jsonutil_dump(md, NULL);
        fail_msg("expected a validation failure, got %s\nsource:\n%s", text, src);
    }
    if (err->kind != ERR_UNPROCESSABLE)
        fail_msg("expected ERR_UNPROCESSABLE, got %s: %s", err_kind_name(err->kind), err->message);
    json_t *list = json_object_get(err->details, "diagnostics");
    assert_true(json_is_array(list));
    assert_true(json_array_size(list) >= 1);
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d)
    {
        /* every diagnostic has all five fields, and a hint worth reading */
        assert_true(json_is_string(json_object_get(d, "stage")));
        assert_true(json_is_string(json_object_get(d, "message")));
        assert_true(json_is_integer(json_object_get(d, "line")));
        assert_true(json_is_integer(json_object_get(d, "column")));
        assert_true(strlen(json_string_value(json_object_get(d, "hint"))) > 10);
    }
    return list;
}

static json_t *first_diag(const char *src, const struct js_limits *limits, struct err *err)
{
    return json_array_get(expect_invalid(src, limits, err), 0);
}

/* One diagnostic: stage, exact position, a part of the message and hint. */
static void expect_diag(const char *src, const struct js_limits *limits, const char *stage,
                        int line, int column, const char *message_part, const char *hint_part)
{
    struct err err = ERR_INIT;
    json_t *list = expect_invalid(src, limits, &err);
    json_t *d = json_array_get(list, 0);
    const char *got_stage = json_string_value(json_object_get(d, "stage"));
    const char *message = json_string_value(json_object_get(d, "message"));
    const char *hint = json_string_value(json_object_get(d, "hint"));
    long long l = json_integer_value(json_object_get(d, "line"));
    long long c = json_integer_value(json_object_get(d, "column"));
    /* line -1: any position (where an allocation fails at the cap depends on
     * the allocator's block sizes, which the sanitizers change); column -1:
     * any column of that line */
    bool position_ok = line < 0 || (l == line && (column < 0 ? c >= 1 : c == column));
    if (json_array_size(list) != 1 || strcmp(got_stage, stage) != 0 || !position_ok ||
        !strstr(message, message_part) || (hint_part && !strstr(hint, hint_part)))
        fail_msg("got %zu diagnostic(s), first %s %lld:%lld '%s' hint '%s'\nexpected %s %d:%d "
                 "'%s' hint '%s'\nsource:\n%s",
                 json_array_size(list), got_stage, l, c, message, hint, stage, line, column,
                 message_part, hint_part ? hint_part : "", src);
    /* the error's own message names the file and repeats the problem */
    assert_non_null(strstr(err.message, "strat.js"));
    assert_non_null(strstr(err.message, message_part));
    err_clear(&err);
}

static void expect_metadata_problem(const char *metadata_literal, const char *message_part,
                                    const char *hint_part)
{
    /* module_with writes the literal on line 2; where on it is
     * test_metadata_problems_point_at_their_field's business */
    char *src = module_with(metadata_literal);
    expect_diag(src, NULL, "metadata", 2, -1, message_part, hint_part);
    free(src);
}

static json_t *expect_valid(const char *src)
{
    struct err err = ERR_INIT;
    json_t *md = validate(src, strlen(src), "strat.js", NULL, &err);
    if (!md) {
        char *details = err.details ? jsonutil_dump(err.details, NULL) : NULL;
        fail_msg("validation failed: %s %s\nsource:\n%s", err.message, details ? details : "", src);
    }
    return md;
}

static void expect_metadata_ok(const char *metadata_literal)
{
    char *src = module_with(metadata_literal);
    json_decref(expect_valid(src));
    free(src);
}

/* ------------------------------------------------------------- success */

static void test_normalised_metadata(void **state)
{
    (void)state;
    const char *src =
        "module.exports = {\n"
        "  metadata: {\n"
        "    events: ['Trade', 'ExecReport'],\n"
        "    displayName: 'Momentum',\n"
        "    name: 'momentum',\n"
        "    tag: 'v1.2.0',\n"
        "    author: 'dropped: not part of the listing',\n"
        "    config: [\n"
        "      { type: 'int', name: 'size', default: 10, description: 'lots' },\n"
        "      { name: 'ratio', type: 'float', default: 2 },\n"
        "      { name: 'live', type: 'bool', required: false },\n"
        "      { name: 'window', type: 'duration', default: '1h30m' },\n"
        "      { name: 'mode', type: 'enum', options: ['fast', 'slow'], default: 'slow',\n"
        "        required: true },\n"
        "      { name: 'label', type: 'string', options: null },\n"
        "      { name: 'timeout', type: 'duration', default: 1500, description: undefined },\n"
        "    ],\n"
        "  },\n"
        "  create(env) { return {}; },\n"
        "};\n";
    json_t *md = expect_valid(src);
    char *text = jsonutil_dump(md, NULL);
    const char *expected =
        "{\"name\":\"momentum\",\"displayName\":\"Momentum\",\"description\":\"\","
        "\"tag\":\"v1.2.0\",\"events\":[\"Trade\",\"ExecReport\"],\"config\":["
        "{\"name\":\"size\",\"type\":\"int\",\"description\":\"lots\",\"default\":10,"
        "\"required\":false},"
        "{\"name\":\"ratio\",\"type\":\"float\",\"description\":\"\",\"default\":2,"
        "\"required\":false},"
        "{\"name\":\"live\",\"type\":\"bool\",\"description\":\"\",\"required\":false},"
        "{\"name\":\"window\",\"type\":\"duration\",\"description\":\"\",\"default\":\"1h30m\","
        "\"required\":false},"
        "{\"name\":\"mode\",\"type\":\"enum\",\"description\":\"\",\"default\":\"slow\","
        "\"required\":true,\"options\":[\"fast\",\"slow\"]},"
        "{\"name\":\"label\",\"type\":\"string\",\"description\":\"\",\"required\":false},"
        "{\"name\":\"timeout\",\"type\":\"duration\",\"description\":\"\",\"default\":1500,"
        "\"required\":false}]}";
    assert_string_equal(text, expected);
    free(text);
    json_decref(md);
}

static void test_minimal_metadata_gets_defaults(void **state)
{
    (void)state;
    char *src = module_with("{ name: 'tiny', displayName: 'Tiny', events: ['Ticker'] }");
    json_t *md = expect_valid(src);
    char *text = jsonutil_dump(md, NULL);
    assert_string_equal(text, "{\"name\":\"tiny\",\"displayName\":\"Tiny\",\"description\":\"\","
                              "\"events\":[\"Ticker\"],\"config\":[]}");
    free(text);
    json_decref(md);
    free(src);
}

/* Modern syntax must parse and behave: each feature is checked at the top
 * level, where a wrong result throws and fails the execute stage. */
static void test_modern_syntax(void **state)
{
    (void)state;
    const char *src =
        "#!/usr/bin/env stratd\n"
        "'use strict';\n"
        "const check = (ok, what) => { if (!ok) throw new Error('broken: ' + what); };\n"
        "class Window {\n"
        "  #values = [];\n"
        "  static #instances = 0;\n"
        "  static created;\n"
        "  static { Window.created = 'static-block'; }\n"
        "  constructor(size) { this.size = size; Window.#instances++; }\n"
        "  push(v) {\n"
        "    this.#values.push(v);\n"
        "    if (this.#values.length > this.size) this.#values.shift();\n"
        "    return this;\n"
        "  }\n"
        "  get last() { return this.#values.at(-1); }\n"
        "  get lastBig() { return this.#values.findLast((v) => v > 2); }\n"
        "  #secret() { return 's'; }\n"
        "  has(v) { return #values in this && this.#values.includes(v) && !!this.#secret(); }\n"
        "  static count() { return Window.#instances; }\n"
        "}\n"
        "const w = new Window(3).push(1).push(2).push(3).push(4);\n"
        "check(w.last === 4 && w.lastBig === 4, 'private fields, at, findLast');\n"
        "check(Window.created === 'static-block' && Window.count() === 1, 'static block');\n"
        "check(w.has(2) && !w.has(1), 'private methods and brand checks');\n"
        "const { a, b: [first, ...others], ...rest } = { a: 1, b: [2, 3, 4], c: 5, d: 6 };\n"
        "check(a === 1 && first === 2 && others.length === 2 && rest.d === 6, 'destructuring');\n"
        "const merged = { ...rest, e: [...others, ...'xy'] };\n"
        "check(merged.e.join('') === '34xy' && merged.c === 5, 'spread');\n"
        "const deep = { x: { y: null } };\n"
        "check(deep?.x?.y?.z === undefined && deep.q?.() === undefined, 'optional chaining');\n"
        "check((deep.x.y ?? 'fb') === 'fb' && (0 ?? 1) === 0, 'nullish coalescing');\n"
        "let la = null; la ?\?= 1; let lb = 1; lb ||= 2; let lc = 1; lc &&= 3;\n"
        "check(la === 1 && lb === 1 && lc === 3, 'logical assignment');\n"
        "check(2n ** 64n === 18446744073709551616n && typeof 10n === 'bigint', 'BigInt');\n"
        "check(1_000_000 === 1e6 && 0xFF_FF === 65535, 'numeric separators');\n"
        "check(Object.hasOwn({ k: 1 }, 'k') && !Object.hasOwn({}, 'toString'), 'hasOwn');\n"
        "check([3, 1, 2].toSorted().join() === '1,2,3' && [1, 2].toReversed()[0] === 2,\n"
        "      'change array by copy');\n"
        "check([1, 2, 3].findLastIndex((v) => v < 3) === 1, 'findLastIndex');\n"
        "check(new Error('x', { cause: 7 }).cause === 7, 'error cause');\n"
        "check('2024-05'.match(/(?<y>\\d{4})-(?<m>\\d\\d)/d).groups.m === '05', 'regexp');\n"
        "check('a-b-c'.replaceAll('-', '+') === 'a+b+c', 'replaceAll');\n"
        "function* gen() { yield 1; yield* [2, 3]; }\n"
        "check([...gen()].join() === '1,2,3', 'generators');\n"
        "const counts = new Map([['x', 1]]); counts.set('y', 2);\n"
        "check(Object.fromEntries(counts).y === 2 && new Set([1, 1]).size === 1, 'Map/Set');\n"
        "check(`t${1 + 1}` === 't2' && String.raw`a\\n` === 'a\\\\n', 'template literals');\n"
        "let asyncResult = 'pending';\n"
        "async function later(v) { await null; return v * 2; }\n"
        "(async () => {\n"
        "  for await (const v of [later(10), later(11)]) asyncResult = v;\n"
        "  try { await Promise.reject(new Error('r')); } catch { asyncResult += 0; }\n"
        "})();\n"
        "module.exports = {\n"
        "  metadata: {\n"
        "    name: 'modern',\n"
        "    displayName: 'Modern',\n"
        "    get description() { return `async=${asyncResult}`; },\n"
        "    events: ['Trade'],\n"
        "  },\n"
        "  create: (env) => ({ onTrade: async (t) => { await null; return t?.price ?? 0; } }),\n"
        "};\n";
    json_t *md = expect_valid(src);
    /* the async work finished during the load: its promise jobs ran */
    assert_string_equal(json_string_value(json_object_get(md, "description")), "async=22");
    json_decref(md);
}

/* -------------------------------------------------------- compile stage */

static void test_compile_stage_positions(void **state)
{
    (void)state;
    expect_diag("module.exports = {\n  metadata: {},\n  create() {\n    return 1;\n  },\n", NULL,
                "compile", 6, 1, "unexpected end of input", "close every");
    expect_diag("var a = 1;\nvar b = 2;\n  var c = a b;\n", NULL, "compile", 3, 13,
                "SyntaxError: expecting ';'", "statement");
    expect_diag("var x = 1;\nvar s = 'abc;\nvar y = 2;\n", NULL, "compile", 2, 9,
                "unexpected end of string", "close the string");
    expect_diag("module.exports = {\n  metadata: { name: 'x' }\n  create() {}\n};\n", NULL,
                "compile", 3, 3, "expecting '}'", "','");
    expect_diag("const f = () => {\n  return [1, 2;\n};\n", NULL, "compile", 2, 15, "expecting ']'",
                "array");
    expect_diag("function f() {\n  return 1;\n}}\n", NULL, "compile", 3, 2, "unexpected token",
                "token");
    expect_diag("export default {};\n", NULL, "compile", 1, 1, "SyntaxError", "CommonJS");
    /* QuickJS names an undeclared private name with no position: its use */
    expect_diag("// c\nclass A {\n  #x;\n  m() { return this.#y; }\n}\n", NULL, "compile", 4, 21,
                "SyntaxError: undefined private field '#y'", "declare the private name");
    expect_diag("class A {\n  #x;\n  has(o) { return '#y' in o || #y in o; }\n}\n", NULL, "compile",
                3, 32, "undefined private field '#y'", "declare");
    /* declared in another class and used twice: which use is wrong is not
     * sure, so no position, and a hint that does not point at one */
    expect_diag("class B { #y = 1; m() { return this.#y; } }\n"
                "class A {\n  m() { return this.#y; }\n}\n",
                NULL, "compile", 0, 0, "undefined private field '#y'", "declare");
    /* declared elsewhere, used once: that use */
    expect_diag("class B { #y = 1; }\nclass A {\n  m(o) { return o?.#y; }\n}\n", NULL, "compile", 3,
                20, "undefined private field '#y'", "declare");
}

/* -------------------------------------------------------- execute stage */

/* A promise the top level leaves rejected with nobody to catch it fails
 * at every start: refused at the statement that threw; one caught, even a
 * moment later, is no problem. */
static void test_top_level_rejections(void **state)
{
    (void)state;
    char *src = tu_path("const ok = 1;\n(async () => {\n  await null;\n"
                        "  if (ok) throw new Error('top async boom');\n})();\n%s",
                        "module.exports = { metadata: { name: 'r', displayName: 'R', events: "
                        "['Trade'] },\n  create() { return {}; } };\n");
    expect_diag(src, NULL, "execute", 4, 11,
                "the top level left a promise rejected with no handler: Error: top async boom",
                "catch the failure");
    free(src);
    expect_diag("Promise.reject('plain');\n", NULL, "execute", 0, 0,
                "left a promise rejected with no handler: string: plain", "catch");
    static const char *const caught[] = {
        "Promise.reject(new Error('x')).catch(() => {});\n",
        "const p = Promise.reject(new Error('late'));\np.catch(() => {});\n",
        "(async () => { try { await Promise.reject(new Error('y')); } catch (e) {} })();\n",
    };
    for (size_t i = 0; i < sizeof caught / sizeof *caught; i++) {
        char *text = tu_path("%s%s", caught[i],
                             "module.exports = { metadata: { name: 'r', "
                             "displayName: 'R', events: ['Trade'] },\n"
                             "  create() { return {}; } };\n");
        json_decref(expect_valid(text));
        free(text);
    }
}

static void test_execute_stage_positions(void **state)
{
    (void)state;
    /* the throw statement itself, not the Error constructor's '(' */
    expect_diag("const x = 1;\n\n    throw new Error('nope');\n", NULL, "execute", 3, 5,
                "the top level threw Error: nope", "must not throw");
    expect_diag("var a = 1;\nif (a) { throw Error('plain'); }\n", NULL, "execute", 2, 10,
                "Error: plain", NULL);
    expect_diag("function boom() {\n  throw new TypeError('inner');\n}\nboom();\n", NULL, "execute",
                2, 3, "TypeError: inner", NULL);
    /* not a throw statement: the statement holding the failing expression */
    expect_diag("var cfg = null;\nvar n = 1;\nvar size = cfg.size;\n", NULL, "execute", 3, 1,
                "TypeError: cannot read property 'size' of null", NULL);
    expect_diag("module.exports = { metadata: helpers() };\n", NULL, "execute", 1, 1,
                "ReferenceError: 'helpers' is not defined", "built-ins");
    /* text that is not valid UTF-8 (a lone surrogate) still makes a diagnostic */
    expect_diag("throw new Error('\\ud800 lone');\n", NULL, "execute", 1, 1, "\xef\xbf\xbd lone",
                NULL);
    expect_diag("var a = 1; var b = null; b.x = 2;\n", NULL, "execute", 1, 26,
                "TypeError: cannot set property 'x' of null", NULL);
    /* a ';' in a string, a template or a comment ends no statement, and a
     * comment before the statement is not it */
    expect_diag("const o = null;\nconst s = 'a;b', z = o.foo;\n", NULL, "execute", 2, 1,
                "TypeError: cannot read property 'foo' of null", NULL);
    expect_diag("const o = null;\nconst z = /* a; b */ o.foo;\n", NULL, "execute", 2, 1,
                "TypeError: cannot read property 'foo' of null", NULL);
    expect_diag("const o = null;\nconst u = `http://x;y` + o.foo;\n", NULL, "execute", 2, 1,
                "TypeError: cannot read property 'foo' of null", NULL);
    expect_diag("const o = null;\n/* note */ const z = o.foo;\n", NULL, "execute", 2, 12,
                "TypeError: cannot read property 'foo' of null", NULL);
    expect_diag("function h(s) {\n\t/* x */ return s.nope();\n}\nh('x');\n", NULL, "execute", 2, 10,
                "TypeError: not a function", NULL);
    /* a thrown non-Error has no position of its own: the one `throw` of
     * that literal is the statement */
    expect_diag("var a = 1;\nthrow 42;\n", NULL, "execute", 2, 1, "threw number: 42",
                "throw new Error");
    expect_diag("if (1) {\n  throw 'not ready';\n}\n", NULL, "execute", 2, 3,
                "threw string: not ready", NULL);
    /* two candidates: no guess */
    expect_diag("if (0) throw 'x';\nthrow 'x';\n", NULL, "execute", 0, 0, "threw string: x", NULL);
}

static void test_execute_stage_limits(void **state)
{
    (void)state;
    struct js_limits fast = {8u << 20, 0, 100 * MS};
    int64_t start = clock_mono_ns();
    expect_diag("module.exports = {};\nwhile (true) {}\n", &fast, "execute", 0, 0,
                "the top level ran past its budget of 100 ms", "loop");
    assert_true(clock_mono_ns() - start < 2000 * MS);
    /* a budget that cannot run out first, even in a sanitizer build */
    struct js_limits small = {8u << 20, 0, 20000 * MS};
    expect_diag("var keep = [];\nfor (;;) keep.push({ n: keep.length, s: 'x' + keep.length });\n",
                &small, "execute", -1, -1, "the top level hit the memory cap of 8 MiB", "allocate");
    expect_diag("function f(n) { return f(n + 1) + 1; }\nf(0);\n", &fast, "execute", 1, 25,
                "recursed past the stack limit", "recursion");
    /* a catch does not hide the budget */
    expect_diag("try { for (;;) {} } catch (e) {}\nmodule.exports = {};\n", &fast, "execute", 0, 0,
                "ran past its budget of 100 ms", NULL);
}

static void test_execute_stage_default_limits(void **state)
{
    (void)state;
    int64_t start = clock_mono_ns();
    expect_diag("for (;;) {}\n", NULL, "execute", 0, 0,
                "the top level ran past its budget of 1000 ms", NULL);
    int64_t took = clock_mono_ns() - start;
    assert_true(took >= 1000 * MS && took < 3000 * MS);
    expect_diag("var keep = [];\nfor (;;) keep.push(new Float64Array(4096));\n", NULL, "execute",
                -1, -1, "the top level hit the memory cap of 32 MiB", NULL);
}

/* ------------------------------------------------------- metadata stage */

static void test_metadata_presence(void **state)
{
    (void)state;
    expect_diag("module.exports = 42;\n", NULL, "metadata", 0, 0, "module.exports is not an object",
                "module.exports = {");
    expect_diag("module.exports = { create() {} };\n", NULL, "metadata", 0, 0,
                "module.exports.metadata is missing", "metadata: { name, displayName, events }");
    expect_diag("exports.metadata = 'momentum';\nexports.create = () => ({});\n", NULL, "metadata",
                0, 0, "module.exports.metadata is not an object", NULL);
    expect_diag("module.exports = { get metadata() { throw new Error('no'); }, create() {} };\n",
                NULL, "metadata", 0, 0, "reading module.exports.metadata threw Error: no", NULL);
    /* reading metadata runs under the budget too */
    struct js_limits fast = {0, 0, 50 * MS};
    expect_diag("module.exports = { get metadata() { for (;;) {} }, create() {} };\n", &fast,
                "metadata", 0, 0,
                "reading module.exports.metadata threw InternalError: interrupted", NULL);
    expect_metadata_problem("{ name: 'x', displayName: 'X', events: ['Trade'], big: 10n }",
                            "module.exports.metadata is not plain data (TypeError",
                            "strings, numbers");
}

static void test_metadata_name_and_display_name(void **state)
{
    (void)state;
    expect_metadata_problem("{ displayName: 'X', events: ['Trade'] }", "metadata.name is missing",
                            "set metadata.name");
    expect_metadata_problem("{ name: 'Bad Name', displayName: 'X', events: ['Trade'] }",
                            "metadata.name 'Bad Name' is not a valid strategy name", "a-z");
    expect_metadata_problem("{ name: 5, displayName: 'X', events: ['Trade'] }",
                            "metadata.name a value of type int is not a valid strategy name", NULL);
    expect_metadata_problem("{ name: 'a'.repeat(65), displayName: 'X', events: ['Trade'] }",
                            "is not a valid strategy name", "64");
    expect_metadata_ok("{ name: 'a'.repeat(64), displayName: 'X', events: ['Trade'] }");
    expect_metadata_problem("{ name: 'x', events: ['Trade'] }", "metadata.displayName is missing",
                            "add metadata.displayName: a string of 1 to 80 characters");
    expect_metadata_problem("{ name: 'x', displayName: '', events: ['Trade'] }",
                            "metadata.displayName must be 1 to 80 characters long, got 0",
                            "add metadata.displayName: a string of 1 to 80 characters");
    expect_metadata_problem("{ name: 'x', displayName: 'D'.repeat(81), events: ['Trade'] }",
                            "got 81", NULL);
    expect_metadata_problem("{ name: 'x', displayName: 7, events: ['Trade'] }",
                            "metadata.displayName must be a string, got int", NULL);
    expect_metadata_ok("{ name: 'x', displayName: 'D'.repeat(80), events: ['Trade'] }");
    /* characters, not bytes */
    expect_metadata_ok("{ name: 'x', displayName: '\\u00e9'.repeat(80), events: ['Trade'] }");
    expect_metadata_problem("{ name: 'x', displayName: '\\u00e9'.repeat(81), events: ['Trade'] }",
                            "got 81", NULL);
}

static void test_metadata_description_and_tag(void **state)
{
    (void)state;
    expect_metadata_problem("{ name: 'x', displayName: 'X', description: 5, events: ['Trade'] }",
                            "metadata.description must be a string, got int",
                            "make metadata.description a string");
    expect_metadata_problem("{ name: 'x', displayName: 'X', tag: 'bad tag', events: ['Trade'] }",
                            "metadata.tag 'bad tag' is not a valid tag", "v1.2.0");
    expect_metadata_problem("{ name: 'x', displayName: 'X', tag: '.v1', events: ['Trade'] }",
                            "is not a valid tag", NULL);
    expect_metadata_ok("{ name: 'x', displayName: 'X', tag: 'v1.2.0-rc_1', events: ['Trade'] }");
}

static void test_metadata_events(void **state)
{
    (void)state;
    expect_metadata_problem("{ name: 'x', displayName: 'X' }", "metadata.events is missing",
                            "Trade, Ticker, BookSnapshot, ExecReport, KlineSummary, "
                            "InstrumentUpdate, BalanceUpdate, RiskControl, Extension");
    expect_metadata_problem("{ name: 'x', displayName: 'X', events: [] }",
                            "metadata.events must be a non-empty array of event names, got an "
                            "empty array",
                            "['Trade']");
    expect_metadata_problem("{ name: 'x', displayName: 'X', events: 'Trade' }", "got string", NULL);
    expect_metadata_problem("{ name: 'x', displayName: 'X', events: ['trade'] }",
                            "metadata.events[0] 'trade' is not an event name", "case matters");
    expect_metadata_problem("{ name: 'x', displayName: 'X', events: ['Trade', 3] }",
                            "metadata.events[1] a value of type int is not an event name", NULL);
    expect_metadata_problem("{ name: 'x', displayName: 'X', events: ['Trade', 'Ticker', 'Trade'] }",
                            "metadata.events[2] 'Trade' is listed twice", "once");
    expect_metadata_ok("{ name: 'x', displayName: 'X', events: ['Trade', 'Ticker', "
                       "'BookSnapshot', 'ExecReport', 'KlineSummary', 'InstrumentUpdate', "
                       "'BalanceUpdate', 'RiskControl', 'Extension'] }");
}

static void config_problem(const char *fields, const char *message_part, const char *hint_part)
{
    char *literal =
        tu_path("{ name: 'x', displayName: 'X', events: ['Trade'], config: %s }", fields);
    expect_metadata_problem(literal, message_part, hint_part);
    free(literal);
}

static void config_ok(const char *fields)
{
    char *literal =
        tu_path("{ name: 'x', displayName: 'X', events: ['Trade'], config: %s }", fields);
    expect_metadata_ok(literal);
    free(literal);
}

static void test_metadata_config_shape(void **state)
{
    (void)state;
    config_problem("{}", "metadata.config must be an array, got object", "array of fields");
    config_problem("['size']", "metadata.config[0] must be an object, got string", "{name:");
    config_problem("[{ type: 'int' }]", "metadata.config[0].name must be a non-empty string",
                   "give each config field a name");
    config_problem("[{ name: '', type: 'int' }]", "must be a non-empty string", NULL);
    config_problem("[{ name: 'n', type: 'number' }]",
                   "metadata.config[0] (n).type 'number' is not a config type",
                   "string, int, float, bool, duration, enum");
    config_problem("[{ name: 'n' }]", "metadata.config[0] (n).type (missing) is not a config type",
                   NULL);
    config_problem("[{ name: 'n', type: 'int' }, { name: 'n', type: 'float' }]",
                   "metadata.config[1] (n).name 'n' is declared more than once", "unique");
    config_problem("[{ name: 'n', type: 'int', required: 'yes' }]",
                   "metadata.config[0] (n).required must be true or false, got string", NULL);
    config_problem("[{ name: 'n', type: 'int', description: 5 }]",
                   "metadata.config[0] (n).description must be a string, got int", NULL);
    config_ok("null");
    config_ok("[]");
}

static void test_metadata_config_defaults(void **state)
{
    (void)state;
    config_problem("[{ name: 'n', type: 'int', default: 'x' }]",
                   "metadata.config[0] (n).default: expected int, got 'x'", "type int");
    config_problem("[{ name: 'n', type: 'int', default: 1.5 }]", "expected int, got float", NULL);
    config_problem("[{ name: 'n', type: 'float', default: '1' }]", "expected float, got '1'", NULL);
    config_problem("[{ name: 'n', type: 'bool', default: 1 }]", "expected bool, got int", NULL);
    config_problem("[{ name: 'n', type: 'string', default: 1 }]", "expected string, got int", NULL);
    config_problem("[{ name: 'n', type: 'duration', default: '5x' }]",
                   "expected duration such as \"250ms\", \"5s\", \"1h30m\" or a whole number of "
                   "milliseconds not below 0, got '5x'",
                   "a duration");
    config_problem("[{ name: 'n', type: 'duration', default: -5 }]", "got -5", NULL);
    config_problem("[{ name: 'm', type: 'enum' }]",
                   "metadata.config[0] (m) is an enum without options", "['fast', 'slow']");
    config_problem("[{ name: 'm', type: 'enum', options: [] }]", "is an enum without options",
                   NULL);
    config_problem("[{ name: 'm', type: 'enum', options: ['a', 1] }]",
                   "metadata.config[0] (m).options[1] must be a string, got int", NULL);
    config_problem("[{ name: 'm', type: 'enum', options: ['a', 'b'], default: 'c' }]",
                   "expected one of a, b, got 'c'", "one of a, b");
    config_ok("[{ name: 'n', type: 'int', default: 3 }, { name: 'f', type: 'float', default: 3 },"
              " { name: 'g', type: 'float', default: 0.25 }, { name: 'b', type: 'bool', default: "
              "false }, { name: 's', type: 'string', default: '' }, { name: 'd', type: "
              "'duration', default: '250ms' }, { name: 'e', type: 'duration', default: 0 },"
              " { name: 'm', type: 'enum', options: ['a'], default: 'a' },"
              " { name: 'z', type: 'int', default: null, required: true }]");
}

/* The source text at a 1-based line and column (ASCII sources), to keep
 * expected positions honest if a fixture is edited. */
static const char *text_at(const char *src, int line, int column)
{
    const char *p = src;
    for (int i = 1; i < line; i++) {
        p = strchr(p, '\n');
        assert_non_null(p);
        p++;
    }
    return p + column - 1;
}

/* Diagnostic `i` of list is exactly `message` with exactly `hint`, at
 * line:column where the source shows `shows`. */
static void expect_exact(const json_t *list, size_t i, const char *src, const char *message,
                         const char *hint, int line, int column, const char *shows)
{
    const json_t *d = json_array_get(list, i);
    const char *got = json_string_value(json_object_get(d, "message"));
    const char *got_hint = json_string_value(json_object_get(d, "hint"));
    long long l = json_integer_value(json_object_get(d, "line"));
    long long c = json_integer_value(json_object_get(d, "column"));
    if (!got || strcmp(got, message) != 0 || strcmp(got_hint, hint) != 0 || l != line ||
        c != column)
        fail_msg("diagnostic %zu: '%s' hint '%s' at %lld:%lld\nexpected '%s' hint '%s' at %d:%d", i,
                 got ? got : "(none)", got_hint ? got_hint : "", l, c, message, hint, line, column);
    assert_string_equal(json_string_value(json_object_get(d, "stage")), "metadata");
    assert_memory_equal(text_at(src, line, column), shows, strlen(shows));
}

#define FIELD_KEYS "name, type, description, default, required and options"

/* A config field key the gateway does not know would change nothing
 * without a word (a `defualt` leaves the field without a default, a `min`
 * is never enforced): each is refused, naming it, with the key meant when
 * it is a typo of one. */
static void test_metadata_unknown_config_field_keys(void **state)
{
    (void)state;
    const char *src = "module.exports = {\n"
                      "  metadata: {\n"
                      "    name: 'x', displayName: 'X', events: ['Trade'],\n"
                      "    config: [\n"
                      "      { name: 'size', type: 'float', defualt: 0.5 },\n"
                      "      { name: 'lo', type: 'int', min: 1 },\n"
                      "      { nmae: 'n', type: 'int' },\n"
                      "    ],\n"
                      "  },\n"
                      "  create() { return {}; },\n"
                      "};\n";
    struct err err = ERR_INIT;
    json_t *list = expect_invalid(src, NULL, &err);
    assert_int_equal(json_array_size(list), 4);
    expect_exact(list, 0, src, "metadata.config[0] (size).defualt is not a config field key",
                 "did you mean 'default'? A config field takes " FIELD_KEYS, 5, 38, "defualt");
    expect_exact(list, 1, src, "metadata.config[1] (lo).min is not a config field key",
                 "remove it: a config field takes " FIELD_KEYS, 6, 34, "min");
    expect_exact(list, 2, src, "metadata.config[2].name must be a non-empty string",
                 "give each config field a name: a non-empty string", 7, 7, "{ nmae");
    expect_exact(list, 3, src, "metadata.config[2].nmae is not a config field key",
                 "did you mean 'name'? A config field takes " FIELD_KEYS, 7, 9, "nmae");
    assert_non_null(strstr(err.message, "strat.js:5:38: metadata.config[0] (size).defualt is not "
                                        "a config field key (and 3 more problems)"));
    err_clear(&err);
    /* case counts, and a swap of neighbours is one typo */
    config_problem("[{ name: 'n', type: 'int', Default: 1 }]",
                   "metadata.config[0] (n).Default is not a config field key",
                   "did you mean 'default'?");
    config_problem("[{ name: 'n', type: 'int', requried: true }]", "(n).requried is not",
                   "did you mean 'required'?");
    config_problem("[{ name: 'n', type: 'int', label: 'N' }]",
                   "metadata.config[0] (n).label is not a config field key", "remove it");
    /* null is a value like any other: the key is still misspelt */
    config_problem("[{ name: 'n', type: 'int', defualt: null }]", "(n).defualt is not", NULL);
}

/* Keys beside the metadata fields are the author's own (dropped from the
 * listing), except one a typo away from a field, which is that field
 * misspelt: `evnets` would leave the events missing, `tga` the revision
 * untagged. */
static void test_metadata_misspelt_top_level_keys(void **state)
{
    (void)state;
    const char *src = "module.exports = {\n"
                      "  metadata: {\n"
                      "    name: 'x', displayName: 'X',\n"
                      "    evnets: ['Trade'],\n"
                      "    tga: 'v1',\n"
                      "    author: 'A. Author', note: 'n', version: 3, a: 1, id: 'x',\n"
                      "  },\n"
                      "  create() { return {}; },\n"
                      "};\n";
    const char *lead = "Correct it: a key of the strategy's own may sit beside the metadata fields "
                       "(name, displayName, description, tag, events and config), but not one "
                       "typo away from one";
    struct err err = ERR_INIT;
    json_t *list = expect_invalid(src, NULL, &err);
    assert_int_equal(json_array_size(list), 3);
    expect_exact(list, 0, src, "metadata.events is missing",
                 json_string_value(json_object_get(json_array_get(list, 0), "hint")), 2, 3,
                 "metadata");
    char *hint = tu_path("did you mean 'events'? %s", lead);
    expect_exact(list, 1, src, "metadata.evnets is not a metadata field", hint, 4, 5, "evnets");
    free(hint);
    hint = tu_path("did you mean 'tag'? %s", lead);
    expect_exact(list, 2, src, "metadata.tga is not a metadata field", hint, 5, 5, "tga");
    free(hint);
    err_clear(&err);
    expect_metadata_problem("{ name: 'x', Name: 'y', displayName: 'X', events: ['Trade'] }",
                            "metadata.Name is not a metadata field", "did you mean 'name'?");
    expect_metadata_problem("{ name: 'x', displayName: 'X', displayname: 'Y', events: ['Trade'] }",
                            "metadata.displayname is not", "did you mean 'displayName'?");
    expect_metadata_problem("{ name: 'x', displayName: 'X', events: ['Trade'], confg: [] }",
                            "metadata.confg is not", "did you mean 'config'?");
    expect_metadata_problem("{ name: 'x', displayName: 'X', events: ['Trade'], tags: [] }",
                            "metadata.tags is not", "did you mean 'tag'?");
    expect_metadata_problem("{ name: 'x', displayName: 'X', events: ['Trade'], descripton: '' }",
                            "metadata.descripton is not", "did you mean 'description'?");
    /* keys further off are the author's own, and not listed */
    char *ok = module_with("{ name: 'x', displayName: 'X', events: ['Trade'], author: 'A',"
                           " note: 'n', team: 't', version: 3, a: 1, id: 'x', params: {},"
                           " eventsSeen: 0, configuration: 'c' }");
    json_t *md = expect_valid(ok);
    char *text = jsonutil_dump(md, NULL);
    assert_string_equal(text, "{\"name\":\"x\",\"displayName\":\"X\",\"description\":\"\","
                              "\"events\":[\"Trade\"],\"config\":[]}");
    free(text);
    json_decref(md);
    free(ok);
}

/* An enum option listed twice is a slip (a value meant to be another);
 * options on a field that is no enum would be listed and never enforced. */
static void test_metadata_enum_options(void **state)
{
    (void)state;
    const char *src = "module.exports = {\n"
                      "  metadata: {\n"
                      "    name: 'x', displayName: 'X', events: ['Trade'],\n"
                      "    config: [\n"
                      "      { name: 'mode', type: 'enum', options: ['fast', 'slow', 'fast'] },\n"
                      "      { name: 'label', type: 'string', options: ['a', 'b'] },\n"
                      "    ],\n"
                      "  },\n"
                      "  create() { return {}; },\n"
                      "};\n";
    struct err err = ERR_INIT;
    json_t *list = expect_invalid(src, NULL, &err);
    assert_int_equal(json_array_size(list), 2);
    expect_exact(list, 0, src, "metadata.config[0] (mode).options[2] 'fast' is listed twice",
                 "list each option once", 5, 63, "'fast']");
    expect_exact(list, 1, src,
                 "metadata.config[1] (label).options: only an enum takes options, and this field "
                 "is of type string",
                 "make the field's type 'enum', or remove its options", 6, 40, "options");
    err_clear(&err);
    config_problem("[{ name: 'm', type: 'enum', options: ['a', 'a'] }]",
                   "metadata.config[0] (m).options[1] 'a' is listed twice", NULL);
    config_problem("[{ name: 'n', type: 'int', options: [] }]",
                   "(n).options: only an enum takes options, and this field is of type int", NULL);
    config_ok("[{ name: 'm', type: 'enum', options: ['a', 'A', 'b'] },"
              " { name: 'n', type: 'int', options: null }]");
}

/* dry_run, memory_limit_mb and cpu_budget_ms are read by the gateway,
 * declared or not: a declaration whose type or default the gateway would
 * refuse made a module no instance of which could be created. */
static void test_metadata_gateway_keys(void **state)
{
    (void)state;
    const char *src = "module.exports = {\n"
                      "  metadata: {\n"
                      "    name: 'x', displayName: 'X', events: ['Trade'],\n"
                      "    config: [\n"
                      "      { name: 'dry_run', type: 'string', default: 'true' },\n"
                      "      { name: 'memory_limit_mb', type: 'string', default: '8' },\n"
                      "      { name: 'cpu_budget_ms', type: 'duration', default: '0ms' },\n"
                      "    ],\n"
                      "  },\n"
                      "  create() { return {}; },\n"
                      "};\n";
    struct err err = ERR_INIT;
    json_t *list = expect_invalid(src, NULL, &err);
    assert_int_equal(json_array_size(list), 3);
    expect_exact(list, 0, src,
                 "metadata.config[0] (dry_run).type 'string': the gateway reads dry_run as bool",
                 "declare dry_run with type bool, or give the field another name: the gateway "
                 "reads dry_run whether the metadata declares it or not",
                 5, 26, "type");
    expect_exact(list, 1, src,
                 "metadata.config[1] (memory_limit_mb).type 'string': the gateway reads "
                 "memory_limit_mb as a number of MiB from 1 to 65536",
                 "declare memory_limit_mb with type int or float, or give the field another name: "
                 "the gateway reads memory_limit_mb whether the metadata declares it or not",
                 6, 34, "type");
    expect_exact(list, 2, src,
                 "metadata.config[2] (cpu_budget_ms).default: expected a number of milliseconds "
                 "above 0 and at most 3600000, got '0ms'",
                 "make the default a number of milliseconds above 0 and at most 3600000, or "
                 "remove it: the gateway reads cpu_budget_ms whether the metadata declares it or "
                 "not",
                 7, 50, "default");
    err_clear(&err);
    config_problem("[{ name: 'dry_run', type: 'enum', options: ['true', 'false'] }]",
                   "(dry_run).type 'enum': the gateway reads dry_run as bool", NULL);
    config_problem("[{ name: 'memory_limit_mb', type: 'duration' }]",
                   "(memory_limit_mb).type 'duration': the gateway reads memory_limit_mb as",
                   "type int or float");
    config_problem("[{ name: 'cpu_budget_ms', type: 'bool' }]",
                   "(cpu_budget_ms).type 'bool': the gateway reads cpu_budget_ms as a number of "
                   "milliseconds above 0 and at most 3600000",
                   "type int, float or duration");
    config_problem("[{ name: 'memory_limit_mb', type: 'int', default: 0 }]",
                   "metadata.config[0] (memory_limit_mb).default: expected a number of MiB from 1 "
                   "to 65536, got 0",
                   "make the default a number of MiB from 1 to 65536, or remove it");
    config_problem("[{ name: 'memory_limit_mb', type: 'int', default: 65537 }]", "got 65537", NULL);
    config_problem("[{ name: 'memory_limit_mb', type: 'float', default: 0.5 }]", "got 0.5", NULL);
    config_problem("[{ name: 'cpu_budget_ms', type: 'int', default: 3600001 }]", "got 3600001",
                   NULL);
    config_problem("[{ name: 'cpu_budget_ms', type: 'duration', default: '1h1ms' }]", "got '1h1ms'",
                   NULL);
    config_ok("[{ name: 'dry_run', type: 'bool', default: true },"
              " { name: 'memory_limit_mb', type: 'int', default: 1 },"
              " { name: 'cpu_budget_ms', type: 'duration', default: '1h' }]");
    config_ok("[{ name: 'dry_run', type: 'bool' },"
              " { name: 'memory_limit_mb', type: 'float', default: 65536 },"
              " { name: 'cpu_budget_ms', type: 'float', default: 0.5, required: true }]");
}

/* The diagnostic naming `part` in list, or a failure. */
static const json_t *diag_naming(const json_t *list, const char *part)
{
    size_t i;
    const json_t *d;
    json_array_foreach(list, i, d)
    {
        if (strstr(json_string_value(json_object_get(d, "message")), part))
            return d;
    }
    fail_msg("no diagnostic names '%s'", part);
    return NULL;
}

static void expect_at(const json_t *list, const char *part, int line, int column)
{
    const json_t *d = diag_naming(list, part);
    long long l = json_integer_value(json_object_get(d, "line"));
    long long c = json_integer_value(json_object_get(d, "column"));
    if (l != line || c != column)
        fail_msg("'%s' at %lld:%lld, expected %d:%d", part, l, c, line, column);
}

/* Metadata problems point at the field as the source spells it, past
 * look-alikes in comments, strings, templates (a line continuation in one
 * included) and regular expressions; a missing field at the `metadata` key; computed metadata has
 * no position. */
static void test_metadata_problems_point_at_their_field(void **state)
{
    (void)state;
    const char *src =
        "// metadata: { name: 'decoy' }\n"
        "const s = 'metadata: {', re = /metadata: {/, t = `metadata: ${{ a: 1 }.a}`;\n"
        "const banner = `continued \\\n on the next line`;\n"
        "module.exports = {\n"
        "  metadata: {\n"
        "    name: 'ok', /* tag: 1 */\n"
        "    'tag': 'no good',\n"
        "    events: ['Trade', 'Nope'],\n"
        "    config: [\n"
        "      { name: 'a', type: 'int', description: `tag: ${'}'}` },\n"
        "      { name: 'b', type: 'strange' },\n"
        "    ],\n"
        "  },\n"
        "  create() { return {}; },\n"
        "};\n";
    struct err err = ERR_INIT;
    json_t *list = expect_invalid(src, NULL, &err);
    assert_int_equal(json_array_size(list), 4);
    expect_at(list, "displayName is missing", 6, 3);
    expect_at(list, "metadata.tag", 8, 5);
    expect_at(list, "metadata.events[1]", 9, 23);
    expect_at(list, "metadata.config[1]", 12, 20);
    /* the error's message carries the first one's position */
    const json_t *first = json_array_get(list, 0);
    char *where =
        tu_path("strat.js:%lld:%lld: ", json_integer_value(json_object_get(first, "line")),
                json_integer_value(json_object_get(first, "column")));
    assert_non_null(strstr(err.message, where));
    free(where);
    err_clear(&err);

    /* metadata in a variable, exported by shorthand */
    list = expect_invalid("const metadata = {\n  name: 'x',\n  events: 'Trade',\n};\n"
                          "module.exports = { metadata, create() { return {}; } };\n",
                          NULL, &err);
    expect_at(list, "displayName is missing", 1, 7);
    expect_at(list, "metadata.events must be", 3, 3);
    err_clear(&err);

    /* computed metadata: no literal to point at */
    list = expect_invalid("module.exports = {\n  metadata: Object.assign({}, { name: 'x' }),\n"
                          "  create() { return {}; },\n};\n",
                          NULL, &err);
    expect_at(list, "displayName is missing", 0, 0);
    err_clear(&err);
}

/* A leading byte order mark, which editors do not show, takes no column:
 * compile, execute and metadata problems on line 1 point where they do
 * without it, and a module with one validates. */
static void test_byte_order_mark_takes_no_column(void **state)
{
    (void)state;
#define BOM "\xEF\xBB\xBF"
    expect_diag(BOM "const x = ;\n", NULL, "compile", 1, 11, "unexpected token", NULL);
    expect_diag(BOM "var a = 1; var b = null; b.x = 2;\n", NULL, "execute", 1, 26,
                "TypeError: cannot set property 'x' of null", NULL);
    struct err err = ERR_INIT;
    json_t *list = expect_invalid(
        BOM
        "module.exports = { metadata: { name: 'x', events: 'Trade' }, create() { return {}; } };\n",
        NULL, &err);
    expect_at(list, "metadata.events must be", 1, 43);
    err_clear(&err);
    json_t *md = expect_valid(BOM "module.exports = {\n  metadata: { name: 'bom', displayName: 'B',"
                                  " events: ['Trade'] },\n  create() { return {}; },\n};\n");
    assert_string_equal(json_string_value(json_object_get(md, "name")), "bom");
    json_decref(md);
#undef BOM
}

/* The error's message starts with `prefix` ("strat.js:3:9: "). */
static void expect_message_starts(const char *src, const char *prefix)
{
    struct err err = ERR_INIT;
    expect_invalid(src, NULL, &err);
    if (strncmp(err.message, prefix, strlen(prefix)) != 0)
        fail_msg("message '%s' does not start with '%s'", err.message, prefix);
    err_clear(&err);
}

/* Lines end where JavaScript ends them: at LF, CR, CRLF (one break),
 * U+2028 and U+2029. QuickJS counts LF alone, so a CR-only file was one
 * line to it; every stage reports the author's line and column. */
static void test_positions_count_javascript_line_breaks(void **state)
{
    (void)state;
#define LS "\xE2\x80\xA8"
#define PS "\xE2\x80\xA9"
    expect_diag("var a=1;\rvar b=2;\rvar c = ) ;\r", NULL, "compile", 3, 9, "unexpected token",
                NULL);
    expect_message_starts("var a=1;\rvar b=2;\rvar c = ) ;\r", "strat.js:3:9: ");
    expect_diag("var a=1;" LS "var b=2;" PS "var c = ) ;\n", NULL, "compile", 3, 9,
                "unexpected token", NULL);
    expect_diag("var a=1;\r\nvar b=2;\r\nvar c = ) ;\r\n", NULL, "compile", 3, 9,
                "unexpected token", NULL);
    /* CRLF, CR, LF, LS: four breaks, the error on line 5 */
    expect_diag("a = 1;\r\n\rb = 2;\n" LS "var c = ) ;", NULL, "compile", 5, 9, "unexpected token",
                NULL);
    /* a string left open at the end of a CR-only line */
    expect_diag("var x = 1;\rvar s = 'abc;\rvar y = 2;\r", NULL, "compile", 2, 9,
                "unexpected end of string", NULL);

    expect_diag("var a=1;\rvar b=2;\r  throw new Error(\"x\");", NULL, "execute", 3, 3,
                "the top level threw Error: x", NULL);
    expect_message_starts("var a=1;\rvar b=2;\r  throw new Error(\"x\");", "strat.js:3:3: ");
    expect_diag("var a=1;" LS "var b = null;" PS "  b.x = 1;", NULL, "execute", 3, 3,
                "cannot set property 'x' of null", NULL);
    expect_diag("var a=1;\r/* c\r c */ throw 'boom';", NULL, "execute", 3, 7, "threw string: boom",
                NULL);

    struct err err = ERR_INIT;
    json_t *list = expect_invalid("module.exports = {\r  metadata: {\r    name: 'x',\r"
                                  "    displayName: 'X',\r    events: ['Trade', 'Nope'],\r"
                                  "  },\r  create() { return {}; },\r};\r",
                                  NULL, &err);
    expect_at(list, "metadata.events[1]", 5, 23);
    assert_non_null(strstr(err.message, "strat.js:5:23: "));
    err_clear(&err);
    list = expect_invalid("module.exports = {" LS "  metadata: {" PS "    name: 'x'," LS
                          "    events: ['Trade']," LS "  }," LS "  create() { return {}; },\n};\n",
                          NULL, &err);
    expect_at(list, "displayName is missing", 2, 3);
    err_clear(&err);
#undef LS
#undef PS
}

/* A thrown literal is placed at its one `throw` in the code: a `throw` of
 * it in a comment, a string or a template is no statement. */
static void test_literal_throw_outside_comments_and_strings(void **state)
{
    (void)state;
    expect_diag("// never: throw 42\nvar x = 40;\n  throw x + 2;\n", NULL, "execute", 0, 0,
                "threw number: 42", NULL);
    expect_message_starts("// never: throw 42\nvar x = 40;\n  throw x + 2;\n",
                          "strat.js: the top level threw number: 42");
    expect_diag("/* throw 'no' */ var s = \"throw 'no'\", t = `throw 'no'`;\n"
                "// throw 'no'\n  throw 'no';\n",
                NULL, "execute", 3, 3, "threw string: no", NULL);
    /* code inside a template's ${} is code */
    expect_diag("const t = `${(() => { throw 7; })()}`;\n", NULL, "execute", 1, 23,
                "threw number: 7", NULL);
    /* a number's digits are not a longer number's start */
    expect_diag("if (0) throw 4.5;\nthrow 4;\n", NULL, "execute", 2, 1, "threw number: 4", NULL);
}

/* Positions come from the metadata the module exports, not from another
 * object with a `metadata` key before it; when it is not certain which
 * object that is, there is no position. */
static void test_metadata_positions_follow_the_exports(void **state)
{
    (void)state;
    static const char *const decoy = "var decoy = { metadata: { events: ['Trade'] } };\n";
    struct err err = ERR_INIT;
    char *src = tu_path("%smodule.exports = {\n"
                        "  metadata: { name: 'x', displayName: 'X', events: ['Nope'] },\n%s};\n",
                        decoy, create_fn);
    json_t *list = expect_invalid(src, NULL, &err);
    expect_at(list, "metadata.events[0]", 3, 53);
    assert_non_null(strstr(err.message, "strat.js:3:53: "));
    err_clear(&err);
    free(src);

    /* module.exports.metadata = {...} after the exports object */
    src = tu_path("%smodule.exports = {\n%s};\n"
                  "module.exports.metadata = { name: 'x', displayName: 'X', events: ['Nope'] };\n",
                  decoy, create_fn);
    list = expect_invalid(src, NULL, &err);
    expect_at(list, "metadata.events[0]", 5, 67);
    err_clear(&err);
    free(src);

    /* exports.metadata = {...} */
    src = tu_path("%sexports.metadata = {\n  name: 'x',\n  events: ['Trade'],\n};\n"
                  "exports.create = function () { return {}; };\n",
                  decoy);
    list = expect_invalid(src, NULL, &err);
    expect_at(list, "displayName is missing", 2, 9);
    err_clear(&err);
    free(src);

    /* the exports and their metadata through variables */
    src = tu_path("const metadata = { events: ['Trade'] };\n"
                  "const md = {\n  name: 'x',\n  displayName: 'X',\n  events: ['Nope'],\n};\n"
                  "const strategy = { metadata: md, create() { return {}; } };\n"
                  "module.exports = strategy;\n");
    list = expect_invalid(src, NULL, &err);
    expect_at(list, "metadata.events[0]", 5, 12);
    err_clear(&err);
    free(src);

    /* an assignment inside the exported object runs before it, if ever */
    src = tu_path("%smodule.exports = {\n"
                  "  metadata: { name: 'x', displayName: 'X', events: ['Nope'] },\n"
                  "  create() { module.exports.metadata = null; return {}; },\n};\n",
                  decoy);
    list = expect_invalid(src, NULL, &err);
    expect_at(list, "metadata.events[0]", 3, 53);
    err_clear(&err);
    free(src);

    /* a shorthand member inside the metadata is where its value is named */
    list = expect_invalid("const events = ['Nope'];\nmodule.exports = {\n"
                          "  metadata: { name: 'x', displayName: 'X', events },\n"
                          "  create() { return {}; },\n};\n",
                          NULL, &err);
    expect_at(list, "metadata.events[0]", 3, 44);
    err_clear(&err);

    /* computed at the export, or exported through a call: no guess */
    src = tu_path(
        "%smodule.exports = {\n"
        "  metadata: Object.assign({}, { name: 'x', displayName: 'X', events: ['Nope'] }),\n"
        "%s};\n",
        decoy, create_fn);
    list = expect_invalid(src, NULL, &err);
    expect_at(list, "metadata.events[0]", 0, 0);
    assert_non_null(strstr(err.message, "strat.js: metadata.events[0]"));
    err_clear(&err);
    free(src);
    src = tu_path("%sObject.assign(module.exports, {\n"
                  "  metadata: { name: 'x', displayName: 'X', events: ['Nope'] },\n%s});\n",
                  decoy, create_fn);
    list = expect_invalid(src, NULL, &err);
    expect_at(list, "metadata.events[0]", 0, 0);
    err_clear(&err);
    free(src);
}

/* A template literal is an element like any other. */
static void test_metadata_template_element(void **state)
{
    (void)state;
    struct err err = ERR_INIT;
    json_t *list = expect_invalid(
        "module.exports = {\n  metadata: { name: 'x', displayName: 'X',\n"
        "    events: ['Trade', `Nope`, `Tr${'ade'}`] },\n  create() { return {}; },\n};\n",
        NULL, &err);
    expect_at(list, "metadata.events[1]", 3, 23);
    expect_at(list, "metadata.events[2]", 3, 31);
    err_clear(&err);
}

static void test_metadata_reports_every_problem(void **state)
{
    (void)state;
    char *src = module_with("{ name: 'Bad', displayName: '', events: ['Nope'],"
                            " config: [{ name: 'n', type: 'int', default: 'x' }] }");
    struct err err = ERR_INIT;
    json_t *list = expect_invalid(src, NULL, &err);
    assert_int_equal(json_array_size(list), 4);
    size_t i;
    json_t *d;
    json_array_foreach(list, i, d)
    {
        assert_string_equal(json_string_value(json_object_get(d, "stage")), "metadata");
    }
    assert_non_null(strstr(err.message, "(and 3 more problems)"));
    err_clear(&err);
    free(src);
}

/* The list stops at 20 problems and a last entry counts the rest; the
 * error's message counts them all. */
static void test_metadata_problems_are_capped(void **state)
{
    (void)state;
    char *src = tu_path("var a = [];\nfor (var i = 0; i < 5000; i++) a.push('x' + i);\n"
                        "module.exports = {\n  metadata: { name: 'cap', displayName: 'C',"
                        " events: a },\n%s};\n",
                        create_fn);
    struct err err = ERR_INIT;
    json_t *list = expect_invalid(src, NULL, &err);
    assert_int_equal(json_array_size(list), 21);
    assert_string_equal(json_string_value(json_object_get(json_array_get(list, 19), "message")),
                        "metadata.events[19] 'x19' is not an event name");
    json_t *last = json_array_get(list, 20);
    assert_string_equal(json_string_value(json_object_get(last, "message")),
                        "and 4980 more problems not listed");
    assert_int_equal(json_integer_value(json_object_get(last, "line")), 0);
    assert_non_null(strstr(err.message, "(and 4999 more problems)"));
    err_clear(&err);
    free(src);
    /* exactly at the cap: no note */
    src = tu_path("var a = [];\nfor (var i = 0; i < 20; i++) a.push(i);\n"
                  "module.exports = {\n  metadata: { name: 'cap', displayName: 'C',"
                  " events: a },\n%s};\n",
                  create_fn);
    list = expect_invalid(src, NULL, &err);
    assert_int_equal(json_array_size(list), 20);
    assert_non_null(strstr(err.message, "(and 19 more problems)"));
    err_clear(&err);
    free(src);
}

/* Duplicates are found among what was accepted, not by walking every
 * element before: 100,000 bad names then 100,000 repeats of an event, and
 * 100,000 config fields, validate within the budget. */
static void test_metadata_checks_are_linear(void **state)
{
    (void)state;
    char *src = tu_path("var a = [];\nfor (var i = 0; i < 100000; i++) a.push('x');\n"
                        "for (var i = 0; i < 100000; i++) a.push('Trade');\n"
                        "module.exports = {\n  metadata: { name: 'lin', displayName: 'L',"
                        " events: a },\n%s};\n",
                        create_fn);
    int64_t start = clock_mono_ns();
    struct err err = ERR_INIT;
    expect_invalid(src, NULL, &err);
    assert_non_null(strstr(err.message, "(and 199998 more problems)"));
    err_clear(&err);
    free(src);
    src = tu_path("var c = [];\nfor (var i = 0; i < 100000; i++) c.push({name: 'f' + i, type: "
                  "'int'});\nc.push({name: 'f7', type: 'int'});\n"
                  "module.exports = {\n  metadata: { name: 'lin', displayName: 'L',"
                  " events: ['Trade'], config: c },\n%s};\n",
                  create_fn);
    json_t *d = first_diag(src, NULL, &err);
    assert_string_equal(json_string_value(json_object_get(d, "message")),
                        "metadata.config[100000] (f7).name 'f7' is declared more than once");
    err_clear(&err);
    free(src);
    assert_true(clock_mono_ns() - start < 20000 * MS);
}

/* A top level may set timers and log, as at run time: validation gives it
 * timers that never fire and a console that writes nothing; a callback
 * that is not a function is refused as at run time. */
static void test_top_level_timers_and_console(void **state)
{
    (void)state;
    json_t *md = expect_valid("const t = setTimeout((a) => {}, 10, 'x');\n"
                              "const i = setInterval(() => {}, 1000);\n"
                              "clearTimeout(t); clearInterval(i);\n"
                              "console.log('loading'); console.info(1); console.debug(2);\n"
                              "console.warn(3); console.error(4);\n"
                              "if (typeof t !== 'number' || t === i) throw new Error('ids');\n"
                              "module.exports = {\n  metadata: { name: 'tl', displayName: 'T',"
                              " events: ['Trade'] },\n  create() { return {}; },\n};\n");
    json_decref(md);
    expect_diag("setTimeout(42);\n"
                "module.exports = {\n  metadata: { name: 'tl', displayName: 'T',"
                " events: ['Trade'] },\n  create() { return {}; },\n};\n",
                NULL, "execute", 1, 1, "setTimeout: the callback must be a function", NULL);
}

/* Messages and hints that had misled: a static import read as a dynamic
 * one missing its '(', a thrown Error without a name, the create hint's
 * handler signature. */
static void test_messages_say_what_happened(void **state)
{
    (void)state;
    expect_diag("import x from 'y';\nmodule.exports = {};\n", NULL, "compile", 1, -1,
                "SyntaxError: static import is not supported", "CommonJS");
    expect_diag("const e = new Error('x');\n"
                "Object.defineProperty(e, 'name', { get() { return ''; } });\n"
                "throw e;\n",
                NULL, "execute", -1, -1, "the top level threw a value without a name: x", NULL);
    expect_diag("module.exports = {\n  metadata: { name: 'c', displayName: 'C',"
                " events: ['Trade'] },\n};\n",
                NULL, "create", 0, 0, "module.exports.create is not a function",
                "onTrade(ctx, evt, payload)");
}

/* --------------------------------------------------------- create stage */

static void test_create_stage(void **state)
{
    (void)state;
    const char *md = "{ name: 'x', displayName: 'X', events: ['Trade'] }";
    char *src = tu_path("module.exports = { metadata: %s };\n", md);
    expect_diag(src, NULL, "create", 0, 0, "module.exports.create is not a function",
                "create(env)");
    free(src);
    src = tu_path("module.exports = { metadata: %s, create: { onTrade() {} } };\n", md);
    expect_diag(src, NULL, "create", 0, 0, "module.exports.create is not a function", NULL);
    free(src);
    src = tu_path("module.exports = { metadata: %s, get create() { throw 1; } };\n", md);
    expect_diag(src, NULL, "create", 0, 0, "module.exports.create cannot be read", NULL);
    free(src);
    /* classes and bound functions are functions */
    src = tu_path("module.exports = class { static metadata = %s; static create() {} };\n", md);
    json_decref(expect_valid(src));
    free(src);
}

/* -------------------------------------------------------- stage order */

static void test_first_failing_stage_ends_it(void **state)
{
    (void)state;
    struct err err = ERR_INIT;
    /* a syntax error hides everything after it */
    json_t *d = first_diag("module.exports = { metadata: {}, \n;", NULL, &err);
    assert_string_equal(json_string_value(json_object_get(d, "stage")), "compile");
    err_clear(&err);
    /* a throwing top level hides bad metadata */
    d = first_diag("module.exports = { metadata: {} };\nthrow new Error('first');\n", NULL, &err);
    assert_string_equal(json_string_value(json_object_get(d, "stage")), "execute");
    assert_int_equal(json_array_size(json_object_get(err.details, "diagnostics")), 1);
    err_clear(&err);
    /* bad metadata hides the missing create */
    d = first_diag("module.exports = { metadata: { name: 'x' } };\n", NULL, &err);
    assert_string_equal(json_string_value(json_object_get(d, "stage")), "metadata");
    json_t *list = json_object_get(err.details, "diagnostics");
    size_t i;
    json_array_foreach(list, i, d)
    {
        assert_string_equal(json_string_value(json_object_get(d, "stage")), "metadata");
    }
    err_clear(&err);
}

/* ------------------------------------------------------------- events */

static void test_event_names(void **state)
{
    (void)state;
    static const char *const expected[] = {
        "Trade",         "Ticker",       "BookSnapshot",
        "ExecReport",    "KlineSummary", "InstrumentUpdate",
        "BalanceUpdate", "RiskControl",  "Extension",
    };
    assert_int_equal(js_event_count, 9);
    for (size_t i = 0; i < js_event_count; i++) {
        assert_string_equal(js_event_names[i], expected[i]);
        assert_int_equal(js_event_index(expected[i]), (int)i);
    }
    assert_int_equal(js_event_index("trade"), -1);
    assert_int_equal(js_event_index(""), -1);
    assert_int_equal(js_event_index(NULL), -1);
}

/* --------------------------------------------------- speed and threads */

/* About 20 KB of ordinary strategy code: helpers, closures, regexes,
 * template literals, a class. */
static char *twenty_kb_module(void)
{
    struct strbuf sb = STRBUF_INIT;
    strbuf_puts(&sb, "'use strict';\n"
                     "const helpers = {};\n"
                     "class Stats {\n"
                     "  #n = 0; #mean = 0;\n"
                     "  add(x) { this.#n++; this.#mean += (x - this.#mean) / this.#n; }\n"
                     "  get mean() { return this.#mean; }\n"
                     "}\n");
    for (int i = 0; sb.len < 20000; i++)
        strbuf_printf(&sb,
                      "helpers.f%d = function (trade, env) {\n"
                      "  const xs = [1, 2, 3, %d].map((x) => x * (trade?.qty ?? 1));\n"
                      "  let acc = 0;\n"
                      "  for (const x of xs) { acc += x; }\n"
                      "  const label = `f%d:${acc}`;\n"
                      "  return { acc, label, ok: /^f\\d+:/.test(label) };\n"
                      "};\n",
                      i, i, i);
    strbuf_puts(&sb, "module.exports = {\n"
                     "  metadata: { name: 'big', displayName: 'Big', events: ['Trade'],\n"
                     "    config: [{ name: 'qty', type: 'float', default: 1 }] },\n"
                     "  create(env) {\n"
                     "    const stats = new Stats();\n"
                     "    return { onTrade(t) { stats.add(helpers.f0(t, env).acc); } };\n"
                     "  },\n"
                     "};\n");
    assert_false(strbuf_failed(&sb));
    return strbuf_detach(&sb, NULL);
}

static void test_validation_speed(void **state)
{
    (void)state;
    enum { RUNS = 30 };
    char *src = twenty_kb_module();
    size_t len = strlen(src);
    json_decref(expect_valid(src)); /* warm up */
    int64_t total = 0, best = INT64_MAX, compile_total = 0;
    for (int i = 0; i < RUNS; i++) {
        struct err err = ERR_INIT;
        int64_t start = clock_mono_ns();
        json_t *md = validate(src, len, "big.js", NULL, &err);
        int64_t took = clock_mono_ns() - start;
        assert_non_null(md);
        json_decref(md);
        total += took;
        best = took < best ? took : best;
        struct js_bytecode *bc = NULL;
        start = clock_mono_ns();
        assert_int_equal(js_compile(src, len, "big.js", &bc, &err), 0);
        compile_total += clock_mono_ns() - start;
        js_bytecode_release(bc);
    }
    print_message("validation of a %zu-byte module: mean %.2f ms, best %.2f ms "
                  "(of which js_compile: mean %.2f ms)\n",
                  len, (double)total / RUNS / 1e6, (double)best / 1e6,
                  (double)compile_total / RUNS / 1e6);
    /* generous: shared CI machines and sanitizer builds are slow */
    assert_true(total / RUNS < 250 * MS);
    free(src);
}

static void *validate_in_thread(void *arg)
{
    const char *src = arg;
    for (int i = 0; i < 10; i++) {
        struct err err = ERR_INIT;
        json_t *md = validate(src, strlen(src), "t.js", NULL, &err);
        if (!md)
            return (void *)1;
        json_decref(md);
        /* and a failing one, whose diagnostics are built on this thread */
        md = validate("var a = ;", 9, "t.js", NULL, &err);
        if (md || err.kind != ERR_UNPROCESSABLE)
            return (void *)1;
        err_clear(&err);
    }
    return NULL;
}

static void test_validate_from_many_threads(void **state)
{
    (void)state;
    enum { THREADS = 4 };
    char *src = module_with("{ name: 'x', displayName: 'X', events: ['Trade'],"
                            " config: [{ name: 'n', type: 'int', default: 1 }] }");
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, validate_in_thread, src), 0);
    for (int i = 0; i < THREADS; i++) {
        void *failed = NULL;
        pthread_join(threads[i], &failed);
        assert_null(failed);
    }
    free(src);
}

static void test_validate_without_err(void **state)
{
    (void)state;
    assert_null(validate("var a = ;", 9, NULL, NULL, NULL));
    assert_null(validate("throw new Error('x');", 21, NULL, NULL, NULL));
    char *src = module_with("{ name: 'x', displayName: 'X', events: ['Trade'] }");
    json_t *md = validate(src, strlen(src), NULL, NULL, NULL);
    assert_non_null(md);
    json_decref(md);
    free(src);
}

/* Sandboxes built ahead are used under each validation's own limits (a
 * tight memory cap still bites), and every validation meets sandboxes no
 * module ran in before. */
static void test_fresh_sandboxes(void **state)
{
    (void)state;
    struct js_limits small = {8u << 20, 0, 20000 * MS};
    expect_diag("var keep = [];\nfor (;;) keep.push({ n: keep.length, s: 'x' + keep.length });\n",
                &small, "execute", -1, -1, "the top level hit the memory cap of 8 MiB", "allocate");
    char *src = tu_path("globalThis.leaked = 1;\nmodule.exports = {\n  metadata: { name: 'a', "
                        "displayName: 'A', events: ['Trade'] },\n%s};\n",
                        create_fn);
    for (int i = 0; i < 3; i++)
        json_decref(expect_valid(src));
    free(src);
    src = tu_path("if (typeof leaked !== 'undefined') throw new Error('a sandbox was reused');\n"
                  "module.exports = {\n  metadata: { name: 'b', displayName: 'B', events: "
                  "['Trade'] },\n%s};\n",
                  create_fn);
    for (int i = 0; i < 5; i++) /* more than the validator keeps ready */
        json_decref(expect_valid(src));
    free(src);
}

/* Sandboxes built on the validator's thread guard this thread's stack: a
 * module nested too deeply for the parser, and one that recurses without
 * end at its top level, fail with a diagnostic instead of taking the
 * process down. */
static void test_stack_guard(void **state)
{
    (void)state;
    enum { DEPTH = 200000 };
    struct strbuf sb = STRBUF_INIT;
    strbuf_puts(&sb, "var x = ");
    for (int i = 0; i < DEPTH; i++)
        strbuf_putc(&sb, '[');
    for (int i = 0; i < DEPTH; i++)
        strbuf_putc(&sb, ']');
    strbuf_puts(&sb, ";\n");
    assert_false(strbuf_failed(&sb));
    char *deep = strbuf_detach(&sb, NULL);
    struct err err = ERR_INIT;
    json_t *d = first_diag(deep, NULL, &err);
    assert_string_equal(json_string_value(json_object_get(d, "stage")), "compile");
    assert_non_null(strstr(json_string_value(json_object_get(d, "message")), "stack overflow"));
    err_clear(&err);
    free(deep);
    d = first_diag("function down(n) { return down(n + 1) + 1; }\ndown(0);\n", NULL, &err);
    assert_string_equal(json_string_value(json_object_get(d, "stage")), "execute");
    err_clear(&err);
}

/* A validator freed with kits ready and kits used but not yet freed
 * frees them all (the sanitizer run would see a leak), and one freed at
 * once, while its thread is still building, too. */
static void test_validator_free(void **state)
{
    (void)state;
    struct js_validator *v = NULL;
    struct err err = ERR_INIT;
    assert_int_equal(js_validator_new(&v, &err), 0);
    js_validator_free(v);
    assert_int_equal(js_validator_new(&v, &err), 0);
    char *src = module_with("{ name: 'x', displayName: 'X', events: ['Trade'] }");
    for (int i = 0; i < 4; i++) {
        json_t *md = js_validator_run(v, src, strlen(src), "x.js", NULL, &err);
        assert_non_null(md);
        assert_string_equal(json_string_value(json_object_get(md, "name")), "x");
        json_decref(md);
        assert_null(js_validator_run(v, "var a = ;", 9, "x.js", NULL, &err));
        assert_int_equal(err.kind, ERR_UNPROCESSABLE);
        err_clear(&err);
    }
    js_validator_free(v);
    js_validator_free(NULL);
    free(src);
}

static int with_validator(void **state)
{
    (void)state;
    struct err err = ERR_INIT;
    int rc = js_validator_new(&validator, &err);
    err_clear(&err);
    return rc;
}

static int without_validator(void **state)
{
    (void)state;
    js_validator_free(validator);
    validator = NULL;
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_normalised_metadata),
        cmocka_unit_test(test_minimal_metadata_gets_defaults),
        cmocka_unit_test(test_modern_syntax),
        cmocka_unit_test(test_compile_stage_positions),
        cmocka_unit_test(test_top_level_rejections),
        cmocka_unit_test(test_execute_stage_positions),
        cmocka_unit_test(test_execute_stage_limits),
        cmocka_unit_test(test_execute_stage_default_limits),
        cmocka_unit_test(test_metadata_presence),
        cmocka_unit_test(test_metadata_name_and_display_name),
        cmocka_unit_test(test_metadata_description_and_tag),
        cmocka_unit_test(test_metadata_events),
        cmocka_unit_test(test_metadata_config_shape),
        cmocka_unit_test(test_metadata_config_defaults),
        cmocka_unit_test(test_metadata_unknown_config_field_keys),
        cmocka_unit_test(test_metadata_misspelt_top_level_keys),
        cmocka_unit_test(test_metadata_enum_options),
        cmocka_unit_test(test_metadata_gateway_keys),
        cmocka_unit_test(test_byte_order_mark_takes_no_column),
        cmocka_unit_test(test_positions_count_javascript_line_breaks),
        cmocka_unit_test(test_literal_throw_outside_comments_and_strings),
        cmocka_unit_test(test_metadata_positions_follow_the_exports),
        cmocka_unit_test(test_metadata_template_element),
        cmocka_unit_test(test_metadata_reports_every_problem),
        cmocka_unit_test(test_metadata_problems_are_capped),
        cmocka_unit_test(test_metadata_checks_are_linear),
        cmocka_unit_test(test_top_level_timers_and_console),
        cmocka_unit_test(test_messages_say_what_happened),
        cmocka_unit_test(test_metadata_problems_point_at_their_field),
        cmocka_unit_test(test_create_stage),
        cmocka_unit_test(test_first_failing_stage_ends_it),
        cmocka_unit_test(test_event_names),
        cmocka_unit_test(test_validation_speed),
        cmocka_unit_test(test_validate_from_many_threads),
        cmocka_unit_test(test_validate_without_err),
        cmocka_unit_test(test_fresh_sandboxes),
        cmocka_unit_test(test_stack_guard),
        cmocka_unit_test(test_validator_free),
    };
    int failed = cmocka_run_group_tests_name("js_validate", tests, NULL, NULL);
    return failed +
           cmocka_run_group_tests_name("js_validator", tests, with_validator, without_validator);
}
