/*
 * sandbox: one QuickJS runtime and context with the limits stratd enforces.
 *
 * A sandbox has its own heap (JSRuntime) with a memory cap and a maximum
 * stack size, a per-callback CPU budget enforced by QuickJS's interrupt
 * handler, and a global object holding only ECMAScript built-ins: no std or
 * os modules, no require, no filesystem, no module loader. Strategies see the
 * host only through what the runtime installs on top.
 *
 * Contract
 * - A sandbox belongs to one thread at a time; every call on it (and every
 *   QuickJS call on sb->ctx) must come from that thread. Moving a sandbox to
 *   another thread is allowed between calls (call JS_UpdateStackTop first,
 *   which js_sandbox_arm does).
 * - js_sandbox_arm(budget) must precede each entry into JS; when the budget
 *   runs out the interrupt handler makes QuickJS throw an uncatchable
 *   "interrupted" error and js_sandbox_overran() turns true.
 * - Memory: when the cap is hit QuickJS throws out-of-memory; the caller
 *   checks js_sandbox_classify() to tell the cases apart.
 * - js_sandbox_free() releases everything, even mid-failure.
 * - Sandboxes share one budget ticker thread (js/ticker.c): the first
 *   js_sandbox_init starts it, and the js_sandbox_free of the last
 *   sandbox stops and joins it (waiting up to a tick, 1 ms).
 * - The runtime keeps the sandbox's address (allocator and interrupt
 *   handler): a sandbox must not be moved or copied while initialised.
 * - The global object holds the ECMAScript built-ins strategies need (base
 *   objects, BigInt, Date, RegExp, JSON, Proxy, Reflect, Map/Set/WeakMap/
 *   WeakSet, typed arrays, Promise, WeakRef/FinalizationRegistry). eval()
 *   and new Function() throw: compiling source is js_compile()'s job, in its
 *   own runtime. Atomics.wait() throws (a worker must never block).
 */
#ifndef STRATD_JS_SANDBOX_H
#define STRATD_JS_SANDBOX_H

#include "core/err.h"

#include <quickjs.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JS_SANDBOX_DEFAULT_MEMORY (64u << 20)
#define JS_SANDBOX_DEFAULT_STACK (256u << 10)
#define JS_SANDBOX_DEFAULT_BUDGET_NS (50LL * 1000 * 1000)

struct js_limits {
    size_t memory_bytes; /* heap cap; 0 = JS_SANDBOX_DEFAULT_MEMORY */
    size_t stack_bytes;  /* 0 = JS_SANDBOX_DEFAULT_STACK */
    int64_t budget_ns;   /* per callback; 0 = JS_SANDBOX_DEFAULT_BUDGET_NS */
};

struct js__arena;

struct js_sandbox {
    JSRuntime *rt;
    JSContext *ctx;
    struct js_limits limits;
    int64_t deadline_ns; /* monotonic; 0 = unarmed, INT64_MAX until the clock starts */
    /* The budget is meant as CPU time, not wall time: past the monotonic
     * deadline (the cheap check) the thread's CPU clock is sampled, so a
     * strategy is not stopped for time other processes took from it (see
     * budget_spent in sandbox.c). */
    int64_t armed_budget_ns;
    int64_t armed_at_ns; /* when the budget's clock started: see budget_started */
    bool budget_started; /* false from arm until the call's first check */
    int64_t cpu_mark_ns; /* thread CPU at mark_at_ns; -1 before the first sample */
    int64_t mark_at_ns;
    bool overran;                    /* the interrupt handler fired since the last arm */
    bool out_of_memory;              /* an allocation was refused since the last arm */
    uint32_t stack_overflows_at_arm; /* the runtime's count of them at the last arm */
    size_t heap_bytes;               /* kept by the sandbox's allocator; see memory_used */
    void *user;                      /* the owner's pointer (the runtime's instance) */
    /* A compiler sandbox's allocations are carved from an arena (see
     * js/internal.h); NULL for every other sandbox. */
    struct js__arena *arena;
    /* A compiler sandbox runs no code: the budget can strike only in the
     * parser (compiling a regular expression literal), where the
     * exception's position is the literal's. */
    bool compiler;
};

/* How the last failed call into JS failed. */
enum js_failure {
    JS_FAILURE_EXCEPTION, /* a catchable JS exception (a strategy bug) */
    JS_FAILURE_BUDGET,    /* ran past its CPU budget */
    JS_FAILURE_MEMORY,    /* hit the memory cap */
    JS_FAILURE_STACK,     /* recursed past the stack limit */
};

/* `limits` may be NULL for the defaults. Fails with ERR_INVALID when the
 * memory cap is below what a fresh sandbox needs, ERR_INTERNAL otherwise. */
int js_sandbox_init(struct js_sandbox *sb, const struct js_limits *limits, struct err *err);
void js_sandbox_free(struct js_sandbox *sb);

/* Keeps the budget ticker thread as if a sandbox were alive, until the
 * matching release (any thread). A new thread inherits its creator's
 * scheduling class, and one at the idle class cannot give it the normal
 * one back: a caller that lets idle-class threads build sandboxes holds
 * the ticker first, so that it is started (or kept) by a normal thread. */
