/*
 * host: everything a strategy can reach outside its own code.
 *
 *   env.config, env.metadata, env.events
 *   env.helpers.log(...args), env.helpers.sleep(ms)
 *   env.runtime.isTradingActive(), isDryRun(), providers(), selectProvider(seed),
 *              submitMarketOrder(provider, side, size[, symbol]),
 *              submitOrder(provider, side, size, price[, symbol]), cancelOrder(id),
 *              getLastPrice/getBidPrice/getAskPrice([symbol]), getMarketState([symbol]),
 *              getInstrument([symbol])
 *   globals setTimeout/clearTimeout/setInterval/clearInterval, console.*
 *
 * Host functions run on the worker thread inside a call the worker armed, so
 * they find their VM in a thread-local set around every entry into JS.
 * Nothing here blocks: sleep and timers go through the worker's timer heap,
 * orders are handed to the market, which queues them.
 */
#include "runtime/internal.h"

#include "core/clock.h"
#include "core/intern.h"
#include "core/log.h"
#include "core/strbuf.h"
#include "js/validate.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pending timers per instance: they live outside the JS heap's cap. */
#define HOST_MAX_TIMERS 10000
/* Open orders remembered per instance for cancelOrder(). */
#define HOST_MAX_OPEN_ORDERS 65536
#define HOST_MAX_DELAY_MS 2147483647.0

static _Thread_local struct vm *current_vm;
/* The VM whose instance reached maxRiskBreaches during the current entry
 * into JS (NULL: none), and why: the worker stops it once the call has
 * returned (host_risk_stop_due), since a VM cannot be freed from inside. */
static _Thread_local struct vm *risk_stop_vm;
static _Thread_local char risk_stop_why[ERR_MESSAGE_MAX];

struct vm *host_current(void)
{
    return current_vm;
}
void host_enter(struct vm *vm)
{
    current_vm = vm;
    risk_stop_vm = NULL;
}
void host_leave(void)
{
    current_vm = NULL;
}

static struct vm *vm_of(JSContext *ctx)
{
    struct vm *vm = current_vm;
    if (!vm || vm->sb.ctx != ctx)
        JS_ThrowInternalError(ctx, "host function called outside its instance");
    return vm && vm->sb.ctx == ctx ? vm : NULL;
}

/* ------------------------------------------------------------ logging */

void host_log(struct vm *vm, enum log_level level, const char *msg, json_t *extra)
{
    json_t *fields = json_pack("{s:s, s:s, s:s}", "strategy", vm->plan->strategy, "hash",
                               vm->plan->hash, "instance", vm->inst->id);
    if (fields && extra)
        json_object_update(fields, extra);
    json_decref(extra);
    log_json(level, "strategy", msg, fields);
}

void host_log_flush(struct vm *vm)
{
    if (vm->log_dropped == 0)
        return;
    char msg[96];
    snprintf(msg, sizeof msg, "dropped %" PRIu64 " log lines over the rate limit", vm->log_dropped);
    vm->log_dropped = 0;
    host_log(vm, LOG_LEVEL_WARN, msg, json_pack("{s:b}", "rateLimited", 1));
}

static void arm_log_flush(struct worker *w, struct vm *vm, int64_t window_end_ns)
{
    struct timer *t = calloc(1, sizeof *t);
    if (!t)
        return;
    t->kind = TIMER_LOG_FLUSH;
    t->vm = vm;
    t->fn = JS_UNDEFINED;
    t->deadline_ns = window_end_ns;
    t->heap_index = SIZE_MAX;
    t->next = vm->timers;
    if (vm->timers)
        vm->timers->prev = t;
    vm->timers = t;
    vm->ntimers++;
    if (worker_timer_schedule(w, t) != 0) {
        vm_free_timer(vm, t);
        return;
    }
    vm->log_flush_armed = true;
}

/* One-second windows of log_lines lines; the lines dropped in a window are
 * reported once, when it ends (a timer), so a silent strategy still says
 * how much it lost. */
bool host_log_admit(struct worker *w, struct vm *vm)
{
    int64_t now = clock_mono_ns();
    int64_t window = now / 1000000000;
    if (window != vm->log_window) {
        vm->log_window = window;
        vm->log_lines = 0;
    }
    if (vm->log_lines < (uint32_t)vm->plan->log_lines) {
        vm->log_lines++;
        return true;
    }
    vm->log_dropped++;
    if (!vm->log_flush_armed)
        arm_log_flush(w, vm, (window + 1) * 1000000000);
    return false;
}

/* The longest piece js_text_clean writes for one character (a NUL's
 * escape). */
#define LOG_CHARACTER_MAX 6

/* console.log semantics: strings as they are, other values JSON-encoded
 * when possible, else String(value). The text is made valid UTF-8 and a
 * NUL written as \u0000 (js_text_clean), so a lone surrogate costs one
 * U+FFFD and nothing after a NUL is lost. */
