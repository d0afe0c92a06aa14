/*
 * sandbox: a QuickJS runtime with a counting allocator (memory cap and the
 * out-of-memory flag), an interrupt handler (CPU budget) and a context that
 * holds only the built-ins strategies need.
 */
#include "js/sandbox.h"

#include "core/clock.h"
#include "js/internal.h"

#include <malloc.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What QuickJS's own allocator charges per block on top of its usable size;
 * kept so that caps mean the same as with the stock allocator. */
#define MALLOC_OVERHEAD 8
/* Reading a thrown object may run its getters: give them this long... */
#define EXTRACT_BUDGET_NS (20LL * 1000 * 1000)
/* ...and this much memory above the cap, so that an exception raised at the
 * cap can still be turned into text. */
#define EXTRACT_MEMORY_SLACK ((size_t)1 << 20)

/* ------------------------------------------------------------ allocator */

/* The allocator mirrors QuickJS's default one, plus two things it cannot
 * tell us otherwise: the heap size without walking the heap, and whether
 * the cap refused an allocation (QuickJS may then throw `null` rather than
 * an InternalError when even the error object does not fit).
 *
 * It also works around a QuickJS 2025-04-26 crash: when an allocation
 * fails while the backtrace of a pending exception is being built, the
 * out-of-memory error replaces (and frees) the exception that
 * build_backtrace() is still writing to, and the process dies in
 * find_own_property(). So while an exception is pending, allocations are
 * granted up to EXCEPTION_HEADROOM above the cap: they are the error's own
 * bookkeeping (stack text, its property), small and short-lived. Running
 * code never has an exception pending, so the cap still binds it. */
#define EXCEPTION_HEADROOM ((size_t)1 << 20)

static bool over(const JSMallocState *s, size_t limit, size_t extra)
{
    return s->malloc_size > limit || extra > limit - s->malloc_size;
}

static bool over_cap(const JSMallocState *s, size_t extra)
{
    if (!over(s, s->malloc_limit, extra))
        return false;
    const struct js_sandbox *sb = s->opaque;
    bool unwinding = sb->ctx && JS_HasException(sb->ctx);
    size_t ceiling = s->malloc_limit + EXCEPTION_HEADROOM;
    return !unwinding || ceiling < s->malloc_limit || over(s, ceiling, extra);
}

/* Counts a block in (in) or out of the heap the cap sees. */
static void count_block(JSMallocState *s, struct js_sandbox *sb, size_t usable, bool in)
{
    if (in) {
        s->malloc_count++;
        s->malloc_size += usable + MALLOC_OVERHEAD;
    } else {
        s->malloc_count--;
        s->malloc_size -= usable + MALLOC_OVERHEAD;
    }
    sb->heap_bytes = s->malloc_size;
}

/* A block counted at `before` bytes now has `after`. */
static void recount_block(JSMallocState *s, struct js_sandbox *sb, size_t before, size_t after)
{
    s->malloc_size = s->malloc_size - before + after;
    sb->heap_bytes = s->malloc_size;
}

static void *sb_malloc(JSMallocState *s, size_t size)
{
    struct js_sandbox *sb = s->opaque;
    if (over_cap(s, size)) {
        sb->out_of_memory = true;
        return NULL;
    }
    void *ptr = malloc(size ? size : 1);
    if (!ptr) {
        sb->out_of_memory = true;
        return NULL;
    }
    count_block(s, sb, malloc_usable_size(ptr), true);
    return ptr;
}

static void sb_free(JSMallocState *s, void *ptr)
{
    if (!ptr)
        return;
    count_block(s, s->opaque, malloc_usable_size(ptr), false);
    free(ptr);
}