void js_sandbox_hold_ticker(void);
void js_sandbox_release_ticker(void);
/* Replaces the limits of a sandbox no code has run in yet (one built ahead
 * of time with the defaults, on any thread; call it on the thread that will
 * run the sandbox), as if js_sandbox_init had been given them:
 * the memory cap, the stack size and the budget. Fails with ERR_INVALID,
 * leaving the sandbox as it was, when the cap is below what the sandbox
 * already uses. */
int js_sandbox_set_limits(struct js_sandbox *sb, const struct js_limits *limits, struct err *err);
/* Starts a budget window for the next entry into JS (0 = the sandbox's
 * budget) and clears `overran` and `out_of_memory`. Reads no clock: the
 * window's clock starts at the call's first check, within a tick of the
 * budget ticker (1 ms) of the entry, so a call may overrun its budget by
 * up to a tick before it is stopped, and is never stopped before it. */
void js_sandbox_arm(struct js_sandbox *sb, int64_t budget_ns);
void js_sandbox_disarm(struct js_sandbox *sb);
static inline bool js_sandbox_overran(const struct js_sandbox *sb)
{
    return sb->overran;
}
/* Whether QuickJS threw a stack overflow error since the last arm, caught
 * by the strategy or not. */
bool js_sandbox_stack_overflowed(const struct js_sandbox *sb);

/* Runs pending promise jobs (microtasks) inside the current budget window
 * until none is left. Returns 0, or -1 when a job failed or the budget ran
 * out; js_sandbox_take_exception() then says how. */
int js_sandbox_run_jobs(struct js_sandbox *sb);

/* Details of a pending exception, taken out of the context (which is left
 * without one). Strings are malloc'ed (NULL only if out of memory);
 * line/column are 1-based, 0 if unknown; columns count Unicode code points.
 * `line`/`column` are those of the innermost frame in `filename` (the
 * strategy's own file; NULL = any file), so they point at the strategy's
 * code rather than at a built-in.
 *
 * Failure: `overran` -> budget; `out_of_memory` or an "out of memory"
 * InternalError -> memory; a "stack overflow" InternalError -> stack;
 * anything else -> exception. A thrown value that is not an Error (throw 42)
 * has no stack: its name is its type ("number", "string", "object", "null",
 * ...) and its message the value as text (JSON for plain objects).
 * Extraction may run the thrown object's own getters or toString: it does
 * so under a short budget of its own and with a little memory above the
 * cap, and leaves `overran`, `out_of_memory` and the deadline as they were.
 * Messages are cut to JS_EXCEPTION_MESSAGE_MAX bytes and stacks to
 * JS_EXCEPTION_STACK_MAX (at a UTF-8 boundary) so that a runaway recursion
 * cannot flood the logs. Callable with no exception pending (e.g. after
 * js_sandbox_run_jobs() ran out of budget): the failure is then made up
 * from the flags. */
#define JS_EXCEPTION_MESSAGE_MAX 1024
#define JS_EXCEPTION_STACK_MAX 4096

struct js_exception {
    enum js_failure failure;
    char *name; /* "TypeError", "SyntaxError", ... */
    char *message;
    char *stack; /* the JS stack trace text, may be empty */
    int line;
    int column;
};

void js_sandbox_take_exception(struct js_sandbox *sb, const char *filename,
                               struct js_exception *out);
void js_exception_free(struct js_exception *ex);
/* Where a limit struck, from the exception's stack, for the author: "in
 * spin, called at strategy.js:9:3 (in onTrade)", with ", N calls deep" for
 * a recursion, or "in down, more than N calls deep" when the caller is
 * past the stack kept. QuickJS places an interrupt in a loop that made no
 * call at its function's first line, so the innermost frame gives its
 * name only and its caller the position; "" when the stack shows neither
 * a caller in `filename` nor a recursion (the handler's own loop). Reads
 * only `ex`: any thread. */
void js_exception_where(const struct js_exception *ex, const char *filename, char *out,
                        size_t size);

/* Text taken from JavaScript for JSON and C strings (text.c).
 * js_text_clean: `text` (QuickJS's UTF-8 of a string, `len` bytes) as a
 * malloc'ed C string that is valid UTF-8 and holds no NUL: a lone
 * surrogate, which QuickJS writes as three bytes that are not UTF-8,
 * becomes one U+FFFD, every other invalid byte one U+FFFD too, and a NUL
 * the six characters \u0000, so nothing after it is lost. At most `max`
 * bytes, cut at a character boundary (*cut, when not NULL, says whether
 * anything was left out). NULL only when out of memory.
 * js_text_of: the same for String(value), or NULL with the exception
 * (a throwing toString, a symbol) left pending for the caller.
 * js_text_fit: drops an incomplete UTF-8 sequence at the end of `text`,
 * as snprintf leaves when it cuts valid UTF-8. Any thread. */
char *js_text_clean(const char *text, size_t len, size_t max, bool *cut);
char *js_text_of(JSContext *ctx, JSValueConst value, size_t max);
void js_text_fit(char *text);

/* Bytes currently allocated in the sandbox's heap (as QuickJS counts them
 * against the cap: usable size plus a per-allocation overhead). O(1). */
size_t js_sandbox_memory_used(struct js_sandbox *sb);

#endif
