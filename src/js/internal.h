/*
 * internal: what the js subsystem's own files share. Not part of the
 * subsystem's contract: other subsystems include sandbox.h, module.h,
 * validate.h and config.h only. Symbols here carry the js__ prefix.
 */
#ifndef STRATD_JS_INTERNAL_H
#define STRATD_JS_INTERNAL_H

#include "core/err.h"
#include "js/sandbox.h"

#include <jansson.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What a sandbox is for. A strategy sandbox holds the built-ins and cannot
 * compile source; a compiler sandbox can compile (eval intrinsic), holds
 * only the base objects the parser relies on, and drops function source
 * text from the bytecode it produces (line numbers stay). */
enum js__profile { JS__PROFILE_STRATEGY, JS__PROFILE_COMPILER };

int js__sandbox_init_profile(struct js_sandbox *sb, const struct js_limits *limits,
                             enum js__profile profile, struct err *err);

/* Where a compiler sandbox's allocations are carved from (arena.c). An
 * arena is used by one thread at a time, like its sandbox; the pool behind
 * take and give is shared by all threads. Sizes are multiples of 16 (see
 * js__arena_round) so every block stays aligned like malloc's. */
struct js__arena;

/* A recycled arena or a new one; NULL when out of memory. */
struct js__arena *js__arena_take(void);
/* Empties the arena (every block carved from it is dead) and keeps it for
 * the next take, or frees it when the pool is full. NULL is ignored. */
void js__arena_give(struct js__arena *arena);
size_t js__arena_round(size_t size);
/* `size` bytes from the arena, or NULL when they no longer fit. */
void *js__arena_alloc(struct js__arena *arena, size_t size);
/* Reclaims `block` if it is the last one carved; otherwise it stays dead
 * until js__arena_give. */
void js__arena_release(struct js__arena *arena, void *block, size_t size);
/* Grows the last block carved in place; false (nothing changed) for any
 * other block or when the arena has no room. */
bool js__arena_extend(struct js__arena *arena, void *block, size_t size, size_t new_size);

/* The budgets' time base (ticker.c): a count a thread of its own advances
 * every millisecond while sandboxes are armed, so that QuickJS's polls
 * call the interrupt handler, which reads the clocks, only when it has
 * moved (JS_SetInterruptGate).
 * Hold and release come from sandbox init and free (any thread): the first
 * hold starts the thread, the last release stops and joins it. Wake (any
 * thread, cheap when the thread runs) marks activity, so the thread keeps
 * ticking or resumes. When the thread cannot start, the count stands
 * still and the gate's poll count alone leads it to the clocks. */
extern _Atomic uint32_t js__ticker_count;
void js__ticker_hold(void);
void js__ticker_release(void);
void js__ticker_wake(void);
/* Polls after which the gate calls the handler even if the count has not
 * moved: the bound when the ticker lags or is missing. */
#define JS__POLLS_PER_CHECK 128

struct js_bytecode;

/* A fresh compiler sandbox (the compile memory allowance). */
int js__compiler_init(struct js_sandbox *sb, struct err *err);
/* js_compile in sb, a compiler sandbox no module was compiled in (built on
 * any thread), or in one of its own when sb is NULL. With sb and keep, the
 * compiled function is left in *keep (JS_UNDEFINED on failure) for the
 * owner of sb to free before sb; otherwise it is freed here. */
int js__compile_source(struct js_sandbox *sb, const char *source, size_t len, const char *filename,
                       JSValue *keep, struct js_bytecode **out, struct err *err);

/* What one validation runs in: a compiler sandbox and a strategy sandbox,
 * each either fresh (built ahead, on any thread) or left unbuilt for the
 * validation to build. A validation uses each once; then the kit holds
 * what it left (the compiled function, the loaded module) until
 * js__validation_kit_clear, on any thread, frees it. */
struct js__validation_kit {
    struct js_sandbox compiler;
    struct js_sandbox module;
    JSValue compiled;
    bool has_compiler, has_module;
    struct js__validation_kit *next; /* the owner's list */
};

/* Builds both sandboxes (the module one under the validation defaults).
 * On failure the kit is cleared and err says why. */
int js__validation_kit_build(struct js__validation_kit *kit, struct err *err);
/* js_validate in kit (a zeroed or built kit, used once). */
json_t *js__validate_in(struct js__validation_kit *kit, const char *source, size_t len,
                        const char *filename, const struct js_limits *limits, struct err *err);
/* Frees what the kit holds and zeroes it (not its `next`). */
void js__validation_kit_clear(struct js__validation_kit *kit);

/* A js_exception string, which is NULL only when memory ran out. */
static inline const char *js__text(const char *text)
{
    return text ? text : "";
}

/* {"stage", "message", "line", "column", "hint"}; NULL if out of memory. */
json_t *js__diagnostic(const char *stage, const char *message, int line, int column,
                       const char *hint);
/* ERR_UNPROCESSABLE with details {"diagnostics": diagnostics} (stolen). */
__attribute__((format(printf, 3, 4))) void js__fail(struct err *err, json_t *diagnostics,
                                                    const char *fmt, ...);
/* js__fail with one diagnostic (taken; NULL when out of memory) and the
 * text "file:line:column: message", or "file: message" where no position
 * applies. Returns -1. */
int js__fail_one(struct err *err, json_t *diagnostic, const char *filename, int line, int column,
                 const char *message);