static int append_value(JSContext *ctx, struct vm *vm, struct strbuf *sb, JSValueConst v)
{
    JSValue text = JS_UNDEFINED;
    if (JS_IsObject(v) && !JS_IsFunction(ctx, v) && !JS_IsError(ctx, v)) {
        text = JS_JSONStringify(ctx, v, JS_UNDEFINED, JS_UNDEFINED);
        if (JS_IsException(text)) {
            if (js_sandbox_overran(&vm->sb))
                return -1; /* the budget ran out: let the interrupt unwind */
            JS_FreeValue(ctx, JS_GetException(ctx));
            text = JS_UNDEFINED;
        }
    }
    size_t len = 0;
    const char *s = JS_ToCStringLen(ctx, &len, JS_IsString(text) ? text : v);
    JS_FreeValue(ctx, text);
    if (!s) {
        if (js_sandbox_overran(&vm->sb))
            return -1;
        JS_FreeValue(ctx, JS_GetException(ctx));
        strbuf_puts(sb, "[unprintable]");
        return 0;
    }
    /* Past the line's limit by one character at least, so that log_json
     * sees a long line and cuts it at a character boundary itself. */
    size_t limit = LOG_MESSAGE_MAX + LOG_CHARACTER_MAX;
    char *clean = js_text_clean(s, len, limit > sb->len ? limit - sb->len : 0, NULL);
    JS_FreeCString(ctx, s);
    if (!clean) {
        JS_ThrowOutOfMemory(ctx);
        return -1;
    }
    strbuf_puts(sb, clean);
    free(clean);
    return 0;
}

static JSValue js_log(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv,
                      int level)
{
    (void)this_val;
    struct vm *vm = vm_of(ctx);
    if (!vm)
        return JS_EXCEPTION;
    if (!host_log_admit(vm->inst->worker, vm))
        return JS_UNDEFINED;
    struct strbuf sb = STRBUF_INIT;
    for (int i = 0; i < argc && sb.len <= LOG_MESSAGE_MAX; i++) {
        if (i > 0)
            strbuf_putc(&sb, ' ');
        if (append_value(ctx, vm, &sb, argv[i]) != 0) {
            strbuf_release(&sb);
            return JS_EXCEPTION;
        }
    }
    /* log_json marks lines over LOG_MESSAGE_MAX as truncated */
    if (!strbuf_failed(&sb))
        host_log(vm, (enum log_level)level, strbuf_cstr(&sb), NULL);
    strbuf_release(&sb);
    return JS_UNDEFINED;
}

/* ------------------------------------------------------------ timers */

static struct timer *new_timer(JSContext *ctx, struct vm *vm, enum timer_kind kind, double ms)
{
    if (vm->ntimers >= HOST_MAX_TIMERS) {
        JS_ThrowRangeError(ctx, "too many pending timers (limit %d)", HOST_MAX_TIMERS);
        return NULL;
    }
    struct timer *t = calloc(1, sizeof *t);
    if (!t) {
        JS_ThrowOutOfMemory(ctx);
        return NULL;
    }
    if (!(ms >= 0))
        ms = 0;
    if (ms > HOST_MAX_DELAY_MS)
        ms = HOST_MAX_DELAY_MS;
    t->kind = (uint8_t)kind;
    t->vm = vm;
    t->fn = JS_UNDEFINED;
    t->heap_index = SIZE_MAX;
    t->deadline_ns = clock_mono_ns() + (int64_t)(ms * 1e6);
    return t;
}

/* Links the timer into its VM and the worker's heap (a staged VM's waits
 * for vm_launch); frees it on failure. */
static int add_timer(JSContext *ctx, struct vm *vm, struct timer *t)
{
    t->next = vm->timers;
    if (vm->timers)
        vm->timers->prev = t;
    vm->timers = t;
    vm->ntimers++;
    if (!vm->staged && worker_timer_schedule(vm->inst->worker, t) != 0) {
        vm_free_timer(vm, t);
        JS_ThrowOutOfMemory(ctx);
        return -1;
    }
    return 0;
}

static JSValue js_set_timer(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv,
                            int repeat)
{
    (void)this_val;
    struct vm *vm = vm_of(ctx);
    if (!vm)
        return JS_EXCEPTION;
    if (argc < 1 || !JS_IsFunction(ctx, argv[0]))
        return JS_ThrowTypeError(ctx, "%s: the callback must be a function",
                                 repeat ? "setInterval" : "setTimeout");
    double ms = 0;
    if (argc > 1 && JS_ToFloat64(ctx, &ms, argv[1]) < 0)
        return JS_EXCEPTION;
    struct timer *t = new_timer(ctx, vm, TIMER_JS, ms);
    if (!t)
        return JS_EXCEPTION;
    if (argc > 2) {
        /* in the sandbox's heap: 10,000 timers of 65,534 arguments each
         * would otherwise hold 10 GB outside its memory cap */
        t->argv = js_mallocz(ctx, (size_t)(argc - 2) * sizeof *t->argv);
        if (!t->argv) {
            free(t);
            return JS_EXCEPTION;
        }
        for (int i = 2; i < argc; i++)
            t->argv[t->argc++] = JS_DupValue(ctx, argv[i]);
    }
    if (repeat) {
        double interval = ms >= 1 ? ms : 1; /* a 0 ms interval would spin */
        if (interval > HOST_MAX_DELAY_MS)
            interval = HOST_MAX_DELAY_MS;
        t->interval_ns = (int64_t)(interval * 1e6);
    }
    if (++vm->next_timer_id == 0)
        vm->next_timer_id = 1;
    t->id = vm->next_timer_id;
    t->fn = JS_DupValue(ctx, argv[0]);
    if (add_timer(ctx, vm, t) != 0)
        return JS_EXCEPTION;
    return JS_NewInt64(ctx, t->id);
}

