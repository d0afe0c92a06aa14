/*
 * validate: compile, execute, metadata, create; the first failing stage
 * ends it and says where. The module runs exactly as it will in production
 * (js_compile, then js_module_load into a fresh sandbox), so a module that
 * validates also loads.
 */
#include "js/validate.h"

#include "js/internal.h"
#include "js/module.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#define HINT_EXPORTS                                                                               \
    "export the strategy as module.exports = { metadata: { name, displayName, events }, "          \
    "create(env) { return handlers; } }"

/* ------------------------------------------------------- diagnostics */

static void fail_with(struct err *err, json_t *list, size_t omitted, const char *filename)
{
    const char *first = json_string_value(json_object_get(json_array_get(list, 0), "message"));
    /* the note on what was omitted is not a problem of its own */
    size_t more = json_array_size(list) - 1 - (omitted > 0) + omitted;
    if (more > 0)
        js__fail(err, list, "%s: %s (and %zu more problem%s)", filename, first ? first : "", more,
                 more == 1 ? "" : "s");
    else
        js__fail(err, list, "%s: %s", filename, first ? first : "");
}

static void fail_one(struct err *err, const char *filename, const char *stage, const char *hint,
                     const char *message)
{
    json_t *diag = js__diagnostic(stage, message, 0, 0, hint);
    js__fail_one(err, diag, filename, 0, 0, message);
}

/* ------------------------------------------------- reading the exports */

/* metadata as JSON text, through JSON.stringify in the sandbox (which
 * drops functions and undefined, as a listing would). */
static json_t *metadata_json(JSContext *ctx, JSValueConst md)
{
    JSValue text = JS_JSONStringify(ctx, md, JS_UNDEFINED, JS_UNDEFINED);
    json_t *out = NULL;
    if (JS_IsString(text)) {
        size_t len = 0;
        const char *s = JS_ToCStringLen(ctx, &len, text);
        if (s)
            out = json_loadb(s, len, 0, NULL);
        JS_FreeCString(ctx, s);
    }
    JS_FreeValue(ctx, text);
    return out;
}

/* The text of the pending JS exception, for a diagnostic. */
static void exception_message(struct js_sandbox *sb, const char *filename, char *out, size_t size)
{
    struct js_exception ex;
    js_sandbox_take_exception(sb, filename, &ex);
    snprintf(out, size, "%s: %s", js__text(ex.name), js__text(ex.message));
    js_exception_free(&ex);
}

static json_t *read_metadata(struct js_sandbox *sb, JSValueConst exports, const char *filename,
                             struct err *err)
{
    JSContext *ctx = sb->ctx;
    char message[JS_EXCEPTION_MESSAGE_MAX + 128], why[JS_EXCEPTION_MESSAGE_MAX + 64];
    if (!JS_IsObject(exports)) {
        fail_one(err, filename, "metadata", HINT_EXPORTS, "module.exports is not an object");
        return NULL;
    }
    JSValue md = JS_GetPropertyStr(ctx, exports, "metadata");
    json_t *json = NULL;
    if (JS_IsException(md)) {
        exception_message(sb, filename, why, sizeof(why));
        snprintf(message, sizeof(message), "reading module.exports.metadata threw %s", why);
        fail_one(err, filename, "metadata", HINT_EXPORTS, message);
    } else if (!JS_IsObject(md) || JS_IsArray(ctx, md) > 0 || JS_IsFunction(ctx, md)) {
        fail_one(err, filename, "metadata", HINT_EXPORTS,
                 JS_IsUndefined(md) || JS_IsNull(md) ? "module.exports.metadata is missing"
                                                     : "module.exports.metadata is not an object");
    } else if (!(json = metadata_json(ctx, md))) {
        if (JS_HasException(ctx))
            exception_message(sb, filename, why, sizeof(why));
        else
            snprintf(why, sizeof(why), "it does not convert to a JSON object");
        snprintf(message, sizeof(message), "module.exports.metadata is not plain data (%s)", why);
        fail_one(err, filename, "metadata",
                 "keep metadata to strings, numbers, booleans, arrays and objects", message);
    }
    JS_FreeValue(ctx, md);
    return json;
}