static void *sb_realloc(JSMallocState *s, void *ptr, size_t size)
{
    if (!ptr)
        return size ? sb_malloc(s, size) : NULL;
    if (size == 0) {
        sb_free(s, ptr);
        return NULL;
    }
    struct js_sandbox *sb = s->opaque;
    size_t old_size = malloc_usable_size(ptr);
    if (size > old_size && over_cap(s, size - old_size)) {
        sb->out_of_memory = true;
        return NULL;
    }
    void *grown = realloc(ptr, size);
    if (!grown) {
        sb->out_of_memory = true;
        return NULL;
    }
    recount_block(s, sb, old_size, malloc_usable_size(grown));
    return grown;
}

static size_t sb_usable_size(const void *ptr)
{
    return malloc_usable_size((void *)ptr);
}

static const JSMallocFunctions sandbox_allocator = {
    sb_malloc,
    sb_free,
    sb_realloc,
    sb_usable_size,
};

/* A compiler sandbox's allocator: blocks come from its arena while it has
 * room and from the C library after, each behind a header that says which
 * and how large (QuickJS asks a block's usable size without saying whose
 * it is). The cap counts live blocks exactly as above. */
struct block_head {
    size_t usable;
    size_t in_arena; /* a size_t keeps the payload 16-byte aligned */
};

/* A block of at least `size` bytes with its header filled in. */
static struct block_head *carve(struct js_sandbox *sb, size_t size)
{
    if (size > SIZE_MAX / 2)
        return NULL;
    size_t usable = js__arena_round(size ? size : 1);
    struct block_head *head = js__arena_alloc(sb->arena, sizeof *head + usable);
    bool in_arena = head != NULL;
    if (!head)
        head = malloc(sizeof *head + usable);
    if (!head)
        return NULL;
    head->usable = usable;
    head->in_arena = in_arena;
    return head;
}

static void drop(struct js_sandbox *sb, struct block_head *head)
{
    if (head->in_arena)
        js__arena_release(sb->arena, head, sizeof *head + head->usable);
    else
        free(head);
}

static void *scratch_malloc(JSMallocState *s, size_t size)
{
    struct js_sandbox *sb = s->opaque;
    struct block_head *head = over_cap(s, size) ? NULL : carve(sb, size);
    if (!head) {
        sb->out_of_memory = true;
        return NULL;
    }
    count_block(s, sb, head->usable, true);
    return head + 1;
}

static void scratch_free(JSMallocState *s, void *ptr)
{
    if (!ptr)
        return;
    struct js_sandbox *sb = s->opaque;
    struct block_head *head = (struct block_head *)ptr - 1;
    count_block(s, sb, head->usable, false);
    drop(sb, head);
}

/* Grows a block: in place at the arena's top, by the C library's realloc
 * for a block it gave, otherwise into a new block. */
static void *scratch_grow(struct js_sandbox *sb, struct block_head *head, size_t size)
{
    size_t usable = js__arena_round(size);
    if (head->in_arena) {
        if (js__arena_extend(sb->arena, head, sizeof *head + head->usable, sizeof *head + usable)) {
            head->usable = usable;
            return head;
        }
        struct block_head *moved = carve(sb, size);
        if (!moved)
            return NULL;
        memcpy(moved + 1, head + 1, head->usable);
        drop(sb, head);
        return moved;
    }
    struct block_head *grown = realloc(head, sizeof *head + usable);
    if (grown)
        grown->usable = usable;
    return grown;
}

static void *scratch_realloc(JSMallocState *s, void *ptr, size_t size)
{
    if (!ptr)
        return size ? scratch_malloc(s, size) : NULL;
    if (size == 0) {
        scratch_free(s, ptr);
        return NULL;
    }
    struct js_sandbox *sb = s->opaque;
    struct block_head *head = (struct block_head *)ptr - 1;
    if (size <= head->usable)
        return ptr;
    size_t old_usable = head->usable;
    struct block_head *grown =
        over_cap(s, size - old_usable) || size > SIZE_MAX / 2 ? NULL : scratch_grow(sb, head, size);
    if (!grown) {
        sb->out_of_memory = true;
        return NULL;
    }
    recount_block(s, sb, old_usable, grown->usable);
    return grown + 1;
}

