#include "registry/selector.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

/* How much of an offending part a message quotes: enough to recognise it,
 * short enough that a hostile selector cannot fill the message. */
#define QUOTE_MAX 80

enum part_kind { PART_STRATEGY, PART_TAG };

static const char *part_label(enum part_kind kind)
{
    return kind == PART_STRATEGY ? "strategy name" : "tag";
}

static int quote_len(size_t len)
{
    return (int)(len > QUOTE_MAX ? QUOTE_MAX : len);
}

static bool name_char_ok(enum part_kind kind, char c)
{
    if ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    if (kind == PART_STRATEGY)
        return c == '_' || c == '-';
    return (c >= 'A' && c <= 'Z') || c == '.' || c == '_' || c == '-';
}

/* Explains why part[0..len) is not a valid strategy name or tag. Path
 * separators and ".." get their own words because they are what an attack
 * looks like, and the operator should see that it was recognised. */
static int reject_part(enum part_kind kind, const char *part, size_t len, struct err *err)
{
    const char *label = part_label(kind);
    size_t max = kind == PART_STRATEGY ? NAMES_STRATEGY_MAX : NAMES_TAG_MAX;
    int q = quote_len(len);
    if (len == 0) {
        err_set(err, ERR_INVALID, "selector has an empty %s", label);
    } else if (memchr(part, '/', len) || memchr(part, '\\', len)) {
        err_set(err, ERR_INVALID, "%s '%.*s' contains a path separator", label, q, part);
    } else if (len >= 2 && memmem(part, len, "..", 2)) {
        err_set(err, ERR_INVALID, "%s '%.*s' contains '..'", label, q, part);
    } else if (len > max) {
        err_set(err, ERR_INVALID, "%s '%.*s...' is longer than %zu characters", label, q, part,
                max);
    } else if (!isalnum((unsigned char)part[0]) || !name_char_ok(kind, part[0])) {
        err_set(err, ERR_INVALID, "%s '%.*s' must start with a %sletter or a digit", label, q, part,
                kind == PART_STRATEGY ? "lowercase " : "");
    } else {
        size_t i = 1;
        while (i < len && name_char_ok(kind, part[i]))
            i++;
        unsigned char c = (unsigned char)part[i];
        if (isprint(c))
            err_set(err, ERR_INVALID, "%s '%.*s' contains the invalid character '%c'", label, q,
                    part, c);
        else
            err_set(err, ERR_INVALID, "%s '%.*s' contains the invalid byte 0x%02x", label, q, part,
                    c);
    }
    return -1;
}

/* Copies a validated part into dst (which holds max + 1 bytes). */
static int take_part(enum part_kind kind, const char *part, size_t len, char *dst, size_t dst_size,
                     struct err *err)
{
    if (len == 0 || len >= dst_size)
        return reject_part(kind, part, len, err);
    memcpy(dst, part, len);
    dst[len] = '\0';
    bool ok = kind == PART_STRATEGY ? names_valid_strategy(dst) : names_valid_tag(dst);
    if (!ok) {
        dst[0] = '\0';
        return reject_part(kind, part, len, err);
    }
    return 0;
}

static void lower_hex(const char *hex, size_t len, char *out)
{
    for (size_t i = 0; i < len; i++)
        out[i] = (char)tolower((unsigned char)hex[i]);
    out[len] = '\0';
}

/* hex[0..len) after an optional "sha256:": a full hash or a prefix. */
static int take_hex(const char *hex, size_t len, struct selector *out, struct err *err)
{
    if (strncmp(hex, HASH_PREFIX, HASH_PREFIX_LEN) == 0) {
        hex += HASH_PREFIX_LEN;
        len -= HASH_PREFIX_LEN;
    }
    int q = quote_len(len);
    if (len == 0) {
        err_set(err, ERR_INVALID, "selector has an empty hash");
        return -1;
    }
    if (!hash_is_hex(hex, len)) {
        size_t i = 0;
        while (isxdigit((unsigned char)hex[i]))
            i++;
        unsigned char c = (unsigned char)hex[i];
        if (c == '/' || c == '\\')
            err_set(err, ERR_INVALID, "hash '%.*s' contains a path separator", q, hex);
        else if (isprint(c))
            err_set(err, ERR_INVALID, "hash '%.*s' contains the non-hex character '%c'", q, hex, c);
        else
            err_set(err, ERR_INVALID, "hash '%.*s' contains the invalid byte 0x%02x", q, hex, c);
        return -1;
    }
    if (len > HASH_HEX_LEN) {
        err_set(err, ERR_INVALID, "hash '%.*s...' is longer than %d hex digits", q, hex,
                HASH_HEX_LEN);
        return -1;
    }
    if (len < SELECTOR_MIN_PREFIX) {
        err_set(err, ERR_INVALID, "hash prefix '%.*s' is shorter than %d hex digits", q, hex,
                SELECTOR_MIN_PREFIX);
        return -1;
    }
    out->kind = SELECTOR_HASH;
    lower_hex(hex, len, out->hex);
    out->hex_len = len;
    return 0;
}

