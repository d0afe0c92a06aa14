/*
 * module: CommonJS strategy modules, compiled once to QuickJS bytecode and
 * loaded into each sandbox from it; and the per-revision bytecode cache.
 */
#include "js/module.h"

#include "js/internal.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Parsing a module needs memory in proportion to its size; uploads are
 * bounded well below what this allows. */
#define COMPILE_MEMORY ((size_t)128 << 20)
/* Some constructs compile in time that grows with their square: a regular
 * expression literal's alternatives (13 s for 400,000), names in one scope
 * or one destructuring (2 s for 30,000), a class's private fields. The
 * build makes the compiler poll the budget (scripts/install-deps.sh), and
 * a compile runs under a budget of 1 s plus 1 s per 4 MB of source,
 * several times what compiling that much ordinary code takes. */
#define COMPILE_BUDGET_BASE_NS (1000LL * 1000 * 1000)
#define COMPILE_BUDGET_NS_PER_BYTE 250
#define DEFAULT_FILENAME "module.js"

/* ------------------------------------------------------------- compile */

static bool starts_with_word(const char *text, size_t len, const char *word)
{
    size_t n = strlen(word);
    while (len > 0 && (*text == ' ' || *text == '\t')) {
        text++;
        len--;
    }
    if (len < n || memcmp(text, word, n) != 0)
        return false;
    return len == n || !(isalnum((unsigned char)text[n]) || text[n] == '_' || text[n] == '$');
}

/* A sentence telling the author what to do about a parse error. QuickJS's
 * messages are terse ("expecting ';'"), so the common ones get a hint. */
static const char *compile_hint(const char *message, const char *line_text, size_t line_len)
{
    if (line_text && (starts_with_word(line_text, line_len, "import") ||
                      starts_with_word(line_text, line_len, "export")))
        return "strategies are CommonJS scripts: assign module.exports = { metadata, create } "
               "instead of export, and use only built-ins instead of import";
    static const struct {
        const char *needle;
        const char *hint;
    } hints[] = {
        {"end of input", "the file ends inside an unfinished construct: close every '{', '(' "
                         "and '[' that is still open and finish the last statement"},
        {"unexpected end of string", "close the string literal with the quote it starts with, "
                                     "on the same line (use a template literal for several "
                                     "lines)"},
        {"expecting '}'", "a '}' is expected here: close the object or block that is still "
                          "open, or add the missing ',' between its members"},
        {"expecting ')'", "a ')' is expected here: close the parenthesis that is still open"},
        {"expecting ']'", "a ']' is expected here: close the array that is still open, or add "
                          "the missing ',' between its elements"},
        {"expecting ';'", "end the statement before this token: two expressions follow each "
                          "other without an operator, ',' or ';' between them"},
        {"unexpected token", "remove or fix the token at this position"},
        {"undefined private field", "declare the private name in the body of the class that "
                                    "uses it (`#name;`), or correct its spelling: a class reads "
                                    "only the private names it or an enclosing class declares"},
        {"stack overflow", "the code is nested too deeply to compile: flatten it"},
        {"out of memory", "the module is too large to compile: split or shrink it"},
        {"compile budget", "split what grows with its square: a regular expression of very "
                           "many alternatives (look them up in a Set), thousands of names in "
                           "one scope or destructuring (use an object), thousands of fields "
                           "in one class"},
    };
    for (size_t i = 0; message && i < sizeof(hints) / sizeof(hints[0]); i++) {
        if (strstr(message, hints[i].needle))
            return hints[i].hint;
    }
    return line_text ? "fix the syntax at this position so that the file parses as a JavaScript "
                       "script"
                     : "fix the syntax so that the file parses as a JavaScript script";
}

/* Whether the error sits at the end of the file (nothing but white space
 * follows): QuickJS then reports what it wanted next, or an empty token,
 * where an author needs to hear that something was left open. */
static bool at_end_of_input(const char *source, size_t len, int line, int column)
{
    size_t line_len = 0;
    const char *text = js__source_line(source, len, line, &line_len);
    if (!text)
        return line > 0;
    const char *p = text + js__column_offset(text, line_len, column);
    for (const char *end = source + len; p < end; p++) {
        if (!isspace((unsigned char)*p))
            return false;
    }
    return true;
}