static JSValue js_clear_timer(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    struct vm *vm = vm_of(ctx);
    if (!vm)
        return JS_EXCEPTION;
    int64_t id = 0;
    if (argc < 1 || !JS_IsNumber(argv[0]) || JS_ToInt64(ctx, &id, argv[0]) < 0)
        return JS_UNDEFINED;
    for (struct timer *t = vm->timers; t; t = t->next) {
        if (t->kind == TIMER_JS && t->id == (uint64_t)id) {
            if (t->firing) {
                t->cancelled = true; /* freed when its callback returns */
            } else {
                worker_timer_unschedule(vm->inst->worker, t);
                vm_free_timer(vm, t);
            }
            break;
        }
    }
    return JS_UNDEFINED;
}

static JSValue js_sleep(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    struct vm *vm = vm_of(ctx);
    if (!vm)
        return JS_EXCEPTION;
    double ms = 0;
    if (argc > 0 && JS_ToFloat64(ctx, &ms, argv[0]) < 0)
        return JS_EXCEPTION;
    struct timer *t = new_timer(ctx, vm, TIMER_SLEEP, ms);
    if (!t)
        return JS_EXCEPTION;
    JSValue funcs[2];
    JSValue promise = JS_NewPromiseCapability(ctx, funcs);
    if (JS_IsException(promise)) {
        free(t);
        return promise;
    }
    JS_FreeValue(ctx, funcs[1]);
    t->fn = funcs[0];
    if (add_timer(ctx, vm, t) != 0) {
        JS_FreeValue(ctx, promise);
        return JS_EXCEPTION;
    }
    return promise;
}

/* ------------------------------------------------------------ scope helpers */

static bool scoped_provider(const struct vm_plan *plan, const char *name, uint16_t *id)
{
    for (uint16_t i = 0; i < plan->nproviders; i++) {
        if (strcmp(intern_name(plan->providers[i]), name) == 0) {
            *id = plan->providers[i];
            return true;
        }
    }
    return false;
}

/* The first scoped symbol of provider (symbol 0 means "any"), or 0. */
static uint16_t scoped_symbol(const struct vm_plan *plan, uint16_t provider, uint16_t symbol)
{
    for (uint16_t i = 0; i < plan->nscope; i++) {
        const struct scope_entry *e = &plan->scope[i];
        if (e->provider == provider && e->symbol && (symbol == 0 || e->symbol == symbol))
            return e->symbol;
    }
    return 0;
}

/* A string as a C string (free with JS_FreeCString), or NULL when it
 * holds a NUL character: C would read it cut there, and "sim\0x" would
 * name provider sim. */
static const char *whole_string(JSContext *ctx, JSValueConst v)
{
    size_t len = 0;
    const char *s = JS_ToCStringLen(ctx, &len, v);
    if (s && strlen(s) != len) {
        JS_FreeCString(ctx, s);
        return NULL;
    }
    return s;
}

/* A string argument as a C string, or NULL (nothing thrown) when absent or
 * not one whole string (see whole_string). */
static const char *opt_string(JSContext *ctx, int argc, JSValueConst *argv, int i)
{
    if (i >= argc || !JS_IsString(argv[i]))
        return NULL;
    return whole_string(ctx, argv[i]);
}

/* typeof, for messages about an argument of the wrong type. */
static const char *arg_type(JSContext *ctx, JSValueConst v)
{
    if (JS_IsNumber(v))
        return "number";
    if (JS_IsBool(v))
        return "boolean";
    if (JS_IsBigInt(ctx, v))
        return "bigint";
    if (JS_IsSymbol(v))
        return "symbol";
    if (JS_IsFunction(ctx, v))
        return "function";
    return "object";
}

/* An optional symbol argument: 0 with *out NULL when absent, undefined or
 * null (the first scoped symbol then), 0 with *out set (free with
 * JS_FreeCString) for a string, and -1 with a TypeError thrown for
 * anything else, so that a number or an object never quietly means the
 * first scoped symbol. */
static int symbol_argument(JSContext *ctx, int argc, JSValueConst *argv, int i, const char **out)
{
    *out = NULL;
    if (i >= argc || JS_IsUndefined(argv[i]) || JS_IsNull(argv[i]))
        return 0;
    if (!JS_IsString(argv[i])) {
        JS_ThrowTypeError(ctx, "symbol must be a string, got %s", arg_type(ctx, argv[i]));
        return -1;
    }
    *out = whole_string(ctx, argv[i]);
    if (!*out && !JS_HasException(ctx))
        JS_ThrowTypeError(ctx, "symbol must not hold a NUL character");
    return *out ? 0 : -1;
}

/* ------------------------------------------------------------ runtime.* */

