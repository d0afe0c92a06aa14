/*
 * vm: one instance's QuickJS sandbox, from start (load the module's
 * bytecode, call create(env), cache the handlers) through event delivery to
 * stop, on the worker thread that owns it.
 *
 * Delivery is the hot path: handler(ctx, evt, payload). ctx is built once
 * per (instance, provider, symbol) and reused; evt and the payloads of
 * trades and tickers are lazy objects that read a C copy of the event until
 * written to (see "lazy objects"); other payloads are fresh objects whose
 * properties are defined on atoms interned when the VM started, in a fixed
 * order, so every payload of a kind shares one shape. A kind without a
 * handler is never subscribed, so it costs nothing.
 *
 * Every entry into JS is armed with the CPU budget; the job queue is drained
 * within the same budget. A failure is classified by the sandbox: budget,
 * memory and stack failures stop the instance at once; plain exceptions are
 * logged and counted, and a streak of them stops it too.
 */
#include "runtime/internal.h"

#include "core/clock.h"
#include "core/intern.h"
#include "core/jsonutil.h"
#include "core/log.h"
#include "core/metrics.h"
#include "js/validate.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Time allowed for turning a rejection reason into text. */
#define REASON_BUDGET_NS (20LL * 1000 * 1000)

#define VM_ATOM_TEXT(id, text) text,
static const char *const atom_texts[A_COUNT] = {VM_ATOMS(VM_ATOM_TEXT)};
#undef VM_ATOM_TEXT

const char *const runtime_handler_names[H_SLOTS] = {
    "onTrade",
    "onTicker",
    "onBookSnapshot",
    "onKlineSummary",
    "onInstrumentUpdate",
    "onBalanceUpdate",
    "onOrderAcknowledged",
    "onOrderPartialFill",
    "onOrderFilled",
    "onOrderCancelled",
    "onOrderRejected",
    "onOrderExpired",
    "onRiskControl",
    "onExtensionEvent",
    "timer",
};

int runtime_handler_for_kind(enum event_kind kind)
{
    switch (kind) {
    case EVENT_TRADE:
        return H_TRADE;
    case EVENT_TICKER:
        return H_TICKER;
    case EVENT_BOOK_SNAPSHOT:
        return H_BOOK_SNAPSHOT;
    case EVENT_KLINE_SUMMARY:
        return H_KLINE_SUMMARY;
    case EVENT_INSTRUMENT_UPDATE:
        return H_INSTRUMENT_UPDATE;
    case EVENT_BALANCE_UPDATE:
        return H_BALANCE_UPDATE;
    case EVENT_RISK_CONTROL:
        return H_RISK_CONTROL;
    case EVENT_EXTENSION:
        return H_EXTENSION;
    case EVENT_EXEC_REPORT:
    case EVENT_KIND_COUNT:
        break;
    }
    return -1;
}

int runtime_handler_for_event(const struct event *ev)
{
    if (ev->kind != EVENT_EXEC_REPORT)
        return runtime_handler_for_kind((enum event_kind)ev->kind);
    switch (ev->u.exec.status) {
    case EXEC_ACKNOWLEDGED:
        return H_ORDER_ACKNOWLEDGED;
    case EXEC_PARTIAL_FILL:
        return H_ORDER_PARTIAL_FILL;
    case EXEC_FILLED:
        return H_ORDER_FILLED;
    case EXEC_CANCELLED:
        return H_ORDER_CANCELLED;
    case EXEC_REJECTED:
        return H_ORDER_REJECTED;
    case EXEC_EXPIRED:
        return H_ORDER_EXPIRED;
    }
    return -1;
}

/* ------------------------------------------------------------ free */

static void free_value(JSContext *ctx, JSValue *v)
{
    JS_FreeValue(ctx, *v);
    *v = JS_UNDEFINED;
}

void vm_free_timer(struct vm *vm, struct timer *t)
{
    if (vm->timers == t)
        vm->timers = t->next;
    else
        t->prev->next = t->next;
    if (t->next)
        t->next->prev = t->prev;
    vm->ntimers--;
    if (vm->sb.ctx) {
        JS_FreeValue(vm->sb.ctx, t->fn);
        for (int i = 0; i < t->argc; i++)
            JS_FreeValue(vm->sb.ctx, t->argv[i]);
        js_free(vm->sb.ctx, t->argv);
    }
    free(t);
}

/* Releases every value the host holds in the VM, then the sandbox. The
 * sandbox's JS_FreeRuntime asserts that nothing leaked. */
static void release_js(struct worker *w, struct vm *vm)
{
    JSContext *ctx = vm->sb.ctx;
    while (vm->timers) {
        if (w)
            worker_timer_unschedule(w, vm->timers);
        vm_free_timer(vm, vm->timers);
    }
    if (ctx) {
        free_value(ctx, &vm->handlers);
        free_value(ctx, &vm->exports);
        free_value(ctx, &vm->env);
        free_value(ctx, &vm->rejection);
        for (int i = 0; i < H_COUNT; i++)
            free_value(ctx, &vm->fn[i]);
        for (int i = 0; i < EVENT_KIND_COUNT; i++)
            free_value(ctx, &vm->kind_names[i]);
        for (int i = 0; i < 2; i++) {
            free_value(ctx, &vm->side_names[i]);
            free_value(ctx, &vm->type_names[i]);
        }
        for (int i = 0; i < VM_STATUS_COUNT; i++)
            free_value(ctx, &vm->status_names[i]);
        for (uint16_t i = 0; vm->scope && i < vm->plan->nscope; i++) {
            free_value(ctx, &vm->scope[i].ctx);
            free_value(ctx, &vm->scope[i].provider);
            free_value(ctx, &vm->scope[i].symbol);
        }
        for (int l = 0; l < VM_LAYOUTS; l++) {
            for (uint32_t i = 0; i < vm->layouts[l].n; i++)
                JS_FreeValue(ctx, vm->layouts[l].prefixes[i]);
        }
        while (vm->nspare_lazy > 0)
            js_free(ctx, vm->spare_lazy[--vm->nspare_lazy]);
        for (int l = 0; l < VM_LAZY_LAYOUTS; l++)
            free_value(ctx, &vm->spare_obj[l]);
        for (int i = 0; i < A_COUNT; i++) {
            if (vm->atoms[i] != JS_ATOM_NULL)
                JS_FreeAtom(ctx, vm->atoms[i]);
            vm->atoms[i] = JS_ATOM_NULL;
        }
    }
    for (int l = 0; l < VM_LAYOUTS; l++) {
        free(vm->layouts[l].prefixes);
        vm->layouts[l].prefixes = NULL;
        vm->layouts[l].n = 0;
    }
    js_sandbox_free(&vm->sb);
    memset(&vm->sb, 0, sizeof vm->sb);
}

void vm_free_shell(struct vm *vm)
{
    free(vm->sub_keys);
    free(vm->sub_index);
    free(vm->scope);
    runtime_plan_free(vm->plan);
    free(vm);
}

void vm_destroy(struct worker *w, struct vm *vm)
{
    if (vm->dead)
        return;
    host_log_flush(vm);
    release_js(w, vm);
    vm->dead = true;
    worker_retire_vm(w, vm);
}

/* ------------------------------------------------------------ failures */

static const char *failure_reason(enum js_failure failure)
{
    switch (failure) {
    case JS_FAILURE_BUDGET:
        return "cpuBudget";
    case JS_FAILURE_MEMORY:
        return "memoryLimit";
    case JS_FAILURE_STACK:
        return "stackOverflow";
    case JS_FAILURE_EXCEPTION:
        break;
    }
    return NULL;
}

static void stop_failed(struct worker *w, struct vm *vm, const char *reason, const char *handler,
                        const char *message)
{
    struct instance *inst = vm->inst;
    vm_destroy(w, vm);
    if (inst->vm == vm) {
        inst->vm = NULL;
        atomic_store_explicit(&inst->memory, 0, memory_order_relaxed);
    }
    /* while the instance still counts as running, so no start comes first */
    rtx_abandon_orders(w->rt, inst, reason);
    rtx_instance_failed(w->rt, inst, reason, handler, message);
}

/* A plain exception: logged (rate-limited with helpers.log), counted, and a
 * long enough streak stops the instance. */
/* Logs a handler's error, counts it and makes it the instance's lastError. */
static void record_exception(struct worker *w, struct vm *vm, const char *handler,
                             const char *message, const struct js_exception *ex)
{
    struct instance *inst = vm->inst;
    counter_add(&inst->errors, 1);
    counter_add(&w->errors, 1);
    rtx_count_error(w->rt, vm->plan->strategy, vm->plan->hash);
    if (host_log_admit(w, vm)) {
        const char *name = ex && ex->name ? ex->name : "Error";
        json_t *extra = json_pack("{s:s, s:o}", "handler", handler, "error",
                                  jsonutil_string_lossy(name, strlen(name)));
        if (extra && ex && ex->stack && *ex->stack)
            json_object_set_new(extra, "stack",
                                jsonutil_string_lossy(ex->stack, strlen(ex->stack)));
        if (extra && ex && ex->line > 0) {
            json_object_set_new(extra, "line", json_integer(ex->line));
            json_object_set_new(extra, "column", json_integer(ex->column));
        }
        host_log(vm, LOG_LEVEL_WARN, message, extra);
    }
    pthread_mutex_lock(&w->rt->lock);
    /* the texts are valid UTF-8 (js_text_clean); lossy all the same, since
     * a lastError that cannot be built would erase the previous one */
    json_t *last = json_pack("{s:s, s:o, s:I}", "handler", handler, "message",
                             jsonutil_string_lossy(message, strlen(message)), "atMs",
                             (json_int_t)clock_wall_ms());
    json_decref(inst->last_error);
    inst->last_error = last;
    pthread_mutex_unlock(&w->rt->lock);
}