static void readable_syntax_message(const char *message, bool at_end, char *out, size_t size)
{
    size_t len = strlen(message);
    bool empty_token = len >= 4 && strcmp(message + len - 4, ": ''") == 0;
    if (at_end && (empty_token || !*message))
        snprintf(out, size, "unexpected end of input");
    else if (at_end)
        snprintf(out, size, "unexpected end of input (%s)", message);
    else
        snprintf(out, size, "%s", message);
}

static int64_t compile_budget_ns(size_t len)
{
    return COMPILE_BUDGET_BASE_NS + (int64_t)len * COMPILE_BUDGET_NS_PER_BYTE;
}

/* "undefined private field '#y'": the position of the use of #y. */
static void place_private_name(const char *source, size_t len, const char *message, int *line,
                               int *column)
{
    static const char needle[] = "undefined private field '#";
    const char *name = message ? strstr(message, needle) : NULL;
    const char *end = name ? strchr(name + sizeof needle - 1, '\'') : NULL;
    if (!end)
        return;
    name += sizeof needle - 1;
    char copy[128];
    if (end == name || (size_t)(end - name) >= sizeof copy)
        return;
    memcpy(copy, name, (size_t)(end - name));
    copy[end - name] = '\0';
    js__locate_private_use(source, len, copy, line, column);
}

static int compile_failure(struct js_sandbox *sb, const char *source, size_t len,
                           const char *filename, struct err *err)
{
    struct js_exception ex;
    js_sandbox_take_exception(sb, filename, &ex);
    js__engine_position(source, len, &ex.line, &ex.column);
    if (ex.line <= 0)
        place_private_name(source, len, ex.message, &ex.line, &ex.column);
    char text[JS_EXCEPTION_MESSAGE_MAX], message[JS_EXCEPTION_MESSAGE_MAX + 64];
    readable_syntax_message(js__text(ex.message), at_end_of_input(source, len, ex.line, ex.column),
                            text, sizeof(text));
    if (ex.failure == JS_FAILURE_MEMORY)
        snprintf(text, sizeof(text), "out of memory while compiling");
    if (ex.failure == JS_FAILURE_BUDGET)
        snprintf(text, sizeof(text), "compiling ran past the module's compile budget of %.1f s",
                 (double)compile_budget_ns(len) / 1e9);
    size_t line_len = 0;
    const char *line_text = js__source_line(source, len, ex.line, &line_len);
    /* QuickJS reads `import x from 'y'` as a dynamic import missing its '(' */
    if (line_text && starts_with_word(line_text, line_len, "import") &&
        strstr(text, "expecting '('"))
        snprintf(text, sizeof(text),
                 "static import is not supported (a strategy is a CommonJS "
                 "script)");
    /* a stop is QuickJS's InternalError wherever it struck: the parser
     * turns some failures under way into a SyntaxError of its own */
    const char *name = ex.failure == JS_FAILURE_BUDGET || ex.failure == JS_FAILURE_MEMORY
                           ? "InternalError"
                           : js__text(ex.name);
    snprintf(message, sizeof(message), "%s%s%s", name, *name ? ": " : "", text);
    json_t *diag = js__diagnostic("compile", message, ex.line, ex.column,
                                  compile_hint(message, line_text, line_len));
    js__fail_one(err, diag, filename, ex.line, ex.column, message);
    js_exception_free(&ex);
    return -1;
}

static struct js_bytecode *bytecode_new(const uint8_t *data, size_t len, const char *filename)
{
    struct js_bytecode *bc = calloc(1, sizeof(*bc));
    if (!bc)
        return NULL;
    bc->data = malloc(len ? len : 1);
    if (!bc->data) {
        free(bc);
        return NULL;
    }
    memcpy(bc->data, data, len);
    bc->len = len;
    atomic_init(&bc->refs, 1);
    snprintf(bc->filename, sizeof(bc->filename), "%s", filename);
    return bc;
}

