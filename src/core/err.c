#include "core/err.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

/* A message cut at ERR_MESSAGE_MAX may end inside a UTF-8 character (it
 * quotes JS messages, names, paths): drop that character's bytes, so that
 * the message stays valid UTF-8 for JSON. */
static void cut_at_character(char *message, size_t len)
{
    for (size_t back = 1; back <= 4 && back <= len; back++) {
        unsigned char c = (unsigned char)message[len - back];
        if ((c & 0xC0) == 0x80)
            continue;
        size_t need = c >= 0xF0 ? 4 : c >= 0xE0 ? 3 : c >= 0xC0 ? 2 : 1;
        if (back < need)
            message[len - back] = '\0';
        return;
    }
}

void err_vset(struct err *err, enum err_kind kind, const char *fmt, va_list ap)
{
    if (!err)
        return;
    err->kind = kind;
    int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
    if (n >= (int)sizeof err->message)
        cut_at_character(err->message, sizeof err->message - 1);
}

void err_set(struct err *err, enum err_kind kind, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, kind, fmt, ap);
    va_end(ap);
}

void err_set_errno(struct err *err, enum err_kind kind, int errnum, const char *fmt, ...)
{
    if (!err)
        return;
    va_list ap;
    va_start(ap, fmt);
    err_vset(err, kind, fmt, ap);
    va_end(ap);
    if (errnum == ENOSPC || errnum == EDQUOT)
        err->kind = ERR_NO_SPACE;
    size_t used = strlen(err->message);
    if (used + 3 < sizeof err->message)
        snprintf(err->message + used, sizeof err->message - used, ": %s", strerror(errnum));
}

void err_set_details(struct err *err, json_t *details)
{
    if (!err) {
        json_decref(details);
        return;
    }
    json_decref(err->details);
    err->details = details;
}

void err_add_detail(struct err *err, const char *key, json_t *value)
{
    if (!err) {
        json_decref(value);
        return;
    }
    if (!err->details)
        err->details = json_object();
    if (!err->details) {
        json_decref(value);
        return;
    }
    json_object_set_new(err->details, key, value);
}

void err_clear(struct err *err)
{
    if (!err)
        return;
    json_decref(err->details);
    err->details = NULL;
    err->kind = ERR_NONE;
    err->message[0] = '\0';
}

void err_move(struct err *dst, struct err *src)
{
    if (!dst) {
        err_clear(src);
        return;
    }
    err_clear(dst);
    *dst = *src;
    src->details = NULL;
    src->kind = ERR_NONE;
    src->message[0] = '\0';
}

int err_http_status(enum err_kind kind)
{
    switch (kind) {
    case ERR_NONE:
        return 200;
    case ERR_INVALID:
        return 400;
    case ERR_UNAUTHORIZED:
        return 401;
    case ERR_FORBIDDEN:
        return 403;
    case ERR_NOT_FOUND:
        return 404;
    case ERR_METHOD:
        return 405;
    case ERR_CONFLICT:
        return 409;
    case ERR_TOO_LARGE:
        return 413;
    case ERR_UNPROCESSABLE:
        return 422;
    case ERR_RATE_LIMITED:
        return 429;
    case ERR_UNAVAILABLE:
        return 503;
    case ERR_NO_SPACE:
        return 507;
    case ERR_INTERNAL:
        break;
    }
    return 500;
}

const char *err_kind_name(enum err_kind kind)
{
    switch (kind) {
    case ERR_NONE:
        return "none";
    case ERR_INVALID:
        return "invalid";
    case ERR_UNAUTHORIZED:
        return "unauthorized";
    case ERR_FORBIDDEN:
        return "forbidden";
    case ERR_NOT_FOUND:
        return "notFound";
    case ERR_METHOD:
        return "methodNotAllowed";
    case ERR_CONFLICT:
        return "conflict";
    case ERR_TOO_LARGE:
        return "tooLarge";
    case ERR_UNPROCESSABLE:
        return "unprocessable";
    case ERR_RATE_LIMITED:
        return "rateLimited";
    case ERR_UNAVAILABLE:
        return "unavailable";
    case ERR_NO_SPACE:
        return "noSpace";
    case ERR_INTERNAL:
        break;
    }
    return "internal";
}