static size_t scratch_usable_size(const void *ptr)
{
    return ((const struct block_head *)ptr - 1)->usable;
}

static const JSMallocFunctions scratch_allocator = {
    scratch_malloc,
    scratch_free,
    scratch_realloc,
    scratch_usable_size,
};

/* ------------------------------------------------------- init and limits */

/* Called once the monotonic deadline has passed. Reading the thread's CPU
 * clock is a system call, too dear for every callback, so it is read only
 * from here: the first time it marks the thread's CPU and grants a short
 * window; after each window the thread's share of the CPU in it estimates
 * what the call has used since it was armed. The call has spent its budget
 * when that estimate reaches the budget, or in any case after 8 budgets of
 * wall time, so a starved runaway loop is still stopped. */
static bool budget_spent(struct js_sandbox *sb, int64_t now)
{
    int64_t window = sb->armed_budget_ns / 4 > 1000000 ? sb->armed_budget_ns / 4 : 1000000;
    int64_t cpu = clock_thread_cpu_ns();
    if (sb->cpu_mark_ns < 0) {
        sb->cpu_mark_ns = cpu;
        sb->mark_at_ns = now;
        sb->deadline_ns = now + window;
        return false;
    }
    int64_t wall = now - sb->mark_at_ns;
    double share = wall > 0 ? (double)(cpu - sb->cpu_mark_ns) / (double)wall : 1.0;
    if (share > 1.0)
        share = 1.0;
    double before = share * (double)(sb->mark_at_ns - sb->armed_at_ns);
    double used = before + (double)(cpu - sb->cpu_mark_ns);
    if (used >= (double)sb->armed_budget_ns || now - sb->armed_at_ns >= 8 * sb->armed_budget_ns)
        return true;
    sb->deadline_ns = now + window;
    return false;
}

/* The budget's clock starts at the call's first check, not when it is
 * armed: most callbacks end before the ticker moves and so never read a
 * clock, where a read at every arm was a tenth of a trivial handler's
 * delivery. The first check comes within a tick of the entry (or after
 * JS__POLLS_PER_CHECK polls), so a callback may run up to a tick past its
 * budget, never less than it. Returns true when it started the clock. */
static bool start_budget_clock(struct js_sandbox *sb, int64_t now)
{
    if (sb->budget_started)
        return false;
    sb->budget_started = true;
    sb->armed_at_ns = now;
    sb->deadline_ns = now + sb->armed_budget_ns;
    return true;
}

/* Whether the armed call has spent its budget by `now`; its first check
 * only starts the clock. */
static bool budget_exhausted(struct js_sandbox *sb, int64_t now)
{
    return !start_budget_clock(sb, now) && now >= sb->deadline_ns && budget_spent(sb, now);
}

/* Called by QuickJS's gate (see sandbox_gate) once the ticker has moved
 * since the last call or after JS__POLLS_PER_CHECK polls, and directly by
 * the regular expression engine (every 10,000 steps of a match, each
 * alternative and term of a compile): each call looks at the clocks. A
 * check marks activity, which keeps the ticker running for as long as a
 * callback does. */
static int on_interrupt(JSRuntime *rt, void *opaque)
{
    (void)rt;
    struct js_sandbox *sb = opaque;
    if (sb->deadline_ns == 0)
        return 0;
    js__ticker_wake();
    int64_t now = clock_mono_ns();
    if (!budget_exhausted(sb, now))
        return 0;
    sb->overran = true;
    return 1;
}

/* Lets QuickJS's polls pass without a call until the ticker moves (or
 * JS__POLLS_PER_CHECK polls), counting from now. */
static void sandbox_gate(struct js_sandbox *sb)
{
    JS_SetInterruptGate(sb->rt, (const uint32_t *)&js__ticker_count, JS__POLLS_PER_CHECK);
}

