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
 * the rejected text ("expected one of fast, slow, got \"medium\"").
 * `metadata` is the normalised metadata (validate.h). Pure; thread-safe.
 */
#ifndef STRATD_JS_CONFIG_H
#define STRATD_JS_CONFIG_H

#include "core/err.h"

#include <jansson.h>

/* instance_config may be NULL. Returns a new object or NULL with err set. */
json_t *js_config_resolve(const json_t *metadata, const json_t *instance_config, struct err *err);
/* Parses a duration string: digits alone (milliseconds), or components
 * <integer><unit> with units h, m, s, ms in decreasing order, each at most
 * once ("1h30m", "1s500ms"). No sign, fraction or space. Returns 0 and sets
 * *ms, or -1 (also on overflow). */
int js_config_parse_duration(const char *text, long long *ms);

#endif