static int check_create(struct js_sandbox *sb, JSValueConst exports, const char *filename,
                        struct err *err)
{
    JSValue create = JS_GetPropertyStr(sb->ctx, exports, "create");
    int rc = 0;
    if (!JS_IsFunction(sb->ctx, create)) {
        char message[256];
        const char *what = JS_IsException(create) ? "cannot be read" : "is not a function";
        snprintf(message, sizeof(message), "module.exports.create %s", what);
        if (JS_IsException(create))
            JS_FreeValue(sb->ctx, JS_GetException(sb->ctx));
        fail_one(err, filename, "create",
                 "give module.exports a create(env) { return { onTrade(ctx, evt, payload) { ... } "
                 "}; }: the function the runtime calls to start each instance, returning its "
                 "handlers",
                 message);
        rc = -1;
    }
    JS_FreeValue(sb->ctx, create);
    return rc;
}

static json_t *check_exports(struct js_sandbox *sb, JSValueConst exports, const char *filename,
                             struct err *err)
{
    json_t *raw = read_metadata(sb, exports, filename, err);
    if (!raw)
        return NULL;
    json_t *problems = NULL;
    size_t omitted = 0;
    json_t *md = js__check_metadata(raw, &problems, &omitted);
    json_decref(raw);
    if (!md) {
        if (!problems)
            err_set(err, ERR_INTERNAL, "%s: out of memory while validating", filename);
        else
            fail_with(err, json_incref(problems), omitted, filename);
        json_decref(problems);
        return NULL;
    }
    if (check_create(sb, exports, filename, err) < 0) {
        json_decref(md);
        return NULL;
    }
    return md;
}

/* ------------------------------------------------ pointing at a throw */

static bool ident_char(char c)
{
    return isalnum((unsigned char)c) || c == '_' || c == '$';
}

static size_t skip_space_back(const char *line, size_t off)
{
    while (off > 0 && (line[off - 1] == ' ' || line[off - 1] == '\t'))
        off--;
    return off;
}

/* Whether `word` ends at `off` as a whole word; moves `off` to its start. */
static bool word_before(const char *line, size_t *off, const char *word)
{
    size_t n = strlen(word);
    if (*off < n || memcmp(line + *off - n, word, n) != 0)
        return false;
    if (*off > n && ident_char(line[*off - n - 1]))
        return false;
    *off -= n;
    return true;
}

/* QuickJS places an Error's frame at the call that built it: the '(' of
 * `throw new Error(...)`. When the text before that column on the same
 * line is exactly `throw [new] Name[.Name]`, the statement starts at
 * `throw`, which is where an author looks. */
static int throw_column(const char *line, size_t len, int column)
{
    size_t off = skip_space_back(line, js__column_offset(line, len, column));
    size_t name_end = off;
    while (off > 0 && (ident_char(line[off - 1]) || line[off - 1] == '.'))
        off--;
    if (off == name_end)
        return column;
    off = skip_space_back(line, off);
    size_t before_new = off;
    if (word_before(line, &off, "new"))
        off = skip_space_back(line, off);
    else
        off = before_new;
    if (!word_before(line, &off, "throw"))
        return column;
    return js__offset_column(line, off);
}

/* Past blanks and whole comments from `i` (a comment that does not end
 * before `end` is not skipped). */
static size_t skip_blanks_and_comments(const char *line, size_t i, size_t end)
{
    for (;;) {
        while (i < end && (line[i] == ' ' || line[i] == '\t'))
            i++;
        if (i + 1 >= end || line[i] != '/' || line[i + 1] != '*')
            return i;
        const char *close = memmem(line + i + 2, end - (i + 2), "*/", 2);
        if (!close)
            return i;
        i = (size_t)(close - line) + 2;
    }
}

/* Other exceptions point at the failing operation (a property read of null
 * points at the property name). Authors look for the statement: it starts
 * after the last ';' before that column on the line that is code (not in a
 * string, a template or a comment), past the blanks and comments that
 * follow it, or else at the line's first code. Braces are not boundaries:
 * without a parser a block cannot be told from an object literal. */