static void count_exception(struct worker *w, struct vm *vm, const char *handler,
                            const char *message, const struct js_exception *ex)
{
    record_exception(w, vm, handler, message, ex);
    if (++vm->consecutive_errors >= vm->plan->max_errors) {
        char text[ERR_MESSAGE_MAX];
        snprintf(text, sizeof text, "%d consecutive errors; last: %.440s", vm->consecutive_errors,
                 message);
        js_text_fit(text);
        stop_failed(w, vm, "tooManyErrors", handler, text);
    }
}

/* A call that hit the heap cap and caught the out-of-memory error (or had
 * a host allocation refused) still ends the instance, as the limits say:
 * at its cap, any allocation of its next update of its state can fail
 * half-way. */
static void stop_caught_memory(struct worker *w, struct vm *vm, const char *handler)
{
    char message[ERR_MESSAGE_MAX];
    snprintf(message, sizeof message,
             "InternalError: out of memory (the heap reached its cap of %zu MiB; the error was "
             "caught)",
             vm->plan->limits.memory_bytes >> 20);
    stop_failed(w, vm, "memoryLimit", handler, message); /* frees what the VM held */
}

/* The same for a call that recursed past the stack limit and caught the
 * error: far down a recursion, a catch cannot know how much of the state
 * above it was left half-updated. */
static void stop_caught_stack_overflow(struct worker *w, struct vm *vm, const char *handler)
{
    char message[ERR_MESSAGE_MAX];
    snprintf(message, sizeof message,
             "InternalError: stack overflow (recursed past the stack limit of %zu KiB; the error "
             "was caught)",
             vm->sb.limits.stack_bytes >> 10);
    stop_failed(w, vm, "stackOverflow", handler, message); /* frees what the VM held */
}

/* Takes the pending exception and acts on it. */
static void call_failed(struct worker *w, struct vm *vm, const char *handler)
{
    struct js_exception ex;
    memset(&ex, 0, sizeof ex);
    js_sandbox_take_exception(&vm->sb, vm->plan->filename, &ex);
    enum js_failure failure = ex.failure;
    /* A call that hit its heap cap or stack limit, caught the error and ran
     * on past its budget stops for the limit it hit first: raising the
     * budget would not have saved it. */
    if (failure == JS_FAILURE_BUDGET && vm->sb.out_of_memory) {
        js_exception_free(&ex);
        stop_caught_memory(w, vm, handler);
        return;
    }
    if (failure == JS_FAILURE_BUDGET && js_sandbox_stack_overflowed(&vm->sb)) {
        js_exception_free(&ex);
        stop_caught_stack_overflow(w, vm, handler);
        return;
    }
    char message[ERR_MESSAGE_MAX], where[256];
    js_exception_where(&ex, vm->plan->filename, where, sizeof where);
    if (failure == JS_FAILURE_BUDGET)
        snprintf(message, sizeof message,
                 "%s ran past its CPU budget of %lld ms (cpu_budget_ms) and was interrupted%s%s",
                 handler, (long long)(vm->budget_ns / 1000000), *where ? " " : "", where);
    else if (failure != JS_FAILURE_EXCEPTION && *where)
        snprintf(message, sizeof message, "%s%s%s %s", ex.name ? ex.name : "Error",
                 ex.message ? ": " : "", ex.message ? ex.message : "", where);
    else
        snprintf(message, sizeof message, "%s%s%s", ex.name ? ex.name : "Error",
                 ex.message ? ": " : "", ex.message ? ex.message : "");
    js_text_fit(message);
    const char *reason = failure_reason(failure);
    if (reason)
        stop_failed(w, vm, reason, handler, message);
    else
        count_exception(w, vm, handler, message, &ex);
    js_exception_free(&ex);
}

/* Text of a rejection reason: "Name: message" for errors, else String(v). */
static void describe_reason(JSContext *ctx, JSValueConst v, char *out, size_t size, char **stack)
{
    *stack = NULL;
    char *text = js_text_of(ctx, v, size);
    snprintf(out, size, "unhandled promise rejection: %s", text ? text : "(unprintable)");
    js_text_fit(out);
    free(text);
    if (JS_HasException(ctx))
        JS_FreeValue(ctx, JS_GetException(ctx));
    if (JS_IsError(ctx, v)) {
        JSValue s = JS_GetPropertyStr(ctx, v, "stack");
        if (JS_IsString(s))
            *stack = js_text_of(ctx, s, JS_EXCEPTION_STACK_MAX);
        if (JS_HasException(ctx))
            JS_FreeValue(ctx, JS_GetException(ctx));
        JS_FreeValue(ctx, s);
    }
}

/* An async handler that rejected, or a promise rejected without a catch;
 * `counted` toward max_consecutive_errors, except the start's (a start
 * that ends in a stop is no start). */
static void report_rejection(struct worker *w, struct vm *vm, const char *handler, bool counted)
{
    char message[ERR_MESSAGE_MAX];
    char *stack = NULL;
    /* the reason's toString and getters are strategy code: budget them too */
    js_sandbox_arm(&vm->sb, REASON_BUDGET_NS);
    describe_reason(vm->sb.ctx, vm->rejection, message, sizeof message, &stack);
    js_sandbox_disarm(&vm->sb);
    free_value(vm->sb.ctx, &vm->rejection);
    vm->unhandled = 0;
    struct js_exception ex = {JS_FAILURE_EXCEPTION, "UnhandledRejection", message, stack, 0, 0};
    if (counted)
        count_exception(w, vm, handler, message, &ex);
    else
        record_exception(w, vm, handler, message, &ex);
    free(stack);
}

static void on_rejection(JSContext *ctx, JSValueConst promise, JSValueConst reason,
                         JS_BOOL is_handled, void *opaque)
{
    (void)promise;
    struct vm *vm = opaque;
    if (!is_handled) {
        if (vm->unhandled++ == 0) {
            JS_FreeValue(ctx, vm->rejection);
            vm->rejection = JS_DupValue(ctx, reason);
        }
    } else if (vm->unhandled > 0) {
        vm->unhandled--;
    }
}

/* ------------------------------------------------------------ calls */

static int drain_jobs(struct vm *vm)
{
    if (!JS_IsJobPending(vm->sb.rt) && !vm->sb.overran)
        return 0;
    return js_sandbox_run_jobs(&vm->sb);
}

/* Consumes the result of a call: frees it and drains the job queue. */
static int settle(struct vm *vm, JSValue result)
{
    if (JS_IsException(result))
        return -1;
    JS_FreeValue(vm->sb.ctx, result);
    return drain_jobs(vm);
}

static void after_call(struct worker *w, struct vm *vm, int rc, const char *handler)
{
    char why[ERR_MESSAGE_MAX];
    if (host_risk_stop_due(vm, why, sizeof why)) {
        if (rc != 0) /* most likely the refusal itself, thrown on */
            JS_FreeValue(vm->sb.ctx, JS_GetException(vm->sb.ctx));
        stop_failed(w, vm, "riskBreaches", handler, why);
        return;
    }
    if (rc != 0) {
        call_failed(w, vm, handler);
        return;
    }
    if (vm->sb.out_of_memory) {
        stop_caught_memory(w, vm, handler);
        return;
    }
    if (js_sandbox_stack_overflowed(&vm->sb)) {
        stop_caught_stack_overflow(w, vm, handler);
        return;
    }
    if (vm->unhandled > 0) {
        report_rejection(w, vm, handler, true);
        return;
    }
    if (!JS_IsUndefined(vm->rejection))
        free_value(vm->sb.ctx, &vm->rejection);
    vm->consecutive_errors = 0;
    atomic_store_explicit(&vm->inst->memory, (uint64_t)vm->sb.heap_bytes, memory_order_relaxed);
}

static void observe(struct worker *w, int handler, int64_t ns)
{
    size_t b = metrics_bucket_of(runtime_hist_bounds, HIST_BUCKETS, ns);
    counter_add(&w->hist[handler][b], 1);
    counter_add(&w->hist_sum_ns[handler], (uint64_t)(ns > 0 ? ns : 0));
}

/* ------------------------------------------------------------ objects */

/* 1 when the value could not be made (an allocation refused at the heap
 * cap) or the definition failed (JS_DefinePropertyValue returns -1 then,
 * having freed v). A value that failed must not become a property: the
 * handler would run with the exception pending, and the sandbox lets a
 * pending exception's unwinding go past the cap. */
static inline int put(JSContext *ctx, JSValueConst obj, JSAtom atom, JSValue v)
{
    if (JS_IsException(v))
        return 1;
    return JS_DefinePropertyValue(ctx, obj, atom, v, JS_PROP_C_W_E) < 0;
}

static inline JSValue num(JSContext *ctx, double d)
{
    return JS_NewFloat64(ctx, d);
}

