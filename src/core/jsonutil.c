#include "core/jsonutil.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

json_t *jsonutil_parse(const char *data, size_t len, struct err *err)
{
    json_error_t jerr;
    /* No NUL in strings: every name, id and selector is read as a C string,
     * which would silently end at it ("noop\u0000:prod" taken as "noop"). */
    json_t *value = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
    if (value)
        return value;
    if (strstr(jerr.text, "\\u0000"))
        err_set(err, ERR_INVALID,
                "invalid JSON at line %d, column %d: a string holds \\u0000 (NUL), which no "
                "field may hold",
                jerr.line, jerr.column);
    else
        err_set(err, ERR_INVALID, "invalid JSON at line %d, column %d: %s", jerr.line, jerr.column,
                jerr.text);
    err_add_detail(err, "line", json_integer(jerr.line));
    err_add_detail(err, "column", json_integer(jerr.column));
    err_add_detail(err, "position", json_integer(jerr.position));
    return NULL;
}

json_t *jsonutil_parse_object(const char *data, size_t len, struct err *err)
{
    json_error_t jerr;
    /* a body of "x", 1 or null is valid JSON, only not an object: said so,
     * rather than called invalid */
    json_t *value = json_loadb(data, len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &jerr);
    if (!value)
        return jsonutil_parse(data, len, err); /* for the message and position */
    if (!json_is_object(value)) {
        static const char *const kinds[] = {"an object", "an array", "a string", "a number",
                                            "a number",  "true",     "false",    "null"};
        int type = json_typeof(value);
        err_set(err, ERR_INVALID, "expected a JSON object at the top level, got %s",
                type >= 0 && type < 8 ? kinds[type] : "something else");
        json_decref(value);
        return NULL;
    }
    return value;
}

/* Length of the valid UTF-8 sequence starting at s, or 0 if invalid. */
static size_t utf8_sequence_length(const unsigned char *s, size_t left)
{
    unsigned char c = s[0];
    size_t n;
    uint32_t cp;
    if (c < 0x80)
        return 1;
    if ((c & 0xE0) == 0xC0) {
        n = 2;
        cp = c & 0x1F;
    } else if ((c & 0xF0) == 0xE0) {
        n = 3;
        cp = c & 0x0F;
    } else if ((c & 0xF8) == 0xF0) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (n > left)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    static const uint32_t min_for_length[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min_for_length[n] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return n;
}

json_t *jsonutil_string_lossy(const char *data, size_t len)
{
    json_t *value = json_stringn(data, len);
    if (value)
        return value;
    /* Worst case every byte becomes the 3-byte replacement character. */
    char *clean = malloc(len * 3 + 1);
    if (!clean)
        return NULL;
    size_t out = 0;
    const unsigned char *s = (const unsigned char *)data;
    for (size_t i = 0; i < len;) {
        size_t n = s[i] ? utf8_sequence_length(s + i, len - i) : 0;
        if (n == 0) {
            /* U+FFFD; the buffer is terminated once, after the loop */
            memcpy(clean + out, "\xEF\xBF\xBD", 3); // NOLINT(bugprone-not-null-terminated-result)
            out += 3;
            i++;
        } else {
            memcpy(clean + out, s + i, n);
            out += n;
            i += n;
        }
    }
    value = json_stringn(clean, out);
    free(clean);
    return value;
}

/* ------------------------------------------------- lifting a long string */

/* Values shorter than this are left to jansson: the scan would not pay. */
#define LIFT_MIN_BYTES 1024

static bool json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static size_t skip_space(const char *s, size_t len, size_t at)
{
    while (at < len && json_space(s[at]))
        at++;
    return at;
}

/* With s[at] the opening quote: the index of the closing one, or len. */
static size_t string_end(const char *s, size_t len, size_t at)
{
    for (at++; at < len; at++) {
        if (s[at] == '\\')
            at++;
        else if (s[at] == '"')
            return at;
    }
    return len;
}

/* With s[at] the first byte of a value: the index just past it, or len.
 * Only brackets and strings are followed; jansson judges the rest. */
static size_t value_end(const char *s, size_t len, size_t at)
{
    int depth = 0;
    for (; at < len; at++) {
        char c = s[at];
        if (c == '"') {
            at = string_end(s, len, at);
            if (depth == 0)
                return at < len ? at + 1 : len;
        } else if (c == '{' || c == '[') {
            depth++;
        } else if (c == '}' || c == ']') {
            if (depth == 0)
                return at;
            if (--depth == 0)
                return at + 1;
        } else if (depth == 0 && (c == ',' || json_space(c))) {
            return at;
        }
    }
    return len;
}

static int hex4(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9'   ? c - '0'
                : c >= 'a' && c <= 'f' ? c - 'a' + 10
                : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                       : -1;
        if (d < 0)
            return -1;
        v = (v << 4) | (uint32_t)d;
    }
    *out = v;
    return 0;
}