static int serialise(struct js_sandbox *sb, JSValueConst fn, const char *filename,
                     struct js_bytecode **out, struct err *err)
{
    size_t size = 0;
    uint8_t *buf = JS_WriteObject(sb->ctx, &size, fn, JS_WRITE_OBJ_BYTECODE);
    if (!buf) {
        JS_FreeValue(sb->ctx, JS_GetException(sb->ctx));
        err_set(err, ERR_INTERNAL, "%s: cannot serialise the compiled module", filename);
        return -1;
    }
    *out = bytecode_new(buf, size, filename);
    js_free(sb->ctx, buf);
    if (!*out) {
        err_set(err, ERR_INTERNAL, "%s: out of memory", filename);
        return -1;
    }
    return 0;
}

int js__compiler_init(struct js_sandbox *sb, struct err *err)
{
    struct js_limits limits = {COMPILE_MEMORY, 0, 0};
    return js__sandbox_init_profile(sb, &limits, JS__PROFILE_COMPILER, err);
}

static int compile_in(struct js_sandbox *sb, const char *text, size_t len, const char *filename,
                      JSValue *keep, struct js_bytecode **out, struct err *err)
{
    /* arming also measures the parser's stack guard from this thread's
     * stack: sb may have been built on another thread */
    js_sandbox_arm(sb, compile_budget_ns(len));
    JSValue fn =
        JS_Eval(sb->ctx, text, len, filename, JS_EVAL_TYPE_GLOBAL | JS_EVAL_FLAG_COMPILE_ONLY);
    js_sandbox_disarm(sb);
    int rc;
    if (JS_IsException(fn))
        rc = compile_failure(sb, text, len, filename, err);
    else
        rc = serialise(sb, fn, filename, out, err);
    if (keep && !JS_IsException(fn))
        *keep = fn;
    else
        JS_FreeValue(sb->ctx, fn);
    return rc;
}

int js__compile_source(struct js_sandbox *sb, const char *source, size_t len, const char *filename,
                       JSValue *keep, struct js_bytecode **out, struct err *err)
{
    *out = NULL;
    if (!filename || !*filename)
        filename = DEFAULT_FILENAME;
    if (strlen(filename) >= sizeof((*out)->filename)) {
        err_set(err, ERR_INVALID, "module file name '%.40s...' is too long", filename);
        return -1;
    }
    js__skip_byte_order_mark(&source, &len);
    /* QuickJS's parser reads up to a terminating NUL. */
    char *text = malloc(len + 1);
    if (!text) {
        err_set(err, ERR_INTERNAL, "%s: out of memory", filename);
        return -1;
    }
    memcpy(text, source, len);
    text[len] = '\0';
    js__engine_text(text, len);
    struct js_sandbox own;
    int rc;
    if (sb) {
        rc = compile_in(sb, text, len, filename, keep, out, err);
    } else if ((rc = js__compiler_init(&own, err)) == 0) {
        rc = compile_in(&own, text, len, filename, NULL, out, err);
        js_sandbox_free(&own);
    }
    free(text);
    return rc;
}

int js_compile(const char *source, size_t len, const char *filename, struct js_bytecode **out,
               struct err *err)
{
    return js__compile_source(NULL, source, len, filename, NULL, out, err);
}

void js_bytecode_retain(struct js_bytecode *bc)
{
    if (bc)
        atomic_fetch_add(&bc->refs, 1);
}

void js_bytecode_release(struct js_bytecode *bc)
{
    if (!bc || atomic_fetch_sub(&bc->refs, 1) != 1)
        return;
    free(bc->data);
    free(bc);
}

/* ---------------------------------------------------------------- load */

static void format_budget(int64_t budget_ns, char *out, size_t size)
{
    if (budget_ns % 1000000 == 0)
        snprintf(out, size, "%lld ms", (long long)(budget_ns / 1000000));
    else
        snprintf(out, size, "%.3f ms", (double)budget_ns / 1e6);
}

static const char *exception_hint(const struct js_exception *ex)
{
    if (strcmp(js__text(ex->name), "ReferenceError") == 0)
        return "define the name or fix its spelling: the sandbox offers the ECMAScript "
               "built-ins, timers and console (no require, process or fetch), and env "
               "arrives in create(env)";
    if (!*js__text(ex->stack))
        return "the top level runs once when the module loads and must not throw; throw "
               "Error objects (throw new Error(...)) so that failures say where they happen";
    return "the top level runs once when the module loads and must not throw: fix the cause "
           "at this line or catch the error";
}