static int statement_column(const char *line, size_t len, int column)
{
    size_t off = js__column_offset(line, len, column);
    size_t start = 0;
    char quote = 0;
    for (size_t i = 0; i < off; i++) {
        char c = line[i];
        if (quote) {
            if (c == '\\')
                i++;
            else if (c == quote)
                quote = 0;
        } else if (c == '"' || c == '\'' || c == '`') {
            quote = c;
        } else if (c == '/' && i + 1 < off && line[i + 1] == '/') {
            break;
        } else if (c == '/' && i + 1 < off && line[i + 1] == '*') {
            const char *close = memmem(line + i + 2, off - (i + 2), "*/", 2);
            if (!close)
                break;
            i = (size_t)(close - line) + 1;
        } else if (c == ';') {
            start = i + 1;
        }
    }
    return js__offset_column(line, skip_blanks_and_comments(line, start, off));
}

/* A thrown string or number carries no position in QuickJS. When exactly
 * one `throw` in the code throws that literal, that is the statement. */
static void point_at_literal_throw(struct err *err, json_t *diag, const char *source, size_t len,
                                   const char *filename)
{
    static const char *const prefixes[] = {"the top level threw string: ",
                                           "the top level threw number: "};
    const char *message = json_string_value(json_object_get(diag, "message"));
    for (size_t i = 0; message && i < 2; i++) {
        size_t n = strlen(prefixes[i]);
        int line = 0, column = 0;
        if (strncmp(message, prefixes[i], n) != 0 ||
            !js__locate_literal_throw(source, len, message + n, i == 0, &line, &column))
            continue;
        json_object_set_new(diag, "line", json_integer(line));
        json_object_set_new(diag, "column", json_integer(column));
        err_set(err, ERR_UNPROCESSABLE, "%s:%d:%d: %s", filename, line, column, message);
        return;
    }
}

/* Moves an execute diagnostic from QuickJS's position (lines counted by LF
 * alone) to the author's, and from the failing operation (or the Error's
 * construction) to the statement that threw, the message with it. */
static void point_at_throw(struct err *err, const char *source, size_t len, const char *filename)
{
    json_t *diag = json_array_get(json_object_get(err->details, "diagnostics"), 0);
    const char *stage = json_string_value(json_object_get(diag, "stage"));
    int line = (int)json_integer_value(json_object_get(diag, "line"));
    int column = (int)json_integer_value(json_object_get(diag, "column"));
    if (!stage || strcmp(stage, "execute") != 0)
        return;
    if (line == 0) {
        point_at_literal_throw(err, diag, source, len, filename);
        return;
    }
    int at_line = line, at_column = column;
    js__engine_position(source, len, &at_line, &at_column);
    size_t line_len = 0;
    const char *text = js__source_line(source, len, at_line, &line_len);
    int moved = at_column;
    if (text && at_column >= 1) {
        moved = throw_column(text, line_len, at_column);
        const char *message = json_string_value(json_object_get(diag, "message"));
        bool exception = message && strncmp(message, "the top level threw ", 20) == 0;
        if (moved == at_column && exception)
            moved = statement_column(text, line_len, at_column);
    }
    if (at_line == line && moved == column)
        return;
    json_object_set_new(diag, "line", json_integer(at_line));
    json_object_set_new(diag, "column", json_integer(moved));
    err_set(err, ERR_UNPROCESSABLE, "%s:%d:%d: %s", filename, at_line, moved,
            json_string_value(json_object_get(diag, "message")));
}

/* "file: message (and N more problems)" becomes "file:line:column: ...". */
static void place_message(struct err *err, const char *filename, int line, int column)
{
    char rest[ERR_MESSAGE_MAX];
    size_t n = strlen(filename);
    if (strncmp(err->message, filename, n) != 0 || strncmp(err->message + n, ": ", 2) != 0)
        return;
    snprintf(rest, sizeof(rest), "%s", err->message + n + 2);
    err_set(err, ERR_UNPROCESSABLE, "%s:%d:%d: %s", filename, line, column, rest);
}