static JSValue js_is_trading_active(JSContext *ctx, JSValueConst this_val, int argc,
                                    JSValueConst *argv)
{
    (void)this_val;
    (void)argc;
    (void)argv;
    struct vm *vm = vm_of(ctx);
    if (!vm)
        return JS_EXCEPTION;
    const struct market_ops *ops = &vm->inst->worker->rt->opts.market;
    if (!ops->trading_active || vm->plan->nproviders == 0)
        return JS_TRUE;
    return JS_NewBool(ctx, ops->trading_active(ops->ctx, vm->plan->providers[0]));
}

static JSValue js_is_dry_run(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    (void)argc;
    (void)argv;
    struct vm *vm = vm_of(ctx);
    return vm ? JS_NewBool(ctx, vm->plan->dry_run) : JS_EXCEPTION;
}

static JSValue provider_list(JSContext *ctx, const struct vm_plan *plan)
{
    JSValue arr = JS_NewArray(ctx);
    for (uint16_t i = 0; i < plan->nproviders && !JS_IsException(arr); i++) {
        JSValue name = JS_NewString(ctx, intern_name(plan->providers[i]));
        if (JS_IsException(name) ||
            JS_DefinePropertyValueUint32(ctx, arr, i, name, JS_PROP_C_W_E) < 0) {
            JS_FreeValue(ctx, arr);
            return JS_EXCEPTION;
        }
    }
    return arr;
}

static JSValue js_providers(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    (void)argc;
    (void)argv;
    struct vm *vm = vm_of(ctx);
    return vm ? provider_list(ctx, vm->plan) : JS_EXCEPTION;
}

/* Deterministic: the same seed always picks the same provider. */
static JSValue js_select_provider(JSContext *ctx, JSValueConst this_val, int argc,
                                  JSValueConst *argv)
{
    (void)this_val;
    struct vm *vm = vm_of(ctx);
    if (!vm)
        return JS_EXCEPTION;
    uint16_t n = vm->plan->nproviders;
    if (n == 0)
        return JS_NULL;
    uint64_t h = 0;
    if (argc > 0 && JS_IsNumber(argv[0])) {
        double d = 0;
        JS_ToFloat64(ctx, &d, argv[0]);
        h = isfinite(d) ? (uint64_t)fabs(trunc(d)) : 0;
    } else if (argc > 0 && !JS_IsUndefined(argv[0]) && !JS_IsNull(argv[0])) {
        size_t len = 0;
        const char *s = JS_ToCStringLen(ctx, &len, argv[0]);
        if (!s)
            return JS_EXCEPTION;
        h = 1469598103934665603ull; /* FNV-1a */
        for (size_t i = 0; i < len; i++)
            h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
        JS_FreeCString(ctx, s);
    }
    return JS_NewString(ctx, intern_name(vm->plan->providers[h % n]));
}

/* "<instance>-<n>", the instance id shortened if it would not fit. */
/* "<instance>-<n>". An id too long for the room is cut and marked with a
 * digest of the whole id ("<start>~<8 hex>-<n>"): two instances whose ids
 * share a long start would otherwise place orders under the same ids. */
static void client_order_id(const struct instance *inst, uint64_t n, char out[EVENT_ORDER_ID_MAX])
{
    char suffix[24];
    int slen = snprintf(suffix, sizeof suffix, "-%" PRIu64, n);
    int room = EVENT_ORDER_ID_MAX - 1 - slen;
    size_t len = strlen(inst->id);
    if (len <= (size_t)room) {
        memcpy(out, inst->id, len);
        memcpy(out + len, suffix, (size_t)slen + 1);
        return;
    }
    uint32_t digest = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        digest ^= (unsigned char)inst->id[i];
        digest *= 16777619u;
    }
    size_t keep = (size_t)room - 9;
    memcpy(out, inst->id, keep);
    char mark[10];
    snprintf(mark, sizeof mark, "~%08" PRIx32, digest);
    memcpy(out + keep, mark, 9);
    memcpy(out + keep + 9, suffix, (size_t)slen + 1);
}

static void remember_order(struct instance *inst, uint64_t n, uint16_t provider)
{
    if (inst->norders == HOST_MAX_OPEN_ORDERS) {
        /* forget the oldest: it is long settled or will never be cancelled */
        memmove(inst->orders, inst->orders + 1, (inst->norders - 1) * sizeof *inst->orders);
        inst->norders--;
    }
    if (inst->norders == inst->orders_cap) {
        uint32_t cap = inst->orders_cap ? inst->orders_cap * 2 : 8;
        struct open_order *grown = realloc(inst->orders, cap * sizeof *grown);
        if (!grown)
            return;
        inst->orders = grown;
        inst->orders_cap = cap;
    }
    inst->orders[inst->norders].n = n;
    inst->orders[inst->norders].provider = provider;
    inst->norders++;
}

static int parse_side(JSContext *ctx, JSValueConst v, enum order_side *side)
{
    const char *s = JS_IsString(v) ? whole_string(ctx, v) : NULL;
    int rc = 0;
    if (s && strcmp(s, "buy") == 0)
        *side = SIDE_BUY;
    else if (s && strcmp(s, "sell") == 0)
        *side = SIDE_SELL;
    else
        rc = -1;
    JS_FreeCString(ctx, s);
    if (rc != 0)
        JS_ThrowTypeError(ctx, "side must be \"buy\" or \"sell\"");
    return rc;
}