static JSValue make_ctx(struct vm *vm, JSContext *ctx, const struct vm_scope *sc)
{
    JSValue o = JS_NewObject(ctx);
    if (JS_IsException(o))
        return o;
    const struct vm_plan *plan = vm->plan;
    int bad = 0;
    bad |= put(ctx, o, vm->atoms[A_INSTANCE_ID], JS_NewString(ctx, vm->inst->id));
    bad |= put(ctx, o, vm->atoms[A_STRATEGY], JS_NewString(ctx, plan->strategy));
    bad |= put(ctx, o, vm->atoms[A_HASH], JS_NewString(ctx, plan->hash));
    bad |= put(ctx, o, vm->atoms[A_PROVIDER], JS_DupValue(ctx, sc->provider));
    bad |= put(ctx, o, vm->atoms[A_SYMBOL], JS_DupValue(ctx, sc->symbol));
    if (bad) {
        JS_FreeValue(ctx, o);
        return JS_EXCEPTION;
    }
    return o;
}

/* Fills the names and the ctx object of a scope entry on first use. */
static int scope_ready(struct vm *vm, JSContext *ctx, struct vm_scope *sc, uint16_t provider,
                       uint16_t symbol)
{
    if (JS_IsUndefined(sc->provider)) {
        sc->provider = JS_NewString(ctx, intern_name(provider));
        if (JS_IsException(sc->provider))
            return -1;
    }
    if (JS_IsUndefined(sc->symbol)) {
        sc->symbol = symbol ? JS_NewString(ctx, intern_name(symbol)) : JS_NULL;
        if (JS_IsException(sc->symbol))
            return -1;
    }
    if (JS_IsUndefined(sc->ctx)) {
        sc->ctx = make_ctx(vm, ctx, sc);
        if (JS_IsException(sc->ctx)) {
            sc->ctx = JS_UNDEFINED;
            return -1;
        }
    }
    return 0;
}

static int put_trade(struct vm *vm, JSContext *ctx, JSValueConst o, const struct event_trade *t)
{
    int bad = 0;
    bad |= put(ctx, o, vm->atoms[A_PRICE], num(ctx, t->price));
    bad |= put(ctx, o, vm->atoms[A_QUANTITY], num(ctx, t->quantity));
    bad |= put(ctx, o, vm->atoms[A_SIDE], JS_DupValue(ctx, vm->side_names[t->side & 1]));
    bad |= put(ctx, o, vm->atoms[A_TRADE_ID], JS_NewInt64(ctx, (int64_t)t->trade_id));
    return bad;
}

static int put_ticker(struct vm *vm, JSContext *ctx, JSValueConst o, const struct event_ticker *t)
{
    int bad = 0;
    bad |= put(ctx, o, vm->atoms[A_LAST], num(ctx, t->last));
    bad |= put(ctx, o, vm->atoms[A_BID], num(ctx, t->bid));
    bad |= put(ctx, o, vm->atoms[A_ASK], num(ctx, t->ask));
    bad |= put(ctx, o, vm->atoms[A_BID_SIZE], num(ctx, t->bid_size));
    bad |= put(ctx, o, vm->atoms[A_ASK_SIZE], num(ctx, t->ask_size));
    bad |= put(ctx, o, vm->atoms[A_VOLUME], num(ctx, t->volume));
    return bad;
}

static JSValue make_levels(JSContext *ctx, const struct book_level *levels, uint32_t n)
{
    JSValue arr = JS_NewArray(ctx);
    if (JS_IsException(arr))
        return arr;
    for (uint32_t i = 0; i < n; i++) {
        JSValue pair = JS_NewArray(ctx);
        if (JS_IsException(pair))
            goto fail;
        if (JS_DefinePropertyValueUint32(ctx, pair, 0, num(ctx, levels[i].price), JS_PROP_C_W_E) <
                0 ||
            JS_DefinePropertyValueUint32(ctx, pair, 1, num(ctx, levels[i].quantity),
                                         JS_PROP_C_W_E) < 0) {
            JS_FreeValue(ctx, pair);
            goto fail;
        }
        if (JS_DefinePropertyValueUint32(ctx, arr, i, pair, JS_PROP_C_W_E) < 0)
            goto fail; /* pair went with the failure */
    }
    return arr;
fail:
    JS_FreeValue(ctx, arr);
    return JS_EXCEPTION;
}

static int put_book(struct vm *vm, JSContext *ctx, JSValueConst o, const struct event_book *b)
{
    int bad = 0;
    bad |= put(ctx, o, vm->atoms[A_BIDS], make_levels(ctx, b->levels, b->depth));
    bad |= put(ctx, o, vm->atoms[A_ASKS], make_levels(ctx, b->levels + b->depth, b->depth));
    return bad;
}

static int put_kline(struct vm *vm, JSContext *ctx, JSValueConst o, const struct event_kline *k)
{
    int bad = 0;
    bad |= put(ctx, o, vm->atoms[A_START], JS_NewInt64(ctx, k->start_ms));
    bad |= put(ctx, o, vm->atoms[A_END], JS_NewInt64(ctx, k->end_ms));
    bad |= put(ctx, o, vm->atoms[A_OPEN], num(ctx, k->open));
    bad |= put(ctx, o, vm->atoms[A_HIGH], num(ctx, k->high));
    bad |= put(ctx, o, vm->atoms[A_LOW], num(ctx, k->low));
    bad |= put(ctx, o, vm->atoms[A_CLOSE], num(ctx, k->close));
    bad |= put(ctx, o, vm->atoms[A_VOLUME], num(ctx, k->volume));
    bad |= put(ctx, o, vm->atoms[A_TRADES], JS_NewInt64(ctx, k->trades));
    return bad;
}

static JSValue bounded_string(JSContext *ctx, const char *s, size_t max)
{
    return JS_NewStringLen(ctx, s, strnlen(s, max));
}

static int put_balance(struct vm *vm, JSContext *ctx, JSValueConst o, const struct event_balance *b)
{
    int bad = 0;
    bad |= put(ctx, o, vm->atoms[A_ASSET], bounded_string(ctx, b->asset, sizeof b->asset));
    bad |= put(ctx, o, vm->atoms[A_TOTAL], num(ctx, b->total));
    bad |= put(ctx, o, vm->atoms[A_AVAILABLE], num(ctx, b->available));
    return bad;
}

static int put_exec(struct vm *vm, JSContext *ctx, JSValueConst o, const struct event_exec *x)
{
    JSAtom *a = vm->atoms;
    unsigned status = (unsigned)x->status < VM_STATUS_COUNT ? (unsigned)x->status : EXEC_REJECTED;
    int bad = 0;
    bad |= put(ctx, o, a[A_CLIENT_ORDER_ID],
               bounded_string(ctx, x->client_order_id, sizeof x->client_order_id));
    bad |= put(ctx, o, a[A_ORDER_ID], bounded_string(ctx, x->order_id, sizeof x->order_id));
    bad |= put(ctx, o, a[A_STATUS], JS_DupValue(ctx, vm->status_names[status]));
    bad |= put(ctx, o, a[A_SIDE], JS_DupValue(ctx, vm->side_names[x->side & 1]));
    bad |= put(ctx, o, a[A_TYPE], JS_DupValue(ctx, vm->type_names[x->type & 1]));
    bad |= put(ctx, o, a[A_QUANTITY], num(ctx, x->quantity));
    bad |= put(ctx, o, a[A_PRICE], num(ctx, x->price));
    bad |= put(ctx, o, a[A_LAST_QUANTITY], num(ctx, x->last_quantity));
    bad |= put(ctx, o, a[A_LAST_PRICE], num(ctx, x->last_price));
    bad |= put(ctx, o, a[A_FILLED_QUANTITY], num(ctx, x->filled_quantity));
    bad |= put(ctx, o, a[A_REMAINING_QUANTITY], num(ctx, x->remaining_quantity));
    bad |= put(ctx, o, a[A_AVERAGE_PRICE], num(ctx, x->average_price));
    bad |= put(ctx, o, a[A_FEE], num(ctx, x->fee));
    bad |= put(ctx, o, a[A_FEE_ASSET], bounded_string(ctx, x->fee_asset, sizeof x->fee_asset));
    bad |= put(ctx, o, a[A_DRY_RUN], JS_NewBool(ctx, x->dry_run));
    bad |= put(ctx, o, a[A_REASON], bounded_string(ctx, x->reason, sizeof x->reason));
    return bad;
}

int vm_put_instrument(struct vm *vm, JSContext *ctx, JSValueConst o,
                      const struct event_instrument *i)
{
    int bad = 0;
    bad |= put(ctx, o, vm->atoms[A_TICK_SIZE], num(ctx, i->tick_size));
    bad |= put(ctx, o, vm->atoms[A_LOT_SIZE], num(ctx, i->lot_size));
    bad |= put(ctx, o, vm->atoms[A_MIN_QUANTITY], num(ctx, i->min_quantity));
    bad |= put(ctx, o, vm->atoms[A_TRADING], JS_NewBool(ctx, i->trading));
    return bad;
}