/* One sentence and one hint for a failed load, by failure kind. */
static const char *describe_load_failure(const struct js_sandbox *sb, const struct js_exception *ex,
                                         char *message, size_t size)
{
    char limit[64];
    switch (ex->failure) {
    case JS_FAILURE_BUDGET:
        format_budget(sb->limits.budget_ns, limit, sizeof(limit));
        snprintf(message, size, "the top level ran past its budget of %s", limit);
        return "remove the endless or long loop from the code that runs when the module loads; "
               "do the work in handlers instead";
    case JS_FAILURE_MEMORY:
        js__format_bytes(sb->limits.memory_bytes, limit, sizeof(limit));
        snprintf(message, size, "the top level hit the memory cap of %s", limit);
        return "allocate less when the module loads: build large tables lazily or bound them";
    case JS_FAILURE_STACK:
        snprintf(message, size, "the top level recursed past the stack limit (%s: %s)",
                 js__text(ex->name), js__text(ex->message));
        return "remove the unbounded recursion from the code that runs when the module loads";
    case JS_FAILURE_EXCEPTION:
        break;
    }
    const char *name = *js__text(ex->name) ? ex->name : "a value without a name";
    snprintf(message, size, "the top level threw %s: %s", name, js__text(ex->message));
    return exception_hint(ex);
}

static int load_failure(struct js_sandbox *sb, const char *filename, struct err *err)
{
    struct js_exception ex;
    js_sandbox_take_exception(sb, filename, &ex);
    char message[2 * JS_EXCEPTION_MESSAGE_MAX + 128];
    const char *hint = describe_load_failure(sb, &ex, message, sizeof(message));
    json_t *diag = js__diagnostic("execute", message, ex.line, ex.column, hint);
    js__fail_one(err, diag, filename, ex.line, ex.column, message);
    js_exception_free(&ex);
    return -1;
}

/* Defines the CommonJS globals and returns the `module` object (or
 * JS_EXCEPTION). */
static JSValue install_module_globals(JSContext *ctx)
{
    JSValue global = JS_GetGlobalObject(ctx);
    JSValue module = JS_NewObject(ctx);
    JSValue exports = JS_NewObject(ctx);
    int rc = -1;
    if (!JS_IsException(module) && !JS_IsException(exports) &&
        JS_SetPropertyStr(ctx, module, "exports", JS_DupValue(ctx, exports)) >= 0 &&
        JS_SetPropertyStr(ctx, global, "module", JS_DupValue(ctx, module)) >= 0 &&
        JS_SetPropertyStr(ctx, global, "exports", JS_DupValue(ctx, exports)) >= 0)
        rc = 0;
    JS_FreeValue(ctx, exports);
    JS_FreeValue(ctx, global);
    if (rc < 0) {
        JS_FreeValue(ctx, module);
        return JS_EXCEPTION;
    }
    return module;
}

/* Runs the module's top level; returns module.exports or JS_EXCEPTION. */
static JSValue run_module(struct js_sandbox *sb, const struct js_bytecode *bc)
{
    JSContext *ctx = sb->ctx;
    JSValue module = install_module_globals(ctx);
    if (JS_IsException(module))
        return module;
    JSValue result = JS_EXCEPTION;
    JSValue fn = JS_ReadObject(ctx, bc->data, bc->len, JS_READ_OBJ_BYTECODE);
    if (!JS_IsException(fn)) {
        JSValue rv = JS_EvalFunction(ctx, fn); /* frees fn */
        if (!JS_IsException(rv) && js_sandbox_run_jobs(sb) == 0)
            result = JS_GetPropertyStr(ctx, module, "exports");
        JS_FreeValue(ctx, rv);
    }
    JS_FreeValue(ctx, module);
    return result;
}

/* A top level that caught the error of a limit it hit: loaded as it is, it
 * would start with the state it was building half-built. */