static struct js_limits resolve_limits(const struct js_limits *limits)
{
    struct js_limits out = limits ? *limits : (struct js_limits){0, 0, 0};
    if (out.memory_bytes == 0)
        out.memory_bytes = JS_SANDBOX_DEFAULT_MEMORY;
    if (out.stack_bytes == 0)
        out.stack_bytes = JS_SANDBOX_DEFAULT_STACK;
    if (out.budget_ns <= 0)
        out.budget_ns = JS_SANDBOX_DEFAULT_BUDGET_NS;
    return out;
}

/* Each intrinsic costs heap in every one of thousands of sandboxes, so the
 * list is what strategies use: no Eval (source is compiled elsewhere). The
 * compiler needs Eval to parse and the RegExp compiler to turn regex
 * literals into bytecode. String.prototype.normalize and localeCompare
 * (arr.sort((a, b) => a.localeCompare(b)) is a common idiom) are two
 * methods on String.prototype: their tables are static data, linked in
 * either way. */
static void add_intrinsics(JSContext *ctx, enum js__profile profile)
{
    JS_AddIntrinsicBaseObjects(ctx);
    if (profile == JS__PROFILE_COMPILER) {
        JS_AddIntrinsicEval(ctx);
        JS_AddIntrinsicRegExpCompiler(ctx);
        return;
    }
    JS_AddIntrinsicDate(ctx);
    JS_AddIntrinsicRegExpCompiler(ctx);
    JS_AddIntrinsicRegExp(ctx);
    JS_AddIntrinsicJSON(ctx);
    JS_AddIntrinsicProxy(ctx);
    JS_AddIntrinsicMapSet(ctx);
    JS_AddIntrinsicTypedArrays(ctx);
    JS_AddIntrinsicPromise(ctx);
    JS_AddIntrinsicWeakRef(ctx);
    JS_AddIntrinsicStringNormalize(ctx);
}

static int create_context(struct js_sandbox *sb, enum js__profile profile, struct err *err)
{
    sb->ctx = JS_NewContextRaw(sb->rt);
    if (!sb->ctx) {
        err_set(err, ERR_INTERNAL, "cannot create a JavaScript context: out of memory");
        return -1;
    }
    add_intrinsics(sb->ctx, profile);
    if (JS_HasException(sb->ctx) || sb->out_of_memory) {
        err_set(err, ERR_INTERNAL, "cannot create the JavaScript built-ins: out of memory");
        return -1;
    }
    return 0;
}

/* The cap is set once the built-ins exist: a cap smaller than a fresh
 * sandbox is a configuration mistake worth a clear message, not a context
 * with half its built-ins. */
static int check_memory_cap(const struct js_sandbox *sb, size_t cap, struct err *err)
{
    if (sb->heap_bytes >= cap) {
        err_set(err, ERR_INVALID,
                "a memory cap of %zu bytes is below the %zu bytes a fresh sandbox needs", cap,
                sb->heap_bytes);
        return -1;
    }
    return 0;
}

static int apply_memory_cap(struct js_sandbox *sb, struct err *err)
{
    if (check_memory_cap(sb, sb->limits.memory_bytes, err) < 0)
        return -1;
    JS_SetMemoryLimit(sb->rt, sb->limits.memory_bytes);
    return 0;
}

int js__sandbox_init_profile(struct js_sandbox *sb, const struct js_limits *limits,
                             enum js__profile profile, struct err *err)
{
    memset(sb, 0, sizeof(*sb));
    sb->limits = resolve_limits(limits);
    /* A compiler sandbox lives for one compile; with no arena it is built
     * on the C library's allocator like any other. */
    sb->compiler = profile == JS__PROFILE_COMPILER;
    if (sb->compiler)
        sb->arena = js__arena_take();
    sb->rt = JS_NewRuntime2(sb->arena ? &scratch_allocator : &sandbox_allocator, sb);
    if (!sb->rt) {
        js__arena_give(sb->arena);
        sb->arena = NULL;
        err_set(err, ERR_INTERNAL, "cannot create a JavaScript runtime: out of memory");
        return -1;
    }
    js__ticker_hold();
    JS_SetMaxStackSize(sb->rt, sb->limits.stack_bytes);
    JS_SetInterruptHandler(sb->rt, on_interrupt, sb);
    sandbox_gate(sb);
    JS_SetCanBlock(sb->rt, 0);
    if (profile == JS__PROFILE_COMPILER)
        JS_SetStripInfo(sb->rt, JS_STRIP_SOURCE);
    if (create_context(sb, profile, err) < 0 || apply_memory_cap(sb, err) < 0) {
        js_sandbox_free(sb);
        return -1;
    }
    return 0;
}