/* Steps over a leading UTF-8 byte order mark, which editors do not show:
 * compiled and located without it, line 1's columns are the ones its author
 * sees. */
void js__skip_byte_order_mark(const char **source, size_t *len);

/* Positions in diagnostics count lines as JavaScript does: LF, CR, CRLF
 * (one break), U+2028 and U+2029 each end a line. QuickJS counts LF alone
 * (a CR-only file is one line to it), so its positions are translated
 * through a byte offset before they reach an author. */

/* The length of the line break at p (0 when there is none). */
size_t js__line_break(const char *p, const char *end);

/* The text of 1-based line `line` of `source` (without its line break),
 * or NULL past the end. */
const char *js__source_line(const char *source, size_t len, int line, size_t *line_len);

/* Makes each lone CR of a source about to be compiled an LF, in place: a
 * CR-only file then has the lines at run time (stack traces, lastError)
 * that its author sees. A lone CR can stand only where an LF could, and a
 * template literal's value has every CR as an LF already, so only a
 * function's source text (toString) shows the difference. A U+2028 or
 * U+2029 is left alone: it may be part of a string's value. */
void js__engine_text(char *text, size_t len);

/* The byte offset of a position QuickJS reports (1-based line and column,
 * lines ended by LF or a lone CR, as js__engine_text leaves them); clamped
 * to the source. */
size_t js__engine_offset(const char *source, size_t len, int line, int column);
/* The 1-based line and column, in code points, of byte `off`. */
void js__offset_position(const char *source, size_t len, size_t off, int *line, int *column);
/* A QuickJS position turned into the author's, in place; a line below 1
 * (no position) is left alone. */
void js__engine_position(const char *source, size_t len, int *line, int *column);

/* Byte offset in a line of 1-based column `column` counted in code points
 * (as QuickJS counts them); clamped to the line's length. */
size_t js__column_offset(const char *line, size_t len, int column);
/* The inverse: the 1-based column, in code points, of byte `off` of a line. */
int js__offset_column(const char *line, size_t off);

/* "32 MiB", "512 KiB" or "1000 bytes". */
void js__format_bytes(size_t bytes, char *out, size_t size);

/* The JSON type of a value as config messages name it: string, int, float,
 * bool, null, object, array; "missing" for NULL (no value). */
const char *js__json_type_name(const json_t *value);
/* True when `type` is one of the config field types. */
int js__config_type_valid(const char *type);
/* Checks `value` against a config field's type and returns the resolved
 * value in *out (a new reference; durations become milliseconds, ints
 * integers, floats reals). Returns 0, -1 on a type mismatch with `expected`
 * filled ("int", "one of fast, slow", ...), or -2 if out of memory. */
int js__config_coerce(const char *type, const json_t *options, const json_t *value, json_t **out,
                      char *expected, size_t expected_size);
/* For a config field named after a key the gateway reads (config.h) whose
 * type gives values the gateway cannot take: the types that would, as a
 * hint lists them ("int or float"), with `reads_as` filled with what the
 * gateway reads ("bool", "a number of MiB from 1 to 65536"). NULL when the
 * type fits or the key is not the gateway's. */
const char *js__config_gateway_types(const char *key, const char *type, char *reads_as,
                                     size_t reads_as_size);

/* The metadata stage (metadata_check.c): `raw`, module.exports.metadata as
 * JSON, checked and normalised into the listing's shape (config.h's
 * `metadata`). Returns it (a new reference) when nothing is wrong. Else
 * NULL, with *problems the metadata diagnostics, each without a position
 * (a new reference: at most 20, and a last one counting the *omitted rest),
 * or NULL when memory ran out. */
json_t *js__check_metadata(const json_t *raw, json_t **problems, size_t *omitted);

/* Where the source writes the metadata object the module exports
 * (locate.c): the `module.exports = { metadata: {...} }` or
 * `module.exports.metadata = {...}` assignment, or a variable declared once
 * with an object literal that it names; in a module with no such
 * assignment, the one `metadata` key or variable given an object literal.
 * Pointers are into `source`. */
struct js__metadata_site {
    const char *source;
    size_t len;
    const char *name; /* the `metadata` key or the variable */
    const char *open; /* the '{' of its object literal */
};
/* False when no such object literal is found, or it is not certain which
 * one the module exports (metadata computed, spread, declared twice). */
bool js__find_metadata(const char *source, size_t len, struct js__metadata_site *site);
/* Where, in the metadata found, the source spells out the value a
 * diagnostic's path names ("metadata.tag", "metadata.config[2]
 * (size).type"): true with the 1-based line and column of its key or
 * element, or of the nearest enclosing one the source shows (the
 * `metadata` key itself for a missing field). */
bool js__locate_metadata(const struct js__metadata_site *site, const char *path, int *line,
                         int *column);

/* A thrown string or number has no position in QuickJS: where the one
 * `throw` of that literal is (comments, strings and templates skipped),
 * false when there is none or more than one. */
bool js__locate_literal_throw(const char *source, size_t len, const char *value, bool is_string,
                              int *line, int *column);

/* QuickJS reports a private name no class declares once the class is
 * parsed, without a position: where `#name` (`name` given without its
 * '#') is used, after a '.' or before `in`. With no declaration of it in
 * the file every use is wrong and the first is given; with one (in
 * another class) only a single use is sure, else false. */
bool js__locate_private_use(const char *source, size_t len, const char *name, int *line,
                            int *column);

#endif