static int parse_number(JSContext *ctx, JSValueConst v, const char *what, double *out)
{
    if (!JS_IsNumber(v)) {
        JS_ThrowTypeError(ctx, "%s must be a number", what);
        return -1;
    }
    return JS_ToFloat64(ctx, out, v);
}

/* Fills provider and symbol of an order from (provider[, symbol]) arguments;
 * both must be in the instance's scope. */
static int order_target(JSContext *ctx, const struct vm_plan *plan, int argc, JSValueConst *argv,
                        int symbol_arg, struct order_request *req)
{
    const char *provider = opt_string(ctx, argc, argv, 0);
    if (!provider) {
        if (!JS_HasException(ctx))
            JS_ThrowTypeError(ctx, "provider must be a string without a NUL character");
        return -1;
    }
    bool known = scoped_provider(plan, provider, &req->provider);
    if (!known)
        JS_ThrowTypeError(ctx, "provider %s is not in this instance's scope", provider);
    JS_FreeCString(ctx, provider);
    if (!known)
        return -1;
    const char *symbol = NULL;
    if (symbol_argument(ctx, argc, argv, symbol_arg, &symbol) < 0)
        return -1;
    uint16_t wanted = symbol ? intern_lookup(symbol) : 0;
    req->symbol = symbol && !wanted ? 0 : scoped_symbol(plan, req->provider, wanted);
    if (!req->symbol)
        JS_ThrowTypeError(ctx, "symbol %s is not in this instance's scope",
                          symbol ? symbol : "(none)");
    JS_FreeCString(ctx, symbol);
    return req->symbol ? 0 : -1;
}

bool host_risk_stop_due(struct vm *vm, char *why, size_t size)
{
    if (!vm || risk_stop_vm != vm)
        return false;
    risk_stop_vm = NULL;
    snprintf(why, size, "%s", risk_stop_why);
    return true;
}

static JSValue throw_refusal(JSContext *ctx, const char *message)
{
    JSValue e = JS_NewError(ctx);
    if (JS_IsException(e))
        return e;
    JSValue text = JS_NewString(ctx, message);
    if (JS_IsException(text)) { /* the out-of-memory error is thrown instead */
        JS_FreeValue(ctx, e);
        return text;
    }
    JS_SetPropertyStr(ctx, e, "message", text);
    return JS_Throw(ctx, e);
}

/* A refusal by the risk limits is a breach: counted for the instance, and
 * the one that reaches maxRiskBreaches asks for the instance's stop. */
static void note_breach(struct vm *vm, int rc, const char *error)
{
    struct instance *inst = vm->inst;
    inst->risk_breaches++;
    if (rc != MARKET_SUBMIT_RISK_STOP)
        return;
    risk_stop_vm = vm;
    snprintf(risk_stop_why, sizeof risk_stop_why,
             "%" PRIu32 " orders refused by the risk limits since the start (maxRiskBreaches); "
             "last: %s",
             inst->risk_breaches, error);
}

/* Takes one of the instance's order tokens (its plan's
 * max_orders_per_second, refilled at that rate up to one second's worth);
 * false when none is left. */
static bool take_order_token(struct instance *inst, uint32_t per_second)
{
    if (per_second == 0)
        return true;
    int64_t now = clock_mono_ns();
    double full = (double)per_second;
    if (inst->order_refilled_ns == 0) {
        inst->order_tokens = full;
    } else {
        double earned = (double)(now - inst->order_refilled_ns) / 1e9 * full;
        inst->order_tokens = fmin(full, inst->order_tokens + (earned > 0 ? earned : 0));
    }
    inst->order_refilled_ns = now;
    if (inst->order_tokens < 1)
        return false;
    inst->order_tokens -= 1;
    return true;
}