static int caught_limit_failure(struct js_sandbox *sb, const char *filename, struct err *err)
{
    char message[192];
    const char *hint;
    if (sb->out_of_memory) {
        char limit[64];
        js__format_bytes(sb->limits.memory_bytes, limit, sizeof(limit));
        snprintf(message, sizeof message,
                 "the top level hit the memory cap of %s and caught the out-of-memory error",
                 limit);
        hint = "allocate less when the module loads: build large tables lazily or bound them";
    } else {
        snprintf(message, sizeof message,
                 "the top level recursed past the stack limit and caught the stack overflow error");
        hint = "remove the unbounded recursion from the code that runs when the module loads";
    }
    json_t *diag = js__diagnostic("execute", message, 0, 0, hint);
    js__fail_one(err, diag, filename, 0, 0, message);
    return -1;
}

int js_module_load(struct js_sandbox *sb, const struct js_bytecode *bc, JSValue *exports,
                   struct err *err)
{
    *exports = JS_UNDEFINED;
    js_sandbox_arm(sb, sb->limits.budget_ns);
    JSValue value = run_module(sb, bc);
    int rc = 0;
    if (JS_IsException(value)) {
        rc = load_failure(sb, bc->filename, err);
    } else if (sb->out_of_memory || js_sandbox_stack_overflowed(sb)) {
        JS_FreeValue(sb->ctx, value);
        rc = caught_limit_failure(sb, bc->filename, err);
    } else {
        *exports = value;
    }
    js_sandbox_disarm(sb);
    return rc;
}

/* --------------------------------------------------------------- cache */

/* A chained hash table of revisions. An entry whose `bc` is NULL is being
 * compiled by the thread that inserted it; others wait on `done` instead of
 * compiling the same source again. Only that thread removes a pending
 * entry, so its pointer stays valid while it compiles. */
struct cache_entry {
    struct cache_entry *next;
    struct js_bytecode *bc; /* NULL while compiling */
    bool forgotten;         /* forget() arrived while compiling: do not keep */
    char hex[];
};

struct js_bytecode_cache {
    pthread_mutex_t lock;
    pthread_cond_t done;
    struct cache_entry **buckets;
    size_t bucket_count;
    size_t count;
    _Atomic uint64_t compilations;
};

#define CACHE_INITIAL_BUCKETS 64

static uint64_t hash_text(const char *text)
{
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (; *text; text++) {
        h ^= (unsigned char)*text;
        h *= 1099511628211ULL;
    }
    return h;
}

static struct cache_entry **bucket_of(const struct js_bytecode_cache *cache, const char *hex)
{
    return &cache->buckets[hash_text(hex) & (cache->bucket_count - 1)];
}

static struct cache_entry *cache_find(const struct js_bytecode_cache *cache, const char *hex)
{
    for (struct cache_entry *e = *bucket_of(cache, hex); e; e = e->next) {
        if (strcmp(e->hex, hex) == 0)
            return e;
    }
    return NULL;
}

/* Doubling keeps chains short; a failed resize only makes them longer. */
static void cache_grow(struct js_bytecode_cache *cache)
{
    size_t count = cache->bucket_count * 2;
    struct cache_entry **buckets = calloc(count, sizeof(*buckets));
    if (!buckets)
        return;
    for (size_t i = 0; i < cache->bucket_count; i++) {
        for (struct cache_entry *e = cache->buckets[i], *next; e; e = next) {
            next = e->next;
            struct cache_entry **b = &buckets[hash_text(e->hex) & (count - 1)];
            e->next = *b;
            *b = e;
        }
    }
    free(cache->buckets);
    cache->buckets = buckets;
    cache->bucket_count = count;
}

static struct cache_entry *cache_insert_pending(struct js_bytecode_cache *cache, const char *hex)
{
    size_t len = strlen(hex);
    struct cache_entry *e = calloc(1, sizeof(*e) + len + 1);
    if (!e)
        return NULL;
    memcpy(e->hex, hex, len + 1);
    if (cache->count + 1 > cache->bucket_count * 2)
        cache_grow(cache);
    struct cache_entry **b = bucket_of(cache, hex);
    e->next = *b;
    *b = e;
    cache->count++;
    return e;
}

static void cache_unlink(struct js_bytecode_cache *cache, struct cache_entry *entry)
{
    for (struct cache_entry **p = bucket_of(cache, entry->hex); *p; p = &(*p)->next) {
        if (*p == entry) {
            *p = entry->next;
            cache->count--;
            return;
        }
    }
}

