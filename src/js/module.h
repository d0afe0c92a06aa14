/*
 * module: strategy modules as CommonJS, compiled once per revision.
 *
 * A strategy file is a script evaluated with two globals, `module` (an
 * object whose `exports` starts as an empty object) and `exports` (the same
 * object), exactly as in CommonJS; the module's value is `module.exports`
 * after evaluation. No wrapper is added around the source, so line and
 * column numbers in errors are those of the file.
 *
 * Compile once: js_compile() parses the source in a throwaway runtime and
 * produces bytecode (QuickJS's serialised function). Every instance of the
 * revision then runs js_module_load() on that bytecode: no re-parse. The
 * bytecode keeps line and column tables but not the functions' source text
 * (every sandbox would hold a copy), so Function.prototype.toString() on
 * strategy code shows no body.
 *
 * Contract
 * - struct js_bytecode is immutable and reference-counted; any thread may
 *   retain/release it and load it into a sandbox it owns.
 * - struct js_bytecode_cache is thread-safe: concurrent get-or-compile calls
 *   for the same hash compile once (the others wait for that compilation).
 *   A failure (source missing, does not compile) is not cached: the next
 *   call tries again. js_bytecode_cache_free() needs no call in flight.
 * - Errors: ERR_UNPROCESSABLE with details.diagnostics (see validate.h) for
 *   source that does not compile or a module that throws while loading;
 *   ERR_INTERNAL otherwise.
 */
#ifndef STRATD_JS_MODULE_H
#define STRATD_JS_MODULE_H

#include "core/err.h"
#include "core/hash.h"
#include "js/sandbox.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct js_bytecode {
    atomic_int refs;
    uint8_t *data;
    size_t len;
    char filename[128]; /* "<name>.js", shown in stack traces */
};

/* Syntax errors are ERR_UNPROCESSABLE, message "<file>:<line>:<col>: ..."
 * and one diagnostic {stage "compile", line/column of the offending token};
 * so is a compile that runs past its budget (1 s plus 1 s per 4 MB of
 * source; line and column are the token's where the compiler was reading
 * one, such as a regular expression literal, else 0).
 * `filename` (NULL: "module.js") must be shorter than 128 bytes
 * (ERR_INVALID). `source` need not be NUL-terminated. *out has one
 * reference. Thread-safe. */
int js_compile(const char *source, size_t len, const char *filename, struct js_bytecode **out,
               struct err *err);
void js_bytecode_retain(struct js_bytecode *bc);
void js_bytecode_release(struct js_bytecode *bc);

/* Installs `module`/`exports`, runs the bytecode and then the promise jobs
 * it queued (top-level async work) under one budget window of the
 * sandbox's budget, and returns module.exports (a new JSValue owned by the
 * caller). On failure returns -1 with err set: ERR_UNPROCESSABLE with one
 * diagnostic {stage "execute"}, whose message says how the top level
 * failed ("the top level threw TypeError: ...", "ran past its budget of
 * 50 ms", "hit the memory cap of 64 MiB", "recursed past the stack limit")
 * and whose line/column are those js_sandbox_take_exception() gives. A top
 * level that hit the memory cap or the stack limit and caught the error
 * fails the same way (without a position): it would start half-built. The
 * sandbox is left disarmed. */
int js_module_load(struct js_sandbox *sb, const struct js_bytecode *bc, JSValue *exports,
                   struct err *err);

/* Supplies a revision's source for the cache; *source is malloc'ed. */
typedef int (*js_source_fn)(void *ctx, const char *hex, char **source, size_t *len, char *filename,
                            size_t filename_size, struct err *err);

struct js_bytecode_cache;

struct js_bytecode_cache *js_bytecode_cache_new(void);
void js_bytecode_cache_free(struct js_bytecode_cache *cache);
/* The bytecode for revision `hex` (the key, as given), compiled through
 * `source` on first use; `source` runs without the cache's lock held and
 * may leave `filename` empty ("module.js"). Returns a retained reference. */
int js_bytecode_cache_get(struct js_bytecode_cache *cache, const char *hex, js_source_fn source,
                          void *source_ctx, struct js_bytecode **out, struct err *err);
/* Drops a revision's bytecode (after the revision is deleted); holders of
 * references keep theirs. A compilation in progress for `hex` completes for
 * the caller that started it but is not kept. */
void js_bytecode_cache_forget(struct js_bytecode_cache *cache, const char *hex);
/* How many times any source was compiled by this cache (for metrics/tests). */
uint64_t js_bytecode_cache_compilations(const struct js_bytecode_cache *cache);

#endif