int js_sandbox_init(struct js_sandbox *sb, const struct js_limits *limits, struct err *err)
{
    return js__sandbox_init_profile(sb, limits, JS__PROFILE_STRATEGY, err);
}

int js_sandbox_set_limits(struct js_sandbox *sb, const struct js_limits *limits, struct err *err)
{
    struct js_limits next = resolve_limits(limits);
    if (check_memory_cap(sb, next.memory_bytes, err) < 0)
        return -1;
    sb->limits = next;
    /* built ahead of time, maybe on another thread: the stack limit is
     * measured from the thread that will run it */
    JS_UpdateStackTop(sb->rt);
    JS_SetMaxStackSize(sb->rt, next.stack_bytes);
    JS_SetMemoryLimit(sb->rt, next.memory_bytes);
    return 0;
}

void js_sandbox_free(struct js_sandbox *sb)
{
    if (!sb)
        return;
    /* Cleared first: the allocator looks at sb->ctx, which must never be a
     * context that is being freed. */
    JSContext *ctx = sb->ctx;
    JSRuntime *rt = sb->rt;
    sb->ctx = NULL;
    sb->rt = NULL;
    sb->deadline_ns = 0;
    if (ctx)
        JS_FreeContext(ctx);
    if (rt) {
        JS_FreeRuntime(rt);
        js__ticker_release();
    }
    /* after the runtime: its last free is of the runtime itself */
    js__arena_give(sb->arena);
    sb->arena = NULL;
}

void js_sandbox_hold_ticker(void)
{
    js__ticker_hold();
}

void js_sandbox_release_ticker(void)
{
    js__ticker_release();
}

void js_sandbox_arm(struct js_sandbox *sb, int64_t budget_ns)
{
    if (budget_ns <= 0)
        budget_ns = sb->limits.budget_ns;
    /* The stack limit is measured from here: the caller may be another
     * thread than last time. */
    JS_UpdateStackTop(sb->rt);
    sb->overran = false;
    sb->out_of_memory = false;
    sb->stack_overflows_at_arm = JS_GetStackOverflowCount(sb->rt);
    sb->armed_budget_ns = budget_ns;
    sb->budget_started = false;
    sb->cpu_mark_ns = -1;
    sb->deadline_ns = INT64_MAX; /* armed; the clock starts at the first check */
    sandbox_gate(sb);
    js__ticker_wake();
}

bool js_sandbox_stack_overflowed(const struct js_sandbox *sb)
{
    return JS_GetStackOverflowCount(sb->rt) != sb->stack_overflows_at_arm;
}

void js_sandbox_disarm(struct js_sandbox *sb)
{
    sb->deadline_ns = 0;
}

size_t js_sandbox_memory_used(struct js_sandbox *sb)
{
    return sb->heap_bytes;
}

static bool past_deadline(struct js_sandbox *sb)
{
    if (!sb->overran && sb->deadline_ns != 0) {
        if (budget_exhausted(sb, clock_mono_ns()))
            sb->overran = true;
    }
    return sb->overran;
}

/* A job interrupted by the budget may surface as a rejected promise rather
 * than a failed job, so the flag is checked between jobs too. */
int js_sandbox_run_jobs(struct js_sandbox *sb)
{
    while (JS_IsJobPending(sb->rt)) {
        if (past_deadline(sb))
            return -1;
        JSContext *job_ctx = NULL;
        if (JS_ExecutePendingJob(sb->rt, &job_ctx) < 0)
            return -1;
    }
    return sb->overran ? -1 : 0;
}