struct js_bytecode_cache *js_bytecode_cache_new(void)
{
    struct js_bytecode_cache *cache = calloc(1, sizeof(*cache));
    if (!cache)
        return NULL;
    cache->buckets = calloc(CACHE_INITIAL_BUCKETS, sizeof(*cache->buckets));
    if (!cache->buckets) {
        free(cache);
        return NULL;
    }
    cache->bucket_count = CACHE_INITIAL_BUCKETS;
    pthread_mutex_init(&cache->lock, NULL);
    pthread_cond_init(&cache->done, NULL);
    atomic_init(&cache->compilations, 0);
    return cache;
}

void js_bytecode_cache_free(struct js_bytecode_cache *cache)
{
    if (!cache)
        return;
    for (size_t i = 0; i < cache->bucket_count; i++) {
        for (struct cache_entry *e = cache->buckets[i], *next; e; e = next) {
            next = e->next;
            js_bytecode_release(e->bc);
            free(e);
        }
    }
    free(cache->buckets);
    pthread_cond_destroy(&cache->done);
    pthread_mutex_destroy(&cache->lock);
    free(cache);
}

/* Outside the lock: fetching and parsing the source is the slow part. */
static int fetch_and_compile(struct js_bytecode_cache *cache, const char *hex, js_source_fn source,
                             void *source_ctx, struct js_bytecode **out, struct err *err)
{
    char *text = NULL;
    size_t len = 0;
    char filename[sizeof((*out)->filename)] = "";
    if (source(source_ctx, hex, &text, &len, filename, sizeof(filename), err) < 0)
        return -1;
    atomic_fetch_add(&cache->compilations, 1);
    int rc = js_compile(text, len, filename[0] ? filename : DEFAULT_FILENAME, out, err);
    free(text);
    return rc;
}

/* Waits while another thread compiles `hex`. Returns the ready entry, or
 * NULL when there is none (never was, failed, or was forgotten). */
static struct cache_entry *wait_ready(struct js_bytecode_cache *cache, const char *hex)
{
    struct cache_entry *e;
    while ((e = cache_find(cache, hex)) && !e->bc)
        pthread_cond_wait(&cache->done, &cache->lock);
    return e;
}

/* Publishes the outcome of a compilation. A failure is not cached: the next
 * caller tries again (the source may have been missing only for a moment). */
static void cache_settle(struct js_bytecode_cache *cache, struct cache_entry *entry,
                         struct js_bytecode *bc)
{
    if (bc && !entry->forgotten) {
        js_bytecode_retain(bc);
        entry->bc = bc;
    } else {
        cache_unlink(cache, entry);
        free(entry);
    }
    pthread_cond_broadcast(&cache->done);
}

int js_bytecode_cache_get(struct js_bytecode_cache *cache, const char *hex, js_source_fn source,
                          void *source_ctx, struct js_bytecode **out, struct err *err)
{
    *out = NULL;
    pthread_mutex_lock(&cache->lock);
    struct cache_entry *entry = wait_ready(cache, hex);
    if (entry) {
        js_bytecode_retain(entry->bc);
        *out = entry->bc;
        pthread_mutex_unlock(&cache->lock);
        return 0;
    }
    entry = cache_insert_pending(cache, hex);
    pthread_mutex_unlock(&cache->lock);
    if (!entry) {
        err_set(err, ERR_INTERNAL, "out of memory caching bytecode for %.64s", hex);
        return -1;
    }
    int rc = fetch_and_compile(cache, hex, source, source_ctx, out, err);
    pthread_mutex_lock(&cache->lock);
    cache_settle(cache, entry, rc == 0 ? *out : NULL);
    pthread_mutex_unlock(&cache->lock);
    return rc;
}

void js_bytecode_cache_forget(struct js_bytecode_cache *cache, const char *hex)
{
    pthread_mutex_lock(&cache->lock);
    struct cache_entry *entry = cache_find(cache, hex);
    if (entry && !entry->bc) {
        entry->forgotten = true; /* its compiler removes it */
    } else if (entry) {
        cache_unlink(cache, entry);
        js_bytecode_release(entry->bc);
        free(entry);
    }
    pthread_mutex_unlock(&cache->lock);
}

uint64_t js_bytecode_cache_compilations(const struct js_bytecode_cache *cache)
{
    return atomic_load(&cache->compilations);
}