static JSValue submit(JSContext *ctx, int argc, JSValueConst *argv, enum order_type type)
{
    struct vm *vm = vm_of(ctx);
    if (!vm)
        return JS_EXCEPTION;
    struct instance *inst = vm->inst;
    if (risk_stop_vm == vm)
        return throw_refusal(ctx, "risk: maxRiskBreaches reached; the instance is stopping");
    const struct market_ops *ops = &inst->worker->rt->opts.market;
    int nargs = type == ORDER_LIMIT ? 4 : 3;
    if (argc < nargs)
        return JS_ThrowTypeError(ctx, "%s",
                                 type == ORDER_LIMIT
                                     ? "submitOrder(provider, side, size, price[, symbol])"
                                     : "submitMarketOrder(provider, side, size[, symbol])");
    struct order_request req;
    memset(&req, 0, sizeof req);
    req.type = type;
    if (order_target(ctx, vm->plan, argc, argv, nargs, &req) != 0 ||
        parse_side(ctx, argv[1], &req.side) != 0 ||
        parse_number(ctx, argv[2], "size", &req.quantity) != 0 ||
        (type == ORDER_LIMIT && parse_number(ctx, argv[3], "price", &req.price) != 0))
        return JS_EXCEPTION;
    if (!ops->submit)
        return JS_ThrowInternalError(ctx, "no market is connected");
    uint32_t per_second = vm->plan->max_orders_per_second;
    if (!take_order_token(inst, per_second))
        return JS_ThrowRangeError(ctx,
                                  "orderRate: over %" PRIu32 " orders a second from this instance "
                                  "(max_orders_per_second); the order was not sent",
                                  per_second);
    uint64_t n = rtx_order_seq_next(inst->worker->rt, inst);
    req.instance_key = inst->key;
    snprintf(req.instance_id, sizeof req.instance_id, "%s", inst->id);
    client_order_id(inst, n, req.client_order_id);
    req.dry_run = vm->plan->dry_run;
    req.created_ns = clock_mono_ns();
    req.trigger_created_ns = vm->trigger_ns;
    req.risk_breaches = inst->risk_breaches;
    char error[256] = "";
    int rc = ops->submit(ops->ctx, &req, error, sizeof error);
    if (rc != MARKET_SUBMIT_OK) {
        /* nothing reached the market: the next order takes the number */
        if (inst->next_order == n)
            inst->next_order--;
        if (rc == MARKET_SUBMIT_RISK || rc == MARKET_SUBMIT_RISK_STOP)
            note_breach(vm, rc, error);
        return throw_refusal(ctx, *error ? error : "the order was refused");
    }
    remember_order(inst, n, req.provider);
    return JS_NewString(ctx, req.client_order_id);
}

static JSValue js_submit_market(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    return submit(ctx, argc, argv, ORDER_MARKET);
}

static JSValue js_submit_limit(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    return submit(ctx, argc, argv, ORDER_LIMIT);
}

/* The open order an id names, or -1: the id must be exactly one this
 * instance handed out. */
static int find_order(const struct instance *inst, const char *id)
{
    const char *dash = strrchr(id, '-');
    if (!dash || !dash[1])
        return -1;
    char *end = NULL;
    uint64_t n = strtoull(dash + 1, &end, 10);
    char expect[EVENT_ORDER_ID_MAX];
    client_order_id(inst, n, expect);
    if (*end || strcmp(expect, id) != 0)
        return -1;
    for (uint32_t i = inst->norders; i-- > 0;) {
        if (inst->orders[i].n == n)
            return (int)i;
    }
    return -1;
}

static JSValue js_cancel_order(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv)
{
    (void)this_val;
    struct vm *vm = vm_of(ctx);
    if (!vm)
        return JS_EXCEPTION;
    const struct market_ops *ops = &vm->inst->worker->rt->opts.market;
    const char *id = opt_string(ctx, argc, argv, 0);
    if (!id) /* not an id this instance handed out, or no memory for it */
        return JS_HasException(ctx) ? JS_EXCEPTION : JS_FALSE;
    int i = find_order(vm->inst, id);
    bool ok = false;
    if (i >= 0 && ops->cancel) {
        char error[256] = "";
        ok = ops->cancel(ops->ctx, vm->inst->key, vm->inst->orders[i].provider, id, error,
                         sizeof error) == 0;
    }
    JS_FreeCString(ctx, id);
    return JS_NewBool(ctx, ok);
}

/* Quote of the instance's first (provider, symbol), or of the first scoped
 * provider carrying `symbol` when given: 1 with a quote, 0 without, -1
 * with a TypeError thrown (a symbol that is not a string). */
static int quote_of(JSContext *ctx, struct vm *vm, int argc, JSValueConst *argv,
                    struct market_quote *q)
{
    const struct market_ops *ops = &vm->inst->worker->rt->opts.market;
    const struct vm_plan *plan = vm->plan;
    const char *name = NULL;
    if (symbol_argument(ctx, argc, argv, 0, &name) < 0)
        return -1;
    if (!ops->quote || plan->nscope == 0) {
        JS_FreeCString(ctx, name);
        return 0;
    }
    uint16_t provider = plan->scope[0].provider, symbol = plan->scope[0].symbol;
    if (name) {
        symbol = intern_lookup(name);
        for (uint16_t i = 0; i < plan->nscope; i++) {
            if (plan->scope[i].symbol == symbol) {
                provider = plan->scope[i].provider;
                break;
            }
        }
        JS_FreeCString(ctx, name);
    }
    memset(q, 0, sizeof *q);
    return symbol && ops->quote(ops->ctx, provider, symbol, q) && q->valid;
}

/* js_get_price and js_get_market_state: JS_NULL without a quote. */
static bool quote_or_null(JSContext *ctx, struct vm *vm, int argc, JSValueConst *argv,
                          struct market_quote *q, JSValue *early)
{
    int rc = quote_of(ctx, vm, argc, argv, q);
    *early = rc < 0 ? JS_EXCEPTION : JS_NULL;
    return rc > 0;
}

static JSValue js_get_price(JSContext *ctx, JSValueConst this_val, int argc, JSValueConst *argv,
                            int which)
{
    (void)this_val;
    struct vm *vm = vm_of(ctx);
    if (!vm)
        return JS_EXCEPTION;
    struct market_quote q;
    JSValue early;
    if (!quote_or_null(ctx, vm, argc, argv, &q, &early))
        return early;
    return JS_NewFloat64(ctx, which == 0 ? q.last : which == 1 ? q.bid : q.ask);
}