/* Metadata problems are found in the value, which keeps no positions:
 * each is placed at the field as the source spells it in the metadata the
 * module exports (locate.c), the error's message at the first. The
 * metadata is looked for once; a bounded number of problems is placed,
 * since each then looks through the source up to its field. */
#define METADATA_POSITIONS_MAX 32
static void point_at_metadata(struct err *err, const char *source, size_t len, const char *filename)
{
    json_t *list = json_object_get(err->details, "diagnostics");
    struct js__metadata_site site;
    if (!js__find_metadata(source, len, &site))
        return;
    for (size_t i = 0; i < json_array_size(list) && i < METADATA_POSITIONS_MAX; i++) {
        json_t *diag = json_array_get(list, i);
        const char *stage = json_string_value(json_object_get(diag, "stage"));
        const char *message = json_string_value(json_object_get(diag, "message"));
        int line = 0, column = 0;
        if (!stage || strcmp(stage, "metadata") != 0 || !message ||
            !js__locate_metadata(&site, message, &line, &column))
            continue;
        json_object_set_new(diag, "line", json_integer(line));
        json_object_set_new(diag, "column", json_integer(column));
        if (i == 0)
            place_message(err, filename, line, column);
    }
}

/* ------------------------------------------------------------ validate */

static struct js_limits validation_limits(const struct js_limits *limits)
{
    struct js_limits out = limits ? *limits : (struct js_limits){0, 0, 0};
    if (out.memory_bytes == 0)
        out.memory_bytes = JS_VALIDATE_DEFAULT_MEMORY;
    if (out.budget_ns <= 0)
        out.budget_ns = JS_VALIDATE_DEFAULT_BUDGET_NS;
    return out;
}

/* ---------------------------------------------- timers and console */

/* The top level of an instance may set timers (held until create(env) has
 * run) and log; validating it without them refused every module whose top
 * level did either. A validation gets inert ones: timers that never fire
 * (a callback must still be a function, as at run time) and a console that
 * writes nothing. */
static JSValue inert_timer(JSContext *ctx, const char *name, int argc, JSValueConst *argv)
{
    static _Thread_local uint32_t next_id;
    if (argc < 1 || !JS_IsFunction(ctx, argv[0]))
        return JS_ThrowTypeError(ctx, "%s: the callback must be a function", name);
    next_id = next_id % INT32_MAX + 1;
    return JS_NewInt32(ctx, (int32_t)next_id);
}

static JSValue inert_set_timeout(JSContext *ctx, JSValueConst this_val, int argc,
                                 JSValueConst *argv)
{
    (void)this_val;
    return inert_timer(ctx, "setTimeout", argc, argv);
}

static JSValue inert_set_interval(JSContext *ctx, JSValueConst this_val, int argc,
                                  JSValueConst *argv)
{
    (void)this_val;
    return inert_timer(ctx, "setInterval", argc, argv);
}

static JSValue inert_call(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)ctx;
    (void)this_val;
    (void)argc;
    (void)argv;
    return JS_UNDEFINED;
}

static int define_function(JSContext *ctx, JSValueConst obj, const char *name, JSCFunction *fn,
                           int length)
{
    JSValue f = JS_NewCFunction(ctx, fn, name, length);
    if (JS_IsException(f))
        return -1;
    return JS_DefinePropertyValueStr(ctx, obj, name, f, JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE);
}