static JSValue make_payload(struct vm *vm, JSContext *ctx, const struct event *ev)
{
    JSValue o = JS_NewObject(ctx);
    if (JS_IsException(o))
        return o;
    int bad = 0;
    switch ((enum event_kind)ev->kind) {
    case EVENT_TRADE:
        bad = put_trade(vm, ctx, o, &ev->u.trade);
        break;
    case EVENT_TICKER:
        bad = put_ticker(vm, ctx, o, &ev->u.ticker);
        break;
    case EVENT_BOOK_SNAPSHOT:
        bad = put_book(vm, ctx, o, &ev->u.book);
        break;
    case EVENT_KLINE_SUMMARY:
        bad = put_kline(vm, ctx, o, &ev->u.kline);
        break;
    case EVENT_BALANCE_UPDATE:
        bad = put_balance(vm, ctx, o, &ev->u.balance);
        break;
    case EVENT_EXEC_REPORT:
        bad = put_exec(vm, ctx, o, &ev->u.exec);
        break;
    case EVENT_INSTRUMENT_UPDATE:
        bad = vm_put_instrument(vm, ctx, o, &ev->u.instrument);
        break;
    case EVENT_RISK_CONTROL:
        bad = put(ctx, o, vm->atoms[A_REASON],
                  bounded_string(ctx, ev->u.risk.reason, sizeof ev->u.risk.reason));
        break;
    case EVENT_EXTENSION:
    case EVENT_KIND_COUNT:
        break;
    }
    if (bad) {
        JS_FreeValue(ctx, o);
        return JS_EXCEPTION;
    }
    return o;
}

/* ------------------------------------------------------------ lazy objects */

/* evt and the payloads of the frequent kinds (Trade, Ticker) are objects of
 * a class of their own whose properties are read from a C copy of the
 * event until anything but a read happens: one object and one small block
 * per argument instead of a property definition per field (most of a
 * delivery's cost). To strategies they are ordinary objects: their
 * prototype is Object.prototype and every field is an own, enumerable,
 * writable, configurable data property, so reads, `in`, Object.keys,
 * JSON.stringify, spread and for-in see what a plain object shows. Any
 * write, definition, deletion or preventExtensions first turns the fields
 * into real properties ("materialises" the object), after which QuickJS
 * handles it as a plain object. */
enum lazy_layout { LAZY_EVT, LAZY_TRADE, LAZY_TICKER, LAZY_LAYOUTS };
_Static_assert(LAZY_LAYOUTS == VM_LAZY_LAYOUTS, "struct vm keeps a spare object per layout");

static const uint8_t lazy_fields[LAZY_LAYOUTS][6] = {
    [LAZY_EVT] = {A_TYPE, A_PROVIDER, A_SYMBOL, A_SEQ, A_TS},
    [LAZY_TRADE] = {A_PRICE, A_QUANTITY, A_SIDE, A_TRADE_ID},
    [LAZY_TICKER] = {A_LAST, A_BID, A_ASK, A_BID_SIZE, A_ASK_SIZE, A_VOLUME},
};
static const uint8_t lazy_count[LAZY_LAYOUTS] = {5, 4, 6};

struct lazy {
    struct vm *vm; /* only read while the VM runs JS; never by the finalizer */
    uint8_t layout;
    bool materialised;
    uint8_t kind;
    JSValue provider, symbol; /* evt: owned references */
    uint64_t seq;
    int64_t ts;
    union {
        struct event_trade trade;
        struct event_ticker ticker;
    } u;
};

static JSClassID lazy_class_id;
static pthread_once_t lazy_class_once = PTHREAD_ONCE_INIT;

static void lazy_class_id_new(void)
{
    JS_NewClassID(&lazy_class_id);
}

static struct lazy *lazy_of(JSValueConst obj)
{
    return JS_GetOpaque(obj, lazy_class_id);
}

static int lazy_index(const struct lazy *lo, JSAtom atom)
{
    for (int i = 0; i < lazy_count[lo->layout]; i++) {
        if (lo->vm->atoms[lazy_fields[lo->layout][i]] == atom)
            return i;
    }
    return -1;
}

/* The values evt and the plain payloads carried before (see put_trade). */
static JSValue lazy_value(JSContext *ctx, const struct lazy *lo, int i)
{
    const struct vm *vm = lo->vm;
    switch (lo->layout * 8 + i) {
    case LAZY_EVT * 8 + 0:
        return JS_DupValue(ctx, vm->kind_names[lo->kind]);
    case LAZY_EVT * 8 + 1:
        return JS_DupValue(ctx, lo->provider);
    case LAZY_EVT * 8 + 2:
        return JS_DupValue(ctx, lo->symbol);
    case LAZY_EVT * 8 + 3:
        return JS_NewInt64(ctx, (int64_t)lo->seq);
    case LAZY_EVT * 8 + 4:
        return JS_NewInt64(ctx, lo->ts);
    case LAZY_TRADE * 8 + 0:
        return num(ctx, lo->u.trade.price);
    case LAZY_TRADE * 8 + 1:
        return num(ctx, lo->u.trade.quantity);
    case LAZY_TRADE * 8 + 2:
        return JS_DupValue(ctx, vm->side_names[lo->u.trade.side & 1]);
    case LAZY_TRADE * 8 + 3:
        return JS_NewInt64(ctx, (int64_t)lo->u.trade.trade_id);
    case LAZY_TICKER * 8 + 0:
        return num(ctx, lo->u.ticker.last);
    case LAZY_TICKER * 8 + 1:
        return num(ctx, lo->u.ticker.bid);
    case LAZY_TICKER * 8 + 2:
        return num(ctx, lo->u.ticker.ask);
    case LAZY_TICKER * 8 + 3:
        return num(ctx, lo->u.ticker.bid_size);
    case LAZY_TICKER * 8 + 4:
        return num(ctx, lo->u.ticker.ask_size);
    case LAZY_TICKER * 8 + 5:
        return num(ctx, lo->u.ticker.volume);
    default:
        return JS_UNDEFINED;
    }
}

/* Turns the fields into real properties, in their order; from then on the
 * hooks below only guard extensibility. */
static int lazy_materialise(JSContext *ctx, JSValueConst obj, struct lazy *lo)
{
    if (lo->materialised)
        return 0;
    lo->materialised = true;
    for (int i = 0; i < lazy_count[lo->layout]; i++) {
        JSAtom atom = lo->vm->atoms[lazy_fields[lo->layout][i]];
        JSValue v = lazy_value(ctx, lo, i);
        if (JS_IsException(v) ||
            JS_DefinePropertyValue(ctx, obj, atom, v, JS_PROP_C_W_E | JS_PROP_NO_EXOTIC) < 0)
            return -1;
    }
    return 0;
}

static int lazy_get_own_property(JSContext *ctx, JSPropertyDescriptor *desc, JSValueConst obj,
                                 JSAtom prop)
{
    struct lazy *lo = lazy_of(obj);
    int i = lo && !lo->materialised ? lazy_index(lo, prop) : -1;
    if (i < 0)
        return 0;
    if (desc) {
        JSValue v = lazy_value(ctx, lo, i);
        if (JS_IsException(v)) /* a string refused at the heap cap: the read throws */
            return -1;
        desc->flags = JS_PROP_C_W_E;
        desc->value = v;
        desc->getter = JS_UNDEFINED;
        desc->setter = JS_UNDEFINED;
    }
    return 1;
}

static int lazy_get_own_property_names(JSContext *ctx, JSPropertyEnum **ptab, uint32_t *plen,
                                       JSValueConst obj)
{
    struct lazy *lo = lazy_of(obj);
    uint32_t n = lo && !lo->materialised ? lazy_count[lo->layout] : 0;
    JSPropertyEnum *tab = js_mallocz(ctx, sizeof(*tab) * (n ? n : 1));
    if (!tab)
        return -1;
    for (uint32_t i = 0; i < n; i++) {
        tab[i].atom = JS_DupAtom(ctx, lo->vm->atoms[lazy_fields[lo->layout][i]]);
        tab[i].is_enumerable = 1;
    }
    *ptab = tab;
    *plen = n;
    return 0;
}

/* Only reached for a name the object's own properties lack. */
static int lazy_delete_property(JSContext *ctx, JSValueConst obj, JSAtom prop)
{
    struct lazy *lo = lazy_of(obj);
    if (!lo || lo->materialised || lazy_index(lo, prop) < 0)
        return 1;
    if (lazy_materialise(ctx, obj, lo) < 0)
        return -1;
    return JS_DeleteProperty(ctx, obj, prop, 0);
}

static int lazy_define_own_property(JSContext *ctx, JSValueConst obj, JSAtom prop, JSValueConst val,
                                    JSValueConst getter, JSValueConst setter, int flags)
{
    struct lazy *lo = lazy_of(obj);
    if (lo && lazy_materialise(ctx, obj, lo) < 0)
        return -1;
    return JS_DefineProperty(ctx, obj, prop, val, getter, setter, flags | JS_PROP_NO_EXOTIC);
}

/* Materialises (a non-extensible object could not take its fields), then
 * lets QuickJS do the rest: with the hook unset for the duration of the
 * call, which is why each VM has its own copy of the hooks. */
static int lazy_prevent_extensions(JSContext *ctx, JSValueConst obj)
{
    struct lazy *lo = lazy_of(obj);
    if (!lo)
        return 1;
    if (lazy_materialise(ctx, obj, lo) < 0)
        return -1;
    JSClassExoticMethods *hooks = &lo->vm->lazy_hooks;
    hooks->prevent_extensions = NULL;
    int rc = JS_PreventExtensions(ctx, obj);
    hooks->prevent_extensions = lazy_prevent_extensions;
    return rc;
}

static void lazy_finalizer(JSRuntime *rt, JSValue obj)
{
    struct lazy *lo = lazy_of(obj);
    if (!lo)
        return;
    JS_FreeValueRT(rt, lo->provider);
    JS_FreeValueRT(rt, lo->symbol);
    js_free_rt(rt, lo);
}