/* ------------------------------------------------------ exception text */

static void drop_exception(JSContext *ctx)
{
    if (JS_HasException(ctx))
        JS_FreeValue(ctx, JS_GetException(ctx));
}

/* The value as text, or NULL (and no exception left behind) if converting
 * it failed, e.g. a symbol or a toString that throws. */
static char *value_text(JSContext *ctx, JSValueConst value, size_t max)
{
    char *out = js_text_of(ctx, value, max);
    if (!out)
        drop_exception(ctx);
    return out;
}

static char *property_text(JSContext *ctx, JSValueConst obj, const char *key, size_t max)
{
    JSValue value = JS_GetPropertyStr(ctx, obj, key);
    char *out = NULL;
    if (JS_IsException(value))
        drop_exception(ctx);
    else if (!JS_IsUndefined(value))
        out = value_text(ctx, value, max);
    JS_FreeValue(ctx, value);
    return out;
}

static const char *type_name(JSContext *ctx, JSValueConst value)
{
    if (JS_IsNull(value))
        return "null";
    if (JS_IsUndefined(value))
        return "undefined";
    if (JS_IsBool(value))
        return "boolean";
    if (JS_IsNumber(value))
        return "number";
    if (JS_IsBigInt(ctx, value))
        return "bigint";
    if (JS_IsString(value))
        return "string";
    if (JS_IsSymbol(value))
        return "symbol";
    if (JS_IsFunction(ctx, value))
        return "function";
    return "object";
}

/* Plain objects read better as JSON ({"code":42}) than as [object Object]. */
static char *thrown_value_text(JSContext *ctx, JSValueConst value)
{
    if (JS_IsObject(value) && !JS_IsFunction(ctx, value)) {
        JSValue json = JS_JSONStringify(ctx, value, JS_UNDEFINED, JS_UNDEFINED);
        char *out = NULL;
        if (JS_IsException(json))
            drop_exception(ctx);
        else if (JS_IsString(json))
            out = value_text(ctx, json, JS_EXCEPTION_MESSAGE_MAX);
        JS_FreeValue(ctx, json);
        if (out)
            return out;
    }
    if (JS_IsSymbol(value)) {
        char *description = property_text(ctx, value, "description", JS_EXCEPTION_MESSAGE_MAX);
        char buf[JS_EXCEPTION_MESSAGE_MAX];
        snprintf(buf, sizeof(buf), "Symbol(%s)", description ? description : "");
        free(description);
        return strdup(buf);
    }
    return value_text(ctx, value, JS_EXCEPTION_MESSAGE_MAX);
}

/* ------------------------------------------------- stack frame parsing */

/* Parses "<file>:<line>:<col>" at the end of [loc, loc+len). */
static bool parse_location(const char *loc, size_t len, const char **file, size_t *file_len,
                           int *line, int *column)
{
    long values[2] = {0, 0};
    size_t end = len;
    for (int i = 1; i >= 0; i--) {
        size_t start = end;
        while (start > 0 && loc[start - 1] >= '0' && loc[start - 1] <= '9')
            start--;
        if (start == end || start == 0 || loc[start - 1] != ':' || end - start > 9)
            return false;
        values[i] = strtol(loc + start, NULL, 10);
        end = start - 1;
    }
    *file = loc;
    *file_len = end;
    *line = (int)values[0];
    *column = (int)values[1];
    return true;
}

/* One frame line, "    at fn (location)" or "    at location", split into
 * the function's name (empty for the second form) and its location
 * ("file:line:col", or "native"); false for a line that is no frame. */
struct frame {
    const char *name, *loc;
    size_t name_len, loc_len;
};

