/*
 * validate: decides whether a source file is a strategy module, and says
 * exactly where it is not.
 *
 * The module runs in a throwaway sandbox (memory cap, time budget, no host
 * access) as CommonJS. Stages, in order; the first failing stage ends it:
 *   compile   the source does not parse (line/column of the offending token)
 *   execute   the top level throws or runs past its budget (line/column of
 *             the throwing statement)
 *   metadata  module.exports.metadata missing or invalid:
 *               name      required, a valid strategy name (core/names.h)
 *               displayName  string of 1..80 characters
 *               description  optional string
 *               tag       optional, a valid tag
 *               events    non-empty array of canonical event names:
 *                         Trade Ticker BookSnapshot ExecReport KlineSummary
 *                         InstrumentUpdate BalanceUpdate RiskControl Extension
 *               config    optional array of fields {name, type, description?,
 *                         default?, required?, options? (enum values, each
 *                         once; enum only)} and no other key, type in
 *                         string|int|float|bool|duration|enum; a default
 *                         must have the field's type; names unique; the
 *                         keys the gateway reads (config.h) declared with
 *                         a type and default the gateway takes
 *               other     keys of the author's own, except one a typo away
 *                         from a field above (its misspelling)
 *   create    module.exports.create is not a function
 *
 * Normalised metadata (what every listing shows):
 *   {"name", "displayName", "description" ("" if none), "tag" (only if
 *    given), "events": [...], "config": [{"name", "type", "description"
 *    ("" if none), "default" (only if given), "required" (false if not
 *    given), "options" (enum only)}]}
 *
 * Contract: thread-safe (each call makes its own sandboxes). A module that
 * does not validate is ERR_UNPROCESSABLE with details {"diagnostics": [...]};
 * each diagnostic is {"stage", "message", "line", "column", "hint"} with
 * line/column 1-based (0 when not applicable; lines ended at LF, CR, CRLF,
 * U+2028 and U+2029, as JavaScript ends them, columns in code points) and
 * hint a sentence that tells the author what to do. The error's message
 * is "<file>:<line>:<column>: ..." or, without a position, "<file>: ...".
 *
 * Details of the stages
 * - compile and execute run exactly what production runs (js_compile, then
 *   js_module_load into a fresh sandbox), so a module that validates loads.
 * - execute: an Error thrown by `throw [new] Name(...)` is placed at the
 *   `throw` keyword; other failures at the innermost frame in the file. A
 *   thrown value that is not an Error, the budget and the memory cap have
 *   no reliable position (0, or the allocation site for memory), except a
 *   thrown string or number with one `throw` of that literal in the code.
 * - metadata: every problem is reported at once, up to 20 (then one last
 *   diagnostic, without a position, counts the rest: metadata built by code
 *   can hold any number of bad values); one diagnostic each, at
 *   the field as the source spells it in the metadata the module exports,
 *   a missing one at the `metadata` key, 0 when that metadata is no object
 *   literal in the source or it is unclear which one it is: see
 *   js__find_metadata); metadata is read through JSON.stringify, so functions
 *   and undefined values count as absent, so does null, and a BigInt is a
 *   problem. The author's own keys are dropped (metadata_check.c).
 *   The error's message is "<file>: <first problem>" (plus how many more,
 *   all of them counted).
 */
#ifndef STRATD_JS_VALIDATE_H
#define STRATD_JS_VALIDATE_H

#include "core/err.h"
#include "js/sandbox.h"

#include <jansson.h>
#include <stddef.h>

#define JS_VALIDATE_DEFAULT_MEMORY (32u << 20)
#define JS_VALIDATE_DEFAULT_BUDGET_NS (1000LL * 1000 * 1000)

/* Returns the normalised metadata (new reference) or NULL with err set.
 * `limits` may be NULL for the validation defaults above. */
json_t *js_validate(const char *source, size_t len, const char *filename,
                    const struct js_limits *limits, struct err *err);
/*
 * A validator keeps validations' sandboxes off their callers' paths: a
 * thread of its own keeps a few fresh kits ready (a compiler sandbox and a
 * strategy sandbox each, built under the validation defaults) and frees
 * the ones validations used (the compiled module, the loaded one), so a
 * validation only compiles, runs and checks. Every validation still meets
 * sandboxes nothing ran in before, under its own limits; when none is
 * ready it builds its own, so results never depend on the validator.
 *
 * js_validator_new: 0, or -1 with err (out of memory, no thread). The
 * caller owns the validator. js_validator_run: any thread, any number at
 * once; v may be NULL (then it is js_validate). js_validator_free: joins
 * the thread and frees every kit; no run may be in progress. NULL is a
 * no-op.
 */
struct js_validator;

int js_validator_new(struct js_validator **out, struct err *err);
json_t *js_validator_run(struct js_validator *v, const char *source, size_t len,
                         const char *filename, const struct js_limits *limits, struct err *err);
void js_validator_free(struct js_validator *v);

/* The canonical event names, and the handler each is delivered to. */
extern const char *const js_event_names[];
extern const size_t js_event_count;
int js_event_index(const char *name); /* -1 if not canonical */

#endif