static const JSClassExoticMethods lazy_exotic = {
    .get_own_property = lazy_get_own_property,
    .get_own_property_names = lazy_get_own_property_names,
    .delete_property = lazy_delete_property,
    .define_own_property = lazy_define_own_property,
    .prevent_extensions = lazy_prevent_extensions,
};

/* Registers the class in a new VM's runtime, with Object.prototype as the
 * prototype of its objects. */
void vm_classes_register(void)
{
    pthread_once(&lazy_class_once, lazy_class_id_new);
}

static int lazy_class_init(struct vm *vm)
{
    vm_classes_register();
    JSContext *ctx = vm->sb.ctx;
    vm->lazy_hooks = lazy_exotic;
    JSClassDef def = {
        .class_name = "Object", .finalizer = lazy_finalizer, .exotic = &vm->lazy_hooks};
    if (JS_NewClass(vm->sb.rt, lazy_class_id, &def) < 0)
        return -1;
    JSValue plain = JS_NewObject(ctx);
    if (JS_IsException(plain))
        return -1;
    JSValue proto = JS_GetPrototype(ctx, plain);
    JS_FreeValue(ctx, plain);
    if (JS_IsException(proto))
        return -1;
    JS_SetClassProto(ctx, lazy_class_id, proto);
    return 0;
}

static JSValue lazy_new(struct vm *vm, JSContext *ctx, enum lazy_layout layout, struct lazy **out)
{
    JSValue kept = vm->spare_obj[layout];
    if (JS_VALUE_GET_TAG(kept) == JS_TAG_OBJECT) {
        vm->spare_obj[layout] = JS_UNDEFINED;
        *out = lazy_of(kept);
        return kept;
    }
    struct lazy *lo =
        vm->nspare_lazy > 0 ? vm->spare_lazy[--vm->nspare_lazy] : js_malloc(ctx, sizeof *lo);
    if (!lo)
        return JS_EXCEPTION;
    JSValue o = JS_NewObjectClass(ctx, (int)lazy_class_id);
    if (JS_IsException(o)) {
        js_free(ctx, lo);
        return o;
    }
    lo->vm = vm;
    lo->layout = (uint8_t)layout;
    lo->materialised = false;
    lo->provider = JS_UNDEFINED;
    lo->symbol = JS_UNDEFINED;
    JS_SetOpaque(o, lo);
    *out = lo;
    return o;
}

/* Points `*slot` at `v`: a kept evt usually meets the same scope's names
 * again, and then neither count changes. */
static void hold_value(JSContext *ctx, JSValue *slot, JSValueConst v)
{
    bool same = JS_VALUE_GET_TAG(*slot) == JS_VALUE_GET_TAG(v) &&
                (!JS_VALUE_HAS_REF_COUNT(v) || JS_VALUE_GET_PTR(*slot) == JS_VALUE_GET_PTR(v));
    if (same)
        return;
    JS_FreeValue(ctx, *slot);
    *slot = JS_DupValue(ctx, v);
}

static JSValue make_lazy_evt(struct vm *vm, JSContext *ctx, const struct event *ev,
                             const struct vm_scope *sc)
{
    struct lazy *lo = NULL;
    JSValue o = lazy_new(vm, ctx, LAZY_EVT, &lo);
    if (JS_IsException(o))
        return o;
    lo->kind = ev->kind;
    hold_value(ctx, &lo->provider, sc->provider);
    hold_value(ctx, &lo->symbol, sc->symbol);
    lo->seq = ev->seq;
    lo->ts = ev->ts_ms;
    return o;
}

/* Lets go of evt or the payload after their delivery. An object that no
 * script could tell from a new one (no other reference, no weak one, still
 * lazy and as created: JS_IsUnobservedObject, added to QuickJS by
 * scripts/install-deps.sh) is kept whole for the next delivery of its
 * layout: making and freeing two objects was half of a trivial handler's
 * delivery. Otherwise, when the object dies here, its C half goes to the
 * VM for the next delivery instead of back to the allocator, and the
 * finalizer finds none. An object the strategy holds on to, or one in a
 * cycle, keeps its C half and dies as before. */
static void free_arg(struct vm *vm, JSContext *ctx, JSValue v)
{
    struct lazy *lo = lazy_of(v);
    bool keep_whole = lo && !lo->materialised &&
                      JS_VALUE_GET_TAG(vm->spare_obj[lo->layout]) != JS_TAG_OBJECT &&
                      JS_IsUnobservedObject(ctx, v);
    bool keep_half = !keep_whole && lo && vm->nspare_lazy < VM_SPARE_LAZY &&
                     ((JSRefCountHeader *)JS_VALUE_GET_PTR(v))->ref_count == 1;
    if (keep_whole) {
        vm->spare_obj[lo->layout] = v; /* with evt's names, for the next one */
        return;
    }
    if (keep_half) {
        free_value(ctx, &lo->provider);
        free_value(ctx, &lo->symbol);
        JS_SetOpaque(v, NULL);
        vm->spare_lazy[vm->nspare_lazy++] = lo;
    }
    JS_FreeValue(ctx, v);
}

/* JS_UNDEFINED when the kind's payload is built the plain way. */
static JSValue make_lazy_payload(struct vm *vm, JSContext *ctx, const struct event *ev)
{
    struct lazy *lo = NULL;
    JSValue o = JS_UNDEFINED;
    if (ev->kind == EVENT_TRADE) {
        o = lazy_new(vm, ctx, LAZY_TRADE, &lo);
        if (lo)
            lo->u.trade = ev->u.trade;
    } else if (ev->kind == EVENT_TICKER) {
        o = lazy_new(vm, ctx, LAZY_TICKER, &lo);
        if (lo)
            lo->u.ticker = ev->u.ticker;
    }
    return o;
}

/* Keeps the shapes of `obj`'s layout alive (see struct vm_layout), once per
 * layout. Best effort: without them objects are built the slow way. */
static void keep_shapes(struct vm *vm, JSContext *ctx, int layout, JSValueConst obj)
{
    struct vm_layout *l = &vm->layouts[layout];
    if (l->prefixes)
        return;
    JSPropertyEnum *props = NULL;
    uint32_t n = 0;
    if (JS_GetOwnPropertyNames(ctx, &props, &n, obj, JS_GPN_STRING_MASK) < 0) {
        JS_FreeValue(ctx, JS_GetException(ctx));
        return;
    }
    l->prefixes = calloc(n ? n : 1, sizeof *l->prefixes);
    for (uint32_t i = 0; l->prefixes && i < n; i++) {
        JSValue o = JS_NewObject(ctx);
        for (uint32_t j = 0; j <= i && !JS_IsException(o); j++) {
            if (JS_DefinePropertyValue(ctx, o, props[j].atom, JS_UNDEFINED, JS_PROP_C_W_E) < 0) {
                JS_FreeValue(ctx, o);
                o = JS_EXCEPTION;
            }
        }
        if (JS_IsException(o)) {
            JS_FreeValue(ctx, JS_GetException(ctx));
            break;
        }
        l->prefixes[l->n++] = o;
    }
    for (uint32_t i = 0; i < n; i++)
        JS_FreeAtom(ctx, props[i].atom);
    js_free(ctx, props);
}

/* ------------------------------------------------------------ delivery */

static int find_scope(const struct vm *vm, uint16_t provider, uint16_t symbol)
{
    for (uint16_t i = 0; i < vm->plan->nscope; i++) {
        if (vm->plan->scope[i].provider == provider && vm->plan->scope[i].symbol == symbol)
            return i;
    }
    return -1;
}

/* ctx (borrowed from the scope cache), evt and payload; -1 when out of
 * memory (the exception is pending). */
static int build_args(struct vm *vm, JSContext *ctx, struct vm_scope *sc, const struct event *ev,
                      JSValue args[3])
{
    if (scope_ready(vm, ctx, sc, ev->provider, ev->symbol) != 0)
        return -1;
    args[0] = sc->ctx;
    args[1] = make_lazy_evt(vm, ctx, ev, sc);
    if (JS_IsException(args[1]))
        return -1;
    args[2] = make_lazy_payload(vm, ctx, ev);
    if (JS_IsUndefined(args[2])) {
        args[2] = make_payload(vm, ctx, ev);
        if (!JS_IsException(args[2]) && !vm->layouts[1 + ev->kind].prefixes)
            keep_shapes(vm, ctx, 1 + ev->kind, args[2]);
    }
    return JS_IsException(args[2]) ? -1 : 0;
}

/* One budget-armed entry into a handler, its promise jobs included. One
 * call in 16 of each handler is timed for the histogram: two clock reads per
 * call would be a noticeable share of a trivial handler, and a counter per
 * handler cannot lock onto a periodic mix of events and skip one. */
static int invoke(struct worker *w, struct vm *vm, int h, const struct event *ev, JSValue *args)
{
    bool timed = (++w->sample_tick[h] & 15) == 0;
    int64_t t0 = timed ? clock_mono_ns() : 0;
    js_sandbox_arm(&vm->sb, vm->budget_ns);
    host_enter(vm);
    vm->trigger_ns = ev->created_ns;
    int rc = settle(vm, JS_Call(vm->sb.ctx, vm->fn[h], vm->handlers, 3, args));
    vm->trigger_ns = 0;
    host_leave();
    js_sandbox_disarm(&vm->sb);
    if (timed)
        observe(w, h, clock_mono_ns() - t0);
    counter_add(&vm->inst->delivered, 1);
    counter_add(&w->delivered[ev->kind], 1);
    return rc;
}