static int parse_at(const char *text, size_t len, const char *at, struct selector *out,
                    struct err *err)
{
    size_t name_len = (size_t)(at - text);
    if (take_part(PART_STRATEGY, text, name_len, out->name, sizeof out->name, err) != 0)
        return -1;
    return take_hex(at + 1, len - name_len - 1, out, err);
}

static int parse_colon(const char *text, size_t len, const char *colon, struct selector *out,
                       struct err *err)
{
    size_t name_len = (size_t)(colon - text);
    const char *rest = colon + 1;
    size_t rest_len = len - name_len - 1;
    /* "sha256:<hex>" names a hash in any strategy; a strategy called
     * "sha256" can still be reached with a tag that is not all hex. */
    if (name_len == 6 && memcmp(text, "sha256", 6) == 0 && rest_len > 0 &&
        hash_is_hex(rest, rest_len))
        return take_hex(text, len, out, err);
    if (take_part(PART_STRATEGY, text, name_len, out->name, sizeof out->name, err) != 0)
        return -1;
    if (take_part(PART_TAG, rest, rest_len, out->tag, sizeof out->tag, err) != 0)
        return -1;
    out->kind = SELECTOR_TAG;
    return 0;
}

static int parse_bare(const char *text, size_t len, struct selector *out, struct err *err)
{
    bool hexish = len >= SELECTOR_MIN_PREFIX && len <= HASH_HEX_LEN && hash_is_hex(text, len);
    if (len <= NAMES_STRATEGY_MAX && names_valid_strategy(text)) {
        memcpy(out->name, text, len + 1);
        strcpy(out->tag, "latest");
        out->kind = SELECTOR_LATEST;
        if (hexish) {
            out->may_be_prefix = true;
            lower_hex(text, len, out->hex);
            out->hex_len = len;
        }
        return 0;
    }
    if (hexish)
        return take_hex(text, len, out, err);
    return reject_part(PART_STRATEGY, text, len, err);
}

int selector_parse(const char *text, struct selector *out, struct err *err)
{
    memset(out, 0, sizeof *out);
    size_t len = text ? strnlen(text, SELECTOR_TEXT_MAX + 1) : 0;
    if (len == 0) {
        err_set(err, ERR_INVALID, "empty selector");
        return -1;
    }
    if (len > SELECTOR_TEXT_MAX) {
        err_set(err, ERR_INVALID, "selector '%.*s...' is longer than %d characters", QUOTE_MAX,
                text, SELECTOR_TEXT_MAX);
        return -1;
    }
    int rc;
    const char *at = memchr(text, '@', len);
    const char *colon = memchr(text, ':', len);
    if (at && (!colon || at < colon))
        rc = parse_at(text, len, at, out, err);
    else if (colon)
        rc = parse_colon(text, len, colon, out, err);
    else
        rc = parse_bare(text, len, out, err);
    if (rc != 0)
        memset(out, 0, sizeof *out);
    return rc;
}

void selector_format(const struct selector *sel, char *out, size_t size)
{
    if (size == 0)
        return;
    switch (sel->kind) {
    case SELECTOR_LATEST:
        snprintf(out, size, "%s", sel->name);
        break;
    case SELECTOR_TAG:
        snprintf(out, size, "%s:%s", sel->name, sel->tag);
        break;
    case SELECTOR_HASH:
        snprintf(out, size, "%s%s" HASH_PREFIX "%s", sel->name, sel->name[0] ? "@" : "", sel->hex);
        break;
    default:
        out[0] = '\0';
    }
}