static bool split_frame(const char *text, size_t len, struct frame *f)
{
    while (len > 0 && (*text == ' ' || *text == '\t')) {
        text++;
        len--;
    }
    if (len < 3 || memcmp(text, "at ", 3) != 0)
        return false;
    *f = (struct frame){text + 3, text + 3, 0, len - 3};
    if (f->loc_len > 0 && f->loc[f->loc_len - 1] == ')') {
        const char *open = memrchr(f->loc, '(', f->loc_len);
        if (!open)
            return false;
        f->name_len = (size_t)(open - f->name);
        if (f->name_len > 0 && f->name[f->name_len - 1] == ' ')
            f->name_len--;
        f->loc_len = (size_t)(f->loc + f->loc_len - 1 - (open + 1));
        f->loc = open + 1;
    }
    return true;
}

/* A frame's position when it is in `filename` (any file when NULL). */
static bool parse_frame(const char *text, size_t len, const char *filename, int *line, int *column)
{
    struct frame f;
    const char *file = NULL;
    size_t file_len = 0;
    if (!split_frame(text, len, &f) ||
        !parse_location(f.loc, f.loc_len, &file, &file_len, line, column))
        return false;
    return !filename || (strlen(filename) == file_len && memcmp(file, filename, file_len) == 0);
}

static void locate(const char *stack, const char *filename, int *line, int *column)
{
    *line = 0;
    *column = 0;
    for (const char *p = stack; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        int l = 0, c = 0;
        if (parse_frame(p, len, filename, &l, &c)) {
            *line = l;
            *column = c;
            return;
        }
        p = nl ? nl + 1 : NULL;
    }
}

/* ------------------------------------------------- where an interrupt struck */

void js_exception_where(const struct js_exception *ex, const char *filename, char *out, size_t size)
{
    if (size)
        out[0] = '\0';
    const char *first = NULL;
    size_t first_len = 0;
    bool native = false, cut = false;
    int depth = 0;
    for (const char *p = ex->stack; p && *p;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        struct frame f;
        int line = 0, column = 0;
        if (!split_frame(p, len, &f) || f.name_len == 0) {
            cut = true; /* the stack was cut to JS_EXCEPTION_STACK_MAX */
            break;
        }
        const char *name = f.name;
        size_t name_len = f.name_len;
        bool here_native = f.loc_len == 6 && memcmp(f.loc, "native", 6) == 0;
        if (!first) {
            first = name;
            first_len = name_len;
            native = here_native;
        }
        if (name_len == first_len && memcmp(name, first, name_len) == 0) {
            depth++;
        } else {
            /* the caller's position is where it made the call: exact */
            if (!parse_frame(p, len, filename, &line, &column))
                return;
            char deep[48] = "";
            if (depth > 1)
                snprintf(deep, sizeof deep, ", %d calls deep", depth);
            snprintf(out, size, "in %.*s%s%s, called at %s:%d:%d (in %.*s)", (int)first_len, first,
                     native ? " (native)" : "", deep, filename, line, column, (int)name_len, name);
            js_text_fit(out);
            return;
        }
        p = nl ? nl + 1 : NULL;
    }
    /* a recursion whose caller is past the end of the stack kept */
    if (depth > 1) {
        snprintf(out, size, "in %.*s, %s%d calls deep", (int)first_len, first,
                 cut ? "more than " : "", depth);
        js_text_fit(out);
    }
}

/* ---------------------------------------------------- take_exception */

/* What extraction changes and must put back. */
struct extract_guard {
    int64_t deadline_ns;
    bool overran;
    bool out_of_memory;
};

static void guard_begin(struct js_sandbox *sb, struct extract_guard *g)
{
    g->deadline_ns = sb->deadline_ns;
    g->overran = sb->overran;
    g->out_of_memory = sb->out_of_memory;
    int64_t now = clock_mono_ns();
    if (g->deadline_ns != 0 && start_budget_clock(sb, now))
        g->deadline_ns = sb->deadline_ns; /* put back a started clock */
    sb->deadline_ns = now + EXTRACT_BUDGET_NS;
    sb->overran = false;
    JS_SetMemoryLimit(sb->rt, sb->limits.memory_bytes + EXTRACT_MEMORY_SLACK);
}