static size_t put_utf8(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* One escape at s[*at] == '\\'; false for anything jansson would refuse
 * (NUL allowed, as jsonutil_parse allows it). */
static bool decode_escape(const char *s, size_t len, size_t *at, char *out, size_t *n)
{
    size_t i = *at + 1;
    if (i >= len)
        return false;
    static const char plain[] = "\"\\/bfnrt", meaning[] = "\"\\/\b\f\n\r\t";
    const char *which = s[i] ? strchr(plain, s[i]) : NULL;
    if (which) {
        out[(*n)++] = meaning[which - plain];
        *at = i + 1;
        return true;
    }
    uint32_t cp, low;
    if (s[i] != 'u' || i + 4 >= len || hex4(s + i + 1, &cp) != 0)
        return false;
    i += 5;
    if (cp == 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) /* NUL: as jsonutil_parse */
        return false;
    if (cp >= 0xD800 && cp <= 0xDBFF) {
        if (i + 6 > len || s[i] != '\\' || s[i + 1] != 'u' || hex4(s + i + 2, &low) != 0 ||
            low < 0xDC00 || low > 0xDFFF)
            return false;
        cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
        i += 6;
    }
    *n += put_utf8(out + *n, cp);
    *at = i;
    return true;
}

/* The JSON string body s[0..len) (no quotes) decoded into a new jansson
 * string, or NULL when it is not what jansson would accept. */
static json_t *decode_string(const char *s, size_t len)
{
    char *out = malloc(len ? len : 1); /* decoding never lengthens */
    if (!out)
        return NULL;
    size_t n = 0, at = 0;
    bool ok = true;
    while (ok && at < len) {
        size_t run = at;
        while (run < len && (unsigned char)s[run] >= 0x20 && (unsigned char)s[run] < 0x80 &&
               s[run] != '\\' && s[run] != '"')
            run++;
        memcpy(out + n, s + at, run - at);
        n += run - at;
        at = run;
        if (at == len)
            break;
        unsigned char c = (unsigned char)s[at];
        if (c == '\\') {
            ok = decode_escape(s, len, &at, out, &n);
        } else if (c >= 0x80) {
            size_t k = utf8_sequence_length((const unsigned char *)s + at, len - at);
            ok = k > 0;
            memcpy(out + n, s + at, k);
            n += k;
            at += k;
        } else {
            ok = false; /* a control character or a stray quote */
        }
    }
    json_t *value = ok ? json_stringn_nocheck(out, n) : NULL;
    free(out);
    return value;
}

/* Where the top-level member's string value lies: [*from, *to) between its
 * quotes. False when the object has no such member (its key written
 * without escapes), a short one, or the scan meets anything it does not
 * follow. */
static bool find_member_string(const char *s, size_t len, const char *member, size_t *from,
                               size_t *to)
{
    size_t klen = strlen(member);
    size_t at = skip_space(s, len, 0);
    if (at >= len || s[at] != '{')
        return false;
    at = skip_space(s, len, at + 1);
    while (at < len && s[at] == '"') {
        size_t key = at + 1, key_end = string_end(s, len, at);
        if (key_end >= len)
            return false;
        bool named = key_end - key == klen && memcmp(s + key, member, klen) == 0;
        at = skip_space(s, len, key_end + 1);
        if (at >= len || s[at] != ':')
            return false;
        at = skip_space(s, len, at + 1);
        if (at >= len)
            return false;
        if (named) {
            size_t end = s[at] == '"' ? string_end(s, len, at) : len;
            if (end >= len || end - (at + 1) < LIFT_MIN_BYTES)
                return false;
            *from = at + 1;
            *to = end;
            return true;
        }
        at = skip_space(s, len, value_end(s, len, at));
        if (at >= len || s[at] != ',')
            return false;
        at = skip_space(s, len, at + 1);
    }
    return false;
}

/* The object with the lifted value put back in place of its empty
 * placeholder; NULL (everything freed) when the skeleton is not an object
 * holding that placeholder. Takes value. */
static json_t *put_back(json_t *skeleton, const char *member, json_t *value)
{
    const json_t *placeholder = json_object_get(skeleton, member);
    if (!json_is_string(placeholder) || json_string_length(placeholder) != 0) {
        json_decref(skeleton);
        json_decref(value);
        return NULL;
    }
    if (json_object_set_new(skeleton, member, value) != 0) {
        json_decref(skeleton);
        return NULL;
    }
    return skeleton;
}

json_t *jsonutil_parse_object_lifting(const char *data, size_t len, const char *member,
                                      struct err *err)
{
    size_t from = 0, to = 0;
    if (!find_member_string(data, len, member, &from, &to))
        return jsonutil_parse_object(data, len, err);
    json_t *value = decode_string(data + from, to - from);
    size_t skeleton_len = len - (to - from);
    char *skeleton = value ? malloc(skeleton_len) : NULL;
    json_t *obj = NULL;
    if (skeleton) {
        memcpy(skeleton, data, from);
        memcpy(skeleton + from, data + to, len - to);
        struct err ignored = ERR_INIT;
        json_t *parsed = jsonutil_parse_object(skeleton, skeleton_len, &ignored);
        err_clear(&ignored);
        free(skeleton);
        obj = parsed ? put_back(parsed, member, value) : NULL;
        value = parsed ? NULL : value;
    }
    json_decref(value);
    /* whatever the scan got wrong, jansson's verdict on the whole text */
    return obj ? obj : jsonutil_parse_object(data, len, err);
}

/* Reals at 15 significant digits: every decimal a person typed survives
 * (0.0005 stays 0.0005 instead of 0.00050000000000000001), and sums such as
 * fees print without binary noise. */
char *jsonutil_dump(const json_t *value, size_t *len)
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY |
                                       JSON_REAL_PRECISION(15));
    if (text && len)
        *len = strlen(text);
    return text;
}

