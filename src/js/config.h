/*
 * config: an instance's configuration, typed by its strategy's metadata.
 *
 * js_config_resolve() merges the metadata defaults with the instance's own
 * config and checks every declared field's type, so a wrong type is refused
 * when the instance is created or updated, never discovered at run time:
 *   string   JSON string
 *   int      JSON integer (a float with an integral value is accepted)
 *   float    JSON number
 *   bool     JSON boolean
 *   duration "250ms", "5s", "1m", "1h", "1h30m" or an integer of milliseconds;
 *            the resolved value is the number of milliseconds
 *   enum     a string among the field's options
 * A required field with neither a value nor a default is an error; a JSON
 * null counts as no value. Keys the metadata does not declare are kept as
 * given (e.g. gateway keys such as dry_run). The result lists the declared
 * fields first (metadata order), then the other keys, and shares no value
 * with its inputs; floats come out as reals, ints as integers. Errors are
 * ERR_INVALID naming the field, with details {"field": "config.<field>"}:
 * "config.<field>: expected int, got string"; an enum or duration quotes
 * the rejected text ("expected one of fast, slow, got \"medium\""); a
 * value that is the field's default (the instance gives none) is said to
 * be: "..., got string, the module's own default (the instance's config
 * does not set it)".
 * `metadata` is the normalised metadata (validate.h). Pure; thread-safe.
 */
#ifndef STRATD_JS_CONFIG_H
#define STRATD_JS_CONFIG_H

#include "core/err.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* instance_config may be NULL. Returns a new object or NULL with err set. */
json_t *js_config_resolve(const json_t *metadata, const json_t *instance_config, struct err *err);
/* Parses a duration string: digits alone (milliseconds), or components
 * <integer><unit> with units h, m, s, ms in decreasing order, each at most
 * once ("1h30m", "1s500ms"). No sign, fraction or space. Returns 0 and sets
 * *ms, or -1 (also on overflow). */
int js_config_parse_duration(const char *text, long long *ms);

/* The keys the gateway itself reads from an instance's resolved config,
 * whether the metadata declares them or not (runtime/spec.c applies them):
 *   dry_run          bool
 *   memory_limit_mb  a number of MiB from 1 to JS_CONFIG_MEMORY_LIMIT_MB_MAX
 *   cpu_budget_ms    a number of milliseconds above 0 and at most
 *                    JS_CONFIG_CPU_BUDGET_MS_MAX
 *   max_orders_per_second  an int from 1 to JS_CONFIG_ORDERS_PER_SECOND_MAX
 * Validation holds a module's declaration of one of them (its type and
 * default) to the same, so that no module uploads whose own defaults the
 * gateway would refuse. */
#define JS_CONFIG_MEMORY_LIMIT_MB_MAX 65536
#define JS_CONFIG_CPU_BUDGET_MS_MAX (3600 * 1000)
#define JS_CONFIG_ORDERS_PER_SECOND_MAX 100000000
/* The i-th of those keys; NULL past the last. */
const char *js_config_gateway_key(size_t i);
/* Whether the gateway takes `value` for `key`: true for a key it does not
 * read and for no value (NULL or JSON null). False fills `expected` with
 * what it takes ("bool", "a number of MiB from 1 to 65536"). */
bool js_config_gateway_accepts(const char *key, const json_t *value, char *expected,
                               size_t expected_size);

#endif