static JSValue js_get_market_state(JSContext *ctx, JSValueConst this_val, int argc,
                                   JSValueConst *argv)
{
    (void)this_val;
    struct vm *vm = vm_of(ctx);
    if (!vm)
        return JS_EXCEPTION;
    struct market_quote q;
    JSValue early;
    if (!quote_or_null(ctx, vm, argc, argv, &q, &early))
        return early;
    double spread = q.ask - q.bid, mid = (q.ask + q.bid) / 2;
    JSValue o = JS_NewObject(ctx);
    if (JS_IsException(o))
        return o;
    JSAtom *a = vm->atoms;
    int bad = 0;
    bad |= JS_DefinePropertyValue(ctx, o, a[A_LAST], JS_NewFloat64(ctx, q.last), JS_PROP_C_W_E) < 0;
    bad |= JS_DefinePropertyValue(ctx, o, a[A_BID], JS_NewFloat64(ctx, q.bid), JS_PROP_C_W_E) < 0;
    bad |= JS_DefinePropertyValue(ctx, o, a[A_ASK], JS_NewFloat64(ctx, q.ask), JS_PROP_C_W_E) < 0;
    bad |=
        JS_DefinePropertyValue(ctx, o, a[A_SPREAD], JS_NewFloat64(ctx, spread), JS_PROP_C_W_E) < 0;
    bad |= JS_DefinePropertyValue(ctx, o, a[A_SPREAD_PCT],
                                  JS_NewFloat64(ctx, mid > 0 ? spread / mid * 100 : 0),
                                  JS_PROP_C_W_E) < 0;
    if (bad) {
        JS_FreeValue(ctx, o);
        return JS_EXCEPTION;
    }
    return o;
}

/* The scoped (provider, symbol) that `name` names: the first scoped symbol
 * when it is NULL, else the first scoped provider carrying it. false when
 * the symbol is not in the scope, so a getter answers only for what the
 * instance may trade. */
static bool scoped_pair(const struct vm_plan *plan, const char *name, struct scope_entry *out)
{
    uint16_t symbol = name ? intern_lookup(name) : 0;
    if (name && !symbol)
        return false; /* a name nothing interned: no provider carries it */
    for (uint16_t i = 0; i < plan->nscope; i++) {
        const struct scope_entry *e = &plan->scope[i];
        if (e->symbol && (symbol == 0 || e->symbol == symbol)) {
            *out = *e;
            return true;
        }
    }
    return false;
}

static int define(JSContext *ctx, JSValueConst o, JSAtom atom, JSValue v)
{
    if (JS_IsException(v))
        return 1;
    return JS_DefinePropertyValue(ctx, o, atom, v, JS_PROP_C_W_E) < 0;
}

/* {provider, symbol} and the InstrumentUpdate payload's fields. */
static JSValue instrument_object(JSContext *ctx, struct vm *vm, const struct scope_entry *at,
                                 const struct event_instrument *in)
{
    JSValue o = JS_NewObject(ctx);
    if (JS_IsException(o))
        return o;
    int bad = 0;
    bad |= define(ctx, o, vm->atoms[A_PROVIDER], JS_NewString(ctx, intern_name(at->provider)));
    bad |= define(ctx, o, vm->atoms[A_SYMBOL], JS_NewString(ctx, intern_name(at->symbol)));
    bad |= vm_put_instrument(vm, ctx, o, in);
    if (bad) {
        JS_FreeValue(ctx, o);
        return JS_EXCEPTION;
    }
    return o;
}

/* The InstrumentUpdate a provider announces only as it starts and stops,
 * read from the market's state: an instance started in between never heard
 * it, and a read takes no number of the provider's event sequence (an event
 * sent to one instance would leave a gap in every other subscriber's). */
static JSValue js_get_instrument(JSContext *ctx, JSValueConst this_val, int argc,
                                 JSValueConst *argv)
{
    (void)this_val;
    struct vm *vm = vm_of(ctx);
    if (!vm)
        return JS_EXCEPTION;
    const char *name = NULL;
    if (symbol_argument(ctx, argc, argv, 0, &name) < 0)
        return JS_EXCEPTION;
    struct scope_entry at;
    bool scoped = scoped_pair(vm->plan, name, &at);
    JS_FreeCString(ctx, name);
    const struct market_ops *ops = &vm->inst->worker->rt->opts.market;
    struct event_instrument in;
    if (!scoped || !ops->instrument || !ops->instrument(ops->ctx, at.provider, at.symbol, &in))
        return JS_NULL;
    return instrument_object(ctx, vm, &at, &in);
}

/* ------------------------------------------------------------ env */