char *jsonutil_dump_pretty(const json_t *value, size_t *len)
{
    char *text = json_dumps(value, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (!text)
        return NULL;
    size_t n = strlen(text);
    char *with_newline = realloc(text, n + 2);
    if (!with_newline) {
        free(text);
        return NULL;
    }
    with_newline[n] = '\n';
    with_newline[n + 1] = '\0';
    if (len)
        *len = n + 1;
    return with_newline;
}

static int wrong_type(const char *key, const char *expected, struct err *err)
{
    err_set(err, ERR_INVALID, "field '%s' must be %s", key, expected);
    err_add_detail(err, "field", json_string(key));
    return -1;
}

int jsonutil_get_string(const json_t *obj, const char *key, const char **value, struct err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_string(v))
        return wrong_type(key, "a string", err);
    *value = json_string_value(v);
    return 0;
}

int jsonutil_get_bool(const json_t *obj, const char *key, bool *value, struct err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_boolean(v))
        return wrong_type(key, "a boolean", err);
    *value = json_is_true(v);
    return 0;
}

int jsonutil_get_int(const json_t *obj, const char *key, long long *value, struct err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_integer(v))
        return wrong_type(key, "an integer", err);
    *value = json_integer_value(v);
    return 0;
}

const char *jsonutil_unknown_key(const json_t *obj, const char *const *known, size_t n)
{
    const char *key;
    const json_t *value;
    /* jansson's iteration takes a non-const object but does not change it */
    json_object_foreach((json_t *)obj, key, value)
    {
        size_t k = 0;
        while (k < n && strcmp(key, known[k]) != 0)
            k++;
        if (k == n)
            return key;
    }
    return NULL;
}

int jsonutil_get_string_array(const json_t *obj, const char *key, const json_t **value,
                              struct err *err)
{
    json_t *v = json_object_get(obj, key);
    if (!v || json_is_null(v))
        return 1;
    if (!json_is_array(v))
        return wrong_type(key, "an array of strings", err);
    size_t i;
    json_t *item;
    json_array_foreach(v, i, item)
    {
        if (!json_is_string(item))
            return wrong_type(key, "an array of strings", err);
    }
    *value = v;
    return 0;
}

void jsonutil_put_string(struct strbuf *sb, const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    for (; *p; p++) {
        if (*p < 0x20 || *p >= 0x80 || *p == '"' || *p == '\\')
            break;
    }
    if (!*p) { /* the usual case: nothing to escape */
        strbuf_putc(sb, '"');
        strbuf_puts(sb, s);
        strbuf_putc(sb, '"');
        return;
    }
    /* escapes and UTF-8 checks exactly as jansson writes them */
    json_t *str = json_string(s);
    size_t len = 0;
    char *text = str ? jsonutil_dump(str, &len) : NULL;
    json_decref(str);
    if (text)
        strbuf_append(sb, text, len);
    else
        strbuf_puts(sb, "null");
    free(text);
}