static int install_inert_host(JSContext *ctx, struct err *err)
{
    static const char *const timers[] = {"setTimeout", "setInterval"};
    static JSCFunction *const setters[] = {inert_set_timeout, inert_set_interval};
    static const char *const clears[] = {"clearTimeout", "clearInterval"};
    static const char *const levels[] = {"log", "info", "debug", "warn", "error"};
    JSValue global = JS_GetGlobalObject(ctx), console = JS_NewObject(ctx);
    int rc = JS_IsException(console) ? -1 : 0;
    for (size_t i = 0; rc == 0 && i < 2; i++) {
        rc = define_function(ctx, global, timers[i], setters[i], 2) < 0 ||
                     define_function(ctx, global, clears[i], inert_call, 1) < 0
                 ? -1
                 : 0;
    }
    for (size_t i = 0; rc == 0 && i < sizeof(levels) / sizeof(levels[0]); i++)
        rc = define_function(ctx, console, levels[i], inert_call, 0) < 0 ? -1 : 0;
    if (rc == 0)
        rc = JS_DefinePropertyValueStr(ctx, global, "console", JS_DupValue(ctx, console),
                                       JS_PROP_WRITABLE | JS_PROP_CONFIGURABLE) < 0
                 ? -1
                 : 0;
    JS_FreeValue(ctx, console);
    JS_FreeValue(ctx, global);
    if (rc != 0) {
        if (JS_HasException(ctx))
            JS_FreeValue(ctx, JS_GetException(ctx));
        err_set(err, ERR_INTERNAL, "out of memory while preparing the validation sandbox");
    }
    return rc;
}

/* ------------------------------------------- rejections of the top level */

#define REJECTIONS_KEPT 8

/* The promises the top level left rejected with no handler: QuickJS tells
 * the tracker when one rejects unhandled, and again if a handler comes. */
struct rejections {
    JSContext *ctx;
    JSValue promise[REJECTIONS_KEPT];
    JSValue reason[REJECTIONS_KEPT];
    int kept;
};

static void rejections_drop(struct rejections *r, int i)
{
    JS_FreeValue(r->ctx, r->promise[i]);
    JS_FreeValue(r->ctx, r->reason[i]);
    for (int k = i + 1; k < r->kept; k++) {
        r->promise[k - 1] = r->promise[k];
        r->reason[k - 1] = r->reason[k];
    }
    r->kept--;
}

static void track_rejection(JSContext *ctx, JSValueConst promise, JSValueConst reason,
                            JS_BOOL is_handled, void *opaque)
{
    (void)ctx;
    struct rejections *r = opaque;
    for (int i = 0; is_handled && i < r->kept; i++) {
        if (JS_VALUE_GET_PTR(r->promise[i]) == JS_VALUE_GET_PTR(promise)) {
            rejections_drop(r, i);
            return;
        }
    }
    if (!is_handled && r->kept < REJECTIONS_KEPT) {
        r->promise[r->kept] = JS_DupValue(r->ctx, promise);
        r->reason[r->kept++] = JS_DupValue(r->ctx, reason);
    }
}

static void rejections_clear(struct rejections *r)
{
    while (r->kept > 0)
        rejections_drop(r, r->kept - 1);
}

/* A promise the top level left rejected with nobody to catch it is an
 * error at every start of the module: refused like a throw, at the
 * position of the error it rejected with. */
static int rejected_at_top_level(struct js_sandbox *sb, struct rejections *r, const char *filename,
                                 struct err *err)
{
    if (r->kept == 0)
        return 0;
    JS_Throw(sb->ctx, JS_DupValue(sb->ctx, r->reason[0]));
    struct js_exception ex;
    js_sandbox_arm(sb, 0); /* the reason's getters are the module's code */
    js_sandbox_take_exception(sb, filename, &ex);
    js_sandbox_disarm(sb);
    char message[2 * JS_EXCEPTION_MESSAGE_MAX + 128];
    const char *name = *js__text(ex.name) ? ex.name : "a value without a name";
    snprintf(message, sizeof(message),
             "the top level left a promise rejected with no handler: %s: %s", name,
             js__text(ex.message));
    json_t *diag = js__diagnostic("execute", message, ex.line, ex.column,
                                  "catch the failure where the promise is made (.catch(), or try "
                                  "around the await): it happens at every start of the module");
    js__fail_one(err, diag, filename, ex.line, ex.column, message);
    js_exception_free(&ex);
    return -1;
}