void vm_deliver(struct worker *w, struct vm *vm, int scope_index, const struct event *ev)
{
    if (vm->dead)
        return;
    int h = runtime_handler_for_event(ev);
    if (h < 0 || JS_IsUndefined(vm->fn[h]))
        return; /* a missing handler costs nothing */
    JSContext *ctx = vm->sb.ctx;
    /* a directed event for a (provider, symbol) outside the scope gets a
     * throwaway ctx */
    struct vm_scope tmp = {JS_UNDEFINED, JS_UNDEFINED, JS_UNDEFINED};
    if (scope_index < 0)
        scope_index = find_scope(vm, ev->provider, ev->symbol);
    struct vm_scope *sc = scope_index >= 0 ? &vm->scope[scope_index] : &tmp;
    JSValue args[3] = {JS_UNDEFINED, JS_UNDEFINED, JS_UNDEFINED};
    int rc = build_args(vm, ctx, sc, ev, args);
    if (rc == 0)
        rc = invoke(w, vm, h, ev, args);
    free_arg(vm, ctx, args[1]);
    free_arg(vm, ctx, args[2]);
    if (sc == &tmp) {
        JS_FreeValue(ctx, tmp.ctx);
        JS_FreeValue(ctx, tmp.provider);
        JS_FreeValue(ctx, tmp.symbol);
    }
    after_call(w, vm, rc, runtime_handler_names[h]);
}

void vm_fire_timer(struct worker *w, struct timer *t)
{
    struct vm *vm = t->vm;
    if (t->kind == TIMER_LOG_FLUSH) {
        vm->log_flush_armed = false;
        vm_free_timer(vm, t);
        host_log_flush(vm);
        return;
    }
    JSContext *ctx = vm->sb.ctx;
    t->firing = true;
    int64_t t0 = clock_mono_ns();
    js_sandbox_arm(&vm->sb, vm->budget_ns);
    host_enter(vm);
    JSValue r = t->kind == TIMER_SLEEP
                    ? JS_Call(ctx, t->fn, JS_UNDEFINED, 0, NULL)
                    : JS_Call(ctx, t->fn, JS_UNDEFINED, t->argc, (JSValueConst *)t->argv);
    int rc = settle(vm, r);
    host_leave();
    js_sandbox_disarm(&vm->sb);
    int64_t now = clock_mono_ns();
    observe(w, H_TIMER, now - t0);
    t->firing = false;
    /* an interval keeps running after a plain exception, as in browsers */
    if (t->kind == TIMER_JS && t->interval_ns > 0 && !t->cancelled) {
        t->deadline_ns += t->interval_ns;
        if (t->deadline_ns <= now)
            t->deadline_ns = now + t->interval_ns;
        if (worker_timer_schedule(w, t) != 0)
            vm_free_timer(vm, t);
    } else {
        vm_free_timer(vm, t);
    }
    after_call(w, vm, rc, "timer");
}

/* ------------------------------------------------------------ start */

static int init_names(struct vm *vm)
{
    JSContext *ctx = vm->sb.ctx;
    for (int i = 0; i < A_COUNT; i++) {
        vm->atoms[i] = JS_NewAtom(ctx, atom_texts[i]);
        if (vm->atoms[i] == JS_ATOM_NULL)
            return -1;
    }
    int bad = 0;
    for (int i = 0; i < EVENT_KIND_COUNT; i++) {
        vm->kind_names[i] = JS_NewString(ctx, event_kind_name((enum event_kind)i));
        bad |= JS_IsException(vm->kind_names[i]);
    }
    for (int i = 0; i < 2; i++) {
        vm->side_names[i] = JS_NewString(ctx, order_side_name((enum order_side)i));
        vm->type_names[i] = JS_NewString(ctx, order_type_name((enum order_type)i));
        bad |= JS_IsException(vm->side_names[i]) | JS_IsException(vm->type_names[i]);
    }
    for (int i = 0; i < VM_STATUS_COUNT; i++) {
        vm->status_names[i] = JS_NewString(ctx, event_exec_status_name((enum exec_status)i));
        bad |= JS_IsException(vm->status_names[i]);
    }
    return bad ? -1 : 0;
}

static void init_values(struct vm *vm)
{
    vm->handlers = JS_UNDEFINED;
    vm->exports = JS_UNDEFINED;
    vm->env = JS_UNDEFINED;
    vm->rejection = JS_UNDEFINED;
    for (int i = 0; i < H_COUNT; i++)
        vm->fn[i] = JS_UNDEFINED;
    for (int i = 0; i < EVENT_KIND_COUNT; i++)
        vm->kind_names[i] = JS_UNDEFINED;
    for (int i = 0; i < 2; i++)
        vm->side_names[i] = vm->type_names[i] = JS_UNDEFINED;
    for (int i = 0; i < VM_STATUS_COUNT; i++)
        vm->status_names[i] = JS_UNDEFINED;
}

/* The reason a start-time call into JS failed, as a 422. */
static void start_failed(struct vm *vm, const char *what, struct err *err)
{
    struct js_exception ex;
    memset(&ex, 0, sizeof ex);
    js_sandbox_take_exception(&vm->sb, vm->plan->filename, &ex);
    switch (ex.failure) {
    case JS_FAILURE_BUDGET: {
        char where[256];
        js_exception_where(&ex, vm->plan->filename, where, sizeof where);
        err_set(err, ERR_UNPROCESSABLE, "%s ran past its CPU budget of %lld ms%s%s", what,
                (long long)(vm->budget_ns / 1000000), *where ? " " : "", where);
        break;
    }
    case JS_FAILURE_MEMORY:
        err_set(err, ERR_UNPROCESSABLE, "%s exceeded the memory limit of %zu MiB", what,
                vm->plan->limits.memory_bytes >> 20);
        break;
    case JS_FAILURE_STACK:
        err_set(err, ERR_UNPROCESSABLE, "%s overflowed the stack", what);
        break;
    case JS_FAILURE_EXCEPTION:
        /* the position in the text too: the text is what the instance's
         * lastError and the log keep of a failed start */
        if (ex.line > 0)
            err_set(err, ERR_UNPROCESSABLE, "%s threw %s: %s (%s:%d:%d)", what,
                    ex.name ? ex.name : "Error", ex.message ? ex.message : "", vm->plan->filename,
                    ex.line, ex.column);
        else
            err_set(err, ERR_UNPROCESSABLE, "%s threw %s: %s", what, ex.name ? ex.name : "Error",
                    ex.message ? ex.message : "");
        break;
    }
    err_add_detail(err, "stage", json_string(what));
    err_add_detail(
        err, "failure",
        json_string(failure_reason(ex.failure) ? failure_reason(ex.failure) : "exception"));
    if (ex.line > 0) {
        err_add_detail(err, "line", json_integer(ex.line));
        err_add_detail(err, "column", json_integer(ex.column));
    }
    js_exception_free(&ex);
}

/* Calls create(env); a promise is awaited through the job queue. */
static int call_create(struct vm *vm, JSValueConst exports, JSValueConst env, struct err *err)
{
    JSContext *ctx = vm->sb.ctx;
    js_sandbox_arm(&vm->sb, vm->budget_ns);
    JSValue create = JS_GetPropertyStr(ctx, exports, "create");
    if (JS_IsException(create)) {
        start_failed(vm, "module.exports.create", err);
        return -1;
    }
    if (!JS_IsFunction(ctx, create)) {
        JS_FreeValue(ctx, create);
        err_set(err, ERR_UNPROCESSABLE, "module.exports.create is not a function");
        return -1;
    }
    JSValue r = JS_Call(ctx, create, exports, 1, &env);
    JS_FreeValue(ctx, create);
    if (JS_IsException(r) || drain_jobs(vm) != 0) {
        JS_FreeValue(ctx, r);
        start_failed(vm, "create(env)", err);
        return -1;
    }
    int state = (int)JS_PromiseState(ctx, r);
    if (state == JS_PROMISE_FULFILLED || state == JS_PROMISE_REJECTED) {
        JSValue settled = JS_PromiseResult(ctx, r);
        JS_FreeValue(ctx, r);
        if (state == JS_PROMISE_REJECTED) {
            /* an async create(env) that failed is told as a synchronous
             * one that threw: with the failure's kind and position */
            JS_Throw(ctx, settled);
            start_failed(vm, "create(env)", err);
            return -1;
        }
        r = settled;
    } else if (state == JS_PROMISE_PENDING) {
        JS_FreeValue(ctx, r);
        err_set(err, ERR_UNPROCESSABLE, "create(env) returned a promise that did not settle");
        return -1;
    }
    if (!JS_IsObject(r) || JS_IsFunction(ctx, r) || JS_IsArray(ctx, r) > 0) {
        JS_FreeValue(ctx, r);
        err_set(err, ERR_UNPROCESSABLE, "create(env) must return an object of handlers");
        return -1;
    }
    if (vm->sb.out_of_memory) {
        JS_FreeValue(ctx, r);
        err_set(err, ERR_UNPROCESSABLE,
                "create(env) exceeded the memory limit of %zu MiB (the error was caught)",
                vm->plan->limits.memory_bytes >> 20);
        err_add_detail(err, "stage", json_string("create(env)"));
        err_add_detail(err, "failure", json_string("memoryLimit"));
        return -1;
    }
    if (js_sandbox_stack_overflowed(&vm->sb)) {
        JS_FreeValue(ctx, r);
        err_set(err, ERR_UNPROCESSABLE,
                "create(env) recursed past the stack limit of %zu KiB (the error was caught)",
                vm->sb.limits.stack_bytes >> 10);
        err_add_detail(err, "stage", json_string("create(env)"));
        err_add_detail(err, "failure", json_string("stackOverflow"));
        return -1;
    }
    vm->handlers = r;
    return 0;
}