static void guard_end(struct js_sandbox *sb, const struct extract_guard *g)
{
    drop_exception(sb->ctx);
    JS_SetMemoryLimit(sb->rt, sb->limits.memory_bytes);
    sb->deadline_ns = g->deadline_ns;
    sb->overran = g->overran;
    sb->out_of_memory = g->out_of_memory;
}

static void describe_error(JSContext *ctx, JSValueConst exc, const char *filename,
                           struct js_exception *out)
{
    out->name = property_text(ctx, exc, "name", JS_EXCEPTION_MESSAGE_MAX);
    out->message = property_text(ctx, exc, "message", JS_EXCEPTION_MESSAGE_MAX);
    JSValue stack = JS_GetPropertyStr(ctx, exc, "stack");
    if (JS_IsString(stack)) {
        size_t len = 0;
        const char *text = JS_ToCStringLen(ctx, &len, stack);
        if (text) {
            locate(text, filename, &out->line, &out->column);
            out->stack = js_text_clean(text, len, JS_EXCEPTION_STACK_MAX, NULL);
            JS_FreeCString(ctx, text);
        }
    }
    if (JS_IsException(stack))
        drop_exception(ctx);
    JS_FreeValue(ctx, stack);
}

static bool text_is(const char *text, const char *expected)
{
    return text && strcmp(text, expected) == 0;
}

static enum js_failure classify(const struct extract_guard *g, const struct js_exception *ex,
                                bool is_error)
{
    if (g->overran)
        return JS_FAILURE_BUDGET;
    bool internal = is_error && text_is(ex->name, "InternalError");
    if (g->out_of_memory || (internal && text_is(ex->message, "out of memory")))
        return JS_FAILURE_MEMORY;
    if (internal && text_is(ex->message, "stack overflow"))
        return JS_FAILURE_STACK;
    return JS_FAILURE_EXCEPTION;
}

/* With nothing thrown (a budget that ran out between jobs) or `null` thrown
 * by an allocation that failed at the cap, the flags tell the story. */
static void describe_from_flags(const struct extract_guard *g, struct js_exception *out)
{
    out->name = strdup("InternalError");
    if (g->overran)
        out->message = strdup("interrupted");
    else if (g->out_of_memory)
        out->message = strdup("out of memory");
    else
        out->message = strdup("no exception was pending");
}

static void fill_missing(struct js_exception *out)
{
    if (!out->name)
        out->name = strdup("");
    if (!out->message)
        out->message = strdup("");
    if (!out->stack)
        out->stack = strdup("");
}

void js_sandbox_take_exception(struct js_sandbox *sb, const char *filename,
                               struct js_exception *out)
{
    memset(out, 0, sizeof(*out));
    struct extract_guard g;
    guard_begin(sb, &g);
    JSContext *ctx = sb->ctx;
    bool pending = JS_HasException(ctx);
    JSValue exc = pending ? JS_GetException(ctx) : JS_UNDEFINED;
    bool is_error = pending && JS_IsError(ctx, exc);
    if (!pending || (JS_IsNull(exc) && (g.out_of_memory || g.overran))) {
        describe_from_flags(&g, out);
    } else if (is_error) {
        describe_error(ctx, exc, filename, out);
    } else {
        out->name = strdup(type_name(ctx, exc));
        out->message = thrown_value_text(ctx, exc);
    }
    JS_FreeValue(ctx, exc);
    out->failure = classify(&g, out, is_error);
    /* QuickJS does not record where an interrupt struck in running code:
     * the innermost frame shows its function's first line, which would
     * mislead. */
    if (out->failure == JS_FAILURE_BUDGET && !sb->compiler)
        out->line = out->column = 0;
    fill_missing(out);
    guard_end(sb, &g);
}

void js_exception_free(struct js_exception *ex)
{
    if (!ex)
        return;
    free(ex->name);
    free(ex->message);
    free(ex->stack);
    ex->name = ex->message = ex->stack = NULL;
}