static const JSCFunctionListEntry runtime_funcs[] = {
    JS_CFUNC_DEF("isTradingActive", 0, js_is_trading_active),
    JS_CFUNC_DEF("isDryRun", 0, js_is_dry_run),
    JS_CFUNC_DEF("providers", 0, js_providers),
    JS_CFUNC_DEF("selectProvider", 1, js_select_provider),
    JS_CFUNC_DEF("submitMarketOrder", 3, js_submit_market),
    JS_CFUNC_DEF("submitOrder", 4, js_submit_limit),
    JS_CFUNC_DEF("cancelOrder", 1, js_cancel_order),
    JS_CFUNC_MAGIC_DEF("getLastPrice", 0, js_get_price, 0),
    JS_CFUNC_MAGIC_DEF("getBidPrice", 0, js_get_price, 1),
    JS_CFUNC_MAGIC_DEF("getAskPrice", 0, js_get_price, 2),
    JS_CFUNC_DEF("getMarketState", 0, js_get_market_state),
    JS_CFUNC_DEF("getInstrument", 1, js_get_instrument),
};

static const JSCFunctionListEntry helper_funcs[] = {
    JS_CFUNC_MAGIC_DEF("log", 0, js_log, LOG_LEVEL_INFO),
    JS_CFUNC_DEF("sleep", 1, js_sleep),
};

static const JSCFunctionListEntry console_funcs[] = {
    JS_CFUNC_MAGIC_DEF("log", 0, js_log, LOG_LEVEL_INFO),
    JS_CFUNC_MAGIC_DEF("info", 0, js_log, LOG_LEVEL_INFO),
    JS_CFUNC_MAGIC_DEF("debug", 0, js_log, LOG_LEVEL_DEBUG),
    JS_CFUNC_MAGIC_DEF("warn", 0, js_log, LOG_LEVEL_WARN),
    JS_CFUNC_MAGIC_DEF("error", 0, js_log, LOG_LEVEL_ERROR),
};

static const JSCFunctionListEntry global_funcs[] = {
    JS_CFUNC_MAGIC_DEF("setTimeout", 2, js_set_timer, 0),
    JS_CFUNC_MAGIC_DEF("setInterval", 2, js_set_timer, 1),
    JS_CFUNC_DEF("clearTimeout", 1, js_clear_timer),
    JS_CFUNC_DEF("clearInterval", 1, js_clear_timer),
};

#define COUNT_OF(a) ((int)(sizeof(a) / sizeof((a)[0])))

int host_install_globals(struct vm *vm)
{
    JSContext *ctx = vm->sb.ctx;
    JSValue global = JS_GetGlobalObject(ctx);
    JSValue console = JS_NewObject(ctx);
    int rc = JS_IsException(global) || JS_IsException(console) ? -1 : 0;
    if (rc == 0) {
        JS_SetPropertyFunctionList(ctx, global, global_funcs, COUNT_OF(global_funcs));
        JS_SetPropertyFunctionList(ctx, console, console_funcs, COUNT_OF(console_funcs));
        rc = JS_SetPropertyStr(ctx, global, "console", console) < 0 ? -1 : 0;
        console = JS_UNDEFINED;
    }
    JS_FreeValue(ctx, console);
    JS_FreeValue(ctx, global);
    return rc;
}

JSValue host_event_names(JSContext *ctx, uint32_t mask)
{
    JSValue names = JS_NewArray(ctx);
    uint32_t n = 0;
    for (int k = 0; k < EVENT_KIND_COUNT && !JS_IsException(names); k++) {
        if (!(mask & (1u << k)))
            continue;
        JSValue name = JS_NewString(ctx, js_event_names[k]);
        if (JS_IsException(name) ||
            JS_DefinePropertyValueUint32(ctx, names, n++, name, JS_PROP_C_W_E) < 0) {
            JS_FreeValue(ctx, names);
            return JS_EXCEPTION;
        }
    }
    return names;
}

static JSValue parse_json(JSContext *ctx, const char *text, const char *what)
{
    const char *src = text ? text : "null";
    return JS_ParseJSON(ctx, src, strlen(src), what);
}

static int set(JSContext *ctx, JSValueConst obj, const char *name, JSValue v)
{
    if (JS_IsException(v))
        return -1;
    return JS_DefinePropertyValueStr(ctx, obj, name, v, JS_PROP_C_W_E) < 0 ? -1 : 0;
}

static JSValue make_group(JSContext *ctx, const JSCFunctionListEntry *funcs, int n)
{
    JSValue o = JS_NewObject(ctx);
    if (!JS_IsException(o))
        JS_SetPropertyFunctionList(ctx, o, funcs, n);
    return o;
}

JSValue host_make_env(struct vm *vm)
{
    JSContext *ctx = vm->sb.ctx;
    JSValue env = JS_NewObject(ctx);
    if (JS_IsException(env))
        return env;
    int rc = 0;
    rc |= set(ctx, env, "config", parse_json(ctx, vm->plan->config_json, "<config>"));
    rc |= set(ctx, env, "metadata", parse_json(ctx, vm->plan->metadata_json, "<metadata>"));
    /* metadata.events until subscribedEvents() narrows it */
    rc |= set(ctx, env, "events", host_event_names(ctx, vm->plan->events));
    rc |= set(ctx, env, "helpers", make_group(ctx, helper_funcs, COUNT_OF(helper_funcs)));
    rc |= set(ctx, env, "runtime", make_group(ctx, runtime_funcs, COUNT_OF(runtime_funcs)));
    if (rc != 0) {
        JS_FreeValue(ctx, env);
        return JS_EXCEPTION;
    }
    return env;
}