/* What a handler property holds instead of a function, for a message. */
static const char *value_kind(JSContext *ctx, JSValueConst v)
{
    if (JS_IsString(v))
        return "a string";
    if (JS_IsNumber(v))
        return "a number";
    if (JS_IsBool(v))
        return "a boolean";
    if (JS_IsBigInt(ctx, v))
        return "a bigint";
    if (JS_IsSymbol(v))
        return "a symbol";
    return JS_IsArray(ctx, v) > 0 ? "an array" : "an object";
}

/* Handlers are read once, here: one added to the object later is never
 * called. A property that holds neither a function nor null or undefined
 * (no handler) is noted in not_fn, for check_handlers. */
static int cache_handlers(struct vm *vm, const char *not_fn[H_COUNT], struct err *err)
{
    JSContext *ctx = vm->sb.ctx;
    for (int h = 0; h < H_COUNT; h++) {
        JSValue fn = JS_GetPropertyStr(ctx, vm->handlers, runtime_handler_names[h]);
        if (JS_IsException(fn)) {
            start_failed(vm, runtime_handler_names[h], err);
            return -1;
        }
        if (JS_IsFunction(ctx, fn)) {
            vm->fn[h] = fn;
            continue;
        }
        if (!JS_IsUndefined(fn) && !JS_IsNull(fn))
            not_fn[h] = value_kind(ctx, fn);
        JS_FreeValue(ctx, fn);
    }
    return 0;
}

/* Whether events reach handler h: those of a subscribed kind, and
 * execution reports always (they are directed at the instance that placed
 * the order, whatever it subscribed to). */
static bool handler_receives(const struct vm *vm, int h)
{
    for (int k = 0; k < EVENT_KIND_COUNT; k++) {
        if (runtime_handler_for_kind((enum event_kind)k) == h)
            return (vm->events & (1u << k)) != 0;
    }
    return true;
}

/* A handler the instance would receive events for but that is no function
 * (an onTrade of 5, a misplaced object) would never be called: the start
 * fails, naming it, rather than run deaf to those events. */
static int check_handlers(struct vm *vm, const char *const not_fn[H_COUNT], struct err *err)
{
    for (int h = 0; h < H_COUNT; h++) {
        if (!not_fn[h] || !handler_receives(vm, h))
            continue;
        err_set(err, ERR_UNPROCESSABLE,
                "create(env) returned handlers whose %s is %s, not a function: it would never be "
                "called",
                runtime_handler_names[h], not_fn[h]);
        err_add_detail(err, "stage", json_string("create(env)"));
        return -1;
    }
    return 0;
}

/* The handler a misspelt name most likely meant: the one sharing the
 * longest start with it, case aside (at least "on" and two letters). */
static const char *closest_handler(const char *name)
{
    const char *best = NULL;
    size_t best_len = 3;
    for (int h = 0; h < H_COUNT; h++) {
        const char *known = runtime_handler_names[h];
        size_t n = 0;
        while (name[n] && known[n] &&
               tolower((unsigned char)name[n]) == tolower((unsigned char)known[n]))
            n++;
        if (n > best_len) {
            best_len = n;
            best = known;
        }
    }
    return best;
}

static bool is_handler_name(const char *name)
{
    for (int h = 0; h < H_COUNT; h++)
        if (strcmp(name, runtime_handler_names[h]) == 0)
            return true;
    return false;
}

/* A function create(env) returned under a name like a handler's that the
 * gateway never calls (`onTrades`, `onOrderFill`): no error, since a
 * strategy may keep helpers there, but a warning in the instance's log,
 * for a market maker whose fills handler is never called otherwise finds
 * out from its inventory. */
static void warn_unknown_handlers(struct vm *vm)
{
    JSContext *ctx = vm->sb.ctx;
    JSPropertyEnum *props = NULL;
    uint32_t n = 0;
    if (JS_GetOwnPropertyNames(ctx, &props, &n, vm->handlers,
                               JS_GPN_STRING_MASK | JS_GPN_ENUM_ONLY) != 0) {
        JS_FreeValue(ctx, JS_GetException(ctx));
        return;
    }
    for (uint32_t i = 0; i < n; i++) {
        const char *name = JS_AtomToCString(ctx, props[i].atom);
        if (name && strncasecmp(name, "on", 2) == 0 && !is_handler_name(name)) {
            JSValue v = JS_GetProperty(ctx, vm->handlers, props[i].atom);
            if (JS_IsFunction(ctx, v)) {
                const char *guess = closest_handler(name);
                char message[ERR_MESSAGE_MAX];
                snprintf(message, sizeof message,
                         "create(env) returned %.100s, which is no handler the gateway calls%s%s%s",
                         name, guess ? " (did you mean " : "", guess ? guess : "",
                         guess ? "?)" : "");
                host_log(vm, LOG_LEVEL_WARN, message, json_pack("{s:s}", "handler", "create"));
            }
            JS_FreeValue(ctx, v);
            if (JS_HasException(ctx))
                JS_FreeValue(ctx, JS_GetException(ctx));
        }
        JS_FreeCString(ctx, name);
        JS_FreeAtom(ctx, props[i].atom);
    }
    js_free(ctx, props);
}

static int event_mask_of(JSContext *ctx, JSValueConst list, uint32_t *mask, struct err *err)
{
    int64_t len = 0;
    if (JS_IsArray(ctx, list) <= 0) {
        err_set(err, ERR_UNPROCESSABLE, "subscribedEvents() must return an array of event names");
        return -1;
    }
    JSValue lv = JS_GetPropertyStr(ctx, list, "length");
    int rc = JS_ToInt64(ctx, &len, lv);
    JS_FreeValue(ctx, lv);
    if (rc < 0)
        return -1;
    *mask = 0;
    for (int64_t i = 0; i < len && i < 64; i++) {
        JSValue item = JS_GetPropertyUint32(ctx, list, (uint32_t)i);
        if (JS_IsException(item))
            return -1; /* a getter threw, or the budget ran out */
        char *name = JS_IsString(item) ? js_text_of(ctx, item, 128) : NULL;
        int k = name ? js_event_index(name) : -1;
        if (k < 0) {
            err_set(err, ERR_UNPROCESSABLE, "subscribedEvents(): unknown event %s",
                    name ? name : "(not a string)");
        }
        free(name);
        JS_FreeValue(ctx, item);
        if (k < 0)
            return -1;
        *mask |= 1u << k;
    }
    return 0;
}

/* An event subscribedEvents() names must be in metadata.events: one that is
 * not would give an instance that silently never hears it. */
static int not_declared(uint32_t declared, uint32_t wanted, struct err *err)
{
    for (size_t k = 0; k < js_event_count; k++) {
        if ((wanted & (1u << k)) && !(declared & (1u << k))) {
            err_set(err, ERR_UNPROCESSABLE,
                    "subscribedEvents(): %s is not in metadata.events; add it there to "
                    "receive it",
                    js_event_names[k]);
            return -1;
        }
    }
    return 0;
}

/* subscribedEvents() narrows metadata.events; env.events shows the result. */
static int choose_events(struct vm *vm, JSValueConst env, struct err *err)
{
    JSContext *ctx = vm->sb.ctx;
    uint32_t mask = vm->plan->events;
    JSValue fn = JS_GetPropertyStr(ctx, vm->handlers, "subscribedEvents");
    if (JS_IsException(fn)) {
        start_failed(vm, "subscribedEvents", err);
        return -1;
    }
    if (JS_IsFunction(ctx, fn)) {
        JSValue list = JS_Call(ctx, fn, vm->handlers, 0, NULL);
        JS_FreeValue(ctx, fn);
        if (JS_IsException(list)) {
            start_failed(vm, "subscribedEvents()", err);
            return -1;
        }
        uint32_t wanted = 0;
        int rc = event_mask_of(ctx, list, &wanted, err);
        JS_FreeValue(ctx, list);
        if (rc != 0) {
            if (err && err->kind == ERR_NONE)
                start_failed(vm, "subscribedEvents()", err);
            return -1;
        }
        if (not_declared(vm->plan->events, wanted, err) != 0)
            return -1;
        mask &= wanted;
    } else if (!JS_IsUndefined(fn) && !JS_IsNull(fn)) {
        /* a list where a function belongs would narrow nothing, unsaid */
        err_set(err, ERR_UNPROCESSABLE,
                "subscribedEvents is %s, not a function returning event names",
                value_kind(ctx, fn));
        err_add_detail(err, "stage", json_string("subscribedEvents"));
        JS_FreeValue(ctx, fn);
        return -1;
    } else {
        JS_FreeValue(ctx, fn);
    }
    vm->events = mask;
    /* env.events says what the instance hears; it changes only when
     * subscribedEvents() narrowed it. A strategy may have frozen env (or
     * put a setter there): the list it keeps is then the declared one. */
    if (mask != vm->plan->events) {
        JSValue names = host_event_names(ctx, mask);
        if (JS_IsException(names)) {
            start_failed(vm, "env.events", err);
            return -1;
        }
        JSAtom events = JS_NewAtom(ctx, "events");
        int set = events == JS_ATOM_NULL
                      ? -1
                      : JS_DefinePropertyValue(ctx, env, events, names, JS_PROP_C_W_E);
        if (events == JS_ATOM_NULL)
            JS_FreeValue(ctx, names);
        JS_FreeAtom(ctx, events);
        if (set < 0 && vm->sb.out_of_memory) {
            start_failed(vm, "env.events", err);
            return -1;
        }
        if (set < 0)
            JS_FreeValue(ctx, JS_GetException(ctx));
    }
    /* broadcast kinds that reach a handler; exec reports are directed */
    vm->mask = 0;
    for (int k = 0; k < EVENT_KIND_COUNT; k++) {
        int h = runtime_handler_for_kind((enum event_kind)k);
        if ((mask & (1u << k)) && h >= 0 && !JS_IsUndefined(vm->fn[h]))
            vm->mask |= 1u << k;
    }
    return 0;
}

