/*
 * jsonutil: small helpers around jansson that every layer needs.
 *
 * Contract: all functions are thread-safe (jansson values are not shared
 * between threads without a lock by their owners). Returned json_t values are
 * new references owned by the caller; returned char* are malloc'ed and owned
 * by the caller.
 */
#ifndef STRATD_CORE_JSONUTIL_H
#define STRATD_CORE_JSONUTIL_H

#include "core/err.h"
#include "core/strbuf.h"

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

/* Parses `len` bytes of JSON text. On failure fills err (ERR_INVALID) with
 * "invalid JSON at line L, column C: reason" and details {line, column}. */
json_t *jsonutil_parse(const char *data, size_t len, struct err *err);
/* Parses and requires an object at the top level. */
json_t *jsonutil_parse_object(const char *data, size_t len, struct err *err);
/* jsonutil_parse_object for a body with one long string member (an
 * upload's source): when the top-level `member` is a string of 1 KiB or
 * more, it is decoded by a direct scan (jansson's lexer reads a string one
 * character at a time through its stream, some 150 instructions a byte)
 * and the rest by jansson with that value left empty. What is accepted,
 * the result and every error are those of jsonutil_parse_object: anything
 * the scan does not take goes to jansson whole. */
json_t *jsonutil_parse_object_lifting(const char *data, size_t len, const char *member,
                                      struct err *err);
/* A JSON string from bytes that may not be valid UTF-8: invalid sequences
 * become U+FFFD. Never returns NULL unless out of memory. */
json_t *jsonutil_string_lossy(const char *data, size_t len);
/* Compact, key-order-preserving serialisation; NULL if out of memory. */
char *jsonutil_dump(const json_t *value, size_t *len);
/* Pretty serialisation with 2-space indent and a final newline, for files
 * people read (registry.json). */
char *jsonutil_dump_pretty(const json_t *value, size_t *len);

/* Appends s as a JSON string: the bytes jsonutil_dump() writes for
 * json_string(s) (and json_dumps with any indent), "null" if s is not
 * UTF-8, as a NULL member of a tree is written. */
void jsonutil_put_string(struct strbuf *sb, const char *s);

/* Typed getters for request bodies. Each returns 0 and stores the value, 1
 * when the key is absent (value untouched), or -1 with ERR_INVALID naming the
 * field when the value has the wrong type. */
int jsonutil_get_string(const json_t *obj, const char *key, const char **value, struct err *err);
int jsonutil_get_bool(const json_t *obj, const char *key, bool *value, struct err *err);
int jsonutil_get_int(const json_t *obj, const char *key, long long *value, struct err *err);
/* An array whose every element is a string. */
int jsonutil_get_string_array(const json_t *obj, const char *key, const json_t **value,
                              struct err *err);
/* The first key of obj outside known[0..n), or NULL when there is none. The
 * string is obj's: valid while obj is, unchanged. */
const char *jsonutil_unknown_key(const json_t *obj, const char *const *known, size_t n);

#endif