static int load_module(struct js_sandbox *sb, const struct js_bytecode *bc, JSValue *exports,
                       struct err *err)
{
    struct rejections r = {.ctx = sb->ctx};
    JS_SetHostPromiseRejectionTracker(sb->rt, track_rejection, &r);
    int rc = js_module_load(sb, bc, exports, err);
    JS_SetHostPromiseRejectionTracker(sb->rt, NULL, NULL);
    if (rc == 0 && rejected_at_top_level(sb, &r, bc->filename, err) < 0) {
        JS_FreeValue(sb->ctx, *exports);
        *exports = JS_UNDEFINED;
        rc = -1;
    }
    rejections_clear(&r);
    return rc;
}

static json_t *run_and_check(struct js_sandbox *sb, const struct js_bytecode *bc,
                             const char *source, size_t len, struct err *err)
{
    JSValue exports = JS_UNDEFINED;
    if (install_inert_host(sb->ctx, err) < 0)
        return NULL;
    if (load_module(sb, bc, &exports, err) < 0) {
        if (err && err->kind == ERR_UNPROCESSABLE)
            point_at_throw(err, source, len, bc->filename);
        return NULL;
    }
    /* Reading metadata may run getters: under the same budget as the top level. */
    js_sandbox_arm(sb, 0);
    json_t *md = check_exports(sb, exports, bc->filename, err);
    js_sandbox_disarm(sb);
    if (!md && err && err->kind == ERR_UNPROCESSABLE)
        point_at_metadata(err, source, len, bc->filename);
    JS_FreeValue(sb->ctx, exports);
    return md;
}

/* The kit's compiler sandbox, built now if it was not built ahead. */
static int compiler_sandbox(struct js__validation_kit *kit, struct err *err)
{
    if (!kit->has_compiler) {
        kit->compiled = JS_UNDEFINED;
        kit->has_compiler = js__compiler_init(&kit->compiler, err) == 0;
    }
    return kit->has_compiler ? 0 : -1;
}

/* The kit's module sandbox under `lim`: limits set on one built ahead,
 * or built now. */
static int module_sandbox(struct js__validation_kit *kit, const struct js_limits *lim,
                          struct err *err)
{
    if (kit->has_module)
        return js_sandbox_set_limits(&kit->module, lim, err);
    kit->has_module = js_sandbox_init(&kit->module, lim, err) == 0;
    return kit->has_module ? 0 : -1;
}

int js__validation_kit_build(struct js__validation_kit *kit, struct err *err)
{
    struct js_limits lim = validation_limits(NULL);
    if (compiler_sandbox(kit, err) == 0 && module_sandbox(kit, &lim, err) == 0)
        return 0;
    js__validation_kit_clear(kit);
    return -1;
}

void js__validation_kit_clear(struct js__validation_kit *kit)
{
    if (kit->has_compiler) {
        JS_FreeValue(kit->compiler.ctx, kit->compiled);
        js_sandbox_free(&kit->compiler);
    }
    if (kit->has_module)
        js_sandbox_free(&kit->module);
    struct js__validation_kit *next = kit->next;
    *kit = (struct js__validation_kit){.compiled = JS_UNDEFINED, .next = next};
}

json_t *js__validate_in(struct js__validation_kit *kit, const char *source, size_t len,
                        const char *filename, const struct js_limits *limits, struct err *err)
{
    struct js_limits lim = validation_limits(limits);
    struct js_bytecode *bc = NULL;
    js__skip_byte_order_mark(&source, &len);
    if (compiler_sandbox(kit, err) != 0 ||
        js__compile_source(&kit->compiler, source, len, filename, &kit->compiled, &bc, err) < 0)
        return NULL;
    json_t *md = NULL;
    if (module_sandbox(kit, &lim, err) == 0)
        md = run_and_check(&kit->module, bc, source, len, err);
    js_bytecode_release(bc);
    return md;
}

json_t *js_validate(const char *source, size_t len, const char *filename,
                    const struct js_limits *limits, struct err *err)
{
    struct js__validation_kit kit = {.compiled = JS_UNDEFINED};
    json_t *md = js__validate_in(&kit, source, len, filename, limits, err);
    js__validation_kit_clear(&kit);
    return md;
}
