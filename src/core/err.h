/*
 * err: the error value every fallible stratd function fills in.
 *
 * Contract
 * - A fallible function takes `struct err *err` last and returns 0 on
 *   success or -1 on failure; on failure it has called err_set() exactly
 *   once. `err` may be NULL when the caller does not want the reason.
 * - `details` is a jansson object owned by the err (NULL means none); it is
 *   released by err_clear(). A struct err must be err_clear()ed (or never
 *   set) before it goes out of scope.
 * - The kind decides the HTTP status the API answers with; the message is
 *   one human sentence that names the offending input.
 * - Thread safety: a struct err belongs to the thread that declared it.
 */
#ifndef STRATD_CORE_ERR_H
#define STRATD_CORE_ERR_H

#include <jansson.h>
#include <stdarg.h>

enum err_kind {
    ERR_NONE = 0,
    ERR_INVALID,       /* malformed input (400) */
    ERR_UNAUTHORIZED,  /* no or bad credentials (401) */
    ERR_FORBIDDEN,     /* credentials lack the role (403) */
    ERR_NOT_FOUND,     /* unknown selector, id or route (404) */
    ERR_METHOD,        /* route exists, method does not (405) */
    ERR_CONFLICT,      /* pinned revision, tag guard, duplicate id (409) */
    ERR_TOO_LARGE,     /* body or header over a limit (413) */
    ERR_UNPROCESSABLE, /* a module that does not validate (422) */
    ERR_RATE_LIMITED,  /* too many requests (429) */
    ERR_INTERNAL,      /* a bug or an unexpected failure (500) */
    ERR_UNAVAILABLE,   /* shutting down, overloaded (503) */
    ERR_NO_SPACE,      /* disk full while writing (507) */
};

#define ERR_MESSAGE_MAX 512

struct err {
    enum err_kind kind;
    char message[ERR_MESSAGE_MAX];
    json_t *details;
};

/* one line: the formatter would spread the initializer over four */
/* clang-format off */
#define ERR_INIT {ERR_NONE, {0}, NULL}
/* clang-format on */

/* Records the failure; replaces any earlier message and keeps details. */
__attribute__((format(printf, 3, 4))) void err_set(struct err *err, enum err_kind kind,
                                                   const char *fmt, ...);
__attribute__((format(printf, 3, 0))) void err_vset(struct err *err, enum err_kind kind,
                                                    const char *fmt, va_list ap);
/* Like err_set, with the text of errno appended ("...: No such file"). Maps
 * ENOSPC/EDQUOT to ERR_NO_SPACE, everything else to `kind`. */
__attribute__((format(printf, 4, 5))) void err_set_errno(struct err *err, enum err_kind kind,
                                                         int errnum, const char *fmt, ...);
/* Takes ownership of `details` (a JSON object); replaces earlier details. */
void err_set_details(struct err *err, json_t *details);
/* Adds one key to details, creating the object if needed; steals `value`. */
void err_add_detail(struct err *err, const char *key, json_t *value);
void err_clear(struct err *err);
/* Moves src into dst (dst is cleared first); src is left empty. */
void err_move(struct err *dst, struct err *src);

int err_http_status(enum err_kind kind);
const char *err_kind_name(enum err_kind kind);

#endif