/* Runs the module's top level; its exports wait in vm->exports. */
static int load_module(struct vm *vm, struct err *err)
{
    if (js_module_load(&vm->sb, vm->plan->bytecode, &vm->exports, err) != 0) {
        if (err)
            err->kind = ERR_UNPROCESSABLE;
        return -1;
    }
    js_bytecode_release(vm->plan->bytecode);
    vm->plan->bytecode = NULL;
    return 0;
}

/* env is data (the config and metadata parsed, the host's functions), so
 * it is built while staged, beside the start's commit, and only create(env)
 * waits for the commit. */
static int build_env(struct vm *vm, struct err *err)
{
    vm->env = host_make_env(vm);
    if (JS_IsException(vm->env)) {
        vm->env = JS_UNDEFINED;
        start_failed(vm, "env", err);
        return -1;
    }
    return 0;
}

static int create_from_exports(struct vm *vm, struct err *err)
{
    JSContext *ctx = vm->sb.ctx;
    const char *not_fn[H_COUNT] = {NULL};
    int rc = call_create(vm, vm->exports, vm->env, err);
    free_value(ctx, &vm->exports);
    if (rc == 0)
        rc = cache_handlers(vm, not_fn, err);
    if (rc == 0)
        rc = choose_events(vm, vm->env, err);
    if (rc == 0)
        rc = check_handlers(vm, not_fn, err);
    if (rc == 0)
        warn_unknown_handlers(vm);
    free_value(ctx, &vm->env);
    js_sandbox_disarm(&vm->sb);
    /* a start that fails says why itself; one that goes on reports a
     * promise its top level or create() left rejected (vm_launch) */
    if (rc != 0) {
        vm->unhandled = 0;
        free_value(ctx, &vm->rejection);
    }
    return rc;
}

/* Timers the module's top level set while the VM was staged join the
 * worker's heap now that create(env) has run: none fires before it. */
static int schedule_held_timers(struct worker *w, struct vm *vm, struct err *err)
{
    for (struct timer *t = vm->timers; t; t = t->next) {
        if (t->heap_index == SIZE_MAX && worker_timer_schedule(w, t) != 0) {
            err_set(err, ERR_INTERNAL, "out of memory starting instance %s", vm->inst->id);
            return -1;
        }
    }
    return 0;
}

/* A VM with its sandbox, names and host globals but no instance yet: what
 * every start needs and nothing of an instance. Limits are the defaults
 * until vm_start applies the plan's. */
struct vm *vm_build(struct err *err)
{
    struct vm *vm = calloc(1, sizeof *vm);
    if (!vm) {
        err_set(err, ERR_INTERNAL, "out of memory building a JavaScript sandbox");
        return NULL;
    }
    init_values(vm);
    if (js_sandbox_init(&vm->sb, NULL, err) != 0) {
        free(vm);
        return NULL;
    }
    vm->sb.user = vm;
    JS_SetHostPromiseRejectionTracker(vm->sb.rt, on_rejection, vm);
    if (init_names(vm) != 0 || host_install_globals(vm) != 0 || lazy_class_init(vm) != 0) {
        err_set(err, ERR_INTERNAL, "out of memory building a JavaScript sandbox");
        release_js(NULL, vm);
        vm_free_shell(vm);
        return NULL;
    }
    return vm;
}

void vm_free_spare(struct vm *vm)
{
    release_js(NULL, vm);
    vm_free_shell(vm);
}

static struct vm *vm_take(struct worker *w, struct err *err)
{
    struct vm *vm = vm_spares_take(&w->spares);
    enum vm_source source = vm ? VM_FROM_SPARE : VM_BUILT_ON_START;
    if (!vm)
        vm = vm_build(err);
    if (vm)
        counter_add(&w->vm_sources[source], 1);
    return vm;
}

/* Gives a VM taken from the spares (or just built) to an instance. */
static int vm_adopt(struct vm *vm, struct instance *inst, struct vm_plan *plan, struct err *err)
{
    vm->inst = inst;
    vm->plan = plan;
    vm->scope = calloc(plan->nscope ? plan->nscope : 1, sizeof *vm->scope);
    if (!vm->scope) {
        err_set(err, ERR_INTERNAL, "out of memory starting instance %s", inst->id);
        return -1;
    }
    for (uint16_t i = 0; i < plan->nscope; i++)
        vm->scope[i].ctx = vm->scope[i].provider = vm->scope[i].symbol = JS_UNDEFINED;
    vm->budget_ns = plan->limits.budget_ns ? plan->limits.budget_ns : JS_SANDBOX_DEFAULT_BUDGET_NS;
    return js_sandbox_set_limits(&vm->sb, &plan->limits, err);
}

static void vm_discard(struct worker *w, struct vm *vm)
{
    release_js(w, vm);
    vm_free_shell(vm);
}

int vm_stage(struct worker *w, struct instance *inst, struct vm_plan *plan, struct vm **out,
             struct err *err)
{
    struct vm *vm = vm_take(w, err);
    if (!vm) {
        runtime_plan_free(plan);
        return -1;
    }
    vm->staged = true;
    int rc = vm_adopt(vm, inst, plan, err);
    host_enter(vm);
    if (rc == 0)
        rc = load_module(vm, err);
    if (rc == 0)
        rc = build_env(vm, err);
    host_leave();
    if (rc != 0) {
        vm_discard(w, vm);
        return -1;
    }
    *out = vm;
    return 0;
}

int vm_launch(struct worker *w, struct vm *vm, struct err *err)
{
    vm->staged = false;
    vm->inst->risk_breaches = 0; /* maxRiskBreaches counts from each start */
    host_enter(vm);
    int rc = create_from_exports(vm, err);
    /* an async step of the start that failed with nobody to catch it (a
     * call create() did not await): the instance runs on, half set up, so
     * the author hears of it as of a handler's error */
    if (rc == 0 && vm->unhandled > 0)
        report_rejection(w, vm, "create", false);
    else if (rc == 0)
        free_value(vm->sb.ctx, &vm->rejection);
    host_leave();
    /* orders create() placed reached maxRiskBreaches: the start fails, as a
     * handler's call would stop the instance */
    char why[ERR_MESSAGE_MAX];
    if (host_risk_stop_due(vm, why, sizeof why)) {
        if (rc == 0)
            err_set(err, ERR_CONFLICT, "create: %s", why);
        rc = -1;
    }
    struct vm_plan *plan = vm->plan;
    free(plan->config_json);
    free(plan->metadata_json);
    plan->config_json = plan->metadata_json = NULL;
    if (rc == 0)
        rc = schedule_held_timers(w, vm, err);
    if (rc != 0) {
        vm_discard(w, vm);
        return -1;
    }
    vm_spares_retry(&w->spares);
    atomic_store_explicit(&vm->inst->memory, (uint64_t)js_sandbox_memory_used(&vm->sb),
                          memory_order_relaxed);
    return 0;
}

void vm_unstage(struct worker *w, struct vm *vm)
{
    host_log_flush(vm);
    vm_discard(w, vm);
}

int vm_start(struct worker *w, struct instance *inst, struct vm_plan *plan, struct vm **out,
             struct err *err)
{
    struct vm *vm = NULL;
    if (vm_stage(w, inst, plan, &vm, err) != 0 || vm_launch(w, vm, err) != 0)
        return -1;
    *out = vm;
    return 0;
}

/* ------------------------------------------------------------ subscriptions */

/* Provider-wide events come with symbol 0. */
#define PROVIDER_WIDE_KINDS                                                                        \
    ((1u << EVENT_BALANCE_UPDATE) | (1u << EVENT_RISK_CONTROL) | (1u << EVENT_EXTENSION) |         \
     (1u << EVENT_INSTRUMENT_UPDATE))

size_t vm_subscriptions(const struct vm *vm, uint64_t *keys, uint16_t *scope_index, size_t max)
{
    size_t n = 0;
    for (uint16_t i = 0; i < vm->plan->nscope; i++) {
        const struct scope_entry *e = &vm->plan->scope[i];
        uint32_t kinds = e->symbol ? vm->mask : vm->mask & PROVIDER_WIDE_KINDS;
        for (unsigned k = 0; k < EVENT_KIND_COUNT; k++) {
            if (!(kinds & (1u << k)))
                continue;
            if (keys && n < max) {
                keys[n] = sub_key(e->provider, e->symbol, k);
                scope_index[n] = i;
            }
            n++;
        }
    }
    return n;
}
